//! `ui apiserver`: run the apiserver of a single-member control plane.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use apiserver::http::AppState;
use apiserver::http::authn::Authn;
use apiserver::raft::{Options, RaftNode};
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
    /// Another control-plane member's or controller's did:key (repeatable). The apiserver's own
    /// member key (in the data dir) is always one
    #[arg(long = "member", value_name = "DID")]
    members: Vec<String>,
    /// Another name or address the server certificate must be valid for (repeatable)
    #[arg(long = "tls-san", value_name = "NAME")]
    tls_sans: Vec<String>,
    /// DEVELOPMENT ONLY: serve plain HTTP, on loopback only. Tokens are still required, and
    /// kubectl sends none over plain HTTP, so only `ui` and other token-aware clients work
    #[arg(long)]
    insecure_http: bool,
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

fn default_data_dir() -> anyhow::Result<PathBuf> {
    let base = crate::paths::xdg_base("XDG_DATA_HOME", ".local/share")
        .context("cannot find a data directory: pass --data-dir, or set XDG_DATA_HOME or HOME")?;
    Ok(base.join("univrs"))
}

/// The cluster's id, made at its first start.
fn cluster_id(data_dir: &std::path::Path) -> anyhow::Result<String> {
    let path = data_dir.join("cluster-id");
    if !path.exists() {
        fsutil::write_atomic(&path, uuid_like().as_bytes(), PRIVATE_FILE)?;
    }
    let id = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(id.trim().to_owned())
}

fn uuid_like() -> String {
    let mut bytes = [0u8; 16];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The member key of this apiserver (its control-plane identity), made at its first start.
fn member_key(data_dir: &std::path::Path) -> anyhow::Result<(PathBuf, ed25519_dalek::SigningKey)> {
    let path = data_dir.join("member.key");
    if !path.exists() {
        let key = ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng);
        let hex: String = key.to_bytes().iter().map(|b| format!("{b:02x}")).collect();
        fsutil::write_atomic(&path, hex.as_bytes(), PRIVATE_FILE)?;
    }
    let key = super::token::read_key_file(&path)?;
    Ok((path, key))
}

pub fn run(ctx: &Context, args: &Args, up: Option<&super::node::LocalNodeArgs>) -> anyhow::Result<Outcome> {
    let with_controllers = up.is_some();
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
    fsutil::create_private_dir(&data_dir).with_context(|| format!("cannot create {}", data_dir.display()))?;
    let cluster = cluster_id(&data_dir)?;
    let audience = format!("univrs:{cluster}");
    let (member_key_path, member) = member_key(&data_dir)?;
    let mut members = vec![api::identity::Did::from_key(&member.verifying_key())];
    for m in &args.members {
        members.push(api::identity::Did::parse(m).with_context(|| format!("--member {m}"))?);
    }
    let tls = if args.insecure_http {
        None
    } else {
        let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
        if !args.listen.ip().is_unspecified() {
            names.push(args.listen.ip().to_string());
        }
        names.extend(args.tls_sans.iter().cloned());
        names.dedup();
        Some(
            apiserver::http::tls::load_or_create(&data_dir.join("tls"), &cluster, &names)
                .context("cannot set up TLS")?,
        )
    };
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start tokio")?;
    runtime.block_on(async {
        let mut options = Options::default();
        if let Some(secs) = args.watch_history_seconds {
            options.history.max_age = Duration::from_secs(secs);
        }
        let node = RaftNode::start_single(&data_dir, options)
            .await
            .with_context(|| format!("cannot start the control plane in {}", data_dir.display()))?;
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let addr = listener.local_addr()?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let host = if addr.ip().is_unspecified() { "127.0.0.1".to_owned() } else { addr.ip().to_string() };
        let host = if host.contains(':') { format!("[{host}]") } else { host };
        let server = format!("{scheme}://{host}:{}", addr.port());
        let ca_pem = tls.as_ref().map(|t| t.ca_pem.clone());
        let kubeconfig_path = args.kubeconfig.clone().unwrap_or_else(|| ctx.dirs.root().join("kubeconfig"));
        ctx.dirs.ensure_root()?;
        let user_env = [("UNIVRS_CONFIG_DIR", ctx.dirs.root().display().to_string())];
        let user = crate::kubeconfig::render(&server, ca_pem.as_deref(), &audience, &[], &user_env);
        fsutil::write_atomic(&kubeconfig_path, user.as_bytes(), PRIVATE_FILE)?;
        // The control plane's own clients (controllers run by `ui up`) authenticate as the member.
        let member_args = ["--key-file".to_owned(), member_key_path.display().to_string()];
        let member_kubeconfig = crate::kubeconfig::render(&server, ca_pem.as_deref(), &audience, &member_args, &[]);
        fsutil::write_atomic(&data_dir.join("member.kubeconfig"), member_kubeconfig.as_bytes(), PRIVATE_FILE)?;
        if tls.is_none() {
            eprintln!(
                "WARNING: --insecure-http: the API is served WITHOUT TLS on loopback, for development only; kubectl cannot authenticate over it"
            );
        }
        println!("listening on {server}");
        println!("cluster: {audience}");
        println!("data dir: {}", data_dir.display());
        println!("kubeconfig: {}", kubeconfig_path.display());
        println!("try: KUBECONFIG={} kubectl get workloads", kubeconfig_path.display());
        let shutdown = async {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("can install a SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
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
        let state = AppState {
            registry: Registry::new(node.clone()),
            authn: Authn::new(audience.clone(), members),
            node_proxy: apiserver::http::logs::NodeProxy(Some(std::sync::Arc::new(member.clone()))),
        };
        let serving = tokio::spawn(apiserver::http::serve(listener, state, tls, shutdown));
        let controllers = match with_controllers {
            true => {
                // One data dir is one `ui up` at a time (its store is locked): a stable identity.
                let identity = format!("ui-up:{}", data_dir.display());
                let member_kubeconfig = data_dir.join("member.kubeconfig");
                Some(super::controllers::InProcess::start(&member_kubeconfig, identity, stopping.clone()).await?)
            }
            false => None,
        };
        let local_node = match up {
            Some(node_args) => {
                let cluster = super::node::LocalCluster {
                    server: &server,
                    ca_pem: ca_pem.as_deref(),
                    audience: &audience,
                    operator: &member,
                    member_kubeconfig: &data_dir.join("member.kubeconfig"),
                    user_config: ctx.dirs.root(),
                };
                super::node::start_local(&data_dir, cluster, node_args, stopping.clone()).await?
            }
            None => None,
        };
        let served = serving.await.context("apiserver task");
        if let Some(agent) = local_node {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), agent).await;
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
