//! The scheduler: binds each pending Replica to a node that every hard constraint accepts
//! (`core::filter`), the best by `core::score`; or says in the Replica's status why none does.
//!
//! Binding is an update with the cached `resourceVersion` as precondition, so two schedulers can
//! never bind one Replica twice: the second gets 409 and re-reads. It writes the Node's uid
//! (`spec.nodeUid`) with its name, so the replica belongs to that Node object and never to
//! whoever registers the name after it is deleted (the node lifecycle controller evicts it
//! then). Placements this process made but its cache does not show yet are remembered
//! (`assumed`) and counted against capacity, so back-to-back placements never overcommit a node.
//!
//! Trust (see `core`): an attestation counts only from an attester with standing under the
//! policy (a member, an operator the policy names, or one with reputation at its floor), and a
//! workload that names no TrustPolicy goes only to nodes operated by its own signer or by a
//! control-plane member. The members come from `GET /members`, asked again every
//! `Config::members_every`; the scheduler places nothing until it has heard them once.

pub mod core;
pub mod snapshot;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use api::identity::Did;
use api::kinds::event::{EventType, ObjectReference};
use api::kinds::{
    AccountSpec, AttestationSpec, CreditGrantSpec, DISRUPTION_ANNOTATION, NodeOfferSpec, NodeSpec,
    ReplicaConditionType, ReplicaPhase, ReplicaSpec, ReplicaStatus, ReputationSpec, TrustPolicySpec,
    WorkloadSpec, account_name, disruption_of,
};
use api::meta::{Condition, ConditionStatus, Time};
use chrono::Utc;
use futures_util::stream;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, trigger_self, trigger_with};
use kube::runtime::reflector::{ObjectRef, Store};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use self::core::{Amount, Constraints, Policy, Weights};
use self::snapshot::{Ask, Assumed, Grants, Placed, Topology, Usage};
use crate::Error;
use crate::members::{self, Members};
use crate::runtime::{self, Shared, cache, cache_observed, fill_only, ready};
use client::resource::{Kube, api_in, is_conflict};

/// The scheduler's settings.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// Weights of the score plugins.
    pub weights: Weights,
    /// How often a Replica that cannot be placed is tried again.
    pub retry_unschedulable: Duration,
    /// How often the control plane's members are asked again.
    pub members_every: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            weights: Weights::default(),
            retry_unschedulable: Duration::from_secs(5),
            members_every: Duration::from_secs(30),
        }
    }
}

/// Replicas bound by this process that the cache does not show bound yet, by
/// (namespace, name, uid).
type AssumedMap = HashMap<(String, String, String), Assumed>;

/// What decisions share: the placements assumed and the candidates, rebuilt when a Node,
/// NodeOffer, Reputation, Attestation or the members changed (`topology_changes`) or a second
/// went by (attestations expire).
#[derive(Default)]
struct State {
    assumed: AssumedMap,
    topology: Option<(u64, Instant, Topology)>,
}

struct Ctx {
    shared: Shared,
    config: Config,
    replicas: Store<Kube<ReplicaSpec>>,
    workloads: Store<Kube<WorkloadSpec>>,
    policies: Store<Kube<TrustPolicySpec>>,
    nodes: Store<Kube<NodeSpec>>,
    offers: Store<Kube<NodeOfferSpec>>,
    reputations: Store<Kube<ReputationSpec>>,
    attestations: Store<Kube<AttestationSpec>>,
    accounts: Store<Kube<AccountSpec>>,
    grants: Arc<Mutex<Grants>>,
    grants_cache: Store<Kube<CreditGrantSpec>>,
    members: Members,
    usage: Arc<Mutex<Usage>>,
    topology_changes: Arc<AtomicU64>,
    state: Mutex<State>,
    /// Scheduled and FailedScheduling, as Events about each replica.
    events: client::events::Recorder,
}

/// Runs the scheduler until shutdown (call through `runtime::run_elected`).
pub async fn run(shared: Shared, config: Config) {
    let client = shared.client.clone();
    let usage: Arc<Mutex<Usage>> = Arc::default();
    let (replicas, replica_changes) = {
        let usage = usage.clone();
        cache_observed::<ReplicaSpec>(&client, move |e| usage.lock().expect("usage lock").apply(e))
    };
    let (workloads, w) = cache::<WorkloadSpec>(&client);
    let (policies, p) = cache::<TrustPolicySpec>(&client);
    let topology_changes: Arc<AtomicU64> = Arc::default();
    let (nodes, n) = cache_observed::<NodeSpec>(&client, counter(&topology_changes));
    let (offers, o) = cache_observed::<NodeOfferSpec>(&client, counter(&topology_changes));
    let (reputations, r) = cache_observed::<ReputationSpec>(&client, counter(&topology_changes));
    let (attestations, a) = cache_observed::<AttestationSpec>(&client, counter(&topology_changes));
    let (accounts, ac) = cache::<AccountSpec>(&client);
    let grants: Arc<Mutex<Grants>> = Arc::default();
    let (grants_cache, g) = {
        let grants = grants.clone();
        cache_observed::<CreditGrantSpec>(&client, move |e| grants.lock().expect("grants lock").apply(e))
    };
    let (members_tx, members) = tokio::sync::watch::channel(None);
    let queue = stream::select_all([
        Box::pin(trigger_self(replica_changes, ())) as runtime::Queue<Kube<ReplicaSpec>>,
        // A workload's placement or its policy that changes may disqualify the nodes its
        // replicas run on: look at them again now.
        Box::pin(trigger_with(w, replicas_of_workload(&replicas))),
        Box::pin(trigger_with(p, replicas_under_policy(&replicas, &workloads))),
        // A node or offer that changes (a node turning Ready, a new offer) may make the
        // pending replicas placeable: look at them again now, not at their next retry.
        Box::pin(trigger_with(n, pending(&replicas))),
        Box::pin(trigger_with(o, pending(&replicas))),
        Box::pin(fill_only(r)),
        Box::pin(fill_only(a)),
        Box::pin(fill_only(ac)),
        Box::pin(fill_only(g)),
    ]);
    let ctx = Arc::new(Ctx {
        events: client::events::Recorder::new(client.clone(), EVENTS_CONTROLLER, &shared.lease.identity),
        shared: shared.clone(),
        config,
        replicas: replicas.clone(),
        workloads,
        policies,
        nodes,
        offers,
        reputations,
        attestations,
        accounts,
        grants,
        grants_cache,
        members,
        usage,
        topology_changes: topology_changes.clone(),
        state: Mutex::default(),
    });
    // The members are followed for as long as the scheduler drives; once it has drained, the
    // follower stops too (not before: a reconcile still running may wait for them).
    let stop = CancellationToken::new();
    let changed = move || {
        topology_changes.fetch_add(1, Ordering::Relaxed);
    };
    let follow = members::follow(client.clone(), members_tx, config.members_every, changed, stop.clone());
    let drive = async {
        runtime::drive("scheduler", &shared, replicas, queue, |r, c| Box::pin(reconcile(r, c)), ctx).await;
        stop.cancel();
    };
    tokio::join!(drive, follow);
}

/// Maps any change to the replicas not bound yet.
fn pending<T>(
    replicas: &Store<Kube<ReplicaSpec>>,
) -> impl Fn(T) -> Vec<ObjectRef<Kube<ReplicaSpec>>> + Send + Sync + 'static {
    let replicas = replicas.clone();
    move |_| {
        replicas
            .state()
            .iter()
            .filter(|r| r.spec.node_name.is_none() && !r.is_deleting())
            .map(|r| ObjectRef::from_obj(r.as_ref()))
            .collect()
    }
}

/// Maps a Workload to its bound replicas.
fn replicas_of_workload(
    replicas: &Store<Kube<ReplicaSpec>>,
) -> impl Fn(Kube<WorkloadSpec>) -> Vec<ObjectRef<Kube<ReplicaSpec>>> + Send + Sync + 'static {
    let replicas = replicas.clone();
    move |w| {
        replicas
            .state()
            .iter()
            .filter(|r| {
                r.spec.node_name.is_some() && r.namespace() == w.namespace() && r.spec.workload == w.name()
            })
            .map(|r| ObjectRef::from_obj(r.as_ref()))
            .collect()
    }
}

/// Maps a TrustPolicy to the bound replicas of the workloads in its namespace that name it.
fn replicas_under_policy(
    replicas: &Store<Kube<ReplicaSpec>>,
    workloads: &Store<Kube<WorkloadSpec>>,
) -> impl Fn(Kube<TrustPolicySpec>) -> Vec<ObjectRef<Kube<ReplicaSpec>>> + Send + Sync + 'static {
    let (replicas, workloads) = (replicas.clone(), workloads.clone());
    move |p| {
        let under: BTreeSet<String> = workloads
            .state()
            .iter()
            .filter(|w| w.namespace() == p.namespace() && w.spec.trust_policy.as_deref() == Some(p.name()))
            .map(|w| w.name().to_owned())
            .collect();
        replicas
            .state()
            .iter()
            .filter(|r| {
                r.spec.node_name.is_some()
                    && r.namespace() == p.namespace()
                    && under.contains(&r.spec.workload)
            })
            .map(|r| ObjectRef::from_obj(r.as_ref()))
            .collect()
    }
}

/// Counts the events it is called with.
fn counter<T>(changes: &Arc<AtomicU64>) -> impl FnMut(&T) + Send + 'static {
    let changes = changes.clone();
    move |_| {
        changes.fetch_add(1, Ordering::Relaxed);
    }
}

async fn reconcile(replica: Arc<Kube<ReplicaSpec>>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if replica.is_deleting() {
        return Ok(Action::await_change());
    }
    for (store_ready, what) in [
        (ready(&ctx.workloads, "workloads").await, "workloads"),
        (ready(&ctx.policies, "trustpolicies").await, "trustpolicies"),
        (ready(&ctx.nodes, "nodes").await, "nodes"),
        (ready(&ctx.offers, "nodeoffers").await, "nodeoffers"),
        (ready(&ctx.reputations, "reputations").await, "reputations"),
        (ready(&ctx.attestations, "attestations").await, "attestations"),
        (ready(&ctx.accounts, "accounts").await, "accounts"),
        (ready(&ctx.grants_cache, "creditgrants").await, "creditgrants"),
    ] {
        store_ready.map_err(|_| Error::CacheStopped(what))?;
    }
    ctx.members.clone().wait_for(Option::is_some).await.map_err(|_| Error::CacheStopped("members"))?;
    if replica.spec.node_name.is_some() {
        return check_placement(&ctx, &replica).await;
    }
    let ns = replica.namespace().unwrap_or("default").to_owned();
    let retry = Action::requeue(ctx.config.retry_unschedulable);
    let Some(workload) = ctx.workloads.get(&ObjectRef::new(&replica.spec.workload).within(&ns)) else {
        set_unschedulable(
            &ctx,
            &replica,
            "WorkloadNotFound",
            format!("workload {} not found", replica.spec.workload),
        )
        .await?;
        return Ok(retry);
    };
    let named =
        workload.spec.trust_policy.as_ref().map(|n| (n, ctx.policies.get(&ObjectRef::new(n).within(&ns))));
    let policy = match owner_policy(&workload, named.as_ref().map(|(n, p)| (n.as_str(), p.as_deref()))) {
        Ok(policy) => policy,
        Err((reason, message)) => {
            set_unschedulable(&ctx, &replica, reason, message).await?;
            return Ok(retry);
        }
    };
    let constraints =
        Constraints::of(workload.spec.placement.as_ref()).publishing(&replica.spec.container.ports);

    let constraints = &constraints;
    let need = Amount::of(&replica.spec.container.resources);
    // Decide and record the decision under one lock, so that concurrent reconciles place one
    // replica at a time, each seeing the ones placed before it (capacity and spread).
    let available = workload.signer().map(|s| available_credit(&ctx, s)).unwrap_or_default();
    let named_policy = named.as_ref().and_then(|(_, p)| p.clone());
    let spent = named_policy
        .as_ref()
        .and_then(|p| p.status.as_ref()?.spending.as_ref().map(|s| s.total.micros()))
        .unwrap_or(0);
    let under_policy: Vec<(String, Amount)> = match &workload.spec.trust_policy {
        Some(name) => ctx
            .workloads
            .state()
            .iter()
            // Its owner's workloads under it (another signer's naming the policy is never placed).
            .filter(|w| {
                w.namespace() == Some(ns.as_str())
                    && w.spec.trust_policy.as_ref() == Some(name)
                    && w.signer() == workload.signer()
            })
            .map(|w| (w.name().to_owned(), Amount::of(&w.spec.resources)))
            .collect(),
        None => Vec::new(),
    };
    let avoid = unopened_on(&ctx.replicas.state(), &workload, &replica);
    let ask = Ask {
        workload: (&ns, &replica.spec.workload),
        need,
        policy: policy.as_ref(),
        signer: workload.signer(),
        constraints,
        available: &available,
        spent,
        under_policy: &under_policy,
        avoid: &avoid,
    };
    let decision = {
        let mut state = ctx.state.lock().expect("scheduler state lock");
        decide(&ctx, &mut state, &replica, &ask)
    };
    match decision {
        Err(why) => {
            set_unschedulable(&ctx, &replica, "Unschedulable", why.to_string()).await?;
            Ok(retry)
        }
        Ok(placed) => {
            let node = placed.node.clone();
            let result = bind(&ctx, &replica, placed).await;
            if !matches!(result, Ok(Bound::Yes)) {
                ctx.state.lock().expect("scheduler state lock").assumed.remove(&assumed_key(&replica));
            }
            if let Bound::Yes = result? {
                // Only the condition: the phase is the node agent's, which may already have
                // started the replica (a merge patch of the whole status would set it back).
                let scheduled = condition(ConditionStatus::True, "Scheduled", format!("bound to {node}"));
                // Why it was unschedulable before stays until the agent reports the run
                // (which sets reason and message): clearing it here could erase a failure the
                // agent has just reported.
                let patch = json!({ "status": { "conditions": [scheduled] } });
                patch_status(&ctx, &replica, &patch).await?;
            }
            Ok(Action::await_change())
        }
    }
}

/// The Nodes (uids) where a replica of `workload` made from the same template as `replica`
/// was not started because its node could not open the sealed values: placement avoids them
/// for this template (a template sealed again is another template, and may go anywhere).
pub fn unopened_on(
    replicas: &[Arc<Kube<ReplicaSpec>>],
    workload: &Kube<WorkloadSpec>,
    replica: &Kube<ReplicaSpec>,
) -> BTreeSet<String> {
    use crate::workload::plan::TEMPLATE_LABEL;
    let template =
        |r: &Kube<ReplicaSpec>| r.metadata.labels.as_ref().and_then(|l| l.get(TEMPLATE_LABEL)).cloned();
    let owned = |r: &Kube<ReplicaSpec>| {
        r.metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.uid == workload.uid() && o.controller == Some(true))
    };
    replicas
        .iter()
        .filter(|r| {
            r.namespace() == replica.namespace()
                && owned(r)
                && template(r) == template(replica)
                && r.status.as_ref().is_some_and(|s| {
                    s.phase == ReplicaPhase::Failed
                        && s.reason.as_deref() == Some(api::sealed::NOT_OPENED_REASON)
                })
        })
        .filter_map(|r| r.spec.node_uid.clone())
        .collect()
}

/// Micro-credits `owner` may still spend with each operator: the balance of its line with the
/// operator (its Account, which the apiserver keeps) plus the lines the operator grants it now.
fn available_credit(ctx: &Ctx, owner: &str) -> HashMap<String, i64> {
    let Ok(owner) = Did::parse(owner) else { return HashMap::new() };
    let now = Utc::now();
    let mut out: HashMap<String, i64> = HashMap::new();
    if let Some(account) = ctx.accounts.get(&ObjectRef::new(&account_name(&owner)))
        && let Some(status) = &account.status
    {
        for l in &status.lines {
            out.insert(l.counterparty.as_str().to_owned(), l.balance.micros());
        }
    }
    for line in ctx.grants.lock().expect("grants lock").to(owner.as_str()) {
        if line.expires.is_none_or(|e| e > now) {
            let e = out.entry(line.granter.clone()).or_default();
            *e = e.saturating_add(line.limit);
        }
    }
    out
}

/// The constraints of the TrustPolicy a workload names (`named`: its name and the cached
/// object, if any). A policy named but missing, or signed by someone other than the workload's
/// signer, places nothing: a workload never runs under a policy its owner did not write.
pub fn owner_policy(
    workload: &Kube<WorkloadSpec>,
    named: Option<(&str, Option<&Kube<TrustPolicySpec>>)>,
) -> Result<Option<Policy>, (&'static str, String)> {
    match named {
        None => Ok(None),
        Some((name, None)) => Err(("TrustPolicyNotFound", format!("trust policy {name} not found"))),
        Some((name, Some(p))) if p.signer() != workload.signer() => Err((
            "TrustPolicyNotOwners",
            format!(
                "trust policy {name} is signed by {}, not by the workload's signer {}",
                p.signer().unwrap_or("nobody"),
                workload.signer().unwrap_or("nobody")
            ),
        )),
        Some((_, Some(p))) => Ok(Some(Policy::of(&p.spec))),
    }
}

fn assumed_key(replica: &Kube<ReplicaSpec>) -> (String, String, String) {
    (replica.namespace().unwrap_or("default").to_owned(), replica.name().to_owned(), replica.uid().to_owned())
}

/// Places `replica` on the candidates the caches (and the placements assumed) show, and
/// assumes the placement.
fn decide(
    ctx: &Ctx,
    state: &mut State,
    replica: &Kube<ReplicaSpec>,
    ask: &Ask<'_>,
) -> Result<Placed, core::Unschedulable> {
    let usage = ctx.usage.lock().expect("usage lock");
    // Forget placements the usage now counts (or whose replica is gone or finished). The cache
    // is updated just before the usage: asking the usage leaves no moment counted by neither.
    state.assumed.retain(|(ns, name, uid), _| {
        ctx.replicas.get(&ObjectRef::new(name).within(ns)).is_some_and(|r| {
            let finished = r.status.as_ref().is_some_and(|s| s.phase.is_terminal());
            r.uid() == uid && !(r.spec.node_name.is_some() && (usage.counts(uid) || finished))
        })
    });
    refresh_topology(ctx, state);
    let State { assumed, topology } = state;
    let (_, _, topology) = topology.as_mut().expect("topology just built");
    let placed = topology.place(&usage, assumed.values(), ask, &ctx.config.weights)?;
    drop(usage);
    let workload = (ask.workload.0.to_owned(), ask.workload.1.to_owned());
    let ports = ask.constraints.host_ports.iter().copied().collect();
    assumed.insert(
        assumed_key(replica),
        Assumed { node: placed.node.clone(), amount: ask.need, ports, workload },
    );
    Ok(placed)
}

/// Builds the candidates again when a Node, NodeOffer, Reputation, Attestation or the members
/// changed, or a second went by.
fn refresh_topology(ctx: &Ctx, state: &mut State) {
    let changes = ctx.topology_changes.load(Ordering::Relaxed);
    let stale = state
        .topology
        .as_ref()
        .is_none_or(|(seen, built, _)| *seen != changes || built.elapsed() >= Duration::from_secs(1));
    if stale {
        let objects = snapshot::Objects {
            nodes: ctx.nodes.state(),
            offers: ctx.offers.state(),
            reputations: ctx.reputations.state(),
            attestations: ctx.attestations.state(),
            members: ctx.members.borrow().clone().unwrap_or_default(),
        };
        state.topology = Some((changes, Instant::now(), Topology::build(&objects, Utc::now())));
    }
}

/// How often a bound replica's node is checked again against its workload's policy (besides
/// every change of the policy or the workload).
const RECHECK_PLACEMENT: Duration = Duration::from_secs(30);

/// A bound replica whose node no longer qualifies under its workload's trust policy or
/// placement (the policy was tightened, the operator's reputation fell below its floor, …) is
/// annotated [`DISRUPTION_ANNOTATION`] (why); the workload controller then places a
/// replacement first and stops it once the replacement is ready (or keeps it, saying so, while
/// nothing qualifies). A node that qualifies again clears the mark. A policy that is missing or
/// not the owner's changes nothing here (no replacement could be placed under it either). The
/// mark is metadata, which only the control plane writes: the replica's node (which writes its
/// status) cannot erase it.
async fn check_placement(ctx: &Ctx, replica: &Kube<ReplicaSpec>) -> Result<Action, Error> {
    let recheck = Action::requeue(RECHECK_PLACEMENT);
    let ns = replica.namespace().unwrap_or("default");
    let Some(node) = replica.spec.node_name.as_deref() else { return Ok(recheck) };
    if replica.status.as_ref().is_some_and(|s| s.phase.is_terminal()) {
        return Ok(Action::await_change());
    }
    let Some(workload) = ctx.workloads.get(&ObjectRef::new(&replica.spec.workload).within(ns)) else {
        return Ok(recheck);
    };
    let named =
        workload.spec.trust_policy.as_ref().map(|n| (n, ctx.policies.get(&ObjectRef::new(n).within(ns))));
    let Ok(policy) = owner_policy(&workload, named.as_ref().map(|(n, p)| (n.as_str(), p.as_deref()))) else {
        return Ok(recheck);
    };
    let constraints =
        Constraints::of(workload.spec.placement.as_ref()).publishing(&replica.spec.container.ports);
    let verdict = {
        let mut state = ctx.state.lock().expect("scheduler state lock");
        refresh_topology(ctx, &mut state);
        let (_, _, topology) = state.topology.as_mut().expect("topology just built");
        topology.qualifies(node, policy.as_ref(), workload.signer(), &constraints)
    };
    let marked = disruption_of(replica.metadata.annotations.as_ref()).is_some();
    let mark = match verdict {
        Some(Err(why)) if !marked => {
            let under = workload
                .spec
                .trust_policy
                .as_ref()
                .map_or_else(|| "its workload's placement".to_owned(), |p| format!("trust policy {p}"));
            let message = format!(
                "node {node} no longer qualifies under {under}: {why}; a replacement is placed first, then this replica stops"
            );
            tracing::info!(namespace = ns, "replica {}: {message}", replica.name());
            Some(Value::String(message))
        }
        Some(Ok(())) if marked => {
            tracing::info!(namespace = ns, "replica {}: node {node} qualifies again", replica.name());
            Some(Value::Null)
        }
        _ => None,
    };
    if let Some(mark) = mark {
        let api = api_in::<ReplicaSpec>(&ctx.shared.client, ns);
        // The uid as precondition: a replica made again under the name is not this one.
        let patch =
            json!({ "metadata": { "uid": replica.uid(), "annotations": { DISRUPTION_ANNOTATION: mark } } });
        match api.patch(replica.name(), &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => {}
            Err(e) if client::resource::is_not_found(&e) || is_conflict(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(recheck)
}

/// How a bind ended.
enum Bound {
    /// Bound.
    Yes,
    /// Someone else changed the replica first: its new version comes through the watch.
    Conflict,
}

/// The `reportingController` of the scheduler's Events.
pub const EVENTS_CONTROLLER: &str = "univrs.io/scheduler";

/// Binds to the Node's name and uid, in one write, with the cached `resourceVersion` as
/// precondition.
async fn bind(ctx: &Ctx, replica: &Kube<ReplicaSpec>, mut placed: Placed) -> Result<Bound, Error> {
    let ns = replica.namespace().unwrap_or("default");
    let api = api_in::<ReplicaSpec>(&ctx.shared.client, ns);
    let node = placed.node.clone();
    let node_ref = ObjectReference {
        api_version: Some(api::API_VERSION.into()),
        kind: Some(<NodeSpec as api::KindSpec>::KIND.into()),
        name: Some(placed.node.clone()),
        uid: Some(placed.uid.clone()),
        ..Default::default()
    };
    let why = std::mem::take(&mut placed.why);
    let mut bound = replica.clone();
    bound.spec.node_name = Some(placed.node);
    bound.spec.node_uid = Some(placed.uid);
    bound.status = None;
    match api.replace(replica.name(), &PostParams::default(), &bound).await {
        Ok(_) => {}
        Err(e) if is_conflict(&e) => return Ok(Bound::Conflict),
        Err(e) => return Err(e.into()),
    }
    tracing::info!(namespace = ns, "placed replica {} on node {node}: {why}", replica.name());
    let note = format!("Successfully assigned {ns}/{} to {node}: {why}", replica.name());
    let regarding = client::events::reference_to(replica);
    ctx.events.record(&regarding, Some(&node_ref), EventType::Normal, "Scheduled", "Binding", &note).await;
    Ok(Bound::Yes)
}

fn condition(status: ConditionStatus, reason: &str, message: String) -> Condition<ReplicaConditionType> {
    Condition {
        type_: ReplicaConditionType::Scheduled,
        status,
        reason: Some(reason.to_owned()),
        message: Some(message),
        last_transition_time: Some(Time(Utc::now())),
        observed_generation: None,
    }
}

async fn set_unschedulable(
    ctx: &Ctx,
    replica: &Kube<ReplicaSpec>,
    reason: &str,
    message: String,
) -> Result<(), Error> {
    // Every attempt counts in the event's series (the recorder writes at most one in 5 s).
    let note = format!("{reason}: {message}");
    let regarding = client::events::reference_to(replica);
    ctx.events.record(&regarding, None, EventType::Warning, "FailedScheduling", "Scheduling", &note).await;
    let current = replica.status.clone().unwrap_or_default();
    if current.reason.as_deref() == Some(reason) && current.message.as_deref() == Some(message.as_str()) {
        return Ok(());
    }
    let status = ReplicaStatus {
        phase: ReplicaPhase::Pending,
        reason: Some(reason.to_owned()),
        message: Some(message.clone()),
        conditions: vec![condition(ConditionStatus::False, reason, message)],
        ..Default::default()
    };
    write_status(ctx, replica, &status).await
}

async fn write_status(ctx: &Ctx, replica: &Kube<ReplicaSpec>, status: &ReplicaStatus) -> Result<(), Error> {
    patch_status(ctx, replica, &json!({ "status": status })).await
}

async fn patch_status(ctx: &Ctx, replica: &Kube<ReplicaSpec>, patch: &Value) -> Result<(), Error> {
    let api = api_in::<ReplicaSpec>(&ctx.shared.client, replica.namespace().unwrap_or("default"));
    match api.patch_status(replica.name(), &PatchParams::default(), &Patch::Merge(patch)).await {
        Ok(_) => Ok(()),
        Err(e) if client::is_not_found(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn signed_by<S: api::KindSpec>(signer: Option<&str>, spec: S) -> Kube<S> {
        let annotations = signer.map(|s| [("univrs.io/signer".to_owned(), s.to_owned())].into());
        Kube::new(ObjectMeta { name: Some("x".into()), annotations, ..Default::default() }, spec)
    }

    #[test]
    fn a_workload_runs_only_under_a_policy_its_own_signer_wrote() {
        let w = signed_by(Some("did:key:alice"), WorkloadSpec::default());
        let tp = |s| signed_by(s, TrustPolicySpec { min_reputation: Some(0.5), ..Default::default() });
        assert_eq!(owner_policy(&w, None), Ok(None));
        let mine = tp(Some("did:key:alice"));
        assert_eq!(owner_policy(&w, Some(("eu", Some(&mine)))).unwrap().unwrap().min_reputation, Some(0.5));
        let (reason, message) =
            owner_policy(&w, Some(("eu", Some(&tp(Some("did:key:mallory")))))).unwrap_err();
        assert_eq!(reason, "TrustPolicyNotOwners");
        assert!(message.contains("did:key:mallory"), "{message}");
        assert_eq!(owner_policy(&w, Some(("eu", Some(&tp(None))))).unwrap_err().0, "TrustPolicyNotOwners");
        assert_eq!(owner_policy(&w, Some(("eu", None))).unwrap_err().0, "TrustPolicyNotFound");
    }
}
