//! `ZstdSnapshotStore`: transparent, verified zstd compression over a local store.
#![cfg(feature = "zstd")]

use std::sync::Arc;

use tokio::io::AsyncReadExt;
use trove_guest_core::store::{Expected, ZstdSnapshotStore};
use trove_guest_core::{Error, LocalSnapshotStore, Progress, SnapshotStore};

/// Compressible but not trivial data: hex text of a counter.
fn sample(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut i = 0u64;
    while out.len() < len {
        out.extend(format!("{:016x}{:016x}", i, i.wrapping_mul(0x9e37_79b9_7f4a_7c15)).as_bytes());
        i += 1;
    }
    out.truncate(len);
    out
}

fn stores(dir: &std::path::Path) -> (Arc<LocalSnapshotStore>, ZstdSnapshotStore) {
    let local = Arc::new(LocalSnapshotStore::new(dir).unwrap());
    let z = ZstdSnapshotStore::new(local.clone() as Arc<dyn SnapshotStore>).with_workers(1);
    (local, z)
}

async fn read_all(
    store: &dyn SnapshotStore,
    href: &str,
    expected: &Expected,
) -> Result<Vec<u8>, Error> {
    let mut r = store.get(href, expected).await?;
    let mut out = Vec::new();
    r.read_to_end(&mut out)
        .await
        .map_err(|e| Error::from_read("read", e))?;
    assert!(r.verified());
    Ok(out)
}

#[tokio::test]
async fn round_trip_returns_the_raw_bytes_and_stores_fewer() {
    let dir = tempfile::tempdir().unwrap();
    let (local, z) = stores(dir.path());
    let data = sample(3 << 20);
    let pending = z
        .put("snap-1", &mut data.as_slice(), &Progress::none())
        .await
        .unwrap();
    let stored = pending.commit().await.unwrap();
    assert_eq!(stored.size, data.len() as u64);
    assert_eq!(z.stat(&stored.href).await.unwrap(), stored);

    let expected = Expected {
        size: Some(stored.size),
        sha256: Some(stored.sha256.clone()),
    };
    assert_eq!(read_all(&z, &stored.href, &expected).await.unwrap(), data);

    let compressed = local.stat(&local.href_for("snap-1.zst")).await.unwrap();
    assert!(
        compressed.size * 2 < data.len() as u64,
        "{} bytes stored",
        compressed.size
    );
}

#[tokio::test]
async fn a_flipped_byte_in_the_compressed_object_is_an_integrity_error() {
    let dir = tempfile::tempdir().unwrap();
    let (local, z) = stores(dir.path());
    let data = sample(1 << 20);
    let stored = z
        .put("snap-2", &mut data.as_slice(), &Progress::none())
        .await
        .unwrap()
        .commit()
        .await
        .unwrap();
    let path = local.path_for(&local.href_for("snap-2.zst")).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&path, bytes).unwrap();
    let err = read_all(&z, &stored.href, &Expected::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Integrity { .. }), "{err:?}");
}

#[tokio::test]
async fn a_wrong_expected_hash_is_refused_before_reading() {
    let dir = tempfile::tempdir().unwrap();
    let (_local, z) = stores(dir.path());
    let data = sample(4096);
    let stored = z
        .put("snap-3", &mut data.as_slice(), &Progress::none())
        .await
        .unwrap()
        .commit()
        .await
        .unwrap();
    let wrong = Expected {
        size: Some(stored.size),
        sha256: Some("00".repeat(32)),
    };
    let err = z.get(&stored.href, &wrong).await.unwrap_err();
    assert!(matches!(err, Error::Integrity { .. }), "{err:?}");
}

#[tokio::test]
async fn delete_removes_pointer_and_data_and_is_repeatable() {
    let dir = tempfile::tempdir().unwrap();
    let (local, z) = stores(dir.path());
    let data = sample(4096);
    let stored = z
        .put("snap-4", &mut data.as_slice(), &Progress::none())
        .await
        .unwrap()
        .commit()
        .await
        .unwrap();
    z.delete(&stored.href).await.unwrap();
    z.delete(&stored.href).await.unwrap();
    assert!(matches!(
        z.stat(&stored.href).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        local.stat(&local.href_for("snap-4.zst")).await,
        Err(Error::NotFound { .. })
    ));
}

#[tokio::test]
async fn an_uncommitted_upload_is_invisible() {
    let dir = tempfile::tempdir().unwrap();
    let (_local, z) = stores(dir.path());
    let data = sample(4096);
    let pending = z
        .put("snap-5", &mut data.as_slice(), &Progress::none())
        .await
        .unwrap();
    let href = pending.snapshot().href.clone();
    drop(pending);
    assert!(matches!(z.stat(&href).await, Err(Error::NotFound { .. })));
}
