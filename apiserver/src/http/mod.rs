//! The Kubernetes-compatible REST API over the [`Registry`](crate::registry::Registry).
//!
//! Discovery (`/version`, `/api`, `/apis`, `/apis/univrs.io/v1`), health endpoints, and the
//! objects of every kind (get, list, watch, create, update, patch, delete, the `status`
//! subresource) with `Status` errors, `Table`s for `kubectl get`, and OpenAPI v3
//! (`/openapi/v3`) for `kubectl explain` and server-side validation. TLS and authentication
//! are still to come.

mod discovery;
mod objects;
mod openapi;
mod status;
mod table;

use std::future::Future;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::registry::Registry;

/// Largest request body accepted (as Kubernetes: 3 MiB).
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// The router of the whole API.
pub fn router(registry: Registry) -> Router {
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
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(registry)
}

/// Serves the API on `listener` until `shutdown` completes, then drains open requests.
pub async fn serve(
    listener: TcpListener,
    registry: Registry,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(registry.clone());
    let shutdown = async move {
        shutdown.await;
        // Open watches would hold the graceful shutdown open for as long as they last.
        registry.stop_watches();
    };
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}
