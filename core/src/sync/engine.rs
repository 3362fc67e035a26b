//! The device sync engine: a [`DeviceSession`] over a real WebSocket, for
//! one community, with reconnection.
//!
//! Design: the engine runs on a thread of its own with a single-threaded
//! tokio runtime, and shares the app's client as `Arc<Mutex<Karmyq>>`.
//! It takes the lock only for short, synchronous store calls (heads, a
//! bundle, a receive) and never across an `.await`, so the app keeps using
//! the client between them. Local writes are noticed by a short poll of
//! the community's heads (or at once with [`SyncEngine::nudge`]); what the
//! server pushes arrives without polling.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::Message;

use crate::authority::CommunityId;
use crate::background::Background;
use crate::bundle::{Bundle, Heads};
use crate::client::Karmyq;
use crate::community::Prepared;
use crate::error::{Error, Result};
use crate::identity::Keypair;
use crate::sync::chunk::split;
use crate::sync::device::{DeviceAction, DeviceSession, SyncStatus};
use crate::sync::join::JoinRequest;
use crate::time::Timestamp;

/// How the engine paces itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineOptions {
    /// First pause before reconnecting.
    pub min_backoff: Duration,
    /// Longest pause before reconnecting.
    pub max_backoff: Duration,
    /// How often local writes are looked for while connected.
    pub poll: Duration,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            min_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(30),
            poll: Duration::from_millis(250),
        }
    }
}

type StatusFn = Arc<dyn Fn(SyncStatus) + Send + Sync>;

/// A running sync of one community with one server. Stops when
/// [`SyncEngine::stop`] is called or when dropped.
pub struct SyncEngine {
    stop: watch::Sender<bool>,
    join_requests: Arc<Mutex<Vec<JoinRequest>>>,
    nudge: mpsc::Sender<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for SyncEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncEngine").finish_non_exhaustive()
    }
}

impl SyncEngine {
    /// Starts syncing `community` (which the client may not hold yet) with
    /// the server at `url` (`ws://host:port/v1/sync`), reporting every
    /// change of status to `on_status` (never the same one twice in a row).
    pub fn start(
        client: Arc<Mutex<Karmyq>>,
        url: &str,
        community: CommunityId,
        options: EngineOptions,
        on_status: impl Fn(SyncStatus) + Send + Sync + 'static,
    ) -> Result<Self> {
        let keys = {
            let k = client.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::new(Keypair::import_secret(&k.export_secret())?)
        };
        let (stop, stop_rx) = watch::channel(false);
        let (nudge, nudge_rx) = mpsc::channel(1);
        let join_requests = Arc::new(Mutex::new(Vec::new()));
        let runtime = tokio::runtime::Builder::new_current_thread()
            // Its blocking pool applies bundles (`Worker::apply`).
            .thread_name("karmyq-apply")
            .enable_all()
            .build()?;
        let worker = Worker {
            client,
            keys,
            url: url.to_owned(),
            community,
            options,
            on_status: Arc::new(on_status),
            stop: stop_rx,
            nudge: nudge_rx,
            last_seen: Heads::empty(),
            join_requests: join_requests.clone(),
            last_status: None,
        };
        let thread = std::thread::Builder::new()
            .name("karmyq-sync".into())
            .spawn(move || runtime.block_on(worker.run()))?;
        Ok(SyncEngine {
            stop,
            join_requests,
            nudge,
            thread: Some(thread),
        })
    }

    /// Looks for local writes to upload now rather than at the next poll.
    pub fn nudge(&self) {
        let _ = self.nudge.try_send(());
    }

    /// The requests to join this community that the server holds, as
    /// last sent (only to admins and moderators; empty otherwise).
    pub fn join_requests(&self) -> Vec<JoinRequest> {
        self.join_requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Stops syncing: closes the connection and waits for the engine's
    /// thread to end.
    pub fn stop(mut self) {
        self.shut();
    }

    fn shut(&mut self) {
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for SyncEngine {
    fn drop(&mut self) {
        self.shut();
    }
}

/// How a connection ended.
enum Ended {
    /// Asked to stop.
    Stopped,
    /// Lost or refused; `reached` says whether it got to live sync (the
    /// backoff starts over), `quiet` that a status was already reported,
    /// `soon` that retrying soon may help (not after a version mismatch
    /// or a refused login: then the engine waits the longest pause).
    Lost {
        reached: bool,
        quiet: bool,
        soon: bool,
    },
}

struct Worker {
    client: Arc<Mutex<Karmyq>>,
    keys: Arc<Keypair>,
    url: String,
    community: CommunityId,
    options: EngineOptions,
    on_status: StatusFn,
    stop: watch::Receiver<bool>,
    nudge: mpsc::Receiver<()>,
    /// The local heads up to which everything was sent or received.
    last_seen: Heads,
    join_requests: Arc<Mutex<Vec<JoinRequest>>>,
    last_status: Option<SyncStatus>,
}

/// Most items (ops and changes) the engine applies in one receive when
/// several bundles from the server wait. A catch-up comes as bundles of
/// up to a frame (4 MiB, ~7,000 items, by default), and each receive is a
/// transaction whose commit writes every index page it touched: fewer,
/// larger ones write less. The bound keeps each receive, during which the
/// app waits for the client, around a second.
const MERGE_ITEMS: usize = 16_384;

/// Most items received and not yet applied before the engine stops reading
/// the socket (the server then waits): enough that the preparing thread
/// does not run dry while a merged bundle is applied (with half of it the
/// catch-up bench took 1.3× as long), few enough that a large catch-up is
/// not held in memory at once.
const READ_AHEAD_ITEMS: usize = 2 * MERGE_ITEMS;

/// Most items in a bundle handed to the [`Preparer`]: a frame from the
/// server is cut into pieces of this size, so that the first piece is
/// applied while the rest are still being prepared, and the last piece
/// applied after the preparing ends is short. Pieces already prepared are
/// applied together again (up to [`MERGE_ITEMS`]).
const PIECE_ITEMS: usize = 2_000;

/// Most threads that prepare bundles at once.
const MAX_PREPARERS: usize = 4;

/// A bundle handed to the [`Preparer`].
struct Queued {
    /// Where its preparation comes from.
    from: oneshot::Receiver<Prepared>,
    /// Its preparation, once it came.
    prepared: Option<Prepared>,
    /// Part of the first catch-up of a community new to this device (it
    /// came before the session was live): applied without notifications.
    quiet: bool,
    /// Its ops and changes.
    items: usize,
}

impl Queued {
    /// Whether its preparation is over (or its thread is gone).
    fn poll(&mut self) -> bool {
        if self.prepared.is_some() {
            return true;
        }
        match self.from.try_recv() {
            Ok(prepared) => {
                self.prepared = Some(prepared);
                true
            }
            Err(oneshot::error::TryRecvError::Closed) => true,
            Err(oneshot::error::TryRecvError::Empty) => false,
        }
    }

    /// Its preparation, once over (the default if its thread is gone: the
    /// apply then does the work), and whether it is quiet.
    async fn prepared(self) -> (Prepared, bool) {
        let prepared = match self.prepared {
            Some(prepared) => prepared,
            None => self.from.await.unwrap_or_default(),
        };
        (prepared, self.quiet)
    }
}

/// Decodes, and checks the signatures of, the bundles the engine will
/// apply, on [`Background`] threads (one per core, up to
/// [`MAX_PREPARERS`]), while the engine applies the ones before them; the
/// preparations are taken in the order the bundles came.
struct Preparer {
    threads: Background,
    /// Each bundle handed over and not taken yet, in order.
    queued: VecDeque<Queued>,
}

impl Preparer {
    fn start() -> Self {
        Preparer {
            threads: Background::per_core("karmyq-prepare", MAX_PREPARERS),
            queued: VecDeque::new(),
        }
    }

    /// Hands over the bundle of each `Apply` among `actions`; `quiet`:
    /// they are history, not news (see [`Queued::quiet`]).
    fn push(&mut self, actions: &[DeviceAction], quiet: bool) {
        for action in actions {
            if let DeviceAction::Apply(bundle) = action {
                let (result, from) = oneshot::channel();
                let items = bundle.len();
                let bundle = bundle.clone();
                self.threads.run(move || {
                    // One thread each: the threads are the parallelism.
                    // (The engine may have gone meanwhile.)
                    let _ = result.send(Prepared::for_device(&bundle, 1));
                });
                self.queued.push_back(Queued {
                    from,
                    prepared: None,
                    quiet,
                    items,
                });
            }
        }
    }

    /// Items handed over and not taken yet.
    fn backlog(&self) -> usize {
        self.queued.iter().map(|q| q.items).sum()
    }

    /// Whether the next bundle's preparation is over (or its thread is
    /// gone, or nothing is queued), and it is as quiet as `quiet`.
    fn ready(&mut self, quiet: bool) -> bool {
        match self.queued.front_mut() {
            Some(q) if q.quiet != quiet => false,
            Some(q) => q.poll(),
            None => true,
        }
    }

    /// What will be prepared for the next bundle (the default if nothing
    /// is queued: the apply then does the work), and whether it is quiet;
    /// the bundle is taken now, its preparation waited for apart.
    fn take(&mut self) -> impl Future<Output = (Prepared, bool)> + use<> {
        let next = self.queued.pop_front();
        async move {
            match next {
                Some(q) => q.prepared().await,
                None => (Prepared::default(), false),
            }
        }
    }

    /// What was prepared for the next bundle, once [`Preparer::ready`]
    /// said it is over, and whether it is quiet.
    fn take_ready(&mut self) -> (Prepared, bool) {
        match self.queued.pop_front() {
            Some(mut q) => {
                q.poll();
                (q.prepared.unwrap_or_default(), q.quiet)
            }
            None => (Prepared::default(), false),
        }
    }
}

fn jitter(max: Duration) -> Duration {
    let mut b = [0u8; 4];
    if getrandom::getrandom(&mut b).is_err() {
        return Duration::ZERO;
    }
    let fraction = f64::from(u32::from_le_bytes(b)) / f64::from(u32::MAX);
    max.mul_f64(fraction)
}

impl Worker {
    /// Reports a status if it differs from the last one reported.
    fn status(&mut self, s: SyncStatus) {
        if self.last_status.as_ref() != Some(&s) {
            self.last_status = Some(s.clone());
            (self.on_status)(s);
        }
    }

    /// Runs a closure on the client: a short, synchronous section.
    fn with_client<T>(&self, f: impl FnOnce(&mut Karmyq) -> Result<T>) -> Result<T> {
        let mut k = self.client.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut k)
    }

    fn local_heads(&self) -> Result<Heads> {
        let id = self.community;
        self.with_client(|k| match k.community(id) {
            Ok(c) => c.heads(),
            Err(Error::UnknownCommunity) => Ok(Heads::empty()),
            Err(e) => Err(e),
        })
    }

    async fn run(mut self) {
        let mut backoff = self.options.min_backoff;
        loop {
            if *self.stop.borrow() {
                return;
            }
            let ended = match self.connect().await {
                Ok(ended) => ended,
                Err(error) => {
                    tracing::warn!(%error, "sync failed");
                    Ended::Lost {
                        reached: false,
                        quiet: false,
                        soon: true,
                    }
                }
            };
            match ended {
                Ended::Stopped => return,
                Ended::Lost {
                    reached,
                    quiet,
                    soon,
                } => {
                    if !quiet {
                        self.status(SyncStatus::Offline);
                    }
                    if reached {
                        backoff = self.options.min_backoff;
                    }
                    if !soon {
                        backoff = self.options.max_backoff;
                    }
                }
            }
            let pause = backoff + jitter(backoff / 2);
            backoff = (backoff * 2).min(self.options.max_backoff);
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                _ = self.stop.changed() => return,
            }
        }
    }

    async fn connect(&mut self) -> Result<Ended> {
        self.status(SyncStatus::Connecting);
        let heads = self.local_heads()?;
        // A community this device does not hold yet: its whole catch-up is
        // history, no news (`Karmyq::receive` makes only a first bundle quiet).
        let fresh = heads.auth.is_empty();
        self.last_seen = heads.clone();
        let blocked = self.with_client(|k| k.blocked())?;
        let mut session =
            DeviceSession::new(self.keys.clone(), self.community, heads).with_blocks(blocked);
        let connected = tokio::select! {
            // No Nagle: uploads and acks are small frames, sent at once.
            c = tokio_tungstenite::connect_async_with_config(self.url.as_str(), None, true) => c,
            _ = self.stop.changed() => return Ok(Ended::Stopped),
        };
        let Ok((mut ws, _)) = connected else {
            return Ok(Ended::Lost {
                reached: false,
                quiet: false,
                soon: true,
            });
        };
        let mut reached = false;
        let mut queue: VecDeque<DeviceAction> = session.start().into();
        // Each `Apply` in the queue, in order, being decoded and its
        // signatures checked on a thread of its own meanwhile.
        let mut preparer = Preparer::start();
        let mut tick = tokio::time::interval(self.options.poll);
        // Whether the socket is still open. When it closes during an apply,
        // what the frames before the close said to do (a status, a last
        // bundle) is still done, then the connection ends.
        let mut open = true;
        loop {
            while let Some(action) = queue.pop_front() {
                match action {
                    DeviceAction::Send(frame) => {
                        if ws
                            .send(Message::Binary(frame.encode().into()))
                            .await
                            .is_err()
                        {
                            return Ok(Ended::Lost {
                                reached,
                                quiet: false,
                                soon: true,
                            });
                        }
                    }
                    DeviceAction::Status(s) => {
                        reached |= s == SyncStatus::UpToDate;
                        self.status(s);
                    }
                    DeviceAction::JoinRequests(requests) => {
                        *self
                            .join_requests
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner) = requests;
                    }
                    DeviceAction::Apply(mut bundle) => {
                        // Frames that come meanwhile are read, so that other
                        // threads prepare their bundles.
                        let mut taking = std::pin::pin!(preparer.take());
                        let (mut prepared, quiet) = loop {
                            let room = open && preparer.backlog() < READ_AHEAD_ITEMS;
                            tokio::select! {
                                taken = &mut taking => break taken,
                                msg = ws.next(), if room => {
                                    open = Self::on_message(msg, &mut session, &mut preparer, &mut queue, fresh);
                                }
                            }
                        };
                        // The bundles right behind this one that are
                        // prepared already go with it, in one transaction.
                        while let Some(DeviceAction::Apply(next)) = queue.front() {
                            if bundle.len() + next.len() > MERGE_ITEMS || !preparer.ready(quiet) {
                                break;
                            }
                            let Some(DeviceAction::Apply(next)) = queue.pop_front() else {
                                break;
                            };
                            prepared.absorb(preparer.take_ready().0);
                            bundle.append(next)?;
                        }
                        // Applied on another thread while this one reads
                        // the frames that follow, so that their bundles
                        // are prepared meanwhile.
                        let mut applying = std::pin::pin!(self.apply(bundle, prepared, quiet));
                        let local = loop {
                            let room = open && preparer.backlog() < READ_AHEAD_ITEMS;
                            tokio::select! {
                                local = &mut applying => break local?,
                                msg = ws.next(), if room => {
                                    open = Self::on_message(msg, &mut session, &mut preparer, &mut queue, fresh);
                                }
                            }
                        };
                        // (Closed meanwhile: local writes go up after the
                        // reconnection, which compares heads anyway.)
                        if open && session.is_live() {
                            // Before the actions queued after this one (a Subscribe
                            // must follow the upload it waits for).
                            for a in session.upload(&local).into_iter().rev() {
                                queue.push_front(a);
                            }
                        }
                    }
                    DeviceAction::Upload(server) => {
                        let bundle = self.outgoing(server.as_ref())?;
                        // Before the actions queued after this one (a Subscribe
                        // must follow the upload it waits for).
                        for a in session.upload(&bundle).into_iter().rev() {
                            queue.push_front(a);
                        }
                    }
                    DeviceAction::Close { retry } => {
                        let _ = ws.close(None).await;
                        return Ok(Ended::Lost {
                            reached,
                            quiet: true,
                            soon: retry,
                        });
                    }
                }
            }
            if !open {
                return Ok(Ended::Lost {
                    reached,
                    quiet: false,
                    soon: true,
                });
            }
            tokio::select! {
                msg = ws.next() => {
                    if !Self::on_message(msg, &mut session, &mut preparer, &mut queue, fresh) {
                        return Ok(Ended::Lost { reached, quiet: false, soon: true });
                    }
                }
                _ = tick.tick() => {
                    if session.is_live() {
                        let local = self.local_writes()?;
                        if !local.is_empty() {
                            queue.extend(session.upload(&local));
                        }
                    }
                }
                Some(()) = self.nudge.recv() => {
                    if session.is_live() {
                        let local = self.local_writes()?;
                        queue.extend(session.upload(&local));
                    }
                }
                _ = self.stop.changed() => {
                    let _ = ws.close(None).await;
                    return Ok(Ended::Stopped);
                }
            }
        }
    }

    /// Hands a message from the server to the session and queues what it
    /// says to do; `false` if the connection is gone.
    fn on_message(
        msg: Option<std::result::Result<Message, tokio_tungstenite::tungstenite::Error>>,
        session: &mut DeviceSession,
        preparer: &mut Preparer,
        queue: &mut VecDeque<DeviceAction>,
        fresh: bool,
    ) -> bool {
        match msg {
            Some(Ok(Message::Binary(bytes))) => {
                let actions: Vec<DeviceAction> = session
                    .receive(&bytes)
                    .into_iter()
                    .flat_map(|action| match action {
                        DeviceAction::Apply(bundle) if bundle.len() > PIECE_ITEMS => {
                            split(bundle, usize::MAX, PIECE_ITEMS)
                                .into_iter()
                                .map(DeviceAction::Apply)
                                .collect()
                        }
                        other => vec![other],
                    })
                    .collect();
                // A community this device does not hold yet: its whole
                // catch-up is history, no news.
                preparer.push(&actions, fresh && !session.is_live());
                queue.extend(actions);
                true
            }
            Some(Ok(Message::Close(_)) | Err(_)) | None => false,
            Some(Ok(_)) => true,
        }
    }

    /// Applies a bundle from the server, on a thread of the blocking pool;
    /// returns what was written locally since the last look (to upload),
    /// computed in the same section so nothing written meanwhile is
    /// missed. `quiet`: part of the first catch-up of a community new to
    /// this device (no notifications).
    async fn apply(&mut self, bundle: Bundle, prepared: Prepared, quiet: bool) -> Result<Bundle> {
        let (id, since) = (self.community, self.last_seen.clone());
        let client = self.client.clone();
        let job = tokio::task::spawn_blocking(move || -> Result<(Bundle, Heads)> {
            let mut k = client.lock().unwrap_or_else(PoisonError::into_inner);
            let me = k.member_id();
            let local = match k.community(id) {
                Ok(c) => {
                    if quiet {
                        c.catch_up_quietly();
                    }
                    c.changes_since_for(&since, &me)?
                }
                Err(_) => Bundle::new(id),
            };
            let report = k.receive_prepared(&bundle, prepared, Timestamp::now())?;
            if !report.rejected.is_empty() {
                tracing::debug!(
                    rejected = report.rejected.len(),
                    "server sent refused items"
                );
            }
            Ok((local, k.community(id)?.heads()?))
        });
        let (local, heads) = match job.await {
            Ok(done) => done?,
            // As if it had been applied on this thread.
            Err(e) => match e.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(e) => return Err(Error::Io(std::io::Error::other(e))),
            },
        };
        self.last_seen = heads;
        Ok(local)
    }

    /// Local writes since the last look.
    fn local_writes(&mut self) -> Result<Bundle> {
        let (id, since) = (self.community, self.last_seen.clone());
        let (local, heads) = self.with_client(|k| {
            let me = k.member_id();
            match k.community(id) {
                Ok(c) => Ok((c.changes_since_for(&since, &me)?, c.heads()?)),
                Err(Error::UnknownCommunity) => Ok((Bundle::new(id), Heads::empty())),
                Err(e) => Err(e),
            }
        })?;
        self.last_seen = heads;
        Ok(local)
    }

    /// What the server lacks (`Some(its heads)`), or only the authority
    /// log (`None`: the server does not let this member in yet).
    fn outgoing(&mut self, server: Option<&Heads>) -> Result<Bundle> {
        let id = self.community;
        let (bundle, heads) = self.with_client(|k| {
            let me = k.member_id();
            let c = match k.community(id) {
                Ok(c) => c,
                Err(Error::UnknownCommunity) => return Ok((Bundle::new(id), Heads::empty())),
                Err(e) => return Err(e),
            };
            let bundle = match server {
                Some(h) => c.changes_since_for(h, &me)?,
                None => {
                    let mut b = c.changes_since(&Heads::empty())?;
                    b.changes.clear();
                    b
                }
            };
            Ok((bundle, c.heads()?))
        })?;
        if server.is_some() {
            self.last_seen = heads;
        }
        Ok(bundle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Visibility;

    /// Three bundles of a community's history, each with items.
    fn bundles() -> Result<Vec<Bundle>> {
        let dir = tempfile::tempdir()?;
        let mut k = Karmyq::open(dir.path())?;
        let id = k.create_community("Elm Street", "", Visibility::Public, Timestamp::now())?;
        for name in ["Ana", "Ana B."] {
            let profile = crate::Profile {
                name: name.into(),
                ..crate::Profile::default()
            };
            k.community(id)?.set_profile(&profile, Timestamp::now())?;
        }
        let all = k.community(id)?.changes_since(&Heads::empty())?;
        let mut out = vec![Bundle::new(id), Bundle::new(id), Bundle::new(id)];
        out[0].ops = all.ops;
        for (i, change) in all.changes.into_iter().enumerate() {
            out[1 + i % 2].changes.push(change);
        }
        assert!(out.iter().all(|b| !b.is_empty()));
        Ok(out)
    }

    #[test]
    fn the_preparer_counts_its_backlog_and_keeps_history_apart_from_news() -> Result<()> {
        let b = bundles()?;
        let rt = tokio::runtime::Builder::new_current_thread().build()?;
        let mut p = Preparer::start();
        let apply = |b: &Bundle| DeviceAction::Apply(b.clone());
        p.push(
            &[apply(&b[0]), DeviceAction::Status(SyncStatus::Syncing)],
            true,
        );
        p.push(&[apply(&b[1])], true);
        p.push(&[apply(&b[2])], false);
        assert_eq!(p.backlog(), b.iter().map(Bundle::len).sum::<usize>());

        let (_, quiet) = rt.block_on(p.take());
        assert!(quiet);
        assert_eq!(p.backlog(), b[1].len() + b[2].len());
        // Prepared on several threads, taken in the order handed over.
        let (prepared, quiet) = rt.block_on(p.take());
        assert!(quiet);
        assert!(b[1].changes.iter().all(|c| prepared.holds(c)));
        assert!(!b[2].changes.iter().any(|c| prepared.holds(c)));
        // The next is news: it does not go with history, prepared or not.
        assert!(!p.ready(true));
        while !p.ready(false) {
            std::thread::yield_now();
        }
        let (prepared, quiet) = p.take_ready();
        assert!(!quiet);
        assert!(b[2].changes.iter().all(|c| prepared.holds(c)));
        assert!(!b[1].changes.iter().any(|c| prepared.holds(c)));
        assert_eq!(p.backlog(), 0);
        // Nothing queued: nothing to wait for.
        assert!(p.ready(false));
        Ok(())
    }

    #[test]
    fn each_preparation_goes_with_its_bundle_however_the_threads_finish() -> Result<()> {
        let all = bundles()?;
        let rt = tokio::runtime::Builder::new_current_thread().build()?;
        let mut p = Preparer::start();
        // One bundle per change, in turn large and small, handed over at once.
        let mut pieces = Vec::new();
        for change in all[1]
            .changes
            .iter()
            .chain(&all[2].changes)
            .cycle()
            .take(24)
        {
            let mut piece = Bundle::new(all[1].community);
            piece.changes.push(change.clone());
            if pieces.len() % 2 == 0 {
                piece.changes.extend(all[1].changes.iter().cloned());
            }
            pieces.push(piece);
        }
        let actions: Vec<DeviceAction> = pieces.iter().cloned().map(DeviceAction::Apply).collect();
        p.push(&actions, false);
        for piece in &pieces {
            let (prepared, _) = rt.block_on(p.take());
            assert!(piece.changes.iter().all(|c| prepared.holds(c)));
            assert_eq!(
                prepared.len(),
                piece
                    .changes
                    .iter()
                    .map(|c| c.envelope.change_hash)
                    .collect::<std::collections::HashSet<_>>()
                    .len()
            );
        }
        Ok(())
    }
}
