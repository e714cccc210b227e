//! Redis parsers: RESP replies, the `PSYNC` exchange, RDB headers, replication positions and
//! the replica override file.

use rand::Rng;
use rand::rngs::SmallRng;
use trove_guest_redis::fuzzing;

use crate::inputs;

fn reply(rng: &mut SmallRng, depth: u32, out: &mut Vec<u8>) {
    match rng.random_range(0..if depth == 0 { 5 } else { 6 }) {
        0 => out.extend_from_slice(b"+OK\r\n"),
        1 => out.extend_from_slice(b"-ERR wrong number of arguments\r\n"),
        2 => out.extend_from_slice(format!(":{}\r\n", rng.random::<i64>()).as_bytes()),
        3 => {
            let w = inputs::word(rng);
            out.extend_from_slice(format!("${}\r\n{w}\r\n", w.len()).as_bytes());
        }
        4 => out.extend_from_slice(b"$-1\r\n"),
        _ => {
            let n = rng.random_range(0..4);
            out.extend_from_slice(format!("*{n}\r\n").as_bytes());
            for _ in 0..n {
                reply(rng, depth - 1, out);
            }
        }
    }
}

pub(crate) fn gen_resp(rng: &mut SmallRng) -> Vec<u8> {
    let mut s = Vec::new();
    match rng.random_range(0..10) {
        0 => {
            // Deep nesting: an array of an array of ...
            let depth = inputs::deep(rng);
            s = b"*1\r\n".repeat(depth);
            s.extend_from_slice(b":1\r\n");
        }
        1 => s.extend_from_slice(
            format!("${}\r\nabc\r\n", rng.random_range(0..(128u64 << 20))).as_bytes(),
        ),
        2 => s.extend_from_slice(
            format!("*{}\r\n:1\r\n", rng.random_range(0..(128u64 << 20))).as_bytes(),
        ),
        3 => {
            s.extend_from_slice(
                format!(
                    "\n\n+FULLRESYNC {} {}\r\n${}\r\nREDIS0011",
                    "a".repeat(40),
                    rng.random::<u32>(),
                    rng.random::<u32>()
                )
                .as_bytes(),
            );
        }
        _ => {
            for _ in 0..rng.random_range(1..4) {
                reply(rng, 3, &mut s);
            }
        }
    }
    inputs::finish(rng, s)
}

pub(crate) fn run_resp(data: &[u8]) {
    let s = futures::executor::block_on(fuzzing::resp_replies(data.to_vec(), 64));
    assert!(s.replies <= 64);
    let lines = futures::executor::block_on(fuzzing::psync_lines(data.to_vec(), 8));
    // As the PSYNC exchange reads its reply: `+FULLRESYNC <replid> <offset>`, then `$<len>`.
    for line in lines {
        let mut w = line.split(' ');
        if let (Some("+FULLRESYNC"), Some(id), Some(off)) = (w.next(), w.next(), w.next()) {
            let _ = fuzzing::position(&format!("{id}:{off}"));
        }
        let _ = line.strip_prefix('$').and_then(|n| n.parse::<u64>().ok());
    }
}

fn rdb_string(rng: &mut SmallRng, out: &mut Vec<u8>) {
    match rng.random_range(0..6) {
        0 => {
            out.push(0xC0);
            out.push(rng.random());
        }
        1 => {
            out.push(0xC1);
            out.extend_from_slice(&rng.random::<i16>().to_le_bytes());
        }
        2 => {
            out.push(0xC2);
            out.extend_from_slice(&rng.random::<i32>().to_le_bytes());
        }
        3 => {
            // LZF: one literal run then a back reference.
            let comp = [5u8, b'a', b'b', b'c', b'd', b'e', b'f', 0x20, 5];
            out.push(0xC3);
            out.push(comp.len() as u8);
            out.push(rng.random_range(0..20));
            out.extend_from_slice(&comp);
        }
        4 => {
            out.push(0x80);
            out.extend_from_slice(&rng.random::<u32>().to_be_bytes());
            out.extend_from_slice(b"xyz");
        }
        _ => {
            let w = inputs::word(rng);
            out.push(w.len() as u8 & 0x3F);
            out.extend_from_slice(&w.as_bytes()[..w.len() & 0x3F]);
        }
    }
}

pub(crate) fn gen_rdb(rng: &mut SmallRng) -> Vec<u8> {
    let mut s = Vec::new();
    match rng.random_range(0..4) {
        0 => {
            s.extend_from_slice(
                format!(
                    "replicaof 10.0.0.1 {}\nmasteruser {}\nmasterauth x\n",
                    inputs::token(rng),
                    inputs::word(rng)
                )
                .as_bytes(),
            );
        }
        1 => s.extend_from_slice(
            format!(
                "{}:{}",
                "0123456789abcdef0123456789abcdef01234567",
                inputs::token(rng)
            )
            .as_bytes(),
        ),
        _ => {
            s.extend_from_slice(format!("REDIS{:04}", rng.random_range(0..13u32)).as_bytes());
            for _ in 0..rng.random_range(0..5) {
                s.push(0xFA);
                rdb_string(rng, &mut s);
                rdb_string(rng, &mut s);
            }
            s.push(0xFE);
        }
    }
    inputs::finish(rng, s)
}

pub(crate) fn run_rdb(data: &[u8]) {
    let _ = fuzzing::rdb_header(data);
    let text = inputs::text(data);
    let _ = fuzzing::replica_override(&text);
    if let Ok((id, off)) = fuzzing::position(&text) {
        assert_eq!(id.len(), 40);
        let _ = off;
    }
}
