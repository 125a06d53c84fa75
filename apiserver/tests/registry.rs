//! Kubernetes object semantics on a real single-voter Raft member.

use api::kinds::by_kind;
use apiserver::raft::{Options, RaftNode};
use apiserver::registry::{
    ApiError, DeleteOptions, Deleted, ListOptions, Part, ReadAt, Registry, WriteOptions,
};
use serde_json::{Value, json};

async fn registry(dir: &std::path::Path) -> Registry {
    Registry::new(RaftNode::start_single(dir, Options::default()).await.unwrap())
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
        self.create(kind, obj, &WriteOptions::default()).await.map(|w| w.object)
    }
    async fn put(&self, kind: &api::KindInfo, obj: Value) -> Result<Value, ApiError> {
        let name = obj["metadata"]["name"].as_str().unwrap().to_owned();
        let ns = obj["metadata"]["namespace"].as_str().unwrap_or("default").to_owned();
        self.update(kind, Part::Main, Some(&ns), &name, obj, &WriteOptions::default()).await.map(|w| w.object)
    }
    async fn read(&self, kind: &api::KindInfo, name: &str) -> Result<Value, ApiError> {
        self.get(kind, Some("default"), name, ReadAt::Latest).await
    }
    async fn all(&self, kind: &api::KindInfo, ns: Option<&str>) -> apiserver::registry::List {
        self.list(kind, ns, &ListOptions::default()).await.unwrap()
    }
    async fn remove(&self, kind: &api::KindInfo, name: &str, rv: Option<u64>) -> Result<Value, ApiError> {
        let opts = DeleteOptions { resource_version: rv, ..Default::default() };
        match self.delete(kind, Some("default"), name, &opts).await? {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_get_update_delete_with_kubernetes_semantics() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(dir.path()).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_are_per_namespace_or_all_and_carry_a_consistent_revision() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(dir.path()).await;
    let wl = by_kind("Workload").unwrap();
    let mut last = 0;
    for (ns, name) in [("default", "a"), ("prod", "b"), ("prod", "c")] {
        let mut obj = workload(name, 1);
        obj["metadata"]["namespace"] = json!(ns);
        last = rv(&reg.make(wl, obj).await.unwrap());
    }
    let prod = reg.all(wl, Some("prod")).await;
    let names: Vec<_> = prod.items.iter().map(|o| o["metadata"]["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["b", "c"]);
    assert!(prod.revision >= last);
    assert_eq!(reg.all(wl, None).await.items.len(), 3);
    assert!(reg.all(by_kind("Node").unwrap(), None).await.items.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_objects_are_refused_with_field_paths_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(dir.path()).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_signed_manifest_still_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(dir.path()).await;
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
