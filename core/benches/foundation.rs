//! Benchmarks of the foundation's hot paths, against the targets:
//!
//! - `apply_10k_changes`: a fresh device applies a bundle of 10,000 profile
//!   and norm changes from ~50 members (target ≥ 20,000 changes/s);
//! - `local_write_1000_members`: one local write, end to end, in a
//!   community of 1,000 members (targets p50 ≤ 0.5 ms, p99 ≤ 2 ms; the
//!   percentiles come from the `write_latency` bench);
//! - `resolve_1000_ops`: resolving an authority log of 1,000 ops
//!   (target ≤ 5 ms).
//!
//! Run with `cargo bench -p karmyq-core --bench foundation`. Under
//! `cargo test --benches` (no `--bench` flag) every size shrinks so the
//! routines are only smoke-tested.

// Bench setup: a failure there is a broken bench, and a panic says so best.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use karmyq_core::{
    AuthorityLog, Bundle, Heads, InviteKey, InviteProof, Karmyq, Keypair, Norm, Op, OpBody, OpHash,
    Profile, Role, Settings, SettingsPatch, SignedOp, Timestamp, Visibility,
};

mod support;
use support::{at, device, joins, key, large_community, norm_version, profile_version};

/// Whether criterion is benchmarking (`cargo bench`) rather than
/// smoke-testing (`cargo test --benches`): picks full or tiny sizes.
fn size(full: usize, quick: usize) -> usize {
    if std::env::args().any(|a| a == "--bench") {
        full
    } else {
        quick
    }
}

// ----- apply_10k_changes -------------------------------------------------

/// Profile revision `k` of member `n`: the bio always differs.
fn profile_revision(n: usize, k: usize) -> Profile {
    let mut skills = vec!["gardening".to_owned()];
    if k % 2 == 1 {
        skills.push("tutoring".into());
    }
    Profile {
        name: format!("Member {n}"),
        bio: format!("Revision {k} of member {n}'s bio."),
        location: Some("u4pru".into()),
        availability: "weekday mornings".into(),
        skills,
    }
}

/// A community whose founder holds `changes` changes: 10% norm edits by the
/// founder, the rest profile updates made on `members` members' own devices.
/// Returns everything the founder holds, as a bundle for a new device.
fn busy_community(members: usize, changes: usize) -> Bundle {
    let (_dir, mut founder) = device();
    let id = founder
        .create_community("Busy", "Many edits", Visibility::Public, at(0))
        .expect("create community");
    let keys: Vec<Keypair> = (1..=members as u64).map(key).collect();
    let heads = founder
        .community(id)
        .expect("community")
        .authority()
        .heads
        .clone();
    founder
        .receive(&joins(id, heads, &keys, at(1)), at(1))
        .expect("joins");
    let base = founder
        .community(id)
        .expect("community")
        .changes_since(&Heads::empty())
        .expect("base bundle");

    let norm_edits = changes / 10;
    let profile_edits = changes - norm_edits;
    let mut clock = 10;
    for (n, kp) in keys.iter().enumerate() {
        // Each member's own device: same identity, its own directory.
        let dir = tempfile::tempdir().expect("temp dir");
        let mut phone = Karmyq::restore(dir.path(), &kp.export_secret()).expect("member device");
        phone.receive(&base, at(clock)).expect("base");
        let community = phone.community(id).expect("community");
        let edits = profile_edits / members + usize::from(n < profile_edits % members);
        for k in 0..edits {
            clock += 1;
            community
                .set_profile(&profile_revision(n, k), at(clock))
                .expect("set profile");
        }
        let theirs = community.changes_since(&Heads::empty()).expect("bundle");
        founder.receive(&theirs, at(clock)).expect("member changes");
    }

    let community = founder.community(id).expect("community");
    let ids: Vec<String> = (0..20.min(norm_edits))
        .map(|n| {
            clock += 1;
            community
                .add_norm(&format!("Norm {n}"), "First draft.", "conduct", at(clock))
                .expect("add norm")
        })
        .collect();
    for k in ids.len()..norm_edits {
        clock += 1;
        let norm = Norm {
            id: ids[k % ids.len()].clone(),
            title: format!("Norm {}", k % ids.len()),
            description: format!("Draft {k}."),
            category: "conduct".into(),
        };
        community
            .update_norm(&norm, at(clock))
            .expect("update norm");
    }
    let bundle = community.changes_since(&Heads::empty()).expect("bundle");
    assert_eq!(
        bundle.changes.len(),
        changes,
        "setup made the wrong number of changes"
    );
    bundle
}

fn apply_10k_changes(c: &mut Criterion) {
    let changes = size(10_000, 100);
    let bundle = busy_community(size(50, 5), changes);
    // Once outside timing: the bundle must apply cleanly, or we would time
    // refusals.
    let (_dir, mut check) = device();
    let report = check.receive(&bundle, at(1_000_000)).expect("receive");
    assert!(
        report.rejected.is_empty() && report.pending.is_empty(),
        "bundle does not apply cleanly: {:?}",
        report.reasons()
    );

    let mut group = c.benchmark_group("foundation");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .measurement_time(Duration::from_secs(15))
        .throughput(Throughput::Elements(changes as u64));
    group.bench_function("apply_10k_changes", |b| {
        b.iter_batched(
            device,
            |(dir, mut karmyq)| {
                let report = karmyq.receive(&bundle, at(1_000_000)).expect("receive");
                // Returned so that dropping them (files, memory) is not timed.
                (dir, karmyq, report)
            },
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

// ----- local_write_1000_members ------------------------------------------

fn local_write_1000_members(c: &mut Criterion) {
    let (_dir, mut founder, id) = large_community(size(1_000, 20));
    let community = founder.community(id).expect("community");
    let norm_id = community
        .add_norm("Return what you borrow", "Within a week.", "lending", at(5))
        .expect("add norm");
    let mut clock = 1_000;

    let mut group = c.benchmark_group("local_write_1000_members");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(4));
    group.bench_function("set_profile", |b| {
        let mut flip = false;
        b.iter(|| {
            flip = !flip;
            clock += 1;
            community
                .set_profile(&profile_version(flip), at(clock))
                .expect("set profile");
        });
    });
    group.bench_function("update_norm", |b| {
        let mut flip = false;
        b.iter(|| {
            flip = !flip;
            clock += 1;
            community
                .update_norm(&norm_version(&norm_id, flip), at(clock))
                .expect("update norm");
        });
    });
    group.finish();
}

// ----- resolve_1000_ops --------------------------------------------------

/// xorshift64*: a tiny seeded generator, so the log is the same every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn percent(&mut self, p: u64) -> bool {
        self.next() % 100 < p
    }
}

/// Someone the simulated writers know of, with the role they believe.
struct Person {
    keys: Keypair,
    role: Option<Role>,
}

/// An authority log of `n` ops: joins (public and by invite), admissions,
/// role changes, removals, leaves, invites and settings updates, each
/// written by someone the writers believe may. A quarter of the ops are
/// made on heads a few ops old (a device that lags), so branches run
/// concurrently; some of those ops resolve as refused, as in real life.
fn authority_log(n: usize) -> AuthorityLog {
    const SEED: u64 = 0x6b61_726d_7971;
    let mut rng = Rng(SEED);
    let mut people = vec![Person {
        keys: key(0),
        role: Some(Role::Admin),
    }];
    let genesis = SignedOp::sign(
        Op {
            community: None,
            parents: Vec::new(),
            author: people[0].keys.member_id(),
            created_at: at(0),
            body: OpBody::Genesis {
                name: "Resolve".into(),
                description: String::new(),
                visibility: Visibility::Public,
                settings: Settings::default(),
                nonce: [7; 16],
            },
        },
        &people[0].keys,
    )
    .expect("genesis");
    let mut log = AuthorityLog::new(genesis).expect("log");
    let id = log.community_id();
    let mut lagging: VecDeque<Vec<OpHash>> = VecDeque::new();
    // Live invites: their key pair and the uses left.
    let mut invites: Vec<(Keypair, u32)> = Vec::new();
    let mut next_key = 1_000_000;
    let mut fresh = || {
        next_key += 1;
        key(next_key)
    };
    // Someone (by index) whose believed role is at least `min`.
    let pick = |rng: &mut Rng, people: &[Person], min: Role| -> Option<usize> {
        let fit: Vec<usize> = (0..people.len())
            .filter(|&i| people[i].role.is_some_and(|r| r >= min))
            .collect();
        (!fit.is_empty()).then(|| fit[rng.below(fit.len())])
    };
    // A member (not the founder) whose believed role is exactly `role`.
    let pick_exact = |rng: &mut Rng, people: &[Person], role: Role| -> Option<usize> {
        let fit: Vec<usize> = (1..people.len())
            .filter(|&i| people[i].role == Some(role))
            .collect();
        (!fit.is_empty()).then(|| fit[rng.below(fit.len())])
    };

    let mut t = 0;
    while log.len() < n {
        t += 60_000;
        let now = at(t);
        // (author index, body), or None when this roll has no one to act.
        let action: Option<(usize, OpBody)> = if log.len() == 1 {
            let settings = Settings {
                member_limit: 5_000,
                ..Settings::default()
            };
            Some((
                0,
                OpBody::UpdateSettings(SettingsPatch {
                    settings: Some(settings),
                    ..SettingsPatch::default()
                }),
            ))
        } else {
            match rng.below(100) {
                0..=39 => {
                    people.push(Person {
                        keys: fresh(),
                        role: Some(Role::Member),
                    });
                    Some((people.len() - 1, OpBody::Join { invite: None }))
                }
                40..=54 => pick(&mut rng, &people, Role::Moderator).map(|a| {
                    let keys = fresh();
                    let member = keys.member_id();
                    people.push(Person {
                        keys,
                        role: Some(Role::Member),
                    });
                    (
                        a,
                        OpBody::Admit {
                            member,
                            role: Role::Member,
                        },
                    )
                }),
                55..=62 => pick_exact(&mut rng, &people, Role::Member).map(|m| {
                    let role = if rng.percent(80) {
                        Role::Moderator
                    } else {
                        Role::Admin
                    };
                    people[m].role = Some(role);
                    (
                        0,
                        OpBody::SetRole {
                            member: people[m].keys.member_id(),
                            role,
                        },
                    )
                }),
                63..=64 => pick_exact(&mut rng, &people, Role::Moderator).map(|m| {
                    people[m].role = Some(Role::Member);
                    (
                        0,
                        OpBody::SetRole {
                            member: people[m].keys.member_id(),
                            role: Role::Member,
                        },
                    )
                }),
                65..=71 => pick_exact(&mut rng, &people, Role::Member).and_then(|m| {
                    let a = pick(&mut rng, &people, Role::Moderator)?;
                    (a != m).then(|| {
                        people[m].role = None;
                        (
                            a,
                            OpBody::Remove {
                                member: people[m].keys.member_id(),
                                reason: "Repeated no-shows".into(),
                            },
                        )
                    })
                }),
                72..=74 => pick_exact(&mut rng, &people, Role::Member).map(|m| {
                    people[m].role = None;
                    (m, OpBody::Leave)
                }),
                75..=79 => pick(&mut rng, &people, Role::Admin).map(|a| {
                    let invite = fresh();
                    let invite_key = InviteKey(invite.member_id());
                    invites.push((invite, 5));
                    (
                        a,
                        OpBody::CreateInvite {
                            invite_key,
                            expires_at: now.plus_millis(30 * Timestamp::DAY),
                            max_uses: 5,
                        },
                    )
                }),
                80..=91 if !invites.is_empty() => {
                    let i = rng.below(invites.len());
                    let keys = fresh();
                    let proof = InviteProof::new(&invites[i].0, id, keys.member_id());
                    invites[i].1 -= 1;
                    if invites[i].1 == 0 {
                        invites.swap_remove(i);
                    }
                    people.push(Person {
                        keys,
                        role: Some(Role::Member),
                    });
                    Some((
                        people.len() - 1,
                        OpBody::Join {
                            invite: Some(proof),
                        },
                    ))
                }
                92..=93 if !invites.is_empty() => {
                    let (invite, _) = invites.swap_remove(rng.below(invites.len()));
                    Some((
                        0,
                        OpBody::RevokeInvite {
                            invite_key: InviteKey(invite.member_id()),
                        },
                    ))
                }
                _ => pick(&mut rng, &people, Role::Admin).map(|a| {
                    (
                        a,
                        OpBody::UpdateSettings(SettingsPatch {
                            name: Some(format!("Resolve {t}")),
                            ..SettingsPatch::default()
                        }),
                    )
                }),
            }
        };
        let Some((author, body)) = action else {
            continue;
        };
        let parents = match lagging.len() {
            0 => log.heads(),
            len if rng.percent(25) => lagging[rng.below(len)].clone(),
            _ => log.heads(),
        };
        let keys = &people[author].keys;
        let op = Op {
            community: Some(id),
            parents,
            author: keys.member_id(),
            created_at: now,
            body,
        };
        log.insert(SignedOp::sign(op, keys).expect("sign"))
            .expect("insert");
        lagging.push_back(log.heads());
        if lagging.len() > 8 {
            lagging.pop_front();
        }
    }
    log
}

fn resolve_1000_ops(c: &mut Criterion) {
    let log = authority_log(size(1_000, 100));
    let resolved = log.resolve();
    let refused = resolved.verdicts.values().filter(|v| v.is_err()).count();
    println!(
        "resolve_1000_ops: {} ops, {refused} refused, {} members, {} heads",
        log.len(),
        resolved.members.len(),
        resolved.heads.len()
    );
    let mut group = c.benchmark_group("foundation");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(4));
    group.bench_function("resolve_1000_ops", |b| b.iter(|| black_box(log.resolve())));
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    targets = resolve_1000_ops, local_write_1000_members, apply_10k_changes
}
criterion_main!(benches);
