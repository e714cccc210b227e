//! The agent is observable: JSON log lines of a real request carry its span's fields, and the
//! health endpoint tells whether the real server answers.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use trove_guest_agent::api;
use trove_guest_agent::logging::{self, LogFormat};
use trove_guest_agent::testing::testbed::{Node, TestServer};
use trove_guest_core::testkit::CapturedLog;
use trove_guest_core::{DatastoreKind, LocalSnapshotStore, SnapshotStore};

/// The JSON log lines `captured` holds.
fn json_lines(captured: &CapturedLog) -> Vec<Value> {
    String::from_utf8(captured.bytes())
        .expect("UTF-8 log")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {e}: {l}")))
        .collect()
}

async fn mariadb_node(store: &tempfile::TempDir, name: &str) -> Node {
    let server = TestServer::start(DatastoreKind::Mariadb, 1)
        .await
        .expect("start MariaDB (apt-get install mariadb-server)");
    let store: Arc<dyn SnapshotStore> =
        Arc::new(LocalSnapshotStore::new(store.path()).expect("store"));
    Node::serve(server, store, name, "3f1c9a7e-0d4b-4c55-9a53-6b0f6e2d1a10")
        .await
        .expect("serve it")
}

fn span<'a>(line: &'a Value, name: &str) -> Option<&'a Value> {
    line["spans"].as_array()?.iter().find(|s| s["name"] == name)
}

fn finished<'a>(lines: &'a [Value], message: &str, path_or_op: &str) -> &'a Value {
    lines
        .iter()
        .find(|l| {
            l["fields"]["message"] == message
                && (span(l, "http_request").is_some_and(|s| s["path"] == path_or_op)
                    || span(l, "change").is_some_and(|s| s["operation"] == path_or_op))
        })
        .unwrap_or_else(|| panic!("no {message:?} line for {path_or_op}: {lines:#?}"))
}

// The process's subscriber (the binary installs the same one): a thread-scoped one would miss
// events whose interest another test's thread cached first. Only this test installs one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_log_lines_of_a_real_request_carry_the_span_fields_and_its_outcome() {
    let captured = CapturedLog::default();
    let writer = captured.clone();
    let sub = logging::subscriber(
        LogFormat::Json,
        logging::filter(Some("info")).unwrap(),
        move || writer.clone(),
    );
    tracing::subscriber::set_global_default(sub).expect("the only subscriber of this test binary");
    let dir = tempfile::tempdir().unwrap();
    let node = mariadb_node(&dir, "observed").await;

    node.client
        .status()
        .await
        .expect("status of the real server");
    let resp = reqwest::Client::new()
        .put(format!("{}{}", node.url(), api::READ_ONLY))
        .header("x-request-id", "req-ro-1")
        .bearer_auth(node.token().expose())
        .json(&serde_json::json!({"read_only": false}))
        .send()
        .await
        .expect("make_read_only");
    assert_eq!(resp.status(), 200);
    node.shutdown().await;

    let lines = json_lines(&captured);
    let status = finished(&lines, "request finished", api::STATUS);
    let req = span(status, "http_request").unwrap();
    assert_eq!(req["method"], "GET");
    assert_eq!(req["instance_id"], "3f1c9a7e-0d4b-4c55-9a53-6b0f6e2d1a10");
    assert_eq!(req["request_id"].as_str().map(str::len), Some(32), "{req}");
    assert_eq!(status["fields"]["status"], 200);
    assert_eq!(status["fields"]["outcome"], "ok");
    assert!(status["fields"]["duration_ms"].is_u64(), "{status}");
    assert_eq!(status["level"], "INFO");

    // The change: its own span below the request's, one end line with outcome and duration.
    let change = finished(&lines, "change finished", "make_read_only");
    let c = span(change, "change").unwrap();
    assert_eq!(c["front_end"], "http");
    assert_eq!(c["operation_id"], "req-ro-1");
    assert_eq!(c["instance_id"], "3f1c9a7e-0d4b-4c55-9a53-6b0f6e2d1a10");
    assert_eq!(
        span(change, "http_request").unwrap()["request_id"],
        "req-ro-1"
    );
    assert_eq!(change["fields"]["outcome"], "ok");
    assert!(change["fields"]["duration_ms"].is_u64(), "{change}");
    let put = finished(&lines, "request finished", api::READ_ONLY);
    assert_eq!(put["fields"]["status"], 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_200_while_the_server_answers_and_503_once_it_is_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let node = mariadb_node(&dir, "health").await;
    let (status, h) = node.client.health().await.expect("health");
    assert_eq!(status, 200, "{h:?}");
    assert_eq!(h.server, api::ANSWERING);
    assert!(h.change.is_none());
    node.server()
        .handle()
        .service
        .stop()
        .await
        .expect("stop the server");
    let (status, h) = tokio::time::timeout(Duration::from_secs(60), node.client.health())
        .await
        .expect("health answers within its bound")
        .expect("health");
    assert_eq!(status, 503, "{h:?}");
    assert_eq!(h.server, api::NOT_ANSWERING);
    assert!(h.problem.is_some());
    node.shutdown().await;
}
