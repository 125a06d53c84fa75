//! kube-rs's `watcher` (the list+watch loop under every kube-rs controller and reflector)
//! against `ui apiserver` on a real port, over TLS and authenticated: the initial list, live
//! events, the relist after an in-stream 410 Expired, and resuming across a server restart on
//! the same port. Every client is built from a kubeconfig the server wrote, so it trusts the
//! cluster's CA (`certificate-authority-data`) and gets its bearer token from the exec
//! credential plugin (`ui token --exec-credential`), as any kube-rs program would.
//!
//! The tests create, patch, replace and delete objects freely, so they use Replicas (unsigned,
//! written by the control plane) through the member's kubeconfig; `spec.nodeName` is the field
//! they change. A user's kubeconfig may read them but not write them (403), and a client
//! without credentials gets 401.
//!
//! What kube-runtime 5's watcher does, read from its `watcher.rs`: with the default
//! `ListWatch` strategy it lists (yielding `Init`, an `InitApply` per object, `InitDone`) and
//! only on the next poll starts a watch from the list's `resourceVersion`; a watch stream that
//! ends is restarted from the last `resourceVersion` seen (no relist); an in-stream `ERROR`
//! with code 410 is yielded as `Error::WatchError` and the next poll relists from scratch;
//! with `streaming_lists()` the initial state comes from one watch with
//! `sendInitialEvents=true`, ended by a `BOOKMARK` annotated `k8s.io/initial-events-end`.

mod support;

use std::path::Path;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
    PostParams, WatchEvent, WatchParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};
use kube::{Client, Config, ResourceExt as _};
use serde_json::json;
use support::{Server, User, free_port};

/// How long any one expected event may take.
const EVENT_WAIT: Duration = Duration::from_secs(30);

/// The client configuration a program gets from `kubeconfig`: the server's https URL, the
/// cluster's CA and the exec credential plugin, all as written.
async fn config_from(server: &Server, kubeconfig: &Path) -> Config {
    let kubeconfig = Kubeconfig::read_from(kubeconfig).unwrap();
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.unwrap();
    assert_eq!(config.cluster_url.to_string().trim_end_matches('/'), server.url);
    assert!(server.url.starts_with("https://"), "{}", server.url);
    assert!(config.root_cert.as_ref().is_some_and(|c| !c.is_empty()), "the kubeconfig carries no CA");
    let exec = config.auth_info.exec.as_ref().expect("the kubeconfig's user is an exec plugin");
    assert!(exec.args.as_ref().is_some_and(|a| a.iter().any(|a| a == "--exec-credential")), "{exec:?}");
    config
}

/// A client authenticated as the control-plane member (the server's `member.kubeconfig`),
/// which may write Replicas.
async fn client(server: &Server) -> Client {
    Client::try_from(config_from(server, &server.member_kubeconfig()).await).unwrap()
}

fn replicas(client: Client) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("univrs.io", "v1", "Replica");
    Api::namespaced_with(client, "default", &ApiResource::from_gvk_with_plural(&gvk, "replicas"))
}

/// Replica `name` of workload `web`, bound to `node`.
fn replica(name: &str, node: &str) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "univrs.io/v1",
        "kind": "Replica",
        "metadata": { "name": name, "labels": { "app": name } },
        "spec": {
            "workload": "web",
            "nodeName": node,
            "container": {
                "rootfs": "busybox",
                "command": ["/bin/sh", "-c", "sleep 3600"],
                "resources": { "cpu": "100m", "memory": "32Mi" },
            },
        },
    }))
    .unwrap()
}

async fn create(api: &Api<DynamicObject>, name: &str, node: &str) -> DynamicObject {
    api.create(&PostParams::default(), &replica(name, node)).await.unwrap()
}

/// Moves replica `name` to `node` with a merge patch of `spec.nodeName`.
async fn bind(api: &Api<DynamicObject>, name: &str, node: &str) -> DynamicObject {
    let patch = Patch::Merge(json!({ "spec": { "nodeName": node } }));
    api.patch(name, &PatchParams::default(), &patch).await.unwrap()
}

fn node(o: &DynamicObject) -> &str {
    o.data["spec"]["nodeName"].as_str().unwrap()
}

/// An event in a form that is easy to compare: `"Apply a n3 @17"` is an `Apply` of replica
/// `a` bound to node `n3` at resourceVersion 17 (`"Apply a n3"` without `with_rv`).
fn describe(e: &Result<Event<DynamicObject>, watcher::Error>, with_rv: bool) -> String {
    let obj = |verb: &str, o: &DynamicObject| {
        let rv = if with_rv { format!(" @{}", o.resource_version().unwrap()) } else { String::new() };
        format!("{verb} {} {}{rv}", o.name_any(), node(o))
    };
    match e {
        Ok(Event::Init) => "Init".into(),
        Ok(Event::InitApply(o)) => obj("InitApply", o),
        Ok(Event::InitDone) => "InitDone".into(),
        Ok(Event::Apply(o)) => obj("Apply", o),
        Ok(Event::Delete(o)) => obj("Delete", o),
        Err(watcher::Error::WatchError(s)) => format!("WatchError {} {}", s.code, s.reason),
        Err(other) => format!("Err {other}"),
    }
}

fn brief(e: &Result<Event<DynamicObject>, watcher::Error>) -> String {
    describe(e, false)
}

/// The next `n` items of `stream`, failing the test if one takes longer than [`EVENT_WAIT`].
async fn next_n<S>(stream: &mut S, n: usize) -> Vec<Result<Event<DynamicObject>, watcher::Error>>
where
    S: Stream<Item = Result<Event<DynamicObject>, watcher::Error>> + Unpin,
{
    let mut out = Vec::new();
    while out.len() < n {
        match tokio::time::timeout(EVENT_WAIT, stream.next()).await {
            Ok(Some(e)) => out.push(e),
            Ok(None) => panic!("the watcher ended after {:?}", out.iter().map(brief).collect::<Vec<_>>()),
            Err(_) => panic!(
                "no watcher event within {EVENT_WAIT:?} after {:?}",
                out.iter().map(brief).collect::<Vec<_>>()
            ),
        }
    }
    out
}

async fn next_briefs<S>(stream: &mut S, n: usize) -> Vec<String>
where
    S: Stream<Item = Result<Event<DynamicObject>, watcher::Error>> + Unpin,
{
    next_n(stream, n).await.iter().map(brief).collect()
}

/// Objects made before the watch appear in its initial sequence; a create, a merge patch, a
/// replace and a delete made through the API after it appear as `Apply`/`Delete`, in order,
/// each at the resourceVersion the write returned.
async fn initial_state_then_every_change(config: watcher::Config) {
    let u = User::new();
    let server = Server::start_with(&u, &u.path("data"), "127.0.0.1:0", &[]);
    let api = replicas(client(&server).await);
    create(&api, "a", "n1").await;
    create(&api, "b", "n1").await;

    let mut events = watcher::watcher(api.clone(), config).boxed();
    assert_eq!(next_briefs(&mut events, 4).await, ["Init", "InitApply a n1", "InitApply b n1", "InitDone"]);

    let c = create(&api, "c", "n1").await;
    let a = bind(&api, "a", "n3").await;
    let mut b = api.get("b").await.unwrap();
    b.data["spec"]["nodeName"] = json!("n2");
    let b = api.replace("b", &PostParams::default(), &b).await.unwrap();
    api.delete("c", &DeleteParams::default()).await.unwrap();
    let rv = |o: &DynamicObject| o.resource_version().unwrap();
    let deleted_at = api.list(&ListParams::default()).await.unwrap().metadata.resource_version.unwrap();

    let seen: Vec<String> = next_n(&mut events, 4).await.iter().map(|e| describe(e, true)).collect();
    assert_eq!(
        seen,
        [
            format!("Apply c n1 @{}", rv(&c)),
            format!("Apply a n3 @{}", rv(&a)),
            format!("Apply b n2 @{}", rv(&b)),
            // A deleted object is sent as it was last, at the revision of its deletion.
            format!("Delete c n1 @{deleted_at}"),
        ]
    );
    drop(events);
    server.stop();
}

#[tokio::test]
async fn watcher_lists_then_watches_every_change() {
    initial_state_then_every_change(watcher::Config::default()).await;
}

#[tokio::test]
async fn watcher_with_streaming_lists_gets_the_initial_state_from_the_watch() {
    initial_state_then_every_change(watcher::Config::default().streaming_lists()).await;
}

#[tokio::test]
async fn watcher_pages_through_the_initial_list() {
    // `limit=1` and a `continue` token per page; the watch starts from the first page's version.
    initial_state_then_every_change(watcher::Config::default().page_size(1)).await;
}

#[tokio::test]
async fn watcher_lists_from_any_version() {
    // `resourceVersion=0&resourceVersionMatch=NotOlderThan`: the list may come from a cache.
    initial_state_then_every_change(watcher::Config::default().any_semantic()).await;
}

/// Generic kube-rs tools choose what to watch from discovery: they skip a resource unless
/// `ApiCapabilities::supports_operation(verbs::WATCH)` (and often `LIST`, `PATCH`), so the
/// verbs the server serves must be the verbs it advertises, for user-written kinds
/// (Workloads) and control-plane kinds (Replicas) alike.
#[tokio::test]
async fn discovery_advertises_every_verb_a_watcher_and_a_controller_use() {
    use kube::discovery::{Discovery, verbs};
    let u = User::new();
    let server = Server::start_with(&u, &u.path("data"), "127.0.0.1:0", &[]);
    let discovery = Discovery::new(client(&server).await).filter(&["univrs.io"]).run().await.unwrap();
    for (kind, plural) in [("Workload", "workloads"), ("Replica", "replicas")] {
        let (ar, caps) = discovery
            .resolve_gvk(&GroupVersionKind::gvk("univrs.io", "v1", kind))
            .unwrap_or_else(|| panic!("{kind} is not discovered"));
        assert_eq!(ar.plural, plural);
        let wanted = [
            verbs::GET,
            verbs::LIST,
            verbs::WATCH,
            verbs::CREATE,
            verbs::UPDATE,
            verbs::PATCH,
            verbs::DELETE,
        ];
        let missing: Vec<_> = wanted.into_iter().filter(|v| !caps.supports_operation(v)).collect();
        let (_, status) = caps
            .subresources
            .iter()
            .find(|(r, _)| r.plural == "status")
            .unwrap_or_else(|| panic!("the status subresource of {plural} is not discovered"));
        let status_missing: Vec<_> = [verbs::GET, verbs::UPDATE, verbs::PATCH]
            .into_iter()
            .filter(|v| !status.supports_operation(v))
            .collect();
        assert!(
            missing.is_empty() && status_missing.is_empty(),
            "the server serves these verbs but discovery does not advertise them: {plural} {missing:?}, \
             {plural}/status {status_missing:?} (advertised: {:?}, status: {:?})",
            caps.operations,
            status.operations,
        );
    }
    server.stop();
}

/// The API error of a failed call, or a panic saying what came instead.
#[track_caller]
fn api_error<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> (u16, String) {
    match r {
        Err(kube::Error::Api(s)) => (s.code, s.reason),
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// Replicas are the control plane's: the user's own kubeconfig authenticates (it may list
/// them) but is forbidden to create one (403), and a client that trusts the cluster's CA but
/// sends no credentials is not let in at all (401). The member's kubeconfig may.
#[tokio::test]
async fn only_a_control_plane_member_may_write_replicas_and_anonymous_clients_are_refused() {
    let u = User::new();
    let server = Server::start_with(&u, &u.path("data"), "127.0.0.1:0", &[]);

    let user_config = config_from(&server, &server.kubeconfig).await;
    let user = replicas(Client::try_from(user_config.clone()).unwrap());
    assert!(user.list(&ListParams::default()).await.unwrap().items.is_empty());
    assert_eq!(
        api_error(user.create(&PostParams::default(), &replica("a", "n1")).await),
        (403, "Forbidden".to_owned())
    );

    // The same server URL and CA, no `auth_info`: no Authorization header at all.
    let mut anonymous = Config::new(user_config.cluster_url.clone());
    anonymous.root_cert = user_config.root_cert.clone();
    let anonymous = replicas(Client::try_from(anonymous).unwrap());
    assert_eq!(api_error(anonymous.list(&ListParams::default()).await), (401, "Unauthorized".to_owned()));
    assert_eq!(
        api_error(anonymous.create(&PostParams::default(), &replica("a", "n1")).await),
        (401, "Unauthorized".to_owned())
    );

    // Neither wrote anything; the member may.
    let member = replicas(client(&server).await);
    assert!(member.list(&ListParams::default()).await.unwrap().items.is_empty());
    create(&member, "a", "n1").await;
    assert_eq!(api_error(user.delete("a", &DeleteParams::default()).await), (403, "Forbidden".to_owned()));
    assert_eq!(node(&user.get("a").await.unwrap()), "n1");
    server.stop();
}

/// The server ends each watch after `timeoutSeconds` (with a last BOOKMARK, as the watcher
/// asks for bookmarks); the watcher starts a new watch from the version it has reached, again
/// and again, and still gets each later change exactly once.
#[tokio::test]
async fn watcher_rewatches_from_its_version_when_the_server_ends_a_watch() {
    let u = User::new();
    let server = Server::start_with(&u, &u.path("data"), "127.0.0.1:0", &[]);
    let api = replicas(client(&server).await);
    create(&api, "a", "n1").await;

    let mut events = watcher::watcher(api.clone(), watcher::Config::default().timeout(1)).boxed();
    assert_eq!(next_briefs(&mut events, 3).await, ["Init", "InitApply a n1", "InitDone"]);
    // Poll through a few server-side timeouts with nothing to report.
    let quiet = tokio::time::timeout(Duration::from_millis(3500), events.next()).await;
    assert!(quiet.is_err(), "an event with no change: {:?}", quiet.unwrap().as_ref().map(brief));
    let a = bind(&api, "a", "n2").await;
    let seen: Vec<String> = next_n(&mut events, 1).await.iter().map(|e| describe(e, true)).collect();
    assert_eq!(seen, [format!("Apply a n2 @{}", a.resource_version().unwrap())]);
    let quiet = tokio::time::timeout(Duration::from_millis(2500), events.next()).await;
    assert!(quiet.is_err(), "a repeated event: {:?}", quiet.unwrap().as_ref().map(brief));
    drop(events);
    server.stop();
}

/// With a label selector, an object that comes to match is an `Apply` and one that stops
/// matching is a `Delete`, as a reflector's store needs.
#[tokio::test]
async fn watcher_with_a_label_selector_sees_objects_join_and_leave() {
    let u = User::new();
    let server = Server::start_with(&u, &u.path("data"), "127.0.0.1:0", &[]);
    let api = replicas(client(&server).await);
    create(&api, "a", "n1").await;
    create(&api, "b", "n1").await;
    let relabel = |tier: &'static str| Patch::Merge(json!({ "metadata": { "labels": { "tier": tier } } }));
    api.patch("a", &PatchParams::default(), &relabel("web")).await.unwrap();

    let config = watcher::Config::default().labels("tier=web");
    let mut events = watcher::watcher(api.clone(), config).boxed();
    assert_eq!(next_briefs(&mut events, 3).await, ["Init", "InitApply a n1", "InitDone"]);
    api.patch("b", &PatchParams::default(), &relabel("web")).await.unwrap();
    api.patch("a", &PatchParams::default(), &relabel("db")).await.unwrap();
    bind(&api, "a", "n4").await; // no longer matches: nothing
    bind(&api, "b", "n3").await;
    assert_eq!(next_briefs(&mut events, 3).await, ["Apply b n1", "Delete a n1", "Apply b n3"]);
    drop(events);
    server.stop();
}

/// The watcher lists, then (before it starts its watch) the server's history moves past the
/// list's resourceVersion and is compacted: the watch from that version gets an in-stream
/// `ERROR` 410 Expired, and the watcher relists, now seeing the changes it missed, and goes
/// on watching.
#[tokio::test]
async fn watcher_relists_after_an_in_stream_410_expired() {
    let u = User::new();
    // One second of history: compaction (every 10 s on the server) soon drops every change.
    let server = Server::start_with(&u, &u.path("data"), "127.0.0.1:0", &["--watch-history-seconds", "1"]);
    let api = replicas(client(&server).await);
    create(&api, "a", "n1").await;

    let mut events = watcher::watcher(api.clone(), watcher::Config::default()).boxed();
    assert_eq!(next_briefs(&mut events, 3).await, ["Init", "InitApply a n1", "InitDone"]);
    // The watcher now holds the list's resourceVersion and starts its watch from it on its
    // next poll; nothing was written since, so it is this list's version too (or older).
    let listed = api.list(&ListParams::default()).await.unwrap().metadata.resource_version.unwrap();

    create(&api, "b", "n1").await;
    bind(&api, "a", "n5").await;

    // Wait for the server to compact those changes: a watch from `listed` then starts (HTTP
    // 200) and its first event is ERROR 410 Expired.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    let expired = loop {
        let mut stream = api.watch(&WatchParams::default().timeout(2), &listed).await.unwrap().boxed();
        match tokio::time::timeout(EVENT_WAIT, stream.next()).await.unwrap() {
            Some(Ok(WatchEvent::Error(status))) => break status,
            Some(Ok(WatchEvent::Added(_) | WatchEvent::Modified(_))) => {}
            other => panic!("unexpected first event of a watch from {listed}: {other:?}"),
        }
        assert!(tokio::time::Instant::now() < deadline, "the history was not compacted within 40 s");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!((expired.code, expired.reason.as_str()), (410, "Expired"), "{expired:?}");

    // kube-rs yields the 410 as an error, then relists from scratch.
    assert_eq!(
        next_briefs(&mut events, 5).await,
        ["WatchError 410 Expired", "Init", "InitApply a n5", "InitApply b n1", "InitDone"]
    );
    // And it watches again from the new list.
    create(&api, "c", "n2").await;
    api.delete("b", &DeleteParams::default()).await.unwrap();
    assert_eq!(next_briefs(&mut events, 2).await, ["Apply c n2", "Delete b n1"]);
    drop(events);
    server.stop();
}

/// The server is stopped (SIGTERM) and started again on the same data dir and port while a
/// watcher runs: the watcher restarts its watch from the last resourceVersion it saw, so it
/// gets exactly the changes made after the restart, without a relist and without a repeated
/// `Apply` of an unchanged object.
#[tokio::test]
async fn watcher_resumes_across_a_server_restart_on_the_same_port() {
    let u = User::new();
    let data = u.path("data");
    let listen = format!("127.0.0.1:{}", free_port());
    let server = Server::start_with(&u, &data, &listen, &[]);
    let api = replicas(client(&server).await);
    create(&api, "a", "n1").await;
    create(&api, "b", "n1").await;

    // The watcher runs in its own task, polled all along, as in a controller; the backoff is
    // what a controller uses, so that it does not spin while the server is down.
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let watching = tokio::spawn(async move {
        let mut events = watcher::watcher(api, watcher::Config::default()).default_backoff().boxed();
        while let Some(e) = events.next().await {
            if tx.send(e).await.is_err() {
                return;
            }
        }
    });
    let mut events = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed();
    assert_eq!(next_briefs(&mut events, 4).await, ["Init", "InitApply a n1", "InitApply b n1", "InitDone"]);
    let writer = replicas(client(&server).await);
    bind(&writer, "a", "n2").await;
    assert_eq!(next_briefs(&mut events, 1).await, ["Apply a n2"]);

    server.stop();
    let server = Server::start_with(&u, &data, &listen, &[]);
    assert_eq!(server.port().to_string(), listen.rsplit(':').next().unwrap());
    let writer = replicas(client(&server).await);
    let a = bind(&writer, "a", "n7").await;
    let c = create(&writer, "c", "n1").await;

    // Errors while the server was down (the stream broke, a new watch could not connect)
    // are reported and retried; every event after them is a change made after the restart.
    let mut errors = Vec::new();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        for e in next_n(&mut events, 1).await {
            match e {
                Err(e) => errors.push(e.to_string()),
                ok => seen.push(describe(&ok, true)),
            }
        }
    }
    let rv = |o: &DynamicObject| o.resource_version().unwrap();
    assert_eq!(
        seen,
        [format!("Apply a n7 @{}", rv(&a)), format!("Apply c n1 @{}", rv(&c))],
        "errors: {errors:?}"
    );
    // Nothing else is pending: no relist, no repeated Apply of b.
    let quiet = tokio::time::timeout(Duration::from_secs(2), events.next()).await;
    assert!(
        quiet.is_err(),
        "an unexpected event after the restart: {:?}",
        quiet.unwrap().as_ref().map(brief)
    );
    watching.abort();
    server.stop();
}
