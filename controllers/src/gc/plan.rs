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
//!
//! **A reference counts only between objects of one owner.** Anyone may write an object whose
//! `ownerReferences` name someone else's, with `blockOwnerDeletion` and a finalizer of its own;
//! if the collector honoured that, a stranger could hold another's foreground deletion forever,
//! or have their references rewritten. So a reference counts only when the dependent is the
//! control plane's (an unsigned kind only members write: a Replica) or is signed by the signer
//! of the owner. Every other reference is as if absent: the dependent is neither deleted with
//! the owner nor waited on by its foreground deletion nor rewritten, and it keeps no owner's
//! `orphan` finalizer. The signer of an owner already gone is the one the collector remembered
//! while it was there; a signed dependent of an owner it never saw is left alone (its own
//! signer can delete it).

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

/// Whose an object is, as far as owner references go.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Author {
    /// The control plane's: an unsigned kind that only members write (a Replica, a Reputation).
    ControlPlane,
    /// Signed by this did:key.
    Signer(String),
    /// Nobody the collector can vouch for: a signed object without a signer, or a Lease (nodes
    /// write their own).
    Unknown,
}

impl Author {
    /// The author of an object of a kind that is `signed` (or not), with this signer
    /// annotation.
    pub fn of(kind: &str, signed: bool, signer: Option<&str>) -> Self {
        match (signed, signer) {
            (true, Some(s)) => Self::Signer(s.to_owned()),
            (true, None) => Self::Unknown,
            (false, _) if kind == <api::kinds::LeaseSpec as api::KindSpec>::KIND => Self::Unknown,
            (false, _) => Self::ControlPlane,
        }
    }
}

/// Whether a reference of a dependent by `dependent` to an owner by `owner` (`None`: not known)
/// counts.
pub fn counts(dependent: &Author, owner: Option<&Author>) -> bool {
    match (dependent, owner) {
        (Author::ControlPlane, _) => true,
        (Author::Signer(d), Some(Author::Signer(o))) => d == o,
        _ => false,
    }
}

/// An object as the collector sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Obj {
    /// Which object.
    pub key: Key,
    /// Whose it is.
    pub author: Author,
    /// Its owner references.
    pub owners: Vec<Owner>,
    /// Its `resourceVersion`, as seen.
    pub version: String,
    /// It has a `deletionTimestamp`.
    pub deleting: bool,
    /// Its finalizers.
    pub finalizers: Vec<String>,
}

/// What to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Delete `target` (preconditions: its uid and the `version` the plan saw, so that a
    /// dependent changed since — orphaned, or given a new owner — is not collected on a late
    /// view of it), once every owner in `confirm_gone` is confirmed gone by the apiserver.
    Delete {
        /// The dependent.
        target: Key,
        /// Its `resourceVersion` when the plan saw it.
        version: String,
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
/// owner of a namespaced dependent is looked up in the dependent's namespace); `gone` holds the
/// authors of objects by uid, as far as the caller remembers them: it is asked about owners no
/// longer among `objects`.
pub fn plan(
    objects: &[Obj],
    namespaced: impl Fn(&str) -> bool,
    gone: &HashMap<String, Author>,
) -> Vec<Action> {
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
    // The owner a reference names, if it is among the objects (same kind, name and uid).
    let owner_of = |dependent: &Obj, r: &Owner| {
        let namespace = if namespaced(&r.kind) { dependent.key.namespace.as_deref() } else { None };
        by_name.get(&(r.kind.as_str(), namespace, r.name.as_str())).copied().filter(|o| o.key.uid == r.uid)
    };
    // Who wrote it: the object's author, or the one remembered for an owner gone.
    let owner_author = |dependent: &Obj, r: &Owner| match owner_of(dependent, r) {
        Some(o) => Some(&o.author),
        None => gone.get(&r.uid),
    };
    let mut actions = Vec::new();
    // Uids of owners that some dependent (blocking, for foreground) still refers to.
    let mut referenced: BTreeSet<&str> = BTreeSet::new();
    let mut blocking: BTreeSet<&str> = BTreeSet::new();
    for d in objects {
        // Only the references that count: the others are as if absent.
        let owners: Vec<&Owner> = d.owners.iter().filter(|r| counts(&d.author, owner_author(d, r))).collect();
        for r in &owners {
            referenced.insert(&r.uid);
            if r.block {
                blocking.insert(&r.uid);
            }
        }
        if owners.is_empty() || d.deleting {
            continue;
        }
        let mut gone = Vec::new();
        let mut orphaning = Vec::new();
        let mut foreground = Vec::new();
        let mut solid = 0;
        for r in owners {
            match owner_of(d, r) {
                Some(o) => {
                    if o.deleting && o.finalizers.iter().any(|f| f == ORPHAN) {
                        orphaning.push(r.uid.clone());
                    } else if o.deleting && o.finalizers.iter().any(|f| f == FOREGROUND) {
                        foreground.push(r.uid.clone());
                    } else {
                        solid += 1;
                    }
                }
                None => gone.push((owner_key(d, r), r.uid.clone())),
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
            actions.push(Action::Delete { target: d.key.clone(), version: d.version.clone(), confirm_gone });
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

    /// An object of `kind`: Replicas are the control plane's, the rest signed by alice.
    fn obj(kind: &str, name: &str, uid: &str) -> Obj {
        let author = Author::of(kind, kind != "Replica" && kind != "Lease", Some("did:key:alice"));
        Obj {
            key: key(kind, name, uid),
            author,
            owners: vec![],
            version: format!("{uid}-v"),
            deleting: false,
            finalizers: vec![],
        }
    }

    fn signed_by(signer: &str, mut o: Obj) -> Obj {
        o.author = Author::Signer(signer.to_owned());
        o
    }

    fn refers(mut o: Obj, kind: &str, name: &str, uid: &str) -> Obj {
        o.owners.push(Owner { kind: kind.into(), name: name.into(), uid: uid.into(), block: true });
        o
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
        plan(objects, |_| true, &HashMap::new())
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
                version: "r1-v".into(),
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
        assert_eq!(
            actions,
            vec![Action::Delete {
                target: key("Replica", "r", "r1"),
                version: "r1-v".into(),
                confirm_gone: vec![]
            }]
        );
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
        assert_eq!(plan(&[node, d], |k| k != "Node", &HashMap::new()), vec![]);
    }

    #[test]
    fn a_reference_counts_from_the_control_plane_or_between_objects_of_one_signer() {
        let alice = Author::Signer("did:key:alice".into());
        let mallory = Author::Signer("did:key:mallory".into());
        assert!(counts(&Author::ControlPlane, Some(&alice)));
        assert!(counts(&Author::ControlPlane, None), "a Replica of a workload gone before it was seen");
        assert!(counts(&alice, Some(&alice)));
        assert!(!counts(&mallory, Some(&alice)));
        assert!(!counts(&alice, Some(&Author::ControlPlane)));
        assert!(!counts(&alice, None), "an owner gone before the collector saw who signed it");
        assert!(!counts(&Author::Unknown, Some(&Author::Unknown)));
        // Nodes write their own Leases: a Lease is nobody's the collector can vouch for.
        assert_eq!(Author::of("Lease", false, None), Author::Unknown);
        assert_eq!(Author::of("Replica", false, Some("did:key:mallory")), Author::ControlPlane);
        assert_eq!(Author::of("Workload", true, None), Author::Unknown);
    }

    #[test]
    fn a_strangers_dependent_never_holds_a_foreground_deletion() {
        // Mallory's object names Alice's workload as its owner, blocking, with a finalizer of
        // its own that nobody will ever remove.
        let mut w = obj("Workload", "web", "w1");
        w.deleting = true;
        w.finalizers = vec![FOREGROUND.into()];
        let mut hold =
            signed_by("did:key:mallory", refers(obj("Workload", "hold", "m1"), "Workload", "web", "w1"));
        hold.finalizers = vec!["mallory.example/never".into()];
        let mine = refers(obj("Replica", "r", "r1"), "Workload", "web", "w1");
        // Alice's own replica goes; Mallory's object is neither deleted nor waited for.
        assert_eq!(
            plan_of(&[w.clone(), hold.clone(), mine]),
            vec![Action::Delete {
                target: key("Replica", "r", "r1"),
                version: "r1-v".into(),
                confirm_gone: vec![]
            }]
        );
        assert_eq!(
            plan_of(&[w.clone(), hold.clone()]),
            vec![Action::RemoveFinalizer { target: key("Workload", "web", "w1"), finalizer: FOREGROUND }]
        );
        // Even while Mallory's object is being deleted (and so never goes, held by its finalizer).
        hold.deleting = true;
        assert_eq!(
            plan_of(&[w, hold]),
            vec![Action::RemoveFinalizer { target: key("Workload", "web", "w1"), finalizer: FOREGROUND }]
        );
    }

    #[test]
    fn a_strangers_dependent_is_neither_deleted_with_the_owner_nor_rewritten() {
        let alice = Author::Signer("did:key:alice".into());
        let gone = HashMap::from([("w1".to_owned(), alice.clone())]);
        let theirs =
            signed_by("did:key:mallory", refers(obj("Workload", "x", "m1"), "Workload", "web", "w1"));
        let own = refers(obj("TrustPolicy", "p", "p1"), "Workload", "web", "w1");
        // Alice's workload is gone: her own policy goes with it, Mallory's object stays.
        assert_eq!(
            plan(&[theirs.clone(), own.clone()], |_| true, &gone),
            vec![Action::Delete {
                target: key("TrustPolicy", "p", "p1"),
                version: "p1-v".into(),
                confirm_gone: vec![(key("Workload", "web", "w1"), "w1".into())],
            }]
        );
        // Who signed an owner gone before the collector saw it is unknown: a signed dependent
        // stays; the control plane's Replica still goes.
        let replica = refers(obj("Replica", "r", "r1"), "Workload", "web", "w1");
        assert_eq!(
            plan(&[own, replica], |_| true, &HashMap::new()),
            vec![Action::Delete {
                target: key("Replica", "r", "r1"),
                version: "r1-v".into(),
                confirm_gone: vec![(key("Workload", "web", "w1"), "w1".into())],
            }]
        );
        // A live owner of Mallory's and a gone one of Alice's: the reference to Alice's is not
        // removed (it is not the collector's to rewrite), nor does it keep anything alive.
        let live = signed_by("did:key:mallory", obj("Workload", "mine", "m2"));
        let both = refers(theirs.clone(), "Workload", "mine", "m2");
        assert_eq!(plan(&[live, both], |_| true, &gone), vec![]);
        // Orphaning: Mallory's reference is not removed, and holds no orphan finalizer.
        let mut w = obj("Workload", "web", "w1");
        w.deleting = true;
        w.finalizers = vec![ORPHAN.into()];
        assert_eq!(
            plan_of(&[w, theirs]),
            vec![Action::RemoveFinalizer { target: key("Workload", "web", "w1"), finalizer: ORPHAN }]
        );
    }

    #[test]
    fn references_between_objects_of_one_signer_are_followed() {
        // Alice's policy owned by her workload: background, foreground and orphan as for Replicas.
        let own = refers(obj("TrustPolicy", "p", "p1"), "Workload", "web", "w1");
        assert_eq!(plan_of(&[obj("Workload", "web", "w1"), own.clone()]), vec![]);
        let mut w = obj("Workload", "web", "w1");
        w.deleting = true;
        w.finalizers = vec![FOREGROUND.into()];
        let mut dying = own.clone();
        dying.deleting = true;
        assert_eq!(plan_of(&[w, dying]), vec![], "her own blocking dependent holds her deletion");
    }
}
