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
/// (the kubeconfig, your identity) and the browser holds no key. So it shows exactly what your
/// own `ui get` would (your agents' audit records too), secrets stay redacted as they are for
/// you, and it serves this machine only: 127.0.0.1 or [::1], requests naming another Host
/// refused (DNS rebinding), no CORS. And only you on it: each run makes a random token, in the
/// URL it prints; opening that URL gives your browser a cookie (HttpOnly, SameSite=Strict), and
/// any request without it (another user or process of this machine) is refused (401). It is
/// read-only: nothing but GET is answered; change the cluster with `ui apply`, `ui scale`,
/// `ui delete`.
///
/// The first line printed is the URL to open, with the token
/// (`dashboard on http://127.0.0.1:8001/?token=…`): keep it to yourself.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where to serve: 127.0.0.1:PORT, [::1]:PORT, localhost:PORT (127.0.0.1), or PORT alone
    /// for 127.0.0.1 (0: any free port); no other address
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
        let demand = Arc::new(follow::Demand::new());
        let whom = follow::Whom {
            me: me.clone(),
            server: server.clone(),
            namespace: args.cluster.namespace_given().map(str::to_owned),
        };
        // If following ends before it is told to (a bug: a view that cannot be made), serving
        // stops too: a page frozen on the last view would look live.
        let following = tokio::spawn({
            let (demand, stop) = (demand.clone(), stop.clone());
            async move {
                let ended = follow::run(client, whom, tx, demand, stop.clone()).await;
                let early = !stop.is_cancelled();
                stop.cancel();
                match ended {
                    Err(e) => Err(e),
                    Ok(()) if early => Err(anyhow::anyhow!("the dashboard stopped following the cluster")),
                    Ok(()) => Ok(()),
                }
            }
        });
        let token = serve::new_token();
        // The URL first, alone on its line, for whoever started it (a person, a script, a test).
        println!("dashboard on http://{bound}/?token={token}");
        std::io::stdout().flush()?;
        eprintln!(
            "ui dashboard: reading {server} as {} (read-only); open the URL above (its token lets your browser in); Ctrl-C to stop",
            me.as_deref().unwrap_or("the kubeconfig's user")
        );
        let shutdown = {
            let stop = stop.clone();
            async move {
                tokio::select! {
                    () = crate::mcp::http::wait_for_signal() => {}
                    () = stop.cancelled() => {}
                }
                stop.cancel();
            }
        };
        let app = serve::router(rx, demand, bound.port(), &token, stop.clone());
        let served = axum::serve(listener, app).with_graceful_shutdown(shutdown).await;
        stop.cancel();
        let followed = match following.await {
            Ok(r) => r,
            Err(e) => Err(anyhow::anyhow!("the dashboard stopped following the cluster: {e}")),
        };
        served.context("the dashboard's HTTP server failed")?;
        followed
    });
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    served.map(|()| Outcome::Success)
}
