//! `kubectl auth can-i` and the request it asks about never disagree: for an owner, a stranger,
//! a member and a node, for every kind and every verb, on a registry holding an object of
//! each kind, `Registry::review` (what a `SelfSubjectAccessReview` answers) says yes exactly
//! when the same request, made on the same registry by the same caller (a server-side dry
//! run, so every request sees the same world), goes through, and no exactly when it is
//! refused as Forbidden. The requests are well formed (valid, signed by their writer), so
//! nothing but authorization can refuse them.

use api::identity::{Did, PeerId};
use api::kinds::lookup;
use api::{KindInfo, Scope};
use apiserver::access::Caller;
use apiserver::access::review::Question;
use apiserver::registry::{
    ApiError, DeleteOptions, ListOptions, MemStore, ObjectRef, Part, Patch, ReadAt, Registry, WriteOptions,
};
use ed25519_dalek::SigningKey;
use serde_json::{Value, json};

const NODE_LEASES: &str = "univrs-node-lease";

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn did(k: &SigningKey) -> String {
    Did::from_key(&k.verifying_key()).as_str().to_owned()
}

fn signed(mut obj: Value, by: &SigningKey) -> Value {
    api::signing::sign(&mut obj, by, chrono::Utc::now()).unwrap();
    obj
}

/// A caller and the key it writes with.
struct Who {
    what: &'static str,
    caller: Caller,
    key: SigningKey,
}

fn who(what: &'static str, seed: u8, member: bool) -> Who {
    let key = key(seed);
    Who { what, caller: Caller::identity(Did::from_key(&key.verifying_key()), member), key }
}

fn kind(name: &str) -> &'static KindInfo {
    lookup(name).unwrap()
}

fn node(name: &str, operator: &SigningKey, node_key: &SigningKey) -> Value {
    json!({ "apiVersion": "univrs.io/v1", "kind": "Node", "metadata": { "name": name },
            "spec": { "peerId": PeerId::from_key(&node_key.verifying_key()).as_str(),
                      "operator": did(operator), "nodeKey": did(node_key),
                      "ageRecipient": format!("age1{}", "q".repeat(58)),
                      "capacity": { "cpu": "2", "memory": "1Gi" } } })
}

/// A new, valid object of `kind` named `name` as `w` would write it (signed by `w` for signed
/// kinds). `n1` is a Node whose key is the test's node.
fn fresh(k: &KindInfo, name: &str, w: &Who) -> Value {
    let me = did(&w.key);
    let other = did(&key(42));
    let meta = |ns: Option<&str>| match ns {
        Some(ns) => json!({ "name": name, "namespace": ns }),
        None => json!({ "name": name }),
    };
    let obj = match k.kind {
        "Workload" => {
            json!({ "metadata": meta(Some("default")), "spec": { "rootfs": "busybox", "replicas": 1 } })
        }
        "Replica" => json!({ "metadata": meta(Some("default")),
                             "spec": { "workload": "w", "container": { "rootfs": "busybox" } } }),
        "TrustPolicy" => {
            json!({ "metadata": meta(Some("default")), "spec": { "allowedJurisdictions": ["DE"] } })
        }
        "NodeOffer" => json!({ "metadata": meta(None),
                               "spec": { "node": "n1", "resources": { "cpu": "1" }, "jurisdiction": "DE" } }),
        "Node" => return signed(node(name, &w.key, &w.key), &w.key),
        "CreditGrant" => json!({ "metadata": meta(None), "spec": { "grantee": other, "limit": 10 } }),
        "Attestation" => json!({ "metadata": meta(None),
                                 "spec": { "subjectKind": "Operator", "subject": other, "statement": "known" } }),
        "Reputation" => {
            json!({ "metadata": meta(None), "spec": { "subjectKind": "Operator", "subject": other } })
        }
        "Transfer" => {
            json!({ "metadata": meta(None), "spec": { "to": other, "amount": "1", "reason": "Payment" } })
        }
        // A node's lease is named after its Node: `n2` has the test node's key and no lease yet.
        "Lease" => {
            json!({ "metadata": { "name": "n2", "namespace": NODE_LEASES }, "spec": { "holderIdentity": "n2" } })
        }
        "Account" => json!({ "metadata": meta(None), "spec": { "owner": me } }),
        other => panic!("no fixture for {other}: add one"),
    };
    let mut obj = obj;
    obj["apiVersion"] = "univrs.io/v1".into();
    obj["kind"] = k.kind.into();
    if k.signed { signed(obj, &w.key) } else { obj }
}

/// A status change each stored object accepts: its status's schema allows it, and it is not
/// the status it has.
fn status_change(k: &KindInfo, stored: &Value) -> Value {
    match (k.kind, stored.get("status")) {
        ("Transfer", _) => json!({ "status": { "message": "rewritten" } }),
        (_, None) => json!({ "status": {} }),
        // The ledger's accounts: refused whatever the change (an invariant, before content).
        ("Account", Some(_)) => json!({ "status": {} }),
        (other, Some(s)) => panic!("{other} has a status {s}: add a change for it"),
    }
}

/// The world: one object of every kind, written by the control plane (system) or signed by
/// the owner; a node `n1` (owner's, with the node's key) with a replica bound to it and its
/// lease; a second Node `n2` of the node's key without a lease.
async fn world(reg: &Registry, o: &Who, node_key: &SigningKey, stranger: &SigningKey) -> Vec<Value> {
    let owner = &o.key;
    let sys = Caller::system();
    let opts = WriteOptions::default();
    let mut made = Vec::new();
    let mut make = async |obj: Value| {
        let k = kind(obj["kind"].as_str().unwrap());
        let w = reg.create(&sys, k, obj, &opts).await.unwrap_or_else(|e| panic!("{}: {e}", k.kind));
        made.push(w.object.clone());
        w.object
    };
    let w = make(fresh(kind("Workload"), "w", o)).await;
    let n1 = make(signed(node("n1", owner, node_key), owner)).await;
    make(signed(node("n2", owner, node_key), owner)).await;
    for (k, name) in [("TrustPolicy", "tp"), ("NodeOffer", "o"), ("Attestation", "a"), ("Reputation", "r")] {
        make(fresh(kind(k), name, o)).await;
    }
    make(json!({ "apiVersion": "univrs.io/v1", "kind": "Replica",
                 "metadata": { "name": "w-0", "namespace": "default", "ownerReferences": [{
                     "apiVersion": "univrs.io/v1", "kind": "Workload", "name": "w", "uid": w["metadata"]["uid"], "controller": true }] },
                 "spec": { "workload": "w", "nodeName": "n1", "nodeUid": n1["metadata"]["uid"],
                           "container": { "rootfs": "busybox" } } }))
    .await;
    make(json!({ "apiVersion": "univrs.io/v1", "kind": "Lease", "metadata": { "name": "n1", "namespace": NODE_LEASES },
                 "spec": { "holderIdentity": "n1" } }))
    .await;
    // A credit line from the stranger to the owner, and a payment on it: committed, with
    // both accounts posted. And a payment on no line: refused.
    make(signed(
        json!({ "apiVersion": "univrs.io/v1", "kind": "CreditGrant", "metadata": { "name": "g" },
                        "spec": { "grantee": did(owner), "limit": 10 } }),
        stranger,
    ))
    .await;
    let paid = make(signed(
        json!({ "apiVersion": "univrs.io/v1", "kind": "Transfer", "metadata": { "name": "paid" },
                "spec": { "to": did(stranger), "amount": "1", "reason": "Payment" } }),
        owner,
    ))
    .await;
    assert_eq!(paid["status"]["phase"], "Committed", "{paid}");
    let refused = make(signed(
        json!({ "apiVersion": "univrs.io/v1", "kind": "Transfer", "metadata": { "name": "unpaid" },
                "spec": { "to": did(&key(42)), "amount": "1", "reason": "Payment" } }),
        owner,
    ))
    .await;
    assert_eq!(refused["status"]["phase"], "Refused", "{refused}");
    let accounts = reg.list(&sys, kind("Account"), None, &ListOptions::default()).await.unwrap().items;
    assert_eq!(accounts.len(), 2, "the committed payment posted two accounts");
    made.extend(accounts.into_iter().map(|a| a.into_value().unwrap()));
    made
}

/// What the real request did: `Ok(())`, or the error.
type Outcome = Result<(), ApiError>;

async fn request(
    reg: &Registry,
    w: &Who,
    verb: &str,
    k: &KindInfo,
    stored: Option<&Value>,
    fresh_name: &str,
) -> Outcome {
    let dry = WriteOptions { dry_run: true, ..Default::default() };
    let ns = stored.and_then(|s| s.pointer("/metadata/namespace")).and_then(Value::as_str);
    let name = stored.and_then(|s| s.pointer("/metadata/name")).and_then(Value::as_str).unwrap_or_default();
    let at = ObjectRef::new(k, ns, name);
    let finalizer = json!({ "metadata": { "finalizers": ["example.com/hold"] } });
    match verb {
        "get" => reg.get(&w.caller, at, ReadAt::Latest).await.map(drop),
        "list" => reg.list(&w.caller, k, ns, &ListOptions::default()).await.map(drop),
        "create" => {
            let obj = fresh(k, fresh_name, w);
            reg.create(&w.caller, k, obj, &dry).await.map(drop)
        }
        "update" => {
            let mut obj = stored.unwrap().clone();
            obj["metadata"]["finalizers"] = json!(["example.com/hold"]);
            reg.update(&w.caller, at, Part::Main, obj, &dry).await.map(drop)
        }
        "patch" => reg.patch(&w.caller, at, Part::Main, &Patch::Merge(finalizer), &dry).await.map(drop),
        "patch/status" => {
            let change = status_change(k, stored.unwrap());
            reg.patch(&w.caller, at, Part::Status, &Patch::Merge(change), &dry).await.map(drop)
        }
        "delete" => {
            let opts = DeleteOptions { dry_run: true, ..Default::default() };
            reg.delete(&w.caller, at, &opts).await.map(drop)
        }
        other => panic!("no request for {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn can_i_and_the_real_request_never_disagree() {
    let reg = Registry::new(MemStore::new());
    let (owner, stranger, node, member) =
        (who("owner", 1, false), who("stranger", 2, false), who("node", 3, false), who("member", 7, true));
    let objects = world(&reg, &owner, &node.key, &stranger.key).await;
    let mut checked = 0;
    let mut disagreements = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for w in [&owner, &stranger, &node, &member] {
        let mut n = 0;
        for obj in &objects {
            let k = kind(obj["kind"].as_str().unwrap());
            let ns = obj.pointer("/metadata/namespace").and_then(Value::as_str);
            let name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap();
            // Every verb on this object, and a create of a new one of its kind (once per kind).
            let first_of_kind = seen.insert((w.what, k.kind));
            let verbs: &[&str] = if first_of_kind {
                &["get", "list", "create", "update", "patch", "patch/status", "delete"]
            } else {
                &["get", "update", "patch", "patch/status", "delete"]
            };
            for &verb in verbs {
                n += 1;
                let fresh_name = format!("fresh-{}-{n}", w.what);
                let (verb_asked, subresource) = match verb.split_once('/') {
                    Some((v, s)) => (v, Some(s)),
                    None => (verb, None),
                };
                let (q_ns, q_name) = match verb {
                    "create" if k.kind == "Lease" => (Some(NODE_LEASES), Some("n2")),
                    "create" => (
                        if k.scope == Scope::Namespaced { Some("default") } else { None },
                        Some(fresh_name.as_str()),
                    ),
                    "list" => (ns, None),
                    _ => (ns, Some(name)),
                };
                let q = Question { verb: verb_asked, kind: k, namespace: q_ns, name: q_name, subresource };
                let answer = reg.review(&w.caller, &q).await.unwrap();
                let outcome = request(&reg, w, verb, k, Some(obj), &fresh_name).await;
                checked += 1;
                let agree = matches!(
                    (&outcome, answer.allowed),
                    (Ok(()), true) | (Err(ApiError::Forbidden(_)), false)
                );
                if !agree {
                    disagreements.push(format!(
                        "{} {verb} {} {name}: can-i says {} ({}), the request: {:?}",
                        w.what,
                        k.plural,
                        if answer.allowed { "yes" } else { "no" },
                        answer.reason,
                        outcome
                    ));
                }
            }
        }
    }
    assert!(
        disagreements.is_empty(),
        "{} of {checked} disagree:\n{}",
        disagreements.len(),
        disagreements.join("\n")
    );
    // Every kind was asked about, by all four, each verb at least once.
    assert!(checked > 4 * 11 * 6, "{checked}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_yes_without_a_name_holds_for_every_object_of_the_kind() {
    let reg = Registry::new(MemStore::new());
    let (owner, stranger, node, member) =
        (who("owner", 1, false), who("stranger", 2, false), who("node", 3, false), who("member", 7, true));
    let objects = world(&reg, &owner, &node.key, &stranger.key).await;
    for w in [&owner, &stranger, &node, &member] {
        for k in &api::kinds::KINDS {
            for (verb, sub) in
                [("update", None), ("patch", None), ("delete", None), ("patch", Some("status"))]
            {
                let namespace = if k.scope == Scope::Namespaced { Some("default") } else { None };
                let q = Question { verb, kind: k, namespace, name: None, subresource: sub };
                let answer = reg.review(&w.caller, &q).await.unwrap();
                if !answer.allowed {
                    continue;
                }
                let request_verb = if sub.is_some() { "patch/status" } else { verb };
                for obj in objects.iter().filter(|o| o["kind"] == k.kind) {
                    if namespace.is_some()
                        && obj.pointer("/metadata/namespace").and_then(Value::as_str) != namespace
                    {
                        continue;
                    }
                    let outcome = request(&reg, w, request_verb, k, Some(obj), "unused").await;
                    assert!(
                        outcome.is_ok(),
                        "{} may {verb} every {} (can-i yes), yet {}: {:?}",
                        w.what,
                        k.plural,
                        obj["metadata"]["name"],
                        outcome
                    );
                }
            }
        }
    }
    // And the answers are no for a non-member, for whom a role is a relation to one object.
    let q = Question {
        verb: "delete",
        kind: kind("Workload"),
        namespace: Some("default"),
        name: None,
        subresource: None,
    };
    assert!(!reg.review(&owner.caller, &q).await.unwrap().allowed);
    assert!(reg.review(&member.caller, &q).await.unwrap().allowed);
}
