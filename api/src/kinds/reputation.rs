use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{SubjectKind, check_subject};
use crate::meta::Time;
use crate::object::{KindSpec, Scope};
use crate::validation::{FieldError, FieldPath, Validate};

/// Whose reputation this object holds; written by the reputation controller.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReputationSpec {
    /// An operator or a node.
    pub subject_kind: SubjectKind,
    /// The operator's did:key, or the Node's name.
    pub subject: String,
}

impl Validate for ReputationSpec {
    fn validate(&self, path: &FieldPath, errors: &mut Vec<FieldError>) {
        check_subject(self.subject_kind, &self.subject, &path.child("subject"), errors);
    }
}

/// The scores, each from 0 to 1.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReputationStatus {
    /// Share of time the subject's heartbeats were on time.
    #[serde(default)]
    pub uptime: f64,
    /// Replicas that ran or finished as asked, over those assigned.
    #[serde(default)]
    pub reliability: f64,
    /// Resources delivered over resources offered.
    #[serde(default)]
    pub honesty: f64,
    /// Grows logarithmically with time in the network.
    #[serde(default)]
    pub age_factor: f64,
    /// Attestations received, weighted by the attesters' reputation.
    #[serde(default)]
    pub attestation_weight: f64,
    /// Weighted average of the above.
    #[serde(default)]
    pub composite: f64,
    /// When the scores were computed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_at: Option<Time>,
}

impl KindSpec for ReputationSpec {
    type Status = ReputationStatus;
    const KIND: &'static str = "Reputation";
    const PLURAL: &'static str = "reputations";
    const SINGULAR: &'static str = "reputation";
    const SHORT_NAMES: &'static [&'static str] = &["rpt"];
    const SCOPE: Scope = Scope::Cluster;
    const SIGNED: bool = false;
    const DESCRIPTION: &'static str = "The computed reputation of an operator or node.";
}
