//! Redis-specific behaviour the conformance suite cannot see, on real Redis servers.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use trove_guest_core::{
    AttachRequest, DetachOptions, EnableMasterOptions, ErrorKind, LocalSnapshotStore, Progress,
    ReplicationStrategy, ReplicationStrategyExt, SnapshotDocument, SnapshotRequest, SnapshotStore,
};
use trove_guest_redis::OVERRIDE_FILE;
use trove_guest_redis::testkit::RedisServer;

struct Pair {
    /// The next id the writer would have written.
    next: u64,
    _store_dir: tempfile::TempDir,
    store: Arc<LocalSnapshotStore>,
    master: RedisServer,
    replica: RedisServer,
    doc: SnapshotDocument,
}

/// A master with 300 keys per prefix, a snapshot taken while a writer adds more (up to
/// `Pair::next`), and a fresh replica server with 7 keys per prefix of its own.
async fn pair(replica_id: &str) -> Pair {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LocalSnapshotStore::new(dir.path()).unwrap());
    let master = common::start(1).await.unwrap();
    let replica = common::start(2).await.unwrap();
    common::insert_rows(&master, 0..300).await.unwrap();
    common::insert_rows(&replica, 0..7).await.unwrap();
    // Room for every write between the snapshot and the attach: the replica then continues
    // from the snapshot's offset (a partial resync) instead of a second full copy.
    master
        .command(&["CONFIG", "SET", "repl-backlog-size", "64mb"])
        .await
        .unwrap();
    let ms = common::strategy(&master, store.clone());
    ms.enable_as_master(&EnableMasterOptions::new())
        .await
        .unwrap();
    // A writer runs while the snapshot is taken.
    let done = std::sync::atomic::AtomicBool::new(false);
    let snapshot = async {
        let doc = ms
            .get_replication_snapshot(&SnapshotRequest::new().with_replica_id(replica_id))
            .await;
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        doc.unwrap()
    };
    let writes = async {
        let mut next = 300;
        while !done.load(std::sync::atomic::Ordering::SeqCst) {
            common::insert_rows(&master, next..next + 20).await.unwrap();
            next += 20;
            tokio::task::yield_now().await;
        }
        next
    };
    let (doc, next) = tokio::join!(snapshot, writes);
    Pair {
        next,
        _store_dir: dir,
        store,
        master,
        replica,
        doc,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_written_during_the_snapshot_arrive_and_the_replica_continues_with_a_partial_resync() {
    let p = pair("partial").await;
    assert!(p.next > 300, "the writer wrote during the snapshot");
    common::insert_rows(&p.master, p.next..p.next + 100)
        .await
        .unwrap();
    let (ms, rs) = (
        common::strategy(&p.master, p.store.clone()),
        common::strategy(&p.replica, p.store.clone()),
    );
    rs.attach_replication_slave(&p.doc, &AttachRequest::new())
        .await
        .unwrap();
    rs.catch_up_with(&*ms, Duration::from_secs(60))
        .await
        .unwrap();
    let master = common::fingerprint(&p.master).await.unwrap();
    assert_eq!(
        master.total_rows(),
        2 * (p.next + 100),
        "every key, both prefixes"
    );
    assert_eq!(
        common::fingerprint(&p.replica).await.unwrap(),
        master,
        "keys and values equal"
    );
    let log = p.master.log_text();
    assert!(
        log.contains("Partial resynchronization request from"),
        "{log}"
    );
    assert!(
        log.contains("accepted. Sending"),
        "the master sent only what followed the snapshot: {log}"
    );
    let status = rs.replication_status().await.unwrap();
    assert_eq!(status.receiver_running, Some(true), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rdb_that_matches_its_hash_but_fails_redis_check_rdb_is_refused_and_old_data_serves() {
    let p = pair("corrupt").await;
    // A master that produced a bad RDB: the store's hash is of the bad bytes, so only the
    // backend's own checks (redis-check-rdb, header) can refuse it.
    let path = p.doc.dataset.snapshot_href.strip_prefix("file://").unwrap();
    let good = std::fs::read(path).unwrap();
    for (name, bytes) in [
        ("flipped", {
            let mut b = good.clone();
            let mid = b.len() / 2;
            b[mid] ^= 0x20;
            b
        }),
        ("truncated", good[..good.len() / 2].to_vec()),
    ] {
        let pending = p
            .store
            .put(name, &mut bytes.as_slice(), &Progress::none())
            .await
            .unwrap();
        let stored = pending.commit().await.unwrap();
        let mut doc = p.doc.clone();
        doc.dataset.snapshot_href = stored.href;
        doc.dataset.size_bytes = Some(stored.size);
        doc.dataset.sha256 = Some(stored.sha256);
        let before = common::fingerprint(&p.replica).await.unwrap();
        let rs = common::strategy(&p.replica, p.store.clone());
        let err = rs
            .attach_replication_slave(&doc, &AttachRequest::new())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Integrity, "{name}: {err}");
        assert_eq!(
            common::fingerprint(&p.replica).await.unwrap(),
            before,
            "{name}: old data serves"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rdb_taken_at_another_offset_than_its_document_says_is_refused() {
    let p = pair("offset").await;
    let mut doc = p.doc.clone();
    let v = doc.position.as_ref().unwrap().value().to_owned();
    let (id, off) = v.split_once(':').unwrap();
    let moved = format!("{id}:{}", off.parse::<u64>().unwrap() + 1);
    doc.position =
        Some(trove_guest_core::OpaquePosition::new(doc.dataset.datastore, moved).unwrap());
    let rs = common::strategy(&p.replica, p.store.clone());
    let err = rs
        .attach_replication_slave(&doc, &AttachRequest::new())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
    assert_eq!(
        common::fingerprint(&p.replica).await.unwrap().total_rows(),
        14
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replication_user_may_only_sync_and_cleanup_cuts_the_replica_off() {
    let p = pair("acl").await;
    let (ms, rs) = (
        common::strategy(&p.master, p.store.clone()),
        common::strategy(&p.replica, p.store.clone()),
    );
    rs.attach_replication_slave(&p.doc, &AttachRequest::new())
        .await
        .unwrap();
    let user = p.doc.replication.as_ref().unwrap().user.clone();
    let acl = p.master.command(&["ACL", "GETUSER", &user]).await.unwrap();
    let field = |name: &str| {
        acl.iter()
            .position(|f| f == name)
            .map(|i| acl[i + 1].clone())
    };
    let mut rules: Vec<String> = field("commands")
        .unwrap()
        .split(' ')
        .map(str::to_owned)
        .collect();
    rules.sort();
    assert_eq!(rules, ["+ping", "+psync", "+replconf", "-@all"], "{acl:?}");
    assert_eq!(field("keys").as_deref(), Some(""), "no keys: {acl:?}");
    assert_eq!(
        field("channels").as_deref(),
        Some(""),
        "no channels: {acl:?}"
    );
    let detached = rs
        .detach_replication_slave(&DetachOptions::new())
        .await
        .unwrap();
    assert_eq!(detached.replication_user.as_deref(), Some(user.as_str()));
    ms.cleanup_source_on_replica_detach(&detached)
        .await
        .unwrap();
    assert!(!common::users(&p.master).await.unwrap().contains(&user));
    let saved = std::fs::read_to_string(p.master.instance_dir().join("users.acl")).unwrap();
    assert!(
        !saved.contains(&user),
        "the ACL file no longer has the user: {saved}"
    );
    let info = p
        .master
        .command(&["INFO", "replication"])
        .await
        .unwrap()
        .join("");
    assert!(info.contains("connected_slaves:0"), "{info}");
}

/// Every file under `dir` containing `needle`, with its mode.
fn files_containing(dir: &Path, needle: &[u8], out: &mut Vec<(String, u32)>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = e.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            files_containing(&path, needle, out);
        } else if let Ok(bytes) = std::fs::read(&path)
            && bytes.windows(needle.len()).any(|w| w == needle)
        {
            out.push((
                path.display().to_string(),
                meta.permissions().mode() & 0o777,
            ));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replication_password_is_only_in_the_0600_override_file() {
    let p = pair("secret").await;
    let password = p
        .doc
        .replication
        .as_ref()
        .unwrap()
        .password
        .as_ref()
        .unwrap()
        .0
        .expose()
        .to_owned();
    let rs = common::strategy(&p.replica, p.store.clone());
    rs.attach_replication_slave(&p.doc, &AttachRequest::new())
        .await
        .unwrap();
    let mut found = Vec::new();
    for s in [&p.master, &p.replica] {
        files_containing(s.instance_dir(), password.as_bytes(), &mut found);
    }
    files_containing(p._store_dir.path(), password.as_bytes(), &mut found);
    let expected = p
        .replica
        .handle()
        .config_dir
        .join(OVERRIDE_FILE)
        .display()
        .to_string();
    assert_eq!(found, vec![(expected, 0o600)], "the password on disk");
    for s in [&p.master, &p.replica] {
        assert!(
            !s.log_text().contains(&password),
            "the server log has no password"
        );
    }
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        for f in ["cmdline", "environ"] {
            if let Ok(b) = std::fs::read(e.path().join(f)) {
                assert!(
                    !b.windows(password.len()).any(|w| w == password.as_bytes()),
                    "{:?}/{f}",
                    e.path()
                );
            }
        }
    }
    let status = format!("{:?} {:?}", rs.replication_status().await.unwrap(), rs);
    assert!(!status.contains(&password));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_master_refuses_writes_until_made_writable_again() {
    let master = common::start(1).await.unwrap();
    let (_dir, store) = {
        let d = tempfile::tempdir().unwrap();
        let s = Arc::new(LocalSnapshotStore::new(d.path()).unwrap());
        (d, s)
    };
    let ms = common::strategy(&master, store);
    ms.make_read_only(true).await.unwrap();
    let err = common::insert_rows(&master, 0..1).await.unwrap_err();
    assert!(err.to_string().contains("NOREPLICAS"), "{err}");
    assert_eq!(ms.replication_status().await.unwrap().read_only, Some(true));
    ms.make_read_only(false).await.unwrap();
    common::insert_rows(&master, 0..1).await.unwrap();
    assert_eq!(
        ms.replication_status().await.unwrap().read_only,
        Some(false)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demote_and_snapshots_are_refused_on_a_replica_and_a_detached_replica_restarts_as_master() {
    let p = pair("roles").await;
    let rs = common::strategy(&p.replica, p.store.clone());
    rs.attach_replication_slave(&p.doc, &AttachRequest::new())
        .await
        .unwrap();
    let err = rs
        .demote_replication_master(&trove_guest_core::DemoteOptions::new())
        .await
        .unwrap_err();
    assert!(
        matches!(err, trove_guest_core::Error::WrongRole { .. }),
        "{err}"
    );
    let err = rs
        .get_replication_snapshot(&SnapshotRequest::new().with_replica_id("x"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, trove_guest_core::Error::WrongRole { .. }),
        "{err}"
    );
    rs.detach_replication_slave(&DetachOptions::new())
        .await
        .unwrap();
    p.replica.handle().service.restart().await.unwrap();
    let st = rs.replication_status().await.unwrap();
    assert_ne!(
        st.role,
        Some(trove_guest_core::Role::Replica),
        "no replication settings survive: {st:?}"
    );
    assert!(!p.replica.handle().config_dir.join(OVERRIDE_FILE).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_drops_the_user_of_a_snapshot_whose_agent_died_mid_stream() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LocalSnapshotStore::new(dir.path()).unwrap());
    let master = common::start(1).await.unwrap();
    common::insert_rows(&master, 0..200).await.unwrap();
    // A slow BGSAVE (10 ms a key) keeps the snapshot streaming while the "agent dies".
    master
        .command(&["CONFIG", "SET", "rdb-key-save-delay", "10000"])
        .await
        .unwrap();
    let dying = common::strategy(&master, store.clone());
    let req = SnapshotRequest::new().with_replica_id("lost");
    let mut snapshot = Box::pin(dying.get_replication_snapshot(&req));
    let user = "trove_repl_lost".to_owned();
    let until = trove_guest_core::deadline(Duration::from_secs(30));
    let mut backoff = trove_guest_core::poll::Backoff::new(Duration::from_millis(20));
    loop {
        let info = master
            .command(&["INFO", "persistence"])
            .await
            .unwrap()
            .join("");
        if info.contains("rdb_bgsave_in_progress:1") {
            break;
        }
        tokio::select! {
            r = &mut snapshot => panic!("the snapshot ended before the kill: {r:?}"),
            alive = backoff.tick(until) => assert!(alive, "the snapshot never started streaming"),
        }
    }
    // Killed: no destructor runs, the journal and the user stay.
    std::mem::forget(snapshot);
    assert!(common::users(&master).await.unwrap().contains(&user));

    let restarted = common::strategy(&master, store.clone());
    let report = restarted
        .recover(&trove_guest_core::RecoverOptions::new())
        .await
        .unwrap();
    assert!(
        report.actions.iter().any(|a| a.to_string().contains(&user)),
        "{report:?}"
    );
    assert!(!common::users(&master).await.unwrap().contains(&user));
    let again = restarted
        .recover(&trove_guest_core::RecoverOptions::new())
        .await
        .unwrap();
    assert!(
        !again.actions.iter().any(|a| a.to_string().contains(&user)),
        "recovery is done once: {again:?}"
    );
}
