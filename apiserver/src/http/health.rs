//! `/livez`, `/readyz` and `/healthz` as kube-apiserver serves them: `ok` when every check
//! passes, HTTP 500 listing the checks otherwise; `?verbose` lists them always; `?exclude=NAME`
//! (repeatable) skips one; `/readyz/NAME` runs one. Open to everyone, like kube-apiserver's, so
//! a failing check's reason is withheld (the member's log has it).
//!
//! - `ping`: the server answers.
//! - `etcd` (named as kube-apiserver's storage check, so probes and alerts written for it
//!   work): the replicated store is readable here and this member knows a leader.
//!
//! `/livez` checks only `ping`: a member that has lost its leader must not be restarted by a
//! liveness probe (that would not bring the leader back), only taken out of rotation.

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::raft::RaftNode;

/// The endpoint asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Livez,
    Readyz,
    Healthz,
}

impl Endpoint {
    fn name(self) -> &'static str {
        match self {
            Endpoint::Livez => "livez",
            Endpoint::Readyz => "readyz",
            Endpoint::Healthz => "healthz",
        }
    }

    /// The checks of the endpoint, in order.
    fn checks(self) -> &'static [&'static str] {
        match self {
            Endpoint::Livez => &["ping"],
            Endpoint::Readyz | Endpoint::Healthz => &["ping", "etcd"],
        }
    }
}

/// The answer to a health request, from the results of its checks (`None`: excluded). Pure.
pub fn answer(endpoint: Endpoint, results: &[(&str, Option<bool>)], verbose: bool) -> (StatusCode, String) {
    let passed = results.iter().all(|(_, r)| *r != Some(false));
    if passed && !verbose {
        return (StatusCode::OK, "ok".to_owned());
    }
    let mut body = String::new();
    for (name, r) in results {
        match r {
            Some(true) => body.push_str(&format!("[+]{name} ok\n")),
            Some(false) => body.push_str(&format!("[-]{name} failed: reason withheld\n")),
            None => body.push_str(&format!("[+]{name} excluded: ok\n")),
        }
    }
    let e = endpoint.name();
    if passed {
        body.push_str(&format!("{e} check passed\n"));
        (StatusCode::OK, body)
    } else {
        body.push_str(&format!("{e} check failed\n"));
        (StatusCode::INTERNAL_SERVER_ERROR, body)
    }
}

/// Whether `verbose` is asked and which checks are excluded, from the query string.
fn options(query: Option<&str>) -> (bool, Vec<String>) {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.unwrap_or("")).unwrap_or_default();
    let verbose = pairs.iter().any(|(k, v)| k == "verbose" && v != "false" && v != "0");
    // Bounded: a stranger's query excludes at most as many checks as there are.
    let exclude = pairs.into_iter().filter(|(k, _)| k == "exclude").map(|(_, v)| v).take(8).collect();
    (verbose, exclude)
}

fn check(node: &RaftNode, name: &str) -> bool {
    match name {
        "ping" => true,
        "etcd" => node.status().leader.is_some() && node.state().get("/").is_ok(),
        _ => false,
    }
}

async fn respond(node: &RaftNode, endpoint: Endpoint, only: Option<&str>, query: Option<&str>) -> Response {
    let (verbose, exclude) = options(query);
    let names: Vec<&str> = match only {
        Some(one) if endpoint.checks().contains(&one) => vec![one],
        Some(_) => return (StatusCode::NOT_FOUND, "no such check\n").into_response(),
        None => endpoint.checks().to_vec(),
    };
    let results: Vec<(&str, Option<bool>)> =
        names.iter().map(|n| (*n, (!exclude.iter().any(|e| e == n)).then(|| check(node, n)))).collect();
    let (code, body) = answer(endpoint, &results, verbose || only.is_some());
    let body = if only.is_some() && code == StatusCode::OK { "ok".to_owned() } else { body };
    (code, [(axum::http::header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

/// `GET /livez`.
pub async fn livez(State(node): State<RaftNode>, RawQuery(q): RawQuery) -> Response {
    respond(&node, Endpoint::Livez, None, q.as_deref()).await
}

/// `GET /readyz`.
pub async fn readyz(State(node): State<RaftNode>, RawQuery(q): RawQuery) -> Response {
    respond(&node, Endpoint::Readyz, None, q.as_deref()).await
}

/// `GET /healthz`.
pub async fn healthz(State(node): State<RaftNode>, RawQuery(q): RawQuery) -> Response {
    respond(&node, Endpoint::Healthz, None, q.as_deref()).await
}

/// `GET /livez/NAME`.
pub async fn livez_check(
    State(node): State<RaftNode>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    respond(&node, Endpoint::Livez, Some(&name), q.as_deref()).await
}

/// `GET /readyz/NAME`.
pub async fn readyz_check(
    State(node): State<RaftNode>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    respond(&node, Endpoint::Readyz, Some(&name), q.as_deref()).await
}

/// `GET /healthz/NAME`.
pub async fn healthz_check(
    State(node): State<RaftNode>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    respond(&node, Endpoint::Healthz, Some(&name), q.as_deref()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_as_kube_apiserver_does() {
        let ok = [("ping", Some(true)), ("etcd", Some(true))];
        assert_eq!(answer(Endpoint::Readyz, &ok, false), (StatusCode::OK, "ok".to_owned()));
        assert_eq!(
            answer(Endpoint::Readyz, &ok, true),
            (StatusCode::OK, "[+]ping ok\n[+]etcd ok\nreadyz check passed\n".to_owned())
        );
        let down = [("ping", Some(true)), ("etcd", Some(false))];
        assert_eq!(
            answer(Endpoint::Readyz, &down, false),
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "[+]ping ok\n[-]etcd failed: reason withheld\nreadyz check failed\n".to_owned()
            )
        );
        let excluded = [("ping", Some(true)), ("etcd", None)];
        assert_eq!(answer(Endpoint::Healthz, &excluded, false), (StatusCode::OK, "ok".to_owned()));
        assert!(answer(Endpoint::Healthz, &excluded, true).1.contains("[+]etcd excluded: ok"));
    }

    #[test]
    fn options_are_read_from_the_query() {
        assert_eq!(options(Some("verbose")), (true, vec![]));
        assert_eq!(options(Some("verbose=false&exclude=etcd")), (false, vec!["etcd".to_owned()]));
        assert_eq!(options(None), (false, vec![]));
        let many = (0..100).map(|i| format!("exclude=c{i}")).collect::<Vec<_>>().join("&");
        assert_eq!(options(Some(&many)).1.len(), 8);
    }

    #[test]
    fn livez_does_not_depend_on_the_leader() {
        assert_eq!(Endpoint::Livez.checks(), &["ping"]);
        assert!(Endpoint::Readyz.checks().contains(&"etcd"));
    }
}
