//! Input generation: a seeded fast RNG per case, structured near-valid inputs built by each
//! target, and the byte-level mutations applied on top of them.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value, json};

/// The RNG of case `index` of `target` in a run seeded with `seed`: any case can be regenerated
/// alone, so a failure is reproduced from `(target, seed, index)`.
pub fn case_rng(target: &str, seed: u64, index: u64) -> SmallRng {
    let mut h = 0xcbf2_9ce4_8422_2325_u64;
    for b in target.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    SmallRng::seed_from_u64(splitmix(seed ^ h) ^ splitmix(index))
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Text that breaks parsers: extreme numbers, signs, separators, control and multi-byte
/// characters.
pub const TOKENS: &[&str] = &[
    "0",
    "-1",
    "-0",
    "+1",
    "18446744073709551615",
    "18446744073709551616",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "-9223372036854775808",
    "1e999",
    "0x10",
    "NaN",
    "\u{0}",
    "\u{7f}",
    "\u{feff}",
    "é",
    "\u{10ffff}",
    "𝔘",
    "\u{202e}",
    "\r\n",
    "\n",
    "\t",
    " ",
    ":",
    "-",
    ",",
    "/",
    "..",
    "../",
    "/etc/passwd",
    "%",
    "\\",
    "\"",
    "'",
    "{",
    "}",
    "[",
    "]",
    "=",
    "#",
    ";",
    "$",
    "*",
    "+",
    "FFFFFFFF/FFFFFFFF",
    "0/0",
    "1-2-3",
    "3E11FA47-71CA-11E1-9E33-C80AA9429562:1-5",
    "null",
    "true",
    "[]",
    "{}",
];

/// One random token of [`TOKENS`].
pub fn token(rng: &mut SmallRng) -> &'static str {
    TOKENS[rng.random_range(0..TOKENS.len())]
}

/// Pure random bytes: mostly short, sometimes long.
pub fn random_bytes(rng: &mut SmallRng) -> Vec<u8> {
    let len = match rng.random_range(0..10) {
        0..=6 => rng.random_range(0..64),
        7 | 8 => rng.random_range(0..1024),
        _ => rng.random_range(0..65536),
    };
    let mut v = vec![0u8; len];
    rng.fill(&mut v[..]);
    if rng.random_bool(0.5) {
        // Printable ASCII finds more of a text parser.
        for b in &mut v {
            *b = 0x20 + (*b % 0x5f);
        }
    }
    v
}

/// Applies 1 to 4 random mutations to `data`: byte flips, insertions of random bytes or
/// [`TOKENS`], deletions, truncation, duplication of a range (splicing the input with itself),
/// repetition (long inputs), and overwriting with a huge decimal length.
pub fn mutate(rng: &mut SmallRng, data: &mut Vec<u8>) {
    for _ in 0..rng.random_range(1..=4) {
        let len = data.len();
        let at = if len == 0 {
            0
        } else {
            rng.random_range(0..=len)
        };
        match rng.random_range(0..10) {
            0 if len > 0 => {
                let i = rng.random_range(0..len);
                data[i] ^= 1 << rng.random_range(0..8);
            }
            1 if len > 0 => {
                let i = rng.random_range(0..len);
                data[i] = rng.random();
            }
            2 => {
                let n = rng.random_range(1..8);
                let bytes: Vec<u8> = (0..n).map(|_| rng.random()).collect();
                data.splice(at..at, bytes);
            }
            3 => {
                let t = token(rng).as_bytes().to_vec();
                data.splice(at..at, t);
            }
            4 if len > 0 => {
                let end = (at + rng.random_range(1..=16)).min(len);
                data.drain(at.min(end)..end);
            }
            5 => data.truncate(at),
            6 if len > 0 => {
                let a = rng.random_range(0..len);
                let b = (a + rng.random_range(1..=64)).min(len);
                let piece = data[a..b].to_vec();
                data.splice(at..at, piece);
            }
            7 if len > 0 && len < 4096 => {
                let a = rng.random_range(0..len);
                let b = (a + rng.random_range(1..=8)).min(len);
                let piece = data[a..b].repeat(rng.random_range(2..2000));
                data.splice(b..b, piece);
            }
            8 => {
                let t = [
                    "4294967295",
                    "18446744073709551615",
                    "99999999999999999999999",
                    "-1",
                ][rng.random_range(0..4)];
                data.splice(at..at, t.bytes());
            }
            _ => {
                let i = if len == 0 {
                    0
                } else {
                    rng.random_range(0..len)
                };
                data.insert(
                    i.min(data.len()),
                    [0u8, 0xff, b'\n', b'\r'][rng.random_range(0..4)],
                );
            }
        }
    }
}

/// A short identifier-like string, sometimes hostile.
pub fn word(rng: &mut SmallRng) -> String {
    if rng.random_bool(0.1) {
        return token(rng).to_owned();
    }
    let n = rng.random_range(1..12);
    (0..n)
        .map(|_| {
            let c = rng.random_range(0..38u8);
            match c {
                0..=25 => (b'a' + c) as char,
                26..=35 => (b'0' + c - 26) as char,
                36 => '_',
                _ => '-',
            }
        })
        .collect()
}

/// A random JSON value, `depth` levels deep at most.
pub fn json_value(rng: &mut SmallRng, depth: u32) -> Value {
    match rng.random_range(0..if depth == 0 { 6 } else { 8 }) {
        0 => Value::Null,
        1 => Value::Bool(rng.random()),
        2 => json!(rng.random::<i64>()),
        3 => json!(rng.random_range(0..100_000u64)),
        4 => json!(rng.random::<f64>() * 1e6),
        5 => Value::String(if rng.random_bool(0.5) {
            word(rng)
        } else {
            token(rng).to_owned()
        }),
        6 => Value::Array(
            (0..rng.random_range(0..4))
                .map(|_| json_value(rng, depth - 1))
                .collect(),
        ),
        _ => {
            let mut m = Map::new();
            for _ in 0..rng.random_range(0..4) {
                m.insert(word(rng), json_value(rng, depth - 1));
            }
            Value::Object(m)
        }
    }
}

/// Changes one random place of a JSON document: a value replaced by another type, a key
/// removed, an unknown key added, a string replaced by a token.
pub fn mutate_json(rng: &mut SmallRng, v: &mut Value) {
    match v {
        Value::Object(m) if !m.is_empty() && rng.random_bool(0.7) => {
            let i = rng.random_range(0..m.len());
            let key = m.keys().nth(i).cloned().unwrap_or_default();
            match rng.random_range(0..4) {
                0 => {
                    m.remove(&key);
                }
                1 => {
                    m.insert(word(rng), json_value(rng, 2));
                }
                2 => {
                    m.insert(key, json_value(rng, 2));
                }
                _ => {
                    if let Some(inner) = m.get_mut(&key) {
                        mutate_json(rng, inner);
                    }
                }
            }
        }
        Value::Array(a) if !a.is_empty() && rng.random_bool(0.7) => {
            let i = rng.random_range(0..a.len());
            mutate_json(rng, &mut a[i]);
        }
        _ => *v = json_value(rng, 2),
    }
}

/// A nesting depth, log-uniform up to 65536 (most cases stay cheap; some are deep enough to
/// overflow a 2 MiB stack through naive recursion).
pub fn deep(rng: &mut SmallRng) -> usize {
    1 << rng.random_range(0..=16)
}

/// `[[[[...]]]]` or `{"a":{"a":...}}` nested `depth` times, possibly unclosed.
pub fn deep_nesting(rng: &mut SmallRng, depth: usize) -> Vec<u8> {
    let (open, close): (&[u8], &[u8]) = if rng.random_bool(0.5) {
        (b"[", b"]")
    } else {
        (b"{\"a\":", b"}")
    };
    let mut v = open.repeat(depth);
    v.extend_from_slice(b"1");
    if rng.random_bool(0.5) {
        v.extend_from_slice(&close.repeat(depth));
    }
    v
}

/// The input of a text target: `doc` mutated or not, sometimes replaced by random bytes or
/// deep nesting. Shared shape: 15 % random bytes, 5 % deep nesting, 20 % the near-valid input
/// unchanged, else mutated.
pub fn finish(rng: &mut SmallRng, mut doc: Vec<u8>) -> Vec<u8> {
    match rng.random_range(0..20) {
        0..=2 => random_bytes(rng),
        3 => {
            let depth = deep(rng);
            deep_nesting(rng, depth)
        }
        4..=7 => doc,
        _ => {
            mutate(rng, &mut doc);
            doc
        }
    }
}

/// Text of `bytes` as a parser of `&str` sees it (invalid UTF-8 replaced).
pub fn text(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}
