//! Discovery: what kubectl asks before anything else.

use axum::Json;
use serde_json::{Value, json};

/// `GET /version`.
pub async fn version() -> Json<Value> {
    Json(json!({
        "major": "1", "minor": "32",
        "gitVersion": concat!("v1.32.0-univrs.", env!("CARGO_PKG_VERSION")),
        "platform": format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
    }))
}

/// `GET /api`: the core group. univrs serves none of its resources, so it lists no versions
/// (kubectl treats an empty `v1` resource list as an error, but no `v1` as nothing to find).
pub async fn api_versions() -> Json<Value> {
    Json(json!({ "kind": "APIVersions", "versions": [], "serverAddressByClientCIDRs": [] }))
}

fn group() -> Value {
    let gv = json!({ "groupVersion": api::API_VERSION, "version": api::VERSION });
    json!({ "name": api::GROUP, "versions": [gv.clone()], "preferredVersion": gv })
}

/// `GET /apis`.
pub async fn api_groups() -> Json<Value> {
    Json(json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": [group()] }))
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
    let verbs = ["create", "delete", "get", "list", "update"];
    let mut resources = Vec::new();
    for k in &api::kinds::KINDS {
        let namespaced = k.scope == api::Scope::Namespaced;
        resources.push(json!({
            "name": k.plural, "singularName": k.singular, "namespaced": namespaced, "kind": k.kind,
            "verbs": verbs, "shortNames": k.short_names, "categories": ["univrs"],
        }));
        resources.push(json!({
            "name": format!("{}/status", k.plural), "singularName": "", "namespaced": namespaced,
            "kind": k.kind, "verbs": ["get", "update"],
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
