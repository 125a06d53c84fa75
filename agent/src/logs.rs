//! The agent's log endpoint: `GET /replicas/UID/log[?follow=true][&tailLines=N]` streams a
//! replica's output. Only the control plane calls it (`ui logs` goes through the apiserver,
//! which checks that the caller owns the workload): a request needs a token minted by a
//! control-plane member for this node (audience `univrs-node:NODE`).
//!
//! It is served over TLS 1.3 with a self-signed certificate of the node's own Ed25519 key, the
//! key its operator signed into the Node (`spec.nodeKey`): the apiserver pins that key, so it
//! sends its token only to this agent, never to whoever else answers at the Node's address.
//! Connections are bounded in number, and so are the handshake and the request's headers in
//! time.

use std::collections::BTreeSet;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use rcgen::{CertificateParams, DnType, KeyPair};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use zeroize::Zeroizing;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use crate::run::{LOG_FILE, RESULT_FILE};

/// The audience of tokens for the agent of `node`.
pub fn audience(node: &str) -> String {
    format!("univrs-node:{node}")
}

/// How many connections the endpoint serves at once (its one client is the control plane).
const MAX_CONNECTIONS: usize = 64;
/// How long a TLS handshake, and then a request's headers, may take.
const HANDSHAKE: Duration = Duration::from_secs(10);
const HEADERS: Duration = Duration::from_secs(10);

/// Why the endpoint cannot serve TLS.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// rcgen refused the key or the certificate.
    #[error("cannot make the node's certificate from its key: {0}")]
    Cert(#[from] rcgen::Error),
    /// rustls refused the certificate.
    #[error("cannot configure TLS for the log endpoint: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The PKCS#8 (v1, RFC 8410) encoding of an Ed25519 private key: a fixed prefix, then the
/// 32-byte seed. rcgen and rustls read keys in this form.
fn ed25519_pkcs8(key: &SigningKey) -> Zeroizing<Vec<u8>> {
    const PREFIX: [u8; 16] =
        [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
    let mut der = Zeroizing::new(Vec::with_capacity(48));
    der.extend_from_slice(&PREFIX);
    der.extend_from_slice(key.as_bytes());
    der
}

/// The TLS configuration of node `node`'s log endpoint: TLS 1.3 only, a self-signed
/// certificate of the node key. (Its dates do not matter: the apiserver trusts the key the
/// Node names, not a certificate authority.)
pub fn tls_config(node: &str, key: &SigningKey) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let pkcs8 = ed25519_pkcs8(key);
    let key_pair = KeyPair::from_pkcs8_der_and_sign_algo(
        &PrivatePkcs8KeyDer::from(pkcs8.as_slice()),
        &rcgen::PKCS_ED25519,
    )?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, format!("univrs node {node}"));
    let cert = params.self_signed(&key_pair)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8.to_vec())),
        )?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves `server` over TLS on `listener` until `shutdown`; open connections (followed logs)
/// end with it.
pub async fn serve(
    listener: TcpListener,
    server: LogServer,
    tls: Arc<rustls::ServerConfig>,
    shutdown: CancellationToken,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;

    let app = router(server);
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let stream = tokio::select! {
            () = shutdown.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // Out of file descriptors, or a connection reset before it was accepted: wait a
                // little rather than spin.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // At the limit a new connection is closed at once.
        let Ok(slot) = slots.clone().try_acquire_owned() else { continue };
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(app.clone());
        connections.spawn(async move {
            let _slot = slot;
            let Ok(Ok(stream)) = tokio::time::timeout(HANDSHAKE, acceptor.accept(stream)).await else {
                return;
            };
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADERS)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
    connections.abort_all();
}

/// Who may read logs, and where they are.
#[derive(Clone, Debug)]
pub struct LogServer {
    /// The node's name.
    pub node: String,
    /// The run directories (`STATE/runs`).
    pub runs: PathBuf,
    /// The control-plane members' did:keys (kept fresh by the agent).
    pub members: Arc<RwLock<BTreeSet<String>>>,
    /// The command that runs a program in a replica's container (`[ui, node, exec]`).
    pub exec: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LogQuery {
    #[serde(default)]
    follow: Option<String>,
    #[serde(default)]
    tail_lines: Option<usize>,
}

/// The routes.
pub fn router(server: LogServer) -> Router {
    Router::new()
        .route("/replicas/{uid}/log", get(log))
        .route("/replicas/{uid}/exec", axum::routing::post(exec))
        .with_state(Arc::new(server))
}

/// The refusal, unless the request's token was minted by a control-plane member for this node.
fn not_a_member(server: &LogServer, headers: &HeaderMap) -> Option<Response> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some(token) = token else { return Some(deny(StatusCode::UNAUTHORIZED, "a bearer token is needed")) };
    let now = chrono::Utc::now().timestamp();
    let did = match api::token::verify(token, &audience(&server.node), now) {
        Ok((did, _)) => did,
        Err(e) => return Some(deny(StatusCode::UNAUTHORIZED, &format!("bad token: {e}"))),
    };
    if !server.members.read().expect("not poisoned").contains(did.as_str()) {
        return Some(deny(StatusCode::FORBIDDEN, "only the control plane calls a node's agent"));
    }
    None
}

/// What the apiserver asks to run (it checked the caller owns the replica, and the bounds).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExecBody {
    command: Vec<String>,
    #[serde(default)]
    timeout_seconds: Option<u64>,
    /// The replica owner's token for [`api::kinds::exec_audience`] of this command.
    #[serde(default)]
    authorization: Option<String>,
    /// Part of the authorization's audience: unique per exec.
    #[serde(default)]
    nonce: Option<String>,
}

/// Whether `authorization` is the owner's (`owner`, the signer of the replica's workload as the
/// run recorded it) authorization of `command` with `timeout` in replica `uid`, now, and never
/// used before. The members' token that reaches this endpoint lets the apiserver call it; this
/// one says the owner asked for this command, so no member runs one on its own.
#[allow(clippy::too_many_arguments)]
fn authorized(
    authorization: Option<&str>,
    nonce: &str,
    owner: Option<&str>,
    uid: &str,
    command: &[String],
    timeout: u64,
    now: i64,
) -> Result<(), String> {
    let token = authorization.ok_or("no authorization by the replica's owner")?;
    let owner = owner.ok_or("the run does not say whose it is")?;
    let audience = api::kinds::exec_audience(uid, command, timeout, nonce);
    let (did, claims) =
        api::token::verify(token, &audience, now).map_err(|e| format!("authorization: {e}"))?;
    if did.as_str() != owner {
        return Err(format!("authorization: signed by {did}, not by the replica's owner"));
    }
    if claims.exp - claims.iat > api::kinds::EXEC_AUTHORIZATION_SECS {
        return Err(format!("authorization: lasts more than {} s", api::kinds::EXEC_AUTHORIZATION_SECS));
    }
    // Once only: a token seen is remembered until it expires.
    static SEEN: std::sync::Mutex<Vec<(String, i64)>> = std::sync::Mutex::new(Vec::new());
    let mut seen = SEEN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    seen.retain(|(_, exp)| *exp + api::token::CLOCK_SKEW_SECS >= now);
    if seen.iter().any(|(t, _)| t == token) {
        return Err("authorization: already used".to_owned());
    }
    if seen.len() >= 4096 {
        return Err("authorization: too many execs in the last minutes; try again later".to_owned());
    }
    seen.push((token.to_owned(), claims.exp));
    Ok(())
}

/// Most bytes of an exec's output (standard output and error each) returned.
pub const MAX_EXEC_OUTPUT: usize = 1 << 20;

/// `POST /replicas/UID/exec`: runs a command in the replica's running container (`ui node
/// exec`: its namespaces, cgroup, capabilities and seccomp filter) and answers its exit code
/// and output (each stream up to [`MAX_EXEC_OUTPUT`]).
async fn exec(
    State(server): State<Arc<LogServer>>,
    Path(uid): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(denied) = not_a_member(&server, &headers) {
        return denied;
    }
    if !crate::run::is_run_id(&uid) {
        return deny(StatusCode::BAD_REQUEST, "not a replica uid");
    }
    let Ok(asked) = serde_json::from_slice::<ExecBody>(&body) else {
        return deny(StatusCode::BAD_REQUEST, "not an exec request");
    };
    if let Err(e) = api::kinds::check_command(&asked.command) {
        return deny(StatusCode::BAD_REQUEST, &format!("command: {e}"));
    }
    let dir = server.runs.join(&uid);
    if crate::node::live_shim(&dir).is_none() || !dir.join(crate::shim::CONTAINER_PID_FILE).exists() {
        return deny(StatusCode::CONFLICT, "the replica is not running in a container on this node");
    }
    let timeout = Duration::from_secs(asked.timeout_seconds.unwrap_or(30).clamp(1, 300));
    let owner =
        crate::run::read_json::<crate::run::RunSpec>(&dir, crate::run::SPEC_FILE).ok().and_then(|s| s.owner);
    let now = chrono::Utc::now().timestamp();
    let checked = authorized(
        asked.authorization.as_deref(),
        asked.nonce.as_deref().unwrap_or_default(),
        owner.as_deref(),
        &uid,
        &asked.command,
        asked.timeout_seconds.unwrap_or(30),
        now,
    );
    if let Err(e) = checked {
        return deny(StatusCode::FORBIDDEN, &e);
    }
    let Ok(_permit) = exec_permits().try_acquire() else {
        return deny(
            StatusCode::TOO_MANY_REQUESTS,
            &format!("the node runs {MAX_EXECS} commands in its replicas already: try again later"),
        );
    };
    let prefix = crate::probe::exec_prefix(&server.exec, &dir);
    let Some((program, args)) = prefix.split_first() else {
        return deny(StatusCode::INTERNAL_SERVER_ERROR, "no exec command configured");
    };
    let child = tokio::process::Command::new(program)
        .args(args)
        .arg(timeout.as_secs().to_string())
        .arg("--")
        .args(&asked.command)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return deny(StatusCode::INTERNAL_SERVER_ERROR, &format!("cannot run the command: {e}")),
    };
    let (out, err) = (child.stdout.take().expect("piped"), child.stderr.take().expect("piped"));
    let ended = CancellationToken::new();
    let ran = async {
        let waited = async {
            let status = child.wait().await;
            ended.cancel();
            status
        };
        let (status, (stdout, cut_out), (stderr, cut_err)) =
            tokio::join!(waited, read_bounded(out, ended.clone()), read_bounded(err, ended.clone()));
        (status, stdout, stderr, cut_out || cut_err)
    };
    let Ok((status, stdout, stderr, truncated)) =
        tokio::time::timeout(timeout + Duration::from_secs(10), ran).await
    else {
        return deny(StatusCode::GATEWAY_TIMEOUT, "the command did not end in time");
    };
    let code = match status {
        Ok(s) => s.code().unwrap_or(137),
        Err(e) => {
            return deny(StatusCode::INTERNAL_SERVER_ERROR, &format!("cannot wait for the command: {e}"));
        }
    };
    let answer = serde_json::json!({
        "exitCode": code,
        "stdout": String::from_utf8_lossy(&stdout),
        "stderr": String::from_utf8_lossy(&stderr),
        "truncated": truncated,
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(answer.to_string()))
        .expect("a valid response")
}

fn deny(code: StatusCode, message: &str) -> Response {
    (code, format!("{message}\n")).into_response()
}

async fn log(
    State(server): State<Arc<LogServer>>,
    Path(uid): Path<String>,
    Query(q): Query<LogQuery>,
    headers: HeaderMap,
) -> Response {
    if let Some(denied) = not_a_member(&server, &headers) {
        return denied;
    }
    if !crate::run::is_run_id(&uid) {
        return deny(StatusCode::BAD_REQUEST, "not a replica uid");
    }
    let dir = server.runs.join(&uid);
    let path = dir.join(LOG_FILE);
    let Ok(mut file) = std::fs::File::open(&path) else {
        return deny(StatusCode::NOT_FOUND, "no output of this replica on this node (yet)");
    };
    let start = match q.tail_lines {
        Some(n) => tail_offset(&mut file, n).unwrap_or(0),
        None => 0,
    };
    let follow = matches!(q.follow.as_deref(), Some("true" | "1"));
    let stream = futures_util::stream::unfold((file, start), move |(mut file, offset)| {
        let dir = dir.clone();
        let path = path.clone();
        async move {
            let mut offset = offset;
            loop {
                let mut buf = Vec::new();
                if file.seek(SeekFrom::Start(offset)).is_err() {
                    return None;
                }
                let read = (&mut file).take(64 * 1024).read_to_end(&mut buf).unwrap_or(0);
                if read > 0 {
                    let next = offset + read as u64;
                    return Some((Ok::<_, std::io::Error>(Bytes::from(buf)), (file, next)));
                }
                // The shim started a new file (the old one became output.log.1): go on there.
                if let Ok(newer) = std::fs::File::open(&path)
                    && !same_file(&file, &newer)
                {
                    file = newer;
                    offset = 0;
                    continue;
                }
                if !follow || finished(&dir) {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Body::from_stream(stream))
        .expect("a valid response")
}

/// Reads `r` to its end, keeping at most [`MAX_EXEC_OUTPUT`] bytes; whether some were dropped.
/// Once `ended` fires (the command ended), for at most [`AFTER_END`] more: a process it left in
/// the background may hold the output open for as long as it lives.
async fn read_bounded(mut r: impl tokio::io::AsyncRead + Unpin, ended: CancellationToken) -> (Vec<u8>, bool) {
    use tokio::io::AsyncReadExt;
    let (mut buf, mut chunk, mut truncated) = (Vec::new(), [0u8; 8192], false);
    let deadline = async {
        ended.cancelled().await;
        tokio::time::sleep(AFTER_END).await;
    };
    tokio::pin!(deadline);
    loop {
        let n = tokio::select! {
            read = r.read(&mut chunk) => read,
            () = &mut deadline => break,
        };
        match n {
            Ok(0) | Err(_) => break,
            Ok(n) if buf.len() + n <= MAX_EXEC_OUTPUT => buf.extend_from_slice(&chunk[..n]),
            Ok(_) => truncated = true, // read on (the command must not block), not kept
        }
    }
    (buf, truncated)
}

/// How long an exec's output is read after the command ended.
const AFTER_END: Duration = Duration::from_millis(500);

/// Most `ui exec` commands a node runs in its replicas at once (exec probes are not counted:
/// each runs alone per probe, in its replica's cgroup).
pub const MAX_EXECS: usize = 16;

/// The permits of [`MAX_EXECS`].
pub fn exec_permits() -> &'static tokio::sync::Semaphore {
    static PERMITS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_EXECS);
    &PERMITS
}

fn same_file(a: &std::fs::File, b: &std::fs::File) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (a.metadata(), b.metadata()) {
        (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
        _ => true,
    }
}

/// The run is over for good: gone, or ended without a shim that could start it again.
fn finished(dir: &std::path::Path) -> bool {
    if !dir.exists() {
        return true;
    }
    crate::node::live_shim(dir).is_none()
        && dir.join(RESULT_FILE).exists()
        && !dir.join(crate::node::RESTARTING).exists()
}

/// How far back from the end `--tail` looks for line starts.
const TAIL_WINDOW: u64 = 1 << 20;

/// The offset of the last `n` lines of `file` (within its last [`TAIL_WINDOW`] bytes).
fn tail_offset(file: &mut std::fs::File, n: usize) -> std::io::Result<u64> {
    let len = file.metadata()?.len();
    let from = len.saturating_sub(TAIL_WINDOW);
    let mut text = Vec::new();
    file.seek(SeekFrom::Start(from))?;
    (&mut *file).take(TAIL_WINDOW).read_to_end(&mut text)?;
    let mut newlines = 0;
    let body = text.strip_suffix(b"\n").unwrap_or(&text);
    for (i, b) in body.iter().enumerate().rev() {
        if *b == b'\n' {
            newlines += 1;
            if newlines == n {
                return Ok(from + i as u64 + 1);
            }
        }
    }
    Ok(from)
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_the_owner_s_authorization_of_this_very_command_runs_it_once() {
        let owner = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let member = ed25519_dalek::SigningKey::from_bytes(&[8; 32]);
        let did = api::identity::Did::from_key(&owner.verifying_key()).as_str().to_owned();
        let cmd = vec!["cat".to_owned(), "/etc/hostname".to_owned()];
        let now = 1_800_000_000;
        let token = |key: &ed25519_dalek::SigningKey, uid: &str, cmd: &[String], secs: i64| {
            api::token::mint(key, &api::kinds::exec_audience(uid, cmd, 30, "n1"), now, secs)
        };
        let check = |t: Option<&str>, cmd: &[String]| authorized(t, "n1", Some(&did), "uid-1", cmd, 30, now);
        assert!(check(None, &cmd).unwrap_err().contains("no authorization"));
        // A member's own token: not the owner's.
        assert!(
            check(Some(&token(&member, "uid-1", &cmd, 60)), &cmd)
                .unwrap_err()
                .contains("not by the replica's owner")
        );
        // The owner's, for another replica or another command: refused.
        assert!(check(Some(&token(&owner, "uid-2", &cmd, 60)), &cmd).is_err());
        let other = vec!["sh".to_owned()];
        assert!(check(Some(&token(&owner, "uid-1", &other, 60)), &cmd).is_err());
        // Longer than a minute: refused.
        assert!(
            check(Some(&token(&owner, "uid-1", &cmd, 600)), &cmd).unwrap_err().contains("lasts more than")
        );
        // The right one, once.
        let good = token(&owner, "uid-1", &cmd, 60);
        assert_eq!(check(Some(&good), &cmd), Ok(()));
        assert!(check(Some(&good), &cmd).unwrap_err().contains("already used"));
        // A run that does not say whose it is runs nothing.
        let fresh =
            api::token::mint(&owner, &api::kinds::exec_audience("uid-1", &cmd, 30, "n2"), now + 1, 60);
        assert!(authorized(Some(&fresh), "n2", None, "uid-1", &cmd, 30, now).is_err());
        // Another nonce than the one signed: refused.
        assert!(authorized(Some(&fresh), "n3", Some(&did), "uid-1", &cmd, 30, now).is_err());
    }

    use super::*;
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::{DigitallySignedStruct, SignatureScheme};
    use rustls_pki_types::{ServerName, SubjectPublicKeyInfoDer, UnixTime};

    /// A client that talks only to the holder of one Ed25519 key (the apiserver's own check
    /// lives in the apiserver; this one is enough to reach the endpoint in a test).
    #[derive(Debug)]
    struct Pinned(Vec<u8>);

    impl Pinned {
        fn new(key: &SigningKey) -> Self {
            let prefix = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];
            Self([&prefix[..], key.verifying_key().as_bytes()].concat())
        }
    }

    impl ServerCertVerifier for Pinned {
        fn verify_server_cert(
            &self,
            cert: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            // The certificate carries the node key as its public key.
            if cert.windows(self.0.len()).any(|w| w == self.0.as_slice()) {
                Ok(ServerCertVerified::assertion())
            } else {
                Err(rustls::Error::General("not the node key".into()))
            }
        }

        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Err(rustls::Error::General("TLS 1.3 only".into()))
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            _: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            let algorithms = rustls::crypto::ring::default_provider().signature_verification_algorithms;
            let spki = SubjectPublicKeyInfoDer::from(self.0.as_slice());
            rustls::crypto::verify_tls13_signature_with_raw_key(message, &spki, dss, &algorithms)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            vec![SignatureScheme::ED25519]
        }
    }

    /// `GET path` over TLS to `addr`, pinned to `node_key`, with `token` (if any).
    async fn get(
        addr: std::net::SocketAddr,
        node_key: &SigningKey,
        path: &str,
        token: Option<String>,
    ) -> (StatusCode, String) {
        use http_body_util::BodyExt;
        let config =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(&[&rustls::version::TLS13])
                .unwrap()
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Pinned::new(node_key)))
                .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = ServerName::IpAddress(addr.ip().into());
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.unwrap();
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await.unwrap();
        tokio::spawn(conn);
        let mut request = http::Request::get(path).header(header::HOST, addr.to_string());
        if let Some(t) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let response =
            sender.send_request(request.body(http_body_util::Empty::<Bytes>::new()).unwrap()).await.unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn the_endpoint_speaks_tls_with_the_node_key_and_serves_members_only() {
        let (node_key, member, stranger) = (
            SigningKey::from_bytes(&[1; 32]),
            SigningKey::from_bytes(&[2; 32]),
            SigningKey::from_bytes(&[3; 32]),
        );
        let dir = tempfile::tempdir().unwrap();
        let uid = "0f1e2d3c-0000-0000-0000-000000000001";
        std::fs::create_dir_all(dir.path().join(uid)).unwrap();
        std::fs::write(dir.path().join(uid).join(LOG_FILE), "hello\n").unwrap();
        let members = [api::identity::Did::from_key(&member.verifying_key()).as_str().to_owned()];
        let server = LogServer {
            node: "n1".into(),
            runs: dir.path().to_owned(),
            members: Arc::new(RwLock::new(members.into_iter().collect())),
            exec: vec!["false".into()],
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let serving =
            tokio::spawn(serve(listener, server, tls_config("n1", &node_key).unwrap(), shutdown.clone()));

        let now = chrono::Utc::now().timestamp();
        let path = format!("/replicas/{uid}/log");
        let token = |key: &SigningKey, node: &str| Some(api::token::mint(key, &audience(node), now, 60));
        assert_eq!(
            get(addr, &node_key, &path, token(&member, "n1")).await,
            (StatusCode::OK, "hello\n".into())
        );
        let (status, body) = get(addr, &node_key, &path, token(&stranger, "n1")).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert!(body.contains("only the control plane"), "{body}");
        // A member's token for another node is no token for this one.
        assert_eq!(get(addr, &node_key, &path, token(&member, "n2")).await.0, StatusCode::UNAUTHORIZED);
        assert_eq!(get(addr, &node_key, &path, None).await.0, StatusCode::UNAUTHORIZED);
        // The endpoint proves the node key, and no other.
        let other = SigningKey::from_bytes(&[4; 32]);
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let config =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(&[&rustls::version::TLS13])
                .unwrap()
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Pinned::new(&other)))
                .with_no_client_auth();
        let connected = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::IpAddress(addr.ip().into()), tcp)
            .await;
        assert!(connected.is_err());

        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), serving).await.unwrap().unwrap();
    }

    #[test]
    fn the_tail_starts_after_the_nth_last_newline() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        std::fs::write(&p, "a\nb\nc\n").unwrap();
        let mut f = std::fs::File::open(&p).unwrap();
        assert_eq!(tail_offset(&mut f, 1).unwrap(), 4);
        assert_eq!(tail_offset(&mut f, 2).unwrap(), 2);
        assert_eq!(tail_offset(&mut f, 9).unwrap(), 0);
    }
}
