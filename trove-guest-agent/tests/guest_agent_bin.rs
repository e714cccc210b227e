//! The `guest_agent` binary serves a real MariaDB server from a configuration file.

use std::process::{Command, Stdio};
use std::time::Duration;

use trove_guest_agent::api::SnapshotCall;
use trove_guest_agent::client::AgentClient;
use trove_guest_agent::testing::sample::SampleDb;
use trove_guest_agent::testing::testbed::{left_behind, processes_mentioning};
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
    let config = format!(
        r#"
instance_id = "dfbbd9ca-b5e1-4028-adb7-f78643e17998"
listen = "{listen}"

[datastore]
type = "mariadb"
data_dir = "{data}"
config_dir = "{conf}"
work_dir = "{work}"
server_id = 1

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
url = "file://{store}"

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
        store = store.path().display(),
        binlog = server.binlog_dir().display(),
        relay = server.relay_log_dir().display(),
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
