use api::identity::Did;
use ed25519_dalek::SigningKey;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::*;

fn did(seed: u8) -> String {
    Did::from_key(&SigningKey::from_bytes(&[seed; 32]).verifying_key()).as_str().to_owned()
}

fn obj<T: DeserializeOwned>(v: Value) -> Arc<T> {
    Arc::new(serde_json::from_value(v).unwrap())
}

fn node(name: &str, operator: &str, ready: bool) -> Arc<Kube<NodeSpec>> {
    let mut peer = vec![0x12, 0x20];
    peer.extend_from_slice(&[7; 32]);
    obj(json!({
        "apiVersion": "univrs.io/v1", "kind": "Node", "metadata": { "name": name, "uid": format!("uid-{name}") },
        "spec": {
            "peerId": bs58::encode(peer).into_string(), "operator": operator, "nodeKey": did(99),
            "ageRecipient": format!("age1{}", "q".repeat(58)),
            "capacity": { "cpu": "4", "memory": "8Gi", "storage": "10Gi" },
        },
        "status": {
            "conditions": [{
                "type": "Ready", "status": if ready { "True" } else { "False" },
                "reason": if ready { "Heartbeat" } else { "HeartbeatLapsed" },
                "lastTransitionTime": "2026-01-01T00:00:10Z",
            }],
            "runtime": "process",
        },
    }))
}

fn offer(node: &str, signer: &str, jurisdiction: &str) -> Arc<Kube<NodeOfferSpec>> {
    obj(json!({
        "apiVersion": "univrs.io/v1", "kind": "NodeOffer",
        "metadata": { "name": format!("{node}-offer"), "annotations": { "univrs.io/signer": signer } },
        "spec": {
            "node": node, "resources": { "cpu": "2", "memory": "4Gi" }, "jurisdiction": jurisdiction,
            "price": { "cpu": "0.5" },
        },
    }))
}

fn workload(name: &str, uid: &str, signer: &str, replicas: i32) -> Arc<Kube<WorkloadSpec>> {
    obj(json!({
        "apiVersion": "univrs.io/v1", "kind": "Workload",
        "metadata": { "name": name, "namespace": "default", "uid": uid, "annotations": { "univrs.io/signer": signer } },
        "spec": {
            "replicas": replicas, "rootfs": "busybox", "command": ["sleep", "600"],
            "env": [{ "name": "PASSWORD", "value": "s3cret-value" }],
        },
        "status": {
            "replicas": replicas, "readyReplicas": 1,
            "conditions": [{
                "type": "Available", "status": "False", "reason": "ReplicasNotReady",
                "message": format!("1/{replicas} replicas running"), "lastTransitionTime": "2026-01-01T00:00:20Z",
            }],
        },
    }))
}

fn replica(name: &str, owner_uid: &str, node: Option<&str>, status: Value) -> Arc<Kube<ReplicaSpec>> {
    let mut spec =
        json!({ "workload": "web", "container": { "resources": { "cpu": "500m", "memory": "256Mi" } } });
    if let Some(n) = node {
        spec["nodeName"] = json!(n);
        spec["nodeUid"] = json!(format!("uid-{n}"));
    }
    obj(json!({
        "apiVersion": "univrs.io/v1", "kind": "Replica",
        "metadata": {
            "name": name, "namespace": "default", "uid": format!("uid-{name}"),
            "ownerReferences": [{ "apiVersion": "univrs.io/v1", "kind": "Workload", "name": "web", "uid": owner_uid }],
        },
        "spec": spec,
        "status": status,
    }))
}

fn policy(name: &str, signer: &str, spec: Value) -> Arc<Kube<TrustPolicySpec>> {
    obj(json!({
        "apiVersion": "univrs.io/v1", "kind": "TrustPolicy",
        "metadata": { "name": name, "namespace": "default", "annotations": { "univrs.io/signer": signer } },
        "spec": spec,
    }))
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn view_of(objects: &Objects, members: &MembersRead, me: &str) -> View {
    view(&Input {
        objects,
        members,
        sources: &[],
        me: Some(me),
        server: "https://127.0.0.1:6443",
        namespace: None,
        last_change: Some(at("2026-01-01T00:01:00Z")),
        now: at("2026-01-01T00:02:00Z"),
    })
}

fn web_cluster(me: &str, op: &str) -> Objects {
    Objects {
        workloads: vec![workload("web", "w1", me, 3), workload("other", "w2", &did(7), 1)],
        replicas: vec![
            replica(
                "web-a-0",
                "w1",
                Some("n1"),
                json!({ "phase": "Running", "startedAt": "2026-01-01T00:00:30Z", "restarts": 2 }),
            ),
            replica(
                "web-a-1",
                "w1",
                None,
                json!({
                    "phase": "Pending", "reason": "Unschedulable",
                    "message": "0/2 nodes available: 1 node: jurisdiction not allowed; 1 node: node not ready",
                }),
            ),
            replica("web-a-2", "w1", Some("n1"), json!({ "phase": "Pending" })),
            // Another workload's: not web's, though its spec names web.
            replica("stray-0", "w-gone", Some("n1"), json!({ "phase": "Running" })),
        ],
        nodes: vec![node("n2", op, false), node("n1", op, true)],
        offers: vec![offer("n1", op, "DE"), offer("n2", op, "FR"), offer("n1", &did(8), "US")],
        ..Objects::default()
    }
}

#[test]
fn a_workload_shows_its_own_replicas_their_phases_readiness_and_why_one_is_pending() {
    let (me, op) = (did(1), did(2));
    let v = view_of(&web_cluster(&me, &op), &None, &me);
    // The user's own first.
    assert_eq!(v.workloads.iter().map(|w| w.name.as_str()).collect::<Vec<_>>(), ["web", "other"]);
    let web = &v.workloads[0];
    assert!(web.mine && !v.workloads[1].mine);
    assert_eq!((web.desired, web.replicas, web.ready), (3, 3, 1));
    assert_eq!(web.image.as_deref(), Some("busybox"));
    let phases: Vec<_> = web.items.iter().map(|r| (r.name.as_str(), r.phase, r.ready)).collect();
    assert_eq!(
        phases,
        [
            ("web-a-0", ReplicaPhase::Running, true),
            ("web-a-1", ReplicaPhase::Pending, false),
            ("web-a-2", ReplicaPhase::Pending, false)
        ]
    );
    assert_eq!(web.items[0].why_pending, None);
    assert_eq!(web.items[0].restarts, 2);
    // The scheduler's own words for an unbound one; what a bound one waits for.
    assert_eq!(
        web.items[1].why_pending.as_deref(),
        Some("0/2 nodes available: 1 node: jurisdiction not allowed; 1 node: node not ready")
    );
    assert_eq!(web.items[2].why_pending.as_deref(), Some("bound to n1, waiting for its agent to start it"));
    assert!(web.why_pending.as_deref().unwrap().starts_with("web-a-1: 0/2 nodes available"));
    assert!(web.conditions[0].bad, "Available=False is a problem");
    assert_eq!(v.summary.running, 1);
    assert_eq!(v.summary.pending, 2);
    assert_eq!(v.summary.desired, 4);
}

#[test]
fn nodes_show_the_operator_s_offer_capacity_usage_and_reputation() {
    let (me, op) = (did(1), did(2));
    let mut objects = web_cluster(&me, &op);
    objects.reputations = vec![obj(json!({
        "apiVersion": "univrs.io/v1", "kind": "Reputation", "metadata": { "name": "node-n1" },
        "spec": { "subjectKind": "Node", "subject": "n1" },
        "status": { "composite": 0.75, "uptime": 1.0, "reliability": 0.5 },
    }))];
    let v = view_of(&objects, &None, &me);
    let n1 = &v.nodes[0];
    assert_eq!(n1.name, "n1");
    assert!(n1.ready);
    // Only the offer signed by the node's operator counts.
    let offer = n1.offer.as_ref().unwrap();
    assert_eq!((offer.jurisdiction.as_str(), offer.price.cpu.as_str()), ("DE", "0.5"));
    assert!(!offer.price.free);
    assert_eq!(n1.capacity.cpu, "4 cores");
    assert_eq!(n1.capacity.memory, "8 GiB");
    // The offer's 2 cores and 4Gi, within the node's 4 cores and 8Gi.
    assert_eq!((n1.offered.cpu_millicores, n1.offered.memory_bytes), (2000, 4 << 30));
    // Three unfinished replicas bound to n1 (web-a-0, web-a-2 and the stray), 500m each.
    assert_eq!(n1.replicas, 3);
    assert_eq!(n1.used.cpu, "1.50 cores");
    assert_eq!(n1.used.memory, "768 MiB");
    assert_eq!(n1.reputation.as_ref().unwrap().composite, 0.75);
    assert!(n1.operator_reputation.is_none());
    assert!(!v.nodes[1].ready);
    assert_eq!(v.nodes[1].ready_message.as_deref(), Some("HeartbeatLapsed"));
    assert_eq!((v.summary.nodes, v.summary.nodes_ready), (2, 1));
}

#[test]
fn a_policy_admits_the_nodes_the_scheduler_s_filters_accept() {
    let (me, op, other) = (did(1), did(2), did(3));
    let mut objects = web_cluster(&me, &op);
    objects.nodes.push(node("n3", &other, true));
    objects.offers.push(offer("n3", &other, "DE"));
    objects.policies = vec![
        policy("eu", &me, json!({ "allowedJurisdictions": ["DE"], "allowedOperators": [op] })),
        policy("open", &me, json!({})),
        policy("vouched", &me, json!({ "requiredAttestations": 1 })),
    ];
    let mut w = (*workload("api", "w3", &me, 1)).clone();
    w.spec.trust_policy = Some("eu".into());
    objects.workloads.push(Arc::new(w));
    let v = view_of(&objects, &None, &me);
    let eu = &v.policies[0];
    assert_eq!(eu.name, "eu");
    assert_eq!((eu.admitted, eu.considered), (1, 3));
    assert_eq!(eu.admits, ["n1"]);
    // Counted per reason, not listed per node.
    assert_eq!(
        eu.rejected,
        [
            Rejected { reason: "node not ready".into(), count: 1 },
            Rejected { reason: "operator not allowed".into(), count: 1 },
        ]
    );
    assert_eq!(eu.workloads, ["api"]);
    assert!(eu.constraints.iter().any(|c| c == "jurisdictions: DE"), "{:?}", eu.constraints);
    assert_eq!(v.policies[1].admits, ["n1", "n3"]);
    assert_eq!(v.policies[1].constraints, ["no constraints"]);
    // Nobody with standing attests anyone: no node.
    assert!(v.policies[2].admits.is_empty());
    assert_eq!(
        v.policies[2].rejected,
        [
            Rejected { reason: "too few attestations with standing".into(), count: 2 },
            Rejected { reason: "node not ready".into(), count: 1 },
        ]
    );
}

/// `n` ready nodes of strangers, each with an offer in DE, and `p` policies of strangers (half
/// of them admitting DE), with a long list of allowed operators each.
fn crowd(n: usize, p: usize) -> Objects {
    let op = did(2);
    let mut o = Objects::default();
    for i in 0..n {
        let name = format!("stranger-node-{i:05}");
        o.nodes.push(node(&name, &op, true));
        o.offers.push(offer(&name, &op, "DE"));
    }
    for i in 0..p {
        let jurisdiction = if i % 2 == 0 { "DE" } else { "FR" };
        let operators: Vec<String> = (0..40).map(|k| did(100 + k)).chain([op.clone()]).collect();
        o.policies.push(policy(
            &format!("stranger-policy-{i:03}"),
            &did(3),
            json!({ "allowedJurisdictions": [jurisdiction], "allowedOperators": operators }),
        ));
    }
    o
}

#[test]
fn the_view_stays_small_whatever_strangers_make() {
    let me = did(1);
    let mut objects = crowd(3_000, 100);
    // One node and one policy of the user's, named last: listed first all the same.
    objects.nodes.push(node("zz-mine", &me, true));
    objects.offers.push(offer("zz-mine", &me, "DE"));
    objects.policies.push(policy("zz-mine", &me, json!({ "allowedJurisdictions": ["DE"] })));
    let started = std::time::Instant::now();
    let v = view_of(&objects, &None, &me);
    let took = started.elapsed();
    let json = serde_json::to_string(&v).unwrap();
    // 3,001 nodes × 101 policies would be 300,000 entries named one by one.
    assert!(json.len() < 600_000, "{} bytes", json.len());
    println!("{} bytes in {took:?}", json.len());
    assert_eq!(v.summary.nodes, 3_001);
    assert_eq!((v.nodes.len(), v.more.nodes), (MAX_SHOWN, 3_001 - MAX_SHOWN));
    assert_eq!(v.nodes[0].name, "zz-mine");
    assert_eq!((v.policies.len(), v.more.policies), (101, 0));
    let mine = &v.policies[0];
    assert_eq!(mine.name, "zz-mine");
    assert_eq!((mine.admitted, mine.considered), (3_001, 3_001));
    assert_eq!(mine.admits.len(), MAX_ADMITS_NAMED);
    assert_eq!(mine.admits[0], "zz-mine", "the user's own node first");
    let de = &v.policies[1];
    assert_eq!(de.admitted, 3_000);
    assert_eq!(de.rejected, [Rejected { reason: "operator not allowed".into(), count: 1 }]);
    let fr = &v.policies[2];
    assert_eq!(fr.admitted, 0);
    assert_eq!(fr.rejected.iter().map(|r| r.count).sum::<usize>(), 3_001);
    assert!(de.constraints[0].ends_with(" and 36 more"), "{:?}", de.constraints);
    // More policies than are shown: the user's first, the rest counted.
    let many = crowd(10, MAX_SHOWN + 50);
    let v = view_of(&many, &None, &me);
    assert_eq!((v.policies.len(), v.more.policies), (MAX_SHOWN, 50));
}

#[test]
fn a_section_is_listed_once_each_kind_it_is_made_of_is() {
    let source = |kind: &'static str, listed: bool| Source {
        kind,
        state: if listed { SourceState::Watching } else { SourceState::Listing },
        error: None,
        listed,
    };
    let kinds = [
        "workloads",
        "replicas",
        "nodes",
        "nodeoffers",
        "trustpolicies",
        "reputations",
        "attestations",
        "accounts",
        "creditgrants",
        "auditevents",
    ];
    let input = |sources: &[Source]| listed(sources);
    assert_eq!(input(&[]), Listed::default());
    let all: Vec<Source> = kinds.iter().map(|k| source(k, true)).collect();
    let every = Listed {
        workloads: true,
        nodes: true,
        policies: true,
        credits: true,
        reputations: true,
        events: true,
    };
    assert_eq!(input(&all), every);
    let mut some = all.clone();
    some[2] = source("nodes", false);
    let l = input(&some);
    assert!(l.workloads && l.credits && l.reputations);
    assert!(!l.nodes && !l.policies && !l.events);
}

#[test]
fn members_come_with_their_leader_and_a_failed_read_says_why() {
    let answer = json!({ "self": 1, "members": [
        { "id": 1, "did": "did:key:a", "address": "127.0.0.1:1", "api": "https://127.0.0.1:2", "role": "voter", "leader": true,
          "status": { "id": 1, "state": "Leader", "leader": 1, "term": 3, "last_applied": 42 } },
        { "id": 2, "did": "did:key:b", "address": "127.0.0.1:3", "api": "", "role": "learner", "leader": false, "status": null },
        { "did": "no id: not a member" },
    ]});
    let members = members_of(&answer);
    assert_eq!(members.len(), 2);
    assert_eq!((members[0].state.as_str(), members[0].last_applied), ("Leader", Some(42)));
    assert_eq!(members[1].state, "Unreachable");
    let dids = member_dids(&json!({ "members": ["did:key:a", "did:key:b", 3] }));
    assert_eq!(dids.len(), 2);
    let read: MembersRead =
        Some(Ok(MembersSeen { items: members, dids, read_at: at("2026-01-01T00:01:30Z") }));
    let v = view_of(&Objects::default(), &read, "did:key:me");
    assert_eq!(v.members.leader, Some(1));
    assert_eq!(v.summary.members, 2);
    let failed: MembersRead = Some(Err("forbidden".into()));
    assert_eq!(view_of(&Objects::default(), &failed, "x").members.error.as_deref(), Some("forbidden"));
}

#[test]
fn events_are_the_objects_recorded_transitions_the_user_s_first_one_per_object_and_bounded() {
    let (me, op) = (did(1), did(2));
    let mut objects = web_cluster(&me, &op);
    // A stranger's node dated next year: dropped. Another with two transitions: its newest.
    let mut future = (*node("from-the-future", &op, true)).clone();
    future.status.as_mut().unwrap().conditions[0].last_transition_time =
        Some(Time(at("2027-01-01T00:00:00Z")));
    objects.nodes.push(Arc::new(future));
    let mut twice = (*node("twice", &op, true)).clone();
    let mut older = twice.status.as_ref().unwrap().conditions[0].clone();
    older.last_transition_time = Some(Time(at("2026-01-01T00:00:05Z")));
    older.reason = Some("Older".into());
    twice.status.as_mut().unwrap().conditions.push(older);
    objects.nodes.push(Arc::new(twice));
    let v = view_of(&objects, &None, &me);
    let seen: Vec<_> = v
        .events
        .iter()
        .map(|e| (e.time.as_str(), e.kind, e.object.as_str(), e.reason.as_str(), e.warning, e.mine))
        .collect();
    assert_eq!(
        seen,
        [
            // The user's: web and its replica.
            ("2026-01-01T00:00:30Z", "Replica", "default/web-a-0", "Started", false, true),
            ("2026-01-01T00:00:20Z", "Workload", "default/web", "ReplicasNotReady", true, true),
            // The others'.
            ("2026-01-01T00:00:20Z", "Workload", "default/other", "ReplicasNotReady", true, false),
            ("2026-01-01T00:00:10Z", "Node", "n1", "Heartbeat", false, false),
            ("2026-01-01T00:00:10Z", "Node", "n2", "HeartbeatLapsed", true, false),
            ("2026-01-01T00:00:10Z", "Node", "twice", "Heartbeat", false, false),
        ]
    );
    let many = Objects {
        nodes: (0..200).map(|i| node(&format!("n{i}"), &op, true)).collect(),
        ..Objects::default()
    };
    assert_eq!(view_of(&many, &None, &me).events.len(), MAX_EVENTS);
    // Many strangers' events do not push out the user's own.
    let mut crowded = many.clone();
    crowded.nodes.push(node("mine", &me, true));
    let mut old = (*crowded.nodes.last().unwrap()).as_ref().clone();
    old.status.as_mut().unwrap().conditions[0].last_transition_time = Some(Time(at("2025-01-01T00:00:00Z")));
    *crowded.nodes.last_mut().unwrap() = Arc::new(old);
    let events = view_of(&crowded, &None, &me).events;
    assert_eq!((events[0].object.as_str(), events[0].mine), ("mine", true));
}

#[test]
fn the_view_never_carries_env_values() {
    let (me, op) = (did(1), did(2));
    let text = serde_json::to_string(&view_of(&web_cluster(&me, &op), &None, &me)).unwrap();
    assert!(!text.contains("s3cret-value"));
    assert!(!text.contains("PASSWORD"));
}

#[test]
fn amounts_read_as_people_write_them() {
    assert_eq!(cores(0), "0");
    assert_eq!(cores(250), "250m");
    assert_eq!(cores(2000), "2 cores");
    assert_eq!(cores(1500), "1.50 cores");
    assert_eq!(bytes(100), "100 B");
    assert_eq!(bytes(512 << 20), "512 MiB");
    assert_eq!(bytes(3 << 29), "1.5 GiB");
    assert_eq!(bytes(u64::MAX), "16 EiB");
}
