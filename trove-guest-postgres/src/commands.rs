//! The command lines of the PostgreSQL tools this crate runs (`pg_basebackup`, `pg_rewind`).
//! Passwords never appear in them: connection strings name a 0600 passfile instead.

use std::path::{Path, PathBuf};

use trove_guest_core::tls::AdminTls;
use trove_guest_core::{AdminConnection, OsUser, Result, ToolCommand};

use crate::conf;
use crate::flavor::Flavor;

/// The connection string `pg_basebackup` uses to reach the local server as the administrator
/// (over the socket directory when the handle has one). The password, if any, is in `passfile`.
/// Over TCP with [`AdminTls::Verify`]: `sslmode=verify-full` with the CA as `sslrootcert`, the
/// certificate verified for the server name (`host`, with the admin host as `hostaddr` when it
/// is an IP address; for a host name, the certificate must name that host).
pub(crate) fn admin_conninfo(admin: &AdminConnection, passfile: Option<&Path>) -> Result<String> {
    let tls = match (&admin.socket, &admin.tls) {
        (None, AdminTls::Verify(v)) => Some(v),
        _ => None,
    };
    let host = match (&admin.socket, tls) {
        (Some(dir), _) => dir.to_string_lossy().into_owned(),
        (None, Some(v)) if admin.host.parse::<std::net::IpAddr>().is_ok() => v.server_name.clone(),
        (None, _) => admin.host.clone(),
    };
    let mut s = format!(
        "host={} port={} user={} application_name={}",
        conf::conninfo_quote(&host)?,
        admin.port,
        conf::conninfo_quote(&admin.user)?,
        conf::conninfo_quote("trove-guest-basebackup")?
    );
    if let Some(v) = tls {
        if host != admin.host {
            s.push_str(&format!(" hostaddr={}", conf::conninfo_quote(&admin.host)?));
        }
        s.push_str(&format!(
            " sslmode=verify-full sslrootcert={}",
            conf::conninfo_quote(&v.ca_file.to_string_lossy())?
        ));
    }
    if let Some(pf) = passfile {
        s.push_str(&format!(
            " passfile={}",
            conf::conninfo_quote(&pf.to_string_lossy())?
        ));
    }
    Ok(s)
}

/// `pg_basebackup` writing a tar stream of the whole cluster to stdout.
pub(crate) fn basebackup(
    program: PathBuf,
    conninfo: &str,
    label: &str,
    flavor: Flavor,
) -> ToolCommand {
    ToolCommand::new(program)
        .arg("-d")
        .arg(conninfo)
        .args(flavor.basebackup_options())
        .arg("--label")
        .arg(label)
        .stdout_piped()
}

/// `pg_rewind` of the (cleanly stopped) data directory `data` onto `source_server`, run as the
/// data directory's owner.
pub(crate) fn rewind(
    program: PathBuf,
    data: &Path,
    source_server: &str,
    cwd: &Path,
    user: Option<OsUser>,
) -> ToolCommand {
    ToolCommand::new(program)
        .arg(format!("--target-pgdata={}", data.display()))
        .arg(format!("--source-server={source_server}"))
        .current_dir(cwd)
        .run_as(user)
}

#[cfg(test)]
mod tests {
    use trove_guest_core::Secret;

    use super::*;

    #[test]
    fn a_tls_admin_conninfo_verifies_the_server_name_and_connects_to_the_admin_address() {
        let tcp = AdminConnection::new("127.0.0.1", 5432, "postgres", Secret::new("x"))
            .with_tls(AdminTls::verify("/etc/trove/tls/ca.pem", "db1.example.net"));
        let s = admin_conninfo(&tcp, None).unwrap();
        assert!(
            s.starts_with("host='db1.example.net' port=5432")
                && s.contains(" hostaddr='127.0.0.1'")
                && s.ends_with(" sslmode=verify-full sslrootcert='/etc/trove/tls/ca.pem'"),
            "{s}"
        );
        // A socket never uses TLS.
        let sock = tcp.clone().with_socket("/run/postgresql");
        let s = admin_conninfo(&sock, None).unwrap();
        assert!(!s.contains("sslmode") && !s.contains("hostaddr"), "{s}");
        // Without TLS: as before.
        let plain = tcp.with_tls(AdminTls::Off);
        let s = admin_conninfo(&plain, None).unwrap();
        assert!(
            s.starts_with("host='127.0.0.1'") && !s.contains("sslmode"),
            "{s}"
        );
    }
}
