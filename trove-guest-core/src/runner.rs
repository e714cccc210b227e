//! The one way trove-guest runs external tools (mariabackup, mbstream, pg_basebackup, ...).
//!
//! * No shell: the program and each argument are passed as they are.
//! * stdout/stdin are streamed (piped to the caller, sent to a file, or discarded), never
//!   collected in memory, except through [`ToolCommand::run_capture`] with a hard byte limit.
//! * stderr is drained concurrently by a task that keeps its last lines for the error message.
//! * The exit status is checked: a non-zero exit becomes [`Error::ToolFailed`].
//! * Each tool runs in its own process group; dropping a [`RunningTool`] that has not been waited
//!   for (including cancelling the future that owns it) kills the whole group with `SIGKILL`.
//! * A tool given a [`ToolCommand::timeout`] is killed (its whole process group) when it runs
//!   longer, and [`RunningTool::wait`] reports [`Error::Timeout`].
//! * Secrets go through [`SecretFile`]s (0600, in a private 0700 directory, deleted on drop),
//!   never argv or the environment.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::task::JoinHandle;

use crate::error::{Error, IoResultExt, Result};

/// How many bytes of stderr are kept for error messages.
const STDERR_TAIL_BYTES: usize = 4096;

/// An operating-system account a tool runs as (PostgreSQL tools refuse root).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OsUser {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

impl OsUser {
    /// Looks an account up by name in the system user database.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] when no such user exists.
    pub fn lookup(name: &str) -> Result<Self> {
        match nix::unistd::User::from_name(name) {
            Ok(Some(u)) => Ok(OsUser {
                uid: u.uid.as_raw(),
                gid: u.gid.as_raw(),
            }),
            Ok(None) => Err(Error::invalid("OS user", format!("no user named {name:?}"))),
            Err(e) => Err(Error::invalid("OS user", format!("{name:?}: {e}"))),
        }
    }

    /// The account this process runs as.
    pub fn current() -> Self {
        OsUser {
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
        }
    }

    /// Gives `path` to this account (`chown`).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the change fails.
    pub fn chown(&self, path: &Path) -> Result<()> {
        std::os::unix::fs::chown(path, Some(self.uid), Some(self.gid))
            .context(|| format!("chown {}", path.display()))
    }
}

/// Where a tool's stdin or stdout goes.
#[derive(Debug, Clone)]
enum Io {
    Null,
    Piped,
    AppendTo(PathBuf),
}

/// A file holding a secret (an option file, a passfile) for a tool to read.
///
/// Created 0600 inside a fresh 0700 directory; both are removed on drop. When the tool runs as
/// another account, the file and directory are given to that account.
pub struct SecretFile {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl SecretFile {
    /// Writes `contents` to a new secret file named `name`.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the file cannot be created.
    pub fn new(name: &str, contents: &str, owner: Option<OsUser>) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("tg-secret-")
            .tempdir()
            .context(|| "create secret directory".to_owned())?;
        Self::write_in(dir, name, contents, owner)
    }

    /// Like [`SecretFile::new`], with the private directory inside `parent` (a strategy's work
    /// directory) and named `.tg-secret-*`: a file a killed process could not remove is then
    /// found and removed by recovery instead of staying in the system's temporary directory.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the file cannot be created.
    pub fn new_in(
        parent: &Path,
        name: &str,
        contents: &str,
        owner: Option<OsUser>,
    ) -> Result<Self> {
        std::fs::create_dir_all(parent).context(|| format!("create {}", parent.display()))?;
        let dir = tempfile::Builder::new()
            .prefix(".tg-secret-")
            .tempdir_in(parent)
            .context(|| format!("create a secret directory in {}", parent.display()))?;
        Self::write_in(dir, name, contents, owner)
    }

    fn write_in(
        dir: tempfile::TempDir,
        name: &str,
        contents: &str,
        owner: Option<OsUser>,
    ) -> Result<Self> {
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
            .context(|| format!("chmod {}", dir.path().display()))?;
        let path = dir.path().join(name);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .context(|| format!("create {}", path.display()))?;
        f.write_all(contents.as_bytes())
            .context(|| format!("write {}", path.display()))?;
        if let Some(owner) = owner {
            owner.chown(dir.path())?;
            owner.chown(&path)?;
        }
        Ok(SecretFile { path, _dir: dir })
    }

    /// The file's path, to pass as `--defaults-file=...` or `PGPASSFILE`-style option.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl fmt::Debug for SecretFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretFile")
            .field("path", &self.path)
            .finish()
    }
}

/// A tool invocation being built.
#[derive(Debug, Clone)]
pub struct ToolCommand {
    program: PathBuf,
    args: Vec<OsString>,
    cwd: Option<PathBuf>,
    env: Vec<(OsString, OsString)>,
    user: Option<OsUser>,
    stdin: Io,
    stdout: Io,
    timeout: Option<Duration>,
    /// The name errors use, when it is not the program's (a tool run through `exec`).
    label: Option<String>,
}

/// A [`ToolCommand`] taken apart, so [`ToolPlace`](crate::place::ToolPlace) can rebuild it
/// around an `exec` client.
#[derive(Debug)]
pub(crate) struct ToolParts {
    pub(crate) program: PathBuf,
    pub(crate) args: Vec<OsString>,
    pub(crate) cwd: Option<PathBuf>,
    pub(crate) env: Vec<(OsString, OsString)>,
    pub(crate) user: Option<OsUser>,
    pub(crate) stdin_piped: bool,
    #[cfg_attr(not(test), expect(dead_code))]
    pub(crate) stdout_piped: bool,
    stdin: Io,
    stdout: Io,
    timeout: Option<Duration>,
}

impl ToolParts {
    /// `program args` with this command's stdin, stdout and timeout, run as the agent in the
    /// agent's working directory.
    pub(crate) fn rebuild(
        self,
        program: PathBuf,
        args: Vec<OsString>,
        label: String,
    ) -> ToolCommand {
        ToolCommand {
            label: Some(label),
            program,
            args,
            cwd: None,
            env: Vec::new(),
            user: None,
            stdin: self.stdin,
            stdout: self.stdout,
            timeout: self.timeout,
        }
    }
}

impl ToolCommand {
    pub(crate) fn into_parts(self) -> ToolParts {
        ToolParts {
            stdin_piped: matches!(self.stdin, Io::Piped),
            stdout_piped: matches!(self.stdout, Io::Piped),
            program: self.program,
            args: self.args,
            cwd: self.cwd,
            env: self.env,
            user: self.user,
            stdin: self.stdin,
            stdout: self.stdout,
            timeout: self.timeout,
        }
    }

    /// A command for `program` (a path, or a name looked up in `PATH`).
    pub fn new(program: impl Into<PathBuf>) -> Self {
        ToolCommand {
            program: program.into(),
            args: Vec::new(),
            cwd: None,
            env: Vec::new(),
            user: None,
            stdin: Io::Null,
            stdout: Io::Null,
            timeout: None,
            label: None,
        }
    }

    /// Bounds the tool's run time: `timeout` after [`ToolCommand::spawn`] its process group is
    /// killed (`SIGKILL`), its pipes close, and [`RunningTool::wait`] /
    /// [`RunningTool::wait_status`] (and so [`ToolCommand::run`]) return [`Error::Timeout`].
    /// A timeout too large for the clock means no bound.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The bound set with [`ToolCommand::timeout`], if any.
    pub fn get_timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// Adds one argument. Never pass a secret: use a [`SecretFile`].
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Runs the tool in `dir`.
    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// Sets an environment variable. Never pass a secret this way.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Runs the tool as `user` (when this process may switch to it).
    pub fn run_as(mut self, user: Option<OsUser>) -> Self {
        self.user = user;
        self
    }

    /// Gives the caller the tool's stdin ([`RunningTool::take_stdin`]).
    pub fn stdin_piped(mut self) -> Self {
        self.stdin = Io::Piped;
        self
    }

    /// Gives the caller the tool's stdout ([`RunningTool::take_stdout`]).
    pub fn stdout_piped(mut self) -> Self {
        self.stdout = Io::Piped;
        self
    }

    /// Appends the tool's stdout to a file (a server log, say).
    pub fn stdout_to_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.stdout = Io::AppendTo(path.into());
        self
    }

    /// The program's file name, for messages.
    pub fn program_name(&self) -> String {
        if let Some(label) = &self.label {
            return label.clone();
        }
        self.program
            .file_name()
            .unwrap_or(self.program.as_os_str())
            .to_string_lossy()
            .into_owned()
    }

    /// The program path.
    pub fn program(&self) -> &Path {
        &self.program
    }

    /// The arguments, as given.
    pub fn get_args(&self) -> &[OsString] {
        &self.args
    }

    /// The command line as text, for logs and snapshot tests (it holds no secret by contract).
    pub fn display(&self) -> String {
        let mut s = self.program.to_string_lossy().into_owned();
        for a in &self.args {
            s.push(' ');
            s.push_str(&a.to_string_lossy());
        }
        s
    }

    fn stdio(io: &Io, write: bool) -> Result<Stdio> {
        Ok(match io {
            Io::Null => Stdio::null(),
            Io::Piped => Stdio::piped(),
            Io::AppendTo(p) => {
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .read(!write)
                    .open(p)
                    .context(|| format!("open {}", p.display()))?;
                Stdio::from(f)
            }
        })
    }

    /// Starts the tool.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] when the program does not exist; [`Error::Io`] for other spawn
    /// failures.
    pub fn spawn(self) -> Result<RunningTool> {
        let name = self.program_name();
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .stdin(Self::stdio(&self.stdin, false)?)
            .stdout(Self::stdio(&self.stdout, true)?)
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        if let Some(dir) = &self.cwd {
            cmd.current_dir(dir);
        }
        if let Some(user) = self.user
            && user != OsUser::current()
        {
            cmd.uid(user.uid).gid(user.gid);
        }
        tracing::debug!(command = %self.display(), "spawning tool");
        let mut child = cmd.spawn().map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::NotFound {
                    what: format!("program {}", self.program.display()),
                }
            } else {
                Error::io(format!("spawn {}", self.program.display()), e)
            }
        })?;
        let pgid = child.id().map(|id| Pid::from_raw(id as i32));
        // Snapshot data moves through these pipes: 1 MiB buffers instead of the default 64 KiB
        // let the tool and the agent run ahead of each other with far fewer wake-ups.
        if let Some(p) = &child.stdout {
            widen_pipe(p);
        }
        if let Some(p) = &child.stdin {
            widen_pipe(p);
        }
        let stderr = child.stderr.take().expect("stderr is piped");
        let tail = tokio::spawn(drain_tail(stderr));
        let watchdog = match (self.timeout, pgid) {
            (Some(after), Some(pgid)) => Some(Watchdog::start(pgid, after)),
            _ => None,
        };
        Ok(RunningTool {
            child,
            name,
            pgid,
            stderr_tail: Some(tail),
            finished: false,
            watchdog,
        })
    }

    /// Runs the tool to completion with stdin and stdout as configured (not piped).
    ///
    /// # Errors
    ///
    /// [`Error::ToolFailed`] on a non-zero exit, with the tail of stderr;
    /// [`Error::Timeout`] when the tool outlived its [`ToolCommand::timeout`] (it was killed);
    /// spawn errors.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future kills the tool's process group.
    pub async fn run(self) -> Result<()> {
        self.spawn()?.wait().await
    }

    /// Runs the tool and returns its stdout, which must not exceed `limit` bytes.
    ///
    /// # Errors
    ///
    /// [`Error::ToolFailed`] on a non-zero exit or output over `limit`; [`Error::Timeout`]
    /// when the tool outlived its [`ToolCommand::timeout`]; spawn errors.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future kills the tool's process group.
    pub async fn run_capture(self, limit: usize) -> Result<Vec<u8>> {
        let mut tool = self.stdout_piped().spawn()?;
        let mut out = tool.take_stdout().expect("stdout is piped");
        let mut buf = Vec::new();
        let n = (&mut out)
            .take(limit as u64 + 1)
            .read_to_end(&mut buf)
            .await
            .context(|| format!("read stdout of {}", tool.name))?;
        if n > limit {
            let name = tool.name.clone();
            drop(tool);
            return Err(Error::ToolFailed {
                tool: name,
                status: "killed".into(),
                stderr_tail: format!("stdout exceeded {limit} bytes"),
            });
        }
        drop(out);
        tool.wait().await?;
        Ok(buf)
    }
}

/// Reads stderr to its end, keeping only its last [`STDERR_TAIL_BYTES`] bytes (constant memory
/// whatever the tool writes, even one endless line or binary output), and returns them as text:
/// invalid UTF-8 replaced, a line cut by the window dropped, trailing whitespace trimmed.
async fn drain_tail(stderr: tokio::process::ChildStderr) -> String {
    let mut stderr = stderr;
    let mut tail = std::collections::VecDeque::<u8>::with_capacity(2 * STDERR_TAIL_BYTES);
    let mut buf = [0u8; 8192];
    let mut cut = false;
    loop {
        match stderr.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                tail.extend(&buf[..n]);
                if tail.len() > STDERR_TAIL_BYTES {
                    tail.drain(..tail.len() - STDERR_TAIL_BYTES);
                    cut = true;
                }
            }
        }
    }
    let bytes = Vec::from(tail);
    let mut text = String::from_utf8_lossy(&bytes).into_owned();
    if cut {
        // Drop the partial first line, unless the window holds a single line.
        if let Some(i) = text.find('\n')
            && i + 1 < text.len()
        {
            text.drain(..=i);
        }
    }
    text.truncate(text.trim_end().len());
    text
}

/// Kills a tool's process group when its time is up.
#[derive(Debug)]
struct Watchdog {
    /// When the group is killed.
    at: tokio::time::Instant,
    /// The bound, for the error.
    after: Duration,
    /// Set by the watchdog when it killed the group.
    fired: Arc<AtomicBool>,
    /// Set once the leader is reaped: the group id may be reused from then on.
    disarmed: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Watchdog {
    fn start(pgid: Pid, after: Duration) -> Self {
        let at = crate::deadline::deadline(after);
        let fired = Arc::new(AtomicBool::new(false));
        let disarmed = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let (fired, disarmed) = (fired.clone(), disarmed.clone());
            async move {
                tokio::time::sleep_until(at).await;
                if !disarmed.load(Ordering::SeqCst) {
                    fired.store(true, Ordering::SeqCst);
                    tracing::warn!(pgid = pgid.as_raw(), ?after, "tool timed out: killing it");
                    let _ = killpg(pgid, Signal::SIGKILL);
                }
            }
        });
        Watchdog {
            at,
            after,
            fired,
            disarmed,
            task,
        }
    }

    fn disarm(&self) {
        self.disarmed.store(true, Ordering::SeqCst);
        self.task.abort();
    }

    fn fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }
}

/// How long after its deadline (and `SIGKILL`) a tool's exit is still waited for.
const REAP_GRACE: Duration = Duration::from_secs(30);

/// A running tool. Dropping it before [`RunningTool::wait`] finished kills its process group.
#[derive(Debug)]
pub struct RunningTool {
    child: Child,
    name: String,
    pgid: Option<Pid>,
    stderr_tail: Option<JoinHandle<String>>,
    finished: bool,
    watchdog: Option<Watchdog>,
}

impl RunningTool {
    /// The tool's stdin, if piped (once).
    pub fn take_stdin(&mut self) -> Option<ChildStdin> {
        self.child.stdin.take()
    }

    /// The tool's stdout, if piped (once).
    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.child.stdout.take()
    }

    /// The process id (also the process group id).
    pub fn id(&self) -> Option<u32> {
        self.pgid.map(|p| p.as_raw() as u32)
    }

    /// The program name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Waits for the tool to exit and checks its status.
    ///
    /// # Errors
    ///
    /// [`Error::ToolFailed`] on a non-zero exit or a signal, with the tail of stderr;
    /// [`Error::Timeout`] when the tool outlived its [`ToolCommand::timeout`] (it was killed).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future drops the tool, which kills its process group.
    pub async fn wait(mut self) -> Result<()> {
        let status = self.wait_status().await?;
        if status.success() {
            Ok(())
        } else {
            Err(Error::ToolFailed {
                tool: self.name.clone(),
                status: status.to_string(),
                stderr_tail: self.stderr_tail().await,
            })
        }
    }

    /// Waits for the tool to exit and returns its raw status (stderr tail still available via
    /// [`RunningTool::stderr_tail`]).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when waiting fails; [`Error::Timeout`] when the tool outlived its
    /// [`ToolCommand::timeout`] (it was killed).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future drops nothing; dropping the tool kills it.
    pub async fn wait_status(&mut self) -> Result<ExitStatus> {
        // Close our end of stdin so tools reading it see EOF.
        drop(self.child.stdin.take());
        let waited = match &self.watchdog {
            // Killed at its deadline, a tool exits at once; one stuck in the kernel is given
            // up on a little later (dropping it kills it again).
            Some(w) => {
                let give_up = crate::deadline::deadline_from(w.at, REAP_GRACE);
                match tokio::time::timeout_at(give_up, self.child.wait()).await {
                    Ok(r) => r,
                    Err(_) => {
                        self.kill_group();
                        return Err(Error::timeout(format!("{} to finish", self.name), w.after));
                    }
                }
            }
            None => self.child.wait().await,
        };
        let status = waited.context(|| format!("wait for {}", self.name))?;
        self.finished = true;
        if let Some(w) = &self.watchdog {
            w.disarm();
        }
        // The leader is gone; make sure nothing it started lingers in its group.
        self.kill_group();
        if let Some(w) = &self.watchdog
            && w.fired()
        {
            return Err(Error::timeout(format!("{} to finish", self.name), w.after));
        }
        Ok(status)
    }

    /// The last lines the tool wrote to stderr (at most 4 KiB), once it has exited; empty
    /// when taken before or when stderr does not close within 5 s (a child the tool left behind
    /// holding it open).
    ///
    /// # Errors
    ///
    /// None: problems reading stderr yield an empty or shorter tail.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: the tail is taken on the first call, and a cancelled call loses it.
    pub async fn stderr_tail(&mut self) -> String {
        match self.stderr_tail.take() {
            Some(h) => match tokio::time::timeout(Duration::from_secs(5), h).await {
                Ok(Ok(t)) => t,
                _ => String::new(),
            },
            None => String::new(),
        }
    }

    /// Sends `SIGTERM` to the process group and waits up to `grace` for the tool to exit, then
    /// kills the group.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when waiting fails.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the tool kills it.
    pub async fn terminate(&mut self, signal: Signal, grace: Duration) -> Result<ExitStatus> {
        if self.finished {
            // Already reaped: its process group id may belong to someone else by now.
            return self
                .child
                .wait()
                .await
                .context(|| format!("wait for {}", self.name));
        }
        if let Some(pgid) = self.pgid {
            let _ = killpg(pgid, signal);
        }
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(status) => {
                self.finished = true;
                self.disarm();
                self.kill_group();
                status.context(|| format!("wait for {}", self.name))
            }
            Err(_) => {
                self.kill_group();
                let status = self
                    .child
                    .wait()
                    .await
                    .context(|| format!("wait for {}", self.name))?;
                self.finished = true;
                self.disarm();
                Ok(status)
            }
        }
    }

    /// Whether the tool has exited (without blocking).
    pub fn has_exited(&mut self) -> bool {
        let exited = matches!(self.child.try_wait(), Ok(Some(_)));
        if exited && !self.finished {
            // The leader is reaped now: clear its group once, while the id is still ours, and
            // never signal that id again (it may be reused).
            self.kill_group();
            self.finished = true;
            self.disarm();
        }
        exited
    }

    fn disarm(&self) {
        if let Some(w) = &self.watchdog {
            w.disarm();
        }
    }

    fn kill_group(&self) {
        if let Some(pgid) = self.pgid {
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }
}

impl Drop for RunningTool {
    fn drop(&mut self) {
        if !self.finished {
            self.kill_group();
        }
        self.disarm();
    }
}

/// Size asked for the pipes of [`ToolCommand::stdin_piped`] / [`ToolCommand::stdout_piped`]
/// (Linux's default ceiling for unprivileged processes, `/proc/sys/fs/pipe-max-size`).
const PIPE_SIZE: i32 = 1 << 20;

/// Enlarges a pipe's buffer to [`PIPE_SIZE`]; a refusal (a lower system ceiling) keeps the
/// default, which only costs speed.
fn widen_pipe(pipe: &impl std::os::fd::AsFd) {
    if let Err(e) = nix::fcntl::fcntl(pipe, nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_SIZE)) {
        tracing::debug!(error = %e, "pipe buffer left at its default size");
    }
}
