//! `ui down`: stop what `ui up` started.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::Serialize;

use super::{Context, Outcome};
use crate::output::OutputArgs;

/// Stop what `ui up` started: the control plane, its controllers, its local node and the
/// replicas running there
///
/// Asks the `ui up` (or `ui apiserver`) holding the data dir to stop (SIGTERM, as Ctrl-C) and
/// waits for it, then stops any replica of the local node still running (left by `ui up
/// --keep-replicas`, or by a `ui up` that was killed). The data stays: `ui up` resumes it.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The data dir of the `ui up` to stop [default: $XDG_DATA_HOME/univrs or ~/.local/share/univrs]
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// How long to wait for it to stop
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    timeout: u64,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Down {
    data_dir: String,
    /// The pid of the process that was stopped, if one ran.
    stopped_pid: Option<u32>,
    /// Replicas of the local node stopped after it.
    replicas_stopped: usize,
}

pub fn run(_ctx: &Context, args: &Args) -> anyhow::Result<Outcome> {
    let data_dir = match &args.data_dir {
        Some(d) => d.clone(),
        None => super::apiserver::default_data_dir()?,
    };
    if !data_dir.is_dir() {
        bail!("nothing to stop: {} is not a data dir (pass --data-dir DIR)", data_dir.display());
    }
    let lock = data_dir.join("lock");
    let holder = match std::fs::File::open(&lock) {
        Ok(f) => match f.try_lock() {
            Ok(()) => None,
            Err(std::fs::TryLockError::WouldBlock) => {
                let pid: u32 = std::fs::read_to_string(&lock)
                    .ok()
                    .and_then(|t| t.trim().parse().ok())
                    .with_context(|| format!("{} is locked but says no pid", lock.display()))?;
                Some(pid)
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).context(format!("cannot read {}", lock.display()));
            }
        },
        Err(_) => None,
    };
    if let Some(pid) = holder {
        let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(args.timeout);
        loop {
            let free = std::fs::File::open(&lock).is_ok_and(|f| f.try_lock().is_ok());
            if free {
                break;
            }
            if Instant::now() >= deadline {
                bail!(
                    "the member (pid {pid}) did not stop within {} s; kill -9 {pid}, then run ui down again",
                    args.timeout
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let state = data_dir.join("node").join("state");
    let replicas_stopped = agent::node::stop_all_runs(&state, Duration::from_secs(20));
    // No replica left: the node's bridges and network rules go too.
    if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
        rt.block_on(agent::network::Network::tear_down(&state));
    }
    let report = Down { data_dir: data_dir.display().to_string(), stopped_pid: holder, replicas_stopped };
    if !args.output.print_structured(&report)? {
        match holder {
            Some(pid) => println!("stopped the univrs member in {} (pid {pid})", data_dir.display()),
            None => println!("no univrs member ran in {}", data_dir.display()),
        }
        if replicas_stopped > 0 {
            println!("stopped {replicas_stopped} replica(s) of its local node");
        }
    }
    Ok(Outcome::Success)
}
