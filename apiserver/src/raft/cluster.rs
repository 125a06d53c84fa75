//! A member of a cluster of several: starting, joining, serving peers, forwarding, read index
//! and membership changes.
//!
//! **Who may talk to a member.** The transport makes connections (either way) only with the
//! allowed peers: the keys of the nodes in the current Raft membership (voters and learners),
//! and, while this member joins, the member named by `--join` and then the members its cluster
//! named. A task follows the membership and keeps the transport's allowed set in step with it,
//! so a removed member's connections are closed. Anyone else is refused right after the Noise
//! handshake, before it can open a stream: none of its bytes is decoded, nothing of it queued.
//! Every request is checked again when it is handled ([`Reply::Forbidden`] for a non-member),
//! and a Raft message must come from the member it names as its leader or candidate: a member
//! cannot speak for another.
//!
//! **How a member joins.** An existing member adds the newcomer's did and address
//! (`ui cluster add`, member role required): that commits it as a *learner*, so the leader
//! starts replicating to it. The newcomer, started with `--join DID@ADDR` (the did of the
//! member it contacts, so it authenticates the cluster as well), asks that member for the
//! cluster's members and bootstrap (id, CA), catches up, and asks the leader to promote it;
//! the leader makes it a voter once it is less than [`PROMOTE_LAG`] entries behind. A key that
//! no member added is refused at the first step.
//!
//! **Forwarding and reads.** A write on a follower is sent to the leader, which commits it
//! and answers its outcome. At most [`FORWARDS_IN_FLIGHT`] messages of writes are on their way
//! to a leader at once; the writes that arrive meanwhile go together in the next
//! ([`batch_forwards`]), so under load a follower sends one message for several writes, not one
//! each. A write goes only to the member that leads when it leaves (one queued for a former
//! leader is queued again for the new one), and to a leader of the version before
//! [`Rpc::Writes`] one message each ([`Versions`]). A linearizable read on a follower asks the
//! leader for its read index (the leader confirms its leadership with a quorum first) and
//! waits until that index is applied locally.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use libp2p::PeerId;
use openraft::{ChangeMembers, Raft, ServerState};
use tokio::sync::Semaphore;

use super::node::{Options, RaftNode, ReadError, StartError, WriteError, open_storage, raft_config};
use super::rpc::{ForwardBudget, MemberStatus, Network, Refusal, Reply, Rpc, request_bytes};
use super::transport::{CallFailure, Inbound, Transport, TransportError, peer_id};
use super::{Member, NodeId, Request, Response, TypeConfig};

/// A learner this close to the leader's log is promoted to voter.
pub const PROMOTE_LAG: u64 = 100;

/// Peer requests served at once; more wait.
const SERVE_CONCURRENCY: usize = 64;

/// How long a write or read waits for a leader to be elected.
const LEADER_WAIT: Duration = Duration::from_secs(10);

/// How long a forwarded write or read index may take.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

/// Messages of forwarded writes on their way to one leader at once (see [`batch_forwards`]).
const FORWARDS_IN_FLIGHT: usize = 4;

/// Writes waiting to be forwarded; a write that finds the queue full is refused at once (not
/// sent: the client may retry), as the transport refuses calls past its own bound.
const MAX_QUEUED_FORWARDS: usize = 1024;

/// How many times a write that was not sent because the leadership moved is queued again for
/// the new leader.
const FORWARD_RETARGETS: usize = 3;

/// How long past its last chance a forwarded write's caller still waits for the forwarder.
const ANSWER_MARGIN: Duration = Duration::from_secs(2);

/// How many times in a row a joiner's member closes the connection before the joiner takes it
/// as a refusal.
const JOIN_CLOSED_TRIES: u32 = 3;

/// Nodes (voters and learners) a membership may hold. Raft clusters have a handful; the bound
/// keeps a membership, which travels in snapshots and join answers, within the transport's
/// envelope (see `rpc.rs`).
pub const MAX_MEMBERS: usize = 64;

/// The longest API URL a member may have (it is stored in the membership).
pub const MAX_API_URL_BYTES: usize = 1024;

/// How to start a member of a cluster.
#[derive(Debug)]
pub struct MemberConfig {
    /// The member's identity (`member.key`).
    pub key: ed25519_dalek::SigningKey,
    /// Where the member transport listens.
    pub listen: SocketAddr,
    /// The transport address other members use (default: the listen address).
    pub advertise: Option<String>,
    /// The client API's URL, shown by `ui cluster members`.
    pub api: String,
    /// Join the cluster of this member (used only when the data dir is new).
    pub join: Option<JoinTarget>,
    /// What this member hands to members that join (cluster id and CA); empty on a member that
    /// still has to join (it gets the cluster's).
    pub bootstrap: Vec<u8>,
}

/// A member to join through: its did and transport address, written `DID@HOST:PORT`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinTarget {
    /// Its did:key.
    pub did: String,
    /// Its transport address.
    pub addr: String,
}

impl std::str::FromStr for JoinTarget {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (did, addr) = s.rsplit_once('@').ok_or_else(|| {
            format!("{s:?}: expected DID@HOST:PORT (the did and member address of a member)")
        })?;
        if peer_id(did).is_none() {
            return Err(format!("{did:?} is not a did:key"));
        }
        addr.parse::<SocketAddr>().map_err(|_| format!("{addr:?}: expected an IP:PORT member address"))?;
        Ok(Self { did: did.to_owned(), addr: addr.to_owned() })
    }
}

/// Why a membership operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// This member runs without a transport (a lone voter).
    #[error("this member runs alone: restart it with --peer-listen to grow the cluster")]
    Alone,
    /// The request is wrong.
    #[error("{0}")]
    Invalid(String),
    /// No leader could do it.
    #[error("no leader can change the membership now: {0}")]
    Unavailable(String),
}

/// A member as `ui cluster members` shows it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct MemberInfo {
    /// Raft id.
    pub id: NodeId,
    /// did:key.
    pub did: String,
    /// Transport address.
    pub address: String,
    /// Client API.
    pub api: String,
    /// `voter` or `learner`.
    pub role: &'static str,
    /// Whether it leads (as this member sees it).
    pub leader: bool,
    /// What it says of itself, or `None` when it did not answer.
    pub status: Option<MemberStatus>,
}

/// The Raft id of the member whose did is `did`: derived from its key, so every member computes
/// the same id for it without asking.
pub fn member_id(did: &str) -> NodeId {
    use sha2::Digest as _;
    let hash = sha2::Sha256::digest(did.as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&hash[..8]);
    // Keep it positive in every language's JSON and never 0 or 1 (the lone voter's id).
    (u64::from_be_bytes(bytes) >> 12).max(2)
}

/// The transport side of a member of a cluster.
#[derive(Clone, Debug)]
pub(crate) struct Peers {
    transport: Transport,
    id: NodeId,
    did: String,
    /// This member's API URL.
    api: String,
    /// While this member joins: the member it joins through, then the members its cluster
    /// named; trusted until its own log says more. Its lock is also held while the
    /// transport's allowed set is computed and set, so two updates never interleave.
    trusted: Arc<Mutex<BTreeMap<PeerId, NodeId>>>,
    bootstrap: Arc<RwLock<Vec<u8>>>,
    /// The tasks serving peers, following the membership and forwarding writes; aborted when
    /// the member stops.
    tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    /// Writes for the leader, waiting to be sent ([`batch_forwards`]).
    forwards: tokio::sync::mpsc::Sender<Forward>,
}

/// A write waiting to be forwarded to the leader.
#[derive(Debug)]
struct Forward {
    /// The leader it goes to (as the member saw it when the write came).
    leader: NodeId,
    request: Request,
    /// When it must have left by: one still waiting then is not sent ([`FORWARD_TIMEOUT`]
    /// after its caller first asked, whatever leaders it was queued for since).
    send_by: tokio::time::Instant,
    answer: tokio::sync::oneshot::Sender<Result<Response, Unforwarded>>,
}

/// Why a forwarded write has no response.
#[derive(Debug)]
enum Unforwarded {
    /// The leadership moved before the write was sent: it was not (here it is back), and may
    /// go to the new leader.
    LeaderMoved(Request),
    /// What the client is told.
    Failed(WriteError),
}

impl Peers {
    pub(crate) fn stop(&self) {
        for task in self.tasks.lock().expect("tasks lock").drain(..) {
            task.abort();
        }
        self.transport.stop();
    }

    /// Which member `peer` is, if it is one (from the server metrics, as the allowed peers).
    fn member_of(&self, raft: &Raft<TypeConfig>, peer: &PeerId) -> Option<NodeId> {
        let known = raft
            .server_metrics()
            .borrow()
            .membership_config
            .membership()
            .nodes()
            .find(|(_, m)| peer_id(&m.did).as_ref() == Some(peer))
            .map(|(id, _)| *id);
        known.or_else(|| self.trusted.lock().expect("trusted lock").get(peer).copied())
    }

    /// Replaces the trusted members (see [`Self::trusted`]) and lets the transport connect with
    /// them.
    fn set_trusted(&self, raft: &Raft<TypeConfig>, trusted: BTreeMap<PeerId, NodeId>) {
        let mut guard = self.trusted.lock().expect("trusted lock");
        *guard = trusted;
        self.allow(raft, &guard);
    }

    /// Sets the transport's allowed peers from the membership and the trusted members.
    fn sync_allowed(&self, raft: &Raft<TypeConfig>) {
        let guard = self.trusted.lock().expect("trusted lock");
        self.allow(raft, &guard);
    }

    fn allow(&self, raft: &Raft<TypeConfig>, trusted: &BTreeMap<PeerId, NodeId>) {
        // From the server metrics, as `follow_membership` is woken by them: openraft sends
        // them before the full metrics, which may still hold the membership before.
        let members: Vec<PeerId> = raft
            .server_metrics()
            .borrow()
            .membership_config
            .membership()
            .nodes()
            .filter_map(|(_, m)| peer_id(&m.did))
            .collect();
        let me = self.transport.local_peer_id();
        let allowed = members.into_iter().chain(trusted.keys().copied()).filter(|p| *p != me);
        self.transport.allow(allowed);
    }

    async fn call(
        &self,
        raft: &Raft<TypeConfig>,
        id: NodeId,
        rpc: Rpc,
        timeout: Duration,
    ) -> Result<Reply, String> {
        call(&self.transport, raft, id, rpc, timeout).await
    }

    /// Waits (up to [`LEADER_WAIT`]) until some member is known to lead.
    async fn leader(&self, raft: &Raft<TypeConfig>) -> Option<NodeId> {
        raft.wait(Some(LEADER_WAIT))
            .metrics(|m| m.current_leader.is_some(), "a leader is known")
            .await
            .ok()
            .and_then(|m| m.current_leader)
    }

    /// Commits `request` on the leader: here if this member leads, else forwarded
    /// ([`batch_forwards`]). A write not sent because the leadership moved meanwhile goes to
    /// the new leader (at most [`FORWARD_RETARGETS`] times); once sent, it is never sent again.
    pub(crate) async fn write(&self, node: &RaftNode, request: Request) -> Result<Response, WriteError> {
        let stopped = || WriteError::Fatal("the member is shutting down".to_owned());
        let send_by = tokio::time::Instant::now() + FORWARD_TIMEOUT;
        let mut request = request;
        for _ in 0..FORWARD_RETARGETS {
            let leader = self
                .leader(&node.raft)
                .await
                .ok_or_else(|| WriteError::NotLeader("no leader elected".into()))?;
            if leader == self.id {
                // A leader cut off from a quorum cannot commit; the write's fate is then unknown
                // (a later leader may or may not keep it), and the client must not wait forever.
                return match tokio::time::timeout(FORWARD_TIMEOUT, node.write_here(request)).await {
                    Ok(r) => r,
                    Err(_) => Err(WriteError::Unknown(format!("not committed within {FORWARD_TIMEOUT:?}"))),
                };
            }
            let (answer, answered) = tokio::sync::oneshot::channel();
            self.forwards.try_send(Forward { leader, request, send_by, answer }).map_err(|e| match e {
                tokio::sync::mpsc::error::TrySendError::Full(_) => WriteError::NotLeader(format!(
                    "{MAX_QUEUED_FORWARDS} writes are already waiting to be sent to leader {leader}: \
                     not sent, retry"
                )),
                tokio::sync::mpsc::error::TrySendError::Closed(_) => stopped(),
            })?;
            // The forwarder answers by `send_by` (refused, unsent) or once the leader answers
            // (within FORWARD_TIMEOUT of sending, else unknown); past that, with margin, the
            // outcome is unknown here too (a write not sent by then never will be).
            let answer_by = send_by + FORWARD_TIMEOUT + ANSWER_MARGIN;
            match tokio::time::timeout_at(answer_by, answered).await {
                Ok(Ok(Ok(response))) => return Ok(response),
                Ok(Ok(Err(Unforwarded::Failed(e)))) => return Err(e),
                Ok(Ok(Err(Unforwarded::LeaderMoved(unsent)))) => request = unsent,
                Ok(Err(_)) => return Err(stopped()),
                Err(_) => {
                    return Err(WriteError::Unknown(format!(
                        "forwarded to leader {leader}, not answered within {:?}",
                        2 * FORWARD_TIMEOUT + ANSWER_MARGIN
                    )));
                }
            }
        }
        Err(WriteError::NotLeader(format!(
            "the leadership moved {FORWARD_RETARGETS} times before the write could be sent: not sent, retry"
        )))
    }

    /// A read is idempotent: when the leadership moves while it is being confirmed, it is
    /// asked again of the new leader (within [`LEADER_WAIT`]).
    pub(crate) async fn read_barrier(&self, raft: &Raft<TypeConfig>) -> Result<(), ReadError> {
        let deadline = tokio::time::Instant::now() + LEADER_WAIT;
        loop {
            let leader = self.leader(raft).await.ok_or_else(|| ReadError("no leader elected".into()))?;
            match self.read_barrier_through(raft, leader).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    let now = raft.metrics().borrow().current_leader;
                    if now != Some(leader) && tokio::time::Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                    return Err(e);
                }
            }
        }
    }

    async fn read_barrier_through(&self, raft: &Raft<TypeConfig>, leader: NodeId) -> Result<(), ReadError> {
        if leader == self.id {
            return match tokio::time::timeout(FORWARD_TIMEOUT, super::node::read_index(raft)).await {
                Ok(r) => r.map(drop),
                Err(_) => {
                    Err(ReadError(format!("no quorum confirmed the leadership within {FORWARD_TIMEOUT:?}")))
                }
            };
        }
        let index = match self.call(raft, leader, Rpc::ReadIndex, FORWARD_TIMEOUT).await {
            Ok(Reply::ReadIndex(Ok(index))) => index,
            Ok(Reply::ReadIndex(Err(e))) => return Err(ReadError(format!("leader {leader}: {e}"))),
            Ok(other) => return Err(ReadError(format!("unexpected reply from the leader: {other:?}"))),
            Err(e) => return Err(ReadError(format!("asking leader {leader} for its read index: {e}"))),
        };
        raft.wait(Some(FORWARD_TIMEOUT))
            .applied_index_at_least(Some(index), "read index applied here")
            .await
            .map(drop)
            .map_err(|e| ReadError(format!("waiting to apply the read index {index}: {e}")))
    }
}

/// The transport address and PeerId of member `id`.
fn locate(raft: &Raft<TypeConfig>, id: NodeId) -> Option<(PeerId, String)> {
    let metrics = raft.server_metrics();
    let metrics = metrics.borrow();
    let member = metrics.membership_config.membership().get_node(&id)?;
    Some((peer_id(&member.did)?, member.p2p.clone()))
}

/// Sends `rpc` to member `id` and waits up to `timeout` for its reply.
async fn call(
    transport: &Transport,
    raft: &Raft<TypeConfig>,
    id: NodeId,
    rpc: Rpc,
    timeout: Duration,
) -> Result<Reply, String> {
    call_or_older(transport, raft, id, rpc, timeout).await.map_err(|e| e.why(id))
}

/// Why a call to a member failed ([`call_or_older`]).
#[derive(Debug)]
enum Uncalled {
    /// A member of the version before [`Rpc::Writes`] refused one: nothing was sent.
    Older,
    /// Nothing of the call left this member (the member could not be connected to, or is not
    /// in the membership): it cannot have acted on it.
    Unsent(String),
    /// The call may have reached the member.
    Failed(String),
}

impl Uncalled {
    fn why(self, id: NodeId) -> String {
        match self {
            Uncalled::Older => older(id),
            Uncalled::Unsent(why) | Uncalled::Failed(why) => why,
        }
    }
}

/// [`call`], telling apart a member of the version before [`Rpc::Writes`] refusing one and a
/// call that never left.
async fn call_or_older(
    transport: &Transport,
    raft: &Raft<TypeConfig>,
    id: NodeId,
    rpc: Rpc,
    timeout: Duration,
) -> Result<Reply, Uncalled> {
    let (peer, addr) =
        locate(raft, id).ok_or_else(|| Uncalled::Unsent(format!("member {id} is not in the membership")))?;
    match transport.try_call(peer, &addr, rpc, timeout).await {
        Ok(Reply::Forbidden(why)) => Err(Uncalled::Failed(format!("member {id} refused: {why}"))),
        Ok(reply) => Ok(reply),
        Err(CallFailure { error: TransportError::Unsupported(_), .. }) => Err(Uncalled::Older),
        Err(CallFailure { error, unsent: true }) => Err(Uncalled::Unsent(error.to_string())),
        Err(CallFailure { error, unsent: false }) => Err(Uncalled::Failed(error.to_string())),
    }
}

fn older(id: NodeId) -> String {
    format!("member {id} speaks an older protocol without writes sent together: not sent")
}

/// Which leaders took [`Rpc::Writes`], and which refused it lately (members of the version
/// before it): writes for those go one message each, and until a leader is known either way a
/// batch is sent with a copy kept, to go one by one if refused.
#[derive(Debug, Default)]
struct Versions {
    newer: BTreeSet<NodeId>,
    older: BTreeMap<NodeId, tokio::time::Instant>,
}

/// How long a leader that refused [`Rpc::Writes`] is sent single writes before it is tried
/// again (it may have been upgraded).
const OLDER_FOR: Duration = Duration::from_secs(300);

impl Versions {
    /// `Some(true)`: takes batches; `Some(false)`: does not; `None`: not known.
    fn takes_batches(&mut self, id: NodeId) -> Option<bool> {
        if let Some(since) = self.older.get(&id) {
            if since.elapsed() < OLDER_FOR {
                return Some(false);
            }
            self.older.remove(&id);
        }
        self.newer.contains(&id).then_some(true)
    }

    fn learn(&mut self, id: NodeId, takes_batches: bool) {
        // Bounded by the members (a leader is one), however many come and go.
        if self.newer.len() + self.older.len() > 2 * MAX_MEMBERS {
            *self = Self::default();
        }
        if takes_batches {
            self.older.remove(&id);
            self.newer.insert(id);
        } else {
            self.newer.remove(&id);
            self.older.insert(id, tokio::time::Instant::now());
        }
    }
}

/// Forwards the writes that wait for the leader: at most [`FORWARDS_IN_FLIGHT`] messages to a
/// leader at once; while they are all on their way, writes wait in the queue and the next
/// message takes those for the same leader together, in the order they came (within
/// [`ForwardBudget`]). A write that comes alone goes alone, at once, as [`Rpc::Write`].
///
/// A write is sent only to the member that leads now (`leaders`, read through `leader_of`):
/// one queued for a former leader goes back to its caller unsent ([`Unforwarded::LeaderMoved`])
/// to be queued again, so messages to a former leader that never answers hold up only that
/// leader's slots. A write whose caller stopped waiting is dropped, and one still here at its
/// `send_by` ([`FORWARD_TIMEOUT`] after its first try) is refused, both before they are sent.
/// Ends when every [`Peers`] is gone.
async fn batch_forwards<M, L, F, Fut>(
    mut leaders: tokio::sync::watch::Receiver<M>,
    leader_of: L,
    send: F,
    mut queued: tokio::sync::mpsc::Receiver<Forward>,
) where
    L: Fn(&M) -> Option<NodeId>,
    F: Fn(NodeId, Vec<Forward>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut slots: HashMap<NodeId, Arc<Semaphore>> = HashMap::new();
    let mut next: Option<Forward> = None;
    loop {
        let mut first = match next.take() {
            Some(f) => f,
            None => match queued.recv().await {
                Some(f) => f,
                None => return,
            },
        };
        let slot = match slot_for(&mut first, &mut leaders, &leader_of, &mut slots).await {
            Ok(slot) => slot,
            Err(Held::Stopped) => {
                let _ = first.answer.send(Err(Unforwarded::Failed(WriteError::Fatal(
                    "the member is shutting down".to_owned(),
                ))));
                return;
            }
            Err(held) => {
                unsent(first, held);
                continue;
            }
        };
        let leader = first.leader;
        let mut budget = ForwardBudget::default();
        budget.take(first.request.ops.len(), request_bytes(&first.request));
        let mut batch = vec![first];
        while let Ok(f) = queued.try_recv() {
            if f.answer.is_closed() {
                continue;
            }
            if f.leader == leader && tokio::time::Instant::now() >= f.send_by {
                unsent(f, Held::Late);
                continue;
            }
            if f.leader != leader || !budget.take(f.request.ops.len(), request_bytes(&f.request)) {
                next = Some(f);
                break;
            }
            batch.push(f);
        }
        let sent = send(leader, batch);
        tokio::spawn(async move {
            sent.await;
            drop(slot);
        });
    }
}

/// Why a queued write is not sent.
#[derive(Debug)]
enum Held {
    /// Its caller stopped waiting.
    Gone,
    /// The member it was queued for no longer leads.
    Moved,
    /// Its `send_by` passed before it could be sent.
    Late,
    /// The member is stopping.
    Stopped,
}

/// Answers a write that is not sent (a gone caller gets nothing).
fn unsent(f: Forward, why: Held) {
    let Forward { leader, request, answer, .. } = f;
    let _ = answer.send(Err(match why {
        Held::Moved => Unforwarded::LeaderMoved(request),
        Held::Late => Unforwarded::Failed(WriteError::NotLeader(format!(
            "leader {leader} did not take the write within {FORWARD_TIMEOUT:?}: not sent, retry"
        ))),
        Held::Gone | Held::Stopped => return,
    }));
}

/// Waits for a slot to send `first` to its leader, as long as that member leads, `first`'s
/// caller waits and its `send_by` has not passed.
async fn slot_for<M, L>(
    first: &mut Forward,
    leaders: &mut tokio::sync::watch::Receiver<M>,
    leader_of: &L,
    slots: &mut HashMap<NodeId, Arc<Semaphore>>,
) -> Result<tokio::sync::OwnedSemaphorePermit, Held>
where
    L: Fn(&M) -> Option<NodeId>,
{
    let deadline = first.send_by;
    loop {
        if first.answer.is_closed() {
            return Err(Held::Gone);
        }
        if leader_of(&leaders.borrow_and_update()) != Some(first.leader) {
            return Err(Held::Moved);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Held::Late);
        }
        // The slots of members that lead no more and have nothing on its way go.
        slots.retain(|id, s| *id == first.leader || s.available_permits() < FORWARDS_IN_FLIGHT);
        let mine = slots.entry(first.leader).or_insert_with(|| Arc::new(Semaphore::new(FORWARDS_IN_FLIGHT)));
        let mine = mine.clone();
        tokio::select! {
            slot = mine.acquire_owned() => return slot.map_err(|_| Held::Stopped),
            changed = leaders.changed() => if changed.is_err() {
                return Err(Held::Stopped);
            },
            () = tokio::time::sleep_until(deadline) => {}
            () = first.answer.closed() => {}
        }
    }
}

/// Sends `batch` to `leader` in one message (one each to a leader of the version before
/// [`Rpc::Writes`]) and answers each write.
async fn forward(
    transport: &Transport,
    raft: &Raft<TypeConfig>,
    versions: &Mutex<Versions>,
    leader: NodeId,
    batch: Vec<Forward>,
) {
    let (answers, requests): (Vec<_>, Vec<_>) = batch.into_iter().map(|f| (f.answer, f.request)).unzip();
    let n = requests.len();
    let takes_batches = versions.lock().expect("versions lock").takes_batches(leader);
    let answered = if n == 1 || takes_batches == Some(false) {
        one_by_one(transport, raft, leader, requests).await
    } else {
        // Not known yet: a copy to send one by one if the leader cannot read the batch.
        let copy = takes_batches.is_none().then(|| requests.clone());
        match call_or_older(transport, raft, leader, Rpc::Writes(requests), FORWARD_TIMEOUT).await {
            // Not sent (nothing of it left): not counted.
            Err(Uncalled::Older) => {
                versions.lock().expect("versions lock").learn(leader, false);
                match copy {
                    Some(requests) => one_by_one(transport, raft, leader, requests).await,
                    // Nothing was sent: the client may retry (it then goes alone).
                    None => (0..n).map(|_| Err(WriteError::NotLeader(older(leader)))).collect(),
                }
            }
            reply => {
                if !matches!(reply, Err(Uncalled::Unsent(_))) {
                    crate::metrics::metrics().forwarded(n);
                }
                if reply.is_ok() {
                    versions.lock().expect("versions lock").learn(leader, true);
                }
                answers_of(leader, n, reply)
            }
        }
    };
    for (answer, written) in answers.into_iter().zip(answered) {
        let _ = answer.send(written.map_err(Unforwarded::Failed));
    }
}

/// Sends each of `requests` to `leader` alone, at once.
async fn one_by_one(
    transport: &Transport,
    raft: &Raft<TypeConfig>,
    leader: NodeId,
    requests: Vec<Request>,
) -> Vec<Result<Response, WriteError>> {
    let calls = requests.into_iter().map(|request| async move {
        let reply = call_or_older(transport, raft, leader, Rpc::Write(request), FORWARD_TIMEOUT).await;
        if !matches!(reply, Err(Uncalled::Unsent(_))) {
            crate::metrics::metrics().forwarded(1);
        }
        answers_of(leader, 1, reply).remove(0)
    });
    futures_util::future::join_all(calls).await
}

/// The answers of `n` writes sent to `leader` in one message, from its reply.
fn answers_of(leader: NodeId, n: usize, reply: Result<Reply, Uncalled>) -> Vec<Result<Response, WriteError>> {
    // Once the writes have left, any failure leaves their outcome unknown: never resend them
    // (the leader may have committed them), let the clients decide.
    let unknown = |why: String| (0..n).map(|_| Err(WriteError::Unknown(why.clone()))).collect::<Vec<_>>();
    // Writes that never left were proposed nowhere: the clients may send them again (a
    // leader that died a moment ago, until the others elect another).
    let unsent = |why: String| (0..n).map(|_| Err(WriteError::NotLeader(why.clone()))).collect::<Vec<_>>();
    match reply {
        Ok(Reply::Write(r)) if n == 1 => vec![forwarded(leader, r)],
        Ok(Reply::Writes(rs)) if rs.len() == n => rs.into_iter().map(|r| forwarded(leader, r)).collect(),
        // Not the reply itself: it may be large, and it would be copied to every client.
        Ok(_) => unknown(format!("leader {leader} answered {n} writes with something else")),
        Err(Uncalled::Older) => unsent(older(leader)),
        Err(Uncalled::Unsent(e)) => unsent(format!("forwarding to leader {leader}: {e}: not sent, retry")),
        Err(Uncalled::Failed(e)) => unknown(format!("forwarding to leader {leader}: {e}")),
    }
}

/// A forwarded write's outcome as the leader answered it.
fn forwarded(leader: NodeId, answer: Result<Response, Refusal>) -> Result<Response, WriteError> {
    match answer {
        Ok(response) => Ok(response),
        Err(Refusal::NotLeader(l)) => {
            Err(WriteError::NotLeader(format!("member {leader} no longer leads (leader: {l:?})")))
        }
        Err(Refusal::Failed(e)) => Err(WriteError::Unknown(e)),
    }
}

impl RaftNode {
    /// Starts (or resumes) a member of a cluster of several in `dir`. A new data dir either
    /// founds a cluster (this member its only voter) or, with `config.join`, joins one; then the
    /// cluster's bootstrap is returned. Resuming ignores `config.join`.
    pub async fn start_member(
        dir: &std::path::Path,
        options: Options,
        config: MemberConfig,
    ) -> Result<(Self, Option<Vec<u8>>), StartError> {
        let did = api::identity::Did::from_key(&config.key.verifying_key()).as_str().to_owned();
        let id = member_id(&did);
        let (transport, inbound) = Transport::start(&config.key, config.listen)
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        let me = Member {
            did,
            p2p: config.advertise.clone().unwrap_or_else(|| transport.listen_addr().to_string()),
            api: config.api.clone(),
        };
        let resuming = config.join.is_none() || !config.bootstrap.is_empty();
        let (log, state) = open_storage(dir).await?;
        let log = log.of_member(id);
        let network = Network { transport: transport.clone() };
        let raft = Raft::new(id, raft_config(&options, true)?, network, log, state.clone())
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        let (forwards, queued) = tokio::sync::mpsc::channel(MAX_QUEUED_FORWARDS);
        // The transport and raft handles only: the last `Peers` going closes the queue and ends
        // the task.
        let (for_forwards, raft_for_forwards) = (transport.clone(), raft.clone());
        let versions = Arc::new(Mutex::new(Versions::default()));
        let forwarder = tokio::spawn(batch_forwards(
            raft.server_metrics(),
            |m: &openraft::metrics::RaftServerMetrics<NodeId, Member>| m.current_leader,
            move |leader, batch| {
                let (transport, raft) = (for_forwards.clone(), raft_for_forwards.clone());
                let versions = versions.clone();
                async move { forward(&transport, &raft, &versions, leader, batch).await }
            },
            queued,
        ));
        let peers = Peers {
            transport,
            id,
            did: me.did.clone(),
            api: me.api.clone(),
            trusted: Arc::default(),
            bootstrap: Arc::new(RwLock::new(config.bootstrap)),
            tasks: Arc::new(Mutex::new(vec![forwarder])),
            forwards,
        };
        let node = RaftNode::assemble(raft.clone(), state, Some(peers.clone()), &options);
        let server = tokio::spawn(serve(node.clone(), inbound));
        let follower = tokio::spawn(follow_membership(raft.clone(), peers.clone()));
        peers.tasks.lock().expect("tasks lock").extend([server, follower]);
        let fail = |e: String| StartError::Raft(e);
        // A member that has not kept the cluster's bootstrap yet (it stopped while joining)
        // joins again; the join is idempotent.
        if raft.is_initialized().await.map_err(|e| fail(e.to_string()))? && resuming {
            return Ok((node, None));
        }
        match config.join {
            None => {
                raft.initialize(BTreeMap::from([(id, me)])).await.map_err(|e| fail(e.to_string()))?;
                raft.wait(Some(Duration::from_secs(30)))
                    .state(ServerState::Leader, "the founding voter leads")
                    .await
                    .map_err(|e| fail(e.to_string()))?;
                Ok((node, None))
            }
            Some(target) => {
                let bootstrap = node.join(&target).await.inspect_err(|_| peers.stop())?;
                *peers.bootstrap.write().expect("bootstrap lock") = bootstrap.clone();
                Ok((node, Some(bootstrap)))
            }
        }
    }

    /// Joins through `target`, then waits until promoted to voter.
    async fn join(&self, target: &JoinTarget) -> Result<Vec<u8>, StartError> {
        let peers = self.peers.as_ref().expect("a member with peers joins");
        let peer = peer_id(&target.did)
            .ok_or_else(|| StartError::Raft(format!("{:?} is not a did:key", target.did)))?;
        // The member joined through is the first one this member may connect with.
        peers.set_trusted(&self.raft, BTreeMap::from([(peer, member_id(&target.did))]));
        let refused = |why: &str| {
            StartError::Raft(format!(
                "{} refused to let this member join ({why}): on a member, run `ui cluster add {} {}` first",
                target.addr,
                peers.did,
                peers.transport.listen_addr()
            ))
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let mut closed = 0;
        let (members, bootstrap) = loop {
            match peers.transport.call(peer, &target.addr, Rpc::Join, Duration::from_secs(5)).await {
                Ok(Reply::Joined { members, bootstrap }) => break (members, bootstrap),
                Ok(Reply::Forbidden(why)) => return Err(refused(&why)),
                Ok(other) => return Err(StartError::Raft(format!("unexpected reply to join: {other:?}"))),
                // A member closes the connection of a key it does not know right after the
                // handshake, without a word; once could be a member going down, three times in a
                // row is a refusal.
                Err(TransportError::Closed(_)) if closed >= JOIN_CLOSED_TRIES - 1 => {
                    return Err(refused("it closed the connection right after the handshake every time"));
                }
                Err(e) if tokio::time::Instant::now() > deadline => {
                    return Err(StartError::Raft(format!("cannot reach {} to join: {e}", target.addr)));
                }
                Err(e) => {
                    closed = if matches!(e, TransportError::Closed(_)) { closed + 1 } else { 0 };
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            }
        };
        peers.set_trusted(
            &self.raft,
            members.iter().filter_map(|(id, m)| Some((peer_id(&m.did)?, *id))).collect(),
        );
        // Catch up (the leader replicates to the learner it added), then ask to be a voter.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
        loop {
            if tokio::time::Instant::now() > deadline {
                return Err(StartError::Raft("not promoted to voter within 5 minutes".into()));
            }
            let voter = self
                .raft
                .metrics()
                .borrow()
                .membership_config
                .membership()
                .voter_ids()
                .any(|v| v == peers.id);
            if voter {
                // From now on its own log says who the members are.
                peers.set_trusted(&self.raft, BTreeMap::new());
                return Ok(bootstrap);
            }
            let leader = self.raft.metrics().borrow().current_leader;
            if let Some(leader) = leader
                && leader != peers.id
            {
                let _ = peers
                    .call(&self.raft, leader, Rpc::Promote(peers.api.clone()), Duration::from_secs(30))
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The nodes of the current membership (voters and learners), as this member knows them.
    pub fn membership(&self) -> BTreeMap<NodeId, Member> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        metrics.membership_config.membership().nodes().map(|(id, m)| (*id, m.clone())).collect()
    }

    /// Whether `did` is the key of a node in the current membership.
    pub fn is_member(&self, did: &str) -> bool {
        self.raft.metrics().borrow().membership_config.membership().nodes().any(|(_, m)| m.did == did)
    }

    /// This member's Raft id.
    pub fn id(&self) -> NodeId {
        self.peers.as_ref().map_or(super::SINGLE_NODE_ID, |p| p.id)
    }

    /// Adds a member as a learner (it becomes a voter when it has joined and caught up);
    /// returns its id.
    pub async fn add_member(&self, did: &str, p2p: &str, api: &str) -> Result<NodeId, ClusterError> {
        let peers = self.peers.as_ref().ok_or(ClusterError::Alone)?;
        let id = member_id(did);
        let member = Member { did: did.to_owned(), p2p: p2p.to_owned(), api: api.to_owned() };
        check_member(id, &member).map_err(ClusterError::Invalid)?;
        self.on_leader(peers, Rpc::AddLearner(id, member.clone()), || {
            self.add_learner_here(id, member.clone())
        })
        .await?;
        Ok(id)
    }

    /// Removes member `id` (voter or learner).
    pub async fn remove_member(&self, id: NodeId) -> Result<(), ClusterError> {
        let peers = self.peers.as_ref().ok_or(ClusterError::Alone)?;
        self.on_leader(peers, Rpc::Remove(id), || self.remove_here(id)).await
    }

    /// Runs `here` if this member leads, else sends `rpc` to the leader.
    async fn on_leader<F: std::future::Future<Output = Result<(), Refusal>>>(
        &self,
        peers: &Peers,
        rpc: Rpc,
        here: impl FnOnce() -> F,
    ) -> Result<(), ClusterError> {
        let leader =
            peers.leader(&self.raft).await.ok_or_else(|| ClusterError::Unavailable("no leader".into()))?;
        let result = if leader == peers.id {
            here().await
        } else {
            match peers.call(&self.raft, leader, rpc, FORWARD_TIMEOUT).await {
                Ok(Reply::Changed(r)) => r,
                Ok(other) => Err(Refusal::Failed(format!("unexpected reply: {other:?}"))),
                Err(e) => return Err(ClusterError::Unavailable(e)),
            }
        };
        result.map_err(|e| match e {
            Refusal::NotLeader(_) => ClusterError::Unavailable(e.to_string()),
            Refusal::Failed(e) => ClusterError::Invalid(e),
        })
    }

    async fn add_learner_here(&self, id: NodeId, member: Member) -> Result<(), Refusal> {
        // Again here: a member's forwarded request arrives here without passing `add_member`.
        check_member(id, &member).map_err(Refusal::Failed)?;
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        if let Some(existing) = membership.get_node(&id) {
            if existing == &member {
                return Ok(());
            }
            return Err(Refusal::Failed(format!("{} is already a member, at {}", member.did, existing.p2p)));
        }
        if membership.nodes().count() >= MAX_MEMBERS {
            return Err(Refusal::Failed(format!(
                "the cluster has {MAX_MEMBERS} members, as many as it may have: remove one first"
            )));
        }
        self.raft.add_learner(id, member, false).await.map(drop).map_err(refusal)
    }

    async fn remove_here(&self, id: NodeId) -> Result<(), Refusal> {
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let change = if membership.voter_ids().any(|v| v == id) {
            if membership.voter_ids().count() == 1 {
                return Err(Refusal::Failed("cannot remove the last voter".into()));
            }
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else if membership.get_node(&id).is_some() {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        } else {
            return Err(Refusal::Failed(format!("no member has id {id}")));
        };
        self.raft.change_membership(change, false).await.map(drop).map_err(refusal)
    }

    async fn promote_here(&self, id: NodeId, api: String) -> Result<bool, Refusal> {
        let metrics = self.raft.metrics().borrow().clone();
        if metrics.current_leader != Some(metrics.id) {
            return Err(Refusal::NotLeader(metrics.current_leader));
        }
        let membership = metrics.membership_config.membership();
        if membership.voter_ids().any(|v| v == id) {
            return Ok(true);
        }
        // Record the API URL the member gives for itself (only that: its key and transport
        // address stay as the member that added it wrote them).
        if api.len() > MAX_API_URL_BYTES {
            return Err(Refusal::Failed(format!(
                "an API URL of {} bytes is longer than {MAX_API_URL_BYTES}: give a shorter one",
                api.len()
            )));
        }
        if let Some(node) = membership.get_node(&id)
            && !api.is_empty()
            && node.api != api
        {
            let node = Member { api, ..node.clone() };
            let set = ChangeMembers::SetNodes(BTreeMap::from([(id, node)]));
            self.raft.change_membership(set, true).await.map_err(refusal)?;
            return Ok(false);
        }
        let matched =
            metrics.replication.as_ref().and_then(|r| r.get(&id).copied().flatten()).map_or(0, |l| l.index);
        if matched + PROMOTE_LAG < metrics.last_log_index.unwrap_or(0) {
            return Ok(false);
        }
        self.raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await
            .map_err(refusal)?;
        Ok(true)
    }

    /// What this member says of itself.
    pub fn status(&self) -> MemberStatus {
        let m = self.raft.metrics().borrow().clone();
        MemberStatus {
            id: m.id,
            state: format!("{:?}", m.state),
            leader: m.current_leader,
            term: m.current_term,
            last_applied: m.last_applied.map_or(0, |l| l.index),
        }
    }

    /// Every member in the membership, with what each says of itself (asked over the
    /// transport, one second each, in parallel).
    pub async fn members(&self) -> Vec<MemberInfo> {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let asks = membership.nodes().map(|(id, member)| {
            let id = *id;
            let member = member.clone();
            let role = if voters.contains(&id) { "voter" } else { "learner" };
            async move {
                let status = if id == m.id {
                    Some(self.status())
                } else if let Some(peers) = &self.peers {
                    match peers.call(&self.raft, id, Rpc::Status, Duration::from_secs(1)).await {
                        Ok(Reply::Status(s)) => Some(s),
                        _ => None,
                    }
                } else {
                    None
                };
                MemberInfo {
                    id,
                    did: member.did,
                    address: member.p2p,
                    api: member.api,
                    role,
                    leader: m.current_leader == Some(id),
                    status,
                }
            }
        });
        futures_util::future::join_all(asks).await
    }

    /// Fault injection for tests: drops all traffic with the members in `ids` (and restores
    /// it with everyone else).
    pub fn isolate_from(&self, ids: &[NodeId]) -> Result<(), ClusterError> {
        let peers = self.peers.as_ref().ok_or(ClusterError::Alone)?;
        let blocked: Vec<PeerId> =
            ids.iter().filter_map(|id| locate(&self.raft, *id).map(|(p, _)| p)).collect();
        peers.transport.block(blocked);
        Ok(())
    }
}

/// Checks what a new member's entry in the membership would hold: a did:key whose derived id is
/// `id`, an `IP:PORT` transport address and an API URL of bounded length.
fn check_member(id: NodeId, member: &Member) -> Result<(), String> {
    if peer_id(&member.did).is_none() {
        return Err(format!("{:?} is not a did:key", member.did));
    }
    if id != member_id(&member.did) {
        return Err(format!("member id {id} is not the id of {} ({})", member.did, member_id(&member.did)));
    }
    super::transport::multiaddr(&member.p2p).map_err(|e| e.to_string())?;
    if member.api.len() > MAX_API_URL_BYTES {
        return Err(format!(
            "an API URL of {} bytes is longer than {MAX_API_URL_BYTES}: give a shorter one",
            member.api.len()
        ));
    }
    Ok(())
}

/// Keeps the transport's allowed peers in step with the membership, until the member stops.
/// It follows the server metrics, which change with the membership (and the vote and the
/// leader), not the full metrics, which change with every entry written and applied.
async fn follow_membership(raft: Raft<TypeConfig>, peers: Peers) {
    let mut metrics = raft.server_metrics();
    loop {
        metrics.mark_unchanged();
        peers.sync_allowed(&raft);
        if metrics.changed().await.is_err() {
            return; // raft stopped
        }
    }
}

fn refusal(
    e: openraft::error::RaftError<NodeId, openraft::error::ClientWriteError<NodeId, Member>>,
) -> Refusal {
    match e {
        openraft::error::RaftError::APIError(openraft::error::ClientWriteError::ForwardToLeader(f)) => {
            Refusal::NotLeader(f.leader_id)
        }
        other => Refusal::Failed(other.to_string()),
    }
}

/// Serves peers' requests, at most [`SERVE_CONCURRENCY`] at once.
async fn serve(node: RaftNode, mut inbound: tokio::sync::mpsc::Receiver<Inbound>) {
    let limit = Arc::new(Semaphore::new(SERVE_CONCURRENCY));
    let mut tasks = tokio::task::JoinSet::new();
    while let Some(request) = inbound.recv().await {
        let Ok(permit) = limit.clone().acquire_owned().await else { return };
        let node = node.clone();
        tasks.spawn(async move {
            let Inbound { peer, rpc, responder } = request;
            let reply = handle(&node, peer, rpc).await;
            responder.respond(reply).await;
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    }
}

async fn handle(node: &RaftNode, peer: PeerId, rpc: Rpc) -> Reply {
    let peers = node.peers.as_ref().expect("a member with peers serves them");
    let Some(from) = peers.member_of(&node.raft, &peer) else {
        return Reply::Forbidden(format!("{peer} is not a member of this cluster"));
    };
    let raft = &node.raft;
    let claimed = match &rpc {
        Rpc::Append(r) => Some(("AppendEntries", "leader", r.vote.leader_id().voted_for())),
        Rpc::Snapshot(r) => Some(("InstallSnapshot", "leader", r.vote.leader_id().voted_for())),
        Rpc::Vote(r) => Some(("Vote", "candidate", r.vote.leader_id().voted_for())),
        _ => None,
    };
    if let Some((message, role, claimed)) = claimed
        && claimed != Some(from)
    {
        let why = impersonation(from, &peer, message, role, claimed);
        tracing::warn!("refused a Raft message: {why}");
        return Reply::Forbidden(why);
    }
    match rpc {
        Rpc::Append(r) => Reply::Append(raft.append_entries(r).await),
        Rpc::Vote(r) => Reply::Vote(raft.vote(r).await),
        Rpc::Snapshot(r) => Reply::Snapshot(raft.install_snapshot(r).await),
        Rpc::Write(r) => Reply::Write(answer_forwarded(raft, node.write_here(r).await)),
        Rpc::Writes(requests) => {
            if !ForwardBudget::admits(&requests) {
                return Reply::Forbidden(format!(
                    "{} writes sent together are over what a member sends at once",
                    requests.len()
                ));
            }
            // Each is queued, in order, as soon as it is polled: they share the next entries.
            let written =
                futures_util::future::join_all(requests.into_iter().map(|r| node.write_here(r))).await;
            Reply::Writes(written.into_iter().map(|w| answer_forwarded(raft, w)).collect())
        }
        Rpc::ReadIndex => Reply::ReadIndex(
            match tokio::time::timeout(FORWARD_TIMEOUT, super::node::read_index(&node.raft)).await {
                Ok(r) => r.map_err(|e| {
                    let leader = raft.metrics().borrow().current_leader;
                    if leader == Some(peers.id) {
                        Refusal::Failed(e.to_string())
                    } else {
                        Refusal::NotLeader(leader)
                    }
                }),
                Err(_) => Err(Refusal::Failed("no quorum confirmed the leadership in time".into())),
            },
        ),
        Rpc::Join => {
            let m = raft.metrics().borrow().clone();
            let membership = m.membership_config.membership();
            if membership.get_node(&from).is_none() {
                return Reply::Forbidden(format!("{peer} is not a member of this cluster"));
            }
            let members = membership.nodes().map(|(id, m)| (*id, m.clone())).collect();
            Reply::Joined { members, bootstrap: peers.bootstrap.read().expect("bootstrap lock").clone() }
        }
        Rpc::Promote(api) => Reply::Promoted(node.promote_here(from, api).await),
        Rpc::AddLearner(id, member) => Reply::Changed(node.add_learner_here(id, member).await),
        Rpc::Remove(id) => Reply::Changed(node.remove_here(id).await),
        Rpc::Status => Reply::Status(node.status()),
    }
}

/// A write's outcome as the leader answers a member that forwarded it.
fn answer_forwarded(
    raft: &Raft<TypeConfig>,
    written: Result<Response, WriteError>,
) -> Result<Response, Refusal> {
    written.map_err(|e| refusal_for(e, || raft.metrics().borrow().current_leader))
}

/// What a leader answers the member that forwarded a write it did not commit. An unknown
/// outcome goes as its reason only: the member that forwarded it says it is unknown (once).
fn refusal_for(e: WriteError, leader: impl FnOnce() -> Option<NodeId>) -> Refusal {
    match e {
        WriteError::NotLeader(_) => Refusal::NotLeader(leader()),
        WriteError::Unknown(why) => Refusal::Failed(format!("at the leader: {why}")),
        other => Refusal::Failed(other.to_string()),
    }
}

/// Why a Raft message that names a leader or candidate other than its sender is refused.
fn impersonation(from: NodeId, peer: &PeerId, message: &str, role: &str, claimed: Option<NodeId>) -> String {
    let claimed = claimed.map_or_else(|| "no member".to_owned(), |c| format!("member {c}"));
    format!(
        "member {from} ({peer}) sent {message} naming {claimed} as its {role}: a member speaks only for itself"
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex as StdMutex;

    use super::*;
    use crate::raft::rpc::{MAX_ENTRY_BYTES, MAX_OPS};
    use crate::raft::{Expect, Op};

    fn write(name: &str, value_len: usize) -> Request {
        Request::new(vec![Op::Put {
            key: format!("/registry/t/{name}"),
            value: "v".repeat(value_len).into(),
            expect: Expect::Any,
        }])
    }

    type Answer = tokio::sync::oneshot::Receiver<Result<Response, Unforwarded>>;

    /// Queues `request` for `leader`; the receiver gets its answer.
    fn queue(forwards: &tokio::sync::mpsc::Sender<Forward>, leader: NodeId, request: Request) -> Answer {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let send_by = tokio::time::Instant::now() + FORWARD_TIMEOUT;
        forwards.try_send(Forward { leader, request, send_by, answer }).unwrap();
        answered
    }

    /// The key of a write's only op.
    fn key(r: &Request) -> String {
        r.ops[0].key().to_owned()
    }

    /// The messages sent: their leader and their writes' keys.
    type Sent = Arc<StdMutex<Vec<(NodeId, Vec<String>)>>>;

    /// A forwarder whose messages are held until `release` has permits (each answered with
    /// its writes' positions as revisions), following the leader in the returned sender.
    fn forwarder(
        leader: NodeId,
    ) -> (tokio::sync::mpsc::Sender<Forward>, tokio::sync::watch::Sender<Option<NodeId>>, Sent, Arc<Semaphore>)
    {
        let sent: Sent = Arc::default();
        let release = Arc::new(Semaphore::new(0));
        let (forwards, queued) = tokio::sync::mpsc::channel(MAX_QUEUED_FORWARDS);
        let (leaders, following) = tokio::sync::watch::channel(Some(leader));
        let (sent_to, gate) = (sent.clone(), release.clone());
        tokio::spawn(batch_forwards(
            following,
            |m: &Option<NodeId>| *m,
            move |leader, batch: Vec<Forward>| {
                sent_to.lock().unwrap().push((leader, batch.iter().map(|f| key(&f.request)).collect()));
                let gate = gate.clone();
                async move {
                    let _ = gate.acquire().await.unwrap();
                    for (i, f) in batch.into_iter().enumerate() {
                        let revision = u64::try_from(i).unwrap();
                        let _ = f.answer.send(Ok(Response { revision, ..Response::default() }));
                    }
                }
            },
            queued,
        ));
        (forwards, leaders, sent, release)
    }

    /// Queues one write for `leader` and lets the forwarder send it (a slot being free).
    async fn alone(forwards: &tokio::sync::mpsc::Sender<Forward>, leader: NodeId, name: &str) -> Answer {
        let answer = queue(forwards, leader, write(name, 10));
        tokio::time::sleep(Duration::from_millis(10)).await;
        answer
    }

    fn names(r: std::ops::Range<usize>, p: &str) -> Vec<String> {
        r.map(|i| format!("/registry/t/{p}{i}")).collect()
    }

    #[tokio::test]
    async fn writes_queued_while_forwards_are_out_go_together_in_order_within_the_budget() {
        let (forwards, _leaders, sent, release) = forwarder(7);
        // The first FORWARDS_IN_FLIGHT writes go alone, at once.
        let mut answers = Vec::new();
        for i in 0..FORWARDS_IN_FLIGHT {
            answers.push(alone(&forwards, 7, &format!("a{i}")).await);
        }
        assert_eq!(sent.lock().unwrap().len(), FORWARDS_IN_FLIGHT, "one message each while slots are free");
        // Then: 10 small writes (more than MAX_OPS), one whose caller gave up, one too large
        // to join others.
        for i in 0..10 {
            answers.push(queue(&forwards, 7, write(&format!("b{i}"), 10)));
        }
        drop(queue(&forwards, 7, write("gone", 10)));
        let large = queue(&forwards, 7, write("large", MAX_ENTRY_BYTES - 450));
        release.add_permits(100);
        for a in answers {
            assert!(a.await.unwrap().is_ok());
        }
        assert!(large.await.unwrap().is_ok());
        let sent = sent.lock().unwrap().clone();
        let rest = &sent[FORWARDS_IN_FLIGHT..];
        assert_eq!(rest[0], (7, names(0..MAX_OPS, "b")), "at most MAX_OPS writes, in order");
        assert_eq!(rest[1], (7, names(MAX_OPS..10, "b")), "the gone caller's write is not sent");
        // The large one is over the byte budget with the others: alone.
        assert_eq!(rest.len(), 3, "{rest:?}");
        assert_eq!(rest[2], (7, vec!["/registry/t/large".to_owned()]));
    }

    #[tokio::test]
    async fn writes_not_sent_when_the_leadership_moves_come_back_and_the_new_leader_is_not_held_up() {
        let (forwards, leaders, sent, release) = forwarder(7);
        let mut held = Vec::new();
        for i in 0..FORWARDS_IN_FLIGHT {
            held.push(alone(&forwards, 7, &format!("c{i}")).await);
        }
        // Waiting for one of 7's slots when 9 is elected: back to their callers, unsent.
        let waiting = [queue(&forwards, 7, write("d0", 10)), queue(&forwards, 7, write("d1", 10))];
        tokio::time::sleep(Duration::from_millis(10)).await;
        leaders.send(Some(9)).unwrap();
        for (i, w) in waiting.into_iter().enumerate() {
            match w.await.unwrap() {
                Err(Unforwarded::LeaderMoved(request)) => {
                    assert_eq!(key(&request), format!("/registry/t/d{i}"))
                }
                other => panic!("d{i}: {other:?}"),
            }
        }
        // 7 still holds its slots (its messages never answered): 9's write goes at once.
        let to_nine = alone(&forwards, 9, "e0").await;
        assert_eq!(sent.lock().unwrap().last().unwrap(), &(9, vec!["/registry/t/e0".to_owned()]));
        // A write queued for 7 after the move goes back too, without waiting.
        match queue(&forwards, 7, write("late7", 10)).await.unwrap() {
            Err(Unforwarded::LeaderMoved(_)) => {}
            other => panic!("{other:?}"),
        }
        release.add_permits(100);
        for a in held {
            assert!(a.await.unwrap().is_ok(), "what was sent to 7 is answered");
        }
        assert!(to_nine.await.unwrap().is_ok());
        let sent = sent.lock().unwrap();
        assert!(sent.iter().all(|(_, keys)| !keys.iter().any(|k| k.contains("/d") || k.contains("late7"))));
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_not_sent_in_time_is_refused_unsent() {
        let (forwards, _leaders, sent, _release) = forwarder(7);
        let mut held = Vec::new();
        for i in 0..FORWARDS_IN_FLIGHT {
            held.push(alone(&forwards, 7, &format!("h{i}")).await);
        }
        // No slot frees: after FORWARD_TIMEOUT (the paused clock jumps to it) it is refused.
        let started = tokio::time::Instant::now();
        let answered = tokio::time::timeout(3 * FORWARD_TIMEOUT, queue(&forwards, 7, write("slow", 10)));
        match answered.await.expect("answered by its deadline").unwrap() {
            Err(Unforwarded::Failed(WriteError::NotLeader(why))) => {
                assert!(why.contains("not sent"), "{why}")
            }
            other => panic!("{other:?}"),
        }
        assert!(started.elapsed() >= FORWARD_TIMEOUT);
        assert!(sent.lock().unwrap().iter().all(|(_, keys)| !keys.contains(&"/registry/t/slow".to_owned())));
        drop(held);
    }

    #[test]
    fn forwarded_writes_that_never_left_may_be_sent_again_others_are_unknown() {
        let answers = answers_of(3, 2, Err(Uncalled::Unsent("member x unreachable: refused".into())));
        assert_eq!(answers.len(), 2);
        for a in &answers {
            assert!(matches!(a, Err(WriteError::NotLeader(why)) if why.contains("not sent")), "{a:?}");
        }
        assert!(matches!(&answers_of(3, 1, Err(Uncalled::Older))[0], Err(WriteError::NotLeader(_))));
        let failed = answers_of(3, 2, Err(Uncalled::Failed("the stream closed before the answer".into())));
        assert!(failed.iter().all(|a| matches!(a, Err(WriteError::Unknown(_)))), "{failed:?}");
    }

    #[test]
    fn forwarded_answers_keep_the_leaders_refusal() {
        assert!(matches!(forwarded(3, Err(Refusal::NotLeader(Some(4)))), Err(WriteError::NotLeader(_))));
        assert!(matches!(forwarded(3, Err(Refusal::Failed("x".into()))), Err(WriteError::Unknown(_))));
        assert_eq!(forwarded(3, Ok(Response::default())).unwrap(), Response::default());
        // An unknown outcome at the leader is one here, said once.
        let unknown = refusal_for(WriteError::Unknown("not committed within 10s".into()), || None);
        let err = forwarded(3, Err(unknown)).unwrap_err();
        assert!(matches!(err, WriteError::Unknown(_)), "{err:?}");
        assert_eq!(
            err.to_string(),
            "the write's outcome is unknown: at the leader: not committed within 10s"
        );
        assert!(matches!(
            refusal_for(WriteError::NotLeader("x".into()), || Some(4)),
            Refusal::NotLeader(Some(4))
        ));
    }
}
