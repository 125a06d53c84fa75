//! The official Python `kubernetes` client against `ui apiserver` on a real port, over TLS and
//! authenticated with the exec credential plugin of the kubeconfigs the server wrote: the
//! checks are in `tests/python/client_test.py` (CustomObjectsApi CRUD of Replicas through the
//! member's kubeconfig, label selectors, pagination, dryRun, merge patch, 409 on a stale
//! replace, the status subresource, watch, the dynamic client's discovery; 403 for the user's
//! kubeconfig, 401 without credentials).
//! Needs `python3` with `pip install kubernetes`; without it the test fails, never skips.

mod support;

use std::process::Command;

use support::{Server, User, workspace};

#[test]
fn the_python_kubernetes_client_works_unchanged() {
    let u = User::new();
    let server = Server::start(&u, &u.path("data"));
    let script = workspace().join("tests/python/client_test.py");
    let out = Command::new("python3")
        .arg(&script)
        // The member may write Replicas; the user (the second kubeconfig) may only read them.
        .arg(server.member_kubeconfig())
        .arg(&server.kubeconfig)
        // The client honours proxy settings; the server is on loopback.
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .output()
        .expect("python3 is installed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code() != Some(3),
        "the Python kubernetes client is missing: pip install kubernetes (see .ci/run)\n{stderr}"
    );
    assert!(out.status.success(), "{} failed ({}):\n{stdout}\n{stderr}", script.display(), out.status);
    assert!(stdout.contains("all checks passed"), "{stdout}");
    server.stop();
}
