//! Errors as Kubernetes `Status` objects, which kubectl and client libraries print as they do
//! for Kubernetes.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::registry::{ApiError, RETRY_AFTER_SECONDS};

/// Why a request failed, as its `Status` says, kept on the response for the request log
/// ([`crate::metrics::track`]).
#[derive(Clone, Debug)]
pub struct Failed {
    /// The `Status` reason (`Forbidden`, `Invalid`, …).
    pub reason: String,
    /// The `Status` message.
    pub message: String,
}

/// A `Status` with `status: Failure`.
pub fn failure(code: u16, reason: &str, message: &str, details: Value) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "details": details, "code": code,
    });
    let code = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (code, Json(body)).into_response();
    response.extensions_mut().insert(Failed { reason: reason.to_owned(), message: message.to_owned() });
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = self.to_string();
        let details = match &self {
            ApiError::NotFound { kind, name }
            | ApiError::AlreadyExists { kind, name }
            | ApiError::Conflict { kind, name } => json!({ "name": name, "group": api::GROUP, "kind": kind }),
            ApiError::Invalid { kind, name, causes } => json!({
                "name": name, "group": api::GROUP, "kind": kind,
                "causes": causes.iter().map(|c| json!({
                    "reason": "FieldValueInvalid", "message": c.message, "field": c.path,
                })).collect::<Vec<_>>(),
            }),
            ApiError::BadRequest(_)
            | ApiError::Unauthorized(_)
            | ApiError::Forbidden(_)
            | ApiError::Expired(_)
            | ApiError::UnsupportedMediaType(_)
            | ApiError::TooLarge(_)
            | ApiError::Unavailable(_) => json!({}),
            ApiError::TooManyRequests { retry_after, .. } => json!({ "retryAfterSeconds": retry_after }),
            ApiError::NotReady(_) => json!({ "retryAfterSeconds": RETRY_AFTER_SECONDS }),
            // As Kubernetes says it (client-go's reflector looks for the cause) and asks again.
            ApiError::Timeout(_) => json!({
                "causes": [{ "reason": "ResourceVersionTooLarge", "message": "Too large resource version" }],
                "retryAfterSeconds": RETRY_AFTER_SECONDS,
            }),
            ApiError::NeedsApproval(_) => json!({}),
            ApiError::PendingApproval { name, .. } => {
                // Not a failure: the request is held, as the Approval it names.
                let body = json!({
                    "kind": "Status", "apiVersion": "v1", "metadata": {},
                    "status": "Success", "message": message, "reason": self.reason(), "code": 202,
                    "details": { "name": name, "group": api::GROUP, "kind": "approvals" },
                });
                return (StatusCode::ACCEPTED, Json(body)).into_response();
            }
        };
        let mut response = failure(self.code(), self.reason(), &message, details);
        let retry_after = match &self {
            ApiError::TooManyRequests { retry_after, .. } => Some(*retry_after),
            ApiError::NotReady(_) | ApiError::Timeout(_) => Some(RETRY_AFTER_SECONDS),
            _ => None,
        };
        if let Some(seconds) = retry_after {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        response
    }
}

/// Any path the API does not serve.
pub async fn not_found_route() -> Response {
    failure(404, "NotFound", "the server could not find the requested resource", json!({}))
}

/// A method the path does not serve.
pub async fn method_not_allowed() -> Response {
    failure(
        405,
        "MethodNotAllowed",
        "the server does not allow this method on the requested resource",
        json!({}),
    )
}
