//! S3 and S3-compatible object storage for [`ObjectSnapshotStore`] (feature `s3`).
//!
//! [`S3Config`] says where snapshots live (`s3://bucket/prefix`, endpoint, region) and names the
//! credentials file; [`ObjectSnapshotStore::s3`] reads that file (it must be a regular file no
//! one but its owner can read or write: mode 0600 or stricter), builds the client with retries
//! and bounded timeouts, and [`ObjectSnapshotStore::check_access`] turns a missing bucket, refused
//! credentials and an unreachable endpoint into [`Error::StoreAccess`].
//!
//! Credentials never leave the client: they are not put into the environment, on a command
//! line, into a log or an error, and [`S3Config`]'s `Debug` shows only the file's path.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::{BackoffConfig, ClientOptions, RetryConfig};

use super::ObjectSnapshotStore;
use crate::error::{BoxError, Error, Result, StoreAccessProblem};
use crate::secret::Secret;

/// Where an S3 snapshot store is and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct S3Config {
    /// The bucket.
    pub bucket: String,
    /// The key prefix snapshots live under (`""` for the bucket's root).
    pub prefix: String,
    /// The endpoint URL of an S3-compatible service (`http://127.0.0.1:9000`); `None` for AWS.
    pub endpoint: Option<String>,
    /// The region (signing region for S3-compatible services). Default `us-east-1`.
    pub region: String,
    /// The credentials file: `aws_access_key_id = ...`, `aws_secret_access_key = ...` and
    /// optionally `aws_session_token = ...` lines (an AWS `credentials` file with one profile
    /// works); `#` comments and `[section]` lines are ignored. It must be a regular file with
    /// mode 0600 or stricter.
    pub credentials_file: PathBuf,
    /// Allow a plain `http://` endpoint (test servers). Default false.
    pub allow_http: bool,
    /// Retries of a failed request (5xx, throttling, connection errors) with exponential
    /// backoff. Default 5.
    pub max_retries: usize,
    /// No retry starts after this long since the first attempt. Default 60 s.
    pub retry_timeout: Duration,
    /// Bound on establishing a connection. Default 5 s.
    pub connect_timeout: Duration,
    /// Bound on one request, body included. Default 120 s.
    pub request_timeout: Duration,
    /// Send payloads unsigned (`UNSIGNED-PAYLOAD`) so the client does not hash every request
    /// body a second time; the snapshot's own SHA-256 (per segment and whole) still verifies
    /// every byte. Only over TLS unless the endpoint is a trusted local service. Default false.
    pub unsigned_payload: bool,
}

impl S3Config {
    /// A store in `bucket`, at its root, with credentials from `credentials_file` and the
    /// defaults above.
    pub fn new(bucket: impl Into<String>, credentials_file: impl Into<PathBuf>) -> Self {
        S3Config {
            bucket: bucket.into(),
            prefix: String::new(),
            endpoint: None,
            region: "us-east-1".into(),
            credentials_file: credentials_file.into(),
            allow_http: false,
            max_retries: 5,
            retry_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(120),
            unsigned_payload: false,
        }
    }

    /// Bucket and prefix from an `s3://bucket/prefix` URL.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for another scheme, an empty or invalid bucket name, or a query
    /// or fragment.
    pub fn from_url(url: &str, credentials_file: impl Into<PathBuf>) -> Result<Self> {
        let bad = |reason: &str| Error::invalid("S3 store URL", format!("{url:?}: {reason}"));
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| bad("expected s3://bucket/prefix"))?;
        if rest.contains(['?', '#', '\\']) || rest.bytes().any(|b| b.is_ascii_whitespace()) {
            return Err(bad("query, fragment, backslash or whitespace not allowed"));
        }
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'.'))
            && bucket
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphanumeric());
        if !bucket_ok {
            return Err(bad("not a valid bucket name"));
        }
        let prefix = prefix.trim_matches('/');
        if prefix.split('/').any(|s| s == "." || s == "..") {
            return Err(bad("'.' and '..' segments are not allowed"));
        }
        let mut c = S3Config::new(bucket, credentials_file);
        c.prefix = prefix.to_owned();
        Ok(c)
    }

    /// The store's URL, `s3://bucket/prefix` (the base of its hrefs).
    pub fn url(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }

    /// Sets [`S3Config::prefix`].
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }
    /// Sets [`S3Config::endpoint`].
    pub fn with_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }
    /// Sets [`S3Config::region`].
    pub fn with_region(mut self, region: impl Into<String>) -> Self {
        self.region = region.into();
        self
    }
    /// Sets [`S3Config::allow_http`].
    pub fn with_allow_http(mut self, allow: bool) -> Self {
        self.allow_http = allow;
        self
    }
    /// Sets [`S3Config::max_retries`] and [`S3Config::retry_timeout`].
    pub fn with_retries(mut self, max_retries: usize, retry_timeout: Duration) -> Self {
        self.max_retries = max_retries;
        self.retry_timeout = retry_timeout;
        self
    }
    /// Sets [`S3Config::connect_timeout`] and [`S3Config::request_timeout`].
    pub fn with_timeouts(mut self, connect: Duration, request: Duration) -> Self {
        self.connect_timeout = connect;
        self.request_timeout = request;
        self
    }
    /// Sets [`S3Config::unsigned_payload`].
    pub fn with_unsigned_payload(mut self, unsigned: bool) -> Self {
        self.unsigned_payload = unsigned;
        self
    }
}

/// Credentials read from an [`S3Config::credentials_file`]; `Debug` shows only the key id.
struct S3Credentials {
    key_id: String,
    secret: Secret,
    token: Option<Secret>,
}

impl std::fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Credentials")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// The largest credentials file read.
const MAX_CREDENTIALS_LEN: u64 = 64 << 10;

/// Reads a credentials file with [`read_private_text`](crate::private_file::read_private_text).
fn read_credentials(path: &Path) -> Result<S3Credentials> {
    let what = || format!("S3 credentials file {}", path.display());
    let text = crate::private_file::read_private_text(path, MAX_CREDENTIALS_LEN)?;
    let text = text.expose();
    let (mut key_id, mut secret, mut token) = (None, None, None);
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty()
            || line.starts_with('#')
            || line.starts_with(';')
            || line.starts_with('[')
        {
            continue;
        }
        // Never echo a line: it may hold the secret.
        let Some((k, v)) = line.split_once('=') else {
            return Err(Error::invalid(what(), "a line is not `key = value`"));
        };
        let v = v.trim().trim_matches('"').to_owned();
        match k.trim() {
            "aws_access_key_id" | "access_key_id" => key_id = Some(v),
            "aws_secret_access_key" | "secret_access_key" => secret = Some(Secret::new(v)),
            "aws_session_token" | "session_token" => token = Some(Secret::new(v)),
            _ => {}
        }
    }
    match (key_id, secret) {
        (Some(key_id), Some(secret)) if !key_id.is_empty() && !secret.expose().is_empty() => {
            Ok(S3Credentials {
                key_id,
                secret,
                token,
            })
        }
        _ => Err(Error::invalid(
            what(),
            "needs aws_access_key_id and aws_secret_access_key",
        )),
    }
}

impl ObjectSnapshotStore {
    /// A store in the S3 bucket and prefix of `config`, with hrefs under `config.url()`.
    ///
    /// Reads the credentials file now (a later rotation needs a new store). Makes no request:
    /// call [`check_access`](Self::check_access) to find configuration problems early.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for a credentials file that is missing keys, not a regular file
    /// or readable by others, for a bad bucket, prefix or endpoint; [`Error::Io`] when the file
    /// cannot be read.
    pub fn s3(config: &S3Config) -> Result<Self> {
        let creds = read_credentials(&config.credentials_file)?;
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(5),
                base: 2.0,
            },
            max_retries: config.max_retries,
            retry_timeout: config.retry_timeout,
        };
        let client = ClientOptions::new()
            .with_allow_http(config.allow_http)
            .with_connect_timeout(config.connect_timeout)
            .with_timeout(config.request_timeout);
        let mut b = AmazonS3Builder::new()
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            .with_access_key_id(&creds.key_id)
            .with_secret_access_key(creds.secret.expose())
            .with_allow_http(config.allow_http)
            .with_retry(retry)
            .with_client_options(client)
            .with_unsigned_payload(config.unsigned_payload);
        if let Some(t) = &creds.token {
            b = b.with_token(t.expose());
        }
        if let Some(endpoint) = &config.endpoint {
            b = b.with_endpoint(endpoint);
        }
        let s3 = b
            .build()
            .map_err(|e| Error::invalid("S3 store configuration", e.to_string()))?;
        Ok(ObjectSnapshotStore::new(Arc::new(s3), &config.url())?
            .with_segments(ObjectSnapshotStore::DEFAULT_SEGMENT_SIZE))
    }

    /// Lists the store's prefix once: proves the bucket exists, the credentials are accepted
    /// and the endpoint answers.
    ///
    /// # Errors
    ///
    /// [`Error::StoreAccess`] with [`StoreAccessProblem::BucketMissing`],
    /// [`StoreAccessProblem::BadCredentials`] or [`StoreAccessProblem::Unreachable`];
    /// [`Error::Store`] for anything else.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: read only.
    pub async fn check_access(&self) -> Result<()> {
        self.store
            .list_with_delimiter(Some(&self.prefix))
            .await
            .map(|_| ())
            .map_err(|e| super::object::store_error(format!("list {}", self.base_url), e))
    }
}

/// What kind of access problem `e` shows, if any: the S3 error code in a response body, the
/// HTTP status, or a request that never got a response. (`object_store` keeps its retry error
/// type private, so the response is recognised by the error chain's text.)
pub(super) fn classify(e: &object_store::Error) -> Option<StoreAccessProblem> {
    if matches!(
        e,
        object_store::Error::Unauthenticated { .. } | object_store::Error::PermissionDenied { .. }
    ) {
        return Some(StoreAccessProblem::BadCredentials);
    }
    let mut text = String::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let unreachable = err
            .downcast_ref::<object_store::client::HttpError>()
            .is_some_and(|h| {
                matches!(
                    h.kind(),
                    object_store::client::HttpErrorKind::Connect
                        | object_store::client::HttpErrorKind::Timeout
                )
            })
            || err.downcast_ref::<std::io::Error>().is_some_and(|io| {
                use std::io::ErrorKind as K;
                matches!(
                    io.kind(),
                    K::ConnectionRefused
                        | K::TimedOut
                        | K::HostUnreachable
                        | K::NetworkUnreachable
                        | K::AddrNotAvailable
                )
            });
        if unreachable {
            return Some(StoreAccessProblem::Unreachable);
        }
        text.push_str(&err.to_string());
        text.push('\n');
        cur = err.source();
    }
    // hyper's connect errors, whose source chain ends in a private type.
    if ["client error (Connect)", "tcp connect error", "dns error"]
        .iter()
        .any(|c| text.contains(c))
    {
        return Some(StoreAccessProblem::Unreachable);
    }
    if text.contains("NoSuchBucket") {
        return Some(StoreAccessProblem::BucketMissing);
    }
    let refused = [
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "AccessDenied",
        "InvalidToken",
        "ExpiredToken",
        "status code: 401",
        "status code: 403",
    ];
    if refused.iter().any(|c| text.contains(c)) {
        return Some(StoreAccessProblem::BadCredentials);
    }
    None
}

/// [`Error::StoreAccess`] for `e` when it is an access problem.
pub(super) fn access_error(
    message: &str,
    e: object_store::Error,
) -> Result<Error, object_store::Error> {
    match classify(&e) {
        Some(problem) => Ok(Error::StoreAccess {
            problem,
            message: message.to_owned(),
            source: Some(Box::new(e) as BoxError),
        }),
        None => Err(e),
    }
}
