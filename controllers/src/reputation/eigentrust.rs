//! Global trust from attestations, EigenTrust style (Kamvar, Schlosser, Garcia-Molina 2003):
//! the stationary distribution of a random walk that follows attestations and, with
//! probability `damping` at each step (and always from someone who attests nobody), jumps
//! back to a pre-trusted set — the control plane's members.
//!
//! `t = (1 − a)·Cᵀt + a·p`, with `C` each attester's attestations normalized to 1 and `p`
//! uniform over the pre-trusted. Trust only flows out of the pre-trusted set along
//! attestations, so identities nobody with trust vouches for — a thousand fresh keys
//! attesting each other — hold exactly zero, however many there are. The result does not
//! depend on the order attestations come in (they are sorted and deduplicated first).

use std::collections::{BTreeMap, BTreeSet};

/// Iterations at most (each is linear in the attestations); it usually converges in < 50.
const MAX_ITERATIONS: usize = 200;
/// Converged when the L1 change of an iteration is below this.
const EPSILON: f64 = 1e-10;

/// Global trust of every identity in `attestations` (attester, subject) and `pretrusted`,
/// summing to 1 (all 0 when nobody is pre-trusted). Self-attestations are ignored.
pub fn global_trust<'a>(
    attestations: impl IntoIterator<Item = (&'a str, &'a str)>,
    pretrusted: impl IntoIterator<Item = &'a str>,
    damping: f64,
) -> BTreeMap<&'a str, f64> {
    let edges: BTreeSet<(&str, &str)> = attestations.into_iter().filter(|(a, s)| a != s).collect();
    let pre: BTreeSet<&str> = pretrusted.into_iter().collect();
    let ids: BTreeSet<&str> = edges.iter().flat_map(|(a, s)| [*a, *s]).chain(pre.iter().copied()).collect();
    let ids: Vec<&str> = ids.into_iter().collect();
    let index: BTreeMap<&str, usize> = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    let n = ids.len();
    let mut out: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (a, s) in &edges {
        out[index[a]].push(index[s]);
    }
    let trust = iterate(&out, &pre.iter().map(|id| index[id]).collect::<Vec<_>>(), damping);
    ids.into_iter().zip(trust).collect()
}

/// The power iteration over adjacency lists `out` (node → the nodes it attests).
pub fn iterate(out: &[Vec<usize>], pretrusted: &[usize], damping: f64) -> Vec<f64> {
    let n = out.len();
    let mut p = vec![0.0; n];
    if pretrusted.is_empty() {
        return p;
    }
    for &i in pretrusted {
        p[i] = 1.0 / pretrusted.len() as f64;
    }
    let a = damping.clamp(0.0, 1.0);
    let mut t = p.clone();
    let mut next = vec![0.0; n];
    for _ in 0..MAX_ITERATIONS {
        step(out, &p, a, &t, &mut next);
        let change: f64 = next.iter().zip(&t).map(|(x, y)| (x - y).abs()).sum();
        std::mem::swap(&mut t, &mut next);
        if change < EPSILON {
            break;
        }
    }
    t
}

/// One step of the walk: `next = (1 − a)·Cᵀt + a·p`, who attests nobody handing its trust back
/// to the pre-trusted.
fn step(out: &[Vec<usize>], p: &[f64], a: f64, t: &[f64], next: &mut [f64]) {
    next.iter_mut().zip(p).for_each(|(x, p)| *x = a * p);
    let mut dangling = 0.0;
    for (i, targets) in out.iter().enumerate() {
        if targets.is_empty() {
            dangling += t[i];
            continue;
        }
        let share = (1.0 - a) * t[i] / targets.len() as f64;
        for &j in targets {
            next[j] += share;
        }
    }
    for (x, p) in next.iter_mut().zip(p) {
        *x += (1.0 - a) * dangling * p;
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn trust_flows_from_the_members_along_attestations() {
        let t = global_trust([("m", "a"), ("a", "b"), ("x", "y"), ("y", "x")], ["m"], 0.15);
        assert!(t["m"] > t["a"] && t["a"] > t["b"] && t["b"] > 0.0, "{t:?}");
        assert_eq!((t["x"], t["y"]), (0.0, 0.0), "a ring nobody trusted attests holds nothing");
        assert!((t.values().sum::<f64>() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn a_thousand_fresh_keys_vouching_for_each_other_and_for_one_lift_nobody() {
        let keys: Vec<String> = (0..1000).map(|i| format!("sybil{i}")).collect();
        let mut edges: Vec<(&str, &str)> = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            edges.push((k, &keys[(i + 1) % keys.len()]));
            edges.push((k, "target"));
        }
        edges.push(("m", "honest"));
        let t = global_trust(edges, ["m"], 0.15);
        assert_eq!(t["target"], 0.0);
        assert!(keys.iter().all(|k| t[k.as_str()] == 0.0));
        assert!(t["honest"] > 0.1);
    }

    #[test]
    fn no_pre_trusted_means_no_trust() {
        let t = global_trust([("a", "b")], [], 0.15);
        assert!(t.values().all(|x| *x == 0.0));
    }

    fn graph() -> impl Strategy<Value = Vec<(u8, u8)>> {
        proptest::collection::vec((0u8..30, 0u8..30), 0..200)
    }

    proptest! {
        /// The result sums to 1, is the fixed point (converged), and does not depend on the
        /// order of the evidence.
        #[test]
        fn converges_and_is_invariant_to_the_order_of_evidence(edges in graph(), seed in any::<u64>()) {
            let names: Vec<String> = (0..30).map(|i| format!("id{i}")).collect();
            let e: Vec<(&str, &str)> = edges.iter().map(|(a, b)| (names[*a as usize].as_str(), names[*b as usize].as_str())).collect();
            let mut shuffled = e.clone();
            let mut s = seed;
            for i in (1..shuffled.len()).rev() {
                s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                shuffled.swap(i, (s >> 33) as usize % (i + 1));
            }
            let a = global_trust(e.iter().copied(), ["id0", "id1"], 0.15);
            let b = global_trust(shuffled.iter().copied(), ["id1", "id0"], 0.15);
            prop_assert_eq!(&a, &b);
            prop_assert!((a.values().sum::<f64>() - 1.0).abs() < 1e-9);
            // One more step changes (almost) nothing: it is the fixed point.
            let ids: Vec<&str> = a.keys().copied().collect();
            let index: BTreeMap<&str, usize> = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
            let mut out = vec![Vec::new(); ids.len()];
            for (x, y) in e.iter().filter(|(x, y)| x != y).collect::<BTreeSet<_>>() {
                out[index[x]].push(index[y]);
            }
            let mut p = vec![0.0; ids.len()];
            p[index["id0"]] = 0.5;
            p[index["id1"]] = 0.5;
            let t: Vec<f64> = ids.iter().map(|id| a[id]).collect();
            let mut next = vec![0.0; ids.len()];
            step(&out, &p, 0.15, &t, &mut next);
            for (x, y) in next.iter().zip(&t) {
                prop_assert!((x - y).abs() < 1e-8);
            }
            // Who is not reachable from the pre-trusted holds nothing.
            let mut reach: BTreeSet<&str> = ["id0", "id1"].into();
            loop {
                let before = reach.len();
                for (x, y) in &e {
                    if reach.contains(x) { reach.insert(y); }
                }
                if reach.len() == before { break; }
            }
            for (id, v) in &a {
                if !reach.contains(id) { prop_assert_eq!(*v, 0.0); }
            }
        }
    }
}
