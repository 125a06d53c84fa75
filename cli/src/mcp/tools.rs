//! The tools: each parses its arguments (a JSON Schema the client sees), runs the same code
//! as its `ui` command on a blocking thread, and answers compact, bounded text. A failure is
//! a tool error (`isError`) carrying the apiserver's words, so the agent can act on it.

use std::io::Read as _;

use anyhow::{Context as _, bail};
use api::{KindInfo, Scope};
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock};
use rmcp::{ErrorData as McpError, tool, tool_router};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use super::{State, UiServer, bounded, explain};
use crate::connection::{Client, ClientError};
use crate::manifest_files::{self, Source};
use crate::objects::{Target, kind_named};

/// The largest manifest `apply` and `diff` take, refused before any request.
pub const MAX_MANIFEST_BYTES: usize = 256 * 1024;
/// The field manager of what the MCP server writes (`managedFields` shows it).
pub const FIELD_MANAGER: &str = "ui-mcp";
/// The longest an `approval` call waits for a decision.
pub const MAX_WAIT_SECONDS: u64 = 600;

/// `explain`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExplainArgs {
    /// A kind (plural, singular, short name or Kind, e.g. `workloads`, `wl`); omit it to list
    /// every kind with its short names and scope
    #[serde(default)]
    pub kind: Option<String>,
    /// A field path within the kind, e.g. `spec` or `spec.containers`
    #[serde(default)]
    pub field: Option<String>,
}

/// `get`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GetArgs {
    /// The kind (plural, singular, short name or Kind)
    pub kind: String,
    /// The object's name
    pub name: String,
    /// Its namespace (namespaced kinds) [default: the kubeconfig context's, else `default`]
    #[serde(default)]
    pub namespace: Option<String>,
    /// `yaml` (default) or `json`
    #[serde(default)]
    pub format: Option<Format>,
}

/// How `get` writes the object.
#[derive(Clone, Copy, Debug, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Compact YAML.
    Yaml,
    /// JSON on one line.
    Json,
}

/// `list`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListArgs {
    /// The kind (plural, singular, short name or Kind)
    pub kind: String,
    /// The namespace (namespaced kinds) [default: the kubeconfig context's, else `default`]
    #[serde(default)]
    pub namespace: Option<String>,
    /// List across all namespaces
    #[serde(default)]
    pub all_namespaces: bool,
    /// Only objects whose labels match, e.g. `app=hello` or `tier in (web,db),!canary`
    #[serde(default)]
    pub label_selector: Option<String>,
    /// Only objects whose fields match, e.g. `metadata.name=hello`
    #[serde(default)]
    pub field_selector: Option<String>,
    /// At most this many rows (1 to 500) [default: 50]
    #[serde(default)]
    pub limit: Option<usize>,
    /// The `continue` token of the previous page, for the next one
    #[serde(default, rename = "continue")]
    pub continue_token: Option<String>,
}

/// `diff`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DiffArgs {
    /// The manifest: YAML (several documents separated by `---`) or JSON, at most 256 KiB
    pub manifest: String,
}

/// `apply`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplyArgs {
    /// The manifest: YAML (several documents separated by `---`) or JSON, at most 256 KiB
    pub manifest: String,
    /// Only the server's dry run: check every change, store nothing
    #[serde(default)]
    pub dry_run: bool,
}

/// `delete`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteArgs {
    /// The kind (plural, singular, short name or Kind)
    pub kind: String,
    /// The object's name
    pub name: String,
    /// Its namespace (namespaced kinds) [default: the kubeconfig context's, else `default`]
    #[serde(default)]
    pub namespace: Option<String>,
    /// Only the server's dry run: check the deletion, delete nothing
    #[serde(default)]
    pub dry_run: bool,
}

/// `scale`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScaleArgs {
    /// The workload's name
    pub name: String,
    /// How many replicas it should run (0 to 10000)
    pub replicas: i32,
    /// Its namespace [default: the kubeconfig context's, else `default`]
    #[serde(default)]
    pub namespace: Option<String>,
}

/// `logs`' arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogsArgs {
    /// A replica's name, or a workload's (then each of its replicas, lines prefixed)
    pub name: String,
    /// Its namespace [default: the kubeconfig context's, else `default`]
    #[serde(default)]
    pub namespace: Option<String>,
    /// Only the last N lines of each replica (1 to 2000) [default: 100]
    #[serde(default)]
    pub tail_lines: Option<usize>,
    /// At most this many bytes of output in all, the latest kept (1 to 65536) [default: 16384]
    #[serde(default)]
    pub max_bytes: Option<usize>,
}

/// `status`' arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusArgs {
    /// One workload's name [default: every workload of your user in the namespace]
    #[serde(default)]
    pub name: Option<String>,
    /// The namespace [default: the kubeconfig context's, else `default`]
    #[serde(default)]
    pub namespace: Option<String>,
    /// Every workload, of everyone, in every namespace
    #[serde(default)]
    pub all_namespaces: bool,
}

/// `approval`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApprovalArgs {
    /// The Approval's name (a held write names it)
    pub name: String,
    /// Wait up to this many seconds (at most 600) for the user to decide it [default: 0]
    #[serde(default)]
    pub wait_seconds: Option<u64>,
}

/// `balance`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BalanceArgs {
    /// Whose balance (did:key) [default: your user's]
    #[serde(default)]
    pub did: Option<String>,
}

/// `reputation`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReputationArgs {
    /// An operator's did:key, or a node's name
    pub subject: String,
}

/// What is wrong with `arguments` of tool `name` as its input schema says, one line per
/// problem with the argument's path, or None when they match.
pub fn argument_problems(
    name: &str,
    schema: &serde_json::Map<String, Value>,
    arguments: &Value,
) -> Option<String> {
    let validator = jsonschema::validator_for(&Value::Object(schema.clone())).ok()?;
    let problems: Vec<String> = validator
        .iter_errors(arguments)
        .map(|e| {
            let path = e.instance_path().to_string();
            let at = if path.is_empty() {
                "arguments".to_owned()
            } else {
                path.trim_start_matches('/').replace('/', ".")
            };
            format!("  {at}: {e}")
        })
        .collect();
    if problems.is_empty() {
        return None;
    }
    Some(format!(
        "the arguments of `{name}` do not match its input schema (nothing was done):\n{}",
        problems.join("\n")
    ))
}

/// A tool's answer: text, or an error the agent reads (`isError`).
fn answer(result: anyhow::Result<String>) -> CallToolResult {
    match result {
        Ok(text) => CallToolResult::success(vec![ContentBlock::text(text)]),
        Err(e) => CallToolResult::error(vec![ContentBlock::text(describe(&e))]),
    }
}

/// An error in the words an agent acts on: a held write names its Approval; the apiserver's
/// refusals pass as it wrote them.
pub fn describe(e: &anyhow::Error) -> String {
    for cause in e.chain() {
        if let Some(ClientError::Pending { approval, message }) = cause.downcast_ref::<ClientError>() {
            return held(approval, message);
        }
    }
    format!("{e:#}")
}

fn held(approval: &str, message: &str) -> String {
    format!("held for approval: Approval {approval} — {message} (follow it with the `approval` tool)")
}

impl UiServer {
    /// Runs `f` on a blocking thread (the blocking client is not for async tasks).
    async fn blocking<F>(&self, f: F) -> Result<CallToolResult, McpError>
    where
        F: FnOnce(&State) -> anyhow::Result<String> + Send + 'static,
    {
        let state = self.state.clone();
        let _turn =
            self.state.calls.acquire().await.map_err(|_| McpError::internal_error("shutting down", None))?;
        let done = tokio::task::spawn_blocking(move || f(&state))
            .await
            .map_err(|e| McpError::internal_error(format!("the tool stopped: {e}"), None))?;
        Ok(answer(done))
    }
}

/// The namespace of `kind` (None for cluster-scoped kinds): `given`, else the client's.
fn namespace(client: &Client, kind: &KindInfo, given: Option<String>) -> Option<String> {
    match kind.scope {
        Scope::Cluster => None,
        Scope::Namespaced => {
            Some(given.filter(|n| !n.is_empty()).unwrap_or_else(|| client.namespace().to_owned()))
        }
    }
}

/// The documents of a manifest given as text, refused whole when it is too large or any
/// document is not a valid manifest: nothing is sent for a manifest with a problem.
fn documents(manifest: &str) -> anyhow::Result<Vec<manifest_files::Document>> {
    if manifest.len() > MAX_MANIFEST_BYTES {
        bail!(
            "manifest: {} bytes is larger than the limit of {MAX_MANIFEST_BYTES} bytes (256 KiB): nothing was sent; split it into several calls",
            manifest.len()
        );
    }
    let docs = manifest_files::parse(&Source::Text("manifest"), manifest)?.docs;
    if docs.is_empty() {
        bail!("manifest: no documents: give YAML or JSON with at least one object");
    }
    let problems: Vec<String> = docs.iter().flat_map(|d| d.problems()).collect();
    if !problems.is_empty() {
        bail!("{}\nnothing was sent", problems.join("\n"));
    }
    Ok(docs)
}

/// Signs on behalf of the directory's user (or as its identity) with the key of the
/// configuration directory, loaded once on first use. An encrypted key cannot be asked for
/// here (stdin is the protocol's, or nobody's): only `UNIVRS_PASSPHRASE` or `ui unlock` open it.
struct Signer<'a> {
    state: &'a State,
    key: std::cell::OnceCell<Box<dyn api::signing::Sign>>,
}

impl<'a> Signer<'a> {
    fn new(state: &'a State) -> Self {
        Self { state, key: std::cell::OnceCell::new() }
    }

    fn load(state: &State) -> anyhow::Result<Box<dyn api::signing::Sign>> {
        let dirs = &state.ctx.dirs;
        crate::unlock::signer(dirs, || {
            if std::env::var_os(crate::passphrase::ENV).is_some() {
                return crate::passphrase::PassphraseArgs::default()
                    .get(crate::passphrase::Purpose::Existing, "your identity");
            }
            bail!(
                "the key in {} is encrypted and `ui mcp` cannot ask for its passphrase: run `ui unlock` first, or give the agent its own key (`ui agent init`)",
                dirs.root().display()
            )
        })
    }

    fn sign(&self, obj: &mut Value) -> Result<(), ClientError> {
        let key = match self.key.get() {
            Some(k) => k,
            None => {
                let k =
                    Self::load(self.state).map_err(|e| ClientError::Other(format!("cannot sign: {e:#}")))?;
                self.key.get_or_init(|| k)
            }
        };
        self.state
            .ctx
            .sign(obj, &**key, chrono::Utc::now())
            .map(drop)
            .map_err(|e| ClientError::Other(format!("cannot sign: {e:#}")))
    }
}

#[tool_router(vis = "pub(super)")]
impl UiServer {
    /// The kinds (with short names, scope and whether signed), or one kind's fields from its
    /// schema, like `kubectl explain`.
    #[tool(
        description = "List the kinds (short names, scope, signed), or explain one kind's fields (optionally a field path such as spec.containers), like kubectl explain",
        annotations(
            title = "Explain kinds and fields",
            read_only_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn explain(&self, Parameters(a): Parameters<ExplainArgs>) -> Result<CallToolResult, McpError> {
        Ok(answer(match a.kind {
            None => Ok(explain::kinds()),
            Some(k) => kind_named(&k).and_then(|kind| {
                explain::field(kind, a.field.as_deref().unwrap_or_default()).map_err(anyhow::Error::msg)
            }),
        }))
    }

    /// One object as compact YAML (or JSON).
    #[tool(
        description = "Get one object by kind and name, as compact YAML (or JSON); secrets are redacted by the server",
        annotations(
            title = "Get an object",
            read_only_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn get(&self, Parameters(a): Parameters<GetArgs>) -> Result<CallToolResult, McpError> {
        self.blocking(move |s| {
            let kind = kind_named(&a.kind)?;
            let ns = namespace(&s.client, kind, a.namespace);
            let obj = s.client.get(kind, ns.as_deref(), &a.name)?;
            match a.format.unwrap_or(Format::Yaml) {
                Format::Yaml => bounded::object_yaml(&obj),
                Format::Json => {
                    let mut obj = obj;
                    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
                        m.remove("managedFields");
                    }
                    Ok(bounded::cut(
                        obj.to_string(),
                        bounded::MAX_TEXT,
                        "the object is larger than a tool answer",
                    ))
                }
            }
        })
        .await
    }

    /// A page of objects as a table.
    #[tool(
        description = "List objects of a kind as a table (NAME, AGE and the kind's columns): in a namespace or all, with label/field selectors; pages of `limit` rows, and a `continue` token for the next page",
        annotations(
            title = "List objects",
            read_only_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn list(&self, Parameters(a): Parameters<ListArgs>) -> Result<CallToolResult, McpError> {
        self.blocking(move |s| {
            let kind = kind_named(&a.kind)?;
            let limit = a.limit.unwrap_or(bounded::DEFAULT_PAGE);
            if !(1..=bounded::MAX_PAGE).contains(&limit) {
                bail!("limit: {limit} is out of range: 1 to {}", bounded::MAX_PAGE);
            }
            let ns = if a.all_namespaces { None } else { namespace(&s.client, kind, a.namespace) };
            let limit = limit.to_string();
            let mut query = vec![("limit", limit.as_str())];
            if let Some(l) = a.label_selector.as_deref().filter(|l| !l.is_empty()) {
                query.push(("labelSelector", l));
            }
            if let Some(f) = a.field_selector.as_deref().filter(|f| !f.is_empty()) {
                query.push(("fieldSelector", f));
            }
            if let Some(c) = a.continue_token.as_deref().filter(|c| !c.is_empty()) {
                query.push(("continue", c));
            }
            let answer = s.client.list_with(kind, ns.as_deref(), &query, true)?;
            let show_ns = ns.is_none() && kind.scope == Scope::Namespaced;
            Ok(bounded::table(
                &answer,
                show_ns,
                "call `list` again with this `continue` and the same arguments",
            ))
        })
        .await
    }

    /// What applying a manifest would change, as a unified diff per object.
    #[tool(
        description = "Show what applying a manifest would change: a unified diff per object of the stored object (as its author wrote it) against the manifest; a new object diffs against nothing",
        annotations(
            title = "Diff a manifest",
            read_only_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn diff(&self, Parameters(a): Parameters<DiffArgs>) -> Result<CallToolResult, McpError> {
        let docs = match documents(&a.manifest) {
            Ok(d) => d,
            Err(e) => return Ok(answer(Err(e))),
        };
        self.blocking(move |s| {
            let mut out = String::new();
            for doc in &docs {
                let r = crate::commands::diff::diff_one(&s.client, doc)?;
                let ns = r.namespace.as_deref().map(|n| format!("{n}/")).unwrap_or_default();
                let what = format!("{}.{}/{ns}{}", r.kind.to_lowercase(), api::GROUP, r.name);
                match (r.exists, r.diff.is_empty()) {
                    (_, true) => out.push_str(&format!("{what}: no changes\n")),
                    (false, _) => out.push_str(&format!("{what}: new object\n{}", r.diff)),
                    (true, _) => out.push_str(&format!("{what}: changes\n{}", r.diff)),
                }
            }
            Ok(bounded::cut(out, bounded::MAX_TEXT, "diff fewer documents at a time"))
        })
        .await
    }

    /// Creates or updates every object of a manifest, after a server dry run of all of them.
    #[tool(
        description = "Create or update the objects of a manifest (YAML or JSON text, at most 256 KiB). A server dry run of every object comes first; only if all pass are they written (unless dry_run). Unsigned documents of signed kinds are signed for your user. Reports created, configured or unchanged per object, or that a write is held for approval (naming the Approval)",
        annotations(
            title = "Apply a manifest",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn apply(&self, Parameters(a): Parameters<ApplyArgs>) -> Result<CallToolResult, McpError> {
        let docs = match documents(&a.manifest) {
            Ok(d) => d,
            Err(e) => return Ok(answer(Err(e))),
        };
        self.blocking(move |s| apply(s, &docs, a.dry_run)).await
    }

    /// Deletes one object.
    #[tool(
        description = "Delete one object by kind and name (dry_run: only check that it could be)",
        annotations(
            title = "Delete an object",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn delete(&self, Parameters(a): Parameters<DeleteArgs>) -> Result<CallToolResult, McpError> {
        self.blocking(move |s| {
            let kind = kind_named(&a.kind)?;
            let ns = namespace(&s.client, kind, a.namespace);
            let t = Target { kind, namespace: ns, name: a.name };
            match s.client.delete(kind, t.namespace.as_deref(), &t.name, a.dry_run) {
                Ok(_) if a.dry_run => Ok(format!("{} would be deleted (server dry run)", t.reference())),
                Ok(_) => Ok(format!("{} deleted", t.reference())),
                Err(ClientError::Pending { approval, message }) => {
                    Ok(format!("{}: {}", t.reference(), held(&approval, &message)))
                }
                Err(e) => Err(e.into()),
            }
        })
        .await
    }

    /// Sets a workload's replicas, signing it again as `ui scale` does.
    #[tool(
        description = "Set how many replicas a workload runs: reads it, sets spec.replicas and signs it again for your user (as `ui scale`); fewer replicas stop the others",
        annotations(
            title = "Scale a workload",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn scale(&self, Parameters(a): Parameters<ScaleArgs>) -> Result<CallToolResult, McpError> {
        self.blocking(move |s| {
            let ns = a.namespace.filter(|n| !n.is_empty()).unwrap_or_else(|| s.client.namespace().to_owned());
            let result = crate::commands::scale::scale(&s.ctx, &s.client, &ns, &a.name, a.replicas, || {
                Signer::load(s)
            });
            let what = format!("workload.{}/{}", api::GROUP, a.name);
            match result {
                Ok(true) => Ok(format!("{what} scaled to {} replicas", a.replicas)),
                Ok(false) => Ok(format!("{what} unchanged ({} replicas)", a.replicas)),
                Err(e) => Err(e),
            }
        })
        .await
    }

    /// The last lines of a replica's output (or of each replica of a workload).
    #[tool(
        description = "The last lines of a replica's output, or of each replica of a workload (lines prefixed with the replica): at most tail_lines per replica and max_bytes in all",
        annotations(
            title = "Read logs",
            read_only_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn logs(&self, Parameters(a): Parameters<LogsArgs>) -> Result<CallToolResult, McpError> {
        self.blocking(move |s| logs(s, a)).await
    }

    /// Workloads with their replicas, and why a pending one waits.
    #[tool(
        description = "Your user's workloads (or one by name; all of everyone's with all_namespaces): replicas wanted, existing and ready, each replica's phase and node, and for a pending one the scheduler's reason",
        annotations(
            title = "Workload status",
            read_only_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn status(&self, Parameters(a): Parameters<StatusArgs>) -> Result<CallToolResult, McpError> {
        self.blocking(move |s| {
            let ns = if a.all_namespaces {
                None
            } else {
                Some(a.namespace.filter(|n| !n.is_empty()).unwrap_or_else(|| s.client.namespace().to_owned()))
            };
            let owner = if a.all_namespaces || a.name.is_some() { None } else { s.ctx.acting_for().ok() };
            let mut report = crate::commands::status::report(&s.client, ns.as_deref(), owner.as_ref())?;
            if let Some(name) = &a.name {
                report.retain(|w| &w.name == name);
                if report.is_empty() {
                    bail!("workload {name} not found in namespace {}", ns.unwrap_or_default());
                }
            }
            if report.is_empty() {
                return Ok("no workloads of your user here (all_namespaces shows everyone's)".into());
            }
            let mut out = String::new();
            for w in &report {
                out.push_str(&format!(
                    "{}/{}: {}/{} ready, {} replicas\n",
                    w.namespace, w.name, w.ready, w.desired, w.replicas
                ));
                for r in &w.items {
                    out.push_str(&format!("  {}  {}  {}\n", r.name, r.state(), r.place()));
                }
            }
            Ok(bounded::cut(out, bounded::MAX_TEXT, "ask `status` for one workload by name"))
        })
        .await
    }

    /// An Approval's phase and message, optionally waiting for the decision.
    #[tool(
        description = "An Approval's phase (Pending, Approved, Denied, Failed, Expired), its message and the request it holds; with wait_seconds, wait up to that long (at most 600) for the user to decide it",
        annotations(
            title = "Follow an approval",
            read_only_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn approval(&self, Parameters(a): Parameters<ApprovalArgs>) -> Result<CallToolResult, McpError> {
        let wait = a.wait_seconds.unwrap_or(0);
        if wait > MAX_WAIT_SECONDS {
            return Ok(answer(Err(anyhow::anyhow!(
                "wait_seconds: {wait} is more than {MAX_WAIT_SECONDS}: wait again after this call instead"
            ))));
        }
        let name = a.name.clone();
        let state = self.state.clone();
        let read = move || {
            let state = state.clone();
            let name = name.clone();
            async move {
                tokio::task::spawn_blocking(move || -> anyhow::Result<Value> {
                    let kind = api::kinds::info::<api::kinds::ApprovalSpec>();
                    Ok(state.client.get(kind, None, &name)?)
                })
                .await
                .map_err(|e| anyhow::anyhow!("the read stopped: {e}"))?
            }
        };
        let mut approval = match read().await {
            Ok(v) => v,
            Err(e) => return Ok(answer(Err(e))),
        };
        if wait > 0 && phase(&approval) == "Pending" {
            let deadline = std::time::Duration::from_secs(wait);
            let _ = tokio::time::timeout(deadline, decided(self.state.kube.clone(), &a.name)).await;
            approval = match read().await {
                Ok(v) => v,
                Err(e) => return Ok(answer(Err(e))),
            };
        }
        Ok(answer(Ok(render_approval(&a.name, &approval, wait))))
    }

    /// A balance, as `ui credits balance` computes it.
    #[tool(
        description = "A credit balance (your user's, or a did's): the balance, and per counterparty the balance, the credit granted each way and what may still be paid",
        annotations(
            title = "Credit balance",
            read_only_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn balance(&self, Parameters(a): Parameters<BalanceArgs>) -> Result<CallToolResult, McpError> {
        self.blocking(move |s| {
            let did = match &a.did {
                Some(d) => {
                    api::identity::Did::parse(d).with_context(|| format!("did: {d:?} is not a did:key"))?
                }
                None => s.ctx.acting_for()?,
            };
            let b = crate::commands::credits::balance_of(&s.client, &did)?;
            Ok(bounded::cut(serde_saphyr::to_string(&b)?, bounded::MAX_TEXT, "ask for one did at a time"))
        })
        .await
    }

    /// A reputation, as `ui reputation show` explains it.
    #[tool(
        description = "The reputation of an operator (did:key) or node (name): each score (uptime, reliability, honesty, age, attestations), its weight and evidence, and the composite",
        annotations(
            title = "Reputation",
            read_only_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn reputation(
        &self,
        Parameters(a): Parameters<ReputationArgs>,
    ) -> Result<CallToolResult, McpError> {
        self.blocking(move |s| {
            let shown = crate::commands::reputation::show(&s.client, &a.subject)?;
            let mut out = format!("{} {}: composite {:.3}\n", shown.name, shown.subject, shown.composite);
            if let Some(at) = &shown.observed_at {
                out.push_str(&format!("observed at {at}\n"));
            }
            for c in &shown.components {
                out.push_str(&format!(
                    "  {}: {:.3} (weight {:.2}) from {}\n",
                    c.name, c.score, c.weight, c.inputs
                ));
            }
            Ok(out)
        })
        .await
    }
}

/// `apply`: a server dry run of every document, then (unless `dry_run`) the writes.
fn apply(s: &State, docs: &[manifest_files::Document], dry_run: bool) -> anyhow::Result<String> {
    let signer = Signer::new(s);
    let sign = |obj: &mut Value| signer.sign(obj);
    let targets = docs
        .iter()
        .map(|d| Target::of(&s.client, d).map_err(|e| anyhow::anyhow!("{}: {e:#}", d.place())))
        .collect::<anyhow::Result<Vec<_>>>()?;
    // Every object is checked by the server first: a manifest with one bad object writes none.
    let mut lines = Vec::new();
    let mut failed = false;
    for (t, doc) in targets.iter().zip(docs) {
        match crate::commands::apply::apply_one(&s.client, t, doc, true, &sign) {
            Ok(verb) => lines.push(format!("{} {verb} (server dry run)", t.reference())),
            Err(ClientError::Pending { approval, message }) => {
                lines.push(format!("{}: {}", t.reference(), held(&approval, &message)))
            }
            Err(e @ ClientError::Unreachable { .. }) => return Err(e.into()),
            Err(e) => {
                failed = true;
                lines.push(format!("{}: {e}", t.reference()));
            }
        }
    }
    if failed {
        lines.push("the server's dry run refused the manifest: nothing was written".into());
        bail!("{}", lines.join("\n"));
    }
    if dry_run {
        return Ok(lines.join("\n") + "\n");
    }
    let mut lines = Vec::new();
    let mut failed = false;
    for (t, doc) in targets.iter().zip(docs) {
        match crate::commands::apply::apply_one(&s.client, t, doc, false, &sign) {
            Ok(verb) => lines.push(format!("{} {verb}", t.reference())),
            Err(ClientError::Pending { approval, message }) => {
                lines.push(format!("{}: {}", t.reference(), held(&approval, &message)))
            }
            Err(e) => {
                failed = true;
                lines.push(format!("{}: {e}", t.reference()));
            }
        }
    }
    let text = bounded::cut(lines.join("\n") + "\n", bounded::MAX_TEXT, "apply fewer documents at a time");
    if failed { Err(anyhow::anyhow!("{text}")) } else { Ok(text) }
}

/// `logs`: bounded per replica and in all.
fn logs(s: &State, a: LogsArgs) -> anyhow::Result<String> {
    let tail = a.tail_lines.unwrap_or(100);
    if !(1..=2000).contains(&tail) {
        bail!("tail_lines: {tail} is out of range: 1 to 2000");
    }
    let max = a.max_bytes.unwrap_or(16 * 1024);
    if !(1..=64 * 1024).contains(&max) {
        bail!("max_bytes: {max} is out of range: 1 to 65536");
    }
    let ns = a.namespace.filter(|n| !n.is_empty()).unwrap_or_else(|| s.client.namespace().to_owned());
    let replicas = crate::commands::logs::replicas_named(&s.client, &ns, &a.name)?;
    let prefix = replicas.len() > 1;
    let tail_text = tail.to_string();
    // Each replica gets its share of the bytes, and its latest lines are the ones kept.
    let share = (max / replicas.len().max(1)).max(1);
    let mut out = String::new();
    for r in &replicas {
        let path = crate::commands::logs::log_path(&ns, r);
        let stream = s
            .client
            .stream(&path, &[("tailLines", tail_text.as_str())])
            .with_context(|| format!("logs of replica {r}"))?;
        let mut bytes = Vec::new();
        stream.take(MAX_LOG_READ).read_to_end(&mut bytes).with_context(|| format!("logs of replica {r}"))?;
        let text = String::from_utf8_lossy(&bytes);
        let (kept, left_out) = last_bytes(&text, share);
        if left_out > 0 {
            out.push_str(&format!(
                "[{r}: the first {left_out} of {} bytes left out; ask for fewer tail_lines or a larger max_bytes]\n",
                text.len()
            ));
        }
        for line in kept.lines() {
            if prefix {
                out.push_str(&format!("[{r}] "));
            }
            out.push_str(line);
            out.push('\n');
        }
    }
    if out.is_empty() {
        return Ok(format!("no output yet from {}\n", replicas.join(", ")));
    }
    Ok(out)
}

/// The most of one replica's output read before keeping its end.
const MAX_LOG_READ: u64 = 1024 * 1024;

/// The last whole lines of `text` within `limit` bytes, and how many bytes were left out.
fn last_bytes(text: &str, limit: usize) -> (&str, usize) {
    if text.len() <= limit {
        return (text, 0);
    }
    let mut start = text.len() - limit;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    // Start at a line's beginning, unless that leaves nothing.
    if let Some(nl) = text[start..].find('\n')
        && start + nl + 1 < text.len()
    {
        start += nl + 1;
    }
    (&text[start..], start)
}

fn phase(approval: &Value) -> &str {
    approval.pointer("/status/phase").and_then(Value::as_str).unwrap_or("Pending")
}

/// Waits until the Approval `name` is no longer pending (or gone).
async fn decided(kube: kube::Client, name: &str) {
    let uri = super::resources::Uri::Object {
        kind: api::kinds::info::<api::kinds::ApprovalSpec>(),
        namespace: None,
        name: name.to_owned(),
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
    let watching = super::resources::follow(kube.clone(), uri, stop.clone(), move |_| {
        let tx = tx.clone();
        async move { tx.send(()).await.is_ok() }
    });
    let api: kube::Api<kube::api::DynamicObject> = kube::Api::all_with(
        kube,
        &kube::core::ApiResource {
            group: api::GROUP.into(),
            version: api::VERSION.into(),
            api_version: api::API_VERSION.into(),
            kind: "Approval".into(),
            plural: "approvals".into(),
        },
    );
    let check = async {
        loop {
            // Read after each change: the phase is what counts, not which event came.
            match api.get_opt(name).await {
                Ok(Some(obj)) => {
                    let v = serde_json::to_value(&obj).unwrap_or_default();
                    if phase(&v) != "Pending" {
                        return;
                    }
                }
                Ok(None) => return,
                Err(_) => {}
            }
            if rx.recv().await.is_none() {
                return;
            }
        }
    };
    tokio::select! {
        _ = watching => {}
        _ = check => {}
    }
    stop.cancel();
}

fn render_approval(name: &str, approval: &Value, waited: u64) -> String {
    let s = |p: &str| approval.pointer(p).and_then(Value::as_str).unwrap_or_default();
    let phase = phase(approval);
    let mut out = format!("Approval {name}: {phase}");
    if !s("/status/message").is_empty() {
        out.push_str(&format!(" — {}", s("/status/message")));
    }
    out.push('\n');
    let ns = s("/spec/request/namespace");
    let ns = if ns.is_empty() { String::new() } else { format!("{ns}/") };
    out.push_str(&format!(
        "request: {} {} {ns}{}\nrule: {}\nowner: {}\nexpires: {}\n",
        s("/spec/request/verb"),
        s("/spec/request/kind"),
        s("/spec/request/name"),
        s("/spec/rule"),
        s("/spec/owner"),
        s("/spec/expires"),
    ));
    if phase == "Pending" && waited > 0 {
        out.push_str(&format!("still pending after {waited}s: call `approval` again to keep waiting\n"));
    }
    let diff = s("/spec/diff");
    if !diff.is_empty() {
        out.push_str("diff:\n");
        out.push_str(diff);
    }
    bounded::cut(out, bounded::MAX_TEXT, "the whole diff is in `get approval NAME`")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_write_names_its_approval_and_keeps_the_servers_words() {
        let e = anyhow::Error::from(ClientError::Pending {
            approval: "apr-1".into(),
            message: "alice decides: ui approve apr-1".into(),
        })
        .context("cannot scale workload web");
        assert_eq!(
            describe(&e),
            "held for approval: Approval apr-1 — alice decides: ui approve apr-1 (follow it with the `approval` tool)"
        );
    }

    #[test]
    fn a_manifest_over_the_bound_or_with_a_bad_document_is_refused_whole() {
        let big = format!("kind: Workload\n# {}\n", "x".repeat(MAX_MANIFEST_BYTES));
        let e = documents(&big).unwrap_err().to_string();
        assert!(e.contains("larger than the limit") && e.contains("nothing was sent"), "{e}");
        let bad = "apiVersion: univrs.io/v1\nkind: Workload\nmetadata:\n  name: a\nspec:\n  rootfs: busybox\n  nope: 1\n";
        let e = documents(bad).unwrap_err().to_string();
        assert!(e.contains("manifest:7") && e.contains("nope") && e.contains("nothing was sent"), "{e}");
        assert!(documents("").unwrap_err().to_string().contains("no documents"));
    }

    #[test]
    fn logs_keep_the_latest_whole_lines() {
        assert_eq!(last_bytes("a\nb\n", 10), ("a\nb\n", 0));
        assert_eq!(last_bytes("line 1\nline 2\nline 3\n", 9), ("line 3\n", 14));
        assert_eq!(last_bytes("one long line", 4), ("line", 9));
    }

    #[test]
    fn arguments_that_break_the_schema_are_named() {
        let schema = serde_json::to_value(schemars::schema_for!(ScaleArgs)).unwrap();
        let schema = schema.as_object().unwrap();
        let ok = serde_json::json!({ "name": "web", "replicas": 2 });
        assert_eq!(argument_problems("scale", schema, &ok), None);
        let bad = serde_json::json!({ "name": "web", "replicas": "two", "extra": 1 });
        let text = argument_problems("scale", schema, &bad).unwrap();
        assert!(text.contains("replicas: \"two\" is not of type \"integer\""), "{text}");
        assert!(text.contains("extra"), "{text}");
    }
}
