//! A real single-voter Raft member on a temp dir: writes are acknowledged only once durable,
//! survive a restart with their revisions, and compare-and-swap has exactly one winner.

use std::collections::BTreeSet;
use std::path::Path;

use apiserver::raft::{Expect, Op, Options, Outcome, RaftNode, Request};
use tokio::task::JoinSet;

fn put(key: &str, value: &str, expect: Expect) -> Request {
    Request { batch: Vec::new(), ops: vec![Op::Put { key: key.into(), value: value.into(), expect }] }
}

/// Small snapshot interval so that log compaction happens during the test.
fn options() -> Options {
    Options { snapshot_every: 50, keep_behind_snapshot: 10, ..Options::default() }
}

async fn start(dir: &Path) -> RaftNode {
    RaftNode::start_single(dir, options()).await.expect("member starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_a_restart_with_their_revisions() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path()).await;

    let mut writers = JoinSet::new();
    for w in 0..16 {
        let node = node.clone();
        writers.spawn(async move {
            let mut acks = Vec::new();
            for i in 0..20 {
                let key = format!("/t/{w:02}/{i:02}");
                let r = node.write(put(&key, &format!("{w}-{i}"), Expect::Absent)).await.unwrap();
                assert!(matches!(r.outcome, Outcome::Applied { .. }), "{r:?}");
                acks.push((key, r.revision));
            }
            acks
        });
    }
    let acks: Vec<(String, u64)> = writers.join_all().await.into_iter().flatten().collect();
    assert_eq!(acks.len(), 320);
    let revisions: BTreeSet<u64> = acks.iter().map(|(_, r)| *r).collect();
    assert_eq!(revisions.len(), acks.len(), "two writes got the same revision");

    node.read_barrier().await.unwrap();
    for (key, rev) in &acks {
        assert_eq!(node.state().get(key).unwrap().map(|s| s.mod_revision), Some(*rev), "{key}");
    }
    let before = *revisions.last().unwrap();
    // Compact: a snapshot of everything, and the log behind it purged.
    // (Revisions count writes, not log entries: concurrent writes share entries.)
    let snapshot_index = node.snapshot().await.unwrap();
    assert!(snapshot_index >= 1 && node.state().applied_revision().unwrap() >= before);
    node.shutdown().await;
    drop(node);

    let node = start(dir.path()).await;
    node.read_barrier().await.unwrap();
    for (key, rev) in &acks {
        let stored = node.state().get(key).unwrap().unwrap_or_else(|| panic!("{key} lost after restart"));
        assert_eq!(stored.mod_revision, *rev, "{key}");
    }
    assert_eq!(node.state().list("/t/").unwrap().0.len(), 320);
    assert!(node.first_log_index() > 1, "the log was never compacted");
    let r = node.write(put("/t/after", "x", Expect::Absent)).await.unwrap();
    assert!(r.revision > before, "revision went back: {} after {before}", r.revision);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_and_swap_on_a_revision_has_exactly_one_winner() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path()).await;
    let created = node.write(put("/cas", "v0", Expect::Absent)).await.unwrap();

    let mut racers = JoinSet::new();
    for i in 0..8 {
        let node = node.clone();
        let rev = created.revision;
        racers.spawn(async move {
            node.write(put("/cas", &format!("v{i}"), Expect::ModRevision(rev))).await.unwrap()
        });
    }
    let results = racers.join_all().await;
    let winners = results.iter().filter(|r| matches!(r.outcome, Outcome::Applied { .. })).count();
    assert_eq!(winners, 1, "{results:?}");
    let losers_saw_the_winner = results.iter().all(|r| match &r.outcome {
        Outcome::PreconditionFailed { current: Some(c), .. } => c.mod_revision > created.revision,
        Outcome::Applied { .. } => true,
        _ => false,
    });
    assert!(losers_saw_the_winner, "{results:?}");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_member_refuses_writes_and_a_second_process_cannot_open_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path()).await;
    // The data dir is locked while a member runs on it.
    let second = RaftNode::start_single(dir.path(), options()).await;
    assert!(second.is_err(), "two members opened one data dir");
    node.shutdown().await;
    assert!(node.write(put("/x", "y", Expect::Any)).await.is_err());
}
