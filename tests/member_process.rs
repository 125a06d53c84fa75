//! What a member's process sets for itself, read from outside (`/proc/PID/status`).

mod support;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

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

/// `ui up` on `data`, stopped (`ui down`, then killed) when dropped, a failed assertion too.
struct Up {
    child: Child,
    data: PathBuf,
    config: PathBuf,
}

impl Up {
    fn start(u: &User) -> Self {
        let data = u.path("up");
        let kubeconfig = u.path("up-kubeconfig");
        let child = u
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
        let mut up = Self { child, data, config: u.config() };
        let mut lines = BufReader::new(up.child.stdout.take().unwrap()).lines().map_while(Result::ok);
        lines.find(|l| l.starts_with("local node ")).expect("ui up says how its local node runs");
        std::thread::spawn(move || for _ in lines {});
        up
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = Command::new(support::ui_binary())
            .args(["down", "--data-dir", self.data.to_str().unwrap(), "--timeout", "60"])
            .env("UNIVRS_CONFIG_DIR", &self.config)
            .stdout(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A member runs without transparent huge pages (BENCHMARKS.md, change 28); `ui up` leaves
/// them as its parent had them, since the workloads its local node starts inherit the flag.
#[test]
fn a_member_runs_without_transparent_huge_pages_and_ui_up_leaves_them_to_its_workloads() {
    // With them on here, whatever the runner set: children inherit the flag, so a member
    // that did nothing, or a `ui up` that turned them off, would show.
    nix::sys::prctl::set_thp_disable(false).unwrap();
    assert_eq!(thp_enabled(std::process::id()), "1", "this kernel has no transparent huge pages to turn off");
    let u = User::new();
    u.init_plain();
    let server = Server::start(&u, &u.path("member"));
    assert_eq!(thp_enabled(server.pid()), "0", "a member turns transparent huge pages off");
    server.stop();

    let up = Up::start(&u);
    assert_eq!(thp_enabled(up.child.id()), "1", "ui up keeps the flag its parent gave it");
}
