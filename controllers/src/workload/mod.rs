//! The workload controller: keeps the Replicas a Workload owns (ownerReferences, by uid, with
//! `controller: true`) equal to `spec.replicas` of its current template, rolls out template
//! changes (`plan`), and reports `status` through the status subresource.

pub mod plan;

use api::kinds::event::EventType;
use std::sync::Arc;

use api::kinds::{
    ReplicaPhase, ReplicaSpec, ReplicaStatus, WorkloadConditionType, WorkloadSpec, WorkloadStatus,
};
use api::meta::{Condition, ConditionStatus, Time};
use chrono::Utc;
use futures_util::stream;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::{Action, trigger_owners, trigger_self};
use kube::runtime::reflector::Store;
use serde_json::json;

use self::plan::{Have, TEMPLATE_LABEL};
use crate::Error;
use crate::runtime::{self, Shared, cache, ready};
use client::resource::{Kube, api_in, is_conflict, is_not_found};

/// The workload controller's settings.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// Replicas a rollout may create above `spec.replicas`.
    pub surge: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self { surge: 1 }
    }
}

struct Ctx {
    shared: Shared,
    config: Config,
    replicas: Store<Kube<ReplicaSpec>>,
    /// SuccessfulCreate, SuccessfulDelete and Replacing, as Events about each workload.
    events: client::events::Recorder,
}

/// The `reportingController` of this controller's Events.
pub const EVENTS_CONTROLLER: &str = "univrs.io/workload";

/// Runs the workload controller until shutdown (call through `runtime::run_elected`).
pub async fn run(shared: Shared, config: Config) {
    let client = shared.client.clone();
    let (workloads, workload_changes) = cache::<WorkloadSpec>(&client);
    let (replicas, replica_changes) = cache::<ReplicaSpec>(&client);
    let queue = stream::select(
        Box::pin(trigger_self(workload_changes, ())) as runtime::Queue<Kube<WorkloadSpec>>,
        Box::pin(trigger_owners(replica_changes, (), ())),
    );
    let events = client::events::Recorder::new(client.clone(), EVENTS_CONTROLLER, &shared.lease.identity);
    let ctx = Arc::new(Ctx { shared: shared.clone(), config, replicas, events });
    runtime::drive("workload", &shared, workloads, queue, |w, c| Box::pin(reconcile(w, c)), ctx).await;
}

/// The replicas `workload` controls, from the cache.
pub fn owned(
    replicas: &Store<Kube<ReplicaSpec>>,
    workload: &Kube<WorkloadSpec>,
) -> Vec<Arc<Kube<ReplicaSpec>>> {
    replicas
        .state()
        .into_iter()
        .filter(|r| {
            r.namespace() == workload.namespace()
                && r.metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|o| o.uid == workload.uid() && o.controller == Some(true))
        })
        .collect()
}

async fn reconcile(workload: Arc<Kube<WorkloadSpec>>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if workload.is_deleting() {
        // Its replicas are the garbage collector's.
        return Ok(Action::await_change());
    }
    ready(&ctx.replicas, "replicas").await?;
    let ns = workload.namespace().unwrap_or("default");
    let api = api_in::<ReplicaSpec>(&ctx.shared.client, ns);
    let container = workload.spec.container();
    let hash = plan::template_hash(&container);
    let desired = u32::try_from(workload.spec.replicas().max(0)).unwrap_or(0);
    let owned = owned(&ctx.replicas, &workload);
    let have: Vec<Have> = owned
        .iter()
        .map(|r| Have {
            name: r.name().to_owned(),
            hash: r.metadata.labels.as_ref().and_then(|l| l.get(TEMPLATE_LABEL)).cloned().unwrap_or_default(),
            ready: r.status.as_ref().is_some_and(ReplicaStatus::is_ready),
            bound: r.spec.node_name.is_some(),
            deleting: r.is_deleting(),
            labels: r.metadata.labels.clone().unwrap_or_default(),
            unopened: is_unopened(r),
            disrupted: api::kinds::disruption_of(r.metadata.annotations.as_ref()).is_some(),
        })
        .collect();
    let labels = workload.metadata.labels.clone().unwrap_or_default();
    let target = plan::Target {
        workload: workload.name(),
        labels: &labels,
        hash: &hash,
        desired,
        surge: ctx.config.surge,
    };
    let todo = plan::plan(target, &have);
    // The image the tag resolved to for this template's replicas: new ones run the same.
    // Only a reference by tag: one by digest runs as the owner wrote it.
    let pin = container.image.as_ref().filter(|i| !i.contains('@')).and_then(|_| {
        let mut same: Vec<&Arc<Kube<ReplicaSpec>>> = owned
            .iter()
            .filter(|r| {
                !r.is_deleting()
                    && r.metadata.labels.as_ref().and_then(|l| l.get(TEMPLATE_LABEL)) == Some(&hash)
            })
            .collect();
        same.sort_by(|a, b| a.name().cmp(b.name()));
        plan::image_pin(same.iter().map(|r| plan::Pinned {
            spec: r.spec.pinned_image.as_deref(),
            status: r.status.as_ref().and_then(|s| s.image_id.as_deref()),
        }))
    });

    for name in &todo.create {
        let meta = ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(ns.to_owned()),
            labels: Some(plan::replica_labels(&labels, workload.name(), &hash)),
            // Who pays for it: the workload's signer, kept on the replica so that metering
            // never depends on the workload still being there (an orphaned replica is billed
            // to whoever signed what made it, never to the next holder of the name).
            annotations: workload.signer().map(|s| {
                std::collections::BTreeMap::from([(api::kinds::PAYER_ANNOTATION.to_owned(), s.to_owned())])
            }),
            owner_references: Some(vec![workload.controller_ref()]),
            ..Default::default()
        };
        let spec = ReplicaSpec {
            workload: workload.name().to_owned(),
            node_name: None,
            node_uid: None,
            container: container.clone(),
            pinned_image: pin.clone(),
        };
        match api.create(&PostParams::default(), &Kube::new(meta, spec)).await {
            // 409: it exists already (the cache had not shown it yet): nothing to do.
            Ok(_) => {
                let note = format!("Created replica {name} ({desired} wanted)");
                let regarding = client::events::reference_to(&*workload);
                ctx.events
                    .record(&regarding, None, EventType::Normal, "SuccessfulCreate", "Create", &note)
                    .await;
            }
            Err(e) if is_conflict(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    for (name, want) in &todo.relabel {
        let Some(r) = owned.iter().find(|r| r.name() == name) else { continue };
        // A merge patch of the labels: the wanted ones set, the others removed (null).
        let mut patch = serde_json::Map::new();
        for key in r.metadata.labels.iter().flatten().map(|(k, _)| k).filter(|k| !want.contains_key(*k)) {
            patch.insert(key.clone(), serde_json::Value::Null);
        }
        for (k, v) in want {
            patch.insert(k.clone(), v.clone().into());
        }
        // The uid as precondition: a replica made again under the name since is not this one.
        let patch = json!({ "metadata": { "uid": r.uid(), "labels": patch } });
        match api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) || is_conflict(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    for name in &todo.delete {
        let Some(r) = owned.iter().find(|r| r.name() == name) else { continue };
        let dp = DeleteParams {
            preconditions: Some(Preconditions { uid: Some(r.uid().to_owned()), resource_version: None }),
            ..Default::default()
        };
        match api.delete(name, &dp).await {
            Ok(_) => {
                // A replica of an older template, or on a node its policy no longer admits, is
                // replaced; otherwise it is one too many.
                let disrupted = api::kinds::disruption_of(r.metadata.annotations.as_ref());
                let old = r.metadata.labels.as_ref().and_then(|l| l.get(TEMPLATE_LABEL)) != Some(&hash);
                let (reason, note) = match disrupted {
                    Some(why) => ("Replacing", format!("Deleted replica {name}, replaced because {why}")),
                    None if old => ("Replacing", format!("Deleted replica {name} of an older template")),
                    None => ("SuccessfulDelete", format!("Deleted replica {name} ({desired} wanted)")),
                };
                let regarding = client::events::reference_to(&*workload);
                ctx.events.record(&regarding, None, EventType::Normal, reason, "Delete", &note).await;
            }
            Err(e) if is_not_found(&e) || is_conflict(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }

    let status = status(&workload, &hash, desired, &owned);
    let current = workload.status.clone().unwrap_or_default();
    if !same_status(&current, &status) {
        let wapi = api_in::<WorkloadSpec>(&ctx.shared.client, ns);
        let patch = json!({ "status": with_transition_times(&current, status) });
        match wapi.patch_status(workload.name(), &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Action::await_change())
}

/// Whether `r` was not started because its node could not open its sealed values.
fn is_unopened(r: &Kube<ReplicaSpec>) -> bool {
    r.status.as_ref().is_some_and(|s| {
        s.phase == ReplicaPhase::Failed && s.reason.as_deref() == Some(api::sealed::NOT_OPENED_REASON)
    })
}

/// The status the owned replicas show.
fn status(
    workload: &Kube<WorkloadSpec>,
    hash: &str,
    desired: u32,
    owned: &[Arc<Kube<ReplicaSpec>>],
) -> WorkloadStatus {
    let active: Vec<_> = owned.iter().filter(|r| !r.is_deleting() && !is_unopened(r)).collect();
    // The latest replica a node could not open the sealed values of, and why.
    let unopened = owned
        .iter()
        .filter(|r| !r.is_deleting() && is_unopened(r))
        .max_by_key(|r| r.status.as_ref().and_then(|s| s.finished_at).map(|t| t.0));
    let count = |f: &dyn Fn(&Kube<ReplicaSpec>) -> bool| {
        i32::try_from(active.iter().filter(|r| f(r)).count()).unwrap_or(i32::MAX)
    };
    let replicas = count(&|_| true);
    let ready = count(&|r| r.status.as_ref().is_some_and(ReplicaStatus::is_ready));
    let disrupted = count(&|r| api::kinds::disruption_of(r.metadata.annotations.as_ref()).is_some());
    let updated = count(&|r| {
        r.metadata.labels.as_ref().and_then(|l| l.get(TEMPLATE_LABEL)).map(String::as_str) == Some(hash)
            && api::kinds::disruption_of(r.metadata.annotations.as_ref()).is_none()
    });
    let desired = i32::try_from(desired).unwrap_or(i32::MAX);
    let generation = workload.metadata.generation;
    let cond = |type_, ok: bool, reason: &str, message: String| Condition {
        type_,
        status: if ok { ConditionStatus::True } else { ConditionStatus::False },
        reason: Some(reason.to_owned()),
        message: Some(message),
        last_transition_time: None,
        observed_generation: generation,
    };
    let pending = active.iter().find_map(|r| {
        let s = r.status.as_ref()?;
        (r.spec.node_name.is_none() && s.reason.is_some())
            .then(|| ("Unschedulable", format!("{}: {}", r.name(), s.message.as_deref().unwrap_or_default())))
    });
    let pending = pending.or_else(|| {
        let r = unopened?;
        let s = r.status.as_ref()?;
        Some((
            api::sealed::NOT_OPENED_REASON,
            format!(
                "{} not started on node {}: {}",
                r.name(),
                r.spec.node_name.as_deref().unwrap_or("?"),
                s.message.as_deref().unwrap_or_default()
            ),
        ))
    });
    let rolling = updated != replicas || replicas != desired;
    WorkloadStatus {
        observed_generation: generation,
        replicas,
        ready_replicas: ready,
        updated_replicas: updated,
        conditions: vec![
            cond(
                WorkloadConditionType::Available,
                ready >= desired,
                if ready >= desired { "ReplicasReady" } else { "ReplicasNotReady" },
                format!("{ready}/{desired} replicas ready"),
            ),
            cond(
                WorkloadConditionType::Progressing,
                rolling,
                match (rolling, disrupted > 0) {
                    (_, true) => "Replacing",
                    (true, false) => "RollingOut",
                    (false, false) => "Complete",
                },
                if disrupted > 0 {
                    format!(
                        "{disrupted} replica(s) on nodes that no longer qualify, replaced once a replacement is ready; {updated}/{desired} replicas on the current template and qualifying nodes, {replicas} in all"
                    )
                } else {
                    format!("{updated}/{desired} replicas on the current template, {replicas} in all")
                },
            ),
            cond(
                WorkloadConditionType::ReplicaFailure,
                pending.is_some(),
                pending.as_ref().map_or("AllPlaced", |(reason, _)| reason),
                pending.map_or_else(|| "every replica is placed or being placed".to_owned(), |(_, m)| m),
            ),
        ],
        last_update_time: None,
    }
}

/// Equal but for times.
fn same_status(a: &WorkloadStatus, b: &WorkloadStatus) -> bool {
    let strip = |s: &WorkloadStatus| {
        let mut s = s.clone();
        s.last_update_time = None;
        for c in &mut s.conditions {
            c.last_transition_time = None;
        }
        s
    };
    strip(a) == strip(b)
}

/// Keeps each condition's transition time while its status holds; stamps the changed ones.
fn with_transition_times(old: &WorkloadStatus, mut new: WorkloadStatus) -> WorkloadStatus {
    let now = Time(Utc::now());
    for c in &mut new.conditions {
        let before = old.conditions.iter().find(|o| o.type_ == c.type_);
        c.last_transition_time = match before {
            Some(o) if o.status == c.status => o.last_transition_time.or(Some(now)),
            _ => Some(now),
        };
    }
    new.last_update_time = Some(now);
    new
}
