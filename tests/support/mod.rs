//! Helpers for end-to-end tests: run the real `ui` binary against a throwaway config dir.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// A user with their own config dir.
/// The `ui` binary: this build's, or another build's given in `BENCH_UI_BINARY` (for a
/// benchmark to run the build before a change beside the one after it).
pub fn ui_binary() -> PathBuf {
    std::env::var_os("BENCH_UI_BINARY").map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_ui")), PathBuf::from)
}

pub struct User {
    pub dir: tempfile::TempDir,
}

/// The result of one `ui` run.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn from(out: Output) -> Self {
        Self {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Asserts exit 0 and returns self.
    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(self.code, 0, "expected success\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }

    /// Asserts a non-zero exit whose stderr contains every one of `needles`.
    #[track_caller]
    pub fn fails_with(self, needles: &[&str]) -> Self {
        assert_ne!(self.code, 0, "expected failure\nstdout:\n{}", self.stdout);
        for n in needles {
            assert!(self.stderr.contains(n), "stderr lacks {n:?}:\n{}", self.stderr);
        }
        self
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", self.stdout))
    }
}

impl User {
    pub fn new() -> Self {
        Self { dir: tempfile::tempdir().unwrap() }
    }

    /// The config dir (`UNIVRS_CONFIG_DIR`).
    pub fn config(&self) -> PathBuf {
        self.dir.path().join("config")
    }

    /// A `ui` command with this user's config dir, no passphrase in the environment and no
    /// terminal on stdin.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(ui_binary());
        c.args(args)
            .env("UNIVRS_CONFIG_DIR", self.config())
            .env_remove("UNIVRS_PASSPHRASE")
            .stdin(Stdio::null());
        c
    }

    pub fn run(&self, args: &[&str]) -> Run {
        Run::from(self.cmd(args).output().unwrap())
    }

    /// `ui up` with its data in `data`, on a free loopback port, writing `kubeconfig`, and
    /// `more` flags (its node, runtime, metrics…).
    pub fn up_cmd(&self, data: &Path, kubeconfig: &Path, more: &[&str]) -> Command {
        let mut c = self.cmd(&[
            "up",
            "--data-dir",
            data.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
        ]);
        c.args(more);
        c
    }

    pub fn run_with_passphrase(&self, pass: &str, args: &[&str]) -> Run {
        Run::from(self.cmd(args).env("UNIVRS_PASSPHRASE", pass).output().unwrap())
    }

    pub fn run_with_stdin(&self, args: &[&str], input: &str) -> Run {
        use std::io::Write;
        let mut child = self
            .cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // A command may rightly refuse before reading its input; the pipe is then closed.
        match child.stdin.take().unwrap().write_all(input.as_bytes()) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            other => other.unwrap(),
        }
        Run::from(child.wait_with_output().unwrap())
    }

    /// `ui init --no-passphrase`: fast, for tests that are not about passphrases.
    pub fn init_plain(&self) -> String {
        self.run(&["init", "--no-passphrase", "-o", "json"]).ok().json()["did"].as_str().unwrap().to_owned()
    }

    /// A path inside this user's temp dir.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// The repository root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Mode bits of a file.
pub fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Copies the example manifests into `dest`.
pub fn copy_examples(dest: &Path) {
    std::fs::create_dir_all(dest).unwrap();
    for entry in std::fs::read_dir(workspace().join("manifests")).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "yaml") {
            std::fs::copy(&p, dest.join(p.file_name().unwrap())).unwrap();
        }
    }
}

/// A running `ui apiserver` on a free loopback port, stopped with SIGTERM by `stop` (and
/// killed if dropped).
pub struct Server {
    child: Child,
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// The kubeconfig it wrote (in the user's temp dir).
    pub kubeconfig: PathBuf,
    /// The audience of its tokens (`univrs:<cluster id>`).
    pub audience: String,
    /// Its data dir.
    pub data: PathBuf,
    /// The user whose identity the kubeconfig authenticates as.
    config_dir: PathBuf,
}

impl Server {
    /// Starts `ui apiserver` on `data`, writing its kubeconfig to the user's temp dir.
    pub fn start(u: &User, data: &Path) -> Self {
        Self::spawn(u, data, "127.0.0.1:0", &[], Stdio::null())
    }

    /// Starts `ui apiserver` on `data` listening on `listen` (port 0: any free port), with
    /// `extra` arguments; its stderr goes to the test's, so a failure shows what it said.
    pub fn start_with(u: &User, data: &Path, listen: &str, extra: &[&str]) -> Self {
        Self::spawn(u, data, listen, extra, Stdio::inherit())
    }

    /// Starts `ui apiserver` under `prlimit` limits (e.g. `--as=BYTES`, `--nofile=N`), so a
    /// test can show that what it throws at the server stays within them.
    pub fn start_limited(u: &User, data: &Path, prlimit: &[&str], extra: &[&str]) -> Self {
        Self::spawn_in(u, data, "127.0.0.1:0", extra, Stdio::inherit(), prlimit)
    }

    fn spawn(u: &User, data: &Path, listen: &str, extra: &[&str], stderr: Stdio) -> Self {
        Self::spawn_in(u, data, listen, extra, stderr, &[])
    }

    fn spawn_in(
        u: &User,
        data: &Path,
        listen: &str,
        extra: &[&str],
        stderr: Stdio,
        prlimit: &[&str],
    ) -> Self {
        // The kubeconfig authenticates as the user: it needs an identity (without a passphrase,
        // so kubectl's credential plugin runs unattended).
        if !u.config().join("identity").join("public.key").exists() {
            u.init_plain();
        }
        let kubeconfig = u.path("kubeconfig");
        let mut args = vec![
            "apiserver",
            "--data-dir",
            data.to_str().unwrap(),
            "--listen",
            listen,
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let mut command = u.cmd(&args);
        if !prlimit.is_empty() {
            let ui = ui_binary();
            let mut wrapped = Command::new("prlimit");
            wrapped.args(prlimit).arg("--").arg(ui).args(&args);
            for (k, v) in command.get_envs() {
                match v {
                    Some(v) => wrapped.env(k, v),
                    None => wrapped.env_remove(k),
                };
            }
            command = wrapped;
            command.stdin(Stdio::null());
        }
        let mut child = command.stdout(Stdio::piped()).stderr(stderr).spawn().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().expect("apiserver printed nothing").unwrap();
        let url = first.strip_prefix("listening on ").unwrap_or_else(|| panic!("{first}")).to_owned();
        assert!(url.starts_with("https://127.0.0.1:") || url.starts_with("http://127.0.0.1:"), "{first}");
        let second = lines.next().expect("apiserver printed no cluster").unwrap();
        let audience = second.strip_prefix("cluster: ").unwrap_or_else(|| panic!("{second}")).to_owned();
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Self { child, url, kubeconfig, audience, data: data.to_owned(), config_dir: u.config() }
    }

    /// The kubeconfig the server wrote for its own control-plane clients: it authenticates as
    /// the member key (a control-plane member may write any kind, e.g. Replicas).
    /// A kubeconfig of this cluster for `u`'s own identity (`ui config kubeconfig`), in `u`'s
    /// directory: what a second user writes to reach the same cluster as themselves.
    pub fn kubeconfig_for(&self, u: &User) -> PathBuf {
        kubeconfig_for(u, &self.url, &self.audience, &self.data)
    }

    pub fn member_kubeconfig(&self) -> PathBuf {
        self.data.join("member.kubeconfig")
    }

    /// A bearer token of the control-plane member, for this cluster.
    pub fn member_token(&self) -> String {
        let key = self.data.join("member.key");
        let out = Command::new(env!("CARGO_BIN_EXE_ui"))
            .args(["token", "--audience", &self.audience, "--key-file", key.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success(), "ui token: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    /// A bearer token of the user, for this cluster.
    pub fn token(&self) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_ui"))
            .args(["token", "--audience", &self.audience])
            .env("UNIVRS_CONFIG_DIR", &self.config_dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "ui token: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    /// An HTTP client that trusts the cluster's CA and reports every status as a response.
    pub fn agent(&self) -> ureq::Agent {
        let pem = std::fs::read(self.data.join("tls").join("ca.crt")).unwrap();
        let ca = ureq::tls::Certificate::from_pem(&pem).unwrap().to_owned();
        let tls = ureq::tls::TlsConfig::builder()
            .root_certs(ureq::tls::RootCerts::Specific(std::sync::Arc::new(vec![ca])))
            .build();
        ureq::Agent::config_builder()
            .tls_config(tls)
            .http_status_as_error(false)
            .timeout_global(Some(std::time::Duration::from_secs(20)))
            .build()
            .into()
    }

    /// Its process id (with `start_limited`, prlimit execs the server in place).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.url.rsplit(':').next().unwrap().parse().unwrap()
    }

    /// Kills the server with SIGKILL (no chance to flush or drain anything).
    pub fn kill_9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the server with SIGTERM and checks that it shut down cleanly.
    pub fn stop(mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "apiserver did not shut down cleanly: {status}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `ui up` with a local node (named `local` unless [`UpOptions`] say otherwise) running
/// replicas as plain processes, its data and kubeconfig in the user's temp dir; stopped (`ui
/// down`, which stops its node's replicas too, then killed) when dropped, a failed assertion
/// too.
pub struct Up {
    child: Child,
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// The audience of its tokens (`univrs:<cluster id>`).
    pub audience: String,
    /// Its data dir.
    pub data: PathBuf,
    /// The kubeconfig it wrote, for the user's identity.
    pub kubeconfig: PathBuf,
    config: PathBuf,
}

/// What [`Up::start_with`] changes from [`Up::start`]'s defaults.
#[derive(Default)]
pub struct UpOptions {
    /// The local node's name (`local`).
    pub node: Option<String>,
    /// Where the kubeconfig goes (`kubeconfig` in the user's temp dir).
    pub kubeconfig: Option<PathBuf>,
}

impl Up {
    /// Starts it and waits until its local node runs; the user gets an identity first if
    /// they have none.
    pub fn start(u: &User) -> Self {
        Self::start_with(u, UpOptions::default())
    }

    /// [`Up::start`] with another node name or kubeconfig path.
    pub fn start_with(u: &User, options: UpOptions) -> Self {
        if !u.config().join("identity").join("public.key").exists() {
            u.init_plain();
        }
        let data = u.path("data");
        let kubeconfig = options.kubeconfig.unwrap_or_else(|| u.path("kubeconfig"));
        let node = options.node.unwrap_or_else(|| "local".to_owned());
        let mut child = u
            .up_cmd(&data, &kubeconfig, &["--node-name", &node, "--runtime", "process"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines().map_while(Result::ok);
        // Owned before anything can fail: dropped, it stops what was started.
        let mut up =
            Self { child, url: String::new(), audience: String::new(), data, kubeconfig, config: u.config() };
        let first = lines.next().expect("ui up printed nothing");
        up.url = first.strip_prefix("listening on ").unwrap_or_else(|| panic!("{first}")).to_owned();
        let second = lines.next().expect("ui up printed no cluster");
        up.audience = second.strip_prefix("cluster: ").unwrap_or_else(|| panic!("{second}")).to_owned();
        let local = format!("local node {node} ");
        lines.find(|l| l.starts_with(&local)).expect("ui up says how its local node runs");
        // Keep draining stdout so that it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        up
    }

    /// `ui ARGS --kubeconfig` this cluster's, as `u`.
    pub fn ui(&self, u: &User, args: &[&str]) -> Run {
        let mut all = args.to_vec();
        all.extend(["--kubeconfig", self.kubeconfig.to_str().unwrap()]);
        u.run(&all)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = Command::new(ui_binary())
            .args(["down", "--data-dir", self.data.to_str().unwrap(), "--timeout", "60"])
            .env("UNIVRS_CONFIG_DIR", &self.config)
            .stdout(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `method url` with `authorization` (empty: none) and a `content_type` body; returns the
/// status and the body as text. For tests that speak to the API without a client library.
pub fn send(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    authorization: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (u16, String) {
    let (code, _, text) = send_for_header(agent, method, url, authorization, content_type, body, "");
    (code, text)
}

/// [`send`], with the value of the response's header `header` too (`None` when absent).
pub fn send_for_header(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    authorization: &str,
    content_type: &str,
    body: Vec<u8>,
    header: &str,
) -> (u16, Option<String>, String) {
    let request = ureq::http::Request::builder().method(method).uri(url).header("content-type", content_type);
    let request =
        if authorization.is_empty() { request } else { request.header("authorization", authorization) };
    let mut response =
        agent.run(request.body(body).unwrap()).unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let value = match header {
        "" => None,
        name => response.headers().get(name).map(|v| v.to_str().unwrap_or_default().to_owned()),
    };
    let text = response.body_mut().with_config().limit(64 << 20).read_to_string().unwrap_or_default();
    (response.status().as_u16(), value, text)
}

/// A loopback port that is free and that no other test takes, for a server that is told its
/// port (one that must come back on the same port after a restart, or a member whose peers
/// must know its address before it starts).
///
/// A port the kernel picked (`:0`) can be handed out again as the source port of any other
/// connection on this machine before the process it is meant for binds it — and a process that
/// binds it seconds later (a member waiting to be added) loses it often enough to fail a run.
/// So the port is taken below the kernel's ephemeral range (which outgoing connections never
/// use), and reserved for this run with a mark under the temp dir that other test processes
/// respect (a mark older than an hour is from a run long gone).
pub fn free_port() -> u16 {
    const FIRST: u32 = 10_000;
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    if ephemeral_low <= FIRST + 1_000 {
        return std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    }
    let marks = std::env::temp_dir().join("univrs-test-ports");
    if std::fs::create_dir(&marks).is_ok() {
        // Ports are the machine's: every user's test runs mark them here (sticky, as /tmp).
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&marks, std::fs::Permissions::from_mode(0o1777));
    }
    let span = ephemeral_low - FIRST;
    let start = {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.finish() as u32 % span
    };
    for i in 0..span {
        let port = (FIRST + (start + i) % span) as u16;
        let mark = marks.join(port.to_string());
        let stale = std::fs::metadata(&mark)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > std::time::Duration::from_secs(3600)));
        if stale {
            let _ = std::fs::remove_file(&mark);
        }
        if std::fs::OpenOptions::new().write(true).create_new(true).open(&mark).is_err() {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
            && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok()
        {
            return port;
        }
    }
    panic!(
        "no free port below the ephemeral range ({FIRST}..{ephemeral_low}) is left unmarked in {}",
        marks.display()
    )
}

/// The real kubectl with a kubeconfig and its own cache dir (OpenAPI and discovery are cached
/// there, so tests never share what they fetched).
pub struct Kubectl {
    pub kubeconfig: PathBuf,
    pub cache: PathBuf,
}

/// The result of one kubectl run.
pub struct Out {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Kubectl {
    pub fn run(&self, args: &[&str]) -> Out {
        let out = Command::new("kubectl")
            .args(args)
            .arg("--cache-dir")
            .arg(&self.cache)
            .env("KUBECONFIG", &self.kubeconfig)
            .output()
            .expect("kubectl is installed");
        Out {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.ok, "kubectl {args:?} failed:\n{}{}", out.stdout, out.stderr);
        out.stdout
    }

    #[track_caller]
    pub fn fails(&self, args: &[&str], needle: &str) {
        let out = self.run(args);
        assert!(!out.ok, "kubectl {args:?} succeeded:\n{}", out.stdout);
        assert!(out.stderr.contains(needle), "kubectl {args:?}: stderr lacks {needle:?}:\n{}", out.stderr);
    }
}

/// `ui controllers run` as the control-plane member, with short leases, retries and eviction
/// timeout for tests.
pub struct Controllers {
    child: Child,
    pub identity: String,
    pub metrics: String,
}

impl Controllers {
    pub fn start(u: &User, server: &Server) -> Self {
        Self::start_with(u, server, &[])
    }

    /// As `start`, with more flags (later ones win).
    pub fn start_with(u: &User, server: &Server, extra: &[&str]) -> Self {
        let kubeconfig = server.member_kubeconfig();
        let mut args = vec![
            "controllers",
            "run",
            // The controllers authenticate as the control-plane member.
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--metrics-addr",
            "127.0.0.1:0",
            "--lease-duration",
            "4",
            "--lease-renew",
            "1",
            "--retry-unschedulable",
            "1",
            "--eviction-timeout",
            "1",
            // Metering, spending, reputation sampled every second (not every 10).
            "--credits-every",
            "1",
            "--metering-period",
            "2",
            "--reputation-every",
            "1",
            "--reputation-write-every",
            "1",
        ];
        args.extend_from_slice(extra);
        let mut child = u.cmd(&args).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().expect("controllers printed nothing").unwrap();
        let metrics = first.strip_prefix("metrics on ").unwrap_or_else(|| panic!("{first}")).to_owned();
        let second = lines.next().expect("controllers printed one line").unwrap();
        let identity = second.rsplit_once("(as ").map(|(_, id)| id.trim_end_matches(')').to_owned()).unwrap();
        std::thread::spawn(move || for _ in lines {});
        Self { child, identity, metrics }
    }

    pub fn metrics(&self) -> String {
        ureq::get(&self.metrics).call().unwrap().body_mut().read_to_string().unwrap()
    }

    /// SIGTERM, then a clean exit.
    pub fn stop(&mut self) {
        let _ = std::process::Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "controllers did not shut down cleanly: {status}");
    }

    pub fn kill_9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Controllers {
    fn drop(&mut self) {
        self.kill_9();
    }
}

/// Polls `check` until it returns Ok, or panics after `secs` with `what` and the last state.
#[track_caller]
pub fn wait_for<T>(secs: u64, what: &str, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        match check() {
            Ok(t) => return t,
            Err(last) if std::time::Instant::now() >= deadline => {
                panic!("timed out waiting for {what}; last seen: {last}")
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(200)),
        }
    }
}

/// kubectl's output without terminal colors.
pub fn plain(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `ui config kubeconfig` as `u`, for the cluster at `url` (`audience`) whose data dir `data`
/// holds its CA: a second user's own way in. Returns the kubeconfig's path, in `u`'s directory.
pub fn kubeconfig_for(u: &User, url: &str, audience: &str, data: &Path) -> PathBuf {
    let ca = data.join("tls").join("ca.crt");
    let kubeconfig = u.path("kubeconfig");
    u.run(&[
        "config",
        "kubeconfig",
        "--server",
        url,
        "--certificate-authority",
        ca.to_str().unwrap(),
        "--cluster",
        audience,
        "--out",
        kubeconfig.to_str().unwrap(),
    ])
    .ok();
    kubeconfig
}

/// Writes `text` to `file` in `u`'s directory; its path.
pub fn write(u: &User, file: &str, text: &str) -> String {
    let path = u.path(file);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

/// Writes `text` to `file` signed by the user (`ui sign --in-place`); its path.
pub fn write_signed(u: &User, file: &str, text: &str) -> String {
    let path = write(u, file, text);
    u.run(&["sign", "-f", &path, "--in-place"]).ok();
    path
}

/// Containers need root; CI runs as root. Elsewhere the container tests say so and fail loudly
/// rather than pass without having run anything.
pub fn require_root() {
    let uid = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:").map(|r| r.split_whitespace().next().unwrap().to_owned()))
        .unwrap();
    assert_eq!(uid, "0", "these tests run containers and need root (CI runs as root)");
}

/// The pids of processes whose command line mentions `dir` (the shims of a node's runs).
pub fn processes_under(dir: &Path) -> Vec<i32> {
    let needle = dir.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&needle))
        })
        .collect()
}

/// Stops every shim of the node in `dir` (SIGTERM: each stops its container, SIGKILL after its
/// grace period) and waits for them, so a test leaves no container behind.
pub fn stop_shims(dir: &Path) {
    for pid in processes_under(dir) {
        let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !processes_under(dir).is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
