//! The credits controller: meters running replicas, keeps CreditGrants' and TrustPolicies'
//! spending figures, and stops what its owner cannot, or said it would not, pay for.
//!
//! - **Metering** (`meter`): for each replica bound to a Node priced by its operator's offer,
//!   each period of the run that has ended (and, once the replica has finished, the last one)
//!   becomes a Metering Transfer from the workload's signer to the node's operator, named
//!   `meter-<replica uid>-<period>`: a second controller, or this one after a restart, writes
//!   the same name and gets AlreadyExists, so nothing is charged twice. The apiserver decides it
//!   on the credit line in the Raft entry that writes it (`api::ledger`); a refused one (no
//!   credit left) evicts the replica, and the scheduler will not place it on a priced node
//!   again until its owner has credit there. Nothing is charged on a node of the workload's own
//!   signer, or under an offer with no price.
//! - **Spending**: each TrustPolicy's `status.spending` (spent in all and in the last hour,
//!   what its running replicas cost per hour); once `spending.maxTotal` is reached, its
//!   workloads' replicas on priced nodes are stopped and `status.spending.stopped` says why
//!   (the scheduler keeps new ones pending for the same reason).
//! - **Grants**: each CreditGrant's `status` (Active or Expired; how much of it is drawn).
//!
//! It acts on the whole picture every `Config::every` (`runtime::periodic`), not per change.

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
    /// Per replica uid, the first period not charged yet (as far as this process knows).
    cursors: Mutex<HashMap<String, i64>>,
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
        cursors: Mutex::default(),
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
    let offers = ctx.offers.state();
    let nodes = ctx
        .nodes
        .state()
        .iter()
        .filter(|n| !n.is_deleting())
        .map(|n| {
            let offer = operator_offer(n, offers.iter().map(AsRef::as_ref));
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

/// What `r` is billed, if anything: bound to the very Node it names, of a workload signed by
/// someone other than the node's operator, under a priced offer, started.
fn bill(ctx: &Ctx, r: &Kube<ReplicaSpec>) -> Option<Bill> {
    let status = r.status.as_ref()?;
    let start = status.started_at.as_ref()?.0;
    let node = ctx.nodes.get(&ObjectRef::new(r.spec.node_name.as_deref()?))?;
    if Some(node.uid()) != r.spec.node_uid.as_deref() {
        return None;
    }
    let ns = r.namespace().unwrap_or("default");
    let workload = ctx.workloads.get(&ObjectRef::new(&r.spec.workload).within(ns))?;
    let payer = Did::parse(workload.signer()?).ok()?;
    let payee = node.spec.operator.clone();
    if payer == payee {
        return None;
    }
    let offers = ctx.offers.state();
    let offer = operator_offer(&node, offers.iter().map(AsRef::as_ref))?;
    let rates = Rates::of(&offer.spec.price);
    let per_hour = rates.per_hour(meter::metered(&r.spec.container.resources, status.usage.as_ref()));
    if rates.is_free() || per_hour <= 0 {
        return None;
    }
    let end = if status.phase.is_terminal() {
        Some(status.finished_at.as_ref().map_or(start, |t| t.0))
    } else {
        None
    };
    Some(Bill { payer, payee, per_hour, run: Run { start, end } })
}

/// Charges every period due, replica by replica.
async fn meter(ctx: &Ctx, now: DateTime<Utc>) -> Result<(), Error> {
    let period = chrono::Duration::from_std(ctx.config.period).unwrap_or(chrono::Duration::seconds(60));
    let replicas = ctx.replicas.state();
    ctx.cursors.lock().expect("cursors lock").retain(|uid, _| replicas.iter().any(|r| r.uid() == uid));
    for r in &replicas {
        let Some(bill) = bill(ctx, r) else { continue };
        let cursor = ctx.cursors.lock().expect("cursors lock").get(r.uid()).copied().unwrap_or(i64::MIN);
        for due in meter::due(bill.run, period, now, cursor, ctx.config.catch_up) {
            let phase = charge(ctx, r, &bill, due).await?;
            ctx.cursors.lock().expect("cursors lock").insert(r.uid().to_owned(), due.index + 1);
            if phase == Some(TransferPhase::Refused) {
                if !r.status.as_ref().is_some_and(|s| s.phase.is_terminal()) {
                    stop(ctx, r, "its owner's credit with the node's operator is used up").await?;
                }
                break;
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
    due: Due,
) -> Result<Option<TransferPhase>, Error> {
    let name = format!("meter-{}-{}", r.uid(), due.index);
    if let Some(t) = ctx.transfers.get(&ObjectRef::new(&name)) {
        return Ok(t.status.as_ref().map(|s| s.phase));
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
    let meta = ObjectMeta { name: Some(name), ..ObjectMeta::default() };
    match api_in::<TransferSpec>(&ctx.shared.client, "")
        .create(&PostParams::default(), &Kube::new(meta, spec))
        .await
    {
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
        // Written already (by this controller before a restart, or another member's).
        Err(e) if is_conflict(&e) => Ok(None),
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

/// The TrustPolicy (namespace, name) a workload runs under, if it names one its signer wrote.
fn policy_of(ctx: &Ctx, ns: &str, workload: &str) -> Option<(String, String)> {
    let w = ctx.workloads.get(&ObjectRef::new(workload).within(ns))?;
    let name = w.spec.trust_policy.clone()?;
    let p = ctx.policies.get(&ObjectRef::new(&name).within(ns))?;
    (p.signer() == w.signer()).then(|| (ns.to_owned(), name))
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
        let Some(key) = policy_of(ctx, ns, name) else { continue };
        let f = figures.entry(key).or_default();
        f.total = f.total.checked_add(t.spec.amount).unwrap_or(f.total);
        if s.decided_at.as_ref().is_some_and(|at| at.0 > hour_ago) {
            f.last_hour = f.last_hour.checked_add(t.spec.amount).unwrap_or(f.last_hour);
        }
    }
    // What runs now, per policy, and which replicas are billed.
    let mut running: BTreeMap<(String, String), Vec<Arc<Kube<ReplicaSpec>>>> = BTreeMap::new();
    for r in ctx.replicas.state() {
        if r.status.as_ref().is_some_and(|s| s.phase.is_terminal()) || r.is_deleting() {
            continue;
        }
        let Some(key) = policy_of(ctx, r.namespace().unwrap_or("default"), &r.spec.workload) else {
            continue;
        };
        let Some(b) = bill(ctx, &r) else { continue };
        let f = figures.entry(key.clone()).or_default();
        let rate = Credits::from_micros(i64::try_from(b.per_hour).unwrap_or(i64::MAX));
        f.per_hour = f.per_hour.checked_add(rate).unwrap_or(f.per_hour);
        running.entry(key).or_default().push(r);
    }
    for p in ctx.policies.state() {
        let key = (p.namespace().unwrap_or("default").to_owned(), p.name().to_owned());
        let mut f = figures.remove(&key).unwrap_or_default();
        let max_total = p.spec.spending.as_ref().and_then(|s| s.max_total);
        if let Some(max) = max_total.filter(|m| f.total >= *m) {
            f.stopped = Some(format!(
                "spending.maxTotal {max} reached ({} spent): replicas on priced nodes are stopped and not placed again",
                f.total
            ));
            for r in running.get(&key).into_iter().flatten() {
                stop(ctx, r, "its TrustPolicy's spending.maxTotal is reached").await?;
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
            Err(e) => return Err(e.into()),
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
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
