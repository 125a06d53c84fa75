//! Running univrs from Git: `ui apply --wait` against a real `ui up` (its local node running
//! replicas as plain processes): it returns 0 once what was applied is current, 1 with the
//! scheduler's reason for a workload that cannot be placed or whose run failed, 2 when the time
//! is up (a replica that keeps exiting); `-o json` gives one line per object.

mod support;

use std::process::Command;

use serde_json::Value;
use support::{Up, User};

fn write(u: &User, name: &str, yaml: &str) -> String {
    let path = u.path(name);
    std::fs::write(&path, yaml).unwrap();
    path.to_str().unwrap().to_owned()
}

fn workload(name: &str, replicas: u32, policy: &str, command: &str, extra: &str) -> String {
    format!(
        "apiVersion: univrs.io/v1\nkind: Workload\nmetadata:\n  name: {name}\nspec:\n  replicas: {replicas}\n  \
         rootfs: busybox\n  command: {command}\n  trustPolicy: {policy}\n{extra}"
    )
}

const POLICIES: &str = "apiVersion: univrs.io/v1\nkind: TrustPolicy\nmetadata:\n  name: germany\nspec:\n  \
     allowedJurisdictions: [DE]\n---\napiVersion: univrs.io/v1\nkind: TrustPolicy\nmetadata:\n  name: france\n\
     spec:\n  allowedJurisdictions: [FR]\n";

#[test]
fn apply_wait_returns_once_current_fails_with_the_reason_and_times_out_with_exit_codes_ci_can_use() {
    let u = User::new();
    let up = Up::start(&u);

    // Healthy: the policies and a workload of two replicas, all current: exit 0.
    let healthy = write(
        &u,
        "healthy.yaml",
        &format!("{POLICIES}---\n{}", workload("web", 2, "germany", "[\"sleep\", \"600\"]", "")),
    );
    let run = up.ui(&u, &["apply", "-f", &healthy, "--wait", "--timeout", "120s"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    for line in ["workload/web (default): current", "trustpolicy/germany (default): current"] {
        assert!(run.stdout.contains(line), "no {line:?} in:\n{}", run.stdout);
    }
    let replicas = up.ui(&u, &["get", "replicas", "-o", "json"]).ok().json();
    let running = replicas["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["spec"]["workload"] == "web" && r["status"]["phase"] == "Running")
        .count();
    assert_eq!(running, 2, "--wait returned before the replicas ran: {replicas}");

    // Cannot be placed (its policy admits no node): exit 1, the scheduler's reason, as JSON lines.
    let stuck = write(&u, "stuck.yaml", &workload("paris", 1, "france", "[\"sleep\", \"600\"]", ""));
    let run = up.ui(&u, &["apply", "-f", &stuck, "--wait", "--timeout", "120s", "-o", "json"]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    let lines: Vec<Value> = run.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 1, "one line per object: {}", run.stdout);
    let l = &lines[0];
    assert_eq!(
        (l["kind"].as_str(), l["name"].as_str(), l["status"].as_str()),
        (Some("Workload"), Some("paris"), Some("Failed")),
        "{l}"
    );
    assert_eq!(l["result"], "created", "{l}");
    let message = l["message"].as_str().unwrap();
    assert!(
        message.contains("cannot be placed") && message.contains("jurisdiction not allowed"),
        "{message}"
    );

    // Its one run fails and is not restarted: exit 1, saying how it ended.
    let failing = write(
        &u,
        "failing.yaml",
        &workload("broken", 1, "germany", "[\"/bin/sh\", \"-c\", \"exit 3\"]", "  restartPolicy: Never\n"),
    );
    let run = up.ui(&u, &["apply", "-f", &failing, "--wait", "--timeout", "120s"]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("workload/broken (default): failed (replica broken-"), "{}", run.stdout);
    assert!(run.stdout.contains("exited with code 3"), "{}", run.stdout);

    // It keeps exiting and being restarted: never current, exit 2 when the time is up.
    let looping = write(
        &u,
        "looping.yaml",
        &workload("looping", 1, "germany", "[\"/bin/sh\", \"-c\", \"exit 3\"]", ""),
    );
    let run = up.ui(&u, &["apply", "-f", &looping, "--wait", "--timeout", "10s"]);
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("workload/looping (default): timeout (not current after 10s"),
        "{}",
        run.stdout
    );

    // Bad use is refused before anything is applied.
    u.run(&["apply", "-f", &healthy, "--wait", "--dry-run", "server"]).fails_with(&["--wait", "--dry-run"]);
    u.run(&["apply", "-f", &healthy, "--wait", "--timeout", "soon"]).fails_with(&["soon", "duration"]);
    drop(up);
}

fn kubectl(up: &Up, args: &[&str]) -> std::process::Output {
    Command::new("kubectl")
        .args(args)
        .env("KUBECONFIG", &up.kubeconfig)
        .env("KUBECTL_APPLYSET", "true")
        .env("KUBECACHEDIR", up.data.join("kube-cache"))
        .output()
        .expect("kubectl is installed")
}

fn names(up: &Up, u: &User, kind: &str) -> Vec<String> {
    let list = up.ui(u, &["get", kind, "-o", "json"]).ok().json();
    let mut names: Vec<String> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn an_apply_set_prunes_only_what_left_its_source_and_kubectl_manages_the_same_set() {
    let u = User::new();
    let up = Up::start(&u);
    let me = u.run(&["identity", "show", "-o", "json"]).ok().json()["did"].as_str().unwrap().to_owned();
    let dir = u.path("site");
    std::fs::create_dir_all(&dir).unwrap();
    let sleeper = "[\"sleep\", \"600\"]";
    // Policies first: `ui apply` applies in file order, and a workload applied before its policy
    // stays unplaceable until the scheduler sees it again.
    std::fs::write(dir.join("0-policy.yaml"), POLICIES).unwrap();
    std::fs::write(dir.join("a.yaml"), workload("a", 1, "germany", sleeper, "")).unwrap();
    std::fs::write(dir.join("b.yaml"), workload("b", 1, "germany", sleeper, "")).unwrap();
    std::fs::write(
        dir.join("keep.yaml"),
        workload("keep", 1, "germany", sleeper, "").replace(
            "metadata:\n  name: keep\n",
            "metadata:\n  name: keep\n  annotations:\n    univrs.io/prune: disabled\n",
        ),
    )
    .unwrap();
    // The files are signed once, as they would be in Git: both tools apply them as they are.
    u.run(&["sign", "-f", dir.to_str().unwrap(), "--in-place"]).ok();
    let d = dir.to_str().unwrap();
    let run = up.ui(&u, &["apply", "-f", d, "--applyset", "site", "--prune"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);

    // The parent, as kubectl defines it.
    let parent = up.ui(&u, &["get", "applysets", "site", "-o", "json"]).ok().json();
    let id = parent["metadata"]["labels"]["applyset.kubernetes.io/id"].as_str().unwrap().to_owned();
    // kubectl's: base64url(sha256("site.default.ApplySet.univrs.io")), computed by Python.
    assert_eq!(id, "applyset-0tMc9wpIKkMDnctsibdQKtqAo8Prg7Q7noZJgK6xGFI-v1", "the id is kubectl's");
    let ann = &parent["metadata"]["annotations"];
    assert_eq!(
        ann["applyset.kubernetes.io/contains-group-kinds"], "TrustPolicy.univrs.io,Workload.univrs.io",
        "{parent}"
    );
    assert!(ann["applyset.kubernetes.io/tooling"].as_str().unwrap().starts_with("kubectl/"), "{parent}");
    assert_eq!(ann["univrs.io/signer"], me.as_str());
    let a = up.ui(&u, &["get", "wl", "a", "-o", "json"]).ok().json();
    assert_eq!(a["metadata"]["labels"]["applyset.kubernetes.io/part-of"], id.as_str());

    // Another set of the same user, and a stranger's workload wearing this set's label.
    let other = write(&u, "other.yaml", &workload("c", 1, "germany", sleeper, ""));
    up.ui(&u, &["apply", "-f", &other, "--applyset", "other", "--prune"]).ok();
    let stranger = User::new();
    stranger.init_plain();
    let kc = support::kubeconfig_for(&stranger, &up.url, &up.audience, &up.data);
    let intruder = workload("intruder", 1, "germany", sleeper, "").replace(
        "metadata:\n  name: intruder\n",
        &format!("metadata:\n  name: intruder\n  labels:\n    applyset.kubernetes.io/part-of: {id}\n"),
    );
    let intruder_file = stranger.path("intruder.yaml");
    std::fs::write(&intruder_file, intruder).unwrap();
    stranger
        .run(&["apply", "-f", intruder_file.to_str().unwrap(), "--kubeconfig", kc.to_str().unwrap()])
        .ok();

    // b and keep leave the source: b is pruned; keep was never in the set (protected, so
    // unlabelled); c (another set) and the stranger's are not touched. A dry run first
    // changes nothing.
    assert_eq!(
        up.ui(&u, &["get", "wl", "keep", "-o", "json"]).ok().json()["metadata"]["labels"]["applyset.kubernetes.io/part-of"],
        Value::Null
    );
    std::fs::remove_file(dir.join("b.yaml")).unwrap();
    std::fs::remove_file(dir.join("keep.yaml")).unwrap();
    let dry = up.ui(&u, &["apply", "-f", d, "--applyset", "site", "--prune", "--dry-run", "server"]);
    assert_eq!(dry.code, 0, "{}{}", dry.stdout, dry.stderr);
    assert!(dry.stdout.contains("workload/b (default) pruned (server dry run)"), "{}", dry.stdout);
    assert_eq!(names(&up, &u, "wl"), ["a", "b", "c", "intruder", "keep"]);
    let diff = up.ui(&u, &["diff", "-f", d, "--applyset", "site", "--prune"]);
    assert_eq!(diff.code, 1, "{}{}", diff.stdout, diff.stderr);
    assert!(
        diff.stdout.contains("workload/b (default): in the set, not in the source: would be pruned"),
        "{}",
        diff.stdout
    );
    assert!(
        diff.stdout.contains("workload/intruder (default): in the set, not in the source: kept (not yours"),
        "{}",
        diff.stdout
    );
    assert!(!diff.stdout.contains("workload/keep"), "{}", diff.stdout);
    // As the CI job of the README runs it: prune and wait, exit 0 once what remains is current.
    let run = up.ui(&u, &["apply", "-f", d, "--applyset", "site", "--prune", "--wait", "--timeout", "120s"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("workload/a (default): current"), "{}", run.stdout);
    assert!(run.stdout.contains("workload/b (default) pruned"), "{}", run.stdout);
    assert!(run.stdout.contains("workload/intruder (default) kept: not yours"), "{}", run.stdout);
    assert_eq!(names(&up, &u, "wl"), ["a", "c", "intruder", "keep"]);
    // Nothing labels a protected object into a set: the apiserver refuses it, for any tool.
    let labelled = up.ui(&u, &["get", "wl", "keep", "-o", "json"]).ok().json();
    let mut labelled = labelled;
    labelled["metadata"]["labels"] = serde_json::json!({ "applyset.kubernetes.io/part-of": id });
    let file = write(&u, "keep-labelled.json", &labelled.to_string());
    let refused = up.ui(&u, &["apply", "-f", &file]);
    assert_ne!(refused.code, 0);
    assert!(refused.stderr.contains("kept out of every prune"), "{}", refused.stderr);

    // Drift: a source object signed again outside Git shows in `ui diff --applyset`.
    let resigned = u.path("a-resigned.yaml");
    std::fs::write(&resigned, workload("a", 2, "germany", sleeper, "")).unwrap();
    up.ui(&u, &["apply", "-f", resigned.to_str().unwrap(), "--applyset", "site"]).ok();
    let drift = up.ui(&u, &["diff", "-f", d, "--applyset", "site"]);
    assert_eq!(drift.code, 1, "{}{}", drift.stdout, drift.stderr);
    assert!(drift.stdout.contains("workload/a (default): changed outside the source"), "{}", drift.stdout);
    // The source's older signature cannot put it back (replay protection): sign it again.
    let back = up.ui(&u, &["apply", "-f", d, "--applyset", "site"]);
    assert!(back.stderr.contains("an older manifest cannot replace a newer one"), "{}", back.stderr);

    // kubectl manages the same set: with a gone from the same signed files, it prunes a.
    // (Its prune stops at a stranger's object wearing the set's label, which the apiserver
    // will not let it delete: ui skips those, kubectl fails. The intruder goes first.)
    stranger.run(&["delete", "wl", "intruder", "--kubeconfig", kc.to_str().unwrap()]).ok();
    std::fs::remove_file(dir.join("a.yaml")).unwrap();
    let out =
        kubectl(&up, &["apply", "-n", "default", "--prune", "--applyset=applysets.univrs.io/site", "-f", d]);
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "kubectl apply --applyset: {said}");
    assert!(said.contains("workload.univrs.io/a pruned"), "{said}");
    assert_eq!(names(&up, &u, "wl"), ["c", "keep"]);
    // And ui goes on with the set kubectl last wrote.
    std::fs::write(dir.join("a.yaml"), workload("a", 1, "germany", sleeper, "")).unwrap();
    let run = up.ui(&u, &["apply", "-f", d, "--applyset", "site", "--prune"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(names(&up, &u, "wl"), ["a", "c", "keep"]);

    // Another user cannot take the set's name in the same namespace.
    let theirs = stranger.run(&[
        "apply",
        "-f",
        &other,
        "--applyset",
        "site",
        "--prune",
        "--kubeconfig",
        kc.to_str().unwrap(),
    ]);
    assert_ne!(theirs.code, 0);
    assert!(
        theirs.stderr.contains("belongs to") && theirs.stderr.contains("not to you"),
        "{}",
        theirs.stderr
    );
    drop(up);
}
