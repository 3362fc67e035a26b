//! Domain events, the listener apps receive them through, and the
//! notifications a device derives from them for its member.
//!
//! A community's projections compare what a change moved (a new offer, an
//! accepted one, a completed match, a new member...) and emit [`Event`]s.
//! Once the change is committed, the [`Hub`] turns those that concern this
//! device's member, and that were made by someone else, into stored
//! [`Notification`]s (by their preferences and quiet hours) and hands every
//! event to the registered [`Listener`]s. Local writes and changes received
//! from other devices go through the same path.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use rusqlite::{OptionalExtension, params};

use crate::authority::{CommunityId, Role};
use crate::conversation::{ConversationId, MessageId};
use crate::error::{Error, Result};
use crate::identity::MemberId;
use crate::norms::ProposalId;
use crate::report::ReportId;
use crate::request::{OfferId, RequestId};
use crate::store::Db;
use crate::time::Timestamp;
use crate::trust::Badge;

/// Something that happened in a community, as validated on this device.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// A request was posted.
    RequestCreated {
        /// Where.
        community: CommunityId,
        /// Which.
        request: RequestId,
    },
    /// An offer arrived on a request.
    OfferReceived {
        /// Where.
        community: CommunityId,
        /// On which request.
        request: RequestId,
        /// Which offer (its responder is `offer.responder`).
        offer: OfferId,
    },
    /// The requester accepted an offer: a match.
    OfferAccepted {
        /// Where.
        community: CommunityId,
        /// Which request.
        request: RequestId,
        /// Which offer.
        offer: OfferId,
    },
    /// The requester declined an offer.
    OfferDeclined {
        /// Where.
        community: CommunityId,
        /// Which request.
        request: RequestId,
        /// Which offer.
        offer: OfferId,
    },
    /// One party confirmed the help.
    MatchConfirmed {
        /// Where.
        community: CommunityId,
        /// Which request.
        request: RequestId,
        /// Who confirmed.
        by: MemberId,
    },
    /// Both parties confirmed.
    MatchCompleted {
        /// Where.
        community: CommunityId,
        /// Which request.
        request: RequestId,
        /// The accepted offer.
        offer: OfferId,
        /// The requester.
        requester: MemberId,
        /// The helper.
        helper: MemberId,
    },
    /// A party cancelled the match; the request is open again.
    MatchCancelled {
        /// Where.
        community: CommunityId,
        /// Which request.
        request: RequestId,
        /// The offer whose match ended.
        offer: OfferId,
        /// Who cancelled.
        by: MemberId,
    },
    /// Karma earned by a completed match (undecayed points).
    KarmaAwarded {
        /// Where.
        community: CommunityId,
        /// Who.
        member: MemberId,
        /// How much.
        points: f64,
        /// Whether a milestone bonus is part of it.
        milestone: bool,
    },
    /// Someone became a member.
    MemberJoined {
        /// Where.
        community: CommunityId,
        /// Who.
        member: MemberId,
    },
    /// Someone stopped being a member (left or removed).
    MemberLeft {
        /// Where.
        community: CommunityId,
        /// Who.
        member: MemberId,
    },
    /// A member's role changed.
    RoleChanged {
        /// Where.
        community: CommunityId,
        /// Who.
        member: MemberId,
        /// The new role.
        role: Role,
    },
    /// A new request suits this device's member well (suggested-helper
    /// score of 60 or more).
    SuggestedForYou {
        /// Where.
        community: CommunityId,
        /// Which request.
        request: RequestId,
        /// The member's score for it (0–115).
        score: f64,
    },
    /// A member proposed a norm.
    NormProposed {
        /// Where.
        community: CommunityId,
        /// Which proposal (its proposer is `proposal.proposer`).
        proposal: ProposalId,
    },
    /// This device's member earned a badge.
    BadgeEarned {
        /// Where.
        community: CommunityId,
        /// Which.
        badge: Badge,
    },
    /// A match of this device's member has waited 3 days for completion.
    MatchReminder {
        /// Where.
        community: CommunityId,
        /// Which request.
        request: RequestId,
    },
    /// A member filed a report (a private document: only moderators and
    /// the reporter receive it).
    ReportFiled {
        /// Where.
        community: CommunityId,
        /// Which report.
        report: ReportId,
        /// Whether this device's member moderates and did not file it.
        notify_me: bool,
    },
    /// A message from the other participant arrived in a conversation of
    /// this device's member (never for their own, nor from a member they
    /// blocked). Its body is read with `Community::messages`.
    MessageReceived {
        /// Where.
        community: CommunityId,
        /// Which conversation.
        conversation: ConversationId,
        /// Which message (its sender is `message.sender`).
        message: MessageId,
    },
    /// A notification was stored for this device's member.
    Notified(Notification),
}

macro_rules! kinds {
    ($($variant:ident = $text:literal),+ $(,)?) => {
        /// The kinds of notification (DOMAIN.md, Notifications).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum NotificationKind {
            $(
                #[doc = $text]
                $variant
            ),+
        }

        impl NotificationKind {
            /// The stable name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(NotificationKind::$variant => $text),+
                }
            }

            /// Parses the stable name.
            pub fn parse(s: &str) -> Option<Self> {
                match s {
                    $($text => Some(NotificationKind::$variant),)+
                    _ => None,
                }
            }
        }
    };
}

kinds!(
    OfferReceived = "offer_received",
    OfferAccepted = "offer_accepted",
    OfferDeclined = "offer_declined",
    MatchConfirmedByOther = "match_confirmed_by_other",
    MatchCompleted = "match_completed",
    MatchCancelled = "match_cancelled",
    KarmaMilestone = "karma_milestone",
    MemberJoined = "member_joined",
    NewRequestForYou = "new_request_for_you",
    ReportFiled = "report_filed",
    BadgeEarned = "badge_earned",
    MatchReminder = "match_reminder",
    NormProposed = "norm_proposed",
    RoleChanged = "role_changed",
    MessageReceived = "message_received",
);

/// A notification stored for this device's member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// Its number on this device.
    pub id: i64,
    /// Where it happened.
    pub community: CommunityId,
    /// What kind.
    pub kind: NotificationKind,
    /// The request it is about, if any.
    pub request: Option<RequestId>,
    /// Who caused it, if a member.
    pub actor: Option<MemberId>,
    /// When it was derived.
    pub created_at: Timestamp,
    /// Whether it was read.
    pub read: bool,
    /// Created during quiet hours: stored, not to be pushed.
    pub silent: bool,
}

/// Receives events; apps implement it (the FFI exposes it as a callback).
/// Called on the thread that made or received the change, after commit;
/// keep it quick.
pub trait Listener: Send + Sync {
    /// One event.
    fn on_event(&self, event: &Event);
}

/// Keeps a listener registered; dropping it unregisters.
#[derive(Debug)]
pub struct Subscription {
    id: u64,
    hub: Weak<Hub>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(hub) = self.hub.upgrade() {
            lock(&hub.listeners).retain(|(id, _)| *id != self.id);
        }
    }
}

/// Quiet hours: `[start, end)` in minutes after midnight UTC (wrapping
/// past midnight when `start > end`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuietHours {
    /// First quiet minute.
    pub start_minute: u16,
    /// First minute after the quiet ones.
    pub end_minute: u16,
}

impl QuietHours {
    fn contains(self, t: Timestamp) -> bool {
        let minute = u16::try_from(t.as_millis().rem_euclid(Timestamp::DAY) / 60_000).unwrap_or(0);
        if self.start_minute <= self.end_minute {
            (self.start_minute..self.end_minute).contains(&minute)
        } else {
            minute >= self.start_minute || minute < self.end_minute
        }
    }
}

/// A mutex guard even if another thread panicked while holding it: the
/// data behind these locks (a connection, a list) stays usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Where a device's events go: its account file (notifications,
/// preferences) and its listeners. Shared by the client and its
/// communities.
pub struct Hub {
    me: MemberId,
    // A std mutex: held only for short, synchronous SQLite calls, never
    // across an await (core has none).
    account: Mutex<Db>,
    listeners: Mutex<Vec<(u64, Arc<dyn Listener>)>>,
    next: AtomicU64,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("me", &self.me)
            .finish_non_exhaustive()
    }
}

impl Hub {
    pub(crate) fn new(me: MemberId, account: Db) -> Arc<Self> {
        Arc::new(Hub {
            me,
            account: Mutex::new(account),
            listeners: Mutex::new(Vec::new()),
            next: AtomicU64::new(1),
        })
    }

    /// The account database, locked.
    pub(crate) fn account(&self) -> MutexGuard<'_, Db> {
        lock(&self.account)
    }

    /// Whether this device's member blocked `member`.
    pub(crate) fn is_blocked(&self, member: &MemberId) -> Result<bool> {
        Ok(self
            .account()
            .conn()
            .prepare_cached("SELECT 1 FROM blocks WHERE blocked = ?1")?
            .exists([member.as_bytes().as_slice()])?)
    }

    /// Everyone this device's member blocked.
    pub(crate) fn blocked(&self) -> Result<Vec<MemberId>> {
        let account = self.account();
        let mut stmt = account
            .conn()
            .prepare_cached("SELECT blocked FROM blocks ORDER BY blocked")?;
        let rows = stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))?;
        let mut out = Vec::new();
        for row in rows {
            out.push(crate::community::member_from_blob(&row?)?);
        }
        Ok(out)
    }

    /// Blocks (or unblocks) a member, privately to this device.
    pub(crate) fn set_blocked(
        &self,
        member: &MemberId,
        blocked: bool,
        now: Timestamp,
    ) -> Result<()> {
        if *member == self.me {
            return Err(Error::InvalidArgument("one cannot block oneself".into()));
        }
        self.account().write(|tx| {
            if blocked {
                tx.execute(
                    "INSERT OR IGNORE INTO blocks (blocked, created_at) VALUES (?1, ?2)",
                    params![member.as_bytes().as_slice(), now.as_millis()],
                )?;
            } else {
                tx.execute(
                    "DELETE FROM blocks WHERE blocked = ?1",
                    [member.as_bytes().as_slice()],
                )?;
            }
            Ok(())
        })
    }

    /// Registers a listener until the returned subscription is dropped.
    pub(crate) fn subscribe(self: &Arc<Self>, listener: Arc<dyn Listener>) -> Subscription {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        lock(&self.listeners).push((id, listener));
        Subscription {
            id,
            hub: Arc::downgrade(self),
        }
    }

    /// Stores the notifications `events` bring this member, then hands every
    /// event (and each notification) to the listeners. `retention_days`: the
    /// community's setting.
    ///
    /// With `notify` false the listeners still get the events but nothing
    /// is stored: a device catching up a community it just received learns
    /// its history, which is no news to its member.
    pub(crate) fn dispatch(
        &self,
        events: Vec<Event>,
        retention_days: u16,
        now: Timestamp,
        notify: bool,
    ) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let mut all = Vec::with_capacity(events.len());
        {
            let mut account = self.account();
            let quiet = quiet_hours(&account)?.is_some_and(|q| q.contains(now));
            for event in events {
                let derived = self.derive(&event).filter(|_| notify);
                all.push(event);
                let Some((community, kind, request, actor)) = derived else {
                    continue;
                };
                let blocked = match actor {
                    Some(a) => account
                        .conn()
                        .prepare_cached("SELECT 1 FROM blocks WHERE blocked = ?1")?
                        .exists([a.as_bytes().as_slice()])?,
                    None => false,
                };
                if blocked || !enabled(&account, community, kind)? {
                    continue;
                }
                let id = account.write(|tx| {
                    let cutoff = now
                        .as_millis()
                        .saturating_sub(i64::from(retention_days) * Timestamp::DAY);
                    tx.prepare_cached("DELETE FROM notifications WHERE community = ?1 AND created_at < ?2")?
                        .execute(params![community.as_bytes().as_slice(), cutoff])?;
                    tx.prepare_cached(
                        "INSERT INTO notifications (community, kind, request, actor, created_at, silent)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    )?
                    .execute(params![
                        community.as_bytes().as_slice(),
                        kind.as_str(),
                        request.map(|r| r.to_string()),
                        actor.map(|a| a.as_bytes().to_vec()),
                        now.as_millis(),
                        quiet
                    ])?;
                    Ok(tx.last_insert_rowid())
                })?;
                all.push(Event::Notified(Notification {
                    id,
                    community,
                    kind,
                    request,
                    actor,
                    created_at: now,
                    read: false,
                    silent: quiet,
                }));
            }
        }
        let listeners: Vec<Arc<dyn Listener>> = lock(&self.listeners)
            .iter()
            .map(|(_, l)| l.clone())
            .collect();
        for event in &all {
            for l in &listeners {
                l.on_event(event);
            }
        }
        Ok(())
    }

    /// The notification an event brings this device's member, if any:
    /// never for what they did themselves.
    fn derive(
        &self,
        event: &Event,
    ) -> Option<(
        CommunityId,
        NotificationKind,
        Option<RequestId>,
        Option<MemberId>,
    )> {
        let me = self.me;
        use NotificationKind as K;
        match event {
            Event::OfferReceived {
                community,
                request,
                offer,
            } if request.requester == me && offer.responder != me => Some((
                *community,
                K::OfferReceived,
                Some(*request),
                Some(offer.responder),
            )),
            Event::OfferAccepted {
                community,
                request,
                offer,
            } if offer.responder == me => Some((
                *community,
                K::OfferAccepted,
                Some(*request),
                Some(request.requester),
            )),
            Event::OfferDeclined {
                community,
                request,
                offer,
            } if offer.responder == me => Some((
                *community,
                K::OfferDeclined,
                Some(*request),
                Some(request.requester),
            )),
            Event::MatchConfirmed {
                community,
                request,
                by,
            } if *by != me => Some((
                *community,
                K::MatchConfirmedByOther,
                Some(*request),
                Some(*by),
            )),
            Event::MatchCompleted {
                community,
                request,
                requester,
                helper,
                ..
            } if *requester == me || *helper == me => {
                let other = if *requester == me {
                    *helper
                } else {
                    *requester
                };
                Some((*community, K::MatchCompleted, Some(*request), Some(other)))
            }
            Event::MatchCancelled {
                community,
                request,
                offer,
                by,
            } if *by != me && (request.requester == me || offer.responder == me) => {
                Some((*community, K::MatchCancelled, Some(*request), Some(*by)))
            }
            Event::KarmaAwarded {
                community,
                member,
                milestone: true,
                ..
            } if *member == me => Some((*community, K::KarmaMilestone, None, None)),
            Event::MessageReceived {
                community,
                conversation,
                message,
            } if message.sender != me && conversation.has(&me) => Some((
                *community,
                K::MessageReceived,
                conversation.topic(),
                Some(message.sender),
            )),
            Event::SuggestedForYou {
                community, request, ..
            } => Some((
                *community,
                K::NewRequestForYou,
                Some(*request),
                Some(request.requester),
            )),
            Event::ReportFiled {
                community,
                report,
                notify_me: true,
            } => Some((*community, K::ReportFiled, None, Some(report.reporter))),
            Event::NormProposed {
                community,
                proposal,
            } if proposal.proposer != me => {
                Some((*community, K::NormProposed, None, Some(proposal.proposer)))
            }
            Event::BadgeEarned { community, .. } => Some((*community, K::BadgeEarned, None, None)),
            Event::MatchReminder { community, request } => {
                Some((*community, K::MatchReminder, Some(*request), None))
            }
            Event::MemberJoined { community, member } if *member != me => {
                Some((*community, K::MemberJoined, None, Some(*member)))
            }
            Event::RoleChanged {
                community, member, ..
            } if *member == me => Some((*community, K::RoleChanged, None, None)),
            _ => None,
        }
    }
}

fn quiet_hours(account: &Db) -> Result<Option<QuietHours>> {
    let row: Option<(i64, i64)> = account
        .conn()
        .prepare_cached("SELECT start_minute, end_minute FROM quiet_hours WHERE id = 1")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    Ok(row.map(|(s, e)| QuietHours {
        start_minute: u16::try_from(s).unwrap_or(0),
        end_minute: u16::try_from(e).unwrap_or(0),
    }))
}

fn enabled(account: &Db, community: CommunityId, kind: NotificationKind) -> Result<bool> {
    let off: bool = account
        .conn()
        .prepare_cached(
            "SELECT 1 FROM notification_prefs WHERE community = ?1 AND kind = ?2 AND enabled = 0",
        )?
        .exists(params![community.as_bytes().as_slice(), kind.as_str()])?;
    Ok(!off)
}

/// Sets quiet hours (`None`: none).
pub(crate) fn set_quiet_hours(account: &mut Db, hours: Option<QuietHours>) -> Result<()> {
    if hours.is_some_and(|h| h.start_minute >= 1440 || h.end_minute >= 1440) {
        return Err(Error::InvalidArgument(
            "quiet hours are minutes of a day (0-1439)".into(),
        ));
    }
    account.write(|tx| {
        tx.execute("DELETE FROM quiet_hours", [])?;
        if let Some(h) = hours {
            tx.execute(
                "INSERT INTO quiet_hours (id, start_minute, end_minute) VALUES (1, ?1, ?2)",
                params![h.start_minute, h.end_minute],
            )?;
        }
        Ok(())
    })
}

/// Turns one kind of notification on or off for one community.
pub(crate) fn set_preference(
    account: &mut Db,
    community: CommunityId,
    kind: NotificationKind,
    enabled: bool,
) -> Result<()> {
    account.write(|tx| {
        tx.execute(
            "INSERT INTO notification_prefs (community, kind, enabled) VALUES (?1, ?2, ?3)
             ON CONFLICT (community, kind) DO UPDATE SET enabled = excluded.enabled",
            params![community.as_bytes().as_slice(), kind.as_str(), enabled],
        )?;
        Ok(())
    })
}

/// Notifications, newest first, a page at a time.
pub(crate) fn list(
    account: &Db,
    unread_only: bool,
    limit: u32,
    offset: u32,
) -> Result<Vec<Notification>> {
    let mut stmt = account.conn().prepare_cached(
        "SELECT id, community, kind, request, actor, created_at, read, silent FROM notifications
         WHERE (?1 = 0 OR read = 0) ORDER BY created_at DESC, id DESC LIMIT ?2 OFFSET ?3",
    )?;
    let rows = stmt.query_map(params![unread_only, limit, offset], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, Vec<u8>>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, Option<String>>(3)?,
            r.get::<_, Option<Vec<u8>>>(4)?,
            r.get::<_, i64>(5)?,
            r.get::<_, bool>(6)?,
            r.get::<_, bool>(7)?,
        ))
    })?;
    let corrupt = || Error::Corrupt("notification".into());
    let mut out = Vec::new();
    for row in rows {
        let (id, community, kind, request, actor, created, read, silent) = row?;
        let community: [u8; 32] = community.try_into().map_err(|_| corrupt())?;
        out.push(Notification {
            id,
            community: CommunityId::from_bytes(community),
            kind: NotificationKind::parse(&kind).ok_or_else(corrupt)?,
            request: request
                .map(|r| RequestId::parse_stored(&r).ok_or_else(corrupt))
                .transpose()?,
            actor: actor
                .map(|a| crate::community::member_from_blob(&a))
                .transpose()?,
            created_at: Timestamp::from_millis(created),
            read,
            silent,
        });
    }
    Ok(out)
}

/// Marks notifications read (all of them with `None`).
pub(crate) fn mark_read(account: &mut Db, id: Option<i64>) -> Result<()> {
    account.write(|tx| {
        match id {
            Some(id) => tx.execute("UPDATE notifications SET read = 1 WHERE id = ?1", [id])?,
            None => tx.execute("UPDATE notifications SET read = 1", [])?,
        };
        Ok(())
    })
}
