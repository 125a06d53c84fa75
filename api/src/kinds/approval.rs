use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Digest as _;

use super::AgentVerb;
use crate::identity::Did;
use crate::meta::Time;
use crate::object::{KindSpec, Scope};
use crate::validation::{FieldError, FieldPath, Validate};

/// A write an agent asked for that its user's grant holds for approval: the exact request and
/// its diff against what was stored. The apiserver makes it; the user decides it with a signed
/// decision (`ui approve`/`ui deny`), and the apiserver then performs exactly that request or
/// refuses it. Only the user, the agent and the control plane read it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApprovalSpec {
    /// The agent that asked.
    pub agent: Did,
    /// The user whose grant holds it, and who alone may decide it.
    pub owner: Did,
    /// The AgentGrant (the owner's) that asked for approval.
    pub grant: String,
    /// The grant's rule that asked for approval, in one line.
    pub rule: String,
    /// What the agent asked for, exactly.
    pub request: AgentRequest,
    /// What it would change: a unified diff of the stored object (as its author wrote it)
    /// against the requested one, cut at 64 KiB.
    #[serde(default)]
    pub diff: String,
    /// When it lapses undecided.
    pub expires: Time,
}

/// One request of an agent, as the apiserver will perform it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentRequest {
    /// What it does.
    pub verb: AgentVerb,
    /// The kind of the object.
    pub kind: String,
    /// Its namespace (namespaced kinds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Its name.
    pub name: String,
    /// The object the agent sent (create, update, scale), as it sent it, signed by the agent on
    /// the user's behalf.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<Value>,
    /// The `resourceVersion` of the stored object the diff is against: the request is
    /// performed only while the object is still that version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    /// The `uid` of the stored object (update, delete).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

impl AgentRequest {
    /// The SHA-256 of the request's canonical JSON (RFC 8785), hex: what a decision names, so
    /// that a decision is for this very request and no other.
    pub fn digest(&self) -> String {
        let value = serde_json::to_value(self).expect("a request serializes");
        let bytes =
            serde_json_canonicalizer::to_vec(&value).expect("a request has no unrepresentable numbers");
        let digest = sha2::Sha256::digest(&bytes);
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl Validate for ApprovalSpec {
    fn validate(&self, path: &FieldPath, errors: &mut Vec<FieldError>) {
        if self.agent == self.owner {
            errors.push(
                path.child("agent").error("an agent never approves its own request: it cannot be the owner"),
            );
        }
        if super::by_kind(&self.request.kind).is_none() {
            errors.push(path.child("request").child("kind").error("not a kind"));
        }
    }
}

/// Where an approval stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ApprovalPhase {
    /// Waiting for the user.
    #[default]
    Pending,
    /// The user approved it and the request was performed.
    Approved,
    /// The user denied it: it was not performed.
    Denied,
    /// The user approved it, but performing it failed (the object changed meanwhile, the grant
    /// is gone): not performed.
    Failed,
    /// Nobody decided in time: not performed.
    Expired,
}

impl ApprovalPhase {
    /// Whether it is decided for good.
    pub fn is_final(self) -> bool {
        self != ApprovalPhase::Pending
    }
}

/// The decision and its outcome.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApprovalStatus {
    /// Where it stands.
    #[serde(default)]
    pub phase: ApprovalPhase,
    /// The user's signed decision (an `ApprovalDecision` document: see [`decision`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<Value>,
    /// When it was decided or lapsed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<Time>,
    /// What happened, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The `resourceVersion` of the object the approved request wrote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
}

impl KindSpec for ApprovalSpec {
    type Status = ApprovalStatus;
    const KIND: &'static str = "Approval";
    const PLURAL: &'static str = "approvals";
    const SINGULAR: &'static str = "approval";
    const SHORT_NAMES: &'static [&'static str] = &["apr"];
    const SCOPE: Scope = Scope::Cluster;
    const SIGNED: bool = false;
    const DESCRIPTION: &'static str = "An agent's write held for its user's approval: the exact request and its diff; the user's signed decision.";
}

/// The signed decision a user puts in an approval's status.
pub mod decision {
    use serde_json::{Value, json};

    use crate::identity::Did;

    /// The kind of a decision document (it is never stored as an object of its own).
    pub const KIND: &str = "ApprovalDecision";

    /// The unsigned decision on the approval `name` (its `uid`) for the request with `digest`.
    pub fn unsigned(name: &str, uid: &str, digest: &str, approve: bool) -> Value {
        json!({
            "apiVersion": crate::API_VERSION,
            "kind": KIND,
            "metadata": { "name": name },
            "spec": { "approvalUid": uid, "requestDigest": digest, "approve": approve },
        })
    }

    /// Why a decision does not hold.
    #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
    pub enum DecisionError {
        /// Its signature does not verify.
        #[error("the decision's signature does not verify: {0}")]
        Signature(String),
        /// Signed by someone else than the approval's owner, or by an agent.
        #[error("{0}")]
        NotTheOwner(String),
        /// For another approval or another request.
        #[error("the decision is for another approval or another request: {0}")]
        Mismatch(&'static str),
    }

    /// Checks `decision` for the approval `name`/`uid` owned by `owner` with request `digest`;
    /// returns whether it approves.
    pub fn check(
        decision: &Value,
        name: &str,
        uid: &str,
        digest: &str,
        owner: &Did,
    ) -> Result<bool, DecisionError> {
        let verified =
            crate::signing::verify(decision).map_err(|e| DecisionError::Signature(e.to_string()))?;
        if let Some((agent, _)) = verified.agent {
            return Err(DecisionError::NotTheOwner(format!(
                "signed by the agent {agent}: only {owner} decides, with their own key"
            )));
        }
        if verified.signer != *owner {
            return Err(DecisionError::NotTheOwner(format!(
                "signed by {}: only the approval's owner {owner} decides it",
                verified.signer
            )));
        }
        let field = |p: &str| decision.pointer(p).and_then(Value::as_str);
        if decision.get("kind").and_then(Value::as_str) != Some(KIND) {
            return Err(DecisionError::Mismatch("kind"));
        }
        if field("/metadata/name") != Some(name) {
            return Err(DecisionError::Mismatch("metadata.name"));
        }
        if field("/spec/approvalUid") != Some(uid) {
            return Err(DecisionError::Mismatch("spec.approvalUid"));
        }
        if field("/spec/requestDigest") != Some(digest) {
            return Err(DecisionError::Mismatch("spec.requestDigest"));
        }
        decision
            .pointer("/spec/approve")
            .and_then(Value::as_bool)
            .ok_or(DecisionError::Mismatch("spec.approve"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    fn request() -> AgentRequest {
        AgentRequest {
            verb: AgentVerb::Create,
            kind: "Workload".into(),
            namespace: Some("default".into()),
            name: "web".into(),
            object: Some(serde_json::json!({ "spec": { "replicas": 2 } })),
            resource_version: None,
            uid: None,
        }
    }

    #[test]
    fn a_decision_holds_only_for_its_approval_request_and_owner() {
        let owner_key = SigningKey::from_bytes(&[1; 32]);
        let owner = Did::from_key(&owner_key.verifying_key());
        let digest = request().digest();
        let mut d = decision::unsigned("a1", "uid-1", &digest, true);
        crate::signing::sign(&mut d, &owner_key, chrono::Utc::now()).unwrap();
        assert_eq!(decision::check(&d, "a1", "uid-1", &digest, &owner), Ok(true));
        assert!(matches!(
            decision::check(&d, "a2", "uid-1", &digest, &owner),
            Err(decision::DecisionError::Mismatch(_))
        ));
        assert!(matches!(
            decision::check(&d, "a1", "uid-2", &digest, &owner),
            Err(decision::DecisionError::Mismatch(_))
        ));
        let mut other = request();
        other.name = "other".into();
        assert!(decision::check(&d, "a1", "uid-1", &other.digest(), &owner).is_err());
        // Signed by another key, or by an agent on the owner's behalf: not the owner's decision.
        let stranger = SigningKey::from_bytes(&[2; 32]);
        let mut s = decision::unsigned("a1", "uid-1", &digest, true);
        crate::signing::sign(&mut s, &stranger, chrono::Utc::now()).unwrap();
        assert!(matches!(
            decision::check(&s, "a1", "uid-1", &digest, &owner),
            Err(decision::DecisionError::NotTheOwner(_))
        ));
        let mut a = decision::unsigned("a1", "uid-1", &digest, true);
        crate::signing::sign_on_behalf(&mut a, &stranger, &owner, "g", chrono::Utc::now()).unwrap();
        assert!(matches!(
            decision::check(&a, "a1", "uid-1", &digest, &owner),
            Err(decision::DecisionError::NotTheOwner(_))
        ));
    }
}
