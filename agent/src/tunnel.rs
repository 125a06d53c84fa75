//! Replica traffic between nodes: WireGuard (userspace, boringtun's protocol core) between
//! the nodes that run replicas of one owner, keyed by the nodes' own key material.
//!
//! - **Keys.** A node's WireGuard key is derived from its age key ([`static_secret`]); its
//!   public half is `spec.tunnelKey` of the Node its operator signs, with the address
//!   `/ip4/A/udp/P/wireguard` (the port of its log endpoint, over UDP).
//! - **Peers.** [`plan`] (pure): a node sets up a peer only for nodes that run a replica of a
//!   workload that also has a replica here, whose signer is the owner of the replicas here.
//!   Those nodes are the ones the control plane placed the owner's replicas on, under the
//!   owner's TrustPolicy: a stranger's node never becomes a peer of yours unless your policy
//!   admits it and a replica of yours runs there.
//! - **Addresses.** Each node's replicas have addresses in its own pool, advertised in its
//!   Node status (`replicaNetwork`); a peer's replica is reached only at an address in the
//!   peer's advertised pool, and never at one in this node's own pool.
//! - **Flows.** Only pairs (a replica here, a replica of the same owner there) pass, checked
//!   twice: by the data path here ([`Tunnel`]) on the inner packet's addresses after
//!   decryption, and by the node's nftables rules ([`crate::network::ruleset`]).
//! - **Data path.** One TUN device (`uvt…`) and one UDP socket per agent. Packets from the
//!   replicas' bridges are routed into the TUN by a routing table of the agent's own (policy
//!   routing on the bridges, so the node's own traffic never enters it), encrypted to the peer
//!   whose pool holds the destination, and sent; what arrives is authenticated by the peer's
//!   key, decrypted and written to the TUN, from where the kernel forwards it to the bridge.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Packet, Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use sha2::{Digest, Sha256};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::network::{Lease, Net};

/// The tunnel's MTU: a 1500-byte link less WireGuard's overhead over IPv6 (80 bytes).
pub const MTU: usize = 1420;

/// Handshakes a node answers per second before it asks for cookies (WireGuard's DoS defence).
const HANDSHAKES_PER_SECOND: u64 = 100;

/// The node's WireGuard secret: derived from its age key (domain-separated, so neither key's
/// use says anything about the other's).
pub fn static_secret(age: &age::x25519::Identity) -> StaticSecret {
    use secrecy::ExposeSecret as _;
    let mut h = Sha256::new();
    h.update(b"univrs.io/v1 node tunnel key\0");
    h.update(age.to_string().expose_secret().as_bytes());
    StaticSecret::from(<[u8; 32]>::from(h.finalize()))
}

/// The public half of [`static_secret`], as the Node's `spec.tunnelKey` (base64).
pub fn public_key(age: &age::x25519::Identity) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(PublicKey::from(&static_secret(age)).as_bytes())
}

/// A node this node's replicas reach replicas on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerPlan {
    /// Its Node's name.
    pub node: String,
    /// Where it receives (its `/ip4/…/udp/…/wireguard` address).
    pub endpoint: SocketAddr,
    /// Its replicas' network (its Node's `status.replicaNetwork`).
    pub pool: Net,
}

/// A replica elsewhere of an owner with replicas here: named in its owner's `/etc/hosts` here.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Remote {
    /// Its owner (the workload's signer).
    pub owner: String,
    /// Its namespace.
    pub namespace: String,
    /// Its workload.
    pub workload: String,
    /// Its name.
    pub replica: String,
    /// Its address.
    pub ip: Ipv4Addr,
    /// Its node.
    pub node: String,
}

/// Whose a flow is and which peer carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pair {
    /// The owner of both replicas.
    pub owner: String,
    /// The WireGuard key of the peer the remote replica is on.
    pub peer: [u8; 32],
}

/// What the tunnel carries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// The peers, by WireGuard key.
    pub peers: BTreeMap<[u8; 32], PeerPlan>,
    /// The flows allowed, either way: (a replica here, a replica of the same owner on a peer).
    pub pairs: BTreeMap<(Ipv4Addr, Ipv4Addr), Pair>,
    /// The owners' replicas on peers, for names.
    pub remotes: Vec<Remote>,
    /// Flows left out because the plan reached [`MAX_PAIRS`].
    pub left_out: usize,
}

/// The most flows a node's tunnel allows (each is an element of two nftables sets).
pub const MAX_PAIRS: usize = 16_384;

/// What [`plan`] reads of a Node.
#[derive(Clone, Debug)]
pub struct NodeView {
    /// Its name.
    pub name: String,
    /// When it was registered (seconds since the epoch): of two Nodes claiming one key, the older has it (a key
    /// cannot be claimed before its node published it).
    pub created: Option<i64>,
    /// `spec.tunnelKey`.
    pub key: Option<[u8; 32]>,
    /// Its tunnel address.
    pub endpoint: Option<SocketAddr>,
    /// `status.replicaNetwork`.
    pub pool: Option<Net>,
}

/// What [`plan`] reads of a Workload.
#[derive(Clone, Debug)]
pub struct WorkloadView {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its uid.
    pub uid: String,
    /// Its signer.
    pub signer: String,
}

/// What [`plan`] reads of a Replica.
#[derive(Clone, Debug)]
pub struct ReplicaView {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// `spec.workload`.
    pub workload: String,
    /// The uid of the workload that owns it (its owner reference).
    pub owner_uid: Option<String>,
    /// `spec.nodeName`.
    pub node: Option<String>,
    /// `status.podIP`.
    pub ip: Option<Ipv4Addr>,
    /// Whether it is being deleted.
    pub deleting: bool,
}

/// The network peers' pools must lie in: 10.0.0.0/8, where every default pool is and which
/// replicas reach nothing of otherwise (a Node's claim cannot send other traffic into the
/// tunnel).
const PEER_POOLS: Net = Net { base: Ipv4Addr::new(10, 0, 0, 0), prefix: 8 };

/// Whether a peer's advertised pool may be routed into the tunnel here: a /16 to /22 inside
/// [`PEER_POOLS`], not overlapping `mine`.
fn pool_allowed(theirs: Net, mine: Net) -> bool {
    (16..=22).contains(&theirs.prefix) && PEER_POOLS.contains(theirs.base) && !theirs.overlaps(mine)
}

/// Whether this node sends to `endpoint` (its own tunnel at `mine`): an address of the same
/// family, not unspecified, multicast, broadcast or link-local (metadata services); loopback
/// only when this node's own tunnel is on loopback too (nodes on one machine).
fn endpoint_allowed(endpoint: SocketAddr, mine: SocketAddr) -> bool {
    let (SocketAddr::V4(e), SocketAddr::V4(m)) = (endpoint, mine) else { return false };
    let ip = *e.ip();
    endpoint.port() != 0
        && !ip.is_unspecified()
        && !ip.is_multicast()
        && !ip.is_broadcast()
        && !ip.is_link_local()
        && (!ip.is_loopback() || m.ip().is_loopback())
}

/// The peers, flows and names node `me` (replicas in `pool`, its tunnel at `endpoint`,
/// `local` its leases) needs: for each workload with a replica here whose signer owns that
/// replica, its replicas on other nodes that can be reached: their Node has a tunnel key (the
/// oldest claim of it) and an allowed address, and advertises an allowed pool
/// ([`pool_allowed`]) holding the replica's address. Flows are per owner and per peer key, so
/// nothing one Node claims (its pool, its key, its replicas' addresses) changes the flows of
/// an owner whose replicas it does not run.
pub fn plan(
    me: &str,
    pool: Net,
    endpoint: SocketAddr,
    local: &[Lease],
    workloads: &[WorkloadView],
    replicas: &[ReplicaView],
    nodes: &[NodeView],
) -> Plan {
    let mut out = Plan::default();
    let mut here: BTreeMap<&str, Vec<Ipv4Addr>> = BTreeMap::new();
    for l in local {
        here.entry(l.owner.as_str()).or_default().push(l.ip);
    }
    // Each key belongs to the oldest Node claiming it.
    let mut holder: BTreeMap<[u8; 32], &NodeView> = BTreeMap::new();
    for n in nodes {
        if let Some(key) = n.key {
            let older = |h: &&NodeView| (h.created, &h.name) <= (n.created, &n.name);
            if !holder.get(&key).is_some_and(older) {
                holder.insert(key, n);
            }
        }
    }
    let wanted: BTreeSet<(&str, &str, &str)> =
        local.iter().map(|l| (l.namespace.as_str(), l.workload.as_str(), l.owner.as_str())).collect();
    for (ns, wl, owner) in wanted {
        let Some(w) = workloads.iter().find(|w| w.namespace == ns && w.name == wl && w.signer == owner)
        else {
            continue;
        };
        for r in replicas {
            let (Some(node), Some(ip)) = (r.node.as_deref(), r.ip) else { continue };
            if r.namespace != ns
                || r.workload != wl
                || r.owner_uid.as_deref() != Some(w.uid.as_str())
                || r.deleting
                || node == me
            {
                continue;
            }
            let Some(n) = nodes.iter().find(|n| n.name == node) else { continue };
            let (Some(key), Some(to), Some(their_pool)) = (n.key, n.endpoint, n.pool) else { continue };
            if holder.get(&key).is_none_or(|h| h.name != n.name)
                || !endpoint_allowed(to, endpoint)
                || !pool_allowed(their_pool, pool)
                || !their_pool.contains(ip)
            {
                continue;
            }
            let mut added = false;
            for mine in &here[owner] {
                if out.pairs.len() >= MAX_PAIRS {
                    out.left_out += 1;
                    continue;
                }
                out.pairs.insert((*mine, ip), Pair { owner: owner.to_owned(), peer: key });
                added = true;
            }
            if !added {
                continue;
            }
            out.peers.insert(key, PeerPlan { node: node.to_owned(), endpoint: to, pool: their_pool });
            out.remotes.push(Remote {
                owner: owner.to_owned(),
                namespace: r.namespace.clone(),
                workload: r.workload.clone(),
                replica: r.name.clone(),
                ip,
                node: node.to_owned(),
            });
        }
    }
    out.remotes.sort();
    out.remotes.dedup();
    out
}

/// The source and destination of an IPv4 packet.
fn addresses(packet: &[u8]) -> Option<(Ipv4Addr, Ipv4Addr)> {
    if packet.len() < 20 || packet[0] >> 4 != 4 {
        return None;
    }
    let at = |i: usize| Ipv4Addr::new(packet[i], packet[i + 1], packet[i + 2], packet[i + 3]);
    Some((at(12), at(16)))
}

/// One peer's WireGuard state.
struct Peer {
    plan: PeerPlan,
    tunn: Tunn,
}

/// The data path: the TUN device, the UDP socket and a WireGuard session per peer.
pub struct Tunnel {
    name: String,
    tun: tokio_tun::Tun,
    udp: UdpSocket,
    secret: StaticSecret,
    public: PublicKey,
    limiter: Arc<RateLimiter>,
    /// By WireGuard key.
    peers: BTreeMap<[u8; 32], Peer>,
    /// Peer by the upper 24 bits of our session index.
    by_index: HashMap<u32, [u8; 32]>,
    next_index: u32,
    pairs: BTreeMap<(Ipv4Addr, Ipv4Addr), Pair>,
    /// Where it receives.
    endpoint: SocketAddr,
}

impl std::fmt::Debug for Tunnel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tunnel")
            .field("device", &self.name)
            .field("peers", &self.peers.len())
            .finish_non_exhaustive()
    }
}

/// The TUN device of the agent whose replicas are in `pool`: `uvt` and 11 hex digits.
pub fn device_name(pool: Net) -> String {
    format!("uvt{}", crate::network::digest(&[&pool.to_string()]))
}

/// Keeps the tunnel's plan current until `shutdown`: every few seconds, reads the workloads of
/// the replicas here, their replicas elsewhere and those replicas' Nodes, and when the plan
/// changes, hands it to the node's rules, routes and names (`net`) and to the data path.
pub async fn follow(
    client: kube::Client,
    node: String,
    net: Arc<crate::network::Network>,
    (device, endpoint): (String, SocketAddr),
    plans: watch::Sender<Plan>,
    shutdown: CancellationToken,
) {
    let mut last: Option<Plan> = None;
    loop {
        match read_plan(&client, &node, endpoint, &net).await {
            Ok(p) if last.as_ref() != Some(&p) => match net.set_tunnel(&device, p.clone()).await {
                Ok(()) => {
                    if p.left_out > 0 {
                        tracing::warn!(
                            left_out = p.left_out,
                            "more flows than the tunnel allows ({MAX_PAIRS})"
                        );
                    }
                    tracing::info!(peers = p.peers.len(), flows = p.pairs.len(), "tunnel plan changed");
                    let _ = plans.send(p.clone());
                    last = Some(p);
                }
                Err(e) => {
                    tracing::warn!(error = format!("{e:#}"), "cannot set up the tunnel's rules and routes")
                }
            },
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot read what the tunnel should carry"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

/// Reads what [`plan`] needs from the API.
async fn read_plan(
    client: &kube::Client,
    node: &str,
    endpoint: SocketAddr,
    net: &crate::network::Network,
) -> Result<Plan, kube::Error> {
    use api::kinds::{NodeSpec, ReplicaSpec, WorkloadSpec};
    use client::resource::{api_all, api_in, is_not_found};
    use kube::api::ListParams;
    let local = net.leases();
    let wanted: BTreeSet<(String, String)> =
        local.iter().map(|l| (l.namespace.clone(), l.workload.clone())).collect();
    let mut workloads = Vec::new();
    let mut replicas = Vec::new();
    for (ns, wl) in &wanted {
        let w = match api_in::<WorkloadSpec>(client, ns).get(wl).await {
            Ok(w) => w,
            Err(e) if is_not_found(&e) => continue,
            Err(e) => return Err(e),
        };
        workloads.push(WorkloadView {
            namespace: ns.clone(),
            name: wl.clone(),
            uid: w.uid().to_owned(),
            signer: w.signer().unwrap_or_default().to_owned(),
        });
        let selector = format!("univrs.io/workload={wl}");
        for r in api_in::<ReplicaSpec>(client, ns).list(&ListParams::default().labels(&selector)).await? {
            replicas.push(ReplicaView {
                namespace: ns.clone(),
                name: r.name().to_owned(),
                workload: r.spec.workload.clone(),
                owner_uid: r
                    .metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .find(|o| o.kind == "Workload")
                    .map(|o| o.uid.clone()),
                node: r.spec.node_name.clone(),
                ip: r.status.as_ref().and_then(|s| s.pod_ip.as_deref()).and_then(|ip| ip.parse().ok()),
                deleting: r.is_deleting(),
            });
        }
    }
    let names: BTreeSet<&str> =
        replicas.iter().filter_map(|r| r.node.as_deref()).filter(|n| *n != node).collect();
    let mut nodes = Vec::new();
    for n in names {
        match api_all::<NodeSpec>(client).get(n).await {
            Ok(n) => nodes.push(node_view(&n)),
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(plan(node, net.pool(), endpoint, &local, &workloads, &replicas, &nodes))
}

impl Tunnel {
    /// The TUN device's name.
    pub fn device(&self) -> &str {
        &self.name
    }

    /// Where it receives (for [`plan`]).
    pub fn endpoint(&self) -> SocketAddr {
        self.endpoint
    }

    /// Makes the TUN device `name` (up, [`MTU`]) and binds `listen` (UDP).
    pub async fn open(name: &str, listen: SocketAddr, secret: StaticSecret) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let tun = tokio_tun::Tun::builder()
            .name(name)
            .mtu(i32::try_from(MTU).expect("small"))
            .up()
            .build()
            .map_err(|e| anyhow::anyhow!("cannot make the tunnel device {name}: {e}"))?
            .pop()
            .context("no tunnel device")?;
        // Decrypted packets come from addresses the main table routes elsewhere: loose
        // reverse-path checks only; and no IPv6 on it.
        let _ = std::fs::write(format!("/proc/sys/net/ipv4/conf/{name}/rp_filter"), b"2");
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6"), b"1");
        let udp = UdpSocket::bind(listen)
            .await
            .with_context(|| format!("cannot listen for the tunnel on udp {listen}"))?;
        let public = PublicKey::from(&secret);
        Ok(Self {
            name: name.to_owned(),
            tun,
            udp,
            limiter: Arc::new(RateLimiter::new(&public, HANDSHAKES_PER_SECOND)),
            secret,
            public,
            peers: BTreeMap::new(),
            by_index: HashMap::new(),
            next_index: 1,
            pairs: BTreeMap::new(),
            endpoint: listen,
        })
    }

    /// Carries packets until `shutdown`, following the plans of `plans`.
    pub async fn serve(mut self, mut plans: watch::Receiver<Plan>, shutdown: CancellationToken) {
        let mut from_tun = vec![0u8; MTU + 64];
        let mut from_net = vec![0u8; 65536];
        let mut out = vec![0u8; 65536 + 64];
        let mut timers = tokio::time::interval(Duration::from_millis(250));
        let first = plans.borrow_and_update().clone();
        self.apply(&first, &mut out).await;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                changed = plans.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let plan = plans.borrow_and_update().clone();
                    self.apply(&plan, &mut out).await;
                }
                r = self.tun.recv(&mut from_tun) => match r {
                    Ok(n) => self.outbound(&from_tun[..n], &mut out).await,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read the tunnel device");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                r = self.udp.recv_from(&mut from_net) => {
                    if let Ok((n, from)) = r {
                        self.inbound(&from_net[..n], from, &mut out).await;
                    }
                }
                _ = timers.tick() => {
                    self.timers(&mut out).await;
                    // It resets once a second has passed; asked often, it never skips one.
                    self.limiter.reset_count();
                }
            }
        }
    }

    /// Takes a new plan: new peers get a session (a handshake at once, so a restarted node is
    /// reachable again without waiting for its peers' timers), changed ones a new one, gone ones
    /// none.
    async fn apply(&mut self, plan: &Plan, out: &mut [u8]) {
        self.peers.retain(|key, _| plan.peers.contains_key(key));
        self.by_index.retain(|_, key| self.peers.contains_key(key));
        for (key, want) in &plan.peers {
            if let Some(p) = self.peers.get_mut(key) {
                p.plan = want.clone();
                continue;
            }
            // A session index (its upper 24 bits) no live session has.
            let mut index = self.next_index;
            while self.by_index.contains_key(&index) {
                index = (index % 0x00ff_ffff) + 1;
            }
            self.next_index = (index % 0x00ff_ffff) + 1;
            // Its own rate limiter (boringtun's, per peer); the node-wide one checks every
            // datagram once before a peer is looked up.
            let mut tunn = Tunn::new(self.secret.clone(), PublicKey::from(*key), None, None, index, None);
            if let TunnResult::WriteToNetwork(b) = tunn.format_handshake_initiation(out, false) {
                let _ = self.udp.send_to(b, want.endpoint).await;
            }
            self.by_index.insert(index, *key);
            self.peers.insert(*key, Peer { plan: want.clone(), tunn });
        }
        self.pairs = plan.pairs.clone();
    }

    fn refuse(&self) {
        crate::metrics::metrics().tunnel("refused");
    }

    /// A packet a replica here sent into the tunnel: to the peer whose pool holds its
    /// destination, if the pair is allowed.
    async fn outbound(&mut self, packet: &[u8], out: &mut [u8]) {
        let Some(pair) = addresses(packet).and_then(|a| self.pairs.get(&a)) else { return self.refuse() };
        let Some(peer) = self.peers.get_mut(&pair.peer) else { return self.refuse() };
        if let TunnResult::WriteToNetwork(b) = peer.tunn.encapsulate(packet, out) {
            let _ = self.udp.send_to(b, peer.plan.endpoint).await;
            crate::metrics::metrics().tunnel("sent");
        }
    }

    /// A datagram from the network: authenticated by a peer's session, its packet written to
    /// the TUN if it is from that peer's pool and the pair is allowed.
    async fn inbound(&mut self, datagram: &[u8], from: SocketAddr, out: &mut [u8]) {
        let name = match self.limiter.verify_packet(Some(from.ip()), datagram, out) {
            Ok(Packet::HandshakeInit(h)) => {
                let Ok(half) = parse_handshake_anon(&self.secret, &self.public, &h) else {
                    return self.refuse();
                };
                Some(half.peer_static_public)
            }
            Ok(Packet::HandshakeResponse(p)) => self.by_index.get(&(p.receiver_idx >> 8)).copied(),
            Ok(Packet::PacketCookieReply(p)) => self.by_index.get(&(p.receiver_idx >> 8)).copied(),
            Ok(Packet::PacketData(p)) => self.by_index.get(&(p.receiver_idx >> 8)).copied(),
            Err(TunnResult::WriteToNetwork(cookie)) => {
                let _ = self.udp.send_to(cookie, from).await;
                return;
            }
            Err(_) => return self.refuse(),
        };
        let Some(key) = name else { return self.refuse() };
        let Some(peer) = self.peers.get_mut(&key) else { return self.refuse() };
        match peer.tunn.decapsulate(Some(from.ip()), datagram, out) {
            TunnResult::WriteToNetwork(b) => {
                let _ = self.udp.send_to(b, from).await;
                // Packets queued while the handshake went on.
                while let TunnResult::WriteToNetwork(b) = peer.tunn.decapsulate(None, &[], out) {
                    let _ = self.udp.send_to(b, from).await;
                }
            }
            TunnResult::WriteToTunnelV4(packet, src) => {
                let ok = peer.plan.pool.contains(src)
                    && addresses(packet).is_some_and(|(s, d)| {
                        s == src && self.pairs.get(&(d, s)).is_some_and(|p| p.peer == key)
                    });
                if ok {
                    let _ = self.tun.send(packet).await;
                    crate::metrics::metrics().tunnel("received");
                } else {
                    self.refuse();
                }
            }
            TunnResult::WriteToTunnelV6(..) | TunnResult::Err(_) => self.refuse(),
            TunnResult::Done => {}
        }
    }

    /// WireGuard's timers: handshakes retried and renewed, keepalives, expired sessions.
    async fn timers(&mut self, out: &mut [u8]) {
        for peer in self.peers.values_mut() {
            if let TunnResult::WriteToNetwork(b) = peer.tunn.update_timers(out) {
                let _ = self.udp.send_to(b, peer.plan.endpoint).await;
            }
        }
    }
}

/// The Node name, WireGuard key and tunnel address a Node advertises, as [`plan`] reads them.
pub fn node_view(node: &client::resource::Kube<api::kinds::NodeSpec>) -> NodeView {
    NodeView {
        name: node.metadata.name.clone().unwrap_or_default(),
        created: node.metadata.creation_timestamp.as_ref().map(|t| t.0.as_second()),
        key: node.spec.tunnel_key.as_deref().and_then(api::identity::tunnel_key_bytes),
        endpoint: api::identity::TunnelAddress::find(&node.spec.addresses).map(|a| a.0),
        pool: node.status.as_ref().and_then(|s| s.replica_network.as_deref()).and_then(|p| p.parse().ok()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(owner: &str, wl: &str, replica: &str, ip: &str) -> Lease {
        Lease {
            owner: owner.into(),
            namespace: "default".into(),
            workload: wl.into(),
            replica: replica.into(),
            ip: ip.parse().unwrap(),
        }
    }

    fn replica(wl: &str, uid: &str, name: &str, node: &str, ip: &str) -> ReplicaView {
        ReplicaView {
            namespace: "default".into(),
            name: name.into(),
            workload: wl.into(),
            owner_uid: Some(uid.into()),
            node: Some(node.into()),
            ip: Some(ip.parse().unwrap()),
            deleting: false,
        }
    }

    fn node(name: &str, key: u8, pool: &str) -> NodeView {
        NodeView {
            name: name.into(),
            created: Some(1_000_000 + i64::from(key)),
            key: Some([key; 32]),
            endpoint: Some(format!("192.0.2.{key}:7000").parse().unwrap()),
            pool: Some(pool.parse().unwrap()),
        }
    }

    fn workload(name: &str, uid: &str, signer: &str) -> WorkloadView {
        WorkloadView {
            namespace: "default".into(),
            name: name.into(),
            uid: uid.into(),
            signer: signer.into(),
        }
    }

    const ME: &str = "192.0.2.1:7000";

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn peers_are_the_nodes_of_the_owner_s_workloads_here_and_flows_stay_within_the_owner() {
        let pool: Net = "10.77.0.0/16".parse().unwrap();
        let local = [
            lease("alice", "web", "web-a", "10.77.0.2"),
            lease("alice", "db", "db-a", "10.77.0.3"),
            lease("bob", "spy", "spy-a", "10.77.1.2"),
        ];
        let workloads =
            [workload("web", "w1", "alice"), workload("spy", "s1", "bob"), workload("db", "d1", "mallory")];
        let replicas = [
            replica("web", "w1", "web-a", "me", "10.77.0.2"),
            replica("web", "w1", "web-b", "n2", "10.78.0.2"),
            // Not alice's workload any more (another uid): not a peer.
            replica("web", "old", "web-c", "n3", "10.79.0.2"),
            // db here is alice's lease but the workload's signer is mallory: nothing.
            replica("db", "d1", "db-b", "n3", "10.79.0.3"),
            // An address outside its node's pool, and a node whose pool overlaps ours.
            replica("web", "w1", "web-d", "n4", "10.1.0.2"),
            replica("web", "w1", "web-e", "n5", "10.77.5.2"),
            replica("spy", "s1", "spy-b", "n2", "10.78.1.2"),
        ];
        let nodes = [
            node("n2", 2, "10.78.0.0/16"),
            node("n3", 3, "10.79.0.0/16"),
            node("n4", 4, "10.80.0.0/16"),
            node("n5", 5, "10.77.0.0/16"),
        ];
        let p = plan("me", pool, ME.parse().unwrap(), &local, &workloads, &replicas, &nodes);
        assert_eq!(p.peers.values().map(|p| p.node.as_str()).collect::<Vec<_>>(), ["n2"]);
        let pairs: BTreeSet<_> = p.pairs.iter().map(|(k, v)| (*k, v.owner.as_str(), v.peer[0])).collect();
        assert_eq!(
            pairs,
            BTreeSet::from([
                ((ip("10.77.0.2"), ip("10.78.0.2")), "alice", 2),
                ((ip("10.77.0.3"), ip("10.78.0.2")), "alice", 2),
                ((ip("10.77.1.2"), ip("10.78.1.2")), "bob", 2),
            ]),
            "alice's replicas here reach alice's there, bob's bob's"
        );
        assert_eq!(p.remotes.len(), 2);
        assert!(p.remotes.iter().any(|r| r.owner == "alice" && r.replica == "web-b" && r.node == "n2"));
        // No replica here: nothing.
        assert_eq!(
            plan("me", pool, ME.parse().unwrap(), &[], &workloads, &replicas, &nodes),
            Plan::default()
        );
    }

    /// What a stranger's Node claims changes nothing of another owner's flows: a pool outside
    /// 10/8 or too wide, a copied key (the older Node keeps it), an endpoint on loopback or a
    /// metadata address.
    #[test]
    fn a_stranger_s_node_claims_take_nothing_from_another_owner() {
        let pool: Net = "10.77.0.0/16".parse().unwrap();
        let local = [lease("alice", "web", "web-a", "10.77.0.2"), lease("mallory", "m", "m-a", "10.77.1.2")];
        let workloads = [workload("web", "w1", "alice"), workload("m", "m1", "mallory")];
        let replicas = [
            replica("web", "w1", "web-b", "v", "10.78.0.2"),
            replica("m", "m1", "m-b", "wide", "8.8.8.8"),
            replica("m", "m1", "m-c", "copy", "10.90.0.2"),
            replica("m", "m1", "m-d", "loop", "10.91.0.2"),
            replica("m", "m1", "m-e", "meta", "10.92.0.2"),
        ];
        let mut wide = node("wide", 9, "8.0.0.0/8");
        wide.key = Some([10; 32]);
        // Claims v's key, registered after it.
        let mut copy = node("copy", 2, "10.90.0.0/16");
        copy.created = Some(2_000_000);
        let mut lo = node("loop", 11, "10.91.0.0/16");
        lo.endpoint = Some("127.0.0.1:22".parse().unwrap());
        let mut meta = node("meta", 12, "10.92.0.0/16");
        meta.endpoint = Some("169.254.169.254:80".parse().unwrap());
        let nodes = [node("v", 2, "10.78.0.0/16"), wide, copy, lo, meta];
        let p = plan("me", pool, ME.parse().unwrap(), &local, &workloads, &replicas, &nodes);
        assert_eq!(p.peers.values().map(|p| p.node.as_str()).collect::<Vec<_>>(), ["v"]);
        assert_eq!(p.pairs.keys().collect::<Vec<_>>(), [&(ip("10.77.0.2"), ip("10.78.0.2"))]);
        // Nodes on one machine (tunnels on loopback) may be peers on loopback.
        let p = plan("me", pool, "127.0.0.1:7000".parse().unwrap(), &local, &workloads, &replicas, &nodes);
        assert!(p.peers.values().any(|p| p.node == "loop"), "{p:?}");
    }

    #[test]
    fn flows_are_bounded() {
        let pool: Net = "10.77.0.0/16".parse().unwrap();
        let local: Vec<Lease> = (0..200)
            .map(|i| lease("alice", "web", &format!("a{i}"), &format!("10.77.{}.{}", i / 250, 2 + i % 250)))
            .collect();
        let replicas: Vec<ReplicaView> = (0..100)
            .map(|i| replica("web", "w1", &format!("b{i}"), "n2", &format!("10.78.0.{}", 2 + i)))
            .collect();
        let p = plan(
            "me",
            pool,
            ME.parse().unwrap(),
            &local,
            &[workload("web", "w1", "alice")],
            &replicas,
            &[node("n2", 2, "10.78.0.0/16")],
        );
        assert_eq!(p.pairs.len(), MAX_PAIRS);
        assert_eq!(p.left_out, 200 * 100 - MAX_PAIRS);
    }

    #[test]
    fn packets_are_read_for_their_addresses() {
        let mut p = [0u8; 20];
        p[0] = 0x45;
        p[12..16].copy_from_slice(&[10, 77, 0, 2]);
        p[16..20].copy_from_slice(&[10, 78, 0, 2]);
        assert_eq!(addresses(&p), Some((Ipv4Addr::new(10, 77, 0, 2), Ipv4Addr::new(10, 78, 0, 2))));
        p[0] = 0x60;
        assert_eq!(addresses(&p), None);
        assert_eq!(addresses(&p[..10]), None);
    }

    #[test]
    fn keys_are_derived_from_the_node_s_age_key_and_differ_between_nodes() {
        let a = age::x25519::Identity::generate();
        let b = age::x25519::Identity::generate();
        assert_eq!(public_key(&a), public_key(&a));
        assert_ne!(public_key(&a), public_key(&b));
        assert!(api::identity::tunnel_key_bytes(&public_key(&a)).is_some());
        // Not the age recipient's key itself.
        assert_ne!(public_key(&a), a.to_public().to_string());
    }

    /// A node finds the peer a handshake comes from by the initiator's static key.
    #[test]
    fn a_handshake_names_its_initiator() {
        let a_secret = StaticSecret::from([1u8; 32]);
        let b_secret = StaticSecret::from([2u8; 32]);
        let b_public = PublicKey::from(&b_secret);
        let mut a = Tunn::new(a_secret.clone(), b_public, None, None, 1, None);
        let mut out = vec![0u8; 2048];
        let mut packet = [0u8; 20];
        packet[0] = 0x45;
        // The first packet to a peer starts a handshake (and is queued).
        let init = match a.encapsulate(&packet, &mut out) {
            TunnResult::WriteToNetwork(b) => b.to_vec(),
            _ => panic!("a handshake initiation"),
        };
        let limiter = RateLimiter::new(&b_public, 10);
        let mut cookie = vec![0u8; 256];
        let Ok(Packet::HandshakeInit(h)) = limiter.verify_packet(None, &init, &mut cookie) else {
            panic!("a handshake initiation to b")
        };
        let half = parse_handshake_anon(&b_secret, &b_public, &h).unwrap();
        assert_eq!(half.peer_static_public, *PublicKey::from(&a_secret).as_bytes());
        // Another node's key does not open it.
        let c_secret = StaticSecret::from([3u8; 32]);
        assert!(parse_handshake_anon(&c_secret, &PublicKey::from(&c_secret), &h).is_err());
    }
}
