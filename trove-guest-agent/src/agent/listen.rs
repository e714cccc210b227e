//! Where the agent listens: plain TCP, TLS (rustls) or a Unix socket whose peers' uids are
//! checked, each as an axum [`Listener`].

use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::serve::Listener;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use trove_guest_core::{Error, Result};

/// The certificate chain and private key of a TLS listener (PEM files).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl TlsFiles {
    /// The chain in `cert` and the key in `key`.
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        TlsFiles {
            cert: cert.into(),
            key: key.into(),
        }
    }
}

/// A listener of the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ListenOn {
    /// Plain HTTP on a TCP address (port 0: a free port).
    Tcp(SocketAddr),
    /// HTTPS on a TCP address.
    Tls {
        /// The address (port 0: a free port).
        addr: SocketAddr,
        /// The server's certificate and key.
        tls: TlsFiles,
    },
    /// Plain HTTP on a Unix socket; only peers whose uid the agent admits
    /// ([`AgentAuth::allowed_uids`](super::AgentAuth::allowed_uids)) are served. The socket file
    /// is created with `mode` (0600 or 0660) and removed when the agent stops.
    Unix {
        /// The socket file (a stale socket there is replaced; any other file is an error).
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
}

/// Where a running agent listens.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Endpoint {
    /// Plain HTTP.
    Tcp(SocketAddr),
    /// HTTPS.
    Tls(SocketAddr),
    /// A Unix socket.
    Unix(PathBuf),
}

/// The largest TLS key file read.
const MAX_TLS_KEY_LEN: u64 = 1 << 20;

/// The listener's private key file's bytes, read with
/// [`read_private_file`](trove_guest_core::private_file::read_private_file).
pub(crate) fn read_tls_key_file(
    path: &Path,
) -> Result<trove_guest_core::private_file::PrivateBytes> {
    trove_guest_core::private_file::read_private_file(path, MAX_TLS_KEY_LEN)
        .map_err(|e| e.into_error("tls_key_file"))
}

/// Reads the listener's private key with
/// [`read_private_file`](trove_guest_core::private_file::read_private_file) (no symlink, a
/// regular file of the agent's uid, mode 0600 or stricter) and parses it.
pub(crate) fn read_tls_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    let bytes = read_tls_key_file(path)?;
    // The parser's own error is left out: nothing read from a key file goes into an error.
    PrivateKeyDer::from_pem_slice(bytes.expose()).map_err(|_| {
        Error::invalid(
            "tls_key_file",
            format!("{}: no PEM private key", path.display()),
        )
    })
}

/// Loads a TLS server configuration (HTTP/1.1 over TLS 1.2 or 1.3, ring's provider).
pub(crate) fn server_config(tls: &TlsFiles) -> Result<rustls::ServerConfig> {
    let certs = CertificateDer::pem_file_iter(&tls.cert)
        .and_then(|it| it.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(|e| {
            Error::invalid(
                "tls_cert_file",
                format!("{}: no PEM certificate chain: {e}", tls.cert.display()),
            )
        })?;
    if certs.is_empty() {
        return Err(Error::invalid(
            "tls_cert_file",
            format!("{} holds no certificate", tls.cert.display()),
        ));
    }
    let key = read_tls_key(&tls.key)?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| Error::invalid("tls", e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| {
        Error::invalid(
            "tls_key_file",
            format!("the key does not fit the certificate: {e}"),
        )
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// TLS connections, handshaken in tasks of their own so that a slow client holds up no other.
pub(crate) struct TlsListener {
    local: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    _acceptor: AbortOnDrop,
}

/// How long a client may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

impl TlsListener {
    pub(crate) fn new(listener: TcpListener, config: rustls::ServerConfig) -> io::Result<Self> {
        let local = listener.local_addr()?;
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let (tx, ready) = mpsc::channel(64);
        let task = tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::info!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::info!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener {
            local,
            ready,
            _acceptor: AbortOnDrop(task),
        })
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The acceptor never ends while the listener lives.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// A Unix-socket listener admitting only connections from `allowed` uids.
pub(crate) struct PeerCheckedUnix {
    inner: UnixListener,
    allowed: Vec<u32>,
}

impl PeerCheckedUnix {
    /// Binds `path` with `mode`, replacing a stale socket left by an earlier agent.
    pub(crate) fn bind(path: &Path, mode: u32, allowed: Vec<u32>) -> Result<Self> {
        if mode != 0o600 && mode != 0o660 {
            return Err(Error::invalid(
                "unix_socket_mode",
                format!("{mode:#o}: the agent's socket is 0600 or 0660"),
            ));
        }
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path)
                .map_err(|e| Error::io(format!("remove stale socket {}", path.display()), e))?,
            Ok(_) => {
                return Err(Error::invalid(
                    "unix_socket",
                    format!("{} exists and is not a socket", path.display()),
                ));
            }
            Err(_) => {}
        }
        let inner = bind_private(path, mode, |_| {})?;
        Ok(PeerCheckedUnix { inner, allowed })
    }
}

/// Binds a Unix socket at `path` that is never reachable with another mode than `mode`.
///
/// `bind(2)` creates the socket file with the umask's mode, and a `chmod` afterwards leaves a
/// window in which it is reachable with that mode. So the socket is bound inside a fresh
/// directory of mode 0700 next to `path` (on the same file system; only the agent's uid can
/// reach anything inside it), given `mode` there, and then renamed onto `path` (atomic: a
/// stale socket is replaced, and `path` never names a socket with another mode). The directory
/// is removed. `before_publish` sees the socket's temporary path just before the rename (for
/// tests). The temporary path is about 20 bytes longer than `path`: mind the 107-byte limit
/// of a socket path.
fn bind_private(
    path: &Path,
    mode: u32,
    before_publish: impl FnOnce(&Path),
) -> Result<UnixListener> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    // Created 0700 (a umask can only make it stricter), not chmodded afterwards.
    let dir = tempfile::Builder::new()
        .prefix(".tg-sock-")
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir_in(parent)
        .map_err(|e| {
            Error::io(
                format!("create a private directory in {}", parent.display()),
                e,
            )
        })?;
    let tmp = dir.path().join("s");
    let listener = UnixListener::bind(&tmp).map_err(|e| {
        Error::io(
            format!("bind {} (for {})", tmp.display(), path.display()),
            e,
        )
    })?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io(format!("chmod {}", tmp.display()), e))?;
    before_publish(&tmp);
    std::fs::rename(&tmp, path)
        .map_err(|e| Error::io(format!("rename the socket onto {}", path.display()), e))?;
    dir.close().map_err(|e| {
        Error::io(
            format!("remove the private directory in {}", parent.display()),
            e,
        )
    })?;
    Ok(listener)
}

impl Listener for PeerCheckedUnix {
    type Io = UnixStream;
    /// The peer's uid (the agent's own for the listener itself).
    type Addr = u32;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let stream = match self.inner.accept().await {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "accept on the Unix socket failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            match stream.peer_cred() {
                Ok(cred) if self.allowed.contains(&cred.uid()) => {
                    return (stream, cred.uid());
                }
                Ok(cred) => tracing::warn!(
                    uid = cred.uid(),
                    pid = ?cred.pid(),
                    "refused a Unix-socket connection from a uid the agent does not admit"
                ),
                Err(e) => tracing::warn!(
                    error = %e,
                    "refused a Unix-socket connection whose peer could not be identified"
                ),
            }
            // Dropping the stream closes the connection unanswered.
        }
    }

    fn local_addr(&self) -> io::Result<u32> {
        Ok(nix::unistd::geteuid().as_raw())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode_of(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[tokio::test]
    async fn the_socket_has_its_mode_before_it_appears_at_its_path() {
        for mode in [0o600, 0o660] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("agent.sock");
            let mut seen = None;
            let listener = bind_private(&path, mode, |tmp| {
                // Before the rename: nothing at the path yet, the socket already has its mode,
                // and the directory holding it admits only the agent's uid.
                let holder = tmp.parent().unwrap();
                seen = Some((
                    path.exists(),
                    mode_of(tmp),
                    mode_of(holder),
                    holder.parent() == Some(dir.path()),
                ));
            })
            .unwrap();
            assert_eq!(seen, Some((false, mode, 0o700, true)), "{mode:o}");
            let meta = std::fs::symlink_metadata(&path).unwrap();
            assert!(meta.file_type().is_socket());
            assert_eq!(mode_of(&path), mode);
            // Only the socket is left: the private directory is gone.
            let names: Vec<_> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(names, vec![std::ffi::OsString::from("agent.sock")]);
            // The renamed socket accepts connections.
            let (client, accepted) =
                tokio::time::timeout(std::time::Duration::from_secs(30), async {
                    tokio::join!(UnixStream::connect(&path), listener.accept())
                })
                .await
                .expect("connect and accept within 30 s");
            client.expect("the renamed socket accepts connections");
            accepted.expect("the listener accepted the connection");
        }
    }

    #[tokio::test]
    async fn a_stale_socket_is_replaced_and_another_file_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        let stale = std::os::unix::net::UnixListener::bind(&path).unwrap();
        drop(stale);
        let l = PeerCheckedUnix::bind(&path, 0o600, vec![0]).unwrap();
        assert_eq!(mode_of(&path), 0o600);
        UnixStream::connect(&path)
            .await
            .expect("the new socket answers");
        drop(l);
        let file = dir.path().join("file");
        std::fs::write(&file, "x").unwrap();
        let e = PeerCheckedUnix::bind(&file, 0o600, vec![0]).err().unwrap();
        assert!(e.to_string().contains("not a socket"), "{e}");
        assert_eq!(std::fs::read(&file).unwrap(), b"x");
    }
}
