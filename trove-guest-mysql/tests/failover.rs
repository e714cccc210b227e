//! Switchover and failover on live MariaDB 10.11: a master and two replicas.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{MariaDb, store, strategy_for};
use trove_guest_core::failover::{
    FailoverOptions, FenceOptions, Member, ReplicaContextOptions, RepointOptions,
    SwitchoverOptions, failover, switchover,
};
use trove_guest_core::testkit::conformance::ConformanceBackend;
use trove_guest_core::{
    AttachRequest, EnableMasterOptions, ErrorKind, ReplicationStrategy, ReplicationStrategyExt,
    Role, SnapshotRequest, SnapshotStore,
};
use trove_guest_mysql::MysqlStrategy;
use trove_guest_mysql::testkit::{MariaDbOptions, MariaDbServer};

const WAIT: Duration = Duration::from_secs(60);

struct Cluster {
    _dir: tempfile::TempDir,
    _store: Arc<dyn SnapshotStore>,
    servers: Vec<Arc<MariaDbServer>>,
    strategies: Vec<Arc<MysqlStrategy>>,
}

impl Cluster {
    fn member(&self, i: usize) -> Member<'_> {
        const IDS: [&str; 3] = ["m1", "r2", "r3"];
        Member::new(IDS[i], &*self.strategies[i])
    }
}

fn opts(id: u32) -> MariaDbOptions {
    MariaDbOptions::new(id)
        .with_log_bin(true)
        .with_setting("log_slave_updates", "ON")
}

/// Server 1 master (rows 0..100, a checksum account), servers 2 and 3 its replicas from
/// snapshots; every server binary-logs what it applies, so any can be promoted.
async fn cluster() -> Cluster {
    let (dir, store) = store();
    let (a, b, c) = tokio::join!(
        MariaDbServer::start(opts(1)),
        MariaDbServer::start(opts(2)),
        MariaDbServer::start(opts(3))
    );
    let servers: Vec<Arc<MariaDbServer>> = vec![
        Arc::new(a.unwrap()),
        Arc::new(b.unwrap()),
        Arc::new(c.unwrap()),
    ];
    let strategies: Vec<_> = servers
        .iter()
        .map(|s| strategy_for(s, store.clone()))
        .collect();
    MariaDb.create_schema(&servers[0]).await.unwrap();
    MariaDb.insert_rows(&servers[0], 0..100).await.unwrap();
    servers[0]
        .execute(
            "CREATE USER 'ptc'@'127.0.0.1'; GRANT ALL ON *.* TO 'ptc'@'127.0.0.1'; \
             CREATE DATABASE percona; CREATE TABLE percona.dsns (id INT AUTO_INCREMENT \
             PRIMARY KEY, parent_id INT, dsn VARCHAR(255) NOT NULL)",
        )
        .await
        .unwrap();
    strategies[0]
        .enable_as_master(&EnableMasterOptions::new())
        .await
        .unwrap();
    for i in 1..3 {
        let doc = strategies[0]
            .get_replication_snapshot(&SnapshotRequest::new().with_replica_id(format!("snap{i}")))
            .await
            .unwrap();
        strategies[i]
            .attach_replication_slave(&doc, &AttachRequest::new().with_timeout(WAIT))
            .await
            .unwrap();
    }
    Cluster {
        _dir: dir,
        _store: store,
        servers,
        strategies,
    }
}

/// Inserts one row per statement (ids from `from`) until a write fails or `stop` is set;
/// returns the ids the server acknowledged.
async fn write_until_refused(
    server: Arc<MariaDbServer>,
    from: u64,
    stop: Arc<AtomicBool>,
) -> Vec<u64> {
    let mut acked = Vec::new();
    let mut id = from;
    while !stop.load(Ordering::SeqCst) {
        let sql = format!("INSERT INTO conf.t1 VALUES ({id}, 'w{id}', {id})");
        match tokio::time::timeout(WAIT, server.execute(&sql)).await {
            Ok(Ok(())) => acked.push(id),
            _ => break,
        }
        id += 1;
    }
    acked
}

async fn ids(server: &MariaDbServer) -> Vec<u64> {
    server
        .query("SELECT id FROM conf.t1 ORDER BY id")
        .await
        .unwrap()
        .into_iter()
        .filter_map(|r| r.into_iter().next().flatten()?.parse().ok())
        .collect()
}

/// pt-table-checksum on `master` against `replicas` (through a DSN table): true when no
/// chunk differs.
async fn checksums_agree(master: &MariaDbServer, replicas: &[&MariaDbServer]) -> bool {
    master.execute("DELETE FROM percona.dsns").await.unwrap();
    for r in replicas {
        master
            .execute(&format!(
                "INSERT INTO percona.dsns (dsn) VALUES ('h=127.0.0.1,P={},u=ptc')",
                r.port()
            ))
            .await
            .unwrap();
    }
    let out = tokio::process::Command::new("pt-table-checksum")
        .args([
            "--no-check-binlog-format",
            "--no-version-check",
            "--recursion-method=dsn=D=percona,t=dsns",
            "--databases=conf",
            &format!("h=127.0.0.1,P={},u=ptc", master.port()),
        ])
        .output()
        .await
        .expect("pt-table-checksum is installed (percona-toolkit)");
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}{}", String::from_utf8_lossy(&out.stderr));
    out.status.success() && text.contains("conf.t1")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchover_under_writes_keeps_every_acknowledged_write_and_the_old_master_follows() {
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
    assert!(
        !acked.is_empty(),
        "the old master took writes before the switchover"
    );
    assert_eq!(report.new_master, "r2");
    assert!(
        report.not_repointed.is_empty(),
        "{:?}",
        report.not_repointed
    );
    let mut repointed = report.repointed.clone();
    repointed.sort();
    assert_eq!(repointed, ["m1", "r3"]);

    // Writes resume on the new master; the old one refuses them.
    c.servers[1]
        .execute("INSERT INTO conf.t1 VALUES (999999, 'after', 0)")
        .await
        .expect("the new master accepts writes");
    assert_eq!(
        c.strategies[0].replication_status().await.unwrap().role,
        Some(Role::Replica)
    );
    assert_eq!(
        c.strategies[2].replication_status().await.unwrap().role,
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
    assert_eq!(ids(&c.servers[0]).await, on_new, "the old master converged");
    assert_eq!(
        ids(&c.servers[2]).await,
        on_new,
        "the other replica converged"
    );
    assert!(
        checksums_agree(&c.servers[1], &[&c.servers[0], &c.servers[2]]).await,
        "pt-table-checksum found differences"
    );

    // Repeating the calls after a lost reply is safe: the re-pointed servers stay put. This
    // time the replica's host is known: its account is limited to it.
    let ctx = c.strategies[1]
        .get_replica_context(&ReplicaContextOptions::new("m1").with_replica_host("127.0.0.1"))
        .await
        .unwrap();
    assert_eq!(ctx.replication.replica_host.as_deref(), Some("127.0.0.1"));
    let hosts = c.servers[1]
        .query(&format!(
            "SELECT Host, Repl_slave_priv FROM mysql.user WHERE User = '{}' ORDER BY Host",
            ctx.replication.user
        ))
        .await
        .unwrap();
    assert!(
        hosts.contains(&vec![Some("127.0.0.1".to_owned()), Some("Y".to_owned())]),
        "an account limited to the replica's host: {hosts:?}"
    );
    for _ in 0..2 {
        c.strategies[0]
            .attach_replica(&ctx, &RepointOptions::new().with_timeout(WAIT))
            .await
            .expect("a repeated re-point");
    }
    // The renewed password is the one in use: the replica reconnects with it.
    c.servers[0]
        .execute("STOP SLAVE IO_THREAD; START SLAVE IO_THREAD")
        .await
        .unwrap();
    c.servers[1]
        .execute("INSERT INTO conf.t1 VALUES (1000000, 'again', 0)")
        .await
        .unwrap();
    c.strategies[0]
        .catch_up_with(&*c.strategies[1], WAIT)
        .await
        .unwrap();
    assert_eq!(ids(&c.servers[0]).await, ids(&c.servers[1]).await);

    // And back: the old master is promoted again by GTID.
    let err = switchover(
        c.member(0),
        c.member(1),
        &[c.member(2)],
        &SwitchoverOptions::new(),
    )
    .await
    .expect_err("r2 is the master now: it cannot be a candidate");
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    let back = switchover(
        c.member(1),
        c.member(0),
        &[c.member(2)],
        &SwitchoverOptions::new(),
    )
    .await
    .expect("switch back");
    assert_eq!(back.new_master, "m1");
    c.servers[0]
        .execute("INSERT INTO conf.t1 VALUES (1000001, 'back', 0)")
        .await
        .unwrap();
    for i in [1, 2] {
        c.strategies[i]
            .catch_up_with(&*c.strategies[0], WAIT)
            .await
            .unwrap();
    }
    assert_eq!(ids(&c.servers[1]).await, ids(&c.servers[0]).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchover_to_a_stalled_candidate_is_refused_and_the_old_master_stays_writable() {
    let c = cluster().await;
    c.servers[1].execute("STOP SLAVE SQL_THREAD").await.unwrap();
    MariaDb.insert_rows(&c.servers[0], 100..110).await.unwrap();

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

    c.servers[0]
        .execute("INSERT INTO conf.t1 VALUES (5000, 'after refusal', 0)")
        .await
        .expect("the old master is writable again");
    assert_eq!(
        c.servers[0]
            .query_one("SELECT @@GLOBAL.read_only")
            .await
            .unwrap()
            .as_deref(),
        Some("0")
    );
    for i in [1, 2] {
        let st = c.strategies[i].replication_status().await.unwrap();
        assert_eq!(st.role, Some(Role::Replica));
        assert_eq!(
            st.master.unwrap().port,
            c.servers[0].port(),
            "topology unchanged"
        );
    }
    c.servers[1]
        .execute("START SLAVE SQL_THREAD")
        .await
        .unwrap();
    c.strategies[1]
        .catch_up_with(&*c.strategies[0], WAIT)
        .await
        .unwrap();
    assert_eq!(ids(&c.servers[1]).await, ids(&c.servers[0]).await);

    // Fencing twice (a lost reply) gives the same position; unfencing twice is harmless.
    let fence = FenceOptions::new();
    let p1 = c.strategies[0].fence_writes(&fence).await.unwrap();
    let p2 = c.strategies[0].fence_writes(&fence).await.unwrap();
    assert_eq!(p1, p2);
    let blocked = tokio::time::timeout(
        Duration::from_millis(500),
        c.servers[0].execute("INSERT INTO conf.t1 VALUES (5001, 'fenced', 0)"),
    )
    .await;
    assert!(
        !matches!(blocked, Ok(Ok(()))),
        "a privileged session wrote on a fenced master"
    );
    c.strategies[0].unfence_writes().await.unwrap();
    c.strategies[0].unfence_writes().await.unwrap();
    c.servers[0]
        .execute("INSERT INTO conf.t1 VALUES (5002, 'unfenced', 0)")
        .await
        .unwrap();
}

fn sigkill(server: &MariaDbServer) {
    let pid = std::fs::read_to_string(server.dir().join("mariadbd.pid")).unwrap();
    let status = std::process::Command::new("kill")
        .args(["-9", pid.trim()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_after_sigkill_promotes_the_most_advanced_replica_and_the_other_follows() {
    let c = cluster().await;
    // r3 falls behind: its receiver stops while the master takes more writes.
    c.servers[2].execute("STOP SLAVE IO_THREAD").await.unwrap();
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

    // r3 listed first: only its position may make r2 win.
    let report = failover(&[c.member(2), c.member(1)], &FailoverOptions::new())
        .await
        .expect("failover");
    eprintln!(
        "failover: writable after {:?}, total {:?}, {} writes acknowledged",
        report.time_to_writable,
        report.elapsed,
        acked.len()
    );
    assert_eq!(report.new_master, "r2", "the most advanced replica wins");
    assert!(report.lost.is_empty(), "{:?}", report.lost);
    assert_eq!(report.repointed, ["r3"]);
    c.servers[1]
        .execute("INSERT INTO conf.t1 VALUES (999999, 'after', 0)")
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
        "the other replica converged"
    );
    for id in &r3_before {
        assert!(
            on_new.binary_search(id).is_ok(),
            "replicated write {id} lost"
        );
    }

    // The old master comes back and rejoins by GTID, or is refused when it holds
    // transactions no replica received.
    c.servers[0].restart().await.unwrap();
    let ctx = c.strategies[1]
        .get_replica_context(&ReplicaContextOptions::new("m1"))
        .await
        .unwrap();
    let old_gtid = c.servers[0]
        .query_one("SELECT @@GLOBAL.gtid_binlog_pos")
        .await
        .unwrap()
        .unwrap_or_default();
    let forked = ctx.forked_at.clone().unwrap().to_string();
    let behind = trove_guest_core::failover::covers(
        ctx.forked_at.as_ref().unwrap(),
        &trove_guest_core::ReplicationPosition::MariadbGtid(old_gtid.parse().unwrap()),
    )
    .unwrap();
    let rejoined = c.strategies[0]
        .attach_replica(&ctx, &RepointOptions::new().with_timeout(WAIT))
        .await;
    eprintln!("old master at {old_gtid}, new master forked at {forked}: {rejoined:?}");
    if behind {
        rejoined.expect("an old master without lost transactions rejoins");
        c.strategies[0]
            .catch_up_with(&*c.strategies[1], WAIT)
            .await
            .unwrap();
        assert_eq!(ids(&c.servers[0]).await, on_new);
    } else {
        let err = rejoined.expect_err("an old master with lost transactions is refused");
        assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
        assert!(err.to_string().contains("fresh snapshot"), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_never_promotes_a_replica_with_an_errant_transaction() {
    let c = cluster().await;
    MariaDb.insert_rows(&c.servers[0], 100..120).await.unwrap();
    for i in [1, 2] {
        c.strategies[i]
            .catch_up_with(&*c.strategies[0], WAIT)
            .await
            .unwrap();
    }
    // A write made on r3 itself: it is now "ahead" in its domain, but errant.
    c.servers[2]
        .execute(
            "SET GLOBAL read_only = 0; INSERT INTO conf.t1 VALUES (777777, 'errant', 0); \
             SET GLOBAL read_only = 1",
        )
        .await
        .unwrap();
    let last = c.strategies[2].get_last_txn().await.unwrap();
    assert_eq!(last.errant.len(), 1, "{last:?}");
    sigkill(&c.servers[0]);

    let report = failover(&[c.member(2), c.member(1)], &FailoverOptions::new())
        .await
        .expect("failover");
    assert_eq!(
        report.new_master, "r2",
        "the errant replica is never chosen"
    );
    assert_eq!(report.excluded.len(), 1);
    assert_eq!(report.excluded[0].id, "r3");
    assert!(
        report.repointed.is_empty(),
        "the errant replica is not re-pointed"
    );
    // Re-pointing it by hand is refused too.
    let ctx = c.strategies[1]
        .get_replica_context(&ReplicaContextOptions::new("r3"))
        .await
        .unwrap();
    let err = c.strategies[2]
        .attach_replica(&ctx, &RepointOptions::new())
        .await
        .expect_err("errant replica");
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    // Failover again (a lost reply): the promoted r2 is chosen again.
    let again = failover(&[c.member(1)], &FailoverOptions::new())
        .await
        .unwrap();
    assert_eq!(again.new_master, "r2");
    c.servers[1]
        .execute("INSERT INTO conf.t1 VALUES (999999, 'after', 0)")
        .await
        .unwrap();
}
