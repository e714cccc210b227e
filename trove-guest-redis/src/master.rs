//! The master's side: snapshots over `PSYNC`, replication users.

use tokio::io::AsyncReadExt;
use trove_guest_core::lifecycle::{
    JournalEntry, Operation, OwnedChangeGuard, RecoveryAction, WorkLayout,
};
use trove_guest_core::strategy::Role;
use trove_guest_core::wire::{Dataset, ReplicationGrant};
use trove_guest_core::{
    Error, OpaquePosition, Phase, Result, Secret, SnapshotDocument, SnapshotRequest,
    TransportSecret,
};

use crate::commands;
use crate::resp::Conn;
use crate::strategy::{Pos, RedisStrategy, reply_error};

/// Drops the user a snapshot made when the snapshot does not complete (also when its future
/// is dropped), holding the change lock until it is gone.
struct MadeUser<'a> {
    strategy: &'a RedisStrategy,
    user: Option<String>,
    guard: Option<OwnedChangeGuard>,
}

impl Drop for MadeUser<'_> {
    fn drop(&mut self) {
        let (Some(user), Ok(rt)) = (self.user.take(), tokio::runtime::Handle::try_current()) else {
            return;
        };
        let admin = self.strategy.handle.admin.clone();
        let guard = self.guard.take();
        let journal = WorkLayout::new(&self.strategy.handle.work_dir).journal();
        rt.spawn(async move {
            let r = async {
                let mut c = Conn::admin(&admin).await?;
                c.call(&commands::drop_user(&user)?).await?;
                save_acl(&mut c).await
            };
            match r.await {
                Ok(()) => drop(journal.clear()),
                Err(e) => tracing::warn!("dropping {user} after a failed snapshot: {e}"),
            }
            drop(guard);
        });
    }
}

/// `ACL SAVE` when the server keeps users in an ACL file (otherwise they live in memory only).
pub(crate) async fn save_acl(c: &mut Conn) -> Result<()> {
    let file = c.call(&commands::config_get("aclfile")).await?.texts();
    if file.get(1).is_some_and(|f| !f.is_empty()) {
        c.call(&commands::acl_save()).await?;
    }
    Ok(())
}

impl RedisStrategy {
    pub(crate) async fn snapshot_locked(
        &self,
        req: &SnapshotRequest,
        guard: OwnedChangeGuard,
    ) -> Result<SnapshotDocument> {
        let progress = &req.progress;
        let replica_id = req
            .replica_id
            .clone()
            .unwrap_or_else(|| format!("s{}", std::process::id()));
        let user = commands::replication_user(&replica_id)?;
        let name = match &req.snapshot_name {
            Some(n) => n.clone(),
            None => format!("redis-{}-{}", user.replace('_', "-"), unix_millis()),
        };
        let mut c = self.conn().await?;
        let info = self.info(&mut c, "replication").await?;
        if info.is_replica() {
            return Err(Error::WrongRole {
                expected: Role::Master,
                actual: Role::Replica,
            });
        }
        let version = self
            .info(&mut c, "server")
            .await?
            .get("redis_version")
            .to_owned();
        progress.phase(Phase::Prepare, format!("replication user {user}"));
        let existed = c.call(&commands::users()).await?.texts().contains(&user);
        let password = Secret::random(32);
        let journal = WorkLayout::new(&self.handle.work_dir).journal();
        let mut made = MadeUser {
            strategy: self,
            user: None,
            guard: Some(guard),
        };
        if !existed {
            journal.write(
                &JournalEntry::new(Operation::Snapshot)
                    .with_detail(serde_json::json!({ "user": user })),
            )?;
            made.user = Some(user.clone());
        }
        c.call(&commands::create_replication_user(
            &user, &password, !existed,
        )?)
        .await?;
        save_acl(&mut c).await?;

        progress.phase(Phase::Backup, "RDB from the master over PSYNC");
        let mut login = self.handle.admin.clone();
        login.user = user.clone();
        login.password = password.clone();
        let mut sync = Conn::admin(&login).await?;
        let bound = self.opts.snapshot_timeout;
        let (pos, stored) =
            match tokio::time::timeout(bound, self.stream_rdb(&mut sync, &name, progress)).await {
                Ok(r) => r?,
                Err(_) => return Err(Error::timeout("the master's RDB", bound)),
            };
        drop(sync);
        made.user = None;
        drop(made);
        journal.clear()?;
        progress.phase(Phase::Done, format!("snapshot at {}", pos.text()));
        let minor: Vec<&str> = version.split('.').take(2).collect();
        Ok(SnapshotDocument {
            master: self.handle.advertise.clone(),
            dataset: Dataset {
                datastore: self.kind,
                datastore_version: format!("redis-{}", minor.join(".")),
                dataset_size: SnapshotDocument::gib_rounded_up(stored.size),
                snapshot_href: stored.href,
                size_bytes: Some(stored.size),
                sha256: Some(stored.sha256),
                server_version: Some(version),
                format: Some("rdb".into()),
                compression: None,
            },
            binlog_position: None,
            wal_position: None,
            position: Some(OpaquePosition::new(self.kind, pos.text())?),
            replication: Some(ReplicationGrant {
                user,
                password: Some(TransportSecret(password)),
                password_ref: None,
                slot_name: None,
                replica_host: req.replica_host.clone(),
                tls: None,
            }),
            extra: serde_json::Map::new(),
        })
    }

    /// `PSYNC ? -1`, then the RDB payload into the store (committed only when it is complete).
    async fn stream_rdb(
        &self,
        sync: &mut Conn,
        name: &str,
        progress: &trove_guest_core::Progress,
    ) -> Result<(Pos, trove_guest_core::store::StoredSnapshot)> {
        sync.call(&commands::replconf_capa()).await?;
        sync.send(&commands::psync_full()).await?;
        let mut line = String::new();
        // The master sends newlines while its BGSAVE runs.
        while line.is_empty() {
            line = sync.read_line().await?;
        }
        let mut w = line.split(' ');
        let pos = match (w.next(), w.next(), w.next()) {
            (Some("+FULLRESYNC"), Some(id), Some(off)) => Pos::parse(&format!("{id}:{off}"))?,
            _ => return Err(reply_error("PSYNC", format!("unexpected reply {line:?}"))),
        };
        line.clear();
        while line.is_empty() {
            line = sync.read_line().await?;
        }
        let len: u64 = line
            .strip_prefix('$')
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| reply_error("PSYNC", format!("expected an RDB length, got {line:?}")))?;
        let mut rdb = sync.reader().take(len);
        let pending = self.store.put(name, &mut rdb, progress).await?;
        if pending.snapshot().size != len {
            return Err(reply_error(
                "PSYNC",
                "the master closed the connection inside the RDB",
            ));
        }
        Ok((pos, pending.commit().await?))
    }

    /// Drops `users` (disconnecting their replicas) and saves the ACL file.
    pub(crate) async fn drop_users(&self, users: &[String]) -> Result<()> {
        let mut c = self.conn().await?;
        for u in users {
            c.call(&commands::drop_user(u)?).await?;
        }
        save_acl(&mut c).await
    }

    /// Recovery: the user of a snapshot that never completed.
    pub(crate) async fn abandon_made(
        &self,
        detail: &serde_json::Value,
    ) -> Result<Vec<RecoveryAction>> {
        let Some(user) = detail.get("user").and_then(|u| u.as_str()) else {
            return Ok(Vec::new());
        };
        self.drop_users(&[user.to_owned()]).await?;
        Ok(vec![RecoveryAction::Dropped {
            what: "replication user".into(),
            name: user.to_owned(),
        }])
    }
}

fn unix_millis() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}
