//! Tombstones: a deleted signed object's signer and newest `signed-at`, kept for
//! [`TOMBSTONE_TTL`] in the same Raft entry as the delete, so that an older manifest cannot be
//! created again (anti-rollback across deletion). A create of the same name removes it; the
//! leader sweeps the expired ones.

use std::time::Duration;

use api::KindInfo;
use chrono::Utc;
use serde_json::Value;

use super::meta::now;
use super::{ApiError, Registry, unavailable};
use crate::access;
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
    /// When the object was deleted (RFC 3339).
    pub(crate) deleted_at: String,
}

pub(crate) fn tombstone_key(key: &str) -> String {
    format!("{TOMBSTONES}{}", key.strip_prefix("/registry/").unwrap_or(key))
}

impl Registry {
    /// The tombstone at `tkey`, if one is there and younger than [`TOMBSTONE_TTL`].
    pub(crate) fn live_tombstone(&self, tkey: &str) -> Result<Option<Tombstone>, ApiError> {
        let Some(stored) = self.store.get(tkey).map_err(unavailable)? else { return Ok(None) };
        let Ok(tomb) = serde_json::from_str::<Tombstone>(&stored.value) else { return Ok(None) };
        let deleted = chrono::DateTime::parse_from_rfc3339(&tomb.deleted_at).ok();
        let live = deleted.is_some_and(|d| {
            Utc::now().signed_duration_since(d).to_std().unwrap_or_default() < TOMBSTONE_TTL
        });
        Ok(live.then_some(tomb))
    }

    /// Removes the tombstones older than [`TOMBSTONE_TTL`] at `now` (up to 1000 per call);
    /// returns how many went. Run now and then by one member (the leader).
    pub async fn sweep_tombstones(&self, now: chrono::DateTime<Utc>) -> Result<usize, ApiError> {
        let (all, _) = self.store.list(TOMBSTONES).map_err(unavailable)?;
        let ops: Vec<Op> = all
            .into_iter()
            .filter(|(_, stored)| {
                serde_json::from_str::<Tombstone>(&stored.value)
                    .ok()
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t.deleted_at).ok())
                    .is_none_or(|d| {
                        now.signed_duration_since(d).to_std().unwrap_or_default() >= TOMBSTONE_TTL
                    })
            })
            .take(1000)
            .map(|(key, stored)| Op::Delete { key, expect: Expect::ModRevision(stored.mod_revision) })
            .collect();
        let n = ops.len();
        if n > 0 {
            // A tombstone renewed meanwhile fails the precondition: the next sweep sees it again.
            self.commit(ops).await?;
        }
        Ok(n)
    }

    /// The operations that delete the object at `key` (stored as `old`) for good: the delete,
    /// and for signed kinds the tombstone that keeps its newest `signed-at`.
    pub(crate) fn delete_ops(kind: &KindInfo, key: &str, old: &Value, expect: Expect) -> Vec<Op> {
        let mut ops = vec![Op::Delete { key: key.to_owned(), expect }];
        if kind.signed
            && let Some(signed_at) = access::signed_at(old)
        {
            let tomb = Tombstone {
                signer: access::signer(old).map(str::to_owned),
                signed_at: signed_at.to_owned(),
                deleted_at: now(),
            };
            let value = serde_json::to_string(&tomb).expect("a tombstone serializes");
            ops.push(Op::Put { key: tombstone_key(key), value, expect: Expect::Any });
        }
        ops
    }
}
