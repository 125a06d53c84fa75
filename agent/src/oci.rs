//! The OCI runtime configuration (`config.json`) of a replica's container: runc's defaults,
//! narrowed. Written as plain JSON after the runtime spec, so what a container gets is visible
//! in one place.

use serde_json::{Value, json};

use crate::run::RunSpec;

/// The CFS period the CPU limit is expressed in.
const CPU_PERIOD_MICROS: u64 = 100_000;

/// The smallest CFS quota the kernel takes.
const MIN_CPU_QUOTA_MICROS: u64 = 1_000;

/// A quota of 1024 CPUs: more than any node, and well within what the kernel takes.
const MAX_CPU_QUOTA_MICROS: u64 = 1024 * CPU_PERIOD_MICROS;

/// Syscalls a replica may not make (EPERM), after Docker's default profile: kernel keyrings,
/// BPF, new user namespaces and other namespaces, mounts, modules, kexec, reboot, swap,
/// accounting, file handles (a classic container escape), fanotify-style userfaults and
/// perf. Everything else is allowed; the capability set does the rest.
const DENIED_SYSCALLS: &[&str] = &[
    "add_key",
    "request_key",
    "keyctl",
    "bpf",
    "userfaultfd",
    "perf_event_open",
    "unshare",
    "setns",
    "mount",
    "umount2",
    "pivot_root",
    "fsopen",
    "fsmount",
    "fsconfig",
    "move_mount",
    "open_tree",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "open_by_handle_at",
    "name_to_handle_at",
    "quotactl",
];

/// `CLONE_NEWUSER`: `clone` with it is refused, so no user namespace can be made.
const CLONE_NEWUSER: u64 = 0x1000_0000;

/// The seccomp filter of every replica.
pub fn seccomp() -> Value {
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            { "names": DENIED_SYSCALLS, "action": "SCMP_ACT_ERRNO", "errnoRet": 1 },
            { "names": ["clone"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
              "args": [{ "index": 0, "value": CLONE_NEWUSER, "valueTwo": CLONE_NEWUSER, "op": "SCMP_CMP_MASKED_EQ" }] },
            // Its flags cannot be filtered (they are behind a pointer): ENOSYS makes libc fall
            // back to clone, which is.
            { "names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38 },
        ],
    })
}

/// The capabilities a replica keeps (Docker's default set, without `NET_RAW`).
const CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// `config.json` for `run`.
pub fn config(run: &RunSpec) -> Value {
    let default_path = (!run.env.iter().any(|(k, _)| k == "PATH"))
        .then(|| "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned());
    let env: Vec<String> =
        default_path.into_iter().chain(run.env.iter().map(|(k, v)| format!("{k}={v}"))).collect();
    let mut resources = json!({ "devices": [{ "allow": false, "access": "rwm" }] });
    if let Some(bytes) = run.memory_bytes {
        // Memory and swap together: with swap on the host the limit is still a hard one.
        resources["memory"] = json!({ "limit": bytes, "swap": bytes });
    }
    if let Some(millis) = run.cpu_millis {
        // The kernel's smallest quota is 1 ms per period.
        let quota =
            millis.saturating_mul(CPU_PERIOD_MICROS / 1000).clamp(MIN_CPU_QUOTA_MICROS, MAX_CPU_QUOTA_MICROS);
        resources["cpu"] = json!({ "quota": quota, "period": CPU_PERIOD_MICROS });
    }
    resources["pids"] = json!({ "limit": 1024 });
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": { "uid": 0, "gid": 0 },
            "args": run.argv,
            "env": env,
            "cwd": "/",
            "capabilities": {
                "bounding": CAPABILITIES,
                "effective": CAPABILITIES,
                "permitted": CAPABILITIES,
            },
            "rlimits": [{ "type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024 }],
            "noNewPrivileges": true,
        },
        "root": { "path": run.rootfs, "readonly": true },
        "hostname": run.hostname,
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc" },
            { "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
              "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
            { "destination": "/dev/pts", "type": "devpts", "source": "devpts",
              "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"] },
            { "destination": "/dev/shm", "type": "tmpfs", "source": "shm",
              "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
            { "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
              "options": ["nosuid", "noexec", "nodev"] },
            { "destination": "/sys", "type": "sysfs", "source": "sysfs",
              "options": ["nosuid", "noexec", "nodev", "ro"] },
            { "destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
              "options": ["nosuid", "nodev", "mode=1777", "size=65536k"] },
        ],
        "linux": {
            "cgroupsPath": run.cgroup,
            "resources": resources,
            "namespaces": [
                { "type": "pid" }, { "type": "network" }, { "type": "ipc" },
                { "type": "uts" }, { "type": "mount" },
            ],
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
                "/proc/scsi",
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
            ],
            "seccomp": seccomp(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::RuntimeKind;

    fn spec() -> RunSpec {
        RunSpec {
            id: "c1".into(),
            runtime: RuntimeKind::Container,
            rootfs: "/images/busybox".into(),
            argv: vec!["/bin/sh".into(), "-c".into(), "echo hi".into()],
            env: vec![("GREETING".into(), "hello".into())],
            hostname: "hello-abc-0".into(),
            cpu_millis: Some(250),
            memory_bytes: Some(32 << 20),
            cgroup: "/univrs/n1/c1".into(),
            state_root: "/state".into(),
        }
    }

    #[test]
    fn limits_namespaces_and_a_read_only_root_are_in_the_config() {
        let c = config(&spec());
        assert_eq!(c["root"], json!({ "path": "/images/busybox", "readonly": true }));
        assert_eq!(c["linux"]["resources"]["memory"]["limit"], 32 << 20);
        assert_eq!(c["linux"]["resources"]["cpu"], json!({ "quota": 25_000, "period": 100_000 }));
        assert_eq!(c["linux"]["resources"]["memory"]["swap"], 32 << 20);
        assert_eq!(c["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ALLOW");
        assert_eq!(c["linux"]["cgroupsPath"], "/univrs/n1/c1");
        let ns: Vec<&str> = c["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert_eq!(ns, ["pid", "network", "ipc", "uts", "mount"]);
        assert_eq!(c["process"]["env"][1], "GREETING=hello");
        assert_eq!(c["process"]["args"][2], "echo hi");
    }

    #[test]
    fn a_tiny_cpu_limit_is_the_kernel_s_smallest_quota() {
        let c = config(&RunSpec { cpu_millis: Some(1), ..spec() });
        assert_eq!(c["linux"]["resources"]["cpu"]["quota"], 1_000);
        let c = config(&RunSpec { cpu_millis: Some(u64::MAX), ..spec() });
        assert_eq!(c["linux"]["resources"]["cpu"]["quota"], 1024 * 100_000);
    }

    #[test]
    fn no_limits_means_none_in_the_config() {
        let c = config(&RunSpec { cpu_millis: None, memory_bytes: None, ..spec() });
        assert!(c["linux"]["resources"].get("memory").is_none());
        assert!(c["linux"]["resources"].get("cpu").is_none());
    }
}
