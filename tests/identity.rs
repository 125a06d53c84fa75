//! `ui init`, `ui identity …`, `ui config …`, `ui version` as a user runs them.

mod support;

use std::fs;

use support::{User, mode};

#[test]
fn init_creates_an_encrypted_identity_with_private_modes() {
    let u = User::new();
    let out = u.run_with_passphrase("correct horse", &["init", "-o", "json"]).ok().json();
    let did = out["did"].as_str().unwrap();
    assert!(did.starts_with("did:key:z6Mk"), "{did}");
    assert_eq!(out["encrypted"], true);

    let cfg = u.config();
    for dir in [cfg.clone(), cfg.join("identity"), cfg.join("policy")] {
        assert_eq!(mode(&dir), 0o700, "{}", dir.display());
    }
    for file in ["identity/keypair.age", "identity/public.key", "config.toml"] {
        assert_eq!(mode(&cfg.join(file)), 0o600, "{file}");
    }
    assert!(!cfg.join("identity/keypair.json").exists());
    let sealed = fs::read(cfg.join("identity/keypair.age")).unwrap();
    assert!(sealed.starts_with(b"age-encryption.org/v1"), "keypair.age is not an age file");
    assert!(!String::from_utf8_lossy(&sealed).contains("AGE-SECRET-KEY"), "private key in the clear");

    let shown = u.run(&["identity", "show", "-o", "json"]).ok().json();
    assert_eq!(shown["did"], did);
    assert!(shown["ageRecipient"].as_str().unwrap().starts_with("age1"));
    assert_eq!(shown["encrypted"], true);
    assert!(shown["keyFile"].as_str().unwrap().ends_with("identity/keypair.age"));
    let text = u.run(&["identity", "show"]).ok().stdout;
    assert!(text.contains(did), "{text}");
}

#[test]
fn init_refuses_to_overwrite_an_identity_without_force() {
    let u = User::new();
    let first = u.init_plain();
    let before = fs::read(u.config().join("identity/public.key")).unwrap();
    u.run(&["init", "--no-passphrase"]).fails_with(&["already exists", &first, "--force"]);
    assert_eq!(fs::read(u.config().join("identity/public.key")).unwrap(), before, "identity changed");

    let second = u.run(&["init", "--no-passphrase", "--force", "-o", "json"]).ok().json();
    assert_ne!(second["did"], first.as_str());
    let entries: Vec<_> = fs::read_dir(u.config()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(entries.iter().all(|n| !n.to_string_lossy().starts_with('.')), "leftovers: {entries:?}");
}

#[test]
fn init_without_any_passphrase_source_writes_nothing() {
    let u = User::new();
    u.run(&["init"]).fails_with(&["passphrase", "UNIVRS_PASSPHRASE", "--passphrase-file"]);
    assert!(!u.config().join("identity").exists());
    u.run(&["identity", "show"]).fails_with(&["no identity", "ui init"]);
}

#[test]
fn no_passphrase_is_loud_and_stores_plain_keys() {
    let u = User::new();
    let run = u.run(&["init", "--no-passphrase"]).ok();
    assert!(run.stderr.contains("UNENCRYPTED"), "{}", run.stderr);
    assert_eq!(mode(&u.config().join("identity/keypair.json")), 0o600);
    assert_eq!(u.run(&["identity", "show", "-o", "json"]).ok().json()["encrypted"], false);
}

#[test]
fn passphrase_file_wrong_passphrase_and_damaged_key_files() {
    let u = User::new();
    let pass = u.path("pass");
    fs::write(&pass, "from a file\n").unwrap();
    let pass = pass.to_str().unwrap();
    u.run(&["init", "--passphrase-file", pass]).ok();
    let manifest = support::workspace().join("manifests/nodeoffer.yaml");
    let manifest = manifest.to_str().unwrap();
    u.run(&["sign", "-f", manifest, "--passphrase-file", pass]).ok();

    let signed_out = u
        .run_with_passphrase("not it", &["sign", "-f", manifest])
        .fails_with(&["wrong passphrase", "keypair.age"]);
    assert!(signed_out.stdout.is_empty(), "printed something despite failing");

    let key = u.config().join("identity/keypair.age");
    let good = fs::read(&key).unwrap();
    fs::write(&key, &good[..good.len() / 2]).unwrap();
    u.run(&["sign", "-f", manifest, "--passphrase-file", pass])
        .fails_with(&["keypair.age", "corrupt or truncated"]);
    fs::write(&key, b"not an age file at all").unwrap();
    u.run(&["sign", "-f", manifest, "--passphrase-file", pass]).fails_with(&["keypair.age", "corrupt"]);

    let empty = u.path("empty");
    fs::write(&empty, "").unwrap();
    u.run(&["sign", "-f", manifest, "--passphrase-file", empty.to_str().unwrap()]).fails_with(&["empty"]);
}

#[test]
fn a_plain_key_file_that_is_corrupt_or_foreign_is_named() {
    let u = User::new();
    u.init_plain();
    let manifest = support::workspace().join("manifests/nodeoffer.yaml");
    let manifest = manifest.to_str().unwrap();
    let key = u.config().join("identity/keypair.json");
    let good = fs::read_to_string(&key).unwrap();
    fs::write(&key, &good[..20]).unwrap();
    u.run(&["sign", "-f", manifest]).fails_with(&["keypair.json is corrupt"]);

    // A private key from another identity next to this public.key.
    let other = User::new();
    other.init_plain();
    fs::copy(other.config().join("identity/keypair.json"), &key).unwrap();
    u.run(&["sign", "-f", manifest]).fails_with(&["do not belong together"]);
}

#[test]
fn export_and_import_restore_the_same_identity() {
    let u = User::new();
    let did = u.run_with_passphrase("pw-1", &["init", "-o", "json"]).ok().json()["did"]
        .as_str()
        .unwrap()
        .to_owned();
    let backup = u.path("backup.age");
    let backup = backup.to_str().unwrap();
    u.run_with_passphrase("pw-1", &["identity", "export", "--out", backup]).ok();
    assert_eq!(mode(std::path::Path::new(backup)), 0o600);
    u.run_with_passphrase("pw-1", &["identity", "export", "--out", backup])
        .fails_with(&["exists", "--force"]);

    let v = User::new();
    v.run_with_passphrase("wrong", &["identity", "import", backup]).fails_with(&["wrong passphrase"]);
    assert!(!v.config().join("identity").exists(), "a failed import wrote something");
    let restored = v.run_with_passphrase("pw-1", &["identity", "import", backup, "-o", "json"]).ok().json();
    assert_eq!(restored["did"], did.as_str());
    assert_eq!(v.run(&["identity", "show", "-o", "json"]).ok().json()["did"], did.as_str());
    v.run_with_passphrase("pw-1", &["identity", "import", backup]).fails_with(&["already exists"]);

    // The restored key signs as the original identity.
    let manifest = support::workspace().join("manifests/creditgrant.yaml");
    let signed = v.run_with_passphrase("pw-1", &["sign", "-f", manifest.to_str().unwrap()]).ok().stdout;
    assert!(signed.contains(&did), "{signed}");
}

#[test]
fn config_and_version_speak_json() {
    let u = User::new();
    u.init_plain();
    let cfg = u.run(&["config", "show", "-o", "json"]).ok().json();
    assert_eq!(cfg["ai"]["enabled"], false);
    // The same keys as config.toml.
    assert_eq!(cfg["observability"]["metrics_enabled"], false);
    let paths = u.run(&["config", "path", "-o", "json"]).ok().json();
    assert_eq!(paths["configDir"], u.config().to_str().unwrap());
    assert!(paths["configFile"].as_str().unwrap().ends_with("config.toml"));

    fs::write(u.config().join("config.toml"), "[ai]\nenabeld = true\n").unwrap();
    u.run(&["config", "show"]).fails_with(&["config.toml", "enabeld"]);

    let v = u.run(&["version", "-o", "json"]).ok().json();
    assert_eq!(v["apiVersion"], "univrs.io/v1");
    assert!(u.run(&["version"]).ok().stdout.starts_with("ui "));
}

#[test]
fn help_explains_every_command() {
    let u = User::new();
    let help = u.run(&["--help"]).ok().stdout;
    for cmd in ["init", "identity", "sign", "verify", "config", "version"] {
        assert!(help.contains(cmd), "--help lacks {cmd}:\n{help}");
    }
    let sign = u.run(&["sign", "--help"]).ok().stdout;
    assert!(sign.contains("--in-place") && sign.contains("-f"), "{sign}");
    u.run(&["sign"]).fails_with(&["--filename"]);
}

#[test]
fn an_unlocked_key_signs_without_the_passphrase_until_locked_or_run_out() {
    let u = User::new();
    u.run_with_passphrase("correct horse", &["init"]).ok();
    let manifest = u.path("w.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: univrs.io/v1\nkind: Workload\nmetadata:\n  name: w\nspec:\n  rootfs: busybox\n",
    )
    .unwrap();
    let m = manifest.to_str().unwrap();
    // Locked: no passphrase, no terminal, no signature.
    u.run(&["sign", "-f", m]).fails_with(&["a passphrase is needed"]);
    u.run_with_passphrase("wrong", &["unlock"]).fails_with(&["passphrase"]);

    u.run_with_passphrase("correct horse", &["unlock", "--for", "60s"]).ok();
    assert_eq!(support::mode(&u.config().join("agent/agent.sock")), 0o600, "only the user reaches the agent");
    assert_eq!(support::mode(&u.config().join("agent")), 0o700, "in a directory only the user opens");
    let signed = u.run(&["sign", "-f", m]).ok().stdout;
    let verified = u.run_with_stdin(&["verify", "-f", "-"], &signed);
    assert_eq!(verified.code, 0, "{}", verified.stderr);
    // kubectl's credential plugin, too.
    let token = u.run(&["token", "--audience", "univrs:test", "--exec-credential"]).ok().json();
    assert!(token["status"]["token"].as_str().is_some_and(|t| t.split('.').count() == 3), "{token}");

    let locked = u.run(&["lock"]).ok().stdout;
    assert!(locked.contains("forgot your key"), "{locked}");
    u.run(&["sign", "-f", m]).fails_with(&["a passphrase is needed"]);
    assert!(!u.config().join("agent/agent.sock").exists());

    // A passphrase typed on a terminal (a pty, as `script` gives one) keeps the key unlocked.
    let ui = env!("CARGO_BIN_EXE_ui");
    let typed = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("printf 'correct horse\\n' | script -qec '{ui} sign -f {m}' /dev/null"))
        .env("UNIVRS_CONFIG_DIR", u.config())
        .env_remove("UNIVRS_PASSPHRASE")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&typed.stdout);
    assert!(said.contains("your key stays unlocked for 15 min"), "{said}");
    u.run(&["sign", "-f", m]).ok();
    u.run(&["lock"]).ok();

    // It runs out by itself.
    u.run_with_passphrase("correct horse", &["unlock", "--for", "2s"]).ok();
    u.run(&["sign", "-f", m]).ok();
    support::wait_for(10, "the unlock to run out", || {
        let r = u.run(&["sign", "-f", m]);
        if r.code != 0 && r.stderr.contains("a passphrase is needed") { Ok(()) } else { Err(r.stderr) }
    });
}
