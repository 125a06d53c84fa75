//! Objects of the univrs kinds on the Raft state machine, with Kubernetes semantics: keys,
//! server-owned metadata, `resourceVersion` preconditions, the `status` subresource,
//! finalizers, patches, field validation, dry runs, consistent pagination and the errors of
//! the Kubernetes API.
//!
//! An object is stored as the JSON it was written as, plus the server-owned metadata that the
//! signed projection leaves out (`uid`, `creationTimestamp`, `generation`, the defaulted
//! `namespace`, `deletionTimestamp`, `managedFields`). `resourceVersion` is not stored: it is
//! the revision of the entry that last changed the key, put into the object when it is read.
//! So the server never rewrites a field a signature covers.
//!
//! Every change is one Raft entry whose precondition is the revision the change was computed
//! from, so read-modify-write (update, patch, status, finalizers) is compare-and-swap.
//!
//! Admission (signatures, anti-rollback, authorization) is not here: it runs before a request
//! reaches the registry.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use api::kinds::NodeSpec;
use api::object::KindSpec as _;
use api::selector::Selector;
use api::signing::DEFAULT_NAMESPACE;
use api::{FieldError, KindInfo, Scope};
use base64::Engine as _;
use chrono::{SecondsFormat, Utc};
use serde_json::{Map, Value, json};

use crate::access::{self, Caller, Verb};
use crate::patch;
use crate::quota;
use crate::raft::{Expect, Op, Outcome, RaftNode, Request, Stored};

/// A request that failed, as the Kubernetes API reports it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 404.
    #[error("{kind} {name:?} not found")]
    NotFound {
        /// The kind's plural (as Kubernetes names the resource in messages).
        kind: String,
        /// The object's name.
        name: String,
    },
    /// 409, on create.
    #[error("{kind} {name:?} already exists")]
    AlreadyExists {
        /// The kind's plural.
        kind: String,
        /// The object's name.
        name: String,
    },
    /// 409, on a stale `resourceVersion` or `uid`.
    #[error(
        "Operation cannot be fulfilled on {kind} {name:?}: the object has been modified; please apply your changes to the latest version and try again"
    )]
    Conflict {
        /// The kind's plural.
        kind: String,
        /// The object's name.
        name: String,
    },
    /// 422, with every problem and its field path.
    #[error("{kind} {name:?} is invalid: {}", causes.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid {
        /// The kind.
        kind: String,
        /// The object's name.
        name: String,
        /// Every problem.
        causes: Vec<FieldError>,
    },
    /// 400.
    #[error("{0}")]
    BadRequest(String),
    /// 401: no credentials, or credentials that do not verify.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: authenticated, but not allowed.
    #[error("{0}")]
    Forbidden(String),
    /// 410: a revision that is no longer kept.
    #[error("{0}")]
    Expired(String),
    /// 415.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 504: a revision asked for was not reached in time.
    #[error("{0}")]
    Timeout(String),
    /// 413: a request or the object it makes is over a size or depth bound.
    #[error("{0}")]
    TooLarge(String),
    /// 429: a quota or rate of the caller is used up; try again after `retry_after` seconds.
    #[error("{message}")]
    TooManyRequests {
        /// Which quota, how much is used and what to do.
        message: String,
        /// Seconds after which trying again may succeed.
        retry_after: u64,
    },
    /// 503: no leader, shutting down, or storage failing.
    #[error("the control plane cannot serve this now: {0}")]
    Unavailable(String),
}

impl ApiError {
    /// The HTTP status code.
    pub fn code(&self) -> u16 {
        match self {
            ApiError::NotFound { .. } => 404,
            ApiError::AlreadyExists { .. } | ApiError::Conflict { .. } => 409,
            ApiError::Invalid { .. } => 422,
            ApiError::BadRequest(_) => 400,
            ApiError::Unauthorized(_) => 401,
            ApiError::Forbidden(_) => 403,
            ApiError::Expired(_) => 410,
            ApiError::UnsupportedMediaType(_) => 415,
            ApiError::Timeout(_) => 504,
            ApiError::TooLarge(_) => 413,
            ApiError::TooManyRequests { .. } => 429,
            ApiError::Unavailable(_) => 503,
        }
    }

    /// The Kubernetes `Status.reason`.
    pub fn reason(&self) -> &'static str {
        match self {
            ApiError::NotFound { .. } => "NotFound",
            ApiError::AlreadyExists { .. } => "AlreadyExists",
            ApiError::Conflict { .. } => "Conflict",
            ApiError::Invalid { .. } => "Invalid",
            ApiError::BadRequest(_) => "BadRequest",
            ApiError::Unauthorized(_) => "Unauthorized",
            ApiError::Forbidden(_) => "Forbidden",
            ApiError::Expired(_) => "Expired",
            ApiError::UnsupportedMediaType(_) => "UnsupportedMediaType",
            ApiError::Timeout(_) => "Timeout",
            ApiError::TooLarge(_) => "RequestEntityTooLarge",
            ApiError::TooManyRequests { .. } => "TooManyRequests",
            ApiError::Unavailable(_) => "ServiceUnavailable",
        }
    }
}

fn unavailable(e: impl std::fmt::Display) -> ApiError {
    ApiError::Unavailable(e.to_string())
}

/// What `fieldValidation` asks of fields the schema does not know.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FieldValidation {
    /// Refuse the request (400), naming every unknown field. The default: unknown fields are
    /// errors everywhere in univrs.
    #[default]
    Strict,
    /// Drop them and say so in `Warning` headers.
    Warn,
    /// Drop them silently.
    Ignore,
}

/// Options of a write.
#[derive(Clone, Debug, Default)]
pub struct WriteOptions {
    /// `dryRun=All`: run everything but the commit.
    pub dry_run: bool,
    /// `fieldValidation`.
    pub validation: FieldValidation,
    /// `fieldManager` (required for server-side apply).
    pub field_manager: Option<String>,
}

/// A successful write.
#[derive(Debug)]
pub struct Written {
    /// The object as it now is (or would be, on a dry run).
    pub object: Value,
    /// Whether it was created by this request.
    pub created: bool,
    /// `Warning` headers for the client.
    pub warnings: Vec<String>,
}

/// Which part of an object a write is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// Spec and metadata; `status` is kept as it is.
    Main,
    /// The `status` subresource; everything else is kept as it is.
    Status,
}

/// A patch, by its content type.
#[derive(Clone, Debug)]
pub enum Patch {
    /// `application/merge-patch+json` (RFC 7386).
    Merge(Value),
    /// `application/json-patch+json` (RFC 6902).
    Json(Value),
    /// `application/apply-patch+yaml`: server-side apply of a (partial) configuration.
    Apply(Value),
}

/// Which state a read serves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReadAt {
    /// The latest committed state (linearizable: read index). The default.
    #[default]
    Latest,
    /// Whatever this member has applied (`resourceVersion=0`).
    Any,
    /// At least revision N: waits until this member has applied it.
    NotOlderThan(u64),
    /// Exactly revision N, from the history (410 once compacted).
    Exact(u64),
}

/// Options of a list.
#[derive(Clone, Debug, Default)]
pub struct ListOptions {
    /// Label and field selector.
    pub selector: Selector,
    /// At most this many items (0: all).
    pub limit: usize,
    /// The `continue` token of the previous page.
    pub continue_token: Option<String>,
    /// Which state to list.
    pub read: ReadAt,
}

/// A list of objects and the revision it is the state at.
#[derive(Debug)]
pub struct List {
    /// The objects, in key order (namespace, then name).
    pub items: Vec<Value>,
    /// The list's `resourceVersion`.
    pub revision: u64,
    /// The token for the next page, if there is one.
    pub continue_token: Option<String>,
    /// How many more items the next pages hold (when paginating).
    pub remaining: Option<usize>,
}

/// Options of a delete.
#[derive(Clone, Debug, Default)]
pub struct DeleteOptions {
    /// `preconditions.resourceVersion`.
    pub resource_version: Option<u64>,
    /// `preconditions.uid`.
    pub uid: Option<String>,
    /// `dryRun=All`.
    pub dry_run: bool,
    /// `propagationPolicy`: `Foreground` and `Orphan` hold the object with the
    /// `foregroundDeletion` or `orphan` finalizer, which the garbage collector removes once
    /// the dependents are gone or released (as Kubernetes); `Background` (the default) deletes
    /// it at once and leaves the dependents to the collector.
    pub propagation: Option<String>,
}

/// What a delete did.
#[derive(Debug)]
pub enum Deleted {
    /// The object is gone; this is what it was.
    Gone(Value),
    /// Finalizers hold it: it now has a `deletionTimestamp` and is this.
    Pending(Value),
}

/// How long a read waits for a `resourceVersion` this member has not applied yet.
const WAIT_FOR_REVISION: Duration = Duration::from_secs(3);

/// The objects of every kind, on one Raft member.
#[derive(Clone, Debug)]
pub struct Registry {
    node: RaftNode,
    /// Set once the server stops: open watches end.
    stopping: Arc<tokio::sync::watch::Sender<bool>>,
    /// What one identity may cost (members are exempt).
    limits: quota::Limits,
    /// What each signer's objects cost, followed from the change history.
    ledger: Arc<std::sync::Mutex<quota::Ledger>>,
    /// Open watches per identity.
    watches: quota::Watches,
}

/// Largest object stored, as its JSON (as a request body: 3 MiB).
pub const MAX_OBJECT_BYTES: usize = 3 * 1024 * 1024;

/// Where the tombstones of deleted signed objects are kept: the same path as the object
/// under this prefix instead of `/registry/`.
pub const TOMBSTONES: &str = "/tombstones/";

/// How long a deleted signed object's newest `signed-at` is remembered, so that an older
/// version cannot be created again (anti-rollback across deletion). At least as long as the
/// change history (15 minutes by default).
pub const TOMBSTONE_TTL: Duration = Duration::from_secs(3600);

/// What a tombstone records.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Tombstone {
    signer: Option<String>,
    signed_at: String,
    /// When the object was deleted (RFC 3339).
    deleted_at: String,
}

fn tombstone_key(key: &str) -> String {
    format!("{TOMBSTONES}{}", key.strip_prefix("/registry/").unwrap_or(key))
}

/// The storage key of an object: `/registry/{plural}/{namespace}/{name}`, or without the
/// namespace for cluster-scoped kinds.
pub(crate) fn key(kind: &KindInfo, namespace: Option<&str>, name: &str) -> String {
    match (kind.scope, namespace) {
        (Scope::Namespaced, ns) => {
            format!("/registry/{}/{}/{name}", kind.plural, ns.unwrap_or(DEFAULT_NAMESPACE))
        }
        (Scope::Cluster, _) => format!("/registry/{}/{name}", kind.plural),
    }
}

/// The key prefix of a list: one namespace, or all of them (`None`).
pub(crate) fn prefix(kind: &KindInfo, namespace: Option<&str>) -> String {
    match (kind.scope, namespace) {
        (Scope::Namespaced, Some(ns)) => format!("/registry/{}/{ns}/", kind.plural),
        _ => format!("/registry/{}/", kind.plural),
    }
}

/// The object as stored, with `resourceVersion` set to `revision`.
pub(crate) fn at_revision(value: &str, revision: u64) -> Result<Value, ApiError> {
    let mut obj: Value = serde_json::from_str(value).map_err(unavailable)?;
    meta_mut(&mut obj).insert("resourceVersion".into(), revision.to_string().into());
    Ok(obj)
}

/// The object as stored, with its `resourceVersion`.
fn with_revision(stored: &Stored) -> Result<Value, ApiError> {
    at_revision(&stored.value, stored.mod_revision)
}

fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    let map = obj.as_object_mut().expect("checked objects are maps");
    let meta = map.entry("metadata").or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    meta.as_object_mut().expect("made a map above")
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

fn meta_field<'a>(obj: &'a Value, field: &str) -> Option<&'a Value> {
    obj.get("metadata")?.get(field)
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The JSON Schema of each kind, built once.
fn schema(kind: &KindInfo) -> &'static Value {
    static SCHEMAS: OnceLock<HashMap<&'static str, Value>> = OnceLock::new();
    let all =
        SCHEMAS.get_or_init(|| api::kinds::KINDS.iter().map(|k| (k.kind, (k.schema)().to_value())).collect());
    &all[kind.kind]
}

/// The compiled JSON Schema validator of each kind, built once.
fn validator(kind: &KindInfo) -> &'static jsonschema::Validator {
    static VALIDATORS: OnceLock<HashMap<&'static str, jsonschema::Validator>> = OnceLock::new();
    let all = VALIDATORS.get_or_init(|| {
        api::kinds::KINDS
            .iter()
            .map(|k| (k.kind, jsonschema::validator_for(schema(k)).expect("the generated schemas compile")))
            .collect()
    });
    &all[kind.kind]
}

/// A JSON pointer (`/spec/env/0/value`) as a field path (`spec.env[0].value`).
fn field_path(pointer: &str) -> String {
    let mut path = api::FieldPath::root();
    for token in pointer.split('/').skip(1) {
        let token = token.replace("~1", "/").replace("~0", "~");
        path = match token.parse::<usize>() {
            Ok(i) => path.index(i),
            Err(_) => path.child(&token),
        };
    }
    path.to_string()
}

/// Facts about stored objects read from this member's state, for the access rules.
struct StateLookup<'a>(&'a crate::raft::StateMachine);

impl StateLookup<'_> {
    fn read(&self, kind: &KindInfo, namespace: Option<&str>, name: &str) -> Option<Value> {
        let stored = self.0.get(&key(kind, namespace, name)).ok()??;
        serde_json::from_str(&stored.value).ok()
    }
}

impl access::Lookup for StateLookup<'_> {
    fn node(&self, name: &str) -> Option<access::NodeFacts> {
        let node = self.read(api::kinds::by_kind(NodeSpec::KIND).expect("Node is a kind"), None, name)?;
        Some(access::NodeFacts {
            key: node.pointer("/spec/nodeKey")?.as_str()?.to_owned(),
            uid: meta_str(&node, "uid")?.to_owned(),
        })
    }

    fn object(&self, kind: &KindInfo, namespace: Option<&str>, name: &str) -> Option<access::ObjectFacts> {
        let obj = self.read(kind, namespace, name)?;
        Some(access::ObjectFacts {
            uid: meta_str(&obj, "uid")?.to_owned(),
            signer: obj
                .pointer("/metadata/annotations")
                .and_then(|a| a.get(api::signing::SIGNER))
                .and_then(Value::as_str)
                .map(str::to_owned),
        })
    }
}

/// Parses a `resourceVersion` this server handed out.
pub fn parse_revision(rv: &str, field: &str) -> Result<u64, ApiError> {
    rv.parse()
        .map_err(|_| ApiError::BadRequest(format!("{field}: {rv:?} is not a resourceVersion of this server")))
}

/// The revision a non-empty `metadata.resourceVersion` in `obj` asks for.
fn precondition_in(obj: &Value) -> Result<Option<u64>, ApiError> {
    match meta_str(obj, "resourceVersion").filter(|s| !s.is_empty()) {
        Some(rv) => parse_revision(rv, "metadata.resourceVersion").map(Some),
        None => Ok(None),
    }
}

/// A position in a paginated list: the revision it is served at and the last key served.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct Continue {
    rv: u64,
    start: String,
}

fn encode_continue(c: &Continue) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(c).expect("serializable"))
}

pub(crate) fn decode_continue(token: &str) -> Result<Continue, ApiError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| {
            ApiError::BadRequest(format!("continue: {token:?} is not a continue token of this server"))
        })
}

impl Registry {
    /// A registry on `node`.
    pub fn new(node: RaftNode) -> Self {
        Self {
            node,
            stopping: Arc::new(tokio::sync::watch::Sender::new(false)),
            limits: quota::Limits::default(),
            ledger: Arc::default(),
            watches: quota::Watches::default(),
        }
    }

    /// The same registry with other quotas.
    #[must_use]
    pub fn with_limits(mut self, limits: quota::Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The quotas.
    pub fn limits(&self) -> &quota::Limits {
        &self.limits
    }

    /// Opens a watch for `who`, within its quota of open watches.
    pub fn open_watch(&self, who: &Caller) -> Result<Option<quota::WatchSlot>, ApiError> {
        match (&who.did, who.member) {
            (Some(did), false) => self.watches.open(did.as_str(), self.limits.watches).map(Some),
            _ => Ok(None),
        }
    }

    /// What `signer` uses now, counted up to the last applied revision.
    fn usage_of(&self, signer: &str) -> Result<quota::Usage, ApiError> {
        let state = self.node.state();
        let mut ledger = self.ledger.lock().expect("quota ledger lock");
        loop {
            let Some(at) = ledger.at() else {
                let (all, revision) = state.list("/").map_err(unavailable)?;
                ledger.reset(revision, all.iter().map(|(k, v)| (k.as_str(), v.value.as_str())));
                continue;
            };
            let applied = *state.subscribe().borrow();
            match state.changes_after(at, 4096).map_err(unavailable)? {
                // Fell behind the history: count again from the current state.
                Err(_) => *ledger = quota::Ledger::default(),
                Ok(batch) => {
                    for (revision, c) in &batch.changes {
                        let (prev, new) = (c.prev.as_ref(), c.new.as_ref());
                        ledger.change(
                            *revision,
                            &c.key,
                            prev.map(|s| s.value.as_str()),
                            new.map(|s| s.value.as_str()),
                        );
                    }
                    ledger.advance(batch.upto);
                    if batch.upto >= applied {
                        return Ok(ledger.usage(signer));
                    }
                }
            }
        }
    }

    /// Checks that writing `new` at `key` in place of `old` keeps the signer within its
    /// quotas (members are exempt).
    fn charge(&self, who: &Caller, key: &str, old: Option<&str>, new: Option<&str>) -> Result<(), ApiError> {
        if who.member {
            return Ok(());
        }
        let new_cost = new.and_then(|n| quota::cost(key, n));
        let Some((signer, added)) = new_cost else { return Ok(()) };
        let before = self.usage_of(&signer)?;
        let mut after = before;
        after.add(added);
        if let Some((_, removed)) = old.and_then(|o| quota::cost(key, o)).filter(|(s, _)| *s == signer) {
            after.sub(removed);
        }
        match quota::breach(&self.limits, before, after) {
            None => Ok(()),
            Some(message) => Err(ApiError::TooManyRequests { message, retry_after: 60 }),
        }
    }

    /// The Raft member under this registry.
    pub fn node(&self) -> &RaftNode {
        &self.node
    }

    /// Ends every open watch (the server is stopping).
    pub fn stop_watches(&self) {
        self.stopping.send_replace(true);
    }

    /// A receiver that turns true when the server stops.
    pub(crate) fn stopping(&self) -> tokio::sync::watch::Receiver<bool> {
        self.stopping.subscribe()
    }

    /// Checks `obj` as an object of `kind` (unknown fields per `validation`, then every
    /// field's type and value) and returns its namespace (defaulted) and name.
    fn admit(
        kind: &KindInfo,
        obj: &mut Value,
        validation: FieldValidation,
        warnings: &mut Vec<String>,
    ) -> Result<(Option<String>, String), ApiError> {
        let label = |o: &Value| meta_str(o, "name").unwrap_or_default().to_owned();
        if !obj.is_object() {
            return Err(ApiError::BadRequest("the object is not a JSON object".into()));
        }
        match api::manifest::kind_of(obj) {
            Ok(k) if k.kind == kind.kind => {}
            Ok(k) => {
                return Err(ApiError::BadRequest(format!(
                    "the object is a {}, but the request is for {}",
                    k.kind, kind.plural
                )));
            }
            Err(causes) => {
                return Err(ApiError::Invalid { kind: kind.kind.into(), name: label(obj), causes });
            }
        }
        match validation {
            FieldValidation::Strict => {
                let unknown = api::unknown_fields::unknown_fields(schema(kind), obj);
                if !unknown.is_empty() {
                    let list: Vec<String> = unknown.iter().map(|p| format!("unknown field {p:?}")).collect();
                    return Err(ApiError::BadRequest(format!("strict decoding error: {}", list.join(", "))));
                }
            }
            FieldValidation::Warn => {
                let pruned = api::unknown_fields::prune_unknown_fields(schema(kind), obj);
                warnings.extend(pruned.iter().map(|p| format!("unknown field {p:?}")));
            }
            FieldValidation::Ignore => {
                api::unknown_fields::prune_unknown_fields(schema(kind), obj);
            }
        }
        let causes: Vec<FieldError> = validator(kind)
            .iter_errors(obj)
            // Masked: a message never repeats a value (it may come from a stored object).
            .map(|e| FieldError {
                path: field_path(&e.instance_path().to_string()),
                message: e.masked().to_string(),
            })
            .collect();
        if !causes.is_empty() {
            return Err(ApiError::Invalid { kind: kind.kind.into(), name: label(obj), causes });
        }
        if kind.signed {
            access::check_signature(kind, obj)?;
        }
        if let Err(causes) = (kind.check)(obj) {
            return Err(ApiError::Invalid { kind: kind.kind.into(), name: label(obj), causes });
        }
        let namespace = match kind.scope {
            Scope::Namespaced => {
                let ns = meta_str(obj, "namespace")
                    .filter(|s| !s.is_empty())
                    .unwrap_or(DEFAULT_NAMESPACE)
                    .to_owned();
                meta_mut(obj).insert("namespace".into(), ns.clone().into());
                Some(ns)
            }
            Scope::Cluster => None,
        };
        let name = meta_str(obj, "name")
            .filter(|s| !s.is_empty())
            .ok_or_else(|| ApiError::Invalid {
                kind: kind.kind.into(),
                name: String::new(),
                causes: vec![api::FieldPath::root().child("metadata").child("name").error("required")],
            })?
            .to_owned();
        Ok((namespace, name))
    }

    /// Waits until this member may serve `read`.
    async fn ready_for(&self, read: ReadAt) -> Result<(), ApiError> {
        match read {
            ReadAt::Latest => self.node.read_barrier().await.map_err(unavailable),
            ReadAt::Any | ReadAt::Exact(_) => Ok(()),
            ReadAt::NotOlderThan(n) => self.wait_for_revision(n).await,
        }
    }

    /// Waits (briefly) until this member has applied revision `n`.
    pub async fn wait_for_revision(&self, n: u64) -> Result<(), ApiError> {
        let mut applied = self.node.state().subscribe();
        let reached =
            tokio::time::timeout(WAIT_FOR_REVISION, applied.wait_for(|&a| a >= n)).await.map(|r| r.map(drop));
        match reached {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(unavailable("the member is stopping")),
            Err(_) => Err(ApiError::Timeout(format!(
                "Too large resource version: {n}, current: {}",
                *applied.borrow()
            ))),
        }
    }

    async fn current(&self, key: &str) -> Result<Option<Stored>, ApiError> {
        self.node.read_barrier().await.map_err(unavailable)?;
        self.node.state().get(key).map_err(unavailable)
    }

    async fn commit(&self, ops: Vec<Op>) -> Result<(u64, Outcome), ApiError> {
        let response = self.node.write(Request { ops }).await.map_err(|e| match e {
            // Not sent anywhere: retrying cannot help, so not a 503.
            crate::raft::WriteError::TooLarge(_) => ApiError::TooLarge(e.to_string()),
            e => unavailable(e),
        })?;
        Ok((response.revision, response.outcome))
    }

    /// Creates `obj`. The server sets `uid`, `creationTimestamp`, `generation` and a missing
    /// namespace; `status` is for controllers and is dropped.
    pub async fn create(
        &self,
        who: &Caller,
        kind: &KindInfo,
        mut obj: Value,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        if obj.is_object() && meta_str(&obj, "resourceVersion").is_some_and(|rv| !rv.is_empty()) {
            return Err(ApiError::BadRequest(
                "resourceVersion should not be set on objects to be created".into(),
            ));
        }
        let mut warnings = Vec::new();
        let (namespace, name) = Self::admit(kind, &mut obj, opts.validation, &mut warnings)?;
        access::authorize(who, Verb::Create, kind, None, Some(&obj), &self.lookup())?;
        obj.as_object_mut().expect("admitted objects are maps").remove("status");
        drop_empty_metadata(&mut obj);
        let meta = meta_mut(&mut obj);
        for server_owned in ["resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds"] {
            meta.remove(server_owned);
        }
        meta.insert("uid".into(), uuid::Uuid::new_v4().to_string().into());
        meta.insert("creationTimestamp".into(), now().into());
        meta.insert("generation".into(), 1.into());
        let key = key(kind, namespace.as_deref(), &name);
        let value = stored_json(&obj)?;
        self.charge(who, &key, None, Some(&value))?;
        let mut ops = vec![Op::Put { key: key.clone(), value, expect: Expect::Absent }];
        if kind.signed {
            let tkey = tombstone_key(&key);
            if let Some(tomb) = self.live_tombstone(&tkey)? {
                if let Some(after) = access::signed_at(&obj)
                    && access::rollback(&tomb.signed_at, after)
                {
                    let path = api::FieldPath::root()
                        .child("metadata")
                        .child("annotations")
                        .key(api::signing::SIGNED_AT);
                    return Err(ApiError::Invalid {
                        kind: kind.kind.into(),
                        name,
                        causes: vec![path.error(format!(
                            "signed at {after}, before the version deleted at {} (signed at {}): an older manifest cannot come back (a replay?); sign it again",
                            tomb.deleted_at, tomb.signed_at
                        ))],
                    });
                }
                // Created again: its own signed-at guards it from now on.
                ops.push(Op::Delete { key: tkey, expect: Expect::Any });
            }
        }
        if opts.dry_run {
            // What would be: only whether the name is free is left to find out.
            if self.current(&key).await?.is_some() {
                return Err(ApiError::AlreadyExists { kind: kind.plural.into(), name });
            }
            return Ok(Written { object: obj, created: true, warnings });
        }
        match self.commit(ops).await? {
            (revision, Outcome::Applied { .. }) => {
                meta_mut(&mut obj).insert("resourceVersion".into(), revision.to_string().into());
                Ok(Written { object: obj, created: true, warnings })
            }
            (_, Outcome::PreconditionFailed { .. }) => {
                Err(ApiError::AlreadyExists { kind: kind.plural.into(), name })
            }
            (_, other) => Err(unavailable(format!("unexpected outcome {other:?}"))),
        }
    }

    /// The tombstone at `tkey`, if one is there and younger than [`TOMBSTONE_TTL`].
    fn live_tombstone(&self, tkey: &str) -> Result<Option<Tombstone>, ApiError> {
        let Some(stored) = self.node.state().get(tkey).map_err(unavailable)? else { return Ok(None) };
        let Ok(tomb) = serde_json::from_str::<Tombstone>(&stored.value) else { return Ok(None) };
        let deleted = chrono::DateTime::parse_from_rfc3339(&tomb.deleted_at).ok();
        let live = deleted.is_some_and(|d| {
            Utc::now().signed_duration_since(d).to_std().unwrap_or_default() < TOMBSTONE_TTL
        });
        Ok(live.then_some(tomb))
    }

    /// Removes the tombstones older than [`TOMBSTONE_TTL`] at `now` (up to 1000 per call);
    /// returns how many went. Run now and then by one member (the leader).
    pub async fn sweep_tombstones(&self, now: chrono::DateTime<Utc>) -> Result<usize, ApiError> {
        let (all, _) = self.node.state().list(TOMBSTONES).map_err(unavailable)?;
        let ops: Vec<Op> = all
            .into_iter()
            .filter(|(_, stored)| {
                serde_json::from_str::<Tombstone>(&stored.value)
                    .ok()
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t.deleted_at).ok())
                    .is_none_or(|d| {
                        now.signed_duration_since(d).to_std().unwrap_or_default() >= TOMBSTONE_TTL
                    })
            })
            .take(1000)
            .map(|(key, stored)| Op::Delete { key, expect: Expect::ModRevision(stored.mod_revision) })
            .collect();
        let n = ops.len();
        if n > 0 {
            // A tombstone renewed meanwhile fails the precondition: the next sweep sees it again.
            self.commit(ops).await?;
        }
        Ok(n)
    }

    /// The operations that delete the object at `key` (stored as `old`) for good: the delete,
    /// and for signed kinds the tombstone that keeps its newest `signed-at`.
    fn delete_ops(kind: &KindInfo, key: &str, old: &Value, expect: Expect) -> Vec<Op> {
        let mut ops = vec![Op::Delete { key: key.to_owned(), expect }];
        if kind.signed
            && let Some(signed_at) = access::signed_at(old)
        {
            let tomb = Tombstone {
                signer: access::signer(old).map(str::to_owned),
                signed_at: signed_at.to_owned(),
                deleted_at: now(),
            };
            let value = serde_json::to_string(&tomb).expect("a tombstone serializes");
            ops.push(Op::Put { key: tombstone_key(key), value, expect: Expect::Any });
        }
        ops
    }

    /// Reads one object.
    pub async fn get(
        &self,
        who: &Caller,
        kind: &KindInfo,
        namespace: Option<&str>,
        name: &str,
        read: ReadAt,
    ) -> Result<Value, ApiError> {
        let not_found = || ApiError::NotFound { kind: kind.plural.into(), name: name.into() };
        let key = key(kind, namespace, name);
        if let ReadAt::Exact(rev) = read {
            let (items, _) = self.list_state(&key, Some(rev))?;
            let stored = items.into_iter().find(|(k, _)| *k == key).ok_or_else(not_found)?;
            return Ok(self.redact(who, kind, with_revision(&stored.1)?));
        }
        self.ready_for(read).await?;
        match self.node.state().get(&key).map_err(unavailable)? {
            Some(stored) => Ok(self.redact(who, kind, with_revision(&stored)?)),
            None => Err(not_found()),
        }
    }

    fn lookup(&self) -> StateLookup<'_> {
        StateLookup(self.node.state())
    }

    /// What `who` may see of `obj` (see [`access::redact`]).
    pub fn redact(&self, who: &Caller, kind: &KindInfo, obj: Value) -> Value {
        access::redact(who, kind, obj, &self.lookup())
    }

    fn list_state(&self, prefix: &str, at: Option<u64>) -> Result<(Vec<(String, Stored)>, u64), ApiError> {
        match self.node.state().list_at(prefix, at).map_err(unavailable)? {
            Ok(found) => Ok(found),
            Err(compacted) => Err(ApiError::Expired(format!(
                "The resourceVersion for the provided list is too old (compacted: {compacted})"
            ))),
        }
    }

    /// Lists the objects of `kind` in `namespace`, or in all namespaces, that the selector
    /// selects; page by page when `limit` is set, every page at the revision of the first.
    pub async fn list(
        &self,
        who: &Caller,
        kind: &KindInfo,
        namespace: Option<&str>,
        opts: &ListOptions,
    ) -> Result<List, ApiError> {
        let prefix = prefix(kind, namespace);
        let (at, start) = match &opts.continue_token {
            Some(token) => {
                let c = decode_continue(token)?;
                if !c.start.starts_with(&prefix) {
                    return Err(ApiError::BadRequest("continue: the token is for another list".into()));
                }
                (Some(c.rv), Some(c.start))
            }
            None => {
                self.ready_for(opts.read).await?;
                (if let ReadAt::Exact(n) = opts.read { Some(n) } else { None }, None)
            }
        };
        let (entries, revision) = self.list_state(&prefix, at).map_err(|e| match (&e, &opts.continue_token) {
            (ApiError::Expired(_), Some(_)) => ApiError::Expired(
                "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.".into(),
            ),
            _ => e,
        })?;
        let mut items = Vec::new();
        let mut last_key = None;
        let mut matched_after = 0;
        for (k, stored) in entries {
            if start.as_deref().is_some_and(|s| k.as_str() <= s) {
                continue;
            }
            // Redacted first: a selector must not probe what the caller may not see.
            let obj = self.redact(who, kind, with_revision(&stored)?);
            if !opts.selector.matches(&obj) {
                continue;
            }
            if opts.limit > 0 && items.len() == opts.limit {
                matched_after += 1;
                continue;
            }
            last_key = Some(k);
            items.push(obj);
        }
        let continue_token = (matched_after > 0).then(|| {
            encode_continue(&Continue { rv: revision, start: last_key.expect("a full page has a last key") })
        });
        let remaining = continue_token.as_ref().map(|_| matched_after);
        Ok(List { items, revision, continue_token, remaining })
    }

    /// Changes an existing object: `change` gets the current object (with its
    /// `resourceVersion`) and returns what the writer wants; server-owned fields and the part
    /// not written (`status` for [`Part::Main`], everything else for [`Part::Status`]) are
    /// then taken from the current object. A `resourceVersion` in what `change` returns, or
    /// `precondition`, must match the current one (409 otherwise); without one, a concurrent
    /// change is retried on the new current object (last writer wins).
    #[allow(clippy::too_many_arguments)]
    async fn modify(
        &self,
        who: &Caller,
        kind: &KindInfo,
        part: Part,
        namespace: Option<&str>,
        name: &str,
        opts: &WriteOptions,
        change: impl Fn(Value) -> Result<Value, ApiError>,
    ) -> Result<Written, ApiError> {
        let key = key(kind, namespace, name);
        let not_found = || ApiError::NotFound { kind: kind.plural.into(), name: name.into() };
        let conflict = || ApiError::Conflict { kind: kind.plural.into(), name: name.into() };
        for _ in 0..16 {
            let current = self.current(&key).await?.ok_or_else(not_found)?;
            let old = with_revision(&current)?;
            let verb = if part == Part::Status { Verb::UpdateStatus } else { Verb::Update };
            // Before any work on the stored object: a caller who may not write it learns nothing
            // of it from a patch or a validation error, and costs no more than a refusal.
            access::may_write(who, verb, kind, &old, &self.lookup())?;
            let wanted = change(old.clone())?;
            if !wanted.is_object() {
                return Err(ApiError::BadRequest("the object is not a JSON object".into()));
            }
            let precondition = precondition_in(&wanted)?;
            if precondition.is_some_and(|rv| rv != current.mod_revision) {
                return Err(conflict());
            }
            if meta_str(&wanted, "uid").is_some_and(|uid| Some(uid) != meta_str(&old, "uid")) {
                return Err(conflict());
            }
            let mut new = merge_server_owned(part, &old, wanted);
            drop_empty_metadata(&mut new);
            let mut warnings = Vec::new();
            let (ns, new_name) = Self::admit(kind, &mut new, opts.validation, &mut warnings)?;
            if new_name != name || (namespace.is_some() && ns.as_deref() != namespace) {
                return Err(ApiError::BadRequest(format!(
                    "the name or namespace of the object cannot change (the request is for {name:?})"
                )));
            }
            access::authorize(who, verb, kind, Some(&old), Some(&new), &self.lookup())?;
            bump_generation(&old, &mut new);
            meta_mut(&mut new).remove("resourceVersion");
            let mut unchanged = old.clone();
            meta_mut(&mut unchanged).remove("resourceVersion");
            if new == unchanged {
                // Nothing changed: no write, no new revision (as Kubernetes).
                return Ok(Written { object: old, created: false, warnings });
            }
            let finalized = meta_field(&new, "deletionTimestamp").is_some()
                && meta_field(&new, "finalizers").and_then(Value::as_array).is_none_or(Vec::is_empty);
            let value = stored_json(&new)?;
            self.charge(who, &key, Some(&current.value), Some(&value))?;
            if opts.dry_run {
                meta_mut(&mut new).insert("resourceVersion".into(), current.mod_revision.to_string().into());
                return Ok(Written { object: new, created: false, warnings });
            }
            let expect = Expect::ModRevision(current.mod_revision);
            let ops = if finalized {
                // The last finalizer of an object being deleted is gone: now it goes.
                Self::delete_ops(kind, &key, &old, expect)
            } else {
                vec![Op::Put { key: key.clone(), value, expect }]
            };
            match self.commit(ops).await? {
                (revision, Outcome::Applied { .. }) => {
                    meta_mut(&mut new).insert("resourceVersion".into(), revision.to_string().into());
                    return Ok(Written { object: new, created: false, warnings });
                }
                (_, Outcome::PreconditionFailed { current: None, .. }) => return Err(not_found()),
                (_, Outcome::PreconditionFailed { .. }) if precondition.is_none() => continue,
                (_, Outcome::PreconditionFailed { .. }) => return Err(conflict()),
                (_, other) => return Err(unavailable(format!("unexpected outcome {other:?}"))),
            }
        }
        Err(conflict())
    }

    /// Replaces an object (PUT): spec and metadata for [`Part::Main`], status for
    /// [`Part::Status`]. A `metadata.resourceVersion` in `obj` is a precondition (stale →
    /// Conflict); without one the update is unconditional.
    #[allow(clippy::too_many_arguments)]
    pub async fn update(
        &self,
        who: &Caller,
        kind: &KindInfo,
        part: Part,
        namespace: Option<&str>,
        name: &str,
        obj: Value,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        self.modify(who, kind, part, namespace, name, opts, |_| Ok(obj.clone())).await
    }

    /// Patches an object. Server-side apply creates it when it does not exist.
    #[allow(clippy::too_many_arguments)]
    pub async fn patch(
        &self,
        who: &Caller,
        kind: &KindInfo,
        part: Part,
        namespace: Option<&str>,
        name: &str,
        patch: &Patch,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        let manager = match patch {
            Patch::Apply(_) => {
                Some(opts.field_manager.clone().filter(|m| !m.is_empty()).ok_or_else(|| {
                    ApiError::BadRequest(
                        "fieldManager is required for apply requests (set ?fieldManager=NAME)".into(),
                    )
                })?)
            }
            _ => None,
        };
        let result = self
            .modify(who, kind, part, namespace, name, opts, |mut current| {
                let read_rv = meta_str(&current, "resourceVersion").map(str::to_owned);
                match patch {
                    Patch::Merge(p) => patch::merge_patch(&mut current, p),
                    Patch::Json(p) => {
                        patch::json_patch(&mut current, p).map_err(|e| match e {
                            patch::PatchError::TooLarge(_) => ApiError::TooLarge(e.to_string()),
                            _ => ApiError::BadRequest(e.to_string()),
                        })?;
                    }
                    Patch::Apply(config) => {
                        let manager = manager.as_deref().expect("apply has a manager");
                        let previous = applied_fields(&current, manager);
                        meta_mut(&mut current).remove("resourceVersion");
                        patch::apply(&mut current, config, previous.as_ref());
                        record_manager(&mut current, manager, config);
                    }
                }
                // The revision read here is not a precondition: only one the patch sets is.
                if meta_str(&current, "resourceVersion").map(str::to_owned) == read_rv {
                    meta_mut(&mut current).remove("resourceVersion");
                }
                Ok(current)
            })
            .await;
        match (result, patch) {
            (Err(ApiError::NotFound { .. }), Patch::Apply(config)) if part == Part::Main => {
                let mut obj = config.clone();
                if !obj.is_object() {
                    return Err(ApiError::BadRequest("an apply configuration is an object".into()));
                }
                let meta = meta_mut(&mut obj);
                meta.entry("name").or_insert_with(|| name.into());
                if let Some(ns) = namespace {
                    meta.entry("namespace").or_insert_with(|| ns.into());
                }
                if meta_str(&obj, "name").is_some_and(|n| n != name) {
                    return Err(ApiError::BadRequest(format!(
                        "the name of the object does not match the name on the URL ({name})"
                    )));
                }
                let manager = manager.as_deref().expect("apply has a manager");
                record_manager(&mut obj, manager, config);
                self.create(who, kind, obj, opts).await
            }
            (result, _) => result,
        }
    }

    /// Deletes an object. With finalizers it is only marked (`deletionTimestamp`) and goes
    /// when the last finalizer is removed.
    pub async fn delete(
        &self,
        who: &Caller,
        kind: &KindInfo,
        namespace: Option<&str>,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<Deleted, ApiError> {
        let key = key(kind, namespace, name);
        let not_found = || ApiError::NotFound { kind: kind.plural.into(), name: name.into() };
        let conflict = || ApiError::Conflict { kind: kind.plural.into(), name: name.into() };
        for _ in 0..16 {
            let current = self.current(&key).await?.ok_or_else(not_found)?;
            let old = with_revision(&current)?;
            if opts.resource_version.is_some_and(|rv| rv != current.mod_revision)
                || opts.uid.as_deref().is_some_and(|uid| Some(uid) != meta_str(&old, "uid"))
            {
                return Err(conflict());
            }
            access::authorize(who, Verb::Delete, kind, Some(&old), None, &self.lookup())?;
            let propagation_finalizer = match opts.propagation.as_deref() {
                Some("Foreground") => Some("foregroundDeletion"),
                Some("Orphan") => Some("orphan"),
                _ => None,
            };
            let has_finalizers = propagation_finalizer.is_some()
                || meta_field(&old, "finalizers").and_then(Value::as_array).is_some_and(|f| !f.is_empty());
            let expect = Expect::ModRevision(current.mod_revision);
            let (ops, pending) = if !has_finalizers {
                (Self::delete_ops(kind, &key, &old, expect), None)
            } else if meta_field(&old, "deletionTimestamp").is_some() {
                return Ok(Deleted::Pending(old));
            } else {
                let mut marked = old.clone();
                let meta = meta_mut(&mut marked);
                if let Some(f) = propagation_finalizer {
                    let list = meta.entry("finalizers").or_insert_with(|| Value::Array(Vec::new()));
                    if let Some(list) = list.as_array_mut()
                        && !list.iter().any(|x| x == f)
                    {
                        list.push(f.into());
                    }
                }
                meta.remove("resourceVersion");
                meta.insert("deletionTimestamp".into(), now().into());
                meta.insert("deletionGracePeriodSeconds".into(), 0.into());
                let generation = meta.get("generation").and_then(Value::as_i64).unwrap_or(1);
                meta.insert("generation".into(), (generation + 1).into());
                (vec![Op::Put { key: key.clone(), value: marked.to_string(), expect }], Some(marked))
            };
            if opts.dry_run {
                return Ok(match pending {
                    Some(marked) => Deleted::Pending(marked),
                    None => Deleted::Gone(old),
                });
            }
            match self.commit(ops).await? {
                (revision, Outcome::Applied { .. }) => {
                    return Ok(match pending {
                        Some(mut marked) => {
                            meta_mut(&mut marked)
                                .insert("resourceVersion".into(), revision.to_string().into());
                            Deleted::Pending(marked)
                        }
                        None => Deleted::Gone(old),
                    });
                }
                (_, Outcome::PreconditionFailed { current: None, .. }) => return Err(not_found()),
                (_, Outcome::PreconditionFailed { .. }) if opts.resource_version.is_none() => continue,
                (_, Outcome::PreconditionFailed { .. }) => return Err(conflict()),
                (_, other) => return Err(unavailable(format!("unexpected outcome {other:?}"))),
            }
        }
        Err(conflict())
    }
}

/// The object a writer wants, with what it may not write taken from `old`.
fn merge_server_owned(part: Part, old: &Value, wanted: Value) -> Value {
    let mut new = match part {
        Part::Main => {
            let mut new = wanted;
            let map = new.as_object_mut().expect("checked by the caller");
            match old.get("status") {
                Some(status) => map.insert("status".into(), status.clone()),
                None => map.remove("status"),
            };
            new
        }
        Part::Status => {
            let mut new = old.clone();
            let map = new.as_object_mut().expect("stored objects are maps");
            match wanted.get("status") {
                Some(status) => map.insert("status".into(), status.clone()),
                None => map.remove("status"),
            };
            // The precondition of a status write is the one it carries.
            match meta_field(&wanted, "resourceVersion") {
                Some(rv) => meta_mut(&mut new).insert("resourceVersion".into(), rv.clone()),
                None => meta_mut(&mut new).remove("resourceVersion"),
            };
            return new;
        }
    };
    let old_meta = old.get("metadata").and_then(Value::as_object);
    let meta = meta_mut(&mut new);
    for field in ["uid", "creationTimestamp", "generation", "deletionTimestamp", "deletionGracePeriodSeconds"]
    {
        match old_meta.and_then(|m| m.get(field)) {
            Some(v) => meta.insert(field.into(), v.clone()),
            None => meta.remove(field),
        };
    }
    // A writer that does not send managedFields keeps them (as Kubernetes).
    if !meta.contains_key("managedFields")
        && let Some(mf) = old_meta.and_then(|m| m.get("managedFields"))
    {
        meta.insert("managedFields".into(), mf.clone());
    }
    new
}

/// The JSON an object is stored as, within [`MAX_OBJECT_BYTES`].
fn stored_json(obj: &Value) -> Result<String, ApiError> {
    let value = obj.to_string();
    if value.len() > MAX_OBJECT_BYTES {
        return Err(ApiError::TooLarge(format!(
            "the object would be {} bytes, more than the limit of {MAX_OBJECT_BYTES}",
            value.len()
        )));
    }
    Ok(value)
}

/// Removes metadata collections left empty (a patch that removes the last finalizer or
/// annotation), as Kubernetes does not keep them either. `labels` stay as written: an empty
/// label map is part of what a signature covers, an empty annotation map is not.
fn drop_empty_metadata(obj: &mut Value) {
    let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) else { return };
    for field in ["annotations", "finalizers", "ownerReferences", "managedFields"] {
        let empty = match meta.get(field) {
            Some(Value::Object(m)) => m.is_empty(),
            Some(Value::Array(a)) => a.is_empty(),
            Some(Value::Null) => true,
            _ => false,
        };
        if empty {
            meta.remove(field);
        }
    }
}

/// Bumps `generation` when the spec changed.
fn bump_generation(old: &Value, new: &mut Value) {
    let generation = meta_field(old, "generation").and_then(Value::as_i64).unwrap_or(1);
    let generation = if new.get("spec") == old.get("spec") { generation } else { generation + 1 };
    meta_mut(new).insert("generation".into(), generation.into());
}

/// The field set `manager` last applied, from `managedFields`.
fn applied_fields(obj: &Value, manager: &str) -> Option<Value> {
    meta_field(obj, "managedFields")?
        .as_array()?
        .iter()
        .find(|e| {
            e.get("manager").and_then(Value::as_str) == Some(manager)
                && e.get("operation").and_then(Value::as_str) == Some("Apply")
        })
        .and_then(|e| e.get("fieldsV1").cloned())
}

/// Records in `managedFields` that `manager` applied `config`.
fn record_manager(obj: &mut Value, manager: &str, config: &Value) {
    let mut fields = config.clone();
    if let Some(map) = fields.as_object_mut() {
        map.remove("apiVersion");
        map.remove("kind");
        if let Some(meta) = map.get_mut("metadata").and_then(Value::as_object_mut) {
            for identity in ["name", "namespace", "resourceVersion", "uid"] {
                meta.remove(identity);
            }
            if meta.is_empty() {
                map.remove("metadata");
            }
        }
    }
    let fields = patch::fields_of(&fields);
    let is_mine = |e: &Value| {
        e.get("manager").and_then(Value::as_str) == Some(manager)
            && e.get("operation").and_then(Value::as_str) == Some("Apply")
    };
    let meta = meta_mut(obj);
    let entries = meta.entry("managedFields").or_insert_with(|| Value::Array(Vec::new()));
    if !entries.is_array() {
        *entries = Value::Array(Vec::new());
    }
    let list = entries.as_array_mut().expect("made an array above");
    // The same fields applied again keep their time, so a repeated apply changes nothing.
    if list.iter().any(|e| is_mine(e) && e.get("fieldsV1") == Some(&fields)) {
        return;
    }
    list.retain(|e| !is_mine(e));
    list.push(json!({
        "manager": manager, "operation": "Apply", "apiVersion": api::API_VERSION,
        "time": now(), "fieldsType": "FieldsV1", "fieldsV1": fields,
    }));
}
