//! Setting a node up and taking it down, as `ui node` and `ui up` need it: the node directory
//! (`node.json`, the node's kubeconfig), the Node and NodeOffer objects its operator signs,
//! writing them, withdrawing the node (drain, then the offer goes), and the local node of
//! `ui up`. The commands parse arguments and print; the work is here.

use api::kinds::{NodeOfferSpec, NodeSpec, ReplicaSpec, WorkloadSpec, info};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use api::identity::{Did, PeerId};
use api::kinds::lookup;
use client::blocking::{Client, ClientError};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// `node.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeFile {
    /// The Node's name.
    pub name: String,
    /// Where the agent serves replica output to the control plane.
    pub listen: SocketAddr,
}

/// A node directory: the node's identity (kept by the caller's keystore, in the clear),
/// `node.json`, its kubeconfig (after registering), `state/` and `images/`.
#[derive(Debug)]
pub struct NodeDir {
    /// Its path.
    pub path: PathBuf,
    /// `node.json`.
    pub file: NodeFile,
}

/// What the Node object says of the node's own key.
#[derive(Clone, Debug)]
pub struct NodeKey {
    /// The node key's did.
    pub did: Did,
    /// Its libp2p PeerId.
    pub peer_id: PeerId,
    /// Where secrets for the node are sealed to.
    pub age_recipient: String,
    /// Its WireGuard public key ([`crate::tunnel::public_key`]).
    pub tunnel_key: String,
}

/// Largest `node.json` read.
const MAX_NODE_FILE: u64 = 64 * 1024;

impl NodeDir {
    /// The node directory at `path`, made by `ui node init`.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        use std::io::Read as _;
        let json = path.join("node.json");
        let mut bytes = Vec::new();
        std::fs::File::open(&json).and_then(|f| f.take(MAX_NODE_FILE).read_to_end(&mut bytes)).map_err(
            |e| {
                anyhow::anyhow!(
                    "cannot read {} ({e}): no node here; make one with `ui node init --node-dir {}`",
                    json.display(),
                    path.display()
                )
            },
        )?;
        let file =
            serde_json::from_slice(&bytes).with_context(|| format!("{} is corrupt", json.display()))?;
        Ok(Self { path: path.to_owned(), file })
    }

    /// A node directory at `path` (already made, with the node's identity in it) for node
    /// `name` serving its output at `listen`; writes `node.json` with `write` (atomically,
    /// privately).
    pub fn new(
        path: &Path,
        name: &str,
        listen: SocketAddr,
        write: impl FnOnce(&Path, &[u8]) -> anyhow::Result<()>,
    ) -> anyhow::Result<Self> {
        api::validation::check_dns1123_subdomain(name)
            .map_err(|e| anyhow::anyhow!("node name {name:?}: {e}"))?;
        let file = NodeFile { name: name.to_owned(), listen };
        write(&path.join("node.json"), &serde_json::to_vec_pretty(&file)?)?;
        Ok(Self { path: path.to_owned(), file })
    }

    /// The kubeconfig the agent uses (written by registering).
    pub fn kubeconfig(&self) -> PathBuf {
        self.path.join("kubeconfig")
    }

    /// The node's kubeconfig: `server` (and every other member, for failover) with `ca`,
    /// tokens minted by `ui` (the program at `ui`) with the node's key.
    pub fn kubeconfig_text(
        &self,
        ui: &str,
        server: &str,
        others: &[String],
        ca: Option<&str>,
        audience: &str,
    ) -> String {
        let env = [("UNIVRS_CONFIG_DIR", self.path.display().to_string())];
        client::kubeconfig::render(server, others, ca, ui, audience, &[], &env)
    }

    /// The Node object (unsigned) for this node, run by `operator`, with `capacity`.
    pub fn node_object(&self, operator: &Did, key: &NodeKey, capacity: &Value) -> Value {
        json!({
            "apiVersion": "univrs.io/v1", "kind": "Node",
            "metadata": { "name": self.file.name },
            "spec": {
                "peerId": key.peer_id.as_str(),
                "operator": operator.as_str(),
                "nodeKey": key.did.as_str(),
                "addresses": [
                    crate::log_multiaddr(self.file.listen),
                    api::identity::TunnelAddress(self.file.listen).to_string(),
                ],
                "ageRecipient": key.age_recipient,
                "tunnelKey": key.tunnel_key,
                "capacity": capacity,
            },
        })
    }
}

/// This machine's CPUs and memory, as Kubernetes quantities.
pub fn machine_capacity() -> Value {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mem_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(1024 * 1024);
    json!({ "cpu": cpus.to_string(), "memory": format!("{}Mi", mem_kib / 1024), "storage": "10Gi" })
}

/// Resources as given, each one not given all of this machine's.
pub fn resources_or_machine(cpu: Option<&str>, memory: Option<&str>, storage: &str) -> Value {
    let machine = machine_capacity();
    json!({
        "cpu": cpu.map_or_else(|| machine["cpu"].clone(), |c| json!(c)),
        "memory": memory.map_or_else(|| machine["memory"].clone(), |m| json!(m)),
        "storage": storage,
    })
}

/// The NodeOffer (unsigned) for node `name`.
pub fn offer_object(
    name: &str,
    resources: &Value,
    price: &Value,
    jurisdiction: &str,
    region: Option<&str>,
    labels: &Value,
) -> Value {
    let mut offer = json!({
        "apiVersion": "univrs.io/v1", "kind": "NodeOffer",
        "metadata": { "name": name },
        "spec": { "node": name, "resources": resources, "price": price, "jurisdiction": jurisdiction },
    });
    if let Some(r) = region {
        offer["spec"]["region"] = json!(r);
    }
    if labels.as_object().is_some_and(|l| !l.is_empty()) {
        offer["metadata"]["labels"] = labels.clone();
    }
    offer
}

/// Every problem of `obj` (`what` names it), in the words of `ui sign` and the server.
pub fn check(obj: &Value, what: &str) -> anyhow::Result<()> {
    if let Err(errors) = api::manifest::check(obj) {
        let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
        bail!("{what} is not valid: {}", list.join("; "));
    }
    Ok(())
}

/// Writes the signed, cluster-scoped `obj`: created, or put over the stored one (read again on
/// a conflict: the agent and the controllers write its status meanwhile). Returns `created`
/// or `configured`.
pub fn apply_signed(client: &Client, obj: &Value) -> anyhow::Result<&'static str> {
    let kind = lookup(obj["kind"].as_str().unwrap_or_default()).context("a known kind")?;
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    let mut created = false;
    client
        .modify(kind, None, name, |current| -> Result<Option<Value>, ClientError> {
            created = current.is_none();
            Ok(Some(obj.clone()))
        })
        .with_context(|| format!("cannot write {} {name}", kind.singular))?;
    Ok(if created { "created" } else { "configured" })
}

/// The replicas bound to node `node`, in every namespace.
pub fn replicas_on(client: &Client, node: &str) -> anyhow::Result<Vec<Value>> {
    let list = client.list(info::<ReplicaSpec>(), None, None, false)?;
    Ok(list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r.pointer("/spec/nodeName").and_then(Value::as_str) == Some(node))
        .cloned()
        .collect())
}

fn is_finished(replica: &Value) -> bool {
    replica
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .is_some_and(|p| p == "Succeeded" || p == "Failed")
}

/// How often withdrawing looks again.
const POLL: Duration = Duration::from_millis(500);

/// Withdraws node `name`: marks it unschedulable (`sign` signs the changed Node as its
/// operator `operator`), waits (up to `timeout`) until no replica is left on it and every
/// workload that had one runs all its replicas again, then deletes the operator's offers for
/// it. `say` hears each step. Returns the offers deleted.
pub fn withdraw(
    client: &Client,
    name: &str,
    operator: &Did,
    timeout: Duration,
    mut sign: impl FnMut(&mut Value) -> anyhow::Result<()>,
    mut say: impl FnMut(&str),
) -> anyhow::Result<Vec<String>> {
    // The workloads with replicas here: the offer goes only once they run elsewhere again.
    let mut moving: Vec<(String, String)> = replicas_on(client, name)?
        .iter()
        .filter(|r| !is_finished(r))
        .filter_map(|r| {
            Some((
                r.pointer("/metadata/namespace")?.as_str()?.to_owned(),
                r.pointer("/spec/workload")?.as_str()?.to_owned(),
            ))
        })
        .collect();
    moving.sort();
    moving.dedup();
    client
        .modify(info::<NodeSpec>(), None, name, |current| -> anyhow::Result<Option<Value>> {
            let Some(node) = current else { bail!("node {name} not found") };
            if node.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
                return Ok(None);
            }
            let mut node = node.clone();
            node["spec"]["unschedulable"] = json!(true);
            sign(&mut node)?;
            Ok(Some(node))
        })
        .with_context(|| format!("cannot mark node {name} unschedulable"))?;
    say(&format!("node.univrs.io/{name} cordoned: no new replicas are placed on it"));
    let deadline = Instant::now() + timeout;
    let mut last = usize::MAX;
    loop {
        let left = replicas_on(client, name)?.into_iter().filter(|r| !is_finished(r)).count();
        if left == 0 {
            break;
        }
        if left != last {
            say(&format!("waiting for {left} replica(s) to move off {name}"));
            last = left;
        }
        if Instant::now() >= deadline {
            bail!(
                "{left} replica(s) still on node {name} after {} s; it stays unschedulable, run ui node withdraw again to wait longer",
                timeout.as_secs()
            );
        }
        std::thread::sleep(POLL);
    }
    // No replica lost: every workload that had one here runs all of its replicas again.
    let mut last = String::new();
    loop {
        let short = short_workloads(client, &moving)?;
        if short.is_empty() {
            break;
        }
        let now = short.join(", ");
        if now != last {
            say(&format!("waiting for the moved replicas to run elsewhere: {now}"));
            last = now;
        }
        if Instant::now() >= deadline {
            bail!(
                "after {} s not every moved replica runs elsewhere ({last}); node {name} stays unschedulable and its offer stays; run ui node withdraw again to wait longer",
                timeout.as_secs()
            );
        }
        std::thread::sleep(POLL);
    }
    let offers = client.list(info::<NodeOfferSpec>(), None, None, false)?;
    let mut deleted = Vec::new();
    for o in offers["items"].as_array().into_iter().flatten() {
        let signer = o
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(api::signing::SIGNER))
            .and_then(Value::as_str);
        if o.pointer("/spec/node").and_then(Value::as_str) != Some(name) || signer != Some(operator.as_str())
        {
            continue;
        }
        let offer = o["metadata"]["name"].as_str().unwrap_or_default();
        match client.delete(info::<NodeOfferSpec>(), None, offer, false) {
            Ok(_) => deleted.push(offer.to_owned()),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(anyhow::Error::new(e).context(format!("cannot delete offer {offer}"))),
        }
    }
    Ok(deleted)
}

/// The workloads of `moving` that run fewer replicas than they want: `ns/name (n/m running)`.
fn short_workloads(client: &Client, moving: &[(String, String)]) -> anyhow::Result<Vec<String>> {
    let mut short = Vec::new();
    for (ns, w) in moving {
        let wanted = match client.get(info::<WorkloadSpec>(), Some(ns), w) {
            Ok(obj) => obj.pointer("/spec/replicas").and_then(Value::as_u64).unwrap_or(1),
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e.into()),
        };
        let list = client.list(info::<ReplicaSpec>(), Some(ns), None, false)?;
        let running = list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r.pointer("/spec/workload").and_then(Value::as_str) == Some(w.as_str()))
            .filter(|r| r.pointer("/status/phase").and_then(Value::as_str) == Some("Running"))
            .count() as u64;
        if running < wanted {
            short.push(format!("{ns}/{w} ({running}/{wanted} running)"));
        }
    }
    Ok(short)
}

/// POSTs `obj` as it is (a signed object must not be re-encoded), or PUTs it over the stored
/// one with its `resourceVersion` as precondition, read again on a conflict.
pub async fn put_signed(client: &kube::Client, obj: &Value) -> anyhow::Result<()> {
    let kind = lookup(obj["kind"].as_str().unwrap_or_default()).context("a known kind")?;
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    let collection = format!("/apis/univrs.io/v1/{}", kind.plural);
    let path = format!("{collection}/{name}");
    for attempt in 0..client::retry::CONFLICT_ATTEMPTS {
        tokio::time::sleep(client::retry::conflict_pause(attempt)).await;
        let current = match client.request::<Value>(http::Request::get(&path).body(Vec::new())?).await {
            Ok(v) => Some(v),
            Err(kube::Error::Api(s)) if s.code == 404 => None,
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!("cannot read {} {name}", kind.singular)));
            }
        };
        let request = match &current {
            None => http::Request::post(&collection)
                .header("Content-Type", "application/json")
                .body(serde_json::to_vec(obj)?)?,
            Some(c) => {
                let mut obj = obj.clone();
                obj["metadata"]["resourceVersion"] = c["metadata"]["resourceVersion"].clone();
                http::Request::put(&path)
                    .header("Content-Type", "application/json")
                    .body(serde_json::to_vec(&obj)?)?
            }
        };
        match client.request::<Value>(request).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!("cannot write {} {name}", kind.singular)));
            }
        }
    }
    bail!("{} {name} kept changing while it was being written: try again", kind.singular)
}

/// The cluster the local node of `ui up` joins.
#[derive(Debug)]
pub struct LocalCluster<'a> {
    /// The apiserver's URL.
    pub server: &'a str,
    /// Its CA.
    pub ca_pem: Option<&'a str>,
    /// Its token audience.
    pub audience: &'a str,
    /// The member key: the local node's operator.
    pub operator: &'a ed25519_dalek::SigningKey,
    /// The member's kubeconfig, to write the Node and its offer.
    pub member_kubeconfig: &'a Path,
}

/// Registers the local node of `ui up` in `node` (its Node and an offer in `jurisdiction`,
/// signed by the member key, its operator); a node withdrawn earlier stays withdrawn.
pub async fn register_local(
    node: &NodeDir,
    key: &NodeKey,
    cluster: &LocalCluster<'_>,
    jurisdiction: &str,
) -> anyhow::Result<()> {
    let operator = Did::from_key(&cluster.operator.verifying_key());
    let capacity = machine_capacity();
    let now = chrono::Utc::now();
    let mut obj = node.node_object(&operator, key, &capacity);
    let member = client::failover::connect_to(cluster.member_kubeconfig)?;
    let stored = format!("/apis/univrs.io/v1/nodes/{}", node.file.name);
    if let Ok(stored) = member.request::<Value>(http::Request::get(&stored).body(Vec::new())?).await
        && stored.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true)
    {
        obj["spec"]["unschedulable"] = json!(true);
    }
    check(&obj, "the local node")?;
    api::signing::sign(&mut obj, cluster.operator, now).map_err(|e| anyhow::anyhow!("{e}"))?;
    put_signed(&member, &obj).await?;
    let price = json!({ "cpu": 0, "memory": 0, "storage": 0 });
    let mut offer = offer_object(&node.file.name, &capacity, &price, jurisdiction, None, &json!({}));
    check(&offer, "the local node's offer")?;
    api::signing::sign(&mut offer, cluster.operator, now).map_err(|e| anyhow::anyhow!("{e}"))?;
    put_signed(&member, &offer).await
}
