//! # karmyq-ffi
//!
//! Karmyq's API for mobile apps (Kotlin, Swift, React Native) and for
//! Python, exported through uniffi. It only wraps `karmyq-core`: each call
//! is a line or two on [`KarmyqClient`], which owns one device's client,
//! its clock and its syncs.
//!
//! - Ids cross as strings (`MemberId`, `CommunityId`: 64 hex characters;
//!   `RequestId`, `OfferId`...: `<member hex>.<nonce hex>`), times as
//!   milliseconds since the Unix epoch. A malformed id is an
//!   `ApiError::InvalidInput` with code `invalid_id`.
//! - Every failure is one [`ApiError`] with a stable code (see
//!   [`error`](crate::error) for the table).
//! - Events (domain events, notifications, sync statuses) reach a
//!   [`KarmyqListener`] until its [`ListenerHandle`] is dropped.
//!
//! ```
//! use karmyq_ffi::{KarmyqClient, Visibility};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let client = KarmyqClient::open(dir.path().display().to_string()).unwrap();
//! let id = client
//!     .create_community("Elm Street".into(), "Neighbours".into(), Visibility::Public)
//!     .unwrap();
//! assert_eq!(client.communities().unwrap()[0].id, id);
//! ```

uniffi::setup_scaffolding!();

mod client;
pub mod error;
mod listener;
mod messaging;
mod requests;
mod sync;
mod types;

pub use client::KarmyqClient;
pub use error::{ApiError, ApiResult};
pub use karmyq_core::{
    Category, CommunityId, CommunitySummary, ConversationId, ConversationView, MatchState,
    MatchStatus, MatchSummary, MemberId, MemberView, MessageId, Norm, OfferId, OfferStatus,
    OfferSummary, Profile, ProposalId, QuietHours, ReportCategory, ReportId, RequestId,
    RequestKind, RequestQuery, RequestSort, RequestStatus, RequestSummary, RequestTtlDays,
    Resolution, Role, Settings, SettingsPatch, Suggestion, Timestamp, TrustScore, Urgency,
    Visibility,
};
pub use listener::{
    KarmyqEvent, KarmyqListener, ListenerHandle, Notification, NotificationKind, SyncState,
};
pub use sync::{JoinRequestView, SignedPost};
pub use types::{
    Badge, CommunityInfo, FeedEntry, FeedKind, KarmaEntry, KarmaReason, MessageView, OfferView,
    ProposalView, ReceiveReport, RejectedChange, ReportTarget, ReportView, RequestDraft,
    RequestView,
};

/// The library's version.
#[uniffi::export]
pub fn karmyq_version() -> String {
    env!("CARGO_PKG_VERSION").to_owned()
}
