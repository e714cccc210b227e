//! Restoring a snapshot into a directory: the extraction and `--prepare` steps the core
//! lifecycle runs for attach and staging alike.
//!
//! The snapshot streams from the store through the core member check
//! ([`trove_guest_core::archive`]) into `mbstream`/`xbstream -x`, run as the database's OS
//! account; the store verifies size and SHA-256 as the bytes pass and fails the last read on a
//! mismatch, before end of stream is reported, so a damaged snapshot never reaches `--prepare`.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

use tokio::io::AsyncRead;
use trove_guest_core::archive::{self, ArchiveFormat, Inspector, extraction_user, own_tree};
use trove_guest_core::error::IoResultExt;
use trove_guest_core::{Error, OsUser, Phase, Progress, Result, SnapshotDocument};

use crate::commands::{extract_command, prepare_command, prepare_option_file};
use crate::flavor::{Flavor, FlavorKind};
use crate::strategy::MysqlStrategy;
use crate::xbstream::{BINLOG_INFO_FILES, BinlogInfo};

impl MysqlStrategy {
    /// Streams the snapshot bytes of `reader` (the snapshot at `href`, `total` bytes when
    /// known) into `mbstream`/`xbstream -x` in `dir` (existing and empty); returns the number
    /// of bytes read, all of them verified by the reader.
    ///
    /// The snapshot is untrusted: its members are checked as they stream, before the extractor
    /// sees them ([`archive::pump`]), and extraction runs as the database's OS account
    /// ([`extraction_user`]), in a 0700 `dir` owned by it. A verification failure or a refused
    /// member kills the extractor and becomes [`Error::Integrity`]; when the extractor stops
    /// reading early (a damaged chunk), the rest of the snapshot is still read through the
    /// verifier, so an integrity failure wins over the extractor's complaint.
    pub(crate) async fn extract_stream(
        &self,
        href: &str,
        reader: &mut (dyn AsyncRead + Send + Unpin),
        total: Option<u64>,
        dir: &Path,
        flavor: Flavor,
        progress: &Progress,
    ) -> Result<u64> {
        progress.phase(Phase::Restore, format!("extracting {href}"));
        let owner = extraction_user(self.handle.os_user);
        if owner.is_none() && OsUser::current().uid == 0 {
            tracing::warn!(
                "no OS user is configured for the datastore: the snapshot is extracted and \
                 prepared as root"
            );
        }
        prepare_extraction_dir(dir, owner)?;
        let parallel = Some(self.opts.extract_parallel.max(1));
        let tool = self
            .handle
            .tool(extract_command(&self.stream_tool(flavor), dir, parallel).run_as(owner))?
            .spawn()?;
        let mut inspector = Inspector::new(ArchiveFormat::Xbstream, href);
        archive::pump(href, reader, total, tool, &mut inspector, progress).await
    }

    /// `--prepare`s an extracted snapshot in `dir`: its `backup-my.cnf` is first replaced by
    /// the keys `--prepare` needs ([`prepare_option_file`]); the tool runs as the database's OS
    /// account, and the prepared tree is given to that account.
    pub(crate) async fn prepare_restored(
        &self,
        href: &str,
        dir: &Path,
        flavor: Flavor,
        progress: &Progress,
    ) -> Result<()> {
        let owner = extraction_user(self.handle.os_user);
        write_prepare_options(href, dir, owner)?;
        progress.phase(Phase::Apply, format!("{} --prepare", flavor.backup_tool()));
        self.handle
            .tool(
                prepare_command(
                    &self.backup_tool(flavor),
                    dir,
                    self.opts.prepare_memory.as_deref(),
                )
                .run_as(owner)
                .timeout(self.opts.prepare_timeout),
            )?
            .run()
            .await?;
        if let Some(owner) = owner {
            let tree = dir.to_path_buf();
            tokio::task::spawn_blocking(move || own_tree(&tree, owner))
                .await
                .map_err(|e| Error::io("give the restored tree to its owner", e.into()))??;
        }
        Ok(())
    }
}

/// Makes the (existing, empty) extraction directory `dir` private (0700) and gives it to
/// `owner`, the account the tools run as.
fn prepare_extraction_dir(dir: &Path, owner: Option<OsUser>) -> Result<()> {
    let meta = std::fs::symlink_metadata(dir).context(|| format!("stat {}", dir.display()))?;
    if !meta.is_dir() {
        return Err(Error::invalid(
            "staging directory",
            format!("{} is not a directory", dir.display()),
        ));
    }
    if std::fs::read_dir(dir)
        .context(|| format!("read {}", dir.display()))?
        .next()
        .is_some()
    {
        return Err(Error::invalid(
            "staging directory",
            format!("{} is not empty", dir.display()),
        ));
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .context(|| format!("chmod {}", dir.display()))?;
    if let Some(owner) = owner {
        owner.chown(dir)?;
    }
    Ok(())
}

/// Replaces the extracted `backup-my.cnf` in `dir` by [`prepare_option_file`]'s version of it
/// (0600, owned by `owner`), never writing through whatever is at that name.
fn write_prepare_options(href: &str, dir: &Path, owner: Option<OsUser>) -> Result<()> {
    const MAX: u64 = 64 * 1024;
    let path = dir.join("backup-my.cnf");
    let meta = match std::fs::symlink_metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::integrity(
                href,
                "the snapshot holds no backup-my.cnf",
            ));
        }
        Err(e) => return Err(Error::io(format!("stat {}", path.display()), e)),
    };
    if !meta.is_file() || meta.len() > MAX {
        return Err(Error::integrity(
            href,
            "backup-my.cnf is not a regular file of at most 64 KiB",
        ));
    }
    let text = std::fs::read(&path).context(|| format!("read {}", path.display()))?;
    let text = String::from_utf8(text)
        .map_err(|_| Error::integrity(href, "backup-my.cnf is not UTF-8"))?;
    let sanitized = prepare_option_file(href, &text)?;
    let tmp = dir.join(".tg-backup-my.cnf.new");
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(format!("remove {}", tmp.display()), e)),
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .context(|| format!("create {}", tmp.display()))?;
    f.write_all(sanitized.as_bytes())
        .context(|| format!("write {}", tmp.display()))?;
    drop(f);
    if let Some(owner) = owner {
        owner.chown(&tmp)?;
    }
    std::fs::rename(&tmp, &path)
        .context(|| format!("rename {} to {}", tmp.display(), path.display()))
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
