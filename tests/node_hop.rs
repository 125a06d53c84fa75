//! The node hop of the log proxy against whatever a Node's address leads to: a real `ui
//! apiserver`, a user's workload and a replica of it bound to a Node the user registered
//! (`ui node init/register`), whose address points at something that is *not* that node's
//! agent. The apiserver must refuse before its member token leaves it, and say why.
//!
//! No agent and no container here (no root needed); tests/node_agent.rs runs real agents.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use support::{Server, User, wait_for};

fn ui(u: &User, args: &[&str]) -> support::Run {
    let kubeconfig = u.path("kubeconfig");
    let mut all = args.to_vec();
    all.extend(["--kubeconfig", kubeconfig.to_str().unwrap()]);
    u.run(&all)
}

/// A cluster where `u` runs workload `w`, with replica `w-0` bound to node `n1`, whose Node
/// (signed by `u`, its operator, with a node key of its own) names `agent` as its agent's
/// address. The apiserver allows loopback agents if `allow_loopback`.
fn cluster_with_node_at(u: &User, agent: SocketAddr, allow_loopback: bool) -> Server {
    let extra: &[&str] = if allow_loopback { &["--allow-loopback-nodes"] } else { &[] };
    let server = Server::start_with(u, &u.path("data"), "127.0.0.1:0", extra);
    let dir = u.path("node-n1");
    let d = dir.to_str().unwrap();
    u.run(&["node", "init", "--node-dir", d, "--name", "n1", "--listen", &agent.to_string()]).ok();
    ui(u, &["node", "register", "--node-dir", d, "--cpu", "1", "--memory", "1Gi"]).ok();
    let node = ui(u, &["get", "node", "n1", "-o", "json"]).ok().json();
    // The log endpoint first (the hop takes the first /tls/http one), then the tunnel's.
    let expected = format!("/ip4/{}/tcp/{}/tls/http", agent.ip(), agent.port());
    let tunnel = format!("/ip4/{}/udp/{}/wireguard", agent.ip(), agent.port());
    assert_eq!(node["spec"]["addresses"], json!([expected, tunnel]), "{node}");

    let file = u.path("w.yaml");
    std::fs::write(
        &file,
        "apiVersion: univrs.io/v1\nkind: Workload\nmetadata:\n  name: w\nspec:\n  replicas: 1\n  rootfs: busybox\n  command: [\"/bin/sh\", \"-c\", \"echo hi\"]\n",
    )
    .unwrap();
    ui(u, &["apply", "-f", file.to_str().unwrap()]).ok();
    let workload = ui(u, &["get", "workload", "w", "-o", "json"]).ok().json();
    // The replica as the workload controller and the scheduler would make it (written by the
    // member, which may write Replicas).
    let replica = json!({
        "apiVersion": "univrs.io/v1", "kind": "Replica",
        "metadata": { "name": "w-0", "namespace": "default", "ownerReferences": [{
            "apiVersion": "univrs.io/v1", "kind": "Workload", "name": "w",
            "uid": workload["metadata"]["uid"], "controller": true }] },
        "spec": { "workload": "w", "nodeName": "n1", "nodeUid": node["metadata"]["uid"],
                  "container": { "rootfs": "busybox", "command": ["/bin/sh", "-c", "echo hi"] } },
    });
    let (code, body) = support::send(
        &server.agent(),
        "POST",
        &format!("{}/apis/univrs.io/v1/namespaces/default/replicas", server.url),
        &format!("Bearer {}", server.member_token()),
        "application/json",
        serde_json::to_vec(&replica).unwrap(),
    );
    assert_eq!(code, 201, "{body}");
    server
}

/// `GET …/replicas/w-0/log` as the user (the workload's owner): status and Status.
fn read_log(server: &Server) -> (u16, Value) {
    let (code, body) = support::send(
        &server.agent(),
        "GET",
        &format!("{}/apis/univrs.io/v1/namespaces/default/replicas/w-0/log", server.url),
        &format!("Bearer {}", server.token()),
        "",
        Vec::new(),
    );
    (code, serde_json::from_str(&body).unwrap_or_else(|_| json!({ "raw": body })))
}

/// What one connection to a fake agent did.
#[derive(Debug)]
struct Seen {
    /// The TLS handshake completed.
    handshake: bool,
    /// Every byte it received (after the handshake, for a TLS server).
    bytes: Vec<u8>,
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle))
}

#[test]
fn an_agent_that_cannot_prove_the_node_key_never_receives_a_token() {
    let u = User::new();
    // A real agent's TLS endpoint, with another node's key, at the Node's address.
    let impostor = ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng);
    let tls = agent::logs::tls_config("n1", &impostor).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::<Seen>::new()));
    let record = seen.clone();
    std::thread::spawn(move || {
        for tcp in listener.incoming().flatten() {
            tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let conn = rustls::ServerConnection::new(tls.clone()).unwrap();
            let mut stream = rustls::StreamOwned::new(conn, tcp);
            let mut bytes = Vec::new();
            let _ = stream.read_to_end(&mut bytes);
            let handshake = !stream.conn.is_handshaking();
            record.lock().unwrap().push(Seen { handshake, bytes });
        }
    });
    let server = cluster_with_node_at(&u, addr, true);

    let (code, status) = read_log(&server);
    assert_eq!(code, 503, "{status}");
    let message = status["message"].as_str().unwrap_or_default();
    assert!(message.contains("is not the agent of node n1"), "{message}");
    assert!(message.contains("did not prove the node's key"), "{message}");
    assert!(message.contains("its certificate is of another key"), "{message}");
    assert!(message.contains("nothing was sent to it"), "{message}");
    // `ui logs` says the same.
    ui(&u, &["logs", "w-0"]).fails_with(&["is not the agent of node n1"]);

    wait_for(10, "the impostor's two connections", || {
        let seen = seen.lock().unwrap();
        if seen.len() >= 2 { Ok(()) } else { Err(format!("{seen:?}")) }
    });
    for s in seen.lock().unwrap().iter() {
        assert!(!s.handshake, "the apiserver finished a handshake with the wrong key: {s:?}");
        assert!(s.bytes.is_empty(), "the impostor received application data: {s:?}");
    }
    // The server still serves.
    ui(&u, &["get", "workload", "w"]).ok();
}

#[test]
fn a_plain_tcp_service_at_a_node_s_address_reads_no_token_and_nothing_of_it_is_echoed() {
    let u = User::new();
    // An internal HTTP service someone would like the apiserver to fetch from (SSRF).
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::<Seen>::new()));
    let record = seen.clone();
    std::thread::spawn(move || {
        for mut tcp in listener.incoming().flatten() {
            tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut first = [0u8; 4096];
            let n = tcp.read(&mut first).unwrap_or(0);
            let _ = tcp.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\ninternal-secret-data");
            let mut bytes = first[..n].to_vec();
            let _ = tcp.read_to_end(&mut bytes);
            record.lock().unwrap().push(Seen { handshake: false, bytes });
        }
    });
    let server = cluster_with_node_at(&u, addr, true);

    let (code, status) = read_log(&server);
    assert_eq!(code, 503, "{status}");
    let message = status["message"].as_str().unwrap_or_default();
    assert!(message.contains("did not prove the node's key"), "{message}");
    assert!(message.contains("it does not speak TLS"), "{message}");
    assert!(!status.to_string().contains("internal-secret-data"), "{status}");

    wait_for(10, "the service's connection", || {
        let seen = seen.lock().unwrap();
        if seen.is_empty() { Err("none yet".into()) } else { Ok(()) }
    });
    for s in seen.lock().unwrap().iter() {
        // A TLS ClientHello (record type 22), and nothing else: no request, no token.
        assert_eq!(s.bytes.first(), Some(&0x16), "{:?}", String::from_utf8_lossy(&s.bytes));
        for needle in [&b"Authorization"[..], b"Bearer", b"GET "] {
            assert!(!contains(&s.bytes, needle), "{needle:?} reached the service");
        }
    }
}

#[test]
fn a_loopback_agent_address_is_refused_before_connecting_unless_the_apiserver_allows_it() {
    let u = User::new();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let server = cluster_with_node_at(&u, addr, false);

    let (code, status) = read_log(&server);
    assert_eq!(code, 403, "{status}");
    assert_eq!(status["reason"], "Forbidden", "{status}");
    let message = status["message"].as_str().unwrap_or_default();
    for part in ["node n1", &addr.to_string(), "loopback", "--allow-loopback-nodes"] {
        assert!(message.contains(part), "{part:?} not in {message}");
    }
    ui(&u, &["logs", "w-0"]).fails_with(&["loopback", "--allow-loopback-nodes"]);
    // Not even a connection was made.
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the apiserver connected to a refused address: {other:?}"),
    }
}

#[test]
fn a_replica_bound_to_an_earlier_node_of_the_same_name_is_not_read_from_the_node_now() {
    let u = User::new();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let server = cluster_with_node_at(&u, addr, true);
    let bound = ui(&u, &["get", "node", "n1", "-o", "json"]).ok().json()["metadata"]["uid"].clone();
    // The Node goes, and a Node of the same name comes (here the same operator's; it could be
    // anyone's once the name is free).
    ui(&u, &["delete", "node", "n1"]).ok();
    let d = u.path("node-n1");
    ui(&u, &["node", "register", "--node-dir", d.to_str().unwrap(), "--cpu", "1", "--memory", "1Gi"]).ok();
    let now = ui(&u, &["get", "node", "n1", "-o", "json"]).ok().json()["metadata"]["uid"].clone();
    assert_ne!(now, bound);

    let (code, status) = read_log(&server);
    assert_eq!(code, 503, "{status}");
    let message = status["message"].as_str().unwrap_or_default();
    let expected = format!(
        "is bound to node uid {} named n1, not to the node of that name now",
        bound.as_str().unwrap()
    );
    assert!(message.contains(&expected), "{message}");
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the apiserver connected to the new node: {other:?}"),
    }
}

/// The node's key, from its node directory (kept in the clear, as agents do).
fn node_key(u: &User) -> ed25519_dalek::SigningKey {
    use base64::Engine as _;
    let file = u.path("node-n1/identity/keypair.json");
    let doc: Value = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
    let seed = base64::engine::general_purpose::STANDARD.decode(doc["ed25519"].as_str().unwrap()).unwrap();
    ed25519_dalek::SigningKey::from_bytes(seed.as_slice().try_into().unwrap())
}

#[test]
fn the_agent_that_proves_the_node_key_gets_a_token_for_that_node_and_little_of_its_error_is_shown() {
    let u = User::new();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = cluster_with_node_at(&u, addr, true);
    // An agent's endpoint with the node's own key, answering an error with a long body full
    // of terminal escapes.
    let tls = agent::logs::tls_config("n1", &node_key(&u)).unwrap();
    let requests = Arc::new(Mutex::new(Vec::<String>::new()));
    let record = requests.clone();
    std::thread::spawn(move || {
        for tcp in listener.incoming().flatten() {
            tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut stream =
                rustls::StreamOwned::new(rustls::ServerConnection::new(tls.clone()).unwrap(), tcp);
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read_exact(&mut byte).is_ok() {
                head.push(byte[0]);
            }
            record.lock().unwrap().push(String::from_utf8_lossy(&head).into_owned());
            let body = format!("\x1b[31mboom{}", "x".repeat(100_000));
            let answer =
                format!("HTTP/1.1 500 Internal Server Error\r\nContent-Length: {}\r\n\r\n{body}", body.len());
            let _ = stream.write_all(answer.as_bytes());
            let _ = stream.flush();
        }
    });

    let (code, status) = read_log(&server);
    assert_eq!(code, 503, "{status}");
    let message = status["message"].as_str().unwrap_or_default();
    assert!(message.contains("the agent of node n1") && message.contains("it answered 500"), "{message}");
    assert!(message.contains("boom") && !message.contains('\x1b'), "{message}");
    assert!(message.len() < 1500, "{} bytes of the agent's answer were shown", message.len());

    // What reached it: a request for the replica's log, with a member's token for node n1.
    let head = requests.lock().unwrap().first().cloned().unwrap();
    let uid = ui(&u, &["get", "replica", "w-0", "-o", "json"]).ok().json()["metadata"]["uid"].clone();
    assert!(head.starts_with(&format!("GET /replicas/{}/log HTTP/1.1\r\n", uid.as_str().unwrap())), "{head}");
    let token = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("authorization: Bearer ").or_else(|| l.strip_prefix("Authorization: Bearer "))
        })
        .unwrap_or_else(|| panic!("no token in {head}"));
    let now = chrono::Utc::now().timestamp();
    let (did, _) = api::token::verify(token, "univrs-node:n1", now).unwrap();
    let (_, members) = support::send(
        &server.agent(),
        "GET",
        &format!("{}/members", server.url),
        &format!("Bearer {}", server.token()),
        "",
        Vec::new(),
    );
    let members: Value = serde_json::from_str(&members).unwrap();
    assert!(members["members"].as_array().unwrap().contains(&json!(did.as_str())), "{members}");
    assert!(api::token::verify(token, "univrs-node:n2", now).is_err(), "a token for n1 only");
}
