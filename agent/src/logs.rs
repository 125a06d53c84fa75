//! The agent's log endpoint: `GET /replicas/UID/log[?follow=true][&tailLines=N]` streams a
//! replica's output. Only the control plane calls it (`ui logs` goes through the apiserver,
//! which checks that the caller owns the workload): a request needs a token minted by a
//! control-plane member for this node (audience `univrs-node:NODE`).

use std::collections::BTreeSet;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

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

/// Who may read logs, and where they are.
#[derive(Clone, Debug)]
pub struct LogServer {
    /// The node's name.
    pub node: String,
    /// The run directories (`STATE/runs`).
    pub runs: PathBuf,
    /// The control-plane members' did:keys (kept fresh by the agent).
    pub members: Arc<RwLock<BTreeSet<String>>>,
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
    Router::new().route("/replicas/{uid}/log", get(log)).with_state(Arc::new(server))
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
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some(token) = token else { return deny(StatusCode::UNAUTHORIZED, "a bearer token is needed") };
    let now = chrono::Utc::now().timestamp();
    let did = match api::token::verify(token, &audience(&server.node), now) {
        Ok((did, _)) => did,
        Err(e) => return deny(StatusCode::UNAUTHORIZED, &format!("bad token: {e}")),
    };
    if !server.members.read().expect("not poisoned").contains(did.as_str()) {
        return deny(StatusCode::FORBIDDEN, "only the control plane reads logs from a node");
    }
    if uid.is_empty() || !uid.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
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
    use super::*;

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
