//! Pieces of `guest_agent` configuration files for throwaway servers.

use trove_guest_mysql::testkit::MariaDbServer;

/// The `[datastore]`, `[datastore.admin]`, `[service]` and `[mysql]` sections of an agent
/// driving the MariaDB test server `server` (its files, its socket for the admin, `mariadbd`
/// started as a process of the agent), as server `server_id`.
pub fn mariadb_sections(server: &MariaDbServer, server_id: u32) -> String {
    format!(
        r#"
[datastore]
type = "mariadb"
data_dir = "{data}"
config_dir = "{conf}"
work_dir = "{work}"
server_id = {server_id}

[datastore.admin]
port = {port}
socket = "{sock}"
user = "root"

[service]
kind = "process"
program = "/usr/sbin/mariadbd"
args = ["--defaults-file={cnf}", "--user=root"]
ready_unix = "{sock}"

[mysql]
binlog_dir = "{binlog}"
relay_log_dir = "{relay}"
server_config = "{cnf}"
"#,
        data = server.data_dir().display(),
        conf = server.config_dir().display(),
        work = server.dir().join("work").display(),
        port = server.port(),
        sock = server.socket().display(),
        cnf = server.config_file().display(),
        binlog = server.binlog_dir().display(),
        relay = server.relay_log_dir().display(),
    )
}
