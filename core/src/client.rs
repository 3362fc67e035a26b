//! The library's entry point: [`Karmyq::open`] a data directory, holding
//! `account.sqlite3` (this device's identity and its communities) and
//! `communities/<id>.sqlite3`, one file per community.

mod crosspost;
mod messaging;

pub use crosspost::MATCHED_ELSEWHERE;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::{OptionalExtension, params};
use zeroize::Zeroizing;

use crate::authority::{CommunityId, Op, OpBody, Settings, SignedOp, Visibility, valid_name};
use crate::bundle::{Bundle, Report};
use crate::community::{Community, Prepared};
use crate::error::{Error, Rejection, Result};
use crate::identity::{Keypair, MemberId};
use crate::invite::InviteToken;
use crate::matching::{BlockList, RankedItem, Viewer, rank_feed_with};
use crate::notify::{
    self, Hub, Listener, Notification, NotificationKind, QuietHours, Subscription,
};
use crate::store::{Db, schema};
use crate::time::Timestamp;
use crate::trust::{Badge, badges};

/// A community this device holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommunitySummary {
    /// The community.
    pub id: CommunityId,
    /// Its name when last seen.
    pub name: String,
}

/// A device's Karmyq: its identity and the communities it holds.
pub struct Karmyq {
    dir: PathBuf,
    /// Held for as long as this client is open: one writer per file.
    _lock: std::fs::File,
    keys: Arc<Keypair>,
    /// The account file and the listeners, shared with the communities.
    hub: Arc<Hub>,
    open: HashMap<CommunityId, Community>,
    /// Opened with [`Karmyq::open_relay`].
    relay: bool,
}

impl std::fmt::Debug for Karmyq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Karmyq")
            .field("dir", &self.dir)
            .field("member", &self.keys.member_id())
            .finish_non_exhaustive()
    }
}

impl Karmyq {
    /// Opens a data directory, creating it and a new identity if empty.
    /// Only one client at a time may hold a directory (in this process or
    /// another): a second gets [`Error::DirectoryInUse`].
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(dir.as_ref(), None)
    }

    /// Opens a data directory with an identity restored from a backup
    /// ([`Karmyq::export_secret`]): a new phone. Refuses a directory that
    /// already holds another identity.
    pub fn restore(dir: impl AsRef<Path>, secret: &str) -> Result<Self> {
        let keys = Keypair::import_secret(secret)?;
        Self::open_with(dir.as_ref(), Some(keys))
    }

    /// Opens a data directory as a relay's (the sync server's): every
    /// community is validated and stored exactly as on a device — the same
    /// validator, the same authority rules, the same files — but keeps no
    /// projections of its content (requests, offers, matches, full-text
    /// search, profiles, reports, conversations, members), raises no events
    /// and stores no notifications, since nothing reads them there. The
    /// community document's projection (description, norms) stays. A file
    /// written this way is flagged, so a device opening it rebuilds its
    /// projections first. Queries that read projections (requests, members,
    /// profiles, messages...) answer from whatever the file held before.
    pub fn open_relay(dir: impl AsRef<Path>) -> Result<Self> {
        let mut karmyq = Self::open_with(dir.as_ref(), None)?;
        karmyq.relay = true;
        Ok(karmyq)
    }

    fn open_with(dir: &Path, restore: Option<Keypair>) -> Result<Self> {
        std::fs::create_dir_all(dir.join("communities"))?;
        let lock = std::fs::File::create(dir.join("lock"))?;
        lock.try_lock().map_err(|_| Error::DirectoryInUse)?;
        let mut account = Db::open(&dir.join("account.sqlite3"), &schema::ACCOUNT)?;
        let stored: Option<Vec<u8>> = account
            .conn()
            .query_row("SELECT secret FROM identity WHERE id = 1", [], |r| r.get(0))
            .optional()?;
        let keys = match (stored, restore) {
            (Some(secret), restore) => {
                let secret = Zeroizing::new(secret);
                let bytes: [u8; 32] = secret
                    .as_slice()
                    .try_into()
                    .map_err(|_| Error::Corrupt("identity".into()))?;
                let keys = Keypair::from_secret_bytes(&bytes);
                if restore.is_some_and(|r| r.member_id() != keys.member_id()) {
                    return Err(Error::InvalidArgument(
                        "this data directory holds another identity".into(),
                    ));
                }
                keys
            }
            (None, restore) => {
                let keys = match restore {
                    Some(k) => k,
                    None => Keypair::generate()?,
                };
                let secret = keys.secret_bytes();
                account.write(|tx| {
                    tx.execute(
                        "INSERT INTO identity (id, member_id, secret, created_at) VALUES (1, ?1, ?2, ?3)",
                        params![
                            keys.member_id().as_bytes().as_slice(),
                            secret.as_slice(),
                            Timestamp::now().as_millis()
                        ],
                    )?;
                    Ok(())
                })?;
                keys
            }
        };
        Ok(Karmyq {
            dir: dir.to_owned(),
            _lock: lock,
            hub: Hub::new(keys.member_id(), account),
            keys: Arc::new(keys),
            open: HashMap::new(),
            relay: false,
        })
    }

    /// This device's member id.
    pub fn member_id(&self) -> MemberId {
        self.keys.member_id()
    }

    /// The identity's secret, for a backup or a new phone. Keep it safe.
    pub fn export_secret(&self) -> Zeroizing<String> {
        self.keys.export_secret()
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path_of(&self, id: &CommunityId) -> PathBuf {
        // Only a validated CommunityId (64 hex characters) names a file.
        self.dir.join("communities").join(format!("{id}.sqlite3"))
    }

    /// Founds a community, with this device's member as founder and admin.
    pub fn create_community(
        &mut self,
        name: &str,
        description: &str,
        visibility: Visibility,
        now: Timestamp,
    ) -> Result<CommunityId> {
        if !valid_name(name) {
            return Err(Error::InvalidArgument("community name".into()));
        }
        if description.chars().count() > 500 {
            return Err(Error::InvalidArgument("description too long".into()));
        }
        let mut nonce = [0u8; 16];
        getrandom::getrandom(&mut nonce).map_err(|_| Error::Randomness)?;
        let genesis = SignedOp::sign(
            Op {
                community: None,
                parents: Vec::new(),
                author: self.member_id(),
                created_at: now,
                body: OpBody::Genesis {
                    name: name.to_owned(),
                    description: description.to_owned(),
                    visibility,
                    settings: Settings::default(),
                    nonce,
                },
            },
            &self.keys,
        )?;
        self.found(genesis, now)
    }

    /// Creates the file of a community from its genesis op and adds it to
    /// this device's list.
    fn found(&mut self, genesis: SignedOp, now: Timestamp) -> Result<CommunityId> {
        let id = CommunityId::from_bytes(*genesis.hash().as_bytes());
        let community = Community::create(
            &self.path_of(&id),
            self.keys.clone(),
            self.hub.clone(),
            genesis,
            self.relay,
        )?;
        let name = community.authority().name.clone();
        self.remember(id, &name, now)?;
        self.open.insert(id, community);
        Ok(id)
    }

    fn remember(&mut self, id: CommunityId, name: &str, now: Timestamp) -> Result<()> {
        self.hub.account().write(|tx| {
            tx.execute(
                "INSERT INTO communities (community_id, name, added_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (community_id) DO UPDATE SET name = excluded.name",
                params![id.as_bytes().as_slice(), name, now.as_millis()],
            )?;
            Ok(())
        })
    }

    /// The communities this device holds.
    pub fn communities(&self) -> Result<Vec<CommunitySummary>> {
        let account = self.hub.account();
        let mut stmt = account
            .conn()
            .prepare_cached("SELECT community_id, name FROM communities ORDER BY added_at, name")?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, String>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, name) = row?;
            let id: [u8; 32] = id
                .try_into()
                .map_err(|_| Error::Corrupt("community id".into()))?;
            out.push(CommunitySummary {
                id: CommunityId::from_bytes(id),
                name,
            });
        }
        Ok(out)
    }

    /// A community this device holds.
    pub fn community(&mut self, id: CommunityId) -> Result<&mut Community> {
        if !self.open.contains_key(&id) {
            let known: bool = self
                .hub
                .account()
                .conn()
                .prepare_cached("SELECT 1 FROM communities WHERE community_id = ?1")?
                .exists([id.as_bytes().as_slice()])?;
            if !known {
                return Err(Error::UnknownCommunity);
            }
            let community = Community::open(
                &self.path_of(&id),
                self.keys.clone(),
                self.hub.clone(),
                id,
                self.relay,
            )?;
            self.open.insert(id, community);
        }
        self.open.get_mut(&id).ok_or(Error::UnknownCommunity)
    }

    /// Applies a bundle from another device. A bundle of a community this
    /// device does not hold yet must carry its genesis op; the community is
    /// then added (as a non-member until it joins or is admitted).
    pub fn receive(&mut self, bundle: &Bundle, now: Timestamp) -> Result<Report> {
        self.receive_prepared(bundle, Prepared::default(), now)
    }

    /// [`Karmyq::receive`], with the bundle's changes decoded and their
    /// signatures checked ahead by [`Prepared::new`] (on another thread):
    /// the same verdicts, less work here.
    pub fn receive_prepared(
        &mut self,
        bundle: &Bundle,
        prepared: Prepared,
        now: Timestamp,
    ) -> Result<Report> {
        let id = bundle.community;
        let new = self.community(id).is_err();
        if new {
            let genesis = bundle
                .ops
                .iter()
                .filter_map(|b| SignedOp::decode(b).ok())
                .find(|op| op.hash().as_bytes() == id.as_bytes())
                .ok_or(Error::UnknownCommunity)?;
            self.found(genesis, now)?;
        }
        let community = self.community(id)?;
        if new {
            community.catch_up_quietly();
        }
        let named = community.authority().name.clone();
        let report = community.apply_prepared(bundle, prepared, now)?;
        let name = community.authority().name.clone();
        // The account file's list changes only with a new community or a
        // new name: no second commit for every bundle.
        if new || name != named {
            self.remember(id, &name, now)?;
        }
        if !self.relay {
            // A relay's member is a party to no request.
            self.reconcile_received(id, &report, now)?;
        }
        Ok(report)
    }

    /// A member's karma across every community on this device, at `now`.
    pub fn total_karma(&mut self, member: &MemberId, now: Timestamp) -> Result<f64> {
        let mut total = 0.0;
        for summary in self.communities()? {
            total += self.community(summary.id)?.karma(member, now)?;
        }
        Ok(total)
    }

    /// A member's badges in a community; `bridge_builder` looks at every
    /// community on this device.
    pub fn badges(
        &mut self,
        member: &MemberId,
        community: CommunityId,
        now: Timestamp,
    ) -> Result<Vec<Badge>> {
        let mut matches = Vec::new();
        for summary in self.communities()? {
            matches.extend(self.community(summary.id)?.completed_matches(member)?);
        }
        Ok(badges(member, &community, &matches, &[], now))
    }

    /// Registers a listener for every event of every community on this
    /// device (and the notifications derived from them) until the returned
    /// subscription is dropped.
    pub fn subscribe(&self, listener: Arc<dyn Listener>) -> Subscription {
        self.hub.subscribe(listener)
    }

    /// Notifications, newest first (`unread_only` to skip read ones).
    pub fn notifications(
        &self,
        unread_only: bool,
        limit: u32,
        offset: u32,
    ) -> Result<Vec<Notification>> {
        if !(1..=100).contains(&limit) {
            return Err(Error::InvalidArgument("limit must be 1-100".into()));
        }
        notify::list(&self.hub.account(), unread_only, limit, offset)
    }

    /// Marks one notification read, or all of them with `None`.
    pub fn mark_read(&self, id: Option<i64>) -> Result<()> {
        notify::mark_read(&mut self.hub.account(), id)
    }

    /// Turns one kind of notification on or off in one community.
    pub fn set_notification_preference(
        &self,
        community: CommunityId,
        kind: NotificationKind,
        enabled: bool,
    ) -> Result<()> {
        notify::set_preference(&mut self.hub.account(), community, kind, enabled)
    }

    /// Sets quiet hours (UTC minutes of the day; `None` for none):
    /// notifications made then are stored as silent.
    pub fn set_quiet_hours(&self, hours: Option<QuietHours>) -> Result<()> {
        notify::set_quiet_hours(&mut self.hub.account(), hours)
    }

    /// A page of this member's feed across every community on this device:
    /// open requests and recent completions, ranked by DOMAIN.md's score.
    pub fn feed(
        &mut self,
        now: Timestamp,
        page: usize,
        per_page: usize,
    ) -> Result<Vec<RankedItem>> {
        let me = self.member_id();
        let mut items = Vec::new();
        let mut skills = Vec::new();
        let blocks: BlockList = self.hub.blocked()?.into_iter().map(|b| (me, b)).collect();
        for summary in self.communities()? {
            let c = self.community(summary.id)?;
            if c.my_role().is_none() {
                continue;
            }
            items.extend(c.feed_items(now)?);
            if let Some(p) = c.profile(&me)? {
                skills.extend(p.skills);
            }
        }
        skills.sort();
        skills.dedup();
        let viewer = Viewer { member: me, skills };
        // Trust is computed only for requesters whose items can reach the
        // page, once each per community.
        let mut trust: HashMap<(CommunityId, MemberId), u8> = HashMap::new();
        rank_feed_with(&viewer, &items, &blocks, now, page, per_page, |item| {
            let key = (item.community, item.id.requester);
            if let Some(t) = trust.get(&key) {
                return Ok(*t);
            }
            let t = self
                .community(item.community)?
                .trust(&item.id.requester, now)
                .map_or(0, |t| t.score);
            trust.insert(key, t);
            Ok(t)
        })
    }

    /// Sends the match reminders due at `now` in every community (once per
    /// match); returns how many. Call it when the app wakes.
    pub fn send_due_reminders(&mut self, now: Timestamp) -> Result<usize> {
        let mut sent = 0;
        for summary in self.communities()? {
            sent += self.community(summary.id)?.send_due_reminders(now)?;
        }
        Ok(sent)
    }

    /// Blocks a member: private to this device, it stops offers between the
    /// two here, hides their offers and notifications, and filters
    /// suggestions and the feed.
    pub fn block(&self, member: &MemberId, now: Timestamp) -> Result<()> {
        self.hub.set_blocked(member, true, now)
    }

    /// Lifts a block.
    pub fn unblock(&self, member: &MemberId, now: Timestamp) -> Result<()> {
        self.hub.set_blocked(member, false, now)
    }

    /// Everyone this device's member blocked.
    pub fn blocked(&self) -> Result<Vec<MemberId>> {
        self.hub.blocked()
    }

    /// Joins a community with an invite link, once its log is on this device.
    pub fn join_with_invite(&mut self, link: &str, now: Timestamp) -> Result<()> {
        let token = InviteToken::parse(link)?;
        let community = self.community(token.community()).map_err(|_| {
            Error::Rejected(Rejection::InviteInvalid("community not on this device"))
        })?;
        community.join_with_invite(&token, now)?;
        Ok(())
    }
}
