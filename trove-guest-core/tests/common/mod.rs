//! Fixtures shared by the snapshot store tests.
#![allow(dead_code, unreachable_pub)]

use tokio::io::{AsyncRead, AsyncReadExt};
use trove_guest_core::store::{Expected, PendingUpload, SnapshotStore};
use trove_guest_core::{Error, ErrorKind, Progress};

/// Reads the snapshot at `href` to its end; a clean end means it was verified.
pub async fn read_all(
    store: &dyn SnapshotStore,
    href: &str,
    expected: &Expected,
) -> Result<Vec<u8>, Error> {
    let mut r = store.get(href, expected).await?;
    let mut out = Vec::new();
    r.read_to_end(&mut out)
        .await
        .map_err(|e| Error::from_read("read snapshot", e))?;
    assert!(r.verified());
    Ok(out)
}

/// Streams `src` into `store` as `name`, without committing it.
pub async fn put_pending(
    store: &dyn SnapshotStore,
    name: &str,
    src: &mut (dyn AsyncRead + Send + Unpin),
) -> Box<dyn PendingUpload> {
    store.put(name, src, &Progress::none()).await.unwrap()
}

/// `stat` of `href` fails with `kind`.
pub async fn assert_stat_fails(store: &dyn SnapshotStore, href: &str, kind: ErrorKind) {
    assert_eq!(
        store.stat(href).await.unwrap_err().kind(),
        kind,
        "stat {href:?}"
    );
}

/// `stat` and `get` of `href` both fail with `kind`.
pub async fn assert_lookups_fail(store: &dyn SnapshotStore, href: &str, kind: ErrorKind) {
    assert_stat_fails(store, href, kind).await;
    assert_eq!(
        store
            .get(href, &Expected::default())
            .await
            .unwrap_err()
            .kind(),
        kind,
        "get {href:?}"
    );
}

/// Readers do not find `href`: `stat` answers `NotFound`.
pub async fn assert_not_found(store: &dyn SnapshotStore, href: &str) {
    assert_stat_fails(store, href, ErrorKind::NotFound).await;
}

/// Readers cannot see `href` at all: `stat` and `get` both answer `NotFound`.
pub async fn assert_invisible(store: &dyn SnapshotStore, href: &str) {
    assert_lookups_fail(store, href, ErrorKind::NotFound).await;
}
