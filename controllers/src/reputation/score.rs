//! Reputation as pure functions: evidence tallies that decay, the sample a tick adds, and the
//! scores and composite read from them.
//!
//! Every tally counts seconds: seconds a heartbeat was fresh of seconds observed (uptime),
//! replica-seconds running as asked of replica-seconds bound (reliability), replica-seconds
//! whose applied limits met the request of replica-seconds checked (honesty). A score is
//! `good / (total + prior)`: with no evidence it is 0, and it approaches the share of good
//! observations as evidence grows past the prior, so standing is earned by being observed, not
//! granted by showing up. Old evidence decays with a half-life (both good and total alike), so a
//! node that fails now loses standing within days, not years.

use std::time::Duration;

use api::kinds::{Evidence, Tally};
use api::meta::Time;
use chrono::{DateTime, Utc};

/// Weights of the composite (each score is 0 to 1; the composite is their weighted mean).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Weights {
    /// Heartbeats on time.
    pub uptime: f64,
    /// Replicas run as asked.
    pub reliability: f64,
    /// Resources delivered as asked.
    pub honesty: f64,
    /// Time in the network.
    pub age: f64,
    /// Global trust from attestations.
    pub attestations: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Self { uptime: 0.25, reliability: 0.25, honesty: 0.15, age: 0.15, attestations: 0.2 }
    }
}

/// How evidence is weighed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scoring {
    /// Evidence loses half its weight in this time.
    pub half_life: Duration,
    /// Seconds of evidence a score needs to reach one half of its share of good observations.
    pub prior: Duration,
    /// The age at which the age factor reaches 1 (it grows with the logarithm of age).
    pub age_full: Duration,
    /// The composite's weights.
    pub weights: Weights,
}

impl Default for Scoring {
    fn default() -> Self {
        Self {
            half_life: Duration::from_secs(7 * 24 * 3600),
            prior: Duration::from_secs(3600),
            age_full: Duration::from_secs(365 * 24 * 3600),
            weights: Weights::default(),
        }
    }
}

impl Scoring {
    /// These parameters, as a Reputation records them.
    pub fn params(&self) -> api::kinds::ScoringParams {
        let w = self.weights;
        api::kinds::ScoringParams {
            half_life_seconds: self.half_life.as_secs_f64(),
            prior_seconds: self.prior.as_secs_f64(),
            age_full_seconds: self.age_full.as_secs_f64(),
            uptime_weight: w.uptime,
            reliability_weight: w.reliability,
            honesty_weight: w.honesty,
            age_weight: w.age,
            attestations_weight: w.attestations,
        }
    }
}

/// What one tick observed of a subject (a node, or all the nodes of an operator summed).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sample {
    /// Nodes whose heartbeat Lease was fresh.
    pub up: u32,
    /// Nodes whose heartbeat Lease was not.
    pub down: u32,
    /// Bound replicas running on a node with a fresh heartbeat.
    pub running: u32,
    /// Bound replicas on a node whose heartbeat lapsed.
    pub stranded: u32,
    /// Replicas that failed to start on the node since the last tick (each counts as one tick
    /// of a failed replica).
    pub start_failures: u32,
    /// Running replicas whose applied limits meet what they asked for and hold.
    pub honest: u32,
    /// Running replicas whose applied limits fall short, or do not hold.
    pub dishonest: u32,
}

impl Sample {
    /// The sum of two samples (an operator's is its nodes').
    #[must_use]
    pub fn plus(self, o: Self) -> Self {
        Self {
            up: self.up + o.up,
            down: self.down + o.down,
            running: self.running + o.running,
            stranded: self.stranded + o.stranded,
            start_failures: self.start_failures + o.start_failures,
            honest: self.honest + o.honest,
            dishonest: self.dishonest + o.dishonest,
        }
    }
}

/// `t` after `dt` seconds of decay with half-life `half_life` seconds.
pub fn decay(t: Tally, dt: f64, half_life: f64) -> Tally {
    if dt <= 0.0 || half_life <= 0.0 {
        return t;
    }
    let k = 0.5f64.powf(dt / half_life);
    Tally { good: t.good * k, total: t.total * k }
}

fn add(t: &mut Tally, good: f64, total: f64) {
    t.good += good;
    t.total += total;
}

/// Adds what a tick at `now` observed: the time since the last sample (at most `max_gap`, so
/// that a time nobody observed is not counted either way) weighs each observation; old
/// evidence decays first. The first sample only starts the clock.
pub fn observe(e: &mut Evidence, s: Sample, now: DateTime<Utc>, max_gap: Duration, scoring: &Scoring) {
    let first_seen = e.first_seen.get_or_insert(Time(now));
    if first_seen.0 > now {
        first_seen.0 = now;
    }
    let Some(last) = e.sampled_at.replace(Time(now)) else { return };
    // Old evidence fades over all the time gone by; only the time observed adds evidence.
    let gone = (now - last.0).to_std().unwrap_or_default();
    let dt = gone.min(max_gap).as_secs_f64();
    let h = scoring.half_life.as_secs_f64();
    for t in [&mut e.uptime, &mut e.reliability, &mut e.honesty] {
        *t = decay(*t, gone.as_secs_f64(), h);
    }
    let n = |x: u32| f64::from(x);
    add(&mut e.uptime, n(s.up) * dt, n(s.up + s.down) * dt);
    add(
        &mut e.reliability,
        n(s.running) * dt,
        n(s.running + s.stranded) * dt + n(s.start_failures) * max_gap.as_secs_f64() / 2.0,
    );
    add(&mut e.honesty, n(s.honest) * dt, n(s.honest + s.dishonest) * dt);
}

/// A tally's score: `good / (total + prior)`, 0 without evidence.
pub fn ratio(t: Tally, prior: Duration) -> f64 {
    let denominator = t.total + prior.as_secs_f64();
    if denominator <= 0.0 { 0.0 } else { (t.good / denominator).clamp(0.0, 1.0) }
}

/// Grows with the logarithm of age: 0 when first seen, 1 at `full`.
pub fn age_factor(age: Duration, full: Duration) -> f64 {
    let full = full.as_secs_f64().max(1.0);
    ((1.0 + age.as_secs_f64()).ln() / (1.0 + full).ln()).clamp(0.0, 1.0)
}

/// The scores of a subject, each 0 to 1, and their weighted mean.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Scores {
    /// See [`Weights::uptime`].
    pub uptime: f64,
    /// See [`Weights::reliability`].
    pub reliability: f64,
    /// See [`Weights::honesty`].
    pub honesty: f64,
    /// See [`Weights::age`].
    pub age: f64,
    /// See [`Weights::attestations`].
    pub attestations: f64,
    /// The weighted mean.
    pub composite: f64,
}

/// The scores of evidence `e` at `now`, with `attestations` the subject's normalized global
/// trust (0 to 1).
pub fn scores(e: &Evidence, attestations: f64, now: DateTime<Utc>, scoring: &Scoring) -> Scores {
    let age = e.first_seen.as_ref().and_then(|f| (now - f.0).to_std().ok()).unwrap_or_default();
    let mut s = Scores {
        uptime: ratio(e.uptime, scoring.prior),
        reliability: ratio(e.reliability, scoring.prior),
        honesty: ratio(e.honesty, scoring.prior),
        age: age_factor(age, scoring.age_full),
        attestations: attestations.clamp(0.0, 1.0),
        composite: 0.0,
    };
    let w = scoring.weights;
    let parts = [
        (w.uptime, s.uptime),
        (w.reliability, s.reliability),
        (w.honesty, s.honesty),
        (w.age, s.age),
        (w.attestations, s.attestations),
    ];
    let sum: f64 = parts.iter().map(|(w, _)| w.max(0.0)).sum();
    s.composite = if sum > 0.0 { parts.iter().map(|(w, x)| w.max(0.0) * x).sum::<f64>() / sum } else { 0.0 };
    s
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    fn fast() -> Scoring {
        Scoring {
            half_life: Duration::from_secs(100),
            prior: Duration::from_secs(10),
            age_full: Duration::from_secs(1000),
            weights: Weights::default(),
        }
    }

    fn up() -> Sample {
        Sample { up: 1, running: 1, honest: 1, ..Sample::default() }
    }

    fn down() -> Sample {
        Sample { down: 1, stranded: 1, ..Sample::default() }
    }

    #[test]
    fn nothing_observed_scores_nothing() {
        let s = scores(&Evidence::default(), 0.0, t(0), &fast());
        assert_eq!(s, Scores::default());
        let mut e = Evidence::default();
        observe(&mut e, up(), t(0), Duration::from_secs(2), &fast());
        assert_eq!(e.uptime, Tally::default(), "the first sample only starts the clock");
    }

    #[test]
    fn standing_is_earned_by_being_observed_and_lost_by_failing() {
        let scoring = fast();
        let gap = Duration::from_secs(2);
        let mut e = Evidence::default();
        for i in 0..=300 {
            observe(&mut e, up(), t(i), gap, &scoring);
        }
        let good = scores(&e, 0.0, t(300), &scoring);
        assert!(good.uptime > 0.9 && good.reliability > 0.9 && good.honesty > 0.9, "{good:?}");
        for i in 301..=400 {
            observe(&mut e, down(), t(i), gap, &scoring);
        }
        let bad = scores(&e, 0.0, t(400), &scoring);
        assert!(bad.uptime < 0.5 && bad.reliability < 0.5, "{bad:?}");
        assert_eq!(bad.honesty, good.honesty.min(bad.honesty), "honesty is not judged while down");
        assert!(bad.composite < good.composite);
    }

    #[test]
    fn time_nobody_observed_counts_neither_way() {
        let scoring = fast();
        let mut a = Evidence::default();
        observe(&mut a, up(), t(0), Duration::from_secs(2), &scoring);
        observe(&mut a, down(), t(1000), Duration::from_secs(2), &scoring);
        // Only two seconds of the gap count as down; what came before faded over all of it.
        assert!((a.uptime.total - 2.0).abs() < 1e-9);
        let mut b = Evidence::default();
        for i in 0..=100 {
            observe(&mut b, up(), t(i), Duration::from_secs(2), &scoring);
        }
        let before = b.uptime.good;
        observe(&mut b, up(), t(100 + 1000), Duration::from_secs(2), &scoring);
        assert!(b.uptime.good < before / 100.0 + 2.0 + 1e-9, "{} then {}", before, b.uptime.good);
    }

    #[test]
    fn a_workload_s_own_exit_is_no_evidence_but_a_start_failure_is() {
        let scoring = fast();
        let mut e = Evidence::default();
        observe(&mut e, Sample { up: 1, ..Sample::default() }, t(0), Duration::from_secs(2), &scoring);
        observe(
            &mut e,
            Sample { up: 1, start_failures: 1, ..Sample::default() },
            t(1),
            Duration::from_secs(2),
            &scoring,
        );
        assert_eq!(e.reliability.good, 0.0);
        assert!(e.reliability.total > 0.0);
    }

    #[test]
    fn age_grows_with_the_logarithm_of_time() {
        let full = Duration::from_secs(1000);
        assert_eq!(age_factor(Duration::ZERO, full), 0.0);
        assert_eq!(age_factor(full * 2, full), 1.0);
        let (a, b) = (age_factor(Duration::from_secs(10), full), age_factor(Duration::from_secs(100), full));
        assert!(a > 0.3 && b > a && b < 1.0);
    }

    proptest! {
        /// Every score and the composite stay within 0 and 1, whatever is observed.
        #[test]
        fn scores_stay_between_0_and_1(
            samples in proptest::collection::vec((0u32..5, 0u32..5, 0u32..5, 0u32..5, 0u32..3, 0u32..5, 0u32..5, 0i64..50), 0..60),
            trust in 0.0f64..=1.0,
        ) {
            let scoring = fast();
            let mut e = Evidence::default();
            let mut now = 0;
            for (up, down, running, stranded, start_failures, honest, dishonest, dt) in samples {
                now += dt;
                let s = Sample { up, down, running, stranded, start_failures, honest, dishonest };
                observe(&mut e, s, t(now), Duration::from_secs(20), &scoring);
                let sc = scores(&e, trust, t(now), &scoring);
                for x in [sc.uptime, sc.reliability, sc.honesty, sc.age, sc.attestations, sc.composite] {
                    prop_assert!((0.0..=1.0).contains(&x), "{sc:?}");
                }
            }
        }
    }
}
