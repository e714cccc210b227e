//! Snapshots read from a store are untrusted input: the member check and the one extraction
//! pump every backend restores through.
//!
//! A snapshot's size and SHA-256 only prove that it is the snapshot the document names, not
//! that whoever wrote it meant well: a doctored snapshot with a correct manifest can hold
//! members named `../x` or `/etc/x`, symbolic links out of the extraction directory, or devices.
//! [`Inspector`] parses the archive's member headers as the bytes stream (any chunk
//! boundaries) and refuses such members with [`Error::Integrity`] naming the snapshot and the
//! member. [`pump`] feeds each chunk to the inspector **before** writing it to the extractor's
//! stdin, so no byte of a refused member (nor anything after it) reaches the extractor.
//!
//! Extractors run as the database's OS account ([`extraction_user`]), and [`own_tree`] gives a
//! restored tree to that account afterwards.

mod member;
mod owner;
mod pump;
pub mod tar;
pub mod xbstream;

pub use member::Rejection;
pub use owner::{extraction_user, own_tree};
pub use pump::pump;

use crate::error::{Error, Result};

/// The archive format of a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ArchiveFormat {
    /// POSIX / GNU tar (PostgreSQL `pg_basebackup --format=tar`).
    Tar,
    /// xbstream (`mariabackup` / `xtrabackup --stream=xbstream`).
    Xbstream,
}

#[derive(Debug)]
enum Kind {
    Tar(tar::TarInspector),
    Xbstream(xbstream::XbstreamInspector),
}

/// Checks the members of a snapshot archive as its bytes stream past.
///
/// Feed it every byte of the snapshot in order with [`Inspector::feed`], in pieces of any size,
/// and call [`Inspector::finish`] at the end of the stream. Once it refused something, every
/// later call fails with the same error.
#[derive(Debug)]
pub struct Inspector {
    href: String,
    kind: Kind,
}

impl Inspector {
    /// An inspector for the snapshot at `href` (named in its errors), in `format`.
    pub fn new(format: ArchiveFormat, href: impl Into<String>) -> Self {
        Inspector {
            href: href.into(),
            kind: match format {
                ArchiveFormat::Tar => Kind::Tar(tar::TarInspector::default()),
                ArchiveFormat::Xbstream => Kind::Xbstream(xbstream::XbstreamInspector::default()),
            },
        }
    }

    /// Checks the next bytes of the snapshot.
    ///
    /// # Errors
    ///
    /// [`Error::Integrity`] naming the snapshot and the member when a member must not be
    /// extracted, or when the archive cannot be parsed.
    pub fn feed(&mut self, data: &[u8]) -> Result<()> {
        match &mut self.kind {
            Kind::Tar(t) => t.feed(data),
            Kind::Xbstream(x) => x.feed(data),
        }
        .map_err(|r| self.error(r))
    }

    /// Checks that the snapshot ended where an archive may end.
    ///
    /// # Errors
    ///
    /// [`Error::Integrity`] when it ended inside a header or a member, or something was
    /// refused before.
    pub fn finish(&self) -> Result<()> {
        match &self.kind {
            Kind::Tar(t) => t.finish(),
            Kind::Xbstream(x) => x.finish(),
        }
        .map_err(|r| self.error(r))
    }

    /// How many members (tar) or distinct files (xbstream) were checked so far.
    pub fn members(&self) -> u64 {
        match &self.kind {
            Kind::Tar(t) => t.members(),
            Kind::Xbstream(x) => x.members(),
        }
    }

    fn error(&self, r: Rejection) -> Error {
        Error::integrity(self.href.clone(), format!("unsafe snapshot content: {r}"))
    }
}

#[cfg(test)]
mod tests;
