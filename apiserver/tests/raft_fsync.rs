//! What a write costs the Raft log in fsyncs, on a real single-voter member on a temp dir:
//! one each when writes come one at a time, far fewer when they come together (group commit).
//!
//! In a test binary of their own, one test at a time (so alone in their process under `cargo
//! test` too): they read the process-wide `etcd_disk_wal_fsync_duration_seconds_count`, which
//! nothing else may move meanwhile.

use apiserver::raft::{Expect, Op, Options, Outcome, RaftNode, Request};

/// Held by each test: one at a time.
static ALONE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn put(key: &str, value: &str) -> Request {
    Request {
        batch: Vec::new(),
        ops: vec![Op::Put { key: key.into(), value: value.into(), expect: Expect::Absent }],
    }
}

/// The durable commits of the Raft log so far (the log store counts each one it fsyncs).
fn log_fsyncs() -> u64 {
    let text = apiserver::metrics::metrics().encode();
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("etcd_disk_wal_fsync_duration_seconds_count "))
        .unwrap_or_else(|| panic!("no fsync count in:\n{text}"));
    line.trim().parse().unwrap()
}

/// Caught by the store benchmark: every write was two fsync'd commits of the log, its entry
/// and then the committed log id, both in the Raft core's one serial section.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_costs_one_fsync_of_the_log_and_survives_restarts() {
    let _alone = ALONE.lock().await;
    let dir = tempfile::tempdir().unwrap();
    // No snapshot during the test (a snapshot is a durable commit of the state machine, not
    // of the log, but keep the count about writes alone).
    let options = || Options { snapshot_every: 100_000, ..Options::default() };
    let node = RaftNode::start_single(dir.path(), options()).await.unwrap();
    let writes = 50;
    let before = log_fsyncs();
    let mut acked = Vec::new();
    for i in 0..writes {
        let r = node.write(put(&format!("/f/{i:03}"), &format!("v{i}"))).await.unwrap();
        assert!(matches!(r.outcome, Outcome::Applied { .. }), "{r:?}");
        acked.push((format!("/f/{i:03}"), r.revision));
    }
    let fsyncs = log_fsyncs() - before;
    assert!(fsyncs >= writes, "{fsyncs} fsyncs for {writes} acknowledged writes: some entry was not durable");
    assert!(fsyncs <= writes + 2, "{fsyncs} fsyncs for {writes} writes: more than one each");

    // The committed id was last saved without a commit of its own (it is written with the
    // next write of the log); restarts (twice, the second right after the first) find every
    // acknowledged write with its revision, and go on after it.
    node.shutdown().await;
    drop(node);
    for round in 0..2 {
        let node = restarted(dir.path(), options(), &acked, round).await;
        let last = acked.last().unwrap().1;
        let r = node.write(put(&format!("/f/after-{round}"), "x")).await.unwrap();
        assert!(r.revision > last, "revision went back: {} after {last}", r.revision);
        acked.push((format!("/f/after-{round}"), r.revision));
        node.shutdown().await;
    }
}

/// Group commit: concurrent writes share fsyncs, and every acknowledged one survives restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_share_fsyncs_and_every_acknowledged_one_survives_restarts() {
    let _alone = ALONE.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let options = || Options { snapshot_every: 100_000, ..Options::default() };
    let node = std::sync::Arc::new(RaftNode::start_single(dir.path(), options()).await.unwrap());
    let (clients, each) = (64, 20);
    let before = log_fsyncs();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let node = node.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..each {
                let key = format!("/g/{c:02}/{i:02}");
                let r = node.write(put(&key, "v")).await.unwrap();
                assert!(matches!(r.outcome, Outcome::Applied { .. }), "{r:?}");
                acked.push((key, r.revision));
            }
            acked
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    let writes = (clients * each) as u64;
    let fsyncs = log_fsyncs() - before;
    println!("{writes} concurrent writes, {fsyncs} fsyncs of the log");
    assert!(
        fsyncs * 2 <= writes,
        "{fsyncs} fsyncs for {writes} writes from {clients} clients: no group commit"
    );
    // Revisions are unique: one entry each, in one order.
    let mut revisions: Vec<u64> = acked.iter().map(|(_, r)| *r).collect();
    revisions.sort_unstable();
    revisions.dedup();
    assert_eq!(revisions.len(), acked.len());

    let node = std::sync::Arc::into_inner(node).expect("no other handle");
    node.shutdown().await;
    drop(node);
    for round in 0..2 {
        restarted(dir.path(), options(), &acked, round).await.shutdown().await;
    }
}

/// The member in `dir` started again, once it finds every acknowledged write with its
/// revision.
async fn restarted(
    dir: &std::path::Path,
    options: Options,
    acked: &[(String, u64)],
    round: usize,
) -> RaftNode {
    let node = RaftNode::start_single(dir, options).await.unwrap();
    node.read_barrier().await.unwrap();
    for (key, revision) in acked {
        let stored = node.state().get(key).unwrap().unwrap_or_else(|| panic!("{key} lost (round {round})"));
        assert_eq!(stored.mod_revision, *revision, "{key} (round {round})");
    }
    node
}
