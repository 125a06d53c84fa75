//! An identity's credit account: its balance and its balance with each counterparty, written
//! only by the apiserver in the Raft entry of each committed Transfer (see [`crate::ledger`]).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::credits::Credits;
use crate::identity::Did;
use crate::meta::Time;
use crate::object::{KindSpec, Scope};
use crate::validation::{FieldError, FieldPath, Validate};

/// Whose account this is. The object is named [`account_name`] of the owner.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccountSpec {
    /// The identity (a did:key).
    pub owner: Did,
}

impl Validate for AccountSpec {
    fn validate(&self, _: &FieldPath, _: &mut Vec<FieldError>) {}
}

/// The owner's balance with one counterparty (a bilateral credit line).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LineBalance {
    /// The other identity.
    pub counterparty: Did,
    /// What the counterparty owes the owner (negative: what the owner owes it).
    pub balance: Credits,
}

/// The balances, as the committed Transfers left them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccountStatus {
    /// The sum of the line balances: what the owner is owed in all, less what it owes.
    #[serde(default)]
    pub balance: Credits,
    /// The balance with each counterparty, by counterparty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lines: Vec<LineBalance>,
    /// Committed transfers to or from the owner.
    #[serde(default)]
    pub transfers: u64,
    /// When the last of them was committed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<Time>,
}

impl KindSpec for AccountSpec {
    type Status = AccountStatus;
    const KIND: &'static str = "Account";
    const PLURAL: &'static str = "accounts";
    const SINGULAR: &'static str = "account";
    const SHORT_NAMES: &'static [&'static str] = &["acct"];
    const SCOPE: Scope = Scope::Cluster;
    const SIGNED: bool = false;
    const DESCRIPTION: &'static str =
        "An identity's credit balances, changed only by committed Transfers (read-only).";
}

/// The name of `owner`'s Account: its public key in hex, as two labels of 32 digits (a did:key
/// is not a valid name, and a label is at most 63 characters).
pub fn account_name(owner: &Did) -> String {
    let hex: String = owner.verifying_key().as_bytes().iter().map(|b| format!("{b:02x}")).collect();
    format!("{}.{}", &hex[..32], &hex[32..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_account_s_name_is_a_valid_name_of_its_owner_s_key() {
        let owner = Did::from_key(&ed25519_dalek::SigningKey::from_bytes(&[7; 32]).verifying_key());
        let name = account_name(&owner);
        assert!(crate::validation::check_dns1123_subdomain(&name).is_ok(), "{name}");
        assert_eq!(name.len(), 65);
        assert_eq!(
            name.replace('.', ""),
            owner.verifying_key().as_bytes().iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
    }
}
