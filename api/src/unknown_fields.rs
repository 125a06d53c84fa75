//! Fields of an object that its kind's JSON Schema does not know, found (and, for
//! `fieldValidation=Warn|Ignore`, pruned) by walking the object along the schema.
//!
//! Typed decoding stops at the first unknown field; the apiserver wants all of them, with
//! their paths, to report under `fieldValidation=Strict` the way Kubernetes does
//! (`unknown field "spec.foo"`).

use serde_json::{Map, Value};

/// One step of a path into an object.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

/// An unknown field: its path as Kubernetes prints it (`spec.env[0].foo`) and its steps, and
/// the fields known where it is.
#[derive(Clone, Debug)]
struct Unknown {
    steps: Vec<Step>,
    known: Vec<String>,
}

// The same field, whatever the branch that found it.
impl PartialEq for Unknown {
    fn eq(&self, other: &Self) -> bool {
        self.steps == other.steps
    }
}

impl Unknown {
    fn path(&self) -> String {
        let mut out = String::new();
        for s in &self.steps {
            match s {
                Step::Key(k) if out.is_empty() => out.push_str(k),
                Step::Key(k) => {
                    out.push('.');
                    out.push_str(k);
                }
                Step::Index(i) => out.push_str(&format!("[{i}]")),
            }
        }
        out
    }
}

/// The paths of every field of `value` that `schema` (a root schema with `$defs`) does not
/// know, in document order.
pub fn unknown_fields(schema: &Value, value: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk(schema, schema, value, &mut Vec::new(), &mut out);
    out.iter().map(Unknown::path).collect()
}

/// Every field of `value` that `schema` does not know, as an error at its path that lists the
/// fields known there.
pub fn unknown_field_errors(schema: &Value, value: &Value) -> Vec<crate::FieldError> {
    let mut out = Vec::new();
    walk(schema, schema, value, &mut Vec::new(), &mut out);
    out.iter()
        .map(|u| crate::FieldError {
            path: u.path(),
            message: if u.known.is_empty() {
                "unknown field".to_owned()
            } else {
                format!("unknown field (known here: {})", u.known.join(", "))
            },
        })
        .collect()
}

/// Removes every field of `value` that `schema` does not know; returns their paths.
pub fn prune_unknown_fields(schema: &Value, value: &mut Value) -> Vec<String> {
    let mut found = Vec::new();
    walk(schema, schema, value, &mut Vec::new(), &mut found);
    // Remove deepest and last first, so earlier steps stay valid.
    for u in found.iter().rev() {
        let (last, parent) = u.steps.split_last().expect("an unknown field has a path");
        let Some(container) = parent.iter().try_fold(&mut *value, |v, s| match s {
            Step::Key(k) => v.get_mut(k),
            Step::Index(i) => v.get_mut(*i),
        }) else {
            continue;
        };
        if let (Step::Key(k), Some(map)) = (last, container.as_object_mut()) {
            map.remove(k);
        }
    }
    found.iter().map(Unknown::path).collect()
}

fn resolve<'a>(root: &'a Value, node: &'a Value) -> &'a Value {
    let mut node = node;
    // Bounded: a schema whose refs loop on themselves would otherwise never end.
    for _ in 0..32 {
        let Some(r) = node.get("$ref").and_then(Value::as_str) else { return node };
        let Some(name) = r.strip_prefix("#/$defs/") else { return node };
        match root.get("$defs").and_then(|d| d.get(name)) {
            Some(next) => node = next,
            None => return node,
        }
    }
    node
}

/// The schema and every alternative it allows (`anyOf`, `oneOf`, `allOf`), resolved.
fn branches<'a>(root: &'a Value, node: &'a Value, out: &mut Vec<&'a Value>, depth: usize) {
    let node = resolve(root, node);
    out.push(node);
    if depth > 16 {
        return;
    }
    for combinator in ["anyOf", "oneOf", "allOf"] {
        if let Some(alts) = node.get(combinator).and_then(Value::as_array) {
            for alt in alts {
                branches(root, alt, out, depth + 1);
            }
        }
    }
}

/// What an object schema says of a key: the schemas it may have (empty: unknown).
fn schemas_for_key<'a>(object_branches: &[&'a Value], key: &str) -> Option<Vec<&'a Value>> {
    let mut found = Vec::new();
    let mut open = false;
    for b in object_branches {
        if let Some(s) = b.get("properties").and_then(|p| p.get(key)) {
            found.push(s);
            continue;
        }
        match b.get("additionalProperties") {
            Some(Value::Bool(false)) => {}
            Some(s @ Value::Object(_)) => found.push(s),
            // Absent or `true`: anything goes.
            _ => open = true,
        }
    }
    if found.is_empty() && !open { None } else { Some(found) }
}

fn is_object_schema(b: &Value) -> bool {
    b.get("properties").is_some()
        || b.get("additionalProperties").is_some()
        || b.get("type")
            .is_some_and(|t| t == "object" || t.as_array().is_some_and(|a| a.contains(&"object".into())))
}

fn walk(root: &Value, node: &Value, value: &Value, path: &mut Vec<Step>, out: &mut Vec<Unknown>) {
    let mut all = Vec::new();
    branches(root, node, &mut all, 0);
    match value {
        Value::Object(map) => walk_object(root, &all, map, path, out),
        Value::Array(items) => {
            let item_schemas: Vec<&Value> = all.iter().filter_map(|b| b.get("items")).collect();
            if item_schemas.is_empty() {
                return;
            }
            for (i, item) in items.iter().enumerate() {
                path.push(Step::Index(i));
                walk_alternatives(root, &item_schemas, item, path, out);
                path.pop();
            }
        }
        _ => {}
    }
}

fn walk_object(
    root: &Value,
    all: &[&Value],
    map: &Map<String, Value>,
    path: &mut Vec<Step>,
    out: &mut Vec<Unknown>,
) {
    let objects: Vec<&Value> = all.iter().copied().filter(|b| is_object_schema(b)).collect();
    if objects.is_empty() {
        return;
    }
    for (k, v) in map {
        path.push(Step::Key(k.clone()));
        match schemas_for_key(&objects, k) {
            None => {
                let mut known: Vec<String> = objects
                    .iter()
                    .filter_map(|b| b.get("properties").and_then(Value::as_object))
                    .flat_map(|p| p.keys().cloned())
                    .collect();
                known.dedup();
                out.push(Unknown { steps: path.clone(), known });
            }
            Some(schemas) if !schemas.is_empty() => walk_alternatives(root, &schemas, v, path, out),
            Some(_) => {}
        }
        path.pop();
    }
}

/// A value that may match any of several schemas: a field is unknown only if every one of
/// them says so.
fn walk_alternatives(
    root: &Value,
    schemas: &[&Value],
    value: &Value,
    path: &mut Vec<Step>,
    out: &mut Vec<Unknown>,
) {
    let mut common: Option<Vec<Unknown>> = None;
    for s in schemas {
        let mut found = Vec::new();
        walk(root, s, value, path, &mut found);
        common = Some(match common {
            None => found,
            Some(prev) => prev.into_iter().filter(|u| found.contains(u)).collect(),
        });
        if common.as_ref().is_some_and(Vec::is_empty) {
            return;
        }
    }
    out.extend(common.unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn workload_schema() -> Value {
        let kind = crate::kinds::by_kind("Workload").unwrap();
        (kind.schema)().to_value()
    }

    #[test]
    fn finds_every_unknown_field_with_its_path() {
        let obj = json!({
            "apiVersion": "univrs.io/v1", "kind": "Workload",
            "metadata": {"name": "w", "labels": {"any": "thing"}, "bogus": 1},
            "spec": {"image": "busybox", "replica": 3, "env": [{"name": "A", "value": "1", "extra": true}]},
            "extra": {}
        });
        assert_eq!(
            unknown_fields(&workload_schema(), &obj),
            ["metadata.bogus", "spec.replica", "spec.env[0].extra", "extra"]
        );
    }

    #[test]
    fn pruning_leaves_a_valid_object() {
        let mut obj = json!({
            "apiVersion": "univrs.io/v1", "kind": "Workload", "metadata": {"name": "w"},
            "spec": {"image": "busybox", "replica": 3, "env": [{"name": "A", "value": "1", "extra": true}]}
        });
        let pruned = prune_unknown_fields(&workload_schema(), &mut obj);
        assert_eq!(pruned, ["spec.replica", "spec.env[0].extra"]);
        assert!(crate::manifest::check(&obj).is_ok(), "{obj}");
        assert_eq!(obj["spec"]["env"][0], json!({"name": "A", "value": "1"}));
    }

    #[test]
    fn every_example_manifest_has_no_unknown_fields() {
        for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../manifests")).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "yaml") {
                continue;
            }
            for doc in crate::manifest::parse_documents(&std::fs::read_to_string(&path).unwrap()).unwrap() {
                let kind = crate::manifest::check(&doc).unwrap();
                assert_eq!(
                    unknown_fields(&(kind.schema)().to_value(), &doc),
                    Vec::<String>::new(),
                    "{path:?}"
                );
            }
        }
    }
}
