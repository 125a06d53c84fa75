//! Control-plane figures, on demand (`cargo bench -p cli --bench cluster`), never in CI:
//! write throughput and p50/p99 latency of creates with 1, 3 and 5 members (real `ui
//! apiserver` processes on loopback, clients spread over the members so followers forward),
//! the time from kill -9 of a 3-member cluster's leader to the first acknowledged write, and
//! the same write load on a 3-member etcd (Debian's `etcd-server`, if `etcd` is on PATH)
//! through its JSON gateway with the same payloads.
//!
//! `BENCH_SECONDS` (default 5) and `BENCH_CLIENTS` (default 8) change the load.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use support::{Server, User, free_port};

/// The payload: a Replica like the control plane writes (about 400 bytes of JSON).
fn replica(name: &str) -> String {
    json!({ "apiVersion": "univrs.io/v1", "kind": "Replica",
        "metadata": { "name": name, "labels": { "app": "bench", "tier": "web" } },
        "spec": { "workload": "bench-workload", "container": { "rootfs": "busybox",
            "command": ["/bin/sh", "-c", "while true; do echo hello from the benchmark; sleep 1; done"] } } })
    .to_string()
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Runs `clients` threads calling `write(client, i)` for `seconds`; returns the latencies of
/// the writes that succeeded and the count of those that failed.
fn load(
    clients: u64,
    seconds: u64,
    write: impl Fn(u64, u64) -> bool + Send + Sync + 'static,
) -> (Vec<Duration>, usize) {
    let write = Arc::new(write);
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let (write, stop) = (write.clone(), stop.clone());
            std::thread::spawn(move || {
                let (mut ok, mut failed) = (Vec::new(), 0);
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let t = Instant::now();
                    if write(c, i) {
                        ok.push(t.elapsed());
                    } else {
                        failed += 1;
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(seconds));
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    let mut failed = 0;
    for t in threads {
        let (ok, f) = t.join().unwrap();
        all.extend(ok);
        failed += f;
    }
    (all, failed)
}

fn report(what: &str, seconds: u64, mut latencies: Vec<Duration>, failed: usize) {
    latencies.sort();
    let pct = |p: f64| {
        latencies.get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
    };
    println!(
        "{what:<28} {:>8.0} writes/s   p50 {:>7.2?}   p99 {:>7.2?}   ({} ok, {failed} failed)",
        latencies.len() as f64 / seconds as f64,
        pct(0.50).copied().unwrap_or_default(),
        pct(0.99).copied().unwrap_or_default(),
        latencies.len()
    );
}

struct Cluster {
    users: Vec<User>,
    servers: Vec<Option<Server>>,
}

fn did_of(data: &Path) -> String {
    let key = std::fs::read_to_string(data.join("member.key")).unwrap();
    let bytes: Vec<u8> =
        (0..32).map(|i| u8::from_str_radix(&key.trim()[2 * i..2 * i + 2], 16).unwrap()).collect();
    let key = ed25519_dalek::SigningKey::from_bytes(&bytes.try_into().unwrap());
    api::identity::Did::from_key(&key.verifying_key()).as_str().to_owned()
}

fn member_key(data: &Path) -> String {
    std::fs::create_dir_all(data).unwrap();
    let key = ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng);
    let hex: String = key.to_bytes().iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(data.join("member.key"), hex).unwrap();
    api::identity::Did::from_key(&key.verifying_key()).as_str().to_owned()
}

fn cluster(n: usize) -> Cluster {
    let founder = User::new();
    let data = founder.path("data");
    let peer = format!("127.0.0.1:{}", free_port());
    let first = Server::start_with(&founder, &data, "127.0.0.1:0", &["--peer-listen", &peer]);
    let join = format!("{}@{peer}", did_of(&data));
    let kubeconfig = first.member_kubeconfig();
    let mut c = Cluster { users: vec![founder], servers: vec![Some(first)] };
    for _ in 1..n {
        let user = User::new();
        let data = user.path("data");
        let did = member_key(&data);
        let peer = format!("127.0.0.1:{}", free_port());
        c.users[0].run(&["cluster", "add", &did, &peer, "--kubeconfig", kubeconfig.to_str().unwrap()]).ok();
        let server =
            Server::start_with(&user, &data, "127.0.0.1:0", &["--peer-listen", &peer, "--join", &join]);
        c.users.push(user);
        c.servers.push(Some(server));
    }
    c
}

fn writer(c: &Cluster) -> impl Fn(u64, u64) -> bool + Send + Sync + 'static {
    let bearer = format!("Bearer {}", c.servers[0].as_ref().unwrap().member_token());
    let targets: Vec<(String, ureq::Agent)> =
        c.servers.iter().flatten().map(|s| (s.url.clone(), s.agent())).collect();
    move |client, i| {
        let (url, agent) = &targets[client as usize % targets.len()];
        let url = format!("{url}/apis/univrs.io/v1/namespaces/default/replicas");
        let name = format!("c{client}-{i}-{}", std::process::id());
        matches!(
            agent.post(&url).header("Authorization", &bearer).content_type("application/json").send(replica(&name)),
            Ok(r) if r.status() == 201
        )
    }
}

fn leader_index(c: &Cluster) -> usize {
    let kubeconfig = c.servers[0].as_ref().unwrap().member_kubeconfig();
    let out = c.users[0]
        .run(&["cluster", "members", "-o", "json", "--kubeconfig", kubeconfig.to_str().unwrap()])
        .ok();
    let members = out.json();
    let api = members.as_array().unwrap().iter().find(|m| m["leader"] == true).unwrap()["api"]
        .as_str()
        .unwrap()
        .to_owned();
    c.servers.iter().position(|s| s.as_ref().is_some_and(|s| s.url == api)).unwrap()
}

fn etcd(seconds: u64, clients: u64) {
    if Command::new("etcd").arg("--version").output().is_err() {
        println!("etcd (3 members)             skipped: no `etcd` on PATH (apt-get install etcd-server)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let initial: Vec<String> =
        ports.iter().enumerate().map(|(i, (_, peer))| format!("e{i}=http://127.0.0.1:{peer}")).collect();
    let mut children: Vec<Child> = ports
        .iter()
        .enumerate()
        .map(|(i, (client, peer))| {
            Command::new("etcd")
                .args(["--name", &format!("e{i}")])
                .args(["--data-dir", dir.path().join(format!("e{i}")).to_str().unwrap()])
                .args(["--listen-client-urls", &format!("http://127.0.0.1:{client}")])
                .args(["--advertise-client-urls", &format!("http://127.0.0.1:{client}")])
                .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
                .args(["--initial-advertise-peer-urls", &format!("http://127.0.0.1:{peer}")])
                .args(["--initial-cluster", &initial.join(",")])
                .args(["--initial-cluster-state", "new"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let urls: Vec<String> = ports.iter().map(|(c, _)| format!("http://127.0.0.1:{c}/v3/kv/put")).collect();
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let put = {
        let (urls, agent) = (urls.clone(), agent.clone());
        move |client: u64, i: u64| {
            use base64::Engine as _;
            let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
            let key = format!("/registry/replicas/default/c{client}-{i}");
            let body = json!({ "key": b64(&key), "value": b64(&replica(&key)) }).to_string();
            matches!(agent.post(&urls[client as usize % urls.len()]).send(body), Ok(r) if r.status() == 200)
        }
    };
    let ready = Instant::now();
    while !put(0, u64::MAX) {
        assert!(ready.elapsed() < Duration::from_secs(30), "etcd did not start");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (lat, failed) = load(clients, seconds, put);
    report("etcd, 3 members", seconds, lat, failed);
    for c in &mut children {
        let _ = c.kill();
        let _ = c.wait();
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` would too: only run when benched.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let seconds = env_or("BENCH_SECONDS", 5);
    let clients = env_or("BENCH_CLIENTS", 8);
    println!("{clients} clients, {seconds} s each, creates of ~400-byte Replicas over HTTPS with tokens");
    for n in [1, 3, 5] {
        let c = cluster(n);
        let (lat, failed) = load(clients, seconds, writer(&c));
        report(&format!("univrs, {n} member(s)"), seconds, lat, failed);
    }
    // Leader kill to first acknowledged write, on 3 members, under the same load.
    let mut c = cluster(3);
    let leader = leader_index(&c);
    let write = writer(&c);
    let survivor = (0..3).find(|i| *i != leader).unwrap() as u64;
    c.servers[leader].take().unwrap().kill_9();
    let killed = Instant::now();
    let mut i = 0;
    while !write(survivor, 1_000_000 + i) {
        i += 1;
        std::thread::sleep(Duration::from_millis(10));
    }
    println!("leader kill -9 → first acknowledged write: {:?}", killed.elapsed());
    etcd(seconds, clients);
}
