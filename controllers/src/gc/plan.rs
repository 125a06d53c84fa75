//! The garbage collector's decisions, as a pure function of every object's identity, owner
//! references and finalizers (as Kubernetes' garbage collector):
//!
//! - **background**: a dependent whose owners are all gone (no object of that kind and name
//!   with that uid) is deleted; one that keeps a live owner loses its references to gone ones;
//! - **foreground**: while an owner being deleted holds the `foregroundDeletion` finalizer, its
//!   dependents are deleted; the finalizer is removed once no dependent with
//!   `blockOwnerDeletion` refers to it any more;
//! - **orphan**: while an owner being deleted holds the `orphan` finalizer, its dependents lose
//!   their reference to it (and live on); then the finalizer is removed.
//!
//! An owner "gone" in a cache may only be late in it: the shell checks with the apiserver before
//! acting on one (`Action::confirm_gone`).

use std::collections::{BTreeSet, HashMap};

/// The finalizer of foreground deletion.
pub const FOREGROUND: &str = "foregroundDeletion";
/// The finalizer of orphaning deletion.
pub const ORPHAN: &str = "orphan";

/// Which object: kind, namespace (none for cluster-scoped kinds), name, uid.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    /// `kind`.
    pub kind: String,
    /// Namespace, for namespaced kinds.
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
    /// Uid.
    pub uid: String,
}

/// One owner reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    /// The owner's kind.
    pub kind: String,
    /// The owner's name.
    pub name: String,
    /// The owner's uid: references match by uid.
    pub uid: String,
    /// Whether foreground deletion of the owner waits for this dependent.
    pub block: bool,
}

/// An object as the collector sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Obj {
    /// Which object.
    pub key: Key,
    /// Its owner references.
    pub owners: Vec<Owner>,
    /// It has a `deletionTimestamp`.
    pub deleting: bool,
    /// Its finalizers.
    pub finalizers: Vec<String>,
}

/// What to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Delete `target` (precondition: its uid), once every owner in `confirm_gone` is confirmed
    /// gone by the apiserver.
    Delete {
        /// The dependent.
        target: Key,
        /// Owners not in the cache.
        confirm_gone: Vec<(Key, String)>,
    },
    /// Remove the references with these uids from `target`, once every owner in
    /// `confirm_gone` is confirmed gone.
    RemoveOwners {
        /// The dependent.
        target: Key,
        /// Uids of the references to remove.
        uids: BTreeSet<String>,
        /// Owners not in the cache.
        confirm_gone: Vec<(Key, String)>,
    },
    /// Remove `finalizer` from `target`.
    RemoveFinalizer {
        /// The owner.
        target: Key,
        /// `foregroundDeletion` or `orphan`.
        finalizer: &'static str,
    },
}

/// Every action the objects call for. `namespaced(kind)` says whether a kind is namespaced (an
/// owner of a namespaced dependent is looked up in the dependent's namespace).
pub fn plan(objects: &[Obj], namespaced: impl Fn(&str) -> bool) -> Vec<Action> {
    let by_name: HashMap<(&str, Option<&str>, &str), &Obj> = objects
        .iter()
        .map(|o| ((o.key.kind.as_str(), o.key.namespace.as_deref(), o.key.name.as_str()), o))
        .collect();
    let owner_key = |dependent: &Obj, r: &Owner| Key {
        kind: r.kind.clone(),
        namespace: if namespaced(&r.kind) { dependent.key.namespace.clone() } else { None },
        name: r.name.clone(),
        uid: r.uid.clone(),
    };
    let mut actions = Vec::new();
    // Uids of owners that some dependent (blocking, for foreground) still refers to.
    let mut referenced: BTreeSet<&str> = BTreeSet::new();
    let mut blocking: BTreeSet<&str> = BTreeSet::new();
    for d in objects {
        for r in &d.owners {
            referenced.insert(&r.uid);
            if r.block {
                blocking.insert(&r.uid);
            }
        }
        if d.owners.is_empty() || d.deleting {
            continue;
        }
        let mut gone = Vec::new();
        let mut orphaning = Vec::new();
        let mut foreground = Vec::new();
        let mut solid = 0;
        for r in &d.owners {
            let k = owner_key(d, r);
            match by_name.get(&(k.kind.as_str(), k.namespace.as_deref(), k.name.as_str())) {
                Some(o) if o.key.uid == r.uid => {
                    if o.deleting && o.finalizers.iter().any(|f| f == ORPHAN) {
                        orphaning.push(r.uid.clone());
                    } else if o.deleting && o.finalizers.iter().any(|f| f == FOREGROUND) {
                        foreground.push(r.uid.clone());
                    } else {
                        solid += 1;
                    }
                }
                _ => gone.push((k, r.uid.clone())),
            }
        }
        let confirm_gone = gone.clone();
        if solid > 0 || !orphaning.is_empty() {
            let mut uids: BTreeSet<String> = gone.into_iter().map(|(_, uid)| uid).collect();
            uids.extend(orphaning);
            if solid > 0 {
                uids.extend(foreground);
            }
            if !uids.is_empty() {
                actions.push(Action::RemoveOwners { target: d.key.clone(), uids, confirm_gone });
            }
        } else {
            // Every owner is gone or being deleted in the foreground.
            actions.push(Action::Delete { target: d.key.clone(), confirm_gone });
        }
    }
    for o in objects.iter().filter(|o| o.deleting) {
        if o.finalizers.iter().any(|f| f == ORPHAN) && !referenced.contains(o.key.uid.as_str()) {
            actions.push(Action::RemoveFinalizer { target: o.key.clone(), finalizer: ORPHAN });
        }
        if o.finalizers.iter().any(|f| f == FOREGROUND) && !blocking.contains(o.key.uid.as_str()) {
            actions.push(Action::RemoveFinalizer { target: o.key.clone(), finalizer: FOREGROUND });
        }
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(kind: &str, name: &str, uid: &str) -> Key {
        Key { kind: kind.into(), namespace: Some("default".into()), name: name.into(), uid: uid.into() }
    }

    fn obj(kind: &str, name: &str, uid: &str) -> Obj {
        Obj { key: key(kind, name, uid), owners: vec![], deleting: false, finalizers: vec![] }
    }

    fn owned(name: &str, uid: &str, owners: &[(&str, &str)]) -> Obj {
        let mut o = obj("Replica", name, uid);
        o.owners = owners
            .iter()
            .map(|(n, u)| Owner { kind: "Workload".into(), name: (*n).into(), uid: (*u).into(), block: true })
            .collect();
        o
    }

    fn plan_of(objects: &[Obj]) -> Vec<Action> {
        plan(objects, |_| true)
    }

    #[test]
    fn nothing_to_do_while_owners_live() {
        assert_eq!(plan_of(&[obj("Workload", "web", "w1"), owned("r", "r1", &[("web", "w1")])]), vec![]);
    }

    #[test]
    fn background_deletes_dependents_of_a_gone_owner_matched_by_uid() {
        // A new Workload with the same name is another owner: references match by uid.
        let actions = plan_of(&[obj("Workload", "web", "w2"), owned("r", "r1", &[("web", "w1")])]);
        assert_eq!(
            actions,
            vec![Action::Delete {
                target: key("Replica", "r", "r1"),
                confirm_gone: vec![(key("Workload", "web", "w1"), "w1".into())],
            }]
        );
    }

    #[test]
    fn a_dependent_with_a_live_owner_only_loses_the_gone_reference() {
        let actions = plan_of(&[obj("Workload", "a", "wa"), owned("r", "r1", &[("a", "wa"), ("b", "wb")])]);
        assert_eq!(
            actions,
            vec![Action::RemoveOwners {
                target: key("Replica", "r", "r1"),
                uids: ["wb".to_owned()].into(),
                confirm_gone: vec![(key("Workload", "b", "wb"), "wb".into())],
            }]
        );
    }

    #[test]
    fn foreground_deletes_dependents_then_releases_the_owner() {
        let mut w = obj("Workload", "web", "w1");
        w.deleting = true;
        w.finalizers = vec![FOREGROUND.into()];
        let actions = plan_of(&[w.clone(), owned("r", "r1", &[("web", "w1")])]);
        assert_eq!(actions, vec![Action::Delete { target: key("Replica", "r", "r1"), confirm_gone: vec![] }]);
        // While the dependent is being deleted the owner still waits; once it is gone, not.
        let mut dying = owned("r", "r1", &[("web", "w1")]);
        dying.deleting = true;
        assert_eq!(plan_of(&[w.clone(), dying]), vec![]);
        assert_eq!(
            plan_of(&[w]),
            vec![Action::RemoveFinalizer { target: key("Workload", "web", "w1"), finalizer: FOREGROUND }]
        );
    }

    #[test]
    fn orphan_removes_references_then_releases_the_owner() {
        let mut w = obj("Workload", "web", "w1");
        w.deleting = true;
        w.finalizers = vec![ORPHAN.into()];
        let actions = plan_of(&[w.clone(), owned("r", "r1", &[("web", "w1")])]);
        assert_eq!(
            actions,
            vec![Action::RemoveOwners {
                target: key("Replica", "r", "r1"),
                uids: ["w1".to_owned()].into(),
                confirm_gone: vec![],
            }]
        );
        assert_eq!(
            plan_of(&[w, obj("Replica", "r", "r1")]),
            vec![Action::RemoveFinalizer { target: key("Workload", "web", "w1"), finalizer: ORPHAN }]
        );
    }

    #[test]
    fn owners_of_namespaced_dependents_are_looked_up_in_their_namespace() {
        let mut other_ns = obj("Workload", "web", "w1");
        other_ns.key.namespace = Some("other".into());
        let actions = plan_of(&[other_ns, owned("r", "r1", &[("web", "w1")])]);
        assert!(matches!(actions.as_slice(), [Action::Delete { .. }]));
        // A cluster-scoped owner is found whatever the dependent's namespace.
        let mut node = obj("Node", "n1", "n1uid");
        node.key.namespace = None;
        let mut d = obj("Replica", "r", "r1");
        d.owners = vec![Owner { kind: "Node".into(), name: "n1".into(), uid: "n1uid".into(), block: false }];
        assert_eq!(plan(&[node, d], |k| k != "Node"), vec![]);
    }
}
