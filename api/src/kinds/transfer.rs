use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::credits::Credits;
use crate::identity::Did;
use crate::meta::Time;
use crate::object::{KindSpec, Scope};
use crate::validation::{FieldError, FieldPath, Validate, check_dns1123_subdomain};

/// One movement of credits. Balances are derived from Transfers; their sum is always zero.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TransferSpec {
    /// The account debited. A Payment's payer is its signer: `from` may be left out, and if
    /// given must be the signer (the apiserver checks). Required for Metering (the workload's
    /// owner).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Did>,
    /// The account credited.
    pub to: Did,
    /// How much; more than zero.
    pub amount: Credits,
    /// Why credits move.
    pub reason: TransferReason,
    /// The Replica metered (`namespace/name`), for metering transfers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
    /// The Workload of the metered replica (`namespace/name`): what its TrustPolicy's spending
    /// limits count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
    /// A note for people (at most 256 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memo: Option<String>,
}

/// Why credits move.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TransferReason {
    /// The credits controller charging a workload owner for a running replica.
    Metering,
    /// A user sending credits (`ui credits send`).
    Payment,
}

impl Validate for TransferSpec {
    fn validate(&self, path: &FieldPath, errors: &mut Vec<FieldError>) {
        if self.amount <= Credits::ZERO {
            errors.push(path.child("amount").error("must be > 0"));
        }
        if self.from.as_ref() == Some(&self.to) {
            errors.push(path.child("to").error("must differ from `from`"));
        }
        if self.reason == TransferReason::Metering && self.from.is_none() {
            errors.push(path.child("from").error("required for a Metering transfer (the workload's owner)"));
        }
        if self.memo.as_ref().is_some_and(|m| m.len() > 256) {
            errors.push(path.child("memo").error("must be at most 256 bytes"));
        }
        if let Some(w) = &self.workload
            && !is_namespaced_name(w)
        {
            errors.push(path.child("workload").error(format!("{w:?} is not namespace/name")));
        }
        match (self.reason, &self.replica) {
            (TransferReason::Metering, None) => {
                errors.push(path.child("replica").error("required for a Metering transfer"));
            }
            (_, Some(r)) => {
                if !is_namespaced_name(r) {
                    errors.push(path.child("replica").error(format!("{r:?} is not namespace/name")));
                }
            }
            (TransferReason::Payment, None) => {}
        }
    }
}

/// Whether `s` is `namespace/name`.
fn is_namespaced_name(s: &str) -> bool {
    s.split_once('/').is_some_and(|(ns, name)| {
        crate::validation::check_dns1123_label(ns).is_ok() && check_dns1123_subdomain(name).is_ok()
    })
}

/// Lifecycle phase of a transfer: decided by the apiserver in the Raft entry that writes it
/// (see `ledger`), so a stored Transfer is never `Pending`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TransferPhase {
    /// Not yet accounted (only in a dry run's answer before the decision).
    #[default]
    Pending,
    /// Accounted in both balances.
    Committed,
    /// Refused: no balance changed (`message` says why: no line, over the line, expired).
    #[serde(alias = "Rejected")]
    Refused,
}

/// What the credits controller did with a transfer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TransferStatus {
    /// Lifecycle phase.
    #[serde(default)]
    pub phase: TransferPhase,
    /// Why it was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Who paid (the `from`, or the signer of a Payment that leaves it out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer: Option<Did>,
    /// When it was decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<Time>,
}

impl KindSpec for TransferSpec {
    type Status = TransferStatus;
    const KIND: &'static str = "Transfer";
    const PLURAL: &'static str = "transfers";
    const SINGULAR: &'static str = "transfer";
    const SHORT_NAMES: &'static [&'static str] = &["tx"];
    const SCOPE: Scope = Scope::Cluster;
    const SIGNED: bool = true;
    const DESCRIPTION: &'static str = "One signed movement of credits between two accounts.";
}
