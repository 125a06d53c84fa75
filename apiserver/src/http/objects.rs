//! The object routes: get, list, watch, create, update, patch and delete of every kind, and
//! the `status` subresource, with the query parameters of the Kubernetes API.
//!
//! Paths under `/apis/univrs.io/v1/` are parsed here rather than by the router, so that the
//! namespaced, cluster-scoped and subresource forms share one set of handlers.

use std::time::Duration;

use api::selector::{FieldSelector, LabelSelector, Selector};
use api::{KindInfo, Scope};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::table::Format;
use crate::access::Caller;
use crate::registry::{
    ApiError, DeleteOptions, Deleted, FieldValidation, Item, ListOptions, ObjectRef, Part, Patch, ReadAt,
    Registry, WriteOptions, Written, parse_revision,
};
use crate::watch::{self, Start, Watch};

type Result<T> = std::result::Result<T, ApiError>;

/// How long a client has to send a request body (`ConnLimits::body_timeout`, carried to the
/// handlers as a request extension).
#[derive(Clone, Copy, Debug)]
pub struct BodyTimeout(pub Duration);

/// The longest `fieldManager` (as Kubernetes).
const MAX_FIELD_MANAGER: usize = 128;

/// The longest watch a client may ask for (`timeoutSeconds`).
const MAX_WATCH_TIMEOUT: Duration = Duration::from_secs(3600);

/// A request body, read whole up to the size limit; a body over it is refused with a 413
/// `Status` (axum's own rejection is plain text, which kubectl cannot print as an error).
pub struct Body(Bytes);

impl<S: Send + Sync> axum::extract::FromRequest<S> for Body {
    type Rejection = Response;

    async fn from_request(req: axum::extract::Request, _: &S) -> std::result::Result<Self, Response> {
        read_body(req, super::MAX_BODY_BYTES).await.map(Body)
    }
}

/// Reads a request body whole, within `limit` bytes and the connection's body timeout; a body
/// over the limit is refused with a 413 `Status`, one sent too slowly with a 408.
pub(super) async fn read_body(
    req: axum::extract::Request,
    limit: usize,
) -> std::result::Result<Bytes, Response> {
    use futures_util::StreamExt as _;
    let timeout = req.extensions().get::<BodyTimeout>().map_or(Duration::from_secs(30), |t| t.0);
    let mut stream = req.into_body().into_data_stream();
    let mut body = Vec::new();
    let mut seen = 0usize;
    // The whole body in time: a client that sends it a byte at a time holds a connection
    // and a buffer no longer than that.
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let chunk = match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(_) => {
                let message = format!("the request body was not sent within {timeout:?}");
                return Err(super::status::failure(408, "Timeout", &message, json!({})));
            }
        };
        let chunk = chunk.map_err(|e| {
            super::status::failure(
                400,
                "BadRequest",
                &format!("the request body cannot be read: {e}"),
                json!({}),
            )
        })?;
        seen += chunk.len();
        if seen <= limit {
            body.extend_from_slice(&chunk);
        } else if seen > 4 * limit {
            // Read on a little past the limit, so that an ordinary client gets the 413
            // rather than a reset while it is still sending; a flood is cut off.
            break;
        }
    }
    if seen > limit {
        let message = format!("the request body is larger than the limit of {limit} bytes");
        return Err(super::status::failure(413, "RequestEntityTooLarge", &message, json!({})));
    }
    Ok(Bytes::from(body))
}

/// The group version a request's path is under (`/apis/GROUP/VERSION/…`): one of the kinds'
/// (`api::kinds::group_versions`), so a kind of another group is served by the same handlers.
#[derive(Clone, Copy, Debug)]
pub struct GroupVersion(pub &'static str);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for GroupVersion {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> std::result::Result<Self, ApiError> {
        let path = parts.uri.path();
        let under = |gv: &str| {
            path.strip_prefix("/apis/").and_then(|p| p.strip_prefix(gv)).is_some_and(|r| r.starts_with('/'))
        };
        api::kinds::group_versions()
            .into_iter()
            .find(|(_, _, gv)| under(gv))
            .map(|(_, _, gv)| GroupVersion(gv))
            .ok_or_else(|| ApiError::NotFound { kind: "resource".into(), name: path.into() })
    }
}

/// Which form of its objects a read answers with: as stored, or (Events) as a core `v1`
/// Event, the form kubectl reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum View {
    /// As stored, in the kind's own group version.
    Stored,
    /// An Event as a core `v1` Event (`api::kinds::event::to_core_v1`).
    CoreV1,
}

impl View {
    fn show(self, obj: Value) -> Value {
        match self {
            View::Stored => obj,
            View::CoreV1 => api::kinds::event::to_core_v1(&obj),
        }
    }

    fn api_version(self, kind: &KindInfo) -> &'static str {
        match self {
            View::Stored => kind.api_version,
            View::CoreV1 => "v1",
        }
    }

    /// The stored field a field selector's path names in this view (`None`: not one that
    /// can be selected on). The univrs kinds select on any field.
    fn field(self, kind: &KindInfo, path: &str) -> Option<String> {
        match self {
            View::CoreV1 => api::kinds::event::core_field(path),
            View::Stored if kind.kind == api::kinds::event::EVENT_KIND => api::kinds::event::field(path),
            View::Stored => Some(path.to_owned()),
        }
    }
}

/// What a path under `/apis/GROUP/VERSION/` names.
#[derive(Debug)]
struct Target {
    kind: &'static KindInfo,
    /// The namespace in the path (`None`: cluster-scoped, or all namespaces).
    namespace: Option<String>,
    name: Option<String>,
    part: Part,
}

fn kind_of(gv: GroupVersion, plural: &str) -> Result<&'static KindInfo> {
    api::kinds::in_group_version(gv.0)
        .find(|k| k.plural == plural)
        .ok_or_else(|| ApiError::NotFound { kind: "resource".into(), name: plural.into() })
}

fn parse_target(gv: GroupVersion, rest: &str) -> Result<Target> {
    let segments: Vec<&str> = rest.split('/').collect();
    let (namespace, rest) = match segments.as_slice() {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some((*ns).to_owned()), rest),
        rest => (None, rest),
    };
    let (plural, name, part) = match rest {
        [plural] => (*plural, None, Part::Main),
        [plural, name] => (*plural, Some((*name).to_owned()), Part::Main),
        [plural, name, "status"] => (*plural, Some((*name).to_owned()), Part::Status),
        _ => return Err(ApiError::NotFound { kind: "resource".into(), name: rest.join("/") }),
    };
    let kind = kind_of(gv, plural)?;
    if part == Part::Status && !kind.has_status {
        return Err(ApiError::NotFound { kind: "resource".into(), name: format!("{plural}/status") });
    }
    match (kind.scope, &namespace, &name) {
        (Scope::Cluster, Some(_), _) => {
            return Err(ApiError::NotFound {
                kind: "resource".into(),
                name: format!("namespaces/…/{plural}"),
            });
        }
        (Scope::Namespaced, None, Some(_)) => {
            return Err(ApiError::BadRequest(format!(
                "{plural} are namespaced: use /apis/{}/namespaces/NAMESPACE/{plural}/NAME",
                kind.api_version
            )));
        }
        _ => {}
    }
    Ok(Target { kind, namespace, name, part })
}

impl Target {
    fn name(&self) -> Result<&str> {
        self.name
            .as_deref()
            .ok_or_else(|| ApiError::BadRequest("this request needs an object name in the path".into()))
    }

    fn collection(&self) -> Result<()> {
        match (&self.name, self.kind.scope, &self.namespace) {
            (None, Scope::Namespaced, None) => Err(ApiError::BadRequest(format!(
                "create {} in a namespace: POST /apis/{}/namespaces/NAMESPACE/{}",
                self.kind.plural, self.kind.api_version, self.kind.plural
            ))),
            (None, _, _) => Ok(()),
            (Some(_), _, _) => Err(method_not_allowed("POST to an object: use PUT or PATCH")),
        }
    }
}

fn method_not_allowed(msg: &str) -> ApiError {
    ApiError::BadRequest(format!("the method is not allowed here: {msg}"))
}

/// The query parameters of the Kubernetes API, all as text: each is parsed where it is used,
/// so a bad value gets an error that names it. Unknown parameters are ignored, as Kubernetes
/// does (`pretty`, `timeout`, …).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Query {
    watch: Option<String>,
    resource_version: Option<String>,
    resource_version_match: Option<String>,
    label_selector: Option<String>,
    field_selector: Option<String>,
    limit: Option<String>,
    #[serde(rename = "continue")]
    continue_token: Option<String>,
    allow_watch_bookmarks: Option<String>,
    timeout_seconds: Option<String>,
    send_initial_events: Option<String>,
    dry_run: Option<String>,
    field_validation: Option<String>,
    field_manager: Option<String>,
    propagation_policy: Option<String>,
}

/// Where a watch starts ([`Query::watch_start`]).
#[derive(Debug, PartialEq)]
struct WatchStart {
    start: Start,
    /// Whether the state comes first, as `ADDED` events.
    initial_events: bool,
    /// `sendInitialEvents` as the client gave it.
    send_initial: Option<bool>,
}

fn nonempty(v: &Option<String>) -> Option<&str> {
    v.as_deref().filter(|s| !s.is_empty())
}

fn parse_bool(v: &Option<String>, name: &str) -> Result<bool> {
    match nonempty(v) {
        None | Some("0" | "false" | "False") => Ok(false),
        Some("1" | "true" | "True") => Ok(true),
        Some(other) => {
            Err(ApiError::BadRequest(format!("{name}: {other:?} is not a boolean (true or false)")))
        }
    }
}

impl Query {
    fn parse(raw: Option<&str>) -> Result<Self> {
        // Tolerate what real clients send: kube-rs sends `?&…`, others repeat separators.
        let raw = raw.unwrap_or_default();
        serde_urlencoded::from_str(raw)
            .map_err(|e| ApiError::BadRequest(format!("the query {raw:?} is malformed: {e}")))
    }

    fn write_options(&self) -> Result<WriteOptions> {
        let dry_run = match nonempty(&self.dry_run) {
            None => false,
            Some("All") => true,
            Some(other) => {
                return Err(ApiError::BadRequest(format!("dryRun: {other:?} is not supported (only All)")));
            }
        };
        let validation = match nonempty(&self.field_validation) {
            None | Some("Strict") => FieldValidation::Strict,
            Some("Warn") => FieldValidation::Warn,
            Some("Ignore") => FieldValidation::Ignore,
            Some(other) => {
                return Err(ApiError::BadRequest(format!(
                    "fieldValidation: {other:?} is not one of Strict, Warn, Ignore"
                )));
            }
        };
        let field_manager = nonempty(&self.field_manager).map(str::to_owned);
        // As Kubernetes: it is stored in the object, so it is bounded and printable.
        if let Some(m) = &field_manager
            && (m.chars().count() > MAX_FIELD_MANAGER || m.chars().any(char::is_control))
        {
            return Err(ApiError::BadRequest(format!(
                "fieldManager: must be at most {MAX_FIELD_MANAGER} printable characters"
            )));
        }
        Ok(WriteOptions { dry_run, validation, field_manager })
    }

    fn selector(&self, kind: &KindInfo, view: View) -> Result<Selector> {
        let bad = |e: api::selector::SelectorError| ApiError::BadRequest(e.to_string());
        let fields = FieldSelector::parse(nonempty(&self.field_selector).unwrap_or_default()).map_err(bad)?;
        let fields = fields.map_paths(|p| view.field(kind, p)).map_err(|path| {
            ApiError::BadRequest(format!(
                "fieldSelector: field label not supported: {path} (an {} selects on {})",
                kind.kind,
                if view == View::CoreV1 {
                    "involvedObject.*, reason, type, source, reportingComponent, metadata.name and metadata.namespace"
                } else {
                    "regarding.*, reason, type, reportingController, metadata.name and metadata.namespace"
                }
            ))
        })?;
        Ok(Selector {
            labels: LabelSelector::parse(nonempty(&self.label_selector).unwrap_or_default()).map_err(bad)?,
            fields,
        })
    }

    /// The state a get or list reads, from `resourceVersion` and `resourceVersionMatch`.
    fn read_at(&self) -> Result<ReadAt> {
        let rv = nonempty(&self.resource_version);
        match (rv, nonempty(&self.resource_version_match)) {
            (None, None) => Ok(ReadAt::Latest),
            (None, Some(m)) => {
                Err(ApiError::BadRequest(format!("resourceVersionMatch={m} needs a resourceVersion")))
            }
            (Some("0"), None | Some("NotOlderThan")) => Ok(ReadAt::Any),
            (Some(rv), None | Some("NotOlderThan")) => {
                Ok(ReadAt::NotOlderThan(parse_revision(rv, "resourceVersion")?))
            }
            (Some(rv), Some("Exact")) => Ok(ReadAt::Exact(parse_revision(rv, "resourceVersion")?)),
            (_, Some(m)) => Err(ApiError::BadRequest(format!(
                "resourceVersionMatch: {m:?} is not one of NotOlderThan, Exact"
            ))),
        }
    }

    /// Where a watch starts, from `resourceVersion`, `resourceVersionMatch` and
    /// `sendInitialEvents`, by Kubernetes' rules for a watch: unset, the latest committed
    /// state (a consistent read, [`Start::Latest`]); `"0"`, whatever this member has; a
    /// revision, after it. `resourceVersionMatch` on a watch is only `NotOlderThan`, and only
    /// with `sendInitialEvents`.
    fn watch_start(&self) -> Result<WatchStart> {
        let send_initial = match nonempty(&self.send_initial_events) {
            None => None,
            Some(_) => Some(parse_bool(&self.send_initial_events, "sendInitialEvents")?),
        };
        match nonempty(&self.resource_version_match) {
            None => {}
            Some("NotOlderThan") if send_initial.is_some() => {}
            Some("NotOlderThan") => {
                return Err(ApiError::BadRequest(
                    "resourceVersionMatch: a watch takes it only with sendInitialEvents".into(),
                ));
            }
            Some(m) => {
                return Err(ApiError::BadRequest(format!(
                    "resourceVersionMatch: {m:?} is not supported for a watch (only NotOlderThan)"
                )));
            }
        }
        let (start, initial_events) = match nonempty(&self.resource_version) {
            None => (Start::Latest, send_initial.unwrap_or(true)),
            Some("0") => (Start::Now, send_initial.unwrap_or(true)),
            Some(rv) => (Start::After(parse_revision(rv, "resourceVersion")?), send_initial.unwrap_or(false)),
        };
        Ok(WatchStart { start, initial_events, send_initial })
    }

    fn list_options(&self, kind: &KindInfo, view: View) -> Result<ListOptions> {
        let limit = match nonempty(&self.limit) {
            None => 0,
            Some(l) => l
                .parse::<i64>()
                .map_err(|_| ApiError::BadRequest(format!("limit: {l:?} is not a number")))?
                .max(0) as usize,
        };
        Ok(ListOptions {
            selector: self.selector(kind, view)?,
            limit,
            continue_token: nonempty(&self.continue_token).map(str::to_owned),
            read: self.read_at()?,
        })
    }
}

/// Parses a JSON (or YAML) request body into an object and checks the namespace and name it
/// names against the path.
fn body(bytes: &Bytes, headers: &HeaderMap, target: &Target) -> Result<Value> {
    let mut obj = parse_body(bytes, headers)?;
    let meta = obj
        .as_object_mut()
        .ok_or_else(|| ApiError::BadRequest("the request body is not a JSON object".into()))?
        .entry("metadata")
        .or_insert_with(|| json!({}));
    let meta =
        meta.as_object_mut().ok_or_else(|| ApiError::BadRequest("metadata must be an object".into()))?;
    if let Some(ns) = &target.namespace {
        match meta.get("namespace").and_then(Value::as_str) {
            None | Some("") => {
                meta.insert("namespace".into(), ns.clone().into());
            }
            Some(other) if other != ns => {
                return Err(ApiError::BadRequest(format!(
                    "the namespace of the provided object ({other}) does not match the namespace sent on the request ({ns})"
                )));
            }
            Some(_) => {}
        }
    }
    if let Some(name) = &target.name
        && meta.get("name").and_then(Value::as_str) != Some(name)
    {
        return Err(ApiError::BadRequest(format!(
            "the name of the object does not match the name on the URL ({name})"
        )));
    }
    Ok(obj)
}

fn content_type(headers: &HeaderMap) -> &str {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::trim)
        .unwrap_or("application/json")
}

fn parse_body(bytes: &Bytes, headers: &HeaderMap) -> Result<Value> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| ApiError::BadRequest(format!("the request body is not UTF-8: {e}")))?;
    if content_type(headers).ends_with("yaml") {
        return parse_yaml(text);
    }
    super::json::parse(text)
        .map_err(|e| ApiError::BadRequest(format!("the request body is not valid JSON: {e}")))
}

fn parse_yaml(text: &str) -> Result<Value> {
    let mut docs = api::manifest::parse_documents(text)
        .map_err(|e| ApiError::BadRequest(format!("the request body is not valid YAML: {}", e.located())))?;
    match docs.len() {
        1 => Ok(docs.remove(0)),
        n => Err(ApiError::BadRequest(format!("the request body must be one document, not {n}"))),
    }
}

/// What `who` may see of an object a write answers with: as a read would show it (an agent
/// that may change an object may still not see its secrets).
async fn seen(reg: &Registry, who: &Caller, kind: &KindInfo, obj: Value) -> Value {
    // Only a private kind hides a whole object: then its metadata is what the answer shows.
    let hideable = !who.member && crate::access::rules::of(kind.kind).private.is_some();
    let meta = hideable.then(|| obj.get("metadata").cloned().unwrap_or_default());
    reg.redact(who, kind, obj).await.unwrap_or_else(|| json!({ "metadata": meta.unwrap_or_default() }))
}

/// A response with the object (as `who` may see it) and `Warning` headers.
async fn written(reg: &Registry, who: &Caller, kind: &KindInfo, code: StatusCode, w: Written) -> Response {
    let mut response = (code, Json(seen(reg, who, kind, w.object).await)).into_response();
    for warning in w.warnings {
        let text = format!("299 - {:?}", warning);
        if let Ok(v) = HeaderValue::from_str(&text) {
            response.headers_mut().append(header::WARNING, v);
        }
    }
    response
}

/// `GET`: one object, a list, or a watch.
#[allow(clippy::too_many_arguments)]
pub async fn get(
    State(reg): State<Registry>,
    State(node_proxy): State<super::logs::NodeProxy>,
    who: Caller,
    gv: GroupVersion,
    Path(rest): Path<String>,
    RawQuery(raw): RawQuery,
    format: Format,
) -> Result<Response> {
    if let Some((ns, name)) = super::logs::log_target(&rest) {
        return super::logs::proxy(&reg, &node_proxy, &who, ns, name, raw.as_deref()).await;
    }
    let target = parse_target(gv, &rest)?;
    read(&reg, who, &target, raw.as_deref(), format, View::Stored).await
}

/// Events as core `v1` Events (`/api/v1/events`, `/api/v1/namespaces/NS/events[/NAME]`):
/// the stored Events, read as any kind is, in the form kubectl reads.
pub(super) async fn core_events(
    reg: &Registry,
    who: Caller,
    namespace: Option<&str>,
    name: Option<&str>,
    raw: Option<&str>,
    format: Format,
) -> Result<Response> {
    let target = Target {
        kind: &api::kinds::event::INFO,
        namespace: namespace.map(str::to_owned),
        name: name.map(str::to_owned),
        part: Part::Main,
    };
    read(reg, who, &target, raw, format, View::CoreV1).await
}

/// A get, list or watch of `target`, answered in `view`.
async fn read(
    reg: &Registry,
    who: Caller,
    target: &Target,
    raw: Option<&str>,
    format: Format,
    view: View,
) -> Result<Response> {
    let query = Query::parse(raw)?;
    let ns = target.namespace.as_deref();
    if let Some(name) = &target.name {
        let obj = reg.get(&who, ObjectRef::new(target.kind, ns, name), query.read_at()?).await?;
        if format.is_table() {
            return Ok(format.object(target.kind, obj));
        }
        return Ok(Json(view.show(obj)).into_response());
    }
    if parse_bool(&query.watch, "watch")? {
        return start_watch(reg, who, target, &query, format, view).await;
    }
    let opts = query.list_options(target.kind, view)?;
    if opts.limit == 0 && opts.continue_token.is_none() && !format.is_table() {
        return stream_list(reg, who, target, opts, view).await;
    }
    let list = reg.list(&who, target.kind, ns, &opts).await?;
    let mut metadata = json!({ "resourceVersion": list.revision.to_string() });
    if let Some(token) = &list.continue_token {
        // No `remainingItemCount`: counting what is left would read it all, and a page costs
        // what it holds (Kubernetes leaves it out too, for lists with selectors).
        metadata["continue"] = token.clone().into();
    }
    if format.is_table() || view != View::Stored {
        let items = list.items.into_iter().map(Item::into_value).collect::<Result<Vec<_>>>()?;
        // A page as a Table keeps its `continue` token: kubectl asks for Tables in chunks. Its
        // rows read the stored form, whatever the view.
        if let Some(table) = format.table_of_list(target.kind, &items, &metadata) {
            return Ok(table);
        }
        let shown = items.into_iter().map(|o| Item::Built(view.show(o)));
        return Ok(list_json(target.kind, view, &metadata, shown));
    }
    Ok(list_json(target.kind, view, &metadata, list.items))
}

/// A list's JSON: its objects written as they are (see [`Item`]), never parsed again.
fn list_json(
    kind: &KindInfo,
    view: View,
    metadata: &Value,
    items: impl IntoIterator<Item = Item>,
) -> Response {
    let mut out = list_opening(kind, view, Some(metadata));
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        item.write_to(&mut out);
    }
    out.extend_from_slice(b"]}");
    ([(header::CONTENT_TYPE, "application/json")], out).into_response()
}

/// A list's JSON up to its first item: `{"apiVersion":…,"kind":"…List",` its `metadata` if
/// known, then `"items":[`.
fn list_opening(kind: &KindInfo, view: View, metadata: Option<&Value>) -> Vec<u8> {
    let mut head = json!({ "apiVersion": view.api_version(kind), "kind": format!("{}List", kind.kind) });
    if let Some(metadata) = metadata {
        head["metadata"] = metadata.clone();
    }
    let mut out = serde_json::to_vec(&head).expect("JSON serializes");
    out.pop();
    out.extend_from_slice(b",\"items\":[");
    out
}

/// Bytes of a streamed list sent at a time.
const LIST_CHUNK_BYTES: usize = 256 << 10;
/// Whole lists streamed at once: each holds a blocking thread and a read of the store while
/// its client reads. More wait, up to [`LIST_STREAM_WAIT`], then are told to come back.
const LIST_STREAMS: usize = 4;
static LIST_STREAM_PERMITS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(LIST_STREAMS);
const LIST_STREAM_WAIT: Duration = Duration::from_secs(30);
/// A client that takes longer than this to take one chunk is cut off…
const LIST_CHUNK_TIMEOUT: Duration = Duration::from_secs(30);
/// …and so is a whole list that takes longer than this.
const LIST_STREAM_DEADLINE: Duration = Duration::from_secs(300);

/// A whole list as JSON, streamed: the objects are read, redacted and written a chunk at a
/// time by a blocking task, so the server never holds the whole list, parsed or serialized
/// (a list of 100,000 objects is 150 MiB of JSON). Its `metadata` comes after `items`: the
/// list's revision is known once the last object is read (JSON objects have no order; every
/// Kubernetes client reads the whole document). An error before the first chunk is an
/// ordinary error response; one after it cuts the stream short, so the client sees an
/// unfinished document, never a complete-looking partial list.
async fn stream_list(
    reg: &Registry,
    who: Caller,
    target: &Target,
    opts: ListOptions,
    view: View,
) -> Result<Response> {
    reg.list_ready(&opts).await?;
    let grants = reg.follow_grants(&who).await;
    let permit = match tokio::time::timeout(LIST_STREAM_WAIT, LIST_STREAM_PERMITS.acquire()).await {
        Ok(Ok(permit)) => permit,
        _ => {
            return Err(ApiError::TooManyRequests {
                message: format!(
                    "{LIST_STREAMS} whole lists are being sent: try again, or list a page at a time (limit)"
                ),
                retry_after: 1,
            });
        }
    };
    // Chunks, each with whether it ends the document.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<std::result::Result<(Bytes, bool), ApiError>>(2);
    let (reg, kind, ns) = (reg.clone(), target.kind, target.namespace.clone());
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let deadline = std::time::Instant::now() + LIST_STREAM_DEADLINE;
        // Waits for the client to take a chunk, within the bounds; false: it is gone or slow,
        // and nothing more is sent (not even the end: see below).
        let send = |chunk| {
            runtime.block_on(async {
                matches!(tokio::time::timeout(LIST_CHUNK_TIMEOUT, tx.send(chunk)).await, Ok(Ok(())))
            }) && std::time::Instant::now() < deadline
        };
        let mut buf = list_opening(kind, view, None);
        let (mut first, mut cut) = (true, false);
        let mut failed = None;
        let listed = reg.list_each(&who, grants, kind, ns.as_deref(), &opts, &mut |item| {
            // Checked on every object, not only when a chunk is full: a list that selects
            // little, or whose client left, does not keep its slot and its read.
            if tx.is_closed() || std::time::Instant::now() >= deadline {
                cut = true;
                return false;
            }
            if !std::mem::take(&mut first) {
                buf.push(b',');
            }
            match view {
                View::Stored => item.write_to(&mut buf),
                View::CoreV1 => match item.into_value() {
                    Ok(obj) => serde_json::to_writer(&mut buf, &view.show(obj)).expect("JSON serializes"),
                    Err(e) => {
                        failed = Some(e);
                        return false;
                    }
                },
            }
            cut = buf.len() >= LIST_CHUNK_BYTES && !send(Ok((Bytes::from(std::mem::take(&mut buf)), false)));
            !cut
        });
        if cut {
            return;
        }
        let last = listed.and_then(|revision| failed.map_or(Ok(revision), Err)).map(|revision| {
            buf.extend_from_slice(
                format!("],\"metadata\":{{\"resourceVersion\":\"{revision}\"}}}}").as_bytes(),
            );
            (Bytes::from(buf), true)
        });
        send(last);
    });
    // The first chunk decides the status: an error before any object is sent is an error.
    let (first, done) =
        rx.recv().await.unwrap_or_else(|| Err(ApiError::Unavailable("the list stopped".into())))?;
    // After it, a stream that stops before its last chunk ends in an error, so the connection
    // is cut rather than the body ended: the client never reads a complete-looking partial list.
    let rest = futures_util::stream::unfold((rx, done), |(mut rx, done)| async move {
        if done {
            return None;
        }
        let cut = |why: String| {
            tracing::warn!(error = %why, "a streamed list was cut short");
            Some((Err(std::io::Error::other(why)), (rx_closed(), true)))
        };
        match rx.recv().await {
            Some(Ok((chunk, last))) => Some((Ok(chunk), (rx, last))),
            Some(Err(e)) => cut(e.to_string()),
            None => cut("the client was too slow, or the list took too long".into()),
        }
    });
    let body = futures_util::StreamExt::chain(
        futures_util::stream::once(async move { Ok::<_, std::io::Error>(first) }),
        rest,
    );
    Ok(([(header::CONTENT_TYPE, "application/json")], axum::body::Body::from_stream(body)).into_response())
}

/// A receiver that is already closed (what a cut stream is left with).
fn rx_closed<T>() -> tokio::sync::mpsc::Receiver<T> {
    tokio::sync::mpsc::channel(1).1
}

/// A watch's length when the client does not say: 30 to 60 minutes, spread so that the
/// watches of many clients do not all end at once.
fn default_watch_timeout() -> Duration {
    let jitter = uuid::Uuid::new_v4().as_u128() % 1800;
    Duration::from_secs(1800 + jitter as u64)
}

async fn start_watch(
    reg: &Registry,
    who: Caller,
    target: &Target,
    query: &Query,
    format: Format,
    view: View,
) -> Result<Response> {
    use futures_util::{FutureExt as _, StreamExt as _};
    let bookmarks = parse_bool(&query.allow_watch_bookmarks, "allowWatchBookmarks")?;
    let WatchStart { start, initial_events, send_initial } = query.watch_start()?;
    if send_initial == Some(true) && !bookmarks {
        return Err(ApiError::BadRequest("sendInitialEvents=true needs allowWatchBookmarks=true".into()));
    }
    let timeout = match nonempty(&query.timeout_seconds) {
        None => default_watch_timeout(),
        // Clamped: a watch never outlives MAX_WATCH_TIMEOUT, and no deadline overflows.
        Some(t) => Duration::from_secs(
            t.parse::<u64>()
                .map_err(|_| ApiError::BadRequest(format!("timeoutSeconds: {t:?} is not a number")))?,
        )
        .min(MAX_WATCH_TIMEOUT),
    };
    let slot = reg.open_watch(&who)?;
    let events = watch::start(
        reg,
        Watch {
            who,
            kind: target.kind,
            namespace: target.namespace.clone(),
            selector: query.selector(target.kind, view)?,
            start,
            initial_events,
            initial_events_end: send_initial == Some(true),
            bookmarks,
            timeout,
        },
    )
    .await?;
    let kind = target.kind;
    let watcher = crate::metrics::metrics().watcher(kind.kind);
    let events = Box::pin(events.fuse());
    // The watch's slot in its caller's quota is held as long as the stream is, and so is its
    // place in the metrics' registered watchers.
    let lines = futures_util::stream::unfold(
        (events, slot, watcher),
        move |(mut events, slot, watcher)| async move {
            // The next event, and those ready with it, as one frame (bounded).
            let mut frame = Vec::new();
            let (mut next, mut written) = (Some(events.next().await?), 0);
            while let Some(event) = next {
                watcher.sent();
                write_event(&mut frame, event, kind, format, view);
                written += 1;
                // Only what is ready now: a frame never waits for a later change.
                let room = written < FRAME_EVENTS && frame.len() < FRAME_BYTES;
                next = if room { events.next().now_or_never().flatten() } else { None };
            }
            Some((Ok::<_, std::convert::Infallible>(Bytes::from(frame)), (events, slot, watcher)))
        },
    );
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-cache, private")
        .body(axum::body::Body::from_stream(lines))
        .expect("a valid response"))
}

/// Events written in one frame of a watch at most: those ready together (a burst of
/// changes, the initial events) go out in one write, not one each.
const FRAME_EVENTS: usize = 64;
/// A frame of a watch takes no more events once it is this large (one object may be larger:
/// a frame holds at least one).
const FRAME_BYTES: usize = 256 << 10;

/// A watch event as a line of the stream, in the format and view the client asked for.
fn write_event(line: &mut Vec<u8>, event: watch::Event, kind: &KindInfo, format: Format, view: View) {
    // `kubectl get -w` asks for Tables: each changed object comes as a one-row Table.
    let object = match (event.kind, event.object) {
        // As stored, written as it is.
        (_, object) if !format.is_table() && view == View::Stored => Ok(object),
        ("ADDED" | "MODIFIED" | "DELETED", object) if format.is_table() => {
            object.into_value().map(|o| Item::Built(format.watch_object(kind, o)))
        }
        ("ADDED" | "MODIFIED" | "DELETED", object) => object.into_value().map(|o| Item::Built(view.show(o))),
        // A bookmark's or an error's object is the same in every view, but its kind.
        (_, object) => object.into_value().map(|mut o| {
            if o.get("kind").and_then(Value::as_str) == Some(api::kinds::event::EVENT_KIND) {
                o["apiVersion"] = "v1".into();
            }
            Item::Built(o)
        }),
    };
    let (kind_of_event, object) = match object {
        Ok(object) => (event.kind, object),
        Err(e) => {
            let error = watch::error_event(&e);
            (error.kind, error.object)
        }
    };
    line.reserve(object.len_hint() + 40);
    line.extend_from_slice(b"{\"type\":\"");
    line.extend_from_slice(kind_of_event.as_bytes());
    line.extend_from_slice(b"\",\"object\":");
    object.write_to(line);
    line.extend_from_slice(b"}\n");
}

/// `POST`: create.
#[allow(clippy::too_many_arguments)]
pub async fn post(
    State(reg): State<Registry>,
    State(node_proxy): State<super::logs::NodeProxy>,
    who: Caller,
    gv: GroupVersion,
    Path(rest): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    Body(bytes): Body,
) -> Result<Response> {
    if let Some((ns, name)) = super::logs::exec_target(&rest) {
        // `ui exec`: a command in a replica's container, on its node (owner only).
        let request = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::BadRequest(format!("exec: the body is not an exec request: {e}")))?;
        return super::logs::exec(&reg, &node_proxy, &who, ns, name, request).await;
    }
    if let Some(name) = rest.strip_prefix("approvals/").and_then(|r| r.strip_suffix("/decision")) {
        // The user's signed decision on an agent's held request (`ui approve`, `ui deny`).
        let decision = parse_body(&bytes, &headers)?;
        let decided = reg.decide(&who, name, decision).await?;
        return Ok(Json(decided).into_response());
    }
    let target = parse_target(gv, &rest)?;
    target.collection()?;
    let opts = Query::parse(raw.as_deref())?.write_options()?;
    let created = reg.create(&who, target.kind, body(&bytes, &headers, &target)?, &opts).await?;
    Ok(written(&reg, &who, target.kind, StatusCode::CREATED, created).await)
}

/// `PUT`: replace an object or its status.
pub async fn put(
    State(reg): State<Registry>,
    who: Caller,
    gv: GroupVersion,
    Path(rest): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    Body(bytes): Body,
) -> Result<Response> {
    let target = parse_target(gv, &rest)?;
    let opts = Query::parse(raw.as_deref())?.write_options()?;
    let obj = body(&bytes, &headers, &target)?;
    let ns = target.namespace.as_deref();
    let updated =
        reg.update(&who, ObjectRef::new(target.kind, ns, target.name()?), target.part, obj, &opts).await?;
    Ok(written(&reg, &who, target.kind, StatusCode::OK, updated).await)
}

/// `PATCH`: merge patch, JSON patch or server-side apply, of an object or its status.
pub async fn patch(
    State(reg): State<Registry>,
    who: Caller,
    gv: GroupVersion,
    Path(rest): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    Body(bytes): Body,
) -> Result<Response> {
    let target = parse_target(gv, &rest)?;
    let opts = Query::parse(raw.as_deref())?.write_options()?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|e| ApiError::BadRequest(format!("the patch is not UTF-8: {e}")))?;
    let json = || {
        super::json::parse(text)
            .map_err(|e| ApiError::BadRequest(format!("the patch is not valid JSON: {e}")))
    };
    let content_type = content_type(&headers);
    // A JSON patch's `test` could probe values an agent may not read: agents send whole
    // objects or merge patches they signed.
    let agents_json_patch = content_type == "application/json-patch+json" && reg.is_agent(&who).await?;
    let patch = match content_type {
        "application/merge-patch+json" => Patch::Merge(json()?),
        "application/json-patch+json" if agents_json_patch => {
            return Err(ApiError::Forbidden(
                "an agent's key may not send JSON patches (a `test` could probe values it may not read): send the object signed on your user's behalf (PUT, apply) or a merge patch".into(),
            ));
        }
        "application/json-patch+json" => Patch::Json(json()?),
        // JSON is YAML: clients that send JSON as an apply patch are served too.
        "application/apply-patch+yaml" => Patch::Apply(parse_yaml(text)?),
        "application/strategic-merge-patch+json" => {
            return Err(ApiError::UnsupportedMediaType(
                "strategic merge patch is not supported for univrs kinds: use --type=merge or --type=json"
                    .into(),
            ));
        }
        other => {
            return Err(ApiError::UnsupportedMediaType(format!(
                "the patch content type {other:?} is not one of application/merge-patch+json, application/json-patch+json, application/apply-patch+yaml"
            )));
        }
    };
    let ns = target.namespace.as_deref();
    let result =
        reg.patch(&who, ObjectRef::new(target.kind, ns, target.name()?), target.part, &patch, &opts).await?;
    let code = if result.created { StatusCode::CREATED } else { StatusCode::OK };
    Ok(written(&reg, &who, target.kind, code, result).await)
}

/// `DeleteOptions`, from the body.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeleteBody {
    #[serde(default)]
    preconditions: Option<Preconditions>,
    #[serde(default)]
    dry_run: Option<Vec<String>>,
    #[serde(default)]
    propagation_policy: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Preconditions {
    #[serde(default)]
    resource_version: Option<String>,
    #[serde(default)]
    uid: Option<String>,
}

/// `DELETE`: delete an object (or mark it, while finalizers hold it).
pub async fn delete(
    State(reg): State<Registry>,
    who: Caller,
    gv: GroupVersion,
    Path(rest): Path<String>,
    RawQuery(raw): RawQuery,
    Body(bytes): Body,
) -> Result<Response> {
    let target = parse_target(gv, &rest)?;
    if target.part == Part::Status {
        return Err(method_not_allowed("the status subresource cannot be deleted"));
    }
    let query = Query::parse(raw.as_deref())?;
    let options: DeleteBody = if bytes.iter().all(u8::is_ascii_whitespace) {
        DeleteBody::default()
    } else {
        serde_json::from_slice(&bytes).map_err(|e| ApiError::BadRequest(format!("DeleteOptions: {e}")))?
    };
    let dry_run = query.write_options()?.dry_run
        || options.dry_run.as_ref().is_some_and(|d| d.iter().any(|x| x == "All"));
    let propagation =
        options.propagation_policy.clone().or(nonempty(&query.propagation_policy).map(str::to_owned));
    if let Some(p) = propagation.as_deref()
        && !matches!(p, "Orphan" | "Background" | "Foreground")
    {
        return Err(ApiError::BadRequest(format!(
            "propagationPolicy: {p:?} is not one of Orphan, Background, Foreground"
        )));
    }
    let preconditions = options.preconditions.unwrap_or_default();
    let opts = DeleteOptions {
        resource_version: preconditions
            .resource_version
            .filter(|rv| !rv.is_empty())
            .map(|rv| parse_revision(&rv, "preconditions.resourceVersion"))
            .transpose()?,
        uid: preconditions.uid.filter(|u| !u.is_empty()),
        dry_run,
        propagation,
    };
    let name = target.name()?;
    match reg.delete(&who, ObjectRef::new(target.kind, target.namespace.as_deref(), name), &opts).await? {
        Deleted::Gone(old) => Ok(Json(json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
            "details": { "name": name, "group": target.kind.group, "kind": target.kind.plural, "uid": old["metadata"]["uid"] },
        }))
        .into_response()),
        Deleted::Pending(obj) => {
            Ok((StatusCode::ACCEPTED, Json(seen(&reg, &who, target.kind, obj).await)).into_response())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch_query(rv: Option<&str>, rv_match: Option<&str>, send_initial: Option<&str>) -> Query {
        Query {
            watch: Some("true".into()),
            resource_version: rv.map(Into::into),
            resource_version_match: rv_match.map(Into::into),
            send_initial_events: send_initial.map(Into::into),
            ..Query::default()
        }
    }

    fn start(rv: Option<&str>, rv_match: Option<&str>, send_initial: Option<&str>) -> Result<(Start, bool)> {
        watch_query(rv, rv_match, send_initial).watch_start().map(|w| (w.start, w.initial_events))
    }

    #[test]
    fn a_watch_without_a_resource_version_starts_from_the_latest_committed_state() {
        assert_eq!(start(None, None, None).unwrap(), (Start::Latest, true));
        assert_eq!(start(Some(""), None, None).unwrap(), (Start::Latest, true));
        assert_eq!(start(None, None, Some("false")).unwrap(), (Start::Latest, false));
        assert_eq!(start(None, Some("NotOlderThan"), Some("true")).unwrap(), (Start::Latest, true));
    }

    #[test]
    fn a_watch_from_zero_starts_from_what_the_member_has_and_from_a_revision_after_it() {
        assert_eq!(start(Some("0"), None, None).unwrap(), (Start::Now, true));
        assert_eq!(start(Some("0"), None, Some("false")).unwrap(), (Start::Now, false));
        assert_eq!(start(Some("42"), None, None).unwrap(), (Start::After(42), false));
        assert_eq!(start(Some("42"), Some("NotOlderThan"), Some("true")).unwrap(), (Start::After(42), true));
    }

    #[test]
    fn a_watch_refuses_a_resource_version_match_kubernetes_refuses_and_names_the_field() {
        for (rv, rv_match, send_initial) in [
            (Some("42"), Some("Exact"), Some("true")),
            (None, Some("Exact"), None),
            (None, Some("garbage"), Some("true")),
            // NotOlderThan without sendInitialEvents: forbidden for a watch.
            (Some("42"), Some("NotOlderThan"), None),
        ] {
            let e = start(rv, rv_match, send_initial).unwrap_err();
            assert!(
                matches!(&e, ApiError::BadRequest(m) if m.starts_with("resourceVersionMatch")),
                "{rv:?} {rv_match:?} {send_initial:?}: {e:?}"
            );
        }
        assert!(
            matches!(start(Some("x1"), None, None), Err(ApiError::BadRequest(m)) if m.contains("resourceVersion"))
        );
        assert!(
            matches!(start(None, None, Some("maybe")), Err(ApiError::BadRequest(m)) if m.contains("sendInitialEvents"))
        );
    }
}
