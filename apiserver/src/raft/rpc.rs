//! What members say to each other, how large it may be, and openraft's network
//! (`RaftNetworkFactory`) on the libp2p [`Transport`].
//!
//! **Sizes.** Every frame limit of the transport is derived here from the largest message a
//! member sends, so a limit can never refuse a message the cluster needs (which would stop
//! replication for good) and nothing larger is ever read:
//!
//! - one write is at most [`MAX_ENTRY_BYTES`] as a log entry and holds at most [`MAX_OPS`]
//!   operations (checked when it is written, see `node.rs`);
//! - an AppendEntries carries entries up to [`APPEND_BUDGET`] bytes, and always at least one
//!   entry, so at most `max(APPEND_BUDGET, MAX_ENTRY_BYTES)` = 4 MiB of entries (openraft's
//!   batch cap of 64 entries alone would allow 64 × 4 MiB = 256 MiB);
//! - an InstallSnapshot carries [`SNAPSHOT_CHUNK_BYTES`] = 1 MiB of data;
//! - a forwarded write carries one request (≤ 4 MiB), and forwarded writes sent together
//!   ([`Rpc::Writes`]) at most [`MAX_OPS`] writes with at most [`MAX_OPS`] ops and 4 MiB in all
//!   ([`ForwardBudget`]);
//! - everything else in a message (votes, log ids, a membership of at most 64 members with
//!   URLs of at most 1 KiB, a joiner's bootstrap, enum tags) fits in [`ENVELOPE_BYTES`] = 1 MiB.
//!
//! So a request is at most [`MAX_REQUEST_BYTES`] = 4 MiB + 1 MiB = 5 MiB. A reply is small,
//! but a member of an earlier version answers a forwarded write with the value each of its
//! ops replaced (each was written by an entry, so ≤ 4 MiB; this version sends none, see
//! `Outcome::Applied`): [`MAX_REPLY_BYTES`] = 8 × 4 MiB + 1 MiB = 33 MiB.
//! Writes forwarded together hold at most [`MAX_OPS`] ops in all, so their answers fit the same
//! bound.

use std::collections::BTreeMap;
use std::time::Duration;

use openraft::error::{InstallSnapshotError, RPCError, RaftError, RemoteError, Timeout, Unreachable};
use openraft::network::{RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};

use super::transport::{Transport, TransportError, peer_id};
use super::{Member, NodeId, Op, Request, Response, TypeConfig};

/// The largest log entry a write may make, as an upper bound of its encoded bytes
/// ([`entry_bytes`]): an object the API accepted (its body is at most 3 MiB) and 1 MiB for what
/// the server and the control plane add to it (metadata, managedFields, status).
pub const MAX_ENTRY_BYTES: usize = 4 * 1024 * 1024;

/// Operations in one write. The registry's writes have one or two; the answer to a forwarded
/// write holds the value each op replaced, so this bounds the answer.
pub const MAX_OPS: usize = 8;

/// Bytes of entries one AppendEntries carries (at least one entry goes, however large): small
/// entries still go 64 at a time (openraft's batch cap), large ones one or a few at a time.
pub const APPEND_BUDGET: usize = 1024 * 1024;

/// Bytes of snapshot data in one InstallSnapshot.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;

/// What a message holds besides its entries, snapshot data or write (see the module doc).
pub const ENVELOPE_BYTES: u64 = 1024 * 1024;

/// The largest request a member reads: 4 MiB + 1 MiB (see the module doc).
pub const MAX_REQUEST_BYTES: u64 =
    max(MAX_ENTRY_BYTES, max(APPEND_BUDGET, SNAPSHOT_CHUNK_BYTES)) as u64 + ENVELOPE_BYTES;

/// The largest reply a member reads: 8 × 4 MiB + 1 MiB (see the module doc).
pub const MAX_REPLY_BYTES: u64 = (MAX_OPS * MAX_ENTRY_BYTES) as u64 + ENVELOPE_BYTES;

const fn max(a: usize, b: usize) -> usize {
    if a > b { a } else { b }
}

/// What an entry adds to its payload's strings, at most: its log id and the names and headers
/// of its fields.
const ENTRY_OVERHEAD: usize = 256;

/// What an op or a member adds to its strings, at most: field names, CBOR string headers (up
/// to 9 bytes each), its precondition or id.
const ITEM_OVERHEAD: usize = 128;

/// An upper bound of the encoded size of `request` as a log entry.
pub fn request_bytes(request: &Request) -> usize {
    let ops: usize = request
        .ops
        .iter()
        .map(|op| match op {
            Op::Put { key, value, .. } => key.len() + value.len() + ITEM_OVERHEAD,
            Op::Delete { key, .. } | Op::Check { key, .. } => key.len() + ITEM_OVERHEAD,
        })
        .sum();
    let batch: usize = request.batch.iter().map(request_bytes).sum();
    ENTRY_OVERHEAD + ops + batch
}

/// An upper bound of the encoded size of `entry`.
pub fn entry_bytes(entry: &openraft::Entry<TypeConfig>) -> usize {
    match &entry.payload {
        openraft::EntryPayload::Blank => ENTRY_OVERHEAD,
        openraft::EntryPayload::Normal(request) => request_bytes(request),
        openraft::EntryPayload::Membership(m) => {
            let nodes: usize =
                m.nodes().map(|(_, n)| n.did.len() + n.p2p.len() + n.api.len() + ITEM_OVERHEAD).sum();
            let voters: usize = m.get_joint_config().iter().map(|c| 16 + 16 * c.len()).sum();
            ENTRY_OVERHEAD + nodes + voters
        }
    }
}

/// How many of `entries` one AppendEntries carries: as many as fit in [`APPEND_BUDGET`], and at
/// least one.
pub fn entries_that_fit(entries: &[openraft::Entry<TypeConfig>]) -> usize {
    let mut total = 0;
    let mut n = 0;
    for entry in entries {
        total += entry_bytes(entry);
        if n > 0 && total > APPEND_BUDGET {
            break;
        }
        n += 1;
    }
    n
}

/// What writes forwarded together ([`Rpc::Writes`]) may hold: at most [`MAX_OPS`] writes, with
/// at most [`MAX_OPS`] ops and [`MAX_ENTRY_BYTES`] (as [`request_bytes`] counts) in all, so the
/// request fits [`MAX_REQUEST_BYTES`] and the answer (from a member of an earlier version,
/// the value each op replaced) [`MAX_REPLY_BYTES`], exactly as one write's do. A first write
/// is always taken (one write alone is within both bounds: see `node.rs`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ForwardBudget {
    writes: usize,
    ops: usize,
    bytes: usize,
}

impl ForwardBudget {
    /// Takes a write of `ops` ops and `bytes` bytes if the batch still has room for it (or is
    /// empty); says whether it did.
    pub fn take(&mut self, ops: usize, bytes: usize) -> bool {
        let fits =
            self.writes < MAX_OPS && self.ops + ops <= MAX_OPS && self.bytes + bytes <= MAX_ENTRY_BYTES;
        if self.writes == 0 || fits {
            self.writes += 1;
            self.ops += ops;
            self.bytes += bytes;
            return true;
        }
        false
    }

    /// Whether `requests`, received together, are within the budget (a member refuses them
    /// otherwise: no member sends more).
    pub fn admits(requests: &[Request]) -> bool {
        let mut budget = Self::default();
        requests.iter().all(|r| budget.take(r.ops.len(), request_bytes(r)))
    }
}

/// A request from one member to another.
#[derive(Debug, Serialize, Deserialize)]
pub enum Rpc {
    /// Raft: replicate entries / heartbeat.
    Append(AppendEntriesRequest<TypeConfig>),
    /// Raft: request a vote.
    Vote(VoteRequest<NodeId>),
    /// Raft: one chunk of a snapshot.
    Snapshot(InstallSnapshotRequest<TypeConfig>),
    /// A client write received by a follower, for the leader to commit.
    Write(Request),
    /// A follower's linearizable read: the leader confirms its leadership and answers the index
    /// the follower must have applied before it reads.
    ReadIndex,
    /// A new member (already added as a learner) asks what it needs to start.
    Join,
    /// A learner asks to become a voter once it has caught up; it says its API URL (which
    /// whoever added it may not have known).
    Promote(String),
    /// Add a learner (from `ui cluster add` on a follower).
    AddLearner(NodeId, Member),
    /// Remove a member (from `ui cluster remove` on a follower).
    Remove(NodeId),
    /// What the member knows of itself.
    Status,
    /// Client writes received by a follower while its earlier ones were still on their way,
    /// sent together for the leader to commit (within [`ForwardBudget`]); each is answered on
    /// its own, in order. Only on `/univrs/raft/3`: the transport does not send it to a member
    /// of the version before (`TransportError::Unsupported`), which then gets the writes one
    /// message each.
    Writes(Vec<Request>),
}

/// The answer to an [`Rpc`].
#[derive(Debug, Serialize, Deserialize)]
pub enum Reply {
    /// To [`Rpc::Append`].
    Append(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    /// To [`Rpc::Vote`].
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    /// To [`Rpc::Snapshot`].
    Snapshot(Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>),
    /// To [`Rpc::Write`].
    Write(Result<Response, Refusal>),
    /// To [`Rpc::ReadIndex`].
    ReadIndex(Result<u64, Refusal>),
    /// To [`Rpc::Join`]: the members, and the bootstrap the cluster gives joiners (its id and
    /// CA, opaque here).
    Joined {
        /// Every member known to the answering member.
        members: BTreeMap<NodeId, Member>,
        /// The cluster's bootstrap blob.
        bootstrap: Vec<u8>,
    },
    /// To [`Rpc::Promote`]: whether the caller is now a voter, or how far behind it still is.
    Promoted(Result<bool, Refusal>),
    /// To [`Rpc::AddLearner`] and [`Rpc::Remove`].
    Changed(Result<(), Refusal>),
    /// To [`Rpc::Status`].
    Status(MemberStatus),
    /// The peer may not make this request (it is not a member).
    Forbidden(String),
    /// To [`Rpc::Writes`]: each write's answer, in order.
    Writes(Vec<Result<Response, Refusal>>),
}

/// Why a member refused a forwarded request.
#[derive(Debug, Clone, Serialize, Deserialize, thiserror::Error)]
pub enum Refusal {
    /// It is not the leader (any more); the caller may retry with the one named.
    #[error("not the leader (leader: {0:?})")]
    NotLeader(Option<NodeId>),
    /// It cannot do it.
    #[error("{0}")]
    Failed(String),
}

/// One member's view of itself.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct MemberStatus {
    /// Its id.
    pub id: NodeId,
    /// `Leader`, `Follower`, `Candidate`, `Learner`.
    pub state: String,
    /// Who it thinks leads.
    pub leader: Option<NodeId>,
    /// Its Raft term.
    pub term: u64,
    /// The last entry it applied.
    pub last_applied: u64,
}

/// openraft's network factory on the libp2p transport.
#[derive(Clone, Debug)]
pub struct Network {
    pub(super) transport: Transport,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> PeerClient {
        PeerClient { transport: self.transport.clone(), target, member: node.clone() }
    }
}

/// The connection to one peer, as openraft sees it.
#[derive(Debug)]
pub struct PeerClient {
    transport: Transport,
    target: NodeId,
    member: Member,
}

impl PeerClient {
    async fn call<E: std::error::Error>(
        &self,
        rpc: Rpc,
        action: RPCTypes,
        ttl: Duration,
    ) -> Result<Reply, RPCError<NodeId, Member, E>> {
        let peer = peer_id(&self.member.did).ok_or_else(|| {
            RPCError::Unreachable(Unreachable::new(&std::io::Error::other(format!(
                "member {} has no valid did: {:?}",
                self.target, self.member.did
            ))))
        })?;
        match self.transport.call(peer, &self.member.p2p, rpc, ttl).await {
            Ok(Reply::Forbidden(why)) => Err(RPCError::Unreachable(Unreachable::new(
                &std::io::Error::other(format!("member {} refused us: {why}", self.target)),
            ))),
            Ok(reply) => Ok(reply),
            Err(TransportError::Timeout(_)) => {
                Err(RPCError::Timeout(Timeout { action, id: 0, target: self.target, timeout: ttl }))
            }
            Err(e) => Err(RPCError::Unreachable(Unreachable::new(&e))),
        }
    }
}

fn unexpected<E: std::error::Error>(reply: &Reply) -> RPCError<NodeId, Member, E> {
    RPCError::Unreachable(Unreachable::new(&std::io::Error::other(format!("unexpected reply {reply:?}"))))
}

impl RaftNetwork<TypeConfig> for PeerClient {
    /// Sends the entries that fit in [`APPEND_BUDGET`]; when that is fewer than openraft gave,
    /// a success is a partial one, up to the last entry sent (openraft then sends the rest).
    async fn append_entries(
        &mut self,
        mut rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        let fit = entries_that_fit(&rpc.entries);
        let trimmed = fit < rpc.entries.len();
        let last_sent = if trimmed {
            rpc.entries.truncate(fit);
            let last = rpc.entries.last().map(|e| e.log_id);
            // The follower may commit no further than what it was sent (openraft's follower
            // already takes the smaller of the two; this keeps the message true on its own).
            if rpc.leader_commit > last {
                rpc.leader_commit = last;
            }
            last
        } else {
            None
        };
        match self.call(Rpc::Append(rpc), RPCTypes::AppendEntries, option.hard_ttl()).await? {
            Reply::Append(Ok(AppendEntriesResponse::Success)) if trimmed => {
                Ok(AppendEntriesResponse::PartialSuccess(last_sent))
            }
            Reply::Append(r) => r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e))),
            other => Err(unexpected(&other)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Member, RaftError<NodeId, InstallSnapshotError>>,
    > {
        match self.call(Rpc::Snapshot(rpc), RPCTypes::InstallSnapshot, option.hard_ttl()).await? {
            Reply::Snapshot(r) => r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e))),
            other => Err(unexpected(&other)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        match self.call(Rpc::Vote(rpc), RPCTypes::Vote, option.hard_ttl()).await? {
            Reply::Vote(r) => r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e))),
            other => Err(unexpected(&other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use libp2p::StreamProtocol;
    use libp2p::request_response::Codec as _;
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Membership};

    use super::*;
    use crate::raft::transport::{FrameCodec, Limits};
    use crate::raft::{Expect, Outcome, Stored};

    fn entry(index: u64, payload: EntryPayload<TypeConfig>) -> Entry<TypeConfig> {
        Entry { log_id: LogId::new(CommittedLeaderId::new(u64::MAX, u64::MAX), index), payload }
    }

    fn put(value_len: usize) -> EntryPayload<TypeConfig> {
        EntryPayload::Normal(Request {
            batch: Vec::new(),
            ops: vec![Op::Put {
                key: "/registry/workloads/default/web".into(),
                value: "v".repeat(value_len).into(),
                expect: Expect::ModRevision(u64::MAX),
            }],
        })
    }

    async fn encoded(rpc: Rpc) -> usize {
        let limits = Limits { request: u64::from(u32::MAX), reply: u64::from(u32::MAX) };
        let mut wire = Vec::new();
        FrameCodec::new(limits).write_request(&StreamProtocol::new("/t"), &mut wire, rpc).await.unwrap();
        wire.len()
    }

    fn append(entries: Vec<Entry<TypeConfig>>) -> Rpc {
        Rpc::Append(AppendEntriesRequest {
            vote: openraft::Vote::new_committed(u64::MAX, u64::MAX),
            prev_log_id: Some(LogId::new(CommittedLeaderId::new(u64::MAX, u64::MAX), u64::MAX)),
            entries,
            leader_commit: Some(LogId::new(CommittedLeaderId::new(u64::MAX, u64::MAX), u64::MAX)),
        })
    }

    #[tokio::test]
    async fn entry_bytes_bounds_what_an_entry_takes_on_the_wire() {
        let member = |i: usize| Member {
            did: format!("did:key:z6Mk{}", "a".repeat(44 + i)),
            p2p: "[2001:db8::1234:5678]:65535".into(),
            api: format!("https://{}", "h".repeat(1000)),
        };
        let nodes: BTreeMap<NodeId, Member> = (0..64).map(|i| (u64::MAX - i as u64, member(i))).collect();
        let voters = BTreeSet::from_iter(nodes.keys().copied().take(33));
        let membership = Membership::new(vec![voters.clone(), voters], nodes);
        let delete = EntryPayload::Normal(Request {
            batch: Vec::new(),
            ops: (0..MAX_OPS)
                .map(|i| Op::Delete {
                    key: format!("/registry/k/{i}"),
                    expect: Expect::ModRevision(u64::MAX),
                })
                .collect(),
        });
        // A batch of writes in one entry (group commit) is bounded by all of them.
        let one = |n: usize| match put(n) {
            EntryPayload::Normal(r) => r,
            _ => unreachable!(),
        };
        let batch = EntryPayload::Normal(Request {
            ops: Vec::new(),
            batch: (0..200).map(|i| one(i * 100)).collect(),
        });
        let entries = vec![
            entry(u64::MAX, batch),
            entry(u64::MAX, EntryPayload::Blank),
            entry(u64::MAX, put(0)),
            entry(u64::MAX, put(70_000)),
            entry(u64::MAX, put(5_000_000)),
            entry(u64::MAX, delete),
            entry(u64::MAX, EntryPayload::Membership(membership)),
        ];
        let empty = encoded(append(vec![])).await;
        assert!(empty < 1024, "an AppendEntries without entries is {empty} bytes");
        for e in entries {
            let bound = entry_bytes(&e);
            let taken = encoded(append(vec![e.clone()])).await - empty;
            assert!(taken <= bound, "{:?} takes {taken} bytes, bound {bound}", e.payload);
            assert!(bound - taken < 64 * 1024 + taken / 10, "the bound is close: {taken} vs {bound}");
        }
    }

    #[test]
    fn an_append_carries_entries_up_to_its_budget_and_always_one() {
        let small: Vec<_> = (0..64).map(|i| entry(i, put(1000))).collect();
        assert_eq!(entries_that_fit(&small), 64, "small entries go as openraft batches them");
        let large: Vec<_> = (0..10).map(|i| entry(i, put(300 * 1024))).collect();
        assert_eq!(entries_that_fit(&large), 3, "300 KiB entries go three to a 1 MiB message");
        let huge: Vec<_> = (0..3).map(|i| entry(i, put(MAX_ENTRY_BYTES - 1024))).collect();
        assert_eq!(entries_that_fit(&huge), 1, "an entry over the budget goes alone");
        assert_eq!(entries_that_fit(&[]), 0);
    }

    #[test]
    fn forwarded_writes_go_together_within_the_budget() {
        let mut budget = ForwardBudget::default();
        // The first write is always taken, whatever its size; nothing joins it past the bytes.
        assert!(budget.take(MAX_OPS, MAX_ENTRY_BYTES + 1));
        assert!(!budget.take(0, 0));
        // At most MAX_OPS writes, and at most MAX_OPS ops in all.
        let mut budget = ForwardBudget::default();
        for _ in 0..MAX_OPS {
            assert!(budget.take(1, 100));
        }
        assert!(!budget.take(0, 0), "a write past MAX_OPS writes");
        let mut budget = ForwardBudget::default();
        assert!(budget.take(5, 100));
        assert!(!budget.take(4, 100), "9 ops");
        assert!(budget.take(3, 100), "8 ops");
        let mut budget = ForwardBudget::default();
        assert!(budget.take(1, MAX_ENTRY_BYTES - 10));
        assert!(!budget.take(1, 11));
        assert!(budget.take(1, 10));
        // What a member receives is checked the same way.
        let small = Request::new(vec![Op::Delete { key: "/k".into(), expect: Expect::Any }]);
        assert!(ForwardBudget::admits(&vec![small.clone(); MAX_OPS]));
        assert!(!ForwardBudget::admits(&vec![small.clone(); MAX_OPS + 1]));
        assert!(ForwardBudget::admits(&[]));
    }

    #[tokio::test]
    async fn writes_forwarded_together_fit_a_request() {
        // The budget's bytes at their fullest, over the most writes: within the request limit.
        let each = MAX_ENTRY_BYTES / MAX_OPS - 500;
        let writes: Vec<Request> = (0..MAX_OPS)
            .map(|i| match put(each) {
                EntryPayload::Normal(mut r) => {
                    if let Op::Put { key, .. } = &mut r.ops[0] {
                        key.push_str(&i.to_string());
                    }
                    r
                }
                _ => unreachable!(),
            })
            .collect();
        assert!(ForwardBudget::admits(&writes));
        let size = encoded(Rpc::Writes(writes)).await as u64;
        assert!(size <= MAX_REQUEST_BYTES, "{size} bytes");
        assert!(size > (MAX_ENTRY_BYTES - MAX_OPS * 500) as u64, "the values are in it: {size} bytes");
    }

    #[test]
    fn the_frame_limits_hold_the_largest_messages() {
        // One entry as large as a write may make, or a full snapshot chunk, fits in a request
        // with its envelope; a forwarded write's answer with MAX_OPS replaced values fits in a
        // reply.
        assert!(MAX_ENTRY_BYTES as u64 + ENVELOPE_BYTES <= MAX_REQUEST_BYTES);
        assert!(APPEND_BUDGET as u64 + ENVELOPE_BYTES <= MAX_REQUEST_BYTES);
        assert!(SNAPSHOT_CHUNK_BYTES as u64 + ENVELOPE_BYTES <= MAX_REQUEST_BYTES);
        assert!((MAX_OPS * MAX_ENTRY_BYTES) as u64 + ENVELOPE_BYTES <= MAX_REPLY_BYTES);
        assert_eq!(MAX_REQUEST_BYTES, 5 * 1024 * 1024);
        assert_eq!(MAX_REPLY_BYTES, 33 * 1024 * 1024);
    }

    #[test]
    fn an_applied_answer_carries_the_field_members_before_need_and_reads_theirs() {
        // Members of the versions before read `prev` as required and sent it full: it is
        // still sent (empty), and what they sent in it still reads.
        let ours =
            Response { revision: 3, outcome: Outcome::Applied { prev: Vec::new() }, batch: Vec::new() };
        let bytes = cbor4ii::serde::to_vec(Vec::new(), &ours).unwrap();
        assert!(bytes.windows(4).any(|w| w == b"prev"), "the field is on the wire");
        let old = Stored { create_revision: 1, mod_revision: 2, value: "{}".into() };
        let theirs = Response {
            revision: 3,
            outcome: Outcome::Applied { prev: vec![Some(old), None] },
            batch: Vec::new(),
        };
        let bytes = cbor4ii::serde::to_vec(Vec::new(), &theirs).unwrap();
        let read: Response = cbor4ii::serde::from_slice(&bytes).unwrap();
        assert_eq!(read, theirs);
    }
}
