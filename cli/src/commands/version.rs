//! `ui version`.

use serde::Serialize;

use super::Outcome;
use crate::output::OutputArgs;

/// Print the version of ui and of the API it speaks
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Version {
    version: &'static str,
    api_version: &'static str,
    kinds: Vec<&'static str>,
}

pub fn run(args: &Args) -> anyhow::Result<Outcome> {
    let v = Version {
        version: env!("CARGO_PKG_VERSION"),
        api_version: api::API_VERSION,
        kinds: api::kinds::KINDS.iter().map(|k| k.kind).collect(),
    };
    if !args.output.print_structured(&v)? {
        println!("ui {} (API {})", v.version, v.api_version);
    }
    Ok(Outcome::Success)
}
