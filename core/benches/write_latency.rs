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

use std::time::{Duration, Instant};

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{Automerge, ObjType, ROOT, ReadDoc};
use karmyq_core::{
    Bundle, CommunityId, DocId, Karmyq, Keypair, Norm, Op, OpBody, OpHash, Profile, Settings,
    SettingsPatch, SignedChange, SignedOp, Timestamp, Visibility, actor_of, auth_message,
};
use tempfile::TempDir;

// ----- setup (as in `foundation.rs`: bench targets are separate crates) ---

/// A fixed clock: `offset` milliseconds after 2027-01-15.
fn at(offset: i64) -> Timestamp {
    Timestamp::from_millis(1_800_000_000_000 + offset)
}

/// A deterministic key pair, so every run builds the same data.
fn key(n: u64) -> Keypair {
    let mut seed = [0x4b; 32];
    seed[..8].copy_from_slice(&n.to_le_bytes());
    Keypair::from_secret_bytes(&seed)
}

/// Signed `Join`s of a public community, one after another.
fn joins(id: CommunityId, mut heads: Vec<OpHash>, keys: &[Keypair], now: Timestamp) -> Bundle {
    let mut bundle = Bundle::new(id);
    for kp in keys {
        let op = Op {
            community: Some(id),
            parents: heads,
            author: kp.member_id(),
            created_at: now,
            body: OpBody::Join { invite: None },
        };
        let signed = SignedOp::sign(op, kp).expect("sign join");
        heads = vec![signed.hash()];
        bundle.ops.push(signed.encode());
    }
    bundle
}

/// A member's first profile, made as their device would.
fn first_profile(
    id: CommunityId,
    auth_heads: &[OpHash],
    kp: &Keypair,
    n: usize,
    now: Timestamp,
) -> SignedChange {
    let member = kp.member_id();
    let mut doc = Automerge::new();
    doc.set_actor(actor_of(&member));
    let mut tx = doc.transaction();
    let entry = tx
        .put_object(ROOT, member.to_string(), ObjType::Map)
        .expect("profile entry");
    tx.put(&entry, "name", format!("Member {n}")).expect("name");
    tx.put(&entry, "availability", "weekends")
        .expect("availability");
    let (hash, _) = tx.commit_with(
        CommitOptions::default()
            .with_message(auth_message(auth_heads))
            .with_time(now.as_millis()),
    );
    let mut change = doc
        .get_change_by_hash(&hash.expect("a change"))
        .expect("committed change");
    SignedChange::sign(id, &DocId::Profiles, &mut change, kp)
}

/// A community of `members` members besides its founder, each with a
/// profile, and ten norms; returns the founder's device.
fn large_community(members: usize) -> (TempDir, Karmyq, CommunityId) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut founder = Karmyq::open(dir.path()).expect("open device");
    let id = founder
        .create_community("Bench", "A large community", Visibility::Public, at(0))
        .expect("create community");
    let community = founder.community(id).expect("community");
    let limit = Settings {
        member_limit: 10_000,
        ..Settings::default()
    };
    community
        .update_settings(
            SettingsPatch {
                settings: Some(limit),
                ..SettingsPatch::default()
            },
            at(1),
        )
        .expect("raise member limit");
    let keys: Vec<Keypair> = (1..=members as u64).map(key).collect();
    let heads = community.authority().heads.clone();
    let report = founder
        .receive(&joins(id, heads, &keys, at(2)), at(2))
        .expect("joins");
    assert!(
        report.rejected.is_empty(),
        "joins refused: {:?}",
        report.reasons()
    );
    let heads = founder
        .community(id)
        .expect("community")
        .authority()
        .heads
        .clone();
    let mut profiles = Bundle::new(id);
    profiles.changes = keys
        .iter()
        .enumerate()
        .map(|(n, kp)| first_profile(id, &heads, kp, n, at(3)))
        .collect();
    let report = founder.receive(&profiles, at(3)).expect("profiles");
    assert!(
        report.rejected.is_empty(),
        "profiles refused: {:?}",
        report.reasons()
    );
    let community = founder.community(id).expect("community");
    for n in 0..10 {
        community
            .add_norm(&format!("Norm {n}"), "Be kind.", "conduct", at(4))
            .expect("add norm");
    }
    assert_eq!(community.members().expect("members").len(), members + 1);
    (dir, founder, id)
}

/// One of two profiles, so each write changes something.
fn profile_version(flip: bool) -> Profile {
    Profile {
        name: "Founder".into(),
        bio: if flip {
            "Here most evenings."
        } else {
            "Away this week."
        }
        .into(),
        location: Some("u4pru".into()),
        availability: "evenings".into(),
        skills: vec!["cooking".into(), "repairs".into()],
    }
}

/// The founder's norm, with one of two descriptions.
fn norm_version(id: &str, flip: bool) -> Norm {
    Norm {
        id: id.to_owned(),
        title: "Return what you borrow".into(),
        description: if flip {
            "Within a week."
        } else {
            "Within two weeks."
        }
        .into(),
        category: "lending".into(),
    }
}

// ----- measurement -------------------------------------------------------

/// Runs `write(i)` `warm_up` times untimed, then `runs` times timed one
/// by one; returns the durations, sorted.
fn measure(warm_up: usize, runs: usize, mut write: impl FnMut(usize)) -> Vec<Duration> {
    for i in 0..warm_up {
        write(i);
    }
    let mut times: Vec<Duration> = (warm_up..warm_up + runs)
        .map(|i| {
            let start = Instant::now();
            write(i);
            start.elapsed()
        })
        .collect();
    times.sort();
    times
}

/// The nearest-rank percentile of sorted durations, in microseconds.
fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1].as_secs_f64() * 1e6
}

fn report(name: &str, sorted: &[Duration]) {
    let [p50, p90, p99, p999] = [50.0, 90.0, 99.0, 99.9].map(|p| percentile(sorted, p));
    let max = percentile(sorted, 100.0);
    println!(
        "{name:<14} n={:<5} p50 {p50:>8.1} µs   p90 {p90:>8.1} µs   p99 {p99:>8.1} µs   p99.9 {p999:>8.1} µs   max {max:>8.1} µs",
        sorted.len()
    );
}

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
    report("set_profile", &profiles);
    let norms = measure(warm_up, runs, |i| {
        community
            .update_norm(&norm_version(&norm_id, i % 2 == 0), at(10_000 + i as i64))
            .expect("update norm");
    });
    report("update_norm", &norms);
}
