//! The node agent (`ui node run`): registers nothing by itself (its Node is signed by the
//! operator with `ui node register`), heartbeats the node's Lease, runs the Replicas bound to
//! the node in containers (libcontainer) or plain processes, reports their status, and serves
//! their output to the control plane.
//!
//! - `node.rs`: the agent's loop (Lease, watch of bound Replicas, one supervisor per replica,
//!   restart policy, adoption of runs an earlier agent left).
//! - `shim.rs`: the per-run process that makes the container and waits for it.
//! - `oci.rs`: the container's OCI configuration. `cgroup.rs`: what a cgroup measured.
//! - `images.rs`: where a run's root comes from: a directory by name, or an OCI image
//!   (`reference.rs`: references; `registry.rs`: pulls; `import.rs`: `ui image import`;
//!   `store.rs`: the content-addressed store of unpacked images and its garbage collection).
//! - `logs.rs`: the log endpoint (TLS with the node's key, members only). `run.rs`: the files
//!   agent and shim exchange.

pub mod cgroup;
pub mod events;
pub mod exec;
pub mod ids;
pub mod images;
pub mod import;
pub mod logs;
pub mod metrics;
pub mod netns;
pub mod network;
pub mod node;
pub mod oci;
pub mod probe;
pub mod publish;
pub mod reference;
pub mod registry;
pub mod run;
pub mod setup;
pub mod shim;
pub mod store;
pub mod tunnel;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use kube::Client;
use tokio_util::sync::CancellationToken;

pub use node::Config;
pub use run::RuntimeKind;

/// Whether containers can run here: root, and cgroups to write. `Err` says why not.
pub fn containers_possible() -> Result<(), String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Err("containers need root (namespaces and cgroups); this agent runs as a normal user".into());
    }
    let cgroups = std::path::Path::new("/sys/fs/cgroup");
    let writable = nix::unistd::access(cgroups, nix::unistd::AccessFlags::W_OK).is_ok()
        || std::fs::read_dir(cgroups)
            .map(|d| {
                d.flatten().any(|e| nix::unistd::access(&e.path(), nix::unistd::AccessFlags::W_OK).is_ok())
            })
            .unwrap_or(false);
    if !writable {
        return Err("containers need a writable /sys/fs/cgroup".into());
    }
    Ok(())
}

/// Runs the agent and its log endpoint on `logs` (TLS with `node_key`, the node's own key)
/// until `shutdown`.
pub async fn run(
    client: Client,
    config: Config,
    logs: tokio::net::TcpListener,
    node_key: ed25519_dalek::SigningKey,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let tls = logs::tls_config(&config.node, &node_key)?;
    // The key is in the TLS configuration now; this copy goes (and is zeroed) at once.
    drop(node_key);
    let members = Arc::new(RwLock::new(BTreeSet::new()));
    let refresh = tokio::spawn(refresh_members(client.clone(), members.clone(), shutdown.clone()));
    let server = logs::LogServer {
        node: config.node.clone(),
        runs: config.state_dir.join("runs"),
        members,
        exec: config.exec.clone(),
    };
    let serve = tokio::spawn(logs::serve(logs, server, tls, shutdown.clone()));
    // Unused images go at start and every ten minutes.
    let gc = tokio::spawn(images::collect_garbage(Arc::new(config.clone()), shutdown.clone()));
    let result = node::run(client, config, shutdown).await;
    gc.abort();
    refresh.abort();
    serve.abort();
    result
}

/// The control plane's members, from the apiserver (`GET /members`), every minute.
async fn refresh_members(
    client: Client,
    members: Arc<RwLock<BTreeSet<String>>>,
    shutdown: CancellationToken,
) {
    loop {
        let request = http::Request::get("/members").body(Vec::new()).expect("a valid request");
        let every = match client.request::<serde_json::Value>(request).await {
            Ok(v) => {
                let set: BTreeSet<String> = v["members"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|m| m.as_str().map(str::to_owned)).collect())
                    .unwrap_or_default();
                *members.write().expect("not poisoned") = set;
                Duration::from_secs(60)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the control plane's members");
                Duration::from_secs(2)
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

/// The address the log endpoint is reached at, as a Node address (multiaddr): HTTP over TLS
/// with the node's key.
pub fn log_multiaddr(addr: SocketAddr) -> String {
    api::identity::NodeAddress(addr).to_string()
}
