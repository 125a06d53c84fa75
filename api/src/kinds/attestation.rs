use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{SubjectKind, check_subject};
use crate::meta::Time;
use crate::object::{KindSpec, Scope};
use crate::validation::{FieldError, FieldPath, Validate};

/// One operator (the signer) vouching for another operator or a node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AttestationSpec {
    /// What is vouched for.
    pub subject_kind: SubjectKind,
    /// The operator's did:key, or the Node's name.
    pub subject: String,
    /// What the attester states, for people (at most 1 KiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statement: Option<String>,
    /// When the attestation lapses; open-ended when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<Time>,
}

impl Validate for AttestationSpec {
    fn validate(&self, path: &FieldPath, errors: &mut Vec<FieldError>) {
        check_subject(self.subject_kind, &self.subject, &path.child("subject"), errors);
        if self.statement.as_ref().is_some_and(|s| s.len() > 1024) {
            errors.push(path.child("statement").error("must be at most 1024 bytes"));
        }
    }
}

/// What the reputation controller made of an attestation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AttestationStatus {
    /// Whether it counts (not self-attestation, not expired).
    #[serde(default)]
    pub accepted: bool,
    /// The weight it carries: the attester's own reputation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<f64>,
    /// Why it is not accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl KindSpec for AttestationSpec {
    type Status = AttestationStatus;
    const KIND: &'static str = "Attestation";
    const PLURAL: &'static str = "attestations";
    const SINGULAR: &'static str = "attestation";
    const SHORT_NAMES: &'static [&'static str] = &["att"];
    const SCOPE: Scope = Scope::Cluster;
    const SIGNED: bool = true;
    const DESCRIPTION: &'static str =
        "An operator's signed statement vouching for another operator or a node.";
}
