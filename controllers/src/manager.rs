//! Runs a selection of controllers in one process: a client from a kubeconfig, leader election
//! per controller, `/metrics`, and one shutdown for all.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use kube::Client;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::leader::LeaseConfig;
use crate::metrics::Metrics;
use crate::runtime::{Shared, run_elected};
use crate::{credits, gc, nodelifecycle, reputation, scheduler, workload};

/// A controller's name, as `--only` takes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Name {
    /// Keeps each Workload's Replicas.
    Workload,
    /// Binds Replicas to nodes.
    Scheduler,
    /// Deletes objects whose owners are gone.
    Gc,
    /// Node readiness from heartbeat Leases; evicts replicas of lapsed nodes.
    NodeLifecycle,
    /// Meters replicas into Transfers; spending limits; CreditGrant status.
    Credits,
    /// Reputations from observed evidence; attestation weights (EigenTrust).
    Reputation,
}

impl Name {
    /// Every controller, in the order they start.
    pub const ALL: [Name; 6] =
        [Name::Workload, Name::Scheduler, Name::Gc, Name::NodeLifecycle, Name::Credits, Name::Reputation];

    /// The name used in `--only`, leases and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Name::Workload => "workload",
            Name::Scheduler => "scheduler",
            Name::Gc => "gc",
            Name::NodeLifecycle => "nodelifecycle",
            Name::Credits => "credits",
            Name::Reputation => "reputation",
        }
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Name {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Name::ALL.into_iter().find(|n| n.as_str() == s).ok_or_else(|| {
            let all: Vec<&str> = Name::ALL.iter().map(|n| n.as_str()).collect();
            format!("no controller {s:?}: choose from {}", all.join(", "))
        })
    }
}

/// How to run the controllers.
#[derive(Clone, Debug)]
pub struct Options {
    /// Which controllers (empty: all).
    pub only: Vec<Name>,
    /// Reconciles of one controller at once.
    pub concurrency: u16,
    /// Leader election.
    pub lease: LeaseConfig,
    /// The workload controller's settings.
    pub workload: workload::Config,
    /// The scheduler's settings.
    pub scheduler: scheduler::Config,
    /// The garbage collector's settings.
    pub gc: gc::Config,
    /// The node lifecycle controller's settings.
    pub node_lifecycle: nodelifecycle::Config,
    /// The credits controller's settings.
    pub credits: credits::Config,
    /// The reputation controller's settings.
    pub reputation: reputation::Config,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            only: Vec::new(),
            concurrency: 8,
            lease: LeaseConfig::new(format!("controllers-{}", uuid::Uuid::new_v4())),
            workload: workload::Config::default(),
            scheduler: scheduler::Config::default(),
            gc: gc::Config::default(),
            node_lifecycle: nodelifecycle::Config::default(),
            credits: credits::Config::default(),
            reputation: reputation::Config::default(),
        }
    }
}

/// Why the controllers could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The kubeconfig could not be read or used.
    #[error("kubeconfig {path}: {reason}")]
    Kubeconfig {
        /// Its path.
        path: String,
        /// Why.
        reason: String,
    },
}

/// A client of every member the kubeconfig at `path` lists (its current context: TLS, the
/// credential, failover; see `client::failover`).
pub async fn client_from_kubeconfig(path: &Path) -> Result<Client, StartError> {
    client::failover::connect_to(path)
        .map_err(|e| StartError::Kubeconfig { path: path.display().to_string(), reason: e.to_string() })
}

/// Runs the selected controllers until `shutdown`, then waits for them to drain.
pub async fn run(client: Client, options: Options, metrics: Metrics, shutdown: CancellationToken) {
    let shared = Shared {
        client,
        metrics,
        shutdown: shutdown.clone(),
        lease: options.lease.clone(),
        concurrency: options.concurrency,
    };
    let selected: Vec<Name> = if options.only.is_empty() { Name::ALL.to_vec() } else { options.only.clone() };
    let mut tasks = JoinSet::new();
    for name in selected {
        let shared = shared.clone();
        let options = options.clone();
        match name {
            Name::Workload => tasks.spawn(async move {
                run_elected("workload", shared, move |s| workload::run(s, options.workload)).await;
            }),
            Name::Scheduler => tasks.spawn(async move {
                run_elected("scheduler", shared, move |s| scheduler::run(s, options.scheduler)).await;
            }),
            Name::Gc => tasks.spawn(async move {
                run_elected("gc", shared, move |s| gc::run(s, options.gc)).await;
            }),
            Name::NodeLifecycle => tasks.spawn(async move {
                run_elected("nodelifecycle", shared, move |s| nodelifecycle::run(s, options.node_lifecycle))
                    .await;
            }),
            Name::Credits => tasks.spawn(async move {
                run_elected("credits", shared, move |s| credits::run(s, options.credits)).await;
            }),
            Name::Reputation => tasks.spawn(async move {
                run_elected("reputation", shared, move |s| reputation::run(s, options.reputation)).await;
            }),
        };
    }
    while let Some(r) = tasks.join_next().await {
        if let Err(e) = r {
            tracing::error!(error = %e, "a controller task failed");
            shutdown.cancel();
        }
    }
}
