//! The agent of one node: heartbeats its Lease, reports its runtime, watches the Replicas bound
//! to it and runs each under a supervisor (one shim process per run), reporting their status.
//!
//! Only the API is shared state: the agent reaches the control plane through its client with
//! the node's own key, so it may write only its Node, its Lease and its replicas' status.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use api::kinds::{LeaseSpec, NodeSpec, ReplicaPhase, ReplicaSpec, RestartPolicy, WorkloadSpec};
use api::quantity::{Bytes, Millicores, Resources};
use chrono::Utc;
use futures_util::StreamExt;
use kube::Client;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use api::kinds::NODE_LEASE_NAMESPACE;
use client::resource::{Kube, api_all, api_in, is_conflict, is_not_found};

use crate::run::{LOG_FILE, RESULT_FILE, RunResult, RunSpec, RuntimeKind, SPEC_FILE, read_json, write_json};
use crate::shim::PID_FILE;

/// How often a running replica's usage is reported.
const USAGE_EVERY: Duration = Duration::from_secs(15);
/// When the first usage (and the limits applied) is reported after a start.
const FIRST_USAGE: Duration = Duration::from_secs(1);

/// A marker in a run directory while the replica waits to be started again.
pub const RESTARTING: &str = "restarting";

/// How an agent runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// The Node's name.
    pub node: String,
    /// Where runs (`runs/UID/`) and libcontainer's state (`containers/`) are kept.
    pub state_dir: PathBuf,
    /// Where images (root filesystems) are found by name.
    pub images: PathBuf,
    /// Containers or plain processes.
    pub runtime: RuntimeKind,
    /// The command that runs a shim, before the run directory (`[ui, node, shim]`).
    pub shim: Vec<String>,
    /// The command that runs a program in a replica's container, before the run directory
    /// (`[ui, node, exec]`): exec probes.
    pub exec: Vec<String>,
    /// The Lease's duration; it is renewed every quarter of it.
    pub lease_seconds: u32,
    /// With the process runtime: whose workloads run, besides the operator's.
    pub trusted: Trusted,
    /// The node's age key, which opens the sealed values sealed to the Node's `ageRecipient`
    /// (none: this node opens none, and a replica with one is placed elsewhere).
    pub age_key: Option<AgeKey>,
    /// The limits of a replica whose workload sets none.
    pub default_limits: DefaultLimits,
    /// How OCI images are pulled (mirrors, plain-HTTP registries) and bounded.
    pub registries: crate::registry::Registries,
    /// The replicas' network pool (`--replica-network`; none: the first free default). Containers
    /// only: plain processes share the node's network.
    pub replica_network: Option<crate::network::Net>,
    /// Where the tunnel to other nodes' replicas receives (UDP; the Node advertises it as
    /// `/ip4/…/udp/…/wireguard`). None: replicas here reach no other node's.
    pub tunnel_listen: Option<std::net::SocketAddr>,
}

/// The limits a node gives a replica whose workload asks for no resources (as a Kubernetes
/// LimitRange's defaults): no replica runs without limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DefaultLimits {
    /// CPU in millicores.
    pub cpu_millis: u64,
    /// Memory (and memory with swap) in bytes.
    pub memory_bytes: u64,
}

impl Default for DefaultLimits {
    fn default() -> Self {
        Self { cpu_millis: 1000, memory_bytes: 512 << 20 }
    }
}

/// The node's age identity (never printed).
#[derive(Clone)]
pub struct AgeKey(pub Arc<age::x25519::Identity>);

impl std::fmt::Debug for AgeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("AgeKey").field(&self.0.to_public().to_string()).finish()
    }
}

impl Config {
    fn runs(&self) -> PathBuf {
        self.state_dir.join("runs")
    }

    fn containers(&self) -> PathBuf {
        self.state_dir.join("containers")
    }

    /// The cgroup folder of this node's containers (in every hierarchy).
    pub fn cgroup_parent(&self) -> String {
        format!("/univrs/{}", self.node)
    }

    /// The run directory of a replica.
    pub fn run_dir(&self, uid: &str) -> PathBuf {
        self.runs().join(uid)
    }
}

/// A replica being run.
struct Supervised {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// Runs the agent until `shutdown`. Replicas keep running in their shims when the agent
/// stops; a restarted agent adopts them.
pub async fn run(client: Client, config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    std::fs::create_dir_all(config.runs())?;
    std::fs::create_dir_all(config.containers())?;
    if config.runtime == RuntimeKind::Container {
        // The node's cgroup folder stays while the agent runs, so a container that ends never
        // removes it under one being made.
        crate::cgroup::ensure_folder(&config.cgroup_parent())?;
    }
    // Room for the published ports' connections (the soft limit of open files up to the hard).
    if let Ok((soft, hard)) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard);
    }
    let net = match config.runtime {
        RuntimeKind::Container => {
            let taken = advertised_pools(&client, &config.node).await;
            Some(Arc::new(
                crate::network::Network::open(&config.state_dir, config.replica_network, &taken)
                    .await
                    .map_err(|e| e.context("cannot set up the replicas' network"))?,
            ))
        }
        RuntimeKind::Process => None,
    };
    if let Some(n) = &net {
        tracing::info!(pool = %n.pool(), "replicas' network ready");
    }
    let config = Arc::new(config);
    report_runtime(&client, &config, net.as_deref()).await;
    if let (Some(n), Some(listen), Some(age)) = (&net, config.tunnel_listen, &config.age_key) {
        let device = crate::tunnel::device_name(n.pool());
        // Without it the node still runs replicas; they reach no other node's.
        match crate::tunnel::Tunnel::open(&device, listen, crate::tunnel::static_secret(&age.0)).await {
            Ok(tunnel) => {
                let (plans_tx, plans_rx) = tokio::sync::watch::channel(crate::tunnel::Plan::default());
                let endpoint = tunnel.endpoint();
                tokio::spawn(tunnel.serve(plans_rx, shutdown.clone()));
                tokio::spawn(crate::tunnel::follow(
                    client.clone(),
                    config.node.clone(),
                    n.clone(),
                    (device, endpoint),
                    plans_tx,
                    shutdown.clone(),
                ));
            }
            Err(e) => tracing::warn!(
                error = format!("{e:#}"),
                "no tunnel to other nodes: replicas here reach only this node's replicas of their owner"
            ),
        }
    }
    let heartbeat = tokio::spawn(heartbeat(client.clone(), config.clone(), shutdown.clone()));

    let replicas = api_all::<ReplicaSpec>(&client);
    let watch = watcher::Config::default().fields(&format!("spec.nodeName={}", config.node));
    let (store, writer) = reflector::store::<Kube<ReplicaSpec>>();
    let mut events = Box::pin(
        reflector::reflector(writer, watcher(replicas, watch).default_backoff())
            .applied_objects()
            .map(|_| ()),
    );
    // This node's own Node, for its uid: replicas are bound to one Node object, not to a name
    // (every event counts, its deletion too).
    let own = watcher::Config::default().fields(&format!("metadata.name={}", config.node));
    let (node_store, node_writer) = reflector::store::<Kube<NodeSpec>>();
    let mut node_events = Box::pin(
        reflector::reflector(node_writer, watcher(api_all::<NodeSpec>(&client), own).default_backoff())
            .map(|_| ()),
    );
    let mut supervised: BTreeMap<String, Supervised> = BTreeMap::new();
    let mut adopted = false;
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = events.next() => {}
            _ = node_events.next() => {}
            _ = tick.tick() => {}
        }
        if store.wait_until_ready().now_or_never_ready() && node_store.wait_until_ready().now_or_never_ready()
        {
            let node_uid =
                node_store.state().into_iter().find(|n| n.name() == config.node).map(|n| n.uid().to_owned());
            let wanted = wanted(&config, &store, node_uid.as_deref());
            if !adopted {
                // Only now the bound replicas are known: runs left by an earlier agent are
                // adopted or stopped.
                clean_up_stale(&config, &wanted);
                // Runs still stopping keep their address until their directory goes.
                let runs = config.runs();
                let keep: BTreeSet<String> = wanted.keys().cloned().collect();
                release_addresses(&net, move |id| keep.contains(id) || runs.join(id).exists());
                adopted = true;
            }
            reconcile(&client, &config, &net, wanted, &mut supervised);
        }
    }
    heartbeat.abort();
    // The shims go on; the next agent adopts them.
    for (_, s) in supervised {
        s.task.abort();
    }
    // Empty only if no container is left (the kernel refuses to remove one with children).
    crate::cgroup::remove_empty_parents(&config.cgroup_parent());
    Ok(())
}

/// `Store::wait_until_ready` without waiting.
trait ReadyNow {
    fn now_or_never_ready(self) -> bool;
}

impl<F: std::future::Future<Output = Result<(), reflector::store::WriterDropped>>> ReadyNow for F {
    fn now_or_never_ready(self) -> bool {
        futures_util::FutureExt::now_or_never(self).is_some_and(|r| r.is_ok())
    }
}

/// Whether `replica` is this node's to run: bound to node `node` *and* to its Node object of
/// uid `node_uid` (`None`: no Node of that name now). A replica bound to an earlier Node of the
/// same name (deleted, then registered again, maybe by someone else) is not this node's, nor is
/// one bound without a uid.
pub fn runs_here(replica: &Kube<ReplicaSpec>, node: &str, node_uid: Option<&str>) -> bool {
    replica.spec.node_name.as_deref() == Some(node)
        && node_uid.is_some()
        && replica.spec.node_uid.as_deref() == node_uid
        && !replica.is_deleting()
        // The uid names the run's directory and container: nothing but a uid's characters.
        && crate::run::is_run_id(replica.uid())
}

/// The replicas this node should be running, by uid.
fn wanted(
    config: &Config,
    store: &Store<Kube<ReplicaSpec>>,
    node_uid: Option<&str>,
) -> BTreeMap<String, Arc<Kube<ReplicaSpec>>> {
    store
        .state()
        .into_iter()
        .filter(|r| runs_here(r, &config.node, node_uid))
        .map(|r| (r.uid().to_owned(), r))
        .collect()
}

/// Frees the addresses of runs `keep` says not to keep (in the background).
fn release_addresses(
    net: &Option<Arc<crate::network::Network>>,
    keep: impl Fn(&str) -> bool + Send + 'static,
) {
    if let Some(net) = net.clone() {
        tokio::spawn(async move {
            if let Err(e) = net.retain(keep).await {
                tracing::warn!(error = %e, "cannot update the replicas' network");
            }
        });
    }
}

fn reconcile(
    client: &Client,
    config: &Arc<Config>,
    net: &Option<Arc<crate::network::Network>>,
    wanted: BTreeMap<String, Arc<Kube<ReplicaSpec>>>,
    supervised: &mut BTreeMap<String, Supervised>,
) {
    crate::metrics::metrics().keep_only(|uid| wanted.contains_key(uid));
    // Gone, deleted, bound elsewhere or to an earlier Node of this name: stop it.
    let unwanted: Vec<String> = supervised.keys().filter(|uid| !wanted.contains_key(*uid)).cloned().collect();
    for uid in unwanted {
        if let Some(s) = supervised.remove(&uid) {
            tracing::info!(%uid, "replica no longer bound here: stopping it");
            s.stop.cancel();
            let dir = config.run_dir(&uid);
            let net = net.clone();
            tokio::spawn(async move {
                let _ = s.task.await;
                let _ = tokio::fs::remove_dir_all(dir).await;
                // Its address only once it has stopped: no one else gets it while it runs.
                release_addresses(&net, move |id| id != uid);
            });
        }
    }
    for (uid, replica) in wanted {
        if supervised.contains_key(&uid) {
            continue;
        }
        let finished = replica.status.as_ref().is_some_and(|s| s.phase.is_terminal());
        if finished {
            continue;
        }
        let stop = CancellationToken::new();
        let task =
            tokio::spawn(supervise(client.clone(), config.clone(), net.clone(), replica, stop.clone()));
        supervised.insert(uid, Supervised { stop, task });
    }
}

/// Runs left in `runs/` by an earlier agent: those of replicas no longer bound here are stopped
/// and removed, and so are containers without a shim (their shim was killed).
fn clean_up_stale(config: &Config, wanted: &BTreeMap<String, Arc<Kube<ReplicaSpec>>>) {
    clean_up_stale_in(&config.runs(), &config.containers(), wanted);
}

/// [`clean_up_stale`] of the runs in `runs` and the containers in `containers`.
fn clean_up_stale_in(runs: &Path, containers: &Path, wanted: &BTreeMap<String, Arc<Kube<ReplicaSpec>>>) {
    let Ok(dir) = std::fs::read_dir(runs) else { return };
    // Containers with a live shim are its to stop; the others are orphans.
    let mut live_ids = BTreeSet::new();
    for entry in dir.flatten() {
        let uid = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        let shim = live_shim(&path);
        if shim.is_some() {
            live_ids.insert(uid.clone());
        }
        if wanted.contains_key(&uid) {
            continue;
        }
        if let Some(pid) = shim {
            tracing::info!(%uid, pid, "stopping the run of a replica no longer bound here");
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
            continue; // its directory goes once the shim has ended, at the next start
        }
        let _ = std::fs::remove_dir_all(&path);
    }
    // Containers whose shim is gone are orphans: nothing waits for them.
    if let Ok(dir) = std::fs::read_dir(containers) {
        for entry in dir.flatten() {
            let id = entry.file_name().to_string_lossy().into_owned();
            if live_ids.contains(&id) {
                continue;
            }
            tracing::info!(%id, "removing an orphaned container");
            stop_container(containers, &id);
        }
    }
}

/// What a node runs, seen on the machine itself (not through the API).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LocalRuns {
    /// Runs with a live shim.
    pub supervised: usize,
    /// Containers without a live shim (a lost shim's, until the agent stops them).
    pub unsupervised: usize,
    /// Processes in the node's cgroups: every process of every container.
    pub processes: usize,
}

/// What the node named `node` whose state is in `state_dir` runs on this machine.
pub fn local_runs(state_dir: &Path, node: &str) -> LocalRuns {
    let runs = state_dir.join("runs");
    let live: BTreeSet<String> = std::fs::read_dir(&runs)
        .map(|d| {
            d.flatten()
                .filter(|e| live_shim(&e.path()).is_some())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let unsupervised = std::fs::read_dir(state_dir.join("containers"))
        .map(|d| d.flatten().filter(|e| !live.contains(&*e.file_name().to_string_lossy())).count())
        .unwrap_or(0);
    LocalRuns {
        supervised: live.len(),
        unsupervised,
        processes: crate::cgroup::processes(&format!("/univrs/{node}")),
    }
}

/// How many runs of the node whose state is in `state_dir` have a live shim.
pub fn running_runs(state_dir: &Path) -> usize {
    std::fs::read_dir(state_dir.join("runs"))
        .map(|d| d.flatten().filter(|e| live_shim(&e.path()).is_some()).count())
        .unwrap_or(0)
}

/// Stops every run of the node whose state is in `state_dir` (each shim stops its container,
/// then ends), waits up to `timeout` for the shims to go, and removes the containers left
/// without one. For `ui down` and a stopping `ui up`: nothing of the node keeps running.
/// Returns how many runs were stopped.
pub fn stop_all_runs(state_dir: &Path, timeout: Duration) -> usize {
    let runs = state_dir.join("runs");
    let shims: Vec<i32> = std::fs::read_dir(&runs)
        .map(|d| d.flatten().filter_map(|e| live_shim(&e.path())).collect())
        .unwrap_or_default();
    for pid in &shims {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid), nix::sys::signal::Signal::SIGTERM);
    }
    let deadline = std::time::Instant::now() + timeout;
    while shims.iter().any(|pid| {
        let proc = PathBuf::from(format!("/proc/{pid}"));
        proc.exists() && !is_zombie(&proc)
    }) && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    // What is left: runs whose shim is gone, and containers without one.
    clean_up_stale_in(&runs, &state_dir.join("containers"), &BTreeMap::new());
    shims.len()
}

/// The pid of the shim still running for the run in `dir`, if any.
pub(crate) fn live_shim(dir: &Path) -> Option<i32> {
    let pid: u32 = read_json(dir, PID_FILE).ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let dir = dir.to_string_lossy();
    let is_ours = cmdline.split(|b| *b == 0).any(|arg| arg == dir.as_bytes());
    is_ours.then_some(pid as i32)
}

/// Keeps the node's Lease renewed until `shutdown`.
async fn heartbeat(client: Client, config: Arc<Config>, shutdown: CancellationToken) {
    let leases = api_in::<LeaseSpec>(&client, NODE_LEASE_NAMESPACE);
    let every = Duration::from_millis(u64::from(config.lease_seconds) * 250).max(Duration::from_millis(250));
    loop {
        let now = api::meta::Time(Utc::now());
        let patch = json!({ "spec": {
            "holderIdentity": config.node,
            "leaseDurationSeconds": config.lease_seconds,
            "renewTime": now,
        }});
        match leases.patch(&config.node, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {
                let lease: Kube<LeaseSpec> = serde_json::from_value(json!({
                    "apiVersion": "univrs.io/v1", "kind": "Lease",
                    "metadata": { "name": config.node, "namespace": NODE_LEASE_NAMESPACE },
                    "spec": patch["spec"],
                }))
                .expect("a lease is well formed");
                if let Err(e) = leases.create(&PostParams::default(), &lease).await
                    && !is_conflict(&e)
                {
                    tracing::warn!(error = %e, "cannot create the node lease");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot renew the node lease"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

/// The replica networks other Nodes advertise (none when they cannot be read: the pool is
/// then chosen on this machine alone).
async fn advertised_pools(client: &Client, me: &str) -> Vec<crate::network::Net> {
    match api_all::<NodeSpec>(client).list(&kube::api::ListParams::default()).await {
        Ok(nodes) => nodes
            .into_iter()
            .filter(|n| n.name() != me)
            .filter_map(|n| n.status.and_then(|s| s.replica_network)?.parse().ok())
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the other nodes' replica networks");
            Vec::new()
        }
    }
}

/// Writes `status.runtime` and `status.replicaNetwork` of the Node (the conditions are the
/// node lifecycle controller's).
async fn report_runtime(client: &Client, config: &Config, net: Option<&crate::network::Network>) {
    let nodes = api_all::<NodeSpec>(client);
    let patch = json!({ "status": {
        "runtime": config.runtime.as_str(),
        "replicaNetwork": net.map(|n| n.pool().to_string()),
    } });
    if let Err(e) = nodes.patch_status(&config.node, &PatchParams::default(), &Patch::Merge(&patch)).await {
        tracing::warn!(node = config.node, error = %e, "cannot report the node's runtime");
    }
}

/// Writes a replica's status (merge patch: `null` clears a field).
async fn set_status(client: &Client, replica: &Kube<ReplicaSpec>, status: Value) -> Result<(), kube::Error> {
    let api = api_in::<ReplicaSpec>(client, replica.namespace().unwrap_or("default"));
    match api
        .patch_status(replica.name(), &PatchParams::default(), &Patch::Merge(&json!({ "status": status })))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Retries a status write until it lands or the run is stopped.
async fn report(client: &Client, replica: &Kube<ReplicaSpec>, status: Value, stop: &CancellationToken) {
    // A run being stopped (its replica gone from here) is no longer counted.
    if let Some(phase) = status
        .get("phase")
        .and_then(|p| serde_json::from_value::<ReplicaPhase>(p.clone()).ok())
        .filter(|_| !stop.is_cancelled())
    {
        crate::metrics::metrics().phase(replica.uid(), phase);
    }
    let mut failures = 0;
    while let Err(e) = set_status(client, replica, status.clone()).await {
        failures += 1;
        tracing::warn!(replica = replica.name(), error = %e, "cannot write the replica's status");
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(client::retry::backoff(failures)) => {}
        }
    }
}

fn time(t: Option<chrono::DateTime<Utc>>) -> Value {
    t.map_or(Value::Null, |t| json!(api::meta::Time(t)))
}

/// What a finished run measured, as `status.usage`: average CPU over the run and peak memory.
fn usage(result: &RunResult) -> Value {
    let mut usage = Resources::default();
    if let (Some(nanos), Some(start), Some(end)) = (result.cpu_nanos, result.started_at, result.finished_at) {
        let wall = (end - start).num_nanoseconds().unwrap_or(0).max(1) as u128;
        usage.cpu = Some(Millicores((u128::from(nanos) * 1000 / wall) as u64).to_quantity());
    }
    usage.memory = result.peak_memory_bytes.map(|b| Bytes(b).to_quantity());
    if usage.cpu.is_none() && usage.memory.is_none() { Value::Null } else { json!(usage) }
}

/// Whether a run that ended with `result` is started again under `policy`.
pub fn restarts_after(policy: RestartPolicy, result: &RunResult) -> bool {
    match policy {
        RestartPolicy::Always => true,
        RestartPolicy::OnFailure => !result.succeeded(),
        RestartPolicy::Never => false,
    }
}

/// The wait before restart number `n` (1, 2, 4 … 30 s; from the start again after a run of a
/// minute or more).
fn restart_delay(n: u32) -> Duration {
    Duration::from_secs(1u64 << n.saturating_sub(1).min(5)).min(Duration::from_secs(30))
}

/// What an earlier agent left of a replica's run.
enum Left {
    /// Its shim still runs (pid).
    Running(i32),
    /// It ended, unreported.
    Ended(RunResult),
    /// Nothing to take over.
    Nothing,
}

/// Whether this node runs `replica` as a plain process on its host: only for the workloads of
/// signers its operator trusts (the operator and `Config::trusted`), since a plain process
/// has the agent's rights on the machine.
async fn may_run_as_process(
    client: &Client,
    config: &Config,
    replica: &Kube<ReplicaSpec>,
) -> Result<(), String> {
    let ns = replica.namespace().unwrap_or("default");
    let workload = api_in::<WorkloadSpec>(client, ns)
        .get(&replica.spec.workload)
        .await
        .map_err(|e| format!("cannot read workload {ns}/{}: {e}", replica.spec.workload))?;
    let owned = replica.metadata.owner_references.iter().flatten().any(|o| o.uid == workload.uid());
    let signer = workload.signer().filter(|_| owned).unwrap_or_default().to_owned();
    let operator = api_all::<NodeSpec>(client)
        .get(&config.node)
        .await
        .map(|n| n.spec.operator.as_str().to_owned())
        .unwrap_or_default();
    if !signer.is_empty() && (signer == operator || (config.trusted.0)().contains(&signer)) {
        return Ok(());
    }
    Err(format!(
        "node {} runs replicas as plain processes on its host (no isolation), only for workloads of its operator or of signers it trusts; {} is not one",
        config.node,
        if signer.is_empty() { "this workload's signer" } else { &signer }
    ))
}

/// Signers whose workloads a plain-process node runs besides its operator's (read each time:
/// `ui up` trusts the user's identity, which may be made after it started).
#[derive(Clone)]
pub struct Trusted(pub Arc<dyn Fn() -> Vec<String> + Send + Sync>);

impl std::fmt::Debug for Trusted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Trusted").field(&(self.0)()).finish()
    }
}

/// Runs one replica, run after run, until it is finished (by its restart policy) or `stop`.
async fn supervise(
    client: Client,
    config: Arc<Config>,
    net: Option<Arc<crate::network::Network>>,
    replica: Arc<Kube<ReplicaSpec>>,
    stop: CancellationToken,
) {
    // The node's side of its published ports, open while it is supervised here.
    let mut published: Option<crate::publish::Published> = None;
    // How often, and why, it waited for a host port held on the node.
    let (mut port_waits, mut last_wait) = (0u32, None::<String>);
    let dir = config.run_dir(replica.uid());
    let events = crate::events::recorder(&client, &config.node);
    let container = replica.spec.container.clone();
    let mut restarts = replica.status.as_ref().map_or(0, |s| s.restarts);
    // The image digest a tag resolved to at the first pull: every run of this replica uses it.
    let mut image_id = replica.status.as_ref().and_then(|s| s.image_id.clone());
    let mut backoff = 0u32;
    // What an earlier agent left: a shim still running is adopted (its run goes on); a run
    // that ended while no agent was there is taken as it ended (never run twice), unless it
    // was already reported and waiting to be started again.
    let mut left = match live_shim(&dir) {
        Some(pid) => Left::Running(pid),
        None if !dir.join(RESTARTING).exists() => {
            read_json::<RunResult>(&dir, RESULT_FILE).map_or(Left::Nothing, Left::Ended)
        }
        None => Left::Nothing,
    };
    if config.runtime == RuntimeKind::Process
        && let Err(message) = may_run_as_process(&client, &config, &replica).await
    {
        crate::metrics::metrics().start_failed("UntrustedSigner");
        tracing::info!(namespace = ns_of(&replica), "will not run replica {}: {message}", replica.name());
        let status = json!({ "phase": ReplicaPhase::Failed, "reason": "UntrustedSigner", "message": message,
            "finishedAt": time(Some(Utc::now())) });
        report(&client, &replica, status, &stop).await;
        return;
    }
    loop {
        let outcome = match std::mem::replace(&mut left, Left::Nothing) {
            Left::Running(pid) => {
                tracing::info!(
                    namespace = ns_of(&replica),
                    "adopting replica {} (pid {pid}), still running",
                    replica.name()
                );
                crate::metrics::metrics().phase(replica.uid(), ReplicaPhase::Running);
                match read_json::<RunSpec>(&dir, SPEC_FILE) {
                    Ok(spec) => {
                        if let Some(ip) = spec.network.as_ref().map(|n| n.ip) {
                            match crate::publish::publish(&spec.ports, ip).await {
                                Ok(p) => published = Some(p),
                                Err(e) => {
                                    tracing::warn!(
                                        namespace = ns_of(&replica),
                                        "replica {}: {e}",
                                        replica.name()
                                    )
                                }
                            }
                        }
                        // Probed, measured and reported as a run this agent started.
                        let adopted = Shim::Adopted(pid);
                        match watch(
                            &client, &events, &config, &replica, &dir, &spec, restarts, &stop, adopted,
                        )
                        .await
                        {
                            Some(result) => result,
                            None => return, // stopped
                        }
                    }
                    // A run whose run.json cannot be read: waited for only.
                    Err(_) => {
                        wait_for_pid(pid, &stop).await;
                        if stop.is_cancelled() {
                            stop_pid(pid).await;
                            return;
                        }
                        match read_json::<RunResult>(&dir, RESULT_FILE) {
                            Ok(result) => result,
                            Err(_) => shim_lost(&config, &dir, replica.uid()).await,
                        }
                    }
                }
            }
            Left::Ended(result) => result,
            Left::Nothing => {
                if image_id.is_none() {
                    crate::events::pulling(&events, &config, &replica).await;
                }
                let pulled =
                    crate::images::resolve_for_run(&config, &replica, &mut image_id, &stop, |status| {
                        let (events, replica, client, stop) = (&events, &replica, &client, &stop);
                        Box::pin(async move {
                            crate::events::image(events, replica, &status).await;
                            report(client, replica, status, stop).await
                        })
                    });
                let Some(image) = pulled.await else { return }; // stopped
                let prepared = match image.and_then(|image| prepare(&config, &replica, &container, &image)) {
                    Ok(spec) => connect(net.as_deref(), &replica, &dir, spec, &mut published).await,
                    Err(e) => Err(e),
                };
                let spec = match prepared {
                    Ok(spec) => spec,
                    // Held by something else on the node now (often a replica of this node
                    // still stopping): it waits, saying why, and tries again.
                    Err((reason @ HOST_PORT_IN_USE, message)) => {
                        // Said once (and again if it changes); tried again after 2 s, doubling
                        // to a minute.
                        if port_waits == 0 || last_wait.as_deref() != Some(message.as_str()) {
                            tracing::info!(
                                namespace = ns_of(&replica),
                                "replica {} waits: {message}",
                                replica.name()
                            );
                            let status = json!({ "phase": ReplicaPhase::Pending, "reason": reason, "message": message });
                            report(&client, &replica, status, &stop).await;
                        }
                        let delay =
                            Duration::from_secs(2u64 << port_waits.min(5)).min(Duration::from_secs(60));
                        port_waits += 1;
                        last_wait = Some(message);
                        tokio::select! {
                            () = stop.cancelled() => return,
                            () = tokio::time::sleep(delay) => {}
                        }
                        continue;
                    }
                    Err((reason, message)) => {
                        crate::metrics::metrics().start_failed(reason);
                        tracing::info!(
                            namespace = ns_of(&replica),
                            "cannot run replica {}: {message}",
                            replica.name()
                        );
                        crate::events::warn(
                            &events,
                            &replica,
                            "Failed",
                            "Start",
                            &format!("{reason}: {message}"),
                        )
                        .await;
                        let status = json!({ "phase": ReplicaPhase::Failed, "reason": reason, "message": message,
                            "finishedAt": time(Some(Utc::now())) });
                        report(&client, &replica, status, &stop).await;
                        return;
                    }
                };
                match run_once(&client, &events, &config, &replica, &dir, &spec, restarts, &stop).await {
                    Some(result) => result,
                    None => return, // stopped
                }
            }
        };
        crate::metrics::metrics().exited(outcome.reason());
        let ran_long = match (outcome.started_at, outcome.finished_at) {
            (Some(s), Some(e)) => (e - s) >= chrono::Duration::minutes(1),
            _ => false,
        };
        if ran_long {
            backoff = 0;
        }
        let base = json!({
            "exitCode": outcome.exit_code,
            "reason": outcome.reason(),
            "finishedAt": time(outcome.finished_at),
            "usage": usage(&outcome),
        });
        if restarts_after(container.restart_policy, &outcome) {
            backoff += 1;
            restarts += 1;
            let delay = restart_delay(backoff);
            let mut status = base;
            status["phase"] = json!(ReplicaPhase::Running);
            status["restarts"] = json!(restarts);
            // As the kubelet: waiting to be started again is CrashLoopBackOff, with how the
            // last run ended beside it; the replica is not ready meanwhile.
            status["reason"] = json!(api::kinds::CRASH_LOOP_BACK_OFF);
            status["lastExitReason"] = json!(outcome.reason());
            status["message"] = json!(format!(
                "back-off {} s restarting: {} ({}); restartPolicy {:?}, restart {restarts}",
                delay.as_secs(),
                describe(&outcome),
                outcome.reason(),
                container.restart_policy
            ));
            status["conditions"] = conditions(
                &replica,
                &config,
                false,
                api::kinds::CRASH_LOOP_BACK_OFF,
                "waiting to be started again",
                Utc::now(),
            );
            // Tells a following `ui logs -f` that more output is to come (before the status, so
            // no reader sees the run ended without it).
            let _ = std::fs::write(dir.join(RESTARTING), b"");
            tracing::info!(
                namespace = ns_of(&replica),
                "replica {}: {}",
                replica.name(),
                status["message"].as_str().unwrap_or_default()
            );
            let note = format!(
                "Back-off restarting failed container: {}",
                status["message"].as_str().unwrap_or_default()
            );
            report(&client, &replica, status, &stop).await;
            crate::events::warn(&events, &replica, "BackOff", "Restart", &note).await;
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
            continue;
        }
        let mut status = base;
        status["phase"] =
            json!(if outcome.succeeded() { ReplicaPhase::Succeeded } else { ReplicaPhase::Failed });
        status["message"] = json!(describe(&outcome));
        status["lastExitReason"] = json!(outcome.reason());
        status["conditions"] =
            conditions(&replica, &config, false, outcome.reason(), "the run ended", Utc::now());
        tracing::info!(
            namespace = ns_of(&replica),
            "replica {} {}: {}",
            replica.name(),
            if outcome.succeeded() { "succeeded" } else { "failed" },
            describe(&outcome)
        );
        report(&client, &replica, status, &stop).await;
        return;
    }
}

fn ns_of(replica: &Kube<ReplicaSpec>) -> &str {
    replica.namespace().unwrap_or("default")
}

fn failed(message: &str) -> RunResult {
    RunResult { finished_at: Some(Utc::now()), error: Some(message.to_owned()), ..RunResult::default() }
}

fn describe(r: &RunResult) -> String {
    if let Some(e) = &r.error {
        return format!("could not run: {e}");
    }
    if let Some(why) = &r.killed {
        return format!("killed: {why}");
    }
    match (r.oom_killed, r.signal, r.exit_code) {
        (true, _, _) => "killed by the kernel: the memory limit was exceeded".to_owned(),
        (false, Some(sig), _) => format!("ended by signal {sig}"),
        (false, None, Some(code)) => format!("exited with code {code}"),
        _ => "ended".to_owned(),
    }
}

/// Where the sealed values of `replica` may be opened: its namespace, its workload and the
/// workload's signer (the payer the workload controller wrote on the replica when it made it).
pub fn binding_of(replica: &Kube<ReplicaSpec>) -> api::sealed::Binding {
    api::sealed::Binding {
        namespace: ns_of(replica).to_owned(),
        workload: replica.spec.workload.clone(),
        owner: replica
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(api::kinds::PAYER_ANNOTATION))
            .cloned()
            .unwrap_or_else(|| "nobody".to_owned()),
    }
}

/// Opens the sealed value of `var` with `key` for `replica`, or says why not: the reason
/// [`api::sealed::NOT_OPENED_REASON`] when this node cannot (no key, not sealed to it,
/// damaged: another node may), [`api::sealed::MISMATCH_REASON`] when it was sealed for another
/// workload or owner (no node may). The message names the node, the variable and both
/// bindings, never the value.
pub fn open_sealed(
    node: &str,
    key: Option<&AgeKey>,
    replica: &Kube<ReplicaSpec>,
    var: &str,
    sealed: &str,
) -> Result<zeroize::Zeroizing<String>, (&'static str, String)> {
    use api::sealed::OpenError;
    match api::sealed::open(sealed, key.map(|k| k.0.as_ref()), &binding_of(replica)) {
        Ok(opened) => Ok(opened.value),
        Err(OpenError::NotForThisKey) if key.is_none() => Err((
            api::sealed::NOT_OPENED_REASON,
            format!(
                "env {var}: node {node} has no age key to open sealed values; placing the replica elsewhere"
            ),
        )),
        Err(e @ OpenError::Mismatch { .. }) => Err((
            api::sealed::MISMATCH_REASON,
            format!("env {var}: the sealed value cannot be used here: {e}"),
        )),
        Err(e) => Err((
            api::sealed::NOT_OPENED_REASON,
            format!(
                "env {var}: node {node} cannot open the sealed value ({e}); placing the replica elsewhere"
            ),
        )),
    }
}

/// The run of a replica: image, command, environment and limits, or why it cannot run.
fn prepare(
    config: &Config,
    replica: &Kube<ReplicaSpec>,
    c: &api::kinds::ContainerSpec,
    image: &crate::images::Resolved,
) -> Result<RunSpec, (&'static str, String)> {
    let argv = image.argv(c);
    if argv.is_empty() {
        return Err((
            "NoCommand",
            "the workload has no command and its image none: set spec.command".to_owned(),
        ));
    }
    let mut env = image.env(c);
    for var in &c.env {
        match (&var.value, &var.sealed) {
            (Some(v), _) => env.push((var.name.clone(), v.clone())),
            (None, Some(sealed)) => {
                let value = open_sealed(&config.node, config.age_key.as_ref(), replica, &var.name, sealed)?;
                env.push((var.name.clone(), value.as_str().to_owned()));
            }
            (None, None) => env.push((var.name.clone(), String::new())),
        }
    }
    let rootfs = image.rootfs.clone();
    let cpu = c.resources.cpu.as_ref().and_then(|q| q.millicores().ok()).map(|m| m.0);
    let memory = c.resources.memory.as_ref().and_then(|q| q.bytes().ok()).map(|b| b.0);
    Ok(RunSpec {
        id: replica.uid().to_owned(),
        runtime: config.runtime,
        rootfs,
        argv,
        env,
        hostname: replica.name().chars().take(63).collect(),
        // A workload that asks for nothing gets the node's defaults, never no limit.
        cpu_millis: Some(cpu.filter(|m| *m > 0).unwrap_or(config.default_limits.cpu_millis)),
        memory_bytes: Some(memory.filter(|b| *b > 0).unwrap_or(config.default_limits.memory_bytes)),
        cgroup: format!("{}/{}", config.cgroup_parent(), replica.uid()),
        state_root: config.containers(),
        network: None,
        ports: Vec::new(),
        id_base: None,
        cwd: Some(image.cwd()),
        owner: Some(binding_of(replica).owner),
        user: Some(image.user().map_err(|e| ("ImageUserUnknown", e))?),
    })
}

/// The reason of a replica waiting for a host port it publishes, held by another process.
const HOST_PORT_IN_USE: &str = "HostPortInUse";

/// Gives a run its address (the same across restarts) and opens its published ports, or says
/// why not.
async fn connect(
    net: Option<&crate::network::Network>,
    replica: &Kube<ReplicaSpec>,
    run_dir: &Path,
    mut spec: RunSpec,
    published: &mut Option<crate::publish::Published>,
) -> Result<RunSpec, (&'static str, String)> {
    spec.ports = replica.spec.container.ports.clone();
    if spec.runtime == RuntimeKind::Container {
        let (id, dir) = (replica.uid().to_owned(), run_dir.to_owned());
        // The run directory first: a claim whose directory is missing counts as stale.
        let claimed = tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir)?;
            crate::ids::claim(&id, &dir)
        })
        .await;
        spec.id_base = Some(claimed.map_err(std::io::Error::other).and_then(|r| r).map_err(|e| {
            ("UserNamespaceUnavailable", format!("cannot give the replica a user id range: {e}"))
        })?);
    }
    let ip = match net {
        Some(net) => {
            let want = crate::network::Lease {
                owner: binding_of(replica).owner,
                namespace: ns_of(replica).to_owned(),
                workload: replica.spec.workload.clone(),
                replica: replica.name().to_owned(),
                ip: std::net::Ipv4Addr::UNSPECIFIED,
            };
            let attached = net
                .attach(replica.uid(), want)
                .await
                .map_err(|e| ("NetworkUnavailable", format!("cannot give the replica a network: {e:#}")))?;
            let ip = attached.ip;
            spec.network = Some(attached);
            ip
        }
        // A plain process listens on the node itself.
        None => std::net::Ipv4Addr::LOCALHOST,
    };
    if published.is_none() {
        // A plain process that listens on its host port itself needs no relay.
        let relayed: Vec<_> = if net.is_some() {
            spec.ports.clone()
        } else {
            spec.ports.iter().filter(|p| p.host_port != Some(p.container_port)).cloned().collect()
        };
        *published = Some(crate::publish::publish(&relayed, ip).await.map_err(|e| (HOST_PORT_IN_USE, e))?);
    }
    Ok(spec)
}

/// Starts one run and waits for it. `None` when it was stopped (the replica went away).
#[allow(clippy::too_many_arguments)]
async fn run_once(
    client: &Client,
    events: &client::events::Recorder,
    config: &Config,
    replica: &Kube<ReplicaSpec>,
    dir: &Path,
    spec: &RunSpec,
    restarts: u32,
    stop: &CancellationToken,
) -> Option<RunResult> {
    let asked = std::time::Instant::now();
    let started = async {
        tokio::fs::create_dir_all(dir).await?;
        let _ = tokio::fs::remove_file(dir.join(RESULT_FILE)).await;
        // The probes of this run wait for its own container's pid.
        let _ = tokio::fs::remove_file(dir.join(crate::shim::CONTAINER_PID_FILE)).await;
        let _ = tokio::fs::remove_file(dir.join(RESTARTING)).await;
        write_json(dir, SPEC_FILE, spec)?;
        let shim_log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("shim.log"))?;
        let (program, args) = config.shim.split_first().expect("the shim command is set");
        tokio::process::Command::new(program)
            .args(args)
            .arg(dir)
            .stdin(std::process::Stdio::null())
            .stdout(shim_log.try_clone()?)
            .stderr(shim_log)
            // The shim must outlive the agent: its own process group, so a ^C to the agent's
            // terminal does not reach it.
            .process_group(0)
            .spawn()
    };
    let child = match started.await {
        Ok(child) => child,
        Err(e) => {
            crate::metrics::metrics().start_failed("ShimFailed");
            return Some(failed(&format!("cannot start the shim: {e}")));
        }
    };
    crate::metrics::metrics().started(asked.elapsed());
    tracing::info!(
        namespace = ns_of(replica),
        "started replica {} on node {} ({}, restart {restarts})",
        replica.name(),
        config.node,
        match spec.runtime {
            RuntimeKind::Container => "container",
            RuntimeKind::Process => "plain process",
        }
    );
    watch(client, events, config, replica, dir, spec, restarts, stop, Shim::Child(child)).await
}

/// The shim of a run: the agent's child, or one an earlier agent started (adopted).
enum Shim {
    Child(tokio::process::Child),
    Adopted(i32),
}

impl Shim {
    fn pid(&self) -> Option<i32> {
        match self {
            Self::Child(c) => c.id().map(|p| p as i32),
            Self::Adopted(pid) => Some(*pid),
        }
    }

    /// Until it ends.
    async fn wait(&mut self) -> std::io::Result<()> {
        match self {
            Self::Child(c) => c.wait().await.map(drop),
            Self::Adopted(pid) => {
                wait_for_pid(*pid, &CancellationToken::new()).await;
                Ok(())
            }
        }
    }
}

/// Watches a started run to its end: reports it running, runs its probes and acts on them,
/// measures and reports its usage. `None` when it was stopped (the replica went away).
#[allow(clippy::too_many_arguments)]
async fn watch(
    client: &Client,
    events: &client::events::Recorder,
    config: &Config,
    replica: &Kube<ReplicaSpec>,
    dir: &Path,
    spec: &RunSpec,
    restarts: u32,
    stop: &CancellationToken,
    mut shim: Shim,
) -> Option<RunResult> {
    // An adopted run started when its replica's status says, not now.
    let started_at = match shim {
        Shim::Adopted(_) => {
            replica.status.as_ref().and_then(|s| s.started_at.as_ref()).map_or_else(Utc::now, |t| t.0)
        }
        Shim::Child(_) => Utc::now(),
    };
    // Ready at once without a readiness probe; with one, once it passes.
    let c = &replica.spec.container;
    let mut ready = c.readiness_probe.is_none();
    let not_ready_yet = ("ContainersNotReady", "the readiness probe has not passed yet".to_owned());
    let mut readiness = if ready { ("Started", "running".to_owned()) } else { not_ready_yet };
    let mut since = Utc::now();
    let status = json!({
        "phase": ReplicaPhase::Running, "restarts": restarts, "startedAt": time(Some(started_at)),
        "exitCode": null, "reason": null, "finishedAt": null,
        "podIP": spec.network.as_ref().map(|n| n.ip.to_string()),
        "publishedPorts": spec.ports.iter().filter(|p| p.host_port.is_some()).map(|p| p.describe()).collect::<Vec<_>>(),
        "message": format!("running in a {} on {}", match spec.runtime {
            RuntimeKind::Container => "container",
            RuntimeKind::Process => "plain process (no isolation, no limits)",
        }, config.node),
        "conditions": conditions(replica, config, ready, readiness.0, &readiness.1, since),
    });
    report(client, replica, status, stop).await;
    // An adopted run started long ago: only a run started now is said to have.
    if matches!(shim, Shim::Child(_)) {
        let note = format!("Started container on node {} (restart {restarts})", config.node);
        crate::events::normal(events, replica, "Started", "Start", &note).await;
    }
    // The probes, each a task sending what changed.
    let (probe_tx, mut probe_rx) = tokio::sync::mpsc::channel::<(ProbeKind, bool, String)>(8);
    let target = match spec.runtime {
        RuntimeKind::Container => None, // known once the shim wrote the container's pid
        RuntimeKind::Process => Some(crate::probe::Target::Host),
    };
    let exec = crate::probe::exec_prefix(&config.exec, dir);
    let mut probes = Vec::new();
    for (kind, probe) in
        [(ProbeKind::Liveness, &c.liveness_probe), (ProbeKind::Readiness, &c.readiness_probe)]
    {
        if let Some(probe) = probe.clone() {
            let (dir, target, exec, tx) = (dir.to_owned(), target.clone(), exec.clone(), probe_tx.clone());
            probes.push(AbortOnDrop(tokio::spawn(probe_loop(kind, probe, dir, target, exec, tx))));
        }
    }
    drop(probe_tx);
    let mut killed: Option<String> = None;
    // While it runs, what it uses is measured and reported now and then (for the honesty of
    // the offer: resources delivered against resources asked for).
    // The first soon after the start: the limits applied are known at once.
    let mut measure = tokio::time::interval_at(tokio::time::Instant::now() + FIRST_USAGE, USAGE_EVERY);
    loop {
        tokio::select! {
            exit = shim.wait() => {
                if let Err(e) = exit {
                    return Some(failed(&format!("cannot wait for the shim: {e}")));
                }
                break;
            }
            () = stop.cancelled() => {
                if let Some(pid) = shim.pid() {
                    stop_pid(pid).await;
                }
                let _ = shim.wait().await;
                return None;
            }
            Some((kind, passing, message)) = probe_rx.recv() => {
                match kind {
                    ProbeKind::Readiness => {
                        ready = passing;
                        since = Utc::now();
                        readiness = if passing { ("Started", "the readiness probe passed".to_owned()) }
                            else { ("ContainersNotReady", format!("readiness probe failed: {message}")) };
                        tracing::info!(namespace = ns_of(replica), "replica {}: {}", replica.name(), readiness.1);
                        if !passing {
                            let note = format!("Readiness probe failed: {message}");
                            crate::events::warn(events, replica, "Unhealthy", "Probe", &note).await;
                        }
                        let status = json!({ "conditions": conditions(replica, config, ready, readiness.0, &readiness.1, since) });
                        report(client, replica, status, stop).await;
                    }
                    ProbeKind::Liveness if !passing && killed.is_none() => {
                        let why = format!("{}: {message}", crate::run::LIVENESS_FAILED);
                        tracing::info!(namespace = ns_of(replica), "replica {}: {why}; stopping it", replica.name());
                        killed = Some(why);
                        if let Some(pid) = shim.pid() {
                            let _ = nix::sys::signal::kill(
                                nix::unistd::Pid::from_raw(pid),
                                nix::sys::signal::Signal::SIGTERM,
                            );
                        }
                        // Said after the kill: a slow apiserver never delays it.
                        let note = format!("Liveness probe failed: {message}");
                        crate::events::warn(events, replica, "Unhealthy", "Probe", &note).await;
                        let note = "Stopping container: it failed its liveness probe, it will be restarted by its policy";
                        crate::events::normal(events, replica, "Killing", "Kill", note).await;
                    }
                    ProbeKind::Liveness => {}
                }
            }
            _ = measure.tick(), if spec.runtime == RuntimeKind::Container => {
                let u = crate::cgroup::usage(&spec.cgroup);
                let so_far = RunResult {
                    started_at: Some(started_at),
                    finished_at: Some(Utc::now()),
                    peak_memory_bytes: u.peak_memory_bytes,
                    cpu_nanos: u.cpu_nanos,
                    ..RunResult::default()
                };
                let l = crate::cgroup::limits(&spec.cgroup);
                let limits = Resources {
                    cpu: l.cpu_millicores.map(|m| Millicores(m).to_quantity()),
                    memory: l.memory_bytes.map(|b| Bytes(b).to_quantity()),
                    storage: None,
                };
                // The Ready condition again: the scheduler's Scheduled condition, written
                // when it bound the replica, may have replaced it (a merge patch replaces lists).
                let status = json!({ "usage": usage(&so_far), "limits": limits,
                    "conditions": conditions(replica, config, ready, readiness.0, &readiness.1, since) });
                if let Err(e) = set_status(client, replica, status).await {
                    tracing::debug!(error = %e, "cannot report usage");
                }
            }
        }
    }
    drop(probes);
    let mut result = match read_json::<RunResult>(dir, RESULT_FILE) {
        Ok(result) => result,
        Err(_) => shim_lost(config, dir, replica.uid()).await,
    };
    result.killed = killed.or(result.killed);
    Some(result)
}

/// A run whose shim ended without writing its result (killed, or chosen by the OOM killer):
/// its container, which nobody watches now, is stopped at once, and the run ends as failed
/// (restarted by its policy). Nothing of a replica runs unsupervised.
async fn shim_lost(config: &Config, dir: &Path, id: &str) -> RunResult {
    let log = std::fs::read_to_string(dir.join("shim.log")).unwrap_or_default();
    let last = log.lines().last().map(str::to_owned);
    let (containers, id) = (config.containers(), id.to_owned());
    let stopped =
        tokio::task::spawn_blocking(move || stop_container(&containers, &id)).await.unwrap_or(false);
    let why = format!(
        "its shim ended without a result{}; {}",
        last.map(|l| format!(" ({l})")).unwrap_or_else(|| " (killed?)".to_owned()),
        if stopped { "its container, left unsupervised, was stopped" } else { "no container was left" }
    );
    tracing::warn!("run {}: {why}", dir.display());
    RunResult { finished_at: Some(Utc::now()), killed: Some(why), ..RunResult::default() }
}

/// Kills and removes container `id` of the node whose containers' state is in `containers`,
/// and unmounts its root filesystem. Whether there was one.
fn stop_container(containers: &Path, id: &str) -> bool {
    let dir = containers.join(id);
    let mut found = false;
    if let Ok(mut c) = libcontainer::container::Container::load(dir.clone()) {
        found = true;
        let _ = c.kill(nix::sys::signal::Signal::SIGKILL, true);
        let _ = c.delete(true);
    }
    let _ = std::fs::remove_dir_all(&dir);
    crate::shim::unmount(&Path::new(crate::shim::STAGING).join(id));
    found
}

/// Which probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ProbeKind {
    Liveness,
    Readiness,
}

/// Aborts its task when dropped (a run's probes end with the run).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Probes one run with `probe` every period, sending each change of whether it passes (and,
/// for readiness, its first result) with the last check's message.
async fn probe_loop(
    kind: ProbeKind,
    probe: api::kinds::Probe,
    dir: PathBuf,
    target: Option<crate::probe::Target>,
    exec: Vec<String>,
    tx: tokio::sync::mpsc::Sender<(ProbeKind, bool, String)>,
) {
    let Some(action) = probe.action() else { return };
    tokio::time::sleep(probe.initial_delay()).await;
    let target = match target {
        Some(t) => t,
        None => loop {
            // The shim writes the container's pid before starting it.
            if let Ok(pid) = read_json::<i32>(&dir, crate::shim::CONTAINER_PID_FILE) {
                break crate::probe::Target::Container { pid, exec };
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        },
    };
    let mut tracker = crate::probe::Tracker::new(&probe, kind == ProbeKind::Liveness);
    let mut tick = tokio::time::interval(probe.period());
    let mut first = true;
    loop {
        tick.tick().await;
        let result = crate::probe::check(&action, &target, probe.timeout()).await;
        let message = match &result {
            Ok(()) => String::new(),
            Err(e) => format!("{action}: {e}"),
        };
        // A readiness probe's first failure is said at once (why the replica is not ready).
        let changed = tracker.observe(result.is_ok());
        let said = match changed {
            Some(passing) => Some(passing),
            None if first && kind == ProbeKind::Readiness && result.is_err() => Some(false),
            None => None,
        };
        first = false;
        if let Some(passing) = said
            && tx.send((kind, passing, message)).await.is_err()
        {
            return;
        }
    }
}

/// The replica's conditions as the agent reports them: the scheduler's `Scheduled` (as this
/// agent last saw it: the replica is bound here) and `Ready`.
fn conditions(
    replica: &Kube<ReplicaSpec>,
    config: &Config,
    ready: bool,
    reason: &str,
    message: &str,
    since: chrono::DateTime<Utc>,
) -> Value {
    use api::kinds::ReplicaConditionType;
    let scheduled = replica
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == ReplicaConditionType::Scheduled))
        .map_or_else(
            || {
                json!({ "type": "Scheduled", "status": "True", "reason": "Scheduled",
                "message": format!("bound to {}", config.node) })
            },
            |c| json!(c),
        );
    let ready = json!({
        "type": "Ready", "status": if ready { "True" } else { "False" },
        "reason": reason, "message": message, "lastTransitionTime": api::meta::Time(since),
    });
    json!([scheduled, ready])
}

/// SIGTERM to a shim (which passes it on, then kills), then waits for it to go.
async fn stop_pid(pid: i32) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
    let never = CancellationToken::new();
    wait_for_pid(pid, &never).await;
}

/// Waits until process `pid` is gone (it is not our child: polled).
async fn wait_for_pid(pid: i32, stop: &CancellationToken) {
    let proc = PathBuf::from(format!("/proc/{pid}"));
    while proc.exists() && !is_zombie(&proc) {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}

fn is_zombie(proc: &Path) -> bool {
    std::fs::read_to_string(proc.join("stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, rest)| rest.trim_start().starts_with('Z')))
        .unwrap_or(false)
}

/// The replica's output so far (the run directory's log), for the log server.
pub fn log_path(config: &Config, uid: &str) -> PathBuf {
    config.run_dir(uid).join(LOG_FILE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended(code: i32) -> RunResult {
        RunResult { exit_code: Some(code), ..RunResult::default() }
    }

    #[test]
    fn restart_policies_decide_as_kubernetes_does() {
        assert!(restarts_after(RestartPolicy::Always, &ended(0)));
        assert!(restarts_after(RestartPolicy::Always, &ended(1)));
        assert!(!restarts_after(RestartPolicy::OnFailure, &ended(0)));
        assert!(restarts_after(RestartPolicy::OnFailure, &ended(1)));
        assert!(!restarts_after(RestartPolicy::Never, &ended(1)));
        assert!(restarts_after(RestartPolicy::OnFailure, &failed("no image")));
    }

    #[test]
    fn a_sealed_value_opens_only_with_the_node_key_for_its_own_workload() {
        let key = age::x25519::Identity::generate();
        let mut r = replica(Some("n1"), Some("u1"));
        r.metadata.annotations =
            Some([(api::kinds::PAYER_ANNOTATION.to_owned(), "did:key:z6MkOwner".to_owned())].into());
        let here = binding_of(&r);
        assert_eq!(here.to_string(), "workload default/web of did:key:z6MkOwner");
        let sealed = api::sealed::seal("v4lue", &here, &[key.to_public()]).unwrap();
        let mine = AgeKey(Arc::new(key));
        assert_eq!(open_sealed("n1", Some(&mine), &r, "TOKEN", &sealed).unwrap().as_str(), "v4lue");
        // No key, or another node's: this node cannot, another may.
        let (reason, message) = open_sealed("n1", None, &r, "TOKEN", &sealed).unwrap_err();
        assert_eq!(reason, api::sealed::NOT_OPENED_REASON);
        assert!(message.contains("node n1 has no age key"), "{message}");
        let other = AgeKey(Arc::new(age::x25519::Identity::generate()));
        let (reason, message) = open_sealed("n1", Some(&other), &r, "TOKEN", &sealed).unwrap_err();
        assert_eq!(reason, api::sealed::NOT_OPENED_REASON);
        assert!(
            message.contains("env TOKEN: node n1 cannot open") && !message.contains("v4lue"),
            "{message}"
        );
        // Sealed for another workload: no node may.
        let elsewhere = api::sealed::Binding { workload: "db".into(), ..here };
        let sealed = api::sealed::seal("v4lue", &elsewhere, &[mine.0.to_public()]).unwrap();
        let (reason, message) = open_sealed("n1", Some(&mine), &r, "TOKEN", &sealed).unwrap_err();
        assert_eq!(reason, api::sealed::MISMATCH_REASON);
        assert!(
            message.contains("default/db") && message.contains("default/web") && !message.contains("v4lue"),
            "{message}"
        );
    }

    fn replica(node: Option<&str>, node_uid: Option<&str>) -> Kube<ReplicaSpec> {
        serde_json::from_value(json!({
            "apiVersion": "univrs.io/v1", "kind": "Replica",
            "metadata": { "name": "web-1", "namespace": "default", "uid": "0f1e2d3c-aaaa-bbbb-cccc-000000000001" },
            "spec": { "workload": "web", "nodeName": node, "nodeUid": node_uid,
                      "container": { "image": "busybox", "command": ["true"] } },
        }))
        .unwrap()
    }

    #[test]
    fn an_agent_runs_only_replicas_bound_to_its_node_s_uid() {
        let (node, uid) = ("n1", "uid-of-n1-now");
        assert!(runs_here(&replica(Some(node), Some(uid)), node, Some(uid)));
        // Bound to an earlier Node of the same name (deleted, registered again).
        assert!(!runs_here(&replica(Some(node), Some("uid-of-an-earlier-n1")), node, Some(uid)));
        // Bound by name only.
        assert!(!runs_here(&replica(Some(node), None), node, Some(uid)));
        // No Node of this name now: nothing is this node's, not even a replica without a uid.
        assert!(!runs_here(&replica(Some(node), Some(uid)), node, None));
        assert!(!runs_here(&replica(Some(node), None), node, None));
        // Another node's, or no node's.
        assert!(!runs_here(&replica(Some("n2"), Some(uid)), node, Some(uid)));
        assert!(!runs_here(&replica(None, None), node, Some(uid)));
        // Being deleted.
        let mut deleting = serde_json::to_value(replica(Some(node), Some(uid))).unwrap();
        deleting["metadata"]["deletionTimestamp"] = json!("2026-11-30T00:00:00Z");
        assert!(!runs_here(&serde_json::from_value(deleting).unwrap(), node, Some(uid)));
    }

    #[test]
    fn restarts_back_off_up_to_thirty_seconds() {
        let delays: Vec<u64> = (1..=7).map(|n| restart_delay(n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30]);
    }
}
