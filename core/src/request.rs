//! Help requests: one Automerge document per request (`request/<id>`),
//! holding the request, its offers and its match.
//!
//! Layout of the document's root map:
//! - fields the requester writes: `title`, `description`, `category`,
//!   `urgency`, `kind`, `location`, `when_start`, `when_end`, `created_at`,
//!   `expires_at`, `renewals`, `cancelled_at`, `cancel_reason`, `accepted`
//!   (an offer id), `accepted_at`, and per offer `declined:<offer>`,
//!   `match_cancel:<offer>` (a reason), `confirmed:<offer>` (a time) and
//!   `note:<offer>` (a thank-you note);
//! - `hidden` (a reason) and `invalidated:<offer>` (a reason: a moderator
//!   voids a completed match; deleting the key restores it), written by
//!   moderators;
//! - `offer:<offer>`: a map created by the responder, who alone writes its
//!   fields `message`, `created_at`, `withdrawn_at`, `confirmed_at`, `note`,
//!   `cancelled_at`, `cancel_reason`.
//!
//! Cross-posting: a request posted to several of the requester's
//! communities is one document per community, all with the same id. The
//! requester writes `posted_to` (the communities, at creation) and, with
//! `accepted`, `shares` (the communities the match is made in, whose
//! copies split the karma pool). In the other copies of `shares` the
//! requester mirrors the acceptance with `accepted_in` (the community where
//! the offer was made), and the responder creates `offer:<offer>` there
//! to confirm or cancel: each copy pays its share only when both parties
//! confirmed in it.
//!
//! Request and offer ids name their author, so the validator knows who may
//! write what from the change alone; whether a transition is legal is judged
//! on the document as the change's author saw it (its dependencies), and
//! statuses are derived from the merged document and `now`.

use std::collections::{BTreeMap, BTreeSet};

pub(crate) mod replay;

use automerge::legacy::{Key, ObjectId, OpType};
use automerge::{ActorId, Automerge, ChangeHash, ObjId as ExId, ROOT, ScalarValueRef, ValueRef};

use crate::authority::{CommunityId, Role};
use crate::docs::{map_entries, valid_geohash};
use crate::error::{Error, Rejection, Result};
use crate::identity::MemberId;
use crate::time::Timestamp;

/// Most renewals of one request.
pub const MAX_RENEWALS: i64 = 3;
/// A match with one confirmation only for this long is `unconfirmed`.
pub const UNCONFIRMED_AFTER_MS: i64 = 14 * Timestamp::DAY;

macro_rules! authored_id {
    ($(#[$doc:meta])* $name:ident, $author:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name {
            /// Who made it.
            pub $author: $crate::identity::MemberId,
            /// Random bytes that tell their ids apart.
            pub nonce: [u8; 8],
        }

        impl $name {
            /// A fresh id for `author`.
            pub fn generate($author: $crate::identity::MemberId) -> $crate::error::Result<Self> {
                let mut nonce = [0u8; 8];
                getrandom::getrandom(&mut nonce).map_err(|_| $crate::error::Error::Randomness)?;
                Ok($name { $author, nonce })
            }

            /// Parses `<member hex>.<nonce hex>`.
            pub fn parse(s: &str) -> Option<Self> {
                let (who, nonce) = s.split_once('.')?;
                let mut n = [0u8; 8];
                hex::decode_to_slice(nonce, &mut n).ok()?;
                let who = $crate::identity::MemberId::from_bytes($crate::identity::decode_hex32(who).ok()?).ok()?;
                Some($name { $author: who, nonce: n })
            }

            /// [`Self::parse`] for an id this device stored after
            /// validating it (a projection row, a validated document):
            /// skips the curve-point check of the author's key.
            pub(crate) fn parse_stored(s: &str) -> Option<Self> {
                let (who, nonce) = s.split_once('.')?;
                let mut n = [0u8; 8];
                hex::decode_to_slice(nonce, &mut n).ok()?;
                let who = $crate::identity::MemberId::from_stored($crate::identity::decode_hex32(who).ok()?);
                Some($name { $author: who, nonce: n })
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                write!(f, "{}.{}", self.$author, hex::encode(self.nonce))
            }
        }

        impl ::std::fmt::Debug for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                write!(f, "{}({}.{})", stringify!($name), self.$author.fmt_short(), hex::encode(self.nonce))
            }
        }
    };
}

pub(crate) use authored_id;

authored_id!(
    /// A help request: its requester and a nonce. A cross-posted request
    /// keeps the same id in every community.
    RequestId,
    requester
);
authored_id!(
    /// An offer on a request: its responder and a nonce.
    OfferId,
    responder
);

macro_rules! named_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            /// Every value, in order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stable lowercase name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            /// Parses the lowercase name.
            pub fn parse(s: &str) -> Option<Self> {
                match s {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }
    };
}

pub(crate) use named_enum;

named_enum!(
    /// What kind of help.
    Category {
        /// Errands.
        Errands = "errands",
        /// Rides.
        Rides = "rides",
        /// Food.
        Food = "food",
        /// Household.
        Household = "household",
        /// Childcare.
        Childcare = "childcare",
        /// Eldercare.
        Eldercare = "eldercare",
        /// Pets.
        Pets = "pets",
        /// Tech.
        Tech = "tech",
        /// Tutoring.
        Tutoring = "tutoring",
        /// Moving.
        Moving = "moving",
        /// Health.
        Health = "health",
        /// Anything else.
        Other = "other",
    }
);

named_enum!(
    /// How soon; ordered `Low < Medium < High < Critical`.
    Urgency {
        /// Low.
        Low = "low",
        /// Medium.
        Medium = "medium",
        /// High.
        High = "high",
        /// Critical.
        Critical = "critical",
    }
);

named_enum!(
    /// The shape of the help.
    RequestKind {
        /// Anything.
        Generic = "generic",
        /// A ride.
        Ride = "ride",
        /// Borrowing a thing.
        Borrow = "borrow",
        /// A service.
        Service = "service",
        /// An event.
        Event = "event",
    }
);

named_enum!(
    /// A request's status, derived from its document and `now`.
    RequestStatus {
        /// Taking offers.
        Open = "open",
        /// An offer was accepted.
        Matched = "matched",
        /// Both sides confirmed the help.
        Completed = "completed",
        /// The requester cancelled it.
        Cancelled = "cancelled",
        /// Its time ran out (renewable).
        Expired = "expired",
    }
);

named_enum!(
    /// An offer's status, derived.
    OfferStatus {
        /// Waiting for the requester.
        Pending = "pending",
        /// Accepted: the match.
        Accepted = "accepted",
        /// Declined by the requester, or its match was cancelled.
        Declined = "declined",
        /// Withdrawn by the responder.
        Withdrawn = "withdrawn",
        /// Another offer was accepted.
        Superseded = "superseded",
        /// The request was cancelled or expired.
        Lapsed = "lapsed",
    }
);

named_enum!(
    /// A match's status, derived.
    MatchStatus {
        /// Waiting for confirmations.
        Active = "active",
        /// Both confirmed (within 14 days of each other).
        Completed = "completed",
        /// One confirmation only, for 14 days: earns no karma.
        Unconfirmed = "unconfirmed",
    }
);

impl crate::authority::RequestTtlDays {
    /// How long a request of this urgency lives, in milliseconds.
    pub fn for_urgency(&self, urgency: Urgency) -> i64 {
        let days = match urgency {
            Urgency::Critical => self.critical,
            Urgency::High => self.high,
            Urgency::Medium => self.medium,
            Urgency::Low => self.low,
        };
        i64::from(days) * Timestamp::DAY
    }
}

impl Urgency {
    /// From its position in [`Urgency::ALL`], as projections store it.
    pub fn from_index(i: i64) -> Option<Urgency> {
        usize::try_from(i)
            .ok()
            .and_then(|i| Urgency::ALL.get(i).copied())
    }
}

/// What a requester writes when posting or editing a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestDraft {
    /// 1–120 characters.
    pub title: String,
    /// At most 4,000 characters.
    pub description: String,
    /// What kind of help.
    pub category: Category,
    /// How soon.
    pub urgency: Urgency,
    /// Its shape.
    pub kind: RequestKind,
    /// Coarse location: a geohash of at most 5 characters.
    pub location: Option<String>,
    /// When the help is wanted.
    pub when: Option<(Timestamp, Timestamp)>,
}

impl RequestDraft {
    /// Checks every field, naming the first bad one.
    pub fn validate(&self) -> Result<()> {
        let bad = |f: &str| Err(Error::InvalidArgument(format!("request {f}")));
        if !valid_title(&self.title) {
            return bad("title");
        }
        if !valid_description(&self.description) {
            return bad("description");
        }
        if self.location.as_deref().is_some_and(|l| !valid_geohash(l)) {
            return bad("location");
        }
        if self.when.is_some_and(|(a, b)| b < a) {
            return bad("time window");
        }
        Ok(())
    }
}

fn valid_title(s: &str) -> bool {
    (1..=120).contains(&s.chars().count()) && !s.chars().any(char::is_control)
}

fn valid_description(s: &str) -> bool {
    s.chars().count() <= crate::docs::MAX_TEXT
}

fn valid_short(s: &str) -> bool {
    s.chars().count() <= 500
}

/// Most communities one request is posted to (and so most shares of its pool).
pub const MAX_POSTED_TO: usize = 3;

/// One offer as its document holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferState {
    /// The offer.
    pub id: OfferId,
    /// The object holding it (created by the responder); `None` for an
    /// offer accepted in another community whose responder has not written
    /// here yet.
    obj: Option<(u64, ActorId)>,
    /// What the responder said.
    pub message: String,
    /// When it was made.
    pub created_at: Timestamp,
    /// When the responder withdrew it.
    pub withdrawn_at: Option<Timestamp>,
    /// When the responder confirmed the help.
    pub confirmed_at: Option<Timestamp>,
    /// The responder's thank-you note.
    pub note: Option<String>,
    /// When the responder cancelled the match.
    pub cancelled_at: Option<Timestamp>,
    /// Why.
    pub cancel_reason: Option<String>,
}

/// A request's document, read at some heads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestState {
    /// The request.
    pub id: RequestId,
    /// What the requester wrote (unknown category: `Other`; unknown
    /// urgency: `Medium`; unknown kind: `Generic`).
    pub draft: RequestDraft,
    /// When posted.
    pub created_at: Timestamp,
    /// When it expires unless renewed.
    pub expires_at: Timestamp,
    /// Renewals so far.
    pub renewals: i64,
    /// When the requester cancelled it.
    pub cancelled_at: Option<Timestamp>,
    /// Why.
    pub cancel_reason: Option<String>,
    /// The accepted offer and when.
    pub accepted: Option<(OfferId, Timestamp)>,
    /// When the requester confirmed each match.
    pub requester_confirmed: BTreeMap<OfferId, Timestamp>,
    /// The requester's thank-you note to each helper.
    pub requester_notes: BTreeMap<OfferId, String>,
    /// Offers the requester declined.
    pub declined: BTreeSet<OfferId>,
    /// Matches the requester cancelled, with the reason.
    pub match_cancelled: BTreeMap<OfferId, String>,
    /// Set by a moderator: the reason it is hidden.
    pub hidden: Option<String>,
    /// Completed matches a moderator invalidated, with the reason.
    pub invalidated: BTreeMap<OfferId, String>,
    /// Every offer.
    pub offers: BTreeMap<OfferId, OfferState>,
    /// The communities a cross-posted request is posted to (empty: only this one).
    pub posted_to: Vec<CommunityId>,
    /// The communities the accepted offer's match is made in, which split
    /// its karma pool (empty: only this one).
    pub shares: Vec<CommunityId>,
    /// Where the accepted offer was made, if in another community.
    pub accepted_in: Option<CommunityId>,
}

/// A match as derived from a request's document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchState {
    /// The request.
    pub request: RequestId,
    /// The accepted offer.
    pub offer: OfferId,
    /// Who asked.
    pub requester: MemberId,
    /// Who helps.
    pub responder: MemberId,
    /// When the offer was accepted.
    pub accepted_at: Timestamp,
    /// Requester's confirmation.
    pub requester_confirmed_at: Option<Timestamp>,
    /// Responder's confirmation.
    pub responder_confirmed_at: Option<Timestamp>,
    /// When it completed (the second confirmation), if it did.
    pub completed_at: Option<Timestamp>,
    /// A moderator invalidated it: it earns nothing and counts as a
    /// penalty for both parties' trust.
    pub invalidated: bool,
    /// Active, completed or unconfirmed.
    pub status: MatchStatus,
}

fn ms(v: &ValueRef<'_>) -> Option<Timestamp> {
    match v {
        ValueRef::Scalar(ScalarValueRef::Int(i) | ScalarValueRef::Timestamp(i)) => {
            Some(Timestamp::from_millis(*i))
        }
        _ => None,
    }
}

fn text(v: &ValueRef<'_>) -> Option<String> {
    match v {
        ValueRef::Scalar(ScalarValueRef::Str(s)) => Some(s.to_string()),
        _ => None,
    }
}

/// A request's state as its root map's entries are read, in any order.
struct Reading {
    s: RequestState,
    created: bool,
    accepted: Option<OfferId>,
    accepted_at: Option<Timestamp>,
    when_start: Option<Timestamp>,
    when_end: Option<Timestamp>,
}

impl Reading {
    fn new(id: RequestId) -> Self {
        Reading {
            s: RequestState {
                id,
                draft: RequestDraft {
                    title: String::new(),
                    description: String::new(),
                    category: Category::Other,
                    urgency: Urgency::Medium,
                    kind: RequestKind::Generic,
                    location: None,
                    when: None,
                },
                created_at: Timestamp::default(),
                expires_at: Timestamp::default(),
                renewals: 0,
                cancelled_at: None,
                cancel_reason: None,
                accepted: None,
                requester_confirmed: BTreeMap::new(),
                requester_notes: BTreeMap::new(),
                declined: BTreeSet::new(),
                match_cancelled: BTreeMap::new(),
                hidden: None,
                invalidated: BTreeMap::new(),
                offers: BTreeMap::new(),
                posted_to: Vec::new(),
                shares: Vec::new(),
                accepted_in: None,
            },
            created: false,
            accepted: None,
            accepted_at: None,
            when_start: None,
            when_end: None,
        }
    }

    /// Takes the root entry `key`; for an offer's entry, returns the offer,
    /// whose fields the caller reads from the entry's object and adds
    /// ([`Reading::offer`]).
    fn root(&mut self, key: &str, v: &ValueRef<'_>) -> Option<OfferId> {
        let s = &mut self.s;
        match key {
            "title" => s.draft.title = text(v).unwrap_or_default(),
            "description" => s.draft.description = text(v).unwrap_or_default(),
            "category" => {
                s.draft.category = text(v)
                    .and_then(|t| Category::parse(&t))
                    .unwrap_or(Category::Other)
            }
            "urgency" => {
                s.draft.urgency = text(v)
                    .and_then(|t| Urgency::parse(&t))
                    .unwrap_or(Urgency::Medium)
            }
            "kind" => {
                s.draft.kind = text(v)
                    .and_then(|t| RequestKind::parse(&t))
                    .unwrap_or(RequestKind::Generic)
            }
            "location" => s.draft.location = text(v),
            "when_start" => self.when_start = ms(v),
            "when_end" => self.when_end = ms(v),
            "created_at" => {
                self.created = true;
                s.created_at = ms(v).unwrap_or_default();
            }
            "expires_at" => s.expires_at = ms(v).unwrap_or_default(),
            "renewals" => s.renewals = ms(v).map_or(0, Timestamp::as_millis),
            "cancelled_at" => s.cancelled_at = ms(v),
            "cancel_reason" => s.cancel_reason = text(v),
            "accepted" => self.accepted = text(v).and_then(|t| OfferId::parse_stored(&t)),
            "accepted_at" => self.accepted_at = ms(v),
            "hidden" => s.hidden = text(v),
            "posted_to" => s.posted_to = text(v).and_then(|t| communities(&t)).unwrap_or_default(),
            "shares" => s.shares = text(v).and_then(|t| communities(&t)).unwrap_or_default(),
            "accepted_in" => s.accepted_in = text(v).and_then(|t| t.parse().ok()),
            key => {
                if let Some(o) = key.strip_prefix(DECLINED).and_then(OfferId::parse_stored) {
                    s.declined.insert(o);
                } else if let Some(o) = key
                    .strip_prefix(MATCH_CANCEL)
                    .and_then(OfferId::parse_stored)
                {
                    s.match_cancelled.insert(o, text(v).unwrap_or_default());
                } else if let Some(o) = key.strip_prefix(CONFIRMED).and_then(OfferId::parse_stored)
                {
                    if let Some(t) = ms(v) {
                        s.requester_confirmed.insert(o, t);
                    }
                } else if let Some(o) = key
                    .strip_prefix(INVALIDATED)
                    .and_then(OfferId::parse_stored)
                {
                    s.invalidated.insert(o, text(v).unwrap_or_default());
                } else if let Some(o) = key.strip_prefix(NOTE).and_then(OfferId::parse_stored) {
                    s.requester_notes.insert(o, text(v).unwrap_or_default());
                } else if let Some(o) = key.strip_prefix(OFFER).and_then(OfferId::parse_stored) {
                    return Some(o);
                }
            }
        }
        None
    }

    /// Adds offer `id`, held in the object made by op `obj`, with the
    /// `fields` of that object.
    fn offer<'f, 'v: 'f>(
        &mut self,
        id: OfferId,
        obj: (u64, ActorId),
        fields: impl IntoIterator<Item = (&'f str, &'f ValueRef<'v>)>,
    ) {
        let mut o = OfferState {
            id,
            obj: Some(obj),
            message: String::new(),
            created_at: Timestamp::default(),
            withdrawn_at: None,
            confirmed_at: None,
            note: None,
            cancelled_at: None,
            cancel_reason: None,
        };
        for (key, v) in fields {
            match key {
                "message" => o.message = text(v).unwrap_or_default(),
                "created_at" => o.created_at = ms(v).unwrap_or_default(),
                "withdrawn_at" => o.withdrawn_at = ms(v),
                "confirmed_at" => o.confirmed_at = ms(v),
                "note" => o.note = text(v),
                "cancelled_at" => o.cancelled_at = ms(v),
                "cancel_reason" => o.cancel_reason = text(v),
                _ => {}
            }
        }
        self.s.offers.insert(id, o);
    }

    /// The state read; `None` if the request was not created.
    fn finish(self) -> Option<RequestState> {
        let mut s = self.s;
        s.accepted = self.accepted.zip(self.accepted_at);
        s.draft.when = self.when_start.zip(self.when_end);
        // An offer accepted in another community: its responder may not
        // have written here yet.
        if s.accepted_in.is_some()
            && let Some((offer, at)) = s.accepted
            && !s.offers.contains_key(&offer)
        {
            s.offers.insert(offer, OfferState::mirrored(offer, at));
        }
        self.created.then_some(s)
    }
}

impl RequestState {
    /// Reads the document at `heads` (its current state if `None`).
    /// `None` if the request was not created there.
    pub fn read(
        doc: &Automerge,
        id: RequestId,
        heads: Option<&[ChangeHash]>,
    ) -> Result<Option<Self>> {
        let mut reading = Reading::new(id);
        for item in map_entries(doc, &ROOT, heads) {
            if let Some(offer) = reading.root(&item.key, &item.value)
                && let ExId::Id(counter, actor, _) = item.id()
            {
                let fields = map_entries(doc, &item.id(), heads);
                let fields = fields.iter().map(|f| (f.key.as_ref(), &f.value));
                reading.offer(offer, (counter, actor), fields);
            }
        }
        Ok(reading.finish())
    }

    /// How many communities split the pool of this request's match (1..=3).
    pub fn share_count(&self) -> u8 {
        u8::try_from(self.shares.len().clamp(1, MAX_POSTED_TO)).unwrap_or(1)
    }

    /// The offer of the live match, if any: accepted, not declined, not
    /// cancelled by either side.
    pub fn active_offer(&self) -> Option<&OfferState> {
        let (id, _) = self.accepted?;
        let offer = self.offers.get(&id)?;
        let live = !self.declined.contains(&id)
            && !self.match_cancelled.contains_key(&id)
            && offer.cancelled_at.is_none()
            && offer.withdrawn_at.is_none();
        live.then_some(offer)
    }

    /// The live match, if any.
    pub fn active_match(&self, now: Timestamp) -> Option<MatchState> {
        let offer = self.active_offer()?;
        let (_, accepted_at) = self.accepted?;
        let (a, b) = (
            self.requester_confirmed.get(&offer.id).copied(),
            offer.confirmed_at,
        );
        let (status, completed_at) = MatchStatus::of_confirmations(a, b, now);
        Some(MatchState {
            request: self.id,
            offer: offer.id,
            requester: self.id.requester,
            responder: offer.id.responder,
            accepted_at,
            requester_confirmed_at: a,
            responder_confirmed_at: b,
            completed_at,
            status,
            invalidated: self.invalidated.contains_key(&offer.id),
        })
    }

    /// The status at `now`.
    pub fn status(&self, now: Timestamp) -> RequestStatus {
        if self.cancelled_at.is_some() {
            return RequestStatus::Cancelled;
        }
        match self.active_match(now).map(|m| m.status) {
            Some(MatchStatus::Completed) => RequestStatus::Completed,
            Some(_) => RequestStatus::Matched,
            None => RequestStatus::at(RequestStatus::Open, self.expires_at, now),
        }
    }

    /// An offer's status at `now`.
    pub fn offer_status(&self, offer: &OfferState, now: Timestamp) -> OfferStatus {
        let id = offer.id;
        if self.active_offer().is_some_and(|o| o.id == id) {
            return OfferStatus::Accepted;
        }
        if self.declined.contains(&id)
            || self.match_cancelled.contains_key(&id)
            || offer.cancelled_at.is_some()
        {
            return OfferStatus::Declined;
        }
        if offer.withdrawn_at.is_some() {
            return OfferStatus::Withdrawn;
        }
        OfferStatus::of_pending(self.status(now))
    }

    /// The responder's pending offer, if they have one.
    pub fn pending_offer_of(&self, responder: &MemberId, now: Timestamp) -> Option<&OfferState> {
        self.offers.values().find(|o| {
            o.id.responder == *responder && self.offer_status(o, now) == OfferStatus::Pending
        })
    }
}

impl MatchStatus {
    /// A match's status from the two confirmations (requester's,
    /// responder's) at `now`, and its completion time if completed: both
    /// confirmed within 14 days of each other completes it (at the
    /// second); one confirmation alone for 14 days, or two further apart,
    /// leaves it `unconfirmed`.
    pub fn of_confirmations(
        requester: Option<Timestamp>,
        responder: Option<Timestamp>,
        now: Timestamp,
    ) -> (MatchStatus, Option<Timestamp>) {
        match (requester, responder) {
            (Some(x), Some(y))
                if x.as_millis().abs_diff(y.as_millis()) <= UNCONFIRMED_AFTER_MS.unsigned_abs() =>
            {
                (MatchStatus::Completed, Some(x.max(y)))
            }
            (Some(_), Some(_)) => (MatchStatus::Unconfirmed, None),
            (Some(x), None) | (None, Some(x))
                if now.as_millis().saturating_sub(x.as_millis()) >= UNCONFIRMED_AFTER_MS =>
            {
                (MatchStatus::Unconfirmed, None)
            }
            _ => (MatchStatus::Active, None),
        }
    }
}

impl OfferStatus {
    /// What a pending offer (neither accepted, declined nor withdrawn)
    /// shows while its request has `request` status.
    pub fn of_pending(request: RequestStatus) -> OfferStatus {
        match request {
            RequestStatus::Matched | RequestStatus::Completed => OfferStatus::Superseded,
            RequestStatus::Cancelled | RequestStatus::Expired => OfferStatus::Lapsed,
            RequestStatus::Open => OfferStatus::Pending,
        }
    }
}

impl RequestStatus {
    /// The status at `now` of a request stored with the clock-free status
    /// `stored`: an open one past `expires_at` has expired.
    pub fn at(stored: RequestStatus, expires_at: Timestamp, now: Timestamp) -> RequestStatus {
        if stored == RequestStatus::Open && now >= expires_at {
            RequestStatus::Expired
        } else {
            stored
        }
    }
}

impl OfferState {
    /// An offer accepted in another community, as its copy here stands
    /// before the responder writes to it.
    fn mirrored(id: OfferId, accepted_at: Timestamp) -> Self {
        OfferState {
            id,
            obj: None,
            message: String::new(),
            created_at: accepted_at,
            withdrawn_at: None,
            confirmed_at: None,
            note: None,
            cancelled_at: None,
            cancel_reason: None,
        }
    }

    /// Whether the responder wrote this offer in this community's copy.
    pub fn is_here(&self) -> bool {
        self.obj.is_some()
    }
}

/// A list of 1..=3 distinct community ids, comma-separated.
pub(crate) fn communities(s: &str) -> Option<Vec<CommunityId>> {
    let list: Vec<CommunityId> = s
        .split(',')
        .map(|c| c.parse().ok())
        .collect::<Option<_>>()?;
    let distinct: BTreeSet<_> = list.iter().collect();
    (!list.is_empty() && list.len() <= MAX_POSTED_TO && distinct.len() == list.len())
        .then_some(list)
}

/// The stored form of a list of communities.
pub(crate) fn communities_text(list: &[CommunityId]) -> String {
    list.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Root key prefix of a declined offer.
pub(crate) const DECLINED: &str = "declined:";
/// Root key prefix of a match the requester cancelled.
pub(crate) const MATCH_CANCEL: &str = "match_cancel:";
/// Root key prefix of an offer's map.
pub(crate) const OFFER: &str = "offer:";
/// Root key prefix of the requester's confirmation of a match.
pub(crate) const CONFIRMED: &str = "confirmed:";
/// Root key prefix of the requester's thank-you note.
pub(crate) const NOTE: &str = "note:";
/// Root key prefix of a moderator's invalidation of a completed match.
pub(crate) const INVALIDATED: &str = "invalidated:";

/// Root fields only the requester writes at creation or while open.
const EDITABLE: &[&str] = &[
    "title",
    "description",
    "category",
    "urgency",
    "kind",
    "location",
    "when_start",
    "when_end",
];

/// What one change does to a request, gathered from its operations.
#[derive(Debug, Default)]
struct Touches<'a> {
    root: BTreeMap<&'a str, &'a OpType>,
    /// Offer maps created by this change, by offer id.
    new_offers: Vec<OfferId>,
    /// Fields written in offer objects made by earlier changes, by object.
    offer_fields: BTreeMap<(u64, &'a ActorId), BTreeSet<&'a str>>,
    /// Fields written in objects this change creates.
    new_offer_fields: BTreeSet<&'a str>,
}

fn int_of(op: &OpType) -> Option<i64> {
    match op {
        OpType::Put(automerge::ScalarValue::Int(i) | automerge::ScalarValue::Timestamp(i)) => {
            Some(*i)
        }
        _ => None,
    }
}

fn str_of(op: &OpType) -> Option<&str> {
    match op {
        OpType::Put(automerge::ScalarValue::Str(s)) => Some(s.as_str()),
        _ => None,
    }
}

/// The value a root field must hold, if the schema types it.
fn root_value_ok(key: &str, op: &OpType) -> bool {
    match key {
        "title" => str_of(op).is_some_and(valid_title),
        "description" => str_of(op).is_some_and(valid_description),
        "category" => str_of(op).and_then(Category::parse).is_some(),
        "urgency" => str_of(op).and_then(Urgency::parse).is_some(),
        "kind" => str_of(op).and_then(RequestKind::parse).is_some(),
        "location" => str_of(op).is_some_and(valid_geohash) || matches!(op, OpType::Delete),
        "when_start" | "when_end" => int_of(op).is_some() || matches!(op, OpType::Delete),
        "created_at" | "expires_at" | "renewals" | "cancelled_at" | "accepted_at" => {
            int_of(op).is_some()
        }
        "cancel_reason" => str_of(op).is_some_and(valid_short),
        "accepted" => str_of(op).and_then(OfferId::parse).is_some(),
        "posted_to" | "shares" => str_of(op).and_then(communities).is_some(),
        "accepted_in" => str_of(op).is_some_and(|c| c.parse::<CommunityId>().is_ok()),
        "hidden" => str_of(op).is_some_and(valid_short) || matches!(op, OpType::Delete),
        k if k.starts_with(DECLINED) => {
            matches!(op, OpType::Put(automerge::ScalarValue::Boolean(true))) && offer_key_ok(k)
        }
        k if k.starts_with(MATCH_CANCEL) || k.starts_with(NOTE) => {
            str_of(op).is_some_and(valid_short) && offer_key_ok(k)
        }
        k if k.starts_with(CONFIRMED) => int_of(op).is_some() && offer_key_ok(k),
        k if k.starts_with(INVALIDATED) => {
            (str_of(op).is_some_and(valid_short) || matches!(op, OpType::Delete)) && offer_key_ok(k)
        }
        _ => false,
    }
}

/// A per-offer root key names a well-formed offer id.
fn offer_key_ok(key: &str) -> bool {
    key.split_once(':')
        .and_then(|(_, o)| OfferId::parse(o))
        .is_some()
}

fn offer_value_ok(key: &str, op: &OpType) -> bool {
    match key {
        "message" | "cancel_reason" | "note" => str_of(op).is_some_and(valid_short),
        "created_at" | "withdrawn_at" | "confirmed_at" | "cancelled_at" => int_of(op).is_some(),
        _ => false,
    }
}

/// The offers a change creates (the objects it makes under `offer:<id>`
/// keys of a request document), read from its operations: what a sync
/// server needs to refuse an offer across a block. Empty if the bytes are
/// not a change.
pub fn offers_created(change_bytes: &[u8]) -> Vec<OfferId> {
    let Ok(change) = automerge::Change::from_bytes(change_bytes.to_vec()) else {
        return Vec::new();
    };
    change
        .decode()
        .operations
        .iter()
        .filter(|op| {
            matches!(op.obj, ObjectId::Root)
                && matches!(op.action, OpType::Make(automerge::ObjType::Map))
        })
        .filter_map(|op| match &op.key {
            Key::Map(k) => k.strip_prefix(OFFER).and_then(OfferId::parse),
            Key::Seq(_) => None,
        })
        .collect()
}

fn illegal(why: &'static str) -> Rejection {
    Rejection::IllegalTransition(why)
}

/// The validator's rules for a request document: who may write each key,
/// and which transitions are legal from the state the author saw.
///
/// `seen` is the request as of the change's dependencies (`None` before it
/// was created); `role` is the author's role where the change was made;
/// `time` is the change's own timestamp (the author's clock); `community`
/// is where the change was made.
pub(crate) fn check_change(
    community: &CommunityId,
    id: &RequestId,
    author: &MemberId,
    role: Role,
    change: &automerge::ExpandedChange,
    seen: Option<&RequestState>,
    time: Timestamp,
) -> std::result::Result<(), Rejection> {
    let own = crate::docs::actor_of(author);
    let start_op = change.start_op.get();
    let mut t = Touches::default();
    for op in &change.operations {
        let Key::Map(key) = &op.key else {
            return Err(Rejection::DisallowedOperation);
        };
        let key = key.as_str();
        match &op.obj {
            ObjectId::Root => {
                if let Some(offer) = key.strip_prefix(OFFER) {
                    let offer =
                        OfferId::parse(offer).ok_or_else(|| Rejection::InvalidField(key.into()))?;
                    if offer.responder != *author {
                        return Err(Rejection::NotResponder);
                    }
                    if !matches!(op.action, OpType::Make(automerge::ObjType::Map)) {
                        return Err(Rejection::DisallowedOperation);
                    }
                    t.new_offers.push(offer);
                    continue;
                }
                if !root_value_ok(key, &op.action) {
                    return Err(Rejection::InvalidField(key.into()));
                }
                if key == "hidden" || key.starts_with(INVALIDATED) {
                    if role < Role::Moderator {
                        return Err(Rejection::NotPermitted);
                    }
                } else if id.requester != *author {
                    return Err(Rejection::NotRequester);
                }
                t.root.insert(key, &op.action);
            }
            ObjectId::Id(obj) => {
                if *obj.actor() != own {
                    return Err(Rejection::NotResponder);
                }
                if !offer_value_ok(key, &op.action) {
                    return Err(Rejection::InvalidField(key.into()));
                }
                if obj.counter() >= start_op {
                    t.new_offer_fields.insert(key);
                } else {
                    t.offer_fields
                        .entry((obj.counter(), obj.actor()))
                        .or_default()
                        .insert(key);
                }
            }
        }
    }
    check_transitions(community, id, author, &t, seen, time)
}

/// The communities listed under a root key this change writes.
fn listed(t: &Touches<'_>, key: &str) -> Option<Vec<CommunityId>> {
    t.root
        .get(key)
        .and_then(|op| str_of(op))
        .and_then(communities)
}

/// Cross-posting: `posted_to` at creation lists this community; `shares`
/// and `accepted_in` come with an acceptance and stay within `posted_to`.
fn check_cross_post(
    community: &CommunityId,
    t: &Touches<'_>,
    seen: Option<&RequestState>,
) -> std::result::Result<(), Rejection> {
    if let Some(posted) = listed(t, "posted_to") {
        if seen.is_some() {
            return Err(illegal("a request's communities are set when it is posted"));
        }
        if posted.len() < 2 || !posted.contains(community) {
            return Err(Rejection::InvalidField("posted_to".into()));
        }
    }
    let posted = seen.map(|s| s.posted_to.as_slice()).unwrap_or_default();
    let accepted_in = t
        .root
        .get("accepted_in")
        .and_then(|op| str_of(op))
        .and_then(|c| c.parse::<CommunityId>().ok());
    if (t.root.contains_key("shares") || accepted_in.is_some()) && !t.root.contains_key("accepted")
    {
        return Err(illegal("shares come with an acceptance"));
    }
    if let Some(origin) = accepted_in
        && (origin == *community || !posted.contains(&origin))
    {
        return Err(Rejection::InvalidField("accepted_in".into()));
    }
    if let Some(shares) = listed(t, "shares") {
        let within = shares.iter().all(|c| posted.contains(c));
        let names_both =
            shares.contains(community) && accepted_in.is_none_or(|o| shares.contains(&o));
        if !within || !names_both {
            return Err(Rejection::InvalidField("shares".into()));
        }
    }
    Ok(())
}

/// Whether the responder may write `field` in their offer `offer`.
fn offer_field_ok(
    field: &str,
    offer: OfferId,
    offer_status: OfferStatus,
    active: Option<OfferId>,
    status: RequestStatus,
) -> bool {
    match field {
        "withdrawn_at" => offer_status == OfferStatus::Pending,
        "confirmed_at" | "note" => {
            active == Some(offer)
                && matches!(status, RequestStatus::Matched | RequestStatus::Completed)
        }
        "cancelled_at" | "cancel_reason" => {
            active == Some(offer) && status == RequestStatus::Matched
        }
        _ => false,
    }
}

fn check_transitions(
    community: &CommunityId,
    id: &RequestId,
    author: &MemberId,
    t: &Touches<'_>,
    seen: Option<&RequestState>,
    time: Timestamp,
) -> std::result::Result<(), Rejection> {
    check_cross_post(community, t, seen)?;
    let Some(seen) = seen else {
        // Creation: the requester writes the request's fields, nothing else.
        let needed = [
            "title",
            "category",
            "urgency",
            "kind",
            "created_at",
            "expires_at",
        ];
        if !needed.iter().all(|k| t.root.contains_key(k))
            || !t.new_offers.is_empty()
            || !t.offer_fields.is_empty()
        {
            return Err(illegal("the request does not exist yet"));
        }
        let created = t
            .root
            .get("created_at")
            .and_then(|o| int_of(o))
            .unwrap_or(0);
        let expires = t
            .root
            .get("expires_at")
            .and_then(|o| int_of(o))
            .unwrap_or(0);
        if expires <= created || expires.saturating_sub(created) > 90 * Timestamp::DAY {
            return Err(Rejection::InvalidField("expires_at".into()));
        }
        return Ok(());
    };
    let status = seen.status(time);
    let active = seen.active_offer().map(|o| o.id);
    if t.root.contains_key("created_at") {
        return Err(illegal("the request exists already"));
    }
    if EDITABLE.iter().any(|k| t.root.contains_key(k)) && status != RequestStatus::Open {
        return Err(illegal("only an open request can be edited"));
    }
    if t.root.contains_key("cancelled_at")
        && !matches!(status, RequestStatus::Open | RequestStatus::Matched)
    {
        return Err(illegal("only an open or matched request can be cancelled"));
    }
    if t.root.contains_key("expires_at") || t.root.contains_key("renewals") {
        let renewals = t.root.get("renewals").and_then(|o| int_of(o));
        let expires = t.root.get("expires_at").and_then(|o| int_of(o));
        if status != RequestStatus::Expired {
            return Err(illegal("only an expired request can be renewed"));
        }
        if renewals != Some(seen.renewals + 1) || seen.renewals >= MAX_RENEWALS {
            return Err(illegal("a request is renewed at most 3 times"));
        }
        if expires.is_none_or(|e| {
            e <= time.as_millis() || e.saturating_sub(time.as_millis()) > 90 * Timestamp::DAY
        }) {
            return Err(Rejection::InvalidField("expires_at".into()));
        }
    }
    if let Some(op) = t.root.get("accepted") {
        let offer = str_of(op).and_then(OfferId::parse);
        // Accepted here, or mirrored from the community it was made in.
        let pending = if t.root.contains_key("accepted_in") {
            offer.is_some_and(|o| o.responder != id.requester && !seen.offers.contains_key(&o))
        } else {
            offer
                .and_then(|o| seen.offers.get(&o))
                .is_some_and(|o| seen.offer_status(o, time) == OfferStatus::Pending)
        };
        if status != RequestStatus::Open || !pending || !t.root.contains_key("accepted_at") {
            return Err(illegal(
                "only a pending offer on an open request can be accepted",
            ));
        }
    }
    for key in t.root.keys() {
        if let Some(o) = key.strip_prefix(DECLINED).and_then(OfferId::parse) {
            let pending = seen
                .offers
                .get(&o)
                .is_some_and(|x| seen.offer_status(x, time) == OfferStatus::Pending);
            if !pending {
                return Err(illegal("only a pending offer can be declined"));
            }
        }
        if let Some(o) = key.strip_prefix(MATCH_CANCEL).and_then(OfferId::parse)
            && (active != Some(o) || status == RequestStatus::Completed)
        {
            return Err(illegal("only an uncompleted match can be cancelled"));
        }
        if let Some(o) = key.strip_prefix(INVALIDATED).and_then(OfferId::parse)
            && (active != Some(o) || status != RequestStatus::Completed)
        {
            return Err(illegal("only a completed match can be invalidated"));
        }
        let confirms = key
            .strip_prefix(CONFIRMED)
            .or_else(|| key.strip_prefix(NOTE))
            .and_then(OfferId::parse);
        if let Some(o) = confirms
            && (active != Some(o)
                || !matches!(status, RequestStatus::Matched | RequestStatus::Completed))
        {
            return Err(illegal("only a match can be confirmed"));
        }
    }
    // Offers.
    let mirrored = match t.new_offers.as_slice() {
        [o] => seen.offers.get(o).filter(|x| !x.is_here()),
        _ => None,
    };
    if let Some(offer) = mirrored {
        // The responder's copy of an offer accepted in another community:
        // it carries their confirmation or cancellation here.
        let fields_ok = t.new_offer_fields.contains("created_at")
            && t.new_offer_fields.iter().all(|f| {
                matches!(*f, "message" | "created_at")
                    || offer_field_ok(f, offer.id, OfferStatus::Accepted, active, status)
            });
        if !fields_ok {
            return Err(illegal("not a legal change of this offer"));
        }
    } else if !t.new_offers.is_empty() {
        if *author == id.requester {
            return Err(illegal("no offer on one's own request"));
        }
        if t.new_offers.len() > 1 || seen.pending_offer_of(author, time).is_some() {
            return Err(illegal("one pending offer per responder"));
        }
        if status != RequestStatus::Open {
            return Err(illegal("only an open request takes offers"));
        }
        if !t.new_offer_fields.contains("created_at")
            || t.new_offer_fields
                .iter()
                .any(|k| !matches!(*k, "message" | "created_at"))
        {
            return Err(Rejection::InvalidField("offer".into()));
        }
    } else if !t.new_offer_fields.is_empty() {
        return Err(Rejection::DisallowedOperation);
    }
    for ((counter, actor), fields) in &t.offer_fields {
        let offer = seen
            .offers
            .values()
            .find(|o| {
                o.obj
                    .as_ref()
                    .is_some_and(|(c, a)| c == counter && a == *actor)
            })
            .ok_or(illegal("no such offer"))?;
        let offer_status = seen.offer_status(offer, time);
        if !fields
            .iter()
            .all(|f| offer_field_ok(f, offer.id, offer_status, active, status))
        {
            return Err(illegal("not a legal change of this offer"));
        }
    }
    Ok(())
}
