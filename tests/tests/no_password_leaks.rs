//! The replication passwords generated in a run never show outside their 0600 secret files:
//! while two guest agents take a snapshot and attach a replica (passwords by reference), a
//! sampler reads `/proc/<pid>/cmdline` and `/proc/<pid>/environ` of every process descending
//! from the test every 20 ms; afterwards the samples, the captured tracing output (debug level),
//! every HTTP answer body (documents, NDJSON streams, error bodies) and every file under the
//! servers' directories (work, configuration and data) and the snapshot store are searched for
//! each password, as text,
//! hex and base64 (a 0600 credential file is where a password belongs: only the PostgreSQL
//! standby's passfile may hold it; MariaDB's own `master.info` is the other exception). A planted occurrence in each kind of haystack proves the
//! search finds one.
//!
//! (The complementary unit-level checks of `Debug`, `Display` and error texts are in
//! `trove-guest-core/tests/no_secret_leaks.rs`.)

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use trove_guest_agent::api::{self, StreamLine};
use trove_guest_agent::testing::sample::SampleDb;
use trove_guest_agent::testing::testbed::Node;
use trove_guest_core::testkit::CapturedLog;
use trove_guest_core::{DatastoreKind, DirectorySecretStore, SecretStore, SnapshotDocument};
use trove_guest_tests::{node_with_secrets, temp_store};

fn tracing_capture() -> CapturedLog {
    static CAPTURE: OnceLock<CapturedLog> = OnceLock::new();
    CAPTURE
        .get_or_init(|| {
            let c = CapturedLog::default();
            let w = c.clone();
            tracing_subscriber::fmt()
                .with_writer(move || w.clone())
                .with_max_level(tracing_subscriber::filter::LevelFilter::DEBUG)
                .with_ansi(false)
                .try_init()
                .expect("the test binary's only tracing subscriber");
            c
        })
        .clone()
}

/// The parent pid in `/proc/<pid>/stat` (the field after the parenthesised command name).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// The processes descending from `root` (itself included).
fn descendants(root: u32) -> Vec<u32> {
    let mut parent: HashMap<u32, u32> = HashMap::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            if let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<u32>().ok())
                && let Some(ppid) = parent_of(pid)
            {
                parent.insert(pid, ppid);
            }
        }
    }
    parent
        .keys()
        .copied()
        .filter(|&pid| {
            let mut p = pid;
            for _ in 0..64 {
                if p == root {
                    return true;
                }
                match parent.get(&p) {
                    Some(&pp) if pp != 0 && pp != p => p = pp,
                    _ => return false,
                }
            }
            false
        })
        .collect()
}

/// Samples `/proc/<pid>/cmdline` and `/proc/<pid>/environ` of every descendant of this process
/// every 20 ms, until stopped.
struct Sampler {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<(BTreeSet<Vec<u8>>, usize)>>,
}

impl Sampler {
    fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let root = std::process::id();
            let mut seen = BTreeSet::new();
            let mut rounds = 0;
            while !flag.load(Ordering::Relaxed) {
                for pid in descendants(root) {
                    for what in ["cmdline", "environ"] {
                        if let Ok(b) = std::fs::read(format!("/proc/{pid}/{what}")) {
                            seen.insert(b);
                        }
                    }
                }
                rounds += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            (seen, rounds)
        });
        Sampler {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> (Vec<Vec<u8>>, usize) {
        self.stop.store(true, Ordering::Relaxed);
        let (seen, rounds) = self.thread.take().unwrap().join().expect("sampler thread");
        (seen.into_iter().collect(), rounds)
    }
}

/// The forms a password is searched in: as is, lowercase hex, standard base64.
fn forms(password: &str) -> Vec<Vec<u8>> {
    vec![
        password.as_bytes().to_vec(),
        hex::encode(password).into_bytes(),
        base64::engine::general_purpose::STANDARD
            .encode(password)
            .into_bytes(),
    ]
}

/// Every place (`what`) where one of `passwords` shows in `haystack`, in any form.
fn findings(what: &str, haystack: &[u8], passwords: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for (i, p) in passwords.iter().enumerate() {
        for (f, needle) in forms(p).iter().enumerate() {
            if memchr::memmem::find(haystack, needle).is_some() {
                out.push(format!("{what}: password #{i} in form #{f}"));
            }
        }
    }
    out
}

/// Regular files under `dir`, recursively (symbolic links not followed).
fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let Ok(t) = e.file_type() else { continue };
        if t.is_dir() {
            files_under(&e.path(), out);
        } else if t.is_file() {
            out.push(e.path());
        }
    }
}

/// Files holding a password: leaks (any file group or others may read), and secret files
/// (0600 or stricter, such as a standby's passfile), and how many files were searched.
fn file_findings(dirs: &[PathBuf], passwords: &[String]) -> (Vec<String>, Vec<String>, usize) {
    use std::os::unix::fs::PermissionsExt;
    let mut files = Vec::new();
    for d in dirs {
        files_under(d, &mut files);
    }
    let (mut leaks, mut secret_files) = (Vec::new(), Vec::new());
    for f in &files {
        if let Ok(bytes) = std::fs::read(f) {
            let found = findings(&f.display().to_string(), &bytes, passwords);
            let private = std::fs::metadata(f).is_ok_and(|m| m.permissions().mode() & 0o077 == 0);
            if private {
                secret_files.extend(found);
            } else {
                leaks.extend(found);
            }
        }
    }
    (leaks, secret_files, files.len())
}

/// Posts `body` to `path` of `node`'s agent (with its token), streaming when `stream`; returns
/// status and the whole answer text.
async fn post(node: &Node, path: &str, stream: bool, body: &str) -> (u16, String) {
    let url = format!(
        "{}{path}{}",
        node.url(),
        if stream { "?stream=true" } else { "" }
    );
    let resp = reqwest::Client::new()
        .post(url)
        .bearer_auth(node.token().expose())
        .header("content-type", "application/json")
        .body(body.to_owned())
        .timeout(Duration::from_secs(600))
        .send()
        .await
        .expect("the agent answers");
    let status = resp.status().as_u16();
    (status, resp.text().await.expect("the answer's body"))
}

/// The result of a streamed answer (its last line).
fn stream_result(text: &str) -> serde_json::Value {
    let last = text.lines().last().expect("a result line");
    match serde_json::from_str::<StreamLine>(last).expect("a stream line") {
        StreamLine::Result(v) => v,
        other => panic!("the stream ended with {other:?}"),
    }
}

async fn no_password_leaks(kind: DatastoreKind) {
    let capture = tracing_capture();
    let store = temp_store();
    let secrets_dir = tempfile::Builder::new()
        .prefix("tg-it-secrets-")
        .tempdir()
        .expect("temp dir for the secret store");
    let sdir = secrets_dir.path().join("s");
    let secrets: Arc<dyn SecretStore> =
        Arc::new(DirectorySecretStore::open(&sdir).expect("directory secret store"));
    let master = node_with_secrets(kind, 1, &store, secrets.clone(), "m").await;
    let replica = node_with_secrets(kind, 2, &store, secrets.clone(), "r").await;
    let mdb = SampleDb::connect(kind, &master.server().handle().admin)
        .await
        .expect("connect to the master");
    mdb.create_schema().await.expect("schema");
    mdb.load(500, |_| {}).await.expect("rows");
    master.client.enable_master().await.expect("enable master");

    let sampler = Sampler::start();
    let mut bodies: Vec<String> = Vec::new();
    let mut passwords: Vec<String> = Vec::new();
    let mut docs = Vec::new();
    // Two snapshots, so two generated passwords (the second account is never attached).
    for (id, stream) in [("r1", true), ("r2", false)] {
        let call = serde_json::json!({"replica_id": id, "replica_host": "127.0.0.1"});
        let (status, text) = post(&master, api::SNAPSHOT, stream, &call.to_string()).await;
        assert_eq!(status, 200, "{text}");
        let value = if stream {
            stream_result(&text)
        } else {
            serde_json::from_str(&text).unwrap()
        };
        let doc: SnapshotDocument = serde_json::from_value(value).expect("a snapshot document");
        let reference = doc.replication.as_ref().unwrap().password_ref.clone();
        let reference = reference.expect("passwords by reference");
        passwords.push(
            secrets
                .get(&reference)
                .await
                .expect("the generated password")
                .expose()
                .to_owned(),
        );
        bodies.push(text);
        docs.push(doc);
    }
    assert_ne!(passwords[0], passwords[1]);
    assert!(passwords.iter().all(|p| p.len() >= 16));

    // An error body: a reference the store does not hold.
    let mut unknown = docs[0].clone();
    unknown.replication.as_mut().unwrap().password_ref = Some("replication-m-nope".into());
    let (status, text) = post(
        &replica,
        api::ATTACH,
        false,
        &serde_json::to_string(&unknown).unwrap(),
    )
    .await;
    assert_eq!(status, 404, "{text}");
    bodies.push(text);

    // Attach, streamed.
    let (status, text) = post(
        &replica,
        api::ATTACH,
        true,
        &serde_json::to_string(&docs[0]).unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let _ = stream_result(&text);
    bodies.push(text);
    let (sampled, rounds) = sampler.finish();
    assert!(rounds > 10, "the sampler ran ({rounds} rounds)");
    assert!(
        sampled.len() > 4,
        "the sampler saw the servers and their tools ({} distinct samples)",
        sampled.len()
    );

    // Search.
    let mut found = Vec::new();
    for (i, s) in sampled.iter().enumerate() {
        found.extend(findings(&format!("process sample {i}"), s, &passwords));
    }
    let log = capture.bytes();
    assert!(!log.is_empty(), "tracing output was captured");
    found.extend(findings("tracing output", &log, &passwords));
    for (i, b) in bodies.iter().enumerate() {
        found.extend(findings(
            &format!("HTTP body {i}"),
            b.as_bytes(),
            &passwords,
        ));
    }
    let dirs = vec![
        master.server().handle().work_dir.clone(),
        replica.server().handle().work_dir.clone(),
        store.dir.path().to_path_buf(),
        master.dir(),
        replica.dir(),
    ];
    let (from_files, secret_files, nfiles) = file_findings(&dirs, &passwords);
    assert!(nfiles > 0, "files were searched");
    // MariaDB itself keeps the replication password of `CHANGE MASTER` in clear in the
    // replica's `master.info` (in the data directory, written by the server): the server's own
    // store, not a file this project writes.
    found.extend(
        from_files
            .into_iter()
            .filter(|f| !(kind == DatastoreKind::Mariadb && f.contains("/data/master.info:"))),
    );
    // Only the replica's own credential file may hold the password it uses.
    assert!(
        secret_files.iter().all(|f| f.contains(".pgpass:")),
        "passwords in unexpected 0600 files: {secret_files:#?}"
    );
    assert!(found.is_empty(), "generated passwords leaked: {found:#?}");
    eprintln!(
        "{kind}: searched {rounds} sampling rounds ({} distinct cmdline/environ samples), {} bytes \
         of tracing output, {} HTTP bodies, {nfiles} files",
        sampled.len(),
        log.len(),
        bodies.len()
    );

    // The search can fail: a planted occurrence is found in each kind of haystack.
    let planted_file = master.server().handle().work_dir.join("planted");
    std::fs::write(
        &planted_file,
        base64::engine::general_purpose::STANDARD.encode(&passwords[1]),
    )
    .unwrap();
    assert!(
        !file_findings(&dirs, &passwords).0.is_empty(),
        "planted file (mode 0644)"
    );
    std::fs::remove_file(&planted_file).unwrap();
    tracing::debug!(leak = %hex::encode(&passwords[0]), "planted");
    let log = capture.bytes();
    assert!(
        !findings("tracing", &log, &passwords).is_empty(),
        "planted log line"
    );
    let sampler = Sampler::start();
    let mut child = std::process::Command::new("sleep")
        .arg("2")
        .env("TG_PLANTED", &passwords[0])
        .spawn()
        .expect("spawn sleep");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (planted, _) = sampler.finish();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        planted
            .iter()
            .any(|s| !findings("sample", s, &passwords).is_empty()),
        "planted environment variable of a child process"
    );

    // Cleanup and demote delete the secrets.
    let detached = replica.client.detach().await.expect("detach");
    master.client.cleanup(&detached).await.expect("cleanup");
    master.client.demote().await.expect("demote");
    assert!(
        std::fs::read_dir(&sdir).unwrap().next().is_none(),
        "no secret left after cleanup and demote"
    );
    mdb.close().await;
    replica.shutdown().await;
    master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mariadb_snapshot_and_attach_leak_no_generated_password() {
    no_password_leaks(DatastoreKind::Mariadb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_snapshot_and_attach_leak_no_generated_password() {
    no_password_leaks(DatastoreKind::Postgresql).await;
}
