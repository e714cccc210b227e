//! Snapshot archives: xbstream chunks and tar members, checked as they stream.

use rand::Rng;
use rand::rngs::SmallRng;
use trove_guest_core::archive::xbstream::{ChunkEvent, ChunkParser};
use trove_guest_core::archive::{ArchiveFormat, Inspector};

use crate::inputs;

const PATHS: &[&str] = &[
    "ibdata1",
    "./ib_logfile0",
    "db/t1.ibd",
    "mysql/user.MAD",
    "xtrabackup_binlog_info",
    "mariadb_backup_binlog_info",
    "backup-my.cnf",
    "a/b/../c",
    "../escape",
    "/etc/passwd",
    ".",
    "",
    "a\0b",
    "dir/",
    "é/ü",
    "a//b",
    "./../x",
    "base/1/2",
    "pg_wal/000000010000000000000001",
];

fn path(rng: &mut SmallRng) -> Vec<u8> {
    if rng.random_bool(0.8) {
        PATHS[rng.random_range(0..PATHS.len())].as_bytes().to_vec()
    } else if rng.random_bool(0.5) {
        (0..rng.random_range(1..5))
            .map(|_| inputs::word(rng))
            .collect::<Vec<_>>()
            .join("/")
            .into_bytes()
    } else {
        "a/".repeat(rng.random_range(1..3000)).into_bytes()
    }
}

/// One xbstream chunk.
pub(crate) fn chunk(path: &[u8], kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut c = b"XBSTCK01".to_vec();
    c.push(0);
    c.push(kind);
    c.extend_from_slice(&(path.len() as u32).to_le_bytes());
    c.extend_from_slice(path);
    if kind == b'P' {
        c.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        c.extend_from_slice(&0u64.to_le_bytes());
        c.extend_from_slice(&0u32.to_le_bytes());
        c.extend_from_slice(payload);
    }
    c
}

/// A near-valid xbstream: payload and end chunks, sometimes an unknown type, a huge path or
/// payload length.
pub(crate) fn xbstream_stream(rng: &mut SmallRng, extra: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut s = Vec::new();
    for _ in 0..rng.random_range(0..6) {
        let p = path(rng);
        let mut payload = vec![0u8; rng.random_range(0..300)];
        rng.fill(&mut payload[..]);
        s.extend(chunk(&p, b'P', &payload));
        if rng.random_bool(0.5) {
            s.extend(chunk(&p, b'E', &[]));
        }
    }
    for (p, payload) in extra {
        s.extend(chunk(p, b'P', payload));
        s.extend(chunk(p, b'E', &[]));
    }
    match rng.random_range(0..10) {
        0 => {
            // A payload length far beyond the stream.
            let mut c = chunk(b"big", b'P', b"x");
            let at = 14 + 3;
            c[at..at + 8].copy_from_slice(&rng.random::<u64>().to_le_bytes());
            s.extend(c);
        }
        1 => {
            let mut c = chunk(b"p", b'E', &[]);
            c[10..14].copy_from_slice(&rng.random::<u32>().to_le_bytes());
            s.extend(c);
        }
        2 => s.extend(chunk(
            b"x",
            [b'S', b'p', 0, 0xff][rng.random_range(0..4)],
            b"",
        )),
        _ => {}
    }
    s
}

/// Feeds `data` in pieces whose sizes come from the data itself (deterministic per input).
fn pieces(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let step = 1 + data.first().map_or(0, |b| usize::from(*b) % 97);
    data.chunks(if data.len().is_multiple_of(3) {
        data.len().max(1)
    } else {
        step
    })
}

pub(crate) fn gen_xbstream(rng: &mut SmallRng) -> Vec<u8> {
    let s = xbstream_stream(rng, &[]);
    match rng.random_range(0..10) {
        0 => inputs::random_bytes(rng),
        1..=3 => s,
        _ => {
            let mut s = s;
            inputs::mutate(rng, &mut s);
            s
        }
    }
}

pub(crate) fn run_xbstream(data: &[u8]) {
    let mut insp = Inspector::new(ArchiveFormat::Xbstream, "fuzz");
    let mut parser = ChunkParser::new();
    let mut payload = 0u64;
    let mut refused = false;
    for p in pieces(data) {
        // As the pump does: nothing more is fed once the inspector refused the stream.
        refused = refused || insp.feed(p).is_err();
        let _ = parser.feed(p, |ev| {
            match ev {
                ChunkEvent::Chunk { path, .. } => assert!(path.len() <= 4096),
                ChunkEvent::Payload(b) => payload += b.len() as u64,
            }
            Ok(())
        });
    }
    let _ = insp.finish();
    let _ = insp.members();
    let _ = parser.at_boundary();
    assert!(payload <= data.len() as u64);
}

fn octal(out: &mut [u8], v: u64) {
    let s = format!("{:0w$o}\0", v, w = out.len() - 1);
    let b = s.as_bytes();
    let n = b.len().min(out.len());
    out[..n].copy_from_slice(&b[b.len() - n..]);
}

/// One tar header block (ustar), checksum set.
pub(crate) fn tar_header(
    name: &[u8],
    kind: u8,
    size: u64,
    link: &[u8],
    rng: &mut SmallRng,
) -> [u8; 512] {
    let mut h = [0u8; 512];
    let n = name.len().min(100);
    h[..n].copy_from_slice(&name[..n]);
    octal(&mut h[100..108], 0o644);
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    if rng.random_bool(0.05) {
        // GNU base-256 size.
        h[124] = 0x80;
        h[128..136].copy_from_slice(&size.to_be_bytes());
    } else {
        octal(&mut h[124..136], size);
    }
    octal(&mut h[136..148], 0);
    h[156] = kind;
    let l = link.len().min(100);
    h[157..157 + l].copy_from_slice(&link[..l]);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    if rng.random_bool(0.1) {
        let p = path(rng);
        let l = p.len().min(155);
        h[345..345 + l].copy_from_slice(&p[..l]);
    }
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    let c = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(c.as_bytes());
    h
}

fn member(out: &mut Vec<u8>, name: &[u8], kind: u8, data: &[u8], link: &[u8], rng: &mut SmallRng) {
    out.extend_from_slice(&tar_header(name, kind, data.len() as u64, link, rng));
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

pub(crate) fn gen_tar(rng: &mut SmallRng) -> Vec<u8> {
    let mut s = Vec::new();
    for _ in 0..rng.random_range(0..6) {
        let name = path(rng);
        match rng.random_range(0..9) {
            0 => member(&mut s, &name, b'5', b"", b"", rng),
            1 => {
                let target = path(rng);
                member(&mut s, &name, b'2', b"", &target, rng);
            }
            2 => {
                let target = path(rng);
                member(&mut s, &name, b'1', b"", &target, rng);
            }
            3 => {
                let long = path(rng).repeat(rng.random_range(1..80));
                member(&mut s, b"././@LongLink", b'L', &long, b"", rng);
                member(&mut s, b"x", b'0', b"data", b"", rng);
            }
            4 => {
                let p = String::from_utf8_lossy(&path(rng)).into_owned();
                let mut rec = String::new();
                for (k, v) in [
                    ("path", p.as_str()),
                    ("size", "12"),
                    ("linkpath", "../x"),
                    ("GNU.sparse.size", "1"),
                ] {
                    if rng.random_bool(0.5) {
                        let body = format!(" {k}={v}\n");
                        let mut len = body.len() + 1;
                        if format!("{len}{body}").len() != len {
                            len += 1;
                        }
                        rec.push_str(&format!("{len}{body}"));
                    }
                }
                let kind = if rng.random_bool(0.8) { b'x' } else { b'g' };
                member(&mut s, b"PaxHeader", kind, rec.as_bytes(), b"", rng);
                member(&mut s, &name, b'0', &[7u8; 12], b"", rng);
            }
            5 => member(
                &mut s,
                &name,
                [b'3', b'4', b'6', b'S', b'V', b'D', b'K'][rng.random_range(0..7)],
                b"",
                b"",
                rng,
            ),
            _ => {
                let mut data = vec![0u8; rng.random_range(0..1500)];
                rng.fill(&mut data[..]);
                member(&mut s, &name, b'0', &data, b"", rng);
            }
        }
    }
    if rng.random_bool(0.7) {
        s.extend_from_slice(&[0u8; 1024]);
    }
    match rng.random_range(0..10) {
        0 => inputs::random_bytes(rng),
        1..=3 => s,
        _ => {
            inputs::mutate(rng, &mut s);
            if rng.random_bool(0.7) {
                fix_checksums(&mut s);
            }
            s
        }
    }
}

/// Recomputes the checksum of every block that looks like a ustar header, so mutated header
/// fields reach the checks behind the checksum.
fn fix_checksums(s: &mut [u8]) {
    for h in s.chunks_exact_mut(512) {
        if &h[257..262] == b"ustar" {
            h[148..156].copy_from_slice(b"        ");
            let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
            h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        }
    }
}

pub(crate) fn run_tar(data: &[u8]) {
    let mut insp = Inspector::new(ArchiveFormat::Tar, "fuzz");
    for p in pieces(data) {
        // As the pump does: nothing more is fed once the inspector refused the stream.
        if insp.feed(p).is_err() {
            break;
        }
    }
    let _ = insp.finish();
    let _ = insp.members();
}
