//! Running univrs from Git: `ui apply --wait` against a real `ui up` (its local node running
//! replicas as plain processes): it returns 0 once what was applied is current, 1 with the
//! scheduler's reason for a workload that cannot be placed or whose run failed, 2 when the time
//! is up (a replica that keeps exiting); `-o json` gives one line per object.

mod support;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use serde_json::Value;
use support::User;

/// `ui up` with a local node (jurisdiction DE) running replicas as plain processes.
struct Up {
    child: Child,
    data: PathBuf,
    kubeconfig: PathBuf,
    config: PathBuf,
}

impl Up {
    fn start(u: &User) -> Self {
        u.init_plain();
        let data = u.path("data");
        let kubeconfig = u.path("kubeconfig");
        let mut child = u
            .cmd(&[
                "up",
                "--data-dir",
                data.to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
                "--kubeconfig",
                kubeconfig.to_str().unwrap(),
                "--node-name",
                "local",
                "--runtime",
                "process",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines().map_while(Result::ok);
        lines.find(|l| l.starts_with("local node ")).expect("ui up says how its local node runs");
        std::thread::spawn(move || for _ in lines {});
        Self { child, data, kubeconfig, config: u.config() }
    }

    fn ui(&self, u: &User, args: &[&str]) -> support::Run {
        let mut all = args.to_vec();
        all.extend(["--kubeconfig", self.kubeconfig.to_str().unwrap()]);
        u.run(&all)
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = Command::new(env!("CARGO_BIN_EXE_ui"))
            .args(["down", "--data-dir", self.data.to_str().unwrap(), "--timeout", "60"])
            .env("UNIVRS_CONFIG_DIR", &self.config)
            .stdout(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write(u: &User, name: &str, yaml: &str) -> String {
    let path = u.path(name);
    std::fs::write(&path, yaml).unwrap();
    path.to_str().unwrap().to_owned()
}

fn workload(name: &str, replicas: u32, policy: &str, command: &str, extra: &str) -> String {
    format!(
        "apiVersion: univrs.io/v1\nkind: Workload\nmetadata:\n  name: {name}\nspec:\n  replicas: {replicas}\n  \
         rootfs: busybox\n  command: {command}\n  trustPolicy: {policy}\n{extra}"
    )
}

const POLICIES: &str = "apiVersion: univrs.io/v1\nkind: TrustPolicy\nmetadata:\n  name: germany\nspec:\n  \
     allowedJurisdictions: [DE]\n---\napiVersion: univrs.io/v1\nkind: TrustPolicy\nmetadata:\n  name: france\n\
     spec:\n  allowedJurisdictions: [FR]\n";

#[test]
fn apply_wait_returns_once_current_fails_with_the_reason_and_times_out_with_exit_codes_ci_can_use() {
    let u = User::new();
    let up = Up::start(&u);

    // Healthy: the policies and a workload of two replicas, all current: exit 0.
    let healthy = write(
        &u,
        "healthy.yaml",
        &format!("{POLICIES}---\n{}", workload("web", 2, "germany", "[\"sleep\", \"600\"]", "")),
    );
    let run = up.ui(&u, &["apply", "-f", &healthy, "--wait", "--timeout", "120s"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    for line in ["workload/web (default): current", "trustpolicy/germany (default): current"] {
        assert!(run.stdout.contains(line), "no {line:?} in:\n{}", run.stdout);
    }
    let replicas = up.ui(&u, &["get", "replicas", "-o", "json"]).ok().json();
    let running = replicas["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["spec"]["workload"] == "web" && r["status"]["phase"] == "Running")
        .count();
    assert_eq!(running, 2, "--wait returned before the replicas ran: {replicas}");

    // Cannot be placed (its policy admits no node): exit 1, the scheduler's reason, as JSON lines.
    let stuck = write(&u, "stuck.yaml", &workload("paris", 1, "france", "[\"sleep\", \"600\"]", ""));
    let run = up.ui(&u, &["apply", "-f", &stuck, "--wait", "--timeout", "120s", "-o", "json"]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    let lines: Vec<Value> = run.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 1, "one line per object: {}", run.stdout);
    let l = &lines[0];
    assert_eq!(
        (l["kind"].as_str(), l["name"].as_str(), l["status"].as_str()),
        (Some("Workload"), Some("paris"), Some("Failed")),
        "{l}"
    );
    assert_eq!(l["result"], "created", "{l}");
    let message = l["message"].as_str().unwrap();
    assert!(
        message.contains("cannot be placed") && message.contains("jurisdiction not allowed"),
        "{message}"
    );

    // Its one run fails and is not restarted: exit 1, saying how it ended.
    let failing = write(
        &u,
        "failing.yaml",
        &workload("broken", 1, "germany", "[\"/bin/sh\", \"-c\", \"exit 3\"]", "  restartPolicy: Never\n"),
    );
    let run = up.ui(&u, &["apply", "-f", &failing, "--wait", "--timeout", "120s"]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("workload/broken (default): failed (replica broken-"), "{}", run.stdout);
    assert!(run.stdout.contains("exited with code 3"), "{}", run.stdout);

    // It keeps exiting and being restarted: never current, exit 2 when the time is up.
    let looping = write(
        &u,
        "looping.yaml",
        &workload("looping", 1, "germany", "[\"/bin/sh\", \"-c\", \"exit 3\"]", ""),
    );
    let run = up.ui(&u, &["apply", "-f", &looping, "--wait", "--timeout", "10s"]);
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("workload/looping (default): timeout (not current after 10s"),
        "{}",
        run.stdout
    );

    // Bad use is refused before anything is applied.
    u.run(&["apply", "-f", &healthy, "--wait", "--dry-run", "server"]).fails_with(&["--wait", "--dry-run"]);
    u.run(&["apply", "-f", &healthy, "--wait", "--timeout", "soon"]).fails_with(&["soon", "duration"]);
    drop(up);
}
