//! What a container's cgroup measured (peak memory, CPU time, OOM kills), on cgroup v1 (one
//! hierarchy per controller, as on this project's CI machines) and v2, and removing the
//! intermediate cgroup folders the agent's containers were nested in.

use std::path::{Path, PathBuf};

/// Where cgroup hierarchies are mounted.
const ROOT: &str = "/sys/fs/cgroup";

/// What a cgroup measured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Peak memory in bytes.
    pub peak_memory_bytes: Option<u64>,
    /// CPU time in nanoseconds.
    pub cpu_nanos: Option<u64>,
    /// Times the OOM killer killed a process in it.
    pub oom_kills: u64,
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The value of `key` in a flat-keyed file (`memory.oom_control`, `memory.events`, `cpu.stat`).
fn keyed(path: &Path, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
}

fn v1(controller: &str, cgroup: &str) -> PathBuf {
    Path::new(ROOT).join(controller).join(cgroup.trim_start_matches('/'))
}

fn is_v2() -> bool {
    Path::new(ROOT).join("cgroup.controllers").exists()
}

/// Reads the measurements of `cgroup` (e.g. `/univrs/NODE/ID`); call before it is removed.
pub fn usage(cgroup: &str) -> Usage {
    if is_v2() {
        let dir = Path::new(ROOT).join(cgroup.trim_start_matches('/'));
        return Usage {
            peak_memory_bytes: read_u64(&dir.join("memory.peak")),
            cpu_nanos: keyed(&dir.join("cpu.stat"), "usage_usec").map(|us| us * 1000),
            oom_kills: keyed(&dir.join("memory.events"), "oom_kill").unwrap_or(0),
        };
    }
    let memory = v1("memory", cgroup);
    // `oom_kill` exists since Linux 4.13; `under_oom`/failcnt are weaker signs, not used.
    Usage {
        peak_memory_bytes: read_u64(&memory.join("memory.max_usage_in_bytes")),
        cpu_nanos: read_u64(&v1("cpuacct", cgroup).join("cpuacct.usage")),
        oom_kills: keyed(&memory.join("memory.oom_control"), "oom_kill").unwrap_or(0),
    }
}

/// The limits applied to a cgroup, read back from it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// CPU quota in millicores (none: unlimited).
    pub cpu_millicores: Option<u64>,
    /// Memory limit in bytes (none: unlimited).
    pub memory_bytes: Option<u64>,
}

/// Reads the CPU and memory limits of `cgroup` as the kernel holds them.
pub fn limits(cgroup: &str) -> Limits {
    let millicores =
        |quota: i64, period: i64| (quota > 0 && period > 0).then(|| (quota as u64) * 1000 / (period as u64));
    // Unlimited memory shows as "max" (v2) or a page-rounded i64::MAX (v1).
    let memory = |b: Option<u64>| b.filter(|b| *b < 1 << 62);
    if is_v2() {
        let dir = Path::new(ROOT).join(cgroup.trim_start_matches('/'));
        let cpu = std::fs::read_to_string(dir.join("cpu.max")).ok().and_then(|t| {
            let mut parts = t.split_whitespace();
            let quota = parts.next()?.parse().ok()?;
            let period = parts.next()?.parse().ok()?;
            millicores(quota, period)
        });
        return Limits { cpu_millicores: cpu, memory_bytes: memory(read_u64(&dir.join("memory.max"))) };
    }
    let cpu = v1("cpu", cgroup);
    let read_i64 = |p: &Path| std::fs::read_to_string(p).ok()?.trim().parse::<i64>().ok();
    let quota = read_i64(&cpu.join("cpu.cfs_quota_us"));
    let period = read_i64(&cpu.join("cpu.cfs_period_us"));
    Limits {
        cpu_millicores: quota.zip(period).and_then(|(q, p)| millicores(q, p)),
        memory_bytes: memory(read_u64(&v1("memory", cgroup).join("memory.limit_in_bytes"))),
    }
}

fn hierarchies() -> Vec<PathBuf> {
    if is_v2() {
        vec![PathBuf::from(ROOT)]
    } else {
        std::fs::read_dir(ROOT)
            .map(|d| d.flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect())
            .unwrap_or_default()
    }
}

/// The processes in cgroup `folder` (e.g. `/univrs/NODE`) and every cgroup below it: every
/// process of every container of a node, whoever started it (in the pids hierarchy on v1).
pub fn processes(folder: &str) -> usize {
    let root = if is_v2() { PathBuf::from(ROOT) } else { Path::new(ROOT).join("pids") };
    let mut stack = vec![root.join(folder.trim_start_matches('/'))];
    let mut count = 0;
    // Bounded: a node's cgroups are its containers' (a few levels each).
    while let Some(dir) = stack.pop() {
        if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
            count += procs.lines().filter(|l| !l.trim().is_empty()).count();
        }
        if let Ok(entries) = std::fs::read_dir(&dir) {
            stack.extend(
                entries.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| e.path()),
            );
        }
    }
    count
}

/// Moves the calling process into `cgroup` (e.g. `/univrs/NODE/ID`) in every hierarchy that
/// has it: it is then limited and counted as the container's own processes are.
pub fn join(cgroup: &str) -> std::io::Result<()> {
    let me = std::process::id().to_string();
    let mut joined = 0;
    for h in hierarchies() {
        let procs = h.join(cgroup.trim_start_matches('/')).join("cgroup.procs");
        if procs.exists() {
            std::fs::write(&procs, &me)?;
            joined += 1;
        }
    }
    if joined == 0 {
        return Err(std::io::Error::new(std::io::ErrorKind::NotFound, format!("no cgroup {cgroup}")));
    }
    Ok(())
}

/// Makes the folder `folder` (e.g. `/univrs/NODE`) in every hierarchy. Retried: another
/// node's agent on this machine may be removing an empty `/univrs` at the same moment.
pub fn ensure_folder(folder: &str) -> std::io::Result<()> {
    for h in hierarchies() {
        let path = h.join(folder.trim_start_matches('/'));
        let mut attempt = 0;
        while let Err(e) = std::fs::create_dir_all(&path) {
            attempt += 1;
            if attempt == 5 {
                return Err(std::io::Error::new(e.kind(), format!("cannot make {}: {e}", path.display())));
            }
        }
    }
    Ok(())
}

/// Removes the folders of `parent` (e.g. `/univrs/NODE`) and its parents up to the root, in
/// every hierarchy, where they are empty. Best effort: a sibling container still running keeps
/// them (the kernel refuses to remove a cgroup with children), which is what we want.
pub fn remove_empty_parents(parent: &str) {
    for h in hierarchies() {
        let mut rel = PathBuf::from(parent.trim_start_matches('/'));
        loop {
            if rel.as_os_str().is_empty() || std::fs::remove_dir(h.join(&rel)).is_err() {
                break;
            }
            if !rel.pop() {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_files_are_read_by_key() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("memory.oom_control");
        std::fs::write(&f, "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n").unwrap();
        assert_eq!(keyed(&f, "oom_kill"), Some(2));
        assert_eq!(keyed(&f, "under_oom"), Some(0));
        assert_eq!(keyed(&f, "missing"), None);
    }
}
