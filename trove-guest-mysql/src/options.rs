//! Settings of a [`MysqlStrategy`](crate::MysqlStrategy).

use std::path::PathBuf;
use std::time::Duration;

use trove_guest_core::DatastoreKind;

/// How the strategy lays out files and runs tools; every field has a default.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MysqlOptions {
    /// What [`ReplicationStrategy::datastore`](trove_guest_core::ReplicationStrategy::datastore)
    /// reports before the first call has detected the server's flavor (default
    /// [`DatastoreKind::Mysql`]; agents configured for MariaDB set [`DatastoreKind::Mariadb`]).
    /// Once detected, the server's real flavor wins.
    pub expected_datastore: DatastoreKind,
    /// Directory for binary logs when `enable_as_master` turns them on. Default: none, the
    /// server's default place (relative `mysql-bin`, inside the datadir). Keeping them outside
    /// the datadir is better: a restore then never mixes binary logs of two histories.
    pub binlog_dir: Option<PathBuf>,
    /// Base name of the binary logs (default `mysql-bin`).
    pub binlog_basename: String,
    /// Directory for relay logs on replicas (default: the datadir).
    pub relay_log_dir: Option<PathBuf>,
    /// The server's own option file. When set, the backup tool reads it (through `!include`
    /// in the tool's private option file) for InnoDB file locations.
    pub server_config: Option<PathBuf>,
    /// The backup tool; default `mariabackup` / `xtrabackup` from the handle's `bin_dir` or
    /// `PATH`.
    pub backup_tool: Option<PathBuf>,
    /// The stream extractor; default `mbstream` / `xbstream`.
    pub stream_tool: Option<PathBuf>,
    /// The backup tool's `--log-copy-interval` in milliseconds (default 50: the tool's default
    /// of 1000 ms adds about 2 s to any backup taken during writes).
    pub log_copy_interval_ms: u32,
    /// Threads of the backup tool (`--parallel`) when
    /// [`SnapshotRequest::parallel`](trove_guest_core::SnapshotRequest::parallel) is absent.
    /// Default: half the available cores, 1 to 4 ([`default_parallel`]); 1 means one thread.
    pub backup_parallel: u32,
    /// Threads of the stream extractor (`mbstream`/`xbstream -x --parallel`) on restores and
    /// staging. Default: as [`MysqlOptions::backup_parallel`]; 1 means one thread.
    pub extract_parallel: u32,
    /// Memory for `--prepare` (`--use-memory`), the tool's default when absent.
    pub prepare_memory: Option<String>,
    /// How long `--prepare` may run before it is killed and the restore fails with
    /// [`trove_guest_core::Error::Timeout`] (default 4 h). Prepare replays the redo log written
    /// while the backup ran, so its time follows the master's write load during the backup
    /// rather than the data size; hours means it is stuck (or the redo log is enormous, and
    /// then this is the setting to raise).
    pub prepare_timeout: Duration,
    /// Prefix of the replication accounts this strategy creates; demote drops every account
    /// with it. Default `trove_repl_`.
    pub account_prefix: String,
    /// Seconds a replica waits between reconnection attempts (default 1).
    pub connect_retry: u32,
    /// How often bounded waits poll the server (default 100 ms).
    pub poll_interval: Duration,
    /// How long the first start of a restored data directory may take until the admin login
    /// works (default 120 s).
    pub start_timeout: Duration,
}

impl Default for MysqlOptions {
    fn default() -> Self {
        MysqlOptions {
            expected_datastore: DatastoreKind::Mysql,
            binlog_dir: None,
            binlog_basename: "mysql-bin".into(),
            relay_log_dir: None,
            server_config: None,
            backup_tool: None,
            stream_tool: None,
            log_copy_interval_ms: 50,
            backup_parallel: default_parallel(),
            extract_parallel: default_parallel(),
            prepare_memory: None,
            prepare_timeout: Duration::from_secs(4 * 3600),
            account_prefix: "trove_repl_".into(),
            connect_retry: 1,
            poll_interval: Duration::from_millis(100),
            start_timeout: Duration::from_secs(120),
        }
    }
}

/// The default of [`MysqlOptions::backup_parallel`] and [`MysqlOptions::extract_parallel`]:
/// half the cores available to this process, at least 1 and at most 4. The backup shares the
/// master with its workload, and a replica that restores while the snapshot streams runs the
/// extractor next to its own server; on the benchmark's 2 cores a second copy thread on each
/// side made provisioning slower, not faster (see BENCHMARKS.md).
pub fn default_parallel() -> u32 {
    let cores = std::thread::available_parallelism()
        .map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX));
    (cores / 2).clamp(1, 4)
}

impl MysqlOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets [`MysqlOptions::expected_datastore`].
    pub fn with_expected_datastore(mut self, kind: DatastoreKind) -> Self {
        self.expected_datastore = kind;
        self
    }
    /// Sets [`MysqlOptions::binlog_dir`].
    pub fn with_binlog_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.binlog_dir = Some(dir.into());
        self
    }
    /// Sets [`MysqlOptions::relay_log_dir`].
    pub fn with_relay_log_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.relay_log_dir = Some(dir.into());
        self
    }
    /// Sets [`MysqlOptions::server_config`].
    pub fn with_server_config(mut self, path: impl Into<PathBuf>) -> Self {
        self.server_config = Some(path.into());
        self
    }
    /// Sets [`MysqlOptions::backup_tool`].
    pub fn with_backup_tool(mut self, path: impl Into<PathBuf>) -> Self {
        self.backup_tool = Some(path.into());
        self
    }
    /// Sets [`MysqlOptions::stream_tool`].
    pub fn with_stream_tool(mut self, path: impl Into<PathBuf>) -> Self {
        self.stream_tool = Some(path.into());
        self
    }
    /// Sets [`MysqlOptions::backup_parallel`] (0 is taken as 1).
    pub fn with_backup_parallel(mut self, threads: u32) -> Self {
        self.backup_parallel = threads.max(1);
        self
    }
    /// Sets [`MysqlOptions::prepare_timeout`].
    pub fn with_prepare_timeout(mut self, timeout: Duration) -> Self {
        self.prepare_timeout = timeout;
        self
    }
    /// Sets [`MysqlOptions::extract_parallel`] (0 is taken as 1).
    pub fn with_extract_parallel(mut self, threads: u32) -> Self {
        self.extract_parallel = threads.max(1);
        self
    }
    /// Sets [`MysqlOptions::account_prefix`].
    pub fn with_account_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.account_prefix = prefix.into();
        self
    }
    /// Sets [`MysqlOptions::start_timeout`].
    pub fn with_start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }
}
