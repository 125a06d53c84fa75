//! The real kubectl against `ui apiserver` on a real port: discovery, create, get, errors,
//! delete, a restart that resumes from the data dir; apply (client- and server-side), diff,
//! label, patch (JSON, merge, status), selectors, pagination, dry run, finalizers, a stale
//! PUT's 409, and `get -w` seeing every change.

mod support;

use support::{Kubectl, Server, User, workspace, write, write_signed};

#[test]
fn kubectl_creates_gets_and_deletes_signed_objects_and_a_restart_resumes() {
    let u = User::new();
    u.init_plain();
    let data = u.path("data");
    let server = Server::start(&u, &data);
    let k = Kubectl { kubeconfig: server.kubeconfig.clone(), cache: u.path("kube-cache") };

    let resources = k.ok(&["api-resources", "--api-group=univrs.io"]);
    for line in ["workloads", "wl", "trustpolicies", "nodeoffers"] {
        assert!(resources.contains(line), "{resources}");
    }
    let empty = k.run(&["get", "workloads"]);
    assert!(empty.ok && empty.stderr.contains("No resources found in default namespace"), "{}", empty.stderr);

    let signed = u.run(&["sign", "-f", workspace().join("manifests").to_str().unwrap()]).ok().stdout;
    let file = u.path("signed.yaml");
    std::fs::write(&file, signed).unwrap();
    let file = file.to_str().unwrap();
    let created = k.ok(&["create", "-f", file]);
    for line in [
        "workload.univrs.io/hello created",
        "trustpolicy.univrs.io/eu-only created",
        "nodeoffer.univrs.io/berlin-1 created",
    ] {
        assert!(created.contains(line), "{created}");
    }
    k.fails(&["create", "-f", file], "(AlreadyExists)");

    assert!(k.ok(&["get", "wl"]).contains("hello"));
    assert!(k.ok(&["get", "nodeoffers"]).contains("berlin-1"));
    let json = k.ok(&["get", "workload", "hello", "-o", "json"]);
    let obj: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(obj["metadata"]["namespace"], "default");
    assert_eq!(obj["metadata"]["generation"], 1);
    // What kubectl reads back is still exactly what was signed.
    u.run_with_stdin(&["verify", "-f", "-"], &json).ok();

    server.stop();
    let server = Server::start(&u, &data);
    let again: serde_json::Value =
        serde_json::from_str(&k.ok(&["get", "workload", "hello", "-o", "json"])).unwrap();
    assert_eq!(again, obj, "the object changed across a restart");

    assert!(k.ok(&["delete", "workload", "hello"]).contains("workload.univrs.io \"hello\" deleted"));
    k.fails(&["get", "workload", "hello"], "(NotFound)");
    k.fails(&["get", "pods"], "the server doesn't have a resource type \"pods\"");
    server.stop();
}

#[test]
fn plain_http_is_refused_beyond_loopback() {
    let u = User::new();
    let d = u.path("d");
    let r =
        u.run(&["apiserver", "--data-dir", d.to_str().unwrap(), "--listen", "0.0.0.0:0", "--insecure-http"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("loopback"), "{}", r.stderr);
}

/// A workload manifest with `replicas` and labels `app=NAME`.
fn workload_yaml(name: &str, replicas: u32) -> String {
    format!(
        "apiVersion: univrs.io/v1\nkind: Workload\nmetadata:\n  name: {name}\n  labels:\n    app: {name}\n\
         spec:\n  rootfs: busybox\n  replicas: {replicas}\n"
    )
}

/// A replica manifest (written by the control plane: the test uses the member's kubeconfig).
fn replica_yaml(name: &str, node: &str) -> String {
    format!(
        "apiVersion: univrs.io/v1\nkind: Replica\nmetadata:\n  name: {name}\n  labels:\n    app: {name}\n\
         spec:\n  workload: web\n  nodeName: {node}\n  container:\n    rootfs: busybox\n"
    )
}

fn get_json(k: &Kubectl, what: &[&str]) -> serde_json::Value {
    let args: Vec<&str> = ["get"].iter().chain(what).chain(&["-o", "json"]).copied().collect();
    serde_json::from_str(&k.ok(&args)).unwrap()
}

#[test]
fn kubectl_applies_signed_manifests_client_and_server_side() {
    let u = User::new();
    let server = Server::start(&u, &u.path("data"));
    let k = Kubectl { kubeconfig: server.kubeconfig.clone(), cache: u.path("kube-cache") };

    // Client-side apply: create, unchanged, then configure (signed again, later).
    let v1 = write_signed(&u, "web.yaml", &workload_yaml("web", 1));
    assert!(k.ok(&["apply", "-f", &v1]).contains("workload.univrs.io/web created"));
    assert!(k.ok(&["apply", "-f", &v1]).contains("workload.univrs.io/web unchanged"));
    let v2 = write_signed(&u, "web2.yaml", &workload_yaml("web", 2));
    let diff = k.run(&["diff", "-f", &v2]);
    assert!(!diff.ok && diff.stdout.contains("+  replicas: 2"), "{}{}", diff.stdout, diff.stderr);
    assert!(k.ok(&["apply", "-f", &v2]).contains("workload.univrs.io/web configured"));
    let web = get_json(&k, &["workload", "web"]);
    assert_eq!(web["spec"]["replicas"], 2);
    assert_eq!(web["metadata"]["generation"], 2);
    assert!(k.run(&["diff", "-f", &v2]).ok, "no difference left after apply");
    let yaml = k.ok(&["get", "workload", "web", "-o", "yaml"]);
    assert!(yaml.contains("kind: Workload") && yaml.contains("replicas: 2"), "{yaml}");
    u.run_with_stdin(&["verify", "-f", "-"], &k.ok(&["get", "workload", "web", "-o", "json"])).ok();

    // A server-side dry run changes nothing.
    let v3 = write_signed(&u, "web3.yaml", &workload_yaml("web", 3));
    assert!(k.ok(&["apply", "--dry-run=server", "-f", &v3]).contains("(server dry run)"));
    assert_eq!(get_json(&k, &["workload", "web"])["spec"]["replicas"], 2);

    // Server-side apply: create, then change; the field manager is recorded.
    let api = write_signed(&u, "api.yaml", &workload_yaml("api", 1));
    assert!(
        k.ok(&["apply", "--server-side", "-f", &api]).contains("workload.univrs.io/api serverside-applied")
    );
    let api2 = write_signed(&u, "api2.yaml", &workload_yaml("api", 4));
    k.ok(&["apply", "--server-side", "-f", &api2]);
    let obj = get_json(&k, &["workload", "api", "--show-managed-fields"]);
    assert_eq!(obj["spec"]["replicas"], 4);
    assert_eq!(obj["metadata"]["managedFields"][0]["manager"], "kubectl");
    assert_eq!(obj["metadata"]["managedFields"][0]["operation"], "Apply");

    // A label is part of what the owner signed: changing it without signing is refused.
    k.fails(&["label", "workload", "web", "tier=front"], "must be signed by their owner");
    server.stop();
}

#[test]
fn kubectl_patches_watches_and_gets_conflicts() {
    let u = User::new();
    let server = Server::start(&u, &u.path("data"));
    // Replicas are the control plane's: this kubectl authenticates as the member.
    let k = Kubectl { kubeconfig: server.member_kubeconfig(), cache: u.path("kube-cache") };

    // `kubectl get -w` sees every change made below, from its own process.
    let mut watcher = std::process::Command::new("kubectl")
        .args(["get", "replicas", "-w", "--output-watch-events", "--cache-dir"])
        .arg(u.path("watch-cache"))
        .env("KUBECONFIG", server.member_kubeconfig())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let watched = watcher.stdout.take().unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(watched)) {
            let _ = lines_tx.send(line.unwrap());
        }
    });

    let r = write(&u, "r.yaml", &replica_yaml("web-1", "node-a"));
    assert!(k.ok(&["create", "-f", &r]).contains("replica.univrs.io/web-1 created"));
    k.ok(&["create", "-f", &write(&u, "r2.yaml", &replica_yaml("web-2", "node-b"))]);

    // label, JSON patch, the status subresource, and selectors.
    k.ok(&["label", "replica", "web-1", "tier=front"]);
    k.ok(&[
        "patch",
        "replica",
        "web-1",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/nodeName","value":"node-c"}]"#,
    ]);
    k.ok(&[
        "patch",
        "replica",
        "web-1",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Running","restarts":2}}"#,
    ]);
    let web = get_json(&k, &["replica", "web-1"]);
    assert_eq!(web["metadata"]["labels"]["tier"], "front");
    assert_eq!(web["spec"]["nodeName"], "node-c");
    assert_eq!(web["status"]["phase"], "Running");
    assert_eq!(web["metadata"]["generation"], 2, "spec changed once; label and status do not count");
    let selected = get_json(&k, &["replicas", "-l", "tier=front"]);
    assert_eq!(selected["items"].as_array().unwrap().len(), 1);
    let by_field = get_json(&k, &["replicas", "--field-selector", "spec.nodeName=node-b"]);
    assert_eq!(by_field["items"][0]["metadata"]["name"], "web-2");
    let paged = get_json(&k, &["replicas", "--chunk-size=1"]);
    assert_eq!(paged["items"].as_array().unwrap().len(), 2, "pages put together");
    k.fails(
        &["patch", "replica", "web-1", "-p", r#"{"spec":{"nodeName":"x"}}"#],
        "strategic merge patch is not supported",
    );

    // A PUT with a stale resourceVersion is a 409 Conflict.
    let mut stale = web.clone();
    stale["metadata"]["resourceVersion"] = serde_json::json!("1");
    stale["spec"]["nodeName"] = serde_json::json!("node-z");
    let stale = write(&u, "stale.json", &stale.to_string());
    k.fails(&["replace", "-f", &stale], "the object has been modified");

    // A finalizer holds a deleted object until it is removed.
    k.ok(&[
        "patch",
        "replica",
        "web-1",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":["example.com/hold"]}}"#,
    ]);
    k.ok(&["delete", "replica", "web-1", "--wait=false"]);
    assert!(get_json(&k, &["replica", "web-1"])["metadata"]["deletionTimestamp"].is_string());
    k.ok(&[
        "patch",
        "replica",
        "web-1",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
    ]);
    k.fails(&["get", "replica", "web-1"], "(NotFound)");

    // The watcher saw it all, in order.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l.starts_with("DELETED") && l.contains("web-1")) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => panic!("the watch did not see the deletion; it saw:\n{}", seen.join("\n")),
        }
    }
    let _ = watcher.kill();
    let _ = watcher.wait();
    let kinds: Vec<&str> =
        seen.iter().filter(|l| l.contains("web-1")).map(|l| l.split_whitespace().next().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"ADDED"), "{seen:?}");
    assert!(kinds.iter().filter(|k| **k == "MODIFIED").count() >= 5, "{seen:?}");
    assert_eq!(kinds.last(), Some(&"DELETED"), "{seen:?}");
    server.stop();
}

#[test]
fn kubectl_authenticates_each_identity_with_its_own_key() {
    let owner = User::new();
    let server = Server::start(&owner, &owner.path("data"));
    let k = Kubectl { kubeconfig: server.kubeconfig.clone(), cache: owner.path("kube-cache") };

    // A second identity with its own config dir and its own kubeconfig for the same cluster.
    let other = User::new();
    other.init_plain();
    let k2 = Kubectl { kubeconfig: server.kubeconfig_for(&other), cache: other.path("kube-cache") };

    let v1 = write_signed(&owner, "web.yaml", &workload_yaml("web", 1));
    std::thread::sleep(std::time::Duration::from_millis(1100)); // signed-at has second precision
    let v2 = write_signed(&owner, "web2.yaml", &workload_yaml("web", 2));
    assert!(k.ok(&["apply", "-f", &v2]).contains("workload.univrs.io/web created"));

    // The other identity reads it, but may neither delete nor change it.
    assert!(k2.ok(&["get", "workloads"]).contains("web"));
    k2.fails(&["delete", "workload", "web"], "(Forbidden)");
    let theirs = write_signed(&other, "theirs.yaml", &workload_yaml("web", 9));
    k2.fails(&["apply", "-f", &theirs], "(Forbidden)");
    // A tampered manifest and a replayed older one are refused, saying why.
    let tampered = std::fs::read_to_string(&v2).unwrap().replace("replicas: 2", "replicas: 20");
    let tampered = write(&owner, "tampered.yaml", &tampered);
    k.fails(&["apply", "-f", &tampered], "signature");
    k.fails(&["apply", "-f", &v1], "older manifest");
    assert_eq!(get_json(&k, &["workload", "web"])["spec"]["replicas"], 2);
    // Credentials that are not a token minted from a key: 401. (With no credentials at all
    // kubectl asks for a password instead; tests/api_errors.rs checks the 401 itself.)
    let anonymous = std::fs::read_to_string(&server.kubeconfig).unwrap();
    let anonymous = anonymous[..anonymous.find("users:").unwrap()].to_owned()
        + "users:\n- name: univrs\n  user:\n    token: not-a-token\n";
    let k0 = Kubectl {
        kubeconfig: write(&owner, "anonymous", &anonymous).into(),
        cache: owner.path("kube-cache-0"),
    };
    k0.fails(&["get", "workloads"], "You must be logged in to the server");
    // The owner deletes it.
    assert!(k.ok(&["delete", "workload", "web"]).contains("deleted"));
    server.stop();
}
