//! Server-side apply bookkeeping: which fields each manager applied (`managedFields`).

use serde_json::{Value, json};

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
