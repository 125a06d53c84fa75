//! Tombstones: a deleted signed object's signer and newest `signed-at`, kept for
//! [`TOMBSTONE_TTL`] in the same Raft entry as the delete, so that an older manifest cannot be
//! created again (anti-rollback across deletion), nor the very same one by anyone but its
//! signer (a node key bringing back the Node its operator deleted). One per name and signer: a tombstone of Alice's
//! never blocks Bob from the name, nor does Bob's object at that name erase Alice's past. A
//! create by the same signer removes it, in the same Raft entry and on the condition that it is
//! still what was read (so a delete on another member cannot slip between); the leader sweeps
//! the expired ones.

use std::time::Duration;

use api::KindInfo;
use chrono::Utc;
use serde_json::Value;

use super::meta::now;
use super::{ApiError, Registry, unavailable};
use crate::access::{self, Caller};
use crate::raft::{Expect, Op};

/// Where the tombstones of deleted signed objects are kept: the same path as the object
/// under this prefix instead of `/registry/`.
pub const TOMBSTONES: &str = "/tombstones/";

/// How long a deleted signed object's newest `signed-at` is remembered, so that an older
/// version cannot be created again (anti-rollback across deletion). At least as long as the
/// change history (15 minutes by default).
pub const TOMBSTONE_TTL: Duration = Duration::from_secs(3600);

/// What a tombstone records.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Tombstone {
    pub(crate) signer: Option<String>,
    pub(crate) signed_at: String,
    /// Its signature: the very manifest that was deleted, as opposed to another the signer
    /// signed in the same second.
    #[serde(default)]
    pub(crate) signature: Option<String>,
    /// When the object was deleted (RFC 3339).
    pub(crate) deleted_at: String,
}

/// Where the tombstone of `signer`'s object at `key` is kept.
pub(crate) fn tombstone_key(key: &str, signer: &str) -> String {
    format!("{TOMBSTONES}{}/{signer}", key.strip_prefix("/registry/").unwrap_or(key))
}

fn signature(obj: &Value) -> Option<&str> {
    obj.pointer("/metadata/annotations").and_then(|a| a.get(api::signing::SIGNATURE)).and_then(Value::as_str)
}

impl Tombstone {
    fn live(&self, now: chrono::DateTime<Utc>) -> bool {
        chrono::DateTime::parse_from_rfc3339(&self.deleted_at)
            .is_ok_and(|d| now.signed_duration_since(d).to_std().unwrap_or_default() < TOMBSTONE_TTL)
    }
}

impl Registry {
    /// What the create of signed `obj` (named `name`) at `key` by `who` must check and do
    /// about the tombstone of its name and signer: refused when `obj` is older than the
    /// deleted version, or is that very version and `who` is not its signer (a replay);
    /// otherwise the ops
    /// that go in the create's Raft entry: remove the tombstone if it is still what was read,
    /// or make sure none appeared meanwhile.
    pub(crate) fn tombstone_ops(
        &self,
        who: &Caller,
        kind: &KindInfo,
        key: &str,
        obj: &Value,
        name: &str,
    ) -> Result<Vec<Op>, ApiError> {
        let (Some(signer), Some(after)) = (access::signer(obj), access::signed_at(obj)) else {
            return Ok(Vec::new());
        };
        let tkey = tombstone_key(key, signer);
        let Some(stored) = self.store.get(&tkey).map_err(unavailable)? else {
            return Ok(vec![Op::Check { key: tkey, expect: Expect::Absent }]);
        };
        let remove = Op::Delete { key: tkey, expect: Expect::ModRevision(stored.mod_revision) };
        let tomb = serde_json::from_str::<Tombstone>(&stored.value).ok().filter(|t| t.live(Utc::now()));
        let Some(tomb) = tomb else { return Ok(vec![remove]) };
        let by_signer = who.member || who.did.as_ref().is_some_and(|d| d.as_str() == signer);
        let replayed = tomb.signature.is_some() && tomb.signature.as_deref() == signature(obj);
        // When it was deleted is for its signer only.
        let when = if by_signer { format!(" (deleted at {})", tomb.deleted_at) } else { String::new() };
        let message = if access::rollback(&tomb.signed_at, after) {
            format!(
                "signed at {after}, before a deleted version of this object (signed at {}){when}: an older manifest cannot come back (a replay?); sign it again",
                tomb.signed_at
            )
        } else if replayed && !by_signer {
            format!(
                "signed at {after}: this is the very manifest that was deleted, and only its signer may create it again (a replay?); its signer can sign it again"
            )
        } else {
            return Ok(vec![remove]);
        };
        let path = api::FieldPath::root().child("metadata").child("annotations").key(api::signing::SIGNED_AT);
        Err(ApiError::Invalid {
            kind: kind.kind.into(),
            name: name.into(),
            causes: vec![path.error(message)],
        })
    }

    /// Removes the tombstones older than [`TOMBSTONE_TTL`] at `now` (up to 1000 per call);
    /// returns how many went. Run now and then by one member (the leader).
    pub async fn sweep_tombstones(&self, now: chrono::DateTime<Utc>) -> Result<usize, ApiError> {
        let (all, _) = self.store.list(TOMBSTONES).map_err(unavailable)?;
        let expired: Vec<(String, u64)> = all
            .into_iter()
            .filter(|(_, stored)| {
                serde_json::from_str::<Tombstone>(&stored.value).ok().is_none_or(|t| !t.live(now))
            })
            .take(1000)
            .map(|(key, stored)| (key, stored.mod_revision))
            .collect();
        // A Raft entry holds at most MAX_OPS operations: more than that in one was refused.
        self.delete_keys(expired).await
    }

    /// The operations that delete the object at `key` (stored as `old`) for good: the delete,
    /// and for signed kinds the tombstone that keeps its newest `signed-at`.
    pub(crate) fn delete_ops(kind: &KindInfo, key: &str, old: &Value, expect: Expect) -> Vec<Op> {
        let mut ops = vec![Op::Delete { key: key.to_owned(), expect }];
        if kind.signed
            && let (Some(signer), Some(signed_at)) = (access::signer(old), access::signed_at(old))
        {
            let tomb = Tombstone {
                signer: Some(signer.to_owned()),
                signed_at: signed_at.to_owned(),
                signature: signature(old).map(str::to_owned),
                deleted_at: now(),
            };
            let value = serde_json::to_string(&tomb).expect("a tombstone serializes");
            ops.push(Op::Put { key: tombstone_key(key, signer), value: value.into(), expect: Expect::Any });
        }
        ops
    }
}
