//! A minimal RESP2 client: what the strategy sends is a handful of administrative commands
//! and one `PSYNC` stream, so a general client library would add more than it saves.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufStream};
use trove_guest_core::{AdminConnection, Error, Result, Secret};

use crate::commands::{self, Cmd};

/// How long one connect or one command may take.
pub(crate) const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest bulk reply or line accepted (the RDB itself is streamed, not read as a reply).
const MAX_REPLY: usize = 64 << 20;
/// Deepest nesting of arrays accepted in a reply: each level is a nested future polled
/// recursively, so an unbounded `*1\r\n*1\r\n...` overflowed the stack.
const MAX_DEPTH: usize = 64;

pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// A reply, or the server's error text.
type ReplyFuture<'a> =
    Pin<Box<dyn Future<Output = Result<std::result::Result<Reply, String>>> + Send + 'a>>;

/// A reply other than an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reply {
    Status(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// The reply as text (status or bulk string).
    pub(crate) fn text(&self) -> String {
        match self {
            Reply::Status(s) => s.clone(),
            Reply::Bulk(Some(b)) => String::from_utf8_lossy(b).into_owned(),
            Reply::Int(i) => i.to_string(),
            _ => String::new(),
        }
    }

    /// The elements of an array reply as text.
    pub(crate) fn texts(&self) -> Vec<String> {
        match self {
            Reply::Array(Some(v)) => v.iter().map(Reply::text).collect(),
            _ => Vec::new(),
        }
    }
}

/// One connection to a Redis server.
pub(crate) struct Conn {
    io: BufStream<Box<dyn Io>>,
    peer: String,
}

fn datastore(message: String) -> Error {
    Error::Datastore {
        message,
        source: None,
    }
}

async fn bounded<T>(what: &str, f: impl Future<Output = Result<T>>) -> Result<T> {
    match tokio::time::timeout(IO_TIMEOUT, f).await {
        Ok(r) => r,
        Err(_) => Err(Error::timeout(what.to_owned(), IO_TIMEOUT)),
    }
}

impl Conn {
    /// A connection over any stream, without logging in (for the fuzzing harness).
    #[cfg(feature = "fuzzing")]
    pub(crate) fn over(io: Box<dyn Io>) -> Conn {
        Conn {
            io: BufStream::new(io),
            peer: "fuzz".into(),
        }
    }

    /// One reply, or the server's error text (for the fuzzing harness).
    #[cfg(feature = "fuzzing")]
    pub(crate) async fn next_reply(&mut self) -> Result<std::result::Result<Reply, String>> {
        self.read_reply().await
    }

    /// Connects over TCP and logs in as `user` (no `AUTH` for an empty password).
    pub(crate) async fn connect(
        host: &str,
        port: u16,
        user: &str,
        password: &Secret,
    ) -> Result<Conn> {
        let peer = format!("Redis at {host}:{port}");
        let what = format!("connect to {peer}");
        let s = bounded(&what, async {
            tokio::net::TcpStream::connect((host, port))
                .await
                .map_err(|e| datastore(format!("{what}: {e}")))
        })
        .await?;
        let _ = s.set_nodelay(true);
        Self::login(Box::new(s), peer, user, password).await
    }

    /// Connects as the administrator of `admin` (its Unix socket when set).
    pub(crate) async fn admin(admin: &AdminConnection) -> Result<Conn> {
        match &admin.socket {
            Some(path) => {
                let peer = format!("Redis at {}", path.display());
                let what = format!("connect to {peer}");
                let s = bounded(&what, async {
                    tokio::net::UnixStream::connect(path)
                        .await
                        .map_err(|e| datastore(format!("{what}: {e}")))
                })
                .await?;
                Self::login(Box::new(s), peer, &admin.user, &admin.password).await
            }
            None => Self::connect(&admin.host, admin.port, &admin.user, &admin.password).await,
        }
    }

    async fn login(io: Box<dyn Io>, peer: String, user: &str, password: &Secret) -> Result<Conn> {
        let mut c = Conn {
            io: BufStream::new(io),
            peer,
        };
        if !password.is_empty() {
            c.call(&commands::auth(user, password)?).await?;
        }
        Ok(c)
    }

    /// Sends `cmd` and reads its reply; a server error becomes [`Error::Datastore`] naming the
    /// command (and the server's message, unless the command carries a secret).
    pub(crate) async fn call(&mut self, cmd: &Cmd) -> Result<Reply> {
        let what = format!("{} on {}", cmd.name(), self.peer);
        bounded(&what, async {
            self.send(cmd).await?;
            match self.read_reply().await? {
                Ok(r) => Ok(r),
                Err(e) if cmd.is_secret() => {
                    let code = e.split(' ').next().unwrap_or("ERR").to_owned();
                    Err(datastore(format!("{what} failed ({code})")))
                }
                Err(e) => Err(datastore(format!("{what} failed: {e}"))),
            }
        })
        .await
    }

    /// Sends `cmd` without reading a reply (`PSYNC`, whose reply is read by line).
    pub(crate) async fn send(&mut self, cmd: &Cmd) -> Result<()> {
        let io = &mut self.io;
        let mut buf = format!("*{}\r\n", cmd.args().len()).into_bytes();
        for a in cmd.args() {
            buf.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            buf.extend_from_slice(a);
            buf.extend_from_slice(b"\r\n");
        }
        let r = async {
            io.write_all(&buf).await?;
            io.flush().await
        }
        .await;
        r.map_err(|e| datastore(format!("send {} to {}: {e}", cmd.name(), self.peer)))
    }

    /// One line without its CRLF.
    pub(crate) async fn read_line(&mut self) -> Result<String> {
        let mut line = Vec::new();
        let n = (&mut self.io)
            .take(MAX_REPLY as u64)
            .read_until(b'\n', &mut line)
            .await
            .map_err(|e| datastore(format!("read from {}: {e}", self.peer)))?;
        if n == 0 || !line.ends_with(b"\n") {
            return Err(datastore(format!("{} closed the connection", self.peer)));
        }
        while matches!(line.last(), Some(b'\n' | b'\r')) {
            line.pop();
        }
        Ok(String::from_utf8_lossy(&line).into_owned())
    }

    /// The rest of the stream, for a bulk payload read by the caller.
    pub(crate) fn reader(&mut self) -> &mut (dyn AsyncRead + Send + Unpin) {
        &mut self.io
    }

    fn read_reply(&mut self) -> ReplyFuture<'_> {
        self.read_reply_at(0)
    }

    fn read_reply_at(&mut self, depth: usize) -> ReplyFuture<'_> {
        Box::pin(async move {
            let line = self.read_line().await?;
            // A first character of more than one byte is no reply type (and no place to split).
            let (kind, rest) = line.split_at_checked(line.len().min(1)).unwrap_or(("", ""));
            let bad = || datastore(format!("malformed reply from {}", self.peer));
            let len = || rest.parse::<i64>().map_err(|_| bad());
            Ok(Ok(match kind {
                "+" => Reply::Status(rest.to_owned()),
                "-" => return Ok(Err(rest.to_owned())),
                ":" => Reply::Int(len()?),
                "$" => match usize::try_from(len()?) {
                    Err(_) => Reply::Bulk(None),
                    Ok(n) if n > MAX_REPLY => return Err(bad()),
                    Ok(n) => {
                        let mut b = vec![0; n + 2];
                        self.io
                            .read_exact(&mut b)
                            .await
                            .map_err(|e| datastore(format!("read from {}: {e}", self.peer)))?;
                        b.truncate(n);
                        Reply::Bulk(Some(b))
                    }
                },
                "*" => match usize::try_from(len()?) {
                    Err(_) => Reply::Array(None),
                    Ok(n) if n > MAX_REPLY || depth >= MAX_DEPTH => return Err(bad()),
                    Ok(n) => {
                        let mut v = Vec::with_capacity(n.min(1024));
                        for _ in 0..n {
                            match self.read_reply_at(depth + 1).await? {
                                Ok(r) => v.push(r),
                                Err(e) => return Ok(Err(e)),
                            }
                        }
                        Reply::Array(Some(v))
                    }
                },
                _ => return Err(bad()),
            }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(bytes: &[u8]) -> Conn {
        let io = tokio::io::join(std::io::Cursor::new(bytes.to_vec()), tokio::io::sink());
        Conn {
            io: BufStream::new(Box::new(io)),
            peer: "test".into(),
        }
    }

    #[tokio::test]
    async fn a_reply_starting_with_a_multibyte_character_is_malformed_not_a_panic() {
        assert!(conn("é1\r\n".as_bytes()).read_reply().await.is_err());
        assert!(conn(b"\xff\xfe\r\n").read_reply().await.is_err());
        assert_eq!(
            conn(b":7\r\n").read_reply().await.unwrap().unwrap(),
            Reply::Int(7)
        );
    }

    #[tokio::test]
    async fn deeply_nested_replies_are_refused_not_a_stack_overflow() {
        let mut deep = b"*1\r\n".repeat(100_000);
        deep.extend_from_slice(b":1\r\n");
        assert!(conn(&deep).read_reply().await.is_err());

        let mut nested = b"*1\r\n".repeat(3);
        nested.extend_from_slice(b":1\r\n");
        let one = |r| Reply::Array(Some(vec![r]));
        assert_eq!(
            conn(&nested).read_reply().await.unwrap().unwrap(),
            one(one(one(Reply::Int(1))))
        );
    }
}
