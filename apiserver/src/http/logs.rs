//! `GET /apis/univrs.io/v1/namespaces/NS/replicas/NAME/log[?follow=true][&tailLines=N]`: a
//! replica's output, streamed from the agent of its node (as the kubelet proxy does for pods),
//! and `GET /members`: who the control-plane members are, which node agents ask to know whose
//! log requests to accept.
//!
//! Only the workload's owner (its signer) and members may read a replica's output. The
//! apiserver then calls the node's agent, in this order, stopping at the first refusal:
//! 1. the address: one the node's operator signed into the Node, of the form
//!    `/ip4/A/tcp/P/tls/http`, and allowed by the address policy ([`address`]: no loopback,
//!    link-local, unspecified, multicast or broadcast, unless `--allow-loopback-nodes`);
//! 2. TCP, then TLS 1.3 in which the peer must prove the Node's `spec.nodeKey` ([`node_tls`]);
//! 3. only then the request, with a token minted by the member key for that node only
//!    (audience `univrs-node:NODE`, one minute).
//!
//! Every step is bounded in time, and of an agent's error answer only its first KiB, as text,
//! reaches the caller.

mod address;
mod node_tls;

use api::KindSpec;
use api::kinds::{NodeSpec, ReplicaSpec, WorkloadSpec};
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{FromRef, State};
use axum::http::{Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ed25519_dalek::SigningKey;
use serde_json::{Value, json};

use super::AppState;
use super::authn::Authn;
use crate::access::Caller;
use crate::registry::{ApiError, ObjectRef, ReadAt, Registry};

pub use address::{
    AddressPolicy, AddressRule, AgentEndpoint, EXPECTED_FORM, Refused, agent_endpoint, check_address,
};
pub use node_tls::{NodeKeyVerifier, client_config};

/// How long the TCP connection to an agent may take.
const CONNECT: Duration = Duration::from_secs(5);
/// How long the TLS handshake with an agent may take.
const HANDSHAKE: Duration = Duration::from_secs(5);
/// How long an agent may take to answer (its headers; a followed log then streams).
const ANSWER: Duration = Duration::from_secs(10);
/// How much of an agent's error answer is read, and for how long.
const ERROR_BODY_BYTES: usize = 1024;
const ERROR_BODY_TIME: Duration = Duration::from_secs(5);

/// How the apiserver calls node agents.
#[derive(Clone, Default)]
pub struct NodeProxy {
    /// The key tokens for agents are minted with (the member key); `None`: this apiserver
    /// calls no agent.
    pub key: Option<Arc<SigningKey>>,
    /// Which agent addresses it connects to.
    pub policy: AddressPolicy,
}

impl std::fmt::Debug for NodeProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeProxy")
    }
}

impl FromRef<Arc<AppState>> for NodeProxy {
    fn from_ref(state: &Arc<AppState>) -> NodeProxy {
        state.node_proxy.clone()
    }
}

impl FromRef<Arc<AppState>> for Authn {
    fn from_ref(state: &Arc<AppState>) -> Authn {
        state.authn.clone()
    }
}

/// `GET /members`: the cluster's token audience and its members' did:keys.
pub async fn members(State(authn): State<Authn>, _who: Caller) -> Json<Value> {
    Json(json!({ "cluster": authn.audience(), "members": authn.members() }))
}

/// Splits `namespaces/NS/replicas/NAME/log` into namespace and name.
pub fn log_target(rest: &str) -> Option<(&str, &str)> {
    match rest.split('/').collect::<Vec<_>>().as_slice() {
        ["namespaces", ns, "replicas", name, "log"] => Some((ns, name)),
        _ => None,
    }
}

/// The facts of kind `S`.
fn kind<S: KindSpec>() -> &'static api::KindInfo {
    api::kinds::by_kind(S::KIND).expect("a built-in kind")
}

fn unavailable(message: String) -> ApiError {
    ApiError::Unavailable(message)
}

/// Replica `ns/name` and the Workload it names (`None`: gone), as stored.
async fn replica_and_workload(
    reg: &Registry,
    ns: &str,
    name: &str,
) -> Result<(Value, Option<Value>), ApiError> {
    let system = Caller::system();
    let replica =
        reg.get(&system, ObjectRef::new(kind::<ReplicaSpec>(), Some(ns), name), ReadAt::Latest).await?;
    let workload = replica.pointer("/spec/workload").and_then(Value::as_str).unwrap_or_default();
    let workload = match reg
        .get(&system, ObjectRef::new(kind::<WorkloadSpec>(), Some(ns), workload), ReadAt::Latest)
        .await
    {
        Ok(w) => Some(w),
        Err(ApiError::NotFound { .. }) => None,
        Err(e) => return Err(e),
    };
    Ok((replica, workload))
}

/// Streams a replica's output from its node.
pub async fn proxy(
    reg: &Registry,
    proxy: &NodeProxy,
    who: &Caller,
    ns: &str,
    name: &str,
    raw_query: Option<&str>,
) -> Result<Response, ApiError> {
    let (replica, workload) = replica_and_workload(reg, ns, name).await?;
    reg.may_read_log(who, &replica, workload.as_ref()).await?;
    let uid = replica.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default();
    let mut path = format!("/replicas/{uid}/log");
    let passed: Vec<(String, String)> =
        serde_urlencoded::from_str::<Vec<(String, String)>>(raw_query.unwrap_or(""))
            .unwrap_or_default()
            .into_iter()
            .filter(|(k, _)| k == "follow" || k == "tailLines")
            .collect();
    if !passed.is_empty() {
        path.push('?');
        path.push_str(&serde_urlencoded::to_string(&passed).unwrap_or_default());
    }
    let response = call_agent(reg, proxy, &replica, AgentCall::get(path, "replicas/log")).await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], Body::new(response.into_body()))
        .into_response())
}

/// Splits `namespaces/NS/replicas/NAME/exec` into namespace and name.
pub fn exec_target(rest: &str) -> Option<(&str, &str)> {
    match rest.split('/').collect::<Vec<_>>().as_slice() {
        ["namespaces", ns, "replicas", name, "exec"] => Some((ns, name)),
        _ => None,
    }
}

/// What `ui exec` asks: a command to run in a replica's container, and for how long at most.
#[derive(Debug, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExecRequest {
    /// The program and its arguments (no shell).
    pub command: Vec<String>,
    /// Seconds before it is killed (default 30, at most [`MAX_EXEC_SECONDS`]).
    #[serde(default)]
    pub timeout_seconds: Option<u64>,
    /// The owner's authorization of this command in this replica (a token for
    /// [`api::kinds::exec_audience`]), passed on to the node, which checks it.
    #[serde(default)]
    pub authorization: Option<String>,
    /// What makes the authorization unique (part of its audience).
    #[serde(default)]
    pub nonce: Option<String>,
}

/// The largest answer of an agent to an exec read.
const MAX_EXEC_ANSWER: usize = 2 * 6 * (1 << 20) + 4096;

/// The longest an exec may run.
pub const MAX_EXEC_SECONDS: u64 = 300;

impl ExecRequest {
    /// Refuses what the agent would refuse, before anything is called.
    pub fn check(&self) -> Result<(), ApiError> {
        let bad = |m: &str| Err(ApiError::BadRequest(format!("exec: {m}")));
        if let Err(e) = api::kinds::check_command(&self.command) {
            return bad(&format!("command: {e}"));
        }
        if self.timeout_seconds.is_some_and(|t| t == 0 || t > MAX_EXEC_SECONDS) {
            return bad(&format!("timeoutSeconds: must be 1..={MAX_EXEC_SECONDS}"));
        }
        match &self.authorization {
            None => {
                return bad(
                    "authorization: required: the owner's signed authorization of this command (ui exec makes it)",
                );
            }
            Some(a) if a.len() > api::token::MAX_TOKEN_BYTES => {
                return bad(&format!("authorization: at most {} bytes", api::token::MAX_TOKEN_BYTES));
            }
            Some(_) => {}
        }
        if self.nonce.as_ref().is_some_and(|n| n.len() > 128) {
            return bad("nonce: at most 128 bytes");
        }
        Ok(())
    }
}

/// Runs a command in a replica's container on its node (`ui exec`): only the workload's
/// owner may, never a member nor an agent key; every exec is written to the apiserver's log
/// (who, which replica, what, how it ended).
pub async fn exec(
    reg: &Registry,
    proxy: &NodeProxy,
    who: &Caller,
    ns: &str,
    name: &str,
    request: ExecRequest,
) -> Result<Response, ApiError> {
    let (replica, workload) = replica_and_workload(reg, ns, name).await?;
    crate::access::logs::may_exec(who, &replica, workload.as_ref())?;
    request.check()?;
    let uid = replica.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default();
    let timeout = Duration::from_secs(request.timeout_seconds.unwrap_or(30));
    let body = serde_json::to_vec(&request).map_err(|e| unavailable(e.to_string()))?;
    let call = AgentCall {
        method: axum::http::Method::POST,
        path: format!("/replicas/{uid}/exec"),
        body: body.into(),
        answer_within: timeout + ANSWER,
        what: "replicas/exec",
    };
    let result = call_agent(reg, proxy, &replica, call).await;
    let code = match &result {
        Ok(_) => "ran".to_owned(),
        Err(e) => format!("refused: {e}"),
    };
    tracing::info!(
        target: "audit",
        namespace = ns,
        "exec by {} in replica {name}: {:?} ({code})",
        who.name(),
        request.command
    );
    let response = result?;
    use http_body_util::BodyExt;
    // Bounded: the agent keeps 1 MiB of each stream, JSON may escape a byte into six.
    let limited = http_body_util::Limited::new(response.into_body(), MAX_EXEC_ANSWER);
    let bytes = tokio::time::timeout(ANSWER, limited.collect())
        .await
        .map_err(|_| unavailable("the agent's answer did not end in time".into()))?
        .map_err(|e| unavailable(e.to_string()))?
        .to_bytes();
    let answer: Value =
        serde_json::from_slice(&bytes).map_err(|e| unavailable(format!("the agent's answer: {e}")))?;
    Ok(Json(answer).into_response())
}

/// One request to a node's agent.
struct AgentCall {
    method: axum::http::Method,
    path: String,
    body: axum::body::Bytes,
    /// How long the agent has to answer (its headers).
    answer_within: Duration,
    /// The subresource, for a 404.
    what: &'static str,
}

impl AgentCall {
    fn get(path: String, what: &'static str) -> Self {
        Self {
            method: axum::http::Method::GET,
            path,
            body: axum::body::Bytes::new(),
            answer_within: ANSWER,
            what,
        }
    }
}

/// Calls the agent of the node `replica` is bound to, as the module's documentation says, and
/// returns its answer when it is a success.
async fn call_agent(
    reg: &Registry,
    proxy: &NodeProxy,
    replica: &Value,
    call: AgentCall,
) -> Result<hyper::Response<hyper::body::Incoming>, ApiError> {
    let system = Caller::system();
    let meta =
        |f: &str| replica.pointer(&format!("/metadata/{f}")).and_then(Value::as_str).unwrap_or_default();
    let (ns, name) = (meta("namespace"), meta("name"));
    let Some(node_name) = replica.pointer("/spec/nodeName").and_then(Value::as_str) else {
        return Err(ApiError::BadRequest(format!(
            "replica {ns}/{name} is not placed on a node yet: no output"
        )));
    };
    let node = reg.get(&system, ObjectRef::new(kind::<NodeSpec>(), None, node_name), ReadAt::Latest).await?;
    // The replica belongs to one Node object: a Node registered later under the same name is
    // another node (perhaps another operator's), which never ran it.
    let node_uid = node.pointer("/metadata/uid").and_then(Value::as_str);
    let bound_uid = replica.pointer("/spec/nodeUid").and_then(Value::as_str);
    if bound_uid.is_none() || bound_uid != node_uid {
        let earlier = bound_uid.map_or_else(|| "an earlier node".to_owned(), |u| format!("node uid {u}"));
        return Err(unavailable(format!(
            "replica {ns}/{name} is bound to {earlier} named {node_name}, not to the node of that name now: that node never ran it"
        )));
    }
    let key = proxy.key.as_ref().ok_or_else(|| unavailable("this apiserver calls no node agents".into()))?;
    // Which address, and whose key: decided before any connection is made.
    let endpoint = agent_endpoint(&node, proxy.policy).map_err(|refused| match refused {
        Refused::Address { .. } | Refused::NotOperatorSigned { .. } => {
            ApiError::Forbidden(refused.to_string())
        }
        Refused::NoAddress { .. } | Refused::PlainHttp { .. } | Refused::BadNodeKey { .. } => {
            unavailable(refused.to_string())
        }
    })?;
    let addr = endpoint.addr;
    // Whether the port was refused, filtered or slow is not said: a caller who registered the
    // node chose the address, and the answer would make the apiserver a port scanner.
    let no_connection = || {
        unavailable(format!(
            "no connection to the agent of node {node_name} at {addr}: check that its agent (ui node run) runs and is reachable from the control plane"
        ))
    };
    let tcp = tokio::time::timeout(CONNECT, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| no_connection())?
        .map_err(|_| no_connection())?;
    let connector = tokio_rustls::TlsConnector::from(client_config(&endpoint.node_key));
    let server_name = rustls_pki_types::ServerName::IpAddress(addr.ip().into());
    let not_the_node = |why: String| {
        let node_key = node.pointer("/spec/nodeKey").and_then(Value::as_str).unwrap_or_default();
        unavailable(format!(
            "the peer at {addr} is not the agent of node {node_name}: it did not prove the node's key {node_key} in a TLS handshake ({why}); nothing was sent to it"
        ))
    };
    let tls = tokio::time::timeout(HANDSHAKE, connector.connect(server_name, tcp))
        .await
        .map_err(|_| not_the_node(format!("no handshake in {} s", HANDSHAKE.as_secs())))?
        .map_err(|e| not_the_node(handshake_failure(&e)))?;
    // The agent proved the node key: now, and only now, the token.
    let failed = |e: String| unavailable(format!("the agent of node {node_name} at {addr} failed: {e}"));
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .map_err(|e| failed(e.to_string()))?;
    tokio::spawn(conn);
    let now = chrono::Utc::now().timestamp();
    let token = api::token::mint(key, &format!("univrs-node:{node_name}"), now, 60);
    let request = Request::builder()
        .method(call.method)
        .uri(call.path)
        .header(header::HOST, addr.to_string())
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(http_body_util::Full::new(call.body))
        .map_err(|e| failed(e.to_string()))?;
    let response = tokio::time::timeout(call.answer_within, sender.send_request(request))
        .await
        .map_err(|_| failed(format!("no answer in {} s", call.answer_within.as_secs())))?
        .map_err(|e| failed(e.to_string()))?;
    let status = response.status();
    if status == StatusCode::NOT_FOUND {
        return Err(ApiError::NotFound { kind: call.what.into(), name: name.into() });
    }
    if !status.is_success() {
        use http_body_util::BodyExt;
        // What the agent says is shown to the caller: its beginning, as text, and not waited
        // for long.
        let mut body = response.into_body();
        let mut said = Vec::new();
        let read = async {
            while said.len() < ERROR_BODY_BYTES {
                match body.frame().await {
                    Some(Ok(frame)) => said.extend_from_slice(frame.data_ref().map_or(&[][..], |d| d)),
                    _ => break,
                }
            }
        };
        let _ = tokio::time::timeout(ERROR_BODY_TIME, read).await;
        said.truncate(ERROR_BODY_BYTES);
        let text: String =
            String::from_utf8_lossy(&said).chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
        return Err(failed(format!("it answered {status}: {}", text.trim())));
    }
    Ok(response)
}

/// Why a handshake with a node's agent failed, in words.
fn handshake_failure(e: &std::io::Error) -> String {
    use rustls::{CertificateError, Error};
    match e.get_ref().and_then(|inner| inner.downcast_ref::<Error>()) {
        Some(Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure)) => {
            "its certificate is of another key".into()
        }
        Some(Error::InvalidCertificate(CertificateError::BadEncoding)) => "its certificate is not one".into(),
        Some(Error::InvalidMessage(_)) => "it does not speak TLS".into(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_target_is_a_replica_s_log_subresource() {
        assert_eq!(log_target("namespaces/default/replicas/r1/log"), Some(("default", "r1")));
        assert_eq!(log_target("namespaces/default/replicas/r1"), None);
        assert_eq!(log_target("namespaces/default/workloads/r1/log"), None);
    }
}
