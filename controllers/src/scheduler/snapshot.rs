//! From cached objects to the candidates placement sees: a pure function of the objects and
//! the time, tested without I/O.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use api::kinds::{
    AttestationSpec, CreditGrantSpec, NodeConditionType, NodeOfferSpec, NodeSpec, Protocol, ReplicaSpec,
    ReputationSpec, SubjectKind,
};
use api::meta::ConditionStatus;
use chrono::{DateTime, Utc};

use crate::credits::meter::Rates;

use super::core::{
    Amount, Attesters, Candidate, Constraints, Money, Offer, Policy, Reason, Request, Unschedulable, Weights,
};
use client::resource::Kube;

/// Whether a node's condition Ready is True.
pub fn is_ready(node: &Kube<NodeSpec>) -> bool {
    node.status.as_ref().is_some_and(|s| {
        s.conditions.iter().any(|c| c.type_ == NodeConditionType::Ready && c.status == ConditionStatus::True)
    })
}

/// Resources each node's bound, unfinished replicas reserve.
pub fn usage<'a>(replicas: impl IntoIterator<Item = &'a Kube<ReplicaSpec>>) -> HashMap<String, Amount> {
    let mut used: HashMap<String, Amount> = HashMap::new();
    for r in replicas {
        let finished = r.status.as_ref().is_some_and(|s| s.phase.is_terminal());
        if let (Some(node), false) = (&r.spec.node_name, finished) {
            let e = used.entry(node.clone()).or_default();
            *e = e.plus(Amount::of(&r.spec.container.resources));
        }
    }
    used
}

/// The objects placement reads, as they are in the caches.
#[derive(Debug, Default)]
pub struct Objects {
    /// Every Node.
    pub nodes: Vec<Arc<Kube<NodeSpec>>>,
    /// Every NodeOffer.
    pub offers: Vec<Arc<Kube<NodeOfferSpec>>>,
    /// Every Reputation.
    pub reputations: Vec<Arc<Kube<ReputationSpec>>>,
    /// Every Attestation.
    pub attestations: Vec<Arc<Kube<AttestationSpec>>>,
    /// The control plane's members (did:keys), from `GET /members`.
    pub members: Arc<BTreeSet<String>>,
}

/// The offer a node is placed (and metered) under: of its offers signed by its operator, the
/// smallest-named, so the choice is deterministic.
pub fn operator_offer<'a>(
    node: &Kube<NodeSpec>,
    offers: impl IntoIterator<Item = &'a Kube<NodeOfferSpec>>,
) -> Option<&'a Kube<NodeOfferSpec>> {
    let operator = node.spec.operator.as_str();
    offers
        .into_iter()
        .filter(|o| o.spec.node == node.name() && o.signer() == Some(operator) && !o.is_deleting())
        .min_by(|a, b| a.name().cmp(b.name()))
}

/// The candidates, sorted by name: each node with its uid, its offer (only one signed by the
/// node's operator counts), capacity (the offer's, within the node's), usage, reputations (none
/// counts as 0), whether its operator is a member, and the independent attesters of its operator
/// (not itself, not expired at `now`) sorted by their standing (member, reputation).
pub fn candidates(objects: &Objects, used: &HashMap<String, Amount>, now: DateTime<Utc>) -> Vec<Candidate> {
    // Keyed by (is a node, subject).
    let mut reputation: HashMap<(bool, &str), f64> = HashMap::new();
    // An attester's standing: its composite, if it holds global trust (someone trusted vouches
    // for it; see the reputation controller), else none — uptime alone earns no voice.
    let mut standing: HashMap<&str, f64> = HashMap::new();
    for r in &objects.reputations {
        let composite = r.status.as_ref().map_or(0.0, |s| s.composite);
        reputation.insert((r.spec.subject_kind == SubjectKind::Node, r.spec.subject.as_str()), composite);
        if r.spec.subject_kind == SubjectKind::Operator
            && r.status.as_ref().is_some_and(|s| s.attestation_weight > 0.0)
        {
            standing.insert(r.spec.subject.as_str(), composite);
        }
    }
    let mut attested: HashMap<&str, BTreeSet<&str>> = HashMap::new();
    for a in &objects.attestations {
        let live = a.spec.expires.is_none_or(|t| t.0 > now);
        if let (SubjectKind::Operator, true, Some(signer)) = (a.spec.subject_kind, live, a.signer())
            && signer != a.spec.subject
        {
            attested.entry(a.spec.subject.as_str()).or_default().insert(signer);
        }
    }
    // Sorted once per operator, shared by all of its nodes.
    let member = |did: &str| objects.members.contains(did);
    let attesters: HashMap<&str, Arc<Attesters>> = attested
        .into_iter()
        .map(|(operator, by)| {
            let sorted = Attesters::new(by, member, |did| standing.get(did).copied().unwrap_or(0.0));
            (operator, Arc::new(sorted))
        })
        .collect();
    // Each node's offers signed by its operator, found by node name.
    let mut offers: HashMap<&str, Vec<&Kube<NodeOfferSpec>>> = HashMap::new();
    for o in objects.offers.iter().filter(|o| !o.is_deleting()) {
        offers.entry(o.spec.node.as_str()).or_default().push(o);
    }
    let mut out: Vec<Candidate> = objects
        .nodes
        .iter()
        .filter(|n| !n.is_deleting())
        .map(|n| {
            let operator = n.spec.operator.as_str();
            // The smallest-named offer signed by the operator, so the choice is deterministic.
            let offer = operator_offer(n, offers.get(n.name()).into_iter().flatten().copied());
            let node_cap = Amount::of(&n.spec.capacity);
            let capacity = offer.map_or(Amount::default(), |o| {
                let offered = Amount::of(&o.spec.resources);
                let within = |offered: u64, cap: u64| match (offered, cap) {
                    (0, c) => c,
                    (o, 0) => o,
                    (o, c) => o.min(c),
                };
                Amount {
                    cpu: within(offered.cpu, node_cap.cpu),
                    memory: within(offered.memory, node_cap.memory),
                    storage: within(offered.storage, node_cap.storage),
                }
            });
            Candidate {
                name: n.name().to_owned(),
                uid: n.uid().to_owned(),
                operator: operator.to_owned(),
                operator_is_member: member(operator),
                ready: is_ready(n),
                unschedulable: n.spec.unschedulable,
                offer: offer.map(|o| Offer {
                    jurisdiction: o.spec.jurisdiction.as_str().to_owned(),
                    labels: o.metadata.labels.clone().unwrap_or_default(),
                    rates: Rates::of(&o.spec.price),
                    host_ports: (o.spec.host_ports().min, o.spec.host_ports().max),
                }),
                capacity,
                used: used.get(n.name()).copied().unwrap_or_default(),
                node_reputation: reputation.get(&(true, n.name())).copied().unwrap_or(0.0),
                operator_reputation: reputation.get(&(false, operator)).copied().unwrap_or(0.0),
                attesters: attesters.get(operator).cloned().unwrap_or_default(),
                ports_taken: BTreeSet::new(),
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// What bound replicas reserve on each node, and where each workload's replicas are: kept up to
/// date from the replica watch's events, so a placement costs O(nodes), not O(replicas).
#[derive(Debug, Default)]
pub struct Usage {
    by_uid: HashMap<String, Reserved>,
    nodes: HashMap<String, Amount>,
    /// node → host port → how many replicas there publish it (more than one only when two
    /// were bound before either was seen).
    ports: HashMap<String, HashMap<(u16, Protocol), u32>>,
    /// (namespace, workload) → node → replicas of it there (not being deleted).
    workloads: HashMap<(String, String), HashMap<String, u32>>,
    /// The objects of a relist under way.
    relist: Option<Vec<Kube<ReplicaSpec>>>,
}

#[derive(Debug)]
struct Reserved {
    node: String,
    amount: Amount,
    ports: Vec<(u16, Protocol)>,
    workload: Option<(String, String)>,
}

impl Usage {
    /// Follows one watch event of Replicas.
    pub fn apply(&mut self, event: &kube::runtime::watcher::Event<Kube<ReplicaSpec>>) {
        use kube::runtime::watcher::Event;
        match event {
            Event::Init => self.relist = Some(Vec::new()),
            Event::InitApply(r) => self.relist.get_or_insert_with(Vec::new).push(r.clone()),
            Event::InitDone => {
                let all = self.relist.take().unwrap_or_default();
                *self = Self::default();
                for r in &all {
                    self.add(r);
                }
            }
            Event::Apply(r) => {
                self.remove(r.uid());
                self.add(r);
            }
            Event::Delete(r) => self.remove(r.uid()),
        }
    }

    fn add(&mut self, r: &Kube<ReplicaSpec>) {
        let finished = r.status.as_ref().is_some_and(|s| s.phase.is_terminal());
        let (Some(node), false) = (&r.spec.node_name, finished) else { return };
        let amount = Amount::of(&r.spec.container.resources);
        let e = self.nodes.entry(node.clone()).or_default();
        *e = e.plus(amount);
        let ports: Vec<(u16, Protocol)> = api::kinds::host_ports(&r.spec.container.ports).collect();
        for p in &ports {
            *self.ports.entry(node.clone()).or_default().entry(*p).or_default() += 1;
        }
        let workload = (!r.is_deleting())
            .then(|| (r.namespace().unwrap_or("default").to_owned(), r.spec.workload.clone()));
        if let Some(w) = &workload {
            *self.workloads.entry(w.clone()).or_default().entry(node.clone()).or_default() += 1;
        }
        self.by_uid.insert(r.uid().to_owned(), Reserved { node: node.clone(), amount, ports, workload });
    }

    fn remove(&mut self, uid: &str) {
        let Some(old) = self.by_uid.remove(uid) else { return };
        if let Some(e) = self.nodes.get_mut(&old.node) {
            *e = e.minus(old.amount);
        }
        if let Some(taken) = self.ports.get_mut(&old.node) {
            for p in &old.ports {
                if let Some(n) = taken.get_mut(p) {
                    *n -= 1;
                    if *n == 0 {
                        taken.remove(p);
                    }
                }
            }
            if taken.is_empty() {
                self.ports.remove(&old.node);
            }
        }
        if let Some(w) = old.workload
            && let Some(nodes) = self.workloads.get_mut(&w)
            && let Some(n) = nodes.get_mut(&old.node)
        {
            *n = n.saturating_sub(1);
        }
    }

    /// Whether the replica with this uid is counted (bound, unfinished).
    pub fn counts(&self, uid: &str) -> bool {
        self.by_uid.contains_key(uid)
    }

    /// What replicas bound to `node` reserve.
    pub fn on(&self, node: &str) -> Amount {
        self.nodes.get(node).copied().unwrap_or_default()
    }

    /// The host ports replicas bound to `node` publish.
    pub fn ports_on(&self, node: &str) -> impl Iterator<Item = (u16, Protocol)> + '_ {
        self.ports.get(node).into_iter().flat_map(|m| m.keys().copied())
    }

    /// Where the replicas of workload `name` in `namespace` are: node → how many.
    pub fn of_workload(&self, namespace: &str, name: &str) -> Option<&HashMap<String, u32>> {
        self.workloads.get(&(namespace.to_owned(), name.to_owned()))
    }
}

/// A credit line as placement counts it: who grants it, how much, until when.
#[derive(Clone, Debug, PartialEq)]
pub struct Line {
    /// The granter (the CreditGrant's signer).
    pub granter: String,
    /// The limit, in micro-credits.
    pub limit: i64,
    /// When it ends.
    pub expires: Option<DateTime<Utc>>,
}

/// CreditGrants by grantee, kept from the grant watch's events, so the credit a workload's
/// owner has costs O(the owner's own grants) per placement, not O(every grant): anyone may
/// write grants, by the thousand.
#[derive(Debug, Default)]
pub struct Grants {
    by_uid: HashMap<String, String>,
    by_grantee: HashMap<String, HashMap<String, Line>>,
    relist: Option<Vec<Kube<CreditGrantSpec>>>,
}

impl Grants {
    /// Follows one watch event of CreditGrants.
    pub fn apply(&mut self, event: &kube::runtime::watcher::Event<Kube<CreditGrantSpec>>) {
        use kube::runtime::watcher::Event;
        match event {
            Event::Init => self.relist = Some(Vec::new()),
            Event::InitApply(g) => self.relist.get_or_insert_with(Vec::new).push(g.clone()),
            Event::InitDone => {
                let all = self.relist.take().unwrap_or_default();
                *self = Self::default();
                for g in &all {
                    self.add(g);
                }
            }
            Event::Apply(g) => {
                self.remove(g.uid());
                self.add(g);
            }
            Event::Delete(g) => self.remove(g.uid()),
        }
    }

    fn add(&mut self, g: &Kube<CreditGrantSpec>) {
        let Some(granter) = g.signer() else { return };
        if g.is_deleting() {
            return;
        }
        let grantee = g.spec.grantee.as_str().to_owned();
        let line = Line {
            granter: granter.to_owned(),
            limit: g.spec.limit.micros().max(0),
            expires: g.spec.expires.as_ref().map(|t| t.0),
        };
        self.by_grantee.entry(grantee.clone()).or_default().insert(g.uid().to_owned(), line);
        self.by_uid.insert(g.uid().to_owned(), grantee);
    }

    fn remove(&mut self, uid: &str) {
        let Some(grantee) = self.by_uid.remove(uid) else { return };
        if let Some(lines) = self.by_grantee.get_mut(&grantee) {
            lines.remove(uid);
            if lines.is_empty() {
                self.by_grantee.remove(&grantee);
            }
        }
    }

    /// The lines granted to `grantee`.
    pub fn to(&self, grantee: &str) -> impl Iterator<Item = &Line> {
        self.by_grantee.get(grantee).into_iter().flat_map(HashMap::values)
    }
}

/// The candidates without usage, built from the cached objects once and reused until they
/// change; `place` adds the usage of the moment.
#[derive(Debug)]
pub struct Topology {
    candidates: Vec<Candidate>,
    index: HashMap<String, usize>,
    /// Live attestations of operators: attester → the operators it vouches for.
    vouches: HashMap<String, Vec<String>>,
    /// The control plane's members.
    members: Arc<BTreeSet<String>>,
    /// The reach of the members and each set of named operators, computed once per topology.
    reach: HashMap<BTreeSet<String>, Arc<Reach>>,
}

/// Who `roots` reach along live attestations, each with whom it was first reached from (a
/// breadth-first tree): positive personalized trust, EigenTrust's support. Fresh keys that only
/// vouch for each other are never reached.
#[derive(Debug, Default, PartialEq)]
pub struct Reach {
    /// Reached identity → the one it was reached from (`None` for a root).
    parent: HashMap<String, Option<String>>,
}

impl Reach {
    /// The reach of `roots` along `vouches` (attester → the operators it vouches for).
    pub fn of(vouches: &HashMap<String, Vec<String>>, roots: impl IntoIterator<Item = String>) -> Self {
        let mut parent: HashMap<String, Option<String>> = HashMap::new();
        let mut queue: std::collections::VecDeque<String> = std::collections::VecDeque::new();
        for r in roots {
            if parent.insert(r.clone(), None).is_none() {
                queue.push_back(r);
            }
        }
        while let Some(a) = queue.pop_front() {
            for s in vouches.get(&a).into_iter().flatten() {
                if !parent.contains_key(s) {
                    parent.insert(s.clone(), Some(a.clone()));
                    queue.push_back(s.clone());
                }
            }
        }
        Self { parent }
    }

    /// Whether `a` is reached without `subject` on its path: an operator's own vouches never
    /// give standing to attesters of that operator (a vouched operator cannot mint attesters
    /// of its own). Conservative: only the breadth-first path is looked at.
    pub fn reaches_without(&self, a: &str, subject: &str) -> bool {
        let mut at = a;
        for _ in 0..=self.parent.len() {
            if at == subject {
                return false;
            }
            match self.parent.get(at) {
                None => return false,
                Some(None) => return true,
                Some(Some(p)) => at = p,
            }
        }
        false
    }

    /// Identities reached, roots included.
    pub fn len(&self) -> usize {
        self.parent.len()
    }

    /// Whether nobody is reached.
    pub fn is_empty(&self) -> bool {
        self.parent.is_empty()
    }
}

/// A placement not yet visible in the cache: node, reservation, and its workload.
#[derive(Clone, Debug)]
pub struct Assumed {
    /// The node.
    pub node: String,
    /// What it reserves.
    pub amount: Amount,
    /// The host ports it publishes.
    pub ports: Vec<(u16, Protocol)>,
    /// (namespace, workload).
    pub workload: (String, String),
}

impl Topology {
    /// The candidates of `objects` at `now`.
    pub fn build(objects: &Objects, now: DateTime<Utc>) -> Self {
        let candidates = candidates(objects, &HashMap::new(), now);
        let index = candidates.iter().enumerate().map(|(i, c)| (c.name.clone(), i)).collect();
        let mut vouches: HashMap<String, Vec<String>> = HashMap::new();
        for a in &objects.attestations {
            let live = a.spec.expires.is_none_or(|t| t.0 > now);
            if let (SubjectKind::Operator, true, Some(signer)) = (a.spec.subject_kind, live, a.signer())
                && signer != a.spec.subject
            {
                vouches.entry(signer.to_owned()).or_default().push(a.spec.subject.clone());
            }
        }
        Self { candidates, index, vouches, members: objects.members.clone(), reach: HashMap::new() }
    }

    /// Who is vouched for under a policy naming `named`: reached from the members and them.
    fn reach(&mut self, named: &BTreeSet<String>) -> Arc<Reach> {
        if let Some(r) = self.reach.get(named) {
            return r.clone();
        }
        let roots = self.members.iter().chain(named.iter()).cloned();
        let r = Arc::new(Reach::of(&self.vouches, roots));
        // Bounded: one entry per distinct set of named operators among the policies placed for.
        if self.reach.len() < 1024 {
            self.reach.insert(named.clone(), r.clone());
        }
        r
    }

    /// Places one replica as `ask` says, counting what `usage` and the `assumed` placements
    /// reserve and where they are.
    pub fn place<'a>(
        &mut self,
        usage: &Usage,
        assumed: impl Iterator<Item = &'a Assumed> + Clone,
        ask: &Ask<'_>,
        weights: &Weights,
    ) -> Result<Placed, Unschedulable> {
        let workload = ask.workload;
        let assumed_again = assumed.clone();
        let publishes = !ask.constraints.host_ports.is_empty();
        for c in &mut self.candidates {
            c.used = usage.on(&c.name);
            c.ports_taken.clear();
            if publishes {
                c.ports_taken.extend(usage.ports_on(&c.name));
            }
        }
        let mut per_operator: HashMap<String, u32> = HashMap::new();
        for a in assumed {
            if let Some(&i) = self.index.get(&a.node) {
                let c = &mut self.candidates[i];
                c.used = c.used.plus(a.amount);
                if publishes {
                    c.ports_taken.extend(a.ports.iter().copied());
                }
                if a.workload.0 == workload.0 && a.workload.1 == workload.1 {
                    *per_operator.entry(c.operator.clone()).or_default() += 1;
                }
            }
        }
        for (node, n) in usage.of_workload(workload.0, workload.1).into_iter().flatten() {
            if let Some(&i) = self.index.get(node) {
                *per_operator.entry(self.candidates[i].operator.clone()).or_default() += n;
            }
        }
        // What the policy's replicas cost per hour now, placed and assumed.
        let mut per_hour: i64 = 0;
        let mut add = |node: &str, n: u32, need: Amount| {
            if let Some(&i) = self.index.get(node) {
                let cost = Money::cost(&self.candidates[i], ask.signer, need).saturating_mul(i64::from(n));
                per_hour = per_hour.saturating_add(cost);
            }
        };
        for (name, need) in ask.under_policy {
            for (node, n) in usage.of_workload(workload.0, name).into_iter().flatten() {
                add(node, *n, *need);
            }
        }
        for a in assumed_again {
            if a.workload.0 == workload.0 && ask.under_policy.iter().any(|(name, _)| *name == a.workload.1) {
                add(&a.node, 1, a.amount);
            }
        }
        let money = Money { available: ask.available.clone(), per_hour, spent: ask.spent };
        let policy = ask.policy.map(|p| {
            let mut p = p.clone();
            if p.required_attestations > 0 {
                p.reach = self.reach(&p.allowed_operators);
            }
            p
        });
        let request = Request {
            need: ask.need,
            policy: policy.as_ref(),
            signer: ask.signer,
            constraints: ask.constraints,
            per_operator: &per_operator,
            money: &money,
            avoid: ask.avoid,
        };
        let (i, chosen) = super::core::place_explained(&self.candidates, &request, weights)?;
        let c = &self.candidates[i];
        Ok(Placed { node: c.name.clone(), uid: c.uid.clone(), why: chosen.to_string() })
    }
}

impl Topology {
    /// The nodes a workload's policy, signer and own constraints admit, whatever their state
    /// now: each candidate as if it were ready, schedulable, empty and asked for nothing, so
    /// what is left is who may run the workload at all (for `ui seal`: the nodes its sealed
    /// values are sealed to). The same filters as placement, never other rules. Every
    /// candidate, with the first filter it failed.
    pub fn qualifying(
        &mut self,
        policy: Option<&Policy>,
        signer: Option<&str>,
        constraints: &Constraints,
    ) -> Vec<(&Candidate, Result<(), Reason>)> {
        let policy = policy.map(|p| {
            let mut p = p.clone();
            if p.required_attestations > 0 {
                p.reach = self.reach(&p.allowed_operators);
            }
            p
        });
        let (per_operator, money, avoid) = (HashMap::new(), Money::default(), BTreeSet::new());
        let request = Request {
            need: Amount::default(),
            policy: policy.as_ref(),
            signer,
            constraints,
            per_operator: &per_operator,
            money: &money,
            avoid: &avoid,
        };
        self.candidates.iter().map(|c| (c, super::core::filter(&c.idle(), &request))).collect()
    }

    /// Whether node `node` still qualifies for a workload under `policy`, `signer` and
    /// `constraints`, by the rules of [`Self::qualifying`] (who may run it at all: not whether
    /// the node is ready, full or paid for now). `None` when there is no such node.
    pub fn qualifies(
        &mut self,
        node: &str,
        policy: Option<&Policy>,
        signer: Option<&str>,
        constraints: &Constraints,
    ) -> Option<Result<(), Reason>> {
        let &i = self.index.get(node)?;
        let policy = policy.map(|p| {
            let mut p = p.clone();
            if p.required_attestations > 0 {
                p.reach = self.reach(&p.allowed_operators);
            }
            p
        });
        let (per_operator, money, avoid) = (HashMap::new(), Money::default(), BTreeSet::new());
        // The workload's per-operator limit counts replicas being placed, not ones running.
        let constraints = Constraints { max_per_operator: None, ..constraints.clone() };
        let request = Request {
            need: Amount::default(),
            policy: policy.as_ref(),
            signer,
            constraints: &constraints,
            per_operator: &per_operator,
            money: &money,
            avoid: &avoid,
        };
        Some(super::core::filter(&self.candidates[i].idle(), &request))
    }
}

/// What one replica asks of placement.
#[derive(Clone, Copy, Debug)]
pub struct Ask<'a> {
    /// Its workload: (namespace, name).
    pub workload: (&'a str, &'a str),
    /// What it reserves.
    pub need: Amount,
    /// Its owner's TrustPolicy, if the workload names one.
    pub policy: Option<&'a Policy>,
    /// The did:key that signed the workload.
    pub signer: Option<&'a str>,
    /// The workload's own placement constraints.
    pub constraints: &'a Constraints,
    /// Micro-credits its owner may still spend with each operator.
    pub available: &'a HashMap<String, i64>,
    /// Micro-credits its policy's workloads have spent in all.
    pub spent: i64,
    /// The workloads (in its namespace) under its policy, with what each replica of them
    /// reserves: what they run now counts against `spending.maxPerHour`.
    pub under_policy: &'a [(String, Amount)],
    /// Nodes (by uid) that could not open the workload's sealed values for this template.
    pub avoid: &'a BTreeSet<String>,
}

/// Where a replica goes: the Node's name and uid, both written in its binding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placed {
    /// `spec.nodeName`.
    pub node: String,
    /// `spec.nodeUid`.
    pub uid: String,
    /// Why this node (for the log): its score among the eligible, what the others failed.
    pub why: String,
}

#[cfg(test)]
mod tests {
    use api::identity::Did;
    use ed25519_dalek::SigningKey;
    use serde_json::json;

    use super::*;

    fn did(seed: u8) -> String {
        Did::from_key(&SigningKey::from_bytes(&[seed; 32]).verifying_key()).as_str().to_owned()
    }

    fn node(name: &str, operator: &str, ready: bool) -> Arc<Kube<NodeSpec>> {
        let mut peer = vec![0x12, 0x20];
        peer.extend_from_slice(&[7; 32]);
        Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "univrs.io/v1", "kind": "Node", "metadata": { "name": name, "uid": format!("uid-{name}") },
                "spec": {
                    "peerId": bs58::encode(peer).into_string(), "operator": operator, "nodeKey": did(99),
                    "ageRecipient": format!("age1{}", "q".repeat(58)),
                    "capacity": { "cpu": "4", "memory": "8Gi", "storage": "10Gi" },
                },
                "status": { "conditions": [{ "type": "Ready", "status": if ready { "True" } else { "False" } }] },
            }))
            .unwrap(),
        )
    }

    #[test]
    fn the_nodes_a_workload_may_run_on_are_the_filters_verdict_whatever_their_state() {
        let (alice, bob, mallory) = (did(1), did(2), did(3));
        let objects = Objects {
            nodes: vec![
                node("a1", &alice, true),
                node("a2", &alice, false),
                node("b1", &bob, true),
                node("m1", &mallory, true),
            ],
            offers: vec![
                offer("a1", "a1", &alice, "1"),
                offer("a2", "a2", &alice, "1"),
                offer("b1", "b1", &bob, "1"),
                offer("m1", "m1", &mallory, "1"),
            ],
            reputations: vec![],
            attestations: vec![],
            members: Arc::default(),
        };
        let mut topology = Topology::build(&objects, Utc::now());
        let admitted = |t: &mut Topology, policy: Option<&Policy>| -> Vec<String> {
            let k = Constraints::default();
            t.qualifying(policy, Some(&alice), &k)
                .into_iter()
                .filter(|(_, v)| v.is_ok())
                .map(|(c, _)| c.name.clone())
                .collect()
        };
        // Without a policy: the signer's own nodes, the one not ready now included.
        assert_eq!(admitted(&mut topology, None), ["a1", "a2"]);
        // A policy naming bob too.
        let policy = Policy { allowed_operators: [alice.clone(), bob.clone()].into(), ..Policy::default() };
        assert_eq!(admitted(&mut topology, Some(&policy)), ["a1", "a2", "b1"]);
        let verdicts = topology.qualifying(Some(&policy), Some(&alice), &Constraints::default());
        let m1 = verdicts.iter().find(|(c, _)| c.name == "m1").unwrap();
        assert_eq!(m1.1, Err(Reason::OperatorNotAllowed));
    }

    fn offer(name: &str, node: &str, signer: &str, cpu: &str) -> Arc<Kube<NodeOfferSpec>> {
        Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "univrs.io/v1", "kind": "NodeOffer",
                "metadata": { "name": name, "labels": { "disk": "ssd" }, "annotations": { "univrs.io/signer": signer } },
                "spec": { "node": node, "resources": { "cpu": cpu, "memory": "16Gi" }, "jurisdiction": "DE" },
            }))
            .unwrap(),
        )
    }

    fn attestation(signer: &str, subject: &str, expires: Option<&str>) -> Arc<Kube<AttestationSpec>> {
        let mut spec = json!({ "subjectKind": "Operator", "subject": subject });
        if let Some(t) = expires {
            spec["expires"] = json!(t);
        }
        Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "univrs.io/v1", "kind": "Attestation",
                "metadata": { "name": format!("a-{signer}"), "annotations": { "univrs.io/signer": signer } },
                "spec": spec,
            }))
            .unwrap(),
        )
    }

    fn reputation(kind: &str, subject: &str, composite: f64) -> Arc<Kube<ReputationSpec>> {
        reputation_with_trust(kind, subject, composite, composite)
    }

    fn reputation_with_trust(
        kind: &str,
        subject: &str,
        composite: f64,
        trust: f64,
    ) -> Arc<Kube<ReputationSpec>> {
        Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "univrs.io/v1", "kind": "Reputation", "metadata": { "name": "r" },
                "spec": { "subjectKind": kind, "subject": subject },
                "status": { "composite": composite, "attestationWeight": trust },
            }))
            .unwrap(),
        )
    }

    #[test]
    fn candidates_take_only_offers_signed_by_the_operator_and_cap_them_by_the_node() {
        let (op, other) = (did(1), did(2));
        let objects = Objects {
            nodes: vec![node("n2", &op, false), node("n1", &op, true)],
            offers: vec![
                offer("forged", "n1", &other, "64"),
                offer("n1", "n1", &op, "64"),
                offer("n2", "n2", &other, "1"),
            ],
            ..Objects::default()
        };
        let used = HashMap::from([("n1".to_owned(), Amount { cpu: 500, memory: 0, storage: 0 })]);
        let c = candidates(&objects, &used, Utc::now());
        assert_eq!(c.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["n1", "n2"]);
        assert_eq!(c[0].uid, "uid-n1");
        assert!(c[0].ready && !c[1].ready);
        assert_eq!(c[0].offer.as_ref().unwrap().labels.get("disk").map(String::as_str), Some("ssd"));
        // The offer asks 64 cores of a 4-core node: 4; memory 16Gi of 8Gi: 8Gi; storage unset: the node's.
        assert_eq!(c[0].capacity, Amount { cpu: 4000, memory: 8 << 30, storage: 10 << 30 });
        assert_eq!(c[0].used.cpu, 500);
        // n2's only offer is signed by someone else: no offer.
        assert!(c[1].offer.is_none());
    }

    #[test]
    fn reputation_defaults_to_zero_and_attesters_are_independent_and_live() {
        let (op, a, b) = (did(1), did(2), did(3));
        let now = Utc::now();
        let objects = Objects {
            nodes: vec![node("n1", &op, true)],
            reputations: vec![reputation("Operator", &op, 0.8)],
            attestations: vec![
                attestation(&a, &op, None),
                attestation(&a, &op, None),  // the same attester twice
                attestation(&op, &op, None), // self-attestation
                attestation(&b, &op, Some("2000-01-01T00:00:00Z")), // expired
            ],
            ..Objects::default()
        };
        let c = candidates(&objects, &HashMap::new(), now);
        assert_eq!(c[0].operator_reputation, 0.8);
        assert_eq!(c[0].node_reputation, 0.0);
        assert_eq!(c[0].attesters.len(), 1);
        assert!(c[0].attesters.others.contains(&a));
    }

    #[test]
    fn attesters_are_sorted_by_their_standing_and_member_operators_marked() {
        let (op, member, reputed, fresh, member_op) = (did(1), did(2), did(3), did(4), did(5));
        // Up and reliable (a high composite), but nobody trusted vouches for it: no voice.
        let untrusted = did(6);
        let objects = Objects {
            nodes: vec![node("n1", &op, true), node("n2", &member_op, true)],
            reputations: vec![
                reputation("Operator", &reputed, 0.4),
                reputation("Node", &fresh, 0.9),
                reputation_with_trust("Operator", &untrusted, 0.9, 0.0),
            ],
            attestations: vec![
                attestation(&member, &op, None),
                attestation(&reputed, &op, None),
                attestation(&fresh, &op, None),
                attestation(&untrusted, &op, None),
            ],
            members: Arc::new([member.clone(), member_op.clone()].into()),
            ..Objects::default()
        };
        let c = candidates(&objects, &HashMap::new(), Utc::now());
        let a = &c[0].attesters;
        assert_eq!(a.members, [member].into());
        assert_eq!(a.reputed, [(reputed, 0.4)].into());
        // A Node's reputation is not its name-sake operator's: a fresh key has none.
        assert_eq!(a.others, [fresh, untrusted].into());
        assert_eq!((c[0].operator_is_member, c[1].operator_is_member), (false, true));
        assert!(c[1].attesters.is_empty());
    }

    #[test]
    fn grants_are_found_by_grantee_as_the_watch_changes_them() {
        use kube::runtime::watcher::Event;
        let grant = |uid: &str, granter: &str, grantee: &str, limit: &str| -> Kube<CreditGrantSpec> {
            serde_json::from_value(json!({
                "apiVersion": "univrs.io/v1", "kind": "CreditGrant",
                "metadata": { "name": uid, "uid": uid, "annotations": { "univrs.io/signer": granter } },
                "spec": { "grantee": grantee, "limit": limit },
            }))
            .unwrap()
        };
        let (a, b, c) = (did(1), did(2), did(3));
        let mut grants = Grants::default();
        grants.apply(&Event::Init);
        grants.apply(&Event::InitApply(grant("g1", &a, &c, "10")));
        grants.apply(&Event::InitApply(grant("g2", &b, &c, "5")));
        grants.apply(&Event::InitDone);
        let limits = |g: &Grants| {
            let mut l: Vec<(String, i64)> = g.to(&c).map(|l| (l.granter.clone(), l.limit)).collect();
            l.sort();
            l
        };
        let mut want = vec![(a.clone(), 10_000_000), (b.clone(), 5_000_000)];
        want.sort();
        assert_eq!(limits(&grants), want);
        // Changed, moved to another grantee, deleted.
        grants.apply(&Event::Apply(grant("g1", &a, &c, "20")));
        grants.apply(&Event::Apply(grant("g2", &b, &a, "5")));
        assert_eq!(limits(&grants), vec![(a.clone(), 20_000_000)]);
        grants.apply(&Event::Delete(grant("g1", &a, &c, "20")));
        assert_eq!(grants.to(&c).count(), 0);
        assert_eq!(grants.to(&a).count(), 1);
    }

    #[test]
    fn the_reach_follows_attestations_from_the_roots_and_never_into_a_ring_of_strangers() {
        let mut vouches: HashMap<String, Vec<String>> = HashMap::new();
        let mut edge = |a: &str, b: &str| vouches.entry(a.to_owned()).or_default().push(b.to_owned());
        edge("member", "a");
        edge("a", "b");
        edge("named", "c");
        for i in 0..100 {
            edge(&format!("sybil{i}"), &format!("sybil{}", (i + 1) % 100));
            edge(&format!("sybil{i}"), "target");
        }
        let from_members = Reach::of(&vouches, ["member".to_owned()]);
        assert!(from_members.reaches_without("b", "target") && !from_members.reaches_without("c", "target"));
        let with_named = Reach::of(&vouches, ["member".to_owned(), "named".to_owned()]);
        assert!(with_named.reaches_without("c", "target"));
        assert!((0..100).all(|i| !with_named.reaches_without(&format!("sybil{i}"), "target")));
        assert_eq!(with_named.len(), 5);
        // b is vouched for through a: it gives a no standing, but does give it to others.
        assert!(!with_named.reaches_without("b", "a"));
        assert!(with_named.reaches_without("b", "c"));
    }

    fn replica(uid: &str, workload: &str, node: Option<&str>, phase: &str) -> Kube<ReplicaSpec> {
        serde_json::from_value(json!({
            "apiVersion": "univrs.io/v1", "kind": "Replica",
            "metadata": { "name": uid, "namespace": "default", "uid": uid },
            "spec": { "workload": workload, "nodeName": node,
                      "container": { "image": "x", "resources": { "cpu": "100m", "memory": "1Mi" } } },
            "status": { "phase": phase },
        }))
        .unwrap()
    }

    #[test]
    fn usage_follows_the_watch_events_as_a_full_recount_would() {
        use kube::runtime::watcher::Event;
        let mut usage = Usage::default();
        let mut all: HashMap<String, Kube<ReplicaSpec>> = HashMap::new();
        let events = vec![
            replica("a", "web", Some("n1"), "Running"),
            replica("b", "web", None, "Pending"),
            replica("b", "web", Some("n2"), "Pending"), // bound
            replica("c", "db", Some("n1"), "Running"),
            replica("a", "web", Some("n1"), "Failed"), // finished: reserves nothing
            replica("d", "web", Some("n2"), "Running"),
        ];
        for r in events {
            usage.apply(&Event::Apply(r.clone()));
            all.insert(r.uid().to_owned(), r);
            let recount = usage_of(all.values());
            for n in ["n1", "n2"] {
                assert_eq!(usage.on(n), recount.get(n).copied().unwrap_or_default(), "{n}");
            }
        }
        assert_eq!(usage.of_workload("default", "web").unwrap().get("n2"), Some(&2));
        usage.apply(&Event::Delete(all["d"].clone()));
        assert_eq!(usage.on("n2").cpu, 100);
        assert_eq!(usage.of_workload("default", "web").unwrap().get("n2"), Some(&1));
        // A relist replaces everything once it is complete.
        usage.apply(&Event::Init);
        usage.apply(&Event::InitApply(replica("z", "web", Some("n3"), "Running")));
        assert_eq!(usage.on("n2").cpu, 100, "a relist under way changes nothing yet");
        usage.apply(&Event::InitDone);
        assert_eq!((usage.on("n1"), usage.on("n2")), (Amount::default(), Amount::default()));
        assert_eq!(usage.on("n3").cpu, 100);
    }

    fn usage_of<'a>(rs: impl Iterator<Item = &'a Kube<ReplicaSpec>>) -> HashMap<String, Amount> {
        usage(rs)
    }

    #[test]
    fn topology_places_as_candidates_rebuilt_from_scratch_would() {
        use kube::runtime::watcher::Event;
        let ops = [did(1), did(2), did(3)];
        let nodes: Vec<_> = (0..6).map(|i| node(&format!("n{i}"), &ops[i % 3], true)).collect();
        let offers: Vec<_> =
            (0..6).map(|i| offer(&format!("n{i}"), &format!("n{i}"), &ops[i % 3], "300m")).collect();
        let objects = Objects { nodes, offers, ..Objects::default() };
        let mut topology = Topology::build(&objects, Utc::now());
        let mut usage = Usage::default();
        let mut placed: Vec<Kube<ReplicaSpec>> = Vec::new();
        let k = Constraints::default();
        let w = Weights::default();
        let policy = Policy::default();
        let need = Amount { cpu: 100, memory: 1 << 20, storage: 0 };
        let available = HashMap::new();
        let ask = Ask {
            workload: ("default", "web"),
            need,
            policy: Some(&policy),
            signer: None,
            constraints: &k,
            available: &available,
            spent: 0,
            under_policy: &[],
            avoid: &BTreeSet::new(),
        };
        for i in 0..20 {
            let fast = topology.place(&usage, [].iter(), &ask, &w);
            // The reference: every candidate and count rebuilt from all replicas.
            let candidates = candidates(&objects, &usage_of(placed.iter()), Utc::now());
            let mut per_operator: HashMap<String, u32> = HashMap::new();
            for r in &placed {
                let c = candidates.iter().find(|c| Some(&c.name) == r.spec.node_name.as_ref()).unwrap();
                *per_operator.entry(c.operator.clone()).or_default() += 1;
            }
            let request = Request {
                need,
                policy: Some(&policy),
                signer: None,
                constraints: &k,
                per_operator: &per_operator,
                money: &Money::default(),
                avoid: &BTreeSet::new(),
            };
            let slow = super::super::core::place(&candidates, &request, &w)
                .map(|i| (candidates[i].name.clone(), candidates[i].uid.clone()));
            assert_eq!(
                fast.as_ref().map(|p| (p.node.clone(), p.uid.clone())),
                slow.as_ref().cloned(),
                "placement {i}"
            );
            let Ok(Placed { node, .. }) = fast else { break };
            let r = replica(&format!("r{i}"), "web", Some(&node), "Running");
            usage.apply(&Event::Apply(r.clone()));
            placed.push(r);
        }
        // 6 nodes × 300m / 100m: the 19th replica finds no room.
        assert_eq!(placed.len(), 18);
    }
}
