//! The Kubernetes-compatible REST API over the [`Registry`](crate::registry::Registry).
//!
//! So far: discovery (`/version`, `/api`, `/apis`, `/apis/univrs.io/v1`), OpenAPI v3
//! (`/openapi/v3`), health endpoints, and get/list/create/update/delete of every kind with
//! `Status` errors and `Table`s for `kubectl get`. Patch, watch, selectors, pagination, TLS and
//! authentication are still to come.

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
            &format!("{v1}/namespaces/{{namespace}}/{{plural}}"),
            get(objects::list_ns).post(objects::create_ns),
        )
        .route(
            &format!("{v1}/namespaces/{{namespace}}/{{plural}}/{{name}}"),
            get(objects::get_ns).put(objects::update_ns).delete(objects::delete_ns),
        )
        .route(&format!("{v1}/{{plural}}"), get(objects::list_all).post(objects::create_cluster))
        .route(
            &format!("{v1}/{{plural}}/{{name}}"),
            get(objects::get_cluster).put(objects::update_cluster).delete(objects::delete_cluster),
        )
        .fallback(status::not_found_route)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(registry)
}

/// Serves the API on `listener` until `shutdown` completes, then drains open requests.
pub async fn serve(
    listener: TcpListener,
    registry: Registry,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(registry)).with_graceful_shutdown(shutdown).await
}
