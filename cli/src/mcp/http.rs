//! `ui mcp --listen`: Streamable HTTP on loopback, at `/mcp`. Every request needs the bearer
//! token; rmcp refuses a `Host` that is not loopback and an `Origin` that is not a loopback
//! page (DNS rebinding: CVE-2026-42559), and bodies over a bound.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio_util::sync::CancellationToken;

use super::{State, UiServer};

/// The path the MCP endpoint is served at.
pub const PATH: &str = "/mcp";
/// The largest request body (a manifest of 256 KiB, JSON-escaped, fits).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The address `--listen` names: `HOST:PORT`, or a port alone (then 127.0.0.1). Only loopback
/// addresses: the token is the only authentication, and it travels in clear.
pub fn listen_addr(arg: &str) -> anyhow::Result<SocketAddr> {
    let addr = match arg.parse::<u16>() {
        Ok(port) => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
        Err(_) => arg.parse::<SocketAddr>().with_context(|| {
            format!("--listen {arg}: not an address: give HOST:PORT (e.g. 127.0.0.1:8765) or a port")
        })?,
    };
    if !addr.ip().is_loopback() {
        bail!(
            "--listen {arg}: {} is not a loopback address: `ui mcp` serves this machine only (127.0.0.1 or [::1]), since its bearer token travels without TLS",
            addr.ip()
        );
    }
    Ok(addr)
}

/// The bearer token: read from `file` when it exists, else generated and written there
/// (mode 0600). Returns the token and the file.
pub fn token(file: &Path) -> anyhow::Result<String> {
    if file.exists() {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(file)
                .with_context(|| format!("cannot read {}", file.display()))?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                bail!(
                    "{}: others may read this token (mode {:o}): chmod 600 {0}, or delete it to have a new one generated",
                    file.display(),
                    mode & 0o777
                );
            }
        }
        let bytes = crate::fsutil::read_limited(file, 4096)?;
        let text = String::from_utf8(bytes).with_context(|| format!("{}: not UTF-8", file.display()))?;
        let token = text.trim().to_owned();
        if token.len() < 16 {
            bail!(
                "{}: the token is shorter than 16 characters: write a longer one, or delete the file to have one generated",
                file.display()
            );
        }
        return Ok(token);
    }
    let mut bytes = [0u8; 32];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut bytes);
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    crate::fsutil::write_atomic(file, format!("{token}\n").as_bytes(), 0o600)
        .with_context(|| format!("cannot write the token to {}", file.display()))?;
    Ok(token)
}

/// Serves Streamable HTTP at `addr` until interrupted (Ctrl-C, SIGTERM).
pub async fn serve(state: Arc<State>, addr: SocketAddr, token_file: PathBuf) -> anyhow::Result<()> {
    let token = Arc::new(token(&token_file)?);
    let stop = CancellationToken::new();
    let config = StreamableHttpServerConfig::default()
        // Host: loopback names only (rmcp's default); Origin: only pages served from loopback.
        .with_allowed_hosts(["localhost", "127.0.0.1", "::1"])
        .with_allowed_origins(["http://localhost:*", "http://127.0.0.1:*", "http://[::1]:*"])
        .with_max_request_body_bytes(MAX_BODY_BYTES)
        .with_cancellation_token(stop.child_token());
    let service: StreamableHttpService<UiServer, LocalSessionManager> =
        StreamableHttpService::new(move || Ok(UiServer::new(state.clone())), Default::default(), config);
    let router = axum::Router::new().nest_service(PATH, service).layer(axum::middleware::from_fn(
        move |request: Request, next: Next| {
            let token = token.clone();
            async move { authorize(&token, request, next).await }
        },
    ));
    let listener =
        tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
    let bound = listener.local_addr().unwrap_or(addr);
    eprintln!(
        "ui mcp: serving MCP (Streamable HTTP) at http://{bound}{PATH}; send `Authorization: Bearer <token>` with the token in {}",
        token_file.display()
    );
    let shutdown = {
        let stop = stop.clone();
        async move {
            wait_for_signal().await;
            stop.cancel();
        }
    };
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await.context("the HTTP server failed")?;
    Ok(())
}

/// Returns on Ctrl-C or SIGTERM.
pub(crate) async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(t) => t,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Lets a request through only with `Authorization: Bearer <token>`.
async fn authorize(token: &str, request: Request, next: Next) -> Response {
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(g) if constant_time_eq(g.as_bytes(), token.as_bytes()) => next.run(request).await,
        _ => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "unauthorized: send `Authorization: Bearer <token>` with the token `ui mcp --listen` wrote (--token-file)\n",
        )
            .into_response(),
    }
}

/// Compares without stopping at the first difference (a token's prefix cannot be guessed
/// from response times).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_addresses_are_served() {
        assert_eq!(listen_addr("8765").unwrap().to_string(), "127.0.0.1:8765");
        assert_eq!(listen_addr("[::1]:80").unwrap().to_string(), "[::1]:80");
        let e = listen_addr("0.0.0.0:8765").unwrap_err().to_string();
        assert!(e.contains("not a loopback address"), "{e}");
        assert!(listen_addr("nonsense").is_err());
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
