//! The control-plane pieces the demo plays: instance ids, the instance-create request with
//! `slaveOf`, the `topology` document, and printing documents safely.

use rand::Rng;
use serde::Serialize;
use trove_guest_core::wire::{
    DatastoreRef, InstanceCreate, InstanceCreateRequest, InstanceCreateResponse, InstanceView,
    Link, MemberRef, MemberReplication, ResourceRef, Topology, TopologyDocument, TopologyMember,
    Volume,
};
use trove_guest_core::{DatastoreKind, Result, SnapshotDocument};

/// A random instance id in the UUID form the design's documents use.
pub fn new_instance_id() -> String {
    let b: [u8; 16] = rand::rng().random();
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-4{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The design's replica create request: `POST /instances` with `slaveOf` naming the master.
pub fn replica_create_request(
    name: &str,
    datastore: DatastoreKind,
    version: &str,
    master_id: &str,
    volume_gib: u64,
) -> InstanceCreateRequest {
    InstanceCreateRequest {
        instance: InstanceCreate {
            name: name.to_owned(),
            datastore: DatastoreRef {
                kind: datastore.as_str().to_owned(),
                version: version.to_owned(),
            },
            slave_of: Some(master_id.to_owned()),
            configuration: None,
            flavor_ref: "7".to_owned(),
            volume: Some(Volume { size: volume_gib }),
        },
    }
}

/// The create response for `req`, as the API answers while the replica builds.
pub fn create_response(req: &InstanceCreateRequest, id: &str, now: &str) -> InstanceCreateResponse {
    let link = |path: String| Link {
        href: format!("http://127.0.0.1/v1.0/instances/{path}"),
        rel: "self".to_owned(),
    };
    InstanceCreateResponse {
        instance: InstanceView {
            status: "BUILD".to_owned(),
            id: id.to_owned(),
            name: req.instance.name.clone(),
            created: now.to_owned(),
            updated: now.to_owned(),
            links: vec![link(id.to_owned())],
            datastore: req.instance.datastore.clone(),
            slave_of: req.instance.slave_of.as_ref().map(|m| ResourceRef {
                id: m.clone(),
                links: vec![link(m.clone())],
            }),
            configuration: None,
            flavor: ResourceRef {
                id: req.instance.flavor_ref.clone(),
                links: vec![],
            },
            volume: req.instance.volume,
        },
    }
}

/// A member of a replication set as the control plane knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Instance id.
    pub id: String,
    /// Instance name.
    pub name: String,
    /// The master's id, for a replica.
    pub slave_of: Option<String>,
    /// Whether it refuses client writes.
    pub read_only: bool,
}

/// The design's `topology` document: the master without a datastore section, each replica with
/// one named after the datastore.
///
/// # Errors
///
/// [`Error::InvalidInput`](trove_guest_core::Error::InvalidInput) for a datastore whose name the
/// document cannot hold as a section (see [`TopologyMember::set_replication`]).
pub fn topology(datastore: DatastoreKind, members: &[Member]) -> Result<TopologyDocument> {
    let members = members
        .iter()
        .map(|m| {
            let section = m.slave_of.as_ref().map(|master| {
                MemberReplication::new(vec![MemberRef { id: master.clone() }], m.read_only)
            });
            let mut t = TopologyMember::new(m.id.clone(), m.name.clone());
            t.set_replication(&datastore, section)?;
            Ok(t)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(TopologyDocument::new(Topology::new(members)))
}

/// The snapshot document as JSON with the replication password replaced by `"[REDACTED]"`, for
/// printing and logging.
pub fn redacted(doc: &SnapshotDocument) -> serde_json::Value {
    let mut v = serde_json::to_value(doc).expect("snapshot documents serialize");
    if let Some(pw) = v.pointer_mut("/replication/password") {
        *pw = serde_json::Value::String("[REDACTED]".to_owned());
    }
    v
}

/// Pretty JSON of any document.
pub fn pretty<T: Serialize>(v: &T) -> String {
    serde_json::to_string_pretty(v).expect("documents serialize")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_request_carries_slave_of_as_the_design_spells_it() {
        let r = replica_create_request("products-s1", DatastoreKind::Mariadb, "10.11", "m-1", 1);
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["instance"]["slaveOf"], "m-1");
        assert_eq!(v["instance"]["flavorRef"], "7");
        let resp = create_response(&r, "r-1", "2026-01-01T00:00:00Z");
        let v = serde_json::to_value(&resp).unwrap();
        assert_eq!(v["instance"]["slaveOf"]["id"], "m-1");
        assert_eq!(v["instance"]["status"], "BUILD");
    }

    #[test]
    fn topology_names_the_replica_section_after_the_datastore() {
        let t = topology(
            DatastoreKind::Mysql,
            &[
                Member {
                    id: "m".into(),
                    name: "master".into(),
                    slave_of: None,
                    read_only: false,
                },
                Member {
                    id: "s".into(),
                    name: "slave2".into(),
                    slave_of: Some("m".into()),
                    read_only: true,
                },
            ],
        )
        .unwrap();
        let v = serde_json::to_value(&t).unwrap();
        assert_eq!(
            v["topology"]["members"][0],
            serde_json::json!({"id": "m", "name": "master"})
        );
        assert_eq!(
            v["topology"]["members"][1]["mysql"],
            serde_json::json!({"slave_of": [{"id": "m"}], "read_only": true})
        );
    }

    #[test]
    fn topology_of_a_datastore_core_does_not_know_names_its_section() {
        let redis: DatastoreKind = "redis".parse().unwrap();
        let t = topology(
            redis,
            &[Member {
                id: "s".into(),
                name: "replica".into(),
                slave_of: Some("m".into()),
                read_only: true,
            }],
        )
        .unwrap();
        let v = serde_json::to_value(&t).unwrap();
        assert_eq!(
            v["topology"]["members"][0],
            serde_json::json!({"id": "s", "name": "replica",
                               "redis": {"slave_of": [{"id": "m"}], "read_only": true}})
        );
    }

    #[test]
    fn instance_ids_look_like_uuids_and_differ() {
        let a = new_instance_id();
        assert_eq!(a.len(), 36);
        assert_eq!(a.matches('-').count(), 4);
        assert_ne!(a, new_instance_id());
    }
}
