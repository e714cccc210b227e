//! Restoring a snapshot into a directory: the extraction and `--prepare` steps the core
//! lifecycle runs for attach and staging alike.
//!
//! The snapshot streams from the store into `mbstream`/`xbstream -x`; the store verifies size
//! and SHA-256 as the bytes pass and fails the last read on a mismatch, before end of stream is
//! reported, so a damaged snapshot never reaches `--prepare`.

use std::path::Path;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use trove_guest_core::error::IoResultExt;
use trove_guest_core::{Error, Phase, Progress, Result, SnapshotDocument};

use crate::commands::{extract_command, prepare_command};
use crate::flavor::{Flavor, FlavorKind};
use crate::strategy::MysqlStrategy;
use crate::xbstream::{BINLOG_INFO_FILES, BinlogInfo};

impl MysqlStrategy {
    /// Streams the snapshot bytes of `reader` (the snapshot at `href`, `total` bytes when
    /// known) into `mbstream`/`xbstream -x` in `dir` (existing and empty); returns the number
    /// of bytes read, all of them verified by the reader.
    ///
    /// A verification failure kills the extractor and becomes [`Error::Integrity`]; when the
    /// extractor stops reading early (a damaged chunk), the rest of the snapshot is still read
    /// through the verifier, so an integrity failure wins over the extractor's complaint.
    pub(crate) async fn extract_stream(
        &self,
        href: &str,
        reader: &mut (dyn AsyncRead + Send + Unpin),
        total: Option<u64>,
        dir: &Path,
        flavor: Flavor,
        progress: &Progress,
    ) -> Result<u64> {
        let parallel = Some(self.opts.extract_parallel.max(1));
        let mut tool = extract_command(&self.stream_tool(flavor), dir, parallel).spawn()?;
        let mut stdin = tool.take_stdin().expect("stdin is piped");
        let mut buf = vec![0u8; trove_guest_core::store::CHUNK_SIZE];
        let mut done = 0u64;
        let read_error = |e| Error::from_read(format!("read snapshot {href}"), e);
        loop {
            // A verification failure surfaces here, before EOF is reported: the tool is
            // killed (dropped) and nothing is prepared.
            let n = reader.read(&mut buf).await.map_err(read_error)?;
            if n == 0 {
                break;
            }
            if let Err(e) = stdin.write_all(&buf[..n]).await {
                drop(stdin);
                // The extractor stopped reading (mbstream checks chunk CRCs and quits on a
                // damaged one). Read the rest through the verifier first: a snapshot that
                // fails verification is an integrity error, whatever the extractor said.
                while reader.read(&mut buf).await.map_err(read_error)? > 0 {}
                tool.wait().await?;
                return Err(Error::io(format!("feed {}", flavor.stream_tool()), e));
            }
            done += n as u64;
            progress.bytes(Phase::Restore, done, total);
        }
        stdin
            .shutdown()
            .await
            .map_err(|e| Error::io(format!("close {} input", flavor.stream_tool()), e))?;
        drop(stdin);
        tool.wait().await?;
        Ok(done)
    }

    /// `--prepare`s an extracted snapshot in `dir`.
    pub(crate) async fn prepare_restored(
        &self,
        dir: &Path,
        flavor: Flavor,
        progress: &Progress,
    ) -> Result<()> {
        progress.phase(Phase::Apply, format!("{} --prepare", flavor.backup_tool()));
        prepare_command(
            &self.backup_tool(flavor),
            dir,
            self.opts.prepare_memory.as_deref(),
        )
        .run()
        .await
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
