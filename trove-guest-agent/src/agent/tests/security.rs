//! Who may call the agent (token over TCP and TLS, peer uid over the Unix socket) and what its
//! error bodies show, over real sockets against the fake strategy.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use tokio::process::Command;

use trove_guest_core::Secret;

use super::{Fixture, fixture_on};
use crate::agent::{AgentAuth, AgentOptions, ErrorDisclosure, ListenOn, TlsFiles};
use crate::api::{self, kinds};
use crate::client::{AgentClient, ClientError, ClientOptions};

const TOKEN: &str = "test-token-0123456789abcdef";

fn with_token() -> AgentOptions {
    AgentOptions::new("inst-1").with_auth(AgentAuth::new().with_token(Secret::new(TOKEN)))
}

fn tcp(_: &Path) -> ListenOn {
    ListenOn::Tcp("127.0.0.1:0".parse().unwrap())
}

fn client(f: &Fixture, options: ClientOptions) -> AgentClient {
    AgentClient::with_options(f.agent.url(), &options).unwrap()
}

fn api_status(e: ClientError) -> (u16, String) {
    match e {
        ClientError::Api { status, error } => (status, error.kind),
        other => panic!("expected an error answer, got {other}"),
    }
}

#[tokio::test]
async fn the_agent_answers_401_without_its_token_and_serves_with_it() {
    let f = fixture_on(true, with_token(), tcp).await;
    // No token: 401 of kind unauthorized, with the challenge, on routes and non-routes alike.
    let e = f.client.status().await.unwrap_err();
    assert_eq!(api_status(e), (401, kinds::UNAUTHORIZED.to_owned()));
    let http = reqwest::Client::new();
    for path in [api::STATUS, "/no/such/route"] {
        let resp = http
            .get(format!("{}{path}", f.agent.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "{path}");
        assert_eq!(
            resp.headers()["www-authenticate"].to_str().unwrap(),
            "Bearer realm=\"trove-guest-agent\""
        );
        let body: api::ErrorBody = resp.json().await.unwrap();
        assert_eq!(body.error.kind, kinds::UNAUTHORIZED);
    }
    // A change is refused before it starts.
    let (status, _) = f.client.post_raw(api::DEMOTE, "{}").await.unwrap();
    assert_eq!(status, 401);
    // A wrong token, and the right one sent other than as a bearer token.
    let wrong = client(
        &f,
        ClientOptions::new().with_token(Secret::new("test-token-0123456789abcdeF")),
    );
    assert_eq!(api_status(wrong.status().await.unwrap_err()).0, 401);
    let basic = http
        .get(format!("{}{}", f.agent.url(), api::STATUS))
        .header("authorization", format!("Basic {TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 401);
    // The token: served.
    let right = client(&f, ClientOptions::new().with_token(Secret::new(TOKEN)));
    right.status().await.expect("served with the token");
    right.demote().await.expect("a change with the token");
}

/// A CA and a certificate for 127.0.0.1 and localhost signed by it, as PEM files in `dir`;
/// returns the server's files and the CA's PEM.
fn test_pki(dir: &Path) -> (TlsFiles, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let (cert_path, key_path) = (dir.join("agent.crt"), dir.join("agent.key"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    (TlsFiles::new(cert_path, key_path), ca.pem())
}

#[tokio::test]
async fn tls_clients_need_the_agents_ca_and_its_token() {
    let ca_pem = std::sync::Mutex::new(String::new());
    let f = fixture_on(true, with_token(), |dir| {
        let (tls, ca) = test_pki(dir);
        *ca_pem.lock().unwrap() = ca;
        ListenOn::Tls {
            addr: "127.0.0.1:0".parse().unwrap(),
            tls,
        }
    })
    .await;
    let ca_pem = ca_pem.into_inner().unwrap();
    assert!(
        f.agent.url().starts_with("https://127.0.0.1:"),
        "{}",
        f.agent.url()
    );
    // The CA and the token: served over TLS.
    let good = client(
        &f,
        ClientOptions::new()
            .with_ca_pem(ca_pem.clone())
            .with_token(Secret::new(TOKEN)),
    );
    good.status().await.expect("served over TLS");
    // The CA without the token: 401 over TLS.
    let anonymous = client(&f, ClientOptions::new().with_ca_pem(ca_pem));
    assert_eq!(api_status(anonymous.status().await.unwrap_err()).0, 401);
    // Another CA: the certificate does not verify, nothing is sent.
    let other_dir = tempfile::tempdir().unwrap();
    let (_, other_ca) = test_pki(other_dir.path());
    let stranger = client(
        &f,
        ClientOptions::new()
            .with_ca_pem(other_ca)
            .with_token(Secret::new(TOKEN)),
    );
    let e = stranger.status().await.unwrap_err();
    assert!(matches!(e, ClientError::Http(_)), "{e}");
    // Plain HTTP to the TLS port is not served either.
    let plain = AgentClient::with_options(
        f.agent.url().replace("https://", "http://"),
        &ClientOptions::new().with_token(Secret::new(TOKEN)),
    )
    .unwrap();
    assert!(plain.status().await.is_err());
}

#[tokio::test]
async fn a_tls_key_file_others_may_read_or_holding_no_key_is_refused_at_bind() {
    use std::os::unix::fs::PermissionsExt as _;
    let f = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(trove_guest_core::LocalSnapshotStore::new(f.path()).unwrap());
    let strategy = std::sync::Arc::new(super::FakeStrategy {
        store: store.clone(),
        gate: std::sync::Arc::new(tokio::sync::Semaphore::new(1)),
        attaches: Default::default(),
        down: Default::default(),
        enable_fails: Default::default(),
    });
    // A key file that is not a key, and a real key others may read.
    for loose in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let (tls, _) = test_pki(dir.path());
        if loose {
            std::fs::set_permissions(&tls.key, std::fs::Permissions::from_mode(0o644)).unwrap();
        } else {
            std::fs::write(&tls.key, "not a key").unwrap();
        }
        let e = crate::GuestAgent::new(strategy.clone(), store.clone(), with_token())
            .spawn_on(&ListenOn::Tls {
                addr: "127.0.0.1:0".parse().unwrap(),
                tls,
            })
            .await
            .unwrap_err();
        assert_eq!(
            e.kind(),
            trove_guest_core::ErrorKind::InvalidInput,
            "loose: {loose}: {e}"
        );
    }
}

fn socket_in(dir: &Path, mode: u32) -> ListenOn {
    ListenOn::Unix {
        path: dir.join("agent.sock"),
        mode,
    }
}

fn unix_client(path: &Path) -> AgentClient {
    AgentClient::with_options(
        "http://localhost",
        &ClientOptions::new().with_unix_socket(path),
    )
    .unwrap()
}

#[tokio::test]
async fn the_unix_socket_serves_admitted_uids_without_a_token_and_is_removed_at_shutdown() {
    // A token is set, but the socket admits by uid (own uid and root by default).
    let f = fixture_on(true, with_token(), |d| socket_in(d, 0o600)).await;
    let path = match f.agent.endpoint() {
        crate::agent::Endpoint::Unix(p) => p.clone(),
        other => panic!("{other:?}"),
    };
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    unix_client(&path)
        .status()
        .await
        .expect("served on the socket");
    f.agent.shutdown().await.unwrap();
    assert!(!path.exists(), "the socket file outlived the agent");
}

#[tokio::test]
async fn a_socket_peer_whose_uid_is_not_admitted_is_refused() {
    let own = nix::unistd::geteuid().as_raw();
    let options = AgentOptions::new("inst-1")
        .with_auth(AgentAuth::new().with_allowed_uids([own.wrapping_add(4242)]));
    let f = fixture_on(true, options, |d| socket_in(d, 0o600)).await;
    let crate::agent::Endpoint::Unix(path) = f.agent.endpoint().clone() else {
        panic!("a socket")
    };
    let e = unix_client(&path).status().await.unwrap_err();
    assert!(matches!(e, ClientError::Http(_)), "{e}");
}

/// `curl` on the agent's socket as the account `nobody` (bounded to 20 s); its exit status and
/// output. Asynchronous: the agent answers on this test's runtime.
async fn curl_as_nobody(socket: &Path) -> (bool, String) {
    let out = Command::new("setpriv")
        .args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "curl",
            "-sS",
        ])
        .args(["--max-time", "20", "--unix-socket"])
        .arg(socket)
        .arg(format!("http://localhost{}", api::STATUS))
        .kill_on_drop(true)
        .output()
        .await
        .expect("setpriv and curl (apt-get install util-linux curl)");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The agent's socket in a directory `nobody` can traverse, group `nogroup`, mode 0660: only
/// the uid check stands between `nobody` and the agent.
async fn socket_open_to_nogroup(allowed: Vec<u32>) -> (Fixture, PathBuf) {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test changes uid with setpriv: run it as root"
    );
    let options =
        AgentOptions::new("inst-1").with_auth(AgentAuth::new().with_allowed_uids(allowed));
    let f = fixture_on(true, options, |d| {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o711)).unwrap();
        socket_in(d, 0o660)
    })
    .await;
    let crate::agent::Endpoint::Unix(path) = f.agent.endpoint().clone() else {
        panic!("a socket")
    };
    let nogroup = nix::unistd::Group::from_name("nogroup").unwrap().unwrap();
    nix::unistd::chown(&path, None, Some(nogroup.gid)).unwrap();
    (f, path)
}

#[tokio::test]
async fn a_process_of_another_uid_is_refused_on_the_socket() {
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    // Admitted: nobody is served (so what refuses it below is the uid check, not the file mode).
    let (f, path) = socket_open_to_nogroup(vec![0, nobody.uid.as_raw()]).await;
    let (ok, out) = curl_as_nobody(&path).await;
    assert!(ok, "{out}");
    assert!(out.contains("\"role\"") || out.starts_with('{'), "{out}");
    drop(f);
    // Not admitted: the connection is closed unanswered.
    let (_f, path) = socket_open_to_nogroup(vec![0]).await;
    let (ok, out) = curl_as_nobody(&path).await;
    assert!(!ok, "nobody was served: {out}");
    assert!(!out.contains('{'), "{out}");
}

#[tokio::test]
async fn error_bodies_keep_tool_stderr_and_paths_in_the_log_unless_debug() {
    // The fake's enable-master fails with a tool whose stderr names a server file.
    let f = fixture_on(true, AgentOptions::new("inst-1"), tcp).await;
    f.strategy
        .enable_fails
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let (status, body) = f.client.post_raw(api::ENABLE_MASTER, "{}").await.unwrap();
    assert_eq!(status, 500);
    let error = &body["error"];
    assert_eq!(error["kind"], kinds::TOOL_FAILED);
    let message = error["message"].as_str().unwrap();
    assert!(!message.contains("/var/lib"), "{message}");
    assert!(!message.contains("ERROR 1045"), "{message}");
    let id = error["error_id"].as_str().expect("an error id");
    assert!(message.contains(id), "{message}");
    // Errors about the request keep their message.
    let e = f
        .client
        .detach_replication_action("other")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("other"), "{e}");

    let f = fixture_on(
        true,
        AgentOptions::new("inst-1").with_errors(ErrorDisclosure::Full),
        tcp,
    )
    .await;
    f.strategy
        .enable_fails
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let (_, body) = f.client.post_raw(api::ENABLE_MASTER, "{}").await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("/var/lib/mysql/secret-dir/ibdata1"),
        "{message}"
    );
    assert!(body["error"]["error_id"].is_string());
}
