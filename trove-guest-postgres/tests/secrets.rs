//! The replication login is least-privilege, and its password appears nowhere it must not:
//! configuration files, command lines, logs, errors, `Debug` output or the stored snapshot.

mod common;

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use trove_guest_core::secret::{Secret, TransportSecret};
use trove_guest_core::testkit::{PostgresOptions, PostgresServer};
use trove_guest_core::{
    AttachRequest, DetachOptions, EnableMasterOptions, LocalSnapshotStore, ReplicationStrategy,
    ReplicationStrategyExt, SnapshotRequest,
};
use trove_guest_postgres::objects;

/// Collects everything logged (at debug level) while the test runs.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Installs (once per test binary) a global debug-level subscriber writing into a buffer. A
/// global one, because per-thread subscribers miss events whose callsite interest another
/// test thread already cached.
fn capture_logs() -> Captured {
    static CAPTURED: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
    CAPTURED
        .get_or_init(|| {
            let captured = Captured::default();
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

    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LocalSnapshotStore::new(dir.path()).unwrap());
    // Log every statement the servers run, to prove none carries the password.
    let logged = PostgresOptions::new().with_setting("log_statement", "'all'");
    let m = PostgresServer::start(logged.clone()).await.unwrap();
    common::create_schema(&m).await.unwrap();
    common::insert_rows(&m, 0..50).await.unwrap();
    let sm = common::strategy(&m, store.clone());
    sm.enable_as_master(&EnableMasterOptions::new())
        .await
        .unwrap();
    let doc = sm
        .get_replication_snapshot(&SnapshotRequest::new().with_replica_id("leakcheck"))
        .await
        .unwrap();
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
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LocalSnapshotStore::new(dir.path()).unwrap());
    let m = PostgresServer::start(PostgresOptions::new()).await.unwrap();
    let sm = common::strategy(&m, store.clone());
    sm.enable_as_master(&EnableMasterOptions::new())
        .await
        .unwrap();
    let doc = sm
        .get_replication_snapshot(&SnapshotRequest::new().with_replica_id("pf"))
        .await
        .unwrap();
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
