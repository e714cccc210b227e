//! Building the strategy of a datastore: the one place the examples name the backend crates.

use std::sync::Arc;

use trove_guest_core::{
    DatastoreHandle, DatastoreKind, Error, Result, SharedStrategy, SnapshotStore,
};
use trove_guest_mysql::{MysqlOptions, MysqlStrategy};
use trove_guest_postgres::{PostgresStrategy, PostgresStrategyOptions};
use trove_guest_redis::{RedisStrategy, RedisStrategyOptions};

use crate::config::MysqlSection;

/// Whether this agent has a backend for `kind`.
pub fn supports(kind: DatastoreKind) -> bool {
    matches!(
        kind,
        DatastoreKind::Mysql | DatastoreKind::Mariadb | DatastoreKind::Postgresql
    ) || kind.as_str() == "redis"
}

/// The strategy for `kind` acting on `handle`, storing snapshots in `store`.
///
/// # Errors
///
/// [`Error::Unsupported`] for a datastore this agent has no backend for (see [`supports`]);
/// what the backend's constructor reports.
pub fn strategy(
    kind: DatastoreKind,
    handle: DatastoreHandle,
    store: Arc<dyn SnapshotStore>,
    mysql: &MysqlSection,
) -> Result<SharedStrategy> {
    Ok(match kind {
        DatastoreKind::Postgresql => Arc::new(PostgresStrategy::new(
            handle,
            store,
            PostgresStrategyOptions::new(),
        )),
        DatastoreKind::Mysql | DatastoreKind::Mariadb => Arc::new(MysqlStrategy::new(
            handle,
            store,
            mysql_options(mysql).with_expected_datastore(kind),
        )),
        k if k.as_str() == "redis" => Arc::new(RedisStrategy::new(
            handle,
            store,
            RedisStrategyOptions::new(),
        )),
        other => {
            return Err(Error::unsupported(format!(
                "the {other} datastore (this agent has backends for mysql, mariadb, postgresql and redis)"
            )));
        }
    })
}

/// The MySQL/MariaDB backend options the `[mysql]` section describes.
pub fn mysql_options(section: &MysqlSection) -> MysqlOptions {
    let mut o = MysqlOptions::new();
    if let Some(d) = &section.binlog_dir {
        o = o.with_binlog_dir(d);
    }
    if let Some(d) = &section.relay_log_dir {
        o = o.with_relay_log_dir(d);
    }
    if let Some(f) = &section.server_config {
        o = o.with_server_config(f);
    }
    o
}
