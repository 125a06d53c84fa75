//! kubectl's everyday commands against a real `ui apiserver`, with the real kubectl: `get all`
//! and `get univrs` (categories), `get replicas -l` (replicas carry their workload's labels),
//! `get --show-managed-fields` after `ui apply` (its field manager), `auth can-i` (checked
//! against the real request, for an owner, a stranger, a member and a node), `auth can-i
//! --list`, `auth whoami` and `cluster-info`.

mod support;

use serde_json::Value;
use support::{Controllers, Kubectl, Server, User, plain, wait_for, write, write_signed};

fn workload_yaml(name: &str, labels: &str) -> String {
    format!(
        "apiVersion: univrs.io/v1\nkind: Workload\nmetadata:\n  name: {name}\n  labels:\n{labels}\
         spec:\n  rootfs: busybox\n  replicas: 2\n"
    )
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// A kubectl for another identity on the same cluster: its own key and kubeconfig.
fn stranger(server: &Server) -> (User, String, Kubectl) {
    let other = User::new();
    let did = other.init_plain();
    let k = Kubectl { kubeconfig: server.kubeconfig_for(&other), cache: other.path("kube-cache") };
    (other, did, k)
}

/// The replicas of workload `hello`, as the member sees them.
fn replicas_of_hello(k: &Kubectl) -> Result<Vec<Value>, String> {
    let list = json(&k.ok(&["get", "replicas", "-l", "univrs.io/workload=hello", "-o", "json"]));
    let items = list["items"].as_array().cloned().unwrap_or_default();
    if items.len() == 2 { Ok(items) } else { Err(format!("{} replicas", items.len())) }
}

#[test]
fn kubectl_get_all_and_get_univrs_list_by_category() {
    let u = User::new();
    let server = Server::start(&u, &u.path("data"));
    let _controllers = Controllers::start(&u, &server);
    let k = Kubectl { kubeconfig: server.kubeconfig.clone(), cache: u.path("kube-cache") };
    let manifests = u.path("manifests");
    support::copy_examples(&manifests);
    u.run(&["apply", "-f", manifests.to_str().unwrap(), "--kubeconfig", server.kubeconfig.to_str().unwrap()])
        .ok();
    let km = Kubectl { kubeconfig: server.member_kubeconfig(), cache: u.path("kube-cache-member") };
    wait_for(30, "the workload controller to make hello's replicas", || replicas_of_hello(&km));

    // `all`: the workloads and their replicas, and nothing else.
    let all = k.ok(&["get", "all", "-o", "name"]);
    let lines: Vec<&str> = all.lines().collect();
    assert!(lines.contains(&"workload.univrs.io/hello"), "{all}");
    assert!(lines.contains(&"workload.univrs.io/web"), "{all}");
    assert_eq!(lines.iter().filter(|l| l.starts_with("replica.univrs.io/hello-")).count(), 2, "{all}");
    wait_for(30, "web's replica", || {
        let all = k.ok(&["get", "all", "-o", "name"]);
        if all.lines().any(|l| l.starts_with("replica.univrs.io/web-")) { Ok(()) } else { Err(all) }
    });
    let all = k.ok(&["get", "all", "-o", "name"]);
    let lines: Vec<&str> = all.lines().collect();
    assert_eq!(lines.len(), 5, "only workloads and replicas are in all:\n{all}");
    let table = k.ok(&["get", "all"]);
    assert!(
        table.contains("workload.univrs.io/hello") && table.contains("replica.univrs.io/hello-"),
        "{table}"
    );

    // `univrs`: every kind, the cluster-scoped ones too.
    let univrs = k.ok(&["get", "univrs", "-o", "name"]);
    for name in [
        "workload.univrs.io/hello",
        "trustpolicy.univrs.io/eu-only",
        "nodeoffer.univrs.io/berlin-1",
        "creditgrant.univrs.io/line-for-alice",
        "attestation.univrs.io/vouch-for-example-operator",
    ] {
        assert!(univrs.lines().any(|l| l == name), "{name} not in:\n{univrs}");
    }
    assert_eq!(univrs.lines().filter(|l| l.starts_with("replica.univrs.io/")).count(), 3, "{univrs}");
    // kubectl learned the categories from discovery: the server publishes them.
    let resources = k.ok(&["api-resources", "--categories=all", "-o", "name"]);
    let mut in_all: Vec<&str> = resources.lines().collect();
    in_all.sort_unstable();
    assert_eq!(in_all, ["replicas.univrs.io", "workloads.univrs.io"], "{resources}");
    server.stop();
}

#[test]
fn kubectl_get_replicas_by_their_workloads_labels() {
    let u = User::new();
    let server = Server::start(&u, &u.path("data"));
    let _controllers = Controllers::start(&u, &server);
    let k = Kubectl { kubeconfig: server.kubeconfig.clone(), cache: u.path("kube-cache") };
    let kubeconfig = server.kubeconfig.to_str().unwrap().to_owned();
    let file = write(&u, "hello.yaml", &workload_yaml("hello", "    app: hello\n    tier: web\n"));
    u.run(&["apply", "-f", &file, "--kubeconfig", &kubeconfig]).ok();
    let other = write(&u, "other.yaml", &workload_yaml("other", "    app: other\n"));
    u.run(&["apply", "-f", &other, "--kubeconfig", &kubeconfig]).ok();

    let names = |selector: &str| -> Vec<String> {
        let list = json(&k.ok(&["get", "replicas", "-l", selector, "-o", "json"]));
        let mut names: Vec<String> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["metadata"]["name"].as_str().unwrap().to_owned())
            .collect();
        names.sort();
        names
    };
    let hello = wait_for(30, "hello's two replicas, found by app=hello", || {
        let found = names("app=hello");
        if found.len() == 2 { Ok(found) } else { Err(format!("{found:?}")) }
    });
    assert!(hello.iter().all(|n| n.starts_with("hello-")), "{hello:?}");
    assert_eq!(names("app=hello,tier=web"), hello);
    wait_for(30, "other's replicas", || {
        if names("app=other").len() == 2 { Ok(()) } else { Err("not yet".into()) }
    });
    assert!(names("app=other").iter().all(|n| n.starts_with("other-")));
    assert!(names("app=nobody").is_empty());
    // The owner reference they have, by uid, as a Deployment's pods have theirs.
    let replica = json(&k.ok(&["get", "replica", &hello[0], "-o", "json"]));
    let workload = json(&k.ok(&["get", "workload", "hello", "-o", "json"]));
    assert_eq!(replica["metadata"]["ownerReferences"][0]["uid"], workload["metadata"]["uid"]);
    assert_eq!(replica["metadata"]["labels"]["univrs.io/workload"], "hello");

    // The workload's labels change (signed again by `ui apply`): its replicas follow, the
    // same replicas, not new ones.
    std::thread::sleep(std::time::Duration::from_millis(1100)); // signed-at has second precision
    let relabeled = write(&u, "hello.yaml", &workload_yaml("hello", "    app: hello\n    tier: api\n"));
    u.run(&["apply", "-f", &relabeled, "--kubeconfig", &kubeconfig]).ok();
    let api = wait_for(30, "hello's replicas to carry tier=api", || {
        let found = names("app=hello,tier=api");
        if found.len() == 2 { Ok(found) } else { Err(format!("{found:?}")) }
    });
    assert_eq!(api, hello, "relabeled in place");
    assert!(names("tier=web").is_empty());
    server.stop();
}

#[test]
fn kubectl_shows_the_field_manager_of_ui_apply() {
    let u = User::new();
    let server = Server::start(&u, &u.path("data"));
    let k = Kubectl { kubeconfig: server.kubeconfig.clone(), cache: u.path("kube-cache") };
    let kubeconfig = server.kubeconfig.to_str().unwrap().to_owned();
    let file = write(&u, "hello.yaml", &workload_yaml("hello", "    app: hello\n"));
    u.run(&["apply", "-f", &file, "--kubeconfig", &kubeconfig]).ok();

    let shown = json(&k.ok(&["get", "workload", "hello", "--show-managed-fields", "-o", "json"]));
    let managers = shown["metadata"]["managedFields"].as_array().expect("managedFields shown").clone();
    assert_eq!(managers.len(), 1, "{managers:?}");
    let ui = &managers[0];
    assert_eq!(ui["manager"], "ui");
    assert_eq!(ui["operation"], "Update");
    assert_eq!(ui["fieldsV1"]["f:spec"]["f:replicas"], serde_json::json!({}));
    assert_eq!(ui["fieldsV1"]["f:metadata"]["f:labels"]["f:app"], serde_json::json!({}));
    // kubectl hides them unless asked.
    let hidden = json(&k.ok(&["get", "workload", "hello", "-o", "json"]));
    assert!(hidden["metadata"].get("managedFields").is_none());
    // The signature does not cover them: what kubectl reads back still verifies.
    u.run_with_stdin(&["verify", "-f", "-"], &k.ok(&["get", "workload", "hello", "-o", "json"])).ok();
    // Applying the same again changes nothing, not even the time.
    u.run(&["apply", "-f", &file, "--kubeconfig", &kubeconfig]).ok();
    let again = json(&k.ok(&["get", "workload", "hello", "--show-managed-fields", "-o", "json"]));
    assert_eq!(again["metadata"]["managedFields"], shown["metadata"]["managedFields"]);
    assert_eq!(again["metadata"]["resourceVersion"], shown["metadata"]["resourceVersion"]);

    // A change by kubectl takes the fields it changed, as Kubernetes records it.
    std::thread::sleep(std::time::Duration::from_millis(1100)); // signed-at has second precision
    let scaled = write_signed(
        &u,
        "scaled.yaml",
        &workload_yaml("hello", "    app: hello\n").replace("replicas: 2", "replicas: 3"),
    );
    k.ok(&["replace", "-f", &scaled]);
    let after = json(&k.ok(&["get", "workload", "hello", "--show-managed-fields", "-o", "json"]));
    let by = |m: &str| {
        after["metadata"]["managedFields"].as_array().unwrap().iter().find(|e| e["manager"] == m).cloned()
    };
    let kubectl = by("kubectl-replace").expect("kubectl replace recorded as kubectl-replace");
    assert!(kubectl["fieldsV1"]["f:spec"]["f:replicas"].is_object(), "{kubectl}");
    let ui = by("ui").expect("ui keeps what it still owns");
    assert!(ui["fieldsV1"]["f:spec"].get("f:replicas").is_none(), "{ui}");
    assert!(ui["fieldsV1"]["f:spec"]["f:rootfs"].is_object(), "{ui}");
    server.stop();
}

/// `kubectl auth can-i ARGS`: whether it said yes (its exit code and its word agree).
#[track_caller]
fn can_i(k: &Kubectl, args: &[&str]) -> bool {
    let mut all = vec!["auth", "can-i"];
    all.extend_from_slice(args);
    let out = k.run(&all);
    let word = out.stdout.split_whitespace().next().unwrap_or_default().to_owned();
    assert!(word == "yes" || word == "no", "kubectl {all:?}: {}{}", out.stdout, out.stderr);
    assert_eq!(
        out.ok,
        word == "yes",
        "kubectl {all:?}: exit code and answer differ: {}{}",
        out.stdout,
        out.stderr
    );
    out.ok
}

/// Asks `can-i QUESTION`, then makes the very request: yes exactly when it goes through, no
/// exactly when it is Forbidden. Returns the answer.
#[track_caller]
fn agree(k: &Kubectl, who: &str, question: &[&str], request: &[&str]) -> bool {
    let yes = can_i(k, question);
    let out = k.run(request);
    if yes {
        assert!(
            out.ok,
            "{who}: can-i {question:?} says yes, but kubectl {request:?} failed:\n{}",
            out.stderr
        );
    } else {
        assert!(
            !out.ok,
            "{who}: can-i {question:?} says no, but kubectl {request:?} went through:\n{}",
            out.stdout
        );
        assert!(
            out.stderr.contains("(Forbidden)"),
            "{who}: kubectl {request:?} failed, not as Forbidden:\n{}",
            out.stderr
        );
    }
    yes
}

/// A replica of `web`, bound to node `n1` (uid `node_uid`).
fn replica_yaml(workload_uid: &str, node_uid: &str) -> String {
    format!(
        "apiVersion: univrs.io/v1\nkind: Replica\nmetadata:\n  name: web-0\n  namespace: default\n  ownerReferences:\n  \
         - apiVersion: univrs.io/v1\n    kind: Workload\n    name: web\n    uid: {workload_uid}\n    controller: true\n\
         spec:\n  workload: web\n  nodeName: n1\n  nodeUid: {node_uid}\n  container:\n    rootfs: busybox\n"
    )
}

#[test]
fn kubectl_auth_can_i_answers_as_the_real_request_does_for_owner_stranger_member_and_node() {
    let u = User::new();
    let server = Server::start(&u, &u.path("data"));
    let owner = Kubectl { kubeconfig: server.kubeconfig.clone(), cache: u.path("kube-cache") };
    let member = Kubectl { kubeconfig: server.member_kubeconfig(), cache: u.path("kube-cache-member") };
    let (other, other_did, stranger) = stranger(&server);
    // A node of the owner's, with its own key and kubeconfig (as `ui node register` writes it).
    let node_dir = u.path("node-n1");
    let d = node_dir.to_str().unwrap();
    u.run(&["node", "init", "--node-dir", d, "--name", "n1", "--listen", "127.0.0.1:1"]).ok();
    let kc = server.kubeconfig.to_str().unwrap();
    u.run(&["node", "register", "--node-dir", d, "--cpu", "1", "--memory", "1Gi", "--kubeconfig", kc]).ok();
    let node = Kubectl { kubeconfig: node_dir.join("kubeconfig"), cache: u.path("kube-cache-node") };

    // The owner: creates, changes and (last) deletes its workload; may not make replicas.
    let web = write_signed(&u, "web.yaml", &workload_yaml("web", "    app: web\n"));
    assert!(agree(&owner, "owner", &["create", "workloads"], &["create", "-f", &web]));
    let finalizer = r#"{"metadata":{"finalizers":["example.com/hold"]}}"#;
    let no_finalizer = r#"{"metadata":{"finalizers":null}}"#;
    assert!(agree(
        &owner,
        "owner",
        &["patch", "workloads/web"],
        &["patch", "workload", "web", "--type=merge", "-p", finalizer]
    ));
    assert!(agree(
        &owner,
        "owner",
        &["update", "workloads/web"],
        &["patch", "workload", "web", "--type=merge", "-p", no_finalizer]
    ));
    let uid = |k: &Kubectl, what: &[&str]| {
        let mut args = vec!["get"];
        args.extend_from_slice(what);
        args.extend(["-o", "jsonpath={.metadata.uid}"]);
        k.ok(&args)
    };
    let replica = write(
        &u,
        "replica.yaml",
        &replica_yaml(&uid(&owner, &["workload", "web"]), &uid(&owner, &["node", "n1"])),
    );
    assert!(!agree(&owner, "owner", &["create", "replicas"], &["create", "-f", &replica]));
    assert!(!agree(
        &owner,
        "owner",
        &["update", "workloads/web", "--subresource=status"],
        &[
            "patch",
            "workload",
            "web",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"replicas":1}}"#,
        ]
    ));

    // The member: makes the replica; may not write an account (nobody may).
    assert!(agree(&member, "member", &["create", "replicas"], &["create", "-f", &replica]));
    let account = write(
        &u,
        "account.yaml",
        &format!(
            "apiVersion: univrs.io/v1\nkind: Account\nmetadata:\n  name: forged\nspec:\n  owner: {}\n",
            other_did
        ),
    );
    assert!(!agree(&member, "member", &["create", "accounts"], &["create", "-f", &account]));
    assert!(agree(
        &member,
        "member",
        &["patch", "workloads/web"],
        &["patch", "workload", "web", "--type=merge", "-p", finalizer]
    ));
    assert!(agree(
        &member,
        "member",
        &["update", "workloads/web"],
        &["patch", "workload", "web", "--type=merge", "-p", no_finalizer]
    ));

    // A stranger: reads everything, writes none of it, creates its own, never in univrs-system.
    assert!(agree(&stranger, "stranger", &["get", "workloads"], &["get", "workloads"]));
    assert!(agree(&stranger, "stranger", &["list", "replicas"], &["get", "replicas"]));
    assert!(!agree(&stranger, "stranger", &["delete", "workloads/web"], &["delete", "workload", "web"]));
    assert!(!agree(
        &stranger,
        "stranger",
        &["patch", "workloads/web"],
        &["patch", "workload", "web", "--type=merge", "-p", no_finalizer]
    ));
    let theirs = write_signed(&other, "theirs.yaml", &workload_yaml("theirs", "    app: theirs\n"));
    // Signed with the namespace in it: the signature covers it.
    let system = workload_yaml("theirs", "    app: theirs\n")
        .replace("metadata:\n", "metadata:\n  namespace: univrs-system\n");
    let system = write_signed(&other, "system.yaml", &system);
    assert!(!agree(
        &stranger,
        "stranger",
        &["create", "workloads", "-n", "univrs-system"],
        &["create", "-f", &system]
    ));
    assert!(agree(&stranger, "stranger", &["create", "workloads"], &["create", "-f", &theirs]));
    assert!(!agree(
        &stranger,
        "stranger",
        &["patch", "replicas/web-0", "--subresource=status"],
        &[
            "patch",
            "replica",
            "web-0",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"phase":"Running"}}"#,
        ]
    ));
    let lease = write(
        &u,
        "lease.yaml",
        "apiVersion: univrs.io/v1\nkind: Lease\nmetadata:\n  name: n1\n  namespace: univrs-node-lease\nspec:\n  holderIdentity: n1\n",
    );
    assert!(!agree(
        &stranger,
        "stranger",
        &["create", "leases/n1", "-n", "univrs-node-lease"],
        &["create", "-f", &lease]
    ));

    // The node: writes the status of the replica bound to it, not its spec; its own lease; its
    // own Node; nobody's workload.
    assert!(agree(
        &node,
        "node",
        &["patch", "replicas/web-0", "--subresource=status"],
        &[
            "patch",
            "replica",
            "web-0",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"phase":"Running"}}"#,
        ]
    ));
    assert!(!agree(
        &node,
        "node",
        &["patch", "replicas/web-0"],
        &["label", "replica", "web-0", "tier=front"]
    ));
    assert!(agree(
        &node,
        "node",
        &["create", "leases/n1", "-n", "univrs-node-lease"],
        &["create", "-f", &lease]
    ));
    assert!(agree(&node, "node", &["delete", "nodes/n1"], &["delete", "node", "n1", "--dry-run=server"]));
    assert!(!agree(&node, "node", &["delete", "workloads/web"], &["delete", "workload", "web"]));

    // The owner deletes its workload; then there is nothing left to delete.
    assert!(agree(
        &owner,
        "owner",
        &["delete", "workloads/web"],
        &["delete", "workload", "web", "--wait=false"]
    ));
    assert!(!can_i(&member, &["delete", "workloads/web"]), "can-i about an object that is gone");

    // The list: what holds for every object of a kind, and that it is not all.
    let list = stranger.ok(&["auth", "can-i", "--list"]);
    let row = |resource: &str| {
        list.lines().find(|l| l.split_whitespace().next() == Some(resource)).unwrap_or_default().to_owned()
    };
    assert!(row("workloads.univrs.io").contains("[get list watch create]"), "{list}");
    assert!(row("replicas.univrs.io").contains("[get list watch]"), "{list}");
    assert!(row("selfsubjectaccessreviews.authorization.k8s.io").contains("[create]"), "{list}");
    let members = member.ok(&["auth", "can-i", "--list"]);
    assert!(
        members.lines().any(|l| l.starts_with("replicas.univrs.io ")
            && l.contains("[get list watch create update patch delete]")),
        "{members}"
    );
    server.stop();
}

#[test]
fn kubectl_auth_can_i_asks_for_the_caller_only_within_bounds() {
    let u = User::new();
    let server = Server::start(&u, &u.path("data"));
    let agent = server.agent();
    let bearer = format!("Bearer {}", server.token());
    let url = format!("{}/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", server.url);
    let ask = |body: &str| {
        support::send(&agent, "POST", &url, &bearer, "application/json", body.as_bytes().to_vec())
    };
    // About someone else: refused, whatever the name of the field.
    for field in ["user", "groups", "uid", "extra"] {
        let body = format!(
            r#"{{"kind":"SelfSubjectAccessReview","apiVersion":"authorization.k8s.io/v1","spec":{{"{field}":"x","resourceAttributes":{{"verb":"delete","group":"univrs.io","resource":"replicas"}}}}}}"#
        );
        let (code, text) = ask(&body);
        assert_eq!(code, 400, "{field}: {text}");
        assert!(text.contains("asks about its caller only"), "{text}");
    }
    // A SubjectAccessReview (about anyone) is not served.
    let (code, _) = support::send(
        &agent,
        "POST",
        &format!("{}/apis/authorization.k8s.io/v1/subjectaccessreviews", server.url),
        &bearer,
        "application/json",
        b"{}".to_vec(),
    );
    assert!(code == 404 || code == 405, "{code}");
    // Bounded: a huge body, a huge name.
    let (code, _) = ask(&"x".repeat(100 * 1024));
    assert_eq!(code, 413);
    let long = format!(
        r#"{{"spec":{{"resourceAttributes":{{"verb":"get","group":"univrs.io","resource":"workloads","name":"{}"}}}}}}"#,
        "a".repeat(300)
    );
    assert_eq!(ask(&long).0, 400);
    // No token, no answer.
    assert_eq!(support::send(&agent, "POST", &url, "", "application/json", b"{}".to_vec()).0, 401);
    server.stop();
}

#[test]
fn kubectl_auth_whoami_names_the_did_and_whether_member_or_node() {
    let u = User::new();
    let me = u.init_plain();
    let server = Server::start(&u, &u.path("data"));
    let owner = Kubectl { kubeconfig: server.kubeconfig.clone(), cache: u.path("kube-cache") };
    let member = Kubectl { kubeconfig: server.member_kubeconfig(), cache: u.path("kube-cache-member") };
    let node_dir = u.path("node-n1");
    let d = node_dir.to_str().unwrap();
    u.run(&["node", "init", "--node-dir", d, "--name", "n1", "--listen", "127.0.0.1:1"]).ok();
    let kc = server.kubeconfig.to_str().unwrap();
    u.run(&["node", "register", "--node-dir", d, "--cpu", "1", "--memory", "1Gi", "--kubeconfig", kc]).ok();
    let node = Kubectl { kubeconfig: node_dir.join("kubeconfig"), cache: u.path("kube-cache-node") };

    // kubectl's table: ATTRIBUTE VALUE, a row each.
    let value = |table: &str, attribute: &str| -> String {
        let row = table
            .lines()
            .find(|l| l.starts_with(attribute))
            .unwrap_or_else(|| panic!("no {attribute}:\n{table}"));
        row[attribute.len()..].trim().to_owned()
    };
    let table = owner.ok(&["auth", "whoami"]);
    assert!(table.starts_with("ATTRIBUTE"), "{table}");
    assert_eq!(value(&table, "Username"), me);
    assert_eq!(value(&table, "Groups"), "[system:authenticated]");
    let as_json = json(&owner.ok(&["auth", "whoami", "-o", "json"]));
    assert_eq!(as_json["status"]["userInfo"]["username"], me.as_str());

    let m = json(&member.ok(&["auth", "whoami", "-o", "json"]));
    let groups = m["status"]["userInfo"]["groups"].to_string();
    assert!(groups.contains("univrs:members"), "{m}");
    assert_ne!(m["status"]["userInfo"]["username"], me.as_str());

    let n = json(&node.ok(&["auth", "whoami", "-o", "json"]));
    let info = &n["status"]["userInfo"];
    assert!(info["groups"].to_string().contains("univrs:nodes"), "{n}");
    assert!(!info["groups"].to_string().contains("univrs:members"), "{n}");
    assert_eq!(info["extra"]["univrs.io/nodes"], serde_json::json!(["n1"]), "{n}");
    let node_key = json(&owner.ok(&["get", "node", "n1", "-o", "json"]))["spec"]["nodeKey"].clone();
    assert_eq!(info["username"], node_key);
    assert_eq!(value(&node.ok(&["auth", "whoami"]), "Extra: univrs.io/nodes"), "[n1]");
    server.stop();
}

#[test]
fn kubectl_cluster_info_prints_the_control_plane() {
    let u = User::new();
    let server = Server::start(&u, &u.path("data"));
    let k = Kubectl { kubeconfig: server.kubeconfig.clone(), cache: u.path("kube-cache") };
    let out = plain(&k.ok(&["cluster-info"]));
    assert!(out.contains(&format!("Kubernetes control plane is running at {}", server.url)), "{out}");
    // A lone member serves the API itself: kubectl's line above is all there is.
    assert!(!out.contains("univrs-member-"), "{out}");
    let services = json(&k.ok(&["get", "services", "-n", "kube-system", "-o", "json"]));
    assert_eq!(services["kind"], "List");
    server.stop();
}
