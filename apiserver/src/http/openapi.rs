//! OpenAPI v3 of `univrs.io/v1` (`/openapi/v3` and `/openapi/v3/apis/univrs.io/v1`), generated
//! from the kinds' JSON Schemas.
//!
//! kubectl reads it for three things. `kubectl explain` renders field docs from
//! `components.schemas`, finding a kind's schema by its `x-kubernetes-group-version-kind`.
//! `kubectl create/apply/replace` look for a `fieldValidation` query parameter on the kind's
//! PATCH operation: when it is there they leave validation to the server (sending
//! `fieldValidation=Strict`); when it is not they validate on the client against `/openapi/v2`,
//! which univrs does not serve, and refuse to send anything. And `kubectl apply` sends a strategic
//! merge patch only when the PATCH operation lists that content type, which is why it is left out:
//! this server does not implement strategic merge.
//!
//! The document is pure data derived from [`api::kinds::KINDS`]: [`document`] builds it, and it is
//! serialized and hashed once per process. kubectl caches it on disk under the URL carrying the
//! hash, so a server with different kinds gets a different URL and never a stale cached copy.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use api::{KindInfo, Scope};
use axum::body::Bytes;
use axum::extract::RawQuery;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

/// The key of the group-version document in `/openapi/v3`.
const GV_PATH: &str = "apis/univrs.io/v1";
/// Prefix of the schemas of univrs types (Kubernetes names schemas by reversed domain).
const PREFIX: &str = "io.univrs.v1";
/// Prefix of the metadata types, named as Kubernetes names them.
const META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1";
/// `api::meta` types that mirror `k8s.io/apimachinery/pkg/apis/meta/v1`: they get their Kubernetes
/// names, which is where people (and tools) look for `metadata` fields.
const META_DEFS: [&str; 4] = ["ObjectMeta", "OwnerReference", "ManagedFieldsEntry", "Time"];

/// The document and its hash, computed once.
struct Served {
    body: Bytes,
    hash: String,
}

/// The kinds of `univrs.io/v1`, the one group version this document describes (Events,
/// `events.k8s.io/v1`, are not in it: `kubectl events` and `describe` need no OpenAPI).
fn univrs_kinds() -> Vec<KindInfo> {
    api::kinds::in_group_version(api::API_VERSION).copied().collect()
}

fn served() -> &'static Served {
    static SERVED: OnceLock<Served> = OnceLock::new();
    SERVED.get_or_init(|| {
        let body = document(&univrs_kinds()).to_string();
        let hash = format!("{:X}", Sha256::digest(body.as_bytes()));
        Served { body: Bytes::from(body), hash }
    })
}

/// `GET /openapi/v3`: where each group-version document is, pinned by its hash.
pub async fn root() -> Response {
    let url = format!("/openapi/v3/{GV_PATH}?hash={}", served().hash);
    let body = json!({ "paths": { GV_PATH: { "serverRelativeURL": url } } });
    // The index names the current hash, so it must never be served from a cache.
    ([(CACHE_CONTROL, "no-cache, private")], axum::Json(body)).into_response()
}

/// `GET /openapi/v3/apis/univrs.io/v1`. Served whatever `hash` asks for (as the content can only
/// be this one); cacheable forever only under the URL of its own hash.
pub async fn group_version(headers: HeaderMap, RawQuery(query): RawQuery) -> Response {
    let served = served();
    let etag = format!("\"{}\"", served.hash);
    let wanted = format!("hash={}", served.hash);
    let pinned = query.as_deref().is_some_and(|q| q.split('&').any(|kv| kv == wanted));
    let cache = if pinned { "public, immutable, max-age=31536000" } else { "no-cache, private" };
    let matches = headers
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    if matches {
        return (StatusCode::NOT_MODIFIED, [(ETAG, etag), (CACHE_CONTROL, cache.to_owned())]).into_response();
    }
    let headers =
        [(CONTENT_TYPE, "application/json".to_owned()), (ETAG, etag), (CACHE_CONTROL, cache.to_owned())];
    (StatusCode::OK, headers, served.body.clone()).into_response()
}

/// The OpenAPI 3.0 document of `univrs.io/v1` serving `kinds`.
pub fn document(kinds: &[KindInfo]) -> Value {
    let roots: Vec<(&KindInfo, Value, Map<String, Value>)> = kinds
        .iter()
        .map(|kind| {
            let mut root = (kind.schema)().to_value();
            let defs = match root.as_object_mut().and_then(|r| r.remove("$defs")) {
                Some(Value::Object(defs)) => defs,
                _ => Map::new(),
            };
            (kind, root, defs)
        })
        .collect();
    let shared = shared_defs(roots.iter().map(|(_, _, defs)| defs));

    let mut schemas = standard_schemas();
    for (kind, root, defs) in &roots {
        let name_of = |def: &str| def_name(kind.kind, def, &shared);
        for (def, schema) in defs {
            insert(&mut schemas, name_of(def), convert(schema, &name_of));
        }
        let mut root = root.clone();
        describe_object_fields(&mut root);
        insert(&mut schemas, format!("{PREFIX}.{}", kind.kind), convert(&root, &name_of));
        insert(&mut schemas, format!("{PREFIX}.{}List", kind.kind), list_schema(kind));
    }
    let mut paths = Map::new();
    for kind in kinds {
        paths.extend(kind_paths(kind));
    }
    json!({
        "openapi": "3.0.0",
        "info": { "title": "univrs", "version": api::API_VERSION },
        "paths": paths,
        "components": { "schemas": schemas },
    })
}

/// Adds a schema; a name is given to one content only (the naming in [`def_name`] ensures it, and
/// a test checks it).
fn insert(schemas: &mut Map<String, Value>, name: String, schema: Value) {
    debug_assert!(schemas.get(&name).is_none_or(|old| *old == schema), "two schemas named {name}");
    schemas.entry(name).or_insert(schema);
}

/// The component name of `$defs/def` of `kind`: shared definitions keep one name; those whose
/// content differs between kinds (`Condition` of each kind's condition types) get the kind's.
fn def_name(kind: &str, def: &str, shared: &BTreeSet<String>) -> String {
    if !shared.contains(def) {
        format!("{PREFIX}.{kind}.{def}")
    } else if META_DEFS.contains(&def) {
        format!("{META}.{def}")
    } else {
        format!("{PREFIX}.{def}")
    }
}

/// Names of definitions that are identical in every kind that has them and refer only to
/// definitions that are themselves shared (a fixpoint: a `Condition` that looks the same but
/// refers to a different `ConditionType` must not be merged).
fn shared_defs<'a>(all: impl Iterator<Item = &'a Map<String, Value>>) -> BTreeSet<String> {
    let mut versions: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
    for defs in all {
        for (name, schema) in defs {
            versions.entry(name).or_default().push(schema);
        }
    }
    let mut shared: BTreeSet<String> = versions
        .iter()
        .filter(|(_, v)| v.windows(2).all(|w| w[0] == w[1]))
        .map(|(name, _)| (*name).to_owned())
        .collect();
    loop {
        let unshared: Vec<String> = shared
            .iter()
            .filter(|name| {
                versions[name.as_str()].iter().any(|s| def_refs(s).iter().any(|r| !shared.contains(r)))
            })
            .cloned()
            .collect();
        if unshared.is_empty() {
            return shared;
        }
        for name in unshared {
            shared.remove(&name);
        }
    }
}

/// The `$defs` names a schema refers to.
fn def_refs(schema: &Value) -> Vec<String> {
    let mut refs = Vec::new();
    fn walk(v: &Value, refs: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v.as_str().and_then(|r| r.strip_prefix("#/$defs/"))) {
                        ("$ref", Some(name)) => refs.push(name.to_owned()),
                        _ => walk(v, refs),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|v| walk(v, refs)),
            _ => {}
        }
    }
    walk(schema, &mut refs);
    refs
}

/// A draft 2020-12 schema as OpenAPI 3.0 (what kube-openapi and kubectl parse): refs into
/// `components`, `type: [X, "null"]` as `nullable`, `const` as a one-value `enum`, one-of-consts
/// as an `enum` whose values are explained in the description (as Kubernetes does), and a `$ref`
/// with siblings wrapped in `allOf` (OpenAPI 3.0 ignores the siblings of a `$ref`).
fn convert(schema: &Value, name_of: &dyn Fn(&str) -> String) -> Value {
    let Value::Object(obj) = schema else { return schema.clone() };
    let mut out = Map::new();
    for (key, value) in obj {
        let converted = match key.as_str() {
            "$schema" | "$defs" => continue,
            "$ref" => match value.as_str().and_then(|r| r.strip_prefix("#/$defs/")) {
                Some(def) => Value::String(format!("#/components/schemas/{}", name_of(def))),
                None => value.clone(),
            },
            "properties" | "patternProperties" => match value {
                Value::Object(props) => {
                    Value::Object(props.iter().map(|(k, v)| (k.clone(), convert(v, name_of))).collect())
                }
                other => other.clone(),
            },
            "items" | "additionalProperties" | "not" => convert(value, name_of),
            "allOf" | "anyOf" | "oneOf" => match value {
                Value::Array(branches) => {
                    Value::Array(branches.iter().map(|b| convert(b, name_of)).collect())
                }
                other => other.clone(),
            },
            "const" => {
                out.insert("enum".into(), json!([value]));
                continue;
            }
            "description" => match value.as_str() {
                Some(text) => reflow(text).into(),
                None => value.clone(),
            },
            _ => value.clone(),
        };
        out.insert(key.clone(), converted);
    }
    nullable_type(&mut out);
    for key in ["anyOf", "oneOf"] {
        nullable_branches(&mut out, key);
        enum_of_consts(&mut out, key);
    }
    if out.contains_key("$ref") && out.len() > 1 {
        let reference = out.remove("$ref").unwrap_or_default();
        out.insert("allOf".into(), json!([{ "$ref": reference }]));
    }
    Value::Object(out)
}

/// Joins the lines of each paragraph of a doc comment: rustdoc keeps the source's line breaks,
/// and kubectl would print them in the middle of its own wrapped lines.
fn reflow(text: &str) -> String {
    text.split("\n\n")
        .map(|p| p.split('\n').map(str::trim).collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// `type: [X, "null"]` → `type: X, nullable: true`.
fn nullable_type(out: &mut Map<String, Value>) {
    let Some(Value::Array(types)) = out.get("type") else { return };
    let non_null: Vec<Value> = types.iter().filter(|t| t.as_str() != Some("null")).cloned().collect();
    if non_null.len() < types.len() {
        out.insert("nullable".into(), true.into());
    }
    match non_null.as_slice() {
        [one] => {
            out.insert("type".into(), one.clone());
        }
        _ => {
            let branches: Vec<Value> = non_null.iter().map(|t| json!({ "type": t })).collect();
            out.remove("type");
            out.insert("anyOf".into(), branches.into());
        }
    }
}

/// `anyOf: [S, {type: null}]` → S's content (a lone `$ref` in `allOf`) with `nullable: true`.
fn nullable_branches(out: &mut Map<String, Value>, key: &str) {
    let Some(Value::Array(branches)) = out.get(key) else { return };
    let null = json!({ "type": "null" });
    if !branches.contains(&null) {
        return;
    }
    let rest: Vec<Value> = branches.iter().filter(|b| **b != null).cloned().collect();
    out.insert("nullable".into(), true.into());
    match rest.as_slice() {
        [Value::Object(only)] => {
            out.remove(key);
            if only.len() == 1 && only.contains_key("$ref") {
                out.insert("allOf".into(), json!([only]));
            } else {
                for (k, v) in only {
                    out.entry(k.clone()).or_insert_with(|| v.clone());
                }
            }
        }
        _ => {
            out.insert(key.into(), rest.into());
        }
    }
}

/// `oneOf` of single-value string enums (a Rust enum) → one `enum`, each value's doc appended to
/// the description as Kubernetes writes it ("Possible enum values: …").
fn enum_of_consts(out: &mut Map<String, Value>, key: &str) {
    let Some(Value::Array(branches)) = out.get(key) else { return };
    let mut values = Vec::new();
    let mut docs = Vec::new();
    for b in branches {
        match b.get("enum").and_then(Value::as_array).map(Vec::as_slice) {
            Some([v @ Value::String(s)]) => {
                values.push(v.clone());
                let doc = b.get("description").and_then(Value::as_str).unwrap_or_default();
                docs.push(format!(" - `\"{s}\"` {doc}").trim_end().to_owned());
            }
            _ => return,
        }
    }
    out.remove(key);
    out.insert("type".into(), "string".into());
    out.insert("enum".into(), values.into());
    let description = out.get("description").and_then(Value::as_str).unwrap_or_default();
    let description = format!("{description}\n\nPossible enum values:\n{}", docs.join("\n"));
    out.insert("description".into(), description.trim_start().to_owned().into());
}

/// Descriptions of the top-level fields, which the generated schema leaves bare.
fn describe_object_fields(root: &mut Value) {
    let docs = [
        ("apiVersion", "The versioned schema of this representation of an object: always `univrs.io/v1`."),
        ("kind", "The type of this object, in CamelCase."),
        (
            "metadata",
            "Standard object metadata: name, namespace, labels, annotations (where the univrs \
             signature lives) and the fields the server owns.",
        ),
        ("spec", "Desired state, written by the object's owner."),
        ("status", "Observed state, written by controllers and agents through the status subresource."),
    ];
    for (field, doc) in docs {
        if let Some(Value::Object(prop)) = root.pointer_mut(&format!("/properties/{field}")) {
            prop.entry("description").or_insert_with(|| doc.into());
        }
    }
}

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// `<Kind>List`, what a list returns.
fn list_schema(kind: &KindInfo) -> Value {
    json!({
        "description": format!("A list of {} objects.", kind.kind),
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": { "type": "string", "description": "Always `univrs.io/v1`." },
            "kind": { "type": "string", "description": format!("Always `{}List`.", kind.kind) },
            "metadata": {
                "allOf": [schema_ref(&format!("{META}.ListMeta"))],
                "description": "Standard list metadata.",
            },
            "items": { "type": "array", "items": schema_ref(&format!("{PREFIX}.{}", kind.kind)) },
        },
        "x-kubernetes-group-version-kind": [gvk(&format!("{}List", kind.kind))],
    })
}

fn gvk(kind: &str) -> Value {
    json!({ "group": api::GROUP, "version": api::VERSION, "kind": kind })
}

/// The `meta/v1` types the operations refer to.
fn standard_schemas() -> Map<String, Value> {
    let string = |d: &str| json!({ "type": "string", "description": d });
    let mut m = Map::new();
    m.insert(
        format!("{META}.ListMeta"),
        json!({
            "description": "Metadata of a list.",
            "type": "object",
            "properties": {
                "resourceVersion":
                    string("The revision the list was read at; watch from it to see every later change."),
                "continue":
                    string("Set when the list is partial: pass it as `continue` to get the next page."),
                "remainingItemCount": {
                    "type": "integer", "format": "int64",
                    "description": "How many items the next pages hold, when known.",
                },
            },
        }),
    );
    m.insert(
        format!("{META}.Patch"),
        json!({
            "type": "object",
            "description": "The body of a PATCH request, in the format its Content-Type names.",
        }),
    );
    m.insert(
        format!("{META}.Preconditions"),
        json!({
            "description": "Conditions a deletion requires.",
            "type": "object",
            "properties": {
                "resourceVersion": string("Delete only if the object is still at this revision."),
                "uid": string("Delete only if the object still has this uid."),
            },
        }),
    );
    m.insert(
        format!("{META}.DeleteOptions"),
        json!({
            "description": "Options of a deletion.",
            "type": "object",
            "properties": {
                "apiVersion": string("`v1`."),
                "kind": string("`DeleteOptions`."),
                "preconditions": {
                    "allOf": [schema_ref(&format!("{META}.Preconditions"))],
                    "description": "Conditions the deletion requires.",
                },
                "dryRun": {
                    "type": "array", "items": { "type": "string" },
                    "description": "`All` to check the request without persisting it.",
                },
                "gracePeriodSeconds": {
                    "type": "integer", "format": "int64",
                    "description": "Seconds before the object is deleted.",
                },
                "propagationPolicy": string(
                    "How dependents are garbage-collected: `Orphan`, `Background` or `Foreground`."
                ),
            },
            "x-kubernetes-group-version-kind": [{ "group": "", "version": "v1", "kind": "DeleteOptions" }],
        }),
    );
    m.insert(
        format!("{META}.StatusCause"),
        json!({
            "description": "One cause of a failure.",
            "type": "object",
            "properties": {
                "field": string("The field path of the problem, e.g. `spec.replicas`."),
                "message": string("What is wrong, for people."),
                "reason": string("A machine-readable reason, e.g. `FieldValueInvalid`."),
            },
        }),
    );
    m.insert(
        format!("{META}.Status"),
        json!({
            "description": "The result of a request that does not return an object, and every error.",
            "type": "object",
            "properties": {
                "apiVersion": string("`v1`."),
                "kind": string("`Status`."),
                "status": string("`Success` or `Failure`."),
                "message": string("What happened, for people."),
                "reason": string("A machine-readable reason, e.g. `NotFound`, `AlreadyExists`, `Invalid`."),
                "code": { "type": "integer", "format": "int32", "description": "The HTTP status code." },
                "details": {
                    "type": "object",
                    "description": "The object the status is about and the causes of a failure.",
                    "properties": {
                        "name": string("Name of the object."),
                        "group": string("API group of the object."),
                        "kind": string("Kind of the object."),
                        "uid": string("Uid of the object."),
                        "causes": { "type": "array", "items": schema_ref(&format!("{META}.StatusCause")) },
                    },
                },
                "metadata": {
                    "allOf": [schema_ref(&format!("{META}.ListMeta"))],
                    "description": "Standard list metadata.",
                },
            },
            "x-kubernetes-group-version-kind": [{ "group": "", "version": "v1", "kind": "Status" }],
        }),
    );
    m
}

fn query(name: &str, ty: &str, description: &str) -> Value {
    json!({ "name": name, "in": "query", "description": description, "schema": { "type": ty } })
}

fn path_param(name: &str, description: &str) -> Value {
    json!({
        "name": name, "in": "path", "required": true, "description": description,
        "schema": { "type": "string" },
    })
}

fn write_params() -> Vec<Value> {
    vec![
        query("dryRun", "string", "`All` to check the request without persisting anything."),
        query("fieldManager", "string", "Name of the actor making the change."),
        query(
            "fieldValidation",
            "string",
            "What to do with unknown or duplicate fields: `Ignore`, `Warn` or `Strict`. univrs always \
             rejects unknown fields.",
        ),
    ]
}

fn list_params() -> Vec<Value> {
    vec![
        query("allowWatchBookmarks", "boolean", "Ask for BOOKMARK events in a watch."),
        query("continue", "string", "The `continue` token of the previous page."),
        query("fieldSelector", "string", "Select objects by fields, e.g. `metadata.name=hello`."),
        query("labelSelector", "string", "Select objects by labels, e.g. `app=hello,tier!=db`."),
        query("limit", "integer", "Return at most this many items, and a `continue` token for the rest."),
        query("resourceVersion", "string", "Read at (or watch from) this revision."),
        query("resourceVersionMatch", "string", "How `resourceVersion` applies: `Exact` or `NotOlderThan`."),
        query("sendInitialEvents", "boolean", "Start a watch with ADDED events for the current objects."),
        query("timeoutSeconds", "integer", "End a list or watch after this many seconds."),
        query("watch", "boolean", "Stream changes (ADDED, MODIFIED, DELETED) instead of listing."),
    ]
}

fn json_content(schema: Value) -> Value {
    json!({ "application/json": { "schema": schema } })
}

/// One operation, tagged as kubectl looks for it.
struct Op<'a> {
    kind: &'a KindInfo,
    id: String,
    action: &'static str,
    description: String,
    params: Vec<Value>,
    body: Option<Value>,
    responses: Value,
}

impl Op<'_> {
    fn build(self) -> Value {
        let mut op = json!({
            "tags": ["univrsIo_v1"],
            "description": self.description,
            "operationId": self.id,
            "responses": self.responses,
            "x-kubernetes-action": self.action,
            "x-kubernetes-group-version-kind": gvk(self.kind.kind),
        });
        if !self.params.is_empty() {
            op["parameters"] = self.params.into();
        }
        if let Some(body) = self.body {
            op["requestBody"] = json!({ "content": body, "required": true });
        }
        op
    }
}

/// The paths of one kind: its collection, its items, their `status` subresource and, for a
/// namespaced kind, the list across namespaces.
fn kind_paths(kind: &KindInfo) -> Vec<(String, Value)> {
    let base = format!("/apis/{}", api::API_VERSION);
    let namespaced = kind.scope == Scope::Namespaced;
    let (collection, scope) = if namespaced {
        (format!("{base}/namespaces/{{namespace}}/{}", kind.plural), "Namespaced")
    } else {
        (format!("{base}/{}", kind.plural), "")
    };
    let id = |verb: &str, suffix: &str| format!("{verb}UnivrsIoV1{scope}{}{suffix}", kind.kind);
    let object = schema_ref(&format!("{PREFIX}.{}", kind.kind));
    let list = schema_ref(&format!("{PREFIX}.{}List", kind.kind));
    let status = schema_ref(&format!("{META}.Status"));
    let ok = |schema: &Value| json!({ "description": "OK", "content": json_content(schema.clone()) });
    let read = json!({ "200": ok(&object), "401": { "description": "Unauthorized" } });
    let written = json!({
        "200": ok(&object),
        "201": { "description": "Created", "content": json_content(object.clone()) },
        "401": { "description": "Unauthorized" },
    });
    let patch_body: Map<String, Value> =
        ["application/json-patch+json", "application/merge-patch+json", "application/apply-patch+yaml"]
            .into_iter()
            .map(|t| (t.to_owned(), json!({ "schema": schema_ref(&format!("{META}.Patch")) })))
            .collect();
    let mut patch_params = write_params();
    patch_params.push(query("force", "boolean", "Take over fields other managers own (server-side apply)."));

    let mut scope_params = Vec::new();
    if namespaced {
        scope_params.push(path_param("namespace", "Namespace of the objects."));
    }
    let mut item_params = scope_params.clone();
    item_params.push(path_param("name", &format!("Name of the {}.", kind.kind)));

    let op = |id: String, action, description: String, params: Vec<Value>, body, responses: &Value| {
        Op { kind, id, action, description, params, body, responses: responses.clone() }.build()
    };
    let k = kind.kind;
    let mut paths = vec![
        (
            collection.clone(),
            json!({
                "parameters": scope_params,
                "get": op(id("list", ""), "list", format!("list or watch {k} objects"), list_params(), None,
                    &json!({ "200": ok(&list), "401": { "description": "Unauthorized" } })),
                "post": op(id("create", ""), "post", format!("create a {k}"), write_params(),
                    Some(json_content(object.clone())), &written),
            }),
        ),
        (
            format!("{collection}/{{name}}"),
            json!({
                "parameters": item_params,
                "get": op(id("read", ""), "get", format!("read the specified {k}"), vec![], None, &read),
                "put": op(id("replace", ""), "put", format!("replace the specified {k}"), write_params(),
                    Some(json_content(object.clone())), &written),
                "patch": op(id("patch", ""), "patch", format!("partially update the specified {k}"),
                    patch_params.clone(), Some(patch_body.clone().into()), &written),
                "delete": op(id("delete", ""), "delete", format!("delete a {k}"),
                    vec![
                        query("dryRun", "string", "`All` to check the request without deleting anything."),
                        query("gracePeriodSeconds", "integer", "Seconds before the object is deleted."),
                        query("propagationPolicy", "string", "`Orphan`, `Background` or `Foreground`."),
                    ],
                    Some(json_content(schema_ref(&format!("{META}.DeleteOptions")))),
                    &json!({
                        "200": ok(&status),
                        "202": { "description": "Accepted", "content": json_content(status.clone()) },
                        "401": { "description": "Unauthorized" },
                    })),
            }),
        ),
        (
            format!("{collection}/{{name}}/status"),
            json!({
                "parameters": item_params,
                "get": op(id("read", "Status"), "get", format!("read status of the specified {k}"),
                    vec![], None, &read),
                "put": op(id("replace", "Status"), "put", format!("replace status of the specified {k}"),
                    write_params(), Some(json_content(object.clone())), &written),
                "patch": op(id("patch", "Status"), "patch",
                    format!("partially update status of the specified {k}"),
                    patch_params, Some(patch_body.into()), &written),
            }),
        ),
    ];
    if namespaced {
        paths.push((
            format!("{base}/{}", kind.plural),
            json!({
                "get": op(format!("listUnivrsIoV1{k}ForAllNamespaces"), "list",
                    format!("list or watch {k} objects in every namespace"), list_params(), None,
                    &json!({ "200": ok(&list), "401": { "description": "Unauthorized" } })),
            }),
        ));
    }
    paths
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walk<'a>(v: &'a Value, f: &mut dyn FnMut(&'a Map<String, Value>)) {
        match v {
            Value::Object(m) => {
                f(m);
                m.values().for_each(|v| walk(v, f));
            }
            Value::Array(a) => a.iter().for_each(|v| walk(v, f)),
            _ => {}
        }
    }

    #[test]
    fn every_ref_resolves_inside_the_document() {
        let doc = document(&univrs_kinds());
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        let mut refs = 0;
        walk(&doc, &mut |m| {
            if let Some(r) = m.get("$ref") {
                let name = r.as_str().and_then(|r| r.strip_prefix("#/components/schemas/"));
                let name = name.unwrap_or_else(|| panic!("{r} does not point into components.schemas"));
                assert!(schemas.contains_key(name), "{r} names no schema");
                assert_eq!(m.len(), 1, "a $ref with siblings (ignored by OpenAPI 3.0): {m:?}");
                refs += 1;
            }
        });
        assert!(refs > 100, "only {refs} refs");
    }

    #[test]
    fn no_draft_2020_12_construct_is_left() {
        let doc = document(&univrs_kinds());
        walk(&doc["components"], &mut |m| {
            for key in ["$defs", "$schema", "const"] {
                assert!(!m.contains_key(key), "{key} left in {m:?}");
            }
            if let Some(t) = m.get("type") {
                assert!(t.is_string() || t.is_object(), "type {t} is not one OpenAPI 3.0 type");
            }
            for key in ["anyOf", "oneOf"] {
                if let Some(Value::Array(branches)) = m.get(key) {
                    assert!(!branches.contains(&json!({ "type": "null" })), "a null branch in {m:?}");
                }
            }
        });
        let text = doc.to_string();
        assert!(!text.contains("#/$defs/"), "a ref into $defs is left");
    }

    #[test]
    fn every_kind_has_its_gvk_schema_and_patch_with_field_validation() {
        let doc = document(&univrs_kinds());
        for kind in &univrs_kinds() {
            let schema = &doc["components"]["schemas"][format!("{PREFIX}.{}", kind.kind)];
            assert_eq!(schema["x-kubernetes-group-version-kind"], json!([gvk(kind.kind)]), "{}", kind.kind);
            assert!(schema["properties"]["spec"].is_object(), "{}", kind.kind);

            let mut patches = 0;
            for (path, item) in doc["paths"].as_object().unwrap() {
                let Some(patch) = item.get("patch") else { continue };
                if patch["x-kubernetes-group-version-kind"] != gvk(kind.kind) {
                    continue;
                }
                assert!(path.contains(&format!("/{}/{{name}}", kind.plural)), "{path}");
                assert_eq!(patch["x-kubernetes-action"], "patch");
                let params = patch["parameters"].as_array().unwrap();
                for name in ["fieldValidation", "dryRun", "fieldManager", "force"] {
                    assert!(
                        params.iter().any(|p| p["name"] == name && p["in"] == "query"),
                        "{path}: PATCH lacks {name}"
                    );
                }
                let content = patch["requestBody"]["content"].as_object().unwrap();
                assert!(content.contains_key("application/merge-patch+json"));
                assert!(content.contains_key("application/apply-patch+yaml"));
                assert!(!content.contains_key("application/strategic-merge-patch+json"));
                patches += 1;
            }
            assert_eq!(patches, 2, "{}: the object and its status", kind.kind);
        }
    }

    #[test]
    fn paths_follow_the_scope_of_each_kind() {
        let doc = document(&univrs_kinds());
        let paths = &doc["paths"];
        let wl = "/apis/univrs.io/v1/namespaces/{namespace}/workloads";
        assert_eq!(paths[wl]["get"]["x-kubernetes-action"], "list");
        assert_eq!(paths[wl]["post"]["x-kubernetes-action"], "post");
        assert_eq!(paths[format!("{wl}/{{name}}")]["put"]["x-kubernetes-action"], "put");
        assert_eq!(paths[format!("{wl}/{{name}}")]["delete"]["x-kubernetes-action"], "delete");
        assert_eq!(paths[format!("{wl}/{{name}}/status")]["get"]["x-kubernetes-action"], "get");
        assert!(paths["/apis/univrs.io/v1/workloads"]["get"].is_object());
        let list = paths[wl]["get"]["parameters"].as_array().unwrap();
        for name in ["labelSelector", "fieldSelector", "limit", "continue", "watch", "sendInitialEvents"] {
            assert!(list.iter().any(|p| p["name"] == name), "list lacks {name}");
        }
        let node = "/apis/univrs.io/v1/nodes";
        assert_eq!(paths[node]["post"]["x-kubernetes-group-version-kind"], gvk("Node"));
        assert!(paths[format!("{node}/{{name}}/status")]["patch"].is_object());
        assert!(paths.get("/apis/univrs.io/v1/namespaces/{namespace}/nodes").is_none());
    }

    #[test]
    fn metadata_is_kubernetes_object_meta_and_enums_are_explained() {
        let doc = document(&univrs_kinds());
        let schemas = &doc["components"]["schemas"];
        let wl = &schemas["io.univrs.v1.Workload"];
        assert_eq!(
            wl["properties"]["metadata"]["allOf"][0]["$ref"],
            "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
        );
        assert!(wl["properties"]["metadata"]["description"].is_string());
        assert_eq!(wl["properties"]["apiVersion"]["enum"], json!(["univrs.io/v1"]));
        let meta = &schemas[format!("{META}.ObjectMeta")];
        assert_eq!(meta["properties"]["name"]["type"], "string");
        assert_eq!(meta["properties"]["name"]["nullable"], true);
        let restart = &schemas["io.univrs.v1.RestartPolicy"];
        assert_eq!(restart["enum"], json!(["Always", "OnFailure", "Never"]));
        assert!(restart["description"].as_str().unwrap().contains("Possible enum values"));
        let meta_doc = meta["description"].as_str().unwrap();
        assert!(meta_doc.contains("fills the server-owned"), "lines of a paragraph are joined: {meta_doc}");
        // Each kind's Condition refers to its own condition types, so each keeps its own.
        let wc = &schemas["io.univrs.v1.Workload.Condition"]["properties"]["type"]["allOf"][0]["$ref"];
        assert_eq!(wc, "#/components/schemas/io.univrs.v1.WorkloadConditionType");
        assert!(schemas.get("io.univrs.v1.Condition").is_none());
    }

    #[test]
    fn shared_definition_names_never_collide_with_kinds() {
        let kinds = &api::kinds::KINDS;
        let defs: Vec<Map<String, Value>> = kinds
            .iter()
            .map(|k| match (k.schema)().to_value().get("$defs") {
                Some(Value::Object(d)) => d.clone(),
                _ => Map::new(),
            })
            .collect();
        let shared = shared_defs(defs.iter());
        for k in kinds {
            assert!(!shared.contains(k.kind) && !shared.contains(&format!("{}List", k.kind)), "{}", k.kind);
        }
        // The same name never carries two contents: building twice yields one document.
        assert_eq!(document(kinds), document(kinds));
    }

    #[tokio::test]
    async fn the_index_pins_the_document_by_its_hash_and_etag_revalidates() {
        let hash = &served().hash;
        assert_eq!(hash.len(), 64);
        assert!(hash.chars().all(|c| c.is_ascii_digit() || c.is_ascii_uppercase()));

        let root = root().await;
        let body = axum::body::to_bytes(root.into_body(), usize::MAX).await.unwrap();
        let root: Value = serde_json::from_slice(&body).unwrap();
        let url = root["paths"][GV_PATH]["serverRelativeURL"].as_str().unwrap();
        assert_eq!(url, format!("/openapi/v3/apis/univrs.io/v1?hash={hash}"));

        let pinned = group_version(HeaderMap::new(), RawQuery(Some(format!("hash={hash}")))).await;
        assert_eq!(pinned.status(), StatusCode::OK);
        assert!(pinned.headers()[CACHE_CONTROL].to_str().unwrap().contains("immutable"));
        assert_eq!(pinned.headers()[ETAG], format!("\"{hash}\"").as_str());
        let body = axum::body::to_bytes(pinned.into_body(), usize::MAX).await.unwrap();
        assert_eq!(serde_json::from_slice::<Value>(&body).unwrap(), document(&univrs_kinds()));

        let other = group_version(HeaderMap::new(), RawQuery(Some("hash=0123".into()))).await;
        assert_eq!(other.status(), StatusCode::OK);
        assert_eq!(other.headers()[CACHE_CONTROL], "no-cache, private");

        let mut headers = HeaderMap::new();
        headers.insert(IF_NONE_MATCH, format!("\"{hash}\"").parse().unwrap());
        let cached = group_version(headers, RawQuery(None)).await;
        assert_eq!(cached.status(), StatusCode::NOT_MODIFIED);
    }
}
