//! The `guest_agent` binary serves a real MariaDB server from a configuration file, over HTTPS
//! with a bearer token and on a Unix socket.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use trove_guest_agent::api::SnapshotCall;
use trove_guest_agent::client::{AgentClient, ClientError, ClientOptions};
use trove_guest_agent::testing::agent_config::mariadb_sections;
use trove_guest_agent::testing::sample::SampleDb;
use trove_guest_agent::testing::testbed::{left_behind, processes_mentioning};
use trove_guest_core::testkit::free_port;
use trove_guest_core::{DatastoreKind, Role, Secret};
use trove_guest_mysql::testkit::{MariaDbOptions, MariaDbServer};

const AGENT: &str = env!("CARGO_BIN_EXE_guest_agent");

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
    let listen = format!("127.0.0.1:{}", free_port().unwrap());
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

[snapshot_store]
url = "file://{store}"

[credentials]
secret_dir = "{store}.secrets"
{sections}"#,
        store = store.path().display(),
        secrets = secrets.path().display(),
        socket = socket.display(),
        sections = mariadb_sections(&server, 1),
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

/// A configuration whose every file exists with the right modes (nothing is started).
struct CheckFixture {
    dir: tempfile::TempDir,
}

impl CheckFixture {
    fn new() -> Self {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new()
            .prefix("tg-check-")
            .tempdir()
            .unwrap();
        let p = dir.path();
        for d in ["data", "conf", "work"] {
            std::fs::create_dir(p.join(d)).unwrap();
        }
        let secret = |name: &str, text: &str, mode: u32| {
            std::fs::write(p.join(name), text).unwrap();
            std::fs::set_permissions(p.join(name), std::fs::Permissions::from_mode(mode)).unwrap();
        };
        secret("admin.password", "s3cret-admin\n", 0o600);
        secret("agent.token", "t0ken-0123456789abcdef\n", 0o600);
        secret(
            "guest_info.conf",
            "[DEFAULT]\nguest_id = 3f1c9a7e-0d4b-4c55-9a53-6b0f6e2d1a10\ninstance_rpc_encr_key = abcdefghijklmnopqrstuvwxyz012345\n",
            0o600,
        );
        secret(
            "transport_url",
            "amqp://trove:br0ker-pass@127.0.0.1:5672/%2f\n",
            0o600,
        );
        let f = CheckFixture { dir };
        f.write_config("");
        f
    }

    fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Writes `agent.toml`, with `extra` appended.
    fn write_config(&self, extra: &str) -> std::path::PathBuf {
        let p = self.path();
        let text = format!(
            r#"
instance_id = "3f1c9a7e-0d4b-4c55-9a53-6b0f6e2d1a10"
listen = "127.0.0.1:8780"

[auth]
token_file = "{p}/agent.token"

[datastore]
type = "mariadb"
data_dir = "{p}/data"
config_dir = "{p}/conf"
work_dir = "{p}/work"
server_id = 1

[datastore.admin]
port = 3306
user = "root"
password_file = "{p}/admin.password"

[service]
kind = "systemd"
unit = "mariadb.service"

[snapshot_store]
url = "file://{p}/snapshots"

[credentials]
secret_dir = "{p}/secrets"

[trove_rpc]
guest_info = "{p}/guest_info.conf"
transport_url_file = "{p}/transport_url"

[log]
format = "json"
{extra}"#,
            p = p.display()
        );
        let path = p.join("agent.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Runs `guest_agent --check-config` (killed, and the test failed, after 60 s).
    fn check(&self) -> (i32, String, String) {
        let mut child = Command::new(AGENT)
            .arg("--check-config")
            .arg(self.path().join("agent.toml"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run guest_agent --check-config");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while child.try_wait().expect("poll the check").is_none() {
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("guest_agent --check-config did not finish within 60 s");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let out = child
            .wait_with_output()
            .expect("read guest_agent --check-config");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

#[test]
fn check_config_reports_clear_text_passwords_when_the_transport_says_so_despite_a_secret_dir() {
    let f = CheckFixture::new();
    let path = f.path().join("agent.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text.replacen(
        "[credentials]\n",
        "[credentials]\ntransport = \"clear-text\"\n",
        1,
    );
    std::fs::write(&path, text).unwrap();
    let (code, out, err) = f.check();
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("replication passwords: in clear inside snapshot documents"),
        "{out}"
    );
    assert!(
        !out.contains("replication passwords: by reference"),
        "{out}"
    );
}

#[test]
fn check_config_accepts_a_valid_configuration_and_starts_or_creates_nothing() {
    let f = CheckFixture::new();
    let (code, out, err) = f.check();
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("configuration valid"), "{out}");
    assert!(out.contains("datastore: mariadb"), "{out}");
    assert!(
        out.contains(
            "trove_rpc: queue guestagent.3f1c9a7e-0d4b-4c55-9a53-6b0f6e2d1a10 (secure RPC)"
        ),
        "{out}"
    );
    assert!(out.contains("log: Json"), "{out}");
    assert!(out.contains("auth: bearer token"), "{out}");
    assert!(out.contains("replication passwords: by reference"), "{out}");
    assert!(
        !out.contains("s3cret")
            && !out.contains("br0ker-pass")
            && !out.contains("abcdefgh")
            && !out.contains("t0ken-"),
        "{out}"
    );
    // The snapshot directory the agent would create at start is not created by a check.
    assert!(!f.path().join("snapshots").exists());
}

#[test]
fn check_config_says_whether_a_replica_guest_still_waits_for_its_prepare() {
    let f = CheckFixture::new();
    let cfg = f.path().join("agent.toml");
    let with_marker = |marker: &std::path::Path| {
        let text = std::fs::read_to_string(&cfg).unwrap().replacen(
            "[trove_rpc]\n",
            &format!("[trove_rpc]\nprepare_marker = \"{}\"\n", marker.display()),
            1,
        );
        std::fs::write(&cfg, text).unwrap();
    };
    // In a directory that does not exist: the marker could never be written.
    with_marker(&f.path().join("nowhere/guest.prepared"));
    let (code, out, err) = f.check();
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(err.contains("trove_rpc.prepare_marker"), "{err}");

    let marker = f.path().join("guest.prepared");
    f.write_config("");
    with_marker(&marker);
    let (code, out, err) = f.check();
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("absent: no heartbeat until prepare(snapshot) succeeds"),
        "{out}"
    );
    std::fs::write(&marker, "").unwrap();
    let (code, out, err) = f.check();
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("present: heartbeats report the server"),
        "{out}"
    );
}

#[test]
fn check_config_validates_the_admin_connections_tls() {
    let f = CheckFixture::new();
    let ca = f.path().join("ca.pem");
    let tls = |admin: &str| {
        format!(
            "\n[datastore.tls]\nca_file = \"{}\"\nserver_name = \"db1.example.net\"\nadmin = \"{admin}\"\n",
            ca.display()
        )
    };
    // A private key where the CA should be: refused, its contents never quoted.
    let key = "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n";
    std::fs::write(&ca, key).unwrap();
    f.write_config(&tls("verify"));
    let (code, out, err) = f.check();
    assert_eq!(code, 2, "a key is not a CA: {out}\n{err}");
    assert!(
        err.contains("[datastore.tls] admin") && err.contains("PRIVATE KEY"),
        "{err}"
    );
    assert!(
        !err.contains("MIIB") && !out.contains("MIIB"),
        "{out}\n{err}"
    );

    std::fs::remove_file(&ca).unwrap();
    let (code, _, err) = f.check();
    assert_eq!(code, 2, "a missing CA file: {err}");
    assert!(err.contains("ca.pem"), "{err}");

    let certs = f.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    let test_ca = trove_guest_core::testkit::TestCa::generate(&certs, "admin").unwrap();
    std::fs::copy(test_ca.ca_file(), &ca).unwrap();
    let (code, out, err) = f.check();
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("admin connection: 127.0.0.1:3306 over TLS, verified with")
            && out.contains("for db1.example.net"),
        "{out}"
    );

    f.write_config(&tls("off"));
    let (code, out, err) = f.check();
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("admin connection: 127.0.0.1:3306 without TLS"),
        "{out}"
    );
}

#[test]
fn check_config_refuses_each_broken_setting_with_its_typed_error() {
    use std::os::unix::fs::PermissionsExt;
    let f = CheckFixture::new();

    // A password file readable by others.
    let pw = f.path().join("admin.password");
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, out, err) = f.check();
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(
        err.contains("configuration invalid") && err.contains("chmod 600"),
        "{err}"
    );
    assert!(!err.contains("s3cret"), "{err}");
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();

    // A token file readable by others: refused, the token never quoted.
    let token = f.path().join("agent.token");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, out, err) = f.check();
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(err.contains("agent.token"), "{err}");
    assert!(!err.contains("t0ken-"), "{err}");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();

    // A transport URL that is not an AMQP URL: named by file, never quoted.
    std::fs::write(
        f.path().join("transport_url"),
        "http://trove:br0ker-pass@host/\n",
    )
    .unwrap();
    let (code, _, err) = f.check();
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not an AMQP URL"), "{err}");
    assert!(!err.contains("br0ker-pass"), "{err}");
    std::fs::write(
        f.path().join("transport_url"),
        "amqp://trove:br0ker-pass@127.0.0.1:5672/%2f\n",
    )
    .unwrap();

    // A missing data directory.
    std::fs::remove_dir(f.path().join("data")).unwrap();
    let (code, _, err) = f.check();
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("datastore.data_dir"), "{err}");
    std::fs::create_dir(f.path().join("data")).unwrap();

    // A log level that is not a filter, and an unknown key.
    f.write_config("level = \"info,=[\"\n");
    let (code, _, err) = f.check();
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("log.level"), "{err}");
    f.write_config("colour = true\n");
    let (code, _, err) = f.check();
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("colour"), "{err}");

    // A store scheme the agent does not take.
    let cfg = f.write_config("");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("url = \"file://", "url = \"gs://");
    std::fs::write(&cfg, text).unwrap();
    let (code, _, err) = f.check();
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("file:// and s3://"), "{err}");

    // And the same file, repaired, passes.
    f.write_config("");
    assert_eq!(f.check().0, 0);
}

#[test]
fn check_config_validates_the_servers_certificate_and_key_without_printing_the_key() {
    use std::os::unix::fs::PermissionsExt;
    let f = CheckFixture::new();
    let certs = f.path().join("server-certs");
    std::fs::create_dir(&certs).unwrap();
    let ca = trove_guest_core::testkit::TestCa::generate(&certs, "server").unwrap();
    let server = ca
        .server_certificate("server", &["localhost", "127.0.0.1"], None)
        .unwrap();
    let stranger = ca
        .server_certificate("stranger", &["localhost"], None)
        .unwrap();
    let key_text = std::fs::read_to_string(&server.key_file).unwrap();
    let key_line = key_text.lines().nth(1).unwrap().to_owned();
    let tls = |cert: &Path, key: &Path| {
        format!(
            "\n[datastore.tls]\nca_file = \"{}\"\nserver_name = \"localhost\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            ca.ca_file().display(),
            cert.display(),
            key.display()
        )
    };
    let no_key = |out: &str, err: &str| {
        assert!(
            !out.contains(&key_line) && !err.contains(&key_line) && !err.contains("PRIVATE KEY"),
            "{out}\n{err}"
        );
    };

    // The certificate and its own key (0600).
    f.write_config(&tls(&server.cert_file, &server.key_file));
    let (code, out, err) = f.check();
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("replication tls: CA") && out.contains("private and matching"),
        "{out}"
    );
    no_key(&out, &err);

    // The key readable by others: refused, named, never quoted.
    std::fs::set_permissions(&server.key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, out, err) = f.check();
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(
        err.contains("[datastore.tls] key_file") && err.contains("chmod 600"),
        "{err}"
    );
    no_key(&out, &err);
    std::fs::set_permissions(&server.key_file, std::fs::Permissions::from_mode(0o600)).unwrap();

    // Another certificate's key.
    f.write_config(&tls(&server.cert_file, &stranger.key_file));
    let (code, out, err) = f.check();
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(
        err.contains("[datastore.tls] key_file") && err.contains("not the key of the certificate"),
        "{err}"
    );
    no_key(&out, &err);

    // The key where the certificate should be.
    f.write_config(&tls(&server.key_file, &server.key_file));
    let (code, out, err) = f.check();
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(err.contains("[datastore.tls] cert_file"), "{err}");
    no_key(&out, &err);

    // A key file without its certificate file.
    f.write_config(&format!(
        "\n[datastore.tls]\nca_file = \"{}\"\nkey_file = \"{}\"\n",
        ca.ca_file().display(),
        server.key_file.display()
    ));
    let (code, _, err) = f.check();
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("go together"), "{err}");
}
