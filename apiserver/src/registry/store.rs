//! The storage under the registry: a key-value store with revisions, a change history, and
//! writes that are atomic transactions with preconditions ([`Request`]). The real one is a
//! Raft member on disk ([`RaftNode`]); [`MemStore`] keeps the same semantics in memory, so
//! admission and access rules get fast unit tests. Both pass the conformance suite in
//! `apiserver/tests/registry.rs`.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;

use crate::raft::history::{Change, Changes, Compacted};
use crate::raft::{Outcome, RaftNode, Request, Response, Scan, Stored, Visit, WriteError};

/// A boxed future, for the trait's async methods.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A store that cannot serve a read (storage failing, member stopping).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(pub String);

/// Every key under a prefix and the revision that listing is exactly the state at.
pub type Listing = (Vec<(String, Stored)>, u64);

/// What the registry needs of its storage.
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// The current value of `key` on this member (no barrier).
    fn get(&self, key: &str) -> Result<Option<Stored>, StoreError>;
    /// Every key under `prefix` now, and the revision of that state.
    fn list(&self, prefix: &str) -> Result<Listing, StoreError>;
    /// Visits the keys `scan` asks for, in key order, with their values as they were at its
    /// revision (`None`: now), until `visit` says stop; returns that revision. It may leave
    /// out keys whose labels cannot meet `scan.labels`, never others.
    fn scan(&self, scan: Scan<'_>, visit: &mut Visit<'_>) -> Result<Result<u64, Compacted>, StoreError>;
    /// The changes after revision `after`, at most `max` revisions of them.
    fn changes_after(&self, after: u64, max: usize) -> Result<Result<Changes, Compacted>, StoreError>;
    /// The last applied revision, as it changes.
    fn subscribe(&self) -> tokio::sync::watch::Receiver<u64>;
    /// Waits until this member has applied everything committed before the call
    /// (linearizable reads).
    fn read_barrier(&self) -> BoxFuture<'_, Result<(), StoreError>>;
    /// Commits `request` (through Raft, on the real store).
    fn write(&self, request: Request) -> BoxFuture<'_, Result<Response, WriteError>>;
}

fn storage(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

impl Store for RaftNode {
    fn get(&self, key: &str) -> Result<Option<Stored>, StoreError> {
        self.state().get(key).map_err(storage)
    }

    fn list(&self, prefix: &str) -> Result<Listing, StoreError> {
        self.state().list(prefix).map_err(storage)
    }

    fn scan(&self, scan: Scan<'_>, visit: &mut Visit<'_>) -> Result<Result<u64, Compacted>, StoreError> {
        self.state().scan(scan, visit).map_err(storage)
    }

    fn changes_after(&self, after: u64, max: usize) -> Result<Result<Changes, Compacted>, StoreError> {
        self.state().changes_after(after, max).map_err(storage)
    }

    fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.state().subscribe()
    }

    fn read_barrier(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move { RaftNode::read_barrier(self).await.map_err(storage) })
    }

    fn write(&self, request: Request) -> BoxFuture<'_, Result<Response, WriteError>> {
        Box::pin(RaftNode::write(self, request))
    }
}

/// The store in memory: the same transactions, revisions and history as the state machine,
/// without Raft or disk. For unit tests.
#[derive(Debug)]
pub struct MemStore {
    inner: Mutex<Mem>,
    applied: tokio::sync::watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct Mem {
    objects: BTreeMap<String, Stored>,
    /// Per revision, its changes (never compacted unless asked).
    history: BTreeMap<u64, Vec<Change>>,
    compacted: u64,
    revision: u64,
}

impl Default for MemStore {
    fn default() -> Self {
        Self { inner: Mutex::default(), applied: tokio::sync::watch::Sender::new(0) }
    }
}

impl MemStore {
    /// An empty store at revision 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// Drops the history up to and including `upto` (as the state machine's retention does).
    pub fn compact(&self, upto: u64) {
        let mut m = self.inner.lock().expect("store lock");
        m.history = m.history.split_off(&(upto + 1));
        m.compacted = m.compacted.max(upto);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Mem> {
        self.inner.lock().expect("store lock")
    }
}

impl Mem {
    fn listing(&self, prefix: &str) -> Listing {
        let items = self
            .objects
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        (items, self.revision)
    }
}

impl Store for MemStore {
    fn get(&self, key: &str) -> Result<Option<Stored>, StoreError> {
        Ok(self.lock().objects.get(key).cloned())
    }

    fn list(&self, prefix: &str) -> Result<Listing, StoreError> {
        Ok(self.lock().listing(prefix))
    }

    fn scan(&self, scan: Scan<'_>, visit: &mut Visit<'_>) -> Result<Result<u64, Compacted>, StoreError> {
        // Everything under the prefix at the revision, then visited outside the lock (a
        // visitor may read the store). No label index: every key is visited.
        let (items, at) = {
            let m = self.lock();
            let (current, now) = m.listing(scan.prefix);
            match scan.at.filter(|&at| at < now) {
                None => (current, now),
                Some(at) if at < m.compacted => {
                    return Ok(Err(Compacted { asked: at, compacted: m.compacted }));
                }
                Some(at) => {
                    let since: Vec<Change> =
                        m.history.range(at + 1..).flat_map(|(_, c)| c.iter().cloned()).collect();
                    (crate::raft::history::state_at(current, since, |k| k.starts_with(scan.prefix)), at)
                }
            }
        };
        for (key, stored) in items {
            if scan.after.is_none_or(|a| key.as_str() > a) && !visit(key, stored) {
                break;
            }
        }
        Ok(Ok(at))
    }

    fn changes_after(&self, after: u64, max: usize) -> Result<Result<Changes, Compacted>, StoreError> {
        let m = self.lock();
        if after < m.compacted {
            return Ok(Err(Compacted { asked: after, compacted: m.compacted }));
        }
        let mut upto = m.revision.max(after);
        let mut changes = Vec::new();
        for (n, (rev, record)) in m.history.range(after + 1..).enumerate() {
            if n == max {
                upto = rev - 1;
                break;
            }
            changes.extend(record.iter().cloned().map(|c| (*rev, std::sync::Arc::new(c))));
        }
        Ok(Ok(Changes { changes, upto }))
    }

    fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.applied.subscribe()
    }

    fn read_barrier(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }

    fn write(&self, request: Request) -> BoxFuture<'_, Result<Response, WriteError>> {
        let response = {
            let mut m = self.lock();
            // Every entry takes a revision, applied or not, as every Raft entry takes an index.
            m.revision += 1;
            let revision = m.revision;
            let outcome = match request.check(|k| m.objects.get(k).cloned()) {
                Err(refused) => refused,
                Ok(held) => {
                    let mut changes = Vec::new();
                    for (op, old) in request.ops.iter().zip(held) {
                        let new = match op {
                            crate::raft::Op::Put { key, value, .. } => {
                                let create_revision = old.as_ref().map_or(revision, |o| o.create_revision);
                                let new = Stored {
                                    create_revision,
                                    mod_revision: revision,
                                    value: String::from(&**value),
                                };
                                m.objects.insert(key.clone(), new.clone());
                                Some(new)
                            }
                            crate::raft::Op::Delete { key, .. } => {
                                m.objects.remove(key);
                                None
                            }
                            crate::raft::Op::Check { .. } => continue,
                        };
                        if old.is_some() || new.is_some() {
                            changes.push(Change::new(op.key().to_owned(), old, new));
                        }
                    }
                    m.history.insert(revision, changes);
                    Outcome::Applied { prev: Vec::new() }
                }
            };
            Response { revision, outcome, batch: Vec::new() }
        };
        self.applied.send_replace(response.revision);
        Box::pin(async move { Ok(response) })
    }
}
