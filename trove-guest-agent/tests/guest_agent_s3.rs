//! Two `guest_agent` binaries with an `s3://` snapshot store (credentials from a 0600 file) on a
//! local S3 server: the master's agent snapshots into S3, the replica's agent attaches from it.
//! Both ask for a bearer token and pass replication passwords by reference.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use trove_guest_agent::api::{AttachQuery, SnapshotCall};
use trove_guest_agent::client::{AgentClient, ClientOptions};
use trove_guest_agent::testing::agent_config::mariadb_sections;
use trove_guest_agent::testing::sample::SampleDb;
use trove_guest_core::testkit::free_port;
use trove_guest_core::testkit::s3::MotoServer;
use trove_guest_core::{DatastoreKind, Role, Secret};
use trove_guest_mysql::testkit::{MariaDbOptions, MariaDbServer};

const AGENT: &str = env!("CARGO_BIN_EXE_guest_agent");
const TOKEN: &str = "s3-e2e-token-0123456789";

/// The configuration of an agent serving `server` (stopped: the agent runs it as its child),
/// listening on `listen` with the token file and secret store of `shared`, with `store` as the
/// body of its `[snapshot_store]` section.
fn agent_config(
    server: &MariaDbServer,
    server_id: u32,
    listen: &str,
    store: &str,
    shared: &Path,
) -> String {
    format!(
        r#"
instance_id = "dfbbd9ca-b5e1-4028-adb7-f78643e179{server_id:02}"
listen = "{listen}"

[auth]
token_file = "{shared}/agent.token"

[credentials]
secret_dir = "{shared}/secrets"

[snapshot_store]
{store}
{sections}"#,
        shared = shared.display(),
        sections = mariadb_sections(server, server_id),
    )
}

/// Starts `guest_agent` with `config` (written next to it in `dir`) and waits until it serves
/// its server's status.
async fn start_agent(dir: &std::path::Path, config: &str, listen: &str) -> (Child, AgentClient) {
    let cfg_path = dir.join("agent.toml");
    std::fs::write(&cfg_path, config).unwrap();
    // Its log goes to a file: a pipe nobody reads could fill and stall the agent.
    let log = std::fs::File::create(dir.join("agent.stderr")).unwrap();
    let mut agent = Command::new(AGENT)
        .arg("--config")
        .arg(&cfg_path)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("run guest_agent");
    let client = AgentClient::with_options(
        format!("http://{listen}"),
        &ClientOptions::new().with_token(Secret::new(TOKEN)),
    )
    .expect("the agent's client");
    for _ in 0..300 {
        if client.status().await.is_ok() {
            return (agent, client);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = agent.kill();
    let _ = agent.wait();
    panic!("the agent at {listen} does not serve its status");
}

/// Stops an agent (whose directory is `dir`) with SIGTERM and waits at most 60 s for it;
/// returns its exit status and its log.
async fn stop_agent(mut agent: Child, dir: &Path) -> (std::process::ExitStatus, String) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    for _ in 0..600 {
        if let Some(status) = agent.try_wait().unwrap() {
            let log = std::fs::read_to_string(dir.join("agent.stderr")).unwrap_or_default();
            return (status, log);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = agent.kill();
    let _ = agent.wait();
    panic!("guest_agent did not stop within 60 s of SIGTERM");
}

/// A testkit MariaDB server with `rows` sample rows, stopped so an agent can run it.
async fn stopped_server(server_id: u32, rows: u64) -> MariaDbServer {
    let server = MariaDbServer::start(MariaDbOptions::new(server_id))
        .await
        .expect("start MariaDB (apt-get install mariadb-server)");
    // mariadbd defers SIGTERM while it is still starting up: stop it only once it answers.
    let db = SampleDb::connect(DatastoreKind::Mariadb, &server.handle().admin)
        .await
        .expect("connect");
    db.server_version()
        .await
        .expect("the server answers queries");
    if rows > 0 {
        db.create_schema().await.expect("sample schema");
        db.insert_rows(0..rows).await.expect("sample rows");
    }
    db.close().await;
    server
        .stop()
        .await
        .expect("hand the server over to the agent");
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_agents_with_an_s3_store_build_a_replica_from_the_masters_s3_snapshot() {
    let s3 = MotoServer::start()
        .await
        .expect("start the moto S3 server (python3-venv)");
    s3.create_bucket("snaps").await.expect("create the bucket");
    let creds = s3.credentials_file();
    let mode = std::fs::metadata(&creds).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the credentials file is private");
    let store = format!(
        "url = \"s3://snaps/trove/e2e\"\nendpoint = \"{}\"\ncredentials_file = \"{}\"\n\
         allow_http = true",
        s3.endpoint(),
        creds.display()
    );
    let master = stopped_server(1, 100).await;
    let replica = stopped_server(2, 0).await;
    let dir = tempfile::Builder::new()
        .prefix("tg-agent-s3-")
        .tempdir()
        .unwrap();
    std::fs::create_dir_all(dir.path().join("m")).unwrap();
    std::fs::create_dir_all(dir.path().join("r")).unwrap();
    let token = dir.path().join("agent.token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (m_listen, r_listen) = (
        format!("127.0.0.1:{}", free_port().unwrap()),
        format!("127.0.0.1:{}", free_port().unwrap()),
    );
    let (m_agent, m) = start_agent(
        &dir.path().join("m"),
        &agent_config(&master, 1, &m_listen, &store, dir.path()),
        &m_listen,
    )
    .await;
    let (r_agent, r) = start_agent(
        &dir.path().join("r"),
        &agent_config(&replica, 2, &r_listen, &store, dir.path()),
        &r_listen,
    )
    .await;

    m.enable_master().await.expect("enable master");
    let call = SnapshotCall {
        replica_id: Some("e2e-replica".into()),
        replica_host: Some("127.0.0.1".into()),
        ..SnapshotCall::default()
    };
    let doc = m
        .snapshot(&call, &mut |_| {})
        .await
        .expect("snapshot into S3 through the master's agent");
    assert!(
        doc.dataset
            .snapshot_href
            .starts_with("s3://snaps/trove/e2e/"),
        "{}",
        doc.dataset.snapshot_href
    );
    let replication = doc.replication.as_ref().expect("replication credentials");
    assert!(
        replication.password.is_none() && replication.password_ref.is_some(),
        "the document carries a reference, not the password"
    );
    // Rows written after the snapshot must arrive by replication.
    let mdb = SampleDb::connect(DatastoreKind::Mariadb, &master.handle().admin)
        .await
        .expect("connect to the master");
    mdb.insert_rows(100..150)
        .await
        .expect("rows after the snapshot");
    mdb.close().await;
    r.attach(&doc, &AttachQuery::default(), &mut |_| {})
        .await
        .expect("attach the replica from the S3 snapshot");
    assert_eq!(r.status().await.unwrap().role, Some(Role::Replica));
    let rdb = SampleDb::connect(DatastoreKind::Mariadb, &replica.handle().admin)
        .await
        .expect("connect to the replica");
    let mut orders = 0;
    for _ in 0..200 {
        orders = rdb.count("orders").await.unwrap_or(0);
        if orders == 150 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let products = rdb.count("products").await.expect("count products");
    rdb.close().await;
    assert_eq!(
        orders, 150,
        "the replica has every row, by snapshot and replication"
    );
    assert!(products > 0);

    for (agent, side) in [(r_agent, "r"), (m_agent, "m")] {
        let (status, err) = stop_agent(agent, &dir.path().join(side)).await;
        assert!(status.success(), "guest_agent exit: {status:?}\n{err}");
    }
}
