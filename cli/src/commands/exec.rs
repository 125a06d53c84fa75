//! `ui exec REPLICA -- CMD…`: runs a command in a replica's container, on its node, through the
//! apiserver (only the workload's owner may; the apiserver logs every exec).

use std::io::Write;

use anyhow::Context as _;
use serde_json::{Value, json};

use super::{Context, Outcome};
use crate::connection::ClusterArgs;
use crate::output::OutputArgs;

/// Run a command in a replica's container
///
/// The command runs on the replica's node inside its container: its namespaces (its own
/// network, its user namespace), its cgroup and limits, its capabilities and seccomp filter.
/// Not interactive: its output is printed when it ends, and `ui exec` exits with its exit
/// code. Only the owner of the replica's workload may, with their own key.
///
///   ui exec hello-1a2b3c4d-0 -- cat /proc/self/status
///   ui exec hello-1a2b3c4d-0 --timeout 60 -- /bin/sh -c 'ls /tmp | wc -l'
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The replica (`NAME` or `replica/NAME`; a workload's name runs it in its first replica)
    name: String,
    /// Seconds before the command is killed (1..=300; exit code 124 then)
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=300))]
    timeout: u64,
    /// The command and its arguments (no shell: `-- /bin/sh -c '…'` for one)
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<String>,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// `-o json`: `{"exitCode", "stdout", "stderr", "truncated"}`
    #[command(flatten)]
    output: OutputArgs,
    #[command(flatten)]
    passphrase: crate::passphrase::PassphraseArgs,
}

pub fn run(ctx: &Context, args: &Args) -> anyhow::Result<Outcome> {
    let client = crate::connection::connect(ctx, &args.cluster)?;
    let ns = client.namespace().to_owned();
    let replica = super::logs::replicas_named(&client, &ns, &args.name)?
        .into_iter()
        .next()
        .with_context(|| format!("no replica named {}", args.name))?;
    let path = format!(
        "/apis/{}/namespaces/{}/replicas/{}/exec",
        api::API_VERSION,
        client::blocking::encode(&ns),
        client::blocking::encode(&replica)
    );
    // The owner's own authorization of this very command in this very replica, which the node
    // checks: whoever passes the request on (the apiserver, a member) can use it for nothing
    // else, and for a minute.
    let uid = client
        .get_json(&format!(
            "/apis/{}/namespaces/{}/replicas/{}",
            api::API_VERSION,
            client::blocking::encode(&ns),
            client::blocking::encode(&replica)
        ))
        .with_context(|| format!("replica {ns}/{replica}"))?["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let key = crate::unlock::signer(&ctx.dirs, || {
        args.passphrase.get(crate::passphrase::Purpose::Existing, "your identity")
    })?;
    // Unique to this exec (the node refuses an authorization seen before).
    let nonce = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
    );
    let audience = api::kinds::exec_audience(&uid, &args.command, args.timeout, &nonce);
    let now = chrono::Utc::now().timestamp();
    let authorization =
        api::token::mint_with(key.as_ref(), &audience, now, api::kinds::EXEC_AUTHORIZATION_SECS)
            .map_err(|e| anyhow::anyhow!("cannot sign the exec: {e}"))?;
    let body = json!({ "command": args.command, "timeoutSeconds": args.timeout,
        "authorization": authorization, "nonce": nonce });
    let answer = client.post_json(&path, &body).with_context(|| format!("exec in replica {ns}/{replica}"))?;
    if args.output.print_structured(&answer)? {
        return Ok(Outcome::Success);
    }
    let text = |k: &str| answer[k].as_str().unwrap_or_default().to_owned();
    std::io::stdout().write_all(text("stdout").as_bytes())?;
    std::io::stderr().write_all(text("stderr").as_bytes())?;
    if answer["truncated"] == Value::Bool(true) {
        eprintln!("ui exec: the output was cut at 1 MiB per stream");
    }
    let code = answer["exitCode"].as_i64().unwrap_or(1);
    Ok(if code == 0 { Outcome::Success } else { Outcome::Exit(u8::try_from(code).unwrap_or(1)) })
}
