//! The replicated state machine on disk: every key's current value with its revisions, in a
//! redb database of its own.
//!
//! Applying writes into a redb transaction committed *without* fsync, held open for the next
//! applies until a bound or a read commits it ([`Db`]): the applied state and `last_applied`
//! change together, so after a crash the state machine is consistent at some earlier index
//! and openraft re-applies the rest from the (fsync'd) log.
//! Before a snapshot is built, which lets openraft purge the log, the state machine is made
//! durable, so nothing purged is ever needed again. One apply every five seconds commits
//! durably too: redb frees a page of its last durable commit that a transaction replaced only
//! at the next durable commit, so without it the file grows by a page for every one rewritten
//! since.
//!
//! redb 4 keeps the pages that commits without fsync change in its cache (at most half of it;
//! past that it writes them to the file without fsync) until the next durable commit, which
//! writes and flushes them all while applies wait for it. Among 100,000 objects the pause grows
//! with the interval less than the interval does — a page rewritten many times between two
//! durable commits is written once — so fewer durable commits hold applies for less time in
//! all: under 64 clients' updates on 3 members, one a second held them 0.9–1.7 s in 19 s
//! (32–128 ms each), one every five seconds 0.7–0.9 s (64–256 ms each), with 3–8 % more
//! updates a second and less CPU per update. Committing durably *more* often (every 100 ms
//! once 512 keys had changed, or every 250 ms once 1,024 had) cost one member up to a tenth of
//! its updates (BENCHMARKS.md, changes 34 and 35). The price of the longer interval is the
//! log a member applies again after a crash (up to five seconds of writes: 0.2 s more to
//! serve its first read after a `kill -9` under 9,000 creates a second) and a longer pause,
//! less often.

use std::fmt::Debug;
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, RaftSnapshotBuilder, SnapshotMeta, StorageError,
    StoredMembership,
};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::history::{Change, Changes, Compacted, Record, Retention, Window};
use super::labels::{self, LabelIndex, LabelNeeds, labels_of};
use super::snapshot;
use super::{NodeId, Outcome, Request, Response, Stored, TypeConfig, io_err, read_table};

/// Key → create revision, mod revision (8 bytes each, big-endian) and the value, packed
/// ([`super::packed`]).
pub(super) const OBJECTS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("objects");
pub(super) const META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("meta");
/// Revision → its [`Record`] (see [`super::history`]), as [`super::packed::encode`] stores it
/// (CBOR, packed; JSON in records from before).
pub(super) const HISTORY: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("history");
const LAST_APPLIED: &str = "last_applied";
/// The revision of the last write applied: every write (a request, or one of the requests a
/// log entry carries together) takes the next one. Stores written before entries carried
/// several requests have none: their revision is the last applied index, as it was then.
const REVISION: &str = "revision";
/// Every history record at or below this revision has been dropped.
const HISTORY_COMPACTED: &str = "history_compacted";
const MEMBERSHIP: &str = "membership";
const SNAPSHOT: &str = "snapshot";

type Result<T> = std::result::Result<T, StorageError<NodeId>>;
type Membership = StoredMembership<NodeId, super::Member>;

/// The durable state machine. Cheap to clone: clones share the database.
#[derive(Clone)]
pub struct StateMachine {
    db: Arc<Handle>,
    /// The last applied revision, announced after every apply commits (watchers wait on it).
    applied: Arc<tokio::sync::watch::Sender<u64>>,
    /// The database's file, for its size.
    path: Arc<std::path::PathBuf>,
    /// The labels of the current objects, tagged with the revision they describe: changed
    /// after each apply is committed or held, and used by a read only at that same revision.
    labels: Arc<std::sync::RwLock<LabelIndex>>,
    /// The latest changes, for watchers.
    window: Arc<Window>,
    /// Held while a snapshot file is written (built or installed).
    snapshot_files: Arc<std::sync::Mutex<()>>,
    /// When an apply last committed durably.
    last_durable: Arc<std::sync::Mutex<std::time::Instant>>,
}

/// How many applies one write transaction holds before it is committed (see [`Db`]).
const HOLD_APPLIES: usize = 64;
/// How much history (packed) the applies one write transaction holds may write before it is
/// committed: the transaction's pages are in memory until then.
const HOLD_BYTES: usize = 1 << 20;

/// The database, and the applies held in a write transaction not committed yet.
///
/// A commit costs the same whether it carries one apply or many (its copied pages are written
/// to the file, their checksums computed, the pages it freed recorded): at one write at a
/// time, the commit of each apply was the largest single cost of the members' CPU
/// (BENCHMARKS.md, change 14). So an apply leaves its transaction open for the next ones, up
/// to [`HOLD_APPLIES`] or [`HOLD_BYTES`] of history, [`HOLD_AT_MOST`] (see [`Handle`]), or
/// until the durable commit of every five seconds. Nothing a read sees changes: every read
/// transaction first commits the applies held (any held then were applied before the read
/// began), so a read after a write is acknowledged sees it, as before. Nothing a crash keeps changes either: commits without fsync are not
/// kept by one anyway, and openraft applies again, from the log, what the last durable commit
/// does not hold.
///
/// Every write transaction is this one ([`Db::write`]): redb allows one at a time. A commit
/// that fails, or an open transaction dropped with applies in it, loses applies openraft
/// counts as done: from then on every read and write fails ([`Db::lost`]), and openraft stops
/// the member at its next apply; started again, it applies them again from the log.
struct Db {
    unsaved: std::sync::Mutex<Unsaved>,
    /// True while `unsaved` holds a transaction (a read commits it first).
    held: std::sync::atomic::AtomicBool,
    /// Why applies counted as done were lost, once they have been.
    lost: std::sync::OnceLock<String>,
    /// [`HOLD_AT_MOST`] in milliseconds (tests hold longer).
    hold_at_most: std::sync::atomic::AtomicU64,
    /// Last: dropped after the transaction held (its own drop waits for a write transaction).
    database: Database,
}

/// The write transaction the applies since the last commit were made in.
#[derive(Default)]
struct Unsaved {
    txn: Option<redb::WriteTransaction>,
    /// Applies in it, and the history they wrote (packed).
    applies: usize,
    history_bytes: usize,
    /// When it was first held.
    since: Option<std::time::Instant>,
}

/// How long applies stay held when nothing else commits them (no read, no bound reached):
/// a thread commits them then, as etcd's backend commits its batch every 100 ms, so that the
/// file and the backend's metrics follow the writes when they stop.
const HOLD_AT_MOST: std::time::Duration = std::time::Duration::from_millis(100);

/// The database, with the thread that commits applies held longer than [`HOLD_AT_MOST`]:
/// dropped (with the last clone of the state machine), it stops and joins the thread first,
/// so that the database is closed when the drop returns.
struct Handle {
    db: Arc<Db>,
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Handle {
    fn start(db: Db) -> std::io::Result<Self> {
        let db = Arc::new(db);
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let held = db.clone();
        let thread = std::thread::Builder::new().name("state-commit".into()).spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(HOLD_AT_MOST / 2)
            {
                held.commit_held_too_long();
            }
        })?;
        Ok(Self { db, stop: Some(stop), thread: Some(thread) })
    }
}

impl std::ops::Deref for Handle {
    type Target = Db;

    fn deref(&self) -> &Db {
        &self.db
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A write transaction, the only one while this lives: the one applies held, or a new one.
/// Dropped without [`Writing::commit`] or [`Writing::hold`], it is rolled back, and if it held
/// applies the database is [`Db::lost`].
struct Writing<'a> {
    db: &'a Db,
    unsaved: std::sync::MutexGuard<'a, Unsaved>,
    txn: Option<redb::WriteTransaction>,
}

impl Db {
    fn new(database: Database) -> Self {
        Self {
            unsaved: Default::default(),
            held: Default::default(),
            lost: Default::default(),
            hold_at_most: (HOLD_AT_MOST.as_millis() as u64).into(),
            database,
        }
    }

    /// Fails once applies counted as done have been lost.
    fn check(&self, verb: ErrorVerb) -> Result<()> {
        match self.lost.get() {
            Some(why) => {
                Err(sm_err(verb, std::io::Error::other(format!("applies counted as done were lost: {why}"))))
            }
            None => Ok(()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Unsaved> {
        self.unsaved.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A read transaction that sees every apply made before it was asked for.
    fn read(&self) -> Result<redb::ReadTransaction> {
        if self.held.load(std::sync::atomic::Ordering::Acquire) {
            let mut unsaved = self.lock();
            if let Some(txn) = unsaved.txn.take() {
                Writing { db: self, unsaved, txn: Some(txn) }.commit(Durability::None)?;
            }
        }
        self.check(ErrorVerb::Read)?;
        self.database.begin_read().map_err(read_err)
    }

    /// Makes every commit durable, by a durable commit of nothing, without the lock: only for
    /// the thread that applies (no transaction is held while it runs this, and only it holds
    /// one), so that reads go on during the fsync. Anyone else waits on redb's write lock.
    fn make_durable(&self) -> Result<()> {
        let txn = self.database.begin_write().map_err(write_err)?;
        Alone { txn }.commit(Durability::Immediate)
    }

    /// Commits the applies held if they were first held at least [`Db::hold_at_most`] ago (a
    /// failure sets [`Db::lost`], as any commit of applies does).
    fn commit_held_too_long(&self) {
        if !self.held.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        let mut unsaved = self.lock();
        let at_most =
            std::time::Duration::from_millis(self.hold_at_most.load(std::sync::atomic::Ordering::Relaxed));
        if unsaved.since.is_some_and(|since| since.elapsed() >= at_most)
            && let Some(txn) = unsaved.txn.take()
            && let Err(e) = (Writing { db: self, unsaved, txn: Some(txn) }.commit(Durability::None))
        {
            tracing::error!(error = %e, "the commit of the applies held failed");
        }
    }

    /// A write transaction of its own ([`Alone`]): the applies held are committed first, so
    /// that its failure rolls back none of them.
    fn write_alone(&self) -> Result<Alone> {
        let mut writing = self.write()?;
        if writing.unsaved.applies > 0 {
            writing.commit_txn(Durability::None)?;
            // Begun under the lock: no apply can hold a transaction from here on.
            writing.txn = Some(self.database.begin_write().map_err(write_err)?);
        }
        let txn = writing.txn.take().expect("a transaction until committed or held");
        Ok(Alone { txn })
    }

    /// The write transaction (the one applies held, or a new one).
    fn write(&self) -> Result<Writing<'_>> {
        let mut unsaved = self.lock();
        self.check(ErrorVerb::Write)?;
        let txn = match unsaved.txn.take() {
            Some(txn) => txn,
            None => self.database.begin_write().map_err(write_err)?,
        };
        Ok(Writing { db: self, unsaved, txn: Some(txn) })
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        // Committed (durably) rather than rolled back: a member that stops applies nothing
        // again when it starts. redb's own drop begins a write transaction: this one must be
        // gone first.
        let unsaved = self.unsaved.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(txn) = unsaved.txn.take()
            && let Err(e) = txn.commit()
        {
            tracing::warn!(error = %e, "the applies held at shutdown were not committed: they are applied again from the log");
        }
    }
}

impl Writing<'_> {
    fn txn(&self) -> &redb::WriteTransaction {
        self.txn.as_ref().expect("a transaction until committed or held")
    }

    /// Counts one apply made in the transaction.
    fn applied(&mut self, history_bytes: usize) {
        self.unsaved.applies += 1;
        self.wrote(history_bytes);
    }

    /// Counts `history_bytes` written in the transaction.
    fn wrote(&mut self, history_bytes: usize) {
        self.unsaved.history_bytes = self.unsaved.history_bytes.saturating_add(history_bytes);
    }

    /// True when the transaction holds as many applies as it may.
    fn full(&self) -> bool {
        self.unsaved.applies >= HOLD_APPLIES || self.unsaved.history_bytes >= HOLD_BYTES
    }

    /// Leaves the transaction open for the next applies.
    fn hold(mut self) {
        self.unsaved.since.get_or_insert_with(std::time::Instant::now);
        self.unsaved.txn = self.txn.take();
        self.db.held.store(self.unsaved.txn.is_some(), std::sync::atomic::Ordering::Release);
    }

    /// Commits the transaction, and with it every apply it holds.
    fn commit(mut self, durability: Durability) -> Result<()> {
        self.commit_txn(durability)
    }

    fn commit_txn(&mut self, durability: Durability) -> Result<()> {
        let mut txn = self.txn.take().expect("a transaction until committed or held");
        let start = std::time::Instant::now();
        // Durability is refused only for persistent savepoints and shared files: neither here.
        let result = txn
            .set_durability(durability)
            .map_err(redb::Error::from)
            .and_then(|()| txn.commit().map_err(redb::Error::from));
        self.unsaved.history_bytes = 0;
        let applies = std::mem::take(&mut self.unsaved.applies);
        self.unsaved.since = None;
        // Lost before not held: a read that finds nothing held then finds it lost.
        if let Err(e) = &result
            && applies > 0
        {
            let _ = self.db.lost.set(format!("a commit of {applies} applies failed: {e}"));
        }
        self.db.held.store(false, std::sync::atomic::Ordering::Release);
        result.map_err(write_err)?;
        crate::metrics::metrics().backend_committed(start);
        Ok(())
    }
}

/// A write transaction without applies in it, worked on outside the lock, so that reads do
/// not wait for it (for a compaction's scan, a snapshot's install, an fsync): nothing is held
/// while it lives, since an apply waits for it in redb's `begin_write`, under the lock, before
/// it can hold anything. Dropped without [`Alone::commit`], it is rolled back, losing nothing.
struct Alone {
    txn: redb::WriteTransaction,
}

impl Alone {
    fn txn(&self) -> &redb::WriteTransaction {
        &self.txn
    }

    fn commit(mut self, durability: Durability) -> Result<()> {
        self.txn.set_durability(durability).map_err(write_err)?;
        let start = std::time::Instant::now();
        self.txn.commit().map_err(write_err)?;
        crate::metrics::metrics().backend_committed(start);
        Ok(())
    }
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        if self.txn.take().is_some() {
            let applies = std::mem::take(&mut self.unsaved.applies);
            self.unsaved.history_bytes = 0;
            self.unsaved.since = None;
            // Lost before not held (see `commit_txn`).
            if applies > 0 {
                let _ = self.db.lost.set(format!("a write failed part way, rolling back {applies} applies"));
            }
            self.db.held.store(false, std::sync::atomic::Ordering::Release);
        }
    }
}

/// Most history records one transaction of a compaction drops
/// ([`StateMachine::compact_history`]).
const COMPACT_AT_ONCE: usize = 1_000;

/// How often an apply commits durably (see the module's doc).
const DURABLE_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// What a scan visits: the keys under `prefix` after `after` (key order), as the state was at
/// revision `at` (`None`: now).
#[derive(Clone, Copy, Debug)]
pub struct Scan<'a> {
    /// Keys start with it.
    pub prefix: &'a str,
    /// Only keys after this one.
    pub after: Option<&'a str>,
    /// The revision of the state to read (`None`: the current one).
    pub at: Option<u64>,
    /// Keys whose labels cannot meet these may be left out: the caller still checks its
    /// selector on every key it is given.
    pub labels: &'a LabelNeeds,
}

/// A scan's visitor: gets each key and its value in key order, and says whether to go on.
pub type Visit<'a> = dyn FnMut(String, Stored) -> bool + 'a;

impl Debug for StateMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateMachine").finish_non_exhaustive()
    }
}

/// A snapshot as stores before snapshot files kept it (under the `snapshot` meta key): moved
/// into a file when such a store opens.
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, super::Member>,
    /// Base64 (older stores wrote a JSON array of numbers, 3–4 bytes per byte: still read).
    #[serde(with = "snapshot_bytes")]
    data: Vec<u8>,
}

/// [`StoredSnapshot::data`] as base64, read back from base64 or from an array of numbers.
mod snapshot_bytes {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Text(String),
            Numbers(Vec<u8>),
        }
        match Either::deserialize(d)? {
            Either::Text(t) => {
                base64::engine::general_purpose::STANDARD.decode(t).map_err(serde::de::Error::custom)
            }
            Either::Numbers(b) => Ok(b),
        }
    }
}

/// redb's page cache for the state machine, with the pages changed since the last durable
/// commit in it (redb's default is 1 GiB per database): reads that miss it go to the
/// operating system's page cache.
const STATE_CACHE_BYTES: usize = 256 << 20;

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
    let mut out = Vec::with_capacity(16 + super::packed::packed_capacity(s.value.len()));
    out.extend_from_slice(&s.create_revision.to_be_bytes());
    out.extend_from_slice(&s.mod_revision.to_be_bytes());
    super::packed::pack_into(s.value.as_bytes(), &mut out);
    out
}

/// A history record as stored ([`super::packed::encode`]; records from before, JSON packed or
/// not, read the same).
fn history_record(stored: &[u8]) -> Result<Record> {
    super::packed::decode(stored).map_err(|e| sm_err(ErrorVerb::Read, e))
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
        value: String::from_utf8(
            super::packed::unpack(v).map_err(|e| sm_err(ErrorVerb::Read, e))?.into_owned(),
        )
        .map_err(|_| corrupt())?,
    })
}

impl StateMachine {
    /// Opens (or creates) the state machine at `path`.
    pub fn open(path: &Path) -> std::result::Result<Self, redb::DatabaseError> {
        let db = super::open_redb(Database::builder().set_cache_size(STATE_CACHE_BYTES), path, true)?;
        let sm = Self {
            db: Arc::new(Handle::start(Db::new(db)).map_err(|e| redb::DatabaseError::Storage(e.into()))?),
            applied: Arc::new(tokio::sync::watch::Sender::new(0)),
            path: Arc::new(path.to_owned()),
            labels: Arc::default(),
            window: Arc::default(),
            snapshot_files: Arc::default(),
            last_durable: Arc::new(std::sync::Mutex::new(std::time::Instant::now())),
        };
        sm.move_stored_snapshot().and_then(|()| sm.index_labels()).map_err(|e| {
            redb::DatabaseError::Storage(redb::StorageError::Io(std::io::Error::other(e.to_string())))
        })?;
        let applied = sm.applied_revision().unwrap_or(0);
        sm.window.reset(applied);
        sm.applied.send_replace(applied);
        let index = sm.meta::<LogId<NodeId>>(LAST_APPLIED).ok().flatten().map_or(0, |l| l.index);
        crate::metrics::metrics().set_applied(index);
        Ok(sm)
    }

    /// The size of the database's file in bytes (0 if it cannot be read).
    pub fn size_on_disk(&self) -> u64 {
        std::fs::metadata(self.path.as_ref()).map_or(0, |m| m.len())
    }

    /// The revision of the last applied write.
    pub fn applied_revision(&self) -> Result<u64> {
        revision_in(&self.db.read()?)
    }

    /// A receiver that sees the last applied revision change.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.applied.subscribe()
    }

    /// The changes after revision `after`, at most `max` revisions of them. Fails with
    /// [`Compacted`] when the history no longer reaches back to `after`.
    pub fn changes_after(&self, after: u64, max: usize) -> Result<std::result::Result<Changes, Compacted>> {
        self.db.check(ErrorVerb::Read)?;
        if let Some(recent) = self.window.after(after, max) {
            return Ok(Ok(recent));
        }
        let txn = self.db.read()?;
        let compacted = meta_in::<u64>(&txn, HISTORY_COMPACTED)?.unwrap_or(0);
        if after < compacted {
            return Ok(Err(Compacted { asked: after, compacted }));
        }
        let mut upto = revision_in(&txn)?.max(after);
        let mut changes = Vec::new();
        if let Some(table) = read_table(&txn, HISTORY).map_err(read_err)? {
            for (n, item) in table.range(after + 1..).map_err(read_err)?.enumerate() {
                let (rev, record) = item.map_err(read_err)?;
                if n == max {
                    // Stop short: everything before this revision has been read.
                    upto = rev.value() - 1;
                    break;
                }
                let record = history_record(record.value())?;
                changes.extend(record.changes.into_iter().map(|c| (rev.value(), Arc::new(c))));
            }
        }
        Ok(Ok(Changes { changes, upto }))
    }

    /// Visits the keys `scan` asks for, in key order, with their values as they were at its
    /// revision, until `visit` says stop; returns the revision of the state visited. Fails
    /// with [`Compacted`] when the history no longer reaches back to that revision.
    ///
    /// It costs what it visits, not what the prefix holds: the current keys come from a
    /// range that starts after `scan.after` (or, with labels to narrow by, from the label
    /// index), and a past revision from the changes since then.
    pub fn scan(&self, scan: Scan<'_>, visit: &mut Visit<'_>) -> Result<std::result::Result<u64, Compacted>> {
        let txn = self.db.read()?;
        let now = revision_in(&txn)?;
        let wanted = |k: &str| k.starts_with(scan.prefix) && scan.after.is_none_or(|a| k > a);
        // A key changed since `at` held, at `at`, the `prev` of its first change after it.
        let mut then = std::collections::BTreeMap::new();
        let at = match scan.at.filter(|&at| at < now) {
            None => now,
            Some(at) => {
                let compacted = meta_in::<u64>(&txn, HISTORY_COMPACTED)?.unwrap_or(0);
                if at < compacted {
                    return Ok(Err(Compacted { asked: at, compacted }));
                }
                if let Some(table) = read_table(&txn, HISTORY).map_err(read_err)? {
                    for item in table.range(at + 1..).map_err(read_err)? {
                        let (_, record) = item.map_err(read_err)?;
                        let record = history_record(record.value())?;
                        for change in record.changes {
                            if wanted(&change.key) && !then.contains_key(&change.key) {
                                then.insert(change.key, change.prev);
                            }
                        }
                    }
                }
                at
            }
        };
        let Some(table) = read_table(&txn, OBJECTS).map_err(read_err)? else {
            merge_then(std::iter::empty(), then, visit)?;
            return Ok(Ok(at));
        };
        let range_after = |after: Option<&str>| {
            let from = match after {
                Some(a) if a >= scan.prefix => std::ops::Bound::Excluded(a),
                _ => std::ops::Bound::Included(scan.prefix),
            };
            table.range::<&str>((from, std::ops::Bound::Unbounded)).map_err(read_err)
        };
        // The current keys: by label from the index while it describes this transaction's
        // revision, a batch at a time (the index is not locked while keys are visited); from
        // the range of keys otherwise, or from where the index stopped describing it.
        let mut batch = self.candidates(&scan, scan.after, now);
        let mut keys = batch.take().map(|c| (c.keys.into_iter(), c.exhausted));
        let mut range = match keys {
            Some(_) => None,
            None => Some(range_after(scan.after)?),
        };
        let mut last: Option<String> = None;
        let current = std::iter::from_fn(|| {
            loop {
                if let Some(range) = range.as_mut() {
                    return match range.next()? {
                        Ok((k, v)) if k.value().starts_with(scan.prefix) => {
                            Some(decode(v.value()).map(|v| (k.value().to_owned(), v)))
                        }
                        Ok(_) => None,
                        Err(e) => Some(Err(read_err(e))),
                    };
                }
                let (batch, exhausted) = keys.as_mut()?;
                if let Some(key) = batch.next() {
                    last = Some(key.clone());
                    match table.get(key.as_str()) {
                        Ok(Some(v)) => return Some(decode(v.value()).map(|v| (key, v))),
                        Ok(None) => continue,
                        Err(e) => return Some(Err(read_err(e))),
                    }
                }
                if *exhausted {
                    return None;
                }
                match self.candidates(&scan, last.as_deref(), now) {
                    Some(next) => keys = Some((next.keys.into_iter(), next.exhausted)),
                    None => match range_after(last.as_deref()) {
                        Ok(r) => range = Some(r),
                        Err(e) => return Some(Err(e)),
                    },
                }
            }
        });
        merge_then(current, then, visit)?;
        Ok(Ok(at))
    }

    /// The next batch of keys after `after` that may have met `scan.labels` at `revision`
    /// (`None`: no labels to narrow by, or no way to tell).
    ///
    /// The label index describes one revision. If it is another one, a key that met the
    /// labels at `revision` either still does at the index's (and the index names it) or
    /// changed in between (and the window names it): the two together name every key.
    fn candidates(&self, scan: &Scan<'_>, after: Option<&str>, revision: u64) -> Option<labels::Candidates> {
        /// Keys taken from the index at a time.
        const BATCH: usize = 512;
        let index = self.labels.read().expect("label index lock");
        let mut found = index.candidates(scan.prefix, after, scan.labels, BATCH)?;
        if index.revision == revision {
            return Some(found);
        }
        let (lo, hi) = (index.revision.min(revision), index.revision.max(revision));
        let mut changed = self.window.keys_changed(lo, hi, scan.prefix, after)?;
        drop(index);
        // Those past this batch's last key come in a later batch.
        if !found.exhausted {
            let last = found.keys.last().expect("a batch that is not the last has keys").clone();
            changed.retain(|k| *k <= last);
        }
        found.keys.extend(changed);
        found.keys.sort_unstable();
        found.keys.dedup();
        Some(found)
    }

    /// Rebuilds the label index from the stored objects.
    fn index_labels(&self) -> Result<()> {
        let txn = self.db.read()?;
        let mut index = LabelIndex::default();
        index.clear(revision_in(&txn)?);
        if let Some(table) = read_table(&txn, OBJECTS).map_err(read_err)? {
            for item in table.iter().map_err(read_err)? {
                let (k, v) = item.map_err(read_err)?;
                let stored = decode(v.value())?;
                index.change(k.value(), &[], &labels_of(&stored.value));
            }
        }
        *self.labels.write().expect("label index lock") = index;
        Ok(())
    }

    /// Drops history older than `retention` allows, as of `now_ms`: in parts of at most
    /// [`COMPACT_AT_ONCE`] records, each a transaction of its own committed without fsync (the
    /// next durable commit makes it durable; one lost to a crash only leaves history that was
    /// due to go), so that the applies, which wait for each (redb has one writer), go on in
    /// between. Ten seconds of writes at the bound (tens of thousands of records) were one
    /// transaction before, which decoded every record it dropped and ended in an fsync, every
    /// apply waiting for all of it.
    pub fn compact_history(&self, retention: Retention, now_ms: u64) -> Result<()> {
        while self.compact_part(retention, now_ms)? {}
        Ok(())
    }

    /// One part of [`Self::compact_history`]; true when more is due. The member's compactor
    /// runs each part as a blocking call of its own, so that stopping the member stops a
    /// compaction after the part in flight.
    pub fn compact_part(&self, retention: Retention, now_ms: u64) -> Result<bool> {
        let oldest_kept_ms = now_ms.saturating_sub(retention.max_age.as_millis() as u64);
        // The applies held are committed first: a failed compaction loses none of them.
        let writing = self.db.write_alone()?;
        let txn = writing.txn();
        let applied = revision_in_write(txn)?;
        let keep_from = applied.saturating_sub(retention.max_revisions);
        let mut doomed = Vec::new();
        let mut more = false;
        {
            let mut table = txn.open_table(HISTORY).map_err(write_err)?;
            for item in table.iter().map_err(read_err)? {
                let (rev, record) = item.map_err(read_err)?;
                let rev = rev.value();
                // Below the revisions kept a record goes whatever its age: not decoded.
                if rev >= keep_from && history_record(record.value())?.applied_at_ms >= oldest_kept_ms {
                    break;
                }
                if doomed.len() == COMPACT_AT_ONCE {
                    more = true;
                    break;
                }
                doomed.push(rev);
            }
            for rev in &doomed {
                table.remove(rev).map_err(write_err)?;
            }
        }
        // Nothing due: rolled back (dropped), not an empty commit every ten seconds.
        let Some(&dropped) = doomed.last() else { return Ok(false) };
        let before = meta_in_write::<u64>(txn, HISTORY_COMPACTED)?.unwrap_or(0);
        put_meta(txn, HISTORY_COMPACTED, &before.max(dropped))?;
        writing.commit(Durability::None)?;
        self.window.compact(dropped);
        Ok(more)
    }

    /// The current value of `key`.
    pub fn get(&self, key: &str) -> Result<Option<Stored>> {
        // With applies held, read in their transaction rather than commit it for one key.
        if self.db.held.load(std::sync::atomic::Ordering::Acquire) {
            let unsaved = self.db.lock();
            self.db.check(ErrorVerb::Read)?;
            if let Some(txn) = unsaved.txn.as_ref() {
                let table = txn.open_table(OBJECTS).map_err(read_err)?;
                return table.get(key).map_err(read_err)?.map(|v| decode(v.value())).transpose();
            }
        }
        let txn = self.db.read()?;
        let Some(table) = read_table(&txn, OBJECTS).map_err(read_err)? else { return Ok(None) };
        table.get(key).map_err(read_err)?.map(|v| decode(v.value())).transpose()
    }

    /// Every key starting with `prefix`, in key order, with its value, and the revision this
    /// list is exactly the state at. Both come from one read transaction, so a watch started
    /// at that revision misses nothing and repeats nothing.
    pub fn list(&self, prefix: &str) -> Result<(Vec<(String, Stored)>, u64)> {
        list_in(&self.db.read()?, prefix)
    }

    fn meta<T: for<'de> Deserialize<'de>>(&self, key: &str) -> Result<Option<T>> {
        meta_in(&self.db.read()?, key)
    }

    /// Forces every applied change to disk.
    fn sync(&self) -> Result<()> {
        self.db.write_alone()?.commit(Durability::Immediate)
    }
}

/// The revision of the last applied write, as of `txn`.
fn revision_in(txn: &redb::ReadTransaction) -> Result<u64> {
    match meta_in::<u64>(txn, REVISION)? {
        Some(r) => Ok(r),
        None => Ok(meta_in::<LogId<NodeId>>(txn, LAST_APPLIED)?.map_or(0, |l| l.index)),
    }
}

/// [`revision_in`] within a write transaction.
fn revision_in_write(txn: &redb::WriteTransaction) -> Result<u64> {
    match meta_in_write::<u64>(txn, REVISION)? {
        Some(r) => Ok(r),
        None => Ok(meta_in_write::<LogId<NodeId>>(txn, LAST_APPLIED)?.map_or(0, |l| l.index)),
    }
}

fn list_in(txn: &redb::ReadTransaction, prefix: &str) -> Result<(Vec<(String, Stored)>, u64)> {
    let revision = revision_in(txn)?;
    let Some(table) = read_table(txn, OBJECTS).map_err(read_err)? else {
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

/// Reads the JSON value of meta `key` within a write transaction.
fn meta_in_write<T: for<'de> Deserialize<'de>>(txn: &redb::WriteTransaction, key: &str) -> Result<Option<T>> {
    let table = txn.open_table(META).map_err(write_err)?;
    let Some(v) = table.get(key).map_err(read_err)? else { return Ok(None) };
    serde_json::from_slice(v.value()).map(Some).map_err(|e| sm_err(ErrorVerb::Read, e))
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

/// A [`Record`] to write, borrowing its changes.
#[derive(Serialize)]
struct RecordRef<'a> {
    applied_at_ms: u64,
    changes: &'a [Change],
}

/// Visits `current` (the keys now, in order) with the keys in `then` (changed since the
/// revision scanned: their value then, `None` if they did not exist) in their place, in key
/// order, until `visit` says stop.
fn merge_then(
    current: impl Iterator<Item = Result<(String, Stored)>>,
    then: std::collections::BTreeMap<String, Option<Stored>>,
    visit: &mut Visit<'_>,
) -> Result<()> {
    let mut then = then.into_iter().peekable();
    for item in current {
        let (key, now) = item?;
        while let Some((earlier, value)) = then.next_if(|(k, _)| k.as_str() < key.as_str()) {
            if let Some(value) = value
                && !visit(earlier, value)
            {
                return Ok(());
            }
        }
        let value = match then.next_if(|(k, _)| *k == key) {
            Some((_, value)) => value,
            None => Some(now),
        };
        if let Some(value) = value
            && !visit(key, value)
        {
            return Ok(());
        }
    }
    for (key, value) in then {
        if let Some(value) = value
            && !visit(key, value)
        {
            return Ok(());
        }
    }
    Ok(())
}

/// Applies one request inside `table` at `revision`; returns what it did and the changes it
/// made, for the history.
fn apply_request(
    table: &mut redb::Table<'_, &str, &[u8]>,
    req: &Request,
    revision: u64,
) -> Result<(Outcome, Vec<Change>)> {
    let mut lookup_err = None;
    let held = req.check(|key| match table.get(key) {
        Ok(v) => v.and_then(|v| decode(v.value()).map_err(|e| lookup_err = Some(e)).ok()),
        Err(e) => {
            lookup_err = Some(read_err(e));
            None
        }
    });
    if let Some(e) = lookup_err {
        return Err(e);
    }
    // What each op's key held, read once above (the keys are distinct: a request with a key
    // twice is refused).
    let held = match held {
        Ok(held) => held,
        Err(refused) => return Ok((refused, Vec::new())),
    };
    let mut changes = Vec::with_capacity(req.ops.len());
    // What each key held goes into the history, not into the answer (see `Outcome::Applied`).
    for (op, old) in req.ops.iter().zip(held) {
        match op {
            super::Op::Put { key, value, .. } => {
                let create_revision = old.as_ref().map_or(revision, |o| o.create_revision);
                let new = Stored { create_revision, mod_revision: revision, value: String::from(&**value) };
                table.insert(key.as_str(), encode(&new).as_slice()).map_err(write_err)?;
                changes.push(Change::new(key.clone(), old, Some(new)));
            }
            super::Op::Delete { key, .. } => {
                table.remove(key.as_str()).map_err(write_err)?;
                if old.is_some() {
                    changes.push(Change::new(key.clone(), old, None));
                }
            }
            super::Op::Check { .. } => {}
        }
    }
    Ok((Outcome::Applied { prev: Vec::new() }, changes))
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>> {
        // Reading the whole state and writing it out is blocking work: off the runtime.
        let sm = self.clone();
        let (meta, data) = tokio::task::spawn_blocking(move || sm.write_snapshot())
            .await
            .map_err(|e| snap_err(std::io::Error::other(e.to_string())))??;
        Ok(Snapshot { meta, snapshot: Box::new(tokio::fs::File::from_std(data)) })
    }
}

impl StateMachine {
    /// Makes the applied state durable and writes it to the snapshot file; returns the
    /// snapshot's meta and its file, open at its start.
    fn write_snapshot(&self) -> Result<(SnapshotMeta<NodeId, super::Member>, std::fs::File)> {
        // One snapshot file is written at a time, and never replaced by an older one (a build
        // that read its state before an install committed a newer one).
        let _files = self.snapshot_files.lock().expect("snapshot lock");
        let txn = self.db.read()?;
        // Durable, everything this read sees: openraft purges the log up to this snapshot
        // afterwards. (A durable commit persists every commit before it.)
        self.sync()?;
        let last_applied: Option<LogId<NodeId>> = meta_in(&txn, LAST_APPLIED)?;
        let revision = revision_in(&txn)?;
        let membership: Membership = meta_in(&txn, MEMBERSHIP)?.unwrap_or_default();
        let snapshot_id = match last_applied {
            Some(l) => format!("{}-{}", l.leader_id, l.index),
            None => "empty".to_owned(),
        };
        let meta = SnapshotMeta { last_log_id: last_applied, last_membership: membership, snapshot_id };
        if let Some((current, data)) = snapshot::open(&self.snapshot_path("")).map_err(snap_err)?
            && current.meta.last_log_id >= meta.last_log_id
        {
            return Ok((current.meta, data));
        }
        // Streamed from one read transaction into the file, an object at a time.
        let header = snapshot::Header { univrs_snapshot: 1, meta: meta.clone(), revision };
        let mut file =
            snapshot::Writer::create(self.snapshot_path(".building"), &header).map_err(snap_err)?;
        if let Some(table) = read_table(&txn, OBJECTS).map_err(read_err)? {
            for item in table.iter().map_err(read_err)? {
                let (k, v) = item.map_err(read_err)?;
                file.object(k.value(), &decode(v.value())?).map_err(snap_err)?;
            }
        }
        drop(txn);
        let data = file.finish(&self.snapshot_path("")).map_err(snap_err)?;
        Ok((meta, data))
    }
}

impl StateMachine {
    /// Replaces the state by the snapshot in `data` (see [`snapshot`]), and keeps it as this
    /// member's current snapshot.
    fn install_file(
        &self,
        meta: &SnapshotMeta<NodeId, super::Member>,
        mut data: std::fs::File,
    ) -> Result<()> {
        use std::io::Seek as _;
        let read_err = |e: std::io::Error| read_snapshot_err(meta, e);
        data.rewind().map_err(read_err)?;
        let (revision, objects) = snapshot::read(std::io::BufReader::new(data)).map_err(read_err)?;
        // The history does not travel with a snapshot: what it held no longer leads to the
        // installed state, so every revision up to the snapshot counts as compacted.
        let installed = revision.unwrap_or(meta.last_log_id.map_or(0, |l| l.index));
        let _files = self.snapshot_files.lock().expect("snapshot lock");
        // Read once: into the state, the label index and this member's own snapshot file.
        let header = snapshot::Header { univrs_snapshot: 1, meta: meta.clone(), revision: installed };
        let mut file =
            snapshot::Writer::create(self.snapshot_path(".installing"), &header).map_err(snap_err)?;
        let mut index = LabelIndex::default();
        index.clear(installed);
        // The applies held are committed first: a failed install loses none of them.
        let writing = self.db.write_alone()?;
        let txn = writing.txn();
        {
            let mut table = txn.open_table(OBJECTS).map_err(write_err)?;
            table.retain(|_, _| false).map_err(write_err)?;
            for object in objects {
                let (key, stored) = object.map_err(read_err)?;
                table.insert(key.as_str(), encode(&stored).as_slice()).map_err(write_err)?;
                index.change(&key, &[], &labels_of(&stored.value));
                file.object(&key, &stored).map_err(snap_err)?;
            }
        }
        match &meta.last_log_id {
            Some(last) => put_meta(txn, LAST_APPLIED, last)?,
            None => {
                txn.open_table(META).map_err(write_err)?.remove(LAST_APPLIED).map_err(write_err)?;
            }
        }
        put_meta(txn, REVISION, &installed)?;
        put_meta(txn, MEMBERSHIP, &meta.last_membership)?;
        txn.open_table(HISTORY).map_err(write_err)?.retain(|_, _| false).map_err(write_err)?;
        put_meta(txn, HISTORY_COMPACTED, &installed)?;
        // The snapshot was read whole (a bad one changed nothing, and this member keeps its own
        // snapshot). Now the current snapshot file goes, durably, before the new state is
        // committed: after a crash between the two, a member with no snapshot builds one
        // (openraft does, once logs are purged), while one left with an older snapshot beside
        // a newer state would serve the older one.
        match std::fs::remove_file(self.snapshot_path("")) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(snap_err(e)),
            _ => {}
        }
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(snap_err)?;
        }
        writing.commit(Durability::Immediate)?;
        self.window.reset(installed);
        *self.labels.write().expect("label index lock") = index;
        self.applied.send_replace(installed);
        crate::metrics::metrics().set_applied(meta.last_log_id.map_or(0, |l| l.index));
        file.finish(&self.snapshot_path("")).map_err(snap_err)?;
        let _ = std::fs::remove_file(self.snapshot_path(".receiving"));
        Ok(())
    }
}

fn read_snapshot_err(meta: &SnapshotMeta<NodeId, super::Member>, e: std::io::Error) -> StorageError<NodeId> {
    StorageError::from(openraft::StorageIOError::read_snapshot(Some(meta.signature()), &e))
}

fn snap_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    io_err(ErrorSubject::Snapshot(None), ErrorVerb::Write, e)
}

impl StateMachine {
    /// The snapshot file beside the database (`suffix` empty: the current one).
    fn snapshot_path(&self, suffix: &str) -> std::path::PathBuf {
        let mut path = self.path.as_os_str().to_owned();
        path.push(".snapshot");
        path.push(suffix);
        path.into()
    }

    /// Moves a snapshot that an older store kept in the database into the snapshot file.
    fn move_stored_snapshot(&self) -> Result<()> {
        let Some(stored) = self.meta::<StoredSnapshot>(SNAPSHOT)? else { return Ok(()) };
        if snapshot::open(&self.snapshot_path("")).map_err(snap_err)?.is_none() {
            let (revision, objects) = snapshot::read(stored.data.as_slice()).map_err(snap_err)?;
            let revision = revision.unwrap_or(stored.meta.last_log_id.map_or(0, |l| l.index));
            let header = snapshot::Header { univrs_snapshot: 1, meta: stored.meta, revision };
            let mut file =
                snapshot::Writer::create(self.snapshot_path(".moving"), &header).map_err(snap_err)?;
            for object in objects {
                let (key, stored) = object.map_err(snap_err)?;
                file.object(&key, &stored).map_err(snap_err)?;
            }
            file.finish(&self.snapshot_path("")).map_err(snap_err)?;
        }
        let writing = self.db.write_alone()?;
        writing.txn().open_table(META).map_err(write_err)?.remove(SNAPSHOT).map_err(write_err)?;
        writing.commit(Durability::Immediate)
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
        let mut writing = self.db.write()?;
        // Counted from the start: a failure part way rolls this apply back with those held.
        writing.applied(0);
        let txn = writing.txn();
        let mut responses = Vec::new();
        let mut last = None;
        // Each key whose labels changed, with its labels before and after, for the label index;
        // the changes, for the window.
        let mut relabeled = Vec::new();
        let mut fresh = Vec::new();
        let mut revision = revision_in_write(txn)?;
        let mut history_bytes = 0;
        let applied_at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        {
            let mut table = txn.open_table(OBJECTS).map_err(write_err)?;
            let mut history = txn.open_table(HISTORY).map_err(write_err)?;
            // One write: the next revision, its changes recorded under it.
            let mut apply_one = |req: &Request, revision: u64| -> Result<Response> {
                let (outcome, changes) = apply_request(&mut table, req, revision)?;
                for c in &changes {
                    let labels =
                        |s: &Option<Stored>| s.as_ref().map(|s| labels_of(&s.value)).unwrap_or_default();
                    let (before, after) = (labels(&c.prev), labels(&c.new));
                    // Most updates keep the labels: the index has nothing to change.
                    if before != after {
                        relabeled.push((c.key.clone(), before, after));
                    }
                }
                if !changes.is_empty() {
                    let record = super::packed::encode(&RecordRef { applied_at_ms, changes: &changes })
                        .map_err(|e| sm_err(ErrorVerb::Write, e))?;
                    history_bytes += record.len();
                    history.insert(revision, record.as_slice()).map_err(write_err)?;
                    fresh.extend(changes.into_iter().map(|c| (revision, c)));
                }
                Ok(Response { revision, outcome, batch: Vec::new() })
            };
            for entry in entries {
                // Every entry moves the revision by one (a batch by one per write), so that
                // without batches the revision is the log index, and every member counts the
                // same revisions for the same log wherever it started counting.
                let response = match &entry.payload {
                    EntryPayload::Normal(req) if !req.batch.is_empty() => {
                        let mut all = Vec::with_capacity(req.batch.len());
                        for write in &req.batch {
                            revision += 1;
                            all.push(apply_one(write, revision)?);
                        }
                        Response { revision, outcome: Outcome::None, batch: all }
                    }
                    EntryPayload::Normal(req) => {
                        revision += 1;
                        apply_one(req, revision)?
                    }
                    EntryPayload::Blank => {
                        revision += 1;
                        Response { revision, ..Response::default() }
                    }
                    EntryPayload::Membership(m) => {
                        revision += 1;
                        put_meta(txn, MEMBERSHIP, &Membership::new(Some(entry.log_id), m.clone()))?;
                        Response { revision, ..Response::default() }
                    }
                };
                last = Some(entry.log_id);
                responses.push(response);
            }
        }
        if let Some(last) = last {
            put_meta(txn, LAST_APPLIED, &last)?;
            put_meta(txn, REVISION, &revision)?;
        }
        writing.wrote(history_bytes);
        let now = std::time::Instant::now();
        let durable = {
            let mut last = self.last_durable.lock().expect("durable lock");
            let due = now.saturating_duration_since(*last) >= DURABLE_EVERY;
            if due {
                *last = now;
            }
            due
        };
        if durable || writing.full() {
            writing.commit(Durability::None)?;
        } else {
            writing.hold();
        }
        if let Some(last) = last {
            // Only what is committed or held (and so seen by any read) is in the window, and
            // the window has it before the label index describes it (a read between the two
            // finds the keys changed in the window) and before watchers hear of the revision.
            self.window.push(revision, fresh);
            let mut index = self.labels.write().expect("label index lock");
            for (key, before, after) in &relabeled {
                index.change(key, before, after);
            }
            index.revision = revision;
            drop(index);
            crate::metrics::metrics().set_applied(last.index);
            self.applied.send_replace(revision);
        }
        if durable {
            // Once committed and announced, made durable by a commit of its own outside the
            // lock: no read waits for the fsync.
            self.db.make_durable()?;
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>> {
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(self.snapshot_path(".receiving"))
            .await
            .map_err(snap_err)?;
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, super::Member>,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<()> {
        use tokio::io::AsyncWriteExt as _;
        let mut snapshot = snapshot;
        snapshot.flush().await.map_err(|e| read_snapshot_err(meta, e))?;
        let data = snapshot.into_std().await;
        // Reading the whole snapshot into the database is blocking work: off the runtime.
        let (sm, meta) = (self.clone(), meta.clone());
        tokio::task::spawn_blocking(move || sm.install_file(&meta, data))
            .await
            .map_err(|e| snap_err(std::io::Error::other(e.to_string())))?
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>> {
        let Some((header, data)) = snapshot::open(&self.snapshot_path("")).map_err(snap_err)? else {
            return Ok(None);
        };
        Ok(Some(Snapshot { meta: header.meta, snapshot: Box::new(tokio::fs::File::from_std(data)) }))
    }
}

#[cfg(test)]
mod snapshot_format_tests {
    use super::*;

    #[test]
    fn a_stored_snapshot_is_base64_and_one_in_the_older_form_still_reads() {
        let stored = StoredSnapshot { meta: SnapshotMeta::default(), data: b"{\"objects\":[]}".to_vec() };
        let json = serde_json::to_string(&stored).unwrap();
        assert!(json.contains("\"data\":\"eyJvYmplY3RzIjpbXX0=\""), "{json}");
        let back: StoredSnapshot = serde_json::from_str(&json).unwrap();
        assert_eq!(back.data, stored.data);
        let older = json.replace("\"eyJvYmplY3RzIjpbXX0=\"", &serde_json::to_string(&stored.data).unwrap());
        assert!(older.contains("[123,"), "{older}");
        let back: StoredSnapshot = serde_json::from_str(&older).unwrap();
        assert_eq!(back.data, stored.data);
    }
}

#[cfg(test)]
mod snapshot_file_tests {
    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().build().unwrap()
    }

    fn older_document(objects: &[(&str, &str)]) -> Vec<u8> {
        let objects: Vec<(String, Stored)> = objects
            .iter()
            .map(|(k, v)| {
                ((*k).to_owned(), Stored { create_revision: 3, mod_revision: 4, value: (*v).to_owned() })
            })
            .collect();
        serde_json::to_vec(&serde_json::json!({
            "last_applied": LogId::new(openraft::CommittedLeaderId::new(1, 0), 5),
            "membership": Membership::default(),
            "objects": objects,
        }))
        .unwrap()
    }

    fn meta_at(index: u64) -> SnapshotMeta<NodeId, super::super::Member> {
        SnapshotMeta {
            last_log_id: Some(LogId::new(openraft::CommittedLeaderId::new(1, 0), index)),
            last_membership: Membership::default(),
            snapshot_id: format!("1-{index}"),
        }
    }

    /// A store from before snapshot files kept its snapshot in the database: opening it moves
    /// the snapshot into the file, and the member serves it from there.
    #[test]
    fn a_snapshot_kept_in_the_database_moves_into_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        {
            let sm = StateMachine::open(&path).unwrap();
            let stored =
                StoredSnapshot { meta: meta_at(5), data: older_document(&[("/k/a", "{}"), ("/k/b", "{}")]) };
            let txn = sm.db.database.begin_write().unwrap();
            put_meta(&txn, SNAPSHOT, &stored).unwrap();
            txn.commit().unwrap();
        }
        let mut sm = StateMachine::open(&path).unwrap();
        assert!(sm.meta::<StoredSnapshot>(SNAPSHOT).unwrap().is_none(), "moved out of the database");
        let snap = rt().block_on(sm.get_current_snapshot()).unwrap().unwrap();
        assert_eq!(snap.meta, meta_at(5));
        let data = rt().block_on(snap.snapshot.into_std());
        let (revision, objects) = snapshot::read(std::io::BufReader::new(data)).unwrap();
        assert_eq!(revision, Some(5), "an older snapshot's revision is its last applied index");
        let keys: Vec<String> = objects.map(|o| o.unwrap().0).collect();
        assert_eq!(keys, ["/k/a", "/k/b"]);
    }

    /// A snapshot that arrives cut short changes nothing: the state, and this member's own
    /// snapshot, stay as they were.
    #[test]
    fn a_snapshot_cut_short_changes_nothing_and_the_member_keeps_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = StateMachine::open(&dir.path().join("state.redb")).unwrap();
        let rt = rt();
        let op = super::super::Op::Put {
            key: "/k/own".into(),
            value: "{}".into(),
            expect: super::super::Expect::Any,
        };
        let entry = Entry {
            log_id: LogId::new(openraft::CommittedLeaderId::new(1, 0), 1),
            payload: EntryPayload::Normal(Request::new(vec![op])),
        };
        rt.block_on(sm.apply(vec![entry])).unwrap();
        let own = rt.block_on(sm.build_snapshot()).unwrap().meta;
        let header = snapshot::Header { univrs_snapshot: 1, meta: meta_at(5), revision: 5 };
        let mut cut = serde_json::to_vec(&header).unwrap();
        cut.extend_from_slice(b"\n[\"/k/x\",1,1,\"{}\"]\n");
        let received = rt.block_on(sm.begin_receiving_snapshot()).unwrap();
        let mut received = rt.block_on(received.into_std());
        std::io::Write::write_all(&mut received, &cut).unwrap();
        let received = Box::new(tokio::fs::File::from_std(received));
        assert!(rt.block_on(sm.install_snapshot(&meta_at(5), received)).is_err());
        assert!(sm.get("/k/x").unwrap().is_none());
        assert!(sm.get("/k/own").unwrap().is_some());
        assert_eq!(rt.block_on(sm.get_current_snapshot()).unwrap().unwrap().meta, own);
    }

    /// A snapshot sent by an older member (one JSON document) installs, and the member then
    /// serves it onward as a file of its own.
    #[test]
    fn a_snapshot_from_an_older_member_installs_and_is_served_as_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = StateMachine::open(&dir.path().join("state.redb")).unwrap();
        let rt = rt();
        let received = rt.block_on(sm.begin_receiving_snapshot()).unwrap();
        let mut received = rt.block_on(received.into_std());
        std::io::Write::write_all(
            &mut received,
            &older_document(&[("/k/x", r#"{"metadata":{"labels":{"a":"1"}}}"#)]),
        )
        .unwrap();
        let received = Box::new(tokio::fs::File::from_std(received));
        rt.block_on(sm.install_snapshot(&meta_at(5), received)).unwrap();
        assert_eq!(sm.get("/k/x").unwrap().unwrap().mod_revision, 4);
        assert_eq!(sm.applied_revision().unwrap(), 5);
        let needs = LabelNeeds::of(&api::selector::LabelSelector::parse("a=1").unwrap());
        assert_eq!(sm.labels.read().unwrap().candidates("/k/", None, &needs, 10).unwrap().keys, ["/k/x"]);
        let snap = rt.block_on(sm.get_current_snapshot()).unwrap().unwrap();
        assert_eq!(snap.meta, meta_at(5));
        let first_line = std::fs::read_to_string(sm.snapshot_path("")).unwrap();
        assert!(first_line.starts_with("{\"univrs_snapshot\":1"), "{first_line}");
        assert!(!sm.snapshot_path(".receiving").exists());
    }
}

#[cfg(test)]
mod label_scan_tests {
    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().build().unwrap()
    }

    fn put(index: u64, key: &str, color: &str) -> Entry<TypeConfig> {
        let value = format!(r#"{{"metadata":{{"labels":{{"color":"{color}"}}}}}}"#);
        let op =
            super::super::Op::Put { key: key.into(), value: value.into(), expect: super::super::Expect::Any };
        Entry {
            log_id: LogId::new(openraft::CommittedLeaderId::new(1, 0), index),
            payload: EntryPayload::Normal(Request::new(vec![op])),
        }
    }

    fn red(sm: &StateMachine) -> Vec<String> {
        let needs = LabelNeeds::of(&api::selector::LabelSelector::parse("color=red").unwrap());
        let mut keys = Vec::new();
        let scan = Scan { prefix: "/k/", after: None, at: None, labels: &needs };
        // The scan may visit more (the index only narrows); the reader checks, as lists do.
        sm.scan(scan, &mut |k, v| {
            if labels_of(&v.value).contains(&("color".into(), "red".into())) {
                keys.push(k);
            }
            true
        })
        .unwrap()
        .unwrap();
        keys
    }

    /// A read whose transaction is at another revision than the label index (an apply
    /// between its commit and the index's update) still finds every key: through the keys the
    /// window saw change, or, when the window does not reach, by reading them all.
    #[test]
    fn a_read_between_a_commit_and_the_index_update_misses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = StateMachine::open(&dir.path().join("sm.redb")).unwrap();
        let rt = rt();
        rt.block_on(sm.apply(vec![put(1, "/k/a", "red"), put(2, "/k/b", "blue"), put(3, "/k/c", "red")]))
            .unwrap();
        rt.block_on(sm.apply(vec![put(4, "/k/b", "red"), put(5, "/k/c", "blue")])).unwrap();
        assert_eq!(red(&sm), ["/k/a", "/k/b"]);
        // The index as it was at revision 3 (before /k/b turned red and /k/c blue).
        let rewind = |sm: &StateMachine| {
            let mut index = sm.labels.write().unwrap();
            let (red, blue) = (
                labels_of(r#"{"metadata":{"labels":{"color":"red"}}}"#),
                labels_of(r#"{"metadata":{"labels":{"color":"blue"}}}"#),
            );
            index.change("/k/b", &red, &blue);
            index.change("/k/c", &blue, &red);
            index.revision = 3;
        };
        rewind(&sm);
        assert_eq!(
            sm.labels
                .read()
                .unwrap()
                .candidates(
                    "/k/",
                    None,
                    &LabelNeeds::of(&api::selector::LabelSelector::parse("color=red").unwrap()),
                    10
                )
                .unwrap()
                .keys,
            ["/k/a", "/k/c"]
        );
        assert_eq!(red(&sm), ["/k/a", "/k/b"], "through the window");
        sm.window.reset(5);
        assert_eq!(red(&sm), ["/k/a", "/k/b"], "the window does not reach back: every key is read");
    }

    /// Updates that keep the labels (written in another order), change them, drop them, go
    /// over or come back under the indexed bound, carry a label that is not a string or are
    /// not JSON, and deletes, leave the index kept up by applies equal to one built from the
    /// state.
    #[test]
    fn the_index_kept_by_applies_is_the_index_built_from_the_state() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = StateMachine::open(&dir.path().join("sm.redb")).unwrap();
        let rt = rt();
        let entry = |index: u64, op: super::super::Op| Entry {
            log_id: LogId::new(openraft::CommittedLeaderId::new(1, 0), index),
            payload: EntryPayload::Normal(Request::new(vec![op])),
        };
        let put = |index: u64, key: &str, value: &str| {
            let op = super::super::Op::Put {
                key: key.into(),
                value: value.into(),
                expect: super::super::Expect::Any,
            };
            entry(index, op)
        };
        let two = r#"{"metadata":{"labels":{"color":"red","size":"s"}}}"#;
        let two_reordered = r#"{"spec":{"x":1},"metadata":{"labels":{"size":"s","color":"red"}}}"#;
        // More labels than the index keeps (such a key is visited by every narrowed read).
        let many = |first: &str| {
            let labels: Vec<String> =
                (0..=labels::MAX_INDEXED_LABELS).map(|i| format!(r#""l{i}":"{first}{i}""#)).collect();
            format!(r#"{{"metadata":{{"labels":{{{}}}}}}}"#, labels.join(","))
        };
        rt.block_on(sm.apply(vec![
            put(1, "/k/a", two),
            put(2, "/k/b", two),
            put(3, "/k/c", two),
            put(4, "/k/a", two_reordered),
            put(5, "/k/b", r#"{"metadata":{"labels":{"color":"blue","size":"s"}}}"#),
            put(6, "/k/c", r#"{"metadata":{}}"#),
            put(7, "/k/d", two),
            entry(8, super::super::Op::Delete { key: "/k/d".into(), expect: super::super::Expect::Any }),
            put(9, "/k/e", &many("a")),
            put(10, "/k/e", &many("a")),
            put(11, "/k/f", &many("a")),
            put(12, "/k/f", two),
            put(13, "/k/g", two),
            put(14, "/k/g", &many("b")),
            // A label that is not a string indexes as nothing, as does a value that is not JSON.
            put(15, "/k/h", r#"{"metadata":{"labels":{"color":7}}}"#),
            put(16, "/k/h", two),
            put(17, "/k/i", two),
            put(18, "/k/i", "not json"),
        ]))
        .unwrap();
        assert_eq!(red(&sm), ["/k/a", "/k/f", "/k/h"]);
        // The same labels in another order are the same (so such an update changes no entry).
        assert_eq!(labels_of(two), labels_of(two_reordered));
        let sorted = labels_of(r#"{"metadata":{"labels":{"c":"3","a":"1","b":"2"}}}"#);
        assert_eq!(sorted, [("a".into(), "1".into()), ("b".into(), "2".into()), ("c".into(), "3".into())]);
        let kept = std::mem::take(&mut *sm.labels.write().unwrap());
        sm.index_labels().unwrap();
        assert_eq!(*sm.labels.read().unwrap(), kept);
    }

    /// A build that read its state before a newer snapshot was written never replaces it.
    #[test]
    fn a_snapshot_file_is_never_replaced_by_an_older_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = StateMachine::open(&dir.path().join("sm.redb")).unwrap();
        let rt = rt();
        rt.block_on(sm.apply(vec![put(1, "/k/a", "red")])).unwrap();
        let newer = SnapshotMeta {
            last_log_id: Some(LogId::new(openraft::CommittedLeaderId::new(1, 0), 99)),
            last_membership: Membership::default(),
            snapshot_id: "1-99".into(),
        };
        let header = snapshot::Header { univrs_snapshot: 1, meta: newer.clone(), revision: 99 };
        let file = snapshot::Writer::create(sm.snapshot_path(".test"), &header).unwrap();
        file.finish(&sm.snapshot_path("")).unwrap();
        let built = rt.block_on(sm.build_snapshot()).unwrap();
        assert_eq!(built.meta, newer);
        assert_eq!(rt.block_on(sm.get_current_snapshot()).unwrap().unwrap().meta, newer);
    }
}

#[cfg(test)]
mod held_applies_tests {
    use std::sync::atomic::Ordering::Acquire;

    use openraft::CommittedLeaderId;

    use super::*;
    use crate::raft::{Expect, Op};

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().build().unwrap()
    }

    fn put(index: u64) -> Entry<TypeConfig> {
        let value = format!(r#"{{"metadata":{{"name":"o{index}","labels":{{"n":"{index}"}}}}}}"#);
        let op = Op::Put { key: format!("/o/{index:04}"), value: value.into(), expect: Expect::Any };
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(Request::new(vec![op])),
        }
    }

    /// A state machine whose applies are not the durable one of every five seconds, nor committed
    /// for being held too long.
    fn open(path: &Path) -> StateMachine {
        let sm = StateMachine::open(path).unwrap();
        *sm.last_durable.lock().unwrap() = std::time::Instant::now() + std::time::Duration::from_secs(3600);
        sm.db.hold_at_most.store(3_600_000, std::sync::atomic::Ordering::Relaxed);
        sm
    }

    /// Applies held with nothing else to commit them are committed after HOLD_AT_MOST, by the
    /// thread that ends with the state machine.
    #[test]
    fn applies_held_too_long_are_committed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sm.redb");
        let mut sm = StateMachine::open(&path).unwrap();
        *sm.last_durable.lock().unwrap() = std::time::Instant::now() + std::time::Duration::from_secs(3600);
        let start = std::time::Instant::now();
        rt().block_on(sm.apply([put(1)])).unwrap();
        let deadline = start + std::time::Duration::from_secs(10);
        while committed_revision(&sm) == 0 {
            assert!(std::time::Instant::now() < deadline, "never committed");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(start.elapsed() >= HOLD_AT_MOST, "not before {HOLD_AT_MOST:?}: {:?}", start.elapsed());
        // The thread clears `held` before it lets go of the lock.
        drop(sm.db.lock());
        assert!(!sm.db.held.load(Acquire));
        let thread = sm.db.thread.as_ref().unwrap().thread().clone();
        assert_eq!(thread.name(), Some("state-commit"));
        drop(sm);
        // The database is closed when the drop returns: it opens again at once.
        let sm = StateMachine::open(&path).unwrap();
        assert_eq!(sm.applied_revision().unwrap(), 1);
    }

    fn committed_revision(sm: &StateMachine) -> u64 {
        revision_in(&sm.db.database.begin_read().unwrap()).unwrap()
    }

    /// An apply is held, not committed; every kind of read still sees it (and commits it
    /// first), so a read after an acknowledged write sees that write.
    #[test]
    fn every_read_sees_the_applies_held() {
        let dir = tempfile::tempdir().unwrap();
        type Read = fn(&StateMachine) -> bool;
        let reads: [(&str, Read); 6] = [
            ("get", |sm| sm.get("/o/0001").unwrap().is_some()),
            ("list", |sm| !sm.list("/o/").unwrap().0.is_empty()),
            ("applied revision", |sm| sm.applied_revision().unwrap() > 0),
            ("scan", |sm| {
                let mut found = false;
                let needs = LabelNeeds::default();
                let scan = Scan { prefix: "/o/", after: None, at: None, labels: &needs };
                sm.scan(scan, &mut |_, _| {
                    found = true;
                    false
                })
                .unwrap()
                .unwrap();
                found
            }),
            ("applied state", |sm| {
                let mut sm = sm.clone();
                rt().block_on(sm.applied_state()).unwrap().0.is_some()
            }),
            ("changes from disk", |sm| {
                sm.window.reset(sm.applied.borrow().to_owned());
                !sm.changes_after(0, 10).unwrap().unwrap().changes.is_empty()
            }),
        ];
        let rt = rt();
        for (what, read) in reads {
            let fresh = tempfile::tempdir().unwrap();
            let mut sm = open(&fresh.path().join("sm.redb"));
            rt.block_on(sm.apply([put(1)])).unwrap();
            assert!(sm.db.held.load(Acquire), "{what}: the apply is held");
            assert_eq!(committed_revision(&sm), 0, "{what}: not committed yet");
            assert!(read(&sm), "{what}: sees the apply held");
            if what == "get" {
                // One key is read in the transaction held, which stays open.
                assert!(sm.db.held.load(Acquire), "{what}: read in the transaction held");
                assert_eq!(committed_revision(&sm), 0, "{what}");
                rt.block_on(sm.apply([put(2)])).unwrap();
                assert_eq!(sm.get("/o/0002").unwrap().unwrap().mod_revision, 2);
                assert!(sm.get("/o/0003").unwrap().is_none());
                continue;
            }
            assert!(!sm.db.held.load(Acquire), "{what}: committed by the read");
            assert_eq!(committed_revision(&sm), 1, "{what}");
        }
        // Applies held again after a read committed the earlier ones.
        let mut sm = open(&dir.path().join("sm.redb"));
        rt.block_on(sm.apply([put(1)])).unwrap();
        assert_eq!(sm.get("/o/0001").unwrap().unwrap().mod_revision, 1);
        rt.block_on(sm.apply([put(2), put(3)])).unwrap();
        assert!(sm.db.held.load(Acquire));
        assert_eq!(sm.list("/o/").unwrap().1, 3);
    }

    /// Reads on other threads, while applies are made, held, committed (durably too) and
    /// history is compacted, see every apply acknowledged before they began: by get (in the
    /// transaction held), list, scan by label, the revision applied, and the window of
    /// changes; and whatever the window or the announced revision names, a get finds.
    #[test]
    fn reads_on_other_threads_see_every_apply_acknowledged_before_them() {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Release};
        const APPLIES: u64 = 1500;
        /// Sets its flag when dropped, also by a panic: the other threads then stop.
        struct Done<'a>(&'a AtomicBool);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.store(true, Release);
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let sm = open(&dir.path().join("sm.redb"));
        let (acked, done) = (AtomicU64::new(0), AtomicBool::new(false));
        std::thread::scope(|threads| {
            threads.spawn(|| {
                let _done = Done(&done);
                let (mut sm, rt) = (sm.clone(), rt());
                for i in 1..=APPLIES {
                    if i % 100 == 0 {
                        // The durable apply, and its commit outside the lock.
                        *sm.last_durable.lock().unwrap() = std::time::Instant::now() - DURABLE_EVERY;
                    }
                    rt.block_on(sm.apply([put(i)])).unwrap();
                    acked.store(i, Release);
                }
            });
            threads.spawn(|| {
                let retention =
                    Retention { max_age: std::time::Duration::from_secs(3600), max_revisions: 100 };
                while !done.load(Acquire) {
                    sm.compact_history(retention, 0).unwrap();
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
            });
            for reader in 0..2 {
                let (sm, acked, done) = (&sm, &acked, &done);
                threads.spawn(move || {
                    let mut n = 0u64;
                    let key = |r: u64| format!("/o/{r:04}");
                    while !done.load(Acquire) {
                        let a = acked.load(Acquire);
                        if a == 0 {
                            continue;
                        }
                        n += 1;
                        match (n + reader) % 6 {
                            0 => assert!(sm.get(&key(a)).unwrap().is_some(), "get at {a}"),
                            1 => assert!(sm.list("/o/").unwrap().1 >= a, "list at {a}"),
                            2 => assert!(sm.applied_revision().unwrap() >= a, "applied revision at {a}"),
                            3 => {
                                let needs = LabelNeeds::of(
                                    &api::selector::LabelSelector::parse(&format!("n={a}")).unwrap(),
                                );
                                let scan = Scan { prefix: "/o/", after: None, at: None, labels: &needs };
                                let mut found = false;
                                sm.scan(scan, &mut |k, _| {
                                    found |= k == key(a);
                                    true
                                })
                                .unwrap()
                                .unwrap();
                                assert!(found, "scan by label at {a}");
                            }
                            4 => {
                                let changes = sm.changes_after(a - 1, usize::MAX).unwrap().unwrap();
                                assert!(changes.changes.iter().any(|(r, _)| *r == a), "window at {a}");
                                let (newest, _) = changes.changes.last().unwrap();
                                assert!(
                                    sm.list("/o/").unwrap().1 >= *newest,
                                    "the window's newest, {newest}"
                                );
                            }
                            _ => {
                                let announced = *sm.applied.borrow();
                                let found = sm.get(&key(announced)).unwrap();
                                assert!(found.is_some(), "the announced revision {announced}");
                            }
                        }
                    }
                });
            }
        });
        assert_eq!(acked.load(Acquire), APPLIES, "every apply made");
        assert!(sm.db.lost.get().is_none());
    }

    /// A transaction holds at most HOLD_APPLIES applies, or HOLD_BYTES of history; the durable
    /// apply (one every five seconds) commits what is held.
    #[test]
    fn applies_are_held_up_to_a_bound_and_the_durable_apply_commits_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = open(&dir.path().join("sm.redb"));
        let rt = rt();
        for i in 1..HOLD_APPLIES as u64 {
            rt.block_on(sm.apply([put(i)])).unwrap();
        }
        assert_eq!(committed_revision(&sm), 0, "{} applies held", HOLD_APPLIES - 1);
        rt.block_on(sm.apply([put(HOLD_APPLIES as u64)])).unwrap();
        assert_eq!(committed_revision(&sm), HOLD_APPLIES as u64, "the last one commits them all");
        assert!(!sm.db.held.load(Acquire));

        // One apply of a value that does not shrink when packed, as large as the bound.
        let index = HOLD_APPLIES as u64 + 1;
        rt.block_on(sm.apply([put(index)])).unwrap();
        assert!(sm.db.held.load(Acquire));
        let big = Op::Put {
            key: "/big".into(),
            value: format!(r#"{{"data":"{}"}}"#, crate::raft::packed::tests::incompressible(HOLD_BYTES, 7))
                .into(),
            expect: Expect::Any,
        };
        let index = index + 1;
        let entry = Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(Request::new(vec![big])),
        };
        rt.block_on(sm.apply([entry])).unwrap();
        assert!(!sm.db.held.load(Acquire), "committed for its history's size");
        assert_eq!(committed_revision(&sm), index);

        rt.block_on(sm.apply([put(index + 1)])).unwrap();
        assert!(sm.db.held.load(Acquire));
        *sm.last_durable.lock().unwrap() = std::time::Instant::now() - DURABLE_EVERY;
        rt.block_on(sm.apply([put(index + 2)])).unwrap();
        assert!(!sm.db.held.load(Acquire), "the durable apply commits");
        assert_eq!(committed_revision(&sm), index + 2);
    }

    /// A history compaction commits the applies held before it begins its own transaction, so
    /// that its failure could roll back none of them.
    #[test]
    fn a_compaction_commits_the_applies_held_first() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = open(&dir.path().join("sm.redb"));
        rt().block_on(sm.apply([put(1), put(2)])).unwrap();
        assert!(sm.db.held.load(Acquire));
        let alone = sm.db.write_alone().unwrap();
        assert_eq!(sm.db.lock().applies, 0, "a transaction of its own");
        assert!(sm.db.lock().txn.is_none() && !sm.db.held.load(Acquire));
        assert_eq!(committed_revision(&sm), 2, "the applies held are committed");
        drop(alone);
        assert!(sm.db.lost.get().is_none(), "rolling back nothing loses nothing");
        rt().block_on(sm.apply([put(3)])).unwrap();
        let retention = Retention { max_age: std::time::Duration::from_secs(3600), max_revisions: 1 };
        sm.compact_history(retention, 0).unwrap();
        assert!(!sm.db.held.load(Acquire));
        assert_eq!(committed_revision(&sm), 3);
        assert!(matches!(sm.changes_after(0, 10).unwrap(), Err(Compacted { .. })), "compacted");
    }

    /// A compaction with more to drop than one part holds drops it all, part after part, and
    /// only that: the revisions kept are kept, and what it dropped stays dropped after the
    /// state machine is opened again.
    #[test]
    fn a_long_compaction_drops_everything_due_in_parts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sm.redb");
        let total = 2 * COMPACT_AT_ONCE as u64 + 500;
        {
            let mut sm = open(&path);
            rt().block_on(sm.apply((1..=total).map(put))).unwrap();
            let retention = Retention { max_age: std::time::Duration::from_secs(3600), max_revisions: 10 };
            let parts: Vec<bool> = (0..3).map(|_| sm.compact_part(retention, 0).unwrap()).collect();
            assert_eq!(parts, [true, true, false], "two full parts, then the rest");
            assert!(!sm.compact_part(retention, 0).unwrap(), "nothing more due");
            assert!(matches!(sm.changes_after(total - 12, 100).unwrap(), Err(Compacted { .. })));
            let kept = sm.changes_after(total - 11, 100).unwrap().unwrap();
            assert_eq!(kept.changes.len(), 11, "the revisions from the last applied - 10 on");
        }
        let sm = open(&path);
        assert!(matches!(sm.changes_after(total - 12, 100).unwrap(), Err(Compacted { .. })));
        assert_eq!(sm.changes_after(total - 11, 100).unwrap().unwrap().changes.len(), 11);
    }

    /// Records older than the retention's age go whatever their count, part after part; the
    /// younger ones stay.
    #[test]
    fn a_compaction_by_age_drops_the_old_records_in_parts() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = open(&dir.path().join("sm.redb"));
        let old = 2 * COMPACT_AT_ONCE as u64 + 500;
        rt().block_on(sm.apply((1..=old).map(put))).unwrap();
        // The records' times are the wall clock's: an hour on, all of them are old.
        let later_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()
            as u64
            + 3_600_000;
        let retention = Retention { max_age: std::time::Duration::from_secs(60), max_revisions: 1_000_000 };
        assert!(sm.compact_part(retention, later_ms).unwrap(), "more than one part due");
        sm.compact_history(retention, later_ms).unwrap();
        assert!(matches!(sm.changes_after(old - 1, 10).unwrap(), Err(Compacted { .. })), "all old: gone");
        // Young records (written now, compacted as of now) stay.
        rt().block_on(sm.apply((old + 1..=old + 5).map(put))).unwrap();
        let now_ms = later_ms - 3_600_000;
        sm.compact_history(retention, now_ms).unwrap();
        assert_eq!(sm.changes_after(old, 10).unwrap().unwrap().changes.len(), 5);
    }

    /// A member that stops commits the applies held: started again, it has them, and openraft
    /// applies nothing twice.
    #[test]
    fn the_applies_held_are_committed_when_the_state_machine_closes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sm.redb");
        {
            let mut sm = open(&path);
            rt().block_on(sm.apply([put(1), put(2)])).unwrap();
            rt().block_on(sm.apply([put(3)])).unwrap();
            assert!(sm.db.held.load(Acquire));
            let clone = sm.clone();
            drop(sm);
            assert!(clone.db.held.load(Acquire), "a clone still holds them");
        }
        let mut sm = open(&path);
        let (last, _) = rt().block_on(sm.applied_state()).unwrap();
        assert_eq!(last.map(|l| l.index), Some(3));
        assert_eq!(sm.list("/o/").unwrap().0.len(), 3);
    }

    /// Applies counted as done that are rolled back (a write that failed part way) make every
    /// later read and apply fail, naming why, rather than serve a state without them.
    #[test]
    fn applies_rolled_back_make_every_read_and_apply_fail() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = open(&dir.path().join("sm.redb"));
        let rt = rt();
        rt.block_on(sm.apply([put(1)])).unwrap();
        {
            let mut writing = sm.db.write().unwrap();
            writing.applied(0);
            // Dropped: rolled back, as a `?` in the middle of an apply does.
        }
        assert!(!sm.db.held.load(Acquire));
        let err = sm.get("/o/0001").unwrap_err().to_string();
        assert!(err.contains("applies counted as done were lost") && err.contains("2 applies"), "{err}");
        let err = rt.block_on(sm.apply([put(2)])).unwrap_err().to_string();
        assert!(err.contains("were lost"), "{err}");
        // A write transaction without applies in it rolls back harmlessly.
        let fresh = tempfile::tempdir().unwrap();
        let sm = open(&fresh.path().join("sm.redb"));
        drop(sm.db.write().unwrap());
        assert!(sm.get("/o/0001").unwrap().is_none());
    }
}
