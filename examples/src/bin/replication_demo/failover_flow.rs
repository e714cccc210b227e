//! `--switchover` and `--failover`: a master and two replicas behind guest agents; core's
//! switchover / failover run over the agents' HTTP API (`trove_guest_agent::remote`), with
//! the topology document after each step.

use std::sync::Arc;
use std::time::{Duration, Instant};

use trove_guest_agent::api::{AttachQuery, SnapshotCall};
use trove_guest_agent::remote::{AgentMember, RemoteStrategy, failover_agents, switchover_agents};
use trove_guest_agent::testing::sample::SampleDb;
use trove_guest_agent::testing::testbed::{Node, TestServer};
use trove_guest_core::failover::{FailoverOptions, RepointOptions, SwitchoverOptions};
use trove_guest_core::{DatastoreKind, LocalSnapshotStore, SnapshotStore};
use trove_guest_examples::control::{self, Member};
use trove_guest_mysql::testkit::{MariaDbOptions, MariaDbServer};

use crate::flow::{Ctx, DemoResult};
use crate::ui;
use crate::{Args, Env};

const WAIT: Duration = Duration::from_secs(60);

/// A server any member can be promoted from: MariaDB binary-logs what it applies.
async fn start_server(kind: DatastoreKind, id: u32) -> trove_guest_core::Result<TestServer> {
    match kind {
        DatastoreKind::Mariadb => Ok(TestServer::Mariadb(
            MariaDbServer::start(
                MariaDbOptions::new(id)
                    .with_log_bin(true)
                    .with_setting("log_slave_updates", "ON"),
            )
            .await?,
        )),
        other => TestServer::start(other, id).await,
    }
}

fn members(env: &Env, kind: DatastoreKind) -> Vec<AgentMember> {
    env.nodes
        .iter()
        .map(|n| {
            AgentMember::new(
                n.instance_id.clone(),
                RemoteStrategy::new(n.client.clone(), kind),
            )
        })
        .collect()
}

/// The topology document as the servers report it: each replica's source, by address.
async fn topology(env: &Env, kind: DatastoreKind) -> DemoResult<String> {
    topology_without(env, kind, usize::MAX).await
}

fn kill_server(server: &TestServer) -> DemoResult<()> {
    let pid_file = match server {
        TestServer::Mariadb(s) => s.dir().join("mariadbd.pid"),
        TestServer::Postgres(s) => s.data_dir().join("postmaster.pid"),
        TestServer::Redis(_) => {
            return Err("switchover and failover are for MariaDB and PostgreSQL".into());
        }
    };
    let text = std::fs::read_to_string(&pid_file).ctx("read the master's pid file")?;
    let pid: i32 = text
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .ok_or_else(|| format!("no pid in {}", pid_file.display()))?;
    nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL)
        .ctx("SIGKILL the master's server")
}

async fn count(node: &Node, kind: DatastoreKind) -> DemoResult<u64> {
    let db = SampleDb::connect(kind, &node.server().handle().admin)
        .await
        .ctx(&format!("connect to {}", node.name))?;
    let n = db
        .count(trove_guest_agent::testing::sample::TABLES[0])
        .await
        .ctx("count rows")?;
    db.close().await;
    Ok(n)
}

/// Runs the switchover (`failover` false) or failover flow.
pub(crate) async fn run(args: &Args, env: &mut Env, failover: bool) -> DemoResult<String> {
    let kind = args.datastore;
    let total = Instant::now();
    println!(
        "trove-guest {} demo: {kind}, one master and two replicas",
        if failover { "failover" } else { "switchover" }
    );
    ui::heading(1, "Servers and guest agents");
    let store_dir = tempfile::Builder::new()
        .prefix("tg-demo-store-")
        .tempdir()
        .ctx("create the snapshot store directory")?;
    let store: Arc<dyn SnapshotStore> =
        Arc::new(LocalSnapshotStore::new(store_dir.path()).ctx("open the snapshot store")?);
    println!("   snapshot store  file://{}", store_dir.path().display());
    env.store_dir = Some(store_dir);
    for i in 0..3u32 {
        let server = start_server(kind, i + 1)
            .await
            .ctx(&format!("start the {kind} server"))?;
        env.dirs.push(server.dir());
        let name = if i == 0 {
            "db-1".to_owned()
        } else {
            format!("db-{}", i + 1)
        };
        let node = Node::serve(server, store.clone(), &name, &control::new_instance_id())
            .await
            .ctx("start the guest agent")?;
        println!(
            "   {name}  id {}  {kind} on 127.0.0.1:{}  agent {}  dir {}",
            node.instance_id,
            node.server().port(),
            node.url(),
            node.dir().display()
        );
        env.nodes.push(node);
    }

    ui::heading(2, "Sample data, then two replicas from snapshots");
    let db = SampleDb::connect(kind, &env.nodes[0].server().handle().admin)
        .await
        .ctx("connect to the master")?;
    db.create_schema().await.ctx("create the sample schema")?;
    db.insert_rows(0..args.rows.min(20_000))
        .await
        .ctx("load sample rows")?;
    db.close().await;
    env.nodes[0]
        .client
        .enable_master()
        .await
        .ctx("enable master")?;
    for i in 1..3 {
        let doc = env.nodes[0]
            .client
            .snapshot(
                &SnapshotCall {
                    replica_id: Some(env.nodes[i].instance_id.clone()),
                    ..SnapshotCall::default()
                },
                &mut |_| {},
            )
            .await
            .ctx("snapshot")?;
        env.nodes[i]
            .client
            .attach(&doc, &AttachQuery::default(), &mut |_| {})
            .await
            .ctx("attach")?;
        println!(
            "   {} replicates from {}",
            env.nodes[i].name, env.nodes[0].name
        );
    }
    ui::indent(&topology(env, kind).await?);

    let m = members(env, kind);
    let repoint = RepointOptions::new().with_timeout(WAIT);
    if failover {
        ui::heading(3, "SIGKILL the master's server, then fail over");
        kill_server(env.nodes[0].server())?;
        let report = failover_agents(&m[1..], &FailoverOptions::new())
            .await
            .ctx("failover")?;
        println!(
            "   new master {}; writable {} ms after the call; lost: {:?}; excluded: {:?}",
            report.new_master,
            report.time_to_writable.as_millis(),
            report.lost,
            report.excluded
        );
        ui::indent(&topology_without(env, kind, 0).await?);
        let winner = env
            .nodes
            .iter()
            .position(|n| n.instance_id == report.new_master)
            .ok_or("the winner is a node")?;
        let db = SampleDb::connect(kind, &env.nodes[winner].server().handle().admin)
            .await
            .ctx("connect to the new master")?;
        db.insert_rows(1_000_000..1_000_500)
            .await
            .ctx("write on the new master")?;
        db.close().await;
        ui::heading(4, "The survivor converges");
        let target = env.nodes[winner]
            .client
            .latest_txn()
            .await
            .ctx("position")?;
        for (i, n) in env.nodes.iter().enumerate().skip(1) {
            if i != winner {
                n.client.wait_for_txn(&target, WAIT).await.ctx("catch up")?;
            }
            println!("   {}: {} rows", n.name, count(n, kind).await?);
        }
    } else {
        ui::heading(3, "Switchover: db-2 becomes the master");
        let r = switchover_agents(
            &m[0],
            &m[1],
            &m[2..],
            &SwitchoverOptions::new().with_repoint(repoint.clone()),
        )
        .await
        .ctx("switchover")?;
        println!(
            "   writes refused for {} ms; re-pointed {:?}",
            r.write_unavailable.as_millis(),
            r.repointed
        );
        ui::indent(&topology(env, kind).await?);
        ui::heading(4, "And back: db-1 is the master again");
        let others = [m[2].clone()];
        let r = switchover_agents(
            &m[1],
            &m[0],
            &others,
            &SwitchoverOptions::new().with_repoint(repoint),
        )
        .await
        .ctx("switch back")?;
        println!(
            "   writes refused for {} ms; re-pointed {:?}",
            r.write_unavailable.as_millis(),
            r.repointed
        );
        ui::indent(&topology(env, kind).await?);
    }
    Ok(format!(
        "{} demo finished in {}",
        if failover { "failover" } else { "switchover" },
        ui::secs(total.elapsed())
    ))
}

/// The topology document without the dead node `dead`: each replica's source, by address.
async fn topology_without(env: &Env, kind: DatastoreKind, dead: usize) -> DemoResult<String> {
    let mut out = Vec::new();
    for (i, n) in env.nodes.iter().enumerate() {
        if i == dead {
            continue;
        }
        let last = n.client.last_txn().await.ctx("last txn")?;
        let st = n.client.status().await.ctx("status")?;
        let slave_of = last.source.and_then(|src| {
            env.nodes
                .iter()
                .find(|m| m.server().port() == src.port)
                .map(|m| m.instance_id.clone())
        });
        out.push(Member {
            id: n.instance_id.clone(),
            name: n.name.clone(),
            slave_of: slave_of.filter(|_| st.role == Some(trove_guest_core::Role::Replica)),
            read_only: st.read_only.unwrap_or(false),
        });
    }
    Ok(control::pretty(
        &control::topology(kind, &out).map_err(|e| e.to_string())?,
    ))
}
