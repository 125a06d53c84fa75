//! The member-to-member transport: a libp2p swarm (TCP, Noise, Yamux) speaking one
//! request-response protocol with length-framed CBOR messages ([`Rpc`] → [`Reply`]).
//!
//! Noise authenticates both ends by their Ed25519 keys: a member's libp2p identity is its
//! `member.key`, so the `PeerId` of every connection is proven. A connection, inbound or
//! outbound, is kept only with a peer in the allowed set ([`Transport::allow`], which the layer
//! above, [`super::cluster`], keeps equal to the membership): anyone else is dropped right after
//! the handshake, before it can open a stream, so nothing it sends is read, decoded or queued.
//! A frame over its limit ([`Limits`]) is refused from its length prefix, unread. The swarm
//! lives in one task; callers talk to it through bounded channels.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt as _;
use libp2p::futures::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport, ResponseChannel};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, StreamProtocol, allow_block_list, connection_limits};
use tokio::sync::{mpsc, oneshot, watch};

use super::rpc::{MAX_REPLY_BYTES, MAX_REQUEST_BYTES, Reply, Rpc};

/// The protocol name (versioned: a member of another version is refused by protocol
/// negotiation). Version 2 frames every message with its length (version 1 read to the end of
/// the stream); version 3 adds [`Rpc::Writes`]. A member speaks both and each stream uses the
/// newest both ends know, so members of either version work together.
const PROTOCOL: &str = "/univrs/raft/3";

/// The protocol of members of the version before [`Rpc::Writes`]: everything else is the same,
/// and a `Writes` is never sent on it ([`TransportError::Unsupported`]). A `Writes` read on it
/// is served all the same (reading does not look at the protocol).
const PROTOCOL_V2: &str = "/univrs/raft/2";

/// Why a `Writes` was not written on a stream of [`PROTOCOL_V2`].
const NO_WRITES: &str = "the member speaks /univrs/raft/2, without writes sent together";

/// Commands (calls and answers) waiting for the swarm task; callers wait when it is full.
const COMMAND_QUEUE: usize = 256;

/// Requests waiting to be handled by the member; beyond that, a request is dropped (the peer
/// sees a failed RPC and retries, as Raft does). Each also holds one of its connection's
/// [`MAX_STREAMS`], so what waits here is bounded by the connections of members as well.
const INBOUND_QUEUE: usize = 256;

/// Calls waiting for their answer. openraft sends one message at a time per member and the
/// other calls are a client's forwarded write or read, so this is only reached when a peer
/// stops answering under load; then a call fails at once rather than growing the table until
/// the 120 s request timeout empties it.
const MAX_PENDING: usize = 1024;

/// Streams (requests either way) open at once on one connection, libp2p's default made
/// explicit: the requests a member's connection may hold in memory are at most 100 × 5 MiB
/// ([`MAX_REQUEST_BYTES`]); only members get a connection.
const MAX_STREAMS: usize = 100;

/// Connections still in their handshake (TCP accepted, Noise not done): anyone can open them,
/// so they are capped; each lasts at most libp2p's 10 s connection timeout.
const MAX_PENDING_INBOUND: u32 = 128;

/// Connections with one member (two members dialing each other at once make two).
const MAX_CONNECTIONS_PER_PEER: u32 = 4;

/// How long a connection with no request open is kept.
const IDLE: Duration = Duration::from_secs(60);

/// Why an RPC to a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The peer could not be dialed, closed the stream, or refused the protocol.
    #[error("member {peer} unreachable: {reason}")]
    Unreachable {
        /// The peer.
        peer: PeerId,
        /// What failed.
        reason: String,
    },
    /// The peer is not one this transport may connect with (not a member here).
    #[error("{0} is not a member this one may connect with")]
    NotAllowed(PeerId),
    /// The peer closed the connection before answering. A member does that right after the
    /// handshake with a key it does not know, so when it happens again and again the peer does
    /// not take this key for a member.
    #[error("member {0} closed the connection before answering")]
    Closed(PeerId),
    /// No answer in time.
    #[error("member {0} did not answer in time")]
    Timeout(PeerId),
    /// The member speaks an older protocol that cannot carry this message (a member of the
    /// version before [`Rpc::Writes`]); nothing of it was sent.
    #[error("member {0} speaks an older protocol without writes sent together: not sent")]
    Unsupported(PeerId),
    /// Too many calls are waiting for answers (see [`MAX_PENDING`]).
    #[error("too many calls to members are waiting for an answer: member {0} not called, retry later")]
    Busy(PeerId),
    /// The transport task is gone (the member is shutting down).
    #[error("the member transport is stopped")]
    Stopped,
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The address is not one the transport can use.
    #[error("bad member address {0:?}: expected IP:PORT")]
    BadAddress(String),
}

/// A request from a peer, to be answered once through its [`Responder`].
#[derive(Debug)]
pub struct Inbound {
    /// Who sent it (proven by the Noise handshake).
    pub peer: PeerId,
    /// What it asks.
    pub rpc: Rpc,
    /// Where the answer goes.
    pub responder: Responder,
}

/// Answers one inbound request.
#[derive(Debug)]
pub struct Responder {
    channel: ResponseChannel<Reply>,
    commands: mpsc::Sender<Command>,
}

impl Responder {
    /// Sends the answer.
    pub async fn respond(self, reply: Reply) {
        let _ = self.commands.send(Command::Respond { channel: self.channel, reply }).await;
    }
}

enum Command {
    Send { peer: PeerId, addr: Multiaddr, rpc: Rpc, reply: oneshot::Sender<Result<Reply, TransportError>> },
    Respond { channel: ResponseChannel<Reply>, reply: Reply },
}

/// The largest frames a transport reads (and writes): requests and replies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The largest request, in bytes.
    pub request: u64,
    /// The largest reply, in bytes.
    pub reply: u64,
}

impl Default for Limits {
    /// What members use: [`MAX_REQUEST_BYTES`] and [`MAX_REPLY_BYTES`], derived from the
    /// largest message a member sends (see `rpc.rs`).
    fn default() -> Self {
        Self { request: MAX_REQUEST_BYTES, reply: MAX_REPLY_BYTES }
    }
}

/// The handle of a running transport; clones share the swarm, which stops when the last
/// handle is dropped.
#[derive(Clone, Debug)]
pub struct Transport {
    commands: mpsc::Sender<Command>,
    local: PeerId,
    listen: SocketAddr,
    /// The peers a connection may be made with, either way (the swarm task follows it).
    allowed: Arc<watch::Sender<BTreeSet<PeerId>>>,
    /// Peers whose traffic is dropped both ways: fault injection for partition tests.
    blocked: Arc<Mutex<BTreeSet<PeerId>>>,
    task: Arc<AbortOnDrop>,
}

#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The libp2p identity of an Ed25519 secret key (a `member.key`).
pub fn keypair(secret: &ed25519_dalek::SigningKey) -> libp2p::identity::Keypair {
    let mut bytes = secret.to_bytes();
    libp2p::identity::Keypair::ed25519_from_bytes(&mut bytes).expect("an Ed25519 secret is 32 bytes")
}

/// The PeerId of a did:key, or `None` if `did` is not one.
///
/// Asked on every Raft RPC (whose member a request is from, whom a call goes to), for the same
/// few members: a PeerId costs a curve point's decompression each time, so up to
/// [`PEER_IDS_MAX`] are kept (emptied when full: bounded whatever dids it is given).
pub fn peer_id(did: &str) -> Option<PeerId> {
    if let Some(peer) = PEER_IDS.lock().ok().and_then(|peers| peers.get(did).copied()) {
        return Some(peer);
    }
    let key = api::identity::Did::parse(did).ok()?.verifying_key();
    let public = libp2p::identity::ed25519::PublicKey::try_from_bytes(key.as_bytes()).ok()?;
    let peer = libp2p::identity::PublicKey::from(public).to_peer_id();
    if let Ok(mut peers) = PEER_IDS.lock() {
        if peers.len() >= PEER_IDS_MAX {
            peers.clear();
        }
        peers.insert(did.to_owned(), peer);
    }
    Some(peer)
}

/// The PeerIds [`peer_id`] made lately, by did.
static PEER_IDS: std::sync::LazyLock<Mutex<HashMap<String, PeerId>>> =
    std::sync::LazyLock::new(Default::default);

/// Most PeerIds [`peer_id`] keeps.
const PEER_IDS_MAX: usize = 256;

/// `IP:PORT` as a TCP multiaddr.
pub fn multiaddr(addr: &str) -> Result<Multiaddr, TransportError> {
    let sock: SocketAddr = addr.parse().map_err(|_| TransportError::BadAddress(addr.to_owned()))?;
    Ok(Multiaddr::from(sock.ip()).with(Protocol::Tcp(sock.port())))
}

/// What the swarm runs. A connection is established only if every part accepts it: `allowed`
/// refuses any peer outside the allowed set right after the Noise handshake (so a stranger never
/// opens a stream, and none of its bytes is ever decoded), `limits` caps handshakes and
/// connections, `rpc` carries the requests.
#[derive(NetworkBehaviour)]
struct Behaviour {
    allowed: allow_block_list::Behaviour<allow_block_list::AllowedPeers>,
    limits: connection_limits::Behaviour,
    rpc: request_response::Behaviour<FrameCodec>,
}

impl Transport {
    /// Starts the swarm with `key` as its identity, listening on `listen` (port 0: any free
    /// port). Inbound requests arrive on the returned receiver. No peer may connect, nor be
    /// called, until it is [allowed](Self::allow).
    pub async fn start(
        key: &ed25519_dalek::SigningKey,
        listen: SocketAddr,
    ) -> Result<(Self, mpsc::Receiver<Inbound>), TransportError> {
        Self::start_with_limits(key, listen, Limits::default()).await
    }

    /// [`Self::start`] with other frame limits. Members use the default; a peer with other
    /// limits sends frames members refuse (tests use that to play such a peer).
    pub async fn start_with_limits(
        key: &ed25519_dalek::SigningKey,
        listen: SocketAddr,
        limits: Limits,
    ) -> Result<(Self, mpsc::Receiver<Inbound>), TransportError> {
        Self::start_speaking(key, listen, limits, &[PROTOCOL, PROTOCOL_V2]).await
    }

    /// [`Self::start`] as a member of the version before [`Rpc::Writes`] (tests play such a
    /// member with it): speaking only `/univrs/raft/2`.
    #[doc(hidden)]
    pub async fn start_as_older(
        key: &ed25519_dalek::SigningKey,
        listen: SocketAddr,
    ) -> Result<(Self, mpsc::Receiver<Inbound>), TransportError> {
        Self::start_speaking(key, listen, Limits::default(), &[PROTOCOL_V2]).await
    }

    async fn start_speaking(
        key: &ed25519_dalek::SigningKey,
        listen: SocketAddr,
        limits: Limits,
        protocols: &[&'static str],
    ) -> Result<(Self, mpsc::Receiver<Inbound>), TransportError> {
        let listen_err = |reason: String| TransportError::Listen { addr: listen, reason };
        // A request's own deadline is set by its caller; this one only bounds a forgotten one.
        let config = request_response::Config::default()
            .with_request_timeout(Duration::from_secs(120))
            .with_max_concurrent_streams(MAX_STREAMS);
        // The newest first: a stream uses the first both ends know.
        let rpc = request_response::Behaviour::with_codec(
            FrameCodec::new(limits),
            protocols.iter().map(|p| (StreamProtocol::new(p), ProtocolSupport::Full)),
            config,
        );
        let limits = connection_limits::ConnectionLimits::default()
            .with_max_pending_incoming(Some(MAX_PENDING_INBOUND))
            .with_max_established_per_peer(Some(MAX_CONNECTIONS_PER_PEER));
        let behaviour = Behaviour {
            allowed: allow_block_list::Behaviour::default(),
            limits: connection_limits::Behaviour::new(limits),
            rpc,
        };
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair(key))
            .with_tokio()
            .with_tcp(
                libp2p::tcp::Config::default().nodelay(true),
                libp2p::noise::Config::new,
                libp2p::yamux::Config::default,
            )
            .map_err(|e| listen_err(e.to_string()))?
            .with_behaviour(|_| behaviour)
            .map_err(|e| listen_err(e.to_string()))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE))
            .build();
        let local = *swarm.local_peer_id();
        swarm.listen_on(multiaddr(&listen.to_string())?).map_err(|e| listen_err(e.to_string()))?;
        // Wait for the listener to be bound, to learn the port and to fail here if it cannot be.
        let bound = loop {
            match swarm.select_next_some().await {
                SwarmEvent::NewListenAddr { address, .. } => break address,
                SwarmEvent::ListenerError { error, .. }
                | SwarmEvent::ListenerClosed { reason: Err(error), .. } => {
                    return Err(listen_err(error.to_string()));
                }
                _ => {}
            }
        };
        let port = bound
            .iter()
            .find_map(|p| if let Protocol::Tcp(port) = p { Some(port) } else { None })
            .unwrap_or(listen.port());
        let (commands, command_rx) = mpsc::channel(COMMAND_QUEUE);
        let (inbound_tx, inbound_rx) = mpsc::channel(INBOUND_QUEUE);
        let (allowed, allowed_rx) = watch::channel(BTreeSet::new());
        let blocked = Arc::new(Mutex::new(BTreeSet::new()));
        let task =
            tokio::spawn(run(swarm, command_rx, commands.clone(), inbound_tx, allowed_rx, blocked.clone()));
        let listen = SocketAddr::new(listen.ip(), port);
        let transport = Self {
            commands,
            local,
            listen,
            allowed: Arc::new(allowed),
            blocked,
            task: Arc::new(AbortOnDrop(task)),
        };
        Ok((transport, inbound_rx))
    }

    /// This member's PeerId.
    pub fn local_peer_id(&self) -> PeerId {
        self.local
    }

    /// The address actually listened on.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
    }

    /// From now on, connections (inbound and outbound) are made only with `peers`; open
    /// connections with anyone else are closed.
    pub fn allow(&self, peers: impl IntoIterator<Item = PeerId>) {
        let peers: BTreeSet<PeerId> = peers.into_iter().collect();
        self.allowed.send_if_modified(|current| {
            let changed = *current != peers;
            *current = peers;
            changed
        });
    }

    /// Sends `rpc` to `peer` at `addr` and waits up to `timeout` for its reply.
    pub async fn call(
        &self,
        peer: PeerId,
        addr: &str,
        rpc: Rpc,
        timeout: Duration,
    ) -> Result<Reply, TransportError> {
        let addr = multiaddr(addr)?;
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Send { peer, addr, rpc, reply })
            .await
            .map_err(|_| TransportError::Stopped)?;
        match tokio::time::timeout(timeout, rx).await {
            Err(_) => Err(TransportError::Timeout(peer)),
            Ok(Err(_)) => Err(TransportError::Stopped),
            Ok(Ok(r)) => r,
        }
    }

    /// Stops the swarm (every clone of this handle stops working).
    pub fn stop(&self) {
        self.task.0.abort();
    }

    /// Drops all traffic to and from `peers` from now on (and restores everyone else):
    /// fault injection for partition tests.
    pub fn block(&self, peers: impl IntoIterator<Item = PeerId>) {
        *self.blocked.lock().expect("blocked peers lock") = peers.into_iter().collect();
    }
}

/// Makes the swarm's allowed set `peers`: newly allowed peers may connect, the others' open
/// connections are closed.
fn apply_allowed(swarm: &mut libp2p::Swarm<Behaviour>, peers: &BTreeSet<PeerId>) {
    let allowed = &mut swarm.behaviour_mut().allowed;
    let gone: Vec<PeerId> = allowed.allowed_peers().iter().filter(|p| !peers.contains(p)).copied().collect();
    for peer in gone {
        allowed.disallow_peer(peer);
    }
    for peer in peers {
        allowed.allow_peer(*peer);
    }
}

async fn run(
    mut swarm: libp2p::Swarm<Behaviour>,
    mut commands: mpsc::Receiver<Command>,
    command_tx: mpsc::Sender<Command>,
    inbound: mpsc::Sender<Inbound>,
    mut allowed: watch::Receiver<BTreeSet<PeerId>>,
    blocked: Arc<Mutex<BTreeSet<PeerId>>>,
) {
    let mut pending: HashMap<OutboundRequestId, oneshot::Sender<Result<Reply, TransportError>>> =
        HashMap::new();
    let is_blocked = |peer: &PeerId| blocked.lock().expect("blocked peers lock").contains(peer);
    loop {
        tokio::select! {
            changed = allowed.changed() => {
                if changed.is_err() {
                    return; // every handle is gone
                }
                apply_allowed(&mut swarm, &allowed.borrow_and_update());
            }
            command = commands.recv() => match command {
                None => return,
                Some(Command::Send { peer, addr, rpc, reply }) => {
                    if is_blocked(&peer) {
                        let _ = reply.send(Err(TransportError::Unreachable { peer, reason: "blocked (fault injection)".into() }));
                        continue;
                    }
                    // A call made right after the membership grew must not race the new allowed
                    // set: take it in first.
                    if allowed.has_changed().unwrap_or(false) {
                        apply_allowed(&mut swarm, &allowed.borrow_and_update());
                    }
                    // libp2p would deny the dial too, but say why here, where it is known.
                    if !swarm.behaviour().allowed.allowed_peers().contains(&peer) {
                        let _ = reply.send(Err(TransportError::NotAllowed(peer)));
                        continue;
                    }
                    // Callers that gave up leave closed senders behind: drop those first.
                    if pending.len() >= MAX_PENDING {
                        pending.retain(|_, s| !s.is_closed());
                    }
                    if pending.len() >= MAX_PENDING {
                        let _ = reply.send(Err(TransportError::Busy(peer)));
                        continue;
                    }
                    let id = swarm.behaviour_mut().rpc.send_request_with_addresses(&peer, rpc, vec![addr]);
                    pending.insert(id, reply);
                }
                Some(Command::Respond { channel, reply }) => {
                    let _ = swarm.behaviour_mut().rpc.send_response(channel, reply);
                }
            },
            event = swarm.select_next_some() => match event {
                SwarmEvent::Behaviour(BehaviourEvent::Rpc(request_response::Event::Message { peer, message, .. })) => match message {
                    request_response::Message::Request { request, channel, .. } => {
                        if is_blocked(&peer) {
                            continue; // dropping the channel fails the peer's request
                        }
                        let responder = Responder { channel, commands: command_tx.clone() };
                        let req = Inbound { peer, rpc: request, responder };
                        // Full queue: drop it; the peer's RPC fails and Raft retries.
                        let _ = inbound.try_send(req);
                    }
                    request_response::Message::Response { request_id, response } => {
                        if let Some(reply) = pending.remove(&request_id) {
                            let _ = reply.send(if is_blocked(&peer) {
                                Err(TransportError::Unreachable { peer, reason: "blocked (fault injection)".into() })
                            } else {
                                Ok(response)
                            });
                        }
                    }
                },
                SwarmEvent::Behaviour(BehaviourEvent::Rpc(request_response::Event::OutboundFailure { peer, request_id, error, .. })) => {
                    if let Some(reply) = pending.remove(&request_id) {
                        let _ = reply.send(Err(match error {
                            request_response::OutboundFailure::ConnectionClosed => TransportError::Closed(peer),
                            request_response::OutboundFailure::Io(e)
                                if e.kind() == io::ErrorKind::Unsupported && e.to_string() == NO_WRITES =>
                            {
                                TransportError::Unsupported(peer)
                            }
                            error => TransportError::Unreachable { peer, reason: error.to_string() },
                        }));
                    }
                }
                _ => {}
            },
        }
    }
}

/// The frame codec: every message is a 4-byte big-endian length, then that many bytes of CBOR.
///
/// libp2p's CBOR codec reads a message to the end of its stream (up to its limit) before it
/// decodes anything, so an oversized message costs its limit in memory before it is refused.
/// With the length first, a frame over the limit is refused from those 4 bytes, before a byte
/// of it is read or allocated; a frame within it is decoded by libp2p's codec from exactly
/// that many bytes.
#[derive(Clone)]
pub struct FrameCodec {
    cbor: request_response::cbor::codec::Codec<Rpc, Reply>,
    limits: Limits,
}

impl std::fmt::Debug for FrameCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameCodec").field("limits", &self.limits).finish_non_exhaustive()
    }
}

/// A boxed future, as `request_response::Codec` (an `async_trait`) takes it.
type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = io::Result<T>> + Send + 'a>>;

impl FrameCodec {
    /// A codec refusing frames over `limits`.
    pub fn new(limits: Limits) -> Self {
        let cbor = request_response::cbor::codec::Codec::default()
            .set_request_size_maximum(limits.request)
            .set_response_size_maximum(limits.reply);
        Self { cbor, limits }
    }
}

/// Reads a frame's length and refuses it if it is over `limit`.
async fn read_length<T: AsyncRead + Unpin + Send>(io: &mut T, limit: u64, what: &str) -> io::Result<u64> {
    let mut prefix = [0u8; 4];
    io.read_exact(&mut prefix).await?;
    let len = u64::from(u32::from_be_bytes(prefix));
    if len > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a {what} of {len} bytes is over the limit of {limit}: refused unread"),
        ));
    }
    Ok(len)
}

/// The start of a frame: room for its length, then its body goes after it ([`write_frame`]).
fn frame_buffer() -> Vec<u8> {
    vec![0; 4]
}

/// Writes `frame` ([`frame_buffer`] with an encoded message after it) as one frame, if its
/// body is within `limit`: the length and the body in one write, so one Yamux frame.
async fn write_frame<T: AsyncWrite + Unpin + Send>(
    io: &mut T,
    mut frame: Vec<u8>,
    limit: u64,
    what: &str,
) -> io::Result<()> {
    let body = frame.len() - 4;
    let len = u32::try_from(body).ok().filter(|l| u64::from(*l) <= limit).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("a {what} of {body} bytes is over the limit of {limit}: not sent"),
        )
    })?;
    frame[..4].copy_from_slice(&len.to_be_bytes());
    io.write_all(&frame).await
}

impl request_response::Codec for FrameCodec {
    type Protocol = StreamProtocol;
    type Request = Rpc;
    type Response = Reply;

    fn read_request<'a, 'b, 'c, 'f, T>(
        &'a mut self,
        protocol: &'b StreamProtocol,
        io: &'c mut T,
    ) -> BoxFuture<'f, Rpc>
    where
        T: AsyncRead + Unpin + Send + 'f,
        'a: 'f,
        'b: 'f,
        'c: 'f,
        Self: 'f,
    {
        Box::pin(async move {
            let len = read_length(io, self.limits.request, "request").await?;
            self.cbor.read_request(protocol, &mut io.take(len)).await
        })
    }

    fn read_response<'a, 'b, 'c, 'f, T>(
        &'a mut self,
        protocol: &'b StreamProtocol,
        io: &'c mut T,
    ) -> BoxFuture<'f, Reply>
    where
        T: AsyncRead + Unpin + Send + 'f,
        'a: 'f,
        'b: 'f,
        'c: 'f,
        Self: 'f,
    {
        Box::pin(async move {
            let len = read_length(io, self.limits.reply, "reply").await?;
            self.cbor.read_response(protocol, &mut io.take(len)).await
        })
    }

    fn write_request<'a, 'b, 'c, 'f, T>(
        &'a mut self,
        protocol: &'b StreamProtocol,
        io: &'c mut T,
        request: Rpc,
    ) -> BoxFuture<'f, ()>
    where
        T: AsyncWrite + Unpin + Send + 'f,
        'a: 'f,
        'b: 'f,
        'c: 'f,
        Self: 'f,
    {
        Box::pin(async move {
            // Before a byte of it: the member at the other end could not read it.
            if protocol.as_ref() == PROTOCOL_V2 && matches!(request, Rpc::Writes(_)) {
                return Err(io::Error::new(io::ErrorKind::Unsupported, NO_WRITES));
            }
            let mut frame = frame_buffer();
            self.cbor.write_request(protocol, &mut frame, request).await?;
            write_frame(io, frame, self.limits.request, "request").await
        })
    }

    fn write_response<'a, 'b, 'c, 'f, T>(
        &'a mut self,
        protocol: &'b StreamProtocol,
        io: &'c mut T,
        reply: Reply,
    ) -> BoxFuture<'f, ()>
    where
        T: AsyncWrite + Unpin + Send + 'f,
        'a: 'f,
        'b: 'f,
        'c: 'f,
        Self: 'f,
    {
        Box::pin(async move {
            let mut frame = frame_buffer();
            self.cbor.write_response(protocol, &mut frame, reply).await?;
            write_frame(io, frame, self.limits.reply, "reply").await
        })
    }
}

#[cfg(test)]
mod tests {
    use std::task::{Context, Poll};

    use libp2p::futures::io::Cursor;
    use libp2p::request_response::Codec as _;

    use super::*;
    use crate::raft::{Expect, Op, Request};

    /// A stream that holds a 4-byte length and fails any read past it: reading the body of the
    /// frame it announces would show.
    struct PrefixOnly(Option<[u8; 4]>);

    impl AsyncRead for PrefixOnly {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            Poll::Ready(match self.0.take() {
                Some(prefix) => {
                    buf[..4].copy_from_slice(&prefix);
                    Ok(4)
                }
                None => Err(io::Error::other("read past the length prefix")),
            })
        }
    }

    fn protocol() -> StreamProtocol {
        StreamProtocol::new(PROTOCOL)
    }

    fn write(value: &str) -> Rpc {
        Rpc::Write(Request {
            batch: Vec::new(),
            ops: vec![Op::Put { key: "/k".into(), value: value.into(), expect: Expect::Any }],
        })
    }

    #[test]
    fn peer_ids_are_the_keys_own_however_often_asked_and_the_memo_stays_bounded() {
        let secret = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let did = api::identity::Did::from_key(&secret.verifying_key());
        let expected = keypair(&secret).public().to_peer_id();
        for _ in 0..3 {
            assert_eq!(peer_id(did.as_str()), Some(expected));
            assert_eq!(PEER_IDS.lock().unwrap().get(did.as_str()), Some(&expected), "kept");
        }
        assert_eq!(peer_id("did:key:znot-a-key"), None);
        assert_eq!(peer_id("did:web:example.org"), None);
        // More dids than the memo keeps: each still gets its own PeerId, and the memo never
        // grows past its bound.
        for i in 0..(PEER_IDS_MAX as u32 + 10) {
            let mut seed = [0u8; 32];
            seed[..4].copy_from_slice(&i.to_le_bytes());
            let key = ed25519_dalek::SigningKey::from_bytes(&seed);
            let did = api::identity::Did::from_key(&key.verifying_key());
            assert_eq!(peer_id(did.as_str()), Some(keypair(&key).public().to_peer_id()));
            assert!(PEER_IDS.lock().unwrap().len() <= PEER_IDS_MAX);
        }
        assert_eq!(peer_id(did.as_str()), Some(expected));
    }

    #[tokio::test]
    async fn a_frame_over_the_limit_is_refused_from_its_length_without_reading_it() {
        let mut codec = FrameCodec::new(Limits::default());
        for (len, limit) in [(MAX_REQUEST_BYTES + 1, "request"), (u64::from(u32::MAX), "request")] {
            let mut io = PrefixOnly(Some(u32::try_from(len).unwrap().to_be_bytes()));
            let err = codec.read_request(&protocol(), &mut io).await.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
            assert!(err.to_string().contains("over the limit"), "{limit}: {err}");
        }
        let mut io = PrefixOnly(Some(u32::try_from(MAX_REPLY_BYTES + 1).unwrap().to_be_bytes()));
        let err = codec.read_response(&protocol(), &mut io).await.unwrap_err();
        assert!(err.to_string().contains("over the limit"), "{err}");
    }

    #[tokio::test]
    async fn frames_within_the_limit_round_trip_and_larger_ones_are_not_sent() {
        let limits = Limits { request: 1024, reply: 1024 };
        let mut codec = FrameCodec::new(limits);
        let mut wire = Vec::new();
        codec.write_request(&protocol(), &mut wire, write("small")).await.unwrap();
        let len = u32::from_be_bytes(wire[..4].try_into().unwrap()) as usize;
        assert_eq!(len, wire.len() - 4, "the prefix is the body's length");
        let read = codec.read_request(&protocol(), &mut Cursor::new(wire)).await.unwrap();
        assert_eq!(format!("{read:?}"), format!("{:?}", write("small")));

        let mut wire = Vec::new();
        codec.write_response(&protocol(), &mut wire, Reply::Forbidden("no".into())).await.unwrap();
        let read = codec.read_response(&protocol(), &mut Cursor::new(wire)).await.unwrap();
        assert!(matches!(read, Reply::Forbidden(ref why) if why == "no"), "{read:?}");

        let mut wire = Vec::new();
        let err = codec.write_request(&protocol(), &mut wire, write(&"x".repeat(2000))).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
        assert!(wire.is_empty(), "nothing of a frame over the limit is written");
    }

    #[tokio::test]
    async fn a_frame_shorter_than_its_length_is_an_error() {
        let mut codec = FrameCodec::new(Limits::default());
        let mut wire = Vec::new();
        codec.write_request(&protocol(), &mut wire, write("value")).await.unwrap();
        wire.truncate(wire.len() - 2);
        assert!(codec.read_request(&protocol(), &mut Cursor::new(wire)).await.is_err());
    }
}
