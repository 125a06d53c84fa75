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
//!
//! **Streams kept open.** A call goes on a stream of [`PROTOCOL_STREAMS`] kept from an earlier
//! call to the same peer when there is one: the same frames, one request and then its reply,
//! again and again on one stream, so a call costs two frames instead of a stream's opening,
//! protocol negotiation, timers and close (a third of the members' CPU at one client went
//! there, BENCHMARKS.md "Change 12"). A stream carries one call at a time, so a large message
//! never waits behind another, and a stream whose call failed or timed out is dropped, never
//! reused. A caller closes a stream idle for [`IDLE`] (when it next sweeps, every
//! `IDLE / 2`), a member one that waited [`STREAM_IDLE`] for a request (a caller that
//! vanished), so a connection nobody calls on closes within about 2½ minutes, its own
//! [`IDLE`] included (a minute after the last call before streams were kept). A member of an
//! older version refuses the protocol; calls to it go as before, one stream each
//! (request-response on [`PROTOCOL`] or [`PROTOCOL_V2`]).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use libp2p::futures::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, Codec as _, OutboundRequestId, ProtocolSupport, ResponseChannel};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
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

/// The protocol of streams kept open between calls (see the module doc): the frames of
/// [`PROTOCOL`], one request then its reply, again and again on one stream. Members of the
/// versions before it refuse it, and are called on [`PROTOCOL`] or [`PROTOCOL_V2`].
const PROTOCOL_STREAMS: &str = "/univrs/raft/4";

/// Why a `Writes` was not written on a stream of [`PROTOCOL_V2`].
const NO_WRITES: &str = "the member speaks /univrs/raft/2, without writes sent together";

/// Commands (calls and answers) waiting for the swarm task; callers wait when it is full.
const COMMAND_QUEUE: usize = 256;

/// Requests waiting to be handled by the member; beyond that, a request is dropped (the peer
/// sees a failed RPC and retries, as Raft does). Each also holds one of the [`MAX_STREAMS`]
/// of its connection (a stream of its own) or of its peer (a stream kept open), so what waits
/// here is bounded by the connections of members as well.
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

/// How long a connection with no request open is kept; and how long a caller keeps a stream
/// of [`PROTOCOL_STREAMS`] idle for its next call.
const IDLE: Duration = Duration::from_secs(60);

/// How long a member waits for the next request on a stream of [`PROTOCOL_STREAMS`] before it
/// closes it (its caller closes it after [`IDLE`]; this only ends streams of a caller that
/// vanished, so that they do not hold the connection open).
const STREAM_IDLE: Duration = Duration::from_secs(120);

/// Idle streams of [`PROTOCOL_STREAMS`] kept per peer for the next calls; a stream beyond them
/// is closed after its call.
const MAX_IDLE_STREAMS: usize = 32;

/// Calls on streams of [`PROTOCOL_STREAMS`] at once to one peer; more wait for one to end
/// (within their timeout), as request-response's calls wait beyond [`MAX_STREAMS`]. Below
/// [`MAX_STREAMS`], the streams kept open a member serves per peer, so that streams of calls
/// that just ended, not yet closed at the member, leave room for new ones.
const MAX_CALLS: usize = 64;

/// What a member writes first on a stream of [`PROTOCOL_STREAMS`] it accepted: until the
/// caller reads it, the stream may still be dropped unread (libp2p-stream drops a stream it
/// cannot hand over at once; a member drops one over its [`MAX_STREAMS`] for the peer), and
/// the call goes on a stream of its own instead (request-response), nothing of it sent.
const GREETING: u8 = 0x55;

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

impl TransportError {
    /// A call to or from `peer`, dropped by fault injection.
    fn blocked(peer: PeerId) -> Self {
        Self::Unreachable { peer, reason: "blocked (fault injection)".into() }
    }
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
pub struct Responder(Answer);

/// Where an answer goes: to the swarm, for a request of its own stream, or to the task of the
/// stream kept open that the request came on.
#[derive(Debug)]
enum Answer {
    Swarm { channel: ResponseChannel<Reply>, commands: mpsc::Sender<Command> },
    Stream(oneshot::Sender<Reply>),
}

impl Responder {
    /// Sends the answer.
    pub async fn respond(self, reply: Reply) {
        match self.0 {
            Answer::Swarm { channel, commands } => {
                let _ = commands.send(Command::Respond { channel, reply }).await;
            }
            Answer::Stream(answer) => {
                let _ = answer.send(reply);
            }
        }
    }
}

enum Command {
    Send {
        peer: PeerId,
        addr: Multiaddr,
        rpc: Rpc,
        reply: oneshot::Sender<Result<Reply, TransportError>>,
    },
    Respond {
        channel: ResponseChannel<Reply>,
        reply: Reply,
    },
    /// Before a stream is opened: check that `peer` may be called, dial it at `addr` unless
    /// connected, and answer once connected.
    Connect {
        peer: PeerId,
        addr: Multiaddr,
        reply: oneshot::Sender<Result<(), TransportError>>,
    },
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
    /// The frames this transport writes and reads.
    limits: Limits,
    /// Streams kept open between calls; `None` for a transport playing a member of the version
    /// before them.
    streams: Option<Streams>,
    /// The streams kept open this member serves, by peer.
    served: Served,
    task: Arc<AbortOnDrop>,
}

/// The swarm's task and the task accepting streams of [`PROTOCOL_STREAMS`].
#[derive(Debug)]
struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);

impl AbortOnDrop {
    fn abort(&self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.abort();
    }
}

/// The caller's side of streams kept open: opens them, and keeps them between calls.
#[derive(Clone)]
struct Streams {
    control: libp2p_stream::Control,
    links: Arc<Mutex<Links>>,
}

impl std::fmt::Debug for Streams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streams").finish_non_exhaustive()
    }
}

/// Streams between calls, and who does not speak [`PROTOCOL_STREAMS`].
#[derive(Default)]
struct Links {
    /// Idle streams by peer, each with when its last call ended, the latest last.
    idle: HashMap<PeerId, Vec<(libp2p::Stream, Instant)>>,
    /// Peers that refused [`PROTOCOL_STREAMS`] (members of an older version), until their
    /// connections close (they may come back upgraded).
    older: HashSet<PeerId>,
    /// The [`MAX_CALLS`] calls each peer may have at once.
    calls: HashMap<PeerId, Arc<tokio::sync::Semaphore>>,
}

impl Links {
    fn lock(links: &Mutex<Links>) -> std::sync::MutexGuard<'_, Links> {
        links.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The stream `peer`'s latest call ended on, if it has been idle less than [`IDLE`].
    fn take(&mut self, peer: &PeerId) -> Option<libp2p::Stream> {
        let idle = self.idle.get_mut(peer)?;
        let (stream, since) = idle.pop()?;
        if since.elapsed() < IDLE {
            return Some(stream);
        }
        idle.clear(); // the others are older still
        None
    }

    /// Keeps `stream`, whose call just ended, for the next call to `peer`.
    fn keep(&mut self, peer: PeerId, stream: libp2p::Stream) {
        let idle = self.idle.entry(peer).or_default();
        if idle.len() < MAX_IDLE_STREAMS {
            idle.push((stream, Instant::now()));
        }
    }

    /// Closes the streams idle for [`IDLE`] or longer; forgets the limits of calls of peers
    /// with no call under way.
    fn sweep(&mut self) {
        for idle in self.idle.values_mut() {
            idle.retain(|(_, since)| since.elapsed() < IDLE);
        }
        self.idle.retain(|_, idle| !idle.is_empty());
        self.calls.retain(|_, calls| Arc::strong_count(calls) > 1);
    }

    /// Forgets `peer`'s streams and version: its last connection closed. Its limit of calls
    /// stays while calls hold it (a new one would let twice as many run), [`Self::sweep`]
    /// forgets it once none does.
    fn forget(&mut self, peer: &PeerId) {
        self.idle.remove(peer);
        self.older.remove(peer);
    }

    /// The calls `peer` may have at once.
    fn calls(&mut self, peer: PeerId) -> Arc<tokio::sync::Semaphore> {
        self.calls.entry(peer).or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(MAX_CALLS))).clone()
    }
}

/// Why a call did not go on a stream kept open.
enum OnStream {
    /// The peer speaks an older protocol, or did not greet the stream opened: the call goes on
    /// a stream of its own.
    OwnStream(Rpc),
    /// No stream to the peer could be opened: nothing of the call was sent.
    Unsent(TransportError),
    /// The call failed.
    Failed(TransportError),
}

/// A call that failed ([`Transport::try_call`]).
#[derive(Debug)]
pub struct CallFailure {
    /// Why.
    pub error: TransportError,
    /// Nothing of the call left this member, so the peer cannot have acted on it; `false`
    /// when it may have (the reply is what failed, or it is not known where it failed).
    pub unsent: bool,
}

impl CallFailure {
    fn unsent(error: TransportError) -> Self {
        Self { error, unsent: true }
    }

    fn maybe_sent(error: TransportError) -> Self {
        Self { error, unsent: false }
    }
}

impl From<TransportError> for OnStream {
    fn from(e: TransportError) -> Self {
        Self::Failed(e)
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
    streams: libp2p_stream::Behaviour,
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
        Self::start_speaking(key, listen, limits, &[PROTOCOL, PROTOCOL_V2], true).await
    }

    /// [`Self::start`] as a member of the version before [`Rpc::Writes`] (tests play such a
    /// member with it): speaking only `/univrs/raft/2`, one stream per call.
    #[doc(hidden)]
    pub async fn start_as_older(
        key: &ed25519_dalek::SigningKey,
        listen: SocketAddr,
    ) -> Result<(Self, mpsc::Receiver<Inbound>), TransportError> {
        Self::start_speaking(key, listen, Limits::default(), &[PROTOCOL_V2], false).await
    }

    /// A transport speaking `protocols` one stream per call, and [`PROTOCOL_STREAMS`] too if
    /// `keep_streams`.
    async fn start_speaking(
        key: &ed25519_dalek::SigningKey,
        listen: SocketAddr,
        frame_limits: Limits,
        protocols: &[&'static str],
        keep_streams: bool,
    ) -> Result<(Self, mpsc::Receiver<Inbound>), TransportError> {
        let listen_err = |reason: String| TransportError::Listen { addr: listen, reason };
        // A request's own deadline is set by its caller; this one only bounds a forgotten one.
        let config = request_response::Config::default()
            .with_request_timeout(Duration::from_secs(120))
            .with_max_concurrent_streams(MAX_STREAMS);
        // The newest first: a stream uses the first both ends know.
        let rpc = request_response::Behaviour::with_codec(
            FrameCodec::new(frame_limits),
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
            streams: libp2p_stream::Behaviour::new(),
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
        let mut tasks = Vec::new();
        let served = Served::default();
        let streams = if keep_streams {
            let mut control = swarm.behaviour().streams.new_control();
            let incoming = control
                .accept(StreamProtocol::new(PROTOCOL_STREAMS))
                .expect("a new swarm has no protocol registered");
            let accepting =
                accept_streams(incoming, inbound_tx.clone(), blocked.clone(), frame_limits, served.clone());
            tasks.push(tokio::spawn(accepting));
            Some(Streams { control, links: Arc::default() })
        } else {
            None
        };
        let links = streams.as_ref().map(|s| s.links.clone());
        let swarm_task =
            run(swarm, command_rx, commands.clone(), inbound_tx, allowed_rx, blocked.clone(), links);
        tasks.push(tokio::spawn(swarm_task));
        let listen = SocketAddr::new(listen.ip(), port);
        let transport = Self {
            commands,
            local,
            listen,
            allowed: Arc::new(allowed),
            blocked,
            limits: frame_limits,
            streams,
            served,
            task: Arc::new(AbortOnDrop(tasks)),
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

    /// Sends `rpc` to `peer` at `addr` and waits up to `timeout` for its reply: on a stream
    /// kept open (see the module doc), or on one of its own to a member of an older version.
    pub async fn call(
        &self,
        peer: PeerId,
        addr: &str,
        rpc: Rpc,
        timeout: Duration,
    ) -> Result<Reply, TransportError> {
        self.try_call(peer, addr, rpc, timeout).await.map_err(|f| f.error)
    }

    /// [`Self::call`], telling a call that certainly never left this member (the member could
    /// not be connected to) from one that may have reached it: what a forwarded write needs
    /// to know, since only the first may be sent again.
    pub async fn try_call(
        &self,
        peer: PeerId,
        addr: &str,
        rpc: Rpc,
        timeout: Duration,
    ) -> Result<Reply, CallFailure> {
        let addr = multiaddr(addr).map_err(CallFailure::unsent)?;
        let deadline = tokio::time::Instant::now() + timeout;
        let rpc = match &self.streams {
            Some(streams) if !Links::lock(&streams.links).older.contains(&peer) => {
                match tokio::time::timeout_at(deadline, self.call_on_stream(streams, peer, &addr, rpc)).await
                {
                    // Perhaps while dialing, perhaps while waiting for the reply: not known.
                    Err(_) => return Err(CallFailure::maybe_sent(TransportError::Timeout(peer))),
                    Ok(Ok(reply)) => return Ok(reply),
                    Ok(Err(OnStream::Unsent(e))) => return Err(CallFailure::unsent(e)),
                    Ok(Err(OnStream::Failed(e))) => return Err(CallFailure::maybe_sent(e)),
                    Ok(Err(OnStream::OwnStream(rpc))) => rpc,
                }
            }
            _ => rpc,
        };
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Send { peer, addr, rpc, reply })
            .await
            .map_err(|_| CallFailure::unsent(TransportError::Stopped))?;
        // On request-response, where a failure happened is not told apart (a member of an
        // older version, or a stream not greeted): any failure may have been sent.
        match tokio::time::timeout_at(deadline, rx).await {
            Err(_) => Err(TransportError::Timeout(peer)),
            Ok(Err(_)) => Err(TransportError::Stopped),
            Ok(Ok(r)) => r,
        }
        .map_err(CallFailure::maybe_sent)
    }

    /// [`Self::call`] on a stream of [`PROTOCOL_STREAMS`]: one kept from an earlier call, or a
    /// new one. Dropping the future (the caller's timeout) drops the stream with it, so a reply
    /// that comes late is never read as another call's.
    async fn call_on_stream(
        &self,
        streams: &Streams,
        peer: PeerId,
        addr: &Multiaddr,
        rpc: Rpc,
    ) -> Result<Reply, OnStream> {
        let protocol = StreamProtocol::new(PROTOCOL_STREAMS);
        let mut codec = FrameCodec::new(self.limits);
        // First, so that a request over the limit is refused as such, before any stream.
        let frame = codec
            .request_frame(&protocol, &rpc)
            .map_err(|e| TransportError::Unreachable { peer, reason: e.to_string() })?;
        drop(rpc);
        let usable = !self.is_blocked(&peer) && self.allowed.borrow().contains(&peer);
        let calls = Links::lock(&streams.links).calls(peer);
        let _call = calls.acquire_owned().await.map_err(|_| TransportError::Stopped)?;
        let kept = if usable { kept_stream(streams, &peer) } else { None };
        let (mut stream, reused) = match kept {
            Some(stream) => (stream, true),
            None => match self.open_stream(streams, peer, addr).await.map_err(OnStream::Unsent)? {
                Some(stream) => (stream, false),
                None => return Err(own_stream(&mut codec, peer, &frame).await),
            },
        };
        if let Err(e) = write_all(&mut stream, &frame).await {
            if !reused {
                return Err(stream_failed(peer, &e).into());
            }
            // A kept stream whose connection closed while it was idle. A write fails only for a
            // piece of the frame that was not sent, and a member reads a frame only whole, so
            // it read none of it: another stream carries it. (Should that fail, the call is
            // reported as perhaps sent all the same: conservatively.)
            stream = match self.open_stream(streams, peer, addr).await? {
                Some(stream) => stream,
                None => return Err(own_stream(&mut codec, peer, &frame).await),
            };
            write_all(&mut stream, &frame).await.map_err(|e| stream_failed(peer, &e))?;
        }
        let reply = codec.read_response(&protocol, &mut stream).await.map_err(|e| stream_failed(peer, &e))?;
        if self.is_blocked(&peer) {
            return Err(TransportError::blocked(peer).into());
        }
        Links::lock(&streams.links).keep(peer, stream);
        Ok(reply)
    }

    /// Opens a stream of [`PROTOCOL_STREAMS`] to `peer` (dialing it at `addr` unless
    /// connected) and reads the member's [`GREETING`] on it. `None` when the member speaks an
    /// older protocol or dropped the stream before its greeting (which carried nothing): the
    /// call then goes on a stream of its own (request-response), nothing of it sent yet.
    async fn open_stream(
        &self,
        streams: &Streams,
        peer: PeerId,
        addr: &Multiaddr,
    ) -> Result<Option<libp2p::Stream>, TransportError> {
        let Some(mut stream) = self.open_stream_once(streams, peer, addr).await? else {
            return Ok(None);
        };
        Ok(read_greeting(&mut stream).await.is_ok().then_some(stream))
    }

    /// Opens a stream of [`PROTOCOL_STREAMS`] to `peer`; `None` if it speaks an older protocol.
    async fn open_stream_once(
        &self,
        streams: &Streams,
        peer: PeerId,
        addr: &Multiaddr,
    ) -> Result<Option<libp2p::Stream>, TransportError> {
        let (reply, connected) = oneshot::channel();
        let connect = Command::Connect { peer, addr: addr.clone(), reply };
        self.commands.send(connect).await.map_err(|_| TransportError::Stopped)?;
        connected.await.map_err(|_| TransportError::Stopped)??;
        match streams.control.clone().open_stream(peer, StreamProtocol::new(PROTOCOL_STREAMS)).await {
            Ok(stream) => Ok(Some(stream)),
            Err(libp2p_stream::OpenStreamError::UnsupportedProtocol(_)) => {
                Links::lock(&streams.links).older.insert(peer);
                Ok(None)
            }
            Err(libp2p_stream::OpenStreamError::Io(e)) if e.kind() == io::ErrorKind::TimedOut => {
                Err(TransportError::Timeout(peer))
            }
            // The connection closed under the stream's negotiation, or before it began (then
            // libp2p-stream dials without an address and says `NotConnected`): a member closes
            // a connection with a key it does not take right after the handshake.
            Err(_) => Err(TransportError::Closed(peer)),
        }
    }

    /// How many streams kept open this member serves for `peer` now (at most [`MAX_STREAMS`]).
    pub fn served_streams(&self, peer: &PeerId) -> usize {
        self.served.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(peer).copied().unwrap_or(0)
    }

    fn is_blocked(&self, peer: &PeerId) -> bool {
        is_blocked(&self.blocked, peer)
    }

    /// Stops the swarm (every clone of this handle stops working).
    pub fn stop(&self) {
        self.task.abort();
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

/// Whether `peer` (blocked or not, as `blocked` says) may be called now: the allowed set is
/// taken in first, so that a call made right after the membership grew does not race it, and
/// a peer outside it is refused here, where the reason is known (libp2p would deny the dial
/// too).
fn may_call(
    swarm: &mut libp2p::Swarm<Behaviour>,
    allowed: &mut watch::Receiver<BTreeSet<PeerId>>,
    blocked: bool,
    peer: PeerId,
) -> Result<(), TransportError> {
    if blocked {
        return Err(TransportError::blocked(peer));
    }
    if allowed.has_changed().unwrap_or(false) {
        apply_allowed(swarm, &allowed.borrow_and_update());
    }
    if !swarm.behaviour().allowed.allowed_peers().contains(&peer) {
        return Err(TransportError::NotAllowed(peer));
    }
    Ok(())
}

/// Whether traffic with `peer` is dropped (fault injection).
fn is_blocked(blocked: &Mutex<BTreeSet<PeerId>>, peer: &PeerId) -> bool {
    blocked.lock().expect("blocked peers lock").contains(peer)
}

async fn run(
    mut swarm: libp2p::Swarm<Behaviour>,
    mut commands: mpsc::Receiver<Command>,
    command_tx: mpsc::Sender<Command>,
    inbound: mpsc::Sender<Inbound>,
    mut allowed: watch::Receiver<BTreeSet<PeerId>>,
    blocked: Arc<Mutex<BTreeSet<PeerId>>>,
    links: Option<Arc<Mutex<Links>>>,
) {
    let mut pending: HashMap<OutboundRequestId, oneshot::Sender<Result<Reply, TransportError>>> =
        HashMap::new();
    // Callers of Connect waiting for the connection with a peer. libp2p-stream opens a stream
    // only on a connection it has been told of; asked while one is being established, it
    // waits for the next one (a race between its two steps, on a runtime of many threads).
    let mut connecting: HashMap<PeerId, Vec<oneshot::Sender<Result<(), TransportError>>>> = HashMap::new();
    let mut sweep = tokio::time::interval(IDLE / 2);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = sweep.tick() => {
                if let Some(links) = &links {
                    Links::lock(links).sweep();
                }
            }
            changed = allowed.changed() => {
                if changed.is_err() {
                    return; // every handle is gone
                }
                apply_allowed(&mut swarm, &allowed.borrow_and_update());
            }
            command = commands.recv() => match command {
                None => return,
                Some(Command::Send { peer, addr, rpc, reply }) => {
                    if let Err(e) = may_call(&mut swarm, &mut allowed, is_blocked(&blocked, &peer), peer) {
                        let _ = reply.send(Err(e));
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
                Some(Command::Connect { peer, addr, reply }) => {
                    if let Err(e) = may_call(&mut swarm, &mut allowed, is_blocked(&blocked, &peer), peer) {
                        let _ = reply.send(Err(e));
                        continue;
                    }
                    if swarm.is_connected(&peer) {
                        let _ = reply.send(Ok(()));
                        continue;
                    }
                    // libp2p-stream dials by PeerId alone, which finds no address: dial here
                    // with the member's (unless a dial is under way), answer when it ends.
                    let dial = DialOpts::peer_id(peer)
                        .addresses(vec![addr])
                        .condition(PeerCondition::DisconnectedAndNotDialing)
                        .build();
                    match swarm.dial(dial) {
                        Ok(()) | Err(libp2p::swarm::DialError::DialPeerConditionFalse(_)) => {
                            let waiting = connecting.entry(peer).or_default();
                            waiting.retain(|w| !w.is_closed()); // callers that gave up
                            waiting.push(reply);
                        }
                        Err(e) => {
                            let _ = reply.send(Err(TransportError::Unreachable { peer, reason: e.to_string() }));
                        }
                    }
                }
            },
            event = swarm.select_next_some() => match event {
                SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                    for waiting in connecting.remove(&peer_id).into_iter().flatten() {
                        let _ = waiting.send(Ok(()));
                    }
                }
                SwarmEvent::OutgoingConnectionError { peer_id: Some(peer), error, .. } => {
                    let reason = error.to_string();
                    for waiting in connecting.remove(&peer).into_iter().flatten() {
                        let _ = waiting.send(Err(TransportError::Unreachable { peer, reason: reason.clone() }));
                    }
                }
                SwarmEvent::ConnectionClosed { peer_id, num_established: 0, .. } => {
                    if let Some(links) = &links {
                        Links::lock(links).forget(&peer_id);
                    }
                }
                SwarmEvent::Behaviour(BehaviourEvent::Rpc(request_response::Event::Message { peer, message, .. })) => match message {
                    request_response::Message::Request { request, channel, .. } => {
                        if is_blocked(&blocked, &peer) {
                            continue; // dropping the channel fails the peer's request
                        }
                        let responder = Responder(Answer::Swarm { channel, commands: command_tx.clone() });
                        let req = Inbound { peer, rpc: request, responder };
                        // Full queue: drop it; the peer's RPC fails and Raft retries.
                        let _ = inbound.try_send(req);
                    }
                    request_response::Message::Response { request_id, response } => {
                        if let Some(reply) = pending.remove(&request_id) {
                            let _ = reply.send(if is_blocked(&blocked, &peer) {
                                Err(TransportError::blocked(peer))
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

/// Accepts streams of [`PROTOCOL_STREAMS`] (only members get a connection to open one), at
/// most [`MAX_STREAMS`] at once per peer; each is served by a task of its own.
async fn accept_streams(
    mut incoming: libp2p_stream::IncomingStreams,
    inbound: mpsc::Sender<Inbound>,
    blocked: Arc<Mutex<BTreeSet<PeerId>>>,
    limits: Limits,
    open: Served,
) {
    while let Some((peer, stream)) = incoming.next().await {
        let Some(slot) = StreamSlot::take(&open, peer) else {
            continue; // over the peer's streams: dropped, its call fails
        };
        tokio::spawn(serve_stream(peer, stream, inbound.clone(), blocked.clone(), limits, slot));
    }
}

/// The streams of [`PROTOCOL_STREAMS`] a member serves, by peer.
type Served = Arc<Mutex<HashMap<PeerId, usize>>>;

/// One of a peer's [`MAX_STREAMS`] served streams, given back when dropped.
struct StreamSlot {
    open: Served,
    peer: PeerId,
}

impl StreamSlot {
    fn take(open: &Served, peer: PeerId) -> Option<Self> {
        let mut counts = open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = counts.entry(peer).or_default();
        if *count >= MAX_STREAMS {
            return None;
        }
        *count += 1;
        Some(Self { open: open.clone(), peer })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut counts = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.peer) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.peer);
            }
        }
    }
}

/// Serves one stream of [`PROTOCOL_STREAMS`]: reads a request, hands it to the member, writes
/// its answer, and again, until the stream ends, fails, or waits [`STREAM_IDLE`] for a
/// request. A request the member drops (its queue is full, the peer is blocked) or a frame
/// over the limit ends the stream, which fails that call, as a dropped stream of its own did.
async fn serve_stream(
    peer: PeerId,
    mut stream: libp2p::Stream,
    inbound: mpsc::Sender<Inbound>,
    blocked: Arc<Mutex<BTreeSet<PeerId>>>,
    limits: Limits,
    _slot: StreamSlot,
) {
    let protocol = StreamProtocol::new(PROTOCOL_STREAMS);
    let mut codec = FrameCodec::new(limits);
    if write_all(&mut stream, &[GREETING]).await.is_err() {
        return;
    }
    loop {
        let Ok(Ok(rpc)) = tokio::time::timeout(STREAM_IDLE, codec.read_request(&protocol, &mut stream)).await
        else {
            return;
        };
        if is_blocked(&blocked, &peer) {
            return;
        }
        let (answer, answered) = oneshot::channel();
        let request = Inbound { peer, rpc, responder: Responder(Answer::Stream(answer)) };
        if inbound.try_send(request).is_err() {
            return; // full (or the member is gone): the peer's call fails and Raft retries
        }
        // Bounded as the wait for a request is: a caller that stops reading (or vanished)
        // does not hold the stream, its slot and the reply forever; and one that gave up the
        // call (its stream reset or closed, or it sent what no protocol step expects) frees
        // them at once.
        let answered = async {
            let mut probe = [0u8; 1];
            let reply = tokio::select! {
                reply = answered => reply.map_err(|_| io::Error::other("not answered"))?,
                _ = stream.read(&mut probe) => return Err(io::Error::other("the caller gave up")),
            };
            let frame = codec.reply_frame(&reply)?;
            drop(reply);
            write_all(&mut stream, &frame).await
        };
        if !matches!(tokio::time::timeout(STREAM_IDLE, answered).await, Ok(Ok(()))) {
            return;
        }
    }
}

/// Reads a member's [`GREETING`].
async fn read_greeting(stream: &mut libp2p::Stream) -> io::Result<()> {
    let mut greeting = [0u8; 1];
    stream.read_exact(&mut greeting).await?;
    if greeting[0] != GREETING {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "not a greeting of /univrs/raft/4"));
    }
    Ok(())
}

/// Writes `frame` and flushes it.
async fn write_all(stream: &mut libp2p::Stream, frame: &[u8]) -> io::Result<()> {
    stream.write_all(frame).await?;
    stream.flush().await
}

/// A call that failed on its stream after the stream was open: the member dropped it (its
/// queue was full, the caller is blocked there, the frame was over a limit), the connection
/// closed, or the reply could not be read, as request-response said such failures.
fn stream_failed(peer: PeerId, e: &io::Error) -> TransportError {
    TransportError::Unreachable { peer, reason: format!("the stream closed before the answer: {e}") }
}

/// The call of `frame` (not sent) to go on a stream of its own: its request read back.
async fn own_stream(codec: &mut FrameCodec, peer: PeerId, frame: &[u8]) -> OnStream {
    let protocol = StreamProtocol::new(PROTOCOL_STREAMS);
    match codec.read_request(&protocol, &mut libp2p::futures::io::Cursor::new(frame)).await {
        Ok(rpc) => OnStream::OwnStream(rpc),
        Err(e) => OnStream::Failed(TransportError::Unreachable { peer, reason: e.to_string() }),
    }
}

/// A stream kept from an earlier call to `peer`. Between calls a stream has nothing to read:
/// one that has (the member closed or reset it, or wrote what no call asked) is dropped.
fn kept_stream(streams: &Streams, peer: &PeerId) -> Option<libp2p::Stream> {
    loop {
        let mut stream = Links::lock(&streams.links).take(peer)?;
        let mut byte = [0u8; 1];
        if futures_util::FutureExt::now_or_never(stream.read(&mut byte)).is_none() {
            return Some(stream);
        }
    }
}

/// The frame codec: every message is a 4-byte big-endian length, then that many bytes of CBOR
/// (as libp2p's CBOR codec writes it: `cbor4ii`'s serde encoding of the message).
///
/// libp2p's CBOR codec reads a message to the end of its stream (up to its limit) before it
/// decodes anything, so an oversized message costs its limit in memory before it is refused.
/// With the length first, a frame over the limit is refused from those 4 bytes, before a byte
/// of it is read or allocated; a frame within it is read to its length, into a buffer filled
/// [`READ_AHEAD`] at a time as its bytes arrive, and decoded from exactly those bytes. A
/// message is encoded straight after its length, in the buffer that is written: no second
/// buffer, and no copy of the whole message into the frame (libp2p's codec encoded into a
/// buffer of its own that was then copied into the frame, and read to the end of the stream,
/// which copies a full buffer once more to learn that the stream ended).
#[derive(Clone, Debug)]
pub struct FrameCodec {
    limits: Limits,
}

/// The most of a frame's buffer filled before its bytes arrive: a peer that names a length
/// and sends less has at most this more than it sent filled in, in an allocation of at most
/// twice that (a `Vec` grows by doubling).
const READ_AHEAD: usize = 1 << 20;

/// What a frame's buffer starts with room for when it is written (most messages fit).
const WRITE_AHEAD: usize = 4096;

/// A boxed future, as `request_response::Codec` (an `async_trait`) takes it.
type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = io::Result<T>> + Send + 'a>>;

impl FrameCodec {
    /// A codec refusing frames over `limits`.
    pub fn new(limits: Limits) -> Self {
        Self { limits }
    }
}

/// Reads a frame (its length, refused if over `limit`, then its body) and decodes it.
async fn read_frame<T, M>(io: &mut T, limit: u64, what: &str) -> io::Result<M>
where
    T: AsyncRead + Unpin + Send,
    M: serde::de::DeserializeOwned,
{
    let len = read_length(io, limit, what).await?;
    // Read to its length, not to the end: a read to the end makes room for more when the
    // buffer is full, which copies the whole frame once more.
    let len = usize::try_from(len).map_err(io::Error::other)?;
    let mut body = Vec::new();
    while body.len() < len {
        let from = body.len();
        body.resize(len.min(from + READ_AHEAD), 0);
        io.read_exact(&mut body[from..]).await.map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => {
                io::Error::new(e.kind(), format!("a {what} of {len} bytes ended before its end"))
            }
            _ => e,
        })?;
    }
    cbor4ii::serde::from_slice(&body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
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

/// `message` encoded after room for its length ([`seal_frame`] writes it).
fn frame_of<M: serde::Serialize>(message: &M) -> io::Result<Vec<u8>> {
    let mut frame = Vec::with_capacity(WRITE_AHEAD);
    frame.extend_from_slice(&[0; 4]);
    cbor4ii::serde::to_vec(frame, message).map_err(io::Error::other)
}

/// Seals `frame` ([`frame_of`]: an encoded message after room for its length) by writing its
/// body's length first, if the body is within `limit`.
fn seal_frame(mut frame: Vec<u8>, limit: u64, what: &str) -> io::Result<Vec<u8>> {
    let body = frame.len() - 4;
    let len = u32::try_from(body).ok().filter(|l| u64::from(*l) <= limit).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("a {what} of {body} bytes is over the limit of {limit}: not sent"),
        )
    })?;
    frame[..4].copy_from_slice(&len.to_be_bytes());
    Ok(frame)
}

impl FrameCodec {
    /// `request` as one frame, if it is within the limit and `protocol` can carry it.
    fn request_frame(&self, protocol: &StreamProtocol, request: &Rpc) -> io::Result<Vec<u8>> {
        // Before a byte of it: the member at the other end could not read it.
        if protocol.as_ref() == PROTOCOL_V2 && matches!(request, Rpc::Writes(_)) {
            return Err(io::Error::new(io::ErrorKind::Unsupported, NO_WRITES));
        }
        seal_frame(frame_of(request)?, self.limits.request, "request")
    }

    /// `reply` as one frame, if it is within the limit.
    fn reply_frame(&self, reply: &Reply) -> io::Result<Vec<u8>> {
        seal_frame(frame_of(reply)?, self.limits.reply, "reply")
    }
}

impl request_response::Codec for FrameCodec {
    type Protocol = StreamProtocol;
    type Request = Rpc;
    type Response = Reply;

    fn read_request<'a, 'b, 'c, 'f, T>(
        &'a mut self,
        _protocol: &'b StreamProtocol,
        io: &'c mut T,
    ) -> BoxFuture<'f, Rpc>
    where
        T: AsyncRead + Unpin + Send + 'f,
        'a: 'f,
        'b: 'f,
        'c: 'f,
        Self: 'f,
    {
        Box::pin(async move { read_frame(io, self.limits.request, "request").await })
    }

    fn read_response<'a, 'b, 'c, 'f, T>(
        &'a mut self,
        _protocol: &'b StreamProtocol,
        io: &'c mut T,
    ) -> BoxFuture<'f, Reply>
    where
        T: AsyncRead + Unpin + Send + 'f,
        'a: 'f,
        'b: 'f,
        'c: 'f,
        Self: 'f,
    {
        Box::pin(async move { read_frame(io, self.limits.reply, "reply").await })
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
            // The length and the body in one write, so one Yamux frame.
            let frame = self.request_frame(protocol, &request)?;
            drop(request);
            io.write_all(&frame).await
        })
    }

    fn write_response<'a, 'b, 'c, 'f, T>(
        &'a mut self,
        _protocol: &'b StreamProtocol,
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
            let frame = self.reply_frame(&reply)?;
            drop(reply);
            io.write_all(&frame).await
        })
    }
}

#[cfg(test)]
mod tests {
    use std::task::{Context, Poll};

    use libp2p::futures::io::Cursor;
    use libp2p::request_response::Codec as _;

    use super::*;
    use crate::raft::{Expect, Op, Outcome, Request, Response};

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
    async fn a_frame_body_is_what_libp2ps_cbor_codec_writes_and_reads() {
        // Members of earlier versions framed libp2p's CBOR codec's bytes: the same bytes
        // either way, so they read each other's frames.
        let mut theirs = request_response::cbor::codec::Codec::<Rpc, Reply>::default();
        let mut ours = FrameCodec::new(Limits::default());
        let requests = || {
            let put = |v: &str| Request {
                batch: Vec::new(),
                ops: vec![Op::Put { key: "/k".into(), value: v.into(), expect: Expect::Any }],
            };
            Rpc::Writes(vec![put("a"), put(&"b".repeat(10_000))])
        };
        let replies = || {
            let applied = Outcome::Applied { prev: Vec::new() };
            Reply::Writes(vec![
                Ok(Response { revision: 7, outcome: applied, batch: Vec::new() }),
                Err(crate::raft::rpc::Refusal::NotLeader(Some(2))),
            ])
        };

        let mut body = Vec::new();
        theirs.write_request(&protocol(), &mut body, requests()).await.unwrap();
        let mut wire = Vec::new();
        ours.write_request(&protocol(), &mut wire, requests()).await.unwrap();
        assert_eq!(wire[4..], body[..], "the same bytes after the length");
        let read = theirs.read_request(&protocol(), &mut Cursor::new(&wire[4..])).await.unwrap();
        assert_eq!(format!("{read:?}"), format!("{:?}", requests()));

        let mut body = Vec::new();
        theirs.write_response(&protocol(), &mut body, replies()).await.unwrap();
        let mut wire = u32::try_from(body.len()).unwrap().to_be_bytes().to_vec();
        wire.extend_from_slice(&body);
        let read = ours.read_response(&protocol(), &mut Cursor::new(wire)).await.unwrap();
        assert_eq!(format!("{read:?}"), format!("{:?}", replies()));
    }

    #[tokio::test]
    async fn a_frame_shorter_than_its_length_is_an_error() {
        let mut codec = FrameCodec::new(Limits::default());
        for value in ["value".to_owned(), "v".repeat(READ_AHEAD + 10)] {
            let mut wire = Vec::new();
            codec.write_request(&protocol(), &mut wire, write(&value)).await.unwrap();
            let whole = wire.clone();
            wire.truncate(wire.len() - 2);
            let err = codec.read_request(&protocol(), &mut Cursor::new(wire)).await.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");
            // Whole, a frame longer than what is made ready before its bytes arrive reads.
            let read = codec.read_request(&protocol(), &mut Cursor::new(whole)).await.unwrap();
            assert_eq!(format!("{read:?}"), format!("{:?}", write(&value)));
        }
    }

    /// What [`echo`] was asked, and how often.
    type Heard = Arc<Mutex<HashMap<String, usize>>>;

    /// Two transports allowing each other, the second's requests answered by [`echo`].
    async fn pair() -> (Transport, Transport, ed25519_dalek::SigningKey, Heard) {
        let a_key = ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng);
        let b_key = ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng);
        let (a, _a_inbound) = Transport::start(&a_key, "127.0.0.1:0".parse().unwrap()).await.unwrap();
        let (b, b_inbound) = Transport::start(&b_key, "127.0.0.1:0".parse().unwrap()).await.unwrap();
        a.allow([b.local_peer_id()]);
        b.allow([a.local_peer_id()]);
        let heard = Heard::default();
        tokio::spawn(echo(b_inbound, heard.clone()));
        (a, b, b_key, heard)
    }

    /// Answers each `Promote(s)` with `Forbidden(s)`, a second later if `s` starts with "slow";
    /// counts in `heard` what it was asked.
    async fn echo(mut inbound: mpsc::Receiver<Inbound>, heard: Heard) {
        while let Some(request) = inbound.recv().await {
            let heard = heard.clone();
            tokio::spawn(async move {
                let Rpc::Promote(said) = request.rpc else { panic!("{:?}", request.rpc) };
                *heard.lock().unwrap().entry(said.clone()).or_default() += 1;
                if said.starts_with("slow") {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                request.responder.respond(Reply::Forbidden(said)).await;
            });
        }
    }

    async fn say(
        from: &Transport,
        to: &Transport,
        what: &str,
        timeout: Duration,
    ) -> Result<String, TransportError> {
        let to_addr = to.listen_addr().to_string();
        match from.call(to.local_peer_id(), &to_addr, Rpc::Promote(what.into()), timeout).await? {
            Reply::Forbidden(said) => Ok(said),
            other => panic!("{other:?}"),
        }
    }

    fn served_streams(transport: &Transport, peer: &PeerId) -> usize {
        transport.served_streams(peer)
    }

    fn idle_streams(transport: &Transport, peer: &PeerId) -> usize {
        let links = Links::lock(&transport.streams.as_ref().expect("keeps streams").links);
        links.idle.get(peer).map_or(0, Vec::len)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn calls_go_on_streams_kept_open_and_each_gets_its_own_reply() {
        let (a, b, _, heard) = pair().await;
        let wait = Duration::from_secs(10);
        // One call after another: all on one stream, kept between them (the member serves
        // that one stream only).
        for i in 0..50 {
            assert_eq!(say(&a, &b, &format!("one {i}"), wait).await.unwrap(), format!("one {i}"));
            assert_eq!(idle_streams(&a, &b.local_peer_id()), 1, "call {i}");
            assert_eq!(served_streams(&b, &a.local_peer_id()), 1, "call {i}");
        }
        // Calls at once: a stream each (one of them the kept one), all kept afterwards.
        let words: Vec<String> = (0..8).map(|i| format!("together {i}")).collect();
        let said = futures_util::future::join_all(words.iter().map(|w| say(&a, &b, w, wait))).await;
        for (i, said) in said.into_iter().enumerate() {
            assert_eq!(said.unwrap(), format!("together {i}"));
        }
        let kept = idle_streams(&a, &b.local_peer_id());
        assert!((1..=8).contains(&kept), "{kept} streams kept");
        assert_eq!(served_streams(&b, &a.local_peer_id()), kept, "the member serves the kept ones");

        // A call that times out takes its stream with it: the reply that comes late is never
        // read as another call's.
        let late = say(&a, &b, "slow", Duration::from_millis(200)).await;
        assert!(matches!(late, Err(TransportError::Timeout(_))), "{late:?}");
        // The member lets go of that stream at once (the caller reset it), not when its
        // answer comes, 800 ms later.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(served_streams(&b, &a.local_peer_id()), kept - 1);
        // (One call after another reuses the latest kept stream: the timed-out one, had it
        // been kept, would be that one.)
        for i in 0..kept + 2 {
            assert_eq!(say(&a, &b, &format!("after {i}"), wait).await.unwrap(), format!("after {i}"));
        }
        tokio::time::sleep(Duration::from_millis(1200)).await; // the late reply was answered
        for i in 0..kept + 2 {
            assert_eq!(say(&a, &b, &format!("last {i}"), wait).await.unwrap(), format!("last {i}"));
        }
        let after = kept.saturating_sub(1).max(1);
        assert_eq!(idle_streams(&a, &b.local_peer_id()), after, "the timed-out stream was not kept");
        assert_eq!(served_streams(&b, &a.local_peer_id()), after);
        // Each call reached the member exactly once.
        let heard = heard.lock().unwrap();
        assert_eq!(heard.len(), 50 + 8 + 1 + 2 * (kept + 2), "{heard:?}");
        assert!(heard.values().all(|n| *n == 1), "{heard:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_member_restarted_at_the_same_address_is_called_again_on_a_new_stream() {
        let (a, b, b_key, heard) = pair().await;
        let wait = Duration::from_secs(10);
        assert_eq!(say(&a, &b, "before", wait).await.unwrap(), "before");
        assert_eq!(idle_streams(&a, &b.local_peer_id()), 1);
        let addr = b.listen_addr();
        b.stop();
        drop(b);
        // The same key at the same address once the port is free again.
        let mut restarted = None;
        for _ in 0..100 {
            if let Ok(started) = Transport::start(&b_key, addr).await {
                restarted = Some(started);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (b, b_inbound) = restarted.expect("the port is free again");
        b.allow([a.local_peer_id()]);
        tokio::spawn(echo(b_inbound, heard.clone()));
        tokio::time::sleep(Duration::from_millis(300)).await; // the old connection is gone
        assert_eq!(say(&a, &b, "after", wait).await.unwrap(), "after");
        assert_eq!(idle_streams(&a, &b.local_peer_id()), 1);
        assert_eq!(heard.lock().unwrap().get("after"), Some(&1), "heard once");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_member_of_an_older_version_is_called_one_stream_per_call() {
        let a_key = ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng);
        let old_key = ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng);
        let (a, a_inbound) = Transport::start(&a_key, "127.0.0.1:0".parse().unwrap()).await.unwrap();
        let (old, old_inbound) =
            Transport::start_as_older(&old_key, "127.0.0.1:0".parse().unwrap()).await.unwrap();
        a.allow([old.local_peer_id()]);
        old.allow([a.local_peer_id()]);
        tokio::spawn(echo(a_inbound, Heard::default()));
        tokio::spawn(echo(old_inbound, Heard::default()));
        for i in 0..3 {
            let said = say(&a, &old, &format!("to old {i}"), Duration::from_secs(10)).await;
            let said = said.unwrap_or_else(|e| panic!("call {i}: {e}"));
            assert_eq!(said, format!("to old {i}"));
        }
        {
            let links = Links::lock(&a.streams.as_ref().unwrap().links);
            assert!(links.older.contains(&old.local_peer_id()), "known to speak an older protocol");
            assert!(links.idle.is_empty(), "no stream kept");
        }
        // And it calls this version's member, which serves its protocol.
        assert_eq!(say(&old, &a, "to new", Duration::from_secs(10)).await.unwrap(), "to new");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_blocked_peer_is_cut_off_both_ways_on_streams_kept_open_and_served_again_after() {
        let (a, b, _, heard) = pair().await;
        let (a_id, b_id) = (a.local_peer_id(), b.local_peer_id());
        let wait = Duration::from_secs(10);
        assert_eq!(say(&a, &b, "before", wait).await.unwrap(), "before");
        assert_eq!(idle_streams(&a, &b_id), 1);
        // The caller blocks the member: its call fails at once, unsent.
        a.block([b_id]);
        let blocked = say(&a, &b, "blocked here", wait).await;
        assert!(
            matches!(&blocked, Err(TransportError::Unreachable { reason, .. }) if reason.contains("blocked")),
            "{blocked:?}"
        );
        a.block([]);
        // The member blocks the caller: the request on the kept stream is dropped unread by
        // the member, and the call fails rather than waiting for its timeout.
        b.block([a_id]);
        let started = Instant::now();
        let dropped = say(&a, &b, "blocked there", wait).await;
        assert!(dropped.is_err() && !matches!(dropped, Err(TransportError::Timeout(_))), "{dropped:?}");
        assert!(started.elapsed() < wait / 2, "failed at once, not at the timeout");
        b.block([]);
        // Unblocked: served again, on a new stream (the failed one was not kept).
        assert_eq!(say(&a, &b, "after", wait).await.unwrap(), "after");
        let heard = heard.lock().unwrap();
        assert!(!heard.contains_key("blocked here") && !heard.contains_key("blocked there"), "{heard:?}");
        assert_eq!((heard.get("before"), heard.get("after")), (Some(&1), Some(&1)), "{heard:?}");
    }
}
