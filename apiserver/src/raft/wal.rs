//! The Raft log's files: an append-only write-ahead log in segments, as etcd keeps its WAL.
//!
//! A directory of segment files `<16 hex digits>.wal`, numbered in the order they were made.
//! Each starts with [`MAGIC`], then records, each `[length u32][crc32 u32][kind u8][payload]`
//! (little-endian; the length and the CRC cover kind and payload): an entry (its index and
//! its stored bytes), the vote, the committed id, a purge (up to an index) or a truncation
//! (from an index). The log is what the records say, replayed in order: a later entry of the
//! same index replaces an earlier one, a truncation or purge removes entries. A write is one
//! `pwrite` of its records and one `fdatasync` before it is acknowledged; nothing written is
//! ever written over. Segments are preallocated ([`SEGMENT_BYTES`]), so that an fdatasync
//! does not also commit a change of the file's size (a third less time per fdatasync than a
//! growing file here; the first write of a preallocated block still records that it is
//! written); the zeros after the last record end it.
//!
//! A new segment starts with one record restating the vote, committed id and purge as they
//! are then ([`Record::Start`], one CRC), made durable before anything else is written to the
//! segment, so a purge can delete every segment older than the oldest one holding an entry
//! the log still has (oldest first: a crash between two deletions leaves a suffix, which
//! replays the same).
//!
//! At open, a record cut short or failing its CRC in the *last* segment is taken for a write
//! that was never acknowledged (its fdatasync did not return): the segment is cut there
//! (truncated, durably, so no byte of that write is ever read again) and the next writes go
//! to a new segment. (As etcd does: damage to an earlier record of the last segment cannot be
//! told apart from a torn write, and cuts the log there too.) A last segment without its
//! magic, or with its start record cut short and nothing after it, was being made: it is
//! removed, and the one before takes the writes (a cut one too: its torn bytes are gone).
//! Such a record in any other segment, records after zeros in one, a segment whose first
//! record is not its start, or a start record that fails with anything after it, is damage:
//! the member refuses to start rather than lose acknowledged entries silently. After a failed
//! write or fdatasync the log acknowledges no more writes until it is opened again.
//!
//! Pure parts ([`scan`], [`Index::apply`], [`encode`]) are apart from the file I/O ([`Wal`]).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::ops::RangeBounds;
use std::os::unix::fs::{FileExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The first bytes of every segment.
const MAGIC: &[u8; 8] = b"univrsW1";

/// Bytes a segment is preallocated to; a write that would pass it goes to a new segment
/// (a write larger than a segment goes alone into one).
pub(super) const SEGMENT_BYTES: u64 = 16 << 20;

/// A record's length and CRC.
const HEADER: usize = 8;

/// A segment's start (magic and state records) is one write within these first bytes; a
/// segment being made never has anything past them.
const START_BYTES: usize = 4096;

/// The largest record a segment may claim to hold (one entry is at most a few MiB): a larger
/// length is damage, not a reason to read that much.
const MAX_RECORD: usize = 256 << 20;

const ENTRY: u8 = 1;
const VOTE: u8 = 2;
const COMMITTED: u8 = 3;
const PURGED: u8 = 4;
const TRUNCATED: u8 = 5;
const START: u8 = 6;

/// A field of a [`Record::Start`] that is absent.
const ABSENT: u32 = u32::MAX;

/// One change to the log, as written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Record<'a> {
    /// The entry of `index`, its bytes as stored (packed JSON).
    Entry { index: u64, stored: &'a [u8] },
    /// The vote (JSON).
    Vote(&'a [u8]),
    /// The committed log id (JSON).
    Committed(&'a [u8]),
    /// The entries up to `upto` are gone; `id` is the last purged log id (JSON).
    Purged { upto: u64, id: &'a [u8] },
    /// The entries from `from` on are gone.
    Truncated { from: u64 },
    /// A segment's first record: the vote, committed id and last purge (up to an index, and
    /// its log id) as they were when it was made, each if there was one. One record, so one
    /// CRC: a segment whose start was cut short has no record at all.
    Start { vote: Option<&'a [u8]>, committed: Option<&'a [u8]>, purged: Option<(u64, &'a [u8])> },
}

/// Appends `record`, framed, to `out`.
pub(super) fn encode(record: &Record<'_>, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER]);
    match *record {
        Record::Entry { index, stored } => {
            out.push(ENTRY);
            out.extend_from_slice(&index.to_le_bytes());
            out.extend_from_slice(stored);
        }
        Record::Vote(json) => {
            out.push(VOTE);
            out.extend_from_slice(json);
        }
        Record::Committed(json) => {
            out.push(COMMITTED);
            out.extend_from_slice(json);
        }
        Record::Purged { upto, id } => {
            out.push(PURGED);
            out.extend_from_slice(&upto.to_le_bytes());
            out.extend_from_slice(id);
        }
        Record::Truncated { from } => {
            out.push(TRUNCATED);
            out.extend_from_slice(&from.to_le_bytes());
        }
        Record::Start { vote, committed, purged } => {
            out.push(START);
            let mut field = |parts: Option<[&[u8]; 2]>| match parts {
                Some(parts) => {
                    let len = u32::try_from(parts[0].len() + parts[1].len()).expect("a small field");
                    out.extend_from_slice(&len.to_le_bytes());
                    out.extend_from_slice(parts[0]);
                    out.extend_from_slice(parts[1]);
                }
                None => out.extend_from_slice(&ABSENT.to_le_bytes()),
            };
            field(vote.map(|v| [v, &[]]));
            field(committed.map(|c| [c, &[]]));
            let upto = purged.map(|(upto, _)| upto.to_le_bytes());
            field(purged.zip(upto.as_ref()).map(|((_, id), upto)| [upto.as_slice(), id]));
        }
    }
    let body = &out[start + HEADER..];
    let len = u32::try_from(body.len()).expect("a record is smaller than 4 GiB");
    let crc = crc32fast::hash(body);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + HEADER].copy_from_slice(&crc.to_le_bytes());
}

/// The record in a frame's body (kind and payload) whose CRC matched.
fn decode(body: &[u8]) -> Result<Record<'_>, String> {
    let (&kind, payload) = body.split_first().ok_or("an empty record")?;
    let index_and_rest = |payload: &[u8]| -> Result<(u64, usize), String> {
        let bytes = payload.get(..8).ok_or_else(|| format!("a record of kind {kind} cut short"))?;
        Ok((u64::from_le_bytes(bytes.try_into().expect("8 bytes")), 8))
    };
    Ok(match kind {
        ENTRY => {
            let (index, at) = index_and_rest(payload)?;
            Record::Entry { index, stored: &payload[at..] }
        }
        VOTE => Record::Vote(payload),
        COMMITTED => Record::Committed(payload),
        PURGED => {
            let (upto, at) = index_and_rest(payload)?;
            Record::Purged { upto, id: &payload[at..] }
        }
        TRUNCATED => Record::Truncated { from: index_and_rest(payload)?.0 },
        START => {
            let mut rest = payload;
            let mut field = || -> Result<Option<&[u8]>, String> {
                let len = rest.get(..4).ok_or("a segment's start cut short")?;
                let len = u32::from_le_bytes(len.try_into().expect("4 bytes"));
                rest = &rest[4..];
                if len == ABSENT {
                    return Ok(None);
                }
                let (field, after) =
                    rest.split_at_checked(len as usize).ok_or("a segment's start cut short")?;
                rest = after;
                Ok(Some(field))
            };
            let (vote, committed, purged) = (field()?, field()?, field()?);
            if !rest.is_empty() {
                return Err(format!("{} bytes after a segment's start", rest.len()));
            }
            let purged = match purged {
                Some(p) => {
                    let (upto, id) = p.split_at_checked(8).ok_or("a segment's start cut short")?;
                    Some((u64::from_le_bytes(upto.try_into().expect("8 bytes")), id))
                }
                None => None,
            };
            Record::Start { vote, committed, purged }
        }
        other => return Err(format!("a record of unknown kind {other} (written by a newer version?)")),
    })
}

/// What a segment's bytes hold.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Scanned<'a> {
    /// Its records in order, each with the offset of its payload (after the kind byte).
    pub records: Vec<(u64, Record<'a>)>,
    /// Where the last whole record ends.
    pub end: u64,
    /// Why the records stop before the zeros that end a segment, if they do.
    pub torn: Option<String>,
}

/// Reads a segment's records. `Err` when it does not start with [`MAGIC`] or holds a record
/// with a valid CRC that this version cannot read.
pub(super) fn scan(bytes: &[u8]) -> Result<Scanned<'_>, String> {
    if bytes.get(..MAGIC.len()) != Some(MAGIC.as_slice()) {
        return Err("it does not start as a segment of the Raft log does".into());
    }
    let mut at = MAGIC.len();
    let mut records = Vec::new();
    let torn = loop {
        let rest = &bytes[at..];
        if rest.len() < HEADER {
            break rest.iter().any(|&b| b != 0).then(|| format!("a record header cut short at byte {at}"));
        }
        let len = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(rest[4..HEADER].try_into().expect("4 bytes"));
        if len == 0 && crc == 0 {
            break None;
        }
        if len > MAX_RECORD || len > rest.len() - HEADER {
            break Some(format!("a record at byte {at} claims {len} bytes, more than are left"));
        }
        let body = &rest[HEADER..HEADER + len];
        if crc32fast::hash(body) != crc {
            break Some(format!("the record at byte {at} fails its CRC"));
        }
        let record = decode(body).map_err(|why| format!("at byte {at}: {why}"))?;
        records.push(((at + HEADER + 1) as u64, record));
        at += HEADER + len;
    };
    Ok(Scanned { records, end: at as u64, torn })
}

/// Where an entry's stored bytes are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Loc {
    segment: u64,
    offset: u64,
    len: usize,
}

/// What the records replayed so far say the log is.
#[derive(Debug, Default)]
pub(super) struct Index {
    entries: BTreeMap<u64, Loc>,
    vote: Option<Vec<u8>>,
    committed: Option<Vec<u8>>,
    /// The last purge: up to which index, and its log id.
    purged: Option<(u64, Vec<u8>)>,
}

impl Index {
    /// Takes `record`, whose payload is at `at` in `segment`.
    fn apply(&mut self, segment: u64, at: u64, record: &Record<'_>) {
        match *record {
            Record::Entry { index, stored } => {
                self.entries.insert(index, Loc { segment, offset: at + 8, len: stored.len() });
            }
            Record::Vote(json) => self.vote = Some(json.to_vec()),
            Record::Committed(json) => self.committed = Some(json.to_vec()),
            Record::Purged { upto, id } => {
                self.entries = match upto.checked_add(1) {
                    Some(first_kept) => self.entries.split_off(&first_kept),
                    None => BTreeMap::new(),
                };
                self.purged = Some((upto, id.to_vec()));
            }
            Record::Truncated { from } => {
                self.entries.split_off(&from);
            }
            Record::Start { vote, committed, purged } => {
                if let Some(vote) = vote {
                    self.apply(segment, at, &Record::Vote(vote));
                }
                if let Some(committed) = committed {
                    self.apply(segment, at, &Record::Committed(committed));
                }
                if let Some((upto, id)) = purged {
                    self.apply(segment, at, &Record::Purged { upto, id });
                }
            }
        }
    }

    /// The vote, committed id and purge, for the start of a new segment.
    fn start_record(&self) -> Record<'_> {
        Record::Start {
            vote: self.vote.as_deref(),
            committed: self.committed.as_deref(),
            purged: self.purged.as_ref().map(|(upto, id)| (*upto, id.as_slice())),
        }
    }

    /// The oldest segment holding an entry the log has.
    fn oldest_needed(&self) -> Option<u64> {
        self.entries.values().map(|l| l.segment).min()
    }
}

/// The vote, the committed id and the last purged id, as written (JSON).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct State {
    pub vote: Option<Vec<u8>>,
    pub committed: Option<Vec<u8>>,
    pub purged: Option<Vec<u8>>,
}

/// Why the log could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Another [`Wal`] (in this process or another) has the directory open.
    #[error("the Raft log is open elsewhere")]
    InUse,
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: io::Error,
    },
    /// A segment holds something that is not a log this version wrote.
    #[error(
        "{path} is damaged: {why}; the member will not start on a log that may have lost acknowledged entries"
    )]
    Damaged {
        /// The segment.
        path: String,
        /// What is wrong, and where.
        why: String,
    },
}

/// `e`, naming `path`.
pub(super) fn at(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

fn io_at(path: &Path) -> impl Fn(io::Error) -> OpenError + '_ {
    move |source| OpenError::Io { path: path.display().to_string(), source }
}

/// The segment being written.
struct Writer {
    segment: u64,
    file: Arc<File>,
    /// Where its next record goes.
    pos: u64,
    /// Why a write failed, if one did: after a failed write or fdatasync what the file holds
    /// is unknown (the kernel may have dropped the pages it could not write), so no later
    /// write is acknowledged either.
    failed: Option<String>,
}

/// The log's files, open for writing. One per directory at a time (a lock file says so).
pub(super) struct Wal {
    dir: PathBuf,
    index: Mutex<Index>,
    segments: Mutex<Segments>,
    writer: Mutex<Writer>,
    _lock: File,
}

/// Handles kept open on segments, at most (the newest): a log of many segments (one between
/// snapshots can be a GiB) does not hold a descriptor for each. An older segment is opened
/// for each read of it; replication and apply read what was just appended, mostly from
/// memory (`log_store::Recent`).
const OPEN_SEGMENTS: usize = 8;

/// The segments in the directory, and handles on some of them.
#[derive(Default)]
struct Segments {
    /// Every segment, by number.
    all: std::collections::BTreeSet<u64>,
    /// Handles on at most [`OPEN_SEGMENTS`] of them, the newest: readers take one and read
    /// without a lock (a segment deleted meanwhile still reads through it).
    open: BTreeMap<u64, Arc<File>>,
}

impl Segments {
    /// A handle on segment `n`, opened now if none is kept.
    fn handle(&mut self, dir: &Path, n: u64) -> io::Result<Arc<File>> {
        if let Some(file) = self.open.get(&n) {
            return Ok(file.clone());
        }
        let path = segment_path(dir, n);
        let file = Arc::new(File::open(&path).map_err(|e| at(&path, e))?);
        self.keep(n, file.clone());
        Ok(file)
    }

    /// Keeps `file`, the handle on segment `n`, dropping the oldest beyond the bound.
    fn keep(&mut self, n: u64, file: Arc<File>) {
        self.all.insert(n);
        self.open.insert(n, file);
        while self.open.len() > OPEN_SEGMENTS {
            self.open.pop_first();
        }
    }

    fn remove(&mut self, n: u64) {
        self.all.remove(&n);
        self.open.remove(&n);
    }
}

fn segment_path(dir: &Path, segment: u64) -> PathBuf {
    dir.join(format!("{segment:016x}.wal"))
}

/// The segment numbers in `dir`, oldest first.
fn segment_numbers(dir: &Path) -> io::Result<Vec<u64>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".wal")) else { continue };
        if stem.len() == 16
            && stem.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            && let Ok(n) = u64::from_str_radix(stem, 16)
        {
            out.push(n);
        }
    }
    out.sort_unstable();
    Ok(out)
}

pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn open_segment(path: &Path, create: bool) -> io::Result<File> {
    OpenOptions::new().read(true).write(true).create_new(create).mode(0o600).open(path)
}

/// Whether `bytes` are a segment whose start was never written whole: a part of [`MAGIC`],
/// then only zeros (preallocated). Anything else without the magic is damage.
fn unstarted(bytes: &[u8]) -> bool {
    let magic = bytes.iter().zip(MAGIC).take_while(|(b, m)| b == m).count();
    magic < MAGIC.len() && bytes[magic..].iter().all(|&b| b == 0)
}

/// Whether `bytes`, a segment with its magic but no whole record, are one whose start record
/// was cut short, with nothing written after it: only zeros past where its start record (as
/// long as its header claims, within [`START_BYTES`]) would end. A start record that fails
/// its CRC with anything after it is damage (records are written only once the start is
/// durable), never taken for a segment being made.
fn start_cut_short(bytes: &[u8]) -> bool {
    let after_magic = &bytes[MAGIC.len().min(bytes.len())..];
    let claimed = match after_magic.get(..4) {
        Some(len) => u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize,
        None => 0,
    };
    if claimed > START_BYTES {
        return after_magic.iter().all(|&b| b == 0);
    }
    after_magic.get(HEADER + claimed..).is_none_or(|rest| rest.iter().all(|&b| b == 0))
}

/// A new segment's first bytes: [`MAGIC`], then a [`Record::Start`] with the vote,
/// committed id and purge `index` holds (one small write, well inside [`START_BYTES`]).
fn segment_start(index: &Index) -> Vec<u8> {
    let mut start = MAGIC.to_vec();
    encode(&index.start_record(), &mut start);
    debug_assert!(start.len() <= START_BYTES, "a segment's start is {} bytes", start.len());
    start
}

/// Makes segment `n` in `dir`, preallocated, starting with `start`: durable, and in the
/// directory durably, before it returns.
fn create_segment(dir: &Path, n: u64, start: &[u8]) -> io::Result<File> {
    let path = segment_path(dir, n);
    let file = open_segment(&path, true)?;
    let made = (|| {
        preallocate(&file)?;
        file.write_all_at(start, 0)?;
        file.sync_all()?;
        sync_dir(dir)
    })();
    if let Err(e) = made {
        // Not left half made, to fail the next attempt as existing.
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    Ok(file)
}

/// Makes `file` at least [`SEGMENT_BYTES`] long, with blocks allocated (they read as zeros).
/// On a filesystem without `fallocate` the segment grows as it is written instead.
fn preallocate(file: &File) -> io::Result<()> {
    match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, SEGMENT_BYTES) {
        Ok(()) | Err(rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::NOSYS) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

impl Wal {
    /// Opens (or creates) the log in `dir`, replaying its records and cutting an
    /// unacknowledged write off the end of its last segment.
    pub fn open(dir: &Path) -> Result<Self, OpenError> {
        use std::os::unix::fs::DirBuilderExt as _;
        if !dir.is_dir() {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io_at(dir))?;
            if let Some(parent) = dir.parent() {
                sync_dir(parent).map_err(io_at(parent))?;
            }
        }
        let lock_path = dir.join("LOCK");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io_at(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(OpenError::InUse),
            Err(std::fs::TryLockError::Error(e)) => return Err(io_at(&lock_path)(e)),
        }
        let mut numbers = segment_numbers(dir).map_err(io_at(dir))?;
        // A last segment without its magic or its start record (nothing past where its start
        // would end) was being made when the member stopped: it holds nothing (writes go to a
        // segment only once its start is durable), and the one before it, if any, takes the
        // writes again.
        while let Some(&n) = numbers.last() {
            let path = segment_path(dir, n);
            let bytes = std::fs::read(&path).map_err(io_at(&path))?;
            let empty = match scan(&bytes) {
                Ok(scanned) => scanned.records.is_empty() && start_cut_short(&bytes),
                Err(_) => unstarted(&bytes),
            };
            if !empty {
                break;
            }
            tracing::warn!("the Raft log's last segment {} holds no record: removing it", path.display());
            std::fs::remove_file(&path).map_err(io_at(&path))?;
            sync_dir(dir).map_err(io_at(dir))?;
            numbers.pop();
        }
        let mut index = Index::default();
        let mut segments = Segments::default();
        // The segment to write next, and where; none if a new one must be made.
        let mut resume = None;
        let mut writer_file = None;
        for (i, &n) in numbers.iter().enumerate() {
            let path = segment_path(dir, n);
            let is_last = i + 1 == numbers.len();
            let bytes = std::fs::read(&path).map_err(io_at(&path))?;
            let damaged = |why: String| OpenError::Damaged { path: path.display().to_string(), why };
            let scanned = scan(&bytes).map_err(damaged)?;
            if !matches!(scanned.records.first(), Some((_, Record::Start { .. }))) {
                return Err(damaged("it does not start with the log's state (a start record)".into()));
            }
            if !is_last {
                if let Some(why) = &scanned.torn {
                    return Err(damaged(why.clone()));
                }
                // Zeros end a segment's records: anything after them in a segment written to
                // the end is a record lost from the middle of the log.
                if bytes[scanned.end as usize..].iter().any(|&b| b != 0) {
                    return Err(damaged(format!(
                        "zeros at byte {} where a record should be, records after them",
                        scanned.end
                    )));
                }
            }
            for (at, record) in &scanned.records {
                index.apply(n, *at, record);
            }
            let file = open_segment(&path, false).map_err(io_at(&path))?;
            if is_last {
                // The rest of the last segment must be zeros for the next replay to stop
                // where this one did: a write cut short may have left bytes past it. Cut
                // there (durably: its torn bytes are gone), the writes go on in a new
                // segment, which starts with the state as replayed. (Found half made at the
                // next open, that one is removed and this one takes the writes again.)
                if bytes[scanned.end as usize..].iter().any(|&b| b != 0) {
                    tracing::warn!(
                        "the Raft log's last segment {} ends in a write that was never acknowledged ({}): cutting it off at byte {}",
                        path.display(),
                        scanned.torn.as_deref().unwrap_or("bytes after its last record"),
                        scanned.end
                    );
                    file.set_len(scanned.end).map_err(io_at(&path))?;
                    file.sync_all().map_err(io_at(&path))?;
                } else {
                    resume = Some((n, scanned.end));
                }
            }
            let file = Arc::new(file);
            segments.keep(n, file.clone());
            if resume.is_some_and(|(segment, _)| segment == n) {
                writer_file = Some(file);
            }
        }
        let writer = match resume.zip(writer_file) {
            Some(((segment, pos), file)) => Writer { segment, file, pos, failed: None },
            None => {
                let n = numbers.last().map_or(1, |n| n + 1);
                let start = segment_start(&index);
                let path = segment_path(dir, n);
                let file = Arc::new(create_segment(dir, n, &start).map_err(io_at(&path))?);
                segments.keep(n, file.clone());
                Writer { segment: n, file, pos: start.len() as u64, failed: None }
            }
        };
        Ok(Self {
            dir: dir.to_owned(),
            index: Mutex::new(index),
            segments: Mutex::new(segments),
            writer: Mutex::new(writer),
            _lock: lock,
        })
    }

    fn lock_index(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().expect("log index lock")
    }

    /// Writes `records` in order, durably (fdatasync'd) before it returns; then the log
    /// answers what they say. Writes are one at a time.
    pub fn write(&self, records: &[Record<'_>]) -> io::Result<()> {
        let mut buf = Vec::new();
        let mut starts = Vec::with_capacity(records.len());
        for record in records {
            starts.push(buf.len() as u64);
            encode(record, &mut buf);
        }
        let mut writer = self.writer.lock().expect("log writer lock");
        if let Some(why) = &writer.failed {
            return Err(io::Error::other(format!("an earlier write of the Raft log failed: {why}")));
        }
        let written = self.write_locked(&mut writer, &buf);
        if let Err(e) = &written {
            writer.failed = Some(e.to_string());
        }
        written?;
        {
            let mut index = self.lock_index();
            for (record, start) in records.iter().zip(starts) {
                index.apply(writer.segment, writer.pos + start + HEADER as u64 + 1, record);
            }
        }
        writer.pos += buf.len() as u64;
        if records.iter().any(|r| matches!(r, Record::Purged { .. })) {
            // The purge is durable: segments left behind cost disk until the next purge,
            // never correctness, so failing to delete one is not a failed write.
            if let Err(e) = self.delete_unneeded(writer.segment) {
                tracing::warn!("cannot delete a segment of the Raft log no longer needed: {e}");
            }
        }
        Ok(())
    }

    /// Writes `buf` where the next records go, in a new segment if it would pass this one's
    /// size, and fdatasyncs it. Errors name the segment.
    fn write_locked(&self, writer: &mut Writer, buf: &[u8]) -> io::Result<()> {
        // The segment's path is made only for an error (not on every write).
        let named = |n: u64| move |e| at(&segment_path(&self.dir, n), e);
        if writer.pos + buf.len() as u64 > SEGMENT_BYTES {
            let n = writer.segment + 1;
            let start = segment_start(&self.lock_index());
            let file = Arc::new(create_segment(&self.dir, n, &start).map_err(named(n))?);
            self.segments.lock().expect("log segments lock").keep(n, file.clone());
            *writer = Writer { segment: n, file, pos: start.len() as u64, failed: None };
        }
        writer.file.write_all_at(buf, writer.pos).map_err(named(writer.segment))?;
        writer.file.sync_data().map_err(named(writer.segment))
    }

    /// Deletes, oldest first, the segments before the oldest one holding an entry the log
    /// has (and before `current`).
    fn delete_unneeded(&self, current: u64) -> io::Result<()> {
        let keep_from = self.lock_index().oldest_needed().unwrap_or(current).min(current);
        let doomed: Vec<u64> = {
            let segments = self.segments.lock().expect("log segments lock");
            segments.all.range(..keep_from).copied().collect()
        };
        for n in doomed {
            let path = segment_path(&self.dir, n);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(at(&path, e)),
            }
            // Readers holding its handle still read it until they drop it.
            self.segments.lock().expect("log segments lock").remove(n);
            // Each deletion durable before the next: a crash part way leaves the newest of
            // them (a suffix), which replays the same; an older one left without a newer one
            // could bring back entries a truncation in the newer removed.
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// The stored bytes of the entries with index in `range`, in order.
    pub fn read(&self, range: impl RangeBounds<u64>) -> io::Result<Vec<(u64, Vec<u8>)>> {
        // Where the entries are and a handle on each of their segments, taken under the
        // index's lock: a purge deletes a segment only once the index no longer names it
        // (after taking that lock), and a handle taken before reads it still.
        let locs: Vec<(u64, Loc, Arc<File>)> = {
            let index = self.lock_index();
            let mut segments = self.segments.lock().expect("log segments lock");
            let mut locs = Vec::new();
            if is_empty(&range) {
                return Ok(Vec::new());
            }
            let mut last: Option<(u64, Arc<File>)> = None;
            for (&i, &loc) in index.entries.range(range) {
                let file = match &last {
                    Some((n, file)) if *n == loc.segment => file.clone(),
                    _ => segments.handle(&self.dir, loc.segment)?,
                };
                last = Some((loc.segment, file.clone()));
                locs.push((i, loc, file));
            }
            locs
        };
        let mut out = Vec::with_capacity(locs.len());
        for (index, loc, file) in locs {
            let mut bytes = vec![0; loc.len];
            file.read_exact_at(&mut bytes, loc.offset)?;
            out.push((index, bytes));
        }
        Ok(out)
    }

    /// The index of the last entry the log has.
    pub fn last_index(&self) -> Option<u64> {
        self.lock_index().entries.last_key_value().map(|(&i, _)| i)
    }

    /// The vote, the committed id and the last purged id written last, as written.
    pub fn state(&self) -> State {
        let index = self.lock_index();
        State {
            vote: index.vote.clone(),
            committed: index.committed.clone(),
            purged: index.purged.as_ref().map(|(_, id)| id.clone()),
        }
    }
}

/// Whether `range` holds no index (`BTreeMap::range` panics on a start after the end; redb
/// answered nothing).
fn is_empty(range: &impl RangeBounds<u64>) -> bool {
    use std::ops::Bound::{Excluded, Included, Unbounded};
    match (range.start_bound(), range.end_bound()) {
        (Included(s), Included(e)) => s > e,
        (Included(s), Excluded(e)) | (Excluded(s), Included(e)) => s >= e,
        (Excluded(s), Excluded(e)) => s.checked_add(1).is_none_or(|next| next >= *e),
        (Unbounded, _) | (_, Unbounded) => false,
    }
}

/// Every record of the segment at `path`, unpacked where it is an entry: for a test that
/// must show a string is nowhere on disk.
pub fn stored_records(path: &Path) -> io::Result<Vec<Vec<u8>>> {
    let bytes = std::fs::read(path)?;
    let scanned = scan(&bytes).map_err(|why| io::Error::new(io::ErrorKind::InvalidData, why))?;
    let mut out = Vec::new();
    for (_, record) in scanned.records {
        out.push(match record {
            Record::Entry { stored, .. } => super::packed::unpack(stored)?.into_owned(),
            Record::Vote(json) | Record::Committed(json) | Record::Purged { id: json, .. } => json.to_vec(),
            Record::Start { vote, committed, purged } => {
                out.extend(
                    vote.into_iter().chain(committed).chain(purged.map(|(_, id)| id)).map(<[u8]>::to_vec),
                );
                continue;
            }
            Record::Truncated { .. } => continue,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(records: &[Record<'_>]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        for r in records {
            encode(r, &mut out);
        }
        out
    }

    fn entries(wal: &Wal) -> Vec<(u64, Vec<u8>)> {
        wal.read(..).unwrap()
    }

    fn e(index: u64, text: &str) -> (u64, Vec<u8>) {
        (index, text.as_bytes().to_vec())
    }

    fn numbers(dir: &Path) -> Vec<u64> {
        segment_numbers(dir).unwrap()
    }

    /// Appends `bytes` to the last segment where its records end, as a write cut short by a
    /// crash leaves them.
    fn leave_after_last_record(dir: &Path, bytes: &[u8]) -> u64 {
        let n = *numbers(dir).last().unwrap();
        let path = segment_path(dir, n);
        let end = scan(&std::fs::read(&path).unwrap()).unwrap().end;
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(bytes, end).unwrap();
        end
    }

    #[test]
    fn what_was_written_is_what_a_restart_reads() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path().join("log");
        {
            let wal = Wal::open(&dir).unwrap();
            wal.write(&[Record::Vote(b"v1")]).unwrap();
            wal.write(&[
                Record::Entry { index: 1, stored: b"a" },
                Record::Entry { index: 2, stored: b"b" },
                Record::Entry { index: 3, stored: b"c" },
            ])
            .unwrap();
            wal.write(&[Record::Committed(b"c2"), Record::Truncated { from: 3 }]).unwrap();
            wal.write(&[Record::Entry { index: 3, stored: b"C" }, Record::Entry { index: 4, stored: b"D" }])
                .unwrap();
            wal.write(&[Record::Purged { upto: 1, id: b"p1" }]).unwrap();
            assert_eq!(entries(&wal), [e(2, "b"), e(3, "C"), e(4, "D")]);
            assert_eq!(wal.read(3..=3).unwrap(), [e(3, "C")]);
            #[allow(clippy::reversed_empty_ranges)]
            let backwards = wal.read(4..2).unwrap();
            assert!(backwards.is_empty(), "a range that ends before it starts holds nothing");
            assert_eq!(wal.last_index(), Some(4));
        }
        let wal = Wal::open(&dir).unwrap();
        assert_eq!(entries(&wal), [e(2, "b"), e(3, "C"), e(4, "D")]);
        assert_eq!(
            wal.state(),
            State {
                vote: Some(b"v1".to_vec()),
                committed: Some(b"c2".to_vec()),
                purged: Some(b"p1".to_vec())
            }
        );
        assert_eq!(numbers(&dir), [1], "one segment, written on after the restart");
        wal.write(&[Record::Entry { index: 5, stored: b"E" }]).unwrap();
        drop(wal);
        assert_eq!(entries(&Wal::open(&dir).unwrap()).len(), 4);
    }

    #[test]
    fn one_directory_is_open_once() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(dir.path()).unwrap();
        assert!(matches!(Wal::open(dir.path()), Err(OpenError::InUse)));
        drop(wal);
        Wal::open(dir.path()).unwrap();
    }

    /// Segments fill and a new one starts with the state; a purge deletes the segments that
    /// hold no entry the log has; a restart reads the same.
    #[test]
    fn segments_roll_over_and_a_purge_deletes_those_no_longer_needed() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        let big = vec![7u8; (SEGMENT_BYTES / 3) as usize];
        let wal = Wal::open(dir).unwrap();
        wal.write(&[Record::Vote(b"vote")]).unwrap();
        for index in 1..=7 {
            wal.write(&[Record::Entry { index, stored: &big }]).unwrap();
        }
        // Two entries a segment: 1-2 in the first (after the vote), 3-4, 5-6, 7.
        assert_eq!(numbers(dir), [1, 2, 3, 4]);
        let held: Vec<u64> = entries(&wal).iter().map(|(i, _)| *i).collect();
        assert_eq!(held, [1, 2, 3, 4, 5, 6, 7]);
        wal.write(&[Record::Purged { upto: 4, id: b"p4" }]).unwrap();
        assert_eq!(numbers(dir), [3, 4], "segments 1 and 2 held only entries up to 4");
        // The vote written in segment 1, now gone, is restated at the start of those kept.
        drop(wal);
        let wal = Wal::open(dir).unwrap();
        assert_eq!(wal.state().vote, Some(b"vote".to_vec()));
        wal.write(&[Record::Vote(b"vote2")]).unwrap();
        drop(wal);
        let wal = Wal::open(dir).unwrap();
        let held: Vec<u64> = entries(&wal).iter().map(|(i, _)| *i).collect();
        assert_eq!(held, [5, 6, 7]);
        assert_eq!(
            wal.state(),
            State { vote: Some(b"vote2".to_vec()), committed: None, purged: Some(b"p4".to_vec()) }
        );
        // Purged past the end: every segment but the one written goes.
        wal.write(&[Record::Purged { upto: 100, id: b"p100" }]).unwrap();
        assert_eq!(numbers(dir), [4]);
        drop(wal);
        let wal = Wal::open(dir).unwrap();
        assert!(entries(&wal).is_empty());
        assert_eq!(
            wal.state(),
            State { vote: Some(b"vote2".to_vec()), committed: None, purged: Some(b"p100".to_vec()) }
        );
    }

    /// A crash part way through a write leaves part of it after the last record: a restart
    /// cuts it off and writes on in a new segment, and the cut bytes never come back, not
    /// even a whole record among them that a shorter later write would leave exposed.
    #[test]
    fn a_write_cut_short_is_cut_off_and_never_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        {
            let wal = Wal::open(dir).unwrap();
            wal.write(&[Record::Entry { index: 1, stored: b"one" }]).unwrap();
        }
        // A torn record, then a whole one (pages of one write reach the disk in any order).
        let mut unacknowledged = Vec::new();
        encode(&Record::Entry { index: 2, stored: b"two, torn" }, &mut unacknowledged);
        unacknowledged[HEADER + 3] ^= 1;
        encode(&Record::Entry { index: 3, stored: b"three, never acknowledged" }, &mut unacknowledged);
        leave_after_last_record(dir, &unacknowledged);
        {
            let wal = Wal::open(dir).unwrap();
            assert_eq!(entries(&wal), [e(1, "one")]);
            assert_eq!(numbers(dir), [1, 2], "written on in a new segment");
            wal.write(&[Record::Entry { index: 2, stored: b"2" }]).unwrap();
        }
        let wal = Wal::open(dir).unwrap();
        assert_eq!(entries(&wal), [e(1, "one"), e(2, "2")]);
        drop(wal);
        // A record cut short at the end of the segment being written.
        let mut cut = Vec::new();
        encode(&Record::Entry { index: 3, stored: b"three" }, &mut cut);
        leave_after_last_record(dir, &cut[..cut.len() - 2]);
        let wal = Wal::open(dir).unwrap();
        assert_eq!(entries(&wal), [e(1, "one"), e(2, "2")]);
        wal.write(&[Record::Entry { index: 3, stored: b"3" }]).unwrap();
        drop(wal);
        assert_eq!(entries(&Wal::open(dir).unwrap()), [e(1, "one"), e(2, "2"), e(3, "3")]);
        // Cut again, then a stop while the next segment was being made: that one is removed
        // and the cut one takes the writes; its torn bytes are gone for good.
        leave_after_last_record(dir, &unacknowledged);
        drop(Wal::open(dir).unwrap());
        let last = *numbers(dir).last().unwrap();
        std::fs::remove_file(segment_path(dir, last)).unwrap();
        std::fs::write(segment_path(dir, last), MAGIC).unwrap();
        let wal = Wal::open(dir).unwrap();
        assert_eq!(*numbers(dir).last().unwrap(), last - 1);
        wal.write(&[Record::Entry { index: 4, stored: b"4" }]).unwrap();
        drop(wal);
        let wal = Wal::open(dir).unwrap();
        assert_eq!(entries(&wal), [e(1, "one"), e(2, "2"), e(3, "3"), e(4, "4")]);
    }

    /// Handles are kept on a few segments only; an entry in any other is read all the same.
    #[test]
    fn entries_in_every_segment_read_with_few_handles_kept() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        let entry = |i: u64| vec![i as u8; (SEGMENT_BYTES / 3) as usize];
        let wal = Wal::open(dir).unwrap();
        for index in 1..=20 {
            wal.write(&[Record::Entry { index, stored: &entry(index) }]).unwrap();
        }
        assert_eq!(numbers(dir).len(), 10);
        let check = |wal: &Wal| {
            assert!(wal.segments.lock().unwrap().open.len() <= OPEN_SEGMENTS);
            for index in [1, 20, 2, 7, 13, 1] {
                assert_eq!(wal.read(index..=index).unwrap(), [(index, entry(index))], "entry {index}");
            }
            let all = wal.read(..).unwrap();
            assert_eq!(all.len(), 20);
            assert!(all.iter().all(|(i, bytes)| *bytes == entry(*i)));
            assert!(wal.segments.lock().unwrap().open.len() <= OPEN_SEGMENTS);
        };
        check(&wal);
        drop(wal);
        check(&Wal::open(dir).unwrap());
    }

    #[test]
    fn damage_before_the_last_segment_stops_the_open() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        let big = vec![7u8; (SEGMENT_BYTES / 3) as usize];
        {
            let wal = Wal::open(dir).unwrap();
            for index in 1..=3 {
                wal.write(&[Record::Entry { index, stored: &big }]).unwrap();
            }
        }
        assert_eq!(numbers(dir), [1, 2]);
        let path = segment_path(dir, 1);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[1000] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let err = Wal::open(dir).err().expect("damage is refused");
        assert!(matches!(&err, OpenError::Damaged { why, .. } if why.contains("CRC")), "{err}");
        assert!(err.to_string().contains(&path.display().to_string()), "{err}");
        // A record's header zeroed (a lost sector): the records after it are not skipped.
        bytes[1000] ^= 1;
        let second = scan(&bytes).unwrap().records[1].0 as usize - HEADER - 1;
        bytes[second..second + HEADER].fill(0);
        std::fs::write(&path, &bytes).unwrap();
        let err = Wal::open(dir).err().expect("a hole is refused");
        assert!(matches!(&err, OpenError::Damaged { why, .. } if why.contains("zeros")), "{err}");
    }

    /// A segment being made when the member stopped (its start not yet durable, or nothing
    /// in it yet) is removed, and the one before takes the writes.
    #[test]
    fn a_segment_left_half_made_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        {
            let wal = Wal::open(dir).unwrap();
            wal.write(&[Record::Vote(b"v"), Record::Entry { index: 1, stored: b"one" }]).unwrap();
        }
        let mut torn_start =
            segment(&[Record::Start { vote: Some(b"v"), committed: Some(b"c"), purged: None }]);
        torn_start.truncate(torn_start.len() - 3);
        for half_made in [vec![0u8; 4096], b"univ".to_vec(), MAGIC.to_vec(), torn_start] {
            std::fs::write(segment_path(dir, 2), &half_made).unwrap();
            let wal = Wal::open(dir).unwrap();
            assert_eq!(numbers(dir), [1], "{half_made:?}");
            assert_eq!(entries(&wal), [e(1, "one")]);
            assert_eq!(wal.state().vote, Some(b"v".to_vec()));
        }
        // A start that fails its CRC with a record after it: damage, not a segment being made.
        let mut damaged_start = segment(&[
            Record::Start { vote: Some(b"v2"), committed: None, purged: None },
            Record::Vote(b"v3"),
        ]);
        damaged_start[MAGIC.len() + HEADER + 2] ^= 1;
        std::fs::write(segment_path(dir, 2), &damaged_start).unwrap();
        assert!(matches!(Wal::open(dir), Err(OpenError::Damaged { .. })));
        // Not a half-made segment: something else, refused.
        std::fs::write(segment_path(dir, 2), b"something else entirely").unwrap();
        assert!(matches!(Wal::open(dir), Err(OpenError::Damaged { .. })));
        std::fs::write(segment_path(dir, 2), segment(&[Record::Entry { index: 2, stored: b"two" }])).unwrap();
        let err = Wal::open(dir).err().expect("a segment without its start is refused");
        assert!(matches!(&err, OpenError::Damaged { why, .. } if why.contains("start record")), "{err}");
        // The only segment, half made (the log's very first start): removed and made again.
        let fresh = tempfile::tempdir().unwrap();
        std::fs::write(segment_path(fresh.path(), 1), &MAGIC[..5]).unwrap();
        let wal = Wal::open(fresh.path()).unwrap();
        assert_eq!(numbers(fresh.path()), [1]);
        wal.write(&[Record::Vote(b"v")]).unwrap();
        drop(wal);
        assert_eq!(Wal::open(fresh.path()).unwrap().state().vote, Some(b"v".to_vec()));
    }

    #[test]
    fn records_read_back_as_written_and_zeros_end_a_segment() {
        let records = [
            Record::Start { vote: Some(b"v0"), committed: None, purged: Some((2, b"p2")) },
            Record::Start { vote: None, committed: Some(b""), purged: None },
            Record::Vote(b"{\"v\":1}"),
            Record::Entry { index: 7, stored: b"seven" },
            Record::Committed(b"null"),
            Record::Purged { upto: 3, id: b"{}" },
            Record::Truncated { from: 9 },
            Record::Entry { index: 9, stored: b"" },
        ];
        let mut bytes = segment(&records);
        let end = bytes.len() as u64;
        bytes.resize(bytes.len() + 100, 0);
        let scanned = scan(&bytes).unwrap();
        assert_eq!(scanned.records.iter().map(|(_, r)| *r).collect::<Vec<_>>(), records);
        assert_eq!((scanned.end, scanned.torn), (end, None));
        // The offsets point at each payload.
        let (at, _) = scanned.records[3];
        assert_eq!(&bytes[at as usize + 8..at as usize + 13], b"seven");
    }

    #[test]
    fn a_record_cut_short_or_altered_ends_the_records_before_it_as_torn() {
        let bytes = segment(&[
            Record::Entry { index: 1, stored: b"one" },
            Record::Entry { index: 2, stored: b"two" },
        ]);
        let first_end = segment(&[Record::Entry { index: 1, stored: b"one" }]).len();
        for cut in first_end + 1..bytes.len() {
            let scanned = scan(&bytes[..cut]).unwrap();
            assert_eq!(scanned.records.len(), 1, "cut at {cut}");
            assert_eq!(scanned.end, first_end as u64);
            assert!(scanned.torn.is_some(), "cut at {cut}");
        }
        for flip in first_end..bytes.len() {
            let mut altered = bytes.clone();
            altered[flip] ^= 0x40;
            let scanned = scan(&altered);
            // An altered length may claim more than is left, an altered body fails its CRC;
            // either way the first record stands and the second is not read.
            let scanned = scanned.unwrap();
            assert_eq!(scanned.records.len(), 1, "flip at {flip}");
            assert!(scanned.torn.is_some(), "flip at {flip}");
        }
        assert!(scan(b"notmagic").is_err());
    }

    #[test]
    fn replay_follows_overwrites_truncations_and_purges() {
        let mut index = Index::default();
        let bytes = segment(&[
            Record::Entry { index: 1, stored: b"a" },
            Record::Entry { index: 2, stored: b"b" },
            Record::Entry { index: 3, stored: b"c" },
            Record::Truncated { from: 3 },
            Record::Entry { index: 3, stored: b"C" },
            Record::Entry { index: 4, stored: b"D" },
            Record::Purged { upto: 1, id: b"p" },
            Record::Entry { index: 2, stored: b"B" },
        ]);
        for (at, r) in scan(&bytes).unwrap().records {
            index.apply(1, at, &r);
        }
        let held: Vec<(u64, &[u8])> = index
            .entries
            .iter()
            .map(|(&i, l)| (i, &bytes[l.offset as usize..l.offset as usize + l.len]))
            .collect();
        assert_eq!(held, [(2, b"B".as_slice()), (3, b"C"), (4, b"D")]);
        assert_eq!(index.purged, Some((1, b"p".to_vec())));
        // A new segment's start restates the purge without removing what the log has.
        let mut again = Index::default();
        let start = segment(&[index.start_record()]);
        for (at, r) in scan(&start).unwrap().records {
            again.apply(2, at, &r);
        }
        assert_eq!(again.purged, index.purged);
        index.apply(2, 0, &Record::Purged { upto: 1, id: b"p" });
        assert_eq!(index.entries.len(), 3);
    }
}
