//! A running Raft member: openraft's `Raft` over [`LogStore`] and [`StateMachine`].
//!
//! The embedded single-node default is a one-voter cluster that goes through exactly this code:
//! every write is a Raft entry, appended, fsync'd, committed and applied before it is
//! acknowledged. A member of a cluster of several runs the same code with a peer transport
//! ([`super::rpc::Network`] on libp2p) instead of [`NoPeers`]; see [`super::cluster`] for
//! joining, forwarding and read index.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    CheckIsLeaderError, ClientWriteError, InstallSnapshotError, NetworkError, RPCError, RaftError,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{Config, Raft, ServerState, SnapshotPolicy};

use super::cluster::Peers;
use super::history::Retention;
use super::rpc::{MAX_ENTRY_BYTES, MAX_OPS, SNAPSHOT_CHUNK_BYTES, request_bytes};
use super::{
    Imported, LogOpenError, LogStore, Member, NodeId, Request, Response, StateMachine, TypeConfig,
    ensure_tombstone, import_redb,
};

/// Why a member could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A database file could not be opened (locked by another process, corrupt, no access).
    #[error("cannot open {path}: {source}")]
    Open {
        /// The file.
        path: String,
        /// Why.
        source: redb::DatabaseError,
    },
    /// The Raft log could not be opened or imported (no access, a disk error).
    #[error("cannot open the Raft log {path}: {source}")]
    Log {
        /// The file or directory.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Another process holds the data dir's storage.
    #[error(
        "the data dir {dir} is in use by another univrs member on this machine (`ui up` or `ui apiserver`): stop it first, or pass --data-dir DIR to run another"
    )]
    InUse {
        /// The data dir.
        dir: String,
    },
    /// openraft refused to start.
    #[error("raft: {0}")]
    Raft(String),
}

/// Why a write was not committed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum WriteError {
    /// No leader could take the write (none elected, or this member cannot reach it).
    #[error("no leader can take the write now: {0}")]
    NotLeader(String),
    /// The write was sent to the leader but its outcome is unknown (the leader failed or
    /// did not answer in time): it may or may not be committed.
    #[error("the write's outcome is unknown: {0}")]
    Unknown(String),
    /// The member is shutting down or broken.
    #[error("raft is not running: {0}")]
    Fatal(String),
    /// The write is larger than one log entry may be; it was not sent anywhere.
    #[error("the write is too large: {0}")]
    TooLarge(String),
}

/// Why a linearizable read could not be served.
#[derive(Clone, Debug, thiserror::Error)]
#[error("cannot confirm leadership for a linearizable read: {0}")]
pub struct ReadError(pub(super) String);

/// Tunables of a member.
#[derive(Clone, Debug)]
pub struct Options {
    /// Build a snapshot (and purge the log behind it) after this many entries.
    pub snapshot_every: u64,
    /// Entries kept in the log behind a snapshot, for slow followers.
    pub keep_behind_snapshot: u64,
    /// How much change history (for watches) is kept.
    pub history: Retention,
    /// Most writes committed in one entry (group commit, [`batch_writes`]); 1: each alone.
    pub write_batch: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            snapshot_every: 100_000,
            keep_behind_snapshot: 1_000,
            history: Retention::default(),
            write_batch: MAX_BATCH,
        }
    }
}

/// How often old history is dropped.
const COMPACT_HISTORY_EVERY: Duration = Duration::from_secs(10);

/// A running member.
#[derive(Clone)]
pub struct RaftNode {
    pub(super) raft: Raft<TypeConfig>,
    state: StateMachine,
    /// The other members, when this one runs with a transport.
    pub(super) peers: Option<Peers>,
    /// Drops old history now and then; aborted when the member shuts down.
    compactor: Arc<tokio::task::JoinHandle<()>>,
    /// Follows the leader for the metrics; aborted when the member shuts down.
    leader_watch: Arc<tokio::task::JoinHandle<()>>,
    /// Writes waiting to be committed together ([`batch_writes`]).
    writes: tokio::sync::mpsc::UnboundedSender<Queued>,
    /// Forms the batches; aborted when the member shuts down.
    batcher: Arc<tokio::task::JoinHandle<()>>,
    /// Reads waiting for a read barrier ([`batch_barriers`]).
    barriers: tokio::sync::mpsc::UnboundedSender<Barrier>,
    /// Runs the barriers for all who wait ([`batch_barriers`]); it ends when the last clone
    /// of this member goes, and is aborted when the member shuts down.
    barrier_task: Arc<tokio::task::JoinHandle<()>>,
}

/// A read waiting for a barrier begun after it asked.
type Barrier = tokio::sync::oneshot::Sender<Result<(), ReadError>>;

impl std::fmt::Debug for RaftNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftNode").finish_non_exhaustive()
    }
}

/// The only member's id in a single-voter cluster.
pub const SINGLE_NODE_ID: NodeId = 1;

impl RaftNode {
    /// Starts (or resumes) the single-voter cluster whose data is in `dir`, and waits until it
    /// leads.
    pub async fn start_single(dir: &Path, options: Options) -> Result<Self, StartError> {
        let (log, state) = open_storage(dir).await?;
        let log = log.of_member(SINGLE_NODE_ID);
        let raft = Raft::new(SINGLE_NODE_ID, raft_config(&options, false)?, NoPeers, log, state.clone())
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        if !raft.is_initialized().await.map_err(|e| StartError::Raft(e.to_string()))? {
            let members = BTreeMap::from([(SINGLE_NODE_ID, Member::default())]);
            raft.initialize(members).await.map_err(|e| StartError::Raft(e.to_string()))?;
        }
        raft.wait(Some(Duration::from_secs(30)))
            .state(ServerState::Leader, "single voter becomes leader")
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        Ok(Self::assemble(raft, state, None, &options))
    }

    pub(super) fn assemble(
        raft: Raft<TypeConfig>,
        state: StateMachine,
        peers: Option<Peers>,
        options: &Options,
    ) -> Self {
        let compactor = tokio::spawn(compact_history(state.clone(), options.history));
        let leader_watch = tokio::spawn(watch_leader(raft.server_metrics()));
        let (writes, queued) = tokio::sync::mpsc::unbounded_channel();
        let batcher =
            tokio::spawn(batch_writes(raft.clone(), queued, options.write_batch.clamp(1, MAX_BATCH)));
        let (barriers, waiting) = tokio::sync::mpsc::unbounded_channel();
        // The raft handle and the transport only: not this member, whose last clone going
        // closes the channel and ends the task.
        let (for_barriers, peers_for_barriers) = (raft.clone(), peers.clone());
        let barrier_task = tokio::spawn(batch_barriers(
            move || {
                let (raft, peers) = (for_barriers.clone(), peers_for_barriers.clone());
                async move { barrier_once(&raft, peers.as_ref()).await }
            },
            waiting,
        ));
        Self {
            raft,
            state,
            peers,
            compactor: Arc::new(compactor),
            leader_watch: Arc::new(leader_watch),
            writes,
            batcher: Arc::new(batcher),
            barriers,
            barrier_task: Arc::new(barrier_task),
        }
    }

    /// Commits `request` through Raft and returns what applying it did. On a follower the
    /// request is forwarded to the leader.
    pub async fn write(&self, request: Request) -> Result<Response, WriteError> {
        check_size(&request)?;
        let proposal = crate::metrics::metrics().propose();
        let written = match &self.peers {
            None => self.write_here(request).await,
            Some(peers) => peers.write(self, request).await,
        };
        if written.is_err() {
            proposal.failed();
        }
        written
    }

    /// Commits `request` if this member leads, in one log entry with the writes that wait
    /// with it ([`batch_writes`]).
    pub(super) async fn write_here(&self, request: Request) -> Result<Response, WriteError> {
        // Again here: a member's forwarded write arrives here without passing `write`.
        check_size(&request)?;
        // One write: only the batcher puts writes together.
        if !request.batch.is_empty() {
            return Err(WriteError::TooLarge("a write may not carry a batch of writes".to_owned()));
        }
        let (answer, answered) = tokio::sync::oneshot::channel();
        let stopped = || WriteError::Fatal("the member is shutting down".to_owned());
        self.writes.send(Queued { request, answer }).map_err(|_| stopped())?;
        answered.await.unwrap_or_else(|_| Err(stopped()))
    }

    /// Waits until this member may serve a linearizable read (read index: leadership confirmed
    /// and everything committed before now applied); then read from [`Self::state`]. On a
    /// follower the leader is asked for its read index.
    ///
    /// Reads that wait together share one barrier begun after each of them asked
    /// ([`batch_barriers`]): as good as one of their own, at the cost of one.
    pub async fn read_barrier(&self) -> Result<(), ReadError> {
        let stopped = || ReadError("the member is shutting down".to_owned());
        let (answer, answered) = tokio::sync::oneshot::channel();
        self.barriers.send(answer).map_err(|_| stopped())?;
        answered.await.unwrap_or_else(|_| Err(stopped()))
    }

    /// The local state machine, for reads.
    pub fn state(&self) -> &StateMachine {
        &self.state
    }

    /// The index of the last entry applied here.
    pub fn last_applied(&self) -> u64 {
        self.raft.metrics().borrow().last_applied.map_or(0, |l| l.index)
    }

    /// Builds a snapshot of everything applied so far and waits until it exists; openraft
    /// then purges the log behind it (log compaction).
    pub async fn snapshot(&self) -> Result<u64, WriteError> {
        let applied = self.last_applied();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        // openraft ignores a trigger while a snapshot is being built (an automatic one, say, that
        // stops short of `applied`): trigger again until one covers what was applied.
        loop {
            self.raft.trigger().snapshot().await.map_err(|e| WriteError::Fatal(e.to_string()))?;
            let covered = self
                .raft
                .wait(Some(Duration::from_secs(1)))
                .metrics(
                    |m| m.snapshot.is_some_and(|s| s.index >= applied),
                    "snapshot covers what was applied",
                )
                .await;
            match covered {
                Ok(metrics) => return Ok(metrics.snapshot.map_or(0, |s| s.index)),
                Err(_) if tokio::time::Instant::now() < deadline => continue,
                Err(e) => return Err(WriteError::Fatal(e.to_string())),
            }
        }
    }

    /// The index of the first entry still in the log (entries before it were compacted).
    pub fn first_log_index(&self) -> u64 {
        self.raft.metrics().borrow().purged.map_or(0, |p| p.index + 1)
    }

    /// Stops the member; its data stays for the next start.
    pub async fn shutdown(&self) {
        self.compactor.abort();
        self.leader_watch.abort();
        self.batcher.abort();
        self.barrier_task.abort();
        if let Some(peers) = &self.peers {
            peers.stop();
        }
        let _ = self.raft.shutdown().await;
    }
}

/// Records the leader this member knows of, and every change of it, in the metrics; logs each
/// change of leader and of membership (a member joined, became a voter, was removed). From
/// the server metrics, which change with the vote, the leader and the membership only (the
/// full metrics change with every entry written and applied: a wake-up per write).
async fn watch_leader(
    mut metrics: tokio::sync::watch::Receiver<openraft::metrics::RaftServerMetrics<NodeId, Member>>,
) {
    let mut known = None;
    let mut members: Option<(Vec<NodeId>, Vec<NodeId>)> = None;
    loop {
        let (leader, term, now) = {
            let m = metrics.borrow_and_update();
            let ms = m.membership_config.membership();
            let voters: Vec<NodeId> = ms.voter_ids().collect();
            let learners: Vec<NodeId> = ms.learner_ids().collect();
            (m.current_leader, m.vote.leader_id().get_term(), (voters, learners))
        };
        crate::metrics::metrics().leader_seen(known, leader);
        if leader != known {
            match leader {
                Some(l) => tracing::info!(term, "leader is member {l} (term {term})"),
                None => tracing::info!(term, "no leader (term {term})"),
            }
        }
        if members.as_ref() != Some(&now) {
            if let Some((voters, learners)) = &members {
                for id in now.0.iter().filter(|id| !voters.contains(id)) {
                    tracing::info!("member {id} is a voter");
                }
                for id in now.1.iter().filter(|id| !learners.contains(id) && !voters.contains(id)) {
                    tracing::info!("member {id} joined (a learner until it has caught up)");
                }
                for id in
                    voters.iter().chain(learners).filter(|id| !now.0.contains(id) && !now.1.contains(id))
                {
                    tracing::info!("member {id} was removed");
                }
            } else if now.0.len() + now.1.len() > 1 {
                tracing::info!(voters = ?now.0, learners = ?now.1, "cluster of {} member(s)", now.0.len() + now.1.len());
            }
            members = Some(now);
        }
        known = leader;
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// A write waiting to be committed.
struct Queued {
    request: Request,
    answer: tokio::sync::oneshot::Sender<Result<Response, WriteError>>,
}

/// Log entries being committed at once: one is being made durable while the next forms, so
/// the writes that arrive during one fsync share the next.
const BATCHES_IN_FLIGHT: usize = 2;

/// Most writes in one entry (the default of [`Options::write_batch`]).
pub const MAX_BATCH: usize = 256;

/// How many read barriers may run at once: a slow one (a leader that went away) holds up
/// only the reads it serves.
const BARRIERS_IN_FLIGHT: usize = 4;

/// Serves the reads waiting for a barrier: everyone waiting when one begins shares it, so a
/// barrier is begun after each of them asked (what makes a read after it linearizable), and
/// the member confirms its leadership once per batch instead of once per read. At most
/// [`BARRIERS_IN_FLIGHT`] at once; while they all run, the next batch gathers.
async fn batch_barriers<F, Fut>(barrier: F, mut waiting: tokio::sync::mpsc::UnboundedReceiver<Barrier>)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), ReadError>> + Send + 'static,
{
    let slots = Arc::new(tokio::sync::Semaphore::new(BARRIERS_IN_FLIGHT));
    while let Some(first) = waiting.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let mut batch = vec![first];
        while let Ok(more) = waiting.try_recv() {
            batch.push(more);
        }
        // Those who gave up waiting (their request went away) cost nothing.
        batch.retain(|b| !b.is_closed());
        if batch.is_empty() {
            continue;
        }
        // Begun only now, after every one of the batch asked.
        let begun = barrier();
        tokio::spawn(async move {
            let result = begun.await;
            for b in batch {
                let _ = b.send(result.clone());
            }
            drop(slot);
        });
    }
}

/// One read barrier: on the leader its read index, on a follower the leader's.
async fn barrier_once(raft: &Raft<TypeConfig>, peers: Option<&Peers>) -> Result<(), ReadError> {
    match peers {
        None => read_index(raft).await.map(drop),
        Some(peers) => peers.read_barrier(raft).await,
    }
}

/// The read index, if this member leads (and has applied up to it).
pub(super) async fn read_index(raft: &Raft<TypeConfig>) -> Result<u64, ReadError> {
    raft.ensure_linearizable()
        .await
        .map(|log_id| log_id.map_or(0, |l| l.index))
        .map_err(|e: RaftError<NodeId, CheckIsLeaderError<NodeId, Member>>| ReadError(e.to_string()))
}

/// Group commit: openraft 0.9 makes every entry durable on its own before it takes the next
/// (one fsync each), so concurrent writes are put into one entry: the writes waiting when a
/// batch forms go, in the order they arrived, into its `batch` (within one entry's size limit,
/// at most `max_batch`), and each gets its own answer (its own revision, outcome and
/// preconditions, exactly as if it had been an entry of its own). A write that arrives alone
/// goes alone, at once, as an ordinary entry. Writes whose caller stopped waiting are dropped
/// before they are proposed. Two batches in flight may reach Raft in either order (neither
/// has been answered yet).
async fn batch_writes(
    raft: Raft<TypeConfig>,
    mut queued: tokio::sync::mpsc::UnboundedReceiver<Queued>,
    max_batch: usize,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(BATCHES_IN_FLIGHT));
    let mut next: Option<Queued> = None;
    loop {
        let first = match next.take() {
            Some(q) => q,
            None => match queued.recv().await {
                Some(q) => q,
                None => return,
            },
        };
        // While both slots are busy, writes wait in the queue: the next batch takes them all.
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        // The batch's own envelope, then each write's.
        let mut bytes = request_bytes(&Request::default()) + request_bytes(&first.request);
        let mut batch = vec![first];
        while batch.len() < max_batch {
            let Ok(q) = queued.try_recv() else { break };
            // Its caller gave up waiting (it was told the outcome is unknown): not proposed.
            if q.answer.is_closed() {
                continue;
            }
            let more = request_bytes(&q.request);
            if bytes + more > MAX_ENTRY_BYTES {
                next = Some(q);
                break;
            }
            bytes += more;
            batch.push(q);
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            commit_batch(&raft, batch).await;
            drop(slot);
        });
    }
}

/// Commits `batch` as one entry and answers each write.
async fn commit_batch(raft: &Raft<TypeConfig>, batch: Vec<Queued>) {
    let mut answers = Vec::with_capacity(batch.len());
    let mut requests = Vec::with_capacity(batch.len());
    for q in batch {
        answers.push(q.answer);
        requests.push(q.request);
    }
    let entry =
        if requests.len() == 1 { requests.remove(0) } else { Request { ops: Vec::new(), batch: requests } };
    let alone = entry.batch.is_empty();
    // `NotLeader` says a write was appended nowhere (clients may send it again: a 503 with
    // `Retry-After`). openraft 0.9 answers `ForwardToLeader` both to a write it refused
    // because this member no longer leads and to one it appended and later cut from its log
    // (`DeleteConflictLog`, when a new leader's log replaced it), which another member that
    // holds it may yet commit (with five members or more). So a write is only proposed while
    // this member leads, and a `ForwardToLeader` after proposing is an unknown outcome.
    let leads = raft.server_metrics().borrow().state == ServerState::Leader
        // The metrics are reported between the core's rounds: a member elected a moment ago
        // (its followers may already forward to it) leads before they say so. Then the core
        // itself is asked.
        || raft.with_raft_state(|st| st.server_state == ServerState::Leader).await.unwrap_or(false);
    let written = if !leads {
        Err(WriteError::NotLeader(format!(
            "this member no longer leads (leader: {:?}): not proposed",
            raft.server_metrics().borrow().current_leader
        )))
    } else {
        match raft.client_write(entry).await {
            Ok(r) => Ok(r.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => Err(WriteError::Unknown(
                format!("the leadership moved (leader: {:?}) while the write was proposed", f.leader_id),
            )),
            // A membership change refused: nothing was appended.
            Err(RaftError::APIError(e)) => Err(WriteError::NotLeader(e.to_string())),
            Err(RaftError::Fatal(e)) => Err(WriteError::Fatal(e.to_string())),
        }
    };
    match written {
        Ok(response) if alone => {
            for a in answers {
                let _ = a.send(Ok(response.clone()));
            }
        }
        Ok(response) => {
            let mut responses = response.batch.into_iter();
            for a in answers {
                let r = responses.next().ok_or_else(|| {
                    WriteError::Unknown("the entry was applied without an answer for this write".to_owned())
                });
                let _ = a.send(r);
            }
        }
        Err(e) => {
            for a in answers {
                let _ = a.send(Err(e.clone()));
            }
        }
    }
}

/// Opens the log and the state machine in `dir`, first importing a log from before the WAL
/// (`raft-log.redb`) if there is one; a tombstone takes that file's place (for every member,
/// once its WAL exists: see `log_store::TOMBSTONE`).
pub(super) async fn open_storage(dir: &Path) -> Result<(LogStore, StateMachine), StartError> {
    let in_use = || StartError::InUse { dir: dir.display().to_string() };
    let log_dir = dir.join("raft-log");
    let legacy = dir.join("raft-log.redb");
    let imported = open_when_released(|| match import_redb(&legacy, &log_dir) {
        Ok(Imported::InUse) => Err(Held::InUse),
        Ok(imported) => Ok(imported),
        Err(source) => Err(Held::Failed(StartError::Log { path: legacy.display().to_string(), source })),
    })
    .await
    .map_err(|e| e.or(in_use()))?;
    if imported == Imported::Done {
        tracing::info!("imported the Raft log of {} into {}", legacy.display(), log_dir.display());
    }
    let log = open_when_released(|| match LogStore::open(&log_dir) {
        Ok(log) => Ok(log),
        Err(LogOpenError::InUse) => Err(Held::InUse),
        Err(LogOpenError::Io { path, source }) => Err(Held::Failed(StartError::Log { path, source })),
        Err(LogOpenError::Damaged { path, why }) => Err(Held::Failed(StartError::Log {
            path,
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "damaged: {why}; the member will not start on a log that may have lost acknowledged entries (move the data dir away and join the member to its cluster again, or restore it)"
                ),
            ),
        })),
    })
    .await
    .map_err(|e| e.or(in_use()))?;
    ensure_tombstone(&legacy)
        .map_err(|source| StartError::Log { path: legacy.display().to_string(), source })?;
    let sm_path = dir.join("state.redb");
    let state = open_when_released(|| match StateMachine::open(&sm_path) {
        Ok(state) => Ok(state),
        Err(redb::DatabaseError::DatabaseAlreadyOpen) => Err(Held::InUse),
        Err(source) => Err(Held::Failed(StartError::Open { path: sm_path.display().to_string(), source })),
    })
    .await
    .map_err(|e| e.or(in_use()))?;
    Ok((log, state))
}

/// Why storage did not open: held by another (waited for), or any other error.
enum Held {
    InUse,
    Failed(StartError),
}

impl Held {
    /// The error, `in_use` if the storage was still held.
    fn or(self, in_use: StartError) -> StartError {
        match self {
            Held::InUse => in_use,
            Held::Failed(e) => e,
        }
    }
}

/// Entries per AppendEntries message, as openraft counts them; the network sends fewer when
/// they pass [`APPEND_BUDGET`](super::rpc::APPEND_BUDGET) bytes.
const MAX_PAYLOAD_ENTRIES: u64 = 64;

/// Refuses a write that one log entry may not hold: every frame limit between members is
/// derived from [`MAX_ENTRY_BYTES`] and [`MAX_OPS`], so a larger entry, once appended, could
/// never be replicated.
fn check_size(request: &Request) -> Result<(), WriteError> {
    if request.ops.len() > MAX_OPS {
        return Err(WriteError::TooLarge(format!(
            "{} operations, more than the {MAX_OPS} one write may hold",
            request.ops.len()
        )));
    }
    let bytes = request_bytes(request);
    if bytes > MAX_ENTRY_BYTES {
        return Err(WriteError::TooLarge(format!(
            "about {bytes} bytes, more than the {MAX_ENTRY_BYTES} one write may hold: make the object smaller"
        )));
    }
    Ok(())
}

/// openraft's configuration of a member.
/// A lone voter elects itself after one election timeout, so it gets a short one; members of
/// a cluster wait longer, so that a busy machine does not make them depose a healthy leader.
pub(super) fn raft_config(options: &Options, with_peers: bool) -> Result<Arc<Config>, StartError> {
    let (election_timeout_min, election_timeout_max) = if with_peers { (500, 1000) } else { (300, 600) };
    let config = Config {
        cluster_name: "univrs".into(),
        heartbeat_interval: 100,
        election_timeout_min,
        election_timeout_max,
        max_payload_entries: MAX_PAYLOAD_ENTRIES,
        snapshot_max_chunk_size: SNAPSHOT_CHUNK_BYTES as u64,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(options.snapshot_every),
        max_in_snapshot_log_to_keep: options.keep_behind_snapshot,
        ..Default::default()
    }
    .validate()
    .map_err(|e| StartError::Raft(e.to_string()))?;
    Ok(Arc::new(config))
}

/// Drops history older than `retention` allows, every [`COMPACT_HISTORY_EVERY`].
async fn compact_history(state: StateMachine, retention: Retention) {
    let mut tick = tokio::time::interval(COMPACT_HISTORY_EVERY);
    loop {
        tick.tick().await;
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        // redb blocks: keep it off the async workers, each part a blocking call of its own, so
        // that an abort (the member's shutdown) stops it after the part in flight rather than
        // after all of them.
        loop {
            let state = state.clone();
            match tokio::task::spawn_blocking(move || state.compact_part(retention, now_ms)).await {
                Ok(Ok(true)) => continue,
                Ok(Ok(false)) => break,
                Ok(Err(e)) => {
                    tracing::warn!("cannot compact the watch history: {e}");
                    break;
                }
                Err(e) => {
                    tracing::warn!("the watch history's compaction failed: {e}");
                    break;
                }
            }
        }
    }
}

/// Opens storage, waiting up to [`RELEASE_WAIT`] while it is still held. After a member in
/// this process shuts down, openraft tasks spawned apart from its core (snapshot building,
/// replication) may still hold the storage for a moment; a restart in the same process waits
/// for them. Storage held for longer (another running member) is reported as the error it is.
async fn open_when_released<T>(open: impl Fn() -> Result<T, Held>) -> Result<T, Held> {
    let deadline = tokio::time::Instant::now() + RELEASE_WAIT;
    loop {
        match open() {
            Err(Held::InUse) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => return other,
        }
    }
}

/// How long a restart waits for a stopped member's storage to be released.
const RELEASE_WAIT: Duration = Duration::from_secs(3);

/// The peer transport of a single-voter cluster: there are no peers, so every attempt to
/// reach one is an error that says so.
#[derive(Clone, Copy, Debug)]
pub struct NoPeers;

fn no_peer<E: std::error::Error>(target: NodeId) -> RPCError<NodeId, Member, E> {
    RPCError::Network(NetworkError::new(&std::io::Error::other(format!(
        "member {target} is unreachable: this build runs single-member clusters only"
    ))))
}

impl RaftNetworkFactory<TypeConfig> for NoPeers {
    type Network = NoPeerClient;

    async fn new_client(&mut self, target: NodeId, _node: &Member) -> Self::Network {
        NoPeerClient { target }
    }
}

/// A client for a peer that cannot be reached.
#[derive(Debug)]
pub struct NoPeerClient {
    target: NodeId,
}

impl RaftNetwork<TypeConfig> for NoPeerClient {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        Err(no_peer(self.target))
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Member, RaftError<NodeId, InstallSnapshotError>>,
    > {
        Err(no_peer(self.target))
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        Err(no_peer(self.target))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::{Expect, Op};

    #[tokio::test]
    async fn reads_share_a_barrier_only_when_it_began_after_they_asked() {
        use std::sync::atomic::{AtomicU64, Ordering};
        // Each barrier answers with its number (as an error, to carry it), so a read knows
        // which one served it; barriers take 20 ms.
        let begun = Arc::new(AtomicU64::new(0));
        let (barriers, waiting) = tokio::sync::mpsc::unbounded_channel::<Barrier>();
        let counter = begun.clone();
        tokio::spawn(batch_barriers(
            move || {
                let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                async move {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    Err(ReadError(n.to_string()))
                }
            },
            waiting,
        ));
        let mut reads = Vec::new();
        for i in 0..200u64 {
            let (barriers, begun) = (barriers.clone(), begun.clone());
            reads.push(tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(i % 50)).await;
                let asked_after = begun.load(Ordering::SeqCst);
                let (answer, answered) = tokio::sync::oneshot::channel();
                barriers.send(answer).unwrap();
                let served_by: u64 = answered.await.unwrap().unwrap_err().0.parse().unwrap();
                (asked_after, served_by)
            }));
        }
        for r in reads {
            let (asked_after, served_by) = r.await.unwrap();
            assert!(served_by > asked_after, "served by barrier {served_by}, begun before it asked");
        }
        // 200 reads over ~50 ms, barriers of 20 ms: a few barriers, not one each.
        let n = begun.load(Ordering::SeqCst);
        assert!((1..100).contains(&n), "{n} barriers for 200 reads");
    }

    fn put(i: usize, value: String) -> Op {
        Op::Put { key: format!("/k/{i}"), value: value.into(), expect: Expect::Any }
    }

    #[test]
    fn a_write_one_entry_cannot_hold_is_refused() {
        let fits = Request { batch: Vec::new(), ops: vec![put(0, "x".repeat(3 * 1024 * 1024))] };
        assert!(check_size(&fits).is_ok());
        let too_large = Request { batch: Vec::new(), ops: vec![put(0, "x".repeat(MAX_ENTRY_BYTES))] };
        assert!(matches!(check_size(&too_large), Err(WriteError::TooLarge(why)) if why.contains("smaller")));
        let split = Request {
            batch: Vec::new(),
            ops: (0..2).map(|i| put(i, "x".repeat(MAX_ENTRY_BYTES / 2))).collect(),
        };
        assert!(matches!(check_size(&split), Err(WriteError::TooLarge(_))), "the sum counts");
        let many = Request { batch: Vec::new(), ops: (0..=MAX_OPS).map(|i| put(i, String::new())).collect() };
        assert!(matches!(check_size(&many), Err(WriteError::TooLarge(why)) if why.contains("operations")));
        let enough =
            Request { batch: Vec::new(), ops: (0..MAX_OPS).map(|i| put(i, String::new())).collect() };
        assert!(check_size(&enough).is_ok());
    }
}
