//! What the dashboard shows, as one JSON document: a pure function of the objects the watches
//! hold, the members last read, and the time. No I/O, no clock: every figure the page shows is
//! decided (and tested) here; the page only lays it out.
//!
//! Which nodes a TrustPolicy admits is not computed again here: it is the scheduler's own
//! filter (`controllers::scheduler::core::filter`) on the scheduler's own candidates
//! (`snapshot::candidates`), for a replica that asks for nothing, so the page and placement
//! cannot disagree about a policy.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use api::kinds::{
    AccountSpec, AttestationSpec, AuditDecision, AuditEventSpec, CreditGrantSpec, NodeConditionType,
    NodeOfferSpec, NodeSpec, ReplicaConditionType, ReplicaPhase, ReplicaSpec, ReputationSpec,
    ReputationStatus, SubjectKind, TrustPolicySpec, WorkloadConditionType, WorkloadSpec,
};
use api::meta::{ConditionStatus, Time};
use chrono::{DateTime, SecondsFormat, Utc};
use client::resource::Kube;
use controllers::scheduler::core::{self, Amount, Constraints, Money, Policy, Request};
use controllers::scheduler::snapshot::{self, Reach};
use serde::Serialize;
use serde_json::Value;

/// Most events the page lists (the newest).
pub const MAX_EVENTS: usize = 60;

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
}

/// Where the watch of a kind is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum SourceState {
    /// Listing (first, or again after the watch expired).
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
    /// Recent events, newest first.
    pub events: Vec<EventView>,
    /// The watch of each kind.
    pub sources: Vec<Source>,
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
    /// Its replicas, by name.
    pub items: Vec<ReplicaView>,
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
    /// The last heartbeat.
    pub last_heartbeat: Option<String>,
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

/// A node a policy does not admit, and the first hard constraint it breaks.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rejected {
    /// The node.
    pub node: String,
    /// Why (the scheduler's words).
    pub reason: String,
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
    /// The nodes a replica under it could be placed on now (by every hard filter but the
    /// workload's own size and placement).
    pub admits: Vec<String>,
    /// The other nodes, each with why not.
    pub rejects: Vec<Rejected>,
    /// The workloads (of its signer, in its namespace) that name it.
    pub workloads: Vec<String>,
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
}

/// The view of `input`.
pub fn view(input: &Input<'_>) -> View {
    let o = input.objects;
    let me = input.me;
    let members: BTreeSet<String> = match input.members {
        Some(Ok(seen)) => seen.dids.clone(),
        _ => BTreeSet::new(),
    };
    let workloads = workloads(o, me);
    let nodes = nodes(o, &members, me, input.now);
    let policies = policies(o, &members, me, input.now);
    let members_view = members_view(input.members);
    let summary = Summary {
        workloads: workloads.len(),
        desired: workloads.iter().map(|w| w.desired).sum(),
        running: workloads.iter().flat_map(|w| &w.items).filter(|r| r.phase == ReplicaPhase::Running).count(),
        pending: workloads.iter().flat_map(|w| &w.items).filter(|r| r.phase == ReplicaPhase::Pending).count(),
        nodes: nodes.len(),
        nodes_ready: nodes.iter().filter(|n| n.ready).count(),
        members: members_view.items.len(),
    };
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
        credits: credits(o, me),
        reputations: reputations(o),
        members: members_view,
        events: events(o),
        sources: input.sources.to_vec(),
    }
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
    r.status.as_ref().is_some_and(|s| {
        s.phase == ReplicaPhase::Running
            && !s
                .conditions
                .iter()
                .any(|c| c.type_ == ReplicaConditionType::Ready && c.status != ConditionStatus::True)
    })
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

fn workloads(o: &Objects, me: Option<&str>) -> Vec<WorkloadView> {
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
            let items: Vec<ReplicaView> = owned.iter().map(|r| replica_view(r)).collect();
            let live: Vec<&ReplicaView> = items.iter().filter(|r| !r.deleting).collect();
            let conditions = w
                .status
                .iter()
                .flat_map(|s| &s.conditions)
                .map(|c| {
                    let bad = match c.type_ {
                        WorkloadConditionType::Available => c.status == ConditionStatus::False,
                        WorkloadConditionType::ReplicaFailure => c.status == ConditionStatus::True,
                        WorkloadConditionType::Progressing => false,
                    };
                    condition_view(c, bad)
                })
                .collect();
            WorkloadView {
                namespace: w.namespace().unwrap_or("default").to_owned(),
                name: w.name().to_owned(),
                owner: w.signer().map(str::to_owned),
                mine: is_mine(w.signer(), me),
                image: w.spec.image.clone().or_else(|| w.spec.rootfs.clone()),
                desired: i64::from(w.spec.replicas.unwrap_or(1)),
                replicas: live.len(),
                ready: live.iter().filter(|r| r.ready).count(),
                trust_policy: w.spec.trust_policy.clone(),
                conditions,
                why_pending: live
                    .iter()
                    .find_map(|r| r.why_pending.clone().map(|why| format!("{}: {why}", r.name))),
                items,
            }
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

fn nodes(o: &Objects, members: &BTreeSet<String>, me: Option<&str>, now: DateTime<Utc>) -> Vec<NodeView> {
    let candidates = candidates(o, members, now);
    let candidate = |name: &str| candidates.iter().find(|c| c.name == name);
    let score = |kind: SubjectKind, subject: &str| {
        o.reputations
            .iter()
            .find(|r| r.spec.subject_kind == kind && r.spec.subject == subject)
            .and_then(|r| r.status.as_ref())
            .map(ScoreView::of)
    };
    sorted(&o.nodes)
        .into_iter()
        .map(|n| {
            let ready = n
                .status
                .as_ref()
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == NodeConditionType::Ready));
            let offer = snapshot::operator_offer(n, o.offers.iter().map(Arc::as_ref));
            let c = candidate(n.name());
            let replicas = o
                .replicas
                .iter()
                .filter(|r| {
                    r.spec.node_name.as_deref() == Some(n.name())
                        && !r.status.as_ref().is_some_and(|s| s.phase.is_terminal())
                })
                .count();
            NodeView {
                name: n.name().to_owned(),
                operator: n.spec.operator.as_str().to_owned(),
                operator_is_member: members.contains(n.spec.operator.as_str()),
                mine: me == Some(n.spec.operator.as_str()),
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
                last_heartbeat: n.status.as_ref().and_then(|s| s.last_heartbeat_time).map(|t| t.to_rfc3339()),
                offer: offer.map(offer_view),
                capacity: AmountView::of(Amount::of(&n.spec.capacity)),
                offered: AmountView::of(c.map(|c| c.capacity).unwrap_or_default()),
                used: AmountView::of(c.map(|c| c.used).unwrap_or_default()),
                replicas,
                reputation: score(SubjectKind::Node, n.name()),
                operator_reputation: score(SubjectKind::Operator, n.spec.operator.as_str()),
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
    members: &BTreeSet<String>,
    me: Option<&str>,
    now: DateTime<Utc>,
) -> Vec<PolicyView> {
    let candidates = candidates(o, members, now);
    let vouches = vouches(o, now);
    let none = HashMap::new();
    let money = Money::default();
    let constraints = Constraints::default();
    let avoid = BTreeSet::new();
    sorted(&o.policies)
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
            let mut admits = Vec::new();
            let mut rejects = Vec::new();
            for c in &candidates {
                match core::filter(c, &request) {
                    Ok(()) => admits.push(c.name.clone()),
                    Err(reason) => {
                        rejects.push(Rejected { node: c.name.clone(), reason: reason.to_string() })
                    }
                }
            }
            let ns = tp.namespace().unwrap_or("default");
            let workloads = o
                .workloads
                .iter()
                .filter(|w| {
                    w.namespace() == Some(ns)
                        && w.spec.trust_policy.as_deref() == Some(tp.name())
                        && w.signer() == tp.signer()
                })
                .map(|w| w.name().to_owned())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
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
                admits,
                rejects,
                workloads,
                spending,
            }
        })
        .collect()
}

/// A policy's constraints in words.
fn policy_constraints(p: &TrustPolicySpec) -> Vec<String> {
    let list = |items: Vec<&str>| items.join(", ");
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

fn credits(o: &Objects, me: Option<&str>) -> CreditsView {
    let accounts = sorted(&o.accounts)
        .into_iter()
        .map(|a| {
            let s = a.status.clone().unwrap_or_default();
            AccountView {
                owner: a.spec.owner.as_str().to_owned(),
                mine: me == Some(a.spec.owner.as_str()),
                balance: s.balance.to_string(),
                negative: s.balance.micros() < 0,
                lines: s
                    .lines
                    .iter()
                    .map(|l| LineView {
                        counterparty: l.counterparty.as_str().to_owned(),
                        balance: l.balance.to_string(),
                    })
                    .collect(),
                transfers: s.transfers,
            }
        })
        .collect();
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
    CreditsView { accounts, grants }
}

fn reputations(o: &Objects) -> Vec<ReputationView> {
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
    out
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

/// The newest [`MAX_EVENTS`] events the objects record.
fn events(o: &Objects) -> Vec<EventView> {
    let mut out: Vec<(Time, EventView)> = Vec::new();
    let mut push = |t: Option<Time>,
                    kind: &'static str,
                    object: String,
                    reason: &str,
                    message: String,
                    warning| {
        if let Some(t) = t {
            let ev =
                EventView { time: t.to_rfc3339(), kind, object, reason: reason.to_owned(), message, warning };
            out.push((t, ev));
        }
    };
    let path = |ns: Option<&str>, name: &str| match ns {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_owned(),
    };
    for w in &o.workloads {
        for c in w.status.iter().flat_map(|s| &s.conditions) {
            let bad = match c.type_ {
                WorkloadConditionType::Available => c.status == ConditionStatus::False,
                WorkloadConditionType::ReplicaFailure => c.status == ConditionStatus::True,
                WorkloadConditionType::Progressing => false,
            };
            let v = condition_view(c, bad);
            let reason = v.reason.clone().unwrap_or_else(|| format!("{}={}", v.type_, v.status));
            push(
                c.last_transition_time,
                "Workload",
                path(w.namespace(), w.name()),
                &reason,
                v.message.unwrap_or_default(),
                bad,
            );
        }
    }
    for r in &o.replicas {
        let Some(s) = &r.status else { continue };
        let object = path(r.namespace(), r.name());
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
            );
        }
        let on = r.spec.node_name.as_deref().unwrap_or("?");
        push(s.started_at, "Replica", object.clone(), "Started", format!("started on {on}"), false);
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
            );
        }
    }
    for n in &o.nodes {
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
        push(
            Some(s.at),
            "AuditEvent",
            a.name().to_owned(),
            &decision,
            format!("agent {} {}{dry} {target}: {}", short(s.agent.as_str()), s.verb, s.reason),
            s.decision == AuditDecision::Refused,
        );
    }
    // Newest first; ties in a stable order.
    out.sort_by(|(ta, a), (tb, b)| {
        tb.cmp(ta).then_with(|| (a.kind, &a.object, &a.reason).cmp(&(b.kind, &b.object, &b.reason)))
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
