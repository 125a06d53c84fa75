//! What `ui` logs, and how: `tracing` events on stderr, filtered by `-v` or `RUST_LOG`, as text
//! for people or one JSON object per line for machines (`--log-format json`).
//!
//! The long-running commands (`ui up`, `ui apiserver`, `ui controllers run`, `ui node run`,
//! `ui mcp`, `ui dashboard`) log at `info` by default: one line per meaningful event (a member
//! joined, the leader changed, a replica placed and why, started, exited, evicted, a write
//! refused and why). Every other command logs only warnings unless asked (`-v`).

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One line of text per event, for people.
    #[default]
    Text,
    /// One JSON object per event (timestamp, level, target, fields), for log shippers.
    Json,
}

/// The filter for `verbose` (`-v` count) when `RUST_LOG` is not set: the level of `ui`'s
/// own crates, with every other crate (libp2p, openraft, hyper …) one level quieter
/// so that `-v` shows what univrs does, not what its libraries do.
pub fn default_directives(verbose: u8, long_running: bool) -> String {
    let ours = match (verbose, long_running) {
        (0, false) => "warn",
        (0, true) | (1, false) => "info",
        (1, true) | (2, false) => "debug",
        _ => "trace",
    };
    let theirs = match ours {
        "trace" => "debug",
        "debug" => "info",
        _ => "warn",
    };
    let crates = ["ui", "cli", "api", "apiserver", "client", "controllers", "agent"];
    let mut d = theirs.to_owned();
    for c in crates {
        d.push_str(&format!(",{c}={ours}"));
    }
    // kube's client logs every failed request at error, and the callers (which retry, or
    // say what failed) log them again: its own lines only from -vv on.
    if verbose < 2 {
        d.push_str(",kube_client=off");
    }
    d
}

/// Installs the process's subscriber. `RUST_LOG`, when set, wins over `-v`; a `RUST_LOG` that
/// does not parse is an error that names it.
pub fn init(verbose: u8, format: Format, long_running: bool) -> anyhow::Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => EnvFilter::builder()
            .parse(&spec)
            .map_err(|e| anyhow::anyhow!("RUST_LOG={spec:?} is not a valid log filter: {e}"))?,
        _ => EnvFilter::new(default_directives(verbose, long_running)),
    };
    let builder = tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter(filter);
    // A second subscriber (a test calling twice) is not an error worth failing a command for.
    let _ = match format {
        Format::Text => builder
            .with_target(verbose > 0)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        Format::Json => builder.json().flatten_event(true).with_current_span(false).try_init(),
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_tell_their_story_at_info_and_commands_stay_quiet_unless_asked() {
        assert!(default_directives(0, true).contains("controllers=info"));
        assert!(default_directives(0, false).contains("apiserver=warn"));
        assert!(default_directives(1, false).contains("agent=info"));
        assert!(default_directives(1, true).contains("agent=debug"));
        assert!(default_directives(3, true).contains("ui=trace"));
        // Libraries stay one level quieter.
        assert!(default_directives(1, true).starts_with("info,"));
        assert!(default_directives(0, true).starts_with("warn,"));
        for v in 0..5 {
            for l in [false, true] {
                EnvFilter::try_new(default_directives(v, l)).unwrap();
            }
        }
    }
}
