//! `ui network health`: the network's health figures from the live objects (`api::health`).

use anyhow::Context as _;
use api::credits::Credits;
use api::health::{Facts, NodeFacts};
use api::kinds::{AccountSpec, NodeOfferSpec, NodeSpec, ReputationSpec, TransferSpec};
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{Context, Outcome};
use crate::connection::ClusterArgs;
use crate::output::OutputArgs;

/// The network as a whole
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    Health(HealthArgs),
}

/// How decentralized, diverse, trusted and active the network is
///
/// Decentralization: the largest operators' share of ready CPU capacity and the Nakamoto
/// coefficient (the fewest operators that together hold more than half); jurisdictions of the
/// ready nodes; the distribution of operators' reputation; credit moved in the last day and its
/// velocity (volume over credit outstanding); nodes ready of registered. The controllers serve
/// the same figures as Prometheus gauges (univrs_network_*).
#[derive(Debug, clap::Args)]
pub struct HealthArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(flatten)]
    output: OutputArgs,
}

fn signer(o: &Value) -> Option<&str> {
    o.pointer("/metadata/annotations").and_then(|a| a.get(api::signing::SIGNER)).and_then(Value::as_str)
}

fn millicores(v: &Value) -> u64 {
    v.as_str()
        .and_then(|q| api::quantity::Quantity::parse(q).ok())
        .and_then(|q| q.millicores().ok())
        .map_or(0, |m| m.0)
}

pub fn run(ctx: &Context, cmd: &Command) -> anyhow::Result<Outcome> {
    let Command::Health(args) = cmd;
    let client = crate::connection::connect(ctx, &args.cluster)?;
    let list = |kind: &api::KindInfo| -> anyhow::Result<Vec<Value>> {
        let answer =
            client.list(kind, None, None, false).with_context(|| format!("cannot list {}", kind.plural))?;
        Ok(answer["items"].as_array().cloned().unwrap_or_default())
    };
    let nodes = list(api::kinds::info::<NodeSpec>())?;
    let offers = list(api::kinds::info::<NodeOfferSpec>())?;
    let reputations = list(api::kinds::info::<ReputationSpec>())?;
    let transfers = list(api::kinds::info::<TransferSpec>())?;
    let accounts = list(api::kinds::info::<AccountSpec>())?;
    let node_facts: Vec<NodeFacts<'_>> = nodes
        .iter()
        .filter(|n| n["metadata"]["deletionTimestamp"].is_null())
        .map(|n| {
            let name = n["metadata"]["name"].as_str().unwrap_or_default();
            let operator = n["spec"]["operator"].as_str().unwrap_or_default();
            // The node's offer as placement takes it: signed by its operator, smallest name.
            let offer = offers
                .iter()
                .filter(|o| o["spec"]["node"] == name && signer(o) == Some(operator))
                .min_by_key(|o| o["metadata"]["name"].as_str().unwrap_or_default());
            let own = millicores(&n["spec"]["capacity"]["cpu"]);
            let offered = offer.map_or(0, |o| millicores(&o["spec"]["resources"]["cpu"]));
            let cpu = match (offered, own) {
                (0, c) => c,
                (o, 0) => o,
                (o, c) => o.min(c),
            };
            let ready = n["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            NodeFacts {
                operator,
                ready,
                cpu_millicores: cpu,
                jurisdiction: offer.and_then(|o| o["spec"]["jurisdiction"].as_str()),
            }
        })
        .collect();
    let credits = |v: &Value| {
        v.as_str().and_then(|s| Credits::parse(s).ok()).or_else(|| serde_json::from_value(v.clone()).ok())
    };
    let facts = Facts {
        nodes: node_facts,
        operator_reputations: reputations
            .iter()
            .filter(|r| r["spec"]["subjectKind"] == "Operator")
            .map(|r| r["status"]["composite"].as_f64().unwrap_or(0.0))
            .collect(),
        transfers: transfers
            .iter()
            .filter(|t| t["status"]["phase"] == "Committed")
            .filter_map(|t| {
                let at = DateTime::parse_from_rfc3339(t["status"]["decidedAt"].as_str()?)
                    .ok()?
                    .with_timezone(&Utc);
                Some((credits(&t["spec"]["amount"])?, at))
            })
            .collect(),
        balances: accounts.iter().filter_map(|a| credits(&a["status"]["balance"])).collect(),
    };
    let h = api::health::health(&facts, Utc::now());
    if !args.output.print_structured(&h)? {
        println!("nodes ready            {}/{}", h.nodes_ready, h.nodes_total);
        println!("operators              {} (with a ready node)", h.operators);
        println!("capacity               {} cores ready", h.capacity_millicores as f64 / 1000.0);
        println!(
            "largest operator       {:.0}% of capacity (top 3: {:.0}%)",
            h.top_operator_share * 100.0,
            h.top3_operator_share * 100.0
        );
        println!("nakamoto coefficient   {} (operators that together hold > 50%)", h.nakamoto_coefficient);
        let j: Vec<String> = h.jurisdictions.iter().map(|(k, v)| format!("{k}:{v}")).collect();
        println!(
            "jurisdictions          {} ({}); largest {:.0}% of ready nodes",
            h.jurisdictions.len(),
            j.join(" "),
            h.top_jurisdiction_share * 100.0
        );
        let r = h.reputation_histogram;
        println!(
            "reputation             mean {:.3}; operators by fifth [0,.2) {} [.2,.4) {} [.4,.6) {} [.6,.8) {} [.8,1] {}",
            h.reputation_mean, r[0], r[1], r[2], r[3], r[4]
        );
        println!(
            "credit, last 24h       {} moved in {} transfers; velocity {:.3}",
            h.credit_volume_24h, h.transfers_24h, h.credit_velocity_24h
        );
        println!("credit outstanding     {} (sum of all balances: {})", h.credit_outstanding, h.balance_sum);
    }
    Ok(Outcome::Success)
}
