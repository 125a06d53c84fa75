//! `ui dashboard`: the cluster in a browser, read-only, on loopback (the work is in
//! `crate::dashboard`).

use std::io::Write as _;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{Context, Outcome};
use crate::connection::ClusterArgs;
use crate::dashboard::{follow, serve};

/// Open a live, read-only web dashboard of the cluster on this machine
///
/// Serves a page at http://127.0.0.1:8001/ (see --listen) that shows, as they change:
/// workloads with their replicas, phases, readiness and why a pending one waits; nodes with
/// their offer, capacity, usage and reputation; trust policies and which nodes each admits;
/// balances, credit lines and reputations; the control plane's members and leader; recent
/// events. It follows the apiserver's watch, and shows when the last change came (only the
/// members, which are not objects and have no watch, are read every 10 s). Every namespace,
/// or with -n only that one's workloads, replicas and trust policies.
///
/// It reads the cluster as you, as `kubectl proxy` does: this process holds your credentials
/// (the kubeconfig, your identity) and the browser holds no key or token. So it shows exactly
/// what your own `ui get` would, secrets stay redacted as they are for you, and it serves this
/// machine only: loopback addresses, requests naming another Host refused (DNS rebinding), no
/// CORS. It is read-only: nothing but GET is answered; change the cluster with `ui apply`,
/// `ui scale`, `ui delete`.
///
/// The first line printed is the URL to open (`dashboard on http://127.0.0.1:8001/`).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where to serve: 127.0.0.1:PORT, [::1]:PORT, or PORT alone for 127.0.0.1 (0: any free
    /// port); loopback addresses only
    #[arg(long, value_name = "ADDR", default_value = serve::DEFAULT_LISTEN)]
    listen: String,
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// Serves until interrupted (Ctrl-C, SIGTERM).
pub fn run(ctx: &Context, args: &Args) -> anyhow::Result<Outcome> {
    let addr = serve::listen_addr(&args.listen)?;
    let server = crate::connection::server_of(ctx, &args.cluster)?;
    let me = ctx.acting_for().ok().map(|d| d.as_str().to_owned());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("ui-dashboard")
        .enable_all()
        .build()?;
    let served = runtime.block_on(async {
        let client = crate::connection::connect_async(ctx, &args.cluster)?;
        let listener =
            tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
        let bound = listener.local_addr().unwrap_or(addr);
        let stop = CancellationToken::new();
        let (tx, rx) = watch::channel(Arc::<str>::from("{}"));
        let whom = follow::Whom {
            me: me.clone(),
            server: server.clone(),
            namespace: args.cluster.namespace_given().map(str::to_owned),
        };
        let following = tokio::spawn(follow::run(client, whom, tx, stop.clone()));
        // The URL first, alone on its line, for whoever started it (a person, a script, a test).
        println!("dashboard on http://{bound}/");
        std::io::stdout().flush()?;
        eprintln!(
            "ui dashboard: reading {server} as {} (read-only); Ctrl-C to stop",
            me.as_deref().unwrap_or("the kubeconfig's user")
        );
        let shutdown = {
            let stop = stop.clone();
            async move {
                crate::mcp::http::wait_for_signal().await;
                stop.cancel();
            }
        };
        let app = serve::router(rx, bound.port(), stop.clone());
        let served = axum::serve(listener, app).with_graceful_shutdown(shutdown).await;
        stop.cancel();
        let _ = following.await;
        served.context("the dashboard's HTTP server failed")
    });
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    served.map(|()| Outcome::Success)
}
