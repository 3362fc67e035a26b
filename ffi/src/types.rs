//! The values that cross the boundary: ids and times as custom types over
//! strings and integers, core's plain enums and records described as
//! remote types, and a record of our own wherever core's shape cannot
//! cross (tuples, maps, a `Result` field, enums that carry data).

use karmyq_core as core;
use karmyq_core::{
    CandidateScore, CommunitySummary, ConversationView, MatchState, MatchSummary, MemberView, Norm,
    OfferSummary, Profile, QuietHours, RequestQuery, RequestSummary, RequestTtlDays, Settings,
    SettingsPatch, Suggestion, TrustScore,
};
use karmyq_core::{
    Category, CommunityId, ConversationId, MatchStatus, MemberId, MessageId, OfferId, OfferStatus,
    ProposalId, ReportCategory, ReportId, RequestId, RequestKind, RequestSort, RequestStatus,
    Resolution, Role, Timestamp, Urgency, Visibility,
};

use crate::error::ApiError;

/// A failed lift of an argument becomes a typed `invalid_id` error in the
/// foreign language (uniffi downcasts it to the call's error type).
fn bad_id(what: &str) -> uniffi::deps::anyhow::Error {
    ApiError::invalid("invalid_id", format!("not a {what} id")).into()
}

// Times cross as milliseconds since the Unix epoch.
uniffi::custom_type!(Timestamp, i64, {
    remote,
    lower: |t| t.as_millis(),
    try_lift: |ms| Ok(Timestamp::from_millis(ms)),
});

// Member and community ids cross as their 64-character hex.
uniffi::custom_type!(MemberId, String, {
    remote,
    lower: |id| id.to_string(),
    try_lift: |s| MemberId::from_hex(&s).map_err(|_| bad_id("member")),
});

uniffi::custom_type!(CommunityId, String, {
    remote,
    lower: |id| id.to_string(),
    try_lift: |s| CommunityId::from_hex(&s).map_err(|_| bad_id("community")),
});

// Ids made by a member cross as `<member hex>.<nonce hex>`.
macro_rules! authored_ids {
    ($($name:ident: $what:literal),+ $(,)?) => {
        $(
            uniffi::custom_type!($name, String, {
                remote,
                lower: |id| id.to_string(),
                try_lift: |s| $name::parse(&s).ok_or_else(|| bad_id($what)),
            });
        )+
    };
}

authored_ids!(
    RequestId: "request",
    OfferId: "offer",
    ProposalId: "proposal",
    ReportId: "report",
    MessageId: "message",
    ConversationId: "conversation",
);

#[uniffi::remote(Enum)]
pub enum Visibility {
    Public,
    Private,
}

#[uniffi::remote(Enum)]
pub enum Role {
    Member,
    Moderator,
    Admin,
}

#[uniffi::remote(Enum)]
pub enum Category {
    Errands,
    Rides,
    Food,
    Household,
    Childcare,
    Eldercare,
    Pets,
    Tech,
    Tutoring,
    Moving,
    Health,
    Other,
}

#[uniffi::remote(Enum)]
pub enum Urgency {
    Low,
    Medium,
    High,
    Critical,
}

#[uniffi::remote(Enum)]
pub enum RequestKind {
    Generic,
    Ride,
    Borrow,
    Service,
    Event,
}

#[uniffi::remote(Enum)]
pub enum RequestStatus {
    Open,
    Matched,
    Completed,
    Cancelled,
    Expired,
}

#[uniffi::remote(Enum)]
pub enum OfferStatus {
    Pending,
    Accepted,
    Declined,
    Withdrawn,
    Superseded,
    Lapsed,
}

#[uniffi::remote(Enum)]
pub enum MatchStatus {
    Active,
    Completed,
    Unconfirmed,
}

#[uniffi::remote(Enum)]
pub enum RequestSort {
    Newest,
    Urgency,
}

#[uniffi::remote(Enum)]
pub enum ReportCategory {
    Spam,
    Abuse,
    Safety,
    Inappropriate,
    Other,
}

#[uniffi::remote(Enum)]
pub enum Resolution {
    Upheld,
    Dismissed,
}

/// A badge (DOMAIN.md, Badges).
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum Badge {
    /// First completed help.
    FirstHelper,
    /// 10 helps.
    Helper10,
    /// 50 helps.
    Helper50,
    /// 100 helps.
    Helper100,
    /// Helped 10 different members.
    Connector,
    /// Helped in 3 communities.
    BridgeBuilder,
    /// Helped in 6 different months.
    SteadyHand,
}

impl Badge {
    /// Core's badge, if it is one the bindings know.
    pub(crate) fn of(b: core::Badge) -> Option<Self> {
        Some(match b {
            core::Badge::FirstHelper => Badge::FirstHelper,
            core::Badge::Helper10 => Badge::Helper10,
            core::Badge::Helper50 => Badge::Helper50,
            core::Badge::Helper100 => Badge::Helper100,
            core::Badge::Connector => Badge::Connector,
            core::Badge::BridgeBuilder => Badge::BridgeBuilder,
            core::Badge::SteadyHand => Badge::SteadyHand,
            _ => return None,
        })
    }
}

#[uniffi::remote(Record)]
pub struct Profile {
    pub name: String,
    pub bio: String,
    pub location: Option<String>,
    pub availability: String,
    pub skills: Vec<String>,
}

#[uniffi::remote(Record)]
pub struct RequestTtlDays {
    pub critical: u16,
    pub high: u16,
    pub medium: u16,
    pub low: u16,
}

#[uniffi::remote(Record)]
pub struct Settings {
    pub member_limit: u32,
    pub request_ttl_days: core::RequestTtlDays,
    pub karma_helper: u32,
    pub karma_requester: u32,
    pub message_retention_days: u16,
    pub notification_retention_days: u16,
}

#[uniffi::remote(Record)]
pub struct SettingsPatch {
    pub name: Option<String>,
    pub visibility: Option<Visibility>,
    pub settings: Option<core::Settings>,
}

#[uniffi::remote(Record)]
pub struct CommunitySummary {
    pub id: CommunityId,
    pub name: String,
}

#[uniffi::remote(Record)]
pub struct Norm {
    pub id: String,
    pub title: String,
    pub description: String,
    pub category: String,
}

#[uniffi::remote(Record)]
pub struct MemberView {
    pub id: MemberId,
    pub role: Role,
    pub admitted_at: Timestamp,
    pub profile: Option<core::Profile>,
}

#[uniffi::remote(Record)]
pub struct RequestSummary {
    pub id: RequestId,
    pub title: String,
    pub category: Category,
    pub urgency: Urgency,
    pub kind: RequestKind,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub status: RequestStatus,
}

#[uniffi::remote(Record)]
pub struct OfferSummary {
    pub offer: OfferId,
    pub request: RequestId,
    pub title: String,
    pub message: String,
    pub created_at: Timestamp,
    pub status: OfferStatus,
}

#[uniffi::remote(Record)]
pub struct MatchSummary {
    pub request: RequestId,
    pub title: String,
    pub offer: OfferId,
    pub accepted_at: Timestamp,
    pub requester_confirmed_at: Option<Timestamp>,
    pub responder_confirmed_at: Option<Timestamp>,
    pub completed_at: Option<Timestamp>,
    pub status: MatchStatus,
    pub invalidated: bool,
}

#[uniffi::remote(Record)]
pub struct MatchState {
    pub request: RequestId,
    pub offer: OfferId,
    pub requester: MemberId,
    pub responder: MemberId,
    pub accepted_at: Timestamp,
    pub requester_confirmed_at: Option<Timestamp>,
    pub responder_confirmed_at: Option<Timestamp>,
    pub completed_at: Option<Timestamp>,
    pub invalidated: bool,
    pub status: MatchStatus,
}

#[uniffi::remote(Record)]
pub struct RequestQuery {
    pub status: Option<RequestStatus>,
    pub category: Option<Category>,
    pub urgency: Option<Urgency>,
    pub requester: Option<MemberId>,
    pub sort: RequestSort,
    pub limit: u32,
    pub offset: u32,
}

#[uniffi::remote(Record)]
pub struct CandidateScore {
    pub skill: f64,
    pub proximity: f64,
    pub availability: f64,
    pub urgency: f64,
    pub total: f64,
}

#[uniffi::remote(Record)]
pub struct Suggestion {
    pub member: MemberId,
    pub score: core::CandidateScore,
    pub trust: u8,
}

#[uniffi::remote(Record)]
pub struct TrustScore {
    pub score: u8,
    pub volume: f64,
    pub breadth: f64,
    pub depth: f64,
    pub tenure: f64,
    pub penalty: f64,
}

#[uniffi::remote(Record)]
pub struct QuietHours {
    pub start_minute: u16,
    pub end_minute: u16,
}

#[uniffi::remote(Record)]
pub struct ConversationView {
    pub id: ConversationId,
    pub other: MemberId,
    pub request: Option<RequestId>,
    pub created_at: Timestamp,
    pub last_activity: Timestamp,
    pub unread: u32,
    pub my_read_mark: Option<MessageId>,
    pub their_read_mark: Option<MessageId>,
}

/// A community as this device holds it.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct CommunityInfo {
    /// Its id.
    pub id: CommunityId,
    /// Its name.
    pub name: String,
    /// Its description.
    pub description: String,
    /// Public or private.
    pub visibility: Visibility,
    /// Its settings.
    pub settings: core::Settings,
    /// Current members.
    pub member_count: u32,
    /// This device's member's role, if a member.
    pub my_role: Option<Role>,
}

/// What a member asks for (DOMAIN.md, Help requests).
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct RequestDraft {
    /// Short title.
    pub title: String,
    /// Details.
    pub description: String,
    /// Category.
    pub category: Category,
    /// Urgency (sets the expiry).
    pub urgency: Urgency,
    /// Kind.
    pub kind: RequestKind,
    /// Where, as a geohash, if given.
    pub location: Option<String>,
    /// When it is needed: from.
    pub when_from: Option<Timestamp>,
    /// When it is needed: until.
    pub when_until: Option<Timestamp>,
}

impl TryFrom<RequestDraft> for core::RequestDraft {
    type Error = ApiError;

    fn try_from(d: RequestDraft) -> Result<Self, ApiError> {
        let when = match (d.when_from, d.when_until) {
            (Some(from), Some(until)) => Some((from, until)),
            (None, None) => None,
            _ => {
                return Err(ApiError::invalid(
                    "invalid_argument",
                    "when_from and when_until go together",
                ));
            }
        };
        Ok(core::RequestDraft {
            title: d.title,
            description: d.description,
            category: d.category,
            urgency: d.urgency,
            kind: d.kind,
            location: d.location,
            when,
        })
    }
}

impl From<core::RequestDraft> for RequestDraft {
    fn from(d: core::RequestDraft) -> Self {
        RequestDraft {
            title: d.title,
            description: d.description,
            category: d.category,
            urgency: d.urgency,
            kind: d.kind,
            location: d.location,
            when_from: d.when.map(|w| w.0),
            when_until: d.when.map(|w| w.1),
        }
    }
}

/// One offer on a request, with its status now.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct OfferView {
    /// Its id (the responder is the id's author).
    pub id: OfferId,
    /// Who offered.
    pub responder: MemberId,
    /// The responder's message.
    pub message: String,
    /// When it was made.
    pub created_at: Timestamp,
    /// Where it stands.
    pub status: OfferStatus,
}

/// A request with its offers and match, as of now.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct RequestView {
    /// Its id (the requester is the id's author).
    pub id: RequestId,
    /// Who asked.
    pub requester: MemberId,
    /// What was asked.
    pub draft: RequestDraft,
    /// Where it stands.
    pub status: RequestStatus,
    /// When it was posted.
    pub created_at: Timestamp,
    /// When it expires.
    pub expires_at: Timestamp,
    /// Why it was cancelled, if it was.
    pub cancel_reason: Option<String>,
    /// Why a moderator hid it, if hidden.
    pub hidden: Option<String>,
    /// The communities it was posted to.
    pub posted_to: Vec<CommunityId>,
    /// Its offers, oldest first.
    pub offers: Vec<OfferView>,
    /// The accepted offer's match, if any.
    pub active_match: Option<core::MatchState>,
}

impl From<core::RequestView> for RequestView {
    fn from(v: core::RequestView) -> Self {
        let r = v.request;
        RequestView {
            id: r.id,
            requester: r.id.requester,
            draft: r.draft.into(),
            status: v.status,
            created_at: r.created_at,
            expires_at: r.expires_at,
            cancel_reason: r.cancel_reason,
            hidden: r.hidden,
            posted_to: r.posted_to,
            offers: v
                .offers
                .into_iter()
                .map(|(o, status)| OfferView {
                    id: o.id,
                    responder: o.id.responder,
                    message: o.message,
                    created_at: o.created_at,
                    status,
                })
                .collect(),
            active_match: v.active_match,
        }
    }
}

/// A norm proposal and how far it is from adoption.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ProposalView {
    /// Its id (the proposer is the id's author).
    pub id: ProposalId,
    /// Its title.
    pub title: String,
    /// Approvals so far.
    pub approvals: u32,
    /// Approvals needed.
    pub needed: u32,
    /// Whether it is adopted.
    pub active: bool,
}

impl From<core::ProposalView> for ProposalView {
    fn from(p: core::ProposalView) -> Self {
        ProposalView {
            id: p.id,
            title: p.title,
            approvals: count(p.approvals),
            needed: count(p.needed),
            active: p.active,
        }
    }
}

/// What a feed entry shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum FeedKind {
    /// An open request.
    Request,
    /// A recently completed one.
    Completion,
}

/// A ranked feed entry.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct FeedEntry {
    /// The request.
    pub request: RequestId,
    /// Its community.
    pub community: CommunityId,
    /// What it shows.
    pub kind: FeedKind,
    /// Its score (higher first).
    pub score: f64,
    /// When the request was posted.
    pub created_at: Timestamp,
}

impl From<core::RankedItem> for FeedEntry {
    fn from(i: core::RankedItem) -> Self {
        FeedEntry {
            request: i.id,
            community: i.community,
            kind: match i.kind {
                core::FeedKind::Completion => FeedKind::Completion,
                _ => FeedKind::Request,
            },
            score: i.score,
            created_at: i.created_at,
        }
    }
}

/// Why karma was earned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum KarmaReason {
    /// Base points for helping.
    Help,
    /// Base points for being helped.
    Helped,
    /// First help in the community.
    FirstHelp,
    /// The n-th help.
    Milestone {
        /// Which.
        n: u32,
    },
}

/// One award in a member's karma history.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct KarmaEntry {
    /// Where.
    pub community: CommunityId,
    /// When.
    pub at: Timestamp,
    /// Points when awarded.
    pub points: f64,
    /// Points now, after decay.
    pub value_now: f64,
    /// Why.
    pub reason: KarmaReason,
}

impl KarmaEntry {
    /// Core's entry, if its reason is one the bindings know.
    pub(crate) fn of(h: core::KarmaHistoryEntry) -> Option<Self> {
        Some(KarmaEntry {
            community: h.event.community,
            at: h.event.at,
            points: h.event.points,
            value_now: h.value_now,
            reason: match h.event.reason {
                core::KarmaReason::Help => KarmaReason::Help,
                core::KarmaReason::Helped => KarmaReason::Helped,
                core::KarmaReason::FirstHelp => KarmaReason::FirstHelp,
                core::KarmaReason::Milestone(n) => KarmaReason::Milestone { n },
                _ => return None,
            },
        })
    }
}

/// One message, decrypted.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct MessageView {
    /// Its id (the sender is the id's author).
    pub id: MessageId,
    /// Who sent it.
    pub sender: MemberId,
    /// When the sender says it was sent.
    pub sent_at: Timestamp,
    /// The text, unless it could not be opened.
    pub body: Option<String>,
    /// Why the body could not be opened, if it could not.
    pub unreadable: Option<String>,
    /// Whether the other participant read it.
    pub read_by_other: bool,
}

impl From<core::MessageView> for MessageView {
    fn from(m: core::MessageView) -> Self {
        let (body, unreadable) = match m.body {
            Ok(text) => (Some(text), None),
            Err(e) => (None, Some(e.to_string())),
        };
        MessageView {
            id: m.id,
            sender: m.sender,
            sent_at: m.sent_at,
            body,
            unreadable,
            read_by_other: m.read_by_other,
        }
    }
}

/// What a report is about.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum ReportTarget {
    /// A request.
    Request {
        /// Which.
        request: RequestId,
    },
    /// An offer on a request.
    Offer {
        /// The request.
        request: RequestId,
        /// The offer.
        offer: OfferId,
    },
    /// A member.
    Member {
        /// Who.
        member: MemberId,
    },
    /// A message.
    Message {
        /// The conversation.
        conversation: ConversationId,
        /// The message.
        message: MessageId,
    },
}

impl From<ReportTarget> for core::ReportTarget {
    fn from(t: ReportTarget) -> Self {
        match t {
            ReportTarget::Request { request } => core::ReportTarget::Request(request),
            ReportTarget::Offer { request, offer } => core::ReportTarget::Offer(request, offer),
            ReportTarget::Member { member } => core::ReportTarget::Member(member),
            ReportTarget::Message {
                conversation,
                message,
            } => core::ReportTarget::Message(conversation, message),
        }
    }
}

impl From<core::ReportTarget> for ReportTarget {
    fn from(t: core::ReportTarget) -> Self {
        match t {
            core::ReportTarget::Request(request) => ReportTarget::Request { request },
            core::ReportTarget::Offer(request, offer) => ReportTarget::Offer { request, offer },
            core::ReportTarget::Member(member) => ReportTarget::Member { member },
            core::ReportTarget::Message(conversation, message) => ReportTarget::Message {
                conversation,
                message,
            },
        }
    }
}

/// A report, as its reporter or a moderator sees it.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ReportView {
    /// Its id (the reporter is the id's author).
    pub id: ReportId,
    /// What it is about.
    pub target: ReportTarget,
    /// Why.
    pub category: ReportCategory,
    /// The reporter's words.
    pub text: String,
    /// When it was filed.
    pub created_at: Timestamp,
    /// The decision, if made.
    pub resolution: Option<Resolution>,
    /// When it was decided.
    pub resolved_at: Option<Timestamp>,
}

impl From<core::ReportState> for ReportView {
    fn from(r: core::ReportState) -> Self {
        ReportView {
            id: r.id,
            target: r.target.into(),
            category: r.category,
            text: r.text,
            created_at: r.created_at,
            resolution: r.resolution.map(|x| x.0),
            resolved_at: r.resolution.map(|x| x.1),
        }
    }
}

/// A change another device made that this one refused, and why.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct RejectedChange {
    /// The rule's stable code.
    pub code: String,
    /// The reason, in words.
    pub message: String,
}

/// What receiving a bundle did.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ReceiveReport {
    /// The community it was for.
    pub community: CommunityId,
    /// Ops and changes stored.
    pub accepted: u32,
    /// Those refused.
    pub rejected: Vec<RejectedChange>,
    /// Those waiting for something they depend on.
    pub pending: u32,
    /// Those already held.
    pub duplicates: u32,
}

/// A saturating conversion for counts: no list here reaches 4 billion.
pub(crate) fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}
