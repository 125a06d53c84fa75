//! "May I?" — the answers of `SelfSubjectAccessReview` and `SelfSubjectRulesReview` (`kubectl
//! auth can-i`), decided by the very functions that admission and the log proxy call
//! ([`authorize`](super::authorize), [`may_write`](super::may_write),
//! [`may_read_log`](super::logs::may_read_log)), so that an answer and the request it is about
//! never disagree. Nothing here is a second copy of a rule.
//!
//! - `get`, `list`, `watch`: every authenticated identity reads every object (the secret parts
//!   redacted for those who may not see them: a view, not a refusal) → yes. The output of a
//!   replica (`log`) → [`may_read_log`](super::logs::may_read_log).
//! - `create`: whether `authorize` admits an object of the caller's with that name and
//!   namespace ([`probe`]: signed by the caller, a Node it operates, a Transfer that is a
//!   Payment of its own — content a caller can always write).
//! - `update`, `patch` (of the object or its `status`) and `delete` of one object: `authorize`
//!   against the object as stored, with what the verb does to it (for a status write: another
//!   status; for a delete: no object after). An object that does not exist → no (the request
//!   would find nothing).
//! - Any of those without a name is a question about every object of the kind: answered
//!   against an object with nothing in it (no owner, no node: a role that depends on the object
//!   holds for nobody, so only members may) and, for members, each object stored there now
//!   (an invariant that binds members may depend on what an object holds: a committed
//!   Transfer).
//!
//! The answer is always about the caller: a review names no other user.

use api::identity::Did;
use api::{KindInfo, Scope};
use serde_json::{Value, json};

use super::{Caller, Lookup, SYSTEM_NAMESPACE, Verb, authorize, rules};
use crate::registry::ApiError;

/// The verbs of the Kubernetes API this server serves for its kinds (`*` is all of them).
pub const VERBS: [&str; 7] = ["get", "list", "watch", "create", "update", "patch", "delete"];

/// What the caller asks: may it do `verb` to `kind` (one object `name`, or every object) in
/// `namespace` (`None`: every namespace), through `subresource` if any.
#[derive(Clone, Copy, Debug)]
pub struct Question<'a> {
    /// A verb of the Kubernetes API (`get`, `create`, …, `*`).
    pub verb: &'a str,
    /// The kind.
    pub kind: &'static KindInfo,
    /// The namespace, for namespaced kinds; `None` means every namespace.
    pub namespace: Option<&'a str>,
    /// One object, or `None` for every object of the kind.
    pub name: Option<&'a str>,
    /// `status` or `log` (replicas), if any.
    pub subresource: Option<&'a str>,
}

/// The answer: allowed or not, and why not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// Whether the request would be authorized.
    pub allowed: bool,
    /// Why not (empty when allowed).
    pub reason: String,
}

impl Answer {
    fn yes() -> Self {
        Self { allowed: true, reason: String::new() }
    }

    fn no(reason: impl Into<String>) -> Self {
        Self { allowed: false, reason: reason.into() }
    }

    fn from(result: Result<(), ApiError>) -> Self {
        match result {
            Ok(()) => Self::yes(),
            Err(e) => Self::no(e.to_string()),
        }
    }
}

/// What the answer needs of stored state, read by the caller of [`answer`] (the registry):
/// the object named (if a name was given and it exists), for a replica's `log` the workload
/// named in its spec, and for a member's question about every object, the objects there now.
#[derive(Debug, Default)]
pub struct Stored<'a> {
    /// The object the question names, as stored.
    pub object: Option<&'a Value>,
    /// For `log`: the workload the replica names, as stored.
    pub workload: Option<&'a Value>,
    /// For a member's question without a name: every object of the kind in the namespace.
    pub all: &'a [Value],
}

/// What a verb is, for the rules.
enum Action {
    Read,
    ReadLog,
    Write(Verb),
}

/// The action `verb` on `subresource` is, or why the server serves no such request.
fn action(verb: &str, kind: &KindInfo, subresource: Option<&str>) -> Result<Action, String> {
    let plural = kind.plural;
    let has_log = kind.kind == <api::kinds::ReplicaSpec as api::object::KindSpec>::KIND;
    match (subresource, verb) {
        (None, "get" | "list" | "watch") => Ok(Action::Read),
        (None, "create") => Ok(Action::Write(Verb::Create)),
        (None, "update" | "patch") => Ok(Action::Write(Verb::Update)),
        (None, "delete") => Ok(Action::Write(Verb::Delete)),
        (None, "deletecollection") => {
            Err(format!("this server deletes {plural} one at a time: ask about delete"))
        }
        (None, other) => Err(format!("{other:?} is not a verb of univrs.io (one of {})", VERBS.join(", "))),
        (Some("status"), "get") => Ok(Action::Read),
        (Some("status"), "update" | "patch") => Ok(Action::Write(Verb::UpdateStatus)),
        (Some("status"), _) => {
            Err(format!("the status of {plural} is read with get, written with update or patch"))
        }
        (Some("log"), "get") if has_log => Ok(Action::ReadLog),
        (Some("log"), _) if has_log => Err(format!("the output of {plural} is only read (get)")),
        (Some(sub), _) => Err(format!("{plural} have no subresource {sub:?}")),
    }
}

/// The answer to `q` for `who`, from the rules and `stored` (see the module's documentation).
pub fn answer(who: &Caller, q: &Question<'_>, stored: &Stored<'_>, lookup: &dyn Lookup) -> Answer {
    if q.verb == "*" {
        for verb in VERBS {
            let sub = Question { verb, ..*q };
            // A subresource is not every verb's; `*` asks about those it serves.
            if q.subresource.is_some() && action(verb, q.kind, q.subresource).is_err() {
                continue;
            }
            let a = answer(who, &sub, stored, lookup);
            if !a.allowed {
                return Answer::no(format!("{verb}: {}", a.reason));
            }
        }
        return Answer::yes();
    }
    let action = match action(q.verb, q.kind, q.subresource) {
        Ok(a) => a,
        Err(why) => return Answer::no(why),
    };
    let one_object =
        matches!(action, Action::ReadLog | Action::Write(Verb::Update | Verb::UpdateStatus | Verb::Delete));
    if one_object && q.name.is_some() && q.kind.scope == Scope::Namespaced && q.namespace.is_none() {
        return Answer::no(format!(
            "{} are named within a namespace: ask in one (-n NAMESPACE)",
            q.kind.plural
        ));
    }
    match action {
        Action::Read => Answer::yes(),
        Action::ReadLog => match (q.name, stored.object) {
            (Some(_), Some(replica)) => {
                Answer::from(super::logs::may_read_log(who, replica, stored.workload, lookup))
            }
            (Some(name), None) => Answer::no(not_found(q.kind, name)),
            // Every replica's output: members only (an owner reads only its own).
            (None, _) if who.member => Answer::yes(),
            (None, _) => Answer::no(
                "only the owner of a replica's workload may read its output: ask about one (replicas/NAME --subresource=log)",
            ),
        },
        Action::Write(Verb::Create) => create(who, q, lookup),
        Action::Write(verb) => match (q.name, stored.object) {
            (Some(_), Some(old)) => Answer::from(change(who, verb, q.kind, old, lookup)),
            (Some(name), None) => Answer::no(not_found(q.kind, name)),
            (None, _) => every_object(who, verb, q, stored.all, lookup),
        },
    }
}

fn not_found(kind: &KindInfo, name: &str) -> String {
    format!("{} {name:?} not found", kind.plural)
}

/// What `verb` does to `old`, through `authorize`: for a status write, another status; for an
/// update, the object as it is (the invariants of a change are about its content, which the
/// caller chooses); for a delete, no object after.
fn change(
    who: &Caller,
    verb: Verb,
    kind: &KindInfo,
    old: &Value,
    lookup: &dyn Lookup,
) -> Result<(), ApiError> {
    match verb {
        Verb::Delete => authorize(who, verb, kind, Some(old), None, lookup),
        Verb::UpdateStatus => {
            let mut new = old.clone();
            new["status"] = Value::Null;
            authorize(who, verb, kind, Some(old), Some(&new), lookup)
        }
        Verb::Update | Verb::Create => authorize(who, verb, kind, Some(old), Some(old), lookup),
    }
}

/// A question without a name: about every object of the kind in the namespace.
fn every_object(who: &Caller, verb: Verb, q: &Question<'_>, all: &[Value], lookup: &dyn Lookup) -> Answer {
    let blank = blank(q.kind, q.namespace);
    if let Err(e) = change(who, verb, q.kind, &blank, lookup) {
        return Answer::no(format!("{}{}", without_name(&e.to_string()), hint(who, verb, q)));
    }
    for obj in all {
        if let Err(e) = change(who, verb, q.kind, obj, lookup) {
            return Answer::no(e.to_string());
        }
    }
    Answer::yes()
}

/// What to ask instead, when a question without a name is refused but one with a name (or a
/// namespace) may not be: when some role other than the control plane's may do it.
fn hint(who: &Caller, verb: Verb, q: &Question<'_>) -> String {
    if who.member || verb.roles(rules::of(q.kind.kind)).is_empty() {
        return String::new();
    }
    let sub = q.subresource.map(|s| format!(" --subresource={s}")).unwrap_or_default();
    if q.namespace.is_none() && q.kind.scope == Scope::Namespaced {
        return format!(
            ": ask in one namespace (kubectl auth can-i {} {} -n NAMESPACE)",
            q.verb, q.kind.plural
        );
    }
    format!(": ask about one (kubectl auth can-i {} {}/NAME{sub})", q.verb, q.kind.plural)
}

/// A refusal's message without the empty name of the blank object (`… "": …`).
fn without_name(message: &str) -> String {
    message.replacen(" \"\":", ":", 1)
}

/// An object of `kind` with nothing in it: no owner, no node, no status.
fn blank(kind: &KindInfo, namespace: Option<&str>) -> Value {
    let mut obj =
        json!({ "apiVersion": api::API_VERSION, "kind": kind.kind, "metadata": { "name": "" }, "spec": {} });
    if kind.scope == Scope::Namespaced {
        // Every namespace includes the control plane's own.
        obj["metadata"]["namespace"] = namespace.unwrap_or(SYSTEM_NAMESPACE).into();
    }
    obj
}

/// Whether `who` may create an object of the kind named as asked: `authorize` on [`probe`].
fn create(who: &Caller, q: &Question<'_>, lookup: &dyn Lookup) -> Answer {
    let probe = probe(who.did.as_ref(), q.kind, q.namespace, q.name.unwrap_or_default());
    match authorize(who, Verb::Create, q.kind, None, Some(&probe), lookup) {
        Ok(()) => Answer::yes(),
        Err(e) if q.name.is_none() => {
            Answer::no(format!("{}{}", without_name(&e.to_string()), hint(who, Verb::Create, q)))
        }
        Err(e) => Answer::no(e.to_string()),
    }
}

/// The object `caller` would create of `kind`, named `name` in `namespace` (`None`: every
/// namespace, the control plane's included), holding only what the rules look at, as a
/// caller can always write it: signed by the caller (signed kinds), a Node operated by the
/// caller (its operator must be its signer), a Transfer that is a Payment from the caller.
/// Content rules beyond those (a schema, a credit limit) are not about who may write.
pub fn probe(caller: Option<&Did>, kind: &KindInfo, namespace: Option<&str>, name: &str) -> Value {
    let mut obj = blank(kind, namespace);
    obj["metadata"]["name"] = name.into();
    let Some(did) = caller else { return obj };
    if kind.signed {
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        obj["metadata"]["annotations"] =
            json!({ api::signing::SIGNER: did.as_str(), api::signing::SIGNED_AT: now });
    }
    if kind.kind == <api::kinds::NodeSpec as api::object::KindSpec>::KIND {
        obj["spec"] = json!({ "operator": did.as_str(), "nodeKey": did.as_str() });
    }
    if kind.kind == <api::kinds::TransferSpec as api::object::KindSpec>::KIND {
        obj["spec"] = json!({ "reason": "Payment" });
    }
    obj
}

/// One rule of a rules review: `verbs` on `resource` (`PLURAL` or `PLURAL/SUBRESOURCE`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceRule {
    /// The API group of the resource.
    pub group: &'static str,
    /// The verbs allowed.
    pub verbs: Vec<&'static str>,
    /// The resource (and subresource).
    pub resource: String,
}

/// Why a rules review is incomplete: it lists what holds for every object of a kind.
pub const RULES_INCOMPLETE: &str = "what holds for one object only (its owner, the node it is bound to, a node's own lease, what it holds) is not listed: ask about one object (kubectl auth can-i VERB RESOURCE/NAME)";

/// What `who` may do to every object of each kind in `namespace` (`SelfSubjectRulesReview`):
/// for each resource and subresource, the verbs [`answer`] allows without a name (against an
/// object with nothing in it, see [`RULES_INCOMPLETE`]).
pub fn rules(who: &Caller, namespace: Option<&str>, lookup: &dyn Lookup) -> Vec<ResourceRule> {
    let mut out = Vec::new();
    for kind in &api::kinds::KINDS {
        let has_log = kind.kind == <api::kinds::ReplicaSpec as api::object::KindSpec>::KIND;
        let status = kind.has_status.then_some(Some("status"));
        let subresources = [None].into_iter().chain(status).chain(has_log.then_some(Some("log")));
        for subresource in subresources {
            let verbs: Vec<&'static str> = VERBS
                .into_iter()
                .filter(|verb| action(verb, kind, subresource).is_ok())
                .filter(|verb| {
                    let q = Question { verb, kind, namespace, name: None, subresource };
                    answer(who, &q, &Stored::default(), lookup).allowed
                })
                .collect();
            if !verbs.is_empty() {
                let resource = match subresource {
                    Some(sub) => format!("{}/{sub}", kind.plural),
                    None => kind.plural.to_owned(),
                };
                out.push(ResourceRule { group: kind.group, verbs, resource });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
