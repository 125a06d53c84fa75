//! The control plane's own membership, for `ui cluster`: `GET /cluster/members` (any
//! authenticated caller), `POST /cluster/members` and `DELETE /cluster/members/{id}` (members
//! only). A member that is not the leader passes changes to the leader over the member
//! transport.
//!
//! `POST /cluster/isolate` is fault injection for the failure tests (drop all member traffic
//! with the given member ids); it exists only once [`enable_fault_injection`] was called (`ui
//! apiserver --fault-injection`, a hidden flag), and needs a member.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use crate::access::Caller;
use crate::raft::RaftNode;
use crate::raft::{ClusterError, NodeId};
use crate::registry::ApiError;

/// The body of `POST /cluster/members`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AddMember {
    did: String,
    /// The new member's transport address (`IP:PORT`).
    address: String,
    /// Its client API URL, if known.
    #[serde(default)]
    api: String,
}

/// The body of `POST /cluster/isolate`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Isolate {
    ids: Vec<NodeId>,
}

static FAULT_INJECTION: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Serves `POST /cluster/isolate` from now on: for failure tests only.
pub fn enable_fault_injection() {
    FAULT_INJECTION.store(true, std::sync::atomic::Ordering::Relaxed);
}

fn api_error(e: ClusterError) -> ApiError {
    match e {
        ClusterError::Alone | ClusterError::Invalid(_) => ApiError::BadRequest(e.to_string()),
        ClusterError::Unavailable(_) => ApiError::Unavailable(e.to_string()),
    }
}

fn members_only(who: &Caller, what: &str) -> Result<(), ApiError> {
    if who.member {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!("only a control-plane member may {what}")))
    }
}

pub(super) async fn members(_who: Caller, State(node): State<RaftNode>) -> Response {
    let members = node.members().await;
    Json(json!({ "self": node.id(), "members": members })).into_response()
}

pub(super) async fn add(
    who: Caller,
    State(node): State<RaftNode>,
    body: Result<Json<AddMember>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    members_only(&who, "add members")?;
    let Json(body) =
        body.map_err(|e| ApiError::BadRequest(format!("expected {{\"did\", \"address\", \"api\"}}: {e}")))?;
    let id = node.add_member(&body.did, &body.address, &body.api).await.map_err(api_error)?;
    Ok((StatusCode::CREATED, Json(json!({ "id": id, "did": body.did, "address": body.address })))
        .into_response())
}

pub(super) async fn remove(
    who: Caller,
    State(node): State<RaftNode>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    members_only(&who, "remove members")?;
    let id: NodeId = id.parse().map_err(|_| ApiError::BadRequest(format!("{id:?} is not a member id")))?;
    node.remove_member(id).await.map_err(api_error)?;
    Ok(Json(json!({ "removed": id })).into_response())
}

pub(super) async fn isolate(
    who: Caller,
    State(node): State<RaftNode>,
    Json(body): Json<Isolate>,
) -> Result<Response, ApiError> {
    if !FAULT_INJECTION.load(std::sync::atomic::Ordering::Relaxed) {
        return Err(ApiError::NotFound { kind: "route".into(), name: "/cluster/isolate".into() });
    }
    members_only(&who, "inject faults")?;
    node.isolate_from(&body.ids).map_err(api_error)?;
    Ok(Json(json!({ "isolatedFrom": body.ids })).into_response())
}
