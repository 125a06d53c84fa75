//! Admission of an object's content, as explicit stages: its kind, unknown fields (per
//! `fieldValidation`), every problem of the content (`api::manifest::problems`: the JSON
//! Schema's, hinted and never with a value, then the typed validation's), the signature of
//! signed kinds, and its namespace and name. Who may write it is
//! [`crate::access`]'s, checked around these stages by the registry.

use api::schema::of as schema;
use api::signing::DEFAULT_NAMESPACE;
use api::{KindInfo, Scope};
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
    // The common case: valid as it is, so no unknown field to refuse, warn of or drop.
    if !api::manifest::is_valid(kind, obj) {
        unknown_fields(kind, obj, validation, warnings)?;
        // Stage 3: every problem of the content at once (the schema's, hinted and without
        // values; then the typed validation's), in the words `ui sign` and `ui apply` use too.
        let problems = api::manifest::problems(kind, obj);
        if !problems.is_empty() {
            return Err(invalid(obj, problems));
        }
    }
    if kind.signed && !access::is_control_plane_record(kind, obj) {
        access::check_signature(kind, obj)?;
    }
    if kind.kind == <api::kinds::AgentGrantSpec as api::KindSpec>::KIND {
        agent_acceptance(obj, warnings).map_err(|cause| invalid(obj, vec![cause]))?;
    }
    identity(kind, obj)
}

/// An AgentGrant's `spec.acceptance`, if given, is its agent's consent for this signer and
/// name; without one the grant is stored but gives nothing, and the writer is told.
fn agent_acceptance(obj: &Value, warnings: &mut Vec<String>) -> Result<(), api::FieldError> {
    let Ok(spec) = serde_json::from_value::<api::kinds::AgentGrantSpec>(obj["spec"].clone()) else {
        return Ok(());
    };
    let name = meta_str(obj, "name").unwrap_or_default();
    let owner = access::signer(obj).unwrap_or_default();
    let at = api::FieldPath::root().child("spec").child("acceptance");
    match &spec.acceptance {
        None => {
            warnings.push(format!(
                "AgentGrant {name} has no spec.acceptance: it gives the agent nothing until the agent accepts it (`ui agent accept --owner {owner} --grant {name}` in the agent's directory; `ui agent init` writes it)"
            ));
            Ok(())
        }
        Some(_) if spec.accepted_by_agent(owner, name) => Ok(()),
        Some(_) => Err(at.error(format!(
            "is not the agent's signature accepting to act for {owner} under the grant {name:?} (`ui agent accept --owner {owner} --grant {name}` in the agent's directory)"
        ))),
    }
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
            let unknown = api::unknown_fields::unknown_field_errors(schema(kind), obj);
            if !unknown.is_empty() {
                // Kubernetes' words (`unknown field "spec.x"`), and what is known there.
                let list: Vec<String> = unknown
                    .iter()
                    .map(|e| {
                        format!("unknown field {:?}{}", e.path, e.message.trim_start_matches("unknown field"))
                    })
                    .collect();
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
