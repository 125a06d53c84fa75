//! Whether an applied object is what was asked for yet: kstatus' three answers (`Current`,
//! `InProgress`, `Failed`), as Flux and `kubectl`'s kstatus library compute them, for univrs'
//! kinds. Pure: `ui apply --wait` reads the objects, this says what they are.
//!
//! - Any object whose `status.observedGeneration` is behind `metadata.generation` is in
//!   progress (its controller has not seen the change yet).
//! - Workload: current when every replica runs on the current template (`Available` and
//!   `Progressing: Complete`); failed when a replica cannot be placed (`ReplicaFailure:
//!   Unschedulable`, with the scheduler's reason).
//! - Replica: current when Running (or Succeeded); failed when Failed.
//! - Node: current when `Ready` is True.
//! - Any other kind: by its conditions as kstatus reads them (`Ready`/`Available` True:
//!   current; `Stalled` True: failed); an object with no status is current once it exists.

use serde_json::Value;

/// What an object is, against what was asked of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    /// It is as asked.
    Current,
    /// Not yet, and why.
    InProgress(String),
    /// It will not be without a change, and why.
    Failed(String),
}

impl Status {
    /// `Current`, `InProgress` or `Failed`.
    pub fn name(&self) -> &'static str {
        match self {
            Status::Current => "Current",
            Status::InProgress(_) => "InProgress",
            Status::Failed(_) => "Failed",
        }
    }

    /// What it says (empty for `Current`).
    pub fn message(&self) -> &str {
        match self {
            Status::Current => "",
            Status::InProgress(m) | Status::Failed(m) => m,
        }
    }
}

fn condition<'a>(obj: &'a Value, type_: &str) -> Option<&'a Value> {
    obj.pointer("/status/conditions")?.as_array()?.iter().find(|c| c["type"] == type_)
}

fn is_true(c: Option<&Value>) -> bool {
    c.is_some_and(|c| c["status"] == "True")
}

fn text(c: Option<&Value>, field: &str) -> String {
    c.and_then(|c| c[field].as_str()).unwrap_or_default().to_owned()
}

/// The status of `obj`, of kind `kind`.
pub fn status(kind: &str, obj: &Value) -> Status {
    let generation = obj.pointer("/metadata/generation").and_then(Value::as_i64);
    let observed = obj.pointer("/status/observedGeneration").and_then(Value::as_i64);
    if let (Some(g), Some(o)) = (generation, observed)
        && o < g
    {
        return Status::InProgress(format!("the controller has seen generation {o} of {g}"));
    }
    match kind {
        "Workload" => workload(obj, generation.is_some() && observed.is_none()),
        "Replica" => replica(obj),
        "Node" => match condition(obj, "Ready") {
            Some(c) if c["status"] == "True" => Status::Current,
            c => Status::InProgress(format!("not ready: {}", text(c, "message"))),
        },
        _ => generic(obj),
    }
}

/// A Workload's status with what its replicas say beyond it: a replica that failed fails the
/// workload; one waiting to restart after exiting keeps it in progress (it is not running,
/// whatever the workload's count of running replicas said a moment ago).
pub fn workload_with_replicas(obj: &Value, replicas: &[Value]) -> Status {
    let base = status("Workload", obj);
    if matches!(base, Status::Failed(_)) {
        return base;
    }
    let name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    let mine = replicas.iter().filter(|r| {
        r.pointer("/spec/workload").and_then(Value::as_str) == Some(name)
            && r.pointer("/metadata/deletionTimestamp").is_none_or(Value::is_null)
    });
    for r in mine {
        let rname = r.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
        let message = r.pointer("/status/message").and_then(Value::as_str).unwrap_or_default();
        match r.pointer("/status/phase").and_then(Value::as_str) {
            Some("Failed") => return Status::Failed(format!("replica {rname} failed: {message}")),
            Some("Running") if message.contains("restarting in") => {
                return Status::InProgress(format!("replica {rname} keeps exiting: {message}"));
            }
            _ => {}
        }
    }
    base
}

fn workload(obj: &Value, unobserved: bool) -> Status {
    if unobserved || obj.get("status").is_none_or(Value::is_null) {
        return Status::InProgress("the workload controller has not seen it yet".to_owned());
    }
    let failure = condition(obj, "ReplicaFailure");
    if is_true(failure) && text(failure, "reason") == "Unschedulable" {
        return Status::Failed(format!("cannot be placed: {}", text(failure, "message")));
    }
    let available = condition(obj, "Available");
    let progressing = condition(obj, "Progressing");
    if is_true(available) && text(progressing, "reason") == "Complete" {
        return Status::Current;
    }
    let mut why = text(available, "message");
    if text(progressing, "reason") == "RollingOut" {
        why = format!("{why}; rolling out: {}", text(progressing, "message"));
    }
    Status::InProgress(if why.is_empty() { "waiting for replicas".to_owned() } else { why })
}

fn replica(obj: &Value) -> Status {
    let message = obj.pointer("/status/message").and_then(Value::as_str).unwrap_or_default();
    match obj.pointer("/status/phase").and_then(Value::as_str) {
        Some("Running" | "Succeeded") => Status::Current,
        Some("Failed") => Status::Failed(message.to_owned()),
        Some(phase) => Status::InProgress(format!("{phase}: {message}")),
        None => Status::InProgress("not started".to_owned()),
    }
}

fn generic(obj: &Value) -> Status {
    let stalled = condition(obj, "Stalled");
    if is_true(stalled) {
        return Status::Failed(text(stalled, "message"));
    }
    for type_ in ["Ready", "Available"] {
        if let Some(c) = condition(obj, type_) {
            return if c["status"] == "True" {
                Status::Current
            } else {
                Status::InProgress(format!("{type_}: {}", text(Some(c), "message")))
            };
        }
    }
    Status::Current
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn wl(generation: i64, status: Value) -> Value {
        json!({ "kind": "Workload", "metadata": { "name": "web", "generation": generation }, "status": status })
    }

    fn cond(type_: &str, status: &str, reason: &str, message: &str) -> Value {
        json!({ "type": type_, "status": status, "reason": reason, "message": message })
    }

    #[test]
    fn a_workload_is_current_when_every_replica_runs_the_current_template() {
        let ready = json!({ "observedGeneration": 2, "conditions": [
            cond("Available", "True", "ReplicasReady", "2/2 replicas running"),
            cond("Progressing", "False", "Complete", "2/2 replicas on the current template, 2 in all"),
            cond("ReplicaFailure", "False", "AllPlaced", "every replica is placed or being placed"),
        ]});
        assert_eq!(status("Workload", &wl(2, ready.clone())), Status::Current);
        // A newer generation the controller has not seen.
        assert!(
            matches!(status("Workload", &wl(3, ready)), Status::InProgress(m) if m.contains("generation 2 of 3"))
        );
        // Created, no status yet.
        assert!(matches!(status("Workload", &wl(1, Value::Null)), Status::InProgress(_)));
        let rolling = json!({ "observedGeneration": 2, "conditions": [
            cond("Available", "False", "ReplicasNotReady", "1/2 replicas running"),
            cond("Progressing", "True", "RollingOut", "1/2 replicas on the current template, 3 in all"),
        ]});
        assert_eq!(
            status("Workload", &wl(2, rolling)),
            Status::InProgress(
                "1/2 replicas running; rolling out: 1/2 replicas on the current template, 3 in all".into()
            )
        );
    }

    #[test]
    fn a_workload_that_cannot_be_placed_has_failed_with_the_schedulers_reason() {
        let stuck = json!({ "observedGeneration": 1, "conditions": [
            cond("Available", "False", "ReplicasNotReady", "0/1 replicas running"),
            cond("ReplicaFailure", "True", "Unschedulable", "web-0: 0/1 nodes available: 1 node: jurisdiction not allowed"),
        ]});
        let s = status("Workload", &wl(1, stuck));
        assert_eq!(s.name(), "Failed");
        assert!(s.message().contains("jurisdiction not allowed"), "{s:?}");
    }

    #[test]
    fn a_workload_whose_replica_failed_or_keeps_exiting_is_not_current() {
        let ready = wl(
            1,
            json!({ "observedGeneration": 1, "conditions": [
                cond("Available", "True", "ReplicasReady", "1/1 replicas running"),
                cond("Progressing", "False", "Complete", "1/1"),
            ]}),
        );
        let replica = |name: &str, workload: &str, phase: &str, message: &str| {
            json!({ "metadata": { "name": name }, "spec": { "workload": workload },
                    "status": { "phase": phase, "message": message } })
        };
        let running = replica("web-0", "web", "Running", "running in a container on n1");
        assert_eq!(workload_with_replicas(&ready, std::slice::from_ref(&running)), Status::Current);
        let looping = replica(
            "web-0",
            "web",
            "Running",
            "exited with code 3; restarting in 4 s (restartPolicy Always, restart 3)",
        );
        assert!(
            matches!(workload_with_replicas(&ready, &[looping]), Status::InProgress(m) if m.contains("keeps exiting"))
        );
        let failed = replica("web-0", "web", "Failed", "exited with code 3");
        assert_eq!(
            workload_with_replicas(&ready, &[failed]),
            Status::Failed("replica web-0 failed: exited with code 3".into())
        );
        // Another workload's replicas say nothing of this one.
        let other = replica("api-0", "api", "Failed", "exited with code 1");
        assert_eq!(workload_with_replicas(&ready, &[running, other]), Status::Current);
    }

    #[test]
    fn replicas_nodes_and_other_kinds() {
        let r = |phase: &str| json!({ "status": { "phase": phase, "message": "exited with code 1" } });
        assert_eq!(status("Replica", &r("Running")), Status::Current);
        assert_eq!(status("Replica", &r("Failed")), Status::Failed("exited with code 1".into()));
        assert!(matches!(status("Replica", &r("Pending")), Status::InProgress(_)));
        let node = |s: &str| json!({ "status": { "conditions": [cond("Ready", s, "NodeHeartbeat", "lease renewed")] } });
        assert_eq!(status("Node", &node("True")), Status::Current);
        assert!(matches!(status("Node", &node("False")), Status::InProgress(_)));
        // Kinds without a status are current once they exist; kstatus' conditions otherwise.
        assert_eq!(status("TrustPolicy", &json!({ "spec": {} })), Status::Current);
        let stalled = json!({ "status": { "conditions": [cond("Stalled", "True", "X", "stuck")] } });
        assert_eq!(status("Attestation", &stalled), Status::Failed("stuck".into()));
    }
}
