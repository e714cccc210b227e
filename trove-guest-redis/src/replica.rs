//! The replica's side: attach (over core's lifecycle and these hooks), detach.

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use trove_guest_core::error::IoResultExt;
use trove_guest_core::lifecycle::{self, RecoveryAction, RestoreHooks};
use trove_guest_core::poll::Backoff;
use trove_guest_core::strategy::Positioning;
use trove_guest_core::wire::MasterAddress;
use trove_guest_core::{
    AttachOutcome, AttachRequest, DatastoreHandle, DetachedReplica, Error, Phase, Progress,
    ReplicationPosition, Result, Secret, SnapshotDocument, SnapshotStore, ToolCommand, deadline,
};

use crate::commands;
use crate::rdb;
use crate::strategy::{OVERRIDE_FILE, Pos, RedisStrategy};

/// What attach checked: the master, the login, the snapshot's position and RDB file name.
pub struct AttachPlan {
    doc: SnapshotDocument,
    master: MasterAddress,
    user: String,
    password: Secret,
    pos: Pos,
}

/// The RDB file name a restore writes (the server's `dbfilename` must be this).
pub const RDB_FILE: &str = "dump.rdb";

/// `major.minor` of a version string, for ordering.
fn minor(v: &str) -> (u32, u32) {
    let mut p = v.split('.').map(|n| n.parse().unwrap_or(0));
    (p.next().unwrap_or(0), p.next().unwrap_or(0))
}

impl RedisStrategy {
    fn override_path(&self) -> PathBuf {
        self.handle.config_dir.join(OVERRIDE_FILE)
    }

    pub(crate) async fn attach_locked(
        &self,
        doc: &SnapshotDocument,
        req: &AttachRequest,
    ) -> Result<AttachOutcome> {
        if doc.dataset.datastore != self.kind {
            return Err(Error::Incompatible {
                reason: format!(
                    "a {} snapshot cannot be restored into Redis",
                    doc.dataset.datastore
                ),
            });
        }
        if req.positioning == Positioning::BinlogFile {
            return Err(Error::unsupported(
                "binlog file positioning (Redis continues from replication id and offset)",
            ));
        }
        doc.validate()?;
        let pos = Pos::parse(doc.position.as_ref().map_or("", |p| p.value()))?;
        let grant = doc
            .replication
            .as_ref()
            .ok_or_else(|| Error::invalid("snapshot document", "replication is missing"))?;
        let password = grant
            .password
            .as_ref()
            .map(|p| p.0.clone())
            .ok_or_else(|| {
                Error::invalid("snapshot document", "replication.password is missing")
            })?;
        commands::check_user(&grant.user)?;
        commands::check_password(&password)?;
        commands::check_host(&doc.master.host)?;
        let mut c = self.conn().await?;
        let ours = self
            .info(&mut c, "server")
            .await?
            .get("redis_version")
            .to_owned();
        let theirs = doc.dataset.server_version.clone().unwrap_or_default();
        if minor(&theirs) > minor(&ours) {
            return Err(Error::Incompatible {
                reason: format!("an RDB of Redis {theirs} cannot be loaded by Redis {ours}"),
            });
        }
        for (name, want) in [("appendonly", "no"), ("dbfilename", RDB_FILE)] {
            let v = self.config(&mut c, name).await?;
            if v != want {
                return Err(Error::unsupported(format!(
                    "restoring with {name} {v} (needs {want})"
                )));
            }
        }
        drop(c);
        let plan = AttachPlan {
            doc: doc.clone(),
            master: doc.master.clone(),
            user: grant.user.clone(),
            password,
            pos,
        };
        lifecycle::attach(self, &plan, doc, req).await
    }

    pub(crate) async fn detach_locked(&self) -> Result<DetachedReplica> {
        let mut c = self.conn().await?;
        let replicating = self.info(&mut c, "replication").await?.is_replica();
        let path = self.override_path();
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let (master, user) = match commands::parse_replica_override(&text) {
            Some((host, port, user)) => (Some(MasterAddress { host, port }), Some(user)),
            None => (None, None),
        };
        // The file first: a restart after a crash here must not replicate again.
        remove_if_exists(&path)?;
        if replicating {
            c.call(&commands::replicaof_no_one()).await?;
            c.call(&commands::forget_master_login()).await?;
        }
        Ok(DetachedReplica::new(user, None, master, replicating))
    }

    async fn wait_replicating(
        &self,
        plan: &AttachPlan,
        timeout: Duration,
        progress: &Progress,
    ) -> Result<Option<ReplicationPosition>> {
        progress.phase(
            Phase::CatchUp,
            format!("replicating from {}:{}", plan.master.host, plan.master.port),
        );
        let until = deadline(timeout);
        let mut backoff = Backoff::new(Duration::from_millis(200));
        let mut c = self.conn().await?;
        loop {
            let i = self.info(&mut c, "replication").await?;
            if i.is_replica() && i.link_up() && i.reached(&plan.pos) {
                return Ok(Some(self.position(&i.position())?));
            }
            if !backoff.tick(until).await {
                return Err(Error::timeout(
                    format!(
                        "replication from {}:{} (link {})",
                        plan.master.host,
                        plan.master.port,
                        i.get("master_link_status")
                    ),
                    timeout,
                ));
            }
        }
    }
}

fn remove_if_exists(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(Error::io(format!("remove {}", path.display()), e))
        }
        _ => Ok(()),
    }
}

fn integrity(href: &str, reason: impl Into<String>) -> Error {
    Error::integrity(href, reason)
}

/// The RDB header of `file`, read from its first 64 KiB.
fn read_header(href: &str, file: &Path) -> Result<rdb::RdbHeader> {
    let mut head = Vec::new();
    std::fs::File::open(file)
        .and_then(|f| std::io::Read::read_to_end(&mut std::io::Read::take(f, 64 << 10), &mut head))
        .context(|| format!("read {}", file.display()))?;
    rdb::parse_header(&head).ok_or_else(|| integrity(href, "not an RDB file, or its header is cut"))
}

#[async_trait]
impl RestoreHooks for RedisStrategy {
    type Plan = AttachPlan;

    fn handle(&self) -> &DatastoreHandle {
        &self.handle
    }

    fn store(&self) -> &dyn SnapshotStore {
        &*self.store
    }

    async fn extract(
        &self,
        href: &str,
        reader: &mut (dyn AsyncRead + Send + Unpin),
        total: Option<u64>,
        dir: &Path,
        progress: &Progress,
    ) -> Result<u64> {
        let path = dir.join(RDB_FILE);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .context(|| format!("create {}", path.display()))?;
        if let Some(u) = self.tool_user() {
            u.chown(&path)?;
        }
        let mut file = tokio::fs::File::from_std(file);
        let mut buf = vec![0; 1 << 20];
        let mut done = 0u64;
        loop {
            let n = reader
                .read(&mut buf)
                .await
                .map_err(|e| Error::from_read(format!("read snapshot {href}"), e))?;
            if n == 0 {
                break;
            }
            file.write_all(&buf[..n])
                .await
                .context(|| format!("write {}", path.display()))?;
            done += n as u64;
            progress.bytes(Phase::Restore, done, total);
        }
        file.sync_all()
            .await
            .context(|| format!("sync {}", path.display()))?;
        Ok(done)
    }

    /// The header must be an RDB's, and `redis-check-rdb` must accept the whole file (its
    /// checksum included).
    async fn prepare(&self, href: &str, dir: &Path, progress: &Progress) -> Result<()> {
        progress.phase(Phase::Apply, "redis-check-rdb");
        let path = dir.join(RDB_FILE);
        read_header(href, &path)?;
        ToolCommand::new(self.handle.program("redis-check-rdb"))
            .arg(&path)
            .current_dir(dir)
            .run_as(self.tool_user())
            .timeout(self.opts.check_timeout)
            .run()
            .await
            .map_err(|e| match e {
                Error::ToolFailed { stderr_tail, .. } => {
                    integrity(href, format!("redis-check-rdb refused it: {stderr_tail}"))
                }
                e => e,
            })
    }

    /// The RDB records the replication id and offset the document names.
    fn check_restored(&self, plan: &AttachPlan, dir: &Path) -> Result<()> {
        let href = &plan.doc.dataset.snapshot_href;
        let h = read_header(href, &dir.join(RDB_FILE))?;
        let at = format!(
            "{}:{}",
            h.aux.get("repl-id").map_or("", String::as_str),
            h.aux.get("repl-offset").map_or("", String::as_str)
        );
        if at != plan.pos.text() {
            return Err(integrity(
                href,
                format!(
                    "the RDB was taken at {at}, the document says {}",
                    plan.pos.text()
                ),
            ));
        }
        Ok(())
    }

    fn config_files(&self) -> Vec<PathBuf> {
        vec![self.override_path()]
    }

    /// The override file half written by a `configure` that was killed (it holds the password).
    fn transient_files(&self) -> Vec<PathBuf> {
        vec![self.override_path().with_extension("tmp")]
    }

    /// Writes the 0600 override file: `replicaof`, `masteruser`, `masterauth`, read-only.
    async fn configure(&self, plan: &AttachPlan, _previous: &Path, _staged: bool) -> Result<()> {
        let text = commands::replica_override(
            &plan.master.host,
            plan.master.port,
            &plan.user,
            &plan.password,
        )?;
        let path = self.override_path();
        let tmp = path.with_extension("tmp");
        remove_if_exists(&tmp)?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .context(|| format!("create {}", tmp.display()))?;
        std::io::Write::write_all(&mut f, text.as_bytes())
            .context(|| format!("write {}", tmp.display()))?;
        f.sync_all().context(|| format!("sync {}", tmp.display()))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
            .context(|| format!("chmod {}", tmp.display()))?;
        if let Some(u) = self.tool_user() {
            u.chown(&tmp)?;
        }
        std::fs::rename(&tmp, &path).context(|| format!("rename to {}", path.display()))
    }

    async fn start(&self, _plan: &AttachPlan) -> Result<()> {
        self.handle.service.start().await?;
        self.wait_ping().await
    }

    async fn replicate(
        &self,
        plan: &AttachPlan,
        timeout: Duration,
        progress: &Progress,
    ) -> Result<Option<ReplicationPosition>> {
        self.wait_replicating(plan, timeout, progress).await
    }

    async fn wait_serving(&self) -> Result<()> {
        self.wait_ping().await
    }

    async fn abandon_snapshot(&self, detail: &serde_json::Value) -> Result<Vec<RecoveryAction>> {
        self.abandon_made(detail).await
    }
}
