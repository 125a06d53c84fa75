//! `GET /apis/univrs.io/v1/namespaces/NS/replicas/NAME/log[?follow=true][&tailLines=N]`: a
//! replica's output, streamed from the agent of its node (as the kubelet proxy does for pods),
//! and `GET /members`: who the control-plane members are, which node agents ask to know whose
//! log requests to accept.
//!
//! Only the workload's owner (its signer) and members may read a replica's output. The
//! apiserver calls the agent with a token minted by its member key for that node only
//! (audience `univrs-node:NODE`, one minute), at the agent's address from the Node (the
//! operator-signed `spec.addresses` entry ending in `/http`). That hop is plain HTTP today:
//! loopback and trusted networks only, until node traffic moves onto the libp2p transport.

use std::net::SocketAddr;
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
use crate::registry::{ApiError, ReadAt, Registry};

/// The key the apiserver calls node agents with (its member key).
#[derive(Clone)]
pub struct NodeProxy(pub Option<Arc<SigningKey>>);

impl std::fmt::Debug for NodeProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeProxy")
    }
}

impl FromRef<AppState> for NodeProxy {
    fn from_ref(state: &AppState) -> NodeProxy {
        state.node_proxy.clone()
    }
}

impl FromRef<AppState> for Authn {
    fn from_ref(state: &AppState) -> Authn {
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

fn kind(name: &str) -> &'static api::KindInfo {
    api::kinds::lookup(name).expect("a built-in kind")
}

/// The agent's address from a Node's multiaddrs: `/ip4/A/tcp/P/http` or `/ip6/A/tcp/P/http`.
pub fn agent_address(node: &Value) -> Option<SocketAddr> {
    node.pointer("/spec/addresses")?.as_array()?.iter().filter_map(Value::as_str).find_map(|a| {
        match a.split('/').collect::<Vec<_>>().as_slice() {
            ["", "ip4" | "ip6", ip, "tcp", port, "http"] => {
                Some(SocketAddr::new(ip.parse().ok()?, port.parse().ok()?))
            }
            _ => None,
        }
    })
}

fn bad_gateway(message: String) -> ApiError {
    ApiError::Unavailable(message)
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
    let system = Caller::system();
    let replica = reg.get(&system, kind("Replica"), Some(ns), name, ReadAt::Latest).await?;
    let workload = replica.pointer("/spec/workload").and_then(Value::as_str).unwrap_or_default();
    // The owner is the signer of the workload the replica belongs to: the one its owner
    // reference names (by uid, so a new workload of the same name owns nothing of the old).
    let owned_by = |w: &Value| {
        let uid = w.pointer("/metadata/uid").and_then(Value::as_str);
        replica
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .is_some_and(|refs| refs.iter().any(|r| r["kind"] == "Workload" && r["uid"].as_str() == uid))
    };
    let owner = match reg.get(&system, kind("Workload"), Some(ns), workload, ReadAt::Latest).await {
        Ok(w) if owned_by(&w) => w
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(api::signing::SIGNER))
            .and_then(Value::as_str)
            .map(str::to_owned),
        Ok(_) | Err(ApiError::NotFound { .. }) => None,
        Err(e) => return Err(e),
    };
    let is_owner = owner.is_some() && who.did.as_ref().map(|d| d.as_str().to_owned()) == owner;
    if !who.member && !is_owner {
        return Err(ApiError::Forbidden(format!(
            "{} may not read the output of replica {ns}/{name}: only the owner of workload {workload} may",
            who.did.as_ref().map_or("the caller", |d| d.as_str())
        )));
    }
    let Some(node_name) = replica.pointer("/spec/nodeName").and_then(Value::as_str) else {
        return Err(ApiError::BadRequest(format!(
            "replica {ns}/{name} is not placed on a node yet: no output"
        )));
    };
    let node = reg.get(&system, kind("Node"), None, node_name, ReadAt::Latest).await?;
    let addr = agent_address(&node).ok_or_else(|| {
        bad_gateway(format!(
            "node {node_name} has no agent address (an /ip4/…/tcp/…/http entry in spec.addresses)"
        ))
    })?;
    let key = proxy.0.as_ref().ok_or_else(|| bad_gateway("this apiserver cannot call node agents".into()))?;
    let now = chrono::Utc::now().timestamp();
    let token = api::token::mint(key, &format!("univrs-node:{node_name}"), now, 60);
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
    let unreachable =
        |e: String| bad_gateway(format!("cannot reach the agent of node {node_name} at {addr}: {e}"));
    let stream = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| unreachable("timed out".into()))?
        .map_err(|e| unreachable(e.to_string()))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    tokio::spawn(conn);
    let request = Request::get(path)
        .header(header::HOST, addr.to_string())
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(http_body_util::Empty::<axum::body::Bytes>::new())
        .map_err(|e| unreachable(e.to_string()))?;
    let response = tokio::time::timeout(Duration::from_secs(10), sender.send_request(request))
        .await
        .map_err(|_| unreachable("no answer in 10 s".into()))?
        .map_err(|e| unreachable(e.to_string()))?;
    let status = response.status();
    if status == StatusCode::NOT_FOUND {
        return Err(ApiError::NotFound { kind: "replicas/log".into(), name: name.into() });
    }
    if !status.is_success() {
        use http_body_util::BodyExt;
        // What the agent says is shown to the caller: a little of it, and not waited for long.
        let body = http_body_util::Limited::new(response.into_body(), 4096).collect();
        let body = tokio::time::timeout(Duration::from_secs(5), body)
            .await
            .ok()
            .and_then(Result::ok)
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        return Err(bad_gateway(format!(
            "the agent of node {node_name} answered {status}: {}",
            String::from_utf8_lossy(&body).trim()
        )));
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], Body::new(response.into_body()))
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agent_address_is_the_http_multiaddr() {
        let node = json!({ "spec": { "addresses": ["/ip4/10.0.0.1/udp/9000/quic-v1", "/ip4/127.0.0.1/tcp/10250/http"] } });
        assert_eq!(agent_address(&node), Some("127.0.0.1:10250".parse().unwrap()));
        assert_eq!(agent_address(&json!({ "spec": { "addresses": ["/ip4/1.2.3.4/tcp/1"] } })), None);
        assert_eq!(log_target("namespaces/default/replicas/r1/log"), Some(("default", "r1")));
        assert_eq!(log_target("namespaces/default/replicas/r1"), None);
    }
}
