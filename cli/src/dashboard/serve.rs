//! The dashboard's HTTP side, on loopback only: the page (embedded in the binary), the current
//! view as JSON, and its changes as Server-Sent Events.
//!
//! Whoever reaches this server reads the cluster as the user, so the browser side is treated as
//! hostile web: only loopback addresses are listened on; a request whose `Host` is not this
//! server's loopback name and port is refused (a page of another site whose name was made to
//! resolve to 127.0.0.1 — DNS rebinding — sends its own name), as is one whose `Origin` is
//! another page's or that a page of another origin sends (`Sec-Fetch-Site` other than
//! `same-origin` or `none`, but a plain navigation: a link to the dashboard still opens it); only GET and HEAD are answered (there is nothing to write); no CORS
//! header is ever sent; every answer carries a strict Content-Security-Policy (the page runs
//! only its own script, loads nothing from elsewhere, and may not be framed).

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::StreamExt as _;
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;

/// The page.
const INDEX_HTML: &str = include_str!("assets/index.html");
/// Its script.
const APP_JS: &str = include_str!("assets/app.js");
/// Its style.
const STYLE_CSS: &str = include_str!("assets/style.css");

/// The port `kubectl proxy` listens on, and so this one by default.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8001";

/// Most event streams open at once (browser tabs); more are answered 503.
pub const MAX_STREAMS: usize = 16;

/// What every answer carries.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The address `--listen` names: `HOST:PORT`, or a port alone (then 127.0.0.1). Only loopback
/// addresses: whoever reaches the dashboard reads the cluster as its user.
pub fn listen_addr(arg: &str) -> anyhow::Result<SocketAddr> {
    let addr = match arg.parse::<u16>() {
        Ok(port) => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
        Err(_) => arg.parse::<SocketAddr>().with_context(|| {
            format!("--listen {arg}: not an address: give HOST:PORT (e.g. 127.0.0.1:8001) or a port")
        })?,
    };
    if !addr.ip().is_loopback() {
        bail!(
            "--listen {arg}: {} is not a loopback address: the dashboard reads the cluster as you for whoever reaches it, so it serves this machine only (127.0.0.1 or [::1]); to look from another machine, forward a port over SSH (ssh -L 8001:127.0.0.1:8001 HOST)",
            addr.ip()
        );
    }
    Ok(addr)
}

/// Whether `host` (a `Host` header) names this server: a loopback name with its port.
pub fn host_allowed(host: &str, port: u16) -> bool {
    let (name, given) = match host.rsplit_once(':') {
        // `[::1]` alone has colons but no port.
        Some((name, p)) if !host.ends_with(']') => (name, p.parse::<u16>().ok()),
        _ => (host, Some(80)),
    };
    let loopback = matches!(name.to_ascii_lowercase().as_str(), "localhost" | "127.0.0.1" | "[::1]");
    loopback && given == Some(port)
}

/// Whether `origin` (an `Origin` header) is a page of this server.
pub fn origin_allowed(origin: &str, port: u16) -> bool {
    origin.strip_prefix("http://").is_some_and(|host| host_allowed(host, port))
}

/// Why a request is refused before it is served, if it is.
pub fn refusal(method: &Method, headers: &HeaderMap, port: u16) -> Option<(StatusCode, String)> {
    let text = |name: header::HeaderName| headers.get(name).map(|v| v.to_str().unwrap_or("(not text)"));
    match text(header::HOST) {
        Some(host) if host_allowed(host, port) => {}
        host => {
            return Some((
                StatusCode::FORBIDDEN,
                format!(
                    "forbidden: Host {:?} is not this dashboard's (http://127.0.0.1:{port}/ or http://localhost:{port}/): a page of another site is not let in, even under a name that resolves to this machine\n",
                    host.unwrap_or("")
                ),
            ));
        }
    }
    if let Some(origin) = text(header::ORIGIN)
        && !origin_allowed(origin, port)
    {
        return Some((
            StatusCode::FORBIDDEN,
            format!("forbidden: requests from {origin:?} are not let in\n"),
        ));
    }
    let site = text(header::HeaderName::from_static("sec-fetch-site"));
    let mode = text(header::HeaderName::from_static("sec-fetch-mode"));
    // A page of another origin (another port of localhost is one: same-site, not same-origin)
    // may link to the dashboard, not load from it.
    let foreign = site.is_some_and(|s| s != "same-origin" && s != "none");
    if foreign && mode != Some("navigate") {
        return Some((
            StatusCode::FORBIDDEN,
            "forbidden: a page of another origin may not read the dashboard\n".into(),
        ));
    }
    if method != Method::GET && method != Method::HEAD {
        return Some((
            StatusCode::METHOD_NOT_ALLOWED,
            format!(
                "{method} is not allowed: the dashboard is read-only (GET only); change the cluster with `ui apply`\n"
            ),
        ));
    }
    None
}

/// What the handlers share.
#[derive(Clone)]
struct Shared {
    views: watch::Receiver<Arc<str>>,
    streams: Arc<Semaphore>,
    stop: CancellationToken,
}

/// The dashboard's routes, guarded, for a server on `port` showing `views`; event streams end
/// when `stop` is cancelled.
pub fn router(views: watch::Receiver<Arc<str>>, port: u16, stop: CancellationToken) -> Router {
    let shared = Shared { views, streams: Arc::new(Semaphore::new(MAX_STREAMS)), stop };
    Router::new()
        .route("/", get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }))
        .route("/app.js", get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }))
        .route("/style.css", get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }))
        .route("/api/view", get(current))
        .route("/api/events", get(events))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found: the dashboard is at /\n") })
        .with_state(shared)
        .layer(axum::middleware::from_fn(move |request: Request, next: Next| guard(port, request, next)))
}

async fn guard(port: u16, request: Request, next: Next) -> Response {
    let response = match refusal(request.method(), request.headers(), port) {
        Some((status, why)) => {
            let mut r = (status, why).into_response();
            if status == StatusCode::METHOD_NOT_ALLOWED {
                r.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            }
            r
        }
        None => next.run(request).await,
    };
    secured(response)
}

/// Adds the headers every answer carries.
fn secured(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(
        header::HeaderName::from_static("cross-origin-resource-policy"),
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        header::HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn current(State(s): State<Shared>) -> Response {
    let json = s.views.borrow().clone();
    ([(header::CONTENT_TYPE, "application/json")], json.to_string()).into_response()
}

/// The view now, then each new one, as `view` events, until the server stops.
async fn events(State(s): State<Shared>) -> Response {
    let Ok(permit) = s.streams.clone().try_acquire_owned() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("too many open dashboards (at most {MAX_STREAMS})\n"),
        )
            .into_response();
    };
    let mut views = s.views.clone();
    let first = views.borrow_and_update().clone();
    let next = futures_util::stream::unfold(views, |mut views| async move {
        views.changed().await.ok()?;
        let v = views.borrow_and_update().clone();
        Some((v, views))
    });
    let stream = futures_util::stream::once(async move { first })
        .chain(next)
        .map(move |json| {
            // The stream holds its place among the open ones until it ends.
            let _held = &permit;
            Ok::<_, Infallible>(Event::default().event("view").data(&*json))
        })
        .take_until(s.stop.cancelled_owned());
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_addresses_are_listened_on() {
        assert_eq!(listen_addr("8001").unwrap().to_string(), "127.0.0.1:8001");
        assert_eq!(listen_addr("[::1]:0").unwrap().to_string(), "[::1]:0");
        for bad in ["0.0.0.0:0", "192.168.1.2:8001", "[::]:8001"] {
            let e = listen_addr(bad).unwrap_err().to_string();
            assert!(e.contains("not a loopback address"), "{e}");
        }
        assert!(listen_addr("localhost:8001").is_err(), "a name is not an address");
    }

    #[test]
    fn only_this_server_s_loopback_names_are_let_in() {
        for ok in ["127.0.0.1:8001", "localhost:8001", "LOCALHOST:8001", "[::1]:8001"] {
            assert!(host_allowed(ok, 8001), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:8001",
            "127.0.0.1:8002",
            "127.0.0.1",
            "localhost.evil:8001",
            "",
            "[::1]",
        ] {
            assert!(!host_allowed(bad, 8001), "{bad}");
        }
        assert!(host_allowed("localhost", 80));
        assert!(origin_allowed("http://127.0.0.1:8001", 8001));
        assert!(!origin_allowed("https://127.0.0.1:8001", 8001));
        assert!(!origin_allowed("http://evil.example:8001", 8001));
        assert!(!origin_allowed("null", 8001));
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(header::HeaderName::from_static(k), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn requests_are_refused_for_the_host_the_origin_a_cross_site_read_and_any_write() {
        let port = 8001;
        let ok = headers(&[("host", "127.0.0.1:8001")]);
        assert_eq!(refusal(&Method::GET, &ok, port), None);
        assert_eq!(refusal(&Method::GET, &HeaderMap::new(), port).unwrap().0, StatusCode::FORBIDDEN);
        let evil = headers(&[("host", "evil.example:8001")]);
        assert_eq!(refusal(&Method::GET, &evil, port).unwrap().0, StatusCode::FORBIDDEN);
        let origin = headers(&[("host", "127.0.0.1:8001"), ("origin", "http://evil.example")]);
        assert_eq!(refusal(&Method::GET, &origin, port).unwrap().0, StatusCode::FORBIDDEN);
        let read = headers(&[
            ("host", "127.0.0.1:8001"),
            ("sec-fetch-site", "cross-site"),
            ("sec-fetch-mode", "cors"),
        ]);
        assert_eq!(refusal(&Method::GET, &read, port).unwrap().0, StatusCode::FORBIDDEN);
        // Another port of localhost: same-site, still another origin.
        let embed = headers(&[
            ("host", "127.0.0.1:8001"),
            ("sec-fetch-site", "same-site"),
            ("sec-fetch-mode", "no-cors"),
        ]);
        assert_eq!(refusal(&Method::GET, &embed, port).unwrap().0, StatusCode::FORBIDDEN);
        let own = headers(&[
            ("host", "127.0.0.1:8001"),
            ("sec-fetch-site", "same-origin"),
            ("sec-fetch-mode", "cors"),
        ]);
        assert_eq!(refusal(&Method::GET, &own, port), None);
        let link = headers(&[
            ("host", "127.0.0.1:8001"),
            ("sec-fetch-site", "cross-site"),
            ("sec-fetch-mode", "navigate"),
        ]);
        assert_eq!(refusal(&Method::GET, &link, port), None);
        for m in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE, Method::OPTIONS] {
            assert_eq!(refusal(&m, &ok, port).unwrap().0, StatusCode::METHOD_NOT_ALLOWED, "{m}");
        }
        // The host is checked first: a write from elsewhere learns nothing more.
        assert_eq!(refusal(&Method::POST, &evil, port).unwrap().0, StatusCode::FORBIDDEN);
    }

    #[tokio::test]
    async fn the_page_and_the_view_are_served_with_a_strict_policy_and_no_cors() {
        use tower::ServiceExt as _;
        let (_tx, rx) = watch::channel(Arc::<str>::from("{\"workloads\":[]}"));
        let app = router(rx, 8001, CancellationToken::new());
        let get = |path: &str, host: &str| {
            Request::get(path).header("host", host).body(axum::body::Body::empty()).unwrap()
        };
        let page = app.clone().oneshot(get("/", "localhost:8001")).await.unwrap();
        assert_eq!(page.status(), StatusCode::OK);
        let csp = page.headers()[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.starts_with("default-src 'self'"), "{csp}");
        assert_eq!(page.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert!(page.headers().get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
        let view = app.clone().oneshot(get("/api/view", "127.0.0.1:8001")).await.unwrap();
        assert_eq!(view.headers()[header::CONTENT_TYPE], "application/json");
        let refused = app.clone().oneshot(get("/api/view", "evil.example:8001")).await.unwrap();
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        assert_eq!(refused.headers()[header::CONTENT_SECURITY_POLICY], CONTENT_SECURITY_POLICY);
        let missing = app.oneshot(get("/nothing", "127.0.0.1:8001")).await.unwrap();
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn events_carry_the_view_now_then_each_change_until_the_server_stops() {
        use tower::ServiceExt as _;
        let (tx, rx) = watch::channel(Arc::<str>::from("{\"n\":1}"));
        let stop = CancellationToken::new();
        let app = router(rx, 8001, stop.clone());
        let get =
            || Request::get("/api/events").header("host", "127.0.0.1:8001").body(axum::body::Body::empty());
        let mut open = Vec::new();
        for _ in 0..MAX_STREAMS {
            let r = app.clone().oneshot(get().unwrap()).await.unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            assert_eq!(r.headers()[header::CONTENT_TYPE], "text/event-stream");
            open.push(r.into_body().into_data_stream());
        }
        let over = app.clone().oneshot(get().unwrap()).await.unwrap();
        assert_eq!(over.status(), StatusCode::SERVICE_UNAVAILABLE);
        // A stream that ends (the browser went away) gives its place back.
        open.pop();
        let again = app.clone().oneshot(get().unwrap()).await.unwrap();
        assert_eq!(again.status(), StatusCode::OK);
        let text = |b: Option<Result<axum::body::Bytes, axum::Error>>| {
            String::from_utf8(b.expect("an event").unwrap().to_vec()).unwrap()
        };
        let body = &mut open[0];
        assert_eq!(text(body.next().await), "event: view\ndata: {\"n\":1}\n\n");
        tx.send_replace(Arc::from("{\"n\":2}"));
        assert_eq!(text(body.next().await), "event: view\ndata: {\"n\":2}\n\n");
        stop.cancel();
        assert!(body.next().await.is_none(), "the stream ends with the server");
    }
}
