//! Bearer tokens from a kubeconfig's credential: a token as written, or one a client-go exec
//! plugin (`ui token --exec-credential`) mints. Minted tokens are kept until shortly before
//! they expire, and minted again at once when a server refuses one (401: a clock that
//! jumped, a key the server no longer trusts).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::kubeconfig::Credential;

/// Why no token could be had.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Error(pub String);

/// Tokens kept no longer than this when the plugin says no expiry.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(60);
/// A token is minted again this long before it expires.
const MARGIN: Duration = Duration::from_secs(30);

/// The tokens of one credential.
#[derive(Debug)]
pub struct Tokens {
    credential: Credential,
    /// For messages: the kubeconfig the credential came from.
    source: String,
    cached: Mutex<Option<(String, Instant)>>,
}

impl Tokens {
    /// The tokens of `credential` (from the kubeconfig `source`).
    pub fn new(credential: Credential, source: impl Into<String>) -> Self {
        Self { credential, source: source.into(), cached: Mutex::default() }
    }

    /// A bearer token (`None`: no credentials), minted again when the kept one is about to
    /// expire or is `refused` (a server answered 401 to it; when many requests were refused
    /// at once, the first mints and the others take its token). Runs the exec plugin, which
    /// may prompt on the terminal (as client-go lets it): call from a blocking context.
    pub fn bearer(&self, refused: Option<&str>) -> Result<Option<String>, Error> {
        let (command, args, env) = match &self.credential {
            Credential::None => return Ok(None),
            Credential::Token(t) => return Ok(Some(t.clone())),
            Credential::Exec { command, args, env } => (command, args, env),
        };
        let mut cached = self.cached.lock().expect("token cache lock");
        if let Some((token, until)) = cached.as_ref()
            && Instant::now() < *until
            && refused != Some(token.as_str())
        {
            return Ok(Some(token.clone()));
        }
        let out = std::process::Command::new(command)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::inherit())
            .stderr(std::process::Stdio::inherit())
            .output()
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    Error(format!(
                        "kubeconfig {}: its credential plugin {command} is gone (the ui that wrote the kubeconfig was moved or removed): \
                         start `ui up` again to write it anew, or run `ui config kubeconfig`, or set users[].user.exec.command to where ui is now",
                        self.source
                    ))
                } else {
                    Error(format!("kubeconfig {}: cannot run the credential plugin {command}: {e}", self.source))
                }
            })?;
        if !out.status.success() {
            return Err(Error(format!(
                "the credential plugin {command} failed ({}); see its message above",
                out.status
            )));
        }
        let credential: Value = serde_json::from_slice(&out.stdout)
            .map_err(|_| Error(format!("the credential plugin {command} printed no ExecCredential")))?;
        let token = credential
            .pointer("/status/token")
            .and_then(Value::as_str)
            .ok_or_else(|| Error(format!("the credential plugin {command} printed no status.token")))?
            .to_owned();
        let lifetime = credential
            .pointer("/status/expirationTimestamp")
            .and_then(Value::as_str)
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            // Already expired (a clock that differs): used once, not kept.
            .map(|t| (t.with_timezone(&chrono::Utc) - chrono::Utc::now()).to_std().unwrap_or_default())
            .map_or(DEFAULT_LIFETIME, |d| d.saturating_sub(MARGIN));
        *cached = (!lifetime.is_zero()).then(|| (token.clone(), Instant::now() + lifetime));
        Ok(Some(token))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A credential plugin (a shell script) that mints `token-N` on its Nth run, expiring at
    /// `expires`.
    fn plugin(dir: &std::path::Path, expires: &str) -> Tokens {
        let count = dir.join("count");
        let script = format!(
            "n=$(( $(cat {c} 2>/dev/null || echo 0) + 1 )); echo $n > {c}; \
             printf '{{\"status\":{{\"token\":\"token-%s\",\"expirationTimestamp\":\"{expires}\"}}}}' $n",
            c = count.display()
        );
        let credential = Credential::Exec {
            command: "sh".into(),
            args: vec!["-c".into(), script],
            env: Default::default(),
        };
        Tokens::new(credential, "test")
    }

    fn token(tokens: &Tokens, refused: Option<&str>) -> String {
        tokens.bearer(refused).unwrap().unwrap()
    }

    #[test]
    fn a_token_is_kept_and_minted_again_once_when_refused() {
        let dir = tempfile::tempdir().unwrap();
        let in_an_hour = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
        let tokens = plugin(dir.path(), &in_an_hour);
        assert_eq!(token(&tokens, None), "token-1");
        assert_eq!(token(&tokens, None), "token-1", "kept");
        assert_eq!(token(&tokens, Some("token-1")), "token-2", "refused: minted again");
        // Another request refused with the old token at the same time takes the new one.
        assert_eq!(token(&tokens, Some("token-1")), "token-2");
    }

    #[test]
    fn a_token_that_has_already_expired_is_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = plugin(dir.path(), "2020-01-01T00:00:00Z");
        assert_eq!(token(&tokens, None), "token-1");
        assert_eq!(token(&tokens, None), "token-2");
    }
}
