//! Sealed secrets end to end: `ui seal` on the user's machine, a real `ui up` control plane and
//! two real node agents (`ui node run --runtime process`), the value reaching the replica's
//! process while the control plane's state, every answer of the API the test received and
//! every log show only ciphertext; a node that cannot open the value (it was sealed before the
//! node existed) refuses the replica, which is placed on another; `ui seal --refresh` seals to
//! the nodes of now and names the file it changed; a value moved to another workload does not
//! open there.

mod support;

use std::cell::RefCell;
use std::fs::File;
use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

use serde_json::Value;
use support::{User, free_port, wait_for};

const SECRET: &str = "correct-horse-battery-staple-7f3a9c";

/// `ui up` without a node of its own, its output in files.
struct Up {
    child: Child,
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every `ui` run's output, to look for the secret in at the end.
struct World {
    u: User,
    seen: RefCell<Vec<String>>,
}

impl World {
    fn ui(&self, args: &[&str]) -> support::Run {
        let kubeconfig = self.u.path("kubeconfig");
        let mut all = args.to_vec();
        all.extend(["--kubeconfig", kubeconfig.to_str().unwrap()]);
        let run = self.u.run(&all);
        self.seen.borrow_mut().push(format!("ui {}\n{}\n{}", args.join(" "), run.stdout, run.stderr));
        run
    }

    fn replicas(&self, workload: &str) -> Vec<Value> {
        let list = self.ui(&["get", "replicas", "-o", "json"]).ok().json();
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["spec"]["workload"] == workload)
            .cloned()
            .collect()
    }
}

fn summary(rs: &[Value]) -> String {
    rs.iter()
        .map(|r| {
            format!(
                "{} on {} {} ({}: {})",
                r["metadata"]["name"].as_str().unwrap_or("?"),
                r["spec"]["nodeName"].as_str().unwrap_or("-"),
                r["status"]["phase"].as_str().unwrap_or("-"),
                r["status"]["reason"].as_str().unwrap_or("-"),
                r["status"]["message"].as_str().unwrap_or("-"),
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A node agent of the user's (`ui node init/register/offer`, and `run` on demand).
struct Node {
    dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Node {
    fn register(w: &World, name: &str) -> Self {
        let dir = w.u.path(&format!("node-{name}"));
        let d = dir.to_str().unwrap();
        let listen = format!("127.0.0.1:{}", free_port());
        w.u.run(&["node", "init", "--node-dir", d, "--name", name, "--listen", &listen]).ok();
        w.ui(&["node", "register", "--node-dir", d, "--cpu", "2", "--memory", "2Gi"]).ok();
        w.ui(&["node", "offer", "--node-dir", d, "--jurisdiction", "DE", "--cpu", "2", "--memory", "2Gi"])
            .ok();
        Self { log: w.u.path(&format!("node-{name}.log")), dir, child: None }
    }

    fn run(&mut self, w: &World) {
        let log = File::options().create(true).append(true).open(&self.log).unwrap();
        let child =
            w.u.cmd(&[
                "node",
                "run",
                "--node-dir",
                self.dir.to_str().unwrap(),
                "--lease-seconds",
                "4",
                "--runtime",
                "process",
            ])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // The replicas' shims (plain processes) go too.
        let needle = self.dir.to_string_lossy().into_owned();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<i32>().ok()) else { continue };
            if std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&needle))
            {
                let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
            }
        }
    }
}

fn up(w: &World) -> Up {
    w.u.init_plain();
    let data = w.u.path("data");
    let err = File::create(w.u.path("up.stderr")).unwrap();
    let mut child =
        w.u.up_cmd(&data, &w.u.path("kubeconfig"), &["--no-node"])
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .unwrap();
    let out = child.stdout.take().unwrap();
    let first = BufReader::new(out).lines().map(|l| l.unwrap());
    let path = w.u.path("up.stdout");
    let mut file = File::create(&path).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for (i, l) in first.enumerate() {
            let _ = writeln!(file, "{l}");
            if i == 0 {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(std::time::Duration::from_secs(60)).expect("ui up starts");
    Up { child }
}

fn sha256(s: &str) -> String {
    let mut child =
        std::process::Command::new("sha256sum").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout).unwrap().split_whitespace().next().unwrap().to_owned()
}

/// Every file under `dir` (recursively).
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() { out.extend(files(&p)) } else { out.push(p) }
    }
    out
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

fn workload(name: &str, env: &str) -> String {
    format!(
        "# {name}: reads its token from the environment\napiVersion: univrs.io/v1\nkind: Workload\nmetadata:\n  name: {name}\nspec:\n  replicas: 1\n  rootfs: busybox\n  command: [\"/bin/sh\", \"-c\", \"printf %s \\\"$TOKEN\\\" | sha256sum; sleep 3600\"]\n  env:\n    - name: GREETING\n      value: hello   # not secret\n{env}"
    )
}

#[test]
fn a_sealed_value_reaches_the_process_only_and_moves_off_a_node_that_cannot_open_it() {
    let w = World { u: User::new(), seen: RefCell::default() };
    let up = up(&w);
    let dir = w.u.path("manifests");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("web.yaml");
    let plain = workload("web", &format!("    - name: TOKEN\n      secret: true\n      value: {SECRET}\n"));
    std::fs::write(&file, &plain).unwrap();

    // A value marked secret is never sent unsealed.
    w.ui(&["apply", "-f", dir.to_str().unwrap()]).fails_with(&["marked secret but not sealed"]);
    w.ui(&["get", "workload", "web"]).fails_with(&["not found"]);

    // Node b exists (not running yet); sealing now seals to it and to the user's recovery key.
    let mut b = Node::register(&w, "b");
    let sealed = w.ui(&["seal", "-f", dir.to_str().unwrap()]).ok();
    assert!(
        sealed.stdout.contains("web.yaml: sealed 1 value of workload default/web to 1 node (b)"),
        "{}",
        sealed.stdout
    );
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(!text.contains(SECRET), "{text}");
    assert!(
        text.contains("      secret: true\n      sealed: |\n        -----BEGIN AGE ENCRYPTED FILE-----"),
        "{text}"
    );
    // Nothing else in the file changed: only the value's lines.
    let before: Vec<&str> = plain.lines().filter(|l| !l.contains(SECRET)).collect();
    let after: Vec<&str> =
        text.lines().filter(|l| !l.starts_with("        ") && !l.contains("sealed: |")).collect();
    assert_eq!(before, after);

    // Node c comes after the seal: it cannot open the value. It runs first, so the replica goes
    // there, is refused, and waits for a node that can open it.
    let mut c = Node::register(&w, "c");
    c.run(&w);
    wait_for(30, "node c ready", || {
        let n = w.ui(&["get", "node", "c", "-o", "json"]).ok().json();
        let ready = n["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        if ready { Ok(()) } else { Err(n["status"].to_string()) }
    });
    w.ui(&["apply", "-f", dir.to_str().unwrap()]).ok();
    let refused = wait_for(60, "the replica refused on c, another waiting", || {
        let rs = w.replicas("web");
        let failed = rs.iter().find(|r| r["status"]["reason"] == "SealedSecretNotOpened").cloned();
        let waiting = rs.iter().any(|r| {
            r["spec"]["nodeName"].is_null()
                && r["status"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("cannot open the workload's sealed values"))
        });
        match failed {
            Some(f) if waiting => Ok(f),
            _ => Err(summary(&rs)),
        }
    });
    assert_eq!(refused["spec"]["nodeName"], "c");
    assert_eq!(refused["status"]["phase"], "Failed");
    let message = refused["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("env TOKEN: node c cannot open the sealed value")
            && message.contains("placing the replica elsewhere"),
        "{message}"
    );
    let status = w.ui(&["get", "workload", "web", "-o", "json"]).ok().json();
    let failure = status["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "ReplicaFailure")
        .unwrap()
        .clone();
    assert_eq!(failure["status"], "True", "{failure}");

    // Node b starts: the replica runs there, with the value in its environment.
    b.run(&w);
    let running = wait_for(60, "the replica running on b", || {
        let rs = w.replicas("web");
        rs.iter()
            .find(|r| r["status"]["phase"] == "Running" && r["spec"]["nodeName"] == "b")
            .cloned()
            .ok_or_else(|| summary(&rs))
    });
    let name = running["metadata"]["name"].as_str().unwrap().to_owned();
    let want = sha256(SECRET);
    wait_for(30, "the replica's output", || {
        let logs = w.ui(&["logs", &name]);
        if logs.stdout.contains(&want) { Ok(()) } else { Err(format!("{}{}", logs.stdout, logs.stderr)) }
    });
    // The refused replica stays as the record of where it cannot run, and is not restarted.
    assert_eq!(
        w.replicas("web").iter().filter(|r| r["status"]["reason"] == "SealedSecretNotOpened").count(),
        1
    );

    // The nodes changed: --refresh seals to b and c now, names the file, and a second refresh
    // changes nothing.
    let refreshed = w.ui(&["seal", "--refresh", "-f", dir.to_str().unwrap()]).ok();
    assert!(
        refreshed.stdout.contains("web.yaml: sealed again 1 value of workload default/web to 2 nodes (b, c)"),
        "{}",
        refreshed.stdout
    );
    let again = w.ui(&["seal", "--refresh", "-f", dir.to_str().unwrap()]).ok();
    assert!(
        again.stdout.contains("nothing changed") && !again.stdout.contains("web.yaml"),
        "{}",
        again.stdout
    );
    let text2 = std::fs::read_to_string(&file).unwrap();
    let changed: Vec<(&str, &str)> = text.lines().zip(text2.lines()).filter(|(a, b)| a != b).collect();
    assert!(
        changed.iter().all(|(a, _)| a.starts_with("        ")),
        "only the sealed block changed: {changed:?}"
    );
    // Applied, the new template may run anywhere, and the record goes with the old template.
    w.ui(&["apply", "-f", dir.to_str().unwrap()]).ok();
    wait_for(90, "the re-sealed workload running, the old record gone", || {
        let rs = w.replicas("web");
        let running = rs.iter().filter(|r| r["status"]["phase"] == "Running").count();
        let records = rs.iter().filter(|r| r["status"]["reason"] == "SealedSecretNotOpened").count();
        if running == 1 && records == 0 && rs.len() == 1 { Ok(()) } else { Err(summary(&rs)) }
    });

    // The sealed value copied into another workload does not open there, and is not moved
    // from node to node.
    let block: String =
        text2.lines().skip_while(|l| !l.contains("- name: TOKEN")).collect::<Vec<_>>().join("\n");
    let other = dir.join("other.yaml");
    std::fs::write(&other, workload("other", &format!("{block}\n"))).unwrap();
    w.ui(&["apply", "-f", other.to_str().unwrap()]).ok();
    let mismatch = wait_for(60, "the copied value refused", || {
        let rs = w.replicas("other");
        rs.iter()
            .find(|r| r["status"]["reason"] == "SealedSecretMismatch")
            .cloned()
            .ok_or_else(|| summary(&rs))
    });
    let message = mismatch["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("sealed for workload default/web of did:key:")
            && message.contains("not for workload default/other"),
        "{message}"
    );
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(w.replicas("other").len(), 1, "{}", summary(&w.replicas("other")));

    // Nowhere in the control plane, its answers or the logs is the value.
    drop(b);
    drop(c);
    // Stopped as an operator stops it (`ui down`: SIGTERM, then waits), its state machine
    // closes durably, so state.redb holds every record there is to search. Killed, the file
    // would hold only what its last durable commit (one every five seconds) made durable; the
    // rest is in the log's segments, searched below too.
    let data = w.u.path("data");
    w.u.run(&["down", "--data-dir", data.to_str().unwrap(), "--timeout", "60"]).ok();
    drop(up);
    let (mut looked, mut walked) = (0, 0);
    for f in files(&data) {
        let bytes = std::fs::read(&f).unwrap_or_default();
        assert!(!contains(&bytes, SECRET), "the secret is in {}", f.display());
        // Records are stored packed: each is searched unpacked too.
        if f.extension().is_some_and(|e| e == "redb" || e == "wal")
            && !apiserver::raft::is_tombstone(&f).unwrap()
        {
            let records = apiserver::raft::stored_records(&f).unwrap();
            assert!(!records.is_empty(), "{} holds records", f.display());
            assert!(!records.iter().any(|r| contains(r, SECRET)), "the secret is in {}", f.display());
            looked += usize::from(f.ends_with("state.redb"));
            walked += usize::from(f.extension().is_some_and(|e| e == "wal"));
        }
    }
    assert!(looked >= 1, "state.redb was looked at");
    assert!(walked >= 1, "a segment of the Raft log was looked at");
    for log in ["up.stdout", "up.stderr", "node-b.log", "node-c.log"] {
        let bytes = std::fs::read(w.u.path(log)).unwrap();
        assert!(!contains(&bytes, SECRET), "the secret is in {log}");
    }
    for answer in w.seen.borrow().iter() {
        assert!(!answer.contains(SECRET), "the secret is in an answer:\n{answer}");
    }
    // The replicas' own output has only its hash.
    for f in files(&w.u.path("node-b").join("state")).into_iter().filter(|f| f.ends_with("output.log")) {
        let bytes = std::fs::read(&f).unwrap();
        assert!(!contains(&bytes, SECRET) && contains(&bytes, &want) || bytes.is_empty(), "{}", f.display());
    }
}
