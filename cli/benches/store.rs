//! univrs beside etcd, on demand (`cargo bench -p cli --bench store`), never in CI: the
//! figures of issue 15 in one table, every row a ratio.
//!
//! Both systems are real processes on loopback started here — `ui apiserver` (release build)
//! and Debian's `etcd-server` 3.4 (`etcd` on PATH) — with 1 and 3 members, over plain HTTP and
//! over TLS. One load generator (blocking HTTP clients, one thread and one keep-alive
//! connection per client) drives both with the same ~1.5 KiB objects and the same concurrency:
//! univrs through its Kubernetes API with a bearer token on every request (as its clients
//! really use it), etcd through its v3 JSON gateway (`/v3/kv/put`, `/v3/kv/txn`,
//! `/v3/kv/range`, `/v3/watch`; with TLS, a server certificate made here, no auth).
//!
//! Knobs (environment):
//! - `BENCH_OBJECTS` (100000): objects in the store for the get, list, RSS and disk rows;
//! - `BENCH_SECONDS` (5): length of each throughput phase;
//! - `BENCH_CLIENTS` (`1,16,64`): the concurrencies of the write rows;
//! - `BENCH_WATCHERS` (`100,1000`), `BENCH_WATCH_RATE` (200 writes/s), `BENCH_WATCH_SECONDS` (5);
//! - `BENCH_SETUPS` (`1-http,1-tls,3-http,3-tls`): members and transport;
//! - `BENCH_SYSTEMS` (`univrs,etcd`); add `floor` for the watch rows of the least a watch
//!   server can do (one write per event per watcher, [`floor_serve`]), in a table of its own;
//! - `BENCH_UNIVRS_ARGS`: more flags of every `ui apiserver` (e.g. `--write-batch 1`);
//! - `BENCH_UI_BINARY`: another build's `ui` to run instead of this one's (a build from before
//!   a change, to compare both beside etcd);
//! - `BENCH_ROUNDS` (1): run each setup this many times, each with fresh servers and a fresh
//!   fill, alternating which system goes first, and print each rate's ratio round by round and
//!   its median (for same-minute ratios on a noisy machine; use a smaller `BENCH_OBJECTS`);
//! - `BENCH_ONLY` (all): some of `reads,creates,signed,updates,watch` (the fill and the
//!   resource rows always run), e.g. to profile one phase.
//!
//! Quick run: `BENCH_OBJECTS=10000 BENCH_SECONDS=2 BENCH_WATCH_SECONDS=3 cargo bench -p cli --bench store`.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use ed25519_dalek::SigningKey;
use serde_json::{Value, json};
use support::{Server, User, free_port};

/// The size every stored object is padded to (bytes of JSON as the client sends it).
const OBJECT_BYTES: usize = 1536;
/// Objects matching one `group` label: the label list row reads 500 of them.
const PER_GROUP: u64 = 500;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn env_list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_owned())
        .split(',')
        .map(|s| s.trim().to_owned())
        .collect()
}

fn b64(s: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

// ---------------------------------------------------------------------------------------------
// Payloads

/// A Replica as the control plane writes it, with a `group` label (500 objects per group) and
/// an annotation padding it to [`OBJECT_BYTES`].
fn replica(namespace: &str, name: &str, group: u64, pad: usize) -> String {
    json!({ "apiVersion": "univrs.io/v1", "kind": "Replica",
        "metadata": { "name": name, "namespace": namespace,
            "labels": { "app": "bench", "group": format!("g{group}") },
            "annotations": { "bench/pad": "x".repeat(pad) } },
        "spec": { "workload": "bench-workload", "container": { "rootfs": "busybox",
            "command": ["/bin/sh", "-c", "while true; do echo hello from the benchmark; sleep 1; done"] } } })
    .to_string()
}

/// The padding that makes a replica [`OBJECT_BYTES`] long.
fn replica_pad() -> usize {
    OBJECT_BYTES - replica("default", "r0000000", 0, 0).len()
}

/// A Workload signed by `key`, padded so that the signed object is about [`OBJECT_BYTES`].
fn signed_workload(key: &SigningKey, name: &str) -> String {
    let build = |pad: usize| {
        json!({ "apiVersion": "univrs.io/v1", "kind": "Workload",
            "metadata": { "name": name, "namespace": "default", "labels": { "app": "bench" },
                "annotations": { "bench/pad": "x".repeat(pad) } },
            "spec": { "replicas": 0, "rootfs": "busybox",
                "command": ["/bin/sh", "-c", "while true; do echo hello; sleep 5; done"],
                "resources": { "cpu": "100m", "memory": "32Mi" }, "restartPolicy": "Always" } })
    };
    let mut probe = build(0);
    api::signing::sign(&mut probe, key, chrono::Utc::now()).unwrap();
    let mut object = build(OBJECT_BYTES.saturating_sub(probe.to_string().len()));
    api::signing::sign(&mut object, key, chrono::Utc::now()).unwrap();
    object.to_string()
}

// ---------------------------------------------------------------------------------------------
// Measurements

/// What one phase measured, on one system.
#[derive(Clone, Default)]
struct Measure {
    /// Operations (or delivered events) per second.
    rate: Option<f64>,
    p50: Option<Duration>,
    p99: Option<Duration>,
    /// Server CPU (utime + stime of every member) per operation.
    cpu: Option<Duration>,
    /// The load generator's own CPU (this process) per operation: it shares the machine's
    /// cores with the servers, so with no idle CPU left the rate is at most
    /// cores ÷ (server + load generator CPU per operation).
    load_cpu: Option<Duration>,
    /// The share of the machine's CPU time left idle during the phase (all cores).
    idle: Option<f64>,
    /// WAL fsyncs (all members) per write, from `etcd_disk_wal_fsync_duration_seconds_count`.
    fsyncs: Option<f64>,
    /// Their mean duration over the phase (how busy the disk was).
    fsync_mean: Option<Duration>,
    /// The share of the phase's wall time the busiest disk had I/O in flight (write phases).
    disk_busy: Option<f64>,
    /// A quantity (bytes) instead of a rate.
    bytes: Option<u64>,
    /// Failures, misses, caveats.
    note: String,
}

struct Row {
    /// The setup's label ("3 members, HTTP").
    setup: String,
    /// Which round of the setup (`BENCH_ROUNDS`), from 0.
    round: usize,
    scenario: String,
    univrs: Option<Measure>,
    etcd: Option<Measure>,
    /// The floor's figure for the same scenario (watch rows, when `floor` ran).
    floor: Option<Measure>,
}

fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    Some(sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)])
}

fn fmt_dur(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 {
        format!("{us:.0} µs")
    } else if us < 10_000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else if us < 1_000_000.0 {
        format!("{:.0} ms", us / 1000.0)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

fn fmt_bytes(b: u64) -> String {
    if b >= 1 << 30 {
        format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64)
    } else {
        format!("{:.0} MiB", b as f64 / (1u64 << 20) as f64)
    }
}

fn fmt_rate(r: f64) -> String {
    let n = r.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    format!("{out}/s")
}

impl Measure {
    fn cell(&self) -> String {
        let mut parts = Vec::new();
        if let Some(b) = self.bytes {
            parts.push(fmt_bytes(b));
        }
        if let Some(r) = self.rate {
            parts.push(fmt_rate(r));
        }
        if let Some(p) = self.p50 {
            parts.push(format!("p50 {}", fmt_dur(p)));
        }
        if let Some(p) = self.p99 {
            parts.push(format!("p99 {}", fmt_dur(p)));
        }
        if let Some(c) = self.cpu {
            parts.push(format!("CPU {}/op", fmt_dur(c)));
        }
        if let Some(c) = self.load_cpu {
            parts.push(format!("load gen {}/op", fmt_dur(c)));
        }
        if let Some(i) = self.idle {
            parts.push(format!("idle {:.0}%", i * 100.0));
        }
        if let Some(f) = self.fsyncs {
            parts.push(format!("{f:.2} fsync/op"));
        }
        if let Some(f) = self.fsync_mean {
            parts.push(format!("fsync {}", fmt_dur(f)));
        }
        if let Some(b) = self.disk_busy {
            parts.push(format!("disk busy {:.0}%", b * 100.0));
        }
        if !self.note.is_empty() {
            parts.push(format!("({})", self.note));
        }
        parts.join(" · ")
    }
}

/// univrs ÷ etcd of the figures both have.
fn ratio(u: &Measure, e: &Measure) -> String {
    let mut parts = Vec::new();
    let r = |a: f64, b: f64| if b > 0.0 { format!("×{:.2}", a / b) } else { "–".into() };
    if let (Some(a), Some(b)) = (u.bytes, e.bytes) {
        parts.push(format!("size {}", r(a as f64, b as f64)));
    }
    if let (Some(a), Some(b)) = (u.rate, e.rate) {
        parts.push(format!("rate {}", r(a, b)));
    }
    if let (Some(a), Some(b)) = (u.p50, e.p50) {
        parts.push(format!("p50 {}", r(a.as_secs_f64(), b.as_secs_f64())));
    }
    if let (Some(a), Some(b)) = (u.p99, e.p99) {
        parts.push(format!("p99 {}", r(a.as_secs_f64(), b.as_secs_f64())));
    }
    if let (Some(a), Some(b)) = (u.cpu, e.cpu) {
        parts.push(format!("CPU {}", r(a.as_secs_f64(), b.as_secs_f64())));
    }
    parts.join(" · ")
}

/// The machine's idle and total CPU time so far, in clock ticks (all cores, `/proc/stat`).
fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu: Vec<u64> =
        stat.lines().next()?.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal (guest time is within user).
    let idle = cpu.get(3)? + cpu.get(4).unwrap_or(&0);
    Some((idle, cpu.iter().take(8).sum()))
}

/// The share of CPU time idle between two [`machine_ticks`].
fn idle_between(a: Option<(u64, u64)>, b: Option<(u64, u64)>) -> Option<f64> {
    let ((i0, t0), (i1, t1)) = (a?, b?);
    (t1 > t0).then(|| (i1 - i0) as f64 / (t1 - t0) as f64)
}

/// Milliseconds each whole disk has had I/O in flight so far (`/proc/diskstats`' tenth
/// field after the name, "time spent doing I/Os"), by name: the disks of `/sys/block` but
/// loop, RAM and zram devices, which hold no data directory.
fn disk_ticks() -> Option<BTreeMap<String, u64>> {
    let stats = std::fs::read_to_string("/proc/diskstats").ok()?;
    let ticks = stats
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let name = *fields.get(2)?;
            if ["loop", "ram", "zram"].iter().any(|p| name.starts_with(p))
                || !Path::new("/sys/block").join(name).exists()
            {
                return None;
            }
            Some((name.to_owned(), fields.get(12)?.parse().ok()?))
        })
        .collect::<BTreeMap<_, _>>();
    (!ticks.is_empty()).then_some(ticks)
}

/// The share of `elapsed` the busiest disk had I/O in flight between two [`disk_ticks`].
fn busy_between(
    a: Option<&BTreeMap<String, u64>>,
    b: Option<&BTreeMap<String, u64>>,
    elapsed: Duration,
) -> Option<f64> {
    let (a, b) = (a?, b?);
    let busiest = b.iter().filter_map(|(name, t1)| Some(t1.saturating_sub(*a.get(name)?))).max()?;
    (elapsed.as_millis() > 0).then(|| (busiest as f64 / elapsed.as_millis() as f64).min(1.0))
}

/// utime + stime of `pid` in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, r)| r).split_whitespace().collect();
    // After the command: state is field 3, utime 14 and stime 15 (1-based in proc(5)).
    let ticks = |i: usize| fields.get(i - 3).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (ticks(14) + ticks(15)) as f64 / clock_ticks()
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        let out = Command::new("getconf").arg("CLK_TCK").output().ok();
        out.and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok()).unwrap_or(100.0)
    })
}

/// A `/proc/PID/status` field in bytes (`VmHWM`, `VmRSS`).
fn status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Bytes allocated on disk under `dir`.
fn disk_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        total += if meta.is_dir() { disk_bytes(&entry.path()) } else { meta.blocks() * 512 };
    }
    total
}

/// The largest files under `dir` (path relative to it, bytes allocated), largest first.
fn largest_files(dir: &Path, n: usize) -> Vec<(String, u64)> {
    use std::os::unix::fs::MetadataExt;
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, u64)>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                walk(root, &entry.path(), out);
            } else {
                let name = entry.path().strip_prefix(root).unwrap_or(&entry.path()).display().to_string();
                out.push((name, meta.blocks() * 512));
            }
        }
    }
    let mut files = Vec::new();
    walk(dir, dir, &mut files);
    files.sort_by_key(|f| std::cmp::Reverse(f.1));
    files.truncate(n);
    files
}

// ---------------------------------------------------------------------------------------------
// The systems under test

#[derive(Clone, Copy, PartialEq, Eq)]
enum Sys {
    Univrs,
    Etcd,
    /// The least a watch server does: one write per event per watcher ([`floor_serve`]).
    Floor,
}

impl Sys {
    fn name(self) -> &'static str {
        match self {
            Sys::Univrs => "univrs",
            Sys::Etcd => "etcd",
            Sys::Floor => "floor",
        }
    }
}

/// A running cluster of one system, and what the load generator needs to reach it.
struct Sut {
    sys: Sys,
    /// Base URL of each member's API.
    urls: Vec<String>,
    /// Each member's metrics URL.
    metrics: Vec<String>,
    pids: Vec<u32>,
    data: Vec<PathBuf>,
    /// The CA to trust (TLS), PEM.
    ca: Option<Vec<u8>>,
    /// univrs: the member key (Replicas are written by the control plane), the user key (signed
    /// Workloads), the tokens' audience.
    member_key: Option<SigningKey>,
    user_key: SigningKey,
    audience: String,
    /// Replicas in `default` (named `r{index}`, labeled `group=g{index % groups}`: 500 a group).
    replicas: AtomicU64,
    groups: u64,
    pad: usize,
    _servers: Vec<Server>,
    _users: Vec<User>,
    children: Vec<Child>,
    _dir: Option<tempfile::TempDir>,
}

impl Drop for Sut {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn read_key(data: &Path) -> SigningKey {
    let key = std::fs::read_to_string(data.join("member.key")).unwrap();
    let bytes: Vec<u8> =
        (0..32).map(|i| u8::from_str_radix(&key.trim()[2 * i..2 * i + 2], 16).unwrap()).collect();
    SigningKey::from_bytes(&bytes.try_into().unwrap())
}

fn did(key: &SigningKey) -> String {
    api::identity::Did::from_key(&key.verifying_key()).as_str().to_owned()
}

/// Flags that lift the per-identity quotas and connection caps out of the benchmark's way
/// (the user's signed Workloads are not a member's and would otherwise be rate-limited).
const UNIVRS_FLAGS: &[&str] = &[
    "--quota-objects",
    "100000000",
    "--quota-bytes",
    "1000000000000",
    "--rate-limit",
    "1000000",
    "--rate-burst",
    "1000000",
    "--quota-watches",
    "100000",
    "--max-connections",
    "8192",
    "--max-connections-per-address",
    "8192",
];

fn univrs(members: usize, tls: bool, objects: u64) -> Sut {
    let mut users: Vec<User> = Vec::new();
    let mut servers: Vec<Server> = Vec::new();
    let mut metrics = Vec::new();
    let mut join = None;
    for i in 0..members {
        let user = User::new();
        let data = user.path("data");
        let metrics_port = free_port();
        let metrics_addr = format!("127.0.0.1:{metrics_port}");
        let mut extra: Vec<String> = UNIVRS_FLAGS.iter().map(|s| s.to_string()).collect();
        // More flags of `ui apiserver` (e.g. `--write-batch 1`, group commit off, for a before
        // and after in one build).
        extra.extend(
            std::env::var("BENCH_UNIVRS_ARGS").unwrap_or_default().split_whitespace().map(String::from),
        );
        extra.extend(["--metrics-addr".into(), metrics_addr.clone()]);
        if !tls {
            extra.push("--insecure-http".into());
        }
        if members > 1 {
            let peer = format!("127.0.0.1:{}", free_port());
            extra.extend(["--peer-listen".into(), peer.clone()]);
            if i == 0 {
                join = Some(peer);
            } else {
                std::fs::create_dir_all(&data).unwrap();
                let key = SigningKey::generate(&mut rand_core::OsRng);
                let hex: String = key.to_bytes().iter().map(|b| format!("{b:02x}")).collect();
                std::fs::write(data.join("member.key"), hex).unwrap();
                let kubeconfig = servers[0].member_kubeconfig();
                users[0]
                    .run(&["cluster", "add", &did(&key), &peer, "--kubeconfig", kubeconfig.to_str().unwrap()])
                    .ok();
                let founder = did(&read_key(&servers[0].data));
                extra.extend(["--join".into(), format!("{founder}@{}", join.as_ref().unwrap())]);
            }
        }
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let server = Server::start_with(&user, &data, "127.0.0.1:0", &extra);
        metrics.push(format!("http://{metrics_addr}/metrics"));
        servers.push(server);
        users.push(user);
    }
    let sut = Sut {
        sys: Sys::Univrs,
        urls: servers.iter().map(|s| s.url.clone()).collect(),
        metrics,
        pids: servers.iter().map(Server::pid).collect(),
        data: servers.iter().map(|s| s.data.clone()).collect(),
        ca: tls.then(|| std::fs::read(servers[0].data.join("tls").join("ca.crt")).unwrap()),
        member_key: Some(read_key(&servers[0].data)),
        user_key: SigningKey::generate(&mut rand_core::OsRng),
        audience: servers[0].audience.clone(),
        replicas: AtomicU64::new(0),
        groups: (objects / PER_GROUP).max(1),
        pad: replica_pad(),
        _servers: servers,
        _users: users,
        children: Vec::new(),
        _dir: None,
    };
    sut.wait_ready();
    sut
}

/// A CA and a server certificate for 127.0.0.1, written to `dir`: (CA PEM, cert path, key path).
fn etcd_certs(dir: &Path) -> (Vec<u8>, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.clone().self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let (cert_path, key_path) = (dir.join("server.crt"), dir.join("server.key"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (ca.pem().into_bytes(), cert_path, key_path)
}

fn etcd(members: usize, tls: bool, objects: u64) -> Option<Sut> {
    if Command::new("etcd").arg("--version").output().is_err() {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = etcd_certs(dir.path());
    let scheme = if tls { "https" } else { "http" };
    let ports: Vec<(u16, u16)> = (0..members).map(|_| (free_port(), free_port())).collect();
    let initial: Vec<String> =
        ports.iter().enumerate().map(|(i, (_, peer))| format!("e{i}=http://127.0.0.1:{peer}")).collect();
    let data: Vec<PathBuf> = (0..members).map(|i| dir.path().join(format!("e{i}"))).collect();
    let children: Vec<Child> = ports
        .iter()
        .enumerate()
        .map(|(i, (client, peer))| {
            let client_url = format!("{scheme}://127.0.0.1:{client}");
            let mut c = Command::new("etcd");
            c.args(["--name", &format!("e{i}")])
                .args(["--data-dir", data[i].to_str().unwrap()])
                .args(["--listen-client-urls", &client_url])
                .args(["--advertise-client-urls", &client_url])
                .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
                .args(["--initial-advertise-peer-urls", &format!("http://127.0.0.1:{peer}")])
                .args(["--initial-cluster", &initial.join(",")])
                .args(["--initial-cluster-state", "new"])
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if tls {
                c.args(["--cert-file", cert.to_str().unwrap(), "--key-file", key.to_str().unwrap()]);
            }
            c.spawn().unwrap()
        })
        .collect();
    let urls: Vec<String> = ports.iter().map(|(c, _)| format!("{scheme}://127.0.0.1:{c}")).collect();
    let sut = Sut {
        sys: Sys::Etcd,
        metrics: urls.iter().map(|u| format!("{u}/metrics")).collect(),
        urls,
        pids: children.iter().map(Child::id).collect(),
        data,
        ca: tls.then_some(ca),
        member_key: None,
        user_key: SigningKey::generate(&mut rand_core::OsRng),
        audience: String::new(),
        replicas: AtomicU64::new(0),
        groups: (objects / PER_GROUP).max(1),
        pad: replica_pad(),
        _servers: Vec::new(),
        _users: Vec::new(),
        children,
        _dir: Some(dir),
    };
    sut.wait_ready();
    Some(sut)
}

/// The floor: this bench binary again, as a process of its own serving [`floor_serve`].
fn floor() -> Sut {
    let port = free_port();
    let child = Command::new(std::env::current_exe().unwrap())
        .arg("--bench")
        .env("BENCH_FLOOR_SERVE", port.to_string())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the floor server did not listen on {url}");
        std::thread::sleep(Duration::from_millis(20));
    }
    Sut {
        sys: Sys::Floor,
        urls: vec![url],
        metrics: Vec::new(),
        pids: vec![child.id()],
        data: Vec::new(),
        ca: None,
        member_key: None,
        user_key: SigningKey::generate(&mut rand_core::OsRng),
        audience: String::new(),
        replicas: AtomicU64::new(0),
        groups: 1,
        pad: replica_pad(),
        _servers: Vec::new(),
        _users: Vec::new(),
        children: vec![child],
        _dir: None,
    }
}

/// The least a watch server can do, to tell the machine's limit from univrs': HTTP/1.1 on a
/// tokio runtime of one worker per core (as `ui apiserver`'s), a `GET` is a watch (a
/// chunked response), a `POST` a write whose body goes at once, as the line
/// `{"type":"ADDED","object":…}` in one chunk, to every watch — one `write` per watcher for
/// every event or every run of events waiting together, no store, no filter, no auth — and is
/// answered 201 after that.
fn floor_serve(port: u16) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    async fn conn(
        sock: tokio::net::TcpStream,
        events: tokio::sync::broadcast::Sender<std::sync::Arc<Vec<u8>>>,
    ) {
        let _ = sock.set_nodelay(true);
        let (read, mut write) = sock.into_split();
        let mut read = tokio::io::BufReader::new(read);
        loop {
            let mut request = String::new();
            if read.read_line(&mut request).await.unwrap_or(0) == 0 {
                return;
            }
            let mut length = 0;
            loop {
                let mut header = String::new();
                if read.read_line(&mut header).await.unwrap_or(0) == 0 {
                    return;
                }
                if header == "\r\n" {
                    break;
                }
                if let Some((name, value)) = header.split_once(':')
                    && name.eq_ignore_ascii_case("content-length")
                {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            if read.read_exact(&mut body).await.is_err() {
                return;
            }
            if request.starts_with("GET") {
                let mut events = events.subscribe();
                let head =
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
                if write.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let mut out = Vec::new();
                loop {
                    match events.recv().await {
                        Ok(event) => out.extend_from_slice(&event),
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    }
                    // Everything else already waiting goes in the same write.
                    while let Ok(event) = events.try_recv() {
                        out.extend_from_slice(&event);
                    }
                    if write.write_all(&out).await.is_err() {
                        return;
                    }
                    out.clear();
                }
            }
            let line = [b"{\"type\":\"ADDED\",\"object\":".as_slice(), &body, b"}\n"].concat();
            let chunk = [format!("{:x}\r\n", line.len()).as_bytes(), &line, b"\r\n"].concat();
            let _ = events.send(std::sync::Arc::new(chunk));
            if write.write_all(b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\n{}").await.is_err() {
                return;
            }
        }
    }
    // One worker per core, as `ui apiserver`'s runtime.
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let (events, _) = tokio::sync::broadcast::channel(1 << 16);
        loop {
            let Ok((sock, _)) = listener.accept().await else { continue };
            tokio::spawn(conn(sock, events.clone()));
        }
    });
}

/// One client's connection state: its own agent (one keep-alive connection) and tokens.
struct Client {
    /// Which client this is (0..clients).
    n: u64,
    agent: ureq::Agent,
    member: usize,
    member_bearer: String,
    user_bearer: String,
}

fn etcd_key(namespace: &str, name: &str) -> String {
    format!("/registry/replicas/{namespace}/{name}")
}

/// The end of the etcd range of keys starting with `prefix`.
fn range_end(prefix: &str) -> String {
    let mut end = prefix.as_bytes().to_vec();
    *end.last_mut().unwrap() += 1;
    String::from_utf8(end).unwrap()
}

/// Why operations failed since the last [`take_failures`]: a count by reason (the status and
/// the start of the answer), printed under the row they failed in.
static FAILURES: std::sync::Mutex<BTreeMap<String, usize>> = std::sync::Mutex::new(BTreeMap::new());

/// Whether `(status, text)` is the `wanted` status; if not, records why.
fn succeeded((status, text): (u16, String), wanted: u16) -> bool {
    if status == wanted {
        return true;
    }
    // Digits become `N`, so that one reason with different names or revisions counts once.
    let mut start = String::new();
    for c in text.chars().take(160) {
        if !(c.is_ascii_digit() && start.ends_with('N')) {
            start.push(if c.is_ascii_digit() { 'N' } else { c });
        }
    }
    let reason = if status == 0 { start } else { format!("{status} {start}") };
    *FAILURES.lock().unwrap().entry(reason).or_default() += 1;
    false
}

fn take_failures() -> BTreeMap<String, usize> {
    std::mem::take(&mut FAILURES.lock().unwrap())
}

fn drain(mut r: ureq::http::Response<ureq::Body>) -> (u16, String) {
    let status = r.status().as_u16();
    let body = r.body_mut().with_config().limit(64 << 20).read_to_string().unwrap_or_default();
    (status, body)
}

impl Sut {
    fn agent(&self, timeout: Duration) -> ureq::Agent {
        // Timeouts per stage, none on the name's resolution: with a global (or per-call) timeout
        // ureq resolves the address of every request on a thread it spawns (even an IP literal,
        // even when a pooled connection is then used), a thread per request (change 30).
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(timeout))
            .timeout_send_request(Some(timeout))
            .timeout_send_body(Some(timeout))
            .timeout_recv_response(Some(timeout))
            .timeout_recv_body(Some(timeout));
        if let Some(pem) = &self.ca {
            let ca = ureq::tls::Certificate::from_pem(pem).unwrap().to_owned();
            config = config.tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::Specific(std::sync::Arc::new(vec![ca])))
                    .build(),
            );
        }
        config.build().into()
    }

    fn bearer(&self, key: Option<&SigningKey>) -> String {
        match key {
            Some(key) if self.sys == Sys::Univrs => {
                let now = chrono::Utc::now().timestamp();
                format!("Bearer {}", api::token::mint(key, &self.audience, now - 5, 900))
            }
            _ => String::new(),
        }
    }

    fn client(&self, n: usize, timeout: Duration) -> Client {
        Client {
            n: n as u64,
            agent: self.agent(timeout),
            member: n % self.urls.len(),
            member_bearer: self.bearer(self.member_key.as_ref()),
            user_bearer: self.bearer(Some(&self.user_key)),
        }
    }

    fn post(&self, c: &Client, path: &str, bearer: &str, ctype: &str, body: String) -> (u16, String) {
        let url = format!("{}{path}", self.urls[c.member]);
        let mut req = c.agent.post(&url).header("content-type", ctype);
        if !bearer.is_empty() {
            req = req.header("authorization", bearer);
        }
        match req.send(body) {
            Ok(r) => drain(r),
            Err(e) => (0, e.to_string()),
        }
    }

    fn etcd_create(&self, c: &Client, key: &str, value: &str) -> bool {
        let body = json!({
            "compare": [{ "key": b64(key.as_bytes()), "result": "EQUAL", "target": "CREATE", "create_revision": "0" }],
            "success": [{ "request_put": { "key": b64(key.as_bytes()), "value": b64(value.as_bytes()) } }],
        });
        let (status, text) = self.post(c, "/v3/kv/txn", "", "application/json", body.to_string());
        if status == 200 && !text.contains("\"succeeded\":true") {
            return succeeded((0, format!("the create txn did not succeed: {text}")), 200);
        }
        succeeded((status, text), 200)
    }

    /// Creates replica number `index` in `namespace` (named `prefix{index}`).
    fn create_replica(&self, c: &Client, namespace: &str, name: &str, group: u64) -> bool {
        let value = replica(namespace, name, group, self.pad);
        match self.sys {
            Sys::Univrs => {
                let path = format!("/apis/univrs.io/v1/namespaces/{namespace}/replicas");
                succeeded(self.post(c, &path, &c.member_bearer, "application/json", value), 201)
            }
            Sys::Etcd => self.etcd_create(c, &etcd_key(namespace, name), &value),
            Sys::Floor => succeeded(self.post(c, "/write", "", "application/json", value), 201),
        }
    }

    fn create_signed(&self, c: &Client, name: &str, body: &str) -> bool {
        match self.sys {
            Sys::Univrs => {
                let path = "/apis/univrs.io/v1/namespaces/default/workloads";
                succeeded(self.post(c, path, &c.user_bearer, "application/json", body.to_owned()), 201)
            }
            Sys::Etcd => self.etcd_create(c, &format!("/registry/workloads/default/{name}"), body),
            Sys::Floor => unreachable!("the floor serves watches only"),
        }
    }

    /// univrs: a JSON merge patch of an annotation; etcd: a put of the whole (same-size) object.
    fn update(&self, c: &Client, index: u64, n: u64) -> bool {
        let name = format!("r{index}");
        match self.sys {
            Sys::Univrs => {
                let url =
                    format!("{}/apis/univrs.io/v1/namespaces/default/replicas/{name}", self.urls[c.member]);
                let body = json!({ "metadata": { "annotations": { "bench/n": n.to_string() } } }).to_string();
                match c
                    .agent
                    .patch(&url)
                    .header("authorization", &c.member_bearer)
                    .header("content-type", "application/merge-patch+json")
                    .send(body)
                {
                    Ok(r) => succeeded(drain(r), 200),
                    Err(e) => succeeded((0, e.to_string()), 200),
                }
            }
            Sys::Etcd => {
                let mut value: Value =
                    serde_json::from_str(&replica("default", &name, index % self.groups, self.pad)).unwrap();
                value["metadata"]["annotations"]["bench/n"] = n.to_string().into();
                let key = etcd_key("default", &name);
                let body = json!({ "key": b64(key.as_bytes()), "value": b64(value.to_string().as_bytes()) });
                succeeded(self.post(c, "/v3/kv/put", "", "application/json", body.to_string()), 200)
            }
            Sys::Floor => unreachable!("the floor serves watches only"),
        }
    }

    fn get(&self, c: &Client, index: u64) -> bool {
        let name = format!("r{index}");
        match self.sys {
            Sys::Univrs => {
                let url =
                    format!("{}/apis/univrs.io/v1/namespaces/default/replicas/{name}", self.urls[c.member]);
                match c.agent.get(&url).header("authorization", &c.member_bearer).call() {
                    Ok(r) => succeeded(drain(r), 200),
                    Err(e) => succeeded((0, e.to_string()), 200),
                }
            }
            Sys::Etcd => {
                let body = json!({ "key": b64(etcd_key("default", &name).as_bytes()) });
                let (status, text) = self.post(c, "/v3/kv/range", "", "application/json", body.to_string());
                status == 200 && text.contains("\"kvs\"")
            }
            Sys::Floor => unreachable!("the floor serves watches only"),
        }
    }

    /// A list of replicas in `default`; returns the bytes of the response, streamed and
    /// dropped. `label`: by label (`group=g1`); `limit`: a page of that many.
    fn list(&self, c: &Client, label: bool, limit: Option<u64>) -> Option<u64> {
        let response = match self.sys {
            Sys::Univrs => {
                let mut url =
                    format!("{}/apis/univrs.io/v1/namespaces/default/replicas?", self.urls[c.member]);
                if label {
                    url.push_str("labelSelector=group%3Dg1&");
                }
                if let Some(l) = limit {
                    url.push_str(&format!("limit={l}"));
                }
                c.agent.get(&url).header("authorization", &c.member_bearer).call()
            }
            Sys::Etcd => {
                let prefix = "/registry/replicas/default/";
                let mut body =
                    json!({ "key": b64(prefix.as_bytes()), "range_end": b64(range_end(prefix).as_bytes()) });
                if let Some(l) = limit {
                    body["limit"] = l.to_string().into();
                }
                c.agent.post(format!("{}/v3/kv/range", self.urls[c.member])).send(body.to_string())
            }
            Sys::Floor => unreachable!("the floor serves watches only"),
        };
        let response = response.ok().filter(|r| r.status() == 200)?;
        let mut reader = response.into_body().into_reader();
        std::io::copy(&mut reader, &mut std::io::sink()).ok()
    }

    /// `etcd_disk_wal_fsync_duration_seconds` count and sum, summed over the members.
    fn fsyncs(&self) -> Option<(f64, f64)> {
        let agent = self.agent(Duration::from_secs(10));
        let (mut count, mut sum) = (0.0, 0.0);
        for url in &self.metrics {
            let text = drain(agent.get(url).call().ok()?).1;
            let value = |name: &str| {
                text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse::<f64>().ok())
            };
            count += value("etcd_disk_wal_fsync_duration_seconds_count")?;
            sum += value("etcd_disk_wal_fsync_duration_seconds_sum")?;
        }
        Some((count, sum))
    }

    fn cpu(&self) -> f64 {
        self.pids.iter().map(|&p| cpu_seconds(p)).sum()
    }

    fn wait_ready(&self) {
        let c = self.client(0, Duration::from_secs(5));
        for member in 0..self.urls.len() {
            let c = Client { member, ..self.client(0, Duration::from_secs(5)) };
            let start = Instant::now();
            while !self.create_replica(&c, "ready", &format!("probe{member}"), 0) {
                assert!(start.elapsed() < Duration::from_secs(60), "{} did not start", self.sys.name());
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        drop(c);
    }
}

// ---------------------------------------------------------------------------------------------
// Load

/// What a closed-loop phase saw.
struct Phase {
    latencies: Vec<Duration>,
    failed: usize,
    elapsed: Duration,
    /// CPU of the servers and of this process (the load generator), the machine's idle share.
    spent: Spent,
    /// Durable commits of the log (all members) and the seconds they took.
    fsyncs: Option<(f64, f64)>,
    /// The share of the phase the busiest disk had I/O in flight.
    disk_busy: Option<f64>,
}

/// `clients` threads, each with its own connection, calling `op(client, i)` back to back for
/// `seconds` (or until `op` returns `None`: nothing left to do).
fn closed_loop(
    sut: &Sut,
    clients: usize,
    seconds: f64,
    op: impl Fn(&Client, u64) -> Option<bool> + Sync,
) -> Phase {
    let stop = AtomicBool::new(false);
    let conns: Vec<Client> = (0..clients).map(|n| sut.client(n, Duration::from_secs(120))).collect();
    let (begun, fsync0, disk0) = (Usage::now(sut), sut.fsyncs(), disk_ticks());
    let start = Instant::now();
    let results: Vec<(Vec<Duration>, usize)> = std::thread::scope(|s| {
        let threads: Vec<_> = conns
            .iter()
            .map(|c| {
                let (op, stop) = (&op, &stop);
                s.spawn(move || {
                    let (mut ok, mut failed) = (Vec::new(), 0);
                    for i in 0.. {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let t = Instant::now();
                        match op(c, i) {
                            Some(true) => ok.push(t.elapsed()),
                            Some(false) => failed += 1,
                            None => break,
                        }
                    }
                    (ok, failed)
                })
            })
            .collect();
        while start.elapsed().as_secs_f64() < seconds && threads.iter().any(|t| !t.is_finished()) {
            std::thread::sleep(Duration::from_millis(10));
        }
        stop.store(true, Ordering::Relaxed);
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let elapsed = start.elapsed();
    let (spent, fsync1, disk1) = (Usage::now(sut).since(&begun), sut.fsyncs(), disk_ticks());
    let mut latencies: Vec<Duration> = results.iter().flat_map(|(l, _)| l.iter().copied()).collect();
    latencies.sort();
    Phase {
        failed: results.iter().map(|(_, f)| f).sum(),
        latencies,
        elapsed,
        spent,
        fsyncs: fsync0.zip(fsync1).map(|(a, b)| (b.0 - a.0, b.1 - a.1)),
        disk_busy: busy_between(disk0.as_ref(), disk1.as_ref(), elapsed),
    }
}

impl Phase {
    fn measure(&self, writes: bool) -> Measure {
        let ok = self.latencies.len();
        Measure {
            rate: Some(ok as f64 / self.elapsed.as_secs_f64()),
            p50: percentile(&self.latencies, 0.50),
            p99: percentile(&self.latencies, 0.99),
            cpu: (ok > 0).then(|| Duration::from_secs_f64(self.spent.server / ok as f64)),
            load_cpu: (ok > 0).then(|| Duration::from_secs_f64(self.spent.load / ok as f64)),
            idle: self.spent.idle,
            fsyncs: if writes { self.fsyncs.filter(|_| ok > 0).map(|(n, _)| n / ok as f64) } else { None },
            fsync_mean: if writes {
                self.fsyncs.filter(|(n, _)| *n > 0.0).map(|(n, s)| Duration::from_secs_f64(s / n))
            } else {
                None
            },
            disk_busy: if writes { self.disk_busy } else { None },
            bytes: None,
            note: if self.failed > 0 { format!("{} failed", self.failed) } else { String::new() },
        }
    }
}

/// Creates replicas with 64 clients until the store holds `objects` of them.
fn fill(sut: &Sut, objects: u64) -> Measure {
    let phase = closed_loop(sut, 64, f64::MAX, |c, _| {
        let index = sut.replicas.fetch_add(1, Ordering::Relaxed);
        (index < objects).then(|| sut.create_replica(c, "default", &format!("r{index}"), index % sut.groups))
    });
    sut.replicas.store(objects, Ordering::Relaxed);
    phase.measure(true)
}

/// Watch delivery: `watchers` watches of the replicas in one namespace, then one writer
/// creating `rate` replicas a second there for `seconds`. The latency of an event at a
/// watcher is the time it was read from the stream minus the time the writer's create of it
/// was acknowledged, clamped at 0 (an event may arrive before its acknowledgement); the note
/// gives it from the time the create was sent, too (which adds the write's own latency).
/// Server CPU, the load generator's (the watchers' and the writers') and the machine's idle
/// share are over the delivery: from the first write until the last watcher read its last
/// event (or its stream ended), per delivered event; they include the writes' own cost. The
/// note gives the write rate achieved: the writers wait for each answer, so on a saturated
/// machine it falls below `rate`.
fn watch(sut: &Sut, namespace: &str, watchers: usize, rate: u64, seconds: f64) -> Measure {
    let writes = (rate as f64 * seconds).round() as usize;
    let acked: Vec<AtomicU64> = (0..writes).map(|_| AtomicU64::new(0)).collect();
    let sent: Vec<AtomicU64> = (0..writes).map(|_| AtomicU64::new(0)).collect();
    let t0 = Instant::now();
    let ready = AtomicUsize::new(0);
    let failed = AtomicUsize::new(0);
    // Where univrs watches start: the namespace's revision now (no initial events).
    let from = match sut.sys {
        Sys::Univrs => {
            let c = sut.client(0, Duration::from_secs(30));
            let url = format!("{}/apis/univrs.io/v1/namespaces/{namespace}/replicas?limit=1", sut.urls[0]);
            let text = drain(c.agent.get(&url).header("authorization", &c.member_bearer).call().unwrap()).1;
            let list: Value = serde_json::from_str(&text).unwrap();
            list["metadata"]["resourceVersion"].as_str().unwrap().to_owned()
        }
        Sys::Etcd | Sys::Floor => String::new(),
    };
    let budget = Duration::from_secs_f64(seconds + 60.0);
    // What the servers, this process (the watchers and the writers) and the machine spent from
    // the first write until every watcher had read its last event (or given up), and how long
    // the writes took to be acknowledged.
    let (begun, writing, received) = std::thread::scope(|s| {
        let threads: Vec<_> = (0..watchers)
            .map(|n| {
                let (ready, failed, from) = (&ready, &failed, &from);
                std::thread::Builder::new()
                    .stack_size(256 << 10)
                    .spawn_scoped(s, move || {
                        let c = sut.client(n, budget);
                        let response = match sut.sys {
                            Sys::Floor => c.agent.get(format!("{}/watch", sut.urls[c.member])).call(),
                            Sys::Univrs => {
                                let url = format!(
                                    "{}/apis/univrs.io/v1/namespaces/{namespace}/replicas?watch=true&resourceVersion={from}&timeoutSeconds={}",
                                    sut.urls[c.member],
                                    budget.as_secs()
                                );
                                c.agent.get(&url).header("authorization", &c.member_bearer).call()
                            }
                            Sys::Etcd => {
                                let prefix = format!("/registry/replicas/{namespace}/");
                                let body = json!({ "create_request": {
                                    "key": b64(prefix.as_bytes()), "range_end": b64(range_end(&prefix).as_bytes()) } });
                                c.agent.post(format!("{}/v3/watch", sut.urls[c.member])).send(body.to_string())
                            }
                        };
                        let Some(response) = response.ok().filter(|r| r.status() == 200) else {
                            failed.fetch_add(1, Ordering::Relaxed);
                            return Vec::new();
                        };
                        ready.fetch_add(1, Ordering::Relaxed);
                        let mut got = Vec::with_capacity(writes);
                        let mut lines = BufReader::with_capacity(64 << 10, response.into_body().into_reader());
                        let mut line = String::new();
                        while got.len() < writes {
                            line.clear();
                            if lines.read_line(&mut line).unwrap_or(0) == 0 {
                                break;
                            }
                            let at = t0.elapsed().as_nanos() as u64;
                            for seq in seqs_in(sut.sys, &line) {
                                got.push((seq, at));
                            }
                        }
                        got
                    })
                    .unwrap()
            })
            .collect();
        while ready.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) < watchers {
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(500));
        let begun = Usage::now(sut);
        // The writer: paced, with a few connections so that one slow write does not hold back
        // the next.
        let writers = 8;
        let next = AtomicUsize::new(0);
        let start = Instant::now();
        std::thread::scope(|w| {
            for k in 0..writers {
                let (next, acked, sent) = (&next, &acked, &sent);
                w.spawn(move || {
                    let c = sut.client(k, Duration::from_secs(30));
                    loop {
                        let seq = next.fetch_add(1, Ordering::Relaxed);
                        if seq >= writes {
                            break;
                        }
                        let due = start + Duration::from_secs_f64(seq as f64 / rate as f64);
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                        sent[seq].store(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
                        if sut.create_replica(&c, namespace, &format!("w{seq}"), 0) {
                            acked[seq].store(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        let writing = start.elapsed();
        let received: Vec<Vec<(u32, u64)>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        (begun, writing, received)
    });
    let spent = Usage::now(sut).since(&begun);
    // The writers are paced at `rate` but wait for each answer: on a saturated machine they
    // fall behind it, and the row says so.
    let written = acked.iter().filter(|a| a.load(Ordering::Relaxed) > 0).count();
    let (mut latencies, mut from_send) = (Vec::new(), Vec::new());
    for got in &received {
        for &(seq, at) in got {
            let ack = acked.get(seq as usize).map_or(0, |a| a.load(Ordering::Relaxed));
            if ack > 0 {
                latencies.push(Duration::from_nanos(at.saturating_sub(ack)));
                from_send.push(Duration::from_nanos(
                    at.saturating_sub(sent[seq as usize].load(Ordering::Relaxed)),
                ));
            }
        }
    }
    latencies.sort();
    from_send.sort();
    let expected = writes * watchers;
    let delivered = latencies.len();
    // Over the time the pacing asks for at least: the last write is due (writes - 1) / rate
    // after the first, and no writer goes faster than the pace.
    let paced = writing.as_secs_f64().max(writes as f64 / rate as f64);
    let mut note = vec![format!("writes {:.0}/s", written as f64 / paced)];
    if let (Some(p50), Some(p99)) = (percentile(&from_send, 0.5), percentile(&from_send, 0.99)) {
        note.push(format!("from send: p50 {}, p99 {}", fmt_dur(p50), fmt_dur(p99)));
    }
    if delivered < expected {
        note.push(format!("{} of {expected} events missing", expected - delivered));
    }
    let refused = failed.load(Ordering::Relaxed);
    if refused > 0 {
        note.push(format!("{refused} watches refused"));
    }
    let per_event =
        |seconds: f64| (delivered > 0).then(|| Duration::from_secs_f64(seconds / delivered as f64));
    Measure {
        rate: None,
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
        cpu: per_event(spent.server),
        load_cpu: per_event(spent.load),
        idle: spent.idle,
        note: note.join(", "),
        ..Measure::default()
    }
}

/// CPU seconds of the servers and of this process, and the machine's CPU ticks, at one moment.
struct Usage {
    server: f64,
    load: f64,
    ticks: Option<(u64, u64)>,
}

/// What was spent between two [`Usage`]s: CPU seconds, and the share of the machine left idle.
struct Spent {
    server: f64,
    load: f64,
    idle: Option<f64>,
}

impl Usage {
    fn now(sut: &Sut) -> Usage {
        Usage { server: sut.cpu(), load: cpu_seconds(std::process::id()), ticks: machine_ticks() }
    }

    fn since(&self, before: &Usage) -> Spent {
        Spent {
            server: self.server - before.server,
            load: self.load - before.load,
            idle: idle_between(before.ticks, self.ticks),
        }
    }
}

/// The sequence numbers of the watch writer's objects (`w{seq}`) in one line of a stream.
fn seqs_in(sys: Sys, line: &str) -> Vec<u32> {
    let digits =
        |s: &str| s.bytes().take_while(u8::is_ascii_digit).fold(0u32, |n, b| n * 10 + (b - b'0') as u32);
    match sys {
        Sys::Univrs | Sys::Floor => {
            // One event per line; its object's name is the first `"name":"w…"`.
            let Some(at) = line.find("\"name\":\"w") else { return Vec::new() };
            if line.starts_with("{\"type\":\"BOOKMARK\"") {
                return Vec::new();
            }
            vec![digits(&line[at + 9..])]
        }
        Sys::Etcd => {
            // A message may carry several events; each key is base64.
            let mut out = Vec::new();
            let mut rest = line;
            while let Some(at) = rest.find("\"key\":\"") {
                rest = &rest[at + 7..];
                let end = rest.find('"').unwrap_or(rest.len());
                if let Ok(key) = base64::engine::general_purpose::STANDARD.decode(&rest[..end])
                    && let Some(name) = std::str::from_utf8(&key).ok().and_then(|k| k.rsplit('/').next())
                    && let Some(seq) = name.strip_prefix('w')
                {
                    out.push(digits(seq));
                }
                rest = &rest[end..];
            }
            out
        }
    }
}

/// A sequential client repeating `op` `times` times (at least once, at most `seconds`).
fn repeat(sut: &Sut, times: usize, seconds: f64, op: impl Fn(&Client) -> Option<u64>) -> Measure {
    let c = sut.client(0, Duration::from_secs(300));
    let (cpu0, start) = (sut.cpu(), Instant::now());
    let mut latencies = Vec::new();
    let mut failed = 0;
    let mut bytes = 0;
    for _ in 0..times {
        let t = Instant::now();
        match op(&c) {
            Some(b) => {
                latencies.push(t.elapsed());
                bytes = b;
            }
            None => failed += 1,
        }
        if start.elapsed().as_secs_f64() > seconds {
            break;
        }
    }
    let cpu = sut.cpu() - cpu0;
    latencies.sort();
    let ok = latencies.len();
    let mut note = vec![format!("{} per response", fmt_bytes_short(bytes))];
    if failed > 0 {
        note.push(format!("{failed} failed"));
    }
    Measure {
        p50: percentile(&latencies, 0.5),
        p99: percentile(&latencies, 0.99),
        cpu: (ok > 0).then(|| Duration::from_secs_f64(cpu / ok as f64)),
        note: note.join(", "),
        ..Measure::default()
    }
}

fn fmt_bytes_short(b: u64) -> String {
    if b >= 1 << 20 { fmt_bytes(b) } else { format!("{:.0} KiB", b as f64 / 1024.0) }
}

// ---------------------------------------------------------------------------------------------
// The run

struct Config {
    objects: u64,
    seconds: f64,
    clients: Vec<usize>,
    watchers: Vec<usize>,
    watch_rate: u64,
    watch_seconds: f64,
}

/// Every scenario on one system; `signed` is the pool of signed Workloads (name, JSON).
///
/// The store is filled first (namespace `default`, exactly `objects` Replicas on both
/// systems), so that reads, lists, RSS and disk compare the same contents; the timed creates
/// then go to namespace `bench`, on top of them.
fn scenarios(sut: &Sut, cfg: &Config, signed: &[(String, String)]) -> Vec<(String, Measure)> {
    let mut out = Vec::new();
    let mut say = |name: String, m: Measure| {
        eprintln!("  {:<7} {name:<52} {}", sut.sys.name(), m.cell());
        let mut failures: Vec<(String, usize)> = take_failures().into_iter().collect();
        failures.sort_by_key(|f| std::cmp::Reverse(f.1));
        for (reason, n) in failures.iter().take(5) {
            eprintln!("          {n} failed: {reason}");
        }
        if failures.len() > 5 {
            eprintln!("          … and {} other reasons", failures.len() - 5);
        }
        out.push((name, m));
    };
    if sut.sys == Sys::Floor {
        for (i, &w) in cfg.watchers.iter().enumerate() {
            let m = watch(sut, &format!("watch{i}"), w, cfg.watch_rate, cfg.watch_seconds);
            say(format!("watch delivery, {w} watchers at {} writes/s", cfg.watch_rate), m);
        }
        return out;
    }
    let objects = cfg.objects;
    let filled = fill(sut, objects);
    say(format!("fill: create {objects} Replicas, 64 clients"), filled);
    let rss = sut.pids.iter().map(|&p| status_bytes(p, "VmRSS")).max().unwrap_or(0);
    say("RSS after the fill, largest member".into(), Measure { bytes: Some(rss), ..Measure::default() });
    let disk: u64 = sut.data.iter().map(|d| disk_bytes(d)).sum();
    say("disk after the fill, all members".into(), Measure { bytes: Some(disk), ..Measure::default() });
    if let Some(first) = sut.data.first() {
        let files: Vec<String> =
            largest_files(first, 5).iter().map(|(f, b)| format!("{f} {} MiB", b >> 20)).collect();
        eprintln!("          largest files of the first member: {}", files.join(" · "));
    }

    let existing = sut.replicas.load(Ordering::Relaxed).max(1);
    let only = env_list("BENCH_ONLY", "reads,creates,signed,updates,watch");
    let runs = |group: &str| only.iter().any(|o| o == group);
    if runs("reads") {
        let salt = AtomicU64::new(1);
        let m = closed_loop(sut, 64, cfg.seconds, |c, _| {
            let i = salt.fetch_add(2_654_435_761, Ordering::Relaxed);
            Some(sut.get(c, i % existing))
        })
        .measure(false);
        say("get, 64 clients".into(), m);
        let what = if sut.sys == Sys::Univrs {
            "500 by label"
        } else {
            "prefix range limit 500 (no labels in etcd)"
        };
        say(
            format!("list {what} of {objects}, 1 client"),
            repeat(sut, 50, 20.0, |c| sut.list(c, true, Some(500))),
        );
        say(
            format!("list one page limit=500 of {objects}, 1 client"),
            repeat(sut, 50, 20.0, |c| sut.list(c, false, Some(500))),
        );
        say(format!("full list of {objects}, 1 client"), repeat(sut, 3, 30.0, |c| sut.list(c, false, None)));
    }

    let next = AtomicU64::new(0);
    for &n in cfg.clients.iter().filter(|_| runs("creates")) {
        let m = closed_loop(sut, n, cfg.seconds, |c, _| {
            let i = next.fetch_add(1, Ordering::Relaxed);
            Some(sut.create_replica(c, "bench", &format!("b{i}"), i % sut.groups))
        })
        .measure(true);
        say(format!("create Replica, {n} client(s)"), m);
    }
    let next_signed = AtomicUsize::new(0);
    for &n in cfg.clients.iter().filter(|_| runs("signed")) {
        let m = closed_loop(sut, n, cfg.seconds, |c, _| {
            let (name, body) = signed.get(next_signed.fetch_add(1, Ordering::Relaxed))?;
            Some(sut.create_signed(c, name, body))
        })
        .measure(true);
        let what =
            if sut.sys == Sys::Univrs { "create signed Workload" } else { "create txn of the same JSON" };
        say(format!("{what}, {n} client(s)"), m);
    }
    for &n in cfg.clients.iter().filter(|_| runs("updates")) {
        // Every client its own keys (no two clients patch one object with the same value,
        // which univrs would rightly skip as a write that changes nothing), spread over all.
        let m = closed_loop(sut, n, cfg.seconds, |c, i| {
            let index = (c.n + n as u64 * (i * 7919 % existing)) % existing;
            Some(sut.update(c, index, c.n << 32 | i))
        })
        .measure(true);
        let how = if sut.sys == Sys::Univrs { "merge patch" } else { "put of the whole object" };
        say(format!("update ({how}), {n} client(s)"), m);
    }
    for (i, &w) in cfg.watchers.iter().enumerate().filter(|_| runs("watch")) {
        let m = watch(sut, &format!("watch{i}"), w, cfg.watch_rate, cfg.watch_seconds);
        say(format!("watch delivery, {w} watchers at {} writes/s", cfg.watch_rate), m);
    }
    let hwm = sut.pids.iter().map(|&p| status_bytes(p, "VmHWM")).max().unwrap_or(0);
    let rss = sut.pids.iter().map(|&p| status_bytes(p, "VmRSS")).max().unwrap_or(0);
    let disk: u64 = sut.data.iter().map(|d| disk_bytes(d)).sum();
    say(
        "peak RSS over the run (VmHWM), largest member".into(),
        Measure { bytes: Some(hwm), ..Measure::default() },
    );
    say("RSS at the end, largest member".into(), Measure { bytes: Some(rss), ..Measure::default() });
    say("disk at the end, all members".into(), Measure { bytes: Some(disk), ..Measure::default() });
    out
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` would too: only run when benched.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    if let Some(port) = std::env::var("BENCH_FLOOR_SERVE").ok().and_then(|p| p.parse().ok()) {
        return floor_serve(port);
    }
    let cfg = Config {
        objects: env_or("BENCH_OBJECTS", 100_000),
        seconds: env_or("BENCH_SECONDS", 5) as f64,
        clients: env_list("BENCH_CLIENTS", "1,16,64").iter().filter_map(|s| s.parse().ok()).collect(),
        watchers: env_list("BENCH_WATCHERS", "100,1000").iter().filter_map(|s| s.parse().ok()).collect(),
        watch_rate: env_or("BENCH_WATCH_RATE", 200),
        watch_seconds: env_or("BENCH_WATCH_SECONDS", 5) as f64,
    };
    let setups = env_list("BENCH_SETUPS", "1-http,1-tls,3-http,3-tls");
    let systems = env_list("BENCH_SYSTEMS", "univrs,etcd");
    let rounds = env_or("BENCH_ROUNDS", 1).max(1) as usize;
    let started = Instant::now();

    // Signed Workloads, made before any timed loop: as many as the fastest system might
    // create in every signed phase.
    let signer = SigningKey::generate(&mut rand_core::OsRng);
    let pool = (8_000.0 * cfg.seconds) as usize * cfg.clients.len();
    eprintln!("signing {pool} Workloads…");
    let signed: Vec<(String, String)> = {
        let chunks: Vec<Vec<(String, String)>> = std::thread::scope(|s| {
            let threads: Vec<_> = (0..2)
                .map(|t| {
                    let signer = &signer;
                    s.spawn(move || {
                        (t..pool)
                            .step_by(2)
                            .map(|i| (format!("s{i}"), signed_workload(signer, &format!("s{i}"))))
                            .collect()
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).collect()
        });
        chunks.into_iter().flatten().collect()
    };

    let rows = Mutex::new(Vec::new());
    for (setup, round) in setups.iter().flat_map(|s| (0..rounds).map(move |r| (s, r))) {
        let (members, tls) = match setup.as_str() {
            "1-http" => (1, false),
            "1-tls" => (1, true),
            "3-http" => (3, false),
            "3-tls" => (3, true),
            other => panic!("BENCH_SETUPS: unknown setup {other} (1-http, 1-tls, 3-http, 3-tls)"),
        };
        let label = format!(
            "{members} member{}, {}",
            if members > 1 { "s" } else { "" },
            if tls { "TLS" } else { "HTTP" }
        );
        // Rounds alternate which system runs first, so that a machine speeding up or
        // slowing down over the minutes favours neither.
        let progress = if rounds > 1 { format!("{label} · round {}", round + 1) } else { label.clone() };
        let order: Vec<&String> =
            if round % 2 == 1 { systems.iter().rev().collect() } else { systems.iter().collect() };
        let mut results: Vec<(Sys, Vec<(String, Measure)>)> = Vec::new();
        for system in order {
            eprintln!("{progress}: {system}");
            let sut = match system.as_str() {
                // The user's signed Workloads need the user key in the Sut to mint its tokens.
                "univrs" => {
                    let mut s = univrs(members, tls, cfg.objects);
                    s.user_key = signer.clone();
                    s
                }
                "floor" if members > 1 || tls => {
                    eprintln!("floor skipped: one process, plain HTTP only");
                    continue;
                }
                "floor" => floor(),
                "etcd" => match etcd(members, tls, cfg.objects) {
                    Some(s) => s,
                    None => {
                        eprintln!("etcd skipped: no `etcd` on PATH (./dev deps bench)");
                        continue;
                    }
                },
                other => panic!("BENCH_SYSTEMS: unknown system {other}"),
            };
            results.push((sut.sys, scenarios(&sut, &cfg, &signed)));
        }
        let find = |sys: Sys| results.iter().find(|(s, _)| *s == sys).map(|(_, r)| r);
        let (u, e, f) = (find(Sys::Univrs), find(Sys::Etcd), find(Sys::Floor));
        let n = u.or(e).or(f).map_or(0, Vec::len);
        for i in 0..n {
            let scenario = u.or(e).or(f).unwrap()[i].0.clone();
            rows.lock().unwrap().push(Row {
                setup: label.clone(),
                round,
                // The etcd name of a row differs where the operation does (put vs merge patch).
                scenario: match (u, e) {
                    (Some(u), Some(e)) if u[i].0 != e[i].0 => format!("{} / etcd: {}", u[i].0, e[i].0),
                    _ => scenario.clone(),
                },
                univrs: u.map(|r| r[i].1.clone()),
                etcd: e.map(|r| r[i].1.clone()),
                floor: f.and_then(|f| f.iter().find(|(name, _)| *name == scenario).map(|(_, m)| m.clone())),
            });
        }
    }

    println!();
    println!(
        "univrs vs etcd {} — objects {} B, {} objects, {} s per phase, machine: {} cores — {:.0} s in all",
        etcd_version(),
        OBJECT_BYTES,
        cfg.objects,
        cfg.seconds,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        started.elapsed().as_secs_f64()
    );
    println!();
    println!("| setup | scenario | univrs | etcd | univrs ÷ etcd |");
    println!("|---|---|---|---|---|");
    let rows = rows.into_inner().unwrap();
    let cell = |m: &Option<Measure>| m.as_ref().map_or("–".to_owned(), Measure::cell);
    let setup_of = |row: &Row| {
        if rounds > 1 { format!("{} · round {}", row.setup, row.round + 1) } else { row.setup.clone() }
    };
    for row in &rows {
        let r = match (&row.univrs, &row.etcd) {
            (Some(u), Some(e)) => ratio(u, e),
            _ => "–".into(),
        };
        println!(
            "| {} | {} | {} | {} | {r} |",
            setup_of(row),
            row.scenario,
            cell(&row.univrs),
            cell(&row.etcd)
        );
    }
    if rounds > 1 {
        print_rounds(&rows);
    }
    if rows.iter().any(|r| r.floor.is_some()) {
        println!();
        println!(
            "The floor: one write per watcher for each event (or run of events waiting together), and nothing else (`BENCH_SYSTEMS=…,floor`)."
        );
        println!();
        println!("| setup | scenario | univrs | floor | univrs ÷ floor |");
        println!("|---|---|---|---|---|");
        for row in rows.iter().filter(|r| r.floor.is_some()) {
            let r = match (&row.univrs, &row.floor) {
                (Some(u), Some(f)) => ratio(u, f),
                _ => "–".into(),
            };
            println!(
                "| {} | {} | {} | {} | {r} |",
                setup_of(row),
                row.scenario,
                cell(&row.univrs),
                cell(&row.floor)
            );
        }
    }
}

/// With `BENCH_ROUNDS` > 1: each rate row's univrs ÷ etcd in every round, and their median
/// (the figure to quote: rounds minutes apart on this machine differ by ±20 %).
fn print_rounds(rows: &[Row]) {
    // Rows in the order the first round printed them; the same setup and scenario in later
    // rounds joins its first round's row.
    let mut table: Vec<(String, String, Vec<f64>)> = Vec::new();
    for row in rows {
        let (Some(u), Some(e)) =
            (row.univrs.as_ref().and_then(|m| m.rate), row.etcd.as_ref().and_then(|m| m.rate))
        else {
            continue;
        };
        if e <= 0.0 {
            continue;
        }
        match table.iter_mut().find(|(s, c, _)| *s == row.setup && *c == row.scenario) {
            Some((_, _, ratios)) => ratios.push(u / e),
            None if row.round == 0 => table.push((row.setup.clone(), row.scenario.clone(), vec![u / e])),
            None => {}
        }
    }
    println!();
    println!("Rates, univrs ÷ etcd, round by round (the order of the systems alternated):");
    println!();
    println!("| setup | scenario | rate, univrs ÷ etcd, by round | median |");
    println!("|---|---|---|---|");
    for (setup, scenario, ratios) in &table {
        let each: Vec<String> = ratios.iter().map(|r| format!("×{r:.2}")).collect();
        println!("| {setup} | {scenario} | {} | ×{:.2} |", each.join(", "), median(ratios));
    }
}

/// The median of `values` (the mean of the middle two of an even count).
fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn etcd_version() -> String {
    Command::new("etcd")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(|l| l.trim_start_matches("etcd Version: ").to_owned()))
        .unwrap_or_else(|| "(not installed)".into())
}
