//! An acknowledged write is never lost: `ui apiserver` is killed with SIGKILL while clients
//! write concurrently, restarted on its data dir, and every write it acknowledged is there
//! with the revision it was acknowledged at.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use support::{Server, User};

/// A Replica: unsigned, written by the control plane (the test writes as its member).
fn replica(name: &str) -> String {
    serde_json::json!({ "apiVersion": "univrs.io/v1", "kind": "Replica",
        "metadata": { "name": name }, "spec": { "workload": "w", "container": { "rootfs": "busybox" } } })
    .to_string()
}

#[test]
fn acknowledged_writes_survive_kill_9_of_the_server() {
    let u = User::new();
    let data = u.path("data");
    let server = Server::start(&u, &data);
    let url = format!("{}/apis/univrs.io/v1/namespaces/default/replicas", server.url);
    let bearer = format!("Bearer {}", server.member_token());
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (url, stop, bearer, agent) = (url.clone(), stop.clone(), bearer.clone(), server.agent());
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let name = format!("w{w}-{i}");
                    let Ok(mut response) = agent
                        .post(&url)
                        .header("Authorization", &bearer)
                        .content_type("application/json")
                        .send(replica(&name))
                    else {
                        break; // the server is gone
                    };
                    if response.status() != 201 {
                        break;
                    }
                    let body: serde_json::Value =
                        serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap();
                    acked.push((name, body["metadata"]["resourceVersion"].as_str().unwrap().to_owned()));
                }
                acked
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    server.kill_9();
    stop.store(true, Ordering::Relaxed);
    let acked: Vec<(String, String)> = writers.into_iter().flat_map(|w| w.join().unwrap()).collect();
    assert!(acked.len() > 20, "the writers got too little done to prove anything: {}", acked.len());

    let server = Server::start(&u, &data);
    let agent = server.agent();
    let url = format!("{}/apis/univrs.io/v1/namespaces/default/replicas", server.url);
    let list: serde_json::Value = serde_json::from_str(
        &agent
            .get(&url)
            .header("Authorization", &bearer)
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap(),
    )
    .unwrap();
    let stored: std::collections::HashMap<String, String> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["metadata"]["name"].as_str().unwrap().to_owned(),
                o["metadata"]["resourceVersion"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for (name, rv) in &acked {
        assert_eq!(stored.get(name), Some(rv), "acknowledged write {name} at {rv} was lost or changed");
    }
    server.stop();
}
