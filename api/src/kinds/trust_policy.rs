use std::collections::BTreeSet;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::credits::Credits;
use crate::identity::{Did, Jurisdiction};
use crate::object::{KindSpec, Scope};
use crate::validation::{FieldError, FieldPath, Validate};

/// A user's hard constraints on where their workloads may run. Never hints: a placement that
/// breaks one of these must be impossible.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrustPolicySpec {
    /// Lowest composite reputation (0 to 1) of a node and its operator; none counts as 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_reputation: Option<f64>,
    /// If not empty, only these operators.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_operators: Vec<Did>,
    /// Never these operators.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub denied_operators: Vec<Did>,
    /// How many independent operators must have attested the node's operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_attestations: Option<u32>,
    /// If not empty, only nodes in these jurisdictions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_jurisdictions: Vec<Jurisdiction>,
    /// Spending limits of workloads under this policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spending: Option<SpendingLimits>,
}

/// Limits on what workloads under a policy may spend.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SpendingLimits {
    /// Most credits per hour, across all replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_per_hour: Option<Credits>,
    /// Most credits in all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_total: Option<Credits>,
}

impl Validate for TrustPolicySpec {
    fn validate(&self, path: &FieldPath, errors: &mut Vec<FieldError>) {
        if let Some(r) = self.min_reputation
            && !(0.0..=1.0).contains(&r)
        {
            errors.push(path.child("minReputation").error("must be between 0 and 1"));
        }
        let denied: BTreeSet<&Did> = self.denied_operators.iter().collect();
        for (i, op) in self.allowed_operators.iter().enumerate() {
            if denied.contains(op) {
                errors.push(
                    path.child("allowedOperators")
                        .index(i)
                        .error(format!("{op} is also in deniedOperators: an operator cannot be both")),
                );
            }
        }
        if let Some(s) = &self.spending {
            for (name, v) in [("maxPerHour", s.max_per_hour), ("maxTotal", s.max_total)] {
                if v.is_some_and(Credits::is_negative) {
                    errors.push(path.child("spending").child(name).error("must be >= 0"));
                }
            }
        }
    }
}

/// What admission and controllers observed about a policy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrustPolicyStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Nodes that currently satisfy the policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eligible_nodes: Option<u32>,
    /// What workloads under the policy spend, as the credits controller metered it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spending: Option<SpendingStatus>,
}

/// What workloads under a policy spent (committed Metering transfers of its workloads).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SpendingStatus {
    /// Spent in all.
    #[serde(default)]
    pub total: Credits,
    /// Spent in the last hour.
    #[serde(default)]
    pub last_hour: Credits,
    /// What the replicas running now cost per hour, at their nodes' prices.
    #[serde(default)]
    pub per_hour: Credits,
    /// Why replicas were stopped (`maxTotal` reached), when they were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
    /// When these figures were computed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<crate::meta::Time>,
}

impl KindSpec for TrustPolicySpec {
    type Status = TrustPolicyStatus;
    const KIND: &'static str = "TrustPolicy";
    const PLURAL: &'static str = "trustpolicies";
    const SINGULAR: &'static str = "trustpolicy";
    const SHORT_NAMES: &'static [&'static str] = &["tp"];
    const SCOPE: Scope = Scope::Namespaced;
    const SIGNED: bool = true;
    const DESCRIPTION: &'static str = "A user's hard constraints on placement: reputation, operators, attestations, jurisdictions, spending.";
}
