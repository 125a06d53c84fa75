//! What members say to each other, and openraft's network (`RaftNetworkFactory`) on the
//! libp2p [`Transport`].

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
use super::{Member, NodeId, Request, Response, TypeConfig};

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
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        match self.call(Rpc::Append(rpc), RPCTypes::AppendEntries, option.hard_ttl()).await? {
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
