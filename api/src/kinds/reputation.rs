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
    /// Attestations received, weighted by the attesters' own standing: the subject's global
    /// trust (EigenTrust over the attestation graph, seeded by the control-plane members),
    /// divided by the highest in the network.
    #[serde(default)]
    pub attestation_weight: f64,
    /// Weighted average of the above.
    #[serde(default)]
    pub composite: f64,
    /// When the scores were computed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_at: Option<Time>,
    /// What the scores were computed from, for anyone to check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<Evidence>,
}

/// The observations behind a reputation: each tally counts good and all observations (seconds
/// of heartbeat, seconds of bound replicas, samples of applied limits), decayed exponentially
/// so that old evidence fades (see ARCHITECTURE.md, "Reputation").
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Evidence {
    /// Seconds the heartbeat Lease was fresh, of seconds observed.
    #[serde(default)]
    pub uptime: Tally,
    /// Seconds of bound replicas running as asked, of seconds bound (a lapsed node's and
    /// start failures count against it; a workload's own exit does not count).
    #[serde(default)]
    pub reliability: Tally,
    /// Samples of running replicas whose applied cgroup limits met what was asked and held,
    /// of samples taken.
    #[serde(default)]
    pub honesty: Tally,
    /// When the subject (for an operator: its first Node) was first seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_seen: Option<Time>,
    /// When evidence was last added (gaps longer than two sampling periods are not counted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampled_at: Option<Time>,
    /// Attesters whose attestation of the subject counts (they have standing).
    #[serde(default)]
    pub attesters: u32,
    /// The subject's global trust before normalization (its share of the network's).
    #[serde(default)]
    pub trust: f64,
    /// For a node: the uid of the Node object the evidence is of (a Node registered again
    /// under the name, perhaps by someone else, starts afresh).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_uid: Option<String>,
    /// How the evidence was weighed into the scores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scoring: Option<ScoringParams>,
}

/// The parameters the reputation controller scores with (its flags).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScoringParams {
    /// Evidence loses half its weight in this many seconds.
    pub half_life_seconds: f64,
    /// A score is `good / (total + prior)`: seconds of evidence to reach half the good share.
    pub prior_seconds: f64,
    /// The age factor is `ln(1 + age) / ln(1 + ageFull)`, at most 1.
    pub age_full_seconds: f64,
    /// Weight of uptime in the composite.
    pub uptime_weight: f64,
    /// Weight of reliability.
    pub reliability_weight: f64,
    /// Weight of honesty.
    pub honesty_weight: f64,
    /// Weight of the age factor.
    pub age_weight: f64,
    /// Weight of the attestation weight.
    pub attestations_weight: f64,
}

/// Good observations of all observations, both decayed alike.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Tally {
    /// Good observations.
    #[serde(default)]
    pub good: f64,
    /// All observations.
    #[serde(default)]
    pub total: f64,
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
