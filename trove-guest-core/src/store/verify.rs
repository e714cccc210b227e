use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, ReadBuf};

use crate::error::Error;

/// The error carried inside an `io::Error` (kind `InvalidData`) when a verified read finds a
/// size or hash mismatch. [`Error::from_read`](crate::Error::from_read) turns it back into
/// [`Error::Integrity`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntegrityFailure {
    /// The snapshot.
    pub href: String,
    /// What did not match.
    pub reason: String,
}

impl fmt::Display for IntegrityFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "integrity check failed for {}: {}",
            self.href, self.reason
        )
    }
}

impl std::error::Error for IntegrityFailure {}

impl From<IntegrityFailure> for Error {
    fn from(f: IntegrityFailure) -> Self {
        Error::integrity(f.href, f.reason)
    }
}

/// The read error a verifying reader fails with: kind `InvalidData`, carrying the failure.
impl From<IntegrityFailure> for std::io::Error {
    fn from(f: IntegrityFailure) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidData, f)
    }
}

/// Wraps a reader and hashes everything read through it.
#[derive(Debug)]
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R> HashingReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// Bytes read so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Hex SHA-256 of the bytes read so far, and their count.
    pub fn finish(self) -> (u64, String) {
        (self.count, hex::encode(self.hasher.finalize()))
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for HashingReader<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &r {
            let new = &buf.filled()[before..];
            this.hasher.update(new);
            this.count += new.len() as u64;
        }
        r
    }
}

/// A reader that checks the stream against an expected size and SHA-256. It fails with an
/// `InvalidData` error carrying [`IntegrityFailure`] as soon as more bytes than expected arrive,
/// and at end of stream when the size or hash differs; it never reports a clean EOF for bad data.
///
/// The check happens only when the stream is read to its end: a consumer that stops early (a
/// `tar` that stops at its end-of-archive marker, say) must drain the rest, or check
/// [`VerifyingReader::verified`], before it trusts the data.
pub struct VerifyingReader<R> {
    inner: HashingReader<R>,
    href: String,
    size: u64,
    sha256: String,
    verified: bool,
}

impl<R> fmt::Debug for VerifyingReader<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingReader")
            .field("href", &self.href)
            .field("size", &self.size)
            .finish()
    }
}

impl<R> VerifyingReader<R> {
    /// Wraps `inner`, expecting exactly `size` bytes hashing to `sha256` (hex).
    pub fn new(inner: R, href: impl Into<String>, size: u64, sha256: impl Into<String>) -> Self {
        VerifyingReader {
            inner: HashingReader::new(inner),
            href: href.into(),
            size,
            sha256: sha256.into().to_ascii_lowercase(),
            verified: false,
        }
    }

    /// The expected size.
    pub fn expected_size(&self) -> u64 {
        self.size
    }

    /// Bytes read so far.
    pub fn count(&self) -> u64 {
        self.inner.count()
    }

    /// Whether the whole stream was read and matched.
    pub fn verified(&self) -> bool {
        self.verified
    }

    fn fail(&self, reason: String) -> std::io::Error {
        IntegrityFailure {
            href: self.href.clone(),
            reason,
        }
        .into()
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for VerifyingReader<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let n = buf.filled().len() - before;
                let count = self.inner.count();
                if count > self.size {
                    return Poll::Ready(Err(
                        self.fail(format!("more than the expected {} bytes", self.size))
                    ));
                }
                if n == 0 && buf.remaining() > 0 {
                    // End of stream.
                    if count != self.size {
                        return Poll::Ready(Err(
                            self.fail(format!("truncated: {count} of {} bytes", self.size))
                        ));
                    }
                    let hasher = self.inner.hasher.clone();
                    let got = hex::encode(hasher.finalize());
                    if got != self.sha256 {
                        return Poll::Ready(Err(self.fail(format!(
                            "SHA-256 {got} differs from the expected {}",
                            self.sha256
                        ))));
                    }
                    self.verified = true;
                }
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}
