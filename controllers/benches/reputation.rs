//! The reputation controller's recompute at network scale: global trust over the attestation
//! graph (EigenTrust power iteration), the evidence and scores of every operator and node, and
//! the scheduler's per-policy reach (who the members and a policy's operators vouch for).
//!
//! `cargo bench -p controllers --bench reputation` prints the figures; it asserts no time.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use api::kinds::Evidence;
use chrono::Utc;
use controllers::reputation::eigentrust;
use controllers::reputation::score::{self, Sample, Scoring};
use controllers::scheduler::snapshot::Reach;

const OPERATORS: usize = 10_000;
const NODES: usize = 1_000;
const ATTESTATIONS: usize = 100_000;
const MEMBERS: usize = 3;

/// A deterministic pseudo-random sequence (no dependency, same graph every run).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) as usize) % n
    }
}

fn main() {
    let ids: Vec<String> = (0..OPERATORS).map(|i| format!("did:key:operator{i:05}")).collect();
    let mut rng = Lcg(42);
    // Most attestations among an honest core reachable from the members; a tenth inside a
    // ring of strangers nobody trusted vouches for.
    let mut edges: Vec<(&str, &str)> = Vec::with_capacity(ATTESTATIONS);
    let honest = OPERATORS * 9 / 10;
    for i in 0..ATTESTATIONS {
        let (a, s) = if i % 10 == 0 {
            (honest + rng.next(OPERATORS - honest), honest + rng.next(OPERATORS - honest))
        } else {
            (rng.next(honest), rng.next(honest))
        };
        edges.push((&ids[a], &ids[s]));
    }
    let members: Vec<&str> = ids[..MEMBERS].iter().map(String::as_str).collect();
    let scoring = Scoring::default();
    let gap = Duration::from_secs(20);

    let mut figures: Vec<(&str, Duration)> = Vec::new();
    for round in 0..3 {
        let start = Instant::now();
        let trust = eigentrust::global_trust(edges.iter().copied(), members.iter().copied(), 0.15);
        let eigen = start.elapsed();

        // Evidence and scores: every node, and every operator (its nodes' samples summed).
        let t0 = Instant::now();
        let now = Utc::now();
        let mut evidence: HashMap<usize, Evidence> = HashMap::with_capacity(OPERATORS + NODES);
        let top = trust.values().copied().fold(0.0, f64::max);
        let mut composite_sum = 0.0;
        for subject in 0..OPERATORS + NODES {
            let e = evidence.entry(subject).or_default();
            let up = u32::from(subject % 7 != 0);
            let s = Sample {
                up,
                down: 1 - up,
                running: 3 * up,
                stranded: 3 * (1 - up),
                honest: 2 * up,
                ..Sample::default()
            };
            score::observe(e, s, now - chrono::Duration::seconds(10), gap, &scoring);
            score::observe(e, s, now, gap, &scoring);
            let operator = &ids[subject % OPERATORS];
            let weight = trust.get(operator.as_str()).copied().unwrap_or(0.0) / top;
            composite_sum += score::scores(e, weight, now, &scoring).composite;
        }
        let scores = t0.elapsed();

        // The scheduler's reach for 10 policies naming 5 operators each (its graph is built
        // with the topology, once per change).
        let mut vouches: HashMap<String, Vec<String>> = HashMap::new();
        for (a, s) in &edges {
            vouches.entry((*a).to_owned()).or_default().push((*s).to_owned());
        }
        let t1 = Instant::now();
        let mut reached = 0;
        for p in 0..10 {
            let roots =
                members.iter().map(|m| (*m).to_owned()).chain((0..5).map(|k| ids[p * 50 + k].clone()));
            reached = Reach::of(&vouches, roots).len();
        }
        let reach = t1.elapsed();
        let strangers_trusted =
            ids[honest..].iter().filter(|i| trust.get(i.as_str()).copied().unwrap_or(0.0) > 0.0).count();
        println!(
            "round {round}: eigentrust {:?} ({} identities, strangers with trust: {strangers_trusted}); \
             evidence+scores of {} subjects {:?} (mean composite {:.3}); reach of 10 policies {:?} ({reached} vouched each, {:?} each)",
            eigen,
            trust.len(),
            OPERATORS + NODES,
            scores,
            composite_sum / (OPERATORS + NODES) as f64,
            reach,
            reach / 10,
        );
        figures.push(("total", eigen + scores + reach));
    }
    let best = figures.iter().map(|(_, d)| *d).min().unwrap_or_default();
    println!(
        "recompute for {OPERATORS} operators, {NODES} nodes, {ATTESTATIONS} attestations: {best:?} (best of 3)"
    );
}
