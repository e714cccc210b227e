//! The HTTP agent, serving a real MariaDB strategy, rejects bad requests with precise errors and
//! changes nothing: malformed JSON, an unknown datastore, a snapshot href outside its store, a
//! snapshot of another datastore, and a second replication change while one runs.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::{Notify, Semaphore};
use trove_guest_agent::api::{self, AttachQuery, SnapshotCall, kinds};
use trove_guest_agent::testing::testbed::{Node, TestServer};
use trove_guest_core::{
    DatastoreKind, Result, Role, ServiceControl, ServiceStatus, SnapshotDocument,
};
use trove_guest_examples::control;
use trove_guest_tests::{TempStore, node, temp_store};

/// A real master, a real replica and a real snapshot for the replica.
async fn master_and_snapshot(store: &TempStore) -> (Node, SnapshotDocument) {
    let master = node(DatastoreKind::Mariadb, 1, store, "products-m").await;
    master.client.enable_master().await.expect("enable master");
    let doc = master
        .client
        .snapshot(&SnapshotCall::default(), &mut |_| {})
        .await
        .expect("snapshot");
    (master, doc)
}

async fn assert_still_standalone(replica: &Node) {
    let st = replica.client.status().await.expect("status");
    assert_eq!(
        st.role,
        Some(Role::Standalone),
        "a rejected request changed nothing"
    );
}

#[tokio::test]
async fn malformed_json_is_400_malformed_json() {
    let store = temp_store();
    let replica = node(DatastoreKind::Mariadb, 2, &store, "products-s1").await;
    let (status, body) = replica
        .client
        .post_raw(
            api::ATTACH,
            r#"{"master": {"host": "127.0.0.1", "port": 3306}, "dataset": "#,
        )
        .await
        .unwrap();
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["kind"], kinds::MALFORMED_JSON);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("malformed JSON"),
        "{body}"
    );
    let (status, body) = replica
        .client
        .post_raw(api::CLEANUP, "not json")
        .await
        .unwrap();
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["kind"], kinds::MALFORMED_JSON);
    assert_still_standalone(&replica).await;
}

#[tokio::test]
async fn unknown_datastore_is_422_naming_the_field_and_value() {
    let store = temp_store();
    let (master, doc) = master_and_snapshot(&store).await;
    let replica = node(DatastoreKind::Mariadb, 2, &store, "products-s1").await;
    let mut v = serde_json::to_value(&doc).unwrap();
    v["dataset"]["datastore"] = "mongodb".into();
    let (status, body) = replica
        .client
        .post_raw(api::ATTACH, v.to_string())
        .await
        .unwrap();
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["kind"], kinds::UNKNOWN_DATASTORE);
    assert_eq!(body["error"]["field"], "dataset.datastore");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("mongodb"),
        "{body}"
    );
    assert_still_standalone(&replica).await;
    drop(master);
}

#[tokio::test]
async fn snapshot_href_outside_the_store_is_422_and_nothing_is_read() {
    let store = temp_store();
    let (master, mut doc) = master_and_snapshot(&store).await;
    let replica = node(DatastoreKind::Mariadb, 2, &store, "products-s1").await;
    // The same file name, one directory up: outside the configured store.
    let name = doc
        .dataset
        .snapshot_href
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    let parent = store.dir.path().parent().unwrap().display().to_string();
    doc.dataset.snapshot_href = format!("file://{parent}/{name}");
    let err = replica
        .client
        .attach(&doc, &AttachQuery::default(), &mut |_| {})
        .await
        .expect_err("an href outside the store is refused");
    match err {
        trove_guest_agent::client::ClientError::Api { status, error } => {
            assert_eq!(status, 422);
            assert_eq!(error.kind, kinds::HREF_OUTSIDE_STORE);
            assert_eq!(error.field.as_deref(), Some("dataset.snapshot_href"));
            assert!(error.message.contains(&parent), "{}", error.message);
        }
        other => panic!("expected a 422, got {other}"),
    }
    assert_still_standalone(&replica).await;
    drop(master);
}

#[tokio::test]
async fn snapshot_of_another_datastore_is_422_wrong_datastore() {
    let store = temp_store();
    let (master, mut doc) = master_and_snapshot(&store).await;
    let replica = node(DatastoreKind::Mariadb, 2, &store, "products-s1").await;
    doc.dataset.datastore = DatastoreKind::Postgresql;
    let (status, body) = replica
        .client
        .post_raw(api::ATTACH, serde_json::to_vec(&doc).unwrap())
        .await
        .unwrap();
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["kind"], kinds::WRONG_DATASTORE);
    assert_still_standalone(&replica).await;
    drop(master);
}

/// The real service control, with `stop` held at a gate so a change is deterministically in
/// progress while the test sends a second one.
#[derive(Debug)]
struct GatedService {
    inner: Arc<dyn ServiceControl>,
    reached: Arc<Notify>,
    gate: Arc<Semaphore>,
}

#[async_trait]
impl ServiceControl for GatedService {
    async fn start(&self) -> Result<()> {
        self.inner.start().await
    }
    async fn stop(&self) -> Result<()> {
        self.reached.notify_one();
        let _permit = self.gate.acquire().await.expect("gate");
        self.inner.stop().await
    }
    async fn status(&self) -> Result<ServiceStatus> {
        self.inner.status().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_change_while_an_attach_runs_is_409_busy_and_the_attach_completes() {
    let store = temp_store();
    let (master, doc) = master_and_snapshot(&store).await;
    let server = TestServer::start(DatastoreKind::Mariadb, 2)
        .await
        .expect("start the replica server");
    let reached = Arc::new(Notify::new());
    let gate = Arc::new(Semaphore::new(0));
    let mut handle = server.handle();
    handle.service = Arc::new(GatedService {
        inner: handle.service.clone(),
        reached: reached.clone(),
        gate: gate.clone(),
    });
    let strategy = server
        .strategy_with(handle, store.store.clone())
        .expect("strategy");
    let replica = Node::serve_strategy(
        server,
        strategy,
        store.store.clone(),
        "products-s1",
        &control::new_instance_id(),
    )
    .await
    .expect("serve");

    let client = replica.client.clone();
    let doc2 = doc.clone();
    let attach = tokio::spawn(async move {
        client
            .attach(&doc2, &AttachQuery::default(), &mut |_| {})
            .await
    });
    // The attach has reached the server stop: it holds the agent's change slot now.
    reached.notified().await;

    let busy = |e: trove_guest_agent::client::ClientError| match e {
        trove_guest_agent::client::ClientError::Api { status, error } => {
            assert_eq!(status, 409);
            assert_eq!(error.kind, kinds::BUSY);
            assert_eq!(error.running.as_deref(), Some("attach_replication_slave"));
            assert!(
                error
                    .message
                    .starts_with("busy: attach_replication_slave is already in progress"),
                "{}",
                error.message
            );
        }
        other => panic!("expected 409 busy, got {other}"),
    };
    busy(
        replica
            .client
            .detach()
            .await
            .expect_err("detach while attaching"),
    );
    busy(
        replica
            .client
            .attach(&doc, &AttachQuery::default(), &mut |_| {})
            .await
            .expect_err("a second attach while attaching"),
    );
    busy(
        replica
            .client
            .make_read_only(false)
            .await
            .expect_err("read-only while attaching"),
    );
    let op = replica.client.operation().await.expect("operation view");
    assert_eq!(op.running.as_deref(), Some("attach_replication_slave"));
    // Read-only calls are still served.
    replica
        .client
        .status()
        .await
        .expect("status while attaching");

    gate.add_permits(1000);
    attach
        .await
        .expect("attach task")
        .expect("the first attach completes normally");
    let st = replica.client.status().await.expect("status");
    assert_eq!(st.role, Some(Role::Replica));
    replica
        .client
        .detach()
        .await
        .expect("the slot is free again");
    drop(master);
}
