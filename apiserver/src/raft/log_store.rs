//! The Raft log on disk: a redb database with the entries (by index) and the vote, the
//! committed id and the last purged id.
//!
//! Every `append` is one redb transaction committed with fsync before openraft is told the
//! entries are durable. openraft 0.9 waits for each `append` before it takes the next
//! command, so batching writes here would gain nothing: concurrent writes are put into one
//! entry before they reach Raft (group commit, `node::batch_writes`), so one fsync covers them
//! all (BENCHMARKS.md). The committed log id is saved without an fsync of its own (see
//! [`LogStore::save_committed`]), so that an entry costs one fsync, not two.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftLogReader, StorageError, Vote};
use redb::{Database, Durability, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{NodeId, TypeConfig, io_err, read_table};

/// Index → the entry's JSON, packed ([`super::packed`]).
pub(super) const LOG: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("meta");
const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const LAST_PURGED: &str = "last_purged";

type Result<T> = std::result::Result<T, StorageError<NodeId>>;

/// redb's page cache for the log.
const LOG_CACHE_BYTES: usize = 32 << 20;

/// The durable Raft log. Cheap to clone: clones share the database.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore").finish_non_exhaustive()
    }
}

fn read_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    io_err(ErrorSubject::Logs, ErrorVerb::Read, e)
}

fn write_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    io_err(ErrorSubject::Logs, ErrorVerb::Write, e)
}

/// An entry as stored: its JSON, packed ([`super::packed`]; entries from before packing are
/// plain JSON and read the same).
fn entry_of(stored: &[u8]) -> Result<Entry<TypeConfig>> {
    let json = super::packed::unpack(stored).map_err(read_err)?;
    serde_json::from_slice(&json).map_err(read_err)
}

impl LogStore {
    /// Opens (or creates) the log at `path`.
    pub fn open(path: &Path) -> std::result::Result<Self, redb::DatabaseError> {
        // Written once, read back by replication and apply soon after: a small page cache
        // (redb's default is 1 GiB per database).
        let db = Database::builder().set_cache_size(LOG_CACHE_BYTES).create(path)?;
        Ok(Self { db: Arc::new(db) })
    }

    fn get_meta<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        let txn = self.db.begin_read().map_err(read_err)?;
        let Some(table) = read_table(&txn, META).map_err(read_err)? else { return Ok(None) };
        let Some(bytes) = table.get(key).map_err(read_err)? else { return Ok(None) };
        serde_json::from_slice(bytes.value()).map(Some).map_err(read_err)
    }

    /// Writes meta `key`; durably (fsync'd before it returns) when `durable`, else it becomes
    /// durable with the next durable commit (redb keeps commits in order: after a crash the
    /// database is at some durable commit, never at a later commit without an earlier one).
    fn put_meta<T: Serialize>(
        &self,
        key: &str,
        value: &T,
        subject: ErrorSubject<NodeId>,
        durable: bool,
    ) -> Result<()> {
        let err = |e| io_err(subject.clone(), ErrorVerb::Write, e);
        let bytes = serde_json::to_vec(value).map_err(|e| io_err(subject.clone(), ErrorVerb::Write, e))?;
        let mut txn = self.db.begin_write().map_err(|e| err(redb::Error::from(e)))?;
        txn.set_durability(if durable { Durability::Immediate } else { Durability::None });
        {
            let mut table = txn.open_table(META).map_err(|e| err(e.into()))?;
            table.insert(key, bytes.as_slice()).map_err(|e| err(e.into()))?;
        }
        let fsync = std::time::Instant::now();
        txn.commit().map_err(|e| err(e.into()))?;
        if durable {
            crate::metrics::metrics().wal_fsynced(fsync);
        }
        Ok(())
    }

    /// Removes the entries with index in `range`, and records `purged` if given, in one
    /// durable transaction.
    fn remove(&self, range: impl RangeBounds<u64>, purged: Option<&LogId<NodeId>>) -> Result<()> {
        let txn = self.db.begin_write().map_err(write_err)?;
        {
            let mut log = txn.open_table(LOG).map_err(write_err)?;
            log.retain_in(range, |_, _| false).map_err(write_err)?;
            if let Some(p) = purged {
                let mut meta = txn.open_table(META).map_err(write_err)?;
                let bytes = serde_json::to_vec(p).map_err(write_err)?;
                meta.insert(LAST_PURGED, bytes.as_slice()).map_err(write_err)?;
            }
        }
        txn.commit().map_err(write_err)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>> {
        let txn = self.db.begin_read().map_err(read_err)?;
        let Some(table) = read_table(&txn, LOG).map_err(read_err)? else { return Ok(Vec::new()) };
        let bounds = (range.start_bound().cloned(), range.end_bound().cloned());
        let mut out = Vec::new();
        for item in table.range::<u64>(bounds).map_err(read_err)? {
            let (_, bytes) = item.map_err(read_err)?;
            out.push(entry_of(bytes.value())?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>> {
        let last_purged_log_id: Option<LogId<NodeId>> = self.get_meta(LAST_PURGED)?;
        let txn = self.db.begin_read().map_err(read_err)?;
        let mut last = None;
        if let Some(table) = read_table(&txn, LOG).map_err(read_err)?
            && let Some((_, bytes)) = table.last().map_err(read_err)?
        {
            let entry = entry_of(bytes.value())?;
            last = Some(entry.log_id);
        }
        Ok(LogState { last_purged_log_id, last_log_id: last.or(last_purged_log_id) })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<()> {
        // A vote must be on disk before it is cast: a member that forgot it could vote twice
        // in one term.
        self.put_meta(VOTE, vote, ErrorSubject::Vote, true)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>> {
        self.get_meta(VOTE)
    }

    /// Saves the committed log id *without* an fsync: it is durable with the next `append` (or
    /// vote). Losing the last few in a crash is safe: openraft only uses it at start to apply
    /// entries up to it before an election, and takes the state machine's applied id when that
    /// is greater; a committed id read back is never ahead of the durable log, since redb
    /// cannot keep this commit without every durable one before it (the log entries it
    /// names). Durably, it was a second fsync on every write, in the Raft core's one serial
    /// section (BENCHMARKS.md).
    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> Result<()> {
        self.put_meta(COMMITTED, &committed, ErrorSubject::Store, false)?;
        if let Some(c) = committed {
            crate::metrics::metrics().set_committed(c.index);
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>> {
        let committed = self.get_meta::<Option<LogId<NodeId>>>(COMMITTED)?.flatten();
        if let Some(c) = committed {
            crate::metrics::metrics().set_committed(c.index);
        }
        Ok(committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut txn = self.db.begin_write().map_err(write_err)?;
        txn.set_durability(Durability::Immediate);
        {
            let mut table = txn.open_table(LOG).map_err(write_err)?;
            for entry in entries {
                let bytes = super::packed::pack(serde_json::to_vec(&entry).map_err(write_err)?);
                table.insert(entry.log_id.index, bytes.as_slice()).map_err(write_err)?;
            }
        }
        let fsync = std::time::Instant::now();
        txn.commit().map_err(write_err)?;
        crate::metrics::metrics().wal_fsynced(fsync);
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<()> {
        self.remove((Bound::Included(log_id.index), Bound::Unbounded), None)
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<()> {
        self.remove(..=log_id.index, Some(&log_id))
    }
}
