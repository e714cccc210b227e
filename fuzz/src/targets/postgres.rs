//! PostgreSQL parsers: the LSN columns of `pg_stat_*` rows, timeline history files, WAL file
//! names and `pg_basebackup`'s report of a backup's WAL range.

use rand::Rng;
use rand::rngs::SmallRng;
use trove_guest_core::Lsn;
use trove_guest_postgres::fuzzing;

use crate::inputs;

fn lsn(rng: &mut SmallRng) -> String {
    match rng.random_range(0..4) {
        0 => format!("{:X}/{:X}", rng.random::<u32>(), rng.random::<u32>()),
        1 => inputs::token(rng).to_owned(),
        _ => format!(
            "{:X}/{:X}",
            rng.random_range(0..4u32),
            rng.random_range(0..1u32 << 28)
        ),
    }
}

pub(crate) fn gen_stat_row(rng: &mut SmallRng) -> Vec<u8> {
    let mut s = String::new();
    for _ in 0..rng.random_range(1..5) {
        match rng.random_range(0..4) {
            0 => s.push_str("\\N"),
            1 => s.push_str(&format!(
                "{:08X}{:08X}{:08X}",
                rng.random_range(0..3u32),
                0,
                rng.random_range(0..300u32)
            )),
            _ => s.push_str(&lsn(rng)),
        }
        s.push('\n');
    }
    inputs::finish(rng, s.into_bytes())
}

/// One column value a line (`\N` is NULL): each read as an LSN column and as a WAL file name.
pub(crate) fn run_stat_row(data: &[u8]) {
    for line in inputs::text(data).split('\n') {
        let col = (line != "\\N").then(|| line.to_owned());
        if let Ok(Some(l)) = fuzzing::stat_lsn(col) {
            assert_eq!(l.to_string().parse::<Lsn>().ok(), Some(l));
        }
        let _ = fuzzing::walfile_timeline(line);
    }
}

pub(crate) fn gen_history(rng: &mut SmallRng) -> Vec<u8> {
    let mut s = String::new();
    if rng.random_bool(0.5) {
        // pg_basebackup -v output.
        s.push_str(&format!(
            "pg_basebackup: initiating base backup\npg_basebackup: write-ahead log start point: {} on timeline {}\n",
            lsn(rng),
            rng.random_range(0..5u32)
        ));
        if rng.random_bool(0.7) {
            s.push_str(&format!(
                "pg_basebackup: write-ahead log end point: {}\n",
                lsn(rng)
            ));
        }
    } else {
        for t in 1..rng.random_range(1..6u32) {
            match rng.random_range(0..6) {
                0 => s.push_str("# comment\n\n"),
                _ => s.push_str(&format!(
                    "{t}\t{}\tno recovery target specified\n",
                    lsn(rng)
                )),
            }
        }
    }
    inputs::finish(rng, s.into_bytes())
}

pub(crate) fn run_history(data: &[u8]) {
    let text = inputs::text(data);
    let _ = fuzzing::backup_range(&text);
    let h = data
        .iter()
        .fold(0u64, |a, b| a.wrapping_mul(31).wrapping_add(u64::from(*b)));
    let _ = fuzzing::timeline_history(
        &text,
        (h % 7) as u32,
        Lsn(h),
        (h >> 8) as u32 % 7,
        Lsn(h >> 3),
    );
}
