//! The apiserver's Prometheus metrics (`ui apiserver --metrics-addr`) on a real server: every
//! metric kube-apiserver and etcd dashboards read is there, under the same name, and moves
//! when the cluster is written to and watched. Not on the API's port.

mod support;

use std::process::Stdio;

use support::{Run, Server, User, free_port, wait_for};

fn ui(u: &User, server: &Server, args: &[&str]) -> Run {
    let mut all = args.to_vec();
    all.extend(["--kubeconfig", server.kubeconfig.to_str().unwrap()]);
    u.run(&all)
}

fn workload(replicas: u32) -> String {
    format!(
        "apiVersion: univrs.io/v1\nkind: Workload\nmetadata:\n  name: counted\n  namespace: default\n\
         spec:\n  replicas: {replicas}\n  rootfs: busybox\n  command: [\"/bin/true\"]\n  trustPolicy: eu-only\n"
    )
}

fn scrape(url: &str) -> String {
    let mut response = ureq::get(url).call().unwrap();
    let content_type = response.headers().get("content-type").unwrap().to_str().unwrap().to_owned();
    assert!(content_type.starts_with("application/openmetrics-text"), "{content_type}");
    response.body_mut().read_to_string().unwrap()
}

/// The sum of the samples of `name` whose labels include every one of `labels` (`k="v"`);
/// `None` when no sample matches.
fn value(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, v)) = line.rsplit_once(' ') else { continue };
        let (n, l) = series.split_once('{').unwrap_or((series, ""));
        if n == name && labels.iter().all(|want| l.contains(want)) {
            *found.get_or_insert(0.0) += v.parse::<f64>().unwrap();
        }
    }
    found
}

#[track_caller]
fn get(text: &str, name: &str, labels: &[&str]) -> f64 {
    value(text, name, labels).unwrap_or_else(|| panic!("no {name} {labels:?} in:\n{text}"))
}

#[test]
fn the_apiserver_serves_kube_apiserver_and_etcd_metrics_that_move_with_writes_and_watches() {
    let u = User::new();
    let addr = format!("127.0.0.1:{}", free_port());
    let server = Server::start_with(&u, &u.path("data"), "127.0.0.1:0", &["--metrics-addr", &addr]);
    let url = format!("http://{addr}/metrics");
    let before = scrape(&url);
    assert_eq!(get(&before, "etcd_server_has_leader", &[]), 1.0);
    assert!(get(&before, "etcd_server_leader_changes_seen_total", &[]) >= 1.0);
    assert!(get(&before, "etcd_mvcc_db_total_size_in_bytes", &[]) > 0.0);
    let wal = |t: &str| get(t, "etcd_disk_wal_fsync_duration_seconds_count", &[]);
    let backend = |t: &str| get(t, "etcd_disk_backend_commit_duration_seconds_count", &[]);
    let committed = |t: &str| get(t, "etcd_server_proposals_committed_total", &[]);
    let applied = |t: &str| get(t, "etcd_server_proposals_applied_total", &[]);
    let workloads = ["resource=\"workloads\""];
    let requests = |t: &str| value(t, "apiserver_request_total", &workloads).unwrap_or(0.0);

    // A watch open while the cluster is written to.
    let mut watch = u
        .cmd(&["get", "wl", "-w", "-o", "name", "--kubeconfig", server.kubeconfig.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let watching = ["kind=\"Workload\""];
    wait_for(20, "a registered watcher", || {
        let m = scrape(&url);
        match value(&m, "apiserver_registered_watchers", &watching) {
            Some(n) if n >= 1.0 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    let file = u.path("w.yaml");
    std::fs::write(&file, workload(1)).unwrap();
    ui(&u, &server, &["apply", "-f", file.to_str().unwrap()]).ok();
    std::fs::write(&file, workload(2)).unwrap();
    ui(&u, &server, &["apply", "-f", file.to_str().unwrap()]).ok();
    ui(&u, &server, &["get", "wl", "counted"]).ok();
    // Refused (no such object): counted with its code.
    ui(&u, &server, &["get", "wl", "nobody"]);

    // ADDED, then MODIFIED; and the backend's commit of the writes, which applies hold for
    // up to 100 ms when nothing reads (as etcd's backend commits its batch every 100 ms).
    let after = wait_for(20, "the watch events and the backend's commit", || {
        let m = scrape(&url);
        match value(&m, "apiserver_watch_events_total", &watching) {
            Some(n) if n >= 2.0 && backend(&m) > backend(&before) => Ok(m),
            other => Err(format!("{other:?}, backend commits {}", backend(&m))),
        }
    });
    assert!(requests(&after) > requests(&before), "{after}");
    let mutating = ["CREATE", "UPDATE", "PATCH", "APPLY"]
        .iter()
        .map(|v| {
            value(&after, "apiserver_request_total", &["resource=\"workloads\"", &format!("verb=\"{v}\"")])
        })
        .map(|v| v.unwrap_or(0.0))
        .sum::<f64>();
    assert!(mutating >= 2.0, "{after}");
    assert!(
        get(&after, "apiserver_request_total", &["verb=\"GET\"", "resource=\"workloads\"", "code=\"404\""])
            >= 1.0
    );
    assert!(get(&after, "apiserver_request_total", &["verb=\"WATCH\"", "resource=\"workloads\""]) >= 1.0);
    let latency = ["resource=\"workloads\"", "verb=\"GET\""];
    assert!(get(&after, "apiserver_request_duration_seconds_count", &latency) >= 2.0, "{after}");
    assert!(
        get(&after, "apiserver_request_duration_seconds_bucket", &["le=\"60.0\"", latency[0], latency[1]])
            >= 2.0
    );
    // As kube-apiserver: a watch's length is not a latency.
    assert_eq!(value(&after, "apiserver_request_duration_seconds_count", &["verb=\"WATCH\""]), None);
    get(&after, "apiserver_current_inflight_requests", &["request_kind=\"readOnly\""]);
    get(&after, "apiserver_current_inflight_requests", &["request_kind=\"mutating\""]);
    assert!(wal(&after) > wal(&before));
    assert!(backend(&after) > backend(&before));
    assert!(committed(&after) > committed(&before));
    assert!(applied(&after) > applied(&before));
    assert!(applied(&after) >= committed(&before));
    assert_eq!(get(&after, "etcd_server_proposals_pending", &[]), 0.0);
    get(&after, "etcd_server_proposals_failed_total", &[]);

    // Health, as kube-apiserver answers it, on the API's port, to anyone (no token).
    let agent = server.agent();
    let health = |path: &str| {
        let mut r = agent.get(&format!("{}{path}", server.url)).call().unwrap();
        (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
    };
    assert_eq!(health("/livez"), (200, "ok".to_owned()));
    assert_eq!(health("/readyz"), (200, "ok".to_owned()));
    assert_eq!(health("/healthz"), (200, "ok".to_owned()));
    assert_eq!(health("/readyz?verbose"), (200, "[+]ping ok\n[+]etcd ok\nreadyz check passed\n".to_owned()));
    assert_eq!(health("/livez?verbose"), (200, "[+]ping ok\nlivez check passed\n".to_owned()));
    assert_eq!(
        health("/readyz?verbose&exclude=etcd").1,
        "[+]ping ok\n[+]etcd excluded: ok\nreadyz check passed\n"
    );
    assert_eq!(health("/readyz/etcd"), (200, "ok".to_owned()));
    assert_eq!(health("/livez/etcd").0, 404, "liveness does not depend on the leader");
    assert_eq!(health("/readyz/nope").0, 404);

    // The watch ends: its watcher is no longer registered.
    let _ = watch.kill();
    let _ = watch.wait();
    wait_for(20, "the watcher to go", || {
        let m = scrape(&url);
        match value(&m, "apiserver_registered_watchers", &watching) {
            Some(0.0) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });

    // Never on the API's port, with or without a token.
    let agent = server.agent();
    let (code, _) = support::send(&agent, "GET", &format!("{}/metrics", server.url), "", "", Vec::new());
    assert_eq!(code, 404);
    let bearer = format!("Bearer {}", server.member_token());
    let (code, _) = support::send(&agent, "GET", &format!("{}/metrics", server.url), &bearer, "", Vec::new());
    assert_eq!(code, 404);
    server.stop();
}
