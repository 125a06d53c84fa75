//! get, list, create, update and delete of objects.

use api::{KindInfo, Scope};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::table::Format;
use crate::registry::{ApiError, Registry};

type Result<T> = std::result::Result<T, ApiError>;

fn kind_of(plural: &str) -> Result<&'static KindInfo> {
    api::kinds::KINDS
        .iter()
        .find(|k| k.plural == plural)
        .ok_or_else(|| ApiError::NotFound { kind: "resource".into(), name: plural.into() })
}

fn namespaced(plural: &str) -> Result<&'static KindInfo> {
    let kind = kind_of(plural)?;
    match kind.scope {
        Scope::Namespaced => Ok(kind),
        Scope::Cluster => {
            Err(ApiError::NotFound { kind: "resource".into(), name: format!("namespaces/…/{plural}") })
        }
    }
}

fn cluster(plural: &str) -> Result<&'static KindInfo> {
    let kind = kind_of(plural)?;
    match kind.scope {
        Scope::Cluster => Ok(kind),
        Scope::Namespaced => {
            Err(ApiError::BadRequest(format!("{plural} are namespaced: use /namespaces/NAMESPACE/{plural}")))
        }
    }
}

/// Parses a JSON body and checks the namespace and name it names against the URL.
fn body(bytes: &Bytes, namespace: Option<&str>, name: Option<&str>) -> Result<Value> {
    let mut obj: Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::BadRequest(format!("the request body is not a JSON object: {e}")))?;
    let meta = obj
        .as_object_mut()
        .ok_or_else(|| ApiError::BadRequest("the request body is not a JSON object".into()))?
        .entry("metadata")
        .or_insert_with(|| json!({}));
    let meta =
        meta.as_object_mut().ok_or_else(|| ApiError::BadRequest("metadata must be an object".into()))?;
    if let Some(ns) = namespace {
        match meta.get("namespace").and_then(Value::as_str) {
            None | Some("") => {
                meta.insert("namespace".into(), ns.into());
            }
            Some(other) if other != ns => {
                return Err(ApiError::BadRequest(format!(
                    "the namespace of the provided object ({other}) does not match the namespace sent on the request ({ns})"
                )));
            }
            Some(_) => {}
        }
    }
    if let Some(name) = name
        && meta.get("name").and_then(Value::as_str) != Some(name)
    {
        return Err(ApiError::BadRequest(format!(
            "the name of the object does not match the name on the URL ({name})"
        )));
    }
    Ok(obj)
}

fn list_response(kind: &KindInfo, list: crate::registry::List, format: Format) -> Response {
    if let Some(table) = format.table_of_list(kind, &list.items, &list.revision.to_string()) {
        return table;
    }
    Json(json!({
        "apiVersion": api::API_VERSION,
        "kind": format!("{}List", kind.kind),
        "metadata": { "resourceVersion": list.revision.to_string() },
        "items": list.items,
    }))
    .into_response()
}

/// Delete options and preconditions, from the body or the query.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeleteOptions {
    #[serde(default)]
    preconditions: Option<Preconditions>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Preconditions {
    #[serde(default)]
    resource_version: Option<String>,
}

async fn delete(
    reg: &Registry,
    kind: &KindInfo,
    ns: Option<&str>,
    name: &str,
    bytes: &Bytes,
) -> Result<Response> {
    let options: DeleteOptions = if bytes.is_empty() {
        DeleteOptions::default()
    } else {
        serde_json::from_slice(bytes).map_err(|e| ApiError::BadRequest(format!("DeleteOptions: {e}")))?
    };
    let rv = match options.preconditions.and_then(|p| p.resource_version) {
        Some(rv) => Some(
            rv.parse().map_err(|_| ApiError::BadRequest(format!("preconditions.resourceVersion {rv:?}")))?,
        ),
        None => None,
    };
    let deleted = reg.delete(kind, ns, name, rv).await?;
    Ok(Json(json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
        "details": { "name": name, "group": api::GROUP, "kind": kind.plural, "uid": deleted["metadata"]["uid"] },
    }))
    .into_response())
}

pub async fn list_ns(
    State(reg): State<Registry>,
    Path((ns, plural)): Path<(String, String)>,
    format: Format,
) -> Result<Response> {
    let kind = namespaced(&plural)?;
    Ok(list_response(kind, reg.list(kind, Some(&ns)).await?, format))
}

pub async fn list_all(
    State(reg): State<Registry>,
    Path(plural): Path<String>,
    format: Format,
) -> Result<Response> {
    let kind = kind_of(&plural)?;
    Ok(list_response(kind, reg.list(kind, None).await?, format))
}

pub async fn create_ns(
    State(reg): State<Registry>,
    Path((ns, plural)): Path<(String, String)>,
    bytes: Bytes,
) -> Result<Response> {
    let kind = namespaced(&plural)?;
    let created = reg.create(kind, body(&bytes, Some(&ns), None)?).await?;
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

pub async fn create_cluster(
    State(reg): State<Registry>,
    Path(plural): Path<String>,
    bytes: Bytes,
) -> Result<Response> {
    let kind = cluster(&plural)?;
    let created = reg.create(kind, body(&bytes, None, None)?).await?;
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

pub async fn get_ns(
    State(reg): State<Registry>,
    Path((ns, plural, name)): Path<(String, String, String)>,
    format: Format,
) -> Result<Response> {
    let kind = namespaced(&plural)?;
    Ok(format.object(kind, reg.get(kind, Some(&ns), &name).await?))
}

pub async fn get_cluster(
    State(reg): State<Registry>,
    Path((plural, name)): Path<(String, String)>,
    format: Format,
) -> Result<Response> {
    let kind = cluster(&plural)?;
    Ok(format.object(kind, reg.get(kind, None, &name).await?))
}

pub async fn update_ns(
    State(reg): State<Registry>,
    Path((ns, plural, name)): Path<(String, String, String)>,
    bytes: Bytes,
) -> Result<Json<Value>> {
    let kind = namespaced(&plural)?;
    Ok(Json(reg.update(kind, body(&bytes, Some(&ns), Some(&name))?).await?))
}

pub async fn update_cluster(
    State(reg): State<Registry>,
    Path((plural, name)): Path<(String, String)>,
    bytes: Bytes,
) -> Result<Json<Value>> {
    let kind = cluster(&plural)?;
    Ok(Json(reg.update(kind, body(&bytes, None, Some(&name))?).await?))
}

pub async fn delete_ns(
    State(reg): State<Registry>,
    Path((ns, plural, name)): Path<(String, String, String)>,
    bytes: Bytes,
) -> Result<Response> {
    delete(&reg, namespaced(&plural)?, Some(&ns), &name, &bytes).await
}

pub async fn delete_cluster(
    State(reg): State<Registry>,
    Path((plural, name)): Path<(String, String)>,
    bytes: Bytes,
) -> Result<Response> {
    delete(&reg, cluster(&plural)?, None, &name, &bytes).await
}
