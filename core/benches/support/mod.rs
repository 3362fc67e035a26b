//! Setup shared by the benchmarks: deterministic keys, a fixed clock, and
//! communities of many members built from signed ops without a device per
//! member. Each bench target uses part of it.
#![allow(dead_code)]

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{Automerge, ChangeHash, ObjType, ROOT, ReadDoc};
use karmyq_core::{
    Bundle, CommunityId, DocId, Karmyq, Keypair, Link, MemberId, Norm, Op, OpBody, OpHash, Profile,
    Settings, SettingsPatch, SignedChange, SignedOp, Timestamp, Visibility, actor_of, auth_message,
};
use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// A fixed clock: `offset` milliseconds after 2027-01-15.
pub fn at(offset: i64) -> Timestamp {
    Timestamp::from_millis(1_800_000_000_000 + offset)
}

/// A deterministic key pair, so every run builds the same data.
pub fn key(n: u64) -> Keypair {
    let mut seed = [0x4b; 32];
    seed[..8].copy_from_slice(&n.to_le_bytes());
    Keypair::from_secret_bytes(&seed)
}

/// A device in a temporary directory (kept alive with it).
pub fn device() -> (TempDir, Karmyq) {
    let dir = tempfile::tempdir().expect("temp dir");
    let karmyq = Karmyq::open(dir.path()).expect("open device");
    (dir, karmyq)
}

/// Signed `Join`s of a public community, one after another (each on the
/// heads the previous one left), as members arriving over time.
pub fn joins(id: CommunityId, mut heads: Vec<OpHash>, keys: &[Keypair], now: Timestamp) -> Bundle {
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

/// A member's first profile, made as their device would (a change by their
/// actor, signed on `auth_heads`) without opening a device per member.
pub fn first_profile(
    id: CommunityId,
    auth_heads: &[OpHash],
    kp: &Keypair,
    n: usize,
    now: Timestamp,
) -> SignedChange {
    let member = kp.member_id();
    let mut doc = Automerge::new();
    let (change, ()) = signed_change(id, &DocId::Profiles, &mut doc, kp, auth_heads, now, |tx| {
        let entry = tx
            .put_object(ROOT, member.to_string(), ObjType::Map)
            .expect("profile entry");
        tx.put(&entry, "name", format!("Member {n}")).expect("name");
        tx.put(&entry, "availability", "weekends")
            .expect("availability");
    });
    change
}

/// A community of `members` members besides its founder, each with a
/// profile, and ten norms; returns the founder's device.
pub fn large_community(members: usize) -> (TempDir, Karmyq, CommunityId) {
    let (dir, mut founder) = device();
    let id = add_large_community(&mut founder, "Bench", members);
    (dir, founder, id)
}

/// [`large_community`] founded on an existing device.
pub fn add_large_community(founder: &mut Karmyq, name: &str, members: usize) -> CommunityId {
    let id = founder
        .create_community(name, "A large community", Visibility::Public, at(0))
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
    id
}

/// The founder's norm, with one of two descriptions, so each write changes it.
pub fn norm_version(id: &str, flip: bool) -> Norm {
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

/// One of two profiles, so each write changes something.
pub fn profile_version(flip: bool) -> Profile {
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

/// Each crafted member's latest change in a public document of a
/// community: what their device remembers, and names in its next change.
static PREVIOUS: Mutex<BTreeMap<(CommunityId, MemberId), (DocId, ChangeHash)>> =
    Mutex::new(BTreeMap::new());

/// Commits `edit` to `doc` as `kp`'s device would (their actor, a commit
/// message citing `auth_heads` and their previous change in a public
/// document, the change's time `now`) and signs it for document `doc_id`;
/// returns the signed change and what `edit` returned. Lets a bench craft
/// changes by many members without a device each.
pub fn signed_change<T>(
    id: CommunityId,
    doc_id: &DocId,
    doc: &mut Automerge,
    kp: &Keypair,
    auth_heads: &[OpHash],
    now: Timestamp,
    edit: impl FnOnce(&mut automerge::transaction::Transaction<'_>) -> T,
) -> (SignedChange, T) {
    doc.set_actor(actor_of(&kp.member_id()));
    let mut tx = doc.transaction();
    let out = edit(&mut tx);
    let mut chains = PREVIOUS.lock().unwrap_or_else(PoisonError::into_inner);
    let key = (id, kp.member_id());
    // As a device: a link only to a change in another document.
    let link = chains
        .get(&key)
        .filter(|(doc, _)| doc != doc_id)
        .map(|(doc, hash)| Link::of(doc, hash));
    let (hash, _) = tx.commit_with(
        CommitOptions::default()
            .with_message(auth_message(auth_heads, link))
            .with_time(now.as_millis()),
    );
    let hash = hash.expect("a change");
    if !doc_id.is_private() {
        chains.insert(key, (doc_id.clone(), hash));
    }
    let change = doc.get_change_by_hash(&hash).expect("committed change");
    (SignedChange::sign(id, doc_id, &change, kp), out)
}

// ----- measurement -------------------------------------------------------

/// Runs `f(i)` `warm_up` times untimed, then `runs` times timed one by one;
/// returns the durations, sorted.
pub fn measure(warm_up: usize, runs: usize, mut f: impl FnMut(usize)) -> Vec<Duration> {
    for i in 0..warm_up {
        f(i);
    }
    let mut times: Vec<Duration> = (warm_up..warm_up + runs)
        .map(|i| {
            let start = Instant::now();
            f(i);
            start.elapsed()
        })
        .collect();
    times.sort();
    times
}

/// The nearest-rank percentile of sorted durations, in microseconds.
pub fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1].as_secs_f64() * 1e6
}

/// Prints p50, p90, p99, p99.9 and max of sorted durations, with the target.
pub fn report(name: &str, sorted: &[Duration], target: &str) {
    let [p50, p90, p99, p999] = [50.0, 90.0, 99.0, 99.9].map(|p| percentile(sorted, p));
    let max = percentile(sorted, 100.0);
    println!(
        "{name:<24} n={:<5} p50 {p50:>9.1} µs   p90 {p90:>9.1} µs   p99 {p99:>9.1} µs   p99.9 {p999:>9.1} µs   max {max:>9.1} µs   (target {target})",
        sorted.len()
    );
}

/// CPU time of this process so far (all threads), in seconds.
pub fn cpu_seconds() -> f64 {
    cpu_seconds_of("self")
}

/// CPU time of process `pid` ("self" for this one) so far, all threads, in
/// seconds; 0 if it cannot be read.
pub fn cpu_seconds_of(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which ends with ')'): utime is the
    // 12th, stime the 13th, in clock ticks (100 a second here).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    match (ticks(11), ticks(12)) {
        (Some(u), Some(s)) => (u + s) / 100.0,
        _ => 0.0,
    }
}
