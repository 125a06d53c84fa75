//! Where a passphrase comes from: `--passphrase-file`, then `UNIVRS_PASSPHRASE`, then a prompt
//! on the terminal. Never silently none: without a source and without a terminal, the command
//! fails and says how to give one.

use std::io::IsTerminal;
use std::path::PathBuf;

use age::secrecy::SecretString;
use anyhow::{Context, bail};

/// The environment variable scripts use to pass a passphrase.
pub const ENV: &str = "UNIVRS_PASSPHRASE";

/// Command-line options for the passphrase.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct PassphraseArgs {
    /// Read the passphrase from FILE (first line) instead of prompting; see also UNIVRS_PASSPHRASE
    #[arg(long, value_name = "FILE", global = true)]
    pub passphrase_file: Option<PathBuf>,
}

/// Whether the passphrase protects something new (asked twice on a terminal) or opens
/// something that exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// Choosing a passphrase.
    New,
    /// Entering an existing passphrase.
    Existing,
}

impl PassphraseArgs {
    /// Gets the passphrase from the first source that has one.
    pub fn get(&self, purpose: Purpose, what: &str) -> anyhow::Result<SecretString> {
        if let Some(file) = &self.passphrase_file {
            let bytes = crate::fsutil::read_limited(file, 4096)?;
            let text = String::from_utf8(bytes)
                .with_context(|| format!("passphrase file {} is not UTF-8 text", file.display()))?;
            let line = text.lines().next().unwrap_or_default();
            if line.is_empty() {
                bail!("passphrase file {} is empty", file.display());
            }
            return Ok(SecretString::from(line.to_owned()));
        }
        if let Some(value) = std::env::var_os(ENV) {
            let value = value.into_string().map_err(|_| anyhow::anyhow!("{ENV} is not UTF-8"))?;
            if value.is_empty() {
                bail!("{ENV} is set but empty");
            }
            return Ok(SecretString::from(value));
        }
        if !std::io::stdin().is_terminal() {
            bail!(
                "a passphrase is needed for {what}, and there is no terminal to ask on: \
                 set {ENV} or pass --passphrase-file FILE"
            );
        }
        let first = rpassword::prompt_password(format!("Passphrase for {what}: "))
            .context("cannot read the passphrase from the terminal")?;
        if first.is_empty() {
            bail!("the passphrase must not be empty");
        }
        if purpose == Purpose::New {
            let again = rpassword::prompt_password("Same passphrase again: ")
                .context("cannot read the passphrase from the terminal")?;
            if again != first {
                bail!("the two passphrases differ; nothing was written");
            }
        }
        Ok(SecretString::from(first))
    }
}
