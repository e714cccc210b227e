//! A throwaway S3-compatible server for tests: `moto`'s server mode (PyPI `moto[server]`).
//!
//! [`MotoServer::start`] makes sure a virtual environment with the pinned
//! [`MOTO_REQUIREMENT`] exists (creating it with `pip` on first use, under a lock so parallel
//! tests install once), starts `python -m moto.server` on a free loopback port with IAM
//! authentication enforced, creates a user allowed to use S3 and writes its key to a 0600
//! credentials file. The server is killed when the value is dropped.
//!
//! Where things are:
//! * `TROVE_GUEST_MOTO_VENV`: the virtual environment; default `target/moto-venv` in the
//!   workspace.
//! * `TROVE_GUEST_PYTHON`: the interpreter that creates it; default `python3` on `PATH`.
//!
//! Nothing is skipped: a missing Python, a failed install or a server that does not answer is
//! an error, so a test that needs the server fails.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt as _;
use tokio::process::{Child, Command};

use crate::error::{Error, IoResultExt as _, Result};
use crate::store::S3Config;

/// The package `pip` installs.
pub const MOTO_REQUIREMENT: &str = "moto[server]==5.2.5";

/// The region the server's buckets are created in.
pub const MOTO_REGION: &str = "us-east-1";

/// Requests the server serves before it enforces IAM authentication: exactly those of the
/// setup script (create user, put user policy, create access key).
const NO_AUTH_REQUESTS: u32 = 3;

const SETUP: &str = r#"
import json, sys, boto3
iam = boto3.client("iam", endpoint_url=sys.argv[1], region_name="us-east-1",
                   aws_access_key_id="setup", aws_secret_access_key="setup")
iam.create_user(UserName="trove")
iam.put_user_policy(UserName="trove", PolicyName="s3", PolicyDocument=json.dumps(
    {"Version": "2012-10-17",
     "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
k = iam.create_access_key(UserName="trove")["AccessKey"]
sys.stdout.write("aws_access_key_id = %s\naws_secret_access_key = %s\n"
                 % (k["AccessKeyId"], k["SecretAccessKey"]))
"#;

/// A running moto S3 server with one authorised user.
#[derive(Debug)]
pub struct MotoServer {
    child: Child,
    endpoint: String,
    dir: tempfile::TempDir,
}

fn venv_dir() -> PathBuf {
    std::env::var_os("TROVE_GUEST_MOTO_VENV").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/moto-venv"),
        PathBuf::from,
    )
}

fn failed(what: impl Into<String>) -> Error {
    Error::Service {
        message: what.into(),
    }
}

async fn run(cmd: &mut Command, what: &str, timeout: Duration) -> Result<Vec<u8>> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().map_err(|e| Error::io(what.to_owned(), e))?;
    let out = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .map_err(|_| Error::timeout(what.to_owned(), timeout))?
        .map_err(|e| Error::io(what.to_owned(), e))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(failed(format!(
            "{what} ({}): {}",
            out.status,
            tail.join("\n")
        )));
    }
    Ok(out.stdout)
}

/// The venv's python with moto importable, installing it once.
async fn moto_python() -> Result<PathBuf> {
    let venv = venv_dir();
    let python = venv.join("bin/python");
    let ok = |p: &Path| {
        let p = p.to_path_buf();
        async move {
            Command::new(&p)
                .args(["-c", "import moto.server, boto3"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .await
                .is_ok_and(|s| s.success())
        }
    };
    if python.is_file() && ok(&python).await {
        return Ok(python);
    }
    let parent = venv
        .parent()
        .ok_or_else(|| failed("moto venv path has no parent"))?;
    std::fs::create_dir_all(parent).context(|| format!("create {}", parent.display()))?;
    let lock_path = parent.join(".moto-venv.lock");
    let lock = tokio::task::spawn_blocking(move || -> Result<std::fs::File> {
        let f = std::fs::File::create(&lock_path)
            .context(|| format!("create {}", lock_path.display()))?;
        f.lock()
            .context(|| format!("lock {}", lock_path.display()))?;
        Ok(f)
    })
    .await
    .map_err(|e| failed(format!("lock task: {e}")))??;
    if !(python.is_file() && ok(&python).await) {
        let base = std::env::var_os("TROVE_GUEST_PYTHON").unwrap_or_else(|| "python3".into());
        run(
            Command::new(&base).arg("-m").arg("venv").arg(&venv),
            "create the moto virtual environment (python3 -m venv; set TROVE_GUEST_PYTHON)",
            Duration::from_secs(300),
        )
        .await?;
        run(
            Command::new(&python).args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                MOTO_REQUIREMENT,
            ]),
            &format!("pip install {MOTO_REQUIREMENT}"),
            Duration::from_secs(900),
        )
        .await?;
        if !ok(&python).await {
            return Err(failed(format!(
                "{MOTO_REQUIREMENT} installed but moto.server cannot be imported"
            )));
        }
    }
    drop(lock);
    Ok(python)
}

impl MotoServer {
    /// Installs (once) and starts the server, then creates the S3 user.
    ///
    /// # Errors
    ///
    /// [`Error::Service`] / [`Error::Io`] / [`Error::Timeout`] when Python, the install, the
    /// server or the setup fails.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the server is killed when the future is dropped.
    pub async fn start() -> Result<Self> {
        let python = moto_python().await?;
        let mut last = None;
        for _ in 0..super::PORT_ATTEMPTS {
            let port = super::free_port()?;
            let mut cmd = Command::new(&python);
            cmd.args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("INITIAL_NO_AUTH_ACTION_COUNT", NO_AUTH_REQUESTS.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
            let mut child = cmd.spawn().context(|| "start moto.server".to_owned())?;
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            let deadline = crate::deadline::deadline(Duration::from_secs(60));
            let mut backoff = crate::poll::Backoff::new(Duration::from_millis(200));
            let up = loop {
                if let Ok(Some(status)) = child.try_wait() {
                    break Err(failed(format!("moto.server exited: {status}")));
                }
                if tokio::net::TcpStream::connect(addr).await.is_ok() {
                    break Ok(());
                }
                if !backoff.tick(deadline).await {
                    break Err(Error::timeout(
                        "moto.server to listen",
                        Duration::from_secs(60),
                    ));
                }
            };
            match up {
                Ok(()) => {
                    let dir = tempfile::Builder::new()
                        .prefix("tg-s3-")
                        .tempdir()
                        .context(|| "create a temporary directory".to_owned())?;
                    let server = MotoServer {
                        child,
                        endpoint: format!("http://{addr}"),
                        dir,
                    };
                    server.setup(&python).await?;
                    return Ok(server);
                }
                Err(e) => {
                    let _ = child.start_kill();
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| failed("moto.server did not start")))
    }

    async fn setup(&self, python: &Path) -> Result<()> {
        let out = run(
            Command::new(python)
                .args(["-c", SETUP, &self.endpoint])
                .env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default()),
            "create the S3 user on moto",
            Duration::from_secs(120),
        )
        .await?;
        write_private(&self.credentials_file(), &out).await
    }

    /// The endpoint URL (`http://127.0.0.1:<port>`).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The 0600 credentials file of the authorised user.
    pub fn credentials_file(&self) -> PathBuf {
        self.dir.path().join("credentials")
    }

    /// Writes a 0600 credentials file with a key the server does not know; returns its path.
    ///
    /// # Errors
    ///
    /// [`Error::Io`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn unknown_credentials_file(&self) -> Result<PathBuf> {
        let p = self.dir.path().join("unknown-credentials");
        write_private(
            &p,
            b"aws_access_key_id = AKIAUNKNOWNUNKNOWN00\naws_secret_access_key = not-a-secret-anyone-has\n",
        )
        .await?;
        Ok(p)
    }

    /// A configuration for `bucket` under `prefix` on this server, with the authorised user's
    /// credentials and short retries (a test's failures should surface in seconds).
    pub fn config(&self, bucket: &str, prefix: &str) -> S3Config {
        S3Config::new(bucket, self.credentials_file())
            .with_prefix(prefix)
            .with_endpoint(&self.endpoint)
            .with_region(MOTO_REGION)
            .with_allow_http(true)
            .with_retries(2, Duration::from_secs(5))
            .with_timeouts(Duration::from_secs(5), Duration::from_secs(60))
    }

    /// Creates `bucket` with a plain signed `PUT /<bucket>` through the store's own client.
    ///
    /// # Errors
    ///
    /// [`Error::Store`] / [`Error::StoreAccess`] when the server refuses.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn create_bucket(&self, bucket: &str) -> Result<()> {
        let python = moto_python().await?;
        let script = r#"
import sys, boto3
k = dict(l.split("=", 1) for l in open(sys.argv[2]).read().split("\n") if "=" in l)
s3 = boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1",
                  aws_access_key_id=k["aws_access_key_id "].strip(),
                  aws_secret_access_key=k["aws_secret_access_key "].strip())
s3.create_bucket(Bucket=sys.argv[3])
"#;
        let creds = self.credentials_file();
        run(
            Command::new(&python)
                .args(["-c", script, &self.endpoint])
                .arg(&creds)
                .arg(bucket)
                .env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default()),
            "create a bucket on moto",
            Duration::from_secs(60),
        )
        .await?;
        Ok(())
    }
}

async fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    let mut f = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .await
        .context(|| format!("create {}", path.display()))?;
    f.write_all(data)
        .await
        .context(|| format!("write {}", path.display()))?;
    f.flush()
        .await
        .context(|| format!("write {}", path.display()))?;
    Ok(())
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}
