//! The error of a reconcile.

/// Why a reconcile failed; the runtime retries it with per-object exponential backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The apiserver refused or failed a request.
    #[error("apiserver: {0}")]
    Api(#[from] kube::Error),
    /// An object could not be encoded or decoded.
    #[error("encoding: {0}")]
    Json(#[from] serde_json::Error),
    /// A cache the reconcile needs stopped (its watch ended).
    #[error("cache of {0} stopped")]
    CacheStopped(&'static str),
}

impl Error {
    /// One word for the error metric's label.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Api(kube::Error::Api(s)) if s.code == 409 => "conflict",
            Self::Api(_) => "api",
            Self::Json(_) => "encoding",
            Self::CacheStopped(_) => "cache",
        }
    }
}
