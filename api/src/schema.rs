//! Every kind's JSON Schema, built once, its compiled validator, and validation errors said
//! for people: every problem at once, each at its field path, never repeating a value (a
//! server may validate what it stored, and the caller may not be allowed to read it), with a
//! hint for the common ones (quantities, enumerations, types). `ui sign`, `ui apply` and the
//! apiserver all report through [`errors`], so they say the same thing.

use std::collections::HashMap;
use std::sync::OnceLock;

use jsonschema::error::{TypeKind, ValidationErrorKind};
use serde_json::Value;

use crate::validation::{FieldError, FieldPath};
use crate::{KindInfo, kinds};

/// The JSON Schema of `kind` (as in `schemas/`), built once.
pub fn of(kind: &KindInfo) -> &'static Value {
    static SCHEMAS: OnceLock<HashMap<&'static str, Value>> = OnceLock::new();
    let all =
        SCHEMAS.get_or_init(|| kinds::KINDS.iter().map(|k| (k.kind, (k.schema)().to_value())).collect());
    &all[kind.kind]
}

/// The compiled validator of `kind`'s schema, built once.
pub fn validator(kind: &KindInfo) -> &'static jsonschema::Validator {
    static VALIDATORS: OnceLock<HashMap<&'static str, jsonschema::Validator>> = OnceLock::new();
    let all = VALIDATORS.get_or_init(|| {
        kinds::KINDS
            .iter()
            .map(|k| (k.kind, jsonschema::validator_for(of(k)).expect("the generated schemas compile")))
            .collect()
    });
    &all[kind.kind]
}

/// Every place where `obj` breaks `kind`'s schema (unknown fields aside: see
/// [`crate::unknown_fields`]), said for people and without values.
pub fn errors(kind: &KindInfo, obj: &Value) -> Vec<FieldError> {
    located_errors(kind, obj).into_iter().map(|(_, e)| e).collect()
}

/// [`errors`], each with the JSON pointer tokens of its field.
pub(crate) fn located_errors(kind: &KindInfo, obj: &Value) -> Vec<(Vec<String>, FieldError)> {
    let root = of(kind);
    let mut out: Vec<(Vec<String>, FieldError)> = Vec::new();
    for e in validator(kind).iter_errors(obj) {
        let tokens: Vec<String> = e.instance_path().into_iter().map(|t| t.to_string()).collect();
        let (tokens, message) = match e.kind() {
            // A missing field is reported at the field, not at its parent.
            ValidationErrorKind::Required { property } => {
                let mut t = tokens.clone();
                t.push(property.as_str().unwrap_or_default().to_owned());
                (t, "required".to_owned())
            }
            // Unknown fields are found (and listed with what is known) by `unknown_fields`.
            ValidationErrorKind::AdditionalProperties { .. } => continue,
            kind => {
                let message = explain(kind, node_at(root, &tokens)).unwrap_or_else(|| e.masked().to_string());
                (tokens, message)
            }
        };
        let path = field_path(&tokens);
        // One message per field: nested `anyOf` branches report the same place many times.
        if !out.iter().any(|(_, f)| f.path == path) {
            out.push((tokens, FieldError { path, message }));
        }
    }
    out
}

/// The words of a hint for an error at a schema `node`, where one helps.
fn explain(kind: &ValidationErrorKind, node: Option<&Value>) -> Option<String> {
    let node = node?;
    if is_ref_to(node, "Quantity") {
        return Some(
            "not a quantity: write a number with an optional suffix, e.g. 500m, 2, 256Mi, 1G".into(),
        );
    }
    if let Some(options) = enumeration(node) {
        return Some(format!("must be one of {}", options.join(", ")));
    }
    match kind {
        ValidationErrorKind::Type { kind } => {
            let names: Vec<&str> = match kind {
                TypeKind::Single(t) => vec![type_name(&t.to_string())],
                TypeKind::Multiple(ts) => {
                    ts.iter().map(|t| type_name(&t.to_string())).filter(|t| *t != "null").collect()
                }
            };
            Some(format!("must be {}", names.join(" or ")))
        }
        _ => None,
    }
}

fn type_name(t: &str) -> &'static str {
    match t {
        "string" => "a string",
        "integer" => "an integer",
        "number" => "a number",
        "boolean" => "true or false",
        "array" => "a list",
        "object" => "a mapping",
        _ => "null",
    }
}

fn is_ref_to(node: &Value, def: &str) -> bool {
    node.get("$ref").and_then(Value::as_str).is_some_and(|r| r.ends_with(&format!("/{def}")))
        || node.get("anyOf").and_then(Value::as_array).is_some_and(|a| a.iter().any(|n| is_ref_to(n, def)))
}

/// The values an enumeration allows (`enum`, or `oneOf`/`anyOf` of `const`s).
fn enumeration(node: &Value) -> Option<Vec<String>> {
    if let Some(values) = node.get("enum").and_then(Value::as_array) {
        return Some(
            values
                .iter()
                .filter(|v| !v.is_null())
                .map(|v| v.as_str().map_or(v.to_string(), str::to_owned))
                .collect(),
        );
    }
    let branches = node.get("oneOf").or_else(|| node.get("anyOf"))?.as_array()?;
    let consts: Vec<String> = branches
        .iter()
        .filter_map(|b| b.get("const"))
        .map(|v| v.as_str().map_or(v.to_string(), str::to_owned))
        .collect();
    (!consts.is_empty() && consts.len() == branches.len()).then_some(consts)
}

/// A JSON pointer's tokens as a field path (`spec.env[0].value`).
fn field_path(tokens: &[String]) -> String {
    let mut path = FieldPath::root();
    for t in tokens {
        path = match t.parse::<usize>() {
            Ok(i) => path.index(i),
            Err(_) => path.child(t),
        };
    }
    path.to_string()
}

/// The schema node that describes the value at `tokens` (following `$ref`s into `$defs`, and
/// through the `anyOf` an optional field is wrapped in), if there is one.
fn node_at<'a>(root: &'a Value, tokens: &[String]) -> Option<&'a Value> {
    let resolve = |mut n: &'a Value| -> &'a Value {
        for _ in 0..8 {
            let target = n.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix("#/$defs/"));
            match target.and_then(|t| root.get("$defs")?.get(t)) {
                Some(next) => n = next,
                None => break,
            }
        }
        n
    };
    let unwrap_optional = |n: &'a Value| -> &'a Value {
        match n.get("anyOf").and_then(Value::as_array).map(Vec::as_slice) {
            Some([a, b]) if b.get("type") == Some(&Value::from("null")) => resolve(a),
            Some([a, b]) if a.get("type") == Some(&Value::from("null")) => resolve(b),
            _ => n,
        }
    };
    let mut node = root;
    for t in tokens {
        let here = unwrap_optional(resolve(node));
        node = match here.get("properties").and_then(|p| p.get(t.as_str())) {
            Some(n) => n,
            None => match here.get("items") {
                Some(items) if t.parse::<usize>().is_ok() => items,
                _ => here.get("additionalProperties").filter(|a| a.is_object())?,
            },
        };
    }
    // The node as written (a `$ref` to Quantity stays visible for `explain`), unless it is
    // only a reference to an enumeration.
    let resolved = unwrap_optional(resolve(node));
    Some(if enumeration(resolved).is_some() { resolved } else { node })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn every_problem_is_reported_with_a_hint_and_without_its_value() {
        let kind = kinds::by_kind("Workload").unwrap();
        let obj = json!({ "apiVersion": "univrs.io/v1", "kind": "Workload", "metadata": { "name": "w" },
            "spec": { "rootfs": "busybox", "replicas": "three", "restartPolicy": "Sometimes",
                      "resources": { "memory": "32MB", "cpu": "lots" }, "env": [{ "value": "s3cret" }] } });
        let errors = errors(kind, &obj);
        let got: Vec<String> = errors.iter().map(ToString::to_string).collect();
        for want in [
            "spec.replicas: must be an integer",
            "spec.restartPolicy: must be one of Always, OnFailure, Never",
            "spec.resources.memory: not a quantity: write a number with an optional suffix, e.g. 500m, 2, 256Mi, 1G",
            "spec.resources.cpu: not a quantity",
            "spec.env[0].name: required",
        ] {
            assert!(got.iter().any(|g| g.starts_with(want)), "{want:?} not in {got:#?}");
        }
        assert!(
            !got.iter().any(|g| g.contains("s3cret") || g.contains("32MB") || g.contains("three")),
            "{got:#?}"
        );
    }
}
