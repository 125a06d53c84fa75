//! `ui init`: create the user's identity and configuration.

use anyhow::Context as _;
use serde::Serialize;

use super::{Context, Outcome};
use crate::config::DEFAULT_FILE;
use crate::fsutil::{self, PRIVATE_FILE};
use crate::keystore::{self, Identity, Protection};
use crate::output::OutputArgs;
use crate::passphrase::{PassphraseArgs, Purpose};

/// Create your identity: an Ed25519 signing key (your did:key) and an age key for secrets
///
/// The private keys are stored encrypted with a passphrase, asked for on the terminal or
/// taken from --passphrase-file or UNIVRS_PASSPHRASE. Nothing leaves this machine.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Replace an existing identity (the old key is lost unless exported)
    #[arg(long)]
    force: bool,
    /// Store the private keys unencrypted (not recommended: anyone who can read the file can act as you)
    #[arg(long, conflicts_with = "passphrase_file")]
    no_passphrase: bool,
    #[command(flatten)]
    passphrase: PassphraseArgs,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Created {
    did: String,
    age_recipient: String,
    encrypted: bool,
    config_dir: String,
}

pub fn run(ctx: &Context, args: &Args) -> anyhow::Result<Outcome> {
    let dirs = &ctx.dirs;
    if !args.force {
        // Refuse before asking for a passphrase.
        keystore::ensure_absent(dirs)?;
    }
    let protection = if args.no_passphrase {
        eprintln!(
            "warning: storing your private key UNENCRYPTED in {}; anyone who can read it can act as you",
            dirs.keypair_plain().display()
        );
        Protection::None
    } else {
        Protection::Passphrase(args.passphrase.get(Purpose::New, "your new identity")?)
    };
    let identity = Identity::generate();
    keystore::store(dirs, &identity, &protection, args.force)?;
    if !dirs.config_file().exists() {
        fsutil::write_atomic(&dirs.config_file(), DEFAULT_FILE.as_bytes(), PRIVATE_FILE)?;
    }
    fsutil::create_private_dir(&dirs.policy_dir())
        .with_context(|| format!("cannot create {}", dirs.policy_dir().display()))?;

    let created = Created {
        did: identity.did().to_string(),
        age_recipient: identity.age_recipient().to_string(),
        encrypted: !args.no_passphrase,
        config_dir: dirs.root().display().to_string(),
    };
    if !args.output.print_structured(&created)? {
        println!("Created your identity in {}", created.config_dir);
        println!("  did:           {}", created.did);
        println!("  age recipient: {}", created.age_recipient);
        println!("Back it up with `ui identity export --out FILE`.");
    }
    Ok(Outcome::Success)
}
