//! The Raft log on disk: an append-only write-ahead log ([`super::wal`]) of the entries (by
//! index), the vote, the committed id and the last purged id, as etcd keeps its WAL.
//!
//! Every `append` is one write of its records and one fdatasync before openraft is told the
//! entries are durable: on the runtime worker that called it when that costs no one else a
//! worker, else on a blocking thread ([`on_the_worker`]). openraft 0.9 waits for each `append`
//! before it takes the next command, so batching writes here would gain nothing: concurrent
//! writes are put into one entry before they reach Raft (group commit, `node::batch_writes`),
//! so one fsync covers them all (BENCHMARKS.md). The committed log id is saved without a
//! write of its own: it goes in the next write the log makes anyway (see
//! [`LogStore::save_committed`]), so that an entry costs one write and one fsync, not two of
//! either.
//!
//! Logs of members from before the WAL (`raft-log.redb`) are imported at start
//! ([`import_redb`]), and a [`TOMBSTONE`] is left in their place (for every member).

use std::collections::VecDeque;
use std::fmt::Debug;
use std::fs::File;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftLogReader, StorageError, Vote};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;

use super::wal::{OpenError, Record, Wal, at, sync_dir};
use super::{NodeId, TypeConfig, io_err, read_table};

/// The log's table in `raft-log.redb` of members from before the WAL: index → the entry's
/// JSON, packed ([`super::packed`]).
pub(super) const LOG: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("meta");
const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const LAST_PURGED: &str = "last_purged";

type Result<T> = std::result::Result<T, StorageError<NodeId>>;

/// Most entries, and most bytes of them as encoded (unpacked), that [`Recent`] keeps.
const RECENT_ENTRIES: usize = 1024;
const RECENT_BYTES: usize = 8 << 20;

/// The durable Raft log. Cheap to clone: clones share the files and [`Recent`].
#[derive(Clone)]
pub struct LogStore {
    wal: Arc<Wal>,
    recent: Arc<Mutex<Recent>>,
    /// The committed log id openraft saved last, while it is not yet written: the next write
    /// transaction of the log takes it ([`LogStore::save_committed`]).
    unsaved_committed: Arc<Mutex<Option<Option<LogId<NodeId>>>>>,
    /// The buffer the last append encoded its entries into, kept for the next
    /// ([`APPEND_BUFFER_KEPT`]).
    append_buffer: Arc<Mutex<Vec<u8>>>,
    /// This member's id, once it runs as one ([`LogStore::of_member`]): which entries are its
    /// own proposals ([`on_the_worker`]).
    member: Option<NodeId>,
}

/// The largest buffer appends encode their entries into that is kept from one to the next (a
/// larger one is let go). A new buffer for each append (tens of KiB under load: a batch of
/// objects) cost 3.8 % of a member's samples at 64 clients faulting in fresh pages the
/// allocator had returned to the system (BENCHMARKS.md, change 27).
const APPEND_BUFFER_KEPT: usize = 4 << 20;

/// The entries appended last, as they were appended. Each entry is read back soon after it is
/// written: by replication once per follower, and to apply it; a clone from here (its objects
/// shared, not copied: [`super::Op::Put`]) costs far less than reading, unpacking and parsing
/// it again (3 % of the leader's CPU under load,
/// BENCHMARKS.md change 7). A mirror of a stretch of the log: every index it holds has on disk
/// the entry it holds. It takes entries only once their append is durable; it forgets, before
/// the disk changes, what truncate and purge remove and anything an append would overwrite;
/// it starts over when an append does not continue it; and it answers only a range with both
/// ends given that it holds whole (anything else is read from disk). Bounded by
/// [`RECENT_ENTRIES`] and [`RECENT_BYTES`].
#[derive(Debug, Default)]
struct Recent {
    /// Contiguous indexes, oldest first, each with its size as encoded (unpacked).
    entries: VecDeque<(Entry<TypeConfig>, usize)>,
    bytes: usize,
}

impl Recent {
    /// Entries from index `first` on are about to be written: what they would overwrite is
    /// forgotten (all of it: the log keeps its entries past the new ones, which a mirror of
    /// its tail could not tell apart).
    fn overwriting(&mut self, first: u64) {
        if self.next_index().is_some_and(|next| first < next) {
            self.clear();
        }
    }

    /// `appended` (in index order, contiguous) is durable in the log.
    fn appended(&mut self, appended: Vec<(Entry<TypeConfig>, usize)>) {
        let Some(first) = appended.first().map(|(e, _)| e.log_id.index) else { return };
        // An append that does not continue what is held cannot be mirrored: start over.
        if self.next_index().is_some_and(|next| next != first) {
            self.clear();
        }
        for (entry, size) in appended {
            debug_assert!(self.next_index().is_none_or(|next| next == entry.log_id.index));
            self.bytes += size;
            self.entries.push_back((entry, size));
        }
        while self.entries.len() > RECENT_ENTRIES || self.bytes > RECENT_BYTES {
            let Some((_, size)) = self.entries.pop_front() else { break };
            self.bytes -= size;
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// The entries from index `from` on are gone from the log.
    fn truncated(&mut self, from: u64) {
        while self.entries.back().is_some_and(|(e, _)| e.log_id.index >= from) {
            let Some((_, size)) = self.entries.pop_back() else { break };
            self.bytes -= size;
        }
    }

    /// The entries up to index `upto` are gone from the log.
    fn purged(&mut self, upto: u64) {
        while self.entries.front().is_some_and(|(e, _)| e.log_id.index <= upto) {
            let Some((_, size)) = self.entries.pop_front() else { break };
            self.bytes -= size;
        }
    }

    /// The index after the last entry held.
    fn next_index(&self) -> Option<u64> {
        self.entries.back().map(|(e, _)| e.log_id.index + 1)
    }

    /// The entries in `range`, if both its ends are given, it is not empty and every one of
    /// them is held here.
    fn get(&self, range: &impl RangeBounds<u64>) -> Option<Vec<Entry<TypeConfig>>> {
        let oldest = self.entries.front()?.0.log_id.index;
        let next = self.next_index()?;
        let start = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i.checked_add(1)?,
            Bound::Unbounded => return None,
        };
        let end = match range.end_bound() {
            Bound::Included(&i) => i.checked_add(1)?,
            Bound::Excluded(&i) => i,
            Bound::Unbounded => return None,
        };
        if start < oldest || end > next || start >= end {
            return None;
        }
        let from = usize::try_from(start - oldest).ok()?;
        let to = usize::try_from(end - oldest).ok()?;
        Some(self.entries.range(from..to).map(|(e, _)| e.clone()).collect())
    }
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

/// An entry as stored ([`super::packed::encode`]; entries from before, JSON packed or not,
/// read the same).
fn entry_of(stored: &[u8]) -> Result<Entry<TypeConfig>> {
    super::packed::decode(stored).map_err(read_err)
}

fn json_of<T: DeserializeOwned>(bytes: Option<Vec<u8>>) -> Result<Option<T>> {
    bytes.map(|b| serde_json::from_slice(&b)).transpose().map_err(read_err)
}

impl LogStore {
    /// Opens (or creates) the log in the directory `dir`.
    pub fn open(dir: &Path) -> std::result::Result<Self, OpenError> {
        let wal = Wal::open(dir)?;
        Ok(Self::on(Arc::new(wal)))
    }

    /// A log on `wal`, with nothing of its own kept in memory yet (tests open a second one on
    /// the same files: what the disk alone says).
    fn on(wal: Arc<Wal>) -> Self {
        Self {
            wal,
            recent: Arc::default(),
            unsaved_committed: Arc::default(),
            append_buffer: Arc::default(),
            member: None,
        }
    }

    /// This log, as the log of member `id` (before Raft takes it).
    pub(super) fn of_member(mut self, id: NodeId) -> Self {
        self.member = Some(id);
        self
    }

    /// The committed log id saved since the last write, if any, as a record to write with
    /// the next one: it becomes durable with the entries, vote, truncation or purge written
    /// with it. Taken out before the write: a write of the log that fails stops Raft (a
    /// storage error), so the id is not needed again.
    fn unsaved_committed(&self) -> Option<Vec<u8>> {
        let committed = self.unsaved_committed.lock().expect("unsaved committed lock").take()?;
        Some(serde_json::to_vec(&committed).expect("a log id serializes"))
    }

    /// Writes `records` durably (fdatasync'd before it returns), after the committed log id
    /// saved since the last write if any.
    fn write(&self, records: &[Record<'_>], subject: ErrorSubject<NodeId>) -> Result<()> {
        let committed = self.unsaved_committed();
        let mut all = Vec::with_capacity(records.len() + 1);
        if let Some(committed) = &committed {
            all.push(Record::Committed(committed));
        }
        all.extend_from_slice(records);
        let fsync = std::time::Instant::now();
        self.wal.write(&all).map_err(|e| io_err(subject, ErrorVerb::Write, e))?;
        crate::metrics::metrics().wal_fsynced(fsync);
        Ok(())
    }

    fn vote(&self) -> Result<Option<Vote<NodeId>>> {
        json_of(self.wal.state().vote)
    }

    fn last_purged(&self) -> Result<Option<LogId<NodeId>>> {
        json_of(self.wal.state().purged)
    }

    fn committed_on_disk(&self) -> Result<Option<LogId<NodeId>>> {
        Ok(json_of::<Option<LogId<NodeId>>>(self.wal.state().committed)?.flatten())
    }
}

/// What is left at `raft-log.redb` once the log is in the WAL: not a redb database, so that a
/// univrs build from before the WAL, started on this data dir, refuses to open it rather than
/// start with an empty log (and vote again in a term it voted in).
pub const TOMBSTONE: &[u8] = b"univrs: not a database. This member's Raft log is in raft-log/ (a write-ahead log); a univrs build from before it cannot read that, and must not start on this data dir.\n";

/// Whether the file at `path` is the [`TOMBSTONE`].
pub fn is_tombstone(path: &Path) -> std::io::Result<bool> {
    use std::io::Read as _;
    let mut head = Vec::with_capacity(TOMBSTONE.len());
    File::open(path)?.take(TOMBSTONE.len() as u64).read_to_end(&mut head)?;
    Ok(head == TOMBSTONE)
}

/// Puts the [`TOMBSTONE`] at `legacy` unless something is there: for a member that never had
/// a log from before the WAL, once its WAL exists (an older build must not start on its data
/// dir either, and this build must not start on the tombstone without the WAL).
pub fn ensure_tombstone(legacy: &Path) -> std::io::Result<()> {
    if legacy.exists() {
        Ok(())
    } else {
        crate::member::write_private(legacy, TOMBSTONE).map_err(|e| at(legacy, e))
    }
}

/// Moves the log of a member from before the WAL, `raft-log.redb`, into the WAL directory
/// `dir`, and leaves the [`TOMBSTONE`] at `legacy`. The WAL is made whole beside `dir` first
/// and renamed into place, so a member stopped part way imports again at its next start; the
/// old file is replaced only once the WAL is in place. The tombstone without `dir` is an
/// error: the log is lost, and a member started on an empty one could vote twice in a term.
pub fn import_redb(legacy: &Path, dir: &Path) -> std::io::Result<Imported> {
    use std::io::Error;
    if !legacy.exists() {
        return Ok(Imported::Nothing);
    }
    if is_tombstone(legacy).map_err(|e| at(legacy, e))? {
        if !dir.is_dir() {
            return Err(Error::new(
                std::io::ErrorKind::NotFound,
                format!(
                    "{} is missing, and {} says the Raft log moved there: refusing to start on an empty log (it could vote twice in a term); restore the directory, or move the data dir away and join the member to its cluster again",
                    dir.display(),
                    legacy.display()
                ),
            ));
        }
        return Ok(Imported::Nothing);
    }
    let parent = dir.parent().unwrap_or(Path::new("."));
    // The old file beside a finished import (stopped before it was replaced) is only replaced.
    let mut imported = Imported::Removed;
    if !dir.exists() {
        // A small page cache, as the log had: the entries are read once, in order.
        let db = match super::open_redb(redb::Database::builder().set_cache_size(32 << 20), legacy, false) {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => return Ok(Imported::InUse),
            Err(e) => return Err(Error::other(format!("{}: {e}", legacy.display()))),
        };
        let fail = |e: redb::Error| Error::other(format!("{}: {e}", legacy.display()));
        let staging = dir.with_extension("import");
        if staging.exists() {
            std::fs::remove_dir_all(&staging).map_err(|e| at(&staging, e))?;
        }
        let wal = match Wal::open(&staging) {
            Ok(wal) => wal,
            Err(OpenError::Io { path, source }) => return Err(at(Path::new(&path), source)),
            Err(e) => return Err(Error::other(e.to_string())),
        };
        let staged = |e: std::io::Error| at(&staging, e);
        let txn = db.begin_read().map_err(|e| fail(e.into()))?;
        let (mut vote, mut committed, mut purged) = (None, None, None);
        if let Some(meta) = read_table(&txn, META).map_err(|e| fail(e.into()))? {
            let get = |key| -> std::io::Result<Option<Vec<u8>>> {
                Ok(meta.get(key).map_err(|e| fail(e.into()))?.map(|v| v.value().to_vec()))
            };
            (vote, committed, purged) = (get(VOTE)?, get(COMMITTED)?, get(LAST_PURGED)?);
        }
        let mut records = Vec::new();
        if let Some(vote) = &vote {
            records.push(Record::Vote(vote));
        }
        if let Some(committed) = &committed {
            records.push(Record::Committed(committed));
        }
        if let Some(id) = &purged {
            let upto = serde_json::from_slice::<LogId<NodeId>>(id).map_err(Error::other)?.index;
            records.push(Record::Purged { upto, id });
        }
        wal.write(&records).map_err(staged)?;
        if let Some(log) = read_table(&txn, LOG).map_err(|e| fail(e.into()))? {
            let mut batch: Vec<(u64, Vec<u8>)> = Vec::new();
            let mut bytes = 0;
            let flush = |batch: &mut Vec<(u64, Vec<u8>)>| -> std::io::Result<()> {
                let records: Vec<Record<'_>> =
                    batch.iter().map(|(index, stored)| Record::Entry { index: *index, stored }).collect();
                wal.write(&records).map_err(staged)?;
                batch.clear();
                Ok(())
            };
            for item in log.iter().map_err(|e| fail(e.into()))? {
                let (index, stored) = item.map_err(|e| fail(e.into()))?;
                bytes += stored.value().len();
                batch.push((index.value(), stored.value().to_vec()));
                if bytes > 4 << 20 {
                    flush(&mut batch)?;
                    bytes = 0;
                }
            }
            flush(&mut batch)?;
        }
        drop(wal);
        std::fs::rename(&staging, dir).map_err(|e| at(&staging, e))?;
        sync_dir(parent).map_err(|e| at(parent, e))?;
        imported = Imported::Done;
    }
    crate::member::write_private(legacy, TOMBSTONE).map_err(|e| at(legacy, e))?;
    Ok(imported)
}

/// What [`import_redb`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Imported {
    /// There was no log from before the WAL (or the tombstone is in place).
    Nothing,
    /// The old log is now in the WAL, and the tombstone in its place.
    Done,
    /// The old log was left beside a WAL it had been imported into: the tombstone is in its
    /// place.
    Removed,
    /// The old log is open elsewhere.
    InUse,
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>> {
        if let Some(entries) = self.recent.lock().expect("recent entries lock").get(&range) {
            return Ok(entries);
        }
        let stored = self.wal.read(range).map_err(read_err)?;
        stored.iter().map(|(_, bytes)| entry_of(bytes)).collect()
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>> {
        let last_purged_log_id = self.last_purged()?;
        let mut last = None;
        if let Some(index) = self.wal.last_index()
            && let Some((_, bytes)) = self.wal.read(index..=index).map_err(read_err)?.first()
        {
            last = Some(entry_of(bytes)?.log_id);
        }
        Ok(LogState { last_purged_log_id, last_log_id: last.or(last_purged_log_id) })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<()> {
        // A vote must be on disk before it is cast: a member that forgot it could vote twice
        // in one term.
        let json = serde_json::to_vec(vote).map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Write, e))?;
        self.write(&[Record::Vote(&json)], ErrorSubject::Vote)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>> {
        self.vote()
    }

    /// Saves the committed log id *without a write of its own*: it is kept here and written
    /// with the next write of the log (an `append`, a vote, a truncate or a purge), and is
    /// durable with it. Losing the last few in a crash is safe: openraft only uses it at start
    /// to apply entries up to it before an election, and takes the state machine's applied id
    /// when that is greater; a committed id read back is never ahead of the durable log, since
    /// it is written after the entries it names were durable (or with them). After a clean
    /// shutdown the id on disk may be older than the last one saved: harmless, as above,
    /// since the state machine's own file, flushed when it closes, has applied at least that
    /// far. Durably, it was a second fsync on every write in the Raft core's one serial
    /// section (change 1 of BENCHMARKS.md).
    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> Result<()> {
        *self.unsaved_committed.lock().expect("unsaved committed lock") = Some(committed);
        if let Some(c) = committed {
            crate::metrics::metrics().set_committed(c.index);
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>> {
        let unsaved = *self.unsaved_committed.lock().expect("unsaved committed lock");
        let committed = match unsaved {
            Some(committed) => committed,
            None => self.committed_on_disk()?,
        };
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
        let entries: Vec<_> = entries.into_iter().collect();
        if let Some(first) = entries.first() {
            self.recent.lock().expect("recent entries lock").overwriting(first.log_id.index);
        }
        // Every entry encoded into one buffer, kept from the last append.
        let mut buffer = std::mem::take(&mut *self.append_buffer.lock().expect("append buffer lock"));
        let mut stored = Vec::with_capacity(entries.len());
        let mut appended = Vec::with_capacity(entries.len());
        for entry in entries {
            let start = buffer.len();
            super::packed::encode_into(&entry, &mut buffer).map_err(write_err)?;
            let index = entry.log_id.index;
            appended.push((entry, super::packed::unpacked_len(&buffer[start..])));
            stored.push((index, start..buffer.len()));
        }
        let inline = on_the_worker(
            appended.iter().map(|(entry, _)| entry),
            buffer.len(),
            self.member,
            tokio::runtime::Handle::current().metrics().num_workers(),
        );
        let store = self.clone();
        let write = move || {
            let records: Vec<Record<'_>> = stored
                .iter()
                .map(|(index, range)| Record::Entry { index: *index, stored: &buffer[range.clone()] })
                .collect();
            store.write(&records, ErrorSubject::Logs).map(|()| buffer)
        };
        let mut buffer =
            if inline { write()? } else { tokio::task::spawn_blocking(write).await.map_err(write_err)?? };
        buffer.clear();
        // A larger one is let go rather than shrunk: a shrink may keep the block as it is
        // (mimalloc's does when it keeps half) or copy it into a new one.
        if buffer.capacity() <= APPEND_BUFFER_KEPT {
            *self.append_buffer.lock().expect("append buffer lock") = buffer;
        }
        self.recent.lock().expect("recent entries lock").appended(appended);
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<()> {
        // Forgotten before the disk changes: a reader between the two finds the entries on
        // disk (or finds them gone), never here after they are gone there.
        self.recent.lock().expect("recent entries lock").truncated(log_id.index);
        self.write(&[Record::Truncated { from: log_id.index }], ErrorSubject::Logs)
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<()> {
        self.recent.lock().expect("recent entries lock").purged(log_id.index);
        let id = serde_json::to_vec(&log_id).map_err(write_err)?;
        self.write(&[Record::Purged { upto: log_id.index, id: &id }], ErrorSubject::Logs)
    }
}

/// Appends larger than this (encoded) are always written on a blocking thread: a follower
/// catching up takes many entries at once.
const ON_THE_WORKER_BYTES: usize = 256 << 10;

/// Whether an append of `entries` (`bytes` encoded) writes and flushes on the runtime worker
/// that calls it, blocked for the fdatasync, rather than on a blocking thread while the worker
/// waits. Handing the write to a blocking thread and being woken when it is done costs two
/// thread wake-ups per append, paid by every member on every write: at one client, 10 % of a
/// 3-member cluster's CPU per write and 5–15 % of its rate (BENCHMARKS.md change 36). But a
/// worker blocked in an fsync serves nothing else meanwhile, which costs a leader under load
/// its rate (a lone member's 64-client updates: 8–15 % fewer). So the worker writes when:
/// - there are other workers to serve everyone else meanwhile (never on a runtime of one);
/// - the append is small ([`ON_THE_WORKER_BYTES`]);
/// - and each entry is either another member's (a follower's append: its Raft core waits for
///   the flush whatever thread runs it), or a proposal of this member's holding one write (no
///   other write was waiting to join it: the member is not under load).
///
/// A leader's batches of several writes, the entries of a member before it knows its id, and
/// anything large go to a blocking thread. Either way the write and its fdatasync are the
/// same, and openraft is told of the flush only after them.
fn on_the_worker<'a>(
    entries: impl IntoIterator<Item = &'a Entry<TypeConfig>>,
    bytes: usize,
    member: Option<NodeId>,
    workers: usize,
) -> bool {
    let Some(member) = member else { return false };
    workers > 1
        && bytes <= ON_THE_WORKER_BYTES
        && entries.into_iter().all(|entry| {
            entry.log_id.leader_id.node_id != member
                || match &entry.payload {
                    openraft::EntryPayload::Normal(request) => request.batch.is_empty(),
                    openraft::EntryPayload::Blank | openraft::EntryPayload::Membership(_) => true,
                }
        })
}

#[cfg(test)]
mod tests {
    use openraft::storage::RaftLogStorageExt as _;
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;

    fn entry(term: u64, index: u64) -> (Entry<TypeConfig>, usize) {
        (
            Entry {
                log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
                payload: EntryPayload::Blank,
            },
            100,
        )
    }

    /// What is held, after checking what must always be true of it: contiguous indexes, and
    /// `bytes` the sum of their sizes, within both bounds.
    fn held(recent: &Recent) -> Vec<(u64, u64)> {
        let indexes: Vec<u64> = recent.entries.iter().map(|(e, _)| e.log_id.index).collect();
        assert!(indexes.windows(2).all(|w| w[1] == w[0] + 1), "contiguous: {indexes:?}");
        assert_eq!(recent.bytes, recent.entries.iter().map(|(_, size)| size).sum::<usize>());
        assert!(recent.entries.len() <= RECENT_ENTRIES && recent.bytes <= RECENT_BYTES);
        recent.entries.iter().map(|(e, _)| (e.log_id.leader_id.term, e.log_id.index)).collect()
    }

    fn indexes(entries: Option<Vec<Entry<TypeConfig>>>) -> Option<Vec<u64>> {
        entries.map(|es| es.iter().map(|e| e.log_id.index).collect())
    }

    #[test]
    fn recent_entries_answer_only_ranges_with_both_ends_they_hold_whole() {
        let mut recent = Recent::default();
        assert_eq!(indexes(recent.get(&(0..10))), None, "empty");
        recent.appended((5..=9).map(|i| entry(1, i)).collect());
        assert_eq!(indexes(recent.get(&(5..10))), Some(vec![5, 6, 7, 8, 9]));
        assert_eq!(indexes(recent.get(&(6..=7))), Some(vec![6, 7]));
        for missing in [4..6, 9..11, 0..3, 20..30, 7..7] {
            assert_eq!(indexes(recent.get(&missing)), None, "{missing:?}");
        }
        assert_eq!(indexes(recent.get(&(8..))), None, "no end: the log may hold more");
        assert_eq!(indexes(recent.get(&(..6))), None, "no start");
        assert_eq!(indexes(recent.get(&(Bound::Excluded(5), Bound::Included(6)))), Some(vec![6]));
        assert_eq!(indexes(recent.get(&(Bound::Excluded(u64::MAX), Bound::Included(u64::MAX)))), None);
    }

    #[test]
    fn recent_entries_forget_what_is_overwritten_truncated_or_purged_and_start_over_after_a_gap() {
        let mut recent = Recent::default();
        recent.appended((1..=5).map(|i| entry(1, i)).collect());
        assert_eq!(held(&recent), [(1, 1), (1, 2), (1, 3), (1, 4), (1, 5)]);
        // An append of index 4 would overwrite 4 but leave 5 on disk: everything goes.
        recent.overwriting(4);
        assert_eq!(held(&recent), []);
        recent.appended(vec![entry(2, 4)]);
        assert_eq!(held(&recent), [(2, 4)]);
        // Appends that continue it are kept; one past the end overwrites nothing.
        recent.overwriting(5);
        recent.appended(vec![entry(2, 5), entry(2, 6)]);
        assert_eq!(held(&recent), [(2, 4), (2, 5), (2, 6)]);
        recent.truncated(6);
        assert_eq!(held(&recent), [(2, 4), (2, 5)]);
        recent.purged(4);
        assert_eq!(held(&recent), [(2, 5)]);
        // A gap (after a snapshot was installed, say): only what follows it is held.
        recent.appended(vec![entry(3, 10), entry(3, 11)]);
        assert_eq!(held(&recent), [(3, 10), (3, 11)]);
        assert_eq!(indexes(recent.get(&(5..=11))), None);
        recent.purged(20);
        assert_eq!(held(&recent), []);
    }

    #[test]
    fn recent_entries_stay_within_their_bounds_dropping_the_oldest() {
        let mut recent = Recent::default();
        let last = RECENT_ENTRIES as u64 + 9;
        for i in 0..=last {
            recent.appended(vec![entry(1, i)]);
        }
        assert_eq!(held(&recent).len(), RECENT_ENTRIES);
        assert_eq!(recent.entries.front().map(|(e, _)| e.log_id.index), Some(10), "by count");
        let big = RECENT_BYTES / 3 + 1;
        recent.appended((last + 1..=last + 3).map(|i| (entry(1, i).0, big)).collect());
        assert_eq!(held(&recent), [(1, last + 2), (1, last + 3)], "by bytes, the oldest first");
    }

    /// The committed log id has no commit of its own: the store answers it at once, the disk
    /// only once the next write of the log (an append, a vote, a truncate, a purge) has taken
    /// it, and each write takes the latest one saved.
    #[tokio::test]
    async fn the_committed_id_is_written_with_the_next_write_of_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = LogStore::open(&dir.path().join("log")).unwrap();
        let wal = log.wal.clone();
        // Another handle on the same files, without what the first keeps in memory: what the
        // records written (durably) say.
        let on_disk = async || {
            let mut disk = LogStore::on(wal.clone());
            disk.read_committed().await.unwrap()
        };
        let id = |index| Some(LogId::new(CommittedLeaderId::new(1, 1), index));
        log.blocking_append((1..=3).map(|i| entry(1, i).0)).await.unwrap();
        assert_eq!(on_disk().await, None);

        log.save_committed(id(1)).await.unwrap();
        log.save_committed(id(2)).await.unwrap();
        assert_eq!(log.read_committed().await.unwrap(), id(2), "the store answers the latest");
        assert_eq!(on_disk().await, None, "no commit of its own");
        log.blocking_append([entry(1, 4).0]).await.unwrap();
        assert_eq!(on_disk().await, id(2), "written with the append");
        assert_eq!(log.read_committed().await.unwrap(), id(2));

        log.save_committed(id(3)).await.unwrap();
        log.save_vote(&Vote::new(2, 1)).await.unwrap();
        assert_eq!(on_disk().await, id(3), "written with the vote");

        log.save_committed(id(4)).await.unwrap();
        log.truncate(LogId::new(CommittedLeaderId::new(1, 1), 5)).await.unwrap();
        assert_eq!(on_disk().await, id(4), "written with a truncate");

        log.blocking_append((5..=6).map(|i| entry(2, i).0)).await.unwrap();
        log.save_committed(id(6)).await.unwrap();
        log.purge(LogId::new(CommittedLeaderId::new(1, 1), 2)).await.unwrap();
        assert_eq!(on_disk().await, id(6), "written with a purge");

        // Nothing saved since: a write leaves the one on disk as it is.
        log.blocking_append([entry(2, 7).0]).await.unwrap();
        assert_eq!(on_disk().await, id(6));
        assert_eq!(log.read_committed().await.unwrap(), id(6));

        // And it is what the files say after a restart.
        drop(log);
        drop(wal);
        let mut log = LogStore::open(&dir.path().join("log")).unwrap();
        assert_eq!(log.read_committed().await.unwrap(), id(6));
        assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(2, 1)));
    }

    /// Which appends a member writes on its runtime's worker: another member's entries and a
    /// proposal of one write, small, with another worker to serve the rest meanwhile; never a
    /// batch of its own, a large append, on a runtime of one worker, or before it has an id.
    #[test]
    fn a_followers_append_and_a_lone_write_go_on_the_worker_a_leaders_batch_does_not() {
        use crate::raft::{Expect, Op, Request};
        let write = |name: &str| {
            Request::new(vec![Op::Put { key: format!("/o/{name}"), value: "{}".into(), expect: Expect::Any }])
        };
        let entry = |leader: NodeId, payload| Entry {
            log_id: LogId::new(CommittedLeaderId::new(3, leader), 9),
            payload,
        };
        let one = entry(1, EntryPayload::Normal(write("a")));
        let batch =
            entry(1, EntryPayload::Normal(Request { ops: Vec::new(), batch: vec![write("a"), write("b")] }));
        let blank = entry(1, EntryPayload::Blank);
        let (small, large) = (2_000, ON_THE_WORKER_BYTES + 1);

        // Member 2 follows leader 1: all of leader 1's entries, batches too.
        for e in [&one, &batch, &blank] {
            assert!(on_the_worker([e], small, Some(2), 2), "{:?}", e.payload);
        }
        assert!(on_the_worker([&one, &batch], small, Some(2), 4));
        // Member 1 leads: its lone writes (and blank entries), not its batches.
        assert!(on_the_worker([&one], small, Some(1), 2));
        assert!(on_the_worker([&blank], small, Some(1), 2));
        assert!(!on_the_worker([&batch], small, Some(1), 2));
        assert!(!on_the_worker([&one, &batch], small, Some(1), 2));
        // Never large, on a runtime of one worker, or without an id.
        assert!(!on_the_worker([&one], large, Some(2), 2));
        assert!(!on_the_worker([&one], small, Some(2), 1));
        assert!(!on_the_worker([&one], small, None, 2));
    }

    /// Appends written on the worker (a follower's, on a runtime of two) are durable as those
    /// written on a blocking thread: what the files hold after the log is dropped and opened
    /// again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn appends_written_on_the_worker_read_back_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = LogStore::open(&dir.path().join("log")).unwrap().of_member(2);
        let (entries, _): (Vec<_>, Vec<_>) = (1..=5).map(|i| entry(1, i)).unzip();
        assert!(on_the_worker(&entries[..1], 100, log.member, 2), "leader 1's entries, on member 2");
        for e in &entries {
            log.blocking_append([e.clone()]).await.unwrap();
        }
        drop(log);
        let mut log = LogStore::open(&dir.path().join("log")).unwrap();
        let read: Vec<u64> =
            log.try_get_log_entries(1..=5).await.unwrap().iter().map(|e| e.log_id.index).collect();
        assert_eq!(read, [1, 2, 3, 4, 5]);
    }

    /// Appends encode into one buffer kept from the last (not a new one each time), let go
    /// after a big one; what they wrote reads back the same from disk, and after a restart.
    #[tokio::test]
    async fn appends_reuse_one_buffer_and_write_what_reads_back() {
        use crate::raft::{Expect, Op, Request};
        let dir = tempfile::tempdir().unwrap();
        let mut log = LogStore::open(&dir.path().join("log")).unwrap();
        let put = |index: u64, size: usize| {
            let value = format!(r#"{{"metadata":{{"name":"o{index}"}},"data":"{}"}}"#, "x".repeat(size));
            let op = Op::Put { key: format!("/o/{index}"), value: value.into(), expect: Expect::Any };
            Entry {
                log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
                payload: EntryPayload::Normal(Request::new(vec![op])),
            }
        };
        let kept = |log: &LogStore| {
            let buffer = log.append_buffer.lock().unwrap();
            (buffer.as_ptr(), buffer.capacity(), buffer.len())
        };
        log.blocking_append((1..=8).map(|i| put(i, 4096))).await.unwrap();
        let (first, capacity, len) = kept(&log);
        assert!(capacity > 0 && len == 0, "kept, empty: {capacity} {len}");
        log.blocking_append((9..=16).map(|i| put(i, 4096))).await.unwrap();
        assert_eq!(kept(&log), (first, capacity, 0), "the same buffer again");
        log.blocking_append([put(17, APPEND_BUFFER_KEPT * 2)]).await.unwrap();
        assert_eq!(kept(&log).1, 0, "let go after a big append, not kept");
        log.blocking_append((18..=20).map(|i| put(i, 10))).await.unwrap();

        let written: Vec<Entry<TypeConfig>> = (1..=16)
            .map(|i| put(i, 4096))
            .chain([put(17, APPEND_BUFFER_KEPT * 2)])
            .chain((18..=20).map(|i| put(i, 10)))
            .collect();
        let mut disk = LogStore::on(log.wal.clone());
        assert_eq!(disk.try_get_log_entries(1..21).await.unwrap(), written);
        drop((log, disk));
        let mut log = LogStore::open(&dir.path().join("log")).unwrap();
        assert_eq!(log.try_get_log_entries(1..21).await.unwrap(), written);
    }

    /// Through the store, as openraft drives it: every read is what the disk alone answers.
    #[tokio::test]
    async fn the_log_reads_the_same_with_its_recent_entries_as_from_disk_alone() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = LogStore::open(&dir.path().join("log")).unwrap();
        // Another handle on the same files, without recent entries: the disk alone.
        let mut disk = LogStore::on(log.wal.clone());
        let ranges = |n: u64| (0..=n + 1).flat_map(move |a| (a..=n + 2).map(move |b| a..b));
        // Every shape of range: both ends, no end, no start, an excluded start.
        let shapes = |a: u64, b: u64| -> [(Bound<u64>, Bound<u64>); 4] {
            [
                (Bound::Included(a), Bound::Excluded(b)),
                (Bound::Included(a), Bound::Unbounded),
                (Bound::Unbounded, Bound::Included(b)),
                (Bound::Excluded(a), Bound::Included(b)),
            ]
        };
        let same = async |log: &mut LogStore, disk: &mut LogStore, what: &str| {
            for range in ranges(12).flat_map(|r| shapes(r.start, r.end)) {
                let from_log = log.try_get_log_entries(range).await.unwrap();
                let from_disk = disk.try_get_log_entries(range).await.unwrap();
                assert_eq!(from_log, from_disk, "{what}: {range:?}");
            }
        };
        log.blocking_append((1..=10).map(|i| entry(1, i).0)).await.unwrap();
        assert!(log.recent.lock().unwrap().get(&(3..6)).is_some(), "answered from memory");
        same(&mut log, &mut disk, "appended").await;
        log.truncate(LogId::new(CommittedLeaderId::new(1, 1), 6)).await.unwrap();
        same(&mut log, &mut disk, "truncated").await;
        log.blocking_append([entry(2, 6).0, entry(2, 7).0]).await.unwrap();
        same(&mut log, &mut disk, "a new term").await;
        // Overwriting 4 without truncating first (openraft truncates first): the disk keeps
        // 5..=7 of before. (That the held entries are forgotten before the commit, not after,
        // matters to a reader in between, which a sequential test cannot be.)
        log.blocking_append([entry(3, 4).0]).await.unwrap();
        same(&mut log, &mut disk, "overwritten").await;
        log.purge(LogId::new(CommittedLeaderId::new(3, 1), 3)).await.unwrap();
        same(&mut log, &mut disk, "purged").await;
        log.blocking_append([entry(3, 12).0]).await.unwrap();
        same(&mut log, &mut disk, "after a gap").await;
        let terms = |entries: Vec<Entry<TypeConfig>>| {
            entries.iter().map(|e| e.log_id.leader_id.term).collect::<Vec<_>>()
        };
        assert_eq!(terms(log.try_get_log_entries(4..5).await.unwrap()), [3]);
        assert_eq!(
            terms(log.try_get_log_entries(4..).await.unwrap()),
            [3, 1, 2, 2, 3],
            "the overwrite kept 5..=7"
        );

        // A restart replays the same log from the files.
        let before: Vec<_> = log.try_get_log_entries(0..20).await.unwrap();
        let state = log.get_log_state().await.unwrap();
        drop((log, disk));
        let mut log = LogStore::open(&dir.path().join("log")).unwrap();
        assert_eq!(log.try_get_log_entries(0..20).await.unwrap(), before);
        let again = log.get_log_state().await.unwrap();
        assert_eq!(
            (again.last_purged_log_id, again.last_log_id),
            (state.last_purged_log_id, state.last_log_id)
        );
    }
}
