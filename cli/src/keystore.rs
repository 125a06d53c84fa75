//! The user's identity on disk: an Ed25519 signing key (shown as a did:key) and an age X25519
//! key (for secrets sealed to this user), kept under `identity/`.
//!
//! Private keys are stored as a small JSON document, age-encrypted with a passphrase
//! (`keypair.age`), or in the clear (`keypair.json`) only when the user asked for it with
//! `--no-passphrase`. The public half is kept in `public.key` so that showing an identity
//! never needs the passphrase.

use std::fs;
use std::io::Read;
use std::path::Path;

use age::secrecy::{ExposeSecret, SecretString};
use anyhow::{Context, bail};
use api::identity::{AgeRecipient, Did};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, SecondsFormat, Utc};
use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::fsutil::{self, PRIVATE_FILE};
use crate::paths::ConfigDirs;

/// Largest key or backup file read.
const MAX_KEY_FILE: u64 = 64 * 1024;

/// A loaded identity with its private keys.
pub struct Identity {
    signing: SigningKey,
    age: age::x25519::Identity,
    created: DateTime<Utc>,
}

/// The shareable half, as kept in `public.key`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublicIdentity {
    /// The signing key as a did:key.
    pub did: Did,
    /// Where secrets for this identity are sealed to.
    pub age_recipient: AgeRecipient,
    /// When the identity was created.
    pub created: String,
}

/// The private document inside `keypair.age`/`keypair.json` and backups.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretDoc {
    version: u32,
    /// Base64 of the 32-byte Ed25519 seed.
    ed25519: String,
    /// `AGE-SECRET-KEY-1…`.
    age: String,
    created: String,
}

/// How the private keys are protected on disk.
pub enum Protection {
    /// age scrypt encryption with this passphrase.
    Passphrase(SecretString),
    /// None: the user asked for `--no-passphrase`.
    None,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity").field("did", &self.did()).finish_non_exhaustive()
    }
}

impl Identity {
    /// A new random identity.
    pub fn generate() -> Self {
        Self {
            signing: SigningKey::generate(&mut rand_core::OsRng),
            age: age::x25519::Identity::generate(),
            created: Utc::now(),
        }
    }

    /// The did:key of the signing key.
    pub fn did(&self) -> Did {
        Did::from_key(&self.signing.verifying_key())
    }

    /// The age recipient of the age key.
    pub fn age_recipient(&self) -> AgeRecipient {
        AgeRecipient::parse(&self.age.to_public().to_string()).expect("age makes valid recipients")
    }

    /// The age key: opens what is sealed to [`Identity::age_recipient`].
    pub fn age_identity(&self) -> &age::x25519::Identity {
        &self.age
    }

    /// The signing key.
    pub fn signing_key(&self) -> &SigningKey {
        &self.signing
    }

    /// The public half.
    pub fn public(&self) -> PublicIdentity {
        PublicIdentity {
            did: self.did(),
            age_recipient: self.age_recipient(),
            created: self.created.to_rfc3339_opts(SecondsFormat::Secs, true),
        }
    }

    fn to_secret_json(&self) -> Zeroizing<Vec<u8>> {
        let doc = SecretDoc {
            version: 1,
            ed25519: BASE64.encode(self.signing.to_bytes()),
            age: self.age.to_string().expose_secret().to_owned(),
            created: self.created.to_rfc3339_opts(SecondsFormat::Secs, true),
        };
        Zeroizing::new(serde_json::to_vec_pretty(&doc).expect("plain data serializes"))
    }

    fn from_secret_json(bytes: &[u8], source: &Path) -> anyhow::Result<Self> {
        let corrupt = || format!("{} is corrupt: not a univrs key file", source.display());
        let doc: SecretDoc = serde_json::from_slice(bytes).with_context(corrupt)?;
        if doc.version != 1 {
            bail!("{}: key file version {} is not supported by this ui", source.display(), doc.version);
        }
        let seed = Zeroizing::new(BASE64.decode(&doc.ed25519).ok().with_context(corrupt)?);
        let seed: &[u8; 32] = seed.as_slice().try_into().ok().with_context(corrupt)?;
        let age: age::x25519::Identity = doc.age.parse().ok().with_context(corrupt)?;
        let created =
            DateTime::parse_from_rfc3339(&doc.created).ok().with_context(corrupt)?.with_timezone(&Utc);
        Ok(Self { signing: SigningKey::from_bytes(seed), age, created })
    }
}

impl Drop for SecretDoc {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.ed25519.zeroize();
        self.age.zeroize();
    }
}

/// Whether an identity exists in `dirs`.
pub fn exists(dirs: &ConfigDirs) -> bool {
    dirs.public_key().exists() || dirs.keypair_encrypted().exists() || dirs.keypair_plain().exists()
}

/// Fails, naming the identity, if one exists in `dirs`.
pub fn ensure_absent(dirs: &ConfigDirs) -> anyhow::Result<()> {
    if exists(dirs) {
        let who = load_public(dirs).map(|p| format!(" ({})", p.did)).unwrap_or_default();
        bail!(
            "an identity already exists in {}{who}: pass --force to replace it \
             (the old key is lost unless you ran `ui identity export`)",
            dirs.identity_dir().display()
        );
    }
    Ok(())
}

/// Whether the stored private keys are passphrase-protected.
pub fn is_encrypted(dirs: &ConfigDirs) -> bool {
    dirs.keypair_encrypted().exists()
}

/// Reads `public.key`.
pub fn load_public(dirs: &ConfigDirs) -> anyhow::Result<PublicIdentity> {
    let path = dirs.public_key();
    if !path.exists() {
        bail!("no identity in {}: run `ui init` to create one", dirs.root().display());
    }
    let bytes = fsutil::read_limited(&path, MAX_KEY_FILE)?;
    let text =
        String::from_utf8(bytes).ok().with_context(|| format!("{} is corrupt: not UTF-8", path.display()))?;
    toml::from_str(&text).with_context(|| format!("{} is corrupt", path.display()))
}

/// Loads the private keys, asking for the passphrase (through `passphrase`) only if they are
/// encrypted. Checks them against `public.key`.
pub fn load(
    dirs: &ConfigDirs,
    passphrase: impl FnOnce() -> anyhow::Result<SecretString>,
) -> anyhow::Result<Identity> {
    let public = load_public(dirs)?;
    let identity = if is_encrypted(dirs) {
        let path = dirs.keypair_encrypted();
        let bytes = fsutil::read_limited(&path, MAX_KEY_FILE)?;
        let plain = decrypt(&bytes, passphrase()?, &path)?;
        Identity::from_secret_json(&plain, &path)?
    } else {
        let path = dirs.keypair_plain();
        if !path.exists() {
            bail!(
                "{} has no private key (keypair.age or keypair.json): restore it with `ui identity import`",
                dirs.identity_dir().display()
            );
        }
        let bytes = Zeroizing::new(fsutil::read_limited(&path, MAX_KEY_FILE)?);
        Identity::from_secret_json(&bytes, &path)?
    };
    if identity.did() != public.did {
        bail!(
            "{} says {} but the private key is {}: the identity files do not belong together",
            dirs.public_key().display(),
            public.did,
            identity.did()
        );
    }
    Ok(identity)
}

/// Stores `identity` in `dirs`, replacing an existing one only if `force`. All or nothing:
/// the new files are written into a fresh directory that is renamed into place.
pub fn store(
    dirs: &ConfigDirs,
    identity: &Identity,
    protection: &Protection,
    force: bool,
) -> anyhow::Result<()> {
    if !force {
        ensure_absent(dirs)?;
    }
    dirs.ensure_root()?;
    let pid = std::process::id();
    let staging = dirs.root().join(format!(".identity.new-{pid}"));
    let retired = dirs.root().join(format!(".identity.old-{pid}"));
    let _ = fs::remove_dir_all(&staging);
    let result = (|| {
        fsutil::create_private_dir(&staging)?;
        let secret = identity.to_secret_json();
        let (file, bytes) = match protection {
            Protection::Passphrase(p) => ("keypair.age", Zeroizing::new(encrypt(&secret, p.clone())?)),
            Protection::None => ("keypair.json", secret),
        };
        fsutil::write_atomic(&staging.join(file), &bytes, PRIVATE_FILE)?;
        let public = toml::to_string(&identity.public()).context("cannot encode public.key")?;
        let public = format!("# univrs public identity: safe to share\n{public}");
        fsutil::write_atomic(&staging.join("public.key"), public.as_bytes(), PRIVATE_FILE)?;
        let live = dirs.identity_dir();
        if live.exists() {
            fs::rename(&live, &retired).with_context(|| format!("cannot move {} aside", live.display()))?;
        }
        fs::rename(&staging, &live).with_context(|| format!("cannot create {}", live.display()))?;
        fsutil::sync_dir(dirs.root())?;
        if retired.exists() {
            fs::remove_dir_all(&retired).with_context(|| format!("cannot remove {}", retired.display()))?;
        }
        anyhow::Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_dir_all(&staging);
        // Put the old identity back if it had been moved aside.
        if retired.exists() && !dirs.identity_dir().exists() {
            let _ = fs::rename(&retired, dirs.identity_dir());
        }
    }
    result
}

/// An age-encrypted backup of `identity` under `passphrase`.
pub fn export(identity: &Identity, passphrase: SecretString) -> anyhow::Result<Vec<u8>> {
    encrypt(&identity.to_secret_json(), passphrase)
}

/// Opens a backup made by [`export`].
pub fn import(path: &Path, passphrase: SecretString) -> anyhow::Result<Identity> {
    let bytes = fsutil::read_limited(path, MAX_KEY_FILE)?;
    let plain = decrypt(&bytes, passphrase, path)?;
    Identity::from_secret_json(&plain, path)
}

fn encrypt(plain: &[u8], passphrase: SecretString) -> anyhow::Result<Vec<u8>> {
    let recipient = age::scrypt::Recipient::new(passphrase);
    age::encrypt(&recipient, plain).context("cannot encrypt the private key")
}

fn decrypt(cipher: &[u8], passphrase: SecretString, source: &Path) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    use age::DecryptError as E;
    let decryptor = match age::Decryptor::new_buffered(cipher) {
        Ok(d) => d,
        Err(e) => bail!("{} is corrupt or truncated: {e}", source.display()),
    };
    if !decryptor.is_scrypt() {
        bail!("{} is not passphrase-encrypted: it is not a univrs key file", source.display());
    }
    let identity = age::scrypt::Identity::new(passphrase);
    let mut reader = match decryptor.decrypt(std::iter::once(&identity as &dyn age::Identity)) {
        Ok(r) => r,
        Err(E::NoMatchingKeys | E::DecryptionFailed) => {
            bail!("wrong passphrase for {}", source.display())
        }
        Err(e) => bail!("cannot decrypt {}: {e}", source.display()),
    };
    let mut plain = Zeroizing::new(Vec::new());
    reader
        .read_to_end(&mut plain)
        .with_context(|| format!("{} is corrupt or truncated", source.display()))?;
    Ok(plain)
}
