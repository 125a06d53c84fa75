//! The Raft log on disk: an append-only write-ahead log ([`super::wal`]) of the entries (by
//! index), the vote, the committed id and the last purged id, as etcd keeps its WAL.
//!
//! Every `append` is one write of its records and one fdatasync before openraft is told the
//! entries are durable. Every write of the log (appends, votes, truncations, purges) runs on
//! the log's one writer thread ([`Writer`]), in the order submitted: an `append` returns once
//! its entries are submitted (and readable), and its callback reports the flush; the other
//! writes return once durable. A follower's Raft core waits for each append's flush before its
//! next command; a leader's does not (our patch of openraft, `vendor/openraft`): it sends the
//! entries to the followers while they are written here, and counts its own copy once the
//! flush is reported. Concurrent writes are put into one entry before they reach Raft (group
//! commit, `node::batch_writes`), so one fsync covers them all (BENCHMARKS.md). The committed log id is saved without a write of its own: it goes in
//! the next write the log makes anyway (see [`LogStore::save_committed`]), so that an entry
//! costs one write and one fsync, not two of either.
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
use redb::{ReadableTable, TableDefinition};
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

/// The durable Raft log. Cheap to clone: clones share the files, the writer and [`Recent`].
#[derive(Clone)]
pub struct LogStore {
    wal: Arc<Wal>,
    writer: Writer,
    /// The index up to which every entry of the log is on disk as the log holds it, moved by
    /// the writer thread as it writes: the state machine applies an entry only once it is
    /// ([`LogStore::written`]).
    written: Arc<tokio::sync::watch::Sender<u64>>,
    recent: Arc<Mutex<Recent>>,
    /// The committed log id openraft saved last, while it is not yet written: the next write
    /// transaction of the log takes it ([`LogStore::save_committed`]).
    unsaved_committed: Arc<Mutex<Option<Option<LogId<NodeId>>>>>,
}

/// A write of the log, run on the writer thread.
type Job = Box<dyn FnOnce() + Send>;

/// The log's one writer: a thread that runs the writes of the log one at a time, in the order
/// they were submitted, so that a write submitted before another is on disk before it (an
/// append before the truncation that follows it, say), and its fdatasync (a millisecond or
/// more) never stops a runtime worker. The thread ends when the last handle is dropped.
#[derive(Clone)]
struct Writer {
    jobs: std::sync::mpsc::Sender<Job>,
}

impl Writer {
    fn start() -> std::io::Result<Self> {
        let (jobs, queued) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new().name("raft-log-writer".into()).spawn(move || {
            for job in queued {
                job();
            }
        })?;
        Ok(Self { jobs })
    }

    /// Queues `job` behind every write submitted before it.
    fn submit(&self, job: impl FnOnce() + Send + 'static) -> Result<()> {
        self.jobs.send(Box::new(job)).map_err(|_| {
            write_err(std::io::Error::other(
                "the Raft log's writer thread has stopped (an earlier write panicked)",
            ))
        })
    }
}

/// The entries appended last, as they were appended. Each entry is read back soon after it is
/// written: by replication once per follower, and to apply it; a clone from here (its objects
/// shared, not copied: [`super::Op::Put`]) costs far less than reading, unpacking and parsing
/// it again (3 % of the leader's CPU under load,
/// BENCHMARKS.md change 7). A mirror of a stretch of the log: every index it holds has in the
/// log the entry it holds, on disk or in the one append being written. It takes an append's
/// entries when the append is submitted, before its write, so that replication can send them
/// to the followers while this member flushes them (change 19); it forgets, before the disk
/// changes, what truncate and purge remove and anything an append would overwrite; it starts
/// over when an append does not continue it; and it answers only a range with both ends given
/// that it holds whole (anything else is read from disk). Bounded by [`RECENT_ENTRIES`] and
/// [`RECENT_BYTES`], but it never forgets an entry not yet written: a reader must find those
/// here.
#[derive(Debug, Default)]
struct Recent {
    /// Contiguous indexes, oldest first, each with its size as encoded (unpacked).
    entries: VecDeque<(Entry<TypeConfig>, usize)>,
    bytes: usize,
    /// The index of the first entry held that is not yet written, if any (those after it are
    /// not written either: appends are written in order).
    unwritten: Option<u64>,
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

    /// `appended` (in index order, contiguous) is submitted to the log: it is written next.
    fn appended(&mut self, appended: Vec<(Entry<TypeConfig>, usize)>) {
        let Some(first) = appended.first().map(|(e, _)| e.log_id.index) else { return };
        // An append that does not continue what is held cannot be mirrored: start over.
        if self.next_index().is_some_and(|next| next != first) {
            self.clear();
        }
        self.unwritten.get_or_insert(first);
        for (entry, size) in appended {
            debug_assert!(self.next_index().is_none_or(|next| next == entry.log_id.index));
            self.bytes += size;
            self.entries.push_back((entry, size));
        }
        self.evict();
    }

    /// The append whose last entry is `last` is written: if that entry is still the one held
    /// at its index (not truncated and appended again since), it and those before it are.
    fn written(&mut self, last: &LogId<NodeId>) {
        let Some(first) = self.unwritten else { return };
        let Some(oldest) = self.entries.front().map(|(e, _)| e.log_id.index) else { return };
        let held = usize::try_from(last.index.wrapping_sub(oldest)).ok().and_then(|at| self.entries.get(at));
        if last.index >= first && held.is_some_and(|(e, _)| e.log_id == *last) {
            self.unwritten =
                Some(last.index + 1).filter(|&next| self.next_index().is_some_and(|end| next < end));
            self.evict();
        }
    }

    /// Forgets the oldest entries past the bounds, never one not yet written.
    fn evict(&mut self) {
        while self.entries.len() > RECENT_ENTRIES || self.bytes > RECENT_BYTES {
            let written =
                self.entries.front().is_some_and(|(e, _)| self.unwritten.is_none_or(|u| e.log_id.index < u));
            if !written {
                break;
            }
            let Some((_, size)) = self.entries.pop_front() else { break };
            self.bytes -= size;
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
        self.unwritten = None;
    }

    /// The entries from index `from` on are gone from the log.
    fn truncated(&mut self, from: u64) {
        while self.entries.back().is_some_and(|(e, _)| e.log_id.index >= from) {
            let Some((_, size)) = self.entries.pop_back() else { break };
            self.bytes -= size;
        }
        if self.unwritten.is_some_and(|u| self.next_index().is_none_or(|end| u >= end)) {
            self.unwritten = None;
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
        Self::on(Arc::new(wal)).map_err(|source| OpenError::Io { path: dir.display().to_string(), source })
    }

    /// A store on `wal`, with a writer of its own and nothing in memory yet.
    fn on(wal: Arc<Wal>) -> std::io::Result<Self> {
        let written = Arc::new(tokio::sync::watch::Sender::new(wal.last_index().unwrap_or(0)));
        Ok(Self {
            wal,
            writer: Writer::start()?,
            written,
            recent: Arc::default(),
            unsaved_committed: Arc::default(),
        })
    }

    /// The index up to which every entry of the log is on disk. A leader goes on before its
    /// own write of its entries is done, and may count them committed once a quorum of the
    /// others has them: the state machine waits on this before it applies them, so that it
    /// never leads the log on disk (BENCHMARKS.md change 19).
    pub fn written(&self) -> tokio::sync::watch::Receiver<u64> {
        self.written.subscribe()
    }

    /// Writes `records` (made on the writer thread by `records`) durably, after every write
    /// submitted before; returns once they are on disk.
    async fn write_in_order(
        &self,
        subject: ErrorSubject<NodeId>,
        records: impl FnOnce(&dyn Fn(&[Record<'_>]) -> Result<()>) -> Result<()> + Send + 'static,
    ) -> Result<()> {
        let (done, written) = tokio::sync::oneshot::channel();
        let store = self.clone();
        self.writer.submit(move || {
            let written = records(&|r| store.write(r, subject.clone()));
            // Its handle on the files let go before the caller is told: a store reopened then
            // must not find them in use.
            drop(store);
            let _ = done.send(written);
        })?;
        written
            .await
            .map_err(|_| write_err(std::io::Error::other("the Raft log's writer thread has stopped")))?
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
        let db = match redb::Database::builder().set_cache_size(32 << 20).open(legacy) {
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
        self.write_in_order(ErrorSubject::Vote, move |write| write(&[Record::Vote(&json)])).await
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
        let last = entries.last().map(|e| e.log_id);
        if let Some(first) = entries.first() {
            self.recent.lock().expect("recent entries lock").overwriting(first.log_id.index);
        }
        let mut stored = Vec::with_capacity(entries.len());
        let mut appended = Vec::with_capacity(entries.len());
        for entry in entries {
            let bytes = super::packed::encode(&entry).map_err(write_err)?;
            let index = entry.log_id.index;
            appended.push((entry, super::packed::unpacked_len(&bytes)));
            stored.push((index, bytes));
        }
        // Readable from now on, before they are durable: the leader's replication sends them
        // while they are written here (openraft counts this member's copy only once the
        // callback says it is flushed). Whatever the log writes next is written after them.
        self.recent.lock().expect("recent entries lock").appended(appended);
        // The write and its fdatasync run on the writer thread, in order; the append returns
        // once they are submitted, and the callback says when they are done.
        let store = self.clone();
        self.writer.submit(move || {
            let records: Vec<Record<'_>> =
                stored.iter().map(|(index, bytes)| Record::Entry { index: *index, stored: bytes }).collect();
            let written = store.write(&records, ErrorSubject::Logs);
            if let (Ok(()), Some(last)) = (&written, &last) {
                store.recent.lock().expect("recent entries lock").written(last);
                store.written.send_replace(last.index);
            }
            drop(store);
            callback.log_io_completed(written.map_err(std::io::Error::other));
        })
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<()> {
        // Forgotten before the disk changes: a reader between the two finds the entries on
        // disk (or finds them gone), never here after they are gone there.
        self.recent.lock().expect("recent entries lock").truncated(log_id.index);
        let from = log_id.index;
        let written = self.written.clone();
        self.write_in_order(ErrorSubject::Logs, move |write| {
            write(&[Record::Truncated { from }])?;
            written.send_modify(|w| *w = (*w).min(from.saturating_sub(1)));
            Ok(())
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<()> {
        self.recent.lock().expect("recent entries lock").purged(log_id.index);
        let id = serde_json::to_vec(&log_id).map_err(write_err)?;
        let upto = log_id.index;
        self.write_in_order(ErrorSubject::Logs, move |write| write(&[Record::Purged { upto, id: &id }])).await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

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
    /// `bytes` the sum of their sizes, within both bounds unless what is held is all unwritten.
    fn held(recent: &Recent) -> Vec<(u64, u64)> {
        let indexes: Vec<u64> = recent.entries.iter().map(|(e, _)| e.log_id.index).collect();
        assert!(indexes.windows(2).all(|w| w[1] == w[0] + 1), "contiguous: {indexes:?}");
        assert_eq!(recent.bytes, recent.entries.iter().map(|(_, size)| size).sum::<usize>());
        let all_unwritten = recent.unwritten.is_some() && recent.unwritten == indexes.first().copied();
        assert!(recent.entries.len() <= RECENT_ENTRIES && recent.bytes <= RECENT_BYTES || all_unwritten);
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
    fn recent_entries_stay_within_their_bounds_dropping_the_oldest_written() {
        let mut recent = Recent::default();
        let last = RECENT_ENTRIES as u64 + 9;
        for i in 0..=last {
            recent.appended(vec![entry(1, i)]);
            recent.written(&entry(1, i).0.log_id);
        }
        assert_eq!(held(&recent).len(), RECENT_ENTRIES);
        assert_eq!(recent.entries.front().map(|(e, _)| e.log_id.index), Some(10), "by count");
        let big = RECENT_BYTES / 3 + 1;
        recent.appended((last + 1..=last + 3).map(|i| (entry(1, i).0, big)).collect());
        // Not written yet: kept past the bounds (a reader finds them nowhere else), the
        // written ones before them dropped.
        let unwritten = [(1, last + 1), (1, last + 2), (1, last + 3)];
        assert_eq!(held(&recent), unwritten);
        assert!(recent.bytes > RECENT_BYTES);
        // Written: dropped by bytes, the oldest first.
        recent.written(&entry(1, last + 3).0.log_id);
        assert_eq!(held(&recent), [(1, last + 2), (1, last + 3)]);
        assert_eq!(recent.unwritten, None);
    }

    #[test]
    fn recent_entries_count_as_written_only_what_a_write_of_theirs_wrote() {
        let mut recent = Recent::default();
        recent.appended(vec![entry(1, 1), entry(1, 2)]);
        recent.appended(vec![entry(1, 3)]);
        assert_eq!(recent.unwritten, Some(1));
        recent.written(&entry(1, 2).0.log_id);
        assert_eq!(recent.unwritten, Some(3), "the first append's entries, not the second's");
        // Index 3 truncated and appended again by another term: the write of the first entry
        // at 3 says nothing of the second.
        recent.truncated(3);
        assert_eq!(recent.unwritten, None);
        recent.appended(vec![entry(2, 3)]);
        assert_eq!(recent.unwritten, Some(3));
        recent.written(&entry(1, 3).0.log_id);
        assert_eq!(recent.unwritten, Some(3));
        recent.written(&entry(2, 3).0.log_id);
        assert_eq!(recent.unwritten, None);
        // Starting over forgets what was unwritten with what was held.
        recent.appended(vec![entry(2, 4)]);
        recent.overwriting(2);
        assert_eq!((held(&recent), recent.unwritten), (vec![], None));
    }

    /// The state machine applies an entry only once the log has it on disk: a leader counts
    /// an entry committed when a quorum of the others has it, maybe before its own write.
    #[tokio::test]
    async fn an_apply_waits_until_its_entries_are_written() {
        use openraft::storage::RaftStateMachine as _;
        let dir = tempfile::tempdir().unwrap();
        let mut log = LogStore::open(&dir.path().join("log")).unwrap();
        let mut sm =
            super::super::StateMachine::open(&dir.path().join("sm.redb")).unwrap().after_log(log.written());
        log.blocking_append([entry(1, 1).0]).await.unwrap();
        sm.apply([entry(1, 1).0]).await.unwrap();
        let (release, held) = std::sync::mpsc::channel::<()>();
        log.writer.submit(move || held.recv().unwrap()).unwrap();
        let appending = tokio::spawn({
            let mut log = log.clone();
            async move { log.blocking_append((2..=3).map(|i| entry(1, i).0)).await }
        });
        let applying = tokio::spawn({
            let mut sm = sm.clone();
            async move { sm.apply((2..=3).map(|i| entry(1, i).0)).await.map(|r| r.len()) }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!applying.is_finished(), "waits for the write");
        assert_eq!(sm.applied_state().await.unwrap().0.map(|id| id.index), Some(1));
        release.send(()).unwrap();
        appending.await.unwrap().unwrap();
        assert_eq!(applying.await.unwrap().unwrap(), 2);
        assert_eq!(sm.applied_state().await.unwrap().0.map(|id| id.index), Some(3));
        // A truncation moves it back: what is gone is not on disk.
        log.truncate(LogId::new(CommittedLeaderId::new(1, 1), 3)).await.unwrap();
        assert_eq!(*log.written().borrow(), 2);
    }

    /// An append returns once submitted: its entries are readable at once, before they are on
    /// disk, and its callback comes with the write. Every write of the log lands in the order
    /// submitted: a truncation submitted after an append not yet written removes what the
    /// append wrote.
    #[tokio::test]
    async fn an_append_is_readable_before_it_is_written_and_the_log_writes_in_the_order_submitted() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = LogStore::open(&dir.path().join("log")).unwrap();
        let mut disk = LogStore::on(log.wal.clone()).unwrap();
        log.blocking_append((1..=2).map(|i| entry(1, i).0)).await.unwrap();
        // Hold the writer thread.
        let (release, held) = std::sync::mpsc::channel::<()>();
        log.writer.submit(move || held.recv().unwrap()).unwrap();
        let appending = tokio::spawn({
            let mut log = log.clone();
            async move { log.blocking_append((3..=5).map(|i| entry(1, i).0)).await }
        });
        let readable = async |log: &mut LogStore| loop {
            if log.recent.lock().unwrap().next_index() == Some(6) {
                return log.try_get_log_entries(1..6).await.unwrap();
            }
            tokio::task::yield_now().await;
        };
        let read = tokio::time::timeout(Duration::from_secs(10), readable(&mut log))
            .await
            .expect("readable at once");
        assert_eq!(read.iter().map(|e| e.log_id.index).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
        assert_eq!(disk.try_get_log_entries(1..6).await.unwrap().len(), 2, "not on disk yet");
        assert!(!appending.is_finished(), "its callback waits for the write");
        let truncating = tokio::spawn({
            let mut log = log.clone();
            async move { log.truncate(LogId::new(CommittedLeaderId::new(1, 1), 4)).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!truncating.is_finished(), "behind the append");
        release.send(()).unwrap();
        appending.await.unwrap().unwrap();
        truncating.await.unwrap().unwrap();
        let on_disk = disk.try_get_log_entries(1..6).await.unwrap();
        assert_eq!(
            on_disk.iter().map(|e| e.log_id.index).collect::<Vec<_>>(),
            [1, 2, 3],
            "the append, then the truncation"
        );
        drop((log, disk));
        let mut log = LogStore::open(&dir.path().join("log")).unwrap();
        assert_eq!(log.get_log_state().await.unwrap().last_log_id.map(|id| id.index), Some(3));
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
            let mut disk = LogStore::on(wal.clone()).unwrap();
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

    /// Through the store, as openraft drives it: every read is what the disk alone answers.
    #[tokio::test]
    async fn the_log_reads_the_same_with_its_recent_entries_as_from_disk_alone() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = LogStore::open(&dir.path().join("log")).unwrap();
        // Another handle on the same files, without recent entries: the disk alone.
        let mut disk = LogStore::on(log.wal.clone()).unwrap();
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
