//! `ui logs REPLICA|WORKLOAD [-f]`: a replica's output, from its node through the apiserver.

use api::kinds::{ReplicaSpec, WorkloadSpec, info};
use std::io::{BufRead, BufReader, Read, Write};

use anyhow::{Context as _, bail};
use serde_json::Value;

use super::{Context, Outcome};
use crate::connection::ClusterArgs;
use crate::output::{Format, OutputArgs};

/// Print the output of a replica, or of every replica of a workload
///
/// The output comes from the node the replica runs on, through the apiserver, which lets only
/// the workload's owner (and the control plane) read it. With several replicas each line is
/// prefixed with the replica's name.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A replica's name, or a workload's (then all its replicas)
    name: String,
    /// Keep printing output as it comes, until the replica ends
    #[arg(short = 'f', long)]
    follow: bool,
    /// Only the last N lines
    #[arg(long, value_name = "N")]
    tail: Option<usize>,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Output format: text as it comes, or one JSON object per line (`{"replica", "line"}`)
    #[command(flatten)]
    output: OutputArgs,
}

pub fn run(ctx: &Context, args: &Args) -> anyhow::Result<Outcome> {
    let client = crate::connection::connect(ctx, &args.cluster)?;
    let ns = client.namespace().to_owned();
    let replicas = replicas_named(&client, &ns, &args.name)?;
    let tail = args.tail.map(|n| n.to_string());
    let mut query: Vec<(&str, &str)> = Vec::new();
    if args.follow {
        query.push(("follow", "true"));
    }
    if let Some(t) = &tail {
        query.push(("tailLines", t));
    }
    let prefix = replicas.len() > 1;
    let open = |r: &str| -> anyhow::Result<Box<dyn Read + Send>> {
        client.stream(&log_path(&ns, r), &query).with_context(|| format!("logs of replica {r}"))
    };
    if !args.follow || !prefix {
        for r in &replicas {
            let stream = open(r)?;
            copy(stream, r, prefix, args.output.format)?;
        }
        return Ok(Outcome::Success);
    }
    // Following several replicas: one reader each, lines interleaved as they come.
    let format = args.output.format;
    let streams = replicas.iter().map(|r| Ok((r.clone(), open(r)?))).collect::<anyhow::Result<Vec<_>>>()?;
    std::thread::scope(|s| {
        let handles: Vec<_> =
            streams.into_iter().map(|(r, stream)| s.spawn(move || copy(stream, &r, true, format))).collect();
        for h in handles {
            h.join().map_err(|_| anyhow::anyhow!("a log reader panicked"))??;
        }
        anyhow::Ok(())
    })?;
    Ok(Outcome::Success)
}

/// The path of a replica's log.
pub fn log_path(ns: &str, replica: &str) -> String {
    format!(
        "/apis/{}/namespaces/{}/replicas/{}/log",
        api::API_VERSION,
        client::blocking::encode(ns),
        client::blocking::encode(replica)
    )
}

/// The replicas `arg` names in `ns`: a replica (`NAME` or `replica/NAME`), or every replica of
/// a workload (`NAME` when no replica has it, or `workload/NAME`), sorted.
pub fn replicas_named(
    client: &crate::connection::Client,
    ns: &str,
    arg: &str,
) -> anyhow::Result<Vec<String>> {
    let name = arg.strip_prefix("replica/").or(arg.strip_prefix("workload/")).unwrap_or(arg);
    let ns = ns.to_owned();
    Ok(match client.get(info::<ReplicaSpec>(), Some(&ns), name) {
        Ok(_) if !arg.starts_with("workload/") => vec![name.to_owned()],
        Err(e) if !e.is_not_found() => return Err(e.into()),
        _ => {
            match client.get(info::<WorkloadSpec>(), Some(&ns), name) {
                Ok(_) => {}
                Err(e) if e.is_not_found() => {
                    bail!("no replica or workload named {name} in namespace {ns}")
                }
                Err(e) => return Err(e.into()),
            }
            let list = client.list(info::<ReplicaSpec>(), Some(&ns), None, false)?;
            let mut names: Vec<String> = list["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|r| r.pointer("/spec/workload").and_then(Value::as_str) == Some(name))
                .filter_map(|r| r.pointer("/metadata/name").and_then(Value::as_str).map(str::to_owned))
                .collect();
            names.sort();
            if names.is_empty() {
                bail!("workload {name} has no replicas yet (ui status shows why)");
            }
            names
        }
    })
}

/// Copies `stream` (the output of `replica`) to stdout line by line: as it is, prefixed
/// with `[replica] ` when `prefix`, or as one JSON (or YAML) object per line.
fn copy(stream: Box<dyn Read + Send>, replica: &str, prefix: bool, format: Format) -> anyhow::Result<()> {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        let mut out = std::io::stdout().lock();
        match format {
            Format::Text => {
                if prefix {
                    write!(out, "[{replica}] ")?;
                }
                out.write_all(&line)?;
            }
            Format::Json | Format::Yaml => {
                let text = String::from_utf8_lossy(&line);
                let entry =
                    serde_json::json!({ "replica": replica, "line": text.trim_end_matches(['\n', '\r']) });
                match format {
                    Format::Json => writeln!(out, "{entry}")?,
                    _ => write!(out, "---\n{}", serde_saphyr::to_string(&entry)?)?,
                }
            }
        }
        out.flush()?;
    }
}
