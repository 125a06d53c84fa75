//! Failover across the members of a cluster, under `kube::Client`: a tower service that holds
//! one connection pool per member (the kubeconfig's `server` and its `univrs.io/servers`),
//! sends each request to the member that answered last, and, when a member cannot be
//! connected to — so it never saw the request — sends the same request to the next. So it
//! does when a member answers 503 with `Retry-After`: the apiserver sends that only for a
//! request it did nothing for (a read whose read barrier failed, a write proposed nowhere — a
//! member cut off from its leader), so another member may serve it. Any other request that
//! reached a member is never sent again (its outcome may be unknown: the caller decides). The
//! bearer token is added here, from [`Tokens`], and minted again once when a member answers
//! 401.
//!
//! Everything built on it fails over: kube-runtime's watchers reconnect (to the next member)
//! after a member dies, a node agent's lease renewal goes to a live member, `ui` commands
//! reach whichever member is up.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use kube::client::Body;

use crate::credential::Tokens;
use crate::kubeconfig::Kubeconfig;

/// How long to wait for a TCP connection to a member.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a request failed before any member answered it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No member could be connected to.
    #[error("cannot reach the apiserver at {server}: {cause} — is `ui up` running?")]
    Unreachable {
        /// The last member tried.
        server: String,
        /// Why it could not be reached.
        cause: String,
    },
    /// The request reached a member but failed (a broken connection: its outcome is unknown).
    #[error("request to {server} failed: {cause}")]
    Failed {
        /// The member.
        server: String,
        /// What failed.
        cause: String,
    },
    /// No token could be had.
    #[error(transparent)]
    Credential(#[from] crate::credential::Error),
    /// The kubeconfig cannot be used.
    #[error("{0}")]
    Config(String),
}

/// One member.
struct Member {
    url: String,
    client: kube::Client,
}

struct Inner {
    members: Vec<Member>,
    /// The member that answered last.
    current: AtomicUsize,
    tokens: Tokens,
}

/// The failover service (cheap to clone: clones share the members and the token).
#[derive(Clone)]
pub struct Failover(Arc<Inner>);

impl std::fmt::Debug for Failover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Failover").field("current", &self.current()).finish_non_exhaustive()
    }
}

/// The DER certificates of a PEM text.
fn pem_to_der(pem: &str) -> Result<Vec<Vec<u8>>, String> {
    use base64::Engine as _;
    let mut out = Vec::new();
    let mut body: Option<String> = None;
    for line in pem.lines().map(str::trim) {
        if line.starts_with("-----BEGIN CERTIFICATE") {
            body = Some(String::new());
        } else if line.starts_with("-----END CERTIFICATE") {
            let b = body.take().ok_or("an END without a BEGIN")?;
            out.push(base64::engine::general_purpose::STANDARD.decode(b).map_err(|e| e.to_string())?);
        } else if let Some(b) = body.as_mut() {
            b.push_str(line);
        }
    }
    if out.is_empty() {
        return Err("no certificate".into());
    }
    Ok(out)
}

impl Failover {
    /// The members of `kubeconfig`, its CA and its credential. Call inside a tokio runtime.
    pub fn new(kubeconfig: &Kubeconfig) -> Result<Self, Error> {
        let source = kubeconfig.path.display().to_string();
        let roots =
            kubeconfig.ca_pem.as_deref().map(pem_to_der).transpose().map_err(|e| {
                Error::Config(format!("kubeconfig {source}: certificate-authority-data: {e}"))
            })?;
        let mut members = Vec::new();
        for url in kubeconfig.all_servers() {
            if !url.starts_with("http://") && !url.starts_with("https://") {
                return Err(Error::Config(format!("server {url:?} is not an http:// or https:// URL")));
            }
            let uri: http::Uri =
                url.parse().map_err(|e| Error::Config(format!("server {url:?} is not a URL: {e}")))?;
            let mut config = kube::Config::new(uri);
            config.root_cert = roots.clone();
            config.connect_timeout = Some(CONNECT_TIMEOUT);
            // Watches last long: no read timeout (the server ends them).
            config.read_timeout = None;
            // No hidden retries of 429/503/504 behind the caller's back (kube's own would ask
            // the same member again): a 503 from the log proxy is an answer, a 429 says which
            // quota; callers decide. A member that did nothing is left for the next one here
            // (`send`).
            config.default_retry = false;
            config.default_namespace = kubeconfig.namespace.clone().unwrap_or_else(|| "default".into());
            let client = kube::Client::try_from(config)
                .map_err(|e| Error::Config(format!("cannot make a client for {url}: {e}")))?;
            members.push(Member { url, client });
        }
        let tokens = Tokens::new(kubeconfig.credential.clone(), source);
        Ok(Self(Arc::new(Inner { members, current: AtomicUsize::new(0), tokens })))
    }

    /// The URL of the member that answered last.
    pub fn current(&self) -> &str {
        &self.0.members[self.0.current.load(Ordering::Relaxed) % self.0.members.len()].url
    }

    async fn token(&self, refused: Option<String>) -> Result<Option<String>, Error> {
        let inner = self.0.clone();
        // The exec plugin is a process (and may prompt): not on an async worker.
        tokio::task::spawn_blocking(move || inner.tokens.bearer(refused.as_deref()))
            .await
            .map_err(|e| Error::Config(format!("the credential task failed: {e}")))?
            .map_err(Error::from)
    }

    /// Sends `request` to the members in turn, from the one that answered last, until one is
    /// reached.
    pub async fn send(&self, request: Request<Body>) -> Result<Response<Body>, Error> {
        let (parts, body) = request.into_parts();
        // A body that cannot be copied (a stream) is sent once, to one member.
        let copyable = body.try_clone().is_some();
        let mut body = Some(body);
        let mut token = self.token(None).await?;
        let mut refreshed = false;
        let n = self.0.members.len();
        let first = self.0.current.load(Ordering::Relaxed);
        let mut last = None;
        // A member's "nothing done, ask again" (503 with Retry-After): the answer if no later
        // member answers at all.
        let mut not_ready = None;
        let mut i = 0;
        while i < n {
            let at = (first + i) % n;
            let member = &self.0.members[at];
            let attempt_body = match (copyable, body.as_ref()) {
                (true, Some(b)) => b.try_clone().expect("a copyable body"),
                _ => match body.take() {
                    Some(b) => b,
                    None => break,
                },
            };
            let mut req =
                Request::builder().method(parts.method.clone()).uri(parts.uri.clone()).version(parts.version);
            for (k, v) in &parts.headers {
                req = req.header(k, v);
            }
            if let Some(t) = &token {
                req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
            }
            let req = req.body(attempt_body).map_err(|e| Error::Config(e.to_string()))?;
            match member.client.send(req).await {
                Err(e) if never_sent(&e) => {
                    tracing::debug!(member = %member.url, error = %e, "member unreachable, trying the next");
                    last = Some((member.url.clone(), cause(&e)));
                    i += 1;
                }
                Err(e) => return Err(Error::Failed { server: member.url.clone(), cause: cause(&e) }),
                // A refused token may be stale: mint one and ask the same member again, once
                // (if the body can be sent again; if not, the 401 is the answer).
                Ok(r)
                    if r.status() == StatusCode::UNAUTHORIZED
                        && !refreshed
                        && token.is_some()
                        && copyable =>
                {
                    refreshed = true;
                    token = self.token(token.take()).await?;
                }
                // Nothing done there (see the module's docs): the next member, if there is
                // one and the body can be sent again; the last member's answer is the answer.
                Ok(r) if did_nothing(&r) && copyable && i + 1 < n => {
                    tracing::debug!(member = %member.url, "member not ready (503 with Retry-After), trying the next");
                    not_ready = Some(r);
                    i += 1;
                }
                Ok(r) => {
                    self.0.current.store(at, Ordering::Relaxed);
                    return Ok(r);
                }
            }
        }
        if let Some(r) = not_ready {
            return Ok(r);
        }
        let (server, cause) = last.unwrap_or_else(|| (self.current().to_owned(), "no member".into()));
        Err(Error::Unreachable { server, cause })
    }
}

/// The words of an error, without kube's wrapping.
fn cause(e: &kube::Error) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut last = e.to_string();
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
                _ => io.to_string(),
            };
        }
        last = s.to_string();
        source = s.source();
    }
    last
}

/// Whether `response` says the member did nothing for the request and another may: a 503
/// with `Retry-After` and a JSON `Status` (the apiserver's `NotReady`; a 503 without it — a
/// write whose outcome is unknown, a proxied log that failed — is an answer, and so is one
/// in another form, which no member sends: a proxy's in front of one, say, which may have
/// passed the request on).
fn did_nothing<B>(response: &Response<B>) -> bool {
    let headers = response.headers();
    response.status() == StatusCode::SERVICE_UNAVAILABLE
        && headers.contains_key(http::header::RETRY_AFTER)
        && headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with("application/json"))
}

/// Whether `e` happened before the request reached the member (no connection was made), so
/// it is safe to send it to another.
fn never_sent(e: &kube::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(h) = s.downcast_ref::<hyper_util::client::legacy::Error>()
            && h.is_connect()
        {
            return true;
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::HostUnreachable
                    | std::io::ErrorKind::NetworkUnreachable
            )
        {
            return true;
        }
        source = s.source();
    }
    false
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower::Service<Request<Body>> for Failover {
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<Response<Body>, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.send(request).await.map_err(|e| Box::new(e) as BoxError) })
    }
}

/// A `kube::Client` on every member of `kubeconfig`, failing over between them. Call inside a
/// tokio runtime.
pub fn connect(kubeconfig: &Kubeconfig) -> Result<kube::Client, Error> {
    let failover = Failover::new(kubeconfig)?;
    let namespace = kubeconfig.namespace.clone().unwrap_or_else(|| "default".into());
    Ok(kube::Client::new(failover, namespace))
}

/// [`connect`] to the kubeconfig at `path`.
pub fn connect_to(path: &std::path::Path) -> Result<kube::Client, Error> {
    let k = Kubeconfig::read(path).map_err(|e| Error::Config(e.to_string()))?;
    connect(&k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_certificates_become_der() {
        let pem = "-----BEGIN CERTIFICATE-----\nAAEC\nAwQ=\n-----END CERTIFICATE-----\n";
        assert_eq!(pem_to_der(pem).unwrap(), vec![vec![0, 1, 2, 3, 4]]);
        assert!(pem_to_der("nothing").is_err());
    }

    #[test]
    fn only_a_503_with_retry_after_is_sent_to_another_member() {
        let answer = |status: u16, retry_after: bool| {
            let mut r =
                Response::builder().status(status).header(http::header::CONTENT_TYPE, "application/json");
            if retry_after {
                r = r.header(http::header::RETRY_AFTER, "1");
            }
            r.body(()).unwrap()
        };
        assert!(did_nothing(&answer(503, true)));
        // Not a member's Status: a proxy's page, say.
        let page = Response::builder().status(503).header(http::header::RETRY_AFTER, "1").body(()).unwrap();
        assert!(!did_nothing(&page));
        // An unknown outcome, a failed log proxy: answers.
        assert!(!did_nothing(&answer(503, false)));
        // A quota's 429 and a too-large revision's 504 say to wait, not to go elsewhere.
        assert!(!did_nothing(&answer(429, true)));
        assert!(!did_nothing(&answer(504, true)));
        assert!(!did_nothing(&answer(200, false)));
    }
}
