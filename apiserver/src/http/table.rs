//! Server-side printing: a `meta.k8s.io` `Table` instead of the objects when the client asks for
//! one (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`), as `kubectl get` does. kubectl
//! prints the columns the server chooses, so this is where each kind's `kubectl get` columns
//! (and `-o wide` ones, priority 1) are defined.
//!
//! [`table`] is pure (the caller passes the time in); [`Format`] is the thin request-facing shell.

use api::KindInfo;
use axum::Json;
use axum::http::header::ACCEPT;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::status;

/// What each row carries besides its cells (`?includeObject=`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IncludeObject {
    /// No object.
    None,
    /// A `PartialObjectMetadata` with the object's `metadata` (what kubectl needs for labels,
    /// namespaces and sorting); the default.
    #[default]
    Metadata,
    /// The whole object.
    Object,
}

impl IncludeObject {
    fn parse(value: &str) -> Option<Self> {
        match value {
            "None" => Some(Self::None),
            "Metadata" => Some(Self::Metadata),
            "Object" => Some(Self::Object),
            _ => None,
        }
    }
}

/// The `meta.k8s.io` version of `Table` the `Accept` header asks for first, if any: `v1` or
/// `v1beta1` (older clients). `None` when a plain JSON object comes first or no Table is wanted.
pub fn table_version(accept: &str) -> Option<&'static str> {
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or_default();
        let params: Vec<(&str, &str)> = parts
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k.trim(), v.trim().trim_matches('"')))
            .collect();
        let param = |name: &str| params.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| *v);
        let json = media.eq_ignore_ascii_case("application/json");
        let anything = media == "*/*" || media.eq_ignore_ascii_case("application/*");
        match param("as") {
            None if json || anything => return None,
            Some("Table") if json && param("g") == Some("meta.k8s.io") => match param("v") {
                Some("v1") => return Some("v1"),
                Some("v1beta1") => return Some("v1beta1"),
                _ => {}
            },
            // A representation this server does not make (protobuf, PartialObjectMetadata…):
            // look at the next one.
            _ => {}
        }
    }
    None
}

/// How a GET response is to be rendered: the objects as they are, or a Table of them.
#[derive(Clone, Copy, Debug, Default)]
pub struct Format {
    table: Option<(&'static str, IncludeObject)>,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Format {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Response> {
        let accept = parts.headers.get(ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or_default();
        let Some(version) = table_version(accept) else { return Ok(Self::default()) };
        let requested =
            parts.uri.query().unwrap_or_default().split('&').find_map(|kv| kv.strip_prefix("includeObject="));
        let include = match requested {
            None | Some("") => IncludeObject::default(),
            Some(v) => IncludeObject::parse(v).ok_or_else(|| {
                let message = format!("includeObject {v:?} is not one of None, Metadata, Object");
                status::failure(400, "BadRequest", &message, json!({}))
            })?,
        };
        Ok(Self { table: Some((version, include)) })
    }
}

impl Format {
    /// The Table of a list's `items`, with the list's `metadata` (its `resourceVersion` and,
    /// for a page, `continue` and `remainingItemCount`), if a Table was asked for.
    pub fn table_of_list(&self, kind: &KindInfo, items: &[Value], metadata: &Value) -> Option<Response> {
        let (version, include) = self.table?;
        let rv = metadata.get("resourceVersion").and_then(Value::as_str).unwrap_or_default();
        let mut table = table(kind, items, include, rv, Utc::now());
        table["metadata"] = metadata.clone();
        Some(respond(version, table))
    }

    /// Whether a Table was asked for.
    pub fn is_table(&self) -> bool {
        self.table.is_some()
    }

    /// One object, or its one-row Table.
    pub fn object(&self, kind: &KindInfo, object: Value) -> Response {
        let Some((version, include)) = self.table else { return Json(object).into_response() };
        let rv = object.pointer("/metadata/resourceVersion").and_then(Value::as_str).unwrap_or_default();
        let rv = rv.to_owned();
        respond(version, table(kind, std::slice::from_ref(&object), include, &rv, Utc::now()))
    }

    /// An object in a watch event: itself, or its one-row Table.
    pub fn watch_object(&self, kind: &KindInfo, object: Value) -> Value {
        let Some((version, include)) = self.table else { return object };
        let rv = object.pointer("/metadata/resourceVersion").and_then(Value::as_str).unwrap_or_default();
        let rv = rv.to_owned();
        let mut table = table(kind, std::slice::from_ref(&object), include, &rv, Utc::now());
        table["apiVersion"] = format!("meta.k8s.io/{version}").into();
        table
    }
}

fn respond(version: &str, mut table: Value) -> Response {
    table["apiVersion"] = format!("meta.k8s.io/{version}").into();
    Json(table).into_response()
}

/// A `meta.k8s.io/v1` `Table` of `objects` of `kind`: NAME, the kind's columns, AGE (from
/// `creationTimestamp`, relative to `now`), then the `-o wide` ones.
pub fn table(
    kind: &KindInfo,
    objects: &[Value],
    include: IncludeObject,
    resource_version: &str,
    now: DateTime<Utc>,
) -> Value {
    let columns = columns(kind.kind);
    let (narrow, wide): (Vec<&Column>, Vec<&Column>) = columns.iter().partition(|c| c.priority == 0);
    let mut definitions = vec![definition("Name", "string", "name", "Name of the object.", 0)];
    definitions.extend(narrow.iter().map(|c| definition(c.name, c.ty, "", c.description, 0)));
    definitions.push(definition("Age", "string", "", "Time since the object was created.", 0));
    definitions.extend(wide.iter().map(|c| definition(c.name, c.ty, "", c.description, c.priority)));

    let rows: Vec<Value> = objects
        .iter()
        .map(|object| {
            let mut cells = vec![text(object, "/metadata/name")];
            cells.extend(narrow.iter().map(|c| (c.cell)(object)));
            cells.push(age(object, now).into());
            cells.extend(wide.iter().map(|c| (c.cell)(object)));
            let mut row = Map::new();
            row.insert("cells".into(), cells.into());
            match include {
                IncludeObject::None => {}
                IncludeObject::Metadata => {
                    let metadata = object.get("metadata").cloned().unwrap_or_else(|| json!({}));
                    let partial = json!({
                        "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": metadata,
                    });
                    row.insert("object".into(), partial);
                }
                IncludeObject::Object => {
                    row.insert("object".into(), object.clone());
                }
            }
            Value::Object(row)
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": { "resourceVersion": resource_version },
        "columnDefinitions": definitions,
        "rows": rows,
    })
}

/// A `columnDefinitions` entry.
fn definition(name: &str, ty: &str, format: &str, description: &str, priority: u8) -> Value {
    json!({ "name": name, "type": ty, "format": format, "description": description, "priority": priority })
}

/// One column of a kind: its header, OpenAPI type, what it means, whether only `-o wide` shows
/// it (priority 1), and how its cell is read from an object.
struct Column {
    name: &'static str,
    ty: &'static str,
    description: &'static str,
    priority: u8,
    cell: fn(&Value) -> Value,
}

const fn col(
    name: &'static str,
    ty: &'static str,
    description: &'static str,
    cell: fn(&Value) -> Value,
) -> Column {
    Column { name, ty, description, priority: 0, cell }
}

const fn wide(
    name: &'static str,
    ty: &'static str,
    description: &'static str,
    cell: fn(&Value) -> Value,
) -> Column {
    Column { name, ty, description, priority: 1, cell }
}

/// The columns of each kind, between NAME and AGE (and after AGE for the wide ones); a test
/// checks that every kind has some.
fn columns(kind: &str) -> Vec<Column> {
    use api::kinds::{
        AccountSpec, AgentGrantSpec, ApplySetSpec, ApprovalSpec, AttestationSpec, AuditEventSpec,
        CreditGrantSpec, LeaseSpec, NodeOfferSpec, NodeSpec, ReplicaSpec, ReputationSpec, TransferSpec,
        TrustPolicySpec, WorkloadSpec,
    };
    use api::object::KindSpec;
    match kind {
        WorkloadSpec::KIND => vec![
            col("Replicas", "integer", "Replicas wanted (spec.replicas, default 1).", |o| {
                int_or(o, "/spec/replicas", 1)
            }),
            col("Ready", "string", "Replicas running / replicas that exist.", |o| {
                let ready = o.pointer("/status/readyReplicas").and_then(Value::as_i64).unwrap_or(0);
                let exist = o.pointer("/status/replicas").and_then(Value::as_i64).unwrap_or(0);
                format!("{ready}/{exist}").into()
            }),
            wide("Image", "string", "The container image, or the rootfs when no image is set.", |o| {
                if o.pointer("/spec/image").is_some() {
                    text(o, "/spec/image")
                } else {
                    text(o, "/spec/rootfs")
                }
            }),
            wide("Trust-Policy", "string", "The TrustPolicy placement obeys.", |o| {
                text(o, "/spec/trustPolicy")
            }),
            wide("Signer", "string", "The did:key that signed the workload, abbreviated.", signer),
        ],
        ReplicaSpec::KIND => vec![
            col(
                "Ready",
                "string",
                "Whether the replica is ready (running, passing its readiness probe).",
                |o| {
                    let ready = serde_json::from_value::<api::kinds::ReplicaStatus>(o["status"].clone())
                        .is_ok_and(|s| s.is_ready());
                    Value::from(if ready { "1/1" } else { "0/1" })
                },
            ),
            col(
                "Status",
                "string",
                "The phase, or CrashLoopBackOff while waiting to be started again.",
                |o| match o.pointer("/status/reason").and_then(Value::as_str) {
                    Some(r @ api::kinds::CRASH_LOOP_BACK_OFF) => Value::from(r),
                    _ => text_or(o, "/status/phase", "Pending"),
                },
            ),
            col("Restarts", "integer", "How many times the process was restarted.", |o| {
                int_or(o, "/status/restarts", 0)
            }),
            col("Node", "string", "The node the replica is bound to.", |o| text(o, "/spec/nodeName")),
            wide("Workload", "string", "The Workload the replica belongs to.", |o| text(o, "/spec/workload")),
            wide("Last-Exit", "string", "How the last run ended.", |o| text(o, "/status/lastExitReason")),
            wide("IP", "string", "Its address on its node's network for its owner.", |o| {
                text(o, "/status/podIP")
            }),
            wide("Ports", "string", "The node's ports published to it.", |o| {
                match o.pointer("/status/publishedPorts").and_then(Value::as_array) {
                    Some(p) if !p.is_empty() => {
                        Value::from(p.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(","))
                    }
                    _ => Value::from(NONE),
                }
            }),
        ],
        TrustPolicySpec::KIND => vec![
            col("Min-Reputation", "number", "Lowest reputation a node and its operator may have.", |o| {
                text(o, "/spec/minReputation")
            }),
            col("Jurisdictions", "string", "Countries placement is allowed in.", |o| {
                list(o, "/spec/allowedJurisdictions")
            }),
            col("Eligible-Nodes", "integer", "Nodes that satisfy the policy.", |o| {
                text(o, "/status/eligibleNodes")
            }),
            wide("Signer", "string", "The did:key that signed the policy, abbreviated.", signer),
        ],
        NodeOfferSpec::KIND => vec![
            col("Node", "string", "The Node offered.", |o| text(o, "/spec/node")),
            col("CPU", "string", "CPU offered.", |o| text(o, "/spec/resources/cpu")),
            col("Memory", "string", "Memory offered.", |o| text(o, "/spec/resources/memory")),
            col("Jurisdiction", "string", "Country the node is in.", |o| text(o, "/spec/jurisdiction")),
            col("Phase", "string", "Whether the offer is active.", |o| {
                text_or(o, "/status/phase", "Pending")
            }),
            wide("Region", "string", "Region within the jurisdiction.", |o| text(o, "/spec/region")),
            wide("Price-CPU", "string", "Credits per core-hour.", |o| text_or(o, "/spec/price/cpu", "0")),
            wide("Operator", "string", "The did:key that signed the offer, abbreviated.", signer),
        ],
        NodeSpec::KIND => vec![
            col("Status", "string", "Ready, NotReady or Unknown (the Ready condition).", node_status),
            col("Operator", "string", "The operator's did:key, abbreviated.", |o| did(o, "/spec/operator")),
            col("CPU", "string", "CPU capacity.", |o| text(o, "/spec/capacity/cpu")),
            col("Memory", "string", "Memory capacity.", |o| text(o, "/spec/capacity/memory")),
            wide("Addresses", "string", "Multiaddrs the node listens on.", |o| list(o, "/spec/addresses")),
            wide("Runtime", "string", "The container runtime of the node agent.", |o| {
                text(o, "/status/runtime")
            }),
        ],
        CreditGrantSpec::KIND => vec![
            col("Grantee", "string", "Who may spend the credit, abbreviated.", |o| did(o, "/spec/grantee")),
            col("Limit", "string", "The credit line.", |o| text(o, "/spec/limit")),
            col("Used", "string", "Credit drawn so far.", |o| text_or(o, "/status/used", "0")),
            col("Phase", "string", "Active or Expired.", |o| text_or(o, "/status/phase", "Active")),
            wide("Expires", "string", "When the grant ends.", |o| text(o, "/spec/expires")),
            wide("Granter", "string", "The did:key that signed the grant, abbreviated.", signer),
        ],
        AttestationSpec::KIND => vec![
            col("Subject-Kind", "string", "Operator or Node.", |o| text(o, "/spec/subjectKind")),
            col("Subject", "string", "Who is vouched for.", |o| did(o, "/spec/subject")),
            col("Accepted", "boolean", "Whether the reputation controller counts it.", |o| {
                o.pointer("/status/accepted").and_then(Value::as_bool).unwrap_or(false).into()
            }),
            wide("Weight", "number", "The weight it carries.", |o| text(o, "/status/weight")),
            wide("Attester", "string", "The did:key that signed it, abbreviated.", signer),
        ],
        ReputationSpec::KIND => vec![
            col("Subject-Kind", "string", "Operator or Node.", |o| text(o, "/spec/subjectKind")),
            col("Subject", "string", "Whose reputation.", |o| did(o, "/spec/subject")),
            col("Composite", "number", "The weighted score, 0 to 1.", |o| {
                text_or(o, "/status/composite", "0")
            }),
            wide("Uptime", "number", "Share of heartbeats seen.", |o| text_or(o, "/status/uptime", "0")),
            wide("Reliability", "number", "Replicas that ran as asked.", |o| {
                text_or(o, "/status/reliability", "0")
            }),
            wide("Honesty", "number", "Resources delivered versus offered.", |o| {
                text_or(o, "/status/honesty", "0")
            }),
        ],
        TransferSpec::KIND => vec![
            col(
                "From",
                "string",
                "The paying account (a payment's signer), abbreviated.",
                |o| match present(o, "/spec/from") {
                    Some(_) => did(o, "/spec/from"),
                    None => signer(o),
                },
            ),
            col("To", "string", "The paid account, abbreviated.", |o| did(o, "/spec/to")),
            col("Amount", "string", "Credits moved.", |o| text(o, "/spec/amount")),
            col("Reason", "string", "Metering or Payment.", |o| text(o, "/spec/reason")),
            col("Phase", "string", "Committed or Refused.", |o| text_or(o, "/status/phase", "Pending")),
            wide("Replica", "string", "The metered replica (namespace/name).", |o| text(o, "/spec/replica")),
            wide("Memo", "string", "A note from the sender.", |o| text(o, "/spec/memo")),
        ],
        LeaseSpec::KIND => vec![
            col("Holder", "string", "Who holds the lease.", |o| text(o, "/spec/holderIdentity")),
            wide("Duration", "integer", "Seconds a holder keeps the lease without renewing.", |o| {
                text(o, "/spec/leaseDurationSeconds")
            }),
            wide("Renewed", "string", "When the holder last renewed.", |o| text(o, "/spec/renewTime")),
        ],
        AccountSpec::KIND => vec![
            col("Owner", "string", "Whose account, abbreviated.", |o| did(o, "/spec/owner")),
            col("Balance", "string", "What the owner is owed in all, less what it owes.", |o| {
                text_or(o, "/status/balance", "0")
            }),
            col("Lines", "integer", "Counterparties it has traded with.", |o| {
                o.pointer("/status/lines").and_then(Value::as_array).map_or(0, Vec::len).into()
            }),
            wide("Transfers", "integer", "Committed transfers to or from the owner.", |o| {
                text_or(o, "/status/transfers", "0")
            }),
        ],
        AgentGrantSpec::KIND => vec![
            col("Agent", "string", "The agent's did:key, abbreviated.", |o| did(o, "/spec/agent")),
            col("Rules", "integer", "How many rules it has.", |o| {
                o.pointer("/spec/rules").and_then(Value::as_array).map_or(0, Vec::len).into()
            }),
            col("Expires", "string", "When the grant ends.", |o| text(o, "/spec/expires")),
            wide("Spending-Cap", "string", "The most credits the agent may pay.", |o| {
                text(o, "/spec/spendingCap")
            }),
            wide("User", "string", "The did:key that signed the grant, abbreviated.", signer),
        ],
        ApprovalSpec::KIND => vec![
            col("Phase", "string", "Pending, Approved, Denied, Failed or Expired.", |o| {
                text_or(o, "/status/phase", "Pending")
            }),
            col("Verb", "string", "What the agent asked to do.", |o| text(o, "/spec/request/verb")),
            col("Kind", "string", "The kind of the object.", |o| text(o, "/spec/request/kind")),
            col("Object", "string", "The object's name.", |o| text(o, "/spec/request/name")),
            col("Agent", "string", "The agent that asked, abbreviated.", |o| did(o, "/spec/agent")),
            wide("Expires", "string", "When it lapses undecided.", |o| text(o, "/spec/expires")),
        ],
        AuditEventSpec::KIND => vec![
            col("Agent", "string", "The agent's did:key, abbreviated.", |o| did(o, "/spec/agent")),
            col("Verb", "string", "The request's verb.", |o| text(o, "/spec/verb")),
            col("Resource", "string", "What it was for.", |o| text(o, "/spec/resource")),
            col("Name", "string", "The object's name.", |o| text(o, "/spec/name")),
            col("Decision", "string", "Allowed, PendingApproval or Refused.", |o| text(o, "/spec/decision")),
            wide("Code", "integer", "The HTTP code of the answer.", |o| text(o, "/spec/code")),
            wide("Grant", "string", "The grant that decided.", |o| text(o, "/spec/grant")),
        ],
        api::kinds::event::EVENT_KIND => vec![
            col("Type", "string", "Normal or Warning.", |o| text(o, "/type")),
            col("Reason", "string", "Why, in one word.", |o| text(o, "/reason")),
            col("Object", "string", "The object it is about.", |o| {
                let field = |p: &str| o.pointer(p).and_then(Value::as_str).unwrap_or_default();
                format!("{}/{}", field("/regarding/kind").to_lowercase(), field("/regarding/name")).into()
            }),
            col("Count", "integer", "How many times it happened.", |o| int_or(o, "/series/count", 1)),
            col("Message", "string", "What happened.", |o| text(o, "/note")),
            wide("Source", "string", "The controller that reported it.", |o| text(o, "/reportingController")),
            wide("Instance", "string", "Which copy of it (member or node).", |o| {
                text(o, "/reportingInstance")
            }),
        ],
        ApplySetSpec::KIND => vec![
            col(
                "Kinds",
                "string",
                "The kinds of the set's objects (applyset.kubernetes.io/contains-group-kinds).",
                |o| text(o, "/metadata/annotations/applyset.kubernetes.io~1contains-group-kinds"),
            ),
            col("Tooling", "string", "The tool managing the set (applyset.kubernetes.io/tooling).", |o| {
                text(o, "/metadata/annotations/applyset.kubernetes.io~1tooling")
            }),
            wide(
                "Id",
                "string",
                "The set's id, on each of its objects as applyset.kubernetes.io/part-of.",
                |o| text(o, "/metadata/labels/applyset.kubernetes.io~1id"),
            ),
            wide("User", "string", "The did:key that signed it, abbreviated.", signer),
        ],
        _ => vec![],
    }
}

const NONE: &str = "<none>";

fn present<'a>(o: &'a Value, pointer: &str) -> Option<&'a Value> {
    o.pointer(pointer).filter(|v| !v.is_null())
}

/// A field as text, as kubectl shows it; `<none>` when absent.
fn text(o: &Value, pointer: &str) -> Value {
    text_or(o, pointer, NONE)
}

fn text_or(o: &Value, pointer: &str, default: &str) -> Value {
    match present(o, pointer) {
        Some(Value::String(s)) => s.as_str().into(),
        Some(v @ (Value::Number(_) | Value::Bool(_))) => v.to_string().into(),
        Some(other) => other.to_string().into(),
        None => default.into(),
    }
}

fn int_or(o: &Value, pointer: &str, default: i64) -> Value {
    present(o, pointer).and_then(Value::as_i64).unwrap_or(default).into()
}

/// An array of strings joined with commas; `<none>` when absent or empty.
fn list(o: &Value, pointer: &str) -> Value {
    let items: Vec<&str> = present(o, pointer)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if items.is_empty() { NONE.into() } else { items.join(",").into() }
}

/// A did:key is 56 characters: the method prefix and the middle say nothing in a column.
fn abbreviate_did(s: &str) -> String {
    let key = s.strip_prefix("did:key:").unwrap_or(s);
    let chars: Vec<char> = key.chars().collect();
    if chars.len() <= 16 {
        return key.to_owned();
    }
    let head: String = chars[..8].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}…{tail}")
}

fn did(o: &Value, pointer: &str) -> Value {
    match present(o, pointer).and_then(Value::as_str) {
        Some(s) if s.starts_with("did:key:") => abbreviate_did(s).into(),
        _ => text(o, pointer),
    }
}

fn signer(o: &Value) -> Value {
    did(o, "/metadata/annotations/univrs.io~1signer")
}

/// As `kubectl get nodes`: the Ready condition, plus `SchedulingDisabled` for a cordoned node.
fn node_status(o: &Value) -> Value {
    let ready = present(o, "/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|c| c.get("type").and_then(Value::as_str) == Some("Ready"))
        .and_then(|c| c.get("status").and_then(Value::as_str));
    let status = match ready {
        Some("True") => "Ready",
        Some("False") => "NotReady",
        _ => "Unknown",
    };
    if o.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        format!("{status},SchedulingDisabled").into()
    } else {
        status.into()
    }
}

/// The AGE cell: `<unknown>` without a creation time, as kubectl.
fn age(o: &Value, now: DateTime<Utc>) -> String {
    match present(o, "/metadata/creationTimestamp").and_then(Value::as_str).map(DateTime::parse_from_rfc3339)
    {
        Some(Ok(created)) => human_duration((now - created.with_timezone(&Utc)).num_seconds()),
        _ => "<unknown>".into(),
    }
}

/// A duration the way kubectl prints ages: two significant units at most, coarser as it grows
/// (`45s`, `3m20s`, `12m`, `5h4m`, `20h`, `2d4h`, `30d`, `2y45d`).
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    let s = seconds.max(0);
    let (minutes, hours, days) = (s / 60, s / 3600, s / 86_400);
    let pair = |big: i64, u1: &str, small: i64, u2: &str| {
        if small == 0 { format!("{big}{u1}") } else { format!("{big}{u1}{small}{u2}") }
    };
    match () {
        _ if s < 120 => format!("{s}s"),
        _ if minutes < 10 => pair(minutes, "m", s % 60, "s"),
        _ if minutes < 180 => format!("{minutes}m"),
        _ if hours < 8 => pair(hours, "h", minutes % 60, "m"),
        _ if hours < 48 => format!("{hours}h"),
        _ if hours < 24 * 8 => pair(days, "d", hours % 24, "h"),
        _ if days < 365 * 2 => format!("{days}d"),
        _ if days < 365 * 8 => pair(days / 365, "y", days % 365, "d"),
        _ => format!("{}y", days / 365),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DID: &str = "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK";

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-10T12:00:00Z").unwrap().with_timezone(&Utc)
    }

    fn kind(name: &str) -> &'static KindInfo {
        api::kinds::by_kind(name).unwrap()
    }

    #[test]
    fn an_event_row_names_its_object_as_kubectl_does() {
        let e = json!({ "metadata": { "name": "w-0.x", "creationTimestamp": "2026-01-10T12:00:00Z" },
            "type": "Normal", "reason": "Started", "note": "started", "series": { "count": 3 },
            "regarding": { "kind": "Replica", "name": "w-0" } });
        let t = table(kind("Event"), &[e], IncludeObject::None, "1", now());
        assert_eq!(
            t["rows"][0]["cells"],
            json!(["w-0.x", "Normal", "Started", "replica/w-0", 3, "started", "0s", "<none>", "<none>"])
        );
    }

    #[test]
    fn every_kind_has_columns() {
        for k in &api::kinds::KINDS {
            assert!(!columns(k.kind).is_empty(), "{} has no columns: a kind missing from `columns`", k.kind);
        }
    }

    fn headers(t: &Value) -> Vec<(String, i64)> {
        t["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["name"].as_str().unwrap().to_owned(), c["priority"].as_i64().unwrap()))
            .collect()
    }

    fn workload() -> Value {
        json!({
            "apiVersion": "univrs.io/v1", "kind": "Workload",
            "metadata": {
                "name": "hello", "namespace": "default", "resourceVersion": "7",
                "creationTimestamp": "2026-01-08T08:00:00Z", "labels": { "app": "hello" },
                "annotations": { "univrs.io/signer": DID },
            },
            "spec": { "replicas": 2, "rootfs": "busybox", "trustPolicy": "eu-only" },
            "status": { "replicas": 2, "readyReplicas": 1 },
        })
    }

    #[test]
    fn a_workload_row_has_name_its_columns_age_then_the_wide_ones() {
        let t = table(kind("Workload"), &[workload()], IncludeObject::Metadata, "9", now());
        assert_eq!(t["kind"], "Table");
        assert_eq!(t["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(t["metadata"]["resourceVersion"], "9");
        let names: Vec<(String, i64)> = headers(&t);
        let expected = [
            ("Name", 0),
            ("Replicas", 0),
            ("Ready", 0),
            ("Age", 0),
            ("Image", 1),
            ("Trust-Policy", 1),
            ("Signer", 1),
        ];
        assert_eq!(names, expected.map(|(n, p)| (n.to_owned(), p)));
        assert_eq!(t["columnDefinitions"][0]["format"], "name");
        assert_eq!(
            t["rows"][0]["cells"],
            json!(["hello", 2, "1/2", "2d4h", "busybox", "eu-only", "z6MkhaXg…2doK"])
        );
        let object = &t["rows"][0]["object"];
        assert_eq!(object["kind"], "PartialObjectMetadata");
        assert_eq!(object["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(object["metadata"]["labels"]["app"], "hello");
        assert!(object.get("spec").is_none());
    }

    #[test]
    fn include_object_chooses_what_each_row_carries() {
        let all = table(kind("Workload"), &[workload()], IncludeObject::Object, "9", now());
        assert_eq!(all["rows"][0]["object"], workload());
        let none = table(kind("Workload"), &[workload()], IncludeObject::None, "9", now());
        assert!(none["rows"][0].get("object").is_none());
    }

    #[test]
    fn missing_fields_print_as_kubectl_prints_them() {
        let bare = json!({ "metadata": { "name": "x" }, "spec": {} });
        let t = table(kind("Workload"), std::slice::from_ref(&bare), IncludeObject::None, "1", now());
        assert_eq!(t["rows"][0]["cells"], json!(["x", 1, "0/0", "<unknown>", "<none>", "<none>", "<none>"]));
        let t = table(kind("Replica"), &[bare], IncludeObject::None, "1", now());
        assert_eq!(
            t["rows"][0]["cells"],
            json!(["x", "0/1", "Pending", 0, "<none>", "<unknown>", "<none>", "<none>", "<none>", "<none>"])
        );
        // Waiting to be started again: not ready, CrashLoopBackOff, how it last ended.
        let looping = json!({ "metadata": { "name": "y" }, "spec": { "workload": "w", "nodeName": "n1" },
            "status": { "phase": "Running", "restarts": 4, "reason": "CrashLoopBackOff", "lastExitReason": "Error",
                "conditions": [{ "type": "Ready", "status": "False" }] } });
        let t = table(kind("Replica"), &[looping], IncludeObject::None, "1", now());
        assert_eq!(
            t["rows"][0]["cells"],
            json!(["y", "0/1", "CrashLoopBackOff", 4, "n1", "<unknown>", "w", "Error", "<none>", "<none>"])
        );
        let running = json!({ "metadata": { "name": "z" }, "spec": { "workload": "w" }, "status": { "phase": "Running",
            "conditions": [{ "type": "Ready", "status": "True" }] } });
        let t = table(kind("Replica"), &[running], IncludeObject::None, "1", now());
        assert_eq!(
            (&t["rows"][0]["cells"][1], &t["rows"][0]["cells"][2]),
            (&json!("1/1"), &json!("Running"))
        );
    }

    #[test]
    fn node_status_reads_the_ready_condition() {
        let node = |conditions: Value, unschedulable: bool| {
            json!({ "metadata": { "name": "n" },
                    "spec": { "operator": DID, "unschedulable": unschedulable, "capacity": { "cpu": 4, "memory": "8Gi" } },
                    "status": { "conditions": conditions } })
        };
        let cells =
            |o: Value| table(kind("Node"), &[o], IncludeObject::None, "1", now())["rows"][0]["cells"].clone();
        let ready = json!([{ "type": "Ready", "status": "True" }]);
        assert_eq!(
            cells(node(ready.clone(), false)),
            json!(["n", "Ready", "z6MkhaXg…2doK", "4", "8Gi", "<unknown>", "<none>", "<none>"])
        );
        assert_eq!(cells(node(ready, true))[1], "Ready,SchedulingDisabled");
        assert_eq!(cells(node(json!([{ "type": "Ready", "status": "False" }]), false))[1], "NotReady");
        assert_eq!(cells(node(json!([]), false))[1], "Unknown");
    }

    #[test]
    fn every_kind_has_columns_and_rows_match_them() {
        for k in &api::kinds::KINDS {
            let object = json!({ "metadata": { "name": "x", "creationTimestamp": "2026-01-10T11:59:30Z" }, "spec": {} });
            let t = table(k, &[object], IncludeObject::None, "1", now());
            let n = t["columnDefinitions"].as_array().unwrap().len();
            assert!(n >= 3, "{}: only NAME and AGE", k.kind);
            assert_eq!(t["rows"][0]["cells"].as_array().unwrap().len(), n, "{}", k.kind);
            assert_eq!(t["rows"][0]["cells"][0], "x");
        }
    }

    #[test]
    fn a_nodeoffer_shows_what_is_offered_where() {
        let offer = json!({
            "metadata": { "name": "berlin-1" },
            "spec": { "node": "berlin-1", "resources": { "cpu": 4, "memory": "8Gi" }, "jurisdiction": "DE",
                      "region": "berlin", "price": { "cpu": 0.05 } },
        });
        let t = table(kind("NodeOffer"), &[offer], IncludeObject::None, "1", now());
        assert_eq!(
            t["rows"][0]["cells"],
            json!([
                "berlin-1",
                "berlin-1",
                "4",
                "8Gi",
                "DE",
                "Pending",
                "<unknown>",
                "berlin",
                "0.05",
                "<none>"
            ])
        );
    }

    #[test]
    fn ages_read_like_kubectl() {
        for (seconds, age) in [
            (-5, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (119, "119s"),
            (120, "2m"),
            (200, "3m20s"),
            (600, "10m"),
            (3 * 3600 - 1, "179m"),
            (3 * 3600, "3h"),
            (5 * 3600 + 4 * 60, "5h4m"),
            (20 * 3600, "20h"),
            (2 * 86_400 + 4 * 3600, "2d4h"),
            (3 * 86_400, "3d"),
            (30 * 86_400, "30d"),
            (2 * 365 * 86_400 + 45 * 86_400, "2y45d"),
            (9 * 365 * 86_400, "9y"),
        ] {
            assert_eq!(human_duration(seconds), age, "{seconds}s");
        }
    }

    #[test]
    fn the_accept_header_chooses_a_table_in_order_of_preference() {
        let kubectl = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert_eq!(table_version(kubectl), Some("v1"));
        assert_eq!(table_version("application/json;as=Table;v=v1beta1;g=meta.k8s.io"), Some("v1beta1"));
        assert_eq!(table_version("application/json"), None);
        assert_eq!(table_version("*/*"), None);
        assert_eq!(table_version(""), None);
        assert_eq!(table_version("application/json, application/json;as=Table;v=v1;g=meta.k8s.io"), None);
        // A Table of another group or version, or protobuf, is passed over for what follows.
        assert_eq!(table_version("application/json;as=Table;v=v2;g=meta.k8s.io,application/json"), None);
        assert_eq!(
            table_version(
                "application/vnd.kubernetes.protobuf;as=Table;v=v1;g=meta.k8s.io, application/json; as=Table; v=v1; g=meta.k8s.io"
            ),
            Some("v1")
        );
    }

    #[tokio::test]
    async fn format_reads_accept_and_include_object_and_rejects_a_bad_one() {
        use axum::extract::FromRequestParts;
        let parts = |uri: &str, accept: &str| {
            axum::http::Request::builder().uri(uri).header(ACCEPT, accept).body(()).unwrap().into_parts().0
        };
        let table_accept = "application/json;as=Table;v=v1;g=meta.k8s.io";
        let f = Format::from_request_parts(&mut parts("/x?includeObject=Object", table_accept), &())
            .await
            .unwrap();
        assert_eq!(f.table, Some(("v1", IncludeObject::Object)));
        let f = Format::from_request_parts(&mut parts("/x", "application/json"), &()).await.unwrap();
        assert_eq!(f.table, None);
        let bad = Format::from_request_parts(&mut parts("/x?includeObject=All", table_accept), &())
            .await
            .unwrap_err();
        assert_eq!(bad.status(), 400);
        let one = f.object(kind("Workload"), workload());
        let body = axum::body::to_bytes(one.into_body(), usize::MAX).await.unwrap();
        assert_eq!(serde_json::from_slice::<Value>(&body).unwrap(), workload());
    }
}
