//! What the dashboard shows, as one JSON document: a pure function of the objects the watches
//! hold, the members last read, and the time. No I/O, no clock: every figure the page shows is
//! decided (and tested) here; the page only lays it out.
//!
//! Which nodes a TrustPolicy admits is not computed again here: it is the scheduler's own
//! filter (`controllers::scheduler::core::filter`) on the scheduler's own candidates
//! (`snapshot::candidates`), for a replica that asks for nothing. So it says which nodes the
//! policy's own rules admit (and the node's state: ready, not drained, an offer); placement
//! checks more (the workload's size, its own constraints, credit and spending limits), so a
//! node admitted here may still not take a given replica.
//!
//! Every key is a user, so anyone can make objects at no cost: the view is bounded whatever
//! they make. At most [`MAX_SHOWN`] workloads, nodes, policies, reputations, accounts and
//! credit lines are listed (the user's own first; the rest are counted in `more`), a policy
//! names at most [`MAX_ADMITS_NAMED`] of the nodes it admits and counts the others per reason,
//! and the work is linear in the objects (maps built once), but for the policies shown, each
//! judged against every node.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use api::kinds::{
    AccountSpec, AttestationSpec, AuditDecision, AuditEventSpec, CreditGrantSpec, NodeConditionType,
    NodeOfferSpec, NodeSpec, ReplicaPhase, ReplicaSpec, ReputationSpec, ReputationStatus, SubjectKind,
    TrustPolicySpec, WorkloadConditionType, WorkloadSpec,
};
use api::meta::{ConditionStatus, Time};
use chrono::{DateTime, SecondsFormat, Utc};
use client::resource::Kube;
use controllers::scheduler::core::{self, Amount, Constraints, Money, Policy, Request};
use controllers::scheduler::snapshot::{self, Reach};
use serde::Serialize;
use serde_json::Value;

/// Most events the page lists (the user's own objects' first, then the newest).
pub const MAX_EVENTS: usize = 60;

/// Events dated further than this in the future are dropped (anyone may write a condition's
/// time on their own objects; one dated next year would stay on top).
pub const FUTURE_SLACK: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

/// Most workloads, nodes, policies, reputations, accounts or credit lines listed (the user's
/// own first).
pub const MAX_SHOWN: usize = 200;

/// Most replicas listed per workload.
pub const MAX_REPLICAS_SHOWN: usize = 100;

/// Most admitted nodes a policy names (the user's own first, then by name).
pub const MAX_ADMITS_NAMED: usize = 20;

/// Most entries of a list in a policy's constraints (`allowed operators: a, b, … and 7 more`).
const MAX_LISTED: usize = 5;

/// Most members kept from an answer of `/cluster/members` (a control plane has a handful).
const MAX_MEMBERS: usize = 64;

/// The objects the dashboard follows, as the watches hold them.
#[derive(Clone, Debug, Default)]
pub struct Objects {
    /// Every Workload the user may read.
    pub workloads: Vec<Arc<Kube<WorkloadSpec>>>,
    /// Every Replica.
    pub replicas: Vec<Arc<Kube<ReplicaSpec>>>,
    /// Every Node.
    pub nodes: Vec<Arc<Kube<NodeSpec>>>,
    /// Every NodeOffer.
    pub offers: Vec<Arc<Kube<NodeOfferSpec>>>,
    /// Every TrustPolicy.
    pub policies: Vec<Arc<Kube<TrustPolicySpec>>>,
    /// Every Reputation.
    pub reputations: Vec<Arc<Kube<ReputationSpec>>>,
    /// Every Attestation.
    pub attestations: Vec<Arc<Kube<AttestationSpec>>>,
    /// Every Account.
    pub accounts: Vec<Arc<Kube<AccountSpec>>>,
    /// Every CreditGrant.
    pub grants: Vec<Arc<Kube<CreditGrantSpec>>>,
    /// The AuditEvents the user may read (those of their own agents).
    pub audit: Vec<Arc<Kube<AuditEventSpec>>>,
}

/// How the watch of one kind is doing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Source {
    /// The kind's plural (`workloads`).
    pub kind: &'static str,
    /// Where its watch is.
    pub state: SourceState,
    /// The last error, while failing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Whether a first list completed: the cache holds the kind (it may be stale while failing).
    pub listed: bool,
}

/// Where the watch of a kind is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum SourceState {
    /// Listing (first, or again after the watch expired: a 410 is no failure).
    Listing,
    /// Listed, and following changes.
    Watching,
    /// The last attempt failed; it is tried again with a backoff.
    Failing,
}

/// One control-plane member, as `GET /cluster/members` describes it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    /// Its Raft id.
    pub id: u64,
    /// Its did:key.
    pub did: String,
    /// Its transport address.
    pub address: String,
    /// Its API URL.
    pub api: String,
    /// `voter` or `learner`.
    pub role: String,
    /// Whether it leads (as the member that answered sees it).
    pub leader: bool,
    /// What it says of itself (`Leader`, `Follower`, …), `Unreachable` when it did not answer.
    pub state: String,
    /// The last log index it applied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_applied: Option<u64>,
    /// Its Raft term.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub term: Option<u64>,
}

/// The members from an answer of `GET /cluster/members` (`{"members": [...]}`); entries that are
/// not members are skipped.
pub fn members_of(answer: &Value) -> Vec<Member> {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    answer["members"]
        .as_array()
        .into_iter()
        .flatten()
        .take(MAX_MEMBERS)
        .filter_map(|m| {
            let status = m.get("status").filter(|s| !s.is_null());
            Some(Member {
                id: m["id"].as_u64()?,
                did: text(&m["did"]),
                address: text(&m["address"]),
                api: text(&m["api"]),
                role: text(&m["role"]),
                leader: m["leader"].as_bool().unwrap_or(false),
                state: status
                    .and_then(|s| s["state"].as_str())
                    .map_or_else(|| "Unreachable".to_owned(), str::to_owned),
                last_applied: status.and_then(|s| s["last_applied"].as_u64()),
                term: status.and_then(|s| s["term"].as_u64()),
            })
        })
        .collect()
}

/// The dids of an answer of `GET /members` (`{"members": ["did:key:…", …]}`): every member's,
/// also of a member whose Raft record names no did (a single member's first start).
pub fn member_dids(answer: &Value) -> BTreeSet<String> {
    answer["members"]
        .as_array()
        .into_iter()
        .flatten()
        .take(MAX_MEMBERS)
        .filter_map(|m| m.as_str().map(str::to_owned))
        .collect()
}

/// The control plane's members, as last read.
#[derive(Clone, Debug, PartialEq)]
pub struct MembersSeen {
    /// Raft's view (`GET /cluster/members`).
    pub items: Vec<Member>,
    /// Their dids (`GET /members`): who is trusted with placement.
    pub dids: BTreeSet<String>,
    /// When they were read.
    pub read_at: DateTime<Utc>,
}

/// The members as last read: none yet, what was read, or why it could not be.
pub type MembersRead = Option<Result<MembersSeen, String>>;

/// Everything the view is made of.
#[derive(Clone, Copy, Debug)]
pub struct Input<'a> {
    /// The objects.
    pub objects: &'a Objects,
    /// The control plane's members.
    pub members: &'a MembersRead,
    /// The watch of each kind.
    pub sources: &'a [Source],
    /// The did the dashboard acts as (whose objects are "mine").
    pub me: Option<&'a str>,
    /// The apiserver it talks to.
    pub server: &'a str,
    /// The one namespace followed, or (None) every namespace.
    pub namespace: Option<&'a str>,
    /// When the last change came through a watch.
    pub last_change: Option<DateTime<Utc>>,
    /// Now.
    pub now: DateTime<Utc>,
}

/// The page's data.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct View {
    /// When this view was made.
    pub generated_at: String,
    /// When the last change came through a watch (none before the first listing).
    pub last_change: Option<String>,
    /// Whom the dashboard acts as.
    pub me: Option<String>,
    /// The apiserver.
    pub server: String,
    /// The one namespace shown, or (None) every namespace.
    pub namespace: Option<String>,
    /// Counts for the summary line.
    pub summary: Summary,
    /// Workloads, each with its replicas.
    pub workloads: Vec<WorkloadView>,
    /// Nodes, each with its offer, capacity, usage and reputation.
    pub nodes: Vec<NodeView>,
    /// Trust policies, each with the nodes it admits.
    pub policies: Vec<PolicyView>,
    /// Accounts (balances) and credit lines.
    pub credits: CreditsView,
    /// Reputations of operators and nodes.
    pub reputations: Vec<ReputationView>,
    /// The control plane's members and leader.
    pub members: MembersView,
    /// Recent events: the user's own objects' first, then the others', each newest first; one
    /// per object.
    pub events: Vec<EventView>,
    /// The watch of each kind.
    pub sources: Vec<Source>,
    /// Which sections' kinds have all been listed once (before, an empty list means nothing).
    pub listed: Listed,
    /// How many were left out of each bounded list.
    pub more: More,
}

/// Whether every kind a section is made of has been listed once.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Listed {
    /// Workloads and replicas.
    pub workloads: bool,
    /// Nodes, offers, replicas, reputations.
    pub nodes: bool,
    /// Policies and what they are judged on.
    pub policies: bool,
    /// Accounts and credit lines.
    pub credits: bool,
    /// Reputations.
    pub reputations: bool,
    /// The kinds events come from.
    pub events: bool,
}

/// How many were left out of each bounded list (the user's own are listed first).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct More {
    /// Workloads.
    pub workloads: usize,
    /// Nodes.
    pub nodes: usize,
    /// Trust policies.
    pub policies: usize,
    /// Reputations.
    pub reputations: usize,
    /// Accounts.
    pub accounts: usize,
    /// Credit lines.
    pub grants: usize,
}

/// Counts for the summary line.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Workloads.
    pub workloads: usize,
    /// Replicas wanted, over every workload.
    pub desired: i64,
    /// Replicas running.
    pub running: usize,
    /// Replicas pending.
    pub pending: usize,
    /// Nodes.
    pub nodes: usize,
    /// Nodes Ready.
    pub nodes_ready: usize,
    /// Members.
    pub members: usize,
}

/// A condition, as shown.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConditionView {
    /// Its type.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// Why, in a word.
    pub reason: Option<String>,
    /// Why, in a sentence.
    pub message: Option<String>,
    /// Whether it is a problem (a False `Available`, a True `ReplicaFailure`).
    pub bad: bool,
}

/// One workload.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadView {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Who signed it.
    pub owner: Option<String>,
    /// Whether the dashboard's user signed it.
    pub mine: bool,
    /// Its image (or rootfs).
    pub image: Option<String>,
    /// `spec.replicas`.
    pub desired: i64,
    /// Replicas that exist (not being deleted).
    pub replicas: usize,
    /// Replicas running (and not reported unready).
    pub ready: usize,
    /// The TrustPolicy it runs under.
    pub trust_policy: Option<String>,
    /// The workload controller's conditions.
    pub conditions: Vec<ConditionView>,
    /// Why a replica waits, when one does: the first pending replica's reason.
    pub why_pending: Option<String>,
    /// Its replicas, by name (at most [`MAX_REPLICAS_SHOWN`]).
    pub items: Vec<ReplicaView>,
    /// Replicas left out of `items`.
    pub more_items: usize,
}

/// One replica.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaView {
    /// Its name.
    pub name: String,
    /// Its phase (`Pending` before any status).
    pub phase: ReplicaPhase,
    /// Whether it is ready: running, and not reported unready.
    pub ready: bool,
    /// The node it is bound to.
    pub node: Option<String>,
    /// Restarts.
    pub restarts: u32,
    /// `status.reason`.
    pub reason: Option<String>,
    /// `status.message`.
    pub message: Option<String>,
    /// Why it waits, for a pending one: the scheduler's findings, or what it waits for.
    pub why_pending: Option<String>,
    /// Being deleted.
    pub deleting: bool,
    /// When its process started.
    pub started_at: Option<String>,
}

/// Amounts of cpu, memory and storage, as numbers and as text.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AmountView {
    /// Millicores.
    pub cpu_millicores: u64,
    /// Bytes.
    pub memory_bytes: u64,
    /// Bytes.
    pub storage_bytes: u64,
    /// `1.5 cores`.
    pub cpu: String,
    /// `512 MiB`.
    pub memory: String,
    /// `10 GiB`.
    pub storage: String,
}

impl AmountView {
    fn of(a: Amount) -> Self {
        Self {
            cpu_millicores: a.cpu,
            memory_bytes: a.memory,
            storage_bytes: a.storage,
            cpu: cores(a.cpu),
            memory: bytes(a.memory),
            storage: bytes(a.storage),
        }
    }
}

/// A node's offer.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OfferView {
    /// The NodeOffer's name.
    pub name: String,
    /// ISO country.
    pub jurisdiction: String,
    /// Region, if said.
    pub region: Option<String>,
    /// What it offers.
    pub resources: AmountView,
    /// Credits per core-hour, GiB-hour of memory, GiB-hour of storage.
    pub price: PriceView,
    /// `Pending`, `Active` or `Withdrawn`.
    pub phase: Option<String>,
}

/// Prices, in credits.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PriceView {
    /// Per core-hour.
    pub cpu: String,
    /// Per GiB-hour.
    pub memory: String,
    /// Per GiB-hour.
    pub storage: String,
    /// Whether every price is zero.
    pub free: bool,
}

/// A reputation's scores.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScoreView {
    /// The weighted whole.
    pub composite: f64,
    /// Heartbeats kept.
    pub uptime: f64,
    /// Replicas run as asked.
    pub reliability: f64,
    /// Resources delivered as offered.
    pub honesty: f64,
    /// Age factor.
    pub age_factor: f64,
    /// Attestations, weighted.
    pub attestation_weight: f64,
}

impl ScoreView {
    fn of(s: &ReputationStatus) -> Self {
        Self {
            composite: s.composite,
            uptime: s.uptime,
            reliability: s.reliability,
            honesty: s.honesty,
            age_factor: s.age_factor,
            attestation_weight: s.attestation_weight,
        }
    }
}

/// One node.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeView {
    /// Its name.
    pub name: String,
    /// Its operator's did.
    pub operator: String,
    /// Whether its operator is a control-plane member.
    pub operator_is_member: bool,
    /// Whether its operator is the dashboard's user.
    pub mine: bool,
    /// Condition Ready is True.
    pub ready: bool,
    /// The Ready condition's reason and message.
    pub ready_message: Option<String>,
    /// Drained.
    pub unschedulable: bool,
    /// `container` or `process`.
    pub runtime: Option<String>,
    /// Since when its Ready condition has been as it is (its last transition; the node
    /// lifecycle controller writes the heartbeat time only on such a transition).
    pub ready_since: Option<String>,
    /// The offer placement uses (signed by the operator), if any.
    pub offer: Option<OfferView>,
    /// What the node has (`spec.capacity`).
    pub capacity: AmountView,
    /// What replicas may use: the offer, within the capacity (none without an offer).
    pub offered: AmountView,
    /// What its bound, unfinished replicas reserve.
    pub used: AmountView,
    /// Its bound, unfinished replicas.
    pub replicas: usize,
    /// The node's reputation.
    pub reputation: Option<ScoreView>,
    /// Its operator's reputation.
    pub operator_reputation: Option<ScoreView>,
}

/// How many nodes a policy does not admit for one reason (the first hard constraint each
/// breaks).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rejected {
    /// Why (the scheduler's words).
    pub reason: String,
    /// How many nodes.
    pub count: usize,
}

/// One TrustPolicy.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyView {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Who signed it.
    pub owner: Option<String>,
    /// Whether the dashboard's user signed it.
    pub mine: bool,
    /// Its constraints, in words (`min reputation 0.5`, `jurisdictions DE, FR`, …).
    pub constraints: Vec<String>,
    /// How many nodes its own rules admit now (and are ready, not drained, with an offer):
    /// not the workload's size, constraints, credit or spending limits.
    pub admitted: usize,
    /// At most [`MAX_ADMITS_NAMED`] of them (the user's own nodes first, then by name).
    pub admits: Vec<String>,
    /// The nodes judged (every node not being deleted).
    pub considered: usize,
    /// The other nodes, counted per reason, most first.
    pub rejected: Vec<Rejected>,
    /// The workloads (of its signer, in its namespace) that name it (at most
    /// [`MAX_ADMITS_NAMED`]).
    pub workloads: Vec<String>,
    /// Workloads left out of `workloads`.
    pub more_workloads: usize,
    /// What its workloads spent (the credits controller's status), in words.
    pub spending: Option<String>,
}

/// Balances and credit lines.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreditsView {
    /// Accounts, by owner.
    pub accounts: Vec<AccountView>,
    /// Credit lines.
    pub grants: Vec<GrantView>,
}

/// One account.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountView {
    /// Whose.
    pub owner: String,
    /// Whether it is the dashboard's user's.
    pub mine: bool,
    /// The balance, in credits.
    pub balance: String,
    /// Whether it is below zero.
    pub negative: bool,
    /// Per counterparty.
    pub lines: Vec<LineView>,
    /// Committed transfers.
    pub transfers: u64,
}

/// A balance with one counterparty.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LineView {
    /// The counterparty.
    pub counterparty: String,
    /// The balance, in credits.
    pub balance: String,
}

/// One credit line.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GrantView {
    /// Its name.
    pub name: String,
    /// Who grants it.
    pub granter: Option<String>,
    /// To whom.
    pub grantee: String,
    /// Its limit, in credits.
    pub limit: String,
    /// Drawn so far, in credits.
    pub used: Option<String>,
    /// When it ends.
    pub expires: Option<String>,
}

/// One Reputation.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReputationView {
    /// `Operator` or `Node`.
    pub subject_kind: String,
    /// The did or node name.
    pub subject: String,
    /// Its scores (none before the reputation controller wrote them).
    pub scores: Option<ScoreView>,
    /// When they were computed.
    pub observed_at: Option<String>,
}

/// The control plane.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MembersView {
    /// Its members.
    pub items: Vec<Member>,
    /// The leader's Raft id.
    pub leader: Option<u64>,
    /// When they were read.
    pub read_at: Option<String>,
    /// Why they could not be read.
    pub error: Option<String>,
}

/// Something that happened, from the objects' own records: condition transitions, replicas
/// started and ended, agents' audited requests. (The cluster has no Event kind yet.)
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventView {
    /// When.
    pub time: String,
    /// The kind of the object.
    pub kind: &'static str,
    /// `namespace/name`, or the name of a cluster-scoped object.
    pub object: String,
    /// What, in a word.
    pub reason: String,
    /// What, in a sentence.
    pub message: String,
    /// Whether it is a problem.
    pub warning: bool,
    /// Whether the object is the user's.
    pub mine: bool,
}

/// The view of `input`.
pub fn view(input: &Input<'_>) -> View {
    let o = input.objects;
    let me = input.me;
    let members: BTreeSet<String> = match input.members {
        Some(Ok(seen)) => seen.dids.clone(),
        _ => BTreeSet::new(),
    };
    // Once, for the nodes and the policies.
    let candidates = candidates(o, &members, input.now);
    let all_workloads = workloads(o, me);
    let members_view = members_view(input.members);
    let summary = Summary {
        workloads: all_workloads.len(),
        desired: all_workloads.iter().map(|w| w.view.desired).sum(),
        running: all_workloads.iter().map(|w| w.running).sum(),
        pending: all_workloads.iter().map(|w| w.pending).sum(),
        nodes: o.nodes.len(),
        nodes_ready: o.nodes.iter().filter(|n| snapshot::is_ready(n)).count(),
        members: members_view.items.len(),
    };
    let mut more = More::default();
    let workloads =
        bounded(all_workloads.into_iter().map(|w| w.view).collect(), |w| w.mine, &mut more.workloads);
    let nodes = nodes(o, &candidates, &members, me, &mut more.nodes);
    let policies = policies(o, &candidates, &members, me, input.now, &mut more.policies);
    let (credits, reputations) = (credits(o, me, &mut more), reputations(o, me, &mut more.reputations));
    View {
        generated_at: rfc3339(input.now),
        last_change: input.last_change.map(rfc3339),
        me: me.map(str::to_owned),
        server: input.server.to_owned(),
        namespace: input.namespace.map(str::to_owned),
        summary,
        workloads,
        nodes,
        policies,
        credits,
        reputations,
        members: members_view,
        events: events(o, me, input.now),
        sources: input.sources.to_vec(),
        listed: listed(input.sources),
        more,
    }
}

/// Which sections' kinds have all been listed once.
fn listed(sources: &[Source]) -> Listed {
    use api::KindSpec as _;
    let all = |kinds: &[&str]| kinds.iter().all(|k| sources.iter().any(|s| s.kind == *k && s.listed));
    let (w, r, n, f) = (WorkloadSpec::PLURAL, ReplicaSpec::PLURAL, NodeSpec::PLURAL, NodeOfferSpec::PLURAL);
    let (rep, att) = (ReputationSpec::PLURAL, AttestationSpec::PLURAL);
    Listed {
        workloads: all(&[w, r]),
        nodes: all(&[n, f, r, rep]),
        policies: all(&[TrustPolicySpec::PLURAL, n, f, rep, att, w]),
        credits: all(&[AccountSpec::PLURAL, CreditGrantSpec::PLURAL]),
        reputations: all(&[rep]),
        events: all(&[w, r, n, AuditEventSpec::PLURAL]),
    }
}

/// The first [`MAX_SHOWN`] of `items`, the user's own first (else in their order); how many
/// were left out is added to `more`.
fn bounded<T>(mut items: Vec<T>, mine: impl Fn(&T) -> bool, more: &mut usize) -> Vec<T> {
    // Stable: each part keeps its order.
    items.sort_by_key(|t| !mine(t));
    *more += items.len().saturating_sub(MAX_SHOWN);
    items.truncate(MAX_SHOWN);
    items
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn key<S: api::KindSpec>(o: &Kube<S>) -> (String, String) {
    (o.namespace().unwrap_or_default().to_owned(), o.name().to_owned())
}

fn sorted<S: api::KindSpec>(list: &[Arc<Kube<S>>]) -> Vec<&Kube<S>> {
    let mut out: Vec<&Kube<S>> = list.iter().map(Arc::as_ref).collect();
    out.sort_by_key(|o| key(*o));
    out
}

fn is_mine(signer: Option<&str>, me: Option<&str>) -> bool {
    me.is_some() && signer == me
}

fn condition_view<T: Serialize>(c: &api::meta::Condition<T>, bad: bool) -> ConditionView {
    let type_ = serde_json::to_value(&c.type_).ok().and_then(|v| v.as_str().map(str::to_owned));
    ConditionView {
        type_: type_.unwrap_or_default(),
        status: format!("{:?}", c.status),
        reason: c.reason.clone(),
        message: c.message.clone(),
        bad,
    }
}

/// Whether a replica is ready: running, and no Ready condition says otherwise.
fn replica_ready(r: &Kube<ReplicaSpec>) -> bool {
    r.status.as_ref().is_some_and(api::kinds::ReplicaStatus::is_ready)
}

/// Why a pending replica waits: what the scheduler wrote (`0/3 nodes available: …`), else
/// what it waits for.
fn why_pending(r: &Kube<ReplicaSpec>) -> Option<String> {
    let s = r.status.clone().unwrap_or_default();
    if s.phase != ReplicaPhase::Pending {
        return None;
    }
    let said = s.message.filter(|m| !m.is_empty());
    Some(match (&r.spec.node_name, said) {
        (None, Some(why)) => why,
        (None, None) => "waiting for the scheduler".to_owned(),
        (Some(node), Some(why)) => format!("on {node}: {why}"),
        (Some(node), None) => format!("bound to {node}, waiting for its agent to start it"),
    })
}

fn replica_view(r: &Kube<ReplicaSpec>) -> ReplicaView {
    let s = r.status.clone().unwrap_or_default();
    ReplicaView {
        name: r.name().to_owned(),
        phase: s.phase,
        ready: replica_ready(r),
        node: r.spec.node_name.clone(),
        restarts: s.restarts,
        reason: s.reason.clone(),
        message: s.message.clone(),
        why_pending: why_pending(r),
        deleting: r.is_deleting(),
        started_at: s.started_at.map(|t| t.to_rfc3339()),
    }
}

/// A workload's view, with its replicas counted before they are bounded.
struct Counted {
    view: WorkloadView,
    running: usize,
    pending: usize,
}

fn workload_bad(c: &api::meta::Condition<WorkloadConditionType>) -> bool {
    match c.type_ {
        WorkloadConditionType::Available => c.status == ConditionStatus::False,
        WorkloadConditionType::ReplicaFailure => c.status == ConditionStatus::True,
        WorkloadConditionType::Progressing => false,
    }
}

fn workloads(o: &Objects, me: Option<&str>) -> Vec<Counted> {
    // A replica belongs to the workload its owner reference names (by uid: a workload deleted
    // and made again under the same name does not inherit the old one's replicas).
    let mut by_owner: HashMap<&str, Vec<&Kube<ReplicaSpec>>> = HashMap::new();
    for r in sorted(&o.replicas) {
        for owner in r.metadata.owner_references.iter().flatten() {
            by_owner.entry(owner.uid.as_str()).or_default().push(r);
        }
    }
    sorted(&o.workloads)
        .into_iter()
        .map(|w| {
            let owned = by_owner.get(w.uid()).map(Vec::as_slice).unwrap_or_default();
            let mut items: Vec<ReplicaView> = owned.iter().map(|r| replica_view(r)).collect();
            let live: Vec<&ReplicaView> = items.iter().filter(|r| !r.deleting).collect();
            let conditions = w
                .status
                .iter()
                .flat_map(|s| &s.conditions)
                .map(|c| condition_view(c, workload_bad(c)))
                .collect();
            let (replicas, ready) = (live.len(), live.iter().filter(|r| r.ready).count());
            let why_pending =
                live.iter().find_map(|r| r.why_pending.clone().map(|why| format!("{}: {why}", r.name)));
            let running = items.iter().filter(|r| r.phase == ReplicaPhase::Running).count();
            let pending = items.iter().filter(|r| r.phase == ReplicaPhase::Pending).count();
            let more_items = items.len().saturating_sub(MAX_REPLICAS_SHOWN);
            items.truncate(MAX_REPLICAS_SHOWN);
            let view = WorkloadView {
                namespace: w.namespace().unwrap_or("default").to_owned(),
                name: w.name().to_owned(),
                owner: w.signer().map(str::to_owned),
                mine: is_mine(w.signer(), me),
                image: w.spec.image.clone().or_else(|| w.spec.rootfs.clone()),
                desired: i64::from(w.spec.replicas.unwrap_or(1)),
                replicas,
                ready,
                trust_policy: w.spec.trust_policy.clone(),
                conditions,
                why_pending,
                items,
                more_items,
            };
            Counted { view, running, pending }
        })
        .collect()
}

/// The scheduler's candidates (offer, capacity, usage, reputations, attesters), by name.
fn candidates(o: &Objects, members: &BTreeSet<String>, now: DateTime<Utc>) -> Vec<core::Candidate> {
    let used = snapshot::usage(o.replicas.iter().map(Arc::as_ref));
    let objects = snapshot::Objects {
        nodes: o.nodes.clone(),
        offers: o.offers.clone(),
        reputations: o.reputations.clone(),
        attestations: o.attestations.clone(),
        members: Arc::new(members.clone()),
    };
    snapshot::candidates(&objects, &used, now)
}

fn nodes(
    o: &Objects,
    candidates: &[core::Candidate],
    members: &BTreeSet<String>,
    me: Option<&str>,
    more: &mut usize,
) -> Vec<NodeView> {
    let shown = bounded(sorted(&o.nodes), |n| me == Some(n.spec.operator.as_str()), more);
    // Maps built once: the loop below looks up, it does not scan.
    let by_name: HashMap<&str, &core::Candidate> = candidates.iter().map(|c| (c.name.as_str(), c)).collect();
    let mut offers: HashMap<&str, Vec<&Kube<NodeOfferSpec>>> = HashMap::new();
    for f in &o.offers {
        offers.entry(f.spec.node.as_str()).or_default().push(f);
    }
    let mut replicas: HashMap<&str, usize> = HashMap::new();
    for r in &o.replicas {
        if let Some(node) = r.spec.node_name.as_deref()
            && !r.status.as_ref().is_some_and(|s| s.phase.is_terminal())
        {
            *replicas.entry(node).or_default() += 1;
        }
    }
    let mut scores: HashMap<(bool, &str), ScoreView> = HashMap::new();
    for r in &o.reputations {
        if let Some(s) = &r.status {
            // The first one, as a scan would find it.
            scores
                .entry((r.spec.subject_kind == SubjectKind::Node, r.spec.subject.as_str()))
                .or_insert_with(|| ScoreView::of(s));
        }
    }
    shown
        .into_iter()
        .map(|n| {
            let ready = n
                .status
                .as_ref()
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == NodeConditionType::Ready));
            let offer = snapshot::operator_offer(n, offers.get(n.name()).into_iter().flatten().copied());
            let c = by_name.get(n.name());
            let operator = n.spec.operator.as_str();
            NodeView {
                name: n.name().to_owned(),
                operator: operator.to_owned(),
                operator_is_member: members.contains(operator),
                mine: me == Some(operator),
                ready: snapshot::is_ready(n),
                ready_message: ready.map(|c| {
                    [c.reason.as_deref(), c.message.as_deref()]
                        .into_iter()
                        .flatten()
                        .collect::<Vec<_>>()
                        .join(": ")
                }),
                unschedulable: n.spec.unschedulable,
                runtime: n.status.as_ref().and_then(|s| s.runtime.clone()),
                ready_since: ready
                    .and_then(|c| c.last_transition_time)
                    .or_else(|| n.status.as_ref().and_then(|s| s.last_heartbeat_time))
                    .map(|t| t.to_rfc3339()),
                offer: offer.map(offer_view),
                capacity: AmountView::of(Amount::of(&n.spec.capacity)),
                offered: AmountView::of(c.map(|c| c.capacity).unwrap_or_default()),
                used: AmountView::of(c.map(|c| c.used).unwrap_or_default()),
                replicas: replicas.get(n.name()).copied().unwrap_or(0),
                reputation: scores.get(&(true, n.name())).cloned(),
                operator_reputation: scores.get(&(false, operator)).cloned(),
            }
        })
        .collect()
}

fn offer_view(f: &Kube<NodeOfferSpec>) -> OfferView {
    let p = &f.spec.price;
    OfferView {
        name: f.name().to_owned(),
        jurisdiction: f.spec.jurisdiction.as_str().to_owned(),
        region: f.spec.region.clone(),
        resources: AmountView::of(Amount::of(&f.spec.resources)),
        price: PriceView {
            cpu: p.cpu.to_string(),
            memory: p.memory.to_string(),
            storage: p.storage.to_string(),
            free: p.cpu.micros() == 0 && p.memory.micros() == 0 && p.storage.micros() == 0,
        },
        phase: f.status.as_ref().map(|s| format!("{:?}", s.phase)),
    }
}

/// Who vouches for whom (live attestations of operators, not of oneself): the graph a policy's
/// reach is taken on, as the scheduler's topology builds it.
fn vouches(o: &Objects, now: DateTime<Utc>) -> HashMap<String, Vec<String>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for a in &o.attestations {
        let live = a.spec.expires.is_none_or(|t| t.0 > now);
        if let (SubjectKind::Operator, true, Some(signer)) = (a.spec.subject_kind, live, a.signer())
            && signer != a.spec.subject
        {
            out.entry(signer.to_owned()).or_default().push(a.spec.subject.clone());
        }
    }
    out
}

fn policies(
    o: &Objects,
    candidates: &[core::Candidate],
    members: &BTreeSet<String>,
    me: Option<&str>,
    now: DateTime<Utc>,
    more: &mut usize,
) -> Vec<PolicyView> {
    // Only the policies shown are judged: the work is bounded by MAX_SHOWN × nodes.
    let shown = bounded(sorted(&o.policies), |tp| is_mine(tp.signer(), me), more);
    let vouches = vouches(o, now);
    let none = HashMap::new();
    let money = Money::default();
    let constraints = Constraints::default();
    let avoid = BTreeSet::new();
    // The workloads naming each policy, by (namespace, policy, signer).
    let mut named: HashMap<(&str, &str, Option<&str>), BTreeSet<&str>> = HashMap::new();
    for w in &o.workloads {
        if let Some(tp) = w.spec.trust_policy.as_deref() {
            named.entry((w.namespace().unwrap_or("default"), tp, w.signer())).or_default().insert(w.name());
        }
    }
    shown
        .into_iter()
        .map(|tp| {
            let mut policy = Policy::of(&tp.spec);
            if policy.required_attestations > 0 {
                let roots = members.iter().chain(policy.allowed_operators.iter()).cloned();
                policy.reach = Arc::new(Reach::of(&vouches, roots));
            }
            // A replica that asks for nothing: what is left is the policy and the node's state.
            let request = Request {
                need: Amount::default(),
                policy: Some(&policy),
                signer: tp.signer(),
                constraints: &constraints,
                per_operator: &none,
                money: &money,
                avoid: &avoid,
            };
            let mut admitted: Vec<&core::Candidate> = Vec::new();
            let mut rejected: HashMap<String, usize> = HashMap::new();
            for c in candidates {
                match core::filter(c, &request) {
                    Ok(()) => admitted.push(c),
                    Err(reason) => *rejected.entry(reason.to_string()).or_default() += 1,
                }
            }
            // Candidates come sorted by name; the user's own first.
            admitted.sort_by_key(|c| me != Some(c.operator.as_str()));
            let mut rejected: Vec<Rejected> =
                rejected.into_iter().map(|(reason, count)| Rejected { reason, count }).collect();
            rejected.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.reason.cmp(&b.reason)));
            let ns = tp.namespace().unwrap_or("default");
            let workloads = named.get(&(ns, tp.name(), tp.signer()));
            let spending = tp.status.as_ref().and_then(|s| s.spending.as_ref()).map(|s| {
                let mut text = format!("{} spent, {} per hour now", s.total, s.per_hour);
                if let Some(why) = &s.stopped {
                    text.push_str(&format!("; stopped: {why}"));
                }
                text
            });
            PolicyView {
                namespace: ns.to_owned(),
                name: tp.name().to_owned(),
                owner: tp.signer().map(str::to_owned),
                mine: is_mine(tp.signer(), me),
                constraints: policy_constraints(&tp.spec),
                admitted: admitted.len(),
                admits: admitted.iter().take(MAX_ADMITS_NAMED).map(|c| c.name.clone()).collect(),
                considered: candidates.len(),
                rejected,
                workloads: workloads
                    .into_iter()
                    .flatten()
                    .take(MAX_ADMITS_NAMED)
                    .map(|w| (*w).to_owned())
                    .collect(),
                more_workloads: workloads.map_or(0, |w| w.len().saturating_sub(MAX_ADMITS_NAMED)),
                spending,
            }
        })
        .collect()
}

/// `a, b, c, d, e and 7 more`.
fn list(items: Vec<&str>) -> String {
    let mut text = items.iter().take(MAX_LISTED).copied().collect::<Vec<_>>().join(", ");
    if items.len() > MAX_LISTED {
        text.push_str(&format!(" and {} more", items.len() - MAX_LISTED));
    }
    text
}

/// A policy's constraints in words.
fn policy_constraints(p: &TrustPolicySpec) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(r) = p.min_reputation {
        out.push(format!("min reputation {r}"));
    }
    if !p.allowed_operators.is_empty() {
        out.push(format!(
            "allowed operators: {}",
            list(p.allowed_operators.iter().map(|d| d.as_str()).collect())
        ));
    }
    if !p.denied_operators.is_empty() {
        out.push(format!(
            "denied operators: {}",
            list(p.denied_operators.iter().map(|d| d.as_str()).collect())
        ));
    }
    if let Some(n) = p.required_attestations.filter(|n| *n > 0) {
        out.push(format!("{n} attestation{} with standing", if n == 1 { "" } else { "s" }));
    }
    if !p.allowed_jurisdictions.is_empty() {
        out.push(format!(
            "jurisdictions: {}",
            list(p.allowed_jurisdictions.iter().map(|j| j.as_str()).collect())
        ));
    }
    if let Some(s) = &p.spending {
        if let Some(m) = s.max_per_hour {
            out.push(format!("at most {m} credits per hour"));
        }
        if let Some(m) = s.max_total {
            out.push(format!("at most {m} credits in all"));
        }
    }
    if out.is_empty() {
        out.push("no constraints".to_owned());
    }
    out
}

fn credits(o: &Objects, me: Option<&str>, more: &mut More) -> CreditsView {
    let accounts = sorted(&o.accounts)
        .into_iter()
        .map(|a| {
            let s = a.status.clone().unwrap_or_default();
            let mut lines: Vec<LineView> = s
                .lines
                .iter()
                .map(|l| LineView {
                    counterparty: l.counterparty.as_str().to_owned(),
                    balance: l.balance.to_string(),
                })
                .collect();
            lines.truncate(MAX_ADMITS_NAMED);
            AccountView {
                owner: a.spec.owner.as_str().to_owned(),
                mine: me == Some(a.spec.owner.as_str()),
                balance: s.balance.to_string(),
                negative: s.balance.micros() < 0,
                lines,
                transfers: s.transfers,
            }
        })
        .collect();
    let accounts = bounded(accounts, |a: &AccountView| a.mine, &mut more.accounts);
    let grants = sorted(&o.grants)
        .into_iter()
        .map(|g| GrantView {
            name: g.name().to_owned(),
            granter: g.signer().map(str::to_owned),
            grantee: g.spec.grantee.as_str().to_owned(),
            limit: g.spec.limit.to_string(),
            used: g.status.as_ref().map(|s| s.used.to_string()),
            expires: g.spec.expires.map(|t| t.to_rfc3339()),
        })
        .collect();
    let grants = bounded(
        grants,
        |g: &GrantView| me.is_some() && (g.granter.as_deref() == me || Some(g.grantee.as_str()) == me),
        &mut more.grants,
    );
    CreditsView { accounts, grants }
}

fn reputations(o: &Objects, me: Option<&str>, more: &mut usize) -> Vec<ReputationView> {
    let mut out: Vec<ReputationView> = o
        .reputations
        .iter()
        .map(|r| ReputationView {
            subject_kind: format!("{:?}", r.spec.subject_kind),
            subject: r.spec.subject.clone(),
            scores: r.status.as_ref().map(ScoreView::of),
            observed_at: r.status.as_ref().and_then(|s| s.observed_at).map(|t| t.to_rfc3339()),
        })
        .collect();
    out.sort_by(|a, b| (&a.subject_kind, &a.subject).cmp(&(&b.subject_kind, &b.subject)));
    bounded(out, |r| Some(r.subject.as_str()) == me, more)
}

fn members_view(read: &MembersRead) -> MembersView {
    match read {
        None => MembersView::default(),
        Some(Err(e)) => MembersView { error: Some(e.clone()), ..MembersView::default() },
        Some(Ok(seen)) => MembersView {
            leader: seen.items.iter().find(|m| m.leader).map(|m| m.id),
            items: seen.items.clone(),
            read_at: Some(rfc3339(seen.read_at)),
            error: None,
        },
    }
}

/// At most [`MAX_EVENTS`] of the events the objects record: the newest of each object (none
/// dated more than [`FUTURE_SLACK`] after `now`), the user's own objects' first, each part
/// newest first.
fn events(o: &Objects, me: Option<&str>, now: DateTime<Utc>) -> Vec<EventView> {
    let latest = now + FUTURE_SLACK;
    // The newest event of each object, by (kind, object).
    let mut newest: HashMap<(&'static str, String), (Time, EventView)> = HashMap::new();
    let mut push = |t: Option<Time>,
                    kind: &'static str,
                    object: String,
                    reason: &str,
                    message: String,
                    warning: bool,
                    mine: bool| {
        let Some(t) = t.filter(|t| t.0 <= latest) else { return };
        let ev = EventView {
            time: t.to_rfc3339(),
            kind,
            object: object.clone(),
            reason: reason.to_owned(),
            message,
            warning,
            mine,
        };
        let newer = |(t0, e0): &(Time, EventView)| (t, &ev.reason) > (*t0, &e0.reason);
        match newest.entry((kind, object)) {
            std::collections::hash_map::Entry::Occupied(mut e) => {
                if newer(e.get()) {
                    e.insert((t, ev));
                }
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert((t, ev));
            }
        }
    };
    let path = |ns: Option<&str>, name: &str| match ns {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_owned(),
    };
    let mut my_workloads: BTreeSet<&str> = BTreeSet::new();
    for w in &o.workloads {
        let mine = is_mine(w.signer(), me);
        if mine {
            my_workloads.insert(w.uid());
        }
        for c in w.status.iter().flat_map(|s| &s.conditions) {
            let bad = workload_bad(c);
            let v = condition_view(c, bad);
            let reason = v.reason.clone().unwrap_or_else(|| format!("{}={}", v.type_, v.status));
            push(
                c.last_transition_time,
                "Workload",
                path(w.namespace(), w.name()),
                &reason,
                v.message.unwrap_or_default(),
                bad,
                mine,
            );
        }
    }
    for r in &o.replicas {
        let Some(s) = &r.status else { continue };
        let object = path(r.namespace(), r.name());
        // A replica is the user's when the workload owning it is.
        let mine = r
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|owner| my_workloads.contains(owner.uid.as_str()));
        for c in &s.conditions {
            let failed = c.status != ConditionStatus::True;
            let reason = c.reason.clone().unwrap_or_else(|| format!("{:?}", c.type_));
            push(
                c.last_transition_time,
                "Replica",
                object.clone(),
                &reason,
                c.message.clone().unwrap_or_default(),
                failed,
                mine,
            );
        }
        let on = r.spec.node_name.as_deref().unwrap_or("?");
        push(s.started_at, "Replica", object.clone(), "Started", format!("started on {on}"), false, mine);
        if s.phase.is_terminal() {
            let how = match (s.exit_code, &s.reason) {
                (Some(code), Some(reason)) => format!("exited {code} ({reason}) on {on}"),
                (Some(code), None) => format!("exited {code} on {on}"),
                (None, Some(reason)) => format!("ended ({reason}) on {on}"),
                (None, None) => format!("ended on {on}"),
            };
            push(
                s.finished_at,
                "Replica",
                object,
                &format!("{:?}", s.phase),
                how,
                s.phase == ReplicaPhase::Failed,
                mine,
            );
        }
    }
    for n in &o.nodes {
        let mine = me == Some(n.spec.operator.as_str());
        for c in n.status.iter().flat_map(|s| &s.conditions) {
            let ready = c.status == ConditionStatus::True;
            let reason =
                c.reason.clone().unwrap_or_else(|| if ready { "Ready" } else { "NotReady" }.to_owned());
            push(
                c.last_transition_time,
                "Node",
                n.name().to_owned(),
                &reason,
                c.message.clone().unwrap_or_default(),
                !ready,
                mine,
            );
        }
    }
    for a in &o.audit {
        let s = &a.spec;
        let target = match (&s.namespace, &s.name) {
            (Some(ns), Some(name)) => format!("{} {ns}/{name}", s.resource),
            (None, Some(name)) => format!("{} {name}", s.resource),
            _ => s.resource.clone(),
        };
        let decision = format!("{:?}", s.decision);
        let dry = if s.dry_run { " (dry run)" } else { "" };
        // Only the user's own agents' records are readable.
        push(
            Some(s.at),
            "AuditEvent",
            a.name().to_owned(),
            &decision,
            format!("agent {} {}{dry} {target}: {}", short(s.agent.as_str()), s.verb, s.reason),
            s.decision == AuditDecision::Refused,
            true,
        );
    }
    let mut out: Vec<(Time, EventView)> = newest.into_values().collect();
    // The user's first, then newest first; ties in a stable order.
    out.sort_by(|(ta, a), (tb, b)| {
        b.mine
            .cmp(&a.mine)
            .then_with(|| tb.cmp(ta))
            .then_with(|| (a.kind, &a.object, &a.reason).cmp(&(b.kind, &b.object, &b.reason)))
    });
    out.into_iter().take(MAX_EVENTS).map(|(_, e)| e).collect()
}

/// `did:key:z6Mk…abcdef`: enough to tell keys apart in a sentence.
fn short(did: &str) -> String {
    let tail = did.len().saturating_sub(6);
    match did.get(..12).zip(did.get(tail..)) {
        Some((head, tail)) if did.len() > 20 => format!("{head}…{tail}"),
        _ => did.to_owned(),
    }
}

/// Millicores as cores: `2 cores`, `0.5 cores`, `250m`.
pub fn cores(m: u64) -> String {
    match m {
        0 => "0".to_owned(),
        m if m < 1000 => format!("{m}m"),
        m if m.is_multiple_of(1000) => format!("{} cores", m / 1000),
        m => format!("{:.2} cores", m as f64 / 1000.0).replace(".00 ", " "),
    }
}

/// Bytes with a binary unit: `512 MiB`, `1.5 GiB`, `100 B`.
pub fn bytes(b: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if b < 1024 {
        return format!("{b} B");
    }
    let mut value = b as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    let text =
        if (value - value.round()).abs() < 0.05 { format!("{value:.0}") } else { format!("{value:.1}") };
    format!("{text} {}", UNITS[unit])
}

#[cfg(test)]
mod tests;
