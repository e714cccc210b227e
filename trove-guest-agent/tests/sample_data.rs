//! The sample data's checksums tell equal data from changed data, on real servers.

use trove_guest_agent::testing::sample::SampleDb;
use trove_guest_core::DatastoreKind;
use trove_guest_mysql::testkit::{MariaDbOptions, MariaDbServer};
use trove_guest_postgres::testkit::{PostgresOptions, PostgresServer};

async fn check(
    kind: DatastoreKind,
    a: &trove_guest_core::DatastoreHandle,
    b: &trove_guest_core::DatastoreHandle,
) {
    let da = SampleDb::connect(kind, &a.admin).await.expect("connect a");
    let db = SampleDb::connect(kind, &b.admin).await.expect("connect b");
    for d in [&da, &db] {
        d.create_schema().await.expect("schema");
        d.load(2500, |_| {}).await.expect("load");
    }
    let fa = da.fingerprint().await.expect("fingerprint a");
    assert_eq!(fa.total_rows(), 5000);
    assert_eq!(
        fa,
        db.fingerprint().await.expect("fingerprint b"),
        "same ids, same checksums"
    );
    assert!(da.size_bytes().await.expect("size") > 0);
    db.insert_rows(9000..9001).await.expect("one more row");
    assert_ne!(
        fa,
        db.fingerprint().await.expect("fingerprint b"),
        "an extra row is seen"
    );
    da.close().await;
    db.close().await;
}

#[tokio::test]
async fn mariadb_sample_checksums_match_equal_data_and_catch_a_difference() {
    let a = MariaDbServer::start(MariaDbOptions::new(1))
        .await
        .expect("start MariaDB (apt-get install mariadb-server)");
    let b = MariaDbServer::start(MariaDbOptions::new(2))
        .await
        .expect("start MariaDB");
    check(DatastoreKind::Mariadb, &a.handle(), &b.handle()).await;
}

#[tokio::test]
async fn postgres_sample_checksums_match_equal_data_and_catch_a_difference() {
    let a = PostgresServer::start(PostgresOptions::new())
        .await
        .expect("start PostgreSQL (apt-get install postgresql-15)");
    let b = PostgresServer::start(PostgresOptions::new().with_server_id(2))
        .await
        .expect("start PostgreSQL");
    check(DatastoreKind::Postgresql, &a.handle(), &b.handle()).await;
}
