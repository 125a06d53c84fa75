//! A member's data dir and how a member starts: what `ui apiserver` and `ui up` do before
//! they serve. The data dir is held by one process at a time (a lock that names its pid, for
//! `ui down`) and kept private (0700, files 0600, even if it existed); the cluster's id, the
//! member's key and the TLS CA are made at the first start; a member founds a cluster, runs
//! alone, or joins one (`--join`), and keeps what the cluster handed it (its id and CA).

use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;

use crate::http::tls::{self, Tls};
use crate::raft::{JoinTarget, MemberConfig, Options, RaftNode, StartError};

/// Why a member cannot start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Another process holds the data dir.
    #[error(
        "the data dir {0} is in use by another univrs member on this machine (`ui up` or `ui apiserver`): stop it first (ui down), or pass --data-dir DIR to run another"
    )]
    InUse(String),
    /// A file of the data dir.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// What failed.
        reason: String,
    },
    /// TLS could not be set up.
    #[error("cannot set up TLS: {0}")]
    Tls(#[from] tls::TlsError),
    /// Raft did not start.
    #[error("cannot start the control plane in {dir}: {source}")]
    Start {
        /// The data dir.
        dir: String,
        /// Why.
        source: StartError,
    },
    /// `--join` on a data dir that already holds a member.
    #[error("{0} already holds a member: start it without --join")]
    AlreadyJoined(String),
}

fn file_error(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error::File { path: path.display().to_string(), reason: e.to_string() }
}

/// Writes `bytes` to `path` atomically (a temporary file fsync'd, then renamed), readable by
/// the owner only.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// A member's data dir, held by this process while it lives.
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    /// The lock (released when the process ends or this is dropped).
    _lock: std::fs::File,
}

impl DataDir {
    /// Makes (0700) and takes `path` for this process, or says that another has it.
    pub fn open(path: &Path) -> Result<Self, Error> {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(path).map_err(file_error(path))?;
        let lock_path = path.join("lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(file_error(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(Error::InUse(path.display().to_string())),
            Err(std::fs::TryLockError::Error(e)) => return Err(file_error(&lock_path)(e)),
        }
        // Who holds it, for `ui down`.
        lock.set_len(0)
            .and_then(|()| write!(&lock, "{}", std::process::id()))
            .map_err(file_error(&lock_path))?;
        let dir = Self { path: path.to_owned(), _lock: lock };
        dir.make_private()?;
        Ok(dir)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes the data dir private, even when it existed before: it and `tls/` 0700, every
    /// file directly in them 0600 (the Raft log and state, keys, the CA). Other folders in it
    /// (a local node's images) are left as they are.
    pub fn make_private(&self) -> Result<(), Error> {
        use std::os::unix::fs::PermissionsExt as _;
        for d in [self.path.clone(), self.path.join("tls")] {
            if !d.is_dir() {
                continue;
            }
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).map_err(file_error(&d))?;
            for entry in std::fs::read_dir(&d).map_err(file_error(&d))? {
                let entry = entry.map_err(file_error(&d))?;
                if entry.file_type().is_ok_and(|t| t.is_file()) {
                    std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o600))
                        .map_err(file_error(&entry.path()))?;
                }
            }
        }
        Ok(())
    }

    /// The cluster's id, made at its first start (unless it is to come from a cluster joined).
    pub fn cluster_id(&self) -> Result<String, Error> {
        let path = self.path.join("cluster-id");
        if !path.exists() {
            let mut bytes = [0u8; 16];
            rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut bytes);
            let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            write_private(&path, id.as_bytes()).map_err(file_error(&path))?;
        }
        Ok(std::fs::read_to_string(&path).map_err(file_error(&path))?.trim().to_owned())
    }

    /// Whether the cluster's id is here yet (a member that still has to join has none).
    pub fn has_cluster_id(&self) -> bool {
        self.path.join("cluster-id").exists()
    }

    /// The member's key (its control-plane identity) and its file, made at the first start.
    pub fn member_key(&self) -> Result<(PathBuf, SigningKey), Error> {
        let path = self.path.join("member.key");
        if !path.exists() {
            let key = SigningKey::generate(&mut rand_core::OsRng);
            let hex: String = key.to_bytes().iter().map(|b| format!("{b:02x}")).collect();
            write_private(&path, hex.as_bytes()).map_err(file_error(&path))?;
        }
        let key = read_key(&path)?;
        Ok((path, key))
    }

    /// The cluster's TLS CA (made at its first start) and a server certificate for `names`.
    pub fn tls(&self, cluster: &str, names: &[String]) -> Result<Tls, Error> {
        Ok(tls::load_or_create(&self.path.join("tls"), cluster, names)?)
    }

    /// What this member hands to members that join: the cluster's id and CA.
    fn bootstrap(&self, cluster: &str) -> Vec<u8> {
        let read = |name: &str| std::fs::read_to_string(self.path.join("tls").join(name)).ok();
        let b = Bootstrap { cluster: cluster.to_owned(), ca_cert: read("ca.crt"), ca_key: read("ca.key") };
        serde_json::to_vec(&b).expect("a bootstrap serializes")
    }

    /// Keeps the cluster's id and CA that the cluster joined handed over.
    fn keep_bootstrap(&self, bytes: &[u8]) -> Result<(), Error> {
        let invalid = |reason: String| Error::File { path: self.path.display().to_string(), reason };
        let b: Bootstrap = serde_json::from_slice(bytes)
            .map_err(|e| invalid(format!("the cluster sent a bootstrap this member cannot read: {e}")))?;
        let id = self.path.join("cluster-id");
        if let (Some(cert), Some(key)) = (b.ca_cert, b.ca_key) {
            let tls = self.path.join("tls");
            std::fs::create_dir_all(&tls).map_err(file_error(&tls))?;
            write_private(&tls.join("ca.crt"), cert.as_bytes()).map_err(file_error(&tls))?;
            write_private(&tls.join("ca.key"), key.as_bytes()).map_err(file_error(&tls))?;
        }
        // The id last: a member without it joins again at its next start.
        write_private(&id, b.cluster.as_bytes()).map_err(file_error(&id))
    }
}

/// Reads an Ed25519 key kept as hex (a `member.key`).
pub fn read_key(path: &Path) -> Result<SigningKey, Error> {
    let text = std::fs::read_to_string(path).map_err(file_error(path))?;
    let bad = |what: &str| Error::File { path: path.display().to_string(), reason: what.to_owned() };
    let bytes: Vec<u8> = (0..text.trim().len())
        .step_by(2)
        .map(|i| text.trim().get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect::<Option<_>>()
        .ok_or_else(|| bad("is not a hex key"))?;
    let secret: [u8; 32] = bytes.try_into().map_err(|_| bad("does not hold a 32-byte key"))?;
    Ok(SigningKey::from_bytes(&secret))
}

/// What a cluster hands to a member that joins: its id and CA.
#[derive(serde::Serialize, serde::Deserialize)]
struct Bootstrap {
    cluster: String,
    ca_cert: Option<String>,
    ca_key: Option<String>,
}

/// How a member of several talks to the others.
#[derive(Clone, Debug)]
pub struct Peering {
    /// Where the member transport listens.
    pub listen: std::net::SocketAddr,
    /// The transport address others use (default: `listen`).
    pub advertise: Option<String>,
    /// The member to join through, for a new data dir.
    pub join: Option<JoinTarget>,
}

/// How to start a member.
#[derive(Clone, Debug)]
pub struct Start {
    /// Raft's options.
    pub options: Options,
    /// The client API's URL (as members show it).
    pub api: String,
    /// The IP the API listens on (a name of its certificate), and more names.
    pub listen_ip: IpAddr,
    /// More names the server certificate is valid for.
    pub tls_sans: Vec<String>,
    /// No TLS (loopback development only).
    pub insecure_http: bool,
    /// With other members; `None`: a lone voter.
    pub peering: Option<Peering>,
}

/// A started member.
#[derive(Debug)]
pub struct Started {
    /// The Raft member.
    pub node: RaftNode,
    /// The cluster's id.
    pub cluster: String,
    /// Its TLS (none with `insecure_http`).
    pub tls: Option<Tls>,
}

/// Starts the member of `dir` with `member` as its key: alone, founding a cluster, resuming,
/// or joining through `start.peering.join` (then keeping what the cluster hands over).
pub async fn start(dir: &DataDir, member: &SigningKey, start: Start) -> Result<Started, Error> {
    let names = {
        let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
        if !start.listen_ip.is_unspecified() {
            names.push(start.listen_ip.to_string());
        }
        names.extend(start.tls_sans.iter().cloned());
        names.dedup();
        names
    };
    let make_tls = |cluster: &str| -> Result<Option<Tls>, Error> {
        if start.insecure_http { Ok(None) } else { dir.tls(cluster, &names).map(Some) }
    };
    let started = |source| Error::Start { dir: dir.path.display().to_string(), source };
    let Some(peering) = start.peering.clone() else {
        let cluster = dir.cluster_id()?;
        let tls = make_tls(&cluster)?;
        let node = RaftNode::start_single(&dir.path, start.options).await.map_err(started)?;
        return Ok(Started { node, cluster, tls });
    };
    // A member that joins gets the cluster's id and CA from the cluster, after joining.
    let fresh_join = peering.join.is_some() && !dir.has_cluster_id();
    let (cluster, tls, bootstrap) = if fresh_join {
        (None, None, Vec::new())
    } else {
        let cluster = dir.cluster_id()?;
        let tls = make_tls(&cluster)?;
        let bootstrap = dir.bootstrap(&cluster);
        (Some(cluster), tls, bootstrap)
    };
    let config = MemberConfig {
        key: member.clone(),
        listen: peering.listen,
        advertise: peering.advertise.clone(),
        api: start.api.clone(),
        join: peering.join.clone(),
        bootstrap,
    };
    let (node, joined) = RaftNode::start_member(&dir.path, start.options, config).await.map_err(started)?;
    match (cluster, joined) {
        (Some(cluster), _) => Ok(Started { node, cluster, tls }),
        (None, None) => Err(Error::AlreadyJoined(dir.path.display().to_string())),
        (None, Some(joined)) => {
            dir.keep_bootstrap(&joined)?;
            let cluster = dir.cluster_id()?;
            let tls = make_tls(&cluster)?;
            Ok(Started { node, cluster, tls })
        }
    }
}

/// Removes expired tombstones (anti-rollback records of deleted objects) every few minutes,
/// on the member that leads (one is enough; the others would only repeat it). Runs until
/// aborted.
pub async fn sweep_tombstones(registry: crate::registry::Registry, node: RaftNode) {
    // Events every minute (`registry::events`); tombstones, approvals and audit records every
    // five.
    for round in 1u64.. {
        tokio::time::sleep(std::time::Duration::from_secs(60)).await;
        let me = node.status();
        if me.leader != Some(me.id) {
            continue;
        }
        if let Err(e) = registry.sweep_events(chrono::Utc::now()).await {
            tracing::warn!("cannot remove old events: {e}");
        }
        if round % 5 != 0 {
            continue;
        }
        if let Err(e) = registry.sweep_tombstones(chrono::Utc::now()).await {
            tracing::warn!("cannot remove expired tombstones: {e}");
        }
        if let Err(e) = registry.sweep_agents(chrono::Utc::now()).await {
            tracing::warn!("cannot sweep approvals and audit records: {e}");
        }
    }
}
