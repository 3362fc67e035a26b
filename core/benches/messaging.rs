//! Benchmarks of messaging (issue 5), against the targets:
//!
//! - `send_message` end to end (seal, commit, sign, validate, store with
//!   its projection) in a conversation of 10,000 messages: p50 ≤ 0.5 ms;
//! - opening the data directory cold (page cache warm) and reading the
//!   last page of 50 messages of that conversation: ≤ 20 ms.
//!
//! Run with `cargo bench -p karmyq-core --bench messaging`. Under
//! `cargo test --benches` (no `--bench` flag) the conversation holds 50
//! messages and each routine runs a few times: a smoke test only.

// Bench setup: a failure there is a broken bench, and a panic says so best.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::Criterion;
use karmyq_core::{ConversationId, Heads, Karmyq, Visibility};

mod support;
use support::{at, device, measure, report};

/// Whether criterion is benchmarking (`cargo bench`) rather than
/// smoke-testing (`cargo test --benches`).
fn full() -> bool {
    std::env::args().any(|a| a == "--bench")
}

const BODY: &str = "Thanks again for the ladder! I can bring it back on Saturday \
                    morning, around ten, if that suits you. Shall I leave it by the shed?";

fn main() {
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let messages: usize = if full() { 10_000 } else { 50 };

    // Alice founds a community, Bob joins; they converse.
    let (alice_dir, mut alice) = device();
    let (_bob_dir, mut bob) = device();
    let id = alice
        .create_community("Elm Street", "", Visibility::Public, at(0))
        .unwrap();
    let log = alice
        .community(id)
        .unwrap()
        .changes_since(&Heads::empty())
        .unwrap();
    bob.receive(&log, at(1)).unwrap();
    bob.community(id).unwrap().join(at(2)).unwrap();
    let back = bob
        .community(id)
        .unwrap()
        .changes_since(&alice.community(id).unwrap().heads().unwrap())
        .unwrap();
    alice.receive(&back, at(3)).unwrap();
    let bob_id = bob.member_id();
    let conv: ConversationId = alice
        .community(id)
        .unwrap()
        .open_conversation(bob_id, at(4))
        .unwrap();

    let t = Instant::now();
    for i in 0..messages {
        let sent = at(10_000 + i as i64 * 1_000);
        alice
            .community(id)
            .unwrap()
            .send_message(conv, BODY, sent)
            .unwrap();
    }
    println!(
        "messaging: a conversation of {messages} messages written in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let mut next = messages as i64;
    let mut clock = || {
        next += 1;
        at(10_000 + next * 1_000)
    };

    // Sending, end to end, into the large conversation.
    let runs = if full() { 2_000 } else { 5 };
    let community = alice.community(id).unwrap();
    let times = measure(runs / 10, runs, |_| {
        let now = clock();
        black_box(community.send_message(conv, BODY, now).unwrap());
    });
    report("send_message", &times, "p50 ≤ 0.5 ms");
    let mut group = c.benchmark_group("messaging");
    group.bench_function("send_message_in_10k_conversation", |b| {
        b.iter(|| {
            let now = clock();
            community.send_message(conv, BODY, now).unwrap()
        });
    });
    group.finish();
    let now = clock();
    community.compact().unwrap();

    // Cold open of the directory and the last page of 50.
    let path = alice_dir.path().to_owned();
    drop(alice);
    let open_and_read = || {
        let mut k = Karmyq::open(&path).unwrap();
        let page = k
            .community(id)
            .unwrap()
            .messages(conv, None, 50, now)
            .unwrap();
        assert_eq!(page.len(), 50);
        assert!(page.iter().all(|m| m.body.as_deref() == Ok(BODY)));
        k
    };
    let cold_runs = if full() { 50 } else { 2 };
    let times = measure(2, cold_runs, |_| {
        drop(black_box(open_and_read()));
    });
    report("open + last 50 messages", &times, "≤ 20 ms");
    let mut k = open_and_read();
    let community = k.community(id).unwrap();
    let times = measure(10, if full() { 500 } else { 3 }, |_| {
        black_box(community.messages(conv, None, 50, now).unwrap());
    });
    report("  last 50, warm", &times, "-");
    let page = community.messages(conv, None, 50, now).unwrap();
    let total = community
        .conversation(&conv, now)
        .unwrap()
        .map(|c| c.last_activity);
    assert_eq!(total, Some(page[49].sent_at));
    c.final_summary();
}
