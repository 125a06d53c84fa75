//! Kubernetes object metadata (`metadata`), times and conditions.
//!
//! Field names and meanings follow `k8s.io/apimachinery/pkg/apis/meta/v1` exactly, so that
//! kubectl, kube-rs and client-go read univrs objects as they read Kubernetes ones.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::validation::{
    FieldError, FieldPath, Validate, check_dns1123_label, check_dns1123_subdomain, check_label_value,
    check_qualified_name,
};

/// A point in time, written as RFC 3339 in UTC with second precision (`2026-01-02T03:04:05Z`),
/// as Kubernetes writes `metav1.Time`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Time(#[serde(with = "rfc3339")] pub DateTime<Utc>);

impl Time {
    /// RFC 3339 text of this time, second precision, `Z` suffix.
    pub fn to_rfc3339(&self) -> String {
        self.0.to_rfc3339_opts(SecondsFormat::Secs, true)
    }
}

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl JsonSchema for Time {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Time".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "string", "format": "date-time" })
    }
}

mod rfc3339 {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Secs, true))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| D::Error::custom(format!("{s:?} is not an RFC 3339 time: {e}")))
    }
}

/// Standard object metadata. Every field is optional on input; the server fills the
/// server-owned ones (`uid`, `resourceVersion`, `generation`, timestamps, `managedFields`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectMeta {
    /// Unique within a kind and namespace; a DNS-1123 subdomain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Prefix from which the server generates a unique name when `name` is empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generate_name: Option<String>,
    /// Namespace of a namespaced kind (default `default`); must be empty for cluster-scoped kinds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Server-assigned unique id of this incarnation of the object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Server-assigned revision of the last change (opaque to clients).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    /// Sequence number of the desired state; bumped by the server on every spec change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// When the server created the object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<Time>,
    /// When deletion was requested; set while finalizers are pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_timestamp: Option<Time>,
    /// Grace period granted to deletion, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_grace_period_seconds: Option<i64>,
    /// Identifying key/value pairs used by selectors.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Non-identifying key/value pairs; carries the univrs signature annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Objects this one depends on; garbage-collected when they are gone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owner_references: Vec<OwnerReference>,
    /// Keys that must be removed before the object is deleted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub finalizers: Vec<String>,
    /// Which field manager set which fields (server-side apply bookkeeping).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub managed_fields: Vec<ManagedFieldsEntry>,
}

/// A reference from a dependent object to its owner.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OwnerReference {
    /// API version of the owner.
    pub api_version: String,
    /// Kind of the owner.
    pub kind: String,
    /// Name of the owner.
    pub name: String,
    /// UID of the owner; references are matched by uid, not by name.
    pub uid: String,
    /// Whether the owner is the managing controller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller: Option<bool>,
    /// Whether foreground deletion of the owner waits for this dependent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_owner_deletion: Option<bool>,
}

/// One field manager's record of the fields it set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ManagedFieldsEntry {
    /// Name of the field manager.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manager: Option<String>,
    /// `Apply` or `Update`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    /// API version of the fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// When the manager last changed its fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Time>,
    /// Format of `fieldsV1` (always `FieldsV1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields_type: Option<String>,
    /// The set of fields, in the structured-merge-diff encoding.
    #[serde(default, rename = "fieldsV1", skip_serializing_if = "Option::is_none")]
    pub fields_v1: Option<serde_json::Value>,
    /// The subresource the fields were written through, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subresource: Option<String>,
}

impl ObjectMeta {
    /// The name, or `""` when unset.
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or_default()
    }
}

impl Validate for ObjectMeta {
    fn validate(&self, path: &FieldPath, errors: &mut Vec<FieldError>) {
        match (&self.name, &self.generate_name) {
            (Some(name), _) => {
                if let Err(e) = check_dns1123_subdomain(name) {
                    errors.push(path.child("name").error(e));
                }
            }
            (None, Some(prefix)) => {
                // The server appends a suffix; the prefix itself must stay a valid name start.
                if prefix.len() > 248 || check_dns1123_subdomain(&format!("{prefix}x")).is_err() {
                    errors.push(path.child("generateName").error(format!(
                        "{prefix:?} is not a valid name prefix: use lowercase letters, digits, '-' and '.'"
                    )));
                }
            }
            (None, None) => errors.push(path.child("name").error("required: every object needs a name")),
        }
        if let Some(ns) = &self.namespace
            && let Err(e) = check_dns1123_label(ns)
        {
            errors.push(path.child("namespace").error(e));
        }
        for (k, v) in &self.labels {
            // The path is made only for an error: this runs on every write.
            let p = || path.child("labels").key(k);
            if let Err(e) = check_qualified_name(k) {
                errors.push(p().error(e));
            } else if let Err(e) = check_label_value(v) {
                errors.push(p().error(format!("invalid value {v:?}: {e}")));
            }
        }
        for k in self.annotations.keys() {
            if let Err(e) = check_qualified_name(k) {
                errors.push(path.child("annotations").key(k).error(e));
            }
        }
        let total: usize = self.annotations.iter().map(|(k, v)| k.len() + v.len()).sum();
        if total > MAX_ANNOTATIONS_BYTES {
            errors.push(path.child("annotations").error(format!(
                "annotations are {total} bytes, more than the limit of {MAX_ANNOTATIONS_BYTES}"
            )));
        }
    }
}

/// Total size limit of all annotations of one object (as in Kubernetes).
pub const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;

/// Whether a condition holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// Not known (yet).
    Unknown,
}

/// An observation of one aspect of an object's state, as `metav1.Condition`.
/// `T` is the kind's enum of condition types.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Condition<T> {
    /// Which aspect this condition is about.
    #[serde(rename = "type")]
    pub type_: T,
    /// Whether it holds.
    pub status: ConditionStatus,
    /// One CamelCase word saying why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A sentence for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When `status` last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
    /// The `metadata.generation` this condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_round_trips_as_rfc3339_z() {
        let t: Time = serde_json::from_str("\"2026-03-04T05:06:07+01:00\"").unwrap();
        assert_eq!(serde_json::to_string(&t).unwrap(), "\"2026-03-04T04:06:07Z\"");
        assert!(serde_json::from_str::<Time>("\"yesterday\"").is_err());
    }

    #[test]
    fn metadata_reports_every_problem_with_its_path() {
        let meta = ObjectMeta {
            name: Some("Bad_Name".into()),
            namespace: Some("a.b".into()),
            labels: [("ok".into(), "-bad".into()), ("bad key".into(), "x".into())].into(),
            ..Default::default()
        };
        let mut errors = Vec::new();
        meta.validate(&FieldPath::root().child("metadata"), &mut errors);
        let paths: Vec<_> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            ["metadata.name", "metadata.namespace", "metadata.labels[bad key]", "metadata.labels[ok]"]
        );
    }

    #[test]
    fn a_name_or_generate_name_is_required() {
        let mut errors = Vec::new();
        ObjectMeta::default().validate(&FieldPath::root().child("metadata"), &mut errors);
        assert_eq!(errors[0].path, "metadata.name");
        let mut errors = Vec::new();
        ObjectMeta { generate_name: Some("web-".into()), ..Default::default() }
            .validate(&FieldPath::root(), &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
    }
}
