//! Events for the app: a callback interface it implements, and the handle
//! that keeps it registered.
//!
//! Core calls its listeners on the thread that made or received a change,
//! sometimes while that thread holds the client. A foreign callback that
//! called back into the client there would deadlock, so each subscription
//! queues its events and delivers them, in order, from a thread of its own.
//! Dropping (or cancelling) the handle unregisters it and ends that thread
//! once the queue is empty.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, PoisonError};

use karmyq_core as core;
use karmyq_core::sync::SyncStatus;
use karmyq_core::{
    CommunityId, ConversationId, MemberId, MessageId, OfferId, ProposalId, ReportId, RequestId,
    Role, Timestamp,
};

use crate::types::Badge;

/// Implemented by the app to hear what happens. Called from a thread the
/// library owns, one event at a time, in order; the app may call the
/// client from it.
#[uniffi::export(callback_interface)]
pub trait KarmyqListener: Send + Sync {
    /// One event.
    fn on_event(&self, event: KarmyqEvent);
}

/// Where a community's sync with its server stands.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum SyncState {
    /// Opening a connection and logging in.
    Connecting,
    /// Exchanging what either side lacks.
    Syncing,
    /// Caught up; live changes arrive as they are made.
    UpToDate,
    /// No connection; retrying with backoff.
    Offline,
    /// The server refused this device (not a member, removed...).
    Rejected {
        /// The server's reason.
        reason: String,
    },
}

impl From<&SyncStatus> for SyncState {
    fn from(s: &SyncStatus) -> Self {
        match s {
            SyncStatus::Connecting => SyncState::Connecting,
            SyncStatus::Syncing => SyncState::Syncing,
            SyncStatus::UpToDate => SyncState::UpToDate,
            SyncStatus::Rejected { reason } => SyncState::Rejected {
                reason: reason.clone(),
            },
            // Offline, and any state core adds later: not connected.
            _ => SyncState::Offline,
        }
    }
}

macro_rules! notification_kinds {
    ($($variant:ident),+ $(,)?) => {
        /// The kinds of notification (DOMAIN.md, Notifications).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
        pub enum NotificationKind {
            $(
                #[allow(missing_docs)]
                $variant
            ),+
        }

        impl NotificationKind {
            /// Core's kind, if it is one the bindings know.
            pub(crate) fn of(k: core::NotificationKind) -> Option<Self> {
                match k {
                    $(core::NotificationKind::$variant => Some(NotificationKind::$variant),)+
                    _ => None,
                }
            }
        }

        impl From<NotificationKind> for core::NotificationKind {
            fn from(k: NotificationKind) -> Self {
                match k {
                    $(NotificationKind::$variant => core::NotificationKind::$variant),+
                }
            }
        }
    };
}

notification_kinds!(
    OfferReceived,
    OfferAccepted,
    OfferDeclined,
    MatchConfirmedByOther,
    MatchCompleted,
    MatchCancelled,
    KarmaMilestone,
    MemberJoined,
    NewRequestForYou,
    ReportFiled,
    BadgeEarned,
    MatchReminder,
    NormProposed,
    RoleChanged,
    MessageReceived,
);

/// A notification stored for this device's member.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Notification {
    /// Its number on this device (for `mark_notification_read`).
    pub id: i64,
    /// Where it happened.
    pub community: CommunityId,
    /// What kind.
    pub kind: NotificationKind,
    /// The request it is about, if any.
    pub request: Option<RequestId>,
    /// Who caused it, if a member.
    pub actor: Option<MemberId>,
    /// When it was made.
    pub created_at: Timestamp,
    /// Whether it was read.
    pub read: bool,
    /// Made during quiet hours: stored, not to be pushed.
    pub silent: bool,
}

impl Notification {
    pub(crate) fn of(n: core::Notification) -> Option<Self> {
        Some(Notification {
            id: n.id,
            community: n.community,
            kind: NotificationKind::of(n.kind)?,
            request: n.request,
            actor: n.actor,
            created_at: n.created_at,
            read: n.read,
            silent: n.silent,
        })
    }
}

/// Something that happened, as validated on this device.
#[derive(Debug, Clone, PartialEq, uniffi::Enum)]
pub enum KarmyqEvent {
    /// A request was posted.
    RequestCreated {
        community: CommunityId,
        request: RequestId,
    },
    /// An offer arrived on a request.
    OfferReceived {
        community: CommunityId,
        request: RequestId,
        offer: OfferId,
    },
    /// The requester accepted an offer.
    OfferAccepted {
        community: CommunityId,
        request: RequestId,
        offer: OfferId,
    },
    /// The requester declined an offer.
    OfferDeclined {
        community: CommunityId,
        request: RequestId,
        offer: OfferId,
    },
    /// One party confirmed the help.
    MatchConfirmed {
        community: CommunityId,
        request: RequestId,
        by: MemberId,
    },
    /// Both parties confirmed.
    MatchCompleted {
        community: CommunityId,
        request: RequestId,
        offer: OfferId,
        requester: MemberId,
        helper: MemberId,
    },
    /// A party cancelled the match.
    MatchCancelled {
        community: CommunityId,
        request: RequestId,
        offer: OfferId,
        by: MemberId,
    },
    /// Karma awarded (undecayed points).
    KarmaAwarded {
        community: CommunityId,
        member: MemberId,
        points: f64,
        milestone: bool,
    },
    /// Someone became a member.
    MemberJoined {
        community: CommunityId,
        member: MemberId,
    },
    /// Someone left or was removed.
    MemberLeft {
        community: CommunityId,
        member: MemberId,
    },
    /// A member's role changed.
    RoleChanged {
        community: CommunityId,
        member: MemberId,
        role: Role,
    },
    /// A new request suits this device's member.
    SuggestedForYou {
        community: CommunityId,
        request: RequestId,
        score: f64,
    },
    /// A member proposed a norm.
    NormProposed {
        community: CommunityId,
        proposal: ProposalId,
    },
    /// This device's member earned a badge.
    BadgeEarned {
        community: CommunityId,
        badge: Badge,
    },
    /// A match has waited 3 days for completion.
    MatchReminder {
        community: CommunityId,
        request: RequestId,
    },
    /// A report was filed.
    ReportFiled {
        community: CommunityId,
        report: ReportId,
        notify_me: bool,
    },
    /// A message arrived from the other participant.
    MessageReceived {
        community: CommunityId,
        conversation: ConversationId,
        message: MessageId,
    },
    /// A notification was stored for this device's member.
    Notified { notification: Notification },
    /// A community's sync changed state.
    SyncStatusChanged {
        community: CommunityId,
        status: SyncState,
    },
}

impl KarmyqEvent {
    /// Core's event, if it is one the bindings know.
    fn of(e: &core::Event) -> Option<Self> {
        use core::Event as E;
        Some(match e.clone() {
            E::RequestCreated { community, request } => {
                KarmyqEvent::RequestCreated { community, request }
            }
            E::OfferReceived {
                community,
                request,
                offer,
            } => KarmyqEvent::OfferReceived {
                community,
                request,
                offer,
            },
            E::OfferAccepted {
                community,
                request,
                offer,
            } => KarmyqEvent::OfferAccepted {
                community,
                request,
                offer,
            },
            E::OfferDeclined {
                community,
                request,
                offer,
            } => KarmyqEvent::OfferDeclined {
                community,
                request,
                offer,
            },
            E::MatchConfirmed {
                community,
                request,
                by,
            } => KarmyqEvent::MatchConfirmed {
                community,
                request,
                by,
            },
            E::MatchCompleted {
                community,
                request,
                offer,
                requester,
                helper,
            } => KarmyqEvent::MatchCompleted {
                community,
                request,
                offer,
                requester,
                helper,
            },
            E::MatchCancelled {
                community,
                request,
                offer,
                by,
            } => KarmyqEvent::MatchCancelled {
                community,
                request,
                offer,
                by,
            },
            E::KarmaAwarded {
                community,
                member,
                points,
                milestone,
            } => KarmyqEvent::KarmaAwarded {
                community,
                member,
                points,
                milestone,
            },
            E::MemberJoined { community, member } => {
                KarmyqEvent::MemberJoined { community, member }
            }
            E::MemberLeft { community, member } => KarmyqEvent::MemberLeft { community, member },
            E::RoleChanged {
                community,
                member,
                role,
            } => KarmyqEvent::RoleChanged {
                community,
                member,
                role,
            },
            E::SuggestedForYou {
                community,
                request,
                score,
            } => KarmyqEvent::SuggestedForYou {
                community,
                request,
                score,
            },
            E::NormProposed {
                community,
                proposal,
            } => KarmyqEvent::NormProposed {
                community,
                proposal,
            },
            E::BadgeEarned { community, badge } => KarmyqEvent::BadgeEarned {
                community,
                badge: Badge::of(badge)?,
            },
            E::MatchReminder { community, request } => {
                KarmyqEvent::MatchReminder { community, request }
            }
            E::ReportFiled {
                community,
                report,
                notify_me,
            } => KarmyqEvent::ReportFiled {
                community,
                report,
                notify_me,
            },
            E::MessageReceived {
                community,
                conversation,
                message,
            } => KarmyqEvent::MessageReceived {
                community,
                conversation,
                message,
            },
            E::Notified(n) => KarmyqEvent::Notified {
                notification: Notification::of(n)?,
            },
            _ => return None,
        })
    }
}

/// Turns core's events into the app's, onto a subscription's queue.
struct Forward(Mutex<Sender<KarmyqEvent>>);

impl core::Listener for Forward {
    fn on_event(&self, event: &core::Event) {
        if let Some(e) = KarmyqEvent::of(event) {
            // A closed queue means the handle is being dropped: nothing to do.
            let _ = lock(&self.0).send(e);
        }
    }
}

/// The queues of every live subscription, for what does not come through
/// core's hub (sync statuses).
#[derive(Debug, Default)]
pub(crate) struct Fanout {
    next: AtomicU64,
    queues: Mutex<Vec<(u64, Sender<KarmyqEvent>)>>,
}

impl Fanout {
    pub(crate) fn send(&self, event: &KarmyqEvent) {
        lock(&self.queues).retain(|(_, q)| q.send(event.clone()).is_ok());
    }

    fn add(&self, queue: Sender<KarmyqEvent>) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        lock(&self.queues).push((id, queue));
        id
    }

    fn remove(&self, id: u64) {
        lock(&self.queues).retain(|(i, _)| *i != id);
    }
}

/// Keeps a listener registered. Dropping it, or calling [`cancel`],
/// unregisters the listener.
///
/// [`cancel`]: ListenerHandle::cancel
#[derive(uniffi::Object)]
pub struct ListenerHandle {
    inner: Mutex<Option<Registration>>,
}

struct Registration {
    _core: core::Subscription,
    fanout: Arc<Fanout>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.fanout.remove(self.id);
    }
}

impl std::fmt::Debug for ListenerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerHandle").finish_non_exhaustive()
    }
}

impl ListenerHandle {
    /// Registers `listener` with core's hub (through `subscribe`) and with
    /// `fanout`, and starts the thread that delivers to it.
    pub(crate) fn start(
        listener: Box<dyn KarmyqListener>,
        subscribe: impl FnOnce(Arc<dyn core::Listener>) -> core::Subscription,
        fanout: Arc<Fanout>,
    ) -> std::io::Result<Arc<Self>> {
        let (tx, rx) = mpsc::channel::<KarmyqEvent>();
        std::thread::Builder::new()
            .name("karmyq-listener".into())
            .spawn(move || {
                for event in rx {
                    listener.on_event(event);
                }
            })?;
        let id = fanout.add(tx.clone());
        let core = subscribe(Arc::new(Forward(Mutex::new(tx))));
        Ok(Arc::new(ListenerHandle {
            inner: Mutex::new(Some(Registration {
                _core: core,
                fanout,
                id,
            })),
        }))
    }
}

#[uniffi::export]
impl ListenerHandle {
    /// Stops delivering events to the listener (what is queued is still
    /// delivered). Dropping the handle does the same.
    pub fn cancel(&self) {
        lock(&self.inner).take();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_statuses_map_one_to_one() {
        assert_eq!(SyncState::from(&SyncStatus::UpToDate), SyncState::UpToDate);
        assert_eq!(
            SyncState::from(&SyncStatus::Rejected {
                reason: "not_a_member".into()
            }),
            SyncState::Rejected {
                reason: "not_a_member".into()
            }
        );
    }
}
