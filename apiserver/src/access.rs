//! Who may do what: the caller of a request, the roles, the write rules for each kind, and
//! what one identity may read of another's objects.
//!
//! Roles:
//! - a **control-plane member** (its did is in the member list: the apiserver's own member
//!   key and the identities of controllers run by the operators of the control plane) may
//!   write any object, within the rules that bind everyone: a signed object must verify,
//!   keep its signer, and never go back to an older `signed-at`;
//! - a **node** (its did is the `spec.nodeKey` of a Node) may write its own Node (and its
//!   status), its own Lease (named after the node) and the status of Replicas bound to it;
//! - any other authenticated identity is a **user**: the signer of an object owns it, and
//!   only the owner may create (signed by itself), change or delete it.
//!
//! Reads (metadata minimization): every authenticated identity may get, list and watch every
//! object — placement, reputation and credit are shared facts of the network — except that
//! the environment of a Workload (values and sealed secrets) is shown only to its owner and
//! to members, and that of a Replica only to members and the node it is bound to. Others see
//! the variables' names only, and the annotation `univrs.io/redacted: spec.env`.

use api::identity::Did;
use api::{FieldError, FieldPath, KindInfo};
use serde_json::Value;

use crate::registry::ApiError;

/// Who is asking.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The identity the request authenticated as (`None`: the server itself).
    pub did: Option<Did>,
    /// Whether it is a control-plane member.
    pub member: bool,
}

impl Caller {
    /// The server itself (in-process callers and tests): a member without an identity.
    pub fn system() -> Self {
        Self { did: None, member: true }
    }

    /// An authenticated identity, a member or not.
    pub fn identity(did: Did, member: bool) -> Self {
        Self { did: Some(did), member }
    }

    fn is(&self, did: Option<&str>) -> bool {
        matches!((&self.did, did), (Some(me), Some(d)) if me.as_str() == d)
    }

    fn name(&self) -> String {
        self.did.as_ref().map_or_else(|| "the server".to_owned(), |d| d.as_str().to_owned())
    }
}

/// The annotation a redacted copy carries.
pub const REDACTED: &str = "univrs.io/redacted";

fn signer(obj: &Value) -> Option<&str> {
    obj.pointer("/metadata/annotations/univrs.io~1signer")?.as_str()
}

fn signed_at(obj: &Value) -> Option<&str> {
    obj.pointer("/metadata/annotations/univrs.io~1signed-at")?.as_str()
}

fn forbidden(who: &Caller, verb: &str, kind: &KindInfo, obj: &Value, why: &str) -> ApiError {
    let name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    ApiError::Forbidden(format!("{} cannot {verb} {} {name:?}: {why}", who.name(), kind.plural))
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
}

/// Facts about nodes the rules need, looked up by the registry.
pub trait Nodes {
    /// The `spec.nodeKey` of the Node named `name`, if it exists.
    fn node_key(&self, name: &str) -> Option<String>;
}

/// Checks a signed object's signature; the errors name the annotation at fault.
pub fn check_signature(kind: &KindInfo, obj: &Value) -> Result<(), ApiError> {
    api::signing::verify(obj).map(drop).map_err(|e| {
        let name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_owned();
        let path = FieldPath::root().child("metadata").child("annotations");
        ApiError::Invalid {
            kind: kind.kind.into(),
            name,
            causes: vec![FieldError {
                path: path.key(api::signing::SIGNATURE).to_string(),
                message: format!("{e} ({} objects must be signed by their owner: ui sign)", kind.kind),
            }],
        }
    })
}

/// Decides whether `who` may do `verb` to an object of `kind` that is `old` (before) and
/// becomes `new` (after). Signatures of `new` are checked before this is called.
pub fn authorize(
    who: &Caller,
    verb: Verb,
    kind: &KindInfo,
    old: Option<&Value>,
    new: Option<&Value>,
    nodes: &dyn Nodes,
) -> Result<(), ApiError> {
    let obj = new.or(old).expect("a write has an object");
    if kind.signed
        && let (Some(old), Some(new)) = (old, new)
    {
        {
            if signer(old) != signer(new) {
                return Err(forbidden(
                    who,
                    verb.as_str(),
                    kind,
                    new,
                    "the signer of an object is its owner and cannot change",
                ));
            }
            if let (Some(before), Some(after)) = (signed_at(old), signed_at(new))
                && chrono::DateTime::parse_from_rfc3339(after).ok()
                    < chrono::DateTime::parse_from_rfc3339(before).ok()
            {
                let path =
                    FieldPath::root().child("metadata").child("annotations").key(api::signing::SIGNED_AT);
                return Err(ApiError::Invalid {
                    kind: kind.kind.into(),
                    name: obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().into(),
                    causes: vec![path.error(format!(
                        "signed at {after}, before the stored object ({before}): an older manifest cannot replace a newer one (a replay?); sign it again"
                    ))],
                });
            }
        }
    }
    if who.member {
        return Ok(());
    }
    let own_node =
        |name: Option<&str>| name.and_then(|n| nodes.node_key(n)).is_some_and(|k| who.is(Some(&k)));
    let allowed = match kind.kind {
        "Node" => {
            // A node registers and updates itself; the operator who signed it owns it too.
            fn key(o: Option<&Value>) -> Option<&str> {
                o.and_then(|o| o.pointer("/spec/nodeKey")).and_then(Value::as_str)
            }
            let is_node =
                who.is(key(new).or(key(old))) && (old.is_none() || new.is_none() || key(old) == key(new));
            is_node || who.is(signer(obj))
        }
        "Lease" => own_node(obj.pointer("/metadata/name").and_then(Value::as_str)),
        "Replica" => {
            verb == Verb::UpdateStatus
                && own_node(old.and_then(|o| o.pointer("/spec/nodeName")).and_then(Value::as_str))
        }
        "Reputation" => false,
        _ if kind.signed => match verb {
            Verb::Create => who.is(signer(obj)),
            _ => who.is(old.and_then(signer)),
        },
        _ => false,
    };
    if allowed {
        return Ok(());
    }
    let why = match kind.kind {
        "Replica" => {
            "replicas are written by the control plane; a node may write only the status of replicas bound to it"
        }
        "Lease" => "a node may write only its own lease; other leases are the control plane's",
        "Reputation" => "reputation is computed by the control plane",
        "Node" => "only the node itself and the operator who signed it may write a Node",
        _ if verb == Verb::Create => "an object must be created by its signer",
        _ => "only the owner (the signer) may change or delete it",
    };
    Err(forbidden(who, verb.as_str(), kind, obj, why))
}

/// What `who` may see of `obj`.
pub fn redact(who: &Caller, kind: &KindInfo, obj: Value, nodes: &dyn Nodes) -> Value {
    if who.member {
        return obj;
    }
    let env_at = match kind.kind {
        "Workload" if !who.is(signer(&obj)) => "/spec/env",
        "Replica"
            if !obj
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .and_then(|n| nodes.node_key(n))
                .is_some_and(|k| who.is(Some(&k))) =>
        {
            "/spec/container/env"
        }
        _ => return obj,
    };
    let mut obj = obj;
    let Some(env) = obj.pointer_mut(env_at).and_then(Value::as_array_mut) else { return obj };
    if env.is_empty() {
        return obj;
    }
    for var in env.iter_mut() {
        if let Some(var) = var.as_object_mut() {
            var.retain(|k, _| k == "name");
        }
    }
    let field = env_at.trim_start_matches('/').replace('/', ".");
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        let annotations = meta.entry("annotations").or_insert_with(|| Value::Object(Default::default()));
        if let Some(a) = annotations.as_object_mut() {
            a.insert(REDACTED.into(), field.into());
        }
    }
    obj
}
