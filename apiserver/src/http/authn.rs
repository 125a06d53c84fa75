//! Authentication: every object request carries a bearer token the client minted from its
//! own key (`api::token`); the token's did:key is who the caller is, and the member list says
//! whether it is a control-plane member. No shared secret, no account.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

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
    /// Tokens verified already.
    verified: Arc<Verified>,
}

/// Most tokens [`Verified`] remembers.
const VERIFIED_CAPACITY: usize = 16_384;

/// Tokens verified already (for this cluster's audience), by the SHA-256 of the whole token:
/// a client sends one token for many requests, and verifying it (decompressing its key's
/// point, checking an Ed25519 signature) was a tenth of the server's work per write
/// (BENCHMARKS.md). Only a token that verified is remembered, with the times it is valid
/// between; a token seen again is taken only within them (the same checks and clock skew as
/// `api::token::verify`), else verified again. Bounded: when full, what expired goes, and if
/// that is not enough, everything (a stranger minting tokens from fresh keys costs each of
/// them a full verification, as before, never a wrong answer).
#[derive(Debug, Default)]
struct Verified {
    tokens: Mutex<HashMap<[u8; 32], Valid>>,
}

/// Who a verified token names and when it is valid.
#[derive(Clone, Debug)]
struct Valid {
    did: Did,
    /// Not before: the later of its `nbf` and `iat`.
    from: i64,
    /// Its `exp`.
    until: i64,
}

impl Verified {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Valid>> {
        self.tokens.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `api::token::verify`, once per token while it is valid.
    fn verify(&self, token: &str, audience: &str, now: i64) -> Result<Did, api::token::TokenError> {
        use sha2::Digest as _;
        let skew = api::token::CLOCK_SKEW_SECS;
        let key: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        if let Some(v) = self.lock().get(&key)
            && now <= v.until + skew
            && now + skew >= v.from
        {
            return Ok(v.did.clone());
        }
        let (did, claims) = api::token::verify(token, audience, now)?;
        let mut tokens = self.lock();
        if tokens.len() >= VERIFIED_CAPACITY {
            tokens.retain(|_, v| now <= v.until + skew);
            if tokens.len() >= VERIFIED_CAPACITY {
                tokens.clear();
            }
        }
        tokens.insert(key, Valid { did: did.clone(), from: claims.nbf.max(claims.iat), until: claims.exp });
        Ok(did)
    }
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
            verified: Arc::default(),
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
        let did = self
            .verified
            .verify(token.trim(), &self.audience, now)
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
    std::sync::Arc<AppState>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        // Authenticated once per request: the audit layer's caller, when it ran (so the rate
        // is counted once, and the grant the rules note is the one recorded).
        if let Some(who) = parts.extensions.get::<Caller>() {
            return Ok(who.clone());
        }
        let state = std::sync::Arc::<AppState>::from_ref(state);
        let header = parts.headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok());
        state.authn.caller(header, now())
    }
}

#[cfg(test)]
mod verified_tests {
    use api::token::{CLOCK_SKEW_SECS, TokenError, mint};
    use ed25519_dalek::SigningKey;

    use super::*;

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn a_remembered_token_still_expires_and_another_token_is_verified_in_full() {
        let v = Verified::default();
        let key = SigningKey::from_bytes(&[1; 32]);
        let t = mint(&key, "univrs:c1", NOW, 300);
        let did = v.verify(&t, "univrs:c1", NOW).unwrap();
        assert_eq!(did, Did::from_key(&key.verifying_key()));
        // Remembered: the same answer, within its times only.
        assert_eq!(v.verify(&t, "univrs:c1", NOW + 299).unwrap(), did);
        assert!(matches!(
            v.verify(&t, "univrs:c1", NOW + 300 + CLOCK_SKEW_SECS + 1),
            Err(TokenError::Expired(_))
        ));
        assert!(matches!(
            v.verify(&t, "univrs:c1", NOW - CLOCK_SKEW_SECS - 1),
            Err(TokenError::NotYetValid(_))
        ));
        // A token changed by one character is another token: verified, refused.
        let mut forged = t.clone();
        let last = forged.pop().unwrap();
        forged.push(if last == 'A' { 'B' } else { 'A' });
        assert!(v.verify(&forged, "univrs:c1", NOW).is_err());
        // Refused tokens are not remembered.
        assert!(v.verify(&mint(&key, "univrs:other", NOW, 300), "univrs:c1", NOW).is_err());
        assert_eq!(v.lock().len(), 1);
    }

    #[test]
    fn it_holds_at_most_its_capacity() {
        let v = Verified::default();
        let key = SigningKey::from_bytes(&[2; 32]);
        for i in 0..(VERIFIED_CAPACITY as i64 + 10) {
            v.verify(&mint(&key, "univrs:c1", NOW + i, 300), "univrs:c1", NOW + i).unwrap();
        }
        assert!(v.lock().len() <= VERIFIED_CAPACITY);
    }
}
