//! The machine a benchmark ran on: cores, memory, and a quick disk write test.

use std::io::Write as _;
use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use trove_guest_core::Result;
use trove_guest_core::error::IoResultExt;

/// Cores, memory and disk figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    /// Online CPUs (`nproc`).
    pub cores: usize,
    /// The CPU model, from `/proc/cpuinfo`.
    pub cpu_model: String,
    /// `MemTotal` in MiB.
    pub memory_mib: u64,
    /// `MemAvailable` in MiB when the benchmark started.
    pub memory_available_mib: u64,
    /// Sequential write with one `fdatasync` at the end, MB/s (10^6 bytes).
    pub disk_write_mb_s: f64,
    /// Bytes written by the disk test.
    pub disk_test_bytes: u64,
    /// The kernel (`/proc/sys/kernel/osrelease`).
    pub kernel: String,
}

fn meminfo(key: &str) -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| l.strip_prefix(key)).and_then(|v| {
                v.trim_start_matches(':')
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
        })
        .unwrap_or(0)
        / 1024
}

/// Writes `bytes` in 1 MiB blocks into a new file in `dir`, `fdatasync`s it and returns MB/s.
///
/// # Errors
///
/// [`trove_guest_core::Error::Io`] when the file cannot be written.
pub fn disk_write_test(dir: &Path, bytes: u64) -> Result<f64> {
    let path = dir.join("disk-test.bin");
    let block: Vec<u8> = (0..1usize << 20).map(|i| (i * 31 % 251) as u8).collect();
    let started = Instant::now();
    {
        let mut f =
            std::fs::File::create(&path).context(|| format!("create {}", path.display()))?;
        let mut left = bytes;
        while left > 0 {
            let n = left.min(block.len() as u64) as usize;
            f.write_all(&block[..n])
                .context(|| format!("write {}", path.display()))?;
            left -= n as u64;
        }
        f.sync_data()
            .context(|| format!("fdatasync {}", path.display()))?;
    }
    let secs = started.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&path);
    Ok(bytes as f64 / 1e6 / secs.max(1e-9))
}

impl Machine {
    /// Reads the machine's figures and runs the disk test (`disk_bytes` into `dir`).
    ///
    /// # Errors
    ///
    /// [`trove_guest_core::Error::Io`] when the disk test fails.
    pub fn probe(dir: &Path, disk_bytes: u64) -> Result<Self> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("model name"))
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default();
        Ok(Machine {
            cores,
            cpu_model,
            memory_mib: meminfo("MemTotal"),
            memory_available_mib: meminfo("MemAvailable"),
            disk_write_mb_s: disk_write_test(dir, disk_bytes)?,
            disk_test_bytes: disk_bytes,
            kernel,
        })
    }
}
