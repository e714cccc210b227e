//! Every fuzz target for a CI-sized number of cases (20,000 each; `TROVE_GUEST_FUZZ_CASES`
//! changes it): a parser that panics, hangs or allocates without bound on any of them fails the
//! normal test run. The full runs (a million cases each) are `fuzz`'s job.

use std::time::Duration;

use trove_guest_fuzz::runner::{self, Limits, RunOptions, Trace};
use trove_guest_fuzz::targets::{self, TARGETS};

fn cases() -> u64 {
    std::env::var("TROVE_GUEST_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

#[test]
fn every_parser_survives_ci_sized_fuzzing() {
    assert!(
        !TARGETS.is_empty() && cases() > 0,
        "nothing would be fuzzed"
    );
    let mut failures = Vec::new();
    for target in TARGETS {
        let out = runner::run_target(
            target,
            RunOptions {
                seed: runner::DEFAULT_SEED,
                from: 0,
                count: cases(),
                // Unoptimised test builds are slower than the fuzz profile.
                limits: Limits {
                    hang: Duration::from_secs(30),
                    ..Limits::default()
                },
                trace: Trace::Off,
            },
            |_| {},
        );
        if let Some(f) = out.failure {
            failures.push(format!(
                "{} case {}: {} (reproduce: cargo run --profile fuzz -p trove-guest-fuzz -- --target {} --from {} --cases 1)",
                target.name, f.index, f.kind, target.name, f.index
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Targets whose inputs hold ciphertext from `SecureKey::encrypt`, which draws a random IV: a
/// failing input of theirs is reproduced from the file the harness saves, not from the seed.
const RANDOM_IV: [&str; 2] = ["oslo_envelope", "secure_serializer"];

#[test]
fn a_case_is_regenerated_from_target_seed_and_index() {
    for name in RANDOM_IV {
        assert!(
            TARGETS.iter().any(|t| t.name == name),
            "{name} is not a target: the exemption would hide nothing"
        );
    }
    for target in TARGETS.iter().filter(|t| !RANDOM_IV.contains(&t.name)) {
        for index in [0, 7, 19_999] {
            assert_eq!(
                targets::input(target, 42, index),
                targets::input(target, 42, index),
                "{}",
                target.name
            );
        }
    }
}

#[test]
fn target_names_are_unique() {
    let mut names: Vec<_> = TARGETS.iter().map(|t| t.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), TARGETS.len());
}
