//! One sync connection: a WebSocket carrying binary frames, driven by
//! `karmyq_core::sync::ServerSession`. This module only moves bytes and
//! carries out the session's actions.

use std::future::Future;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use futures_util::stream::{FuturesOrdered, SplitSink};
use futures_util::{SinkExt, StreamExt};
use karmyq_core::sync::{Ack, ErrorCode, Frame, ServerAction, ServerSession, split};
use karmyq_core::{CommunityId, MemberId};
use tokio::sync::{Notify, OwnedSemaphorePermit, mpsc};

use crate::AppState;
use crate::hub::{Outbound, Subscriber};
use crate::store::StoreError;

/// Room for live pushes waiting to be written to one connection.
const INBOX: usize = 1024;

/// Most queued frames written with one flush.
const BATCH: usize = 64;

/// Most uploads of one connection waiting for the store at once.
const IN_FLIGHT: usize = 32;

/// An upload's answer from the store, with its community.
type AckFuture = Pin<Box<dyn Future<Output = (CommunityId, Result<Ack, StoreError>)> + Send>>;

/// Refused frames tolerated from a connection that has not logged in.
const MAX_REFUSALS_BEFORE_LOGIN: u32 = 16;

/// Bytes the WebSocket layer reads from the socket at a time. Its default
/// (128 KiB) is zero-filled on a connection's first read and stays
/// resident: 137 KB per idle connection. A large frame still arrives
/// whole (the buffer grows to its announced length); it just takes a few
/// more reads.
const READ_BUFFER: usize = 8 * 1024;

/// Extra bytes the WebSocket layer lets through beyond the frame limit, so
/// a frame a little too large gets a typed `frame_too_large` answer;
/// anything larger still closes the connection.
const SLACK: usize = 64 * 1024;

pub(crate) async fn upgrade(State(state): State<Arc<AppState>>, ws: WebSocketUpgrade) -> Response {
    let permit = state.connections.clone().try_acquire_owned().ok();
    let max = state.config.limits.max_frame.saturating_add(SLACK);
    ws.max_message_size(max)
        .max_frame_size(max)
        .read_buffer_size(READ_BUFFER)
        .on_upgrade(move |socket| serve(state, socket, permit))
}

struct Conn {
    state: Arc<AppState>,
    /// The writing half; the reading half is [`read_frames`]' task.
    socket: SplitSink<WebSocket, Message>,
    id: u64,
    session: ServerSession,
    tx: mpsc::Sender<Outbound>,
    kick: Arc<Notify>,
    /// Whom the member blocked, as their device told (for this session).
    blocked: Arc<std::collections::BTreeSet<MemberId>>,
    /// Frames refused before login.
    refusals: u32,
    /// Uploads waiting for the store's answer, in upload order.
    acks: FuturesOrdered<AckFuture>,
}

async fn serve(state: Arc<AppState>, mut socket: WebSocket, permit: Option<OwnedSemaphorePermit>) {
    let Some(_permit) = permit else {
        state.metrics.refused(ErrorCode::Busy.code());
        tracing::warn!("connection refused: at the connection limit");
        let frame = Frame::error(ErrorCode::Busy, None, "too many connections; retry later");
        let _ = socket.send(Message::Binary(frame.encode().into())).await;
        let _ = socket.send(Message::Close(None)).await;
        return;
    };
    state.metrics.connections.fetch_add(1, Ordering::Relaxed);
    state
        .metrics
        .connections_total
        .fetch_add(1, Ordering::Relaxed);
    let id = state.next_conn.fetch_add(1, Ordering::Relaxed);
    let mut nonce = [0u8; 32];
    if getrandom::getrandom(&mut nonce).is_err() {
        tracing::error!("no randomness: refusing the connection");
        state.metrics.connections.fetch_sub(1, Ordering::Relaxed);
        return;
    }
    let (tx, mut rx) = mpsc::channel(INBOX);
    let session = ServerSession::new(nonce, &state.context, state.config.limits);
    let mut shutdown = state.shutdown.clone();
    let (socket, stream) = socket.split();
    let (frames_tx, mut incoming) = mpsc::channel(1);
    let reader = tokio::spawn(read_frames(stream, frames_tx));
    let mut conn = Conn {
        state: state.clone(),
        socket,
        id,
        session,
        tx,
        kick: Arc::new(Notify::new()),
        blocked: Arc::default(),
        refusals: 0,
        acks: FuturesOrdered::new(),
    };
    let login_deadline = tokio::time::sleep(state.config.login_timeout);
    tokio::pin!(login_deadline);
    let kick = conn.kick.clone();
    loop {
        let flow = tokio::select! {
            msg = incoming.recv() => match msg {
                Some(Ok(Message::Binary(bytes))) => {
                    state.metrics.bytes_in.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                    conn.on_frame(&bytes).await
                }
                Some(Ok(Message::Text(_))) => {
                    conn.refuse(ErrorCode::BadFrame, None, "binary frames only").await
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => ControlFlow::Continue(()),
                Some(Ok(Message::Close(_))) | None => ControlFlow::Break(()),
                Some(Err(error)) => {
                    tracing::info!(%error, "connection failed");
                    ControlFlow::Break(())
                }
            },
            Some(out) = rx.recv() => conn.push(out, &mut rx).await,
            Some((community, answer)) = conn.acks.next(), if !conn.acks.is_empty() => {
                conn.answered(community, answer).await
            }
            () = kick.notified() => {
                let _ = conn.refuse(ErrorCode::Internal, None, "too slow to keep up; reconnect").await;
                ControlFlow::Break(())
            }
            () = &mut login_deadline, if conn.session.member().is_none() => {
                let _ = conn.refuse(ErrorCode::NotAuthenticated, None, "log in sooner").await;
                ControlFlow::Break(())
            }
            _ = shutdown.changed() => {
                let _ = conn.refuse(ErrorCode::ShuttingDown, None, "the server is shutting down").await;
                ControlFlow::Break(())
            }
        };
        if flow.is_break() {
            break;
        }
    }
    state.hub.drop_connection(id);
    let _ = conn.socket.send(Message::Close(None)).await;
    reader.abort();
    state.metrics.connections.fetch_sub(1, Ordering::Relaxed);
}

/// Reads the connection's frames on a task of its own, which runs only
/// when the socket has something: polling the socket from the connection's
/// loop made a read attempt (and the WebSocket layer zero-fills its read
/// buffer first) every time a push woke it. One frame waits at most, so a
/// client that sends faster than its frames are handled waits too. Ends
/// with the connection (its receiver dropped) or the stream.
async fn read_frames(
    mut stream: futures_util::stream::SplitStream<WebSocket>,
    frames: mpsc::Sender<Result<Message, axum::Error>>,
) {
    while let Some(msg) = stream.next().await {
        if frames.send(msg).await.is_err() {
            return;
        }
    }
}

impl Conn {
    fn member_short(&self) -> String {
        self.session
            .member()
            .map_or_else(|| "-".into(), |m| m.fmt_short())
    }

    /// Sends what other tasks queued: `first`, then whatever else is
    /// already waiting (up to [`BATCH`] frames), written with one flush.
    /// Under a burst of live changes this turns one write per frame into
    /// one write per batch, on the server and on the device.
    async fn push(
        &mut self,
        first: Outbound,
        rx: &mut mpsc::Receiver<Outbound>,
    ) -> ControlFlow<()> {
        let mut next = Some(first);
        let mut fed = 0;
        while let Some(out) = next.take() {
            match out {
                Outbound::Frames(frames) => {
                    for bytes in frames {
                        let len = bytes.len() as u64;
                        if self.socket.feed(Message::Binary(bytes)).await.is_err() {
                            return ControlFlow::Break(());
                        }
                        self.state
                            .metrics
                            .bytes_out
                            .fetch_add(len, Ordering::Relaxed);
                        fed += 1;
                    }
                }
                Outbound::Evicted(community) => {
                    self.session.unsubscribed(&community);
                    self.send(&Frame::error(
                        ErrorCode::NotMember,
                        Some(community),
                        "no longer a member of this community",
                    ))
                    .await?;
                }
            }
            if fed < BATCH {
                next = rx.try_recv().ok();
            }
        }
        match self.socket.flush().await {
            Ok(()) => ControlFlow::Continue(()),
            Err(_) => ControlFlow::Break(()),
        }
    }

    async fn send_raw(&mut self, bytes: Vec<u8>) -> ControlFlow<()> {
        let len = bytes.len() as u64;
        match self.socket.send(Message::Binary(bytes.into())).await {
            Ok(()) => {
                self.state
                    .metrics
                    .bytes_out
                    .fetch_add(len, Ordering::Relaxed);
                ControlFlow::Continue(())
            }
            Err(_) => ControlFlow::Break(()),
        }
    }

    async fn send(&mut self, frame: &Frame) -> ControlFlow<()> {
        self.send_raw(frame.encode()).await
    }

    /// Sends an error frame, counts and logs it; the connection stays.
    async fn refuse(
        &mut self,
        code: ErrorCode,
        community: Option<CommunityId>,
        message: &str,
    ) -> ControlFlow<()> {
        self.state.metrics.refused(code.code());
        tracing::info!(
            code = code.code(),
            community = community.map(|c| c.fmt_short()),
            member = %self.member_short(),
            "refused"
        );
        self.send(&Frame::error(code, community, message)).await?;
        self.too_many_refusals()
    }

    /// Closes a connection that keeps sending refused frames before login.
    fn too_many_refusals(&mut self) -> ControlFlow<()> {
        if self.session.member().is_none() {
            self.refusals += 1;
            if self.refusals > MAX_REFUSALS_BEFORE_LOGIN {
                tracing::info!("too many refused frames before login: closing");
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    }

    /// Whether the member may send one more frame now.
    /// The logged-in member, if their token bucket allows another frame
    /// about `community`; otherwise the refusal is sent.
    async fn member_for(&mut self, community: CommunityId) -> Result<MemberId, ControlFlow<()>> {
        let Some(member) = self.session.member() else {
            return Err(self
                .refuse(ErrorCode::NotAuthenticated, Some(community), "log in first")
                .await);
        };
        if !self.allowed(&member) {
            return Err(self
                .refuse(ErrorCode::RateLimited, Some(community), "slow down")
                .await);
        }
        Ok(member)
    }

    fn allowed(&self, member: &MemberId) -> bool {
        self.state.allowed(member)
    }

    async fn on_frame(&mut self, bytes: &[u8]) -> ControlFlow<()> {
        let actions = self.session.receive(bytes);
        for action in actions {
            let flow = match action {
                ServerAction::Send(frame) => self.send(&frame).await,
                ServerAction::Refused(code) => {
                    self.state.metrics.refused(code.code());
                    tracing::info!(code = code.code(), member = %self.member_short(), "frame refused");
                    self.too_many_refusals()
                }
                ServerAction::LoggedIn(member) => {
                    tracing::info!(member = %member.fmt_short(), conn = self.id, "logged in");
                    ControlFlow::Continue(())
                }
                ServerAction::Subscribe { community, heads } => {
                    self.subscribe(community, heads).await
                }
                ServerAction::Ingest(bundle) => self.ingest(bundle).await,
                ServerAction::Blocks(blocked) => {
                    self.blocked = Arc::new(blocked.iter().copied().collect());
                    match self.session.member() {
                        Some(member) => match self.state.store.set_blocks(member, blocked).await {
                            Ok(()) => ControlFlow::Continue(()),
                            Err(e) => {
                                tracing::error!(error = %e, "keeping blocks failed");
                                ControlFlow::Continue(())
                            }
                        },
                        None => ControlFlow::Continue(()),
                    }
                }
                ServerAction::Close => ControlFlow::Break(()),
                _ => ControlFlow::Continue(()),
            };
            if flow.is_break() {
                return flow;
            }
        }
        ControlFlow::Continue(())
    }

    async fn subscribe(
        &mut self,
        community: CommunityId,
        heads: karmyq_core::Heads,
    ) -> ControlFlow<()> {
        let member = match self.member_for(community).await {
            Ok(member) => member,
            Err(flow) => return flow,
        };
        let sub = Subscriber {
            member,
            tx: self.tx.clone(),
            kick: self.kick.clone(),
            blocked: self.blocked.clone(),
        };
        let max = self.state.config.limits.max_frame;
        match self
            .state
            .store
            .subscribe(community, heads, self.id, sub.clone(), max)
            .await
        {
            Ok((first, next, ours, requests)) => {
                self.session.subscribed(community);
                tracing::info!(
                    community = %community.fmt_short(),
                    member = %member.fmt_short(),
                    ops = first.ops.len(),
                    changes = first.changes.len(),
                    paged = next.is_some(),
                    "subscribed"
                );
                if !self.send_catch_up(community, first, next, &sub).await? {
                    return ControlFlow::Continue(());
                }
                self.send(&Frame::Subscribed {
                    community,
                    heads: ours,
                })
                .await?;
                match requests {
                    Some(requests) if !requests.is_empty() => {
                        self.send(&Frame::JoinRequests {
                            community,
                            requests,
                        })
                        .await
                    }
                    _ => ControlFlow::Continue(()),
                }
            }
            Err(e) => self.store_error(e, community).await,
        }
    }

    /// Sends a catch-up page after page, in pieces that fit in a frame, in
    /// order; each page is read by the store while the one before is sent.
    /// Whether it was all sent: a member removed meanwhile gets no more
    /// (the eviction queued for this connection says why). If the store
    /// fails mid-way, the connection ends after the error: the device
    /// reconnects and goes on from what it holds.
    async fn send_catch_up(
        &mut self,
        community: CommunityId,
        first: karmyq_core::Bundle,
        mut next: Option<karmyq_core::Page>,
        sub: &Subscriber,
    ) -> ControlFlow<(), bool> {
        let max = self.state.config.limits.max_frame;
        let mut page = first;
        loop {
            let coming = match next {
                Some(at) => match self.state.store.page(community, at, sub.clone(), max).await {
                    Ok(pending) => Some(pending),
                    Err(e) => {
                        let _ = self.store_error(e, community).await;
                        return ControlFlow::Break(());
                    }
                },
                None => None,
            };
            for piece in split(page, max, usize::MAX) {
                self.send(&Frame::Bundle {
                    bytes: piece.encode(),
                })
                .await?;
            }
            let Some(coming) = coming else {
                return ControlFlow::Continue(true);
            };
            match coming.answer().await {
                Ok((bundle, after)) => (page, next) = (bundle, after),
                Err(StoreError::NotMember) => return ControlFlow::Continue(false),
                Err(e) => {
                    let _ = self.store_error(e, community).await;
                    return ControlFlow::Break(());
                }
            }
        }
    }

    /// Queues an upload with the store and goes on reading: its `Ack`
    /// is sent when the store answers, in upload order. A device that
    /// uploads faster than one round trip to the store per frame is not
    /// held to that pace; at most [`IN_FLIGHT`] uploads wait at once.
    async fn ingest(&mut self, bundle: karmyq_core::Bundle) -> ControlFlow<()> {
        let community = bundle.community;
        let member = match self.member_for(community).await {
            Ok(member) => member,
            Err(flow) => return flow,
        };
        if self.acks.len() >= IN_FLIGHT
            && let Some((community, answer)) = self.acks.next().await
        {
            self.answered(community, answer).await?;
        }
        match self.state.store.submit(member, self.id, bundle).await {
            Ok(pending) => {
                self.acks
                    .push_back(Box::pin(async move { (community, pending.answer().await) }));
                ControlFlow::Continue(())
            }
            Err(e) => self.store_error(e, community).await,
        }
    }

    /// Sends the store's answer to one upload.
    async fn answered(
        &mut self,
        community: CommunityId,
        answer: Result<karmyq_core::sync::Ack, StoreError>,
    ) -> ControlFlow<()> {
        match answer {
            Ok(ack) => self.send(&Frame::Ack(ack)).await,
            Err(e) => self.store_error(e, community).await,
        }
    }

    async fn store_error(&mut self, e: StoreError, community: CommunityId) -> ControlFlow<()> {
        match e {
            StoreError::NotMember => {
                self.refuse(
                    ErrorCode::NotMember,
                    Some(community),
                    "not a member of this community, or no such community",
                )
                .await
            }
            StoreError::Stopped => {
                self.refuse(ErrorCode::ShuttingDown, None, "the server is shutting down")
                    .await?;
                ControlFlow::Break(())
            }
            error @ (StoreError::Core(_) | StoreError::Sqlite(_)) => {
                tracing::error!(%error, community = %community.fmt_short(), member = %self.member_short(), "store failed");
                self.refuse(ErrorCode::Internal, Some(community), "the server failed")
                    .await
            }
        }
    }
}
