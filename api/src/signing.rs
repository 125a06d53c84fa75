//! Signed manifests (design.md §4).
//!
//! A signature lives in three annotations: `univrs.io/signer` (did:key), `univrs.io/signed-at`
//! (RFC 3339) and `univrs.io/signature` (standard base64 of an Ed25519 signature). It covers
//! the RFC 8785 (JCS) canonical JSON of the object's *signed projection*: the object without
//! the fields a server or client tool owns, so a manifest signed once still verifies after
//! `ui apply`, `kubectl apply` or a Git round trip.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, SecondsFormat, SubsecRound as _, Utc};
use ed25519_dalek::{Signature, SigningKey};
use serde_json::{Map, Value};

use crate::identity::{Did, IdentityError};

/// Annotation holding the signer's did:key.
pub const SIGNER: &str = "univrs.io/signer";
/// Annotation holding the signing time (RFC 3339).
pub const SIGNED_AT: &str = "univrs.io/signed-at";
/// Annotation holding the base64 Ed25519 signature.
pub const SIGNATURE: &str = "univrs.io/signature";
/// Annotation of an object an AI agent signed on its user's behalf: the agent's did:key. The
/// signature is then the agent's, over a projection that names the user (`univrs.io/signer`,
/// the owner), the agent and the grant; the apiserver admits it only while that user's
/// AgentGrant gives the agent the write (see `kinds::AgentGrantSpec`).
pub const AGENT: &str = "univrs.io/agent";
/// Annotation naming the AgentGrant an agent acted on (with [`AGENT`]).
pub const GRANT: &str = "univrs.io/grant";
/// kubectl's client-side apply bookkeeping; never signed.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The namespace of a namespaced object that names none.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Top-level fields outside the signed projection.
const UNSIGNED_TOP: &[&str] = &["status"];
/// `metadata` fields outside the signed projection: all owned by the server.
const UNSIGNED_METADATA: &[&str] = &[
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "ownerReferences",
    "finalizers",
    "selfLink",
];
/// Annotations outside the signed projection.
const UNSIGNED_ANNOTATIONS: &[&str] = &[SIGNATURE, LAST_APPLIED];

/// Why an object could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The document is not a JSON/YAML object.
    #[error("a manifest must be a mapping with apiVersion, kind and metadata")]
    NotAnObject,
    /// `metadata` or `metadata.annotations` has the wrong type.
    #[error("{0}: must be a mapping")]
    BadField(&'static str),
    /// JCS could not canonicalize the object (e.g. a number JSON cannot represent exactly).
    #[error("cannot canonicalize the object: {0}")]
    Canonical(String),
    /// The signer could not sign (an agent holding the key went away).
    #[error("cannot sign: {0}")]
    Signer(String),
}

/// What signs with an Ed25519 key: the key itself, or an agent that holds it (`ui unlock`),
/// so that a private key need not be in every process that signs.
pub trait Sign {
    /// The public key.
    fn public(&self) -> ed25519_dalek::VerifyingKey;
    /// The signature of `message`, or why none could be made.
    fn try_sign(&self, message: &[u8]) -> Result<ed25519_dalek::Signature, String>;
}

impl Sign for SigningKey {
    fn public(&self) -> ed25519_dalek::VerifyingKey {
        self.verifying_key()
    }

    fn try_sign(&self, message: &[u8]) -> Result<ed25519_dalek::Signature, String> {
        Ok(ed25519_dalek::Signer::sign(self, message))
    }
}

/// Why an object's signature does not verify.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// No signature annotations at all.
    #[error("not signed: metadata.annotations has no {SIGNATURE}")]
    Unsigned,
    /// One of the three annotations is missing.
    #[error("metadata.annotations[{0}]: missing")]
    Missing(&'static str),
    /// The signer is not a valid did:key.
    #[error("metadata.annotations[{SIGNER}]: {0}")]
    BadSigner(IdentityError),
    /// The agent annotation is not a valid did:key.
    #[error("metadata.annotations[{AGENT}]: {0}")]
    BadAgent(IdentityError),
    /// The signing time is not RFC 3339.
    #[error("metadata.annotations[{SIGNED_AT}]: {0:?} is not an RFC 3339 time")]
    BadSignedAt(String),
    /// The signature is not base64 of 64 bytes.
    #[error("metadata.annotations[{SIGNATURE}]: not a base64 Ed25519 signature")]
    BadEncoding,
    /// The signature does not match the content and signer.
    #[error("signature does not match: the manifest was changed after it was signed, or not signed by {0}")]
    Mismatch(Did),
    /// The object could not be projected.
    #[error(transparent)]
    Shape(#[from] SignError),
}

/// A verified signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// Whose object it is: who signed, or the user an agent signed for.
    pub signer: Did,
    /// When they say they signed.
    pub signed_at: DateTime<Utc>,
    /// The agent whose key made the signature on `signer`'s behalf, and the grant it names.
    /// Offline this proves only that the agent signed; whether the grant allowed it is the
    /// apiserver's to check (at admission).
    pub agent: Option<(Did, String)>,
}

/// The bytes a signature covers: JCS of the signed projection of `object`.
pub fn signing_payload(object: &Value) -> Result<Vec<u8>, SignError> {
    let projection = signed_projection(object)?;
    let mut out = Vec::with_capacity(2048);
    if jcs_into(&projection, &mut out) {
        return Ok(out);
    }
    serde_json_canonicalizer::to_vec(&projection).map_err(|e| SignError::Canonical(e.to_string()))
}

/// The largest integer JCS writes as it is (an IEEE 754 double holds every integer up to it).
const JCS_EXACT: u64 = 1 << 53;

/// Appends JCS (RFC 8785) of `value` to `out`, byte for byte what `serde_json_canonicalizer`
/// writes, a few times faster (no buffer per object member); `false` (with `out` in any
/// state) for what it leaves to that crate: a number that is not an integer within ±2^53,
/// whose ECMAScript form it does not write itself.
fn jcs_into(value: &Value, out: &mut Vec<u8>) -> bool {
    use std::io::Write as _;
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) if u <= JCS_EXACT => write!(out, "{u}").expect("writing to a Vec"),
            (None, Some(i)) if i.unsigned_abs() <= JCS_EXACT => write!(out, "{i}").expect("writing to a Vec"),
            _ => return false,
        },
        // serde_json escapes a string as JCS does: `"`, `\`, \b \f \n \r \t, other
        // controls as \u00xx (lower case), everything else as it is.
        Value::String(s) => serde_json::to_writer(&mut *out, s).expect("writing to a Vec"),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                if !jcs_into(item, out) {
                    return false;
                }
            }
            out.push(b']');
        }
        Value::Object(members) => {
            // Members sorted by their names' UTF-16 code units.
            let mut sorted: Vec<(&String, &Value)> = members.iter().collect();
            if sorted.iter().all(|(k, _)| k.is_ascii()) {
                sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
            } else {
                sorted.sort_unstable_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
            }
            out.push(b'{');
            for (i, (k, v)) in sorted.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut *out, k).expect("writing to a Vec");
                out.push(b':');
                if !jcs_into(v, out) {
                    return false;
                }
            }
            out.push(b'}');
        }
    }
    true
}

/// `object` as its author wrote it: without `status` and the server-owned metadata, with
/// the namespace a namespaced kind defaults to, and with an empty annotations map counted as
/// none. Two objects with the same authored view say the same thing, so clients compare
/// these to tell whether applying a manifest would change anything.
pub fn authored(object: &Value) -> Result<Value, SignError> {
    let mut obj = object.as_object().ok_or(SignError::NotAnObject)?.clone();
    for field in UNSIGNED_TOP {
        obj.remove(*field);
    }
    let namespaced = obj
        .get("kind")
        .and_then(Value::as_str)
        .and_then(crate::kinds::by_kind)
        .is_some_and(|k| k.scope == crate::Scope::Namespaced);
    if let Some(meta) = obj.get_mut("metadata") {
        let meta = meta.as_object_mut().ok_or(SignError::BadField("metadata"))?;
        for field in UNSIGNED_METADATA {
            meta.remove(*field);
        }
        // The server stores the namespace it defaults to; an absent namespace of a namespaced
        // kind *means* `default`, so both forms sign the same. Any other namespace is signed
        // as written: applying the manifest elsewhere breaks the signature.
        let unset = meta.get("namespace").is_none_or(|ns| ns.as_str() == Some(""));
        if namespaced && unset {
            meta.insert("namespace".into(), Value::from(DEFAULT_NAMESPACE));
        }
        drop_empty_annotations(meta)?;
    }
    Ok(Value::Object(obj))
}

/// `annotations: {}` and no annotations are the same statement.
fn drop_empty_annotations(meta: &mut Map<String, Value>) -> Result<(), SignError> {
    if let Some(ann) = meta.get("annotations") {
        let ann = ann.as_object().ok_or(SignError::BadField("metadata.annotations"))?;
        if ann.is_empty() {
            meta.remove("annotations");
        }
    }
    Ok(())
}

/// `object` without the fields a signature does not cover: its [`authored`] view without the
/// signature, kubectl's last-applied annotation, and the apply-set labels and annotations
/// (`crate::kinds::applyset`: which set an object is part of is written by the set's tools,
/// `ui apply --applyset` and `kubectl apply --applyset`, on objects signed before).
pub fn signed_projection(object: &Value) -> Result<Value, SignError> {
    let mut obj = authored(object)?;
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if let Some(ann) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
            for key in UNSIGNED_ANNOTATIONS.iter().chain(&crate::kinds::applyset::ANNOTATIONS) {
                ann.remove(*key);
            }
        }
        drop_empty_annotations(meta)?;
        let mut removed = false;
        if let Some(labels) = meta.get_mut("labels").and_then(Value::as_object_mut) {
            for key in crate::kinds::applyset::LABELS {
                removed |= labels.remove(key).is_some();
            }
        }
        // Labels that were only the set's: as if there were none (an object signed without
        // labels, then given its set's label).
        if removed && meta.get("labels").and_then(Value::as_object).is_some_and(|l| l.is_empty()) {
            meta.remove("labels");
        }
    }
    Ok(obj)
}

/// Signs `object` in place as `key`'s owner at time `at`: sets the signer and signed-at
/// annotations, then the signature over the result.
pub fn sign(
    object: &mut Value,
    key: &(impl Sign + ?Sized),
    at: DateTime<Utc>,
) -> Result<Verified, SignError> {
    let signer = Did::from_key(&key.public());
    // Milliseconds (none shown when whole): what RFC 3339 text we write is what we sign and
    // later compare, and two signings of one manifest in the same second still differ (the
    // server tells a fresh signing from a replay of a deleted one by that).
    let at_text = at.trunc_subsecs(3).to_rfc3339_opts(SecondsFormat::AutoSi, true);
    {
        let ann = annotations_mut(object)?;
        ann.insert(SIGNER.into(), signer.as_str().into());
        ann.insert(SIGNED_AT.into(), at_text.clone().into());
        ann.remove(SIGNATURE);
        // Signed by its owner now, not by an agent on the owner's behalf.
        ann.remove(AGENT);
        ann.remove(GRANT);
    }
    let signature = key.try_sign(&signing_payload(object)?).map_err(SignError::Signer)?;
    annotations_mut(object)?.insert(SIGNATURE.into(), BASE64.encode(signature.to_bytes()).into());
    let signed_at = DateTime::parse_from_rfc3339(&at_text).expect("we wrote RFC 3339").with_timezone(&Utc);
    Ok(Verified { signer, signed_at, agent: None })
}

/// Signs `object` in place with an agent's key on behalf of `owner`, under the AgentGrant named
/// `grant`: the signer annotation names the owner (whose object it is), [`AGENT`] the agent and
/// [`GRANT`] the grant, and the signature — the agent's — covers all three.
pub fn sign_on_behalf(
    object: &mut Value,
    agent_key: &(impl Sign + ?Sized),
    owner: &Did,
    grant: &str,
    at: DateTime<Utc>,
) -> Result<Verified, SignError> {
    let agent = Did::from_key(&agent_key.public());
    let at_text = at.trunc_subsecs(3).to_rfc3339_opts(SecondsFormat::AutoSi, true);
    {
        let ann = annotations_mut(object)?;
        ann.insert(SIGNER.into(), owner.as_str().into());
        ann.insert(AGENT.into(), agent.as_str().into());
        ann.insert(GRANT.into(), grant.into());
        ann.insert(SIGNED_AT.into(), at_text.clone().into());
        ann.remove(SIGNATURE);
    }
    let signature = agent_key.try_sign(&signing_payload(object)?).map_err(SignError::Signer)?;
    annotations_mut(object)?.insert(SIGNATURE.into(), BASE64.encode(signature.to_bytes()).into());
    let signed_at = DateTime::parse_from_rfc3339(&at_text).expect("we wrote RFC 3339").with_timezone(&Utc);
    Ok(Verified { signer: owner.clone(), signed_at, agent: Some((agent, grant.to_owned())) })
}

/// The agent an object names as its signer's agent ([`AGENT`]), if any (unverified).
pub fn agent_of(object: &Value) -> Option<&str> {
    object.pointer("/metadata/annotations").and_then(|a| a.get(AGENT)).and_then(Value::as_str)
}

/// Removes the annotations of an agent's signature ([`AGENT`], [`GRANT`]), so that the object
/// can be signed again by its owner.
pub fn drop_agent(object: &mut Value) {
    if let Some(ann) = object.pointer_mut("/metadata/annotations").and_then(Value::as_object_mut) {
        ann.remove(AGENT);
        ann.remove(GRANT);
    }
}

/// Checks the signature of `object` and returns who signed it and when.
pub fn verify(object: &Value) -> Result<Verified, VerifyError> {
    let ann = object.get("metadata").and_then(|m| m.get("annotations")).and_then(Value::as_object);
    let get = |key: &'static str| ann.and_then(|a| a.get(key)).and_then(Value::as_str);
    let (signer, signed_at, signature) = match (get(SIGNER), get(SIGNED_AT), get(SIGNATURE)) {
        (None, None, None) => return Err(VerifyError::Unsigned),
        (Some(a), Some(b), Some(c)) => (a, b, c),
        (None, ..) => return Err(VerifyError::Missing(SIGNER)),
        (_, None, _) => return Err(VerifyError::Missing(SIGNED_AT)),
        (.., None) => return Err(VerifyError::Missing(SIGNATURE)),
    };
    let signer = Did::parse(signer).map_err(VerifyError::BadSigner)?;
    let signed_at = DateTime::parse_from_rfc3339(signed_at)
        .map_err(|_| VerifyError::BadSignedAt(signed_at.to_owned()))?
        .with_timezone(&Utc);
    // An agent's signature on its user's behalf: made with the agent's key, naming the grant.
    let agent = match (get(AGENT), get(GRANT)) {
        (None, None) => None,
        (Some(agent), Some(grant)) if !grant.is_empty() => {
            Some((Did::parse(agent).map_err(VerifyError::BadAgent)?, grant.to_owned()))
        }
        (None, Some(_)) => return Err(VerifyError::Missing(AGENT)),
        (Some(_), _) => return Err(VerifyError::Missing(GRANT)),
    };
    let key_holder = agent.as_ref().map_or(&signer, |(a, _)| a);
    let bytes = BASE64.decode(signature).map_err(|_| VerifyError::BadEncoding)?;
    let signature = Signature::from_slice(&bytes).map_err(|_| VerifyError::BadEncoding)?;
    let payload = signing_payload(object)?;
    key_holder
        .verifying_key()
        .verify_strict(&payload, &signature)
        .map_err(|_| VerifyError::Mismatch(key_holder.clone()))?;
    Ok(Verified { signer, signed_at, agent })
}

fn annotations_mut(object: &mut Value) -> Result<&mut Map<String, Value>, SignError> {
    let obj = object.as_object_mut().ok_or(SignError::NotAnObject)?;
    let meta = obj.entry("metadata").or_insert_with(|| Value::Object(Map::new()));
    let meta = meta.as_object_mut().ok_or(SignError::BadField("metadata"))?;
    let ann = meta.entry("annotations").or_insert_with(|| Value::Object(Map::new()));
    ann.as_object_mut().ok_or(SignError::BadField("metadata.annotations"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn at() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-24T10:00:00Z").unwrap().with_timezone(&Utc)
    }

    fn workload() -> Value {
        json!({
            "apiVersion": "univrs.io/v1",
            "kind": "Workload",
            "metadata": { "name": "hello", "namespace": "default", "labels": { "app": "hello" },
                          "annotations": { "team": "web" } },
            "spec": { "replicas": 3, "image": "busybox", "command": ["sh", "-c", "echo hi"],
                      "resources": { "cpu": "500m", "memory": "64Mi" } }
        })
    }

    fn signed() -> Value {
        let mut w = workload();
        sign(&mut w, &key(1), at()).unwrap();
        w
    }

    #[test]
    fn an_agent_signs_for_its_user_and_verify_says_so() {
        let owner = Did::from_key(&key(1).verifying_key());
        let mut w = workload();
        let made = sign_on_behalf(&mut w, &key(2), &owner, "claude", at()).unwrap();
        let v = verify(&w).unwrap();
        assert_eq!(v, made);
        assert_eq!(v.signer, owner, "the object is the user's");
        let (agent, grant) = v.agent.unwrap();
        assert_eq!(agent, Did::from_key(&key(2).verifying_key()));
        assert_eq!(grant, "claude");
    }

    #[test]
    fn an_agent_signature_cannot_be_moved_to_another_user_grant_or_agent() {
        let owner = Did::from_key(&key(1).verifying_key());
        let mut w = workload();
        sign_on_behalf(&mut w, &key(2), &owner, "claude", at()).unwrap();
        let other = Did::from_key(&key(3).verifying_key());
        for (annotation, value) in [(SIGNER, other.as_str()), (GRANT, "wider"), (AGENT, other.as_str())] {
            let mut changed = w.clone();
            changed["metadata"]["annotations"][annotation] = value.into();
            assert!(matches!(verify(&changed), Err(VerifyError::Mismatch(_))), "{annotation}");
        }
        // Without the agent annotation the signature is checked against the owner's key.
        let mut dropped = w.clone();
        drop_agent(&mut dropped);
        assert!(matches!(verify(&dropped), Err(VerifyError::Mismatch(_))));
        let mut half = w.clone();
        half["metadata"]["annotations"].as_object_mut().unwrap().remove(GRANT);
        assert!(matches!(verify(&half), Err(VerifyError::Missing(GRANT))));
    }

    #[test]
    fn the_owner_signing_again_drops_the_agent() {
        let owner = Did::from_key(&key(1).verifying_key());
        let mut w = workload();
        sign_on_behalf(&mut w, &key(2), &owner, "claude", at()).unwrap();
        sign(&mut w, &key(1), at()).unwrap();
        let v = verify(&w).unwrap();
        assert_eq!((v.signer, v.agent), (owner, None));
    }

    #[test]
    fn the_labels_and_annotations_of_an_apply_set_are_outside_the_signature_and_nothing_else() {
        use crate::kinds::applyset;
        // Set's labels added to an object signed with labels, and to one signed without.
        let mut w = signed();
        w["metadata"]["labels"][applyset::PART_OF] = "applyset-x-v1".into();
        w["metadata"]["annotations"][applyset::TOOLING] = "kubectl/v1.33.0".into();
        assert!(verify(&w).is_ok());
        let mut bare = workload();
        bare["metadata"].as_object_mut().unwrap().remove("labels");
        sign(&mut bare, &key(1), at()).unwrap();
        bare["metadata"]["labels"] = json!({ applyset::PART_OF: "applyset-x-v1" });
        assert!(verify(&bare).is_ok());
        // Any other label is signed.
        w["metadata"]["labels"]["app"] = "other".into();
        assert!(matches!(verify(&w), Err(VerifyError::Mismatch(_))));
        let mut extra = signed();
        extra["metadata"]["labels"]["applyset.kubernetes.io/other"] = "x".into();
        assert!(matches!(verify(&extra), Err(VerifyError::Mismatch(_))));
    }

    #[test]
    fn round_trip() {
        let v = verify(&signed()).unwrap();
        assert_eq!(v.signer, Did::from_key(&key(1).verifying_key()));
        assert_eq!(v.signed_at, at());
    }

    #[test]
    fn signed_at_keeps_milliseconds_so_signings_in_one_second_differ() {
        let later = at() + chrono::Duration::microseconds(123_456);
        let mut w = workload();
        let v = sign(&mut w, &key(1), later).unwrap();
        assert_eq!(w["metadata"]["annotations"][SIGNED_AT], "2026-11-24T10:00:00.123Z");
        assert_eq!(verify(&w).unwrap().signed_at, v.signed_at);
        assert_ne!(w, signed(), "another signing in the same second");
        assert_eq!(
            signed()["metadata"]["annotations"][SIGNED_AT],
            "2026-11-24T10:00:00Z",
            "whole seconds as before"
        );
    }

    #[test]
    fn any_change_to_signed_content_fails() {
        type Change = (&'static str, fn(&mut Value));
        let changes: [Change; 8] = [
            ("name", |o| o["metadata"]["name"] = json!("other")),
            ("namespace", |o| o["metadata"]["namespace"] = json!("prod")),
            ("label", |o| o["metadata"]["labels"]["app"] = json!("x")),
            ("new label", |o| o["metadata"]["labels"]["tier"] = json!("x")),
            ("spec", |o| o["spec"]["replicas"] = json!(4)),
            ("annotation", |o| o["metadata"]["annotations"]["team"] = json!("ops")),
            ("signed-at", |o| o["metadata"]["annotations"][SIGNED_AT] = json!("2030-01-01T00:00:00Z")),
            ("kind", |o| o["kind"] = json!("TrustPolicy")),
        ];
        for (what, change) in changes {
            let mut o = signed();
            change(&mut o);
            assert!(
                matches!(verify(&o), Err(VerifyError::Mismatch(_))),
                "changing {what} must break the signature"
            );
        }
    }

    #[test]
    fn server_and_tool_fields_do_not_matter() {
        let mut o = signed();
        o["status"] = json!({ "replicas": 3 });
        let meta = o["metadata"].as_object_mut().unwrap();
        meta.insert("resourceVersion".into(), json!("42"));
        meta.insert("uid".into(), json!("0b5c…"));
        meta.insert("generation".into(), json!(2));
        meta.insert("creationTimestamp".into(), json!("2026-01-01T00:00:00Z"));
        meta.insert("managedFields".into(), json!([{ "manager": "kubectl" }]));
        meta.insert("ownerReferences".into(), json!([]));
        meta.insert("finalizers".into(), json!(["univrs.io/x"]));
        meta["annotations"][LAST_APPLIED] = json!("{\"whatever\":1}");
        verify(&o).unwrap();
    }

    #[test]
    fn the_authored_view_keeps_the_signature_and_drops_what_the_server_owns() {
        let written = signed();
        let mut stored = written.clone();
        stored["status"] = json!({ "replicas": 3 });
        let meta = stored["metadata"].as_object_mut().unwrap();
        meta.insert("resourceVersion".into(), json!("42"));
        meta.insert("uid".into(), json!("0b5c…"));
        meta.insert("finalizers".into(), json!(["univrs.io/x"]));
        assert_eq!(authored(&stored).unwrap(), authored(&written).unwrap());
        let mut resigned = written.clone();
        resigned["metadata"]["annotations"][SIGNATURE] = json!("b3RoZXI=");
        assert_ne!(authored(&resigned).unwrap(), authored(&written).unwrap(), "a new signature is a change");
    }

    #[test]
    fn an_absent_namespace_means_default_and_no_other() {
        let mut o = workload();
        o["metadata"].as_object_mut().unwrap().remove("namespace");
        sign(&mut o, &key(1), at()).unwrap();
        let mut stored = o.clone();
        stored["metadata"]["namespace"] = json!("default");
        verify(&stored).expect("the server's defaulted namespace keeps the signature");
        stored["metadata"]["namespace"] = json!("prod");
        assert!(matches!(verify(&stored), Err(VerifyError::Mismatch(_))), "moved to another namespace");

        // Cluster-scoped kinds get no namespace.
        let mut offer =
            json!({"apiVersion": "univrs.io/v1", "kind": "NodeOffer", "metadata": {"name": "n"}, "spec": {}});
        sign(&mut offer, &key(1), at()).unwrap();
        offer["metadata"]["namespace"] = json!("default");
        assert!(verify(&offer).is_err());
    }

    #[test]
    fn another_key_cannot_claim_a_signature() {
        let mut o = signed();
        o["metadata"]["annotations"][SIGNER] = json!(Did::from_key(&key(2).verifying_key()).as_str());
        assert!(matches!(verify(&o), Err(VerifyError::Mismatch(_))));
    }

    #[test]
    fn missing_and_malformed_annotations_are_named() {
        assert!(matches!(verify(&workload()), Err(VerifyError::Unsigned)));
        let mut o = signed();
        o["metadata"]["annotations"].as_object_mut().unwrap().remove(SIGNED_AT);
        assert!(matches!(verify(&o), Err(VerifyError::Missing(SIGNED_AT))));
        let mut o = signed();
        o["metadata"]["annotations"][SIGNATURE] = json!("!!!");
        assert!(matches!(verify(&o), Err(VerifyError::BadEncoding)));
        let mut o = signed();
        o["metadata"]["annotations"][SIGNER] = json!("did:web:x");
        assert!(matches!(verify(&o), Err(VerifyError::BadSigner(_))));
    }

    #[test]
    fn payload_is_jcs_of_the_projection() {
        let o = signed();
        let payload = String::from_utf8(signing_payload(&o).unwrap()).unwrap();
        assert!(payload.starts_with(r#"{"apiVersion":"univrs.io/v1","kind":"Workload","metadata":{"annotations":{"team":"web","univrs.io/signed-at""#), "{payload}");
        assert!(!payload.contains(SIGNATURE));
    }

    /// Any JSON value, for the property tests.
    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i32>().prop_map(Value::from),
            (-1e6f64..1e6).prop_map(Value::from),
            "\\PC{0,12}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::btree_map("[a-zA-Z0-9_.-]{1,8}", inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// JSON with what canonical forms differ on: names and strings from all of Unicode (those
    /// that sort differently in UTF-16 and UTF-8 among them), control characters, integers
    /// about ±2^53 and beyond, fractions.
    fn arb_jcs_json() -> impl Strategy<Value = Value> {
        let text = prop_oneof![
            "\\PC{0,8}",
            "[\\x00-\\x1f\"\\\\/\\x7f]{0,6}",
            "[a\\u{e9}\\u{ff61}\\u{1f600}\\u{10000}\\u{2028}]{0,4}",
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            ((1i64 << 53) - 2..(1i64 << 53) + 2).prop_map(Value::from),
            (-(1i64 << 53) - 2..-(1i64 << 53) + 2).prop_map(Value::from),
            (-1e6f64..1e6).prop_map(Value::from),
            text.clone().prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 32, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::btree_map(text.clone(), inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn arb_object() -> impl Strategy<Value = Value> {
        (arb_json(), "[a-z0-9]{1,10}", prop::collection::btree_map("[a-z]{1,6}", "\\PC{0,8}", 0..3)).prop_map(
            |(spec, name, labels)| {
                json!({ "apiVersion": "univrs.io/v1", "kind": "Workload",
                        "metadata": { "name": name, "labels": labels }, "spec": spec })
            },
        )
    }

    /// Rebuilds every map of `v` with its keys in reverse order.
    fn reverse_keys(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                Value::Object(m.iter().rev().map(|(k, v)| (k.clone(), reverse_keys(v))).collect())
            }
            Value::Array(a) => Value::Array(a.iter().map(reverse_keys).collect()),
            other => other.clone(),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn our_jcs_is_byte_for_byte_the_canonicalizer_s(value in arb_jcs_json()) {
            let mut ours = Vec::new();
            let theirs = serde_json_canonicalizer::to_vec(&value).unwrap();
            if jcs_into(&value, &mut ours) {
                prop_assert_eq!(String::from_utf8_lossy(&ours), String::from_utf8_lossy(&theirs));
            } else {
                // Only a number it leaves to the canonicalizer makes it step aside.
                fn leaves_a_number(v: &Value) -> bool {
                    match v {
                        Value::Number(n) => n.as_u64().is_none_or(|u| u > JCS_EXACT)
                            && n.as_i64().is_none_or(|i| i.unsigned_abs() > JCS_EXACT),
                        Value::Array(items) => items.iter().any(leaves_a_number),
                        Value::Object(members) => members.values().any(leaves_a_number),
                        _ => false,
                    }
                }
                prop_assert!(leaves_a_number(&value), "{}", value);
            }
        }
    }

    #[test]
    fn signing_payload_is_the_canonicalizer_s_for_integers_and_fractions() {
        let mut with_fraction = workload();
        with_fraction["spec"]["ratio"] = json!(0.1);
        with_fraction["spec"]["big"] = json!(u64::MAX);
        for object in [workload(), with_fraction] {
            let projection = signed_projection(&object).unwrap();
            assert_eq!(
                signing_payload(&object).unwrap(),
                serde_json_canonicalizer::to_vec(&projection).unwrap()
            );
        }
        let mut fast = Vec::new();
        assert!(
            jcs_into(&signed_projection(&workload()).unwrap(), &mut fast),
            "a manifest of integers and text takes the fast way"
        );
    }

    proptest! {
        #[test]
        fn signed_objects_verify_and_any_spec_change_breaks_them(obj in arb_object(), other in arb_json()) {
            let mut o = obj;
            sign(&mut o, &key(3), at()).unwrap();
            prop_assert!(verify(&o).is_ok());
            prop_assert!(verify(&reverse_keys(&o)).is_ok(), "key order must not matter");
            if o["spec"] != other {
                let mut changed = o.clone();
                changed["spec"] = other;
                prop_assert!(verify(&changed).is_err());
            }
        }

        #[test]
        fn payload_survives_yaml_and_json_round_trips(obj in arb_object()) {
            let payload = signing_payload(&obj).unwrap();
            let json_text = serde_json::to_string_pretty(&obj).unwrap();
            let from_json: Value = serde_json::from_str(&json_text).unwrap();
            prop_assert_eq!(&signing_payload(&from_json).unwrap(), &payload);
            let yaml_text = serde_saphyr::to_string(&obj).unwrap();
            let from_yaml = crate::manifest::parse_documents(&yaml_text).unwrap();
            prop_assert_eq!(from_yaml.len(), 1);
            prop_assert_eq!(&signing_payload(&from_yaml[0]).unwrap(), &payload, "yaml was:\n{}", yaml_text);
        }
    }
}
