//! Switchover and failover on live PostgreSQL 15: a primary and two standbys.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use trove_guest_core::failover::{
    FailoverOptions, FenceOptions, Member, ReplicaContextOptions, RepointOptions,
    SwitchoverOptions, failover, switchover,
};
use trove_guest_core::{
    AttachRequest, ErrorKind, ReplicationStrategy, ReplicationStrategyExt, Role, ServiceControl,
};
use trove_guest_postgres::PostgresStrategy;
use trove_guest_postgres::testkit::{ClusterInit, PostgresOptions, PostgresServer};

const WAIT: Duration = Duration::from_secs(60);
const IDS: [&str; 3] = ["m1", "r2", "r3"];

struct Cluster {
    _dir: tempfile::TempDir,
    servers: Vec<Arc<PostgresServer>>,
    strategies: Vec<Arc<PostgresStrategy>>,
}

impl Cluster {
    fn member(&self, i: usize) -> Member<'_> {
        Member::new(IDS[i], &*self.strategies[i])
    }
}

/// Server 1 primary (its own system identifier, rows 0..100), servers 2 and 3 standbys from
/// snapshots.
async fn cluster() -> Cluster {
    common::init_tracing();
    let (dir, store) = common::local_store();
    let (a, b, c) = tokio::join!(
        PostgresServer::start(PostgresOptions::new().with_init(ClusterInit::Fresh)),
        PostgresServer::start(PostgresOptions::new().with_server_id(2)),
        PostgresServer::start(PostgresOptions::new().with_server_id(3))
    );
    let servers = vec![
        Arc::new(a.unwrap()),
        Arc::new(b.unwrap()),
        Arc::new(c.unwrap()),
    ];
    let strategies: Vec<_> = servers
        .iter()
        .map(|s| common::strategy(s, store.clone()))
        .collect();
    common::create_schema(&servers[0]).await.unwrap();
    common::insert_rows(&servers[0], 0..100).await.unwrap();
    for i in 1..3 {
        let doc = common::master_snapshot(&strategies[0], &format!("snap{i}")).await;
        strategies[i]
            .attach_replication_slave(&doc, &AttachRequest::new().with_timeout(WAIT))
            .await
            .unwrap();
    }
    Cluster {
        _dir: dir,
        servers,
        strategies,
    }
}

/// Inserts one row per statement (ids from `from`) until a write fails or `stop` is set;
/// returns the ids the server acknowledged.
async fn write_until_refused(
    server: Arc<PostgresServer>,
    from: u64,
    stop: Arc<AtomicBool>,
) -> Vec<u64> {
    let mut acked = Vec::new();
    let mut id = from;
    while !stop.load(Ordering::SeqCst) {
        let sql = format!("INSERT INTO accounts VALUES ({id}, 'w{id}', {id})");
        match tokio::time::timeout(WAIT, server.query(&sql)).await {
            Ok(Ok(_)) => acked.push(id),
            _ => break,
        }
        id += 1;
    }
    acked
}

async fn ids(server: &PostgresServer) -> Vec<u64> {
    server
        .query("SELECT id FROM accounts ORDER BY id")
        .await
        .unwrap()
        .into_iter()
        .filter_map(|r| r.into_iter().next().flatten()?.parse().ok())
        .collect()
}

async fn in_recovery(server: &PostgresServer) -> bool {
    server
        .query_one("SELECT pg_is_in_recovery()")
        .await
        .unwrap()
        == "t"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchover_under_writes_keeps_every_acknowledged_write_and_the_old_primary_follows() {
    let c = cluster().await;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(write_until_refused(
        c.servers[0].clone(),
        1000,
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;

    let report = switchover(
        c.member(0),
        c.member(1),
        &[c.member(2)],
        &SwitchoverOptions::new().with_repoint(RepointOptions::new().with_timeout(WAIT)),
    )
    .await
    .expect("switchover");
    stop.store(true, Ordering::SeqCst);
    let acked = writer.await.unwrap();
    eprintln!(
        "switchover: {} writes acknowledged, unavailable {:?}, total {:?}",
        acked.len(),
        report.write_unavailable,
        report.elapsed
    );
    assert!(!acked.is_empty());
    assert_eq!(report.new_master, "r2");
    assert!(
        report.not_repointed.is_empty(),
        "{:?}",
        report.not_repointed
    );
    common::insert_rows(&c.servers[1], 100_000..100_010)
        .await
        .expect("the new primary accepts writes");
    assert!(
        in_recovery(&c.servers[0]).await,
        "the old primary is a standby"
    );
    assert_eq!(
        c.strategies[0].replication_status().await.unwrap().role,
        Some(Role::Replica)
    );
    for i in [0, 2] {
        c.strategies[i]
            .catch_up_with(&*c.strategies[1], WAIT)
            .await
            .unwrap();
    }
    let on_new = ids(&c.servers[1]).await;
    for id in &acked {
        assert!(
            on_new.binary_search(id).is_ok(),
            "acknowledged write {id} lost"
        );
    }
    let fp = common::fingerprint(&c.servers[1]).await.unwrap();
    assert_eq!(common::fingerprint(&c.servers[0]).await.unwrap(), fp);
    assert_eq!(common::fingerprint(&c.servers[2]).await.unwrap(), fp);

    // A repeated re-point (lost reply) changes nothing. This time the standby's host is known:
    // its login is admitted from that address only.
    let ctx = c.strategies[1]
        .get_replica_context(&ReplicaContextOptions::new("m1").with_replica_host("127.0.0.1"))
        .await
        .unwrap();
    assert_eq!(ctx.replication.replica_host.as_deref(), Some("127.0.0.1"));
    let rules = c.servers[1]
        .query(&format!(
            "SELECT type, address FROM pg_hba_file_rules \
             WHERE '{}' = ANY(user_name) ORDER BY line_number",
            ctx.replication.user
        ))
        .await
        .unwrap();
    assert!(
        rules.iter().any(|r| r[1].as_deref() == Some("127.0.0.1")),
        "an hba line for the login from the standby's address: {rules:?}"
    );
    c.strategies[0]
        .attach_replica(&ctx, &RepointOptions::new().with_timeout(WAIT))
        .await
        .expect("repeated re-point");
    // The renewed password is the one in use: the standby reconnects with it.
    c.servers[1]
        .query("SELECT pg_terminate_backend(pid) FROM pg_stat_replication")
        .await
        .unwrap();
    common::insert_rows(&c.servers[1], 100_010..100_020)
        .await
        .unwrap();
    c.strategies[0]
        .catch_up_with(&*c.strategies[1], WAIT)
        .await
        .expect("the re-pointed standby reconnects with the renewed password");

    // And back.
    let back = switchover(
        c.member(1),
        c.member(0),
        &[c.member(2)],
        &SwitchoverOptions::new().with_repoint(RepointOptions::new().with_timeout(WAIT)),
    )
    .await
    .expect("switch back");
    assert!(back.not_repointed.is_empty(), "{:?}", back.not_repointed);
    common::insert_rows(&c.servers[0], 200_000..200_010)
        .await
        .unwrap();
    for i in [1, 2] {
        c.strategies[i]
            .catch_up_with(&*c.strategies[0], WAIT)
            .await
            .unwrap();
    }
    let fp = common::fingerprint(&c.servers[0]).await.unwrap();
    assert_eq!(common::fingerprint(&c.servers[1]).await.unwrap(), fp);
    assert_eq!(common::fingerprint(&c.servers[2]).await.unwrap(), fp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchover_to_a_stalled_candidate_is_refused_and_the_old_primary_stays_writable() {
    let c = cluster().await;
    c.servers[1]
        .query("SELECT pg_wal_replay_pause()")
        .await
        .unwrap();
    common::insert_rows(&c.servers[0], 100..110).await.unwrap();
    let err = switchover(
        c.member(0),
        c.member(1),
        &[c.member(2)],
        &SwitchoverOptions::new().with_catch_up_timeout(Duration::from_secs(1)),
    )
    .await
    .expect_err("the candidate cannot catch up");
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(err.to_string().contains("refused"), "{err}");
    assert!(!in_recovery(&c.servers[0]).await);
    common::insert_rows(&c.servers[0], 110..120)
        .await
        .expect("the old primary is writable again");
    for i in [1, 2] {
        let st = c.strategies[i].replication_status().await.unwrap();
        assert_eq!(st.role, Some(Role::Replica));
        let last = c.strategies[i].get_last_txn().await.unwrap();
        assert_eq!(
            last.source.unwrap().port,
            c.servers[0].port(),
            "topology unchanged"
        );
    }
    c.servers[1]
        .query("SELECT pg_wal_replay_resume()")
        .await
        .unwrap();
    for i in [1, 2] {
        c.strategies[i]
            .catch_up_with(&*c.strategies[0], WAIT)
            .await
            .unwrap();
    }
    assert_eq!(ids(&c.servers[1]).await, ids(&c.servers[0]).await);

    // Fencing twice gives the same position and refuses a superuser's write; unfencing twice
    // is harmless.
    let p1 = c.strategies[0]
        .fence_writes(&FenceOptions::new())
        .await
        .unwrap();
    let p2 = c.strategies[0]
        .fence_writes(&FenceOptions::new())
        .await
        .unwrap();
    assert_eq!(p1, p2);
    let refused = c.servers[0]
        .query("SET default_transaction_read_only = off; INSERT INTO accounts VALUES (9, 'x', 0)")
        .await;
    assert!(refused.is_err(), "a superuser wrote on a fenced primary");
    c.strategies[0].unfence_writes().await.unwrap();
    c.strategies[0].unfence_writes().await.unwrap();
    common::insert_rows(&c.servers[0], 120..130).await.unwrap();
}

fn sigkill(server: &PostgresServer) {
    let pid = std::fs::read_to_string(server.data_dir().join("postmaster.pid")).unwrap();
    let pid = pid.lines().next().unwrap().trim().to_owned();
    let status = std::process::Command::new("kill")
        .args(["-9", "--", &format!("-{pid}")])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_after_sigkill_promotes_the_most_advanced_standby_and_the_old_primary_rejoins() {
    let c = cluster().await;
    // r3 falls behind: its receiver stops while the primary takes more writes (a repeated
    // stop is harmless: the failover stops it again).
    c.strategies[2]
        .stop_receiver(&FenceOptions::new())
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(write_until_refused(
        c.servers[0].clone(),
        1000,
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    sigkill(&c.servers[0]);
    let acked = writer.await.unwrap();
    let r3_before = ids(&c.servers[2]).await;

    let report = failover(&[c.member(2), c.member(1)], &FailoverOptions::new())
        .await
        .expect("failover");
    eprintln!(
        "failover: writable after {:?}, total {:?}, {} writes acknowledged",
        report.time_to_writable,
        report.elapsed,
        acked.len()
    );
    assert_eq!(report.new_master, "r2", "the most advanced standby wins");
    assert!(report.lost.is_empty(), "{:?}", report.lost);
    assert_eq!(report.repointed, ["r3"], "{:?}", report.not_repointed);
    common::insert_rows(&c.servers[1], 100_000..100_010)
        .await
        .unwrap();
    c.strategies[2]
        .catch_up_with(&*c.strategies[1], WAIT)
        .await
        .unwrap();
    let on_new = ids(&c.servers[1]).await;
    assert_eq!(
        ids(&c.servers[2]).await,
        on_new,
        "the other standby converged"
    );
    for id in &r3_before {
        assert!(
            on_new.binary_search(id).is_ok(),
            "replicated write {id} lost"
        );
    }

    // The old primary comes back and rejoins by pg_rewind.
    c.servers[0].service().start().await.unwrap();
    let ctx = c.strategies[1]
        .get_replica_context(&ReplicaContextOptions::new("m1"))
        .await
        .unwrap();
    c.strategies[0]
        .attach_replica(&ctx, &RepointOptions::new().with_timeout(WAIT))
        .await
        .expect("the old primary rejoins");
    assert!(in_recovery(&c.servers[0]).await);
    c.strategies[0]
        .catch_up_with(&*c.strategies[1], WAIT)
        .await
        .unwrap();
    assert_eq!(
        common::fingerprint(&c.servers[0]).await.unwrap(),
        common::fingerprint(&c.servers[1]).await.unwrap()
    );
}
