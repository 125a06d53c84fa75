//! Work done inside a container's network namespace from the host: bringing its loopback
//! interface up, and the TCP and HTTP probes, which connect to the replica's own loopback
//! address as the replica itself would.
//!
//! Each runs on a thread of its own, made for it and ended after it: `setns` moves only the
//! calling thread, and a thread left in a container's namespace must never be reused.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Runs `f` on a new thread inside the network namespace of process `pid` and returns what it
/// returned.
pub fn in_netns_of<T: Send + 'static>(
    pid: i32,
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
    std::thread::Builder::new()
        .name("netns".into())
        .spawn(move || {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
            f()
        })?
        .join()
        .map_err(|_| std::io::Error::other("the namespace thread panicked"))?
}

/// Sets `lo` up in the network namespace of process `pid` (a new namespace has it down).
pub fn loopback_up(pid: i32) -> std::io::Result<()> {
    in_netns_of(pid, || {
        // The netlink socket is made here, so it speaks to this thread's namespace.
        let rt = tokio::runtime::Builder::new_current_thread().enable_io().build()?;
        rt.block_on(async {
            let (connection, handle, _) = rtnetlink::new_connection()?;
            tokio::spawn(connection);
            // `lo` is the first link of every network namespace.
            let up = rtnetlink::LinkUnspec::new_with_index(LOOPBACK_INDEX).up().build();
            handle.link().set(up).execute().await.map_err(std::io::Error::other)
        })
    })
}

/// Connects the network namespace of process `pid` (a container made, not yet started) to its
/// owner's bridge: a veth pair whose host end joins the bridge and whose other end becomes
/// the container's `eth0` with its address and default route; `lo` up as well.
pub fn attach(pid: i32, net: &crate::network::Attachment) -> std::io::Result<()> {
    let (veth, peer, bridge) = (net.veth.clone(), format!("{}c", net.veth), net.bridge.clone());
    let rt = || tokio::runtime::Builder::new_current_thread().enable_io().build();
    let host_side = peer.clone();
    // The host side, from a thread of its own as well (the shim stays single-threaded).
    std::thread::spawn(move || -> std::io::Result<()> {
        rt()?.block_on(async {
            let (connection, handle, _) = rtnetlink::new_connection()?;
            tokio::spawn(connection);
            // A pair left by a run of the same id whose container is gone.
            if let Some(i) = index_of(&handle, &veth).await {
                let _ = handle.link().del(i).execute().await;
            }
            handle
                .link()
                .add(rtnetlink::LinkVeth::new(&veth, &host_side).build())
                .execute()
                .await
                .map_err(io)?;
            let b = index_of(&handle, &bridge)
                .await
                .ok_or_else(|| std::io::Error::other(format!("no bridge {bridge}")))?;
            let v =
                index_of(&handle, &veth).await.ok_or_else(|| std::io::Error::other("the veth is gone"))?;
            handle
                .link()
                .set(rtnetlink::LinkUnspec::new_with_index(v).controller(b).up().build())
                .execute()
                .await
                .map_err(io)?;
            let p = index_of(&handle, &host_side)
                .await
                .ok_or_else(|| std::io::Error::other("the veth peer is gone"))?;
            handle
                .link()
                .set(rtnetlink::LinkUnspec::new_with_index(p).setns_by_pid(pid as u32).build())
                .execute()
                .await
                .map_err(io)
        })
    })
    .join()
    .map_err(|_| std::io::Error::other("the network thread panicked"))??;
    let (ip, prefix, gateway) = (net.ip, net.prefix, net.gateway);
    in_netns_of(pid, move || {
        rt()?.block_on(async {
            let (connection, handle, _) = rtnetlink::new_connection()?;
            tokio::spawn(connection);
            // IPv4 only (this thread's /proc/sys/net is the container's namespace's).
            for conf in ["all", "default"] {
                let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{conf}/disable_ipv6"), b"1");
            }
            let up = rtnetlink::LinkUnspec::new_with_index(LOOPBACK_INDEX).up().build();
            handle.link().set(up).execute().await.map_err(io)?;
            let p = index_of(&handle, &peer)
                .await
                .ok_or_else(|| std::io::Error::other("the veth peer did not arrive"))?;
            handle
                .link()
                .set(rtnetlink::LinkUnspec::new_with_index(p).name("eth0".into()).build())
                .execute()
                .await
                .map_err(io)?;
            handle.address().add(p, ip.into(), prefix).execute().await.map_err(io)?;
            handle
                .link()
                .set(rtnetlink::LinkUnspec::new_with_index(p).up().build())
                .execute()
                .await
                .map_err(io)?;
            let route = rtnetlink::RouteMessageBuilder::<std::net::Ipv4Addr>::new().gateway(gateway).build();
            handle.route().add(route).execute().await.map_err(io)
        })
    })
}

fn io(e: rtnetlink::Error) -> std::io::Error {
    std::io::Error::other(e)
}

/// The index of link `name` in the namespace `handle` speaks to, if there is one.
pub(crate) async fn index_of(handle: &rtnetlink::Handle, name: &str) -> Option<u32> {
    use futures_util::TryStreamExt;
    handle
        .link()
        .get()
        .match_name(name.to_owned())
        .execute()
        .try_next()
        .await
        .ok()
        .flatten()
        .map(|l| l.header.index)
}

/// The index of `lo` in every network namespace.
const LOOPBACK_INDEX: u32 = 1;

/// Whether something accepts a TCP connection on `127.0.0.1:port` within `timeout`.
pub fn tcp_check(port: u16, timeout: Duration) -> Result<(), String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, timeout).map(drop).map_err(|e| format!("dial tcp :{port}: {e}"))
}

/// Most bytes of a probe's HTTP response read (the status line is all that counts).
const MAX_RESPONSE_HEAD: usize = 4096;

/// An HTTP/1.1 GET of `path` on `127.0.0.1:port`: passes on a status from 200 to 399, as
/// Kubernetes' probes do (redirects are not followed).
pub fn http_check(port: u16, path: &str, timeout: Duration) -> Result<(), String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let fail = |e: std::io::Error| format!("GET :{port}{path}: {e}");
    // One deadline for the whole probe: a server that sends a byte now and then is not
    // waited for beyond it.
    let deadline = std::time::Instant::now() + timeout;
    let left = || {
        deadline
            .checked_duration_since(std::time::Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("GET :{port}{path}: timed out after {} s", timeout.as_secs()))
    };
    let mut s = TcpStream::connect_timeout(&addr, left()?).map_err(fail)?;
    s.set_write_timeout(Some(left()?)).map_err(fail)?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: univrs-probe/1.0\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    s.write_all(request.as_bytes()).map_err(fail)?;
    let mut head = Vec::new();
    let mut buf = [0u8; 512];
    while !head.contains(&b'\n') && head.len() < MAX_RESPONSE_HEAD {
        s.set_read_timeout(Some(left()?)).map_err(fail)?;
        match s.read(&mut buf).map_err(fail)? {
            0 => break,
            n => head.extend_from_slice(&buf[..n]),
        }
    }
    let line = String::from_utf8_lossy(&head);
    let line = line.lines().next().unwrap_or_default();
    let code = status_code(line).ok_or_else(|| format!("GET :{port}{path}: not an HTTP response"))?;
    if (200..400).contains(&code) {
        Ok(())
    } else {
        Err(format!("GET :{port}{path}: HTTP probe failed with statuscode: {code}"))
    }
}

/// The status code of an HTTP/1.x status line.
fn status_code(line: &str) -> Option<u16> {
    let mut parts = line.split_whitespace();
    parts.next().filter(|v| v.starts_with("HTTP/1."))?;
    parts.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_http_probe_passes_on_2xx_and_3xx_only() {
        assert_eq!(status_code("HTTP/1.1 200 OK"), Some(200));
        assert_eq!(status_code("HTTP/1.0 302 Found"), Some(302));
        assert_eq!(status_code("SSH-2.0-OpenSSH"), None);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let serve = std::thread::spawn(move || {
            for code in ["200 OK", "500 Internal Server Error"] {
                let (mut s, _) = listener.accept().unwrap();
                let mut buf = [0u8; 1024];
                let n = s.read(&mut buf).unwrap();
                assert!(String::from_utf8_lossy(&buf[..n]).starts_with("GET /healthz HTTP/1.1\r\n"));
                s.write_all(format!("HTTP/1.1 {code}\r\nContent-Length: 0\r\n\r\n").as_bytes()).unwrap();
            }
        });
        assert_eq!(http_check(port, "/healthz", Duration::from_secs(2)), Ok(()));
        let e = http_check(port, "/healthz", Duration::from_secs(2)).unwrap_err();
        assert!(e.contains("statuscode: 500"), "{e}");
        serve.join().unwrap();
        assert!(tcp_check(port, Duration::from_secs(1)).is_err());
    }
}
