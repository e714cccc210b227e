//! A stock Trove client (`trove.guestagent.api.API`, Trove 26 from PyPI) drives our agents over
//! oslo.messaging on a real RabbitMQ broker, in secure and plain modes, in front of real
//! servers: snapshot on the master, replica built through `prepare(snapshot=...)`, writes
//! arrive, re-point with `attach_replica`, detach, demote; and the failure cases.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use trove_guest_agent::changes::FrontEnd;
use trove_guest_agent::rpc::{GuestInfo, RpcOptions, SecureKey, TroveRpcServer};
use trove_guest_agent::testing::sample::SampleDb;
use trove_guest_agent::testing::testbed::Node;
use trove_guest_core::{DatastoreKind, Secret};
use trove_guest_tests::trove::{RabbitBroker, TroveClient, TroveConductor, heartbeat_is};
use trove_guest_tests::{node, temp_store};

/// Serves `n`'s strategy over Trove's RPC, sharing the change lock of its HTTP agent;
/// `prepare_marker` for a guest Trove builds as a replica.
fn serve(
    broker: &RabbitBroker,
    n: &Node,
    key: Option<&str>,
    prepare_marker: Option<PathBuf>,
) -> tokio::task::JoinHandle<()> {
    let opts = RpcOptions::new(
        Secret::new(broker.amqp_url()),
        GuestInfo::new(n.instance_id.clone(), key),
    )
    .with_max_backoff(Duration::from_secs(2))
    .with_heartbeat(Some(HEARTBEAT))
    .with_prepare_marker(prepare_marker);
    let server = TroveRpcServer::with_changes(n.strategy.clone(), opts, n.changes.clone());
    tokio::spawn(async move {
        server
            .run(futures_pending())
            .await
            .expect("the RPC server runs");
    })
}

/// The agents' heartbeat period in these tests.
const HEARTBEAT: Duration = Duration::from_secs(2);
/// How long a conductor row may take: a few heartbeat periods.
const ROW_WITHIN: Duration = Duration::from_secs(60);

async fn futures_pending() {
    std::future::pending::<()>().await;
}

fn key() -> String {
    // A 32-character instance key, as Trove generates one.
    trove_guest_examples::control::new_instance_id().replace('-', "")
}

/// Waits (bounded) until the replica has applied the master's latest transaction.
async fn catch_up(master: &mut TroveClient, replica: &mut TroveClient) {
    let mut last = None;
    for _ in 0..60 {
        let txn = master
            .call("get_latest_txn_id", json!({}))
            .await
            .expect("get_latest_txn_id on the master");
        assert!(txn.is_string(), "a plain-string txn id: {txn}");
        match replica.call("wait_for_txn", json!({"txn": txn})).await {
            Ok(_) => return,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    panic!("the replica never caught up: {last:?}");
}

async fn next_reply(replies: &mut lapin::Consumer) -> String {
    use futures::StreamExt;
    let d = tokio::time::timeout(Duration::from_secs(60), replies.next())
        .await
        .expect("a reply within 60 s")
        .expect("reply stream open")
        .expect("reply delivery");
    assert_eq!(
        d.properties.content_type().as_ref().map(|c| c.as_str()),
        Some("application/json")
    );
    let outer: serde_json::Value = serde_json::from_slice(&d.data).expect("JSON reply");
    let inner: serde_json::Value =
        serde_json::from_str(outer["oslo.message"].as_str().expect("oslo.message"))
            .expect("inner JSON");
    inner["_msg_id"].as_str().expect("_msg_id").to_owned()
}

/// Sends the same call twice (same `_unique_id`) and a different one after it, straight over
/// AMQP: exactly one answer for the duplicated call, then the other's.
async fn duplicate_dropped(broker: &RabbitBroker, instance_id: &str) {
    use lapin::options::{BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions};
    use lapin::types::FieldTable;
    use lapin::{BasicProperties, Connection, ConnectionProperties};

    let conn = Connection::connect(&broker.amqp_url(), ConnectionProperties::default())
        .await
        .expect("connect to the broker");
    let ch = conn.create_channel().await.expect("channel");
    let reply_q = "reply_dupcheck0000000000000000000000";
    ch.queue_declare(
        reply_q,
        QueueDeclareOptions {
            auto_delete: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("reply queue");
    let mut replies = ch
        .basic_consume(
            reply_q,
            "",
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("consume replies");
    let send = |msg_id: &'static str, uid: &'static str| {
        let inner = json!({"method": "rpc_ping", "args": {}, "version": "1.0",
            "_msg_id": msg_id, "_reply_q": reply_q, "_timeout": null, "_unique_id": uid});
        json!({"oslo.version": "2.0", "oslo.message": inner.to_string()}).to_string()
    };
    let props = BasicProperties::default().with_content_type("application/json".into());
    let publish = |m: &'static str, u: &'static str| {
        let ch = ch.clone();
        let props = props.clone();
        let body = send(m, u);
        let key = format!("guestagent.{instance_id}");
        async move {
            ch.basic_publish(
                "trove",
                &key,
                BasicPublishOptions::default(),
                body.as_bytes(),
                props,
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
        }
    };
    // Twice back to back (the second while the first may still run), once more after its answer,
    // then a barrier: the only answers are the first one's and the barrier's.
    publish("dupmsg", "dupuid").await;
    publish("dupmsg", "dupuid").await;
    let mut seen = vec![next_reply(&mut replies).await];
    publish("dupmsg", "dupuid").await;
    publish("barrier", "barrieruid").await;
    loop {
        let id = next_reply(&mut replies).await;
        seen.push(id.clone());
        if id == "barrier" {
            break;
        }
    }
    assert_eq!(seen, ["dupmsg", "barrier"], "the duplicate was dropped");
    let _ = conn.close(200, "done").await;
}

/// Publishes one call straight over AMQP (as oslo.messaging would) and returns the inner
/// reply message.
async fn raw_call(
    broker: &RabbitBroker,
    instance_id: &str,
    mut inner: serde_json::Value,
) -> serde_json::Value {
    use futures::StreamExt;
    use lapin::options::{BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions};
    use lapin::types::FieldTable;
    use lapin::{BasicProperties, Connection, ConnectionProperties};

    let conn = Connection::connect(&broker.amqp_url(), ConnectionProperties::default())
        .await
        .expect("connect to the broker");
    let ch = conn.create_channel().await.expect("channel");
    let reply_q = "reply_rawcall000000000000000000000000";
    ch.queue_declare(
        reply_q,
        QueueDeclareOptions {
            auto_delete: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("reply queue");
    let mut replies = ch
        .basic_consume(
            reply_q,
            "",
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("consume replies");
    inner["_msg_id"] = json!("rawcall");
    inner["_reply_q"] = json!(reply_q);
    inner["_unique_id"] = json!("rawcalluid");
    let body = json!({"oslo.version": "2.0", "oslo.message": inner.to_string()}).to_string();
    ch.basic_publish(
        "trove",
        &format!("guestagent.{instance_id}"),
        BasicPublishOptions::default(),
        body.as_bytes(),
        BasicProperties::default().with_content_type("application/json".into()),
    )
    .await
    .expect("publish")
    .await
    .expect("confirm");
    let d = tokio::time::timeout(Duration::from_secs(60), replies.next())
        .await
        .expect("a reply within 60 s")
        .expect("reply stream open")
        .expect("reply delivery");
    let outer: serde_json::Value = serde_json::from_slice(&d.data).expect("JSON reply");
    let reply = serde_json::from_str(outer["oslo.message"].as_str().expect("oslo.message"))
        .expect("inner JSON");
    let _ = conn.close(200, "done").await;
    reply
}

/// A truncated ciphertext (the first 30 bytes of a real one) in secure mode is answered with the
/// failure Trove's client rebuilds as `GuestError`.
async fn truncated_ciphertext_is_a_guest_error(
    broker: &RabbitBroker,
    instance_id: &str,
    key: &str,
) {
    let key = SecureKey::from_instance_key(key);
    let whole = key.encrypt(&json!("0-1-1"));
    assert_eq!(whole.len(), 44, "IV and one block, base64: {whole}");
    let truncated = &whole[..40];
    let reply = raw_call(
        broker,
        instance_id,
        json!({"method": "wait_for_txn", "version": "1.0", "_timeout": null,
               "args": {"txn": truncated},
               "_context_context": key.encrypt(&json!({"user": "tester"}))}),
    )
    .await;
    assert_eq!(reply["_msg_id"], "rawcall");
    assert_eq!(reply["ending"], true);
    assert!(reply["result"].is_null(), "{reply}");
    let failure: serde_json::Value =
        serde_json::from_str(reply["failure"].as_str().expect("failure is a JSON string"))
            .expect("failure JSON");
    assert_eq!(failure["class"], "GuestError", "{failure}");
    assert_eq!(failure["module"], "trove.common.exception", "{failure}");
    // Refused for the ciphertext, not for the call it carried.
    assert!(
        failure["message"]
            .as_str()
            .is_some_and(|m| m.contains("cannot decrypt")),
        "{failure}"
    );
}

/// The broker is restarted while a call runs on the replica (a `wait_for_txn` for a
/// transaction the master has not written yet, so it cannot finish before the restart). The
/// call stays unacknowledged while it runs; once the transaction arrives the agent answers on
/// its new connection, or (if the reply cannot reach the caller) Trove's client times out and
/// the retried call answers. Returns whether the first answer was delivered.
async fn broker_restart_mid_call(
    broker: &mut RabbitBroker,
    m: &mut TroveClient,
    r: TroveClient,
    replica_id: &str,
    mdb: &SampleDb,
) -> (TroveClient, bool) {
    let latest = m
        .call("get_latest_txn_id", json!({}))
        .await
        .expect("get_latest_txn_id");
    let latest = latest.as_str().expect("a GTID string");
    let (prefix, seq) = latest.rsplit_once('-').expect("a domain-server-seq GTID");
    let next = format!("{prefix}-{}", seq.parse::<u64>().expect("seq") + 1);
    let mut r = r;
    let call = tokio::spawn(async move {
        let res = r.call("wait_for_txn", json!({"txn": next})).await;
        (r, res)
    });
    let queue = format!("guestagent.{replica_id}");
    let mut running = false;
    for _ in 0..60 {
        if broker.unacked(&queue).await == Some(1) {
            running = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        running,
        "the call is delivered and stays unacknowledged while it runs"
    );
    broker.restart().await;
    mdb.insert_rows(900..901)
        .await
        .expect("the transaction the call waits for");
    let (mut r, first) = call.await.expect("the call's task");
    let delivered = match first {
        Ok(v) => {
            assert_eq!(v, serde_json::Value::Null);
            true
        }
        Err(e) => {
            assert!(
                e.class.contains("Timeout"),
                "only a lost reply may fail it: {e:?}"
            );
            let mut again = None;
            for _ in 0..30 {
                match r.call("wait_for_txn", json!({"txn": latest})).await {
                    Ok(v) => {
                        again = Some(v);
                        break;
                    }
                    Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
                }
            }
            assert_eq!(
                again,
                Some(serde_json::Value::Null),
                "the retried call answers"
            );
            false
        }
    };
    (r, delivered)
}

/// While a change holds the shared change lock through the HTTP front end, Trove's change calls
/// get a `GuestError` saying busy (not queued), reads still answer, and health names the change.
async fn http_change_makes_rpc_changes_busy(node: &Node, r: &mut TroveClient) {
    let ticket = node
        .changes
        .try_begin("attach_replication_slave", FrontEnd::Http, "held-by-test")
        .expect("the slot is free");
    let e = r
        .call("make_read_only", json!({"read_only": true}))
        .await
        .expect_err("busy");
    assert_eq!(e.class, "GuestError", "{e:?}");
    assert!(
        e.message.contains("busy: attach_replication_slave"),
        "{e:?}"
    );
    r.call("get_latest_txn_id", json!({}))
        .await
        .expect("reads answer during a change");
    let (status, health) = node.client.health().await.expect("health");
    assert_eq!(status, 200);
    assert_eq!(
        health.change.map(|c| c.operation),
        Some("attach_replication_slave".to_owned())
    );
    drop(ticket);
}

async fn repoint(
    m: &mut TroveClient,
    r: &mut TroveClient,
    mdb: &SampleDb,
    rows: std::ops::Range<u64>,
) {
    let ctx = m
        .call("get_replica_context", json!({}))
        .await
        .expect("get_replica_context");
    r.call(
        "attach_replica",
        json!({"replica_info": ctx, "slave_config": "[mysqld]\nread_only = on\n"}),
    )
    .await
    .expect("attach_replica (re-point)");
    mdb.insert_rows(rows).await.expect("rows after re-point");
    catch_up(m, r).await;
}

/// Trove's switchover (`promote-to-replica-source`), in the order Trove's taskmanager calls its
/// guests (`promote_to_replica_source`): the old master made read-only, the candidate caught
/// up, detached for failover, enabled as master and made writable; every other replica
/// detached for failover and re-pointed (`attach_replica` with the new master's context,
/// `restart=True`); the old master re-pointed last (`restart=False`) and then demoted.
async fn trove_promote(
    old: &mut TroveClient,
    candidate: &mut TroveClient,
    others: &mut [&mut TroveClient],
) {
    old.call("make_read_only", json!({"read_only": true}))
        .await
        .expect("promote: old master read-only");
    let txn = old
        .call("get_latest_txn_id", json!({}))
        .await
        .expect("promote: old master's latest txn");
    candidate
        .call("wait_for_txn", json!({"txn": txn}))
        .await
        .expect("promote: the candidate catches up");
    enable_survivor(candidate).await;
    for other in others.iter_mut() {
        follow_new_master(candidate, other, true).await;
    }
    follow_new_master(candidate, old, false).await;
    old.call("demote_replication_master", json!({}))
        .await
        .expect("promote: demote the old master (a replica by now)");
}

/// Trove's failover (`eject-replica-source`) in the taskmanager's order: each replica's
/// `get_last_txn` (`[source, txn]`; all must name one source), the most current one detached
/// for failover, enabled as master and made writable, every other one detached for failover
/// and re-pointed at it; the lost master is not called. Returns the new master's index.
async fn trove_eject(replicas: &mut [&mut TroveClient]) -> usize {
    let mut last = Vec::new();
    for r in replicas.iter_mut() {
        let t = r
            .call("get_last_txn", json!({}))
            .await
            .expect("eject: get_last_txn");
        assert_eq!(t.as_array().map(Vec::len), Some(2), "{t}");
        last.push(t);
    }
    // Trove refuses a failover when the replicas name different sources (PostgreSQL names
    // none: all null).
    let sources: std::collections::BTreeSet<String> =
        last.iter().map(|t| t[0].to_string()).collect();
    assert_eq!(sources.len(), 1, "one source: {last:?}");
    // Trove sorts on the txn, highest first (ours order as positions, also as texts).
    let winner = (0..last.len())
        .max_by(|&a, &b| compare_txn(&last[a][1], &last[b][1]))
        .expect("a replica");
    let (head, tail) = replicas.split_at_mut(winner);
    let (candidate, tail) = tail.split_first_mut().expect("the winner");
    enable_survivor(candidate).await;
    for other in head.iter_mut().chain(tail.iter_mut()) {
        follow_new_master(candidate, other, false).await;
    }
    winner
}

fn compare_txn(a: &Value, b: &Value) -> std::cmp::Ordering {
    match (a.as_u64(), b.as_u64()) {
        (Some(x), Some(y)) => x.cmp(&y),
        _ => a.to_string().cmp(&b.to_string()),
    }
}

/// The candidate detached for failover, enabled as master and made writable.
async fn enable_survivor(candidate: &mut TroveClient) {
    candidate
        .call("detach_replica", json!({"for_failover": true}))
        .await
        .expect("detach the candidate for failover");
    candidate
        .call(
            "enable_as_master",
            json!({"replica_source_config": "[mysqld]\nlog_bin = on\n"}),
        )
        .await
        .expect("enable the candidate as master");
    candidate
        .call("make_read_only", json!({"read_only": false}))
        .await
        .expect("the new master writable");
}

/// A replica of the old master (or the old master itself, `restart` false, not detached first)
/// made to follow the new one, as Trove's `BuiltInstanceTasks.attach_replica` does it.
async fn follow_new_master(master: &mut TroveClient, follower: &mut TroveClient, detach: bool) {
    if detach {
        follower
            .call("detach_replica", json!({"for_failover": true}))
            .await
            .expect("detach a replica for failover");
    }
    let ctx = master
        .call("get_replica_context", json!({}))
        .await
        .expect("the new master's context");
    follower
        .call(
            "attach_replica",
            json!({"replica_info": ctx, "slave_config": "[mysqld]\nread_only = on\n",
                   "restart": detach}),
        )
        .await
        .expect("follow the new master");
}

async fn trove_flow(kind: DatastoreKind, secure: bool) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let mut broker = RabbitBroker::start().await;
    let store = temp_store();
    let master = node(kind, 1, &store, "trove-m").await;
    let replica = node(kind, 2, &store, "trove-r").await;
    let other = node(kind, 3, &store, "trove-o").await;
    let (mkey, rkey, okey) = if secure {
        (Some(key()), Some(format!("{}x", &key()[1..])), Some(key()))
    } else {
        (None, None, None)
    };
    let url = broker.transport_url();
    // Trove's own conductor, with the backup record Trove makes for the replication snapshot.
    let backup_id = trove_guest_examples::control::new_instance_id();
    let other_backup_id = trove_guest_examples::control::new_instance_id();
    let mut conductor = TroveConductor::start(
        &url,
        &[
            (&master.instance_id, mkey.as_deref()),
            (&replica.instance_id, rkey.as_deref()),
            (&other.instance_id, okey.as_deref()),
        ],
        &[
            (&backup_id, &master.instance_id),
            (&other_backup_id, &master.instance_id),
        ],
    )
    .await;
    // The replica is a guest Trove builds: silent to the conductor until its prepare succeeds.
    let marker_dir = tempfile::tempdir().expect("marker dir");
    let marker = marker_dir.path().join("guest.prepared");
    let _ms = serve(&broker, &master, mkey.as_deref(), None);
    let _rs = serve(&broker, &replica, rkey.as_deref(), Some(marker.clone()));
    let _os = serve(&broker, &other, okey.as_deref(), None);
    let mut m = TroveClient::start(&url, &master.instance_id, mkey.as_deref()).await;
    let mut r = TroveClient::start(&url, &replica.instance_id, rkey.as_deref()).await;
    let mut o = TroveClient::start(&url, &other.instance_id, okey.as_deref()).await;
    // The replica's agent serves (its heartbeat loop starts when it does)...
    assert_eq!(
        r.call("rpc_ping", json!({}))
            .await
            .expect("ping the replica"),
        json!(true)
    );
    // ...and the servers that are the operator's say healthy from the start. Two more of the
    // master's heartbeats span a whole heartbeat period of the replica, which sends none.
    conductor
        .wait_for(ROW_WITHIN, |r| {
            heartbeat_is(r, &other.instance_id, "healthy")
        })
        .await;
    for _ in 0..2 {
        conductor
            .wait_for(ROW_WITHIN, |r| {
                heartbeat_is(r, &master.instance_id, "healthy")
            })
            .await;
    }
    assert_eq!(
        conductor.statuses(&replica.instance_id),
        Vec::<String>::new(),
        "no heartbeat before prepare"
    );

    assert_eq!(
        m.call("rpc_ping", json!({})).await.expect("ping"),
        json!(true)
    );
    assert_eq!(
        m.call("backup_required_for_replication", json!({}))
            .await
            .expect("backup_required_for_replication"),
        json!(true)
    );

    let mdb = SampleDb::connect(kind, &master.server().handle().admin)
        .await
        .expect("connect to the master");
    mdb.create_schema().await.expect("schema");
    mdb.load(500, |_| {})
        .await
        .expect("rows before the snapshot");

    let snapshot_info = json!({
        "id": backup_id, "instance_id": master.instance_id, "name": "snap",
        "storage_driver": "swift", "swift_url": null,
        "datastore": kind.to_string(), "datastore_version": "test", "replica_number": 1,
    });
    let snap = m
        .call(
            "get_replication_snapshot",
            json!({"snapshot_info": snapshot_info, "replica_source_config": "[mysqld]\nlog_bin = on\n"}),
        )
        .await
        .expect("get_replication_snapshot through Trove");
    assert_eq!(snap["dataset"]["snapshot_id"], json!(backup_id));
    assert!(snap["dataset"]["dataset_size"].is_f64(), "{snap}");
    // Trove's backup record went BUILDING, then COMPLETED with the snapshot's href and size (so
    // Trove may delete it once the replica is built).
    let done = conductor
        .wait_for(ROW_WITHIN, |r| {
            r["update_backup"]["id"] == json!(backup_id)
                && r["update_backup"]["state"] == "COMPLETED"
        })
        .await;
    let states: Vec<&Value> = conductor
        .seen
        .iter()
        .filter(|r| r["update_backup"]["id"] == json!(backup_id))
        .map(|r| &r["update_backup"]["state"])
        .collect();
    assert_eq!(states, [&json!("BUILDING"), &json!("COMPLETED")]);
    let row = &done["update_backup"];
    assert_eq!(row["instance_id"], json!(master.instance_id));
    assert_eq!(
        row["location"],
        snap["trove_guest"]["dataset"]["snapshot_href"]
    );
    assert_eq!(row["backup_type"], "full");
    assert!(row["size"].as_f64().is_some_and(|s| s > 0.0), "{row}");

    // A prepare that fails (a snapshot dict no trove-guest agent made): Trove sees the build
    // start and fail, and no more.
    r.call(
        "prepare",
        json!({"memory_mb": 512, "packages": [], "databases": [], "users": [],
               "snapshot": {"dataset": {"snapshot_id": backup_id}}}),
    )
    .await
    .expect("prepare cast");
    conductor
        .wait_for(ROW_WITHIN, |r| {
            heartbeat_is(r, &replica.instance_id, "failed to spawn")
        })
        .await;
    assert_eq!(
        conductor.statuses(&replica.instance_id),
        ["building", "failed to spawn"]
    );
    assert!(!marker.exists(), "a failed prepare leaves no marker");

    // The replica is built through prepare(snapshot=...), a cast.
    r.call(
        "prepare",
        json!({"memory_mb": 512, "packages": [], "databases": [], "users": [],
               "snapshot": snap}),
    )
    .await
    .expect("prepare cast");
    conductor
        .wait_for(ROW_WITHIN, |r| {
            heartbeat_is(r, &replica.instance_id, "building")
        })
        .await;
    catch_up(&mut m, &mut r).await;
    conductor
        .wait_for(ROW_WITHIN, |r| {
            heartbeat_is(r, &replica.instance_id, "healthy")
        })
        .await;
    assert!(marker.exists(), "a successful prepare is remembered");

    // A second replica, from a second snapshot (Trove takes one per replica build).
    let mut info = snapshot_info.clone();
    info["id"] = json!(other_backup_id);
    let snap2 = m
        .call(
            "get_replication_snapshot",
            json!({"snapshot_info": info, "replica_source_config": "[mysqld]\nlog_bin = on\n"}),
        )
        .await
        .expect("a second snapshot");
    o.call(
        "prepare",
        json!({"memory_mb": 512, "packages": [], "databases": [], "users": [],
               "snapshot": snap2}),
    )
    .await
    .expect("prepare cast (second replica)");
    catch_up(&mut m, &mut o).await;
    conductor
        .wait_for(ROW_WITHIN, |r| {
            r["update_backup"]["id"] == json!(other_backup_id)
                && r["update_backup"]["state"] == "COMPLETED"
        })
        .await;

    mdb.insert_rows(500..600).await.expect("rows after attach");
    catch_up(&mut m, &mut r).await;
    let rdb = SampleDb::connect(kind, &replica.server().handle().admin)
        .await
        .expect("connect to the replica");
    assert_eq!(
        rdb.fingerprint().await.expect("replica"),
        mdb.fingerprint().await.expect("master"),
        "replica data equals master data"
    );
    let last = r
        .call("get_last_txn", json!({}))
        .await
        .expect("get_last_txn");
    assert!(last.is_array(), "{last}");

    // Failure cases: unknown method, missing argument, wrong key; the agent keeps serving.
    let e = r
        .call("_raw:no_such_method", json!({}))
        .await
        .expect_err("unknown method");
    assert_eq!(e.class, "GuestError", "{e:?}");
    let e = r
        .call("_raw:wait_for_txn", json!({}))
        .await
        .expect_err("missing argument");
    assert_eq!(e.class, "GuestError", "{e:?}");
    if secure {
        truncated_ciphertext_is_a_guest_error(
            &broker,
            &replica.instance_id,
            rkey.as_deref().expect("the replica's key"),
        )
        .await;
        let e = r
            .call("_truncated:wait_for_txn", json!({"txn": "0-1-1"}))
            .await
            .expect_err("truncated ciphertexts from Trove's client");
        assert_eq!(e.class, "GuestError", "{e:?}");
        assert!(e.message.contains("cannot decrypt"), "{e:?}");
        let mut wrong = TroveClient::start(&url, &replica.instance_id, Some(&key())).await;
        let e = wrong
            .call("rpc_ping", json!({}))
            .await
            .expect_err("wrong key");
        assert_eq!(e.class, "GuestError", "{e:?}");
        wrong.stop().await;
    }
    assert_eq!(
        r.call("rpc_ping", json!({})).await.expect("still serving"),
        json!(true)
    );

    if !secure {
        duplicate_dropped(&broker, &replica.instance_id).await;
    }
    http_change_makes_rpc_changes_busy(&replica, &mut r).await;

    // Broker restarted: the agents reconnect and serve again. MariaDB: in the middle of a call.
    if kind == DatastoreKind::Postgresql {
        broker.restart().await;
    } else {
        let (again, delivered) =
            broker_restart_mid_call(&mut broker, &mut m, r, &replica.instance_id, &mdb).await;
        r = again;
        eprintln!("broker restarted mid-call: reply delivered on the new connection: {delivered}");
    }
    let mut ping = None;
    for _ in 0..30 {
        match m.call("rpc_ping", json!({})).await {
            Ok(v) => {
                ping = Some(v);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
    assert_eq!(
        ping,
        Some(json!(true)),
        "the agent serves after a broker restart"
    );
    let mut ping = None;
    for _ in 0..30 {
        match r.call("rpc_ping", json!({})).await {
            Ok(v) => {
                ping = Some(v);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
    assert_eq!(ping, Some(json!(true)));

    // Re-point a replica with attach_replica and the master's context while it replicates.
    if kind == DatastoreKind::Postgresql {
        repoint(&mut m, &mut r, &mdb, 600..650).await;
    }

    // Trove's switchover: the replica takes the master's place; the other replica (detached
    // for failover first: it only stops receiving) and the old master (fenced by
    // make_read_only) follow it without a rewind.
    trove_promote(&mut m, &mut r, &mut [&mut o]).await;
    rdb.insert_rows(700..750)
        .await
        .expect("rows on the new master");
    catch_up(&mut r, &mut m).await;
    catch_up(&mut r, &mut o).await;
    let odb = SampleDb::connect(kind, &other.server().handle().admin)
        .await
        .expect("connect to the other replica");
    let want = rdb.fingerprint().await.expect("new master");
    assert_eq!(mdb.fingerprint().await.expect("old master"), want);
    assert_eq!(odb.fingerprint().await.expect("other replica"), want);

    // Trove's failover: the new master is lost (its server stops, and its heartbeats say so);
    // the most current of its replicas takes over and the other follows it.
    rdb.close().await;
    replica
        .server()
        .stop()
        .await
        .expect("stop the new master's server");
    conductor
        .wait_for(ROW_WITHIN, |r| {
            heartbeat_is(r, &replica.instance_id, "shutdown")
        })
        .await;
    let winner = trove_eject(&mut [&mut m, &mut o]).await;
    let (new_db, new_client, follower) = if winner == 0 {
        (&mdb, &mut m, &mut o)
    } else {
        (&odb, &mut o, &mut m)
    };
    new_db
        .insert_rows(750..800)
        .await
        .expect("rows on the master after Trove's failover");
    catch_up(new_client, follower).await;
    assert_eq!(
        mdb.fingerprint().await.expect("first master"),
        odb.fingerprint().await.expect("other"),
        "after Trove's failover the survivors hold the same data"
    );

    // The follower detached (standalone; the master keeps no trace of it), the master demoted.
    let detached = follower
        .call("detach_replica", json!({"for_failover": false}))
        .await
        .expect("detach_replica");
    assert!(detached.get("replication_user").is_some(), "{detached}");
    new_client
        .call(
            "_raw:cleanup_source_on_replica_detach",
            json!({"replica_info": detached}),
        )
        .await
        .expect("cleanup_source_on_replica_detach");
    let user = detached["replication_user"]
        .as_str()
        .expect("a replication user");
    assert!(
        user.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
        "{user}"
    );
    let accounts = match kind {
        DatastoreKind::Postgresql => {
            format!("SELECT count(*) FROM pg_roles WHERE rolname = '{user}'")
        }
        _ => format!("SELECT COUNT(*) FROM mysql.user WHERE user = '{user}'"),
    };
    assert_eq!(
        new_db.rows_text(&accounts).await.expect("accounts"),
        [["0"]],
        "the master keeps no account of the detached replica"
    );
    new_client
        .call("demote_replication_master", json!({}))
        .await
        .expect("demote_replication_master");
    new_client
        .call("make_read_only", json!({"read_only": false}))
        .await
        .expect("make_read_only");
    odb.close().await;

    m.stop().await;
    r.stop().await;
    o.stop().await;
    conductor.stop().await;
    mdb.close().await;
    master.shutdown().await;
    replica.shutdown().await;
    other.shutdown().await;
    broker.stop().await;
}

/// One flow at a time: each runs a broker, two servers, two agents and Trove's client, which is
/// all two cores can carry without turning bounded waits into flakes.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn trove_drives_mariadb_secure() {
    let _one = ONE_AT_A_TIME.lock().await;
    trove_flow(DatastoreKind::Mariadb, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn trove_drives_mariadb_plain() {
    let _one = ONE_AT_A_TIME.lock().await;
    trove_flow(DatastoreKind::Mariadb, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn trove_drives_postgresql_secure() {
    let _one = ONE_AT_A_TIME.lock().await;
    trove_flow(DatastoreKind::Postgresql, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn trove_drives_postgresql_plain() {
    let _one = ONE_AT_A_TIME.lock().await;
    trove_flow(DatastoreKind::Postgresql, false).await;
}
