//! A loopback TCP proxy whose link can be cut: what a test puts between a replica and its
//! master to simulate a network partition.

use std::net::{Ipv4Addr, SocketAddr};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::error::{IoResultExt, Result};

/// Forwards connections made to [`TcpProxy::addr`] to a target address. With the blackhole on
/// ([`TcpProxy::set_blackhole`]) nothing is forwarded in either direction and new connections
/// are accepted but not connected onward: both ends see a silent link (no reset, no close),
/// as in a network partition. Turning it off forwards again, on the same connections, what
/// was held. Dropping the proxy closes every connection.
#[derive(Debug)]
pub struct TcpProxy {
    addr: SocketAddr,
    blackhole: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    /// Listens on a free port of 127.0.0.1 and forwards to `target`.
    ///
    /// # Errors
    ///
    /// [`Error::Io`](crate::Error::Io) when no port can be bound.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: nothing runs until it returns.
    pub async fn start(target: SocketAddr) -> Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .context(|| "bind the proxy on 127.0.0.1".to_owned())?;
        let addr = listener
            .local_addr()
            .context(|| "the proxy's address".to_owned())?;
        let (blackhole, watching) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, target, watching));
        Ok(TcpProxy {
            addr,
            blackhole,
            task,
        })
    }

    /// The address to connect to instead of the target.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port to connect to instead of the target's.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Cuts (`true`) or restores (`false`) the link.
    pub fn set_blackhole(&self, on: bool) {
        self.blackhole.send_replace(on);
    }

    /// Whether the link is cut.
    pub fn is_blackholed(&self) -> bool {
        *self.blackhole.borrow()
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        // Aborting the accept loop drops its JoinSet, which aborts every connection's pumps.
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, target: SocketAddr, hole: watch::Receiver<bool>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else { continue };
                conns.spawn(connection(client, target, hole.clone()));
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// Waits while the link is cut; false when the proxy is gone.
async fn wait_open(hole: &mut watch::Receiver<bool>) -> bool {
    hole.wait_for(|on| !*on).await.is_ok()
}

async fn connection(client: TcpStream, target: SocketAddr, mut hole: watch::Receiver<bool>) {
    // A connection made while the link is cut hangs, like a SYN into a partition, until the
    // link comes back (the client's own connect timeout decides when it gives up).
    if !wait_open(&mut hole).await {
        return;
    }
    let Ok(server) = TcpStream::connect(target).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let mut pumps = JoinSet::new();
    pumps.spawn(pump(cr, sw, hole.clone()));
    pumps.spawn(pump(sr, cw, hole));
    // When one direction ends, the other ends too (the peer closed or failed).
    let _ = pumps.join_next().await;
}

async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut hole: watch::Receiver<bool>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if !wait_open(&mut hole).await {
            return;
        }
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => {
                    let _ = to.shutdown().await;
                    return;
                }
                Ok(n) => n,
            },
            // Cut while waiting for data: stop reading until the link is back.
            changed = hole.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
        };
        // Bytes read just as the link was cut are held, not lost (TCP would retransmit them).
        if !wait_open(&mut hole).await {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    async fn echo_server() -> SocketAddr {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = l.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn a_cut_link_holds_bytes_silently_and_delivers_them_when_restored() {
        let proxy = TcpProxy::start(echo_server().await).await.unwrap();
        let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
        let mut buf = [0u8; 5];
        c.write_all(b"hello").await.unwrap();
        c.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hello");

        proxy.set_blackhole(true);
        assert!(proxy.is_blackholed());
        c.write_all(b"again").await.unwrap();
        // Nothing comes back while the link is cut (bounded wait), and the connection is not
        // closed either.
        let read = tokio::time::timeout(Duration::from_millis(500), c.read(&mut buf)).await;
        assert!(read.is_err(), "the cut link answered: {read:?}");

        proxy.set_blackhole(false);
        tokio::time::timeout(Duration::from_secs(30), c.read_exact(&mut buf))
            .await
            .expect("the held bytes arrive once the link is back")
            .unwrap();
        assert_eq!(&buf, b"again");
    }
}
