//! The audit of AI agents: every object request by a key some AgentGrant names — allowed,
//! held for approval or refused, whatever client sent it — is recorded as an AuditEvent
//! through Raft before its answer leaves (`Registry::audit`).
//!
//! A layer around the object routes: it authenticates the caller once (the handlers reuse that
//! [`Caller`](crate::access::Caller), so the grant the rules decided on is the one recorded),
//! lets the request run, and records what it asked and how it ended, with the refusal's message.

use api::kinds::AuditDecision;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt as _;
use serde_json::Value;

use super::AppState;

/// The longest answer body read back for its message (a 202 of a delete holds the whole
/// object, up to the 3 MiB an object may be; an answer is never cut).
const MAX_MESSAGE_BODY: usize = 8 * 1024 * 1024;

/// What a request under `/apis/univrs.io/v1/` asks, as an audit record names it.
#[derive(Debug, PartialEq, Eq)]
pub struct Asked {
    /// get, list, watch, create, update, patch, delete, deletecollection, logs, decide.
    pub verb: &'static str,
    /// The resource (plural), with its subresource (`workloads/status`).
    pub resource: String,
    /// The namespace in the path.
    pub namespace: Option<String>,
    /// The object's name.
    pub name: Option<String>,
    /// `dryRun=All`.
    pub dry_run: bool,
}

impl Asked {
    /// Reads `method` on `path` (under the group's prefix) with `query`.
    pub fn of(method: &Method, path: &str, query: Option<&str>) -> Option<Asked> {
        let rest = path.strip_prefix("/apis/").and_then(|p| {
            api::kinds::group_versions()
                .into_iter()
                .find_map(|(_, _, gv)| p.strip_prefix(gv)?.strip_prefix('/'))
        })?;
        let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
        let (namespace, segments) = match segments.as_slice() {
            ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some((*ns).to_owned()), rest.to_vec()),
            _ => (None, segments),
        };
        let (plural, name, sub) = match segments.as_slice() {
            [plural] => (*plural, None, None),
            [plural, name] => (*plural, Some((*name).to_owned()), None),
            [plural, name, sub] => (*plural, Some((*name).to_owned()), Some(*sub)),
            _ => return None,
        };
        let query = query.unwrap_or_default();
        let param = |k: &str| {
            query.split('&').filter_map(|p| p.split_once('=')).find(|(key, _)| *key == k).map(|(_, v)| v)
        };
        let watching = matches!(param("watch"), Some("true" | "1" | "True"));
        let verb = match (method, &name, sub) {
            (&Method::GET, Some(_), Some("log")) => "logs",
            (&Method::GET, Some(_), _) => "get",
            (&Method::GET, None, _) if watching => "watch",
            (&Method::GET, None, _) => "list",
            (&Method::POST, Some(_), Some("decision")) => "decide",
            (&Method::POST, Some(_), Some("exec")) => "exec",
            (&Method::POST, _, _) => "create",
            (&Method::PUT, _, _) => "update",
            (&Method::PATCH, _, _) => "patch",
            (&Method::DELETE, Some(_), _) => "delete",
            (&Method::DELETE, None, _) => "deletecollection",
            _ => return None,
        };
        let resource = match sub {
            Some(s) if s != "log" && s != "decision" => format!("{plural}/{s}"),
            _ => plural.to_owned(),
        };
        Some(Asked { verb, resource, namespace, name, dry_run: param("dryRun") == Some("All") })
    }
}

/// The layer: records the requests of agents' keys; everyone else's pass untouched.
pub async fn agents(State(state): State<std::sync::Arc<AppState>>, mut req: Request, next: Next) -> Response {
    let header = req.headers().get(AUTHORIZATION).and_then(|v| v.to_str().ok());
    let who = match state.authn.caller(header, super::authn::now()) {
        Ok(who) => who,
        Err(e) => return e.into_response(),
    };
    // The handlers take this very caller: its trail carries the grant the rules used.
    req.extensions_mut().insert(who.clone());
    // The grant index caught up here, off the async workers if far behind. Unreadable, it
    // answers a 503: the request might be an agent's, which never runs unrecorded.
    match state.registry.is_agent(&who).await {
        Ok(true) => {}
        Ok(false) => return next.run(req).await,
        Err(e) => return e.into_response(),
    }
    let Some(asked) = Asked::of(req.method(), req.uri().path(), req.uri().query()) else {
        return next.run(req).await;
    };
    // Nothing an agent asks runs unrecorded.
    if let Err(e) = state.registry.audit_room(&who).await {
        return e.into_response();
    }
    let response = next.run(req).await;
    let code = response.status().as_u16();
    let (response, message) = if matches!(code, 200 | 201) {
        (response, (String::new(), false))
    } else {
        // An error or a held write answers a Status: its message is the record's reason.
        let (parts, body) = response.into_parts();
        let bytes = http_body_util::Limited::new(body, MAX_MESSAGE_BODY)
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let status = serde_json::from_slice::<Value>(&bytes).ok().filter(|v| v["kind"] == "Status");
        let text =
            |k: &str| status.as_ref().and_then(|v| v.get(k)).and_then(Value::as_str).map(str::to_owned);
        let message = text("message").unwrap_or_default();
        let held = text("reason").as_deref() == Some("PendingApproval");
        (Response::from_parts(parts, Body::from(bytes)), (message, held))
    };
    let (message, held) = message;
    let decision = match code {
        // Only a Status saying so is a held write; a 202 of a delete with finalizers was done.
        202 if held => AuditDecision::PendingApproval,
        200..=299 => AuditDecision::Allowed,
        _ => AuditDecision::Refused,
    };
    state
        .registry
        .audit(
            &who,
            asked.verb,
            &asked.resource,
            asked.namespace.as_deref(),
            asked.name.as_deref(),
            asked.dry_run,
            (decision, code, message),
        )
        .await;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_named_by_its_verb_resource_and_object() {
        type Case<'a> =
            (Method, &'a str, Option<&'a str>, &'a str, &'a str, Option<&'a str>, Option<&'a str>, bool);
        let cases: &[Case<'_>] = &[
            (
                Method::GET,
                "/apis/univrs.io/v1/namespaces/d/workloads/w",
                None,
                "get",
                "workloads",
                Some("d"),
                Some("w"),
                false,
            ),
            (
                Method::GET,
                "/apis/univrs.io/v1/workloads",
                Some("watch=true"),
                "watch",
                "workloads",
                None,
                None,
                false,
            ),
            (
                Method::GET,
                "/apis/univrs.io/v1/namespaces/d/workloads",
                Some("limit=5"),
                "list",
                "workloads",
                Some("d"),
                None,
                false,
            ),
            (
                Method::GET,
                "/apis/univrs.io/v1/namespaces/d/replicas/r/log",
                None,
                "logs",
                "replicas",
                Some("d"),
                Some("r"),
                false,
            ),
            (
                Method::POST,
                "/apis/univrs.io/v1/namespaces/d/workloads",
                Some("dryRun=All"),
                "create",
                "workloads",
                Some("d"),
                None,
                true,
            ),
            (
                Method::PUT,
                "/apis/univrs.io/v1/namespaces/d/workloads/w/status",
                None,
                "update",
                "workloads/status",
                Some("d"),
                Some("w"),
                false,
            ),
            (
                Method::DELETE,
                "/apis/univrs.io/v1/creditgrants/g",
                None,
                "delete",
                "creditgrants",
                None,
                Some("g"),
                false,
            ),
            (
                Method::POST,
                "/apis/univrs.io/v1/approvals/a/decision",
                None,
                "decide",
                "approvals",
                None,
                Some("a"),
                false,
            ),
        ];
        for (method, path, query, verb, resource, ns, name, dry_run) in cases {
            let asked = Asked::of(method, path, *query).unwrap();
            assert_eq!(
                asked,
                Asked {
                    verb,
                    resource: resource.to_string(),
                    namespace: ns.map(str::to_owned),
                    name: name.map(str::to_owned),
                    dry_run: *dry_run
                },
                "{method} {path}"
            );
        }
        assert_eq!(Asked::of(&Method::GET, "/version", None), None);
    }
}
