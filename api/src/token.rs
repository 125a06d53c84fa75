//! Bearer tokens a client mints from its own key: a compact JWS (JWT) signed with EdDSA
//! (Ed25519), short-lived, bound to one cluster (the audience), naming the `did:key` it is
//! verified against. No shared secret and no authority: the key is the identity.
//!
//! `{"alg":"EdDSA","typ":"JWT","kid":DID}` . `{"iss":DID,"sub":DID,"aud":AUD,"iat","nbf","exp"}`

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ed25519_dalek::{Signature, SigningKey};
use serde::{Deserialize, Serialize};

use crate::identity::Did;

/// The longest life a token may claim (`exp - iat`), in seconds.
pub const MAX_LIFETIME_SECS: i64 = 15 * 60;
/// How far clocks may disagree, in seconds.
pub const CLOCK_SKEW_SECS: i64 = 60;
/// The largest token accepted, in bytes.
pub const MAX_TOKEN_BYTES: usize = 4096;

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    typ: Option<String>,
    kid: String,
}

/// What a token says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Who minted it (a did:key).
    pub iss: String,
    /// Who it is for (the same did:key).
    pub sub: String,
    /// The cluster it is for.
    pub aud: String,
    /// Issued at (Unix seconds).
    pub iat: i64,
    /// Not before (Unix seconds).
    pub nbf: i64,
    /// Expires at (Unix seconds).
    pub exp: i64,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not three base64url parts of JSON, or too large.
    #[error("the token is malformed: {0}")]
    Malformed(String),
    /// Another algorithm than EdDSA.
    #[error("the token's algorithm {0:?} is not EdDSA")]
    Algorithm(String),
    /// The key id, issuer and subject disagree, or are not a did:key.
    #[error("the token's identity is inconsistent or not a did:key: {0}")]
    Identity(String),
    /// The signature does not verify with the did's key.
    #[error("the token's signature does not verify for {0}")]
    Signature(String),
    /// For another cluster.
    #[error("the token is for another cluster ({0:?})")]
    Audience(String),
    /// Expired.
    #[error("the token expired at {0} (Unix seconds); mint a new one")]
    Expired(i64),
    /// Not valid yet.
    #[error("the token is not valid before {0} (Unix seconds): is a clock wrong?")]
    NotYetValid(i64),
    /// Claims a life longer than allowed.
    #[error("the token claims a life of {0} s, more than the {MAX_LIFETIME_SECS} s allowed")]
    TooLong(i64),
}

/// Mints a token for `key`'s did, for `audience`, valid from `now` for `lifetime_secs`.
pub fn mint(key: &SigningKey, audience: &str, now: i64, lifetime_secs: i64) -> String {
    mint_with(key, audience, now, lifetime_secs).expect("a key at hand always signs")
}

/// [`mint`] with any [`crate::signing::Sign`]er (an agent holding the key may fail).
pub fn mint_with(
    key: &(impl crate::signing::Sign + ?Sized),
    audience: &str,
    now: i64,
    lifetime_secs: i64,
) -> Result<String, String> {
    let did = Did::from_key(&key.public());
    let header = Header { alg: "EdDSA".into(), typ: Some("JWT".into()), kid: did.as_str().into() };
    let claims = Claims {
        iss: did.as_str().into(),
        sub: did.as_str().into(),
        aud: audience.into(),
        iat: now,
        nbf: now,
        exp: now + lifetime_secs.min(MAX_LIFETIME_SECS),
    };
    let signing_input = format!(
        "{}.{}",
        B64.encode(serde_json::to_vec(&header).expect("serializable")),
        B64.encode(serde_json::to_vec(&claims).expect("serializable"))
    );
    let signature = key.try_sign(signing_input.as_bytes())?;
    Ok(format!("{signing_input}.{}", B64.encode(signature.to_bytes())))
}

fn part<T: for<'de> Deserialize<'de>>(b64: &str, what: &str) -> Result<T, TokenError> {
    let bytes = B64.decode(b64).map_err(|_| TokenError::Malformed(format!("the {what} is not base64url")))?;
    serde_json::from_slice(&bytes).map_err(|e| TokenError::Malformed(format!("the {what} is not valid: {e}")))
}

/// Verifies `token` for `audience` at `now` and returns who it identifies.
pub fn verify(token: &str, audience: &str, now: i64) -> Result<(Did, Claims), TokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::Malformed(format!("{} bytes is more than {MAX_TOKEN_BYTES}", token.len())));
    }
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(TokenError::Malformed("a token has three parts separated by dots".into()));
    };
    let header: Header = part(h, "header")?;
    if header.alg != "EdDSA" {
        return Err(TokenError::Algorithm(header.alg));
    }
    let claims: Claims = part(c, "claims")?;
    if claims.iss != header.kid || claims.sub != header.kid {
        return Err(TokenError::Identity(format!(
            "kid {}, iss {}, sub {}",
            header.kid, claims.iss, claims.sub
        )));
    }
    let did = Did::parse(&header.kid).map_err(|e| TokenError::Identity(e.to_string()))?;
    let sig = B64
        .decode(s)
        .ok()
        .and_then(|b| <[u8; 64]>::try_from(b.as_slice()).ok())
        .ok_or_else(|| TokenError::Malformed("the signature is not 64 base64url bytes".into()))?;
    let signing_input = &token[..h.len() + 1 + c.len()];
    did.verifying_key()
        .verify_strict(signing_input.as_bytes(), &Signature::from_bytes(&sig))
        .map_err(|_| TokenError::Signature(did.as_str().into()))?;
    if claims.aud != audience {
        return Err(TokenError::Audience(claims.aud));
    }
    if claims.exp - claims.iat > MAX_LIFETIME_SECS || claims.exp < claims.iat {
        return Err(TokenError::TooLong(claims.exp - claims.iat));
    }
    if now > claims.exp + CLOCK_SKEW_SECS {
        return Err(TokenError::Expired(claims.exp));
    }
    if now + CLOCK_SKEW_SECS < claims.nbf || now + CLOCK_SKEW_SECS < claims.iat {
        return Err(TokenError::NotYetValid(claims.nbf.max(claims.iat)));
    }
    Ok((did, claims))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn key(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }

    #[test]
    fn a_minted_token_verifies_for_its_cluster() {
        let t = mint(&key(1), "univrs:c1", NOW, 300);
        let (did, claims) = verify(&t, "univrs:c1", NOW + 10).unwrap();
        assert_eq!(did, Did::from_key(&key(1).verifying_key()));
        assert_eq!(claims.exp, NOW + 300);
    }

    #[test]
    fn every_bad_token_is_refused_with_its_reason() {
        let t = mint(&key(1), "univrs:c1", NOW, 300);
        assert!(matches!(verify(&t, "univrs:other", NOW), Err(TokenError::Audience(_))));
        assert!(matches!(
            verify(&t, "univrs:c1", NOW + 300 + CLOCK_SKEW_SECS + 1),
            Err(TokenError::Expired(_))
        ));
        assert!(matches!(
            verify(&t, "univrs:c1", NOW - CLOCK_SKEW_SECS - 10),
            Err(TokenError::NotYetValid(_))
        ));
        assert!(matches!(verify("a.b", "univrs:c1", NOW), Err(TokenError::Malformed(_))));
        assert!(matches!(verify(&"x".repeat(5000), "univrs:c1", NOW), Err(TokenError::Malformed(_))));

        // Claims from one key with another key's signature.
        let other = mint(&key(2), "univrs:c1", NOW, 300);
        let mut parts: Vec<&str> = t.split('.').collect();
        parts[2] = other.split('.').nth(2).unwrap();
        assert!(matches!(verify(&parts.join("."), "univrs:c1", NOW), Err(TokenError::Signature(_))));

        // Claims changed after signing (a longer life).
        let mut claims: Claims = part(t.split('.').nth(1).unwrap(), "claims").unwrap();
        claims.exp += 1;
        let forged = format!(
            "{}.{}.{}",
            t.split('.').next().unwrap(),
            B64.encode(serde_json::to_vec(&claims).unwrap()),
            t.split('.').nth(2).unwrap()
        );
        assert!(matches!(verify(&forged, "univrs:c1", NOW), Err(TokenError::Signature(_))));

        // Another algorithm.
        let none =
            format!("{}.{}.", B64.encode(br#"{"alg":"none","kid":"x"}"#), t.split('.').nth(1).unwrap());
        assert!(matches!(verify(&none, "univrs:c1", NOW), Err(TokenError::Algorithm(_))));
    }

    #[test]
    fn a_token_cannot_claim_a_long_life() {
        let did = Did::from_key(&key(1).verifying_key());
        let header = B64.encode(format!(r#"{{"alg":"EdDSA","kid":"{}"}}"#, did.as_str()));
        let claims = Claims {
            iss: did.as_str().into(),
            sub: did.as_str().into(),
            aud: "c".into(),
            iat: NOW,
            nbf: NOW,
            exp: NOW + 86_400,
        };
        let input = format!("{header}.{}", B64.encode(serde_json::to_vec(&claims).unwrap()));
        let token = format!(
            "{input}.{}",
            B64.encode(ed25519_dalek::Signer::sign(&key(1), input.as_bytes()).to_bytes())
        );
        assert!(matches!(verify(&token, "c", NOW), Err(TokenError::TooLong(86_400))));
    }
}
