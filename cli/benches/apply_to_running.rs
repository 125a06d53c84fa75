//! How long a workload takes from `ui apply` to Running on this machine: `ui up` (apiserver,
//! controllers, local node agent, containers when run as root) on a temp dir, then one
//! single-replica workload after another, each timed from the start of `ui apply` until the
//! API shows its replica Running (polled every 10 ms over the API). Prints min, median, p90
//! and max.
//!
//! `cargo bench -p cli --bench apply_to_running [-- N]` (N workloads, default 20).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn main() {
    let n: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(20);
    let ui = env!("CARGO_BIN_EXE_ui");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    let kubeconfig = dir.path().join("kubeconfig");
    let run = |args: &[&str]| {
        let out = Command::new(ui).args(args).env("UNIVRS_CONFIG_DIR", &config).output().unwrap();
        assert!(out.status.success(), "ui {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    run(&["init", "--no-passphrase"]);
    let data = dir.path().join("data");
    let mut up = Command::new(ui)
        .args(["up", "--data-dir", data.to_str().unwrap(), "--listen", "127.0.0.1:0"])
        .args(["--kubeconfig", kubeconfig.to_str().unwrap(), "--node-name", "bench"])
        .env("UNIVRS_CONFIG_DIR", &config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(up.stdout.take().unwrap()).lines().map(Result::unwrap);
    let local = lines.find(|l| l.starts_with("local node ")).expect("ui up started its node");
    std::thread::spawn(move || for _ in lines {});
    println!("{local}");
    let k = kubeconfig.to_str().unwrap().to_owned();
    let mut times = Vec::new();
    for i in 0..n {
        let name = format!("bench-{i}");
        let file = dir.path().join(format!("{name}.yaml"));
        std::fs::write(
            &file,
            format!(
                "apiVersion: univrs.io/v1\nkind: Workload\nmetadata:\n  name: {name}\nspec:\n  replicas: 1\n  rootfs: busybox\n  command: [\"/bin/sh\", \"-c\", \"sleep 600\"]\n  resources:\n    cpu: 10m\n    memory: 16Mi\n"
            ),
        )
        .unwrap();
        let start = Instant::now();
        run(&["apply", "-f", file.to_str().unwrap(), "--kubeconfig", &k]);
        loop {
            let list = run(&["get", "replicas", "-o", "json", "--kubeconfig", &k]);
            let v: serde_json::Value = serde_json::from_str(&list).unwrap();
            let running = v["items"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["spec"]["workload"] == name.as_str() && r["status"]["phase"] == "Running");
            if running {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(60), "{name} not running after 60 s");
            std::thread::sleep(Duration::from_millis(10));
        }
        times.push(start.elapsed());
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "apply to Running, {n} workloads one after another: min {:.0} ms, median {:.0} ms, p90 {:.0} ms, max {:.0} ms",
        ms(times[0]),
        ms(times[n / 2]),
        ms(times[(n * 9 / 10).min(n - 1)]),
        ms(times[n - 1])
    );
    let _ = up.kill();
    let _ = up.wait();
    // The replicas' shims outlive `ui up` by design: stop them.
    let _ = Command::new("pkill").args(["-TERM", "-f", data.to_str().unwrap()]).status();
    std::thread::sleep(Duration::from_secs(6));
}
