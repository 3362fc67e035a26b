//! Latency percentiles of one local write, end to end (sign, validate,
//! commit, projection), in a community of 1,000 members. Targets from the
//! foundation issue: p50 ≤ 0.5 ms, p99 ≤ 2 ms.
//!
//! Criterion reports a central figure; a write's tail matters as much, so
//! this target times each write on its own and prints p50, p90, p99, p99.9
//! and max. Run with `cargo bench -p karmyq-core --bench write_latency`.
//! Under `cargo test --benches` (no `--bench` flag) it only smoke-tests
//! with tiny sizes.

// Bench setup: a failure there is a broken bench, and a panic says so best.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

mod support;
use support::{at, large_community, measure, norm_version, profile_version, report};

fn main() {
    // `cargo bench` passes `--bench`; without it (`cargo test --benches`)
    // this is a smoke test.
    let full = std::env::args().any(|a| a == "--bench");
    let (members, warm_up, runs) = if full {
        (1_000, 200, 2_000)
    } else {
        (20, 2, 20)
    };

    let setup = Instant::now();
    let (_dir, mut founder, id) = large_community(members);
    let community = founder.community(id).expect("community");
    let norm_id = community
        .add_norm("Return what you borrow", "Within a week.", "lending", at(5))
        .expect("add norm");
    println!(
        "write_latency: {} members, set up in {:.1} s; {warm_up} warm-up writes, then {runs} timed, per kind",
        community.members().expect("members").len(),
        setup.elapsed().as_secs_f64()
    );

    // Each write alternates between two versions, so each really writes.
    let profiles = measure(warm_up, runs, |i| {
        community
            .set_profile(&profile_version(i % 2 == 0), at(1_000 + i as i64))
            .expect("set profile");
    });
    report("set_profile", &profiles, "p50 ≤ 0.5 ms, p99 ≤ 2 ms");
    let norms = measure(warm_up, runs, |i| {
        community
            .update_norm(&norm_version(&norm_id, i % 2 == 0), at(10_000 + i as i64))
            .expect("update norm");
    });
    report("update_norm", &norms, "p50 ≤ 0.5 ms, p99 ≤ 2 ms");
}
