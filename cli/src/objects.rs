//! What the cluster commands share about objects: naming kinds as kubectl does, the
//! `singular.group/name` form, metadata fields, ages, and the authored view.

use anyhow::bail;
use api::KindInfo;
use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::connection::Client;
use crate::manifest_files::Document;

/// The object a manifest document names on the server.
#[derive(Debug, Clone)]
pub struct Target {
    /// Its kind.
    pub kind: &'static KindInfo,
    /// Its namespace (None for cluster-scoped kinds).
    pub namespace: Option<String>,
    /// Its name.
    pub name: String,
}

impl Target {
    /// The kind, namespace and name of `doc`; the namespace defaults to the client's.
    pub fn of(client: &Client, doc: &Document) -> anyhow::Result<Self> {
        let kind = api::manifest::kind_of(&doc.value).map_err(|errors| {
            anyhow::anyhow!("{}", errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))
        })?;
        let Some(name) = meta_str(&doc.value, "name").filter(|n| !n.is_empty()) else {
            bail!("metadata.name: required: every object needs a name")
        };
        let namespace =
            client.namespace_for(kind, meta_str(&doc.value, "namespace")).map_err(anyhow::Error::msg)?;
        Ok(Self { kind, namespace, name: name.to_owned() })
    }

    /// `workload.univrs.io/hello`.
    pub fn reference(&self) -> String {
        reference(self.kind, &self.name)
    }
}

/// The kind a user names by kind, plural, singular or short name, or kubectl's error.
pub fn kind_named(name: &str) -> anyhow::Result<&'static KindInfo> {
    match api::kinds::lookup(name) {
        Some(k) => Ok(k),
        None => {
            let known: Vec<String> = api::kinds::KINDS
                .iter()
                .map(|k| match k.short_names.first() {
                    Some(s) => format!("{} ({s})", k.plural),
                    None => k.plural.to_owned(),
                })
                .collect();
            bail!("the server doesn't have a resource type {name:?}: known types are {}", known.join(", "))
        }
    }
}

/// `workload.univrs.io/hello`, as kubectl names objects in its output.
pub fn reference(kind: &KindInfo, name: &str) -> String {
    format!("{}.{}/{name}", kind.singular, kind.group)
}

/// `metadata.<field>` as a string.
pub fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata").and_then(|m| m.get(field)).and_then(Value::as_str)
}

/// The object's name, or an empty string.
pub fn name_of(obj: &Value) -> &str {
    meta_str(obj, "name").unwrap_or_default()
}

/// The view of an object that says what its author wants: no status, no server-owned
/// metadata, namespace defaulted. Objects that are not mappings are returned as they are.
pub fn authored(obj: &Value) -> Value {
    api::signing::authored(obj).unwrap_or_else(|_| obj.clone())
}

/// Whether a document is a signed manifest (carries `univrs.io/signature`).
pub fn is_signed(obj: &Value) -> bool {
    obj.pointer("/metadata/annotations").and_then(|a| a.get(api::signing::SIGNATURE)).is_some()
}

/// The [`authored`] view without the signature annotations (and, for an object an agent
/// signed on its user's behalf, the agent's and grant's): what an unsigned document is
/// compared by, since `ui apply` signs it only when it changes something.
pub fn authored_unsigned(obj: &Value) -> Value {
    let mut view = authored(obj);
    if let Some(meta) = view.get_mut("metadata").and_then(Value::as_object_mut)
        && let Some(a) = meta.get_mut("annotations").and_then(Value::as_object_mut)
    {
        for k in [
            api::signing::SIGNER,
            api::signing::SIGNED_AT,
            api::signing::SIGNATURE,
            api::signing::AGENT,
            api::signing::GRANT,
        ] {
            a.remove(k);
        }
        if a.is_empty() {
            meta.remove("annotations");
        }
    }
    view
}

/// The age of an object as kubectl prints it (`45s`, `5m3s`, `95m`, `7h`, `3d`), or
/// `<unknown>`.
pub fn age(obj: &Value, now: DateTime<Utc>) -> String {
    let Some(created) = meta_str(obj, "creationTimestamp").and_then(|t| DateTime::parse_from_rfc3339(t).ok())
    else {
        return "<unknown>".into();
    };
    human_duration((now - created.with_timezone(&Utc)).num_seconds())
}

/// A duration in kubectl's short form.
pub fn human_duration(secs: i64) -> String {
    let s = secs.max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86400);
    match () {
        _ if s < 120 => format!("{s}s"),
        _ if m < 10 => format!("{m}m{}s", s % 60),
        _ if m < 180 => format!("{m}m"),
        _ if h < 8 => format!("{h}h{}m", m % 60),
        _ if h < 48 => format!("{h}h"),
        _ if d < 8 => format!("{d}d{}h", h % 24),
        _ => format!("{d}d"),
    }
}

/// One object as multi-line YAML, as `ui sign` writes it.
pub fn to_yaml(obj: &Value) -> anyhow::Result<String> {
    crate::manifest_files::value_to_yaml(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_like_kubectl() {
        assert_eq!(human_duration(45), "45s");
        assert_eq!(human_duration(303), "5m3s");
        assert_eq!(human_duration(95 * 60), "95m");
        assert_eq!(human_duration(7 * 3600 + 120), "7h2m");
        assert_eq!(human_duration(30 * 3600), "30h");
        assert_eq!(human_duration(3 * 86400), "3d0h");
        assert_eq!(human_duration(30 * 86400), "30d");
    }

    #[test]
    fn unknown_kinds_list_the_known_ones() {
        let e = kind_named("pods").unwrap_err().to_string();
        assert!(e.starts_with("the server doesn't have a resource type \"pods\""), "{e}");
        assert!(e.contains("workloads (wl)"), "{e}");
        assert_eq!(kind_named("wl").unwrap().kind, "Workload");
    }
}
