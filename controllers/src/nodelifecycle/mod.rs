//! The node lifecycle controller: a node heartbeats by renewing its Lease
//! (`univrs-node-lease/NODE`); this controller keeps the Node's Ready condition in step with it
//! (`decide`) and, once a node has been lapsed for the eviction timeout, deletes the Replicas
//! bound to it, so the workload controller makes new ones that the scheduler places elsewhere.
//! Deleted, not just marked: a node that comes back finds nothing bound to it, so there are
//! never two copies of one replica. A node its operator withdrew (`spec.unschedulable`) is
//! drained the same way, at once.
//!
//! A replica is bound to one Node object (`spec.nodeName` and `spec.nodeUid`): when that Node is
//! deleted, or the name now belongs to another Node (another uid: deleted and registered again,
//! perhaps by someone else), its replicas are evicted too (`bindings`), so they are made again
//! elsewhere and never handed to whoever registers the name next. The reconcile of a deleted
//! object never runs, so this is not a per-Node reconcile: a sweep over all Nodes and Replicas
//! runs after each burst of Node changes and of replica bindings that look broken, and every
//! `Config::sweep_every`. A Node the cache does not show is looked up on the apiserver before
//! its replicas go, so a cache late to see a new Node never costs its replicas.

pub mod bindings;
pub mod decide;

use api::kinds::event::EventType;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use api::kinds::{LeaseSpec, NODE_LEASE_NAMESPACE, NodeConditionType, NodeSpec, NodeStatus, ReplicaSpec};
use api::meta::{Condition, ConditionStatus, Time};
use chrono::Utc;
use futures_util::stream;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::controller::{Action, trigger_self, trigger_with};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use serde_json::json;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use self::bindings::Binding;
use self::decide::{Heartbeat, decide};
use crate::Error;
use crate::runtime::{self, Shared, cache, cache_observed, fill_only, ready};
use client::resource::{Kube, api_in, is_conflict, is_not_found};

/// The node lifecycle controller's settings.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// How long a node stays lapsed before its replicas are evicted.
    pub eviction_timeout: Duration,
    /// A sweep for replicas of gone Nodes this often even without changes.
    pub sweep_every: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self { eviction_timeout: Duration::from_secs(30), sweep_every: Duration::from_secs(30) }
    }
}

/// Changes are gathered this long before a sweep.
const SWEEP_DEBOUNCE: Duration = Duration::from_millis(200);

struct Ctx {
    shared: Shared,
    config: Config,
    nodes: Store<Kube<NodeSpec>>,
    leases: Store<Kube<LeaseSpec>>,
    replicas: Store<Kube<ReplicaSpec>>,
    /// NodeReady/NodeNotReady about Nodes, Evicted about replicas.
    events: client::events::Recorder,
}

/// Runs the controller until shutdown (call through `runtime::run_elected`).
pub async fn run(shared: Shared, config: Config) {
    let client = shared.client.clone();
    // Wakes the sweep: every Node change (a deletion above all), and every replica whose binding
    // looks broken as it arrives (bound to a Node the cache does not show, or to another uid).
    let wake = Arc::new(Notify::new());
    let (nodes, node_changes) = {
        let wake = wake.clone();
        cache_observed::<NodeSpec>(&client, move |_| wake.notify_one())
    };
    let (leases, lease_changes) = cache::<LeaseSpec>(&client);
    let (replicas, replica_changes) = {
        let (wake, nodes) = (wake.clone(), nodes.clone());
        cache_observed::<ReplicaSpec>(&client, move |e| {
            let matters = match e {
                watcher::Event::Apply(r) => looks_orphaned(r, &nodes),
                watcher::Event::InitDone => true,
                _ => false,
            };
            if matters {
                wake.notify_one();
            }
        })
    };
    let node_of_lease = |lease: Kube<LeaseSpec>| {
        (lease.namespace() == Some(NODE_LEASE_NAMESPACE))
            .then(|| ObjectRef::<Kube<NodeSpec>>::new(lease.name()))
    };
    let queue = stream::select_all([
        Box::pin(trigger_self(node_changes, ())) as runtime::Queue<Kube<NodeSpec>>,
        Box::pin(trigger_with(lease_changes, node_of_lease)),
        Box::pin(fill_only(replica_changes)),
    ]);
    let events = client::events::Recorder::new(client.clone(), EVENTS_CONTROLLER, &shared.lease.identity);
    let ctx =
        Arc::new(Ctx { shared: shared.clone(), config, nodes: nodes.clone(), leases, replicas, events });
    // The sweep runs for as long as the reconciles are driven (which also fills the caches),
    // and stops once they have drained.
    let stop = CancellationToken::new();
    let sweeps = sweep_loop(ctx.clone(), wake, stop.clone());
    let drive = async {
        runtime::drive("nodelifecycle", &shared, nodes, queue, |n, c| Box::pin(reconcile(n, c)), ctx).await;
        stop.cancel();
    };
    tokio::join!(drive, sweeps);
}

fn binding(r: &Kube<ReplicaSpec>) -> Option<Binding<'_>> {
    r.spec.node_name.as_deref().map(|node| Binding { node, node_uid: r.spec.node_uid.as_deref() })
}

fn as_node(n: &Kube<NodeSpec>) -> bindings::Node<'_> {
    bindings::Node { uid: n.uid(), deleting: n.is_deleting() }
}

fn is_finished(r: &Kube<ReplicaSpec>) -> bool {
    r.status.as_ref().is_some_and(|s| s.phase.is_terminal())
}

/// Whether a replica, as it arrives, is bound to a Node the cache does not show as its own.
fn looks_orphaned(r: &Kube<ReplicaSpec>, nodes: &Store<Kube<NodeSpec>>) -> bool {
    let Some(b) = binding(r) else { return false };
    if is_finished(r) || r.is_deleting() {
        return false;
    }
    let node = nodes.get(&ObjectRef::new(b.node));
    bindings::check(b, node.as_deref().map(as_node)).is_err()
}

/// Sweeps after each burst of changes and every `sweep_every`, until `stop`.
async fn sweep_loop(ctx: Arc<Ctx>, wake: Arc<Notify>, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = wake.notified() => {}
            () = tokio::time::sleep(ctx.config.sweep_every) => {}
        }
        let pass = async {
            tokio::time::sleep(SWEEP_DEBOUNCE).await;
            sweep(&ctx).await
        };
        // Cancelled with the controller: the caches stop filling then, and a pass waiting for
        // them would wait forever.
        let result = tokio::select! {
            () = stop.cancelled() => return,
            r = pass => r,
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "sweep for replicas of gone nodes failed");
            wake.notify_one();
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
}

/// One sweep: evicts every replica whose Node is gone, was replaced, or that carries no Node
/// uid (`bindings::orphans`). A verdict that rests on the Node is checked against the
/// apiserver first.
async fn sweep(ctx: &Ctx) -> Result<(), Error> {
    ready(&ctx.nodes, "nodes").await?;
    ready(&ctx.replicas, "replicas").await?;
    let nodes = ctx.nodes.state();
    let by_name: HashMap<&str, bindings::Node<'_>> = nodes.iter().map(|n| (n.name(), as_node(n))).collect();
    let replicas = ctx.replicas.state();
    let todo = bindings::orphans(
        &by_name,
        replicas.iter().map(|r| bindings::Replica {
            key: r.as_ref(),
            binding: binding(r),
            finished: is_finished(r),
            deleting: r.is_deleting(),
        }),
    );
    let api = api_in::<NodeSpec>(&ctx.shared.client, "");
    // The live Node of each name looked up in this sweep.
    let mut live: HashMap<&str, Option<Kube<NodeSpec>>> = HashMap::new();
    for (r, why) in todo {
        let b = binding(r).expect("orphans are bound");
        if why.depends_on_the_node() {
            if !live.contains_key(b.node) {
                live.insert(b.node, api.get_opt(b.node).await?);
            }
            if bindings::check(b, live[b.node].as_ref().map(as_node)).is_ok() {
                continue; // the cache was late: the replica's Node is there
            }
        }
        delete_replica(ctx, r, why.as_str()).await?;
    }
    Ok(())
}

async fn reconcile(node: Arc<Kube<NodeSpec>>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if node.is_deleting() {
        return Ok(Action::await_change());
    }
    ready(&ctx.leases, "leases").await?;
    ready(&ctx.replicas, "replicas").await?;
    let now = Utc::now();
    let lease = ctx.leases.get(&ObjectRef::new(node.name()).within(NODE_LEASE_NAMESPACE));
    let heartbeat = lease.as_ref().and_then(|l| {
        Some(Heartbeat {
            renewed: l.spec.renew_time?.0,
            duration: Duration::from_secs(u64::try_from(l.spec.lease_duration_seconds?).ok()?),
        })
    });
    let created = node
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or(now, |t| chrono::DateTime::from_timestamp(t.0.as_second(), 0).unwrap_or(now));
    let d = decide(now, created, heartbeat, ctx.config.eviction_timeout);

    let status = node.status.clone().unwrap_or_default();
    let current = status.conditions.iter().find(|c| c.type_ == NodeConditionType::Ready);
    let wanted = if d.ready { ConditionStatus::True } else { ConditionStatus::False };
    if current.is_none_or(|c| c.status != wanted || c.reason.as_deref() != Some(d.why.reason())) {
        let message = match d.why {
            decide::Why::Heartbeat => "the node's lease is renewed in time".to_owned(),
            decide::Why::LeaseLapsed => {
                format!("the node's lease {NODE_LEASE_NAMESPACE}/{} lapsed", node.name())
            }
            decide::Why::NoLease => {
                format!("the node never renewed its lease {NODE_LEASE_NAMESPACE}/{}", node.name())
            }
        };
        let mut conditions: Vec<Condition<NodeConditionType>> =
            status.conditions.iter().filter(|c| c.type_ != NodeConditionType::Ready).cloned().collect();
        conditions.push(Condition {
            type_: NodeConditionType::Ready,
            status: wanted,
            reason: Some(d.why.reason().to_owned()),
            message: Some(message),
            last_transition_time: Some(Time(now)),
            observed_generation: None,
        });
        let new = NodeStatus {
            conditions,
            last_heartbeat_time: heartbeat.map(|h| Time(h.renewed)).or(status.last_heartbeat_time),
            ..status.clone()
        };
        let api = api_in::<NodeSpec>(&ctx.shared.client, "");
        tracing::info!(node = node.name(), ready = d.ready, reason = d.why.reason(), "node readiness");
        let (type_, reason) =
            if d.ready { (EventType::Normal, "NodeReady") } else { (EventType::Warning, "NodeNotReady") };
        let note = format!(
            "Node {} is {}: {}",
            node.name(),
            if d.ready { "Ready" } else { "not Ready" },
            d.why.reason()
        );
        ctx.events
            .record(&client::events::reference_to(&*node), None, type_, reason, "Heartbeat", &note)
            .await;
        match api
            .patch_status(node.name(), &PatchParams::default(), &Patch::Merge(&json!({ "status": new })))
            .await
        {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => return Ok(Action::await_change()),
            Err(e) => return Err(e.into()),
        }
    }
    if d.evict || node.spec.unschedulable {
        // Lapsed for the eviction timeout, or withdrawn by its operator (`ui node withdraw`):
        // its replicas go, and are made again elsewhere.
        evict(&ctx, node.name()).await?;
    }
    let recheck =
        if node.spec.unschedulable { d.recheck_after.min(Duration::from_secs(2)) } else { d.recheck_after };
    Ok(Action::requeue(recheck))
}

/// Deletes every unfinished replica bound to `node`.
async fn evict(ctx: &Ctx, node: &str) -> Result<(), Error> {
    for r in ctx.replicas.state() {
        if r.spec.node_name.as_deref() != Some(node) || r.is_deleting() || is_finished(&r) {
            continue;
        }
        delete_replica(ctx, &r, "its node lapsed or was withdrawn").await?;
    }
    Ok(())
}

/// The `reportingController` of this controller's Events.
pub const EVENTS_CONTROLLER: &str = "univrs.io/node-lifecycle";

/// Deletes one replica, with its uid as precondition (never a newer one of the same name).
async fn delete_replica(ctx: &Ctx, r: &Kube<ReplicaSpec>, why: &str) -> Result<(), Error> {
    let api = api_in::<ReplicaSpec>(&ctx.shared.client, r.namespace().unwrap_or("default"));
    let dp = DeleteParams {
        preconditions: Some(Preconditions { uid: Some(r.uid().to_owned()), resource_version: None }),
        ..Default::default()
    };
    tracing::info!(
        namespace = r.namespace().unwrap_or("default"),
        "evicting replica {} from node {}: {why}",
        r.name(),
        r.spec.node_name.as_deref().unwrap_or_default()
    );
    // Said about the replica's workload (its owner reads it there after the replica is gone),
    // with the replica as the related object; about the replica itself when it has none.
    let node = r.spec.node_name.as_deref().unwrap_or_default();
    let replica = client::events::reference_to(r);
    let workload =
        r.metadata.owner_references.iter().flatten().find(|o| o.controller == Some(true)).map(|o| {
            api::kinds::event::ObjectReference {
                api_version: Some(o.api_version.clone()),
                kind: Some(o.kind.clone()),
                name: Some(o.name.clone()),
                namespace: r.metadata.namespace.clone(),
                uid: Some(o.uid.clone()),
                ..Default::default()
            }
        });
    let note = format!("Evicting replica {} from node {node}: {why}", r.name());
    match &workload {
        Some(w) => ctx.events.record(w, Some(&replica), EventType::Warning, "Evicted", "Evict", &note).await,
        None => ctx.events.record(&replica, None, EventType::Warning, "Evicted", "Evict", &note).await,
    }
    match api.delete(r.name(), &dp).await {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) || is_conflict(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
