//! Benchmarks of the help exchange (issue 3), in one community of 10,000
//! requests, 30,000 offers and 8,000 completed matches, against the issue's
//! targets:
//!
//! - `post_request`, end to end on the founder's device: p50 ≤ 0.5 ms,
//!   p99 ≤ 2 ms (percentiles from a timing loop, plus a criterion bench);
//! - `list_requests`, a page of 20 open requests of one category by
//!   urgency, and `search_requests` for a word in ~1% of titles: ≤ 1 ms;
//! - `karma` and `trust` of a member with many completed matches: ≤ 1 ms;
//! - opening the data directory cold (page cache warm) and answering the
//!   first list query: ≤ 50 ms.
//!
//! The community is built once per run, from changes crafted and signed as
//! each member's device would make them (~50 requesters, 200 helpers),
//! received by the founder's device in bundles of a few thousand changes.
//!
//! Run with `cargo bench -p karmyq-core --bench requests`. Under
//! `cargo test --benches` (no `--bench` flag) every size shrinks so the
//! routines are only smoke-tested.

// Bench setup: a failure there is a broken bench, and a panic says so best.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use automerge::transaction::Transactable;
use automerge::{Automerge, ObjType, ROOT};
use criterion::Criterion;
use karmyq_core::{
    Bundle, Category, Community, CommunityId, DocId, Karmyq, Keypair, MemberId, OfferId, OpHash,
    Profile, RequestDraft, RequestId, RequestKind, RequestQuery, RequestSort, RequestStatus,
    Settings, SignedChange, Timestamp, Urgency,
};
use tempfile::TempDir;

mod support;
use support::{add_large_community, at, key, large_community, measure, report, signed_change};

const MINUTE: i64 = 60 * Timestamp::SECOND;
const HOUR: i64 = 60 * MINUTE;
/// Time between two requests of the community's history.
const STEP: i64 = 15 * MINUTE;
/// Offers per request.
const OFFERS: usize = 3;
/// The word in ~1% of titles, searched for.
const RARE_WORD: &str = "accordion";

/// Whether criterion is benchmarking (`cargo bench`) rather than
/// smoke-testing (`cargo test --benches`).
fn full() -> bool {
    std::env::args().any(|a| a == "--bench")
}

// ----- the community -------------------------------------------------------

/// The community's shape. Request `i` is by requester `i % requesters`,
/// posted `i * STEP` after `start`, with three offers by distinct helpers;
/// it is completed unless `i % 5 == 4` (then it stays open, with three
/// pending offers, until it expires). The first offer of every tenth
/// request is by the busy helper (helper 0), and the first offer is the
/// one accepted.
#[derive(Debug, Clone, Copy)]
struct Plan {
    requesters: usize,
    helpers: usize,
    requests: usize,
    /// Requests per bundle.
    chunk: usize,
    /// Sets this community's request and offer ids apart from another's.
    salt: u64,
}

impl Plan {
    fn new(full: bool) -> Self {
        if full {
            Plan {
                requesters: 50,
                helpers: 200,
                requests: 10_000,
                chunk: 500,
                salt: 0,
            }
        } else {
            Plan {
                requesters: 5,
                helpers: 20,
                requests: 100,
                chunk: 40,
                salt: 0,
            }
        }
    }

    /// When the first request was posted.
    fn start() -> Timestamp {
        at(Timestamp::DAY)
    }

    /// The clock of every query: an hour after the last request.
    fn now(&self) -> Timestamp {
        Self::start().plus_millis(self.requests as i64 * STEP + HOUR)
    }

    fn completed(i: usize) -> bool {
        i % 5 != 4
    }

    fn created_at(i: usize) -> Timestamp {
        Self::start().plus_millis(i as i64 * STEP)
    }

    /// Helper index of offer `j` on request `i`: distinct for one request.
    fn helper(&self, i: usize, j: usize) -> usize {
        if j == 0 && i.is_multiple_of(10) {
            return 0;
        }
        let others = self.helpers - 1;
        1 + (mix(i as u64) as usize + j * (others / OFFERS)) % others
    }
}

/// splitmix64: spreads categories and urgencies without correlation.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

const VERBS: [&str; 4] = [
    "Help with",
    "Need a hand with",
    "Looking for help with",
    "Anyone free for",
];
const THINGS: [&str; 20] = [
    "groceries",
    "the garden",
    "a flat tyre",
    "moving boxes",
    "dog walking",
    "homework",
    "a leaky tap",
    "school pickup",
    "a hospital visit",
    "laptop setup",
    "painting a fence",
    "meal prep",
    "a ride to the station",
    "babysitting",
    "assembling a wardrobe",
    "the recycling",
    "a broken shelf",
    "tax forms",
    "a birthday cake",
    "hanging curtains",
];
const DAYS: [&str; 8] = [
    "on Monday",
    "on Tuesday",
    "on Wednesday",
    "on Thursday",
    "on Friday",
    "on Saturday",
    "on Sunday",
    "this weekend",
];

/// Title, description, category, urgency and kind of request `i`.
fn content(i: usize) -> (String, String, Category, Urgency, RequestKind) {
    let h = mix(i as u64 ^ 0x5eed);
    let thing = THINGS[(h % 20) as usize];
    let day = DAYS[((h >> 8) % 8) as usize];
    let title = if i % 100 == 37 {
        format!("Carry an {RARE_WORD} to the hall {day}")
    } else {
        format!("{} {thing} {day}", VERBS[((h >> 16) % 4) as usize])
    };
    let description = format!(
        "Could someone help with {thing} {day}? I can return the favour, and there is tea."
    );
    (
        title,
        description,
        Category::ALL[((h >> 24) % Category::ALL.len() as u64) as usize],
        Urgency::ALL[((h >> 32) % Urgency::ALL.len() as u64) as usize],
        RequestKind::ALL[((h >> 40) % RequestKind::ALL.len() as u64) as usize],
    )
}

/// How long a request of this urgency lives (the community's defaults).
fn ttl(urgency: Urgency) -> i64 {
    Settings::default().request_ttl_days.for_urgency(urgency)
}

/// Everyone's keys, and the authority heads every change cites.
struct Members {
    requesters: Vec<Keypair>,
    helpers: Vec<Keypair>,
    auth_heads: Vec<OpHash>,
}

/// The signed changes of request `i`, in causal order, as its requester's
/// and helpers' devices would make them: the request; three offers; and,
/// if it completes, the acceptance of the first offer an hour after
/// posting, the requester's confirmation a day later and the helper's two
/// hours after that.
fn request_changes(
    id: CommunityId,
    plan: &Plan,
    members: &Members,
    i: usize,
    out: &mut Vec<SignedChange>,
) {
    let requester = &members.requesters[i % plan.requesters];
    let request = RequestId {
        requester: requester.member_id(),
        nonce: ((plan.salt << 40) | i as u64).to_be_bytes(),
    };
    let doc_id = DocId::Request(request);
    let auth = &members.auth_heads;
    let mut doc = Automerge::new();
    let created = Plan::created_at(i);
    let (title, description, category, urgency, kind) = content(i);
    let (change, ()) = signed_change(id, &doc_id, &mut doc, requester, auth, created, |tx| {
        tx.put(ROOT, "title", title).unwrap();
        tx.put(ROOT, "description", description).unwrap();
        tx.put(ROOT, "category", category.as_str()).unwrap();
        tx.put(ROOT, "urgency", urgency.as_str()).unwrap();
        tx.put(ROOT, "kind", kind.as_str()).unwrap();
        tx.put(ROOT, "created_at", created.as_millis()).unwrap();
        tx.put(ROOT, "expires_at", created.as_millis() + ttl(urgency))
            .unwrap();
        tx.put(ROOT, "renewals", 0_i64).unwrap();
    });
    out.push(change);

    let mut first = None;
    for j in 0..OFFERS {
        let helper = &members.helpers[plan.helper(i, j)];
        let offer = OfferId {
            responder: helper.member_id(),
            nonce: ((plan.salt << 40) | (i * OFFERS + j) as u64).to_be_bytes(),
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
    if !Plan::completed(i) {
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

/// What the built community should show at `plan.now()`.
#[derive(Debug, Default)]
struct Expected {
    changes: usize,
    completed: usize,
    open: usize,
    expired: usize,
    open_by_category: Vec<(Category, usize)>,
    rare_titles: usize,
    busy_matches: usize,
}

fn expected(plan: &Plan) -> Expected {
    let now = plan.now();
    let mut e = Expected {
        open_by_category: Category::ALL.iter().map(|&c| (c, 0)).collect(),
        ..Expected::default()
    };
    for i in 0..plan.requests {
        let (title, _, category, urgency, _) = content(i);
        e.rare_titles += usize::from(title.contains(RARE_WORD));
        if Plan::completed(i) {
            e.completed += 1;
            e.changes += 1 + OFFERS + 3;
            e.busy_matches += usize::from(plan.helper(i, 0) == 0);
        } else {
            e.changes += 1 + OFFERS;
            if Plan::created_at(i).plus_millis(ttl(urgency)) > now {
                e.open += 1;
                let slot = e
                    .open_by_category
                    .iter_mut()
                    .find(|(c, _)| *c == category)
                    .unwrap();
                slot.1 += 1;
            } else {
                e.expired += 1;
            }
        }
    }
    e
}

/// The founder's device holding the community, and what it should show.
struct Fixture {
    dir: TempDir,
    founder: Option<Karmyq>,
    id: CommunityId,
    plan: Plan,
    expected: Expected,
    busy: MemberId,
}

impl Fixture {
    fn founder(&mut self) -> &mut Karmyq {
        self.founder.as_mut().expect("founder's device open")
    }
}

/// The plan's requesters and helpers, and community `id`'s authority heads
/// once they all joined.
fn members_of(founder: &mut Karmyq, id: CommunityId, plan: &Plan) -> Members {
    let (r, h) = (plan.requesters as u64, plan.helpers as u64);
    Members {
        requesters: (1..=r).map(key).collect(),
        helpers: (r + 1..=r + h).map(key).collect(),
        auth_heads: founder
            .community(id)
            .expect("community")
            .authority()
            .heads
            .clone(),
    }
}

/// Receives requests `range` of `plan` into community `id`, in bundles of
/// `plan.chunk` requests; returns the time spent crafting and receiving
/// them, and how many changes were applied.
fn fill(
    founder: &mut Karmyq,
    id: CommunityId,
    plan: &Plan,
    members: &Members,
    range: std::ops::Range<usize>,
) -> (Duration, Duration, usize) {
    let (mut craft, mut apply) = (Duration::ZERO, Duration::ZERO);
    let mut applied = 0;
    let mut first = range.start;
    while first < range.end {
        let last = (first + plan.chunk).min(range.end);
        let t = Instant::now();
        let mut bundle = Bundle::new(id);
        for i in first..last {
            request_changes(id, plan, members, i, &mut bundle.changes);
        }
        craft += t.elapsed();
        let t = Instant::now();
        let report = founder.receive(&bundle, plan.now()).expect("receive");
        apply += t.elapsed();
        assert!(
            report.rejected.is_empty() && report.pending.is_empty(),
            "requests {first}..{last}: {} rejected ({:?}), {} pending",
            report.rejected.len(),
            report.reasons().first(),
            report.pending.len()
        );
        assert_eq!(report.accepted.len(), bundle.changes.len());
        applied += bundle.changes.len();
        first = last;
    }
    (craft, apply, applied)
}

fn build(plan: Plan) -> Fixture {
    let start = Instant::now();
    let (dir, mut founder, id) = large_community(plan.requesters + plan.helpers);
    let members_took = start.elapsed();
    let members = members_of(&mut founder, id, &plan);
    let busy = members.helpers[0].member_id();
    let (craft, apply, applied) = fill(&mut founder, id, &plan, &members, 0..plan.requests);
    let expected = expected(&plan);
    assert_eq!(applied, expected.changes);
    println!(
        "requests: set up in {:.1} s: {} members with profiles {:.1} s; {applied} changes \
         crafted and signed {:.1} s, received in bundles of ~{} changes {:.1} s ({:.0} changes/s)",
        start.elapsed().as_secs_f64(),
        plan.requesters + plan.helpers + 1,
        members_took.as_secs_f64(),
        craft.as_secs_f64(),
        applied * plan.chunk / plan.requests,
        apply.as_secs_f64(),
        applied as f64 / apply.as_secs_f64(),
    );
    Fixture {
        dir,
        founder: Some(founder),
        id,
        plan,
        expected,
        busy,
    }
}

/// How many requests `list_requests` shows with this status, page by page.
fn count(fx: &mut Fixture, status: Option<RequestStatus>) -> usize {
    let now = fx.plan.now();
    let id = fx.id;
    let community = fx.founder().community(id).expect("community");
    let mut total = 0;
    loop {
        let query = RequestQuery {
            status,
            limit: 100,
            offset: total as u32,
            ..RequestQuery::default()
        };
        let page = community.list_requests(&query, now).expect("list");
        total += page.len();
        if page.len() < 100 {
            return total;
        }
    }
}

/// Once, outside timing: the projections show what was built.
fn check(fx: &mut Fixture) {
    let e = &fx.expected;
    let (requests, completed, open, expired) = (fx.plan.requests, e.completed, e.open, e.expired);
    assert_eq!(count(fx, None), requests);
    assert_eq!(count(fx, Some(RequestStatus::Completed)), completed);
    assert_eq!(count(fx, Some(RequestStatus::Open)), open);
    assert_eq!(count(fx, Some(RequestStatus::Expired)), expired);
    assert_eq!(count(fx, Some(RequestStatus::Matched)), 0);
    let (id, now, busy, busy_matches) = (fx.id, fx.plan.now(), fx.busy, fx.expected.busy_matches);
    let (requesters, last) = (fx.plan.requesters, fx.plan.requests - 1);
    let community = fx.founder().community(id).expect("community");
    assert_eq!(
        community.completed_matches(&busy).expect("matches").len(),
        busy_matches
    );
    // The first request (completed) and the last (open, an hour old), read
    // from their documents.
    assert!(!Plan::completed(last));
    for (i, status) in [(0, RequestStatus::Completed), (last, RequestStatus::Open)] {
        let requester = key(1 + (i % requesters) as u64).member_id();
        let request = RequestId {
            requester,
            nonce: (i as u64).to_be_bytes(),
        };
        let view = community.request(request, now).expect("request");
        assert_eq!(view.offers.len(), OFFERS);
        assert_eq!(view.status, status);
    }
    println!(
        "requests: {requests} requests ({completed} completed, {open} open, {expired} expired), \
         {} offers; busy helper: {busy_matches} completed matches",
        requests * OFFERS
    );
}

fn open_page(category: Category) -> RequestQuery {
    RequestQuery {
        status: Some(RequestStatus::Open),
        category: Some(category),
        sort: RequestSort::Urgency,
        limit: 20,
        ..RequestQuery::default()
    }
}

// ----- reads -----------------------------------------------------------------

/// Times `f` on a community just written to (a description update, not
/// timed), `runs` times.
fn cold(community: &mut Community, runs: usize, mut f: impl FnMut(&Community)) -> Vec<Duration> {
    let mut times: Vec<Duration> = (0..runs.max(1))
        .map(|i| {
            community
                .set_description(&format!("Edition {i}"), at(i as i64))
                .expect("write");
            let start = Instant::now();
            f(community);
            start.elapsed()
        })
        .collect();
    times.sort();
    times
}

fn reads(c: &mut Criterion, fx: &mut Fixture) {
    let (id, now, busy) = (fx.id, fx.plan.now(), fx.busy);
    // The category with the most open requests: a full page.
    let (category, open) = *fx
        .expected
        .open_by_category
        .iter()
        .max_by_key(|(_, n)| *n)
        .unwrap();
    let rare = fx.expected.rare_titles;
    let runs = if full() { 1_000 } else { 5 };
    let community = fx.founder().community(id).expect("community");

    let query = open_page(category);
    let page = community.list_requests(&query, now).expect("list");
    assert_eq!(page.len(), open.min(20));
    assert!(page.windows(2).all(|w| w[0].urgency >= w[1].urgency));
    let found = community
        .search_requests(RARE_WORD, 20, now)
        .expect("search");
    assert_eq!(found.len(), rare.min(20));
    println!(
        "requests: listing {} of {open} open {} requests; searching \"{RARE_WORD}\" ({rare} titles)",
        page.len(),
        category.as_str()
    );

    let times = measure(runs / 10, runs, |_| {
        black_box(community.list_requests(&query, now).unwrap());
    });
    report("list_requests", &times, "≤ 1 ms");
    let times = measure(runs / 10, runs, |_| {
        black_box(community.search_requests(RARE_WORD, 20, now).unwrap());
    });
    report("search_requests", &times, "≤ 1 ms");
    let times = measure(runs / 10, runs, |_| {
        black_box(community.karma(&busy, now).unwrap());
    });
    report("karma (busy helper)", &times, "≤ 1 ms");
    // Karma and trust are kept in memory until the file changes: the first
    // read after any write computes them from the projection.
    let times = cold(community, runs / 10, |c| {
        black_box(c.karma(&busy, now).unwrap());
    });
    report("karma, first read after a write", &times, "≤ 1 ms");
    let times = cold(community, runs / 10, |c| {
        black_box(c.trust(&busy, now).unwrap());
    });
    report("trust, first read after a write", &times, "≤ 1 ms");
    let times = measure(1, (runs / 10).max(1), |_| {
        black_box(community.completed_matches(&busy).unwrap());
    });
    report("  completed_matches", &times, "-");
    let times = measure(runs / 10, runs, |_| {
        black_box(community.trust(&busy, now).unwrap());
    });
    report("trust (busy helper)", &times, "≤ 1 ms");

    let mut group = c.benchmark_group("requests");
    group.bench_function("list_open_by_category_urgency", |b| {
        b.iter(|| community.list_requests(&query, now).unwrap());
    });
    group.bench_function("search_1pct_word", |b| {
        b.iter(|| community.search_requests(RARE_WORD, 20, now).unwrap());
    });
    group.bench_function("karma_busy_helper", |b| {
        b.iter(|| community.karma(&busy, now).unwrap());
    });
    group.bench_function("trust_busy_helper", |b| {
        b.iter(|| community.trust(&busy, now).unwrap());
    });
    group.finish();
}

// ----- cold open ---------------------------------------------------------------

/// Opens the data directory, the community and its first page; returns the
/// time of each step and the device (dropped by the caller, untimed).
fn open_and_list(fx: &Fixture, query: &RequestQuery) -> ([Duration; 3], Karmyq) {
    let t = Instant::now();
    let mut device = Karmyq::open(fx.dir.path()).expect("open");
    let opened = t.elapsed();
    let community = device.community(fx.id).expect("community");
    let loaded = t.elapsed();
    let page = community.list_requests(query, fx.plan.now()).expect("list");
    let listed = t.elapsed();
    assert!(!page.is_empty());
    ([opened, loaded - opened, listed - loaded], device)
}

fn cold_open(c: &mut Criterion, fx: &mut Fixture) {
    // The device locks its directory: close it first.
    drop(fx.founder.take());
    let query = open_page(Category::Errands);
    let runs = if full() { 20 } else { 2 };
    let mut steps: [Vec<Duration>; 3] = Default::default();
    let mut total = Vec::new();
    for _ in 0..runs {
        let (times, device) = open_and_list(fx, &query);
        drop(device);
        for (k, t) in times.iter().enumerate() {
            steps[k].push(*t);
        }
        total.push(times.iter().sum());
    }
    let names = ["  Karmyq::open", "  community(id)", "  first list_requests"];
    total.sort();
    report("cold open + first list", &total, "≤ 50 ms");
    for (name, mut times) in names.into_iter().zip(steps) {
        times.sort();
        report(name, &times, "-");
    }

    let mut group = c.benchmark_group("requests");
    group.bench_function("cold_open_first_list", |b| {
        b.iter_custom(|iters| {
            let mut sum = Duration::ZERO;
            for _ in 0..iters {
                let (times, device) = open_and_list(fx, &query);
                sum += times.iter().sum::<Duration>();
                drop(device);
            }
            sum
        });
    });
    group.finish();
    fx.founder = Some(Karmyq::open(fx.dir.path()).expect("reopen"));
}

// ----- posting -----------------------------------------------------------------

fn draft(i: usize) -> RequestDraft {
    let (title, description, category, urgency, kind) = content(i);
    RequestDraft {
        title,
        description,
        category,
        urgency,
        kind,
        location: Some("u4pru".into()),
        when: None,
    }
}

fn post(c: &mut Criterion, fx: &mut Fixture) {
    let (id, now) = (fx.id, fx.plan.now());
    let (warm_up, runs) = if full() { (200, 2_000) } else { (2, 10) };
    let community = fx.founder().community(id).expect("community");
    // The slowest posts, by position, to tell a periodic stall from noise.
    let mut slow = Vec::new();
    let times = measure(warm_up, runs, |i| {
        let t = Instant::now();
        community
            .post_request(&draft(i), now.plus_millis(i as i64))
            .unwrap();
        if t.elapsed() > Duration::from_millis(2) {
            slow.push(format!("#{i} {:.1} ms", t.elapsed().as_secs_f64() * 1e3));
        }
    });
    report("post_request", &times, "p50 ≤ 0.5 ms, p99 ≤ 2 ms");
    println!("posts over 2 ms: {}", slow.join(", "));

    let mut clock = 1_000_000;
    let mut group = c.benchmark_group("requests");
    group.bench_function("post_request", |b| {
        b.iter(|| {
            clock += 1;
            community
                .post_request(&draft(clock as usize), now.plus_millis(clock))
                .unwrap()
        });
    });
    group.finish();
}

/// Bytes in the data directory's write-ahead logs.
fn wal_bytes(dir: &std::path::Path) -> u64 {
    let communities = std::fs::read_dir(dir.join("communities")).expect("communities dir");
    communities
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.to_string_lossy().ends_with("-wal"))
        .map(|p| std::fs::metadata(p).expect("wal size").len())
        .sum()
}

/// After a sync the app compacts (snapshots, WAL checkpoint): the reads
/// are measured on the file as it then stands.
fn compact(fx: &mut Fixture) {
    let before = wal_bytes(fx.dir.path());
    let id = fx.id;
    let t = Instant::now();
    fx.founder()
        .community(id)
        .expect("community")
        .compact()
        .expect("compact");
    println!(
        "requests: compact after the sync (snapshots, checkpoint of a {:.1} MB WAL) {:.0} ms",
        before as f64 / 1e6,
        t.elapsed().as_secs_f64() * 1e3,
    );
}

// ----- the feed ----------------------------------------------------------------

/// The founder's feed across five communities: the large one and four more
/// with a quarter of its requests each, posted over the same last weeks.
fn feed(c: &mut Criterion, fx: &mut Fixture) {
    let plan = fx.plan;
    let now = plan.now();
    let mut ids = vec![fx.id];
    let founder = fx.founder();
    let t = Instant::now();
    for salt in 1..=4 {
        let id = add_large_community(
            founder,
            &format!("Bench {salt}"),
            plan.requesters + plan.helpers,
        );
        let members = members_of(founder, id, &plan);
        let quarter = Plan { salt, ..plan };
        let range = plan.requests - plan.requests / 4..plan.requests;
        fill(founder, id, &quarter, &members, range);
        ids.push(id);
    }
    println!(
        "feed: four more communities of {} requests each, built in {:.1} s",
        plan.requests / 4,
        t.elapsed().as_secs_f64()
    );
    let profile = Profile {
        name: "Founder".into(),
        bio: String::new(),
        location: None,
        availability: String::new(),
        skills: vec!["moving".into(), "tech".into()],
    };
    for id in &ids {
        let community = founder.community(*id).expect("community");
        community.set_profile(&profile, now).expect("profile");
    }
    let page = founder.feed(now, 0, 20).expect("feed");
    assert_eq!(page.len(), 20);
    let shown: std::collections::BTreeSet<CommunityId> = page.iter().map(|r| r.community).collect();
    println!(
        "feed: a page of 20 from {} of the 5 communities",
        shown.len()
    );

    let runs = if full() { 500 } else { 3 };
    let times = measure(runs / 10, runs, |_| {
        black_box(founder.feed(now, 0, 20).unwrap());
    });
    report("feed page of 20, 5 communities", &times, "≤ 5 ms");
    // The first read after a write to one of the communities (not timed).
    let mut times: Vec<Duration> = (0..runs / 5 + 1)
        .map(|i| {
            let id = ids[i % ids.len()];
            let community = founder.community(id).expect("community");
            community
                .set_description(&format!("Edition {i}"), now)
                .expect("write");
            let start = Instant::now();
            black_box(founder.feed(now, 0, 20).unwrap());
            start.elapsed()
        })
        .collect();
    times.sort();
    report("  first read after a write", &times, "≤ 5 ms");
    let mut group = c.benchmark_group("requests");
    group.bench_function("feed_page_of_20_across_5_communities", |b| {
        b.iter(|| founder.feed(now, 0, 20).unwrap());
    });
    group.finish();
}

fn main() {
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let mut fx = build(Plan::new(full()));
    check(&mut fx);
    compact(&mut fx);
    reads(&mut c, &mut fx);
    cold_open(&mut c, &mut fx);
    feed(&mut c, &mut fx);
    post(&mut c, &mut fx);
    c.final_summary();
}
