//! Free loopback ports for test servers.

use std::net::{Ipv4Addr, TcpListener};

use crate::error::{IoResultExt, Result};

/// How many free ports a server start tries: another process may take a port between
/// [`free_port`] and the server's bind.
pub const PORT_ATTEMPTS: usize = 8;

/// A TCP port on 127.0.0.1 that was free a moment ago.
///
/// # Errors
///
/// [`Error::Io`](crate::Error::Io) when no socket can be bound.
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .context(|| "bind 127.0.0.1:0 to find a free port".to_owned())?;
    Ok(l.local_addr()
        .context(|| "local address of a probe socket".to_owned())?
        .port())
}

/// Whether a server's failure to start (its error or log text) says its port was taken, so the
/// start should be tried again on another port.
pub fn is_port_conflict(text: &str) -> bool {
    [
        "Address already in use",
        "Bind on TCP/IP",
        "could not create any TCP/IP sockets",
    ]
    .iter()
    .any(|t| text.contains(t))
}
