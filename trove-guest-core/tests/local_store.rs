//! `LocalSnapshotStore`: a multi-hundred-MiB snapshot streamed in and out with hash
//! verification and flat memory, damage refused as `Integrity`, nothing visible before commit,
//! and hrefs outside the store refused.

mod common;

use std::io::{Seek, SeekFrom, Write};
use std::pin::Pin;
use std::task::{Context, Poll};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use trove_guest_core::store::{Expected, SnapshotStore, StoredSnapshot};
use trove_guest_core::{Error, ErrorKind, LocalSnapshotStore, Progress};

const MIB: u64 = 1 << 20;
const BIG: u64 = 300 * MIB + 12_345;

/// Deterministic pseudo-random bytes, generated on the fly (never held in memory).
struct Generated {
    block: Vec<u8>,
    remaining: u64,
    offset: u64,
}

impl Generated {
    fn new(len: u64) -> Self {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let block = (0..MIB)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        Generated {
            block,
            remaining: len,
            offset: 0,
        }
    }
}

impl AsyncRead for Generated {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let pos = (this.offset % MIB) as usize;
        let n = (buf.remaining() as u64)
            .min(this.remaining)
            .min(MIB - pos as u64) as usize;
        // Vary each MiB block so blocks differ (a swapped block would be caught).
        let start = buf.filled().len();
        buf.put_slice(&this.block[pos..pos + n]);
        if pos == 0 && n > 0 {
            buf.filled_mut()[start] = (this.offset / MIB) as u8;
        }
        this.offset += n as u64;
        this.remaining -= n as u64;
        Poll::Ready(Ok(()))
    }
}

/// Reads `r` to its end, hashing; returns (bytes, sha256) or the mapped error.
async fn drain(mut r: impl AsyncRead + Unpin) -> Result<(u64, String), Error> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; MIB as usize];
    let mut total = 0u64;
    loop {
        let n = r
            .read(&mut buf)
            .await
            .map_err(|e| Error::from_read("read snapshot", e))?;
        if n == 0 {
            return Ok((total, hex::encode(hasher.finalize())));
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
}

fn vm_hwm_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

async fn read_back(
    store: &LocalSnapshotStore,
    stored: &StoredSnapshot,
) -> Result<(u64, String), Error> {
    let expected = Expected {
        size: Some(stored.size),
        sha256: Some(stored.sha256.clone()),
    };
    let reader = store.get(&stored.href, &expected).await?;
    drain(reader).await
}

fn entries(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_snapshot_round_trips_with_flat_memory_and_damage_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalSnapshotStore::new(dir.path()).unwrap();
    let (expected_size, expected_sha) = drain(Generated::new(BIG)).await.unwrap();
    assert_eq!(expected_size, BIG);

    let hwm_before = vm_hwm_kib();
    let (progress, mut events) = Progress::channel();
    let mut source = Generated::new(BIG);
    let pending = store.put("big-300m", &mut source, &progress).await.unwrap();
    assert_eq!(pending.snapshot().size, BIG);
    assert_eq!(
        pending.snapshot().sha256,
        expected_sha,
        "hashed while streaming"
    );
    let stored = pending.commit().await.unwrap();
    let hwm_put = vm_hwm_kib();
    assert_eq!(
        read_back(&store, &stored).await.unwrap(),
        (BIG, expected_sha.clone())
    );
    println!("VmHWM after put {hwm_put:?}");
    let hwm_after = vm_hwm_kib();
    if let (Some(before), Some(after)) = (hwm_before, hwm_after) {
        println!(
            "VmHWM before {before} KiB, after storing and reading {} MiB: {after} KiB (+{} KiB)",
            BIG / MIB,
            after.saturating_sub(before)
        );
    }
    let mut last = None;
    while let Ok(e) = events.try_recv() {
        last = Some(e);
    }
    let last = last.expect("progress was reported");
    assert_eq!((last.done, last.total), (BIG, Some(BIG)));
    assert_eq!(
        entries(dir.path()),
        vec![
            "big-300m.snap".to_owned(),
            "big-300m.snap.manifest.json".to_owned()
        ]
    );

    let data = dir.path().join("big-300m.snap");
    // One flipped bit in the middle.
    let offset = 150 * MIB + 77;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&data)
        .unwrap();
    let mut byte = [0u8; 1];
    f.seek(SeekFrom::Start(offset)).unwrap();
    std::io::Read::read_exact(&mut f, &mut byte).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(&[byte[0] ^ 0x10]).unwrap();
    f.sync_all().unwrap();
    let err = read_back(&store, &stored).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Integrity, "flipped byte: {err}");
    assert!(matches!(err, Error::Integrity { .. }));
    assert!(err.to_string().contains("SHA-256"), "{err}");

    // Restored, then truncated by one byte.
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(&byte).unwrap();
    f.set_len(BIG - 1).unwrap();
    f.sync_all().unwrap();
    let err = read_back(&store, &stored).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Integrity, "truncated: {err}");
    assert!(err.to_string().contains("truncated"), "{err}");

    // Appended garbage is refused too.
    f.set_len(BIG + 1).unwrap();
    let err = read_back(&store, &stored).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Integrity, "extended: {err}");

    store.delete(&stored.href).await.unwrap();
    assert!(entries(dir.path()).is_empty());
    common::assert_not_found(&store, &stored.href).await;
}

#[tokio::test]
async fn snapshot_is_invisible_until_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalSnapshotStore::new(dir.path()).unwrap();
    let mut src = Generated::new(3 * MIB);
    let pending = common::put_pending(&store, "later", &mut src).await;
    let href = pending.snapshot().href.clone();
    assert_eq!(href, store.href_for("later"));
    common::assert_invisible(&store, &href).await;
    let names = entries(dir.path());
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(names[0].starts_with(".partial-"), "{names:?}");
    let stored = pending.commit().await.unwrap();
    assert_eq!(store.stat(&href).await.unwrap(), stored);
    assert_eq!(read_back(&store, &stored).await.unwrap().0, 3 * MIB);
}

#[tokio::test]
async fn dropped_pending_upload_is_cleaned_up() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalSnapshotStore::new(dir.path()).unwrap();
    let mut src = Generated::new(2 * MIB);
    let pending = common::put_pending(&store, "dropped", &mut src).await;
    let href = pending.snapshot().href.clone();
    drop(pending);
    assert!(entries(dir.path()).is_empty(), "{:?}", entries(dir.path()));
    common::assert_not_found(&store, &href).await;
}

#[tokio::test]
async fn cancelled_put_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalSnapshotStore::new(dir.path()).unwrap();
    // A source that yields 4 MiB, then never ends: the put is cancelled by dropping it.
    let mut src = tokio::io::AsyncReadExt::chain(Generated::new(4 * MIB), Pending);
    let progress = Progress::none();
    let put = store.put("cancelled", &mut src, &progress);
    let timed_out = tokio::time::timeout(std::time::Duration::from_millis(300), put).await;
    assert!(timed_out.is_err(), "the put was still streaming");
    assert!(entries(dir.path()).is_empty(), "{:?}", entries(dir.path()));
}

struct Pending;

impl AsyncRead for Pending {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        _buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Poll::Pending
    }
}

#[tokio::test]
async fn existing_snapshot_is_not_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalSnapshotStore::new(dir.path()).unwrap();
    // Two uploads of one name race: the first commit wins, the second is refused.
    let mut a = &b"first"[..];
    let pending_a = store.put("same", &mut a, &Progress::none()).await.unwrap();
    let mut b = &b"second"[..];
    let pending_b = store.put("same", &mut b, &Progress::none()).await.unwrap();
    let first = pending_a.commit().await.unwrap();
    let err = pending_b.commit().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    // A later upload of a taken name is refused up front.
    let mut c = &b"third"[..];
    let err = store
        .put("same", &mut c, &Progress::none())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert_eq!(read_back(&store, &first).await.unwrap().0, 5);
    assert_eq!(entries(dir.path()).len(), 2, "{:?}", entries(dir.path()));
}

#[tokio::test]
async fn expected_size_or_hash_mismatch_is_refused_before_reading() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalSnapshotStore::new(dir.path()).unwrap();
    let mut a = &b"payload"[..];
    let stored = store
        .put("exp", &mut a, &Progress::none())
        .await
        .unwrap()
        .commit()
        .await
        .unwrap();
    for expected in [
        Expected {
            size: Some(8),
            sha256: None,
        },
        Expected {
            size: None,
            sha256: Some("00".repeat(32)),
        },
    ] {
        let err = store.get(&stored.href, &expected).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Integrity, "{expected:?}: {err}");
    }
    // Uppercase hex from a document is the same hash.
    let upper = Expected {
        size: Some(7),
        sha256: Some(stored.sha256.to_uppercase()),
    };
    assert!(store.get(&stored.href, &upper).await.is_ok());
}

#[tokio::test]
async fn bad_names_and_foreign_hrefs_are_refused() {
    let parent = tempfile::tempdir().unwrap();
    let root = parent.path().join("store");
    let store = LocalSnapshotStore::new(&root).unwrap();
    let other = parent.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("x.snap"), b"not yours").unwrap();
    let root_s = store.root().display().to_string();
    let foreign = [
        "file:///etc/passwd".to_owned(),
        "file:///etc/passwd.snap".to_owned(),
        format!("file://{root_s}/../other/x.snap"),
        format!("file://{root_s}/./x.snap"),
        format!("file://{root_s}/sub/x.snap"),
        format!("file://{root_s}/../store/x.snap"),
        format!("file://{}/x.snap", other.display()),
        format!("file://{root_s}x/x.snap"),
        format!("file://{root_s}/x.snap.manifest.json"),
        format!("file://{root_s}/.partial-x.snap"),
        format!("file://{root_s}/x"),
        format!("http://example.invalid{root_s}/x.snap"),
        format!("{root_s}/x.snap"),
        format!("file://{root_s}/x.snap/"),
        String::new(),
    ];
    for href in &foreign {
        assert!(!store.owns(href), "{href:?} owned");
        assert_eq!(
            store.path_for(href).unwrap_err().kind(),
            ErrorKind::InvalidInput,
            "{href:?}"
        );
        common::assert_lookups_fail(&store, href, ErrorKind::InvalidInput).await;
        assert_eq!(
            store.delete(href).await.unwrap_err().kind(),
            ErrorKind::InvalidInput,
            "{href:?}"
        );
    }
    assert!(
        other.join("x.snap").exists(),
        "nothing outside the store was touched"
    );
    assert!(store.owns(&store.href_for("x")));

    for name in [
        "",
        "../x",
        "a/b",
        ".hidden",
        "-dash",
        "a b",
        "x\0y",
        &"n".repeat(129),
    ] {
        let mut src = &b"data"[..];
        let err = store
            .put(name, &mut src, &Progress::none())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{name:?}");
    }
    assert!(entries(&root).is_empty());
}

#[tokio::test]
async fn page_cache_store_publishes_without_fsync_and_still_verifies_reads() {
    use trove_guest_core::store::Durability;
    let dir = tempfile::tempdir().unwrap();
    let store = LocalSnapshotStore::new(dir.path())
        .unwrap()
        .with_durability(Durability::PageCache);
    let data: Vec<u8> = (0..3_000_000u32).map(|x| (x % 251) as u8).collect();
    let stored = store
        .put("transient", &mut data.as_slice(), &Progress::none())
        .await
        .unwrap()
        .commit()
        .await
        .unwrap();
    let (n, _) = drain(store.get(&stored.href, &Expected::default()).await.unwrap())
        .await
        .unwrap();
    assert_eq!(n, data.len() as u64);
    // Damage (what a crash before write-back could leave) is still refused.
    let path = store.path_for(&stored.href).unwrap();
    let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.seek(SeekFrom::Start(1_000_000)).unwrap();
    f.write_all(&[0u8; 4096]).unwrap();
    drop(f);
    let err = drain(store.get(&stored.href, &Expected::default()).await.unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
}

/// Waits (bounded) for an entry of `dir` starting with `prefix`.
async fn appears(dir: &std::path::Path, prefix: &str) -> String {
    for _ in 0..500 {
        if let Some(e) = entries(dir).into_iter().find(|e| e.starts_with(prefix)) {
            return e;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("no {prefix}* in {:?}", entries(dir));
}

#[tokio::test]
async fn sweep_removes_a_crashed_uploads_partial_and_spares_a_live_upload() {
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;

    let dir = tempfile::tempdir().unwrap();
    let store = LocalSnapshotStore::new(dir.path()).unwrap();
    // A live upload: its uploader holds the partial file's lock while it waits for more data.
    let (mut feed, mut source) = tokio::io::duplex(1024);
    let live = tokio::spawn({
        let store = store.clone();
        async move {
            let pending = store
                .put("live", &mut source, &Progress::none())
                .await
                .unwrap();
            pending.commit().await.unwrap()
        }
    });
    feed.write_all(b"first bytes of a live upload")
        .await
        .unwrap();
    let live_partial = appears(dir.path(), ".partial-live-").await;
    // What a crashed uploader leaves: a partial file nobody holds a lock on.
    let crashed = ".partial-gone-abcdefghijkl";
    std::fs::write(dir.path().join(crashed), b"half a snapshot").unwrap();

    assert_eq!(
        store
            .sweep_incomplete(Duration::from_secs(3600))
            .await
            .unwrap(),
        vec![crashed.to_owned()],
        "a partial whose lock is free is abandoned whatever its age"
    );
    assert!(
        entries(dir.path()).contains(&live_partial),
        "the live upload's partial is kept: {:?}",
        entries(dir.path())
    );

    // The live upload finishes and commits as if nothing happened; its snapshot is kept.
    feed.write_all(b", and the rest").await.unwrap();
    drop(feed);
    let stored = live.await.unwrap();
    assert_eq!(
        store.sweep_incomplete(Duration::ZERO).await.unwrap(),
        Vec::<String>::new()
    );
    let (size, _) = read_back(&store, &stored).await.unwrap();
    assert_eq!(size, stored.size);
    assert_eq!(
        entries(dir.path()),
        vec!["live.snap".to_owned(), "live.snap.manifest.json".to_owned()]
    );
}

#[tokio::test]
async fn sweep_removes_a_data_file_without_manifest_and_frees_its_name() {
    use std::time::Duration;

    let dir = tempfile::tempdir().unwrap();
    let store = LocalSnapshotStore::new(dir.path()).unwrap();
    for name in ["orphan", "kept"] {
        let mut data: &[u8] = b"a committed snapshot";
        let pending = store.put(name, &mut data, &Progress::none()).await.unwrap();
        pending.commit().await.unwrap();
    }
    // A commit that crashed after publishing the data, before writing the manifest.
    std::fs::remove_file(dir.path().join("orphan.snap.manifest.json")).unwrap();
    let mut again: &[u8] = b"a new snapshot";
    let err = store
        .put("orphan", &mut again, &Progress::none())
        .await
        .expect_err("the orphan blocks its name");
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");

    assert!(
        store
            .sweep_incomplete(Duration::from_secs(3600))
            .await
            .unwrap()
            .is_empty(),
        "too young to sweep"
    );
    assert_eq!(
        store.sweep_incomplete(Duration::ZERO).await.unwrap(),
        vec!["orphan.snap".to_owned()]
    );
    assert_eq!(
        entries(dir.path()),
        vec!["kept.snap".to_owned(), "kept.snap.manifest.json".to_owned()],
        "the complete snapshot is untouched"
    );

    let mut again: &[u8] = b"a new snapshot";
    let stored = store
        .put("orphan", &mut again, &Progress::none())
        .await
        .expect("the name is free again")
        .commit()
        .await
        .unwrap();
    assert_eq!(read_back(&store, &stored).await.unwrap().0, 14);
}
