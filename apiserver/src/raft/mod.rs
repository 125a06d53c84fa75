//! Raft: the types of the replicated state machine, and its durable storage (openraft's
//! storage-v2 traits: the log a write-ahead log of its own, the state machine on redb).
//!
//! Every write of the apiserver becomes one [`Request`]: a transaction of puts and deletes,
//! each with a precondition, applied atomically or not at all. Preconditions are checked when
//! the entry is *applied*, so they are linearizable: two writers racing on one
//! `resourceVersion` cannot both win. Concurrent writes on the leader share one entry (group
//! commit, [`RaftNode::write`]), each applied on its own. The revision of a change is the
//! state machine's count of writes applied when it was made; that is the object's
//! `resourceVersion`.

mod cluster;
pub mod history;
pub mod labels;
mod log_store;
mod node;
mod packed;
pub use packed::stored_records;
pub mod rpc;
mod snapshot;
mod state_machine;
pub mod transport;
mod types;
mod wal;
pub use wal::OpenError as LogOpenError;

pub use cluster::{
    ClusterError, JoinTarget, MAX_API_URL_BYTES, MAX_MEMBERS, MemberConfig, MemberInfo, PROMOTE_LAG,
    member_id,
};
pub use log_store::{Imported, LogStore, TOMBSTONE, ensure_tombstone, import_redb, is_tombstone};
pub use node::{NoPeers, Options, RaftNode, ReadError, SINGLE_NODE_ID, StartError, WriteError};
pub use state_machine::{Scan, StateMachine, Visit};
pub use types::{Expect, Member, NodeId, Op, Outcome, Request, Response, Stored, TypeConfig};

/// Maps any error into openraft's storage error for `subject` and `verb`.
fn io_err(
    subject: openraft::ErrorSubject<NodeId>,
    verb: openraft::ErrorVerb,
    e: impl std::error::Error + 'static,
) -> openraft::StorageError<NodeId> {
    openraft::StorageIOError::new(subject, verb, openraft::AnyError::new(&e)).into()
}

/// Opens `table` for reading; a table nothing was ever written to reads as `None` (empty).
fn read_table<K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &redb::ReadTransaction,
    table: redb::TableDefinition<'_, K, V>,
) -> Result<Option<redb::ReadOnlyTable<K, V>>, redb::TableError> {
    match txn.open_table(table) {
        Ok(t) => Ok(Some(t)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(e),
    }
}
