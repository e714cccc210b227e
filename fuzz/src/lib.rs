//! # trove-guest-fuzz
//!
//! Fuzzing of every parser of untrusted bytes in the workspace, on the stable toolchain: each
//! [target](targets::TARGETS) generates inputs from a seeded fast RNG (near-valid documents,
//! rows, chunks and archives, mutated by byte flips, truncation, splicing, huge lengths,
//! unicode and deep nesting, and pure random bytes), calls its parsers inside `catch_unwind` on
//! a thread with a tokio worker's stack, and counts a panic, a case running past the hang limit,
//! a case holding more than 256 MiB at once, or a crash of the worker process as a failure.
//! Every case is reproducible from `(target, seed, index)`.
//!
//! The `fuzz` binary runs them (`cargo run --profile fuzz -p trove-guest-fuzz -- --help`); the
//! crate's test runs each target for a CI-sized number of cases.

pub mod alloc;
pub mod inputs;
pub mod report;
pub mod runner;
pub mod targets;

#[global_allocator]
static GLOBAL: alloc::Counting = alloc::Counting;
