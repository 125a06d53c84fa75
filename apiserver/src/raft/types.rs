//! What the replicated state machine stores and how it is changed.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A control-plane member's Raft id.
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// The Raft type configuration of the apiserver.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = NodeId,
        Node = Member,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
);

/// What the cluster knows of a member: its identity and where to reach it. Stored in Raft's
/// membership, so every member knows every other's address and key.
///
/// A data dir started before members had identities holds `{"addr": ""}` here: every field
/// defaults, so it still reads.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Member {
    /// The member's did:key (its `member.key`); its libp2p PeerId derives from the same key.
    pub did: String,
    /// Where its member-to-member transport listens (`HOST:PORT`).
    pub p2p: String,
    /// Where it serves the client API (`https://HOST:PORT`), for `ui cluster members`.
    pub api: String,
}

impl std::fmt::Display for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at {}", self.did, self.p2p)
    }
}

/// One write: applied all or nothing, after every precondition holds. Or, with `batch`, the
/// several writes one log entry carries (group commit).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// The operations, on distinct keys (empty in a batch).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ops: Vec<Op>,
    /// The writes committed together in this entry (concurrent writes share one entry and so
    /// one fsync): each applied on its own, in order (all or nothing, its own preconditions),
    /// with a revision of its own, exactly as if it had been an entry of its own; their own
    /// `batch` is empty. `ops` is then empty and not written, so a member of a version
    /// without batches cannot read the entry at all, rather than apply only part of it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub batch: Vec<Request>,
}

impl Request {
    /// A write of `ops`.
    pub fn new(ops: Vec<Op>) -> Self {
        Self { ops, batch: Vec::new() }
    }
}

/// One operation of a [`Request`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Sets `key` to `value`.
    Put {
        /// The key.
        key: String,
        /// The new value (the object's JSON). Shared: an entry is cloned from the log's
        /// recent entries to be applied and to be sent to each follower, and a clone of the
        /// value is then a count, not a copy of the object. A string on the wire and in the
        /// log, as before; read into the `Arc` with one copy (`shared_str`), made from the
        /// writer's `String` with one.
        #[serde(deserialize_with = "shared_str")]
        value: Arc<str>,
        /// What must hold of the current value.
        expect: Expect,
    },
    /// Removes `key`.
    Delete {
        /// The key.
        key: String,
        /// What must hold of the current value.
        expect: Expect,
    },
    /// Changes nothing: only its precondition must hold (what a write was decided on, e.g. the
    /// credit line a transfer draws on, is still as it was read).
    Check {
        /// The key.
        key: String,
        /// What must hold of the current value.
        expect: Expect,
    },
}

impl Op {
    /// The key this operation is on.
    pub fn key(&self) -> &str {
        match self {
            Op::Put { key, .. } | Op::Delete { key, .. } | Op::Check { key, .. } => key,
        }
    }

    fn expect(&self) -> Expect {
        match self {
            Op::Put { expect, .. } | Op::Delete { expect, .. } | Op::Check { expect, .. } => *expect,
        }
    }
}

/// A string read straight into an `Arc<str>`: one copy of what the decoder holds (serde's own
/// `Arc<str>` goes through a `String` and a `Box<str>`: two).
fn shared_str<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Arc<str>, D::Error> {
    struct Shared;
    impl serde::de::Visitor<'_> for Shared {
        type Value = Arc<str>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Arc<str>, E> {
            Ok(Arc::from(s))
        }
    }
    d.deserialize_str(Shared)
}

/// A precondition on the current value of a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Expect {
    /// Nothing required.
    Any,
    /// The key must not exist (create).
    Absent,
    /// The key must exist (any revision).
    Present,
    /// The key must exist and have been last changed at exactly this revision.
    ModRevision(u64),
}

impl Expect {
    /// Whether the expectation holds for a key whose current value is `current`.
    pub fn holds(self, current: Option<&Stored>) -> bool {
        match (self, current) {
            (Expect::Any, _) => true,
            (Expect::Absent, None) | (Expect::Present, Some(_)) => true,
            (Expect::ModRevision(r), Some(s)) => s.mod_revision == r,
            _ => false,
        }
    }
}

/// A stored value with its revisions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    /// The revision that created the key (its current incarnation).
    pub create_revision: u64,
    /// The revision that last changed the key.
    pub mod_revision: u64,
    /// The value (an object's JSON).
    pub value: String,
}

/// What applying one write (or a batch) did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// The revision of the write (of a batch: of its last write). Every log entry moves the
    /// revision by one, and a batch by one per write: so without batches it is the log
    /// index, and every member counts the same revisions for the same log.
    pub revision: u64,
    /// Whether the request was applied.
    pub outcome: Outcome,
    /// What each write of the request's `batch` did, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub batch: Vec<Response>,
}

/// The result of a [`Request`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Not a request (a blank or membership entry).
    #[default]
    None,
    /// Applied.
    Applied {
        /// Always empty. It once held the value each op replaced, which no reader used; a
        /// leader sent it back with every forwarded write (an update's whole former object),
        /// and every member copied it for nothing. Kept on the wire, empty, because members
        /// of the versions before need the field to read the reply; what they sent in it is
        /// read and dropped. The history ([`super::history::Change`]) keeps what a write
        /// replaced.
        #[serde(default)]
        prev: Vec<Option<Stored>>,
    },
    /// Not applied: the precondition of op `op` failed; `current` is what the key held.
    PreconditionFailed {
        /// Index of the first failing op.
        op: usize,
        /// The key's value at that moment.
        current: Option<Stored>,
    },
    /// Not applied: two ops were on the same key.
    DuplicateKey {
        /// The key.
        key: String,
    },
}

impl Request {
    /// Checks every precondition against `current` (a lookup of a key's value). Returns what
    /// each op's key holds, in op order, for the writer to use (each key is read once); or
    /// the outcome that refuses the request.
    pub(crate) fn check(
        &self,
        mut current: impl FnMut(&str) -> Option<Stored>,
    ) -> Result<Vec<Option<Stored>>, Outcome> {
        let mut seen = std::collections::BTreeSet::new();
        for op in &self.ops {
            if !seen.insert(op.key()) {
                return Err(Outcome::DuplicateKey { key: op.key().to_owned() });
            }
        }
        let mut held = Vec::with_capacity(self.ops.len());
        for (i, op) in self.ops.iter().enumerate() {
            let cur = current(op.key());
            if !op.expect().holds(cur.as_ref()) {
                return Err(Outcome::PreconditionFailed { op: i, current: cur });
            }
            held.push(cur);
        }
        Ok(held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_put_is_written_and_read_as_when_its_value_was_a_string() {
        // `Op` as it was before its value was shared: members of earlier versions send and
        // read these bytes, and the log's entries hold the same CBOR.
        #[derive(Serialize)]
        enum Before {
            Put { key: String, value: String, expect: Expect },
        }
        let value = r#"{"kind":"Replica","metadata":{"name":"r"}}"#;
        let ours = Op::Put { key: "/k".into(), value: value.into(), expect: Expect::ModRevision(4) };
        let theirs = Before::Put { key: "/k".into(), value: value.into(), expect: Expect::ModRevision(4) };
        let cbor = cbor4ii::serde::to_vec(Vec::new(), &ours).unwrap();
        assert_eq!(cbor, cbor4ii::serde::to_vec(Vec::new(), &theirs).unwrap());
        assert_eq!(cbor4ii::serde::from_slice::<Op>(&cbor).unwrap(), ours);
        let json = serde_json::to_string(&ours).unwrap();
        assert_eq!(json, serde_json::to_string(&theirs).unwrap());
        assert_eq!(serde_json::from_str::<Op>(&json).unwrap(), ours);
        // A value with escapes (JSON reads it into a buffer of its own, not borrowed), and one
        // that is not a string.
        let escaped = Op::Put { key: "/k".into(), value: "a\"b\\n".into(), expect: Expect::Any };
        let json = serde_json::to_string(&escaped).unwrap();
        assert_eq!(serde_json::from_str::<Op>(&json).unwrap(), escaped);
        let not_a_string = r#"{"Put":{"key":"/k","value":7,"expect":"Any"}}"#;
        assert!(serde_json::from_str::<Op>(not_a_string).unwrap_err().to_string().contains("a string"));
    }
}
