//! The generic object (`apiVersion`, `kind`, `metadata`, `spec`, `status`) and the trait every
//! kind's spec implements.

use std::fmt;

use schemars::{JsonSchema, SchemaGenerator};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::API_VERSION;
use crate::meta::ObjectMeta;
use crate::validation::{FieldError, FieldPath, Validate};

/// Whether objects of a kind live in a namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// In a namespace (`default` when unset).
    Namespaced,
    /// Cluster-wide; `metadata.namespace` must be empty.
    Cluster,
}

/// What a kind is: implemented by each kind's spec type, which names the status type.
pub trait KindSpec:
    Serialize + DeserializeOwned + JsonSchema + Validate + Clone + fmt::Debug + PartialEq + Send + Sync + 'static
{
    /// The observed state, written by controllers and agents.
    type Status: Serialize
        + DeserializeOwned
        + JsonSchema
        + Clone
        + fmt::Debug
        + PartialEq
        + Send
        + Sync
        + 'static;
    /// `kind`, e.g. `Workload`.
    const KIND: &'static str;
    /// Resource name in URLs, e.g. `workloads`.
    const PLURAL: &'static str;
    /// Lower-case singular, e.g. `workload`.
    const SINGULAR: &'static str;
    /// Abbreviations accepted by `ui get` and kubectl, e.g. `wl`.
    const SHORT_NAMES: &'static [&'static str];
    /// Namespaced or cluster-scoped.
    const SCOPE: Scope;
    /// Whether the spec is written by a person or agent who must sign it.
    const SIGNED: bool;
    /// One line for `ui explain`-style listings and the schema's description.
    const DESCRIPTION: &'static str;
    /// The groups of resources this kind belongs to, as discovery publishes them
    /// (`kubectl get all`, `kubectl get univrs`): every kind is in [`CATEGORY_UNIVRS`]; the
    /// kinds a user's running things are made of are also in [`CATEGORY_ALL`].
    const CATEGORIES: &'static [&'static str] = &[CATEGORY_UNIVRS];
}

/// The category of every univrs kind (`kubectl get univrs`).
pub const CATEGORY_UNIVRS: &str = "univrs";
/// kubectl's everyday category (`kubectl get all`): what runs, as Deployments and Pods are in
/// Kubernetes.
pub const CATEGORY_ALL: &str = "all";

/// An object of kind `S`. This is a typed *view*: stored and signed objects are kept as the
/// JSON they were written as, so that the server never rewrites a signed field.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(
    rename_all = "camelCase",
    deny_unknown_fields,
    bound(serialize = "S: KindSpec", deserialize = "S: KindSpec")
)]
pub struct Object<S: KindSpec> {
    /// Always `univrs.io/v1`.
    pub api_version: String,
    /// Always `S::KIND`.
    pub kind: String,
    /// Standard object metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Desired state, written by the object's owner.
    pub spec: S,
    /// Observed state, written through the `status` subresource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<S::Status>,
}

impl<S: KindSpec> Object<S> {
    /// A new object named `name` with the given spec and no status.
    #[must_use]
    pub fn new(name: &str, spec: S) -> Self {
        Self {
            api_version: API_VERSION.to_owned(),
            kind: S::KIND.to_owned(),
            metadata: ObjectMeta { name: Some(name.to_owned()), ..Default::default() },
            spec,
            status: None,
        }
    }

    /// Every problem with this object, each with its field path.
    pub fn validate(&self) -> Vec<FieldError> {
        let root = FieldPath::root();
        let mut errors = Vec::new();
        if self.api_version != API_VERSION {
            errors.push(root.child("apiVersion").error(format!("must be {API_VERSION}")));
        }
        if self.kind != S::KIND {
            errors.push(root.child("kind").error(format!("must be {}", S::KIND)));
        }
        self.metadata.validate(&root.child("metadata"), &mut errors);
        if S::SCOPE == Scope::Cluster && self.metadata.namespace.as_deref().is_some_and(|ns| !ns.is_empty()) {
            errors.push(
                root.child("metadata")
                    .child("namespace")
                    .error(format!("must not be set: {} is cluster-scoped", S::KIND)),
            );
        }
        self.spec.validate(&root.child("spec"), &mut errors);
        errors
    }
}

impl<S: KindSpec> JsonSchema for Object<S> {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        S::KIND.into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> schemars::Schema {
        let metadata = generator.subschema_for::<ObjectMeta>();
        let spec = generator.subschema_for::<S>();
        let status = generator.subschema_for::<S::Status>();
        schemars::json_schema!({
            "title": S::KIND,
            "description": S::DESCRIPTION,
            "type": "object",
            "properties": {
                "apiVersion": { "type": "string", "const": API_VERSION },
                "kind": { "type": "string", "const": S::KIND },
                "metadata": metadata,
                "spec": spec,
                "status": status,
            },
            "required": ["apiVersion", "kind", "metadata", "spec"],
            "additionalProperties": false,
            "x-kubernetes-group-version-kind": [{ "group": crate::GROUP, "version": crate::VERSION, "kind": S::KIND }],
        })
    }
}

/// A kind's facts and functions, usable without knowing its Rust type (for registries,
/// discovery and decoding of manifests).
#[derive(Clone, Copy)]
pub struct KindInfo {
    /// The API group it is served in: `univrs.io` for the univrs kinds, `events.k8s.io` for
    /// Event.
    pub group: &'static str,
    /// The version within the group (`v1`).
    pub version: &'static str,
    /// `group/version`, as written in `apiVersion`.
    pub api_version: &'static str,
    /// `kind`, e.g. `Workload`.
    pub kind: &'static str,
    /// Resource name in URLs, e.g. `workloads`.
    pub plural: &'static str,
    /// Lower-case singular.
    pub singular: &'static str,
    /// Abbreviations.
    pub short_names: &'static [&'static str],
    /// Categories (`KindSpec::CATEGORIES`).
    pub categories: &'static [&'static str],
    /// Namespaced or cluster-scoped.
    pub scope: Scope,
    /// Whether it has a `status` subresource (every univrs kind; not Event).
    pub has_status: bool,
    /// Whether objects of this kind must be signed by their owner.
    pub signed: bool,
    /// One line about the kind.
    pub description: &'static str,
    /// The JSON Schema of a whole object of this kind.
    pub schema: fn() -> schemars::Schema,
    /// Decodes and validates an object of this kind, returning every problem found.
    pub check: fn(&Value) -> Result<(), Vec<FieldError>>,
}

impl KindInfo {
    /// The facts of kind `S`.
    pub const fn of<S: KindSpec>() -> Self {
        Self {
            group: crate::GROUP,
            version: crate::VERSION,
            api_version: API_VERSION,
            kind: S::KIND,
            plural: S::PLURAL,
            singular: S::SINGULAR,
            short_names: S::SHORT_NAMES,
            categories: S::CATEGORIES,
            scope: S::SCOPE,
            has_status: true,
            signed: S::SIGNED,
            description: S::DESCRIPTION,
            schema: schema_of::<S>,
            check: check_value::<S>,
        }
    }

    /// The path of its group version on the API: `/apis/GROUP/VERSION`.
    pub fn group_version_path(&self) -> String {
        format!("/apis/{}", self.api_version)
    }

    /// Whether `name` names this kind as kubectl accepts it: kind (any case), plural,
    /// singular or a short name.
    pub fn is_named(&self, name: &str) -> bool {
        self.kind.eq_ignore_ascii_case(name)
            || self.plural == name
            || self.singular == name
            || self.short_names.contains(&name)
    }
}

impl fmt::Debug for KindInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KindInfo").field("kind", &self.kind).finish_non_exhaustive()
    }
}

fn schema_of<S: KindSpec>() -> schemars::Schema {
    schemars::generate::SchemaSettings::draft2020_12().into_generator().into_root_schema_for::<Object<S>>()
}

/// Decodes `value` as an `Object<S>` (reporting the path of a type error) and validates it.
pub fn decode<S: KindSpec>(value: &Value) -> Result<Object<S>, Vec<FieldError>> {
    // Tracking the path costs on every field of every write: only a value that does not
    // decode is decoded again, to find where.
    let obj: Object<S> = Object::<S>::deserialize(value).or_else(|_| {
        serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let path = if path == "." { String::new() } else { path };
            vec![FieldError { path, message: e.into_inner().to_string() }]
        })
    })?;
    let errors = obj.validate();
    if errors.is_empty() { Ok(obj) } else { Err(errors) }
}

fn check_value<S: KindSpec>(value: &Value) -> Result<(), Vec<FieldError>> {
    decode::<S>(value).map(drop)
}
