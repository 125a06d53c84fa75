//! Object identity and server-owned metadata: storage keys ([`ObjectRef`]), `uid`,
//! `generation`, `resourceVersion`, what a writer may not write, and the stored JSON.

use api::signing::DEFAULT_NAMESPACE;
use api::{KindInfo, Scope};
use chrono::{SecondsFormat, Utc};
use serde_json::{Map, Value};

use super::{ApiError, Part, unavailable};
use crate::raft::Stored;

/// Largest object stored, as its JSON (as a request body: 3 MiB).
pub const MAX_OBJECT_BYTES: usize = 3 * 1024 * 1024;

/// Which object: its kind, namespace (for namespaced kinds; `default` when unset) and name.
#[derive(Clone, Copy, Debug)]
pub struct ObjectRef<'a> {
    /// The kind.
    pub kind: &'a KindInfo,
    /// The namespace, for namespaced kinds.
    pub namespace: Option<&'a str>,
    /// The name.
    pub name: &'a str,
}

impl<'a> ObjectRef<'a> {
    /// The object of `kind` named `name` in `namespace` (ignored for cluster-scoped kinds).
    pub fn new(kind: &'a KindInfo, namespace: Option<&'a str>, name: &'a str) -> Self {
        let namespace = match kind.scope {
            Scope::Namespaced => Some(namespace.unwrap_or(DEFAULT_NAMESPACE)),
            Scope::Cluster => None,
        };
        Self { kind, namespace, name }
    }

    /// Its storage key: `/registry/{plural}/{namespace}/{name}`, or without the namespace for
    /// cluster-scoped kinds.
    pub fn key(&self) -> String {
        match self.namespace {
            Some(ns) => format!("/registry/{}/{ns}/{}", self.kind.plural, self.name),
            None => format!("/registry/{}/{}", self.kind.plural, self.name),
        }
    }

    /// Not found, for this object.
    pub fn not_found(&self) -> ApiError {
        ApiError::NotFound { kind: self.kind.plural.into(), name: self.name.into() }
    }

    /// A stale precondition, for this object.
    pub fn conflict(&self) -> ApiError {
        ApiError::Conflict { kind: self.kind.plural.into(), name: self.name.into() }
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
pub(crate) fn with_revision(stored: &Stored) -> Result<Value, ApiError> {
    at_revision(&stored.value, stored.mod_revision)
}

/// The metadata map of an object (made when missing).
pub(crate) fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    let map = obj.as_object_mut().expect("checked objects are maps");
    let meta = map.entry("metadata").or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    meta.as_object_mut().expect("made a map above")
}

/// A string field of the metadata.
pub(crate) fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

/// A field of the metadata.
pub(crate) fn meta_field<'a>(obj: &'a Value, field: &str) -> Option<&'a Value> {
    obj.get("metadata")?.get(field)
}

/// Now, as the API writes times.
pub(crate) fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Parses a `resourceVersion` this server handed out.
pub fn parse_revision(rv: &str, field: &str) -> Result<u64, ApiError> {
    rv.parse()
        .map_err(|_| ApiError::BadRequest(format!("{field}: {rv:?} is not a resourceVersion of this server")))
}

/// The revision a non-empty `metadata.resourceVersion` in `obj` asks for.
pub(crate) fn precondition_in(obj: &Value) -> Result<Option<u64>, ApiError> {
    match meta_str(obj, "resourceVersion").filter(|s| !s.is_empty()) {
        Some(rv) => parse_revision(rv, "metadata.resourceVersion").map(Some),
        None => Ok(None),
    }
}

/// The object a writer wants, with what it may not write taken from `old`.
pub(crate) fn merge_server_owned(part: Part, old: &Value, wanted: Value) -> Value {
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
pub(crate) fn stored_json(obj: &Value) -> Result<String, ApiError> {
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
pub(crate) fn drop_empty_metadata(obj: &mut Value) {
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
pub(crate) fn bump_generation(old: &Value, new: &mut Value) {
    let generation = meta_field(old, "generation").and_then(Value::as_i64).unwrap_or(1);
    let generation = if new.get("spec") == old.get("spec") { generation } else { generation + 1 };
    meta_mut(new).insert("generation".into(), generation.into());
}

/// Whether `new` is `old` but for `metadata.resourceVersion` (which either may lack): a write
/// that would change nothing else (compared in place, no copy of either).
pub(crate) fn same_but_revision(new: &Value, old: &Value) -> bool {
    let (Some(n), Some(o)) = (new.as_object(), old.as_object()) else { return new == old };
    let meta_equal = |a: Option<&Value>, b: Option<&Value>| match (a, b) {
        (Some(Value::Object(a)), Some(Value::Object(b))) => {
            let without = |m: &Map<String, Value>| m.len() - usize::from(m.contains_key("resourceVersion"));
            without(a) == without(b) && a.iter().all(|(k, v)| k == "resourceVersion" || b.get(k) == Some(v))
        }
        (a, b) => a == b,
    };
    let others = |m: &Map<String, Value>| m.len() - usize::from(m.contains_key("metadata"));
    others(n) == others(o)
        && meta_equal(n.get("metadata"), o.get("metadata"))
        && n.iter().all(|(k, v)| k == "metadata" || o.get(k) == Some(v))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn only_the_revision_may_differ_for_a_write_that_changes_nothing() {
        let old = json!({"kind": "Replica", "metadata": {"name": "a", "resourceVersion": "7", "labels": {"x": "1"}}, "spec": {"n": 1}});
        let same =
            json!({"spec": {"n": 1}, "metadata": {"labels": {"x": "1"}, "name": "a"}, "kind": "Replica"});
        assert!(same_but_revision(&same, &old));
        assert!(same_but_revision(&old, &old));
        for changed in [
            json!({"kind": "Replica", "metadata": {"name": "a", "labels": {"x": "1"}}, "spec": {"n": 2}}),
            json!({"kind": "Replica", "metadata": {"name": "a", "labels": {"x": "2"}}, "spec": {"n": 1}}),
            json!({"kind": "Replica", "metadata": {"name": "a"}, "spec": {"n": 1}}),
            json!({"kind": "Replica", "metadata": {"name": "a", "labels": {"x": "1"}, "uid": "u"}, "spec": {"n": 1}}),
            json!({"kind": "Replica", "metadata": {"name": "a", "labels": {"x": "1"}}, "spec": {"n": 1}, "status": {}}),
            json!({"kind": "Replica", "spec": {"n": 1}}),
            json!({"kind": "Replica", "metadata": null, "spec": {"n": 1}}),
        ] {
            assert!(!same_but_revision(&changed, &old), "{changed}");
        }
        // The same as removing the revision from both and comparing.
        let mut a = old.clone();
        a["metadata"].as_object_mut().unwrap().remove("resourceVersion");
        assert_eq!(same_but_revision(&a, &old), a == same);
    }
}
