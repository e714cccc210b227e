//! The member checks against archives made by the real tools and against doctored ones.

use std::path::Path;

use super::xbstream::{ChunkEvent, ChunkParser};
use super::{ArchiveFormat, Inspector};
use crate::error::Error;

// ---- archive builders (doctored archives the real tools refuse to write) ----

fn tar_header(name: &[u8], typeflag: u8, size: u64, link: &[u8]) -> Vec<u8> {
    let mut h = vec![0u8; 512];
    h[..name.len()].copy_from_slice(name);
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    h[136..148].copy_from_slice(b"00000000000\0");
    h[156] = typeflag;
    h[157..157 + link.len()].copy_from_slice(link);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h
}

fn tar_member(name: &str, typeflag: u8, data: &[u8], link: &str) -> Vec<u8> {
    let mut v = tar_header(
        name.as_bytes(),
        typeflag,
        data.len() as u64,
        link.as_bytes(),
    );
    v.extend_from_slice(data);
    v.resize(v.len().div_ceil(512) * 512, 0);
    v
}

fn file(name: &str, data: &[u8]) -> Vec<u8> {
    tar_member(name, b'0', data, "")
}

fn pax(typeflag: u8, records: &[(&str, &str)]) -> Vec<u8> {
    let mut data = Vec::new();
    for (k, v) in records {
        let body = format!(" {k}={v}\n");
        let mut len = body.len() + 1;
        while format!("{len}{body}").len() != len {
            len += 1;
        }
        data.extend_from_slice(format!("{len}{body}").as_bytes());
    }
    let t = if typeflag == b'g' {
        "GlobalHead"
    } else {
        "PaxHeaders/x"
    };
    tar_member(t, typeflag, &data, "")
}

fn end() -> Vec<u8> {
    vec![0u8; 1024]
}

fn tar_of(parts: &[Vec<u8>]) -> Vec<u8> {
    let mut v: Vec<u8> = parts.concat();
    v.extend(end());
    v
}

fn xb_chunk(path: &str, kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = b"XBSTCK01".to_vec();
    v.push(0);
    v.push(kind);
    v.extend_from_slice(&(path.len() as u32).to_le_bytes());
    v.extend_from_slice(path.as_bytes());
    if kind != b'E' {
        v.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        v.extend_from_slice(&0u64.to_le_bytes());
        v.extend_from_slice(&0u32.to_le_bytes());
        v.extend_from_slice(payload);
    }
    v
}

// ---- feeding ----

fn inspect(format: ArchiveFormat, data: &[u8], pieces: &[usize]) -> Result<(), Error> {
    let mut i = Inspector::new(format, "file:///store/s.snap");
    let mut at = 0;
    for &cut in pieces {
        let cut = cut.clamp(at, data.len());
        i.feed(&data[at..cut])?;
        at = cut;
    }
    i.feed(&data[at..])?;
    i.finish()
}

/// The verdict is the same whichever way the stream is cut into two pieces, or into pieces of
/// a few fixed sizes.
fn verdict_everywhere(format: ArchiveFormat, data: &[u8]) -> Result<(), String> {
    let whole = inspect(format, data, &[]).map_err(|e| e.to_string());
    for cut in 0..=data.len() {
        let split = inspect(format, data, &[cut]).map_err(|e| e.to_string());
        assert_eq!(split, whole, "cut at byte {cut}");
    }
    for step in [1usize, 3, 511, 513, 4096] {
        let cuts: Vec<usize> = (1..=data.len() / step).map(|k| k * step).collect();
        let stepped = inspect(format, data, &cuts).map_err(|e| e.to_string());
        assert_eq!(stepped, whole, "pieces of {step} bytes");
    }
    whole
}

#[track_caller]
fn refused(format: ArchiveFormat, data: &[u8], member: &str, why: &str) {
    let err = verdict_everywhere(format, data).expect_err("refused");
    assert!(
        err.contains("file:///store/s.snap"),
        "names the snapshot: {err}"
    );
    assert!(err.contains(member), "names the member {member:?}: {err}");
    assert!(err.contains(why), "says {why:?}: {err}");
}

// ---- tar: archives written by GNU tar pass ----

fn run(cmd: &mut std::process::Command) -> Vec<u8> {
    let out = cmd.output().expect("run tar (GNU tar must be installed)");
    assert!(
        out.status.success(),
        "{:?}: {}",
        cmd,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn sample_tree(root: &Path) {
    let long = "d".repeat(60);
    std::fs::create_dir_all(root.join("base/1").join(&long).join(&long)).unwrap();
    std::fs::write(root.join("PG_VERSION"), b"15\n").unwrap();
    std::fs::write(root.join("base/1/1259"), vec![7u8; 3000]).unwrap();
    std::fs::write(root.join("base/1").join(&long).join(&long).join("f"), b"x").unwrap();
    std::fs::write(root.join("empty"), b"").unwrap();
    std::os::unix::fs::symlink("../PG_VERSION", root.join("base/version")).unwrap();
    std::os::unix::fs::symlink("1/1259", root.join("base/rel")).unwrap();
    std::fs::hard_link(root.join("PG_VERSION"), root.join("hard")).unwrap();
}

#[test]
fn archives_written_by_gnu_tar_pass_at_any_chunk_boundaries() {
    let t = tempfile::tempdir().unwrap();
    sample_tree(t.path());
    for format in ["gnu", "pax", "ustar"] {
        let tar = run(std::process::Command::new("tar")
            .args(["-b1", "-cf", "-", "--format", format, "-C"])
            .arg(t.path())
            .arg("."));
        if format == "ustar" {
            // ustar cannot hold the long path; tar skips it with a warning.
        }
        verdict_everywhere(ArchiveFormat::Tar, &tar).unwrap_or_else(|e| panic!("{format}: {e}"));
        let mut i = Inspector::new(ArchiveFormat::Tar, "h");
        i.feed(&tar).unwrap();
        assert!(i.members() >= 9, "{format}: {} members", i.members());
    }
}

// ---- tar: doctored archives are refused ----

#[test]
fn tar_members_leaving_the_directory_are_refused() {
    let t = ArchiveFormat::Tar;
    refused(
        t,
        &tar_of(&[file("ok", b"1"), file("../x", b"evil")]),
        "../x",
        "`..`",
    );
    refused(t, &tar_of(&[file("/etc/x", b"evil")]), "/etc/x", "absolute");
    refused(
        t,
        &tar_of(&[file("a/../../x", b"evil")]),
        "a/../../x",
        "`..`",
    );
    refused(
        t,
        &tar_of(&[tar_member("", b'0', b"x", "")]),
        "",
        "empty name",
    );
    refused(
        t,
        &tar_of(&[tar_member("./", b'0', b"x", "")]),
        "./",
        "directory itself",
    );
}

#[test]
fn tar_symlinks_out_and_members_through_symlinks_are_refused() {
    let t = ArchiveFormat::Tar;
    refused(
        t,
        &tar_of(&[tar_member("l", b'2', b"", "/etc")]),
        "l",
        "absolute",
    );
    refused(
        t,
        &tar_of(&[tar_member("a/l", b'2', b"", "../..")]),
        "a/l",
        "leaves",
    );
    refused(
        t,
        &tar_of(&[tar_member("a/l", b'2', b"", "x/../..")]),
        "a/l",
        "climbs",
    );
    // A link that stays inside, then a file written through it.
    refused(
        t,
        &tar_of(&[
            tar_member("sub/", b'5', b"", ""),
            tar_member("l", b'2', b"", "sub"),
            file("l/pwned", b"x"),
        ]),
        "l/pwned",
        "symbolic link \"l\"",
    );
    // A hard link to a symlink is one, too.
    refused(
        t,
        &tar_of(&[
            tar_member("sub/", b'5', b"", ""),
            tar_member("l", b'2', b"", "sub"),
            tar_member("h", b'1', b"", "l"),
            file("h/pwned", b"x"),
        ]),
        "h/pwned",
        "symbolic link",
    );
    // A symlink replacing a directory that already holds members.
    refused(
        t,
        &tar_of(&[file("d/f", b"x"), tar_member("d", b'2', b"", ".")]),
        "d",
        "replacing a directory",
    );
    refused(
        t,
        &tar_of(&[tar_member("h", b'1', b"", "/etc/shadow")]),
        "h",
        "absolute",
    );
    refused(
        t,
        &tar_of(&[tar_member("h", b'1', b"", "../x")]),
        "h",
        "`..`",
    );
    // A symlink inside stays fine.
    verdict_everywhere(
        t,
        &tar_of(&[
            file("a/f", b"x"),
            tar_member("a/l", b'2', b"", "../a/f"),
            tar_member("h", b'1', b"", "a/f"),
        ]),
    )
    .unwrap();
}

#[test]
fn tar_devices_fifos_and_unknown_types_are_refused() {
    let t = ArchiveFormat::Tar;
    refused(
        t,
        &tar_of(&[tar_member("null", b'3', b"", "")]),
        "null",
        "device",
    );
    refused(
        t,
        &tar_of(&[tar_member("sda", b'4', b"", "")]),
        "sda",
        "device",
    );
    refused(t, &tar_of(&[tar_member("p", b'6', b"", "")]), "p", "FIFO");
    refused(
        t,
        &tar_of(&[tar_member("s", b'S', b"xx", "")]),
        "s",
        "unsupported",
    );
}

#[test]
fn hostile_long_names_and_pax_paths_are_refused() {
    let t = ArchiveFormat::Tar;
    // pax path overrides a harmless header name.
    let mut a = pax(b'x', &[("path", "../../etc/cron.d/x")]);
    a.extend(file("harmless", b"x"));
    refused(t, &tar_of(&[a]), "../../etc/cron.d/x", "`..`");
    let mut a = pax(b'x', &[("linkpath", "/etc")]);
    a.extend(tar_member("l", b'2', b"", "ok"));
    refused(t, &tar_of(&[a]), "l", "absolute");
    // GNU long name.
    let long = "../".repeat(40) + "x";
    let mut a = tar_member("././@LongLink", b'L', format!("{long}\0").as_bytes(), "");
    a.extend(file("harmless", b"x"));
    refused(t, &tar_of(&[a]), &long, "`..`");
    let mut a = tar_member("././@LongLink", b'K', b"/etc/passwd\0", "");
    a.extend(tar_member("l", b'2', b"", "ok"));
    refused(t, &tar_of(&[a]), "l", "absolute");
    // A global header may not rename members.
    refused(t, &tar_of(&[pax(b'g', &[("path", "x")])]), "global pax", "");
    // A pax size makes the next member's data longer: what follows is data, not a header.
    let mut a = pax(b'x', &[("size", "1024")]);
    a.extend(tar_header(b"f", b'0', 0, b""));
    a.extend(tar_header(b"../not-a-header", b'0', 0, b""));
    a.extend(vec![0u8; 512]);
    verdict_everywhere(t, &tar_of(&[a])).unwrap();
}

#[test]
fn tar_damage_and_trailing_members_are_refused() {
    let t = ArchiveFormat::Tar;
    let mut bad = file("f", b"x");
    bad[0] = b'g';
    refused(t, &tar_of(&[bad]), "g", "checksum");
    // A member hidden after the end-of-archive block.
    let mut a = tar_of(&[file("f", b"x")]);
    a.extend(file("../x", b"x"));
    refused(t, &a, "", "after the end-of-archive");
    // Ends inside a member.
    let a = file("f", &[1u8; 600]);
    refused(t, &a[..700], "", "ends inside");
}

// ---- xbstream ----

#[test]
fn xbstreams_written_by_mbstream_pass_at_any_chunk_boundaries() {
    let t = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(t.path().join("db")).unwrap();
    std::fs::write(t.path().join("ibdata1"), vec![3u8; 70_000]).unwrap();
    std::fs::write(t.path().join("db/t1.ibd"), vec![5u8; 2000]).unwrap();
    std::fs::write(t.path().join("backup-my.cnf"), b"[mysqld]\n").unwrap();
    let xb = run(std::process::Command::new("mbstream")
        .current_dir(t.path())
        .args(["-c", "ibdata1", "db/t1.ibd", "backup-my.cnf"]));
    let whole = inspect(ArchiveFormat::Xbstream, &xb, &[]);
    whole.unwrap();
    for cut in (0..=xb.len()).step_by(97).chain(0..200) {
        inspect(ArchiveFormat::Xbstream, &xb, &[cut]).unwrap();
    }
    for step in [1usize, 13, 14, 4096] {
        let cuts: Vec<usize> = (1..=xb.len() / step).map(|k| k * step).collect();
        inspect(ArchiveFormat::Xbstream, &xb, &cuts).unwrap();
    }
    let mut i = Inspector::new(ArchiveFormat::Xbstream, "h");
    i.feed(&xb).unwrap();
    assert_eq!(i.members(), 3);
}

#[test]
fn xbstream_chunks_leaving_the_directory_are_refused() {
    let x = ArchiveFormat::Xbstream;
    let ok = xb_chunk("ibdata1", b'P', b"abc");
    refused(
        x,
        &[ok.clone(), xb_chunk("../x", b'P', b"evil")].concat(),
        "../x",
        "`..`",
    );
    refused(x, &xb_chunk("/etc/x", b'P', b"evil"), "/etc/x", "absolute");
    refused(x, &xb_chunk("", b'P', b"evil"), "", "empty");
    refused(x, &xb_chunk("a\0b", b'P', b"evil"), "a\\0b", "NUL");
    refused(x, &xb_chunk("../x", b'E', b""), "../x", "`..`");
    refused(
        x,
        &[ok.clone(), xb_chunk("l", b'S', b"x")].concat(),
        "",
        "unknown xbstream chunk type",
    );
    refused(x, b"XBSTCK02 not a stream", "", "bad chunk magic");
    refused(x, &ok[..ok.len() - 1], "", "ends inside");
}

#[test]
fn the_chunk_parser_reports_headers_and_payload_in_stream_order() {
    let s = [
        xb_chunk("a", b'P', b"hello"),
        xb_chunk("a", b'E', b""),
        xb_chunk("b", b'P', b""),
    ]
    .concat();
    for step in [1usize, 5, 1000] {
        let mut p = ChunkParser::new();
        let mut seen = Vec::new();
        for piece in s.chunks(step) {
            p.feed(piece, |ev| {
                match ev {
                    ChunkEvent::Chunk {
                        path, payload_len, ..
                    } => {
                        seen.push(format!("{}:{payload_len}", String::from_utf8_lossy(path)));
                    }
                    ChunkEvent::Payload(d) => seen.push(String::from_utf8_lossy(d).into_owned()),
                }
                Ok(())
            })
            .unwrap();
        }
        assert!(p.at_boundary());
        let joined = seen.join(" ");
        // Payload pieces may be split; join them back.
        assert_eq!(
            joined.replace(' ', ""),
            "a:5helloa:0b:0",
            "step {step}: {joined}"
        );
    }
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// However a doctored archive is cut, the member is refused, and a clean one passes.
        #[test]
        fn verdicts_do_not_depend_on_chunk_boundaries(
            cuts in proptest::collection::vec(0usize..6000, 0..12),
            evil in prop_oneof![Just("../x"), Just("/x"), Just("a/../../x")],
        ) {
            let mut cuts = cuts;
            cuts.sort_unstable();
            let clean = tar_of(&[file("a", &[1u8; 1500]), file("b/c", b"x")]);
            prop_assert!(inspect(ArchiveFormat::Tar, &clean, &cuts).is_ok());
            let mut p = pax(b'x', &[("path", evil)]);
            p.extend(file("harmless", b"x"));
            let dirty = tar_of(&[file("a", &[1u8; 1500]), p]);
            prop_assert!(inspect(ArchiveFormat::Tar, &dirty, &cuts).is_err());
            let xb = [xb_chunk("a", b'P', &[1u8; 3000]), xb_chunk(evil, b'P', b"x")].concat();
            prop_assert!(inspect(ArchiveFormat::Xbstream, &xb, &cuts).is_err());
            prop_assert!(inspect(ArchiveFormat::Xbstream, &xb[..3000 + 35], &cuts).is_ok());
        }
    }
}

// ---- the pump: nothing of a refused member reaches the extractor ----

fn tar_x(dir: &Path) -> crate::RunningTool {
    crate::ToolCommand::new("tar")
        .args(["-x", "-f", "-", "--no-same-owner", "-C"])
        .arg(dir)
        .stdin_piped()
        .spawn()
        .expect("spawn tar")
}

#[tokio::test]
async fn the_pump_extracts_a_clean_archive_and_stops_before_a_refused_member() {
    use super::pump;
    use crate::Progress;

    let t = tempfile::tempdir().unwrap();
    let clean = tar_of(&[file("a", b"first"), file("sub/b", &[2u8; 5000])]);
    let n = pump(
        "file:///store/clean.snap",
        &mut clean.as_slice(),
        Some(clean.len() as u64),
        tar_x(t.path()),
        &mut Inspector::new(ArchiveFormat::Tar, "file:///store/clean.snap"),
        &Progress::none(),
    )
    .await
    .unwrap();
    assert_eq!(n, clean.len() as u64);
    assert_eq!(
        std::fs::read(t.path().join("sub/b")).unwrap(),
        vec![2u8; 5000]
    );

    // A FIFO tar would happily make, after a file in the same chunk.
    let t = tempfile::tempdir().unwrap();
    let dirty = tar_of(&[file("a", b"first"), tar_member("p", b'6', b"", "")]);
    let err = pump(
        "file:///store/dirty.snap",
        &mut dirty.as_slice(),
        None,
        tar_x(t.path()),
        &mut Inspector::new(ArchiveFormat::Tar, "file:///store/dirty.snap"),
        &Progress::none(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::Integrity { .. }), "{err}");
    assert!(err.to_string().contains("FIFO"), "{err}");
    assert!(
        std::fs::symlink_metadata(t.path().join("p")).is_err(),
        "the refused member was never extracted"
    );
}

#[test]
fn own_tree_gives_every_entry_to_the_owner_and_never_follows_links() {
    use std::os::unix::fs::MetadataExt;
    if crate::OsUser::current().uid != 0 {
        panic!("this test changes owners: run it as root (the team's test machines do)");
    }
    let outside = tempfile::NamedTempFile::new().unwrap();
    let t = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(t.path().join("a/b")).unwrap();
    std::fs::write(t.path().join("a/b/f"), b"x").unwrap();
    std::os::unix::fs::symlink(outside.path(), t.path().join("a/out")).unwrap();
    let owner = crate::OsUser {
        uid: 65534,
        gid: 65534,
    };
    let changed = super::own_tree(t.path(), owner).unwrap();
    assert_eq!(changed, 5, "root, a, a/b, a/b/f, a/out");
    for p in ["", "a", "a/b", "a/b/f", "a/out"] {
        let m = std::fs::symlink_metadata(t.path().join(p)).unwrap();
        assert_eq!((m.uid(), m.gid()), (65534, 65534), "{p}");
    }
    let m = std::fs::metadata(outside.path()).unwrap();
    assert_eq!(m.uid(), 0, "the link's target outside was not touched");
    assert_eq!(
        super::own_tree(t.path(), owner).unwrap(),
        0,
        "nothing left to change"
    );
}
