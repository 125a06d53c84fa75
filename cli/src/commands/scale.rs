//! `ui scale workload NAME N`: change how many replicas a workload runs.

use anyhow::{Context as _, bail};
use chrono::Utc;
use serde_json::Value;

use super::{Context, Outcome};
use crate::connection::ClusterArgs;
use crate::output::OutputArgs;
use crate::passphrase::{PassphraseArgs, Purpose};

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
    #[command(flatten)]
    output: OutputArgs,
}

/// What `ui scale` did, for `-o json`.
#[derive(Debug, serde::Serialize)]
struct Scaled<'a> {
    namespace: &'a str,
    name: &'a str,
    replicas: i32,
    changed: bool,
}

pub fn run(ctx: &Context, args: &Args) -> anyhow::Result<Outcome> {
    let kind = api::kinds::lookup(&args.kind).filter(|k| k.kind == "Workload");
    let Some(_) = kind else {
        bail!("cannot scale {:?}: only workloads scale (ui scale workload NAME N)", args.kind);
    };
    let client =
        crate::connection::connect(ctx, &args.cluster)?.with_field_manager(super::apply::FIELD_MANAGER);
    let ns = client.namespace().to_owned();
    let changed = scale(ctx, &client, &ns, &args.name, args.replicas, || {
        crate::unlock::signer(&ctx.dirs, || args.passphrase.get(Purpose::Existing, "your identity"))
    })?;
    let report = Scaled { namespace: &ns, name: &args.name, replicas: args.replicas, changed };
    if !args.output.print_structured(&report)? {
        match changed {
            true => println!("workload.univrs.io/{} scaled to {} replicas", args.name, args.replicas),
            false => println!("workload.univrs.io/{} unchanged ({} replicas)", args.name, args.replicas),
        }
    }
    Ok(Outcome::Success)
}

/// Sets `spec.replicas` of workload `name` in `ns` to `replicas`, signing it again with the key
/// `key` loads (only when it changes): what `ui scale` and the MCP `scale` tool do. Returns
/// whether it changed.
pub fn scale(
    ctx: &Context,
    client: &crate::connection::Client,
    ns: &str,
    name: &str,
    replicas: i32,
    mut key: impl FnMut() -> anyhow::Result<Box<dyn api::signing::Sign>>,
) -> anyhow::Result<bool> {
    let kind = api::kinds::info::<api::kinds::WorkloadSpec>();
    if !(0..=api::kinds::MAX_REPLICAS).contains(&replicas) {
        bail!("replicas: {replicas} is out of range: 0 to {}", api::kinds::MAX_REPLICAS);
    }
    let me = ctx.acting_for()?;
    let mut loaded: Option<Box<dyn api::signing::Sign>> = None;
    let args = Named { name, replicas };
    // Read, check, sign again and write, read again when someone else wrote meanwhile (the
    // workload controller writes its status all the time): the client's one conflict retry.
    let written = client.modify(kind, Some(ns), name, |current| -> anyhow::Result<Option<Value>> {
        let Some(current) = current else { bail!("workload {} not found in namespace {ns}", args.name) };
        // What is signed again must be what its owner signed: never put your signature on a
        // workload someone else wrote, or on a stored object that does not verify.
        let signer = current.pointer("/metadata/annotations").and_then(|a| a.get(api::signing::SIGNER));
        if signer.and_then(|s| s.as_str()) != Some(me.as_str()) {
            bail!(
                "workload {} is signed by {}, not by you ({me}): only its owner can scale it",
                args.name,
                signer.and_then(|s| s.as_str()).unwrap_or("nobody")
            );
        }
        // An agent whose grant does not reveal secrets reads a redacted copy, without the
        // signature: signing it again would write the redaction over the real values.
        if let Some(field) = current.pointer("/metadata/annotations/univrs.io~1redacted").and_then(Value::as_str) {
            bail!(
                "workload {} reads redacted for this key ({field} hidden, as the user's AgentGrant does not reveal it), so it cannot be signed again: the user can scale it (ui scale), or set revealEnv: true in the AgentGrant",
                args.name
            );
        }
        api::signing::verify(current).map_err(|e| {
            anyhow::anyhow!(
                "workload {} as stored does not verify ({e}): refusing to sign it; apply your own manifest instead",
                args.name
            )
        })?;
        if current["spec"]["replicas"].as_i64() == Some(i64::from(args.replicas)) {
            return Ok(None);
        }
        let mut obj = current.clone();
        obj["spec"]["replicas"] = Value::from(args.replicas);
        let signer = match &loaded {
            Some(k) => k,
            None => loaded.insert(key()?),
        };
        ctx.sign(&mut obj, &**signer, Utc::now())
            .map_err(|e| anyhow::anyhow!("cannot sign workload {}: {e:#}", args.name))?;
        Ok(Some(obj))
    });
    Ok(written.with_context(|| format!("cannot scale workload {name}"))?.is_some())
}

/// What the read-check-sign closure of [`scale`] refers to.
struct Named<'a> {
    name: &'a str,
    replicas: i32,
}
