//! Who follows which community on this server, and the live push.
//!
//! A std `Mutex` guards the map: every critical section is a few map
//! operations and `try_send`s, never an `.await`, and the store thread
//! (which is not async) uses it too.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use karmyq_core::{CommunityId, MemberId};
use tokio::sync::{Notify, mpsc};

/// What other tasks send to a connection.
#[derive(Debug)]
pub(crate) enum Outbound {
    /// A frame to send as is (shared by every subscriber it goes to).
    Frame(axum::body::Bytes),
    /// The member is no longer in this community: drop the subscription.
    Evicted(CommunityId),
}

/// One subscribed connection.
#[derive(Debug, Clone)]
pub(crate) struct Subscriber {
    /// The logged-in member.
    pub member: MemberId,
    /// Whom that member blocked, as their device told this session: no
    /// message of theirs is relayed here.
    pub blocked: Arc<BTreeSet<MemberId>>,
    /// The connection's inbox.
    pub tx: mpsc::Sender<Outbound>,
    /// Told when the inbox overflowed: the connection closes, the device
    /// reconnects and catches up.
    pub kick: Arc<Notify>,
}

impl Subscriber {
    /// Whether this session receives `change`: not a message (a change to
    /// a conversation) from a member it blocked.
    pub fn receives(&self, change: &karmyq_core::SignedChange) -> bool {
        self.blocked.is_empty()
            || !(change.envelope.doc.starts_with("conversation/")
                && self.blocked.contains(&change.envelope.author))
    }
}

/// Subscribers by community, then by connection id.
#[derive(Debug, Default)]
pub(crate) struct Hub {
    subs: Mutex<HashMap<CommunityId, BTreeMap<u64, Subscriber>>>,
}

impl Hub {
    fn lock(&self) -> MutexGuard<'_, HashMap<CommunityId, BTreeMap<u64, Subscriber>>> {
        // A panic elsewhere while holding the lock leaves a consistent map
        // (every operation is a single insert or remove): keep serving.
        self.subs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a subscription.
    pub fn subscribe(&self, community: CommunityId, conn: u64, sub: Subscriber) {
        self.lock().entry(community).or_default().insert(conn, sub);
    }

    /// Forgets every subscription of a connection.
    pub fn drop_connection(&self, conn: u64) {
        let mut subs = self.lock();
        subs.retain(|_, conns| {
            conns.remove(&conn);
            !conns.is_empty()
        });
    }

    /// How many subscriptions there are.
    pub fn count(&self) -> usize {
        self.lock().values().map(BTreeMap::len).sum()
    }

    /// The subscribers of a community but `except`.
    pub fn subscribers(&self, community: &CommunityId, except: u64) -> Vec<(u64, Subscriber)> {
        self.lock()
            .get(community)
            .map(|conns| {
                conns
                    .iter()
                    .filter(|(id, _)| **id != except)
                    .map(|(id, s)| (*id, s.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Queues a message for one subscriber; a full inbox unsubscribes and
    /// kicks it.
    pub fn deliver(&self, community: &CommunityId, conn: u64, sub: &Subscriber, msg: Outbound) {
        if sub.tx.try_send(msg).is_err() {
            if let Some(conns) = self.lock().get_mut(community) {
                conns.remove(&conn);
            }
            sub.kick.notify_one();
        }
    }

    /// Closes every subscription of `member` to `community` at once.
    pub fn evict(&self, community: &CommunityId, member: &MemberId) -> usize {
        let evicted: Vec<Subscriber> = {
            let mut subs = self.lock();
            let Some(conns) = subs.get_mut(community) else {
                return 0;
            };
            let ids: Vec<u64> = conns
                .iter()
                .filter(|(_, s)| s.member == *member)
                .map(|(id, _)| *id)
                .collect();
            ids.iter().filter_map(|id| conns.remove(id)).collect()
        };
        for sub in &evicted {
            if sub.tx.try_send(Outbound::Evicted(*community)).is_err() {
                sub.kick.notify_one();
            }
        }
        evicted.len()
    }
}
