//! Any key is a user: a hostile stranger with a fresh key (or many, or a Node of their own)
//! against a real `ui apiserver`. One test per attack and per rule of issue 12: each asserts
//! the refusal, its `Status` (code, reason, a message that names the rule), that nothing
//! changed, and that the server still serves.
//!
//! Placement attacks (attestations from throwaway keys, a deleted Node's replicas, workloads
//! without a TrustPolicy) are in tests/controllers.rs, the node hop of the log proxy in
//! tests/node_hop.rs, the member transport in apiserver/tests/raft_cluster.rs.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use serde_json::{Value, json};
use support::{Server, User};

const V1: &str = "/apis/univrs.io/v1";

/// Someone with a key: a user, a stranger, a node.
struct Key {
    key: SigningKey,
    did: String,
}

fn key(seed: u8) -> Key {
    let key = SigningKey::from_bytes(&[seed; 32]);
    let did = api::identity::Did::from_key(&key.verifying_key()).as_str().to_owned();
    Key { key, did }
}

/// A fresh key, as a stranger would make one.
fn fresh() -> Key {
    let key = SigningKey::generate(&mut rand_core::OsRng);
    let did = api::identity::Did::from_key(&key.verifying_key()).as_str().to_owned();
    Key { key, did }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// An HTTP client of the server authenticated as one identity.
struct Client {
    agent: ureq::Agent,
    base: String,
    bearer: String,
}

/// A response: status, `Retry-After`, and the body (JSON when it parses).
struct Reply {
    code: u16,
    retry_after: Option<String>,
    body: Value,
    text: String,
}

impl Client {
    fn of(server: &Server, who: &Key) -> Self {
        let token = api::token::mint(&who.key, &server.audience, now(), 300);
        Self { agent: server.agent(), base: server.url.clone(), bearer: format!("Bearer {token}") }
    }

    fn member(server: &Server) -> Self {
        Self {
            agent: server.agent(),
            base: server.url.clone(),
            bearer: format!("Bearer {}", server.member_token()),
        }
    }

    fn send(&self, method: &str, path: &str, content_type: &str, body: &str) -> Reply {
        self.send_with(method, path, &[("content-type", content_type)], body)
    }

    fn send_with(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
        let mut request = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("authorization", &self.bearer);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let mut response = self
            .agent
            .run(request.body(body.as_bytes().to_vec()).unwrap())
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let retry_after = response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
        let text = response.body_mut().with_config().limit(64 << 20).read_to_string().unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply { code: response.status().as_u16(), retry_after, body, text }
    }

    fn get(&self, path: &str) -> Reply {
        self.send("GET", path, "application/json", "")
    }

    fn post(&self, path: &str, obj: &Value) -> Reply {
        self.send("POST", path, "application/json", &obj.to_string())
    }

    fn put(&self, path: &str, obj: &Value) -> Reply {
        self.send("PUT", path, "application/json", &obj.to_string())
    }

    fn patch(&self, path: &str, content_type: &str, patch: &Value) -> Reply {
        self.send("PATCH", path, content_type, &patch.to_string())
    }

    fn delete(&self, path: &str) -> Reply {
        self.send("DELETE", path, "application/json", "")
    }
}

impl Reply {
    /// Asserts a `Status` with this code and reason whose message has every needle; returns
    /// the message.
    #[track_caller]
    fn refused(&self, code: u16, reason: &str, needles: &[&str]) -> String {
        assert_eq!(self.code, code, "{}", self.text);
        assert_eq!(self.body["kind"], "Status", "{}", self.text);
        assert_eq!(self.body["reason"], reason, "{}", self.text);
        let message = self.body["message"].as_str().unwrap_or_default().to_owned();
        for n in needles {
            assert!(message.contains(n), "the message lacks {n:?}: {message}");
        }
        message
    }

    #[track_caller]
    fn ok(&self, code: u16) -> &Value {
        assert_eq!(self.code, code, "{}", self.text);
        &self.body
    }
}

fn signed(mut obj: Value, by: &Key) -> Value {
    api::signing::sign(&mut obj, &by.key, chrono::Utc::now()).unwrap();
    obj
}

fn signed_at(mut obj: Value, by: &Key, at: &str) -> Value {
    let at = chrono::DateTime::parse_from_rfc3339(at).unwrap().with_timezone(&chrono::Utc);
    api::signing::sign(&mut obj, &by.key, at).unwrap();
    obj
}

fn workload(name: &str, replicas: u32, secret: &str) -> Value {
    json!({ "apiVersion": "univrs.io/v1", "kind": "Workload", "metadata": { "name": name, "labels": { "app": name } },
            "spec": { "rootfs": "busybox", "command": ["sh", "-c", "sleep 1000"], "replicas": replicas,
                      "env": [{ "name": "TOKEN", "value": secret }] } })
}

fn policy(name: &str) -> Value {
    json!({ "apiVersion": "univrs.io/v1", "kind": "TrustPolicy", "metadata": { "name": name },
            "spec": { "allowedJurisdictions": ["DE"] } })
}

fn node(name: &str, operator: &Key, node_key: &Key) -> Value {
    json!({ "apiVersion": "univrs.io/v1", "kind": "Node", "metadata": { "name": name },
            "spec": { "peerId": "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA",
                      "operator": operator.did, "nodeKey": node_key.did,
                      "ageRecipient": age::x25519::Identity::generate().to_public().to_string(),
                      "capacity": { "cpu": "2", "memory": "1Gi" } } })
}

fn workloads() -> String {
    format!("{V1}/namespaces/default/workloads")
}

/// The server still serves: discovery and a list answer.
#[track_caller]
fn still_serves(server: &Server) {
    let member = Client::member(server);
    member.get("/version").ok(200);
    member.get(&workloads()).ok(200);
}

#[test]
fn a_write_on_someone_elses_object_is_refused_before_any_work_and_patches_are_bounded() {
    let u = User::new();
    // Under a memory cap: a patch that doubled the document 40 times would take the server down.
    let mut server = Server::start_limited(&u, &u.path("data"), &["--as=4294967296"], &[]);
    let (alice, stranger) = (key(1), fresh());
    let owner = Client::of(&server, &alice);
    let created = owner.post(&workloads(), &signed(workload("web", 1, "s3cret"), &alice)).ok(201).clone();
    let rv = created["metadata"]["resourceVersion"].clone();
    let path = format!("{}/web", workloads());

    let json_patch = "application/json-patch+json";
    let bomb: Vec<Value> = (0..40)
        .map(|i| json!({ "op": "copy", "from": "", "path": format!("/metadata/annotations/x{i}") }))
        .collect();
    let them = Client::of(&server, &stranger);
    let probe = json!([{ "op": "test", "path": "/spec/env/0/value", "value": "guess" }]);
    let invalid = json!({ "spec": { "replicas": "many", "env": [{ "name": "TOKEN", "value": 7 }] } });
    for reply in [
        them.patch(&path, json_patch, &Value::Array(bomb.clone())),
        them.patch(&path, json_patch, &probe),
        them.patch(&path, "application/merge-patch+json", &invalid),
        them.put(&path, &signed(workload("web", 9, "mine"), &stranger)),
    ] {
        reply.refused(403, "Forbidden", &["only its owner (the signer) may update it"]);
        assert!(!reply.text.contains("s3cret"), "{}", reply.text);
    }
    // The owner's own patches are bounded too, and a failed test shows no stored value.
    owner.patch(&path, json_patch, &Value::Array(bomb)).refused(
        413,
        "RequestEntityTooLarge",
        &["grows the document past"],
    );
    let deepen: Vec<Value> =
        (0..40).map(|i| json!({ "op": "copy", "from": "/spec", "path": format!("/spec/d{i}") })).collect();
    owner.patch(&path, json_patch, &Value::Array(deepen)).refused(413, "RequestEntityTooLarge", &[]);
    let many: Vec<Value> =
        (0..10_001).map(|_| json!({ "op": "test", "path": "/kind", "value": "Workload" })).collect();
    owner.patch(&path, json_patch, &Value::Array(many)).refused(
        413,
        "RequestEntityTooLarge",
        &["10001 operations, more than the limit of 10000"],
    );
    let wrong = json!([{ "op": "test", "path": "/spec/env/0/value", "value": "guess" }]);
    let reply = owner.patch(&path, json_patch, &wrong);
    reply.refused(400, "BadRequest", &["test failed"]);
    assert!(!reply.text.contains("s3cret"), "{}", reply.text);

    // Nothing changed, and the server lived through it all.
    let now = owner.get(&path);
    assert_eq!(now.ok(200)["metadata"]["resourceVersion"], rv);
    assert!(server.running(), "the server died");
    still_serves(&server);
    server.stop();
}

#[test]
fn no_reader_sees_a_secret_it_may_not_through_any_view() {
    let u = User::new();
    let server = Server::start(&u, &u.path("data"));
    let (alice, stranger) = (key(1), fresh());
    // What `kubectl apply` writes: the whole manifest, secret included, in an annotation the
    // signature does not cover.
    let mut w = workload("web", 1, "s3cret");
    w["metadata"]["annotations"] =
        json!({ "kubectl.kubernetes.io/last-applied-configuration": w.to_string() });
    Client::of(&server, &alice).post(&workloads(), &signed(w, &alice)).ok(201);
    let them = Client::of(&server, &stranger);
    let table = [("accept", "application/json;as=Table;v=v1;g=meta.k8s.io")];
    let list = workloads();
    let views = [
        them.get(&format!("{list}/web")),
        them.get(&list),
        them.get(&format!("{list}?labelSelector=app%3Dweb")),
        them.get(&format!("{list}?fieldSelector=metadata.name%3Dweb")),
        them.get(&format!("{V1}/workloads")),
        them.send_with("GET", &format!("{list}/web"), &table, ""),
        them.send_with("GET", &list, &table, ""),
        them.get(&format!(
            "{list}?watch=true&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan&timeoutSeconds=1"
        )),
    ];
    for (i, view) in views.iter().enumerate() {
        assert_eq!(view.code, 200, "view {i}: {}", view.text);
        assert!(view.text.contains("web"), "view {i} does not show the workload: {}", view.text);
        assert!(!view.text.contains("s3cret"), "view {i} shows the secret: {}", view.text);
        assert!(!view.text.contains("last-applied-configuration"), "view {i}: {}", view.text);
        // The signature covers the secret: it would let them test guesses offline.
        assert!(!view.text.contains("univrs.io/signature"), "view {i}: {}", view.text);
    }
    let seen = &views[0].body;
    assert_eq!(seen["spec"]["env"], json!([{ "name": "TOKEN" }]));
    assert_eq!(seen["metadata"]["annotations"]["univrs.io/redacted"], "spec.env");
    // The owner sees it all.
    let own = Client::of(&server, &alice).get(&format!("{list}/web"));
    assert!(own.text.contains("s3cret") && own.text.contains("last-applied-configuration"));
    server.stop();
}

#[test]
fn a_node_named_like_a_controller_lease_takes_no_lease_of_the_control_plane() {
    let u = User::new();
    let server = Server::start(&u, &u.path("data"));
    let member = Client::member(&server);
    let leases = |ns: &str| format!("{V1}/namespaces/{ns}/leases");
    let lease = |name: &str, holder: &str| {
        json!({ "apiVersion": "univrs.io/v1", "kind": "Lease", "metadata": { "name": name },
                "spec": { "holderIdentity": holder, "leaseDurationSeconds": 15 } })
    };
    let held =
        member.post(&leases("univrs-system"), &lease("controller-scheduler", "member")).ok(201).clone();
    // A stranger registers a Node named like the scheduler's lease, with a node key of its own.
    let (operator, node_key) = (fresh(), fresh());
    Client::of(&server, &operator)
        .post(&format!("{V1}/nodes"), &signed(node("controller-scheduler", &operator, &node_key), &operator))
        .ok(201);
    let as_node = Client::of(&server, &node_key);
    let path = format!("{}/controller-scheduler", leases("univrs-system"));
    let mut taken = held.clone();
    taken["spec"]["holderIdentity"] = json!("stranger");
    for reply in [
        as_node.put(&path, &taken),
        as_node.patch(&path, "application/merge-patch+json", &json!({ "spec": { "holderIdentity": "x" } })),
        as_node.delete(&path),
    ] {
        reply.refused(403, "Forbidden", &["univrs-system is the control plane's namespace"]);
    }
    as_node.post(&leases("default"), &lease("controller-scheduler", "x")).refused(
        403,
        "Forbidden",
        &["univrs-node-lease"],
    );
    // Its own heartbeat lease, where node leases live, it may write.
    as_node.post(&leases("univrs-node-lease"), &lease("controller-scheduler", "me")).ok(201);
    // Within bounds: nobody's quota pays for a Lease.
    let big = json!({ "metadata": { "annotations": { "x": "y".repeat(100 << 10) } } });
    as_node
        .patch(
            &format!("{}/controller-scheduler", leases("univrs-node-lease")),
            "application/merge-patch+json",
            &big,
        )
        .refused(413, "RequestEntityTooLarge", &["objects that are not signed may be at most 65536 bytes"]);
    let after = member.get(&path);
    assert_eq!(after.ok(200)["spec"]["holderIdentity"], "member");
    assert_eq!(after.body["metadata"]["resourceVersion"], held["metadata"]["resourceVersion"]);
    server.stop();
}

#[test]
fn a_node_is_signed_by_its_operator_and_a_replica_belongs_to_one_node_object() {
    let u = User::new();
    let server = Server::start(&u, &u.path("data"));
    let member = Client::member(&server);
    let (alice, stranger, node_key) = (key(1), fresh(), fresh());
    // A Node claiming alice as its operator, signed by someone else: refused.
    Client::of(&server, &stranger)
        .post(&format!("{V1}/nodes"), &signed(node("n1", &alice, &node_key), &stranger))
        .refused(422, "Invalid", &["spec.operator", "a Node is signed by its operator"]);
    // Alice's node n1, a replica bound to it (by uid), then n1 deleted.
    let nodes = format!("{V1}/nodes");
    let first = Client::of(&server, &alice)
        .post(&nodes, &signed(node("n1", &alice, &node_key), &alice))
        .ok(201)
        .clone();
    let replicas = format!("{V1}/namespaces/default/replicas");
    let replica = json!({ "apiVersion": "univrs.io/v1", "kind": "Replica", "metadata": { "name": "r" },
        "spec": { "workload": "web", "nodeName": "n1", "nodeUid": first["metadata"]["uid"],
                  "container": { "rootfs": "busybox", "env": [{ "name": "TOKEN", "value": "s3cret" }] } } });
    member.post(&replicas, &replica).ok(201);
    Client::of(&server, &alice).delete(&format!("{nodes}/n1")).ok(200);
    // The stranger registers n1 again, with a node key of its own: another Node object.
    let their_key = fresh();
    Client::of(&server, &stranger)
        .post(&nodes, &signed(node("n1", &stranger, &their_key), &stranger))
        .ok(201);
    let as_their_node = Client::of(&server, &their_key);
    as_their_node
        .patch(
            &format!("{replicas}/r/status"),
            "application/merge-patch+json",
            &json!({ "status": { "phase": "Running" } }),
        )
        .refused(403, "Forbidden", &["only the node it is bound to"]);
    let seen = as_their_node.get(&format!("{replicas}/r"));
    let seen = seen.ok(200);
    assert_eq!(seen["metadata"]["annotations"]["univrs.io/redacted"], "spec.container.env");
    assert!(!seen.to_string().contains("s3cret"), "{seen}");
    assert!(
        member.get(&format!("{replicas}/r")).body.get("status").is_none(),
        "the replica's status changed"
    );
    still_serves(&server);
    server.stop();
}

/// Reads from `stream` until EOF or `within`; returns what was read and whether it closed.
fn read_until_closed(stream: &mut TcpStream, within: Duration) -> (Vec<u8>, bool) {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (got, true),
            Err(_) => return (got, false),
        }
    }
}

#[test]
fn slow_requests_are_cut_off_and_the_server_keeps_serving() {
    let u = User::new();
    let server = Server::start_with(
        &u,
        &u.path("data"),
        "127.0.0.1:0",
        &["--insecure-http", "--header-timeout", "2", "--body-timeout", "2"],
    );
    let addr = format!("127.0.0.1:{}", server.port());
    // Half a request head: closed after the header timeout, not held forever.
    let started = Instant::now();
    let mut slow = TcpStream::connect(&addr).unwrap();
    slow.write_all(b"GET /version HTTP/1.1\r\nHost: x\r\n").unwrap();
    let (_, closed) = read_until_closed(&mut slow, Duration::from_secs(10));
    assert!(closed, "a half-sent head was held for 10 s");
    assert!(started.elapsed() < Duration::from_secs(8), "{:?}", started.elapsed());
    // Half a body: 408 after the body timeout.
    let token = api::token::mint(&key(1).key, &server.audience, now(), 300);
    let mut slow_body = TcpStream::connect(&addr).unwrap();
    write!(
        slow_body,
        "POST {} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"kind\":",
        workloads()
    )
    .unwrap();
    let (answer, _) = read_until_closed(&mut slow_body, Duration::from_secs(10));
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("the request body was not sent within"), "{answer}");
    server.stop();
}

/// Sends one request on `c` (keeping the connection) and returns the status line.
fn request(c: &mut TcpStream, connection: &str) -> String {
    write!(c, "GET /version HTTP/1.1\r\nHost: x\r\nConnection: {connection}\r\n\r\n").unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 4096];
    let n = c.read(&mut buf).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).lines().next().unwrap_or_default().to_owned()
}

#[test]
fn connections_per_address_are_capped() {
    let u = User::new();
    let server = Server::start_with(
        &u,
        &u.path("data"),
        "127.0.0.1:0",
        &["--insecure-http", "--header-timeout", "60", "--max-connections-per-address", "8"],
    );
    let addr = format!("127.0.0.1:{}", server.port());
    // Eight connections, each answered once (so each is counted), then held open.
    let mut held: Vec<TcpStream> = (0..8).map(|_| TcpStream::connect(&addr).unwrap()).collect();
    for c in &mut held {
        assert_eq!(request(c, "keep-alive"), "HTTP/1.1 200 OK");
    }
    // The ninth is closed unanswered.
    let mut ninth = TcpStream::connect(&addr).unwrap();
    let _ = ninth.write_all(b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n");
    let (got, closed) = read_until_closed(&mut ninth, Duration::from_secs(5));
    assert!(closed && got.is_empty(), "the ninth connection was served: {}", String::from_utf8_lossy(&got));
    // Once some close, new connections are served again.
    held.truncate(4);
    support::wait_for(10, "a connection to be served again", || {
        let mut c = TcpStream::connect(&addr).map_err(|e| e.to_string())?;
        let line = request(&mut c, "close");
        if line == "HTTP/1.1 200 OK" { Ok(()) } else { Err(line) }
    });
    server.stop();
}

/// CPU seconds a process has used (user + system).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

#[test]
fn the_accept_loop_backs_off_when_file_descriptors_run_out() {
    let u = User::new();
    let server = Server::start_limited(
        &u,
        &u.path("data"),
        &["--nofile=64:64"],
        &["--insecure-http", "--header-timeout", "30"],
    );
    let addr = format!("127.0.0.1:{}", server.port());
    // More connections than the server has descriptors: accept fails with EMFILE.
    let held: Vec<TcpStream> = (0..120).filter_map(|_| TcpStream::connect(&addr).ok()).collect();
    std::thread::sleep(Duration::from_millis(500));
    let before = cpu_seconds(server.pid());
    std::thread::sleep(Duration::from_secs(3));
    let spent = cpu_seconds(server.pid()) - before;
    // A loop that retried accept at once would burn a whole core (3 s) here.
    assert!(spent < 1.0, "the server spent {spent:.2} s of CPU in 3 s with no descriptors left");
    drop(held);
    support::wait_for(20, "the server to serve again", || {
        let mut c = TcpStream::connect(&addr).map_err(|e| e.to_string())?;
        c.write_all(b"GET /version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .map_err(|e| e.to_string())?;
        let (got, _) = read_until_closed(&mut c, Duration::from_secs(5));
        let got = String::from_utf8_lossy(&got).into_owned();
        if got.starts_with("HTTP/1.1 200") { Ok(()) } else { Err(got) }
    });
    server.stop();
}

#[test]
fn one_identity_costs_no_more_than_its_quotas_and_members_are_exempt() {
    let u = User::new();
    let quotas = [
        "--quota-objects",
        "3",
        "--quota-replicas",
        "20",
        "--quota-watches",
        "2",
        "--rate-limit",
        "5",
        "--rate-burst",
        "60",
    ];
    let server = Server::start_with(&u, &u.path("data"), "127.0.0.1:0", &quotas);
    let (alice, bob) = (key(1), fresh());
    let as_alice = Client::of(&server, &alice);
    // Amplification: one 20 KB request asking for ten thousand replicas.
    let big = workload("amplify", 10_000, &"x".repeat(20_000));
    let reply = as_alice.post(&workloads(), &signed(big, &alice));
    reply.refused(429, "TooManyRequests", &["quota exceeded: replicas per signer (10000 of 20"]);
    assert_eq!(reply.retry_after.as_deref(), Some("60"));
    assert_eq!(reply.body["details"]["retryAfterSeconds"], 60);
    as_alice.get(&format!("{}/amplify", workloads())).refused(404, "NotFound", &[]);
    // Objects: three, then no more; a deleted one still counts (its tombstone) for a while.
    let policies = format!("{V1}/namespaces/default/trustpolicies");
    for name in ["p1", "p2", "p3"] {
        as_alice.post(&policies, &signed(policy(name), &alice)).ok(201);
    }
    as_alice.post(&policies, &signed(policy("p4"), &alice)).refused(
        429,
        "TooManyRequests",
        &["quota exceeded: objects per signer (4 of 3"],
    );
    as_alice.delete(&format!("{policies}/p3")).ok(200);
    as_alice.post(&policies, &signed(policy("p4"), &alice)).refused(429, "TooManyRequests", &["objects"]);
    // Members are exempt.
    let member = Client::member(&server);
    let member_key = {
        let hex = std::fs::read_to_string(server.data.join("member.key")).unwrap();
        let bytes: Vec<u8> =
            (0..64).step_by(2).map(|i| u8::from_str_radix(&hex.trim()[i..i + 2], 16).unwrap()).collect();
        let key = SigningKey::from_bytes(&bytes.try_into().unwrap());
        let did = api::identity::Did::from_key(&key.verifying_key()).as_str().to_owned();
        Key { key, did }
    };
    for i in 0..5 {
        member.post(&policies, &signed(policy(&format!("m{i}")), &member_key)).ok(201);
    }
    // Watches: two open, the third refused; once one ends, a new one is let in.
    let watch = format!("{policies}?watch=true");
    let open = |c: &Client| {
        c.agent.get(format!("{}{watch}", c.base)).header("authorization", &c.bearer).call().unwrap()
    };
    let first = open(&as_alice);
    let _second = open(&as_alice);
    assert_eq!(first.status().as_u16(), 200);
    let third = as_alice.get(&watch);
    third.refused(429, "TooManyRequests", &["open watches per identity (2 of 2)"]);
    assert!(third.retry_after.is_some());
    drop(first);
    // The server notices a closed watch when it next writes to it: give it something to say.
    member.post(&policies, &signed(policy("nudge"), &member_key)).ok(201);
    support::wait_for(10, "a watch slot to free", || {
        let c = Client::of(&server, &alice);
        let r = c
            .agent
            .get(format!("{}{watch}&timeoutSeconds=1", c.base))
            .header("authorization", &c.bearer)
            .call();
        match r {
            Ok(r) if r.status().as_u16() == 200 => Ok(()),
            Ok(r) => Err(format!("{}", r.status())),
            Err(e) => Err(e.to_string()),
        }
    });
    // Request rate: a burst, then 429 with Retry-After; members are never limited.
    let as_bob = Client::of(&server, &bob);
    let limited = (0..80).map(|_| as_bob.get("/apis/univrs.io/v1/workloads")).find(|r| r.code == 429);
    let limited = limited.expect("80 requests at once passed a burst of 60");
    limited.refused(429, "TooManyRequests", &["rate limit exceeded: 5 requests per second per identity"]);
    assert!(limited.retry_after.is_some());
    assert!((0..120).all(|_| member.get("/apis/univrs.io/v1/workloads").code == 200));
    still_serves(&server);
    server.stop();
}

fn transfer(from: Option<&Key>, to: &Key, reason: &str, name: &str) -> Value {
    let mut t = json!({ "apiVersion": "univrs.io/v1", "kind": "Transfer", "metadata": { "name": name },
                        "spec": { "to": to.did, "amount": "5", "reason": reason } });
    if let Some(from) = from {
        t["spec"]["from"] = json!(from.did);
    }
    if reason == "Metering" {
        t["spec"]["replica"] = json!("default/web-0");
    }
    t
}

#[test]
fn credits_cannot_be_forged_and_control_plane_status_is_the_control_planes() {
    let u = User::new();
    let server = Server::start(&u, &u.path("data"));
    let (alice, bob, carol) = (key(1), key(2), key(3));
    let as_alice = Client::of(&server, &alice);
    let transfers = format!("{V1}/transfers");
    as_alice.post(&transfers, &signed(transfer(Some(&bob), &carol, "Payment", "steal"), &alice)).refused(
        403,
        "Forbidden",
        &["spec.from must be the signer"],
    );
    as_alice.post(&transfers, &signed(transfer(Some(&alice), &carol, "Metering", "meter"), &alice)).refused(
        403,
        "Forbidden",
        &["metering is the control plane's"],
    );
    let paid =
        as_alice.post(&transfers, &signed(transfer(None, &carol, "Payment", "pay"), &alice)).ok(201).clone();
    let mut more = paid.clone();
    more["spec"]["amount"] = json!("5000");
    as_alice.put(&format!("{transfers}/pay"), &signed(more.clone(), &alice)).refused(
        403,
        "Forbidden",
        &["only the control plane may update it"],
    );
    // Not even the control plane rewrites a transfer.
    Client::member(&server).put(&format!("{transfers}/pay"), &signed(more, &alice)).refused(
        422,
        "Invalid",
        &["cannot change once written"],
    );
    as_alice.delete(&format!("{transfers}/pay")).refused(
        403,
        "Forbidden",
        &["only the control plane may delete it"],
    );
    as_alice
        .patch(
            &format!("{transfers}/pay/status"),
            "application/merge-patch+json",
            &json!({ "status": { "phase": "Committed" } }),
        )
        .refused(403, "Forbidden", &["only the control plane may update the status of it"]);
    // An attester cannot accept its own attestation, nor weigh it.
    let att = json!({ "apiVersion": "univrs.io/v1", "kind": "Attestation", "metadata": { "name": "vouch" },
                      "spec": { "subjectKind": "Operator", "subject": bob.did } });
    as_alice.post(&format!("{V1}/attestations"), &signed(att, &alice)).ok(201);
    as_alice
        .patch(
            &format!("{V1}/attestations/vouch/status"),
            "application/merge-patch+json",
            &json!({ "status": { "accepted": true, "weight": 1.0 } }),
        )
        .refused(403, "Forbidden", &["only the control plane"]);
    // Nor write the status of its own workload.
    as_alice.post(&workloads(), &signed(workload("web", 1, "v"), &alice)).ok(201);
    as_alice
        .patch(
            &format!("{}/web/status", workloads()),
            "application/merge-patch+json",
            &json!({ "status": { "readyReplicas": 9 } }),
        )
        .refused(403, "Forbidden", &["only the control plane"]);
    let member = Client::member(&server);
    assert!(member.get(&format!("{V1}/attestations/vouch")).body.get("status").is_none());
    member
        .patch(
            &format!("{V1}/attestations/vouch/status"),
            "application/merge-patch+json",
            &json!({ "status": { "accepted": true } }),
        )
        .ok(200);
    still_serves(&server);
    server.stop();
}

#[test]
fn a_deleted_object_cannot_come_back_as_an_older_version() {
    let u = User::new();
    let server = Server::start(&u, &u.path("data"));
    let alice = key(1);
    let as_alice = Client::of(&server, &alice);
    let (v1, v2) = (
        signed_at(workload("web", 1, "old"), &alice, "2026-01-01T00:00:00Z"),
        signed_at(workload("web", 2, "new"), &alice, "2026-02-01T00:00:00Z"),
    );
    let path = format!("{}/web", workloads());
    as_alice.post(&workloads(), &v2).ok(201);
    as_alice.delete(&path).ok(200);
    as_alice.post(&workloads(), &v1).refused(
        422,
        "Invalid",
        &["an older manifest cannot come back", "2026-02-01T00:00:00Z"],
    );
    as_alice.get(&path).refused(404, "NotFound", &[]);
    // The same version may come back, and a newer one.
    as_alice.post(&workloads(), &v2).ok(201);
    as_alice.delete(&path).ok(200);
    as_alice.post(&workloads(), &signed(workload("web", 3, "newest"), &alice)).ok(201);
    as_alice.delete(&path).ok(200);
    // Alice's past does not keep the name from anyone else.
    let stranger = fresh();
    Client::of(&server, &stranger)
        .post(&workloads(), &signed(workload("web", 1, "theirs"), &stranger))
        .ok(201);

    // A Node its node key may create for its operator: once deleted, the node key cannot
    // bring the very same manifest back; its operator can.
    let machine = fresh();
    let n1 = signed(node("n1", &alice, &machine), &alice);
    let nodes = format!("{V1}/nodes");
    Client::of(&server, &machine).post(&nodes, &n1).ok(201);
    as_alice.delete(&format!("{nodes}/n1")).ok(200);
    let e = Client::of(&server, &machine).post(&nodes, &n1);
    e.refused(422, "Invalid", &["the very manifest that was deleted", "only its signer may create it again"]);
    assert!(!e.text.contains("deleted at"), "{}", e.text);
    as_alice.post(&nodes, &n1).ok(201);
    server.stop();
}

#[test]
fn owner_references_name_only_objects_of_the_same_owner() {
    let u = User::new();
    let server = Server::start(&u, &u.path("data"));
    let (alice, bob) = (key(1), key(2));
    let bobs =
        Client::of(&server, &bob).post(&workloads(), &signed(workload("bobs", 1, "b"), &bob)).ok(201).clone();
    let alices = Client::of(&server, &alice)
        .post(&workloads(), &signed(workload("alices", 1, "a"), &alice))
        .ok(201)
        .clone();
    let owned_by = |owner: &Value| {
        let mut p = policy("dependent");
        p["metadata"]["ownerReferences"] = json!([{ "apiVersion": "univrs.io/v1", "kind": "Workload",
            "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"], "blockOwnerDeletion": true }]);
        signed(p, &alice)
    };
    let policies = format!("{V1}/namespaces/default/trustpolicies");
    let as_alice = Client::of(&server, &alice);
    as_alice.post(&policies, &owned_by(&bobs)).refused(
        422,
        "Invalid",
        &["metadata.ownerReferences[0]", "is not an object of yours"],
    );
    as_alice.post(&policies, &owned_by(&alices)).ok(201);
    server.stop();
}

#[test]
fn state_files_are_private_even_in_a_directory_that_existed() {
    use std::os::unix::fs::PermissionsExt;
    let u = User::new();
    let data = u.path("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let server = Server::start(&u, &data);
    assert_eq!(support::mode(&data), 0o700);
    assert_eq!(support::mode(&data.join("tls")), 0o700);
    assert_eq!(support::mode(&data.join("raft-log")), 0o700, "the Raft log's directory");
    for file in [
        "state.redb",
        "raft-log.redb",
        "raft-log/0000000000000001.wal",
        "raft-log/LOCK",
        "member.key",
        "cluster-id",
        "member.kubeconfig",
        "tls/ca.key",
    ] {
        assert_eq!(support::mode(&data.join(file)), 0o600, "{file}");
    }
    server.stop();
}

#[test]
fn ui_scale_signs_only_a_workload_its_user_signed() {
    let alice = User::new();
    let server = Server::start(&alice, &alice.path("data"));
    let bob = key(2);
    Client::of(&server, &bob).post(&workloads(), &signed(workload("web", 1, "b"), &bob)).ok(201);
    let kubeconfig = server.kubeconfig.to_str().unwrap().to_owned();
    alice.run(&["scale", "workload", "web", "3", "--kubeconfig", &kubeconfig]).fails_with(&[
        "is signed by",
        "not by you",
        "only its owner can scale it",
    ]);
    let now = Client::member(&server).get(&format!("{}/web", workloads()));
    assert_eq!(now.ok(200)["spec"]["replicas"], 1);
    server.stop();
}

#[test]
fn query_parameters_are_bounded() {
    let u = User::new();
    let server = Server::start(&u, &u.path("data"));
    let c = Client::of(&server, &key(1));
    let list = workloads();
    c.get(&format!("{list}?limit=-3")).ok(200);
    c.get(&format!("{list}?limit=100000000000000000000000")).refused(400, "BadRequest", &["limit"]);
    // A watch of u64::MAX seconds is clamped (no overflowing deadline); it is served.
    let watch = c
        .agent
        .get(format!("{}{list}?watch=true&timeoutSeconds=18446744073709551615", c.base))
        .header("authorization", &c.bearer)
        .call()
        .unwrap();
    assert_eq!(watch.status().as_u16(), 200);
    drop(watch);
    c.get(&format!("{list}?timeoutSeconds=-1&watch=true")).refused(400, "BadRequest", &["timeoutSeconds"]);
    still_serves(&server);
    server.stop();
}
