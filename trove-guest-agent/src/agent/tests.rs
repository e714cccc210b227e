//! Agent tests over loopback HTTP against a fake strategy (the live tests in `trove-guest-tests`
//! use the real backends).

mod security;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Semaphore;
use trove_guest_core::wire::{BinlogPosition, Dataset, MasterAddress};
use trove_guest_core::{
    AttachOutcome, AttachRequest, Capabilities, DatastoreKind, DemoteOptions, DetachOptions,
    DetachedReplica, EnableMasterOptions, LocalSnapshotStore, Phase, RecoverOptions,
    RecoveryAction, RecoveryReport, ReplicationPosition, ReplicationStatus, ReplicationStrategy,
    Result, SnapshotDocument, SnapshotRequest, SnapshotStore,
};

use super::{AgentOptions, GuestAgent, ListenOn, RunningAgent};
use crate::api::{self, kinds};
use crate::client::AgentClient;

#[derive(Debug)]
struct FakeStrategy {
    store: Arc<LocalSnapshotStore>,
    /// Snapshots wait for a permit here.
    gate: Arc<Semaphore>,
    attaches: AtomicU32,
    /// The server's status queries: 0 answer, 1 fail, 2 hang.
    down: std::sync::atomic::AtomicU8,
    /// `enable_as_master` fails with a tool error naming a server file (for error redaction).
    enable_fails: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl ReplicationStrategy for FakeStrategy {
    fn datastore(&self) -> DatastoreKind {
        DatastoreKind::Mariadb
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::none()
    }
    async fn enable_as_master(&self, _: &EnableMasterOptions) -> Result<()> {
        if !self.enable_fails.load(std::sync::atomic::Ordering::SeqCst) {
            return Ok(());
        }
        // A failing tool whose stderr names a file of the server.
        Err(trove_guest_core::Error::ToolFailed {
            tool: "mariadb".into(),
            status: "exit status: 1".into(),
            stderr_tail: "ERROR 1045: cannot open /var/lib/mysql/secret-dir/ibdata1".into(),
        })
    }
    async fn get_replication_snapshot(&self, req: &SnapshotRequest) -> Result<SnapshotDocument> {
        req.progress.phase(Phase::Backup, "fake backup");
        // One permit per snapshot: a permit lets exactly one through.
        self.gate.acquire().await.expect("gate open").forget();
        req.progress.bytes(Phase::Backup, 42, Some(42));
        Ok(doc(&self.store.href_for("fake")))
    }
    async fn attach_replication_slave(
        &self,
        _: &SnapshotDocument,
        req: &AttachRequest,
    ) -> Result<AttachOutcome> {
        req.progress.phase(Phase::Restore, "fake restore");
        self.attaches.fetch_add(1, Ordering::SeqCst);
        Ok(AttachOutcome::new(42, None))
    }
    async fn detach_replication_slave(&self, _: &DetachOptions) -> Result<DetachedReplica> {
        Ok(DetachedReplica::new(
            Some("repl_r1".into()),
            None,
            None,
            true,
        ))
    }
    async fn cleanup_source_on_replica_detach(&self, _: &DetachedReplica) -> Result<()> {
        Ok(())
    }
    async fn demote_replication_master(&self, _: &DemoteOptions) -> Result<()> {
        Ok(())
    }
    async fn make_read_only(&self, _: bool) -> Result<()> {
        Ok(())
    }
    async fn get_latest_txn_id(&self) -> Result<ReplicationPosition> {
        Ok(ReplicationPosition::MariadbGtid("0-1-7".parse()?))
    }
    async fn wait_for_txn(&self, _: &ReplicationPosition, t: Duration) -> Result<()> {
        Err(trove_guest_core::Error::timeout("fake txn", t))
    }
    async fn replication_status(&self) -> Result<ReplicationStatus> {
        match self.down.load(Ordering::SeqCst) {
            0 => {}
            1 => {
                return Err(trove_guest_core::Error::io(
                    "connect to the fake server",
                    std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
                ));
            }
            _ => std::future::pending::<()>().await,
        }
        Ok(ReplicationStatus::default())
    }
    async fn recover(&self, _: &RecoverOptions) -> Result<RecoveryReport> {
        let mut report = RecoveryReport::new();
        report.push(RecoveryAction::Removed {
            what: "staging".into(),
            path: ".tg-stage-x".into(),
        });
        Ok(report)
    }
}

fn doc(href: &str) -> SnapshotDocument {
    SnapshotDocument {
        master: MasterAddress {
            host: "127.0.0.1".into(),
            port: 3306,
        },
        dataset: Dataset {
            datastore: DatastoreKind::Mariadb,
            datastore_version: "10.11".into(),
            dataset_size: 1,
            snapshot_href: href.into(),
            size_bytes: None,
            sha256: None,
            server_version: None,
            format: None,
            compression: None,
        },
        binlog_position: Some(BinlogPosition {
            log_file: "mysql-bin.000001".parse().unwrap(),
            log_position: 4,
            gtid_list: None,
            gtid_set: None,
        }),
        wal_position: None,
        position: None,
        replication: None,
        extra: Default::default(),
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<LocalSnapshotStore>,
    strategy: Arc<FakeStrategy>,
    agent: RunningAgent,
    client: AgentClient,
    changes: crate::changes::ChangeSlot,
}

async fn fixture(open_gate: bool) -> Fixture {
    let f = fixture_on(open_gate, AgentOptions::new("inst-1"), |_| {
        ListenOn::Tcp("127.0.0.1:0".parse().unwrap())
    })
    .await;
    let client = AgentClient::new(f.agent.url());
    Fixture { client, ..f }
}

/// An agent with `options` on the listener `on` makes of the fixture's directory; its client has
/// no token.
async fn fixture_on(
    open_gate: bool,
    options: AgentOptions,
    on: impl FnOnce(&std::path::Path) -> ListenOn,
) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LocalSnapshotStore::new(dir.path()).unwrap());
    let gate = Arc::new(Semaphore::new(if open_gate { 1000 } else { 0 }));
    let strategy = Arc::new(FakeStrategy {
        store: store.clone(),
        gate,
        attaches: AtomicU32::new(0),
        down: std::sync::atomic::AtomicU8::new(0),
        enable_fails: Default::default(),
    });
    let listen = on(dir.path());
    let agent = GuestAgent::new(
        strategy.clone(),
        store.clone() as Arc<dyn SnapshotStore>,
        options.with_health_timeout(Duration::from_secs(1)),
    );
    let changes = agent.changes();
    let agent = agent.spawn_on(&listen).await.unwrap();
    let client = AgentClient::new(agent.url());
    Fixture {
        _dir: dir,
        store,
        strategy,
        agent,
        client,
        changes,
    }
}

#[tokio::test]
async fn attach_with_malformed_json_is_400_malformed_json() {
    let f = fixture(true).await;
    let (status, body) = f
        .client
        .post_raw(api::ATTACH, "{\"master\": ")
        .await
        .unwrap();
    assert_eq!(status, 400);
    assert_eq!(body["error"]["kind"], kinds::MALFORMED_JSON);
    assert_eq!(f.strategy.attaches.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn attach_with_unknown_datastore_is_422_naming_it() {
    let f = fixture(true).await;
    let mut v = serde_json::to_value(doc(&f.store.href_for("x"))).unwrap();
    v["dataset"]["datastore"] = "cassandra".into();
    let (status, body) = f.client.post_raw(api::ATTACH, v.to_string()).await.unwrap();
    assert_eq!(status, 422);
    assert_eq!(body["error"]["kind"], kinds::UNKNOWN_DATASTORE);
    assert_eq!(body["error"]["field"], "dataset.datastore");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cassandra")
    );
}

#[tokio::test]
async fn attach_with_wrong_datastore_is_422_wrong_datastore() {
    let f = fixture(true).await;
    let mut v = serde_json::to_value(doc(&f.store.href_for("x"))).unwrap();
    v["dataset"]["datastore"] = "postgresql".into();
    let (status, body) = f.client.post_raw(api::ATTACH, v.to_string()).await.unwrap();
    assert_eq!(status, 422);
    assert_eq!(body["error"]["kind"], kinds::WRONG_DATASTORE);
}

#[tokio::test]
async fn attach_with_href_outside_store_is_422_and_attaches_nothing() {
    let f = fixture(true).await;
    let d = doc("file:///etc/passwd.snap");
    let (status, body) = f
        .client
        .post_raw(api::ATTACH, serde_json::to_vec(&d).unwrap())
        .await
        .unwrap();
    assert_eq!(status, 422);
    assert_eq!(body["error"]["kind"], kinds::HREF_OUTSIDE_STORE);
    assert_eq!(body["error"]["field"], "dataset.snapshot_href");
    assert_eq!(f.strategy.attaches.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn second_change_while_one_runs_is_409_busy_naming_the_running_call() {
    let f = fixture(false).await;
    let c = f.client.clone();
    let first =
        tokio::spawn(async move { c.snapshot(&api::SnapshotCall::default(), &mut |_| {}).await });
    // Wait until the first change holds the slot.
    loop {
        if f.client.operation().await.unwrap().running.is_some() {
            break;
        }
        tokio::task::yield_now().await;
    }
    let err = f.client.detach().await.unwrap_err();
    match &err {
        crate::client::ClientError::Api { status, error } => {
            assert_eq!(*status, 409);
            assert_eq!(error.kind, kinds::BUSY);
            assert_eq!(error.running.as_deref(), Some("get_replication_snapshot"));
            assert!(
                error.message.starts_with("busy: get_replication_snapshot"),
                "{}",
                error.message
            );
        }
        other => panic!("expected busy, got {other}"),
    }
    f.strategy.gate.add_permits(1);
    let doc = first.await.unwrap().expect("first change completes");
    assert!(f.store.owns(&doc.dataset.snapshot_href));
    f.client
        .detach()
        .await
        .expect("free again after the first change");
}

#[tokio::test]
async fn streamed_snapshot_reports_progress_then_the_document() {
    let f = fixture(true).await;
    let mut events = Vec::new();
    let d = f
        .client
        .snapshot(&api::SnapshotCall::default(), &mut |e| events.push(e))
        .await
        .unwrap();
    assert_eq!(d.dataset.datastore, DatastoreKind::Mariadb);
    assert!(
        events
            .iter()
            .any(|e| e.phase == Phase::Backup && e.done == 42)
    );
}

#[tokio::test]
async fn detach_replication_action_for_this_instance_detaches() {
    let f = fixture(true).await;
    let r = f.client.detach_replication_action("inst-1").await.unwrap();
    assert!(r.was_replicating);
    let err = f
        .client
        .detach_replication_action("other")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), Some(kinds::UNKNOWN_INSTANCE));
    let (status, body) = f
        .client
        .post_raw(&api::action_path("inst-1"), r#"{"resize": {}}"#)
        .await
        .unwrap();
    assert_eq!(status, 422);
    assert_eq!(body["error"]["kind"], kinds::UNKNOWN_ACTION);
}

#[tokio::test]
async fn core_timeout_maps_to_504() {
    let f = fixture(true).await;
    let txn = f.client.latest_txn().await.unwrap();
    let err = f
        .client
        .wait_for_txn(&txn, Duration::from_millis(10))
        .await
        .unwrap_err();
    match err {
        crate::client::ClientError::Api { status, error } => {
            assert_eq!(status, 504);
            assert_eq!(error.kind, kinds::TIMEOUT);
        }
        other => panic!("{other}"),
    }
    drop(f.agent);
}

#[tokio::test]
async fn accept_ndjson_header_streams_and_events_endpoint_sees_the_progress() {
    let f = fixture(true).await;
    let http = reqwest::Client::new();
    // Subscribe to the agent-wide event stream first.
    let mut events = http
        .get(format!("{}{}", f.agent.url(), api::EVENTS))
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);
    let resp = http
        .post(format!("{}{}", f.agent.url(), api::SNAPSHOT))
        .header("accept", "application/x-ndjson")
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "application/x-ndjson"
    );
    let text = resp.text().await.unwrap();
    let lines: Vec<api::StreamLine> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(matches!(lines.first(), Some(api::StreamLine::Progress(_))));
    assert!(matches!(lines.last(), Some(api::StreamLine::Result(_))));

    let mut buf = Vec::new();
    while !buf.ends_with(b"\n") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), events.chunk())
            .await
            .expect("an event line arrives")
            .unwrap()
            .expect("stream open");
        buf.extend_from_slice(&chunk);
    }
    let first = buf.split(|b| *b == b'\n').next().unwrap();
    let line: api::EventLine = serde_json::from_slice(first).unwrap();
    assert_eq!(line.operation, "get_replication_snapshot");
    assert_eq!(line.event.phase, Phase::Backup);
}

#[tokio::test]
async fn wait_for_txn_with_a_huge_timeout_is_capped_not_a_dropped_connection() {
    let f = fixture(true).await;
    let txn =
        serde_json::to_value(ReplicationPosition::MariadbGtid("0-1-7".parse().unwrap())).unwrap();
    for secs in [1e30, f64::MAX] {
        let body = serde_json::json!({ "txn": txn, "timeout_secs": secs });
        let (status, body) = f
            .client
            .post_raw(api::WAIT_FOR_TXN, body.to_string())
            .await
            .expect("the agent answers (a panicking handler drops the connection)");
        // The fake strategy times out: the wait was bounded by the agent's cap.
        assert_eq!(status, 504, "{body}");
        assert_eq!(body["error"]["kind"], kinds::TIMEOUT);
    }
}

#[tokio::test]
async fn stage_needs_exactly_one_of_href_and_name_inside_the_store() {
    let f = fixture(true).await;
    for body in [
        "{}".to_owned(),
        format!(
            r#"{{"snapshot_href": "{}", "snapshot_name": "x"}}"#,
            f.store.href_for("x")
        ),
    ] {
        let (status, reply) = f.client.post_raw(api::STAGE, body.clone()).await.unwrap();
        assert_eq!(status, 422, "{body}: {reply}");
        assert_eq!(reply["error"]["kind"], kinds::INVALID_DOCUMENT, "{reply}");
    }
    let (status, reply) = f
        .client
        .post_raw(
            api::STAGE,
            r#"{"snapshot_href": "file:///etc/passwd.snap"}"#,
        )
        .await
        .unwrap();
    assert_eq!(status, 422);
    assert_eq!(reply["error"]["kind"], kinds::HREF_OUTSIDE_STORE);
    let (status, reply) = f
        .client
        .post_raw(api::STAGE, r#"{"snapshot_name": "../etc"}"#)
        .await
        .unwrap();
    assert_eq!(status, 422, "{reply}");
    assert_eq!(reply["error"]["field"], "snapshot_name");
    // The fake strategy has no staging: a well-formed request reaches it and is refused.
    let (status, reply) = f
        .client
        .post_raw(api::STAGE, r#"{"snapshot_name": "later"}"#)
        .await
        .unwrap();
    assert_eq!(reply["error"]["kind"], "unsupported", "{status} {reply}");
}

#[tokio::test]
async fn a_timeout_above_the_maximum_is_a_400_before_anything_changes() {
    let f = fixture(true).await;
    let body = serde_json::to_vec(&doc(&f.store.href_for("fake"))).unwrap();
    for secs in [u64::MAX, api::MAX_TIMEOUT_SECS + 1] {
        let path = format!("{}?timeout_secs={secs}", api::ATTACH);
        let (status, reply) = f.client.post_raw(&path, body.clone()).await.unwrap();
        assert_eq!(status, 400, "{secs}: {reply}");
        assert_eq!(reply["error"]["kind"], kinds::TIMEOUT_TOO_LONG, "{reply}");
        assert_eq!(reply["error"]["field"], "timeout_secs", "{reply}");
        let detach = serde_json::json!({ "timeout_secs": secs }).to_string();
        let (status, reply) = f.client.post_raw(api::DETACH, detach).await.unwrap();
        assert_eq!(status, 400, "{secs}: {reply}");
        assert_eq!(reply["error"]["kind"], kinds::TIMEOUT_TOO_LONG, "{reply}");
    }
    assert_eq!(f.strategy.attaches.load(Ordering::SeqCst), 0);
    let path = format!("{}?timeout_secs={}", api::ATTACH, api::MAX_TIMEOUT_SECS);
    let (status, reply) = f.client.post_raw(&path, body).await.unwrap();
    assert_eq!(status, 200, "the maximum itself is accepted: {reply}");
    assert_eq!(f.strategy.attaches.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn recovery_report_is_served_once_the_agent_has_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LocalSnapshotStore::new(dir.path()).unwrap());
    let strategy = Arc::new(FakeStrategy {
        store: store.clone(),
        gate: Arc::new(Semaphore::new(1000)),
        attaches: AtomicU32::new(0),
        down: std::sync::atomic::AtomicU8::new(0),
        enable_fails: Default::default(),
    });
    let agent = GuestAgent::new(
        strategy,
        store as Arc<dyn SnapshotStore>,
        AgentOptions::new("inst-1"),
    );
    let not_yet = agent
        .clone()
        .spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let view = AgentClient::new(not_yet.url()).recovery().await.unwrap();
    assert!(!view.ran && view.actions.is_empty(), "{view:?}");
    not_yet.shutdown().await.unwrap();

    let report = agent.recover(&RecoverOptions::new()).await.unwrap();
    assert_eq!(report.actions.len(), 1);
    let running = agent.spawn("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let view = AgentClient::new(running.url()).recovery().await.unwrap();
    assert!(view.ran);
    assert_eq!(view.actions, report.actions);
}

/// Waits (bounded) until a change runs in `slot`.
async fn until_running(slot: &crate::changes::ChangeSlot) -> crate::changes::RunningChange {
    for _ in 0..10_000 {
        if let Some(r) = slot.current() {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("no change started");
}

fn rpc_request(method: &str) -> crate::rpc::envelope::Request {
    crate::rpc::envelope::Request {
        method: method.into(),
        args: serde_json::Map::new(),
        version: Some("1.0".into()),
        msg_id: Some("m1".into()),
        reply_q: Some("reply_q".into()),
        unique_id: Some("u1".into()),
    }
}

#[tokio::test]
async fn one_change_lock_for_both_front_ends_http_running_refuses_rpc_and_rpc_running_refuses_http()
{
    let f = fixture(false).await;
    let rpc = crate::rpc::TroveRpcServer::with_changes(
        f.strategy.clone(),
        crate::rpc::RpcOptions::new(
            trove_guest_core::Secret::new("amqp://127.0.0.1:1/%2f"),
            crate::rpc::GuestInfo::new("inst-1", None),
        ),
        f.changes.clone(),
    );
    // An HTTP snapshot holds the slot: Trove's demote is a GuestError saying busy.
    let c = f.client.clone();
    let http =
        tokio::spawn(async move { c.snapshot(&api::SnapshotCall::default(), &mut |_| {}).await });
    let running = until_running(&f.changes).await;
    assert_eq!(running.front_end, crate::changes::FrontEnd::Http);
    let failure = rpc
        .run_request(&rpc_request("demote_replication_master"))
        .await
        .expect_err("busy");
    assert_eq!(failure.class, "GuestError");
    assert_eq!(failure.module, "trove.common.exception");
    assert!(
        failure
            .message
            .starts_with("busy: get_replication_snapshot"),
        "{}",
        failure.message
    );
    // A read is not a change: it runs meanwhile.
    rpc.run_request(&rpc_request("get_latest_txn_id"))
        .await
        .expect("reads run during a change");
    f.strategy.gate.add_permits(1);
    http.await.unwrap().expect("the HTTP snapshot completes");

    // An RPC snapshot holds the slot: the HTTP demote is 409 busy naming it.
    let mut req = rpc_request("get_replication_snapshot");
    req.args.insert(
        "snapshot_info".into(),
        serde_json::json!({"id": "backup-1"}),
    );
    let rpc2 = rpc.clone();
    let call = tokio::spawn(async move { rpc2.run_request(&req).await });
    let running = until_running(&f.changes).await;
    assert_eq!(running.front_end, crate::changes::FrontEnd::TroveRpc);
    assert_eq!(running.operation_id, "m1");
    let (status, health) = f.client.health().await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        health.change.as_ref().map(|c| c.operation.as_str()),
        Some("get_replication_snapshot")
    );
    match f.client.demote().await.unwrap_err() {
        crate::client::ClientError::Api { status, error } => {
            assert_eq!(status, 409);
            assert_eq!(error.kind, kinds::BUSY);
            assert_eq!(error.running.as_deref(), Some("get_replication_snapshot"));
        }
        other => panic!("expected busy, got {other}"),
    }
    f.strategy.gate.add_permits(1);
    call.await.unwrap().expect("the RPC snapshot completes");
    f.client.demote().await.expect("free again");
}

#[tokio::test]
async fn health_answers_200_and_shows_a_running_change_then_503_when_the_server_fails_or_hangs() {
    let f = fixture(false).await;
    let (status, h) = f.client.health().await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(h.server, api::ANSWERING);
    assert!(h.change.is_none(), "{h:?}");
    assert!(!h.recovery.ran);
    let c = f.client.clone();
    let first =
        tokio::spawn(async move { c.snapshot(&api::SnapshotCall::default(), &mut |_| {}).await });
    until_running(&f.changes).await;
    let (status, h) = f.client.health().await.unwrap();
    assert_eq!(status, 200);
    let change = h.change.expect("the snapshot shows");
    assert_eq!(change.operation, "get_replication_snapshot");
    assert_eq!(change.front_end, crate::changes::FrontEnd::Http);
    assert!(change.since > 0.0);
    f.strategy.gate.add_permits(1);
    first.await.unwrap().expect("snapshot");
    f.strategy.down.store(1, Ordering::SeqCst);
    let (status, h) = f.client.health().await.unwrap();
    assert_eq!(status, 503);
    assert_eq!(h.server, api::NOT_ANSWERING);
    assert_eq!(h.problem.as_deref(), Some(kinds::INTERNAL));
    // A server that hangs: the check is bounded by the agent's health timeout.
    f.strategy.down.store(2, Ordering::SeqCst);
    let (status, h) = f.client.health().await.unwrap();
    assert_eq!(status, 503);
    assert_eq!(h.problem.as_deref(), Some("timeout"));
}

#[tokio::test]
async fn every_answer_carries_the_request_id_given_or_made() {
    let f = fixture(true).await;
    let http = reqwest::Client::new();
    let resp = http
        .get(format!("{}{}", f.agent.url(), api::OPERATION))
        .header("x-request-id", "req-42")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "req-42");
    let resp = http
        .get(format!("{}/no/such/route", f.agent.url()))
        .header("x-request-id", "bad id with spaces")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let made = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(made.len(), 32, "{made}");
}

#[tokio::test]
async fn an_unreachable_broker_ends_the_server_after_its_reconnect_attempts() {
    // A port nothing listens on: every connection attempt is refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url =
        trove_guest_core::Secret::new(format!("amqp://guest:s3cret-broker@127.0.0.1:{port}/%2f"));
    let opts = crate::rpc::RpcOptions::new(url, crate::rpc::GuestInfo::new("g-1", None))
        .with_max_backoff(Duration::from_millis(1))
        .with_heartbeat(None)
        .with_reconnect_attempts(Some(3));
    let f = fixture(true).await;
    let server = crate::rpc::TroveRpcServer::new(f.strategy.clone(), opts);
    let e = tokio::time::timeout(Duration::from_secs(120), server.run(std::future::pending()))
        .await
        .expect("the bound ends the loop")
        .unwrap_err();
    match &e {
        crate::rpc::RpcError::BrokerUnreachable { attempts, .. } => assert_eq!(*attempts, 3),
        other => panic!("{other}"),
    }
    assert!(!e.to_string().contains("s3cret-broker"), "{e}");
}
