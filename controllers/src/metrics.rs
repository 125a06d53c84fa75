//! Prometheus metrics of the controllers, and the `/metrics` endpoint that serves them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of the per-controller metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    /// The controller's name (`workload`, `scheduler`, …).
    pub controller: String,
}

/// Labels of the reconcile counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// The controller's name.
    pub controller: String,
    /// `ok` or `error`.
    pub result: String,
}

/// Labels of the error counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// The controller's name.
    pub controller: String,
    /// What went wrong, as one word (`api`, `conflict`, …).
    pub error: String,
}

fn duration_histogram() -> Histogram {
    // 1 ms to ~33 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// Every metric the controllers record; cheap to clone (an `Arc` inside).
#[derive(Clone, Debug)]
pub struct Metrics(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    registry: Registry,
    reconciles: Family<ResultLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    duration: Family<ControllerLabels, Histogram, fn() -> Histogram>,
    queue_depth: Family<ControllerLabels, Gauge>,
    queue_latency: Family<ControllerLabels, Histogram, fn() -> Histogram>,
    leader: Family<ControllerLabels, Gauge>,
    /// The network's health figures (`api::health`), set by the credits controller.
    network: Registry,
    figures: std::collections::HashMap<&'static str, Gauge<f64, std::sync::atomic::AtomicU64>>,
}

/// The network figures served as gauges (`univrs_network_NAME`), with their help.
const FIGURES: [(&str, &str); 12] = [
    ("nodes_ready", "Nodes whose condition Ready is True"),
    ("nodes", "Nodes registered"),
    ("operators", "Operators with a ready node"),
    ("top_operator_share", "The largest operator's share of ready CPU capacity"),
    ("top3_operator_share", "The three largest operators' share of ready CPU capacity"),
    ("nakamoto_coefficient", "The fewest operators that together hold more than half the ready CPU capacity"),
    ("jurisdictions", "Jurisdictions with a ready node"),
    ("reputation_mean", "Mean composite reputation of operators"),
    ("credit_volume_24h", "Credits moved by committed transfers in the last 24 hours"),
    ("credit_outstanding", "Credits owed in all (sum of positive balances)"),
    ("credit_velocity_24h", "Credit volume of the last 24 hours over credit outstanding"),
    ("credit_balance_sum", "The sum of all balances (the ledger's invariant: always 0)"),
];

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every family registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("univrs_controller");
        let reconciles = Family::<ResultLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let duration = Family::new_with_constructor(duration_histogram as fn() -> Histogram);
        let queue_depth = Family::<ControllerLabels, Gauge>::default();
        let queue_latency = Family::new_with_constructor(duration_histogram as fn() -> Histogram);
        let leader = Family::<ControllerLabels, Gauge>::default();
        registry.register("reconciles", "Reconciles finished, by result", reconciles.clone());
        registry.register("reconcile_errors", "Reconciles that failed, by error", errors.clone());
        registry.register("reconcile_duration_seconds", "How long a reconcile took", duration.clone());
        registry.register("queue_depth", "Objects waiting for a reconcile", queue_depth.clone());
        registry.register(
            "queue_latency_seconds",
            "From a change seen to the start of its reconcile",
            queue_latency.clone(),
        );
        registry.register("leader", "1 while this process holds the controller's lease", leader.clone());
        let mut network = Registry::with_prefix("univrs_network");
        let mut figures = std::collections::HashMap::new();
        for (name, help) in FIGURES {
            let gauge = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
            network.register(name, help, gauge.clone());
            figures.insert(name, gauge);
        }
        Self(Arc::new(Inner {
            registry,
            reconciles,
            errors,
            duration,
            queue_depth,
            queue_latency,
            leader,
            network,
            figures,
        }))
    }

    fn labels(controller: &str) -> ControllerLabels {
        ControllerLabels { controller: controller.to_owned() }
    }

    /// Records a finished reconcile.
    pub fn reconciled(&self, controller: &str, took: Duration, error: Option<&str>) {
        let result = if error.is_some() { "error" } else { "ok" };
        self.0
            .reconciles
            .get_or_create(&ResultLabels { controller: controller.to_owned(), result: result.to_owned() })
            .inc();
        if let Some(error) = error {
            self.0
                .errors
                .get_or_create(&ErrorLabels { controller: controller.to_owned(), error: error.to_owned() })
                .inc();
        }
        self.0.duration.get_or_create(&Self::labels(controller)).observe(took.as_secs_f64());
    }

    /// Sets the number of objects waiting for a reconcile.
    pub fn set_queue_depth(&self, controller: &str, depth: usize) {
        self.0.queue_depth.get_or_create(&Self::labels(controller)).set(depth as i64);
    }

    /// Records how long an object waited for its reconcile.
    pub fn queued_for(&self, controller: &str, waited: Duration) {
        self.0.queue_latency.get_or_create(&Self::labels(controller)).observe(waited.as_secs_f64());
    }

    /// Records whether this process leads the controller.
    pub fn set_leader(&self, controller: &str, leader: bool) {
        self.0.leader.get_or_create(&Self::labels(controller)).set(i64::from(leader));
        // The network figures are the credits controller's: a process that no longer leads it
        // stops keeping them, so it stops serving its last ones (NaN: no value; a dashboard's
        // max() across members then reads the leader's).
        if controller == "credits" && !leader {
            for g in self.0.figures.values() {
                g.set(f64::NAN);
            }
        }
    }

    /// Sets the network's health figures.
    pub fn set_network(&self, h: &api::health::Health) {
        let credits = |c: api::credits::Credits| c.micros() as f64 / api::credits::Credits::SCALE as f64;
        let values: [(&str, f64); 12] = [
            ("nodes_ready", h.nodes_ready as f64),
            ("nodes", h.nodes_total as f64),
            ("operators", h.operators as f64),
            ("top_operator_share", h.top_operator_share),
            ("top3_operator_share", h.top3_operator_share),
            ("nakamoto_coefficient", h.nakamoto_coefficient as f64),
            ("jurisdictions", h.jurisdictions.len() as f64),
            ("reputation_mean", h.reputation_mean),
            ("credit_volume_24h", credits(h.credit_volume_24h)),
            ("credit_outstanding", credits(h.credit_outstanding)),
            ("credit_velocity_24h", h.credit_velocity_24h),
            ("credit_balance_sum", credits(h.balance_sum)),
        ];
        for (name, v) in values {
            if let Some(g) = self.0.figures.get(name) {
                g.set(v);
            }
        }
    }

    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        self.encode_into(&mut out);
        let _ = prometheus_client::encoding::text::encode_eof(&mut out);
        out
    }

    /// Appends the metrics to `out`, without the final `# EOF`: `ui up` serves them with the
    /// apiserver's and the node agent's in one exposition.
    pub fn encode_into(&self, out: &mut String) {
        // Writing into a String cannot fail; the two registries are one exposition.
        let _ = prometheus_client::encoding::text::encode_registry(out, &self.0.registry);
        let _ = prometheus_client::encoding::text::encode_registry(out, &self.0.network);
    }

    /// Serves `/metrics` on `addr` until `shutdown` resolves.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let app = Router::new().route(
            "/metrics",
            get(move || {
                let metrics = self.clone();
                async move {
                    (
                        [(CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
                        metrics.encode(),
                    )
                        .into_response()
                }
            }),
        );
        axum::serve(listener, app).with_graceful_shutdown(shutdown).await
    }
}

/// Binds the metrics listener (so a taken port is an error before anything starts).
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}
