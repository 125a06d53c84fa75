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

/// Opens the redb database at `path` with `builder` (creating it if `create` and absent). A
/// file written by redb 2 (file format 2, members from before redb 4) is first moved to format
/// 3 in place by redb 2's own [`redb2::Database::upgrade`], which redb 4 asks for
/// ([`redb::DatabaseError::UpgradeRequired`]) and cannot do itself.
fn open_redb(
    builder: &redb::Builder,
    path: &std::path::Path,
    create: bool,
) -> Result<redb::Database, redb::DatabaseError> {
    let open = || if create { builder.create(path) } else { builder.open(path) };
    match open() {
        Err(redb::DatabaseError::UpgradeRequired(2)) => {
            let failed = |e: &dyn std::fmt::Display| {
                redb::DatabaseError::Storage(redb::StorageError::Io(std::io::Error::other(format!(
                    "{}: moving it from redb's file format 2 to 3: {e}",
                    path.display()
                ))))
            };
            let mut old = redb2::Database::open(path).map_err(|e| match e {
                redb2::DatabaseError::DatabaseAlreadyOpen => redb::DatabaseError::DatabaseAlreadyOpen,
                e => failed(&e),
            })?;
            old.upgrade().map_err(|e| failed(&e))?;
            drop(old);
            tracing::info!(path = %path.display(), "moved from redb's file format 2 to 3");
            open()
        }
        result => result,
    }
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
