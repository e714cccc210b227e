//! MariaDB 10.11 in Podman containers, driven through the Docker Engine API: the core
//! conformance suite with mariabackup / mbstream run by `exec` in the server's container, a
//! pt-table-checksum check of a replica built that way, and the faults a deployment can get
//! wrong (missing daemon, image, container; a container that exits during start; a tool missing
//! in the image; a bind mount that is not the datadir).
//!
//! Needs root, podman and the local image (built once, see `ContainerOptions::from_env`).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{MariaDb, MariaDbInContainer, start_in_container, store, strategy_for};
use trove_guest_core::testkit::conformance::{self, ConformanceBackend, Damage};
use trove_guest_core::{
    AttachRequest, ContainerError, ContainerService, ContainerSpec, Error, Positioning, Readiness,
    ReplicationStrategy, ReplicationStrategyExt, ServiceControl, ServiceStatus, SnapshotRequest,
    ToolCommand,
};
use trove_guest_mysql::testkit::{ContainerOptions, MariaDbOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_snapshot_under_writes_converges_by_gtid() {
    conformance::snapshot_under_writes_converges(Arc::new(MariaDbInContainer), Positioning::Gtid)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_snapshot_under_writes_converges_by_binlog_file_and_offset() {
    conformance::snapshot_under_writes_converges(
        Arc::new(MariaDbInContainer),
        Positioning::BinlogFile,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_two_replicas_from_one_snapshot_both_converge() {
    conformance::two_replicas_from_one_snapshot(Arc::new(MariaDbInContainer)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_detach_then_cleanup_forgets_the_replica() {
    conformance::detach_then_cleanup_forgets_replica(Arc::new(MariaDbInContainer)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_demote_restores_the_pre_replication_state() {
    conformance::demote_restores_pre_replication_state(Arc::new(MariaDbInContainer)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_snapshot_with_a_flipped_byte_is_refused() {
    conformance::damaged_snapshot_is_refused(Arc::new(MariaDbInContainer), Damage::FlipByte).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_truncated_snapshot_is_refused() {
    conformance::damaged_snapshot_is_refused(Arc::new(MariaDbInContainer), Damage::Truncate).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_wait_for_txn_returns_when_reached_and_times_out_otherwise() {
    conformance::wait_for_txn_is_bounded(Arc::new(MariaDbInContainer)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_provision_stages_the_snapshot_while_the_master_takes_it() {
    conformance::provision_overlaps_snapshot_and_restore(Arc::new(MariaDbInContainer)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_a_staged_snapshot_serves_only_the_document_naming_it() {
    conformance::staged_snapshot_serves_only_its_document(Arc::new(MariaDbInContainer)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_a_damaged_snapshot_is_never_staged() {
    conformance::damaged_snapshot_is_never_staged(Arc::new(MariaDbInContainer)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_replica_passes_pt_table_checksum_and_restored_files_belong_to_the_container_account()
 {
    const PT: &str = "/usr/bin/pt-table-checksum";
    assert!(
        std::path::Path::new(PT).exists(),
        "{PT} is missing: install the Debian package percona-toolkit"
    );
    let (_d, store) = store();
    let master = start_in_container(MariaDbOptions::new(1)).await.unwrap();
    MariaDb.create_schema(&master).await.unwrap();
    MariaDb.insert_rows(&master, 0..200).await.unwrap();
    let ms = strategy_for(&master, store.clone());
    let doc = ms
        .get_replication_snapshot(&SnapshotRequest::new().with_replica_id("ptcheck"))
        .await
        .unwrap();
    let replica = start_in_container(MariaDbOptions::new(2)).await.unwrap();
    let rs = strategy_for(&replica, store.clone());
    rs.attach_replication_slave(&doc, &AttachRequest::new())
        .await
        .unwrap();
    // Restored files belong to the image's mysql account (uid 100), not to a host name.
    let meta = std::fs::metadata(replica.data_dir().join("conf")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!((meta.uid(), meta.gid()), (100, 101));
    master
        .execute(
            "CREATE USER 'ptc'@'127.0.0.1' IDENTIFIED BY 'ptc-pass'; \
             GRANT ALL PRIVILEGES ON *.* TO 'ptc'@'127.0.0.1'",
        )
        .await
        .unwrap();
    MariaDb.insert_rows(&master, 200..260).await.unwrap();
    rs.catch_up_with(&*ms, Duration::from_secs(60))
        .await
        .unwrap();
    let out = ToolCommand::new(PT)
        .arg("--no-version-check")
        .arg("--recursion-method=hosts")
        .arg("--no-check-binlog-format")
        .arg("--databases=conf")
        .arg("--replicate=percona.checksums")
        .arg(format!("h=127.0.0.1,P={},u=ptc,p=ptc-pass", master.port()))
        .run_capture(1 << 20)
        .await
        .expect("pt-table-checksum: no differences");
    let out = String::from_utf8_lossy(&out);
    assert!(out.contains("conf.t1") && out.contains("conf.t2"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_faults_get_typed_errors_naming_what_to_fix() {
    let c = ContainerOptions::from_env().await.unwrap();

    // A missing daemon.
    let dir = tempfile::tempdir().unwrap();
    let none = ContainerService::new(dir.path().join("no.sock"), "x").unwrap();
    let e = none.start_container().await.unwrap_err();
    assert!(matches!(e, ContainerError::DaemonUnreachable { .. }), "{e}");

    // A missing container: start and stop fail, nothing is created.
    let missing = ContainerService::new(&c.socket, "trove-no-such-container").unwrap();
    let e = missing.start_container().await.unwrap_err();
    assert!(matches!(e, ContainerError::ContainerMissing { .. }), "{e}");
    assert!(e.to_string().contains("trove-no-such-container"));
    let e = ServiceControl::stop(&missing).await.unwrap_err();
    assert!(e.to_string().contains("no container named"), "{e}");

    // A missing image.
    let svc =
        ContainerService::new(&c.socket, format!("trove-noimg-{}", std::process::id())).unwrap();
    let e = svc
        .create(&ContainerSpec::new(
            "localhost/trove-no-such-image:1",
            vec!["true".into()],
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ContainerError::ImageMissing { image } if image.contains("trove-no-such-image")),
        "{e}"
    );

    // A container that exits during start: the error carries its exit code and log.
    let svc = ContainerService::new(&c.socket, format!("trove-exits-{}", std::process::id()))
        .unwrap()
        .with_readiness(Readiness::Tcp("127.0.0.1:9".parse().unwrap()))
        .with_start_timeout(Duration::from_secs(30));
    let _ = svc.remove().await;
    svc.create(&ContainerSpec::new(
        &c.image,
        vec![
            "sh".into(),
            "-c".into(),
            "echo the server cannot start >&2; exit 3".into(),
        ],
    ))
    .await
    .unwrap();
    let e = svc.start_container().await.unwrap_err();
    let _ = svc.remove().await;
    match &e {
        ContainerError::ExitedDuringStart {
            exit_code, logs, ..
        } => {
            assert_eq!(*exit_code, 3);
            assert!(logs.contains("cannot start"), "{logs}");
        }
        other => panic!("{other}"),
    }

    // A server: a tool missing in the image, a mount that is not the datadir, stop and start.
    let server = start_in_container(MariaDbOptions::new(7)).await.unwrap();
    let h = server.handle();
    let e = h
        .tool(ToolCommand::new("xtrabackup").arg("--version"))
        .unwrap()
        .run()
        .await
        .unwrap_err();
    assert!(matches!(e, Error::ToolFailed { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("xtrabackup") && msg.contains("in container"),
        "{msg}"
    );
    let ctr = server.container().unwrap();
    ctr.check_mount(&server.data_dir(), &server.data_dir())
        .await
        .unwrap();
    let e = ctr
        .check_mount(&server.data_dir(), std::path::Path::new("/var/lib/mysql"))
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("not mounted at /var/lib/mysql"),
        "{e}"
    );
    ServiceControl::stop(ctr).await.unwrap();
    assert_eq!(ctr.status().await.unwrap(), ServiceStatus::Stopped);
    // Stopping a stopped container succeeds.
    ServiceControl::stop(ctr).await.unwrap();
    ServiceControl::start(ctr).await.unwrap();
    assert_eq!(ctr.status().await.unwrap(), ServiceStatus::Running);
}
