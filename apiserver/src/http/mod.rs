//! The Kubernetes-compatible REST API over the [`Registry`](crate::registry::Registry).
//!
//! Discovery (`/version`, `/api`, `/apis`, `/apis/univrs.io/v1`, `/apis/events.k8s.io/v1`),
//! health endpoints, and the objects of every kind in its group version (get, list, watch,
//! create, update, patch, delete, the `status` subresource) with `Status` errors, `Table`s for
//! `kubectl get`, and OpenAPI v3 (`/openapi/v3`) for `kubectl explain` and server-side
//! validation; the reviews of `kubectl auth` ([`review`]), the members as Services for
//! `kubectl cluster-info` and Events in the core form `kubectl events` reads ([`core`]).
//! Served over TLS ([`tls`]); object requests are authenticated by self-minted tokens
//! ([`authn`]).
//!
//! Discovery, OpenAPI, `/version` and the health endpoints answer without credentials (they
//! say nothing about any object); every object request needs a token. Every request is
//! counted and timed by [`crate::metrics::track`]; the metrics are not served here but on a
//! listener of their own (`--metrics-addr`, see [`crate::metrics`]).

mod audit;
pub mod authn;
pub mod cluster;
mod conn;
pub mod core;
mod discovery;
pub mod health;
pub(crate) mod json;
pub mod logs;
mod objects;
mod openapi;
mod proto;
pub mod review;
mod status;
pub use status::Failed;
mod table;
pub mod tls;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRef};
use axum::routing::{get, post};
use tokio::net::TcpListener;

use crate::registry::Registry;
use authn::Authn;

/// What every handler may reach.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The objects.
    pub registry: Registry,
    /// The Raft member under them (its cluster's membership, for `/cluster/…`).
    pub node: crate::raft::RaftNode,
    /// Who is asking.
    pub authn: Authn,
    /// How the apiserver calls node agents (for `replicas/NAME/log`).
    pub node_proxy: logs::NodeProxy,
}

impl FromRef<Arc<AppState>> for crate::raft::RaftNode {
    fn from_ref(state: &Arc<AppState>) -> crate::raft::RaftNode {
        state.node.clone()
    }
}

impl FromRef<Arc<AppState>> for Registry {
    fn from_ref(state: &Arc<AppState>) -> Registry {
        state.registry.clone()
    }
}

/// Largest request body accepted (as Kubernetes: 3 MiB).
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// The router of the whole API. Its state is shared, not copied: axum clones the state for
/// every request, and a copy of `AppState` (its parts' many `Arc`s and the audience) was 2 %
/// of a member's CPU under write load (BENCHMARKS.md change 7).
pub fn router(state: AppState) -> Router {
    let state = Arc::new(state);
    let mut router: Router<Arc<AppState>> = Router::new()
        .route("/version", get(discovery::version))
        .route("/api", get(discovery::api_versions))
        .route("/apis", get(discovery::api_groups))
        .route("/api/v1", get(core::resources))
        .route("/api/v1/services", get(core::list_all))
        .route("/api/v1/events", get(core::list_events))
        .route("/api/v1/namespaces/{*rest}", get(core::in_namespace))
        .route("/apis/authorization.k8s.io", get(|| discovery::review_group(review::AUTHORIZATION)))
        .route("/apis/authorization.k8s.io/v1", get(|| discovery::review_resources(review::AUTHORIZATION)))
        .route("/apis/authentication.k8s.io", get(|| discovery::review_group(review::AUTHENTICATION)))
        .route("/apis/authentication.k8s.io/v1", get(|| discovery::review_resources(review::AUTHENTICATION)))
        .route("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", post(review::access_review))
        .route("/apis/authorization.k8s.io/v1/selfsubjectrulesreviews", post(review::rules_review))
        .route("/apis/authentication.k8s.io/{version}/selfsubjectreviews", post(review::self_review))
        .route(
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
            get(discovery::custom_resource_definitions),
        )
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/livez", get(health::livez))
        .route("/healthz/{check}", get(health::healthz_check))
        .route("/readyz/{check}", get(health::readyz_check))
        .route("/livez/{check}", get(health::livez_check))
        .route("/cluster/members", get(cluster::members).post(cluster::add))
        .route("/cluster/members/{id}", axum::routing::delete(cluster::remove))
        .route("/cluster/isolate", axum::routing::post(cluster::isolate))
        .route("/members", get(logs::members))
        .route("/openapi/v3", get(openapi::root))
        .route("/openapi/v3/apis/univrs.io/v1", get(openapi::group_version));
    // Every group version of the kinds (univrs.io/v1, events.k8s.io/v1) by the same handlers:
    // `objects::GroupVersion` reads which from the path.
    for (group, version, gv) in api::kinds::group_versions() {
        router = router
            .route(&format!("/apis/{group}"), get(move || discovery::api_group(group, version)))
            .route(&format!("/apis/{gv}"), get(move || discovery::api_resources(gv)))
            .route(
                &format!("/apis/{gv}/{{*rest}}"),
                get(objects::get)
                    .post(objects::post)
                    .put(objects::put)
                    .patch(objects::patch)
                    .delete(objects::delete)
                    // Every request of an agent's key is recorded (audit::agents).
                    .layer(axum::middleware::from_fn_with_state(state.clone(), audit::agents)),
            );
    }
    router
        .fallback(status::not_found_route)
        .method_not_allowed_fallback(status::method_not_allowed)
        // The object routes enforce MAX_BODY_BYTES themselves (objects::Body), answering 413.
        .layer(DefaultBodyLimit::disable())
        // Outermost: every request is counted, the refused and the unrouted too.
        .layer(axum::middleware::from_fn(crate::metrics::track))
        .with_state(state)
}

/// Bounds on connections: what one client, or many, can hold open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnLimits {
    /// Connections open at once, in all; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// Connections open at once from one IP address.
    pub max_per_address: usize,
    /// Time to send a request's head, from the connection's start or the end of the previous
    /// response (so an idle keep-alive connection is closed after it, too).
    pub header_timeout: Duration,
    /// Time to send a request's body.
    pub body_timeout: Duration,
    /// Time to finish the TLS handshake.
    pub handshake_timeout: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            max_per_address: 256,
            header_timeout: Duration::from_secs(15),
            body_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// Serves the API on `listener` (over TLS unless `tls` is `None`) within `limits` until
/// `shutdown` completes, then drains open requests.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    tls: Option<tls::Tls>,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let registry = state.registry.clone();
    let app = router(state).layer(axum::Extension(objects::BodyTimeout(limits.body_timeout)));
    let shutdown = async move {
        shutdown.await;
        // Open watches would hold the graceful shutdown open for as long as they last.
        registry.stop_watches();
    };
    conn::serve(listener, app, tls.map(|t| tokio_rustls::TlsAcceptor::from(t.config)), limits, shutdown).await
}
