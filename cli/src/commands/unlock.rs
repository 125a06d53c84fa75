//! `ui unlock` and `ui lock`: keep your key unlocked for a while, or forget it now.

use std::path::PathBuf;
use std::time::Duration;

use super::{Context, Outcome};
use crate::output::OutputArgs;
use crate::passphrase::{PassphraseArgs, Purpose};
use crate::unlock;

/// Keep your key unlocked for a while, so commands and kubectl do not ask for the passphrase
///
/// As ssh-agent: the decrypted key is kept by a process of yours, reachable only through a
/// socket only you can open (CONFIG_DIR/agent/agent.sock: 0600 in a 0700 directory); signatures and tokens are
/// made there, and the key never leaves it. It ends after --for, or with `ui lock`. A
/// passphrase typed on a terminal by any command unlocks the key for 15 minutes too.
#[derive(Debug, clap::Args)]
pub struct UnlockArgs {
    /// How long: 90s, 15m, 2h (at most 24h)
    #[arg(long = "for", value_name = "DURATION", default_value = "15m", value_parser = unlock::parse_duration)]
    lifetime: Duration,
    #[command(flatten)]
    passphrase: PassphraseArgs,
    #[command(flatten)]
    output: OutputArgs,
}

/// Forget your unlocked key now (end the unlock agent)
#[derive(Debug, clap::Args)]
pub struct LockArgs {
    #[command(flatten)]
    output: OutputArgs,
}

/// The unlock agent itself (started by `ui unlock`; not for people)
#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    /// Its socket
    #[arg(long)]
    socket: PathBuf,
    /// Seconds to run
    #[arg(long = "for")]
    seconds: u64,
}

pub fn unlock(ctx: &Context, args: &UnlockArgs) -> anyhow::Result<Outcome> {
    // Unlocking again replaces the agent (with the new lifetime).
    unlock::stop(&ctx.dirs);
    let identity =
        crate::keystore::load(&ctx.dirs, || args.passphrase.get(Purpose::Existing, "your identity"))?;
    unlock::start(&ctx.dirs, identity.signing_key(), args.lifetime)?;
    let shown = serde_json::json!({
        "did": identity.did().as_str(),
        "socket": unlock::socket(&ctx.dirs).display().to_string(),
        "seconds": args.lifetime.as_secs(),
    });
    if !args.output.print_structured(&shown)? {
        println!("{} unlocked for {} s (ui lock forgets it now)", identity.did(), args.lifetime.as_secs());
    }
    Ok(Outcome::Success)
}

pub fn lock(ctx: &Context, args: &LockArgs) -> anyhow::Result<Outcome> {
    let was = unlock::stop(&ctx.dirs);
    if !args.output.print_structured(&serde_json::json!({ "locked": was }))? {
        println!("{}", if was { "locked: the unlock agent forgot your key" } else { "nothing was unlocked" });
    }
    Ok(Outcome::Success)
}

pub fn agent(args: &AgentArgs) -> anyhow::Result<Outcome> {
    unlock::serve(&args.socket, Duration::from_secs(args.seconds))?;
    Ok(Outcome::Success)
}
