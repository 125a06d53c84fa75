//! The network's health figures, as a pure function of facts read from the live objects: how
//! decentralized capacity is (the largest operators' share, the Nakamoto coefficient), how many
//! jurisdictions it spans, how reputation is distributed, how fast credit moves. `ui network
//! health` prints them; the credits controller serves them as Prometheus gauges.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use crate::credits::Credits;

/// What is known of one node.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeFacts<'a> {
    /// Its operator's did:key.
    pub operator: &'a str,
    /// Condition Ready is True.
    pub ready: bool,
    /// CPU capacity in millicores (what it offers, within what it has).
    pub cpu_millicores: u64,
    /// The jurisdiction of its operator's offer, if any.
    pub jurisdiction: Option<&'a str>,
}

/// Everything the figures are computed from.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Facts<'a> {
    /// Every node.
    pub nodes: Vec<NodeFacts<'a>>,
    /// Composite reputations of the operators that have one.
    pub operator_reputations: Vec<f64>,
    /// Committed transfers: amount and when decided.
    pub transfers: Vec<(Credits, DateTime<Utc>)>,
    /// Every account's balance.
    pub balances: Vec<Credits>,
}

/// The figures.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    /// Nodes whose condition Ready is True.
    pub nodes_ready: usize,
    /// Nodes registered.
    pub nodes_total: usize,
    /// Operators with a ready node.
    pub operators: usize,
    /// CPU capacity of the ready nodes, in millicores.
    pub capacity_millicores: u64,
    /// The largest operator's share of that capacity (0 to 1).
    pub top_operator_share: f64,
    /// The three largest operators' share of it.
    pub top3_operator_share: f64,
    /// The fewest operators that together hold more than half of it (0 without capacity):
    /// how many would have to collude to control the majority.
    pub nakamoto_coefficient: usize,
    /// Ready nodes per jurisdiction (`unknown` without an offer).
    pub jurisdictions: BTreeMap<String, usize>,
    /// The largest jurisdiction's share of the ready nodes.
    pub top_jurisdiction_share: f64,
    /// How many operators' composite reputation falls in each fifth: [0, 0.2), …, [0.8, 1].
    pub reputation_histogram: [usize; 5],
    /// The mean composite reputation of the operators that have one.
    pub reputation_mean: f64,
    /// Credits moved by committed transfers in the last 24 hours.
    pub credit_volume_24h: Credits,
    /// Committed transfers in the last 24 hours.
    pub transfers_24h: usize,
    /// Credits owed in all (the sum of positive balances; the negative ones sum to minus this).
    pub credit_outstanding: Credits,
    /// Volume over outstanding credit in the last 24 hours (0 when nothing is outstanding).
    pub credit_velocity_24h: f64,
    /// The sum of all balances: always zero (the ledger's invariant, checked live).
    pub balance_sum: Credits,
}

/// The figures of `facts` at `now`.
pub fn health(facts: &Facts<'_>, now: DateTime<Utc>) -> Health {
    let ready: Vec<&NodeFacts<'_>> = facts.nodes.iter().filter(|n| n.ready).collect();
    let mut by_operator: BTreeMap<&str, u64> = BTreeMap::new();
    let mut jurisdictions: BTreeMap<String, usize> = BTreeMap::new();
    for n in &ready {
        *by_operator.entry(n.operator).or_default() += n.cpu_millicores;
        *jurisdictions.entry(n.jurisdiction.unwrap_or("unknown").to_owned()).or_default() += 1;
    }
    let capacity: u64 = by_operator.values().sum();
    let mut shares: Vec<u64> = by_operator.values().copied().collect();
    shares.sort_unstable_by(|a, b| b.cmp(a));
    let share = |n: usize| {
        if capacity == 0 { 0.0 } else { shares.iter().take(n).sum::<u64>() as f64 / capacity as f64 }
    };
    let mut nakamoto = 0;
    let mut held = 0u64;
    for s in &shares {
        if capacity == 0 || held * 2 > capacity {
            break;
        }
        held += s;
        nakamoto += 1;
    }
    let mut histogram = [0usize; 5];
    for r in &facts.operator_reputations {
        histogram[((r.clamp(0.0, 1.0) * 5.0) as usize).min(4)] += 1;
    }
    let reputation_mean = if facts.operator_reputations.is_empty() {
        0.0
    } else {
        facts.operator_reputations.iter().sum::<f64>() / facts.operator_reputations.len() as f64
    };
    let since = now - Duration::hours(24);
    let recent: Vec<Credits> =
        facts.transfers.iter().filter(|(_, at)| *at > since).map(|(c, _)| *c).collect();
    let sum =
        |it: &mut dyn Iterator<Item = Credits>| it.fold(Credits::ZERO, |a, c| a.checked_add(c).unwrap_or(a));
    let volume = sum(&mut recent.iter().copied());
    let outstanding = sum(&mut facts.balances.iter().copied().filter(|b| *b > Credits::ZERO));
    Health {
        nodes_ready: ready.len(),
        nodes_total: facts.nodes.len(),
        operators: by_operator.len(),
        capacity_millicores: capacity,
        top_operator_share: share(1),
        top3_operator_share: share(3),
        nakamoto_coefficient: nakamoto,
        top_jurisdiction_share: if ready.is_empty() {
            0.0
        } else {
            jurisdictions.values().copied().max().unwrap_or(0) as f64 / ready.len() as f64
        },
        jurisdictions,
        reputation_histogram: histogram,
        reputation_mean,
        credit_volume_24h: volume,
        transfers_24h: recent.len(),
        credit_outstanding: outstanding,
        credit_velocity_24h: if outstanding > Credits::ZERO {
            volume.micros() as f64 / outstanding.micros() as f64
        } else {
            0.0
        },
        balance_sum: sum(&mut facts.balances.iter().copied()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node<'a>(operator: &'a str, cpu: u64, j: &'a str) -> NodeFacts<'a> {
        NodeFacts { operator, ready: true, cpu_millicores: cpu, jurisdiction: Some(j) }
    }

    #[test]
    fn capacity_held_by_few_operators_has_a_small_nakamoto_coefficient() {
        let now = Utc::now();
        let facts = Facts {
            nodes: vec![
                node("a", 6000, "DE"),
                node("b", 2000, "FR"),
                node("c", 1000, "FR"),
                node("d", 1000, "CH"),
                NodeFacts { ready: false, ..node("e", 50_000, "US") },
            ],
            operator_reputations: vec![0.1, 0.5, 0.95],
            transfers: vec![
                (Credits::from_micros(3_000_000), now - Duration::hours(1)),
                (Credits::from_micros(9_000_000), now - Duration::hours(30)),
            ],
            balances: vec![Credits::from_micros(5_000_000), Credits::from_micros(-5_000_000)],
        };
        let h = health(&facts, now);
        assert_eq!((h.nodes_ready, h.nodes_total, h.operators), (4, 5, 4));
        assert_eq!(h.capacity_millicores, 10_000);
        assert!((h.top_operator_share - 0.6).abs() < 1e-9);
        assert!((h.top3_operator_share - 0.9).abs() < 1e-9);
        assert_eq!(h.nakamoto_coefficient, 1, "one operator holds more than half");
        assert_eq!(h.jurisdictions.len(), 3);
        assert!((h.top_jurisdiction_share - 0.5).abs() < 1e-9);
        assert_eq!(h.reputation_histogram, [1, 0, 1, 0, 1]);
        assert_eq!((h.credit_volume_24h, h.transfers_24h), (Credits::from_micros(3_000_000), 1));
        assert!((h.credit_velocity_24h - 0.6).abs() < 1e-9);
        assert_eq!(h.balance_sum, Credits::ZERO);
    }

    #[test]
    fn an_even_network_needs_a_majority_to_collude() {
        let ops: Vec<String> = (0..10).map(|i| format!("op{i}")).collect();
        let facts = Facts { nodes: ops.iter().map(|o| node(o, 1000, "DE")).collect(), ..Facts::default() };
        let h = health(&facts, Utc::now());
        assert_eq!(h.nakamoto_coefficient, 6);
        assert_eq!(health(&Facts::default(), Utc::now()).nakamoto_coefficient, 0);
    }
}
