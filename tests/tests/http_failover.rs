//! Switchover over three guest agents (PostgreSQL): core's orchestration run through the
//! agents' HTTP API only ([`trove_guest_agent::remote`]), data checked on the servers.

use std::time::Duration;

use trove_guest_agent::api::{AttachQuery, SnapshotCall};
use trove_guest_agent::remote::{AgentMember, RemoteStrategy, switchover_agents};
use trove_guest_agent::testing::sample::SampleDb;
use trove_guest_core::failover::{RepointOptions, SwitchoverOptions};
use trove_guest_core::{DatastoreKind, Role};
use trove_guest_tests::{node, temp_store};

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchover_over_agents_promotes_the_candidate_and_every_server_follows_it() {
    let kind = DatastoreKind::Postgresql;
    let store = temp_store();
    let nodes = [
        node(kind, 1, &store, "db-m1").await,
        node(kind, 2, &store, "db-r2").await,
        node(kind, 3, &store, "db-r3").await,
    ];
    let db = SampleDb::connect(kind, &nodes[0].server().handle().admin)
        .await
        .unwrap();
    db.create_schema().await.unwrap();
    db.insert_rows(0..500).await.unwrap();
    nodes[0].client.enable_master().await.unwrap();
    for n in &nodes[1..] {
        let doc = nodes[0]
            .client
            .snapshot(
                &SnapshotCall {
                    replica_id: Some(n.instance_id.clone()),
                    ..SnapshotCall::default()
                },
                &mut |_| {},
            )
            .await
            .unwrap();
        n.client
            .attach(&doc, &AttachQuery::default(), &mut |_| {})
            .await
            .unwrap();
    }
    let members: Vec<AgentMember> = nodes
        .iter()
        .map(|n| {
            AgentMember::new(
                n.instance_id.clone(),
                RemoteStrategy::new(n.client.clone(), kind),
            )
        })
        .collect();

    let report = switchover_agents(
        &members[0],
        &members[1],
        &members[2..],
        &SwitchoverOptions::new().with_repoint(RepointOptions::new().with_timeout(WAIT)),
    )
    .await
    .expect("switchover over HTTP");
    assert!(
        report.not_repointed.is_empty(),
        "{:?}",
        report.not_repointed
    );
    assert_eq!(report.new_master, nodes[1].instance_id);

    let new = SampleDb::connect(kind, &nodes[1].server().handle().admin)
        .await
        .unwrap();
    new.insert_rows(500..600)
        .await
        .expect("the new master takes writes");
    let target = nodes[1].client.latest_txn().await.unwrap();
    for i in [0, 2] {
        let st = nodes[i].client.status().await.unwrap();
        assert_eq!(st.role, Some(Role::Replica), "{}", nodes[i].name);
        nodes[i].client.wait_for_txn(&target, WAIT).await.unwrap();
        let last = nodes[i].client.last_txn().await.unwrap();
        assert_eq!(last.source.unwrap(), nodes[1].server().handle().advertise);
        let fp = SampleDb::connect(kind, &nodes[i].server().handle().admin)
            .await
            .unwrap()
            .fingerprint()
            .await
            .unwrap();
        assert_eq!(fp, new.fingerprint().await.unwrap(), "{}", nodes[i].name);
    }
}
