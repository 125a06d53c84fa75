//! `ui mcp` against a real `ui apiserver`, driven by the official Python MCP SDK (`mcp`
//! 2.3.0): the checks are in `tests/python/mcp_client.py` (initialize, tools and their
//! schemas and annotations, resource templates, every tool, malformed arguments, an unknown
//! tool and an oversized manifest refused with nothing changed, a subscription that sees the
//! user's own `ui apply`), over stdio (the SDK launches `ui --config-dir AGENT mcp`) and over
//! Streamable HTTP (`ui mcp --listen`, with its bearer token and Host/Origin checks), at the
//! protocol version the SDK negotiates by itself (2026-07-28) and at the handshake one.
//! `approval` waiting for a decision is also checked on an Approval the control plane's member
//! writes and decides with kubectl.
//!
//! Most tests give the agent a grant that lets it do everything on its own (`autonomous`,
//! secrets revealed), to exercise the tools; `an_agent_through_mcp_is_bound_by_the_grant_its_user_signed`
//! makes the agent with `ui agent init` and a grant that is not everything: an autonomous
//! write is the user's, a forbidden delete is refused naming its rule, an approval-gated write
//! waits for `ui approve` and is then exactly what was asked, a denied one never happens, an
//! expired grant refuses. (The same refusals through `ui` and kubectl: `tests/agents.rs`.)
//! Needs `python3` with `pip install 'mcp==2.3.0'` and kubectl; without them the tests fail,
//! never skip.

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use support::{Server, Up, UpOptions, User, free_port, wait_for, workspace};

/// The user (whose kubeconfig `Server::start` wrote), the server, and an agent of the user.
struct Setup {
    user: User,
    agent: User,
    server: Server,
}

fn setup() -> Setup {
    let user = User::new();
    let server = Server::start(&user, &user.path("data"));
    std::fs::copy(&server.kubeconfig, user.config().join("kubeconfig")).unwrap();
    let user_did =
        user.run(&["identity", "show", "-o", "json"]).ok().json()["did"].as_str().unwrap().to_owned();
    let agent = User::new();
    agent.init_plain();
    let kubeconfig = server.kubeconfig_for(&agent);
    std::fs::copy(&kubeconfig, agent.config().join("kubeconfig")).unwrap();
    // What `ui agent init` writes: whose agent this is, under which grant.
    let config = agent.config().join("config.toml");
    let mut text = std::fs::read_to_string(&config).unwrap_or_default();
    text.push_str(&format!("\n[agent]\nowner = \"{user_did}\"\ngrant = \"mcp-test\"\n"));
    std::fs::write(&config, text).unwrap();
    let agent_did =
        agent.run(&["identity", "show", "-o", "json"]).ok().json()["did"].as_str().unwrap().to_owned();
    let acceptance = agent
        .run(&["agent", "accept", "--owner", &user_did, "--grant", "mcp-test"])
        .ok()
        .stdout
        .trim()
        .to_owned();
    let grant = support::write(
        &user,
        "grant.yaml",
        &format!(
            "apiVersion: univrs.io/v1\nkind: AgentGrant\nmetadata:\n  name: mcp-test\nspec:\n  agent: {agent_did}\n  acceptance: {acceptance}\n  \
             expires: \"2099-01-01T00:00:00Z\"\n  revealEnv: true\n  rules:\n    \
             - verbs: [get, list, watch, logs, create, update, scale, delete]\n      kinds: [\"*\"]\n      \
             namespaces: [\"*\"]\n      mode: autonomous\n"
        ),
    );
    user.run(&["apply", "-f", &grant]).ok();
    Setup { user, agent, server }
}

/// Runs the Python checks with `extra` arguments; asserts they all passed.
fn python(s: &Setup, extra: &[&str]) {
    let member = s.server.member_kubeconfig();
    let mut args = vec!["--member-kubeconfig", member.to_str().unwrap()];
    args.extend_from_slice(extra);
    python_in(&s.agent.config(), &s.user.config(), &args);
}

/// Runs the Python checks with `ui mcp` in `agent_dir`, the other user's changes made in
/// `user_dir`.
fn python_in(agent_dir: &Path, user_dir: &Path, extra: &[&str]) {
    let script = workspace().join("tests/python/mcp_client.py");
    let out = Command::new("python3")
        .arg(&script)
        .args(["--ui", env!("CARGO_BIN_EXE_ui")])
        .args(["--agent-dir", agent_dir.to_str().unwrap()])
        .args(["--user-dir", user_dir.to_str().unwrap()])
        .args(extra)
        .env_remove("UNIVRS_CONFIG_DIR")
        .env_remove("UNIVRS_PASSPHRASE")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .output()
        .expect("python3 is installed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code() != Some(3),
        "the Python MCP SDK is missing: pip install 'mcp==2.3.0' (./dev deps test)\n{stderr}"
    );
    assert!(
        out.status.success(),
        "{} {extra:?} failed ({}):\n{stdout}\n{stderr}",
        script.display(),
        out.status
    );
    assert!(stdout.contains("all checks passed"), "{stdout}\n{stderr}");
    // Which protocol version the SDK and rmcp agreed on, in the test's output.
    eprintln!("{}", stdout.lines().find(|l| l.starts_with("negotiated")).unwrap_or("no version line"));
}

/// `ui mcp --listen 127.0.0.1:PORT` in the agent's directory, until dropped.
struct Http {
    child: Child,
    url: String,
    token_file: String,
}

impl Drop for Http {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn listen(s: &Setup) -> Http {
    let port = free_port();
    let token_file = s.agent.path("mcp-token");
    let mut child = s
        .agent
        .cmd(&["mcp", "--listen", &format!("127.0.0.1:{port}"), "--token-file", token_file.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // It says where it serves and where the token is once it listens.
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let first = lines.next().expect("ui mcp --listen printed nothing").unwrap();
    assert!(first.contains(&format!("http://127.0.0.1:{port}/mcp")), "{first}");
    assert!(first.contains(token_file.to_str().unwrap()), "{first}");
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            eprintln!("ui mcp: {line}");
        }
    });
    assert_eq!(support::mode(&token_file) & 0o777, 0o600, "the generated token file is private");
    wait_for(10, "the token file", || match Path::new(&token_file).exists() {
        true => Ok(()),
        false => Err("missing".into()),
    });
    Http {
        child,
        url: format!("http://127.0.0.1:{port}/mcp"),
        token_file: token_file.to_str().unwrap().to_owned(),
    }
}

#[test]
fn an_agent_uses_every_tool_and_resource_over_stdio() {
    let s = setup();
    python(&s, &["--mode", "stdio"]);
    s.server.stop();
}

#[test]
fn an_agent_uses_every_tool_and_resource_over_stdio_at_the_handshake_protocol() {
    let s = setup();
    python(&s, &["--mode", "stdio", "--protocol", "legacy"]);
    s.server.stop();
}

#[test]
fn an_agent_uses_every_tool_and_resource_over_streamable_http() {
    let s = setup();
    let http = listen(&s);
    python(&s, &["--mode", "http", "--url", &http.url, "--token-file", &http.token_file]);
    python(
        &s,
        &["--mode", "http", "--url", &http.url, "--token-file", &http.token_file, "--protocol", "legacy"],
    );
    drop(http);
    s.server.stop();
}

#[test]
fn ui_mcp_listens_on_loopback_only() {
    let agent = User::new();
    agent.init_plain();
    agent.run(&["mcp", "--listen", "0.0.0.0:8765"]).fails_with(&["not a loopback address"]);
}

/// `ui up` (the apiserver, every controller and a local node `n1` running replicas as plain
/// processes) for `user`, its kubeconfig in the user's config dir.
fn up(user: &User) -> Up {
    Up::start_with(
        user,
        UpOptions { node: Some("n1".into()), kubeconfig: Some(user.config().join("kubeconfig")) },
    )
}

#[test]
fn an_owner_reads_the_status_and_logs_of_a_running_replica() {
    // `ui mcp` in the user's own directory: the owner of the workload reads its output (an
    // agent reads it only as its grant allows, which is the apiserver's to decide).
    let user = User::new();
    let up = up(&user);
    let dir = user.config();
    python_in(&dir, &dir, &["--mode", "stdio", "--with-node", "--only", "initialize,running_replica"]);
    drop(up);
}

/// Against `ui up`, an agent made with `ui agent init`, under a grant that is not "everything": through MCP,
/// an autonomous write is the user's, a forbidden delete is refused naming its rule, an
/// approval-gated write waits until the user runs `ui approve` and is then exactly what was
/// asked, a denied one never happens, an expired grant refuses (`GRANT_CHECKS` in the script).
#[test]
fn an_agent_through_mcp_is_bound_by_the_grant_its_user_signed() {
    let user = User::new();
    let up = up(&user);
    let made = user.run(&["agent", "init", "claude", "-o", "json"]).ok().json();
    let agent_dir = std::path::PathBuf::from(made["dir"].as_str().unwrap());
    let agent_did = made["did"].as_str().unwrap();
    let acceptance = made["acceptance"].as_str().unwrap();
    let rules = concat!(
        "  - {verbs: [get, list, watch, logs], kinds: [\"*\"], namespaces: [\"*\"], mode: autonomous}\n",
        "  - {verbs: [create, update, scale], kinds: [Workload], namespaces: [sandbox], mode: autonomous}\n",
        "  - {verbs: [create, update], kinds: [Workload], namespaces: [default], mode: approval}\n",
        "  - {verbs: [delete], kinds: [Workload], namespaces: [sandbox], mode: forbidden}\n",
    );
    let grant = support::write(
        &user,
        "grant.yaml",
        &format!(
            "apiVersion: univrs.io/v1\nkind: AgentGrant\nmetadata:\n  name: claude\nspec:\n  agent: {agent_did}\n  acceptance: {acceptance}\n  expires: \"2099-01-01T00:00:00Z\"\n  rules:\n{rules}"
        ),
    );
    user.run(&["apply", "-f", &grant]).ok();
    python_in(&agent_dir, &user.config(), &["--mode", "stdio", "--grant-file", &grant]);
    drop(up);
}
