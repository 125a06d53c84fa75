//! A control plane of three `ui apiserver` processes on loopback: grown with `ui cluster add`
//! and `--join`, writes through any member, `ui cluster members`, kill -9 of the leader under
//! writes from several clients (a new leader within seconds, no acknowledged write lost, none
//! applied twice), `ui` failing over between the kubeconfig's servers, a restarted member
//! catching up, and a wiped member removed, re-added and catching up; `kubectl cluster-info`
//! naming every member.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Kubectl, Server, User, free_port, plain, send, send_for_header, wait_for};

/// Makes `data`'s member key up front, so the test knows the member's did before it starts
/// (an operator reads it from the refused `--join`, or from the member's first start).
fn member_key(data: &Path) -> String {
    std::fs::create_dir_all(data).unwrap();
    let key = ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng);
    let hex: String = key.to_bytes().iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(data.join("member.key"), hex).unwrap();
    api::identity::Did::from_key(&key.verifying_key()).as_str().to_owned()
}

struct Member {
    user: User,
    server: Option<Server>,
    data: std::path::PathBuf,
    peer: String,
    did: String,
}

impl Member {
    fn server(&self) -> &Server {
        self.server.as_ref().unwrap()
    }
}

fn start(user: &User, data: &Path, peer: &str, join: Option<&str>) -> Server {
    let mut extra = vec!["--peer-listen", peer];
    if let Some(j) = join {
        extra.extend(["--join", j]);
    }
    Server::start_with(user, data, "127.0.0.1:0", &extra)
}

/// `ui cluster members -o json` through `kubeconfig`.
fn members(user: &User, kubeconfig: &Path) -> Vec<Value> {
    let out =
        user.run(&["cluster", "members", "-o", "json", "--kubeconfig", kubeconfig.to_str().unwrap()]).ok();
    out.json().as_array().unwrap().clone()
}

fn replica(name: &str) -> String {
    serde_json::json!({ "apiVersion": "univrs.io/v1", "kind": "Replica",
        "metadata": { "name": name }, "spec": { "workload": "w", "container": { "rootfs": "busybox" } } })
    .to_string()
}

/// name → resourceVersion of every Replica, read (linearizably) from `server`.
fn replicas(server: &Server, bearer: &str) -> BTreeMap<String, String> {
    let url = format!("{}/apis/univrs.io/v1/namespaces/default/replicas", server.url);
    // A linearizable read is refused (503) while no leader is known, e.g. during an election
    // that a loaded machine made slow: asked again until one is.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (code, body) = loop {
        let (code, body) = send(&server.agent(), "GET", &url, bearer, "application/json", vec![]);
        if code != 503 || Instant::now() >= deadline {
            break (code, body);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(code, 200, "{body}");
    let list: Value = serde_json::from_str(&body).unwrap();
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let m = &i["metadata"];
            (m["name"].as_str().unwrap().to_owned(), m["resourceVersion"].as_str().unwrap().to_owned())
        })
        .collect()
}

fn wait_until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn three_members_survive_kill_9_of_the_leader_under_writes_and_a_wiped_member_rejoins() {
    // Grow 1 → 3: the founder, then two members added by a member and started with --join.
    let founder_user = User::new();
    let founder_data = founder_user.path("data");
    let founder_peer = format!("127.0.0.1:{}", free_port());
    let founder = start(&founder_user, &founder_data, &founder_peer, None);
    let founder_did = {
        let key = std::fs::read_to_string(founder_data.join("member.key")).unwrap();
        let bytes: Vec<u8> =
            (0..32).map(|i| u8::from_str_radix(&key.trim()[2 * i..2 * i + 2], 16).unwrap()).collect();
        let key = ed25519_dalek::SigningKey::from_bytes(&bytes.try_into().unwrap());
        api::identity::Did::from_key(&key.verifying_key()).as_str().to_owned()
    };
    let join = format!("{founder_did}@{founder_peer}");
    let mut all = vec![Member {
        user: founder_user,
        server: Some(founder),
        data: founder_data,
        peer: founder_peer,
        did: founder_did,
    }];
    for _ in 0..2 {
        let user = User::new();
        let data = user.path("data");
        let did = member_key(&data);
        let peer = format!("127.0.0.1:{}", free_port());
        // A member that nobody added is refused, and told what to do.
        let refused = user
            .run(&[
                "apiserver",
                "--data-dir",
                data.to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
                "--peer-listen",
                &peer,
                "--join",
                &join,
            ])
            .fails_with(&["ui cluster add", &did]);
        drop(refused);
        // Only a member may add one: the user's own kubeconfig is refused.
        let user_kubeconfig = all[0].server().kubeconfig.clone();
        all[0]
            .user
            .run(&["cluster", "add", &did, &peer, "--kubeconfig", user_kubeconfig.to_str().unwrap()])
            .fails_with(&["Forbidden"]);
        let member_kubeconfig = all[0].server().member_kubeconfig();
        let kc = member_kubeconfig.to_str().unwrap();
        all[0].user.run(&["cluster", "add", "nonsense", &peer, "--kubeconfig", kc]).fails_with(&["did"]);
        all[0].user.run(&["cluster", "add", &did, "somewhere", "--kubeconfig", kc]).fails_with(&["IP:PORT"]);
        all[0]
            .user
            .run(&["cluster", "add", &did, &peer, "--kubeconfig", member_kubeconfig.to_str().unwrap()])
            .ok();
        let server = start(&user, &data, &peer, Some(&join));
        all.push(Member { user, server: Some(server), data, peer, did });
    }
    let list = members(&all[2].user, &all[2].server().member_kubeconfig());
    assert_eq!(list.len(), 3, "{list:?}");
    // The founder's kubeconfigs follow the membership: they come to list every member.
    wait_until("the founder's kubeconfig lists every member", Duration::from_secs(15), || {
        let text = std::fs::read_to_string(all[0].server().member_kubeconfig()).unwrap();
        all.iter().all(|m| text.contains(&m.server().url))
    });
    assert!(list.iter().all(|m| m["role"] == "voter" && m["lastApplied"].as_u64().is_some()), "{list:?}");
    assert_eq!(list.iter().filter(|m| m["leader"] == true).count(), 1, "{list:?}");

    // Clients write through every member at once, each acknowledged write recorded.
    let bearer = format!("Bearer {}", all[0].server().member_token());
    let stop = Arc::new(AtomicBool::new(false));
    // Set when the leader is killed; writers count what they get acknowledged after it.
    let killed = Arc::new(AtomicBool::new(false));
    let acked_after_kill = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let targets: Vec<(String, ureq::Agent)> =
        all.iter().map(|m| (m.server().url.clone(), m.server().agent())).collect();
    let targets = Arc::new(targets);
    let started = Instant::now();
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (stop, bearer, targets) = (stop.clone(), bearer.clone(), targets.clone());
            let (killed, acked_after_kill) = (killed.clone(), acked_after_kill.clone());
            std::thread::spawn(move || {
                let (mut acked, mut failed_at) = (Vec::new(), Vec::new());
                let mut at = w % targets.len();
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let name = format!("w{w}-{i}");
                    let (url, agent) = &targets[at];
                    let url = format!("{url}/apis/univrs.io/v1/namespaces/default/replicas");
                    let response = agent
                        .post(&url)
                        .header("Authorization", &bearer)
                        .content_type("application/json")
                        .send(replica(&name));
                    match response {
                        Ok(mut r) if r.status() == 201 => {
                            let body: Value =
                                serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
                            let rv = body["metadata"]["resourceVersion"].as_str().unwrap().to_owned();
                            acked.push((name, rv, started.elapsed()));
                            if killed.load(Ordering::Relaxed) {
                                acked_after_kill.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        // Unknown outcome (member gone, no leader yet): try another member.
                        _ => {
                            failed_at.push(started.elapsed());
                            at = (at + 1) % targets.len();
                            std::thread::sleep(Duration::from_millis(50));
                        }
                    }
                }
                (acked, failed_at)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let list = members(&all[0].user, &all[0].server().member_kubeconfig());
    let leader_api = list.iter().find(|m| m["leader"] == true).unwrap()["api"].as_str().unwrap().to_owned();
    let leader = all.iter().position(|m| m.server().url == leader_api).unwrap();
    let killed_at = started.elapsed();
    killed.store(true, Ordering::Relaxed);
    all[leader].server.take().unwrap().kill_9();
    // Writes go on until some are acknowledged by the new leader (or 20 s: the test fails
    // below), however slow the election is on a loaded machine.
    let deadline = Instant::now() + Duration::from_secs(20);
    while acked_after_kill.load(Ordering::Relaxed) < 10 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    for w in writers {
        let (a, _) = w.join().unwrap();
        acked.extend(a);
    }
    let first_after = acked.iter().filter(|(_, _, t)| *t > killed_at).map(|(_, _, t)| *t).min();
    let first_after = first_after.expect("writes succeed again after the leader was killed");
    assert!(
        first_after - killed_at < Duration::from_secs(8),
        "a new leader took {:?}",
        first_after - killed_at
    );
    eprintln!("leader kill to first acknowledged write: {:?}", first_after - killed_at);

    // No acknowledged write lost, each at the revision it was acknowledged at; the survivors
    // agree; nothing was applied twice (every revision holds one object).
    let survivors: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let state = replicas(all[survivors[0]].server(), &bearer);
    for (name, rv, _) in &acked {
        assert_eq!(state.get(name), Some(rv), "acknowledged write {name} at {rv} is lost or changed");
    }
    let mut revisions: Vec<&String> = state.values().collect();
    revisions.sort();
    revisions.dedup();
    assert_eq!(revisions.len(), state.len(), "two objects share a revision");
    assert_eq!(replicas(all[survivors[1]].server(), &bearer), state);

    // `ui` fails over: the kubeconfig written by the last member lists all three, and the
    // killed one may be first.
    let kubeconfig = all[2].server().member_kubeconfig();
    let text = std::fs::read_to_string(&kubeconfig).unwrap();
    assert!(text.contains("univrs.io/servers"), "{text}");
    let get = all[2]
        .user
        .run(&["get", "replicas", "-o", "json", "--kubeconfig", kubeconfig.to_str().unwrap()])
        .ok();
    assert_eq!(get.json()["items"].as_array().unwrap().len(), state.len());

    // The killed member restarts on its data dir and catches up.
    let restarted = Server::start_with(
        &all[leader].user,
        &all[leader].data,
        "127.0.0.1:0",
        &["--peer-listen", &all[leader].peer],
    );
    all[leader].server = Some(restarted);
    wait_until("the restarted member catches up", Duration::from_secs(30), || {
        replicas(all[leader].server(), &bearer) == replicas(all[survivors[0]].server(), &bearer)
    });

    // A member loses its data: it is removed, wiped, added again with its new key and joins;
    // it gets everything.
    let wiped = survivors[1];
    let member_kubeconfig = all[survivors[0]].server().member_kubeconfig();
    let kc = member_kubeconfig.to_str().unwrap();
    let old_did = all[wiped].did.clone();
    all[wiped].server.take().unwrap().kill_9();
    // If it led, the others need an election first: until then the removal is refused (503).
    wait_until("the dead member is removed", Duration::from_secs(30), || {
        let run = all[survivors[0]].user.run(&["cluster", "remove", &old_did, "--kubeconfig", kc]);
        assert!(run.code == 0 || run.stderr.contains("ServiceUnavailable"), "{}", run.stderr);
        run.code == 0
    });
    std::fs::remove_dir_all(&all[wiped].data).unwrap();
    let did = member_key(&all[wiped].data);
    all[survivors[0]].user.run(&["cluster", "add", &did, &all[wiped].peer, "--kubeconfig", kc]).ok();
    let server =
        start(&all[wiped].user, &all[wiped].data, &all[wiped].peer, Some(&join_through(&all[survivors[0]])));
    all[wiped].server = Some(server);
    all[wiped].did = did;
    assert_eq!(replicas(all[wiped].server(), &bearer), replicas(all[survivors[0]].server(), &bearer));
    let list = members(&all[0].user, &member_kubeconfig);
    assert_eq!(list.len(), 3, "{list:?}");
    assert!(list.iter().all(|m| m["role"] == "voter" && m["did"] != old_did.as_str()), "{list:?}");
    for m in &mut all {
        m.server.take().unwrap().stop();
    }
}

fn join_through(m: &Member) -> String {
    format!("{}@{}", m.did, m.peer)
}

/// The did of the member key in `data`.
fn did_of(data: &Path) -> String {
    let key = std::fs::read_to_string(data.join("member.key")).unwrap();
    let bytes: Vec<u8> =
        (0..32).map(|i| u8::from_str_radix(&key.trim()[2 * i..2 * i + 2], 16).unwrap()).collect();
    let key = ed25519_dalek::SigningKey::from_bytes(&bytes.try_into().unwrap());
    api::identity::Did::from_key(&key.verifying_key()).as_str().to_owned()
}

/// Three members started with `extra` arguments.
fn three(extra: &[&str]) -> Vec<Member> {
    let mut all: Vec<Member> = Vec::new();
    for i in 0..3 {
        let user = User::new();
        let data = user.path("data");
        let peer = format!("127.0.0.1:{}", free_port());
        let mut args = vec!["--peer-listen", peer.as_str()];
        args.extend_from_slice(extra);
        let (did, join) = if i == 0 {
            (None, None)
        } else {
            let did = member_key(&data);
            let kubeconfig = all[0].server().member_kubeconfig();
            all[0]
                .user
                .run(&["cluster", "add", &did, &peer, "--kubeconfig", kubeconfig.to_str().unwrap()])
                .ok();
            (Some(did), Some(join_through(&all[0])))
        };
        if let Some(j) = &join {
            args.extend(["--join", j.as_str()]);
        }
        let server = Server::start_with(&user, &data, "127.0.0.1:0", &args);
        let did = did.unwrap_or_else(|| did_of(&data));
        all.push(Member { user, server: Some(server), data, peer, did });
    }
    all
}

#[test]
fn a_partitioned_minority_of_processes_refuses_writes_and_reads_then_converges() {
    // At most two open watches per user: the watches below that fail must not hold theirs.
    let all = three(&["--fault-injection", "--quota-watches", "2"]);
    let bearer = format!("Bearer {}", all[0].server().member_token());
    let list = members(&all[0].user, &all[0].server().member_kubeconfig());
    let id_of =
        |m: &Member| list.iter().find(|l| l["did"] == m.did.as_str()).unwrap()["id"].as_u64().unwrap();
    let leader = all
        .iter()
        .position(|m| list.iter().any(|l| l["did"] == m.did.as_str() && l["leader"] == true))
        .unwrap();
    let isolate = |m: &Member, ids: Vec<u64>| {
        let url = format!("{}/cluster/isolate", m.server().url);
        let body = serde_json::json!({ "ids": ids }).to_string().into_bytes();
        let (code, text) = send(&m.server().agent(), "POST", &url, &bearer, "application/json", body);
        assert_eq!(code, 200, "{text}");
    };
    let others: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    isolate(&all[leader], others.iter().map(|i| id_of(&all[*i])).collect());
    for i in &others {
        isolate(&all[*i], vec![id_of(&all[leader])]);
    }
    let post = |m: &Member, name: &str| {
        let url = format!("{}/apis/univrs.io/v1/namespaces/default/replicas", m.server().url);
        send(&m.server().agent(), "POST", &url, &bearer, "application/json", replica(name).into_bytes())
    };
    // The majority elects a leader and takes writes, through either of its members.
    wait_until("the majority takes writes", Duration::from_secs(20), || {
        post(&all[others[0]], "majority-1").0 == 201
    });
    assert_eq!(post(&all[others[1]], "majority-2").0, 201);
    // The minority acknowledges nothing and serves no linearizable read.
    let minority = all[leader].server();
    let url = format!("{}/apis/univrs.io/v1/namespaces/default/replicas", minority.url);
    let body = replica("minority").into_bytes();
    let (code, retry_after, text) =
        send_for_header(&minority.agent(), "POST", &url, &bearer, "application/json", body, "retry-after");
    assert_eq!(code, 503, "{text}");
    // Its leader appended it and could not commit it: a write whose outcome is unknown is
    // not one to send again blindly, so no Retry-After.
    assert!(text.contains("outcome is unknown"), "{text}");
    assert_eq!(retry_after, None, "{text}");
    let (code, retry_after, text) =
        send_for_header(&minority.agent(), "GET", &url, &bearer, "", vec![], "retry-after");
    assert_eq!(code, 503, "a linearizable read on the minority: {text}");
    // A read whose barrier failed did nothing: clients that honour Retry-After (client-go)
    // ask again shortly, as they do of Kubernetes.
    assert_eq!(retry_after.as_deref(), Some("1"), "{text}");
    let status: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(status["details"]["retryAfterSeconds"], 1, "{text}");
    // A user's watch from the latest state needs the same barrier: refused alike, before the
    // headers, and each refusal gives back its place in the user's open-watch quota (two):
    // three in a row are each a 503, never a 429.
    let user_bearer = format!("Bearer {}", minority.token());
    for i in 0..3 {
        let watch = format!("{url}?watch=true&timeoutSeconds=5");
        let (code, retry_after, text) =
            send_for_header(&minority.agent(), "GET", &watch, &user_bearer, "", vec![], "retry-after");
        assert_eq!((code, retry_after.as_deref()), (503, Some("1")), "watch {i} on the minority: {text}");
    }
    // `ui` whose kubeconfig names the minority first is served by the majority: the minority's
    // 503 with Retry-After did nothing, so the client sends the same request to the next member.
    let kubeconfig = minority.member_kubeconfig();
    let get = all[leader].user.run(&[
        "get",
        "replicas",
        "-o",
        "json",
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
    ]);
    let names: Vec<String> = get.ok().json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        names.contains(&"majority-1".to_owned()) && names.contains(&"majority-2".to_owned()),
        "{names:?}"
    );
    // (It named the minority first: each member's kubeconfig names itself as `server`.)
    let text = std::fs::read_to_string(&kubeconfig).unwrap();
    assert!(text.contains(&format!("server: {}\n", minority.url)), "{text}");

    // Healed, every member converges to the same state, without the refused write.
    for m in &all {
        isolate(m, vec![]);
    }
    wait_until("convergence", Duration::from_secs(30), || {
        let states: Vec<_> = all
            .iter()
            .map(|m| {
                let url = format!("{}/apis/univrs.io/v1/namespaces/default/replicas", m.server().url);
                send(&m.server().agent(), "GET", &url, &bearer, "", vec![])
            })
            .collect();
        states.iter().all(|(code, _)| *code == 200) && states.iter().all(|s| s.1 == states[0].1)
    });
    let state = replicas(all[leader].server(), &bearer);
    assert!(
        state.contains_key("majority-1")
            && state.contains_key("majority-2")
            && !state.contains_key("minority"),
        "{state:?}"
    );
    // Healed, the user's watch opens there.
    let watch = format!(
        "{}/apis/univrs.io/v1/namespaces/default/replicas?watch=true&timeoutSeconds=1",
        all[leader].server().url
    );
    for i in 0..2 {
        let (code, text) = send(&all[leader].server().agent(), "GET", &watch, &user_bearer, "", vec![]);
        assert_eq!(code, 200, "watch {i} after healing: {text}");
    }
    for mut m in all {
        m.server.take().unwrap().stop();
    }
}

#[test]
fn a_watch_on_any_member_sees_the_same_events_in_the_same_order() {
    use std::io::BufRead as _;
    let all = three(&[]);
    let bearer = format!("Bearer {}", all[0].server().member_token());
    let collection = |m: &Member| format!("{}/apis/univrs.io/v1/namespaces/default/replicas", m.server().url);
    let (code, body) = send(&all[1].server().agent(), "GET", &collection(&all[1]), &bearer, "", vec![]);
    assert_eq!(code, 200, "{body}");
    let from: Value = serde_json::from_str(&body).unwrap();
    let from = from["metadata"]["resourceVersion"].as_str().unwrap().to_owned();
    const EVENTS: usize = 30;
    let watches: Vec<_> = all
        .iter()
        .map(|m| {
            let url = format!("{}?watch=1&resourceVersion={from}", collection(m));
            let (agent, bearer) = (m.server().agent(), bearer.clone());
            std::thread::spawn(move || {
                let response = agent.get(&url).header("Authorization", &bearer).call().unwrap();
                let lines = std::io::BufReader::new(response.into_body().into_reader()).lines();
                let mut events = Vec::new();
                for line in lines {
                    let event: Value = serde_json::from_str(&line.unwrap()).unwrap();
                    if event["type"] == "BOOKMARK" {
                        continue;
                    }
                    let meta = &event["object"]["metadata"];
                    events.push(format!("{} {} {}", event["type"], meta["name"], meta["resourceVersion"]));
                    if events.len() == EVENTS {
                        break;
                    }
                }
                events
            })
        })
        .collect();
    // Writes through every member: creates, and updates of the first objects.
    for i in 0..EVENTS {
        let m = &all[i % 3];
        let (code, text) = if i < 20 {
            send(
                &m.server().agent(),
                "POST",
                &collection(m),
                &bearer,
                "application/json",
                replica(&format!("r{i}")).into_bytes(),
            )
        } else {
            let url = format!("{}/r{}", collection(m), i - 20);
            let patch =
                serde_json::json!({ "metadata": { "labels": { "step": i.to_string() } } }).to_string();
            send(
                &m.server().agent(),
                "PATCH",
                &url,
                &bearer,
                "application/merge-patch+json",
                patch.into_bytes(),
            )
        };
        assert!(code == 200 || code == 201, "{code} {text}");
    }
    let seen: Vec<Vec<String>> = watches.into_iter().map(|w| w.join().unwrap()).collect();
    assert_eq!(seen[0].len(), EVENTS, "{:?}", seen[0]);
    assert!(seen[0][..20].iter().all(|e| e.starts_with("\"ADDED\"")), "{:?}", seen[0]);
    assert!(seen[0][20..].iter().all(|e| e.starts_with("\"MODIFIED\"")), "{:?}", seen[0]);
    assert_eq!(seen[1], seen[0], "a follower's watch differs from another member's");
    assert_eq!(seen[2], seen[0], "a follower's watch differs from another member's");
    // `NotOlderThan` on any member waits until that member has applied the revision.
    let last: u64 = seen[0].last().unwrap().rsplit(' ').next().unwrap().trim_matches('"').parse().unwrap();
    for m in &all {
        let url = format!("{}?resourceVersion={last}&resourceVersionMatch=NotOlderThan", collection(m));
        let (code, body) = send(&m.server().agent(), "GET", &url, &bearer, "", vec![]);
        assert_eq!(code, 200, "{body}");
        let list: Value = serde_json::from_str(&body).unwrap();
        let rv: u64 = list["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap();
        assert!(rv >= last, "a NotOlderThan read at {rv} is older than {last}");
        assert_eq!(list["items"].as_array().unwrap().len(), 20);
    }
    // A watch without a resourceVersion starts from the latest committed state on any
    // member: a write acknowledged by one member is in the initial events of a watch opened
    // right after it on another (a read barrier first, not whatever that member has applied).
    // The initial events' names until the closing bookmark (its revision), or until `wanted`
    // is among them when there is no bookmark; the watch ends after 2 s whatever happens.
    let initial_names = |m: &Member, query: &str, wanted: &str| -> (Vec<String>, Option<u64>) {
        let url = format!("{}?watch=1&timeoutSeconds=2{query}", collection(m));
        let response = m.server().agent().get(&url).header("Authorization", &bearer).call().unwrap();
        let (mut names, mut end) = (Vec::new(), None);
        for line in std::io::BufReader::new(response.into_body().into_reader()).lines() {
            let event: Value = serde_json::from_str(&line.unwrap()).unwrap();
            let meta = &event["object"]["metadata"];
            if event["type"] == "BOOKMARK" {
                if meta["annotations"]["k8s.io/initial-events-end"] == "true" {
                    end = meta["resourceVersion"].as_str().and_then(|rv| rv.parse().ok());
                    break;
                }
                continue;
            }
            assert_eq!(event["type"], "ADDED", "{event}");
            names.push(meta["name"].as_str().unwrap().to_owned());
            if !query.contains("sendInitialEvents") && names.iter().any(|n| n == wanted) {
                break;
            }
        }
        (names, end)
    };
    for i in 0..6 {
        let (writer, watcher) = (&all[i % 3], &all[(i + 1) % 3]);
        let name = format!("late{i}");
        let (code, text) = send(
            &writer.server().agent(),
            "POST",
            &collection(writer),
            &bearer,
            "application/json",
            replica(&name).into_bytes(),
        );
        assert_eq!(code, 201, "{text}");
        let written: u64 = serde_json::from_str::<Value>(&text).unwrap()["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let (names, end) = initial_names(
            watcher,
            "&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan",
            &name,
        );
        assert!(
            names.contains(&name),
            "{name} (at {written}) missing from a watch on another member: {names:?}"
        );
        let end = end.expect("the initial events end with a bookmark");
        assert!(end >= written, "the initial events end at {end}, before the write at {written}");
        let (names, _) = initial_names(&all[(i + 2) % 3], "", &name);
        assert!(names.contains(&name), "{name} missing from a plain watch on another member: {names:?}");
    }
    // resourceVersionMatch on a watch: only NotOlderThan, only with sendInitialEvents.
    for query in ["resourceVersionMatch=Exact&resourceVersion=1", "resourceVersionMatch=NotOlderThan"] {
        let url = format!("{}?watch=1&{query}", collection(&all[1]));
        let (code, body) = send(&all[1].server().agent(), "GET", &url, &bearer, "", vec![]);
        assert_eq!(code, 400, "{query}: {body}");
        assert!(body.contains("resourceVersionMatch"), "{query}: {body}");
    }
    for mut m in all {
        m.server.take().unwrap().stop();
    }
}

/// GET `path` of `server` as its member; `None` while it does not answer 200.
fn member_get(server: &Server, bearer: &str, path: &str) -> Option<Value> {
    let (code, body) =
        send(&server.agent(), "GET", &format!("{}{path}", server.url), bearer, "application/json", vec![]);
    (code == 200).then(|| serde_json::from_str(&body).unwrap())
}

/// The Ready condition's status of Node `name` (`"True"`, `"False"`, or `""` without one).
fn ready(node: &Value) -> String {
    node.pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .and_then(|c| c["status"].as_str())
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn a_node_agent_and_the_controllers_fail_over_when_their_member_dies() {
    let mut all = three(&["--allow-loopback-nodes"]);
    // The founder's kubeconfigs (its user's and its member's) come to list every member.
    wait_until("the founder's kubeconfigs list every member", Duration::from_secs(20), || {
        let user = std::fs::read_to_string(&all[0].server().kubeconfig).unwrap();
        let member = std::fs::read_to_string(all[0].server().member_kubeconfig()).unwrap();
        all.iter().all(|m| user.contains(&m.server().url) && member.contains(&m.server().url))
    });
    let founder = &all[0];
    let (user_kc, member_kc) = (founder.server().kubeconfig.clone(), founder.server().member_kubeconfig());
    // The controllers and a node agent, each through the founder first (its kubeconfig's
    // `server`), the others listed for failover.
    let mut controllers = founder
        .user
        .cmd(&["controllers", "run", "--kubeconfig", member_kc.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap();
    let u = &founder.user;
    let dir = u.path("node-n1");
    let d = dir.to_str().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    u.run(&["node", "init", "--node-dir", d, "--name", "n1", "--listen", &listen]).ok();
    let kc = user_kc.to_str().unwrap();
    u.run(&["node", "register", "--node-dir", d, "--cpu", "2", "--memory", "2Gi", "--kubeconfig", kc]).ok();
    let node_kc = std::fs::read_to_string(dir.join("kubeconfig")).unwrap();
    assert!(
        all.iter().all(|m| node_kc.contains(&m.server().url)),
        "the node's kubeconfig lists every member:\n{node_kc}"
    );
    let mut agent = u
        .cmd(&["node", "run", "--node-dir", d, "--lease-seconds", "4", "--runtime", "process"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap();

    let survivor = all[1].server();
    let bearer = format!("Bearer {}", survivor.member_token());
    let node = "/apis/univrs.io/v1/nodes/n1";
    let lease = "/apis/univrs.io/v1/namespaces/univrs-node-lease/leases/n1";
    wait_until("node n1 to be Ready", Duration::from_secs(30), || {
        member_get(survivor, &bearer, node).is_some_and(|n| ready(&n) == "True")
    });

    // The member both talk to dies.
    let renewed_before = member_get(all[1].server(), &bearer, lease).unwrap()["spec"]["renewTime"].clone();
    all[0].server.take().unwrap().kill_9();
    // For five lease periods the node stays Ready: its agent renews its lease through another
    // member, and nobody marks it NotReady.
    let until = Instant::now() + Duration::from_secs(20);
    let mut renewals = std::collections::BTreeSet::new();
    while Instant::now() < until {
        if let Some(n) = member_get(all[1].server(), &bearer, node) {
            assert_eq!(ready(&n), "True", "node n1 went NotReady after its member died: {n}");
        }
        if let Some(l) = member_get(all[1].server(), &bearer, lease) {
            renewals.insert(l["spec"]["renewTime"].to_string());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    renewals.remove(&renewed_before.to_string());
    assert!(renewals.len() >= 3, "the lease was renewed only {} times after the kill", renewals.len());

    // The controllers failed over too: once the agent is gone, the node lifecycle controller
    // (whose watches were on the dead member) marks the node NotReady.
    let _ = agent.kill();
    let _ = agent.wait();
    wait_until("node n1 to go NotReady once its agent is gone", Duration::from_secs(30), || {
        member_get(all[1].server(), &bearer, node).is_some_and(|n| ready(&n) == "False")
    });
    let _ = controllers.kill();
    let _ = controllers.wait();
    for m in &mut all {
        if let Some(s) = m.server.take() {
            s.stop();
        }
    }
}

/// POSTs `obj` to `collection` on `server` as the identity of `key` (a token it minted itself).
fn post_as(server: &Server, key: &ed25519_dalek::SigningKey, collection: &str, obj: &Value) -> (u16, Value) {
    let token = api::token::mint(key, &server.audience, chrono::Utc::now().timestamp(), 600);
    let url = format!("{}/apis/univrs.io/v1/{collection}", server.url);
    let (code, body) = send(
        &server.agent(),
        "POST",
        &url,
        &format!("Bearer {token}"),
        "application/json",
        obj.to_string().into_bytes(),
    );
    (code, serde_json::from_str(&body).unwrap_or(Value::Null))
}

fn signed_by(key: &ed25519_dalek::SigningKey, mut obj: Value) -> Value {
    api::signing::sign(&mut obj, key, chrono::Utc::now()).unwrap();
    obj
}

#[test]
fn concurrent_payments_on_two_members_never_both_spend_one_credit_line() {
    let all = three(&[]);
    let user = ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng);
    let operator = ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng);
    let did = |k: &ed25519_dalek::SigningKey| api::identity::Did::from_key(&k.verifying_key());
    let (me, op) = (did(&user), did(&operator));
    // The operator lets the user owe it up to 10 credits.
    let grant = serde_json::json!({
        "apiVersion": "univrs.io/v1", "kind": "CreditGrant", "metadata": { "name": "op-to-user" },
        "spec": { "grantee": me.as_str(), "limit": "10" },
    });
    let (code, out) = post_as(all[0].server(), &operator, "creditgrants", &signed_by(&operator, grant));
    assert_eq!(code, 201, "{out}");
    // Each round, two payments that together overdraw what is left of the line, sent at once
    // through two different members: exactly one commits.
    let mut committed = 0i64;
    for (round, amount) in [(0, 6), (1, 3), (2, 1)] {
        let payments: Vec<(usize, Value)> = [1usize, 2]
            .iter()
            .map(|&m| {
                let t = serde_json::json!({
                    "apiVersion": "univrs.io/v1", "kind": "Transfer",
                    "metadata": { "name": format!("pay-{round}-via-{m}") },
                    "spec": { "from": me.as_str(), "to": op.as_str(), "amount": amount.to_string(), "reason": "Payment" },
                });
                (m, signed_by(&user, t))
            })
            .collect();
        let go = Arc::new(std::sync::Barrier::new(2));
        let answers: Vec<(u16, Value)> = std::thread::scope(|s| {
            let handles: Vec<_> = payments
                .iter()
                .map(|(m, t)| {
                    let (go, server, user) = (go.clone(), all[*m].server(), &user);
                    s.spawn(move || {
                        go.wait();
                        post_as(server, user, "transfers", t)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let phases: Vec<&str> = answers
            .iter()
            .map(|(code, out)| {
                assert_eq!(*code, 201, "{out}");
                out["status"]["phase"].as_str().unwrap()
            })
            .collect();
        let commits = phases.iter().filter(|p| **p == "Committed").count();
        assert_eq!((commits, phases.len()), (1, 2), "round {round}: {answers:?}");
        let refused = answers.iter().find(|(_, o)| o["status"]["phase"] == "Refused").unwrap();
        assert!(
            refused.1["status"]["message"].as_str().unwrap().contains("over the credit line"),
            "{refused:?}"
        );
        committed += amount * 1_000_000;
    }
    // Every member agrees: the user owes what committed, the operator is owed it, the sum is 0.
    let account = |server: &Server, d: &api::identity::Did| -> i64 {
        let name = api::kinds::account_name(d);
        let url = format!("{}/apis/univrs.io/v1/accounts/{name}", server.url);
        let token = api::token::mint(&user, &server.audience, chrono::Utc::now().timestamp(), 600);
        let (code, body) =
            send(&server.agent(), "GET", &url, &format!("Bearer {token}"), "application/json", vec![]);
        assert_eq!(code, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        let b = v["status"]["balance"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| v["status"]["balance"].to_string());
        api::credits::Credits::parse(&b).unwrap().micros()
    };
    for m in &all {
        wait_until("the member to apply every payment", Duration::from_secs(20), || {
            account(m.server(), &me) == -committed
        });
        assert_eq!(account(m.server(), &op), committed);
    }
}

#[test]
fn kubectl_cluster_info_names_every_member_and_its_link_leads_there() {
    let all = three(&[]);
    let first = all[0].server();
    let k = Kubectl { kubeconfig: first.kubeconfig.clone(), cache: all[0].user.path("kube-cache") };
    // Each member names its API when it joins: wait until all three are known.
    let out = wait_for(30, "cluster-info to name three members", || {
        let out = plain(&k.ok(&["cluster-info"]));
        let lines = out.lines().filter(|l| l.starts_with("univrs-member-")).count();
        if lines == 3 { Ok(out) } else { Err(out) }
    });
    assert!(out.contains(&format!("Kubernetes control plane is running at {}", first.url)), "{out}");
    let services = k.ok(&["get", "services", "-n", "kube-system", "-o", "json"]);
    for m in &all {
        assert!(services.contains(&m.did), "member {} not among the Services:\n{services}", m.did);
    }
    // A member's line is kubectl's proxy link on the member it asked; following it (kubectl's
    // client follows the redirect) reaches that member's own API.
    let third = all[2].server();
    let listed = members(&all[0].user, &first.member_kubeconfig());
    let third_id = listed
        .iter()
        .find(|m| m["api"].as_str() == Some(third.url.as_str()))
        .and_then(|m| m["id"].as_u64())
        .unwrap_or_else(|| panic!("{} not among {listed:?}", third.url));
    let line = out.lines().find(|l| l.starts_with(&format!("univrs-member-{third_id} ")));
    let line = line.unwrap_or_else(|| panic!("no line for {}:\n{out}", third.url));
    let link = line.rsplit(' ').next().unwrap();
    let path = link.strip_prefix(first.url.as_str()).unwrap_or_else(|| panic!("{link}"));
    assert!(path.starts_with("/api/v1/namespaces/kube-system/services/https:univrs-member-"), "{path}");
    let agent = first.agent();
    let bearer = format!("Bearer {}", first.token());
    let response = agent
        .get(format!("{link}/version"))
        .header("Authorization", &bearer)
        .config()
        .max_redirects(0)
        .build()
        .call()
        .unwrap();
    assert_eq!(response.status().as_u16(), 307);
    let location = response.headers().get("location").unwrap().to_str().unwrap();
    assert_eq!(location, format!("{}/version", third.url));
    let version = k.ok(&["get", "--raw", &format!("{path}/version")]);
    assert!(version.contains("gitVersion"), "{version}");
}
