//! `univrs://` resources: a kind's objects (`univrs://workloads`, or in one namespace
//! `univrs://workloads/default`), one object (`univrs://workloads/default/hello`, or
//! `univrs://nodes/node-1` for a cluster-scoped kind); read through the blocking client,
//! followed through the apiserver's watch.

use std::future::Future;

use api::{KindInfo, Scope};
use futures_util::StreamExt as _;
use kube::api::{Api, DynamicObject};
use kube::core::ApiResource;
use kube::runtime::watcher;
use rmcp::model::{Resource, ResourceTemplate};
use tokio_util::sync::CancellationToken;

use super::bounded;
use crate::connection::Client;

/// The scheme of the server's resources.
pub const SCHEME: &str = "univrs://";

/// What a `univrs://` URI names.
#[derive(Clone, Debug)]
pub enum Uri {
    /// The objects of a kind: in one namespace, or (None) in all.
    List {
        /// The kind.
        kind: &'static KindInfo,
        /// The namespace (namespaced kinds), or all of them.
        namespace: Option<String>,
    },
    /// One object.
    Object {
        /// The kind.
        kind: &'static KindInfo,
        /// Its namespace (namespaced kinds).
        namespace: Option<String>,
        /// Its name.
        name: String,
    },
}

impl PartialEq for Uri {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Uri::List { kind: a, namespace: n }, Uri::List { kind: b, namespace: m }) => {
                a.kind == b.kind && n == m
            }
            (
                Uri::Object { kind: a, namespace: n, name: x },
                Uri::Object { kind: b, namespace: m, name: y },
            ) => a.kind == b.kind && n == m && x == y,
            _ => false,
        }
    }
}

impl Uri {
    /// Parses `univrs://{plural}[/{namespace}][/{name}]`.
    pub fn parse(uri: &str) -> Result<Self, String> {
        let usage = "use univrs://{plural}, univrs://{plural}/{namespace}, univrs://{plural}/{namespace}/{name} or, for a cluster-scoped kind, univrs://{plural}/{name}";
        let Some(rest) = uri.strip_prefix(SCHEME) else {
            return Err(format!("{uri}: not a univrs:// URI: {usage}"));
        };
        let parts: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(format!("{uri}: an empty segment: {usage}"));
        }
        let Some(kind) = api::kinds::KINDS.iter().find(|k| k.plural == parts[0]) else {
            let plurals: Vec<&str> = api::kinds::KINDS.iter().map(|k| k.plural).collect();
            return Err(format!("{uri}: no kind {:?}: the kinds are {}", parts[0], plurals.join(", ")));
        };
        let owned = |s: &str| s.to_owned();
        match (kind.scope, &parts[1..]) {
            (_, []) => Ok(Uri::List { kind, namespace: None }),
            (Scope::Namespaced, [ns]) => Ok(Uri::List { kind, namespace: Some(owned(ns)) }),
            (Scope::Namespaced, [ns, name]) => {
                Ok(Uri::Object { kind, namespace: Some(owned(ns)), name: owned(name) })
            }
            (Scope::Cluster, [name]) => Ok(Uri::Object { kind, namespace: None, name: owned(name) }),
            _ => Err(format!("{uri}: too many segments for {} ({:?}): {usage}", kind.plural, kind.scope)),
        }
    }

    /// The MIME type of what reading it gives.
    pub fn mime_type(&self) -> &'static str {
        match self {
            Uri::List { .. } => "text/plain",
            Uri::Object { .. } => "application/yaml",
        }
    }

    fn kind(&self) -> &'static KindInfo {
        match self {
            Uri::List { kind, .. } | Uri::Object { kind, .. } => kind,
        }
    }
}

/// A resource per kind: all its objects.
pub fn collections() -> Vec<Resource> {
    api::kinds::KINDS
        .iter()
        .map(|k| {
            let mut r = Resource::new(format!("{SCHEME}{}", k.plural), k.plural.to_owned())
                .with_description(format!("Every {} ({:?}): {}", k.kind, k.scope, k.description));
            r.mime_type = Some("text/plain".into());
            r
        })
        .collect()
}

/// The resource templates: a kind's objects in a namespace, one object.
pub fn templates() -> Vec<ResourceTemplate> {
    let t = |template: &str, name: &str, description: &str, mime: &str| {
        let mut t = ResourceTemplate::new(template, name).with_description(description);
        t.mime_type = Some(mime.into());
        t
    };
    vec![
        t(
            "univrs://{plural}",
            "objects",
            "Every object of a kind (plural, e.g. workloads), in every namespace: a table",
            "text/plain",
        ),
        t(
            "univrs://{plural}/{namespace}",
            "objects-in-namespace",
            "The objects of a namespaced kind in one namespace: a table",
            "text/plain",
        ),
        t(
            "univrs://{plural}/{namespace}/{name}",
            "object",
            "One object of a namespaced kind, as YAML (secrets redacted by the server)",
            "application/yaml",
        ),
        t(
            "univrs://{plural}/{name}",
            "cluster-object",
            "One object of a cluster-scoped kind (nodes, approvals, …), as YAML",
            "application/yaml",
        ),
    ]
}

/// Why a read failed.
#[derive(Debug)]
pub enum ReadError {
    /// The object does not exist (the server's message).
    NotFound(String),
    /// Anything else, in words.
    Other(String),
}

/// Reads what `uri` names: an object as YAML, a list as a table (bounded).
pub fn read(client: &Client, uri: &Uri) -> Result<String, ReadError> {
    let fail = |e: crate::connection::ClientError| match e.is_not_found() {
        true => ReadError::NotFound(e.to_string()),
        false => ReadError::Other(e.to_string()),
    };
    match uri {
        Uri::Object { kind, namespace, name } => {
            let obj = client.get(kind, namespace.as_deref(), name).map_err(fail)?;
            bounded::object_yaml(&obj).map_err(|e| ReadError::Other(format!("{e:#}")))
        }
        Uri::List { kind, namespace } => {
            let limit = bounded::DEFAULT_PAGE.to_string();
            let answer = client
                .list_with(kind, namespace.as_deref(), &[("limit", limit.as_str())], true)
                .map_err(fail)?;
            let show_ns = namespace.is_none() && kind.scope == Scope::Namespaced;
            Ok(bounded::table(&answer, show_ns, "use the `list` tool with its `continue` argument"))
        }
    }
}

/// A change of what a URI names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// The object (or an object of the list) changed.
    Updated,
    /// An object was added to or removed from the list.
    ListChanged,
}

/// Follows `uri` through an apiserver watch until `stop`, calling `notify` for each change
/// after the first listing; stops early when `notify` returns false (the client went away).
/// A watch that restarts (the server ended it, a member failed) counts as a change, since
/// what happened meanwhile is unknown.
pub async fn follow<F, Fut>(kube: kube::Client, uri: Uri, stop: CancellationToken, notify: F)
where
    F: Fn(Change) -> Fut,
    Fut: Future<Output = bool>,
{
    let kind = uri.kind();
    let resource = ApiResource {
        group: kind.group.into(),
        version: kind.version.into(),
        api_version: kind.api_version.into(),
        kind: kind.kind.into(),
        plural: kind.plural.into(),
    };
    let (namespace, name) = match &uri {
        Uri::List { namespace, .. } => (namespace.clone(), None),
        Uri::Object { namespace, name, .. } => (namespace.clone(), Some(name.clone())),
    };
    let api: Api<DynamicObject> = match (&namespace, kind.scope) {
        (Some(ns), Scope::Namespaced) => Api::namespaced_with(kube, ns, &resource),
        _ => Api::all_with(kube, &resource),
    };
    let mut config = watcher::Config::default();
    if let Some(name) = &name {
        config = config.fields(&format!("metadata.name={name}"));
    }
    let mut events = std::pin::pin!(watcher(api, config));
    let mut listed_once = false;
    let mut listing = false;
    loop {
        let event = tokio::select! {
            _ = stop.cancelled() => return,
            e = events.next() => e,
        };
        let change = match event {
            None => return,
            // The watcher retries by itself; a failed attempt changes nothing yet.
            Some(Err(_)) => {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                }
                continue;
            }
            Some(Ok(watcher::Event::Init)) => {
                listing = true;
                continue;
            }
            Some(Ok(watcher::Event::InitApply(_))) => continue,
            Some(Ok(watcher::Event::InitDone)) => {
                listing = false;
                if !listed_once {
                    listed_once = true;
                    continue;
                }
                Some(Change::Updated)
            }
            Some(Ok(watcher::Event::Apply(obj))) => {
                if listing || name.as_deref().is_some_and(|n| obj.metadata.name.as_deref() != Some(n)) {
                    continue;
                }
                Some(Change::Updated)
            }
            Some(Ok(watcher::Event::Delete(obj))) => {
                if name.as_deref().is_some_and(|n| obj.metadata.name.as_deref() != Some(n)) {
                    continue;
                }
                Some(Change::Updated)
            }
        };
        let Some(change) = change else { continue };
        if !notify(change).await {
            return;
        }
        // A list also changed its membership when an object came or went; the watcher does
        // not say which, so any change of a list tells both.
        if matches!(uri, Uri::List { .. }) && !notify(Change::ListChanged).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_name_lists_and_objects_by_scope() {
        let wl = api::kinds::lookup("workloads").unwrap();
        assert_eq!(Uri::parse("univrs://workloads").unwrap(), Uri::List { kind: wl, namespace: None });
        assert_eq!(
            Uri::parse("univrs://workloads/default").unwrap(),
            Uri::List { kind: wl, namespace: Some("default".into()) }
        );
        assert_eq!(
            Uri::parse("univrs://workloads/default/hello").unwrap(),
            Uri::Object { kind: wl, namespace: Some("default".into()), name: "hello".into() }
        );
        let node = api::kinds::lookup("nodes").unwrap();
        assert_eq!(
            Uri::parse("univrs://nodes/n1").unwrap(),
            Uri::Object { kind: node, namespace: None, name: "n1".into() }
        );
        for bad in ["univrs://pods", "http://workloads", "univrs://nodes/a/b", "univrs://workloads//x"] {
            assert!(Uri::parse(bad).is_err(), "{bad}");
        }
        assert!(Uri::parse("univrs://pods").unwrap_err().contains("workloads"));
    }
}
