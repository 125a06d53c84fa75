//! Placement as a pure function: filter plugins (hard constraints) and score plugins (weighted
//! preferences) over a snapshot of candidate nodes. No I/O, no clock, no randomness: the same
//! inputs give the same placement, whatever order the nodes come in.
//!
//! Trust is what a stranger would like to mint, so the filters count only what fresh keys
//! cannot make:
//!
//! - **Attestations count only from attesters with standing under the policy**: a control-plane
//!   member, an operator the policy names in `allowedOperators`, or an operator that holds
//!   global trust (someone trusted vouches for it: the reputation controller's EigenTrust from
//!   the members) and whose Reputation composite is > 0 and at least the policy's
//!   `minReputation` (0 when unset). Both are computed by the control plane, so a thousand
//!   fresh keys vouching for an operator (or for each other) count for nothing.
//! - **A workload without a TrustPolicy** is placed only on nodes operated by its own signer or
//!   by a control-plane member (members are trusted with placement anyway, and `ui up`'s local
//!   node is operated by the member key). To use anyone else's nodes, its owner names a
//!   TrustPolicy that says whom to trust (`allowedOperators`, reputation, attestations).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;

use api::kinds::{Placement, Protocol, TrustPolicySpec};
use api::quantity::Resources;

use crate::credits::meter::Rates;

/// Amounts of cpu (millicores), memory and storage (bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Amount {
    /// Millicores.
    pub cpu: u64,
    /// Bytes.
    pub memory: u64,
    /// Bytes.
    pub storage: u64,
}

impl Amount {
    /// The amounts of `r` (unset = 0).
    pub fn of(r: &Resources) -> Self {
        Self { cpu: r.cpu_millicores().0, memory: r.memory_bytes().0, storage: r.storage_bytes().0 }
    }

    /// `self + other`, saturating.
    #[must_use]
    pub fn plus(self, other: Self) -> Self {
        Self {
            cpu: self.cpu.saturating_add(other.cpu),
            memory: self.memory.saturating_add(other.memory),
            storage: self.storage.saturating_add(other.storage),
        }
    }

    /// `self - other`, saturating at 0.
    #[must_use]
    pub fn minus(self, other: Self) -> Self {
        Self {
            cpu: self.cpu.saturating_sub(other.cpu),
            memory: self.memory.saturating_sub(other.memory),
            storage: self.storage.saturating_sub(other.storage),
        }
    }
}

/// A node's open offer, as placement sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Offer {
    /// ISO country code.
    pub jurisdiction: String,
    /// The offer's labels (matched by a workload's `nodeSelector`).
    pub labels: BTreeMap<String, String>,
    /// Its prices.
    pub rates: Rates,
    /// The host ports it lets workloads publish, both ends included.
    pub host_ports: (u16, u16),
}

/// The independent operators with a live attestation of a node's operator, by the standing each
/// has. Kept apart so that counting them under a policy never walks the fresh keys, which anyone
/// can add by the thousand, except to look up the few operators a policy names.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Attesters {
    /// Control-plane members: they count under every policy.
    pub members: BTreeSet<String>,
    /// Other attesters whose Reputation composite is > 0, with that composite.
    pub reputed: BTreeMap<String, f64>,
    /// The rest (every fresh key among them): they count only where a policy names them.
    pub others: BTreeSet<String>,
}

impl Attesters {
    /// Sorts attesters by standing: `member` says whether a did is a control-plane member,
    /// `reputation` its composite reputation (0 when it has none). A did given twice counts once.
    pub fn new<'a>(
        attesters: impl IntoIterator<Item = &'a str>,
        member: impl Fn(&str) -> bool,
        reputation: impl Fn(&str) -> f64,
    ) -> Self {
        let mut out = Self::default();
        for a in attesters {
            let r = reputation(a);
            if member(a) {
                out.members.insert(a.to_owned());
            } else if r > 0.0 {
                out.reputed.insert(a.to_owned(), r);
            } else {
                out.others.insert(a.to_owned());
            }
        }
        out
    }

    /// How many attesters of the operator `subject` have standing under `p`: members, operators
    /// `p` allows by name, and attesters the members or `p`'s named operators vouch for (not
    /// through `subject` itself: `p.reach`) whose composite reputation is at least `p`'s floor
    /// (with no floor, any).
    pub fn with_standing(&self, p: &Policy, subject: &str) -> usize {
        let floor = p.min_reputation.unwrap_or(0.0);
        let allowed = &p.allowed_operators;
        let vouched = |a: &str| p.reach.reaches_without(a, subject);
        let reputed = self
            .reputed
            .iter()
            .filter(|(a, r)| allowed.contains(a.as_str()) || (**r >= floor && vouched(a)))
            .count();
        let others = self
            .others
            .iter()
            .filter(|a| allowed.contains(a.as_str()) || (floor <= 0.0 && vouched(a)))
            .count();
        self.members.len() + reputed + others
    }

    /// Every attester, whatever its standing.
    pub fn len(&self) -> usize {
        self.members.len() + self.reputed.len() + self.others.len()
    }

    /// Whether nobody attests.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One node as placement sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    /// Node name.
    pub name: String,
    /// The Node's `metadata.uid`: a replica is bound to this very Node, not to whoever holds the
    /// name later.
    pub uid: String,
    /// Operator did:key.
    pub operator: String,
    /// The operator is a control-plane member.
    pub operator_is_member: bool,
    /// Condition Ready is True.
    pub ready: bool,
    /// `spec.unschedulable` (drained).
    pub unschedulable: bool,
    /// The NodeOffer of this node signed by its operator, if any.
    pub offer: Option<Offer>,
    /// What replicas may use in all.
    pub capacity: Amount,
    /// What bound replicas use.
    pub used: Amount,
    /// Composite reputation of the node (0 when it has none).
    pub node_reputation: f64,
    /// Composite reputation of its operator (0 when it has none).
    pub operator_reputation: f64,
    /// Independent operators (not the operator itself) with a live attestation of the operator.
    pub attesters: Arc<Attesters>,
    /// The host ports its bound replicas publish (filled in only for a replica that publishes
    /// one).
    pub ports_taken: BTreeSet<(u16, Protocol)>,
}

impl Candidate {
    /// This node as if it were ready, schedulable and empty: what is left to filter is who may
    /// run a workload at all (its policy, signer and constraints), not its state now.
    pub fn idle(&self) -> Candidate {
        Candidate {
            ready: true,
            unschedulable: false,
            used: Amount::default(),
            ports_taken: BTreeSet::new(),
            ..self.clone()
        }
    }
}

/// A TrustPolicy's hard constraints, in the form filters check fast.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Policy {
    /// Lowest reputation of the node and of its operator.
    pub min_reputation: Option<f64>,
    /// If not empty, only these operators.
    pub allowed_operators: BTreeSet<String>,
    /// Never these operators.
    pub denied_operators: BTreeSet<String>,
    /// Attesters with standing under this policy the operator needs.
    pub required_attestations: u32,
    /// If not empty, only these jurisdictions.
    pub allowed_jurisdictions: BTreeSet<String>,
    /// Most micro-credits per hour its workloads' replicas may cost together.
    pub max_per_hour: Option<i64>,
    /// Most micro-credits its workloads may spend in all.
    pub max_total: Option<i64>,
    /// Who the members and the operators the policy names vouch for, directly or in a chain of
    /// live attestations: its personal pre-trusted set's reach (filled by placement from the
    /// attestation graph; see `snapshot::Reach`).
    pub reach: Arc<super::snapshot::Reach>,
}

impl Policy {
    /// The constraints of a TrustPolicy.
    pub fn of(spec: &TrustPolicySpec) -> Self {
        Self {
            min_reputation: spec.min_reputation,
            allowed_operators: spec.allowed_operators.iter().map(|d| d.as_str().to_owned()).collect(),
            denied_operators: spec.denied_operators.iter().map(|d| d.as_str().to_owned()).collect(),
            required_attestations: spec.required_attestations.unwrap_or(0),
            allowed_jurisdictions: spec.allowed_jurisdictions.iter().map(|j| j.as_str().to_owned()).collect(),
            max_per_hour: spec.spending.as_ref().and_then(|s| s.max_per_hour).map(|c| c.micros()),
            max_total: spec.spending.as_ref().and_then(|s| s.max_total).map(|c| c.micros()),
            reach: Arc::default(),
        }
    }
}

/// A workload's own placement constraints.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Constraints {
    /// Labels the offer must carry.
    pub node_selector: BTreeMap<String, String>,
    /// If not empty, only these jurisdictions.
    pub jurisdictions: BTreeSet<String>,
    /// At most this many replicas of the workload per operator.
    pub max_per_operator: Option<u32>,
    /// The host ports (and protocols) a replica publishes: free on its node.
    pub host_ports: BTreeSet<(u16, Protocol)>,
}

impl Constraints {
    /// The constraints of a Workload's `spec.placement`.
    pub fn of(p: Option<&Placement>) -> Self {
        p.map_or_else(Self::default, |p| Self {
            node_selector: p.node_selector.clone(),
            jurisdictions: p.jurisdictions.iter().map(|j| j.as_str().to_owned()).collect(),
            max_per_operator: p.max_replicas_per_operator,
            host_ports: BTreeSet::new(),
        })
    }

    /// These constraints, and that the host ports `ports` publishes be free.
    pub fn publishing(self, ports: &[api::kinds::ContainerPort]) -> Self {
        Self { host_ports: api::kinds::host_ports(ports).collect(), ..self }
    }
}

/// What one replica needs.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// Resources it reserves.
    pub need: Amount,
    /// Its owner's TrustPolicy (none: the workload names no policy, and only nodes of its
    /// signer or of control-plane members may take it).
    pub policy: Option<&'a Policy>,
    /// The did:key that signed its workload.
    pub signer: Option<&'a str>,
    /// Its workload's placement constraints.
    pub constraints: &'a Constraints,
    /// Replicas of the same workload already placed, per operator.
    pub per_operator: &'a HashMap<String, u32>,
    /// What its owner can pay, and has spent (see [`Money`]).
    pub money: &'a Money,
    /// Nodes (by uid) that could not open its workload's sealed values for its template: a
    /// replica of it failed there with `SealedSecretNotOpened`.
    pub avoid: &'a BTreeSet<String>,
}

/// What a replica's owner can pay: placement on a node whose operator charges (an offer with a
/// price, an operator other than the owner) needs an hour of the replica's cost within the
/// owner's credit with that operator and within its TrustPolicy's `spending.maxPerHour` (with
/// what its replicas cost now), and its `spending.maxTotal` not reached yet.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Money {
    /// Micro-credits the owner may still spend with each operator: what the operator owes it
    /// plus the lines the operator grants it (none: 0).
    pub available: HashMap<String, i64>,
    /// Micro-credits per hour the policy's running replicas cost now.
    pub per_hour: i64,
    /// Micro-credits the policy's workloads have spent in all.
    pub spent: i64,
}

impl Money {
    /// Micro-credits per hour `need` costs on `c` for a workload signed by `signer`: 0 on a
    /// node of the signer's own or without a price.
    pub fn cost(c: &Candidate, signer: Option<&str>, need: Amount) -> i64 {
        match &c.offer {
            Some(o) if signer != Some(c.operator.as_str()) => {
                i64::try_from(o.rates.per_hour(need)).unwrap_or(i64::MAX)
            }
            _ => 0,
        }
    }
}

/// Why a filter rejected a node. The order is the order filters run in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// Condition Ready is not True.
    NotReady,
    /// Drained.
    Unschedulable,
    /// No NodeOffer signed by the node's operator.
    NoOffer,
    /// The node could not open the workload's sealed values (a replica failed there).
    SecretNotOpened,
    /// No TrustPolicy, and the operator is neither the workload's signer nor a member.
    UntrustedOperator,
    /// The operator is not in the policy's allowed operators.
    OperatorNotAllowed,
    /// The operator is in the policy's denied operators.
    OperatorDenied,
    /// The node or its operator is below the policy's reputation floor.
    ReputationTooLow,
    /// Too few attesters with standing under the policy attest the node's operator.
    TooFewAttestations,
    /// The offer's jurisdiction is not allowed by the policy or the workload.
    JurisdictionNotAllowed,
    /// The offer lacks a label of the workload's node selector.
    NodeSelectorMismatch,
    /// The workload already has its most replicas on this operator.
    OperatorLimit,
    /// The owner's credit with the operator covers less than an hour of the replica (and of the
    /// workload's replicas already there).
    InsufficientCredit,
    /// An hour of the replica would take the policy over `spending.maxPerHour`.
    SpendingPerHour,
    /// The policy's workloads have spent its `spending.maxTotal`.
    SpendingTotal,
    /// Not enough cpu left.
    InsufficientCpu,
    /// Not enough memory left.
    InsufficientMemory,
    /// Not enough storage left.
    InsufficientStorage,
    /// A host port the replica publishes is published by another replica on the node.
    HostPortInUse,
    /// A host port the replica publishes is outside those the node's offer allows.
    HostPortNotOffered,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotReady => "node not ready",
            Self::Unschedulable => "node unschedulable",
            Self::NoOffer => "no offer signed by the node's operator",
            Self::SecretNotOpened => "node cannot open the workload's sealed values",
            Self::UntrustedOperator => "operator not trusted",
            Self::OperatorNotAllowed => "operator not allowed",
            Self::OperatorDenied => "operator denied",
            Self::ReputationTooLow => "reputation below the policy's floor",
            Self::TooFewAttestations => "too few attestations with standing",
            Self::JurisdictionNotAllowed => "jurisdiction not allowed",
            Self::NodeSelectorMismatch => "node selector does not match",
            Self::OperatorLimit => "workload's per-operator limit reached",
            Self::InsufficientCredit => "owner's credit with the operator covers less than an hour",
            Self::SpendingPerHour => "the trust policy's spending.maxPerHour would be exceeded",
            Self::SpendingTotal => "the trust policy's spending.maxTotal is reached",
            Self::InsufficientCpu => "insufficient cpu",
            Self::InsufficientMemory => "insufficient memory",
            Self::InsufficientStorage => "insufficient storage",
            Self::HostPortInUse => "a host port it publishes is taken",
            Self::HostPortNotOffered => "a host port it publishes is not offered (the offer's hostPorts)",
        })
    }
}

impl Reason {
    /// What a person can do about it, where the reason alone does not say.
    pub fn hint(self) -> Option<&'static str> {
        match self {
            Self::UntrustedOperator => Some(
                "no TrustPolicy: only nodes of your own or of the control plane; name a TrustPolicy with allowedOperators to use others",
            ),
            Self::InsufficientCredit => Some(
                "ask the operator for a CreditGrant (ui credits grant, signed by the operator), or pay it first (ui credits send)",
            ),
            Self::SecretNotOpened => Some(
                "seal the values again to the nodes the policy admits now (ui seal --refresh -f DIR), then ui apply",
            ),
            Self::TooFewAttestations => Some(
                "an attestation counts only from a control-plane member, an operator the policy allows, or an operator they vouch for (directly or through others they vouch for) whose reputation is at least the policy's minReputation",
            ),
            _ => None,
        }
    }
}

/// The hard constraints, in order; the first one a node breaks is why it is rejected.
pub fn filter(c: &Candidate, r: &Request<'_>) -> Result<(), Reason> {
    if !c.ready {
        return Err(Reason::NotReady);
    }
    if c.unschedulable {
        return Err(Reason::Unschedulable);
    }
    let Some(offer) = &c.offer else { return Err(Reason::NoOffer) };
    if r.avoid.contains(&c.uid) {
        return Err(Reason::SecretNotOpened);
    }
    if r.policy.is_none() && !(c.operator_is_member || r.signer == Some(c.operator.as_str())) {
        return Err(Reason::UntrustedOperator);
    }
    if let Some(p) = r.policy {
        if !p.allowed_operators.is_empty() && !p.allowed_operators.contains(&c.operator) {
            return Err(Reason::OperatorNotAllowed);
        }
        if p.denied_operators.contains(&c.operator) {
            return Err(Reason::OperatorDenied);
        }
        if let Some(floor) = p.min_reputation
            && !(c.node_reputation >= floor && c.operator_reputation >= floor)
        {
            return Err(Reason::ReputationTooLow);
        }
        if p.required_attestations > 0
            && c.attesters.with_standing(p, &c.operator)
                < usize::try_from(p.required_attestations).unwrap_or(usize::MAX)
        {
            return Err(Reason::TooFewAttestations);
        }
        if !p.allowed_jurisdictions.is_empty() && !p.allowed_jurisdictions.contains(&offer.jurisdiction) {
            return Err(Reason::JurisdictionNotAllowed);
        }
    }
    let k = r.constraints;
    if !k.jurisdictions.is_empty() && !k.jurisdictions.contains(&offer.jurisdiction) {
        return Err(Reason::JurisdictionNotAllowed);
    }
    if k.node_selector.iter().any(|(key, v)| offer.labels.get(key) != Some(v)) {
        return Err(Reason::NodeSelectorMismatch);
    }
    let (lo, hi) = offer.host_ports;
    if k.host_ports.iter().any(|(p, _)| *p < lo || *p > hi) {
        return Err(Reason::HostPortNotOffered);
    }
    if k.host_ports.iter().any(|p| c.ports_taken.contains(p)) {
        return Err(Reason::HostPortInUse);
    }
    if let Some(max) = k.max_per_operator
        && r.per_operator.get(&c.operator).copied().unwrap_or(0) >= max
    {
        return Err(Reason::OperatorLimit);
    }
    let cost = Money::cost(c, r.signer, r.need);
    if cost > 0 {
        // An hour of this replica and of the workload's others on the operator's nodes.
        let on_operator = i64::from(r.per_operator.get(&c.operator).copied().unwrap_or(0));
        if r.money.available.get(&c.operator).copied().unwrap_or(0) < cost.saturating_mul(on_operator + 1) {
            return Err(Reason::InsufficientCredit);
        }
        if let Some(p) = r.policy {
            if p.max_per_hour.is_some_and(|max| r.money.per_hour.saturating_add(cost) > max) {
                return Err(Reason::SpendingPerHour);
            }
            if p.max_total.is_some_and(|max| r.money.spent >= max) {
                return Err(Reason::SpendingTotal);
            }
        }
    }
    let after = c.used.plus(r.need);
    if after.cpu > c.capacity.cpu {
        return Err(Reason::InsufficientCpu);
    }
    if after.memory > c.capacity.memory {
        return Err(Reason::InsufficientMemory);
    }
    if after.storage > c.capacity.storage {
        return Err(Reason::InsufficientStorage);
    }
    Ok(())
}

/// Weights of the score plugins (each plugin scores from 0 to 1).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Weights {
    /// Prefer nodes (and operators) of higher reputation.
    pub reputation: f64,
    /// Prefer operators that run fewer replicas of the workload (decentralization).
    pub spread: f64,
    /// Prefer nodes with more capacity left.
    pub free_capacity: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Self { reputation: 1.0, spread: 2.0, free_capacity: 1.0 }
    }
}

/// How much a (feasible) node is preferred.
pub fn score(c: &Candidate, r: &Request<'_>, w: &Weights) -> f64 {
    let reputation = (c.node_reputation.clamp(0.0, 1.0) + c.operator_reputation.clamp(0.0, 1.0)) / 2.0;
    let on_operator = r.per_operator.get(&c.operator).copied().unwrap_or(0);
    let spread = 1.0 / (1.0 + f64::from(on_operator));
    let left = c.capacity.minus(c.used.plus(r.need));
    let mut free = 0.0;
    let mut dims = 0.0;
    for (l, cap) in
        [(left.cpu, c.capacity.cpu), (left.memory, c.capacity.memory), (left.storage, c.capacity.storage)]
    {
        if cap > 0 {
            free += l as f64 / cap as f64;
            dims += 1.0;
        }
    }
    let free = if dims > 0.0 { free / dims } else { 0.0 };
    w.reputation * reputation + w.spread * spread + w.free_capacity * free
}

/// Why a replica could not be placed: how many nodes each filter rejected.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Unschedulable {
    /// Nodes considered.
    pub nodes: usize,
    /// Nodes rejected, by the first filter each failed.
    pub rejected: BTreeMap<Reason, usize>,
}

impl fmt::Display for Unschedulable {
    /// `0/5 nodes available: 3 nodes: jurisdiction not allowed; 2 nodes: operator denied`, and
    /// in parentheses what to do about the reasons that need saying (`Reason::hint`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nodes == 0 {
            return f.write_str("no nodes registered");
        }
        write!(f, "0/{} nodes available: ", self.nodes)?;
        let mut parts: Vec<(&Reason, &usize)> = self.rejected.iter().collect();
        parts.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let parts: Vec<String> = parts
            .into_iter()
            .map(|(reason, n)| format!("{n} node{}: {reason}", if *n == 1 { "" } else { "s" }))
            .collect();
        f.write_str(&parts.join("; "))?;
        for hint in self.rejected.keys().filter_map(|r| r.hint()) {
            write!(f, " ({hint})")?;
        }
        Ok(())
    }
}

/// The index of the best node for `r`: of the nodes every filter accepts, the highest score,
/// ties going to the smallest name.
pub fn place(candidates: &[Candidate], r: &Request<'_>, w: &Weights) -> Result<usize, Unschedulable> {
    place_explained(candidates, r, w).map(|(i, _)| i)
}

/// Why a node was chosen: its score among the eligible, and what the others failed.
#[derive(Clone, Debug, PartialEq)]
pub struct Chosen {
    /// The chosen node's score.
    pub score: f64,
    /// Nodes that passed every filter.
    pub eligible: usize,
    /// Nodes considered, and the first filter each rejected one failed.
    pub considered: Unschedulable,
}

impl fmt::Display for Chosen {
    /// `highest score (0.82) of 2 eligible nodes of 5; rejected: 3 nodes: jurisdiction not allowed`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.considered.nodes;
        write!(
            f,
            "highest score ({:.2}) of {} eligible node{} of {n}",
            self.score,
            self.eligible,
            if self.eligible == 1 { "" } else { "s" }
        )?;
        if !self.considered.rejected.is_empty() {
            let parts: Vec<String> = self
                .considered
                .rejected
                .iter()
                .map(|(reason, n)| format!("{n} node{}: {reason}", if *n == 1 { "" } else { "s" }))
                .collect();
            write!(f, "; rejected: {}", parts.join("; "))?;
        }
        Ok(())
    }
}

/// [`place`], with why the chosen node won (for the log line of a binding).
pub fn place_explained(
    candidates: &[Candidate],
    r: &Request<'_>,
    w: &Weights,
) -> Result<(usize, Chosen), Unschedulable> {
    let mut best: Option<(usize, f64)> = None;
    let mut why = Unschedulable { nodes: candidates.len(), rejected: BTreeMap::new() };
    for (i, c) in candidates.iter().enumerate() {
        match filter(c, r) {
            Err(reason) => *why.rejected.entry(reason).or_insert(0) += 1,
            Ok(()) => {
                let s = score(c, r, w);
                let better = match best {
                    None => true,
                    Some((j, bs)) => s > bs || (s == bs && c.name < candidates[j].name),
                };
                if better {
                    best = Some((i, s));
                }
            }
        }
    }
    match best {
        Some((i, score)) => {
            let eligible = candidates.len() - why.rejected.values().sum::<usize>();
            Ok((i, Chosen { score, eligible, considered: why }))
        }
        None => Err(why),
    }
}

#[cfg(test)]
mod tests;
