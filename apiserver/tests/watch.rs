//! Watch on a real single-voter Raft member: order, initial state, selectors, bookmarks,
//! compaction (in-stream 410) and history that survives a restart.

use std::time::Duration;

use api::kinds::by_kind;
use api::selector::{LabelSelector, Selector};
use apiserver::access::Caller;
use apiserver::raft::history::Retention;
use apiserver::raft::{Options, RaftNode};

/// The server itself: these tests are about object semantics, not access.
static SYS: std::sync::LazyLock<Caller> = std::sync::LazyLock::new(Caller::system);
use apiserver::registry::{MemStore, ObjectRef, Part, ReadAt, Registry, WriteOptions};
use apiserver::watch::{self, Event, Start, Watch};
use futures_util::StreamExt;
use serde_json::{Value, json};

async fn registry(dir: &std::path::Path) -> Registry {
    Registry::new(RaftNode::start_single(dir, Options::default()).await.unwrap())
}

fn workload(name: &str, app: &str) -> Value {
    json!({ "apiVersion": "univrs.io/v1", "kind": "Workload",
            "metadata": { "name": name, "labels": { "app": app } },
            "spec": { "replicas": 1, "rootfs": "busybox" } })
}

fn rv(obj: &Value) -> u64 {
    obj["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap()
}

fn watch_workloads(start: Start, initial_events: bool) -> Watch {
    Watch {
        who: Caller::system(),
        kind: by_kind("Workload").unwrap(),
        namespace: None,
        selector: Selector::default(),
        start,
        initial_events,
        initial_events_end: false,
        bookmarks: false,
        timeout: Duration::from_secs(60),
    }
}

/// An event with its object as a value.
struct Seen {
    kind: &'static str,
    object: Value,
}

/// A watch's events.
type Events = std::pin::Pin<Box<dyn futures_util::Stream<Item = Event> + Send>>;

async fn start(reg: &Registry, w: Watch) -> Events {
    Box::pin(watch::start(reg, w).await.expect("the watch starts"))
}

async fn next(events: &mut Events) -> Seen {
    let e = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("an event in time")
        .expect("stream open");
    Seen { kind: e.kind, object: e.object.into_value().unwrap() }
}

/// No event comes for a while: the stream, polled, has listed what it starts from and is
/// waiting for changes.
async fn nothing_yet(events: &mut Events) {
    let polled = tokio::time::timeout(Duration::from_millis(100), events.next()).await;
    assert!(polled.is_err(), "no event yet");
}

fn summary(e: &Seen) -> (String, String) {
    (e.kind.to_owned(), e.object["metadata"]["name"].as_str().unwrap_or_default().to_owned())
}

/// `obj` signed by the test's owner key now.
fn signed(mut obj: Value) -> Value {
    let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    api::signing::sign(&mut obj, &key, chrono::Utc::now()).unwrap();
    obj
}

async fn create(reg: &Registry, obj: Value) -> Value {
    let kind = api::kinds::by_kind(obj["kind"].as_str().unwrap()).unwrap();
    let obj = if kind.signed { signed(obj) } else { obj };
    reg.create(&SYS, kind, obj, &WriteOptions::default()).await.unwrap().object
}

/// The owner changes a Workload: merge `p` into it, sign it again and update it.
async fn patch(reg: &Registry, name: &str, p: Value) -> Value {
    let wl = by_kind("Workload").unwrap();
    let mut obj = reg.get(&SYS, ObjectRef::new(wl, Some("default"), name), ReadAt::Latest).await.unwrap();
    apiserver::patch::merge_patch(&mut obj, &p);
    let obj = signed(obj);
    reg.update(&SYS, ObjectRef::new(wl, Some("default"), name), Part::Main, obj, &WriteOptions::default())
        .await
        .unwrap()
        .object
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_arrives_once_in_revision_order_from_any_revision() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(dir.path()).await;
    let a = create(&reg, workload("a", "web")).await;
    let mut from_now = start(&reg, watch_workloads(Start::Now, true)).await;
    assert_eq!(summary(&next(&mut from_now).await), ("ADDED".into(), "a".into()));

    // Concurrent writers on two kinds; the workload watcher, read while they write, sees
    // exactly its own changes.
    let reader = tokio::spawn(async move {
        let mut seen = Vec::new();
        while seen.len() < 40 {
            let e = next(&mut from_now).await;
            assert_eq!(e.kind, "ADDED");
            assert_eq!(e.object["kind"], "Workload");
            seen.push(rv(&e.object));
        }
        (seen, from_now)
    });
    let mut writers = Vec::new();
    for w in 0..4 {
        let reg = reg.clone();
        writers.push(tokio::spawn(async move {
            let mut revs = Vec::new();
            for i in 0..10 {
                revs.push(rv(&create(&reg, workload(&format!("w{w}-{i}"), "web")).await));
                let mut tp = json!({ "apiVersion": "univrs.io/v1", "kind": "TrustPolicy",
                    "metadata": { "name": format!("t{w}-{i}") }, "spec": {} });
                tp["spec"] = json!({});
                create(&reg, tp).await;
            }
            revs
        }));
    }
    let mut acknowledged = Vec::new();
    for w in writers {
        acknowledged.extend(w.await.unwrap());
    }
    acknowledged.sort_unstable();
    let (seen, mut from_now) = reader.await.unwrap();
    assert_eq!(seen, acknowledged, "lost, repeated or reordered events");

    // From a past revision: the same changes again, in the same order, and nothing before.
    let mut replay = start(&reg, watch_workloads(Start::After(rv(&a)), false)).await;
    let mut again = Vec::new();
    while again.len() < acknowledged.len() {
        again.push(rv(&next(&mut replay).await.object));
    }
    assert_eq!(again, acknowledged);

    // Modify and delete: the DELETED object is the last state at the deletion's revision.
    patch(&reg, "a", json!({ "spec": { "replicas": 2 } })).await;
    let modified = next(&mut from_now).await;
    assert_eq!(summary(&modified), ("MODIFIED".into(), "a".into()));
    assert_eq!(modified.object["spec"]["replicas"], 2);
    let wl = by_kind("Workload").unwrap();
    reg.delete(&SYS, ObjectRef::new(wl, Some("default"), "a"), &Default::default()).await.unwrap();
    let deleted = next(&mut from_now).await;
    assert_eq!(summary(&deleted), ("DELETED".into(), "a".into()));
    assert_eq!(deleted.object["spec"]["replicas"], 2);
    assert!(rv(&deleted.object) > rv(&modified.object));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_selector_sees_objects_enter_and_leave_it() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(dir.path()).await;
    let mut w = watch_workloads(Start::Now, true);
    w.selector.labels = LabelSelector::parse("app=web").unwrap();
    let mut events = start(&reg, w).await;
    nothing_yet(&mut events).await;
    create(&reg, workload("other", "db")).await;
    create(&reg, workload("x", "web")).await;
    assert_eq!(summary(&next(&mut events).await), ("ADDED".into(), "x".into()));
    patch(&reg, "x", json!({ "metadata": { "labels": { "app": "db" } } })).await;
    assert_eq!(summary(&next(&mut events).await), ("DELETED".into(), "x".into()));
    patch(&reg, "other", json!({ "metadata": { "labels": { "app": "web" } } })).await;
    assert_eq!(summary(&next(&mut events).await), ("ADDED".into(), "other".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_now_without_initial_events_sees_only_later_changes() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(dir.path()).await;
    create(&reg, workload("before", "web")).await;
    let mut events = start(&reg, watch_workloads(Start::Now, false)).await;
    // Written before the stream is first polled, after the watch started: seen.
    create(&reg, workload("after", "web")).await;
    assert_eq!(summary(&next(&mut events).await), ("ADDED".into(), "after".into()));
}

#[tokio::test(start_paused = true)]
async fn an_idle_watch_gets_a_bookmark_every_30_s_and_ends_at_its_deadline_or_when_the_server_stops() {
    let reg = Registry::new(MemStore::new());
    let mut w = watch_workloads(Start::Now, false);
    w.bookmarks = true;
    w.timeout = Duration::from_secs(100);
    let mut events = start(&reg, w).await;
    let t0 = tokio::time::Instant::now();
    // The paused clock moves on to the next timer whenever the test waits.
    let mut at = Vec::new();
    while let Some(e) = events.next().await {
        assert_eq!(e.kind, "BOOKMARK");
        at.push(t0.elapsed().as_secs());
    }
    assert_eq!(at, [30, 60, 90, 100], "every 30 s, and one as the deadline ends it");

    let mut events = start(&reg, watch_workloads(Start::Now, false)).await;
    nothing_yet(&mut events).await;
    let t1 = tokio::time::Instant::now();
    reg.stop_watches();
    assert!(events.next().await.is_none(), "the server stopping ends it");
    assert_eq!(t1.elapsed(), Duration::ZERO, "at once, not at its deadline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookmarks_mark_the_end_of_initial_events_and_of_the_watch() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(dir.path()).await;
    let created = create(&reg, workload("a", "web")).await;
    let mut w = watch_workloads(Start::Now, true);
    w.initial_events_end = true;
    w.bookmarks = true;
    w.timeout = Duration::from_millis(500);
    let mut events = start(&reg, w).await;
    assert_eq!(summary(&next(&mut events).await), ("ADDED".into(), "a".into()));
    let end = next(&mut events).await;
    assert_eq!(end.kind, "BOOKMARK");
    assert_eq!(end.object["metadata"]["annotations"]["k8s.io/initial-events-end"], "true");
    assert!(rv(&end.object) >= rv(&created));
    let last = next(&mut events).await;
    assert_eq!(last.kind, "BOOKMARK", "a bookmark just before the server closes the watch");
    assert!(tokio::time::timeout(Duration::from_secs(5), events.next()).await.unwrap().is_none(), "closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compacted_revision_is_an_in_stream_410_and_history_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let node = RaftNode::start_single(dir.path(), Options::default()).await.unwrap();
    let reg = Registry::new(node.clone());
    let first = create(&reg, workload("a", "web")).await;
    let second = create(&reg, workload("b", "web")).await;
    node.shutdown().await;
    drop((reg, node));

    // After a restart, a client resumes from its revision and misses nothing.
    let node = RaftNode::start_single(dir.path(), Options::default()).await.unwrap();
    let reg = Registry::new(node.clone());
    let mut resumed = start(&reg, watch_workloads(Start::After(rv(&first)), false)).await;
    assert_eq!(summary(&next(&mut resumed).await), ("ADDED".into(), "b".into()));
    assert_eq!(rv(&next_after_create(&reg, &mut resumed, "c").await), rv(&second) + 1);

    // Keep only the last revision: a watch from the first gets an in-stream 410.
    let keep_one = Retention { max_age: Duration::from_secs(3600), max_revisions: 1 };
    node.state().compact_history(keep_one, u64::MAX / 2).unwrap();
    let mut stale = start(&reg, watch_workloads(Start::After(rv(&first)), false)).await;
    let e = next(&mut stale).await;
    assert_eq!(e.kind, "ERROR");
    assert_eq!(e.object["code"], 410);
    assert_eq!(e.object["reason"], "Expired");
    assert!(tokio::time::timeout(Duration::from_secs(5), stale.next()).await.unwrap().is_none(), "closed");
    node.shutdown().await;
}

async fn next_after_create(reg: &Registry, events: &mut Events, name: &str) -> Value {
    create(reg, workload(name, "web")).await;
    let e = next(events).await;
    assert_eq!(summary(&e), ("ADDED".into(), name.into()));
    e.object
}
