//! The replicated state machine on disk: every key's current value with its revisions, in a
//! redb database of its own.
//!
//! Applying is one redb transaction per batch of entries, committed *without* fsync: the
//! applied state and `last_applied` change together, so after a crash the state machine is
//! consistent at some earlier index and openraft re-applies the rest from the (fsync'd) log.
//! Before a snapshot is built, which lets openraft purge the log, the state machine is made
//! durable, so nothing purged is ever needed again.

use std::fmt::Debug;
use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, RaftSnapshotBuilder, SnapshotMeta, StorageError,
    StoredMembership,
};
use redb::{Database, Durability, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::{NodeId, Outcome, Request, Response, Stored, TypeConfig, io_err, read_table};

/// Key → 8-byte create revision ‖ 8-byte mod revision ‖ value.
const OBJECTS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("objects");
const META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("meta");
const LAST_APPLIED: &str = "last_applied";
const MEMBERSHIP: &str = "membership";
const SNAPSHOT: &str = "snapshot";

type Result<T> = std::result::Result<T, StorageError<NodeId>>;
type Membership = StoredMembership<NodeId, openraft::BasicNode>;

/// The durable state machine. Cheap to clone: clones share the database.
#[derive(Clone)]
pub struct StateMachine {
    db: Arc<Database>,
}

impl Debug for StateMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateMachine").finish_non_exhaustive()
    }
}

/// The content of a snapshot.
#[derive(Serialize, Deserialize)]
struct SnapshotData {
    last_applied: Option<LogId<NodeId>>,
    membership: Membership,
    objects: Vec<(String, Stored)>,
}

/// A stored snapshot: its meta and data, kept so a restarted member can serve it.
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, openraft::BasicNode>,
    data: Vec<u8>,
}

fn sm_err(verb: ErrorVerb, e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    io_err(ErrorSubject::StateMachine, verb, e)
}

fn read_err(e: impl Into<redb::Error>) -> StorageError<NodeId> {
    sm_err(ErrorVerb::Read, e.into())
}

fn write_err(e: impl Into<redb::Error>) -> StorageError<NodeId> {
    sm_err(ErrorVerb::Write, e.into())
}

fn encode(s: &Stored) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + s.value.len());
    out.extend_from_slice(&s.create_revision.to_be_bytes());
    out.extend_from_slice(&s.mod_revision.to_be_bytes());
    out.extend_from_slice(s.value.as_bytes());
    out
}

fn decode(bytes: &[u8]) -> Result<Stored> {
    let corrupt = || sm_err(ErrorVerb::Read, std::io::Error::other("corrupt object record"));
    if bytes.len() < 16 {
        return Err(corrupt());
    }
    let (c, rest) = bytes.split_at(8);
    let (m, v) = rest.split_at(8);
    Ok(Stored {
        create_revision: u64::from_be_bytes(c.try_into().expect("8 bytes")),
        mod_revision: u64::from_be_bytes(m.try_into().expect("8 bytes")),
        value: String::from_utf8(v.to_vec()).map_err(|_| corrupt())?,
    })
}

impl StateMachine {
    /// Opens (or creates) the state machine at `path`.
    pub fn open(path: &Path) -> std::result::Result<Self, redb::DatabaseError> {
        let db = Database::create(path)?;
        Ok(Self { db: Arc::new(db) })
    }

    /// The current value of `key`.
    pub fn get(&self, key: &str) -> Result<Option<Stored>> {
        let txn = self.db.begin_read().map_err(read_err)?;
        let Some(table) = read_table(&txn, OBJECTS).map_err(read_err)? else { return Ok(None) };
        table.get(key).map_err(read_err)?.map(|v| decode(v.value())).transpose()
    }

    /// Every key starting with `prefix`, in key order, with its value, and the revision this
    /// list is exactly the state at. Both come from one read transaction, so a watch started
    /// at that revision misses nothing and repeats nothing.
    pub fn list(&self, prefix: &str) -> Result<(Vec<(String, Stored)>, u64)> {
        let txn = self.db.begin_read().map_err(read_err)?;
        let revision = meta_in::<LogId<NodeId>>(&txn, LAST_APPLIED)?.map_or(0, |l| l.index);
        let Some(table) = read_table(&txn, OBJECTS).map_err(read_err)? else {
            return Ok((Vec::new(), revision));
        };
        let mut out = Vec::new();
        for item in table.range(prefix..).map_err(read_err)? {
            let (k, v) = item.map_err(read_err)?;
            if !k.value().starts_with(prefix) {
                break;
            }
            out.push((k.value().to_owned(), decode(v.value())?));
        }
        Ok((out, revision))
    }

    fn meta<T: for<'de> Deserialize<'de>>(&self, key: &str) -> Result<Option<T>> {
        meta_in(&self.db.begin_read().map_err(read_err)?, key)
    }

    /// Forces every applied change to disk.
    fn sync(&self) -> Result<()> {
        let mut txn = self.db.begin_write().map_err(write_err)?;
        txn.set_durability(Durability::Immediate);
        txn.commit().map_err(write_err)
    }
}

/// Reads the JSON value of meta `key` within `txn`.
fn meta_in<T: for<'de> Deserialize<'de>>(txn: &redb::ReadTransaction, key: &str) -> Result<Option<T>> {
    let Some(table) = read_table(txn, META).map_err(read_err)? else { return Ok(None) };
    let Some(v) = table.get(key).map_err(read_err)? else { return Ok(None) };
    serde_json::from_slice(v.value()).map(Some).map_err(|e| sm_err(ErrorVerb::Read, e))
}

fn put_meta(txn: &redb::WriteTransaction, key: &str, value: &impl Serialize) -> Result<()> {
    let bytes = serde_json::to_vec(value).map_err(|e| sm_err(ErrorVerb::Write, e))?;
    let mut table = txn.open_table(META).map_err(write_err)?;
    table.insert(key, bytes.as_slice()).map_err(write_err)?;
    Ok(())
}

/// Applies one request inside `table` at `revision`.
fn apply_request(table: &mut redb::Table<'_, &str, &[u8]>, req: &Request, revision: u64) -> Result<Outcome> {
    let mut lookup_err = None;
    let refusal = req.refusal(|key| match table.get(key) {
        Ok(v) => v.and_then(|v| decode(v.value()).map_err(|e| lookup_err = Some(e)).ok()),
        Err(e) => {
            lookup_err = Some(read_err(e));
            None
        }
    });
    if let Some(e) = lookup_err {
        return Err(e);
    }
    if let Some(refused) = refusal {
        return Ok(refused);
    }
    let mut prev = Vec::with_capacity(req.ops.len());
    for op in &req.ops {
        match op {
            super::Op::Put { key, value, .. } => {
                let old =
                    table.get(key.as_str()).map_err(read_err)?.map(|v| decode(v.value())).transpose()?;
                let create_revision = old.as_ref().map_or(revision, |o| o.create_revision);
                let new = Stored { create_revision, mod_revision: revision, value: value.clone() };
                table.insert(key.as_str(), encode(&new).as_slice()).map_err(write_err)?;
                prev.push(old);
            }
            super::Op::Delete { key, .. } => {
                let old =
                    table.remove(key.as_str()).map_err(write_err)?.map(|v| decode(v.value())).transpose()?;
                prev.push(old);
            }
        }
    }
    Ok(Outcome::Applied { prev })
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>> {
        // Durable first: openraft purges the log up to this snapshot afterwards.
        self.sync()?;
        let txn = self.db.begin_read().map_err(read_err)?;
        let last_applied: Option<LogId<NodeId>> = meta_in(&txn, LAST_APPLIED)?;
        let membership: Membership = meta_in(&txn, MEMBERSHIP)?.unwrap_or_default();
        let mut objects = Vec::new();
        if let Some(table) = read_table(&txn, OBJECTS).map_err(read_err)? {
            for item in table.iter().map_err(read_err)? {
                let (k, v) = item.map_err(read_err)?;
                objects.push((k.value().to_owned(), decode(v.value())?));
            }
        }
        drop(txn);
        let data =
            serde_json::to_vec(&SnapshotData { last_applied, membership: membership.clone(), objects })
                .map_err(|e| sm_err(ErrorVerb::Write, e))?;
        let snapshot_id = match last_applied {
            Some(l) => format!("{}-{}", l.leader_id, l.index),
            None => "empty".to_owned(),
        };
        let meta = SnapshotMeta { last_log_id: last_applied, last_membership: membership, snapshot_id };
        self.save_snapshot(&meta, &data)?;
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }
}

impl StateMachine {
    fn save_snapshot(&self, meta: &SnapshotMeta<NodeId, openraft::BasicNode>, data: &[u8]) -> Result<()> {
        let stored = StoredSnapshot { meta: meta.clone(), data: data.to_vec() };
        let mut txn = self.db.begin_write().map_err(write_err)?;
        txn.set_durability(Durability::Immediate);
        put_meta(&txn, SNAPSHOT, &stored)?;
        txn.commit().map_err(write_err)
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId<NodeId>>, Membership)> {
        let last_applied = self.meta(LAST_APPLIED)?;
        let membership = self.meta(MEMBERSHIP)?.unwrap_or_default();
        Ok((last_applied, membership))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + openraft::OptionalSend,
        I::IntoIter: openraft::OptionalSend,
    {
        let mut txn = self.db.begin_write().map_err(write_err)?;
        txn.set_durability(Durability::None);
        let mut responses = Vec::new();
        let mut last = None;
        {
            let mut table = txn.open_table(OBJECTS).map_err(write_err)?;
            for entry in entries {
                let revision = entry.log_id.index;
                let outcome = match &entry.payload {
                    EntryPayload::Blank => Outcome::None,
                    EntryPayload::Normal(req) => apply_request(&mut table, req, revision)?,
                    EntryPayload::Membership(m) => {
                        put_meta(&txn, MEMBERSHIP, &Membership::new(Some(entry.log_id), m.clone()))?;
                        Outcome::None
                    }
                };
                last = Some(entry.log_id);
                responses.push(Response { revision, outcome });
            }
        }
        if let Some(last) = last {
            put_meta(&txn, LAST_APPLIED, &last)?;
        }
        txn.commit().map_err(write_err)?;
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, openraft::BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<()> {
        let bytes = snapshot.into_inner();
        let data: SnapshotData = serde_json::from_slice(&bytes).map_err(|e| {
            StorageError::from(openraft::StorageIOError::read_snapshot(Some(meta.signature()), &e))
        })?;
        let mut txn = self.db.begin_write().map_err(write_err)?;
        txn.set_durability(Durability::Immediate);
        {
            let mut table = txn.open_table(OBJECTS).map_err(write_err)?;
            table.retain(|_, _| false).map_err(write_err)?;
            for (key, stored) in &data.objects {
                table.insert(key.as_str(), encode(stored).as_slice()).map_err(write_err)?;
            }
        }
        match &meta.last_log_id {
            Some(last) => put_meta(&txn, LAST_APPLIED, last)?,
            None => {
                txn.open_table(META).map_err(write_err)?.remove(LAST_APPLIED).map_err(write_err)?;
            }
        }
        put_meta(&txn, MEMBERSHIP, &meta.last_membership)?;
        put_meta(&txn, SNAPSHOT, &StoredSnapshot { meta: meta.clone(), data: bytes })?;
        txn.commit().map_err(write_err)
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>> {
        let stored: Option<StoredSnapshot> = self.meta(SNAPSHOT)?;
        Ok(stored.map(|s| Snapshot { meta: s.meta, snapshot: Box::new(Cursor::new(s.data)) }))
    }
}
