//! `ui sign`: sign every document of the given manifests with your identity.

use std::path::PathBuf;

use anyhow::bail;
use chrono::Utc;

use super::{Context, Outcome};
use crate::fsutil;
use crate::manifest_files::{self, Source};
use crate::passphrase::{PassphraseArgs, Purpose};

/// Sign manifests with your identity
///
/// Every document is checked first (known kind, valid fields); if any is wrong, nothing is
/// signed or written. Signed YAML goes to standard output unless --in-place. The signature
/// covers everything but server-owned fields, so the manifest still verifies after `ui apply`,
/// `kubectl apply` or a Git round trip. --in-place rewrites the files as plain YAML: comments
/// are not kept.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Manifest file, directory (recursive: *.yaml, *.yml, *.json) or - for standard input
    #[arg(short = 'f', long = "filename", value_name = "FILE|DIR", required = true)]
    files: Vec<PathBuf>,
    /// Rewrite each file with its signed documents instead of printing them
    #[arg(long)]
    in_place: bool,
    #[command(flatten)]
    passphrase: PassphraseArgs,
}

pub fn run(ctx: &Context, args: &Args) -> anyhow::Result<Outcome> {
    let sources = manifest_files::expand(&args.files)?;
    if args.in_place && sources.contains(&Source::Stdin) {
        bail!("--in-place cannot rewrite standard input");
    }
    let mut all = manifest_files::read_all(&sources)?;
    let mut problems = Vec::new();
    for doc in all.iter().flat_map(|s| &s.docs) {
        problems.extend(doc.problems());
    }
    if !problems.is_empty() {
        bail!("nothing was signed:\n{}", problems.join("\n"));
    }
    if all.iter().all(|s| s.docs.is_empty()) {
        bail!(
            "no documents to sign in {}",
            sources.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
        );
    }

    let signer =
        crate::unlock::signer(&ctx.dirs, || args.passphrase.get(Purpose::Existing, "your identity"))?;
    let now = Utc::now();
    for doc in all.iter_mut().flat_map(|s| &mut s.docs) {
        ctx.sign(&mut doc.value, &*signer, now).map_err(|e| anyhow::anyhow!("{}: {e:#}", doc.place()))?;
    }

    if args.in_place {
        // Serialize everything before writing anything, then replace each file atomically.
        let mut outputs = Vec::new();
        for s in &all {
            if let Source::File(path) = &s.source {
                outputs.push((path, manifest_files::to_yaml(&s.docs)?));
            }
        }
        for (path, text) in outputs {
            let mode = std::fs::metadata(path)
                .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)?;
            fsutil::write_atomic(path, text.as_bytes(), mode)?;
        }
        let n: usize = all.iter().map(|s| s.docs.len()).sum();
        eprintln!(
            "Signed {n} document(s) in {} file(s) as {}",
            all.len(),
            api::identity::Did::from_key(&signer.public())
        );
    } else {
        let docs: Vec<_> = all.into_iter().flat_map(|s| s.docs).collect();
        print!("{}", manifest_files::to_yaml(&docs)?);
    }
    Ok(Outcome::Success)
}
