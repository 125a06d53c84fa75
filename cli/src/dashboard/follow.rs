//! The dashboard's watches: one list-then-watch per kind (kube-runtime's `watcher`, which lists
//! again when its watch expires — the apiserver's in-stream 410 — and backs off when the server
//! cannot be reached), each into its own cache; after every change the view is made again from
//! the caches and published. Nothing is polled but the members, which are Raft's membership,
//! not objects, and have no watch: they are read every [`MEMBERS_EVERY`].
//!
//! The view is made only when someone looks (an event stream is open, or `/api/view` asks:
//! [`Demand`]), on a blocking thread (not on the workers that serve HTTP), and changes are
//! gathered for at least as long as the last view took to make.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use api::KindSpec;
use chrono::{DateTime, Utc};
use futures_util::StreamExt as _;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::view::{self, MembersRead, Objects, Source, SourceState};
use client::resource::{Kube, api_all, api_in};

/// How often the members are read again.
pub const MEMBERS_EVERY: Duration = Duration::from_secs(10);

/// How long a read of the members may take.
pub const MEMBERS_TIMEOUT: Duration = Duration::from_secs(5);

/// How long changes are gathered (at least) before the view is made again: a burst of events (a
/// list, a rollout) makes one view, not hundreds. It grows to the time the last view took.
const SETTLE: Duration = Duration::from_millis(100);

/// A request for a current view: the HTTP side holds a receiver of the views while it waits
/// (so the view is wanted), then pokes; the follower answers with a new view if anything
/// changed, else by marking the current one sent again (the same `Arc`, which event streams
/// skip).
pub type Demand = Notify;

/// Whom the view is for, and where it comes from.
#[derive(Clone, Debug)]
pub struct Whom {
    /// The did the dashboard acts as.
    pub me: Option<String>,
    /// The apiserver's URL, as shown.
    pub server: String,
    /// The one namespace whose namespaced objects are followed, or (None) every namespace.
    pub namespace: Option<String>,
}

/// A cache per kind.
struct Caches {
    workloads: Store<Kube<api::kinds::WorkloadSpec>>,
    replicas: Store<Kube<api::kinds::ReplicaSpec>>,
    nodes: Store<Kube<api::kinds::NodeSpec>>,
    offers: Store<Kube<api::kinds::NodeOfferSpec>>,
    policies: Store<Kube<api::kinds::TrustPolicySpec>>,
    reputations: Store<Kube<api::kinds::ReputationSpec>>,
    attestations: Store<Kube<api::kinds::AttestationSpec>>,
    accounts: Store<Kube<api::kinds::AccountSpec>>,
    grants: Store<Kube<api::kinds::CreditGrantSpec>>,
    audit: Store<Kube<api::kinds::AuditEventSpec>>,
}

impl Caches {
    fn objects(&self) -> Objects {
        Objects {
            workloads: self.workloads.state(),
            replicas: self.replicas.state(),
            nodes: self.nodes.state(),
            offers: self.offers.state(),
            policies: self.policies.state(),
            reputations: self.reputations.state(),
            attestations: self.attestations.state(),
            accounts: self.accounts.state(),
            grants: self.grants.state(),
            audit: self.audit.state(),
        }
    }
}

/// What the watches report to the view maker.
#[derive(Default)]
struct Shared {
    sources: Mutex<Vec<Source>>,
    members: Mutex<MembersRead>,
    last_change: Mutex<Option<DateTime<Utc>>>,
    changed: Notify,
}

impl Shared {
    fn set_source(&self, kind: &'static str, state: SourceState, error: Option<String>) {
        let listed = state == SourceState::Watching;
        let mut sources = self.sources.lock().expect("sources lock");
        match sources.iter_mut().find(|s| s.kind == kind) {
            Some(s) => {
                s.state = state;
                s.error = error;
                // Once listed, the cache holds the kind (a relist swaps it whole when done).
                s.listed |= listed;
            }
            None => sources.push(Source { kind, state, error, listed }),
        }
    }

    fn touch(&self) {
        *self.last_change.lock().expect("last change lock") = Some(Utc::now());
        self.changed.notify_one();
    }
}

/// Follows the cluster until `stop`, publishing each new view (as JSON) on `tx` while someone
/// looks (a receiver other than the server's own is held) or `demand` asks. Ends early, with
/// an error, only when a view cannot be made (a bug): the caller stops serving.
pub async fn run(
    client: kube::Client,
    whom: Whom,
    tx: watch::Sender<Arc<str>>,
    demand: Arc<Demand>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let shared = Arc::new(Shared::default());
    let mut tasks = JoinSet::new();
    let caches = Caches {
        workloads: spawn_watch(&mut tasks, &client, whom.namespace.as_deref(), &shared, &stop),
        replicas: spawn_watch(&mut tasks, &client, whom.namespace.as_deref(), &shared, &stop),
        nodes: spawn_watch(&mut tasks, &client, whom.namespace.as_deref(), &shared, &stop),
        offers: spawn_watch(&mut tasks, &client, whom.namespace.as_deref(), &shared, &stop),
        policies: spawn_watch(&mut tasks, &client, whom.namespace.as_deref(), &shared, &stop),
        reputations: spawn_watch(&mut tasks, &client, whom.namespace.as_deref(), &shared, &stop),
        attestations: spawn_watch(&mut tasks, &client, whom.namespace.as_deref(), &shared, &stop),
        accounts: spawn_watch(&mut tasks, &client, whom.namespace.as_deref(), &shared, &stop),
        grants: spawn_watch(&mut tasks, &client, whom.namespace.as_deref(), &shared, &stop),
        audit: spawn_watch(&mut tasks, &client, whom.namespace.as_deref(), &shared, &stop),
    };
    tasks.spawn(read_members(client.clone(), shared.clone(), stop.clone()));
    let (caches, whom) = (Arc::new(caches), Arc::new(whom));
    let mut dirty = true;
    let mut settle = SETTLE;
    let outcome = loop {
        // The server holds one receiver; any other is a stream open or a request waiting.
        if dirty && tx.receiver_count() > 1 {
            let started = Instant::now();
            let (caches, shared, whom) = (caches.clone(), shared.clone(), whom.clone());
            match tokio::task::spawn_blocking(move || make(&caches, &shared, &whom)).await {
                Ok(Some(json)) => {
                    tx.send_replace(json);
                }
                Ok(None) => {}
                Err(e) => break Err(anyhow::anyhow!("the dashboard's view could not be made: {e}")),
            }
            dirty = false;
            settle = SETTLE.max(started.elapsed());
        }
        let demanded = tokio::select! {
            () = stop.cancelled() => break Ok(()),
            () = shared.changed.notified() => {
                dirty = true;
                false
            }
            () = demand.notified() => true,
        };
        if demanded {
            if !dirty {
                // Nothing new: the current view again, to whoever waits.
                tx.send_modify(|_| {});
            }
            continue;
        }
        tokio::select! {
            () = stop.cancelled() => break Ok(()),
            () = tokio::time::sleep(settle) => {}
        }
    };
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    outcome
}

/// The view now, as JSON.
fn make(caches: &Caches, shared: &Shared, whom: &Whom) -> Option<Arc<str>> {
    let objects = caches.objects();
    let members = shared.members.lock().expect("members lock").clone();
    let sources = shared.sources.lock().expect("sources lock").clone();
    let last_change = *shared.last_change.lock().expect("last change lock");
    let v = view::view(&view::Input {
        objects: &objects,
        members: &members,
        sources: &sources,
        me: whom.me.as_deref(),
        server: &whom.server,
        namespace: whom.namespace.as_deref(),
        last_change,
        now: Utc::now(),
    });
    match serde_json::to_string(&v) {
        Ok(json) => Some(Arc::from(json)),
        Err(e) => {
            eprintln!("ui dashboard: cannot write the view as JSON: {e}");
            None
        }
    }
}

/// Whether a watch error is its expiry (410 Gone: the resource version is too old), after
/// which the watcher lists again: no failure.
fn expired(e: &watcher::Error) -> bool {
    match e {
        watcher::Error::WatchError(status) => status.code == 410,
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status))
        | watcher::Error::WatchFailed(kube::Error::Api(status)) => status.code == 410,
        _ => false,
    }
}

/// Starts the watch of kind `S` (in `namespace` only, for a namespaced kind, when given) into a
/// cache; returns the cache.
fn spawn_watch<S: KindSpec>(
    tasks: &mut JoinSet<()>,
    client: &kube::Client,
    namespace: Option<&str>,
    shared: &Arc<Shared>,
    stop: &CancellationToken,
) -> Store<Kube<S>> {
    let (reader, writer) = reflector::store();
    let api = match namespace {
        Some(ns) => api_in::<S>(client, ns),
        None => api_all::<S>(client),
    };
    let stream = watcher(api, watcher::Config::default()).default_backoff().reflect(writer);
    let (shared, stop) = (shared.clone(), stop.clone());
    shared.set_source(S::PLURAL, SourceState::Listing, None);
    tasks.spawn(async move {
        let mut stream = std::pin::pin!(stream);
        loop {
            let event = tokio::select! {
                () = stop.cancelled() => return,
                e = stream.next() => e,
            };
            match event {
                None => return,
                Some(Ok(watcher::Event::Init)) => shared.set_source(S::PLURAL, SourceState::Listing, None),
                Some(Ok(watcher::Event::InitApply(_))) => {}
                Some(Ok(watcher::Event::InitDone)) => {
                    shared.set_source(S::PLURAL, SourceState::Watching, None);
                    shared.touch();
                }
                Some(Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_))) => {
                    shared.set_source(S::PLURAL, SourceState::Watching, None);
                    shared.touch();
                }
                Some(Err(e)) if expired(&e) => {
                    // The watcher lists again by itself.
                    shared.set_source(S::PLURAL, SourceState::Listing, None);
                    shared.changed.notify_one();
                }
                Some(Err(e)) => {
                    // The watcher tries again by itself, after a backoff.
                    shared.set_source(S::PLURAL, SourceState::Failing, Some(e.to_string()));
                    shared.changed.notify_one();
                }
            }
        }
    });
    reader
}

/// Reads the members now and every [`MEMBERS_EVERY`] (each read within [`MEMBERS_TIMEOUT`]);
/// each read is published, so the page shows when the last one was, even if nothing changed.
async fn read_members(client: kube::Client, shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        let read = match tokio::time::timeout(MEMBERS_TIMEOUT, read_members_once(&client)).await {
            Ok(read) => read,
            Err(_) => Some(Err(format!(
                "cannot read the members: no answer within {} s",
                MEMBERS_TIMEOUT.as_secs()
            ))),
        };
        *shared.members.lock().expect("members lock") = read;
        shared.changed.notify_one();
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(MEMBERS_EVERY) => {}
        }
    }
}

/// `GET /cluster/members` (Raft's view: roles, states, the leader) and `GET /members` (every
/// member's did).
async fn read_members_once(client: &kube::Client) -> MembersRead {
    let get = |path: &str| http::Request::get(path).body(Vec::new()).expect("a valid request");
    let raft = client.request::<serde_json::Value>(get("/cluster/members")).await;
    let dids = client.request::<serde_json::Value>(get("/members")).await;
    Some(match (raft, dids) {
        (Ok(raft), Ok(dids)) => Ok(view::MembersSeen {
            items: view::members_of(&raft),
            dids: view::member_dids(&dids),
            read_at: Utc::now(),
        }),
        (Err(e), _) => Err(format!("cannot read the members (GET /cluster/members): {e}")),
        (_, Err(e)) => Err(format!("cannot read the members (GET /members): {e}")),
    })
}
