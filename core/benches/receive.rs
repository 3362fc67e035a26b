//! `Karmyq::receive` alone, without a network: what limits the sync
//! server's ingest and a device's first catch-up (sync-server/BENCH.md).
//!
//! - **relay ingest:** a relay (`Karmyq::open_relay`, as the sync server
//!   opens its directory) of a community of 50 members receives one upload
//!   of 600 changes from each (200 new requests, each edited twice), one
//!   bundle per member, as the server's store thread does; then 60 changes
//!   from each, each in its own upload (a connected device's writes);
//! - **device catch-up:** a fresh device receives a community of
//!   `KQB_REQUESTS` requests (2,000 by default; each posted, offered three
//!   times, and four in five accepted and confirmed by both), cut in 1 MiB
//!   bundles as the server sends them (`KQB_BUNDLE_MIB=n`: n MiB bundles,
//!   as an engine that receives several together applies them).
//!
//! Each prints wall time and the process's CPU time (user + system, all
//! threads), per item: CPU time is the steadier figure on a machine shared
//! with other work. `KQB_ONLY=ingest` or `KQB_ONLY=catch-up` runs one.
//! `cargo bench -p karmyq-core --bench receive`; under `cargo test
//! --benches` the sizes shrink to a smoke run.

// Bench setup: a failure there is a broken bench, and a panic says so best.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use automerge::transaction::Transactable;
use automerge::{Automerge, ObjType, ROOT};
use karmyq_core::sync::split;
use karmyq_core::{
    Bundle, CommunityId, DocId, Heads, Karmyq, Keypair, OfferId, OpHash, RequestId, SignedChange,
    Timestamp,
};

mod support;
use support::{at, cpu_seconds, key, large_community, signed_change};

const MINUTE: i64 = 60 * Timestamp::SECOND;
const HOUR: i64 = 60 * MINUTE;

fn full() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// Runs `f`, returns (wall seconds, CPU seconds).
fn timed(f: impl FnOnce()) -> (f64, f64) {
    let (wall, cpu) = (Instant::now(), cpu_seconds());
    f();
    (wall.elapsed().as_secs_f64(), cpu_seconds() - cpu)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn receive_all(k: &mut Karmyq, bundle: &Bundle) {
    let report = k.receive(bundle, at(10)).unwrap();
    assert!(
        report.rejected.is_empty() && report.pending.is_empty(),
        "{} refused ({:?}), {} pending",
        report.rejected.len(),
        report.reasons().first(),
        report.pending.len()
    );
}

/// A new request in a new document: its first change.
fn post(
    id: CommunityId,
    kp: &Keypair,
    nonce: u64,
    auth: &[OpHash],
    created: Timestamp,
) -> (DocId, Automerge, SignedChange) {
    let doc_id = DocId::Request(RequestId {
        requester: kp.member_id(),
        nonce: nonce.to_be_bytes(),
    });
    let mut doc = Automerge::new();
    let (change, ()) = signed_change(id, &doc_id, &mut doc, kp, auth, created, |tx| {
        tx.put(ROOT, "title", format!("Help with errand {nonce}"))
            .unwrap();
        tx.put(
            ROOT,
            "description",
            "Could someone help on Saturday? I can return the favour, and there is tea.",
        )
        .unwrap();
        tx.put(ROOT, "category", "errands").unwrap();
        tx.put(ROOT, "urgency", "medium").unwrap();
        tx.put(ROOT, "kind", "generic").unwrap();
        tx.put(ROOT, "created_at", created.as_millis()).unwrap();
        tx.put(ROOT, "expires_at", created.as_millis() + 7 * Timestamp::DAY)
            .unwrap();
        tx.put(ROOT, "renewals", 0_i64).unwrap();
    });
    (doc_id, doc, change)
}

fn ingest() {
    let (devices, runs) = if full() { (50, 3) } else { (3, 1) };
    // For exploring: KQB_PER_UPLOAD=n runs only 60 changes each, n an upload.
    if let Ok(n) = std::env::var("KQB_PER_UPLOAD") {
        return ingest_with(devices, 20, runs, n.parse().unwrap());
    }
    // Whole uploads as a device sends what it wrote offline, then each
    // change in its own upload, as a connected device sends each write.
    ingest_with(devices, if full() { 200 } else { 2 }, runs, usize::MAX);
    ingest_with(devices, if full() { 20 } else { 1 }, runs, 1);
}

fn ingest_with(devices: usize, requests: usize, runs: usize, per_upload: usize) {
    let (_dir, mut founder, id) = large_community(devices);
    let auth = founder.community(id).unwrap().authority().heads.clone();
    let log = founder
        .community(id)
        .unwrap()
        .changes_since(&Heads::empty())
        .unwrap();
    let keys: Vec<Keypair> = (1..=devices as u64).map(key).collect();
    let mut rates = Vec::new();
    let mut cpu_rates = Vec::new();
    for run in 0..runs {
        let uploads: Vec<Bundle> = keys
            .iter()
            .enumerate()
            .map(|(d, kp)| {
                let mut b = Bundle::new(id);
                for r in 0..requests {
                    let created = at(Timestamp::DAY + r as i64 * MINUTE);
                    let nonce = (((run * 1000 + d) as u64) << 20) + r as u64;
                    let (doc_id, mut doc, change) = post(id, kp, nonce, &auth, created);
                    b.changes.push(change);
                    for edit in 1..=2 {
                        let t = created.plus_millis(edit);
                        let (change, ()) =
                            signed_change(id, &doc_id, &mut doc, kp, &auth, t, |tx| {
                                tx.put(ROOT, "description", format!("Edit {edit}: still needed."))
                                    .unwrap();
                            });
                        b.changes.push(change);
                    }
                }
                b
            })
            .flat_map(|b: Bundle| {
                b.changes
                    .chunks(per_upload)
                    .map(|piece| Bundle {
                        changes: piece.to_vec(),
                        ..Bundle::new(id)
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        let total: usize = uploads.iter().map(|b| b.changes.len()).sum();
        let dir = tempfile::tempdir().unwrap();
        let mut relay = Karmyq::open_relay(dir.path()).unwrap();
        receive_all(&mut relay, &log);
        let (wall, cpu) = timed(|| {
            for upload in &uploads {
                receive_all(&mut relay, upload);
            }
        });
        println!(
            "  relay ingest run {run}: {total} changes in {:.0} ms ({:.0}/s), CPU {:.0} ms ({:.0}/s)",
            wall * 1e3,
            total as f64 / wall,
            cpu * 1e3,
            total as f64 / cpu
        );
        rates.push(total as f64 / wall);
        cpu_rates.push(total as f64 / cpu);
    }
    println!(
        "relay ingest, {devices} members' {} changes each, {}: {:.0} changes/s wall, {:.0} \
         changes/s of CPU (medians)",
        requests * 3,
        match per_upload {
            1 => "each in its own upload".to_string(),
            usize::MAX => "in one upload".to_string(),
            n => format!("{n} an upload"),
        },
        median(rates),
        median(cpu_rates)
    );
}

/// Request `i`: posted, three offers, and unless `i % 5 == 4` the first
/// accepted and the match confirmed by both (sync-server's bench shape).
fn story(
    id: CommunityId,
    requesters: &[Keypair],
    helpers: &[Keypair],
    auth: &[OpHash],
    i: usize,
    out: &mut Vec<SignedChange>,
) {
    let requester = &requesters[i % requesters.len()];
    let created = at(Timestamp::DAY + i as i64 * 15 * MINUTE);
    let (doc_id, mut doc, change) = post(id, requester, i as u64, auth, created);
    out.push(change);
    let mut first = None;
    for j in 0..3 {
        let helper = &helpers[(i * 7 + j * (helpers.len() / 3)) % helpers.len()];
        let offer = OfferId {
            responder: helper.member_id(),
            nonce: ((i * 3 + j) as u64).to_be_bytes(),
        };
        let t = created.plus_millis((j as i64 + 1) * 10 * MINUTE);
        let (change, obj) = signed_change(id, &doc_id, &mut doc, helper, auth, t, |tx| {
            let obj = tx
                .put_object(ROOT, format!("offer:{offer}"), ObjType::Map)
                .unwrap();
            tx.put(&obj, "message", "I can do that.").unwrap();
            tx.put(&obj, "created_at", t.as_millis()).unwrap();
            obj
        });
        out.push(change);
        if j == 0 {
            first = Some((offer, helper, obj));
        }
    }
    if i % 5 == 4 {
        return;
    }
    let (offer, helper, obj) = first.expect("an offer");
    let accepted = created.plus_millis(HOUR);
    let (change, ()) = signed_change(id, &doc_id, &mut doc, requester, auth, accepted, |tx| {
        tx.put(ROOT, "accepted", offer.to_string()).unwrap();
        tx.put(ROOT, "accepted_at", accepted.as_millis()).unwrap();
    });
    out.push(change);
    let thanked = accepted.plus_millis(Timestamp::DAY);
    let (change, ()) = signed_change(id, &doc_id, &mut doc, requester, auth, thanked, |tx| {
        tx.put(ROOT, format!("confirmed:{offer}"), thanked.as_millis())
            .unwrap();
    });
    out.push(change);
    let done = thanked.plus_millis(2 * HOUR);
    let (change, ()) = signed_change(id, &doc_id, &mut doc, helper, auth, done, |tx| {
        tx.put(&obj, "confirmed_at", done.as_millis()).unwrap();
    });
    out.push(change);
}

fn catch_up() {
    let requests: usize = std::env::var("KQB_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full() { 2_000 } else { 20 });
    let runs = if full() { 3 } else { 1 };
    let (requesters, helpers) = if full() { (50, 200) } else { (2, 6) };
    let (_dir, mut founder, id) = large_community(requesters + helpers);
    let auth = founder.community(id).unwrap().authority().heads.clone();
    let rk: Vec<Keypair> = (1..=requesters as u64).map(key).collect();
    let hk: Vec<Keypair> = (requesters as u64 + 1..=(requesters + helpers) as u64)
        .map(key)
        .collect();
    let mut everything = founder
        .community(id)
        .unwrap()
        .changes_since(&Heads::empty())
        .unwrap();
    for i in 0..requests {
        story(id, &rk, &hk, &auth, i, &mut everything.changes);
    }
    let items = everything.ops.len() + everything.changes.len();
    let mib: usize = std::env::var("KQB_BUNDLE_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let pieces = split(everything, mib << 20, usize::MAX);
    let mut walls = Vec::new();
    let mut cpus = Vec::new();
    for run in 0..runs {
        let dir = tempfile::tempdir().unwrap();
        let mut device = Karmyq::open(dir.path()).unwrap();
        let (wall, cpu) = timed(|| {
            for piece in &pieces {
                receive_all(&mut device, piece);
            }
        });
        println!(
            "  device catch-up run {run}: {items} items in {} bundles: {:.0} ms ({:.0}/s), CPU {:.0} ms ({:.0}/s)",
            pieces.len(),
            wall * 1e3,
            items as f64 / wall,
            cpu * 1e3,
            items as f64 / cpu
        );
        walls.push(wall);
        cpus.push(cpu);
    }
    let (wall, cpu) = (median(walls), median(cpus));
    println!(
        "device catch-up of {requests} requests ({items} ops + changes): {:.0} ms, {:.0} items/s wall, {:.0} items/s of CPU (medians)",
        wall * 1e3,
        items as f64 / wall,
        items as f64 / cpu
    );
}

fn main() {
    let only = std::env::var("KQB_ONLY").unwrap_or_default();
    let wanted = |name: &str| only.is_empty() || only.split(',').any(|o| o == name);
    if wanted("ingest") {
        ingest();
    }
    if wanted("catch-up") {
        catch_up();
    }
}
