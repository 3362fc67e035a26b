//! # karmyq-sync-server
//!
//! A relay for Karmyq devices: it keeps a replica of every community it is
//! given (one SQLite file each, through `karmyq-core`'s own store and
//! validator), lets a device follow a community only while its member is a
//! current member, and pushes every change it accepts to every other
//! subscriber allowed to read it.
//!
//! - `GET /v1/sync`: WebSocket, binary frames of [`karmyq_core::sync`].
//! - `GET /health`, `GET /metrics` (Prometheus text),
//!   `GET /v1/communities` (the public directory, JSON envelope).
//!
//! [`run`] serves a listener until `shutdown` completes, then drains the
//! connections; the `karmyq-sync-server` binary is a thin `main` over it.

mod conn;
mod hub;
mod metrics;
mod store;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use karmyq_core::sync::{JoinDecline, JoinRequest, RateLimits, ServerLimits};
use karmyq_core::{CommunityId, MemberId, Signature, Timestamp};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

pub use metrics::Metrics;
pub use store::DirectoryEntry;

use hub::Hub;
use store::{JoinOutcome, Store, StoreError};

/// The default [`Config::push_interval`], in milliseconds: the best of 15,
/// 20 and 30 ms in the fan-out bench (sync-server/BENCH.md).
pub const DEFAULT_PUSH_INTERVAL_MS: u64 = 20;

/// What a server needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the server keeps its identity and one file per community.
    pub data_dir: PathBuf,
    /// Frame size and bundle size limits.
    pub limits: ServerLimits,
    /// Most open sync connections; more are refused with `busy`.
    pub max_connections: usize,
    /// Frames a member may send at once (token bucket size).
    pub rate_burst: u32,
    /// Frames per second a member may send on average.
    pub rate_per_second: u32,
    /// How long shutdown waits for connections to close.
    pub drain_timeout: Duration,
    /// How long a connection may stay without logging in.
    pub login_timeout: Duration,
    /// Shortest interval between two live pushes to a subscriber: what
    /// arrives within it goes out merged, in one frame. A quiet
    /// community's change goes out at once.
    pub push_interval: Duration,
}

impl Config {
    /// Defaults for a data directory.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Config {
            data_dir: data_dir.into(),
            limits: ServerLimits::default(),
            max_connections: 1024,
            rate_burst: 200,
            rate_per_second: 50,
            drain_timeout: Duration::from_secs(10),
            login_timeout: Duration::from_secs(10),
            push_interval: Duration::from_millis(DEFAULT_PUSH_INTERVAL_MS),
        }
    }
}

/// Why the server could not start or stopped badly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The data directory could not be opened.
    #[error("store: {0}")]
    Store(#[from] karmyq_core::Error),
    /// The socket failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// Shared by every handler.
#[derive(Debug)]
pub(crate) struct AppState {
    pub config: Config,
    pub store: Store,
    pub hub: Arc<Hub>,
    pub metrics: Arc<Metrics>,
    pub connections: Arc<Semaphore>,
    pub next_conn: AtomicU64,
    /// Per-member token buckets (those full again are forgotten now and
    /// then). A std mutex: held for one lookup, never across an `.await`.
    pub buckets: std::sync::Mutex<RateLimits<MemberId>>,
    /// Flips to `true` when the server starts shutting down.
    pub shutdown: watch::Receiver<bool>,
    /// Names this server in login challenges.
    pub context: String,
}

/// The JSON envelope of every HTTP answer.
#[derive(Debug, Serialize)]
struct Envelope<T: Serialize> {
    success: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ApiErrorBody>,
}

#[derive(Debug, Serialize)]
struct ApiErrorBody {
    code: &'static str,
    message: String,
}

/// An HTTP error: a stable code, a status; internals are logged, not shown.
#[derive(Debug)]
struct AppError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "request failed");
        AppError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "internal",
            message: "the server failed; see its log".into(),
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let body = Envelope::<()> {
            success: false,
            data: None,
            error: Some(ApiErrorBody {
                code: self.code,
                message: self.message,
            }),
        };
        (self.status, Json(body)).into_response()
    }
}

fn ok<T: Serialize>(data: T) -> Json<Envelope<T>> {
    Json(Envelope {
        success: true,
        data: Some(data),
        error: None,
    })
}

async fn health() -> Json<Envelope<&'static str>> {
    ok("ok")
}

async fn metrics_text(State(state): State<Arc<AppState>>) -> Response {
    let text = state.metrics.render(state.hub.count());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

async fn directory(
    State(state): State<Arc<AppState>>,
) -> Result<Json<Envelope<Vec<DirectoryEntry>>>, AppError> {
    Ok(ok(state.store.directory().await?))
}

async fn not_found() -> AppError {
    AppError {
        status: StatusCode::NOT_FOUND,
        code: "not_found",
        message: "no such route".into(),
    }
}

impl AppState {
    /// Whether the member may make one more request now (token bucket).
    pub(crate) fn allowed(&self, member: &MemberId) -> bool {
        let now = Timestamp::now().as_millis();
        self.buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .allow(*member, now)
    }
}

/// How far a join request's time may be from the server's clock.
const JOIN_REQUEST_SKEW_MS: i64 = 10 * 60 * 1000;

/// The body of `POST /v1/communities/{id}/join-requests`: a
/// [`JoinRequest`] with hex keys and signature.
#[derive(Debug, Deserialize)]
pub struct JoinRequestBody {
    /// The asker's member id (64 hex characters).
    pub member: String,
    /// A few words for the admins.
    pub message: String,
    /// Milliseconds since the Unix epoch, within ten minutes of the server.
    pub created_at: i64,
    /// The signature (128 hex characters) under `SigningTag::JoinRequest`.
    pub signature: String,
}

fn bad_request(code: &'static str, message: &str) -> AppError {
    AppError {
        status: StatusCode::BAD_REQUEST,
        code,
        message: message.to_owned(),
    }
}

/// The pieces of a signed HTTP body, each a `bad_request` if malformed.
fn community_of(id: &str) -> Result<CommunityId, AppError> {
    CommunityId::from_hex(id)
        .map_err(|_| bad_request("bad_request", "the community id is not 64 hex characters"))
}

fn member_of(hex: &str, what: &str) -> Result<MemberId, AppError> {
    MemberId::from_hex(hex)
        .map_err(|_| bad_request("bad_request", &format!("{what} is not a valid key")))
}

fn signature_of(hex: &str) -> Result<Signature, AppError> {
    let mut signature = [0u8; 64];
    hex::decode_to_slice(hex, &mut signature)
        .map_err(|_| bad_request("bad_request", "signature is not 128 hex characters"))?;
    Ok(Signature::from_bytes(signature))
}

fn parse_join_request(id: &str, body: &[u8]) -> Result<JoinRequest, AppError> {
    let community = community_of(id)?;
    let body: JoinRequestBody = serde_json::from_slice(body)
        .map_err(|_| bad_request("bad_request", "the body is not a join request"))?;
    Ok(JoinRequest {
        community,
        member: member_of(&body.member, "member")?,
        message: body.message,
        created_at: Timestamp::from_millis(body.created_at),
        signature: signature_of(&body.signature)?,
    })
}

async fn join_request(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Envelope<&'static str>>), AppError> {
    let request = parse_join_request(&id, &body)?;
    if request.verify().is_err() {
        state.metrics.refused("bad_signature");
        return Err(AppError {
            status: StatusCode::UNAUTHORIZED,
            code: "bad_signature",
            message: "the signature does not verify, or the message is too long".into(),
        });
    }
    fresh_and_allowed(&state, &request.member, request.created_at)?;
    match state.store.join(request).await? {
        JoinOutcome::Received => Ok((StatusCode::ACCEPTED, ok("received"))),
        JoinOutcome::Public => Err(AppError {
            status: StatusCode::CONFLICT,
            code: "public_community",
            message: "a public community is joined directly".into(),
        }),
    }
}

/// The body of `POST /v1/communities/{id}/join-requests/{member}/decline`:
/// a [`JoinDecline`] of `{member}`'s request, with hex keys and signature.
#[derive(Debug, Deserialize)]
pub struct JoinDeclineBody {
    /// The admin's or moderator's member id (64 hex characters).
    pub by: String,
    /// Milliseconds since the Unix epoch, within ten minutes of the server.
    pub created_at: i64,
    /// The signature (128 hex characters) under `SigningTag::JoinDecline`.
    pub signature: String,
}

fn parse_decline(id: &str, asker: &str, body: &[u8]) -> Result<JoinDecline, AppError> {
    let community = community_of(id)?;
    let asker = member_of(asker, "the member")?;
    let body: JoinDeclineBody = serde_json::from_slice(body)
        .map_err(|_| bad_request("bad_request", "the body is not a decline"))?;
    Ok(JoinDecline {
        community,
        asker,
        by: member_of(&body.by, "by")?,
        created_at: Timestamp::from_millis(body.created_at),
        signature: signature_of(&body.signature)?,
    })
}

/// Checks a signed answer's freshness and its signer's rate.
fn fresh_and_allowed(
    state: &AppState,
    signer: &MemberId,
    created_at: Timestamp,
) -> Result<(), AppError> {
    let skew = Timestamp::now()
        .as_millis()
        .saturating_sub(created_at.as_millis());
    if skew.saturating_abs() > JOIN_REQUEST_SKEW_MS {
        return Err(bad_request(
            "stale",
            "created_at is too far from the server's clock",
        ));
    }
    if !state.allowed(signer) {
        state.metrics.refused("rate_limited");
        return Err(AppError {
            status: StatusCode::TOO_MANY_REQUESTS,
            code: "rate_limited",
            message: "slow down".into(),
        });
    }
    Ok(())
}

async fn decline_join_request(
    State(state): State<Arc<AppState>>,
    Path((id, asker)): Path<(String, String)>,
    body: Bytes,
) -> Result<(StatusCode, Json<Envelope<&'static str>>), AppError> {
    let decline = parse_decline(&id, &asker, &body)?;
    if decline.verify().is_err() {
        state.metrics.refused("bad_signature");
        return Err(AppError {
            status: StatusCode::UNAUTHORIZED,
            code: "bad_signature",
            message: "the signature does not verify".into(),
        });
    }
    fresh_and_allowed(&state, &decline.by, decline.created_at)?;
    match state.store.decline(decline).await {
        Ok(()) => Ok((StatusCode::OK, ok("declined"))),
        Err(StoreError::NotMember) => Err(AppError {
            status: StatusCode::FORBIDDEN,
            code: "not_permitted",
            message: "only an admin or moderator of the community may decline".into(),
        }),
        Err(e) => Err(e.into()),
    }
}

fn app(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics_text))
        .route("/v1/communities", get(directory))
        .route("/v1/communities/{id}/join-requests", post(join_request))
        .route(
            "/v1/communities/{id}/join-requests/{member}/decline",
            post(decline_join_request),
        )
        .route("/v1/sync", get(conn::upgrade))
        .fallback(not_found)
        .with_state(state)
}

/// Serves `listener` until `shutdown` completes, then tells every sync
/// connection (error frame `shutting_down`), waits up to
/// `config.drain_timeout` for them to close, and stops the store.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let hub = Arc::new(Hub::default());
    let metrics = Arc::new(Metrics::default());
    let (store, me, store_thread) = Store::start(
        &config.data_dir,
        hub::Pacing {
            max_frame: config.limits.max_frame,
            interval: config.push_interval,
        },
        hub.clone(),
        metrics.clone(),
    )?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let max = config.max_connections.max(1);
    let connections = Arc::new(Semaphore::new(max));
    let state = Arc::new(AppState {
        context: format!("karmyq-sync/v1 {me}"),
        config: config.clone(),
        store,
        hub,
        metrics,
        connections: connections.clone(),
        next_conn: AtomicU64::new(1),
        buckets: std::sync::Mutex::new(RateLimits::new(config.rate_burst, config.rate_per_second)),
        shutdown: stop_rx,
    });
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(?addr, server = %me.fmt_short(), "serving");
    // No Nagle: a live push is one small frame, and waiting to coalesce it
    // with the next (while the device delays its ACK) costs ~40 ms.
    let listener = listener.tap_io(|tcp| {
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
    });
    let serve = axum::serve(listener, app(state.clone())).with_graceful_shutdown(async move {
        shutdown.await;
        tracing::info!("shutting down: draining connections");
        let _ = stop_tx.send(true);
    });
    serve.await?;
    // Upgraded WebSockets outlive axum's own graceful shutdown: wait for
    // every connection's permit to come back.
    let permits = u32::try_from(max).unwrap_or(u32::MAX);
    if tokio::time::timeout(config.drain_timeout, connections.acquire_many(permits))
        .await
        .is_err()
    {
        tracing::warn!("drain timed out; closing the remaining connections");
    }
    drop(state);
    // The store thread ends when the last handle is gone.
    let _ = tokio::task::spawn_blocking(move || store_thread.join()).await;
    tracing::info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn http_routes_answer_with_the_envelope() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(run(listener, Config::new(dir.path()), async {
            let _ = rx.await;
        }));
        let get = |path: &'static str| async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(addr).await?;
            s.write_all(
                format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .await?;
            let mut out = String::new();
            s.read_to_string(&mut out).await?;
            Ok::<_, std::io::Error>(out)
        };
        let health = get("/health").await?;
        assert!(health.starts_with("HTTP/1.1 200"), "{health}");
        assert!(health.contains(r#"{"success":true,"data":"ok"}"#));
        let dir_list = get("/v1/communities").await?;
        assert!(
            dir_list.contains(r#"{"success":true,"data":[]}"#),
            "{dir_list}"
        );
        let metrics = get("/metrics").await?;
        assert!(metrics.contains("karmyq_connections 0"), "{metrics}");
        let missing = get("/nope").await?;
        assert!(missing.starts_with("HTTP/1.1 404"));
        assert!(missing.contains(r#""code":"not_found""#));
        let _ = tx.send(());
        server.await??;
        Ok(())
    }
}
