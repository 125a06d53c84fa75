//! `config.toml`: the user's settings. Every section has safe defaults (nothing leaves the
//! machine, AI agents disabled), and unknown keys are errors so a typo never silently does
//! nothing.

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::paths::ConfigDirs;

/// The whole file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Peer-to-peer network settings.
    pub network: Network,
    /// Metrics and tracing.
    pub observability: Observability,
    /// Kept for old files; what an agent may do is its user's signed AgentGrant, which the
    /// apiserver enforces (see `[agent]`).
    pub ai: Ai,
    /// Present when this directory is an AI agent's (`ui agent init NAME` writes it): whose
    /// agent it is and under which AgentGrant it acts. Everything it signs is signed on that
    /// user's behalf (`api::signing::sign_on_behalf`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentOf>,
}

/// `[agent]`: the user an agent's key acts for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentOf {
    /// The user (their did:key) whose AgentGrant names this key.
    pub owner: api::identity::Did,
    /// The name of that AgentGrant.
    pub grant: String,
}

/// `[network]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Network {
    /// Multiaddrs of nodes to bootstrap from.
    pub bootstrap_nodes: Vec<String>,
}

/// `[observability]`: telemetry never leaves the machine unless the user opts in.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Observability {
    /// Export metrics beyond the local `/metrics` endpoint.
    pub metrics_enabled: bool,
    /// Export traces.
    pub tracing_enabled: bool,
}

/// `[ai]`: boundaries for AI agents.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Ai {
    /// Agents can do nothing unless this is true.
    pub enabled: bool,
    /// Actions that wait for the user's approval.
    pub require_approval: Vec<String>,
    /// Actions agents may take on their own.
    pub autonomous: Vec<String>,
    /// Actions that never run.
    pub forbidden: Vec<String>,
}

impl Default for Ai {
    fn default() -> Self {
        let list = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect();
        Self {
            enabled: false,
            require_approval: list(&["deploy", "delete", "spend_credits"]),
            autonomous: list(&["view_status"]),
            forbidden: list(&["access_secrets", "modify_policy"]),
        }
    }
}

/// The file `ui init` writes: the defaults, with comments.
pub const DEFAULT_FILE: &str = r#"# univrs configuration. `ui config show` prints what is in effect.

[network]
# Multiaddrs of nodes to bootstrap from, e.g. "/ip4/192.0.2.10/udp/9000/quic-v1/p2p/12D3KooW…".
bootstrap_nodes = []

[observability]
# Telemetry never leaves this machine unless you turn it on.
metrics_enabled = false
tracing_enabled = false

[ai]
# Superseded: an AI agent (ui agent init, ui mcp) may do only what your signed AgentGrant
# says, and the apiserver enforces it. These keys are read and ignored.
enabled = false
require_approval = ["deploy", "delete", "spend_credits"]
autonomous = ["view_status"]
forbidden = ["access_secrets", "modify_policy"]
"#;

impl Config {
    /// Reads `config.toml`, or the defaults when there is none.
    pub fn load(dirs: &ConfigDirs) -> anyhow::Result<Self> {
        let path = dirs.config_file();
        if !path.exists() {
            return Ok(Self::default());
        }
        let bytes = crate::fsutil::read_limited(&path, 1024 * 1024)?;
        let text =
            String::from_utf8(bytes).ok().with_context(|| format!("{} is not UTF-8", path.display()))?;
        toml::from_str(&text).with_context(|| format!("{} is not valid", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_file_is_the_default_config() {
        assert_eq!(toml::from_str::<Config>(DEFAULT_FILE).unwrap(), Config::default());
    }

    #[test]
    fn typos_are_errors() {
        let err = toml::from_str::<Config>("[ai]\nenabeld = true\n").unwrap_err();
        assert!(err.to_string().contains("enabeld"), "{err}");
    }
}
