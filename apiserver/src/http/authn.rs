//! Authentication: every object request carries a bearer token the client minted from its
//! own key (`api::token`); the token's did:key is who the caller is, and the member list says
//! whether it is a control-plane member. No shared secret, no account.

use std::collections::BTreeSet;
use std::sync::Arc;

use api::identity::Did;
use axum::extract::{FromRef, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use super::AppState;
use crate::access::Caller;
use crate::registry::ApiError;

/// Verifies tokens for one cluster.
#[derive(Clone, Debug)]
pub struct Authn {
    audience: String,
    members: Arc<BTreeSet<String>>,
    /// The member whose Raft membership also names members (every member's key is one).
    cluster: Option<crate::raft::RaftNode>,
    /// The request rate each identity may keep up (members are exempt).
    limits: crate::quota::Limits,
    rates: crate::quota::Rates,
}

impl Authn {
    /// Tokens for `audience` (the cluster); `members` are the control-plane members.
    pub fn new(audience: impl Into<String>, members: impl IntoIterator<Item = Did>) -> Self {
        let members = members.into_iter().map(|d| d.as_str().to_owned()).collect();
        Self {
            audience: audience.into(),
            members: Arc::new(members),
            cluster: None,
            limits: crate::quota::Limits::default(),
            rates: crate::quota::Rates::default(),
        }
    }

    /// Limits the request rate of each identity that is not a member to `limits`.
    #[must_use]
    pub fn with_limits(mut self, limits: crate::quota::Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Also counts as members the keys of every member in `node`'s Raft membership.
    #[must_use]
    pub fn with_cluster(mut self, node: crate::raft::RaftNode) -> Self {
        self.cluster = Some(node);
        self
    }

    /// The control-plane members' did:keys: the configured ones and, in a cluster, the keys of
    /// its current membership.
    pub fn members(&self) -> Vec<String> {
        let mut all: BTreeSet<String> = self.members.iter().cloned().collect();
        if let Some(node) = &self.cluster {
            // A member recorded before its did was known (a single member's first start) has
            // none: it names nobody.
            all.extend(node.membership().into_values().map(|m| m.did).filter(|d| !d.is_empty()));
        }
        all.into_iter().collect()
    }

    /// The audience tokens must name.
    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// Who sent `authorization` (the header's value), or why they are not let in.
    pub fn caller(&self, authorization: Option<&str>, now: i64) -> Result<Caller, ApiError> {
        let header = authorization.ok_or_else(|| {
            ApiError::Unauthorized(
                "no credentials: send a bearer token minted with `ui token` (kubectl: use the kubeconfig `ui up` writes)"
                    .into(),
            )
        })?;
        let token = header
            .strip_prefix("Bearer ")
            .ok_or_else(|| ApiError::Unauthorized("the Authorization header is not a bearer token".into()))?;
        let (did, _) = api::token::verify(token.trim(), &self.audience, now)
            .map_err(|e| ApiError::Unauthorized(format!("the bearer token is refused: {e}")))?;
        let member = self.members.contains(did.as_str())
            || self.cluster.as_ref().is_some_and(|n| n.is_member(did.as_str()));
        if !member {
            self.rates.request(did.as_str(), &self.limits, std::time::Instant::now())?;
        }
        Ok(Caller::identity(did, member))
    }
}

/// Seconds since the epoch, as tokens count them.
pub(super) fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

impl<S: Send + Sync> FromRequestParts<S> for Caller
where
    AppState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        // Authenticated once per request: the audit layer's caller, when it ran (so the rate
        // is counted once, and the grant the rules note is the one recorded).
        if let Some(who) = parts.extensions.get::<Caller>() {
            return Ok(who.clone());
        }
        let state = AppState::from_ref(state);
        let header = parts.headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok());
        state.authn.caller(header, now())
    }
}
