use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::NoStatus;
use crate::identity::Did;
use crate::meta::Time;
use crate::object::{KindSpec, Scope};
use crate::validation::{FieldError, FieldPath, Validate};

/// One request of an agent's key, allowed or refused, as the apiserver recorded it (through
/// Raft, kept for a bounded time and number). Only the agent, the user whose grant decided it
/// and the control plane read it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuditEventSpec {
    /// The agent's key.
    pub agent: Did,
    /// The user whose grant decided the request (none: it touched nobody's objects that a
    /// grant covers, or no grant names the agent any more).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Did>,
    /// That user's AgentGrant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<String>,
    /// The request's verb (get, list, watch, create, update, patch, delete, logs, decide).
    pub verb: String,
    /// The resource (plural) it was for.
    pub resource: String,
    /// Its namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The object's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Whether it was dry run.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    /// What the apiserver decided.
    pub decision: AuditDecision,
    /// The HTTP code of the answer.
    pub code: u16,
    /// Why (the refusal's message, the approval's name), at most 1 KiB.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// When.
    pub at: Time,
}

/// What the apiserver decided about an agent's request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum AuditDecision {
    /// Performed (or, for a dry run, would be).
    Allowed,
    /// Held as an Approval.
    PendingApproval,
    /// Refused.
    Refused,
}

/// The longest reason kept.
pub const MAX_AUDIT_REASON: usize = 1024;

impl Validate for AuditEventSpec {
    fn validate(&self, path: &FieldPath, errors: &mut Vec<FieldError>) {
        if self.reason.len() > MAX_AUDIT_REASON {
            errors.push(path.child("reason").error(format!("at most {MAX_AUDIT_REASON} bytes")));
        }
    }
}

impl KindSpec for AuditEventSpec {
    type Status = NoStatus;
    const KIND: &'static str = "AuditEvent";
    const PLURAL: &'static str = "auditevents";
    const SINGULAR: &'static str = "auditevent";
    const SHORT_NAMES: &'static [&'static str] = &["audit"];
    const SCOPE: Scope = Scope::Cluster;
    const SIGNED: bool = false;
    const DESCRIPTION: &'static str =
        "One request of an agent's key, allowed or refused: who, on whose grant, what, the decision, when.";
}
