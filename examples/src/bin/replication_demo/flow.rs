//! The design's flow, step by step, through the guest agents' HTTP API.

use std::fmt::Display;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::MultiProgress;
use trove_guest_agent::api::{AttachQuery, SnapshotCall, StageCall};
use trove_guest_agent::testing::sample::{SampleDb, TABLES};
use trove_guest_agent::testing::testbed::{Node, TestServer};
use trove_guest_core::wire::{DetachReplication, InstanceAction};
use trove_guest_core::{DatastoreKind, LocalSnapshotStore, SnapshotStore};
use trove_guest_examples::control::{self, Member};

use crate::ui::{self, CallBar};
use crate::{Args, Env};

pub(crate) type DemoResult<T> = Result<T, String>;

pub(crate) trait Ctx<T> {
    fn ctx(self, what: &str) -> DemoResult<T>;
}

impl<T, E: Display> Ctx<T> for Result<T, E> {
    fn ctx(self, what: &str) -> DemoResult<T> {
        self.map_err(|e| format!("{what}: {e}"))
    }
}

const CATCH_UP: Duration = Duration::from_secs(60);

fn now_utc() -> String {
    trove_guest_agent::clock::utc_now_rfc3339()
}

fn version_label(kind: DatastoreKind, full: &str) -> String {
    let parts: Vec<&str> = full
        .split(|c: char| !c.is_ascii_digit())
        .filter(|p| !p.is_empty())
        .collect();
    match kind {
        DatastoreKind::Postgresql => parts.first().map_or("15".into(), |m| (*m).to_owned()),
        _ => match parts.as_slice() {
            [a, b, ..] => format!("{a}.{b}"),
            _ => full.to_owned(),
        },
    }
}

struct Timings {
    start: Duration,
    load: Duration,
    snapshot: Duration,
    attach: Duration,
    detach: Duration,
    demote: Duration,
}

/// Runs the whole flow; returns the summary to print last.
pub(crate) async fn run(args: &Args, env: &mut Env) -> DemoResult<String> {
    let kind = args.datastore;
    let n = args.replicas as usize;
    let total = Instant::now();
    println!(
        "trove-guest replication demo: {kind}, one master and {n} replica{}, {} sample rows per table",
        if n == 1 { "" } else { "s" },
        args.rows
    );

    // 1. Servers and agents.
    ui::heading(
        1,
        if args.container {
            "Servers in containers (Docker API) and guest agents (loopback only)"
        } else {
            "Servers and guest agents (local processes, loopback only)"
        },
    );
    let t = Instant::now();
    let store_dir = tempfile::Builder::new()
        .prefix("tg-demo-store-")
        .tempdir()
        .ctx("create the snapshot store directory")?;
    let store: Arc<dyn SnapshotStore> =
        Arc::new(LocalSnapshotStore::new(store_dir.path()).ctx("open the snapshot store")?);
    println!("   snapshot store  file://{}", store_dir.path().display());
    env.store_dir = Some(store_dir);
    for i in 0..=n {
        env.starting.push(tokio::spawn(TestServer::start_placed(
            kind,
            i as u32 + 1,
            args.container,
        )));
    }
    let mut index = 0;
    while !env.starting.is_empty() {
        let joined = (&mut env.starting[0]).await;
        env.starting.remove(0);
        let server = joined
            .ctx("server start task")?
            .ctx(&format!("start the {kind} server"))?;
        env.dirs.push(server.dir());
        let (name, role) = if index == 0 {
            ("products-m".to_owned(), "master".to_owned())
        } else {
            (format!("products-s{index}"), format!("replica {index}"))
        };
        let node = Node::serve(server, store.clone(), &name, &control::new_instance_id())
            .await
            .ctx("start the guest agent")?;
        println!(
            "   {role:<10} {name:<12} id {}  {kind} on 127.0.0.1:{:<5}  agent {}  dir {}",
            node.instance_id,
            node.server().port(),
            node.url(),
            node.dir().display()
        );
        env.nodes.push(node);
        index += 1;
    }
    let start_time = t.elapsed();
    let (master, replicas) = env.nodes.split_first().expect("master started");

    // 2. Sample data.
    ui::heading(2, "Sample data on the master");
    let t = Instant::now();
    let mdb = SampleDb::connect(kind, &master.server().handle().admin)
        .await
        .ctx("connect to the master")?;
    mdb.create_schema().await.ctx("create the sample schema")?;
    let bar = ui::rows_bar(args.rows);
    mdb.load(args.rows, |done| bar.set_position(done))
        .await
        .ctx("load sample rows")?;
    bar.finish_and_clear();
    let data_size = mdb.size_bytes().await.ctx("size of the sample data")?;
    let version = mdb.server_version().await.ctx("server version")?;
    println!(
        "   {} rows in each of {} ({}), {} on disk; server {version}",
        args.rows,
        TABLES.join(", "),
        trove_guest_agent::testing::sample::SCHEMA,
        ui::bytes(data_size)
    );
    let load_time = t.elapsed();

    // 3. Create request(s) with slaveOf.
    ui::heading(
        3,
        "Create the replica: POST /instances with slaveOf (the design's request)",
    );
    let label = version_label(kind, &version);
    for (i, r) in replicas.iter().enumerate() {
        let req = control::replica_create_request(&r.name, kind, &label, &master.instance_id, 1);
        let resp = control::create_response(&req, &r.instance_id, &now_utc());
        if i == 0 {
            println!("   request:");
            ui::indent(&control::pretty(&req));
            println!("   response (the control plane now builds the replica):");
            ui::indent(&control::pretty(&resp));
        } else {
            println!("   ... and {} (slaveOf {})", r.name, master.instance_id);
        }
    }

    // 4. Snapshot on the master while the replicas stage it.
    ui::heading(
        4,
        "get_replication_snapshot on the master, while the replica(s) stage it as it streams",
    );
    master
        .client
        .enable_master()
        .await
        .ctx("enable the master (binary logging / WAL senders)")?;
    let t = Instant::now();
    let multi = MultiProgress::new();
    let snapshot_name = format!("{}-for-{}", master.name, replicas[0].name);
    let bar = CallBar::new(&multi, &format!("{} snapshot", master.name));
    let call = SnapshotCall {
        replica_id: Some(replicas[0].instance_id.clone()),
        replica_host: Some("127.0.0.1".into()),
        snapshot_name: Some(snapshot_name.clone()),
        parallel: None,
    };
    let snapshot = async {
        let out = master.client.snapshot(&call, &mut |e| bar.event(&e)).await;
        match &out {
            Ok(d) => {
                let b = d.dataset.size_bytes.unwrap_or(0);
                bar.finish(&format!(
                    "{} in {} ({})",
                    ui::bytes(b),
                    ui::secs(t.elapsed()),
                    ui::rate(b, t.elapsed())
                ));
            }
            Err(_) => bar.fail(),
        }
        out.map_err(|e| format!("snapshot on the master: {e}"))
    };
    let stages = replicas.iter().map(|r| {
        let bar = CallBar::new(&multi, &format!("{} stage", r.name));
        let call = StageCall {
            snapshot_name: Some(snapshot_name.clone()),
            ..StageCall::default()
        };
        async move {
            let out = r.client.stage(&call, &mut |e| bar.event(&e)).await;
            match &out {
                Ok(s) => bar.finish(&format!(
                    "restored {} while it streamed, in {}",
                    ui::bytes(s.size),
                    ui::secs(t.elapsed())
                )),
                Err(_) => bar.fail(),
            }
            out.map_err(|e| format!("stage on {}: {e}", r.name))
        }
    });
    let (doc, staged) = tokio::join!(snapshot, futures::future::join_all(stages));
    let doc = doc?;
    for s in staged {
        s?;
    }
    let snapshot_time = t.elapsed();
    let snap_bytes = doc.dataset.size_bytes.unwrap_or(0);
    println!(
        "   the snapshot document (replication password redacted here; it travels to the replica):"
    );
    ui::indent(&control::pretty(&control::redacted(&doc)));
    if n > 1 {
        println!("   one snapshot (and its replication account) serves all {n} replicas");
    }

    // 5. Attach.
    ui::heading(
        5,
        "attach_replication_slave on the replica(s): the staged copy is the document's snapshot",
    );
    let t = Instant::now();
    let multi = MultiProgress::new();
    let attaches = replicas.iter().map(|r| {
        let bar = CallBar::new(&multi, &format!("{} attach", r.name));
        let doc = &doc;
        async move {
            let started = Instant::now();
            let out = r
                .client
                .attach(doc, &AttachQuery::default(), &mut |e| bar.event(&e))
                .await;
            match &out {
                Ok(o) => bar.finish(&format!(
                    "{} in place, replicating, in {}",
                    ui::bytes(o.restored_bytes),
                    ui::secs(started.elapsed()),
                )),
                Err(_) => bar.fail(),
            }
            out.map_err(|e| format!("attach {}: {e}", r.name))
        }
    });
    let outcomes = futures::future::join_all(attaches).await;
    let mut restored = 0;
    for o in outcomes {
        restored += o?.restored_bytes;
    }
    let attach_time = t.elapsed();

    // 6. Topology.
    ui::heading(6, "The topology document");
    let mut members = vec![Member {
        id: master.instance_id.clone(),
        name: master.name.clone(),
        slave_of: None,
        read_only: false,
    }];
    for r in replicas {
        let st = r
            .client
            .status()
            .await
            .ctx(&format!("status of {}", r.name))?;
        members.push(Member {
            id: r.instance_id.clone(),
            name: r.name.clone(),
            slave_of: Some(master.instance_id.clone()),
            read_only: st.read_only.unwrap_or(true),
        });
    }
    let topology = control::topology(kind, &members).ctx("the topology document")?;
    ui::indent(&control::pretty(&topology));

    // 7. Live writes.
    ui::heading(7, "Writes on the master arrive on the replica(s)");
    let mut rdbs = Vec::new();
    for r in replicas {
        rdbs.push(
            SampleDb::connect(kind, &r.server().handle().admin)
                .await
                .ctx(&format!("connect to {}", r.name))?,
        );
    }
    let mut next = args.rows;
    let batch = (args.writes / 3).max(1);
    for round in 1..=3 {
        mdb.insert_rows(next..next + batch)
            .await
            .ctx("write on the master")?;
        next += batch;
        let txn = master
            .client
            .latest_txn()
            .await
            .ctx("latest txn on the master")?;
        for (r, db) in replicas.iter().zip(&rdbs) {
            let waited = Instant::now();
            r.client
                .wait_for_txn(&txn, CATCH_UP)
                .await
                .ctx(&format!("{} waits for {txn}", r.name))?;
            let rows = db.count("products").await.ctx("count on the replica")?;
            println!(
                "   write {round}: master +{batch} rows (at {txn})  ->  {} has {rows} products rows, caught up in {} ms",
                r.name,
                waited.elapsed().as_millis()
            );
        }
    }

    // 8. Consistency check.
    ui::heading(8, "Consistency check: row counts and checksums");
    let mf = mdb.fingerprint().await.ctx("master checksums")?;
    for (r, db) in replicas.iter().zip(&rdbs) {
        let rf = db.fingerprint().await.ctx("replica checksums")?;
        for (table, m) in &mf.0 {
            let rt = rf.0.get(table);
            println!(
                "   {table:<9} master {:>7} rows {:<24} {:<12} {:>7} rows {:<24} {}",
                m.rows,
                m.checksum,
                r.name,
                rt.map_or(0, |t| t.rows),
                rt.map_or("-", |t| t.checksum.as_str()),
                if rt == Some(m) { "equal" } else { "DIFFERENT" }
            );
        }
        if rf != mf {
            return Err(format!("{} differs from the master", r.name));
        }
    }
    println!("   all replicas hold exactly the master's data");

    // 9. detach_replication.
    ui::heading(
        9,
        "detach_replication: detach on the replica, cleanup on the master",
    );
    let t = Instant::now();
    let action = InstanceAction::DetachReplication(DetachReplication::default());
    for (r, db) in replicas.iter().zip(&rdbs) {
        println!(
            "   POST /instances/{}/action {}",
            r.instance_id,
            serde_json::to_string(&action).expect("action serializes")
        );
        let detached = r
            .client
            .detach_replication_action(&r.instance_id)
            .await
            .ctx(&format!("detach {}", r.name))?;
        println!("   {} detached; it hands the master:", r.name);
        ui::indent(&control::pretty(&detached));
        master
            .client
            .cleanup(&detached)
            .await
            .ctx("cleanup_source_on_replica_detach on the master")?;
        println!(
            "   cleanup_source_on_replica_detach on {}: done",
            master.name
        );
        let st = r.client.status().await.ctx("status after detach")?;
        println!(
            "   {} is now {}, read_only {}",
            r.name,
            st.role.map_or("unknown".into(), |r| r.to_string()),
            st.read_only.map_or("unknown".into(), |b| b.to_string())
        );
        let before = db.count("products").await.ctx("count on the replica")?;
        mdb.insert_rows(next..next + 10)
            .await
            .ctx("write on the master")?;
        next += 10;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let after = db.count("products").await.ctx("count on the replica")?;
        println!(
            "   master +10 rows after the detach -> {} still has {after} rows (was {before}): no longer replicating",
            r.name
        );
    }
    let detach_time = t.elapsed();

    // 10. Demote.
    ui::heading(10, "demote_replication_master on the master");
    let t = Instant::now();
    master.client.demote().await.ctx("demote the master")?;
    let demote_time = t.elapsed();
    let st = master.client.status().await.ctx("status after demote")?;
    let removed = match kind {
        DatastoreKind::Postgresql => "replication slots, logins, pg_hba entries and WAL settings",
        k if k.as_str() == "redis" => "replication ACL users and the write fence",
        _ => "binary logging, replication accounts and override files",
    };
    println!(
        "   {} is back to {} ({removed} removed) in {}",
        master.name,
        st.role.map_or("unknown".into(), |r| r.to_string()),
        ui::secs(demote_time)
    );
    let final_rows = mdb.count("products").await.ctx("count on the master")?;
    println!("   {final_rows} products rows on the master, none lost");
    mdb.close().await;
    for db in rdbs {
        db.close().await;
    }

    let times = Timings {
        start: start_time,
        load: load_time,
        snapshot: snapshot_time,
        attach: attach_time,
        detach: detach_time,
        demote: demote_time,
    };
    Ok(summary(
        args,
        data_size,
        snap_bytes,
        restored,
        &times,
        total.elapsed(),
    ))
}

fn summary(
    args: &Args,
    data: u64,
    snap: u64,
    restored: u64,
    t: &Timings,
    total: Duration,
) -> String {
    format!(
        "summary ({kind}, {n} replica{s}):\n\
         \x20 data      {rows} rows per table, {data} on disk\n\
         \x20 snapshot  {snap} in {st} ({sr}), staged on the replica(s) as it streamed\n\
         \x20 attach    {restored} swapped in and replicating in {at} for {n} replica{s}, all converged\n\
         \x20 times     servers {start}, load {load}, detach+cleanup {dt}, demote {dm}, total {total}",
        kind = args.datastore,
        n = args.replicas,
        s = if args.replicas == 1 { "" } else { "s" },
        rows = args.rows,
        data = ui::bytes(data),
        snap = ui::bytes(snap),
        st = ui::secs(t.snapshot),
        sr = ui::rate(snap, t.snapshot),
        restored = ui::bytes(restored),
        at = ui::secs(t.attach),
        start = ui::secs(t.start),
        load = ui::secs(t.load),
        dt = ui::secs(t.detach),
        dm = ui::secs(t.demote),
        total = ui::secs(total),
    )
}
