//! Restoring a snapshot into a directory: the one read loop shared by attach and staging.
//!
//! The snapshot streams from the store into `mbstream`/`xbstream -x`; the store verifies size
//! and SHA-256 as the bytes pass and fails the last read on a mismatch, before end of stream is
//! reported, so a damaged snapshot never reaches `--prepare`. Attach reads a complete snapshot
//! ([`SnapshotStore::get`](trove_guest_core::SnapshotStore::get)); staging follows one that may
//! still be uploading ([`SnapshotStore::follow`](trove_guest_core::SnapshotStore::follow)), whose
//! clean end is reported only after the upload committed and matched its manifest.

use std::path::Path;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use trove_guest_core::error::IoResultExt;
use trove_guest_core::store::{Expected, FollowOptions, SnapshotRead, VerifyingReader};
use trove_guest_core::{Error, Phase, Progress, Result, SnapshotDocument};

use crate::commands::{extract_command, prepare_command};
use crate::flavor::{Flavor, FlavorKind};
use crate::strategy::MysqlStrategy;
use crate::xbstream::{BINLOG_INFO_FILES, BinlogInfo};

/// How the snapshot is read.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ReadFrom<'a> {
    /// A complete snapshot, verified against its manifest and `Expected` (attach).
    Complete(&'a Expected),
    /// A snapshot that may still be uploading, followed until it is committed and verified
    /// (staging).
    Follow(&'a Expected, &'a FollowOptions),
}

/// An open snapshot stream and how its verification is known.
enum Source {
    Verifying(VerifyingReader<SnapshotRead>),
    /// A followed stream reports a clean end only once verified.
    Following(SnapshotRead),
}

impl Source {
    fn reader(&mut self) -> &mut (dyn AsyncRead + Send + Unpin) {
        match self {
            Source::Verifying(r) => r,
            Source::Following(r) => r,
        }
    }

    fn total(&self) -> Option<u64> {
        match self {
            Source::Verifying(r) => Some(r.expected_size()),
            Source::Following(_) => None,
        }
    }

    fn verified(&self) -> bool {
        match self {
            Source::Verifying(r) => r.verified(),
            Source::Following(_) => true,
        }
    }
}

impl MysqlStrategy {
    /// Extracts the snapshot at `href` into `dir` (existing and empty) and prepares it there.
    /// Returns the number of bytes read, all of them verified.
    ///
    /// A verification failure kills the extractor and becomes [`Error::Integrity`]; when the
    /// extractor stops reading early (a damaged chunk), the rest of the snapshot is still read
    /// through the verifier, so an integrity failure wins over the extractor's complaint.
    pub(crate) async fn extract_and_prepare(
        &self,
        href: &str,
        from: ReadFrom<'_>,
        dir: &Path,
        flavor: Flavor,
        progress: &Progress,
    ) -> Result<u64> {
        progress.phase(Phase::Restore, format!("extracting {href}"));
        let mut source = match from {
            ReadFrom::Complete(expected) => {
                Source::Verifying(self.store.get(href, expected).await?)
            }
            ReadFrom::Follow(expected, opts) => {
                Source::Following(self.store.follow(href, expected, opts).await?)
            }
        };
        let total = source.total();
        let parallel = Some(self.opts.extract_parallel.max(1));
        let mut tool = extract_command(&self.stream_tool(flavor), dir, parallel).spawn()?;
        let mut stdin = tool.take_stdin().expect("stdin is piped");
        let mut buf = vec![0u8; trove_guest_core::store::CHUNK_SIZE];
        let mut done = 0u64;
        let read_error = |e| Error::from_read(format!("read snapshot {href}"), e);
        loop {
            // A verification failure surfaces here, before EOF is reported: the tool is
            // killed (dropped) and nothing is prepared.
            let n = source.reader().read(&mut buf).await.map_err(read_error)?;
            if n == 0 {
                break;
            }
            if let Err(e) = stdin.write_all(&buf[..n]).await {
                drop(stdin);
                // The extractor stopped reading (mbstream checks chunk CRCs and quits on a
                // damaged one). Read the rest through the verifier first: a snapshot that
                // fails verification is an integrity error, whatever the extractor said.
                while source.reader().read(&mut buf).await.map_err(read_error)? > 0 {}
                tool.wait().await?;
                return Err(Error::io(format!("feed {}", flavor.stream_tool()), e));
            }
            done += n as u64;
            progress.bytes(Phase::Restore, done, total);
        }
        if !source.verified() {
            return Err(Error::integrity(href, "stream ended without verification"));
        }
        stdin
            .shutdown()
            .await
            .map_err(|e| Error::io(format!("close {} input", flavor.stream_tool()), e))?;
        drop(stdin);
        tool.wait().await?;

        progress.phase(Phase::Apply, format!("{} --prepare", flavor.backup_tool()));
        prepare_command(
            &self.backup_tool(flavor),
            dir,
            self.opts.prepare_memory.as_deref(),
        )
        .timeout(self.opts.prepare_timeout)
        .run()
        .await?;
        Ok(done)
    }
}

/// Checks the binlog info file of a restored (extracted, possibly prepared: `--prepare` keeps
/// the file as it is) snapshot in `dir` against the document: a replica seeded with another
/// position would skip transactions or apply some twice.
///
/// # Errors
///
/// [`Error::Integrity`] when the file is missing, unreadable or names another position.
pub(crate) fn check_binlog_info(dir: &Path, doc: &SnapshotDocument, flavor: Flavor) -> Result<()> {
    let href = &doc.dataset.snapshot_href;
    let bp = doc
        .binlog_position
        .as_ref()
        .ok_or_else(|| Error::invalid("snapshot document", "binlog_position is missing"))?;
    let info_path = BINLOG_INFO_FILES
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.exists())
        .ok_or_else(|| Error::integrity(href.clone(), "the snapshot holds no binlog info file"))?;
    let text =
        std::fs::read_to_string(&info_path).context(|| format!("read {}", info_path.display()))?;
    let info = BinlogInfo::parse(&text)
        .map_err(|e| Error::integrity(href.clone(), format!("binlog info: {e}")))?;
    if info.log_file != bp.log_file || info.log_position != bp.log_position {
        return Err(Error::integrity(
            href.clone(),
            format!(
                "the snapshot was taken at {}:{}, the document says {}:{}",
                info.log_file, info.log_position, bp.log_file, bp.log_position
            ),
        ));
    }

    // So must its GTID position: a replica seeded with a later one would silently skip
    // the transactions in between (an earlier one would apply some twice).
    let gtid_mismatch = match (&bp.gtid_list, &bp.gtid_set) {
        (Some(doc_gtid), _) if flavor.kind == FlavorKind::MariaDb => {
            let taken = info
                .mariadb_gtid()
                .map_err(|e| Error::integrity(href.clone(), format!("binlog info GTID: {e}")))?;
            (!(taken.contains(doc_gtid) && doc_gtid.contains(&taken)))
                .then(|| (taken.to_string(), doc_gtid.to_string()))
        }
        (_, Some(doc_gtid)) if flavor.kind == FlavorKind::Mysql => {
            let taken = info
                .mysql_gtid()
                .map_err(|e| Error::integrity(href.clone(), format!("binlog info GTID: {e}")))?;
            (!(taken.contains(doc_gtid) && doc_gtid.contains(&taken)))
                .then(|| (taken.to_string(), doc_gtid.to_string()))
        }
        _ => None,
    };
    if let Some((taken, said)) = gtid_mismatch {
        return Err(Error::integrity(
            href.clone(),
            format!("the snapshot was taken at GTID {taken:?}, the document says {said:?}"),
        ));
    }
    Ok(())
}
