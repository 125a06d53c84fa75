//! `ui node`: what an operator does to offer a machine. `init` makes the node's own identity,
//! `offer` signs and applies a NodeOffer, `register` signs the Node with the operator's key and
//! writes it with the node's, `run` is the agent, `status` shows it, `withdraw` drains it.
//!
//! A node directory (default `CONFIG_DIR/node`) holds the node's identity (in the clear, like
//! every server key: the agent runs unattended), `node.json` (its name and the address of its
//! log endpoint), its kubeconfig (after `register`), `state/` and `images/`.

use api::kinds::{NodeOfferSpec, NodeSpec, info};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use agent::setup::{self, LocalCluster, NodeDir, NodeKey};
use anyhow::{Context as _, bail};
use api::identity::{Did, PeerId};
use chrono::Utc;
use serde_json::{Value, json};

use super::{Context, Outcome};
use crate::connection::ClusterArgs;
use crate::fsutil::{self, PRIVATE_FILE};
use crate::keystore::{self, Identity, Protection};
use crate::output::OutputArgs;
use crate::passphrase::{PassphraseArgs, Purpose};
use crate::paths::ConfigDirs;

/// Operate a node: offer this machine to the network and run replicas on it
///
/// The usual order: `ui node init`, `ui node register`, `ui node offer --jurisdiction CC`, then
/// `ui node run` (as root, for containers). `ui up` does all of this for its local node.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    Init(InitArgs),
    Offer(OfferArgs),
    Register(RegisterArgs),
    Run(RunArgs),
    Status(StatusArgs),
    Withdraw(WithdrawArgs),
    /// Runs one replica (started by the agent; not for people)
    #[command(hide = true)]
    Shim {
        /// The run's directory
        dir: PathBuf,
    },
    /// Runs a command in a replica's container (exec probes; started by the agent)
    #[command(hide = true)]
    Exec {
        /// The run's directory
        dir: PathBuf,
        /// Seconds before the command is killed (exit status 124)
        #[arg(long, default_value_t = 10)]
        timeout: u64,
        /// The command and its arguments
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
}

impl Command {
    /// Whether it runs until stopped (it logs at info then).
    pub fn long_running(&self) -> bool {
        matches!(self, Command::Run(_))
    }
}

/// Where the node's files are.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct NodeDirArgs {
    /// The node's directory [default: CONFIG_DIR/node]
    #[arg(long, value_name = "DIR", env = "UNIVRS_NODE_DIR")]
    node_dir: Option<PathBuf>,
}

impl NodeDirArgs {
    fn dir(&self, ctx: &Context) -> PathBuf {
        self.node_dir.clone().unwrap_or_else(|| ctx.dirs.root().join("node"))
    }
}

/// Makes (or renames) the node directory at `path`, with a new identity when it has none.
fn create(path: &Path, name: &str, listen: SocketAddr) -> anyhow::Result<NodeDir> {
    fsutil::create_private_dir(path)?;
    let dirs = ConfigDirs::resolve(Some(path.to_owned()))?;
    if !keystore::exists(&dirs) {
        keystore::store(&dirs, &Identity::generate(), &Protection::None, false)?;
    }
    NodeDir::new(path, name, listen, |file, bytes| fsutil::write_atomic(file, bytes, PRIVATE_FILE))
}

/// The node's identity (stored in the clear).
fn identity(node: &NodeDir) -> anyhow::Result<Identity> {
    let dirs = ConfigDirs::resolve(Some(node.path.clone()))?;
    keystore::load(&dirs, || bail!("the node's key is encrypted; node keys are kept in the clear"))
}

/// What the Node says of the node's key.
fn node_key(node: &NodeDir) -> anyhow::Result<NodeKey> {
    let id = identity(node)?;
    Ok(NodeKey {
        did: id.did(),
        peer_id: PeerId::from_key(&id.signing_key().verifying_key()),
        age_recipient: id.age_recipient().as_str().to_owned(),
        tunnel_key: agent::tunnel::public_key(id.age_identity()),
    })
}

/// Writes the node's kubeconfig (tokens minted by this `ui` with the node's key).
fn write_kubeconfig(
    node: &NodeDir,
    server: &str,
    others: &[String],
    ca: Option<&str>,
    audience: &str,
) -> anyhow::Result<()> {
    let text = node.kubeconfig_text(&crate::kubeconfig::plugin_command(), server, others, ca, audience);
    fsutil::write_atomic(&node.kubeconfig(), text.as_bytes(), PRIVATE_FILE)
}

/// Make this node's identity: an Ed25519 key (its did:key and libp2p PeerId) and an age key
///
/// The keys are kept in the clear in the node directory (the agent runs unattended), readable
/// by the owner only.
#[derive(Debug, clap::Args)]
pub struct InitArgs {
    #[command(flatten)]
    dir: NodeDirArgs,
    /// The node's name in the cluster (a DNS subdomain name)
    #[arg(long)]
    name: String,
    /// Where the agent serves replica output to the control plane (over TLS with the node's
    /// key). The Node names this address, so the control plane must reach it: an apiserver
    /// refuses loopback and link-local addresses unless started with --allow-loopback-nodes
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:10250")]
    listen: SocketAddr,
    /// Replace an existing node directory's name and address (the identity is kept)
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    output: OutputArgs,
}

fn init(ctx: &Context, args: &InitArgs) -> anyhow::Result<Outcome> {
    let path = args.dir.dir(ctx);
    if path.join("node.json").exists() && !args.force {
        bail!("{} already holds a node; pass --force to rename it (its keys stay)", path.display());
    }
    let node = create(&path, &args.name, args.listen)?;
    let id = identity(&node)?;
    let shown = json!({
        "name": node.file.name,
        "did": id.did().as_str(),
        "peerId": PeerId::from_key(&id.signing_key().verifying_key()).as_str(),
        "ageRecipient": id.age_recipient().as_str(),
        "nodeDir": path.display().to_string(),
    });
    if !args.output.print_structured(&shown)? {
        println!("node {} initialised in {}", node.file.name, path.display());
        println!("did:     {}", shown["did"].as_str().unwrap_or_default());
        println!("peer id: {}", shown["peerId"].as_str().unwrap_or_default());
        println!("age:     {}", shown["ageRecipient"].as_str().unwrap_or_default());
        println!("next: ui node register, then ui node offer --jurisdiction CC, then ui node run");
    }
    Ok(Outcome::Success)
}

/// Sign a NodeOffer for this node with your (the operator's) key and apply it
///
/// What the node offers to the network: resources, prices per resource-hour in credits,
/// jurisdiction (ISO 3166 country code) and region, labels that workloads select on.
#[derive(Debug, clap::Args)]
pub struct OfferArgs {
    #[command(flatten)]
    dir: NodeDirArgs,
    /// CPUs offered (e.g. 2, 500m) [default: all of this machine's]
    #[arg(long)]
    cpu: Option<String>,
    /// Memory offered (e.g. 4Gi) [default: all of this machine's]
    #[arg(long)]
    memory: Option<String>,
    /// Storage offered (e.g. 100Gi)
    #[arg(long, default_value = "10Gi")]
    storage: String,
    /// Price of one CPU for one hour, in credits
    #[arg(long, default_value = "0")]
    price_cpu: String,
    /// Price of one GiB of memory for one hour, in credits
    #[arg(long, default_value = "0")]
    price_memory: String,
    /// Price of one GiB of storage for one hour, in credits
    #[arg(long, default_value = "0")]
    price_storage: String,
    /// Where the machine is: an ISO 3166-1 alpha-2 country code (DE, FR, US, …)
    #[arg(long)]
    jurisdiction: String,
    /// The region within the jurisdiction
    #[arg(long)]
    region: Option<String>,
    /// A label workloads can select on (KEY=VALUE, repeatable)
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// Print the signed offer as YAML instead of applying it
    #[arg(long)]
    print: bool,
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(flatten)]
    passphrase: PassphraseArgs,
}

fn offer(ctx: &Context, args: &OfferArgs) -> anyhow::Result<Outcome> {
    let node = NodeDir::open(&args.dir.dir(ctx))?;
    let mut labels = serde_json::Map::new();
    for l in &args.labels {
        let (k, v) = l.split_once('=').with_context(|| format!("--label {l:?}: expected KEY=VALUE"))?;
        labels.insert(k.to_owned(), json!(v));
    }
    let resources = setup::resources_or_machine(args.cpu.as_deref(), args.memory.as_deref(), &args.storage);
    let number = |flag: &str, v: &str| -> anyhow::Result<Value> {
        let n: f64 = v.parse().map_err(|_| anyhow::anyhow!("--{flag} {v:?}: not a number of credits"))?;
        Ok(json!(n))
    };
    let price = json!({
        "cpu": number("price-cpu", &args.price_cpu)?,
        "memory": number("price-memory", &args.price_memory)?,
        "storage": number("price-storage", &args.price_storage)?,
    });
    let mut obj = setup::offer_object(
        &node.file.name,
        &resources,
        &price,
        &args.jurisdiction,
        args.region.as_deref(),
        &Value::Object(labels),
    );
    setup::check(&obj, "the offer")?;
    let operator =
        crate::unlock::signer(&ctx.dirs, || args.passphrase.get(Purpose::Existing, "your identity"))?;
    api::signing::sign(&mut obj, &*operator, Utc::now()).map_err(|e| anyhow::anyhow!("{e}"))?;
    if args.print {
        print!("{}", serde_saphyr::to_string(&obj)?);
        return Ok(Outcome::Success);
    }
    let client = crate::connection::connect(ctx, &args.cluster)?;
    let verb = setup::apply_signed(&client, &obj)?;
    println!("nodeoffer.univrs.io/{} {verb}", node.file.name);
    Ok(Outcome::Success)
}

/// Register this node: the Node, signed by you (its operator), written with the node's key
///
/// Writes the node's kubeconfig (same cluster as yours, tokens minted with the node's key) and
/// creates or updates its Node: PeerId, node key, operator, age recipient, capacity, and the
/// address of its log endpoint.
#[derive(Debug, clap::Args)]
pub struct RegisterArgs {
    #[command(flatten)]
    dir: NodeDirArgs,
    /// CPUs replicas may use in all [default: all of this machine's]
    #[arg(long)]
    cpu: Option<String>,
    /// Memory replicas may use in all [default: all of this machine's]
    #[arg(long)]
    memory: Option<String>,
    /// Storage replicas may use in all
    #[arg(long, default_value = "10Gi")]
    storage: String,
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(flatten)]
    passphrase: PassphraseArgs,
}

fn register(ctx: &Context, args: &RegisterArgs) -> anyhow::Result<Outcome> {
    let node = NodeDir::open(&args.dir.dir(ctx))?;
    let cluster = crate::connection::cluster_of(ctx, &args.cluster)?;
    write_kubeconfig(&node, &cluster.server, &cluster.others, cluster.ca_pem.as_deref(), &cluster.audience)?;
    let capacity = setup::resources_or_machine(args.cpu.as_deref(), args.memory.as_deref(), &args.storage);
    let operator =
        crate::unlock::signer(&ctx.dirs, || args.passphrase.get(Purpose::Existing, "your identity"))?;
    let operator_did = Did::from_key(&operator.public());
    let mut obj = node.node_object(&operator_did, &node_key(&node)?, &capacity);
    setup::check(&obj, "the node")?;
    api::signing::sign(&mut obj, &*operator, Utc::now()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let as_node = ClusterArgs::for_kubeconfig(node.kubeconfig());
    let client = crate::connection::connect(ctx, &as_node)?;
    let verb = setup::apply_signed(&client, &obj)?;
    println!("node.univrs.io/{} {verb}", node.file.name);
    println!("kubeconfig of the node: {}", node.kubeconfig().display());
    Ok(Outcome::Success)
}

/// How replicas run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RuntimeArg {
    /// Containers if this machine can run them (root, cgroups), else plain processes, saying so
    Auto,
    /// Containers (libcontainer): namespaces, cgroup limits, read-only image rootfs; needs root
    Container,
    /// Plain processes on the host: no isolation, no limits; for machines without containers
    Process,
}

impl RuntimeArg {
    /// The runtime to use, or why the one asked for is impossible here.
    pub fn resolve(self) -> anyhow::Result<agent::RuntimeKind> {
        match (self, agent::containers_possible()) {
            (RuntimeArg::Process, _) => Ok(agent::RuntimeKind::Process),
            (_, Ok(())) => Ok(agent::RuntimeKind::Container),
            (RuntimeArg::Container, Err(why)) => {
                bail!(
                    "cannot run containers: {why}; run as root, or pass --runtime process to run replicas as plain processes (no isolation)"
                )
            }
            (RuntimeArg::Auto, Err(why)) => {
                eprintln!(
                    "WARNING: {why}: replicas run as PLAIN PROCESSES on this machine, without isolation or limits (--runtime process)"
                );
                Ok(agent::RuntimeKind::Process)
            }
        }
    }
}

/// The node agent: heartbeats, runs the replicas bound to this node, reports their status
///
/// Needs `ui node register` first (for the node's kubeconfig). Containers need root; replicas
/// keep running when the agent stops, and a restarted agent adopts them.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    dir: NodeDirArgs,
    /// How replicas run
    #[arg(long, value_enum, default_value_t = RuntimeArg::Container)]
    runtime: RuntimeArg,
    /// Where images (root filesystems, one directory per name) are [default: NODE_DIR/images]
    #[arg(long, value_name = "DIR")]
    images: Option<PathBuf>,
    /// How long the node's lease lasts without renewal (it is renewed every quarter of it)
    #[arg(long, value_name = "SECONDS", default_value_t = 40)]
    lease_seconds: u32,
    /// With --runtime process: also run the workloads of this signer (repeatable); plain
    /// processes have the agent's rights on this machine, so by default only the
    /// operator's own workloads run
    #[arg(long = "trust-signer", value_name = "DID")]
    trust_signers: Vec<String>,
    /// Serve Prometheus metrics on http://ADDR/metrics (plain HTTP, no token: whoever
    /// reaches ADDR reads them; keep it on loopback or a network you trust)
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
    #[command(flatten)]
    registries: super::image::RegistryArgs,
    /// The replicas' addresses on this node (IPv4, /8 to /22; each owner gets a /24 of it and a
    /// bridge of its own), advertised in the Node's status. Default: the one this node had,
    /// else the first of 10.77.0.0/16 to 10.126.0.0/16 that no other Node advertises and no
    /// other node agent on this machine uses or keeps for its replicas (a stopped agent's
    /// until `ui down` or its state is removed)
    #[arg(long, value_name = "CIDR", value_parser = parse_net)]
    replica_network: Option<agent::network::Net>,
}

/// The agent's configuration for the node in `node`.
pub fn agent_config(
    node: &NodeDir,
    runtime: agent::RuntimeKind,
    images: Option<PathBuf>,
    lease_seconds: u32,
    trusted: agent::node::Trusted,
    registries: agent::registry::Registries,
    replica_network: Option<agent::network::Net>,
) -> anyhow::Result<agent::Config> {
    let ui = std::env::current_exe().context("cannot find the ui binary for the shims")?;
    let images = images.unwrap_or_else(|| node.path.join("images"));
    let made = agent::images::Images::new(&images).ensure_busybox().unwrap_or(false);
    if !made && runtime == agent::RuntimeKind::Container {
        eprintln!(
            "note: no busybox image in {} (install Debian's busybox-static to have one made)",
            images.display()
        );
    }
    Ok(agent::Config {
        node: node.file.name.clone(),
        state_dir: node.path.join("state"),
        images,
        runtime,
        shim: vec![ui.display().to_string(), "node".into(), "shim".into()],
        exec: vec![ui.display().to_string(), "node".into(), "exec".into()],
        lease_seconds,
        trusted,
        // The node's age key opens what is sealed to its Node's ageRecipient.
        age_key: Some(agent::node::AgeKey(std::sync::Arc::new(identity(node)?.age_identity().clone()))),
        default_limits: agent::node::DefaultLimits::default(),
        registries,
        replica_network,
        // Replicas' traffic to other nodes: UDP on the port of the node's log endpoint.
        tunnel_listen: Some(node.file.listen),
    })
}

fn parse_net(s: &str) -> Result<agent::network::Net, String> {
    s.parse()
}

fn run_agent(ctx: &Context, args: &RunArgs) -> anyhow::Result<Outcome> {
    let node = NodeDir::open(&args.dir.dir(ctx))?;
    if !node.kubeconfig().exists() {
        bail!("node {} is not registered: run `ui node register` first", node.file.name);
    }
    let runtime = args.runtime.resolve()?;
    for d in &args.trust_signers {
        Did::parse(d).map_err(|e| anyhow::anyhow!("--trust-signer {d}: {e}"))?;
    }
    let signers = args.trust_signers.clone();
    let trusted = agent::node::Trusted(std::sync::Arc::new(move || signers.clone()));
    let registries = args.registries.resolve()?;
    let config = agent_config(
        &node,
        runtime,
        args.images.clone(),
        args.lease_seconds,
        trusted,
        registries,
        args.replica_network,
    )?;
    let runtime_tokio = tokio::runtime::Runtime::new()?;
    runtime_tokio.block_on(async {
        let client = client::failover::connect_to(&node.kubeconfig())?;
        let listener = tokio::net::TcpListener::bind(node.file.listen)
            .await
            .with_context(|| format!("cannot listen on {}", node.file.listen))?;
        let shutdown = tokio_util::sync::CancellationToken::new();
        if let Some(addr) = args.metrics_addr {
            let metrics = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot serve metrics on {addr}"))?;
            let at = metrics.local_addr()?;
            println!("metrics on http://{at}/metrics");
            if !at.ip().is_loopback() {
                eprintln!("WARNING: --metrics-addr {at} is not loopback: anyone who reaches it reads the metrics, without a token");
            }
            let exposition = || {
                let mut out = String::new();
                agent::metrics::metrics().encode_into(&mut out);
                apiserver::metrics::end(&mut out);
                out
            };
            tokio::spawn(apiserver::metrics::serve(metrics, exposition, shutdown.clone().cancelled_owned()));
        }
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("can install a SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            eprintln!("stopping the agent (replicas keep running; a restarted agent adopts them)");
            stop.cancel();
        });
        println!("node {} runs replicas {}", node.file.name, runtime.describe());
        let node_key = identity(&node)?.signing_key().clone();
        agent::run(client, config, listener, node_key, shutdown).await
    })?;
    Ok(Outcome::Success)
}

/// Show this node: readiness, heartbeat, offer, and the replicas bound to it
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    dir: NodeDirArgs,
    /// The node to show [default: the one in the node directory]
    name: Option<String>,
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(flatten)]
    output: OutputArgs,
}

fn status(ctx: &Context, args: &StatusArgs) -> anyhow::Result<Outcome> {
    let name = match &args.name {
        Some(n) => n.clone(),
        None => NodeDir::open(&args.dir.dir(ctx))?.file.name,
    };
    let client = crate::connection::connect(ctx, &args.cluster)?;
    let node = client.get(info::<NodeSpec>(), None, &name).with_context(|| format!("node {name}"))?;
    let offers: Vec<Value> = client.list(info::<NodeOfferSpec>(), None, None, false)?["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|o| o.pointer("/spec/node").and_then(Value::as_str) == Some(name.as_str()))
        .cloned()
        .collect();
    let replicas = setup::replicas_on(&client, &name)?;
    let ready = node.pointer("/status/conditions").and_then(Value::as_array).and_then(|cs| {
        cs.iter()
            .find(|c| c["type"] == "Ready")
            .map(|c| json!({ "status": c["status"], "reason": c["reason"], "message": c["message"] }))
    });
    // On the node's own machine: what it runs, counted there (every container, every process).
    let local = NodeDir::open(&args.dir.dir(ctx))
        .ok()
        .filter(|d| d.file.name == name)
        .map(|d| agent::node::local_runs(&d.path.join("state"), &name));
    let shown = json!({
        "name": name,
        "local": local,
        "ready": ready,
        "unschedulable": node.pointer("/spec/unschedulable").and_then(Value::as_bool).unwrap_or(false),
        "runtime": node.pointer("/status/runtime"),
        "lastHeartbeatTime": node.pointer("/status/lastHeartbeatTime"),
        "operator": node.pointer("/spec/operator"),
        "capacity": node.pointer("/spec/capacity"),
        "offers": offers.iter().map(|o| json!({
            "name": o["metadata"]["name"], "jurisdiction": o["spec"]["jurisdiction"],
            "region": o["spec"]["region"], "resources": o["spec"]["resources"],
        })).collect::<Vec<_>>(),
        "replicas": replicas.iter().map(|r| json!({
            "namespace": r["metadata"]["namespace"], "name": r["metadata"]["name"],
            "phase": r.pointer("/status/phase").cloned().unwrap_or(json!("Pending")),
            "restarts": r.pointer("/status/restarts").cloned().unwrap_or(json!(0)),
        })).collect::<Vec<_>>(),
    });
    if args.output.print_structured(&shown)? {
        return Ok(Outcome::Success);
    }
    let s = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_owned);
    println!("Node:        {name}");
    match &ready {
        Some(r) => println!("Ready:       {} ({}: {})", s(&r["status"]), s(&r["reason"]), s(&r["message"])),
        None => println!("Ready:       Unknown (no report from the node lifecycle controller yet)"),
    }
    if shown["unschedulable"] == true {
        println!("Scheduling:  disabled (withdrawn)");
    }
    println!("Runtime:     {}", shown["runtime"].as_str().unwrap_or("unknown (agent not seen)"));
    println!("Heartbeat:   {}", shown["lastHeartbeatTime"].as_str().unwrap_or("never"));
    println!("Operator:    {}", s(&shown["operator"]));
    println!("Capacity:    {}", shown["capacity"]);
    if offers.is_empty() {
        println!("Offer:       none (no replicas are placed here without one: ui node offer)");
    }
    for o in &offers {
        println!(
            "Offer:       {} in {} {}",
            s(&o["metadata"]["name"]),
            s(&o["spec"]["jurisdiction"]),
            o["spec"]["resources"]
        );
    }
    println!("Replicas:    {}", replicas.len());
    if let Some(l) = local {
        println!(
            "Here:        {} runs supervised, {} containers unsupervised, {} processes in the node's cgroups",
            l.supervised, l.unsupervised, l.processes
        );
    }
    for r in shown["replicas"].as_array().into_iter().flatten() {
        println!(
            "  {}/{}  {}  restarts {}",
            s(&r["namespace"]),
            s(&r["name"]),
            s(&r["phase"]),
            r["restarts"]
        );
    }
    Ok(Outcome::Success)
}

/// Withdraw this node: no new placements, its replicas moved elsewhere, then its offer removed
///
/// Marks the Node unschedulable (signed again by you, its operator); the node lifecycle
/// controller then evicts its replicas, which the workload controller recreates and the
/// scheduler places on other nodes. Once none is left here and every workload that had one
/// runs all its replicas again, your NodeOffers for the node are deleted. The Node itself stays (delete it with `ui delete node NAME` when the machine goes).
#[derive(Debug, clap::Args)]
pub struct WithdrawArgs {
    #[command(flatten)]
    dir: NodeDirArgs,
    /// The node to withdraw [default: the one in the node directory]
    name: Option<String>,
    /// How long to wait for the replicas to leave
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    timeout: u64,
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(flatten)]
    passphrase: PassphraseArgs,
}

fn withdraw(ctx: &Context, args: &WithdrawArgs) -> anyhow::Result<Outcome> {
    let name = match &args.name {
        Some(n) => n.clone(),
        None => NodeDir::open(&args.dir.dir(ctx))?.file.name,
    };
    let client = crate::connection::connect(ctx, &args.cluster)?;
    let operator =
        crate::unlock::signer(&ctx.dirs, || args.passphrase.get(Purpose::Existing, "your identity"))?;
    let operator_did = Did::from_key(&operator.public());
    let sign = |node: &mut Value| {
        api::signing::sign(node, &*operator, Utc::now()).map(drop).map_err(|e| anyhow::anyhow!("{e}"))
    };
    let timeout = Duration::from_secs(args.timeout);
    let deleted = setup::withdraw(&client, &name, &operator_did, timeout, sign, |step| println!("{step}"))?;
    for offer in deleted {
        println!("nodeoffer.univrs.io/{offer} deleted");
    }
    println!("node {name} withdrawn: no replicas left on it, no offer");
    Ok(Outcome::Success)
}

pub fn run(ctx: &Context, cmd: &Command) -> anyhow::Result<Outcome> {
    match cmd {
        Command::Init(a) => init(ctx, a),
        Command::Offer(a) => offer(ctx, a),
        Command::Register(a) => register(ctx, a),
        Command::Run(a) => run_agent(ctx, a),
        Command::Status(a) => status(ctx, a),
        Command::Withdraw(a) => withdraw(ctx, a),
        Command::Shim { dir } => {
            agent::shim::main(dir)?;
            Ok(Outcome::Success)
        }
        Command::Exec { dir, timeout, command } => {
            let code = agent::exec::main(dir, command, std::time::Duration::from_secs(*timeout))?;
            std::process::exit(code);
        }
    }
}

/// The local node of `ui up`.
#[derive(Clone, Debug, clap::Args)]
pub struct LocalNodeArgs {
    /// Run no node agent (only the control plane)
    #[arg(long)]
    pub no_node: bool,
    /// The local node's name
    #[arg(long, value_name = "NAME", default_value = "local")]
    node_name: String,
    /// The local node's jurisdiction in its offer (ISO 3166-1 alpha-2)
    #[arg(long, value_name = "CC", env = "UNIVRS_JURISDICTION", default_value = "DE")]
    jurisdiction: String,
    /// How the local node runs replicas
    #[arg(long, value_enum, default_value_t = RuntimeArg::Auto)]
    runtime: RuntimeArg,
    /// Where the local node's agent serves replica output (port 0: any free port)
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    node_listen: SocketAddr,
    /// How long the local node's lease lasts without renewal
    #[arg(long, value_name = "SECONDS", default_value_t = 40)]
    lease_seconds: u32,
    /// Leave the local node's replicas running when `ui up` stops (the next `ui up` adopts
    /// them; `ui down` stops them)
    #[arg(long)]
    pub keep_replicas: bool,
    #[command(flatten)]
    registries: super::image::RegistryArgs,
    /// The replicas' addresses on this node (IPv4, /8 to /22; each owner gets a /24 of it and a
    /// bridge of its own), advertised in the Node's status. Default: the one this node had,
    /// else the first of 10.77.0.0/16 to 10.126.0.0/16 that no other Node advertises and no
    /// other node agent on this machine uses or keeps for its replicas (a stopped agent's
    /// until `ui down` or its state is removed)
    #[arg(long, value_name = "CIDR", value_parser = parse_net)]
    replica_network: Option<agent::network::Net>,
}

/// Starts the local node of `ui up` in `data_dir/node`: its Node and offer (signed by the
/// member key, its operator) and its agent, until `shutdown`. A plain-process local node runs
/// the workloads of the user of `user_config`.
pub async fn start_local(
    data_dir: &Path,
    cluster: LocalCluster<'_>,
    user_config: &Path,
    args: &LocalNodeArgs,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<Option<tokio::task::JoinHandle<anyhow::Result<()>>>> {
    if args.no_node {
        return Ok(None);
    }
    api::identity::Jurisdiction::parse(&args.jurisdiction)
        .map_err(|e| anyhow::anyhow!("--jurisdiction: {e}"))?;
    let runtime = args.runtime.resolve()?;
    let path = data_dir.join("node");
    let listener = tokio::net::TcpListener::bind(args.node_listen)
        .await
        .with_context(|| format!("cannot listen on {} for the local node", args.node_listen))?;
    let listen = listener.local_addr()?;
    let node = create(&path, &args.node_name, listen)?;
    write_kubeconfig(&node, cluster.server, &[], cluster.ca_pem, cluster.audience)?;
    setup::register_local(&node, &node_key(&node)?, &cluster, &args.jurisdiction).await?;
    // A plain-process local node runs the workloads of the user of this config dir (whose
    // identity may be made after `ui up` started: read each time).
    let root = user_config.to_owned();
    let trusted = agent::node::Trusted(std::sync::Arc::new(move || {
        ConfigDirs::resolve(Some(root.clone()))
            .and_then(|dirs| keystore::load_public(&dirs))
            .map(|p| vec![p.did.as_str().to_owned()])
            .unwrap_or_default()
    }));
    let config = agent_config(
        &node,
        runtime,
        None,
        args.lease_seconds,
        trusted,
        args.registries.resolve()?,
        args.replica_network,
    )?;
    let client = client::failover::connect_to(&node.kubeconfig())?;
    println!(
        "local node {} ({}, offer in {}) runs replicas {}",
        args.node_name,
        path.display(),
        args.jurisdiction,
        runtime.describe()
    );
    let node_key = identity(&node)?.signing_key().clone();
    Ok(Some(tokio::spawn(agent::run(client, config, listener, node_key, shutdown))))
}
