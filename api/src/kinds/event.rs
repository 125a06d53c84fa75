//! `Event` of `events.k8s.io/v1`: what happened to an object and why (a placement, a pull, a
//! start, a failed probe, an eviction), written by the controllers and the node agents and read
//! by `kubectl events`, `kubectl describe`, `ui events` and `ui describe`.
//!
//! Unlike the univrs kinds an Event has no `spec`: its fields are at the top, as Kubernetes
//! has them, and it is stored as written. The same stored object is also served as a core
//! `v1` Event ([`to_core_v1`]), the form kubectl reads; [`core_field`] maps that form's field
//! selectors onto the stored one.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::meta::{ObjectMeta, Time};
use crate::object::{KindInfo, Scope};
use crate::validation::{FieldError, FieldPath, Validate};

/// The API group Events are served in.
pub const EVENTS_GROUP: &str = "events.k8s.io";
/// `events.k8s.io/v1`.
pub const EVENTS_API_VERSION: &str = "events.k8s.io/v1";
/// `kind` of an Event.
pub const EVENT_KIND: &str = "Event";

/// The longest `note` (as Kubernetes: 1 KiB).
pub const MAX_NOTE: usize = 1024;
/// The longest `reason`, `action`, `reportingController` and `reportingInstance` (as
/// Kubernetes: 128 bytes).
pub const MAX_WORD: usize = 128;
/// The largest `series.count` or `deprecatedCount` accepted.
pub const MAX_COUNT: i32 = 1_000_000_000;

/// One event: what happened (`reason`, `action`, `note`) to which object (`regarding`), who
/// saw it (`reportingController`, `reportingInstance`), when, and how often since
/// (`series`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Event {
    /// Always `events.k8s.io/v1`.
    pub api_version: String,
    /// Always `Event`.
    pub kind: String,
    /// Standard object metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// When it first happened, with microseconds (`2026-01-02T03:04:05.000000Z`).
    pub event_time: MicroTime,
    /// How often it happened again since, and when last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub series: Option<EventSeries>,
    /// The controller that saw it (`univrs.io/scheduler`, `univrs.io/node-agent`).
    pub reporting_controller: String,
    /// Which copy of that controller (its member or node).
    pub reporting_instance: String,
    /// What was done, or failed (`Binding`, `Pull`, `Start`, `Probe`, `Kill`, `Evict`).
    pub action: String,
    /// Why, as one CamelCase word (`Scheduled`, `FailedScheduling`, `Started`).
    pub reason: String,
    /// The object it is about.
    pub regarding: ObjectReference,
    /// A second object it involves (the Node of a placement).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub related: Option<ObjectReference>,
    /// What happened, for people: at most 1 KiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// `Normal` or `Warning`.
    #[serde(rename = "type")]
    pub type_: EventType,
    /// The core v1 `source`, for old clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deprecated_source: Option<EventSource>,
    /// The core v1 `firstTimestamp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deprecated_first_timestamp: Option<Time>,
    /// The core v1 `lastTimestamp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deprecated_last_timestamp: Option<Time>,
    /// The core v1 `count`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deprecated_count: Option<i32>,
}

/// A time with microseconds, as Kubernetes' `MicroTime` is written: exactly six digits
/// after the second and `Z` (kubectl reads no other form).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MicroTime(pub String);

impl MicroTime {
    /// `t` in the one form.
    pub fn from_time(t: chrono::DateTime<chrono::Utc>) -> Self {
        Self(t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
    }

    /// The time it says, if it is in the one form.
    pub fn parse(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        let s = &self.0;
        let shaped = s.len() == 27 && s.ends_with('Z') && s.as_bytes()[19] == b'.';
        shaped.then(|| chrono::DateTime::parse_from_rfc3339(s).ok().map(|t| t.to_utc())).flatten()
    }
}

impl JsonSchema for MicroTime {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "MicroTime".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "string", "format": "date-time" })
    }
}

/// A run of the same event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventSeries {
    /// How many times it happened, the first included.
    pub count: i32,
    /// When it last happened.
    pub last_observed_time: MicroTime,
}

/// The core v1 source of an event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventSource {
    /// The component.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
    /// The host (node) it ran on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// `Normal` or `Warning`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum EventType {
    /// Things going as they should.
    Normal,
    /// Something a person may want to look at.
    Warning,
}

impl EventType {
    /// As written.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// A reference to an object (Kubernetes' `ObjectReference`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectReference {
    /// `apiVersion` of the object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Its kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Its name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its namespace (none: cluster-scoped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Its uid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Its `resourceVersion` when the event happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    /// A part of it (`spec.container`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field_path: Option<String>,
}

impl ObjectReference {
    fn validate(&self, path: &FieldPath, errors: &mut Vec<FieldError>) {
        for (field, value, max) in [
            ("apiVersion", &self.api_version, 253),
            ("kind", &self.kind, 63),
            ("name", &self.name, 253),
            ("namespace", &self.namespace, 63),
            ("uid", &self.uid, 64),
            ("resourceVersion", &self.resource_version, 64),
            ("fieldPath", &self.field_path, 253),
        ] {
            if value.as_ref().is_some_and(|v| v.len() > max || v.chars().any(char::is_control)) {
                errors.push(path.child(field).error(format!("at most {max} printable bytes")));
            }
        }
    }
}

fn word(value: &str, path: &FieldPath, errors: &mut Vec<FieldError>) {
    if value.is_empty() {
        errors.push(path.error("required"));
    } else if value.len() > MAX_WORD || value.chars().any(|c| c.is_control() || c.is_whitespace()) {
        errors.push(path.error(format!("at most {MAX_WORD} bytes, without spaces")));
    }
}

impl Validate for Event {
    fn validate(&self, root: &FieldPath, errors: &mut Vec<FieldError>) {
        if self.api_version != EVENTS_API_VERSION {
            errors.push(root.child("apiVersion").error(format!("must be {EVENTS_API_VERSION}")));
        }
        if self.kind != EVENT_KIND {
            errors.push(root.child("kind").error(format!("must be {EVENT_KIND}")));
        }
        self.metadata.validate(&root.child("metadata"), errors);
        let micro = |t: &MicroTime, path: FieldPath, errors: &mut Vec<FieldError>| {
            if t.parse().is_none() {
                errors.push(path.error(
                    "must be an RFC 3339 time in UTC with microseconds, e.g. 2026-01-02T03:04:05.000000Z",
                ));
            }
        };
        micro(&self.event_time, root.child("eventTime"), errors);
        if let Some(series) = &self.series {
            let at = root.child("series");
            if !(1..=MAX_COUNT).contains(&series.count) {
                errors.push(at.child("count").error(format!("must be between 1 and {MAX_COUNT}")));
            }
            micro(&series.last_observed_time, at.child("lastObservedTime"), errors);
        }
        word(&self.reporting_controller, &root.child("reportingController"), errors);
        word(&self.reporting_instance, &root.child("reportingInstance"), errors);
        word(&self.action, &root.child("action"), errors);
        word(&self.reason, &root.child("reason"), errors);
        self.regarding.validate(&root.child("regarding"), errors);
        if self.regarding.kind.is_none() || self.regarding.name.is_none() {
            errors.push(root.child("regarding").error("must name the object's kind and name"));
        }
        // An event lives beside its object (a cluster-scoped object's in `default`), so that a
        // namespace's events are about that namespace's objects, as in Kubernetes.
        let home = self.regarding.namespace.as_deref().filter(|ns| !ns.is_empty()).unwrap_or("default");
        if self.metadata.namespace.as_deref().is_some_and(|ns| !ns.is_empty() && ns != home) {
            errors.push(
                root.child("metadata")
                    .child("namespace")
                    .error(format!("must be the namespace of the object it is about ({home})")),
            );
        }
        if let Some(related) = &self.related {
            related.validate(&root.child("related"), errors);
        }
        if self.note.as_ref().is_some_and(|n| n.len() > MAX_NOTE) {
            errors.push(root.child("note").error(format!("at most {MAX_NOTE} bytes")));
        }
        if let Some(source) = &self.deprecated_source {
            for (field, value) in [("component", &source.component), ("host", &source.host)] {
                if value.as_ref().is_some_and(|v| v.len() > 253) {
                    errors.push(root.child("deprecatedSource").child(field).error("at most 253 bytes"));
                }
            }
        }
        if self.deprecated_count.is_some_and(|c| !(0..=MAX_COUNT).contains(&c)) {
            errors.push(root.child("deprecatedCount").error(format!("must be between 0 and {MAX_COUNT}")));
        }
    }
}

/// The facts of the Event kind, for [`super::KINDS`].
pub const INFO: KindInfo = KindInfo {
    group: EVENTS_GROUP,
    version: "v1",
    api_version: EVENTS_API_VERSION,
    kind: EVENT_KIND,
    plural: "events",
    singular: "event",
    short_names: &["ev"],
    categories: &[],
    scope: Scope::Namespaced,
    has_status: false,
    signed: false,
    description: "What happened to an object and why (a placement, a pull, a start, a probe, an eviction), from the controllers and node agents.",
    schema,
    check,
};

fn schema() -> schemars::Schema {
    let mut schema =
        schemars::generate::SchemaSettings::draft2020_12().into_generator().into_root_schema_for::<Event>();
    let props = schema.get_mut("properties").and_then(Value::as_object_mut).expect("a struct has properties");
    props.insert("apiVersion".into(), json!({ "type": "string", "const": EVENTS_API_VERSION }));
    props.insert("kind".into(), json!({ "type": "string", "const": EVENT_KIND }));
    schema.insert("title".into(), EVENT_KIND.into());
    schema.insert("description".into(), INFO.description.into());
    schema.insert(
        "x-kubernetes-group-version-kind".into(),
        json!([{ "group": EVENTS_GROUP, "version": "v1", "kind": EVENT_KIND }]),
    );
    schema
}

/// Decodes `value` as an Event (reporting the path of a type error) and validates it.
pub fn decode(value: &Value) -> Result<Event, Vec<FieldError>> {
    let event: Event = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        vec![FieldError { path, message: e.into_inner().to_string() }]
    })?;
    let mut errors = Vec::new();
    event.validate(&FieldPath::root(), &mut errors);
    if errors.is_empty() { Ok(event) } else { Err(errors) }
}

fn check(value: &Value) -> Result<(), Vec<FieldError>> {
    decode(value).map(drop)
}

/// The name an emitter gives the event of `reason` about `regarding` reported by `controller`
/// (`instance`): the regarding object's name and a digest of the rest, so that the same event
/// again is the same object (its series counts it) whoever restarts, and no two objects'
/// events share a name.
pub fn name_for(regarding: &ObjectReference, reason: &str, controller: &str, instance: &str) -> String {
    let mut h = Sha256::new();
    for part in [
        regarding.kind.as_deref().unwrap_or_default(),
        regarding.namespace.as_deref().unwrap_or_default(),
        regarding.name.as_deref().unwrap_or_default(),
        regarding.uid.as_deref().unwrap_or_default(),
        reason,
        controller,
        instance,
    ] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let digest: String = h.finalize()[..8].iter().map(|b| format!("{b:02x}")).collect();
    // Names are at most 253 bytes; the digest keeps them apart when the prefix is cut.
    let base: String = regarding.name.as_deref().unwrap_or("event").chars().take(200).collect();
    format!("{}.{digest}", base.trim_end_matches(['-', '.']))
}

/// The stored Event (`events.k8s.io/v1`, as JSON) as a core `v1` Event: `regarding` becomes
/// `involvedObject`, `note` `message`, `reportingController` `reportingComponent` and the
/// source's component; the first and last times and the count come from the deprecated
/// fields when set, else from `eventTime` and `series` (so clients that read only the old
/// fields show the same thing).
pub fn to_core_v1(event: &Value) -> Value {
    let get = |k: &str| event.get(k).cloned().filter(|v| !v.is_null());
    let seconds = |micro: &Value| -> Value {
        micro
            .as_str()
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
            .map(|t| Time(t.to_utc()).to_rfc3339().into())
            .unwrap_or(Value::Null)
    };
    let event_time = get("eventTime").unwrap_or(Value::Null);
    let series = get("series");
    let first = get("deprecatedFirstTimestamp").unwrap_or_else(|| seconds(&event_time));
    let last = get("deprecatedLastTimestamp").unwrap_or_else(|| {
        seconds(series.as_ref().and_then(|s| s.get("lastObservedTime")).unwrap_or(&event_time))
    });
    let count = get("deprecatedCount")
        .or_else(|| series.as_ref().and_then(|s| s.get("count")).cloned())
        .unwrap_or_else(|| 1.into());
    let controller = get("reportingController").unwrap_or_else(|| "".into());
    let source = get("deprecatedSource").unwrap_or_else(|| json!({ "component": controller }));
    let mut out = json!({
        "apiVersion": "v1",
        "kind": EVENT_KIND,
        "metadata": get("metadata").unwrap_or_else(|| json!({})),
        "involvedObject": get("regarding").unwrap_or_else(|| json!({})),
        "reason": get("reason").unwrap_or_else(|| "".into()),
        "message": get("note").unwrap_or_else(|| "".into()),
        "source": source,
        "firstTimestamp": first,
        "lastTimestamp": last,
        "count": count,
        "type": get("type").unwrap_or_else(|| "".into()),
        "eventTime": event_time,
        "reportingComponent": controller,
        "reportingInstance": get("reportingInstance").unwrap_or_else(|| "".into()),
    });
    let map = out.as_object_mut().expect("made as a map");
    for (from, to) in [("series", "series"), ("related", "related"), ("action", "action")] {
        if let Some(v) = get(from) {
            map.insert(to.into(), v);
        }
    }
    map.retain(|_, v| !v.is_null());
    out
}

/// The stored field a core `v1` field selector names (`involvedObject.name` →
/// `regarding.name`, `source` → `reportingController`, …); `None`: no such field.
pub fn core_field(path: &str) -> Option<String> {
    if let Some(rest) = path.strip_prefix("involvedObject.") {
        return Some(format!("regarding.{rest}"));
    }
    Some(
        match path {
            "message" => "note",
            "source" | "reportingComponent" => "reportingController",
            "metadata.name" | "metadata.namespace" | "reason" | "type" | "reportingInstance" | "action" => {
                path
            }
            _ => return None,
        }
        .to_owned(),
    )
}

/// The stored field an `events.k8s.io/v1` field selector names; `None`: no such field.
/// (Kubernetes selects on these: `regarding.*`, `reason`, `type`, `reportingController`, the
/// object's name and namespace.)
pub fn field(path: &str) -> Option<String> {
    let known = path.starts_with("regarding.")
        || matches!(
            path,
            "metadata.name"
                | "metadata.namespace"
                | "reason"
                | "type"
                | "reportingController"
                | "reportingInstance"
                | "action"
                | "note"
        );
    known.then(|| path.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> Value {
        json!({
            "apiVersion": EVENTS_API_VERSION, "kind": "Event",
            "metadata": { "name": "web-1.abc", "namespace": "default" },
            "eventTime": "2026-01-02T03:04:05.000006Z",
            "reportingController": "univrs.io/scheduler", "reportingInstance": "member-1",
            "action": "Binding", "reason": "Scheduled",
            "regarding": { "apiVersion": "univrs.io/v1", "kind": "Replica", "name": "web-1", "namespace": "default", "uid": "u1" },
            "note": "placed on n1", "type": "Normal",
        })
    }

    #[test]
    fn a_well_formed_event_passes_and_every_bound_is_checked() {
        check(&event()).unwrap();
        let mut e = event();
        e["note"] = "x".repeat(MAX_NOTE + 1).into();
        e["reason"] = "Two words".into();
        e["eventTime"] = "2026-01-02T03:04:05Z".into();
        e["series"] = json!({ "count": 0, "lastObservedTime": "2026-01-02T03:04:05.000000Z" });
        e["regarding"] = json!({ "kind": "Replica" });
        e["type"] = "Fatal".into();
        let errors = check(&e).unwrap_err();
        // A type error is reported first, alone.
        assert_eq!(errors[0].path, "type", "{errors:?}");
        e["type"] = "Warning".into();
        let paths: Vec<String> = check(&e).unwrap_err().into_iter().map(|e| e.path).collect();
        for p in ["note", "reason", "eventTime", "series.count", "regarding"] {
            assert!(paths.iter().any(|x| x == p), "{p} not in {paths:?}");
        }
    }

    #[test]
    fn the_core_form_says_the_same_thing_in_the_old_words() {
        let mut e = event();
        let core = to_core_v1(&e);
        assert_eq!(core["apiVersion"], "v1");
        assert_eq!(core["involvedObject"]["name"], "web-1");
        assert_eq!(core["message"], "placed on n1");
        assert_eq!(core["source"]["component"], "univrs.io/scheduler");
        assert_eq!(core["firstTimestamp"], "2026-01-02T03:04:05Z");
        assert_eq!(core["lastTimestamp"], "2026-01-02T03:04:05Z");
        assert_eq!(core["count"], 1);
        e["series"] = json!({ "count": 4, "lastObservedTime": "2026-01-02T03:09:05.000000Z" });
        let core = to_core_v1(&e);
        assert_eq!(core["count"], 4);
        assert_eq!(core["lastTimestamp"], "2026-01-02T03:09:05Z");
        assert_eq!(core["series"]["count"], 4);
    }

    #[test]
    fn core_field_selectors_name_stored_fields() {
        assert_eq!(core_field("involvedObject.uid").as_deref(), Some("regarding.uid"));
        assert_eq!(core_field("source").as_deref(), Some("reportingController"));
        assert_eq!(core_field("type").as_deref(), Some("type"));
        assert_eq!(core_field("spec.nodeName"), None);
        assert_eq!(field("regarding.name").as_deref(), Some("regarding.name"));
        assert_eq!(field("involvedObject.name"), None);
    }

    #[test]
    fn the_same_event_has_the_same_name_and_others_do_not() {
        let r = ObjectReference {
            kind: Some("Replica".into()),
            name: Some("web-1".into()),
            uid: Some("u".into()),
            ..Default::default()
        };
        let a = name_for(&r, "Scheduled", "c", "i");
        assert_eq!(a, name_for(&r, "Scheduled", "c", "i"));
        assert!(a.starts_with("web-1."));
        assert_ne!(a, name_for(&r, "FailedScheduling", "c", "i"));
        // The longest valid name: labels of 63 characters, 253 in all.
        let name = ["a".repeat(63), "b".repeat(63), "c".repeat(63), "d".repeat(61)].join(".");
        let long = ObjectReference { name: Some(name), ..r };
        assert!(name_for(&long, "x", "c", "i").len() <= 253);
        crate::validation::check_dns1123_subdomain(&name_for(&long, "x", "c", "i")).unwrap();
    }
}
