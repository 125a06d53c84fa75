//! The core group (`/api/v1`), as far as kubectl looks: Events (the stored `events.k8s.io/v1`
//! Events as core `v1` Events, read-only: what `kubectl events` and `kubectl describe` list,
//! see `objects::core_events`), and for `cluster-info` the Services
//! of `kube-system` labeled `kubernetes.io/cluster-service=true` and prints the control plane's
//! address, then a line per Service. univrs serves the control-plane members there, one
//! read-only Service each, made from the Raft membership (nothing is stored): so `kubectl
//! cluster-info` prints this server and every member's API.
//!
//! kubectl prints a Service without a load balancer as its proxy path on the server it asked
//! (`…/services/https:NAME:https/proxy`); that path answers with a redirect to the member's
//! API, so the printed link leads where it says. The apiserver proxies nothing.

use api::selector::LabelSelector;
use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Redirect, Response};
use serde_json::{Value, json};

use super::table::Format;
use crate::access::Caller;
use crate::raft::RaftNode;
use crate::registry::{ApiError, Registry};

/// The namespace kubectl looks in.
pub const CLUSTER_NAMESPACE: &str = "kube-system";
/// The label kubectl selects.
pub const CLUSTER_SERVICE_LABEL: &str = "kubernetes.io/cluster-service";
/// The annotation naming a member's did.
pub const MEMBER_ANNOTATION: &str = "univrs.io/member";

/// The verbs of core Events: read-only (they are written as `events.k8s.io/v1` Events).
const EVENT_VERBS: [&str; 3] = ["get", "list", "watch"];

/// `GET /api/v1`: the core resources served.
pub async fn resources() -> Json<Value> {
    Json(json!({
        "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "v1",
        "resources": [
            { "name": "events", "singularName": "event", "namespaced": true, "kind": "Event",
              "verbs": EVENT_VERBS, "shortNames": ["ev"] },
            { "name": "services", "singularName": "service", "namespaced": true, "kind": "Service",
              "verbs": ["get", "list"], "shortNames": ["svc"] },
            { "name": "services/proxy", "singularName": "", "namespaced": true, "kind": "ServiceProxyOptions",
              "verbs": ["get"] },
        ],
    }))
}

/// The core group's resources as aggregated discovery (v2) lists them.
pub fn discovery() -> Value {
    let gvk = json!({ "group": "", "version": "v1", "kind": "Service" });
    let event = json!({ "group": "", "version": "v1", "kind": "Event" });
    json!({
        "metadata": { "name": "" },
        "versions": [{ "version": "v1", "freshness": "Current", "resources": [{
            "resource": "events", "responseKind": event, "scope": "Namespaced", "singularResource": "event",
            "verbs": EVENT_VERBS, "shortNames": ["ev"], "subresources": [],
        }, {
            "resource": "services", "responseKind": gvk, "scope": "Namespaced", "singularResource": "service",
            "verbs": ["get", "list"], "shortNames": ["svc"],
            "subresources": [{ "subresource": "proxy", "responseKind": { "group": "", "version": "v1", "kind": "ServiceProxyOptions" }, "verbs": ["get"] }],
        }] }],
    })
}

/// `HOST` and `PORT` of an API URL (`https://HOST:PORT`, the port 443 when absent).
fn host_port(url: &str) -> Option<(&str, u16)> {
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"))?;
    let authority = rest.split('/').next()?;
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(':') && port.chars().all(|c| c.is_ascii_digit()) => {
            Some((host, port.parse().ok()?))
        }
        _ => Some((authority, 443)),
    }
}

/// Each member with an API URL: its Service name, did, API URL and whether it leads.
fn members(node: &RaftNode) -> Vec<(String, String, String, bool)> {
    let leader = node.status().leader;
    node.membership()
        .into_iter()
        .filter(|(_, m)| host_port(&m.api).is_some())
        .map(|(id, m)| (format!("univrs-member-{id}"), m.did, m.api, leader == Some(id)))
        .collect()
}

/// A member as a Service (`ExternalName`: its API's host, its port named `https`).
fn service(name: &str, did: &str, api: &str, leader: bool) -> Value {
    let (host, port) = host_port(api).unwrap_or_default();
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {
            "name": name, "namespace": CLUSTER_NAMESPACE,
            "labels": { CLUSTER_SERVICE_LABEL: "true", "app.kubernetes.io/part-of": "univrs" },
            "annotations": { MEMBER_ANNOTATION: did, "univrs.io/api": api, "univrs.io/leader": leader.to_string() },
        },
        "spec": { "type": "ExternalName", "externalName": host, "ports": [{ "name": "https", "port": port, "protocol": "TCP" }] },
        "status": { "loadBalancer": {} },
    })
}

fn selector(raw: Option<&str>) -> Result<LabelSelector, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or_default())
        .map_err(|e| ApiError::BadRequest(format!("the query is malformed: {e}")))?;
    let s = pairs.iter().find(|(k, _)| k == "labelSelector").map_or("", |(_, v)| v.as_str());
    LabelSelector::parse(s).map_err(|e| ApiError::BadRequest(e.to_string()))
}

fn list(node: &RaftNode, namespace: Option<&str>, raw: Option<&str>) -> Result<Response, ApiError> {
    let selector = selector(raw)?;
    let items: Vec<Value> = if namespace.is_none_or(|ns| ns == CLUSTER_NAMESPACE) {
        members(node)
            .iter()
            .map(|(name, did, api, leader)| service(name, did, api, *leader))
            .filter(|s| selector.matches(s.pointer("/metadata/labels").and_then(Value::as_object)))
            .collect()
    } else {
        Vec::new()
    };
    Ok(Json(json!({
        "kind": "ServiceList", "apiVersion": "v1",
        "metadata": { "resourceVersion": node.state().applied_revision().unwrap_or_default().to_string() }, "items": items,
    }))
    .into_response())
}

/// `GET /api/v1/services`: every namespace's (only `kube-system` has any).
pub async fn list_all(
    State(node): State<RaftNode>,
    _who: Caller,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    list(&node, None, raw.as_deref())
}

/// `GET /api/v1/events`: every namespace's Events the caller may read.
pub async fn list_events(
    State(reg): State<Registry>,
    who: Caller,
    RawQuery(raw): RawQuery,
    format: Format,
) -> Result<Response, ApiError> {
    super::objects::core_events(&reg, who, None, None, raw.as_deref(), format).await
}

/// `GET /api/v1/namespaces/{ns}/services[/{name}[/proxy[/…]]]` and
/// `/api/v1/namespaces/{ns}/events[/{name}]`.
pub async fn in_namespace(
    State(node): State<RaftNode>,
    State(reg): State<Registry>,
    who: Caller,
    Path(rest): Path<String>,
    RawQuery(raw): RawQuery,
    format: Format,
) -> Result<Response, ApiError> {
    let segments: Vec<&str> = rest.splitn(5, '/').collect();
    match segments.as_slice() {
        [ns, "events"] => {
            super::objects::core_events(&reg, who, Some(ns), None, raw.as_deref(), format).await
        }
        [ns, "events", name] => {
            super::objects::core_events(&reg, who, Some(ns), Some(name), raw.as_deref(), format).await
        }
        [ns, "services"] => list(&node, Some(ns), raw.as_deref()),
        [ns, "services", name] => get(&node, ns, name),
        [ns, "services", name, "proxy", tail @ ..] => {
            proxy(&node, ns, name, tail.first().copied().unwrap_or(""))
        }
        _ => Err(not_found("resource", &rest)),
    }
}

fn not_found(kind: &str, name: &str) -> ApiError {
    ApiError::NotFound { kind: kind.into(), name: name.into() }
}

fn find(node: &RaftNode, ns: &str, name: &str) -> Result<(String, String, String, bool), ApiError> {
    if ns != CLUSTER_NAMESPACE {
        return Err(not_found("services", name));
    }
    members(node).into_iter().find(|(n, ..)| n == name).ok_or_else(|| not_found("services", name))
}

fn get(node: &RaftNode, ns: &str, name: &str) -> Result<Response, ApiError> {
    let (name, did, api, leader) = find(node, ns, name)?;
    Ok(Json(service(&name, &did, &api, leader)).into_response())
}

/// `…/services/[SCHEME:]NAME[:PORT]/proxy/PATH`: a redirect to `PATH` on the member's API.
fn proxy(node: &RaftNode, ns: &str, name: &str, path: &str) -> Result<Response, ApiError> {
    // kubectl writes the name as `https:NAME:https` (scheme, name, port name).
    let parts: Vec<&str> = name.split(':').collect();
    let bare = match parts.as_slice() {
        [n] | [_, n] | [_, n, _] => *n,
        _ => return Err(not_found("services", name)),
    };
    let (_, _, api, _) = find(node, ns, bare)?;
    Ok(Redirect::temporary(&format!("{}/{path}", api.trim_end_matches('/'))).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_urls_give_host_and_port() {
        assert_eq!(host_port("https://10.0.0.2:6443"), Some(("10.0.0.2", 6443)));
        assert_eq!(host_port("https://[::1]:6443/"), Some(("[::1]", 6443)));
        assert_eq!(host_port("https://example.org"), Some(("example.org", 443)));
        assert_eq!(host_port(""), None);
    }

    #[test]
    fn a_member_is_a_cluster_service_kubectl_finds() {
        let s = service("univrs-member-5", "did:key:z6Mk", "https://10.0.0.2:6443", true);
        let labels = s.pointer("/metadata/labels").and_then(Value::as_object);
        assert!(LabelSelector::parse("kubernetes.io/cluster-service=true").unwrap().matches(labels));
        assert_eq!(s["spec"]["ports"][0], json!({ "name": "https", "port": 6443, "protocol": "TCP" }));
        assert_eq!(s["metadata"]["annotations"]["univrs.io/leader"], "true");
    }
}
