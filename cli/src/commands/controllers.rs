//! `ui controllers run`: run the controllers against an apiserver, as an outside client.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use controllers::manager::{self, Name, Options};
use controllers::metrics::Metrics;
use controllers::scheduler::core::Weights;
use tokio_util::sync::CancellationToken;

use super::{Context, Outcome};

/// Run the controllers (workload, scheduler, gc, nodelifecycle, credits, reputation)
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    Run(RunArgs),
}

impl Command {
    /// Whether it runs until stopped (it logs at info then).
    pub fn long_running(&self) -> bool {
        matches!(self, Command::Run(_))
    }
}

/// Run controllers against the apiserver of a kubeconfig
///
/// Each controller watches the API, keeps a cache, and reconciles what changed. Several copies
/// may run: each controller acts only in the process that holds its Lease
/// (univrs-system/controller-NAME) and stops at once when it loses it. Stops on SIGINT/SIGTERM
/// after running reconciles finish.
#[derive(Debug, clap::Args)]
#[command(args_override_self = true)]
pub struct RunArgs {
    /// Only these controllers (comma-separated) [default: all]
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    only: Vec<Name>,
    /// The kubeconfig to read [default: $KUBECONFIG (first path), else CONFIG_DIR/kubeconfig]
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// Serve Prometheus metrics on http://ADDR/metrics
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<SocketAddr>,
    /// Reconciles one controller runs at once
    #[arg(long, value_name = "N", default_value_t = 8)]
    concurrency: u16,
    /// How long a controller's lease holds without renewal, in seconds
    #[arg(long, value_name = "SECONDS", default_value_t = 15)]
    lease_duration: u64,
    /// How often a controller renews its lease (and a standby tries to take it), in seconds
    #[arg(long, value_name = "SECONDS", default_value_t = 2)]
    lease_renew: u64,
    /// How often a replica that cannot be placed is tried again, in seconds
    #[arg(long, value_name = "SECONDS", default_value_t = 5)]
    retry_unschedulable: u64,
    /// Scheduler: weight of the reputation score (node and operator)
    #[arg(long, value_name = "W", default_value_t = Weights::default().reputation)]
    weight_reputation: f64,
    /// Scheduler: weight of the spread score (operators running fewer of the workload's replicas)
    #[arg(long, value_name = "W", default_value_t = Weights::default().spread)]
    weight_spread: f64,
    /// Scheduler: weight of the free-capacity score
    #[arg(long, value_name = "W", default_value_t = Weights::default().free_capacity)]
    weight_free_capacity: f64,
    /// How long a node's heartbeat lease stays lapsed before its replicas are evicted, in seconds
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    eviction_timeout: u64,
    /// Credits: the metering period (one charge per replica per period), in seconds
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    metering_period: u64,
    /// Credits: how often metering, spending limits and grants are looked at, in seconds
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    credits_every: u64,
    /// Reputation: how often evidence is sampled, in seconds
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    reputation_every: u64,
    /// Reputation: how often Reputations are written, in seconds
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    reputation_write_every: u64,
    /// Reputation: evidence loses half its weight in this time, in seconds [default: 7 days]
    #[arg(long, value_name = "SECONDS", default_value_t = 7 * 24 * 3600)]
    reputation_half_life: u64,
    /// Reputation: seconds of evidence a score needs to reach half its share of good observations
    #[arg(long, value_name = "SECONDS", default_value_t = 3600)]
    reputation_prior: u64,
    /// Reputation: the age at which the age factor reaches 1, in seconds [default: 365 days]
    #[arg(long, value_name = "SECONDS", default_value_t = 365 * 24 * 3600)]
    reputation_age_full: u64,
    /// Reputation: weights of the composite, as UPTIME,RELIABILITY,HONESTY,AGE,ATTESTATIONS
    #[arg(long, value_name = "W,W,W,W,W", value_delimiter = ',', default_values_t = [0.25, 0.25, 0.15, 0.15, 0.2])]
    reputation_weights: Vec<f64>,
}

pub fn run(ctx: &Context, cmd: &Command) -> anyhow::Result<Outcome> {
    let Command::Run(args) = cmd;
    let path = kubeconfig_path(ctx, args.kubeconfig.as_deref());
    let mut options =
        Options { only: args.only.clone(), concurrency: args.concurrency.max(1), ..Options::default() };
    options.lease.duration = Duration::from_secs(args.lease_duration);
    options.lease.renew_every = Duration::from_secs(args.lease_renew);
    if args.lease_renew == 0 || !options.lease.is_valid() {
        anyhow::bail!(
            "--lease-duration must be more than twice --lease-renew plus 1 second (and --lease-renew at least 1), \
             so that a leader renews in time and stops acting before another may start"
        );
    }
    options.scheduler.retry_unschedulable = Duration::from_secs(args.retry_unschedulable.max(1));
    options.node_lifecycle.eviction_timeout = Duration::from_secs(args.eviction_timeout);
    let weights = [args.weight_reputation, args.weight_spread, args.weight_free_capacity];
    if weights.iter().any(|w| !w.is_finite() || *w < 0.0) {
        anyhow::bail!("score weights must be finite and >= 0");
    }
    let every = |secs: u64, flag: &str| -> anyhow::Result<Duration> {
        if secs == 0 {
            anyhow::bail!("--{flag} must be at least 1 second");
        }
        Ok(Duration::from_secs(secs))
    };
    options.credits.period = every(args.metering_period, "metering-period")?;
    options.credits.every = every(args.credits_every, "credits-every")?;
    options.reputation.every = every(args.reputation_every, "reputation-every")?;
    options.reputation.write_every = every(args.reputation_write_every, "reputation-write-every")?;
    let scoring = &mut options.reputation.scoring;
    scoring.half_life = every(args.reputation_half_life, "reputation-half-life")?;
    scoring.prior = every(args.reputation_prior, "reputation-prior")?;
    scoring.age_full = every(args.reputation_age_full, "reputation-age-full")?;
    let w = &args.reputation_weights;
    if w.len() != 5 || w.iter().any(|w| !w.is_finite() || *w < 0.0) || w.iter().sum::<f64>() <= 0.0 {
        anyhow::bail!(
            "--reputation-weights takes 5 finite weights >= 0, not all 0 (uptime,reliability,honesty,age,attestations)"
        );
    }
    scoring.weights = controllers::reputation::score::Weights {
        uptime: w[0],
        reliability: w[1],
        honesty: w[2],
        age: w[3],
        attestations: w[4],
    };
    options.scheduler.weights = Weights {
        reputation: args.weight_reputation,
        spread: args.weight_spread,
        free_capacity: args.weight_free_capacity,
    };
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start tokio")?;
    runtime.block_on(async {
        let client = manager::client_from_kubeconfig(&path).await?;
        let metrics = Metrics::new();
        let shutdown = CancellationToken::new();
        let metrics_task = match args.metrics_addr {
            Some(addr) => {
                let listener = controllers::metrics::bind(addr)
                    .await
                    .with_context(|| format!("cannot serve metrics on {addr}"))?;
                println!("metrics on http://{}/metrics", listener.local_addr()?);
                Some(tokio::spawn(metrics.clone().serve(listener, shutdown.clone().cancelled_owned())))
            }
            None => None,
        };
        let selected = if options.only.is_empty() { Name::ALL.to_vec() } else { options.only.clone() };
        let names: Vec<&str> = selected.iter().map(|n| n.as_str()).collect();
        println!("controllers: {} (as {})", names.join(", "), options.lease.identity);
        let stop = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            eprintln!("shutting down");
            stop.cancel();
        });
        manager::run(client, options, metrics, shutdown.clone()).await;
        shutdown.cancel();
        if let Some(t) = metrics_task {
            t.await.context("metrics server")?.context("metrics server")?;
        }
        anyhow::Ok(())
    })?;
    Ok(Outcome::Success)
}

async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("can install a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn kubeconfig_path(ctx: &Context, flag: Option<&Path>) -> PathBuf {
    if let Some(p) = flag {
        return p.to_owned();
    }
    if let Some(env) = std::env::var_os("KUBECONFIG")
        && let Some(first) = std::env::split_paths(&env).find(|p| !p.as_os_str().is_empty())
    {
        return first;
    }
    ctx.dirs.root().join("kubeconfig")
}

/// All controllers running inside `ui up`, next to the apiserver.
#[derive(Debug)]
pub struct InProcess {
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl InProcess {
    /// Starts every controller against the apiserver of the kubeconfig at `path`; they stop
    /// when `shutdown` is cancelled. `identity` names this `ui up` in the controllers' Leases:
    /// a stable one lets a restarted `ui up` take its leases back at once instead of waiting
    /// for them to lapse.
    pub async fn start(
        path: &Path,
        identity: String,
        metrics: Metrics,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let client = manager::client_from_kubeconfig(path).await?;
        let mut options = Options::default();
        options.lease.identity = identity;
        let task = tokio::spawn(manager::run(client, options, metrics, shutdown.clone()));
        Ok(Self { shutdown, task })
    }

    /// Stops them, waiting at most `grace` for running reconciles.
    pub async fn stop(self, grace: Duration) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(grace, self.task).await;
    }
}
