//! What the agent tells trove-conductor, as Trove's guest tells it: `heartbeat` (the instance's
//! service status) and `update_backup` (the state of the backup record a replication snapshot
//! fills). Both are casts to the `trove-conductor` topic; with an instance key every argument is
//! wrapped as Trove's `ConductorGuestSerializer` wraps it, which trove-conductor's
//! `ConductorHostSerializer` unwraps.
//!
//! The instance's status follows Trove's guest:
//!
//! | the agent | `service_status` |
//! |---|---|
//! | waiting for its first `prepare` (only with [`RpcOptions::prepare_marker`]) | nothing sent |
//! | a `prepare` runs | `building` |
//! | the last `prepare` failed (one without a snapshot is refused: provisioning is out of scope) | `failed to spawn` (until a `prepare` succeeds) |
//! | otherwise, the server answers a status query | `healthy` |
//! | otherwise, a change runs (it may be restarting the server) | nothing sent |
//! | otherwise | `shutdown` |
//!
//! [`RpcOptions::prepare_marker`]: super::RpcOptions::prepare_marker

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use serde_json::{Map, Value, json};

use super::envelope::{self, Failure, Request};
use super::guest_info::GuestInfo;
use super::translate;

/// Trove's conductor topic.
pub const CONDUCTOR_TOPIC: &str = "trove-conductor";

/// Trove's `backups.location` column holds at most this many characters.
const LOCATION_MAX: usize = 1024;

/// An instance's service status, as Trove names it (`trove.instance.service_status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServiceStatus {
    /// The server answers: Trove shows the instance `HEALTHY` (active).
    Healthy,
    /// The server does not answer: `SHUTDOWN`.
    Shutdown,
    /// A replica is being built by `prepare`: `BUILD`.
    Building,
    /// The last `prepare` failed: `FAILED`.
    Failed,
}

impl ServiceStatus {
    /// Trove's description, the text a heartbeat carries.
    pub fn description(self) -> &'static str {
        match self {
            ServiceStatus::Healthy => "healthy",
            ServiceStatus::Shutdown => "shutdown",
            ServiceStatus::Building => "building",
            ServiceStatus::Failed => "failed to spawn",
        }
    }
}

/// The state of a Trove backup record (`trove.backup.state.BackupState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackupState {
    /// The snapshot is being taken.
    Building,
    /// The snapshot is stored.
    Completed,
    /// The snapshot failed.
    Failed,
}

impl BackupState {
    /// Trove's name for the state.
    pub fn as_str(self) -> &'static str {
        match self {
            BackupState::Building => "BUILDING",
            BackupState::Completed => "COMPLETED",
            BackupState::Failed => "FAILED",
        }
    }
}

/// One `update_backup` for the backup record Trove made for a replication snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct BackupUpdate {
    /// Trove's backup id (`snapshot_info["id"]`, our snapshot name).
    pub backup_id: String,
    /// The new state.
    pub state: BackupState,
    /// The stored snapshot's size in GiB (Trove's unit), once known.
    pub size_gib: Option<f64>,
    /// The snapshot's href in the agent's store, once stored.
    pub location: Option<String>,
}

impl BackupUpdate {
    /// The update a `get_replication_snapshot` call makes before it runs: `BUILDING`. `None`
    /// for any other request, or one without a backup id.
    pub fn before(req: &Request) -> Option<BackupUpdate> {
        Some(BackupUpdate {
            backup_id: backup_id(req)?,
            state: BackupState::Building,
            size_gib: None,
            location: None,
        })
    }

    /// The update a finished `get_replication_snapshot` makes: `COMPLETED` with the stored
    /// snapshot's size and href, or `FAILED`.
    pub fn after(req: &Request, result: &Result<Value, Failure>) -> Option<BackupUpdate> {
        let backup_id = backup_id(req)?;
        let done = result.as_ref().ok().and_then(|v| {
            let doc = translate::snapshot_from_trove(v).ok()?;
            let bytes = doc.dataset.size_bytes;
            Some((doc.dataset.snapshot_href, bytes))
        });
        Some(match done {
            Some((href, bytes)) => BackupUpdate {
                backup_id,
                state: BackupState::Completed,
                size_gib: bytes.map(|b| b as f64 / f64::from(1u32 << 30)),
                location: (href.len() <= LOCATION_MAX).then_some(href),
            },
            None => BackupUpdate {
                backup_id,
                state: BackupState::Failed,
                size_gib: None,
                location: None,
            },
        })
    }

    /// The cast's arguments (Trove's `update_backup(instance_id, backup_id, sent, **fields)`).
    /// No `checksum`: Trove's column holds an MD5 (32 characters); the snapshot's SHA-256 is in
    /// our document.
    pub fn args(&self, instance_id: &str) -> Map<String, Value> {
        let mut a = Map::new();
        a.insert("instance_id".into(), json!(instance_id));
        a.insert("backup_id".into(), json!(self.backup_id));
        a.insert("state".into(), json!(self.state.as_str()));
        a.insert("backup_type".into(), json!("full"));
        if let Some(s) = self.size_gib {
            a.insert("size".into(), json!(s));
        }
        if let Some(l) = &self.location {
            a.insert("location".into(), json!(l));
        }
        match self.state {
            BackupState::Completed => a.insert("success".into(), json!(true)),
            BackupState::Failed => a.insert("success".into(), json!(false)),
            BackupState::Building => None,
        };
        a
    }
}

fn backup_id(req: &Request) -> Option<String> {
    if req.method != "get_replication_snapshot" {
        return None;
    }
    translate::snapshot_id(req.args.get("snapshot_info")?).ok()
}

/// The heartbeat's arguments (Trove's `heartbeat(instance_id, payload, sent)`).
pub fn heartbeat_args(instance_id: &str, status: ServiceStatus) -> Map<String, Value> {
    let mut a = Map::new();
    a.insert("instance_id".into(), json!(instance_id));
    a.insert(
        "payload".into(),
        json!({"service_status": status.description()}),
    );
    a
}

/// A cast of `method` to trove-conductor, with `sent` (seconds since the epoch, which
/// trove-conductor uses to drop messages older than one it has seen) added to `args`.
pub fn cast_body(guest: &GuestInfo, method: &str, mut args: Map<String, Value>) -> Vec<u8> {
    let sent = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default();
    args.insert("sent".into(), json!(sent));
    let mut inner = json!({"method": method, "version": "1.0", "_unique_id": envelope::new_id()});
    match &guest.key {
        Some(k) => {
            let wrapped: Map<String, Value> = args
                .into_iter()
                .map(|(name, v)| {
                    let w = json!({"entity": k.encrypt(&v), "csz-instance-id": guest.guest_id});
                    (name, Value::String(w.to_string()))
                })
                .collect();
            inner["args"] = Value::Object(wrapped);
            inner["_context_context"] = Value::String(k.encrypt(&json!({})));
            inner["_context_csz-instance-id"] = Value::String(guest.guest_id.clone());
        }
        None => inner["args"] = Value::Object(args),
    }
    envelope::wrap(inner)
}

/// Where the instance is in Trove's build: see the module's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    AwaitingPrepare,
    Building,
    Failed,
    Ready,
}

/// The instance's build phase, and the marker file that remembers a successful `prepare`
/// across restarts (as Trove's guest keeps its prepare-end file).
#[derive(Debug)]
pub(crate) struct BuildPhase {
    phase: Mutex<Phase>,
    marker: Option<PathBuf>,
}

impl BuildPhase {
    /// Awaiting `prepare` when `marker` is set and absent; ready otherwise.
    pub(crate) fn new(marker: Option<PathBuf>) -> Self {
        let phase = match &marker {
            Some(m) if !m.exists() => Phase::AwaitingPrepare,
            _ => Phase::Ready,
        };
        BuildPhase {
            phase: Mutex::new(phase),
            marker,
        }
    }

    fn get(&self) -> Phase {
        *self.phase.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set(&self, p: Phase) {
        *self.phase.lock().unwrap_or_else(PoisonError::into_inner) = p;
    }

    /// A `prepare` starts.
    pub(crate) fn begin_prepare(&self) {
        self.set(Phase::Building);
    }

    /// A `prepare` ended: ready (the marker written first) or failed.
    pub(crate) fn end_prepare(&self, ok: bool) {
        if !ok {
            self.set(Phase::Failed);
            return;
        }
        if let Some(m) = &self.marker
            && let Err(e) = write_marker(m)
        {
            // The replica is built; only the memory of it across a restart is lost.
            tracing::error!(marker = %m.display(), error = %e, "prepare marker not written");
        }
        self.set(Phase::Ready);
    }

    /// The status to report, when the phase decides it: `Some(None)` says nothing is sent,
    /// `None` that the server must be asked.
    pub(crate) fn fixed_status(&self) -> Option<Option<ServiceStatus>> {
        match self.get() {
            Phase::AwaitingPrepare => Some(None),
            Phase::Building => Some(Some(ServiceStatus::Building)),
            Phase::Failed => Some(Some(ServiceStatus::Failed)),
            Phase::Ready => None,
        }
    }
}

/// Writes the (empty) marker and syncs it and its directory.
fn write_marker(path: &Path) -> std::io::Result<()> {
    let f = std::fs::File::create(path)?;
    f.sync_all()?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::SecureKey;

    fn request(method: &str, args: Value) -> Request {
        Request::cast_for_test(method, args)
    }

    fn document(href: &str, size_bytes: u64) -> trove_guest_core::SnapshotDocument {
        serde_json::from_value(json!({
            "master": {"host": "10.0.0.5", "port": 3306},
            "dataset": {"datastore": "mariadb", "datastore_version": "10.11", "dataset_size": 3,
                        "snapshot_href": href, "size_bytes": size_bytes},
            "binlog_position": {"log_file": "mariadb-bin.000002", "log_position": 342,
                                "gtid_list": "0-1-42"},
            "replication": {"user": "repl_r1"}
        }))
        .expect("a document")
    }

    fn inner(body: &[u8]) -> Value {
        let outer: Value = serde_json::from_slice(body).expect("JSON");
        serde_json::from_str(outer["oslo.message"].as_str().expect("oslo.message")).expect("inner")
    }

    #[test]
    fn a_plain_heartbeat_carries_trove_s_status_text_and_a_sent_time() {
        let guest = GuestInfo::new("i-1", None);
        let m = inner(&cast_body(
            &guest,
            "heartbeat",
            heartbeat_args("i-1", ServiceStatus::Failed),
        ));
        assert_eq!(m["method"], "heartbeat");
        assert_eq!(m["args"]["instance_id"], "i-1");
        assert_eq!(m["args"]["payload"]["service_status"], "failed to spawn");
        assert!(m["args"]["sent"].as_f64().expect("sent") > 1.7e9);
    }

    #[test]
    fn a_secure_cast_wraps_each_argument_for_the_conductor_s_serializer() {
        let key = SecureKey::from_instance_key("0123456789abcdef0123456789abcdef");
        let guest = GuestInfo::new("i-2", Some("0123456789abcdef0123456789abcdef"));
        let m = inner(&cast_body(
            &guest,
            "heartbeat",
            heartbeat_args("i-2", ServiceStatus::Healthy),
        ));
        let wrapped: Value =
            serde_json::from_str(m["args"]["payload"].as_str().expect("a JSON string"))
                .expect("wrapped");
        assert_eq!(wrapped["csz-instance-id"], "i-2");
        let payload = key
            .decrypt(&wrapped["entity"])
            .expect("decrypts with the instance key");
        assert_eq!(payload, json!({"service_status": "healthy"}));
        assert_eq!(m["_context_csz-instance-id"], "i-2");
    }

    #[test]
    fn a_replication_snapshot_reports_building_then_completed_with_its_href_and_size() {
        let req = request(
            "get_replication_snapshot",
            json!({"snapshot_info": {"id": "b-1"}}),
        );
        let before = BackupUpdate::before(&req).expect("a backup update");
        assert_eq!(before.args("m")["state"], "BUILDING");
        assert!(!before.args("m").contains_key("success"));

        let doc = document("file:///store/b-1", 3 << 30);
        let ok = Ok(translate::snapshot_to_trove(&doc, "b-1"));
        let after = BackupUpdate::after(&req, &ok).expect("a backup update");
        let a = after.args("m");
        assert_eq!(a["state"], "COMPLETED");
        assert_eq!(a["location"], "file:///store/b-1");
        assert_eq!(a["size"], json!(3.0));
        assert_eq!(a["success"], json!(true));
        assert_eq!(a["instance_id"], "m");
        assert!(!a.contains_key("checksum"), "Trove's column holds an MD5");

        let failed = BackupUpdate::after(&req, &Err(Failure::trove("GuestError", "no")))
            .expect("a backup update");
        assert_eq!(failed.args("m")["state"], "FAILED");
        assert_eq!(failed.args("m")["success"], json!(false));
        assert_eq!(
            BackupUpdate::before(&request("demote_replication_master", json!({}))),
            None
        );
    }

    #[test]
    fn the_phase_is_silent_before_prepare_building_during_and_failed_after_a_failure() {
        let dir = tempfile::tempdir().expect("dir");
        let marker = dir.path().join("prepared");
        let p = BuildPhase::new(Some(marker.clone()));
        assert_eq!(p.fixed_status(), Some(None));
        p.begin_prepare();
        assert_eq!(p.fixed_status(), Some(Some(ServiceStatus::Building)));
        p.end_prepare(false);
        assert_eq!(p.fixed_status(), Some(Some(ServiceStatus::Failed)));
        assert!(!marker.exists());
        p.begin_prepare();
        p.end_prepare(true);
        assert_eq!(p.fixed_status(), None, "ready: the server is asked");
        assert!(marker.exists());
        // A restarted agent remembers the prepare.
        assert_eq!(BuildPhase::new(Some(marker)).fixed_status(), None);
        // Without a marker the server is the operator's and is reported from the start.
        assert_eq!(BuildPhase::new(None).fixed_status(), None);
    }
}
