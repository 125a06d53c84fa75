//! `ui diff`: what `ui apply` would change, as a unified diff.

use std::path::PathBuf;

use serde::Serialize;
use serde_json::Value;
use similar::TextDiff;

use super::{Context, Outcome};
use crate::connection::ClusterArgs;
use crate::manifest_files;
use crate::objects::{self, Target};
use crate::output::OutputArgs;

/// Show what applying manifests would change
///
/// A unified diff per object, of the object on the server (without server-owned metadata and
/// status) against the document; an object that does not exist yet diffs against nothing.
/// Exit code: 0 when nothing would change, 1 when something would, 2 on an error.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Manifest file, directory (recursive: *.yaml, *.yml, *.json) or - for standard input
    #[arg(short = 'f', long = "filename", value_name = "FILE|DIR", required = true)]
    files: Vec<PathBuf>,
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(flatten)]
    output: OutputArgs,
}

/// What applying one document would change.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// The file it came from.
    pub file: String,
    /// Its position in the file, from 1.
    pub document: usize,
    /// Its kind.
    pub kind: String,
    /// Its namespace (namespaced kinds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Its name.
    pub name: String,
    /// Whether the object exists on the server.
    pub exists: bool,
    /// The unified diff; empty when nothing would change.
    pub diff: String,
}

pub fn run(ctx: &Context, args: &Args) -> anyhow::Result<Outcome> {
    match diff(ctx, args) {
        Ok(outcome) => Ok(outcome),
        Err(e) => {
            // Exit 2, not 1: 1 means "there are differences".
            super::print_error(&e);
            Ok(Outcome::Exit(2))
        }
    }
}

fn diff(ctx: &Context, args: &Args) -> anyhow::Result<Outcome> {
    let all = manifest_files::read_all(&manifest_files::expand(&args.files)?)?;
    let client = crate::connection::connect(ctx, &args.cluster)?;
    let mut reports = Vec::new();
    for doc in all.iter().flat_map(|s| &s.docs) {
        reports.push(diff_one(&client, doc)?);
    }
    if !args.output.print_structured(&reports)? {
        for r in &reports {
            print!("{}", r.diff);
        }
    }
    Ok(if reports.iter().all(|r| r.diff.is_empty()) { Outcome::Success } else { Outcome::Exit(1) })
}

/// The unified diff of the object `doc` names on the server (without server-owned metadata
/// and status) against `doc`: what `ui diff` and the MCP `diff` tool show.
pub fn diff_one(
    client: &crate::connection::Client,
    doc: &manifest_files::Document,
) -> anyhow::Result<Report> {
    let place = || doc.place();
    let t = Target::of(client, doc).map_err(|e| anyhow::anyhow!("{}: {e:#}", place()))?;
    let mut desired = doc.value.clone();
    if let (Some(ns), Some(meta)) = (&t.namespace, desired.get_mut("metadata").and_then(Value::as_object_mut))
    {
        meta.insert("namespace".into(), ns.clone().into());
    }
    // An unsigned document is signed by `ui apply` only when it changes something: compare
    // it without the signature annotations.
    let view = if t.kind.signed && !objects::is_signed(&desired) {
        objects::authored_unsigned
    } else {
        objects::authored
    };
    let (exists, live) = match client.get(t.kind, t.namespace.as_deref(), &t.name) {
        Ok(current) => (true, objects::to_yaml(&view(&current))?),
        Err(e) if e.is_not_found() => (false, String::new()),
        Err(e) => return Err(anyhow::anyhow!("{}: {e}", place())),
    };
    let wanted = objects::to_yaml(&view(&desired))?;
    let ns = t.namespace.as_deref().map(|n| format!("{n}/")).unwrap_or_default();
    let old = format!("live/{}.{}/{ns}{}", t.kind.singular, api::GROUP, t.name);
    let new = format!("{}#{}", doc.source, doc.index);
    let text = TextDiff::from_lines(&live, &wanted);
    let unified = if live == wanted {
        String::new()
    } else {
        text.unified_diff().context_radius(3).header(&old, &new).to_string()
    };
    Ok(Report {
        file: doc.source.to_string(),
        document: doc.index,
        kind: t.kind.kind.to_owned(),
        namespace: t.namespace.clone(),
        name: t.name.clone(),
        exists,
        diff: unified,
    })
}
