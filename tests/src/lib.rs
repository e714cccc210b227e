//! Cross-crate integration tests for trove-guest against real servers; the tests live in
//! `tests/`. This library holds what they share.

pub mod trove;

use std::sync::Arc;

use trove_guest_agent::testing::testbed::{Node, TestServer};
use trove_guest_core::{
    CredentialBroker, CredentialOptions, DatastoreKind, LocalSnapshotStore, SecretStore,
    SnapshotStore,
};
use trove_guest_examples::control;

/// A snapshot store in a fresh temp directory (removed on drop).
pub struct TempStore {
    /// The directory (kept alive by this value).
    pub dir: tempfile::TempDir,
    /// The store.
    pub store: Arc<dyn SnapshotStore>,
}

/// Makes a [`TempStore`].
///
/// # Panics
///
/// When the directory cannot be made.
pub fn temp_store() -> TempStore {
    let dir = tempfile::Builder::new()
        .prefix("tg-it-store-")
        .tempdir()
        .expect("temp dir for the snapshot store");
    let store = Arc::new(LocalSnapshotStore::new(dir.path()).expect("local snapshot store"));
    TempStore { dir, store }
}

/// Starts a server of `kind` and serves it with a guest agent.
///
/// # Panics
///
/// With the testkit's message (naming the Debian package of a missing program) when the server
/// does not start.
pub async fn node(kind: DatastoreKind, server_id: u32, store: &TempStore, name: &str) -> Node {
    let server = TestServer::start(kind, server_id)
        .await
        .unwrap_or_else(|e| panic!("start a {kind} server: {e}"));
    Node::serve(
        server,
        store.store.clone(),
        name,
        &control::new_instance_id(),
    )
    .await
    .expect("serve the server with a guest agent")
}

/// Starts a server of `kind` and serves it with a guest agent that passes replication
/// passwords by reference through `secrets` (a [`CredentialBroker`] with secret names starting
/// `replication-<name>-`).
///
/// # Panics
///
/// As [`node`].
pub async fn node_with_secrets(
    kind: DatastoreKind,
    server_id: u32,
    store: &TempStore,
    secrets: Arc<dyn SecretStore>,
    name: &str,
) -> Node {
    let server = TestServer::start(kind, server_id)
        .await
        .unwrap_or_else(|e| panic!("start a {kind} server: {e}"));
    let inner = server
        .strategy(store.store.clone())
        .expect("the backend's strategy");
    let broker = CredentialBroker::new(
        inner,
        Some(secrets),
        CredentialOptions::new().with_reference_prefix(format!("replication-{name}-")),
    )
    .expect("a credential broker");
    Node::serve_strategy(
        server,
        Arc::new(broker),
        store.store.clone(),
        name,
        &control::new_instance_id(),
    )
    .await
    .expect("serve the server with a guest agent")
}
