//! The member-to-member transport: a libp2p swarm (TCP, Noise, Yamux) speaking one
//! request-response protocol with CBOR messages ([`Rpc`] → [`Reply`]).
//!
//! Noise authenticates both ends by their Ed25519 keys: a member's libp2p identity is its
//! `member.key`, so the `PeerId` of every inbound request is proven, and the layer above
//! ([`super::cluster`]) decides from it whether the peer is a member. The swarm lives in one
//! task; callers talk to it through a bounded channel.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt as _;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport, ResponseChannel};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, StreamProtocol};
use tokio::sync::{mpsc, oneshot};

use super::rpc::{Reply, Rpc};

/// The protocol name (versioned: a member of another version is refused by protocol negotiation).
const PROTOCOL: &str = "/univrs/raft/1";

/// Largest message either way. AppendEntries batches are capped well below (see
/// `node::MAX_PAYLOAD_ENTRIES` and the snapshot chunk size); objects are at most 3 MiB each.
const MAX_MESSAGE_BYTES: u64 = 256 * 1024 * 1024;

/// Requests waiting to be handled by the member; beyond that, a request is dropped (the peer
/// sees a failed RPC and retries, as Raft does).
const INBOUND_QUEUE: usize = 256;

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
    /// No answer in time.
    #[error("member {0} did not answer in time")]
    Timeout(PeerId),
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

/// The handle of a running transport; clones share the swarm, which stops when the last
/// handle is dropped.
#[derive(Clone, Debug)]
pub struct Transport {
    commands: mpsc::Sender<Command>,
    local: PeerId,
    listen: SocketAddr,
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
pub fn peer_id(did: &str) -> Option<PeerId> {
    let key = api::identity::Did::parse(did).ok()?.verifying_key();
    let public = libp2p::identity::ed25519::PublicKey::try_from_bytes(key.as_bytes()).ok()?;
    Some(libp2p::identity::PublicKey::from(public).to_peer_id())
}

/// `IP:PORT` as a TCP multiaddr.
pub fn multiaddr(addr: &str) -> Result<Multiaddr, TransportError> {
    let sock: SocketAddr = addr.parse().map_err(|_| TransportError::BadAddress(addr.to_owned()))?;
    Ok(Multiaddr::from(sock.ip()).with(Protocol::Tcp(sock.port())))
}

impl Transport {
    /// Starts the swarm with `key` as its identity, listening on `listen` (port 0: any free
    /// port). Inbound requests arrive on the returned receiver.
    pub async fn start(
        key: &ed25519_dalek::SigningKey,
        listen: SocketAddr,
    ) -> Result<(Self, mpsc::Receiver<Inbound>), TransportError> {
        let listen_err = |reason: String| TransportError::Listen { addr: listen, reason };
        let codec = request_response::cbor::codec::Codec::<Rpc, Reply>::default()
            .set_request_size_maximum(MAX_MESSAGE_BYTES)
            .set_response_size_maximum(MAX_MESSAGE_BYTES);
        // A request's own deadline is set by its caller; this one only bounds a forgotten one.
        let config = request_response::Config::default().with_request_timeout(Duration::from_secs(120));
        let behaviour = request_response::Behaviour::with_codec(
            codec,
            [(StreamProtocol::new(PROTOCOL), ProtocolSupport::Full)],
            config,
        );
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
        let (commands, command_rx) = mpsc::channel(INBOUND_QUEUE);
        let (inbound_tx, inbound_rx) = mpsc::channel(INBOUND_QUEUE);
        let blocked = Arc::new(Mutex::new(BTreeSet::new()));
        let task = tokio::spawn(run(swarm, command_rx, commands.clone(), inbound_tx, blocked.clone()));
        let listen = SocketAddr::new(listen.ip(), port);
        Ok((Self { commands, local, listen, blocked, task: Arc::new(AbortOnDrop(task)) }, inbound_rx))
    }

    /// This member's PeerId.
    pub fn local_peer_id(&self) -> PeerId {
        self.local
    }

    /// The address actually listened on.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
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

async fn run(
    mut swarm: libp2p::Swarm<request_response::cbor::Behaviour<Rpc, Reply>>,
    mut commands: mpsc::Receiver<Command>,
    command_tx: mpsc::Sender<Command>,
    inbound: mpsc::Sender<Inbound>,
    blocked: Arc<Mutex<BTreeSet<PeerId>>>,
) {
    let mut pending: HashMap<OutboundRequestId, oneshot::Sender<Result<Reply, TransportError>>> =
        HashMap::new();
    let is_blocked = |peer: &PeerId| blocked.lock().expect("blocked peers lock").contains(peer);
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                None => return,
                Some(Command::Send { peer, addr, rpc, reply }) => {
                    if is_blocked(&peer) {
                        let _ = reply.send(Err(TransportError::Unreachable { peer, reason: "blocked (fault injection)".into() }));
                        continue;
                    }
                    let id = swarm.behaviour_mut().send_request_with_addresses(&peer, rpc, vec![addr]);
                    // Callers that gave up leave closed senders behind: drop those now and then.
                    if pending.len() > 1024 {
                        pending.retain(|_, s| !s.is_closed());
                    }
                    pending.insert(id, reply);
                }
                Some(Command::Respond { channel, reply }) => {
                    let _ = swarm.behaviour_mut().send_response(channel, reply);
                }
            },
            event = swarm.select_next_some() => match event {
                SwarmEvent::Behaviour(request_response::Event::Message { peer, message, .. }) => match message {
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
                SwarmEvent::Behaviour(request_response::Event::OutboundFailure { peer, request_id, error, .. }) => {
                    if let Some(reply) = pending.remove(&request_id) {
                        let _ = reply.send(Err(TransportError::Unreachable { peer, reason: error.to_string() }));
                    }
                }
                _ => {}
            },
        }
    }
}
