//! `ui delete`: delete objects by kind and name, or those of manifests.

use std::path::PathBuf;

use anyhow::bail;
use api::{KindInfo, Scope};
use serde::Serialize;

use super::{Context, Outcome};
use crate::connection::{ClientError, ClusterArgs};
use crate::manifest_files;
use crate::objects::{Target, kind_named};
use crate::output::OutputArgs;

/// Delete objects by kind and name, or every object of manifests
///
/// `ui delete KIND NAME…` or `ui delete -f FILE|DIR`. Prints a line per object deleted. An
/// object that does not exist is an error (exit 1) unless --ignore-not-found; the others are
/// still deleted.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The kind: plural, singular or short name (`workloads`, `workload`, `wl`)
    #[arg(conflicts_with = "files", required_unless_present = "files", requires = "names")]
    kind: Option<String>,
    /// Names of the objects to delete
    #[arg(value_name = "NAME")]
    names: Vec<String>,
    /// Manifest file, directory (recursive: *.yaml, *.yml, *.json) or - for standard input
    #[arg(short = 'f', long = "filename", value_name = "FILE|DIR")]
    files: Vec<PathBuf>,
    /// Succeed for objects that do not exist
    #[arg(long)]
    ignore_not_found: bool,
    /// `server`: ask the server to check the deletion without doing it
    #[arg(long, value_name = "MODE", value_parser = ["server"])]
    dry_run: Option<String>,
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<String>,
    name: String,
    /// `deleted` or `not found`; absent on error.
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

pub fn run(ctx: &Context, args: &Args) -> anyhow::Result<Outcome> {
    let client = crate::connection::connect(ctx, &args.cluster)?;
    // Each target (with the document it came from, for -f), or why it cannot be deleted.
    let mut targets: Vec<(Option<String>, Result<Target, String>)> = Vec::new();
    if args.files.is_empty() {
        let (Some(kind), false) = (&args.kind, args.names.is_empty()) else {
            bail!("name the objects to delete (ui delete KIND NAME…), or pass -f FILE|DIR")
        };
        let names = &args.names;
        let kind: &'static KindInfo = kind_named(kind)?;
        let namespace = (kind.scope == Scope::Namespaced).then(|| client.namespace().to_owned());
        targets.extend(
            names.iter().map(|n| (None, Ok(Target { kind, namespace: namespace.clone(), name: n.clone() }))),
        );
    } else {
        let all = manifest_files::read_all(&manifest_files::expand(&args.files)?)?;
        for doc in all.iter().flat_map(|s| &s.docs) {
            targets.push((Some(doc.place()), Target::of(&client, doc).map_err(|e| format!("{e:#}"))));
        }
    }
    let suffix = if args.dry_run.is_some() { " (server dry run)" } else { "" };
    let mut reports = Vec::new();
    let mut failed = false;
    for (place, target) in targets {
        let at = place.map(|p| format!("{p}: ")).unwrap_or_default();
        let t = match target {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: {at}{e}");
                failed = true;
                continue;
            }
        };
        let result = match client.delete(t.kind, t.namespace.as_deref(), &t.name, args.dry_run.is_some()) {
            Ok(_) => Ok("deleted"),
            Err(e) if e.is_not_found() && args.ignore_not_found => Ok("not found"),
            Err(e @ ClientError::Unreachable { .. }) => return Err(e.into()),
            Err(e) => Err(e.to_string()),
        };
        if args.output.format == crate::output::Format::Text {
            match &result {
                Ok("deleted") => println!("{} deleted{suffix}", t.reference()),
                Ok(_) => {}
                Err(e) => eprintln!("{at}{e}"),
            }
        }
        failed |= result.is_err();
        reports.push(Report {
            kind: t.kind.kind.to_owned(),
            namespace: t.namespace,
            name: t.name,
            result: result.as_ref().ok().copied(),
            error: result.err(),
        });
    }
    args.output.print_structured(&reports)?;
    Ok(if failed { Outcome::Failure } else { Outcome::Success })
}
