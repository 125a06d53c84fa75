//! The node agent end to end: real `ui up` / `ui apiserver` / `ui controllers run` / `ui node
//! run` processes, replicas in real containers (libcontainer; these tests need root, which CI
//! has), their output through `ui logs`. Every assertion reads the world back: the API, the
//! replica's own output, the host's processes and cgroups.

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Server, User, free_port, processes_under, require_root, stop_shims, wait_for};

/// `ui up` with its local node, for one user.
struct Up {
    child: Child,
    data: PathBuf,
    url: String,
    audience: String,
    /// What it said about its local node.
    local: String,
}

impl Up {
    fn start(u: &User, node: &str) -> Self {
        Self::start_with(u, node, "container")
    }

    /// `ui up` with its local node `node` running replicas with `runtime`.
    fn start_with(u: &User, node: &str, runtime: &str) -> Self {
        u.init_plain();
        let data = u.path("data");
        let mut child = u
            .up_cmd(&data, &u.path("kubeconfig"), &["--node-name", node, "--runtime", runtime])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines().map(|l| l.unwrap());
        let first = lines.next().unwrap();
        let url = first.strip_prefix("listening on ").unwrap_or_else(|| panic!("{first}")).to_owned();
        let second = lines.next().unwrap();
        let audience = second.strip_prefix("cluster: ").unwrap().to_owned();
        let local = lines.find(|l| l.starts_with("local node ")).expect("ui up says how its local node runs");
        std::thread::spawn(move || for _ in lines {});
        Self { child, data, url, audience, local }
    }
}

impl Up {
    /// A second identity with its own config dir and a kubeconfig for this cluster.
    fn another_user(&self) -> User {
        let other = User::new();
        other.init_plain();
        support::kubeconfig_for(&other, &self.url, &self.audience, &self.data);
        other
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        stop_shims(&self.data);
    }
}

fn ui(u: &User, args: &[&str]) -> support::Run {
    let kubeconfig = u.path("kubeconfig");
    let mut all = args.to_vec();
    all.extend(["--kubeconfig", kubeconfig.to_str().unwrap()]);
    u.run(&all)
}

fn apply(u: &User, name: &str, yaml: &str) {
    let file = u.path(&format!("{name}.yaml"));
    std::fs::write(&file, yaml).unwrap();
    ui(u, &["apply", "-f", file.to_str().unwrap()]).ok();
}

fn workload(name: &str, script: &str, extra: &str) -> String {
    let script = script.replace('"', "\\\"");
    format!(
        "apiVersion: univrs.io/v1\nkind: Workload\nmetadata:\n  name: {name}\nspec:\n  replicas: 1\n  rootfs: busybox\n  command: [\"/bin/sh\", \"-c\", \"{script}\"]\n{extra}"
    )
}

/// The replicas of `workload`, as the API has them.
fn replicas(u: &User, workload: &str) -> Vec<Value> {
    let list = ui(u, &["get", "replicas", "-o", "json"]).ok().json();
    list["items"].as_array().unwrap().iter().filter(|r| r["spec"]["workload"] == workload).cloned().collect()
}

fn summary(rs: &[Value]) -> String {
    rs.iter()
        .map(|r| {
            format!(
                "{} on {} {} (restarts {}, reason {}, {})",
                r["metadata"]["name"].as_str().unwrap_or("?"),
                r["spec"]["nodeName"].as_str().unwrap_or("-"),
                r["status"]["phase"].as_str().unwrap_or("-"),
                r["status"]["restarts"],
                r["status"]["reason"],
                r["status"]["message"]
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Waits until `workload` has exactly one replica, in `phase`, and returns it.
#[track_caller]
fn wait_phase(u: &User, workload: &str, phase: &str, secs: u64) -> Value {
    wait_for(secs, &format!("{workload} {phase}"), || {
        let rs = replicas(u, workload);
        match rs.as_slice() {
            [r] if r["status"]["phase"] == phase => Ok(r.clone()),
            _ => Err(summary(&rs)),
        }
    })
}

#[test]
fn ui_up_runs_a_workload_in_its_own_container_and_ui_logs_shows_its_output() {
    require_root();
    let u = User::new();
    let up = Up::start(&u, "iso");
    // A file on the host the container must not see.
    let secret = u.path("host-secret");
    std::fs::write(&secret, "host").unwrap();
    let script = format!(
        "echo pid=$$; echo host=$(hostname); test -e {} && echo host-file-visible || echo host-file-hidden; \
         touch /written 2>/dev/null && echo root-writable || echo root-read-only; echo tmp-ok > /tmp/t && cat /tmp/t; \
         echo env=$GREETING; unshare -U true 2>/dev/null && echo userns-made || echo userns-refused; \
         echo started; sleep 600",
        secret.display()
    );
    let extra =
        "  env:\n    - name: GREETING\n      value: hi\n  resources:\n    cpu: 200m\n    memory: 64Mi\n";
    let applied = Instant::now();
    apply(&u, "iso", &workload("iso", &script, extra));
    let r = wait_phase(&u, "iso", "Running", 60);
    println!("apply to Running: {:?}", applied.elapsed());
    let name = r["metadata"]["name"].as_str().unwrap().to_owned();
    assert_eq!(r["spec"]["nodeName"], "iso");

    let logs = wait_for(20, "the replica's output", || {
        let out = ui(&u, &["logs", &name]);
        if out.stdout.contains("started") {
            Ok(out.stdout)
        } else {
            Err(format!("{}{}", out.stdout, out.stderr))
        }
    });
    // Its own PID namespace (its shell is PID 1), UTS namespace (named after the replica),
    // root filesystem (the host's file is not there, and the image is read-only), its env.
    // And no user namespace of its own (seccomp).
    for line in [
        "pid=1",
        &format!("host={name}"),
        "host-file-hidden",
        "root-read-only",
        "tmp-ok",
        "env=hi",
        "userns-refused",
    ] {
        assert!(logs.lines().any(|l| l == line), "{line:?} not in the output:\n{logs}");
    }
    // The workload's name gives every replica's output, prefixed when there are several.
    assert!(ui(&u, &["logs", "iso", "--tail", "1"]).ok().stdout.contains("started"));

    // The cgroup holds the limits asked for.
    let uid = r["metadata"]["uid"].as_str().unwrap();
    let memory =
        std::fs::read_to_string(format!("/sys/fs/cgroup/memory/univrs/iso/{uid}/memory.limit_in_bytes"))
            .or_else(|_| std::fs::read_to_string(format!("/sys/fs/cgroup/univrs/iso/{uid}/memory.max")))
            .unwrap();
    assert_eq!(memory.trim(), (64u64 << 20).to_string());
    if let Ok(quota) =
        std::fs::read_to_string(format!("/sys/fs/cgroup/cpu/univrs/iso/{uid}/cpu.cfs_quota_us"))
    {
        assert_eq!(quota.trim(), "20000", "200m of a 100 ms period");
    }

    // Only the workload's owner reads its output.
    let other = up.another_user();
    ui(&other, &["logs", &name]).fails_with(&["only the owner of workload iso"]);

    // `ui node status` shows the node and what runs on it.
    let status = u
        .run(&[
            "node",
            "status",
            "--node-dir",
            up.data.join("node").to_str().unwrap(),
            "-o",
            "json",
            "--kubeconfig",
            u.path("kubeconfig").to_str().unwrap(),
        ])
        .ok()
        .json();
    assert_eq!(status["ready"]["status"], "True", "{status}");
    assert_eq!(status["runtime"], "container");
    assert_eq!(status["replicas"][0]["phase"], "Running", "{status}");

    // Deleting the workload stops its container and removes its cgroup.
    ui(&u, &["delete", "workload", "iso"]).ok();
    let runs = up.data.join("node/state/runs");
    wait_for(30, "the container stopped", || {
        let left = processes_under(&runs);
        if left.is_empty() { Ok(()) } else { Err(format!("shims still running: {left:?}")) }
    });
    assert!(!Path::new(&format!("/sys/fs/cgroup/memory/univrs/iso/{uid}")).exists());
}

#[test]
fn memory_limits_and_restart_policies_are_enforced() {
    require_root();
    let u = User::new();
    let _up = Up::start(&u, "policies");
    let limit = "  resources:\n    memory: 16Mi\n  restartPolicy: Never\n";
    apply(&u, "oom", &workload("oom", "x=aaaaaaaaaaaaaaaa; while true; do x=$x$x; done", limit));
    apply(&u, "never", &workload("never", "exit 3", "  restartPolicy: Never\n"));
    apply(&u, "done", &workload("done", "echo ok", "  restartPolicy: OnFailure\n"));
    apply(&u, "retry", &workload("retry", "exit 1", "  restartPolicy: OnFailure\n"));
    apply(&u, "always", &workload("always", "exit 0", "  restartPolicy: Always\n"));

    let oom = wait_phase(&u, "oom", "Failed", 60);
    assert_eq!(oom["status"]["reason"], "OOMKilled", "{oom}");
    assert_eq!(oom["status"]["exitCode"], 137);
    assert!(oom["status"]["usage"]["memory"].is_string(), "measured usage: {oom}");

    let never = wait_phase(&u, "never", "Failed", 30);
    assert_eq!(never["status"]["exitCode"], 3);
    assert_eq!(never["status"]["reason"], "Error");
    assert_eq!(never["status"]["restarts"], 0);

    let done = wait_phase(&u, "done", "Succeeded", 30);
    assert_eq!(done["status"]["exitCode"], 0);
    assert_eq!(done["status"]["restarts"], 0);
    assert!(done["status"]["finishedAt"].is_string());
    // Following the output of a replica that has ended prints it and ends.
    let followed = ui(&u, &["logs", "-f", done["metadata"]["name"].as_str().unwrap()]).ok();
    assert_eq!(followed.stdout, "ok\n");

    for name in ["retry", "always"] {
        wait_for(30, &format!("{name} restarted twice"), || {
            let rs = replicas(&u, name);
            match rs.as_slice() {
                [r] if r["status"]["restarts"].as_u64() >= Some(2) && r["status"]["phase"] == "Running" => {
                    Ok(())
                }
                _ => Err(summary(&rs)),
            }
        });
    }
}

#[test]
fn the_process_runtime_runs_replicas_as_plain_processes_when_asked() {
    let u = User::new();
    let up = Up::start_with(&u, "plain", "process");
    assert!(up.local.contains("runs replicas as plain processes"), "{}", up.local);
    apply(&u, "plain", &workload("plain", "echo pid=$$; echo ran-on-host", "  restartPolicy: Never\n"));
    let r = wait_phase(&u, "plain", "Succeeded", 60);
    let out = ui(&u, &["logs", r["metadata"]["name"].as_str().unwrap()]).ok().stdout;
    assert!(out.contains("ran-on-host"), "{out}");
    assert!(!out.contains("pid=1\n"), "a plain process is not PID 1 of a namespace: {out}");
    let node = ui(&u, &["get", "node", "plain", "-o", "json"]).ok().json();
    assert_eq!(node["status"]["runtime"], "process");

    // A plain process has the agent's rights on the host: only workloads of signers the
    // node trusts run (here the user of `ui up`), not a stranger's.
    let stranger = up.another_user();
    apply(&stranger, "theirs", &workload("theirs", "echo should-not-run", "  restartPolicy: Never\n"));
    let r = wait_phase(&stranger, "theirs", "Failed", 60);
    assert_eq!(r["status"]["reason"], "UntrustedSigner", "{r}");
}

#[test]
fn the_examples_run_on_ui_up_and_show_their_output() {
    require_root();
    let u = User::new();
    let _up = Up::start(&u, "examples");
    let dir = u.path("manifests");
    support::copy_examples(&dir);
    // web publishes port 30080 of the node: this machine's, unless something else holds it.
    let port_free = std::net::TcpListener::bind("0.0.0.0:30080").is_ok();
    let applied = Instant::now();
    ui(&u, &["apply", "-f", dir.to_str().unwrap()]).ok();
    wait_for(60, "hello 2/2 ready", || {
        let out = ui(&u, &["status"]).ok().stdout;
        if out.contains("hello: 2/2 ready") { Ok(()) } else { Err(out) }
    });
    if port_free {
        let page = wait_for(60, "web serving on port 30080", || {
            let got = std::process::Command::new("sh")
                .args(["-c", "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 3 127.0.0.1 30080"])
                .output()
                .unwrap();
            let out = String::from_utf8_lossy(&got.stdout).into_owned();
            if out.contains("hello from web-") { Ok(out) } else { Err(out) }
        });
        println!("apply to serving (the examples, web on port 30080): {:?}\n{page}", applied.elapsed());
        // Ready once its readiness probe (every 2 s) has passed.
        wait_for(30, "web ready, publishing 30080", || {
            let status = ui(&u, &["status"]).ok().stdout;
            let ok = status.contains("web: 1/1 ready") && status.contains("publishes 30080→8080/TCP");
            if ok { Ok(()) } else { Err(status) }
        });
    } else {
        // Held by something else on this machine: web waits, saying so.
        wait_for(60, "web waiting for port 30080", || {
            let out = ui(&u, &["status"]).ok().stdout;
            if out.contains("host port 30080/TCP") { Ok(()) } else { Err(out) }
        });
    }
    let logs = wait_for(20, "hello's output", || {
        let out = ui(&u, &["logs", "hello"]).ok().stdout;
        if out.lines().filter(|l| l.contains("] hello from hello-")).count() >= 2 {
            Ok(out)
        } else {
            Err(out)
        }
    });
    assert!(logs.starts_with("[hello-"), "{logs}");
}

/// A node agent of its own (`ui node init/register/offer/run`), for the operator `u`.
struct Agent {
    dir: PathBuf,
    runtime: &'static str,
    child: Option<Child>,
}

impl Agent {
    fn new(u: &User, name: &str) -> Self {
        Self::with_runtime(u, name, "container")
    }

    fn with_runtime(u: &User, name: &str, runtime: &'static str) -> Self {
        Self::offered_in(u, name, runtime, "DE")
    }

    /// A node whose offer is in `jurisdiction`.
    fn offered_in(u: &User, name: &str, runtime: &'static str, jurisdiction: &str) -> Self {
        let dir = u.path(&format!("node-{name}"));
        let listen = format!("127.0.0.1:{}", free_port());
        let d = dir.to_str().unwrap();
        u.run(&["node", "init", "--node-dir", d, "--name", name, "--listen", &listen]).ok();
        ui(u, &["node", "register", "--node-dir", d, "--cpu", "2", "--memory", "2Gi"]).ok();
        ui(
            u,
            &[
                "node",
                "offer",
                "--node-dir",
                d,
                "--jurisdiction",
                jurisdiction,
                "--cpu",
                "2",
                "--memory",
                "2Gi",
            ],
        )
        .ok();
        let mut agent = Self { dir, runtime, child: None };
        agent.start(u);
        agent
    }

    fn start(&mut self, u: &User) {
        let child = u
            .cmd(&[
                "node",
                "run",
                "--node-dir",
                self.dir.to_str().unwrap(),
                "--lease-seconds",
                "4",
                "--runtime",
                self.runtime,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    fn kill_9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill_9();
        stop_shims(&self.dir);
    }
}

fn node_of(r: &Value) -> String {
    r["spec"]["nodeName"].as_str().unwrap_or_default().to_owned()
}

#[test]
fn a_dead_node_s_replica_runs_on_another_and_withdraw_drains_a_node() {
    require_root();
    let u = User::new();
    let server = Server::start_with(&u, &u.path("data"), "127.0.0.1:0", &["--allow-loopback-nodes"]);
    let _controllers = support::Controllers::start(&u, &server);
    let mut agents = [Agent::new(&u, "node-a"), Agent::new(&u, "node-b")];
    let index = |node: &str| usize::from(node == "node-b");

    apply(
        &u,
        "web",
        &workload("web", "echo up; sleep 600", "  resources:\n    cpu: 100m\n    memory: 32Mi\n"),
    );
    let first = wait_phase(&u, "web", "Running", 60);
    let dead = node_of(&first);
    let alive = if dead == "node-a" { "node-b" } else { "node-a" };

    // The node dies (its agent killed, its container left running): its lease lapses, the
    // node goes NotReady, its replica is evicted and made again on the other node.
    agents[index(&dead)].kill_9();
    let moved = wait_for(60, "the replica running on the other node", || {
        let rs = replicas(&u, "web");
        match rs.as_slice() {
            [r] if node_of(r) == alive && r["status"]["phase"] == "Running" => Ok(r.clone()),
            _ => Err(summary(&rs)),
        }
    });
    assert_ne!(moved["metadata"]["uid"], first["metadata"]["uid"]);
    // As Events: the node lost, the eviction (on the workload: the replica is gone), and the
    // start on the other node, reported by that node's agent with its own key, as itself.
    let said = wait_for(30, "the node's and the workload's events", || {
        let node = ui(&u, &["events", "--for", &format!("node/{dead}")]).ok().stdout;
        let workload = ui(&u, &["events", "--for", "workload/web"]).ok().stdout;
        if node.contains("NodeNotReady") && workload.contains("Evicted") {
            Ok(workload)
        } else {
            Err(format!("{node}{workload}"))
        }
    });
    let evicted = said.lines().find(|l| l.contains("Evicted")).unwrap_or_default();
    let first_name = first["metadata"]["name"].as_str().unwrap();
    assert!(evicted.contains(&format!("Evicting replica {first_name} from node {dead}")), "{said}");
    let moved_name = moved["metadata"]["name"].as_str().unwrap();
    let started = wait_for(30, "the start on the other node as an event", || {
        let list = ui(&u, &["events", "--for", &format!("replica/{moved_name}"), "-o", "json"]).ok().json();
        let found = list["items"].as_array().unwrap().iter().find(|e| e["reason"] == "Started").cloned();
        found.ok_or_else(|| list.to_string())
    });
    assert_eq!(started["reportingInstance"], alive, "{started}");
    assert_eq!(started["reportingController"], "univrs.io/node-agent", "{started}");
    let node = ui(&u, &["get", "node", &dead, "-o", "json"]).ok().json();
    let ready =
        node["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Ready").unwrap();
    assert_eq!(ready["status"], "False", "{node}");

    // The node comes back: its agent stops the container of the replica no longer bound to
    // it. No duplicate runs anywhere.
    let dead_runs = agents[index(&dead)].dir.join("state/runs");
    assert!(!processes_under(&dead_runs).is_empty(), "the orphan should still run before the agent returns");
    agents[index(&dead)].start(&u);
    wait_for(30, "the orphaned container stopped", || {
        let left = processes_under(&dead_runs);
        if left.is_empty() { Ok(()) } else { Err(format!("{left:?}")) }
    });
    let rs = replicas(&u, "web");
    assert_eq!(rs.len(), 1, "{}", summary(&rs));

    // Withdraw the node it runs on now: it moves back, and the offer goes.
    let out = ui(
        &u,
        &["node", "withdraw", "--node-dir", agents[index(alive)].dir.to_str().unwrap(), "--timeout", "60"],
    )
    .ok();
    assert!(out.stdout.contains(&format!("node {alive} withdrawn")), "{}", out.stdout);
    let back = wait_phase(&u, "web", "Running", 60);
    assert_eq!(node_of(&back), dead);
    let offers = ui(&u, &["get", "nodeoffers", "-o", "json"]).ok().json();
    let names: Vec<&str> =
        offers["items"].as_array().unwrap().iter().filter_map(|o| o["metadata"]["name"].as_str()).collect();
    assert_eq!(names, [dead.as_str()]);
    let status = u
        .run(&["node", "status", alive, "-o", "json", "--kubeconfig", u.path("kubeconfig").to_str().unwrap()])
        .ok()
        .json();
    assert_eq!(status["unschedulable"], true);
    assert_eq!(status["replicas"].as_array().unwrap().len(), 0);
}

#[test]
fn a_run_that_ends_while_its_agent_is_down_is_neither_lost_nor_repeated() {
    require_root();
    let u = User::new();
    // Its agent listens on loopback: the apiserver may call it there.
    let server = Server::start_with(&u, &u.path("data"), "127.0.0.1:0", &["--allow-loopback-nodes"]);
    let _controllers = support::Controllers::start(&u, &server);
    let mut agent = Agent::new(&u, "node-r");
    apply(&u, "job", &workload("job", "echo ran; sleep 1; exit 0", "  restartPolicy: Never\n"));
    let r = wait_phase(&u, "job", "Running", 60);
    // The agent goes away (its lease lasts 4 s) and the run ends meanwhile.
    agent.kill_9();
    let runs = agent.dir.join("state/runs");
    wait_for(20, "the run's end", || {
        let left = processes_under(&runs);
        if left.is_empty() { Ok(()) } else { Err(format!("{left:?}")) }
    });
    agent.start(&u);
    let done = wait_phase(&u, "job", "Succeeded", 30);
    assert_eq!(done["metadata"]["uid"], r["metadata"]["uid"]);
    assert_eq!(done["status"]["restarts"], 0);
    let out = ui(&u, &["logs", "job"]).ok().stdout;
    assert_eq!(out.matches("ran").count(), 1, "it ran once: {out}");
}

#[test]
fn a_run_adopted_by_a_restarted_agent_is_still_probed_and_keeps_its_address() {
    require_root();
    let u = User::new();
    let server = Server::start_with(&u, &u.path("data"), "127.0.0.1:0", &["--allow-loopback-nodes"]);
    let _controllers = support::Controllers::start(&u, &server);
    let mut agent = Agent::new(&u, "node-p");
    // Ready while /tmp/ready exists.
    let probe =
        "  readinessProbe:\n    exec:\n      command: [\"cat\", \"/tmp/ready\"]\n    periodSeconds: 1\n";
    apply(&u, "adopt", &workload("adopt", "touch /tmp/ready; exec sleep 600", probe));
    let ready = |r: &Value| {
        r["status"]["conditions"]
            .as_array()
            .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
    };
    let before = wait_for(60, "adopt ready", || match replicas(&u, "adopt").as_slice() {
        [r] if ready(r) => Ok(r.clone()),
        rs => Err(summary(rs)),
    });
    // The agent dies and comes back: it adopts the run, still running.
    agent.kill_9();
    agent.start(&u);
    let name = before["metadata"]["name"].as_str().unwrap().to_owned();
    // Its readiness probe runs again: once it fails, the replica is not ready.
    wait_for(30, "the probe failing on the adopted run", || {
        exec(&u, &name, &[], &["rm", "-f", "/tmp/ready"]);
        match replicas(&u, "adopt").as_slice() {
            [r] if !ready(r) && r["status"]["phase"] == "Running" => Ok(()),
            rs => Err(summary(rs)),
        }
    });
    let after = replicas(&u, "adopt").remove(0);
    assert_eq!(after["metadata"]["uid"], before["metadata"]["uid"], "the same run");
    assert_eq!(after["status"]["restarts"], 0, "never restarted");
    assert_eq!(after["status"]["startedAt"], before["status"]["startedAt"], "its start, not the adoption");
    assert_eq!(after["status"]["podIP"], before["status"]["podIP"], "its address kept");
    // And passes again.
    exec(&u, &name, &[], &["touch", "/tmp/ready"]).ok();
    wait_for(30, "ready again", || match replicas(&u, "adopt").as_slice() {
        [r] if ready(r) => Ok(()),
        rs => Err(summary(rs)),
    });
}

/// Creates replica `name` of workload `w` (as the member, like the workload controller and the
/// scheduler) bound to node `node` with `spec.nodeUid` `node_uid`.
fn bound_replica(server: &Server, u: &User, name: &str, node: &str, node_uid: &Value) {
    let workload = ui(u, &["get", "workload", "w", "-o", "json"]).ok().json();
    let replica = serde_json::json!({
        "apiVersion": "univrs.io/v1", "kind": "Replica",
        "metadata": { "name": name, "namespace": "default", "ownerReferences": [{
            "apiVersion": "univrs.io/v1", "kind": "Workload", "name": "w",
            "uid": workload["metadata"]["uid"], "controller": true }] },
        "spec": { "workload": "w", "nodeName": node, "nodeUid": node_uid, "container": {
            "rootfs": "busybox", "command": ["/bin/sh", "-c", format!("echo {name}; sleep 600")],
            "restartPolicy": "Never" } },
    });
    let (code, body) = support::send(
        &server.agent(),
        "POST",
        &format!("{}/apis/univrs.io/v1/namespaces/default/replicas", server.url),
        &format!("Bearer {}", server.member_token()),
        "application/json",
        serde_json::to_vec(&replica).unwrap(),
    );
    assert_eq!(code, 201, "{body}");
}

fn replica_named(u: &User, name: &str) -> Value {
    ui(u, &["get", "replica", name, "-o", "json"]).ok().json()
}

#[test]
fn an_agent_runs_only_replicas_bound_to_its_node_s_uid() {
    let u = User::new();
    // No controllers: the test binds replicas itself. Plain processes: no root needed.
    let server = Server::start_with(&u, &u.path("data"), "127.0.0.1:0", &["--allow-loopback-nodes"]);
    let agent = Agent::with_runtime(&u, "node-u", "process");
    apply(&u, "w", &workload("w", "echo unused", "  restartPolicy: Never\n"));
    let node = || ui(&u, &["get", "node", "node-u", "-o", "json"]).ok().json();
    let first = node()["metadata"]["uid"].clone();

    // Bound to an earlier Node of this name, then to this one: only the second runs.
    bound_replica(
        &server,
        &u,
        "earlier",
        "node-u",
        &serde_json::json!("00000000-0000-0000-0000-0000000000e1"),
    );
    bound_replica(&server, &u, "now", "node-u", &first);
    let now = wait_for(30, "the replica bound to this Node running", || {
        let r = replica_named(&u, "now");
        if r["status"]["phase"] == "Running" { Ok(r) } else { Err(r.to_string()) }
    });
    let out = wait_for(20, "its output", || {
        let out = ui(&u, &["logs", "now"]);
        if out.stdout.contains("now") { Ok(out.stdout) } else { Err(format!("{}{}", out.stdout, out.stderr)) }
    });
    assert_eq!(out, "now\n");
    // The agent had seen both (it handles its replicas in one pass): the other never ran.
    let earlier = replica_named(&u, "earlier");
    assert!(earlier["status"]["phase"].is_null(), "{earlier}");
    let runs = agent.dir.join("state/runs");
    assert!(!runs.join(earlier["metadata"]["uid"].as_str().unwrap()).exists());

    // The Node is deleted and registered again: another Node object (another uid). The run of
    // the replica bound to the first one stops; a replica bound to the new one runs.
    ui(&u, &["delete", "node", "node-u"]).ok();
    let d = agent.dir.to_str().unwrap();
    ui(&u, &["node", "register", "--node-dir", d, "--cpu", "2", "--memory", "2Gi"]).ok();
    let second = node()["metadata"]["uid"].clone();
    assert_ne!(second, first);
    let old_run = runs.join(now["metadata"]["uid"].as_str().unwrap());
    wait_for(30, "the run bound to the first Node stopped", || {
        let left = processes_under(&old_run);
        if left.is_empty() && !old_run.exists() { Ok(()) } else { Err(format!("{left:?}")) }
    });
    bound_replica(&server, &u, "next", "node-u", &second);
    wait_for(30, "the replica bound to the new Node running", || {
        let r = replica_named(&u, "next");
        if r["status"]["phase"] == "Running" { Ok(()) } else { Err(r.to_string()) }
    });
    assert!(processes_under(&old_run).is_empty(), "the run bound to the first Node came back");
}

/// The shims of the runs of the node in `dir` (not other processes naming the dir).
fn shims_under(dir: &Path) -> Vec<i32> {
    processes_under(dir)
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.split(|b| *b == 0).any(|a| a == b"shim"))
        })
        .collect()
}

#[test]
fn ui_down_stops_ui_up_and_its_replicas_and_a_second_up_is_told_the_data_dir_is_in_use() {
    require_root();
    let u = User::new();
    let mut up = Up::start(&u, "local");
    let data = up.data.to_str().unwrap().to_owned();
    // A second `ui up` on the same data dir: refused at once, saying what to do.
    support::Run::from(u.up_cmd(&up.data, &u.path("other"), &[]).output().unwrap())
        .fails_with(&["is in use by another univrs member", "ui down"]);
    apply(&u, "sleeper", &workload("sleeper", "sleep 1000", ""));
    wait_phase(&u, "sleeper", "Running", 60);
    assert!(!shims_under(&up.data).is_empty(), "the replica's shim runs");

    // `ui down`: ui up stops (cleanly), and so does every replica of its local node.
    let down = u.run(&["down", "--data-dir", &data, "-o", "json"]).ok().json();
    assert_eq!(down["stoppedPid"], up.child.id(), "{down}");
    let status = up.child.wait().unwrap();
    assert!(status.success(), "ui up did not stop cleanly: {status}");
    assert!(shims_under(&up.data).is_empty(), "a replica kept running: {:?}", shims_under(&up.data));
    let again = u.run(&["down", "--data-dir", &data]).ok().stdout;
    assert!(again.contains("no univrs member ran"), "{again}");

    // With --keep-replicas they stay for the next `ui up`; `ui down` then stops them too.
    let mut kept = u
        .up_cmd(&up.data, &u.path("kubeconfig"), &["--keep-replicas"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(kept.stdout.take().unwrap()).lines().map(|l| l.unwrap());
    assert!(lines.any(|l| l.starts_with("local node ")));
    std::thread::spawn(move || for _ in lines {});
    // Its status may still say Running from before: wait for the run itself.
    wait_for(60, "the replica to run again", || {
        if shims_under(&up.data).is_empty() { Err("no shim yet".to_owned()) } else { Ok(()) }
    });
    let _ = std::process::Command::new("kill").args(["-INT", &kept.id().to_string()]).status();
    let out = kept.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("keep running: the next `ui up` adopts them, `ui down` stops them"), "{said}");
    assert!(!shims_under(&up.data).is_empty(), "the kept replica stopped");
    let down = u.run(&["down", "--data-dir", &data, "-o", "json"]).ok().json();
    assert_eq!(down["replicasStopped"], 1, "{down}");
    assert!(shims_under(&up.data).is_empty());
}

/// The `Ready` condition of a replica ("True", "False" or "-").
fn ready_of(r: &Value) -> String {
    r["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .and_then(|c| c["status"].as_str())
        .unwrap_or("-")
        .to_owned()
}

/// The Available condition of a workload.
fn available(u: &User, name: &str) -> (String, String) {
    let w = ui(u, &["get", "workload", name, "-o", "json"]).ok().json();
    let c = w["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Available").cloned())
        .unwrap_or_default();
    (c["status"].as_str().unwrap_or("-").to_owned(), c["message"].as_str().unwrap_or("-").to_owned())
}

#[test]
fn probes_decide_readiness_and_liveness_and_a_crash_loop_says_so_everywhere() {
    require_root();
    let u = User::new();
    let up = Up::start(&u, "health");
    // Ready only once /tmp/ready exists (an exec probe, run inside the container), which the
    // replica makes after 8 s: unavailable until then, then available.
    let exec_ready = "  readinessProbe:\n    exec:\n      command: [\"/bin/sh\", \"-c\", \"test -e /tmp/ready\"]\n    periodSeconds: 1\n";
    apply(&u, "slow", &workload("slow", "sleep 8; touch /tmp/ready; sleep 600", exec_ready));
    // An HTTP server on the replica's own loopback, probed by HTTP GET (readiness) and TCP
    // (liveness): ready and never restarted.
    let http = "  readinessProbe:\n    httpGet:\n      path: /index.html\n      port: 8080\n    periodSeconds: 1\n  livenessProbe:\n    tcpSocket:\n      port: 8080\n    periodSeconds: 1\n    failureThreshold: 2\n";
    let serve =
        "mkdir -p /tmp/www && echo ok > /tmp/www/index.html && exec httpd -f -p 127.0.0.1:8080 -h /tmp/www";
    apply(&u, "web", &workload("web", serve, http));
    // Nothing listens on the liveness port: killed after 2 failures, again and again.
    let dead =
        "  livenessProbe:\n    tcpSocket:\n      port: 9\n    periodSeconds: 1\n    failureThreshold: 2\n";
    apply(&u, "deaf", &workload("deaf", "sleep 600", dead));
    // Exits at once, every time.
    apply(&u, "crash", &workload("crash", "echo boom; exit 3", ""));

    // Running but not ready, and the workload unavailable, while the probe fails.
    let r = wait_phase(&u, "slow", "Running", 60);
    assert_eq!(ready_of(&r), "False", "{r}");
    let (status, message) = available(&u, "slow");
    assert_eq!((status.as_str(), message.as_str()), ("False", "0/1 replicas ready"));
    let shown = ui(&u, &["status"]).ok().stdout;
    assert!(shown.contains("slow: 0/1 ready, 1 replicas") && shown.contains("Running, not ready"), "{shown}");
    wait_for(40, "slow ready once its file exists", || {
        let rs = replicas(&u, "slow");
        match rs.as_slice() {
            [r] if ready_of(r) == "True" => Ok(()),
            _ => Err(summary(&rs)),
        }
    });
    wait_for(20, "slow available", || match available(&u, "slow") {
        (s, m) if s == "True" => Ok(m),
        other => Err(format!("{other:?}")),
    });

    let web = wait_for(40, "web ready by its HTTP probe", || {
        let rs = replicas(&u, "web");
        match rs.as_slice() {
            [r] if ready_of(r) == "True" => Ok(r.clone()),
            _ => Err(summary(&rs)),
        }
    });
    // Seen while it waits to be started again (the back-off grows, so it is seen).
    let dead = wait_for(90, "deaf killed by its liveness probe", || {
        let rs = replicas(&u, "deaf");
        match rs.as_slice() {
            [r] if r["status"]["reason"] == "CrashLoopBackOff" => Ok(r.clone()),
            _ => Err(summary(&rs)),
        }
    });
    let crash = wait_for(60, "crash in CrashLoopBackOff", || {
        let rs = replicas(&u, "crash");
        match rs.as_slice() {
            [r] if r["status"]["reason"] == "CrashLoopBackOff"
                && r["status"]["restarts"].as_u64() >= Some(2) =>
            {
                Ok(r.clone())
            }
            _ => Err(summary(&rs)),
        }
    });
    assert_eq!(crash["status"]["lastExitReason"], "Error", "{crash}");
    assert_eq!(crash["status"]["exitCode"], 3, "{crash}");
    assert_eq!(ready_of(&crash), "False", "{crash}");
    let message = crash["status"]["message"].as_str().unwrap_or_default();
    assert!(message.starts_with("back-off ") && message.contains("exited with code 3 (Error)"), "{message}");
    // The liveness kill is said as such while it waits, or in the last message.
    let said = dead["status"]["message"].as_str().unwrap_or_default().to_owned();
    assert!(said.contains("killed: liveness probe failed: tcp-socket :9: dial tcp :9"), "{dead}");
    // The web server was never restarted by its (passing) liveness probe.
    let web_now = replica_named(&u, web["metadata"]["name"].as_str().unwrap());
    assert_eq!(web_now["status"]["restarts"], 0, "{web_now}");

    // Everywhere a user looks: ui status, ui get rp, kubectl get rp.
    let shown = ui(&u, &["status"]).ok().stdout;
    assert!(shown.contains("crash: 0/1 ready, 1 replicas") && shown.contains("CrashLoopBackOff"), "{shown}");
    let crash_name = crash["metadata"]["name"].as_str().unwrap();
    let row = |out: &str| out.lines().find(|l| l.starts_with(crash_name)).unwrap_or_default().to_owned();
    let got = ui(&u, &["get", "rp"]).ok().stdout;
    assert!(row(&got).contains("0/1") && row(&got).contains("CrashLoopBackOff"), "{got}");
    let k = support::Kubectl { kubeconfig: u.path("kubeconfig"), cache: u.path("kube-cache") };
    let got = k.ok(&["get", "rp", "-o", "wide"]);
    assert!(got.lines().next().unwrap().contains("READY   STATUS"), "{got}");
    let line = row(&got);
    assert!(line.contains("0/1") && line.contains("CrashLoopBackOff") && line.contains("Error"), "{got}");

    // And as Events: the failed liveness probe, the kill and the back-off, in kubectl events.
    let deaf_name = dead["metadata"]["name"].as_str().unwrap();
    let said = wait_for(30, "deaf's probe failure, kill and back-off as events", || {
        let out = k.run(&["events", "--for", &format!("replica/{deaf_name}")]);
        if ["Unhealthy", "Killing", "BackOff"].iter().all(|r| out.stdout.contains(r)) {
            Ok(out.stdout)
        } else {
            Err(format!("{}{}", out.stdout, out.stderr))
        }
    });
    assert!(said.contains("Liveness probe failed: tcp-socket :9"), "{said}");
    let crashed = k.ok(&["events", "--for", &format!("replica/{crash_name}")]);
    let backoff = crashed.lines().find(|l| l.contains("BackOff")).unwrap_or_default();
    assert!(
        backoff.contains("Warning") && backoff.contains("Back-off restarting failed container"),
        "{crashed}"
    );
    drop(up);
}

#[test]
fn a_replica_makes_only_allowed_syscalls_with_docker_s_capabilities_or_fewer() {
    require_root();
    let u = User::new();
    let up = Up::start(&u, "jail");
    // An image of busybox and a static program that tries what a replica must not do.
    let images = up.data.join("node/images");
    let tools = images.join("tools");
    wait_for(30, "the busybox image", || {
        if images.join("busybox/bin/busybox").exists() { Ok(()) } else { Err("not yet".to_owned()) }
    });
    let copied = std::process::Command::new("cp")
        .args(["-a", images.join("busybox").to_str().unwrap(), tools.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(copied.success());
    let source = support::workspace().join("tests/fixtures/escape.c");
    let built = std::process::Command::new("cc")
        .args(["-static", "-O", "-o", tools.join("bin/escape").to_str().unwrap(), source.to_str().unwrap()])
        .status()
        .expect("a C compiler (gcc) is installed");
    assert!(built.success(), "cannot build {}", source.display());
    let script = "/bin/escape; grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status; \
                  nsenter -t 1 -n true 2>/dev/null && echo setns=ok || echo setns=refused; \
                  echo uid_map=$(cat /proc/self/uid_map); id; sleep 4; echo done";
    let yaml =
        workload("jail", script, "  restartPolicy: Never\n").replace("rootfs: busybox", "rootfs: tools");
    apply(&u, "jail", &yaml);
    let r = wait_phase(&u, "jail", "Running", 60);
    // Seen from the host: the container's root is an unprivileged host uid, its own range.
    let run = up.data.join("node/state/runs").join(r["metadata"]["uid"].as_str().unwrap());
    let host_uid = wait_for(10, "the container's host uid", || {
        let pid = std::fs::read_to_string(run.join("container.pid")).map_err(|e| e.to_string())?;
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", pid.trim())).map_err(|e| e.to_string())?;
        let uid = status.lines().find_map(|l| l.strip_prefix("Uid:")).ok_or("no Uid")?;
        Ok::<u64, String>(uid.split_whitespace().next().unwrap().parse().unwrap())
    });
    assert!(host_uid >= 1 << 20, "container root is host uid {host_uid}");
    let r = wait_phase(&u, "jail", "Succeeded", 60);
    let out = ui(&u, &["logs", r["metadata"]["name"].as_str().unwrap()]).ok().stdout;
    assert!(out.contains("uid=0(root) gid=0(root)") || out.contains("uid=0 gid=0"), "{out}");
    let said = |key: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")).or_else(|| l.strip_prefix(&format!("{key}:"))))
            .map(str::trim)
            .unwrap_or_else(|| panic!("no {key} in the output:\n{out}"))
            .to_owned()
    };
    assert_eq!(said("uid_map").split_whitespace().collect::<Vec<_>>(), ["0", &host_uid.to_string(), "65536"]);
    // Refused by the seccomp allow-list (EPERM), whatever the capabilities would allow.
    for call in [
        "ptrace",
        "unshare_user",
        "unshare_net",
        "clone_newuser",
        "mount",
        "io_uring_setup",
        "keyctl",
        "bpf",
        "socket_vsock",
    ] {
        assert_eq!(said(call), "EPERM", "{call}:\n{out}");
    }
    assert_eq!(said("setns"), "refused", "{out}");
    // What a program needs still works.
    assert_eq!(said("socket_inet"), "ok", "{out}");
    assert_eq!(said("fork"), "ok", "{out}");
    // Docker's default capabilities without NET_RAW: CHOWN DAC_OVERRIDE FOWNER FSETID KILL
    // SETGID SETUID SETPCAP NET_BIND_SERVICE SYS_CHROOT MKNOD AUDIT_WRITE SETFCAP.
    assert_eq!(said("CapEff"), "00000000a80405fb", "{out}");
    assert_eq!(said("CapBnd"), "00000000a80405fb", "{out}");
    assert_eq!(said("NoNewPrivs"), "1", "{out}");
    assert_eq!(said("Seccomp"), "2", "{out}");
    // No resources asked: the node's default limits, not none.
    let limits = wait_for(20, "the limits applied", || {
        let r = replica_named(&u, r["metadata"]["name"].as_str().unwrap());
        if r["status"]["limits"].is_object() { Ok(r["status"]["limits"].clone()) } else { Err(r.to_string()) }
    });
    assert_eq!(limits, serde_json::json!({ "cpu": 1, "memory": "512Mi" }));
}

#[test]
fn a_tightened_trust_policy_moves_a_running_replica_new_one_first_or_says_why_it_stays() {
    require_root();
    let u = User::new();
    let server = Server::start_with(&u, &u.path("data"), "127.0.0.1:0", &["--allow-loopback-nodes"]);
    let _controllers = support::Controllers::start(&u, &server);
    let _agents = [
        Agent::offered_in(&u, "in-de", "container", "DE"),
        Agent::offered_in(&u, "in-fr", "container", "FR"),
    ];
    let policy = |jurisdictions: &str| {
        format!(
            "apiVersion: univrs.io/v1\nkind: TrustPolicy\nmetadata:\n  name: where\nspec:\n  allowedJurisdictions: [{jurisdictions}]\n  allowedOperators: [{}]\n",
            u.run(&["identity", "show", "-o", "json"]).ok().json()["did"].as_str().unwrap()
        )
    };
    apply(&u, "policy", &policy("DE"));
    let extra = "  trustPolicy: where\n  resources:\n    cpu: 100m\n    memory: 32Mi\n";
    apply(&u, "moving", &workload("moving", "echo up; sleep 600", extra));
    let first = wait_phase(&u, "moving", "Running", 60);
    assert_eq!(node_of(&first), "in-de");
    let first_uid = first["metadata"]["uid"].clone();

    // Only FR now: a replacement on in-fr first; the one on in-de stops only once it runs.
    apply(&u, "policy", &policy("FR"));
    let moved = wait_for(90, "the replica moved to in-fr", || {
        let rs = replicas(&u, "moving");
        let old_there = rs.iter().any(|r| r["metadata"]["uid"] == first_uid);
        let new_running = rs.iter().any(|r| node_of(r) == "in-fr" && r["status"]["phase"] == "Running");
        assert!(
            old_there || new_running,
            "the old replica went before its replacement ran: {}",
            summary(&rs)
        );
        match rs.as_slice() {
            [r] if node_of(r) == "in-fr" && r["status"]["phase"] == "Running" => Ok(r.clone()),
            _ => Err(summary(&rs)),
        }
    });
    assert_ne!(moved["metadata"]["uid"], first_uid);

    // Nowhere qualifies: it keeps running, marked, and says why; the replacement waits.
    apply(&u, "policy", &policy("US"));
    let marked = wait_for(60, "the replica marked as a disruption target", || {
        let r = replica_named(&u, moved["metadata"]["name"].as_str().unwrap());
        match r["metadata"]["annotations"]["univrs.io/disruption-target"].as_str() {
            Some(why) => Ok((r.clone(), why.to_owned())),
            None => Err(r.to_string()),
        }
    });
    assert_eq!(marked.0["status"]["phase"], "Running");
    let message = marked.1.as_str();
    assert!(
        message.contains("node in-fr no longer qualifies under trust policy where: jurisdiction not allowed"),
        "{message}"
    );
    let waiting = wait_for(30, "a replacement that cannot be placed", || {
        let rs = replicas(&u, "moving");
        match rs.iter().find(|r| r["spec"]["nodeName"].is_null() && r["status"]["reason"] == "Unschedulable")
        {
            Some(r) => Ok(r.clone()),
            None => Err(summary(&rs)),
        }
    });
    assert!(waiting["status"]["message"].as_str().unwrap().contains("jurisdiction not allowed"), "{waiting}");
    let w = ui(&u, &["get", "workload", "moving", "-o", "json"]).ok().json();
    let progressing = w["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Progressing")
        .unwrap()
        .clone();
    assert_eq!(progressing["reason"], "Replacing", "{w}");
    let still = replica_named(&u, moved["metadata"]["name"].as_str().unwrap());
    assert_eq!(still["status"]["phase"], "Running", "never below availability without a replacement");
    let shown = ui(&u, &["status"]).ok().stdout;
    assert!(shown.contains("to be replaced: node in-fr no longer qualifies"), "{shown}");

    // FR allowed again: the mark clears and the waiting replacement goes, or (when the
    // scheduler places the replacement first) the replacement runs and the marked one goes.
    // Either way: one replica, running on in-fr, marked by nothing.
    apply(&u, "policy", &policy("FR, US"));
    wait_for(60, "one unmarked replica running on in-fr", || {
        let rs = replicas(&u, "moving");
        match rs.as_slice() {
            [r] if node_of(r) == "in-fr"
                && r["status"]["phase"] == "Running"
                && r["metadata"]["annotations"]["univrs.io/disruption-target"].is_null() =>
            {
                Ok(())
            }
            _ => Err(summary(&rs)),
        }
    });
}

/// A pid written in a run's directory (`shim.pid`, `container.pid`).
fn pid_in(run: &Path, file: &str) -> i32 {
    std::fs::read_to_string(run.join(file)).unwrap().trim().parse().unwrap()
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')))
}

#[test]
fn a_killed_shim_s_container_is_stopped_at_once_and_the_replica_reported() {
    require_root();
    let u = User::new();
    let up = Up::start(&u, "shims");
    apply(&u, "never", &workload("never", "sleep 600", "  restartPolicy: Never\n"));
    apply(&u, "always", &workload("always", "sleep 600", ""));
    let runs = up.data.join("node/state/runs");
    for name in ["never", "always"] {
        let r = wait_phase(&u, name, "Running", 60);
        let run = runs.join(r["metadata"]["uid"].as_str().unwrap());
        let container = wait_for(10, "the container's pid", || {
            std::fs::read_to_string(run.join("container.pid")).map_err(|e| e.to_string())?;
            Ok(pid_in(&run, "container.pid"))
        });
        let shim = pid_in(&run, "shim.pid");
        assert!(alive(container));
        // The OOM killer's way: SIGKILL, no chance to clean up.
        let killed = std::process::Command::new("kill").args(["-KILL", &shim.to_string()]).status().unwrap();
        assert!(killed.success());
        let at = Instant::now();
        wait_for(10, "the unsupervised container stopped", || {
            if alive(container) { Err(format!("pid {container} still runs")) } else { Ok(()) }
        });
        println!("{name}: container stopped {:?} after its shim was killed", at.elapsed());
        if name == "never" {
            let r = wait_phase(&u, "never", "Failed", 20);
            let message = r["status"]["message"].as_str().unwrap_or_default();
            assert!(
                message.contains("its shim ended without a result") && message.contains("was stopped"),
                "{r}"
            );
        } else {
            wait_for(30, "always started again", || {
                let rs = replicas(&u, "always");
                match rs.as_slice() {
                    [r] if r["status"]["restarts"].as_u64() >= Some(1)
                        && r["status"]["phase"] == "Running" =>
                    {
                        Ok(())
                    }
                    _ => Err(summary(&rs)),
                }
            });
        }
    }
    // What the node runs, counted on the machine: one run, supervised, nothing left behind.
    let status = wait_for(20, "one supervised run and no orphan", || {
        let s =
            ui(&u, &["node", "status", "--node-dir", up.data.join("node").to_str().unwrap(), "-o", "json"])
                .ok()
                .json();
        let l = &s["local"];
        if l["supervised"] == 1 && l["unsupervised"] == 0 && l["processes"].as_u64() >= Some(1) {
            Ok(s)
        } else {
            Err(s.to_string())
        }
    });
    assert_eq!(status["name"], "shims");
}

/// `ui exec NAME OPTIONS -- COMMAND` as `u` (its kubeconfig before the `--`).
fn exec(u: &User, name: &str, options: &[&str], command: &[&str]) -> support::Run {
    let kubeconfig = u.path("kubeconfig");
    let mut all = vec!["exec", name, "--kubeconfig", kubeconfig.to_str().unwrap()];
    all.extend(options);
    all.push("--");
    all.extend(command);
    u.run(&all)
}

#[test]
fn ui_exec_runs_a_command_in_the_owner_s_container_and_nobody_else_s() {
    require_root();
    let u = User::new();
    let up = Up::start(&u, "execs");
    apply(&u, "box", &workload("box", "echo started; sleep 600", "  resources:\n    memory: 48Mi\n"));
    let r = wait_phase(&u, "box", "Running", 60);
    let name = r["metadata"]["name"].as_str().unwrap().to_owned();
    wait_for(10, "the container started", || {
        let run = up.data.join("node/state/runs").join(r["metadata"]["uid"].as_str().unwrap());
        if run.join("container.pid").exists() { Ok(()) } else { Err("not yet".to_owned()) }
    });
    // Inside its namespaces, its cgroup (its memory limit), its seccomp filter.
    let script = "id; echo uid_map $(cat /proc/self/uid_map); unshare -U true 2>/dev/null && echo userns-made || echo userns-refused; \
                  hostname; grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status; echo pid $$; exit 7";
    let out = exec(&u, &name, &[], &["/bin/sh", "-c", script]);
    assert_eq!(out.code, 7, "the command's exit code: {}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("uid=0(root)"), "{}", out.stdout);
    // Container root, in the container's own user namespace: not host root.
    let map = out.stdout.lines().find_map(|l| l.strip_prefix("uid_map ")).unwrap_or_default();
    let host: u64 = map.split_whitespace().nth(1).and_then(|h| h.parse().ok()).unwrap_or(0);
    assert!(host >= 1 << 20, "exec ran as host uid {host}: {}", out.stdout);
    assert!(out.stdout.contains("userns-refused"), "{}", out.stdout);
    assert!(out.stdout.contains(&name), "its hostname: {}", out.stdout);
    assert!(out.stdout.contains("CapEff:\t00000000a80405fb"), "{}", out.stdout);
    assert!(out.stdout.contains("NoNewPrivs:\t1") && out.stdout.contains("Seccomp:\t2"), "{}", out.stdout);
    // In its pid namespace (a small pid), and within its memory limit: killed past 48 MiB.
    let pid: u64 =
        out.stdout.lines().find_map(|l| l.strip_prefix("pid ")).and_then(|p| p.parse().ok()).unwrap();
    assert!(pid < 100, "pid {pid} is not the container's pid namespace's");
    let hog = exec(&u, &name, &[], &["/bin/sh", "-c", "x=aaaaaaaaaaaaaaaa; while true; do x=$x$x; done"]);
    assert_eq!(hog.code, 137, "killed by the container's memory limit: {}{}", hog.stdout, hog.stderr);
    let json = exec(&u, &name, &["-o", "json"], &["echo", "hi"]).ok().json();
    assert_eq!(json["exitCode"], 0);
    assert_eq!(json["stdout"], "hi\n");
    // A process it leaves in the background does not hold `ui exec` open.
    let started = Instant::now();
    let bg = exec(&u, &name, &[], &["/bin/sh", "-c", "sleep 100 & echo left-behind"]).ok();
    assert!(bg.stdout.contains("left-behind"), "{}", bg.stdout);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "ui exec waited for the background process: {:?}",
        started.elapsed()
    );
    // A stranger with a key of their own may not; the replica does not care how it is named.
    let stranger = up.another_user();
    let refused = exec(&stranger, &name, &[], &["true"]);
    assert_ne!(refused.code, 0, "{}", refused.stdout);
    assert!(refused.stderr.contains("only the owner of workload box may"), "{}", refused.stderr);
}

/// `GET /` of `host:port` from inside replica `name`, with busybox's `nc` (its `wget` crashes
/// in Debian's static build): the answer, or `UNREACHABLE`.
fn http_from(u: &User, name: &str, host: &str, port: u16) -> String {
    try_http_from(u, name, host, port).unwrap_or_else(|e| panic!("{e}"))
}

/// [`http_from`], or why `ui exec` failed (a replica reported Running before its shim has
/// started the container: the agent reports it once the shim runs).
fn try_http_from(u: &User, name: &str, host: &str, port: u16) -> Result<String, String> {
    let script = format!(
        "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {host} {port} > /tmp/answer 2>&1; \
         if grep -q '200 OK' /tmp/answer; then cat /tmp/answer; else echo UNREACHABLE; cat /tmp/answer; fi"
    );
    let run = exec(u, name, &[], &["/bin/sh", "-c", &script]);
    if run.code == 0 {
        Ok(run.stdout)
    } else {
        Err(format!("ui exec in {name}: {}{}", run.stdout, run.stderr))
    }
}

#[test]
fn replicas_reach_their_owner_s_replicas_by_name_and_nothing_of_strangers_or_the_node() {
    require_root();
    let u = User::new();
    let up = Up::start(&u, "nets");
    // Two replicas, each serving its own name on port 8080 of its own address.
    let serve = "mkdir -p /tmp/w && hostname > /tmp/w/index.html && exec httpd -f -p 8080 -h /tmp/w";
    let yaml =
        workload("peer", serve, "  ports:\n  - containerPort: 8080\n").replace("replicas: 1", "replicas: 2");
    apply(&u, "peer", &yaml);
    let running = |u: &User, w: &str, n: usize| {
        wait_for(60, &format!("{n} replicas of {w} running with an address"), || {
            let rs = replicas(u, w);
            let ok = rs.len() == n
                && rs.iter().all(|r| r["status"]["phase"] == "Running" && r["status"]["podIP"].is_string());
            if ok { Ok(rs) } else { Err(summary(&rs)) }
        })
    };
    let rs = running(&u, "peer", 2);
    let name = |r: &Value| r["metadata"]["name"].as_str().unwrap().to_owned();
    let ip = |r: &Value| r["status"]["podIP"].as_str().unwrap().parse::<std::net::Ipv4Addr>().unwrap();
    let (a, b) = (name(&rs[0]), name(&rs[1]));
    let (a_ip, b_ip) = (ip(&rs[0]), ip(&rs[1]));
    assert_eq!(a_ip.octets()[..3], b_ip.octets()[..3], "one owner's replicas share its /24: {a_ip} {b_ip}");
    wait_for(30, "both serving", || {
        let out = try_http_from(&u, &a, &b, 8080)?;
        if out.contains(&b) { Ok(()) } else { Err(out) }
    });
    // By replica name, by workload name, by WORKLOAD.NAMESPACE; its eth0 holds its podIP.
    assert!(http_from(&u, &a, &b, 8080).contains(&b));
    assert!(http_from(&u, &b, &a, 8080).contains(&a));
    let by_workload = http_from(&u, &a, "peer", 8080);
    assert!(by_workload.contains(&a) || by_workload.contains(&b), "{by_workload}");
    assert!(http_from(&u, &b, "peer.default", 8080).contains("200 OK"));
    // Each has its own range of host ids for its user namespace, claimed on the machine.
    let map_of = |n: &str| exec(&u, n, &[], &["cat", "/proc/self/uid_map"]).ok().stdout;
    let (map_a, map_b) = (map_of(&a), map_of(&b));
    assert_ne!(map_a.split_whitespace().nth(1), map_b.split_whitespace().nth(1), "{map_a} {map_b}");
    let addr = exec(&u, &a, &[], &["/bin/sh", "-c", "ip -4 addr show eth0"]).ok().stdout;
    assert!(addr.contains(&format!("inet {a_ip}/24")), "{addr}");
    // IPv4 only: no IPv6 address to reach the node or anyone else at.
    let v6 =
        exec(&u, &a, &[], &["/bin/sh", "-c", "ip -6 addr; cat /proc/sys/net/ipv6/conf/all/disable_ipv6"])
            .ok()
            .stdout;
    assert_eq!(v6.trim(), "1", "{v6}");
    let text = ui(&u, &["status"]).ok().stdout;
    assert!(text.contains(&a_ip.to_string()), "ui status shows the address: {text}");

    // A stranger's replica on the same node: another /24 and bridge, no names of ours, no
    // route to our replicas.
    let stranger = up.another_user();
    apply(&stranger, "spy", &workload("spy", "exec sleep 3600", ""));
    let spy = running(&stranger, "spy", 1).remove(0);
    let (spy_name, spy_ip) = (name(&spy), ip(&spy));
    assert_ne!(spy_ip.octets()[..3], a_ip.octets()[..3], "a stranger shares no /24 with us");
    // Running is reported once the shim runs, a moment before it has started the container.
    let hosts = wait_for(30, "the spy's container started", || {
        let run = exec(&stranger, &spy_name, &[], &["cat", "/etc/hosts"]);
        if run.code == 0 { Ok(run.stdout) } else { Err(run.stderr) }
    });
    assert!(hosts.contains(&spy_name) && !hosts.contains("peer"), "{hosts}");
    assert!(http_from(&stranger, &spy_name, &a_ip.to_string(), 8080).contains("UNREACHABLE"));
    // Nor do ours reach the stranger's, nor the node itself: a service of the node on all its
    // addresses, tried at the owner's gateway (the bridge's address).
    let node_service = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let node_port = node_service.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in node_service.incoming().flatten() {
            let _ = std::io::Write::write_all(&mut &s, b"HTTP/1.0 200 OK\r\n\r\nnode secrets\n");
        }
    });
    let gateway_of = |ip: std::net::Ipv4Addr| {
        let [x, y, z, _] = ip.octets();
        std::net::Ipv4Addr::new(x, y, z, 1).to_string()
    };
    let gateway = gateway_of(a_ip);
    let from_host = std::process::Command::new("sh")
        .args(["-c", &format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 3 {gateway} {node_port}")])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&from_host.stdout).contains("node secrets"),
        "the service answers on the node"
    );
    let tried = http_from(&u, &a, &gateway, node_port);
    assert!(tried.contains("UNREACHABLE") && !tried.contains("secrets"), "{tried}");
    assert!(http_from(&stranger, &spy_name, &gateway_of(spy_ip), node_port).contains("UNREACHABLE"));
    assert!(http_from(&u, &a, &spy_ip.to_string(), 8080).contains("UNREACHABLE"));
    drop(up);
}

#[test]
fn an_owner_s_replicas_on_two_nodes_reach_each_other_through_the_tunnel_and_strangers_do_not() {
    require_root();
    let u = User::new();
    let up = Up::start(&u, "tun-a");
    let mut other = Agent::new(&u, "tun-b");
    // Two replicas, too big to share a node: one on each.
    let serve = "mkdir -p /tmp/w && hostname > /tmp/w/index.html && exec httpd -f -p 8080 -h /tmp/w";
    let extra = "  ports:\n  - containerPort: 8080\n  resources:\n    cpu: 1200m\n    memory: 32Mi\n";
    apply(&u, "peer", &workload("peer", serve, extra).replace("replicas: 1", "replicas: 2"));
    let rs = wait_for(90, "2 replicas of peer running with an address, on two nodes", || {
        let rs = replicas(&u, "peer");
        let ok = rs.len() == 2
            && rs.iter().all(|r| r["status"]["phase"] == "Running" && r["status"]["podIP"].is_string())
            && node_of(&rs[0]) != node_of(&rs[1]);
        if ok { Ok(rs) } else { Err(summary(&rs)) }
    });
    let name = |r: &Value| r["metadata"]["name"].as_str().unwrap().to_owned();
    let ip = |r: &Value| r["status"]["podIP"].as_str().unwrap().parse::<std::net::Ipv4Addr>().unwrap();
    // `a` on tun-a (the node whose agent stays), `b` on tun-b (whose agent is killed below),
    // whichever node each was placed on.
    let mut rs = rs;
    if node_of(&rs[0]) != "tun-a" {
        rs.swap(0, 1);
    }
    let (a, b) = (name(&rs[0]), name(&rs[1]));
    let (a_ip, b_ip) = (ip(&rs[0]), ip(&rs[1]));
    // Each node's replicas have addresses in a network of its own, which its Node advertises
    // with its tunnel key and address.
    assert_ne!(a_ip.octets()[..2], b_ip.octets()[..2], "two nodes, two networks: {a_ip} {b_ip}");
    for n in ["tun-a", "tun-b"] {
        let node = ui(&u, &["get", "node", n, "-o", "json"]).ok().json();
        assert!(node["spec"]["tunnelKey"].as_str().is_some_and(|k| k.len() == 44), "{node}");
        let addrs = node["spec"]["addresses"].to_string();
        assert!(addrs.contains("/udp/") && addrs.contains("/wireguard"), "{addrs}");
        let pool = node["status"]["replicaNetwork"].as_str().unwrap_or_default().to_owned();
        let mine = if node_of(&rs[0]) == n { a_ip } else { b_ip };
        assert!(pool.starts_with(&format!("{}.{}.", mine.octets()[0], mine.octets()[1])), "{pool} {mine}");
    }
    // Across the nodes, by address and by name, both ways.
    let crossed = wait_for(60, "a reaches b across nodes", || {
        let out = http_from(&u, &a, &b_ip.to_string(), 8080);
        if out.contains(&b) { Ok(out) } else { Err(out) }
    });
    println!("{a} on {} reached {b} on {}: {crossed}", node_of(&rs[0]), node_of(&rs[1]));
    assert!(http_from(&u, &b, &a_ip.to_string(), 8080).contains(&a));
    let by_name = wait_for(30, "b named in a's hosts", || {
        let out = http_from(&u, &a, &b, 8080);
        if out.contains(&b) { Ok(out) } else { Err(out) }
    });
    assert!(by_name.contains("200 OK"));
    let hosts = exec(&u, &a, &[], &["cat", "/etc/hosts"]).ok().stdout;
    assert!(hosts.contains(&format!("{b_ip}\t{b} peer peer.default")), "{hosts}");

    // A stranger's replica, wherever it lands, reaches neither of ours, nor do names of ours
    // show in its hosts; its own node's tunnel refuses what it sends our way.
    let stranger = up.another_user();
    apply(
        &stranger,
        "spy",
        &workload("spy", "exec sleep 3600", "  resources:\n    cpu: 100m\n    memory: 16Mi\n"),
    );
    let spy = wait_for(60, "the spy running", || {
        let rs = replicas(&stranger, "spy");
        if rs.len() == 1 && rs[0]["status"]["podIP"].is_string() {
            Ok(rs[0].clone())
        } else {
            Err(summary(&rs))
        }
    });
    let spy_name = name(&spy);
    // Its address is reported once the shim runs, a moment before it has started the container.
    wait_for(30, "the spy's container started", || {
        let run = exec(&stranger, &spy_name, &[], &["true"]);
        if run.code == 0 { Ok(()) } else { Err(run.stderr) }
    });
    for target in [a_ip, b_ip] {
        let tried = http_from(&stranger, &spy_name, &target.to_string(), 8080);
        assert!(tried.contains("UNREACHABLE"), "the stranger reached {target}: {tried}");
    }
    let spy_hosts = exec(&stranger, &spy_name, &[], &["cat", "/etc/hosts"]).ok().stdout;
    assert!(!spy_hosts.contains("peer"), "{spy_hosts}");

    // The path is the agents' tunnel, not the machine's routing: with node b's agent gone (its
    // replicas run on), a no longer reaches b; once it is back, it does again.
    other.kill_9();
    let cut = http_from(&u, &a, &b_ip.to_string(), 8080);
    assert!(cut.contains("UNREACHABLE"), "reached b without its agent: {cut}");
    other.start(&u);
    wait_for(60, "a reaches b again once b's agent is back", || {
        let out = http_from(&u, &a, &b_ip.to_string(), 8080);
        if out.contains(&b) { Ok(()) } else { Err(out) }
    });
    drop(other);
    drop(up);
}

/// A command that follows (`-w`), its output gathered as it comes; killed when dropped.
struct Follower {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    seen: String,
}

impl Follower {
    fn start(mut child: Child) -> Self {
        let (tx, lines) = std::sync::mpsc::channel::<String>();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Self { child, lines, seen: String::new() }
    }

    /// Everything it printed so far.
    fn read(&mut self) -> String {
        self.seen.extend(self.lines.try_iter().map(|l| format!("{l}\n")));
        self.seen.clone()
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `kubectl` as `u`, with its own cache.
fn kubectl(u: &User) -> support::Kubectl {
    support::Kubectl { kubeconfig: u.path("kubeconfig"), cache: u.path("kube-cache") }
}

#[test]
fn events_of_placement_start_and_failed_scheduling_show_in_kubectl_events_and_describe() {
    require_root();
    let u = User::new();
    let up = Up::start(&u, "evt");
    apply(&u, "web", &workload("web", "echo started; sleep 600", ""));
    let r = wait_phase(&u, "web", "Running", 60);
    let name = r["metadata"]["name"].as_str().unwrap().to_owned();
    let k = kubectl(&u);

    // `kubectl events --for`: the scheduler's placement and the agent's start, about the replica.
    let shown = wait_for(30, "kubectl events shows Scheduled and Started", || {
        let out = k.run(&["events", "--for", &format!("replica/{name}")]);
        if out.ok && out.stdout.contains("Scheduled") && out.stdout.contains("Started") {
            Ok(out.stdout)
        } else {
            Err(format!("{}{}", out.stdout, out.stderr))
        }
    });
    println!("kubectl events --for replica/{name}:\n{shown}");
    let line =
        |out: &str, reason: &str| out.lines().find(|l| l.contains(reason)).unwrap_or_default().to_owned();
    let scheduled = line(&shown, "Scheduled");
    assert!(scheduled.contains("Normal") && scheduled.contains(&format!("Replica/{name}")), "{shown}");
    assert!(scheduled.contains(&format!("Successfully assigned default/{name} to evt")), "{shown}");
    assert!(line(&shown, "Started").contains("Started container on node evt"), "{shown}");
    // The whole namespace's, and the workload controller's note on the workload.
    let all = k.ok(&["events"]);
    assert!(all.contains("SuccessfulCreate") && all.contains("Workload/web"), "{all}");

    // `kubectl describe` of the replica ends with its Events.
    let described = k.ok(&["describe", "replica", &name]);
    println!("kubectl describe replica {name}:\n{described}");
    let events =
        described.split("Events:").nth(1).unwrap_or_else(|| panic!("no Events section:\n{described}"));
    assert!(events.contains("Scheduled") && events.contains("univrs.io/scheduler"), "{described}");
    assert!(events.contains("Started") && events.contains("univrs.io/node-agent"), "{described}");

    // The same in `ui events` and `ui describe`, and as JSON (the stored events.k8s.io form).
    let ui_events = ui(&u, &["events", "--for", &format!("replica/{name}")]).ok().stdout;
    assert!(ui_events.contains("Scheduled") && ui_events.contains("Started"), "{ui_events}");
    // `ui get events` (short name `ev`): the server's Table, as any kind.
    let got = ui(&u, &["get", "ev"]).ok().stdout;
    assert!(got.lines().any(|l| l.contains("Started") && l.contains(&format!("replica/{name}"))), "{got}");
    let ui_described = ui(&u, &["describe", "replica", &name]).ok().stdout;
    println!("ui events:\n{ui_events}\nui describe:\n{ui_described}");
    let section = ui_described.split("Events:").nth(1).unwrap_or_default();
    assert!(section.contains("Scheduled") && section.contains("Started"), "{ui_described}");
    let json = ui(&u, &["events", "--for", &format!("replica/{name}"), "-o", "json"]).ok().json();
    let started =
        json["items"].as_array().unwrap().iter().find(|e| e["reason"] == "Started").cloned().unwrap();
    assert_eq!(started["apiVersion"], "events.k8s.io/v1");
    assert_eq!(started["regarding"]["uid"], r["metadata"]["uid"]);
    assert_eq!(started["reportingInstance"], "evt");

    // `kubectl events -w` follows the core form's watch: what happens next shows as it comes.
    let kubectl_w = std::process::Command::new("kubectl")
        .args(["events", "-w", "--cache-dir", k.cache.to_str().unwrap()])
        .env("KUBECONFIG", &k.kubeconfig)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl is installed");
    let kubeconfig = u.path("kubeconfig");
    // `ui events -w` too: the list, then what comes after it (nothing twice).
    let ui_w = u
        .cmd(&["events", "-w", "--kubeconfig", kubeconfig.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut followers: Vec<_> = [kubectl_w, ui_w].into_iter().map(Follower::start).collect();

    // A workload no node can hold: FailedScheduling with its reason, counted in one series.
    apply(&u, "huge", &workload("huge", "sleep 1", "  resources:\n    cpu: \"512\"\n"));
    for (f, who) in followers.iter_mut().zip(["kubectl events -w", "ui events -w"]) {
        let lines = wait_for(60, &format!("{who} prints the new FailedScheduling"), || {
            let lines = f.read();
            match lines.lines().find(|l| l.to_lowercase().contains("replica/huge-")) {
                Some(l) if l.contains("FailedScheduling") && l.contains("insufficient cpu") => Ok(lines),
                _ => Err(lines),
            }
        });
        let started = lines.lines().filter(|l| l.contains("Started container on node evt")).count();
        assert!(started <= 1, "{who} printed the start {started} times:\n{lines}");
    }
    drop(followers);
    let failed = wait_for(60, "FailedScheduling counted twice", || {
        let list: Value = serde_json::from_str(&k.ok(&["get", "events", "-o", "json"])).unwrap();
        let found: Vec<Value> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| {
                e["reason"] == "FailedScheduling"
                    && e["involvedObject"]["name"].as_str().is_some_and(|n| n.starts_with("huge-"))
            })
            .cloned()
            .collect();
        match found.as_slice() {
            [e] if e["count"].as_i64() >= Some(2) => Ok(e.clone()),
            _ => Err(format!("{found:?}")),
        }
    });
    assert_eq!(failed["type"], "Warning");
    assert!(failed["message"].as_str().unwrap().contains("insufficient cpu"), "{failed}");
    // `kubectl get events`: the server's Table of the core form.
    let table = k.ok(&["get", "events"]);
    assert!(table.lines().next().unwrap_or_default().contains("REASON"), "{table}");
    assert!(line(&table, "replica/huge-").contains("FailedScheduling"), "{table}");
    let warnings = k.ok(&["events", "--types=Warning"]);
    println!("kubectl events --types=Warning:\n{warnings}");
    // (The web replica may have one too, from before its node was Ready.)
    let row = line(&warnings, "Replica/huge-");
    assert!(
        row.contains("FailedScheduling") && row.contains("insufficient cpu") && row.contains("(x"),
        "{warnings}"
    );

    // A stranger cannot write an Event about the replica, nor read any of the owner's.
    let other = up.another_user();
    let ko = kubectl(&other);
    let forged = other.path("forged.yaml");
    std::fs::write(
        &forged,
        format!(
            "apiVersion: events.k8s.io/v1\nkind: Event\nmetadata:\n  name: forged\n  namespace: default\neventTime: \"2026-01-02T03:04:05.000000Z\"\nreportingController: univrs.io/node-agent\nreportingInstance: evt\naction: Kill\nreason: Killing\ntype: Warning\nnote: forged\nregarding:\n  apiVersion: univrs.io/v1\n  kind: Replica\n  namespace: default\n  name: {name}\n  uid: {}\n",
            r["metadata"]["uid"].as_str().unwrap()
        ),
    )
    .unwrap();
    ko.fails(
        &["create", "--validate=false", "-f", forged.to_str().unwrap()],
        "cannot create events \"forged\"",
    );
    let theirs = ko.ok(&["events", "-A"]);
    assert!(
        !theirs.contains(&name) && !theirs.contains("huge-"),
        "a stranger sees another's events:\n{theirs}"
    );
    let listed: Value = serde_json::from_str(&ko.ok(&["get", "events", "-A", "-o", "json"])).unwrap();
    assert_eq!(listed["items"], serde_json::json!([]), "{listed}");
    let event_name = started["metadata"]["name"].as_str().unwrap();
    ko.fails(&["get", "event", event_name], "not found");
    ko.fails(&["get", "events.events.k8s.io", event_name], "not found");
    drop(up);
}
