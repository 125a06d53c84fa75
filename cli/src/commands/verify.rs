//! `ui verify`: check the signature of every document of the given manifests.

use std::path::PathBuf;

use api::identity::Did;
use chrono::SecondsFormat;
use serde::Serialize;

use super::{Context, Outcome};
use crate::manifest_files;
use crate::output::OutputArgs;

/// Check the signatures of manifests
///
/// Prints a line per document: ok with the signer, or why not. Exits 0 only if every
/// document verifies (and, with --signer, was signed by that identity).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Manifest file, directory (recursive: *.yaml, *.yml, *.json) or - for standard input
    #[arg(short = 'f', long = "filename", value_name = "FILE|DIR", required = true)]
    files: Vec<PathBuf>,
    /// Also require that every document was signed by this did:key
    #[arg(long, value_name = "DID")]
    signer: Option<Did>,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    file: String,
    document: usize,
    kind: Option<String>,
    namespace: Option<String>,
    name: Option<String>,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    signer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    signed_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

pub fn run(_ctx: &Context, args: &Args) -> anyhow::Result<Outcome> {
    let sources = manifest_files::expand(&args.files)?;
    let all = manifest_files::read_all(&sources)?;
    let mut reports = Vec::new();
    for doc in all.iter().flat_map(|s| &s.docs) {
        let field = |path: &[&str]| {
            path.iter().try_fold(&doc.value, |v, k| v.get(k)).and_then(|v| v.as_str()).map(str::to_owned)
        };
        let result =
            api::signing::verify(&doc.value).map_err(|e| e.to_string()).and_then(|v| match &args.signer {
                Some(want) if *want != v.signer => Err(format!("signed by {}, not by {want}", v.signer)),
                _ => Ok(v),
            });
        reports.push(Report {
            file: doc.source.to_string(),
            document: doc.index,
            kind: field(&["kind"]),
            namespace: field(&["metadata", "namespace"]),
            name: field(&["metadata", "name"]),
            ok: result.is_ok(),
            signer: result.as_ref().ok().map(|v| v.signer.to_string()),
            signed_at: result.as_ref().ok().map(|v| v.signed_at.to_rfc3339_opts(SecondsFormat::Secs, true)),
            error: result.err(),
        });
    }
    if !args.output.print_structured(&reports)? {
        for (r, doc) in reports.iter().zip(all.iter().flat_map(|s| &s.docs)) {
            let place = format!("{}#{} {}", r.file, r.document, doc.label());
            match (&r.signer, &r.error) {
                (Some(signer), None) => {
                    println!("ok    {place}  signed by {signer} at {}", r.signed_at.as_deref().unwrap_or("?"))
                }
                (_, Some(error)) => println!("FAIL  {place}  {error}"),
                _ => unreachable!("a report is either ok or has an error"),
            }
        }
    }
    Ok(if reports.iter().all(|r| r.ok) { Outcome::Success } else { Outcome::Failure })
}
