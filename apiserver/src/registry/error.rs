//! The errors of the Kubernetes API: each with its HTTP code and `Status` reason.

use api::FieldError;

/// A request that failed, as the Kubernetes API reports it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 404.
    #[error("{kind} {name:?} not found")]
    NotFound {
        /// The kind's plural (as Kubernetes names the resource in messages).
        kind: String,
        /// The object's name.
        name: String,
    },
    /// 409, on create.
    #[error("{kind} {name:?} already exists")]
    AlreadyExists {
        /// The kind's plural.
        kind: String,
        /// The object's name.
        name: String,
    },
    /// 409, on a stale `resourceVersion` or `uid`.
    #[error(
        "Operation cannot be fulfilled on {kind} {name:?}: the object has been modified; please apply your changes to the latest version and try again"
    )]
    Conflict {
        /// The kind's plural.
        kind: String,
        /// The object's name.
        name: String,
    },
    /// 422, with every problem and its field path.
    #[error("{kind} {name:?} is invalid: {}", causes.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid {
        /// The kind.
        kind: String,
        /// The object's name.
        name: String,
        /// Every problem.
        causes: Vec<FieldError>,
    },
    /// 400.
    #[error("{0}")]
    BadRequest(String),
    /// 401: no credentials, or credentials that do not verify.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: authenticated, but not allowed.
    #[error("{0}")]
    Forbidden(String),
    /// 410: a revision that is no longer kept.
    #[error("{0}")]
    Expired(String),
    /// 415.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 504: a revision asked for was not reached in time (`Retry-After`, and the cause
    /// `ResourceVersionTooLarge`, as Kubernetes answers it).
    #[error("{0}")]
    Timeout(String),
    /// 413: a request or the object it makes is over a size or depth bound.
    #[error("{0}")]
    TooLarge(String),
    /// 429: a quota or rate of the caller is used up; try again after `retry_after` seconds.
    #[error("{message}")]
    TooManyRequests {
        /// Which quota, how much is used and what to do.
        message: String,
        /// Seconds after which trying again may succeed.
        retry_after: u64,
    },
    /// 202: an agent's write its user's grant holds for approval; nothing was written but the
    /// Approval `name`, which the agent watches for the outcome.
    #[error("{message}")]
    PendingApproval {
        /// The Approval.
        name: String,
        /// What happened and what to do.
        message: String,
    },
    /// An agent's write the rules hold for approval (turned into [`ApiError::PendingApproval`]
    /// by the registry, which knows the request; 403 should it ever reach a client).
    #[error("held for the approval of {} (rule {})", .0.owner, .0.rule)]
    NeedsApproval(Box<crate::access::agent::Hold>),
    /// 503: no leader, shutting down, or storage failing.
    #[error("the control plane cannot serve this now: {0}")]
    Unavailable(String),
    /// 503 with `Retry-After` ([`RETRY_AFTER_SECONDS`]): nothing was done for the request —
    /// the member could not confirm that it is up to date (a read barrier failed: an election,
    /// no leader, a partition), or no leader took its write (proposed nowhere) — so asking
    /// again is always safe, and may succeed shortly. Unlike [`ApiError::Unavailable`], which
    /// may follow a write whose outcome is unknown.
    #[error("the control plane cannot serve this now: {0}")]
    NotReady(String),
}

/// The `Retry-After` of [`ApiError::NotReady`] and of the too-large-revision 504
/// ([`ApiError::Timeout`]): about an election's length, what Kubernetes asks of clients it
/// turns away for a moment (client-go waits that long and retries).
pub const RETRY_AFTER_SECONDS: u64 = 1;

impl ApiError {
    /// The HTTP status code.
    pub fn code(&self) -> u16 {
        match self {
            ApiError::NotFound { .. } => 404,
            ApiError::AlreadyExists { .. } | ApiError::Conflict { .. } => 409,
            ApiError::Invalid { .. } => 422,
            ApiError::BadRequest(_) => 400,
            ApiError::Unauthorized(_) => 401,
            ApiError::Forbidden(_) => 403,
            ApiError::Expired(_) => 410,
            ApiError::UnsupportedMediaType(_) => 415,
            ApiError::Timeout(_) => 504,
            ApiError::TooLarge(_) => 413,
            ApiError::TooManyRequests { .. } => 429,
            ApiError::PendingApproval { .. } => 202,
            ApiError::NeedsApproval(_) => 403,
            ApiError::Unavailable(_) | ApiError::NotReady(_) => 503,
        }
    }

    /// The Kubernetes `Status.details` (a response's and a watch's `ERROR` event's alike).
    pub fn details(&self) -> serde_json::Value {
        use serde_json::json;
        match self {
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
            | ApiError::Unavailable(_)
            | ApiError::NeedsApproval(_) => json!({}),
            ApiError::TooManyRequests { retry_after, .. } => json!({ "retryAfterSeconds": retry_after }),
            ApiError::NotReady(_) => json!({ "retryAfterSeconds": RETRY_AFTER_SECONDS }),
            // As Kubernetes says it (client-go's reflector looks for the cause) and asks again.
            ApiError::Timeout(_) => json!({
                "causes": [{ "reason": "ResourceVersionTooLarge", "message": "Too large resource version" }],
                "retryAfterSeconds": RETRY_AFTER_SECONDS,
            }),
            ApiError::PendingApproval { name, .. } => {
                json!({ "name": name, "group": api::GROUP, "kind": "approvals" })
            }
        }
    }

    /// The seconds of a response's `Retry-After`, for what may be asked again.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            ApiError::TooManyRequests { retry_after, .. } => Some(*retry_after),
            ApiError::NotReady(_) | ApiError::Timeout(_) => Some(RETRY_AFTER_SECONDS),
            _ => None,
        }
    }

    /// The Kubernetes `Status.reason`.
    pub fn reason(&self) -> &'static str {
        match self {
            ApiError::NotFound { .. } => "NotFound",
            ApiError::AlreadyExists { .. } => "AlreadyExists",
            ApiError::Conflict { .. } => "Conflict",
            ApiError::Invalid { .. } => "Invalid",
            ApiError::BadRequest(_) => "BadRequest",
            ApiError::Unauthorized(_) => "Unauthorized",
            ApiError::Forbidden(_) => "Forbidden",
            ApiError::Expired(_) => "Expired",
            ApiError::UnsupportedMediaType(_) => "UnsupportedMediaType",
            ApiError::Timeout(_) => "Timeout",
            ApiError::TooLarge(_) => "RequestEntityTooLarge",
            ApiError::TooManyRequests { .. } => "TooManyRequests",
            ApiError::PendingApproval { .. } => "PendingApproval",
            ApiError::NeedsApproval(_) => "Forbidden",
            ApiError::Unavailable(_) | ApiError::NotReady(_) => "ServiceUnavailable",
        }
    }
}

pub(crate) fn unavailable(e: impl std::fmt::Display) -> ApiError {
    ApiError::Unavailable(e.to_string())
}

/// A read barrier that failed, or a write proposed nowhere: nothing was done
/// ([`ApiError::NotReady`]).
pub(crate) fn not_ready(e: impl std::fmt::Display) -> ApiError {
    ApiError::NotReady(e.to_string())
}
