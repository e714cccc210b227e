//! Replication passwords by reference, live through two guest agents sharing a directory
//! secret store: the snapshot document carries `password_ref` only, the replica resolves it,
//! the account is limited to the replica's host (`mysql.user`, `pg_hba_file_rules`), and
//! cleanup and demote remove the account, its host entry and the secret.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use trove_guest_agent::api::{AttachQuery, SnapshotCall};
use trove_guest_agent::testing::sample::SampleDb;
use trove_guest_core::{DatastoreKind, DirectorySecretStore, Role, SecretStore};
use trove_guest_tests::{node_with_secrets, temp_store};

const CATCH_UP: Duration = Duration::from_secs(60);

/// `(user, host)` rows of the account, or the hba rules naming the login.
async fn account_rows(db: &SampleDb, kind: DatastoreKind, user: &str) -> Vec<Vec<String>> {
    assert!(
        user.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
        "{user:?}"
    );
    let sql = match kind {
        DatastoreKind::Postgresql => format!(
            "SELECT array_to_string(database, ','), array_to_string(user_name, ','), \
             coalesce(address, 'all'), coalesce(netmask, ''), auth_method \
             FROM pg_hba_file_rules WHERE '{user}' = ANY(user_name) ORDER BY line_number"
        ),
        _ => format!("SELECT User, Host FROM mysql.user WHERE User = '{user}' ORDER BY Host"),
    };
    db.rows_text(&sql).await.expect("read the account catalog")
}

fn secret_files(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("read the secret directory")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

async fn password_ref_flow(kind: DatastoreKind) {
    let store = temp_store();
    let secrets_dir = tempfile::Builder::new()
        .prefix("tg-it-secrets-")
        .tempdir()
        .expect("temp dir for the secret store");
    let secrets: Arc<dyn SecretStore> = Arc::new(
        DirectorySecretStore::open(secrets_dir.path().join("s")).expect("directory secret store"),
    );
    let sdir = secrets_dir.path().join("s");
    let master = node_with_secrets(kind, 1, &store, secrets.clone(), "m").await;
    let replica = node_with_secrets(kind, 2, &store, secrets.clone(), "r").await;
    let mdb = SampleDb::connect(kind, &master.server().handle().admin)
        .await
        .expect("connect to the master");
    mdb.create_schema().await.expect("schema");
    mdb.load(200, |_| {}).await.expect("rows");

    master.client.enable_master().await.expect("enable master");
    let doc = master
        .client
        .snapshot(
            &SnapshotCall {
                replica_id: Some("r1".into()),
                replica_host: Some("127.0.0.1".into()),
                ..SnapshotCall::default()
            },
            &mut |_| {},
        )
        .await
        .expect("snapshot");
    let grant = doc.replication.clone().expect("a replication grant");
    let sql = kind.as_str() != "redis";
    assert!(
        grant.password.is_none(),
        "no clear-text password in the document"
    );
    let reference = grant.password_ref.clone().expect("a password reference");
    if sql {
        assert_eq!(grant.replica_host.as_deref(), Some("127.0.0.1"));
    }
    assert_eq!(secret_files(&sdir), vec![reference.clone()]);
    let mode = std::fs::metadata(sdir.join(&reference))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the secret file is 0600");
    let password = secrets.get(&reference).await.expect("the stored password");
    let text = serde_json::to_string(&doc).unwrap();
    assert!(
        !text.contains(password.expose()),
        "the document does not carry the password"
    );

    // The account is limited to the replica's host (Redis ACL users have no host).
    let rows = if sql {
        account_rows(&mdb, kind, &grant.user).await
    } else {
        Vec::new()
    };
    match kind {
        _ if !sql => {}
        DatastoreKind::Postgresql => {
            assert_eq!(
                rows[0],
                vec![
                    "replication".to_owned(),
                    grant.user.clone(),
                    "127.0.0.1".into(),
                    "255.255.255.255".into(),
                    "scram-sha-256".into()
                ],
                "{rows:?}"
            );
            assert!(
                rows.iter()
                    .any(|r| r[0] == "replication" && r[2] == "all" && r[4] == "reject"),
                "any other address is rejected: {rows:?}"
            );
        }
        _ => assert_eq!(
            rows,
            vec![vec![grant.user.clone(), "127.0.0.1".to_owned()]],
            "the account's host"
        ),
    }

    // A reference the store does not hold is refused before anything changes.
    let mut unknown = doc.clone();
    unknown.replication.as_mut().unwrap().password_ref = Some("replication-m-missing".into());
    let err = replica
        .client
        .attach(&unknown, &AttachQuery::default(), &mut |_| {})
        .await
        .expect_err("an unknown reference is refused");
    assert_eq!(err.kind(), Some("not_found"), "{err}");
    assert_eq!(
        replica.client.status().await.expect("status").role,
        Some(Role::Standalone)
    );

    // The replica resolves the reference through its own secret store.
    replica
        .client
        .attach(&doc, &AttachQuery::default(), &mut |_| {})
        .await
        .expect("attach by reference");
    mdb.insert_rows(200..220).await.expect("rows after attach");
    let txn = master.client.latest_txn().await.expect("latest txn");
    replica
        .client
        .wait_for_txn(&txn, CATCH_UP)
        .await
        .expect("the replica replicates with the resolved password");

    // Detach and cleanup: the account, its host entry and the secret are gone.
    let detached = replica
        .client
        .detach_replication_action(&replica.instance_id)
        .await
        .expect("detach");
    master.client.cleanup(&detached).await.expect("cleanup");
    if sql {
        assert_eq!(
            account_rows(&mdb, kind, &grant.user).await,
            Vec::<Vec<String>>::new(),
            "no account or hba entry after cleanup"
        );
    }
    assert!(
        secret_files(&sdir).is_empty(),
        "the secret is deleted on cleanup"
    );

    // A second snapshot's account and secret go with the demote.
    let doc2 = master
        .client
        .snapshot(
            &SnapshotCall {
                replica_id: Some("r2".into()),
                replica_host: Some("127.0.0.1".into()),
                ..SnapshotCall::default()
            },
            &mut |_| {},
        )
        .await
        .expect("second snapshot");
    let user2 = doc2.replication.unwrap().user;
    assert_eq!(secret_files(&sdir).len(), 1);
    master.client.demote().await.expect("demote");
    assert!(
        secret_files(&sdir).is_empty(),
        "the secrets are deleted on demote"
    );
    if sql {
        // MariaDB: no account; PostgreSQL: demote removed the whole replication block.
        assert!(account_rows(&mdb, kind, &user2).await.is_empty());
    }
    mdb.close().await;
    replica.shutdown().await;
    master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mariadb_passes_the_password_by_reference_and_limits_the_account_to_the_replica_host() {
    password_ref_flow(DatastoreKind::Mariadb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_passes_the_password_by_reference_and_limits_the_login_to_the_replica_host() {
    password_ref_flow(DatastoreKind::Postgresql).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_passes_the_password_by_reference() {
    password_ref_flow("redis".parse().expect("a datastore name")).await;
}
