//! The shim: one short, single-threaded process per run of a replica (`ui node shim DIR`), like
//! containerd's shims. It creates the container with libcontainer, waits for it, measures its
//! cgroup, removes the container and writes `result.json`.
//!
//! Why a separate process: libcontainer forks with a raw `clone3`, which is only safe from a
//! single-threaded process (the agent runs a multi-threaded tokio runtime); the container's
//! init is the shim's child, so the shim can `waitpid` it (tokio's process API in the agent
//! never sees it); and a shim outlives an agent restart, so a restarted agent finds its
//! replicas still running instead of orphans. The agent stops a run with SIGTERM to the shim,
//! which passes it on and escalates to SIGKILL after the grace period (a SIGTERM that comes
//! while the container is being made stops it before it starts).
//!
//! The replica's output goes through a pipe the shim reads, into `output.log`, which the shim
//! keeps bounded: past [`MAX_LOG_BYTES`] it becomes `output.log.1` and a new file starts.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use libcontainer::container::Container;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use libcontainer::workload::default::DefaultExecutor;
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::cgroup;
use crate::run::{LOG_FILE, RESULT_FILE, RunResult, RunSpec, RuntimeKind, SPEC_FILE, read_json, write_json};

/// The shim's own pid, for an agent that restarted and adopts the run.
pub const PID_FILE: &str = "shim.pid";

/// The host pid of the container's init, written once it is made (for probes and `exec`).
pub const CONTAINER_PID_FILE: &str = "container.pid";

/// How long a replica has between SIGTERM and SIGKILL.
const GRACE: Duration = Duration::from_secs(5);

/// How often the shim looks at its child and at its signals.
const POLL: Duration = Duration::from_millis(20);

/// A replica's output is kept up to this size, plus one older part (`output.log.1`).
pub const MAX_LOG_BYTES: u64 = 16 << 20;

/// Runs the replica described in `dir/run.json` to its end and writes `dir/result.json`.
pub fn main(dir: &Path) -> anyhow::Result<()> {
    // First of all: a SIGTERM from now on asks for a stop, whatever the shim is doing. (A
    // caught signal goes back to its default in the container at exec.)
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, stop.clone()).context("cannot handle SIGTERM")?;
    }
    let spec: RunSpec = read_json(dir, SPEC_FILE)
        .with_context(|| format!("cannot read {}", dir.join(SPEC_FILE).display()))?;
    write_json(dir, PID_FILE, &std::process::id())?;
    let (output, input) = nix::unistd::pipe().context("cannot make the output pipe")?;
    let log = LogWriter::open(dir.join(LOG_FILE))?;
    let pump = std::thread::spawn(move || pump(output, log));
    let result = match spec.runtime {
        RuntimeKind::Container => run_container(dir, &spec, input, &stop),
        RuntimeKind::Process => run_process(&spec, input, &stop),
    };
    let result = result.unwrap_or_else(|e| RunResult {
        finished_at: Some(Utc::now()),
        error: Some(format!("{e:#}")),
        ..RunResult::default()
    });
    // The output ends when every writer is gone; a background process a plain-process
    // replica left behind may hold it open: it is not waited for.
    let deadline = Instant::now() + Duration::from_secs(2);
    while !pump.is_finished() && Instant::now() < deadline {
        std::thread::sleep(POLL);
    }
    write_json(dir, RESULT_FILE, &result)?;
    Ok(())
}

/// `output.log`, bounded: past [`MAX_LOG_BYTES`] it is renamed to `output.log.1` (replacing
/// the older part) and a new one is started.
struct LogWriter {
    path: PathBuf,
    file: File,
    size: u64,
}

impl LogWriter {
    fn open(path: PathBuf) -> anyhow::Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let size = file.metadata()?.len();
        Ok(Self { path, file, size })
    }

    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if self.size + bytes.len() as u64 > MAX_LOG_BYTES && self.size > 0 {
            let mut old = self.path.clone().into_os_string();
            old.push(".1");
            std::fs::rename(&self.path, old)?;
            self.file = OpenOptions::new().create(true).append(true).open(&self.path)?;
            self.size = 0;
        }
        self.file.write_all(bytes)?;
        self.size += bytes.len() as u64;
        Ok(())
    }
}

/// Copies the replica's output into the log until every writer has closed the pipe.
fn pump(output: OwnedFd, mut log: LogWriter) {
    let mut output = File::from(output);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match output.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if let Err(e) = log.write(&buf[..n]) {
                    tracing::warn!(error = %e, "cannot write the replica's output");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// What `wait` needs of a running thing.
trait Running {
    /// Its exit, if it has ended.
    fn poll(&mut self) -> anyhow::Result<Option<(Option<i32>, Option<i32>)>>;
    /// Sends `sig` to all of it.
    fn signal(&mut self, sig: Signal);
}

/// Waits for `run` to end, passing a stop (SIGTERM/SIGINT to the shim) on as SIGTERM, then
/// SIGKILL after the grace period.
fn wait(run: &mut dyn Running, stop: &AtomicBool) -> anyhow::Result<(Option<i32>, Option<i32>)> {
    let mut kill_at: Option<Instant> = None;
    loop {
        if let Some(exit) = run.poll()? {
            return Ok(exit);
        }
        if stop.load(Ordering::Relaxed) && kill_at.is_none() {
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

fn run_container(
    dir: &Path,
    spec: &RunSpec,
    output: OwnedFd,
    stop: &AtomicBool,
) -> anyhow::Result<RunResult> {
    let bundle = dir.join("bundle");
    std::fs::create_dir_all(&bundle)?;
    let staged = Staged::mount(&spec.rootfs, &spec.id)?;
    write_json(&bundle, "config.json", &crate::oci::config(spec, &staged.0))?;
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
        .with_stdout(output.try_clone()?)
        .with_stderr(output)
        .validate_id()
        .context("container id")?
        .as_init(&bundle)
        .with_systemd(false)
        .with_detach(true)
        .build()
        .context("cannot create the container")?;
    if stop.load(Ordering::Relaxed) {
        // Stopped while it was being made: it never starts.
        let _ = container.delete(true);
        return Ok(RunResult {
            finished_at: Some(Utc::now()),
            error: Some("stopped before it started".into()),
            ..RunResult::default()
        });
    }
    // The loopback interface of its network namespace is up before it starts, and its init's
    // pid is where the agent's probes find that namespace.
    // With a network, it is attached to its owner's bridge before it starts: it never runs
    // without its address.
    if let Some(pid) = container.pid() {
        match &spec.network {
            Some(net) => {
                if let Err(e) = crate::netns::attach(pid.as_raw(), net) {
                    let _ = container.delete(true);
                    anyhow::bail!("cannot connect the container to its network: {e}");
                }
            }
            None => {
                if let Err(e) = crate::netns::loopback_up(pid.as_raw()) {
                    tracing::warn!(error = %e, "cannot bring up the container's loopback interface");
                }
            }
        }
        write_json(dir, CONTAINER_PID_FILE, &pid.as_raw())?;
    }
    let started_at = Utc::now();
    let started = container.start().context("cannot start the container");
    let pid = container.pid();
    let exit = match (started, pid) {
        (Ok(()), Some(pid)) => wait(&mut InContainer { container: container.clone(), pid }, stop),
        (Ok(()), None) => Err(anyhow::anyhow!("the container has no pid")),
        (Err(e), _) => Err(e),
    };
    let usage = cgroup::usage(&spec.cgroup);
    // Its own cgroup goes with it; the node's folder above stays while the agent runs (a
    // sibling may be being made in it right now).
    if let Err(e) = container.delete(true) {
        tracing::warn!(error = %e, "cannot delete the container");
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
        killed: None,
    })
}

/// Where a container's root filesystem is bind-mounted for its run. The container's root is an
/// unprivileged host id (its user namespace), which must reach its root filesystem: the image
/// may lie under a directory only root can enter (a node directory in `/root`), this path every
/// id can. Read-only: the container cannot change the image through it.
pub const STAGING: &str = "/run/univrs/rootfs";

/// A root filesystem bind-mounted at `STAGING/ID` for one run, unmounted when dropped.
struct Staged(PathBuf);

impl Staged {
    fn mount(image: &Path, id: &str) -> anyhow::Result<Self> {
        use nix::mount::MsFlags;
        use std::os::unix::fs::PermissionsExt;
        let root = Path::new(STAGING);
        std::fs::create_dir_all(root).with_context(|| format!("cannot make {STAGING}"))?;
        for dir in [root.parent().expect("STAGING has a parent"), root] {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
        }
        let target = root.join(id);
        unmount(&target); // left by a shim that was killed
        std::fs::create_dir_all(&target)?;
        nix::mount::mount(
            Some(image),
            &target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .with_context(|| format!("cannot bind-mount {} at {}", image.display(), target.display()))?;
        let read_only = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        if let Err(e) = nix::mount::mount(None::<&str>, &target, None::<&str>, read_only, None::<&str>) {
            unmount(&target);
            return Err(e).context("cannot make the root filesystem read-only");
        }
        Ok(Self(target))
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        unmount(&self.0);
    }
}

/// Unmounts a staged root filesystem (if mounted) and removes its mount point.
pub fn unmount(target: &Path) {
    let _ = nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH);
    let _ = std::fs::remove_dir(target);
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

fn run_process(spec: &RunSpec, output: OwnedFd, stop: &AtomicBool) -> anyhow::Result<RunResult> {
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
        .stdout(output.try_clone()?)
        .stderr(output)
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot run {program}"))?;
    let (exit_code, signal) = wait(&mut Plain(child), stop)?;
    Ok(RunResult {
        started_at: Some(started_at),
        finished_at: Some(Utc::now()),
        exit_code,
        signal,
        ..RunResult::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_past_the_limit_is_kept_as_one_older_part() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOG_FILE);
        let mut log = LogWriter::open(path.clone()).unwrap();
        let chunk = vec![b'y'; 1 << 20];
        for _ in 0..16 {
            log.write(&chunk).unwrap();
        }
        assert_eq!(std::fs::metadata(&path).unwrap().len(), MAX_LOG_BYTES);
        log.write(b"next\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"next\n");
        assert_eq!(std::fs::metadata(dir.path().join("output.log.1")).unwrap().len(), MAX_LOG_BYTES);
    }
}
