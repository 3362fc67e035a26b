//! The server's replica of every community: a `Karmyq` client of its own
//! (own key pair, one SQLite file per community in the data directory),
//! owned by one dedicated thread. rusqlite is synchronous and `Karmyq` is
//! one writer, so async tasks send it commands over a bounded channel and
//! await the answer; nothing holds a lock across an `.await`.
//!
//! Registering a subscriber, computing its catch-up, and relaying what an
//! upload added all happen on this thread, in store order: a subscriber
//! misses nothing between its catch-up and the live push, and receives
//! changes in the order they were stored.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use karmyq_core::sync::{Ack, Frame, JoinDecline, JoinRequest};
use karmyq_core::{
    Background, Bundle, CommunityId, DocId, Heads, Item, Karmyq, MemberId, OpBody, Page, Prepared,
    Rejection, Report, Resolved, Role, Signature, SignedChange, SignedOp, Timestamp, Visibility,
    offers_created,
};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::hub::{self, Hub, Outbound, Relay, Subscriber};
use crate::metrics::Metrics;

/// A public community, as the directory lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DirectoryEntry {
    /// The community id (hex).
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its description.
    pub description: String,
    /// How many members.
    pub member_count: usize,
}

/// Why the store refused a request as a whole.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    /// Not a current member, or no such community (one answer for both).
    #[error("not a member")]
    NotMember,
    /// The store failed.
    #[error("store: {0}")]
    Core(#[from] karmyq_core::Error),
    /// The store thread is gone (shutting down).
    #[error("store stopped")]
    Stopped,
    /// The server's own file failed.
    #[error("server file: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

/// What became of a request to join.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JoinOutcome {
    /// Taken (or, for a community the server does not hold or a member
    /// already in, silently dropped: the same answer, so nothing leaks).
    Received,
    /// A public community: join it directly.
    Public,
}

/// What a subscription gets: the catch-up's first page and where the next
/// begins, the server's heads, and for an admin or moderator the pending
/// requests to join.
pub(crate) type Subscription = (Bundle, Option<Page>, Heads, Option<Vec<JoinRequest>>);

/// A page of a catch-up, and where the next begins.
pub(crate) type Paged = (Bundle, Option<Page>);

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// The store's answer to a queued command, to await later.
#[derive(Debug)]
pub(crate) struct Pending<T>(oneshot::Receiver<Result<T, StoreError>>);

impl<T> Pending<T> {
    /// Waits for the answer.
    pub async fn answer(self) -> Result<T, StoreError> {
        self.0.await.map_err(|_| StoreError::Stopped)?
    }
}

enum Cmd {
    Subscribe {
        community: CommunityId,
        heads: Heads,
        conn: u64,
        sub: Subscriber,
        max_bytes: usize,
        reply: Reply<Subscription>,
    },
    Page {
        community: CommunityId,
        page: Page,
        sub: Subscriber,
        max_bytes: usize,
        reply: Reply<Paged>,
    },
    Join {
        request: JoinRequest,
        reply: Reply<JoinOutcome>,
    },
    Decline {
        decline: JoinDecline,
        reply: Reply<()>,
    },
    SetBlocks {
        member: MemberId,
        blocked: Vec<MemberId>,
        reply: Reply<()>,
    },
    Ingest(Upload),
    Directory {
        reply: Reply<Vec<DirectoryEntry>>,
    },
}

/// An uploaded bundle waiting for the store thread.
struct Upload {
    uploader: MemberId,
    conn: u64,
    bundle: Bundle,
    /// Its changes decoded and newest signatures checked, off this thread.
    prepared: Prepared,
    reply: Reply<Ack>,
}

/// Most uploads stored in one transaction.
const GROUP_UPLOADS: usize = 64;

/// Most threads that prepare uploads.
const MAX_PREPARERS: usize = 4;

/// Most items (ops and changes) of an upload prepared on its connection's
/// task rather than on a preparing thread: a live write is one change, and
/// a preparing thread, at a lower priority, can wait behind a busy
/// server's connections (the fan-out bench's p99 then doubled).
const PREPARE_HERE_ITEMS: usize = 4;

/// Most changes stored in one transaction of several uploads.
const GROUP_CHANGES: usize = 2_000;

/// A handle to the store thread.
#[derive(Debug, Clone)]
pub(crate) struct Store {
    tx: mpsc::Sender<Cmd>,
    /// Threads that prepare uploads (but the smallest, see
    /// [`PREPARE_HERE_ITEMS`]), each on one thread, first come first
    /// served: one per core, at a lower priority than the store thread
    /// (and the connections), so the store thread, which every upload
    /// waits for, always has a core when it has work. (Preparing every
    /// waiting upload at once, each on every core, left the store thread a
    /// share of a core while they ran, and a core idle once they were
    /// done; one preparing thread per core but one, at the same priority,
    /// stored ~5% fewer changes a second than these: ingest bench medians
    /// 21,200 against 22,200.)
    preparing: Arc<Background>,
}

impl std::fmt::Debug for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Cmd::Subscribe { .. } => "Subscribe",
            Cmd::Page { .. } => "Page",
            Cmd::Ingest(_) => "Ingest",
            Cmd::Directory { .. } => "Directory",
            Cmd::Join { .. } => "Join",
            Cmd::Decline { .. } => "Decline",
            Cmd::SetBlocks { .. } => "SetBlocks",
        })
    }
}

impl Store {
    /// Opens the data directory and starts the store thread. The thread
    /// ends when every handle is dropped.
    pub fn start(
        dir: &Path,
        pacing: hub::Pacing,
        hub: Arc<Hub>,
        metrics: Arc<Metrics>,
    ) -> Result<(Store, MemberId, std::thread::JoinHandle<()>), karmyq_core::Error> {
        let karmyq = Karmyq::open_relay(dir)?;
        let me = karmyq.member_id();
        let db = open_server_db(&dir.join("server.sqlite3"))
            .map_err(|e| karmyq_core::Error::Corrupt(format!("server.sqlite3: {e}")))?;
        let (tx, rx) = mpsc::channel(256);
        let blocks = load_blocks(&db)
            .map_err(|e| karmyq_core::Error::Corrupt(format!("server.sqlite3: {e}")))?;
        let worker = Worker {
            karmyq,
            db,
            relays: hub::start_fanout(hub.clone(), pacing),
            hub,
            metrics,
            blocks,
        };
        let handle = std::thread::Builder::new()
            .name("karmyq-store".into())
            .spawn(move || worker.run(rx))?;
        let preparing = Arc::new(Background::per_core("karmyq-prepare", MAX_PREPARERS));
        Ok((Store { tx, preparing }, me, handle))
    }

    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Cmd) -> Result<T, StoreError> {
        self.queue(make).await?.answer().await
    }

    /// Queues a command for the store thread; its answer comes later.
    async fn queue<T>(&self, make: impl FnOnce(Reply<T>) -> Cmd) -> Result<Pending<T>, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| StoreError::Stopped)?;
        Ok(Pending(answer))
    }

    /// Subscribes a connection if its member is a current member: returns
    /// the catch-up for `heads` (its first page of about `max_bytes`, and
    /// where the next begins: [`Store::page`]) and the server's heads.
    pub async fn subscribe(
        &self,
        community: CommunityId,
        heads: Heads,
        conn: u64,
        sub: Subscriber,
        max_bytes: usize,
    ) -> Result<Subscription, StoreError> {
        self.ask(|reply| Cmd::Subscribe {
            community,
            heads,
            conn,
            sub,
            max_bytes,
            reply,
        })
        .await
    }

    /// The next page of a subscription's catch-up, queued now and awaited
    /// later (so the store reads it while the page before is sent), if its
    /// member is still a member.
    pub async fn page(
        &self,
        community: CommunityId,
        page: Page,
        sub: Subscriber,
        max_bytes: usize,
    ) -> Result<Pending<Paged>, StoreError> {
        self.queue(|reply| Cmd::Page {
            community,
            page,
            sub,
            max_bytes,
            reply,
        })
        .await
    }

    /// Queues an uploaded bundle to be validated, stored and relayed, in
    /// the order queued; the answer comes later, so a connection can read
    /// its next upload meanwhile.
    pub async fn submit(
        &self,
        uploader: MemberId,
        conn: u64,
        bundle: Bundle,
    ) -> Result<Pending<Ack>, StoreError> {
        // Decoding and signatures need no replica: done ahead, so the
        // store thread only judges and stores. A live change is prepared
        // here, at once (tens of µs); a larger upload on a preparing thread.
        let (bundle, prepared) = if bundle.len() <= PREPARE_HERE_ITEMS {
            let prepared = Prepared::for_relay(&bundle, 1);
            (bundle, prepared)
        } else {
            let (done, preparation) = oneshot::channel();
            self.preparing.run(move || {
                let prepared = Prepared::for_relay(&bundle, 1);
                // (The connection may have gone meanwhile.)
                let _ = done.send((bundle, prepared));
            });
            preparation.await.map_err(|_| StoreError::Stopped)?
        };
        self.queue(|reply| {
            Cmd::Ingest(Upload {
                uploader,
                conn,
                bundle,
                prepared,
                reply,
            })
        })
        .await
    }

    /// Leaves a verified request to join.
    pub async fn join(&self, request: JoinRequest) -> Result<JoinOutcome, StoreError> {
        self.ask(|reply| Cmd::Join { request, reply }).await
    }

    /// Forgets a request to join, declined by a verified admin or
    /// moderator of the community (else `NotMember`: unknown community and
    /// no right to decline get the same answer).
    pub async fn decline(&self, decline: JoinDecline) -> Result<(), StoreError> {
        self.ask(|reply| Cmd::Decline { decline, reply }).await
    }

    /// Keeps whom `member` blocked, as their device told at login: no
    /// offer of theirs on `member`'s requests is taken from then on.
    pub async fn set_blocks(
        &self,
        member: MemberId,
        blocked: Vec<MemberId>,
    ) -> Result<(), StoreError> {
        self.ask(|reply| Cmd::SetBlocks {
            member,
            blocked,
            reply,
        })
        .await
    }

    /// The public communities.
    pub async fn directory(&self) -> Result<Vec<DirectoryEntry>, StoreError> {
        self.ask(|reply| Cmd::Directory { reply }).await
    }
}

/// The server's own file: requests to join. Schema version 1.
fn open_server_db(path: &Path) -> rusqlite::Result<rusqlite::Connection> {
    let conn = rusqlite::Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "temp_store", 2)?;
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version == 0 {
        conn.execute_batch(
            "BEGIN IMMEDIATE;
             CREATE TABLE join_requests (
                 community_id BLOB NOT NULL,
                 member_id BLOB NOT NULL,
                 message TEXT NOT NULL,
                 created_at INTEGER NOT NULL,
                 signature BLOB NOT NULL,
                 PRIMARY KEY (community_id, member_id)
             );
             PRAGMA user_version = 1;
             COMMIT;",
        )?;
    }
    if version <= 1 {
        // Version 2: whom each member blocked, as their device last told.
        conn.execute_batch(
            "BEGIN IMMEDIATE;
             CREATE TABLE blocks (
                 member_id BLOB NOT NULL,
                 blocked BLOB NOT NULL,
                 PRIMARY KEY (member_id, blocked)
             ) WITHOUT ROWID;
             PRAGMA user_version = 2;
             COMMIT;",
        )?;
    }
    Ok(conn)
}

struct Worker {
    karmyq: Karmyq,
    db: rusqlite::Connection,
    hub: Arc<Hub>,
    /// The fan-out task's queue.
    relays: mpsc::Sender<Relay>,
    metrics: Arc<Metrics>,
    /// The `blocks` table, (blocker, blocked), read once at start and kept
    /// in step with it: ingest looks a pair up for every change to a
    /// request.
    blocks: HashSet<(MemberId, MemberId)>,
}

/// Every (blocker, blocked) pair the server stores.
fn load_blocks(db: &rusqlite::Connection) -> rusqlite::Result<HashSet<(MemberId, MemberId)>> {
    let member = |bytes: Vec<u8>| {
        <[u8; 32]>::try_from(bytes.as_slice())
            .ok()
            .and_then(|b| MemberId::from_bytes(b).ok())
            .ok_or_else(|| {
                rusqlite::Error::FromSqlConversionFailure(
                    0,
                    rusqlite::types::Type::Blob,
                    "not a member id".into(),
                )
            })
    };
    db.prepare("SELECT member_id, blocked FROM blocks")?
        .query_map([], |r| {
            Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?))
        })?
        .map(|row| {
            let (by, blocked) = row?;
            Ok((member(by)?, member(blocked)?))
        })
        .collect()
}

/// Whether the server lets this op in, given who is a member now: ops by
/// current members, and the ops that make a member (a join, a genesis).
fn admissible(op: &SignedOp, state: Option<&Resolved>, uploader: &MemberId) -> bool {
    let member = state.is_some_and(|s| s.members.contains_key(&op.op.author));
    let founding = matches!(op.op.body, OpBody::Genesis { .. } | OpBody::Join { .. });
    member
        || (founding && op.op.author == *uploader)
        || (founding && state.is_some_and(|s| s.members.contains_key(uploader)))
}

fn refusal(state: Option<&Resolved>, author: MemberId) -> Rejection {
    if state.is_some_and(|s| s.was_removed(&author)) {
        Rejection::AuthorRemoved(author)
    } else {
        Rejection::NotAMember(author)
    }
}

/// Whether `who` may write changes: current members only.
fn author_verdict(auth: Option<&Resolved>, who: &MemberId) -> Option<Rejection> {
    if auth.is_some_and(|s| s.members.contains_key(who)) {
        None
    } else {
        Some(refusal(auth, *who))
    }
}

/// One upload's share of the report on a group of uploads stored
/// together: what was refused before storing (`rejected`), and what became
/// of the changes it `kept`. Shares are taken in upload order: a change
/// stored or parked for an earlier upload of the group is, for a later one
/// that carries it too, already held (`claimed`), as if stored alone.
fn share(
    group: &Report,
    rejected: Vec<(Item, Rejection)>,
    kept: &Bundle,
    claimed: &mut BTreeSet<[u8; 32]>,
) -> Report {
    let hashes: BTreeSet<[u8; 32]> = kept
        .changes
        .iter()
        .map(|c| c.envelope.change_hash)
        .collect();
    let carried = |item: &Item| matches!(item, Item::Change { hash, .. } if hashes.contains(hash));
    let first = |item: &Item| matches!(item, Item::Change { hash, .. } if !claimed.contains(hash));
    let mut report = Report {
        rejected,
        ..Report::default()
    };
    let fresh = |items: &[Item]| -> Vec<Item> {
        items
            .iter()
            .filter(|i| carried(i) && first(i))
            .cloned()
            .collect()
    };
    report.accepted = fresh(&group.accepted);
    report.pending = fresh(&group.pending);
    claimed.extend(hashes.iter().copied());
    let refused: Vec<(Item, Rejection)> = group
        .rejected
        .iter()
        .filter(|(i, _)| carried(i))
        .cloned()
        .collect();
    report.duplicates = kept
        .changes
        .len()
        .saturating_sub(report.accepted.len() + report.pending.len() + refused.len());
    report.rejected.extend(refused);
    report
}

fn merge(into: &mut Report, from: Report) {
    into.accepted.extend(from.accepted);
    into.rejected.extend(from.rejected);
    into.pending.extend(from.pending);
    into.duplicates += from.duplicates;
}

impl Worker {
    fn run(mut self, mut rx: mpsc::Receiver<Cmd>) {
        let mut next = None;
        while let Some(cmd) = next.take().or_else(|| rx.blocking_recv()) {
            match cmd {
                Cmd::Subscribe {
                    community,
                    heads,
                    conn,
                    sub,
                    max_bytes,
                    reply,
                } => {
                    let _ = reply.send(self.subscribe(community, &heads, conn, sub, max_bytes));
                }
                Cmd::Page {
                    community,
                    page,
                    sub,
                    max_bytes,
                    reply,
                } => {
                    let _ = reply.send(self.page(community, page, &sub, max_bytes));
                }
                Cmd::Ingest(upload) => {
                    // Uploads of changes to the same community queued
                    // behind this one are stored with it.
                    let groupable = |u: &Upload, first: &Upload, changes: usize| {
                        u.bundle.ops.is_empty()
                            && u.bundle.community == first.bundle.community
                            && changes + u.bundle.changes.len() <= GROUP_CHANGES
                    };
                    let mut group = vec![upload];
                    let mut changes = group[0].bundle.changes.len();
                    while group[0].bundle.ops.is_empty() && group.len() < GROUP_UPLOADS {
                        match rx.try_recv() {
                            Ok(Cmd::Ingest(u)) if groupable(&u, &group[0], changes) => {
                                changes += u.bundle.changes.len();
                                group.push(u);
                            }
                            Ok(other) => {
                                next = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    self.ingest_group(group);
                }
                Cmd::Directory { reply } => {
                    let _ = reply.send(self.directory());
                }
                Cmd::Join { request, reply } => {
                    let _ = reply.send(self.join(request));
                }
                Cmd::Decline { decline, reply } => {
                    let _ = reply.send(self.decline(decline));
                }
                Cmd::SetBlocks {
                    member,
                    blocked,
                    reply,
                } => {
                    let _ = reply.send(self.set_blocks(member, &blocked));
                }
            }
        }
        tracing::info!("store stopped");
    }

    fn state(&mut self, id: CommunityId) -> Option<Resolved> {
        self.karmyq
            .community(id)
            .ok()
            .map(|c| c.authority().clone())
    }

    fn subscribe(
        &mut self,
        id: CommunityId,
        heads: &Heads,
        conn: u64,
        sub: Subscriber,
        max_bytes: usize,
    ) -> Result<Subscription, StoreError> {
        let member = sub.member;
        let (community, role) = self.member_of(id, &member)?;
        let (mut catch_up, next) = community.catch_up_for(heads, &member, max_bytes)?;
        catch_up.changes.retain(|c| sub.receives(c));
        let ours = community.heads()?;
        self.hub.subscribe(id, conn, sub);
        let requests = if role >= Role::Moderator {
            Some(self.join_requests(id)?)
        } else {
            None
        };
        Ok((catch_up, next, ours, requests))
    }

    /// The next page of a catch-up, for a subscriber still a member.
    fn page(
        &mut self,
        id: CommunityId,
        page: Page,
        sub: &Subscriber,
        max_bytes: usize,
    ) -> Result<Paged, StoreError> {
        let member = sub.member;
        let (community, _) = self.member_of(id, &member)?;
        let (mut bundle, next) = community.next_page_for(page, &member, max_bytes)?;
        bundle.changes.retain(|c| sub.receives(c));
        Ok((bundle, next))
    }

    /// The community `id` and `member`'s role in it, if the server holds
    /// it and `member` is a current member (else `NotMember`, either way).
    fn member_of(
        &mut self,
        id: CommunityId,
        member: &MemberId,
    ) -> Result<(&mut karmyq_core::Community, Role), StoreError> {
        let Ok(community) = self.karmyq.community(id) else {
            return Err(StoreError::NotMember);
        };
        let Some(role) = community.authority().role(member) else {
            return Err(StoreError::NotMember);
        };
        Ok((community, role))
    }

    /// The pending requests to join a community, oldest first, from people
    /// who are not members.
    fn join_requests(&mut self, id: CommunityId) -> Result<Vec<JoinRequest>, StoreError> {
        let members = self.karmyq.community(id)?.authority().members.clone();
        let mut stmt = self.db.prepare_cached(
            "SELECT member_id, message, created_at, signature FROM join_requests
             WHERE community_id = ?1 ORDER BY created_at, member_id",
        )?;
        let rows = stmt.query_map([id.as_bytes().as_slice()], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, Vec<u8>>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (member, message, created_at, signature) = row?;
            let (Ok(member), Ok(signature)) = (
                <[u8; 32]>::try_from(member),
                <[u8; 64]>::try_from(signature),
            ) else {
                continue;
            };
            let Ok(member) = MemberId::from_bytes(member) else {
                continue;
            };
            if members.contains_key(&member) {
                continue;
            }
            out.push(JoinRequest {
                community: id,
                member,
                message,
                created_at: Timestamp::from_millis(created_at),
                signature: Signature::from_bytes(signature),
            });
        }
        Ok(out)
    }

    /// Pushes the pending requests to every admin and moderator subscribed.
    fn push_join_requests(&mut self, id: CommunityId) -> Result<(), StoreError> {
        let requests = self.join_requests(id)?;
        let auth = self.karmyq.community(id)?.authority().clone();
        let frame = axum::body::Bytes::from(
            Frame::JoinRequests {
                community: id,
                requests,
            }
            .encode(),
        );
        for (conn, sub) in self.hub.subscribers(&id, 0) {
            if auth.role(&sub.member) >= Some(Role::Moderator) {
                self.hub
                    .deliver(&id, conn, &sub, Outbound::Frames(vec![frame.clone()]));
            }
        }
        Ok(())
    }

    /// Keeps a verified request to join a private community the server
    /// holds, from someone not yet a member, and tells its moderators.
    fn join(&mut self, request: JoinRequest) -> Result<JoinOutcome, StoreError> {
        let id = request.community;
        let Ok(community) = self.karmyq.community(id) else {
            return Ok(JoinOutcome::Received);
        };
        let auth = community.authority();
        if auth.visibility == Visibility::Public {
            return Ok(JoinOutcome::Public);
        }
        if auth.members.contains_key(&request.member) {
            return Ok(JoinOutcome::Received);
        }
        self.db.execute(
            "INSERT INTO join_requests (community_id, member_id, message, created_at, signature)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (community_id, member_id) DO UPDATE SET
                 message = excluded.message, created_at = excluded.created_at,
                 signature = excluded.signature",
            rusqlite::params![
                id.as_bytes().as_slice(),
                request.member.as_bytes().as_slice(),
                request.message,
                request.created_at.as_millis(),
                request.signature.to_bytes().as_slice(),
            ],
        )?;
        tracing::info!(community = %id.fmt_short(), member = %request.member.fmt_short(), "request to join kept");
        self.push_join_requests(id)?;
        Ok(JoinOutcome::Received)
    }

    fn set_blocks(&mut self, member: MemberId, blocked: &[MemberId]) -> Result<(), StoreError> {
        let tx = self.db.transaction()?;
        tx.execute(
            "DELETE FROM blocks WHERE member_id = ?1",
            [member.as_bytes().as_slice()],
        )?;
        for b in blocked {
            tx.execute(
                "INSERT OR IGNORE INTO blocks (member_id, blocked) VALUES (?1, ?2)",
                [member.as_bytes().as_slice(), b.as_bytes().as_slice()],
            )?;
        }
        tx.commit()?;
        self.blocks.retain(|(by, _)| *by != member);
        self.blocks.extend(blocked.iter().map(|b| (member, *b)));
        Ok(())
    }

    /// Whether `change` makes an offer on a request whose requester blocked
    /// its author (DOMAIN.md: the server relays no offer across a block).
    /// The name is not checked here: core's validator judges the change
    /// after this, and the block lookup needs only the requester's bytes.
    fn offer_across_block(&self, change: &SignedChange) -> bool {
        let Some(DocId::Request(request)) = DocId::parse_stored(&change.envelope.doc) else {
            return false;
        };
        self.blocks
            .contains(&(request.requester, change.envelope.author))
            && !offers_created(&change.bytes).is_empty()
    }

    fn decline(&mut self, decline: JoinDecline) -> Result<(), StoreError> {
        let id = decline.community;
        let (_, role) = self.member_of(id, &decline.by)?;
        if role < Role::Moderator {
            return Err(StoreError::NotMember);
        }
        let gone = self.db.execute(
            "DELETE FROM join_requests WHERE community_id = ?1 AND member_id = ?2",
            rusqlite::params![
                id.as_bytes().as_slice(),
                decline.asker.as_bytes().as_slice()
            ],
        )?;
        tracing::info!(
            community = %id.fmt_short(),
            member = %decline.asker.fmt_short(),
            by = %decline.by.fmt_short(),
            "request to join declined"
        );
        if gone > 0 {
            self.push_join_requests(id)?;
        }
        Ok(())
    }

    /// Validates, stores and relays one upload, and answers it.
    fn ingest_one(&mut self, upload: Upload) {
        let started = Instant::now();
        let result = self.ingest(
            upload.uploader,
            upload.conn,
            &upload.bundle,
            upload.prepared,
        );
        self.metrics.observe_ingest(started.elapsed());
        let _ = upload.reply.send(result);
    }

    /// Validates, stores and relays uploads of changes (no ops) to one
    /// community in one transaction, and answers each with its share of
    /// the report: one commit instead of one each (an upload of a single
    /// change costs about six times a change in a large one, most of it
    /// the commit). Changes alone move no one in or out, so one verdict per
    /// author holds for the whole group. Anything unusual (an upload by a
    /// non-member, changes parked from before, a failed transaction) goes
    /// the one-upload way.
    fn ingest_group(&mut self, group: Vec<Upload>) {
        let started = Instant::now();
        let id = group[0].bundle.community;
        let quiet = |k: &mut Karmyq| matches!(k.community(id), Ok(c) if c.has_pending().ok() == Some(false));
        if group.len() == 1 || !quiet(&mut self.karmyq) {
            for upload in group {
                self.ingest_one(upload);
            }
            return;
        }
        let verdicts = self.current_verdicts(
            id,
            group.iter().flat_map(|u| {
                std::iter::once(u.uploader)
                    .chain(u.bundle.changes.iter().map(|c| c.envelope.author))
            }),
        );
        let refused = |who: &MemberId| verdicts.get(who).cloned().flatten();
        let mut members = Vec::with_capacity(group.len());
        let mut merged = Bundle::new(id);
        let mut prepared = Prepared::default();
        for mut upload in group {
            if refused(&upload.uploader).is_some() {
                self.ingest_one(upload);
                continue;
            }
            let mut rejected = Vec::new();
            let kept = self.screen(&upload.bundle, &refused, &mut rejected);
            merged.changes.extend(kept.changes.iter().cloned());
            prepared.absorb(std::mem::take(&mut upload.prepared));
            members.push((upload, rejected, kept));
        }
        let now = Timestamp::now();
        let report = if merged.changes.is_empty() {
            Ok(Report::default())
        } else {
            self.karmyq.receive_prepared(&merged, prepared, now)
        };
        let report = match report {
            Ok(report) => report,
            Err(e) => {
                tracing::warn!(community = %id.fmt_short(), error = %e, uploads = members.len(), "grouped uploads failed: storing them one by one");
                for (upload, _, _) in members {
                    self.ingest_one(upload);
                }
                return;
            }
        };
        let mut claimed = BTreeSet::new();
        for (upload, rejected, kept) in members {
            let result = self.finish(
                id,
                upload.uploader,
                upload.conn,
                &upload.bundle,
                share(&report, rejected, &kept, &mut claimed),
                None,
                None,
            );
            self.metrics.observe_ingest(started.elapsed());
            let _ = upload.reply.send(result);
        }
    }

    fn ingest(
        &mut self,
        uploader: MemberId,
        conn: u64,
        bundle: &Bundle,
        prepared: Prepared,
    ) -> Result<Ack, StoreError> {
        let id = bundle.community;
        let now = Timestamp::now();
        // An upload without ops cannot change who is a member: no copy of
        // the authority state, and no heads (only needed to relay what
        // ops or released changes add), for the common live change.
        let has_ops = !bundle.ops.is_empty();
        let before_state = if has_ops { self.state(id) } else { None };
        let was_member = before_state
            .as_ref()
            .is_some_and(|s| s.members.contains_key(&uploader));
        let before_heads = match self.karmyq.community(id) {
            Ok(c) if has_ops || c.has_pending()? => Some(c.heads()?),
            _ => None,
        };
        let mut report = Report::default();

        // Authority ops, in passes: each pass lets in the ops whose author
        // is a current member (or that make one), so that a founder's or a
        // new member's later ops follow their genesis or join.
        let mut remaining: Vec<(&Vec<u8>, Option<SignedOp>)> = bundle
            .ops
            .iter()
            .map(|b| (b, SignedOp::decode(b).ok()))
            .collect();
        let mut state = before_state.clone();
        loop {
            let (take, keep): (Vec<_>, Vec<_>) =
                remaining.into_iter().partition(|(_, op)| match op {
                    // Undecodable: the validator refuses it as malformed.
                    None => was_member,
                    Some(op) => admissible(op, state.as_ref(), &uploader),
                });
            remaining = keep;
            if take.is_empty() {
                break;
            }
            let mut pass = Bundle::new(id);
            pass.ops = take.into_iter().map(|(b, _)| b.clone()).collect();
            match self.karmyq.receive(&pass, now) {
                Ok(r) => merge(&mut report, r),
                Err(karmyq_core::Error::UnknownCommunity) => return Err(StoreError::NotMember),
                Err(e) => return Err(e.into()),
            }
            state = self.state(id);
        }
        // Who may write changes: current members only (this closes the gap
        // of a removed member citing authority heads from before their
        // removal). One verdict per author.
        let mut authors: Vec<MemberId> = bundle.changes.iter().map(|c| c.envelope.author).collect();
        authors.push(uploader);
        authors.sort_unstable();
        authors.dedup();
        let verdicts: BTreeMap<MemberId, Option<Rejection>> = if has_ops {
            authors
                .iter()
                .map(|a| (*a, author_verdict(state.as_ref(), a)))
                .collect()
        } else {
            self.current_verdicts(id, authors)
        };
        let refused = |who: &MemberId| verdicts.get(who).cloned().flatten();
        let is_member = refused(&uploader).is_none();
        if !is_member {
            // A non-member learns nothing, not even whether the community
            // exists: the same answer as for an unknown one.
            for (_, op) in &remaining {
                self.metrics.rejected(match op {
                    Some(op) => refusal(state.as_ref(), op.op.author).code(),
                    None => Rejection::Malformed.code(),
                });
            }
            for change in &bundle.changes {
                let author = change.envelope.author;
                let reason = refused(&author).unwrap_or(Rejection::NotAMember(author));
                self.metrics.rejected(reason.code());
            }
            tracing::info!(
                community = %id.fmt_short(),
                member = %uploader.fmt_short(),
                refused = bundle.changes.len() + remaining.len(),
                "upload by a non-member refused"
            );
            // Ops by members it relayed were stored all the same (each
            // validly signed by its author): evict and relay as for any.
            if !report.accepted.is_empty() {
                self.metrics.accepted.fetch_add(
                    u64::try_from(report.accepted.len()).unwrap_or(u64::MAX),
                    std::sync::atomic::Ordering::Relaxed,
                );
                self.after_accept(
                    id,
                    conn,
                    bundle,
                    &report,
                    before_state.as_ref(),
                    before_heads,
                )?;
            }
            return Err(StoreError::NotMember);
        }
        for (_, op) in remaining {
            let (item, reason) = match op {
                Some(op) => (
                    Item::Op(Some(op.hash())),
                    refusal(state.as_ref(), op.op.author),
                ),
                None => (Item::Op(None), Rejection::Malformed),
            };
            report.rejected.push((item, reason));
        }

        let kept = self.screen(bundle, &refused, &mut report.rejected);
        if !kept.changes.is_empty() {
            merge(
                &mut report,
                self.karmyq.receive_prepared(&kept, prepared, now)?,
            );
        }
        self.finish(
            id,
            uploader,
            conn,
            bundle,
            report,
            before_state.as_ref(),
            before_heads,
        )
    }

    /// Whether each of `who` may write changes to `id` now (see
    /// [`author_verdict`]).
    fn current_verdicts(
        &mut self,
        id: CommunityId,
        who: impl IntoIterator<Item = MemberId>,
    ) -> BTreeMap<MemberId, Option<Rejection>> {
        let auth = self.karmyq.community(id).ok().map(|c| c.authority());
        who.into_iter()
            .map(|w| (w, author_verdict(auth, &w)))
            .collect()
    }

    /// The changes of `bundle` to store: not those by someone `refused`,
    /// nor offers across a block, which go to `rejected` with the reason.
    fn screen(
        &self,
        bundle: &Bundle,
        refused: &impl Fn(&MemberId) -> Option<Rejection>,
        rejected: &mut Vec<(Item, Rejection)>,
    ) -> Bundle {
        let mut kept = Bundle::new(bundle.community);
        for change in &bundle.changes {
            let reason = match refused(&change.envelope.author) {
                Some(reason) => Some(reason),
                None if self.offer_across_block(change) => Some(Rejection::Blocked),
                None => None,
            };
            match reason {
                Some(reason) => rejected.push((
                    Item::Change {
                        doc: change.envelope.doc.clone(),
                        hash: change.envelope.change_hash,
                    },
                    reason,
                )),
                None => kept.changes.push(change.clone()),
            }
        }
        kept
    }

    /// Counts and logs what became of an upload, relays what it added,
    /// and sums it up for the uploader.
    #[allow(clippy::too_many_arguments)]
    fn finish(
        &mut self,
        id: CommunityId,
        uploader: MemberId,
        conn: u64,
        bundle: &Bundle,
        report: Report,
        before_state: Option<&Resolved>,
        before_heads: Option<Heads>,
    ) -> Result<Ack, StoreError> {
        self.metrics.accepted.fetch_add(
            u64::try_from(report.accepted.len()).unwrap_or(u64::MAX),
            std::sync::atomic::Ordering::Relaxed,
        );
        for (item, reason) in &report.rejected {
            self.metrics.rejected(reason.code());
            tracing::info!(
                community = %id.fmt_short(),
                member = %uploader.fmt_short(),
                ?item,
                reason = reason.code(),
                "refused"
            );
        }
        if !report.accepted.is_empty() {
            self.after_accept(id, conn, bundle, &report, before_state, before_heads)?;
        }
        Ok(Ack::of(id, &report))
    }

    /// After ops were accepted: answers the join requests of whoever
    /// became a member, and closes the subscriptions of whoever stopped
    /// being one.
    fn membership_moved(
        &mut self,
        id: CommunityId,
        before: Option<&Resolved>,
    ) -> Result<(), StoreError> {
        let community = self.karmyq.community(id)?;
        let roles: BTreeMap<MemberId, Role> = community
            .authority()
            .members
            .iter()
            .map(|(m, info)| (*m, info.role))
            .collect();
        let joined: Vec<MemberId> = roles
            .keys()
            .filter(|m| before.is_none_or(|b| !b.members.contains_key(m)))
            .copied()
            .collect();
        let mut answered = 0;
        for member in &joined {
            answered += self.db.execute(
                "DELETE FROM join_requests WHERE community_id = ?1 AND member_id = ?2",
                [id.as_bytes().as_slice(), member.as_bytes().as_slice()],
            )?;
        }
        if answered > 0 {
            self.push_join_requests(id)?;
        }
        if let Some(before) = before {
            for gone in before.members.keys().filter(|m| !roles.contains_key(m)) {
                let n = self.hub.evict(&id, gone);
                tracing::info!(
                    community = %id.fmt_short(),
                    member = %gone.fmt_short(),
                    subscriptions = n,
                    "member removed: subscriptions closed"
                );
            }
        }
        Ok(())
    }

    /// Evicts removed members, then pushes what the upload added to every
    /// other subscriber allowed to read it.
    fn after_accept(
        &mut self,
        id: CommunityId,
        conn: u64,
        uploaded: &Bundle,
        report: &Report,
        before: Option<&Resolved>,
        before_heads: Option<Heads>,
    ) -> Result<(), StoreError> {
        if !uploaded.ops.is_empty() {
            self.membership_moved(id, before)?;
        }
        if !self.hub.has_subscribers(&id, conn) {
            return Ok(());
        }
        let accepted: BTreeSet<[u8; 32]> = report
            .accepted
            .iter()
            .filter_map(|i| match i {
                Item::Change { hash, .. } => Some(*hash),
                Item::Op(_) => None,
            })
            .collect();
        // What to relay: everything stored since the heads before this
        // upload (including pending changes it released), but private
        // documents (reports, conversations), which go only to their readers. The common
        // case, an upload of changes only that released nothing pending,
        // is just the accepted changes of the upload, in its order: no need
        // to ask the store (`changes_since` walks the whole authority log
        // and every document's heads: ~7 ms an upload with 1,000 members).
        // Without heads from before (an upload of changes when nothing was
        // parked), nothing but the upload can have been stored.
        let uploaded_hashes: BTreeSet<[u8; 32]> = uploaded
            .changes
            .iter()
            .map(|c| c.envelope.change_hash)
            .collect();
        let only_uploaded = uploaded.ops.is_empty()
            && report.accepted.len() == accepted.len()
            && accepted.is_subset(&uploaded_hashes);
        let delta = match before_heads {
            Some(heads) if !only_uploaded => self.karmyq.community(id)?.changes_since(&heads)?,
            _ => {
                let mut delta = Bundle::new(id);
                let mut seen = BTreeSet::new();
                delta.changes = uploaded
                    .changes
                    .iter()
                    .filter(|c| {
                        accepted.contains(&c.envelope.change_hash)
                            && seen.insert(c.envelope.change_hash)
                    })
                    .filter(|c| {
                        !DocId::parse_stored(&c.envelope.doc).is_some_and(|d| d.is_private())
                    })
                    .cloned()
                    .collect();
                delta
            }
        };
        // Accepted changes were validated: their names need no second check.
        let private: Vec<(DocId, &SignedChange)> = uploaded
            .changes
            .iter()
            .filter(|c| accepted.contains(&c.envelope.change_hash))
            .filter_map(|c| {
                DocId::parse_stored(&c.envelope.doc)
                    .filter(DocId::is_private)
                    .map(|d| (d, c))
            })
            .collect();
        // Readers of a private document this upload changed get a bundle
        // of their own; everyone else shares one.
        let mut own = HashMap::new();
        if !private.is_empty() {
            let auth = self.karmyq.community(id)?.authority();
            for (conn_id, sub) in self.hub.subscribers(&id, conn) {
                let role = auth.role(&sub.member);
                let readable: Vec<SignedChange> = private
                    .iter()
                    .filter(|(d, c)| d.readable_by(&sub.member, role) && sub.receives(c))
                    .map(|(_, c)| (*c).clone())
                    .collect();
                if !readable.is_empty() {
                    let mut mine = delta.clone();
                    mine.changes.extend(readable);
                    own.insert(conn_id, mine);
                }
            }
        }
        if delta.is_empty() && own.is_empty() {
            return Ok(());
        }
        let relay = Relay {
            community: id,
            except: conn,
            delta,
            own,
        };
        if self.relays.blocking_send(relay).is_err() {
            tracing::error!("the fan-out task stopped: live push lost");
        }
        Ok(())
    }

    fn directory(&mut self) -> Result<Vec<DirectoryEntry>, StoreError> {
        let mut out = Vec::new();
        for summary in self.karmyq.communities()? {
            let info = self.karmyq.community(summary.id)?.info()?;
            if info.visibility == Visibility::Public {
                out.push(DirectoryEntry {
                    id: info.id.to_string(),
                    name: info.name,
                    description: info.description,
                    member_count: info.member_count,
                });
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use karmyq_core::{Category, Keypair, RequestDraft, RequestKind, Urgency};
    use tempfile::TempDir;

    type TestResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

    fn draft(title: &str) -> RequestDraft {
        RequestDraft {
            title: title.into(),
            description: "Two boxes and a sofa".into(),
            category: Category::Moving,
            urgency: Urgency::Medium,
            kind: RequestKind::Generic,
            location: None,
            when: None,
        }
    }

    /// A store thread's worker over a fresh relay that holds `log`, with
    /// one subscriber (connection 99) so that it relays, and the fan-out
    /// queue's receiving end.
    fn worker(log: &Bundle) -> TestResult<(TempDir, Worker, mpsc::Receiver<Relay>)> {
        let dir = tempfile::tempdir()?;
        let mut karmyq = Karmyq::open_relay(dir.path())?;
        karmyq.receive(log, Timestamp::now())?;
        let db = open_server_db(&dir.path().join("server.sqlite3"))?;
        let (relays, relayed) = mpsc::channel(64);
        let hub = Arc::new(Hub::default());
        let (tx, _) = mpsc::channel(8);
        let watcher = Subscriber {
            member: Keypair::generate()?.member_id(),
            blocked: Arc::default(),
            tx,
            kick: Arc::default(),
        };
        hub.subscribe(log.community, 99, watcher);
        let worker = Worker {
            blocks: load_blocks(&db)?,
            karmyq,
            db,
            hub,
            relays,
            metrics: Arc::default(),
        };
        Ok((dir, worker, relayed))
    }

    /// What a device wrote since `before`.
    fn news(k: &mut Karmyq, id: CommunityId, before: &Heads) -> TestResult<Bundle> {
        Ok(k.community(id)?.changes_since(before)?)
    }

    /// Alice founds a community and Bob joins it, each on a device of
    /// their own (kept in the returned directories), both up to date.
    fn alice_and_bob() -> TestResult<([TempDir; 2], Karmyq, Karmyq, CommunityId, Timestamp)> {
        let dirs = [tempfile::tempdir()?, tempfile::tempdir()?];
        let mut alice = Karmyq::open(dirs[0].path())?;
        let mut bob = Karmyq::open(dirs[1].path())?;
        let now = Timestamp::now();
        let id = alice.create_community("Elm Street", "", Visibility::Public, now)?;
        bob.receive(&news(&mut alice, id, &Heads::empty())?, now)?;
        bob.community(id)?.join(now)?;
        let heads = alice.community(id)?.heads()?;
        alice.receive(&news(&mut bob, id, &heads)?, now)?;
        Ok((dirs, alice, bob, id, now))
    }

    type Answer = oneshot::Receiver<Result<Ack, StoreError>>;

    fn upload(uploader: MemberId, conn: u64, bundle: &Bundle) -> (Upload, Answer) {
        let (reply, answer) = oneshot::channel();
        let upload = Upload {
            uploader,
            conn,
            prepared: Prepared::for_relay(bundle, 1),
            bundle: bundle.clone(),
            reply,
        };
        (upload, answer)
    }

    /// Each answer: the ack, or `None` for "not a member".
    fn answers(answers: Vec<Answer>) -> Vec<Option<Ack>> {
        answers
            .into_iter()
            .map(|mut a| match a.try_recv() {
                Ok(Ok(ack)) => Some(ack),
                Ok(Err(StoreError::NotMember)) => None,
                other => panic!("unexpected answer {other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_catch_up_gets_no_page_after_its_member_is_removed() -> TestResult {
        let (_dirs, mut alice, bob, id, now) = alice_and_bob()?;
        for title in ["Sofa", "Groceries", "Ladder"] {
            alice.community(id)?.post_request(&draft(title), now)?;
        }
        let log = news(&mut alice, id, &Heads::empty())?;
        let (_dir, mut worker, _relayed) = worker(&log)?;
        let (tx, _inbox) = mpsc::channel(8);
        let sub = Subscriber {
            member: bob.member_id(),
            blocked: Arc::default(),
            tx,
            kick: Arc::default(),
        };
        // Pages of one change each, while Bob is a member.
        let (first, next, _, _) = worker.subscribe(id, &Heads::empty(), 7, sub.clone(), 1)?;
        assert_eq!(first.changes.len(), 1);
        let (second, next) = worker.page(id, next.ok_or("one page")?, &sub, 1)?;
        assert_eq!(second.changes.len(), 1);
        assert_ne!(second.changes, first.changes);
        let next = next.ok_or("two pages")?;
        // Alice removes him: the next page is not his to read.
        let before = alice.community(id)?.heads()?;
        alice
            .community(id)?
            .remove(bob.member_id(), "moved away", now)?;
        let (removal, _answer) = upload(alice.member_id(), 1, &news(&mut alice, id, &before)?);
        worker.ingest_one(removal);
        assert!(matches!(
            worker.page(id, next, &sub, 1),
            Err(StoreError::NotMember)
        ));
        Ok(())
    }

    #[test]
    fn blocks_kept_in_memory_match_the_file_and_outlive_the_thread() -> TestResult {
        let dir = tempfile::tempdir()?;
        let mut alice = Karmyq::open(dir.path())?;
        let id = alice.create_community("Elm Street", "", Visibility::Public, Timestamp::now())?;
        let log = news(&mut alice, id, &Heads::empty())?;
        let (server_dir, mut worker, _relayed) = worker(&log)?;
        let [a, b, c] = [(); 3].map(|()| Keypair::generate().map(|k| k.member_id()));
        let (a, b, c) = (a?, b?, c?);
        worker.set_blocks(a, &[b, c])?;
        worker.set_blocks(b, &[a])?;
        worker.set_blocks(a, &[c])?;
        let expected: HashSet<_> = [(a, c), (b, a)].into();
        assert_eq!(worker.blocks, expected);
        drop(worker);
        let reopened = open_server_db(&server_dir.path().join("server.sqlite3"))?;
        assert_eq!(load_blocks(&reopened)?, expected);
        Ok(())
    }

    #[test]
    fn uploads_stored_together_get_the_answers_and_relays_of_uploads_stored_alone() -> TestResult {
        let (_dirs, mut alice, mut bob, id, now) = alice_and_bob()?;
        let log = news(&mut alice, id, &Heads::empty())?;
        bob.receive(&log, now)?;
        let mallory = Keypair::generate()?.member_id();

        // Alice posts; Bob posts; Mallory (no member) uploads Bob's post;
        // Alice edits hers and sends her post again with the edit; Bob's
        // next post arrives with a broken signature.
        let before = alice.community(id)?.heads()?;
        let r1 = alice.community(id)?.post_request(&draft("Sofa"), now)?;
        let u1 = news(&mut alice, id, &before)?;
        let before_bob = bob.community(id)?.heads()?;
        bob.community(id)?.post_request(&draft("Groceries"), now)?;
        let u2 = news(&mut bob, id, &before_bob)?;
        alice
            .community(id)?
            .edit_request(r1, &draft("Sofa, two floors"), now)?;
        let u4 = news(&mut alice, id, &before)?;
        let before_bob = bob.community(id)?.heads()?;
        bob.community(id)?.post_request(&draft("Ladder"), now)?;
        let mut u5 = news(&mut bob, id, &before_bob)?;
        u5.changes[0].envelope.signature = Signature::from_bytes([1; 64]);
        assert_eq!(
            (u1.changes.len(), u2.changes.len(), u4.changes.len()),
            (1, 1, 2)
        );
        let uploads = [
            (alice.member_id(), 1, &u1),
            (bob.member_id(), 2, &u2),
            (mallory, 3, &u2),
            (alice.member_id(), 4, &u4),
            (bob.member_id(), 5, &u5),
        ];

        // One by one.
        let (_d1, mut alone, mut alone_relays) = worker(&log)?;
        let mut alone_answers = Vec::new();
        for (who, conn, bundle) in uploads {
            let (u, answer) = upload(who, conn, bundle);
            alone.ingest_one(u);
            alone_answers.push(answer);
        }
        // As one group.
        let (_d2, mut grouped, mut grouped_relays) = worker(&log)?;
        let (group, group_answers): (Vec<_>, Vec<_>) = uploads
            .iter()
            .map(|(who, conn, bundle)| upload(*who, *conn, bundle))
            .unzip();
        grouped.ingest_group(group);

        let alone_answers = answers(alone_answers);
        let group_answers = answers(group_answers);
        assert_eq!(group_answers, alone_answers);
        let accepted: Vec<Option<(u32, u32, usize)>> = group_answers
            .iter()
            .map(|a| {
                a.as_ref()
                    .map(|a| (a.accepted, a.duplicates, a.rejected.len()))
            })
            .collect();
        assert_eq!(
            accepted,
            vec![
                Some((1, 0, 0)),
                Some((1, 0, 0)),
                None,
                Some((1, 1, 0)),
                Some((0, 0, 1))
            ]
        );
        assert_eq!(
            grouped.karmyq.community(id)?.heads()?,
            alone.karmyq.community(id)?.heads()?
        );
        // The same relays: each upload's accepted changes, for everyone
        // but its uploader.
        let relays = |rx: &mut mpsc::Receiver<Relay>| {
            let mut out = Vec::new();
            while let Ok(r) = rx.try_recv() {
                let hashes: Vec<[u8; 32]> = r
                    .delta
                    .changes
                    .iter()
                    .map(|c| c.envelope.change_hash)
                    .collect();
                out.push((r.except, hashes));
            }
            out
        };
        let relayed = relays(&mut grouped_relays);
        assert_eq!(relayed, relays(&mut alone_relays));
        assert_eq!(
            relayed
                .iter()
                .map(|(conn, h)| (*conn, h.len()))
                .collect::<Vec<_>>(),
            vec![(1, 1), (2, 1), (4, 1)]
        );
        assert_eq!(
            grouped
                .metrics
                .accepted
                .load(std::sync::atomic::Ordering::Relaxed),
            3
        );
        Ok(())
    }
}
