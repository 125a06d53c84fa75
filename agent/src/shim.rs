//! The shim: one short, single-threaded process per run of a replica (`ui node shim DIR`), like
//! containerd's shims. It creates the container with libcontainer, waits for it, measures its
//! cgroup, removes the container and writes `result.json`.
//!
//! Why a separate process: libcontainer forks with a raw `clone3`, which is only safe from a
//! single-threaded process (the agent runs a multi-threaded tokio runtime); the container's
//! init is the shim's child, so the shim can `waitpid` it (tokio's process API in the agent
//! never sees it); and a shim outlives an agent restart, so a restarted agent finds its
//! replicas still running instead of orphans. The agent stops a run with SIGTERM to the shim,
//! which passes it on and escalates to SIGKILL after the grace period.

use std::fs::{File, OpenOptions};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use libcontainer::container::Container;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use libcontainer::workload::default::DefaultExecutor;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::cgroup;
use crate::run::{LOG_FILE, RESULT_FILE, RunResult, RunSpec, RuntimeKind, SPEC_FILE, read_json, write_json};

/// The shim's own pid, for an agent that restarted and adopts the run.
pub const PID_FILE: &str = "shim.pid";

/// How long a replica has between SIGTERM and SIGKILL.
const GRACE: Duration = Duration::from_secs(5);

/// How often the shim looks at its child and at its signals.
const POLL: Duration = Duration::from_millis(20);

/// Runs the replica described in `dir/run.json` to its end and writes `dir/result.json`.
pub fn main(dir: &Path) -> anyhow::Result<()> {
    let spec: RunSpec = read_json(dir, SPEC_FILE)
        .with_context(|| format!("cannot read {}", dir.join(SPEC_FILE).display()))?;
    write_json(dir, PID_FILE, &std::process::id())?;
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(LOG_FILE))
        .with_context(|| format!("cannot open {}", dir.join(LOG_FILE).display()))?;
    let result = match spec.runtime {
        RuntimeKind::Container => run_container(dir, &spec, &log),
        RuntimeKind::Process => run_process(&spec, &log),
    };
    let result = result.unwrap_or_else(|e| RunResult {
        finished_at: Some(Utc::now()),
        error: Some(format!("{e:#}")),
        ..RunResult::default()
    });
    write_json(dir, RESULT_FILE, &result)?;
    Ok(())
}

/// What `wait` needs of a running thing.
trait Running {
    /// Its exit, if it has ended.
    fn poll(&mut self) -> anyhow::Result<Option<(Option<i32>, Option<i32>)>>;
    /// Sends `sig` to all of it.
    fn signal(&mut self, sig: Signal);
}

/// Waits for `run` to end, passing SIGTERM/SIGINT on (then SIGKILL after the grace period).
fn wait(run: &mut dyn Running) -> anyhow::Result<(Option<i32>, Option<i32>)> {
    // Blocked only now, after the child was made: a child would inherit the mask.
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGTERM);
    mask.add(Signal::SIGINT);
    mask.thread_block().context("cannot block SIGTERM")?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK).context("signalfd")?;
    let mut kill_at: Option<Instant> = None;
    loop {
        if let Some(exit) = run.poll()? {
            return Ok(exit);
        }
        if let Ok(Some(_)) = signals.read_signal()
            && kill_at.is_none()
        {
            run.signal(Signal::SIGTERM);
            kill_at = Some(Instant::now() + GRACE);
        }
        if kill_at.is_some_and(|t| Instant::now() >= t) {
            run.signal(Signal::SIGKILL);
            kill_at = Some(Instant::now() + GRACE);
        }
        std::thread::sleep(POLL);
    }
}

fn exit_of(status: WaitStatus) -> Option<(Option<i32>, Option<i32>)> {
    match status {
        WaitStatus::Exited(_, code) => Some((Some(code), None)),
        WaitStatus::Signaled(_, sig, _) => Some((Some(128 + sig as i32), Some(sig as i32))),
        _ => None,
    }
}

struct InContainer {
    container: Container,
    pid: Pid,
}

impl Running for InContainer {
    fn poll(&mut self) -> anyhow::Result<Option<(Option<i32>, Option<i32>)>> {
        match waitpid(self.pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(status) => Ok(exit_of(status)),
            Err(nix::errno::Errno::ECHILD) => Ok(Some((None, None))),
            Err(e) => Err(e).context("waitpid"),
        }
    }

    fn signal(&mut self, sig: Signal) {
        if let Err(e) = self.container.kill(sig, true) {
            tracing::warn!(error = %e, "cannot signal the container");
        }
    }
}

fn run_container(dir: &Path, spec: &RunSpec, log: &File) -> anyhow::Result<RunResult> {
    let bundle = dir.join("bundle");
    std::fs::create_dir_all(&bundle)?;
    write_json(&bundle, "config.json", &crate::oci::config(spec))?;
    std::fs::create_dir_all(&spec.state_root)?;
    // A container of the same id left by a run that did not finish cleanly.
    let stale = spec.state_root.join(&spec.id);
    if stale.exists() {
        match Container::load(stale.clone()) {
            Ok(mut c) => {
                let _ = c.delete(true);
            }
            Err(_) => {
                let _ = std::fs::remove_dir_all(&stale);
            }
        }
    }
    let mut container = ContainerBuilder::new(spec.id.clone(), SyscallType::default())
        .with_root_path(&spec.state_root)
        .context("container state directory")?
        .with_executor(DefaultExecutor {})
        .with_stdin(File::open("/dev/null")?)
        .with_stdout(log.try_clone()?)
        .with_stderr(log.try_clone()?)
        .validate_id()
        .context("container id")?
        .as_init(&bundle)
        .with_systemd(false)
        .with_detach(true)
        .build()
        .context("cannot create the container")?;
    let started_at = Utc::now();
    let started = container.start().context("cannot start the container");
    let pid = container.pid();
    let exit = match (started, pid) {
        (Ok(()), Some(pid)) => wait(&mut InContainer { container: container.clone(), pid }),
        (Ok(()), None) => Err(anyhow::anyhow!("the container has no pid")),
        (Err(e), _) => Err(e),
    };
    let usage = cgroup::usage(&spec.cgroup);
    if let Err(e) = container.delete(true) {
        tracing::warn!(error = %e, "cannot delete the container");
    }
    if let Some((parent, _)) = spec.cgroup.rsplit_once('/') {
        cgroup::remove_empty_parents(parent);
    }
    let (exit_code, signal) = exit?;
    Ok(RunResult {
        started_at: Some(started_at),
        finished_at: Some(Utc::now()),
        exit_code,
        signal,
        oom_killed: usage.oom_kills > 0,
        peak_memory_bytes: usage.peak_memory_bytes,
        cpu_nanos: usage.cpu_nanos,
        error: None,
    })
}

struct Plain(std::process::Child);

impl Running for Plain {
    fn poll(&mut self) -> anyhow::Result<Option<(Option<i32>, Option<i32>)>> {
        use std::os::unix::process::ExitStatusExt;
        Ok(self.0.try_wait()?.map(|s| (s.code().or(s.signal().map(|sig| 128 + sig)), s.signal())))
    }

    fn signal(&mut self, sig: Signal) {
        let group = Pid::from_raw(-(self.0.id() as i32));
        let _ = nix::sys::signal::kill(group, sig);
    }
}

fn run_process(spec: &RunSpec, log: &File) -> anyhow::Result<RunResult> {
    let (program, args) = spec.argv.split_first().context("the replica has no command")?;
    let started_at = Utc::now();
    let child = std::process::Command::new(program)
        .args(args)
        .env_clear()
        .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .env("HOSTNAME", &spec.hostname)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir("/")
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log.try_clone()?)
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot run {program}"))?;
    let (exit_code, signal) = wait(&mut Plain(child))?;
    Ok(RunResult {
        started_at: Some(started_at),
        finished_at: Some(Utc::now()),
        exit_code,
        signal,
        ..RunResult::default()
    })
}
