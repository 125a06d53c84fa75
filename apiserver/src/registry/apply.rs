//! Field managers (`managedFields`): which fields each manager applied (server-side apply,
//! operation `Apply`) or last changed with another write (a create, update or patch that
//! names a `fieldManager`, operation `Update`), as Kubernetes records them.

use serde_json::{Map, Value, json};

use super::Part;
use super::meta::{meta_field, meta_mut, now};
use crate::patch;

/// The field set `manager` last applied, from `managedFields`.
pub(crate) fn applied_fields(obj: &Value, manager: &str) -> Option<Value> {
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
pub(crate) fn record_manager(obj: &mut Value, manager: &str, config: &Value) {
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

/// Metadata a writer does not set: never part of what a manager owns.
const NOT_OWNED_METADATA: [&str; 10] = [
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

/// The part of `obj` a write of `part` may set: spec and metadata (without what the server
/// owns) for [`Part::Main`], `status` for [`Part::Status`].
fn written_part(obj: &Value, part: Part) -> Value {
    let Some(map) = obj.as_object() else { return Value::Object(Map::new()) };
    let mut out = Map::new();
    for (k, v) in map {
        let keep = match part {
            Part::Main => !matches!(k.as_str(), "apiVersion" | "kind" | "status"),
            Part::Status => k == "status",
        };
        if !keep {
            continue;
        }
        let mut v = v.clone();
        if k == "metadata"
            && let Some(meta) = v.as_object_mut()
        {
            for field in NOT_OWNED_METADATA {
                meta.remove(field);
            }
        }
        out.insert(k.clone(), v);
    }
    Value::Object(out)
}

/// The fields (`FieldsV1`) of `new` whose value is not the one in `old`: maps are compared
/// key by key, lists and scalars whole (as [`patch::fields_of`]).
fn changed_fields(old: Option<&Value>, new: &Value) -> Value {
    let Value::Object(new) = new else { return Value::Object(Map::new()) };
    let mut out = Map::new();
    for (k, v) in new {
        let before = old.and_then(|o| o.get(k));
        if before == Some(v) {
            continue;
        }
        let changed = match (before, v) {
            (Some(b @ Value::Object(_)), Value::Object(_)) => changed_fields(Some(b), v),
            _ if v.is_object() => patch::fields_of(v),
            _ => Value::Object(Map::new()),
        };
        // A map that changed only by losing keys changes no field this writer now sets.
        if v.is_object()
            && changed.as_object().is_some_and(Map::is_empty)
            && !v.as_object().is_some_and(Map::is_empty)
        {
            continue;
        }
        out.insert(format!("f:{k}"), changed);
    }
    Value::Object(out)
}

/// `a` with every field of `b` added.
fn union(a: &mut Value, b: &Value) {
    let (Some(a), Some(b)) = (a.as_object_mut(), b.as_object()) else { return };
    for (k, v) in b {
        match a.get_mut(k) {
            Some(existing) => union(existing, v),
            None => {
                a.insert(k.clone(), v.clone());
            }
        }
    }
}

/// `a` without the fields of `b` (a leaf of `b` removes the whole field, children and all).
fn subtract(a: &mut Value, b: &Value) {
    let (Some(a), Some(b)) = (a.as_object_mut(), b.as_object()) else { return };
    for (k, v) in b {
        let leaf = v.as_object().is_none_or(Map::is_empty);
        if leaf {
            a.remove(k);
        } else if let Some(child) = a.get_mut(k) {
            let was_leaf = child.as_object().is_none_or(Map::is_empty);
            subtract(child, v);
            if !was_leaf && child.as_object().is_none_or(Map::is_empty) {
                a.remove(k);
            }
        }
    }
}

/// Records in `new`'s `managedFields` that `manager` wrote it from `old` (`None`: created it)
/// with a write that is not an apply: the fields it changed become its own (operation
/// `Update`, on `part`'s subresource) and no longer another `Update` manager's. A write that
/// changes no field records nothing, so it stays a write that changes nothing.
pub(crate) fn record_update(old: Option<&Value>, new: &mut Value, manager: &str, part: Part) {
    let before = old.map(|o| written_part(o, part));
    let changed = changed_fields(before.as_ref(), &written_part(new, part));
    if changed.as_object().is_none_or(Map::is_empty) {
        return;
    }
    let subresource = match part {
        Part::Main => None,
        Part::Status => Some("status"),
    };
    let is_mine = |e: &Value| {
        e.get("manager").and_then(Value::as_str) == Some(manager)
            && e.get("operation").and_then(Value::as_str) == Some("Update")
            && e.get("subresource").and_then(Value::as_str) == subresource
    };
    let meta = meta_mut(new);
    let entries = meta.entry("managedFields").or_insert_with(|| Value::Array(Vec::new()));
    if !entries.is_array() {
        *entries = Value::Array(Vec::new());
    }
    let list = entries.as_array_mut().expect("made an array above");
    let mut mine = Value::Object(Map::new());
    for e in list.iter_mut() {
        if is_mine(e) {
            if let Some(fields) = e.get("fieldsV1") {
                mine = fields.clone();
            }
        } else if e.get("operation").and_then(Value::as_str) == Some("Update")
            && let Some(fields) = e.get_mut("fieldsV1")
        {
            subtract(fields, &changed);
        }
    }
    union(&mut mine, &changed);
    // Another manager left with nothing owns nothing: its entry goes (as Kubernetes).
    list.retain(|e| {
        !is_mine(e) && e.get("fieldsV1").is_none_or(|f| f.as_object().is_none_or(|m| !m.is_empty()))
    });
    let mut entry = json!({
        "manager": manager, "operation": "Update", "apiVersion": api::API_VERSION,
        "time": now(), "fieldsType": "FieldsV1", "fieldsV1": mine,
    });
    if let Some(sub) = subresource {
        entry["subresource"] = sub.into();
    }
    list.push(entry);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn managers(obj: &Value) -> Vec<(String, Value)> {
        obj["metadata"]["managedFields"]
            .as_array()
            .map(|l| {
                l.iter().map(|e| (e["manager"].as_str().unwrap().to_owned(), e["fieldsV1"].clone())).collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn a_create_owns_what_it_wrote_and_an_update_takes_what_it_changed() {
        let mut obj = json!({ "apiVersion": "univrs.io/v1", "kind": "Workload",
            "metadata": { "name": "w", "uid": "u", "labels": { "app": "a" } },
            "spec": { "replicas": 1, "rootfs": "busybox" } });
        record_update(None, &mut obj, "ui", Part::Main);
        assert_eq!(
            managers(&obj),
            [(
                "ui".to_owned(),
                json!({ "f:metadata": { "f:labels": { "f:app": {} } },
                                        "f:spec": { "f:replicas": {}, "f:rootfs": {} } })
            )]
        );
        let entry = &obj["metadata"]["managedFields"][0];
        assert_eq!(entry["operation"], "Update");
        assert!(entry.get("subresource").is_none());

        // Another manager changes one field: it is theirs now, and no longer ui's.
        let old = obj.clone();
        obj["spec"]["replicas"] = json!(3);
        record_update(Some(&old), &mut obj, "kubectl-edit", Part::Main);
        assert_eq!(
            managers(&obj),
            [
                (
                    "ui".to_owned(),
                    json!({ "f:metadata": { "f:labels": { "f:app": {} } },
                                          "f:spec": { "f:rootfs": {} } })
                ),
                ("kubectl-edit".to_owned(), json!({ "f:spec": { "f:replicas": {} } })),
            ]
        );

        // A write that changes nothing records nothing (not even a new time).
        let same = obj.clone();
        record_update(Some(&same), &mut obj, "ui", Part::Main);
        assert_eq!(obj, same);

        // The status subresource is its own entry.
        let old = obj.clone();
        obj["status"] = json!({ "replicas": 3 });
        record_update(Some(&old), &mut obj, "workload-controller", Part::Status);
        let last = obj["metadata"]["managedFields"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(last["subresource"], "status");
        assert_eq!(last["fieldsV1"], json!({ "f:status": { "f:replicas": {} } }));
    }

    #[test]
    fn a_manager_that_loses_every_field_is_dropped_and_apply_entries_are_left_alone() {
        let mut obj = json!({ "metadata": { "name": "w", "managedFields": [
            { "manager": "kubectl", "operation": "Apply", "fieldsV1": { "f:spec": { "f:a": {} } } },
        ] }, "spec": { "a": 1 } });
        let old = obj.clone();
        obj["spec"]["a"] = json!(2);
        record_update(Some(&old), &mut obj, "first", Part::Main);
        let old = obj.clone();
        obj["spec"]["a"] = json!(3);
        record_update(Some(&old), &mut obj, "second", Part::Main);
        let names: Vec<String> = managers(&obj).into_iter().map(|(m, _)| m).collect();
        assert_eq!(names, ["kubectl", "second"]);
    }
}
