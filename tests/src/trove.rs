//! Trove's side of the RPC tests: a RabbitMQ broker of the test's own and Trove's own Python
//! client (`trove.guestagent.api.API`) in a venv under the target directory.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// The Trove release the tests drive the agent with.
pub const TROVE_VERSION: &str = "26.0.0";
/// The oslo.messaging release installed with it.
pub const OSLO_MESSAGING_VERSION: &str = "18.3.1";

const RABBITMQ_SERVER: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";
const RABBITMQCTL: &str = "/usr/lib/rabbitmq/bin/rabbitmqctl";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A RabbitMQ broker in a temp dir, on free loopback ports, with its own node name and epmd.
pub struct RabbitBroker {
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// The broker's own epmd, a child of the harness (so it goes with the broker).
    epmd: Option<Child>,
    port: u16,
    dist_port: u16,
    epmd_port: u16,
    node: String,
}

impl RabbitBroker {
    /// Starts a broker and waits until it accepts connections.
    ///
    /// # Panics
    ///
    /// When `rabbitmq-server` (Debian package `rabbitmq-server`) is missing or does not start.
    ///
    /// # Errors
    ///
    /// None: failures panic (a test harness).
    ///
    /// # Cancel safety
    ///
    /// Dropping it kills a broker already spawned.
    pub async fn start() -> Self {
        assert!(
            Path::new(RABBITMQ_SERVER).exists(),
            "rabbitmq-server is missing: install the Debian package rabbitmq-server"
        );
        let dir = tempfile::Builder::new()
            .prefix("tg-rabbit-")
            .tempdir()
            .expect("broker dir");
        let port = free_port();
        let mut b = RabbitBroker {
            port,
            dist_port: free_port(),
            epmd_port: free_port(),
            node: format!("tgtest{}x{port}@localhost", std::process::id()),
            dir,
            child: None,
            epmd: None,
        };
        std::fs::write(
            b.dir.path().join("rabbitmq.conf"),
            format!("listeners.tcp.default = 127.0.0.1:{port}\nloopback_users = none\n"),
        )
        .expect("broker config");
        std::fs::write(b.dir.path().join("enabled_plugins"), "[].\n").expect("plugins file");
        let epmd = Command::new("epmd")
            .args(["-port", &b.epmd_port.to_string(), "-address", "127.0.0.1"])
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start epmd (Debian package erlang-base, installed with rabbitmq-server)");
        b.epmd = Some(epmd);
        for _ in 0..40 {
            if tokio::net::TcpStream::connect(("127.0.0.1", b.epmd_port))
                .await
                .is_ok()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        b.launch().await;
        b
    }

    fn env(&self, cmd: &mut Command) {
        let d = self.dir.path();
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", d)
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("ERL_EPMD_PORT", self.epmd_port.to_string())
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_CONFIG_FILE", d.join("rabbitmq.conf"))
            .env("RABBITMQ_ADVANCED_CONFIG_FILE", d.join("advanced.config"))
            .env("RABBITMQ_CONF_ENV_FILE", d.join("rabbitmq-env.conf"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", d.join("enabled_plugins"))
            .env("RABBITMQ_MNESIA_BASE", d.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", d.join("log"))
            .env("RABBITMQ_PID_FILE", d.join("pid"))
            .current_dir(d);
    }

    async fn launch(&mut self) {
        let mut cmd = Command::new(RABBITMQ_SERVER);
        self.env(&mut cmd);
        let log = std::fs::File::create(self.dir.path().join("server.out")).expect("broker log");
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .process_group(0)
            .kill_on_drop(true);
        self.child = Some(cmd.spawn().expect("spawn rabbitmq-server"));
        for _ in 0..240 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return;
            }
            if let Some(Ok(Some(st))) = self.child.as_mut().map(Child::try_wait) {
                panic!("rabbitmq-server exited with {st}: {}", self.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        panic!(
            "rabbitmq-server did not listen within 120 s: {}",
            self.log_tail()
        );
    }

    fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(self.dir.path().join("server.out")).unwrap_or_default();
        s.lines().rev().take(15).collect::<Vec<_>>().join("\n")
    }

    /// The AMQP URL for the agent (`amqp://`).
    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// The transport URL for oslo.messaging (`rabbit://`).
    pub fn transport_url(&self) -> String {
        format!("rabbit://guest:guest@127.0.0.1:{}/", self.port)
    }

    /// Stops the broker (its whole process group) and waits (bounded) for it to exit.
    ///
    /// # Errors
    ///
    /// None: a broker that does not stop is killed.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the broker is signalled first; dropping the value kills it.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id() {
                let _ = nix_kill(pid);
            }
            let _ = tokio::time::timeout(Duration::from_secs(60), child.wait()).await;
            let _ = child.kill().await;
        }
        for _ in 0..120 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_err()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// How many messages of `queue` are delivered and not yet acknowledged (`rabbitmqctl
    /// list_queues`); `None` when the queue does not exist.
    ///
    /// # Panics
    ///
    /// When `rabbitmqctl` cannot be run or does not answer within 60 s.
    ///
    /// # Errors
    ///
    /// None: failures panic.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: read only.
    pub async fn unacked(&self, queue: &str) -> Option<u64> {
        let mut cmd = Command::new(RABBITMQCTL);
        self.env(&mut cmd);
        cmd.args([
            "-q",
            "list_queues",
            "--no-table-headers",
            "name",
            "messages_unacknowledged",
        ])
        .stdin(Stdio::null())
        .kill_on_drop(true);
        let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
            .await
            .expect("rabbitmqctl answers within 60 s")
            .expect("run rabbitmqctl");
        assert!(
            out.status.success(),
            "rabbitmqctl list_queues: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
            let mut parts = l.split_whitespace();
            (parts.next() == Some(queue)).then(|| parts.next().and_then(|n| n.parse().ok()))?
        })
    }

    /// Stops and starts the broker again (same node, ports and data).
    ///
    /// # Errors
    ///
    /// None: failures panic.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: the broker may be left stopped.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.launch().await;
    }
}

fn nix_kill(pid: u32) -> std::io::Result<()> {
    // SIGTERM to the process group the broker leads (started by this harness).
    let status = std::process::Command::new("kill")
        .args(["-TERM", "--", &format!("-{pid}")])
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other("kill failed"))
    }
}

impl Drop for RabbitBroker {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut()
            && let Some(pid) = child.id()
        {
            let _ = nix_kill(pid);
            let _ = child.start_kill();
        }
        if let Some(epmd) = self.epmd.as_mut() {
            let _ = epmd.start_kill();
        }
    }
}

/// The target directory the test binary runs from.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    exe.ancestors()
        .find(|p| p.file_name().is_some_and(|n| n == "target") || p.join("CACHEDIR.TAG").exists())
        .map(Path::to_path_buf)
        .expect("the target directory above the test binary")
}

/// The venv with Trove's client, created (and cached under the target dir, keyed by version) on
/// first use.
///
/// # Panics
///
/// When `python3` is missing or pip cannot install the pinned packages.
pub fn trove_venv() -> PathBuf {
    let venv = target_dir().join("trove-venv").join(format!(
        "trove-{TROVE_VERSION}-oslo.messaging-{OSLO_MESSAGING_VERSION}"
    ));
    let done = venv.join(".complete");
    if done.exists() {
        return venv;
    }
    std::fs::create_dir_all(venv.parent().expect("parent")).expect("venv parent");
    // Tests in several threads and binaries may ask at once: one builds, the others wait.
    static IN_PROCESS: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _in_process = IN_PROCESS.lock().unwrap_or_else(|e| e.into_inner());
    let lock = std::fs::File::create(venv.with_extension("lock")).expect("venv lock file");
    lock.lock().expect("lock the venv");
    if done.exists() {
        return venv;
    }
    let _ = std::fs::remove_dir_all(&venv);
    let ok = std::process::Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .expect("python3 is missing (Debian package python3-venv)");
    assert!(ok.success(), "python3 -m venv failed");
    let ok = std::process::Command::new(venv.join("bin/pip"))
        .args([
            "install",
            "-q",
            &format!("trove=={TROVE_VERSION}"),
            &format!("oslo.messaging=={OSLO_MESSAGING_VERSION}"),
            "cryptography",
        ])
        .status()
        .expect("run pip");
    assert!(ok.success(), "pip install of Trove's client failed");
    std::fs::write(&done, "").expect("venv marker");
    venv
}

/// Trove's own guest API (`trove.guestagent.api.API`) for one instance, in a Python child.
pub struct TroveClient {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

/// A failure as Trove's API raised it.
#[derive(Debug, Clone)]
pub struct TroveError {
    /// The Python exception class (`GuestError`, `GuestTimeout`, ...).
    pub class: String,
    /// Its message.
    pub message: String,
}

impl TroveClient {
    /// Starts Trove's client for `instance_id` on the broker at `transport_url`, with the
    /// instance key (secure RPC) or without (plaintext). The key goes over stdin only.
    ///
    /// # Panics
    ///
    /// When the venv cannot be made or the client does not start.
    ///
    /// # Errors
    ///
    /// None: failures panic.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the child is killed on drop.
    pub async fn start(transport_url: &str, instance_id: &str, key: Option<&str>) -> Self {
        let conf = json!({"url": transport_url, "instance_id": instance_id, "key": key});
        let (child, stdin, lines) =
            spawn_python("trove_driver.py", include_str!("trove_driver.py"), &conf).await;
        TroveClient {
            child,
            stdin,
            lines,
        }
    }

    /// Calls `method` of Trove's guest API with keyword arguments (a `_raw:` prefix sends a
    /// method the API has no wrapper for, as the API sends calls).
    ///
    /// # Errors
    ///
    /// The exception Trove's API raised.
    ///
    /// # Panics
    ///
    /// When the client dies or does not answer within 40 minutes (beyond Trove's own timeouts).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: a dropped call's answer would be read by the next call.
    pub async fn call(&mut self, method: &str, kwargs: Value) -> Result<Value, TroveError> {
        let req = json!({"method": method, "kwargs": kwargs});
        self.stdin
            .write_all(format!("{req}\n").as_bytes())
            .await
            .expect("send to Trove's client");
        let line = tokio::time::timeout(Duration::from_secs(2400), self.lines.next_line())
            .await
            .expect("Trove's client answers")
            .expect("read Trove's client")
            .expect("Trove's client exited");
        let v: Value = serde_json::from_str(&line).expect("Trove's client writes JSON");
        if let Some(e) = v.get("error") {
            return Err(TroveError {
                class: e["class"].as_str().unwrap_or_default().to_owned(),
                message: e["message"].as_str().unwrap_or_default().to_owned(),
            });
        }
        Ok(v["ok"].clone())
    }

    /// Stops the client (bounded wait, then kill).
    ///
    /// # Errors
    ///
    /// None.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the child is killed on drop.
    pub async fn stop(mut self) {
        drop(self.stdin);
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
        let _ = self.child.kill().await;
    }
}

/// Runs `script` with the venv's Python, sends `conf` as its first stdin line (secrets go this
/// way only) and waits (bounded) for its `ready` line.
async fn spawn_python(
    name: &str,
    script: &str,
    conf: &Value,
) -> (Child, ChildStdin, Lines<BufReader<ChildStdout>>) {
    let venv = trove_venv();
    let dir = tempfile::Builder::new()
        .prefix("tg-trove-")
        .tempdir()
        .expect("script dir");
    let path = dir.path().join(name);
    std::fs::write(&path, script).expect("write the script");
    let mut child = Command::new(venv.join("bin/python"))
        .arg(&path)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("start {name}: {e}"));
    let mut stdin = child.stdin.take().expect("stdin");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    stdin
        .write_all(format!("{conf}\n").as_bytes())
        .await
        .expect("configure the script");
    let ready = tokio::time::timeout(Duration::from_secs(120), lines.next_line())
        .await
        .unwrap_or_else(|_| panic!("{name} starts within 120 s"))
        .expect("read from the script")
        .unwrap_or_else(|| panic!("{name} exited during start"));
    assert!(ready.contains("ready"), "{name}: {ready}");
    (child, stdin, lines)
}

/// Trove's own conductor (`trove.conductor.manager.Manager`, behind oslo.messaging and Trove's
/// `ConductorHostSerializer`, as `trove-conductor` runs it) on the `trove-conductor` topic, with
/// its database rows in memory: every heartbeat and backup update it accepts is seen here as
/// the row it saved.
pub struct TroveConductor {
    child: Child,
    stdin: ChildStdin,
    rows: tokio::sync::mpsc::UnboundedReceiver<Value>,
    /// Every row seen so far, in order.
    pub seen: Vec<Value>,
}

impl TroveConductor {
    /// Starts the conductor for the instances in `keys` (their instance keys, `None` for plain
    /// RPC) and the backup records in `backups` (backup id, instance id), as Trove's database
    /// would hold them. The keys go over stdin only.
    ///
    /// # Panics
    ///
    /// When the venv cannot be made or the conductor does not start.
    ///
    /// # Errors
    ///
    /// None: failures panic.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the child is killed on drop.
    pub async fn start(
        transport_url: &str,
        keys: &[(&str, Option<&str>)],
        backups: &[(&str, &str)],
    ) -> Self {
        let keys: serde_json::Map<String, Value> = keys
            .iter()
            .map(|(i, k)| ((*i).to_owned(), json!(k)))
            .collect();
        let backups: serde_json::Map<String, Value> = backups
            .iter()
            .map(|(b, i)| ((*b).to_owned(), json!(i)))
            .collect();
        let conf = json!({"url": transport_url, "keys": keys, "backups": backups});
        let (child, stdin, mut lines) = spawn_python(
            "trove_conductor.py",
            include_str!("trove_conductor.py"),
            &conf,
        )
        .await;
        let (tx, rows) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let v: Value = serde_json::from_str(&line).expect("the conductor writes JSON");
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        TroveConductor {
            child,
            stdin,
            rows,
            seen: Vec::new(),
        }
    }

    /// Waits for the next row the conductor saves that `wanted` accepts, and returns it; the
    /// rows passed over on the way are kept in [`TroveConductor::seen`].
    ///
    /// # Panics
    ///
    /// When a call fails inside Trove's conductor, or no such row comes within `within`.
    ///
    /// # Errors
    ///
    /// None: failures panic.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: rows not yet read stay queued.
    pub async fn wait_for(&mut self, within: Duration, wanted: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let row = tokio::time::timeout_at(deadline, self.rows.recv())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "no such conductor row within {within:?}; seen: {:?}",
                        self.seen
                    )
                })
                .expect("the conductor exited");
            assert!(
                row.get("error").is_none(),
                "a call failed inside Trove's conductor: {row}"
            );
            self.seen.push(row.clone());
            if wanted(&row) {
                return row;
            }
        }
    }

    /// The statuses the heartbeats of `instance_id` saved so far, in order.
    pub fn statuses(&self, instance_id: &str) -> Vec<String> {
        self.seen
            .iter()
            .filter(|r| r["heartbeat"]["instance_id"] == instance_id)
            .filter_map(|r| r["heartbeat"]["status"].as_str().map(str::to_owned))
            .collect()
    }

    /// Stops the conductor (bounded wait, then kill).
    ///
    /// # Errors
    ///
    /// None.
    ///
    /// # Panics
    ///
    /// When a row not yet read says a call failed inside Trove's conductor.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the child is killed on drop.
    pub async fn stop(mut self) {
        while let Ok(row) = self.rows.try_recv() {
            assert!(
                row.get("error").is_none(),
                "a call failed inside Trove's conductor: {row}"
            );
        }
        drop(self.stdin);
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
        let _ = self.child.kill().await;
    }
}

/// Whether `row` is a heartbeat of `instance_id` with `status`.
pub fn heartbeat_is(row: &Value, instance_id: &str, status: &str) -> bool {
    row["heartbeat"]["instance_id"] == instance_id && row["heartbeat"]["status"] == status
}
