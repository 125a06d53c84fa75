//! Objects of the univrs kinds on the Raft state machine, with Kubernetes semantics: keys,
//! server-owned metadata, `resourceVersion` preconditions and the errors of the Kubernetes API
//! (`NotFound`, `AlreadyExists`, `Conflict`, `Invalid`).
//!
//! An object is stored as the JSON it was written as, plus the server-owned metadata that the
//! signed projection leaves out (`uid`, `creationTimestamp`, `generation`, the defaulted
//! `namespace`). `resourceVersion` is not stored: it is the revision of the entry that last
//! changed the key, put into the object when it is read. So the server never rewrites a field
//! a signature covers.
//!
//! Admission (schema, signatures, anti-rollback, authorization) is not here: it runs before a
//! request reaches the registry.

use api::signing::DEFAULT_NAMESPACE;
use api::{FieldError, KindInfo, Scope};
use chrono::{SecondsFormat, Utc};
use serde_json::{Map, Value};

use crate::raft::{Expect, Op, Outcome, RaftNode, Request, Stored};

/// A request that failed, as the Kubernetes API reports it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 404.
    #[error("{kind} {name:?} not found")]
    NotFound {
        /// The kind's plural (as Kubernetes names the resource in messages).
        kind: String,
        /// The object's name.
        name: String,
    },
    /// 409, on create.
    #[error("{kind} {name:?} already exists")]
    AlreadyExists {
        /// The kind's plural.
        kind: String,
        /// The object's name.
        name: String,
    },
    /// 409, on a stale `resourceVersion` or `uid`.
    #[error(
        "Operation cannot be fulfilled on {kind} {name:?}: the object has been modified; please apply your changes to the latest version and try again"
    )]
    Conflict {
        /// The kind's plural.
        kind: String,
        /// The object's name.
        name: String,
    },
    /// 422, with every problem and its field path.
    #[error("{kind} {name:?} is invalid: {}", causes.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid {
        /// The kind.
        kind: String,
        /// The object's name.
        name: String,
        /// Every problem.
        causes: Vec<FieldError>,
    },
    /// 400.
    #[error("{0}")]
    BadRequest(String),
    /// 503: no leader, shutting down, or storage failing.
    #[error("the control plane cannot serve this now: {0}")]
    Unavailable(String),
}

impl ApiError {
    /// The HTTP status code.
    pub fn code(&self) -> u16 {
        match self {
            ApiError::NotFound { .. } => 404,
            ApiError::AlreadyExists { .. } | ApiError::Conflict { .. } => 409,
            ApiError::Invalid { .. } => 422,
            ApiError::BadRequest(_) => 400,
            ApiError::Unavailable(_) => 503,
        }
    }

    /// The Kubernetes `Status.reason`.
    pub fn reason(&self) -> &'static str {
        match self {
            ApiError::NotFound { .. } => "NotFound",
            ApiError::AlreadyExists { .. } => "AlreadyExists",
            ApiError::Conflict { .. } => "Conflict",
            ApiError::Invalid { .. } => "Invalid",
            ApiError::BadRequest(_) => "BadRequest",
            ApiError::Unavailable(_) => "ServiceUnavailable",
        }
    }
}

fn unavailable(e: impl std::fmt::Display) -> ApiError {
    ApiError::Unavailable(e.to_string())
}

/// A list of objects and the revision it is the state at.
#[derive(Debug)]
pub struct List {
    /// The objects, in key order (namespace, then name).
    pub items: Vec<Value>,
    /// The list's `resourceVersion`.
    pub revision: u64,
}

/// The objects of every kind, on one Raft member.
#[derive(Clone, Debug)]
pub struct Registry {
    node: RaftNode,
}

/// The storage key of an object: `/registry/{plural}/{namespace}/{name}`, or without the
/// namespace for cluster-scoped kinds.
fn key(kind: &KindInfo, namespace: Option<&str>, name: &str) -> String {
    match (kind.scope, namespace) {
        (Scope::Namespaced, ns) => {
            format!("/registry/{}/{}/{name}", kind.plural, ns.unwrap_or(DEFAULT_NAMESPACE))
        }
        (Scope::Cluster, _) => format!("/registry/{}/{name}", kind.plural),
    }
}

/// The key prefix of a list: one namespace, or all of them (`None`).
fn prefix(kind: &KindInfo, namespace: Option<&str>) -> String {
    match (kind.scope, namespace) {
        (Scope::Namespaced, Some(ns)) => format!("/registry/{}/{ns}/", kind.plural),
        _ => format!("/registry/{}/", kind.plural),
    }
}

/// The object as stored, with its `resourceVersion`.
fn with_revision(stored: &Stored) -> Result<Value, ApiError> {
    let mut obj: Value = serde_json::from_str(&stored.value).map_err(unavailable)?;
    meta_mut(&mut obj).insert("resourceVersion".into(), stored.mod_revision.to_string().into());
    Ok(obj)
}

fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    let map = obj.as_object_mut().expect("checked objects are maps");
    let meta = map.entry("metadata").or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    meta.as_object_mut().expect("made a map above")
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

impl Registry {
    /// A registry on `node`.
    pub fn new(node: RaftNode) -> Self {
        Self { node }
    }

    /// Checks `obj` as an object of `kind` and returns its namespace (defaulted) and name.
    fn admit(kind: &KindInfo, obj: &mut Value) -> Result<(Option<String>, String), ApiError> {
        let label = |o: &Value| meta_str(o, "name").unwrap_or_default().to_owned();
        match api::manifest::check(obj) {
            Ok(k) if k.kind == kind.kind => {}
            Ok(k) => {
                return Err(ApiError::BadRequest(format!(
                    "the object is a {}, but the request is for {}",
                    k.kind, kind.plural
                )));
            }
            Err(causes) => {
                return Err(ApiError::Invalid { kind: kind.kind.into(), name: label(obj), causes });
            }
        }
        let namespace = match kind.scope {
            Scope::Namespaced => {
                let ns = meta_str(obj, "namespace")
                    .filter(|s| !s.is_empty())
                    .unwrap_or(DEFAULT_NAMESPACE)
                    .to_owned();
                meta_mut(obj).insert("namespace".into(), ns.clone().into());
                Some(ns)
            }
            Scope::Cluster => None,
        };
        let name = meta_str(obj, "name")
            .ok_or_else(|| {
                ApiError::BadRequest("metadata.name is required (generateName is not supported yet)".into())
            })?
            .to_owned();
        Ok((namespace, name))
    }

    async fn current(&self, key: &str) -> Result<Option<Stored>, ApiError> {
        self.node.read_barrier().await.map_err(unavailable)?;
        self.node.state().get(key).map_err(unavailable)
    }

    async fn commit(&self, ops: Vec<Op>) -> Result<(u64, Outcome), ApiError> {
        let response = self.node.write(Request { ops }).await.map_err(unavailable)?;
        Ok((response.revision, response.outcome))
    }

    /// Creates `obj`. The server sets `uid`, `creationTimestamp`, `generation` and a missing
    /// namespace; `status` is for controllers and is dropped.
    pub async fn create(&self, kind: &KindInfo, mut obj: Value) -> Result<Value, ApiError> {
        if meta_str(&obj, "resourceVersion").is_some_and(|rv| !rv.is_empty()) {
            return Err(ApiError::BadRequest(
                "resourceVersion should not be set on objects to be created".into(),
            ));
        }
        let (namespace, name) = Self::admit(kind, &mut obj)?;
        obj.as_object_mut().expect("admitted objects are maps").remove("status");
        let meta = meta_mut(&mut obj);
        meta.remove("resourceVersion");
        meta.insert("uid".into(), uuid::Uuid::new_v4().to_string().into());
        meta.insert("creationTimestamp".into(), Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true).into());
        meta.insert("generation".into(), 1.into());
        let key = key(kind, namespace.as_deref(), &name);
        let op = Op::Put { key, value: obj.to_string(), expect: Expect::Absent };
        match self.commit(vec![op]).await? {
            (revision, Outcome::Applied { .. }) => {
                meta_mut(&mut obj).insert("resourceVersion".into(), revision.to_string().into());
                Ok(obj)
            }
            (_, Outcome::PreconditionFailed { .. }) => {
                Err(ApiError::AlreadyExists { kind: kind.plural.into(), name })
            }
            (_, other) => Err(unavailable(format!("unexpected outcome {other:?}"))),
        }
    }

    /// Reads one object (linearizable).
    pub async fn get(&self, kind: &KindInfo, namespace: Option<&str>, name: &str) -> Result<Value, ApiError> {
        match self.current(&key(kind, namespace, name)).await? {
            Some(stored) => with_revision(&stored),
            None => Err(ApiError::NotFound { kind: kind.plural.into(), name: name.into() }),
        }
    }

    /// Lists the objects of `kind` in `namespace`, or in all namespaces (linearizable).
    pub async fn list(&self, kind: &KindInfo, namespace: Option<&str>) -> Result<List, ApiError> {
        self.node.read_barrier().await.map_err(unavailable)?;
        let (entries, revision) = self.node.state().list(&prefix(kind, namespace)).map_err(unavailable)?;
        let items = entries.iter().map(|(_, s)| with_revision(s)).collect::<Result<_, _>>()?;
        Ok(List { items, revision })
    }

    /// Replaces the spec and metadata of an existing object. A `metadata.resourceVersion` in
    /// `obj` is a precondition (stale → Conflict); without one the update is unconditional.
    /// `generation` is bumped when the spec changes; `status` is kept as it is.
    pub async fn update(&self, kind: &KindInfo, mut obj: Value) -> Result<Value, ApiError> {
        let (namespace, name) = Self::admit(kind, &mut obj)?;
        let wanted = match meta_str(&obj, "resourceVersion").filter(|s| !s.is_empty()) {
            Some(rv) => Some(rv.parse::<u64>().map_err(|_| {
                ApiError::BadRequest(format!(
                    "metadata.resourceVersion: {rv:?} is not a resourceVersion of this server"
                ))
            })?),
            None => None,
        };
        let key = key(kind, namespace.as_deref(), &name);
        // Without a precondition, retry if a concurrent writer gets in between our read and
        // our write: the caller asked for last-writer-wins.
        for _ in 0..8 {
            let current = self
                .current(&key)
                .await?
                .ok_or_else(|| ApiError::NotFound { kind: kind.plural.into(), name: name.clone() })?;
            if wanted.is_some_and(|rv| rv != current.mod_revision) {
                return Err(ApiError::Conflict { kind: kind.plural.into(), name });
            }
            let old: Value = serde_json::from_str(&current.value).map_err(unavailable)?;
            if meta_str(&obj, "uid").is_some_and(|uid| Some(uid) != meta_str(&old, "uid")) {
                return Err(ApiError::Conflict { kind: kind.plural.into(), name });
            }
            let mut new = obj.clone();
            let generation =
                old.get("metadata").and_then(|m| m.get("generation")).and_then(Value::as_i64).unwrap_or(1);
            let generation = if new.get("spec") == old.get("spec") { generation } else { generation + 1 };
            let map = new.as_object_mut().expect("admitted objects are maps");
            match old.get("status") {
                Some(status) => map.insert("status".into(), status.clone()),
                None => map.remove("status"),
            };
            let meta = meta_mut(&mut new);
            meta.remove("resourceVersion");
            for field in ["uid", "creationTimestamp"] {
                if let Some(v) = old.get("metadata").and_then(|m| m.get(field)) {
                    meta.insert(field.into(), v.clone());
                }
            }
            meta.insert("generation".into(), generation.into());
            let op = Op::Put {
                key: key.clone(),
                value: new.to_string(),
                expect: Expect::ModRevision(current.mod_revision),
            };
            match self.commit(vec![op]).await? {
                (revision, Outcome::Applied { .. }) => {
                    meta_mut(&mut new).insert("resourceVersion".into(), revision.to_string().into());
                    return Ok(new);
                }
                (_, Outcome::PreconditionFailed { current: None, .. }) => {
                    return Err(ApiError::NotFound { kind: kind.plural.into(), name });
                }
                (_, Outcome::PreconditionFailed { .. }) if wanted.is_none() => continue,
                (_, Outcome::PreconditionFailed { .. }) => {
                    return Err(ApiError::Conflict { kind: kind.plural.into(), name });
                }
                (_, other) => return Err(unavailable(format!("unexpected outcome {other:?}"))),
            }
        }
        Err(ApiError::Conflict { kind: kind.plural.into(), name })
    }

    /// Deletes an object and returns it as it was. `resource_version` is a precondition.
    pub async fn delete(
        &self,
        kind: &KindInfo,
        namespace: Option<&str>,
        name: &str,
        resource_version: Option<u64>,
    ) -> Result<Value, ApiError> {
        let key = key(kind, namespace, name);
        let not_found = || ApiError::NotFound { kind: kind.plural.into(), name: name.into() };
        let current = self.current(&key).await?.ok_or_else(not_found)?;
        if resource_version.is_some_and(|rv| rv != current.mod_revision) {
            return Err(ApiError::Conflict { kind: kind.plural.into(), name: name.into() });
        }
        let expect = Expect::ModRevision(resource_version.unwrap_or(current.mod_revision));
        match self.commit(vec![Op::Delete { key, expect }]).await? {
            (_, Outcome::Applied { .. }) => with_revision(&current),
            (_, Outcome::PreconditionFailed { current: None, .. }) => Err(not_found()),
            (_, Outcome::PreconditionFailed { .. }) => {
                Err(ApiError::Conflict { kind: kind.plural.into(), name: name.into() })
            }
            (_, other) => Err(unavailable(format!("unexpected outcome {other:?}"))),
        }
    }
}
