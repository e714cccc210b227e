//! The `[http]` and `[auth]` sections of the agent's configuration: where the HTTP API listens
//! (TCP, TLS, a Unix socket), who may call it and what its error bodies show.
//!
//! ```toml
//! listen = "10.0.0.5:8780"             # TCP; any address but loopback needs TLS
//!
//! [http]
//! tls_cert_file = "/etc/trove/agent.crt"   # PEM chain, leaf first
//! tls_key_file = "/etc/trove/agent.key"    # PEM key; mode 0600 or stricter
//! # unix_socket = "/run/trove/agent.sock"  # also (or only) serve on a Unix socket
//! # unix_socket_mode = 0o600               # or 0o660
//! # debug_errors = false                   # true: error bodies carry tool stderr and paths
//!
//! [auth]
//! token_file = "/etc/trove/agent.token"    # first line; mode 0600 or stricter; required with listen
//! # allowed_uids = [0, 998]                # uids admitted on the Unix socket (default: own, root)
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;
use trove_guest_core::{Error, Result, Secret};

use crate::agent::{AgentAuth, AgentOptions, ErrorDisclosure, ListenOn, TlsFiles};
use crate::config::AgentConfig;

/// The shortest token the agent accepts, in characters.
pub const MIN_TOKEN_LEN: usize = 16;

/// `[http]`: TLS for the TCP listener, the Unix socket, error detail.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct HttpSection {
    /// The TLS certificate chain (PEM). With `tls_key_file`, `listen` serves HTTPS.
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    /// The TLS private key (PEM), mode 0600 or stricter.
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
    /// A Unix socket to serve on as well as (or instead of) `listen`; callers are admitted by
    /// their uid (`[auth] allowed_uids`), no token is asked for.
    #[serde(default)]
    pub unix_socket: Option<PathBuf>,
    /// The socket's mode: `0o600` (default) or `0o660`.
    #[serde(default)]
    pub unix_socket_mode: Option<u32>,
    /// Error bodies carry the full detail (tool stderr, file paths, server messages). Default
    /// false: they carry the kind, a generic message and an `error_id` to find in the log.
    #[serde(default)]
    pub debug_errors: bool,
}

/// `[auth]`: the bearer token and the uids admitted on the Unix socket.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct AuthSection {
    /// File holding the bearer token on its first line (at least 16 characters), mode 0600 or
    /// stricter. Required when the agent listens on TCP.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// The uids admitted on the Unix socket (default: the agent's own uid and root).
    #[serde(default)]
    pub allowed_uids: Vec<u32>,
}

fn invalid(reason: String) -> Error {
    Error::invalid("agent configuration", reason)
}

impl AgentConfig {
    /// Checks the listeners and authentication of a parsed configuration (no file is read):
    /// something to listen on, TLS with both files, any `listen` address but loopback only
    /// with TLS, a token for TCP, a socket mode of 0600 or 0660.
    pub(crate) fn check_http(&self) -> Result<()> {
        let http = &self.http;
        let tls = match (&http.tls_cert_file, &http.tls_key_file) {
            (Some(_), Some(_)) => true,
            (None, None) => false,
            _ => {
                return Err(invalid(
                    "[http] tls_cert_file and tls_key_file go together".into(),
                ));
            }
        };
        match self.listen {
            None if http.unix_socket.is_none() => {
                return Err(invalid(
                    "nothing to listen on: set listen, or [http] unix_socket".into(),
                ));
            }
            None if tls => {
                return Err(invalid("[http] TLS files without a listen address".into()));
            }
            None => {}
            Some(addr) => {
                if !addr.ip().is_loopback() && !tls {
                    return Err(invalid(format!(
                        "listen = \"{addr}\": an address other than loopback (127.0.0.1, ::1) \
                         needs TLS ([http] tls_cert_file and tls_key_file)"
                    )));
                }
                if self.auth.token_file.is_none() {
                    return Err(invalid(format!(
                        "listen = \"{addr}\" needs [auth] token_file: without a token any \
                         process that reaches the port (a database superuser's COPY ... FROM \
                         PROGRAM, for one) could drive the agent; use [http] unix_socket for \
                         callers identified by their uid"
                    )));
                }
            }
        }
        if let Some(mode) = http.unix_socket_mode {
            if http.unix_socket.is_none() {
                return Err(invalid(
                    "[http] unix_socket_mode without unix_socket".into(),
                ));
            }
            if mode != 0o600 && mode != 0o660 {
                return Err(invalid(format!(
                    "[http] unix_socket_mode = {mode:#o}: the agent's socket is 0o600 or 0o660"
                )));
            }
        }
        Ok(())
    }

    /// Where the agent listens: `listen` (HTTPS when `[http]` has TLS files) and the Unix
    /// socket, in that order.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for a TLS key readable by group or others; [`Error::Io`] when it
    /// cannot be examined.
    pub fn listeners(&self) -> Result<Vec<ListenOn>> {
        let http = &self.http;
        let mut out = Vec::new();
        if let Some(addr) = self.listen {
            match (&http.tls_cert_file, &http.tls_key_file) {
                (Some(cert), Some(key)) => {
                    // Refused now rather than when the listener starts.
                    crate::agent::read_tls_key_file(key)?;
                    out.push(ListenOn::Tls {
                        addr,
                        tls: TlsFiles::new(cert, key),
                    });
                }
                _ => out.push(ListenOn::Tcp(addr)),
            }
        }
        if let Some(path) = &http.unix_socket {
            out.push(ListenOn::Unix {
                path: path.clone(),
                mode: http.unix_socket_mode.unwrap_or(0o600),
            });
        }
        Ok(out)
    }

    /// The agent's options: instance id, token (read from `token_file`), uids admitted on the
    /// socket, error disclosure.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for a token file readable by group or others, or whose token is
    /// shorter than [`MIN_TOKEN_LEN`]; [`Error::Io`] when it cannot be read.
    pub fn agent_options(&self) -> Result<AgentOptions> {
        let mut auth = AgentAuth::new().with_allowed_uids(self.auth.allowed_uids.clone());
        if let Some(path) = &self.auth.token_file {
            auth = auth.with_token(read_token_file(path)?);
        }
        let errors = if self.http.debug_errors {
            ErrorDisclosure::Full
        } else {
            ErrorDisclosure::Redacted
        };
        Ok(AgentOptions::new(self.instance_id.clone())
            .with_auth(auth)
            .with_errors(errors))
    }
}

/// The largest token file read.
const MAX_TOKEN_FILE_LEN: u64 = 4 << 10;

fn read_token_file(path: &Path) -> Result<Secret> {
    let text = trove_guest_core::private_file::read_private_text(path, MAX_TOKEN_FILE_LEN)
        .map_err(|e| e.into_error("token_file"))?;
    let token = text.expose().lines().next().unwrap_or("").trim();
    if token.chars().count() < MIN_TOKEN_LEN {
        return Err(Error::invalid(
            "token_file",
            format!(
                "{}: the token on its first line is shorter than {MIN_TOKEN_LEN} characters",
                path.display()
            ),
        ));
    }
    if token.chars().any(|c| c.is_control() || !c.is_ascii()) {
        return Err(Error::invalid(
            "token_file",
            format!("{}: the token must be printable ASCII", path.display()),
        ));
    }
    Ok(Secret::new(token))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    const BASE: &str = r#"
instance_id = "i-1"
[datastore]
type = "mariadb"
data_dir = "/d"
config_dir = "/c"
[datastore.admin]
port = 3306
user = "root"
[service]
kind = "systemd"
unit = "x.service"
[snapshot_store]
url = "file:///tmp"
[credentials]
transport = "clear-text"
"#;

    fn parse(extra: &str) -> Result<AgentConfig> {
        AgentConfig::parse(&format!("{BASE}{extra}"))
    }

    fn with_listen(listen: &str, extra: &str) -> Result<AgentConfig> {
        AgentConfig::parse(&format!("listen = \"{listen}\"\n{BASE}{extra}"))
    }

    fn private_file(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn a_tcp_listener_without_a_token_file_is_refused() {
        let e = with_listen("127.0.0.1:8780", "").unwrap_err();
        assert_eq!(e.kind(), trove_guest_core::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("token_file"), "{e}");
    }

    #[test]
    fn nothing_to_listen_on_is_refused_and_a_socket_alone_needs_no_token() {
        assert!(parse("").is_err());
        let c = parse("[http]\nunix_socket = \"/run/trove/agent.sock\"\n").unwrap();
        let l = c.listeners().unwrap();
        assert_eq!(
            l,
            [ListenOn::Unix {
                path: "/run/trove/agent.sock".into(),
                mode: 0o600
            }]
        );
        assert!(c.agent_options().unwrap().auth.token.is_none());
        let e = parse("[http]\nunix_socket = \"/s\"\nunix_socket_mode = 0o666\n").unwrap_err();
        assert!(e.to_string().contains("0o600 or 0o660"), "{e}");
    }

    #[test]
    fn tls_needs_both_files_and_a_private_key() {
        let dir = tempfile::tempdir().unwrap();
        let token = private_file(dir.path(), "token", "0123456789abcdef0123\n", 0o600);
        let key = private_file(dir.path(), "key.pem", "k", 0o644);
        let auth = format!("[auth]\ntoken_file = {:?}\n", token.display().to_string());
        let half = format!("[http]\ntls_cert_file = \"/c.pem\"\n{auth}");
        assert!(with_listen("10.0.0.5:8780", &half).is_err());
        let both = format!(
            "[http]\ntls_cert_file = \"/c.pem\"\ntls_key_file = {:?}\n{auth}",
            key.display().to_string()
        );
        let c = with_listen("10.0.0.5:8780", &both).unwrap();
        let e = c.listeners().unwrap_err();
        assert!(e.to_string().contains("chmod 600"), "{e}");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(c.listeners().unwrap()[..], [ListenOn::Tls { .. }]));
        let opts = c.agent_options().unwrap();
        assert_eq!(opts.auth.token.unwrap().expose(), "0123456789abcdef0123");
        assert_eq!(opts.errors, ErrorDisclosure::Redacted);
    }

    #[test]
    fn a_loose_short_or_missing_token_file_stops_the_agent() {
        let dir = tempfile::tempdir().unwrap();
        let config = |p: &Path| {
            with_listen(
                "127.0.0.1:8780",
                &format!("[auth]\ntoken_file = {:?}\n", p.display().to_string()),
            )
            .unwrap()
        };
        let loose = private_file(dir.path(), "loose", "0123456789abcdef0123\n", 0o640);
        let e = config(&loose).agent_options().unwrap_err();
        assert!(e.to_string().contains("chmod 600"), "{e}");
        assert!(!e.to_string().contains("0123456789abcdef"), "{e}");
        let short = private_file(dir.path(), "short", "abc\n", 0o600);
        let e = config(&short).agent_options().unwrap_err();
        assert!(e.to_string().contains("shorter"), "{e}");
        assert!(config(&dir.path().join("absent")).agent_options().is_err());
        let debug = with_listen(
            "127.0.0.1:8780",
            "[http]\ndebug_errors = true\n[auth]\ntoken_file = \"/t\"\n",
        )
        .unwrap();
        assert!(debug.http.debug_errors);
    }
}
