//! `ui sign` and `ui verify` on real files, and every kind of bad input.

mod support;

use std::fs;

use support::{User, copy_examples, mode, workspace};

fn examples() -> String {
    workspace().join("manifests").to_str().unwrap().to_owned()
}

#[test]
fn sign_the_examples_then_verify_them() {
    let u = User::new();
    let did = u.init_plain();
    let signed = u.run(&["sign", "-f", &examples()]).ok().stdout;
    let out = u.path("signed.yaml");
    fs::write(&out, &signed).unwrap();
    let out = out.to_str().unwrap();

    let report = u.run(&["verify", "-f", out]).ok().stdout;
    assert_eq!(report.lines().count(), 8, "{report}");
    assert!(report.lines().all(|l| l.starts_with("ok ") && l.contains(&did)), "{report}");

    let json = u.run(&["verify", "-f", out, "-o", "json"]).ok().json();
    let docs = json.as_array().unwrap();
    assert_eq!(docs.len(), 8);
    for d in docs {
        assert_eq!(d["ok"], true, "{d}");
        assert_eq!(d["signer"], did.as_str());
        assert!(d["signedAt"].as_str().unwrap().ends_with('Z'));
    }
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    for k in ["Workload", "TrustPolicy", "NodeOffer", "CreditGrant", "Attestation", "Transfer"] {
        assert!(kinds.contains(&k), "{kinds:?}");
    }

    u.run(&["verify", "-f", out, "--signer", &did]).ok();
    let other = User::new();
    let other_did = other.init_plain();
    let r = u.run(&["verify", "-f", out, "--signer", &other_did]);
    assert_eq!(r.code, 1);
    assert!(r.stdout.contains("not by"), "{}", r.stdout);
}

#[test]
fn a_change_after_signing_fails_verification_and_exit_is_1() {
    let u = User::new();
    u.init_plain();
    let signed = u.run(&["sign", "-f", &format!("{}/hello-workload.yaml", examples())]).ok().stdout;
    let cases = [
        ("replicas: 2", "replicas: 20"),
        ("name: hello", "name: hello2"),
        ("app: hello", "app: evil"),
        ("memory: 32Mi", "memory: 64Mi"),
    ];
    for (from, to) in cases {
        assert!(signed.contains(from), "{from} not in {signed}");
        let path = u.path("tampered.yaml");
        fs::write(&path, signed.replacen(from, to, 1)).unwrap();
        let r = u.run(&["verify", "-f", path.to_str().unwrap()]);
        assert_eq!(r.code, 1, "{from} -> {to}: {}", r.stdout);
        assert!(
            r.stdout.starts_with("FAIL") && r.stdout.contains("signature does not match"),
            "{}",
            r.stdout
        );
    }
    let unsigned = format!("{}/hello-workload.yaml", examples());
    let r = u.run(&["verify", "-f", &unsigned]);
    assert_eq!(r.code, 1);
    assert!(r.stdout.contains("not signed"), "{}", r.stdout);
}

#[test]
fn server_and_kubectl_fields_added_later_do_not_break_the_signature() {
    let u = User::new();
    u.init_plain();
    let signed = u.run(&["sign", "-f", &format!("{}/hello-workload.yaml", examples())]).ok().stdout;
    let stored = signed.replacen(
        "metadata:\n",
        "metadata:\n  uid: 6f1c0d6e-1111-4c1e-9a4e-000000000001\n  resourceVersion: \"42\"\n  generation: 3\n  \
         creationTimestamp: \"2026-11-24T10:00:00Z\"\n  finalizers: [univrs.io/cleanup]\n  \
         managedFields: [{manager: kubectl, operation: Apply}]\n",
        1,
    ) + "status:\n  replicas: 2\n  readyReplicas: 1\n";
    let stored = stored.replacen(
        "  annotations:\n",
        "  annotations:\n    kubectl.kubernetes.io/last-applied-configuration: '{\"apiVersion\":\"univrs.io/v1\"}'\n",
        1,
    );
    let path = u.path("stored.yaml");
    fs::write(&path, &stored).unwrap();
    u.run(&["verify", "-f", path.to_str().unwrap()]).ok();
}

#[test]
fn json_and_flow_yaml_give_the_same_signature_payload() {
    // Sign a block-style YAML, rewrite the signed object as JSON and as flow YAML with other
    // key orders: all three verify.
    let u = User::new();
    u.init_plain();
    let signed = u.run(&["sign", "-f", &format!("{}/creditgrant.yaml", examples())]).ok().stdout;
    let docs = api::manifest::parse_documents(&signed).unwrap();
    let json = serde_json::to_string_pretty(&docs[0]).unwrap();
    let flow = serde_json::to_string(&reverse(&docs[0])).unwrap(); // JSON is flow-style YAML
    for (name, text) in [("signed.json", json), ("flow.yaml", flow)] {
        let p = u.path(name);
        fs::write(&p, text).unwrap();
        u.run(&["verify", "-f", p.to_str().unwrap()]).ok();
    }
}

fn reverse(v: &serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => m.iter().rev().map(|(k, v)| (k.clone(), reverse(v))).collect(),
        serde_json::Value::Array(a) => a.iter().map(reverse).collect(),
        other => other.clone(),
    }
}

#[test]
fn in_place_signs_every_file_and_keeps_its_mode() {
    let u = User::new();
    u.init_plain();
    let dir = u.path("repo");
    copy_examples(&dir);
    let file = dir.join("transfer.yaml");
    std::os::unix::fs::PermissionsExt::set_mode(&mut fs::metadata(&file).unwrap().permissions(), 0o644);
    fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o640)).unwrap();
    let r = u.run(&["sign", "-f", dir.to_str().unwrap(), "--in-place"]).ok();
    assert!(r.stdout.is_empty());
    assert!(r.stderr.contains("Signed 8 document(s) in 8 file(s)"), "{}", r.stderr);
    assert_eq!(mode(&file), 0o640);
    u.run(&["verify", "-f", dir.to_str().unwrap()]).ok();
    // Signing again is fine: the old signature is replaced.
    u.run(&["sign", "-f", dir.to_str().unwrap(), "--in-place"]).ok();
    u.run(&["verify", "-f", dir.to_str().unwrap()]).ok();
}

#[test]
fn one_bad_document_means_nothing_is_written() {
    let u = User::new();
    u.init_plain();
    let dir = u.path("repo");
    copy_examples(&dir);
    let bad = dir.join("zz-bad.yaml");
    fs::write(
        &bad,
        "apiVersion: univrs.io/v1\nkind: Workload\nmetadata:\n  name: fine\nspec:\n  image: x\n---\n\
         apiVersion: univrs.io/v1\nkind: Workload\nmetadata:\n  name: broken\nspec:\n  replicas: -1\n  image: x\n",
    )
    .unwrap();
    let before: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| fs::read(e.unwrap().path()).unwrap()).collect();
    u.run(&["sign", "-f", dir.to_str().unwrap(), "--in-place"]).fails_with(&[
        "nothing was signed",
        "zz-bad.yaml:13: document 2 (Workload/broken): spec.replicas: must be >= 0",
    ]);
    let after: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| fs::read(e.unwrap().path()).unwrap()).collect();
    assert_eq!(before, after, "files changed although signing failed");
}

#[test]
fn bad_input_gets_a_clear_error_naming_file_document_and_field() {
    let u = User::new();
    u.init_plain();
    let cases: &[(&str, &[u8], &[&str])] = &[
        ("malformed.yaml", b"kind: Workload\nspec: [1, 2\nname: x\n", &["malformed.yaml: line "]),
        (
            "unknown-kind.yaml",
            b"apiVersion: univrs.io/v1\nkind: Workload\nmetadata: {name: a}\nspec: {image: x}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n",
            &["unknown-kind.yaml:6: document 2 (Deployment/d): apiVersion: unknown apiVersion \"apps/v1\"", "unknown-kind.yaml:7: document 2 (Deployment/d): kind: unknown kind \"Deployment\""],
        ),
        (
            "missing-field.yaml",
            b"apiVersion: univrs.io/v1\nkind: NodeOffer\nmetadata: {name: n}\nspec:\n  node: n\n  resources: {cpu: 2}\n",
            &["missing-field.yaml:5: document 1 (NodeOffer/n): spec.jurisdiction: required"],
        ),
        (
            "wrong-type.yaml",
            b"apiVersion: univrs.io/v1\nkind: Workload\nmetadata: {name: a}\nspec: {image: x, resources: {memory: lots}}\n",
            &["wrong-type.yaml:4: document 1 (Workload/a): spec.resources.memory: not a quantity: write a number with an optional suffix, e.g. 500m, 2, 256Mi, 1G"],
        ),
        (
            "unknown-field.yaml",
            b"apiVersion: univrs.io/v1\nkind: Workload\nmetadata: {name: a}\nspec: {image: x, replica: 3}\n",
            &["unknown-field.yaml:4: document 1 (Workload/a): spec.replica: unknown field (known here: replicas, image"],
        ),
        ("duplicate.yaml", b"apiVersion: univrs.io/v1\nkind: Workload\nkind: Node\n", &["duplicate.yaml: line 3", "duplicate mapping key"]),
        ("binary.yaml", b"\xff\xfe\x00kind", &["binary.yaml: not UTF-8"]),
        ("norway.yaml", b"apiVersion: univrs.io/v1\nkind: NodeOffer\nmetadata: {name: n}\nspec: {node: n, resources: {cpu: 1}, jurisdiction: NO, region: no}\n", &[]),
    ];
    for (name, content, needles) in cases {
        let p = u.path(name);
        fs::write(&p, content).unwrap();
        let r = u.run(&["sign", "-f", p.to_str().unwrap()]);
        if needles.is_empty() {
            // YAML 1.1 would read `NO` as false; we read it as Norway.
            let r = r.ok();
            assert!(r.stdout.contains("jurisdiction: \"NO\""), "{}", r.stdout);
        } else {
            r.fails_with(needles);
        }
    }

    let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..10 {
        bomb.push_str(&format!("a{i}: &a{i} [{}]\n", vec![format!("*a{}", i - 1); 10].join(", ")));
    }
    let p = u.path("bomb.yaml");
    fs::write(&p, bomb).unwrap();
    u.run(&["sign", "-f", p.to_str().unwrap()]).fails_with(&["bomb.yaml", "alias bomb"]);

    let p = u.path("huge.yaml");
    fs::write(&p, format!("a: \"{}\"\n", "x".repeat(5 << 20))).unwrap();
    u.run(&["sign", "-f", p.to_str().unwrap()]).fails_with(&["huge.yaml", "limit"]);

    u.run(&["sign", "-f", "/nonexistent/dir"]).fails_with(&["/nonexistent/dir"]);
    let empty = u.path("empty-dir");
    fs::create_dir(&empty).unwrap();
    u.run(&["sign", "-f", empty.to_str().unwrap()]).fails_with(&["no manifests"]);
}

#[test]
fn stdin_works_for_sign_and_verify() {
    let u = User::new();
    u.init_plain();
    let text = fs::read_to_string(workspace().join("manifests/eu-only-trustpolicy.yaml")).unwrap();
    let signed = u.run_with_stdin(&["sign", "-f", "-"], &text).ok().stdout;
    let r = u.run_with_stdin(&["verify", "-f", "-"], &signed).ok();
    assert!(r.stdout.starts_with("ok    <stdin>#1 TrustPolicy/default/eu-only"), "{}", r.stdout);
    u.run_with_stdin(&["sign", "-f", "-", "--in-place"], &text)
        .fails_with(&["--in-place cannot rewrite standard input"]);
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    // `ui sign -f manifests/ | head -1`: the reader goes away early; ui must not panic.
    let u = User::new();
    u.init_plain();
    let mut child = u
        .cmd(&["sign", "-f", workspace().join("manifests").to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
}
