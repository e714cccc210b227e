//! Master-side calls: enable, snapshot, grants for standbys, cleanup and demote.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use tokio_postgres::types::ToSql;
use trove_guest_core::error::IoResultExt;
use trove_guest_core::lifecycle::{JournalEntry, Operation, OwnedChangeGuard, WorkLayout};
use trove_guest_core::position::WalPosition;
use trove_guest_core::progress::Phase;
use trove_guest_core::strategy::Role;
use trove_guest_core::wire::{Dataset, ReplicationGrant};
use trove_guest_core::{
    DatastoreKind, DemoteOptions, DetachedReplica, EnableMasterOptions, Error, Lsn, RecoveryAction,
    Result, Secret, SecretFile, SnapshotDocument, SnapshotRequest, TransportSecret,
};

use crate::client::Db;
use crate::commands;
use crate::conf::{self, MASTER_FILE};
use crate::flavor::Flavor;
use crate::names::{self, GROUP_ROLE};
use crate::sql;
use crate::strategy::{
    PostgresStrategy, PostgresStrategyOptions, StandbySource, flavor, in_recovery,
    reload_and_settle, server_version, unexpected,
};
use crate::uncommitted::UncommittedSnapshot;

/// What pg_basebackup reported about the WAL range of a backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BackupRange {
    pub(crate) start: Lsn,
    pub(crate) timeline: u32,
    pub(crate) end: Option<Lsn>,
}

/// Parses `pg_basebackup -v` output: `write-ahead log start point: 0/2000028 on timeline 1` and
/// `write-ahead log end point: 0/2000100`.
pub(crate) fn parse_backup_range(stderr: &str) -> Option<BackupRange> {
    let mut start = None;
    let mut end = None;
    for line in stderr.lines() {
        if let Some(rest) = line.split("write-ahead log start point: ").nth(1) {
            let mut f = rest.split_whitespace();
            let lsn: Lsn = f.next()?.parse().ok()?;
            let tli = match (f.next(), f.next(), f.next()) {
                (Some("on"), Some("timeline"), Some(t)) => t.parse().ok()?,
                _ => return None,
            };
            start = Some((lsn, tli));
        } else if let Some(rest) = line.split("write-ahead log end point: ").nth(1) {
            end = rest.split_whitespace().next().and_then(|t| t.parse().ok());
        }
    }
    let (start, timeline) = start?;
    Some(BackupRange {
        start,
        timeline,
        end,
    })
}

/// The master override file's settings, given the values set outside it (`elsewhere`: name to
/// current value): never lowering a value set elsewhere, never turning `logical` into
/// `replica`; WAL kept for `pg_rewind` in the version's own setting.
pub(crate) fn master_settings(
    flavor: Flavor,
    opts: &PostgresStrategyOptions,
    elsewhere: &HashMap<String, String>,
    segment_bytes: u64,
) -> Result<Vec<(&'static str, String)>> {
    let num = |name: &str| -> u32 {
        elsewhere
            .get(name)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let mut out = Vec::new();
    if elsewhere.get("wal_level").map(String::as_str) != Some("logical") {
        out.push(("wal_level", conf::conf_quote("replica")?));
    }
    out.push((
        "max_wal_senders",
        num("max_wal_senders").max(opts.max_wal_senders).to_string(),
    ));
    out.push((
        "max_replication_slots",
        num("max_replication_slots")
            .max(opts.max_replication_slots)
            .to_string(),
    ));
    out.push(("wal_log_hints", "on".to_owned()));
    out.push((
        flavor.wal_keep_setting(),
        flavor.wal_keep_value(opts.wal_keep_size_mb, segment_bytes),
    ));
    if let (Some(setting), Some(size)) = (
        flavor.slot_wal_cap_setting(),
        opts.max_slot_wal_keep_size.as_deref(),
    ) {
        out.push((setting, conf::conf_quote(checked_size(setting, size)?)?));
    }
    Ok(out)
}

/// A size setting's value as PostgreSQL reads it (`-1`, or a number with an optional unit
/// `B`, `kB`, `MB`, `GB`, `TB`); anything else would make the server refuse the override file.
fn checked_size<'a>(setting: &'static str, value: &'a str) -> Result<&'a str> {
    let v = value.trim();
    let digits = v
        .trim_end_matches(|c: char| c.is_ascii_alphabetic())
        .trim_end();
    let unit = v[digits.len()..].trim_start();
    let ok = v == "-1"
        || (!digits.is_empty()
            && digits.bytes().all(|b| b.is_ascii_digit())
            && ["", "B", "kB", "MB", "GB", "TB"].contains(&unit));
    if ok {
        Ok(v)
    } else {
        Err(Error::invalid(
            setting,
            format!("{value:?} is not a size (-1, or a number with B, kB, MB, GB or TB)"),
        ))
    }
}

/// Whether the role `role` exists.
async fn role_exists(db: &Db, action: &'static str, role: &str) -> Result<bool> {
    Ok(db.one(action, sql::ROLE_EXISTS, &[&role]).await?.get(0))
}

/// The first column of every row `query` returns, as text.
async fn texts(
    db: &Db,
    action: &'static str,
    query: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<String>> {
    Ok(db
        .query(action, query, params)
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// Drops a slot (ending the WAL sender using it first), waiting for it to become inactive.
pub(crate) async fn drop_slot(db: &Db, slot: &str) -> Result<()> {
    for _ in 0..200 {
        let exists: bool = db
            .one("look up the replication slot", sql::SLOT_EXISTS, &[&slot])
            .await?
            .get(0);
        if !exists {
            return Ok(());
        }
        db.query(
            "end the slot's WAL sender",
            sql::TERMINATE_SLOT_USER,
            &[&slot],
        )
        .await?;
        db.query("drop the replication slot", sql::DROP_SLOT, &[&slot])
            .await?;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(Error::timeout(
        format!("replication slot {slot} to become inactive"),
        Duration::from_secs(10),
    ))
}

/// Drops a replication login and ends its sessions.
pub(crate) async fn drop_login(db: &Db, role: &str) -> Result<()> {
    db.batch("drop the replication user", &sql::drop_role(role)?)
        .await?;
    db.query(
        "end the replication user's sessions",
        sql::TERMINATE_ROLE_SESSIONS,
        &[&role],
    )
    .await?;
    Ok(())
}

impl PostgresStrategy {
    async fn refuse_standby(&self, db: &Db) -> Result<()> {
        if in_recovery(db).await? {
            return Err(Error::WrongRole {
                expected: Role::Master,
                actual: Role::Replica,
            });
        }
        Ok(())
    }

    /// The override file's settings for this server (see [`master_settings`]).
    async fn master_settings_for(
        &self,
        db: &Db,
        flavor: Flavor,
    ) -> Result<Vec<(&'static str, String)>> {
        let ours = self.config_file(MASTER_FILE);
        let names: Vec<String> = flavor
            .master_settings()
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let rows = db
            .query("read replication settings", sql::SETTINGS, &[&names])
            .await?;
        let mut elsewhere = HashMap::new();
        for r in rows {
            let name: String = r.get(0);
            let value: String = r.get(1);
            let source: String = r.get(3);
            if Path::new(&source).file_name() != ours.file_name() {
                elsewhere.insert(name, value);
            }
        }
        let segment_bytes: i64 = db
            .one("read the WAL segment size", sql::WAL_SEGMENT_BYTES, &[])
            .await?
            .get(0);
        master_settings(
            flavor,
            &self.opts,
            &elsewhere,
            u64::try_from(segment_bytes).unwrap_or(16 << 20),
        )
    }

    pub(crate) async fn hba_path(&self, db: &Db) -> Result<std::path::PathBuf> {
        let p: String = db.one("read hba_file", sql::HBA_FILE, &[]).await?.get(0);
        Ok(p.into())
    }

    /// Writes the hba file if `f` changes it (keeping its owner and mode). Returns the previous
    /// text when it changed.
    async fn edit_hba(
        &self,
        db: &Db,
        f: impl FnOnce(&str) -> Result<String>,
    ) -> Result<Option<String>> {
        let path = self.hba_path(db).await?;
        let text = std::fs::read_to_string(&path).context(|| format!("read {}", path.display()))?;
        let new = f(&text)?;
        if new == text {
            return Ok(None);
        }
        let mode = std::fs::metadata(&path)
            .context(|| format!("stat {}", path.display()))?
            .permissions()
            .mode()
            & 0o777;
        conf::write_atomic(&path, &new, mode, None)?;
        Ok(Some(text))
    }

    /// The hba connection type replication logins may use: TLS only when this server has TLS.
    fn hba_transport(&self) -> conf::HbaTransport {
        match self.handle.tls {
            Some(_) => conf::HbaTransport::Tls,
            None => conf::HbaTransport::Any,
        }
    }

    /// Restricts `login` to `address` in the hba block (`None`: removes its restriction), then
    /// reloads; an hba file PostgreSQL rejects is put back.
    async fn restrict_login(&self, db: &Db, login: &str, address: Option<&str>) -> Result<()> {
        let previous = self
            .edit_hba(db, |t| match address {
                Some(a) => conf::hba_restrict(t, login, a, self.hba_transport()),
                None => Ok(conf::hba_unrestrict(t, login)),
            })
            .await?;
        let Some(previous) = previous else {
            return Ok(());
        };
        db.one("reload configuration", sql::RELOAD, &[]).await?;
        if let Err(e) = self.check_hba(db).await {
            self.edit_hba(db, |_| Ok(previous)).await?;
            db.one("reload configuration", sql::RELOAD, &[]).await?;
            return Err(e);
        }
        Ok(())
    }

    async fn check_hba(&self, db: &Db) -> Result<()> {
        let rows = db.query("check the hba file", sql::HBA_ERRORS, &[]).await?;
        if let Some(r) = rows.first() {
            let line: Option<i32> = r.get(0);
            let err: String = r.get(1);
            return Err(unexpected(
                "check the hba file",
                format!("line {line:?}: {err}"),
            ));
        }
        Ok(())
    }

    pub(crate) async fn enable_master_locked(&self, opts: &EnableMasterOptions) -> Result<()> {
        let db = self.db().await?;
        self.refuse_standby(&db).await?;
        let flavor = flavor(&db).await?;
        let settings = self.master_settings_for(&db, flavor).await?;
        let file = self.config_file(MASTER_FILE);
        conf::write_atomic(
            &file,
            &conf::render_settings("trove-guest: replication master settings", &settings),
            0o644,
            self.file_owner(),
        )?;

        // The group every replication login joins: hba entries and rewind grants name it.
        if !role_exists(&db, "look up the replication group", GROUP_ROLE).await? {
            db.batch(
                "create the replication group",
                &sql::create_group_role(GROUP_ROLE)?,
            )
            .await?;
        }
        for f in sql::REWIND_FUNCTIONS {
            db.batch(
                "grant a rewind function",
                &sql::grant_rewind_function(f, GROUP_ROLE)?,
            )
            .await?;
        }

        // Logins restricted to their replica's host stay so; TLS-only when the master has TLS.
        let networks = &self.opts.replica_networks;
        let transport = self.hba_transport();
        let previous_hba = self
            .edit_hba(&db, |t| {
                let block = conf::hba_block_restricted(
                    GROUP_ROLE,
                    networks,
                    &conf::hba_restrictions(t),
                    transport,
                )?;
                Ok(conf::hba_with_block(t, &block))
            })
            .await?;

        let names: Vec<&str> = settings.iter().map(|(k, _)| *k).collect();
        let pending = reload_and_settle(&db, &names, &file, true).await?;
        if let Err(e) = self.check_hba(&db).await {
            // Never leave an hba file PostgreSQL rejects: put the previous one back.
            if let Some(old) = previous_hba {
                self.edit_hba(&db, |_| Ok(old)).await?;
                db.one("reload configuration", sql::RELOAD, &[]).await?;
            }
            return Err(e);
        }
        trove_guest_core::lifecycle::failpoint("enable_master.begun").await;
        if !pending.is_empty() {
            if !opts.allow_restart {
                return Err(Error::unsupported(format!(
                    "settings {pending:?} need a restart, which the options forbid; they take \
                     effect at the next restart"
                )));
            }
            tracing::info!(?pending, "restarting PostgreSQL for replication settings");
            drop(db);
            self.restart().await?;
        }
        Ok(())
    }

    /// Whether enable_as_master has run (override file and hba block present).
    async fn require_enabled(&self, db: &Db) -> Result<()> {
        self.refuse_standby(db).await?;
        let hba = std::fs::read_to_string(self.hba_path(db).await?).unwrap_or_default();
        if !self.config_file(MASTER_FILE).exists() || !conf::hba_has_block(&hba) {
            return Err(Error::WrongRole {
                expected: Role::Master,
                actual: Role::Standalone,
            });
        }
        Ok(())
    }

    /// Creates the slot of replica `key` (`trove_snap_<key>`) unless it exists.
    async fn ensure_slot(&self, db: &Db, key: &str) -> Result<String> {
        let slot = names::snapshot_slot_name(key);
        let slot_exists: bool = db
            .one("look up the replication slot", sql::SLOT_EXISTS, &[&slot])
            .await?
            .get(0);
        if !slot_exists {
            db.one("create the replication slot", sql::CREATE_SLOT, &[&slot])
                .await?;
        }
        Ok(slot)
    }

    /// Creates the replication login of replica `key`, or gives the existing one a new
    /// password; returns its name and password.
    async fn key_login(&self, db: &Db, key: &str) -> Result<(String, Secret)> {
        let role = names::role_name(key);
        let password = Secret::random(32);
        let verifier = postgres_protocol::password::scram_sha_256(password.expose().as_bytes());
        if role_exists(db, "look up the replication user", &role).await? {
            db.batch(
                "set the replication user's password",
                &sql::set_role_password(&role, &verifier)?,
            )
            .await?;
            db.batch(
                "add the replication user to its group",
                &sql::grant_membership(GROUP_ROLE, &role)?,
            )
            .await?;
        } else {
            db.batch(
                "create the replication user",
                &sql::create_replication_role(&role, &verifier, GROUP_ROLE)?,
            )
            .await?;
        }
        Ok((role, password))
    }

    pub(crate) async fn snapshot_locked(
        &self,
        req: &SnapshotRequest,
        lock: OwnedChangeGuard,
    ) -> Result<SnapshotDocument> {
        let progress = &req.progress;
        progress.phase(Phase::Prepare, "replication account and slot");
        let db = self.db().await?;
        self.require_enabled(&db).await?;
        // TLS: what replicas get to verify this server, checked against the running server.
        let tls = self.replication_tls().await?;
        let key = match &req.replica_id {
            Some(id) => names::replica_key(id)?,
            None => names::random_replica_key(),
        };
        let name = match &req.snapshot_name {
            Some(n) => n.clone(),
            None => format!(
                "pg-{}-{}",
                key.replace('_', "-"),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis())
                    .unwrap_or(0)
            ),
        };
        trove_guest_core::store::validate_snapshot_name(&name)?;
        // Stored under exactly this name: a replica staging `snapshot_href(name)` follows it.
        let announced_href = self.store.snapshot_href(&name)?;
        // What this call creates, a failed snapshot removes again: a slot left behind would pin
        // WAL on the primary for good (a random replica id is never asked for again).
        let (role_name, slot_name) = (names::role_name(&key), names::snapshot_slot_name(&key));
        let role_existed: bool = db
            .one(
                "look up the replication user",
                sql::ROLE_EXISTS,
                &[&role_name],
            )
            .await?
            .get(0);
        let slot_existed: bool = db
            .one(
                "look up the replication slot",
                sql::SLOT_EXISTS,
                &[&slot_name],
            )
            .await?
            .get(0);
        // The login is admitted from the replica's host only, when it is known (before the
        // login exists or gets its new password); otherwise from `replica_networks`.
        if let Some(host) = &req.replica_host {
            let address = conf::hba_address(host)?;
            self.restrict_login(&db, &role_name, Some(&address)).await?;
        }
        // Journaled first: if this process dies before the snapshot commits, recovery drops
        // what this call made (`abandon_snapshot`).
        let journal = WorkLayout::new(&self.handle.work_dir).journal();
        journal.write(
            &JournalEntry::new(Operation::Snapshot).with_detail(serde_json::json!({
                "name": name,
                "slot": (!slot_existed).then_some(&slot_name),
                "role": (!role_existed).then_some(&role_name),
            })),
        )?;
        // Armed until the commit: an error or a cancellation removes what this call made.
        let uncommitted = UncommittedSnapshot::new(
            self.handle.clone(),
            (!slot_existed).then(|| slot_name.clone()),
            (!role_existed).then(|| role_name.clone()),
            lock,
        );
        let made = async {
            // The slot first: from now on the WAL this replica needs cannot be recycled.
            let slot = self.ensure_slot(&db, &key).await?;
            let (version, version_text) = server_version(&db).await?;

            progress.phase(Phase::Backup, "pg_basebackup into the snapshot store");
            let admin = &self.handle.admin;
            let passfile = if admin.password.is_empty() {
                None
            } else {
                Some(SecretFile::new_in(
                    &self.handle.work_dir,
                    "pgpass",
                    &conf::passfile_line(&admin.user, &admin.password)?,
                    None,
                )?)
            };
            let conninfo = commands::admin_conninfo(admin, passfile.as_ref().map(|p| p.path()))?;
            let mut tool = self
                .handle
                .tool(commands::basebackup(
                    self.handle.program("pg_basebackup"),
                    &conninfo,
                    &format!("trove-guest {slot}"),
                    version.flavor(),
                ))?
                .spawn()
            .map_err(|e| match e {
                Error::NotFound { what } => Error::NotFound {
                    what: format!(
                        "{what} (install the postgresql-client-{} package)",
                        version.major()
                    ),
                },
                other => other,
            })?;
            let mut out = tool.take_stdout().expect("stdout is piped");
            let pending = self.store.put(&name, &mut out, progress).await?;
            drop(out);
            let status = tool.wait_status().await?;
            let stderr = tool.stderr_tail().await;
            if !status.success() {
                return Err(Error::ToolFailed {
                    tool: "pg_basebackup".into(),
                    status: status.to_string(),
                    stderr_tail: stderr,
                });
            }
            trove_guest_core::lifecycle::failpoint("snapshot.uploaded").await;
            let range = parse_backup_range(&stderr).ok_or_else(|| {
                unexpected(
                    "read the backup's WAL range",
                    format!("no start point in pg_basebackup output: {stderr}"),
                )
            })?;
            // Only now, with the backup taken, does the login get its (new) password, in a
            // transaction committed only once the snapshot is in the store: a retry for the same
            // replica id that fails leaves the password of the earlier document valid.
            db.batch("begin the login's password change", sql::BEGIN)
                .await?;
            let keyed = async {
                let (role, password) = self.key_login(&db, &key).await?;
                let stored = pending.commit().await?;
                Ok::<_, Error>((role, password, stored))
            }
            .await;
            let (role, password, stored) = match keyed {
                Ok(k) => k,
                Err(e) => {
                    if let Err(r) = db.batch("roll back the login's password change", sql::ROLLBACK).await {
                        tracing::warn!(error = %r, "could not roll back the login's password change");
                    }
                    return Err(e);
                }
            };
            db.batch("commit the login's password change", sql::COMMIT)
                .await?;
            Ok::<_, Error>((role, slot, password, version, version_text, range, stored))
        }
        .await;
        let (role, slot, password, version, version_text, range, stored) = match made {
            Ok(m) => m,
            Err(e) => {
                uncommitted.clean_up(&db).await;
                if !role_existed
                    && req.replica_host.is_some()
                    && let Err(u) = self.restrict_login(&db, &role_name, None).await
                {
                    tracing::warn!(
                        error = %u,
                        "could not remove the hba lines of a failed snapshot's login"
                    );
                }
                journal.clear()?;
                return Err(e);
            }
        };
        // Committed: from here on the snapshot is the caller's (a cancel leaves the journal,
        // and recovery would only find nothing to drop).
        journal.clear()?;
        let _lock = uncommitted.disarm();
        if stored.href != announced_href {
            tracing::warn!(
                stored = %stored.href,
                announced = %announced_href,
                "the store put the snapshot elsewhere than snapshot_href said: staging replicas \
                 follow the wrong href"
            );
        }
        let data_size: i64 = db
            .one("read the data size", sql::DATA_SIZE, &[])
            .await?
            .get(0);
        progress.phase(Phase::Done, "snapshot stored");

        let mut extra = serde_json::Map::new();
        if let Some(end) = range.end {
            extra.insert(
                "wal_end_lsn".into(),
                serde_json::Value::String(end.to_string()),
            );
        }
        Ok(SnapshotDocument {
            master: self.handle.advertise.clone(),
            dataset: Dataset {
                datastore: DatastoreKind::Postgresql,
                datastore_version: format!("postgresql-{}", version.major()),
                dataset_size: SnapshotDocument::gib_rounded_up(
                    (data_size.max(0) as u64).max(stored.size),
                ),
                snapshot_href: stored.href,
                size_bytes: Some(stored.size),
                sha256: Some(stored.sha256),
                server_version: Some(version_text),
                format: Some("tar".into()),
                compression: None,
            },
            binlog_position: None,
            wal_position: Some(WalPosition {
                lsn: range.start,
                timeline: range.timeline,
            }),
            position: None,
            replication: Some(ReplicationGrant {
                user: role,
                password: Some(TransportSecret(password)),
                password_ref: None,
                slot_name: Some(slot),
                replica_host: req.replica_host.clone(),
                tls,
            }),
            extra,
        })
    }

    /// On a primary: makes a replication login and slot for a standby that needs no snapshot
    /// (a former primary rejoining with [`PostgresStrategy::rejoin_as_standby`]) and says where
    /// to connect. Requires `enable_as_master` to have run. Calling it again for the same id
    /// gives the login a new password.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for a bad replica id; [`Error::WrongRole`] on a standby or a server
    /// not enabled as master; [`Error::Datastore`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe in effect: a repeated call with the same id finishes the work.
    pub async fn grant_standby(&self, replica_id: &str) -> Result<StandbySource> {
        self.grant_standby_from(replica_id, None).await
    }

    /// [`PostgresStrategy::grant_standby`] for a standby connecting from `host` (an IP address
    /// or a host name) when it is known: the login is then admitted from that address only,
    /// ahead of the group's `replica_networks` lines, as a snapshot's `replica_host` does.
    ///
    /// # Errors
    ///
    /// As [`PostgresStrategy::grant_standby`]; [`Error::InvalidInput`] for a bad host.
    ///
    /// # Cancel safety
    ///
    /// As [`PostgresStrategy::grant_standby`].
    pub async fn grant_standby_from(
        &self,
        replica_id: &str,
        host: Option<&str>,
    ) -> Result<StandbySource> {
        let _g = self.change.begin("grant_standby")?;
        let key = names::replica_key(replica_id)?;
        let address = host.map(conf::hba_address).transpose()?;
        let db = self.db().await?;
        self.require_enabled(&db).await?;
        let slot = self.ensure_slot(&db, &key).await?;
        // Limited before the login gets its new password, so it is never admitted from
        // elsewhere with it.
        if let Some(address) = &address {
            self.restrict_login(&db, &names::role_name(&key), Some(address))
                .await?;
        }
        let (user, password) = self.key_login(&db, &key).await?;
        // The hba block admits replication over TLS only when TLS is configured: standbys
        // re-pointed here need the CA and name too.
        let tls = self.replication_tls().await?;
        Ok(StandbySource::new(
            self.handle.advertise.clone(),
            ReplicationGrant {
                user,
                password: Some(TransportSecret(password)),
                password_ref: None,
                slot_name: Some(slot),
                replica_host: host.map(str::to_owned),
                tls,
            },
        ))
    }

    /// Recovery's half of a snapshot that never committed: drops the slot and the login the
    /// journal `detail` names (those the snapshot call created). Idempotent.
    pub(crate) async fn abandon_snapshot_made(
        &self,
        detail: &serde_json::Value,
    ) -> Result<Vec<RecoveryAction>> {
        let mut done = Vec::new();
        let slot = detail.get("slot").and_then(|v| v.as_str());
        let role = detail.get("role").and_then(|v| v.as_str());
        if slot.is_none() && role.is_none() {
            return Ok(done);
        }
        let db = self.db_wait().await?;
        if let Some(slot) = slot {
            names::check_snapshot_slot(slot)?;
            let exists: bool = db
                .one("look up the replication slot", sql::SLOT_EXISTS, &[&slot])
                .await?
                .get(0);
            if exists {
                drop_slot(&db, slot).await?;
                done.push(RecoveryAction::Dropped {
                    what: "replication slot of an uncommitted snapshot".into(),
                    name: slot.to_owned(),
                });
            }
        }
        if let Some(role) = role {
            names::check_role(role)?;
            let exists: bool = db
                .one("look up the replication user", sql::ROLE_EXISTS, &[&role])
                .await?
                .get(0);
            if exists {
                drop_login(&db, role).await?;
                self.restrict_login(&db, role, None).await?;
                done.push(RecoveryAction::Dropped {
                    what: "replication login of an uncommitted snapshot".into(),
                    name: role.to_owned(),
                });
            }
        }
        Ok(done)
    }

    pub(crate) async fn cleanup_locked(&self, replica: &DetachedReplica) -> Result<()> {
        if let Some(role) = &replica.replication_user {
            names::check_role(role)?;
        }
        if let Some(slot) = &replica.slot_name {
            names::check_slot(slot)?;
        }
        let db = self.db().await?;
        let own = replica.slot_name.as_deref().unwrap_or("");
        if let Some(slot) = &replica.slot_name {
            drop_slot(&db, slot).await?;
            // The snapshot's slot it was copied from, if no replica released it (judged by the
            // login: the slot name alone could name another replica's slot).
            if let Some(snapshot_slot) =
                names::snapshot_slot_for_cleanup(replica.replication_user.as_deref(), slot)
            {
                drop_slot(&db, &snapshot_slot).await?;
            }
        }
        if let Some(role) = &replica.replication_user {
            // Replicas attached from one snapshot share its login: it goes with the last of
            // the slots made for its replica id (`trove_snap_<key>`, `trove_slot_<key>_<n>`),
            // matched by parsing each name, never by prefix (`trove_slot_node_` also starts
            // `trove_slot_node_2_3`, a slot of replica `node_2`).
            let key = role.strip_prefix(names::ROLE_PREFIX).unwrap_or(role);
            let mut others = 0;
            for prefix in names::SLOT_PREFIXES {
                let slots = texts(
                    &db,
                    "list replication slots",
                    sql::SLOTS_WITH_PREFIX,
                    &[&prefix],
                )
                .await?;
                others += slots
                    .iter()
                    .filter(|s| s.as_str() != own && names::slot_key(s) == Some(key))
                    .count();
            }
            if others == 0 {
                drop_login(&db, role).await?;
                self.restrict_login(&db, role, None).await?;
            }
        }
        Ok(())
    }

    pub(crate) async fn demote_locked(&self, opts: &DemoteOptions) -> Result<()> {
        let db = self.db().await?;
        self.refuse_standby(&db).await?;
        let flavor = flavor(&db).await?;
        let members = texts(
            &db,
            "list replication users",
            sql::GROUP_MEMBERS,
            &[&GROUP_ROLE],
        )
        .await?;
        for role in members.iter().filter(|r| names::check_role(r).is_ok()) {
            drop_login(&db, role).await?;
        }
        trove_guest_core::lifecycle::failpoint("demote.begun").await;
        for prefix in names::SLOT_PREFIXES {
            let slots = texts(
                &db,
                "list replication slots",
                sql::SLOTS_WITH_PREFIX,
                &[&prefix],
            )
            .await?;
            for slot in slots.iter().filter(|s| names::check_slot(s).is_ok()) {
                drop_slot(&db, slot).await?;
            }
        }
        if role_exists(&db, "look up the replication group", GROUP_ROLE).await? {
            for f in sql::REWIND_FUNCTIONS {
                db.batch(
                    "revoke a rewind function",
                    &sql::revoke_rewind_function(f, GROUP_ROLE)?,
                )
                .await?;
            }
            db.batch("drop the replication group", &sql::drop_role(GROUP_ROLE)?)
                .await?;
        }
        self.edit_hba(&db, |t| Ok(conf::hba_without_block(t)))
            .await?;
        let file = self.config_file(MASTER_FILE);
        conf::remove_if_exists(&self.config_file(conf::REWIND_FILE))?;
        conf::remove_if_exists(&file)?;
        let pending = reload_and_settle(&db, &flavor.master_settings(), &file, false).await?;
        let db = if pending.is_empty() {
            db
        } else {
            tracing::info!(
                ?pending,
                "restarting PostgreSQL to revert replication settings"
            );
            drop(db);
            self.restart().await?
        };
        if opts.purge_logs {
            // Lets the server recycle the WAL it kept for replicas.
            db.batch("checkpoint", sql::CHECKPOINT).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masters_cap_the_wal_a_slot_holds_from_13_on_with_a_checked_size() {
        let opts = PostgresStrategyOptions::new();
        let get = |flavor, opts: &PostgresStrategyOptions| {
            master_settings(flavor, opts, &HashMap::new(), 16 << 20)
                .map(|v| v.into_iter().collect::<HashMap<_, _>>())
        };
        let s = get(Flavor::Pg13Plus, &opts).unwrap();
        assert_eq!(s["max_slot_wal_keep_size"], "'8GB'");
        assert!(
            !get(Flavor::Pg12, &opts)
                .unwrap()
                .contains_key("max_slot_wal_keep_size")
        );
        let unset = opts.clone().with_max_slot_wal_keep_size(None);
        assert!(
            !get(Flavor::Pg13Plus, &unset)
                .unwrap()
                .contains_key("max_slot_wal_keep_size")
        );
        for good in ["512MB", "-1", "1024", "2 GB"] {
            let o = opts.clone().with_max_slot_wal_keep_size(Some(good.into()));
            assert!(get(Flavor::Pg13Plus, &o).is_ok(), "{good}");
        }
        for bad in [
            "",
            "8 GiB",
            "x",
            "1GB' ; wal_level = 'minimal",
            "-2",
            "8 G B",
        ] {
            let o = opts.clone().with_max_slot_wal_keep_size(Some(bad.into()));
            let err = get(Flavor::Pg13Plus, &o).unwrap_err();
            assert_eq!(
                err.kind(),
                trove_guest_core::ErrorKind::InvalidInput,
                "{bad}"
            );
        }
    }

    #[test]
    fn basebackup_output_gives_the_wal_range() {
        let out = "pg_basebackup: initiating base backup, waiting for checkpoint to complete\n\
                   pg_basebackup: checkpoint completed\n\
                   pg_basebackup: write-ahead log start point: 16/B374D848 on timeline 3\n\
                   pg_basebackup: write-ahead log end point: 16/B4000100\n\
                   pg_basebackup: base backup completed\n";
        assert_eq!(
            parse_backup_range(out),
            Some(BackupRange {
                start: Lsn(0x16_B374_D848),
                timeline: 3,
                end: Some(Lsn(0x16_B400_0100)),
            })
        );
        assert_eq!(parse_backup_range("pg_basebackup: error"), None);
    }
}
