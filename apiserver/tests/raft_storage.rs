//! The Raft storage (the log's WAL, the state machine on redb): openraft's own conformance
//! suite, then what the apiserver relies on (preconditions checked at apply time, revisions,
//! snapshots, restarts, logs from before the WAL).

use apiserver::raft::{Expect, LogStore, NodeId, Op, Outcome, Request, StateMachine, TypeConfig};
use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{
    CommittedLeaderId, Entry, EntryPayload, LogId, RaftLogReader, RaftSnapshotBuilder, StorageError,
};

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<NodeId>> {
        let dir = tempfile::tempdir().unwrap();
        let log = LogStore::open(&dir.path().join("raft-log")).unwrap();
        let sm = StateMachine::open(&dir.path().join("state.redb")).unwrap();
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_conformance_suite() {
    Suite::test_all(Builder).expect("the storage passes openraft's conformance suite");
}

fn log_id(index: u64) -> LogId<NodeId> {
    LogId::new(CommittedLeaderId::new(1, 0), index)
}

fn entry(index: u64, ops: Vec<Op>) -> Entry<TypeConfig> {
    Entry { log_id: log_id(index), payload: EntryPayload::Normal(Request::new(ops)) }
}

fn put(key: &str, value: &str, expect: Expect) -> Op {
    Op::Put { key: key.into(), value: value.into(), expect }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().build().unwrap()
}

/// Group commit: one entry carries several writes, each applied on its own, in order, with a
/// revision of its own; every other entry still takes one revision, so without batches the
/// revision is the log index (what stores from before batches kept).
#[test]
fn a_batch_applies_each_write_on_its_own_with_a_revision_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = StateMachine::open(&dir.path().join("sm.redb")).unwrap();
    let write = |ops| Request { batch: Vec::new(), ops };
    let batch = Request {
        ops: Vec::new(),
        batch: vec![
            write(vec![put("/b/x", "1", Expect::Absent)]),
            // Its precondition sees the write before it in the same entry.
            write(vec![put("/b/x", "again", Expect::Absent)]),
            write(vec![put("/b/x", "2", Expect::ModRevision(3))]),
        ],
    };
    let out = rt()
        .block_on(sm.apply(vec![
            Entry { log_id: log_id(1), payload: EntryPayload::Blank },
            entry(2, vec![put("/b/a", "a", Expect::Absent)]),
            Entry { log_id: log_id(3), payload: EntryPayload::Normal(batch) },
            entry(4, vec![put("/b/y", "y", Expect::Absent)]),
        ]))
        .unwrap();
    assert_eq!(out[0].revision, 1, "a blank entry takes a revision too");
    assert_eq!(out[1].revision, 2);
    let each: Vec<_> = out[2].batch.iter().map(|r| (r.revision, &r.outcome)).collect();
    assert!(matches!(each[0], (3, Outcome::Applied { .. })), "{each:?}");
    assert!(matches!(each[1], (4, Outcome::PreconditionFailed { op: 0, current: Some(_) })), "{each:?}");
    assert!(matches!(each[2], (5, Outcome::Applied { .. })), "{each:?}");
    assert_eq!(out[3].revision, 6);
    let x = sm.get("/b/x").unwrap().unwrap();
    assert_eq!((x.create_revision, x.mod_revision, x.value.as_str()), (3, 5, "2"));
    assert_eq!(sm.applied_revision().unwrap(), 6);
    // The history has each write under its own revision.
    let changes = sm.changes_after(2, 100).unwrap().unwrap();
    let revs: Vec<u64> = changes.changes.iter().map(|(r, _)| *r).collect();
    assert_eq!(revs, [3, 5, 6]);
}

#[test]
fn preconditions_are_checked_when_applied_and_revisions_are_log_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = StateMachine::open(&dir.path().join("sm.redb")).unwrap();
    let out = rt()
        .block_on(sm.apply(vec![
            entry(1, vec![put("/w/a", "v1", Expect::Absent)]),
            entry(2, vec![put("/w/a", "again", Expect::Absent)]),
            entry(3, vec![put("/w/a", "v2", Expect::ModRevision(1))]),
            entry(4, vec![put("/w/a", "stale", Expect::ModRevision(1))]),
            entry(
                5,
                vec![
                    put("/w/b", "b", Expect::Any),
                    Op::Delete { key: "/w/zz".into(), expect: Expect::Present },
                ],
            ),
            entry(6, vec![put("/w/c", "c", Expect::Any), put("/w/c", "c2", Expect::Any)]),
        ]))
        .unwrap();
    let outcomes: Vec<_> = out.iter().map(|r| (r.revision, &r.outcome)).collect();
    assert!(matches!(outcomes[0], (1, Outcome::Applied { .. })));
    assert!(matches!(outcomes[1], (2, Outcome::PreconditionFailed { op: 0, current: Some(_) })));
    assert!(matches!(outcomes[2], (3, Outcome::Applied { .. })));
    assert!(matches!(outcomes[3], (4, Outcome::PreconditionFailed { op: 0, .. })));
    assert!(
        matches!(outcomes[4], (5, Outcome::PreconditionFailed { op: 1, current: None })),
        "a failing op refuses the whole request"
    );
    assert!(matches!(outcomes[5], (6, Outcome::DuplicateKey { .. })));

    let a = sm.get("/w/a").unwrap().unwrap();
    assert_eq!((a.create_revision, a.mod_revision, a.value.as_str()), (1, 3, "v2"));
    assert!(sm.get("/w/b").unwrap().is_none(), "half of a refused request was applied");
    assert!(sm.get("/w/c").unwrap().is_none());

    rt().block_on(
        sm.apply(vec![entry(7, vec![Op::Delete { key: "/w/a".into(), expect: Expect::ModRevision(3) }])]),
    )
    .unwrap();
    assert!(sm.get("/w/a").unwrap().is_none());
    let (last, _) = rt().block_on(sm.applied_state()).unwrap();
    assert_eq!(last.map(|l| l.index), Some(7));
}

#[test]
fn a_snapshot_moves_the_whole_state_to_another_member() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = StateMachine::open(&dir.path().join("a.redb")).unwrap();
    let mut b = StateMachine::open(&dir.path().join("b.redb")).unwrap();
    let rt = rt();
    rt.block_on(
        a.apply((1..=50).map(|i| entry(i, vec![put(&format!("/k/{i:03}"), &format!("v{i}"), Expect::Any)]))),
    )
    .unwrap();
    rt.block_on(b.apply(vec![entry(1, vec![put("/old/x", "gone after install", Expect::Any)])])).unwrap();

    let snap = rt.block_on(a.build_snapshot()).unwrap();
    assert_eq!(snap.meta.last_log_id.map(|l| l.index), Some(50));
    rt.block_on(b.install_snapshot(&snap.meta, snap.snapshot)).unwrap();
    assert_eq!(b.list("/").unwrap(), a.list("/").unwrap());
    assert_eq!(b.list("/k/").unwrap().0.len(), 50);
    let (last, _) = rt.block_on(b.applied_state()).unwrap();
    assert_eq!(last.map(|l| l.index), Some(50));
    assert!(rt.block_on(b.get_current_snapshot()).unwrap().is_some());
}

#[test]
fn log_and_snapshotted_state_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    {
        let mut sm = StateMachine::open(&dir.path().join("sm.redb")).unwrap();
        rt.block_on(sm.apply(vec![entry(1, vec![put("/a", "1", Expect::Absent)])])).unwrap();
        rt.block_on(sm.build_snapshot()).unwrap();
    }
    let sm = StateMachine::open(&dir.path().join("sm.redb")).unwrap();
    assert_eq!(sm.get("/a").unwrap().map(|s| s.value), Some("1".into()));
    assert!(rt.block_on(sm.clone().get_current_snapshot()).unwrap().is_some());

    // The log's metadata is durable too. (Appending, with its flush callback, is covered by the
    // conformance suite; openraft does not let a test build that callback itself.)
    let path = dir.path().join("raft-log");
    {
        let mut log = LogStore::open(&path).unwrap();
        rt.block_on(log.save_vote(&openraft::Vote::new(3, 1))).unwrap();
    }
    let mut log = LogStore::open(&path).unwrap();
    assert_eq!(rt.block_on(log.read_vote()).unwrap(), Some(openraft::Vote::new(3, 1)));
    assert!(rt.block_on(log.try_get_log_entries(0..10)).unwrap().is_empty());
}

/// The keys a scan by `selector` visits now.
fn scanned(sm: &StateMachine, prefix: &str, selector: &str) -> Vec<String> {
    let needs =
        apiserver::raft::labels::LabelNeeds::of(&api::selector::LabelSelector::parse(selector).unwrap());
    let mut keys = Vec::new();
    let scan = apiserver::raft::Scan { prefix, after: None, at: None, labels: &needs };
    sm.scan(scan, &mut |k, _| {
        keys.push(k);
        true
    })
    .unwrap()
    .unwrap();
    keys
}

/// The label index follows every apply, is rebuilt when the state machine opens again, and
/// when a snapshot replaces the state.
#[test]
fn the_label_index_follows_applies_restarts_and_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let obj = |color: &str| format!(r#"{{"metadata":{{"labels":{{"color":"{color}"}}}}}}"#);
    let mut a = StateMachine::open(&dir.path().join("a.redb")).unwrap();
    rt.block_on(a.apply((1..=9).map(|i| {
        entry(i, vec![put(&format!("/k/{i}"), &obj(["red", "blue", "green"][i as usize % 3]), Expect::Any)])
    })))
    .unwrap();
    assert_eq!(scanned(&a, "/k/", "color=red"), ["/k/3", "/k/6", "/k/9"]);
    rt.block_on(a.apply(vec![
        entry(10, vec![put("/k/3", &obj("blue"), Expect::Any)]),
        entry(11, vec![Op::Delete { key: "/k/6".into(), expect: Expect::Any }]),
        entry(12, vec![put("/k/1", &obj("red"), Expect::Any)]),
    ]))
    .unwrap();
    assert_eq!(scanned(&a, "/k/", "color=red"), ["/k/1", "/k/9"]);
    assert_eq!(scanned(&a, "/k/", "color in (blue,green)"), ["/k/2", "/k/3", "/k/4", "/k/5", "/k/7", "/k/8"]);
    let snap = rt.block_on(a.build_snapshot()).unwrap();
    drop(a);
    let a = StateMachine::open(&dir.path().join("a.redb")).unwrap();
    assert_eq!(scanned(&a, "/k/", "color=red"), ["/k/1", "/k/9"], "after a restart");

    let mut b = StateMachine::open(&dir.path().join("b.redb")).unwrap();
    rt.block_on(b.apply(vec![entry(1, vec![put("/k/0", &obj("red"), Expect::Any)])])).unwrap();
    rt.block_on(b.install_snapshot(&snap.meta, snap.snapshot)).unwrap();
    assert_eq!(scanned(&b, "/k/", "color=red"), ["/k/1", "/k/9"], "after a snapshot");
    assert_eq!(scanned(&b, "/k/", "color"), scanned(&b, "/k/", ""), "every key has a color");
}

/// Objects, log entries and history records are stored packed (LZ4), and what a build before
/// packing wrote (plain JSON) still reads as it did.
#[test]
fn objects_entries_and_history_written_before_packing_still_read_and_new_ones_are_packed() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let object = |i: u64| {
        format!(
            r#"{{"metadata":{{"name":"n{i}","labels":{{"app":"web"}}}},"spec":{{"image":"registry.example/web:1","args":["--port","8080","--verbose"],"env":{{"GREETING":"hello from a web server","FAREWELL":"goodbye from a web server"}}}}}}"#
        )
    };
    // A log and a history as a build before packing left them.
    let old_entry = entry(1, vec![put("/k/1", &object(1), Expect::Absent)]);
    let old_record = serde_json::json!({
        "applied_at_ms": 1,
        "changes": [{"key": "/k/1", "prev": null, "new": {"create_revision": 1, "mod_revision": 1, "value": "as an older build wrote it"}}],
    });
    {
        // Written by redb 2 as those builds were (file format 2): imported through its upgrade.
        let log = redb2::Database::create(dir.path().join("log.redb")).unwrap();
        let txn = log.begin_write().unwrap();
        txn.open_table(redb2::TableDefinition::<u64, &[u8]>::new("log"))
            .unwrap()
            .insert(1, serde_json::to_vec(&old_entry).unwrap().as_slice())
            .unwrap();
        txn.commit().unwrap();
        // Revision 1 applied, its history record then put back as an older build wrote it.
        let mut sm = StateMachine::open(&dir.path().join("sm.redb")).unwrap();
        rt.block_on(sm.apply(vec![entry(1, vec![put("/k/1", &object(1), Expect::Absent)])])).unwrap();
        drop(sm);
        let sm = redb::Database::open(dir.path().join("sm.redb")).unwrap();
        let txn = sm.begin_write().unwrap();
        txn.open_table(redb::TableDefinition::<u64, &[u8]>::new("history"))
            .unwrap()
            .insert(1, serde_json::to_vec(&old_record).unwrap().as_slice())
            .unwrap();
        // An object as an older build stored it: revisions, then its JSON as it is.
        let mut old_object = [1u64.to_be_bytes(), 1u64.to_be_bytes()].concat();
        old_object.extend_from_slice(object(0).as_bytes());
        txn.open_table(redb::TableDefinition::<&str, &[u8]>::new("objects"))
            .unwrap()
            .insert("/k/0", old_object.as_slice())
            .unwrap();
        txn.commit().unwrap();
    }
    // Imported into the WAL as it was stored.
    let imported =
        apiserver::raft::import_redb(&dir.path().join("log.redb"), &dir.path().join("log")).unwrap();
    assert_eq!(imported, apiserver::raft::Imported::Done);
    let mut log = LogStore::open(&dir.path().join("log")).unwrap();
    let read = rt.block_on(log.try_get_log_entries(0..10)).unwrap();
    assert_eq!(read.len(), 1);
    assert_eq!(serde_json::to_value(&read[0]).unwrap(), serde_json::to_value(&old_entry).unwrap());
    assert_eq!(rt.block_on(log.get_log_state()).unwrap().last_log_id, Some(log_id(1)));
    drop(log);

    let mut sm = StateMachine::open(&dir.path().join("sm.redb")).unwrap();
    assert_eq!(sm.get("/k/0").unwrap().map(|s| s.value), Some(object(0)));
    assert_eq!(sm.get("/k/1").unwrap().map(|s| s.value), Some(object(1)));
    let old = sm.changes_after(0, 10).unwrap().unwrap();
    assert_eq!(old.changes.len(), 1);
    assert_eq!(old.changes[0].1.new.as_ref().map(|s| s.value.as_str()), Some("as an older build wrote it"));
    // New records are packed, and read back whole.
    rt.block_on(sm.apply((2..=5).map(|i| entry(i, vec![put(&format!("/k/{i}"), &object(i), Expect::Any)]))))
        .unwrap();
    let after = sm.changes_after(1, 10).unwrap().unwrap();
    let values: Vec<String> =
        after.changes.iter().filter_map(|(_, c)| c.new.as_ref().map(|s| s.value.clone())).collect();
    assert_eq!(values, (2..=5).map(object).collect::<Vec<_>>());
    drop((sm, after));
    let db = redb::Database::open(dir.path().join("sm.redb")).unwrap();
    let txn = redb::ReadableDatabase::begin_read(&db).unwrap();
    let history = txn.open_table(redb::TableDefinition::<u64, &[u8]>::new("history")).unwrap();
    let first = |rev: u64| history.get(rev).unwrap().unwrap().value()[0];
    assert_eq!(first(1), b'{', "the old record is left as it was");
    assert_eq!(first(3), 0x01, "a new record is packed");
    let objects = txn.open_table(redb::TableDefinition::<&str, &[u8]>::new("objects")).unwrap();
    assert_eq!(objects.get("/k/0").unwrap().unwrap().value()[16], b'{', "the old object is left as it was");
    assert_eq!(objects.get("/k/3").unwrap().unwrap().value()[16], 0x01, "a new object is packed");
    drop((objects, history, txn, db));
    // stored_records reads them unpacked (what a test looking for a string on disk searches).
    let records = apiserver::raft::stored_records(&dir.path().join("sm.redb")).unwrap();
    let holds = |text: &str| records.iter().any(|r| r.windows(text.len()).any(|w| w == text.as_bytes()));
    assert!(holds(&object(3)) && holds(&object(0)), "objects, packed or not, read whole");
    // A new history record is CBOR: the object's JSON is in it as it is, not escaped.
    let (new, text) = (object(4), object(4).into_bytes());
    assert!(
        records.iter().any(|r| r.first() == Some(&0x02) && r.windows(text.len()).any(|w| w == text)),
        "a packed history record reads whole, CBOR holding {new} as it is"
    );
}

/// A state machine written by redb 2 (file format 2: every member from before redb 4) opens
/// as it was, moved to format 3 in place at the first start: objects, revision, history and
/// what was applied, and writes go on from there.
#[test]
fn a_state_machine_written_by_redb_2_opens_whole_and_goes_on() {
    use redb::{ReadableDatabase, ReadableTable};
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let (now, old) = (dir.path().join("now.redb"), dir.path().join("state.redb"));
    let mut sm = StateMachine::open(&now).unwrap();
    rt.block_on(
        sm.apply((1..=20).map(|i| entry(i, vec![put(&format!("/k/{i}"), &format!("v{i}"), Expect::Any)]))),
    )
    .unwrap();
    drop(sm);
    // The same rows, as redb 2 stores them.
    {
        let db = redb::Database::open(&now).unwrap();
        let from = db.begin_read().unwrap();
        let to = redb2::Database::create(&old).unwrap();
        let txn = to.begin_write().unwrap();
        for name in ["objects", "meta"] {
            let rows = from.open_table(redb::TableDefinition::<&str, &[u8]>::new(name)).unwrap();
            let mut into = txn.open_table(redb2::TableDefinition::<&str, &[u8]>::new(name)).unwrap();
            for row in rows.iter().unwrap() {
                let (k, v) = row.unwrap();
                into.insert(k.value(), v.value()).unwrap();
            }
        }
        let rows = from.open_table(redb::TableDefinition::<u64, &[u8]>::new("history")).unwrap();
        let mut into = txn.open_table(redb2::TableDefinition::<u64, &[u8]>::new("history")).unwrap();
        for row in rows.iter().unwrap() {
            let (k, v) = row.unwrap();
            into.insert(k.value(), v.value()).unwrap();
        }
        drop(into);
        txn.commit().unwrap();
    }
    assert!(
        matches!(redb::Database::open(&old), Err(redb::DatabaseError::UpgradeRequired(2))),
        "redb 4 cannot open it as it is"
    );
    let mut sm = StateMachine::open(&old).unwrap();
    assert_eq!(sm.get("/k/7").unwrap().map(|s| (s.value, s.mod_revision)), Some(("v7".into(), 7)));
    assert_eq!(rt.block_on(sm.applied_state()).unwrap().0, Some(log_id(20)));
    assert_eq!(sm.changes_after(18, 10).unwrap().unwrap().changes.len(), 2);
    rt.block_on(sm.apply(vec![entry(21, vec![put("/k/21", "v21", Expect::Absent)])])).unwrap();
    assert_eq!(sm.get("/k/21").unwrap().map(|s| s.create_revision), Some(21));
    drop(sm);
    redb::Database::open(&old).expect("format 3 now");
    let sm = StateMachine::open(&old).unwrap();
    assert_eq!(sm.get("/k/21").unwrap().map(|s| s.value), Some("v21".into()));
}

/// A member's log from before the WAL (`raft-log.redb`) moves into the WAL at its next start:
/// entries, vote, committed id and purge as they were; the old file is replaced by a
/// tombstone once the WAL is in place, and an import cut short (a staging directory left, or
/// the old file left beside a finished one) completes at the next.
#[test]
fn a_log_from_before_the_wal_is_imported_whole_once() {
    use apiserver::raft::{Imported, import_redb};
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let legacy = dir.path().join("raft-log.redb");
    let wal = dir.path().join("raft-log");
    let write_legacy = || {
        // As the builds before the WAL wrote it: redb 2, file format 2.
        let db = redb2::Database::create(&legacy).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut log = txn.open_table(redb2::TableDefinition::<u64, &[u8]>::new("log")).unwrap();
            for i in 3..=5 {
                let e = entry(i, vec![put(&format!("/k/{i}"), "v", Expect::Any)]);
                log.insert(i, serde_json::to_vec(&e).unwrap().as_slice()).unwrap();
            }
            let mut meta = txn.open_table(redb2::TableDefinition::<&str, &[u8]>::new("meta")).unwrap();
            let json = |v: serde_json::Value| serde_json::to_vec(&v).unwrap();
            meta.insert(
                "vote",
                json(serde_json::to_value(openraft::Vote::<NodeId>::new(3, 1)).unwrap()).as_slice(),
            )
            .unwrap();
            meta.insert("committed", json(serde_json::to_value(Some(log_id(4))).unwrap()).as_slice())
                .unwrap();
            meta.insert("last_purged", json(serde_json::to_value(log_id(2)).unwrap()).as_slice()).unwrap();
        }
        txn.commit().unwrap();
    };
    write_legacy();
    // A staging directory left by an import cut short is made again from the start.
    std::fs::create_dir(dir.path().join("raft-log.import")).unwrap();
    std::fs::write(dir.path().join("raft-log.import").join("0000000000000001.wal"), b"junk").unwrap();
    assert_eq!(import_redb(&legacy, &wal).unwrap(), Imported::Done);
    // In its place, a file an older build refuses to open (rather than start on an empty log).
    assert!(std::fs::read(&legacy).unwrap().starts_with(b"univrs: not a database."));
    assert!(redb2::Database::create(&legacy).is_err(), "an older build cannot open it");
    assert!(redb::Database::create(&legacy).is_err(), "nor this one's redb");
    assert!(!dir.path().join("raft-log.import").exists());
    assert_eq!(import_redb(&legacy, &wal).unwrap(), Imported::Nothing);
    let check = |log: &mut LogStore| {
        let state = rt.block_on(log.get_log_state()).unwrap();
        assert_eq!((state.last_purged_log_id, state.last_log_id), (Some(log_id(2)), Some(log_id(5))));
        assert_eq!(rt.block_on(log.read_vote()).unwrap(), Some(openraft::Vote::new(3, 1)));
        assert_eq!(rt.block_on(log.read_committed()).unwrap(), Some(log_id(4)));
        let read = rt.block_on(log.try_get_log_entries(0..10)).unwrap();
        let expected: Vec<_> =
            (3..=5).map(|i| entry(i, vec![put(&format!("/k/{i}"), "v", Expect::Any)])).collect();
        assert_eq!(serde_json::to_value(&read).unwrap(), serde_json::to_value(&expected).unwrap());
    };
    let mut log = LogStore::open(&wal).unwrap();
    check(&mut log);
    rt.block_on(log.save_vote(&openraft::Vote::new(4, 1))).unwrap();
    drop(log);
    // The old file left beside a finished import (stopped before it was replaced): replaced,
    // not imported over what the WAL has since.
    std::fs::remove_file(&legacy).unwrap();
    write_legacy();
    assert_eq!(import_redb(&legacy, &wal).unwrap(), Imported::Removed);
    assert!(apiserver::raft::is_tombstone(&legacy).unwrap());
    // A member that never had an old log gets the tombstone too, once its WAL exists.
    let fresh = tempfile::tempdir().unwrap();
    let fresh_legacy = fresh.path().join("raft-log.redb");
    let fresh_wal = fresh.path().join("raft-log");
    assert_eq!(import_redb(&fresh_legacy, &fresh_wal).unwrap(), Imported::Nothing);
    drop(LogStore::open(&fresh_wal).unwrap());
    apiserver::raft::ensure_tombstone(&fresh_legacy).unwrap();
    assert!(apiserver::raft::is_tombstone(&fresh_legacy).unwrap());
    assert_eq!(import_redb(&fresh_legacy, &fresh_wal).unwrap(), Imported::Nothing);
    // The tombstone without the WAL: the log is lost, and the member does not start on an
    // empty one.
    std::fs::remove_dir_all(&fresh_wal).unwrap();
    let err = import_redb(&fresh_legacy, &fresh_wal).unwrap_err();
    assert!(err.to_string().contains("refusing to start on an empty log"), "{err}");
    let mut log = LogStore::open(&wal).unwrap();
    assert_eq!(rt.block_on(log.read_vote()).unwrap(), Some(openraft::Vote::new(4, 1)));
}
