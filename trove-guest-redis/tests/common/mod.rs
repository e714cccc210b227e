//! The Redis backend of the conformance suite, on real Redis test servers.
#![allow(dead_code, unreachable_pub)]

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use trove_guest_core::strategy::Capabilities;
use trove_guest_core::testkit::conformance::{ConformanceBackend, Fingerprint, TableFingerprint};
use trove_guest_core::{DetachedReplica, ReplicationStrategy, Result, SnapshotStore};
use trove_guest_redis::USER_PREFIX;
use trove_guest_redis::testkit::{RedisOptions, RedisServer};
use trove_guest_redis::{RedisStrategy, RedisStrategyOptions};

/// Key prefixes playing the part of tables.
pub const TABLES: [&str; 2] = ["accounts", "events"];

pub struct Redis;

/// A strategy on `server` (kept concrete for Redis-only checks).
pub fn strategy(server: &RedisServer, store: Arc<dyn SnapshotStore>) -> Arc<RedisStrategy> {
    Arc::new(RedisStrategy::new(
        server.handle(),
        store,
        RedisStrategyOptions::new(),
    ))
}

pub async fn start(id: u32) -> Result<RedisServer> {
    RedisServer::start(RedisOptions::new().with_server_id(id)).await
}

/// One `MSET` (atomic) of both "tables" for `ids`, values derived from the id.
pub async fn insert_rows(s: &RedisServer, ids: Range<u64>) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let mut words = vec!["MSET".to_owned()];
    for id in ids {
        words.extend([format!("accounts:{id}"), format!("owner-{id}:{}", id * 7)]);
        words.extend([format!("events:{id}"), format!("k{}:{}", id % 5, id * 3)]);
    }
    let args: Vec<&str> = words.iter().map(String::as_str).collect();
    s.command(&args).await.map(drop)
}

/// Every key of a prefix, sorted.
pub async fn keys(s: &RedisServer, prefix: &str) -> Result<Vec<String>> {
    let pattern = format!("{prefix}:*");
    let mut cursor = "0".to_owned();
    let mut out = Vec::new();
    loop {
        let r = s
            .command(&["SCAN", &cursor, "MATCH", &pattern, "COUNT", "1000"])
            .await?;
        cursor = r[0].clone();
        out.extend(r[1..].iter().cloned());
        if cursor == "0" {
            break;
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

pub async fn fingerprint(s: &RedisServer) -> Result<Fingerprint> {
    let mut fp = Fingerprint::default();
    for t in TABLES {
        let keys = keys(s, t).await?;
        let mut h = Sha256::new();
        for chunk in keys.chunks(500) {
            let mut args = vec!["MGET"];
            args.extend(chunk.iter().map(String::as_str));
            let vals = s.command(&args).await?;
            for (k, v) in chunk.iter().zip(vals) {
                h.update(format!("{k}={v}\n"));
            }
        }
        fp.0.insert(
            t.to_owned(),
            TableFingerprint {
                rows: keys.len() as u64,
                checksum: hex::encode(h.finalize()),
            },
        );
    }
    Ok(fp)
}

pub async fn users(s: &RedisServer) -> Result<Vec<String>> {
    s.command(&["ACL", "USERS"]).await
}

pub async fn leftovers(s: &RedisServer) -> Result<Vec<String>> {
    let mut out: Vec<String> = users(s)
        .await?
        .into_iter()
        .filter(|u| u.starts_with(USER_PREFIX))
        .map(|u| format!("user {u}"))
        .collect();
    for e in std::fs::read_dir(s.handle().config_dir).unwrap().flatten() {
        out.push(format!("override file {}", e.file_name().to_string_lossy()));
    }
    let info = s.command(&["INFO", "replication"]).await?.join("");
    if info.contains("role:slave") {
        out.push("role slave".into());
    }
    let fence = s
        .command(&["CONFIG", "GET", "min-replicas-to-write"])
        .await?;
    if fence.get(1).is_some_and(|v| v != "0") {
        out.push(format!("min-replicas-to-write {}", fence[1]));
    }
    Ok(out)
}

#[async_trait]
impl ConformanceBackend for Redis {
    type Server = RedisServer;

    fn capabilities(&self) -> Capabilities {
        Capabilities::none()
            .with_gtid_positioning(true)
            .with_staging(true)
    }

    async fn start_server(&self, server_id: u32) -> Result<RedisServer> {
        start(server_id).await
    }

    fn strategy(
        &self,
        s: &RedisServer,
        store: Arc<dyn SnapshotStore>,
    ) -> Arc<dyn ReplicationStrategy> {
        strategy(s, store)
    }

    async fn create_schema(&self, _s: &RedisServer) -> Result<()> {
        Ok(())
    }

    async fn insert_rows(&self, s: &RedisServer, ids: Range<u64>) -> Result<()> {
        insert_rows(s, ids).await
    }

    async fn fingerprint(&self, s: &RedisServer) -> Result<Fingerprint> {
        fingerprint(s).await
    }

    async fn replica_traces(
        &self,
        master: &RedisServer,
        r: &DetachedReplica,
    ) -> Result<Vec<String>> {
        let users = users(master).await?;
        Ok(r.replication_user
            .iter()
            .filter(|u| users.contains(u))
            .map(|u| format!("user {u}"))
            .collect())
    }

    async fn replication_leftovers(&self, s: &RedisServer) -> Result<Vec<String>> {
        leftovers(s).await
    }
}
