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

/// `GET /api`: the core group, with its one resource univrs serves: the control plane's
/// members as Services (for `kubectl cluster-info`, see `super::core`).
pub async fn api_versions(headers: HeaderMap) -> Response {
    if wants_aggregated(&headers) {
        return aggregated(json!([super::core::discovery()]));
    }
    Json(json!({ "kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [] }))
        .into_response()
}

/// The review groups (`super::review`): each resource only created, each about its caller.
const REVIEW_GROUPS: [(&str, &[(&str, &str)]); 2] = [
    (
        super::review::AUTHORIZATION,
        &[
            ("selfsubjectaccessreviews", "SelfSubjectAccessReview"),
            ("selfsubjectrulesreviews", "SelfSubjectRulesReview"),
        ],
    ),
    (super::review::AUTHENTICATION, &[("selfsubjectreviews", "SelfSubjectReview")]),
];

fn group_of(name: &str, version: &str) -> Value {
    let gv = json!({ "groupVersion": format!("{name}/{version}"), "version": version });
    json!({ "name": name, "versions": [gv.clone()], "preferredVersion": gv })
}

fn review_group_discovery(name: &str, resources: &[(&str, &str)]) -> Value {
    let resources: Vec<Value> = resources
        .iter()
        .map(|(plural, kind)| {
            json!({ "resource": plural, "scope": "Cluster", "verbs": ["create"],
                    "responseKind": { "group": name, "version": "v1", "kind": kind } })
        })
        .collect();
    json!({ "metadata": { "name": name }, "versions": [{ "version": "v1", "resources": resources, "freshness": "Current" }] })
}

/// `GET /apis/{group}` of a review group.
pub async fn review_group(name: &'static str) -> Json<Value> {
    let mut g = group_of(name, "v1");
    g["kind"] = "APIGroup".into();
    g["apiVersion"] = "v1".into();
    Json(g)
}

/// `GET /apis/{group}/v1` of a review group.
pub async fn review_resources(name: &'static str) -> Json<Value> {
    let resources = REVIEW_GROUPS.iter().find(|(g, _)| *g == name).map_or(&[][..], |(_, r)| *r);
    let resources: Vec<Value> = resources
        .iter()
        .map(|(plural, kind)| json!({ "name": plural, "singularName": "", "namespaced": false, "kind": kind, "verbs": ["create"] }))
        .collect();
    Json(
        json!({ "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": format!("{name}/v1"), "resources": resources }),
    )
}

/// `GET /apis`: the groups of the kinds (univrs.io, events.k8s.io) and the review groups,
/// or with aggregated discovery every resource of them.
pub async fn api_groups(headers: HeaderMap) -> Response {
    let kinds = api::kinds::group_versions();
    if wants_aggregated(&headers) {
        let mut items: Vec<Value> = kinds.iter().map(|(g, v, _)| group_discovery(g, v)).collect();
        items.extend(REVIEW_GROUPS.iter().map(|(name, resources)| review_group_discovery(name, resources)));
        return aggregated(Value::Array(items));
    }
    let mut groups: Vec<Value> = kinds.iter().map(|(g, v, _)| group_of(g, v)).collect();
    groups.extend(REVIEW_GROUPS.iter().map(|(name, _)| group_of(name, "v1")));
    Json(json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": groups })).into_response()
}

/// Verbs of every kind's resource and of its `status` subresource.
const VERBS: [&str; 7] = ["create", "delete", "get", "list", "patch", "update", "watch"];
const STATUS_VERBS: [&str; 3] = ["get", "patch", "update"];

/// A group of kinds as an `APIGroupDiscovery` (aggregated discovery v2).
fn group_discovery(group: &str, version: &str) -> Value {
    let resources: Vec<Value> = api::kinds::in_group_version(&format!("{group}/{version}"))
        .map(|k| {
            let gvk = json!({ "group": k.group, "version": k.version, "kind": k.kind });
            let scope = if k.scope == api::Scope::Namespaced { "Namespaced" } else { "Cluster" };
            let subresources: Vec<Value> = k
                .has_status
                .then(|| json!({ "subresource": "status", "responseKind": gvk, "verbs": STATUS_VERBS }))
                .into_iter()
                .collect();
            json!({
                "resource": k.plural, "responseKind": gvk, "scope": scope, "singularResource": k.singular,
                "verbs": VERBS, "shortNames": k.short_names, "categories": k.categories,
                "subresources": subresources,
            })
        })
        .collect();
    json!({
        "metadata": { "name": group },
        "versions": [{ "version": version, "resources": resources, "freshness": "Current" }],
    })
}

/// `GET /apis/{group}` of a group of kinds.
pub async fn api_group(group: &'static str, version: &'static str) -> Json<Value> {
    let mut g = group_of(group, version);
    g["kind"] = "APIGroup".into();
    g["apiVersion"] = "v1".into();
    Json(g)
}

/// `GET /apis/{group}/{version}`: every kind of the group and its `status` subresource.
pub async fn api_resources(api_version: &'static str) -> Json<Value> {
    let mut resources = Vec::new();
    for k in api::kinds::in_group_version(api_version) {
        let namespaced = k.scope == api::Scope::Namespaced;
        resources.push(json!({
            "name": k.plural, "singularName": k.singular, "namespaced": namespaced, "kind": k.kind,
            "verbs": VERBS, "shortNames": k.short_names, "categories": k.categories,
        }));
        if k.has_status {
            resources.push(json!({
                "name": format!("{}/status", k.plural), "singularName": "", "namespaced": namespaced,
                "kind": k.kind, "verbs": STATUS_VERBS,
            }));
        }
    }
    Json(
        json!({ "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": api_version, "resources": resources }),
    )
}

/// `GET /apis/apiextensions.k8s.io/v1/customresourcedefinitions`: univrs' kinds as the
/// CustomResourceDefinitions a Kubernetes cluster would have for them. What kubectl reads to
/// learn which kinds may be an ApplySet's parent (those labelled
/// `applyset.kubernetes.io/is-parent-type`: ApplySet); `labelSelector` applies. Static and
/// public, like discovery.
pub async fn custom_resource_definitions(
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(query.as_deref().unwrap_or("")).unwrap_or_default();
    let selector = match pairs.iter().find(|(k, _)| k == "labelSelector") {
        Some((_, s)) => match api::selector::LabelSelector::parse(s) {
            Ok(sel) => Some(sel),
            Err(e) => {
                return super::status::failure(400, "BadRequest", &format!("labelSelector: {e}"), json!({}));
            }
        },
        None => None,
    };
    let items: Vec<Value> = api::kinds::in_group_version(api::API_VERSION)
        .map(custom_resource_definition)
        .filter(|crd| selector.as_ref().is_none_or(|s| s.matches(crd["metadata"]["labels"].as_object())))
        .collect();
    Json(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinitionList",
        "metadata": { "resourceVersion": "" }, "items": items,
    }))
    .into_response()
}

fn custom_resource_definition(k: &api::object::KindInfo) -> Value {
    let mut labels = serde_json::Map::new();
    if k.kind == "ApplySet" {
        labels.insert(api::kinds::applyset::IS_PARENT_TYPE.into(), "true".into());
    }
    json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": { "name": format!("{}.{}", k.plural, api::GROUP), "labels": labels },
        "spec": {
            "group": api::GROUP,
            "names": { "kind": k.kind, "plural": k.plural, "singular": k.singular, "listKind": format!("{}List", k.kind) },
            "scope": if k.scope == api::Scope::Namespaced { "Namespaced" } else { "Cluster" },
            "versions": [{ "name": api::VERSION, "served": true, "storage": true }],
        },
    })
}
