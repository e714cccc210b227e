//! The `guest_agent` binary serves a real MariaDB server from a configuration file, over HTTPS
//! with a bearer token and on a Unix socket.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use trove_guest_agent::api::SnapshotCall;
use trove_guest_agent::client::{AgentClient, ClientError, ClientOptions};
use trove_guest_agent::testing::sample::SampleDb;
use trove_guest_agent::testing::testbed::{left_behind, processes_mentioning};
use trove_guest_core::{DatastoreKind, Role, Secret};
use trove_guest_mysql::testkit::{MariaDbOptions, MariaDbServer};

const AGENT: &str = env!("CARGO_BIN_EXE_guest_agent");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Writes a CA-signed certificate for 127.0.0.1 and its key (0600) into `dir`; returns the CA.
fn write_test_pki(dir: &Path) -> String {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    std::fs::write(dir.join("agent.crt"), cert.pem()).unwrap();
    write_private(&dir.join("agent.key"), &key.serialize_pem());
    ca.pem()
}

fn write_private(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
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
    let secrets = tempfile::Builder::new()
        .prefix("tg-agent-secrets-")
        .tempdir()
        .unwrap();
    let ca_pem = write_test_pki(secrets.path());
    let token = Secret::random(32);
    write_private(&secrets.path().join("agent.token"), token.expose());
    let socket = secrets.path().join("agent.sock");
    let config = format!(
        r#"
instance_id = "dfbbd9ca-b5e1-4028-adb7-f78643e17998"
listen = "{listen}"

[http]
tls_cert_file = "{secrets}/agent.crt"
tls_key_file = "{secrets}/agent.key"
unix_socket = "{socket}"

[auth]
token_file = "{secrets}/agent.token"

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
        secrets = secrets.path().display(),
        socket = socket.display(),
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

    let client = AgentClient::with_options(
        format!("https://{listen}"),
        &ClientOptions::new()
            .with_ca_pem(ca_pem.clone())
            .with_token(token.clone()),
    )
    .unwrap();
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
    // Without the token, or with another: 401, over the same TLS.
    for other in [None, Some(Secret::random(32))] {
        let mut options = ClientOptions::new().with_ca_pem(ca_pem.clone());
        if let Some(t) = other {
            options = options.with_token(t);
        }
        let anonymous = AgentClient::with_options(format!("https://{listen}"), &options).unwrap();
        match anonymous.enable_master().await.unwrap_err() {
            ClientError::Api { status, error } => {
                assert_eq!((status, error.kind.as_str()), (401, "unauthorized"));
            }
            other => panic!("{other}"),
        }
    }
    // Plain HTTP is not served.
    assert!(
        AgentClient::new(format!("http://{listen}"))
            .status()
            .await
            .is_err()
    );
    // The Unix socket serves this process's uid (root) without a token.
    let on_socket = AgentClient::with_options(
        "http://localhost",
        &ClientOptions::new().with_unix_socket(&socket),
    )
    .unwrap();
    assert_eq!(
        on_socket.status().await.expect("served on the socket").role,
        Some(Role::Standalone)
    );
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
    assert!(!socket.exists(), "the agent's socket outlived it");
    let dir = server.dir().to_path_buf();
    // No mariadbd of this instance survives the agent.
    let data = server.data_dir();
    let left = processes_mentioning(&server.config_file());
    assert!(left.is_empty(), "{left:?}");
    drop(server);
    assert!(left_behind(&dir).is_empty());
    assert!(left_behind(&data).is_empty());
}
