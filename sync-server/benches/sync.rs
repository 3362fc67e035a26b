//! Benchmarks of the sync server (issue 4) against the targets, all
//! over loopback with a real server (`karmyq_sync_server::run`) in this
//! process:
//!
//! 1. **catch-up**: a fresh device of a member subscribes with nothing to
//!    a community of 10,000 requests (30,000 offers, 8,000 completed
//!    matches: the shape of core's `requests` bench, 64,000 changes):
//!    ≤ 2 s, and wire bytes ≤ 1.5× what the server stores. Measured twice:
//!    the transfer alone (a raw client reads every frame to `Subscribed`),
//!    and a device running the `SyncEngine` until it holds everything.
//! 2. **ingest**: 50 devices, 50 concurrent connections, each subscribed
//!    and uploading its own member's changes (requests and their edits):
//!    ≥ 20,000 changes/s.
//! 3. **idle**: 5,000 devices logged in and subscribed: the server
//!    process's resident memory grows ≤ 50 KB per connection. The clients
//!    run in a child process (this binary, re-run with `KQB_CHILD=idle`),
//!    so their memory is not counted.
//! 4. **fan-out**: 1,000 members connected to one community, one of them
//!    writing 500 changes/s: p99 delivery latency ≤ 50 ms, from the moment
//!    each change was written to the moment a subscriber decoded it
//!    (clients in a child process, `KQB_CHILD=fanout`).
//!
//! Run with `cargo bench -p karmyq-sync-server --bench sync`; it needs
//! about 10,100 file descriptors (`ulimit -n 20000` if the soft limit is
//! lower: the bench checks and says so). Under `cargo test --benches` (no
//! `--bench` flag) every size shrinks: a smoke run of a few seconds that
//! still checks that every change arrived.

// Bench setup: a failure there is a broken bench, and a panic says so best.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../core/benches/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use automerge::transaction::Transactable;
use automerge::{Automerge, ObjType, ROOT};
use futures_util::{SinkExt, StreamExt};
use karmyq_core::sync::{
    EngineOptions, Frame, PROTOCOL_VERSION, SyncEngine, SyncStatus, login_message, split,
};
use karmyq_core::{
    Bundle, Category, CommunityId, DocId, Heads, Karmyq, Keypair, OfferId, OpHash, RequestId,
    RequestKind, Settings, SignedChange, SigningTag, Timestamp, Urgency,
};
use karmyq_sync_server::Config;
use support::{at, cpu_seconds, key, large_community, signed_change};

use tempfile::TempDir;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const MINUTE: i64 = 60 * Timestamp::SECOND;
const HOUR: i64 = 60 * MINUTE;
/// Time between two requests of the catch-up community's history.
const STEP: i64 = 15 * MINUTE;
/// Offers per request.
const OFFERS: usize = 3;
/// How long the bench waits for something that should happen.
const PATIENCE: Duration = Duration::from_secs(120);

/// Whether this is `cargo bench` rather than `cargo test --benches`.
fn full() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// Runs `f` `times` times (once in smoke mode) and returns the median of
/// what it measured.
fn median_of(times: usize, mut f: impl FnMut(usize) -> f64) -> f64 {
    let runs = if full() { times } else { 1 };
    let mut v: Vec<f64> = (0..runs).map(&mut f).collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn verdict(ok: bool) -> &'static str {
    match (full(), ok) {
        (false, _) => "smoke run, not a measurement",
        (true, true) => "met",
        (true, false) => "MISSED",
    }
}

// ----- the server ----------------------------------------------------------

/// A sync server on its own runtime (two workers: this machine's cores).
struct Server {
    rt: tokio::runtime::Runtime,
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), karmyq_sync_server::ServerError>>>,
    dir: Option<TempDir>,
}

impl Server {
    /// Serves the data directory `dir` (a server's replica, seeded by the
    /// bench with [`seed`]).
    fn start(dir: TempDir, tune: impl FnOnce(&mut Config)) -> Server {
        let path = dir.path().to_path_buf();
        Server::start_at(&path, Some(dir), tune)
    }

    /// Serves the data directory at `path` (kept alive with `dir`).
    fn start_at(
        path: &std::path::Path,
        dir: Option<TempDir>,
        tune: impl FnOnce(&mut Config),
    ) -> Server {
        let mut config = Config::new(path);
        config.max_connections = 10_000;
        tune(&mut config);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("server")
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = rt.spawn(karmyq_sync_server::run(listener, config, async {
            let _ = rx.await;
        }));
        Server {
            rt,
            addr,
            stop: Some(tx),
            task: Some(task),
            dir,
        }
    }

    fn url(&self) -> String {
        format!("ws://{}/v1/sync", self.addr)
    }

    fn stop(mut self) -> Option<TempDir> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            self.rt.block_on(task).unwrap().unwrap();
        }
        self.dir
    }
}

/// Gives a server's data directory what a founder's device holds of
/// community `id` (as if the founder had synced it), plus `more` bundles.
fn seed(founder: &mut Karmyq, id: CommunityId, more: impl IntoIterator<Item = Bundle>) -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut replica = Karmyq::open(dir.path()).unwrap();
    let log = founder
        .community(id)
        .unwrap()
        .changes_since(&Heads::empty())
        .unwrap();
    receive_all(&mut replica, &log, at(10));
    for bundle in more {
        receive_all(&mut replica, &bundle, at(10));
    }
    replica.community(id).unwrap().compact().unwrap();
    dir
}

fn receive_all(k: &mut Karmyq, bundle: &Bundle, now: Timestamp) {
    let report = k.receive(bundle, now).unwrap();
    assert!(
        report.rejected.is_empty() && report.pending.is_empty(),
        "{} refused ({:?}), {} pending",
        report.rejected.len(),
        report.reasons().first(),
        report.pending.len()
    );
}

/// The soft limit on open files of this process.
fn open_files_limit() -> u64 {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap_or(u64::MAX)
}

// ----- a raw client ----------------------------------------------------------

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn connect(url: &str) -> Ws {
    // tungstenite zero-fills its whole read buffer (128 KiB by default) on
    // every read: with a thousand clients on the server's two cores, that
    // alone would eat the CPU the server is being measured with.
    let config = WebSocketConfig::default().read_buffer_size(8 * 1024);
    // Thousands of connections at once can overflow the listen backlog:
    // retry a refused connect.
    for _ in 0..50 {
        if let Ok((ws, _)) =
            tokio_tungstenite::connect_async_with_config(url, Some(config), true).await
        {
            return ws;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("cannot connect to {url}");
}

async fn send(ws: &mut Ws, frame: &Frame) {
    ws.send(Message::Binary(frame.encode().into()))
        .await
        .expect("send");
}

/// The next frame and its size on the wire (payload).
async fn recv(ws: &mut Ws) -> (Frame, usize) {
    loop {
        match tokio::time::timeout(PATIENCE, ws.next()).await {
            Ok(Some(Ok(Message::Binary(b)))) => {
                return (Frame::decode(&b).expect("a frame"), b.len());
            }
            Ok(Some(Ok(Message::Close(_))) | None) => panic!("the server closed the connection"),
            Ok(Some(Err(e))) => panic!("connection failed: {e}"),
            Ok(Some(Ok(_))) => {}
            Err(_) => panic!("no frame from the server"),
        }
    }
}

async fn login(ws: &mut Ws, keys: &Keypair) {
    send(
        ws,
        &Frame::Hello {
            version: PROTOCOL_VERSION,
        },
    )
    .await;
    let Frame::Challenge { nonce, context } = recv(ws).await.0 else {
        panic!("no challenge");
    };
    send(
        ws,
        &Frame::Login {
            member: keys.member_id(),
            signature: keys.sign(SigningTag::SyncLogin, &login_message(&nonce, &context)),
        },
    )
    .await;
    match recv(ws).await.0 {
        Frame::LoginOk { .. } => {}
        other => panic!("login refused: {other:?}"),
    }
}

/// What a subscription brought: the catch-up bundles, their wire bytes
/// (every frame up to `Subscribed`), and the server's heads.
struct CaughtUp {
    bundles: Vec<Bundle>,
    bytes: usize,
    heads: Heads,
}

async fn subscribe(ws: &mut Ws, community: CommunityId, heads: Heads) -> CaughtUp {
    send(ws, &Frame::Subscribe { community, heads }).await;
    let mut out = CaughtUp {
        bundles: Vec::new(),
        bytes: 0,
        heads: Heads::empty(),
    };
    loop {
        let (frame, len) = recv(ws).await;
        out.bytes += len;
        match frame {
            Frame::Bundle { bytes } => out.bundles.push(Bundle::decode(&bytes).unwrap()),
            Frame::Subscribed { heads, .. } => {
                out.heads = heads;
                return out;
            }
            Frame::JoinRequests { .. } => {}
            other => panic!("subscription refused: {other:?}"),
        }
    }
}

/// A connection of `keys`' device, logged in and subscribed.
async fn member(url: &str, keys: &Keypair, id: CommunityId, heads: Heads) -> (Ws, CaughtUp) {
    let mut ws = connect(url).await;
    login(&mut ws, keys).await;
    let got = subscribe(&mut ws, id, heads).await;
    (ws, got)
}

fn client_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("client")
        .enable_all()
        .build()
        .unwrap()
}

// ----- crafted changes ---------------------------------------------------------

/// splitmix64.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A new request `nonce` by `requester` at `created`, in a new document.
fn post(
    id: CommunityId,
    requester: &Keypair,
    nonce: u64,
    auth: &[OpHash],
    created: Timestamp,
) -> (DocId, Automerge, SignedChange) {
    let h = mix(nonce);
    let category = Category::ALL[(h % Category::ALL.len() as u64) as usize];
    let urgency = Urgency::ALL[((h >> 8) % Urgency::ALL.len() as u64) as usize];
    let kind = RequestKind::ALL[((h >> 16) % RequestKind::ALL.len() as u64) as usize];
    let ttl = Settings::default().request_ttl_days.for_urgency(urgency);
    let doc_id = DocId::Request(RequestId {
        requester: requester.member_id(),
        nonce: nonce.to_be_bytes(),
    });
    let mut doc = Automerge::new();
    let (change, ()) = signed_change(id, &doc_id, &mut doc, requester, auth, created, |tx| {
        tx.put(ROOT, "title", format!("Help with errand {nonce}"))
            .unwrap();
        tx.put(
            ROOT,
            "description",
            "Could someone help on Saturday? I can return the favour, and there is tea.",
        )
        .unwrap();
        tx.put(ROOT, "category", category.as_str()).unwrap();
        tx.put(ROOT, "urgency", urgency.as_str()).unwrap();
        tx.put(ROOT, "kind", kind.as_str()).unwrap();
        tx.put(ROOT, "created_at", created.as_millis()).unwrap();
        tx.put(ROOT, "expires_at", created.as_millis() + ttl)
            .unwrap();
        tx.put(ROOT, "renewals", 0_i64).unwrap();
    });
    (doc_id, doc, change)
}

/// The catch-up community's request `i` (core's `requests` bench shape):
/// posted by requester `i % requesters`, three offers by distinct helpers,
/// and unless `i % 5 == 4` the first offer accepted and the match confirmed
/// by both.
fn request_story(
    id: CommunityId,
    requesters: &[Keypair],
    helpers: &[Keypair],
    auth: &[OpHash],
    i: usize,
    out: &mut Vec<SignedChange>,
) {
    let requester = &requesters[i % requesters.len()];
    let created = at(Timestamp::DAY + i as i64 * STEP);
    let (doc_id, mut doc, change) = post(id, requester, i as u64, auth, created);
    out.push(change);
    let mut first = None;
    for j in 0..OFFERS {
        let others = helpers.len();
        let helper = &helpers[(mix(i as u64) as usize + j * (others / OFFERS)) % others];
        let offer = OfferId {
            responder: helper.member_id(),
            nonce: ((i * OFFERS + j) as u64).to_be_bytes(),
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

/// `requests` new requests by one member, each edited twice (3 changes
/// each), as their device would upload them after a while offline.
fn own_requests(
    id: CommunityId,
    kp: &Keypair,
    first_nonce: u64,
    requests: usize,
    auth: &[OpHash],
) -> Vec<SignedChange> {
    let mut out = Vec::with_capacity(requests * 3);
    for r in 0..requests {
        let created = at(Timestamp::DAY + r as i64 * MINUTE);
        let (doc_id, mut doc, change) = post(id, kp, first_nonce + r as u64, auth, created);
        out.push(change);
        for edit in 1..=2 {
            let t = created.plus_millis(edit);
            let (change, ()) = signed_change(id, &doc_id, &mut doc, kp, auth, t, |tx| {
                tx.put(ROOT, "description", format!("Edit {edit}: still needed."))
                    .unwrap();
            });
            out.push(change);
        }
    }
    out
}

/// A community of `members` members besides its founder (each with a
/// profile); the founder then edits their own profile, as a device that
/// merged everything would, so each document has one head rather than one
/// per member (what a device that has synced sends in `Subscribe`).
fn community(members: usize) -> (TempDir, Karmyq, CommunityId) {
    let (dir, mut founder, id) = large_community(members);
    let profile = karmyq_core::Profile {
        name: "Founder".into(),
        ..karmyq_core::Profile::default()
    };
    founder
        .community(id)
        .unwrap()
        .set_profile(&profile, at(5))
        .unwrap();
    (dir, founder, id)
}

fn auth_heads(k: &mut Karmyq, id: CommunityId) -> Vec<OpHash> {
    k.community(id).unwrap().authority().heads.clone()
}

// ----- 1. catch-up -----------------------------------------------------------

/// Bytes the server stores for a community: its SQLite files after a
/// checkpoint, and the stored ops and signed changes alone.
fn stored_bytes(dir: &std::path::Path, id: CommunityId) -> (u64, u64) {
    let base = dir.join("communities").join(format!("{id}.sqlite3"));
    let files: u64 = ["", "-wal", "-shm"]
        .iter()
        .filter_map(|s| std::fs::metadata(format!("{}{s}", base.display())).ok())
        .map(|m| m.len())
        .sum();
    let conn = rusqlite::Connection::open(&base).unwrap();
    let changes: i64 = conn
        .query_row(
            "SELECT coalesce(sum(length(envelope) + length(bytes)), 0) FROM changes",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let ops: i64 = conn
        .query_row(
            "SELECT coalesce(sum(length(bytes)), 0) FROM auth_ops",
            [],
            |r| r.get(0),
        )
        .unwrap();
    (files, (changes + ops) as u64)
}

fn catch_up() {
    let (requesters, helpers, requests) = if full() {
        (50, 200, 10_000)
    } else {
        (2, 6, 20)
    };
    let t = Instant::now();
    let (_founder_dir, mut founder, id) = community(requesters + helpers);
    let auth = auth_heads(&mut founder, id);
    let rk: Vec<Keypair> = (1..=requesters as u64).map(key).collect();
    let hk: Vec<Keypair> = (requesters as u64 + 1..=(requesters + helpers) as u64)
        .map(key)
        .collect();
    let chunks: Vec<Bundle> = (0..requests)
        .step_by(500)
        .map(|first| {
            let mut b = Bundle::new(id);
            for i in first..(first + 500).min(requests) {
                request_story(id, &rk, &hk, &auth, i, &mut b.changes);
            }
            b
        })
        .collect();
    let crafted: usize = chunks.iter().map(|b| b.changes.len()).sum();
    let dir = seed(&mut founder, id, chunks);
    let (files, stored) = stored_bytes(dir.path(), id);
    println!(
        "catch-up: community of {requests} requests ({crafted} request changes, {} members) \
         seeded in {:.1} s; server stores {:.1} MB of files after a checkpoint, {:.1} MB of \
         signed changes and ops",
        requesters + helpers + 1,
        t.elapsed().as_secs_f64(),
        files as f64 / 1e6,
        stored as f64 / 1e6
    );
    let server = Server::start(dir, |_| {});
    let url = server.url();
    let clients = client_runtime();
    let reader = &rk[0];

    // The transfer: a raw client reads every frame up to `Subscribed`.
    let mut items = 0;
    let mut bytes = 0;
    let mut server_heads = Heads::empty();
    let transfer = median_of(3, |_| {
        let start = Instant::now();
        let got = clients.block_on(member(&url, reader, id, Heads::empty())).1;
        let took = start.elapsed().as_secs_f64();
        items = got
            .bundles
            .iter()
            .map(|b| b.ops.len() + b.changes.len())
            .sum();
        bytes = got.bytes;
        server_heads = got.heads;
        took
    });
    let changes_and_ops = items;
    assert!(
        changes_and_ops > crafted,
        "the catch-up carried {changes_and_ops} items for {crafted} request changes"
    );
    let ratio_files = bytes as f64 / files as f64;
    let ratio_stored = bytes as f64 / stored as f64;
    println!(
        "catch-up transfer ({changes_and_ops} ops + changes, {:.1} MB on the wire): {:.0} ms \
         (target ≤ 2 s: {})",
        bytes as f64 / 1e6,
        transfer * 1e3,
        verdict(transfer <= 2.0)
    );
    println!(
        "catch-up wire bytes: {ratio_files:.2}× the server's files, {ratio_stored:.2}× its \
         stored changes and ops (target ≤ 1.5×: {} / {})",
        verdict(ratio_files <= 1.5),
        verdict(ratio_stored <= 1.5)
    );

    // A device running the engine, from nothing to holding everything.
    // The CPU time it takes (the server's and the device's threads both run
    // in this process), per run: less noisy than the time on the clock.
    let mut cpu = Vec::new();
    let device = median_of(2, |_| {
        let dir = tempfile::tempdir().unwrap();
        let k = Karmyq::restore(dir.path(), &reader.export_secret()).unwrap();
        let k = Arc::new(Mutex::new(k));
        let (tx, rx) = std::sync::mpsc::channel();
        let cpu_start = cpu_seconds();
        let start = Instant::now();
        let engine = SyncEngine::start(k.clone(), &url, id, EngineOptions::default(), move |s| {
            let _ = tx.send(s);
        })
        .unwrap();
        loop {
            match rx.recv_timeout(PATIENCE).expect("a status") {
                SyncStatus::UpToDate => break,
                SyncStatus::Rejected { reason } => panic!("refused: {reason}"),
                _ => {}
            }
        }
        let took = start.elapsed().as_secs_f64();
        cpu.push(cpu_seconds() - cpu_start);
        engine.stop();
        let heads = k.lock().unwrap().community(id).unwrap().heads().unwrap();
        assert_eq!(
            heads, server_heads,
            "the device holds what the server holds"
        );
        took
    });
    println!(
        "catch-up by a device (engine, applies and projects everything): {:.0} ms ({:.0} \
         changes/s; target ≤ 2 s: {})",
        device * 1e3,
        changes_and_ops as f64 / device,
        verdict(device <= 2.0)
    );
    let cpu: Vec<String> = cpu.iter().map(|s| format!("{s:.2}")).collect();
    println!(
        "  CPU time of each run, the server's included: {} s",
        cpu.join(", ")
    );
    drop(clients);
    server.stop();
}

// ----- 2. ingest ---------------------------------------------------------------

fn ingest() {
    let (devices, requests) = if full() { (50, 200) } else { (3, 2) };
    let (_founder_dir, mut founder, id) = community(devices);
    let auth = auth_heads(&mut founder, id);
    let keys: Vec<Keypair> = (1..=devices as u64).map(key).collect();
    let throughput = median_of(3, |run| {
        let dir = seed(&mut founder, id, []);
        let server = Server::start(dir, |_| {});
        let url = server.url();
        let uploads: Vec<Bundle> = keys
            .iter()
            .enumerate()
            .map(|(d, kp)| Bundle {
                changes: own_requests(id, kp, ((run * 1000 + d) as u64) << 20, requests, &auth),
                ..Bundle::new(id)
            })
            .collect();
        let total: usize = uploads.iter().map(|b| b.changes.len()).sum();
        let clients = client_runtime();
        let heads = clients
            .block_on(member(&url, &keys[0], id, Heads::empty()))
            .1
            .heads;
        let barrier = Arc::new(tokio::sync::Barrier::new(devices + 1));
        let tasks: Vec<_> = uploads
            .into_iter()
            .enumerate()
            .map(|(d, upload)| {
                let kp = key(d as u64 + 1);
                let (url, heads, barrier) = (url.clone(), heads.clone(), barrier.clone());
                clients.spawn(async move {
                    // KQB_INGEST_ALONE=1: upload without subscribing (no
                    // relay to the 49 others), to tell storing from relaying.
                    let mut ws = if std::env::var("KQB_INGEST_ALONE").is_ok() {
                        let mut ws = connect(&url).await;
                        login(&mut ws, &kp).await;
                        ws
                    } else {
                        member(&url, &kp, id, heads).await.0
                    };
                    // As the engine splits an upload (1 MiB, 1,000 items).
                    let pieces = split(upload.clone(), 1 << 20, 1_000);
                    barrier.wait().await;
                    for piece in &pieces {
                        send(
                            &mut ws,
                            &Frame::Bundle {
                                bytes: piece.encode(),
                            },
                        )
                        .await;
                    }
                    let mut accepted = 0;
                    let mut acks = 0;
                    while acks < pieces.len() {
                        match recv(&mut ws).await.0 {
                            Frame::Ack(ack) => {
                                assert!(ack.rejected.is_empty(), "refused: {:?}", ack.rejected);
                                accepted += ack.accepted as usize;
                                acks += 1;
                            }
                            Frame::Bundle { .. } => {} // others' changes, relayed
                            other => panic!("unexpected {other:?}"),
                        }
                    }
                    (ws, accepted)
                })
            })
            .collect();
        let took = clients.block_on(async {
            barrier.wait().await;
            let start = Instant::now();
            let mut accepted = 0;
            let mut conns = Vec::new();
            for t in tasks {
                let (ws, n) = t.await.unwrap();
                accepted += n;
                conns.push(ws);
            }
            let took = start.elapsed().as_secs_f64();
            assert_eq!(accepted, total, "every uploaded change was stored");
            took
        });
        drop(clients);
        server.stop();
        let rate = total as f64 / took;
        println!(
            "  ingest run {run}: {total} changes from {devices} devices in {:.0} ms: {rate:.0} changes/s",
            took * 1e3
        );
        rate
    });
    println!(
        "ingest, {devices} devices at once: {throughput:.0} changes/s (target ≥ 20,000/s: {})",
        verdict(throughput >= 20_000.0)
    );
}

// ----- 3. idle connections, 4. fan-out: clients in a child process -------------

/// Runs this binary again as `mode` (clients, or a server), with `env`;
/// returns the child and its output lines.
fn spawn_child(
    mode: &str,
    env: &[(&str, String)],
) -> (
    std::process::Child,
    std::io::Lines<BufReader<std::process::ChildStdout>>,
) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.env("KQB_CHILD", mode)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    (child, lines)
}

fn env_of(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} not set"))
}

fn env_num(name: &str) -> u64 {
    env_of(name).parse().unwrap()
}

fn idle() {
    let n = if full() { 5_000 } else { 20 };
    let limit = open_files_limit();
    if limit < n as u64 + 200 {
        println!(
            "idle: SKIPPED: {n} connections need more open files than the soft limit {limit}; \
             run under `ulimit -n 20000`"
        );
        return;
    }
    let t = Instant::now();
    let (_founder_dir, mut founder, id) = community(n);
    let dir = seed(&mut founder, id, []);
    println!(
        "idle: community of {} members seeded in {:.1} s",
        n + 1,
        t.elapsed().as_secs_f64()
    );
    let clients = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let per_conn = median_of(3, |_| {
        // The server in a process of its own, fresh each run, so that its
        // resident memory is its own and not what an earlier run left.
        let data = copy_dir(&dir);
        let (mut server, mut out) =
            spawn_child("server", &[("KQB_DIR", data.path().display().to_string())]);
        let addr = out.next().expect("server output").unwrap();
        let addr = addr.strip_prefix("addr ").expect("the server's address");
        let url = format!("ws://{addr}/v1/sync");
        // One member subscribes first, so the community is loaded and the
        // runtime warm before the baseline; the clients reuse its heads.
        let (ws, got) = clients.block_on(member(&url, &key(1), id, Heads::empty()));
        drop(ws);
        std::thread::sleep(Duration::from_millis(300));
        let before = rss_of(server.id());
        let (mut child, mut lines) = spawn_child(
            "idle",
            &[
                ("KQB_URL", url.clone()),
                ("KQB_COMMUNITY", id.to_string()),
                ("KQB_COUNT", n.to_string()),
            ],
        );
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "{}", heads_to_line(id, &got.heads)).unwrap();
        let ready = lines.next().expect("child output").unwrap();
        assert_eq!(ready, format!("ready {n}"), "every client subscribed");
        // Let the server settle (tasks parked, buffers as they stay).
        std::thread::sleep(Duration::from_millis(500));
        let after = rss_of(server.id());
        assert_eq!(subscriptions(addr), n as u64, "every client is subscribed");
        stdin.write_all(b"stop\n").unwrap();
        assert!(child.wait().unwrap().success());
        server.stdin.take().unwrap().write_all(b"stop\n").unwrap();
        assert!(server.wait().unwrap().success());
        let per = after.saturating_sub(before) as f64 / n as f64;
        println!(
            "  idle run: server RSS {:.1} MB -> {:.1} MB with {n} connections: {:.1} KB each",
            before as f64 / 1e6,
            after as f64 / 1e6,
            per / 1e3
        );
        per
    });
    println!(
        "idle: {n} devices logged in and subscribed: {:.1} KB of server memory each (target ≤ \
         50 KB: {})",
        per_conn / 1e3,
        verdict(per_conn <= 50_000.0)
    );
}

/// Child: a server over the data directory `KQB_DIR`; prints its address,
/// stops when a line comes on stdin.
fn server_process() {
    let dir = std::path::PathBuf::from(env_of("KQB_DIR"));
    let server = Server::start_at(&dir, None, |_| {});
    println!("addr {}", server.addr);
    std::io::stdout().flush().unwrap();
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    server.stop();
}

/// A process's resident memory, in bytes.
fn rss_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

/// Heads as one line of text, for a child process.
fn heads_to_line(community: CommunityId, heads: &Heads) -> String {
    let frame = Frame::Subscribed {
        community,
        heads: heads.clone(),
    };
    hex::encode(frame.encode())
}

fn heads_from_stdin() -> Heads {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
    let bytes = hex::decode(line.trim()).unwrap();
    match Frame::decode(&bytes).unwrap() {
        Frame::Subscribed { heads, .. } => heads,
        other => panic!("not heads: {other:?}"),
    }
}

/// Subscriptions the server at `addr` counts, from `/metrics`.
fn subscriptions(addr: &str) -> u64 {
    metric(addr, "karmyq_subscriptions") as u64
}

/// One value of the server's `/metrics` (0 if absent).
fn metric(addr: &str, series: &str) -> f64 {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

/// Child: `KQB_COUNT` members (keys 1..) logged in and subscribed, held
/// until a line comes on stdin.
fn idle_clients() {
    let url = env_of("KQB_URL");
    let id = CommunityId::from_hex(&env_of("KQB_COMMUNITY")).unwrap();
    let n = env_num("KQB_COUNT");
    let heads = heads_from_stdin();
    let rt = client_runtime();
    let conns = rt.block_on(async {
        let mut conns = Vec::new();
        // In waves, so the listen backlog is not flooded.
        let keys: Vec<u64> = (1..=n).collect();
        for wave in keys.chunks(250) {
            let tasks: Vec<_> = wave
                .iter()
                .map(|&k| {
                    let (url, heads) = (url.clone(), heads.clone());
                    tokio::spawn(async move { member(&url, &key(k), id, heads).await.0 })
                })
                .collect();
            for t in tasks {
                conns.push(t.await.unwrap());
            }
        }
        conns
    });
    println!("ready {}", conns.len());
    std::io::stdout().flush().unwrap();
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    drop(conns);
    drop(rt);
}

fn fanout() {
    let (receivers, rate, seconds) = if full() { (1_000, 500, 5) } else { (5, 50, 1) };
    // For exploring: KQB_FANOUT=receivers,rate,seconds.
    let (receivers, rate, seconds) = match std::env::var("KQB_FANOUT") {
        Ok(v) => {
            let v: Vec<usize> = v.split(',').map(|x| x.parse().unwrap()).collect();
            (v[0], v[1], v[2])
        }
        Err(_) => (receivers, rate, seconds),
    };
    // The changes come from members writing at the server's default rate
    // limit (50 frames/s each), as many as that takes: 10 for 500/s.
    // KQB_WRITERS=1 has one member write them all (its limit raised).
    let writers = match std::env::var("KQB_WRITERS") {
        Ok(v) => v.parse().unwrap(),
        Err(_) => rate.div_ceil(50).max(1),
    };
    let t = Instant::now();
    // Members 1..=receivers read; members receivers + 1.. write.
    let (_founder_dir, mut founder, id) = community(receivers + writers);
    let dir = seed(&mut founder, id, []);
    println!(
        "fan-out: community of {} members seeded in {:.1} s",
        receivers + writers + 1,
        t.elapsed().as_secs_f64()
    );
    // Each writer uploads each change in its own frame as it is written
    // (batch 1), or every 5 changes (the latency still counts from when
    // each change was written).
    let batches: Vec<usize> = match std::env::var("KQB_BATCHES") {
        Ok(v) => v.split(',').map(|x| x.parse().unwrap()).collect(),
        Err(_) => vec![1],
    };
    for batch in batches {
        fanout_with(&dir, id, receivers, writers, rate, seconds, batch);
    }
}

fn fanout_with(
    dir: &TempDir,
    id: CommunityId,
    receivers: usize,
    writers: usize,
    rate: usize,
    seconds: usize,
    batch: usize,
) {
    let one = |run: usize| {
        let per_writer = rate.div_ceil(writers) as u32;
        let server = Server::start(copy_dir(dir), |c| {
            // One writer for the whole rate is more than the default limit
            // (50 frames/s, burst 200): its limit is raised.
            c.rate_burst = c.rate_burst.max(2 * per_writer);
            c.rate_per_second = c.rate_per_second.max(per_writer);
            // For exploring: KQB_PUSH_MS=<push interval>.
            if let Ok(ms) = std::env::var("KQB_PUSH_MS") {
                c.push_interval = Duration::from_millis(ms.parse().unwrap());
            }
        });
        let (mut child, mut lines) = spawn_child(
            "fanout",
            &[
                ("KQB_URL", server.url()),
                ("KQB_COMMUNITY", id.to_string()),
                ("KQB_COUNT", receivers.to_string()),
                ("KQB_WRITERS", writers.to_string()),
                ("KQB_RATE", rate.to_string()),
                ("KQB_SECONDS", seconds.to_string()),
                ("KQB_RUN", (batch * 10 + run).to_string()),
                ("KQB_BATCH", batch.to_string()),
            ],
        );
        // The child says "start" when its clock starts, "end" when every
        // subscriber has every change, then its result.
        let started = lines.next().expect("child output").unwrap();
        assert_eq!(started, "start", "child said {started}");
        let (server_cpu, wall) = (cpu_seconds(), Instant::now());
        let ended = lines.next().expect("child output").unwrap();
        assert_eq!(ended, "end", "child said {ended}");
        let (server_cpu, wall) = (cpu_seconds() - server_cpu, wall.elapsed().as_secs_f64());
        let result = lines.next().expect("child output").unwrap();
        assert!(child.wait().unwrap().success());
        let addr = server.addr.to_string();
        let ingest = metric(&addr, "karmyq_ingest_seconds_sum")
            / metric(&addr, "karmyq_ingest_seconds_count");
        println!(
            "  fan-out: an upload spent {:.2} ms in the store on average (validate, store, \
             relay; uploads queued together are stored together)",
            ingest * 1e3
        );
        server.stop();
        // "latency <samples> <expected> <p50> <p90> <p99> <p99.9> <max>" (µs)
        // "<client CPU s>"
        let v: Vec<f64> = result
            .strip_prefix("latency ")
            .unwrap_or_else(|| panic!("child said {result}"))
            .split(' ')
            .map(|x| x.parse().unwrap())
            .collect();
        assert_eq!(v[0], v[1], "every change reached every subscriber");
        println!(
            "  fan-out run {run}: CPU over {wall:.1} s: server {:.0}%, clients {:.0}% (of one core)",
            server_cpu / wall * 100.0,
            v[7] / wall * 100.0
        );
        println!(
            "  fan-out run {run}: {} deliveries: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, \
             p99.9 {:.1} ms, max {:.1} ms",
            v[0],
            v[2] / 1e3,
            v[3] / 1e3,
            v[4] / 1e3,
            v[5] / 1e3,
            v[6] / 1e3
        );
        v[4] / 1e3
    };
    if full() {
        // The first run in a process is slow: its store takes 1.7–3 ms an
        // upload against 0.7–1 ms in every later run, with a fresh server
        // and a fresh copy of the data each time (warm-up of the process,
        // not of the server's data: flushing the seeded files first does
        // not change it). A server that has run for a while is past it.
        println!("  fan-out: a warm-up run (9), not counted:");
        one(9);
    }
    let p99 = median_of(2, one);
    println!(
        "fan-out: {receivers} subscribers, {rate} changes/s by {writers} member(s), uploaded \
         {batch} at a time: p99 {p99:.1} ms (target ≤ 50 ms: {})",
        verdict(p99 <= 50.0)
    );
}

/// A copy of a server's data directory (each run starts from the same
/// state).
fn copy_dir(from: &TempDir) -> TempDir {
    let to = tempfile::tempdir().unwrap();
    fn copy(from: &std::path::Path, to: &std::path::Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let target = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                copy(&entry.path(), &target);
            } else if entry.file_name() != "lock" {
                std::fs::copy(entry.path(), target).unwrap();
            }
        }
    }
    copy(from.path(), to.path());
    to
}

/// The wire form of a bundle frame.
fn bundle_frame(bundle: Bundle) -> Vec<u8> {
    Frame::Bundle {
        bytes: bundle.encode(),
    }
    .encode()
}

/// How a bundle whose last change is `change` ends on the wire.
fn codec_tail(change: &SignedChange) -> Vec<u8> {
    let mut alone = Bundle::new(CommunityId::from_bytes([0; 32]));
    let before = alone.encode().len();
    alone.changes.push(change.clone());
    let bytes = alone.encode();
    // The count (a one-byte varint) went from 0 to 1; what follows it is
    // the change's own encoding.
    bytes[before..].to_vec()
}

/// Child: `KQB_COUNT` subscribers and one writer posting `KQB_RATE`
/// requests a second for `KQB_SECONDS`, each in its own frame; prints the
/// delivery latencies.
fn fanout_clients() {
    let url = env_of("KQB_URL");
    let id = CommunityId::from_hex(&env_of("KQB_COMMUNITY")).unwrap();
    let n = env_num("KQB_COUNT");
    let writers = env_num("KQB_WRITERS");
    let rate = env_num("KQB_RATE");
    let seconds = env_num("KQB_SECONDS");
    let run = env_num("KQB_RUN");
    let batch = env_num("KQB_BATCH") as usize;
    let total = (rate * seconds) as usize;
    let period = Duration::from_secs(1) / rate as u32;
    let rt = client_runtime();
    let line = rt.block_on(async move {
        // Writer w writes changes w, w + writers, w + 2 writers...
        let mut writer_conns = Vec::new();
        let mut heads = Heads::empty();
        for w in 0..writers {
            let keys = key(n + 1 + w);
            let (ws, got) = member(&url, &keys, id, Heads::empty()).await;
            heads = got.heads;
            writer_conns.push((keys, ws));
        }
        // The writers' changes, crafted before the clock starts, and one
        // more from writer 0, uploaded once every other change is
        // acknowledged: it is the last change each subscriber receives.
        let changes: Vec<SignedChange> = (0..=total)
            .map(|i| {
                let nonce = (run << 40) | i as u64;
                post(
                    id,
                    &writer_conns[if i == total { 0 } else { i % writers as usize }].0,
                    nonce,
                    &heads.auth,
                    at(Timestamp::DAY + i as i64),
                )
                .2
            })
            .collect();
        let index: Arc<HashMap<[u8; 32], usize>> = Arc::new(
            changes
                .iter()
                .enumerate()
                .map(|(i, c)| (c.envelope.change_hash, i))
                .collect(),
        );
        // A frame ends with the encoding of the last change of its bundle.
        let last = changes[total].clone();
        let marker: Arc<[u8]> = codec_tail(&last).into();
        // What a subscriber receives, with room for framing: its arena.
        let arena_bytes = changes.iter().map(|c| c.bytes.len() + 256).sum::<usize>() * 5 / 4;
        let (start_tx, start_rx) = tokio::sync::watch::channel(None::<Instant>);
        let mut tasks = Vec::new();
        let keys: Vec<u64> = (1..=n).collect();
        for wave in keys.chunks(250) {
            let subs: Vec<_> = wave
                .iter()
                .map(|&k| {
                    let (url, heads) = (url.clone(), heads.clone());
                    tokio::spawn(async move { member(&url, &key(k), id, heads).await.0 })
                })
                .collect();
            for s in subs {
                let mut ws = s.await.unwrap();
                let (marker, mut start) = (marker.clone(), start_rx.clone());
                // Each frame is kept with the moment it was read off the
                // socket, and decoded after the run: on these two cores the
                // thousand subscribers' decoding (a thousand phones' work)
                // would otherwise compete with the server being measured.
                // Frames are copied into an arena written once before the
                // clock starts: 1.5 GB of fresh pages for a thousand
                // subscribers, faulted in and cleared during the run, took
                // a quarter of the clients' CPU.
                tasks.push(tokio::spawn(async move {
                    let mut arena: Vec<u8> = Vec::with_capacity(arena_bytes);
                    arena.resize(arena_bytes, 1);
                    arena.clear();
                    let mut frames = Vec::with_capacity(1024);
                    start.wait_for(Option::is_some).await.unwrap();
                    loop {
                        match tokio::time::timeout(PATIENCE, ws.next()).await {
                            Ok(Some(Ok(Message::Binary(b)))) => {
                                let arrived = Instant::now();
                                let end = b.ends_with(&marker);
                                let from = arena.len();
                                arena.extend_from_slice(&b);
                                frames.push((arrived, from..arena.len()));
                                if end {
                                    break (arena, frames);
                                }
                            }
                            Ok(Some(Ok(_))) => {}
                            _ => panic!("a subscriber's connection closed or went quiet"),
                        }
                    }
                }));
            }
        }
        // The writers: change i is written at t0 + i * period by writer
        // i % writers, which uploads every `batch` of its changes, when the
        // last of them is written.
        let t0 = Instant::now() + Duration::from_millis(100);
        let writers = writers as usize;
        let changes = Arc::new(changes);
        let mut acks = Vec::new();
        let mut uploads = Vec::new();
        for (w, (_, ws)) in writer_conns.into_iter().enumerate() {
            let (mut sink, mut stream) = ws.split();
            let mine: Vec<usize> = (w..total).step_by(writers).collect();
            let expected = mine.len();
            // Writer 0 also uploads the last change, later.
            let (done_tx, done_rx) = tokio::sync::oneshot::channel();
            acks.push((
                done_rx,
                tokio::spawn(async move {
                    let mut accepted = 0;
                    let mut done_tx = Some(done_tx);
                    while accepted < expected + usize::from(w == 0) {
                        if accepted >= expected
                            && let Some(tx) = done_tx.take()
                        {
                            let _ = tx.send(());
                        }
                        match stream.next().await {
                            Some(Ok(Message::Binary(b))) => {
                                if let Ok(Frame::Ack(ack)) = Frame::decode(&b) {
                                    assert!(ack.rejected.is_empty(), "refused: {:?}", ack.rejected);
                                    accepted += ack.accepted as usize;
                                }
                            }
                            Some(Ok(_)) => {}
                            _ => panic!("writer's connection closed"),
                        }
                    }
                    if let Some(tx) = done_tx.take() {
                        let _ = tx.send(());
                    }
                }),
            ));
            let changes = changes.clone();
            uploads.push(tokio::spawn(async move {
                for piece in mine.chunks(batch) {
                    let last = *piece.last().expect("a change");
                    tokio::time::sleep_until((t0 + period * last as u32).into()).await;
                    let bundle = Bundle {
                        changes: piece.iter().map(|&i| changes[i].clone()).collect(),
                        ..Bundle::new(id)
                    };
                    sink.send(Message::Binary(bundle_frame(bundle).into()))
                        .await
                        .unwrap();
                }
                sink
            }));
        }
        start_tx.send(Some(t0)).unwrap();
        println!("start");
        let cpu = cpu_seconds();
        let mut sinks = Vec::new();
        for u in uploads {
            sinks.push(u.await.unwrap());
        }
        let mut ack_tasks = Vec::new();
        for (done, task) in acks {
            tokio::time::timeout(PATIENCE, done).await.unwrap().unwrap();
            ack_tasks.push(task);
        }
        let end = Bundle {
            changes: vec![changes[total].clone()],
            ..Bundle::new(id)
        };
        sinks[0]
            .send(Message::Binary(bundle_frame(end).into()))
            .await
            .unwrap();
        for a in ack_tasks {
            tokio::time::timeout(PATIENCE, a).await.unwrap().unwrap();
        }
        let mut received = Vec::with_capacity(tasks.len());
        for t in tasks {
            received.push(tokio::time::timeout(PATIENCE, t).await.unwrap().unwrap());
        }
        let cpu = cpu_seconds() - cpu;
        println!("end");
        // Off the clock: decode every frame; each subscriber must have
        // every change exactly once.
        let mut all = Vec::with_capacity(total * n as usize);
        for (arena, frames) in received {
            let mut seen = vec![false; total];
            for (arrived, range) in frames {
                let Ok(Frame::Bundle { bytes }) = Frame::decode(&arena[range]) else {
                    continue;
                };
                for c in Bundle::decode(&bytes).unwrap().changes {
                    let i = index[&c.envelope.change_hash];
                    if i == total {
                        continue;
                    }
                    assert!(!seen[i], "change {i} delivered twice");
                    seen[i] = true;
                    let written = t0 + period * i as u32;
                    all.push(arrived.saturating_duration_since(written).as_micros() as u32);
                }
            }
        }
        all.sort_unstable();
        let pct = |p: f64| {
            let rank = ((p / 100.0) * all.len() as f64).ceil() as usize;
            all[rank.clamp(1, all.len()) - 1]
        };
        format!(
            "latency {} {} {} {} {} {} {} {}",
            all.len(),
            total * n as usize,
            pct(50.0),
            pct(90.0),
            pct(99.0),
            pct(99.9),
            pct(100.0),
            cpu
        )
    });
    println!("{line}");
}

fn main() {
    match std::env::var("KQB_CHILD").as_deref() {
        Ok("idle") => return idle_clients(),
        Ok("fanout") => return fanout_clients(),
        Ok("server") => return server_process(),
        _ => {}
    }
    let only = std::env::var("KQB_ONLY").unwrap_or_default();
    let want = |name: &str| only.is_empty() || only.split(',').any(|o| o == name);
    println!(
        "sync bench ({} mode)",
        if full() { "full" } else { "smoke" }
    );
    if want("catch-up") {
        catch_up();
    }
    if want("ingest") {
        ingest();
    }
    if want("idle") {
        idle();
    }
    if want("fanout") {
        fanout();
    }
}
