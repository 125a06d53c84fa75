//! `ui node exec DIR -- CMD`: a command run inside a running replica's container, for exec
//! probes and `ui exec`. A short single-threaded process that makes itself one of the
//! container's processes, step by step, as `runc exec` does, from the container's own
//! `config.json` (the one it was created with):
//!
//! 1. it moves into the container's cgroup (its limits apply; the device rules too);
//! 2. it joins the container's ipc, uts, net, cgroup, pid and mount namespaces, as host root,
//!    then its **user** namespace, and becomes the container's root there (uid 0 inside, the
//!    replica's unprivileged host uid outside);
//! 3. it drops to the container's capabilities (bounding set too), sets `no_new_privs` and the
//!    container's rlimits, and installs the container's seccomp filter;
//! 4. only then it starts the command (a child: it is in the container's pid namespace), with
//!    the container's environment, waits for it, and exits with its code.
//!
//! (libcontainer's tenant builder is not used: it joins every namespace but the user one, so
//! its process would be host root inside the container.)

use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use libcontainer::oci_spec::runtime::Spec;
use nix::sched::CloneFlags;
use nix::unistd::{Gid, Uid};

use crate::run::{RunSpec, RuntimeKind, SPEC_FILE, read_json};
use crate::shim::CONTAINER_PID_FILE;

/// The namespaces joined as host root, in order; the user namespace comes after them.
const JOINED: &[(&str, CloneFlags)] = &[
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("net", CloneFlags::CLONE_NEWNET),
    ("cgroup", CloneFlags::CLONE_NEWCGROUP),
    ("pid", CloneFlags::CLONE_NEWPID),
    ("mnt", CloneFlags::CLONE_NEWNS),
];

/// Runs `argv` in the container of the run in `dir`, killing it after `timeout`; returns its
/// exit code (128 + signal when a signal ended it, 124 when it timed out, as `timeout(1)`).
pub fn main(dir: &Path, argv: &[String], timeout: Duration) -> anyhow::Result<i32> {
    let spec: RunSpec = read_json(dir, SPEC_FILE)
        .with_context(|| format!("cannot read {}", dir.join(SPEC_FILE).display()))?;
    anyhow::ensure!(spec.runtime == RuntimeKind::Container, "the replica does not run in a container");
    let Some((program, args)) = argv.split_first() else { bail!("no command to run") };
    let config = Spec::load(dir.join("bundle/config.json")).context("the container's config.json")?;
    let pid: i32 = read_json(dir, CONTAINER_PID_FILE).context("the container is not running")?;
    // Every namespace opened before any is joined (/proc is the host's until then).
    let user = std::fs::File::open(format!("/proc/{pid}/ns/user")).context("the container is not running")?;
    let joined: Vec<(std::fs::File, CloneFlags)> = JOINED
        .iter()
        .map(|(name, flag)| Ok((std::fs::File::open(format!("/proc/{pid}/ns/{name}"))?, *flag)))
        .collect::<std::io::Result<_>>()
        .context("the container is not running")?;

    // The pid is the container's init still (not a pid reused by another process since): the
    // namespaces opened above are then the container's.
    let cgroups =
        std::fs::read_to_string(format!("/proc/{pid}/cgroup")).context("the container is not running")?;
    anyhow::ensure!(
        cgroups.lines().any(|l| l.ends_with(&spec.cgroup)),
        "the container is not running (pid {pid} is not in its cgroup {})",
        spec.cgroup
    );
    crate::cgroup::join(&spec.cgroup).context("cannot join the container's cgroup")?;
    for (ns, flag) in &joined {
        nix::sched::setns(ns.as_fd(), *flag).with_context(|| format!("cannot join namespace {flag:?}"))?;
    }
    nix::sched::setns(user.as_fd(), CloneFlags::CLONE_NEWUSER).context("cannot join the user namespace")?;
    // Root of the container's user namespace (its mapped uid 0), without the host's groups.
    if nix::unistd::setgroups(&[]).is_err() {
        // Refused where the namespace denies setgroups: then no group of the host may be left.
        anyhow::ensure!(
            nix::unistd::getgroups().is_ok_and(|g| g.is_empty()),
            "cannot drop the host's groups"
        );
    }
    nix::unistd::setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0)).context("setresgid")?;
    nix::unistd::setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0)).context("setresuid")?;
    std::env::set_current_dir("/").context("chdir /")?;

    let process = config.process().as_ref().context("config.json has no process")?;
    let syscall = libcontainer::syscall::syscall::create_syscall();
    // Fail closed: a config without capabilities or a seccomp filter is not one of ours.
    let caps = process.capabilities().as_ref().context("config.json sets no capabilities")?;
    libcontainer::capabilities::drop_privileges(caps, syscall.as_ref())
        .context("cannot drop capabilities")?;
    nix::sys::prctl::set_no_new_privs().context("no_new_privs")?;
    for rlimit in process.rlimits().iter().flatten() {
        let resource = match rlimit.typ() {
            libcontainer::oci_spec::runtime::PosixRlimitType::RlimitNofile => {
                nix::sys::resource::Resource::RLIMIT_NOFILE
            }
            _ => continue,
        };
        nix::sys::resource::setrlimit(resource, rlimit.soft(), rlimit.hard()).context("setrlimit")?;
    }
    let seccomp = config
        .linux()
        .as_ref()
        .and_then(|l| l.seccomp().as_ref())
        .context("config.json has no seccomp filter")?;
    libcontainer::seccomp::initialize_seccomp(seccomp).context("cannot install the seccomp filter")?;

    // As the container's own user, in its working directory (its capabilities go with root).
    let (uid, gid) = (process.user().uid(), process.user().gid());
    if gid != 0 {
        nix::unistd::setresgid(Gid::from_raw(gid), Gid::from_raw(gid), Gid::from_raw(gid))
            .context("setresgid")?;
    }
    if uid != 0 {
        nix::unistd::setresuid(Uid::from_raw(uid), Uid::from_raw(uid), Uid::from_raw(uid))
            .context("setresuid")?;
    }
    let env = process.env().iter().flatten().filter_map(|kv| kv.split_once('='));
    let mut child = std::process::Command::new(program)
        .args(args)
        .env_clear()
        .envs(env)
        .current_dir(process.cwd())
        .stdin(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("cannot run {program} in the container"))?;
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            use std::os::unix::process::ExitStatusExt;
            return Ok(status.code().or(status.signal().map(|s| 128 + s)).unwrap_or(1));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            eprintln!("timed out after {} s", timeout.as_secs());
            return Ok(124);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
