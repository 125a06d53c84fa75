//! The client of the apiserver's Kubernetes REST API: which server (flags, kubeconfig), the
//! URLs of objects, and `Status` errors. All HTTP goes through [`Client::send`], so the
//! transport (plain HTTP today, TLS with authentication later) lives in this one place.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use api::{KindInfo, Scope};
use serde_json::{Value, json};

use crate::commands::Context;

/// Largest response body read (a list of many objects).
const MAX_RESPONSE_BYTES: u64 = 256 * 1024 * 1024;
/// How long to wait for a TCP connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long to wait for the headers of a response.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
/// What `Accept` asks for a `meta.k8s.io/v1` Table, with plain JSON as the fallback.
pub const ACCEPT_TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io, application/json";

/// Which apiserver and namespace: the options every command that talks to the cluster takes.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ClusterArgs {
    /// The apiserver's URL [default: the server of the kubeconfig's current context]
    #[arg(long, value_name = "URL")]
    server: Option<String>,
    /// The kubeconfig to read [default: $KUBECONFIG (first path), else CONFIG_DIR/kubeconfig]
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// The namespace [default: the kubeconfig context's, else `default`]
    #[arg(short = 'n', long, value_name = "NAMESPACE")]
    namespace: Option<String>,
}

impl ClusterArgs {
    /// The cluster of the kubeconfig at `path`.
    pub fn for_kubeconfig(path: PathBuf) -> Self {
        Self { server: None, kubeconfig: Some(path), namespace: None }
    }
}

/// The server, CA (PEM) and token audience of the cluster `args` and the kubeconfig name, for
/// writing a kubeconfig of another identity on the same cluster (a node's).
pub fn cluster_of(ctx: &Context, args: &ClusterArgs) -> anyhow::Result<(String, Option<String>, String)> {
    let path = kubeconfig_path(ctx, args);
    let kube = read_kubeconfig(&path)?;
    let audience = match &kube.credential {
        Credential::Exec { args, .. } => args.iter().skip_while(|a| *a != "--audience").nth(1).cloned(),
        _ => None,
    };
    let audience = audience.with_context(|| {
        format!(
            "kubeconfig {}: its user is not `ui token --audience …`, so the cluster's audience is unknown",
            path.display()
        )
    })?;
    let server = args.server.clone().unwrap_or(kube.server);
    Ok((server, kube.ca_pem, audience))
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No TCP connection (refused, timed out, no such host).
    #[error("cannot reach the apiserver at {server}: {cause} — is `ui up` running?")]
    Unreachable { server: String, cause: String },
    /// The server answered with a `Status` error.
    #[error("{0}")]
    Status(Status),
    /// Anything else (a broken connection, a body that is not JSON).
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
    fn from_response(code: u16, body: &str) -> Self {
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

/// A connection to one apiserver, with the namespace commands default to.
#[derive(Debug)]
pub struct Client {
    agent: ureq::Agent,
    server: String,
    /// Every member's URL, `server` first (the kubeconfig's `univrs.io/servers` extension);
    /// a request that cannot connect to one tries the next.
    servers: Vec<String>,
    /// The index in `servers` of the one that answered last.
    current: std::sync::atomic::AtomicUsize,
    /// `Bearer …`, from the kubeconfig's user (a token, or an exec plugin run once).
    authorization: Option<String>,
    namespace: String,
    namespace_from_flag: bool,
}

/// An HTTP method of the API.
#[derive(Clone, Copy, Debug)]
enum Method {
    Get,
    Post,
    Put,
    Delete,
}

impl Client {
    /// The server and namespace from the flags, else the kubeconfig.
    pub fn new(ctx: &Context, args: &ClusterArgs) -> anyhow::Result<Self> {
        let path = kubeconfig_path(ctx, args);
        let kube = match (&args.server, path.exists()) {
            // --server alone: no kubeconfig to take a CA or credentials from.
            (Some(_), false) => Kubeconfig::default(),
            _ => read_kubeconfig(&path)?,
        };
        let server = args.server.clone().unwrap_or_else(|| kube.server.clone());
        let server = server.trim_end_matches('/').to_owned();
        let mut servers = vec![server.clone()];
        if args.server.is_none() {
            servers.extend(
                kube.servers.iter().map(|s| s.trim_end_matches('/').to_owned()).filter(|s| *s != server),
            );
        }
        if !server.starts_with("http://") && !server.starts_with("https://") {
            bail!("server {server:?} is not an http:// or https:// URL");
        }
        let namespace_from_flag = args.namespace.is_some();
        let namespace = args.namespace.clone().or(kube.namespace.clone()).unwrap_or_else(|| "default".into());
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_recv_response(Some(RESPONSE_TIMEOUT));
        if let Some(pem) = &kube.ca_pem {
            let cert = ureq::tls::Certificate::from_pem(pem.as_bytes()).map_err(|e| {
                anyhow::anyhow!("kubeconfig {}: certificate-authority-data: {e}", path.display())
            })?;
            let roots = ureq::tls::RootCerts::Specific(std::sync::Arc::new(vec![cert.to_owned()]));
            config = config.tls_config(ureq::tls::TlsConfig::builder().root_certs(roots).build());
        }
        let authorization = kube.credential.bearer(&path)?.map(|t| format!("Bearer {t}"));
        Ok(Self {
            agent: config.build().into(),
            server,
            servers,
            current: Default::default(),
            authorization,
            namespace,
            namespace_from_flag,
        })
    }

    /// The namespace of `-n`, the kubeconfig context, or `default`.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The namespace an object of `kind` written with `namespace` (if any) goes to: `None` for
    /// cluster-scoped kinds. A namespace in the object that contradicts `-n` is an error.
    pub fn namespace_for(&self, kind: &KindInfo, written: Option<&str>) -> anyhow::Result<Option<String>> {
        if kind.scope == Scope::Cluster {
            return Ok(None);
        }
        match written.filter(|ns| !ns.is_empty()) {
            Some(ns) if self.namespace_from_flag && ns != self.namespace => bail!(
                "the namespace of the object ({ns}) does not match --namespace {}: drop -n or pass -n {ns}",
                self.namespace
            ),
            Some(ns) => Ok(Some(ns.to_owned())),
            None => Ok(Some(self.namespace.clone())),
        }
    }

    /// The path of a collection (`name` None) or of one object; `namespace` None for a
    /// cluster-scoped kind or a list across all namespaces.
    fn path(kind: &KindInfo, namespace: Option<&str>, name: Option<&str>) -> String {
        let mut p = format!("/apis/{}", api::API_VERSION);
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

    /// Sends one request and returns the response, or the server's `Status` error. A server
    /// that cannot be connected to (so it never saw the request) is skipped for the next one
    /// the kubeconfig lists.
    fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        accept: Option<&str>,
        body: Option<&Value>,
    ) -> Result<ureq::http::Response<ureq::Body>, ClientError> {
        use std::sync::atomic::Ordering;
        let first = self.current.load(Ordering::Relaxed);
        let mut last = None;
        for i in 0..self.servers.len() {
            let at = (first + i) % self.servers.len();
            match self.send_to(&self.servers[at], method, path, query, accept, body) {
                Err(SendError::NotConnected(e)) => last = Some(e),
                Err(SendError::Failed(e)) => return Err(e),
                Ok(r) => {
                    self.current.store(at, Ordering::Relaxed);
                    return Ok(r);
                }
            }
        }
        Err(last.expect("at least one server"))
    }

    fn send_to(
        &self,
        server: &str,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        accept: Option<&str>,
        body: Option<&Value>,
    ) -> Result<ureq::http::Response<ureq::Body>, SendError> {
        let mut url = format!("{server}{path}");
        for (i, (k, v)) in query.iter().enumerate() {
            url.push(if i == 0 { '?' } else { '&' });
            url.push_str(&format!("{k}={}", encode(v)));
        }
        let accept = accept.unwrap_or("application/json");
        let auth = self.authorization.as_deref().unwrap_or_default();
        let result = match method {
            Method::Get => self.agent.get(&url).header("Accept", accept).header("Authorization", auth).call(),
            Method::Delete => {
                let b = body.cloned().unwrap_or_else(|| json!({}));
                self.agent
                    .delete(&url)
                    .header("Authorization", auth)
                    .header("Accept", accept)
                    .header("Content-Type", "application/json")
                    .force_send_body()
                    .send(b.to_string())
            }
            Method::Post | Method::Put => {
                let b = body.map(Value::to_string).unwrap_or_default();
                let req = match method {
                    Method::Post => self.agent.post(&url),
                    _ => self.agent.put(&url),
                };
                req.header("Accept", accept)
                    .header("Authorization", auth)
                    .header("Content-Type", "application/json")
                    .send(b)
            }
        };
        let response = match result {
            Ok(r) => r,
            Err(e) if never_connected(&e) => return Err(SendError::NotConnected(transport_error(server, e))),
            Err(e) => return Err(SendError::Failed(transport_error(server, e))),
        };
        let code = response.status().as_u16();
        if code >= 400 {
            let mut response = response;
            let body =
                response.body_mut().with_config().limit(1024 * 1024).read_to_string().unwrap_or_default();
            return Err(SendError::Failed(ClientError::Status(Status::from_response(code, &body))));
        }
        Ok(response)
    }

    /// GET any path of the server (such as `/cluster/members`) as JSON.
    pub fn get_json(&self, path: &str) -> Result<Value, ClientError> {
        self.json(Method::Get, path, &[], None, None)
    }

    /// POST `body` to any path of the server, answering JSON.
    pub fn post_json(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        self.json(Method::Post, path, &[], None, Some(body))
    }

    /// DELETE any path of the server, answering JSON.
    pub fn delete_json(&self, path: &str) -> Result<Value, ClientError> {
        self.json(Method::Delete, path, &[], None, None)
    }
}

/// How one attempt at one server failed.
enum SendError {
    /// The connection was never made: the request is safe to send to another server.
    NotConnected(ClientError),
    /// Anything else.
    Failed(ClientError),
}

/// Whether `e` happened before the request could reach the server.
fn never_connected(e: &ureq::Error) -> bool {
    match e {
        ureq::Error::Io(io) => io.kind() == std::io::ErrorKind::ConnectionRefused,
        ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => true,
        ureq::Error::Timeout(t) => matches!(t, ureq::Timeout::Connect | ureq::Timeout::Resolve),
        _ => false,
    }
}

fn transport_error(server: &str, e: ureq::Error) -> ClientError {
    let cause = match &e {
        ureq::Error::Io(io) => match io.kind() {
            std::io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
            _ => io.to_string(),
        },
        ureq::Error::ConnectionFailed => "connection failed".to_owned(),
        ureq::Error::HostNotFound => "host not found".to_owned(),
        ureq::Error::Timeout(t) => format!("timed out ({t})"),
        other => return ClientError::Other(format!("request to {server} failed: {other}")),
    };
    ClientError::Unreachable { server: server.to_owned(), cause }
}

impl Client {
    fn json(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        accept: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let mut response = self.send(method, path, query, accept, body)?;
        let text =
            response.body_mut().with_config().limit(MAX_RESPONSE_BYTES).read_to_string().map_err(|e| {
                ClientError::Other(format!("cannot read the answer of {}{path}: {e}", self.server))
            })?;
        serde_json::from_str(&text)
            .map_err(|e| ClientError::Other(format!("the answer of {}{path} is not JSON: {e}", self.server)))
    }

    /// GET one object.
    pub fn get(&self, kind: &KindInfo, ns: Option<&str>, name: &str) -> Result<Value, ClientError> {
        self.json(Method::Get, &Self::path(kind, ns, Some(name)), &[], None, None)
    }

    /// GET one object as a Table if the server can (else the object).
    pub fn get_table(&self, kind: &KindInfo, ns: Option<&str>, name: &str) -> Result<Value, ClientError> {
        self.json(Method::Get, &Self::path(kind, ns, Some(name)), &[], Some(ACCEPT_TABLE), None)
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
        self.json(Method::Get, &Self::path(kind, ns, None), &query, accept, None)
    }

    /// POST a new object.
    pub fn create(
        &self,
        kind: &KindInfo,
        ns: Option<&str>,
        obj: &Value,
        dry_run: bool,
    ) -> Result<Value, ClientError> {
        let query: &[(&str, &str)] = if dry_run { &[("dryRun", "All")] } else { &[] };
        self.json(Method::Post, &Self::path(kind, ns, None), query, None, Some(obj))
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
        let query: &[(&str, &str)] = if dry_run { &[("dryRun", "All")] } else { &[] };
        self.json(Method::Put, &Self::path(kind, ns, Some(name)), query, None, Some(obj))
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
        self.json(Method::Delete, &Self::path(kind, ns, Some(name)), query, None, Some(&options))
    }

    /// GET a stream of text (a replica's log), read as it comes.
    pub fn stream(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<Box<dyn std::io::Read + Send>, ClientError> {
        let response = self.send(Method::Get, path, query, Some("text/plain"), None)?;
        Ok(Box::new(response.into_body().into_reader()))
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
        let response = self.send(Method::Get, &Self::path(kind, ns, None), &query, accept, None)?;
        Ok(Watch { lines: Box::new(BufReader::new(response.into_body().into_reader())) })
    }
}

/// A stream of watch events.
pub struct Watch {
    lines: Box<dyn BufRead>,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Watch")
    }
}

impl Watch {
    /// The next event `(type, object)`, or None when the server ended the stream.
    pub fn next_event(&mut self) -> anyhow::Result<Option<(String, Value)>> {
        loop {
            let mut line = String::new();
            let n = (&mut self.lines)
                .take(MAX_RESPONSE_BYTES)
                .read_line(&mut line)
                .context("the watch stream broke")?;
            if n == 0 {
                return Ok(None);
            }
            if line.trim().is_empty() {
                continue;
            }
            let event: Value = serde_json::from_str(&line).context("a watch event is not JSON")?;
            let Some(kind) = event.get("type").and_then(Value::as_str).map(str::to_owned) else {
                bail!(
                    "the apiserver answered ?watch=1 with something that is not a watch event: it does not support watch yet (upgrade it)"
                )
            };
            let object = event.get("object").cloned().unwrap_or(Value::Null);
            return Ok(Some((kind, object)));
        }
    }
}

/// Percent-encodes a path segment or query value.
fn encode(s: &str) -> String {
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

fn kubeconfig_path(ctx: &Context, args: &ClusterArgs) -> PathBuf {
    if let Some(p) = &args.kubeconfig {
        return p.clone();
    }
    if let Some(env) = std::env::var_os("KUBECONFIG")
        && let Some(first) = std::env::split_paths(&env).find(|p| !p.as_os_str().is_empty())
    {
        return first;
    }
    ctx.dirs.root().join("kubeconfig")
}

/// What the current context of a kubeconfig says.
#[derive(Debug, Default)]
struct Kubeconfig {
    server: String,
    /// Every member's URL, from the cluster's `univrs.io/servers` extension (`ui` fails over
    /// between them; kubectl only knows `server`).
    servers: Vec<String>,
    namespace: Option<String>,
    /// The cluster's CA (PEM), from `certificate-authority-data`.
    ca_pem: Option<String>,
    credential: Credential,
}

/// How the kubeconfig's user authenticates.
#[derive(Debug, Default)]
enum Credential {
    #[default]
    None,
    /// `user.token`.
    Token(String),
    /// `user.exec`: a client-go credential plugin (as `ui up` writes: `ui token`).
    Exec { command: String, args: Vec<String>, env: Vec<(String, String)> },
}

impl Credential {
    /// The bearer token, running the exec plugin if there is one.
    fn bearer(&self, kubeconfig: &Path) -> anyhow::Result<Option<String>> {
        let (command, args, env) = match self {
            Credential::None => return Ok(None),
            Credential::Token(t) => return Ok(Some(t.clone())),
            Credential::Exec { command, args, env } => (command, args, env),
        };
        // As client-go does: the plugin may prompt on the terminal (stdin and stderr are ours).
        let out = std::process::Command::new(command)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::inherit())
            .stderr(std::process::Stdio::inherit())
            .output()
            .with_context(|| {
                format!("kubeconfig {}: cannot run the credential plugin {command}", kubeconfig.display())
            })?;
        if !out.status.success() {
            bail!("the credential plugin {command} failed ({}); see its message above", out.status);
        }
        let credential: Value = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("the credential plugin {command} printed no ExecCredential"))?;
        let token = credential.pointer("/status/token").and_then(Value::as_str);
        Ok(Some(
            token
                .with_context(|| format!("the credential plugin {command} printed no status.token"))?
                .to_owned(),
        ))
    }
}

/// The current context of the kubeconfig at `path`.
fn read_kubeconfig(path: &Path) -> anyhow::Result<Kubeconfig> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        anyhow::anyhow!(
            "cannot read the kubeconfig {} ({e}): start a cluster with `ui up`, or pass --server URL or --kubeconfig FILE",
            path.display()
        )
    })?;
    let docs = api::manifest::parse_documents(&text)
        .map_err(|e| anyhow::anyhow!("kubeconfig {}: {}", path.display(), e.located()))?;
    let config = docs.into_iter().next().unwrap_or(Value::Null);
    kubeconfig_server(&config).map_err(|e| anyhow::anyhow!("kubeconfig {}: {e}", path.display()))
}

/// `current-context` → its cluster's `server` and CA, its user's credential, and the context's
/// namespace.
fn kubeconfig_server(config: &Value) -> Result<Kubeconfig, String> {
    let current = config.get("current-context").and_then(Value::as_str).ok_or("current-context: not set")?;
    let named = |list: &str, name: &str| {
        config
            .get(list)
            .and_then(Value::as_array)
            .and_then(|items| items.iter().find(|i| i.get("name").and_then(Value::as_str) == Some(name)))
            .cloned()
    };
    let context =
        named("contexts", current).ok_or_else(|| format!("contexts: no context named {current:?}"))?;
    let cluster_name = context
        .pointer("/context/cluster")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("contexts[{current}].context.cluster: not set"))?;
    let cluster = named("clusters", cluster_name)
        .ok_or_else(|| format!("clusters: no cluster named {cluster_name:?}"))?;
    let server = cluster
        .pointer("/cluster/server")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("clusters[{cluster_name}].cluster.server: not set"))?;
    let servers = cluster
        .pointer("/cluster/extensions")
        .and_then(Value::as_array)
        .and_then(|exts| {
            exts.iter().find(|e| e.get("name").and_then(Value::as_str) == Some("univrs.io/servers"))
        })
        .and_then(|e| e.pointer("/extension/servers"))
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default();
    let ns = context.pointer("/context/namespace").and_then(Value::as_str).filter(|s| !s.is_empty());
    let ca_pem = match cluster.pointer("/cluster/certificate-authority-data").and_then(Value::as_str) {
        Some(b64) => {
            use base64::Engine as _;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|e| format!("clusters[{cluster_name}].cluster.certificate-authority-data: {e}"))?;
            Some(
                String::from_utf8(bytes)
                    .map_err(|_| "certificate-authority-data is not PEM text".to_owned())?,
            )
        }
        None => None,
    };
    let user = context.pointer("/context/user").and_then(Value::as_str).and_then(|u| named("users", u));
    let credential = match user.as_ref().and_then(|u| u.get("user")) {
        Some(u) if u.get("token").and_then(Value::as_str).is_some() => {
            Credential::Token(u["token"].as_str().unwrap_or_default().to_owned())
        }
        Some(u) if u.get("exec").is_some() => {
            let exec = &u["exec"];
            let strings = |v: Option<&Value>| -> Vec<String> {
                v.and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
                    .unwrap_or_default()
            };
            let env = exec
                .get("env")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|e| {
                            Some((e.get("name")?.as_str()?.to_owned(), e.get("value")?.as_str()?.to_owned()))
                        })
                        .collect()
                })
                .unwrap_or_default();
            let command =
                exec.get("command").and_then(Value::as_str).ok_or("users[].user.exec.command: not set")?;
            Credential::Exec { command: command.to_owned(), args: strings(exec.get("args")), env }
        }
        _ => Credential::None,
    };
    Ok(Kubeconfig {
        server: server.to_owned(),
        servers,
        namespace: ns.map(str::to_owned),
        ca_pem,
        credential,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_current_context_names_the_server_and_namespace() {
        let text = "apiVersion: v1\nkind: Config\nclusters:\n- name: a\n  cluster:\n    server: http://127.0.0.1:1\n\
                    - name: b\n  cluster:\n    server: http://127.0.0.1:2\ncontexts:\n- name: x\n  context:\n    cluster: b\n    namespace: team\n\
                    current-context: x\n";
        let doc = api::manifest::parse_documents(text).unwrap().remove(0);
        let k = kubeconfig_server(&doc).unwrap();
        assert_eq!((k.server.as_str(), k.namespace.as_deref()), ("http://127.0.0.1:2", Some("team")));
        assert!(k.ca_pem.is_none() && matches!(k.credential, Credential::None));
        let bad = api::manifest::parse_documents("current-context: y\ncontexts: []\n").unwrap().remove(0);
        assert!(kubeconfig_server(&bad).unwrap_err().contains("no context named \"y\""));
    }

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
