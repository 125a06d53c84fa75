//! Prometheus metrics of the apiserver and its Raft member, and the `/metrics` endpoint that
//! serves them.
//!
//! Named as kube-apiserver and etcd name theirs wherever the meaning is the same, so that the
//! dashboards and alerts written for them (kubernetes-mixin, etcd's mixin) read these as they
//! are: `apiserver_request_total`, `apiserver_request_duration_seconds`,
//! `apiserver_current_inflight_requests`, `apiserver_registered_watchers`,
//! `apiserver_watch_events_total`; `etcd_server_has_leader`,
//! `etcd_server_leader_changes_seen_total`, `etcd_server_proposals_{committed,applied,pending,
//! failed}_total`, `etcd_disk_wal_fsync_duration_seconds` (the Raft log's fsync),
//! `etcd_disk_backend_commit_duration_seconds` (the state machine's commits: of the applies
//! held, at most 100 ms after the first, and of compaction and snapshots),
//! `etcd_mvcc_db_total_size_in_bytes` (the state machine's file).
//!
//! **Who may read them.** They are served only when `ui apiserver --metrics-addr ADDR` asks,
//! on a listener of their own in plain HTTP, as `ui controllers run --metrics-addr` does:
//! whoever can reach ADDR reads them, so ADDR is loopback unless the operator chooses
//! otherwise (the apiserver warns). They are not on the API port: any key is a user there, and
//! request rates, resource names and the leader's state are not every user's business.
//!
//! The metrics are one registry per process (as kube-apiserver's legacy registry and etcd's
//! default one): the Raft storage, the node and the HTTP layer record into [`metrics()`]
//! without a handle threaded through them. Recording is atomic adds, outside every lock of
//! the store; a family's label set is created once, under the family's own lock.

use std::sync::LazyLock;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use axum::Router;
use axum::extract::Request;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of `apiserver_request_total` (as kube-apiserver's, without `dry_run`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `GET`, `LIST`, `WATCH`, `CREATE`, `UPDATE`, `PATCH`, `APPLY`, `DELETE`,
    /// `DELETECOLLECTION`; for a path that names no resource, the HTTP method.
    pub verb: &'static str,
    /// The API group (`univrs.io`; empty for the core group and for non-resource paths).
    pub group: &'static str,
    /// The API version (`v1`; empty for non-resource paths).
    pub version: &'static str,
    /// The resource's plural (empty for non-resource paths and unknown resources).
    pub resource: &'static str,
    /// `status`, `log`, or empty.
    pub subresource: &'static str,
    /// `resource` (one object), `namespace` (a collection in a namespace), `cluster`, or empty.
    pub scope: &'static str,
    /// Always `apiserver`.
    pub component: &'static str,
    /// The HTTP status code.
    pub code: u16,
}

/// Labels of `apiserver_request_duration_seconds`: those of the request counter but the code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DurationLabels {
    /// As [`RequestLabels::verb`].
    pub verb: &'static str,
    /// As [`RequestLabels::group`].
    pub group: &'static str,
    /// As [`RequestLabels::version`].
    pub version: &'static str,
    /// As [`RequestLabels::resource`].
    pub resource: &'static str,
    /// As [`RequestLabels::subresource`].
    pub subresource: &'static str,
    /// As [`RequestLabels::scope`].
    pub scope: &'static str,
    /// Always `apiserver`.
    pub component: &'static str,
}

/// Labels of `apiserver_current_inflight_requests`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InflightLabels {
    /// `readOnly` or `mutating`.
    pub request_kind: &'static str,
}

/// Labels of the watch metrics (as kube-apiserver's: group, version, kind).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WatchLabels {
    /// The API group.
    pub group: &'static str,
    /// The API version.
    pub version: &'static str,
    /// The kind watched (`Workload`, …).
    pub kind: &'static str,
}

/// kube-apiserver's request buckets, coarser: 5 ms to 60 s in 12 steps (its histogram is
/// routinely the largest series of a Prometheus; these are enough for p50/p99 panels).
const REQUEST_BUCKETS: [f64; 12] = [0.005, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

fn request_histogram() -> Histogram {
    Histogram::new(REQUEST_BUCKETS)
}

/// etcd's disk buckets: 1 ms to ~8 s, doubling (`etcd/server/storage/wal/metrics.go`).
fn disk_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 14))
}

/// Labels of the write-refusal counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    /// The request's verb (`CREATE`, `UPDATE`, `PATCH`, `DELETE`, …).
    pub verb: &'static str,
    /// The resource (`workloads`, …).
    pub resource: &'static str,
    /// The `Status` reason: `Forbidden`, `Invalid`, `Conflict`, `TooManyRequests`, ….
    pub reason: String,
}

/// Every metric the apiserver records.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: Family<DurationLabels, Histogram, fn() -> Histogram>,
    inflight: Family<InflightLabels, Gauge>,
    watchers: Family<WatchLabels, Gauge>,
    watch_events: Family<WatchLabels, Counter>,
    has_leader: Gauge,
    leader_changes: Counter,
    committed: Gauge<u64, AtomicU64>,
    applied: Gauge<u64, AtomicU64>,
    pending: Gauge,
    failed: Counter,
    wal_fsync: Histogram,
    backend_commit: Histogram,
    db_size: Gauge<u64, AtomicU64>,
    refusals: Family<RefusalLabels, Counter>,
    forwarded_writes: Counter,
    forward_messages: Counter,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

impl Metrics {
    fn new() -> Self {
        let mut r = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let durations = Family::new_with_constructor(request_histogram as fn() -> Histogram);
        let inflight = Family::<InflightLabels, Gauge>::default();
        let watchers = Family::<WatchLabels, Gauge>::default();
        let watch_events = Family::<WatchLabels, Counter>::default();
        let has_leader = Gauge::default();
        let leader_changes = Counter::default();
        let committed = Gauge::<u64, AtomicU64>::default();
        let applied = Gauge::<u64, AtomicU64>::default();
        let pending = Gauge::default();
        let failed = Counter::default();
        let wal_fsync = disk_histogram();
        let backend_commit = disk_histogram();
        let db_size = Gauge::<u64, AtomicU64>::default();
        // Counters are registered without `_total`: the encoder appends it.
        r.register(
            "apiserver_request",
            "Counter of apiserver requests broken out for each verb, group, version, resource, scope, component, and HTTP response code",
            requests.clone(),
        );
        r.register(
            "apiserver_request_duration_seconds",
            "Response latency distribution in seconds for each verb, group, version, resource, subresource, scope and component (long-running requests, WATCH and logs, are not recorded)",
            durations.clone(),
        );
        r.register(
            "apiserver_current_inflight_requests",
            "Number of requests being served now, per request kind (kube-apiserver reports the most of the last second)",
            inflight.clone(),
        );
        r.register(
            "apiserver_registered_watchers",
            "Number of currently registered watchers for a given resources",
            watchers.clone(),
        );
        r.register("apiserver_watch_events", "Number of events sent in watch clients", watch_events.clone());
        r.register(
            "etcd_server_has_leader",
            "Whether or not a leader exists. 1 is existence, 0 is not",
            has_leader.clone(),
        );
        r.register(
            "etcd_server_leader_changes_seen",
            "The number of leader changes seen",
            leader_changes.clone(),
        );
        // etcd's committed and applied "totals" are gauges of the Raft index.
        r.register(
            "etcd_server_proposals_committed_total",
            "The total number of consensus proposals committed (the Raft commit index)",
            committed.clone(),
        );
        r.register(
            "etcd_server_proposals_applied_total",
            "The total number of consensus proposals applied (the last applied Raft index)",
            applied.clone(),
        );
        r.register(
            "etcd_server_proposals_pending",
            "The current number of pending proposals to commit",
            pending.clone(),
        );
        r.register(
            "etcd_server_proposals_failed",
            "The total number of failed proposals seen",
            failed.clone(),
        );
        r.register(
            "etcd_disk_wal_fsync_duration_seconds",
            "The latency distributions of fsync called by the Raft log (the WAL)",
            wal_fsync.clone(),
        );
        r.register(
            "etcd_disk_backend_commit_duration_seconds",
            "The latency distributions of commit called by the state machine (the backend)",
            backend_commit.clone(),
        );
        r.register(
            "etcd_mvcc_db_total_size_in_bytes",
            "Total size of the underlying database physically allocated in bytes",
            db_size.clone(),
        );
        let refusals = Family::<RefusalLabels, Counter>::default();
        r.register(
            "univrs_apiserver_write_refusals",
            "Writes the apiserver refused (authorization, admission, validation, quotas, preconditions), by reason",
            refusals.clone(),
        );
        let forwarded_writes = Counter::default();
        r.register(
            "univrs_raft_forwarded_writes",
            "Client writes this member (a follower) forwarded to the leader",
            forwarded_writes.clone(),
        );
        let forward_messages = Counter::default();
        r.register(
            "univrs_raft_forward_messages",
            "Messages those writes went in (under load, one carries several)",
            forward_messages.clone(),
        );
        Self {
            registry: r,
            requests,
            durations,
            inflight,
            watchers,
            watch_events,
            has_leader,
            leader_changes,
            committed,
            applied,
            pending,
            failed,
            wal_fsync,
            backend_commit,
            db_size,
            refusals,
            forwarded_writes,
            forward_messages,
        }
    }

    /// Records one fsync'd commit of the Raft log.
    pub fn wal_fsynced(&self, since: Instant) {
        self.wal_fsync.observe(since.elapsed().as_secs_f64());
    }

    /// Records one commit of the state machine.
    pub fn backend_committed(&self, since: Instant) {
        self.backend_commit.observe(since.elapsed().as_secs_f64());
    }

    /// Sets the commit index.
    pub fn set_committed(&self, index: u64) {
        self.committed.set(index);
    }

    /// Sets the last applied index.
    pub fn set_applied(&self, index: u64) {
        self.applied.set(index);
    }

    /// Sets the state machine's file size.
    pub fn set_db_size(&self, bytes: u64) {
        self.db_size.set(bytes);
    }

    /// Records whether a leader is known, counting a change to a new leader (as etcd: every
    /// time the known leader becomes another one that is not none).
    pub fn leader_seen(&self, previous: Option<u64>, now: Option<u64>) {
        self.has_leader.set(i64::from(now.is_some()));
        if now.is_some() && now != previous {
            self.leader_changes.inc();
        }
    }

    /// A proposal of this member: pending until the guard is dropped; [`Proposal::failed`]
    /// counts it as failed.
    pub fn propose(&'static self) -> Proposal {
        self.pending.inc();
        Proposal(self)
    }

    /// `writes` client writes forwarded to the leader in one message.
    pub fn forwarded(&self, writes: usize) {
        self.forward_messages.inc();
        self.forwarded_writes.inc_by(writes as u64);
    }

    /// A watch being served: registered until the guard is dropped.
    pub fn watcher(&'static self, kind: &'static str) -> Watcher {
        let labels = WatchLabels { group: api::GROUP, version: api::VERSION, kind };
        self.watchers.get_or_create(&labels).inc();
        Watcher { metrics: self, labels }
    }

    /// The metrics in the Prometheus (OpenMetrics) text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        self.encode_into(&mut out);
        end(&mut out);
        out
    }

    /// Appends the metrics to `out`, without the final `# EOF` (see [`end`]): a process that
    /// also runs controllers or a node agent serves theirs in the same exposition.
    pub fn encode_into(&self, out: &mut String) {
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode_registry(out, &self.registry);
    }
}

/// A pending proposal (see [`Metrics::propose`]).
#[derive(Debug)]
pub struct Proposal(&'static Metrics);

impl Proposal {
    /// Counts the proposal as failed.
    pub fn failed(&self) {
        self.0.failed.inc();
    }
}

impl Drop for Proposal {
    fn drop(&mut self) {
        self.0.pending.dec();
    }
}

/// A registered watcher (see [`Metrics::watcher`]).
#[derive(Debug)]
pub struct Watcher {
    metrics: &'static Metrics,
    labels: WatchLabels,
}

impl Watcher {
    /// Counts one event sent.
    pub fn sent(&self) {
        self.metrics.watch_events.get_or_create(&self.labels).inc();
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.metrics.watchers.get_or_create(&self.labels).dec();
    }
}

/// What a request is, in the terms of the request metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Classified {
    verb: &'static str,
    group: &'static str,
    version: &'static str,
    resource: &'static str,
    subresource: &'static str,
    scope: &'static str,
    /// WATCH and logs: not in flight, and their duration is not a latency.
    long_running: bool,
}

const REVIEWS: [&str; 3] = ["selfsubjectaccessreviews", "selfsubjectrulesreviews", "selfsubjectreviews"];

/// Sorts a request into the metrics' labels. Every label value is one of a fixed set (never a
/// string from the request), so no client can grow the number of series.
pub fn classify(method: &Method, path: &str, query: Option<&str>, headers: &HeaderMap) -> Classified {
    let non_resource = Classified {
        verb: match *method {
            Method::GET => "GET",
            Method::HEAD => "HEAD",
            Method::POST => "POST",
            Method::PUT => "PUT",
            Method::PATCH => "PATCH",
            Method::DELETE => "DELETE",
            Method::OPTIONS => "OPTIONS",
            _ => "OTHER",
        },
        group: "",
        version: "",
        resource: "",
        subresource: "",
        scope: "",
        long_running: false,
    };
    // The group versions of the kinds (univrs.io/v1, events.k8s.io/v1): labels from that fixed set.
    let kinds = path.strip_prefix("/apis/").and_then(|p| {
        api::kinds::group_versions()
            .into_iter()
            .find_map(|(g, v, gv)| Some((g, v, p.strip_prefix(gv)?.strip_prefix('/')?)))
    });
    let (group, version, rest) = if let Some(found) = kinds {
        found
    } else if let Some(rest) = path.strip_prefix("/api/v1/") {
        ("", "v1", rest)
    } else if let Some(rest) = path.strip_prefix("/apis/authorization.k8s.io/v1/") {
        ("authorization.k8s.io", "v1", rest)
    } else if let Some(rest) = path.strip_prefix("/apis/authentication.k8s.io/v1/") {
        ("authentication.k8s.io", "v1", rest)
    } else {
        return non_resource;
    };
    let segments: Vec<&str> = rest.split('/').collect();
    let (namespaced, rest) = match segments.as_slice() {
        ["namespaces", _, rest @ ..] if !rest.is_empty() => (true, rest),
        rest => (false, rest),
    };
    let (plural, name, sub) = match rest {
        [plural] => (*plural, None, None),
        [plural, name] => (*plural, Some(*name), None),
        [plural, name, sub, ..] => (*plural, Some(*name), Some(*sub)),
        [] => return non_resource,
    };
    let resource = match group {
        "" => ["services", "events"].into_iter().find(|p| *p == plural),
        "authorization.k8s.io" | "authentication.k8s.io" => REVIEWS.into_iter().find(|p| *p == plural),
        g => api::kinds::KINDS.iter().filter(|k| k.group == g).map(|k| k.plural).find(|p| *p == plural),
    }
    .unwrap_or("");
    let subresource = match sub {
        None => "",
        Some("status") => "status",
        Some("log") => "log",
        Some("proxy") => "proxy",
        Some(_) => "other",
    };
    let query = query.unwrap_or("");
    let flag = |name: &str| {
        serde_urlencoded::from_str::<Vec<(String, String)>>(query)
            .unwrap_or_default()
            .iter()
            .any(|(k, v)| k == name && (v == "true" || v == "1"))
    };
    let apply = headers
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/apply-patch"));
    let verb = match (method, name) {
        (&Method::GET, Some(_)) => "GET",
        (&Method::GET, None) if flag("watch") => "WATCH",
        (&Method::GET, None) => "LIST",
        (&Method::POST, _) => "CREATE",
        (&Method::PUT, _) => "UPDATE",
        (&Method::PATCH, _) if apply => "APPLY",
        (&Method::PATCH, _) => "PATCH",
        (&Method::DELETE, Some(_)) => "DELETE",
        (&Method::DELETE, None) => "DELETECOLLECTION",
        _ => non_resource.verb,
    };
    let scope = match (name, namespaced) {
        (Some(_), _) => "resource",
        (None, true) => "namespace",
        (None, false) => "cluster",
    };
    let long_running = verb == "WATCH" || subresource == "log" || subresource == "proxy";
    Classified { verb, group, version, resource, subresource, scope, long_running }
}

/// Decrements a gauge when dropped (a request in flight ends also when it is cancelled).
struct InflightGuard(Gauge);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The middleware of the request metrics: counts every request by what it is and its status
/// code, times those that are not long-running (until the response's head is ready: the
/// bodies of those responses are already whole) and holds them in flight meanwhile.
pub async fn track(req: Request, next: Next) -> Response {
    let m = metrics();
    let c = classify(req.method(), req.uri().path(), req.uri().query(), req.headers());
    let started = Instant::now();
    let guard = (!c.long_running).then(|| {
        let kind =
            if matches!(c.verb, "GET" | "LIST" | "HEAD" | "OPTIONS") { "readOnly" } else { "mutating" };
        let gauge = m.inflight.get_or_create(&InflightLabels { request_kind: kind }).clone();
        gauge.inc();
        InflightGuard(gauge)
    });
    let response = next.run(req).await;
    drop(guard);
    let d = DurationLabels {
        verb: c.verb,
        group: c.group,
        version: c.version,
        resource: c.resource,
        subresource: c.subresource,
        scope: c.scope,
        component: "apiserver",
    };
    if !c.long_running {
        m.durations.get_or_create(&d).observe(started.elapsed().as_secs_f64());
    }
    if is_write(c.verb) && (response.status().is_client_error() || response.status().is_server_error()) {
        let why = response.extensions().get::<crate::http::Failed>();
        let reason = why.map_or("Unknown", |f| f.reason.as_str());
        m.refusals
            .get_or_create(&RefusalLabels { verb: c.verb, resource: c.resource, reason: reason.to_owned() })
            .inc();
        let message = why.map_or("", |f| f.message.as_str());
        let code = response.status().as_u16();
        // The message goes in a field (quoted and escaped: a name from a URL cannot forge a
        // line), and refusals at info are budgeted: anyone can make a fresh key and be refused.
        match code {
            500.. => {
                tracing::warn!(verb = c.verb, resource = c.resource, code, why = %one_line(message), "write failed")
            }
            // Unauthenticated, rate-limited, not found and conflicts: a stranger's noise or the
            // everyday races of clients that retry, not worth a line each.
            401 | 404 | 409 | 429 => {
                tracing::debug!(verb = c.verb, resource = c.resource, code, reason, why = %one_line(message), "write refused")
            }
            _ => match REFUSAL_LINES.take() {
                Budget::Log { suppressed: 0 } => {
                    tracing::info!(verb = c.verb, resource = c.resource, code, reason, why = %one_line(message), "write refused")
                }
                Budget::Log { suppressed } => tracing::info!(
                    verb = c.verb,
                    resource = c.resource,
                    code,
                    reason,
                    why = %one_line(message),
                    suppressed,
                    "write refused ({suppressed} refusal lines suppressed before it; univrs_apiserver_write_refusals_total counts them all)"
                ),
                Budget::Quiet => {}
            },
        }
    }
    let labels = RequestLabels {
        verb: d.verb,
        group: d.group,
        version: d.version,
        resource: d.resource,
        subresource: d.subresource,
        scope: d.scope,
        component: d.component,
        code: response.status().as_u16(),
    };
    m.requests.get_or_create(&labels).inc();
    response
}

/// `text` on one line: control characters (a newline in a name from a URL, say) escaped, so
/// that nobody can forge a log line.
fn one_line(text: &str) -> String {
    text.chars()
        .flat_map(|c| if c.is_control() { c.escape_default().collect::<Vec<_>>() } else { vec![c] })
        .collect()
}

/// How many refusal lines the log gets: [`LogBudget::PER_SECOND`] a second, the rest counted.
static REFUSAL_LINES: LogBudget = LogBudget::new();

/// What [`LogBudget::take`] allows.
#[derive(Debug, PartialEq, Eq)]
enum Budget {
    /// Log this line; `suppressed` lines were dropped since the last one logged.
    Log { suppressed: u64 },
    /// Drop it (counted).
    Quiet,
}

/// A per-second budget of log lines, so that nobody floods a member's log (and disk).
#[derive(Debug)]
struct LogBudget(std::sync::Mutex<(u64, u64, u64)>);

impl LogBudget {
    const PER_SECOND: u64 = 10;

    const fn new() -> Self {
        Self(std::sync::Mutex::new((0, 0, 0)))
    }

    fn take(&self) -> Budget {
        let second =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        self.take_at(second)
    }

    /// The budget at `second`: (the second, lines logged in it, lines suppressed since the
    /// last logged).
    fn take_at(&self, second: u64) -> Budget {
        let mut s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let (at, used, suppressed) = &mut *s;
        if *at != second {
            *at = second;
            *used = 0;
        }
        if *used < Self::PER_SECOND {
            *used += 1;
            Budget::Log { suppressed: std::mem::take(suppressed) }
        } else {
            *suppressed += 1;
            Budget::Quiet
        }
    }
}

/// Whether a (classified) verb changes something.
fn is_write(verb: &str) -> bool {
    matches!(verb, "CREATE" | "UPDATE" | "PATCH" | "APPLY" | "DELETE" | "DELETECOLLECTION" | "POST" | "PUT")
}

/// Ends an exposition (OpenMetrics' `# EOF`).
pub fn end(out: &mut String) {
    let _ = prometheus_client::encoding::text::encode_eof(out);
}

/// Serves `/metrics` on `listener` until `shutdown` resolves; `exposition` makes the body of
/// each scrape (refreshing first what is read rather than recorded, like the database's size).
pub async fn serve(
    listener: tokio::net::TcpListener,
    exposition: impl Fn() -> String + Clone + Send + Sync + 'static,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let exposition = exposition.clone();
            async move {
                ([(CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], exposition())
                    .into_response()
            }
        }),
    );
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(
        method: Method,
        path: &str,
        query: Option<&str>,
    ) -> (&'static str, &'static str, &'static str, bool) {
        let k = classify(&method, path, query, &HeaderMap::new());
        (k.verb, k.resource, k.scope, k.long_running)
    }

    #[test]
    fn a_refusal_is_logged_on_one_line() {
        assert_eq!(one_line("a\nINFO forged\r\tb"), "a\\nINFO forged\\r\\tb");
        assert_eq!(one_line("plain «text»"), "plain «text»");
    }

    #[test]
    fn refusal_lines_are_budgeted_per_second_and_say_how_many_were_dropped() {
        let b = LogBudget::new();
        for _ in 0..LogBudget::PER_SECOND {
            assert_eq!(b.take_at(7), Budget::Log { suppressed: 0 });
        }
        assert_eq!(b.take_at(7), Budget::Quiet);
        assert_eq!(b.take_at(7), Budget::Quiet);
        assert_eq!(b.take_at(8), Budget::Log { suppressed: 2 });
        assert_eq!(b.take_at(8), Budget::Log { suppressed: 0 });
    }

    #[test]
    fn requests_are_classified_as_kube_apiserver_does() {
        let ws = "/apis/univrs.io/v1/namespaces/default/workloads";
        assert_eq!(c(Method::GET, ws, None), ("LIST", "workloads", "namespace", false));
        assert_eq!(c(Method::GET, ws, Some("watch=true")), ("WATCH", "workloads", "namespace", true));
        assert_eq!(c(Method::GET, &format!("{ws}/web"), None), ("GET", "workloads", "resource", false));
        assert_eq!(c(Method::POST, ws, None), ("CREATE", "workloads", "namespace", false));
        assert_eq!(
            c(Method::PUT, &format!("{ws}/web/status"), None),
            ("UPDATE", "workloads", "resource", false)
        );
        assert_eq!(c(Method::DELETE, ws, None), ("DELETECOLLECTION", "workloads", "namespace", false));
        assert_eq!(c(Method::GET, "/apis/univrs.io/v1/nodes", None), ("LIST", "nodes", "cluster", false));
        assert_eq!(c(Method::GET, "/healthz", None), ("GET", "", "", false));
    }

    #[test]
    fn no_label_comes_from_the_request() {
        let k = classify(
            &Method::from_bytes(b"BREW").unwrap(),
            "/apis/univrs.io/v1/namespaces/x/teapots/y/spout",
            None,
            &HeaderMap::new(),
        );
        assert_eq!((k.verb, k.resource, k.subresource), ("OTHER", "", "other"));
    }
}
