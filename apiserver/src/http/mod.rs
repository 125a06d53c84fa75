//! The Kubernetes-compatible REST API over the [`Registry`](crate::registry::Registry).
//!
//! Discovery (`/version`, `/api`, `/apis`, `/apis/univrs.io/v1`), health endpoints, and the
//! objects of every kind (get, list, watch, create, update, patch, delete, the `status`
//! subresource) with `Status` errors, `Table`s for `kubectl get`, and OpenAPI v3
//! (`/openapi/v3`) for `kubectl explain` and server-side validation. Served over TLS
//! ([`tls`]); object requests are authenticated by self-minted tokens ([`authn`]).
//!
//! Discovery, OpenAPI, `/version` and the health endpoints answer without credentials (they
//! say nothing about any object); every object request needs a token.

pub mod authn;
pub mod cluster;
mod discovery;
mod json;
pub mod logs;
mod objects;
mod openapi;
mod status;
mod table;
pub mod tls;

use std::future::Future;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRef};
use axum::routing::get;
use tokio::net::TcpListener;

use crate::registry::Registry;
use authn::Authn;

/// What every handler may reach.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The objects.
    pub registry: Registry,
    /// Who is asking.
    pub authn: Authn,
    /// How the apiserver calls node agents (for `replicas/NAME/log`).
    pub node_proxy: logs::NodeProxy,
}

impl FromRef<AppState> for Registry {
    fn from_ref(state: &AppState) -> Registry {
        state.registry.clone()
    }
}

/// Largest request body accepted (as Kubernetes: 3 MiB).
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// The router of the whole API.
pub fn router(state: AppState) -> Router {
    let v1 = "/apis/univrs.io/v1";
    Router::new()
        .route("/version", get(discovery::version))
        .route("/api", get(discovery::api_versions))
        .route("/apis", get(discovery::api_groups))
        .route("/apis/univrs.io", get(discovery::api_group))
        .route(v1, get(discovery::api_resources))
        .route("/healthz", get(discovery::ok))
        .route("/readyz", get(discovery::ok))
        .route("/livez", get(discovery::ok))
        .route("/cluster/members", get(cluster::members).post(cluster::add))
        .route("/cluster/members/{id}", axum::routing::delete(cluster::remove))
        .route("/cluster/isolate", axum::routing::post(cluster::isolate))
        .route("/members", get(logs::members))
        .route("/openapi/v3", get(openapi::root))
        .route("/openapi/v3/apis/univrs.io/v1", get(openapi::group_version))
        .route(
            &format!("{v1}/{{*rest}}"),
            get(objects::get)
                .post(objects::post)
                .put(objects::put)
                .patch(objects::patch)
                .delete(objects::delete),
        )
        .fallback(status::not_found_route)
        .method_not_allowed_fallback(status::method_not_allowed)
        // The object routes enforce MAX_BODY_BYTES themselves (objects::Body), answering 413.
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

/// Serves the API on `listener` (over TLS unless `tls` is `None`) until `shutdown`
/// completes, then drains open requests.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    tls: Option<tls::Tls>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let registry = state.registry.clone();
    let app = router(state);
    let shutdown = async move {
        shutdown.await;
        // Open watches would hold the graceful shutdown open for as long as they last.
        registry.stop_watches();
    };
    match tls {
        None => axum::serve(listener, app).with_graceful_shutdown(shutdown).await,
        Some(tls) => serve_tls(listener, app, tls, shutdown).await,
    }
}

/// How long open connections get to finish after shutdown starts.
const DRAIN: std::time::Duration = std::time::Duration::from_secs(10);

async fn serve_tls(
    listener: TcpListener,
    app: Router,
    tls: tls::Tls,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;

    let acceptor = tokio_rustls::TlsAcceptor::from(tls.config);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                // A connection that failed before it was accepted (reset, no file descriptors
                // left) is that connection's problem, not the server's.
                Err(_) => continue,
            },
            () = &mut shutdown => break,
        };
        // Small responses go out at once: with Nagle's algorithm a response written in two
        // pieces waits for the client's delayed ACK (40 ms per request).
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(app.clone());
        let builder = Builder::new(TokioExecutor::new());
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            // The handshake is bounded: a client that never finishes it holds nothing long.
            let handshake = tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(stream));
            let Ok(Ok(stream)) = handshake.await else { return };
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
            let _ = watcher.watch(conn).await;
        });
    }
    let _ = tokio::time::timeout(DRAIN, graceful.shutdown()).await;
    Ok(())
}
