//! What the REST API answers to requests real clients send, good and bad, on a real port:
//! every error is a Kubernetes `Status` with the right code and reason, and the server keeps
//! serving after each.

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
        let request = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("content-type", content_type);
        let request =
            if self.bearer.is_empty() { request } else { request.header("authorization", &self.bearer) };
        let request = request.body(body).unwrap();
        let mut response = self.agent.run(request).unwrap();
        let text = response.body_mut().with_config().limit(64 << 20).read_to_string().unwrap();
        (response.status().as_u16(), serde_json::from_str(&text).unwrap_or(Value::String(text)))
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
    // sendInitialEvents: the state, then the bookmark that ends it.
    let (_, events) = http.lines(&format!(
        "{WL}?watch=1&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan&timeoutSeconds=1"
    ));
    assert_eq!(events[0]["type"], "ADDED");
    assert_eq!(
        events[1]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"], "true",
        "{events:?}"
    );
    server.stop();
}
