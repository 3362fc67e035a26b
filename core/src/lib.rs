//! # karmyq-core
//!
//! The whole Karmyq domain as an embedded, local-first library: a device
//! holds its communities in SQLite files, one per community, replicated as
//! Automerge documents plus a signed authority log, and exchanges
//! [`Bundle`]s with other devices (directly, or through the sync server).
//!
//! ```
//! use karmyq_core::{Heads, Karmyq, Profile, Timestamp, Visibility};
//!
//! # fn main() -> karmyq_core::Result<()> {
//! let now = Timestamp::from_millis(1_800_000_000_000);
//! let (dir_a, dir_b) = (tempfile::tempdir()?, tempfile::tempdir()?);
//! let mut alice = Karmyq::open(dir_a.path())?;
//! let mut bob = Karmyq::open(dir_b.path())?;
//!
//! // Alice founds a public community; Bob receives it and joins.
//! let id = alice.create_community("Elm Street", "Neighbours helping neighbours", Visibility::Public, now)?;
//! let bundle = alice.community(id)?.changes_since(&Heads::empty())?;
//! bob.receive(&bundle, now)?;
//! bob.community(id)?.join(now)?;
//! bob.community(id)?.set_profile(&Profile { name: "Bob".into(), ..Profile::default() }, now)?;
//!
//! // Alice catches up from what she holds.
//! let heads = alice.community(id)?.heads()?;
//! let back = bob.community(id)?.changes_since(&heads)?;
//! let report = alice.receive(&back, now)?;
//! assert!(report.rejected.is_empty());
//! assert_eq!(alice.community(id)?.members()?.len(), 2);
//! # Ok(())
//! # }
//! ```

mod authority;
mod background;
mod bundle;
mod client;
mod codec;
mod community;
mod conversation;
mod crypto;
mod docs;
mod error;
mod identity;
mod invite;
mod karma;
mod matching;
mod norms;
mod notify;
mod profile;
mod report;
mod request;
mod store;
pub mod sync;
mod time;
mod trust;

pub use authority::{
    AuthorityLog, CommunityId, Inserted, Invite, InviteKey, InviteProof, Member, Op, OpBody,
    OpHash, RequestTtlDays, Resolved, Role, Settings, SettingsPatch, SignedOp, Visibility,
};
pub use background::{BACKGROUND_NICE, Background};
pub use bundle::{Bundle, Heads, Item, Report};
pub use client::{CommunitySummary, Karmyq, MATCHED_ELSEWHERE};
pub use community::{
    Community, CommunityInfo, ConversationView, DEFAULT_COMPACT_EVERY, MatchSummary, MemberView,
    MessageView, OfferSummary, Page, Prepared, ProposalView, RequestQuery, RequestSort,
    RequestSummary, RequestView,
};
pub use conversation::{ConversationId, MAX_MESSAGE_CHARS, MessageId};
pub use crypto::DecryptError;
pub use docs::{Authentic, DocId, Envelope, Link, SignedChange, actor_of, auth_message};
pub use error::{Error, Rejection, Result};
pub use identity::{Keypair, MemberId, Signature, SigningTag};
pub use invite::InviteToken;
pub use karma::{
    CompletedMatch, HALF_LIFE_MS, KarmaEvent, KarmaHistoryEntry, KarmaPool, KarmaReason, decay,
    display_karma, karma, karma_events, karma_history,
};
pub use matching::{
    ACTIVITY_WINDOW_MS, BlockList, Candidate, CandidateScore, FeedItem, FeedKind, MAX_SUGGESTIONS,
    MIN_SUGGESTION_SCORE, RECENT_COMPLETION_MS, RankedItem, RequestFacts, Suggestion, Viewer,
    candidate_score, community_activity, completion_share, geohash_distance_km, rank_feed,
    rank_feed_with, skill_share, suggest_helpers,
};
pub use norms::{Norm, Proposal, ProposalId};
pub use notify::{Event, Listener, Notification, NotificationKind, QuietHours, Subscription};
pub use profile::Profile;
pub use report::{ReportCategory, ReportId, ReportState, ReportTarget, Resolution};
pub use request::{
    Category, MAX_POSTED_TO, MatchState, MatchStatus, OfferId, OfferState, OfferStatus,
    RequestDraft, RequestId, RequestKind, RequestState, RequestStatus, Urgency, offers_created,
};
pub use time::Timestamp;
pub use trust::{Badge, TrustInput, TrustScore, badges, trust};
