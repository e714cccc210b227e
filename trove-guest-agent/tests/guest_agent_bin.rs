//! The `guest_agent` binary serves a real MariaDB server from a configuration file.

use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use trove_guest_agent::api::{AttachQuery, SnapshotCall};
use trove_guest_agent::client::AgentClient;
use trove_guest_agent::testing::sample::SampleDb;
use trove_guest_agent::testing::testbed::{left_behind, processes_mentioning};
use trove_guest_core::testkit::s3::MotoServer;
use trove_guest_core::{DatastoreKind, Role};
use trove_guest_mysql::testkit::{MariaDbOptions, MariaDbServer};

const AGENT: &str = env!("CARGO_BIN_EXE_guest_agent");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The configuration of an agent serving `server` (stopped: the agent runs it as its child),
/// listening on `listen`, with `store` as the body of its `[snapshot_store]` section.
fn agent_config(server: &MariaDbServer, server_id: u32, listen: &str, store: &str) -> String {
    format!(
        r#"
instance_id = "dfbbd9ca-b5e1-4028-adb7-f78643e179{server_id:02}"
listen = "{listen}"

[datastore]
type = "mariadb"
data_dir = "{data}"
config_dir = "{conf}"
work_dir = "{work}"
server_id = {server_id}

[datastore.admin]
port = {port}
socket = "{sock}"
user = "root"

[service]
kind = "process"
program = "/usr/sbin/mariadbd"
args = ["--defaults-file={cnf}", "--user=root"]
ready_unix = "{sock}"

[snapshot_store]
{store}

[mysql]
binlog_dir = "{binlog}"
relay_log_dir = "{relay}"
server_config = "{cnf}"
"#,
        data = server.data_dir().display(),
        conf = server.config_dir().display(),
        work = server.dir().join("work").display(),
        port = server.port(),
        sock = server.socket().display(),
        cnf = server.config_file().display(),
        binlog = server.binlog_dir().display(),
        relay = server.relay_log_dir().display(),
    )
}

/// Starts `guest_agent` with `config` (written next to it in `dir`) and waits until it serves
/// its server's status.
async fn start_agent(dir: &std::path::Path, config: &str, listen: &str) -> (Child, AgentClient) {
    let cfg_path = dir.join("agent.toml");
    std::fs::write(&cfg_path, config).unwrap();
    let mut agent = Command::new(AGENT)
        .arg("--config")
        .arg(&cfg_path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run guest_agent");
    let client = AgentClient::new(format!("http://{listen}"));
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

/// Stops an agent with SIGTERM; returns its exit status and stderr.
async fn stop_agent(mut agent: Child) -> (std::process::ExitStatus, String) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    tokio::task::spawn_blocking(move || {
        let status = agent.wait().unwrap();
        let mut err = String::new();
        use std::io::Read;
        agent
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        (status, err)
    })
    .await
    .unwrap()
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
    let (m_listen, r_listen) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let (m_agent, m) = start_agent(
        &dir.path().join("m"),
        &agent_config(&master, 1, &m_listen, &store),
        &m_listen,
    )
    .await;
    let (r_agent, r) = start_agent(
        &dir.path().join("r"),
        &agent_config(&replica, 2, &r_listen, &store),
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

    for agent in [r_agent, m_agent] {
        let (status, err) = stop_agent(agent).await;
        assert!(status.success(), "guest_agent exit: {status:?}\n{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_agent_from_a_config_file_takes_a_snapshot_and_stops_its_server() {
    // The testkit lays out an instance; the agent then runs its server as its own child.
    let server = MariaDbServer::start(MariaDbOptions::new(1))
        .await
        .expect("start MariaDB (apt-get install mariadb-server)");
    // mariadbd defers SIGTERM while it is still starting up: stop it only once it answers.
    let db = SampleDb::connect(DatastoreKind::Mariadb, &server.handle().admin)
        .await
        .expect("connect");
    db.server_version()
        .await
        .expect("the server answers queries");
    db.close().await;
    server
        .stop()
        .await
        .expect("hand the server over to the agent");
    let store = tempfile::Builder::new()
        .prefix("tg-agent-store-")
        .tempdir()
        .unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let config = agent_config(
        &server,
        1,
        &listen,
        &format!("url = \"file://{}\"", store.path().display()),
    );
    let cfg_path = store.path().join("agent.toml");
    std::fs::write(&cfg_path, config).unwrap();
    let mut agent = Command::new(AGENT)
        .arg("--config")
        .arg(&cfg_path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run guest_agent");

    let client = AgentClient::new(format!("http://{listen}"));
    let mut status = None;
    for _ in 0..300 {
        if let Ok(s) = client.status().await {
            status = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = status.expect("the agent serves its server's status");
    assert_eq!(status.role, Some(Role::Standalone));
    client
        .enable_master()
        .await
        .expect("enable master (restarts the child server)");
    let doc = client
        .snapshot(&SnapshotCall::default(), &mut |_| {})
        .await
        .expect("snapshot through the binary");
    assert!(
        doc.dataset
            .snapshot_href
            .starts_with(&format!("file://{}/", store.path().display())),
        "{}",
        doc.dataset.snapshot_href
    );

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out = tokio::task::spawn_blocking(move || {
        let status = agent.wait().unwrap();
        let mut err = String::new();
        use std::io::Read;
        agent
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        (status, err)
    })
    .await
    .unwrap();
    assert!(out.0.success(), "guest_agent exit: {:?}\n{}", out.0, out.1);
    let dir = server.dir().to_path_buf();
    // No mariadbd of this instance survives the agent.
    let data = server.data_dir();
    let left = processes_mentioning(&server.config_file());
    assert!(left.is_empty(), "{left:?}");
    drop(server);
    assert!(left_behind(&dir).is_empty());
    assert!(left_behind(&data).is_empty());
}
