//! The real kubectl against `ui apiserver` on a real port: discovery, create, get, errors,
//! delete, and a restart that resumes from the data dir.

mod support;

use support::{Kubectl, Server, User, workspace};

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
fn the_unauthenticated_api_refuses_to_listen_beyond_loopback() {
    let u = User::new();
    let r = u.run(&["apiserver", "--data-dir", u.path("d").to_str().unwrap(), "--listen", "0.0.0.0:0"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("loopback"), "{}", r.stderr);
}
