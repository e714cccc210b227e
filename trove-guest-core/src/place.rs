//! Where a tool runs: on the host, or through `exec` in a named container (the database
//! server's own, or a separate backup-tools container as OpenStack Trove runs them).
//!
//! Backends build every tool invocation as a host [`ToolCommand`] and hand it to
//! [`ToolPlace::prepare`], which returns the command to spawn. For a container, that is the
//! engine's command-line client talking to the configured socket:
//!
//! ```text
//! docker --host unix://SOCKET exec -i [-u UID:GID] [-w DIR] CONTAINER PROGRAM ARGS...
//! ```
//!
//! stdin and stdout stream through the client, its exit status is the tool's, its stderr is
//! the tool's (the runner keeps the tail), and its timeout and process-group kill apply as for
//! a host tool. Host paths in the arguments and working directory are rewritten to the
//! container's through the declared bind mounts ([`BindMount`]): the data, config and work
//! directories must each be a bind mount whose host path and container path are both known.
//! Secret files are created by the backends in the work directory (0600, in a 0700 directory),
//! so they reach the container through that bind mount with their permissions, never on argv or
//! in the environment. A tool's environment would go on the client's argv and is refused.
//!
//! Limits: a timeout or a dropped future kills the client, not the process in the container. A
//! streaming tool (backup, extract) stops at its next write to the closed stdout or its read of
//! the closed stdin; a tool without pipes (`--prepare`, `pg_rewind`) runs on to its end in the
//! container, and a retry's fresh staging directory keeps it from mattering. A tool missing in
//! the image fails as [`Error::ToolFailed`](crate::Error::ToolFailed) named
//! `TOOL (in container NAME)`, with the engine's "executable file not found" in the stderr tail.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::runner::ToolCommand;

/// A host directory that is visible in the container at another path.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BindMount {
    /// The path on the host (where the agent reads and writes).
    pub host: PathBuf,
    /// The path inside the container (what the tool is told).
    pub container: PathBuf,
}

impl BindMount {
    /// `host` is mounted at `container`.
    pub fn new(host: impl Into<PathBuf>, container: impl Into<PathBuf>) -> Self {
        BindMount {
            host: host.into(),
            container: container.into(),
        }
    }
}

/// Tools run through `exec` in a named container.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ContainerExec {
    /// The engine's command-line client: `docker` (or a path to it), or `podman` (run as a
    /// remote client of the socket).
    pub client: PathBuf,
    /// The engine's Unix socket.
    pub socket: PathBuf,
    /// The container the tools run in.
    pub container: String,
    /// The bind mounts shared with the container.
    pub mounts: Vec<BindMount>,
}

impl ContainerExec {
    /// Tools run in `container` of the engine on `socket`, through the `docker` client.
    pub fn new(socket: impl Into<PathBuf>, container: impl Into<String>) -> Self {
        ContainerExec {
            client: PathBuf::from("docker"),
            socket: socket.into(),
            container: container.into(),
            mounts: Vec::new(),
        }
    }

    /// Uses another client (`podman`, or a full path).
    #[must_use]
    pub fn with_client(mut self, client: impl Into<PathBuf>) -> Self {
        self.client = client.into();
        self
    }

    /// Declares that host directory `host` is mounted at `container` in the container.
    #[must_use]
    pub fn with_mount(mut self, host: impl Into<PathBuf>, container: impl Into<PathBuf>) -> Self {
        self.mounts.push(BindMount::new(host, container));
        self
    }

    /// The container path of host path `p`, when it lies in a bind mount (longest mount wins).
    pub fn to_container(&self, p: &Path) -> Option<PathBuf> {
        self.mounts
            .iter()
            .filter_map(|m| p.strip_prefix(&m.host).ok().map(|rest| (m, rest)))
            .max_by_key(|(m, _)| m.host.as_os_str().len())
            .map(|(m, rest)| {
                if rest.as_os_str().is_empty() {
                    m.container.clone()
                } else {
                    m.container.join(rest)
                }
            })
    }

    /// Rewrites every host path of a bind mount inside `arg` (as the whole argument, after
    /// `=`, or after a space as in a connection string).
    fn map_arg(&self, arg: &OsStr) -> OsString {
        let bytes = arg.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let boundary = i == 0 || matches!(bytes[i - 1], b'=' | b' ' | b'\'');
            if boundary && bytes[i] == b'/' {
                // The path runs to the next space or quote.
                let end = bytes[i..]
                    .iter()
                    .position(|b| matches!(b, b' ' | b'\''))
                    .map_or(bytes.len(), |n| i + n);
                let p = Path::new(OsStr::from_bytes(&bytes[i..end]));
                match self.to_container(p) {
                    Some(c) => out.extend_from_slice(c.as_os_str().as_bytes()),
                    None => out.extend_from_slice(&bytes[i..end]),
                }
                i = end;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        OsString::from_vec(out)
    }

    fn client_args(&self) -> Vec<OsString> {
        let url = format!("unix://{}", self.socket.display());
        let podman = self
            .client
            .file_name()
            .is_some_and(|n| n.as_bytes().starts_with(b"podman"));
        if podman {
            vec!["--remote".into(), "--url".into(), url.into()]
        } else {
            vec!["--host".into(), url.into()]
        }
    }
}

/// Where a tool runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ToolPlace {
    /// On the host, as a child process of the agent.
    #[default]
    Host,
    /// Through `exec` in a container.
    Container(ContainerExec),
}

impl ToolPlace {
    /// The command that runs `cmd` here: `cmd` itself on the host; the client's `exec` for a
    /// container, with stdin, stdout, timeout and user carried over (the user as numeric
    /// `uid:gid`, the container's database account).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] when `cmd` sets environment variables (they would be on the
    /// client's argv) or its working directory is in no bind mount.
    pub fn prepare(&self, cmd: ToolCommand) -> Result<ToolCommand> {
        let exec = match self {
            ToolPlace::Host => return Ok(cmd),
            ToolPlace::Container(exec) => exec,
        };
        let parts = cmd.into_parts();
        if !parts.env.is_empty() {
            return Err(Error::invalid(
                "tool in a container",
                format!(
                    "{} sets environment variables, which would be on the exec client's argv",
                    parts.program.display()
                ),
            ));
        }
        let mut args = exec.client_args();
        args.push("exec".into());
        if parts.stdin_piped {
            args.push("-i".into());
        }
        if let Some(u) = parts.user {
            args.push("-u".into());
            args.push(format!("{}:{}", u.uid, u.gid).into());
        }
        if let Some(dir) = &parts.cwd {
            let Some(inside) = exec.to_container(dir) else {
                return Err(Error::invalid(
                    "tool in a container",
                    format!(
                        "working directory {} is in no bind mount of container {}",
                        dir.display(),
                        exec.container
                    ),
                ));
            };
            args.push("-w".into());
            args.push(inside.into_os_string());
        }
        let label = format!(
            "{} (in container {})",
            parts
                .program
                .file_name()
                .unwrap_or(parts.program.as_os_str())
                .to_string_lossy(),
            exec.container
        );
        args.push(exec.container.clone().into());
        args.push(exec.map_arg(parts.program.as_os_str()));
        args.extend(parts.args.iter().map(|a| exec.map_arg(a)));
        Ok(parts.rebuild(exec.client.clone(), args, label))
    }

    /// The container path of host path `p` (`p` itself on the host).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] when `p` lies in no bind mount of the container.
    pub fn path_for_tool(&self, p: &Path) -> Result<PathBuf> {
        match self {
            ToolPlace::Host => Ok(p.to_path_buf()),
            ToolPlace::Container(exec) => exec.to_container(p).ok_or_else(|| {
                Error::invalid(
                    "tool in a container",
                    format!(
                        "{} is in no bind mount of container {}",
                        p.display(),
                        exec.container
                    ),
                )
            }),
        }
    }

    /// Whether tools run in a container.
    pub fn is_container(&self) -> bool {
        matches!(self, ToolPlace::Container(_))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::runner::OsUser;

    fn place() -> ToolPlace {
        ToolPlace::Container(
            ContainerExec::new("/run/podman/podman.sock", "db1-tools")
                .with_mount("/srv/db1/data", "/var/lib/mysql")
                .with_mount("/srv/db1/workdir", "/var/lib/trove-work")
                .with_mount("/srv/db1/data/sub", "/other"),
        )
    }

    #[test]
    fn host_commands_are_unchanged() {
        let cmd = ToolCommand::new("mbstream").arg("-x").stdin_piped();
        let out = ToolPlace::Host.prepare(cmd).unwrap();
        assert_eq!(out.display(), "mbstream -x");
    }

    #[test]
    fn container_commands_exec_with_mapped_paths_user_and_stdin() {
        let cmd = ToolCommand::new("mariabackup")
            .arg("--defaults-file=/srv/db1/workdir/.tg-secret-a/backup.cnf")
            .arg("--backup")
            .arg("--datadir=/srv/db1/data")
            .arg("--target-dir=/srv/db1/workdir/scratch")
            .arg("/srv/db1/data/sub/x")
            .arg("/elsewhere/y")
            .run_as(Some(OsUser { uid: 100, gid: 101 }))
            .stdout_piped()
            .timeout(Duration::from_secs(9));
        let out = place().prepare(cmd).unwrap();
        assert_eq!(
            out.display(),
            "docker --host unix:///run/podman/podman.sock exec -u 100:101 db1-tools mariabackup \
             --defaults-file=/var/lib/trove-work/.tg-secret-a/backup.cnf --backup \
             --datadir=/var/lib/mysql --target-dir=/var/lib/trove-work/scratch /other/x \
             /elsewhere/y"
        );
        assert_eq!(out.get_timeout(), Some(Duration::from_secs(9)));
        // The client itself runs as the agent: the user switch happens in the container.
        let parts = out.into_parts();
        assert!(parts.user.is_none());
        assert!(parts.stdout_piped);

        let cmd = ToolCommand::new("tar")
            .args(["-x", "-f", "-", "-C", "/srv/db1/workdir/stage"])
            .current_dir("/srv/db1/workdir/stage")
            .stdin_piped();
        let podman = ToolPlace::Container(
            ContainerExec::new("/run/podman/podman.sock", "db1-tools")
                .with_client("podman")
                .with_mount("/srv/db1/workdir", "/var/lib/trove-work"),
        );
        let out = podman.prepare(cmd).unwrap();
        assert_eq!(
            out.display(),
            "podman --remote --url unix:///run/podman/podman.sock exec -i -w \
             /var/lib/trove-work/stage db1-tools tar -x -f - -C /var/lib/trove-work/stage"
        );
    }

    #[test]
    fn connection_strings_are_mapped_inside() {
        let cmd = ToolCommand::new("pg_basebackup").arg("-d").arg(
            "host=/srv/db1/workdir/sock port=5432 passfile='/srv/db1/workdir/.tg-secret-b/pgpass'",
        );
        let out = place().prepare(cmd).unwrap();
        assert_eq!(
            out.get_args().last().unwrap(),
            "host=/var/lib/trove-work/sock port=5432 \
             passfile='/var/lib/trove-work/.tg-secret-b/pgpass'"
        );
    }

    #[test]
    fn environment_and_unmounted_working_dirs_are_refused() {
        let cmd = ToolCommand::new("x").env("PGPASSWORD", "no");
        let e = place().prepare(cmd).unwrap_err();
        assert!(!e.to_string().contains("no\""), "{e}");
        let cmd = ToolCommand::new("x").current_dir("/tmp/elsewhere");
        assert!(place().prepare(cmd).is_err());
        assert!(
            place()
                .path_for_tool(Path::new("/srv/db1/data/ibdata1"))
                .unwrap()
                == Path::new("/var/lib/mysql/ibdata1")
        );
        assert!(place().path_for_tool(Path::new("/srv/other")).is_err());
    }
}
