//! `ui identity show|export|import`.

use std::path::PathBuf;

use anyhow::bail;
use serde::Serialize;

use super::{Context, Outcome};
use crate::fsutil::{self, PRIVATE_FILE};
use crate::keystore::{self, Protection};
use crate::output::OutputArgs;
use crate::passphrase::{PassphraseArgs, Purpose};

/// Show, back up or restore your identity
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Show your did:key, age recipient and where your files are
    Show {
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Write an age-encrypted backup of your private keys
    ///
    /// The backup is encrypted with the passphrase (prompted, or --passphrase-file /
    /// UNIVRS_PASSPHRASE); an encrypted identity is opened with the same passphrase.
    Export {
        /// Where to write the backup
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Overwrite FILE if it exists
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        passphrase: PassphraseArgs,
    },
    /// Restore your identity from a backup made by `ui identity export`
    ///
    /// The restored keys are stored encrypted with the backup's passphrase, unless
    /// --no-passphrase.
    Import {
        /// The backup file
        file: PathBuf,
        /// Replace an existing identity
        #[arg(long)]
        force: bool,
        /// Store the restored keys unencrypted
        #[arg(long)]
        no_passphrase: bool,
        #[command(flatten)]
        passphrase: PassphraseArgs,
        #[command(flatten)]
        output: OutputArgs,
    },
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Shown {
    did: String,
    age_recipient: String,
    created: String,
    encrypted: bool,
    config_dir: String,
    key_file: String,
    public_key_file: String,
}

pub fn run(ctx: &Context, cmd: &Command) -> anyhow::Result<Outcome> {
    let dirs = &ctx.dirs;
    match cmd {
        Command::Show { output } => {
            let public = keystore::load_public(dirs)?;
            let encrypted = keystore::is_encrypted(dirs);
            let key_file = if encrypted { dirs.keypair_encrypted() } else { dirs.keypair_plain() };
            let shown = Shown {
                did: public.did.to_string(),
                age_recipient: public.age_recipient.to_string(),
                created: public.created,
                encrypted,
                config_dir: dirs.root().display().to_string(),
                key_file: key_file.display().to_string(),
                public_key_file: dirs.public_key().display().to_string(),
            };
            if !output.print_structured(&shown)? {
                println!("did:           {}", shown.did);
                println!("age recipient: {}", shown.age_recipient);
                println!("created:       {}", shown.created);
                println!(
                    "private key:   {} ({})",
                    shown.key_file,
                    if encrypted { "encrypted" } else { "NOT encrypted" }
                );
                println!("public key:    {}", shown.public_key_file);
            }
        }
        Command::Export { out, force, passphrase } => {
            if out.exists() && !force {
                bail!("{} exists: pass --force to overwrite it", out.display());
            }
            let pass = passphrase.get(
                if keystore::is_encrypted(dirs) { Purpose::Existing } else { Purpose::New },
                "the backup",
            )?;
            let identity = keystore::load(dirs, || Ok(pass.clone()))?;
            let backup = keystore::export(&identity, pass)?;
            fsutil::write_atomic(out, &backup, PRIVATE_FILE)?;
            eprintln!("Wrote an encrypted backup of {} to {}", identity.did(), out.display());
        }
        Command::Import { file, force, no_passphrase, passphrase, output } => {
            if !force {
                keystore::ensure_absent(dirs)?;
            }
            let pass = passphrase.get(Purpose::Existing, &format!("backup {}", file.display()))?;
            let identity = keystore::import(file, pass.clone())?;
            let protection = if *no_passphrase { Protection::None } else { Protection::Passphrase(pass) };
            keystore::store(dirs, &identity, &protection, *force)?;
            fsutil::create_private_dir(&dirs.policy_dir())?;
            let did = identity.did().to_string();
            if !output.print_structured(&serde_json::json!({ "did": did }))? {
                println!("Restored {did} into {}", dirs.root().display());
            }
        }
    }
    Ok(Outcome::Success)
}
