//! What an operator watches, checked with the real tools: a real Prometheus (Debian's
//! `prometheus`, started here) scrapes `ui up`, and a PromQL query for each headline metric
//! returns a value that moves when the cluster is written to; every query of the Grafana
//! dashboard in `deploy/grafana/` names metrics `ui up` serves and is valid PromQL; and the log
//! tells the story (`--log-format json`: a replica placed and why, started, a write refused).

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use support::{User, free_port, wait_for, workspace};

/// A child process killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        for _ in 0..100 {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `ui up` with its metrics on `metrics` and JSON logs collected into the returned lines.
fn up(u: &User, metrics: &str) -> (Killed, Arc<Mutex<Vec<String>>>) {
    u.init_plain();
    let data = u.path("data");
    let mut child = u
        .up_cmd(
            &data,
            &u.path("kubeconfig"),
            &["--node-name", "n1", "--runtime", "process", "--metrics-addr", metrics, "--log-format", "json"],
        )
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let into = log.clone();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("ui up: {line}");
            into.lock().unwrap().push(line);
        }
    });
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines().map_while(Result::ok);
    let up = Killed(child);
    assert!(lines.any(|l| l.starts_with("local node n1")), "ui up started no local node");
    std::thread::spawn(move || for _ in lines {});
    (up, log)
}

fn ui(u: &User, args: &[&str]) -> support::Run {
    let mut all = args.to_vec();
    let kubeconfig = u.path("kubeconfig");
    all.extend(["--kubeconfig", kubeconfig.to_str().unwrap()]);
    u.run(&all)
}

/// Debian's Prometheus scraping `target` every second, its data in `dir`; its API's URL.
fn prometheus(dir: &Path, target: &str) -> (Killed, String) {
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: univrs\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let port = free_port();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--log.level=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run prometheus ({e}): `./dev deps test` installs Debian's prometheus")
        });
    let url = format!("http://127.0.0.1:{port}");
    let p = Killed(child);
    wait_for(60, "prometheus to be ready", || {
        ureq::get(&format!("{url}/-/ready")).call().map(drop).map_err(|e| e.to_string())
    });
    (p, url)
}

/// A PromQL instant query: the API's answer.
fn query(prom: &str, q: &str) -> Value {
    let mut response = ureq::get(&format!("{prom}/api/v1/query"))
        .query("query", q)
        .config()
        .http_status_as_error(false)
        .build()
        .call()
        .unwrap();
    let body = response.body_mut().read_to_string().unwrap();
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{q}: not JSON ({e}): {body}"))
}

/// The sum of an instant query's samples, `None` when it has none.
fn scalar(prom: &str, q: &str) -> Option<f64> {
    let v = query(prom, q);
    assert_eq!(v["status"], "success", "{q}: {v}");
    let samples = v["data"]["result"].as_array()?.clone();
    if samples.is_empty() {
        return None;
    }
    Some(samples.iter().map(|s| s["value"][1].as_str().unwrap().parse::<f64>().unwrap()).sum())
}

/// The metric names a PromQL expression reads (univrs', kube-apiserver's, etcd's, kubelet's).
fn metric_names(expr: &str) -> Vec<String> {
    let prefixes = ["apiserver_", "etcd_", "univrs_", "kubelet_"];
    let mut names = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let boundary = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        if boundary && prefixes.iter().any(|p| expr[i..].starts_with(p)) {
            let end = expr[i..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .map_or(expr.len(), |n| i + n);
            names.push(expr[i..end].to_owned());
            i = end;
        } else {
            i += 1;
        }
    }
    names
}

/// Whether the exposition `text` has the metric `name` (a series name: a family's name, or it
/// with `_total`, `_bucket`, `_sum` or `_count`).
fn exposes(text: &str, name: &str) -> bool {
    let families: Vec<&str> =
        text.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next()).collect();
    let base = ["_total", "_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s));
    families.contains(&name) || base.is_some_and(|b| families.contains(&b))
}

fn every_expr(dashboard: &Value, out: &mut Vec<String>) {
    match dashboard {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr", Value::String(e)) => out.push(e.clone()),
                    _ => every_expr(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| every_expr(v, out)),
        _ => {}
    }
}

#[test]
fn prometheus_scrapes_ui_up_and_the_grafana_dashboard_and_the_log_read_what_it_serves() {
    let u = User::new();
    let metrics = format!("127.0.0.1:{}", free_port());
    let (up, log) = up(&u, &metrics);
    let (_prom, prom) = prometheus(&u.path(""), &metrics);
    wait_for(60, "prometheus to scrape ui up", || match scalar(&prom, "up{job=\"univrs\"}") {
        Some(1.0) => Ok(()),
        other => Err(format!("up = {other:?}")),
    });

    // Each headline metric has a value through PromQL; those that count work move when the
    // cluster is written to.
    let steady = [
        "etcd_server_has_leader",
        "etcd_mvcc_db_total_size_in_bytes",
        "sum(apiserver_current_inflight_requests)",
        "sum(apiserver_registered_watchers)",
        "univrs_network_nodes_ready",
        "sum(univrs_controller_leader)",
    ];
    let moving = [
        "sum(apiserver_request_total{verb=\"CREATE\"})",
        "sum(apiserver_request_duration_seconds_count)",
        "sum(apiserver_watch_events_total)",
        "etcd_server_proposals_committed_total",
        "etcd_server_proposals_applied_total",
        "etcd_disk_wal_fsync_duration_seconds_count",
        "etcd_disk_backend_commit_duration_seconds_count",
        "sum(univrs_controller_reconciles_total)",
        "sum(kubelet_started_containers_total)",
        "sum(univrs_node_replicas{phase=\"Running\"})",
        "sum(univrs_apiserver_write_refusals_total{verb=\"CREATE\",resource=\"workloads\",reason!=\"Conflict\",reason!=\"NotFound\"})",
    ];
    for q in steady {
        wait_for(30, &format!("a value for {q}"), || scalar(&prom, q).ok_or("no sample yet".to_owned()));
    }
    assert_eq!(scalar(&prom, "etcd_server_has_leader"), Some(1.0));
    let before: Vec<f64> = moving.iter().map(|q| scalar(&prom, q).unwrap_or(0.0)).collect();

    // Writes: a workload of two replicas that run, and a write the apiserver refuses.
    let file = u.path("counted.yaml");
    std::fs::write(
        &file,
        "apiVersion: univrs.io/v1\nkind: Workload\nmetadata:\n  name: counted\nspec:\n  replicas: 2\n  \
         rootfs: busybox\n  command: [\"/bin/sh\", \"-c\", \"sleep 600\"]\n",
    )
    .unwrap();
    ui(&u, &["apply", "-f", file.to_str().unwrap()]).ok();
    // kubectl sends it unsigned: the apiserver refuses it, and says so in its log.
    let bad = u.path("unsigned.yaml");
    std::fs::write(
        &bad,
        "apiVersion: univrs.io/v1\nkind: Workload\nmetadata:\n  name: unsigned\nspec:\n  replicas: 1\n  \
         rootfs: busybox\n  command: [\"true\"]\n",
    )
    .unwrap();
    let kubectl = support::Kubectl { kubeconfig: u.path("kubeconfig"), cache: u.path("kube-cache") };
    kubectl.fails(&["create", "-f", bad.to_str().unwrap()], "not signed");
    for (q, was) in moving.iter().zip(&before) {
        wait_for(90, &format!("{q} to move from {was}"), || match scalar(&prom, q) {
            Some(now) if now > *was => Ok(()),
            other => Err(format!("{other:?}")),
        });
    }

    // The Grafana dashboard: every metric its panels query is served by `ui up`, and every
    // query is PromQL that Prometheus accepts.
    let text =
        ureq::get(&format!("http://{metrics}/metrics")).call().unwrap().body_mut().read_to_string().unwrap();
    let path = workspace().join("deploy/grafana/univrs.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()));
    assert_eq!(dashboard["uid"], "univrs-overview");
    let mut exprs = Vec::new();
    every_expr(&dashboard["panels"], &mut exprs);
    assert!(exprs.len() >= 25, "the dashboard has {} queries", exprs.len());
    let mut missing = Vec::new();
    for e in &exprs {
        let names = metric_names(e);
        assert!(!names.is_empty(), "a query that reads no univrs metric: {e}");
        missing.extend(names.into_iter().filter(|n| !exposes(&text, n)).map(|n| format!("{n} (in {e})")));
        let runnable = e.replace("$__rate_interval", "1m").replace("$job", ".*");
        let answer = query(&prom, &runnable);
        assert_eq!(answer["status"], "success", "Prometheus refuses the dashboard's query {e}: {answer}");
    }
    assert!(missing.is_empty(), "the dashboard queries metrics ui up does not serve: {missing:#?}");

    // The log: JSON lines, one per event, telling what happened and why.
    let wanted = ["placed replica counted-", "started replica counted-", "write refused"];
    wait_for(30, "the log to tell the story", || {
        let lines = log.lock().unwrap().clone();
        let messages: Vec<String> = lines
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|v| v["message"].as_str().map(str::to_owned))
            .collect();
        match wanted.iter().find(|w| !messages.iter().any(|m| m.contains(*w))) {
            None => Ok(()),
            Some(w) => Err(format!("no {w:?} among {messages:#?}")),
        }
    });
    let lines = log.lock().unwrap().clone();
    let placed = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["message"].as_str().is_some_and(|m| m.starts_with("placed replica counted-")))
        .unwrap();
    let m = placed["message"].as_str().unwrap();
    assert!(m.contains("on node n1") && m.contains("highest score"), "the placement says where and why: {m}");
    assert_eq!(placed["level"], "INFO", "{placed}");
    assert!(placed["timestamp"].is_string(), "{placed}");
    let refusal = lines.iter().find(|l| l.contains("write refused")).unwrap();
    assert!(
        refusal.contains("\"reason\":\"Invalid\"")
            && refusal.contains("\"verb\":\"CREATE\"")
            && refusal.contains("Workload \\\"unsigned\\\" is invalid")
            && refusal.contains("not signed"),
        "the refusal says what and why: {refusal}"
    );
    drop(up);
}

#[test]
fn every_process_logs_as_asked_and_a_bad_rust_log_is_named() {
    let u = User::new();
    // A command that does not parse its filter says which and changes nothing.
    let bad = u.cmd(&["get", "wl"]).env("RUST_LOG", "apiserver=loud").output().unwrap();
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert_ne!(bad.status.code(), Some(0));
    assert!(stderr.contains("RUST_LOG") && stderr.contains("apiserver=loud"), "{stderr}");
    // `-v` and `--log-format` are everyone's options.
    let help = u.run(&["get", "--help"]).ok().stdout;
    assert!(help.contains("--verbose") && help.contains("--log-format"), "{help}");
}

/// The compose example's member script (deploy/compose/member.sh), run as three processes on
/// this machine as compose runs it in three containers: the founder lets the two others in,
/// they join, and a Prometheus with the example's scrape config (its `member-N` targets
/// pointed at the processes) sees three members, each with a leader.
#[test]
fn the_compose_members_form_one_cluster_that_its_prometheus_config_scrapes() {
    let u = User::new();
    let root = u.path("compose");
    let shared = root.join("shared");
    let script = workspace().join("deploy/compose/member.sh");
    std::fs::create_dir_all(&root).unwrap();
    let mut members = Vec::new();
    let mut config = std::fs::read_to_string(workspace().join("deploy/compose/prometheus.yml")).unwrap();
    config = config.replace("scrape_interval: 5s", "scrape_interval: 1s");
    for n in 1..=3 {
        let name = format!("member-{n}");
        let (api, peer, metrics) = (free_port(), free_port(), free_port());
        config = config.replace(&format!("'{name}:9091'"), &format!("'127.0.0.1:{metrics}'"));
        let child = Command::new("sh")
            .arg(&script)
            .env("UI", env!("CARGO_BIN_EXE_ui"))
            .env("NAME", &name)
            .env("FOUNDER", "member-1")
            .env("DATA", root.join(&name))
            .env("SHARED", &shared)
            .env("HOST", "127.0.0.1")
            .env("LISTEN_IP", "127.0.0.1")
            .env("API_HOST", "localhost")
            .env("API_PORT", api.to_string())
            .env("PEER_PORT", peer.to_string())
            .env("METRICS_PORT", metrics.to_string())
            .env_remove("UNIVRS_CONFIG_DIR")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(root.join(format!("{name}.log"))).unwrap())
            .spawn()
            .unwrap();
        members.push(Killed(child));
    }
    assert!(!config.contains("member-"), "every target of the example is a process here: {config}");
    let prom_dir = root.join("prometheus");
    std::fs::create_dir_all(&prom_dir).unwrap();
    let config_file = prom_dir.join("prometheus.yml");
    std::fs::write(&config_file, &config).unwrap();
    let port = free_port();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config_file.display()))
        .arg(format!("--storage.tsdb.path={}", prom_dir.join("tsdb").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--log.level=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let _prom = Killed(child);
    let prom = format!("http://127.0.0.1:{port}");
    wait_for(60, "prometheus to be ready", || {
        ureq::get(&format!("{prom}/-/ready")).call().map(drop).map_err(|e| e.to_string())
    });
    // The last `n` lines member-`member` printed.
    let last_lines = |member: usize, n: usize| -> Vec<String> {
        let log = std::fs::read_to_string(root.join(format!("member-{member}.log"))).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].iter().map(|l| l.to_string()).collect()
    };
    wait_for(180, "three members scraped, each with a leader", || {
        // A member that ended will never be scraped: say which, and what it printed.
        for (n, member) in members.iter_mut().enumerate() {
            if let Ok(Some(status)) = member.0.try_wait() {
                let tail = last_lines(n + 1, 40);
                panic!(
                    "member-{} ended ({status}) before the cluster formed; its last lines:\n{}",
                    n + 1,
                    tail.join("\n")
                );
            }
        }
        let up = scalar(&prom, "count(up{job=\"univrs\"} == 1)");
        let led = scalar(&prom, "count(etcd_server_has_leader == 1)");
        match (up, led) {
            (Some(3.0), Some(3.0)) => Ok(()),
            other => {
                let tails: Vec<String> =
                    (1..=3).map(|n| format!("member-{n}:\n  {}", last_lines(n, 8).join("\n  "))).collect();
                Err(format!(
                    "(members up, with a leader) = {other:?}; the members' last lines:\n{}",
                    tails.join("\n")
                ))
            }
        }
    });
    // One cluster of three voters, as a member of it says.
    let kubeconfig = root.join("member-1/member.kubeconfig");
    let members_now = wait_for(60, "three voters", || {
        let run = u.run(&["cluster", "members", "-o", "json", "--kubeconfig", kubeconfig.to_str().unwrap()]);
        let list: Value =
            serde_json::from_str(&run.stdout).map_err(|e| format!("{e}: {}{}", run.stdout, run.stderr))?;
        let voters = list.as_array().map_or(0, |m| m.iter().filter(|m| m["role"] == "voter").count());
        if voters == 3 { Ok(list) } else { Err(format!("{list}")) }
    });
    assert_eq!(members_now.as_array().unwrap().len(), 3, "{members_now}");
    // Each controller leads in exactly one member.
    wait_for(60, "one leader per controller across the members", || {
        let v = query(&prom, "sum by (controller) (univrs_controller_leader)");
        let sums: Vec<f64> = v["data"]["result"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| s["value"][1].as_str().unwrap().parse::<f64>().unwrap())
            .collect();
        // scheduler, workload, gc, nodelifecycle, credits, reputation.
        if sums.len() == 6 && sums.iter().all(|s| *s == 1.0) { Ok(()) } else { Err(format!("{v}")) }
    });
    drop(members);
}
