//! Prometheus metrics of the node agent: the replicas it supervises by phase, the runs it
//! starts (and fails to start) and how long a start takes, and how runs end.
//!
//! Named as the kubelet names its own where the meaning is the same
//! (`kubelet_started_containers_total`, `kubelet_started_containers_errors_total`), `univrs_node_…`
//! otherwise. One set per process (the agent of `ui node run`, or the local node of `ui up`).

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use api::kinds::ReplicaPhase;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Labels of the start counters (the kubelet's).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StartLabels {
    /// Always `container` (univrs has no init or ephemeral containers).
    pub container_type: &'static str,
}

/// Labels of the start-error counter (the kubelet's).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StartErrorLabels {
    /// Always `container`.
    pub container_type: &'static str,
    /// Why it could not start (`ImageNotFound`, `NoCommand`, `ShimFailed`, …).
    pub code: String,
}

/// Labels of the per-phase gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    /// `Pending`, `Running`, `Succeeded`, `Failed`.
    pub phase: &'static str,
}

/// Labels of the exit counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ExitLabels {
    /// `Completed`, `Error`, `OOMKilled`, `Signaled`, …: the run's reason.
    pub reason: String,
}

/// Labels of the tunnel's packet counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TunnelLabels {
    /// `sent` (to a peer node), `received` (from one, forwarded to a replica here) or `refused`
    /// (no allowed pair, no peer, not authenticated).
    pub direction: &'static str,
}

/// The agent's metrics.
#[derive(Debug)]
pub struct Metrics {
    tunnel: Family<TunnelLabels, Counter>,
    registry: Registry,
    started: Family<StartLabels, Counter>,
    start_errors: Family<StartErrorLabels, Counter>,
    start_duration: Histogram,
    exits: Family<ExitLabels, Counter>,
    replicas: Family<PhaseLabels, Gauge>,
    /// The last phase reported of each replica supervised here (by uid).
    phases: Mutex<HashMap<String, ReplicaPhase>>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's agent metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

const PHASES: [ReplicaPhase; 5] = [
    ReplicaPhase::Pending,
    ReplicaPhase::Running,
    ReplicaPhase::Succeeded,
    ReplicaPhase::Failed,
    ReplicaPhase::Unknown,
];

/// Why a run may not start (the `reason` of the replica's status).
const START_ERRORS: [&str; 6] = [
    "NoCommand",
    "ImageNotFound",
    "SealedSecretNotOpened",
    "SealedSecretMismatch",
    "UntrustedSigner",
    "ShimFailed",
];

/// How a run may end (`RunResult::reason`).
const EXIT_REASONS: [&str; 5] = ["Completed", "Error", "OOMKilled", "Signaled", "StartError"];

fn phase_name(p: ReplicaPhase) -> &'static str {
    match p {
        ReplicaPhase::Pending => "Pending",
        ReplicaPhase::Running => "Running",
        ReplicaPhase::Succeeded => "Succeeded",
        ReplicaPhase::Failed => "Failed",
        ReplicaPhase::Unknown => "Unknown",
    }
}

impl Metrics {
    fn new() -> Self {
        let mut r = Registry::default();
        let started = Family::<StartLabels, Counter>::default();
        r.register(
            "kubelet_started_containers",
            "Containers (replica runs) this node started, restarts included",
            started.clone(),
        );
        let start_errors = Family::<StartErrorLabels, Counter>::default();
        r.register(
            "kubelet_started_containers_errors",
            "Replica runs this node could not start, by reason",
            start_errors.clone(),
        );
        // 5 ms to ~80 s.
        let start_duration =
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.005, 2.0, 15));
        r.register(
            "univrs_node_container_start_duration_seconds",
            "From preparing a replica's run to its shim (which makes the container) started",
            start_duration.clone(),
        );
        let exits = Family::<ExitLabels, Counter>::default();
        r.register("univrs_node_container_exits", "Replica runs that ended, by reason", exits.clone());
        let replicas = Family::<PhaseLabels, Gauge>::default();
        r.register(
            "univrs_node_replicas",
            "Replicas supervised by this node, by the phase last reported",
            replicas.clone(),
        );
        // Known label values start at 0, so a dashboard's rate() has a series before the first.
        for p in PHASES {
            replicas.get_or_create(&PhaseLabels { phase: phase_name(p) }).set(0);
        }
        let _ = started.get_or_create(&StartLabels { container_type: "container" });
        for code in START_ERRORS {
            let labels = StartErrorLabels { container_type: "container", code: code.to_owned() };
            let _ = start_errors.get_or_create(&labels);
        }
        for reason in EXIT_REASONS {
            let _ = exits.get_or_create(&ExitLabels { reason: reason.to_owned() });
        }
        let tunnel = Family::<TunnelLabels, Counter>::default();
        r.register(
            "univrs_node_tunnel_packets",
            "Replica packets the tunnel to other nodes carried or refused, by direction",
            tunnel.clone(),
        );
        for direction in ["sent", "received", "refused"] {
            let _ = tunnel.get_or_create(&TunnelLabels { direction });
        }
        Self {
            tunnel,
            registry: r,
            started,
            start_errors,
            start_duration,
            exits,
            replicas,
            phases: Mutex::new(HashMap::new()),
        }
    }

    /// A run started, `took` after it was asked for.
    pub fn started(&self, took: Duration) {
        self.started.get_or_create(&StartLabels { container_type: "container" }).inc();
        self.start_duration.observe(took.as_secs_f64());
    }

    /// A run could not start, for `code`.
    pub fn start_failed(&self, code: &str) {
        self.start_errors
            .get_or_create(&StartErrorLabels { container_type: "container", code: code.to_owned() })
            .inc();
    }

    /// A packet the tunnel `direction` (`sent`, `received`, `refused`).
    pub fn tunnel(&self, direction: &'static str) {
        self.tunnel.get_or_create(&TunnelLabels { direction }).inc();
    }

    /// A run ended, for `reason`.
    pub fn exited(&self, reason: &str) {
        self.exits.get_or_create(&ExitLabels { reason: reason.to_owned() }).inc();
    }

    /// The phase reported for the replica `uid`.
    pub fn phase(&self, uid: &str, phase: ReplicaPhase) {
        let mut phases = self.phases.lock().unwrap_or_else(|e| e.into_inner());
        phases.insert(uid.to_owned(), phase);
        self.recount(&phases);
    }

    /// Forgets the replicas no longer bound here (`bound` says which still are).
    pub fn keep_only(&self, bound: impl Fn(&str) -> bool) {
        let mut phases = self.phases.lock().unwrap_or_else(|e| e.into_inner());
        let before = phases.len();
        phases.retain(|uid, _| bound(uid));
        if phases.len() != before {
            self.recount(&phases);
        }
    }

    fn recount(&self, phases: &HashMap<String, ReplicaPhase>) {
        for p in PHASES {
            let n = phases.values().filter(|q| **q == p).count();
            self.replicas.get_or_create(&PhaseLabels { phase: phase_name(p) }).set(n as i64);
        }
    }

    /// Appends the metrics to `out` (Prometheus text format, without the final `# EOF`).
    pub fn encode_into(&self, out: &mut String) {
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode_registry(out, &self.registry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_are_counted_by_their_last_phase_and_forgotten_when_gone() {
        let m = Metrics::new();
        m.phase("a", ReplicaPhase::Pending);
        m.phase("a", ReplicaPhase::Running);
        m.phase("b", ReplicaPhase::Running);
        m.phase("c", ReplicaPhase::Failed);
        m.keep_only(|uid| uid != "c");
        m.started(Duration::from_millis(40));
        m.start_failed("ImageNotFound");
        m.exited("Completed");
        let mut out = String::new();
        m.encode_into(&mut out);
        assert!(out.contains("univrs_node_replicas{phase=\"Running\"} 2"), "{out}");
        assert!(out.contains("univrs_node_replicas{phase=\"Pending\"} 0"), "{out}");
        assert!(out.contains("univrs_node_replicas{phase=\"Failed\"} 0"), "{out}");
        assert!(out.contains("kubelet_started_containers_total{container_type=\"container\"} 1"), "{out}");
        assert!(
            out.contains("kubelet_started_containers_errors_total{container_type=\"container\",code=\"ImageNotFound\"} 1"),
            "{out}"
        );
        assert!(out.contains("univrs_node_container_start_duration_seconds_count 1"), "{out}");
        assert!(out.contains("univrs_node_container_exits_total{reason=\"Completed\"} 1"), "{out}");
    }
}
