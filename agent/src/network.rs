//! Replica networking on one node: each replica has its own network namespace with an `eth0`
//! on a bridge of its owner, so strangers' replicas share no link; replicas reach out through
//! the node (masquerade), and reach nothing private of the node's: not the node itself, not
//! its LAN, not another owner's replicas.
//!
//! - **Pool.** An agent takes a /16 for its replicas (`--replica-network`, else the first free
//!   one of 10.77.0.0/16 … 10.126.0.0/16), held by a lock in [`RUN_DIR`] while it runs and
//!   claimed for as long as its state names it (its replicas run on when it stops): several
//!   agents on one machine never share addresses, and none takes one overlapping a stopped
//!   agent's.
//! - **Owners.** Each owner (the workload's signer) with replicas here gets a /24 of the pool and
//!   a bridge `uvb…` holding its `.1`; each replica a free address of it and a veth pair
//!   `uvv…`, made by the shim between creating the container and starting it.
//! - **Names.** Each replica's `/etc/hosts` names its owner's replicas on the node: by replica
//!   name, by `WORKLOAD.NAMESPACE`, and by workload name for those of its own namespace. The
//!   file is bind-mounted and rewritten in place when one comes or goes.
//! - **Filter.** One nftables table per pool ([`ruleset`]); see there.
//!
//! Leases (who has which address) are kept in `network.json` in the node's state directory, so a
//! restarted agent gives an adopted run the same address. The decisions (addresses, names,
//! rules) are pure functions here; the shell (links, nft, files) is [`Network`].

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Where an agent's pool lock and each run's `hosts` and `resolv.conf` are: a path every
/// container uid can reach, as the files are bind-mounted into containers.
pub const RUN_DIR: &str = "/run/univrs/net";

/// The files a replica's network bind-mounts its own over: every image has them (made empty
/// where it has none), as its root filesystem is read-only.
pub const MOUNTED_FILES: &[&str] = &["etc/hosts", "etc/resolv.conf"];

/// The pools tried, in order, when none is given: 10.77.0.0/16 to 10.126.0.0/16.
const DEFAULT_POOLS: std::ops::RangeInclusive<u8> = 77..=126;

/// The state file in the node's state directory.
const LEASES_FILE: &str = "network.json";

/// An IPv4 network: base address and prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Net {
    /// The first address.
    pub base: Ipv4Addr,
    /// The prefix length.
    pub prefix: u8,
}

impl std::fmt::Display for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

impl std::str::FromStr for Net {
    type Err = String;

    /// `A.B.C.D/N`, with N from 8 to 22 (room for at least four owners' /24s) and no host bits.
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) =
            s.split_once('/').ok_or_else(|| format!("{s:?} is not a network: write A.B.C.D/N"))?;
        let base: Ipv4Addr = addr.parse().map_err(|_| format!("{addr:?} is not an IPv4 address"))?;
        let prefix: u8 = prefix.parse().map_err(|_| format!("{prefix:?} is not a prefix length"))?;
        if !(8..=22).contains(&prefix) {
            return Err(format!(
                "prefix /{prefix}: a replica network is from /8 to /22 (owners get a /24 each)"
            ));
        }
        let net = Net { base, prefix };
        if net.mask() & u32::from(base) != u32::from(base) {
            return Err(format!(
                "{s}: host bits are set (the network is {})",
                Net { base: net.first(), prefix }
            ));
        }
        Ok(net)
    }
}

impl Net {
    fn mask(self) -> u32 {
        u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0)
    }

    fn first(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.base) & self.mask())
    }

    /// Whether `ip` is in this network.
    pub fn contains(self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.base) & self.mask()
    }

    /// Whether the two networks share an address.
    pub fn overlaps(self, other: Net) -> bool {
        self.contains(other.first()) || other.contains(self.first())
    }

    /// How many /24s it holds.
    fn subnets(self) -> u32 {
        1 << (24 - u32::from(self.prefix))
    }

    /// Its `i`-th /24.
    fn subnet(self, i: u32) -> Net {
        Net { base: Ipv4Addr::from(u32::from(self.base) + (i << 8)), prefix: 24 }
    }

    /// Its `n`-th address.
    fn host(self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.base) + n)
    }
}

/// One replica's address and names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Lease {
    /// The workload's signer (whose bridge it is on).
    pub owner: String,
    /// Its namespace.
    pub namespace: String,
    /// Its workload.
    pub workload: String,
    /// Its name.
    pub replica: String,
    /// Its address.
    pub ip: Ipv4Addr,
}

/// Who has which /24 and which address: the pure core of [`Network`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Leases {
    /// The pool.
    pub pool: Option<Net>,
    /// Each owner's /24, by its index in the pool.
    pub owners: BTreeMap<String, u32>,
    /// Each run's lease, by run id.
    pub runs: BTreeMap<String, Lease>,
}

/// What a replica's run needs of the network, written into its run spec for the shim.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    /// The owner's bridge.
    pub bridge: String,
    /// The host end of the veth pair (the other end becomes the container's `eth0`).
    pub veth: String,
    /// The replica's address.
    pub ip: Ipv4Addr,
    /// Its prefix length (24).
    pub prefix: u8,
    /// The default route (the bridge's address).
    pub gateway: Ipv4Addr,
    /// The `hosts` file bind-mounted at `/etc/hosts`.
    pub hosts: PathBuf,
    /// The `resolv.conf` bind-mounted at `/etc/resolv.conf`.
    pub resolv: PathBuf,
}

impl Leases {
    /// The /24 of `owner`, given one if it has none.
    fn subnet_of(&mut self, owner: &str) -> Result<Net, String> {
        let pool = self.pool.ok_or("no replica network")?;
        if let Some(i) = self.owners.get(owner) {
            return Ok(pool.subnet(*i));
        }
        let used: BTreeSet<u32> = self.owners.values().copied().collect();
        let i = (0..pool.subnets()).find(|i| !used.contains(i)).ok_or_else(|| {
            format!("the replica network {pool} is full: {} owners have replicas here", used.len())
        })?;
        self.owners.insert(owner.to_owned(), i);
        Ok(pool.subnet(i))
    }

    /// The lease of run `id` (the same across its restarts), given one if it has none.
    pub fn lease(&mut self, id: &str, want: Lease) -> Result<Lease, String> {
        if let Some(l) = self.runs.get(id)
            && l.owner == want.owner
        {
            return Ok(l.clone());
        }
        let subnet = self.subnet_of(&want.owner)?;
        let used: BTreeSet<Ipv4Addr> =
            self.runs.values().filter(|l| l.owner == want.owner).map(|l| l.ip).collect();
        // .0 is the network, .1 the bridge, .255 broadcast.
        let ip = (2..255)
            .map(|n| subnet.host(n))
            .find(|ip| !used.contains(ip))
            .ok_or_else(|| format!("the owner's network {subnet} here is full (253 replicas)"))?;
        let lease = Lease { ip, ..want };
        self.runs.insert(id.to_owned(), lease.clone());
        Ok(lease)
    }

    /// Keeps the leases of the runs `keep` says to, and the /24s of owners that still have one.
    /// The owners whose /24 went.
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) -> Vec<String> {
        self.runs.retain(|id, _| keep(id));
        let live: BTreeSet<&str> = self.runs.values().map(|l| l.owner.as_str()).collect();
        let gone: Vec<String> = self.owners.keys().filter(|o| !live.contains(o.as_str())).cloned().collect();
        for o in &gone {
            self.owners.remove(o);
        }
        gone
    }

    /// Each owner's bridge and /24.
    pub fn bridges(&self) -> Vec<(String, Net)> {
        let Some(pool) = self.pool else { return Vec::new() };
        self.owners.iter().map(|(o, i)| (bridge_name(pool, o), pool.subnet(*i))).collect()
    }

    /// The `/etc/hosts` of run `id`: itself, its owner's other replicas on this node, and
    /// those of `remote` (replicas on other nodes the tunnel reaches) of its owner.
    pub fn hosts_of(&self, id: &str, remote: &[crate::tunnel::Remote]) -> Option<String> {
        let me = self.runs.get(id)?;
        let mut out = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
        let elsewhere: Vec<Lease> = remote
            .iter()
            .filter(|r| r.owner == me.owner)
            .map(|r| Lease {
                owner: r.owner.clone(),
                namespace: r.namespace.clone(),
                workload: r.workload.clone(),
                replica: r.replica.clone(),
                ip: r.ip,
            })
            .collect();
        let mut same: Vec<&Lease> =
            self.runs.values().filter(|l| l.owner == me.owner).chain(elsewhere.iter()).collect();
        // Its own line first, then by address: a stable file.
        same.sort_by_key(|l| (l.ip != me.ip, l.ip));
        for l in same {
            let mut names = vec![l.replica.clone()];
            if l.namespace == me.namespace {
                names.push(l.workload.clone());
            }
            names.push(format!("{}.{}", l.workload, l.namespace));
            out.push_str(&format!("{}\t{}\n", l.ip, names.join(" ")));
        }
        Some(out)
    }
}

/// A short hex digest of `parts`, for link names (at most 15 bytes with their prefix).
pub(crate) fn digest(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    h.finalize().iter().take(6).map(|b| format!("{b:02x}")).collect::<String>()[..11].to_owned()
}

/// The bridge of `owner` in `pool`: `uvb` and 11 hex digits.
pub fn bridge_name(pool: Net, owner: &str) -> String {
    format!("uvb{}", digest(&[&pool.to_string(), owner]))
}

/// The host end of run `id`'s veth pair: `uvv` and 11 hex digits.
pub fn veth_name(id: &str) -> String {
    format!("uvv{}", digest(&[id]))
}

/// The nftables table of `pool`.
pub fn table_name(pool: Net) -> String {
    format!("univrs_{}_{}", pool.base.to_string().replace('.', "_"), pool.prefix)
}

/// The ranges a replica never reaches (besides its own /24): private, shared, link-local,
/// loopback, reserved, benchmarking, multicast and future ranges (the node's LAN when it is a
/// private one, other owners' replicas, cloud metadata services). The node's own connected
/// networks are dropped by rules of their own ([`ruleset`]'s `local`).
const BLOCKED: &str = "0.0.0.0/8, 10.0.0.0/8, 100.64.0.0/10, 127.0.0.0/8, 169.254.0.0/16, 172.16.0.0/12, \
    192.0.0.0/24, 192.168.0.0/16, 198.18.0.0/15, 224.0.0.0/4, 240.0.0.0/4";

/// The tunnel's part of [`ruleset`]: its device and the flows it carries.
#[derive(Clone, Copy, Debug)]
pub struct TunnelRules<'a> {
    /// The TUN device.
    pub device: &'a str,
    /// (a replica here, a replica of the same owner on another node).
    pub pairs: &'a BTreeSet<(Ipv4Addr, Ipv4Addr)>,
}

/// The nftables script that makes the table of `pool` (replacing it at once) for `bridges`
/// (each owner's bridge and /24), allowing DNS to `nameservers`, with `local` the node's own
/// connected IPv4 networks (its LAN, whatever its range) and `tunnel` the flows to and from
/// other nodes' replicas:
/// - forward: a replica's packets carry its own address (none other leaves its bridge); it
///   reaches its own /24, the nameservers on port 53, its owner's replicas on other nodes
///   through the tunnel (only those pairs pass it, either way), and the internet; not another
///   owner's /24, not a blocked range ([`BLOCKED`]) nor the node's LAN. Nothing from outside
///   starts a connection to a replica: published ports go through the agent's proxy.
/// - input: a replica starts no connection to the node itself (its agent, its apiserver, its
///   other services); answers to the node's own connections (the proxy, probes) pass; nothing
///   from the tunnel reaches the node.
/// - IPv6 from or to a replica's link (`uv…`) is dropped altogether (replicas have IPv4 only;
///   the links' IPv6 is switched off too).
/// - postrouting: what leaves for elsewhere (not a `uv…` link) is masqueraded as the node.
///
/// The rules match this pool's own links, so that the tables of several agents on one
/// machine never judge each other's replicas.
pub fn ruleset(
    pool: Net,
    bridges: &[(String, Net)],
    nameservers: &[Ipv4Addr],
    local: &[Net],
    tunnel: Option<TunnelRules<'_>>,
) -> String {
    let table = table_name(pool);
    let mut forward = String::new();
    let mut input = String::new();
    for (b, s) in bridges {
        forward.push_str(&format!("\t\tiifname \"{b}\" ip saddr != {s} drop\n"));
        input.push_str(&format!("\t\tiifname \"{b}\" ip saddr != {s} drop\n"));
    }
    let mut sets = String::new();
    if let Some(t) = tunnel {
        let tun = t.device;
        let elements = |flip: bool| -> String {
            let e: Vec<String> = t
                .pairs
                .iter()
                .map(
                    |(here, there)| {
                        if flip { format!("{there} . {here}") } else { format!("{here} . {there}") }
                    },
                )
                .collect();
            if e.is_empty() { String::new() } else { format!("\t\telements = {{ {} }}\n", e.join(", ")) }
        };
        sets = format!(
            "\tset to_peers {{\n\t\ttype ipv4_addr . ipv4_addr\n{}\t}}\n\tset from_peers {{\n\t\ttype ipv4_addr . ipv4_addr\n{}\t}}\n",
            elements(false),
            elements(true)
        );
        forward.push_str(&format!(
            "\t\tiifname \"{tun}\" ip saddr . ip daddr @from_peers accept\n\
             \t\tiifname \"{tun}\" drop\n\
             \t\toifname \"{tun}\" tcp flags syn / syn,rst tcp option maxseg size set rt mtu\n\
             \t\toifname \"{tun}\" ip saddr . ip daddr @to_peers accept\n\
             \t\toifname \"{tun}\" drop\n"
        ));
        input.insert_str(0, &format!("\t\tiifname \"{tun}\" drop\n"));
    }
    forward.push_str(&format!("\t\tip daddr {pool} ct state established,related accept\n"));
    for (_, s) in bridges {
        forward.push_str(&format!("\t\tip saddr {s} ip daddr {s} accept\n"));
    }
    if !nameservers.is_empty() {
        let ns: Vec<String> = nameservers.iter().map(ToString::to_string).collect();
        forward.push_str(&format!(
            "\t\tiifname \"uvb*\" ip saddr {pool} ip daddr {{ {} }} meta l4proto {{ tcp, udp }} th dport 53 accept\n",
            ns.join(", ")
        ));
    }
    forward.push_str(&format!("\t\tiifname \"uvb*\" ip saddr {pool} ip daddr {{ {BLOCKED} }} drop\n"));
    for l in local {
        forward.push_str(&format!("\t\tiifname \"uvb*\" ip saddr {pool} ip daddr {l} drop\n"));
    }
    format!(
        "table ip {table}\n\
         delete table ip {table}\n\
         table inet {table}\n\
         delete table inet {table}\n\
         table inet {table} {{\n\
         {sets}\
         \tchain forward {{\n\
         \t\ttype filter hook forward priority filter - 5; policy accept;\n\
         \t\tmeta nfproto ipv6 iifname \"uv*\" drop\n\
         \t\tmeta nfproto ipv6 oifname \"uv*\" drop\n\
         {forward}\
         \t\tip daddr {pool} oifname \"uvb*\" drop\n\
         \t}}\n\
         \tchain input {{\n\
         \t\ttype filter hook input priority filter - 5; policy accept;\n\
         \t\tmeta nfproto ipv6 iifname \"uv*\" drop\n\
         {input}\
         \t\tip saddr {pool} ct state established,related accept\n\
         \t\tip saddr {pool} iifname != \"lo\" drop\n\
         \t}}\n\
         \tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\tip saddr {pool} ip daddr != {pool} oifname != \"uv*\" masquerade\n\
         \t}}\n\
         }}\n"
    )
}

/// The nameservers of `resolv_conf` a replica can use (not the node's loopback resolvers).
pub fn usable_nameservers(resolv_conf: &str) -> Vec<Ipv4Addr> {
    resolv_conf
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse::<Ipv4Addr>().ok())
        .filter(|ip| !ip.is_loopback() && !ip.is_unspecified())
        .take(3)
        .collect()
}

/// The node's resolver configuration: systemd-resolved's upstream list when the host uses its
/// stub on loopback.
fn host_resolv_conf() -> String {
    let main = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    if usable_nameservers(&main).is_empty()
        && let Ok(upstream) = std::fs::read_to_string("/run/systemd/resolve/resolv.conf")
    {
        return upstream;
    }
    main
}

/// A replica's `resolv.conf`: the node's usable nameservers, its options; not its search
/// domains (they would tell a stranger the node's internal names).
pub fn resolv_conf(nameservers: &[Ipv4Addr], host: &str) -> String {
    let mut out: String = nameservers.iter().map(|ns| format!("nameserver {ns}\n")).collect();
    for l in host.lines().map(str::trim) {
        if l.starts_with("options ") {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

/// The node's replica network: its pool (locked), leases, bridges and nftables table.
#[derive(Debug)]
pub struct Network {
    leases: Mutex<Leases>,
    state_file: PathBuf,
    nameservers: Vec<Ipv4Addr>,
    resolv: String,
    /// Held while the agent runs: no other agent takes the pool.
    _lock: nix::fcntl::Flock<File>,
    /// One change of links and rules at a time (two replicas of a new owner must not both make
    /// its bridge).
    changing: tokio::sync::Mutex<()>,
    /// The ruleset applied last.
    applied: Mutex<Option<String>>,
    /// The tunnel to other nodes' replicas: its device and what it carries.
    tunnel: Mutex<Option<(String, crate::tunnel::Plan)>>,
}

impl Network {
    /// Takes the pool ([`take_pool`]: `wanted`, else the one this node had, else a free default
    /// that no stopped agent's state still claims) and restores the leases of `state_dir`;
    /// removes the bridges an earlier agent left in the pool that no lease needs, and sets the
    /// node up to forward.
    pub async fn open(state_dir: &Path, wanted: Option<Net>, taken: &[Net]) -> anyhow::Result<Self> {
        which_nft()?;
        std::fs::create_dir_all(RUN_DIR).with_context(|| format!("cannot make {RUN_DIR}"))?;
        let state_file = state_dir.join(LEASES_FILE);
        let mut leases: Leases = match std::fs::read(&state_file) {
            Ok(b) => {
                serde_json::from_slice(&b).with_context(|| format!("{} is damaged", state_file.display()))?
            }
            Err(_) => Leases::default(),
        };
        let mine = std::fs::canonicalize(state_dir)
            .or_else(|_| std::path::absolute(state_dir))
            .with_context(|| format!("cannot resolve {}", state_dir.display()))?
            .join(LEASES_FILE);
        let (pool, lock) =
            take_pool(Path::new(RUN_DIR), &mine, wanted, leases.pool, taken, HAD_POOL_WAIT).await?;
        if leases.pool != Some(pool) {
            leases = Leases { pool: Some(pool), ..Leases::default() };
        }
        std::fs::write("/proc/sys/net/ipv4/ip_forward", b"1")
            .context("cannot enable IPv4 forwarding (/proc/sys/net/ipv4/ip_forward)")?;
        let resolv = host_resolv_conf();
        let net = Network {
            leases: Mutex::new(leases),
            state_file,
            nameservers: usable_nameservers(&resolv),
            resolv,
            _lock: lock,
            changing: tokio::sync::Mutex::new(()),
            applied: Mutex::new(None),
            tunnel: Mutex::new(None),
        };
        net.sync().await?;
        Ok(net)
    }

    /// The pool.
    pub fn pool(&self) -> Net {
        self.leases.lock().unwrap().pool.expect("a pool is taken at open")
    }

    /// The address and link of run `id`: its lease (the same across restarts), its owner's
    /// bridge, its `hosts` and `resolv.conf`, and those of its owner's other replicas here
    /// naming it.
    pub async fn attach(&self, id: &str, want: Lease) -> anyhow::Result<Attachment> {
        let _changing = self.changing.lock().await;
        let (lease, pool, subnet) = {
            let mut l = self.leases.lock().unwrap();
            let lease = l.lease(id, want).map_err(anyhow::Error::msg)?;
            let pool = l.pool.expect("open");
            let subnet = pool.subnet(l.owners[&lease.owner]);
            (lease, pool, subnet)
        };
        let bridge = bridge_name(pool, &lease.owner);
        let gateway = subnet.host(1);
        ensure_bridge(&bridge, gateway).await?;
        // Every run checks them: a new owner's /24, a LAN that changed, an apply that failed.
        self.apply_rules().await?;
        self.save()?;
        let dir = Path::new(RUN_DIR).join(id);
        std::fs::create_dir_all(&dir)?;
        let resolv = dir.join("resolv.conf");
        std::fs::write(&resolv, resolv_conf(&self.nameservers, &self.resolv))?;
        self.write_hosts(&lease.owner)?;
        Ok(Attachment {
            bridge,
            veth: veth_name(id),
            ip: lease.ip,
            prefix: 24,
            gateway,
            hosts: dir.join("hosts"),
            resolv,
        })
    }

    /// The address of run `id`, if it has one.
    pub fn ip_of(&self, id: &str) -> Option<Ipv4Addr> {
        self.leases.lock().unwrap().runs.get(id).map(|l| l.ip)
    }

    /// Keeps only the leases of runs `keep` says to: the others' addresses are freed, their
    /// files removed, their owners' names updated, and bridges no owner needs removed.
    pub async fn retain(&self, keep: impl Fn(&str) -> bool) -> anyhow::Result<()> {
        let _changing = self.changing.lock().await;
        let (gone_runs, gone_owners, touched) = {
            let mut l = self.leases.lock().unwrap();
            let before: BTreeMap<String, Lease> = l.runs.clone();
            let gone_owners = l.retain(&keep);
            let gone_runs: Vec<(String, Lease)> =
                before.into_iter().filter(|(id, _)| !l.runs.contains_key(id)).collect();
            let touched: BTreeSet<String> = gone_runs.iter().map(|(_, x)| x.owner.clone()).collect();
            let pool = l.pool.expect("open");
            let gone_bridges: Vec<String> = gone_owners.iter().map(|o| bridge_name(pool, o)).collect();
            (gone_runs, gone_bridges, touched)
        };
        if gone_runs.is_empty() {
            return Ok(());
        }
        for (id, _) in &gone_runs {
            let _ = std::fs::remove_dir_all(Path::new(RUN_DIR).join(id));
        }
        for owner in &touched {
            self.write_hosts(owner)?;
        }
        for b in &gone_owners {
            delete_link(b).await;
        }
        if !gone_owners.is_empty() {
            self.apply_rules().await?;
        }
        self.save()
    }

    /// Makes links and rules match the leases: bridges of this pool that no owner needs go
    /// (an earlier agent's), those that are needed exist, the rules are applied.
    async fn sync(&self) -> anyhow::Result<()> {
        let (pool, wanted) = {
            let l = self.leases.lock().unwrap();
            (l.pool.expect("open"), l.bridges())
        };
        let keep: BTreeSet<&str> = wanted.iter().map(|(b, _)| b.as_str()).collect();
        for b in bridges_in(pool).await? {
            if !keep.contains(b.as_str()) {
                delete_link(&b).await;
            }
        }
        for (b, subnet) in &wanted {
            ensure_bridge(b, subnet.host(1)).await?;
        }
        self.apply_rules().await?;
        let owners: Vec<String> = self.leases.lock().unwrap().owners.keys().cloned().collect();
        for o in owners {
            self.write_hosts(&o)?;
        }
        self.save()
    }

    /// Rewrites in place the `hosts` of every run of `owner` (bind-mounted: the inode stays).
    fn write_hosts(&self, owner: &str) -> std::io::Result<()> {
        let l = self.leases.lock().unwrap();
        for (id, lease) in &l.runs {
            if lease.owner != owner {
                continue;
            }
            let dir = Path::new(RUN_DIR).join(id);
            std::fs::create_dir_all(&dir)?;
            let remote =
                self.tunnel.lock().unwrap().as_ref().map(|(_, p)| p.remotes.clone()).unwrap_or_default();
            let text = l.hosts_of(id, &remote).unwrap_or_default();
            std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .open(dir.join("hosts"))
                .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()))?;
        }
        Ok(())
    }

    /// Applies the rules the leases and the node's networks call for, unless they are what was
    /// applied last (a failed apply is tried again at the next change or run).
    async fn apply_rules(&self) -> anyhow::Result<()> {
        let (pool, bridges) = {
            let l = self.leases.lock().unwrap();
            (l.pool.expect("open"), l.bridges())
        };
        let tunnel = self.tunnel.lock().unwrap().clone();
        // Only pairs whose replica here still has its address: a /24 freed and given to
        // another owner is never reached by the previous owner's replicas elsewhere, even
        // before the next plan.
        let pairs: BTreeSet<(Ipv4Addr, Ipv4Addr)> = tunnel
            .as_ref()
            .map(|(_, plan)| {
                let l = self.leases.lock().unwrap();
                let owner_of: BTreeMap<Ipv4Addr, &str> =
                    l.runs.values().map(|r| (r.ip, r.owner.as_str())).collect();
                plan.pairs
                    .iter()
                    .filter(|((here, _), p)| owner_of.get(here) == Some(&p.owner.as_str()))
                    .map(|(k, _)| *k)
                    .collect()
            })
            .unwrap_or_default();
        let local = local_networks(pool).await?;
        let wanted = ruleset(
            pool,
            &bridges,
            &self.nameservers,
            &local,
            tunnel.as_ref().map(|(device, _)| TunnelRules { device, pairs: &pairs }),
        );
        if self.applied.lock().unwrap().as_deref() != Some(wanted.as_str()) {
            nft(&wanted).await?;
            *self.applied.lock().unwrap() = Some(wanted);
        }
        if let Some((device, plan)) = &tunnel {
            let names: Vec<String> = bridges.into_iter().map(|(b, _)| b).collect();
            let pools: BTreeSet<Net> = plan.peers.values().map(|p| p.pool).collect();
            let pools: Vec<Net> = pools.into_iter().collect();
            // The rules already keep what passes; a routing failure only delays the tunnel.
            if let Err(e) = sync_routing(route_table(pool), device, &names, &pools).await {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "cannot route the replicas' packets into the tunnel"
                );
            }
        }
        Ok(())
    }

    /// Takes the tunnel's new plan (`device` its TUN): rules, routes and names follow.
    pub async fn set_tunnel(&self, device: &str, plan: crate::tunnel::Plan) -> anyhow::Result<()> {
        let _changing = self.changing.lock().await;
        let remotes_changed = {
            let mut t = self.tunnel.lock().unwrap();
            let changed = t.as_ref().is_none_or(|(_, p)| p.remotes != plan.remotes);
            *t = Some((device.to_owned(), plan));
            changed
        };
        self.apply_rules().await?;
        if remotes_changed {
            let owners: Vec<String> = self.leases.lock().unwrap().owners.keys().cloned().collect();
            for o in owners {
                self.write_hosts(&o)?;
            }
        }
        Ok(())
    }

    /// Every lease here (for the tunnel's plan).
    pub fn leases(&self) -> Vec<Lease> {
        self.leases.lock().unwrap().runs.values().cloned().collect()
    }

    fn save(&self) -> anyhow::Result<()> {
        let l = self.leases.lock().unwrap().clone();
        let dir = self.state_file.parent().expect("a state directory");
        crate::run::write_json(dir, LEASES_FILE, &l)
            .with_context(|| format!("cannot write {}", self.state_file.display()))
    }

    /// Removes this pool's bridges and table (the node is going away: `ui down`).
    pub async fn tear_down(state_dir: &Path) {
        let Ok(b) = std::fs::read(state_dir.join(LEASES_FILE)) else { return };
        let Ok(leases) = serde_json::from_slice::<Leases>(&b) else { return };
        let Some(pool) = leases.pool else { return };
        for (b, _) in leases.bridges() {
            delete_link(&b).await;
        }
        let _ = nft(&format!("table inet {0}\ndelete table inet {0}\n", table_name(pool))).await;
        let _ = sync_routing(route_table(pool), "", &[], &[]).await;
        let _ = std::fs::remove_file(state_dir.join(LEASES_FILE));
    }
}

/// The routing table of `pool`'s tunnel: the routes to peers' pools, looked up for packets
/// from this pool's bridges only.
pub fn route_table(pool: Net) -> u32 {
    let d = digest(&["route table", &pool.to_string()]);
    // Above the reserved ids (253 default, 254 main, 255 local), below 2^31.
    0x1000_0000 | (u32::from_str_radix(&d[..7], 16).expect("hex") & 0x0fff_ffff)
}

/// The priority of the rules that send the bridges' packets to [`route_table`] (before the
/// main table, 32766).
const RULE_PRIORITY: u32 = 1000;

/// Makes the policy routing of a tunnel match: one rule per bridge (`iif BRIDGE lookup
/// TABLE`), and in `table` one route per peer pool into `device`.
async fn sync_routing(table: u32, device: &str, bridges: &[String], pools: &[Net]) -> anyhow::Result<()> {
    use futures_util::TryStreamExt;
    use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
    use rtnetlink::packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
    let handle = rtnl().await?;
    let rules: Vec<RuleMessage> = handle.rule().get(rtnetlink::IpVersion::V4).execute().try_collect().await?;
    let mut have = BTreeSet::new();
    for r in rules {
        let t = r
            .attributes
            .iter()
            .find_map(|a| if let RuleAttribute::Table(t) = a { Some(*t) } else { None })
            .unwrap_or(u32::from(r.header.table));
        if t != table {
            continue;
        }
        let iif = r
            .attributes
            .iter()
            .find_map(|a| if let RuleAttribute::Iifname(n) = a { Some(n.clone()) } else { None });
        match iif {
            Some(n) if bridges.contains(&n) && !have.contains(&n) => {
                have.insert(n);
            }
            _ => handle.rule().del(r).execute().await.context("cannot remove a routing rule")?,
        }
    }
    for b in bridges.iter().filter(|b| !have.contains(*b)) {
        handle
            .rule()
            .add()
            .v4()
            .input_interface(b.clone())
            .table_id(table)
            .action(RuleAction::ToTable)
            .priority(RULE_PRIORITY)
            .execute()
            .await
            .with_context(|| format!("cannot route bridge {b}'s packets by table {table}"))?;
    }
    let routes: Vec<RouteMessage> = handle
        .route()
        .get(rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new().table_id(table).build())
        .execute()
        .try_collect()
        .await?;
    let mut have = BTreeSet::new();
    for r in routes {
        let t = r
            .attributes
            .iter()
            .find_map(|a| if let RouteAttribute::Table(t) = a { Some(*t) } else { None })
            .unwrap_or(u32::from(r.header.table));
        if t != table {
            continue;
        }
        let dst = r.attributes.iter().find_map(|a| match a {
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => {
                Some(Net { base: *ip, prefix: r.header.destination_prefix_length })
            }
            _ => None,
        });
        match dst {
            Some(n) if pools.contains(&n) && !have.contains(&n) => {
                have.insert(n);
            }
            _ => handle.route().del(r).execute().await.context("cannot remove a tunnel route")?,
        }
    }
    for p in pools.iter().filter(|p| !have.contains(*p)) {
        let index = crate::netns::index_of(&handle, device)
            .await
            .with_context(|| format!("no tunnel device {device}"))?;
        let route = rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(p.base, p.prefix)
            .output_interface(index)
            .table_id(table)
            .build();
        match handle.route().add(route).execute().await {
            Ok(()) => {}
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -nix::libc::EEXIST => {}
            Err(e) => return Err(e).with_context(|| format!("cannot route {p} into the tunnel")),
        }
    }
    Ok(())
}

/// How long an agent waits for the pool it had: the lock of an agent just killed is released
/// only once its process is gone.
const HAD_POOL_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Takes a pool and its lock in `run_dir` for the agent whose state file is `mine`: `wanted`,
/// else the one it `had`, else the first default that overlaps none of `taken` (the pools other
/// nodes advertise), else the first default; never one overlapping a pool another agent's
/// state still claims. Its own pool (the one it had) it waits up to `had_wait` for.
///
/// A lock tells only that an agent runs. An agent that stopped or died leaves its replicas
/// running on its pool's bridges, and taking that pool (or one overlapping it) would delete
/// them; so the agent holding a lock also writes a claim (`<table>.owner`: the pool and its
/// state file), and the pool stays its own for as long as that state file names it (until
/// `ui down` or its state is removed).
async fn take_pool(
    run_dir: &Path,
    mine: &Path,
    wanted: Option<Net>,
    had: Option<Net>,
    taken: &[Net],
    had_wait: std::time::Duration,
) -> anyhow::Result<(Net, nix::fcntl::Flock<File>)> {
    // Another agent's claim on an address of `p`, if any.
    let kept_from_me = |p: Net| claims(run_dir).into_iter().find(|(c, o)| c.overlaps(p) && o != mine);
    let kept = |p: Net, (c, o): (Net, PathBuf)| {
        anyhow::anyhow!(
            "the replica network {p} overlaps {c}, kept for the replicas of the node agent whose state is {} (until `ui down` there or that state is removed): choose another with --replica-network",
            o.display()
        )
    };
    let chosen = match wanted.or(had) {
        Some(p) => {
            if let Some(claim) = kept_from_me(p) {
                return Err(kept(p, claim));
            }
            // Its own pool: the lock of the agent just before it goes only with its process.
            let wait = if had == Some(p) { had_wait } else { std::time::Duration::ZERO };
            let deadline = tokio::time::Instant::now() + wait;
            let lock = loop {
                if let Some(l) = lock_pool(run_dir, p) {
                    break l;
                }
                if tokio::time::Instant::now() >= deadline {
                    anyhow::bail!("the replica network {p} is in use by another node agent on this machine");
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            };
            // Claimed between the look and the lock by an agent that has since stopped.
            if let Some(claim) = kept_from_me(p) {
                return Err(kept(p, claim));
            }
            (p, lock)
        }
        None => {
            let all = DEFAULT_POOLS.map(|b| Net { base: Ipv4Addr::new(10, b, 0, 0), prefix: 16 });
            let (free, advertised): (Vec<Net>, Vec<Net>) =
                all.partition(|p| !taken.iter().any(|t| t.overlaps(*p)));
            let known = claims(run_dir);
            free.into_iter()
                .chain(advertised)
                .filter(|p| !known.iter().any(|(c, o)| c.overlaps(*p) && o != mine))
                .find_map(|p| {
                    let l = lock_pool(run_dir, p)?;
                    kept_from_me(p).is_none().then_some((p, l))
                })
                .context("every default replica network (10.77.0.0/16 to 10.126.0.0/16) is in use by, or kept for the replicas of, another node agent on this machine (a stopped agent's until `ui down` or its state is removed): choose one with --replica-network")?
        }
    };
    let name = format!("{}.owner", table_name(chosen.0));
    crate::run::write_json(run_dir, &name, &Claim { pool: chosen.0, state: mine.to_owned() })
        .with_context(|| format!("cannot write {}", run_dir.join(&name).display()))?;
    Ok(chosen)
}

/// What `<table>.owner` says: whose state keeps which pool.
#[derive(Serialize, Deserialize)]
struct Claim {
    pool: Net,
    state: PathBuf,
}

/// Every pool an agent's state still keeps (its state file names it), with that state file.
fn claims(run_dir: &Path) -> Vec<(Net, PathBuf)> {
    /// More than a claim or a state file of an agent ever holds.
    const LIMIT: u64 = 1 << 20;
    let read = |path: &Path| -> Option<Vec<u8>> {
        let meta = std::fs::symlink_metadata(path).ok()?;
        (meta.is_file() && meta.len() <= LIMIT).then(|| std::fs::read(path).ok()).flatten()
    };
    let Ok(entries) = std::fs::read_dir(run_dir) else { return Vec::new() };
    entries
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "owner"))
        .filter_map(|e| serde_json::from_slice::<Claim>(&read(&e.path())?).ok())
        .filter(|c| {
            read(&c.state)
                .and_then(|b| serde_json::from_slice::<Leases>(&b).ok())
                .is_some_and(|l| l.pool == Some(c.pool))
        })
        .map(|c| (c.pool, c.state))
        .collect()
}

/// Locks `pool` for this process, or `None` when another agent holds it.
fn lock_pool(run_dir: &Path, pool: Net) -> Option<nix::fcntl::Flock<File>> {
    let path = run_dir.join(format!("{}.lock", table_name(pool)));
    let f = File::options().create(true).truncate(false).write(true).open(path).ok()?;
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock).ok()
}

fn which_nft() -> anyhow::Result<()> {
    match std::process::Command::new("nft").arg("--version").output() {
        Ok(o) if o.status.success() => Ok(()),
        _ => anyhow::bail!(
            "replicas' networks need nftables' `nft` (Debian: apt install nftables), which was not found on PATH"
        ),
    }
}

/// Runs an nftables script.
async fn nft(script: &str) -> anyhow::Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("cannot run nft")?;
    child.stdin.take().expect("piped").write_all(script.as_bytes()).await?;
    let out = child.wait_with_output().await?;
    anyhow::ensure!(
        out.status.success(),
        "nft refused the replica network's rules: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

async fn rtnl() -> anyhow::Result<rtnetlink::Handle> {
    let (connection, handle, _) = rtnetlink::new_connection().context("cannot open a netlink socket")?;
    tokio::spawn(connection);
    Ok(handle)
}

/// Makes bridge `name` with address `gateway`/24, up, unless it exists.
async fn ensure_bridge(name: &str, gateway: Ipv4Addr) -> anyhow::Result<()> {
    let handle = rtnl().await?;
    if crate::netns::index_of(&handle, name).await.is_none() {
        match handle.link().add(rtnetlink::LinkBridge::new(name).build()).execute().await {
            Ok(()) => {}
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -nix::libc::EEXIST => {}
            Err(e) => return Err(e).with_context(|| format!("cannot make bridge {name}")),
        }
    }
    let index =
        crate::netns::index_of(&handle, name).await.with_context(|| format!("bridge {name} is gone"))?;
    match handle.address().add(index, gateway.into(), 24).execute().await {
        Ok(()) => {}
        // Already there (an earlier agent's bridge kept).
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -nix::libc::EEXIST => {}
        Err(e) => return Err(e).with_context(|| format!("cannot give bridge {name} address {gateway}")),
    }
    // IPv4 only: no IPv6 address on the bridge for a replica to reach the node at.
    let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6"), b"1");
    handle
        .link()
        .set(rtnetlink::LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .with_context(|| format!("cannot bring bridge {name} up"))
}

async fn delete_link(name: &str) {
    let Ok(handle) = rtnl().await else { return };
    if let Some(index) = crate::netns::index_of(&handle, name).await
        && let Err(e) = handle.link().del(index).execute().await
    {
        tracing::warn!(error = %e, "cannot remove link {name}");
    }
}

/// The node's own connected IPv4 networks (its LAN, whatever its range), not `pool`'s.
async fn local_networks(pool: Net) -> anyhow::Result<Vec<Net>> {
    use futures_util::TryStreamExt;
    use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
    use rtnetlink::packet_route::link::LinkAttribute;
    let handle = rtnl().await?;
    let links: Vec<_> = handle.link().get().execute().try_collect().await?;
    let name_of = |index: u32| {
        links.iter().find(|l| l.header.index == index).and_then(|l| {
            l.attributes.iter().find_map(|a| match a {
                LinkAttribute::IfName(n) => Some(n.clone()),
                _ => None,
            })
        })
    };
    let addrs: Vec<AddressMessage> = handle.address().get().execute().try_collect().await?;
    let mut out = BTreeSet::new();
    for a in addrs {
        let Some(name) = name_of(a.header.index) else { continue };
        if name == "lo" || name.starts_with("uv") {
            continue;
        }
        for attr in &a.attributes {
            if let AddressAttribute::Address(std::net::IpAddr::V4(ip)) = attr
                && !pool.contains(*ip)
            {
                let prefix = a.header.prefix_len.min(32);
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                out.insert(Net { base: Ipv4Addr::from(u32::from(*ip) & mask), prefix });
            }
        }
    }
    Ok(out.into_iter().collect())
}

/// The `uvb…` bridges holding an address in `pool`.
async fn bridges_in(pool: Net) -> anyhow::Result<Vec<String>> {
    use futures_util::TryStreamExt;
    use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
    use rtnetlink::packet_route::link::LinkAttribute;
    let handle = rtnl().await?;
    let addrs: Vec<AddressMessage> = handle.address().get().execute().try_collect().await?;
    let mut indexes = BTreeSet::new();
    for a in addrs {
        for attr in &a.attributes {
            if let AddressAttribute::Address(std::net::IpAddr::V4(ip)) = attr
                && pool.contains(*ip)
            {
                indexes.insert(a.header.index);
            }
        }
    }
    let links: Vec<_> = handle.link().get().execute().try_collect().await?;
    Ok(links
        .into_iter()
        .filter(|l| indexes.contains(&l.header.index))
        .filter_map(|l| {
            l.attributes.iter().find_map(|a| match a {
                LinkAttribute::IfName(n) if n.starts_with("uvb") => Some(n.clone()),
                _ => None,
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A state directory whose `network.json` names `pool`, as an agent leaves it.
    fn state_naming(pool: Option<Net>) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(LEASES_FILE);
        std::fs::write(&file, serde_json::to_vec(&Leases { pool, ..Leases::default() }).unwrap()).unwrap();
        (dir, file)
    }

    const WAIT: std::time::Duration = std::time::Duration::from_millis(300);

    #[tokio::test]
    async fn a_stopped_agent_s_pool_is_kept_for_it_until_its_state_lets_it_go() {
        let run = tempfile::tempdir().unwrap();
        let first: Net = "10.77.0.0/16".parse().unwrap();
        let second: Net = "10.78.0.0/16".parse().unwrap();
        // Agent A takes the first free default, then dies (its lock goes with it).
        let (_a_dir, a) = state_naming(None);
        let (pool, lock) = take_pool(run.path(), &a, None, None, &[], WAIT).await.unwrap();
        assert_eq!(pool, first);
        drop(lock);
        std::fs::write(&a, serde_json::to_vec(&Leases { pool: Some(first), ..Leases::default() }).unwrap())
            .unwrap();
        // A newcomer does not take it: A's replicas still run on its bridges.
        let (_b_dir, b) = state_naming(None);
        let (pool, b_lock) = take_pool(run.path(), &b, None, None, &[], WAIT).await.unwrap();
        assert_eq!(pool, second);
        // Nor when asked for it by name: the error names whose it is.
        let err = take_pool(run.path(), &b, Some(first), None, &[], WAIT).await.unwrap_err().to_string();
        assert!(err.contains("10.77.0.0/16") && err.contains(&a.display().to_string()), "{err}");
        // Nor one overlapping it.
        let part: Net = "10.77.16.0/20".parse().unwrap();
        let err = take_pool(run.path(), &b, Some(part), None, &[], WAIT).await.unwrap_err().to_string();
        assert!(err.contains("10.77.16.0/20 overlaps 10.77.0.0/16"), "{err}");
        // A, back, has its pool again.
        let (pool, a_lock) = take_pool(run.path(), &a, None, Some(first), &[], WAIT).await.unwrap();
        assert_eq!(pool, first);
        // A pool in use is refused to the agent that had it, once the wait is over.
        drop(b_lock);
        let held = lock_pool(run.path(), second).unwrap();
        let err = take_pool(run.path(), &b, None, Some(second), &[], WAIT).await.unwrap_err().to_string();
        assert!(err.contains("10.78.0.0/16 is in use"), "{err}");
        drop(held);
        // Once A's state no longer names it (`ui down`, or removed), the pool is free again.
        drop(a_lock);
        std::fs::remove_file(&a).unwrap();
        let (_c_dir, c) = state_naming(None);
        let (pool, _c_lock) = take_pool(run.path(), &c, None, None, &[], WAIT).await.unwrap();
        assert_eq!(pool, first);
    }

    fn lease(owner: &str, ns: &str, wl: &str, name: &str) -> Lease {
        Lease {
            owner: owner.into(),
            namespace: ns.into(),
            workload: wl.into(),
            replica: name.into(),
            ip: Ipv4Addr::UNSPECIFIED,
        }
    }

    fn leases() -> Leases {
        Leases { pool: Some("10.77.0.0/16".parse().unwrap()), ..Leases::default() }
    }

    #[test]
    fn networks_parse_with_a_clear_error() {
        assert_eq!("10.77.0.0/16".parse::<Net>().unwrap().to_string(), "10.77.0.0/16");
        assert!("10.77.0.1/16".parse::<Net>().unwrap_err().contains("host bits"));
        assert!("10.77.0.0/24".parse::<Net>().unwrap_err().contains("/22"));
        assert!("10.77.0.0".parse::<Net>().unwrap_err().contains("A.B.C.D/N"));
    }

    #[test]
    fn owners_get_their_own_slash_24_and_runs_keep_their_address() {
        let mut l = leases();
        let a1 = l.lease("r1", lease("alice", "default", "web", "web-1")).unwrap();
        let a2 = l.lease("r2", lease("alice", "default", "web", "web-2")).unwrap();
        let b1 = l.lease("r3", lease("bob", "default", "web", "web-1")).unwrap();
        assert_eq!(
            (a1.ip, a2.ip, b1.ip),
            (Ipv4Addr::new(10, 77, 0, 2), Ipv4Addr::new(10, 77, 0, 3), Ipv4Addr::new(10, 77, 1, 2))
        );
        // A restart keeps its address.
        assert_eq!(l.lease("r1", lease("alice", "default", "web", "web-1")).unwrap().ip, a1.ip);
        // Freed addresses and /24s are given again; an owner with no run left loses its /24.
        assert_eq!(l.retain(|id| id != "r1" && id != "r3"), vec!["bob".to_owned()]);
        assert_eq!(l.lease("r4", lease("carol", "x", "db", "db-1")).unwrap().ip, Ipv4Addr::new(10, 77, 1, 2));
        assert_eq!(l.lease("r5", lease("alice", "default", "web", "web-3")).unwrap().ip, a1.ip);
        assert_ne!(bridge_name(l.pool.unwrap(), "alice"), bridge_name(l.pool.unwrap(), "carol"));
        assert!(bridge_name(l.pool.unwrap(), "alice").len() <= 15 && veth_name("r1").len() <= 15);
    }

    #[test]
    fn a_full_network_is_an_error_not_a_shared_address() {
        let mut l = Leases { pool: Some("10.0.0.0/22".parse().unwrap()), ..Leases::default() };
        for o in ["a", "b", "c", "d"] {
            l.lease(o, lease(o, "n", "w", "r")).unwrap();
        }
        assert!(l.lease("e", lease("e", "n", "w", "r")).unwrap_err().contains("full"));
        // "a" has .2 already: 252 more.
        for i in 0..252 {
            l.lease(&format!("a{i}"), lease("a", "n", "w", "r")).unwrap_or_else(|e| panic!("{i}: {e}"));
        }
        assert!(l.lease("a-last", lease("a", "n", "w", "r")).unwrap_err().contains("253"));
    }

    #[test]
    fn hosts_name_the_owner_s_replicas_only() {
        let mut l = leases();
        l.lease("r1", lease("alice", "default", "web", "web-1")).unwrap();
        l.lease("r2", lease("alice", "default", "web", "web-2")).unwrap();
        l.lease("r3", lease("alice", "other", "db", "db-1")).unwrap();
        l.lease("r4", lease("bob", "default", "spy", "spy-1")).unwrap();
        let hosts = l.hosts_of("r2", &[]).unwrap();
        let lines: Vec<&str> = hosts.lines().skip(2).collect();
        assert_eq!(
            lines,
            [
                "10.77.0.3\tweb-2 web web.default",
                "10.77.0.2\tweb-1 web web.default",
                "10.77.0.4\tdb-1 db.other"
            ]
        );
        assert!(!hosts.contains("spy"));
        assert!(l.hosts_of("nobody", &[]).is_none());
        // Replicas on other nodes the tunnel reaches, of the same owner only.
        let remote = |owner: &str, ip: &str| crate::tunnel::Remote {
            owner: owner.into(),
            namespace: "default".into(),
            workload: "web".into(),
            replica: format!("web-{ip}"),
            ip: ip.parse().unwrap(),
            node: "n2".into(),
        };
        let hosts = l.hosts_of("r2", &[remote("alice", "10.78.0.2"), remote("bob", "10.78.1.2")]).unwrap();
        assert!(hosts.contains("10.78.0.2\tweb-10.78.0.2 web web.default\n"), "{hosts}");
        assert!(!hosts.contains("10.78.1.2"), "{hosts}");
    }

    #[test]
    fn rules_keep_owners_apart_and_the_node_private() {
        let pool: Net = "10.77.0.0/16".parse().unwrap();
        let subnets = [pool.subnet(0), pool.subnet(1)];
        let lan = Net { base: Ipv4Addr::new(192, 0, 2, 0), prefix: 24 };
        let bridges = [("uvb0".to_owned(), subnets[0]), ("uvb1".to_owned(), subnets[1])];
        let pairs = BTreeSet::from([(Ipv4Addr::new(10, 77, 0, 2), Ipv4Addr::new(10, 78, 0, 2))]);
        let tunnel = TunnelRules { device: "uvt0", pairs: &pairs };
        let r = ruleset(pool, &bridges, &[Ipv4Addr::new(192, 168, 1, 1)], &[lan], Some(tunnel));
        assert!(r.contains("table inet univrs_10_77_0_0_16\ndelete table inet univrs_10_77_0_0_16\n"));
        // The node's LAN, whatever its range; IPv6 to and from replicas' links.
        assert!(r.contains("iifname \"uvb*\" ip saddr 10.77.0.0/16 ip daddr 192.0.2.0/24 drop"), "{r}");
        assert!(r.contains("meta nfproto ipv6 iifname \"uv*\" drop"));
        assert!(r.contains("ip saddr 10.77.0.0/24 ip daddr 10.77.0.0/24 accept"));
        assert!(r.contains("ip saddr 10.77.1.0/24 ip daddr 10.77.1.0/24 accept"));
        assert!(r.contains("ip daddr { 192.168.1.1 } meta l4proto { tcp, udp } th dport 53 accept"));
        // A replica's packets carry its own address, to the node too.
        assert_eq!(r.matches("iifname \"uvb1\" ip saddr != 10.77.1.0/24 drop").count(), 2, "{r}");
        // Owners' /24s are in 10/8: dropped between them, after their own /24 is accepted.
        let own = r.find("ip daddr 10.77.1.0/24 accept").unwrap();
        let private = r.find("ip saddr 10.77.0.0/16 ip daddr { 0.0.0.0/8, 10.0.0.0/8").unwrap();
        assert!(own < private);
        // The tunnel carries the pairs only, either way, before anything private is dropped,
        // and never reaches the node.
        assert!(
            r.contains(
                "set to_peers {\n\t\ttype ipv4_addr . ipv4_addr\n\t\telements = { 10.77.0.2 . 10.78.0.2 }"
            ),
            "{r}"
        );
        assert!(
            r.contains(
                "set from_peers {\n\t\ttype ipv4_addr . ipv4_addr\n\t\telements = { 10.78.0.2 . 10.77.0.2 }"
            ),
            "{r}"
        );
        let to_peers = r.find("oifname \"uvt0\" ip saddr . ip daddr @to_peers accept").unwrap();
        assert!(to_peers < private && r[to_peers..].contains("oifname \"uvt0\" drop"));
        assert!(
            r.contains("iifname \"uvt0\" ip saddr . ip daddr @from_peers accept\n\t\tiifname \"uvt0\" drop")
        );
        let input = r.find("chain input").unwrap();
        assert!(r[input..].contains("iifname \"uvt0\" drop"));
        assert!(
            r.contains("ip saddr 10.77.0.0/16 iifname != \"lo\" drop"),
            "the node's own connections pass"
        );
        assert!(r.contains("ip saddr 10.77.0.0/16 ip daddr != 10.77.0.0/16 oifname != \"uv*\" masquerade"));
        // Without a tunnel: no sets, nothing of it.
        let plain = ruleset(pool, &bridges, &[], &[lan], None);
        assert!(!plain.contains("to_peers") && !plain.contains("uvt"), "{plain}");
    }

    #[test]
    fn loopback_resolvers_are_not_given_to_replicas() {
        let host = "nameserver 127.0.0.53\nnameserver 192.168.1.1\nsearch lan\noptions edns0\n";
        let ns = usable_nameservers(host);
        assert_eq!(ns, [Ipv4Addr::new(192, 168, 1, 1)]);
        assert_eq!(
            resolv_conf(&ns, host),
            "nameserver 192.168.1.1\noptions edns0\n",
            "no search domains of the node"
        );
    }
}
