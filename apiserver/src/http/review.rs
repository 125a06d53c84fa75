//! The review APIs of kubectl's `auth` commands, about the caller only:
//! - `authorization.k8s.io/v1` `SelfSubjectAccessReview` (`kubectl auth can-i VERB RESOURCE`)
//!   and `SelfSubjectRulesReview` (`kubectl auth can-i --list`), answered by
//!   [`access::review`](crate::access::review) from the rules admission enforces;
//! - `authentication.k8s.io/v1` `SelfSubjectReview` (`kubectl auth whoami`): the caller's did,
//!   whether it is a control-plane member, and the Nodes whose key it holds.
//!
//! Any key is a user, so: a review needs a token like every object request (and counts
//! against the caller's request rate); it answers for the caller and for nobody else
//! (`SubjectAccessReview` is not served, and a spec naming a user, groups or extra is
//! refused); its body and every string in it are bounded; it writes nothing; and it says no
//! more than the caller may read (every object is readable by every identity; an answer
//! never repeats a secret, only who may do what).

use api::Scope;
use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::access::Caller;
use crate::access::review::{Answer, Question, RULES_INCOMPLETE};
use crate::registry::{ApiError, MAX_NODES_SHOWN, Registry};

/// The group of access reviews.
pub const AUTHORIZATION: &str = "authorization.k8s.io";
/// The group of `SelfSubjectReview`.
pub const AUTHENTICATION: &str = "authentication.k8s.io";

/// The largest review body read (a review is a few hundred bytes).
const MAX_REVIEW_BYTES: usize = 64 * 1024;
/// The longest string a review may hold (a DNS subdomain: the longest name of anything).
const MAX_FIELD: usize = 253;

/// The group every authenticated caller is in.
pub const GROUP_AUTHENTICATED: &str = "system:authenticated";
/// The group of the control-plane members.
pub const GROUP_MEMBERS: &str = "univrs:members";
/// The group of identities that are a Node's key.
pub const GROUP_NODES: &str = "univrs:nodes";
/// The `extra` key naming the Nodes whose key the caller is.
pub const EXTRA_NODES: &str = "univrs.io/nodes";

/// Paths outside the resources, who may do what to them: (verb, path, members only). A path
/// ending in `/*` covers everything under it. Kept next to the routes of `super::router`.
const NON_RESOURCE: [(&str, &str, bool); 16] = [
    ("get", "/version", false),
    ("get", "/api", false),
    ("get", "/api/*", false),
    ("get", "/apis", false),
    ("get", "/apis/*", false),
    ("get", "/openapi/*", false),
    ("get", "/healthz", false),
    ("get", "/readyz", false),
    ("get", "/livez", false),
    ("get", "/healthz/*", false),
    ("get", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", false),
    ("get", "/readyz/*", false),
    ("get", "/livez/*", false),
    ("get", "/members", false),
    ("get", "/cluster/members", false),
    ("post", "/cluster/members", true),
];

/// `resourceAttributes` of a `SelfSubjectAccessReview`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ResourceAttributes {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    namespace: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    verb: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    group: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    resource: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    subresource: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    name: String,
    // Selectors narrow a list; every object is readable by every identity, so they change no
    // answer. Accepted (kubectl 1.31+ may send them), bounded with the body, and echoed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    field_selector: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    label_selector: Option<Value>,
}

/// `nonResourceAttributes`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NonResourceAttributes {
    #[serde(default)]
    path: String,
    #[serde(default)]
    verb: String,
}

/// The spec of a `SelfSubjectAccessReview`: no user, groups or extra (it is about the caller).
#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AccessSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    resource_attributes: Option<ResourceAttributes>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    non_resource_attributes: Option<NonResourceAttributes>,
}

/// The spec of a `SelfSubjectRulesReview`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RulesSpec {
    #[serde(default)]
    namespace: String,
}

/// A review object as sent: `apiVersion`, `kind`, `metadata` and `status` are the client's
/// and ignored (a review is never stored); `spec` is the question.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Review<S> {
    #[serde(default, rename = "apiVersion")]
    _api_version: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default, rename = "metadata")]
    _metadata: Option<serde::de::IgnoredAny>,
    spec: S,
    #[serde(default, rename = "status")]
    _status: Option<serde::de::IgnoredAny>,
}

/// Reads and decodes a review body: bounded; strict JSON, or protobuf (what kubectl sends)
/// read against `schema` into the same JSON; the kind named right.
async fn read<S: serde::de::DeserializeOwned>(
    req: Request,
    kind: &str,
    schema: &[(u32, super::proto::Field)],
) -> Result<S, Response> {
    let protobuf = req
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.trim().starts_with(super::proto::PROTOBUF));
    let bytes = super::objects::read_body(req, MAX_REVIEW_BYTES).await?;
    let bad = |message: String| ApiError::BadRequest(message).into_response();
    let value = if protobuf {
        super::proto::decode(&bytes, schema)
            .map_err(|e| bad(format!("the request body is not a {kind}: {e}")))?
    } else {
        let text =
            std::str::from_utf8(&bytes).map_err(|e| bad(format!("the request body is not UTF-8: {e}")))?;
        super::json::parse(text).map_err(|e| bad(format!("the request body is not valid JSON: {e}")))?
    };
    let review: Review<S> = serde_json::from_value(value).map_err(|e| {
        bad(format!(
            "{kind}: {e} (a {kind} asks about its caller only: it has no user, groups, uid or extra)"
        ))
    })?;
    if review.kind.as_deref().is_some_and(|k| k != kind) {
        return Err(bad(format!("the request body is a {}, not a {kind}", review.kind.unwrap_or_default())));
    }
    Ok(review.spec)
}

fn bounded<'a>(field: &str, value: &'a str) -> Result<&'a str, ApiError> {
    if value.len() > MAX_FIELD {
        return Err(ApiError::BadRequest(format!("{field}: longer than {MAX_FIELD} bytes")));
    }
    Ok(value)
}

fn nonempty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// The answer to `resourceAttributes`, for `who`.
async fn resource_answer(reg: &Registry, who: &Caller, a: &ResourceAttributes) -> Result<Answer, ApiError> {
    for (field, value) in [
        ("namespace", &a.namespace),
        ("verb", &a.verb),
        ("group", &a.group),
        ("version", &a.version),
        ("resource", &a.resource),
        ("subresource", &a.subresource),
        ("name", &a.name),
    ] {
        bounded(&format!("spec.resourceAttributes.{field}"), value)?;
    }
    if a.verb.is_empty() {
        return Err(ApiError::BadRequest("spec.resourceAttributes.verb: required".into()));
    }
    let group = a.group.as_str();
    // The kinds of the group asked about (each kind carries its own: univrs.io, events.k8s.io).
    let kinds: Vec<&'static api::KindInfo> = api::kinds::KINDS
        .iter()
        .filter(|k| group == "*" || group == k.group)
        .filter(|k| a.resource == "*" || a.resource == k.plural)
        .collect();
    let mut others = Vec::new();
    if group.is_empty() || group == "*" {
        others.extend(["services"].into_iter().filter(|r| a.resource == "*" || a.resource == *r));
    }
    if group == AUTHORIZATION || group == "*" {
        others.extend(
            ["selfsubjectaccessreviews", "selfsubjectrulesreviews"]
                .into_iter()
                .filter(|r| a.resource == "*" || a.resource == *r),
        );
    }
    if group == AUTHENTICATION || group == "*" {
        others.extend(["selfsubjectreviews"].into_iter().filter(|r| a.resource == "*" || a.resource == *r));
    }
    if kinds.is_empty() && others.is_empty() {
        return Ok(Answer {
            allowed: false,
            reason: format!("the server has no resource {:?} in the group {:?}", a.resource, a.group),
        });
    }
    for resource in others {
        let answer = other_answer(resource, &a.verb, nonempty(&a.subresource));
        if !answer.allowed {
            return Ok(answer);
        }
    }
    for kind in kinds {
        let namespace = match kind.scope {
            Scope::Namespaced => nonempty(&a.namespace),
            Scope::Cluster => None,
        };
        let q = Question {
            verb: &a.verb,
            kind,
            namespace,
            name: nonempty(&a.name),
            subresource: nonempty(&a.subresource),
        };
        let answer = reg.review(who, &q).await?;
        if !answer.allowed {
            return Ok(answer);
        }
    }
    Ok(Answer { allowed: true, reason: String::new() })
}

/// The answer for the resources outside `univrs.io` this server serves: the members as
/// Services (read by everyone) and the reviews themselves (created by everyone).
fn other_answer(resource: &str, verb: &str, subresource: Option<&str>) -> Answer {
    let (verbs, what): (&[&str], _) = match (resource, subresource) {
        ("services", None) => (&["get", "list"], "the control plane's members, as Services, are only read"),
        ("services", Some("proxy")) => (&["get"], "a member's Service proxy only redirects a get"),
        (_, None) => (&["create"], "a review is only created"),
        _ => (&[], "no such subresource"),
    };
    if verbs.contains(&verb) {
        return Answer { allowed: true, reason: String::new() };
    }
    Answer { allowed: false, reason: format!("{resource}: {what} ({})", verbs.join(", ")) }
}

/// Whether `path` is covered by `pattern` (exact, or under a pattern ending in `/*`).
fn covers(pattern: &str, path: &str) -> bool {
    match pattern.strip_suffix("/*") {
        Some(prefix) => path.starts_with(&format!("{prefix}/")),
        None => pattern == path,
    }
}

/// The answer to `nonResourceAttributes`, for `who`.
fn non_resource_answer(who: &Caller, a: &NonResourceAttributes) -> Result<Answer, ApiError> {
    bounded("spec.nonResourceAttributes.path", &a.path)?;
    bounded("spec.nonResourceAttributes.verb", &a.verb)?;
    let rule = NON_RESOURCE.iter().find(|(verb, pattern, _)| *verb == a.verb && covers(pattern, &a.path));
    Ok(match rule {
        Some((_, _, true)) if !who.member => Answer {
            allowed: false,
            reason: format!("only a control-plane member may {} {}", a.verb, a.path),
        },
        Some(_) => Answer { allowed: true, reason: String::new() },
        None => Answer { allowed: false, reason: format!("this server serves no {} of {}", a.verb, a.path) },
    })
}

/// `POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews`.
pub async fn access_review(State(reg): State<Registry>, who: Caller, req: Request) -> Response {
    let spec: AccessSpec =
        match read(req, "SelfSubjectAccessReview", super::proto::SELF_SUBJECT_ACCESS_REVIEW).await {
            Ok(spec) => spec,
            Err(response) => return response,
        };
    let answer = match (&spec.resource_attributes, &spec.non_resource_attributes) {
        (Some(a), None) => resource_answer(&reg, &who, a).await,
        (None, Some(a)) => non_resource_answer(&who, a),
        _ => Err(ApiError::BadRequest(
            "spec: give exactly one of resourceAttributes and nonResourceAttributes".into(),
        )),
    };
    let answer = match answer {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    let mut status = json!({ "allowed": answer.allowed });
    if !answer.allowed {
        status["denied"] = true.into();
        status["reason"] = answer.reason.into();
    }
    created(json!({
        "kind": "SelfSubjectAccessReview", "apiVersion": format!("{AUTHORIZATION}/v1"),
        "metadata": { "creationTimestamp": null }, "spec": spec, "status": status,
    }))
}

/// `POST /apis/authorization.k8s.io/v1/selfsubjectrulesreviews`.
pub async fn rules_review(State(reg): State<Registry>, who: Caller, req: Request) -> Response {
    let spec: RulesSpec =
        match read(req, "SelfSubjectRulesReview", super::proto::SELF_SUBJECT_RULES_REVIEW).await {
            Ok(spec) => spec,
            Err(response) => return response,
        };
    if let Err(e) = bounded("spec.namespace", &spec.namespace) {
        return e.into_response();
    }
    let rules = match reg.rules_review(&who, nonempty(&spec.namespace)).await {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let mut resource_rules: Vec<Value> = rules
        .into_iter()
        .map(|r| json!({ "verbs": r.verbs, "apiGroups": [r.group], "resources": [r.resource] }))
        .collect();
    resource_rules.push(json!({ "verbs": ["get", "list"], "apiGroups": [""], "resources": ["services"] }));
    resource_rules.push(json!({ "verbs": ["get"], "apiGroups": [""], "resources": ["services/proxy"] }));
    resource_rules.push(json!({ "verbs": ["create"], "apiGroups": [AUTHORIZATION],
                                "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"] }));
    resource_rules.push(
        json!({ "verbs": ["create"], "apiGroups": [AUTHENTICATION], "resources": ["selfsubjectreviews"] }),
    );
    let non_resource_rules: Vec<Value> = NON_RESOURCE
        .iter()
        .filter(|(_, _, members_only)| who.member || !members_only)
        .map(|(verb, path, _)| json!({ "verbs": [verb], "nonResourceURLs": [path] }))
        .collect();
    created(json!({
        "kind": "SelfSubjectRulesReview", "apiVersion": format!("{AUTHORIZATION}/v1"),
        "metadata": { "creationTimestamp": null }, "spec": { "namespace": spec.namespace },
        "status": {
            "resourceRules": resource_rules, "nonResourceRules": non_resource_rules,
            "incomplete": true, "evaluationError": RULES_INCOMPLETE,
        },
    }))
}

/// `POST /apis/authentication.k8s.io/{v1,v1beta1,v1alpha1}/selfsubjectreviews`: who the
/// caller is.
pub async fn self_review(
    State(reg): State<Registry>,
    who: Caller,
    Path(version): Path<String>,
    req: Request,
) -> Response {
    if !matches!(version.as_str(), "v1" | "v1beta1" | "v1alpha1") {
        return super::status::not_found_route().await;
    }
    // The body says nothing (a SelfSubjectReview has no spec), but it is read within bounds.
    if let Err(response) = super::objects::read_body(req, MAX_REVIEW_BYTES).await {
        return response;
    }
    let Some(did) = who.did.as_ref() else {
        return ApiError::Unauthorized("no identity".into()).into_response();
    };
    let (nodes, more) = match reg.nodes_of(did.as_str()).await {
        Ok(found) => found,
        Err(e) => return e.into_response(),
    };
    let mut groups = vec![GROUP_AUTHENTICATED];
    if who.member {
        groups.push(GROUP_MEMBERS);
    }
    let mut extra = serde_json::Map::new();
    if !nodes.is_empty() {
        groups.push(GROUP_NODES);
        let mut shown = nodes;
        if more {
            shown.push(format!("(more than {MAX_NODES_SHOWN})"));
        }
        extra.insert(EXTRA_NODES.into(), shown.into());
    }
    let mut user = json!({ "username": did.as_str(), "groups": groups });
    if !extra.is_empty() {
        user["extra"] = extra.into();
    }
    created(json!({
        "kind": "SelfSubjectReview", "apiVersion": format!("{AUTHENTICATION}/{version}"),
        "metadata": { "creationTimestamp": null }, "status": { "userInfo": user },
    }))
}

fn created(body: Value) -> Response {
    (StatusCode::CREATED, Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_resource_paths_and_their_patterns() {
        assert!(covers("/apis/*", "/apis/univrs.io"));
        assert!(!covers("/apis/*", "/apis"));
        assert!(covers("/healthz", "/healthz"));
        let stranger = Caller::identity(
            api::identity::Did::from_key(&ed25519_dalek::SigningKey::from_bytes(&[1; 32]).verifying_key()),
            false,
        );
        let ask = |verb: &str, path: &str| {
            non_resource_answer(&stranger, &NonResourceAttributes { path: path.into(), verb: verb.into() })
                .unwrap()
        };
        assert!(ask("get", "/healthz").allowed);
        assert!(ask("get", "/openapi/v3").allowed);
        assert!(!ask("post", "/cluster/members").allowed);
        assert!(!ask("delete", "/healthz").allowed);
        assert!(!ask("get", "/metrics").allowed);
        let member = Caller { member: true, ..stranger };
        assert!(
            non_resource_answer(
                &member,
                &NonResourceAttributes { path: "/cluster/members".into(), verb: "post".into() }
            )
            .unwrap()
            .allowed
        );
    }

    #[test]
    fn other_resources_are_read_or_created_only() {
        assert!(other_answer("services", "list", None).allowed);
        assert!(!other_answer("services", "delete", None).allowed);
        assert!(!other_answer("services", "*", None).allowed);
        assert!(other_answer("selfsubjectaccessreviews", "create", None).allowed);
        assert!(!other_answer("selfsubjectreviews", "get", None).allowed);
    }
}
