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

/// Syscalls a replica may make; every other one fails with EPERM. An allow-list after
/// Docker's default profile, narrowed for strangers' code: without the calls Docker allows
/// only with capabilities no replica has (mounts, namespaces, modules, clocks, BPF, perf,
/// reboot, `open_by_handle_at`), and without some Docker allows to everyone: `ptrace` and
/// `process_vm_*` (reading another process's memory), `io_uring_*` (a frequent source of kernel
/// escapes, off in Docker 25+ too), `name_to_handle_at`, `fanotify_mark`, `adjtimex`,
/// `clock_adjtime`. `clone`, `socket` and `personality` are allowed only with safe arguments
/// (below). Names this machine's libseccomp does not know are skipped.
#[rustfmt::skip]
const ALLOWED_SYSCALLS: &[&str] = &[
    // Files and directories.
    "access", "chdir", "chmod", "chown", "chown32", "close", "close_range", "copy_file_range", "creat",
    "dup", "dup2", "dup3", "faccessat", "faccessat2", "fadvise64", "fadvise64_64", "fallocate", "fchdir",
    "fchmod", "fchmodat", "fchown", "fchown32", "fchownat", "fcntl", "fcntl64", "fdatasync", "fgetxattr",
    "flistxattr", "flock", "fremovexattr", "fsetxattr", "fstat", "fstat64", "fstatat64", "fstatfs",
    "fstatfs64", "fsync", "ftruncate", "ftruncate64", "futimesat", "getcwd", "getdents", "getdents64",
    "getxattr", "inotify_add_watch", "inotify_init", "inotify_init1", "inotify_rm_watch", "lchown",
    "lchown32", "lgetxattr", "link", "linkat", "listxattr", "llistxattr", "_llseek", "lremovexattr",
    "lseek", "lsetxattr", "lstat", "lstat64", "mkdir", "mkdirat", "mknod", "mknodat", "newfstatat",
    "open", "openat", "openat2", "pread64", "preadv", "preadv2", "pwrite64", "pwritev", "pwritev2",
    "read", "readahead", "readlink", "readlinkat", "readv", "removexattr", "rename", "renameat",
    "renameat2", "rmdir", "sendfile", "sendfile64", "setxattr", "splice", "stat", "stat64", "statfs",
    "statfs64", "statx", "symlink", "symlinkat", "sync", "sync_file_range", "syncfs", "tee", "truncate",
    "truncate64", "umask", "unlink", "unlinkat", "utime", "utimensat", "utimensat_time64", "utimes",
    "vmsplice", "write", "writev", "chroot",
    // Memory.
    "brk", "madvise", "membarrier", "memfd_create", "mincore", "mlock", "mlock2", "mlockall", "mmap",
    "mmap2", "mprotect", "mremap", "msync", "munlock", "munlockall", "munmap", "pkey_alloc",
    "pkey_free", "pkey_mprotect", "remap_file_pages",
    // Processes, threads, signals, scheduling.
    "arch_prctl", "capget", "capset", "execve", "execveat", "exit", "exit_group", "fork", "getcpu",
    "getegid", "getegid32", "geteuid", "geteuid32", "getgid", "getgid32", "getgroups", "getgroups32",
    "getitimer", "getpgid", "getpgrp", "getpid", "getppid", "getpriority", "getresgid", "getresgid32",
    "getresuid", "getresuid32", "getrlimit", "get_robust_list", "getrusage", "getsid", "get_thread_area",
    "gettid", "getuid", "getuid32", "ioprio_get", "ioprio_set", "kill", "modify_ldt", "pause",
    "pidfd_open", "pidfd_send_signal", "prctl", "prlimit64", "restart_syscall", "rseq", "rt_sigaction",
    "rt_sigpending", "rt_sigprocmask", "rt_sigqueueinfo", "rt_sigreturn", "rt_sigsuspend",
    "rt_sigtimedwait", "rt_sigtimedwait_time64", "rt_tgsigqueueinfo", "sched_getaffinity",
    "sched_getattr", "sched_getparam", "sched_get_priority_max", "sched_get_priority_min",
    "sched_getscheduler", "sched_rr_get_interval", "sched_rr_get_interval_time64", "sched_setaffinity",
    "sched_setattr", "sched_setparam", "sched_setscheduler", "sched_yield", "seccomp", "setfsgid",
    "setfsgid32", "setfsuid", "setfsuid32", "setgid", "setgid32", "setgroups", "setgroups32",
    "setitimer", "setpgid", "setpriority", "setregid", "setregid32", "setresgid", "setresgid32",
    "setresuid", "setresuid32", "setreuid", "setreuid32", "setrlimit", "set_robust_list", "setsid",
    "set_thread_area", "set_tid_address", "setuid", "setuid32", "sigaltstack", "signalfd", "signalfd4",
    "sigprocmask", "sigreturn", "tgkill", "tkill", "ugetrlimit", "uname", "vfork", "wait4", "waitid",
    "waitpid", "sysinfo", "times", "getrandom", "landlock_add_rule", "landlock_create_ruleset",
    "landlock_restrict_self",
    // Time and waiting.
    "alarm", "clock_getres", "clock_getres_time64", "clock_gettime", "clock_gettime64",
    "clock_nanosleep", "clock_nanosleep_time64", "epoll_create", "epoll_create1", "epoll_ctl",
    "epoll_ctl_old", "epoll_pwait", "epoll_pwait2", "epoll_wait", "epoll_wait_old", "eventfd",
    "eventfd2", "futex", "futex_time64", "futex_waitv", "gettimeofday", "nanosleep", "_newselect",
    "poll", "ppoll", "ppoll_time64", "pselect6", "pselect6_time64", "select", "time", "timer_create",
    "timer_delete", "timer_getoverrun", "timer_gettime", "timer_gettime64", "timer_settime",
    "timer_settime64", "timerfd_create", "timerfd_gettime", "timerfd_gettime64", "timerfd_settime",
    "timerfd_settime64", "io_cancel", "io_destroy", "io_getevents", "io_pgetevents",
    "io_pgetevents_time64", "io_setup", "io_submit",
    // Sockets (`socket` itself below), pipes, IPC.
    "accept", "accept4", "bind", "connect", "getpeername", "getsockname", "getsockopt", "listen",
    "recv", "recvfrom", "recvmmsg", "recvmmsg_time64", "recvmsg", "send", "sendmmsg", "sendmsg",
    "sendto", "setsockopt", "shutdown", "socketcall", "socketpair", "pipe", "pipe2", "ioctl", "ipc",
    "mq_getsetattr", "mq_notify", "mq_open", "mq_timedreceive", "mq_timedreceive_time64",
    "mq_timedsend", "mq_timedsend_time64", "mq_unlink", "msgctl", "msgget", "msgrcv", "msgsnd",
    "semctl", "semget", "semop", "semtimedop", "semtimedop_time64", "shmat", "shmctl", "shmdt",
    "shmget",
];

/// The namespace flags of `clone`: a `clone` with any of them fails (no new namespaces).
const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0000;

/// `AF_VSOCK`: sockets to the hypervisor stay closed.
const AF_VSOCK: u64 = 40;

/// The `personality` values allowed (Linux, `UNAME26`, `ADDR_NO_RANDOMIZE`, both, and the
/// query 0xffffffff), as Docker.
const PERSONALITIES: &[u64] = &[0, 8, 0x2_0000, 0x2_0008, 0xFFFF_FFFF];

/// The seccomp filter of every replica: [`ALLOWED_SYSCALLS`], `clone` without namespace flags,
/// `clone3` answered ENOSYS (its flags are behind a pointer and cannot be checked; libc falls
/// back to `clone`), `socket` of any family but vsock, `personality` with the values above.
pub fn seccomp() -> Value {
    let mut rules = vec![
        json!({ "names": ALLOWED_SYSCALLS, "action": "SCMP_ACT_ALLOW" }),
        // `(flags & CLONE_NAMESPACE_FLAGS) == 0`. libcontainer reads a masked comparison
        // with `valueTwo` as the mask and `value` as what the masked argument must equal (runc
        // reads them the other way round).
        json!({ "names": ["clone"], "action": "SCMP_ACT_ALLOW",
          "args": [{ "index": 0, "value": 0, "valueTwo": CLONE_NAMESPACE_FLAGS, "op": "SCMP_CMP_MASKED_EQ" }] }),
        json!({ "names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38 }),
        json!({ "names": ["socket"], "action": "SCMP_ACT_ALLOW",
          "args": [{ "index": 0, "value": AF_VSOCK, "op": "SCMP_CMP_NE" }] }),
    ];
    rules.extend(PERSONALITIES.iter().map(|p| {
        json!({ "names": ["personality"], "action": "SCMP_ACT_ALLOW",
          "args": [{ "index": 0, "value": p, "op": "SCMP_CMP_EQ" }] })
    }));
    json!({ "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1, "syscalls": rules })
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

/// How many host uids (and gids) one replica's user namespace maps: container ids 0..65535.
pub const ID_RANGE: u64 = 65_536;
/// The first host id of the first replica's range (far above any account's uid).
pub const FIRST_HOST_ID: u64 = 1 << 20;
/// How many ranges there are: the last ends below 2^31.
pub const ID_SLOTS: u64 = ((1 << 31) - FIRST_HOST_ID) / ID_RANGE;

/// The host range the container `id` tries first (a hash of the id picks one of 32,752); the
/// agent claims one that no other run on the machine holds (`ids::claim`), this one or the
/// next free.
pub fn host_id_base(id: &str) -> u64 {
    // FNV-1a: stable across builds and machines.
    let hash =
        id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    FIRST_HOST_ID + (hash % ID_SLOTS) * ID_RANGE
}

/// `config.json` for `run`, whose root filesystem is at `rootfs`.
pub fn config(run: &RunSpec, rootfs: &std::path::Path) -> Value {
    // Container root is the first of the run's claimed, unshared range of unprivileged host ids.
    let base = run.id_base.unwrap_or_else(|| host_id_base(&run.id));
    let ids = json!([{ "containerID": 0, "hostID": base, "size": ID_RANGE }]);
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
    let mut mounts = vec![
        json!({ "destination": "/proc", "type": "proc", "source": "proc" }),
        json!({ "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
          "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] }),
        json!({ "destination": "/dev/pts", "type": "devpts", "source": "devpts",
          "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"] }),
        json!({ "destination": "/dev/shm", "type": "tmpfs", "source": "shm",
          "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] }),
        json!({ "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
          "options": ["nosuid", "noexec", "nodev"] }),
        json!({ "destination": "/sys", "type": "sysfs", "source": "sysfs",
          "options": ["nosuid", "noexec", "nodev", "ro"] }),
        json!({ "destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
          "options": ["nosuid", "nodev", "mode=1777", "size=65536k"] }),
    ];
    // Its names and resolvers, where the image has the files to cover (the root filesystem is
    // read-only: nothing can be made in it).
    if let Some(net) = &run.network {
        for (file, source) in [("etc/hosts", &net.hosts), ("etc/resolv.conf", &net.resolv)] {
            if std::fs::symlink_metadata(run.rootfs.join(file)).is_ok_and(|m| m.is_file()) {
                mounts.push(json!({ "destination": format!("/{file}"), "type": "bind", "source": source,
                    "options": ["rbind", "ro", "nosuid", "nodev", "noexec"] }));
            }
        }
    }
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": { "uid": run.user.map_or(0, |u| u.0), "gid": run.user.map_or(0, |u| u.1) },
            "args": run.argv,
            "env": env,
            "cwd": run.cwd.as_deref().unwrap_or("/"),
            "capabilities": {
                "bounding": CAPABILITIES,
                "effective": CAPABILITIES,
                "permitted": CAPABILITIES,
            },
            "rlimits": [{ "type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024 }],
            "noNewPrivileges": true,
        },
        "root": { "path": rootfs, "readonly": true },
        "hostname": run.hostname,
        "mounts": mounts,
        "linux": {
            "cgroupsPath": run.cgroup,
            "resources": resources,
            // A user namespace first: container root is an unprivileged host id, and every
            // capability it has is over its own namespaces only.
            "namespaces": [
                { "type": "user" }, { "type": "pid" }, { "type": "network" }, { "type": "ipc" },
                { "type": "uts" }, { "type": "mount" }, { "type": "cgroup" },
            ],
            "uidMappings": ids,
            "gidMappings": ids,
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/interrupts", "/proc/kcore", "/proc/keys",
                "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
                "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
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
    use std::path::Path;

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
            network: None,
            ports: Vec::new(),
            id_base: None,
            cwd: None,
            user: None,
            owner: None,
        }
    }

    #[test]
    fn limits_namespaces_and_a_read_only_root_are_in_the_config() {
        let c = config(&spec(), std::path::Path::new("/images/busybox"));
        assert_eq!(c["root"], json!({ "path": "/images/busybox", "readonly": true }));
        assert_eq!(c["linux"]["resources"]["memory"]["limit"], 32 << 20);
        assert_eq!(c["linux"]["resources"]["cpu"], json!({ "quota": 25_000, "period": 100_000 }));
        assert_eq!(c["linux"]["resources"]["memory"]["swap"], 32 << 20);
        assert_eq!(c["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(c["linux"]["cgroupsPath"], "/univrs/n1/c1");
        let ns: Vec<&str> = c["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert_eq!(ns, ["user", "pid", "network", "ipc", "uts", "mount", "cgroup"]);
        let base = host_id_base("c1");
        assert!(base >= 1 << 20 && base + ID_RANGE <= 1 << 31 && base.is_multiple_of(ID_RANGE), "{base}");
        assert_eq!(c["linux"]["uidMappings"], json!([{ "containerID": 0, "hostID": base, "size": 65_536 }]));
        assert_ne!(host_id_base("c2"), base);
        assert_eq!(c["process"]["env"][1], "GREETING=hello");
        assert_eq!(c["process"]["args"][2], "echo hi");
    }

    #[test]
    fn a_tiny_cpu_limit_is_the_kernel_s_smallest_quota() {
        let c = config(&RunSpec { cpu_millis: Some(1), ..spec() }, Path::new("/r"));
        assert_eq!(c["linux"]["resources"]["cpu"]["quota"], 1_000);
        let c = config(&RunSpec { cpu_millis: Some(u64::MAX), ..spec() }, Path::new("/r"));
        assert_eq!(c["linux"]["resources"]["cpu"]["quota"], 1024 * 100_000);
    }

    #[test]
    fn no_limits_means_none_in_the_config() {
        let c = config(&RunSpec { cpu_millis: None, memory_bytes: None, ..spec() }, Path::new("/r"));
        assert!(c["linux"]["resources"].get("memory").is_none());
        assert!(c["linux"]["resources"].get("cpu").is_none());
    }
}
