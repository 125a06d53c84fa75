//! From cached objects to the candidates placement sees: a pure function of the objects and
//! the time, tested without I/O.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use api::kinds::{
    AttestationSpec, NodeConditionType, NodeOfferSpec, NodeSpec, ReplicaSpec, ReputationSpec, SubjectKind,
};
use api::meta::ConditionStatus;
use chrono::{DateTime, Utc};

use super::core::{Amount, Candidate, Offer};
use crate::resource::Kube;

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
}

/// The candidates, sorted by name: each node with its offer (only one signed by the node's
/// operator counts), capacity (the offer's, within the node's), usage, reputations (none counts
/// as 0) and independent attesters of its operator (not itself, not expired at `now`).
pub fn candidates(objects: &Objects, used: &HashMap<String, Amount>, now: DateTime<Utc>) -> Vec<Candidate> {
    // Keyed by (is a node, subject).
    let mut reputation: HashMap<(bool, &str), f64> = HashMap::new();
    for r in &objects.reputations {
        let composite = r.status.as_ref().map_or(0.0, |s| s.composite);
        reputation.insert((r.spec.subject_kind == SubjectKind::Node, r.spec.subject.as_str()), composite);
    }
    let mut attesters: HashMap<&str, BTreeSet<&str>> = HashMap::new();
    for a in &objects.attestations {
        let live = a.spec.expires.is_none_or(|t| t.0 > now);
        if let (SubjectKind::Operator, true, Some(signer)) = (a.spec.subject_kind, live, a.signer())
            && signer != a.spec.subject
        {
            attesters.entry(a.spec.subject.as_str()).or_default().insert(signer);
        }
    }
    let mut out: Vec<Candidate> = objects
        .nodes
        .iter()
        .filter(|n| !n.is_deleting())
        .map(|n| {
            let operator = n.spec.operator.as_str();
            // The smallest-named offer signed by the operator, so the choice is deterministic.
            let offer = objects
                .offers
                .iter()
                .filter(|o| o.spec.node == n.name() && o.signer() == Some(operator) && !o.is_deleting())
                .min_by(|a, b| a.name().cmp(b.name()));
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
                operator: operator.to_owned(),
                ready: is_ready(n),
                unschedulable: n.spec.unschedulable,
                offer: offer.map(|o| Offer {
                    jurisdiction: o.spec.jurisdiction.as_str().to_owned(),
                    labels: o.metadata.labels.clone().unwrap_or_default(),
                }),
                capacity,
                used: used.get(n.name()).copied().unwrap_or_default(),
                node_reputation: reputation.get(&(true, n.name())).copied().unwrap_or(0.0),
                operator_reputation: reputation.get(&(false, operator)).copied().unwrap_or(0.0),
                attesters: attesters.get(operator).map_or(0, |s| u32::try_from(s.len()).unwrap_or(u32::MAX)),
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}
