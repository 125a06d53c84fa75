//! What the REST API answers to requests real clients send, good and bad, on a real port:
//! every error is a Kubernetes `Status` with the right code and reason, and the server keeps
//! serving after each. Also the bad-input catalogue of admission and access: tokens
//! (missing, expired, not yet valid, for another cluster, forged), signatures (missing,
//! tampered, claimed for another key), replays, someone else's objects, nodes writing what is
//! not theirs, oversized, deep, duplicate-keyed and alias-bombed bodies.

mod support;

use serde_json::{Value, json};
use support::{Server, User};

struct Http {
    agent: ureq::Agent,
    base: String,
    /// `Bearer …`, or empty to send no credentials.
    bearer: String,
}

impl Http {
    fn new(server: &Server) -> Self {
        // As the control-plane member: these requests are about the API, not about ownership.
        Self {
            agent: server.agent(),
            base: server.url.clone(),
            bearer: format!("Bearer {}", server.member_token()),
        }
    }

    /// The same client with another `Authorization` header (empty: none).
    fn with_authorization(&self, value: &str) -> Self {
        Self { agent: self.agent.clone(), base: self.base.clone(), bearer: value.to_owned() }
    }

    /// Sends `method path` with `body` of `content_type`; returns the status and the JSON body.
    fn send(&self, method: &str, path: &str, content_type: &str, body: Vec<u8>) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let (code, text) = support::send(&self.agent, method, &url, &self.bearer, content_type, body);
        (code, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    fn get(&self, path: &str) -> (u16, Value) {
        self.send("GET", path, "application/json", Vec::new())
    }

    /// The lines of a (watch) response.
    fn lines(&self, path: &str) -> (u16, Vec<Value>) {
        let mut response = self
            .agent
            .get(format!("{}{path}", self.base))
            .header("authorization", &self.bearer)
            .call()
            .unwrap();
        let text = response.body_mut().read_to_string().unwrap();
        (response.status().as_u16(), text.lines().map(|l| serde_json::from_str(l).unwrap()).collect())
    }
}

#[track_caller]
fn status(response: (u16, Value), code: u16, reason: &str) -> Value {
    let (got, body) = response;
    assert_eq!(got, code, "{body}");
    assert_eq!(body["kind"], "Status", "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["reason"], reason, "{body}");
    body
}

const WL: &str = "/apis/univrs.io/v1/namespaces/default/replicas";

#[test]
fn bad_requests_get_a_status_and_change_nothing() {
    let u = User::new();
    let server = Server::start(&u, &u.path("data"));
    let http = Http::new(&server);
    let good = json!({ "apiVersion": "univrs.io/v1", "kind": "Replica", "metadata": { "name": "w" },
                       "spec": { "workload": "web", "container": { "rootfs": "busybox" } } });
    let (code, created) = http.send("POST", WL, "application/json", good.to_string().into_bytes());
    assert_eq!(code, 201, "{created}");
    let rv = created["metadata"]["resourceVersion"].clone();

    let huge = vec![b' '; 4 * 1024 * 1024];
    status(http.send("POST", WL, "application/json", huge), 413, "RequestEntityTooLarge");
    status(http.send("POST", WL, "application/json", b"{not json".to_vec()), 400, "BadRequest");
    status(http.send("POST", WL, "application/json", vec![0xff, 0xfe]), 400, "BadRequest");
    status(http.send("PATCH", "/version", "application/json", Vec::new()), 405, "MethodNotAllowed");
    status(http.get("/apis/univrs.io/v1/namespaces/default/pods"), 404, "NotFound");
    status(http.get("/nothing/here"), 404, "NotFound");
    status(http.get(&format!("{WL}/missing")), 404, "NotFound");
    status(http.get(&format!("{WL}?labelSelector=app%20in%20web")), 400, "BadRequest");
    // A selector of a stranger's making is bounded, and its error shows only its start.
    for (param, part) in [("labelSelector", "a=b,"), ("fieldSelector", "metadata.name=b,")] {
        let body = status(http.get(&format!("{WL}?{param}={}", part.repeat(3_000))), 400, "BadRequest");
        let message = body["message"].as_str().unwrap();
        assert!(message.contains("at most 64 requirements") && message.len() < 400, "{message}");
    }
    status(http.get(&format!("{WL}?continue=garbage")), 400, "BadRequest");
    status(http.get(&format!("{WL}?resourceVersion=abc")), 400, "BadRequest");
    let body = status(
        http.send("PATCH", &format!("{WL}/w"), "application/strategic-merge-patch+json", b"{}".to_vec()),
        415,
        "UnsupportedMediaType",
    );
    assert!(body["message"].as_str().unwrap().contains("--type=merge"), "{body}");
    let test_fails = json!([{ "op": "test", "path": "/spec/workload", "value": "other" }]).to_string();
    status(
        http.send("PATCH", &format!("{WL}/w"), "application/json-patch+json", test_fails.into_bytes()),
        400,
        "BadRequest",
    );
    let mut invalid = good.clone();
    invalid["metadata"]["name"] = json!("Not_A_Name");
    invalid["spec"]["workload"] = json!("Bad Workload");
    let body =
        status(http.send("POST", WL, "application/json", invalid.to_string().into_bytes()), 422, "Invalid");
    let fields: Vec<&str> =
        body["details"]["causes"].as_array().unwrap().iter().map(|c| c["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["metadata.name", "spec.workload"]);
    let mut unknown = good.clone();
    unknown["spec"]["replica"] = json!(2);
    let body = status(
        http.send(
            "POST",
            &format!("{WL}?fieldValidation=Strict"),
            "application/json",
            unknown.to_string().into_bytes(),
        ),
        400,
        "BadRequest",
    );
    assert!(body["message"].as_str().unwrap().contains(r#"unknown field "spec.replica""#), "{body}");

    // Nothing above changed anything, and the server still serves.
    let (code, list) = http.get(WL);
    assert_eq!(code, 200);
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert_eq!(list["items"][0]["metadata"]["resourceVersion"], rv);
    server.stop();
}

#[test]
fn what_real_clients_send_is_understood() {
    let u = User::new();
    let server = Server::start(&u, &u.path("data"));
    let http = Http::new(&server);
    // kube-rs sends `?&…`; JSON is valid YAML for server-side apply; watch=true and watch=1.
    let apply = json!({ "apiVersion": "univrs.io/v1", "kind": "Replica", "metadata": { "name": "w" },
                        "spec": { "workload": "web", "container": { "rootfs": "busybox" } } });
    let (code, obj) = http.send(
        "PATCH",
        &format!("{WL}/w?&fieldManager=kube-rs&"),
        "application/apply-patch+yaml",
        apply.to_string().into_bytes(),
    );
    assert_eq!(code, 201, "{obj}");
    let (code, list) = http.get(&format!("{WL}?&limit=&labelSelector="));
    assert_eq!(code, 200, "{list}");
    for watch in ["watch=1", "watch=true"] {
        let (code, events) = http.lines(&format!("{WL}?&{watch}&resourceVersion=0&timeoutSeconds=1"));
        assert_eq!(code, 200);
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0]["type"], "ADDED");
        assert_eq!(events[0]["object"]["metadata"]["name"], "w");
    }
    // Bookmarks only when asked for; one just before the server ends the watch.
    let (_, events) =
        http.lines(&format!("{WL}?watch=true&resourceVersion=1&timeoutSeconds=1&allowWatchBookmarks=true"));
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["ADDED", "BOOKMARK"], "{events:?}");
    // sendInitialEvents=false without a resourceVersion: from now on, no state first.
    let (code, events) = http.lines(&format!("{WL}?watch=1&sendInitialEvents=false&timeoutSeconds=1"));
    assert_eq!(code, 200);
    assert_eq!(events, Vec::<Value>::new());
    // sendInitialEvents: the state, then the bookmark that ends it.
    let (_, events) = http.lines(&format!(
        "{WL}?watch=1&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan&timeoutSeconds=1"
    ));
    assert_eq!(events[0]["type"], "ADDED");
    assert_eq!(
        events[1]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"], "true",
        "{events:?}"
    );
    // Changes ready together (a replay from an old revision: more than a frame holds) come
    // as one line each, in order.
    let names: Vec<String> = (0..70).map(|i| format!("r{i}")).collect();
    for name in &names {
        let mut r = apply.clone();
        r["metadata"]["name"] = name.as_str().into();
        let (code, created) = http.send("POST", WL, "application/json", r.to_string().into_bytes());
        assert_eq!(code, 201, "{created}");
    }
    let after = obj["metadata"]["resourceVersion"].as_str().unwrap();
    let (_, events) = http.lines(&format!("{WL}?watch=1&resourceVersion={after}&timeoutSeconds=1"));
    let seen: Vec<&str> = events.iter().map(|e| e["object"]["metadata"]["name"].as_str().unwrap()).collect();
    assert_eq!(seen, names, "{events:?}");
    assert!(events.iter().all(|e| e["type"] == "ADDED"), "{events:?}");
    // A revision this member has not reached (in 3 s) is Kubernetes' 504: the cause client-go's
    // reflector looks for, and Retry-After.
    let url = format!("{}{WL}?resourceVersion=999999999&resourceVersionMatch=NotOlderThan", server.url);
    let (code, retry_after, text) =
        support::send_for_header(&http.agent, "GET", &url, &http.bearer, "", vec![], "retry-after");
    let body = status((code, serde_json::from_str(&text).unwrap()), 504, "Timeout");
    assert_eq!(body["details"]["causes"][0]["reason"], "ResourceVersionTooLarge", "{body}");
    assert_eq!(body["details"]["retryAfterSeconds"], 1, "{body}");
    assert_eq!(retry_after.as_deref(), Some("1"), "{body}");
    // A watch's with initial events is an ERROR event after the headers, with the same cause.
    let (code, events) = http.lines(&format!(
        "{WL}?watch=1&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersion=999999999&resourceVersionMatch=NotOlderThan&timeoutSeconds=10"
    ));
    assert_eq!(code, 200);
    let error = events.iter().find(|e| e["type"] == "ERROR").unwrap_or_else(|| panic!("{events:?}"));
    assert_eq!(error["object"]["code"], 504, "{error}");
    assert_eq!(error["object"]["details"]["causes"][0]["reason"], "ResourceVersionTooLarge", "{error}");
    server.stop();
}

/// Signs `obj` as the user, with `ui sign`.
fn signed_by(u: &User, obj: &Value) -> Value {
    let out = u.run_with_stdin(&["sign", "-f", "-"], &obj.to_string()).ok().stdout;
    api::manifest::parse_documents(&out).unwrap().remove(0)
}

fn member_key(server: &Server) -> ed25519_dalek::SigningKey {
    let hex = std::fs::read_to_string(server.data.join("member.key")).unwrap();
    let bytes: Vec<u8> =
        (0..64).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
    ed25519_dalek::SigningKey::from_bytes(&bytes.try_into().unwrap())
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

fn bearer(key: &ed25519_dalek::SigningKey, audience: &str, at: i64) -> String {
    format!("Bearer {}", api::token::mint(key, audience, at, 300))
}

const WORKLOADS: &str = "/apis/univrs.io/v1/namespaces/default/workloads";

fn workload(name: &str, replicas: u32) -> Value {
    json!({ "apiVersion": "univrs.io/v1", "kind": "Workload", "metadata": { "name": name },
            "spec": { "rootfs": "busybox", "replicas": replicas,
                      "env": [{ "name": "TOKEN", "value": "s3cret" }] } })
}

#[test]
fn only_valid_tokens_get_in() {
    let u = User::new();
    let server = Server::start(&u, &u.path("data"));
    let http = Http::new(&server);
    let key = member_key(&server);
    let ok = bearer(&key, &server.audience, now());
    assert_eq!(http.with_authorization(&ok).get(WL).0, 200);
    let refused = |auth: &str, needle: &str| {
        let body = status(http.with_authorization(auth).get(WL), 401, "Unauthorized");
        assert!(body["message"].as_str().unwrap().contains(needle), "{body}");
    };
    refused("", "no credentials");
    refused("Basic dXNlcjpwYXNz", "not a bearer token");
    refused("Bearer not.a.token", "malformed");
    refused(&bearer(&key, &server.audience, now() - 3600), "expired");
    refused(&bearer(&key, &server.audience, now() + 3600), "not valid before");
    refused(&bearer(&key, "univrs:another-cluster", now()), "another cluster");
    // A token whose claims were changed after signing (another did).
    let other = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    let theirs = api::token::mint(&other, &server.audience, now(), 300);
    let mine = ok.strip_prefix("Bearer ").unwrap();
    let forged: Vec<&str> = theirs.split('.').take(2).chain(mine.split('.').skip(2)).collect();
    refused(&format!("Bearer {}", forged.join(".")), "signature");
    // Discovery and health need no credentials; objects do.
    assert_eq!(http.with_authorization("").get("/apis/univrs.io/v1").0, 200);
    assert_eq!(http.with_authorization("").get("/version").0, 200);
    server.stop();
}

#[test]
fn nothing_unsigned_replayed_or_someone_elses_gets_in() {
    let u = User::new();
    let server = Server::start(&u, &u.path("data"));
    let me = Http::new(&server).with_authorization(&format!("Bearer {}", server.token()));
    let other = User::new();
    other.init_plain();
    let out = other.run(&["token", "--audience", &server.audience]).ok().stdout;
    let them = me.with_authorization(&format!("Bearer {}", out.trim()));
    let post =
        |h: &Http, v: &Value| h.send("POST", WORKLOADS, "application/json", v.to_string().into_bytes());
    let put = |h: &Http, v: &Value| {
        h.send("PUT", &format!("{WORKLOADS}/web"), "application/json", v.to_string().into_bytes())
    };

    let unsigned = status(post(&me, &workload("web", 1)), 422, "Invalid");
    assert!(unsigned["message"].as_str().unwrap().contains("not signed"), "{unsigned}");
    let v1 = signed_by(&u, &workload("web", 1));
    std::thread::sleep(std::time::Duration::from_millis(1100)); // signed-at has second precision
    let v2 = signed_by(&u, &workload("web", 2));

    // A valid signature over other content; a signature claimed for another key.
    let mut tampered = v2.clone();
    tampered["spec"]["replicas"] = json!(50);
    let body = status(post(&me, &tampered), 422, "Invalid");
    assert!(
        body["details"]["causes"][0]["field"].as_str().unwrap().contains("univrs.io/signature"),
        "{body}"
    );
    let mut claimed = v2.clone();
    let stranger =
        api::identity::Did::from_key(&ed25519_dalek::SigningKey::from_bytes(&[5; 32]).verifying_key());
    claimed["metadata"]["annotations"]["univrs.io/signer"] = json!(stranger.as_str());
    status(post(&me, &claimed), 422, "Invalid");
    // Someone else cannot create what I signed.
    let body = status(post(&them, &v2), 403, "Forbidden");
    assert!(
        body["message"].as_str().unwrap().contains("only its owner (the signer) may create it"),
        "{body}"
    );

    let (code, created) = post(&me, &v2);
    assert_eq!(code, 201, "{created}");
    // The older manifest replayed: refused, nothing changes.
    let body = status(put(&me, &v1), 422, "Invalid");
    assert!(body["message"].as_str().unwrap().contains("older manifest"), "{body}");
    // Another identity can neither replace (with its own signature) nor delete it.
    let theirs = {
        let out = other.run_with_stdin(&["sign", "-f", "-"], &workload("web", 9).to_string()).ok().stdout;
        api::manifest::parse_documents(&out).unwrap().remove(0)
    };
    status(put(&them, &theirs), 403, "Forbidden");
    status(
        them.send("DELETE", &format!("{WORKLOADS}/web"), "application/json", Vec::new()),
        403,
        "Forbidden",
    );
    // It may read it, but not its environment.
    let (code, seen) = them.get(&format!("{WORKLOADS}/web"));
    assert_eq!(code, 200);
    assert_eq!(seen["spec"]["env"], json!([{ "name": "TOKEN" }]), "{seen}");
    assert_eq!(seen["metadata"]["annotations"]["univrs.io/redacted"], "spec.env");
    let (_, listed) = them.get(&format!("{WORKLOADS}?fieldSelector=spec.env!=x"));
    assert_eq!(listed["items"][0]["spec"]["env"], json!([{ "name": "TOKEN" }]));
    let (_, mine) = me.get(&format!("{WORKLOADS}/web"));
    assert_eq!(mine["spec"]["env"][0]["value"], "s3cret");
    assert_eq!(mine["spec"]["replicas"], 2, "a refused request changed the object");

    // Users do not write the control plane's kinds.
    let replica = json!({ "apiVersion": "univrs.io/v1", "kind": "Replica", "metadata": { "name": "r" },
                          "spec": { "workload": "web", "container": { "rootfs": "busybox" } } });
    let replicas = "/apis/univrs.io/v1/namespaces/default/replicas";
    status(me.send("POST", replicas, "application/json", replica.to_string().into_bytes()), 403, "Forbidden");
    server.stop();
}

#[test]
fn a_node_writes_only_its_own_node_lease_and_replica_status() {
    let u = User::new();
    let server = Server::start(&u, &u.path("data"));
    let member = Http::new(&server);
    let operator = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
    let keys =
        [ed25519_dalek::SigningKey::from_bytes(&[1; 32]), ed25519_dalek::SigningKey::from_bytes(&[2; 32])];
    for (i, key) in keys.iter().enumerate() {
        let mut node = json!({ "apiVersion": "univrs.io/v1", "kind": "Node", "metadata": { "name": format!("n{i}") },
            "spec": {
                "peerId": "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA",
                "operator": api::identity::Did::from_key(&operator.verifying_key()).as_str(),
                "nodeKey": api::identity::Did::from_key(&key.verifying_key()).as_str(),
                "ageRecipient": age::x25519::Identity::generate().to_public().to_string(),
                "capacity": { "cpu": "2", "memory": "1Gi" },
            } });
        api::signing::sign(&mut node, &operator, chrono::Utc::now()).unwrap();
        let (code, body) = member.send(
            "POST",
            "/apis/univrs.io/v1/nodes",
            "application/json",
            node.to_string().into_bytes(),
        );
        assert_eq!(code, 201, "{body}");
        // Bound to the Node object (its uid), as the scheduler binds.
        let replica = json!({ "apiVersion": "univrs.io/v1", "kind": "Replica", "metadata": { "name": format!("r{i}") },
            "spec": { "workload": "web", "nodeName": format!("n{i}"), "nodeUid": body["metadata"]["uid"],
                      "container": { "rootfs": "busybox" } } });
        let (code, body) = member.send("POST", WL, "application/json", replica.to_string().into_bytes());
        assert_eq!(code, 201, "{body}");
    }
    let node0 = member.with_authorization(&bearer(&keys[0], &server.audience, now()));
    let status_patch = |path: &str, body: Value| {
        node0.send("PATCH", path, "application/merge-patch+json", body.to_string().into_bytes())
    };
    let ready = json!({ "status": { "conditions": [{ "type": "Ready", "status": "True" }] } });
    assert_eq!(status_patch("/apis/univrs.io/v1/nodes/n0/status", ready.clone()).0, 200);
    status(status_patch("/apis/univrs.io/v1/nodes/n1/status", ready), 403, "Forbidden");
    let running = json!({ "status": { "phase": "Running" } });
    assert_eq!(status_patch(&format!("{WL}/r0/status"), running.clone()).0, 200);
    status(status_patch(&format!("{WL}/r1/status"), running), 403, "Forbidden");
    status(status_patch(&format!("{WL}/r0"), json!({ "spec": { "nodeName": "n1" } })), 403, "Forbidden");
    let leases = |ns: &str| format!("/apis/univrs.io/v1/namespaces/{ns}/leases");
    let lease = |name: &str| {
        json!({ "apiVersion": "univrs.io/v1", "kind": "Lease", "metadata": { "name": name },
                                     "spec": { "holderIdentity": name, "leaseDurationSeconds": 10 } })
    };
    let post_lease = |ns: &str, name: &str| {
        node0.send("POST", &leases(ns), "application/json", lease(name).to_string().into_bytes())
    };
    assert_eq!(post_lease("univrs-node-lease", "n0").0, 201);
    status(post_lease("univrs-node-lease", "n1"), 403, "Forbidden");
    // Node leases live in univrs-node-lease only; univrs-system is the members'.
    status(post_lease("default", "n0"), 403, "Forbidden");
    let body = status(post_lease("univrs-system", "n0"), 403, "Forbidden");
    assert!(body["message"].as_str().unwrap().contains("control plane's namespace"), "{body}");
    server.stop();
}

#[test]
fn malformed_bodies_are_refused_with_what_is_wrong() {
    let u = User::new();
    let server = Server::start(&u, &u.path("data"));
    let http = Http::new(&server);
    let dup =
        r#"{"apiVersion":"univrs.io/v1","kind":"Replica","metadata":{"name":"a","name":"b"},"spec":{}}"#;
    let body = status(http.send("POST", WL, "application/json", dup.into()), 400, "BadRequest");
    assert!(body["message"].as_str().unwrap().contains("duplicate key \"name\""), "{body}");
    let deep = format!("{}{}", "{\"a\":".repeat(1000), "}".repeat(1000));
    status(http.send("POST", WL, "application/json", deep.into_bytes()), 400, "BadRequest");
    let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..10 {
        bomb.push_str(&format!("a{i}: &a{i} [{}]\n", vec![format!("*a{}", i - 1); 10].join(", ")));
    }
    let body = status(http.send("POST", WL, "application/yaml", bomb.into_bytes()), 400, "BadRequest");
    assert!(body["message"].as_str().unwrap().contains("alias"), "{body}");
    let wrong =
        json!({ "apiVersion": "univrs.io/v1", "kind": "Lease", "metadata": { "name": "x" }, "spec": {} });
    let body =
        status(http.send("POST", WL, "application/json", wrong.to_string().into_bytes()), 400, "BadRequest");
    assert!(body["message"].as_str().unwrap().contains("Lease"), "{body}");
    let old = json!({ "apiVersion": "v1", "kind": "Replica", "metadata": { "name": "x" }, "spec": {} });
    let body =
        status(http.send("POST", WL, "application/json", old.to_string().into_bytes()), 422, "Invalid");
    assert_eq!(body["details"]["causes"][0]["field"], "apiVersion", "{body}");
    let (code, list) = http.get(WL);
    assert_eq!(
        (code, list["items"].as_array().unwrap().len()),
        (200, 0),
        "a refused request changed something"
    );
    server.stop();
}

/// A list without `limit` is streamed a chunk at a time (it would otherwise be held whole,
/// parsed and serialized): the document is complete, is a `…List` with its revision, holds
/// what its pages hold at that revision, and honours label selectors.
#[test]
fn a_whole_list_is_streamed_and_holds_what_its_pages_hold() {
    let u = User::new();
    let server = Server::start(&u, &u.path("data"));
    let http = Http::new(&server);
    // 300 objects of ~1.5 KiB: more than one chunk of the stream.
    let pad = "x".repeat(1400);
    for i in 0..300 {
        let obj = json!({ "apiVersion": "univrs.io/v1", "kind": "Replica",
            "metadata": { "name": format!("r{i:03}"), "labels": { "half": if i % 2 == 0 { "even" } else { "odd" } },
                          "annotations": { "pad": pad } },
            "spec": { "workload": "web", "container": { "rootfs": "busybox" } } });
        let (code, body) = http.send("POST", WL, "application/json", obj.to_string().into_bytes());
        assert_eq!(code, 201, "{body}");
    }
    let (code, whole) = http.get(WL);
    assert_eq!(code, 200, "{whole}");
    assert_eq!(whole["kind"], "ReplicaList");
    assert_eq!(whole["apiVersion"], "univrs.io/v1");
    let revision = whole["metadata"]["resourceVersion"].as_str().unwrap().to_owned();
    let items = whole["items"].as_array().unwrap();
    assert_eq!(items.len(), 300);
    assert!(whole.to_string().len() > 400_000, "the list spans several chunks");

    // The same objects, page by page at the whole list's revision.
    let mut paged = Vec::new();
    let mut next = format!("{WL}?limit=120&resourceVersion={revision}&resourceVersionMatch=Exact");
    loop {
        let (code, page) = http.get(&next);
        assert_eq!(code, 200, "{page}");
        paged.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["metadata"]["continue"].as_str() {
            Some(token) => next = format!("{WL}?limit=120&continue={token}"),
            None => break,
        }
    }
    assert_eq!(&paged, items, "pages and the streamed list hold the same objects");

    let (code, odd) = http.get(&format!("{WL}?labelSelector=half%3Dodd"));
    assert_eq!(code, 200, "{odd}");
    let names: Vec<&str> =
        odd["items"].as_array().unwrap().iter().map(|o| o["metadata"]["name"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 150);
    assert!(names.iter().all(|n| n[1..].parse::<u32>().unwrap() % 2 == 1), "{names:?}");
    let (code, none) = http.get(&format!("{WL}?labelSelector=half%3Dnone"));
    assert_eq!((code, none["items"].as_array().unwrap().len()), (200, 0), "{none}");
    assert!(none["metadata"]["resourceVersion"].as_str().is_some(), "{none}");
    server.stop();
}
