//! `ui describe`: one object, readable by a person.

use api::Scope;
use api::signing::{SIGNATURE, SIGNED_AT, SIGNER};
use chrono::Utc;
use serde_json::{Map, Value};

use super::{Context, Outcome};
use crate::connection::ClusterArgs;
use crate::objects::{self, kind_named};
use crate::output::OutputArgs;
use crate::table::Table;

/// Show one object in detail
///
/// Name, namespace, labels, annotations (a signature is summarized as its signer and time),
/// age, then the spec and status as indented YAML, the conditions as a table and the events
/// about it (as `ui events --for`). With -o json or yaml, prints the object itself.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The kind: plural, singular or short name (`workloads`, `workload`, `wl`)
    kind: String,
    /// The object's name
    name: String,
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(flatten)]
    output: OutputArgs,
}

pub fn run(ctx: &Context, args: &Args) -> anyhow::Result<Outcome> {
    let kind = kind_named(&args.kind)?;
    let client = crate::connection::connect(ctx, &args.cluster)?;
    let ns = (kind.scope == Scope::Namespaced).then(|| client.namespace().to_owned());
    let obj = client.get(kind, ns.as_deref(), &args.name)?;
    if !args.output.print_structured(&obj)? {
        print!("{}", describe(&obj)?);
        print!("{}", super::events::section(&client, &obj));
    }
    Ok(Outcome::Success)
}

/// The text of `ui describe`.
fn describe(obj: &Value) -> anyhow::Result<String> {
    let empty = Map::new();
    let meta = obj.get("metadata").and_then(Value::as_object).unwrap_or(&empty);
    let field = |k: &str| meta.get(k).and_then(Value::as_str).unwrap_or_default();
    let mut out = String::new();
    let mut line = |label: &str, value: &str| out.push_str(&format!("{:<14}{value}\n", format!("{label}:")));
    line("Name", field("name"));
    if let Some(ns) = meta.get("namespace").and_then(Value::as_str) {
        line("Namespace", ns);
    }
    line("Kind", obj.get("kind").and_then(Value::as_str).unwrap_or_default());
    line("Labels", &pairs(meta.get("labels"), &[]));
    line("Annotations", &pairs(meta.get("annotations"), &[SIGNER, SIGNED_AT, SIGNATURE]));
    let ann = |k: &str| meta.get("annotations").and_then(|a| a.get(k)).and_then(Value::as_str);
    let signature = match (ann(SIGNER), ann(SIGNED_AT)) {
        (Some(signer), Some(at)) => format!("{signer} at {at}"),
        (Some(signer), None) => signer.to_owned(),
        _ => "<unsigned>".to_owned(),
    };
    line("Signed by", &signature);
    let created = field("creationTimestamp");
    line("Created", &format!("{created} ({} ago)", objects::age(obj, Utc::now())));
    if let Some(g) = meta.get("generation") {
        line("Generation", &g.to_string());
    }
    line("UID", field("uid"));
    if let Some(f) = meta.get("finalizers").and_then(Value::as_array).filter(|f| !f.is_empty()) {
        let names: Vec<&str> = f.iter().filter_map(Value::as_str).collect();
        line("Finalizers", &names.join(", "));
    }
    if let Some(spec) = obj.get("spec") {
        out.push_str("Spec:\n");
        out.push_str(&indented(spec)?);
    }
    let mut status = obj.get("status").cloned().unwrap_or(Value::Null);
    let conditions = status.as_object_mut().and_then(|s| s.remove("conditions"));
    if status.as_object().is_some_and(|s| !s.is_empty()) {
        out.push_str("Status:\n");
        out.push_str(&indented(&status)?);
    }
    if let Some(Value::Array(conditions)) = conditions {
        out.push_str("Conditions:\n");
        let mut t = Table {
            headers: ["TYPE", "STATUS", "REASON", "LAST TRANSITION", "MESSAGE"].map(String::from).to_vec(),
            rows: Vec::new(),
        };
        for c in &conditions {
            let s = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
            t.rows.push(vec![s("type"), s("status"), s("reason"), s("lastTransitionTime"), s("message")]);
        }
        for l in t.render().lines() {
            out.push_str(&format!("  {l}\n"));
        }
    }
    Ok(out)
}

/// `k=v` pairs, comma-separated, without `skip`; `<none>` when there are none.
fn pairs(map: Option<&Value>, skip: &[&str]) -> String {
    let pairs: Vec<String> = map
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter(|(k, _)| !skip.contains(&k.as_str()))
        .map(|(k, v)| format!("{k}={}", v.as_str().map_or_else(|| v.to_string(), str::to_owned)))
        .collect();
    if pairs.is_empty() { "<none>".into() } else { pairs.join("\n              ") }
}

/// YAML indented by two spaces.
fn indented(v: &Value) -> anyhow::Result<String> {
    Ok(objects::to_yaml(v)?.lines().map(|l| format!("  {l}\n")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_description_summarizes_the_signature_and_tabulates_conditions() {
        let obj = json!({
            "kind": "Workload",
            "metadata": {
                "name": "hello", "namespace": "default", "labels": {"app": "hello"},
                "annotations": {SIGNER: "did:key:z6Mk", SIGNED_AT: "2026-01-01T00:00:00Z", SIGNATURE: "c2ln", "team": "a"},
                "creationTimestamp": "2026-01-01T00:00:00Z",
            },
            "spec": {"replicas": 2},
            "status": {"readyReplicas": 1, "conditions": [{"type": "Ready", "status": "False", "reason": "Scheduling"}]},
        });
        let text = describe(&obj).unwrap();
        assert!(text.contains("Labels:       app=hello\n"), "{text}");
        assert!(text.contains("Annotations:  team=a\n"), "{text}");
        assert!(text.contains("Signed by:    did:key:z6Mk at 2026-01-01T00:00:00Z\n"), "{text}");
        assert!(text.contains("Spec:\n  replicas: 2\n"), "{text}");
        assert!(text.contains("Status:\n  readyReplicas: 1\n"), "{text}");
        assert!(text.contains("  TYPE    STATUS   REASON"), "{text}");
        assert!(!text.contains("c2ln"), "{text}");
    }
}
