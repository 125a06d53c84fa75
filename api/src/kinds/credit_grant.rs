use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::credits::Credits;
use crate::identity::Did;
use crate::meta::Time;
use crate::object::{KindSpec, Scope};
use crate::validation::{FieldError, FieldPath, Validate};

/// A credit line from the signer (granter) to a grantee: the grantee's balance may go
/// negative by up to `limit` on the granter's word.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreditGrantSpec {
    /// Who may draw on this line.
    pub grantee: Did,
    /// How far below zero the grantee may go on this line.
    pub limit: Credits,
    /// When the line ends; open-ended when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<Time>,
}

impl Validate for CreditGrantSpec {
    fn validate(&self, path: &FieldPath, errors: &mut Vec<FieldError>) {
        if self.limit <= Credits::ZERO {
            errors.push(path.child("limit").error("must be > 0"));
        }
    }
}

/// Lifecycle phase of a grant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum GrantPhase {
    /// In force.
    #[default]
    Active,
    /// Past `expires`.
    Expired,
}

/// What the credits controller observed about a grant.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreditGrantStatus {
    /// Lifecycle phase.
    #[serde(default)]
    pub phase: GrantPhase,
    /// How much of the line is drawn.
    #[serde(default)]
    pub used: Credits,
}

impl KindSpec for CreditGrantSpec {
    type Status = CreditGrantStatus;
    const KIND: &'static str = "CreditGrant";
    const PLURAL: &'static str = "creditgrants";
    const SINGULAR: &'static str = "creditgrant";
    const SHORT_NAMES: &'static [&'static str] = &["cg", "grant"];
    const SCOPE: Scope = Scope::Cluster;
    const SIGNED: bool = true;
    const DESCRIPTION: &'static str = "A signed credit line from the granter to a grantee.";
}
