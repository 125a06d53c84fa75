//! What the agent asks a shim to run, and what the shim reports back: two small JSON files in
//! the run's directory (`run.json` in, `result.json` out), plus the output in `output.log`.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Whether `uid` (a replica's, from the API or a request) may name a run's directory and
/// container: a uid's characters only, at most 64 of them.
pub fn is_run_id(uid: &str) -> bool {
    !uid.is_empty() && uid.len() <= 64 && uid.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

/// The file the agent writes before it starts the shim.
pub const SPEC_FILE: &str = "run.json";
/// The file the shim writes (atomically) when the replica ended.
pub const RESULT_FILE: &str = "result.json";
/// The replica's standard output and error, appended across restarts.
pub const LOG_FILE: &str = "output.log";

/// How a replica is run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    /// A container made by libcontainer: its own namespaces (pid, mount, ipc, uts, network), a
    /// cgroup with the requested limits, the read-only rootfs of its image.
    Container,
    /// A plain process on the host, for machines where containers cannot run: no isolation,
    /// no limits, the host's filesystem.
    Process,
}

impl RuntimeKind {
    /// How replicas run, for people: `in containers`, `as plain processes`.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Container => "in containers",
            Self::Process => "as plain processes (no isolation, no limits)",
        }
    }

    /// Its name, as `--runtime` and `Node.status.runtime` say it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Container => "container",
            Self::Process => "process",
        }
    }
}

/// One run of one replica.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunSpec {
    /// The container id: unique among the node's containers.
    pub id: String,
    /// How to run it.
    pub runtime: RuntimeKind,
    /// The image's root filesystem (a directory; mounted read-only).
    pub rootfs: PathBuf,
    /// The command and its arguments.
    pub argv: Vec<String>,
    /// The environment.
    pub env: Vec<(String, String)>,
    /// The container's host name.
    pub hostname: String,
    /// CPU limit in millicores (CFS quota), if any.
    pub cpu_millis: Option<u64>,
    /// Memory limit in bytes, if any.
    pub memory_bytes: Option<u64>,
    /// The container's cgroup (relative to each hierarchy's root), e.g. `/univrs/NODE/ID`.
    pub cgroup: String,
    /// libcontainer's state directory for this node's containers.
    pub state_root: PathBuf,
    /// Its network (none: only `lo`, as under the process runtime).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<crate::network::Attachment>,
    /// The container ports the node publishes to it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<api::kinds::ContainerPort>,
    /// The working directory (none: `/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// The uid and gid it runs as in its user namespace (none: root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<(u32, u32)>,
    /// Whose it is: the signer of its workload (the payer the control plane wrote on the replica
    /// when it made it, as for its sealed values); only they authorize `ui exec` in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The first host id of its user namespace's range, claimed for it on this machine (none:
    /// a run written by an earlier agent, which used the range its id hashes to).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_base: Option<u64>,
}

/// How [`RunResult::killed`] begins when a failing liveness probe ended the run.
pub const LIVENESS_FAILED: &str = "liveness probe failed";

/// How a run ended.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunResult {
    /// When the process started (absent if it never did).
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// Its exit code (128 + signal when a signal ended it, as a shell reports it).
    pub exit_code: Option<i32>,
    /// The signal that ended it.
    pub signal: Option<i32>,
    /// The kernel's OOM killer ended it (the memory limit was exceeded).
    pub oom_killed: bool,
    /// Peak memory in bytes, as the cgroup measured it.
    pub peak_memory_bytes: Option<u64>,
    /// CPU time used, in nanoseconds.
    pub cpu_nanos: Option<u64>,
    /// Why it could not be started (then there is no exit code).
    pub error: Option<String>,
    /// Why the agent ended it (a failed liveness probe), if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub killed: Option<String>,
}

impl RunResult {
    /// The run ended with exit code 0.
    pub fn succeeded(&self) -> bool {
        self.exit_code == Some(0) && self.error.is_none() && self.killed.is_none()
    }

    /// `Completed`, `Error`, `OOMKilled`, `Signaled`, `StartError`, `Unhealthy`: Kubernetes' reasons.
    pub fn reason(&self) -> &'static str {
        if self.error.is_some() {
            "StartError"
        } else if self.killed.as_deref().is_some_and(|k| k.starts_with(LIVENESS_FAILED)) {
            // Stopped by the agent for failing its liveness probe (the kubelet's event reason).
            "Unhealthy"
        } else if self.killed.is_some() {
            "Error"
        } else if self.oom_killed {
            "OOMKilled"
        } else if self.exit_code == Some(0) {
            "Completed"
        } else if self.signal.is_some() {
            "Signaled"
        } else {
            "Error"
        }
    }
}

/// Writes `value` as JSON to `dir/name` atomically (temporary file, fsync, rename).
pub fn write_json(dir: &Path, name: &str, value: &impl Serialize) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(name))
}

/// Reads JSON from `dir/name`.
pub fn read_json<T: for<'de> Deserialize<'de>>(dir: &Path, name: &str) -> std::io::Result<T> {
    let bytes = std::fs::read(dir.join(name))?;
    serde_json::from_slice(&bytes).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}
