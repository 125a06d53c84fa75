//! `ui reputation show DID|NODE`: a reputation, each of its scores, what each was computed
//! from, and how they make the composite.

use anyhow::{Context as _, bail};
use api::kinds::{ReputationSpec, ReputationStatus, SubjectKind};
use serde::Serialize;
use serde_json::Value;

use super::{Context, Outcome};
use crate::connection::ClusterArgs;
use crate::output::OutputArgs;

/// Reputations of operators and nodes, as the control plane computed them
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    Show(ShowArgs),
}

/// Show a reputation: each score, its evidence, and the composite
///
/// Scores are computed by the reputation controller from what the control plane observed:
/// heartbeats (uptime), replicas bound to the node (reliability), the limits applied to them
/// (honesty), time since first seen (age) and attestations weighted by global trust.
#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// An operator's did:key, or a node's name
    subject: String,
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(flatten)]
    output: OutputArgs,
}

/// One score with what it was computed from.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Component {
    /// `uptime`, `reliability`, `honesty`, `age` or `attestations`.
    pub name: &'static str,
    /// The score, 0 to 1.
    pub score: f64,
    /// Its weight in the composite.
    pub weight: f64,
    /// What it was computed from, in words.
    pub inputs: String,
}

/// A reputation as `ui reputation show` explains it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Shown {
    /// The Reputation object's name.
    pub name: String,
    /// Operator or node.
    pub subject_kind: SubjectKind,
    /// The operator's did:key or the node's name.
    pub subject: String,
    /// The weighted composite.
    pub composite: f64,
    /// When it was computed.
    pub observed_at: Option<String>,
    /// Each score.
    pub components: Vec<Component>,
    /// The stored status.
    pub status: ReputationStatus,
}

pub fn run(ctx: &Context, cmd: &Command) -> anyhow::Result<Outcome> {
    let Command::Show(args) = cmd;
    let client = crate::connection::connect(ctx, &args.cluster)?;
    let shown = show(&client, &args.subject)?;
    if !args.output.print_structured(&shown)? {
        println!("{} {} — composite {:.3}", kind_word(shown.subject_kind), shown.subject, shown.composite);
        if let Some(at) = &shown.observed_at {
            println!("observed at {at}");
        }
        let rows: Vec<Vec<String>> = shown
            .components
            .iter()
            .map(|c| {
                vec![
                    c.name.to_owned(),
                    format!("{:.3}", c.score),
                    format!("{:.2}", c.weight),
                    c.inputs.clone(),
                ]
            })
            .collect();
        super::credits::print_table(&["SCORE", "VALUE", "WEIGHT", "FROM"], rows);
        println!("composite = Σ weight × value / Σ weight");
    }
    Ok(Outcome::Success)
}

/// The reputation of `subject` (an operator's did:key or a node's name), each score with
/// its evidence: what `ui reputation show` and the MCP `reputation` tool show.
pub fn show(client: &crate::connection::Client, subject: &str) -> anyhow::Result<Shown> {
    let all = client
        .list(api::kinds::info::<ReputationSpec>(), None, None, false)
        .context("cannot list reputations")?;
    let found = all["items"].as_array().into_iter().flatten().find(|r| r["spec"]["subject"] == subject);
    let Some(r) = found else {
        let what = if subject.starts_with("did:") { "operator" } else { "node" };
        bail!(
            "no reputation for {what} {subject}: the reputation controller writes one for each registered node and its operator (ui get reputations lists them)"
        );
    };
    let spec: ReputationSpec =
        serde_json::from_value(r["spec"].clone()).context("the reputation cannot be read")?;
    let status: ReputationStatus = serde_json::from_value(r["status"].clone()).unwrap_or_default();
    Ok(explain(r, spec, status))
}

fn kind_word(k: SubjectKind) -> &'static str {
    match k {
        SubjectKind::Operator => "operator",
        SubjectKind::Node => "node",
    }
}

fn explain(r: &Value, spec: ReputationSpec, status: ReputationStatus) -> Shown {
    let e = status.evidence.clone().unwrap_or_default();
    let p = e.scoring.unwrap_or_default();
    let tally = |t: api::kinds::Tally, unit: &str| {
        format!(
            "{:.0} of {:.0} {unit} good (decayed, half-life {}), prior {}",
            t.good,
            t.total,
            seconds(p.half_life_seconds),
            seconds(p.prior_seconds)
        )
    };
    let age = e.first_seen.as_ref().map_or("never seen".to_owned(), |f| {
        format!(
            "first seen {}, full at {}",
            f.0.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            seconds(p.age_full_seconds)
        )
    });
    let components = vec![
        Component {
            name: "uptime",
            score: status.uptime,
            weight: p.uptime_weight,
            inputs: tally(e.uptime, "heartbeat seconds"),
        },
        Component {
            name: "reliability",
            score: status.reliability,
            weight: p.reliability_weight,
            inputs: tally(e.reliability, "replica-seconds"),
        },
        Component {
            name: "honesty",
            score: status.honesty,
            weight: p.honesty_weight,
            inputs: tally(e.honesty, "replica-seconds checked"),
        },
        Component { name: "age", score: status.age_factor, weight: p.age_weight, inputs: age },
        Component {
            name: "attestations",
            score: status.attestation_weight,
            weight: p.attestations_weight,
            inputs: format!(
                "{} attesters with standing; global trust {:.4} (normalized by the highest)",
                e.attesters, e.trust
            ),
        },
    ];
    Shown {
        name: r["metadata"]["name"].as_str().unwrap_or_default().to_owned(),
        subject_kind: spec.subject_kind,
        subject: spec.subject,
        composite: status.composite,
        observed_at: status
            .observed_at
            .as_ref()
            .map(|t| t.0.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        components,
        status,
    }
}

/// Seconds for people: `7d`, `1h`, `90s`.
fn seconds(s: f64) -> String {
    let s = s.round() as u64;
    match s {
        s if s >= 86_400 && s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s >= 3600 && s % 3600 == 0 => format!("{}h", s / 3600),
        s => format!("{s}s"),
    }
}
