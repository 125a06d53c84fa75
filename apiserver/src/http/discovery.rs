//! Discovery: what kubectl asks before anything else.

use axum::Json;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// `GET /version`.
pub async fn version() -> Json<Value> {
    Json(json!({
        "major": "1", "minor": "32",
        "gitVersion": concat!("v1.32.0-univrs.", env!("CARGO_PKG_VERSION")),
        "platform": format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
    }))
}

/// The media type of aggregated discovery (one request for every group, version and
/// resource), which kubectl and client-go ask for first.
const AGGREGATED: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// Whether the client asks for aggregated discovery (`as=APIGroupDiscoveryList`, v2) before
/// the plain lists.
fn wants_aggregated(headers: &HeaderMap) -> bool {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let Some(first) = accept.split(',').next() else { return false };
    let params: Vec<&str> = first.split(';').map(str::trim).collect();
    params.contains(&"as=APIGroupDiscoveryList")
        && params.contains(&"g=apidiscovery.k8s.io")
        && params.contains(&"v=v2")
}

fn aggregated(items: Value) -> Response {
    let body = json!({ "kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items });
    ([(header::CONTENT_TYPE, AGGREGATED)], Json(body)).into_response()
}

/// `GET /api`: the core group. univrs serves none of its resources, so it lists no versions
/// (kubectl treats an empty `v1` resource list as an error, but no `v1` as nothing to find).
pub async fn api_versions(headers: HeaderMap) -> Response {
    if wants_aggregated(&headers) {
        return aggregated(json!([]));
    }
    Json(json!({ "kind": "APIVersions", "versions": [], "serverAddressByClientCIDRs": [] })).into_response()
}

fn group() -> Value {
    let gv = json!({ "groupVersion": api::API_VERSION, "version": api::VERSION });
    json!({ "name": api::GROUP, "versions": [gv.clone()], "preferredVersion": gv })
}

/// `GET /apis`: the univrs group, or with aggregated discovery every resource of it.
pub async fn api_groups(headers: HeaderMap) -> Response {
    if wants_aggregated(&headers) {
        return aggregated(json!([group_discovery()]));
    }
    Json(json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": [group()] })).into_response()
}

/// Verbs of every kind's resource and of its `status` subresource.
const VERBS: [&str; 7] = ["create", "delete", "get", "list", "patch", "update", "watch"];
const STATUS_VERBS: [&str; 3] = ["get", "patch", "update"];

/// The univrs group as an `APIGroupDiscovery` (aggregated discovery v2).
fn group_discovery() -> Value {
    let resources: Vec<Value> = api::kinds::KINDS
        .iter()
        .map(|k| {
            let gvk = json!({ "group": api::GROUP, "version": api::VERSION, "kind": k.kind });
            let scope = if k.scope == api::Scope::Namespaced { "Namespaced" } else { "Cluster" };
            json!({
                "resource": k.plural, "responseKind": gvk, "scope": scope, "singularResource": k.singular,
                "verbs": VERBS, "shortNames": k.short_names, "categories": k.categories,
                "subresources": [{ "subresource": "status", "responseKind": gvk, "verbs": STATUS_VERBS }],
            })
        })
        .collect();
    json!({
        "metadata": { "name": api::GROUP },
        "versions": [{ "version": api::VERSION, "resources": resources, "freshness": "Current" }],
    })
}

/// `GET /apis/univrs.io`.
pub async fn api_group() -> Json<Value> {
    let mut g = group();
    g["kind"] = "APIGroup".into();
    g["apiVersion"] = "v1".into();
    Json(g)
}

/// `GET /apis/univrs.io/v1`: every kind and its `status` subresource.
pub async fn api_resources() -> Json<Value> {
    let mut resources = Vec::new();
    for k in &api::kinds::KINDS {
        let namespaced = k.scope == api::Scope::Namespaced;
        resources.push(json!({
            "name": k.plural, "singularName": k.singular, "namespaced": namespaced, "kind": k.kind,
            "verbs": VERBS, "shortNames": k.short_names, "categories": k.categories,
        }));
        resources.push(json!({
            "name": format!("{}/status", k.plural), "singularName": "", "namespaced": namespaced,
            "kind": k.kind, "verbs": STATUS_VERBS,
        }));
    }
    Json(
        json!({ "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": api::API_VERSION, "resources": resources }),
    )
}

/// Health endpoints.
pub async fn ok() -> &'static str {
    "ok"
}
