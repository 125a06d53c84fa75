//! Indexes the registry keeps by following the store's change history (each signer's quota
//! usage, the AgentGrants by agent): read for users' requests only, so that after a long
//! run of members' writes, or on a member no user has written through yet, the first read
//! must follow thousands of changes or read every object. On an async worker that stalls
//! everything else the member does, its Raft heartbeats included (a member lost its
//! leadership so in the benchmark). So an async read ([`Followed::read`]) follows in place
//! only a few changes, uncontended and without a rebuild; anything more runs on a blocking
//! thread, one such catch-up per index at a time, the other async reads awaiting it without
//! a thread. The synchronous reads ([`Followed::read_now`]: the access rules) follow whatever
//! is left where they are, so their callers read asynchronously first
//! ([`super::Registry::lookup`]): a few changes at most are left then, unless a catch-up
//! starts in between (more than [`IN_PLACE`] revisions since), which they wait for.

use std::sync::{Arc, Mutex, MutexGuard};

use crate::raft::history::Change;

use super::{ApiError, Store, scan_now, unavailable};

/// How far behind the last applied revision an index may be and still catch up on an
/// async worker.
pub(crate) const IN_PLACE: u64 = 256;

/// How many revisions of changes one read of the history takes.
const BATCH: usize = 4096;

/// How long a catch-up that failed answers for the async reads behind it while the index is
/// still unbuilt or far behind: they fail with its error rather than read everything again
/// one after another (a request each, every user's request reading the grants), so an index
/// whose store fails costs a scan a second at most.
const FAILED_FOR: std::time::Duration = std::time::Duration::from_secs(1);

/// A catch-up off the async workers that failed: when, and why.
#[derive(Debug)]
struct Failed {
    at: std::time::Instant,
    why: String,
}

/// An index built from the objects under [`Index::prefix`] and then kept up to date change
/// by change.
pub(crate) trait Index: std::fmt::Debug + Default + Send + 'static {
    /// Where the objects it is built from are stored.
    fn prefix() -> String;
    /// The revision it is at (`None`: not built yet).
    fn at(&self) -> Option<u64>;
    /// Takes in the object stored at `key` (a build: the state at one revision, key by key).
    fn insert(&mut self, key: &str, value: &str);
    /// Follows one change, made at `revision`.
    fn change(&mut self, revision: u64, change: &Change);
    /// Everything up to `revision` is in.
    fn advance(&mut self, revision: u64);
}

/// An index and what orders its catch-ups.
#[derive(Debug, Default)]
pub(crate) struct Followed<I> {
    index: Mutex<I>,
    /// Held by the one catch-up that runs off the async workers (moved into its blocking
    /// task, so released when it ends, not when its request goes away): the others await
    /// it here without holding a thread, then find the index caught up.
    gate: Arc<tokio::sync::Mutex<()>>,
    /// The last catch-up behind the gate, if it failed ([`FAILED_FOR`]).
    failed: Mutex<Option<Failed>>,
}

/// Brings `index` up to the last applied revision of `store`. In place (`!anything`), follows
/// at most [`IN_PLACE`] revisions and stops (`false`) where more is left, or where it would
/// have to read every object again: not built yet, or behind what the history still holds.
fn follow<I: Index>(store: &dyn Store, index: &mut I, anything: bool) -> Result<bool, ApiError> {
    loop {
        let applied = *store.subscribe().borrow();
        let Some(at) = index.at() else {
            if !anything {
                return Ok(false);
            }
            // Streamed key by key (the whole state is never held at once) into a new index,
            // which replaces this one only once complete: a scan that fails half-way leaves
            // nothing half-counted behind.
            let mut built = I::default();
            let revision = scan_now(store, &I::prefix(), &mut |key, stored| {
                built.insert(&key, &stored.value);
                true
            })?;
            built.advance(revision);
            *index = built;
            continue;
        };
        if at >= applied {
            return Ok(true);
        }
        let batch = if anything { BATCH } else { IN_PLACE as usize };
        match store.changes_after(at, batch).map_err(unavailable)? {
            // Behind what the history holds: built again from the current state.
            Err(_) if anything => *index = I::default(),
            Err(_) => return Ok(false),
            Ok(batch) => {
                for (revision, change) in &batch.changes {
                    index.change(*revision, change);
                }
                index.advance(batch.upto);
                if !anything {
                    // One batch in place: what was applied since is the next reader's.
                    return Ok(batch.upto >= applied);
                }
            }
        }
    }
}

impl<I: Index> Followed<I> {
    /// The index behind a lock a panic left poisoned: built again (once: the lock is
    /// cleared).
    fn recovered<'a>(&'a self, lock: std::sync::PoisonError<MutexGuard<'a, I>>) -> MutexGuard<'a, I> {
        let mut index = lock.into_inner();
        *index = I::default();
        self.index.clear_poison();
        index
    }

    /// Runs `read` on the index brought up to date here, whatever that takes: for the
    /// synchronous readers (the access rules), which async callers precede with
    /// [`Followed::read`] so that only a few changes are left.
    pub(crate) fn read_now<T>(&self, store: &dyn Store, read: impl FnOnce(&I) -> T) -> Result<T, ApiError> {
        let mut index = self.index.lock().unwrap_or_else(|poisoned| self.recovered(poisoned));
        follow(store, &mut *index, true)?;
        Ok(read(&index))
    }

    /// The index, caught up here if that is cheap: not locked by anyone, at most
    /// [`IN_PLACE`] revisions to follow, and no rebuild.
    fn cheaply(&self, store: &dyn Store) -> Result<Option<MutexGuard<'_, I>>, ApiError> {
        let mut index = match self.index.try_lock() {
            Ok(index) => index,
            Err(std::sync::TryLockError::Poisoned(lock)) => self.recovered(lock),
            Err(std::sync::TryLockError::WouldBlock) => return Ok(None),
        };
        let applied = *store.subscribe().borrow();
        if index.at().is_none_or(|at| applied.saturating_sub(at) > IN_PLACE) {
            return Ok(None);
        }
        Ok(follow(store, &mut *index, false)?.then_some(index))
    }

    /// Runs `read` on the index brought up to date: here when cheap, else on a blocking
    /// thread once the catch-up before it (if any) is over.
    pub(crate) async fn read<T: Send + 'static>(
        self: &Arc<Self>,
        store: &Arc<dyn Store>,
        read: impl FnOnce(&I) -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        if let Some(index) = self.cheaply(&**store)? {
            return Ok(read(&index));
        }
        let gate = self.gate.clone().lock_owned().await;
        // The catch-up this one waited for may have left little or nothing to do.
        if let Some(index) = self.cheaply(&**store)? {
            return Ok(read(&index));
        }
        // Or it failed a moment ago, and the index is still unbuilt or far behind (unlocked:
        // `cheaply` said so; locked, someone may be bringing it up: go on to catch up).
        let failed = {
            let failed = self.failed.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            failed.as_ref().filter(|f| f.at.elapsed() < FAILED_FOR).map(|f| f.why.clone())
        };
        if let Some(why) = failed
            && self.index.try_lock().is_ok()
        {
            return Err(ApiError::Unavailable(why));
        }
        let (this, store) = (self.clone(), store.clone());
        tokio::task::spawn_blocking(move || {
            let _gate = gate;
            let result = this.read_now(&*store, read);
            // Noted before the gate opens (a panic notes nothing: the index is built again).
            let failed = result.as_ref().err().map(|e| Failed {
                at: std::time::Instant::now(),
                why: match e {
                    ApiError::Unavailable(why) => why.clone(),
                    other => other.to_string(),
                },
            });
            *this.failed.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = failed;
            result
        })
        .await
        .map_err(|e| ApiError::Unavailable(format!("following the change history failed: {e}")))?
    }
}
