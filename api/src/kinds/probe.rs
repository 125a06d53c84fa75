//! Health probes of a Workload's replicas, with Kubernetes' names and semantics: a liveness
//! probe whose failures restart the replica, a readiness probe whose result is the replica's
//! `Ready` condition (and so whether it counts towards its workload's availability).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::validation::{FieldError, FieldPath, Validate};

/// Longest probe command, all arguments together, in bytes.
pub const MAX_PROBE_COMMAND_BYTES: usize = 4096;
/// Most arguments of a probe command.
pub const MAX_PROBE_ARGS: usize = 64;
/// Longest HTTP path of a probe.
pub const MAX_PROBE_PATH: usize = 2048;

/// How long a `ui exec` authorization lasts: the owner signs it just before the call.
pub const EXEC_AUTHORIZATION_SECS: i64 = 60;

/// The audience of the token with which a replica's owner authorizes running `command` (with
/// `timeout_seconds`) in replica `uid`, once (`nonce`, unique per exec): it names that replica
/// and a digest of that command, so whoever carries it (the apiserver, a control-plane member)
/// can use it for nothing else, and the node runs it once.
pub fn exec_audience(uid: &str, command: &[String], timeout_seconds: u64, nonce: &str) -> String {
    use sha2::Digest as _;
    let what = serde_json::to_vec(&(command, timeout_seconds, nonce)).unwrap_or_default();
    let digest = sha2::Sha256::digest(&what);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("univrs-exec:{uid}:{hex}")
}

/// Checks a command run in a replica (an exec probe's, `ui exec`'s): a program, at most
/// [`MAX_PROBE_ARGS`] arguments and [`MAX_PROBE_COMMAND_BYTES`] bytes, no NUL. The error says
/// what is wrong.
pub fn check_command(command: &[String]) -> Result<(), String> {
    let bytes: usize = command.iter().map(|a| a.len() + 1).sum();
    if command.first().is_none_or(String::is_empty) {
        Err("required: the program to run".to_owned())
    } else if command.len() > MAX_PROBE_ARGS {
        Err(format!("at most {MAX_PROBE_ARGS} arguments"))
    } else if bytes > MAX_PROBE_COMMAND_BYTES {
        Err(format!("at most {MAX_PROBE_COMMAND_BYTES} bytes in all"))
    } else if command.iter().any(|a| a.contains('\0')) {
        Err("must not contain NUL characters".to_owned())
    } else {
        Ok(())
    }
}

/// How a replica's health is checked, and how often.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Probe {
    /// Runs a command in the replica: healthy when it exits 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecAction>,
    /// An HTTP GET to the replica: healthy on a status from 200 to 399.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_get: Option<HttpGetAction>,
    /// Opens a TCP connection to the replica: healthy when it is accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_socket: Option<TcpSocketAction>,
    /// Seconds after the start before the first probe (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_delay_seconds: Option<u32>,
    /// Seconds between probes (default 10, at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_seconds: Option<u32>,
    /// Seconds before one probe counts as failed (default 1, at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u32>,
    /// Successes in a row after a failure before the probe passes again (default 1; must be 1
    /// for a liveness probe).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_threshold: Option<u32>,
    /// Failures in a row before the probe fails (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_threshold: Option<u32>,
}

/// A command run inside the replica.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExecAction {
    /// The program and its arguments (no shell: say `["sh", "-c", "…"]` for one).
    pub command: Vec<String>,
}

/// An HTTP GET to the replica's own loopback address.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpGetAction {
    /// The path (default `/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The port the replica listens on.
    pub port: u16,
}

/// A TCP connection to the replica's own loopback address.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpSocketAction {
    /// The port the replica listens on.
    pub port: u16,
}

/// What a probe does, defaults applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeAction {
    /// A command in the replica.
    Exec(Vec<String>),
    /// An HTTP GET of `path` on `port`.
    HttpGet { path: String, port: u16 },
    /// A TCP connection to `port`.
    TcpSocket(u16),
}

impl std::fmt::Display for ProbeAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Exec(cmd) => write!(f, "exec {:?}", cmd.join(" ")),
            Self::HttpGet { path, port } => write!(f, "http-get :{port}{path}"),
            Self::TcpSocket(port) => write!(f, "tcp-socket :{port}"),
        }
    }
}

impl Probe {
    /// What it does (`None` only for a probe that failed validation).
    pub fn action(&self) -> Option<ProbeAction> {
        match (&self.exec, &self.http_get, &self.tcp_socket) {
            (Some(e), None, None) => Some(ProbeAction::Exec(e.command.clone())),
            (None, Some(h), None) => Some(ProbeAction::HttpGet {
                path: h.path.clone().filter(|p| !p.is_empty()).unwrap_or_else(|| "/".to_owned()),
                port: h.port,
            }),
            (None, None, Some(t)) => Some(ProbeAction::TcpSocket(t.port)),
            _ => None,
        }
    }

    /// Seconds before the first probe.
    pub fn initial_delay(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.initial_delay_seconds.unwrap_or(0).into())
    }

    /// Seconds between probes.
    pub fn period(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.period_seconds.unwrap_or(10).max(1).into())
    }

    /// How long one probe may take.
    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.timeout_seconds.unwrap_or(1).max(1).into())
    }

    /// Successes in a row that make a failing probe pass.
    pub fn success_threshold(&self) -> u32 {
        self.success_threshold.unwrap_or(1).max(1)
    }

    /// Failures in a row that make a passing probe fail.
    pub fn failure_threshold(&self) -> u32 {
        self.failure_threshold.unwrap_or(3).max(1)
    }

    /// Checks the probe; `liveness` adds Kubernetes' rule that its success threshold is 1.
    pub fn validate_as(&self, path: &FieldPath, liveness: bool, errors: &mut Vec<FieldError>) {
        let set = [self.exec.is_some(), self.http_get.is_some(), self.tcp_socket.is_some()];
        match set.iter().filter(|s| **s).count() {
            0 => errors.push(path.error("set one of exec, httpGet and tcpSocket")),
            1 => {}
            _ => errors.push(path.error("set only one of exec, httpGet and tcpSocket")),
        }
        if let Some(e) = &self.exec
            && let Err(e) = check_command(&e.command)
        {
            errors.push(path.child("exec").child("command").error(e));
        }
        if let Some(h) = &self.http_get {
            if h.port == 0 {
                errors.push(path.child("httpGet").child("port").error("must be 1..=65535"));
            }
            if let Some(p) = &h.path {
                let bad = |c: char| c.is_ascii_control() || c == ' ' || !c.is_ascii();
                if !p.is_empty() && !p.starts_with('/') {
                    errors.push(path.child("httpGet").child("path").error("must start with '/'"));
                } else if p.len() > MAX_PROBE_PATH {
                    errors.push(
                        path.child("httpGet").child("path").error(format!("at most {MAX_PROBE_PATH} bytes")),
                    );
                } else if p.chars().any(bad) {
                    errors.push(
                        path.child("httpGet")
                            .child("path")
                            .error("must be printable ASCII without spaces (percent-encode the rest)"),
                    );
                }
            }
        }
        if self.tcp_socket.as_ref().is_some_and(|t| t.port == 0) {
            errors.push(path.child("tcpSocket").child("port").error("must be 1..=65535"));
        }
        let bounded = |field: &str, v: Option<u32>, min: u32, max: u32, errors: &mut Vec<FieldError>| {
            if let Some(v) = v
                && !(min..=max).contains(&v)
            {
                errors.push(path.child(field).error(format!("must be {min}..={max}")));
            }
        };
        bounded("initialDelaySeconds", self.initial_delay_seconds, 0, 3600, errors);
        bounded("periodSeconds", self.period_seconds, 1, 3600, errors);
        bounded("timeoutSeconds", self.timeout_seconds, 1, 60, errors);
        bounded("successThreshold", self.success_threshold, 1, 100, errors);
        bounded("failureThreshold", self.failure_threshold, 1, 100, errors);
        if liveness && self.success_threshold.is_some_and(|s| s != 1) {
            errors.push(path.child("successThreshold").error("must be 1 for a liveness probe"));
        }
    }
}

impl Validate for Probe {
    fn validate(&self, path: &FieldPath, errors: &mut Vec<FieldError>) {
        self.validate_as(path, false, errors);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(p: &Probe, liveness: bool) -> Vec<String> {
        let mut e = Vec::new();
        p.validate_as(&FieldPath::root().child("livenessProbe"), liveness, &mut e);
        e.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_probe_has_exactly_one_action_and_bounded_timings() {
        let none = Probe::default();
        assert_eq!(errors(&none, false), ["livenessProbe: set one of exec, httpGet and tcpSocket"]);
        let two = Probe {
            tcp_socket: Some(TcpSocketAction { port: 80 }),
            http_get: Some(HttpGetAction { path: None, port: 80 }),
            ..Probe::default()
        };
        assert_eq!(errors(&two, false), ["livenessProbe: set only one of exec, httpGet and tcpSocket"]);
        let bad = Probe {
            http_get: Some(HttpGetAction { path: Some("healthz".into()), port: 0 }),
            period_seconds: Some(0),
            success_threshold: Some(2),
            ..Probe::default()
        };
        let e = errors(&bad, true);
        assert!(e.contains(&"livenessProbe.httpGet.port: must be 1..=65535".to_owned()), "{e:?}");
        assert!(e.contains(&"livenessProbe.httpGet.path: must start with '/'".to_owned()), "{e:?}");
        assert!(e.contains(&"livenessProbe.periodSeconds: must be 1..=3600".to_owned()), "{e:?}");
        assert!(
            e.contains(&"livenessProbe.successThreshold: must be 1 for a liveness probe".to_owned()),
            "{e:?}"
        );
        assert!(errors(&bad, false).iter().all(|m| !m.contains("liveness probe")));
        let empty = Probe { exec: Some(ExecAction { command: vec![] }), ..Probe::default() };
        assert_eq!(errors(&empty, false), ["livenessProbe.exec.command: required: the program to run"]);
    }

    #[test]
    fn a_command_run_in_a_replica_is_bounded() {
        let of = |v: &[&str]| check_command(&v.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>());
        assert_eq!(of(&["true"]), Ok(()));
        assert_eq!(of(&[]), Err("required: the program to run".to_owned()));
        assert_eq!(of(&["ls", "a\0b"]), Err("must not contain NUL characters".to_owned()));
        assert_eq!(of(&["x"; 65]), Err("at most 64 arguments".to_owned()));
        let long = "y".repeat(5000);
        assert_eq!(of(&["echo", &long]), Err("at most 4096 bytes in all".to_owned()));
    }

    #[test]
    fn defaults_are_kubernetes_own() {
        let p = Probe { tcp_socket: Some(TcpSocketAction { port: 8080 }), ..Probe::default() };
        assert_eq!(p.action(), Some(ProbeAction::TcpSocket(8080)));
        assert_eq!(p.period().as_secs(), 10);
        assert_eq!(p.timeout().as_secs(), 1);
        assert_eq!((p.success_threshold(), p.failure_threshold()), (1, 3));
        let h = Probe { http_get: Some(HttpGetAction { path: None, port: 80 }), ..Probe::default() };
        assert_eq!(h.action(), Some(ProbeAction::HttpGet { path: "/".into(), port: 80 }));
    }
}
