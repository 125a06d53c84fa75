//! `ui node exec DIR -- CMD`: a command run inside a running replica's container, for exec
//! probes. Like the shim, a short single-threaded process (libcontainer forks with a raw
//! `clone3`): it joins the container's namespaces and cgroup as libcontainer's tenant, with
//! the container's capabilities, `no_new_privs` and environment, and the container's seccomp
//! filter, which libcontainer does not give a tenant and the executor below installs.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::oci_spec::runtime::{LinuxSeccomp, Spec};
use libcontainer::syscall::syscall::SyscallType;
use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};

use crate::run::{RunSpec, RuntimeKind, SPEC_FILE, read_json};

/// Runs the workload after installing the container's seccomp filter.
#[derive(Clone)]
struct Filtered {
    seccomp: LinuxSeccomp,
}

impl Executor for Filtered {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        libcontainer::seccomp::initialize_seccomp(&self.seccomp)
            .map_err(|e| ExecutorError::Other(format!("cannot install the seccomp filter: {e}")))?;
        DefaultExecutor {}.exec(spec)
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        DefaultExecutor {}.validate(spec)
    }
}

/// Runs `argv` in the container of the run in `dir`, killing it after `timeout`; returns its
/// exit code (128 + signal when a signal ended it, 124 when it timed out, as `timeout(1)`).
pub fn main(dir: &Path, argv: &[String], timeout: Duration) -> anyhow::Result<i32> {
    let spec: RunSpec = read_json(dir, SPEC_FILE)
        .with_context(|| format!("cannot read {}", dir.join(SPEC_FILE).display()))?;
    anyhow::ensure!(spec.runtime == RuntimeKind::Container, "the replica does not run in a container");
    anyhow::ensure!(!argv.is_empty(), "no command to run");
    let seccomp: LinuxSeccomp =
        serde_json::from_value(crate::oci::seccomp()).context("the container's seccomp profile")?;
    let pid = ContainerBuilder::new(spec.id.clone(), SyscallType::default())
        .with_root_path(&spec.state_root)
        .context("container state directory")?
        .with_executor(Filtered { seccomp })
        .as_tenant()
        .with_container_args(argv.to_vec())
        .with_detach(true)
        .build()
        .context("cannot run the command in the container")?;
    let deadline = Instant::now() + timeout;
    loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)).context("waitpid")? {
            WaitStatus::Exited(_, code) => return Ok(code),
            WaitStatus::Signaled(_, sig, _) => return Ok(128 + sig as i32),
            _ => {}
        }
        if Instant::now() >= deadline {
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
            eprintln!("timed out after {} s", timeout.as_secs());
            return Ok(124);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
