//! `ui dashboard` in a real browser: Debian's headless Chromium, driven through the Chrome
//! DevTools Protocol, against `ui up` with a workload. The browser opens the URL the dashboard
//! printed (with its token: a cookie, then the page); the page shows the workload with its
//! replicas and their phases, then follows a `ui scale` without being reloaded (a mark left in
//! the page's JavaScript survives); markup written into an object (a workload's rootfs name) is shown
//! as text, never run; a screenshot is saved as a test artifact
//! (`target/test-artifacts/dashboard.png`). The dashboard's guards are checked from outside: a
//! foreign Host and any write are refused, a request without the token's cookie is refused, an
//! address other than 127.0.0.1 or [::1] is not listened on, and the view never carries an env
//! value.
//!
//! Needs `/usr/bin/chromium` (Debian's `chromium`, installed by `./dev test`); without it the
//! test fails, never skips. The replicas run as plain processes (`ui up --runtime process`), so
//! no root is needed: what runs them is not what is tested here.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};
use support::{Up, User, wait_for};

const CHROMIUM: &str = "/usr/bin/chromium";

/// `ui dashboard --listen 127.0.0.1:0`, until dropped.
struct Dashboard {
    child: Child,
    /// `http://127.0.0.1:PORT/?token=TOKEN`, as printed.
    url: String,
    /// `127.0.0.1:PORT`.
    addr: String,
    /// The token.
    token: String,
}

impl Dashboard {
    fn start(u: &User, up: &Up) -> Self {
        let mut child = u
            .cmd(&["dashboard", "--listen", "127.0.0.1:0", "--kubeconfig", up.kubeconfig.to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        // The guard first: a panic below still stops `ui dashboard`.
        let mut me = Self { child, url: String::new(), addr: String::new(), token: String::new() };
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next().expect("ui dashboard printed nothing").unwrap();
        let url = first.strip_prefix("dashboard on ").unwrap_or_else(|| panic!("{first}")).to_owned();
        let (base, token) = url.split_once("/?token=").unwrap_or_else(|| panic!("no token: {first}"));
        assert!(base.starts_with("http://127.0.0.1:"), "{first}");
        assert!(token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit()), "{first}");
        std::thread::spawn(move || for _ in lines {});
        me.addr = base.trim_start_matches("http://").to_owned();
        me.token = token.to_owned();
        me.url = url;
        me
    }

    /// The cookie the token gives.
    fn cookie(&self) -> String {
        let port = self.addr.rsplit(':').next().unwrap();
        format!("univrs_dashboard_{port}={}", self.token)
    }

    /// Sends `method path` with `Host: host` (and the token's cookie) as raw HTTP/1.1; the
    /// status and the whole answer.
    fn raw(&self, method: &str, path: &str, host: &str) -> (u16, String) {
        self.raw_with(method, path, host, &format!("Cookie: {}\r\n", self.cookie()))
    }

    /// Sends `method path` with `Host: host` and `headers` (each line ending in CRLF).
    fn raw_with(&self, method: &str, path: &str, host: &str, headers: &str) -> (u16, String) {
        let mut s = TcpStream::connect(&self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{headers}Connection: close\r\nContent-Length: 0\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        let status = answer.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        (status, answer)
    }
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Headless Chromium in its own process group (its helpers included), killed whole on drop.
struct Chromium {
    child: Child,
    _profile: tempfile::TempDir,
    /// The DevTools HTTP endpoint, `127.0.0.1:PORT`.
    devtools: String,
}

impl Chromium {
    fn start() -> Self {
        assert!(
            Path::new(CHROMIUM).exists(),
            "{CHROMIUM} is missing: the dashboard test needs Debian's chromium (./dev deps test installs it)"
        );
        let profile = tempfile::tempdir().unwrap();
        let child = Command::new(CHROMIUM)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-extensions",
                "--disable-sync",
                "--no-proxy-server",
                "--hide-scrollbars",
                "--window-size=1360,1000",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("chromium starts");
        let mut me = Self { child, _profile: profile, devtools: String::new() };
        // Chromium writes the port it took (and the browser's path) once it listens.
        let file = me._profile.path().join("DevToolsActivePort");
        let port = wait_for(90, "chromium's DevToolsActivePort", || {
            let text = std::fs::read_to_string(&file).map_err(|e| e.to_string())?;
            text.lines().next().and_then(|p| p.trim().parse::<u16>().ok()).ok_or(text)
        });
        me.devtools = format!("127.0.0.1:{port}");
        me
    }

    /// A DevTools session on the browser's first page.
    fn page(&self) -> Cdp {
        let devtools = &self.devtools;
        // DevTools is on loopback: no proxy from the environment (HTTP_PROXY) is used.
        let agent: ureq::Agent = ureq::Agent::config_builder().proxy(None).build().into();
        let ws = wait_for(60, "a page target", || {
            let mut answer =
                agent.get(&format!("http://{devtools}/json/list")).call().map_err(|e| e.to_string())?;
            let text = answer.body_mut().read_to_string().map_err(|e| e.to_string())?;
            let targets: Value = serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
            targets
                .as_array()
                .into_iter()
                .flatten()
                .find(|t| t["type"] == "page")
                .and_then(|t| t["webSocketDebuggerUrl"].as_str().map(str::to_owned))
                .ok_or_else(|| targets.to_string())
        });
        let stream = TcpStream::connect(devtools).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let (socket, _) = tungstenite::client(ws.as_str(), stream).expect("a DevTools WebSocket");
        Cdp { socket, next: 0 }
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        // The whole group: the browser and every helper it started.
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
    }
}

/// A Chrome DevTools Protocol session.
struct Cdp {
    socket: tungstenite::WebSocket<TcpStream>,
    next: u64,
}

impl Cdp {
    /// Calls `method` and returns its result (events that come meanwhile are skipped).
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        let message = json!({ "id": id, "method": method, "params": params }).to_string();
        self.socket.send(tungstenite::Message::text(message)).unwrap();
        loop {
            let message = self.socket.read().unwrap_or_else(|e| panic!("{method}: {e}"));
            let Ok(text) = message.to_text() else { continue };
            let answer: Value = serde_json::from_str(text).unwrap();
            if answer["id"] == id {
                assert!(answer.get("error").is_none(), "{method}: {answer}");
                return answer["result"].clone();
            }
        }
    }

    /// The value of the JavaScript expression `js` in the page.
    fn eval(&mut self, js: &str) -> Value {
        let result = self.call("Runtime.evaluate", json!({ "expression": js, "returnByValue": true }));
        assert!(result.get("exceptionDetails").is_none(), "{js}: {result}");
        result["result"]["value"].clone()
    }
}

/// What the page shows of `default/web`: its counts and replicas, the page's last update, and
/// the mark a test left in the page (gone if the page was reloaded).
const READ_WEB: &str = r#"JSON.stringify((() => {
  const w = document.querySelector('[data-workload="default/web"]');
  const updated = document.getElementById('updated');
  return {
    desired: w && w.dataset.desired,
    ready: w && w.dataset.ready,
    phases: w ? [...w.querySelectorAll('[data-replica]')].map((r) => r.dataset.phase) : [],
    nodes: w ? [...w.querySelectorAll('[data-replica]')].map((r) => r.dataset.node) : [],
    updated: updated && updated.textContent,
    mark: window.__testMark || null,
  };
})())"#;

fn shown(cdp: &mut Cdp) -> Value {
    serde_json::from_str(cdp.eval(READ_WEB).as_str().unwrap()).unwrap()
}

/// Waits until the page shows `web` wanting `n` replicas with `n` running.
#[track_caller]
fn wait_shown_running(cdp: &mut Cdp, n: usize) -> Value {
    wait_for(180, &format!("the page to show web with {n} replicas running"), || {
        let s = shown(cdp);
        let phases = s["phases"].as_array().cloned().unwrap_or_default();
        let running = phases.iter().filter(|p| *p == "Running").count();
        if s["desired"].as_str() == Some(n.to_string().as_str())
            && s["ready"].as_str() == Some(n.to_string().as_str())
            && phases.len() == n
            && running == n
        {
            Ok(s)
        } else {
            Err(s.to_string())
        }
    })
}

/// Where test artifacts go: `target/test-artifacts/` (the target dir holds the `ui` binary).
fn artifacts() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| {
        // target/debug/ui → target
        Path::new(env!("CARGO_BIN_EXE_ui")).parent().unwrap().parent().unwrap().to_path_buf()
    });
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn the_dashboard_shows_a_workload_and_follows_its_scaling_without_a_reload() {
    let u = User::new();
    let up = Up::start(&u);
    let manifest = support::write(
        &u,
        "web.yaml",
        "apiVersion: univrs.io/v1\nkind: Workload\nmetadata:\n  name: web\nspec:\n  replicas: 2\n  rootfs: busybox\n  \
         command: [\"/bin/sh\", \"-c\", \"sleep 600\"]\n  env:\n    - name: GREETING\n      value: env-value-never-shown\n  \
         resources:\n    cpu: 100m\n    memory: 32Mi\n",
    );
    // Two policies: one admits the local node (its offer is in DE), one does not; a workload
    // under the second waits, and the page says why.
    let policies = support::write(
        &u,
        "policies.yaml",
        "apiVersion: univrs.io/v1\nkind: TrustPolicy\nmetadata:\n  name: germany\nspec:\n  allowedJurisdictions: [DE]\n---\n\
         apiVersion: univrs.io/v1\nkind: TrustPolicy\nmetadata:\n  name: france\nspec:\n  allowedJurisdictions: [FR]\n---\n\
         apiVersion: univrs.io/v1\nkind: Workload\nmetadata:\n  name: paris\nspec:\n  replicas: 1\n  rootfs: busybox\n  \
         command: [\"sleep\", \"600\"]\n  trustPolicy: france\n---\n\
         apiVersion: univrs.io/v1\nkind: Workload\nmetadata:\n  name: markup\nspec:\n  replicas: 0\n  \
         rootfs: \"<img src=x onerror=window.__xss=1>\"\n",
    );
    up.ui(&u, &["apply", "-f", &manifest]).ok();
    up.ui(&u, &["apply", "-f", &policies]).ok();

    let dashboard = Dashboard::start(&u, &up);
    let chromium = Chromium::start();
    let mut cdp = chromium.page();
    cdp.call("Page.enable", json!({}));
    cdp.call(
        "Emulation.setDeviceMetricsOverride",
        json!({ "width": 1360, "height": 1000, "deviceScaleFactor": 1, "mobile": false }),
    );
    cdp.call("Page.navigate", json!({ "url": dashboard.url }));

    let before = wait_shown_running(&mut cdp, 2);
    assert_eq!(before["nodes"], json!(["local", "local"]), "{before}");
    assert!(before["updated"].as_str().unwrap().starts_with("last update "), "{before}");
    // A mark in the page's JavaScript state: a reload would lose it.
    cdp.eval("window.__testMark = 'no-reload'; true");
    let started = Instant::now();
    up.ui(&u, &["scale", "workload", "web", "3"]).ok();
    let after = wait_shown_running(&mut cdp, 3);
    println!("scale to 3 shown running in the page after {:?}", started.elapsed());
    assert_eq!(after["mark"], "no-reload", "the page was reloaded: {after}");

    // The rest of the page: why paris waits, which nodes each policy admits, the node, the
    // member that leads, the watches.
    let page = wait_for(120, "the page to show why paris waits", || {
        let page = cdp.eval(
            r#"JSON.stringify({
              why: (document.querySelector('[data-workload="default/paris"] .pending-why') || {}).textContent || null,
              paris: [...document.querySelectorAll('[data-workload="default/paris"] [data-replica]')].map((r) => r.dataset.phase),
              germany: [...document.querySelectorAll('[data-policy="default/germany"] [data-admits]')].map((n) => n.dataset.admits),
              france: [...document.querySelectorAll('[data-policy="default/france"] [data-admits]')].map((n) => n.dataset.admits),
              germanyAdmitted: (document.querySelector('[data-policy="default/germany"] [data-admitted]') || {}).textContent || null,
              franceAdmitted: (document.querySelector('[data-policy="default/france"] [data-admitted]') || {}).textContent || null,
              franceRejected: [...document.querySelectorAll('[data-policy="default/france"] [data-rejected]')].map((n) => n.dataset.rejected),
              node: !!document.querySelector('[data-node="local"][data-ready="true"]'),
              readySince: (document.querySelector('.card.node[data-node="local"]') || { textContent: '' }).textContent.includes('ready since'),
              leader: !!document.querySelector('#members tr.leader'),
              membersRead: !!(document.querySelector('[data-members-read]') || { dataset: {} }).dataset.membersRead,
              sources: document.querySelectorAll('[data-source]').length,
              watching: [...document.querySelectorAll('[data-source]')].every((s) => s.classList.contains('watching')),
              listing: document.querySelectorAll('[data-listing]').length,
              banner: document.getElementById('banner').hidden ? null : document.getElementById('banner').textContent,
              markup: (document.querySelector('[data-workload="default/markup"]') || { textContent: '' }).textContent,
              imgs: document.querySelectorAll('main img').length,
              xss: window.__xss === undefined ? null : window.__xss,
            })"#,
        );
        let page: Value = serde_json::from_str(page.as_str().unwrap()).unwrap();
        match page["why"].as_str() {
            Some(why) if why.contains("jurisdiction not allowed") => Ok(page),
            _ => Err(page.to_string()),
        }
    });
    assert_eq!(page["paris"], json!(["Pending"]), "{page}");
    assert_eq!(page["germany"], json!(["local"]), "{page}");
    assert_eq!(page["france"], json!([]), "{page}");
    assert_eq!(page["germanyAdmitted"], "1 of 1", "{page}");
    assert_eq!(page["franceAdmitted"], "0 of 1", "{page}");
    assert_eq!(page["franceRejected"], json!(["jurisdiction not allowed"]), "{page}");
    assert_eq!(
        (&page["node"], &page["readySince"], &page["leader"], &page["membersRead"], &page["watching"]),
        (&json!(true), &json!(true), &json!(true), &json!(true), &json!(true)),
        "{page}"
    );
    // Every kind followed, each with its watch: workloads, replicas, nodes, nodeoffers,
    // trustpolicies, reputations, attestations, accounts, creditgrants, auditevents.
    assert_eq!(page["sources"], 10, "{page}");
    assert_eq!((&page["listing"], &page["banner"]), (&json!(0), &Value::Null), "{page}");
    // Markup in an object is text: shown as written, never run.
    assert!(page["markup"].as_str().unwrap().contains("<img src=x onerror=window.__xss=1>"), "{page}");
    assert_eq!((&page["xss"], &page["imgs"]), (&Value::Null, &json!(0)), "{page}");

    // The screenshot, of the whole page.
    let metrics = cdp.call("Page.getLayoutMetrics", json!({}));
    let height = metrics["cssContentSize"]["height"].as_f64().unwrap_or(1000.0).clamp(600.0, 4000.0);
    cdp.call(
        "Emulation.setDeviceMetricsOverride",
        json!({ "width": 1360, "height": height as u64, "deviceScaleFactor": 1, "mobile": false }),
    );
    let shot = cdp.call("Page.captureScreenshot", json!({ "format": "png" }));
    let png = base64::engine::general_purpose::STANDARD.decode(shot["data"].as_str().unwrap()).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    let path = artifacts().join("dashboard.png");
    std::fs::write(&path, &png).unwrap();
    println!("screenshot: {}", path.display());

    // The guards, from outside the browser.
    let (status, answer) = dashboard.raw("GET", "/", "evil.example");
    assert_eq!(status, 403, "{answer}");
    let port = dashboard.addr.rsplit(':').next().unwrap();
    let (status, answer) = dashboard.raw("GET", "/api/view", &format!("evil.example:{port}"));
    assert_eq!(status, 403, "{answer}");
    for method in ["POST", "PUT", "PATCH", "DELETE"] {
        let (status, answer) = dashboard.raw_with(method, "/api/view", &dashboard.addr, "");
        assert_eq!(status, 405, "{method}: {answer}");
    }
    // Without the token's cookie: 401, for any user or process of this machine.
    for path in ["/", "/api/view", "/api/events", "/app.js"] {
        let (status, answer) = dashboard.raw_with("GET", path, &dashboard.addr, "");
        assert_eq!(status, 401, "{path}: {answer}");
        assert!(answer.contains("open the URL `ui dashboard` printed"), "{answer}");
    }
    let (status, answer) =
        dashboard.raw_with("GET", "/api/view", &dashboard.addr, "Cookie: univrs_dashboard_1=nope\r\n");
    assert_eq!(status, 401, "{answer}");
    // The token: a cookie, and the same path without it.
    let (status, answer) =
        dashboard.raw_with("GET", &format!("/?token={}", dashboard.token), &dashboard.addr, "");
    assert_eq!(status, 303, "{answer}");
    let lower = answer.to_ascii_lowercase();
    assert!(lower.contains("\r\nlocation: /\r\n"), "{answer}");
    assert!(
        answer.contains(&format!("{}; HttpOnly; SameSite=Strict; Path=/", dashboard.cookie())),
        "{answer}"
    );
    // A page of another origin may not read the API, cookie or not.
    let (status, answer) = dashboard.raw_with(
        "GET",
        "/api/view",
        &dashboard.addr,
        &format!("Cookie: {}\r\nSec-Fetch-Site: cross-site\r\nSec-Fetch-Mode: cors\r\n", dashboard.cookie()),
    );
    assert_eq!(status, 403, "{answer}");
    let (status, view) = dashboard.raw("GET", "/api/view", &dashboard.addr);
    assert_eq!(status, 200, "{view}");
    let lower = view.to_ascii_lowercase();
    assert!(lower.contains("content-security-policy: default-src 'self'"), "{view}");
    assert!(lower.contains("x-content-type-options: nosniff"), "{view}");
    assert!(!lower.contains("access-control-allow-origin"), "{view}");
    assert!(view.contains("\"name\":\"web\""), "{view}");
    assert!(!view.contains("env-value-never-shown"), "an env value in the view: {view}");
}

#[test]
fn the_dashboard_listens_only_on_loopback() {
    let u = User::new();
    u.init_plain();
    for addr in ["0.0.0.0:0", "[::]:8001"] {
        u.run(&["dashboard", "--listen", addr, "--server", "https://127.0.0.1:1"])
            .fails_with(&["not a loopback address", "serves this machine only"]);
    }
    // Loopback, but not a name the Host check lets in: refused at start, not 403 on each request.
    u.run(&["dashboard", "--listen", "127.0.0.2:8001", "--server", "https://127.0.0.1:1"])
        .fails_with(&["127.0.0.2", "127.0.0.1, [::1] or localhost"]);
}
