//! The real kubectl reading what the apiserver publishes about its kinds: `explain` from OpenAPI
//! v3, `create` with kubectl's default validation (left to the server, because the OpenAPI says
//! PATCH takes `fieldValidation`), and `get` printing the server's Table columns.

mod support;

use support::{Kubectl, Server, User, workspace};

/// A user (and their did), a server on a temp dir, and a kubectl with its own cache dir.
fn cluster() -> (User, String, Server, Kubectl) {
    let u = User::new();
    let did = u.init_plain();
    let server = Server::start(&u, &u.path("data"));
    let k = Kubectl { kubeconfig: server.kubeconfig.clone(), cache: u.path("kube-cache") };
    (u, did, server, k)
}

fn manifest(name: &str) -> String {
    workspace().join("manifests").join(name).to_str().unwrap().to_owned()
}

/// An example manifest signed by the user, in the user's temp dir.
fn signed_manifest(u: &User, name: &str) -> String {
    let signed = u.run(&["sign", "-f", &manifest(name)]).ok().stdout;
    let path = u.path(&format!("signed-{name}"));
    std::fs::write(&path, signed).unwrap();
    path.to_str().unwrap().to_owned()
}

/// The whitespace-separated words of line `n` of kubectl's table output.
fn words(out: &str, n: usize) -> Vec<&str> {
    out.lines().nth(n).unwrap_or_else(|| panic!("no line {n} in:\n{out}")).split_whitespace().collect()
}

#[test]
fn kubectl_explains_kinds_and_fields_from_the_openapi() {
    let (_u, _, server, k) = cluster();

    let kind = k.ok(&["explain", "workloads"]);
    for needle in [
        "GROUP:      univrs.io",
        "KIND:       Workload",
        "VERSION:    v1",
        "A user's signed request to run replicas of a container under a trust policy.",
        "<WorkloadSpec>",
        "Desired state, written by the object's owner.",
        "<ObjectMeta>",
    ] {
        assert!(kind.contains(needle), "explain workloads lacks {needle:?}:\n{kind}");
    }

    let spec = k.ok(&["explain", "workload.spec"]);
    for needle in [
        "FIELD: spec <WorkloadSpec>",
        "replicas\t<integer>",
        "How many copies to run (default 1).",
        "env\t<[]EnvVar>",
        "trustPolicy\t<string>",
    ] {
        assert!(spec.contains(needle), "explain workload.spec lacks {needle:?}:\n{spec}");
    }

    let meta = k.ok(&["explain", "nodeoffer.metadata"]);
    assert!(meta.contains("annotations\t<map[string]string>"), "{meta}");
    let enum_field = k.ok(&["explain", "replica.status.phase"]);
    assert!(enum_field.contains("Possible enum values"), "{enum_field}");
    k.fails(&["explain", "workload.spec.nope"], "field \"nope\" does not exist");
    server.stop();
}

#[test]
fn kubectl_create_validates_on_the_server_without_validate_false() {
    let (u, _, server, k) = cluster();

    // kubectl's default is --validate=strict: it creates only because the OpenAPI tells it the
    // server validates fields itself.
    let created = k.ok(&["create", "-f", &signed_manifest(&u, "hello-workload.yaml")]);
    assert!(created.contains("workload.univrs.io/hello created"), "{created}");

    let typo = std::fs::read_to_string(manifest("hello-workload.yaml"))
        .unwrap()
        .replace("name: hello", "name: typo")
        .replace("replicas: 2", "replicaz: 2");
    let file = u.path("typo.yaml");
    std::fs::write(&file, typo).unwrap();
    let out = k.run(&["create", "-f", file.to_str().unwrap()]);
    assert!(!out.ok, "{}", out.stdout);
    // kubectl sends fieldValidation=Strict: the server names the field, as Kubernetes does.
    assert!(
        out.stderr.contains("(BadRequest)")
            && out.stderr.contains(r#"strict decoding error: unknown field "spec.replicaz""#),
        "{}",
        out.stderr
    );
    k.fails(&["get", "workload", "typo"], "(NotFound)");
    server.stop();
}

#[test]
fn kubectl_get_prints_the_columns_of_each_kind() {
    let (u, did, server, k) = cluster();
    let key = did.strip_prefix("did:key:").unwrap();
    let short = format!("{}…{}", &key[..8], &key[key.len() - 4..]);

    let signed = u.run(&["sign", "-f", &manifest("hello-workload.yaml")]).ok().stdout;
    let file = u.path("hello.yaml");
    std::fs::write(&file, signed).unwrap();
    k.ok(&["create", "-f", file.to_str().unwrap()]);
    k.ok(&["create", "-f", &signed_manifest(&u, "nodeoffer.yaml")]);

    let get = k.ok(&["get", "workloads"]);
    assert_eq!(words(&get, 0), ["NAME", "REPLICAS", "READY", "AGE"], "{get}");
    assert_eq!(words(&get, 1)[..3], ["hello", "2", "0/0"], "{get}");

    let wide = k.ok(&["get", "workloads", "-o", "wide"]);
    assert_eq!(
        words(&wide, 0),
        ["NAME", "REPLICAS", "READY", "AGE", "IMAGE", "TRUST-POLICY", "SIGNER"],
        "{wide}"
    );
    let row = words(&wide, 1);
    assert_eq!(row[..3], ["hello", "2", "0/0"], "{wide}");
    assert_eq!(row[4..], ["busybox", "<none>", short.as_str()], "{wide}");

    let all = k.ok(&["get", "workloads", "--all-namespaces", "--show-labels"]);
    assert_eq!(words(&all, 0), ["NAMESPACE", "NAME", "REPLICAS", "READY", "AGE", "LABELS"], "{all}");
    assert_eq!(words(&all, 1)[..2], ["default", "hello"], "{all}");
    assert_eq!(words(&all, 1)[5], "app=hello", "{all}");

    let one = k.ok(&["get", "workload", "hello"]);
    assert_eq!(words(&one, 0), ["NAME", "REPLICAS", "READY", "AGE"], "{one}");

    let offers = k.ok(&["get", "nodeoffers"]);
    assert_eq!(
        words(&offers, 0),
        ["NAME", "NODE", "CPU", "MEMORY", "JURISDICTION", "PHASE", "AGE"],
        "{offers}"
    );
    assert_eq!(words(&offers, 1)[..6], ["berlin-1", "berlin-1", "4", "8Gi", "DE", "Pending"], "{offers}");

    // -o json still returns the objects themselves, not a Table.
    let json: serde_json::Value = serde_json::from_str(&k.ok(&["get", "workloads", "-o", "json"])).unwrap();
    assert_eq!(json["items"][0]["spec"]["replicas"], 2);
    server.stop();
}
