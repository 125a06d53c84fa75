//! Objects of the univrs kinds on a [`Store`] (a Raft member), with Kubernetes semantics:
//! keys, server-owned metadata, `resourceVersion` preconditions, the `status` subresource,
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
//! A write goes through these stages: the caller's role against the stored object
//! ([`access::may_write`], before any work on it) → the change (patch, apply, update) →
//! [`admission`] of the result (kind, unknown fields, schema, signature, typed validation) →
//! [`access::authorize`] (the invariants, the role before and after) → quota ([`usage`]) →
//! commit. The parts: [`error`] (`ApiError`), [`meta`] (`ObjectRef`, server-owned metadata),
//! [`apply`] (server-side apply bookkeeping), [`paging`] (continue tokens), [`tombstone`]
//! (anti-rollback across deletion), [`ledger`] (a Transfer decided and posted with its
//! Accounts in one entry), [`store`] (the storage seam).

mod admission;
mod agents;
mod apply;
mod error;
pub mod events;
mod follow;
mod grants;
pub mod item;
mod ledger;
pub mod meta;
pub(crate) mod paging;
mod review;
pub mod store;
mod tombstone;
mod usage;

use std::sync::Arc;
use std::time::Duration;

use api::KindInfo;
use api::kinds::NodeSpec;
use api::object::KindSpec as _;
use api::selector::Selector;
use serde_json::Value;

use self::admission::admit;
use self::apply::{applied_fields, record_manager, record_update};
pub use self::error::ApiError;
pub(crate) use self::error::{not_ready, unavailable};
pub use self::item::Item;
use self::item::{Plan, Served};
pub use self::meta::{MAX_OBJECT_BYTES, ObjectRef, parse_revision};
pub(crate) use self::meta::{at_revision, prefix};
use self::meta::{
    bump_generation, drop_empty_metadata, merge_server_owned, meta_field, meta_mut, meta_str, now,
    precondition_in, same_but_revision, stored_json, with_revision,
};
use self::paging::{Continue, decode_continue, encode_continue};
pub use self::review::MAX_NODES_SHOWN;
pub use self::store::{MemStore, Store, StoreError};
pub use self::tombstone::{TOMBSTONE_TTL, TOMBSTONES};
use crate::access::{self, Caller, Verb};
use crate::patch;
use crate::quota;
use crate::raft::{Expect, Op, Outcome, Request, Stored};

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
    /// `fieldManager` (required for server-side apply). A create, update or patch that names
    /// one records the fields it changed as that manager's (operation `Update`).
    pub field_manager: Option<String>,
}

impl WriteOptions {
    /// The manager of a write that is not an apply, if the writer named one.
    fn update_manager(&self) -> Option<&str> {
        self.field_manager.as_deref().filter(|m| !m.is_empty())
    }
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
    pub items: Vec<Item>,
    /// The list's `resourceVersion`.
    pub revision: u64,
    /// The token for the next page, if there is one.
    pub continue_token: Option<String>,
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

/// How often the indexes followed from the change history are brought up to date in the
/// background while revisions are applied ([`Registry::keep_indexes_current`]).
const KEEP_CURRENT_EVERY: Duration = Duration::from_millis(100);

/// How long the keeper of the indexes waits before its next round, after `failing` failed
/// rounds in a row: [`KEEP_CURRENT_EVERY`], doubled for each, at most 64 times as long.
fn keep_current_wait(failing: u32) -> Duration {
    KEEP_CURRENT_EVERY * (1 << failing.min(6))
}

/// Visits every object under `prefix` in the state as it is now, key by key (never all held
/// at once); returns the revision of that state.
pub(crate) fn scan_now(
    store: &dyn Store,
    prefix: &str,
    visit: &mut crate::raft::Visit<'_>,
) -> Result<u64, ApiError> {
    let none = crate::raft::labels::LabelNeeds::default();
    let scan = crate::raft::Scan { prefix, after: None, at: None, labels: &none };
    store
        .scan(scan, visit)
        .map_err(unavailable)?
        .map_err(|c| ApiError::Unavailable(format!("the current state is compacted: {}", c.compacted)))
}

/// The objects of every kind, on one store (a Raft member).
#[derive(Clone, Debug)]
pub struct Registry {
    store: Arc<dyn Store>,
    /// Set once the server stops: open watches end.
    stopping: Arc<tokio::sync::watch::Sender<bool>>,
    /// What one identity may cost (members are exempt).
    limits: quota::Limits,
    /// What each signer's objects cost, followed from the change history.
    ledger: Arc<follow::Followed<quota::Ledger>>,
    /// Open watches per identity.
    watches: quota::Watches,
    /// The AgentGrants by the agent they name.
    grants: Arc<follow::Followed<grants::GrantIndex>>,
    /// Held from an agent's payment's spending-cap check to its commit, so that two payments
    /// through this member never both pass the check on the same spending.
    agent_payments: Arc<tokio::sync::Mutex<()>>,
}

/// How a request's access rules read the AgentGrants ([`Registry::follow_grants`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grants {
    /// From the grant index, brought up to date for the request (the rules follow only
    /// what was applied since, where they are).
    Followed,
    /// As none: the index could not be brought up to date (an agent is then refused).
    Unreadable,
}

/// Facts about stored objects read from this member's state, for the access rules.
pub(crate) struct StoreLookup<'a> {
    reg: &'a Registry,
    /// How the grants are read: [`Grants::Unreadable`], the index could not be brought up
    /// to date for this request, and they count as none (an agent is then refused) rather
    /// than caught up here on an async worker.
    grants: Grants,
}

impl StoreLookup<'_> {
    fn read(&self, kind: &KindInfo, namespace: Option<&str>, name: &str) -> Option<Value> {
        let stored = self.reg.store.get(&ObjectRef::new(kind, namespace, name).key()).ok()??;
        serde_json::from_str(&stored.value).ok()
    }
}

impl access::Lookup for StoreLookup<'_> {
    fn node(&self, name: &str) -> Option<access::NodeFacts> {
        let node = self.read(api::kinds::by_kind(NodeSpec::KIND).expect("Node is a kind"), None, name)?;
        Some(access::NodeFacts {
            key: node.pointer("/spec/nodeKey")?.as_str()?.to_owned(),
            uid: meta_str(&node, "uid")?.to_owned(),
        })
    }

    fn object(&self, kind: &KindInfo, namespace: Option<&str>, name: &str) -> Option<access::ObjectFacts> {
        let obj = self.read(kind, namespace, name)?;
        let annotation = |k: &str| {
            obj.pointer("/metadata/annotations")
                .and_then(|a| a.get(k))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let signer = if kind.signed { annotation(api::signing::SIGNER) } else { None };
        let is_replica = kind.kind == api::kinds::ReplicaSpec::KIND;
        let owner = if is_replica { annotation(api::kinds::PAYER_ANNOTATION) } else { signer.clone() };
        let spec = |k: &str| obj.pointer(&format!("/spec/{k}")).and_then(Value::as_str).map(str::to_owned);
        let bound_to = if is_replica { spec("nodeName").zip(spec("nodeUid")) } else { None };
        Some(access::ObjectFacts { uid: meta_str(&obj, "uid")?.to_owned(), signer, owner, bound_to })
    }

    fn grants(&self, agent: &str) -> Vec<Arc<access::agent::GrantFacts>> {
        // Unreadable grants count as none: an agent is then refused, never let through.
        if self.grants == Grants::Unreadable {
            return Vec::new();
        }
        self.reg.grants_of(agent).unwrap_or_default()
    }
}

impl Registry {
    /// A registry on `store` (a Raft member; a [`MemStore`] in unit tests).
    pub fn new(store: impl Store) -> Self {
        Self {
            store: Arc::new(store),
            stopping: Arc::new(tokio::sync::watch::Sender::new(false)),
            limits: quota::Limits::default(),
            ledger: Arc::default(),
            watches: quota::Watches::default(),
            grants: Arc::default(),
            agent_payments: Arc::default(),
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

    /// Keeps the indexes the registry follows from the change history (the quota ledger,
    /// the grant index) current in the background: built at start, then caught up at most
    /// every [`KEEP_CURRENT_EVERY`] while revisions are applied, off the async workers when
    /// that is long ([`follow::Followed::read`]). Users' requests follow them too, but
    /// members' writes make nothing else follow them: without this, the first user request
    /// after a long run of members' writes would pay for the catch-up (or, on a member no
    /// user has reached, for reading every object) and the requests behind it would wait.
    /// A round that fails (or panics) is tried again once revisions are applied, after a
    /// wait that doubles with each failure in a row ([`keep_current_wait`]); the first of a
    /// run of failures is a warning. Runs until aborted (`ui apiserver` aborts it at
    /// shutdown; a build already on a blocking thread then runs to its end, as the requests'
    /// own do) or the store stops sending its applied revision.
    pub async fn keep_indexes_current(self) {
        use futures_util::FutureExt as _;
        let mut applied = self.store.subscribe();
        let mut failing = 0u32;
        loop {
            let round = std::panic::AssertUnwindSafe(async {
                let ledger = self.ledger.read(&self.store, |_| ()).await;
                let grants = self.grants.read(&self.store, |_| ()).await;
                [("the quota ledger", ledger.err()), ("the grant index", grants.err())]
                    .into_iter()
                    .filter_map(|(index, e)| Some(format!("{index}: {}", e?)))
                    .collect::<Vec<_>>()
            })
            .catch_unwind()
            .await;
            let failed = round.unwrap_or_else(|panic| {
                let why = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                vec![format!("a catch-up panicked: {why}")]
            });
            if failed.is_empty() {
                if failing > 0 {
                    tracing::info!(
                        "the indexes follow the change history again, after {failing} failed rounds"
                    );
                }
                failing = 0;
            } else {
                let failed = failed.join("; ");
                if failing == 0 {
                    tracing::warn!(
                        "cannot keep the indexes current (tried again as revisions are applied, less and less often): {failed}"
                    );
                } else {
                    tracing::debug!("cannot keep the indexes current ({failing} failed rounds): {failed}");
                }
                failing = failing.saturating_add(1);
            }
            tokio::time::sleep(keep_current_wait(failing)).await;
            if applied.changed().await.is_err() {
                return;
            }
        }
    }

    /// The store under this registry.
    pub fn store(&self) -> &dyn Store {
        &*self.store
    }

    /// Ends every open watch (the server is stopping).
    pub fn stop_watches(&self) {
        self.stopping.send_replace(true);
    }

    /// A receiver that turns true when the server stops.
    pub(crate) fn stopping(&self) -> tokio::sync::watch::Receiver<bool> {
        self.stopping.subscribe()
    }

    /// Waits until this member may serve `read`.
    pub async fn ready_for(&self, read: ReadAt) -> Result<(), ApiError> {
        match read {
            ReadAt::Latest => self.store.read_barrier().await.map_err(not_ready),
            ReadAt::Any | ReadAt::Exact(_) => Ok(()),
            ReadAt::NotOlderThan(n) => self.wait_for_revision(n).await,
        }
    }

    /// Waits (briefly) until this member has applied revision `n`.
    pub async fn wait_for_revision(&self, n: u64) -> Result<(), ApiError> {
        let mut applied = self.store.subscribe();
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
        self.store.read_barrier().await.map_err(not_ready)?;
        self.store.get(key).map_err(unavailable)
    }

    async fn commit(&self, ops: Vec<Op>) -> Result<(u64, Outcome), ApiError> {
        let response = self.store.write(Request::new(ops)).await.map_err(|e| match e {
            // Not sent anywhere: retrying cannot help, so not a 503.
            crate::raft::WriteError::TooLarge(_) => ApiError::TooLarge(e.to_string()),
            // Appended nowhere (no leader took it): safe to send again, shortly.
            crate::raft::WriteError::NotLeader(_) => not_ready(e),
            // Its outcome may be unknown: not one a client should send again blindly.
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
        let (namespace, name) = admit(kind, &mut obj, opts.validation, &mut warnings)?;
        obj.as_object_mut().expect("admitted objects are maps").remove("status");
        match access::authorize(who, Verb::Create, kind, None, Some(&obj), &self.lookup(who).await) {
            Err(ApiError::NeedsApproval(hold)) if opts.dry_run => warnings.push(agents::would_hold(&hold)),
            Err(ApiError::NeedsApproval(hold)) => {
                let at = ObjectRef::new(kind, namespace.as_deref(), &name);
                return Err(self.hold(&hold, at, None, Some(&obj)).await);
            }
            other => other?,
        }
        if let Some(manager) = opts.update_manager() {
            record_update(None, &mut obj, manager, Part::Main);
        }
        drop_empty_metadata(&mut obj);
        let meta = meta_mut(&mut obj);
        for server_owned in ["resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds"] {
            meta.remove(server_owned);
        }
        meta.insert("uid".into(), uuid::Uuid::new_v4().to_string().into());
        meta.insert("creationTimestamp".into(), now().into());
        meta.insert("generation".into(), 1.into());
        let key = ObjectRef::new(kind, namespace.as_deref(), &name).key();
        self.charge(who, &key, None, Some(&stored_json(&obj)?)).await?;
        let tombstone =
            if kind.signed { self.tombstone_ops(who, kind, &key, &obj, &name)? } else { Vec::new() };
        let is_transfer = kind.kind == api::kinds::TransferSpec::KIND;
        let _paying = if is_transfer && !who.member && api::signing::agent_of(&obj).is_some() {
            let guard = self.agent_payments.clone().lock_owned().await;
            // What every member committed before, then the check, then this commit.
            self.store.read_barrier().await.map_err(not_ready)?;
            self.check_spending_cap(&obj).await?;
            Some(guard)
        } else {
            None
        };
        // A Transfer is decided on the accounts and lines as read; when they change before its
        // entry is applied, it is decided again.
        for _ in 0..16 {
            let mut obj = obj.clone();
            let ledger = if is_transfer { self.ledger_ops(&mut obj).await? } else { Vec::new() };
            let value = stored_json(&obj)?;
            let mut ops = vec![Op::Put { key: key.clone(), value: value.into(), expect: Expect::Absent }];
            ops.extend(tombstone.iter().cloned());
            let first_ledger_op = ops.len();
            ops.extend(ledger);
            if opts.dry_run {
                // What would be: only whether the name is free is left to find out.
                if self.current(&key).await?.is_some() {
                    return Err(ApiError::AlreadyExists { kind: kind.plural.into(), name });
                }
                return Ok(Written { object: obj, created: true, warnings });
            }
            return match self.commit(ops).await? {
                (revision, Outcome::Applied { .. }) => {
                    meta_mut(&mut obj).insert("resourceVersion".into(), revision.to_string().into());
                    Ok(Written { object: obj, created: true, warnings })
                }
                (_, Outcome::PreconditionFailed { op: 0, .. }) => {
                    Err(ApiError::AlreadyExists { kind: kind.plural.into(), name })
                }
                (_, Outcome::PreconditionFailed { op, .. }) if op >= first_ledger_op => continue,
                // The tombstone of the name changed meanwhile (deleted on another member).
                (_, Outcome::PreconditionFailed { .. }) => {
                    Err(ApiError::Conflict { kind: kind.plural.into(), name })
                }
                (_, other) => Err(unavailable(format!("unexpected outcome {other:?}"))),
            };
        }
        Err(ApiError::Conflict { kind: kind.plural.into(), name })
    }

    /// Reads one object.
    pub async fn get(&self, who: &Caller, at: ObjectRef<'_>, read: ReadAt) -> Result<Value, ApiError> {
        let kind = at.kind;
        let not_found = || at.not_found();
        let key = at.key();
        if let ReadAt::Exact(rev) = read {
            let stored = self.stored_at(&key, rev)?.ok_or_else(not_found)?;
            return self.redact(who, kind, with_revision(&stored)?).await.ok_or_else(not_found);
        }
        self.ready_for(read).await?;
        match self.store.get(&key).map_err(unavailable)? {
            Some(stored) => self.redact(who, kind, with_revision(&stored)?).await.ok_or_else(not_found),
            None => Err(not_found()),
        }
    }

    /// The value of `key` at revision `rev` (410 once compacted).
    fn stored_at(&self, key: &str, rev: u64) -> Result<Option<Stored>, ApiError> {
        let none = crate::raft::labels::LabelNeeds::default();
        let mut found = None;
        let scan = crate::raft::Scan { prefix: key, after: None, at: Some(rev), labels: &none };
        let scanned = self.store.scan(scan, &mut |k, stored| {
            if k == key {
                found = Some(stored);
            }
            // The key itself comes first; longer keys after it are not it.
            false
        });
        match scanned.map_err(unavailable)? {
            Ok(_) => Ok(found),
            Err(compacted) => Err(ApiError::Expired(format!(
                "The resourceVersion for the provided get is too old (compacted: {compacted})"
            ))),
        }
    }

    /// Brings the grant index up to date for `who`'s request, off the async workers when far
    /// behind, before the access rules read it synchronously: they then follow a few changes
    /// at most. Only for a user: the rules read no grants for a member or anonymous caller.
    pub async fn follow_grants(&self, who: &Caller) -> Grants {
        match self.follow_grants_for(who).await {
            Ok(()) => Grants::Followed,
            Err(e) => {
                tracing::debug!("the grants cannot be read now (they count as none): {e}");
                Grants::Unreadable
            }
        }
    }

    /// Facts about stored objects for the access rules, read as `grants` says.
    fn lookup_with(&self, grants: Grants) -> StoreLookup<'_> {
        StoreLookup { reg: self, grants }
    }

    /// Facts about stored objects for the access rules deciding on `who`'s request, the
    /// grant index brought up to date first ([`Registry::follow_grants`]).
    async fn lookup(&self, who: &Caller) -> StoreLookup<'_> {
        self.lookup_with(self.follow_grants(who).await)
    }

    /// Whether `who` may read the output of `replica` (see [`access::logs::may_read_log`]).
    pub async fn may_read_log(
        &self,
        who: &Caller,
        replica: &Value,
        workload: Option<&Value>,
    ) -> Result<(), ApiError> {
        access::logs::may_read_log(who, replica, workload, &self.lookup(who).await)
    }

    /// What `who` may see of `obj` (see [`access::redact`]; `None`: nothing, not even that
    /// it exists).
    pub async fn redact(&self, who: &Caller, kind: &KindInfo, obj: Value) -> Option<Value> {
        access::redact(who, kind, obj, &self.lookup(who).await)
    }

    /// What `who` may see of each of many objects read at once (a list, a batch of watch
    /// events): as [`Self::redact`], reading each Node they are bound to once.
    pub async fn redactor<'a>(
        &'a self,
        who: &'a Caller,
        kind: &'a KindInfo,
    ) -> impl Fn(Value) -> Option<Value> + 'a {
        Self::redactor_on(self.lookup(who).await, who, kind)
    }

    /// [`Self::redactor`] on facts read through `lookup`.
    fn redactor_on<'a>(
        lookup: StoreLookup<'a>,
        who: &'a Caller,
        kind: &'a KindInfo,
    ) -> impl Fn(Value) -> Option<Value> + 'a {
        let lookup = access::Memo::new(lookup);
        move |obj| access::redact(who, kind, obj, &lookup)
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
        let (at, start) = self.list_start(kind, namespace, opts).await?;
        let mut items = Vec::new();
        let mut last_key = None;
        let mut more = false;
        // One object past a full page tells whether there is a next one: a page costs what it
        // reads, not what the kind holds.
        let lookup = self.lookup(who).await;
        let revision =
            self.selected(lookup, who, kind, namespace, opts, at, start.as_deref(), &mut |key, obj| {
                if opts.limit > 0 && items.len() == opts.limit {
                    more = true;
                    return false;
                }
                last_key = Some(key);
                items.push(obj);
                true
            })?;
        let continue_token = more.then(|| {
            encode_continue(&Continue { rv: revision, start: last_key.expect("a full page has a last key") })
        });
        Ok(List { items, revision, continue_token })
    }

    /// A whole list (no `limit`, no `continue`) handed to `emit` object by object rather than
    /// held: call [`Registry::list_ready`] and [`Registry::follow_grants`] first, then this,
    /// off the async runtime (it reads the store as it goes). Returns the list's revision,
    /// known once the last object is out.
    pub fn list_each(
        &self,
        who: &Caller,
        grants: Grants,
        kind: &KindInfo,
        namespace: Option<&str>,
        opts: &ListOptions,
        emit: &mut dyn FnMut(Item) -> bool,
    ) -> Result<u64, ApiError> {
        let at = if let ReadAt::Exact(n) = opts.read { Some(n) } else { None };
        self.selected(self.lookup_with(grants), who, kind, namespace, opts, at, None, &mut |_, obj| emit(obj))
    }

    /// Waits until this member may serve `opts`' list (see [`Registry::list_each`]).
    pub async fn list_ready(&self, opts: &ListOptions) -> Result<(), ApiError> {
        self.ready_for(opts.read).await
    }

    /// The revision and the key after which a list starts: from its `continue` token, or
    /// (waiting for `opts.read`) from the beginning.
    async fn list_start(
        &self,
        kind: &KindInfo,
        namespace: Option<&str>,
        opts: &ListOptions,
    ) -> Result<(Option<u64>, Option<String>), ApiError> {
        match &opts.continue_token {
            Some(token) => {
                let c = decode_continue(token)?;
                if !c.start.starts_with(&prefix(kind, namespace)) {
                    return Err(ApiError::BadRequest("continue: the token is for another list".into()));
                }
                Ok((Some(c.rv), Some(c.start)))
            }
            None => {
                self.ready_for(opts.read).await?;
                Ok((if let ReadAt::Exact(n) = opts.read { Some(n) } else { None }, None))
            }
        }
    }

    /// Visits, in key order, the objects of a list that `who` may see and the selector
    /// selects, redacted, until `visit` says stop; returns the revision of the state read.
    /// Objects shown as stored are served from their stored JSON (see [`item`]).
    #[allow(clippy::too_many_arguments)]
    fn selected(
        &self,
        lookup: StoreLookup<'_>,
        who: &Caller,
        kind: &KindInfo,
        namespace: Option<&str>,
        opts: &ListOptions,
        at: Option<u64>,
        after: Option<&str>,
        visit: &mut dyn FnMut(String, Item) -> bool,
    ) -> Result<u64, ApiError> {
        let prefix = prefix(kind, namespace);
        let mut failed = None;
        let redact = Self::redactor_on(lookup, who, kind);
        let plan = Plan::new(who, kind, &opts.selector);
        let needs = crate::raft::labels::LabelNeeds::of(&opts.selector.labels);
        let scan = crate::raft::Scan { prefix: &prefix, after, at, labels: &needs };
        let scanned = self.store.scan(scan, &mut |key, stored| {
            match plan.as_ref().map(|p| p.serve(&stored.value, stored.mod_revision)) {
                Some(Served::Skip) => return true,
                Some(Served::Item(item)) => return visit(key, item),
                Some(Served::Build) | None => {}
            }
            // Redacted first: a selector must not probe what the caller may not see.
            match with_revision(&stored).map(&redact) {
                Ok(Some(obj)) if opts.selector.matches(&obj) => visit(key, Item::Built(obj)),
                Ok(_) => true,
                Err(e) => {
                    failed = Some(e);
                    false
                }
            }
        });
        let revision = match scanned.map_err(unavailable)? {
            Ok(revision) => revision,
            Err(_) if opts.continue_token.is_some() => return Err(ApiError::Expired(
                "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.".into(),
            )),
            Err(compacted) => return Err(ApiError::Expired(format!(
                "The resourceVersion for the provided list is too old (compacted: {compacted})"
            ))),
        };
        match failed {
            Some(e) => Err(e),
            None => Ok(revision),
        }
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
        at: ObjectRef<'_>,
        part: Part,
        opts: &WriteOptions,
        change: impl Fn(Value) -> Result<Value, ApiError>,
    ) -> Result<Written, ApiError> {
        let ObjectRef { kind, namespace, name } = at;
        let key = at.key();
        let (not_found, conflict) = (|| at.not_found(), || at.conflict());
        // A control-plane member's first try reads this member's state as it is, without
        // waiting for a linearizable read: the write's precondition (the revision read) makes
        // a stale read fail rather than win. So only a committed write is believed from it;
        // any other end (not found, a conflict, nothing to change, a dry run, a refusal, a
        // hold for approval) is decided again on a linearizable read. Only a member's: what
        // may write for anyone else depends on other objects (Nodes, grants, owners, quotas),
        // which the precondition does not cover, so a stale read of them must never decide.
        let first = if who.member { 0 } else { 1 };
        for attempt in first..17 {
            let optimistic = attempt == 0;
            // A write that failed on its way may have been committed: never sent again.
            let mut lost = false;
            let tried: Result<Option<(Written, bool)>, ApiError> = async {
                let current = if optimistic {
                    self.store.get(&key).map_err(unavailable)?
                } else {
                    self.current(&key).await?
                };
                let current = current.ok_or_else(not_found)?;
                let old = with_revision(&current)?;
                let verb = if part == Part::Status { Verb::UpdateStatus } else { Verb::Update };
                // Before any work on the stored object: a caller who may not write it learns nothing
                // of it from a patch or a validation error, and costs no more than a refusal.
                access::may_write(who, verb, kind, &old, &self.lookup(who).await)?;
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
                let (ns, new_name) = admit(kind, &mut new, opts.validation, &mut warnings)?;
                if new_name != name || (namespace.is_some() && ns.as_deref() != namespace) {
                    return Err(ApiError::BadRequest(format!(
                        "the name or namespace of the object cannot change (the request is for {name:?})"
                    )));
                }
                match access::authorize(who, verb, kind, Some(&old), Some(&new), &self.lookup(who).await) {
                    Err(ApiError::NeedsApproval(hold)) if opts.dry_run => {
                        warnings.push(agents::would_hold(&hold))
                    }
                    Err(ApiError::NeedsApproval(hold)) if optimistic => {
                        return Err(ApiError::NeedsApproval(hold));
                    }
                    Err(ApiError::NeedsApproval(hold)) => {
                        return Err(self.hold(&hold, at, Some(&old), Some(&new)).await);
                    }
                    other => other?,
                }
                if let Some(manager) = opts.update_manager() {
                    record_update(Some(&old), &mut new, manager, part);
                }
                bump_generation(&old, &mut new);
                meta_mut(&mut new).remove("resourceVersion");
                if same_but_revision(&new, &old) {
                    // Nothing changed: no write, no new revision (as Kubernetes).
                    return Ok(Some((Written { object: old, created: false, warnings }, false)));
                }
                let finalized = meta_field(&new, "deletionTimestamp").is_some()
                    && meta_field(&new, "finalizers").and_then(Value::as_array).is_none_or(Vec::is_empty);
                let value = stored_json(&new)?;
                self.charge(who, &key, Some(&current.value), Some(&value)).await?;
                if opts.dry_run {
                    meta_mut(&mut new)
                        .insert("resourceVersion".into(), current.mod_revision.to_string().into());
                    return Ok(Some((Written { object: new, created: false, warnings }, false)));
                }
                let expect = Expect::ModRevision(current.mod_revision);
                let ops = if finalized {
                    // The last finalizer of an object being deleted is gone: now it goes.
                    Self::delete_ops(kind, &key, &old, expect)
                } else {
                    vec![Op::Put { key: key.clone(), value: value.into(), expect }]
                };
                let committed = self.commit(ops).await;
                // Refused before it was sent (too large): not lost, decided again.
                lost = committed.as_ref().is_err_and(|e| !matches!(e, ApiError::TooLarge(_)));
                match committed? {
                    (revision, Outcome::Applied { .. }) => {
                        meta_mut(&mut new).insert("resourceVersion".into(), revision.to_string().into());
                        Ok(Some((Written { object: new, created: false, warnings }, true)))
                    }
                    (_, Outcome::PreconditionFailed { current: None, .. }) => Err(not_found()),
                    (_, Outcome::PreconditionFailed { .. }) if precondition.is_none() => Ok(None),
                    (_, Outcome::PreconditionFailed { .. }) => Err(conflict()),
                    (_, other) => Err(unavailable(format!("unexpected outcome {other:?}"))),
                }
            }
            .await;
            match tried {
                Ok(Some((written, committed))) if committed || !optimistic => return Ok(written),
                Err(e) if !optimistic || lost => return Err(e),
                _ => continue,
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
        at: ObjectRef<'_>,
        part: Part,
        obj: Value,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        self.modify(who, at, part, opts, |_| Ok(obj.clone())).await
    }

    /// Patches an object. Server-side apply creates it when it does not exist.
    #[allow(clippy::too_many_arguments)]
    pub async fn patch(
        &self,
        who: &Caller,
        at: ObjectRef<'_>,
        part: Part,
        patch: &Patch,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        let ObjectRef { kind, namespace, name } = at;
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
        // An apply records its fields as an `Apply` entry (`record_manager`), not an `Update`.
        let apply_opts = WriteOptions { field_manager: None, ..opts.clone() };
        let opts = if manager.is_some() { &apply_opts } else { opts };
        let result = self
            .modify(who, at, part, opts, |mut current| {
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
        at: ObjectRef<'_>,
        opts: &DeleteOptions,
    ) -> Result<Deleted, ApiError> {
        let kind = at.kind;
        let key = at.key();
        let (not_found, conflict) = (|| at.not_found(), || at.conflict());
        for _ in 0..16 {
            let current = self.current(&key).await?.ok_or_else(not_found)?;
            let old = with_revision(&current)?;
            if opts.resource_version.is_some_and(|rv| rv != current.mod_revision)
                || opts.uid.as_deref().is_some_and(|uid| Some(uid) != meta_str(&old, "uid"))
            {
                return Err(conflict());
            }
            match access::authorize(who, Verb::Delete, kind, Some(&old), None, &self.lookup(who).await) {
                // A dry run of a held delete says what the delete would do.
                Err(ApiError::NeedsApproval(_)) if opts.dry_run => {}
                Err(ApiError::NeedsApproval(hold)) => {
                    return Err(self.hold(&hold, at, Some(&old), None).await);
                }
                other => other?,
            }
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
                (vec![Op::Put { key: key.clone(), value: marked.to_string().into(), expect }], Some(marked))
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
