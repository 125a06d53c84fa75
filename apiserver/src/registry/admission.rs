//! Admission of an object's content, as explicit stages: its kind, unknown fields (per
//! `fieldValidation`), the JSON Schema (messages masked: never a value), the signature of
//! signed kinds, the typed validation, and its namespace and name. Who may write it is
//! [`crate::access`]'s, checked around these stages by the registry.

use std::collections::HashMap;
use std::sync::OnceLock;

use api::signing::DEFAULT_NAMESPACE;
use api::{FieldError, KindInfo, Scope};
use serde_json::Value;

use super::meta::{meta_mut, meta_str};
use super::{ApiError, FieldValidation};
use crate::access;

/// Checks `obj` as an object of `kind`, stage by stage, and returns its namespace (defaulted)
/// and name. Unknown fields are refused, pruned with a warning, or pruned, per `validation`.
pub(crate) fn admit(
    kind: &KindInfo,
    obj: &mut Value,
    validation: FieldValidation,
    warnings: &mut Vec<String>,
) -> Result<(Option<String>, String), ApiError> {
    let label = |o: &Value| meta_str(o, "name").unwrap_or_default().to_owned();
    let invalid = |o: &Value, causes| ApiError::Invalid { kind: kind.kind.into(), name: label(o), causes };
    if !obj.is_object() {
        return Err(ApiError::BadRequest("the object is not a JSON object".into()));
    }
    check_kind(kind, obj)?;
    unknown_fields(kind, obj, validation, warnings)?;
    schema_errors(kind, obj).map_err(|c| invalid(obj, c))?;
    if kind.signed {
        access::check_signature(kind, obj)?;
    }
    (kind.check)(obj).map_err(|c| invalid(obj, c))?;
    identity(kind, obj)
}

/// Stage 1: the object is of the kind the request is for.
fn check_kind(kind: &KindInfo, obj: &Value) -> Result<(), ApiError> {
    match api::manifest::kind_of(obj) {
        Ok(k) if k.kind == kind.kind => Ok(()),
        Ok(k) => Err(ApiError::BadRequest(format!(
            "the object is a {}, but the request is for {}",
            k.kind, kind.plural
        ))),
        Err(causes) => Err(ApiError::Invalid {
            kind: kind.kind.into(),
            name: meta_str(obj, "name").unwrap_or_default().into(),
            causes,
        }),
    }
}

/// Stage 2: fields the schema does not know.
fn unknown_fields(
    kind: &KindInfo,
    obj: &mut Value,
    validation: FieldValidation,
    warnings: &mut Vec<String>,
) -> Result<(), ApiError> {
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
    Ok(())
}

/// Stage 3: the JSON Schema. Masked: a message never repeats a value (it may come from a
/// stored object).
fn schema_errors(kind: &KindInfo, obj: &Value) -> Result<(), Vec<FieldError>> {
    let causes: Vec<FieldError> = validator(kind)
        .iter_errors(obj)
        .map(|e| FieldError {
            path: field_path(&e.instance_path().to_string()),
            message: e.masked().to_string(),
        })
        .collect();
    if causes.is_empty() { Ok(()) } else { Err(causes) }
}

/// Last stage: the namespace (defaulted for namespaced kinds) and the name.
fn identity(kind: &KindInfo, obj: &mut Value) -> Result<(Option<String>, String), ApiError> {
    let namespace = match kind.scope {
        Scope::Namespaced => {
            let ns =
                meta_str(obj, "namespace").filter(|s| !s.is_empty()).unwrap_or(DEFAULT_NAMESPACE).to_owned();
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
