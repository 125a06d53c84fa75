//! What a member's process sets for itself, read from outside (`/proc/PID/status`).

mod support;

use support::{Server, Up, User};

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
    assert_eq!(thp_enabled(up.pid()), "1", "ui up keeps the flag its parent gave it");
}
