//! The credits controller: meters running replicas, keeps CreditGrants' and TrustPolicies'
//! spending figures, and stops what its owner cannot, or said it would not, pay for.
//!
//! - **Metering** (`meter`): for each replica bound to a Node priced by its operator's offer,
//!   each period of the run that has ended (and, once the replica has finished, the last one)
//!   becomes a Metering Transfer from the replica's payer (its workload's signer, recorded on
//!   it) to the node's operator, named `meter-<replica uid>-<period ms>-<index>` (names only
//!   members may use). The charges say how far a run is covered, so a second controller, or
//!   this one after a restart, even with another period, charges nothing twice. The apiserver
//!   decides each on the credit line in the Raft entry that writes it (`api::ledger`); a
//!   refused one (no credit left) stops the replica, and the scheduler will not place it on a
//!   priced node again until its owner has credit there. Nothing is charged on a node of the
//!   payer's own, or under an offer with no price, or for what was not requested.
//! - **Spending**: each TrustPolicy's `status.spending` (what its signer paid in all and in the
//!   last hour, what its running replicas cost per hour); once `spending.maxTotal` is reached
//!   its workloads' replicas on priced nodes are stopped, once `maxPerHour` is exceeded at
//!   today's prices the dearest are, and `status.spending.stopped` says why (the scheduler
//!   keeps new ones pending for the same reason).
//! - **Grants**: each CreditGrant's `status` (Active or Expired; how much of it is drawn).
//! - **Network health**: the `univrs_network_*` gauges (`api::health`).
//!
//! It acts on the whole picture every `Config::every` (`runtime::periodic`), not per change;
//! an object that fails is logged and tried again next pass, never holding up the others.

pub mod meter;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::credits::Credits;
use api::identity::Did;
use api::kinds::{
    AccountSpec, CreditGrantSpec, CreditGrantStatus, GrantPhase, NodeOfferSpec, NodeSpec, ReplicaSpec,
    ReputationSpec, SpendingStatus, TransferPhase, TransferReason, TransferSpec, TrustPolicySpec,
    WorkloadSpec, account_name,
};
use api::meta::Time;
use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::reflector::{ObjectRef, Store};
use serde_json::json;

use self::meter::{Due, Rates, Run};
use crate::Error;
use crate::runtime::{self, Shared, cache, filling, ready};
use crate::scheduler::snapshot::operator_offer;
use client::resource::{Kube, api_in, is_conflict, is_not_found};

/// The credits controller's settings.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// The metering period: one charge per replica per period.
    pub period: Duration,
    /// How often it looks.
    pub every: Duration,
    /// Most periods charged per replica in one pass (a controller that was down catches up
    /// over a few passes).
    pub catch_up: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self { period: Duration::from_secs(60), every: Duration::from_secs(10), catch_up: 60 }
    }
}

struct Ctx {
    shared: Shared,
    config: Config,
    replicas: Store<Kube<ReplicaSpec>>,
    nodes: Store<Kube<NodeSpec>>,
    offers: Store<Kube<NodeOfferSpec>>,
    workloads: Store<Kube<WorkloadSpec>>,
    transfers: Store<Kube<TransferSpec>>,
    policies: Store<Kube<TrustPolicySpec>>,
    grants: Store<Kube<CreditGrantSpec>>,
    accounts: Store<Kube<AccountSpec>>,
    reputations: Store<Kube<ReputationSpec>>,
    /// Per replica uid, when this process first saw it finished (a node's `finishedAt` is
    /// believed only up to then).
    ended: Mutex<HashMap<String, DateTime<Utc>>>,
}

/// Runs the controller until shutdown (call through `runtime::run_elected`).
pub async fn run(shared: Shared, config: Config) {
    let client = shared.client.clone();
    let (replicas, a) = cache::<ReplicaSpec>(&client);
    let (nodes, b) = cache::<NodeSpec>(&client);
    let (offers, c) = cache::<NodeOfferSpec>(&client);
    let (workloads, d) = cache::<WorkloadSpec>(&client);
    let (transfers, e) = cache::<TransferSpec>(&client);
    let (policies, f) = cache::<TrustPolicySpec>(&client);
    let (grants, g) = cache::<CreditGrantSpec>(&client);
    let (accounts, h) = cache::<AccountSpec>(&client);
    let (reputations, i) = cache::<ReputationSpec>(&client);
    let fills = vec![
        filling(a),
        filling(b),
        filling(c),
        filling(d),
        filling(e),
        filling(f),
        filling(g),
        filling(h),
        filling(i),
    ];
    let ctx = Arc::new(Ctx {
        shared: shared.clone(),
        config,
        replicas,
        nodes,
        offers,
        workloads,
        transfers,
        policies,
        grants,
        accounts,
        reputations,
        ended: Mutex::default(),
    });
    runtime::periodic("credits", &shared, fills, config.every, || {
        let ctx = ctx.clone();
        async move { pass(&ctx).await }
    })
    .await;
}

async fn pass(ctx: &Ctx) -> Result<(), Error> {
    ready(&ctx.replicas, "replicas").await?;
    ready(&ctx.nodes, "nodes").await?;
    ready(&ctx.offers, "nodeoffers").await?;
    ready(&ctx.workloads, "workloads").await?;
    ready(&ctx.transfers, "transfers").await?;
    ready(&ctx.policies, "trustpolicies").await?;
    ready(&ctx.grants, "creditgrants").await?;
    ready(&ctx.accounts, "accounts").await?;
    let now = Utc::now();
    ready(&ctx.reputations, "reputations").await?;
    meter(ctx, now).await?;
    spending(ctx, now).await?;
    grants(ctx, now).await?;
    ctx.shared.metrics.set_network(&api::health::health(&facts(ctx).as_facts(), now));
    Ok(())
}

/// The facts the network's health figures are computed from, as the caches hold them.
struct Owned {
    nodes: Vec<(String, bool, u64, Option<String>)>,
    reputations: Vec<f64>,
    transfers: Vec<(Credits, DateTime<Utc>)>,
    balances: Vec<Credits>,
}

impl Owned {
    fn as_facts(&self) -> api::health::Facts<'_> {
        api::health::Facts {
            nodes: self
                .nodes
                .iter()
                .map(|(operator, ready, cpu, j)| api::health::NodeFacts {
                    operator,
                    ready: *ready,
                    cpu_millicores: *cpu,
                    jurisdiction: j.as_deref(),
                })
                .collect(),
            operator_reputations: self.reputations.clone(),
            transfers: self.transfers.clone(),
            balances: self.balances.clone(),
        }
    }
}

fn facts(ctx: &Ctx) -> Owned {
    let offers = offers_by_node(ctx);
    let nodes = ctx
        .nodes
        .state()
        .iter()
        .filter(|n| !n.is_deleting())
        .map(|n| {
            let offer = operator_offer(n, offers.get(n.name()).into_iter().flatten().map(AsRef::as_ref));
            let own = n.spec.capacity.cpu_millicores().0;
            let offered = offer.map_or(0, |o| o.spec.resources.cpu_millicores().0);
            let cpu = match (offered, own) {
                (0, c) => c,
                (o, 0) => o,
                (o, c) => o.min(c),
            };
            let jurisdiction = offer.map(|o| o.spec.jurisdiction.as_str().to_owned());
            (n.spec.operator.as_str().to_owned(), crate::scheduler::snapshot::is_ready(n), cpu, jurisdiction)
        })
        .collect();
    let reputations = ctx
        .reputations
        .state()
        .iter()
        .filter(|r| r.spec.subject_kind == api::kinds::SubjectKind::Operator)
        .map(|r| r.status.as_ref().map_or(0.0, |s| s.composite))
        .collect();
    let transfers = ctx
        .transfers
        .state()
        .iter()
        .filter_map(|t| {
            let s = t.status.as_ref().filter(|s| s.phase == TransferPhase::Committed)?;
            Some((t.spec.amount, s.decided_at.as_ref()?.0))
        })
        .collect();
    let balances = ctx.accounts.state().iter().filter_map(|a| a.status.as_ref().map(|s| s.balance)).collect();
    Owned { nodes, reputations, transfers, balances }
}

/// A replica's bill: who pays whom, at what rate per hour, for which run.
struct Bill {
    payer: Did,
    payee: Did,
    per_hour: i128,
    run: Run,
}

/// The cached NodeOffers by the node they offer, built once per pass (a replica's or node's
/// offer is then found among its node's few, not all).
type OffersByNode = HashMap<String, Vec<Arc<Kube<NodeOfferSpec>>>>;

fn offers_by_node(ctx: &Ctx) -> OffersByNode {
    let mut by_node: OffersByNode = HashMap::new();
    for o in ctx.offers.state() {
        by_node.entry(o.spec.node.clone()).or_default().push(o);
    }
    by_node
}

/// Whether `t` is a charge the control plane wrote (unsigned Metering: only members may write
/// one, and only members may use the `meter-` names).
fn is_charge(t: &Kube<TransferSpec>) -> bool {
    t.spec.reason == TransferReason::Metering && t.signer().is_none()
}

/// What `r` is billed, if anything: bound to the very Node it names, paid by someone other than
/// the node's operator (the signer of its workload, recorded on the replica), under a priced
/// offer, started. The run is believed from the node only within what the control plane saw:
/// not before the replica was made, not past when it was first seen finished.
fn bill(ctx: &Ctx, offers: &OffersByNode, r: &Kube<ReplicaSpec>, now: DateTime<Utc>) -> Option<Bill> {
    let status = r.status.as_ref()?;
    let created =
        r.metadata.creation_timestamp.as_ref().and_then(|t| DateTime::from_timestamp(t.0.as_second(), 0))?;
    let start = status.started_at.as_ref()?.0.max(created);
    let node = ctx.nodes.get(&ObjectRef::new(r.spec.node_name.as_deref()?))?;
    if Some(node.uid()) != r.spec.node_uid.as_deref() {
        return None;
    }
    let ns = r.namespace().unwrap_or("default");
    let recorded = r.metadata.annotations.as_ref().and_then(|a| a.get(api::kinds::PAYER_ANNOTATION)).cloned();
    let payer = match recorded {
        Some(p) => p,
        None => ctx.workloads.get(&ObjectRef::new(&r.spec.workload).within(ns))?.signer()?.to_owned(),
    };
    let payer = Did::parse(&payer).ok()?;
    let payee = node.spec.operator.clone();
    if payer == payee {
        return None;
    }
    let offer = operator_offer(&node, offers.get(node.name()).into_iter().flatten().map(AsRef::as_ref))?;
    let rates = Rates::of(&offer.spec.price);
    let per_hour = rates.per_hour(meter::metered(&r.spec.container.resources, status.usage.as_ref()));
    if rates.is_free() || per_hour <= 0 {
        return None;
    }
    let end = if status.phase.is_terminal() {
        let seen = *ctx.ended.lock().expect("ended lock").entry(r.uid().to_owned()).or_insert(now);
        Some(status.finished_at.as_ref().map_or(start, |t| t.0).min(seen))
    } else {
        None
    };
    Some(Bill { payer, payee, per_hour, run: Run { start, end } })
}

/// Charges every period due, replica by replica; a replica that fails is logged and tried
/// again next pass, and never holds up the others.
async fn meter(ctx: &Ctx, now: DateTime<Utc>) -> Result<(), Error> {
    let period = chrono::Duration::from_std(ctx.config.period).unwrap_or(chrono::Duration::seconds(60));
    let replicas = ctx.replicas.state();
    let offers = offers_by_node(ctx);
    ctx.ended.lock().expect("ended lock").retain(|uid, _| replicas.iter().any(|r| r.uid() == uid));
    // How far each replica's run is charged already, from the charges themselves (whatever the
    // period they were charged under): nothing is charged twice, by this process or another.
    let mut covered: HashMap<String, DateTime<Utc>> = HashMap::new();
    for t in ctx.transfers.state().iter().filter(|t| is_charge(t)) {
        let uid = t.name().strip_prefix("meter-").and_then(|rest| rest.get(..36)).unwrap_or_default();
        if let Some(until) = meter::covered_until(t.name(), uid) {
            let e = covered.entry(uid.to_owned()).or_insert(until);
            *e = (*e).max(until);
        }
    }
    for r in &replicas {
        let Some(mut bill) = bill(ctx, &offers, r, now) else { continue };
        if let Some(until) = covered.get(r.uid()) {
            bill.run.start = bill.run.start.max(*until);
        }
        for due in meter::due(bill.run, period, now, i64::MIN, ctx.config.catch_up) {
            match charge(ctx, r, &bill, period, due).await {
                Ok(Some(TransferPhase::Refused)) => {
                    if !r.status.as_ref().is_some_and(|s| s.phase.is_terminal())
                        && let Err(e) =
                            stop(ctx, r, "its owner's credit with the node's operator is used up").await
                    {
                        tracing::warn!(replica = r.name(), error = %e, "cannot stop a replica its owner cannot pay for");
                    }
                    break;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(replica = r.name(), error = %e, "cannot charge; trying again next pass");
                    break;
                }
            }
        }
    }
    Ok(())
}

/// Writes the Metering transfer of one period (or finds it written); its decision, if known.
async fn charge(
    ctx: &Ctx,
    r: &Kube<ReplicaSpec>,
    bill: &Bill,
    period: chrono::Duration,
    due: Due,
) -> Result<Option<TransferPhase>, Error> {
    let name = meter::charge_name(r.uid(), period.num_milliseconds(), due.index);
    let api = api_in::<TransferSpec>(&ctx.shared.client, "");
    let judge = |t: &Kube<TransferSpec>| {
        if is_charge(t) {
            t.status.as_ref().map(|s| s.phase)
        } else {
            // Only members may use these names (access rules); one that is not a charge is
            // left alone, and the period is not charged.
            tracing::warn!(transfer = t.name(), "a transfer that is not a charge holds a charge's name");
            None
        }
    };
    if let Some(t) = ctx.transfers.get(&ObjectRef::new(&name)) {
        return Ok(judge(&t));
    }
    let micros = meter::cost(bill.per_hour, due.to - due.from);
    if micros <= 0 {
        return Ok(None);
    }
    let ns = r.namespace().unwrap_or("default");
    let spec = TransferSpec {
        from: Some(bill.payer.clone()),
        to: bill.payee.clone(),
        amount: Credits::from_micros(micros),
        reason: TransferReason::Metering,
        replica: Some(format!("{ns}/{}", r.name())),
        workload: Some(format!("{ns}/{}", r.spec.workload)),
        memo: Some(format!(
            "{} to {} on {}",
            due.from.format("%Y-%m-%dT%H:%M:%SZ"),
            due.to.format("%Y-%m-%dT%H:%M:%SZ"),
            r.spec.node_name.as_deref().unwrap_or_default()
        )),
    };
    let meta = ObjectMeta { name: Some(name.clone()), ..ObjectMeta::default() };
    match api.create(&PostParams::default(), &Kube::new(meta, spec)).await {
        Ok(t) => {
            let phase = t.status.as_ref().map(|s| s.phase);
            tracing::info!(
                replica = %format!("{ns}/{}", r.name()),
                amount = %Credits::from_micros(micros),
                to = bill.payee.short(),
                phase = ?phase,
                "metered"
            );
            Ok(phase)
        }
        // A 409 is either the charge written already (by this controller before a restart, or
        // another member's) or a write that kept conflicting: read it to know which.
        Err(e) if is_conflict(&e) => match api.get_opt(&name).await? {
            Some(t) => Ok(judge(&t)),
            None => Err(e.into()),
        },
        Err(e) => Err(e.into()),
    }
}

/// Deletes a running replica (with its uid as precondition).
async fn stop(ctx: &Ctx, r: &Kube<ReplicaSpec>, why: &str) -> Result<(), Error> {
    if r.is_deleting() {
        return Ok(());
    }
    let api = api_in::<ReplicaSpec>(&ctx.shared.client, r.namespace().unwrap_or("default"));
    let dp = DeleteParams {
        preconditions: Some(Preconditions { uid: Some(r.uid().to_owned()), resource_version: None }),
        ..DeleteParams::default()
    };
    tracing::info!(
        replica = r.name(),
        node = r.spec.node_name.as_deref().unwrap_or_default(),
        why,
        "stopping"
    );
    match api.delete(r.name(), &dp).await {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) || is_conflict(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// A running replica that is billed, and what it costs an hour.
type Billed = (Arc<Kube<ReplicaSpec>>, Credits);

/// The TrustPolicy (namespace, name) a workload runs under, if it names one its signer wrote,
/// and that signer.
fn policy_of(ctx: &Ctx, ns: &str, workload: &str) -> Option<((String, String), String)> {
    let w = ctx.workloads.get(&ObjectRef::new(workload).within(ns))?;
    let name = w.spec.trust_policy.clone()?;
    let p = ctx.policies.get(&ObjectRef::new(&name).within(ns))?;
    let signer = p.signer()?.to_owned();
    (Some(signer.as_str()) == w.signer()).then(|| ((ns.to_owned(), name), signer))
}

/// Keeps each TrustPolicy's spending figures, and stops the replicas of a policy whose
/// `maxTotal` is reached.
async fn spending(ctx: &Ctx, now: DateTime<Utc>) -> Result<(), Error> {
    let hour_ago = now - chrono::Duration::hours(1);
    let mut figures: BTreeMap<(String, String), SpendingStatus> = BTreeMap::new();
    for t in ctx.transfers.state() {
        let committed = t.status.as_ref().filter(|s| s.phase == TransferPhase::Committed);
        let (Some(s), TransferReason::Metering, Some(w)) = (committed, t.spec.reason, &t.spec.workload)
        else {
            continue;
        };
        let Some((ns, name)) = w.split_once('/') else { continue };
        let Some((key, signer)) = policy_of(ctx, ns, name) else { continue };
        // Only what the policy's own signer paid: charges to someone else under a workload of
        // that name (before it was deleted and made again) are theirs.
        if !is_charge(&t) || t.spec.from.as_ref().map(Did::as_str) != Some(signer.as_str()) {
            continue;
        }
        let f = figures.entry(key).or_default();
        f.total = f.total.checked_add(t.spec.amount).unwrap_or(f.total);
        if s.decided_at.as_ref().is_some_and(|at| at.0 > hour_ago) {
            f.last_hour = f.last_hour.checked_add(t.spec.amount).unwrap_or(f.last_hour);
        }
    }
    // What runs now, per policy, and which replicas are billed.
    let offers = offers_by_node(ctx);
    let mut running: BTreeMap<(String, String), Vec<Billed>> = BTreeMap::new();
    for r in ctx.replicas.state() {
        if r.status.as_ref().is_some_and(|s| s.phase.is_terminal()) || r.is_deleting() {
            continue;
        }
        let Some((key, _)) = policy_of(ctx, r.namespace().unwrap_or("default"), &r.spec.workload) else {
            continue;
        };
        let Some(b) = bill(ctx, &offers, &r, now) else { continue };
        let f = figures.entry(key.clone()).or_default();
        let rate = Credits::from_micros(
            i64::try_from(b.per_hour).unwrap_or(i64::MAX).min(api::ledger::MAX.micros()),
        );
        f.per_hour = f.per_hour.checked_add(rate).unwrap_or(f.per_hour);
        running.entry(key).or_default().push((r, rate));
    }
    for p in ctx.policies.state() {
        let key = (p.namespace().unwrap_or("default").to_owned(), p.name().to_owned());
        let mut f = figures.remove(&key).unwrap_or_default();
        let max_total = p.spec.spending.as_ref().and_then(|s| s.max_total);
        let max_per_hour = p.spec.spending.as_ref().and_then(|s| s.max_per_hour);
        let mut to_stop: Vec<&Arc<Kube<ReplicaSpec>>> = Vec::new();
        if let Some(max) = max_total.filter(|m| f.total >= *m) {
            f.stopped = Some(format!(
                "spending.maxTotal {max} reached ({} spent): replicas on priced nodes are stopped and not placed again",
                f.total
            ));
            to_stop.extend(running.get(&key).into_iter().flatten().map(|(r, _)| r));
        } else if let Some(max) = max_per_hour.filter(|m| f.per_hour > *m) {
            // Prices went up after placement (or the limit down): the dearest replicas stop
            // until what runs fits; the scheduler places them again within the limit.
            f.stopped = Some(format!(
                "spending.maxPerHour {max} exceeded ({} an hour at the nodes' prices now): the dearest replicas are stopped",
                f.per_hour
            ));
            let mut by_rate: Vec<&(Arc<Kube<ReplicaSpec>>, Credits)> =
                running.get(&key).into_iter().flatten().collect();
            by_rate.sort_by_key(|b| std::cmp::Reverse(b.1));
            let mut left = f.per_hour;
            for (r, rate) in by_rate {
                if left <= max {
                    break;
                }
                left = left.checked_sub(*rate).unwrap_or(Credits::ZERO);
                to_stop.push(r);
            }
        }
        for r in to_stop {
            if let Err(e) = stop(ctx, r, "its TrustPolicy's spending limit").await {
                tracing::warn!(replica = r.name(), error = %e, "cannot stop a replica over its spending limit");
            }
        }
        let old = p.status.as_ref().and_then(|s| s.spending.clone()).unwrap_or_default();
        let unchanged = SpendingStatus { updated_at: None, ..old.clone() } == f;
        if unchanged && p.status.as_ref().is_some_and(|s| s.spending.is_some()) {
            continue;
        }
        f.updated_at = Some(Time(now));
        let api = api_in::<TrustPolicySpec>(&ctx.shared.client, &key.0);
        let patch = json!({ "status": { "spending": f } });
        match api.patch_status(&key.1, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => {
                tracing::warn!(policy = %format!("{}/{}", key.0, key.1), error = %e, "cannot write spending")
            }
        }
    }
    Ok(())
}

/// Keeps each CreditGrant's phase and how much of it is drawn: what the grantee owes the
/// granter (from the grantee's Account), up to the grant's limit.
async fn grants(ctx: &Ctx, now: DateTime<Utc>) -> Result<(), Error> {
    for g in ctx.grants.state() {
        let Some(granter) = g.signer().and_then(|s| Did::parse(s).ok()) else { continue };
        let owed = ctx
            .accounts
            .get(&ObjectRef::new(&account_name(&g.spec.grantee)))
            .and_then(|a| a.status.clone())
            .map_or(Credits::ZERO, |a| {
                Credits::ZERO.checked_sub(api::ledger::line(&a, &granter)).unwrap_or(Credits::ZERO)
            });
        let used = owed.max(Credits::ZERO).min(g.spec.limit.max(Credits::ZERO));
        let phase = if g.spec.expires.as_ref().is_some_and(|e| e.0 <= now) {
            GrantPhase::Expired
        } else {
            GrantPhase::Active
        };
        let status = CreditGrantStatus { phase, used };
        if g.status.as_ref() == Some(&status) {
            continue;
        }
        let api = api_in::<CreditGrantSpec>(&ctx.shared.client, "");
        match api
            .patch_status(g.name(), &PatchParams::default(), &Patch::Merge(&json!({ "status": status })))
            .await
        {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => tracing::warn!(grant = g.name(), error = %e, "cannot write a grant's status"),
        }
    }
    Ok(())
}
