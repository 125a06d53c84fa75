//! `ui status`: your workloads, their replicas, where each runs and why a pending one waits.

use serde::Serialize;
use serde_json::Value;

use super::{Context, Outcome};
use crate::connection::ClusterArgs;
use crate::output::OutputArgs;

/// Show your workloads and their replicas
///
/// For each of your workloads (those signed by your identity) in the namespace, or every
/// workload of everyone in every namespace with -A: replicas wanted, existing and running,
/// and each replica with its phase, its node, and, for a pending one, why it is pending (from
/// the replica's status, e.g. what the scheduler found: "0/5 nodes available: 3 nodes:
/// jurisdiction not allowed; 2 nodes: operator denied").
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Every workload, of everyone, in every namespace
    #[arg(short = 'A', long = "all")]
    all_namespaces: bool,
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(flatten)]
    output: OutputArgs,
}

/// One workload: replicas wanted, existing and running, and each replica.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadReport {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// `spec.replicas`.
    pub desired: i64,
    /// How many replicas exist.
    pub replicas: i64,
    /// How many are ready (running, and passing their readiness probe if they have one).
    pub ready: i64,
    /// Each replica, by name.
    pub items: Vec<ReplicaReport>,
}

/// One replica: its phase, its node, and why it waits or how it ended.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaReport {
    /// Its name.
    pub name: String,
    /// `status.phase` (Pending when unset).
    pub phase: String,
    /// Running and ready (its `Ready` condition).
    pub ready: bool,
    /// Why it is to be replaced (its node no longer qualifies), if it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replacing: Option<String>,
    /// How its last run ended (`status.lastExitReason`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_exit_reason: Option<String>,
    /// The node it is bound to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// `status.reason`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `status.message`: for a pending replica, what the scheduler found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Its address on its node's network for its owner (`status.podIP`).
    #[serde(rename = "podIP", skip_serializing_if = "Option::is_none")]
    pub pod_ip: Option<String>,
    /// The node's ports published to it (`status.publishedPorts`: `HOSTPORT→PORT/PROTOCOL`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub published_ports: Vec<String>,
}

fn items(list: &Value) -> &[Value] {
    list["items"].as_array().map(Vec::as_slice).unwrap_or_default()
}

fn text(v: &Value) -> Option<String> {
    v.as_str().map(str::to_owned)
}

pub fn run(ctx: &Context, args: &Args) -> anyhow::Result<Outcome> {
    let client = crate::connection::connect(ctx, &args.cluster)?;
    let ns = (!args.all_namespaces).then(|| client.namespace().to_owned());
    // Yours (signed by your identity) unless -A; without an identity, everyone's.
    let me = if args.all_namespaces { None } else { ctx.acting_for().ok() };
    let report = report(&client, ns.as_deref(), me.as_ref())?;
    if args.output.print_structured(&report)? {
        return Ok(Outcome::Success);
    }
    if report.is_empty() {
        let whose = if me.is_some() { "No workloads of yours" } else { "No workloads" };
        let hint = if me.is_some() { " (-A shows everyone's)" } else { "" };
        println!("{whose}{}{hint}.", ns.map(|n| format!(" in namespace {n}")).unwrap_or_default());
    }
    for w in &report {
        let prefix = if args.all_namespaces { format!("{}/", w.namespace) } else { String::new() };
        println!("{prefix}{}: {}/{} ready, {} replicas", w.name, w.ready, w.desired, w.replicas);
        for r in &w.items {
            println!("  {}  {}  {}{}", r.name, r.state(), r.place(), r.network());
        }
    }
    Ok(Outcome::Success)
}

impl ReplicaReport {
    /// What it is doing, as `kubectl get pods` says it: the phase, or `CrashLoopBackOff`
    /// while it waits to be started again, or `Running, not ready`.
    pub fn state(&self) -> String {
        match (self.phase.as_str(), self.reason.as_deref()) {
            ("Running", Some(api::kinds::CRASH_LOOP_BACK_OFF)) => api::kinds::CRASH_LOOP_BACK_OFF.to_owned(),
            ("Running", _) if !self.ready => "Running, not ready".to_owned(),
            (phase, _) => phase.to_owned(),
        }
    }

    /// Its address and published ports while it runs: `, 10.77.0.2, publishes 8080→80/TCP`.
    pub fn network(&self) -> String {
        if self.phase != "Running" {
            return String::new();
        }
        let mut out = String::new();
        if let Some(ip) = &self.pod_ip {
            out.push_str(&format!(", {ip}"));
        }
        if !self.published_ports.is_empty() {
            out.push_str(&format!(", publishes {}", self.published_ports.join(" ")));
        }
        out
    }

    /// Where it runs, or why it waits: `on node-1`, `pending: 0/5 nodes available: …`.
    pub fn place(&self) -> String {
        if let (Some(node), Some(why)) = (&self.node, &self.replacing) {
            return format!("on {node}, to be replaced: {why}");
        }
        // Ended, not ready, or waiting on its node (a pull, a host port): the message says why.
        let ended = self.phase == "Failed"
            || self.phase == "Succeeded"
            || !self.ready && self.phase == "Running"
            || self.phase == "Pending" && self.reason.is_some();
        match (&self.node, &self.message) {
            (Some(node), Some(how)) if ended => format!("on {node}: {how}"),
            (Some(node), _) => format!("on {node}"),
            (None, Some(why)) => format!("pending: {why}"),
            (None, None) => "waiting for the scheduler".to_owned(),
        }
    }
}

/// The workloads in `ns` (every namespace when None) signed by `owner` (everyone's when
/// None), each with its replicas: what `ui status` shows, and the MCP `status` tool.
pub fn report(
    client: &crate::connection::Client,
    ns: Option<&str>,
    owner: Option<&api::identity::Did>,
) -> anyhow::Result<Vec<WorkloadReport>> {
    let workloads = client.list(api::kinds::info::<api::kinds::WorkloadSpec>(), ns, None, false)?;
    let replicas = client.list(api::kinds::info::<api::kinds::ReplicaSpec>(), ns, None, false)?;
    let me = owner;
    let mine = |w: &Value| match &me {
        None => true,
        Some(me) => {
            w.pointer("/metadata/annotations")
                .and_then(|a| a.get(api::signing::SIGNER))
                .and_then(Value::as_str)
                == Some(me.as_str())
        }
    };
    let mut report = Vec::new();
    for w in items(&workloads).iter().filter(|w| mine(w)) {
        let uid = &w["metadata"]["uid"];
        let wns = text(&w["metadata"]["namespace"]).unwrap_or_else(|| "default".into());
        let mut owned: Vec<ReplicaReport> = items(&replicas)
            .iter()
            .filter(|r| {
                r["metadata"]["namespace"] == w["metadata"]["namespace"]
                    && r["metadata"]["ownerReferences"]
                        .as_array()
                        .is_some_and(|o| o.iter().any(|o| &o["uid"] == uid))
            })
            .map(|r| ReplicaReport {
                name: text(&r["metadata"]["name"]).unwrap_or_default(),
                phase: text(&r["status"]["phase"]).unwrap_or_else(|| "Pending".into()),
                ready: serde_json::from_value::<api::kinds::ReplicaStatus>(r["status"].clone())
                    .is_ok_and(|s| s.is_ready()),
                last_exit_reason: text(&r["status"]["lastExitReason"]),
                replacing: text(&r["metadata"]["annotations"][api::kinds::DISRUPTION_ANNOTATION]),
                node: text(&r["spec"]["nodeName"]),
                reason: text(&r["status"]["reason"]),
                message: text(&r["status"]["message"]),
                pod_ip: text(&r["status"]["podIP"]),
                published_ports: r["status"]["publishedPorts"]
                    .as_array()
                    .map(|a| a.iter().filter_map(text).collect())
                    .unwrap_or_default(),
            })
            .collect();
        owned.sort_by(|a, b| a.name.cmp(&b.name));
        report.push(WorkloadReport {
            namespace: wns,
            name: text(&w["metadata"]["name"]).unwrap_or_default(),
            desired: w["spec"]["replicas"].as_i64().unwrap_or(1),
            replicas: owned.len() as i64,
            ready: owned.iter().filter(|r| r.ready).count() as i64,
            items: owned,
        });
    }
    Ok(report)
}
