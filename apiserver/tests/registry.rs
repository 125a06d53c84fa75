//! Kubernetes object semantics, and the access rules and quotas around them: a conformance
//! suite every store passes, run on a real single-voter Raft member on disk and on the
//! in-memory store (`MemStore`).

use api::kinds::by_kind;
use apiserver::access::Caller;
use apiserver::raft::history::{Changes, Compacted};
use apiserver::raft::{Options, RaftNode};
use apiserver::raft::{Scan, Stored, Visit, WriteError};
use apiserver::registry::store::BoxFuture;
use apiserver::registry::{MemStore, Store, StoreError};

/// The server itself: these tests are about object semantics, not access.
static SYS: std::sync::LazyLock<Caller> = std::sync::LazyLock::new(Caller::system);
use apiserver::registry::{
    ApiError, DeleteOptions, Deleted, ListOptions, ObjectRef, Part, Patch, ReadAt, Registry, WriteOptions,
};
use serde_json::{Value, json};

async fn registry(dir: &std::path::Path) -> Registry {
    Registry::new(RaftNode::start_single(dir, Options::default()).await.unwrap())
}

/// Each test of the suite, once on a Raft member on disk and once in memory.
macro_rules! on_every_store {
    ($($name:ident),* $(,)?) => {
        mod raft_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let dir = tempfile::tempdir().unwrap();
                    super::$name(super::registry(dir.path()).await).await;
                }
            )*
        }
        mod memory_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Registry::new(super::MemStore::new())).await;
                }
            )*
        }
    };
}

/// `obj` signed by the test's owner key now (objects of signed kinds must verify).
fn signed(mut obj: Value) -> Value {
    let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    api::signing::sign(&mut obj, &key, chrono::Utc::now()).unwrap();
    obj
}

/// Shorthands for the calls these tests make over and over.
trait Short {
    async fn make(&self, kind: &api::KindInfo, obj: Value) -> Result<Value, ApiError>;
    async fn put(&self, kind: &api::KindInfo, obj: Value) -> Result<Value, ApiError>;
    async fn read(&self, kind: &api::KindInfo, name: &str) -> Result<Value, ApiError>;
    async fn all(&self, kind: &api::KindInfo, ns: Option<&str>) -> apiserver::registry::List;
    async fn remove(&self, kind: &api::KindInfo, name: &str, rv: Option<u64>) -> Result<Value, ApiError>;
}

impl Short for Registry {
    async fn make(&self, kind: &api::KindInfo, obj: Value) -> Result<Value, ApiError> {
        let obj = if kind.signed { signed(obj) } else { obj };
        self.create(&SYS, kind, obj, &WriteOptions::default()).await.map(|w| w.object)
    }
    async fn put(&self, kind: &api::KindInfo, obj: Value) -> Result<Value, ApiError> {
        let name = obj["metadata"]["name"].as_str().unwrap().to_owned();
        let ns = obj["metadata"]["namespace"].as_str().unwrap_or("default").to_owned();
        let obj = if kind.signed { signed(obj) } else { obj };
        self.update(&SYS, ObjectRef::new(kind, Some(&ns), &name), Part::Main, obj, &WriteOptions::default())
            .await
            .map(|w| w.object)
    }
    async fn read(&self, kind: &api::KindInfo, name: &str) -> Result<Value, ApiError> {
        self.get(&SYS, ObjectRef::new(kind, Some("default"), name), ReadAt::Latest).await
    }
    async fn all(&self, kind: &api::KindInfo, ns: Option<&str>) -> apiserver::registry::List {
        self.list(&SYS, kind, ns, &ListOptions::default()).await.unwrap()
    }
    async fn remove(&self, kind: &api::KindInfo, name: &str, rv: Option<u64>) -> Result<Value, ApiError> {
        let opts = DeleteOptions { resource_version: rv, ..Default::default() };
        match self.delete(&SYS, ObjectRef::new(kind, Some("default"), name), &opts).await? {
            Deleted::Gone(v) | Deleted::Pending(v) => Ok(v),
        }
    }
}

fn workload(name: &str, replicas: i64) -> Value {
    json!({ "apiVersion": "univrs.io/v1", "kind": "Workload",
            "metadata": { "name": name, "labels": { "app": name } },
            "spec": { "replicas": replicas, "rootfs": "busybox" } })
}

fn rv(obj: &Value) -> u64 {
    obj["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap()
}

async fn create_get_update_delete_with_kubernetes_semantics(reg: Registry) {
    let wl = by_kind("Workload").unwrap();

    let created = reg.make(wl, workload("web", 2)).await.unwrap();
    let meta = &created["metadata"];
    assert_eq!(meta["namespace"], "default");
    assert_eq!(meta["generation"], 1);
    assert!(meta["uid"].as_str().unwrap().len() == 36);
    assert!(meta["creationTimestamp"].as_str().unwrap().ends_with('Z'));
    let rv1 = rv(&created);
    assert_eq!(reg.read(wl, "web").await.unwrap(), created);

    let again = reg.make(wl, workload("web", 3)).await.unwrap_err();
    assert!(matches!(again, ApiError::AlreadyExists { .. }) && again.code() == 409, "{again}");

    // A label change keeps the generation; a spec change bumps it; uid and status stay.
    let mut labeled = created.clone();
    labeled["metadata"]["labels"]["tier"] = json!("front");
    let labeled = reg.put(wl, labeled).await.unwrap();
    assert_eq!(labeled["metadata"]["generation"], 1);
    assert!(rv(&labeled) > rv1);
    let mut scaled = labeled.clone();
    scaled["spec"]["replicas"] = json!(5);
    scaled["metadata"].as_object_mut().unwrap().remove("uid");
    scaled["status"] = json!({ "replicas": 99 });
    let scaled = reg.put(wl, scaled).await.unwrap();
    assert_eq!(scaled["metadata"]["generation"], 2);
    assert_eq!(scaled["metadata"]["uid"], created["metadata"]["uid"]);
    assert!(scaled.get("status").is_none(), "an update of the object changed its status");

    // A stale resourceVersion is a conflict and changes nothing.
    let mut stale = created.clone();
    stale["spec"]["replicas"] = json!(7);
    let err = reg.put(wl, stale).await.unwrap_err();
    assert!(matches!(err, ApiError::Conflict { .. }), "{err}");
    assert_eq!(reg.read(wl, "web").await.unwrap()["spec"]["replicas"], 5);

    let err = reg.remove(wl, "web", Some(rv1)).await.unwrap_err();
    assert!(matches!(err, ApiError::Conflict { .. }), "{err}");
    let deleted = reg.remove(wl, "web", None).await.unwrap();
    assert_eq!(deleted["spec"]["replicas"], 5);
    let err = reg.read(wl, "web").await.unwrap_err();
    assert!(matches!(err, ApiError::NotFound { .. }) && err.code() == 404, "{err}");
    assert!(matches!(reg.remove(wl, "web", None).await, Err(ApiError::NotFound { .. })));
}

async fn lists_are_per_namespace_or_all_and_carry_a_consistent_revision(reg: Registry) {
    let wl = by_kind("Workload").unwrap();
    let mut last = 0;
    for (ns, name) in [("default", "a"), ("prod", "b"), ("prod", "c")] {
        let mut obj = workload(name, 1);
        obj["metadata"]["namespace"] = json!(ns);
        last = rv(&reg.make(wl, obj).await.unwrap());
    }
    let prod = reg.all(wl, Some("prod")).await;
    let names: Vec<_> =
        values(&prod).into_iter().map(|o| o["metadata"]["name"].as_str().unwrap().to_owned()).collect();
    assert_eq!(names, ["b", "c"]);
    assert!(prod.revision >= last);
    assert_eq!(reg.all(wl, None).await.items.len(), 3);
    assert!(reg.all(by_kind("Node").unwrap(), None).await.items.is_empty());
}

async fn invalid_objects_are_refused_with_field_paths_and_change_nothing(reg: Registry) {
    let wl = by_kind("Workload").unwrap();
    let before = reg.all(wl, None).await.revision;

    let err = reg.make(wl, workload("Bad_Name", -1)).await.unwrap_err();
    let ApiError::Invalid { causes, .. } = &err else { panic!("{err}") };
    let paths: Vec<_> = causes.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(paths, ["metadata.name", "spec.replicas"]);
    assert_eq!(err.code(), 422);

    let err = reg.make(by_kind("TrustPolicy").unwrap(), workload("w", 1)).await.unwrap_err();
    assert!(matches!(err, ApiError::BadRequest(_)), "{err}");
    let mut with_rv = workload("w", 1);
    with_rv["metadata"]["resourceVersion"] = json!("5");
    assert!(matches!(reg.make(wl, with_rv).await, Err(ApiError::BadRequest(_))));
    let offer = json!({ "apiVersion": "univrs.io/v1", "kind": "Attestation",
        "metadata": { "name": "a", "namespace": "default" }, "spec": { "subjectKind": "Node", "subject": "n1" } });
    let err = reg.make(by_kind("Attestation").unwrap(), offer).await.unwrap_err();
    assert!(matches!(err, ApiError::Invalid { .. }), "{err}");

    assert_eq!(reg.all(wl, None).await.revision, before, "a refused request was committed");
}

async fn a_stored_signed_manifest_still_verifies(reg: Registry) {
    let wl = by_kind("Workload").unwrap();
    let mut obj = workload("signed", 1); // no namespace: the server defaults it
    let key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    api::signing::sign(&mut obj, &key, chrono::Utc::now()).unwrap();
    let stored = reg.make(wl, obj).await.unwrap();
    api::signing::verify(&stored).expect("create keeps the signature valid");
    let mut relabeled = stored.clone();
    relabeled["status"] = json!({});
    let updated = reg.put(wl, relabeled).await.unwrap();
    api::signing::verify(&updated).expect("an update that changes nothing signed keeps it valid");
    api::signing::verify(&reg.read(wl, "signed").await.unwrap()).unwrap();
}

fn merge(v: Value) -> apiserver::registry::Patch {
    apiserver::registry::Patch::Merge(v)
}

async fn status_and_spec_are_written_separately(reg: Registry) {
    let wl = by_kind("Workload").unwrap();
    let opts = WriteOptions::default();
    reg.make(wl, workload("web", 1)).await.unwrap();

    let status = json!({ "status": { "replicas": 1, "readyReplicas": 1 }, "spec": { "replicas": 9 } });
    let w = reg
        .patch(&SYS, ObjectRef::new(wl, Some("default"), "web"), Part::Status, &merge(status), &opts)
        .await
        .unwrap();
    assert_eq!(w.object["status"]["readyReplicas"], 1);
    assert_eq!(w.object["spec"]["replicas"], 1, "a status write changed the spec");
    assert_eq!(w.object["metadata"]["generation"], 1, "a status write bumped the generation");

    // The owner changes the spec (signing it again); the status it sends is not taken.
    let mut spec = reg.read(wl, "web").await.unwrap();
    spec["spec"]["replicas"] = json!(2);
    spec["status"] = json!({ "readyReplicas": 0 });
    let spec = signed(spec);
    let w =
        reg.update(&SYS, ObjectRef::new(wl, Some("default"), "web"), Part::Main, spec, &opts).await.unwrap();
    assert_eq!(w.object["spec"]["replicas"], 2);
    assert_eq!(w.object["status"]["readyReplicas"], 1, "a spec write changed the status");
    assert_eq!(w.object["metadata"]["generation"], 2);

    // A write that changes nothing makes no revision.
    let before = reg.read(wl, "web").await.unwrap();
    let w = reg
        .patch(
            &SYS,
            ObjectRef::new(wl, Some("default"), "web"),
            Part::Main,
            &merge(json!({"spec": {"replicas": 2}})),
            &opts,
        )
        .await
        .unwrap();
    assert_eq!(w.object["metadata"]["resourceVersion"], before["metadata"]["resourceVersion"]);
}

async fn finalizers_hold_a_deleted_object_until_the_last_is_removed(reg: Registry) {
    let wl = by_kind("Workload").unwrap();
    let opts = WriteOptions::default();
    let mut obj = workload("held", 1);
    obj["metadata"]["finalizers"] = json!(["a.example/x", "b.example/y"]);
    reg.make(wl, obj).await.unwrap();

    let pending = reg
        .delete(&SYS, ObjectRef::new(wl, Some("default"), "held"), &DeleteOptions::default())
        .await
        .unwrap();
    let Deleted::Pending(pending) = pending else { panic!("deleted despite finalizers") };
    assert!(pending["metadata"]["deletionTimestamp"].is_string());
    // Deleting again changes nothing.
    let Deleted::Pending(again) = reg
        .delete(&SYS, ObjectRef::new(wl, Some("default"), "held"), &DeleteOptions::default())
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(again["metadata"]["resourceVersion"], pending["metadata"]["resourceVersion"]);

    let one = merge(json!({ "metadata": { "finalizers": ["b.example/y"] } }));
    reg.patch(&SYS, ObjectRef::new(wl, Some("default"), "held"), Part::Main, &one, &opts).await.unwrap();
    assert!(reg.read(wl, "held").await.is_ok(), "went with a finalizer left");
    let none = apiserver::registry::Patch::Json(json!([{ "op": "remove", "path": "/metadata/finalizers" }]));
    reg.patch(&SYS, ObjectRef::new(wl, Some("default"), "held"), Part::Main, &none, &opts).await.unwrap();
    assert!(matches!(reg.read(wl, "held").await, Err(ApiError::NotFound { .. })));
}

async fn server_side_apply_creates_merges_and_records_the_manager(reg: Registry) {
    let wl = by_kind("Workload").unwrap();
    let apply = |v: Value| apiserver::registry::Patch::Apply(v);
    let opts = WriteOptions { field_manager: Some("gitops".into()), ..Default::default() };

    let missing = reg
        .patch(
            &SYS,
            ObjectRef::new(wl, Some("default"), "web"),
            Part::Main,
            &apply(signed(workload("web", 1))),
            &WriteOptions::default(),
        )
        .await;
    assert!(matches!(missing, Err(ApiError::BadRequest(m)) if m.contains("fieldManager")));

    let created = reg
        .patch(
            &SYS,
            ObjectRef::new(wl, Some("default"), "web"),
            Part::Main,
            &apply(signed(workload("web", 1))),
            &opts,
        )
        .await
        .unwrap();
    assert!(created.created);
    let managers = &created.object["metadata"]["managedFields"];
    assert_eq!(managers[0]["manager"], "gitops");
    assert_eq!(managers[0]["operation"], "Apply");
    assert!(managers[0]["fieldsV1"]["f:spec"]["f:replicas"].is_object(), "{managers}");

    // Another writer adds a finalizer; the manager applies a new replica count: both stay.
    let hold = merge(json!({ "metadata": { "finalizers": ["example.com/hold"] } }));
    reg.patch(&SYS, ObjectRef::new(wl, Some("default"), "web"), Part::Main, &hold, &WriteOptions::default())
        .await
        .unwrap();
    let three = apply(signed(workload("web", 3)));
    let again =
        reg.patch(&SYS, ObjectRef::new(wl, Some("default"), "web"), Part::Main, &three, &opts).await.unwrap();
    assert!(!again.created);
    assert_eq!(again.object["spec"]["replicas"], 3);
    assert_eq!(again.object["metadata"]["finalizers"], json!(["example.com/hold"]));
    api::signing::verify(&again.object).expect("the applied object is the signed manifest");
    // Applying the same thing again changes nothing.
    let same =
        reg.patch(&SYS, ObjectRef::new(wl, Some("default"), "web"), Part::Main, &three, &opts).await.unwrap();
    assert_eq!(same.object["metadata"]["resourceVersion"], again.object["metadata"]["resourceVersion"]);
}

async fn dry_runs_and_field_validation_change_nothing_they_should_not(reg: Registry) {
    let wl = by_kind("Workload").unwrap();
    let before = reg.all(wl, None).await.revision;
    let dry = WriteOptions { dry_run: true, ..Default::default() };
    let w = reg.create(&SYS, wl, signed(workload("dry", 1)), &dry).await.unwrap();
    assert_eq!(w.object["metadata"]["name"], "dry");
    assert!(matches!(reg.read(wl, "dry").await, Err(ApiError::NotFound { .. })));
    assert_eq!(reg.all(wl, None).await.revision, before, "a dry run was committed");

    // Signed without the unknown fields: once they are dropped (Warn), it verifies.
    let mut unknown = signed(workload("u", 1));
    unknown["spec"]["replica"] = json!(3);
    unknown["spec"]["bogus"] = json!({});
    let err = reg.create(&SYS, wl, unknown.clone(), &WriteOptions::default()).await.unwrap_err();
    assert_eq!(err.code(), 400);
    let known = "(known here: replicas, image, rootfs, command, args, env, resources, restartPolicy, trustPolicy, placement, livenessProbe, readinessProbe, ports)";
    assert_eq!(
        err.to_string(),
        format!(
            r#"strict decoding error: unknown field "spec.replica" {known}, unknown field "spec.bogus" {known}"#
        )
    );
    let warn = WriteOptions { validation: apiserver::registry::FieldValidation::Warn, ..Default::default() };
    let w = reg.create(&SYS, wl, unknown, &warn).await.unwrap();
    assert_eq!(w.warnings, [r#"unknown field "spec.replica""#, r#"unknown field "spec.bogus""#]);
    assert!(w.object["spec"].get("replica").is_none());
}

async fn pages_are_served_at_the_revision_of_the_first_and_selectors_apply(reg: Registry) {
    let wl = by_kind("Workload").unwrap();
    for i in 0..7 {
        let mut obj = workload(&format!("w{i}"), 1);
        obj["metadata"]["labels"]["parity"] = json!(if i % 2 == 0 { "even" } else { "odd" });
        reg.make(wl, obj).await.unwrap();
    }
    let page = |token: Option<String>| ListOptions { limit: 3, continue_token: token, ..Default::default() };
    let first = reg.list(&SYS, wl, None, &page(None)).await.unwrap();
    assert_eq!(first.items.len(), 3);
    assert!(first.continue_token.is_some());
    // Changes after the first page do not show in the next ones.
    reg.remove(wl, "w4", None).await.unwrap();
    reg.make(wl, workload("w9", 1)).await.unwrap();
    let mut replicas = reg.read(wl, "w5").await.unwrap();
    replicas["spec"]["replicas"] = json!(5);
    reg.put(wl, replicas).await.unwrap();
    let second = reg.list(&SYS, wl, None, &page(first.continue_token.clone())).await.unwrap();
    let third = reg.list(&SYS, wl, None, &page(second.continue_token.clone())).await.unwrap();
    assert_eq!(second.revision, first.revision);
    assert!(third.continue_token.is_none());
    let names: Vec<String> = [&first, &second, &third]
        .iter()
        .flat_map(|l| values(l).into_iter().map(|o| o["metadata"]["name"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(names, ["w0", "w1", "w2", "w3", "w4", "w5", "w6"]);
    assert_eq!(values(&second)[2]["spec"]["replicas"], 1, "w5 as it was at the first page's revision");

    let odd = ListOptions {
        selector: api::selector::Selector {
            labels: api::selector::LabelSelector::parse("parity=odd").unwrap(),
            fields: api::selector::FieldSelector::parse("metadata.name!=w1").unwrap(),
        },
        ..Default::default()
    };
    let names: Vec<_> = reg
        .list(&SYS, wl, None, &odd)
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|o| o.into_value().unwrap()["metadata"]["name"].clone())
        .collect();
    assert_eq!(names, [json!("w3"), json!("w5")]);

    let err = reg.list(&SYS, wl, None, &page(Some("garbage".into()))).await.unwrap_err();
    assert_eq!(err.code(), 400);
}

/// Lists by label (served from the label index on a Raft member) return what a scan of every
/// object would: across pages, at the first page's revision while labels change, move and
/// disappear, and with requirements that narrow and requirements that do not.
async fn lists_by_label_page_and_see_past_revisions_as_a_full_scan_would(reg: Registry) {
    let wl = by_kind("Workload").unwrap();
    let labeled = |i: usize, color: &str| {
        let mut obj = workload(&format!("w{i:02}"), 1);
        obj["metadata"]["labels"]["color"] = json!(color);
        obj
    };
    for i in 0..12 {
        reg.make(wl, labeled(i, ["red", "blue", "green"][i % 3])).await.unwrap();
    }
    let names = |items: &[Value]| -> Vec<String> {
        items.iter().map(|o| o["metadata"]["name"].as_str().unwrap().to_owned()).collect()
    };
    // What a full scan says: every object, filtered here.
    let expected = |items: &[Value], sel: &str| -> Vec<String> {
        let sel = api::selector::Selector {
            labels: api::selector::LabelSelector::parse(sel).unwrap(),
            ..Default::default()
        };
        names(&items.iter().filter(|o| sel.matches(o)).cloned().collect::<Vec<_>>())
    };
    let by = |sel: &str, limit: usize, token: Option<String>, read: ReadAt| ListOptions {
        selector: api::selector::Selector {
            labels: api::selector::LabelSelector::parse(sel).unwrap(),
            ..Default::default()
        },
        limit,
        continue_token: token,
        read,
    };
    let selectors = [
        "color=red",
        "color in (red,blue)",
        "color",
        "color=red,app=w03",
        "color!=red",
        "color=none",
        "!color",
    ];
    let before = reg.all(wl, None).await;
    for sel in selectors {
        let got = reg.list(&SYS, wl, None, &by(sel, 0, None, ReadAt::Latest)).await.unwrap();
        assert_eq!(names(&values(&got)), expected(&values(&before), sel), "{sel}");
    }

    let first = reg.list(&SYS, wl, None, &by("color=red", 2, None, ReadAt::Latest)).await.unwrap();
    assert_eq!(names(&values(&first)), ["w00", "w03"]);
    // After the first page: w06 turns blue, w07 turns red, w09 goes, w12 comes red.
    let mut w06 = reg.read(wl, "w06").await.unwrap();
    w06["metadata"]["labels"]["color"] = json!("blue");
    reg.put(wl, w06).await.unwrap();
    let mut w07 = reg.read(wl, "w07").await.unwrap();
    w07["metadata"]["labels"]["color"] = json!("red");
    reg.put(wl, w07).await.unwrap();
    reg.remove(wl, "w09", None).await.unwrap();
    reg.make(wl, labeled(12, "red")).await.unwrap();

    let mut pages = vec![first];
    while let Some(token) = pages.last().unwrap().continue_token.clone() {
        let page = reg.list(&SYS, wl, None, &by("color=red", 2, Some(token), ReadAt::Latest)).await.unwrap();
        assert_eq!(page.revision, pages[0].revision);
        pages.push(page);
    }
    let all: Vec<String> = pages.iter().flat_map(|p| names(&values(p))).collect();
    assert_eq!(all, ["w00", "w03", "w06", "w09"], "the red ones at the first page's revision");
    assert_eq!(values(&pages[1])[0]["metadata"]["labels"]["color"], "red", "w06 as it was then");

    // An exact past revision, and now.
    let then =
        reg.list(&SYS, wl, None, &by("color=red", 0, None, ReadAt::Exact(pages[0].revision))).await.unwrap();
    assert_eq!(names(&values(&then)), ["w00", "w03", "w06", "w09"]);
    let after = reg.all(wl, None).await;
    for sel in selectors {
        let got = reg.list(&SYS, wl, None, &by(sel, 0, None, ReadAt::Latest)).await.unwrap();
        assert_eq!(names(&values(&got)), expected(&values(&after), sel), "{sel} now");
    }
    let now = reg.list(&SYS, wl, None, &by("color=red", 0, None, ReadAt::Latest)).await.unwrap();
    assert_eq!(names(&values(&now)), ["w00", "w03", "w07", "w12"]);
}

async fn reads_wait_for_a_revision_not_yet_applied_and_time_out_past_it(reg: Registry) {
    let wl = by_kind("Workload").unwrap();
    let created = reg.make(wl, workload("w", 1)).await.unwrap();
    let at = rv(&created);
    let got =
        reg.get(&SYS, ObjectRef::new(wl, Some("default"), "w"), ReadAt::NotOlderThan(at)).await.unwrap();
    assert_eq!(rv(&got), at);
    let err = reg
        .get(&SYS, ObjectRef::new(wl, Some("default"), "w"), ReadAt::NotOlderThan(at + 1000))
        .await
        .unwrap_err();
    assert_eq!(err.code(), 504, "{err}");
    let exact = ListOptions { read: ReadAt::Exact(at - 1), ..Default::default() };
    assert!(reg.list(&SYS, wl, None, &exact).await.unwrap().items.is_empty(), "the state before the create");
}

async fn foreground_and_orphan_deletion_hold_the_object_for_the_garbage_collector(reg: Registry) {
    let wl = by_kind("Workload").unwrap();
    for (name, policy, finalizer) in [("fg", "Foreground", "foregroundDeletion"), ("or", "Orphan", "orphan")]
    {
        reg.make(wl, workload(name, 1)).await.unwrap();
        let opts = DeleteOptions { propagation: Some(policy.into()), ..Default::default() };
        let Deleted::Pending(held) =
            reg.delete(&SYS, ObjectRef::new(wl, Some("default"), name), &opts).await.unwrap()
        else {
            panic!("{policy} deleted at once")
        };
        assert_eq!(held["metadata"]["finalizers"], json!([finalizer]));
        assert!(held["metadata"]["deletionTimestamp"].is_string());
    }
    let opts = DeleteOptions { propagation: Some("Background".into()), ..Default::default() };
    reg.make(wl, workload("bg", 1)).await.unwrap();
    assert!(matches!(
        reg.delete(&SYS, ObjectRef::new(wl, Some("default"), "bg"), &opts).await.unwrap(),
        Deleted::Gone(_)
    ));
}

fn key(seed: u8) -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[seed; 32])
}

fn caller(key: &ed25519_dalek::SigningKey) -> Caller {
    Caller::identity(api::identity::Did::from_key(&key.verifying_key()), false)
}

fn signed_by(mut obj: Value, key: &ed25519_dalek::SigningKey, at: &str) -> Value {
    let at = chrono::DateTime::parse_from_rfc3339(at).unwrap().with_timezone(&chrono::Utc);
    api::signing::sign(&mut obj, key, at).unwrap();
    obj
}

async fn a_stranger_is_refused_before_any_work_and_learns_nothing(reg: Registry) {
    let (alice, bob) = (key(1), key(2));
    let wl = by_kind("Workload").unwrap();
    let mut w = workload("web", 1);
    w["spec"]["env"] = json!([{ "name": "TOKEN", "value": "s3cret" }]);
    let w = signed_by(w, &alice, "2026-01-01T00:00:00Z");
    let created = reg.create(&caller(&alice), wl, w, &WriteOptions::default()).await.unwrap().object;
    let bomb: Vec<Value> = (0..40)
        .map(|i| json!({ "op": "copy", "from": "", "path": format!("/metadata/annotations/x{i}") }))
        .collect();
    let probe = json!([{ "op": "test", "path": "/spec/env/0/value", "value": "guess" }]);
    for patch in
        [Patch::Json(Value::Array(bomb)), Patch::Json(probe), merge(json!({ "spec": { "replicas": "x" } }))]
    {
        let e = reg
            .patch(
                &caller(&bob),
                ObjectRef::new(wl, Some("default"), "web"),
                Part::Main,
                &patch,
                &WriteOptions::default(),
            )
            .await
            .unwrap_err();
        assert!(matches!(e, ApiError::Forbidden(_)), "{e}");
        assert!(!e.to_string().contains("s3cret") && e.to_string().contains("only its owner"), "{e}");
    }
    let seen =
        reg.get(&caller(&bob), ObjectRef::new(wl, Some("default"), "web"), ReadAt::Latest).await.unwrap();
    assert_eq!(seen["spec"]["env"], json!([{ "name": "TOKEN" }]), "redacted for a stranger");
    assert_eq!(rv(&reg.read(wl, "web").await.unwrap()), rv(&created), "nothing changed");
}

async fn a_deleted_signed_object_cannot_come_back_older(reg: Registry) {
    let (alice, bob) = (key(1), key(2));
    let (wl, me, stranger) = (by_kind("Workload").unwrap(), caller(&alice), caller(&bob));
    let opts = WriteOptions::default();
    let web = ObjectRef::new(wl, Some("default"), "web");
    let newer = signed_by(workload("web", 2), &alice, "2026-02-01T00:00:00Z");
    let older = signed_by(workload("web", 1), &alice, "2026-01-01T00:00:00Z");
    reg.create(&me, wl, newer.clone(), &opts).await.unwrap();
    reg.delete(&me, web, &DeleteOptions::default()).await.unwrap();
    let e = reg.create(&me, wl, older.clone(), &opts).await.unwrap_err();
    assert!(e.to_string().contains("an older manifest cannot come back"), "{e}");
    assert!(e.to_string().contains("deleted at"), "its signer is told when: {e}");
    // The very manifest that was deleted, replayed by someone who read it: not theirs.
    let e = reg.create(&stranger, wl, newer.clone(), &opts).await.unwrap_err();
    assert!(matches!(e, ApiError::Forbidden(_)), "{e}");
    // Another signer's object may take the name, and its life leaves Alice's past alone.
    let bobs = signed_by(workload("web", 1), &bob, "2026-01-01T00:00:00Z");
    reg.create(&stranger, wl, bobs, &opts).await.unwrap();
    reg.delete(&stranger, web, &DeleteOptions::default()).await.unwrap();
    let e = reg.create(&me, wl, older.clone(), &opts).await.unwrap_err();
    assert!(e.to_string().contains("an older manifest cannot come back"), "{e}");
    // Its signer may apply the same manifest again (delete, then apply the same file).
    reg.create(&me, wl, newer, &opts).await.unwrap();
    reg.delete(&me, web, &DeleteOptions::default()).await.unwrap();
    // Once the tombstones have expired and are swept, the name is free of its past.
    assert_eq!(reg.sweep_tombstones(chrono::Utc::now()).await.unwrap(), 0, "still fresh");
    let later = chrono::Utc::now() + apiserver::registry::TOMBSTONE_TTL + std::time::Duration::from_secs(1);
    assert_eq!(reg.sweep_tombstones(later).await.unwrap(), 2, "Alice's and Bob's");
    reg.create(&me, wl, older, &opts).await.unwrap();
}

async fn quotas_count_what_each_signer_stores(reg: Registry) {
    let reg = reg.with_limits(apiserver::quota::Limits { objects: 2, replicas: 5, ..Default::default() });
    let (alice, bob) = (key(1), key(2));
    let wl = by_kind("Workload").unwrap();
    let opts = WriteOptions::default();
    let mine =
        |name: &str, replicas: i64| signed_by(workload(name, replicas), &alice, "2026-01-01T00:00:00Z");
    let e = reg.create(&caller(&alice), wl, mine("big", 6), &opts).await.unwrap_err();
    assert!(e.to_string().contains("replicas per signer (6 of 5"), "{e}");
    reg.create(&caller(&alice), wl, mine("a", 2), &opts).await.unwrap();
    reg.create(&caller(&alice), wl, mine("b", 2), &opts).await.unwrap();
    let e = reg.create(&caller(&alice), wl, mine("c", 1), &opts).await.unwrap_err();
    assert!(matches!(e, ApiError::TooManyRequests { retry_after: 60, .. }), "{e}");
    assert!(e.to_string().contains("objects per signer (3 of 2"), "{e}");
    // Another signer has quotas of its own; the server itself (a member) has none.
    reg.create(&caller(&bob), wl, signed_by(workload("c", 1), &bob, "2026-01-01T00:00:00Z"), &opts)
        .await
        .unwrap();
    reg.create(&SYS, wl, mine("d", 1), &opts).await.unwrap();
}

fn did_of(key: &ed25519_dalek::SigningKey) -> api::identity::Did {
    api::identity::Did::from_key(&key.verifying_key())
}

fn grant(name: &str, grantee: &api::identity::Did, limit: &str) -> Value {
    json!({ "apiVersion": "univrs.io/v1", "kind": "CreditGrant", "metadata": { "name": name },
            "spec": { "grantee": grantee, "limit": limit } })
}

fn payment(name: &str, to: &api::identity::Did, amount: &str) -> Value {
    json!({ "apiVersion": "univrs.io/v1", "kind": "Transfer", "metadata": { "name": name },
            "spec": { "to": to, "amount": amount, "reason": "Payment" } })
}

async fn balance(reg: &Registry, who: &api::identity::Did) -> String {
    let kind = by_kind("Account").unwrap();
    let name = api::kinds::account_name(who);
    match reg.get(&SYS, ObjectRef::new(kind, None, &name), ReadAt::Latest).await {
        Ok(a) => a["status"]["balance"].as_str().unwrap().to_owned(),
        Err(ApiError::NotFound { .. }) => "0".into(),
        Err(e) => panic!("{e}"),
    }
}

async fn transfers_are_decided_on_the_lines_and_posted_to_both_accounts_at_once(reg: Registry) {
    let (alice, bob) = (key(1), key(2));
    let (a, b) = (did_of(&alice), did_of(&bob));
    let (tx, cg) = (by_kind("Transfer").unwrap(), by_kind("CreditGrant").unwrap());
    let opts = WriteOptions::default();
    let pay = |name: &str, from: &ed25519_dalek::SigningKey, to: &api::identity::Did, amount: &str| {
        let mut t = payment(name, to, amount);
        api::signing::sign(&mut t, from, chrono::Utc::now()).unwrap();
        t
    };
    // No line: refused, stored as refused, no balance moves.
    let t = reg.create(&caller(&alice), tx, pay("t0", &alice, &b, "1"), &opts).await.unwrap().object;
    assert_eq!(t["status"]["phase"], "Refused", "{t}");
    assert!(t["status"]["message"].as_str().unwrap().starts_with("no credit line"), "{t}");
    assert_eq!((balance(&reg, &a).await, balance(&reg, &b).await), ("0".into(), "0".into()));
    // Bob lets Alice owe him 100.
    let mut g = grant("line-for-alice", &a, "100");
    api::signing::sign(&mut g, &bob, chrono::Utc::now()).unwrap();
    reg.create(&caller(&bob), cg, g, &opts).await.unwrap();
    let t = reg.create(&caller(&alice), tx, pay("t1", &alice, &b, "60"), &opts).await.unwrap().object;
    assert_eq!(t["status"]["phase"], "Committed", "{t}");
    assert_eq!(t["status"]["payer"], a.as_str());
    assert_eq!((balance(&reg, &a).await, balance(&reg, &b).await), ("-60".into(), "60".into()));
    // A dry run says what would be, and changes nothing.
    let dry = WriteOptions { dry_run: true, ..Default::default() };
    let t = reg.create(&caller(&alice), tx, pay("t2", &alice, &b, "60"), &dry).await.unwrap().object;
    assert!(t["status"]["message"].as_str().unwrap().contains("over the credit line"), "{t}");
    assert_eq!(balance(&reg, &a).await, "-60");

    // Ten payments of 10 at once against the 40 left: exactly four commit.
    let mut tasks = Vec::new();
    for i in 0..10 {
        let (reg, t) = (reg.clone(), pay(&format!("c{i}"), &alice, &b, "10"));
        let who = caller(&alice);
        tasks.push(tokio::spawn(async move { reg.create(&who, tx, t, &WriteOptions::default()).await }));
    }
    let mut committed = 0;
    for t in tasks {
        let t = t.await.unwrap().unwrap().object;
        committed += usize::from(t["status"]["phase"] == "Committed");
    }
    assert_eq!(committed, 4);
    assert_eq!((balance(&reg, &a).await, balance(&reg, &b).await), ("-100".into(), "100".into()));

    // What the ledger decided stands: not even a member writes an account, changes a
    // transfer's status or deletes a committed one.
    let acct = by_kind("Account").unwrap();
    let account = json!({ "apiVersion": "univrs.io/v1", "kind": "Account", "metadata": { "name": "x" },
                          "spec": { "owner": a } });
    let e = reg.create(&SYS, acct, account, &opts).await.unwrap_err();
    assert!(matches!(e, ApiError::Forbidden(_)) && e.to_string().contains("accounts change only"), "{e}");
    let t1 = ObjectRef::new(tx, None, "t1");
    let e = reg
        .patch(&SYS, t1, Part::Status, &Patch::Merge(json!({ "status": { "phase": "Refused" } })), &opts)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("the ledger's decision"), "{e}");
    let e = reg.delete(&SYS, t1, &DeleteOptions::default()).await.unwrap_err();
    assert!(e.to_string().contains("part of the balances"), "{e}");
}

on_every_store!(
    transfers_are_decided_on_the_lines_and_posted_to_both_accounts_at_once,
    create_get_update_delete_with_kubernetes_semantics,
    lists_are_per_namespace_or_all_and_carry_a_consistent_revision,
    invalid_objects_are_refused_with_field_paths_and_change_nothing,
    a_stored_signed_manifest_still_verifies,
    status_and_spec_are_written_separately,
    finalizers_hold_a_deleted_object_until_the_last_is_removed,
    server_side_apply_creates_merges_and_records_the_manager,
    dry_runs_and_field_validation_change_nothing_they_should_not,
    pages_are_served_at_the_revision_of_the_first_and_selectors_apply,
    lists_by_label_page_and_see_past_revisions_as_a_full_scan_would,
    reads_wait_for_a_revision_not_yet_applied_and_time_out_past_it,
    foreground_and_orphan_deletion_hold_the_object_for_the_garbage_collector,
    a_stranger_is_refused_before_any_work_and_learns_nothing,
    a_deleted_signed_object_cannot_come_back_older,
    quotas_count_what_each_signer_stores,
    audit_records_are_the_agents_to_read_and_go_after_their_retention,
    events_are_their_node_s_to_write_within_its_quota_and_their_owner_s_to_read,
);

/// AuditEvents: read by their agent (and members), by no one else, counted against the agent's
/// quota, and removed by the leader's sweep once older than the retention.
async fn audit_records_are_the_agents_to_read_and_go_after_their_retention(r: Registry) {
    use api::kinds::AuditDecision;
    let did = |seed: u8| {
        api::identity::Did::from_key(&ed25519_dalek::SigningKey::from_bytes(&[seed; 32]).verifying_key())
    };
    let agent = Caller::identity(did(3), false);
    let stranger = Caller::identity(did(4), false);
    for i in 0..3 {
        let name = format!("w{i}");
        r.audit(
            &agent,
            "get",
            "workloads",
            Some("default"),
            Some(&name),
            false,
            (AuditDecision::Allowed, 200, String::new()),
        )
        .await;
    }
    let kind = by_kind("AuditEvent").unwrap();
    let mine = r.list(&agent, kind, None, &ListOptions::default()).await.unwrap();
    assert_eq!(mine.items.len(), 3, "the agent reads its own records");
    assert!(values(&mine).iter().all(|e| e["spec"]["agent"] == did(3).as_str()));
    let theirs = r.list(&stranger, kind, None, &ListOptions::default()).await.unwrap();
    assert!(theirs.items.is_empty(), "nobody else reads them: {:?}", theirs.items);
    // Kept within the retention, gone after it.
    assert_eq!(r.sweep_agents(chrono::Utc::now()).await.unwrap(), 0);
    let later = chrono::Utc::now() + chrono::Duration::days(8);
    assert_eq!(r.sweep_agents(later).await.unwrap(), 3);
    assert!(r.all(kind, None).await.items.is_empty());
}

/// Events: a node writes them only about a replica bound to it and as itself, within the
/// quota of its own name; the replica's owner reads them and a stranger none; members are
/// unbounded but the sweep removes them an hour on.
async fn events_are_their_node_s_to_write_within_its_quota_and_their_owner_s_to_read(reg: Registry) {
    let reg = reg.with_limits(apiserver::quota::Limits { objects: 3, ..Default::default() });
    let (alice, bob, nk) = (key(1), key(2), key(5));
    let opts = WriteOptions::default();
    let node = json!({ "apiVersion": "univrs.io/v1", "kind": "Node", "metadata": { "name": "n1" },
        "spec": { "peerId": api::identity::PeerId::from_key(&nk.verifying_key()).as_str(),
                  "operator": did_of(&alice).as_str(), "nodeKey": did_of(&nk).as_str(),
                  "ageRecipient": format!("age1{}", "q".repeat(58)), "capacity": { "cpu": "2", "memory": "1Gi" } } });
    let node = signed_by(node, &alice, "2026-01-01T00:00:00Z");
    let node = reg.create(&SYS, by_kind("Node").unwrap(), node, &opts).await.unwrap().object;
    let replica = json!({ "apiVersion": "univrs.io/v1", "kind": "Replica",
        "metadata": { "name": "w-0", "namespace": "default", "annotations": { "univrs.io/payer": did_of(&alice).as_str() } },
        "spec": { "workload": "w", "nodeName": "n1", "nodeUid": node["metadata"]["uid"], "container": { "rootfs": "busybox" } } });
    let replica = reg.create(&SYS, by_kind("Replica").unwrap(), replica, &opts).await.unwrap().object;
    let ev = by_kind("Event").unwrap();
    let event = |name: &str, instance: &str| {
        json!({ "apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": { "name": name, "namespace": "default" },
            "eventTime": "2026-01-02T03:04:05.000000Z", "reportingController": "univrs.io/node-agent",
            "reportingInstance": instance, "action": "Start", "reason": "Started", "type": "Normal", "note": "started",
            "regarding": { "apiVersion": "univrs.io/v1", "kind": "Replica", "namespace": "default", "name": "w-0",
                           "uid": replica["metadata"]["uid"] } })
    };
    let (n, a, b) = (caller(&nk), caller(&alice), caller(&bob));
    // The node, as itself, about its replica: within the quota of its name (3 objects here).
    for i in 0..3 {
        reg.create(&n, ev, event(&format!("e{i}"), "n1"), &opts).await.unwrap();
    }
    let e = reg.create(&n, ev, event("e3", "n1"), &opts).await.unwrap_err();
    assert!(matches!(e, ApiError::TooManyRequests { .. }), "{e}");
    // As another instance; a stranger; the owner herself: refused.
    for (who, instance) in [(&n, "n2"), (&b, "n1"), (&a, "n1")] {
        let e = reg.create(who, ev, event("x", instance), &opts).await.unwrap_err();
        assert!(matches!(e, ApiError::Forbidden(_)), "{e}");
    }
    // The node counts its event again (a merge patch of its series); a stranger cannot.
    let at = ObjectRef::new(ev, Some("default"), "e0");
    let again = merge(json!({ "series": { "count": 2, "lastObservedTime": "2026-01-02T03:05:05.000000Z" } }));
    let patched = reg.patch(&n, at, Part::Main, &again, &opts).await.unwrap().object;
    assert_eq!(patched["series"]["count"], 2);
    let e = reg.patch(&b, at, Part::Main, &again, &opts).await.unwrap_err();
    assert!(matches!(e, ApiError::Forbidden(_)), "{e}");
    // The owner reads them all; a stranger none, not even by name.
    assert_eq!(reg.list(&a, ev, Some("default"), &ListOptions::default()).await.unwrap().items.len(), 3);
    assert!(reg.list(&b, ev, None, &ListOptions::default()).await.unwrap().items.is_empty());
    let e = reg.get(&b, at, ReadAt::Latest).await.unwrap_err();
    assert!(matches!(e, ApiError::NotFound { .. }), "{e}");
    // Members have no quota; the sweep removes every event an hour after it was made.
    reg.create(&SYS, ev, event("m0", "member-1"), &opts).await.unwrap();
    assert_eq!(reg.sweep_events(chrono::Utc::now()).await.unwrap(), 0);
    let later = chrono::Utc::now() + chrono::Duration::minutes(61);
    assert_eq!(reg.sweep_events(later).await.unwrap(), 4);
    assert!(reg.all(ev, None).await.items.is_empty());
}

/// The objects of a list, as values.
fn values(list: &apiserver::registry::List) -> Vec<Value> {
    list.items.iter().map(|i| i.clone().into_value().unwrap()).collect()
}

/// [`Hooked`]'s hooks on a read of one key, on a read of the whole state, on a key scanned.
type OnGet = Box<dyn Fn(&str) -> Option<Option<Stored>> + Send + Sync>;
type OnState = Box<dyn Fn(&'static str, &str) + Send + Sync>;
type OnKey = Box<dyn Fn(&str) -> bool + Send + Sync>;

/// A `MemStore` whose tests watch or change what it does: each hook that is set runs before
/// the store's method, and one that answers is the answer.
#[derive(Default)]
struct Hooked {
    real: std::sync::Arc<MemStore>,
    /// Before a read of one key: `Some` answers it in the store's place.
    get: Option<OnGet>,
    /// Before a read of the state as a whole: what it is (`list`, `scan`, `changes`,
    /// `subscribe`), with its prefix or how many revisions of changes it takes.
    state: Option<OnState>,
    /// During a scan, on each key as it is visited: `true` fails the scan after that key.
    cut: Option<OnKey>,
    /// Before a read barrier: `Some` fails it.
    barrier: Option<Box<dyn Fn() -> Option<StoreError> + Send + Sync>>,
    /// Before a read of the changes (after the `state` hook): `Some` fails it.
    changes: Option<Box<dyn Fn() -> Option<StoreError> + Send + Sync>>,
    /// Before a write: `Some` refuses it.
    write: Option<Box<dyn Fn() -> Option<WriteError> + Send + Sync>>,
}

impl std::fmt::Debug for Hooked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooked").field("real", &self.real).finish_non_exhaustive()
    }
}

impl Hooked {
    fn state(&self, what: &'static str, detail: &str) {
        if let Some(hook) = &self.state {
            hook(what, detail);
        }
    }
}

impl Store for Hooked {
    fn get(&self, key: &str) -> Result<Option<Stored>, StoreError> {
        match self.get.as_ref().and_then(|hook| hook(key)) {
            Some(answer) => Ok(answer),
            None => self.real.get(key),
        }
    }
    fn list(&self, prefix: &str) -> Result<apiserver::registry::store::Listing, StoreError> {
        self.state("list", prefix);
        self.real.list(prefix)
    }
    fn scan(&self, scan: Scan<'_>, visit: &mut Visit<'_>) -> Result<Result<u64, Compacted>, StoreError> {
        self.state("scan", scan.prefix);
        let Some(cut) = &self.cut else { return self.real.scan(scan, visit) };
        let mut failed = false;
        let scanned = self.real.scan(scan, &mut |key, stored| {
            failed = cut(&key);
            visit(key, stored) && !failed
        });
        if failed { Err(StoreError("the scan failed half-way".into())) } else { scanned }
    }
    fn changes_after(&self, after: u64, max: usize) -> Result<Result<Changes, Compacted>, StoreError> {
        self.state("changes", &max.to_string());
        if let Some(e) = self.changes.as_ref().and_then(|hook| hook()) {
            return Err(e);
        }
        self.real.changes_after(after, max)
    }
    fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.state("subscribe", "");
        self.real.subscribe()
    }
    fn read_barrier(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        match self.barrier.as_ref().and_then(|hook| hook()) {
            Some(e) => Box::pin(async move { Err(e) }),
            None => self.real.read_barrier(),
        }
    }
    fn write(
        &self,
        request: apiserver::raft::Request,
    ) -> BoxFuture<'_, Result<apiserver::raft::Response, WriteError>> {
        match self.write.as_ref().and_then(|hook| hook()) {
            Some(e) => Box::pin(async move { Err(e) }),
            None => self.real.write(request),
        }
    }
}

/// What a lagging member shows: for each key, the value it had (`None`: absent), until a
/// read barrier.
type StaleView = std::sync::Arc<std::sync::Mutex<Option<std::collections::HashMap<String, Option<Stored>>>>>;

/// A count shared with a store's hooks.
type Count = std::sync::Arc<std::sync::atomic::AtomicUsize>;

/// A member that lags: its reads of the keys in its stale view return what they held, until
/// a linearizable read barrier brings it up to date (as a follower's state does). Counts the
/// reads served from the stale view before a barrier, and the reads of the member's applied
/// state as a whole (its revision, a scan, a list, its changes) before a barrier.
fn lagging(stale: StaleView) -> (Hooked, Count, Count) {
    use std::sync::atomic::Ordering::SeqCst;
    let (gets, states) = (Count::default(), Count::default());
    let (stale1, stale2, stale3, gets1, states1) =
        (stale.clone(), stale.clone(), stale, gets.clone(), states.clone());
    let store = Hooked {
        get: Some(Box::new(move |key| {
            let stale = stale1.lock().unwrap();
            let view = stale.as_ref()?;
            gets1.fetch_add(1, SeqCst);
            view.get(key).cloned()
        })),
        state: Some(Box::new(move |_, _| {
            if stale2.lock().unwrap().is_some() {
                states1.fetch_add(1, SeqCst);
            }
        })),
        barrier: Some(Box::new(move || {
            *stale3.lock().unwrap() = None;
            None
        })),
        ..Default::default()
    };
    (store, gets, states)
}

/// Updates and patches read the member's state without a read barrier first; a stale read
/// must never win or show: the write lands on the latest object, a precondition that holds
/// is met, an update that changes nothing of the stale object still changes the latest, an
/// object created since is found, and one deleted since is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_on_a_lagging_member_are_decided_on_the_latest_object() {
    let stale = StaleView::default();
    let (lagging, unbarriered, _) = lagging(stale.clone());
    let reg = Registry::new(lagging);
    // Replicas: unsigned, so a patch needs no new signature.
    let wl = by_kind("Replica").unwrap();
    let key = "/registry/replicas/default/w";
    let at = ObjectRef::new(wl, Some("default"), "w");
    let opts = WriteOptions::default();
    let patch = |labels: Value| Patch::Merge(json!({ "metadata": { "labels": labels } }));
    let lag =
        |then: Option<Stored>| *stale.lock().unwrap() = Some([(key.to_owned(), then)].into_iter().collect());
    let labels = |o: &Value| o["metadata"]["labels"].clone();

    // Created since the member's view: found all the same.
    lag(None);
    let replica = json!({ "apiVersion": "univrs.io/v1", "kind": "Replica",
        "metadata": { "name": "w", "namespace": "default", "labels": { "app": "w" } },
        "spec": { "workload": "w", "nodeName": "n1", "container": { "rootfs": "busybox" } } });
    reg.make(wl, replica).await.unwrap();
    lag(None);
    reg.patch(&SYS, at, Part::Main, &patch(json!({ "a": "1" })), &opts).await.unwrap();
    let v1 = reg.store().get(key).unwrap();
    assert!(v1.is_some(), "the key is {key}");

    // Changed since: the patch lands on the latest, not on what the member shows.
    reg.patch(&SYS, at, Part::Main, &patch(json!({ "a": "2" })), &opts).await.unwrap();
    lag(v1.clone());
    let got = reg.patch(&SYS, at, Part::Main, &patch(json!({ "b": "3" })), &opts).await.unwrap();
    assert_eq!(labels(&got.object), json!({ "app": "w", "a": "2", "b": "3" }));

    // A precondition on the latest revision holds, though the member shows an older one.
    lag(v1.clone());
    let mut obj = got.object.clone();
    obj["metadata"]["annotations"] = json!({ "x": "4" });
    let got = reg.update(&SYS, at, Part::Main, obj, &opts).await.unwrap();
    assert_eq!(got.object["metadata"]["annotations"]["x"], "4");

    // Nothing to change on what the member shows (no `b` there), something on the latest.
    lag(v1.clone());
    let got = reg.patch(&SYS, at, Part::Main, &patch(json!({ "b": null })), &opts).await.unwrap();
    assert_eq!(labels(&got.object), json!({ "app": "w", "a": "2" }));
    assert_eq!(got.object["metadata"]["annotations"]["x"], "4");
    assert_eq!(got.object, reg.read(wl, "w").await.unwrap(), "the answer is the latest object");

    // Nothing to change on either: the answer is the latest object, not the stale one.
    lag(v1.clone());
    let got = reg.patch(&SYS, at, Part::Main, &patch(json!({ "a": "2" })), &opts).await.unwrap();
    assert_eq!(got.object, reg.read(wl, "w").await.unwrap());

    // Deleted since: gone, whatever the member shows.
    reg.remove(wl, "w", None).await.unwrap();
    lag(v1.clone());
    let err = reg.patch(&SYS, at, Part::Main, &patch(json!({ "c": "4" })), &opts).await.unwrap_err();
    assert_eq!(err.code(), 404, "{err}");
    assert!(reg.store().get(key).unwrap().is_none());

    // Anyone but a member decides on a linearizable read from the first try: what they may
    // write depends on other objects (Nodes, grants, owners, quotas), which the precondition
    // does not cover.
    let replica = json!({ "apiVersion": "univrs.io/v1", "kind": "Replica",
        "metadata": { "name": "w", "namespace": "default" },
        "spec": { "workload": "w", "nodeName": "n1", "container": { "rootfs": "busybox" } } });
    reg.make(wl, replica).await.unwrap();
    let v2 = reg.store().get(key).unwrap();
    use std::sync::atomic::Ordering::SeqCst;
    for stranger in [caller(&crate::key(41)), caller(&crate::key(42))] {
        lag(v2.clone());
        unbarriered.store(0, SeqCst);
        let err = reg.patch(&stranger, at, Part::Main, &patch(json!({ "x": "1" })), &opts).await.unwrap_err();
        assert_eq!(err.code(), 403, "{err}");
        assert_eq!(
            unbarriered.load(SeqCst),
            0,
            "a stranger's patch read the member's state before a barrier"
        );
    }
    // A member's first try does (the point of it).
    lag(v2.clone());
    unbarriered.store(0, SeqCst);
    reg.patch(&SYS, at, Part::Main, &patch(json!({ "x": "1" })), &opts).await.unwrap();
    assert!(unbarriered.load(SeqCst) > 0);
}

/// A watch with an unset resourceVersion starts from the latest committed state, as a
/// consistent read: on a member that lags it reads nothing of its state (where the watch
/// starts, or the objects it lists first) before a read barrier, and the barrier is over
/// before `start` returns (before the response's headers). One from `resourceVersion=0`
/// starts from what the member has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_the_latest_state_reads_the_members_state_only_after_a_read_barrier() {
    use apiserver::watch::{self, Start, Watch};
    use futures_util::StreamExt as _;
    use std::sync::atomic::Ordering::SeqCst;
    let stale = StaleView::default();
    let (lagging, _, states) = lagging(stale.clone());
    let reg = Registry::new(lagging);
    let kind = by_kind("Replica").unwrap();
    let replica = json!({ "apiVersion": "univrs.io/v1", "kind": "Replica",
        "metadata": { "name": "r", "namespace": "default" },
        "spec": { "workload": "w", "nodeName": "n1", "container": { "rootfs": "busybox" } } });
    reg.make(kind, replica).await.unwrap();
    let watch = |start, initial_events| Watch {
        who: SYS.clone(),
        kind,
        namespace: None,
        selector: Default::default(),
        start,
        initial_events,
        initial_events_end: false,
        bookmarks: false,
        timeout: std::time::Duration::from_secs(10),
    };
    for initial_events in [false, true] {
        for (start, consistent) in [(Start::Now, false), (Start::Latest, true)] {
            *stale.lock().unwrap() = Some(Default::default());
            states.store(0, SeqCst);
            let mut events = Box::pin(watch::start(&reg, watch(start, initial_events)).await.unwrap());
            if initial_events {
                let first = tokio::time::timeout(std::time::Duration::from_secs(10), events.next()).await;
                assert_eq!(first.unwrap().unwrap().kind, "ADDED");
            }
            let barrier_done = stale.lock().unwrap().is_none();
            let read_before = states.load(SeqCst);
            if consistent {
                assert!(barrier_done, "{start:?}, initial events {initial_events}: no read barrier");
                assert_eq!(
                    read_before, 0,
                    "{start:?}, initial events {initial_events}: state read before the barrier"
                );
            } else {
                assert!(
                    !barrier_done && read_before > 0,
                    "{start:?}, initial events {initial_events}: reads what the member has"
                );
            }
        }
    }
}

/// A member that no leader serves: every read barrier fails, and every write is refused,
/// appended nowhere (`NotLeader`) or, once the flag returned is set, with an unknown outcome.
fn leaderless() -> (Hooked, std::sync::Arc<std::sync::atomic::AtomicBool>) {
    let unknown = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = unknown.clone();
    let store = Hooked {
        barrier: Some(Box::new(|| Some(StoreError("cannot confirm leadership: no leader elected".into())))),
        write: Some(Box::new(move || {
            Some(match flag.load(std::sync::atomic::Ordering::SeqCst) {
                true => WriteError::Unknown("not committed within 10s".into()),
                false => WriteError::NotLeader("no leader elected".into()),
            })
        })),
        ..Default::default()
    };
    (store, unknown)
}

/// What a member without a leader did nothing for — a read or a watch whose barrier failed,
/// a write no leader took — is `NotReady` (503 with `Retry-After`: safe to ask again), and
/// it is that before anything else is decided (a missing object is not a 404 then). A write
/// whose outcome is unknown is `Unavailable` (503, no `Retry-After`): a client must not send
/// it again blindly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_member_without_a_leader_did_nothing_for_may_be_asked_again() {
    use apiserver::watch::{self, Start, Watch};
    let (store, unknown) = leaderless();
    let reg = Registry::new(store);
    let kind = by_kind("Replica").unwrap();
    let at = ObjectRef::new(kind, Some("default"), "r");
    let not_ready = |e: ApiError| {
        assert!(matches!(e, ApiError::NotReady(_)), "{e:?}");
        assert_eq!((e.code(), e.reason()), (503, "ServiceUnavailable"));
    };

    not_ready(reg.get(&SYS, at, ReadAt::Latest).await.unwrap_err());
    let list = ListOptions { read: ReadAt::Latest, ..Default::default() };
    not_ready(reg.list(&SYS, kind, Some("default"), &list).await.unwrap_err());
    let latest = Watch {
        who: SYS.clone(),
        kind,
        namespace: None,
        selector: Default::default(),
        start: Start::Latest,
        initial_events: false,
        initial_events_end: false,
        bookmarks: false,
        timeout: std::time::Duration::from_secs(10),
    };
    not_ready(watch::start(&reg, latest).await.err().expect("a watch needs its barrier"));

    let replica = json!({ "apiVersion": "univrs.io/v1", "kind": "Replica",
        "metadata": { "name": "r", "namespace": "default" },
        "spec": { "workload": "w", "nodeName": "n1", "container": { "rootfs": "busybox" } } });
    not_ready(reg.make(kind, replica.clone()).await.unwrap_err());

    unknown.store(true, std::sync::atomic::Ordering::SeqCst);
    let err = reg.make(kind, replica).await.unwrap_err();
    assert!(matches!(err, ApiError::Unavailable(_)), "{err:?}");
    assert_eq!(err.code(), 503);
}

/// Where a read of the indexes a member follows from the change history ran: `build` (a
/// scan of everything, or of every grant) or `follow` (a read of the change history, as the
/// indexes read it: a watch reads smaller batches), and on which thread.
type Seen = std::sync::Arc<std::sync::Mutex<Vec<(&'static str, std::thread::ThreadId)>>>;

/// Where the AgentGrants are stored.
const GRANTS: &str = "/registry/agentgrants/";

/// Workloads `m{from}`..`m{to}` signed by `signer`, written by a member (which makes no
/// index followed from the history follow).
async fn members_write(reg: &Registry, signer: &ed25519_dalek::SigningKey, from: usize, to: usize) {
    let wl = by_kind("Workload").unwrap();
    for i in from..to {
        let obj = signed_by(workload(&format!("m{i}"), 0), signer, "2026-01-01T00:00:00Z");
        reg.create(&SYS, wl, obj, &WriteOptions::default()).await.unwrap();
    }
}

/// A store that notes the reads of its indexes ([`Seen`]); a scan of everything waits, once,
/// for the sender of the receiver put in the gate returned, when one is.
fn noting() -> (Hooked, Seen, std::sync::Arc<std::sync::Mutex<Option<std::sync::mpsc::Receiver<()>>>>) {
    let seen = Seen::default();
    let gate = std::sync::Arc::new(std::sync::Mutex::new(None::<std::sync::mpsc::Receiver<()>>));
    let (noted, held) = (seen.clone(), gate.clone());
    let store = Hooked {
        state: Some(Box::new(move |what, detail| {
            let what = match (what, detail) {
                ("scan", "/" | GRANTS) => "build",
                ("changes", "4096" | "256") => "follow",
                _ => return,
            };
            noted.lock().unwrap().push((what, std::thread::current().id()));
            if detail == "/" {
                let gate = held.lock().unwrap().take();
                if let Some(gate) = gate {
                    let _ = gate.recv();
                }
            }
        })),
        ..Default::default()
    };
    (store, seen, gate)
}

/// The indexes a member follows from the change history only for users' requests (each
/// signer's quota usage, the AgentGrants by agent) catch up off the async workers when far
/// behind — after a long run of members' writes, before they are first built, or when the
/// history they would follow was compacted — since on a worker that stalls everything else
/// the member does, its Raft heartbeats included (it lost its leadership so in the
/// benchmark). Nearly caught up, they follow in place. And they still count right.
#[tokio::test(flavor = "current_thread")]
async fn indexes_far_behind_the_history_catch_up_off_the_async_workers() {
    let (store, seen, _) = noting();
    let history = store.real.clone();
    let reg = Registry::new(store).with_limits(apiserver::quota::Limits { objects: 3, ..Default::default() });
    let runtime = std::thread::current().id();
    let take = || std::mem::take(&mut *seen.lock().unwrap());
    let (alice, bob) = (key(1), key(2));
    let wl = by_kind("Workload").unwrap();
    let opts = WriteOptions::default();
    let at = "2026-01-01T00:00:00Z";
    let members_write = async |from: usize, to: usize| members_write(&reg, &bob, from, to).await;
    let user_writes = async |name: &str| {
        reg.create(&caller(&alice), wl, signed_by(workload(name, 0), &alice, at), &opts).await
    };
    let off_the_worker = |seen: &[(&str, std::thread::ThreadId)], what: &str| {
        assert!(seen.iter().any(|(w, _)| *w == what), "no {what}: {seen:?}");
        assert!(seen.iter().all(|(_, thread)| *thread != runtime), "on the async worker: {seen:?}");
    };

    members_write(0, 300).await;
    take();
    user_writes("a").await.unwrap();
    let first = take();
    off_the_worker(&first, "build");
    assert_eq!(
        first.iter().filter(|(what, _)| *what == "build").count(),
        2,
        "the ledger and the grants: {first:?}"
    );

    // Nearly caught up: in place.
    user_writes("b").await.unwrap();
    let near = take();
    assert!(!near.is_empty() && near.iter().all(|(what, thread)| *what == "follow" && *thread == runtime));

    // Far behind again (more than 256 revisions): off the worker.
    members_write(300, 600).await;
    take();
    user_writes("c").await.unwrap();
    off_the_worker(&take(), "follow");

    // Nearly caught up, but what they would follow is compacted: built again, off the worker.
    members_write(600, 610).await;
    history.compact(*history.subscribe().borrow());
    take();
    let e = user_writes("d").await.unwrap_err();
    let compacted = take();
    // (Found by an attempt in place, which reads nothing.)
    let builds: Vec<_> = compacted.iter().filter(|(what, _)| *what == "build").copied().collect();
    assert_eq!(builds.len(), 2, "the ledger and the grants: {compacted:?}");
    off_the_worker(&builds, "build");
    // Alice's three objects counted, none of bob's 610: her fourth is over her quota.
    assert!(e.to_string().contains("objects per signer (4 of 3"), "{e}");
}

/// Whatever a user asks — a read, a watch's events, a review — the access rules read the
/// grant index only after it was brought up to date off the async worker when far behind:
/// the rules themselves read it synchronously.
#[tokio::test(flavor = "current_thread")]
async fn the_access_rules_read_grants_caught_up_off_the_async_worker() {
    use apiserver::watch::{self, Start, Watch};
    use futures_util::StreamExt as _;
    let (store, seen, _) = noting();
    let reg = Registry::new(store);
    let runtime = std::thread::current().id();
    let take = || std::mem::take(&mut *seen.lock().unwrap());
    let (alice, bob) = (key(1), key(2));
    let wl = by_kind("Workload").unwrap();
    let members_write = async |from: usize, to: usize| members_write(&reg, &bob, from, to).await;
    let followed_off_the_worker = |what: &str| {
        let seen = take();
        assert!(seen.iter().any(|(w, _)| *w == "build" || *w == "follow"), "{what}: no catch-up: {seen:?}");
        assert!(seen.iter().all(|(_, thread)| *thread != runtime), "{what}: on the async worker: {seen:?}");
    };
    let who = caller(&alice);

    members_write(0, 300).await;
    take();
    reg.get(&who, ObjectRef::new(wl, Some("default"), "m1"), ReadAt::Latest).await.unwrap();
    followed_off_the_worker("a get");

    members_write(300, 600).await;
    take();
    let list = ListOptions { read: ReadAt::Latest, ..Default::default() };
    reg.list(&who, wl, Some("default"), &list).await.unwrap();
    followed_off_the_worker("a list");

    let mut events = Box::pin(
        watch::start(
            &reg,
            Watch {
                who: who.clone(),
                kind: wl,
                namespace: None,
                selector: Default::default(),
                start: Start::Now,
                initial_events: false,
                initial_events_end: false,
                bookmarks: false,
                timeout: std::time::Duration::from_secs(30),
            },
        )
        .await
        .unwrap(),
    );
    members_write(600, 900).await;
    take();
    let first = tokio::time::timeout(std::time::Duration::from_secs(10), events.next()).await;
    assert_eq!(first.unwrap().unwrap().kind, "ADDED");
    followed_off_the_worker("a watch's events");

    members_write(900, 1200).await;
    take();
    reg.rules_review(&who, Some("default")).await.unwrap();
    followed_off_the_worker("a rules review");
}

/// A request that finds an index locked by another's long catch-up does not wait for the
/// lock on the async worker, and many such requests hold no thread each: they wait for the
/// one catch-up under way without a thread, so that strangers' requests cannot fill the
/// blocking pool the member's log appends use.
#[test]
fn requests_behind_a_catch_up_under_way_wait_without_a_thread() {
    // One async worker and two blocking threads: one for the catch-up held below, one free.
    let runtime =
        tokio::runtime::Builder::new_current_thread().max_blocking_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let (store, _, gate) = noting();
        let reg = Registry::new(store);
        let alice = key(1);
        let wl = by_kind("Workload").unwrap();
        let at = "2026-01-01T00:00:00Z";
        let write = |name: &str| {
            let (reg, obj, who) = (reg.clone(), signed_by(workload(name, 0), &alice, at), caller(&alice));
            async move { reg.create(&who, wl, obj, &WriteOptions::default()).await }
        };
        // The first user's write builds the ledger: its scan of everything is held open
        // (once it has taken the gate's receiver).
        let (open, held) = std::sync::mpsc::channel();
        *gate.lock().unwrap() = Some(held);
        let first = tokio::spawn(write("a"));
        while gate.lock().unwrap().is_some() {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        // Should a request wait for the lock on this (the only) worker or hold a blocking
        // thread, nothing would open the gate: a thread opens it after 20 s, so that such a
        // failure ends.
        let opener = open.clone();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_secs(20));
            let _ = opener.send(());
        });
        let mut second = std::pin::pin!(write("b"));
        let worker_went_on = tokio::select! {
            _ = &mut second => false,
            () = tokio::time::sleep(std::time::Duration::from_millis(50)) => true,
        };
        assert!(worker_went_on, "the second request held the async worker until the first's catch-up ended");
        let others: Vec<_> = (0..20).map(|i| tokio::spawn(write(&format!("w{i}")))).collect();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let probe =
            tokio::time::timeout(std::time::Duration::from_secs(5), tokio::task::spawn_blocking(|| ())).await;
        assert!(probe.is_ok(), "the requests waiting for the catch-up took every blocking thread");
        // Requests that go away while they wait leave nothing behind: the next ones are served.
        for other in &others {
            other.abort();
        }
        open.send(()).unwrap();
        first.await.unwrap().unwrap();
        second.await.unwrap();
        write("c").await.unwrap();
    });
}

/// A build of an index that fails half-way (a storage error in its scan) leaves nothing
/// half-counted: the next build counts each object once.
#[tokio::test(flavor = "current_thread")]
async fn an_index_build_that_fails_half_way_counts_nothing_twice() {
    let cut_at = std::sync::Arc::new(std::sync::Mutex::new(None::<&'static str>));
    let cut = cut_at.clone();
    let store = Hooked {
        cut: Some(Box::new(move |key| {
            let mut at = cut.lock().unwrap();
            let hit = at.is_some_and(|name| key.ends_with(name));
            if hit {
                *at = None;
            }
            hit
        })),
        ..Default::default()
    };
    let reg = Registry::new(store).with_limits(apiserver::quota::Limits { objects: 3, ..Default::default() });
    let alice = key(1);
    let wl = by_kind("Workload").unwrap();
    let opts = WriteOptions::default();
    let at = "2026-01-01T00:00:00Z";
    // Two of alice's objects, written by a member: no user request has built the ledger yet.
    for name in ["w1", "w2"] {
        reg.create(&SYS, wl, signed_by(workload(name, 0), &alice, at), &opts).await.unwrap();
    }
    let write = async |name: &str| {
        reg.create(&caller(&alice), wl, signed_by(workload(name, 0), &alice, at), &opts).await
    };
    // The first build fails after it counted `w1` and `w2`.
    *cut_at.lock().unwrap() = Some("/w2");
    let e = write("w3").await.unwrap_err();
    assert_eq!(e.code(), 503, "{e}");
    // (A failed catch-up answers for the reads behind it for a second.)
    tokio::time::sleep(FAILED_FOR).await;
    // Counted once: her third object fits, her fourth does not.
    write("w3").await.unwrap();
    let e = write("w4").await.unwrap_err();
    assert!(e.to_string().contains("objects per signer (4 of 3"), "{e}");
}

/// How long a failed catch-up answers for the reads behind it (the registry's `FAILED_FOR`),
/// and a little more.
const FAILED_FOR: std::time::Duration = std::time::Duration::from_millis(1100);

/// What `seen` noted, with the thread of each.
type Notes = Vec<(&'static str, std::thread::ThreadId)>;

/// Waits, within 10 s, until what `seen` noted meets `done` and then nothing more is noted
/// for half a second (five rounds of the background keeper: it is caught up); returns the
/// notes.
async fn settled(seen: &Seen, done: impl Fn(&Notes) -> bool) -> Notes {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let (mut noted, mut quiet) = (Vec::new(), 0);
    while !done(&noted) || quiet < 5 {
        assert!(std::time::Instant::now() < deadline, "the keeper never caught up: {noted:?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let new = std::mem::take(&mut *seen.lock().unwrap());
        quiet = if new.is_empty() { quiet + 1 } else { 0 };
        noted.extend(new);
    }
    noted
}

/// Kept current in the background, the indexes cost a user's first request after a long run
/// of members' writes no more than any other: nothing built or caught up off the worker for
/// it, at most a few changes followed in place. The keeper builds them once, off the async
/// worker, and then follows what is written: it never reads everything again.
#[tokio::test(flavor = "current_thread")]
async fn indexes_kept_current_in_the_background_cost_a_users_first_request_nothing_more() {
    let (store, seen, _) = noting();
    let reg = Registry::new(store);
    let keeper = tokio::spawn(reg.clone().keep_indexes_current());
    let runtime = std::thread::current().id();
    let (alice, bob) = (key(1), key(2));
    let wl = by_kind("Workload").unwrap();
    let at = "2026-01-01T00:00:00Z";
    members_write(&reg, &bob, 0, 600).await;
    let builds_of = |notes: &Notes| notes.iter().filter(|(what, _)| *what == "build").count();
    let kept = settled(&seen, |notes| builds_of(notes) >= 2).await;
    let builds: Vec<_> = kept.iter().filter(|(what, _)| *what == "build").collect();
    assert_eq!(builds.len(), 2, "the ledger and the grants, built once: {kept:?}");
    assert!(builds.iter().all(|(_, thread)| *thread != runtime), "built on the async worker: {kept:?}");

    members_write(&reg, &bob, 600, 900).await;
    let kept = settled(&seen, |notes| notes.iter().any(|(what, _)| *what == "follow")).await;
    assert!(kept.iter().any(|(what, _)| *what == "follow"), "the new writes not followed: {kept:?}");
    assert!(kept.iter().all(|(what, _)| *what == "follow"), "built again: {kept:?}");

    let who = caller(&alice);
    reg.create(&who, wl, signed_by(workload("a", 0), &alice, at), &WriteOptions::default()).await.unwrap();
    // (Nothing at all, when the keeper caught up with the last write.)
    let first = std::mem::take(&mut *seen.lock().unwrap());
    assert!(
        first.iter().all(|(what, thread)| *what == "follow" && *thread == runtime),
        "the first user request built or caught up the indexes: {first:?}"
    );
    assert!(first.len() <= 2, "more than a batch per index: {first:?}");
    keeper.abort();
}

/// An AgentGrant of `owner`'s naming `agent`, which `agent` accepted: it may read `owner`'s
/// Workloads, their environment values included.
fn agent_grant(name: &str, owner: &ed25519_dalek::SigningKey, agent: &ed25519_dalek::SigningKey) -> Value {
    let acceptance = api::kinds::accept(agent, did_of(owner).as_str(), name).unwrap();
    let grant = json!({ "apiVersion": "univrs.io/v1", "kind": "AgentGrant", "metadata": { "name": name },
            "spec": { "agent": did_of(agent), "expires": "2030-01-01T00:00:00Z",
                      "rules": [{ "verbs": ["get", "list", "watch"], "kinds": ["Workload"],
                                  "namespaces": ["*"], "mode": "autonomous" }],
                      "revealEnv": true, "acceptance": acceptance } });
    signed_by(grant, owner, "2026-01-01T00:00:00Z")
}

/// Whether the grants cannot be read now (see [`grants_unreadable_while`]).
type Failing = std::sync::Arc<std::sync::atomic::AtomicBool>;

/// A scan hook that fails every scan reaching an AgentGrant while `failing` is set (it
/// starts set).
fn grants_unreadable_while() -> (OnKey, Failing) {
    let failing = Failing::new(std::sync::atomic::AtomicBool::new(true));
    let fails = failing.clone();
    (Box::new(move |key| key.starts_with(GRANTS) && fails.load(std::sync::atomic::Ordering::SeqCst)), failing)
}

/// A registry on `store` holding an AgentGrant of the owner's (`key(1)`) naming the agent's
/// (`key(3)`), written by a member; with the owner's and the agent's keys.
async fn granted(store: Hooked) -> (Registry, ed25519_dalek::SigningKey, ed25519_dalek::SigningKey) {
    let reg = Registry::new(store);
    let (owner, agent) = (key(1), key(3));
    let kind = by_kind("AgentGrant").unwrap();
    reg.create(&SYS, kind, agent_grant("g", &owner, &agent), &WriteOptions::default()).await.unwrap();
    (reg, owner, agent)
}

/// Whether a caller is an agent's key (its requests are then recorded, its JSON patches
/// refused) is never answered "no" because the grants cannot be read: that is an error, which
/// the audit layer answers with a 503.
#[tokio::test(flavor = "current_thread")]
async fn an_agent_whose_grants_cannot_be_read_is_never_taken_for_a_user() {
    let (cut, failing) = grants_unreadable_while();
    let (reg, owner, agent) = granted(Hooked { cut: Some(cut), ..Default::default() }).await;
    let e = reg.is_agent(&caller(&agent)).await.unwrap_err();
    assert_eq!(e.code(), 503, "{e}");
    failing.store(false, std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(FAILED_FOR).await;
    assert!(reg.is_agent(&caller(&agent)).await.unwrap(), "the grant's agent");
    assert!(!reg.is_agent(&caller(&owner)).await.unwrap(), "the grant's owner");
}

/// When the grants cannot be brought up to date for a watch, its initial list counts them
/// as none (the agent sees what anyone would): it does not try again on the async worker,
/// reading every grant for each object it lists.
#[tokio::test(flavor = "current_thread")]
async fn a_watch_whose_grants_cannot_be_read_lists_without_them_off_the_worker() {
    use apiserver::watch::{self, Start, Watch};
    use futures_util::StreamExt as _;
    let (store, seen, _) = noting();
    let (cut, failing) = grants_unreadable_while();
    let (reg, owner, agent) = granted(Hooked { cut: Some(cut), ..store }).await;
    let runtime = std::thread::current().id();
    // With environment values, which only their owner (or an agent granted it) sees.
    for i in 0..3 {
        let mut w = workload(&format!("w{i}"), 0);
        w["spec"]["env"] = json!([{ "name": "TOKEN", "value": "s3cret" }]);
        let w = signed_by(w, &owner, "2026-01-01T00:00:00Z");
        reg.create(&SYS, by_kind("Workload").unwrap(), w, &WriteOptions::default()).await.unwrap();
    }
    seen.lock().unwrap().clear();
    let watching = || Watch {
        who: caller(&agent),
        kind: by_kind("Workload").unwrap(),
        namespace: None,
        selector: Default::default(),
        start: Start::Now,
        initial_events: true,
        initial_events_end: false,
        bookmarks: false,
        timeout: std::time::Duration::from_secs(30),
    };
    // Whether each of the three objects an initial list sends shows the values.
    let listed = async || {
        let mut events = Box::pin(watch::start(&reg, watching()).await.unwrap());
        let mut shown = Vec::new();
        for _ in 0..3 {
            let event = tokio::time::timeout(std::time::Duration::from_secs(10), events.next()).await;
            let event = event.unwrap().unwrap();
            assert_eq!(event.kind, "ADDED");
            shown.push(event.object.into_value().unwrap().to_string().contains("s3cret"));
        }
        shown
    };
    assert_eq!(listed().await, [false; 3], "the grants counted as none");
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    let builds: Vec<_> = seen.iter().filter(|(what, _)| *what == "build").collect();
    assert_eq!(builds.len(), 1, "one attempt, before the list: {seen:?}");
    assert!(builds.iter().all(|(_, thread)| *thread != runtime), "on the async worker: {seen:?}");
    // Readable again, the grant shows the agent the values.
    failing.store(false, std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(FAILED_FOR).await;
    assert_eq!(listed().await, [true; 3], "the grant read");
}

/// A keeper of the indexes whose catch-ups keep failing (here: every read of the change
/// history fails, after the indexes were built) tries again less and less often while writes
/// arrive, rather than every 100 ms.
#[tokio::test(flavor = "current_thread")]
async fn a_keeper_whose_catch_ups_fail_tries_less_and_less_often() {
    let (store, seen, _) = noting();
    let attempts = Count::default();
    let failing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (counted, fails) = (attempts.clone(), failing.clone());
    let store = Hooked {
        changes: Some(Box::new(move || {
            fails.load(std::sync::atomic::Ordering::SeqCst).then(|| {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                StoreError("the history cannot be read (this test)".into())
            })
        })),
        ..store
    };
    let reg = Registry::new(store);
    let keeper = tokio::spawn(reg.clone().keep_indexes_current());
    settled(&seen, |notes| notes.iter().filter(|(what, _)| *what == "build").count() >= 2).await;
    failing.store(true, std::sync::atomic::Ordering::SeqCst);
    // A write every 20 ms for 1.5 s: a keeper that did not back off would try every round
    // (15 rounds, both indexes: 30 attempts).
    let owner = key(1);
    let start = std::time::Instant::now();
    let mut i = 0;
    while start.elapsed() < std::time::Duration::from_millis(1500) {
        members_write(&reg, &owner, i, i + 1).await;
        i += 1;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    keeper.abort();
    // Rounds at about 0, 0.2, 0.6 and 1.4 s (the wait doubles from 100 ms with each failure).
    let tried = attempts.load(std::sync::atomic::Ordering::SeqCst);
    assert!((1..=10).contains(&tried), "{tried} attempts to follow the history in 1.5 s");
}

/// An index a panic left poisoned (here: its catch-up panicked on the blocking thread, after
/// it was built, while it followed the history) is built again — not followed on from
/// wherever the panic left it — once, and then followed as before.
#[tokio::test(flavor = "current_thread")]
async fn an_index_a_panic_poisoned_is_built_again_once() {
    let builds = Count::default();
    let armed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (counted, panics) = (builds.clone(), armed.clone());
    let store = Hooked {
        state: Some(Box::new(move |what, detail| match (what, detail) {
            ("scan", "/" | GRANTS) => {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            ("changes", "4096") if panics.load(std::sync::atomic::Ordering::SeqCst) => {
                panic!("a catch-up that panics (this test)")
            }
            _ => {}
        })),
        ..Default::default()
    };
    let reg = Registry::new(store).with_limits(apiserver::quota::Limits { objects: 3, ..Default::default() });
    let (alice, bob) = (key(1), key(2));
    let wl = by_kind("Workload").unwrap();
    let at = "2026-01-01T00:00:00Z";
    let write = async |name: &str| {
        reg.create(&caller(&alice), wl, signed_by(workload(name, 0), &alice, at), &WriteOptions::default())
            .await
    };
    let built = || builds.load(std::sync::atomic::Ordering::SeqCst);
    write("a").await.unwrap();
    assert_eq!(built(), 2, "the ledger and the grants");
    // Far behind: the next catch-ups run on a blocking thread, and panic there.
    members_write(&reg, &bob, 0, 300).await;
    armed.store(true, std::sync::atomic::Ordering::SeqCst);
    let e = write("b").await.unwrap_err();
    assert_eq!(e.code(), 503, "{e}");
    armed.store(false, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(built(), 2);
    write("b").await.unwrap();
    assert_eq!(built(), 4, "both built again");
    write("c").await.unwrap();
    assert_eq!(built(), 4, "once");
    // Alice's three objects counted once each, bob's none: her fourth is over her quota.
    let e = write("d").await.unwrap_err();
    assert!(e.to_string().contains("objects per signer (4 of 3"), "{e}");
}

/// Requests that find an index failing to build wait for one attempt, not one each: a failed
/// catch-up answers for the reads behind it for a second, so a store that fails costs a scan
/// a second, not one per request (every user's request reads the grants).
#[tokio::test(flavor = "current_thread")]
async fn requests_behind_a_failed_catch_up_share_its_failure() {
    let scans = Count::default();
    let counted = scans.clone();
    let store = Hooked {
        state: Some(Box::new(move |what, detail| {
            if (what, detail) == ("scan", GRANTS) {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        })),
        cut: Some(grants_unreadable_while().0),
        ..Default::default()
    };
    let (reg, _, agent) = granted(store).await;
    let who = caller(&agent);
    let asked = futures_util::future::join_all((0..20).map(|_| reg.is_agent(&who))).await;
    assert!(asked.iter().all(|a| a.as_ref().is_err_and(|e| e.code() == 503)), "{asked:?}");
    assert_eq!(scans.load(std::sync::atomic::Ordering::SeqCst), 1, "one attempt for twenty requests");
    tokio::time::sleep(FAILED_FOR).await;
    assert!(reg.is_agent(&who).await.is_err());
    assert_eq!(scans.load(std::sync::atomic::Ordering::SeqCst), 2, "tried again a second on");
}

/// A keeper of the indexes whose round panics (here: following changes in place, on its own
/// task) goes on: its next rounds build the index the panic poisoned again and follow what
/// is written.
#[tokio::test(flavor = "current_thread")]
async fn a_keeper_whose_round_panics_goes_on() {
    let seen = Seen::default();
    let armed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (noted, panics) = (seen.clone(), armed.clone());
    let store = Hooked {
        state: Some(Box::new(move |what, detail| {
            if (what, detail) == ("changes", "256") && panics.swap(false, std::sync::atomic::Ordering::SeqCst)
            {
                panic!("a catch-up that panics (this test)");
            }
            let what = match (what, detail) {
                ("scan", "/" | GRANTS) => "build",
                ("changes", _) => "follow",
                _ => return,
            };
            noted.lock().unwrap().push((what, std::thread::current().id()));
        })),
        ..Default::default()
    };
    let reg = Registry::new(store);
    let keeper = tokio::spawn(reg.clone().keep_indexes_current());
    let bob = key(2);
    let builds_of = |notes: &Notes| notes.iter().filter(|(what, _)| *what == "build").count();
    members_write(&reg, &bob, 0, 10).await;
    settled(&seen, |notes| builds_of(notes) >= 2).await;

    // (Cleared before: the panicking follow notes nothing, and the build after it may come
    // before the writes below.)
    seen.lock().unwrap().clear();
    armed.store(true, std::sync::atomic::Ordering::SeqCst);
    members_write(&reg, &bob, 10, 20).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while armed.load(std::sync::atomic::Ordering::SeqCst) {
        assert!(std::time::Instant::now() < deadline, "the keeper never followed the writes");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    members_write(&reg, &bob, 20, 30).await;
    let after =
        settled(&seen, |notes| builds_of(notes) >= 1 && notes.iter().any(|(what, _)| *what == "follow"))
            .await;
    assert_eq!(builds_of(&after), 1, "the poisoned index built again, once: {after:?}");
    assert!(!keeper.is_finished(), "the keeper ended");
    keeper.abort();
}

/// Over HTTP: while the grants cannot be read, a user's request to the object routes is
/// answered 503 — it might be an agent's, which never runs unrecorded; once they can be, the
/// agent's request runs, and is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_object_routes_answer_503_while_the_grants_cannot_be_read() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let (cut, failing) = grants_unreadable_while();
    let (reg, _, agent) = granted(Hooked { cut: Some(cut), ..Default::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let node = apiserver::raft::RaftNode::start_single(dir.path(), apiserver::raft::Options::default())
        .await
        .unwrap();
    let audience = "univrs-test";
    let state = apiserver::http::AppState {
        registry: reg.clone(),
        node,
        authn: apiserver::http::authn::Authn::new(audience, []),
        node_proxy: Default::default(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, apiserver::http::router(state)).await });
    let token = api::token::mint(&agent, audience, chrono::Utc::now().timestamp(), 300);
    let status = async || {
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!(
            "GET /apis/univrs.io/v1/namespaces/default/workloads HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        );
        conn.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        conn.read_to_string(&mut response).await.unwrap();
        response.split(' ').nth(1).unwrap().parse::<u16>().unwrap()
    };
    assert_eq!(status().await, 503);
    failing.store(false, std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(FAILED_FOR).await;
    assert_eq!(status().await, 200);
    let records =
        reg.list(&SYS, by_kind("AuditEvent").unwrap(), None, &ListOptions::default()).await.unwrap();
    assert_eq!(records.items.len(), 1, "the agent's list recorded, the refused one not run");
    server.abort();
}
