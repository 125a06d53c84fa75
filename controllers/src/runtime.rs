//! Our wrapper around kube-runtime: caches, the applier (deduplicating queue, bounded
//! concurrency, one reconcile per object at a time), per-object exponential backoff on errors,
//! metrics, leader election and graceful shutdown.
//!
//! Each controller builds its queue from watch streams (`cache`, `trigger_with`) and hands it to
//! [`drive`]; [`run_elected`] runs a controller only while this process holds its Lease.

use std::collections::HashMap;
use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use api::KindSpec;
use futures_util::{Stream, StreamExt, TryStreamExt, future};
use kube::Client;
use kube::runtime::controller::{Action, ReconcileRequest};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, applier, watcher};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::leader::{self, LeaseConfig};
use crate::metrics::Metrics;
use client::resource::{Kube, api_all};

/// What every controller gets: the client, metrics, shutdown, and its settings.
#[derive(Clone)]
pub struct Shared {
    /// A client built from a kubeconfig.
    pub client: Client,
    /// Where reconciles are counted.
    pub metrics: Metrics,
    /// Cancelled when the process shuts down.
    pub shutdown: CancellationToken,
    /// Leader election settings.
    pub lease: LeaseConfig,
    /// Reconciles of one controller running at once.
    pub concurrency: u16,
}

impl Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("lease", &self.lease)
            .field("concurrency", &self.concurrency)
            .finish_non_exhaustive()
    }
}

/// A controller's queue: requests to reconcile objects of kind `K`.
pub type Queue<K> = Pin<Box<dyn Stream<Item = Result<ReconcileRequest<K>, watcher::Error>> + Send>>;

/// A stream of objects of one kind, each as it is after a change (deleted ones too).
pub type Changes<S> = Pin<Box<dyn Stream<Item = Result<Kube<S>, watcher::Error>> + Send>>;

/// A cache of every object of kind `S` (all namespaces) and the stream of its changes. The
/// stream must be polled for the cache to fill: merge it into a controller's queue.
pub fn cache<S: KindSpec>(client: &Client) -> (Store<Kube<S>>, Changes<S>) {
    cache_observed(client, |_| {})
}

/// As [`cache`], calling `observe` with each watch event once the cache holds it (so that
/// state derived from the events is never behind the cache).
pub fn cache_observed<S: KindSpec>(
    client: &Client,
    mut observe: impl FnMut(&watcher::Event<Kube<S>>) + Send + 'static,
) -> (Store<Kube<S>>, Changes<S>) {
    let (reader, writer) = reflector::store();
    let stream = watcher(api_all::<S>(client), watcher::Config::default().any_semantic())
        .default_backoff()
        .reflect(writer)
        .inspect_ok(move |event| observe(event))
        .touched_objects();
    (reader, Box::pin(stream))
}

/// Polls a cache's stream for its side effect (filling the cache) and triggers nothing.
pub fn fill_only<K: kube::Resource + 'static>(
    changes: impl Stream<Item = Result<impl Send, watcher::Error>> + Send + 'static,
) -> impl Stream<Item = Result<ReconcileRequest<K>, watcher::Error>> + Send + 'static {
    changes.filter_map(|r| future::ready(r.err().map(Err)))
}

/// Waits until a cache holds its first full list.
pub async fn ready<K: kube::Resource + Clone>(store: &Store<K>, what: &'static str) -> Result<(), Error>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    store.wait_until_ready().await.map_err(|_| Error::CacheStopped(what))
}

/// A reconcile function: level-based and idempotent.
pub type ReconcileFn<K, Ctx> =
    fn(Arc<K>, Arc<Ctx>) -> Pin<Box<dyn Future<Output = Result<Action, Error>> + Send>>;

/// Runs a controller's reconciles over `queue` until the queue ends or shutdown: changes are
/// deduplicated per object, at most `shared.concurrency` reconciles run at once and never two
/// for one object; a failing object is retried with exponential backoff. On shutdown, no new
/// reconcile starts and running ones finish.
pub async fn drive<K, Ctx>(
    name: &'static str,
    shared: &Shared,
    store: Store<K>,
    queue: impl Stream<Item = Result<ReconcileRequest<K>, watcher::Error>> + Send + 'static,
    reconcile: ReconcileFn<K, Ctx>,
    ctx: Arc<Ctx>,
) where
    K: kube::Resource<DynamicType = ()> + Clone + Debug + Send + Sync + 'static,
    Ctx: Send + Sync + 'static,
{
    let metrics = shared.metrics.clone();
    // When each waiting object was first seen changed (for queue depth and latency).
    let waiting: Arc<Mutex<HashMap<ObjectRef<K>, Instant>>> = Arc::default();
    let failures: Arc<Mutex<HashMap<ObjectRef<K>, u32>>> = Arc::default();
    let queue = {
        let waiting = waiting.clone();
        let failures = failures.clone();
        let metrics = metrics.clone();
        let store = store.clone();
        queue
            .inspect_ok(move |req| {
                let mut w = waiting.lock().expect("waiting lock");
                w.entry(req.obj_ref.clone()).or_insert_with(Instant::now);
                // Objects deleted before their reconcile are never reconciled: forget them now
                // and then, so that neither map grows without bound.
                if w.len().is_multiple_of(256) {
                    w.retain(|k, _| store.get(k).is_some());
                    failures.lock().expect("failures lock").retain(|k, _| store.get(k).is_some());
                }
                metrics.set_queue_depth(name, w.len());
            })
            .take_until(shared.shutdown.clone().cancelled_owned())
    };
    let reconciler = {
        let metrics = metrics.clone();
        let failures = failures.clone();
        move |obj: Arc<K>, ctx: Arc<Ctx>| {
            let key = ObjectRef::from_obj(obj.as_ref());
            {
                let mut w = waiting.lock().expect("waiting lock");
                if let Some(since) = w.remove(&key) {
                    metrics.queued_for(name, since.elapsed());
                }
                metrics.set_queue_depth(name, w.len());
            }
            let metrics = metrics.clone();
            let failures = failures.clone();
            Box::pin(async move {
                let start = Instant::now();
                let result = reconcile(obj, ctx).await;
                metrics.reconciled(name, start.elapsed(), result.as_ref().err().map(Error::label));
                if result.is_ok() {
                    failures.lock().expect("failures lock").remove(&key);
                }
                result
            })
        }
    };
    let error_policy = move |obj: Arc<K>, error: &Error, _: Arc<Ctx>| {
        let key = ObjectRef::from_obj(obj.as_ref());
        let mut f = failures.lock().expect("failures lock");
        let n = f.entry(key.clone()).or_insert(0);
        let delay = client::retry::backoff(*n);
        *n += 1;
        tracing::warn!(controller = name, object = %key, error = %error, retry_in = ?delay, "reconcile failed");
        Action::requeue(delay)
    };
    let config = kube::runtime::Config::default().concurrency(shared.concurrency);
    applier(reconciler, error_policy, ctx, store, queue, config)
        .for_each(|r| {
            if let Err(e) = r {
                tracing::debug!(controller = name, error = %e, "applier");
            }
            future::ready(())
        })
        .await;
}

/// Runs the controller that `start` builds while this process holds the lease
/// `controller-{name}`; stops it at once when the lease is lost, starts it afresh when won back,
/// and returns after shutdown once it has drained.
pub async fn run_elected<F, Fut>(name: &'static str, shared: Shared, start: F)
where
    F: Fn(Shared) -> Fut,
    Fut: Future<Output = ()>,
{
    let (tx, mut leading) = watch::channel(false);
    // The election outlives shutdown until the controller has drained: the lease is held while
    // running reconciles finish, then released.
    let stop_election = CancellationToken::new();
    let election = tokio::spawn(leader::run(
        shared.client.clone(),
        shared.lease.clone(),
        format!("controller-{name}"),
        tx,
        stop_election.clone(),
    ));
    loop {
        shared.metrics.set_leader(name, false);
        tokio::select! {
            () = shared.shutdown.cancelled() => break,
            r = leading.wait_for(|l| *l) => if r.is_err() { break },
        }
        tracing::info!(controller = name, "leading");
        shared.metrics.set_leader(name, true);
        let lost = leading.wait_for(|l| !*l);
        tokio::select! {
            () = start(shared.clone()) => {}
            _ = lost => {
                tracing::warn!(controller = name, "lease lost: stopped acting");
                continue;
            }
        }
        if shared.shutdown.is_cancelled() {
            break;
        }
    }
    shared.metrics.set_leader(name, false);
    // The election releases the lease when stopped.
    stop_election.cancel();
    let _ = election.await;
}

/// A cache's change stream, kept only to be polled (which fills the cache).
pub type Fill = Pin<Box<dyn Stream<Item = ()> + Send>>;

/// The stream that fills a cache (see [`cache`]), for [`periodic`].
pub fn filling<S: KindSpec>(changes: Changes<S>) -> Fill {
    Box::pin(changes.map(|r| {
        if let Err(e) = r {
            tracing::debug!(kind = S::KIND, error = %e, "watch");
        }
    }))
}

/// Runs `pass` every `every` (the first at once) while `fills` keep their caches filled, until
/// shutdown; a failed pass is logged and counted, and the next one comes on time. For the
/// controllers that act on the whole picture at once (metering, reputation) rather than on
/// one object per change.
pub async fn periodic<F, Fut>(
    name: &'static str,
    shared: &Shared,
    fills: Vec<Fill>,
    every: std::time::Duration,
    mut pass: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), Error>>,
{
    let stop = shared.shutdown.clone();
    let fill = futures_util::stream::select_all(fills)
        .take_until(stop.clone().cancelled_owned())
        .for_each(|()| future::ready(()));
    let passes = async {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let start = Instant::now();
            let result = tokio::select! {
                () = stop.cancelled() => return,
                r = pass() => r,
            };
            shared.metrics.reconciled(name, start.elapsed(), result.as_ref().err().map(Error::label));
            if let Err(e) = result {
                tracing::warn!(controller = name, error = %e, "pass failed");
            }
        }
    };
    tokio::join!(fill, passes);
}
