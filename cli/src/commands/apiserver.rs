//! `ui apiserver`: run the apiserver of a single-member control plane.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use apiserver::raft::{Options, RaftNode};
use apiserver::registry::Registry;

use super::{Context, Outcome};
use crate::fsutil::{self, PRIVATE_FILE};

/// Run the apiserver: a Kubernetes-compatible API on a one-voter Raft cluster
///
/// Data is kept in --data-dir; a second start on the same directory resumes. A kubeconfig for
/// kubectl is written to the config directory. Until TLS and authentication land, the API is
/// plain HTTP without authentication and is served on loopback addresses only.
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
}

fn default_data_dir() -> anyhow::Result<PathBuf> {
    let base = crate::paths::xdg_base("XDG_DATA_HOME", ".local/share")
        .context("cannot find a data directory: pass --data-dir, or set XDG_DATA_HOME or HOME")?;
    Ok(base.join("univrs"))
}

fn kubeconfig(server: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: univrs\n  cluster:\n    server: {server}\n\
         contexts:\n- name: univrs\n  context:\n    cluster: univrs\n    user: univrs\n    namespace: default\n\
         current-context: univrs\nusers:\n- name: univrs\n  user: {{}}\n"
    )
}

pub fn run(ctx: &Context, args: &Args, with_controllers: bool) -> anyhow::Result<Outcome> {
    if !args.listen.ip().is_loopback() {
        bail!(
            "refusing to serve on {}: the API has no TLS or authentication yet, so it may only listen on loopback (127.0.0.1, ::1)",
            args.listen
        );
    }
    let data_dir = match &args.data_dir {
        Some(d) => d.clone(),
        None => default_data_dir()?,
    };
    fsutil::create_private_dir(&data_dir).with_context(|| format!("cannot create {}", data_dir.display()))?;
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start tokio")?;
    runtime.block_on(async {
        let node = RaftNode::start_single(&data_dir, Options::default())
            .await
            .with_context(|| format!("cannot start the control plane in {}", data_dir.display()))?;
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let addr = listener.local_addr()?;
        let server = format!("http://{addr}");
        let kubeconfig_path = args.kubeconfig.clone().unwrap_or_else(|| ctx.dirs.root().join("kubeconfig"));
        ctx.dirs.ensure_root()?;
        fsutil::write_atomic(&kubeconfig_path, kubeconfig(&server).as_bytes(), PRIVATE_FILE)?;
        eprintln!("warning: plain HTTP without authentication (loopback only); TLS and tokens are not implemented yet");
        println!("listening on {server}");
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
        // `ui up`: the controllers, as clients of the API just started, through its kubeconfig;
        // they stop (closing their watches) as soon as the server starts draining.
        let stopping = tokio_util::sync::CancellationToken::new();
        let shutdown = {
            let stopping = stopping.clone();
            async move {
                shutdown.await;
                stopping.cancel();
            }
        };
        let serving = tokio::spawn(apiserver::http::serve(listener, Registry::new(node.clone()), shutdown));
        let controllers = match with_controllers {
            true => {
                // One data dir is one `ui up` at a time (its store is locked): a stable identity.
                let identity = format!("ui-up:{}", data_dir.display());
                Some(super::controllers::InProcess::start(&kubeconfig_path, identity, stopping).await?)
            }
            false => None,
        };
        let served = serving.await.context("apiserver task");
        if let Some(c) = controllers {
            c.stop(std::time::Duration::from_secs(5)).await;
        }
        served??;
        node.shutdown().await;
        anyhow::Ok(())
    })?;
    Ok(Outcome::Success)
}
