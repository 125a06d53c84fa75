//! What a member's process sets for itself, read from outside (`/proc/PID/status`).

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use support::{Server, User};

/// The `THP_enabled` flag of process `pid`: 0 once it turned transparent huge pages off
/// (`prctl(PR_SET_THP_DISABLE)`), 1 otherwise.
fn thp_enabled(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("THP_enabled:"))
        .map(|v| v.trim().to_owned())
        .unwrap_or_else(|| panic!("no THP_enabled in /proc/{pid}/status:\n{status}"))
}

/// A member runs without transparent huge pages (BENCHMARKS.md, change 28); `ui up` leaves
/// them as its parent had them, since the workloads its local node starts inherit the flag.
#[test]
fn a_member_runs_without_transparent_huge_pages_and_ui_up_leaves_them_to_its_workloads() {
    let u = User::new();
    let server = Server::start(&u, &u.path("member"));
    assert_eq!(thp_enabled(server.pid()), "0", "a member turns transparent huge pages off");
    server.stop();

    let data = u.path("up");
    let kubeconfig = u.path("up-kubeconfig");
    let mut up = u
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
    let mut lines = BufReader::new(up.stdout.take().unwrap()).lines().map_while(Result::ok);
    lines.find(|l| l.starts_with("local node ")).expect("ui up says how its local node runs");
    std::thread::spawn(move || for _ in lines {});
    let found = thp_enabled(up.id());
    let _ = Command::new(support::ui_binary())
        .args(["down", "--data-dir", data.to_str().unwrap(), "--timeout", "60"])
        .env("UNIVRS_CONFIG_DIR", u.config())
        .stdout(Stdio::null())
        .status();
    let _ = up.kill();
    let _ = up.wait();
    assert_eq!(found, thp_enabled(std::process::id()), "ui up keeps the flag its parent gave it");
}
