//! `guest_agent --check-config`: validates a configuration without starting, connecting to or
//! changing anything.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use trove_guest_core::tls::AdminTls;
use trove_guest_core::{Error, Result};

use crate::config::{AgentConfig, ServiceSection, TransportSetting};

/// What a valid configuration describes (printed by `guest_agent --check-config`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConfigSummary {
    /// One `key: value` line per part of the configuration.
    pub lines: Vec<String>,
}

impl std::fmt::Display for ConfigSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for l in &self.lines {
            writeln!(f, "{l}")?;
        }
        Ok(())
    }
}

fn dir_exists(what: &str, path: &Path) -> Result<()> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(Error::invalid(
            what,
            format!("{} is not a directory", path.display()),
        )),
        Err(e) => Err(Error::io(format!("{what}: stat {}", path.display()), e)),
    }
}

/// A directory the agent may create: it exists, or its parent does.
fn dir_or_parent(what: &str, path: &Path) -> Result<()> {
    if path.exists() {
        return dir_exists(what, path);
    }
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => dir_exists(what, p),
        _ => Err(Error::invalid(
            what,
            format!("{} has no parent directory", path.display()),
        )),
    }
}

fn executable(what: &str, path: &Path) -> Result<()> {
    let m = std::fs::metadata(path)
        .map_err(|e| Error::io(format!("{what}: stat {}", path.display()), e))?;
    if !m.is_file() || m.permissions().mode() & 0o111 == 0 {
        return Err(Error::invalid(
            what,
            format!("{} is not an executable file", path.display()),
        ));
    }
    Ok(())
}

/// `[datastore.tls]` for replication: the CA file (readable, certificates only) and, when
/// named, the server's certificate (parses) and key (a private file, a PEM private key, the
/// certificate's). Nothing of the key is printed.
fn replication_tls(
    handle: &trove_guest_core::DatastoreHandle,
    own: &trove_guest_core::ServerTls,
) -> Result<String> {
    // Core's errors name the setting; here the path helps too.
    let setting = |e: Error| match e {
        Error::InvalidInput { what, reason } => {
            let path = own.certificate.as_ref().map(|c| {
                if what == "key_file" {
                    c.key_file.display().to_string()
                } else {
                    c.cert_file.display().to_string()
                }
            });
            Error::invalid(
                format!("[datastore.tls] {what}"),
                format!("{}: {reason}", path.unwrap_or_default()),
            )
        }
        other => other,
    };
    let section = own
        .replication_tls(&handle.advertise.host)
        .map_err(|e| match e {
            Error::InvalidInput { reason, .. } => Error::invalid(
                "[datastore.tls] ca_file",
                format!("{}: {reason}", own.ca_file.display()),
            ),
            other => other,
        })?;
    let mut line = format!(
        "replication tls: CA {}, server name {}, replicas {:?}",
        own.ca_file.display(),
        section.server_name,
        own.replicas
    );
    match &own.certificate {
        Some(c) => {
            let loaded = c
                .check_files(handle.os_user.map(|u| u.uid))
                .map_err(setting)?;
            line.push_str(&format!(
                "; server certificate {} (SHA-256 {}), key {} private and matching",
                c.cert_file.display(),
                loaded.fingerprint(),
                c.key_file.display()
            ));
        }
        None => line.push_str("; server certificate not named (chain and name checked only)"),
    }
    Ok(line)
}

impl AgentConfig {
    /// Checks everything the agent would need at start, without starting the server, binding
    /// the listen address, contacting the snapshot store or the broker, or writing anything:
    /// the admin password file (mode 0600 or stricter), the admin connection's TLS
    /// (`[datastore.tls] admin = "verify"`: a TCP admin connection and a readable CA file
    /// holding certificates only), replication's `[datastore.tls]` (the CA file; the server's
    /// `cert_file` parses, its `key_file` is a private file holding that certificate's key,
    /// never printed), the service description (and a `process` server's
    /// program), the tool placement, the data / config / work directories,
    /// the snapshot store's URL (and an S3 store's credentials file), `[trove_rpc]`'s files
    /// (modes, `guest_id`, the instance key) and its AMQP URL, and `[log]`.
    ///
    /// # Errors
    ///
    /// The first problem found, as the typed error the agent would stop with
    /// ([`Error::InvalidInput`] naming the setting, [`Error::Io`] naming the file,
    /// [`Error::Unsupported`] for a store scheme the agent does not take).
    pub fn check(&self) -> Result<ConfigSummary> {
        let mut lines = vec![format!("instance_id: {}", self.instance_id)];
        // Listeners (TLS key mode), the token file (mode, length) and the credentials choice.
        for on in self.listeners()? {
            lines.push(match on {
                crate::agent::ListenOn::Tcp(a) => format!("listen: http://{a}"),
                crate::agent::ListenOn::Tls { addr, .. } => format!("listen: https://{addr}"),
                crate::agent::ListenOn::Unix { path, mode } => {
                    format!("listen: unix socket {} (mode {mode:o})", path.display())
                }
            });
        }
        let options = self.agent_options()?;
        lines.push(format!(
            "auth: {}",
            if options.auth.token.is_some() {
                "bearer token"
            } else {
                "no token (Unix socket peers by uid only)"
            }
        ));
        // As `credential_strategy` decides: an explicit clear-text transport wins over a
        // secret directory.
        let credentials = self.credentials.as_ref();
        let clear_text = credentials.and_then(|c| c.transport) == Some(TransportSetting::ClearText);
        lines.push(match credentials.and_then(|c| c.secret_dir.as_ref()) {
            Some(d) if !clear_text => {
                format!("replication passwords: by reference in {}", d.display())
            }
            _ => "replication passwords: in clear inside snapshot documents (opt-in)".to_owned(),
        });
        // The handle: admin password file (mode), service, OS user, tool placement, the admin
        // connection's TLS (its CA file: readable, certificates only).
        let handle = self.datastore_handle()?;
        let d = &self.datastore;
        let admin = &handle.admin;
        lines.push(match (&admin.socket, &admin.tls) {
            (Some(sock), _) => format!("admin connection: socket {}", sock.display()),
            (None, AdminTls::Verify(v)) => {
                admin.tls.trust().map_err(|e| match e {
                    Error::InvalidInput { reason, .. } => Error::invalid(
                        "[datastore.tls] admin",
                        format!("{}: {reason}", v.ca_file.display()),
                    ),
                    other => other,
                })?;
                format!(
                    "admin connection: {}:{} over TLS, verified with {} for {}",
                    admin.host,
                    admin.port,
                    v.ca_file.display(),
                    v.server_name
                )
            }
            (None, _) => format!(
                "admin connection: {}:{} without TLS",
                admin.host, admin.port
            ),
        });
        if let Some(own) = &handle.tls {
            lines.push(replication_tls(&handle, own)?);
        }
        dir_exists("datastore.data_dir", &d.data_dir)?;
        dir_or_parent("datastore.config_dir", &d.config_dir)?;
        if let Some(w) = &d.work_dir {
            dir_or_parent("datastore.work_dir", w)?;
        }
        if let Some(b) = &d.bin_dir {
            dir_exists("datastore.bin_dir", b)?;
        }
        lines.push(format!(
            "datastore: {} (data {}, server id {})",
            d.kind,
            d.data_dir.display(),
            d.server_id
        ));
        let service = match &self.service {
            ServiceSection::Systemd { unit } => format!("systemd unit {unit}"),
            ServiceSection::Process {
                program, pid_file, ..
            } => {
                executable("service.program", program)?;
                if let Some(p) = pid_file {
                    dir_or_parent("service.pid_file", p)?;
                }
                format!("process {}", program.display())
            }
            ServiceSection::Container { container, .. } => format!("container {container}"),
        };
        lines.push(format!("service: {service}"));
        let url = &self.snapshot_store.url;
        if url.starts_with("s3://") {
            // Builds the client and reads the credentials file; no request is sent.
            self.snapshot_store()?;
        } else {
            let dir = self.local_store_dir()?;
            // The agent creates the directory at start when only its parent exists.
            dir_or_parent("snapshot_store.url", Path::new(dir))?;
        }
        lines.push(format!("snapshot_store: {url}"));
        match &self.trove_rpc {
            Some(rpc) => {
                let opts = rpc.rpc_options()?;
                let parsed: std::result::Result<lapin::uri::AMQPUri, String> =
                    opts.url.expose().parse();
                if parsed.is_err() {
                    // The message would quote the URL, which holds the broker password.
                    return Err(Error::invalid(
                        "trove_rpc.transport_url_file",
                        format!(
                            "the first line of {} is not an AMQP URL \
                             (amqp://user:password@host:5672/vhost)",
                            rpc.transport_url_file.display()
                        ),
                    ));
                }
                lines.push(format!(
                    "trove_rpc: queue guestagent.{} ({})",
                    opts.guest.guest_id,
                    if opts.guest.key.is_some() {
                        "secure RPC"
                    } else {
                        "plaintext RPC"
                    }
                ));
                if let Some(m) = &opts.prepare_marker {
                    let parent = m.parent().unwrap_or(Path::new(""));
                    dir_exists("trove_rpc.prepare_marker", parent)?;
                    lines.push(format!(
                        "trove_rpc: prepare marker {} ({})",
                        m.display(),
                        if m.exists() {
                            "present: heartbeats report the server"
                        } else {
                            "absent: no heartbeat until prepare(snapshot) succeeds"
                        }
                    ));
                }
            }
            None => lines.push("trove_rpc: off".to_owned()),
        }
        crate::logging::filter(self.log.level.as_deref())?;
        lines.push(format!(
            "log: {:?}, level {}",
            self.log.format,
            self.log.level.as_deref().unwrap_or("info")
        ));
        Ok(ConfigSummary { lines })
    }
}
