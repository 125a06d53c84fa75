//! A linearizability checker for histories of registers (one per key), in the manner of
//! Wing & Gong with Lowe's memoization (as Porcupine and Knossos do).
//!
//! Linearizability is compositional, so each key is checked on its own. An operation can be
//! linearized next exactly when it was invoked before every remaining operation returned; a
//! write whose outcome the client never learned (error, timeout) has no return and may or may
//! not have taken effect, so the search may also leave it out.

use std::collections::{BTreeMap, HashSet};

/// What a client did on one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Wrote this value (unique per write).
    Put(String),
    /// Read this value (`None`: the key did not exist).
    Get(Option<String>),
}

/// One operation of the history: invoked at `call`, answered at `ret` (nanoseconds from a
/// common start), or never answered (`ret = None`, only meaningful for writes).
#[derive(Clone, Debug)]
pub struct Operation {
    /// The register.
    pub key: String,
    /// When the client sent it.
    pub call: u64,
    /// When the client got its answer; `None` if the outcome is unknown.
    pub ret: Option<u64>,
    /// What it did.
    pub kind: Kind,
}

/// Checks every key's history; returns the first key whose history is not linearizable.
pub fn check(history: &[Operation]) -> Result<(), String> {
    let mut by_key: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
    for op in history {
        // A read with no answer said nothing: drop it.
        if op.ret.is_none() && matches!(op.kind, Kind::Get(_)) {
            continue;
        }
        by_key.entry(&op.key).or_default().push(op);
    }
    for (key, ops) in by_key {
        if !linearizable(&ops) {
            return Err(format!("the history of {key:?} ({} operations) is not linearizable", ops.len()));
        }
    }
    Ok(())
}

fn linearizable(ops: &[&Operation]) -> bool {
    assert!(ops.len() <= 64 * 64, "history too long for the checker");
    let words = ops.len().div_ceil(64);
    let mut memo: HashSet<(Vec<u64>, Option<String>)> = HashSet::new();
    // Depth-first search with an explicit stack: (linearized set, register value).
    let mut stack = vec![(vec![0u64; words], None::<String>)];
    let is_done = |done: &[u64], i: usize| done[i / 64] & (1 << (i % 64)) != 0;
    while let Some((done, state)) = stack.pop() {
        // Finished when every operation that returned is linearized (unanswered writes may
        // be left out: they might never have happened).
        if (0..ops.len()).all(|i| is_done(&done, i) || ops[i].ret.is_none()) {
            return true;
        }
        let horizon = (0..ops.len())
            .filter(|i| !is_done(&done, *i))
            .filter_map(|i| ops[i].ret)
            .min()
            .unwrap_or(u64::MAX);
        for (i, op) in ops.iter().enumerate() {
            if is_done(&done, i) || op.call > horizon {
                continue;
            }
            let next = match &op.kind {
                Kind::Put(v) => Some(v.clone()),
                Kind::Get(seen) if *seen == state => state.clone(),
                Kind::Get(_) => continue,
            };
            let mut done = done.clone();
            done[i / 64] |= 1 << (i % 64);
            if memo.insert((done.clone(), next.clone())) {
                stack.push((done, next));
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(call: u64, ret: Option<u64>, kind: Kind) -> Operation {
        Operation { key: "k".into(), call, ret, kind }
    }

    fn put(v: &str) -> Kind {
        Kind::Put(v.into())
    }

    fn get(v: Option<&str>) -> Kind {
        Kind::Get(v.map(Into::into))
    }

    #[test]
    fn concurrent_operations_may_take_effect_in_either_order() {
        // put a overlaps get → a; put b after both; get sees b.
        let h = [
            op(0, Some(10), put("a")),
            op(5, Some(8), get(Some("a"))),
            op(11, Some(20), put("b")),
            op(21, Some(22), get(Some("b"))),
        ];
        assert!(check(&h).is_ok());
        // A read overlapping a write may still see the old value.
        let h = [op(0, Some(10), put("a")), op(1, Some(2), get(None))];
        assert!(check(&h).is_ok());
    }

    #[test]
    fn a_stale_read_after_a_completed_write_is_caught() {
        let h = [op(0, Some(10), put("a")), op(11, Some(20), put("b")), op(21, Some(22), get(Some("a")))];
        assert!(check(&h).is_err());
        // A read of a value nobody wrote.
        assert!(check(&[op(0, Some(1), get(Some("z")))]).is_err());
        // Reads that go back in time: b then a, with a written before b completed.
        let h = [
            op(0, Some(5), put("a")),
            op(6, Some(10), put("b")),
            op(11, Some(12), get(Some("b"))),
            op(13, Some(14), get(Some("a"))),
        ];
        assert!(check(&h).is_err());
    }

    #[test]
    fn a_write_with_an_unknown_outcome_may_or_may_not_have_happened() {
        let lost = [op(0, None, put("a")), op(5, Some(6), get(None))];
        assert!(check(&lost).is_ok());
        let happened =
            [op(0, None, put("a")), op(5, Some(6), get(Some("a"))), op(7, Some(8), get(Some("a")))];
        assert!(check(&happened).is_ok());
        // But it cannot happen, then un-happen.
        let flicker = [op(0, None, put("a")), op(5, Some(6), get(Some("a"))), op(7, Some(8), get(None))];
        assert!(check(&flicker).is_err());
    }
}
