//! Who may do what: the caller of a request, the per-kind write rules ([`rules`]), the
//! invariants that bind every writer, and what one identity may read of another's objects.
//!
//! Any key is a user: anyone who reaches the API can mint a token from a fresh key. So:
//! - a **control-plane member** (its did is in the member list) may write any object, within
//!   the invariants that bind everyone (a signed object verifies, keeps its signer and never
//!   goes back to an older `signed-at`; a Node is signed by its operator; a Transfer is never
//!   rewritten);
//! - anyone else may write a part of an object only by holding a [`Role`] the kind's
//!   [`rules::Rules`] list for it (owner = signer; the node itself; the node a replica is bound
//!   to; a node's own heartbeat lease), checked against the stored object **before** any work
//!   is done on it ([`may_write`]) and against the result after ([`authorize`]);
//! - `univrs-system` is the members' namespace; node leases live in `univrs-node-lease` only;
//! - a user's object may name as owner (`ownerReferences`) only objects of the same owner, so a
//!   stranger's object never takes part in the life of yours.
//!
//! Reads (metadata minimization): every authenticated identity may get, list and watch every
//! object — placement, reputation and credit are shared facts of the network — except the
//! [`rules::Secret`] parts: the environment of a Workload is shown only to its owner and to
//! members, that of a Replica only to members and the node it is bound to. Others see an
//! allow-listed view (the variables' names), no `last-applied-configuration` (it holds the
//! whole manifest), and the annotation `univrs.io/redacted`.

pub mod agent;
pub mod logs;
pub mod review;
pub mod rules;

use api::identity::Did;
use api::{FieldPath, KindInfo, Scope};
use serde_json::Value;

pub use self::rules::Role;
use crate::registry::ApiError;

/// Who is asking.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The identity the request authenticated as (`None`: the server itself).
    pub did: Option<Did>,
    /// Whether it is a control-plane member.
    pub member: bool,
    /// Set by the server alone, when it performs an agent's request its owner approved: the
    /// grant's `approval` rules then let it through (its `forbidden` ones, expiry and deletion
    /// still refuse it).
    pub approved: bool,
    /// The grant that decided the request, for its audit record.
    pub trail: agent::Trail,
}

impl Caller {
    /// The server itself (in-process callers and tests): a member without an identity.
    pub fn system() -> Self {
        Self { did: None, member: true, approved: false, trail: Default::default() }
    }

    /// An authenticated identity, a member or not.
    pub fn identity(did: Did, member: bool) -> Self {
        Self { did: Some(did), member, approved: false, trail: Default::default() }
    }

    fn is(&self, did: Option<&str>) -> bool {
        matches!((&self.did, did), (Some(me), Some(d)) if me.as_str() == d)
    }

    /// The caller's did, or "the server".
    pub fn name(&self) -> String {
        self.did.as_ref().map_or_else(|| "the server".to_owned(), |d| d.as_str().to_owned())
    }
}

/// The annotation a redacted copy carries.
pub const REDACTED: &str = "univrs.io/redacted";
pub use api::kinds::{NODE_LEASE_NAMESPACE, SYSTEM_NAMESPACE};

/// A Node as the rules need it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeFacts {
    /// `spec.nodeKey`.
    pub key: String,
    /// `metadata.uid`.
    pub uid: String,
}

/// An object as the rules need it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectFacts {
    /// `metadata.uid`.
    pub uid: String,
    /// Its signer, for signed kinds.
    pub signer: Option<String>,
    /// Whose it is: its signer, or for a Replica its workload's signer (the `univrs.io/payer`
    /// annotation the workload controller writes).
    pub owner: Option<String>,
    /// For a Replica, the Node it is bound to: `spec.nodeName` and `spec.nodeUid`.
    pub bound_to: Option<(String, String)>,
}

/// Facts from stored state the rules need (the registry reads them from the state machine;
/// unit tests from a map).
pub trait Lookup {
    /// The Node named `name`, if it exists.
    fn node(&self, name: &str) -> Option<NodeFacts>;
    /// The object of `kind` named `name` (in `namespace` for namespaced kinds), if it exists.
    fn object(&self, kind: &KindInfo, namespace: Option<&str>, name: &str) -> Option<ObjectFacts>;
    /// Every stored AgentGrant naming `agent`, expired ones included.
    fn grants(&self, agent: &str) -> Vec<std::sync::Arc<agent::GrantFacts>>;
}

/// A [`Lookup`] that reads each Node once: for redacting a whole list or a batch of watch
/// events, where every Replica on one node would otherwise read that Node again.
#[derive(Debug)]
pub struct Memo<L> {
    inner: L,
    nodes: std::cell::RefCell<std::collections::HashMap<String, Option<NodeFacts>>>,
    #[allow(clippy::type_complexity)]
    objects: std::cell::RefCell<std::collections::HashMap<(&'static str, String), Option<ObjectFacts>>>,
    grants: std::cell::RefCell<std::collections::HashMap<String, Vec<std::sync::Arc<agent::GrantFacts>>>>,
}

impl<L: Lookup> Memo<L> {
    /// Remembers what `inner` answers.
    pub fn new(inner: L) -> Self {
        Self { inner, nodes: Default::default(), objects: Default::default(), grants: Default::default() }
    }
}

impl<L: Lookup> Lookup for Memo<L> {
    fn node(&self, name: &str) -> Option<NodeFacts> {
        if let Some(found) = self.nodes.borrow().get(name) {
            return found.clone();
        }
        let found = self.inner.node(name);
        self.nodes.borrow_mut().insert(name.to_owned(), found.clone());
        found
    }

    fn object(&self, kind: &KindInfo, namespace: Option<&str>, name: &str) -> Option<ObjectFacts> {
        // The events of one object, listed together, read it once.
        let key = (kind.kind, format!("{}/{name}", namespace.unwrap_or_default()));
        if let Some(found) = self.objects.borrow().get(&key) {
            return found.clone();
        }
        let found = self.inner.object(kind, namespace, name);
        self.objects.borrow_mut().insert(key, found.clone());
        found
    }

    fn grants(&self, agent: &str) -> Vec<std::sync::Arc<agent::GrantFacts>> {
        if let Some(found) = self.grants.borrow().get(agent) {
            return found.clone();
        }
        let found = self.inner.grants(agent);
        self.grants.borrow_mut().insert(agent.to_owned(), found.clone());
        found
    }
}

/// What a write does, for the rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    /// Create.
    Create,
    /// Change spec or metadata.
    Update,
    /// Change the `status` subresource.
    UpdateStatus,
    /// Delete.
    Delete,
}

impl Verb {
    fn as_str(self) -> &'static str {
        match self {
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::UpdateStatus => "update the status of",
            Verb::Delete => "delete",
        }
    }

    fn roles(self, rules: &rules::Rules) -> &'static [Role] {
        match self {
            Verb::Create => rules.create,
            Verb::Update => rules.update,
            Verb::UpdateStatus => rules.status,
            Verb::Delete => rules.delete,
        }
    }
}

pub(crate) fn signer(obj: &Value) -> Option<&str> {
    obj.pointer("/metadata/annotations")?.get(api::signing::SIGNER)?.as_str()
}

pub(crate) fn signed_at(obj: &Value) -> Option<&str> {
    obj.pointer("/metadata/annotations")?.get(api::signing::SIGNED_AT)?.as_str()
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

fn name_of(obj: &Value) -> &str {
    meta_str(obj, "name").unwrap_or_default()
}

fn forbidden(who: &Caller, verb: Verb, kind: &KindInfo, name: &str, why: &str) -> ApiError {
    ApiError::Forbidden(format!("{} cannot {} {} {name:?}: {why}", who.name(), verb.as_str(), kind.plural))
}

fn invalid(kind: &KindInfo, name: &str, path: FieldPath, message: String) -> ApiError {
    ApiError::Invalid { kind: kind.kind.into(), name: name.into(), causes: vec![path.error(message)] }
}

/// "only X or Y may …", from the roles of a verb.
fn only(roles: &[Role]) -> String {
    if roles.is_empty() {
        return "only the control plane may".into();
    }
    let who: Vec<&str> = roles.iter().map(|r| r.describe()).collect();
    format!("only {} may", who.join(" or "))
}

/// The names of metering charges (`meter-<replica uid>-<period ms>-<index>`): only members may
/// write a Transfer named so, so a stranger can never take a charge's name first.
pub const METERING_PREFIX: &str = "meter-";

/// Whether `obj`, of a signed kind, is a record the control plane writes unsigned: a Metering
/// Transfer (the credits controller charging a workload's owner for what its replicas used,
/// on the control plane's authority, not the owner's signature). Only members may write one
/// (see `user_rules`); one that carries a signature is checked as any other.
pub fn is_control_plane_record(kind: &KindInfo, obj: &Value) -> bool {
    kind.kind == <api::kinds::TransferSpec as api::object::KindSpec>::KIND
        && obj.pointer("/spec/reason").and_then(Value::as_str) == Some("Metering")
        && obj.pointer("/metadata/annotations").and_then(|a| a.get(api::signing::SIGNATURE)).is_none()
}

/// Checks a signed object's signature; the errors name the annotation at fault.
pub fn check_signature(kind: &KindInfo, obj: &Value) -> Result<(), ApiError> {
    api::signing::verify(obj).map(drop).map_err(|e| {
        let path = FieldPath::root().child("metadata").child("annotations").key(api::signing::SIGNATURE);
        invalid(
            kind,
            name_of(obj),
            path,
            format!("{e} ({} objects must be signed by their owner: ui sign)", kind.kind),
        )
    })
}

/// Whether `who` holds `role` towards `obj` (an object of `kind`).
fn holds(role: Role, who: &Caller, kind: &KindInfo, obj: &Value, lookup: &dyn Lookup) -> bool {
    let node_key_is_caller = |name: Option<&str>, uid: Option<&str>| {
        name.and_then(|n| lookup.node(n))
            .is_some_and(|n| who.is(Some(&n.key)) && uid.is_none_or(|uid| uid == n.uid))
    };
    match role {
        Role::Owner => kind.signed && who.is(signer(obj)),
        Role::TheNode => who.is(obj.pointer("/spec/nodeKey").and_then(Value::as_str)),
        Role::BoundNode => {
            // Bound to the Node object, not to its name: without a uid nobody holds it.
            let uid = obj.pointer("/spec/nodeUid").and_then(Value::as_str);
            uid.is_some() && node_key_is_caller(obj.pointer("/spec/nodeName").and_then(Value::as_str), uid)
        }
        Role::LeaseOfTheNode => {
            meta_str(obj, "namespace") == Some(NODE_LEASE_NAMESPACE)
                && node_key_is_caller(meta_str(obj, "name"), None)
        }
        Role::Party => {
            ["/spec/owner", "/spec/agent"].iter().any(|p| who.is(obj.pointer(p).and_then(Value::as_str)))
        }
        Role::RegardingOwner => regarding(obj, lookup).is_some_and(|facts| who.is(facts.owner.as_deref())),
        Role::Reporter => {
            regarding(obj, lookup).and_then(|facts| facts.bound_to).is_some_and(|(node, uid)| {
                // A node reports as itself: its events count against its own name (quota).
                obj.get("reportingInstance").and_then(Value::as_str) == Some(node.as_str())
                    && node_key_is_caller(Some(&node), Some(&uid))
            })
        }
    }
}

/// The object an Event is `regarding`, as stored now, if it is the very object the event
/// names (kind, namespace, name and uid): an event about an earlier object of the same name
/// gives nobody a role through the new one.
fn regarding(event: &Value, lookup: &dyn Lookup) -> Option<ObjectFacts> {
    let r = event.get("regarding")?;
    let field = |k: &str| r.get(k).and_then(Value::as_str);
    let kind = api::kinds::by_kind(field("kind")?)?;
    if field("apiVersion").is_some_and(|v| v != kind.api_version) {
        return None;
    }
    let uid = field("uid")?;
    let facts = lookup.object(kind, field("namespace"), field("name")?)?;
    (facts.uid == uid).then_some(facts)
}

/// Whether `who` may attempt `verb` on the stored object `old` at all: checked before any work
/// is done on it (a patch applied, a schema validated), so a caller who may not write an object
/// learns nothing about it from a write attempt and costs no more than a refused request.
pub fn may_write(
    who: &Caller,
    verb: Verb,
    kind: &KindInfo,
    old: &Value,
    lookup: &dyn Lookup,
) -> Result<(), ApiError> {
    if who.member {
        return Ok(());
    }
    let rules = rules::of(kind.kind);
    if meta_str(old, "namespace") == Some(SYSTEM_NAMESPACE) {
        let why = format!("{SYSTEM_NAMESPACE} is the control plane's namespace");
        return Err(forbidden(who, verb, kind, name_of(old), &why));
    }
    let roles = verb.roles(rules);
    if roles.iter().any(|&r| holds(r, who, kind, old, lookup)) {
        return Ok(());
    }
    // An agent of the object's owner, within its grant.
    match agent::may_attempt(who, verb, kind, old, lookup, chrono::Utc::now()) {
        Some(Ok(())) => return Ok(()),
        Some(Err(why)) => return Err(ApiError::Forbidden(why)),
        None => {}
    }
    let why = format!("{} {} it", only(roles), verb.as_str());
    Err(forbidden(who, verb, kind, name_of(old), &why))
}

/// Decides whether `who` may do `verb` to an object of `kind` that is `old` (before) and
/// becomes `new` (after). Signatures of `new` are checked before this is called.
pub fn authorize(
    who: &Caller,
    verb: Verb,
    kind: &KindInfo,
    old: Option<&Value>,
    new: Option<&Value>,
    lookup: &dyn Lookup,
) -> Result<(), ApiError> {
    assert!(old.is_some() || new.is_some(), "a write has an object");
    let rules = rules::of(kind.kind);
    invariants(who, verb, kind, rules, old, new)?;
    if who.member {
        return Ok(());
    }
    let roles = verb.roles(rules);
    let holds_role = [old, new].into_iter().flatten().all(|obj| {
        meta_str(obj, "namespace") != Some(SYSTEM_NAMESPACE)
            && roles.iter().any(|&r| holds(r, who, kind, obj, lookup))
    });
    // Not the caller's own: an agent of the owner writes it within its grant, or nobody does.
    let mut acting_for = None;
    if !holds_role
        && meta_str(old.or(new).expect("a write has an object"), "namespace") != Some(SYSTEM_NAMESPACE)
    {
        match agent::write(who, verb, kind, old, new, lookup, chrono::Utc::now()) {
            Some(agent::Decision::Allow(used)) => acting_for = Some(used.owner),
            Some(agent::Decision::Hold(hold)) => return Err(ApiError::NeedsApproval(Box::new(hold))),
            Some(agent::Decision::Refuse(why)) => return Err(ApiError::Forbidden(why)),
            None => {}
        }
    }
    if acting_for.is_none() {
        // The role must hold before and after: a node cannot re-key its Node, an owner cannot
        // hand an object to someone else, a lease cannot move to another node's name.
        for obj in [old, new].into_iter().flatten() {
            may_write(who, verb, kind, obj, lookup)?;
        }
    }
    if let Some(new) = new {
        user_rules(who, acting_for.as_deref(), verb, kind, old, new, lookup)?;
    }
    Ok(())
}

/// What holds for every writer, members included.
fn invariants(
    who: &Caller,
    verb: Verb,
    kind: &KindInfo,
    rules: &rules::Rules,
    old: Option<&Value>,
    new: Option<&Value>,
) -> Result<(), ApiError> {
    let annotations = || FieldPath::root().child("metadata").child("annotations");
    // The ledger: balances change only with the transfers the apiserver commits, and what it
    // decided of a transfer stands.
    if kind.kind == <api::kinds::AccountSpec as api::object::KindSpec>::KIND {
        let why = "accounts change only with the Transfers the apiserver commits (ui credits send)";
        return Err(forbidden(who, verb, kind, name_of(old.or(new).expect("a write has an object")), why));
    }
    if kind.kind == <api::kinds::TransferSpec as api::object::KindSpec>::KIND
        && let Some(old) = old
    {
        let phase = old.pointer("/status/phase").and_then(Value::as_str);
        if verb == Verb::UpdateStatus && new.and_then(|n| n.get("status")) != old.get("status") {
            let why = "a Transfer's status is the ledger's decision, made when it was written";
            return Err(forbidden(who, verb, kind, name_of(old), why));
        }
        if verb == Verb::Delete && phase == Some("Committed") {
            let why = "a committed Transfer is part of the balances derived from it";
            return Err(forbidden(who, verb, kind, name_of(old), why));
        }
    }
    if let (Some(old), Some(new)) = (old, new) {
        if kind.signed && signer(old) != signer(new) {
            let why = "the signer of an object is its owner and cannot change";
            return Err(forbidden(who, verb, kind, name_of(new), why));
        }
        if let (Some(before), Some(after)) = (signed_at(old), signed_at(new))
            && rollback(before, after)
        {
            return Err(invalid(
                kind,
                name_of(new),
                annotations().key(api::signing::SIGNED_AT),
                format!(
                    "signed at {after}, before the stored object ({before}): an older manifest cannot replace a newer one (a replay?); sign it again"
                ),
            ));
        }
        if rules.spec_immutable && old.get("spec") != new.get("spec") {
            return Err(invalid(
                kind,
                name_of(new),
                FieldPath::root().child("spec"),
                format!("a {} cannot change once written: create a new one", kind.kind),
            ));
        }
    }
    if let Some(new) = new
        && kind.kind == <api::kinds::NodeSpec as api::object::KindSpec>::KIND
    {
        let operator = new.pointer("/spec/operator").and_then(Value::as_str);
        if operator != signer(new) {
            return Err(invalid(
                kind,
                name_of(new),
                FieldPath::root().child("spec").child("operator"),
                format!(
                    "must be the Node's signer ({}): a Node is signed by its operator",
                    signer(new).unwrap_or("none")
                ),
            ));
        }
    }
    Ok(())
}

/// Whether `after` is older than `before` (both RFC 3339); unparsable times were refused by
/// the signature check.
pub fn rollback(before: &str, after: &str) -> bool {
    chrono::DateTime::parse_from_rfc3339(after).ok() < chrono::DateTime::parse_from_rfc3339(before).ok()
}

/// How far in the future a user's `signed-at` may be (clocks differ).
pub const MAX_CLOCK_SKEW: std::time::Duration = std::time::Duration::from_secs(600);

/// What binds writers who are not members, beyond their role (`acting_for`: the user an agent
/// writes for).
fn user_rules(
    who: &Caller,
    acting_for: Option<&str>,
    verb: Verb,
    kind: &KindInfo,
    old: Option<&Value>,
    new: &Value,
    lookup: &dyn Lookup,
) -> Result<(), ApiError> {
    // A signature from the future would outrank every honest one for as long (anti-rollback).
    if let Some(at) = signed_at(new).filter(|&at| old.and_then(signed_at) != Some(at))
        && chrono::DateTime::parse_from_rfc3339(at).is_ok_and(|at| {
            at > chrono::Utc::now() + chrono::Duration::from_std(MAX_CLOCK_SKEW).expect("small")
        })
    {
        return Err(invalid(
            kind,
            name_of(new),
            FieldPath::root().child("metadata").child("annotations").key(api::signing::SIGNED_AT),
            format!(
                "signed at {at}, more than {} minutes from now: check this computer's clock and sign it again",
                MAX_CLOCK_SKEW.as_secs() / 60
            ),
        ));
    }
    if kind.kind == <api::kinds::TransferSpec as api::object::KindSpec>::KIND {
        let payment = new.pointer("/spec/reason").and_then(Value::as_str) == Some("Payment");
        let from = new.pointer("/spec/from").and_then(Value::as_str);
        if !payment || from.is_some_and(|f| Some(f) != signer(new)) {
            let why = "a user's transfer is a Payment from their own account (spec.from must be the signer); metering is the control plane's";
            return Err(forbidden(who, verb, kind, name_of(new), why));
        }
        if name_of(new).starts_with(METERING_PREFIX) {
            let why = "transfers named meter-… are the control plane's metering charges: choose another name";
            return Err(forbidden(who, verb, kind, name_of(new), why));
        }
    }
    // Kept out of every prune: an object annotated univrs.io/prune: disabled is in no apply
    // set, so that no tool's prune (kubectl's included, which knows nothing of the
    // annotation) lists it.
    let annotation =
        |k: &str| new.pointer("/metadata/annotations").and_then(|a| a.get(k)).and_then(Value::as_str);
    let label = |k: &str| new.pointer("/metadata/labels").and_then(|a| a.get(k)).and_then(Value::as_str);
    if annotation(api::kinds::applyset::PRUNE) == Some("disabled")
        && label(api::kinds::applyset::PART_OF).is_some()
    {
        return Err(invalid(
            kind,
            name_of(new),
            FieldPath::root().child("metadata").child("labels").key(api::kinds::applyset::PART_OF),
            format!(
                "an object kept out of every prune ({}: disabled) cannot be part of an apply set: remove the label, or the annotation",
                api::kinds::applyset::PRUNE
            ),
        ));
    }
    // References the writer adds must name objects of its own: a stranger's object never
    // takes part in the life (garbage collection, foreground deletion) of yours.
    let refs = |o: Option<&Value>| -> Vec<Value> {
        o.and_then(|o| o.pointer("/metadata/ownerReferences"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let before = refs(old);
    for (i, r) in refs(Some(new)).iter().enumerate() {
        if before.contains(r) {
            continue;
        }
        let path = FieldPath::root().child("metadata").child("ownerReferences").index(i);
        let owner_kind = r
            .get("kind")
            .and_then(Value::as_str)
            .and_then(api::kinds::by_kind)
            .filter(|_| r.get("apiVersion").and_then(Value::as_str) == Some(api::API_VERSION));
        let Some(owner_kind) = owner_kind else {
            return Err(invalid(kind, name_of(new), path, "names no univrs.io/v1 kind".into()));
        };
        let namespace = match (owner_kind.scope, kind.scope) {
            (Scope::Cluster, _) => None,
            (Scope::Namespaced, Scope::Namespaced) => meta_str(new, "namespace"),
            (Scope::Namespaced, Scope::Cluster) => {
                return Err(invalid(
                    kind,
                    name_of(new),
                    path,
                    "a cluster-scoped object cannot be owned by a namespaced one".into(),
                ));
            }
        };
        let owner_name = r.get("name").and_then(Value::as_str).unwrap_or_default();
        let found = lookup.object(owner_kind, namespace, owner_name);
        let mine = found.as_ref().is_some_and(|f| {
            Some(f.uid.as_str()) == r.get("uid").and_then(Value::as_str)
                && (who.is(f.signer.as_deref())
                    || (acting_for.is_some() && f.signer.as_deref() == acting_for))
        });
        if !mine {
            return Err(invalid(
                kind,
                name_of(new),
                path,
                format!(
                    "{} {owner_name:?} with that uid is not an object of yours: an object may name as owner only objects of its own owner",
                    owner_kind.kind
                ),
            ));
        }
    }
    Ok(())
}

/// When `who` sees an object of `kind` exactly as it is stored, decided without the object
/// (a list serves those objects from their stored JSON, never parsing them): what
/// [`redact`] would do, conservatively.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AsStored {
    /// Always: nothing of the kind is hidden from the caller.
    Always,
    /// When the object holds nothing at the kind's [`secret_pointer`] (absent, `null` or
    /// `[]`) and has no last-applied annotation: then [`redact`] has nothing to hide or drop.
    UnlessSecret,
    /// Only [`redact`] can tell (a private kind, seen by a party to it or by nobody).
    Never,
}

/// Where the objects of `kind` hold what [`redact`] hides from readers without a role.
pub fn secret_pointer(kind: &KindInfo) -> Option<&'static str> {
    rules::of(kind.kind).secret.map(|s| s.path)
}

/// See [`AsStored`]: kept beside [`redact`], whose rules it follows.
pub fn as_stored(who: &Caller, kind: &KindInfo) -> AsStored {
    let rules = rules::of(kind.kind);
    if who.member {
        return AsStored::Always;
    }
    if rules.private.is_some() {
        return AsStored::Never;
    }
    if rules.secret.is_some() { AsStored::UnlessSecret } else { AsStored::Always }
}

/// What `who` may see of `obj`: everything, the allow-listed view of the kind's secret, or
/// nothing at all (`None`: an object of a private kind the caller is no party to).
pub fn redact(who: &Caller, kind: &KindInfo, mut obj: Value, lookup: &dyn Lookup) -> Option<Value> {
    let rules = rules::of(kind.kind);
    if let Some(readers) = rules.private
        && !who.member
        && !readers.iter().any(|&r| holds(r, who, kind, &obj, lookup))
    {
        return None;
    }
    let Some(secret) = rules.secret else { return Some(obj) };
    if who.member
        || secret.readers.iter().any(|&r| holds(r, who, kind, &obj, lookup))
        || agent::reveals(who, kind, &obj, lookup, chrono::Utc::now())
    {
        return Some(obj);
    }
    let mut hidden = false;
    if let Some(entries) = obj.pointer_mut(secret.path).and_then(Value::as_array_mut) {
        for entry in entries.iter_mut() {
            match entry.as_object_mut() {
                Some(fields) => {
                    let before = fields.len();
                    fields.retain(|k, _| secret.shown.contains(&k.as_str()));
                    hidden |= fields.len() != before;
                }
                None => {
                    *entry = Value::Null;
                    hidden = true;
                }
            }
        }
    }
    if !hidden {
        // Nothing secret in it: the object as signed, but the last applied configuration
        // (which may hold values since removed).
        if let Some(a) = obj.pointer_mut("/metadata/annotations").and_then(Value::as_object_mut) {
            a.remove(api::signing::LAST_APPLIED);
        }
        return Some(obj);
    }
    let field = secret.path.trim_start_matches('/').replace('/', ".");
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        let annotations = meta.entry("annotations").or_insert_with(|| Value::Object(Default::default()));
        if let Some(a) = annotations.as_object_mut() {
            // The last applied configuration is the whole manifest, secrets included; the
            // signature is over it, so it would let a reader test guesses of a secret offline.
            a.remove(api::signing::LAST_APPLIED);
            a.remove(api::signing::SIGNATURE);
            a.insert(REDACTED.into(), field.into());
        }
    }
    Some(obj)
}

#[cfg(test)]
mod tests;
