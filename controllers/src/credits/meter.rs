//! Metering as pure functions: which periods of a replica's run are due for a charge, and what
//! each costs at a NodeOffer's prices.
//!
//! Periods sit on a fixed grid of the Unix clock (`[k·P, (k+1)·P)`), so a charge is named by the
//! replica's uid and its period index `k` alone: a controller that restarts, or another member's
//! controller that takes over, writes the same name again and the apiserver refuses the copy
//! (AlreadyExists). Nothing is charged twice and nothing needs remembering between runs.

use api::kinds::Price;
use api::quantity::Resources;
use chrono::{DateTime, Duration, Utc};

use crate::scheduler::core::Amount;

/// Bytes in a GiB, the unit memory and storage are priced in.
const GIB: i128 = 1 << 30;

/// Micro-credits per hour of a core, a GiB of memory and a GiB of storage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rates {
    /// Per core-hour.
    pub cpu: i64,
    /// Per GiB-hour of memory.
    pub memory: i64,
    /// Per GiB-hour of storage.
    pub storage: i64,
}

impl Rates {
    /// The rates of an offer's price.
    pub fn of(p: &Price) -> Self {
        Self { cpu: p.cpu.micros(), memory: p.memory.micros(), storage: p.storage.micros() }
    }

    /// Whether nothing is charged.
    pub fn is_free(&self) -> bool {
        self.cpu <= 0 && self.memory <= 0 && self.storage <= 0
    }

    /// Micro-credits per hour that `a` costs (millicores, bytes), rounded down.
    pub fn per_hour(&self, a: Amount) -> i128 {
        let pos = |r: i64| i128::from(r.max(0));
        i128::from(a.cpu) * pos(self.cpu) / 1000
            + i128::from(a.memory) * pos(self.memory) / GIB
            + i128::from(a.storage) * pos(self.storage) / GIB
    }
}

/// What `per_hour` micro-credits an hour cost over `span`, rounded down, at most the ledger's
/// largest amount (a charge the ledger cannot hold is never written).
pub fn cost(per_hour: i128, span: Duration) -> i64 {
    let millis = i128::from(span.num_milliseconds().max(0));
    let max = api::ledger::MAX.micros();
    i64::try_from(per_hour.saturating_mul(millis) / 3_600_000).unwrap_or(max).min(max)
}

/// The name of the Metering transfer of period `index` (of `period_ms`) of the replica `uid`:
/// the period's length is in it, so charges under another period length are recognized.
pub fn charge_name(uid: &str, period_ms: i64, index: i64) -> String {
    format!("meter-{uid}-{period_ms}-{index}")
}

/// Until when the charge named `name` covers the run of replica `uid` (the end of its period),
/// if it is one of that replica's.
pub fn covered_until(name: &str, uid: &str) -> Option<DateTime<Utc>> {
    let rest = name.strip_prefix("meter-")?.strip_prefix(uid)?.strip_prefix('-')?;
    let (period, index) = rest.split_once('-')?;
    let (period, index): (i64, i64) = (period.parse().ok()?, index.parse().ok()?);
    DateTime::from_timestamp_millis(index.checked_add(1)?.checked_mul(period)?)
}

/// What a replica is charged for: what it was measured to use, but never more than it asked for
/// (the node reports the measurement, and a node must not be able to inflate its own bill, nor
/// bill what was never asked: a resource not requested costs nothing); what it asked for where
/// nothing was measured. Storage is charged as asked.
pub fn metered(requested: &Resources, measured: Option<&Resources>) -> Amount {
    let asked = Amount::of(requested);
    let Some(m) = measured else { return asked };
    let m = Amount::of(m);
    let at_most = |measured: u64, asked: u64| match measured {
        0 => asked,
        m => m.min(asked),
    };
    Amount { cpu: at_most(m.cpu, asked.cpu), memory: at_most(m.memory, asked.memory), storage: asked.storage }
}

/// A replica's run: from when it started to when it finished (still running: none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    /// When it started.
    pub start: DateTime<Utc>,
    /// When it finished, if it has.
    pub end: Option<DateTime<Utc>>,
}

/// One period to charge: its index on the grid and the part of it the run covered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Due {
    /// `k` of the period `[k·P, (k+1)·P)`.
    pub index: i64,
    /// Start of the run's overlap with the period.
    pub from: DateTime<Utc>,
    /// End of the overlap.
    pub to: DateTime<Utc>,
}

/// The index of the period holding `t`.
pub fn index_of(t: DateTime<Utc>, period: Duration) -> i64 {
    t.timestamp_millis().div_euclid(period.num_milliseconds().max(1))
}

fn start_of(k: i64, period: Duration) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(k.saturating_mul(period.num_milliseconds().max(1))).unwrap_or_default()
}

/// The periods of `run` due at `now`, from period `from` on (the caller's cursor; periods
/// before it are charged already), oldest first, at most `max`: each period that has ended by
/// `now`, and, once the run has ended, the one it ended in. A period the run did not overlap
/// (it ended before the run started) is skipped; an empty overlap is never due.
pub fn due(run: Run, period: Duration, now: DateTime<Utc>, from: i64, max: usize) -> Vec<Due> {
    let end = run.end.map_or(now, |e| e.min(now));
    if end <= run.start {
        return Vec::new();
    }
    let first = index_of(run.start, period).max(from);
    // The last period that is complete at `now`, or the one the run ended in.
    let last_complete = index_of(now, period) - 1;
    let last = match run.end {
        Some(e) if e <= now => index_of(e, period).min(index_of(now, period)),
        _ => last_complete,
    };
    let mut out = Vec::new();
    let mut k = first;
    while k <= last && out.len() < max {
        let (p0, p1) = (start_of(k, period), start_of(k + 1, period));
        let (a, b) = (p0.max(run.start), p1.min(end));
        if a < b {
            out.push(Due { index: k, from: a, to: b });
        }
        k += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use api::quantity::Quantity;
    use proptest::prelude::*;

    use super::*;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    fn minute() -> Duration {
        Duration::seconds(60)
    }

    #[test]
    fn a_core_and_a_gib_for_an_hour_cost_their_prices() {
        let rates = Rates { cpu: 2_000_000, memory: 500_000, storage: 100_000 };
        let a = Amount { cpu: 1000, memory: 1 << 30, storage: 2 << 30 };
        assert_eq!(rates.per_hour(a), 2_000_000 + 500_000 + 200_000);
        assert_eq!(cost(rates.per_hour(a), Duration::minutes(30)), 1_350_000);
        assert_eq!(cost(rates.per_hour(a), Duration::zero()), 0);
        assert!(Rates::default().is_free());
    }

    #[test]
    fn a_charge_s_name_says_what_it_covers_and_nothing_else_s_does() {
        let uid = "6c1f1a8e-0000-4000-8000-000000000001";
        let name = charge_name(uid, 60_000, 30_000_000);
        assert_eq!(covered_until(&name, uid), DateTime::from_timestamp_millis(30_000_001 * 60_000));
        assert_eq!(covered_until(&name, "6c1f1a8e-0000-4000-8000-000000000002"), None);
        assert_eq!(covered_until("pay-2026", uid), None);
        assert_eq!(covered_until(&format!("meter-{uid}-x-1"), uid), None);
        assert_eq!(cost(i128::MAX, Duration::days(365)), api::ledger::MAX.micros());
    }

    #[test]
    fn a_node_cannot_bill_more_than_was_asked() {
        let asked = Resources {
            cpu: Some(Quantity::parse("500m").unwrap()),
            memory: Some(Quantity::parse("64Mi").unwrap()),
            storage: None,
        };
        let inflated = Resources {
            cpu: Some(Quantity::parse("4").unwrap()),
            memory: Some(Quantity::parse("1Gi").unwrap()),
            storage: None,
        };
        assert_eq!(metered(&asked, Some(&inflated)), Amount { cpu: 500, memory: 64 << 20, storage: 0 });
        let less = Resources { cpu: Some(Quantity::parse("100m").unwrap()), memory: None, storage: None };
        assert_eq!(metered(&asked, Some(&less)), Amount { cpu: 100, memory: 64 << 20, storage: 0 });
        assert_eq!(metered(&asked, None), Amount { cpu: 500, memory: 64 << 20, storage: 0 });
        // Nothing asked, nothing billed, whatever the node reports.
        assert_eq!(metered(&Resources::default(), Some(&inflated)), Amount::default());
    }

    #[test]
    fn only_ended_periods_are_due_while_the_replica_runs() {
        // 1_800_000_000 is a multiple of 60: the run starts 10 s into period k0.
        let k0 = index_of(t(0), minute());
        let run = Run { start: t(10), end: None };
        assert!(due(run, minute(), t(59), k0, 100).is_empty());
        let d = due(run, minute(), t(130), k0, 100);
        assert_eq!(d.iter().map(|d| d.index).collect::<Vec<_>>(), [k0, k0 + 1]);
        assert_eq!((d[0].from, d[0].to), (t(10), t(60)));
        assert_eq!((d[1].from, d[1].to), (t(60), t(120)));
        // The cursor skips what is charged; `max` bounds a catch-up.
        assert_eq!(due(run, minute(), t(130), k0 + 1, 100).len(), 1);
        assert_eq!(due(run, minute(), t(600), k0, 3).len(), 3);
    }

    #[test]
    fn the_last_period_is_due_once_the_run_ends() {
        let k0 = index_of(t(0), minute());
        let run = Run { start: t(10), end: Some(t(75)) };
        let d = due(run, minute(), t(80), k0, 100);
        assert_eq!(d.len(), 2);
        assert_eq!((d[1].index, d[1].from, d[1].to), (k0 + 1, t(60), t(75)));
        // Ended exactly on a boundary: no empty charge for the next period.
        let run = Run { start: t(10), end: Some(t(60)) };
        assert_eq!(due(run, minute(), t(200), k0, 100).len(), 1);
    }

    proptest! {
        /// However a run is cut into sweeps, the charged spans add up to the run, no period is
        /// charged twice, and none is charged before it ended (or the run did).
        #[test]
        fn sweeps_charge_each_second_of_a_run_once(
            start in 0i64..500, len in 1i64..2000, sweeps in proptest::collection::vec(1i64..400, 1..20),
            period in 1i64..300,
        ) {
            let period = Duration::seconds(period);
            let run = Run { start: t(start), end: Some(t(start + len)) };
            let mut cursor = i64::MIN;
            let mut now = t(start);
            let mut charged = Duration::zero();
            let mut seen = std::collections::BTreeSet::new();
            for step in sweeps.iter().chain(std::iter::repeat_n(&400, 10)) {
                now += Duration::seconds(*step);
                for d in due(run, period, now, cursor, 1000) {
                    prop_assert!(seen.insert(d.index));
                    prop_assert!(d.to <= now);
                    charged += d.to - d.from;
                    cursor = d.index + 1;
                }
            }
            prop_assert_eq!(charged, Duration::seconds(len));
        }
    }
}
