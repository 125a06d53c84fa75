//! The controllers end to end: a real `ui apiserver`, real `ui controllers run` processes, and
//! this test playing the node agents (it registers signed Node and NodeOffer objects for test
//! node identities, renews their heartbeat Leases and reports bound replicas as running).
//! Every assertion is about the state of the world, read back from the API.

mod support;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use api::identity::Did;
use chrono::Utc;
use ed25519_dalek::SigningKey;
use serde_json::{Value, json};
use support::{Controllers, Run, Server, User, wait_for};

const V1: &str = "/apis/univrs.io/v1";
const NODE_LEASES: &str = "univrs-node-lease";

/// A small JSON client of the API.
#[derive(Clone)]
struct Api {
    agent: ureq::Agent,
    base: String,
    bearer: String,
}

impl Api {
    /// As the control-plane member: the test plays the node agents and the operators.
    fn new(server: &Server) -> Self {
        Self {
            agent: server.agent(),
            base: server.url.clone(),
            bearer: format!("Bearer {}", server.member_token()),
        }
    }

    fn send(&self, method: &str, path: &str, body: Option<(&str, &Value)>) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let (content_type, body) =
            body.map_or(("application/json", Vec::new()), |(ct, b)| (ct, b.to_string().into_bytes()));
        let (code, text) = support::send(&self.agent, method, &url, &self.bearer, content_type, body);
        (code, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    #[track_caller]
    fn create(&self, collection: &str, obj: &Value) -> Value {
        let (code, out) = self.send("POST", collection, Some(("application/json", obj)));
        assert!(code == 201 || code == 200, "create in {collection}: {code} {out}");
        out
    }

    fn get(&self, path: &str) -> Option<Value> {
        let (code, out) = self.send("GET", path, None);
        (code == 200).then_some(out)
    }

    fn list(&self, collection: &str) -> Vec<Value> {
        let (code, out) = self.send("GET", collection, None);
        assert_eq!(code, 200, "list {collection}: {out}");
        out["items"].as_array().cloned().unwrap_or_default()
    }

    #[track_caller]
    fn merge(&self, path: &str, patch: &Value) -> Value {
        let (code, out) = self.send("PATCH", path, Some(("application/merge-patch+json", patch)));
        assert_eq!(code, 200, "patch {path}: {out}");
        out
    }

    fn delete(&self, path: &str) -> u16 {
        self.send("DELETE", path, None).0
    }

    /// As the identity of `key`, with a token it minted itself: any stranger can.
    fn as_key(server: &Server, key: &SigningKey) -> Self {
        let token = api::token::mint(key, &server.audience, Utc::now().timestamp(), 600);
        Self { agent: server.agent(), base: server.url.clone(), bearer: format!("Bearer {token}") }
    }

    /// Creates `obj`, or finds it there already (the same name, kept from before).
    #[track_caller]
    fn create_or_keep(&self, collection: &str, obj: &Value) {
        let (code, out) = self.send("POST", collection, Some(("application/json", obj)));
        assert!(code == 201 || code == 200 || code == 409, "create in {collection}: {code} {out}");
    }
}

fn did(key: &SigningKey) -> String {
    Did::from_key(&key.verifying_key()).as_str().to_owned()
}

/// A deterministic test key.
fn key(seed: &str) -> SigningKey {
    let mut bytes = [0u8; 32];
    for (i, b) in seed.bytes().enumerate() {
        bytes[i % 32] ^= b.wrapping_add(i as u8);
    }
    bytes[31] ^= 0x5a;
    SigningKey::from_bytes(&bytes)
}

fn signed(mut obj: Value, key: &SigningKey) -> Value {
    api::signing::sign(&mut obj, key, Utc::now()).unwrap();
    obj
}

/// The control plane's member key (the apiserver's `DATA/member.key`, hex).
fn member_key(server: &Server) -> SigningKey {
    let hex = std::fs::read_to_string(server.data.join("member.key")).unwrap();
    let bytes: Vec<u8> = (0..hex.trim().len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex.trim()[i..i + 2], 16).unwrap())
        .collect();
    SigningKey::from_bytes(&bytes.try_into().unwrap())
}

/// How long a test node's Lease lasts. Long enough that the agents' thread renewing every
/// 300 ms keeps it under the load of the whole suite on 2 cores. (With 3 s and renewals
/// rounded down to the second, an orphaned replica once went missing there; a node that
/// lapsed and had its replica replaced is the likely cause.)
const NODE_LEASE_SECONDS: u64 = 5;

/// A Lease's `renewTime` for now (a MicroTime, as Kubernetes writes it).
fn renew_time() -> String {
    Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// A node identity registered by its operator: a signed Node and NodeOffer, a heartbeat Lease.
fn register_node(api: &Api, name: &str, operator: &SigningKey, jurisdiction: &str) {
    register_node_with_key(api, name, &key(&format!("node {name}")), operator, jurisdiction);
}

/// As `register_node`, with the node's own key; an offer or lease of the name kept from before
/// stays as it is.
fn register_node_with_key(
    api: &Api,
    name: &str,
    node_key: &SigningKey,
    operator: &SigningKey,
    jurisdiction: &str,
) {
    let mut peer = vec![0x12, 0x20];
    peer.extend_from_slice(node_key.verifying_key().as_bytes());
    let node = json!({
        "apiVersion": "univrs.io/v1", "kind": "Node", "metadata": { "name": name },
        "spec": {
            "peerId": bs58::encode(peer).into_string(),
            "operator": did(operator),
            "nodeKey": did(node_key),
            "ageRecipient": format!("age1{}", "q".repeat(58)),
            "capacity": { "cpu": "4", "memory": "8Gi", "storage": "100Gi" },
        },
    });
    api.create(&format!("{V1}/nodes"), &signed(node, operator));
    let offer = json!({
        "apiVersion": "univrs.io/v1", "kind": "NodeOffer", "metadata": { "name": name },
        "spec": { "node": name, "resources": { "cpu": "2", "memory": "4Gi" }, "jurisdiction": jurisdiction },
    });
    api.create_or_keep(&format!("{V1}/nodeoffers"), &signed(offer, operator));
    let lease = json!({
        "apiVersion": "univrs.io/v1", "kind": "Lease", "metadata": { "name": name, "namespace": NODE_LEASES },
        "spec": { "holderIdentity": name, "leaseDurationSeconds": NODE_LEASE_SECONDS, "renewTime": renew_time() },
    });
    api.create_or_keep(&format!("{V1}/namespaces/{NODE_LEASES}/leases"), &lease);
}

/// The node agents of the test: while a node is in `alive`, its Lease is renewed and the
/// replicas bound to it are reported running.
struct Agents {
    alive: Arc<Mutex<HashSet<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Agents {
    fn start(api: &Api) -> Self {
        let alive: Arc<Mutex<HashSet<String>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (api, alive, stop) = (api.clone(), alive.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let nodes: Vec<String> = alive.lock().unwrap().iter().cloned().collect();
                    let now = renew_time();
                    for n in &nodes {
                        api.send(
                            "PATCH",
                            &format!("{V1}/namespaces/{NODE_LEASES}/leases/{n}"),
                            Some(("application/merge-patch+json", &json!({ "spec": { "renewTime": now } }))),
                        );
                    }
                    for r in api.list(&format!("{V1}/replicas")) {
                        let bound =
                            r["spec"]["nodeName"].as_str().is_some_and(|n| nodes.iter().any(|x| x == n));
                        if bound
                            && r["status"]["phase"] != "Running"
                            && r["metadata"]["deletionTimestamp"].is_null()
                        {
                            let ns = r["metadata"]["namespace"].as_str().unwrap();
                            let name = r["metadata"]["name"].as_str().unwrap();
                            // Started now, under the limits it asked for (read back, as the
                            // real agent reports them).
                            let status = json!({ "status": {
                                "phase": "Running",
                                "startedAt": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                                "limits": r["spec"]["container"]["resources"],
                            } });
                            api.send(
                                "PATCH",
                                &format!("{V1}/namespaces/{ns}/replicas/{name}/status"),
                                Some(("application/merge-patch+json", &status)),
                            );
                        }
                    }
                    std::thread::sleep(Duration::from_millis(300));
                }
            })
        };
        Self { alive, stop, thread: Some(thread) }
    }

    fn set_alive(&self, node: &str, alive: bool) {
        let mut set = self.alive.lock().unwrap();
        if alive {
            set.insert(node.to_owned())
        } else {
            set.remove(node)
        };
    }
}

impl Drop for Agents {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Waits until the node lifecycle controller has seen every one of `nodes` heartbeat.
#[track_caller]
fn wait_ready(api: &Api, nodes: &[&str]) {
    wait_for(30, "the nodes Ready", || {
        let not_ready: Vec<&str> = nodes
            .iter()
            .copied()
            .filter(|n| {
                let node = api.get(&format!("{V1}/nodes/{n}")).unwrap_or_default();
                !node["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
            .collect();
        if not_ready.is_empty() { Ok(()) } else { Err(format!("{not_ready:?}")) }
    });
}

fn ui(u: &User, server: &Server, args: &[&str]) -> Run {
    let mut all = args.to_vec();
    all.extend(["--kubeconfig", server.kubeconfig.to_str().unwrap()]);
    u.run(&all)
}

/// Signs a manifest with the user's own identity (`ui sign`) and applies it (`ui apply`).
fn apply_signed(u: &User, server: &Server, file: &str, yaml: &str) {
    let path = u.path(file);
    std::fs::write(&path, yaml).unwrap();
    let signed = u.run(&["sign", "-f", path.to_str().unwrap()]).ok().stdout;
    std::fs::write(&path, signed).unwrap();
    ui(u, server, &["apply", "-f", path.to_str().unwrap()]).ok();
}

fn workload_yaml(name: &str, replicas: u32, image: &str, policy: &str) -> String {
    format!(
        "apiVersion: univrs.io/v1\nkind: Workload\nmetadata:\n  name: {name}\n  namespace: default\n\
         spec:\n  replicas: {replicas}\n  image: {image}\n  resources:\n    cpu: 100m\n    memory: 64Mi\n  trustPolicy: {policy}\n"
    )
}

fn policy_yaml(name: &str, jurisdictions: &[&str], denied: &[String]) -> String {
    let denied = if denied.is_empty() {
        String::new()
    } else {
        format!("  deniedOperators: [{}]\n", denied.join(", "))
    };
    format!(
        "apiVersion: univrs.io/v1\nkind: TrustPolicy\nmetadata:\n  name: {name}\n  namespace: default\n\
         spec:\n  allowedJurisdictions: [{}]\n{denied}",
        jurisdictions.join(", ")
    )
}

/// The replicas of workload `name` (by label), not being deleted.
fn replicas_of(api: &Api, name: &str) -> Vec<Value> {
    api.list(&format!("{V1}/namespaces/default/replicas"))
        .into_iter()
        .filter(|r| {
            r["metadata"]["labels"]["univrs.io/workload"] == name
                && r["metadata"]["deletionTimestamp"].is_null()
        })
        .collect()
}

fn node_of(r: &Value) -> Option<String> {
    r["spec"]["nodeName"].as_str().map(str::to_owned)
}

fn summary(rs: &[Value]) -> String {
    rs.iter()
        .map(|r| format!("{}@{:?}:{}", r["metadata"]["name"], node_of(r), r["status"]["message"]))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Waits until workload `name` has exactly `n` replicas, all bound, and returns them. Checks
/// on every look that none is bound to a node in `forbidden` (the trust policy's invariant).
#[track_caller]
fn wait_bound(api: &Api, name: &str, n: usize, forbidden: &[&str]) -> Vec<Value> {
    wait_for(60, &format!("{n} bound replicas of {name}"), || {
        let rs = replicas_of(api, name);
        for r in &rs {
            if let Some(node) = node_of(r) {
                assert!(
                    !forbidden.contains(&node.as_str()),
                    "trust policy violated: {} on {node}",
                    r["metadata"]["name"]
                );
            }
        }
        if rs.len() == n && rs.iter().all(|r| node_of(r).is_some()) { Ok(rs) } else { Err(summary(&rs)) }
    })
}

#[test]
fn replicas_spread_across_operators_obey_the_trust_policy_scale_roll_out_and_are_collected() {
    let u = User::new();
    u.init_plain();
    let server = Server::start(&u, &u.path("data"));
    let api = Api::new(&server);
    let _controllers = Controllers::start(&u, &server);
    let agents = Agents::start(&api);
    let ops: BTreeMap<&str, SigningKey> =
        ["A", "B", "C", "D", "E"].into_iter().map(|o| (o, key(&format!("operator {o}")))).collect();
    for (node, op, jurisdiction) in [
        ("a1", "A", "DE"),
        ("a2", "A", "DE"),
        ("b1", "B", "FR"),
        ("e1", "E", "CH"),
        ("c1", "C", "US"),
        ("d1", "D", "DE"),
    ] {
        register_node(&api, node, &ops[op], jurisdiction);
        agents.set_alive(node, true);
    }
    // Nodes are named after their operator: a1 is operator A's.
    let operator_of = |node: &str| Some(node[..1].to_uppercase());
    wait_ready(&api, &["a1", "a2", "b1", "e1", "c1", "d1"]);
    // c1 is in a jurisdiction the policy does not allow; d1's operator is denied.
    let forbidden = ["c1", "d1"];
    apply_signed(&u, &server, "eu.yaml", &policy_yaml("eu", &["DE", "FR", "CH"], &[did(&ops["D"])]));
    apply_signed(&u, &server, "web.yaml", &workload_yaml("web", 3, "registry.example/web:1", "eu"));

    // Three replicas, one on each eligible operator (A, B, E): spread, never on c1 or d1.
    let rs = wait_bound(&api, "web", 3, &forbidden);
    let operators: BTreeSet<String> = rs.iter().filter_map(|r| operator_of(&node_of(r)?)).collect();
    assert_eq!(operators, ["A", "B", "E"].map(String::from).into(), "{}", summary(&rs));
    for r in &rs {
        let owner = &r["metadata"]["ownerReferences"][0];
        assert_eq!(
            (owner["kind"].as_str(), owner["name"].as_str(), owner["controller"].as_bool()),
            (Some("Workload"), Some("web"), Some(true))
        );
    }
    // The workload's status, once the agents report the replicas running.
    let web = wait_for(30, "web's status", || {
        let w = api.get(&format!("{V1}/namespaces/default/workloads/web")).unwrap();
        let s = &w["status"];
        let available = s["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Available" && c["status"] == "True");
        if s["replicas"] == 3 && s["readyReplicas"] == 3 && s["updatedReplicas"] == 3 && available {
            Ok(w)
        } else {
            Err(w["status"].to_string())
        }
    });
    assert_eq!(web["status"]["observedGeneration"], web["metadata"]["generation"]);

    // A workload no node may take says why, in the replica's status and in `ui status`.
    apply_signed(&u, &server, "jp.yaml", &policy_yaml("jp-only", &["JP"], &[]));
    apply_signed(
        &u,
        &server,
        "nowhere.yaml",
        &workload_yaml("nowhere", 1, "registry.example/x:1", "jp-only"),
    );
    wait_for(30, "the reason nowhere is pending", || {
        let rs = replicas_of(&api, "nowhere");
        let msg =
            rs.first().and_then(|r| r["status"]["message"].as_str().map(str::to_owned)).unwrap_or_default();
        if msg == "0/6 nodes available: 6 nodes: jurisdiction not allowed" {
            Ok(())
        } else {
            Err(summary(&rs))
        }
    });
    let status = ui(&u, &server, &["status"]).ok().stdout;
    assert!(status.contains("pending: 0/6 nodes available: 6 nodes: jurisdiction not allowed"), "{status}");
    assert!(status.contains("web: 3/3 ready, 3 replicas"), "{status}");

    // Scale up and down with `ui scale` (re-signed by the owner).
    ui(&u, &server, &["scale", "workload", "web", "5"]).ok();
    wait_bound(&api, "web", 5, &forbidden);
    ui(&u, &server, &["scale", "workload", "web", "2"]).ok();
    wait_bound(&api, "web", 2, &forbidden);
    let w = api.get(&format!("{V1}/namespaces/default/workloads/web")).unwrap();
    let verified = u.run_with_stdin(&["verify", "-f", "-"], &w.to_string());
    assert_eq!(verified.code, 0, "ui scale left web unsigned: {}{}", verified.stdout, verified.stderr);

    // A new image rolls out: never more than 2 + 1 (surge) replicas, then all on the new template.
    apply_signed(&u, &server, "web.yaml", &workload_yaml("web", 2, "registry.example/web:2", "eu"));
    wait_for(60, "web rolled out to image 2", || {
        let rs = replicas_of(&api, "web");
        assert!(rs.len() <= 3, "more than the surge: {}", summary(&rs));
        let new = rs.iter().filter(|r| r["spec"]["container"]["image"] == "registry.example/web:2").count();
        if rs.len() == 2 && new == 2 && rs.iter().all(|r| node_of(r).is_some()) {
            Ok(())
        } else {
            Err(summary(&rs))
        }
    });

    // Deleting the workload removes its replicas (background propagation).
    assert_eq!(api.delete(&format!("{V1}/namespaces/default/workloads/web")), 200);
    wait_for(30, "web's replicas collected", || {
        let rs = api.list(&format!("{V1}/namespaces/default/replicas"));
        let left: Vec<_> = rs.into_iter().filter(|r| r["spec"]["workload"] == "web").collect();
        if left.is_empty() { Ok(()) } else { Err(summary(&left)) }
    });

    // Foreground: the workload stays (deletionTimestamp set) until its replicas are gone.
    apply_signed(&u, &server, "fg.yaml", &workload_yaml("fg", 2, "registry.example/fg:1", "eu"));
    wait_bound(&api, "fg", 2, &forbidden);
    api.merge(
        &format!("{V1}/namespaces/default/workloads/fg"),
        &json!({ "metadata": { "finalizers": ["foregroundDeletion"] } }),
    );
    // A stranger's object names fg as its owner, blocking, and holds a finalizer nobody will
    // remove. (Written by the member: the apiserver refuses such references from others now,
    // but the collector must hold for objects written before.) It holds nothing.
    let fg_uid = uid_of(&api, &format!("{V1}/namespaces/default/workloads/fg"));
    let mut hold = signed(
        json!({
            "apiVersion": "univrs.io/v1", "kind": "TrustPolicy",
            "metadata": { "name": "hold", "namespace": "default" }, "spec": {},
        }),
        &key("mallory"),
    );
    let reference = json!([{
        "apiVersion": "univrs.io/v1", "kind": "Workload", "name": "fg", "uid": fg_uid,
        "blockOwnerDeletion": true,
    }]);
    hold["metadata"]["ownerReferences"] = reference.clone();
    hold["metadata"]["finalizers"] = json!(["mallory.example/hold"]);
    api.create(&format!("{V1}/namespaces/default/trustpolicies"), &hold);
    assert_eq!(api.delete(&format!("{V1}/namespaces/default/workloads/fg")), 202);
    wait_for(30, "fg and its replicas gone", || {
        let left: Vec<_> = api
            .list(&format!("{V1}/namespaces/default/replicas"))
            .into_iter()
            .filter(|r| r["spec"]["workload"] == "fg")
            .collect();
        let owner = api.get(&format!("{V1}/namespaces/default/workloads/fg"));
        if let Some(o) = &owner {
            assert!(!o["metadata"]["deletionTimestamp"].is_null());
        }
        if left.is_empty() && owner.is_none() {
            Ok(())
        } else {
            Err(format!("{} replicas, owner {}", left.len(), owner.is_some()))
        }
    });
    // Nor was the stranger's object deleted with fg or rewritten.
    let hold =
        api.get(&format!("{V1}/namespaces/default/trustpolicies/hold")).expect("mallory's object stays");
    assert_eq!(hold["metadata"]["ownerReferences"], reference);

    // Orphan: the workload goes, its replica stays without the reference.
    apply_signed(&u, &server, "orph.yaml", &workload_yaml("orph", 1, "registry.example/o:1", "eu"));
    let orphan = wait_bound(&api, "orph", 1, &forbidden).remove(0);
    let orphan_name = orphan["metadata"]["name"].as_str().unwrap().to_owned();
    api.merge(
        &format!("{V1}/namespaces/default/workloads/orph"),
        &json!({ "metadata": { "finalizers": ["orphan"] } }),
    );
    api.delete(&format!("{V1}/namespaces/default/workloads/orph"));
    wait_for(30, "orph gone and its replica orphaned", || {
        let owner = api.get(&format!("{V1}/namespaces/default/workloads/orph"));
        let r = api
            .get(&format!("{V1}/namespaces/default/replicas/{orphan_name}"))
            .expect("the orphan replica stays");
        if owner.is_none() && r["metadata"]["ownerReferences"].is_null() {
            Ok(())
        } else {
            Err(r["metadata"].to_string())
        }
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        api.get(&format!("{V1}/namespaces/default/replicas/{orphan_name}")).is_some(),
        "the orphan was collected"
    );
}

#[test]
fn a_lapsed_node_lease_moves_its_replicas_and_its_return_makes_no_duplicates() {
    let u = User::new();
    u.init_plain();
    let server = Server::start(&u, &u.path("data"));
    let api = Api::new(&server);
    let _controllers = Controllers::start(&u, &server);
    let agents = Agents::start(&api);
    for (node, op) in [("n1", "A"), ("n2", "B"), ("n3", "C")] {
        register_node(&api, node, &key(&format!("operator {op}")), "DE");
        agents.set_alive(node, true);
    }
    wait_ready(&api, &["n1", "n2", "n3"]);
    apply_signed(&u, &server, "eu.yaml", &policy_yaml("eu", &["DE"], &[]));
    apply_signed(&u, &server, "app.yaml", &workload_yaml("app", 2, "registry.example/app:1", "eu"));
    let rs = wait_bound(&api, "app", 2, &[]);
    let victim = node_of(&rs[0]).unwrap();

    // The victim stops heartbeating: NotReady, and its replica is placed elsewhere.
    let started = Instant::now();
    agents.set_alive(&victim, false);
    wait_for(30, "the victim NotReady", || {
        let n = api.get(&format!("{V1}/nodes/{victim}")).unwrap();
        let ready = n["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "Ready")
            .cloned();
        match ready {
            Some(c) if c["status"] == "False" && c["reason"] == "NodeLeaseLapsed" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    let moved = wait_for(30, "the replicas off the victim", || {
        let rs = replicas_of(&api, "app");
        let ok = rs.len() == 2 && rs.iter().all(|r| node_of(r).is_some_and(|n| n != victim));
        if ok { Ok(rs) } else { Err(summary(&rs)) }
    });
    let took = started.elapsed();
    // Lease 5 s + eviction timeout 1 s + rechecks and placement: a bound, well within 20 s.
    assert!(took < Duration::from_secs(20), "redistribution took {took:?}");

    // The victim comes back: Ready again, and still exactly two replicas, each bound once.
    agents.set_alive(&victim, true);
    wait_for(30, "the victim Ready again", || {
        let n = api.get(&format!("{V1}/nodes/{victim}")).unwrap();
        let ready = n["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        if ready { Ok(()) } else { Err(n["status"].to_string()) }
    });
    std::thread::sleep(Duration::from_secs(2));
    let after = replicas_of(&api, "app");
    assert_eq!(after.len(), 2, "{}", summary(&after));
    let names: BTreeSet<_> = after.iter().map(|r| r["metadata"]["name"].to_string()).collect();
    assert_eq!(names.len(), 2);
    assert_eq!(
        after.iter().map(|r| r["metadata"]["uid"].clone()).collect::<Vec<_>>(),
        moved.iter().map(|r| r["metadata"]["uid"].clone()).collect::<Vec<_>>(),
        "replicas changed after the node came back"
    );
}

#[test]
fn only_the_lease_holder_acts_and_a_standby_takes_over_when_it_dies() {
    let u = User::new();
    u.init_plain();
    let server = Server::start(&u, &u.path("data"));
    let api = Api::new(&server);
    let mut first = Controllers::start(&u, &server);
    let holders = |api: &Api| -> BTreeMap<String, String> {
        api.list(&format!("{V1}/namespaces/univrs-system/leases"))
            .into_iter()
            .map(|l| {
                (
                    l["metadata"]["name"].as_str().unwrap().to_owned(),
                    l["spec"]["holderIdentity"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    };
    let names = [
        "controller-credits",
        "controller-gc",
        "controller-nodelifecycle",
        "controller-reputation",
        "controller-scheduler",
        "controller-workload",
    ];
    wait_for(20, "the first process to lead every controller", || {
        let h = holders(&api);
        if names.iter().all(|n| h.get(*n) == Some(&first.identity)) { Ok(()) } else { Err(format!("{h:?}")) }
    });
    let second = Controllers::start(&u, &server);
    let agents = Agents::start(&api);
    register_node(&api, "n1", &key("operator A"), "DE");
    agents.set_alive("n1", true);
    wait_ready(&api, &["n1"]);
    apply_signed(&u, &server, "eu.yaml", &policy_yaml("eu", &["DE"], &[]));
    apply_signed(&u, &server, "one.yaml", &workload_yaml("one", 1, "registry.example/one:1", "eu"));
    let bound = wait_bound(&api, "one", 1, &[]).remove(0);
    // Binding is compare-and-swap: a scheduler with a stale cache (the replica as it was before
    // the bind) gets 409 and binds nothing.
    let name = bound["metadata"]["name"].as_str().unwrap();
    let path = format!("{V1}/namespaces/default/replicas/{name}");
    let mut stale = bound.clone();
    stale["metadata"]["resourceVersion"] = json!(
        (bound["metadata"]["resourceVersion"].as_str().unwrap().parse::<u64>().unwrap() - 1).to_string()
    );
    stale["spec"]["nodeName"] = json!("n2");
    let (code, _) = api.send("PUT", &path, Some(("application/json", &stale)));
    assert_eq!(code, 409);
    assert_eq!(api.get(&path).unwrap()["spec"]["nodeName"], "n1");
    // The standby acted on nothing: it leads nothing and reconciled nothing.
    let leader_metrics = first.metrics();
    for family in [
        "univrs_controller_reconciles_total{controller=\"scheduler\",result=\"ok\"}",
        "univrs_controller_reconcile_duration_seconds_count{controller=\"workload\"}",
        "univrs_controller_queue_depth{controller=\"scheduler\"}",
        "univrs_controller_queue_latency_seconds_count{controller=\"workload\"}",
    ] {
        assert!(leader_metrics.contains(family), "no {family} in:\n{leader_metrics}");
    }
    let m = second.metrics();
    assert!(!m.contains("univrs_controller_reconciles_total"), "the standby reconciled:\n{m}");
    assert!(m.contains("univrs_controller_leader{controller=\"workload\"} 0"), "{m}");
    assert!(first.metrics().contains("univrs_controller_leader{controller=\"workload\"} 1"));

    // The leader dies without releasing its leases: the standby takes over once they lapse.
    first.kill_9();
    wait_for(20, "the standby to lead every controller", || {
        let h = holders(&api);
        if names.iter().all(|n| h.get(*n) == Some(&second.identity)) { Ok(()) } else { Err(format!("{h:?}")) }
    });
    apply_signed(&u, &server, "two.yaml", &workload_yaml("two", 2, "registry.example/two:1", "eu"));
    wait_bound(&api, "two", 2, &[]);
    assert!(
        second
            .metrics()
            .contains("univrs_controller_reconciles_total{controller=\"scheduler\",result=\"ok\"}")
    );

    // A graceful stop drains, then releases every lease for the next process to take at once.
    let mut second = second;
    second.stop();
    let h = holders(&api);
    assert!(names.iter().all(|n| h.get(*n).is_some_and(String::is_empty)), "{h:?}");
}

#[test]
fn ui_up_runs_the_controllers_next_to_the_apiserver() {
    let u = User::new();
    let kubeconfig = u.path("kubeconfig");
    let mut child = u
        .up_cmd(&u.path("data"), &kubeconfig, &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let url = first.strip_prefix("listening on ").unwrap().to_owned();
    let second = lines.next().unwrap().unwrap();
    let audience = second.strip_prefix("cluster: ").unwrap().to_owned();
    std::thread::spawn(move || for _ in lines {});
    // Read as the member (a token from its key) over TLS (the cluster's CA).
    let data = u.path("data");
    let token =
        u.run(&["token", "--audience", &audience, "--key-file", data.join("member.key").to_str().unwrap()]);
    let bearer = format!("Bearer {}", token.ok().stdout.trim());
    let ca = ureq::tls::Certificate::from_pem(&std::fs::read(data.join("tls/ca.crt")).unwrap())
        .unwrap()
        .to_owned();
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::Specific(std::sync::Arc::new(vec![ca])))
        .build();
    let agent: ureq::Agent =
        ureq::Agent::config_builder().tls_config(tls).http_status_as_error(false).build().into();
    let leases = wait_for(20, "the controllers' leases", || {
        let mut r = agent
            .get(&format!("{url}{V1}/namespaces/univrs-system/leases"))
            .header("Authorization", &bearer)
            .call()
            .map_err(|e| e.to_string())?;
        let v: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
        let n = v["items"].as_array().map_or(0, Vec::len);
        if n == 6 { Ok(v) } else { Err(v.to_string()) }
    });
    assert_eq!(
        leases["items"].as_array().unwrap().len(),
        6,
        "workload, scheduler, gc, nodelifecycle, credits, reputation"
    );
    let _ = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let status = child.wait().unwrap();
    assert!(status.success(), "ui up did not shut down cleanly: {status}");
}

/// What a replica that no node may take without a TrustPolicy says to do.
const NO_POLICY_HINT: &str = "no TrustPolicy: only nodes of your own or of the control plane; \
                              name a TrustPolicy with allowedOperators to use others";
/// What a replica whose operator lacks attestations with standing says.
const STANDING_HINT: &str = "an attestation counts only from a control-plane member, an operator the policy \
                             allows, or an operator they vouch for (directly or through others they vouch for) \
                             whose reputation is at least the policy's minReputation";

/// Waits until workload `name` has one replica, unbound, whose status says `message`.
#[track_caller]
fn wait_pending(api: &Api, name: &str, message: &str) {
    wait_for(30, &format!("why {name} is pending"), || {
        let rs = replicas_of(api, name);
        match rs.as_slice() {
            [r] if node_of(r).is_none() && r["status"]["message"] == message => Ok(()),
            _ => Err(summary(&rs)),
        }
    });
}

/// A Workload of one replica signed by `owner`, under `policy` (none: it names none).
fn workload_by(owner: &SigningKey, name: &str, policy: Option<&str>) -> Value {
    let mut w = json!({
        "apiVersion": "univrs.io/v1", "kind": "Workload", "metadata": { "name": name, "namespace": "default" },
        "spec": { "replicas": 1, "image": "registry.example/x:1", "resources": { "cpu": "100m", "memory": "64Mi" } },
    });
    if let Some(p) = policy {
        w["spec"]["trustPolicy"] = json!(p);
    }
    signed(w, owner)
}

/// An Attestation by `attester` vouching for the operator `subject`.
fn attestation(attester: &SigningKey, name: &str, subject: &SigningKey) -> Value {
    let a = json!({
        "apiVersion": "univrs.io/v1", "kind": "Attestation", "metadata": { "name": name },
        "spec": { "subjectKind": "Operator", "subject": did(subject) },
    });
    signed(a, attester)
}

fn uid_of(api: &Api, path: &str) -> String {
    api.get(path).map(|o| o["metadata"]["uid"].as_str().unwrap_or_default().to_owned()).unwrap_or_default()
}

/// Every bound replica of `name` carries the uid of the Node now bearing its node's name.
#[track_caller]
fn bound_to_their_nodes(api: &Api, rs: &[Value]) -> Result<(), String> {
    for r in rs {
        let node = node_of(r).ok_or_else(|| summary(rs))?;
        let uid = uid_of(api, &format!("{V1}/nodes/{node}"));
        if r["spec"]["nodeUid"].as_str() != Some(uid.as_str()) {
            return Err(format!(
                "{} bound to {node} uid {} but the node is {uid}",
                r["metadata"]["name"], r["spec"]["nodeUid"]
            ));
        }
    }
    Ok(())
}

#[test]
fn a_deleted_node_s_replicas_are_made_again_elsewhere_and_never_handed_to_the_name_s_next_holder() {
    let u = User::new();
    u.init_plain();
    let server = Server::start(&u, &u.path("data"));
    let api = Api::new(&server);
    let mut controllers = Controllers::start(&u, &server);
    let agents = Agents::start(&api);
    for (node, op) in [("n1", "A"), ("n2", "B"), ("n3", "C")] {
        register_node(&api, node, &key(&format!("operator {op}")), "DE");
        agents.set_alive(node, true);
    }
    wait_ready(&api, &["n1", "n2", "n3"]);
    apply_signed(&u, &server, "eu.yaml", &policy_yaml("eu", &["DE"], &[]));
    apply_signed(&u, &server, "app.yaml", &workload_yaml("app", 2, "registry.example/app:1", "eu"));
    let rs = wait_bound(&api, "app", 2, &[]);
    // Bound to the Node object, not only to its name.
    bound_to_their_nodes(&api, &rs).unwrap();

    // The Node is deleted (its lease still renewed: only the Node goes). Its replicas are
    // evicted and made again on the others.
    let victim = node_of(&rs[0]).unwrap();
    let old: BTreeSet<String> = rs
        .iter()
        .filter(|r| node_of(r).as_deref() == Some(victim.as_str()))
        .map(|r| r["metadata"]["uid"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(api.delete(&format!("{V1}/nodes/{victim}")), 200);
    wait_for(30, "the deleted node's replicas made again elsewhere", || {
        let rs = replicas_of(&api, "app");
        let moved = rs.len() == 2
            && rs.iter().all(|r| {
                node_of(r).is_some_and(|n| n != victim)
                    && !old.contains(r["metadata"]["uid"].as_str().unwrap())
            });
        if moved { bound_to_their_nodes(&api, &rs) } else { Err(summary(&rs)) }
    });
    // A stranger registers the freed name with a key of its own: it gets nothing.
    register_node_with_key(&api, &victim, &key("stranger's node"), &key("operator M"), "DE");
    let rs = replicas_of(&api, "app");
    assert!(rs.iter().all(|r| node_of(r).as_deref() != Some(victim.as_str())), "{}", summary(&rs));

    // While no controller runs, a node hosting replicas is deleted and its name registered
    // again at once (another node key, so another Node and uid). When the controllers come
    // back, the replicas of the old Node are evicted, not handed to the new one.
    controllers.stop();
    let rs = replicas_of(&api, "app");
    let host = node_of(&rs[0]).unwrap();
    let old: BTreeSet<String> = rs
        .iter()
        .filter(|r| node_of(r).as_deref() == Some(host.as_str()))
        .map(|r| r["metadata"]["uid"].as_str().unwrap().to_owned())
        .collect();
    let operator = key(&format!(
        "operator {}",
        if host == "n1" {
            "A"
        } else if host == "n2" {
            "B"
        } else {
            "C"
        }
    ));
    let before = uid_of(&api, &format!("{V1}/nodes/{host}"));
    assert_eq!(api.delete(&format!("{V1}/nodes/{host}")), 200);
    register_node_with_key(&api, &host, &key(&format!("node {host} again")), &operator, "DE");
    let after = uid_of(&api, &format!("{V1}/nodes/{host}"));
    assert_ne!(before, after);
    let _controllers = Controllers::start(&u, &server);
    wait_for(30, "the old Node's replicas evicted, two bound to the Nodes there now", || {
        let rs = replicas_of(&api, "app");
        if let Some(r) = rs.iter().find(|r| old.contains(r["metadata"]["uid"].as_str().unwrap())) {
            return Err(format!("{} still there: {}", r["metadata"]["name"], summary(&rs)));
        }
        if rs.len() != 2 {
            return Err(summary(&rs));
        }
        bound_to_their_nodes(&api, &rs)
    });
}

#[test]
fn attestations_by_fresh_keys_count_for_nothing_those_by_members_and_named_operators_do() {
    let u = User::new();
    u.init_plain();
    let server = Server::start(&u, &u.path("data"));
    let api = Api::new(&server);
    let _controllers = Controllers::start(&u, &server);
    let agents = Agents::start(&api);
    let (a, c) = (key("operator A"), key("operator C"));
    register_node(&api, "n1", &a, "DE");
    agents.set_alive("n1", true);
    wait_ready(&api, &["n1"]);

    // Twenty fresh keys vouch for A, each with a token it minted itself.
    for i in 0..20 {
        let fresh = key(&format!("fresh key {i}"));
        Api::as_key(&server, &fresh)
            .create(&format!("{V1}/attestations"), &attestation(&fresh, &format!("fresh-{i}"), &a));
    }
    let named = format!(
        "apiVersion: univrs.io/v1\nkind: TrustPolicy\nmetadata:\n  name: named\n  namespace: default\n\
         spec:\n  requiredAttestations: 1\n  allowedOperators: [{}, {}]\n",
        did(&a),
        did(&c)
    );
    apply_signed(&u, &server, "named.yaml", &named);
    apply_signed(&u, &server, "v1.yaml", &workload_yaml("v1", 1, "registry.example/v:1", "named"));
    let too_few =
        format!("0/1 nodes available: 1 node: too few attestations with standing ({STANDING_HINT})");
    wait_pending(&api, "v1", &too_few);

    // An operator the policy names vouches for A: that counts, under this policy.
    let by_c = Api::as_key(&server, &c);
    by_c.create(&format!("{V1}/attestations"), &attestation(&c, "c-vouches-a", &a));
    wait_bound(&api, "v1", 1, &[]);

    // Under a policy that names nobody, the 21 attestations the scheduler has now seen (C's came
    // after the fresh ones, and v1's placement shows it saw C's) count for nothing.
    let strict = "apiVersion: univrs.io/v1\nkind: TrustPolicy\nmetadata:\n  name: strict\n  namespace: default\n\
                  spec:\n  requiredAttestations: 1\n";
    apply_signed(&u, &server, "strict.yaml", strict);
    apply_signed(&u, &server, "v2.yaml", &workload_yaml("v2", 1, "registry.example/v:1", "strict"));
    wait_pending(&api, "v2", &too_few);

    // A control-plane member vouches for A: that counts under every policy.
    let member = member_key(&server);
    api.create(&format!("{V1}/attestations"), &attestation(&member, "member-vouches-a", &a));
    wait_bound(&api, "v2", 1, &[]);

    // The reputation controller says so too: the member's attestation is accepted with the
    // weight of the highest trust, the ring of fresh keys' are not (nobody trusted vouches for
    // them), and A's global trust comes from the member alone.
    wait_for(30, "attestations judged", || {
        let all = api.list(&format!("{V1}/attestations"));
        let judged =
            |name: &str| all.iter().find(|x| x["metadata"]["name"] == name).cloned().unwrap_or_default();
        let m = judged("member-vouches-a");
        if m["status"]["accepted"] != true || m["status"]["weight"] != 1.0 {
            return Err(m.to_string());
        }
        for i in 0..20 {
            let f = judged(&format!("fresh-{i}"));
            let refused = f["status"]["accepted"] == false
                && f["status"]["weight"] == 0.0
                && f["status"]["reason"].as_str().is_some_and(|r| r.contains("no standing"));
            if !refused {
                return Err(f.to_string());
            }
        }
        Ok(())
    });
    let shown = ui(&u, &server, &["reputation", "show", &did(&a), "-o", "json"]).ok().json();
    let attestations =
        shown["components"].as_array().unwrap().iter().find(|c| c["name"] == "attestations").unwrap();
    assert!(attestations["inputs"].as_str().unwrap().starts_with("1 attesters with standing"), "{shown}");
}

#[test]
fn a_workload_without_a_trust_policy_goes_only_to_nodes_of_its_signer_or_of_the_control_plane() {
    let u = User::new();
    u.init_plain();
    let server = Server::start(&u, &u.path("data"));
    let api = Api::new(&server);
    let _controllers = Controllers::start(&u, &server);
    let agents = Agents::start(&api);
    // A stranger's node, ready and with room.
    register_node(&api, "s1", &key("operator S"), "DE");
    agents.set_alive("s1", true);
    wait_ready(&api, &["s1"]);

    // W's workload names no TrustPolicy: not on the stranger's node.
    let w = key("workload owner W");
    Api::as_key(&server, &w)
        .create(&format!("{V1}/namespaces/default/workloads"), &workload_by(&w, "mine", None));
    wait_pending(
        &api,
        "mine",
        &format!("0/1 nodes available: 1 node: operator not trusted ({NO_POLICY_HINT})"),
    );
    // W's own node takes it.
    register_node(&api, "w1", &w, "DE");
    agents.set_alive("w1", true);
    let rs = wait_bound(&api, "mine", 1, &["s1"]);
    assert_eq!(node_of(&rs[0]).as_deref(), Some("w1"));

    // V has no node: neither the stranger's nor W's will do, a member-operated one will.
    let v = key("workload owner V");
    Api::as_key(&server, &v)
        .create(&format!("{V1}/namespaces/default/workloads"), &workload_by(&v, "theirs", None));
    wait_pending(
        &api,
        "theirs",
        &format!("0/2 nodes available: 2 nodes: operator not trusted ({NO_POLICY_HINT})"),
    );
    register_node(&api, "cp1", &member_key(&server), "DE");
    agents.set_alive("cp1", true);
    let rs = wait_bound(&api, "theirs", 1, &["s1", "w1"]);
    assert_eq!(node_of(&rs[0]).as_deref(), Some("cp1"));
    let rs = wait_bound(&api, "mine", 1, &["s1"]);
    assert_eq!(node_of(&rs[0]).as_deref(), Some("w1"));
}

/// A NodeOffer for node `name` signed by `operator`, priced per core-hour (register the node
/// after: its own offer of the same name is then kept as this one).
fn priced_offer(api: &Api, name: &str, operator: &SigningKey, cpu_price: &str) {
    let offer = json!({
        "apiVersion": "univrs.io/v1", "kind": "NodeOffer", "metadata": { "name": name },
        "spec": {
            "node": name, "resources": { "cpu": "2", "memory": "4Gi" }, "jurisdiction": "DE",
            "price": { "cpu": cpu_price },
        },
    });
    api.create(&format!("{V1}/nodeoffers"), &signed(offer, operator));
}

/// A CreditGrant signed by `granter`: `grantee` may owe it up to `limit`.
fn credit_grant(granter: &SigningKey, name: &str, grantee: &str, limit: &str) -> Value {
    let g = json!({
        "apiVersion": "univrs.io/v1", "kind": "CreditGrant", "metadata": { "name": name },
        "spec": { "grantee": grantee, "limit": limit },
    });
    signed(g, granter)
}

/// The balance of `did`'s Account in micro-credits (0 before its first transfer).
fn balance(api: &Api, did: &str) -> i64 {
    let name = api::kinds::account_name(&Did::parse(did).unwrap());
    api.get(&format!("{V1}/accounts/{name}")).map(|a| micros(&a["status"]["balance"])).unwrap_or(0)
}

fn micros(v: &Value) -> i64 {
    let s = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    api::credits::Credits::parse(&s).map_or(0, |c| c.micros())
}

/// The committed Metering transfers of replica `ns/name`, summed, in micro-credits.
fn metered(api: &Api, replica: &str) -> i64 {
    api.list(&format!("{V1}/transfers"))
        .iter()
        .filter(|t| t["spec"]["reason"] == "Metering" && t["spec"]["replica"] == replica)
        .filter(|t| t["status"]["phase"] == "Committed")
        .map(|t| micros(&t["spec"]["amount"]))
        .sum()
}

const NO_CREDIT: &str = "0/1 nodes available: 1 node: owner's credit with the operator covers less than an hour \
                         (ask the operator for a CreditGrant (ui credits grant, signed by the operator), or pay it first (ui credits send))";

#[test]
fn metering_charges_price_times_time_within_the_credit_line_and_a_cut_line_stops_the_replica() {
    let u = User::new();
    let me = u.init_plain();
    let server = Server::start(&u, &u.path("data"));
    let api = Api::new(&server);
    let mut controllers = Controllers::start(&u, &server);
    let agents = Agents::start(&api);
    // 3600 credits per core-hour: the workload's 100m costs 0.1 credit a second, 360 an hour.
    let op = key("operator P");
    priced_offer(&api, "p1", &op, "3600");
    register_node(&api, "p1", &op, "DE");
    agents.set_alive("p1", true);
    wait_ready(&api, &["p1"]);
    let policy = format!(
        "apiVersion: univrs.io/v1\nkind: TrustPolicy\nmetadata:\n  name: pay\n  namespace: default\n\
         spec:\n  allowedOperators: [{}]\n",
        did(&op)
    );
    apply_signed(&u, &server, "pay.yaml", &policy);
    apply_signed(&u, &server, "m.yaml", &workload_yaml("metered", 1, "registry.example/m:1", "pay"));
    // No credit with the operator: not placed on its priced node.
    wait_pending(&api, "metered", NO_CREDIT);

    // The operator extends a line of 1000 credits: placed, and charged as it runs.
    let by_op = Api::as_key(&server, &op);
    by_op.create(&format!("{V1}/creditgrants"), &credit_grant(&op, "p-to-me", &me, "1000"));
    let rs = wait_bound(&api, "metered", 1, &[]);
    let replica = format!("default/{}", rs[0]["metadata"]["name"].as_str().unwrap());
    let started = wait_for(30, "the replica running", || {
        let r = replicas_of(&api, "metered").pop().ok_or("gone")?;
        let at = r["status"]["startedAt"].as_str().ok_or_else(|| summary(std::slice::from_ref(&r)))?;
        Ok(chrono::DateTime::parse_from_rfc3339(at).unwrap().with_timezone(&Utc))
    });
    wait_for(60, "6 seconds of the replica charged", || {
        let m = metered(&api, &replica);
        if m >= 600_000 { Ok(()) } else { Err(format!("{m} micro-credits")) }
    });
    // What the operator gained is what the user lost, and is price × time: at most the time
    // run so far, at least all but the period under way, the one before and a sweep.
    let (charged, elapsed) = (metered(&api, &replica), (Utc::now() - started).num_milliseconds());
    let (gained, lost) = (balance(&api, &did(&op)), balance(&api, &me));
    assert_eq!(gained, charged, "the operator's balance is the sum of its committed charges");
    assert_eq!(lost, -charged, "the user's balance fell by the same: the balances sum to zero");
    let rate_per_ms = 100; // micro-credits: 0.1 credit a second
    assert!(charged <= elapsed * rate_per_ms, "charged {charged} for {elapsed} ms");
    assert!(charged >= (elapsed - 6_000) * rate_per_ms, "charged {charged} for {elapsed} ms");
    wait_for(30, "the grant showing what is drawn", || {
        let grant = api.get(&format!("{V1}/creditgrants/p-to-me")).unwrap();
        let used = micros(&grant["status"]["used"]);
        if used >= charged && grant["status"]["phase"] == "Active" { Ok(()) } else { Err(grant.to_string()) }
    });

    // `ui credits balance` and `ui credits history` say the same.
    let shown = ui(&u, &server, &["credits", "balance", "-o", "json"]).ok().json();
    assert!(micros(&shown["balance"]) <= -charged, "{shown}");
    let line = &shown["lines"][0];
    assert_eq!(line["counterparty"], did(&op));
    assert_eq!(micros(&line["creditGrantedToYou"]), 1000 * 1_000_000);
    let history = ui(&u, &server, &["credits", "history", "-o", "json"]).ok().json();
    assert!(
        history.as_array().unwrap().iter().any(|e| e["reason"] == "Metering" && micros(&e["amount"]) < 0)
    );

    // The network's figures, from `ui network health` and the controllers' gauges alike.
    let health = ui(&u, &server, &["network", "health", "-o", "json"]).ok().json();
    assert_eq!(
        (health["nodesReady"].as_u64(), health["nodesTotal"].as_u64()),
        (Some(1), Some(1)),
        "{health}"
    );
    assert_eq!(health["nakamotoCoefficient"], 1);
    assert!(micros(&health["creditVolume24h"]) >= charged, "{health}");
    assert_eq!(micros(&health["balanceSum"]), 0);
    wait_for(30, "the network gauges", || {
        let m = controllers.metrics();
        let has = |line: &str| m.lines().any(|l| l == line);
        if has("univrs_network_nodes_ready 1.0") && has("univrs_network_credit_balance_sum 0.0") {
            Ok(())
        } else {
            Err(m.lines().filter(|l| l.starts_with("univrs_network")).collect::<Vec<_>>().join("\n"))
        }
    });

    // Another controller process takes over, metering in periods of 3 s instead of 2: what
    // was charged is never charged again (the charges say how far they cover), so the total
    // stays within price × time.
    controllers.kill_9();
    let controllers = Controllers::start_with(&u, &server, &["--metering-period", "3"]);
    let before = metered(&api, &replica);
    wait_for(60, "charges by the new controller", || {
        let m = metered(&api, &replica);
        if m >= before + 600_000 { Ok(()) } else { Err(format!("{m} micro-credits")) }
    });
    let (charged, elapsed) = (metered(&api, &replica), (Utc::now() - started).num_milliseconds());
    assert!(charged <= elapsed * rate_per_ms, "charged {charged} for {elapsed} ms: a period charged twice");
    assert!(charged >= (elapsed - 10_000) * rate_per_ms, "charged {charged} for {elapsed} ms");
    let _ = &controllers;

    // The operator cuts the line: the next charge is refused, the replica is stopped, and its
    // replacement waits for credit.
    assert_eq!(by_op.delete(&format!("{V1}/creditgrants/p-to-me")), 200);
    wait_for(30, "a refused charge", || {
        let refused = api
            .list(&format!("{V1}/transfers"))
            .into_iter()
            .find(|t| t["spec"]["replica"] == replica.as_str() && t["status"]["phase"] == "Refused");
        refused.map(drop).ok_or_else(|| "none yet".to_owned())
    });
    wait_pending(&api, "metered", NO_CREDIT);
    // Every balance still sums to zero.
    let sum: i64 = api.list(&format!("{V1}/accounts")).iter().map(|a| micros(&a["status"]["balance"])).sum();
    assert_eq!(sum, 0);
}

#[test]
fn a_trust_policy_s_spending_limits_stop_placement_and_running_replicas() {
    let u = User::new();
    let me = u.init_plain();
    let server = Server::start(&u, &u.path("data"));
    let api = Api::new(&server);
    let _controllers = Controllers::start(&u, &server);
    let agents = Agents::start(&api);
    let op = key("operator Q");
    priced_offer(&api, "q1", &op, "3600");
    register_node(&api, "q1", &op, "DE");
    agents.set_alive("q1", true);
    wait_ready(&api, &["q1"]);
    Api::as_key(&server, &op)
        .create(&format!("{V1}/creditgrants"), &credit_grant(&op, "q-to-me", &me, "100000"));
    let policy = |spending: &str| {
        format!(
            "apiVersion: univrs.io/v1\nkind: TrustPolicy\nmetadata:\n  name: capped\n  namespace: default\n\
             spec:\n  allowedOperators: [{}]\n  spending: {{{spending}}}\n",
            did(&op)
        )
    };
    // At most 100 credits an hour; an hour of the replica costs 360.
    apply_signed(&u, &server, "capped.yaml", &policy("maxPerHour: 100"));
    apply_signed(&u, &server, "c.yaml", &workload_yaml("capped", 1, "registry.example/c:1", "capped"));
    wait_pending(
        &api,
        "capped",
        "0/1 nodes available: 1 node: the trust policy's spending.maxPerHour would be exceeded",
    );
    // Room per hour, and at most 1.5 credits in all: placed, then stopped once it has spent
    // them (15 s at 0.1 a second), and not placed again.
    apply_signed(&u, &server, "capped.yaml", &policy("maxPerHour: 1000, maxTotal: 1.5"));
    let rs = wait_bound(&api, "capped", 1, &[]);
    let first = rs[0]["metadata"]["uid"].clone();
    let stopped = wait_for(60, "the policy's spending stopped", || {
        let p = api.get(&format!("{V1}/namespaces/default/trustpolicies/capped")).unwrap();
        let s = &p["status"]["spending"];
        if s["stopped"].is_string() { Ok(p) } else { Err(p["status"].to_string()) }
    });
    let s = &stopped["status"]["spending"];
    assert!(micros(&s["total"]) >= 1_500_000, "{s}");
    assert!(micros(&s["lastHour"]) >= 1_500_000, "{s}");
    assert!(s["stopped"].as_str().unwrap().contains("spending.maxTotal 1.5 reached"), "{s}");
    wait_pending(
        &api,
        "capped",
        "0/1 nodes available: 1 node: the trust policy's spending.maxTotal is reached",
    );
    assert_ne!(replicas_of(&api, "capped")[0]["metadata"]["uid"], first, "the running replica was stopped");
    // What was charged is what the user owes (and perhaps a charge since).
    assert!(balance(&api, &me) <= -micros(&s["total"]), "{s}");
}

/// The Reputation of node `name`.
fn node_reputation(api: &Api, name: &str) -> Value {
    api.get(&format!("{V1}/reputations/node.{name}")).unwrap_or_default()
}

fn score(r: &Value, what: &str) -> f64 {
    r["status"][what].as_f64().unwrap_or(0.0)
}

#[test]
fn a_killed_node_loses_uptime_and_reliability_and_a_reputation_floor_then_excludes_it() {
    let u = User::new();
    u.init_plain();
    let server = Server::start(&u, &u.path("data"));
    let api = Api::new(&server);
    // Evidence halves in 30 s and a score reaches half its share after 2 s of it; the composite
    // weighs uptime and reliability alone, so the test reads what it changes.
    let _controllers = Controllers::start_with(
        &u,
        &server,
        &["--reputation-half-life", "30", "--reputation-prior", "2", "--reputation-weights", "1,1,0,0,0"],
    );
    let agents = Agents::start(&api);
    let (x, y) = (key("operator X"), key("operator Y"));
    register_node(&api, "x1", &x, "DE");
    register_node(&api, "y1", &y, "DE");
    agents.set_alive("x1", true);
    agents.set_alive("y1", true);
    wait_ready(&api, &["x1", "y1"]);
    // A control-plane member vouches for both operators: without trust, being up earns a
    // composite of at most 0.2 (a fresh key's own nodes reach no floor above it).
    let member = member_key(&server);
    api.create(&format!("{V1}/attestations"), &attestation(&member, "member-vouches-x", &x));
    api.create(&format!("{V1}/attestations"), &attestation(&member, "member-vouches-y", &y));
    let policy = |name: &str, floor: &str| {
        format!(
            "apiVersion: univrs.io/v1\nkind: TrustPolicy\nmetadata:\n  name: {name}\n  namespace: default\n\
             spec:\n  allowedOperators: [{}, {}]\n{floor}",
            did(&x),
            did(&y)
        )
    };
    apply_signed(&u, &server, "both.yaml", &policy("both", ""));
    let spread = |name: &str, policy: &str| {
        format!(
            "{}  placement:\n    maxReplicasPerOperator: 1\n",
            workload_yaml(name, 2, "registry.example/s:1", policy)
        )
    };
    apply_signed(&u, &server, "steady.yaml", &spread("steady", "both"));
    wait_bound(&api, "steady", 2, &[]);

    // Heartbeats on time and replicas running earn both nodes standing.
    let before = wait_for(60, "both nodes reputed", || {
        let (rx, ry) = (node_reputation(&api, "x1"), node_reputation(&api, "y1"));
        let earned = |r: &Value| score(r, "uptime") > 0.6 && score(r, "reliability") > 0.6;
        if earned(&rx) && earned(&ry) { Ok(ry) } else { Err(format!("{rx} {ry}")) }
    });

    // y1 dies: its heartbeat lapses and its replica is stranded, then evicted.
    agents.set_alive("y1", false);
    wait_for(60, "y1's uptime and reliability falling", || {
        let ry = node_reputation(&api, "y1");
        let fell = score(&ry, "uptime") < score(&before, "uptime") - 0.2
            && score(&ry, "reliability") < score(&before, "reliability");
        if fell { Ok(()) } else { Err(ry.to_string()) }
    });
    // It comes back, Ready, but with less standing than x1.
    agents.set_alive("y1", true);
    wait_ready(&api, &["x1", "y1"]);
    let (cx, cy) =
        (score(&node_reputation(&api, "x1"), "composite"), score(&node_reputation(&api, "y1"), "composite"));
    assert!(cx > cy + 0.1, "x1 {cx} y1 {cy}");
    // A floor between them: the workload gets x1 and not y1, though y1 is Ready with room.
    let floor = (cx + cy) / 2.0;
    apply_signed(&u, &server, "floor.yaml", &policy("floor", &format!("  minReputation: {floor:.3}\n")));
    apply_signed(&u, &server, "picky.yaml", &spread("picky", "floor"));
    wait_for(30, "picky placed on x1 only", || {
        let rs = replicas_of(&api, "picky");
        let on_x = rs.iter().filter(|r| node_of(r).as_deref() == Some("x1")).count();
        let waiting = rs.iter().find(|r| node_of(r).is_none());
        let why = waiting.and_then(|r| r["status"]["message"].as_str()).unwrap_or_default();
        assert!(
            rs.iter().all(|r| node_of(r).as_deref() != Some("y1")),
            "placed under the floor: {}",
            summary(&rs)
        );
        if on_x == 1 && why.contains("1 node: reputation below the policy's floor") {
            Ok(())
        } else {
            Err(summary(&rs))
        }
    });
}

#[test]
fn ui_credits_grant_and_send_sign_with_the_user_s_key_and_a_payment_stays_within_the_line() {
    let (alice, bob) = (User::new(), User::new());
    let a = alice.init_plain();
    let b = bob.init_plain();
    let server = Server::start(&alice, &alice.path("data"));
    // Bob's own kubeconfig for the cluster: his requests are his.
    let bob_kubeconfig = server.kubeconfig_for(&bob);
    let as_bob = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--kubeconfig", bob_kubeconfig.to_str().unwrap()]);
        bob.run(&all)
    };
    // Bob lets Alice owe him up to 20.
    let granted = as_bob(&["credits", "grant", &a, "20", "--expires", "30d", "-o", "json"]).ok().json();
    assert_eq!((granted["grantee"].as_str(), granted["changed"].as_bool()), (Some(a.as_str()), Some(true)));
    // Granting the same again changes nothing (the expiry moved: it is written again).
    assert!(as_bob(&["credits", "grant", &a, "20"]).ok().stdout.contains("granted"));
    assert!(as_bob(&["credits", "grant", &a, "20"]).ok().stdout.contains("unchanged"));
    // Alice pays 15: committed; 10 more would overdraw the line: refused, exit 1, and why.
    let paid =
        ui(&alice, &server, &["credits", "send", &b, "15", "--memo", "rent", "-o", "json"]).ok().json();
    assert_eq!(paid["phase"], "Committed", "{paid}");
    let dry = ui(&alice, &server, &["credits", "send", &b, "10", "--dry-run", "-o", "json"]);
    assert_eq!(dry.json()["phase"], "Refused");
    let over = ui(&alice, &server, &["credits", "send", &b, "10"]);
    assert_eq!(over.code, 1, "{}", over.stdout);
    assert!(
        over.stdout.contains("refused") && over.stdout.contains("over the credit line"),
        "{}",
        over.stdout
    );
    // Balances on both sides; the history says what moved.
    let mine = ui(&alice, &server, &["credits", "balance", "-o", "json"]).ok().json();
    assert_eq!(micros(&mine["balance"]), -15_000_000);
    assert_eq!(micros(&mine["lines"][0]["available"]), 5_000_000, "{mine}");
    let theirs = ui(&alice, &server, &["credits", "balance", &b, "-o", "json"]).ok().json();
    assert_eq!(micros(&theirs["balance"]), 15_000_000);
    let history = as_bob(&["credits", "history", "-o", "json"]).ok().json();
    let entries = history.as_array().unwrap();
    assert_eq!(entries.len(), 2, "{history}");
    assert!(
        entries
            .iter()
            .any(|e| e["phase"] == "Committed" && micros(&e["amount"]) == 15_000_000 && e["memo"] == "rent")
    );
    // Bad input changes nothing and says what is wrong.
    ui(&alice, &server, &["credits", "send", &b, "1.1234567"]).fails_with(&["AMOUNT", "at most 6 decimals"]);
    ui(&alice, &server, &["credits", "send", "bob", "1"]).fails_with(&["\"bob\" is not a did:key"]);
    ui(&alice, &server, &["credits", "grant", &b, "5", "--expires", "yesterday"]).fails_with(&["--expires"]);
    assert_eq!(ui(&alice, &server, &["credits", "balance", "-o", "json"]).ok().json()["transfers"], 1);
}
