//! The client for commands that are not async (`ui get`, `ui apply`, …): the same
//! kubeconfig, credentials and failover as the async client ([`crate::failover`]), driven by
//! a runtime of its own (one worker thread). Objects are JSON (`serde_json::Value`), errors are the server's
//! `Status` as kubectl prints it. Not for use inside an async runtime.

use std::io::{BufRead, BufReader, Read};
use std::sync::Arc;

use api::{KindInfo, Scope};
use bytes::Bytes;
use http::{Method, Request, Response, header};
use http_body_util::BodyExt as _;
use kube::client::Body;
use serde_json::{Value, json};

use crate::failover::{self, Failover};
use crate::kubeconfig::Kubeconfig;

/// Largest response body read (a list of many objects).
const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;
/// Largest error body read.
const MAX_ERROR_BYTES: usize = 1024 * 1024;
/// What `Accept` asks for a `meta.k8s.io/v1` Table, with plain JSON as the fallback.
pub const ACCEPT_TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io, application/json";

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No member could be connected to.
    #[error("cannot reach the apiserver at {server}: {cause} — is `ui up` running?")]
    Unreachable {
        /// The last server tried.
        server: String,
        /// Why.
        cause: String,
    },
    /// The server answered with a `Status` error.
    #[error("{0}")]
    Status(Status),
    /// 202: an AI agent's write that its user's AgentGrant holds for approval. Nothing was
    /// written but the Approval named here; the user decides it (`ui approve NAME`) and the
    /// agent watches it for the outcome.
    #[error("{message}")]
    Pending {
        /// The Approval's name.
        approval: String,
        /// The server's words: what waits, for whom, and how to decide it.
        message: String,
    },
    /// Anything else (a broken connection, a body that is not JSON, no credentials).
    #[error("{0}")]
    Other(String),
}

impl ClientError {
    /// The HTTP status code of a server error.
    pub fn code(&self) -> Option<u16> {
        match self {
            ClientError::Status(s) => Some(s.code),
            _ => None,
        }
    }

    /// Whether the server said the object does not exist.
    pub fn is_not_found(&self) -> bool {
        self.code() == Some(404)
    }

    /// Whether the server said the write lost a race (409).
    pub fn is_conflict(&self) -> bool {
        self.code() == Some(409)
    }
}

impl From<failover::Error> for ClientError {
    fn from(e: failover::Error) -> Self {
        match e {
            failover::Error::Unreachable { server, cause } => ClientError::Unreachable { server, cause },
            other => ClientError::Other(other.to_string()),
        }
    }
}

/// A Kubernetes `Status` error from the server.
#[derive(Debug, Clone)]
pub struct Status {
    /// HTTP code.
    pub code: u16,
    /// `reason`, e.g. `NotFound`.
    pub reason: String,
    /// `message`.
    pub message: String,
    /// `details.causes`: (field, message).
    pub causes: Vec<(String, String)>,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // As kubectl: `Error from server (NotFound): …`, then each field that is wrong.
        write!(f, "Error from server ({}): {}", self.reason, self.message)?;
        for (field, message) in &self.causes {
            if !self.message.contains(message.as_str()) {
                write!(f, "\n  {field}: {message}")?;
            }
        }
        Ok(())
    }
}

impl Status {
    /// The `Status` of an error response.
    pub fn from_response(code: u16, body: &str) -> Self {
        let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
        let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        let causes = v
            .pointer("/details/causes")
            .and_then(Value::as_array)
            .map(|cs| {
                cs.iter()
                    .map(|c| {
                        let s = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
                        (s("field"), s("message"))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let reason = text("reason").unwrap_or_else(|| format!("HTTP {code}"));
        let message = text("message").unwrap_or_else(|| {
            let b = body.trim();
            if b.is_empty() { "the server gave no reason".into() } else { b.chars().take(200).collect() }
        });
        Self { code, reason, message, causes }
    }
}

/// A client of one cluster, with the namespace commands default to.
#[derive(Debug)]
pub struct Client {
    runtime: Arc<tokio::runtime::Runtime>,
    failover: Failover,
    namespace: String,
    namespace_from_flag: bool,
    /// The `fieldManager` creates and updates name (`managedFields`), if any.
    field_manager: Option<String>,
}

impl Client {
    /// A client of the cluster `kubeconfig` names (its servers, CA, credential), in
    /// `namespace` (else the context's, else `default`).
    pub fn new(kubeconfig: &Kubeconfig, namespace: Option<String>) -> Result<Self, ClientError> {
        // One worker drives the connections, so several threads may wait on streams at once
        // (`ui logs -f` of several replicas) and each is served as its data comes.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("ui-client")
            .enable_all()
            .build()
            .map_err(|e| ClientError::Other(format!("cannot start the client's runtime: {e}")))?;
        let failover = {
            let _in = runtime.enter();
            Failover::new(kubeconfig)?
        };
        let namespace_from_flag = namespace.is_some();
        let namespace = namespace.or(kubeconfig.namespace.clone()).unwrap_or_else(|| "default".into());
        Ok(Self { runtime: Arc::new(runtime), failover, namespace, namespace_from_flag, field_manager: None })
    }

    /// The same client, naming `manager` as the field manager of its creates and updates, so
    /// the server records in `managedFields` which fields it wrote (as kubectl does).
    #[must_use]
    pub fn with_field_manager(mut self, manager: impl Into<String>) -> Self {
        self.field_manager = Some(manager.into());
        self
    }

    /// The query of a write: `dryRun` and `fieldManager`.
    fn write_query(&self, dry_run: bool) -> Vec<(&str, &str)> {
        let mut query = Vec::new();
        if dry_run {
            query.push(("dryRun", "All"));
        }
        if let Some(m) = &self.field_manager {
            query.push(("fieldManager", m.as_str()));
        }
        query
    }

    /// The namespace of `-n`, the kubeconfig context, or `default`.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The server that answered last.
    pub fn server(&self) -> &str {
        self.failover.current()
    }

    /// The namespace an object of `kind` written with `namespace` (if any) goes to: `None` for
    /// cluster-scoped kinds. A namespace in the object that contradicts `-n` is an error.
    pub fn namespace_for(&self, kind: &KindInfo, written: Option<&str>) -> Result<Option<String>, String> {
        if kind.scope == Scope::Cluster {
            return Ok(None);
        }
        match written.filter(|ns| !ns.is_empty()) {
            Some(ns) if self.namespace_from_flag && ns != self.namespace => Err(format!(
                "the namespace of the object ({ns}) does not match --namespace {}: drop -n or pass -n {ns}",
                self.namespace
            )),
            Some(ns) => Ok(Some(ns.to_owned())),
            None => Ok(Some(self.namespace.clone())),
        }
    }

    /// The path of a collection (`name` None) or of one object; `namespace` None for a
    /// cluster-scoped kind or a list across all namespaces.
    pub fn path(kind: &KindInfo, namespace: Option<&str>, name: Option<&str>) -> String {
        let mut p = kind.group_version_path();
        if let (Scope::Namespaced, Some(ns)) = (kind.scope, namespace) {
            p.push_str(&format!("/namespaces/{}", encode(ns)));
        }
        p.push('/');
        p.push_str(kind.plural);
        if let Some(n) = name {
            p.push('/');
            p.push_str(&encode(n));
        }
        p
    }

    /// Sends one request (to a member that can be reached) and returns the response, or the
    /// server's `Status` error.
    fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        accept: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Response<Body>, ClientError> {
        let mut uri = path.to_owned();
        for (i, (k, v)) in query.iter().enumerate() {
            uri.push(if i == 0 { '?' } else { '&' });
            uri.push_str(&format!("{k}={}", encode(v)));
        }
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::ACCEPT, accept.unwrap_or("application/json"));
        let bytes = match body {
            Some(b) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Bytes::from(b.to_string())
            }
            None => Bytes::new(),
        };
        let request = request.body(Body::from(bytes)).map_err(|e| ClientError::Other(e.to_string()))?;
        let response = self.runtime.block_on(self.failover.send(request))?;
        let code = response.status().as_u16();
        if code >= 400 {
            let text = self.read_text(response.into_body(), MAX_ERROR_BYTES).unwrap_or_default();
            return Err(ClientError::Status(Status::from_response(code, &text)));
        }
        if code == 202 {
            // A write held for approval answers a Status, not the object.
            let text = self.read_text(response.into_body(), MAX_ERROR_BYTES).unwrap_or_default();
            let status = Status::from_response(code, &text);
            let v: Value = serde_json::from_str(&text).unwrap_or_default();
            let approval = v.pointer("/details/name").and_then(Value::as_str).unwrap_or_default().to_owned();
            return Err(ClientError::Pending { approval, message: status.message });
        }
        Ok(response)
    }

    fn read_text(&self, body: Body, limit: usize) -> Result<String, ClientError> {
        let collected = self
            .runtime
            .block_on(http_body_util::Limited::new(body, limit).collect())
            .map_err(|e| ClientError::Other(format!("cannot read the answer of {}: {e}", self.server())))?;
        String::from_utf8(collected.to_bytes().to_vec())
            .map_err(|_| ClientError::Other(format!("the answer of {} is not UTF-8", self.server())))
    }

    fn json(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        accept: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let response = self.send(method, path, query, accept, body)?;
        let text = self.read_text(response.into_body(), MAX_RESPONSE_BYTES)?;
        serde_json::from_str(&text).map_err(|e| {
            ClientError::Other(format!("the answer of {}{path} is not JSON: {e}", self.server()))
        })
    }

    /// GET any path of the server (such as `/cluster/members`) as JSON.
    pub fn get_json(&self, path: &str) -> Result<Value, ClientError> {
        self.json(Method::GET, path, &[], None, None)
    }

    /// POST `body` to any path of the server, answering JSON.
    pub fn post_json(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        self.json(Method::POST, path, &[], None, Some(body))
    }

    /// DELETE any path of the server, answering JSON.
    pub fn delete_json(&self, path: &str) -> Result<Value, ClientError> {
        self.json(Method::DELETE, path, &[], None, None)
    }

    /// GET one object.
    pub fn get(&self, kind: &KindInfo, ns: Option<&str>, name: &str) -> Result<Value, ClientError> {
        self.json(Method::GET, &Self::path(kind, ns, Some(name)), &[], None, None)
    }

    /// GET one object as a Table if the server can (else the object).
    pub fn get_table(&self, kind: &KindInfo, ns: Option<&str>, name: &str) -> Result<Value, ClientError> {
        self.json(Method::GET, &Self::path(kind, ns, Some(name)), &[], Some(ACCEPT_TABLE), None)
    }

    /// GET a list (in `ns`, or across namespaces when None), as a Table when `table` and the
    /// server can.
    pub fn list(
        &self,
        kind: &KindInfo,
        ns: Option<&str>,
        selector: Option<&str>,
        table: bool,
    ) -> Result<Value, ClientError> {
        let query: Vec<(&str, &str)> = selector.map(|s| ("labelSelector", s)).into_iter().collect();
        let accept = table.then_some(ACCEPT_TABLE);
        self.json(Method::GET, &Self::path(kind, ns, None), &query, accept, None)
    }

    /// GET one page of a list with any list options (`labelSelector`, `fieldSelector`,
    /// `limit`, `continue`), as a Table when `table` and the server can.
    pub fn list_with(
        &self,
        kind: &KindInfo,
        ns: Option<&str>,
        query: &[(&str, &str)],
        table: bool,
    ) -> Result<Value, ClientError> {
        let accept = table.then_some(ACCEPT_TABLE);
        self.json(Method::GET, &Self::path(kind, ns, None), query, accept, None)
    }

    /// POST a new object.
    pub fn create(
        &self,
        kind: &KindInfo,
        ns: Option<&str>,
        obj: &Value,
        dry_run: bool,
    ) -> Result<Value, ClientError> {
        self.json(Method::POST, &Self::path(kind, ns, None), &self.write_query(dry_run), None, Some(obj))
    }

    /// PUT an object (its `metadata.resourceVersion` is the precondition).
    pub fn update(
        &self,
        kind: &KindInfo,
        ns: Option<&str>,
        name: &str,
        obj: &Value,
        dry_run: bool,
    ) -> Result<Value, ClientError> {
        self.json(Method::PUT, &Self::path(kind, ns, Some(name)), &self.write_query(dry_run), None, Some(obj))
    }

    /// DELETE an object.
    pub fn delete(
        &self,
        kind: &KindInfo,
        ns: Option<&str>,
        name: &str,
        dry_run: bool,
    ) -> Result<Value, ClientError> {
        let query: &[(&str, &str)] = if dry_run { &[("dryRun", "All")] } else { &[] };
        let options = json!({ "kind": "DeleteOptions", "apiVersion": "v1" });
        self.json(Method::DELETE, &Self::path(kind, ns, Some(name)), query, None, Some(&options))
    }

    /// Reads the object `name` (`None` when it does not exist), lets `change` make what it
    /// should become (`Ok(None)`: nothing to write), and writes it — created when it did not
    /// exist, else replaced with the read `resourceVersion` as precondition — reading again
    /// and asking `change` again on a conflict ([`crate::retry::CONFLICT_ATTEMPTS`] times).
    /// Returns what was written, or `None` when nothing was.
    pub fn modify<E: From<ClientError>>(
        &self,
        kind: &KindInfo,
        ns: Option<&str>,
        name: &str,
        change: impl FnMut(Option<&Value>) -> Result<Option<Value>, E>,
    ) -> Result<Option<Value>, E> {
        self.modify_dry(kind, ns, name, false, change)
    }

    /// [`Client::modify`], as a server-side dry run when `dry_run` (nothing is stored).
    pub fn modify_dry<E: From<ClientError>>(
        &self,
        kind: &KindInfo,
        ns: Option<&str>,
        name: &str,
        dry_run: bool,
        mut change: impl FnMut(Option<&Value>) -> Result<Option<Value>, E>,
    ) -> Result<Option<Value>, E> {
        for attempt in 0..crate::retry::CONFLICT_ATTEMPTS {
            std::thread::sleep(crate::retry::conflict_pause(attempt));
            let current = match self.get(kind, ns, name) {
                Ok(v) => Some(v),
                Err(e) if e.is_not_found() => None,
                Err(e) => return Err(e.into()),
            };
            let Some(mut wanted) = change(current.as_ref())? else { return Ok(None) };
            let written = match &current {
                None => self.create(kind, ns, &wanted, dry_run),
                Some(c) => {
                    wanted["metadata"]["resourceVersion"] = c["metadata"]["resourceVersion"].clone();
                    self.update(kind, ns, name, &wanted, dry_run)
                }
            };
            match written {
                Ok(v) => return Ok(Some(v)),
                Err(e) if e.is_conflict() => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(ClientError::Other(format!(
            "{} {name} kept changing while it was being written ({} attempts): try again",
            kind.plural,
            crate::retry::CONFLICT_ATTEMPTS
        ))
        .into())
    }

    /// GET a stream of text (a replica's log), read as it comes.
    pub fn stream(&self, path: &str, query: &[(&str, &str)]) -> Result<Box<dyn Read + Send>, ClientError> {
        let response = self.send(Method::GET, path, query, Some("text/plain"), None)?;
        Ok(Box::new(BodyReader {
            runtime: self.runtime.clone(),
            body: response.into_body(),
            buf: Bytes::new(),
        }))
    }

    /// Starts a watch of `kind` from `resource_version`: newline-delimited events, whose
    /// objects are Tables when `table` and the server can.
    pub fn watch(
        &self,
        kind: &KindInfo,
        ns: Option<&str>,
        selector: Option<&str>,
        resource_version: &str,
        table: bool,
    ) -> Result<Watch, ClientError> {
        let mut query =
            vec![("watch", "1"), ("resourceVersion", resource_version), ("allowWatchBookmarks", "true")];
        if let Some(s) = selector {
            query.push(("labelSelector", s));
        }
        let accept = table.then_some(ACCEPT_TABLE);
        let response = self.send(Method::GET, &Self::path(kind, ns, None), &query, accept, None)?;
        let reader =
            BodyReader { runtime: self.runtime.clone(), body: response.into_body(), buf: Bytes::new() };
        Ok(Watch { lines: Box::new(BufReader::new(reader)) })
    }
}

impl Client {
    /// Starts a watch of `kind` with any query (`watch`, `fieldSelector`, `resourceVersion`,
    /// …): newline-delimited events of plain objects.
    pub fn watch_with(
        &self,
        kind: &KindInfo,
        ns: Option<&str>,
        query: &[(&str, &str)],
    ) -> Result<Watch, ClientError> {
        let response = self.send(Method::GET, &Self::path(kind, ns, None), query, None, None)?;
        let reader =
            BodyReader { runtime: self.runtime.clone(), body: response.into_body(), buf: Bytes::new() };
        Ok(Watch { lines: Box::new(BufReader::new(reader)) })
    }
}

/// A response body read as it comes, on the client's runtime.
struct BodyReader {
    runtime: Arc<tokio::runtime::Runtime>,
    body: Body,
    buf: Bytes,
}

impl Read for BodyReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.buf.is_empty() {
            match self.runtime.block_on(self.body.frame()) {
                None => return Ok(0),
                Some(Err(e)) => return Err(std::io::Error::other(e)),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf = data;
                    }
                }
            }
        }
        let n = out.len().min(self.buf.len());
        out[..n].copy_from_slice(&self.buf.split_to(n));
        Ok(n)
    }
}

/// A stream of watch events.
pub struct Watch {
    lines: Box<dyn BufRead + Send>,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Watch")
    }
}

impl Watch {
    /// The next event `(type, object)`, or None when the server ended the stream.
    pub fn next_event(&mut self) -> Result<Option<(String, Value)>, ClientError> {
        loop {
            let mut line = String::new();
            let n = (&mut self.lines)
                .take(MAX_RESPONSE_BYTES as u64)
                .read_line(&mut line)
                .map_err(|e| ClientError::Other(format!("the watch stream broke: {e}")))?;
            if n == 0 {
                return Ok(None);
            }
            if line.trim().is_empty() {
                continue;
            }
            let event: Value = serde_json::from_str(&line)
                .map_err(|e| ClientError::Other(format!("a watch event is not JSON: {e}")))?;
            let Some(kind) = event.get("type").and_then(Value::as_str).map(str::to_owned) else {
                return Err(ClientError::Other(
                    "the apiserver answered ?watch=1 with something that is not a watch event".into(),
                ));
            };
            let object = event.get("object").cloned().unwrap_or(Value::Null);
            return Ok(Some((kind, object)));
        }
    }
}

/// Percent-encodes a path segment or query value.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_errors_read_like_kubectl() {
        let body =
            r#"{"kind":"Status","message":"workloads \"x\" not found","reason":"NotFound","code":404}"#;
        assert_eq!(
            Status::from_response(404, body).to_string(),
            "Error from server (NotFound): workloads \"x\" not found"
        );
        assert_eq!(Status::from_response(502, "").reason, "HTTP 502");
    }

    #[test]
    fn names_are_percent_encoded() {
        assert_eq!(encode("a b/c"), "a%20b%2Fc");
        assert_eq!(encode("app=hello,tier!=db"), "app%3Dhello%2Ctier%21%3Ddb");
    }
}
