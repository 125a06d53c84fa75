//! The node lifecycle controller: a node heartbeats by renewing its Lease
//! (`univrs-node-lease/NODE`); this controller keeps the Node's Ready condition in step with it
//! (`decide`) and, once a node has been lapsed for the eviction timeout, deletes the Replicas
//! bound to it, so the workload controller makes new ones that the scheduler places elsewhere.
//! Deleted, not just marked: a node that comes back finds nothing bound to it, so there are
//! never two copies of one replica. A node its operator withdrew (`spec.unschedulable`) is
//! drained the same way, at once.

pub mod decide;

use std::sync::Arc;
use std::time::Duration;

use api::kinds::{LeaseSpec, NodeConditionType, NodeSpec, NodeStatus, ReplicaSpec};
use api::meta::{Condition, ConditionStatus, Time};
use chrono::Utc;
use futures_util::stream;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::controller::{Action, trigger_self, trigger_with};
use kube::runtime::reflector::{ObjectRef, Store};
use serde_json::json;

use self::decide::{Heartbeat, decide};
use crate::Error;
use crate::resource::{Kube, api_in, is_conflict, is_not_found};
use crate::runtime::{self, Shared, cache, fill_only, ready};

/// The namespace of node heartbeat Leases (each named after its node).
pub const LEASE_NAMESPACE: &str = "univrs-node-lease";

/// The node lifecycle controller's settings.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// How long a node stays lapsed before its replicas are evicted.
    pub eviction_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self { eviction_timeout: Duration::from_secs(30) }
    }
}

struct Ctx {
    shared: Shared,
    config: Config,
    leases: Store<Kube<LeaseSpec>>,
    replicas: Store<Kube<ReplicaSpec>>,
}

/// Runs the controller until shutdown (call through `runtime::run_elected`).
pub async fn run(shared: Shared, config: Config) {
    let client = shared.client.clone();
    let (nodes, node_changes) = cache::<NodeSpec>(&client);
    let (leases, lease_changes) = cache::<LeaseSpec>(&client);
    let (replicas, replica_changes) = cache::<ReplicaSpec>(&client);
    let node_of_lease = |lease: Kube<LeaseSpec>| {
        (lease.namespace() == Some(LEASE_NAMESPACE)).then(|| ObjectRef::<Kube<NodeSpec>>::new(lease.name()))
    };
    let queue = stream::select_all([
        Box::pin(trigger_self(node_changes, ())) as runtime::Queue<Kube<NodeSpec>>,
        Box::pin(trigger_with(lease_changes, node_of_lease)),
        Box::pin(fill_only(replica_changes)),
    ]);
    let ctx = Arc::new(Ctx { shared: shared.clone(), config, leases, replicas });
    runtime::drive("nodelifecycle", &shared, nodes, queue, |n, c| Box::pin(reconcile(n, c)), ctx).await;
}

async fn reconcile(node: Arc<Kube<NodeSpec>>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if node.is_deleting() {
        return Ok(Action::await_change());
    }
    ready(&ctx.leases, "leases").await?;
    ready(&ctx.replicas, "replicas").await?;
    let now = Utc::now();
    let lease = ctx.leases.get(&ObjectRef::new(node.name()).within(LEASE_NAMESPACE));
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
            decide::Why::LeaseLapsed => format!("the node's lease {LEASE_NAMESPACE}/{} lapsed", node.name()),
            decide::Why::NoLease => {
                format!("the node never renewed its lease {LEASE_NAMESPACE}/{}", node.name())
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
        let finished = r.status.as_ref().is_some_and(|s| s.phase.is_terminal());
        if r.spec.node_name.as_deref() != Some(node) || r.is_deleting() || finished {
            continue;
        }
        let api = api_in::<ReplicaSpec>(&ctx.shared.client, r.namespace().unwrap_or("default"));
        let dp = DeleteParams {
            preconditions: Some(Preconditions { uid: Some(r.uid().to_owned()), resource_version: None }),
            ..Default::default()
        };
        tracing::info!(replica = r.name(), node, "evicting");
        match api.delete(r.name(), &dp).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) || is_conflict(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
