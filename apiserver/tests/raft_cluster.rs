//! Real members of one cluster in one process, on temp dirs, talking over the real libp2p
//! transport on loopback: joining (learner → voter), catching up by log and by snapshot,
//! forwarding writes, read index on followers, failover, large entries, and the transport
//! refusing peers that are not members, members that speak for another, and frames over the
//! limit.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use apiserver::raft::rpc::{MAX_ENTRY_BYTES, MAX_REQUEST_BYTES, Reply, Rpc};
use apiserver::raft::transport::{Limits, Transport, TransportError, peer_id};
use apiserver::raft::{
    Expect, JoinTarget, MemberConfig, Op, Options, Outcome, RaftNode, Request, WriteError, member_id,
};
use ed25519_dalek::SigningKey;

fn put(key: &str, value: &str) -> Request {
    Request {
        batch: Vec::new(),
        ops: vec![Op::Put { key: key.into(), value: value.into(), expect: Expect::Any }],
    }
}

fn options() -> Options {
    Options { snapshot_every: 40, keep_behind_snapshot: 5, ..Options::default() }
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

struct Spec {
    key: SigningKey,
    addr: SocketAddr,
}

impl Spec {
    fn new() -> Self {
        Self { key: SigningKey::generate(&mut rand_core::OsRng), addr: free_addr() }
    }

    fn did(&self) -> String {
        api::identity::Did::from_key(&self.key.verifying_key()).as_str().to_owned()
    }

    fn target(&self) -> JoinTarget {
        JoinTarget { did: self.did(), addr: self.addr.to_string() }
    }

    async fn start(&self, dir: &Path, join: Option<JoinTarget>) -> RaftNode {
        let config = MemberConfig {
            key: self.key.clone(),
            listen: self.addr,
            advertise: None,
            api: format!("https://{}", self.addr),
            join,
            bootstrap: b"cluster-bootstrap".to_vec(),
        };
        let (node, joined) = RaftNode::start_member(dir, options(), config).await.expect("member starts");
        if let Some(b) = joined {
            assert_eq!(b, b"cluster-bootstrap", "a joiner gets the cluster's bootstrap");
        }
        node
    }
}

async fn wait_for(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Founds a cluster on the first spec and joins the others, one at a time.
async fn cluster(specs: &[Spec], dirs: &[tempfile::TempDir]) -> Vec<RaftNode> {
    let mut nodes = vec![specs[0].start(dirs[0].path(), None).await];
    for (spec, dir) in specs.iter().zip(dirs).skip(1) {
        let id = nodes[0].add_member(&spec.did(), &spec.addr.to_string(), "https://x").await.expect("add");
        assert_eq!(id, member_id(&spec.did()));
        nodes.push(spec.start(dir.path(), Some(specs[0].target())).await);
    }
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_members_join_forward_writes_and_serve_linearizable_reads_on_followers() {
    let specs: Vec<Spec> = (0..3).map(|_| Spec::new()).collect();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    // Writes before the others join: they catch up by snapshot (the log behind it is purged).
    let first = specs[0].start(dirs[0].path(), None).await;
    for i in 0..100 {
        first.write(put(&format!("/k/{i:03}"), "before")).await.unwrap();
    }
    first.snapshot().await.unwrap();
    assert!(first.first_log_index() > 1, "the log was compacted");
    let mut nodes = vec![first];
    for (spec, dir) in specs.iter().zip(&dirs).skip(1) {
        nodes[0].add_member(&spec.did(), &spec.addr.to_string(), "https://x").await.unwrap();
        nodes.push(spec.start(dir.path(), Some(specs[0].target())).await);
    }

    let members = nodes[1].members().await;
    assert_eq!(members.len(), 3, "{members:?}");
    assert!(members.iter().all(|m| m.role == "voter"), "{members:?}");
    assert_eq!(members.iter().filter(|m| m.leader).count(), 1, "{members:?}");
    assert!(members.iter().all(|m| m.status.is_some()), "every member answers: {members:?}");

    // A write on a follower is forwarded and acknowledged with the leader's revision; a
    // linearizable read on another follower sees it right after.
    let leader = nodes.iter().position(|n| n.status().leader == Some(n.id())).unwrap();
    let followers: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let r = nodes[followers[0]].write(put("/k/forwarded", "yes")).await.unwrap();
    assert!(matches!(r.outcome, Outcome::Applied { .. }), "{r:?}");
    for i in 0..20 {
        let key = format!("/k/follow/{i}");
        let r = nodes[followers[i % 2]].write(put(&key, "v")).await.unwrap();
        let reader = &nodes[followers[(i + 1) % 2]];
        reader.read_barrier().await.unwrap();
        let got = reader.state().get(&key).unwrap().expect("a read after an acknowledged write sees it");
        assert_eq!(got.mod_revision, r.revision);
    }
    // Everyone holds the same keys at the same revisions, including those from the snapshot.
    let (reference, rev) = nodes[leader].state().list("/k/").unwrap();
    assert_eq!(reference.len(), 121);
    for n in &nodes {
        wait_for("every member applies everything", async || n.state().applied_revision().unwrap() >= rev)
            .await;
        assert_eq!(n.state().list("/k/").unwrap().0, reference);
    }

    // Watches read the change history: every member holds the same changes in the same order
    // (from the first write after all had joined).
    let since = r.revision - 1;
    let history = |n: &RaftNode| n.state().changes_after(since, 100_000).unwrap().unwrap().changes;
    let leader_history = history(&nodes[leader]);
    assert_eq!(leader_history.len(), 21);
    for n in &nodes {
        assert_eq!(
            history(n),
            leader_history,
            "a watch on any member sees the same events in the same order"
        );
    }

    // The leader stops: the others elect a new one and keep taking writes.
    nodes[leader].shutdown().await;
    let survivor = &nodes[followers[0]];
    wait_for("a new leader", async || {
        let s = survivor.status();
        s.leader.is_some() && s.leader != Some(nodes[leader].id())
    })
    .await;
    survivor.write(put("/k/after", "failover")).await.unwrap();
    nodes[followers[1]].read_barrier().await.unwrap();
    assert!(nodes[followers[1]].state().get("/k/after").unwrap().is_some());
    for n in &nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writes_on_a_follower_go_to_the_leader_together_and_each_gets_its_own_answer() {
    let specs: Vec<Spec> = (0..3).map(|_| Spec::new()).collect();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes = std::sync::Arc::new(cluster(&specs, &dirs).await);
    let leader = nodes.iter().position(|n| n.status().leader == Some(n.id())).unwrap();
    let follower = (leader + 1) % 3;
    let forwarded = || {
        let text = apiserver::metrics::metrics().encode();
        let value = |name: &str| -> u64 {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
                .unwrap_or_else(|| panic!("{name} in\n{text}"))
        };
        (value("univrs_raft_forwarded_writes_total"), value("univrs_raft_forward_messages_total"))
    };
    let (writes_before, messages_before) = forwarded();
    // 200 writes of their own keys and 20 creates of one key, all at once on the follower.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..220 {
        let nodes = nodes.clone();
        tasks.spawn(async move {
            let (key, request) = if i < 200 {
                let key = format!("/k/many/{i:03}");
                (key.clone(), put(&key, &format!("v{i}")))
            } else {
                let key = "/k/once".to_owned();
                let create =
                    Op::Put { key: key.clone(), value: format!("c{i}").into(), expect: Expect::Absent };
                (key, Request::new(vec![create]))
            };
            (i, key, nodes[follower].write(request).await)
        });
    }
    let mut revisions = std::collections::BTreeSet::new();
    let mut created = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let (i, key, written) = done.unwrap();
        let r = written.unwrap_or_else(|e| panic!("write {i} on {key}: {e}"));
        assert!(revisions.insert(r.revision), "revision {} answered twice", r.revision);
        match r.outcome {
            Outcome::Applied { .. } => {
                nodes[leader].read_barrier().await.unwrap();
                let stored = nodes[leader].state().get(&key).unwrap().unwrap();
                assert_eq!(stored.mod_revision, r.revision, "write {i}: its answer is its own");
                if i < 200 {
                    assert_eq!(stored.value, format!("v{i}"));
                } else {
                    created.push(i);
                }
            }
            Outcome::PreconditionFailed { .. } => assert!(i >= 200, "write {i} of its own key refused"),
            other => panic!("write {i}: {other:?}"),
        }
    }
    assert_eq!(created.len(), 1, "exactly one create of /k/once: {created:?}");
    let stored = nodes[leader].state().get("/k/once").unwrap().unwrap();
    assert_eq!(stored.value, format!("c{}", created[0]));
    let (writes, messages) = forwarded();
    let (writes, messages) = (writes - writes_before, messages - messages_before);
    eprintln!("{writes} writes forwarded in {messages} messages");
    assert!(writes >= 220, "{writes} writes forwarded");
    assert!(messages < writes, "{writes} writes forwarded in {messages} messages: none went together");
    for n in nodes.iter() {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_peer_that_is_not_a_member_cannot_append_vote_install_a_snapshot_write_or_join() {
    let specs: Vec<Spec> = (0..2).map(|_| Spec::new()).collect();
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes = cluster(&specs, &dirs).await;
    nodes[0].write(put("/k/a", "1")).await.unwrap();

    // A swarm with a key no member added, speaking the same protocol.
    let stranger_key = SigningKey::generate(&mut rand_core::OsRng);
    let (stranger, _inbound) = Transport::start(&stranger_key, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let target = peer_id(&specs[0].did()).unwrap();
    let addr = specs[0].addr.to_string();
    let vote = openraft::raft::VoteRequest::new(openraft::Vote::new(1000, 99), None);
    let append = openraft::raft::AppendEntriesRequest {
        vote: openraft::Vote::new_committed(1000, 99),
        prev_log_id: None,
        entries: vec![],
        leader_commit: None,
    };
    let snapshot = openraft::raft::InstallSnapshotRequest {
        vote: openraft::Vote::new_committed(1000, 99),
        meta: Default::default(),
        offset: 0,
        data: b"{}".to_vec(),
        done: true,
    };
    let rpcs = [
        ("append", Rpc::Append(append)),
        ("vote", Rpc::Vote(vote)),
        ("snapshot", Rpc::Snapshot(snapshot)),
        ("write", Rpc::Write(put("/k/evil", "x"))),
        ("writes", Rpc::Writes(vec![put("/k/evil1", "x"), put("/k/evil2", "x")])),
        ("read index", Rpc::ReadIndex),
        ("join", Rpc::Join),
        ("promote", Rpc::Promote(String::new())),
        ("status", Rpc::Status),
        ("remove", Rpc::Remove(member_id(&specs[1].did()))),
    ];
    // A transport connects only with the peers it allows: the stranger's own refuses to dial.
    let own = stranger.call(target, &addr, Rpc::Status, Duration::from_secs(5)).await;
    assert!(matches!(own, Err(TransportError::NotAllowed(p)) if p == target), "{own:?}");
    // The stranger allows the member, so only the member can refuse: it closes the connection
    // right after the handshake, before any request is read (no Forbidden reply, which would
    // mean the request had been decoded and handled).
    stranger.allow([target]);
    for (what, rpc) in rpcs {
        let result = stranger.call(target, &addr, rpc, Duration::from_secs(5)).await;
        assert!(
            matches!(result, Err(TransportError::Closed(p)) if p == target),
            "a stranger's connection must be closed before its {what} is read, got {result:?}"
        );
    }
    // Nothing changed: same leader and term, no foreign key, both members still there and
    // still serving each other.
    let status = nodes[0].status();
    assert!(status.term < 1000, "{status:?}");
    assert!(nodes[0].state().get("/k/evil").unwrap().is_none());
    let members = nodes[0].members().await;
    assert_eq!(members.len(), 2);
    assert!(members.iter().all(|m| m.status.is_some()), "both members still answer: {members:?}");
    let w = nodes[1].write(put("/k/b", "2")).await.unwrap();
    for n in &nodes {
        wait_for("both members apply a write after the stranger", async || {
            n.state().applied_revision().unwrap() >= w.revision
        })
        .await;
    }

    // A stranger started as a member with --join is refused with what to do.
    let dir = tempfile::tempdir().unwrap();
    let config = MemberConfig {
        key: stranger_key,
        listen: free_addr(),
        advertise: None,
        api: String::new(),
        join: Some(specs[0].target()),
        bootstrap: vec![],
    };
    stranger.stop();
    let err = RaftNode::start_member(dir.path(), options(), config).await.expect_err("join is refused");
    assert!(err.to_string().contains("ui cluster add"), "{err}");
    for n in &nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partitioned_minority_refuses_writes_and_reads_and_converges_after_healing() {
    let specs: Vec<Spec> = (0..3).map(|_| Spec::new()).collect();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes = cluster(&specs, &dirs).await;
    let leader = nodes.iter().position(|n| n.status().leader == Some(n.id())).unwrap();
    // Cut the leader off from both others: it is the minority.
    let others: Vec<u64> =
        nodes.iter().enumerate().filter(|(i, _)| *i != leader).map(|(_, n)| n.id()).collect();
    nodes[leader].isolate_from(&others).unwrap();
    for (i, n) in nodes.iter().enumerate() {
        if i != leader {
            n.isolate_from(&[nodes[leader].id()]).unwrap();
        }
    }
    let majority: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    wait_for("the majority elects a new leader", async || {
        let s = nodes[majority[0]].status();
        s.leader.is_some() && s.leader != Some(nodes[leader].id())
    })
    .await;
    let w = nodes[majority[1]].write(put("/k/majority", "1")).await.unwrap();
    assert!(matches!(w.outcome, Outcome::Applied { .. }));
    let minority_write =
        tokio::time::timeout(Duration::from_secs(5), nodes[leader].write(put("/k/minority", "1"))).await;
    assert!(
        !matches!(minority_write, Ok(Ok(_))),
        "the minority must not acknowledge a write: {minority_write:?}"
    );
    let minority_read = tokio::time::timeout(Duration::from_secs(5), nodes[leader].read_barrier()).await;
    assert!(!matches!(minority_read, Ok(Ok(()))), "the minority must refuse linearizable reads");

    for n in &nodes {
        n.isolate_from(&[]).unwrap();
    }
    // Right after healing the old leader learns the new term; then it serves reads again.
    wait_for("the healed member serves linearizable reads", async || {
        nodes[leader].read_barrier().await.is_ok()
    })
    .await;
    let (reference, rev) = nodes[majority[0]].state().list("/k/").unwrap();
    for n in &nodes {
        wait_for("convergence", async || n.state().applied_revision().unwrap() >= rev).await;
        assert_eq!(n.state().list("/k/").unwrap().0, reference, "every member converges to the same state");
    }
    assert!(nodes[leader].state().get("/k/minority").unwrap().is_none(), "the refused write never appears");
    for n in &nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_a_follower_cannot_send_to_its_leader_was_done_nowhere_and_says_so() {
    let specs: Vec<Spec> = (0..3).map(|_| Spec::new()).collect();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes = cluster(&specs, &dirs).await;
    let leader_of = |i: usize| nodes[i].status().leader;
    // The follower cannot connect to its leader (as when the leader's process just died), and
    // still takes it for the leader (no election yet): the write never left it. Should the
    // follower's election timer fire first (a stalled machine), that is not the case under
    // test: tried again, with a key of its own.
    let mut unsent = None;
    for attempt in 0..5 {
        wait_for("a leader its next member follows", async || {
            nodes.iter().position(|n| leader_of(0) == Some(n.id())).is_some_and(|l| {
                let follower = (l + 1) % 3;
                leader_of(follower) == Some(nodes[l].id()) && leader_of(l) == Some(nodes[l].id())
            })
        })
        .await;
        let leader = nodes.iter().position(|n| leader_of(0) == Some(n.id())).unwrap();
        let follower = (leader + 1) % 3;
        nodes[follower].isolate_from(&[nodes[leader].id()]).unwrap();
        let key = format!("/k/unsent-{attempt}");
        let refused = nodes[follower].write(put(&key, "1")).await;
        let still_followed = leader_of(follower) == Some(nodes[leader].id());
        nodes[follower].isolate_from(&[]).unwrap();
        match refused {
            // `NotLeader` is "proposed nowhere": the apiserver's 503 with Retry-After, which
            // clients send again, to this member or another. A write that may have reached
            // the leader would be `Unknown`.
            Err(WriteError::NotLeader(why)) if why.contains("not sent") => {
                unsent = Some(key);
                break;
            }
            other if !still_followed => {
                eprintln!("attempt {attempt}: the follower lost its leader: {other:?}")
            }
            other => panic!("a write that never left, while the leader was still followed: {other:?}"),
        }
    }
    let unsent = unsent.expect("a write refused as not sent within five attempts");
    // Healed, writes go through again; the refused one is nowhere.
    let mut sent = None;
    wait_for("a write after healing", async || match nodes[0].write(put("/k/sent", "1")).await {
        Ok(w) => {
            sent = Some(w);
            true
        }
        Err(_) => false,
    })
    .await;
    let sent = sent.unwrap();
    assert!(matches!(sent.outcome, Outcome::Applied { .. }), "{sent:?}");
    let revision = sent.revision;
    for n in &nodes {
        wait_for("every member applies it", async || n.state().applied_revision().unwrap() >= revision).await;
        assert!(n.state().get(&unsent).unwrap().is_none(), "{unsent} was written");
    }
    for n in &nodes {
        n.shutdown().await;
    }
}

mod lincheck;

/// A small deterministic generator, so a failing history can be replayed from its seed.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_clients_on_every_member_stay_linearizable_through_a_partition_of_the_leader() {
    use lincheck::{Kind, Operation};
    let specs: Vec<Spec> = (0..3).map(|_| Spec::new()).collect();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes = std::sync::Arc::new(cluster(&specs, &dirs).await);
    let start = tokio::time::Instant::now();
    let run_for = Duration::from_secs(5);
    let mut clients = tokio::task::JoinSet::new();
    for c in 0..4u64 {
        let nodes = nodes.clone();
        clients.spawn(async move {
            let mut rng = Lcg(c + 1);
            let mut history = Vec::new();
            let mut n = 0;
            while start.elapsed() < run_for {
                let node = &nodes[rng.next(3) as usize];
                let key = format!("/reg/{}", rng.next(3));
                let call = start.elapsed().as_nanos() as u64;
                if rng.next(2) == 0 {
                    n += 1;
                    let value = format!("c{c}-{n}");
                    let done =
                        tokio::time::timeout(Duration::from_secs(3), node.write(put(&key, &value))).await;
                    let ret = matches!(done, Ok(Ok(_))).then(|| start.elapsed().as_nanos() as u64);
                    history.push(Operation { key, call, ret, kind: Kind::Put(value) });
                } else {
                    let read = tokio::time::timeout(Duration::from_secs(3), async {
                        node.read_barrier().await.ok()?;
                        Some(node.state().get(&key).unwrap().map(|s| s.value))
                    })
                    .await;
                    if let Ok(Some(seen)) = read {
                        let ret = Some(start.elapsed().as_nanos() as u64);
                        history.push(Operation { key, call, ret, kind: Kind::Get(seen) });
                    }
                }
            }
            history
        });
    }
    // The fault: the leader is cut off from the others for a while, then the partition heals.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let leader = nodes.iter().position(|n| n.status().leader == Some(n.id())).unwrap();
    let ids: Vec<u64> = nodes.iter().map(|n| n.id()).filter(|id| *id != nodes[leader].id()).collect();
    nodes[leader].isolate_from(&ids).unwrap();
    for (i, n) in nodes.iter().enumerate() {
        if i != leader {
            n.isolate_from(&[nodes[leader].id()]).unwrap();
        }
    }
    tokio::time::sleep(Duration::from_millis(2000)).await;
    for n in nodes.iter() {
        n.isolate_from(&[]).unwrap();
    }
    let mut history = Vec::new();
    while let Some(h) = clients.join_next().await {
        history.extend(h.unwrap());
    }
    let answered = history.iter().filter(|o| o.ret.is_some()).count();
    let unknown = history.len() - answered;
    eprintln!("history: {} operations, {answered} answered, {unknown} with unknown outcome", history.len());
    assert!(answered > 50, "too few operations completed to say anything: {answered}");
    lincheck::check(&history).unwrap();
    for n in nodes.iter() {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_grows_to_five_voters_and_shrinks_back_to_three() {
    let specs: Vec<Spec> = (0..5).map(|_| Spec::new()).collect();
    let dirs: Vec<_> = (0..5).map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes = cluster(&specs, &dirs).await;
    let members = nodes[4].members().await;
    assert_eq!(members.iter().filter(|m| m.role == "voter").count(), 5, "{members:?}");
    nodes[3].write(put("/k/five", "1")).await.unwrap();

    // Remove two members, the leader among them if it is one of the last two.
    let removed = [nodes[3].id(), nodes[4].id()];
    for id in removed {
        let via = &nodes[0];
        let mut tries = 0;
        while let Err(e) = via.remove_member(id).await {
            tries += 1;
            assert!(tries < 50, "cannot remove member {id}: {e}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    wait_for("the membership has three voters", async || {
        let m = nodes[0].members().await;
        m.len() == 3 && m.iter().all(|m| !removed.contains(&m.id))
    })
    .await;
    // The three that remain still commit, and still agree.
    let w = nodes[1].write(put("/k/three", "1")).await.unwrap();
    for n in &nodes[..3] {
        wait_for("the remaining members apply the write", async || {
            n.state().applied_revision().unwrap() >= w.revision
        })
        .await;
        assert!(n.state().get("/k/three").unwrap().is_some());
    }
    for n in &nodes {
        n.shutdown().await;
    }
}

/// Two members and a third key added as a learner but never started: a member key in the
/// hands of a test, which can send what it likes over the real transport.
async fn cluster_and_member_key(
    specs: &[Spec],
    dirs: &[tempfile::TempDir],
) -> (Vec<RaftNode>, SigningKey, Transport) {
    let nodes = cluster(specs, dirs).await;
    let key = SigningKey::generate(&mut rand_core::OsRng);
    let did = api::identity::Did::from_key(&key.verifying_key()).as_str().to_owned();
    nodes[0].add_member(&did, &free_addr().to_string(), "https://x").await.unwrap();
    for n in &nodes {
        wait_for("the learner is in every member's membership", async || n.is_member(&did)).await;
    }
    let (transport, _inbound) = Transport::start(&key, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    (nodes, key, transport)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn members_of_the_version_before_writes_sent_together_work_with_this_one() {
    let specs: Vec<Spec> = (0..2).map(|_| Spec::new()).collect();
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let (nodes, key, newer) = cluster_and_member_key(&specs, &dirs).await;
    let target = peer_id(&specs[0].did()).unwrap();
    let addr = specs[0].addr.to_string();
    let wait = Duration::from_secs(10);

    // A member of the older version (its key is a member's) is served: its streams use
    // /univrs/raft/2.
    let (older, _inbound) = Transport::start_as_older(&key, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    older.allow([target]);
    let reply = older.call(target, &addr, Rpc::Write(put("/k/from-older", "1")), wait).await.unwrap();
    assert!(
        matches!(&reply, Reply::Write(Ok(r)) if matches!(r.outcome, Outcome::Applied { .. })),
        "{reply:?}"
    );
    // It cannot send writes together: refused before a byte of them is sent.
    let refused =
        older.call(target, &addr, Rpc::Writes(vec![put("/k/o1", "1"), put("/k/o2", "1")]), wait).await;
    assert!(matches!(refused, Err(TransportError::Unsupported(_))), "{refused:?}");
    older.stop();

    // This version's member sends them together, within what a member sends at once.
    newer.allow([target]);
    let two = Rpc::Writes(vec![put("/k/n1", "1"), put("/k/n2", "2")]);
    match newer.call(target, &addr, two, wait).await.unwrap() {
        Reply::Writes(answers) => {
            assert_eq!(answers.len(), 2);
            let revisions: Vec<u64> = answers.iter().map(|a| a.as_ref().unwrap().revision).collect();
            assert!(revisions[0] < revisions[1], "in order: {revisions:?}");
        }
        other => panic!("{other:?}"),
    }
    let too_many = Rpc::Writes((0..9).map(|i| put(&format!("/k/many/{i}"), "1")).collect());
    let reply = newer.call(target, &addr, too_many, wait).await.unwrap();
    assert!(matches!(&reply, Reply::Forbidden(why) if why.contains("9 writes")), "{reply:?}");
    nodes[0].read_barrier().await.unwrap();
    let state = nodes[0].state();
    assert!(state.get("/k/from-older").unwrap().is_some() && state.get("/k/n2").unwrap().is_some());
    assert!(state.get("/k/o1").unwrap().is_none() && state.get("/k/many/0").unwrap().is_none());

    // And a member of this version calling an older one: writes together are not sent, one
    // write is.
    let older_key = SigningKey::generate(&mut rand_core::OsRng);
    let (old_peer, mut old_inbound) =
        Transport::start_as_older(&older_key, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let new_key = SigningKey::generate(&mut rand_core::OsRng);
    let (new_peer, _inbound) = Transport::start(&new_key, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let (old_id, new_id) = (old_peer.local_peer_id(), new_peer.local_peer_id());
    old_peer.allow([new_id]);
    new_peer.allow([old_id]);
    let old_addr = old_peer.listen_addr().to_string();
    let together = Rpc::Writes(vec![put("/k/a", "1"), put("/k/b", "1")]);
    let refused = new_peer.call(old_id, &old_addr, together, wait).await;
    assert!(matches!(refused, Err(TransportError::Unsupported(_))), "{refused:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(old_inbound.try_recv().is_err(), "the older member received nothing");
    let serve = tokio::spawn(async move {
        let request = old_inbound.recv().await.unwrap();
        assert!(matches!(request.rpc, Rpc::Write(_)), "{:?}", request.rpc);
        request.responder.respond(Reply::Write(Ok(Default::default()))).await;
    });
    let reply = new_peer.call(old_id, &old_addr, Rpc::Write(put("/k/a", "1")), wait).await.unwrap();
    assert!(matches!(reply, Reply::Write(Ok(_))), "{reply:?}");
    serve.await.unwrap();
    for n in &nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_cannot_vote_append_or_install_a_snapshot_in_another_members_name() {
    let specs: Vec<Spec> = (0..2).map(|_| Spec::new()).collect();
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let (nodes, key, rogue) = cluster_and_member_key(&specs, &dirs).await;
    let rogue_id = member_id(api::identity::Did::from_key(&key.verifying_key()).as_str());
    let w = nodes[0].write(put("/k/a", "1")).await.unwrap();
    // The write answers once it is applied; the metrics `status` reads follow a moment later
    // (they count log entries, not revisions: wait until they stop moving).
    wait_for("the leader's metrics show the write applied", async || {
        let seen = nodes[0].last_applied();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        seen > 0
            && nodes[0].last_applied() == seen
            && nodes[0].state().applied_revision().unwrap() >= w.revision
    })
    .await;
    let target = peer_id(&specs[0].did()).unwrap();
    let addr = specs[0].addr.to_string();
    rogue.allow([target]);
    let before = nodes[0].status();
    let (keys_before, _) = nodes[0].state().list("/k/").unwrap();

    // Each names the other member, nodes[1], as its candidate or leader, at a term that would
    // depose the leader if it were believed.
    let other = nodes[1].id();
    let term = before.term + 100;
    let last = openraft::LogId::new(openraft::CommittedLeaderId::new(before.term, other), 1_000_000);
    let vote = openraft::raft::VoteRequest::new(openraft::Vote::new(term, other), Some(last));
    let append = openraft::raft::AppendEntriesRequest {
        vote: openraft::Vote::new_committed(term, other),
        prev_log_id: None,
        entries: vec![],
        leader_commit: None,
    };
    let snapshot = openraft::raft::InstallSnapshotRequest {
        vote: openraft::Vote::new_committed(term, other),
        meta: Default::default(),
        offset: 0,
        data: b"{}".to_vec(),
        done: true,
    };
    let rpcs =
        [("vote", Rpc::Vote(vote)), ("append", Rpc::Append(append)), ("snapshot", Rpc::Snapshot(snapshot))];
    for (what, rpc) in rpcs {
        let reply = rogue.call(target, &addr, rpc, Duration::from_secs(5)).await.unwrap();
        let Reply::Forbidden(why) = &reply else {
            panic!("a {what} in another member's name must be refused, got {reply:?}");
        };
        assert!(
            why.contains(&format!("member {rogue_id}")) && why.contains(&format!("member {other}")),
            "the refusal names the sender and the member it claimed to be: {why}"
        );
    }
    // Nothing changed: same term, same leader, same log, same keys.
    let after = nodes[0].status();
    assert_eq!(
        (after.term, after.leader, after.last_applied),
        (before.term, before.leader, before.last_applied)
    );
    assert_eq!(nodes[0].state().list("/k/").unwrap().0, keys_before);

    // In its own name the same member is heard (and, with a stale term, not granted).
    let own = openraft::raft::VoteRequest::new(openraft::Vote::new(0, rogue_id), None);
    let reply = rogue.call(target, &addr, Rpc::Vote(own), Duration::from_secs(5)).await.unwrap();
    assert!(matches!(&reply, Reply::Vote(Ok(r)) if !r.vote_granted), "{reply:?}");
    assert_eq!(nodes[0].status().term, before.term);
    for n in &nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_frame_over_the_limit_is_refused_unread_and_the_member_keeps_serving() {
    let specs: Vec<Spec> = (0..2).map(|_| Spec::new()).collect();
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let (nodes, key, _) = cluster_and_member_key(&specs, &dirs).await;
    let target = peer_id(&specs[0].did()).unwrap();
    let addr = specs[0].addr.to_string();
    let huge = "x".repeat(MAX_REQUEST_BYTES as usize + 1);

    // A member's own transport does not send a frame over the limit.
    let (member, _inbound) = Transport::start(&key, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    member.allow([target]);
    let sent = member.call(target, &addr, Rpc::Write(put("/k/huge", &huge)), Duration::from_secs(10)).await;
    assert!(
        matches!(&sent, Err(TransportError::Unreachable { reason, .. }) if reason.contains("over the limit")),
        "{sent:?}"
    );
    member.stop();

    // One that ignores the limit (the same member key) has its frame refused by the member.
    let big = Limits { request: 4 * MAX_REQUEST_BYTES, ..Limits::default() };
    let (rogue, _inbound) =
        Transport::start_with_limits(&key, "127.0.0.1:0".parse().unwrap(), big).await.unwrap();
    rogue.allow([target]);
    let sent = rogue.call(target, &addr, Rpc::Write(put("/k/huge", &huge)), Duration::from_secs(10)).await;
    assert!(sent.is_err(), "a frame over the limit must be refused, got {sent:?}");
    // The member stands: it still answers that member, and the cluster still commits.
    let reply = rogue.call(target, &addr, Rpc::Status, Duration::from_secs(5)).await.unwrap();
    assert!(matches!(&reply, Reply::Status(s) if s.id == nodes[0].id()), "{reply:?}");
    let w = nodes[1].write(put("/k/after", "1")).await.unwrap();
    assert!(matches!(w.outcome, Outcome::Applied { .. }));
    assert!(nodes[0].state().get("/k/huge").unwrap().is_none());

    // A write larger than one entry may be is refused before it goes anywhere, on any member.
    let too_big = "x".repeat(MAX_ENTRY_BYTES);
    for n in &nodes {
        let err = n.write(put("/k/too-big", &too_big)).await.unwrap_err();
        assert!(matches!(err, WriteError::TooLarge(_)), "{err}");
    }
    for n in &nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn entries_larger_than_one_message_reach_a_member_that_fell_behind() {
    let specs: Vec<Spec> = (0..3).map(|_| Spec::new()).collect();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes = cluster(&specs, &dirs).await;
    let leader = nodes.iter().position(|n| n.status().leader == Some(n.id())).unwrap();
    let behind = (leader + 1) % 3;
    nodes[behind].isolate_from(&[nodes[leader].id(), nodes[(leader + 2) % 3].id()]).unwrap();
    for (i, n) in nodes.iter().enumerate() {
        if i != behind {
            n.isolate_from(&[nodes[behind].id()]).unwrap();
        }
    }
    // Eight 600 KiB entries and one of 3 MiB (an object as large as the API takes): more than
    // one AppendEntries may carry, so they go in parts.
    let mut last = 0;
    for i in 0..8 {
        let value = format!("{i}").repeat(600 * 1024);
        last = nodes[leader].write(put(&format!("/k/large/{i}"), &value)).await.unwrap().revision;
    }
    let largest = "y".repeat(3 * 1024 * 1024);
    last = last.max(nodes[leader].write(put("/k/largest", &largest)).await.unwrap().revision);
    for n in &nodes {
        n.isolate_from(&[]).unwrap();
    }
    wait_for("the member that fell behind catches up", async || {
        nodes[behind].state().applied_revision().unwrap() >= last
    })
    .await;
    assert_eq!(nodes[behind].state().list("/k/").unwrap().0, nodes[leader].state().list("/k/").unwrap().0);
    for n in &nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_removed_member_is_disconnected_and_refused_from_then_on() {
    let specs: Vec<Spec> = (0..2).map(|_| Spec::new()).collect();
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let (nodes, key, member) = cluster_and_member_key(&specs, &dirs).await;
    let did = api::identity::Did::from_key(&key.verifying_key()).as_str().to_owned();
    let target = peer_id(&specs[0].did()).unwrap();
    let addr = specs[0].addr.to_string();
    member.allow([target]);
    // While it is a member (a learner), it is served.
    let reply = member.call(target, &addr, Rpc::Status, Duration::from_secs(5)).await.unwrap();
    assert!(matches!(&reply, Reply::Status(s) if s.id == nodes[0].id()), "{reply:?}");

    nodes[0].remove_member(member_id(&did)).await.unwrap();
    wait_for("the removal reaches every member", async || nodes.iter().all(|n| !n.is_member(&did))).await;
    // Its open connection is closed and a new one is refused, before any request is read.
    wait_for("the removed member's calls are refused", async || {
        let r = member.call(target, &addr, Rpc::Status, Duration::from_secs(5)).await;
        matches!(r, Err(TransportError::Closed(p)) if p == target)
    })
    .await;
    let w = nodes[1].write(put("/k/after-removal", "1")).await.unwrap();
    assert!(matches!(w.outcome, Outcome::Applied { .. }));
    for n in &nodes {
        n.shutdown().await;
    }
}
