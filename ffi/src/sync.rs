//! Sync with a server: started and stopped per community, running on
//! threads (each with its own tokio runtime) that the client owns; its
//! statuses reach every listener as `SyncStatusChanged`.

use karmyq_core::sync::{EngineOptions, SyncEngine};
use karmyq_core::{CommunityId, MemberId, Timestamp};

use crate::client::{KarmyqClient, lock};
use crate::error::{ApiError, ApiResult};
use crate::listener::{KarmyqEvent, SyncState};

/// A member's request to join, as the server holds it (seen by admins and
/// moderators while syncing).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct JoinRequestView {
    /// Who asks.
    pub member: MemberId,
    /// Their message.
    pub message: String,
    /// When they asked.
    pub created_at: Timestamp,
}

#[uniffi::export]
impl KarmyqClient {
    /// Starts syncing a community with the server at `url`
    /// (`ws://host:port/v1/sync`). Returns at once; connecting, catching
    /// up and retrying happen in the background, reported to listeners.
    /// Starting a community already syncing restarts it with `url`.
    pub fn start_sync(&self, url: String, community: CommunityId) -> ApiResult<()> {
        if !(url.starts_with("ws://") || url.starts_with("wss://")) {
            return Err(ApiError::invalid(
                "invalid_argument",
                "the sync url must start with ws:// or wss://",
            ));
        }
        self.stop_sync(community);
        let fanout = self.fanout.clone();
        let engine = SyncEngine::start(
            self.shared()?,
            &url,
            community,
            EngineOptions::default(),
            move |status| {
                fanout.send(&KarmyqEvent::SyncStatusChanged {
                    community,
                    status: SyncState::from(&status),
                });
            },
        )?;
        lock(&self.engines).insert(community, engine);
        Ok(())
    }

    /// Stops syncing a community (nothing if it was not syncing).
    pub fn stop_sync(&self, community: CommunityId) {
        let engine = lock(&self.engines).remove(&community);
        if let Some(engine) = engine {
            engine.stop();
        }
    }

    /// The communities syncing now.
    pub fn syncing(&self) -> Vec<CommunityId> {
        lock(&self.engines).keys().copied().collect()
    }

    /// The pending requests to join a community, as its server last sent
    /// them (only to admins and moderators). Answer with `admit`.
    pub fn join_requests(&self, community: CommunityId) -> ApiResult<Vec<JoinRequestView>> {
        let engines = lock(&self.engines);
        let engine = engines.get(&community).ok_or_else(ApiError::no_sync)?;
        Ok(engine
            .join_requests()
            .into_iter()
            .map(|r| JoinRequestView {
                member: r.member,
                message: r.message,
                created_at: r.created_at,
            })
            .collect())
    }
}
