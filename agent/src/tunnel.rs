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
    /// Its WireGuard public key.
    pub key: [u8; 32],
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

/// What the tunnel carries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// The peers, by Node name.
    pub peers: BTreeMap<String, PeerPlan>,
    /// The flows allowed: (a replica here, a replica of the same owner on a peer), either way.
    pub pairs: BTreeSet<(Ipv4Addr, Ipv4Addr)>,
    /// The owners' replicas on peers, for names.
    pub remotes: Vec<Remote>,
}

/// What [`plan`] reads of a Node.
#[derive(Clone, Debug)]
pub struct NodeView {
    /// Its name.
    pub name: String,
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

/// The peers, flows and names node `me` (replicas in `pool`, `local` its leases) needs: for
/// each workload with a replica here whose signer owns that replica, its replicas on other
/// nodes that can be reached (a tunnel key and address, an advertised pool holding the
/// replica's address and overlapping neither this node's pool nor a peer's taken before).
pub fn plan(
    me: &str,
    pool: Net,
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
            let (Some(key), Some(endpoint), Some(their_pool)) = (n.key, n.endpoint, n.pool) else { continue };
            if !their_pool.contains(ip) || their_pool.overlaps(pool) {
                continue;
            }
            if out.peers.iter().any(|(name, p)| name != node && p.pool.overlaps(their_pool)) {
                continue;
            }
            out.peers.insert(node.to_owned(), PeerPlan { key, endpoint, pool: their_pool });
            for mine in &here[owner] {
                out.pairs.insert((*mine, ip));
            }
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
    peers: BTreeMap<String, Peer>,
    /// Peer by the upper 24 bits of our session index.
    by_index: HashMap<u32, String>,
    next_index: u32,
    pairs: BTreeSet<(Ipv4Addr, Ipv4Addr)>,
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
    device: String,
    plans: watch::Sender<Plan>,
    shutdown: CancellationToken,
) {
    let mut last: Option<Plan> = None;
    loop {
        match read_plan(&client, &node, &net).await {
            Ok(p) if last.as_ref() != Some(&p) => match net.set_tunnel(&device, p.clone()).await {
                Ok(()) => {
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
    Ok(plan(node, net.pool(), &local, &workloads, &replicas, &nodes))
}

impl Tunnel {
    /// The TUN device's name.
    pub fn device(&self) -> &str {
        &self.name
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
            pairs: BTreeSet::new(),
        })
    }

    /// Carries packets until `shutdown`, following the plans of `plans`.
    pub async fn serve(mut self, mut plans: watch::Receiver<Plan>, shutdown: CancellationToken) {
        let mut from_tun = vec![0u8; MTU + 64];
        let mut from_net = vec![0u8; 65536];
        let mut out = vec![0u8; 65536 + 64];
        let mut timers = tokio::time::interval(Duration::from_millis(250));
        let mut second = tokio::time::interval(Duration::from_secs(1));
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
                _ = timers.tick() => self.timers(&mut out).await,
                _ = second.tick() => self.limiter.reset_count(),
            }
        }
    }

    /// Takes a new plan: new peers get a session (a handshake at once, so a restarted node is
    /// reachable again without waiting for its peers' timers), changed ones a new one, gone ones
    /// none.
    async fn apply(&mut self, plan: &Plan, out: &mut [u8]) {
        self.peers.retain(|name, p| plan.peers.get(name).is_some_and(|n| n.key == p.plan.key));
        self.by_index.retain(|_, name| self.peers.contains_key(name));
        for (name, want) in &plan.peers {
            if let Some(p) = self.peers.get_mut(name) {
                p.plan = want.clone();
                continue;
            }
            let index = self.next_index;
            self.next_index = (self.next_index % 0x00ff_ffff) + 1;
            let mut tunn = Tunn::new(
                self.secret.clone(),
                PublicKey::from(want.key),
                None,
                None,
                index,
                Some(self.limiter.clone()),
            );
            if let TunnResult::WriteToNetwork(b) = tunn.format_handshake_initiation(out, false) {
                let _ = self.udp.send_to(b, want.endpoint).await;
            }
            self.by_index.insert(index, name.clone());
            self.peers.insert(name.clone(), Peer { plan: want.clone(), tunn });
        }
        self.pairs = plan.pairs.clone();
    }

    fn refuse(&self) {
        crate::metrics::metrics().tunnel("refused");
    }

    /// A packet a replica here sent into the tunnel: to the peer whose pool holds its
    /// destination, if the pair is allowed.
    async fn outbound(&mut self, packet: &[u8], out: &mut [u8]) {
        let Some((src, dst)) = addresses(packet) else { return };
        if !self.pairs.contains(&(src, dst)) {
            return self.refuse();
        }
        let Some(peer) = self.peers.values_mut().find(|p| p.plan.pool.contains(dst)) else {
            return self.refuse();
        };
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
                self.peers.iter().find(|(_, p)| p.plan.key == half.peer_static_public).map(|(n, _)| n.clone())
            }
            Ok(Packet::HandshakeResponse(p)) => self.by_index.get(&(p.receiver_idx >> 8)).cloned(),
            Ok(Packet::PacketCookieReply(p)) => self.by_index.get(&(p.receiver_idx >> 8)).cloned(),
            Ok(Packet::PacketData(p)) => self.by_index.get(&(p.receiver_idx >> 8)).cloned(),
            Err(TunnResult::WriteToNetwork(cookie)) => {
                let _ = self.udp.send_to(cookie, from).await;
                return;
            }
            Err(_) => return self.refuse(),
        };
        let Some(peer) = name.and_then(|n| self.peers.get_mut(&n)) else { return self.refuse() };
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
                    && addresses(packet).is_some_and(|(s, d)| s == src && self.pairs.contains(&(d, s)));
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
        let p = plan("me", pool, &local, &workloads, &replicas, &nodes);
        assert_eq!(p.peers.keys().collect::<Vec<_>>(), ["n2"]);
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert_eq!(
            p.pairs,
            BTreeSet::from([
                (ip("10.77.0.2"), ip("10.78.0.2")),
                (ip("10.77.0.3"), ip("10.78.0.2")),
                (ip("10.77.1.2"), ip("10.78.1.2")),
            ]),
            "alice's replicas here reach alice's there, bob's bob's"
        );
        assert_eq!(p.remotes.len(), 2);
        assert!(p.remotes.iter().any(|r| r.owner == "alice" && r.replica == "web-b" && r.node == "n2"));
        // A deleted replica, or none here: no peer.
        assert_eq!(plan("me", pool, &[], &workloads, &replicas, &nodes), Plan::default());
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
