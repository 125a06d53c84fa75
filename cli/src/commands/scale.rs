//! `ui scale workload NAME N`: change how many replicas a workload runs.

use anyhow::bail;
use chrono::Utc;
use serde_json::Value;

use super::{Context, Outcome};
use crate::connection::ClusterArgs;
use crate::keystore;
use crate::passphrase::{PassphraseArgs, Purpose};

/// How often a write that lost a race (409 Conflict) is retried after reading again.
const ATTEMPTS: usize = 5;

/// Set the number of replicas of a workload
///
/// Reads the Workload, sets `spec.replicas`, signs it again with your identity (a Workload's
/// spec is signed by its owner, so a changed spec needs a new signature) and writes it back
/// with its resourceVersion as precondition (only a workload that verifies as signed by you is
/// signed again): if someone changed it meanwhile (the workload
/// controller writes its status all the time), it is read and signed again, a few times. The
/// workload controller then adds or removes replicas.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The kind: only workloads scale (`workload`, `workloads`, `wl`)
    kind: String,
    /// The workload's name
    name: String,
    /// How many replicas to run
    #[arg(value_parser = clap::value_parser!(i32).range(0..=i64::from(api::kinds::MAX_REPLICAS)))]
    replicas: i32,
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(flatten)]
    passphrase: PassphraseArgs,
}

pub fn run(ctx: &Context, args: &Args) -> anyhow::Result<Outcome> {
    let kind = api::kinds::lookup(&args.kind).filter(|k| k.kind == "Workload");
    let Some(kind) = kind else {
        bail!("cannot scale {:?}: only workloads scale (ui scale workload NAME N)", args.kind);
    };
    let client = crate::connection::connect(ctx, &args.cluster)?;
    let ns = client.namespace().to_owned();
    let me = keystore::load_public(&ctx.dirs)?.did;
    let mut key = None;
    for _ in 0..ATTEMPTS {
        let mut obj = client.get(kind, Some(&ns), &args.name)?;
        // What is signed again must be what its owner signed: never put your signature on a
        // workload someone else wrote, or on a stored object that does not verify.
        let signer = obj.pointer("/metadata/annotations").and_then(|a| a.get(api::signing::SIGNER));
        if signer.and_then(|s| s.as_str()) != Some(me.as_str()) {
            bail!(
                "workload {} is signed by {}, not by you ({me}): only its owner can scale it",
                args.name,
                signer.and_then(|s| s.as_str()).unwrap_or("nobody")
            );
        }
        api::signing::verify(&obj).map_err(|e| {
            anyhow::anyhow!(
                "workload {} as stored does not verify ({e}): refusing to sign it; apply your own manifest instead",
                args.name
            )
        })?;
        if obj["spec"]["replicas"].as_i64() == Some(i64::from(args.replicas)) {
            println!("workload.univrs.io/{} unchanged ({} replicas)", args.name, args.replicas);
            return Ok(Outcome::Success);
        }
        obj["spec"]["replicas"] = Value::from(args.replicas);
        let signing_key = match &key {
            Some(k) => k,
            None => {
                let identity =
                    keystore::load(&ctx.dirs, || args.passphrase.get(Purpose::Existing, "your identity"))?;
                key.insert(identity.signing_key().clone())
            }
        };
        api::signing::sign(&mut obj, signing_key, Utc::now())
            .map_err(|e| anyhow::anyhow!("cannot sign workload {}: {e}", args.name))?;
        match client.update(kind, Some(&ns), &args.name, &obj, false) {
            Ok(_) => {
                println!("workload.univrs.io/{} scaled to {} replicas", args.name, args.replicas);
                return Ok(Outcome::Success);
            }
            // Written by someone else between our read and our write: read it again.
            Err(e) if e.code() == Some(409) => continue,
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!("cannot scale workload {}", args.name)));
            }
        }
    }
    bail!(
        "cannot scale workload {}: it kept changing while scaling it ({ATTEMPTS} attempts); run ui scale again",
        args.name
    )
}
