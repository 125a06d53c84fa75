//! The univrs kinds as kube-rs resources: one typed API for every client.
//!
//! kube-rs needs `kube::Resource`, whose metadata is k8s-openapi's `ObjectMeta`; `api::Object<S>`
//! carries univrs' own `ObjectMeta` (the same fields, our types). `Kube<S>` is the typed view the
//! controllers read and write through kube-rs: k8s-openapi metadata (so the runtime's helpers —
//! owner references, finalizers, `ObjectRef` — work unchanged), the kind's own typed `spec` and
//! `status`. Signed kinds are never written back through it: controllers write only their
//! `status` (a merge patch of the status subresource) or objects they create themselves.

use std::borrow::Cow;

use api::KindSpec;
use api::object::Scope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::core::DynamicResourceScope;
use kube::{Api, Client, Resource};
use serde::{Deserialize, Serialize};

/// An object of the univrs kind `S`, as kube-rs reads and writes it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", bound(serialize = "S: KindSpec", deserialize = "S: KindSpec"))]
pub struct Kube<S: KindSpec> {
    /// Always `univrs.io/v1`.
    pub api_version: String,
    /// Always `S::KIND`.
    pub kind: String,
    /// Standard object metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Desired state.
    pub spec: S,
    /// Observed state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<S::Status>,
}

impl<S: KindSpec> Kube<S> {
    /// A new object with this metadata and spec, no status.
    #[must_use]
    pub fn new(metadata: ObjectMeta, spec: S) -> Self {
        Self {
            api_version: api::API_VERSION.to_owned(),
            kind: S::KIND.to_owned(),
            metadata,
            spec,
            status: None,
        }
    }

    /// The object's name (empty when unset).
    pub fn name(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or_default()
    }

    /// The object's namespace (`default` when a namespaced object has none).
    pub fn namespace(&self) -> Option<&str> {
        match S::SCOPE {
            Scope::Namespaced => Some(self.metadata.namespace.as_deref().unwrap_or("default")),
            Scope::Cluster => None,
        }
    }

    /// The object's uid (empty when unset).
    pub fn uid(&self) -> &str {
        self.metadata.uid.as_deref().unwrap_or_default()
    }

    /// The did:key that signed the object, from its `univrs.io/signer` annotation.
    pub fn signer(&self) -> Option<&str> {
        self.metadata.annotations.as_ref()?.get("univrs.io/signer").map(String::as_str)
    }

    /// Whether deletion was requested.
    pub fn is_deleting(&self) -> bool {
        self.metadata.deletion_timestamp.is_some()
    }

    /// The owner reference that makes this object the managing controller of another.
    pub fn controller_ref(&self) -> OwnerReference {
        OwnerReference {
            api_version: api::API_VERSION.to_owned(),
            kind: S::KIND.to_owned(),
            name: self.name().to_owned(),
            uid: self.uid().to_owned(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }
}

impl<S: KindSpec> Resource for Kube<S> {
    type DynamicType = ();
    type Scope = DynamicResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        S::KIND.into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        api::GROUP.into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        api::VERSION.into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        S::PLURAL.into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// The API of kind `S` in namespace `ns` (ignored for cluster-scoped kinds).
pub fn api_in<S: KindSpec>(client: &Client, ns: &str) -> Api<Kube<S>> {
    match S::SCOPE {
        Scope::Namespaced => Api::namespaced_with(client.clone(), ns, &()),
        Scope::Cluster => Api::all_with(client.clone(), &()),
    }
}

/// The API of kind `S` across all namespaces (list and watch only, for namespaced kinds).
pub fn api_all<S: KindSpec>(client: &Client) -> Api<Kube<S>> {
    Api::all_with(client.clone(), &())
}

/// Whether a kube-rs error is the apiserver's 409 (a precondition or name conflict).
pub fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

/// Whether a kube-rs error is the apiserver's 404.
pub fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}
