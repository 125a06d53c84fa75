//! `ui apply`, `get`, `describe`, `diff` and `delete` against a real `ui apiserver` on a real
//! port.

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use support::{Run, Server, User, copy_examples};

/// `ui ARGS --kubeconfig K`: the way a user names the cluster without touching their own.
fn ui(u: &User, server: &Server, args: &[&str]) -> Run {
    let mut all = args.to_vec();
    all.extend(["--kubeconfig", server.kubeconfig.to_str().unwrap()]);
    u.run(&all)
}

fn write(path: &Path, text: &str) -> String {
    std::fs::write(path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

fn workload(name: &str, namespace: &str, replicas: u32) -> String {
    format!(
        "apiVersion: univrs.io/v1\nkind: Workload\nmetadata:\n  name: {name}\n  namespace: {namespace}\n  labels:\n    app: {name}\n\
         spec:\n  replicas: {replicas}\n  rootfs: busybox\n  command: [\"/bin/true\"]\n  trustPolicy: eu-only\n"
    )
}

#[test]
fn apply_is_idempotent_and_get_diff_describe_and_delete_see_what_it_did() {
    let u = User::new();
    let server = Server::start(&u, &u.path("data"));
    let dir = u.path("manifests");
    copy_examples(&dir);
    let m = dir.to_str().unwrap();

    // Created, then unchanged.
    let first = ui(&u, &server, &["apply", "-f", m]).ok().stdout;
    for line in [
        "workload.univrs.io/hello created",
        "trustpolicy.univrs.io/eu-only created",
        "nodeoffer.univrs.io/berlin-1 created",
    ] {
        assert!(first.contains(line), "{first}");
    }
    let again = ui(&u, &server, &["apply", "-f", m]).ok().stdout;
    assert_eq!(again.lines().count(), first.lines().count(), "{again}");
    assert!(again.lines().all(|l| l.ends_with(" unchanged")), "{again}");
    let nothing = ui(&u, &server, &["diff", "-f", m]);
    assert_eq!((nothing.code, nothing.stdout.as_str()), (0, ""), "{}", nothing.stderr);

    // A changed file: diff says what, apply configures it, get shows it.
    let hello = dir.join("hello-workload.yaml");
    let text = std::fs::read_to_string(&hello).unwrap().replace("replicas: 2", "replicas: 3");
    std::fs::write(&hello, text).unwrap();
    let d = ui(&u, &server, &["diff", "-f", m]);
    assert_eq!(d.code, 1, "{}{}", d.stdout, d.stderr);
    assert!(d.stdout.contains("--- live/workload.univrs.io/default/hello\n"), "{}", d.stdout);
    assert!(d.stdout.contains("-  replicas: 2\n+  replicas: 3\n"), "{}", d.stdout);
    let applied = ui(&u, &server, &["apply", "-f", hello.to_str().unwrap(), "-o", "json"]).ok().json();
    assert_eq!(applied[0]["result"], "configured", "{applied}");
    assert_eq!(applied[0]["file"], hello.to_str().unwrap());
    let obj = ui(&u, &server, &["get", "workload", "hello", "-o", "json"]).ok().json();
    assert_eq!(obj["spec"]["replicas"], 3);
    assert_eq!(obj["metadata"]["generation"], 2);
    assert_eq!(ui(&u, &server, &["diff", "-f", m]).code, 0);

    // Every name kubectl accepts for a kind.
    for form in ["workloads", "workload", "wl", "Workload"] {
        let names = ui(&u, &server, &["get", form, "-o", "name"]).ok().stdout;
        assert_eq!(names, "workload.univrs.io/hello\nworkload.univrs.io/web\n", "ui get {form}");
    }
    let table = ui(&u, &server, &["get", "wl"]).ok().stdout;
    assert!(table.starts_with("NAME "), "{table}");
    assert!(table.lines().nth(1).is_some_and(|l| l.starts_with("hello ")), "{table}");
    let yaml = ui(&u, &server, &["get", "wl", "hello", "-o", "yaml"]).ok().stdout;
    assert!(yaml.contains("  name: hello\n") && yaml.contains("  replicas: 3\n"), "{yaml}");
    let list = ui(&u, &server, &["get", "wl", "-o", "json"]).ok().json();
    assert_eq!((list["kind"].as_str(), list["items"].as_array().map(Vec::len)), (Some("List"), Some(2)));
    let offers = ui(&u, &server, &["get", "offer", "-o", "name"]).ok().stdout;
    assert_eq!(offers, "nodeoffer.univrs.io/berlin-1\n");

    // Namespaces: -n, and -A with its NAMESPACE column.
    let team = write(&u.path("team.yaml"), &workload("api", "team", 1));
    ui(&u, &server, &["apply", "-f", &team]).ok();
    assert!(!ui(&u, &server, &["get", "wl"]).ok().stdout.contains("api"));
    assert!(ui(&u, &server, &["get", "wl", "-n", "team", "-o", "name"]).ok().stdout.contains("/api"));
    let all = ui(&u, &server, &["get", "wl", "-A"]).ok().stdout;
    assert!(all.starts_with("NAMESPACE   NAME"), "{all}");
    assert!(all.contains("\ndefault     hello") && all.contains("\nteam        api"), "{all}");

    // describe
    let text = ui(&u, &server, &["describe", "wl", "hello"]).ok().stdout;
    for needle in [
        "Name:         hello\n",
        "Namespace:    default\n",
        "Labels:       app=hello\n",
        "Spec:\n",
        "  replicas: 3\n",
    ] {
        assert!(text.contains(needle), "describe lacks {needle:?}:\n{text}");
    }

    // A new object diffs against nothing; a bad document is exit 2 with its place.
    let fresh = write(&u.path("fresh.yaml"), &workload("fresh", "default", 1));
    let d = ui(&u, &server, &["diff", "-f", &fresh]);
    assert_eq!(d.code, 1, "{}", d.stderr);
    assert!(d.stdout.contains("+kind: Workload\n") && d.stdout.contains("+  name: fresh\n"), "{}", d.stdout);
    let bad = write(&u.path("pod.yaml"), "apiVersion: univrs.io/v1\nkind: Pod\nmetadata:\n  name: p\n");
    let d = ui(&u, &server, &["diff", "-f", &bad]);
    assert_eq!(d.code, 2, "{}", d.stderr);
    assert!(
        d.stderr.contains("pod.yaml: document 1") && d.stderr.contains("unknown kind \"Pod\""),
        "{}",
        d.stderr
    );

    // apply reports every problem of a failing document with its file, line, position and
    // field, in the words of `ui sign` and the server, sends nothing of it, and applies the
    // others.
    let mixed = u.path("mixed");
    std::fs::create_dir(&mixed).unwrap();
    write(&mixed.join("a.yaml"), &workload("bad", "default", 1).replace("replicas: 1", "replicas: many"));
    write(&mixed.join("b.yaml"), &workload("good", "default", 1));
    let failed = ui(&u, &server, &["apply", "-f", mixed.to_str().unwrap()]);
    let line = workload("bad", "default", 1).lines().position(|l| l.contains("replicas:")).unwrap() + 1;
    failed.fails_with(&[&format!(
        "a.yaml:{line}: document 1 (Workload/default/bad): spec.replicas: must be an integer"
    )]);
    ui(&u, &server, &["get", "wl", "good"]).ok();

    // delete by name, NotFound, --ignore-not-found, delete -f.
    let gone = ui(&u, &server, &["delete", "wl", "hello"]).ok().stdout;
    assert_eq!(gone, "workload.univrs.io/hello deleted\n");
    ui(&u, &server, &["get", "wl", "hello"])
        .fails_with(&["Error from server (NotFound)", "\"hello\" not found"]);
    ui(&u, &server, &["delete", "wl", "hello"]).fails_with(&["Error from server (NotFound)"]);
    ui(&u, &server, &["delete", "wl", "hello", "--ignore-not-found"]).ok();
    // A transfer is a record: only the control plane removes it; the rest goes.
    let deleted = ui(&u, &server, &["delete", "-f", m, "--ignore-not-found"])
        .fails_with(&["transfer.yaml", "cannot delete transfers", "only the control plane may delete it"])
        .stdout;
    assert!(deleted.contains("nodeoffer.univrs.io/berlin-1 deleted"), "{deleted}");
    assert!(!deleted.contains("hello"), "{deleted}");
    assert_eq!(ui(&u, &server, &["get", "offers", "-o", "name"]).ok().stdout, "");

    ui(&u, &server, &["get", "pods"])
        .fails_with(&["the server doesn't have a resource type \"pods\"", "workloads (wl)"]);
    server.stop();
}

#[test]
fn an_unreachable_server_or_no_kubeconfig_is_a_clear_error() {
    let u = User::new();
    u.run(&["get", "wl"]).fails_with(&["cannot read the kubeconfig", "ui up", "--server"]);
    u.run(&["get", "wl", "--server", "http://127.0.0.1:1"])
        .fails_with(&["cannot reach the apiserver at http://127.0.0.1:1: connection refused", "ui up"]);

    // $KUBECONFIG names the cluster; once it is stopped, the same clear error.
    let server = Server::start(&u, &u.path("data"));
    let url = server.url.clone();
    let kubeconfig = server.kubeconfig.clone();
    let get = |u: &User| {
        let out = u.cmd(&["get", "wl", "-o", "json"]).env("KUBECONFIG", &kubeconfig).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    assert_eq!(get(&u).0, Some(0));
    server.stop();
    let (code, stderr) = get(&u);
    assert_eq!(code, Some(1));
    assert!(stderr.contains(&format!("cannot reach the apiserver at {url}: connection refused")), "{stderr}");
}

/// Needs `labelSelector` on the server (expected with the watch/selector work on main).
#[test]
fn a_label_selector_picks_the_objects() {
    let u = User::new();
    let server = Server::start(&u, &u.path("data"));
    let both = format!("{}---\n{}", workload("one", "default", 1), workload("two", "default", 1));
    ui(&u, &server, &["apply", "-f", &write(&u.path("w.yaml"), &both)]).ok();
    let one = ui(&u, &server, &["get", "wl", "-l", "app=one", "-o", "name"]).ok().stdout;
    assert_eq!(one, "workload.univrs.io/one\n");
    server.stop();
}

/// Needs `?watch=1` on the server (expected with the watch work on main).
#[test]
fn get_watch_prints_each_change() {
    let u = User::new();
    let server = Server::start(&u, &u.path("data"));
    let file = write(&u.path("w.yaml"), &workload("watched", "default", 1));
    ui(&u, &server, &["apply", "-f", &file]).ok();

    let mut child = u
        .cmd(&["get", "wl", "-w", "-o", "name", "--kubeconfig", server.kubeconfig.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let next = |what: &str| {
        rx.recv_timeout(Duration::from_secs(20)).unwrap_or_else(|e| {
            panic!("no line for {what}: {e} (the watch ended, or printed nothing for 20s)")
        })
    };
    assert_eq!(next("the initial list"), "workload.univrs.io/watched");
    ui(&u, &server, &["apply", "-f", &write(&u.path("w.yaml"), &workload("watched", "default", 2))]).ok();
    assert_eq!(next("the update"), "workload.univrs.io/watched");
    ui(&u, &server, &["delete", "wl", "watched"]).ok();
    assert_eq!(next("the deletion"), "workload.univrs.io/watched");
    let _ = child.kill();
    let _ = child.wait();
    server.stop();
}

#[test]
fn a_refused_token_is_minted_again_once_and_the_request_goes_through() {
    let u = User::new();
    let server = Server::start(&u, &u.path("data"));
    // A credential plugin whose first token the server refuses (it is not a token at all):
    // the client gets a 401, mints again, and the second token is let in.
    let calls = u.path("calls");
    let ui_bin = env!("CARGO_BIN_EXE_ui");
    let script = u.path("plugin.sh");
    write(
        &script,
        &format!(
            "#!/bin/sh\necho x >> {calls}\nif [ $(wc -l < {calls}) -eq 1 ]; then\n  \
             echo '{{\"apiVersion\":\"client.authentication.k8s.io/v1\",\"kind\":\"ExecCredential\",\"status\":{{\"token\":\"not-a-token\",\"expirationTimestamp\":\"2999-01-01T00:00:00Z\"}}}}'\n\
             else\n  exec {ui_bin} token --exec-credential --audience {audience}\nfi\n",
            calls = calls.display(),
            audience = server.audience,
        ),
    );
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let kubeconfig = std::fs::read_to_string(&server.kubeconfig).unwrap();
    let start = kubeconfig.find("      command: ").unwrap();
    let end = start + kubeconfig[start..].find('\n').unwrap();
    let patched =
        format!("{}      command: {}{}", &kubeconfig[..start], script.display(), &kubeconfig[end..]);
    let patched = patched.replace("args: [\"token\"", "args: [\"unused\"");
    let path = write(&u.path("refreshing.kubeconfig"), &patched);
    let out = u.run(&["get", "workloads", "--kubeconfig", &path]).ok();
    assert!(out.stdout.is_empty() || out.stdout.contains("NAME"), "{}", out.stdout);
    assert_eq!(
        std::fs::read_to_string(&calls).unwrap().lines().count(),
        2,
        "the plugin ran once more after the 401"
    );
    server.stop();
}

#[test]
fn get_takes_several_kinds_and_all_and_status_shows_your_own_workloads() {
    let u = User::new();
    let server = Server::start(&u, &u.path("data"));
    let dir = u.path("m");
    std::fs::create_dir(&dir).unwrap();
    write(&dir.join("w.yaml"), &workload("mine", "default", 1));
    write(
        &dir.join("tp.yaml"),
        "apiVersion: univrs.io/v1\nkind: TrustPolicy\nmetadata:\n  name: mine-policy\nspec:\n  allowedJurisdictions: [DE]\n",
    );
    ui(&u, &server, &["apply", "-f", dir.to_str().unwrap()]).ok();
    // Someone else's workload, in the same namespace.
    let stranger = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    let mut theirs: serde_json::Value =
        api::manifest::parse_documents(&workload("theirs", "default", 1)).unwrap().remove(0);
    api::signing::sign(&mut theirs, &stranger, chrono::Utc::now()).unwrap();
    let token = api::token::mint(&stranger, &server.audience, chrono::Utc::now().timestamp(), 300);
    let url = format!("{}/apis/univrs.io/v1/namespaces/default/workloads", server.url);
    let (code, body) = support::send(
        &server.agent(),
        "POST",
        &url,
        &format!("Bearer {token}"),
        "application/json",
        theirs.to_string().into_bytes(),
    );
    assert_eq!(code, 201, "{body}");

    let both = ui(&u, &server, &["get", "wl,tp"]).ok().stdout;
    for want in ["workload.univrs.io/mine", "workload.univrs.io/theirs", "trustpolicy.univrs.io/mine-policy"]
    {
        assert!(both.contains(want), "{want} not in:\n{both}");
    }
    let all = ui(&u, &server, &["get", "all"]).ok().stdout;
    assert!(all.contains("workload.univrs.io/mine") && !all.contains("trustpolicy"), "{all}");
    let listed = ui(&u, &server, &["get", "workloads,trustpolicies", "-o", "json"]).ok().json();
    let kinds: Vec<&str> =
        listed["items"].as_array().unwrap().iter().map(|i| i["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["Workload", "Workload", "TrustPolicy"], "{listed}");
    ui(&u, &server, &["get", "wl,tp", "mine"]).fails_with(&["names cannot be given with several kinds"]);

    let status = ui(&u, &server, &["status"]).ok().stdout;
    assert!(status.contains("mine:") && !status.contains("theirs"), "{status}");
    let everyone = ui(&u, &server, &["status", "-A"]).ok().stdout;
    assert!(everyone.contains("default/mine:") && everyone.contains("default/theirs:"), "{everyone}");
    let scaled = ui(&u, &server, &["scale", "workload", "mine", "3", "-o", "json"]).ok().json();
    assert_eq!(
        scaled,
        serde_json::json!({ "namespace": "default", "name": "mine", "replicas": 3, "changed": true })
    );
    let again = ui(&u, &server, &["scale", "workload", "mine", "3", "-o", "json"]).ok().json();
    assert_eq!(again["changed"], false);
    server.stop();
}

#[test]
fn a_kubeconfig_whose_ui_is_gone_says_how_to_write_it_anew() {
    let u = User::new();
    let server = Server::start(&u, &u.path("data"));
    let kubeconfig = std::fs::read_to_string(&server.kubeconfig).unwrap();
    let start = kubeconfig.find("      command: ").unwrap();
    let end = start + kubeconfig[start..].find('\n').unwrap();
    let moved =
        format!("{}      command: /nonexistent/target/debug/ui{}", &kubeconfig[..start], &kubeconfig[end..]);
    let path = write(&u.path("moved.kubeconfig"), &moved);
    u.run(&["get", "workloads", "--kubeconfig", &path]).fails_with(&[
        "its credential plugin /nonexistent/target/debug/ui is gone",
        "start `ui up` again to write it anew",
    ]);
    server.stop();
}
