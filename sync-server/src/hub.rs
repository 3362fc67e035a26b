//! Who follows which community on this server, and the live push.
//!
//! A std `Mutex` guards the map: every critical section is a few map
//! operations and `try_send`s, never an `.await`, and the store thread
//! (which is not async) uses it too.
//!
//! The store thread hands each accepted upload's frames to the fan-out
//! task as one [`Relay`], whatever the number of subscribers, so its cost
//! per upload does not grow with the community. The fan-out task takes
//! every relay waiting, gathers each subscriber's frames from all of them,
//! and queues them as one message: the busier the community, the more
//! changes each wake-up and each socket write carries.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use std::time::{Duration, Instant};

use axum::body::Bytes;
use karmyq_core::sync::{Frame, split};
use karmyq_core::{Bundle, CommunityId, MemberId};
use tokio::sync::{Notify, mpsc};

/// Relays waiting for the fan-out task before the store thread waits.
const RELAY_QUEUE: usize = 4096;

/// Most relays the fan-out task gathers at once.
const RELAY_BATCH: usize = 1024;

/// What other tasks send to a connection.
#[derive(Debug)]
pub(crate) enum Outbound {
    /// Frames to send as they are, in order (shared by every subscriber
    /// they go to), written with one flush.
    Frames(Vec<Bytes>),
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

/// What one accepted upload sends on: `delta` to every subscriber of
/// `community` but the uploader's connection, except those in `own`, which
/// get their own bundle instead (readers of a private document it changed).
#[derive(Debug)]
pub(crate) struct Relay {
    /// Where.
    pub community: CommunityId,
    /// The uploader's connection.
    pub except: u64,
    /// What everyone else gets.
    pub delta: Bundle,
    /// Subscribers (by connection) who get these instead.
    pub own: HashMap<u64, Bundle>,
}

/// How the fan-out task paces pushes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pacing {
    /// Relayed bundles are split to fit in frames of this size.
    pub max_frame: usize,
    /// At most one push per subscriber per this interval: what arrives
    /// within it waits and goes out merged. An idle community's first
    /// change goes out at once.
    pub interval: Duration,
}

/// Starts the fan-out task; it ends when the returned sender is dropped.
/// Must be called within a tokio runtime.
pub(crate) fn start_fanout(hub: Arc<Hub>, pacing: Pacing) -> mpsc::Sender<Relay> {
    let (tx, mut rx) = mpsc::channel::<Relay>(RELAY_QUEUE);
    tokio::spawn(async move {
        let mut batch = Vec::with_capacity(RELAY_BATCH);
        let mut last = Instant::now() - pacing.interval;
        while rx.recv_many(&mut batch, RELAY_BATCH).await > 0 {
            let since = last.elapsed();
            if since < pacing.interval {
                tokio::time::sleep(pacing.interval - since).await;
                while batch.len() < RELAY_BATCH {
                    match rx.try_recv() {
                        Ok(relay) => batch.push(relay),
                        Err(_) => break,
                    }
                }
            }
            last = Instant::now();
            hub.fan_out(std::mem::take(&mut batch), pacing.max_frame);
        }
    });
    tx
}

/// One frame per piece of `bundle` (split to the frame limit).
fn frames(bundle: Bundle, max_frame: usize) -> Vec<Bytes> {
    split(bundle, max_frame, usize::MAX)
        .into_iter()
        .map(|piece| {
            Bytes::from(
                Frame::Bundle {
                    bytes: piece.encode(),
                }
                .encode(),
            )
        })
        .collect()
}

/// The bundles in `relays` that the subscription `conn` receives, merged
/// in order: ops first, then changes (a change may cite the authority
/// heads of an op that came in the same upload).
fn merged<'a>(community: CommunityId, relays: impl Iterator<Item = &'a Bundle>) -> Bundle {
    let mut out = Bundle::new(community);
    for b in relays {
        out.ops.extend(b.ops.iter().cloned());
        out.changes.extend(b.changes.iter().cloned());
    }
    out
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

    /// Whether anyone but `except` follows `community`.
    pub fn has_subscribers(&self, community: &CommunityId, except: u64) -> bool {
        self.lock()
            .get(community)
            .is_some_and(|conns| conns.keys().any(|id| *id != except))
    }

    /// Queues each subscriber's share of `relays`, merged into as few
    /// frames as fit, as one message per subscription. Most subscribers
    /// get the same merged frames, encoded once.
    fn fan_out(&self, relays: Vec<Relay>, max_frame: usize) {
        let mut by_community: BTreeMap<CommunityId, Vec<Relay>> = BTreeMap::new();
        for relay in relays {
            by_community.entry(relay.community).or_default().push(relay);
        }
        let mut deliveries = Vec::new();
        for (community, relays) in by_community {
            let subscribers: Vec<(u64, Subscriber)> = match self.lock().get(&community) {
                Some(conns) => conns.iter().map(|(id, s)| (*id, s.clone())).collect(),
                None => continue,
            };
            let special: BTreeSet<u64> = relays
                .iter()
                .flat_map(|r| std::iter::once(r.except).chain(r.own.keys().copied()))
                .collect();
            let everyone = merged(community, relays.iter().map(|r| &r.delta));
            let shared = if everyone.is_empty() {
                Vec::new()
            } else {
                frames(everyone, max_frame)
            };
            for (id, sub) in subscribers {
                let mine = if special.contains(&id) {
                    let bundle = merged(
                        community,
                        relays
                            .iter()
                            .filter(|r| r.except != id)
                            .map(|r| r.own.get(&id).unwrap_or(&r.delta)),
                    );
                    if bundle.is_empty() {
                        continue;
                    }
                    frames(bundle, max_frame)
                } else if shared.is_empty() {
                    continue;
                } else {
                    shared.clone()
                };
                deliveries.push((community, id, sub, mine));
            }
        }
        for (community, id, sub, frames) in deliveries {
            self.deliver(&community, id, &sub, Outbound::Frames(frames));
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn subscriber() -> (Subscriber, mpsc::Receiver<Outbound>) {
        let (tx, rx) = mpsc::channel(8);
        let sub = Subscriber {
            member: karmyq_core::Keypair::generate()
                .expect("randomness")
                .member_id(),
            blocked: Arc::default(),
            tx,
            kick: Arc::new(Notify::new()),
        };
        (sub, rx)
    }

    fn ops(community: CommunityId, names: &[&str]) -> Bundle {
        let mut b = Bundle::new(community);
        b.ops = names.iter().map(|n| n.as_bytes().to_vec()).collect();
        b
    }

    /// The ops of every bundle frame in the one message queued for a
    /// subscription, in order.
    fn received(rx: &mut mpsc::Receiver<Outbound>) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        while let Ok(msg) = rx.try_recv() {
            let Outbound::Frames(frames) = msg else {
                panic!("not frames")
            };
            for f in frames {
                let Ok(Frame::Bundle { bytes }) = Frame::decode(&f) else {
                    panic!("not a bundle frame")
                };
                let b = Bundle::decode(&bytes).expect("a bundle");
                out.push(
                    b.ops
                        .iter()
                        .map(|o| String::from_utf8_lossy(o).into_owned())
                        .collect(),
                );
            }
        }
        out
    }

    #[test]
    fn relays_merge_into_one_frame_each_but_the_uploader_and_private_readers() {
        let hub = Hub::default();
        let c = CommunityId::from_bytes([7; 32]);
        let mut rxs = Vec::new();
        for conn in 1..=4u64 {
            let (sub, rx) = subscriber();
            hub.subscribe(c, conn, sub);
            rxs.push(rx);
        }
        let relays = vec![
            Relay {
                community: c,
                except: 1,
                delta: ops(c, &["a"]),
                own: HashMap::new(),
            },
            Relay {
                community: c,
                except: 2,
                delta: ops(c, &["b"]),
                own: HashMap::from([(3, ops(c, &["b", "secret"]))]),
            },
        ];
        hub.fan_out(relays, 1 << 20);
        assert_eq!(
            received(&mut rxs[0]),
            vec![vec!["b"]],
            "the uploader gets only the other"
        );
        assert_eq!(received(&mut rxs[1]), vec![vec!["a"]]);
        assert_eq!(received(&mut rxs[2]), vec![vec!["a", "b", "secret"]]);
        assert_eq!(
            received(&mut rxs[3]),
            vec![vec!["a", "b"]],
            "one frame, in order"
        );
    }

    #[test]
    fn a_merged_bundle_too_big_for_a_frame_is_split() {
        let hub = Hub::default();
        let c = CommunityId::from_bytes([8; 32]);
        let (sub, mut rx) = subscriber();
        hub.subscribe(c, 9, sub);
        let big = "x".repeat(600);
        let relays = (0..3)
            .map(|_| Relay {
                community: c,
                except: 0,
                delta: ops(c, &[big.as_str()]),
                own: HashMap::new(),
            })
            .collect();
        hub.fan_out(relays, 1_000);
        let frames = received(&mut rx);
        assert!(frames.len() >= 2, "{} frames", frames.len());
        assert_eq!(frames.iter().map(Vec::len).sum::<usize>(), 3);
    }
}
