//! Snapshots in the store are untrusted input: a doctored snapshot with a correct manifest (so
//! only the content check can catch it) is refused by attach with an integrity error, the
//! replica keeps serving its old data and nothing is written outside the staging directory;
//! a normal attach as root leaves the restored datadir to the configured OS account.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{MariaDb, master_with_rows, options_for, strategy_for};
use trove_guest_core::testkit::conformance::ConformanceBackend;
use trove_guest_core::{
    AttachRequest, ErrorKind, LocalSnapshotStore, OsUser, Progress, ReplicationStrategy,
    SnapshotDocument, SnapshotRequest, SnapshotStore,
};
use trove_guest_mysql::MysqlStrategy;
use trove_guest_mysql::testkit::{MariaDbOptions, MariaDbServer};

fn local_store() -> (tempfile::TempDir, Arc<LocalSnapshotStore>) {
    let dir = tempfile::Builder::new()
        .prefix("tg-store-")
        .tempdir()
        .unwrap();
    let store = Arc::new(LocalSnapshotStore::new(dir.path()).unwrap());
    (dir, store)
}

/// Runs `mbstream -c paths...` in `cwd`: chunks written by the real tool, paths as given.
fn mbstream_c(cwd: &Path, paths: &[&str]) -> Vec<u8> {
    let out = std::process::Command::new("mbstream")
        .current_dir(cwd)
        .arg("-c")
        .args(paths)
        .output()
        .expect("mbstream (apt-get install -y mariadb-backup)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Stores `bytes` as a new snapshot and returns `doc` pointing at it, with its true size and
/// SHA-256: the manifest is right, only the content is hostile.
async fn store_doctored(
    store: &LocalSnapshotStore,
    doc: &SnapshotDocument,
    name: &str,
    bytes: Vec<u8>,
) -> SnapshotDocument {
    let mut reader = bytes.as_slice();
    let stored = store
        .put(name, &mut reader, &Progress::none())
        .await
        .unwrap()
        .commit()
        .await
        .unwrap();
    let mut doctored = doc.clone();
    doctored.dataset.snapshot_href = stored.href;
    doctored.dataset.size_bytes = Some(stored.size);
    doctored.dataset.sha256 = Some(stored.sha256);
    doctored
}

/// Every path under `dir`, relative, sorted (directories included).
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            out.push(p.strip_prefix(dir).unwrap().display().to_string());
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The real snapshot rebuilt by `mbstream -c` with `backup-my.cnf` replaced by `cnf`.
fn with_backup_cnf(real: &[u8], cnf: &str) -> Vec<u8> {
    let t = tempfile::tempdir().unwrap();
    let mut x = std::process::Command::new("mbstream")
        .args(["-x", "-C"])
        .arg(t.path())
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    x.stdin.take().unwrap().write_all(real).unwrap();
    assert!(x.wait().unwrap().success());
    std::fs::write(t.path().join("backup-my.cnf"), cnf).unwrap();
    let files: Vec<String> = tree(t.path())
        .into_iter()
        .filter(|p| t.path().join(p).is_file())
        .collect();
    let refs: Vec<&str> = files.iter().map(String::as_str).collect();
    mbstream_c(t.path(), &refs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctored_mariadb_snapshots_are_refused_and_the_replica_keeps_its_data() {
    let (_d, store) = local_store();
    let master = master_with_rows(MariaDbOptions::new(1)).await;
    let ms = strategy_for(&master, store.clone());
    let doc = ms
        .get_replication_snapshot(&SnapshotRequest::new().with_replica_id("untrusted"))
        .await
        .expect("snapshot");
    let real = std::fs::read(store.path_for(&doc.dataset.snapshot_href).unwrap()).unwrap();

    let replica = MariaDbServer::start(MariaDbOptions::new(2)).await.unwrap();
    MariaDb.create_schema(&replica).await.unwrap();
    MariaDb.insert_rows(&replica, 0..7).await.unwrap();
    let before = MariaDb.fingerprint(&replica).await.unwrap();
    let rs = strategy_for(&replica, store.clone());
    let work = replica.handle().work_dir.clone();
    let work_before = tree(&work);

    // Hostile chunks made by the real tool, in front of the real snapshot.
    let src = tempfile::tempdir().unwrap();
    std::fs::create_dir(src.path().join("sub")).unwrap();
    std::fs::write(src.path().join("tg-escape"), b"escaped").unwrap();
    let escape = mbstream_c(&src.path().join("sub"), &["../tg-escape"]);
    let abs_target = src.path().join("absolute-target");
    std::fs::write(&abs_target, b"written through an absolute member").unwrap();
    let absolute = mbstream_c(src.path(), &[abs_target.to_str().unwrap()]);
    std::fs::remove_file(&abs_target).unwrap();

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "dotdot",
            [escape, real.clone()].concat(),
            "\"../tg-escape\"",
        ),
        (
            "absolute",
            [real.clone(), absolute].concat(),
            "absolute path",
        ),
        (
            "plugin",
            with_backup_cnf(
                &real,
                "[mysqld]\ninnodb_page_size=16384\ninnodb_log_file_size=33554432\n\
                 plugin_dir=/tmp\nplugin_load_add=tg_evil.so\n",
            ),
            "plugin",
        ),
    ];
    for (name, bytes, says) in cases {
        let doctored = store_doctored(&store, &doc, &format!("doctored-{name}"), bytes).await;
        let err = rs
            .attach_replication_slave(&doctored, &AttachRequest::new())
            .await
            .expect_err(name);
        assert_eq!(err.kind(), ErrorKind::Integrity, "{name}: {err}");
        let text = err.to_string();
        assert!(
            text.contains(&doctored.dataset.snapshot_href),
            "{name}: {text}"
        );
        assert!(text.contains(says), "{name}: {text}");
        assert_eq!(
            MariaDb.fingerprint(&replica).await.unwrap(),
            before,
            "{name}: the replica serves its old data"
        );
        assert_eq!(
            tree(&work),
            work_before,
            "{name}: nothing left in the work dir"
        );
        assert!(
            !work.parent().unwrap().join("tg-escape").exists() && !work.join("tg-escape").exists(),
            "{name}: nothing escaped"
        );
        assert!(
            !abs_target.exists(),
            "{name}: nothing written by absolute path"
        );
    }

    // The real snapshot still attaches: the checks refuse only what is hostile.
    rs.attach_replication_slave(&doc, &AttachRequest::new())
        .await
        .expect("the genuine snapshot attaches");
    assert_eq!(
        MariaDb.fingerprint(&replica).await.unwrap(),
        MariaDb.fingerprint(&master).await.unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attach_as_root_leaves_the_restored_datadir_to_the_configured_account() {
    assert_eq!(
        OsUser::current().uid,
        0,
        "this test restores as root for another account: run it as root"
    );
    let mysql = OsUser::lookup("mysql").expect("the mysql account (from mariadb-server)");
    let (_d, store) = local_store();
    let master = master_with_rows(MariaDbOptions::new(1)).await;
    let ms = strategy_for(&master, store.clone());
    let doc = ms
        .get_replication_snapshot(&SnapshotRequest::new().with_replica_id("owned"))
        .await
        .expect("snapshot");

    // The throwaway server runs as root in a private directory; let the account reach its
    // work directory, as a real deployment's would.
    let replica = MariaDbServer::start(MariaDbOptions::new(2)).await.unwrap();
    std::fs::set_permissions(replica.dir(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let rs = MysqlStrategy::new(
        replica.handle().with_os_user(mysql),
        store.clone() as Arc<dyn SnapshotStore>,
        options_for(&replica),
    );
    rs.attach_replication_slave(&doc, &AttachRequest::new())
        .await
        .expect("attach");
    assert_eq!(
        MariaDb.fingerprint(&replica).await.unwrap(),
        MariaDb.fingerprint(&master).await.unwrap()
    );
    // What came from the snapshot belongs to the account (the server, running as root here,
    // may add files of its own after it started).
    let data = replica.data_dir();
    for p in [
        PathBuf::new(),
        "ibdata1".into(),
        "conf".into(),
        "conf/t1.ibd".into(),
        "mysql".into(),
    ] {
        let m = std::fs::symlink_metadata(data.join(&p)).unwrap();
        assert_eq!(
            (m.uid(), m.gid()),
            (mysql.uid, mysql.gid),
            "{} is owned by the database account",
            p.display()
        );
    }
}
