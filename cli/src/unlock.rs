//! The unlock agent, as ssh-agent: `ui unlock` (or the first command that asks for the
//! passphrase on a terminal) keeps the identity's decrypted key in a process of the user's
//! for a bounded time, reachable only through a Unix socket that only the user can open
//! (mode 0600, in a 0700 directory of the config dir), in a process that is not dumpable (no
//! core file, no ptrace by the user's other processes). Signatures and tokens are made there, so commands —
//! and kubectl's credential plugin, `ui token` — do not ask for the passphrase again, and the
//! key itself never leaves that process. `ui lock` ends it; so does its time running out.
//!
//! The protocol is one JSON line each way per connection: `{"op":"public"}` →
//! `{"public": BASE64}`, `{"op":"sign","message": BASE64}` → `{"signature": BASE64}`,
//! `{"op":"stop"}` → `{}`; an error is `{"error": "…"}`.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use age::secrecy::SecretString;
use anyhow::{Context as _, bail};
use api::signing::Sign;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, SigningKey, VerifyingKey};
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::keystore;
use crate::paths::ConfigDirs;

/// How long a key stays unlocked unless told otherwise.
pub const DEFAULT_FOR: Duration = Duration::from_secs(15 * 60);
/// The longest a key may stay unlocked.
pub const MAX_FOR: Duration = Duration::from_secs(24 * 3600);
/// How long a client waits for the agent.
const TIMEOUT: Duration = Duration::from_secs(5);
/// The largest request or answer line.
const MAX_LINE: u64 = 64 * 1024;

/// The agent's socket for the identity in `dirs` (in a directory of its own, 0700).
pub fn socket(dirs: &ConfigDirs) -> PathBuf {
    dirs.root().join("agent").join("agent.sock")
}

/// One request to the agent at `path`, and its answer.
fn ask(path: &Path, request: &Value) -> Result<Value, String> {
    let mut stream = UnixStream::connect(path)
        .map_err(|e| format!("the unlock agent at {} is not there ({e})", path.display()))?;
    stream.set_read_timeout(Some(TIMEOUT)).map_err(|e| e.to_string())?;
    stream.set_write_timeout(Some(TIMEOUT)).map_err(|e| e.to_string())?;
    writeln!(stream, "{request}").map_err(|e| format!("the unlock agent did not listen: {e}"))?;
    let mut line = String::new();
    BufReader::new(stream.take(MAX_LINE))
        .read_line(&mut line)
        .map_err(|e| format!("the unlock agent did not answer: {e}"))?;
    let answer: Value =
        serde_json::from_str(&line).map_err(|_| "the unlock agent answered nonsense".to_owned())?;
    match answer.get("error").and_then(Value::as_str) {
        Some(e) => Err(e.to_owned()),
        None => Ok(answer),
    }
}

/// Signs through the agent that holds the key.
#[derive(Debug)]
pub struct AgentSigner {
    path: PathBuf,
    public: VerifyingKey,
}

impl Sign for AgentSigner {
    fn public(&self) -> VerifyingKey {
        self.public
    }

    fn try_sign(&self, message: &[u8]) -> Result<Signature, String> {
        let answer = ask(&self.path, &json!({ "op": "sign", "message": B64.encode(message) }))?;
        let bytes = answer
            .get("signature")
            .and_then(Value::as_str)
            .and_then(|s| B64.decode(s).ok())
            .and_then(|b| <[u8; 64]>::try_from(b).ok())
            .ok_or("the unlock agent gave no signature")?;
        let signature = Signature::from_bytes(&bytes);
        // Checked: an agent of another key (or an impostor at the socket) signs nothing for us.
        self.public
            .verify_strict(message, &signature)
            .map_err(|_| "the unlock agent's signature does not verify with your key".to_owned())?;
        Ok(signature)
    }
}

/// The agent holding the key of the identity in `dirs`, if one runs.
pub fn connect(dirs: &ConfigDirs) -> Option<AgentSigner> {
    let path = socket(dirs);
    let expected = keystore::load_public(dirs).ok()?.did;
    let answer = ask(&path, &json!({ "op": "public" })).ok()?;
    let bytes = answer.get("public").and_then(Value::as_str).and_then(|s| B64.decode(s).ok())?;
    let public = VerifyingKey::from_bytes(&<[u8; 32]>::try_from(bytes).ok()?).ok()?;
    (api::identity::Did::from_key(&public) == expected).then_some(AgentSigner { path, public })
}

/// What signs as the identity in `dirs`: the unlock agent when it runs, else the key itself
/// (asking for the passphrase through `passphrase` if it is encrypted). A passphrase typed
/// on a terminal keeps the key unlocked for [`DEFAULT_FOR`], so the next command does not ask
/// again (`ui lock` forgets it).
pub fn signer(
    dirs: &ConfigDirs,
    passphrase: impl FnOnce() -> anyhow::Result<SecretString>,
) -> anyhow::Result<Box<dyn Sign>> {
    if let Some(agent) = connect(dirs) {
        return Ok(Box::new(agent));
    }
    let prompted = keystore::is_encrypted(dirs)
        && std::io::IsTerminal::is_terminal(&std::io::stdin())
        && std::env::var_os(crate::passphrase::ENV).is_none();
    let identity = keystore::load(dirs, passphrase)?;
    let key = identity.signing_key().clone();
    if prompted {
        match start(dirs, &key, DEFAULT_FOR) {
            Ok(()) => eprintln!(
                "your key stays unlocked for {} min (ui lock forgets it now)",
                DEFAULT_FOR.as_secs() / 60
            ),
            Err(e) => eprintln!("note: your key could not be kept unlocked: {e:#}"),
        }
    }
    Ok(Box::new(key))
}

/// Starts an agent holding `key` for `lifetime`, in the background, and waits until it
/// answers.
pub fn start(dirs: &ConfigDirs, key: &SigningKey, lifetime: Duration) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt as _;
    let path = socket(dirs);
    let me = std::env::current_exe().context("cannot find the ui program")?;
    let mut child = std::process::Command::new(me)
        .args(["unlock-agent", "--socket"])
        .arg(&path)
        .args(["--for", &lifetime.as_secs().to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        // Its own process group: a Ctrl-C at the terminal does not end it.
        .process_group(0)
        .spawn()
        .context("cannot start the unlock agent")?;
    {
        let hex = Zeroizing::new(key.to_bytes().iter().map(|b| format!("{b:02x}")).collect::<String>());
        let mut stdin = child.stdin.take().context("the unlock agent has no stdin")?;
        stdin.write_all(hex.as_bytes()).context("cannot hand the key to the unlock agent")?;
    }
    let deadline = Instant::now() + TIMEOUT;
    while Instant::now() < deadline {
        if connect(dirs).is_some() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            bail!("the unlock agent stopped at once ({status})");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    bail!("the unlock agent did not answer within {} s", TIMEOUT.as_secs())
}

/// Ends the agent of the identity in `dirs`; whether one ran.
pub fn stop(dirs: &ConfigDirs) -> bool {
    let path = socket(dirs);
    if ask(&path, &json!({ "op": "stop" })).is_ok() {
        return true;
    }
    // A socket left by an agent that died (nobody listens); one that is only slow keeps it.
    if UnixStream::connect(&path).is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused) {
        let _ = std::fs::remove_file(&path);
    }
    false
}

/// The agent itself (`ui unlock-agent`): reads the key (hex) on stdin, serves `socket` until
/// `lifetime` passes or it is told to stop, then removes the socket and ends.
pub fn serve(socket: &Path, lifetime: Duration) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    let mut hex = Zeroizing::new(String::new());
    std::io::stdin().take(128).read_to_string(&mut hex)?;
    let bytes: Zeroizing<Vec<u8>> = Zeroizing::new(
        (0..hex.trim().len())
            .step_by(2)
            .map(|i| u8::from_str_radix(hex.trim().get(i..i + 2).unwrap_or("zz"), 16))
            .collect::<Result<_, _>>()
            .context("the key given is not hex")?,
    );
    let key = SigningKey::from_bytes(
        &<[u8; 32]>::try_from(bytes.as_slice()).context("the key given is not 32 bytes")?,
    );
    // No core file holds the key, and the user's other processes cannot read it by ptrace.
    nix::sys::prctl::set_dumpable(false).context("cannot make the unlock agent undumpable")?;
    // Only the user: a directory of its own, 0700, whatever the config dir's mode, so the
    // socket is never reachable by others, not even before its own mode is set.
    let dir = socket.parent().context("the socket has no directory")?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot make {} private", dir.display()))?;
    let _ = std::fs::remove_file(socket);
    let listener =
        UnixListener::bind(socket).with_context(|| format!("cannot listen on {}", socket.display()))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))?;
    let lifetime = lifetime.min(MAX_FOR);
    let owned = socket.to_owned();
    std::thread::spawn(move || {
        std::thread::sleep(lifetime);
        let _ = std::fs::remove_file(&owned);
        std::process::exit(0);
    });
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let _ = stream.set_read_timeout(Some(TIMEOUT));
        let mut line = String::new();
        if BufReader::new((&stream).take(MAX_LINE)).read_line(&mut line).is_err() {
            continue;
        }
        let request: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        let answer = match request.get("op").and_then(Value::as_str) {
            Some("public") => json!({ "public": B64.encode(key.verifying_key().as_bytes()) }),
            Some("sign") => {
                match request.get("message").and_then(Value::as_str).and_then(|m| B64.decode(m).ok()) {
                    Some(message) => {
                        json!({ "signature": B64.encode(ed25519_dalek::Signer::sign(&key, &message).to_bytes()) })
                    }
                    None => json!({ "error": "sign: no message" }),
                }
            }
            Some("stop") => {
                let _ = writeln!(stream, "{{}}");
                break;
            }
            _ => json!({ "error": "unknown request" }),
        };
        let _ = writeln!(stream, "{answer}");
    }
    let _ = std::fs::remove_file(socket);
    Ok(())
}

/// A duration as people write it: `90s`, `15m`, `2h`, or seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (number, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => (&t[..i], &t[i..]),
        None => (t, "s"),
    };
    let n: u64 = number.parse().map_err(|_| format!("{text:?} is not a duration (e.g. 90s, 15m, 2h)"))?;
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return Err(format!("{text:?} is not a duration (e.g. 90s, 15m, 2h)")),
    };
    let secs = n.saturating_mul(unit);
    if secs == 0 || secs > MAX_FOR.as_secs() {
        return Err(format!("{text:?}: between 1 second and {} hours", MAX_FOR.as_secs() / 3600));
    }
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
        assert!(
            parse_duration("0").is_err()
                && parse_duration("3d").is_err()
                && parse_duration("25h").is_err()
                && parse_duration("18446744073709551615h").is_err()
        );
    }
}
