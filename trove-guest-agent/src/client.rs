//! A typed client of the guest agent's HTTP API (what a control plane, the demo and the tests
//! use).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde::Serialize;
use serde::de::DeserializeOwned;
use trove_guest_core::failover::{LastTxn, ReplicaContext, ReplicaContextOptions};
use trove_guest_core::wire::{DetachReplication, InstanceAction};
use trove_guest_core::{
    AttachOutcome, DetachedReplica, ProgressEvent, ReplicationPosition, ReplicationStatus, Secret,
    SnapshotDocument, StagedSnapshot,
};

use crate::api::{self, ErrorBody, ErrorDetail, StreamLine};

/// What a call to the agent can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The agent answered with an error (non-2xx status, or an error line in a stream).
    #[error("agent error {} (HTTP {status}): {}", error.kind, error.message)]
    Api {
        /// The HTTP status (200 for an error line at the end of a stream).
        status: u16,
        /// The agent's error body.
        error: ErrorDetail,
    },
    /// The request could not be sent or the answer read.
    #[error("HTTP: {0}")]
    Http(#[from] reqwest::Error),
    /// The answer was not what the API promises.
    #[error("unexpected answer: {0}")]
    Unexpected(String),
    /// The client's options are unusable (a CA file without a certificate, a token that is not
    /// a valid header value).
    #[error("client options: {0}")]
    Options(String),
}

impl ClientError {
    /// The agent's error kind, for [`ClientError::Api`].
    pub fn kind(&self) -> Option<&str> {
        match self {
            ClientError::Api { error, .. } => Some(&error.kind),
            _ => None,
        }
    }
}

/// Result of a client call.
pub type ClientResult<T> = Result<T, ClientError>;

/// How a client reaches and authenticates to an agent.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ClientOptions {
    /// The agent's bearer token, sent on every request.
    pub token: Option<Secret>,
    /// PEM certificates of the CAs an `https://` agent's certificate must chain to (instead of
    /// the system's roots, which this client does not load).
    pub ca_pem: Option<Vec<u8>>,
    /// Connect to this Unix socket instead of the URL's host and port.
    pub unix_socket: Option<PathBuf>,
}

impl ClientOptions {
    /// No token, no CA, TCP.
    pub fn new() -> Self {
        ClientOptions::default()
    }

    /// Sends `token` as `Authorization: Bearer` on every request.
    pub fn with_token(mut self, token: Secret) -> Self {
        self.token = Some(token);
        self
    }

    /// Trusts the CA certificates in `pem` for `https://` agents.
    pub fn with_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }

    /// Connects to the Unix socket at `path` (the base URL is then `http://localhost`).
    pub fn with_unix_socket(mut self, path: impl Into<PathBuf>) -> Self {
        self.unix_socket = Some(path.into());
        self
    }
}

/// A client of one guest agent.
#[derive(Debug, Clone)]
pub struct AgentClient {
    base: String,
    http: reqwest::Client,
}

impl AgentClient {
    /// A client of the agent at `base` (`http://127.0.0.1:PORT`), without a token.
    pub fn new(base: impl Into<String>) -> Self {
        Self::with_options(base, &ClientOptions::new()).expect("default client options build")
    }

    /// A client of the agent at `base` with `options` (token, CA, Unix socket).
    ///
    /// # Errors
    ///
    /// [`ClientError::Options`] for a CA that holds no certificate or a token that cannot be a
    /// header value; [`ClientError::Http`] when the HTTP client cannot be built.
    pub fn with_options(base: impl Into<String>, options: &ClientOptions) -> ClientResult<Self> {
        let mut builder = reqwest::Client::builder().connect_timeout(Duration::from_secs(10));
        if let Some(token) = &options.token {
            let mut value =
                reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.expose()))
                    .map_err(|_| {
                        ClientError::Options("the token is not a valid header value".into())
                    })?;
            value.set_sensitive(true);
            let mut headers = reqwest::header::HeaderMap::new();
            headers.insert(reqwest::header::AUTHORIZATION, value);
            builder = builder.default_headers(headers);
        }
        let mut roots = rustls::RootCertStore::empty();
        if let Some(pem) = &options.ca_pem {
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| ClientError::Options(format!("CA PEM: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| ClientError::Options(format!("CA certificate: {e}")))?;
            }
            if roots.is_empty() {
                return Err(ClientError::Options(
                    "the CA PEM holds no certificate".into(),
                ));
            }
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Options(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        builder = builder.use_preconfigured_tls(tls);
        if let Some(path) = &options.unix_socket {
            builder = builder.unix_socket(path.as_path());
        }
        Ok(AgentClient {
            base: base.into().trim_end_matches('/').to_owned(),
            http: builder.build()?,
        })
    }

    /// The agent's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn answer<T: DeserializeOwned>(resp: reqwest::Response) -> ClientResult<T> {
        let status = resp.status();
        let bytes = resp.bytes().await?;
        if status.is_success() {
            serde_json::from_slice(&bytes).map_err(|e| {
                ClientError::Unexpected(format!("{e}: {}", String::from_utf8_lossy(&bytes)))
            })
        } else {
            match serde_json::from_slice::<ErrorBody>(&bytes) {
                Ok(b) => Err(ClientError::Api {
                    status: status.as_u16(),
                    error: b.error,
                }),
                Err(_) => Err(ClientError::Unexpected(format!(
                    "{status} without an error body: {}",
                    String::from_utf8_lossy(&bytes)
                ))),
            }
        }
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> ClientResult<T> {
        Self::answer(self.http.get(self.url(path)).send().await?).await
    }

    async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> ClientResult<T> {
        Self::answer(self.http.post(self.url(path)).json(body).send().await?).await
    }

    /// Posts raw bytes (for tests of the agent's rejections) and returns status and body.
    ///
    /// # Errors
    ///
    /// [`ClientError::Http`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: the request may have been sent.
    pub async fn post_raw(
        &self,
        path: &str,
        body: impl Into<reqwest::Body>,
    ) -> ClientResult<(u16, serde_json::Value)> {
        let resp = self
            .http
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await?;
        let v = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::String(
            String::from_utf8_lossy(&bytes).into_owned(),
        ));
        Ok((status, v))
    }

    /// Streams an NDJSON answer, calling `on_progress` for progress lines; returns the result.
    async fn streamed<T: DeserializeOwned>(
        resp: reqwest::Response,
        on_progress: &mut (dyn FnMut(ProgressEvent) + Send),
    ) -> ClientResult<T> {
        if !resp.status().is_success() {
            return Self::answer(resp).await;
        }
        let mut resp = resp;
        let mut buf: Vec<u8> = Vec::new();
        loop {
            while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=nl).collect();
                let parsed: StreamLine = serde_json::from_slice(&line).map_err(|e| {
                    ClientError::Unexpected(format!(
                        "bad stream line: {e}: {}",
                        String::from_utf8_lossy(&line)
                    ))
                })?;
                match parsed {
                    StreamLine::Progress(ev) => on_progress(ev),
                    StreamLine::Result(v) => {
                        return serde_json::from_value(v)
                            .map_err(|e| ClientError::Unexpected(e.to_string()));
                    }
                    StreamLine::Error(error) => {
                        return Err(ClientError::Api { status: 200, error });
                    }
                }
            }
            match resp.chunk().await? {
                Some(chunk) => buf.extend_from_slice(&chunk),
                None => {
                    return Err(ClientError::Unexpected(
                        "stream ended without a result line".into(),
                    ));
                }
            }
        }
    }

    /// `GET` [`api::STATUS`].
    ///
    /// # Errors
    ///
    /// [`ClientError`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: read only.
    pub async fn status(&self) -> ClientResult<ReplicationStatus> {
        self.get(api::STATUS).await
    }

    /// `POST` [`api::ENABLE_MASTER`].
    ///
    /// # Errors
    ///
    /// [`ClientError`].
    ///
    /// # Cancel safety
    ///
    /// The change runs to completion on the agent even if this future is dropped.
    pub async fn enable_master(&self) -> ClientResult<()> {
        let _: serde_json::Value = self
            .post(api::ENABLE_MASTER, &serde_json::json!({}))
            .await?;
        Ok(())
    }

    /// `POST` [`api::SNAPSHOT`] with a progress stream.
    ///
    /// # Errors
    ///
    /// [`ClientError`]; kind `busy` when another change runs.
    ///
    /// # Cancel safety
    ///
    /// The snapshot runs to completion on the agent even if this future is dropped.
    pub async fn snapshot(
        &self,
        call: &api::SnapshotCall,
        on_progress: &mut (dyn FnMut(ProgressEvent) + Send),
    ) -> ClientResult<SnapshotDocument> {
        let resp = self
            .http
            .post(self.url(api::SNAPSHOT))
            .query(&api::StreamQuery { stream: Some(true) })
            .json(call)
            .send()
            .await?;
        Self::streamed(resp, on_progress).await
    }

    /// `POST` [`api::STAGE`] with a progress stream: the replica restores the snapshot (following
    /// its upload while the master still takes it) for a later [`Self::attach`].
    ///
    /// # Errors
    ///
    /// [`ClientError`]; kind `unsupported` for datastores without staging.
    ///
    /// # Cancel safety
    ///
    /// The staging runs to completion on the agent even if this future is dropped.
    pub async fn stage(
        &self,
        call: &api::StageCall,
        on_progress: &mut (dyn FnMut(ProgressEvent) + Send),
    ) -> ClientResult<StagedSnapshot> {
        let resp = self
            .http
            .post(self.url(api::STAGE))
            .query(&api::StreamQuery { stream: Some(true) })
            .json(call)
            .send()
            .await?;
        Self::streamed(resp, on_progress).await
    }

    /// `POST` [`api::ATTACH`] with the snapshot document and a progress stream.
    ///
    /// # Errors
    ///
    /// [`ClientError`].
    ///
    /// # Cancel safety
    ///
    /// The attach runs to completion on the agent even if this future is dropped.
    pub async fn attach(
        &self,
        snapshot: &SnapshotDocument,
        query: &api::AttachQuery,
        on_progress: &mut (dyn FnMut(ProgressEvent) + Send),
    ) -> ClientResult<AttachOutcome> {
        let mut query = query.clone();
        query.stream = Some(true);
        let resp = self
            .http
            .post(self.url(api::ATTACH))
            .query(&query)
            .json(snapshot)
            .send()
            .await?;
        Self::streamed(resp, on_progress).await
    }

    /// `POST` [`api::DETACH`].
    ///
    /// # Errors
    ///
    /// [`ClientError`].
    ///
    /// # Cancel safety
    ///
    /// The change runs to completion on the agent even if this future is dropped.
    pub async fn detach(&self) -> ClientResult<DetachedReplica> {
        self.post(api::DETACH, &api::DetachCall::default()).await
    }

    /// `POST /instances/{id}/action` with `{"detach_replication": {}}`.
    ///
    /// # Errors
    ///
    /// [`ClientError`].
    ///
    /// # Cancel safety
    ///
    /// The change runs to completion on the agent even if this future is dropped.
    pub async fn detach_replication_action(
        &self,
        instance_id: &str,
    ) -> ClientResult<DetachedReplica> {
        let action = InstanceAction::DetachReplication(DetachReplication::default());
        self.post(&api::action_path(instance_id), &action).await
    }

    /// `POST` [`api::CLEANUP`] with what the detach returned.
    ///
    /// # Errors
    ///
    /// [`ClientError`].
    ///
    /// # Cancel safety
    ///
    /// The change runs to completion on the agent even if this future is dropped.
    pub async fn cleanup(&self, replica: &DetachedReplica) -> ClientResult<()> {
        let _: serde_json::Value = self.post(api::CLEANUP, replica).await?;
        Ok(())
    }

    /// `POST` [`api::DEMOTE`].
    ///
    /// # Errors
    ///
    /// [`ClientError`].
    ///
    /// # Cancel safety
    ///
    /// The change runs to completion on the agent even if this future is dropped.
    pub async fn demote(&self) -> ClientResult<()> {
        let _: serde_json::Value = self.post(api::DEMOTE, &api::DemoteCall::default()).await?;
        Ok(())
    }

    /// `PUT` [`api::READ_ONLY`].
    ///
    /// # Errors
    ///
    /// [`ClientError`].
    ///
    /// # Cancel safety
    ///
    /// The change runs to completion on the agent even if this future is dropped.
    pub async fn make_read_only(&self, read_only: bool) -> ClientResult<()> {
        let resp = self
            .http
            .put(self.url(api::READ_ONLY))
            .json(&api::ReadOnlyCall { read_only })
            .send()
            .await?;
        let _: serde_json::Value = Self::answer(resp).await?;
        Ok(())
    }

    /// `GET` [`api::LATEST_TXN`].
    ///
    /// # Errors
    ///
    /// [`ClientError`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: read only.
    pub async fn latest_txn(&self) -> ClientResult<ReplicationPosition> {
        self.get(api::LATEST_TXN).await
    }

    /// `POST` [`api::WAIT_FOR_TXN`].
    ///
    /// # Errors
    ///
    /// [`ClientError`]; kind `timeout` when the position is not reached in time.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: read only.
    pub async fn wait_for_txn(
        &self,
        txn: &ReplicationPosition,
        timeout: Duration,
    ) -> ClientResult<()> {
        let _: serde_json::Value = self
            .post(
                api::WAIT_FOR_TXN,
                &api::WaitCall {
                    txn: txn.clone(),
                    timeout_secs: Some(timeout.as_secs_f64()),
                },
            )
            .await?;
        Ok(())
    }

    /// `POST` [`api::DETACH`] with options (`for_failover`, timeout).
    ///
    /// # Errors
    ///
    /// [`ClientError`].
    ///
    /// # Cancel safety
    ///
    /// The change runs to completion on the agent even if this future is dropped.
    pub async fn detach_with(&self, call: &api::DetachCall) -> ClientResult<DetachedReplica> {
        self.post(api::DETACH, call).await
    }

    /// `POST` [`api::REPLICA_CONTEXT`]: what `opts.replica_id` needs to replicate from this
    /// server (its account limited to `opts.replica_host` when set).
    ///
    /// # Errors
    ///
    /// [`ClientError`]; kind `conflict` when this server cannot serve replicas.
    ///
    /// # Cancel safety
    ///
    /// The change runs to completion on the agent even if this future is dropped; a repeated
    /// call gives the account a new password.
    pub async fn replica_context(
        &self,
        opts: &ReplicaContextOptions,
    ) -> ClientResult<ReplicaContext> {
        self.post(
            api::REPLICA_CONTEXT,
            &api::ContextCall {
                replica_id: opts.replica_id.clone(),
                replica_host: opts.replica_host.clone(),
            },
        )
        .await
    }

    /// `POST` [`api::ATTACH_REPLICA`]: re-point this server at `context`'s source.
    ///
    /// # Errors
    ///
    /// [`ClientError`]; kind `conflict` when this server has diverged.
    ///
    /// # Cancel safety
    ///
    /// The change runs to completion on the agent even if this future is dropped.
    pub async fn attach_replica(
        &self,
        context: &ReplicaContext,
        timeout: Duration,
    ) -> ClientResult<AttachOutcome> {
        self.post(
            api::ATTACH_REPLICA,
            &api::RepointCall {
                context: context.clone(),
                timeout_secs: Some(timeout.as_secs().max(1)),
            },
        )
        .await
    }

    /// `GET` [`api::LAST_TXN`].
    ///
    /// # Errors
    ///
    /// [`ClientError`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: read only.
    pub async fn last_txn(&self) -> ClientResult<LastTxn> {
        self.get(api::LAST_TXN).await
    }

    /// `POST` [`api::FENCE`]: refuse every write; returns the last transaction.
    ///
    /// # Errors
    ///
    /// [`ClientError`].
    ///
    /// # Cancel safety
    ///
    /// The change runs to completion on the agent even if this future is dropped.
    pub async fn fence(&self, timeout: Duration) -> ClientResult<ReplicationPosition> {
        self.post(
            api::FENCE,
            &api::FenceCall {
                timeout_secs: Some(timeout.as_secs().max(1)),
            },
        )
        .await
    }

    /// `POST` [`api::UNFENCE`].
    ///
    /// # Errors
    ///
    /// [`ClientError`].
    ///
    /// # Cancel safety
    ///
    /// The change runs to completion on the agent even if this future is dropped.
    pub async fn unfence(&self) -> ClientResult<()> {
        let _: serde_json::Value = self.post(api::UNFENCE, &serde_json::json!({})).await?;
        Ok(())
    }

    /// `POST` [`api::STOP_RECEIVER`].
    ///
    /// # Errors
    ///
    /// [`ClientError`].
    ///
    /// # Cancel safety
    ///
    /// The change runs to completion on the agent even if this future is dropped.
    pub async fn stop_receiver(&self, timeout: Duration) -> ClientResult<LastTxn> {
        self.post(
            api::STOP_RECEIVER,
            &api::FenceCall {
                timeout_secs: Some(timeout.as_secs().max(1)),
            },
        )
        .await
    }

    /// `GET` [`api::OPERATION`].
    ///
    /// # Errors
    ///
    /// [`ClientError`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: read only.
    pub async fn operation(&self) -> ClientResult<api::OperationView> {
        self.get(api::OPERATION).await
    }

    /// `GET` [`api::RECOVERY`].
    ///
    /// # Errors
    ///
    /// [`ClientError`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: read only.
    pub async fn recovery(&self) -> ClientResult<api::RecoveryView> {
        self.get(api::RECOVERY).await
    }

    /// `GET` [`api::HEALTH`]: the HTTP status (`200` answering, `503` not) and the view.
    ///
    /// # Errors
    ///
    /// [`ClientError::Http`]; [`ClientError::Unexpected`] for a body that is not a
    /// [`api::HealthView`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: read only.
    pub async fn health(&self) -> ClientResult<(u16, api::HealthView)> {
        let resp = self.http.get(self.url(api::HEALTH)).send().await?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await?;
        let view = serde_json::from_slice(&bytes).map_err(|e| {
            ClientError::Unexpected(format!("{e}: {}", String::from_utf8_lossy(&bytes)))
        })?;
        Ok((status, view))
    }
}
