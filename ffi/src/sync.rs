//! Sync with a server: started and stopped per community, running on
//! threads (each with its own tokio runtime) that the client owns; its
//! statuses reach every listener as `SyncStatusChanged`.

use karmyq_core::sync::{EngineOptions, JoinDecline, JoinRequest, SyncEngine};
use karmyq_core::{CommunityId, Keypair, MemberId, Signature, Timestamp};

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

/// An HTTP request for the app to send to the sync server with its own
/// HTTP client (`POST`, `Content-Type: application/json`): the library
/// signs, the app does the network.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct SignedPost {
    /// The path on the server, e.g. `/v1/communities/<id>/join-requests`.
    pub path: String,
    /// The JSON body.
    pub body: String,
}

fn hex_signature(s: &Signature) -> String {
    hex::encode(s.to_bytes())
}

impl KarmyqClient {
    fn keys(&self) -> ApiResult<Keypair> {
        let secret = self.export_secret()?;
        Ok(Keypair::import_secret(&secret)?)
    }
}

#[uniffi::export]
impl KarmyqClient {
    /// Asks to join a private community whose id the member knows: a
    /// signed request for the server, which shows it to the community's
    /// admins and moderators. `message` is at most 500 characters.
    pub fn sign_join_request(
        &self,
        community: CommunityId,
        message: String,
    ) -> ApiResult<SignedPost> {
        let r = JoinRequest::sign(community, &self.keys()?, &message, self.time())?;
        let body = serde_json::json!({
            "member": r.member.to_string(),
            "message": r.message,
            "created_at": r.created_at.as_millis(),
            "signature": hex_signature(&r.signature),
        });
        Ok(SignedPost {
            path: format!("/v1/communities/{community}/join-requests"),
            body: body.to_string(),
        })
    }

    /// Declines `member`'s request to join (admins and moderators): a
    /// signed answer for the server, which drops the request.
    pub fn sign_join_decline(
        &self,
        community: CommunityId,
        member: MemberId,
    ) -> ApiResult<SignedPost> {
        let d = JoinDecline::sign(community, member, &self.keys()?, self.time());
        let body = serde_json::json!({
            "by": d.by.to_string(),
            "created_at": d.created_at.as_millis(),
            "signature": hex_signature(&d.signature),
        });
        Ok(SignedPost {
            path: format!("/v1/communities/{community}/join-requests/{member}/decline"),
            body: body.to_string(),
        })
    }

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
