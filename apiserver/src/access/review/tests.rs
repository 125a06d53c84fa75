//! The answers as a table, without a server: who asks what about which object. That the
//! answers agree with real requests is `apiserver/tests/access_review.rs`, on a registry.

use std::collections::HashMap;

use api::identity::Did;
use ed25519_dalek::SigningKey;
use serde_json::{Value, json};

use super::*;
use crate::access::{NODE_LEASE_NAMESPACE, NodeFacts, ObjectFacts};

fn did(seed: u8) -> Did {
    Did::from_key(&SigningKey::from_bytes(&[seed; 32]).verifying_key())
}

struct Nodes(HashMap<String, NodeFacts>);

impl Lookup for Nodes {
    fn node(&self, name: &str) -> Option<NodeFacts> {
        self.0.get(name).cloned()
    }
    fn object(&self, _: &KindInfo, _: Option<&str>, _: &str) -> Option<ObjectFacts> {
        None
    }
    fn grants(&self, _: &str) -> Vec<std::sync::Arc<crate::access::agent::GrantFacts>> {
        Vec::new()
    }
}

fn world() -> Nodes {
    Nodes(HashMap::from([("n1".to_owned(), NodeFacts { key: node().as_str().into(), uid: "n1uid".into() })]))
}

fn alice() -> Did {
    did(1)
}
fn bob() -> Did {
    did(2)
}
fn node() -> Did {
    did(3)
}
fn user(d: Did) -> Caller {
    Caller::identity(d, false)
}
fn member() -> Caller {
    Caller::identity(did(7), true)
}

fn kind(name: &str) -> &'static KindInfo {
    api::kinds::lookup(name).unwrap()
}

fn workload(owner: &Did) -> Value {
    json!({ "kind": "Workload", "metadata": { "name": "w", "namespace": "default", "uid": "wuid",
            "annotations": { "univrs.io/signer": owner.as_str(), "univrs.io/signed-at": "2026-01-01T00:00:00Z" } },
            "spec": {} })
}

fn replica() -> Value {
    json!({ "kind": "Replica", "metadata": { "name": "w-0", "namespace": "default",
            "ownerReferences": [{ "kind": "Workload", "name": "w", "uid": "wuid" }] },
            "spec": { "workload": "w", "nodeName": "n1", "nodeUid": "n1uid" } })
}

fn transfer(phase: &str) -> Value {
    json!({ "kind": "Transfer", "metadata": { "name": "t",
            "annotations": { "univrs.io/signer": alice().as_str(), "univrs.io/signed-at": "2026-01-01T00:00:00Z" } },
            "spec": { "reason": "Payment" }, "status": { "phase": phase } })
}

/// Asks `who` about `verb resource[/name]` in `ns` with `stored`, and returns the answer.
fn ask(
    who: &Caller,
    verb: &str,
    resource: &str,
    ns: Option<&str>,
    name: Option<&str>,
    stored: Stored<'_>,
) -> Answer {
    let (plural, subresource) = match resource.split_once('/') {
        Some((p, s)) => (p, Some(s)),
        None => (resource, None),
    };
    let q = Question { verb, kind: kind(plural), namespace: ns, name, subresource };
    answer(who, &q, &stored, &world())
}

fn yes(a: Answer) {
    assert!(a.allowed, "refused: {}", a.reason);
}

#[track_caller]
fn no(a: Answer, needle: &str) {
    assert!(!a.allowed, "allowed, expected a refusal with {needle:?}");
    assert!(a.reason.contains(needle), "{:?} lacks {needle:?}", a.reason);
}

fn none() -> Stored<'static> {
    Stored::default()
}

fn of(obj: &Value) -> Stored<'_> {
    Stored { object: Some(obj), ..Default::default() }
}

#[test]
fn everyone_reads_and_creates_what_they_sign_in_their_namespaces() {
    let d = Some("default");
    for who in [user(bob()), user(node()), member()] {
        for verb in ["get", "list", "watch"] {
            yes(ask(&who, verb, "replicas", None, None, none()));
            yes(ask(&who, verb, "workloads", Some("univrs-system"), None, none()));
        }
        yes(ask(&who, "get", "replicas/status", d, Some("w-0"), none()));
        yes(ask(&who, "create", "workloads", d, None, none()));
        yes(ask(&who, "create", "nodes", None, Some("anything"), none()));
        yes(ask(&who, "create", "transfers", None, Some("t2"), none()));
    }
    no(
        ask(&user(bob()), "create", "workloads", Some("univrs-system"), Some("w"), none()),
        "control plane's namespace",
    );
    // Every namespace includes the control plane's.
    no(ask(&user(bob()), "create", "workloads", None, None, none()), "control plane's namespace");
    yes(ask(&member(), "create", "workloads", None, None, none()));
}

#[test]
fn control_plane_kinds_are_the_members_and_accounts_nobodys() {
    let d = Some("default");
    no(ask(&user(bob()), "create", "replicas", d, Some("r"), none()), "only the control plane may create");
    yes(ask(&member(), "create", "replicas", d, Some("r"), none()));
    no(ask(&user(bob()), "create", "reputations", None, Some("r"), none()), "only the control plane");
    no(
        ask(&member(), "create", "accounts", None, Some("a"), none()),
        "accounts change only with the Transfers",
    );
}

#[test]
fn a_write_to_one_object_is_decided_against_it_as_stored() {
    let d = Some("default");
    let w = workload(&alice());
    yes(ask(&user(alice()), "update", "workloads", d, Some("w"), of(&w)));
    yes(ask(&user(alice()), "patch", "workloads", d, Some("w"), of(&w)));
    yes(ask(&user(alice()), "delete", "workloads", d, Some("w"), of(&w)));
    no(
        ask(&user(bob()), "delete", "workloads", d, Some("w"), of(&w)),
        "only its owner (the signer) may delete it",
    );
    no(ask(&user(node()), "update", "workloads", d, Some("w"), of(&w)), "only its owner");
    yes(ask(&member(), "update", "workloads", d, Some("w"), of(&w)));
    no(ask(&user(alice()), "update", "workloads/status", d, Some("w"), of(&w)), "only the control plane");
    yes(ask(&member(), "patch", "workloads/status", d, Some("w"), of(&w)));
    // Nothing there: the request would find nothing.
    no(ask(&user(alice()), "delete", "workloads", d, Some("gone"), none()), "not found");

    let r = replica();
    yes(ask(&user(node()), "update", "replicas/status", d, Some("w-0"), of(&r)));
    no(ask(&user(node()), "update", "replicas", d, Some("w-0"), of(&r)), "only the control plane");
    no(ask(&user(bob()), "patch", "replicas/status", d, Some("w-0"), of(&r)), "only the node it is bound to");
    yes(ask(&member(), "delete", "replicas", d, Some("w-0"), of(&r)));
}

#[test]
fn a_nodes_lease_is_the_nodes_and_asking_without_its_name_says_so() {
    let ns = Some(NODE_LEASE_NAMESPACE);
    yes(ask(&user(node()), "create", "leases", ns, Some("n1"), none()));
    no(ask(&user(bob()), "create", "leases", ns, Some("n1"), none()), "only the node it is named after");
    no(ask(&user(node()), "create", "leases", Some("default"), Some("n1"), none()), "only the node");
    no(
        ask(&user(node()), "create", "leases", ns, None, none()),
        "ask about one (kubectl auth can-i create leases/NAME)",
    );
    // Where no name would help, no hint says it would.
    let replicas = ask(&user(node()), "create", "replicas", Some("default"), None, none());
    assert!(!replicas.allowed && !replicas.reason.contains("ask"), "{}", replicas.reason);
    no(ask(&user(bob()), "create", "workloads", None, None, none()), "ask in one namespace");
}

#[test]
fn members_are_bound_by_the_invariants_named_or_not() {
    let committed = transfer("Committed");
    no(ask(&member(), "delete", "transfers", None, Some("t"), of(&committed)), "a committed Transfer");
    no(
        ask(&member(), "update", "transfers/status", None, Some("t"), of(&committed)),
        "the ledger's decision",
    );
    no(ask(&member(), "patch", "transfers/status", None, None, none()), "the ledger's decision");
    // Without a name: every object there now, and one with nothing in it.
    let all = [transfer("Refused"), committed.clone()];
    no(
        ask(&member(), "delete", "transfers", None, None, Stored { all: &all, ..Default::default() }),
        "committed",
    );
    yes(ask(&member(), "delete", "transfers", None, None, Stored { all: &all[..1], ..Default::default() }));
    yes(ask(&member(), "delete", "workloads", Some("default"), None, none()));
    // A non-member's roles are relations to one object: never every object.
    no(
        ask(&user(alice()), "delete", "workloads", Some("default"), None, none()),
        "ask about one (kubectl auth can-i delete workloads/NAME)",
    );
}

#[test]
fn a_replicas_output_is_its_workloads_owners() {
    let d = Some("default");
    let (r, w) = (replica(), workload(&alice()));
    let stored = || Stored { object: Some(&r), workload: Some(&w), ..Default::default() };
    yes(ask(&user(alice()), "get", "replicas/log", d, Some("w-0"), stored()));
    no(ask(&user(bob()), "get", "replicas/log", d, Some("w-0"), stored()), "only the owner of workload w");
    no(ask(&user(alice()), "get", "replicas/log", d, None, none()), "ask about one");
    yes(ask(&member(), "get", "replicas/log", d, None, none()));
    no(ask(&member(), "get", "workloads/log", d, Some("w"), none()), "no subresource");
}

#[test]
fn every_verb_unknown_verbs_and_rules() {
    let d = Some("default");
    yes(ask(&member(), "*", "workloads", d, None, none()));
    no(ask(&user(bob()), "*", "workloads", d, None, none()), "update:");
    no(ask(&member(), "escalate", "workloads", d, None, none()), "not a verb of univrs.io");
    no(ask(&member(), "deletecollection", "workloads", d, None, none()), "one at a time");
    no(ask(&member(), "create", "workloads/status", d, Some("w"), none()), "read with get");

    let rules_of = |who: &Caller| -> HashMap<String, Vec<&'static str>> {
        rules(who, d, &world()).into_iter().map(|r| (r.resource, r.verbs)).collect()
    };
    let stranger = rules_of(&user(bob()));
    assert_eq!(stranger["workloads"], ["get", "list", "watch", "create"]);
    assert_eq!(stranger["replicas"], ["get", "list", "watch"]);
    assert_eq!(stranger["replicas/status"], ["get"]);
    assert!(!stranger.contains_key("replicas/log"));
    let members = rules_of(&member());
    assert_eq!(members["workloads"], VERBS);
    assert_eq!(members["replicas/log"], ["get"]);
    assert_eq!(members["accounts"], ["get", "list", "watch"]);
}
