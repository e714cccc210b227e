//! How the replication password reaches the replica: by reference through a [`SecretStore`]
//! (the default) or in clear inside the document (opt-in).
//!
//! [`CredentialBroker`] wraps any [`ReplicationStrategy`], so that every backend gets the same
//! behaviour without knowing about secret stores:
//!
//! * on the master, the password a backend put into the document's `replication.password` is
//!   moved into the secret store; the document leaves with `replication.password_ref` only;
//! * on the replica, a document carrying `password_ref` is resolved once, here, and the backend
//!   receives it with the password filled in;
//! * `cleanup_source_on_replica_detach` and `demote_replication_master` delete the secrets the
//!   master handed out; a snapshot whose secret cannot be stored is abandoned (its account is
//!   dropped again) rather than returned with a clear-text password.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::failover::{
    FenceOptions, LastTxn, ReplicaContext, ReplicaContextOptions, RepointOptions,
};
use crate::lifecycle::{RecoverOptions, RecoveryReport};
use crate::position::ReplicationPosition;
use crate::secret::TransportSecret;
use crate::secret_store::SecretStore;
use crate::strategy::{
    AttachOutcome, AttachRequest, Capabilities, DemoteOptions, DetachOptions, DetachedReplica,
    EnableMasterOptions, ReplicationStatus, ReplicationStrategy, SharedStrategy, SnapshotRequest,
    StageRequest, StagedSnapshot,
};
use crate::wire::{DatastoreKind, ReplicationGrant, SnapshotDocument};

/// How a master hands the replication password to the replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum CredentialTransport {
    /// The password goes into the secret store; the document carries `password_ref` only.
    #[default]
    ByReference,
    /// The password travels in clear in the document's `replication.password` (whoever sees the
    /// document, the control plane and its logs included, sees the password). Opt-in.
    ClearText,
}

/// Options of a [`CredentialBroker`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CredentialOptions {
    /// How passwords leave this master.
    pub transport: CredentialTransport,
    /// What the names of this master's secrets start with (the account name follows). Give each
    /// master sharing a store its own prefix (agents use their instance id): a demote deletes
    /// every secret with this prefix.
    pub reference_prefix: String,
}

impl Default for CredentialOptions {
    fn default() -> Self {
        CredentialOptions {
            transport: CredentialTransport::ByReference,
            reference_prefix: "replication-".into(),
        }
    }
}

impl CredentialOptions {
    /// By reference, prefix `replication-`.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets [`CredentialOptions::transport`].
    pub fn with_transport(mut self, transport: CredentialTransport) -> Self {
        self.transport = transport;
        self
    }
    /// Sets [`CredentialOptions::reference_prefix`].
    pub fn with_reference_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.reference_prefix = prefix.into();
        self
    }
}

/// A [`ReplicationStrategy`] that moves replication passwords through a [`SecretStore`] (see
/// the module documentation). Every other call is passed through unchanged.
pub struct CredentialBroker {
    inner: SharedStrategy,
    store: Option<Arc<dyn SecretStore>>,
    opts: CredentialOptions,
}

impl fmt::Debug for CredentialBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialBroker")
            .field("inner", &self.inner)
            .field("store", &self.store)
            .field("opts", &self.opts)
            .finish()
    }
}

impl CredentialBroker {
    /// Wraps `inner`. `store` resolves `password_ref` on attach and, by reference, receives the
    /// passwords this master makes.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for [`CredentialTransport::ByReference`] without a store, or a
    /// prefix that is not 1 to 64 ASCII letters, digits, `_`, `-`, `.` (not starting with `.`).
    pub fn new(
        inner: SharedStrategy,
        store: Option<Arc<dyn SecretStore>>,
        opts: CredentialOptions,
    ) -> Result<Self> {
        if opts.transport == CredentialTransport::ByReference && store.is_none() {
            return Err(Error::invalid(
                "credential transport",
                "by reference needs a secret store; configure one or opt in to clear text",
            ));
        }
        if opts.reference_prefix.len() > 64 {
            return Err(Error::invalid("secret reference prefix", "longer than 64"));
        }
        crate::secret_store::validate_reference(&opts.reference_prefix)?;
        Ok(CredentialBroker { inner, store, opts })
    }

    /// Moves the password of `grant` into the store (by reference); leaves it alone in clear
    /// text.
    async fn seal(&self, grant: &mut ReplicationGrant) -> Result<()> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        if self.opts.transport != CredentialTransport::ByReference {
            return Ok(());
        }
        let Some(password) = grant.password.take() else {
            return Ok(());
        };
        let name = format!("{}{}", self.opts.reference_prefix, grant.user);
        let reference = store.put(&name, &password.0).await?;
        grant.password_ref = Some(reference);
        Ok(())
    }

    /// Deletes the secret of `user`, if a store is configured. Failures are logged: the
    /// account is already gone, so the secret opens nothing.
    async fn forget(&self, user: &str) {
        if let Some(store) = &self.store {
            let name = format!("{}{user}", self.opts.reference_prefix);
            if let Err(e) = store.delete(&name).await {
                tracing::warn!(error = %e, "could not delete a replication secret");
            }
        }
    }
}

/// `grant` with `password_ref` resolved through `store` into `password`; `None` when the grant
/// already carries the password or no reference.
///
/// # Errors
///
/// [`Error::InvalidInput`] when the grant has a reference and no store is configured;
/// [`Error::NotFound`] for a reference the store does not hold; [`Error::Store`] when the
/// secret cannot be read.
///
/// # Cancel safety
///
/// Cancel safe: read only.
pub async fn resolve_grant(
    grant: &ReplicationGrant,
    store: Option<&dyn SecretStore>,
) -> Result<Option<ReplicationGrant>> {
    if grant.password.is_some() {
        return Ok(None);
    }
    let Some(reference) = &grant.password_ref else {
        return Ok(None);
    };
    let store = store.ok_or_else(|| {
        Error::invalid(
            "snapshot document",
            "replication.password_ref is set but this agent has no secret store to resolve it",
        )
    })?;
    let secret = store.get(reference).await?;
    let mut resolved = grant.clone();
    resolved.password = Some(TransportSecret(secret));
    Ok(Some(resolved))
}

#[async_trait]
impl ReplicationStrategy for CredentialBroker {
    fn datastore(&self) -> DatastoreKind {
        self.inner.datastore()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn recover(&self, opts: &RecoverOptions) -> Result<RecoveryReport> {
        self.inner.recover(opts).await
    }

    async fn enable_as_master(&self, opts: &EnableMasterOptions) -> Result<()> {
        self.inner.enable_as_master(opts).await
    }

    async fn get_replication_snapshot(&self, req: &SnapshotRequest) -> Result<SnapshotDocument> {
        let mut doc = self.inner.get_replication_snapshot(req).await?;
        if let Some(grant) = doc.replication.as_mut()
            && let Err(e) = self.seal(grant).await
        {
            // Abandon the snapshot's account rather than hand its password out in clear.
            let replica = DetachedReplica::new(
                Some(grant.user.clone()),
                grant.slot_name.clone(),
                None,
                false,
            );
            if let Err(c) = self.inner.cleanup_source_on_replica_detach(&replica).await {
                tracing::warn!(error = %c, "could not drop the account of an abandoned snapshot");
            }
            return Err(e);
        }
        Ok(doc)
    }

    fn snapshot_href(&self, name: &str) -> Result<String> {
        self.inner.snapshot_href(name)
    }

    async fn stage_snapshot(&self, req: &StageRequest) -> Result<StagedSnapshot> {
        self.inner.stage_snapshot(req).await
    }

    async fn attach_replication_slave(
        &self,
        snapshot: &SnapshotDocument,
        req: &AttachRequest,
    ) -> Result<AttachOutcome> {
        let resolved = match &snapshot.replication {
            Some(g) => resolve_grant(g, self.store.as_deref()).await?,
            None => None,
        };
        match resolved {
            Some(grant) => {
                let mut doc = snapshot.clone();
                doc.replication = Some(grant);
                self.inner.attach_replication_slave(&doc, req).await
            }
            None => self.inner.attach_replication_slave(snapshot, req).await,
        }
    }

    async fn detach_replication_slave(&self, opts: &DetachOptions) -> Result<DetachedReplica> {
        self.inner.detach_replication_slave(opts).await
    }

    async fn cleanup_source_on_replica_detach(&self, replica: &DetachedReplica) -> Result<()> {
        self.inner.cleanup_source_on_replica_detach(replica).await?;
        if let Some(user) = &replica.replication_user {
            self.forget(user).await;
        }
        Ok(())
    }

    async fn demote_replication_master(&self, opts: &DemoteOptions) -> Result<()> {
        self.inner.demote_replication_master(opts).await?;
        if let Some(store) = &self.store {
            match store.list(&self.opts.reference_prefix).await {
                Ok(refs) => {
                    for r in refs {
                        if let Err(e) = store.delete(&r).await {
                            tracing::warn!(error = %e, "could not delete a replication secret");
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "could not list replication secrets"),
            }
        }
        Ok(())
    }

    async fn make_read_only(&self, read_only: bool) -> Result<()> {
        self.inner.make_read_only(read_only).await
    }

    async fn get_latest_txn_id(&self) -> Result<ReplicationPosition> {
        self.inner.get_latest_txn_id().await
    }

    async fn wait_for_txn(&self, txn: &ReplicationPosition, timeout: Duration) -> Result<()> {
        self.inner.wait_for_txn(txn, timeout).await
    }

    async fn replication_status(&self) -> Result<ReplicationStatus> {
        self.inner.replication_status().await
    }

    async fn get_replica_context(&self, opts: &ReplicaContextOptions) -> Result<ReplicaContext> {
        let mut ctx = self.inner.get_replica_context(opts).await?;
        self.seal(&mut ctx.replication).await?;
        Ok(ctx)
    }

    async fn attach_replica(
        &self,
        source: &ReplicaContext,
        opts: &RepointOptions,
    ) -> Result<AttachOutcome> {
        match resolve_grant(&source.replication, self.store.as_deref()).await? {
            Some(grant) => {
                let mut ctx = source.clone();
                ctx.replication = grant;
                self.inner.attach_replica(&ctx, opts).await
            }
            None => self.inner.attach_replica(source, opts).await,
        }
    }

    async fn get_last_txn(&self) -> Result<LastTxn> {
        self.inner.get_last_txn().await
    }

    async fn fence_writes(&self, opts: &FenceOptions) -> Result<ReplicationPosition> {
        self.inner.fence_writes(opts).await
    }

    async fn unfence_writes(&self) -> Result<()> {
        self.inner.unfence_writes().await
    }

    async fn stop_receiver(&self, opts: &FenceOptions) -> Result<LastTxn> {
        self.inner.stop_receiver(opts).await
    }
}
