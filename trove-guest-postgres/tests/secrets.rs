//! The replication login is least-privilege, and its password appears nowhere it must not:
//! configuration files, command lines, logs, errors, `Debug` output or the stored snapshot.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::sync::Arc;
use std::time::Duration;

use trove_guest_core::secret::{Secret, TransportSecret};
use trove_guest_core::testkit::CapturedLog;
use trove_guest_core::{
    AttachRequest, DetachOptions, EnableMasterOptions, ReplicationStrategy, ReplicationStrategyExt,
    SnapshotRequest,
};
use trove_guest_postgres::testkit::{PostgresOptions, PostgresServer};
use trove_guest_postgres::{PostgresStrategy, PostgresStrategyOptions, objects};

/// Installs (once per test binary) a global debug-level subscriber writing into a buffer. A
/// global one, because per-thread subscribers miss events whose callsite interest another
/// test thread already cached.
fn capture_logs() -> CapturedLog {
    static CAPTURED: std::sync::OnceLock<CapturedLog> = std::sync::OnceLock::new();
    CAPTURED
        .get_or_init(|| {
            let captured = CapturedLog::default();
            let sink = captured.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::DEBUG)
                .with_ansi(false)
                .with_writer(move || sink.clone())
                .finish();
            tracing::subscriber::set_global_default(subscriber).expect("global subscriber");
            captured
        })
        .clone()
}

fn all_command_lines() -> String {
    let mut out = String::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(c) = std::fs::read(e.path().join("cmdline")) {
            out.push_str(&String::from_utf8_lossy(&c).replace('\0', " "));
            out.push('\n');
        }
    }
    out
}

fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[tokio::test]
async fn replication_password_never_leaks_and_the_login_is_not_a_superuser() {
    let captured = capture_logs();

    let (_dir, store) = common::local_store();
    // Log every statement the servers run, to prove none carries the password.
    let logged = PostgresOptions::new().with_setting("log_statement", "'all'");
    let m = PostgresServer::start(logged.clone()).await.unwrap();
    common::create_schema(&m).await.unwrap();
    common::insert_rows(&m, 0..50).await.unwrap();
    let sm = common::strategy(&m, store.clone());
    let doc = common::master_snapshot(&sm, "leakcheck").await;
    let grant = doc.replication.clone().unwrap();
    let password = grant.password.clone().unwrap().0.expose().to_owned();
    assert_eq!(password.len(), 32);

    let r = PostgresServer::start(logged.with_server_id(2))
        .await
        .unwrap();
    let sr = common::strategy(&r, store.clone());
    sr.attach_replication_slave(
        &doc,
        &AttachRequest::new().with_timeout(Duration::from_secs(60)),
    )
    .await
    .unwrap();
    sr.catch_up_with(&*sm, Duration::from_secs(60))
        .await
        .unwrap();
    let cmdlines_while_streaming = all_command_lines();

    // An error path: a document carrying a wrong password is refused without echoing either.
    let mut bad = doc.clone();
    let wrong = "WrongPasswordWrongPassword012345";
    bad.replication.as_mut().unwrap().password = Some(TransportSecret(Secret::new(wrong)));
    let r2 = PostgresServer::start(PostgresOptions::new().with_server_id(3))
        .await
        .unwrap();
    let err = common::strategy(&r2, store.clone())
        .attach_replication_slave(
            &bad,
            &AttachRequest::new().with_timeout(Duration::from_secs(10)),
        )
        .await
        .expect_err("a wrong password is refused");
    let err_text = format!("{err} {err:?}");
    assert!(
        err_text.contains("password authentication failed"),
        "{err_text}"
    );

    let detached = sr
        .detach_replication_slave(&DetachOptions::new())
        .await
        .unwrap();

    // The login: REPLICATION only, not a superuser; rewind's four functions via its group.
    let user = &grant.user;
    let attrs = m
        .query(&format!(
            "SELECT rolsuper, rolreplication, rolcreaterole, rolcreatedb, rolbypassrls, rolcanlogin \
             FROM pg_roles WHERE rolname = '{user}'"
        ))
        .await
        .unwrap();
    assert_eq!(
        attrs[0]
            .iter()
            .map(|c| c.clone().unwrap())
            .collect::<Vec<_>>(),
        ["f", "t", "f", "f", "f", "t"],
        "replication login is REPLICATION + LOGIN only, never superuser"
    );
    let can_read_files = m
        .query_one(&format!(
            "SELECT has_function_privilege('{user}', 'pg_catalog.pg_read_binary_file(text)', 'EXECUTE') \
             AND has_function_privilege('{user}', 'pg_catalog.pg_ls_dir(text, boolean, boolean)', 'EXECUTE') \
             AND NOT has_function_privilege('{user}', 'pg_catalog.pg_read_file(text)', 'EXECUTE')"
        ))
        .await
        .unwrap();
    assert_eq!(can_read_files, "t", "exactly the rewind grants");

    // Where the password must not be.
    let pw = password.as_str();
    let auto_conf = std::fs::read_to_string(r.data_dir().join("postgresql.auto.conf")).unwrap();
    assert!(
        !auto_conf.contains(pw),
        "postgresql.auto.conf holds no password"
    );
    let handle = r.handle();
    for f in files_under(&handle.config_dir) {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        if f.file_name().unwrap() == objects::PASSFILE {
            continue;
        }
        assert!(!text.contains(pw), "{} holds the password", f.display());
    }
    for server in [&m, &r, &r2] {
        let logs = server.log_text();
        assert!(!logs.contains(pw), "server log holds the password");
        assert!(!logs.contains(wrong), "server log holds the wrong password");
    }
    assert!(
        m.log_text().contains("CREATE ROLE"),
        "statements were being logged"
    );
    assert!(
        !cmdlines_while_streaming.contains(pw),
        "a command line holds the password"
    );
    let logs = captured.text();
    assert!(
        logs.contains("pg_basebackup") && logs.contains("tar -x"),
        "command lines were logged: {logs}"
    );
    assert!(!logs.contains(pw), "our logs hold the password");
    assert!(!logs.contains(wrong), "our logs hold the wrong password");
    assert!(
        !err_text.contains(pw) && !err_text.contains(wrong),
        "errors hold no password"
    );
    assert!(
        !format!("{doc:?}").contains(pw),
        "Debug of the document is redacted"
    );
    assert!(!format!("{detached:?}").contains(pw));
    let snapshot_path = doc.dataset.snapshot_href.strip_prefix("file://").unwrap();
    let bytes = std::fs::read(snapshot_path).unwrap();
    assert!(
        !bytes.windows(pw.len()).any(|w| w == pw.as_bytes()),
        "the stored snapshot holds the password"
    );

    // The one place it lives is the standby's 0600 passfile (see the next test), which detach
    // removes.
    assert!(
        !handle.config_dir.join(objects::PASSFILE).exists(),
        "detach removed the passfile"
    );
}

#[tokio::test]
async fn standby_passfile_is_private_to_the_server_account() {
    let _ = capture_logs();
    let (_dir, store) = common::local_store();
    let m = PostgresServer::start(PostgresOptions::new()).await.unwrap();
    let sm = common::strategy(&m, store.clone());
    let doc = common::master_snapshot(&sm, "pf").await;
    let r = PostgresServer::start(PostgresOptions::new().with_server_id(2))
        .await
        .unwrap();
    let sr = common::strategy(&r, store.clone());
    sr.attach_replication_slave(&doc, &AttachRequest::new())
        .await
        .unwrap();
    let handle = r.handle();
    let pf = handle.config_dir.join(objects::PASSFILE);
    let meta = std::fs::metadata(&pf).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(
        meta.uid(),
        handle.os_user.unwrap().uid,
        "owned by the server's account"
    );
    let standby = std::fs::read_to_string(handle.config_dir.join(objects::STANDBY_FILE)).unwrap();
    assert!(standby.contains("passfile="), "{standby}");
    assert!(!standby.contains("password"), "{standby}");
}

/// A `pg_basebackup` stand-in that records its command line, its environment and the mode of
/// the passfile its connection string names, then runs the real one.
fn recording_basebackup(dir: &std::path::Path) -> std::path::PathBuf {
    let real =
        std::path::Path::new(trove_guest_postgres::testkit::DEFAULT_BIN_DIR).join("pg_basebackup");
    let script = format!(
        r#"#!/bin/sh
rec="$(dirname "$0")/record.txt"
{{
  echo "argv: $*"
  echo "env:"
  env
  for a in "$@"; do
    case "$a" in
      *passfile=*)
        pf=$(printf '%s' "$a" | sed -n "s/.*passfile='\([^']*\)'.*/\1/p")
        echo "passfile: $pf"
        stat -c 'passfile mode %a' "$pf";;
    esac
  done
}} >> "$rec"
exec {} "$@"
"#,
        real.display()
    );
    let path = dir.join("pg_basebackup");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir.join("record.txt")
}

#[tokio::test]
async fn admin_password_lives_only_in_a_0600_passfile_through_snapshot_and_attach() {
    let captured = capture_logs();
    let (_dir, store) = common::local_store();
    // A standby's roles are its primary's: both sides share the administrator's password.
    let admin_pw = format!("Adm1n{}:pw\\x", Secret::random(20).expose());
    let opts = PostgresOptions::new()
        .with_admin_password(Secret::new(admin_pw.clone()))
        .with_setting("log_statement", "'all'");
    let (m, r) = tokio::join!(
        PostgresServer::start(opts.clone()),
        PostgresServer::start(opts.clone().with_server_id(2))
    );
    let (m, r) = (m.unwrap(), r.unwrap());
    let refused = tokio_postgres::connect(&m.conninfo(), tokio_postgres::NoTls).await;
    assert!(
        refused.is_err(),
        "the test server really requires the password"
    );
    common::create_schema(&m).await.unwrap();
    common::insert_rows(&m, 0..50).await.unwrap();

    let wrap = tempfile::Builder::new()
        .prefix("tg-pgwrap-")
        .tempdir_in("/tmp")
        .unwrap();
    let record = recording_basebackup(wrap.path());
    let mut handle = m.handle();
    handle.bin_dir = Some(wrap.path().to_path_buf());
    let sm = Arc::new(PostgresStrategy::new(
        handle,
        store.clone(),
        PostgresStrategyOptions::new().with_wal_keep_size_mb(128),
    ));
    sm.enable_as_master(&EnableMasterOptions::new())
        .await
        .unwrap();
    let doc = sm
        .get_replication_snapshot(&SnapshotRequest::new().with_replica_id("adminpw"))
        .await
        .expect("pg_basebackup authenticates with the passfile");
    let sr = common::strategy(&r, store.clone());
    sr.attach_replication_slave(
        &doc,
        &AttachRequest::new().with_timeout(Duration::from_secs(60)),
    )
    .await
    .expect("attach connects with the administrator's password");
    common::insert_rows(&m, 50..80).await.unwrap();
    common::assert_caught_up(&sr, &sm, &r, &m).await;

    // pg_basebackup got the password from a 0600 passfile only, which is gone afterwards.
    let rec = std::fs::read_to_string(&record).expect("the wrapper ran");
    assert!(rec.contains("passfile mode 600"), "{rec}");
    let passfile = rec
        .lines()
        .find_map(|l| l.strip_prefix("passfile: "))
        .expect("a passfile was named");
    assert!(
        !std::path::Path::new(passfile).exists(),
        "the passfile is removed"
    );
    assert!(
        !rec.contains(&admin_pw),
        "no password on pg_basebackup's command line or in its environment"
    );

    // A replica whose administrator password differs cannot run on the primary's roles: the
    // attach fails clearly, and its own data directory is put back and serves again.
    let other_pw = format!("0ther{}", Secret::random(20).expose());
    let r2 = PostgresServer::start(
        PostgresOptions::new()
            .with_admin_password(Secret::new(other_pw.clone()))
            .with_setting("log_statement", "'all'")
            .with_server_id(3),
    )
    .await
    .unwrap();
    common::create_schema(&r2).await.unwrap();
    common::insert_rows(&r2, 0..7).await.unwrap();
    let own_before = common::fingerprint(&r2).await.unwrap();
    let doc2 = sm
        .get_replication_snapshot(&SnapshotRequest::new().with_replica_id("mismatch"))
        .await
        .unwrap();
    let err = common::strategy(&r2, store.clone())
        .attach_replication_slave(
            &doc2,
            &AttachRequest::new().with_timeout(Duration::from_secs(60)),
        )
        .await
        .expect_err("the primary's roles refuse this replica's administrator password");
    let err_text = format!("{err} {err:?}");
    eprintln!("attach refused as expected: {err}");
    assert!(err_text.contains("primary's"), "{err_text}");
    assert!(
        err_text.contains("previous data directory was put back"),
        "{err_text}"
    );
    assert_eq!(
        common::fingerprint(&r2).await.unwrap(),
        own_before,
        "the replica serves its own data again"
    );
    assert_eq!(
        r2.query_one("SELECT pg_is_in_recovery()").await.unwrap(),
        "f"
    );
    assert!(
        !r2.handle().config_dir.join(objects::STANDBY_FILE).exists(),
        "no standby configuration left"
    );
    let slots = m
        .query("SELECT slot_name FROM pg_replication_slots ORDER BY 1")
        .await
        .unwrap();
    assert!(
        !slots.contains(&vec![Some("trove_slot_mismatch_3".to_owned())]),
        "the failed attach's slot is dropped: {slots:?}"
    );

    // Where the administrator's passwords must not be.
    let logs = captured.text();
    for pw in [admin_pw.as_str(), other_pw.as_str()] {
        for server in [&m, &r, &r2] {
            let auto_conf =
                std::fs::read_to_string(server.data_dir().join("postgresql.auto.conf")).unwrap();
            assert!(!auto_conf.contains(pw), "postgresql.auto.conf holds it");
            assert!(!server.log_text().contains(pw), "a server log holds it");
            for f in files_under(&server.handle().config_dir) {
                let text = std::fs::read_to_string(&f).unwrap_or_default();
                assert!(!text.contains(pw), "{} holds it", f.display());
            }
        }
        assert!(!logs.contains(pw), "our logs hold it");
        assert!(!err_text.contains(pw), "the error holds it");
    }
    assert!(
        m.log_text().contains("pg_create_physical_replication_slot"),
        "statements were being logged"
    );
}
