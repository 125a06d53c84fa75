//! Published ports: the agent listens on each `hostPort` of a replica and relays what comes to
//! the replica's address and `containerPort` (a userland proxy, as docker-proxy): so the port
//! answers on every address of the node, `127.0.0.1` included, with no NAT rule to the
//! replica (nothing from outside the node reaches a replica's address directly).
//!
//! The listeners live as long as the replica is supervised here (across its restarts; an agent
//! that restarts opens them again for the runs it adopts). Each port relays at most
//! [`MAX_FLOWS`] connections (TCP) or peers (UDP) at once.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use api::kinds::{ContainerPort, Protocol};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{Mutex, Semaphore};

/// Most connections (TCP) or peers (UDP) one published port relays at once.
pub const MAX_FLOWS: usize = 1024;

/// Most connections and peers all of a node's published ports relay at once (each holds two
/// descriptors of the agent's; the agent raises its own limit of open files at start).
pub const MAX_NODE_FLOWS: usize = 4096;

/// The node-wide permits of [`MAX_NODE_FLOWS`].
fn node_flows() -> &'static Arc<Semaphore> {
    static FLOWS: std::sync::OnceLock<Arc<Semaphore>> = std::sync::OnceLock::new();
    FLOWS.get_or_init(|| Arc::new(Semaphore::new(MAX_NODE_FLOWS)))
}

/// How long a connection to the replica may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a UDP peer is remembered without traffic.
const UDP_IDLE: Duration = Duration::from_secs(60);

/// The listeners of one replica's published ports; dropping it closes them.
#[derive(Debug)]
pub struct Published {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Published {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Opens the node's side of each of `ports` that has a host port, relaying to `ip`. An error
/// names the port that could not be opened (held by something else on the node).
pub async fn publish(ports: &[ContainerPort], ip: Ipv4Addr) -> Result<Published, String> {
    let mut published = Published { tasks: Vec::new() };
    for p in ports {
        let Some(host) = p.host_port else { continue };
        let target = SocketAddr::from((ip, p.container_port));
        let bind = SocketAddr::from((Ipv4Addr::UNSPECIFIED, host));
        let held =
            |e: std::io::Error| format!("cannot publish host port {host}/{}: {e}", p.protocol.as_str());
        let task = match p.protocol {
            Protocol::TCP => tokio::spawn(relay_tcp(TcpListener::bind(bind).await.map_err(held)?, target)),
            Protocol::UDP => {
                tokio::spawn(relay_udp(Arc::new(UdpSocket::bind(bind).await.map_err(held)?), target))
            }
        };
        published.tasks.push(task);
    }
    Ok(published)
}

async fn relay_tcp(listener: TcpListener, target: SocketAddr) {
    let flows = Arc::new(Semaphore::new(MAX_FLOWS));
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await; // out of descriptors, for a while
            continue;
        };
        // Past the bounds (the port's, the node's) a connection is closed at once, not queued.
        let Ok(permit) = flows.clone().try_acquire_owned() else { continue };
        let Ok(node_permit) = node_flows().clone().try_acquire_owned() else { continue };
        tokio::spawn(async move {
            let _permits = (permit, node_permit);
            let Ok(Ok(mut outbound)) =
                tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target)).await
            else {
                return; // the replica does not answer there (yet): the client sees the close
            };
            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
        });
    }
}

async fn relay_udp(socket: Arc<UdpSocket>, target: SocketAddr) {
    let peers: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>> = Arc::default();
    let mut buf = vec![0u8; 65_536];
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buf).await else { continue };
        let upstream = {
            let mut map = peers.lock().await;
            match map.get(&from) {
                Some(u) => u.clone(),
                None if map.len() >= MAX_FLOWS => continue,
                None => {
                    let Ok(node_permit) = node_flows().clone().try_acquire_owned() else { continue };
                    let Ok(u) = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await else { continue };
                    if u.connect(target).await.is_err() {
                        continue;
                    }
                    let u = Arc::new(u);
                    map.insert(from, u.clone());
                    // The replica's answers go back to this peer until it has been quiet a while.
                    let (u2, socket, peers) = (u.clone(), socket.clone(), peers.clone());
                    tokio::spawn(async move {
                        let _node_permit = node_permit;
                        let mut buf = vec![0u8; 65_536];
                        while let Ok(Ok(n)) = tokio::time::timeout(UDP_IDLE, u2.recv(&mut buf)).await {
                            let _ = socket.send_to(&buf[..n], from).await;
                        }
                        peers.lock().await.remove(&from);
                    });
                    u
                }
            }
        };
        let _ = upstream.send(&buf[..n]).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }

    #[tokio::test]
    async fn a_published_port_relays_tcp_and_udp_and_a_held_one_is_named() {
        let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = backend.local_addr().unwrap().port();
        let udp_backend = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let udp_port = udp_backend.local_addr().unwrap().port();
        let (host, udp_host) = (free_port(), free_port());
        let ports = [
            ContainerPort { container_port: port, host_port: Some(host), ..Default::default() },
            ContainerPort {
                container_port: udp_port,
                host_port: Some(udp_host),
                protocol: Protocol::UDP,
                name: None,
            },
            ContainerPort { container_port: 9, host_port: None, ..Default::default() },
        ];
        let published = publish(&ports, Ipv4Addr::LOCALHOST).await.unwrap();
        tokio::spawn(async move {
            let (mut s, _) = backend.accept().await.unwrap();
            let mut b = [0u8; 4];
            s.read_exact(&mut b).await.unwrap();
            s.write_all(&b).await.unwrap();
        });
        let mut c = TcpStream::connect(("127.0.0.1", host)).await.unwrap();
        c.write_all(b"ping").await.unwrap();
        let mut b = [0u8; 4];
        c.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"ping");

        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.send_to(b"hi", ("127.0.0.1", udp_host)).await.unwrap();
        let mut b = [0u8; 8];
        let (n, from) = udp_backend.recv_from(&mut b).await.unwrap();
        assert_eq!(&b[..n], b"hi");
        udp_backend.send_to(b"yo", from).await.unwrap();
        let n = client.recv(&mut b).await.unwrap();
        assert_eq!(&b[..n], b"yo");

        // The port is held while published: a second replica's is refused by name.
        let err = publish(&ports[..1], Ipv4Addr::LOCALHOST).await.unwrap_err();
        assert!(err.contains(&format!("host port {host}/TCP")), "{err}");
        drop(published);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(publish(&ports[..1], Ipv4Addr::LOCALHOST).await.is_ok(), "closed when dropped");
    }
}
