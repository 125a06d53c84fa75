//! The reputation controller: a Reputation per operator and per node, computed from evidence
//! the control plane observes itself (never from what a subject says of itself), and each
//! Attestation's standing.
//!
//! Every `Config::every` it samples each Node (`score::Sample`): its heartbeat Lease fresh or
//! not (uptime), its bound replicas running or stranded on a lapsed node, and start failures
//! (reliability; a workload's own exit is neither), and whether running replicas' applied
//! cgroup limits meet what they asked for and hold (honesty, from the limits and usage the agent
//! reads back from the cgroup). An operator's sample is the sum of its nodes'. Evidence is kept
//! in `Reputation.status.evidence` (so another member's controller continues where this one
//! stopped) and decays with a half-life (`score`). Attestations feed a global trust computed
//! by power iteration (`eigentrust`) from the control-plane members; an attestation is
//! accepted when its attester holds trust, and weighs that trust. The composite is the weighted
//! mean of uptime, reliability, honesty, age and attestations; a node's attestation score is
//! its operator's.
//!
//! Reputations are written every `Config::write_every` (evidence is sampled more often than it
//! is stored), Attestation status when it changes.

pub mod eigentrust;
pub mod score;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use api::kinds::{
    AttestationSpec, AttestationStatus, Evidence, LeaseSpec, NODE_LEASE_NAMESPACE, NodeSpec, ReplicaPhase,
    ReplicaSpec, ReputationSpec, ReputationStatus, SubjectKind,
};
use api::meta::Time;
use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use serde_json::json;
use sha2::Digest;

use self::score::{Sample, Scoring};
use crate::Error;
use crate::runtime::{self, Shared, cache, filling, ready};
use crate::scheduler::core::Amount;
use client::resource::{Kube, api_in, is_conflict, is_not_found};

/// The reputation controller's settings.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// How often evidence is sampled.
    pub every: Duration,
    /// How often Reputations are written.
    pub write_every: Duration,
    /// How evidence is weighed.
    pub scoring: Scoring,
    /// EigenTrust's probability of jumping back to the pre-trusted at each step.
    pub damping: f64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            every: Duration::from_secs(10),
            write_every: Duration::from_secs(60),
            scoring: Scoring::default(),
            damping: 0.15,
        }
    }
}

/// The name of the Reputation of a subject: `operator.<public key hex, in two labels>` or
/// `node.<name>` (a hash for names too long to prefix). Every label stays within 63 characters.
pub fn name_of(kind: SubjectKind, subject: &str) -> String {
    let two_labels = |hex: String| format!("{}.{}", &hex[..32], &hex[32..]);
    match kind {
        SubjectKind::Operator => match api::identity::Did::parse(subject) {
            Ok(did) => format!("operator.{}", api::kinds::account_name(&did)),
            Err(_) => format!("operator.{}", two_labels(hex(subject))),
        },
        SubjectKind::Node if subject.len() <= 248 => format!("node.{subject}"),
        SubjectKind::Node => format!("node.{}", two_labels(hex(subject))),
    }
}

fn hex(s: &str) -> String {
    sha2::Sha256::digest(s.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// A subject as one pass sees it: kind, subject, what it observed, when its first node was
/// created.
type Subject = (SubjectKind, String, Sample, Option<DateTime<Utc>>);

#[derive(Default)]
struct State {
    /// Evidence per Reputation name, as sampled (ahead of what is stored).
    evidence: HashMap<String, Evidence>,
    /// When each Reputation was last written.
    written: HashMap<String, Instant>,
}

struct Ctx {
    shared: Shared,
    config: Config,
    nodes: Store<Kube<NodeSpec>>,
    leases: Store<Kube<LeaseSpec>>,
    replicas: Store<Kube<ReplicaSpec>>,
    attestations: Store<Kube<AttestationSpec>>,
    reputations: Store<Kube<ReputationSpec>>,
    state: Mutex<State>,
}

/// Runs the controller until shutdown (call through `runtime::run_elected`).
pub async fn run(shared: Shared, config: Config) {
    let client = shared.client.clone();
    let (nodes, a) = cache::<NodeSpec>(&client);
    let (leases, b) = cache::<LeaseSpec>(&client);
    let (replicas, c) = cache::<ReplicaSpec>(&client);
    let (attestations, d) = cache::<AttestationSpec>(&client);
    let (reputations, e) = cache::<ReputationSpec>(&client);
    let fills = vec![filling(a), filling(b), filling(c), filling(d), filling(e)];
    let ctx = Arc::new(Ctx {
        shared: shared.clone(),
        config,
        nodes,
        leases,
        replicas,
        attestations,
        reputations,
        state: Mutex::default(),
    });
    runtime::periodic("reputation", &shared, fills, config.every, || {
        let ctx = ctx.clone();
        async move { pass(&ctx).await }
    })
    .await;
}

/// The longest a heartbeat counts for, whatever duration the node wrote in its Lease.
const MAX_HEARTBEAT: i64 = 40;
/// How far in the future a renewal may claim to be (clock skew).
const MAX_SKEW: i64 = 5;
/// A composite no identity without global trust exceeds: being up is not being trusted, so a
/// fresh key's own nodes alone never reach a floor above it.
pub const UNTRUSTED_CAP: f64 = 0.2;

/// Whether a node's heartbeat Lease is fresh at `now`: renewed within its duration, at most
/// `MAX_HEARTBEAT` seconds (a node cannot stay "up" by writing a long duration once), and not
/// renewed in the future.
fn heartbeat_fresh(lease: Option<&Kube<LeaseSpec>>, now: DateTime<Utc>) -> bool {
    lease.is_some_and(|l| {
        let (Some(renewed), Some(secs)) = (&l.spec.renew_time, l.spec.lease_duration_seconds) else {
            return false;
        };
        let secs = i64::from(secs).clamp(0, MAX_HEARTBEAT);
        renewed.0 <= now + chrono::Duration::seconds(MAX_SKEW)
            && renewed.0 + chrono::Duration::seconds(secs) >= now
    })
}

/// Whether a running replica's applied limits meet what it asked for and hold: the limit read
/// back from the cgroup is at least the request, and the measured CPU stays within the limit
/// (10% and 10m of slack). `None` while the node has reported no limits.
pub fn honest(asked: Amount, limits: Option<Amount>, used: Option<Amount>) -> Option<bool> {
    let limits = limits?;
    let meets = |asked: u64, limit: u64| asked == 0 || limit >= asked;
    let within = used.is_none_or(|u| limits.cpu == 0 || u.cpu <= limits.cpu + limits.cpu / 10 + 10);
    Some(meets(asked.cpu, limits.cpu) && meets(asked.memory, limits.memory) && within)
}

/// What one tick observes of each node, by node name.
fn samples(
    ctx: &Ctx,
    now: DateTime<Utc>,
    since: Option<DateTime<Utc>>,
) -> BTreeMap<String, (Arc<Kube<NodeSpec>>, Sample)> {
    let mut out: BTreeMap<String, (Arc<Kube<NodeSpec>>, Sample)> = BTreeMap::new();
    for n in ctx.nodes.state() {
        if n.is_deleting() {
            continue;
        }
        let lease = ctx.leases.get(&ObjectRef::new(n.name()).within(NODE_LEASE_NAMESPACE));
        let fresh = heartbeat_fresh(lease.as_deref(), now);
        let s = Sample { up: u32::from(fresh), down: u32::from(!fresh), ..Sample::default() };
        out.insert(n.name().to_owned(), (n, s));
    }
    for r in ctx.replicas.state() {
        let Some(node) = r.spec.node_name.as_deref() else { continue };
        let Some((n, s)) = out.get_mut(node) else { continue };
        if Some(n.uid()) != r.spec.node_uid.as_deref() {
            continue;
        }
        let Some(status) = &r.status else { continue };
        let payer = r.metadata.annotations.as_ref().and_then(|a| a.get(api::kinds::PAYER_ANNOTATION));
        let others = payer.is_some_and(|p| p != n.spec.operator.as_str());
        if status.phase.is_terminal() {
            // A start failure since the last tick is the node's; any other end is the workload's.
            let recent =
                status.finished_at.as_ref().is_some_and(|f| since.is_some_and(|s| f.0 > s && f.0 <= now));
            if others && recent && status.reason.as_deref() == Some("StartError") {
                s.start_failures += 1;
            }
            continue;
        }
        if r.is_deleting() {
            continue;
        }
        // Only serving others is evidence: a replica its own operator pays for (or whose payer
        // is unknown) says nothing of how the node serves strangers.
        if !others {
            continue;
        }
        if s.down > 0 {
            s.stranded += 1;
        } else if status.phase == ReplicaPhase::Running {
            s.running += 1;
            let asked = Amount::of(&r.spec.container.resources);
            match honest(asked, status.limits.as_ref().map(Amount::of), status.usage.as_ref().map(Amount::of))
            {
                Some(true) => s.honest += 1,
                Some(false) => s.dishonest += 1,
                None => {}
            }
        }
    }
    out
}

async fn pass(ctx: &Ctx) -> Result<(), Error> {
    ready(&ctx.nodes, "nodes").await?;
    ready(&ctx.leases, "leases").await?;
    ready(&ctx.replicas, "replicas").await?;
    ready(&ctx.attestations, "attestations").await?;
    ready(&ctx.reputations, "reputations").await?;
    let members: BTreeSet<String> = crate::members::fetch(&ctx.shared.client)
        .await?
        .into_iter()
        .filter(|m| api::identity::Did::parse(m).is_ok())
        .collect();
    let now = Utc::now();
    let scoring = ctx.config.scoring;
    let max_gap = ctx.config.every * 2;

    // Subjects and their samples.
    let stored: HashMap<String, Arc<Kube<ReputationSpec>>> =
        ctx.reputations.state().into_iter().map(|r| (r.name().to_owned(), r)).collect();
    let last_sample = |state: &State, name: &str| -> Option<DateTime<Utc>> {
        state
            .evidence
            .get(name)
            .or_else(|| stored.get(name)?.status.as_ref()?.evidence.as_ref())
            .and_then(|e| e.sampled_at.as_ref().map(|t| t.0))
    };
    // Subject → (kind, subject, sample, when its first node was created).
    let mut subjects: BTreeMap<String, Subject> = BTreeMap::new();
    {
        let state = ctx.state.lock().expect("reputation state lock");
        // The earliest last sample of any node: start failures since then are counted.
        let since = ctx
            .nodes
            .state()
            .iter()
            .filter_map(|n| last_sample(&state, &name_of(SubjectKind::Node, n.name())))
            .min();
        for (node, (n, s)) in samples(ctx, now, since) {
            let operator = n.spec.operator.as_str().to_owned();
            let created = n
                .metadata
                .creation_timestamp
                .as_ref()
                .and_then(|t| DateTime::from_timestamp(t.0.as_second(), 0));
            subjects.insert(name_of(SubjectKind::Node, &node), (SubjectKind::Node, node, s, created));
            let e = subjects
                .entry(name_of(SubjectKind::Operator, &operator))
                .or_insert_with(|| (SubjectKind::Operator, operator, Sample::default(), created));
            e.2 = e.2.plus(s);
            e.3 = match (e.3, created) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
    }

    // Global trust from live attestations (a node's attestation vouches for its operator).
    let nodes_now = ctx.nodes.state();
    let operator_of: HashMap<String, String> =
        nodes_now.iter().map(|n| (n.name().to_owned(), n.spec.operator.as_str().to_owned())).collect();
    let created_of = |o: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        o.creation_timestamp.as_ref().map(|t| t.0.as_second())
    };
    let node_created: HashMap<&str, Option<i64>> =
        nodes_now.iter().map(|n| (n.name(), created_of(&n.metadata))).collect();
    let attestations = ctx.attestations.state();
    let edges: Vec<(String, String)> = attestations
        .iter()
        .filter(|a| a.spec.expires.as_ref().is_none_or(|e| e.0 > now))
        .filter_map(|a| {
            let attester = a.signer()?.to_owned();
            let subject = match a.spec.subject_kind {
                SubjectKind::Operator => a.spec.subject.clone(),
                // About the Node now bearing the name, not an earlier one (perhaps someone
                // else's): an attestation older than the Node does not count.
                SubjectKind::Node => {
                    let node = node_created.get(a.spec.subject.as_str()).copied().flatten();
                    if created_of(&a.metadata).zip(node).is_none_or(|(a, n)| a < n) {
                        return None;
                    }
                    operator_of.get(&a.spec.subject)?.clone()
                }
            };
            Some((attester, subject))
        })
        .collect();
    let trust = eigentrust::global_trust(
        edges.iter().map(|(a, s)| (a.as_str(), s.as_str())),
        members.iter().map(String::as_str),
        ctx.config.damping,
    );
    // Normalized by the members' trust (the highest a member holds), at most 1: an operator who
    // inflates its own trust through keys it vouches for lowers nobody else's score.
    let top = members.iter().filter_map(|m| trust.get(m.as_str()).copied()).fold(0.0, f64::max);
    let normalized =
        |did: &str| if top > 0.0 { (trust.get(did).copied().unwrap_or(0.0) / top).min(1.0) } else { 0.0 };
    let mut attesters: HashMap<&str, BTreeSet<&str>> = HashMap::new();
    for (a, s) in &edges {
        if a != s && trust.get(a.as_str()).copied().unwrap_or(0.0) > 0.0 {
            attesters.entry(s.as_str()).or_default().insert(a.as_str());
        }
    }

    // Identities with trust but no node (attesters the members vouch for) have a Reputation
    // too, so that placement can weigh their attestations; strangers hold no trust and get
    // none, so their number stays bounded by whom trusted identities vouch for.
    for (did, t) in &trust {
        if *t > 0.0 && api::identity::Did::parse(did).is_ok() {
            subjects
                .entry(name_of(SubjectKind::Operator, did))
                .or_insert_with(|| (SubjectKind::Operator, (*did).to_owned(), Sample::default(), None));
        }
    }

    // Evidence, scores, and the writes that are due.
    let mut writes: Vec<(String, SubjectKind, String, ReputationStatus)> = Vec::new();
    {
        let mut state = ctx.state.lock().expect("reputation state lock");
        state.evidence.retain(|name, _| subjects.contains_key(name));
        state.written.retain(|name, _| subjects.contains_key(name));
        for (name, (kind, subject, sample, created)) in &subjects {
            let from_store =
                || stored.get(name).and_then(|r| r.status.as_ref()?.evidence.clone()).unwrap_or_default();
            let e = state.evidence.entry(name.clone()).or_insert_with(from_store);
            if *kind == SubjectKind::Node {
                let uid = nodes_now.iter().find(|n| n.name() == subject).map(|n| n.uid().to_owned());
                if e.node_uid != uid {
                    // Another Node under the name: its history is not this one's.
                    *e = Evidence { node_uid: uid, ..Evidence::default() };
                }
            }
            let seen_before = e.first_seen.is_some();
            score::observe(e, *sample, now, max_gap, &scoring);
            if created.is_none() && !seen_before {
                // No node yet: age starts with the first one.
                e.first_seen = None;
            }
            // Age counts from the (first) Node's creation, which the apiserver stamped.
            if let (Some(c), Some(seen)) = (created, e.first_seen.as_mut())
                && *c < seen.0
            {
                seen.0 = *c;
            }
            let operator = match kind {
                SubjectKind::Operator => subject.as_str(),
                SubjectKind::Node => operator_of.get(subject).map_or("", String::as_str),
            };
            e.trust = trust.get(operator).copied().unwrap_or(0.0);
            e.attesters = u32::try_from(attesters.get(operator).map_or(0, BTreeSet::len)).unwrap_or(u32::MAX);
            e.scoring = Some(scoring.params());
            let mut s = score::scores(e, normalized(operator), now, &scoring);
            if s.attestations <= 0.0 {
                s.composite = s.composite.min(UNTRUSTED_CAP);
            }
            let status = ReputationStatus {
                uptime: round(s.uptime),
                reliability: round(s.reliability),
                honesty: round(s.honesty),
                age_factor: round(s.age),
                attestation_weight: round(s.attestations),
                composite: round(s.composite),
                observed_at: Some(Time(now)),
                evidence: Some(e.clone()),
            };
            let due = state.written.get(name).is_none_or(|at| at.elapsed() >= ctx.config.write_every);
            let moved = stored
                .get(name)
                .and_then(|r| r.status.as_ref())
                .is_none_or(|old| (old.composite - status.composite).abs() >= 0.05);
            if due || moved {
                writes.push((name.clone(), *kind, subject.clone(), status));
            }
        }
    }
    for (name, kind, subject, status) in writes {
        match write_reputation(ctx, &name, kind, &subject, &status, stored.contains_key(&name)).await {
            Ok(()) => {
                ctx.state.lock().expect("reputation state lock").written.insert(name, Instant::now());
            }
            Err(e) => tracing::warn!(reputation = %name, error = %e, "cannot write a reputation"),
        }
    }
    // Reputations of subjects that are gone (a deleted Node, an operator with no node and no
    // trust left) are deleted: what strangers register does not pile up.
    let api = api_in::<ReputationSpec>(&ctx.shared.client, "");
    for name in stored.keys().filter(|n| !subjects.contains_key(*n)) {
        match api.delete(name, &kube::api::DeleteParams::default()).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => {
                tracing::warn!(reputation = %name, error = %e, "cannot delete a gone subject's reputation")
            }
        }
    }

    // Each attestation's standing.
    for a in attestations.iter() {
        let live = a.spec.expires.as_ref().is_none_or(|e| e.0 > now);
        let attester = a.signer().unwrap_or_default();
        let subject_operator = match a.spec.subject_kind {
            SubjectKind::Operator => Some(a.spec.subject.as_str()),
            SubjectKind::Node => operator_of.get(&a.spec.subject).map(String::as_str),
        };
        let standing = normalized(attester);
        let (accepted, reason) = if !live {
            (false, "expired".to_owned())
        } else if subject_operator == Some(attester) {
            (false, "an operator vouching for itself or its own node counts for nothing".to_owned())
        } else if subject_operator.is_none() {
            (false, format!("no node {} is registered", a.spec.subject))
        } else if standing <= 0.0 {
            (
                false,
                "the attester has no standing: nobody trusted (a control-plane member, or someone they vouch for) vouches for it".to_owned(),
            )
        } else if members.contains(attester) {
            (true, "attested by a control-plane member".to_owned())
        } else {
            (true, format!("the attester holds {:.3} of the highest global trust", standing))
        };
        let status = AttestationStatus {
            accepted,
            weight: Some(if accepted { round(standing) } else { 0.0 }),
            reason: Some(reason),
        };
        if a.status.as_ref() == Some(&status) {
            continue;
        }
        let api = api_in::<AttestationSpec>(&ctx.shared.client, a.namespace().unwrap_or("default"));
        match api
            .patch_status(a.name(), &PatchParams::default(), &Patch::Merge(&json!({ "status": status })))
            .await
        {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => {
                tracing::warn!(attestation = a.name(), error = %e, "cannot write an attestation's status")
            }
        }
    }
    Ok(())
}

/// Four decimals: enough to compare, short to read.
fn round(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

/// Creates the Reputation or writes its status.
async fn write_reputation(
    ctx: &Ctx,
    name: &str,
    kind: SubjectKind,
    subject: &str,
    status: &ReputationStatus,
    exists: bool,
) -> Result<(), Error> {
    let api = api_in::<ReputationSpec>(&ctx.shared.client, "");
    if !exists {
        let meta = ObjectMeta { name: Some(name.to_owned()), ..ObjectMeta::default() };
        let spec = ReputationSpec { subject_kind: kind, subject: subject.to_owned() };
        match api.create(&PostParams::default(), &Kube::new(meta, spec)).await {
            Ok(_) => {}
            Err(e) if is_conflict(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    match api.patch_status(name, &PatchParams::default(), &Patch::Merge(&json!({ "status": status }))).await {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_below_the_request_or_not_enforced_are_dishonest() {
        let asked = Amount { cpu: 500, memory: 64 << 20, storage: 0 };
        assert_eq!(honest(asked, None, None), None);
        assert_eq!(honest(asked, Some(asked), None), Some(true));
        assert_eq!(honest(asked, Some(Amount { cpu: 250, ..asked }), None), Some(false));
        assert_eq!(honest(asked, Some(Amount { memory: 32 << 20, ..asked }), None), Some(false));
        assert_eq!(honest(asked, Some(asked), Some(Amount { cpu: 540, ..asked })), Some(true));
        assert_eq!(honest(asked, Some(asked), Some(Amount { cpu: 900, ..asked })), Some(false));
    }

    #[test]
    fn names_are_valid_and_distinct() {
        let did =
            api::identity::Did::from_key(&ed25519_dalek::SigningKey::from_bytes(&[1; 32]).verifying_key());
        let op = name_of(SubjectKind::Operator, did.as_str());
        assert!(op.starts_with("operator.") && op.len() == 9 + 65);
        assert_eq!(name_of(SubjectKind::Node, "n1"), "node.n1");
        let long = format!("{}.{}.{}.{}", "a".repeat(63), "b".repeat(63), "c".repeat(63), "d".repeat(60));
        let n = name_of(SubjectKind::Node, &long);
        assert!(n != name_of(SubjectKind::Node, &long[..248]));
        for name in [op, n, name_of(SubjectKind::Node, &long[..248])] {
            assert!(api::validation::check_dns1123_subdomain(&name).is_ok(), "{name}");
        }
    }
}
