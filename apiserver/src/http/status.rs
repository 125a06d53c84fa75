//! Errors as Kubernetes `Status` objects, which kubectl and client libraries print as they do
//! for Kubernetes.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::registry::ApiError;

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
        if let ApiError::PendingApproval { .. } = &self {
            // Not a failure: the request is held, as the Approval it names.
            let body = json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {},
                "status": "Success", "message": message, "reason": self.reason(), "code": 202,
                "details": self.details(),
            });
            return (StatusCode::ACCEPTED, Json(body)).into_response();
        }
        let mut response = failure(self.code(), self.reason(), &message, self.details());
        if let Some(seconds) = self.retry_after() {
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
