//! One cell of the matrix: set the scene, park, kill, reboot, check, retry.

use std::path::Path;
use std::time::{Duration, Instant};

use trove_guest_core::{DatastoreKind, Error, Result, SnapshotDocument};

use super::instance::{Instance, InstanceOptions};
use super::{CellRecord, Fault, PARK_LIMIT_ENV};
use crate::api::{AttachQuery, SnapshotCall, StageCall};
use crate::client::AgentClient;

/// How long a cell waits for the agent to park ([`PARK_LIMIT_ENV`], default 180 s).
pub fn park_limit() -> Duration {
    std::env::var(PARK_LIMIT_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(Duration::from_secs(180), Duration::from_secs)
}

/// What a cell calls while its failpoint is armed, and repeats after the reboot.
#[derive(Debug, Clone)]
enum Call {
    EnableMaster,
    Snapshot(SnapshotCall),
    Demote,
    Detach,
    Attach(Box<SnapshotDocument>),
    Stage(StageCall),
}

impl Call {
    async fn run(&self, client: &AgentClient) -> std::result::Result<(), String> {
        let r = match self {
            Call::EnableMaster => client.enable_master().await.map(drop),
            Call::Snapshot(c) => client.snapshot(c, &mut |_| {}).await.map(drop),
            Call::Demote => client.demote().await.map(drop),
            Call::Detach => client.detach().await.map(drop),
            Call::Attach(doc) => client
                .attach(doc, &AttachQuery::default(), &mut |_| {})
                .await
                .map(drop),
            Call::Stage(c) => client.stage(c, &mut |_| {}).await.map(drop),
        };
        r.map_err(|e| e.to_string())
    }
}

/// Runs `call` on `client` and waits until the agent parks at `step` (the failpoint file
/// appears in `dir`), bounded by [`park_limit`].
///
/// # Errors
///
/// A message when the call returned before parking or the limit passed.
async fn call_until_parked(
    client: &AgentClient,
    call: &Call,
    dir: &Path,
    step: &str,
) -> std::result::Result<(), String> {
    let marker = dir.join(step);
    let client = client.clone();
    let call = call.clone();
    let mut running = tokio::spawn(async move { call.run(&client).await });
    let limit = park_limit();
    let started = Instant::now();
    loop {
        if marker.exists() {
            running.abort();
            return Ok(());
        }
        if running.is_finished() {
            let outcome = (&mut running).await.unwrap_or_else(|e| Err(e.to_string()));
            // The marker is written just before parking: look once more.
            if marker.exists() {
                return Ok(());
            }
            return Err(format!(
                "failpoint {step} never reached (the call returned {})",
                match outcome {
                    Ok(()) => "success".to_owned(),
                    Err(e) => format!("an error: {e}"),
                }
            ));
        }
        if started.elapsed() > limit {
            running.abort();
            return Err(format!("not parked at {step} after {limit:?}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Which side the cell's fault hits.
fn replica_side(step: &str) -> bool {
    step.starts_with("attach.") || step.starts_with("stage.") || step == "detach.begun"
}

/// One cell of the matrix, as spelled in test names and the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct CellSpec {
    /// The failpoint.
    pub step: &'static str,
    /// The fault.
    pub fault: Fault,
    /// The datastore.
    pub kind: DatastoreKind,
}

impl CellSpec {
    /// The cell `step` × `fault` × `kind`.
    pub fn new(step: &'static str, fault: Fault, kind: DatastoreKind) -> Self {
        CellSpec { step, fault, kind }
    }
}

const MASTER_ROWS: std::ops::Range<u64> = 0..3000;
const REPLICA_OLD_ROWS: std::ops::Range<u64> = 1_000_000..1_000_500;
const REPLICA_ID: &str = "matrix-replica";
const SNAPSHOT_NAME: &str = "matrix-snapshot";

/// Runs one cell end to end (see the module docs) and returns what it found; the record is
/// also appended to the report file when [`REPORT_ENV`] is set.
///
/// A scene that could not be set (a server that does not start, an agent that does not serve
/// before the fault) is recorded as `failed: the scene could not be set: ...`.
///
/// # Errors
///
/// None: a cell that cannot run is a failed record.
///
/// # Cancel safety
///
/// Cancel safe: instances are killed and removed on drop.
pub async fn run_cell(spec: CellSpec, agent_bin: &Path) -> CellRecord {
    match run_cell_inner(spec, agent_bin).await {
        Ok(rec) => rec,
        Err(e) => {
            let mut rec = CellRecord::new(spec.step, spec.fault, spec.kind);
            rec.result = format!("failed: the scene could not be set: {e}");
            rec.fail(rec.result.clone());
            if let Err(e) = rec.append_to_report() {
                tracing::warn!(error = %e, "could not append to the matrix report");
            }
            rec
        }
    }
}

async fn run_cell_inner(spec: CellSpec, agent_bin: &Path) -> Result<CellRecord> {
    let mut rec = CellRecord::new(spec.step, spec.fault, spec.kind);
    let store = tempfile::Builder::new()
        .prefix("tg-matrix-store-")
        .tempdir()
        .map_err(|e| Error::io("create the store directory", e))?;
    let step = spec.step;
    let armed = [step];
    let mut master =
        Instance::create(spec.kind, InstanceOptions::new(agent_bin, 1, store.path())).await?;
    master
        .start_agent(if replica_side(step) { &[] } else { &armed })
        .await?;
    master.load(MASTER_ROWS).await?;

    // The scene: what runs before the armed call, and the call itself.
    let snapshot_call = SnapshotCall {
        replica_id: Some(REPLICA_ID.into()),
        snapshot_name: Some(SNAPSHOT_NAME.into()),
        ..SnapshotCall::default()
    };
    let mut replica: Option<Instance> = None;
    let (call, old, new) = if !replica_side(step) {
        if step != "enable_master.begun" {
            master.client().enable_master().await.map_err(client_err)?;
        }
        if step == "demote.begun" {
            master
                .client()
                .snapshot(&snapshot_call, &mut |_| {})
                .await
                .map_err(client_err)?;
        }
        let old = master.fingerprint().await?;
        let call = match step {
            "enable_master.begun" => Call::EnableMaster,
            "demote.begun" => Call::Demote,
            _ => Call::Snapshot(snapshot_call.clone()),
        };
        (call, old, None)
    } else {
        master.client().enable_master().await.map_err(client_err)?;
        let doc = master
            .client()
            .snapshot(&snapshot_call, &mut |_| {})
            .await
            .map_err(client_err)?;
        let new = master.fingerprint().await?;
        let mut r =
            Instance::create(spec.kind, InstanceOptions::new(agent_bin, 2, store.path())).await?;
        r.start_agent(&armed).await?;
        r.load(REPLICA_OLD_ROWS).await?;
        let old = r.fingerprint().await?;
        let call = if step == "detach.begun" {
            r.client()
                .attach(&doc, &AttachQuery::default(), &mut |_| {})
                .await
                .map_err(client_err)?;
            Call::Detach
        } else if step.starts_with("stage.") {
            Call::Stage(StageCall {
                snapshot_href: Some(doc.dataset.snapshot_href.clone()),
                size_bytes: doc.dataset.size_bytes,
                sha256: doc.dataset.sha256.clone(),
                ..StageCall::default()
            })
        } else {
            Call::Attach(Box::new(doc.clone()))
        };
        replica = Some(r);
        let attach = Call::Attach(Box::new(doc));
        (call, old, Some((new, attach)))
    };
    let target = replica.as_mut().unwrap_or(&mut master);

    if let Err(e) = call_until_parked(target.client(), &call, &target.failpoint_dir(), step).await {
        rec.result = "failed: not parked at the failpoint".into();
        rec.fail(e);
        rec.append_to_report()?;
        return Ok(rec);
    }
    target.kill(spec.fault).await;
    if let Err(e) = target.reboot(spec.fault).await {
        rec.result = "failed: the restarted agent did not serve".into();
        rec.fail(format!("the restarted agent did not serve: {e}"));
        rec.append_to_report()?;
        return Ok(rec);
    }
    rec.recovery = match target.client().recovery().await {
        Ok(v) => v.actions.iter().map(ToString::to_string).collect(),
        Err(e) => vec![format!("GET /v1/recovery failed: {e}")],
    };

    // The data: the old, or the complete new replica, never anything else.
    let new_fp = new.as_ref().map(|(fp, _)| fp.clone());
    match target.fingerprint().await {
        Err(e) => {
            rec.result = format!("failed: the server does not answer: {e}");
            rec.fail(rec.result.clone());
        }
        Ok(fp) => {
            let is_new = new_fp.as_ref() == Some(&fp);
            let is_old = fp == old;
            rec.result = if is_new && step != "detach.begun" && is_old {
                "failed: old and new data are equal (the cell cannot tell them apart)".into()
            } else if is_new {
                "new replica".into()
            } else if is_old {
                "old data".into()
            } else {
                format!("failed: neither the old data nor the new replica: {fp:?}")
            };
            let allowed = match step {
                "detach.begun" => rec.result == "new replica",
                s if replica_side(s) => rec.result == "new replica" || rec.result == "old data",
                _ => rec.result == "old data",
            };
            if !allowed {
                rec.fail(format!(
                    "data outcome {:?} is not allowed at {step}",
                    rec.result
                ));
            }
        }
    }
    rec.leftovers = target.leftovers().await;
    if !rec.leftovers.is_empty() {
        rec.fail(format!("leftovers: {:?}", rec.leftovers));
    }
    // A snapshot that never committed keeps no slot on the master.
    if matches!(step, "snapshot.streaming" | "snapshot.uploaded") {
        // Master-side steps: `target` is the master.
        match target.snapshot_slots().await {
            Ok(slots) if slots.is_empty() => {}
            Ok(slots) => {
                let msg = format!("slot of an uncommitted snapshot left: {slots:?}");
                rec.leftovers.push(msg.clone());
                rec.fail(msg);
            }
            Err(e) => rec.fail(format!("list the master's slots: {e}")),
        }
    }

    // The same request again.
    let retried = async {
        call.run(target.client()).await?;
        if let (Call::Stage(_), Some((_, attach))) = (&call, &new) {
            attach.run(target.client()).await?;
        }
        if let Some((want, _)) = &new
            && step != "detach.begun"
        {
            let fp = target.fingerprint().await.map_err(|e| e.to_string())?;
            if &fp != want {
                return Err(
                    "after the retried attach the replica does not hold the master's \
                            data"
                        .to_owned(),
                );
            }
        }
        Ok::<_, String>(())
    }
    .await;
    match retried {
        Ok(()) => rec.retry_ok = true,
        Err(e) => rec.fail(format!("the retried call failed: {e}")),
    }
    rec.append_to_report()?;
    drop(replica);
    drop(master);
    Ok(rec)
}

fn client_err(e: crate::client::ClientError) -> Error {
    Error::Service {
        message: format!("setting the scene: {e}"),
    }
}
