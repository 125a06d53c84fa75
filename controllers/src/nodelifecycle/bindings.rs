//! Which bound replicas lost their Node, as a pure function of the Nodes and the Replicas.
//!
//! A replica is bound to one Node object: its name (`spec.nodeName`) and its uid
//! (`spec.nodeUid`), written together by the scheduler. When that Node is deleted, the name is
//! free for anyone to register again, with another key; the replicas bound to the old Node must
//! never be handed to the new one. So a bound, unfinished replica is evicted when its Node is
//! gone (or being deleted), when the Node now bearing the name has another uid, or when it
//! carries no uid at all (bound before uids were written: nobody can say which Node it was for).

use std::collections::HashMap;

/// A Node as the sweep sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Node<'a> {
    /// `metadata.uid`.
    pub uid: &'a str,
    /// It has a `deletionTimestamp`.
    pub deleting: bool,
}

/// A replica's binding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Binding<'a> {
    /// `spec.nodeName`.
    pub node: &'a str,
    /// `spec.nodeUid`.
    pub node_uid: Option<&'a str>,
}

/// Why a binding no longer holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Broken {
    /// No Node bears the name, or it is being deleted.
    NodeGone,
    /// The Node bearing the name now is another one (another uid).
    OtherNode,
    /// The replica carries no Node uid.
    NoUid,
}

impl Broken {
    /// For logs and events.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NodeGone => "its node is gone",
            Self::OtherNode => "its node was deleted and the name registered again",
            Self::NoUid => "it was bound without a node uid",
        }
    }

    /// Whether the Node was looked up for this verdict (then a cache late to show the Node
    /// must be checked against the apiserver before acting on it).
    pub fn depends_on_the_node(self) -> bool {
        !matches!(self, Self::NoUid)
    }
}

/// Whether `binding` still holds, given the Node that bears its name now (if any).
pub fn check(binding: Binding<'_>, node: Option<Node<'_>>) -> Result<(), Broken> {
    let Some(uid) = binding.node_uid else { return Err(Broken::NoUid) };
    match node {
        None => Err(Broken::NodeGone),
        Some(n) if n.deleting => Err(Broken::NodeGone),
        Some(n) if n.uid != uid => Err(Broken::OtherNode),
        Some(_) => Ok(()),
    }
}

/// One replica as the sweep sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Replica<'a, K> {
    /// Whatever the caller finds it by.
    pub key: K,
    /// Its binding, if bound.
    pub binding: Option<Binding<'a>>,
    /// It finished (Succeeded or Failed): nothing runs, nothing to take from anyone.
    pub finished: bool,
    /// It is being deleted already.
    pub deleting: bool,
}

/// The replicas to evict, and why: every bound, unfinished replica not being deleted whose
/// binding `check` refuses against `nodes` (by name).
pub fn orphans<'a, K: Copy>(
    nodes: &HashMap<&str, Node<'_>>,
    replicas: impl IntoIterator<Item = Replica<'a, K>>,
) -> Vec<(K, Broken)> {
    replicas
        .into_iter()
        .filter(|r| !r.finished && !r.deleting)
        .filter_map(|r| {
            let b = r.binding?;
            check(b, nodes.get(b.node).copied()).err().map(|why| (r.key, why))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bound<'a>(key: &'a str, node: &'a str, uid: Option<&'a str>) -> Replica<'a, &'a str> {
        Replica { key, binding: Some(Binding { node, node_uid: uid }), finished: false, deleting: false }
    }

    #[test]
    fn a_replica_keeps_its_node_only_while_that_very_node_is_there() {
        let n1 = Node { uid: "u1", deleting: false };
        let at = |node| Binding { node: "n1", node_uid: node };
        assert_eq!(check(at(Some("u1")), Some(n1)), Ok(()));
        assert_eq!(check(at(Some("u1")), None), Err(Broken::NodeGone));
        assert_eq!(check(at(Some("u1")), Some(Node { deleting: true, ..n1 })), Err(Broken::NodeGone));
        // The name registered again after a delete: another Node, another uid.
        assert_eq!(check(at(Some("u0")), Some(n1)), Err(Broken::OtherNode));
        assert_eq!(check(at(None), Some(n1)), Err(Broken::NoUid));
        assert!(!Broken::NoUid.depends_on_the_node() && Broken::OtherNode.depends_on_the_node());
    }

    #[test]
    fn orphans_are_the_unfinished_live_replicas_of_gone_or_replaced_nodes() {
        let nodes = HashMap::from([
            ("n1", Node { uid: "u1", deleting: false }),
            ("n2", Node { uid: "u2-new", deleting: false }),
            ("n3", Node { uid: "u3", deleting: true }),
        ]);
        let replicas = vec![
            bound("ok", "n1", Some("u1")),
            bound("replaced", "n2", Some("u2-old")),
            bound("deleting-node", "n3", Some("u3")),
            bound("gone", "n4", Some("u4")),
            bound("no-uid", "n1", None),
            Replica { finished: true, ..bound("finished", "n4", Some("u4")) },
            Replica { deleting: true, ..bound("deleting", "n4", Some("u4")) },
            Replica { key: "pending", binding: None, finished: false, deleting: false },
        ];
        assert_eq!(
            orphans(&nodes, replicas),
            vec![
                ("replaced", Broken::OtherNode),
                ("deleting-node", Broken::NodeGone),
                ("gone", Broken::NodeGone),
                ("no-uid", Broken::NoUid),
            ]
        );
    }
}
