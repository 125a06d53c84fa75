//! Group commit of the Raft log, on a real single-voter member on a temp dir: concurrent
//! writes share fsyncs, and every acknowledged one survives restarts.
//!
//! Alone in its own test binary (so its own process, under `cargo test` too): it reads the
//! process-wide `etcd_disk_wal_fsync_duration_seconds_count`, which no other test may move
//! meanwhile.

use apiserver::raft::{Expect, Op, Options, Outcome, RaftNode, Request};

fn put(key: &str, value: &str) -> Request {
    Request {
        batch: Vec::new(),
        ops: vec![Op::Put { key: key.into(), value: value.into(), expect: Expect::Absent }],
    }
}

/// The durable commits of the Raft log so far.
fn log_fsyncs() -> u64 {
    let text = apiserver::metrics::metrics().encode();
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("etcd_disk_wal_fsync_duration_seconds_count "))
        .unwrap_or_else(|| panic!("no fsync count in:\n{text}"));
    line.trim().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_share_fsyncs_and_every_acknowledged_one_survives_restarts() {
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
        let node = RaftNode::start_single(dir.path(), options()).await.unwrap();
        node.read_barrier().await.unwrap();
        for (key, revision) in &acked {
            let stored =
                node.state().get(key).unwrap().unwrap_or_else(|| panic!("{key} lost (round {round})"));
            assert_eq!(stored.mod_revision, *revision, "{key} (round {round})");
        }
        node.shutdown().await;
    }
}
