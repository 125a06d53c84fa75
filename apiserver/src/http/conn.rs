//! The accept loop: connections within [`ConnLimits`], TLS handshakes and request heads
//! bounded in time, and a backoff when accepting fails (no file descriptors left), so that
//! neither slow clients nor many of them starve the server.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::ConnLimits;

/// How long open connections get to finish after shutdown starts.
const DRAIN: Duration = Duration::from_secs(10);
/// The longest pause after a failed accept.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Connections open per address.
#[derive(Clone, Default)]
struct PerAddress(Arc<Mutex<HashMap<IpAddr, usize>>>);

/// One open connection of an address; dropping it closes the count.
struct AddressSlot(PerAddress, IpAddr);

/// Whom an address counts for: itself, or for IPv6 its /64 (one host commonly holds a whole
/// /64, so per single address the cap would not bound it). IPv4-mapped addresses count as
/// their IPv4 address.
fn holder(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
        v4 => v4,
    }
}

impl PerAddress {
    fn open(&self, ip: IpAddr, max: usize) -> Option<AddressSlot> {
        let ip = holder(ip);
        let mut open = self.0.lock().expect("connection count lock");
        let n = open.entry(ip).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(AddressSlot(self.clone(), ip))
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.0.0.lock().expect("connection count lock");
        if let Some(n) = open.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.1);
            }
        }
    }
}

/// Serves `app` on `listener`, over TLS when `tls` is given, until `shutdown`, then drains.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let total = Arc::new(Semaphore::new(limits.max_connections));
    let per_address = PerAddress::default();
    let mut shutdown = std::pin::pin!(shutdown);
    let mut backoff = Duration::ZERO;
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => {
                    backoff = Duration::ZERO;
                    conn
                }
                // Out of file descriptors (EMFILE) or memory: accepting again at once would
                // spin. Wait a little longer each time, and let open connections finish.
                Err(e) => {
                    backoff = (backoff * 2).clamp(Duration::from_millis(5), MAX_BACKOFF);
                    warn_accept(&e, backoff);
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => continue,
                        () = &mut shutdown => break,
                    }
                }
            },
            () = &mut shutdown => break,
        };
        // Over a cap, the connection is closed at once: it costs the server an accept.
        let Ok(permit) = total.clone().try_acquire_owned() else { continue };
        let Some(slot) = per_address.open(peer.ip(), limits.max_per_address) else { continue };
        // Small responses go out at once: with Nagle's algorithm a response written in two
        // pieces waits for the client's delayed ACK (40 ms per request).
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let mut builder = Builder::new(TokioExecutor::new());
        builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                Some(acceptor) => {
                    let handshake = tokio::time::timeout(limits.handshake_timeout, acceptor.accept(stream));
                    let Ok(Ok(stream)) = handshake.await else { return };
                    let conn =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
                    let _ = watcher.watch(conn).await;
                }
                None => {
                    let conn =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
                    let _ = watcher.watch(conn).await;
                }
            }
            drop((permit, slot));
        });
    }
    let _ = tokio::time::timeout(DRAIN, graceful.shutdown()).await;
    Ok(())
}

fn warn_accept(e: &std::io::Error, backoff: Duration) {
    tracing::warn!("cannot accept a connection ({e}); pausing {backoff:?}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_slash_64_counts_as_one_address() {
        let per = PerAddress::default();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let a = per.open(ip("2001:db8:1:2::1"), 2).unwrap();
        let _b = per.open(ip("2001:db8:1:2:ffff::9"), 2).unwrap();
        assert!(per.open(ip("2001:db8:1:2::3"), 2).is_none(), "the /64 is full");
        assert!(per.open(ip("2001:db8:1:3::1"), 2).is_some(), "another /64");
        let _v4 = per.open(ip("192.0.2.1"), 1).unwrap();
        assert!(per.open(ip("::ffff:192.0.2.1"), 1).is_none(), "IPv4-mapped is the IPv4 address");
        drop(a);
        assert!(per.open(ip("2001:db8:1:2::3"), 2).is_some(), "a closed connection frees its slot");
    }
}
