//! Liveness and readiness probes: when each passes or fails (a pure tracker of thresholds, as
//! the kubelet's), and one check of a probe against a running replica.

use std::path::PathBuf;
use std::time::Duration;

use api::kinds::{Probe, ProbeAction};

/// Whether a probe passes, from its results so far and its thresholds.
#[derive(Clone, Debug)]
pub struct Tracker {
    success_threshold: u32,
    failure_threshold: u32,
    successes: u32,
    failures: u32,
    passing: bool,
}

impl Tracker {
    /// A readiness probe starts failing (a replica is not ready until it passes); a liveness
    /// probe starts passing (a replica is alive until it fails).
    pub fn new(probe: &Probe, passing: bool) -> Self {
        Self {
            success_threshold: probe.success_threshold(),
            failure_threshold: probe.failure_threshold(),
            successes: 0,
            failures: 0,
            passing,
        }
    }

    /// Whether the probe passes now.
    pub fn passing(&self) -> bool {
        self.passing
    }

    /// Counts one result; returns the new state when it changed.
    pub fn observe(&mut self, ok: bool) -> Option<bool> {
        if ok {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            if !self.passing && self.successes >= self.success_threshold {
                self.passing = true;
                return Some(true);
            }
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            if self.passing && self.failures >= self.failure_threshold {
                self.passing = false;
                return Some(false);
            }
        }
        None
    }
}

/// Where a probe reaches the replica.
#[derive(Clone, Debug)]
pub enum Target {
    /// A container: its init's host pid (for its network namespace) and the command that runs
    /// a program in it (`ui node exec DIR --timeout S --`).
    Container { pid: i32, exec: Vec<String> },
    /// A plain process on the host: the host's loopback, programs run on the host.
    Host,
}

/// Runs one probe: `Ok` when it passed, else why not.
pub async fn check(action: &ProbeAction, target: &Target, timeout: Duration) -> Result<(), String> {
    match action {
        ProbeAction::Exec(argv) => exec(argv, target, timeout).await,
        ProbeAction::TcpSocket(port) => {
            let port = *port;
            on_network(target, timeout, move || crate::netns::tcp_check(port, timeout)).await
        }
        ProbeAction::HttpGet { path, port } => {
            let (path, port) = (path.clone(), *port);
            on_network(target, timeout, move || crate::netns::http_check(port, &path, timeout)).await
        }
    }
}

async fn on_network(
    target: &Target,
    timeout: Duration,
    f: impl FnOnce() -> Result<(), String> + Send + 'static,
) -> Result<(), String> {
    let pid = match target {
        Target::Container { pid, .. } => Some(*pid),
        Target::Host => None,
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let result = match pid {
            Some(pid) => crate::netns::in_netns_of(pid, move || Ok(f()))
                .unwrap_or_else(|e| Err(format!("cannot enter the replica's network: {e}"))),
            None => f(),
        };
        let _ = tx.send(result);
    });
    // The check bounds itself by `timeout`; the margin is for entering the namespace.
    match tokio::time::timeout(timeout + Duration::from_secs(1), rx).await {
        Ok(Ok(result)) => result,
        _ => Err(format!("timed out after {} s", timeout.as_secs())),
    }
}

async fn exec(argv: &[String], target: &Target, timeout: Duration) -> Result<(), String> {
    let mut cmd = match target {
        Target::Container { exec, .. } => {
            let (program, args) = exec.split_first().ok_or("no exec command")?;
            let mut c = tokio::process::Command::new(program);
            c.args(args).arg(timeout.as_secs().max(1).to_string()).arg("--").args(argv);
            c
        }
        Target::Host => {
            let (program, args) = argv.split_first().ok_or("no command")?;
            let mut c = tokio::process::Command::new(program);
            c.args(args);
            c
        }
    };
    // Its output is not kept: it would go into the replica's status, which everyone reads
    // (the replica's own output is for its owner), and it is unbounded.
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    // Not behind the node's bound on `ui exec`: a probe runs one at a time per probe, in its
    // replica's own cgroup (its pids and memory count against the replica's limits), so one
    // owner's probes never starve another's.
    let status = match tokio::time::timeout(timeout + Duration::from_secs(2), cmd.status()).await {
        Ok(Ok(status)) => status,
        Ok(Err(e)) => return Err(format!("cannot run the probe: {e}")),
        Err(_) => return Err(format!("timed out after {} s", timeout.as_secs())),
    };
    match status.code() {
        Some(0) => Ok(()),
        Some(124) => Err(format!("timed out after {} s", timeout.as_secs())),
        Some(code) => Err(format!("exited with code {code}")),
        None => Err("ended by a signal".to_owned()),
    }
}

/// The command prefix that runs a program in the container of the run in `dir`.
pub fn exec_prefix(ui: &[String], dir: &std::path::Path) -> Vec<String> {
    let mut v = ui.to_vec();
    v.push(PathBuf::from(dir).display().to_string());
    v.push("--timeout".into());
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::kinds::TcpSocketAction;

    fn probe(success: u32, failure: u32) -> Probe {
        Probe {
            tcp_socket: Some(TcpSocketAction { port: 80 }),
            success_threshold: Some(success),
            failure_threshold: Some(failure),
            ..Probe::default()
        }
    }

    #[test]
    fn thresholds_count_results_in_a_row() {
        // Readiness: not ready until it passes; ready until 3 failures in a row.
        let mut t = Tracker::new(&probe(1, 3), false);
        assert_eq!(t.observe(false), None);
        assert_eq!(t.observe(true), Some(true));
        assert_eq!(t.observe(false), None);
        assert_eq!(t.observe(false), None);
        assert_eq!(t.observe(true), None); // the run of failures is broken
        assert_eq!(t.observe(false), None);
        assert_eq!(t.observe(false), None);
        assert_eq!(t.observe(false), Some(false));
        assert!(!t.passing());
        // Two successes in a row to pass again.
        let mut t = Tracker::new(&probe(2, 1), false);
        assert_eq!(t.observe(true), None);
        assert_eq!(t.observe(false), None);
        assert_eq!(t.observe(true), None);
        assert_eq!(t.observe(true), Some(true));
    }

    #[tokio::test]
    async fn a_host_probe_fails_with_what_the_command_said() {
        let e = check(
            &ProbeAction::Exec(vec!["sh".into(), "-c".into(), "echo not yet; exit 3".into()]),
            &Target::Host,
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
        assert_eq!(e, "exited with code 3");
        let ok = check(&ProbeAction::Exec(vec!["true".into()]), &Target::Host, Duration::from_secs(5)).await;
        assert_eq!(ok, Ok(()));
    }
}
