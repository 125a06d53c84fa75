//! The ledger's side of the registry: a Transfer is decided ([`api::ledger`]) when it is
//! created, and written in one Raft entry with the two Accounts it changes, on the condition
//! that those accounts and the CreditGrants it drew on are still as they were read. So two
//! transfers decided at once on two members can never both spend one line: the second entry's
//! condition fails when it is applied, and it is decided again on what the first left.

use api::identity::Did;
use api::kinds::{
    AccountSpec, AccountStatus, CreditGrantSpec, TransferPhase, TransferSpec, TransferStatus, account_name,
};
use api::ledger::{self, Decision};
use api::meta::Time;
use chrono::Utc;
use serde_json::{Value, json};

use super::meta::{meta_str, now};
use super::{ApiError, ObjectRef, Registry, not_ready, unavailable};
use crate::access;
use crate::raft::{Expect, Op, Stored};

impl Registry {
    /// Decides the Transfer `obj` (an admitted object): sets its `status` and returns the ops
    /// that post it to both accounts (none when it is refused).
    pub(crate) async fn ledger_ops(&self, obj: &mut Value) -> Result<Vec<Op>, ApiError> {
        let bad = |e: String| ApiError::BadRequest(format!("the transfer cannot be read: {e}"));
        let spec: TransferSpec =
            serde_json::from_value(obj["spec"].clone()).map_err(|e| bad(e.to_string()))?;
        let payer = match &spec.from {
            Some(from) => from.clone(),
            None => Did::parse(access::signer(obj).unwrap_or_default()).map_err(|e| bad(e.to_string()))?,
        };
        let payee = spec.to.clone();
        self.store.read_barrier().await.map_err(not_ready)?;
        let at = Time(Utc::now());
        let (payer_key, payer_stored, mut payer_account) = self.account(&payer)?;
        let (payee_key, payee_stored, mut payee_account) = self.account(&payee)?;
        let (grants, _) = self.store.list(&super::prefix(grant_kind(), None)).map_err(unavailable)?;
        let drawn_on: Vec<(String, u64, String, CreditGrantSpec)> = grants
            .into_iter()
            .filter_map(|(key, stored)| {
                let g: Value = serde_json::from_str(&stored.value).ok()?;
                let granter = access::signer(&g)?.to_owned();
                let spec: CreditGrantSpec = serde_json::from_value(g.get("spec")?.clone()).ok()?;
                (granter == payee.as_str() && spec.grantee == payer).then_some((
                    key,
                    stored.mod_revision,
                    granter,
                    spec,
                ))
            })
            .collect();
        let granters: Vec<Did> = drawn_on.iter().filter_map(|(_, _, g, _)| Did::parse(g).ok()).collect();
        let limit = ledger::limit(
            drawn_on.iter().zip(&granters).map(|((_, _, _, spec), granter)| ledger::Grant {
                granter,
                grantee: &spec.grantee,
                limit: spec.limit,
                expires: spec.expires.as_ref().map(|t| t.0),
            }),
            &payer,
            &payee,
            at.0,
        );
        let decision = if payer == payee {
            Decision::Refuse("a transfer to oneself moves nothing".into())
        } else {
            ledger::transfer(
                (&payer, &mut payer_account),
                (&payee, &mut payee_account),
                limit,
                spec.amount,
                at,
            )
        };
        let (phase, message) = match &decision {
            Decision::Commit => (TransferPhase::Committed, None),
            Decision::Refuse(why) => (TransferPhase::Refused, Some(why.clone())),
        };
        let status = TransferStatus { phase, message, payer: Some(payer.clone()), decided_at: Some(at) };
        obj["status"] = serde_json::to_value(status).expect("a status serializes");
        if decision != Decision::Commit {
            return Ok(Vec::new());
        }
        let mut ops = vec![
            account_op(payer_key, payer_stored.as_ref(), &payer, &payer_account)?,
            account_op(payee_key, payee_stored.as_ref(), &payee, &payee_account)?,
        ];
        // The lines it drew on, as read (a line cut meanwhile fails the entry; a new one only
        // raises the limit).
        ops.extend(
            drawn_on
                .into_iter()
                .map(|(key, revision, ..)| Op::Check { key, expect: Expect::ModRevision(revision) }),
        );
        Ok(ops)
    }

    /// `owner`'s Account: its key, what is stored there, and its balances (zero when none).
    fn account(&self, owner: &Did) -> Result<(String, Option<Stored>, AccountStatus), ApiError> {
        let name = account_name(owner);
        let key = ObjectRef::new(account_kind(), None, &name).key();
        let stored = self.store.get(&key).map_err(unavailable)?;
        let status = match &stored {
            None => AccountStatus::default(),
            Some(s) => serde_json::from_str::<Value>(&s.value)
                .ok()
                .and_then(|v| v.get("status").cloned())
                .map(serde_json::from_value)
                .transpose()
                .map_err(|e| unavailable(format!("the account {name} cannot be read: {e}")))?
                .unwrap_or_default(),
        };
        Ok((key, stored, status))
    }
}

fn account_kind() -> &'static api::KindInfo {
    api::kinds::info::<AccountSpec>()
}

fn grant_kind() -> &'static api::KindInfo {
    api::kinds::info::<CreditGrantSpec>()
}

/// The op that writes `owner`'s account with `status`, on the condition that it is still what
/// was read (or still absent).
fn account_op(
    key: String,
    stored: Option<&Stored>,
    owner: &Did,
    status: &AccountStatus,
) -> Result<Op, ApiError> {
    let (mut obj, expect) = match stored {
        Some(s) => {
            let obj: Value = serde_json::from_str(&s.value).map_err(|e| unavailable(e.to_string()))?;
            (obj, Expect::ModRevision(s.mod_revision))
        }
        None => (
            json!({
                "apiVersion": api::API_VERSION,
                "kind": "Account",
                "metadata": { "name": account_name(owner), "uid": uuid::Uuid::new_v4().to_string(),
                              "creationTimestamp": now(), "generation": 1 },
                "spec": { "owner": owner },
            }),
            Expect::Absent,
        ),
    };
    debug_assert!(stored.is_none() || meta_str(&obj, "name") == Some(account_name(owner).as_str()));
    obj["status"] = serde_json::to_value(status).expect("a status serializes");
    let value = serde_json::to_string(&obj).expect("JSON serializes");
    Ok(Op::Put { key, value: value.into(), expect })
}
