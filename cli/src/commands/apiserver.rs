//! `ui apiserver`: run a member of the control plane (alone, or one of several with
//! `--peer-listen`, founding a cluster or joining one with `--join`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use apiserver::http::authn::Authn;
use apiserver::http::{AppState, ConnLimits};
use apiserver::quota::Limits;
use apiserver::raft::{JoinTarget, Options, RaftNode};
use apiserver::registry::Registry;

use super::{Context, Outcome};
use crate::fsutil::{self, PRIVATE_FILE};

/// Run the apiserver: a Kubernetes-compatible API on a one-voter Raft cluster
///
/// Data is kept in --data-dir; a second start on the same directory resumes. At its first start
/// a cluster makes its id, its CA (for TLS) and its member key, all kept in the data dir. The API
/// is served over TLS, and every object request must carry a token its client minted from its
/// own key (`ui token`). A kubeconfig for kubectl is written to the config directory: kubectl
/// trusts the cluster's CA and runs `ui token` to authenticate as your identity (`ui init`).
///
/// A member turns transparent huge pages off for its own process (not `ui up`, whose workloads
/// would inherit that): zeroing fresh 2 MiB pages was the tail of its lists and writes.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory of the Raft log and state [default: $XDG_DATA_HOME/univrs or ~/.local/share/univrs]
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Address to serve the API on (port 0: any free port)
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Where to write the kubeconfig [default: CONFIG_DIR/kubeconfig]
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// Seconds of change history kept for watches [default: 900]. Shorter is for tests and
    /// small machines: a watcher that falls further behind gets 410 Expired and relists
    #[arg(long, value_name = "SECONDS")]
    watch_history_seconds: Option<u64>,
    /// Most writes the leader commits in one Raft entry, made durable by one fsync (group
    /// commit: writes that arrive while the previous entry is written wait for the next).
    /// 1 commits every write on its own (for comparison)
    #[arg(long, value_name = "N", default_value_t = 256, value_parser = clap::value_parser!(u16).range(1..=256))]
    write_batch: u16,
    /// Raft entries applied between snapshots (etcd's `--snapshot-count`). A snapshot writes
    /// every object, so fewer snapshots cost less CPU on a large state; the log keeps the
    /// entries since the last one on disk (and a restart replays them)
    #[arg(long, value_name = "N", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(100..))]
    snapshot_count: u64,
    /// Another control-plane member's or controller's did:key (repeatable). The apiserver's own
    /// member key (in the data dir) is always one
    #[arg(long = "member", value_name = "DID")]
    members: Vec<String>,
    /// Another name or address the server certificate must be valid for (repeatable)
    #[arg(long = "tls-san", value_name = "NAME")]
    tls_sans: Vec<String>,
    /// Address of the member-to-member transport (libp2p, Noise-authenticated by the member
    /// key). Without it the member runs alone and cannot grow into a cluster
    #[arg(long, value_name = "IP:PORT")]
    peer_listen: Option<SocketAddr>,
    /// The transport address other members reach this one at [default: --peer-listen]
    #[arg(long, value_name = "IP:PORT", requires = "peer_listen")]
    peer_advertise: Option<String>,
    /// Join the cluster of the member DID at ADDR (its transport address). A member of that
    /// cluster must first have run `ui cluster add` with this member's did (printed at start)
    /// and transport address. Ignored once the data dir has joined
    #[arg(long, value_name = "DID@IP:PORT", requires = "peer_listen")]
    join: Option<JoinTarget>,
    /// Let the log proxy connect to node agents on loopback and link-local addresses
    /// (127.0.0.0/8, ::1, 169.254.0.0/16, fe80::/10). Off by default: a Node's addresses are
    /// written by whoever registers it, and such addresses reach this machine or its link. For
    /// one-machine setups and tests (`ui up` sets it, for its local node on 127.0.0.1)
    #[arg(long)]
    allow_loopback_nodes: bool,
    /// FAILURE TESTS ONLY: serve POST /cluster/isolate, which drops member traffic on request
    #[arg(long, hide = true)]
    fault_injection: bool,
    /// Serve Prometheus metrics on http://ADDR/metrics (plain HTTP, no token: whoever reaches
    /// ADDR reads them, so keep it on loopback or a network only your Prometheus reaches).
    /// Off by default; they are never served on the API's port
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<SocketAddr>,
    #[command(flatten)]
    limits: LimitArgs,
    /// DEVELOPMENT ONLY: serve plain HTTP, on loopback only. Tokens are still required, and
    /// kubectl sends none over plain HTTP, so only `ui` and other token-aware clients work
    #[arg(long)]
    insecure_http: bool,
}

/// What one identity (not a member) may cost, and bounds on connections. Any key is a user:
/// these bound what a stranger with a fresh key can make the control plane store and serve.
#[derive(Debug, clap::Args)]
struct LimitArgs {
    /// Objects one signer may own (of signed kinds; those it deleted count for an hour)
    #[arg(long, value_name = "N", default_value_t = Limits::default().objects)]
    quota_objects: u64,
    /// Bytes of those objects per signer
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().bytes)]
    quota_bytes: u64,
    /// Replicas the workloads of one signer may ask for in all
    #[arg(long, value_name = "N", default_value_t = Limits::default().replicas)]
    quota_replicas: u64,
    /// Bytes of those replicas per signer (a workload's size × its replicas)
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().replica_bytes)]
    quota_replica_bytes: u64,
    /// Watches one identity may hold open at once
    #[arg(long, value_name = "N", default_value_t = Limits::default().watches)]
    quota_watches: u64,
    /// Requests per second one identity may keep up
    #[arg(long, value_name = "N", default_value_t = Limits::default().rate)]
    rate_limit: f64,
    /// Requests one identity may send in a burst
    #[arg(long, value_name = "N", default_value_t = Limits::default().burst)]
    rate_burst: f64,
    /// Connections open at once, in all
    #[arg(long, value_name = "N", default_value_t = ConnLimits::default().max_connections)]
    max_connections: usize,
    /// Connections open at once from one IP address
    #[arg(long, value_name = "N", default_value_t = ConnLimits::default().max_per_address)]
    max_connections_per_address: usize,
    /// Seconds a client has to send a request's head (an idle connection is closed after it)
    #[arg(long, value_name = "SECONDS", default_value_t = ConnLimits::default().header_timeout.as_secs())]
    header_timeout: u64,
    /// Seconds a client has to send a request's body
    #[arg(long, value_name = "SECONDS", default_value_t = ConnLimits::default().body_timeout.as_secs())]
    body_timeout: u64,
}

impl LimitArgs {
    fn quotas(&self) -> anyhow::Result<Limits> {
        if !(self.rate_limit > 0.0 && self.rate_burst >= 1.0) {
            bail!("--rate-limit must be > 0 and --rate-burst >= 1");
        }
        Ok(Limits {
            objects: self.quota_objects,
            bytes: self.quota_bytes,
            replicas: self.quota_replicas,
            replica_bytes: self.quota_replica_bytes,
            watches: self.quota_watches,
            rate: self.rate_limit,
            burst: self.rate_burst,
        })
    }

    fn connections(&self) -> ConnLimits {
        ConnLimits {
            max_connections: self.max_connections.max(1),
            max_per_address: self.max_connections_per_address.max(1),
            header_timeout: Duration::from_secs(self.header_timeout.max(1)),
            body_timeout: Duration::from_secs(self.body_timeout.max(1)),
            ..ConnLimits::default()
        }
    }
}

/// Run univrs on this machine: a one-member control plane, every controller, and a local node
///
/// `ui apiserver` with the controllers (workload, scheduler, gc, nodelifecycle) running in the
/// same process against it, through its API, and a node agent for this machine (node `local`,
/// operated by the control plane's member key, its offer in --jurisdiction). As root, replicas
/// run in containers; otherwise as plain processes, with a warning.
#[derive(Debug, clap::Args)]
pub struct UpArgs {
    #[command(flatten)]
    server: Args,
    #[command(flatten)]
    node: super::node::LocalNodeArgs,
}

/// `ui up`.
pub fn up(ctx: &Context, args: &UpArgs) -> anyhow::Result<Outcome> {
    run(ctx, &args.server, Some(&args.node))
}

/// Turns transparent huge pages off for this process, a member alone. With them on (the
/// kernel's `always`, or `madvise`, which mimalloc asks for), the first touch of each 2 MiB
/// range of the allocator's arenas faults in a huge page zeroed whole: a member's buffers (list
/// responses, log entries, transport frames) come and go, mimalloc gives their memory back a
/// second after it is freed, and it came back as fresh huge pages all the time — 6 % of three
/// members' samples under 64 updating clients, the p99 of lists of 500 (~50 ms) and of writes
/// at 16 clients (BENCHMARKS.md, change 28). Not for `ui up`: the flag survives fork and exec,
/// and the workloads its local node starts get the machine's setting, not the control plane's.
fn without_transparent_huge_pages() {
    if let Err(e) = nix::sys::prctl::set_thp_disable(true) {
        eprintln!("warning: cannot turn transparent huge pages off for this member: {e}");
    }
}

pub fn default_data_dir() -> anyhow::Result<PathBuf> {
    let base = crate::paths::xdg_base("XDG_DATA_HOME", ".local/share")
        .context("cannot find a data directory: pass --data-dir, or set XDG_DATA_HOME or HOME")?;
    Ok(base.join("univrs"))
}

/// How a kubeconfig is rendered for the other members' URLs.
type Render = Box<dyn Fn(&[String]) -> String + Send>;

/// The kubeconfigs a member writes (the user's and its own), each with the members' URLs.
struct Kubeconfigs {
    /// Each file, and how to render it.
    files: Vec<(PathBuf, Render)>,
}

impl Kubeconfigs {
    fn write(&self, others: &[String]) -> anyhow::Result<()> {
        for (path, render) in &self.files {
            fsutil::write_atomic(path, render(others).as_bytes(), PRIVATE_FILE)?;
        }
        Ok(())
    }
}

/// The API URLs of the other members.
fn other_apis(node: &RaftNode) -> Vec<String> {
    let me = node.id();
    node.membership()
        .into_iter()
        .filter(|(id, m)| *id != me && !m.api.is_empty())
        .map(|(_, m)| m.api)
        .collect()
}

/// Writes the user's kubeconfig (`paths[0]`) and the member's (`paths[1]`, tokens from the
/// member key at `member_key`) for the cluster at `server`, each listing every member; when
/// `follow`, a task keeps them listing every member as members come and go (so every client
/// can fail over to each).
#[allow(clippy::too_many_arguments)]
fn write_kubeconfigs(
    ctx: &Context,
    node: &RaftNode,
    server: &str,
    ca_pem: Option<&str>,
    audience: &str,
    paths: [PathBuf; 2],
    member_key: &std::path::Path,
    follow: bool,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    ctx.dirs.ensure_root()?;
    let render = |token_args: Vec<String>, env: Vec<(&'static str, String)>| -> Render {
        let (server, ca, audience) = (server.to_owned(), ca_pem.map(str::to_owned), audience.to_owned());
        Box::new(move |others: &[String]| {
            crate::kubeconfig::render(&server, others, ca.as_deref(), &audience, &token_args, &env)
        })
    };
    let [user, member] = paths;
    let kubeconfigs = Kubeconfigs {
        files: vec![
            (user, render(vec![], vec![("UNIVRS_CONFIG_DIR", ctx.dirs.root().display().to_string())])),
            // The control plane's own clients (controllers run by `ui up`) authenticate as the member.
            (member, render(vec!["--key-file".to_owned(), member_key.display().to_string()], vec![])),
        ],
    };
    let mut others = other_apis(node);
    kubeconfigs.write(&others)?;
    Ok(follow.then(|| {
        let node = node.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let now = other_apis(&node);
                if now != others {
                    if let Err(e) = kubeconfigs.write(&now) {
                        eprintln!("warning: cannot update the kubeconfigs with the members: {e:#}");
                    }
                    others = now;
                }
            }
        })
    }))
}

pub fn run(ctx: &Context, args: &Args, up: Option<&super::node::LocalNodeArgs>) -> anyhow::Result<Outcome> {
    let with_controllers = up.is_some();
    if up.is_none() {
        without_transparent_huge_pages();
    }
    if args.insecure_http && !args.listen.ip().is_loopback() {
        bail!(
            "refusing to serve plain HTTP on {}: --insecure-http is for loopback development only (127.0.0.1, ::1)",
            args.listen
        );
    }
    let data_dir = match &args.data_dir {
        Some(d) => d.clone(),
        None => default_data_dir()?,
    };
    // One member per data dir (a second `ui up` on it is told so at once), private even if
    // it existed: the state holds every object, env values included.
    let dir = apiserver::member::DataDir::open(&data_dir)?;
    let (member_key_path, member) = dir.member_key()?;
    let member_did = api::identity::Did::from_key(&member.verifying_key());
    let mut members = vec![member_did.clone()];
    for m in &args.members {
        members.push(api::identity::Did::parse(m).with_context(|| format!("--member {m}"))?);
    }
    if args.fault_injection {
        apiserver::http::cluster::enable_fault_injection();
    }
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start tokio")?;
    runtime.block_on(async {
        let mut options = Options {
            write_batch: usize::from(args.write_batch),
            snapshot_every: args.snapshot_count,
            ..Options::default()
        };
        if let Some(secs) = args.watch_history_seconds {
            options.history.max_age = Duration::from_secs(secs);
        }
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let addr = listener.local_addr()?;
        // Bound before "listening on" is printed: whoever reads that may scrape at once.
        let metrics_listener = match args.metrics_addr {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot serve metrics on {addr}"))?,
            ),
            None => None,
        };
        let scheme = if args.insecure_http { "http" } else { "https" };
        let host = if addr.ip().is_unspecified() { "127.0.0.1".to_owned() } else { addr.ip().to_string() };
        let host = if host.contains(':') { format!("[{host}]") } else { host };
        let server = format!("{scheme}://{host}:{}", addr.port());
        let start = apiserver::member::Start {
            options,
            api: server.clone(),
            listen_ip: args.listen.ip(),
            tls_sans: args.tls_sans.clone(),
            insecure_http: args.insecure_http,
            peering: args.peer_listen.map(|listen| apiserver::member::Peering {
                listen,
                advertise: args.peer_advertise.clone(),
                join: args.join.clone(),
            }),
        };
        let apiserver::member::Started { node, cluster, tls } = apiserver::member::start(&dir, &member, start).await?;
        let audience = format!("univrs:{cluster}");
        let ca_pem = tls.as_ref().map(|t| t.ca_pem.clone());
        let kubeconfig_path = args.kubeconfig.clone().unwrap_or_else(|| ctx.dirs.root().join("kubeconfig"));
        let refresher = write_kubeconfigs(
            ctx,
            &node,
            &server,
            ca_pem.as_deref(),
            &audience,
            [kubeconfig_path.clone(), data_dir.join("member.kubeconfig")],
            &member_key_path,
            args.peer_listen.is_some(),
        )?;
        if tls.is_none() {
            eprintln!(
                "WARNING: --insecure-http: the API is served WITHOUT TLS on loopback, for development only; kubectl cannot authenticate over it"
            );
        }
        // The storage files and kubeconfig the member just created, too.
        dir.make_private()?;
        // Handlers first: whoever reads "listening on" may stop the server at once, and a
        // signal before the handlers exist would kill it without draining.
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("cannot install a SIGTERM handler")?;
        let mut interrupt = signal(SignalKind::interrupt()).context("cannot install a SIGINT handler")?;
        println!("listening on {server}");
        println!("cluster: {audience}");
        println!("data dir: {}", data_dir.display());
        if let Some(l) = &metrics_listener {
            let at = l.local_addr()?;
            println!("metrics on http://{at}/metrics");
            if !at.ip().is_loopback() {
                eprintln!(
                    "WARNING: --metrics-addr {at} is not loopback: anyone who reaches it reads the metrics, without a token"
                );
            }
        }
        println!("kubeconfig: {}", kubeconfig_path.display());
        println!("try: KUBECONFIG={} kubectl get workloads", kubeconfig_path.display());
        if let Some(peer) = args.peer_listen {
            let address = args.peer_advertise.clone().unwrap_or_else(|| peer.to_string());
            println!("member {} (did {member_did}) at {address}", node.id());
            println!("to grow the cluster: ui cluster add NEW_DID NEW_ADDRESS, then start the new member with --join {member_did}@{address}");
        }
        let shutdown = async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = term.recv() => {}
            }
            eprintln!("shutting down");
        };
        // `ui up`: the controllers, as clients of the API just started, authenticated as the
        // control-plane member (its kubeconfig); they stop (closing their watches) as soon as the server starts draining.
        let stopping = tokio_util::sync::CancellationToken::new();
        let shutdown = {
            let stopping = stopping.clone();
            async move {
                shutdown.await;
                stopping.cancel();
            }
        };
        let quotas = args.limits.quotas()?;
        let state = AppState {
            registry: Registry::new(node.clone()).with_limits(quotas),
            node: node.clone(),
            authn: Authn::new(audience.clone(), members).with_cluster(node.clone()).with_limits(quotas),
            node_proxy: apiserver::http::logs::NodeProxy {
                key: Some(std::sync::Arc::new(member.clone())),
                // `ui up`'s own node listens on loopback.
                policy: apiserver::http::logs::AddressPolicy {
                    allow_loopback: args.allow_loopback_nodes || up.is_some(),
                },
            },
        };
        let sweeper = tokio::spawn(apiserver::member::sweep_tombstones(state.registry.clone(), node.clone()));
        let keeper = tokio::spawn(state.registry.clone().keep_indexes_current());
        // `ui up` serves the metrics of its controllers and of its node agent with the
        // apiserver's: one process, one scrape target.
        let controller_metrics = controllers::metrics::Metrics::new();
        let metrics_task = match metrics_listener {
            Some(listener) => {
                let sm = node.state().clone();
                let theirs = controller_metrics.clone();
                let exposition = move || {
                    apiserver::metrics::metrics().set_db_size(sm.size_on_disk());
                    let mut out = String::new();
                    apiserver::metrics::metrics().encode_into(&mut out);
                    if with_controllers {
                        theirs.encode_into(&mut out);
                        agent::metrics::metrics().encode_into(&mut out);
                    }
                    apiserver::metrics::end(&mut out);
                    out
                };
                Some(tokio::spawn(apiserver::metrics::serve(listener, exposition, stopping.clone().cancelled_owned())))
            }
            None => None,
        };
        let serving =
            tokio::spawn(apiserver::http::serve(listener, state, tls, args.limits.connections(), shutdown));
        let controllers = match with_controllers {
            true => {
                // One data dir is one `ui up` at a time (its store is locked): a stable identity.
                let identity = format!("ui-up:{}", data_dir.display());
                let member_kubeconfig = data_dir.join("member.kubeconfig");
                Some(
                    super::controllers::InProcess::start(&member_kubeconfig, identity, controller_metrics, stopping.clone())
                        .await?,
                )
            }
            false => None,
        };
        let local_node = match up {
            Some(node_args) => {
                let cluster = agent::setup::LocalCluster {
                    server: &server,
                    ca_pem: ca_pem.as_deref(),
                    audience: &audience,
                    operator: &member,
                    member_kubeconfig: &data_dir.join("member.kubeconfig"),
                };
                let started =
                    super::node::start_local(&data_dir, cluster, ctx.dirs.root(), node_args, stopping.clone());
                // Stopped while the local node was being set up (its requests then fail as the
                // server drains): that is a stop, not an error.
                match started.await {
                    Ok(agent) => agent,
                    Err(_) if stopping.is_cancelled() => None,
                    Err(e) => return Err(e),
                }
            }
            None => None,
        };
        let served = serving.await.context("apiserver task");
        if let Some(r) = refresher {
            r.abort();
        }
        sweeper.abort();
        keeper.abort();
        if let Some(t) = metrics_task {
            // It stops with the server (graceful: a scrape in progress is answered).
            if let Ok(Err(e)) = t.await {
                eprintln!("metrics server: {e}");
            }
        }
        if let Some(agent) = local_node {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), agent).await;
        }
        // The local node's replicas stop with `ui up`, unless asked to keep running (the next
        // `ui up` adopts them; `ui down` stops them).
        if let Some(node_args) = up.filter(|n| !n.no_node) {
            let state = data_dir.join("node").join("state");
            if node_args.keep_replicas {
                let running = agent::node::running_runs(&state);
                if running > 0 {
                    eprintln!("{running} replica(s) of the local node keep running: the next `ui up` adopts them, `ui down` stops them");
                }
            } else {
                let dir = state.clone();
                let stopped = tokio::task::spawn_blocking(move || agent::node::stop_all_runs(&dir, Duration::from_secs(20)))
                    .await
                    .unwrap_or(0);
                // No replica left: its bridges and rules go too.
                agent::network::Network::tear_down(&state).await;
                if stopped > 0 {
                    eprintln!("stopped {stopped} replica(s) of the local node (ui up --keep-replicas leaves them running)");
                }
            }
        }
        if let Some(c) = controllers {
            c.stop(std::time::Duration::from_secs(5)).await;
        }
        served??;
        node.shutdown().await;
        anyhow::Ok(())
    })?;
    Ok(Outcome::Success)
}
