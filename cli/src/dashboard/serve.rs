//! The dashboard's HTTP side, on loopback only: the page (embedded in the binary), the current
//! view as JSON, and its changes as Server-Sent Events.
//!
//! Whoever reaches this server reads the cluster as the user, so the browser side is treated as
//! hostile web, and so are the machine's other users and processes. Each request is checked in
//! this order:
//!
//! 1. `Host` must be this server's loopback name and port (a page of another site whose name
//!    was made to resolve to 127.0.0.1 — DNS rebinding — sends its own name): else 403;
//! 2. only GET and HEAD are answered (there is nothing to write): else 405;
//! 3. `Origin`, if sent, must be this server's; a request a page of another origin makes
//!    (`Sec-Fetch-Site` other than `same-origin` or `none`) is refused, but a top-level
//!    navigation to `/` (`Sec-Fetch-Dest: document`); `/api/*` is for this origin's page only
//!    (`Sec-Fetch-Site: same-origin`, or no such header: not a browser): else 403;
//! 4. the per-run secret: `ui dashboard` makes a random token at start and prints the URL with
//!    it (`/?token=…`); a GET carrying it is answered with a cookie (HttpOnly, SameSite=Strict)
//!    and a redirect to the same path without it; every other request must carry the cookie:
//!    else 401.
//!
//! Only loopback addresses are listened on, no CORS header is ever sent, and every answer
//! carries a strict Content-Security-Policy (the page runs only its own script, loads nothing
//! from elsewhere, and may not be framed).

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::StreamExt as _;
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;

use super::follow::Demand;

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

/// How long `/api/view` waits for a view made now.
const FRESH_VIEW_WAIT: Duration = Duration::from_secs(5);

/// What every answer carries.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The address `--listen` names: `HOST:PORT` with HOST 127.0.0.1, [::1] or localhost (for
/// 127.0.0.1), or a port alone (then 127.0.0.1). Only these: whoever reaches the dashboard
/// reads the cluster as its user, and the `Host` of each request is checked against these
/// names (another loopback address, 127.0.0.2, would be let in by nothing).
pub fn listen_addr(arg: &str) -> anyhow::Result<SocketAddr> {
    let addr = match arg.parse::<u16>() {
        Ok(port) => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
        Err(_) => match arg.rsplit_once(':') {
            Some((name, port)) if name.eq_ignore_ascii_case("localhost") => {
                let port = port.parse::<u16>().with_context(|| format!("--listen {arg}: not a port"))?;
                SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
            }
            _ => arg.parse::<SocketAddr>().with_context(|| {
                format!("--listen {arg}: not an address: give HOST:PORT (e.g. 127.0.0.1:8001) or a port")
            })?,
        },
    };
    if !addr.ip().is_loopback() {
        bail!(
            "--listen {arg}: {} is not a loopback address: the dashboard reads the cluster as you for whoever reaches it, so it serves this machine only (127.0.0.1 or [::1]); to look from another machine, forward a port over SSH (ssh -L 8001:127.0.0.1:8001 HOST)",
            addr.ip()
        );
    }
    if addr.ip() != IpAddr::V4(Ipv4Addr::LOCALHOST) && addr.ip() != IpAddr::V6(Ipv6Addr::LOCALHOST) {
        bail!(
            "--listen {arg}: {} is a loopback address, but the dashboard answers only requests naming 127.0.0.1, [::1] or localhost (its guard against DNS rebinding): listen on 127.0.0.1:PORT or [::1]:PORT",
            addr.ip()
        );
    }
    Ok(addr)
}

/// A random secret for this run: 32 bytes, as hex.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The name of the cookie that carries the token on `port`. Cookies are not kept apart by
/// port, so the port is in the name: two dashboards on one machine do not overwrite each
/// other's.
pub fn cookie_name(port: u16) -> String {
    format!("univrs_dashboard_{port}")
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

/// Why a request is refused before its token is looked at, if it is: its Host, its method, its
/// origin (in that order).
pub fn refusal(method: &Method, path: &str, headers: &HeaderMap, port: u16) -> Option<(StatusCode, String)> {
    let text = |name: &'static str| headers.get(name).map(|v| v.to_str().unwrap_or("(not text)"));
    match text("host") {
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
    if method != Method::GET && method != Method::HEAD {
        return Some((
            StatusCode::METHOD_NOT_ALLOWED,
            format!(
                "{method} is not allowed: the dashboard is read-only (GET only); change the cluster with `ui apply`\n"
            ),
        ));
    }
    if let Some(origin) = text("origin")
        && !origin_allowed(origin, port)
    {
        return Some((
            StatusCode::FORBIDDEN,
            format!("forbidden: requests from {origin:?} are not let in\n"),
        ));
    }
    let site = text("sec-fetch-site");
    let foreign = || {
        Some((
            StatusCode::FORBIDDEN,
            "forbidden: a page of another origin may not read the dashboard\n".to_owned(),
        ))
    };
    if path.starts_with("/api/") {
        // The page's own requests only (or a client that is no browser: no such header).
        if site.is_some_and(|s| s != "same-origin") {
            return foreign();
        }
    } else if site.is_some_and(|s| s != "same-origin" && s != "none") {
        // A page of another origin (another port of localhost is one: same-site, not
        // same-origin) may link to the dashboard, not load from it.
        let navigation = method == Method::GET
            && path == "/"
            && text("sec-fetch-dest") == Some("document")
            && text("sec-fetch-mode").is_none_or(|m| m == "navigate");
        if !navigation {
            return foreign();
        }
    }
    None
}

/// Whether `a` and `b` are equal, in a time that does not depend on where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The value of the `token` query parameter of `uri`, if any.
fn query_token(uri: &Uri) -> Option<&str> {
    uri.query()?.split('&').find_map(|pair| pair.strip_prefix("token="))
}

/// The value of cookie `name` in `headers`, if any.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(name)?.strip_prefix('='))
}

/// The answer to a request that is let in this far but lacks the token or carries a wrong one:
/// None when it carries the right cookie (serve it), else a redirect that sets the cookie (a
/// GET with the right `token`), else 401.
fn authorization(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    token: &str,
    port: u16,
) -> Option<Response> {
    let name = cookie_name(port);
    if let Some(given) = query_token(uri) {
        if method == Method::GET && constant_time_eq(given.as_bytes(), token.as_bytes()) {
            let set = format!("{name}={token}; HttpOnly; SameSite=Strict; Path=/");
            let mut r = StatusCode::SEE_OTHER.into_response();
            // The same path, without the token (not kept in the address bar or the history).
            if let (Ok(to), Ok(set)) = (HeaderValue::from_str(uri.path()), HeaderValue::from_str(&set)) {
                r.headers_mut().insert(header::LOCATION, to);
                r.headers_mut().insert(header::SET_COOKIE, set);
            }
            return Some(r);
        }
    } else if cookie(headers, &name).is_some_and(|c| constant_time_eq(c.as_bytes(), token.as_bytes())) {
        return None;
    }
    Some(
        (
            StatusCode::UNAUTHORIZED,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!(
                "unauthorized: open the URL `ui dashboard` printed when it started (http://127.0.0.1:{port}/?token=…): it lets this browser in\n"
            ),
        )
            .into_response(),
    )
}

/// What the handlers share.
#[derive(Clone)]
struct Shared {
    views: watch::Receiver<Arc<str>>,
    demand: Arc<Demand>,
    streams: Arc<Semaphore>,
    stop: CancellationToken,
}

/// The dashboard's routes, guarded, for a server on `port` whose secret is `token`, showing
/// `views` (asked for on `demand`); event streams end when `stop` is cancelled.
pub fn router(
    views: watch::Receiver<Arc<str>>,
    demand: Arc<Demand>,
    port: u16,
    token: &str,
    stop: CancellationToken,
) -> Router {
    let shared = Shared { views, demand, streams: Arc::new(Semaphore::new(MAX_STREAMS)), stop };
    let token: Arc<str> = Arc::from(token);
    Router::new()
        .route("/", get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }))
        .route("/app.js", get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }))
        .route("/style.css", get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }))
        .route("/api/view", get(current))
        .route("/api/events", get(events))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found: the dashboard is at /\n") })
        .with_state(shared)
        .layer(axum::middleware::from_fn(move |request: Request, next: Next| {
            let token = token.clone();
            async move { guard(port, &token, request, next).await }
        }))
}

async fn guard(port: u16, token: &str, request: Request, next: Next) -> Response {
    let refused = refusal(request.method(), request.uri().path(), request.headers(), port);
    let response = match refused {
        Some((status, why)) => {
            let mut r = (status, why).into_response();
            if status == StatusCode::METHOD_NOT_ALLOWED {
                r.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            }
            r
        }
        None => match authorization(request.method(), request.uri(), request.headers(), token, port) {
            Some(r) => r,
            None => next.run(request).await,
        },
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

/// The view now: asked for (the view is made only while someone looks), waited for a while.
async fn current(State(s): State<Shared>) -> Response {
    // Held while waiting: the follower sees someone looks.
    let mut views = s.views.clone();
    views.borrow_and_update();
    s.demand.notify_one();
    let _ = tokio::time::timeout(FRESH_VIEW_WAIT, views.changed()).await;
    let json = views.borrow().clone();
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
    // The view may be stale (none is made while nobody looks): a new one is asked for.
    s.demand.notify_one();
    let next = futures_util::stream::unfold((views, first.clone()), |(mut views, last)| async move {
        loop {
            views.changed().await.ok()?;
            let v = views.borrow_and_update().clone();
            // The same view sent again (to answer a request for it) is not news.
            if !Arc::ptr_eq(&v, &last) {
                return Some((v.clone(), (views, v)));
            }
        }
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
    fn only_127_0_0_1_and_ipv6_loopback_are_listened_on() {
        assert_eq!(listen_addr("8001").unwrap().to_string(), "127.0.0.1:8001");
        assert_eq!(listen_addr("[::1]:0").unwrap().to_string(), "[::1]:0");
        assert_eq!(listen_addr("localhost:8001").unwrap().to_string(), "127.0.0.1:8001");
        assert_eq!(listen_addr("LocalHost:0").unwrap().to_string(), "127.0.0.1:0");
        for bad in ["0.0.0.0:0", "192.168.1.2:8001", "[::]:8001"] {
            let e = listen_addr(bad).unwrap_err().to_string();
            assert!(e.contains("not a loopback address"), "{e}");
        }
        // Loopback, but no request naming it would be let in.
        for bad in ["127.0.0.2:8001", "127.1.2.3:0", "[::ffff:127.0.0.2]:8001"] {
            let e = listen_addr(bad).unwrap_err().to_string();
            assert!(
                e.contains("127.0.0.1, [::1] or localhost") || e.contains("not a loopback"),
                "{bad}: {e}"
            );
        }
        assert!(listen_addr("example.com:8001").is_err(), "a name is not an address");
        assert!(listen_addr("localhost:http").is_err());
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
            "127.0.0.2:8001",
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
    fn requests_are_refused_for_the_host_a_write_the_origin_and_a_cross_site_read() {
        let port = 8001;
        let ok = headers(&[("host", "127.0.0.1:8001")]);
        assert_eq!(refusal(&Method::GET, "/", &ok, port), None);
        assert_eq!(refusal(&Method::GET, "/api/view", &ok, port), None, "no browser: no Sec-Fetch-*");
        assert_eq!(refusal(&Method::GET, "/", &HeaderMap::new(), port).unwrap().0, StatusCode::FORBIDDEN);
        let evil = headers(&[("host", "evil.example:8001")]);
        assert_eq!(refusal(&Method::GET, "/", &evil, port).unwrap().0, StatusCode::FORBIDDEN);
        let origin = headers(&[("host", "127.0.0.1:8001"), ("origin", "http://evil.example")]);
        assert_eq!(refusal(&Method::GET, "/api/view", &origin, port).unwrap().0, StatusCode::FORBIDDEN);
        let read = headers(&[
            ("host", "127.0.0.1:8001"),
            ("sec-fetch-site", "cross-site"),
            ("sec-fetch-mode", "cors"),
            ("sec-fetch-dest", "empty"),
        ]);
        assert_eq!(refusal(&Method::GET, "/api/view", &read, port).unwrap().0, StatusCode::FORBIDDEN);
        assert_eq!(refusal(&Method::GET, "/", &read, port).unwrap().0, StatusCode::FORBIDDEN);
        // Another port of localhost: same-site, still another origin.
        let embed = headers(&[
            ("host", "127.0.0.1:8001"),
            ("sec-fetch-site", "same-site"),
            ("sec-fetch-mode", "no-cors"),
            ("sec-fetch-dest", "script"),
        ]);
        assert_eq!(refusal(&Method::GET, "/app.js", &embed, port).unwrap().0, StatusCode::FORBIDDEN);
        let own = headers(&[
            ("host", "127.0.0.1:8001"),
            ("sec-fetch-site", "same-origin"),
            ("sec-fetch-mode", "cors"),
        ]);
        assert_eq!(refusal(&Method::GET, "/api/events", &own, port), None);
        // A link from elsewhere opens the page, and nothing else.
        let link = headers(&[
            ("host", "127.0.0.1:8001"),
            ("sec-fetch-site", "cross-site"),
            ("sec-fetch-mode", "navigate"),
            ("sec-fetch-dest", "document"),
        ]);
        assert_eq!(refusal(&Method::GET, "/", &link, port), None);
        assert_eq!(refusal(&Method::GET, "/api/view", &link, port).unwrap().0, StatusCode::FORBIDDEN);
        assert_eq!(refusal(&Method::GET, "/app.js", &link, port).unwrap().0, StatusCode::FORBIDDEN);
        let framed = headers(&[
            ("host", "127.0.0.1:8001"),
            ("sec-fetch-site", "cross-site"),
            ("sec-fetch-mode", "navigate"),
            ("sec-fetch-dest", "iframe"),
        ]);
        assert_eq!(refusal(&Method::GET, "/", &framed, port).unwrap().0, StatusCode::FORBIDDEN);
        // Typed in the address bar: the page, not the API.
        let typed = headers(&[("host", "127.0.0.1:8001"), ("sec-fetch-site", "none")]);
        assert_eq!(refusal(&Method::GET, "/", &typed, port), None);
        assert_eq!(refusal(&Method::GET, "/api/view", &typed, port).unwrap().0, StatusCode::FORBIDDEN);
        for m in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE, Method::OPTIONS] {
            assert_eq!(refusal(&m, "/", &ok, port).unwrap().0, StatusCode::METHOD_NOT_ALLOWED, "{m}");
        }
        // The host is checked first: a write from elsewhere learns nothing more.
        assert_eq!(refusal(&Method::POST, "/", &evil, port).unwrap().0, StatusCode::FORBIDDEN);
        // The method before the origin.
        assert_eq!(refusal(&Method::POST, "/", &origin, port).unwrap().0, StatusCode::METHOD_NOT_ALLOWED);
    }

    fn app() -> (Router, String) {
        let (tx, rx) = watch::channel(Arc::<str>::from("{\"workloads\":[]}"));
        let demand = Arc::new(Demand::new());
        // Answers each demand with the current view again, as the follower does when nothing
        // changed.
        tokio::spawn({
            let demand = demand.clone();
            async move {
                loop {
                    demand.notified().await;
                    tx.send_modify(|_| {});
                }
            }
        });
        let token = new_token();
        (router(rx, demand, 8001, &token, CancellationToken::new()), token)
    }

    fn get(path: &str, host: &str, cookie: Option<&str>) -> Request {
        let mut r = Request::get(path).header("host", host);
        if let Some(c) = cookie {
            r = r.header("cookie", c);
        }
        r.body(axum::body::Body::empty()).unwrap()
    }

    #[test]
    fn tokens_are_32_random_bytes_in_hex_and_compared_in_full() {
        let (a, b) = (new_token(), new_token());
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        assert!(constant_time_eq(a.as_bytes(), a.as_bytes()));
        assert!(!constant_time_eq(a.as_bytes(), b.as_bytes()));
        assert!(!constant_time_eq(a.as_bytes(), &a.as_bytes()[..63]));
        assert!(!constant_time_eq(b"", a.as_bytes()));
        let h = headers(&[("cookie", "other=1; univrs_dashboard_8001=abc; x=y")]);
        assert_eq!(cookie(&h, "univrs_dashboard_8001"), Some("abc"));
        assert_eq!(cookie(&h, "univrs_dashboard_8002"), None);
        assert_eq!(query_token(&"/?a=1&token=zz".parse().unwrap()), Some("zz"));
    }

    #[tokio::test]
    async fn the_token_in_the_url_sets_a_cookie_and_every_other_request_needs_it() {
        use tower::ServiceExt as _;
        let (app, token) = app();
        // Without the cookie: 401, saying what to do.
        let none = app.clone().oneshot(get("/", "127.0.0.1:8001", None)).await.unwrap();
        assert_eq!(none.status(), StatusCode::UNAUTHORIZED);
        let body = axum::body::to_bytes(none.into_body(), 1 << 16).await.unwrap();
        assert!(String::from_utf8_lossy(&body).contains("open the URL `ui dashboard` printed"));
        for path in ["/api/view", "/api/events", "/app.js"] {
            let r = app.clone().oneshot(get(path, "127.0.0.1:8001", None)).await.unwrap();
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path}");
        }
        // A wrong token, in the URL or the cookie: 401.
        let wrong = new_token();
        let r = app.clone().oneshot(get(&format!("/?token={wrong}"), "127.0.0.1:8001", None)).await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let c = format!("univrs_dashboard_8001={wrong}");
        let r = app.clone().oneshot(get("/api/view", "127.0.0.1:8001", Some(&c))).await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        // The token: a cookie and a redirect to the same path without it.
        let r = app.clone().oneshot(get(&format!("/?token={token}"), "127.0.0.1:8001", None)).await.unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        assert_eq!(r.headers()[header::LOCATION], "/");
        let set = r.headers()[header::SET_COOKIE].to_str().unwrap();
        assert_eq!(set, format!("univrs_dashboard_8001={token}; HttpOnly; SameSite=Strict; Path=/"));
        assert!(r.headers().get(header::CONTENT_SECURITY_POLICY).is_some());
        // The guards come first: a foreign Host with the token is still refused.
        let r =
            app.clone().oneshot(get(&format!("/?token={token}"), "evil.example:8001", None)).await.unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        // With the cookie.
        let c = format!("a=b; univrs_dashboard_8001={token}");
        let page = app.clone().oneshot(get("/", "127.0.0.1:8001", Some(&c))).await.unwrap();
        assert_eq!(page.status(), StatusCode::OK);
        let view = app.clone().oneshot(get("/api/view", "localhost:8001", Some(&c))).await.unwrap();
        assert_eq!(view.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn the_page_and_the_view_are_served_with_a_strict_policy_and_no_cors() {
        use tower::ServiceExt as _;
        let (app, token) = app();
        let c = format!("univrs_dashboard_8001={token}");
        let page = app.clone().oneshot(get("/", "localhost:8001", Some(&c))).await.unwrap();
        assert_eq!(page.status(), StatusCode::OK);
        let csp = page.headers()[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.starts_with("default-src 'self'"), "{csp}");
        assert_eq!(page.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert!(page.headers().get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
        let view = app.clone().oneshot(get("/api/view", "127.0.0.1:8001", Some(&c))).await.unwrap();
        assert_eq!(view.headers()[header::CONTENT_TYPE], "application/json");
        let refused = app.clone().oneshot(get("/api/view", "evil.example:8001", Some(&c))).await.unwrap();
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        assert_eq!(refused.headers()[header::CONTENT_SECURITY_POLICY], CONTENT_SECURITY_POLICY);
        let missing = app.oneshot(get("/nothing", "127.0.0.1:8001", Some(&c))).await.unwrap();
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn events_carry_the_view_now_then_each_change_until_the_server_stops() {
        use tower::ServiceExt as _;
        let (tx, rx) = watch::channel(Arc::<str>::from("{\"n\":1}"));
        let stop = CancellationToken::new();
        let token = new_token();
        let app = router(rx, Arc::new(Demand::new()), 8001, &token, stop.clone());
        let c = format!("univrs_dashboard_8001={token}");
        let get = || get("/api/events", "127.0.0.1:8001", Some(&c));
        let mut open = Vec::new();
        for _ in 0..MAX_STREAMS {
            let r = app.clone().oneshot(get()).await.unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            assert_eq!(r.headers()[header::CONTENT_TYPE], "text/event-stream");
            open.push(r.into_body().into_data_stream());
        }
        let over = app.clone().oneshot(get()).await.unwrap();
        assert_eq!(over.status(), StatusCode::SERVICE_UNAVAILABLE);
        // A stream that ends (the browser went away) gives its place back.
        open.pop();
        let again = app.clone().oneshot(get()).await.unwrap();
        assert_eq!(again.status(), StatusCode::OK);
        let text = |b: Option<Result<axum::body::Bytes, axum::Error>>| {
            String::from_utf8(b.expect("an event").unwrap().to_vec()).unwrap()
        };
        let body = &mut open[0];
        assert_eq!(text(body.next().await), "event: view\ndata: {\"n\":1}\n\n");
        // The same view sent again (to answer a request for it) is not sent again.
        tx.send_modify(|_| {});
        assert!(tokio::time::timeout(Duration::from_millis(200), body.next()).await.is_err());
        tx.send_replace(Arc::from("{\"n\":2}"));
        assert_eq!(text(body.next().await), "event: view\ndata: {\"n\":2}\n\n");
        stop.cancel();
        assert!(body.next().await.is_none(), "the stream ends with the server");
    }
}
