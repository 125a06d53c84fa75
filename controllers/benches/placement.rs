//! Placements per second: 10,000 replicas of 100 workloads under 10 trust policies onto 1,000
//! nodes of 100 operators in 8 jurisdictions, each operator attested by a few operators and by
//! 200 fresh keys (which count for nothing, and must cost nothing either). Prints two figures:
//!
//! - `core`: `scheduler::core::place` alone, the snapshot kept up to date incrementally;
//! - `decision`: what the scheduler does per replica before its bind request: the candidates
//!   (built once from the cached objects, as the scheduler reuses them until a node, offer,
//!   reputation or attestation changes) with the usage the replica watch keeps, then place;
//!   each placement then comes back as a watch event.
//!
//! Run with `cargo bench -p controllers --bench placement`.

use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use api::identity::Did;
use api::kinds::{AttestationSpec, NodeOfferSpec, NodeSpec, ReplicaSpec};
use chrono::Utc;
use client::Kube;
use controllers::scheduler::core::{
    self, Amount, Attesters, Candidate, Constraints, Offer, Policy, Request, Weights,
};
use controllers::scheduler::snapshot::{Ask, Objects, Topology, Usage};
use ed25519_dalek::SigningKey;
use kube::runtime::watcher::Event;
use serde_json::json;

const NODES: usize = 1_000;
const OPERATORS: usize = 100;
const REPLICAS: usize = 10_000;
const WORKLOADS: usize = 100;
const JURISDICTIONS: [&str; 8] = ["DE", "FR", "NL", "SE", "CH", "US", "CA", "JP"];

fn operator(i: usize) -> String {
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
    Did::from_key(&SigningKey::from_bytes(&seed).verifying_key()).as_str().to_owned()
}

fn policies(ops: &[String]) -> Vec<Policy> {
    (0..10)
        .map(|p| Policy {
            min_reputation: (p % 3 == 0).then_some(0.3),
            allowed_operators: if p == 9 { ops[..50].iter().cloned().collect() } else { Default::default() },
            denied_operators: ops.iter().skip(p).step_by(10).cloned().collect(),
            required_attestations: (p % 4) as u32,
            allowed_jurisdictions: JURISDICTIONS.iter().take(3 + p % 6).map(|j| (*j).to_owned()).collect(),
            ..Policy::default()
        })
        .collect()
}

fn main() {
    let ops: Vec<String> = (0..OPERATORS).map(operator).collect();
    let policies = policies(&ops);
    let constraints = Constraints { max_per_operator: Some(5), ..Constraints::default() };
    let need = Amount { cpu: 100, memory: 256 << 20, storage: 0 };
    let reputation = |i: usize| (i * 37 % 100) as f64 / 100.0;
    let fresh: Vec<String> = (0..200).map(|k| format!("did:key:fresh{k}")).collect();
    // Operator o is attested by the o % 5 operators after it (the first of them a member when
    // o % 10 == 0) and by the fresh keys.
    let attesters: Vec<Arc<Attesters>> = (0..OPERATORS)
        .map(|o| {
            let vouching: Vec<usize> = (1..=o % 5).map(|k| (o + k) % OPERATORS).collect();
            let member = |d: &str| o % 10 == 0 && vouching.first().is_some_and(|&v| ops[v] == d);
            let rep = |d: &str| ops.iter().position(|op| op == d).map_or(0.0, reputation);
            let dids = vouching.iter().map(|&v| ops[v].as_str()).chain(fresh.iter().map(String::as_str));
            Arc::new(Attesters::new(dids, member, rep))
        })
        .collect();

    // 1. The core alone.
    let mut nodes: Vec<Candidate> = (0..NODES)
        .map(|i| Candidate {
            name: format!("node-{i:04}"),
            uid: format!("uid-{i:04}"),
            operator: ops[i % OPERATORS].clone(),
            operator_is_member: false,
            ready: i % 50 != 0,
            unschedulable: false,
            offer: Some(Offer {
                jurisdiction: JURISDICTIONS[i % 8].to_owned(),
                labels: BTreeMap::new(),
                rates: Default::default(),
                host_ports: (30_000, 32_767),
            }),
            capacity: Amount { cpu: 16_000, memory: 64 << 30, storage: 0 },
            used: Amount::default(),
            node_reputation: reputation(i),
            operator_reputation: reputation(i % OPERATORS + 1),
            attesters: attesters[i % OPERATORS].clone(),
            ports_taken: Default::default(),
        })
        .collect();
    let mut per_workload: Vec<HashMap<String, u32>> = vec![HashMap::new(); WORKLOADS];
    let (mut placed, mut unschedulable) = (0, 0);
    let money = core::Money::default();
    let start = Instant::now();
    for r in 0..REPLICAS {
        let w = r % WORKLOADS;
        let request = Request {
            need,
            policy: Some(&policies[w % 10]),
            signer: None,
            constraints: &constraints,
            per_operator: &per_workload[w],
            money: &money,
            avoid: &std::collections::BTreeSet::new(),
        };
        match core::place(&nodes, &request, &Weights::default()) {
            Ok(i) => {
                nodes[i].used = nodes[i].used.plus(need);
                *per_workload[w].entry(nodes[i].operator.clone()).or_default() += 1;
                placed += 1;
            }
            Err(why) => {
                black_box(why.to_string());
                unschedulable += 1;
            }
        }
    }
    let took = start.elapsed();
    println!(
        "core:     {REPLICAS} replicas onto {NODES} nodes in {took:.2?}: {:.0} placements/s ({placed} placed, {unschedulable} unschedulable)",
        REPLICAS as f64 / took.as_secs_f64()
    );
    // Every placement respected its policy (a spot check of the invariant the property test proves).
    for c in &nodes {
        assert!(c.used.cpu <= c.capacity.cpu && c.used.memory <= c.capacity.memory);
    }

    // 2. Per decision, as the scheduler does it: candidates rebuilt from the cached objects.
    let mut peer = vec![0x12, 0x20];
    peer.extend_from_slice(&[7; 32]);
    let peer = bs58::encode(peer).into_string();
    let node_objects: Vec<Arc<Kube<NodeSpec>>> = (0..NODES)
        .map(|i| {
            Arc::new(
                serde_json::from_value(json!({
                    "apiVersion": "univrs.io/v1", "kind": "Node", "metadata": { "name": format!("node-{i:04}") },
                    "spec": { "peerId": peer, "operator": ops[i % OPERATORS], "nodeKey": ops[0],
                              "ageRecipient": format!("age1{}", "q".repeat(58)),
                              "capacity": { "cpu": "16", "memory": "64Gi" } },
                    "status": { "conditions": [{ "type": "Ready", "status": if i % 50 != 0 { "True" } else { "False" } }] },
                }))
                .unwrap(),
            )
        })
        .collect();
    let offer_objects: Vec<Arc<Kube<NodeOfferSpec>>> = (0..NODES)
        .map(|i| {
            Arc::new(
                serde_json::from_value(json!({
                    "apiVersion": "univrs.io/v1", "kind": "NodeOffer",
                    "metadata": { "name": format!("node-{i:04}"), "annotations": { "univrs.io/signer": ops[i % OPERATORS] } },
                    "spec": { "node": format!("node-{i:04}"), "resources": { "cpu": "16", "memory": "64Gi" },
                              "jurisdiction": JURISDICTIONS[i % 8] },
                }))
                .unwrap(),
            )
        })
        .collect();
    let attestation_objects: Vec<Arc<Kube<AttestationSpec>>> = (0..OPERATORS)
        .flat_map(|o| {
            let vouching: Vec<&str> = (1..=o % 5).map(|k| ops[(o + k) % OPERATORS].as_str()).collect();
            let by: Vec<String> =
                vouching.into_iter().map(str::to_owned).chain(fresh.iter().cloned()).collect();
            by.into_iter().enumerate().map(move |(k, signer)| (o, k, signer))
        })
        .map(|(o, k, signer)| {
            Arc::new(
                serde_json::from_value(json!({
                    "apiVersion": "univrs.io/v1", "kind": "Attestation",
                    "metadata": { "name": format!("a-{o}-{k}"), "annotations": { "univrs.io/signer": signer } },
                    "spec": { "subjectKind": "Operator", "subject": ops[o] },
                }))
                .unwrap(),
            )
        })
        .collect();
    let objects = Objects {
        nodes: node_objects,
        offers: offer_objects,
        attestations: attestation_objects,
        members: Arc::new([ops[1].clone()].into()),
        ..Objects::default()
    };
    let replica = |name: &str, workload: &str, node: &str| -> Kube<ReplicaSpec> {
        serde_json::from_value(json!({
            "apiVersion": "univrs.io/v1", "kind": "Replica",
            "metadata": { "name": name, "namespace": "default", "uid": name },
            "spec": { "workload": workload, "nodeName": node, "container": { "image": "x", "resources": { "cpu": "100m", "memory": "256Mi" } } },
        }))
        .unwrap()
    };
    let start = Instant::now();
    let mut topology = Topology::build(&objects, Utc::now());
    let built = start.elapsed();
    let mut usage = Usage::default();
    let start = Instant::now();
    let available = HashMap::new();
    for r in 0..REPLICAS {
        let w = r % WORKLOADS;
        let workload = format!("w{w}");
        let ask = Ask {
            workload: ("default", &workload),
            need,
            policy: Some(&policies[w % 10]),
            signer: None,
            constraints: &constraints,
            available: &available,
            spent: 0,
            under_policy: &[],
            avoid: &std::collections::BTreeSet::new(),
        };
        if let Ok(placed) = topology.place(&usage, [].iter(), &ask, &Weights::default()) {
            // What the replica watch then reports.
            usage.apply(&Event::Apply(replica(&format!("r{r}"), &workload, &placed.node)));
        }
    }
    let took = start.elapsed();
    println!(
        "decision: {REPLICAS} replicas onto {NODES} nodes in {took:.2?}: {:.0} placements/s (usage from the replica watch, candidates built once from the cache in {built:.2?})",
        REPLICAS as f64 / took.as_secs_f64()
    );
}
