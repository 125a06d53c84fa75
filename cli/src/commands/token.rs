//! `ui token`: mint a short-lived bearer token from your own key.

use std::path::PathBuf;

use anyhow::bail;
use ed25519_dalek::SigningKey;
use serde_json::json;

use super::{Context, Outcome};
use crate::keystore;
use crate::passphrase::{PassphraseArgs, Purpose};

/// Mint a bearer token for the apiserver, signed with your key
///
/// The token is a JWT signed with your Ed25519 key (EdDSA), bound to one cluster (--audience),
/// valid for a few minutes, and names your did:key: the apiserver verifies it against the did,
/// so no account or shared secret exists anywhere. kubectl runs this command itself through the
/// kubeconfig `ui up` writes (--exec-credential prints the client-go ExecCredential it reads).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The cluster the token is for (`univrs:<cluster id>`; in the kubeconfig `ui up` writes)
    #[arg(long, value_name = "AUDIENCE")]
    audience: String,
    /// Lifetime in seconds (at most 900)
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    lifetime: i64,
    /// Print a client.authentication.k8s.io/v1 ExecCredential (for kubectl and other clients)
    #[arg(long)]
    exec_credential: bool,
    /// Sign with this unencrypted key file (a control-plane member's key in its data dir)
    /// instead of your identity
    #[arg(long, value_name = "FILE")]
    key_file: Option<PathBuf>,
    #[command(flatten)]
    passphrase: PassphraseArgs,
}

/// Reads a member key file: the 32-byte Ed25519 secret, hex-encoded.
pub fn read_key_file(path: &std::path::Path) -> anyhow::Result<SigningKey> {
    Ok(apiserver::member::read_key(path)?)
}

pub fn run(ctx: &Context, args: &Args) -> anyhow::Result<Outcome> {
    if !(1..=api::token::MAX_LIFETIME_SECS).contains(&args.lifetime) {
        bail!("--lifetime {} is out of range: 1 to {} seconds", args.lifetime, api::token::MAX_LIFETIME_SECS);
    }
    let key: Box<dyn api::signing::Sign> = match &args.key_file {
        Some(path) => Box::new(read_key_file(path)?),
        None => {
            if !keystore::exists(&ctx.dirs) {
                bail!(
                    "no identity in {}: create one with `ui init` (the token is signed with your key)",
                    ctx.dirs.root().display()
                );
            }
            // The unlock agent's, when the key is unlocked: kubectl's credential plugin asks
            // for no passphrase then.
            crate::unlock::signer(&ctx.dirs, || args.passphrase.get(Purpose::Existing, "your identity"))?
        }
    };
    let now = chrono::Utc::now();
    let token = api::token::mint_with(&*key, &args.audience, now.timestamp(), args.lifetime)
        .map_err(|e| anyhow::anyhow!("cannot sign the token: {e}"))?;
    if args.exec_credential {
        let expires = now + chrono::Duration::seconds(args.lifetime);
        let credential = json!({
            "apiVersion": "client.authentication.k8s.io/v1",
            "kind": "ExecCredential",
            "status": {
                "token": token,
                "expirationTimestamp": expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            },
        });
        println!("{credential}");
    } else {
        println!("{token}");
    }
    Ok(Outcome::Success)
}
