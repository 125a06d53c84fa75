//! The access rules as a table: who (a member, an owner, a stranger, a node) may do what to
//! which object, without a server.

use std::collections::HashMap;

use api::identity::Did;
use ed25519_dalek::SigningKey;
use serde_json::{Value, json};

use super::*;

fn did(seed: u8) -> Did {
    Did::from_key(&SigningKey::from_bytes(&[seed; 32]).verifying_key())
}

struct World {
    nodes: HashMap<String, NodeFacts>,
    objects: HashMap<(String, Option<String>, String), ObjectFacts>,
}

impl Lookup for World {
    fn node(&self, name: &str) -> Option<NodeFacts> {
        self.nodes.get(name).cloned()
    }

    fn object(&self, kind: &KindInfo, namespace: Option<&str>, name: &str) -> Option<ObjectFacts> {
        self.objects.get(&(kind.kind.to_owned(), namespace.map(str::to_owned), name.to_owned())).cloned()
    }

    fn grants(&self, _: &str) -> Vec<std::sync::Arc<super::agent::GrantFacts>> {
        Vec::new()
    }
}

fn alice() -> Did {
    did(1)
}
fn bob() -> Did {
    did(2)
}
fn node_key() -> Did {
    did(3)
}

fn world() -> World {
    World {
        nodes: HashMap::from([(
            "n1".to_owned(),
            NodeFacts { key: node_key().as_str().into(), uid: "u1".into() },
        )]),
        objects: HashMap::from([
            (
                ("Workload".to_owned(), Some("default".to_owned()), "w".to_owned()),
                ObjectFacts {
                    uid: "wuid".into(),
                    signer: Some(alice().as_str().into()),
                    owner: Some(alice().as_str().into()),
                    bound_to: None,
                },
            ),
            (
                ("Replica".to_owned(), Some("default".to_owned()), "w-1".to_owned()),
                ObjectFacts {
                    uid: "ruid".into(),
                    signer: None,
                    owner: Some(alice().as_str().into()),
                    bound_to: Some(("n1".into(), "u1".into())),
                },
            ),
            (
                ("Workload".to_owned(), Some("default".to_owned()), "bw".to_owned()),
                ObjectFacts {
                    uid: "bwuid".into(),
                    signer: Some(bob().as_str().into()),
                    owner: Some(bob().as_str().into()),
                    bound_to: None,
                },
            ),
        ]),
    }
}

fn kind(name: &str) -> &'static KindInfo {
    api::kinds::by_kind(name).unwrap()
}

fn signed_by(who: &Did, at: &str, mut obj: Value) -> Value {
    obj["metadata"]["annotations"] = json!({ "univrs.io/signer": who.as_str(), "univrs.io/signed-at": at });
    obj
}

fn workload(owner: &Did, name: &str) -> Value {
    signed_by(
        owner,
        "2026-01-01T00:00:00Z",
        json!({ "kind": "Workload", "metadata": { "name": name, "namespace": "default" },
                "spec": { "rootfs": "busybox", "env": [{ "name": "TOKEN", "value": "s3cret" }] } }),
    )
}

fn replica(node: &str, uid: Option<&str>) -> Value {
    let mut r = json!({ "kind": "Replica", "metadata": { "name": "w-0", "namespace": "default" },
                        "spec": { "workload": "w", "nodeName": node,
                                  "container": { "rootfs": "busybox", "env": [{ "name": "TOKEN", "value": "s3cret" }] } } });
    if let Some(uid) = uid {
        r["spec"]["nodeUid"] = uid.into();
    }
    r
}

fn lease(namespace: &str, name: &str) -> Value {
    json!({ "kind": "Lease", "metadata": { "name": name, "namespace": namespace }, "spec": {} })
}

fn node(operator: &Did, signer: &Did, key: &Did) -> Value {
    signed_by(
        signer,
        "2026-01-01T00:00:00Z",
        json!({ "kind": "Node", "metadata": { "name": "n1" }, "spec": { "operator": operator.as_str(), "nodeKey": key.as_str() } }),
    )
}

fn transfer(signer: &Did, from: &Did, reason: &str) -> Value {
    signed_by(
        signer,
        "2026-01-01T00:00:00Z",
        json!({ "kind": "Transfer", "metadata": { "name": "t" },
                "spec": { "from": from.as_str(), "to": did(9).as_str(), "amount": "1", "reason": reason } }),
    )
}

fn payment_from_signer() -> Value {
    let mut t = transfer(&alice(), &alice(), "Payment");
    t["spec"].as_object_mut().unwrap().remove("from");
    t
}

fn committed(mut obj: Value) -> Value {
    obj["status"] = json!({ "phase": "Committed" });
    obj
}

fn with_status(mut obj: Value) -> Value {
    obj["status"] = json!({ "x": 1 });
    obj
}

fn user(d: Did) -> Caller {
    Caller::identity(d, false)
}

fn member() -> Caller {
    Caller::identity(did(7), true)
}

/// One row: who does what to which object, and whether it is allowed (or the message that
/// refuses it).
struct Case {
    what: &'static str,
    who: Caller,
    verb: Verb,
    old: Option<Value>,
    new: Option<Value>,
    /// `None`: allowed; `Some(needle)`: refused with a message containing it.
    refused: Option<&'static str>,
}

fn check(cases: Vec<Case>) {
    let world = world();
    for c in cases {
        let obj = c.new.as_ref().or(c.old.as_ref()).unwrap();
        let k = kind(obj["kind"].as_str().unwrap());
        let got = authorize(&c.who, c.verb, k, c.old.as_ref(), c.new.as_ref(), &world);
        match (c.refused, got) {
            (None, Ok(())) => {}
            (None, Err(e)) => panic!("{}: refused: {e}", c.what),
            (Some(needle), Ok(())) => panic!("{}: allowed, expected a refusal with {needle:?}", c.what),
            (Some(needle), Err(e)) => {
                assert!(e.to_string().contains(needle), "{}: {e} lacks {needle:?}", c.what);
                assert!(matches!(e.code(), 403 | 422), "{}: {e}", c.what);
            }
        }
        // The early check agrees: whatever it refuses, the full check refuses too.
        if let Some(old) = &c.old
            && may_write(&c.who, c.verb, k, old, &world).is_err()
        {
            assert!(c.refused.is_some(), "{}: refused early but allowed in full", c.what);
        }
    }
}

fn case(what: &'static str, who: Caller, verb: Verb, old: Option<Value>, new: Option<Value>) -> Case {
    Case { what, who, verb, old, new, refused: None }
}

impl Case {
    fn refused(mut self, needle: &'static str) -> Self {
        self.refused = Some(needle);
        self
    }
}

#[test]
fn owners_write_their_objects_and_nobody_else_does() {
    let w = workload(&alice(), "w");
    let mut changed = w.clone();
    changed["spec"]["replicas"] = 2.into();
    check(vec![
        case("the signer creates", user(alice()), Verb::Create, None, Some(w.clone())),
        case("someone else creates it", user(bob()), Verb::Create, None, Some(w.clone()))
            .refused("only its owner (the signer) may create it"),
        case("the owner updates", user(alice()), Verb::Update, Some(w.clone()), Some(changed.clone())),
        case("a stranger updates", user(bob()), Verb::Update, Some(w.clone()), Some(changed.clone()))
            .refused("only its owner"),
        case("a stranger deletes", user(bob()), Verb::Delete, Some(w.clone()), None)
            .refused("only its owner"),
        case("a node deletes", user(node_key()), Verb::Delete, Some(w.clone()), None)
            .refused("only its owner"),
        case("the owner deletes", user(alice()), Verb::Delete, Some(w.clone()), None),
        case("a member updates", member(), Verb::Update, Some(w.clone()), Some(changed.clone())),
        case(
            "the owner writes its status",
            user(alice()),
            Verb::UpdateStatus,
            Some(w.clone()),
            Some(with_status(w.clone())),
        )
        .refused("only the control plane may update the status of it"),
        case(
            "a member writes its status",
            member(),
            Verb::UpdateStatus,
            Some(w.clone()),
            Some(with_status(w.clone())),
        ),
        case(
            "the signer changes",
            member(),
            Verb::Update,
            Some(w.clone()),
            Some(signed_by(&bob(), "2026-02-01T00:00:00Z", w.clone())),
        )
        .refused("cannot change"),
        case(
            "an older manifest",
            user(alice()),
            Verb::Update,
            Some(w.clone()),
            Some(signed_by(&alice(), "2025-01-01T00:00:00Z", w.clone())),
        )
        .refused("an older manifest cannot replace a newer one"),
        case(
            "a manifest signed an hour from now",
            user(alice()),
            Verb::Create,
            None,
            Some(signed_by(
                &alice(),
                &(chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339(),
                w.clone(),
            )),
        )
        .refused("minutes from now: check this computer's clock"),
        case(
            "a manifest signed a minute from now (clocks differ)",
            user(alice()),
            Verb::Create,
            None,
            Some(signed_by(
                &alice(),
                &(chrono::Utc::now() + chrono::Duration::minutes(1)).to_rfc3339(),
                w.clone(),
            )),
        ),
    ]);
}

#[test]
fn control_plane_kinds_and_status_are_the_control_planes() {
    let att = signed_by(
        &alice(),
        "2026-01-01T00:00:00Z",
        json!({ "kind": "Attestation", "metadata": { "name": "a" }, "spec": {} }),
    );
    let rep = json!({ "kind": "Reputation", "metadata": { "name": "r" }, "spec": {} });
    check(vec![
        case("the attester accepts its own attestation", user(alice()), Verb::UpdateStatus, Some(att.clone()), Some(with_status(att.clone())))
            .refused("only the control plane"),
        case("a user makes a reputation", user(alice()), Verb::Create, None, Some(rep.clone()))
            .refused("only the control plane may create it"),
        case("a member makes a reputation", member(), Verb::Create, None, Some(rep)),
        case("a user makes a replica", user(alice()), Verb::Create, None, Some(replica("n1", Some("u1"))))
            .refused("only the control plane"),
        case(
            "a user writes in univrs-system",
            user(alice()),
            Verb::Create,
            None,
            Some(signed_by(&alice(), "2026-01-01T00:00:00Z", json!({ "kind": "TrustPolicy", "metadata": { "name": "p", "namespace": "univrs-system" }, "spec": {} }))),
        )
        .refused("univrs-system is the control plane's namespace"),
    ]);
}

#[test]
fn a_node_writes_its_node_its_lease_and_its_replicas_status_only() {
    let mine = replica("n1", Some("u1"));
    let older_node = replica("n1", Some("u0"));
    let unbound_uid = replica("n1", None);
    let n = node(&alice(), &alice(), &node_key());
    let mut rekeyed = n.clone();
    rekeyed["spec"]["nodeKey"] = bob().as_str().into();
    check(vec![
        case(
            "status of a replica bound to it",
            user(node_key()),
            Verb::UpdateStatus,
            Some(mine.clone()),
            Some(with_status(mine.clone())),
        ),
        case(
            "status of a replica bound to an older Node of its name",
            user(node_key()),
            Verb::UpdateStatus,
            Some(older_node.clone()),
            Some(with_status(older_node)),
        )
        .refused("only the node it is bound to"),
        case(
            "status of a replica bound by name only",
            user(node_key()),
            Verb::UpdateStatus,
            Some(unbound_uid.clone()),
            Some(with_status(unbound_uid)),
        )
        .refused("only the node it is bound to"),
        case(
            "the spec of its replica",
            user(node_key()),
            Verb::Update,
            Some(mine.clone()),
            Some(replica("n2", Some("u1"))),
        )
        .refused("only the control plane"),
        case(
            "a stranger writes a replica's status",
            user(bob()),
            Verb::UpdateStatus,
            Some(mine.clone()),
            Some(with_status(mine)),
        )
        .refused("only the node it is bound to"),
        case("its own lease", user(node_key()), Verb::Create, None, Some(lease("univrs-node-lease", "n1"))),
        case(
            "its name's lease in univrs-system (a controller's)",
            user(node_key()),
            Verb::Create,
            None,
            Some(lease("univrs-system", "n1")),
        )
        .refused("univrs-system is the control plane's namespace"),
        case(
            "its name's lease in default",
            user(node_key()),
            Verb::Create,
            None,
            Some(lease("default", "n1")),
        )
        .refused("only the node it is named after"),
        case(
            "another node's lease",
            user(bob()),
            Verb::Update,
            Some(lease("univrs-node-lease", "n1")),
            Some(lease("univrs-node-lease", "n1")),
        )
        .refused("only the node it is named after"),
        case("its Node", user(node_key()), Verb::Update, Some(n.clone()), Some(n.clone())),
        case(
            "its Node's status",
            user(node_key()),
            Verb::UpdateStatus,
            Some(n.clone()),
            Some(with_status(n.clone())),
        ),
        case("re-keying its Node", user(node_key()), Verb::Update, Some(n.clone()), Some(rekeyed))
            .refused("only its owner (the signer) or the node itself"),
        case(
            "the operator's Node status",
            user(alice()),
            Verb::UpdateStatus,
            Some(n.clone()),
            Some(with_status(n.clone())),
        )
        .refused("only the node itself"),
        case(
            "a Node whose operator is not its signer",
            member(),
            Verb::Create,
            None,
            Some(node(&bob(), &alice(), &node_key())),
        )
        .refused("must be the Node's signer"),
        case("a node registering itself for its operator", user(node_key()), Verb::Create, None, Some(n)),
    ]);
}

#[test]
fn transfers_are_payments_from_the_signer_and_never_change() {
    let pay = transfer(&alice(), &alice(), "Payment");
    let mut more = pay.clone();
    more["spec"]["amount"] = "1000".into();
    check(vec![
        case("a payment from oneself", user(alice()), Verb::Create, None, Some(pay.clone())),
        case(
            "a payment by its signer, from left out",
            user(alice()),
            Verb::Create,
            None,
            Some(payment_from_signer()),
        ),
        case(
            "a payment from someone else",
            user(alice()),
            Verb::Create,
            None,
            Some(transfer(&alice(), &bob(), "Payment")),
        )
        .refused("spec.from must be the signer"),
        case(
            "metering by a user",
            user(alice()),
            Verb::Create,
            None,
            Some(transfer(&alice(), &alice(), "Metering")),
        )
        .refused("metering is the control plane's"),
        case(
            "a payment under a metering charge's name",
            user(alice()),
            Verb::Create,
            None,
            Some({
                let mut t = transfer(&alice(), &alice(), "Payment");
                t["metadata"]["name"] = json!("meter-6c1f1a8e-0000-4000-8000-000000000001-60000-1");
                t
            }),
        )
        .refused("the control plane's metering charges"),
        case(
            "metering by the control plane",
            member(),
            Verb::Create,
            None,
            Some(transfer(&did(7), &bob(), "Metering")),
        ),
        case("a changed amount", member(), Verb::Update, Some(pay.clone()), Some(more))
            .refused("cannot change once written"),
        case("the payer deletes it", user(alice()), Verb::Delete, Some(pay.clone()), None)
            .refused("only the control plane"),
        case(
            "the payer marks it committed",
            user(alice()),
            Verb::UpdateStatus,
            Some(pay.clone()),
            Some(with_status(pay.clone())),
        )
        .refused("the ledger's decision"),
        case(
            "a member changes what the ledger decided",
            member(),
            Verb::UpdateStatus,
            Some(pay.clone()),
            Some(with_status(pay.clone())),
        )
        .refused("the ledger's decision"),
        case("a member deletes a committed one", member(), Verb::Delete, Some(committed(pay.clone())), None)
            .refused("part of the balances"),
        case("a member deletes a refused one", member(), Verb::Delete, Some(pay), None),
        case(
            "a member writes an account",
            member(),
            Verb::Create,
            None,
            Some(json!({ "kind": "Account", "metadata": { "name": "a" }, "spec": { "owner": alice().as_str() } })),
        )
        .refused("accounts change only with the Transfers"),
    ]);
}

#[test]
fn owner_references_name_only_objects_of_the_same_owner() {
    let owned_by = |uid: &str, name: &str| {
        let mut p = signed_by(
            &alice(),
            "2026-01-01T00:00:00Z",
            json!({ "kind": "TrustPolicy", "metadata": { "name": "p", "namespace": "default" }, "spec": {} }),
        );
        p["metadata"]["ownerReferences"] =
            json!([{ "apiVersion": "univrs.io/v1", "kind": "Workload", "name": name, "uid": uid }]);
        p
    };
    check(vec![
        case("her own workload", user(alice()), Verb::Create, None, Some(owned_by("wuid", "w"))),
        case("bob's workload", user(alice()), Verb::Create, None, Some(owned_by("bwuid", "bw")))
            .refused("is not an object of yours"),
        case(
            "a workload of hers, by the wrong uid",
            user(alice()),
            Verb::Create,
            None,
            Some(owned_by("other", "w")),
        )
        .refused("is not an object of yours"),
        case(
            "a workload that does not exist",
            user(alice()),
            Verb::Create,
            None,
            Some(owned_by("x", "nope")),
        )
        .refused("is not an object of yours"),
        case("a member's choice", member(), Verb::Create, None, Some(owned_by("bwuid", "bw"))),
    ]);
}

#[test]
fn secrets_are_shown_to_their_readers_only() {
    let world = world();
    let mut w = workload(&alice(), "w");
    w["metadata"]["annotations"][api::signing::LAST_APPLIED] = json!(w.to_string());
    w["metadata"]["annotations"][api::signing::SIGNATURE] = json!("c2lnbmF0dXJl");
    let kind_w = kind("Workload");
    let shown = |who: &Caller, obj: &Value, k: &KindInfo| {
        redact(who, k, obj.clone(), &world).expect("workloads and replicas are not private")
    };
    assert_eq!(shown(&user(alice()), &w, kind_w), w, "the owner sees it all");
    assert_eq!(shown(&member(), &w, kind_w), w, "members see it all");
    let seen = shown(&user(bob()), &w, kind_w);
    assert_eq!(seen["spec"]["env"], json!([{ "name": "TOKEN" }]));
    assert!(!seen.to_string().contains("s3cret"), "{seen}");
    assert_eq!(seen["metadata"]["annotations"][REDACTED], "spec.env");
    assert!(seen["metadata"]["annotations"].get(api::signing::LAST_APPLIED).is_none());
    assert!(seen["metadata"]["annotations"].get(api::signing::SIGNATURE).is_none(), "{seen}");

    let k = kind("Replica");
    let mine = replica("n1", Some("u1"));
    assert_eq!(shown(&user(node_key()), &mine, k), mine, "the node it is bound to sees it all");
    for (who, r) in
        [(user(node_key()), replica("n1", Some("u0"))), (user(alice()), mine.clone()), (user(bob()), mine)]
    {
        assert!(!shown(&who, &r, k).to_string().contains("s3cret"), "{who:?}");
    }
}

fn event_about(uid: &str, instance: &str) -> Value {
    json!({
        "apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": { "name": "w-1.e", "namespace": "default" },
        "eventTime": "2026-01-02T03:04:05.000000Z",
        "reportingController": "univrs.io/node-agent", "reportingInstance": instance,
        "action": "Start", "reason": "Started", "type": "Normal",
        "regarding": { "apiVersion": "univrs.io/v1", "kind": "Replica", "name": "w-1", "namespace": "default", "uid": uid },
    })
}

#[test]
fn only_the_bound_node_as_itself_and_members_write_events_and_only_the_owner_reads_them() {
    let w = world();
    let ev = kind("Event");
    let node = Caller::identity(node_key(), false);
    let event = event_about("ruid", "n1");
    authorize(&node, Verb::Create, ev, None, Some(&event), &w).unwrap();
    authorize(&Caller::system(), Verb::Create, ev, None, Some(&event), &w).unwrap();
    // A stranger, the owner herself, a node naming another instance, an event about an
    // earlier replica of the name: refused.
    for (who, e) in [
        (Caller::identity(bob(), false), event.clone()),
        (Caller::identity(alice(), false), event.clone()),
        (node.clone(), event_about("ruid", "n2")),
        (node.clone(), event_about("old-uid", "n1")),
    ] {
        let err = authorize(&who, Verb::Create, ev, None, Some(&e), &w).unwrap_err();
        assert!(matches!(err, ApiError::Forbidden(_)), "{err:?}");
    }
    assert!(redact(&Caller::identity(alice(), false), ev, event.clone(), &w).is_some());
    assert!(redact(&node, ev, event.clone(), &w).is_some());
    assert!(redact(&Caller::system(), ev, event.clone(), &w).is_some());
    assert!(redact(&Caller::identity(bob(), false), ev, event.clone(), &w).is_none());
    assert!(redact(&Caller::identity(alice(), false), ev, event_about("old-uid", "n1"), &w).is_none());
}
