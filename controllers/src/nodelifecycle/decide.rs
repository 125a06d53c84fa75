//! Whether a node is alive, from its heartbeat Lease, as a pure function of the time.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// A node's last heartbeat: when its Lease was renewed and for how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heartbeat {
    /// `spec.renewTime`.
    pub renewed: DateTime<Utc>,
    /// `spec.leaseDurationSeconds`.
    pub duration: Duration,
}

/// Why a node is (not) ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    /// Its lease is fresh.
    Heartbeat,
    /// Its lease lapsed.
    LeaseLapsed,
    /// It never heartbeat.
    NoLease,
}

impl Why {
    /// The condition's reason.
    pub fn reason(self) -> &'static str {
        match self {
            Why::Heartbeat => "NodeHeartbeat",
            Why::LeaseLapsed => "NodeLeaseLapsed",
            Why::NoLease => "NodeLeaseMissing",
        }
    }
}

/// What to do about one node now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Condition Ready.
    pub ready: bool,
    /// Why.
    pub why: Why,
    /// Delete the replicas bound to it (it has been lapsed for the eviction timeout).
    pub evict: bool,
    /// Look again after this long even if nothing changes.
    pub recheck_after: Duration,
}

/// The decision for a node created at `created` with heartbeat `lease`, at `now`. A node
/// lapsed for `eviction_timeout` loses its replicas; while it stays lapsed it is checked again
/// every `eviction_timeout` (replicas bound to it in the meantime go too).
pub fn decide(
    now: DateTime<Utc>,
    created: DateTime<Utc>,
    lease: Option<Heartbeat>,
    eviction_timeout: Duration,
) -> Decision {
    let (expiry, why_lapsed) = match lease {
        Some(h) => (
            h.renewed + chrono::Duration::from_std(h.duration).unwrap_or(chrono::Duration::MAX),
            Why::LeaseLapsed,
        ),
        None => (created, Why::NoLease),
    };
    let until = |t: DateTime<Utc>| (t - now).to_std().unwrap_or(Duration::ZERO);
    if now < expiry {
        // Just after the lease would lapse.
        return Decision {
            ready: true,
            why: Why::Heartbeat,
            evict: false,
            recheck_after: until(expiry) + Duration::from_millis(100),
        };
    }
    let evict_at = expiry + chrono::Duration::from_std(eviction_timeout).unwrap_or(chrono::Duration::MAX);
    let evict = now >= evict_at;
    let recheck_after = if evict {
        eviction_timeout.max(Duration::from_secs(1))
    } else {
        until(evict_at) + Duration::from_millis(100)
    };
    Decision { ready: false, why: why_lapsed, evict, recheck_after }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap()
    }

    const TIMEOUT: Duration = Duration::from_secs(30);

    #[test]
    fn a_fresh_lease_is_ready_and_rechecked_when_it_would_lapse() {
        let hb = Heartbeat { renewed: at(100), duration: Duration::from_secs(10) };
        let d = decide(at(105), at(0), Some(hb), TIMEOUT);
        assert!(d.ready && !d.evict);
        assert_eq!(d.why, Why::Heartbeat);
        assert_eq!(d.recheck_after, Duration::from_millis(5100));
    }

    #[test]
    fn a_lapsed_lease_is_not_ready_and_evicts_after_the_timeout() {
        let hb = Heartbeat { renewed: at(100), duration: Duration::from_secs(10) };
        let d = decide(at(110), at(0), Some(hb), TIMEOUT);
        assert!(!d.ready && !d.evict);
        assert_eq!(d.why, Why::LeaseLapsed);
        assert_eq!(d.recheck_after, Duration::from_millis(30_100));
        let d = decide(at(139), at(0), Some(hb), TIMEOUT);
        assert!(!d.evict);
        let d = decide(at(140), at(0), Some(hb), TIMEOUT);
        assert!(d.evict && !d.ready);
        assert_eq!(d.recheck_after, TIMEOUT);
    }

    #[test]
    fn a_node_that_never_heartbeat_counts_from_its_creation() {
        let d = decide(at(10), at(0), None, TIMEOUT);
        assert_eq!((d.ready, d.why, d.evict), (false, Why::NoLease, false));
        assert!(decide(at(30), at(0), None, TIMEOUT).evict);
    }

    #[test]
    fn a_node_that_comes_back_is_ready_again() {
        let old = Heartbeat { renewed: at(100), duration: Duration::from_secs(10) };
        assert!(decide(at(200), at(0), Some(old), TIMEOUT).evict);
        let renewed = Heartbeat { renewed: at(199), duration: Duration::from_secs(10) };
        let d = decide(at(200), at(0), Some(renewed), TIMEOUT);
        assert!(d.ready && !d.evict);
    }
}
