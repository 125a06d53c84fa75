//! Where a user's univrs files live (vision §4.3):
//!
//! ```text
//! $UNIVRS_CONFIG_DIR (default $XDG_CONFIG_HOME/univrs, i.e. ~/.config/univrs)
//! ├── identity/
//! │   ├── keypair.age     private keys, age-encrypted with a passphrase (0600)
//! │   ├── keypair.json    instead of keypair.age when created with --no-passphrase (0600)
//! │   └── public.key      did:key and age recipient: shareable
//! ├── policy/
//! └── config.toml
//! ```

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// An XDG base directory: `$VAR` if it is an absolute path, else `$HOME/fallback`; `None`
/// when neither is set.
pub fn xdg_base(var: &str, fallback: &str) -> Option<PathBuf> {
    let from_var = std::env::var_os(var).map(PathBuf::from).filter(|p| p.is_absolute());
    from_var.or_else(|| {
        std::env::var_os("HOME").filter(|h| !h.is_empty()).map(|h| PathBuf::from(h).join(fallback))
    })
}

/// The resolved configuration directory and the paths inside it.
#[derive(Clone, Debug)]
pub struct ConfigDirs {
    root: PathBuf,
}

impl ConfigDirs {
    /// `flag` (from `--config-dir` or `UNIVRS_CONFIG_DIR`), else `$XDG_CONFIG_HOME/univrs`,
    /// else `$HOME/.config/univrs`.
    pub fn resolve(flag: Option<PathBuf>) -> anyhow::Result<Self> {
        if let Some(dir) = flag.filter(|d| !d.as_os_str().is_empty()) {
            return Ok(Self { root: dir });
        }
        let Some(base) = xdg_base("XDG_CONFIG_HOME", ".config") else {
            bail!("cannot find your config directory: set UNIVRS_CONFIG_DIR, XDG_CONFIG_HOME or HOME")
        };
        Ok(Self { root: base.join("univrs") })
    }

    /// The configuration directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// `identity/`.
    pub fn identity_dir(&self) -> PathBuf {
        self.root.join("identity")
    }
    /// `identity/keypair.age`: the passphrase-encrypted private keys.
    pub fn keypair_encrypted(&self) -> PathBuf {
        self.identity_dir().join("keypair.age")
    }
    /// `identity/keypair.json`: the private keys stored without a passphrase.
    pub fn keypair_plain(&self) -> PathBuf {
        self.identity_dir().join("keypair.json")
    }
    /// `identity/public.key`.
    pub fn public_key(&self) -> PathBuf {
        self.identity_dir().join("public.key")
    }
    /// `config.toml`.
    pub fn config_file(&self) -> PathBuf {
        self.root.join("config.toml")
    }
    /// `policy/`.
    pub fn policy_dir(&self) -> PathBuf {
        self.root.join("policy")
    }

    /// Creates the configuration directory (0700) if it does not exist.
    pub fn ensure_root(&self) -> anyhow::Result<()> {
        crate::fsutil::create_private_dir(&self.root)
            .with_context(|| format!("cannot create config directory {}", self.root.display()))
    }
}
