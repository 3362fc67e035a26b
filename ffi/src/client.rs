//! [`KarmyqClient`]: one device's client, its clock, and the calls about
//! identity, communities, membership, profiles, norms, notifications and
//! moderation. Requests, messaging and sync add their calls in their own
//! modules.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use karmyq_core as core;
use karmyq_core::sync::SyncEngine;
use karmyq_core::{
    Bundle, Community, CommunityId, Heads, InviteToken, Karmyq, MemberId, ProposalId,
    ReportCategory, ReportId, Resolution, Role, Timestamp, Visibility,
};

use crate::error::{ApiError, ApiResult};
use crate::listener::{Fanout, KarmyqListener, ListenerHandle, Notification, NotificationKind};
use crate::types::{
    Badge, CommunityInfo, ProposalView, ReceiveReport, RejectedChange, ReportTarget, ReportView,
    count,
};

/// No pinned time: the clock reads the system's.
const SYSTEM_CLOCK: i64 = i64::MIN;

/// One device's Karmyq: its identity, its communities, its sync.
///
/// Every call is synchronous and quick (local SQLite); none waits for the
/// network. Sync runs on threads the client owns.
#[derive(uniffi::Object)]
pub struct KarmyqClient {
    /// `None` once closed. The engines share the client, hence the `Arc`.
    inner: Mutex<Option<Arc<Mutex<Karmyq>>>>,
    me: MemberId,
    clock: AtomicI64,
    pub(crate) engines: Mutex<HashMap<CommunityId, SyncEngine>>,
    pub(crate) fanout: Arc<Fanout>,
}

impl std::fmt::Debug for KarmyqClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KarmyqClient")
            .field("me", &self.me)
            .finish_non_exhaustive()
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl KarmyqClient {
    fn new(k: Karmyq) -> Arc<Self> {
        Arc::new(KarmyqClient {
            me: k.member_id(),
            inner: Mutex::new(Some(Arc::new(Mutex::new(k)))),
            clock: AtomicI64::new(SYSTEM_CLOCK),
            engines: Mutex::new(HashMap::new()),
            fanout: Arc::new(Fanout::default()),
        })
    }

    /// The shared client, unless closed.
    pub(crate) fn shared(&self) -> ApiResult<Arc<Mutex<Karmyq>>> {
        lock(&self.inner).clone().ok_or_else(ApiError::closed)
    }

    /// Runs `f` on the client at the client's time.
    pub(crate) fn with<T>(
        &self,
        f: impl FnOnce(&mut Karmyq, Timestamp) -> core::Result<T>,
    ) -> ApiResult<T> {
        let shared = self.shared()?;
        let mut k = lock(&shared);
        Ok(f(&mut k, self.time())?)
    }

    /// Runs a read `f` on one community.
    pub(crate) fn read<T>(
        &self,
        community: CommunityId,
        f: impl FnOnce(&mut Community, Timestamp) -> core::Result<T>,
    ) -> ApiResult<T> {
        self.with(|k, now| f(k.community(community)?, now))
    }

    /// Runs a write `f` on one community, then tells its sync (if running)
    /// to upload at once.
    pub(crate) fn write<T>(
        &self,
        community: CommunityId,
        f: impl FnOnce(&mut Community, Timestamp) -> core::Result<T>,
    ) -> ApiResult<T> {
        let out = self.read(community, f)?;
        self.nudge(community);
        Ok(out)
    }

    /// A write through the client that may touch several communities
    /// (cross-posting, and the reconciliation of a cross-posted match's
    /// copies that core runs after it): every running sync is told, which
    /// costs a channel send each and saves finding out which were touched.
    pub(crate) fn write_across<T>(
        &self,
        f: impl FnOnce(&mut Karmyq, Timestamp) -> core::Result<T>,
    ) -> ApiResult<T> {
        let out = self.with(f)?;
        for engine in lock(&self.engines).values() {
            engine.nudge();
        }
        Ok(out)
    }

    fn nudge(&self, community: CommunityId) {
        if let Some(engine) = lock(&self.engines).get(&community) {
            engine.nudge();
        }
    }

    pub(crate) fn time(&self) -> Timestamp {
        match self.clock.load(Ordering::Relaxed) {
            SYSTEM_CLOCK => Timestamp::now(),
            pinned => Timestamp::from_millis(pinned),
        }
    }
}

#[uniffi::export]
impl KarmyqClient {
    /// Opens (or creates) the client whose data lives in `data_dir`, with
    /// a new identity the first time.
    #[uniffi::constructor]
    pub fn open(data_dir: String) -> ApiResult<Arc<Self>> {
        Ok(Self::new(Karmyq::open(data_dir)?))
    }

    /// Creates a client in an empty `data_dir` from a secret backup made
    /// by [`KarmyqClient::export_secret`].
    #[uniffi::constructor]
    pub fn restore(data_dir: String, secret: String) -> ApiResult<Arc<Self>> {
        Ok(Self::new(Karmyq::restore(data_dir, &secret)?))
    }

    /// Stops every sync and releases the data directory. Every later call
    /// fails with `Closed`.
    pub fn close(&self) {
        let engines: Vec<SyncEngine> = lock(&self.engines).drain().map(|(_, e)| e).collect();
        for engine in engines {
            engine.stop();
        }
        lock(&self.inner).take();
    }

    /// This device's member id.
    pub fn member_id(&self) -> MemberId {
        self.me
    }

    /// The secret key as text, to back up; keep it secret.
    pub fn export_secret(&self) -> ApiResult<String> {
        self.with(|k, _| Ok(k.export_secret().to_string()))
    }

    /// The time the client uses, in milliseconds since the Unix epoch.
    pub fn now(&self) -> Timestamp {
        self.time()
    }

    /// Pins the client's clock to `now` (for tests and demos), or gives it
    /// back to the system with `None`.
    pub fn set_clock(&self, now: Option<Timestamp>) {
        let ms = now.map_or(SYSTEM_CLOCK, |t| t.as_millis().max(SYSTEM_CLOCK + 1));
        self.clock.store(ms, Ordering::Relaxed);
    }

    /// Registers `listener` for every event on this device (domain events,
    /// notifications, sync statuses) until the handle is dropped.
    pub fn subscribe(&self, listener: Box<dyn KarmyqListener>) -> ApiResult<Arc<ListenerHandle>> {
        let shared = self.shared()?;
        let k = lock(&shared);
        Ok(
            ListenerHandle::start(listener, |l| k.subscribe(l), self.fanout.clone())
                .map_err(core::Error::from)?,
        )
    }

    // --- Communities and membership ---

    /// Founds a community with this member as its admin.
    pub fn create_community(
        &self,
        name: String,
        description: String,
        visibility: Visibility,
    ) -> ApiResult<CommunityId> {
        self.with(|k, now| k.create_community(&name, &description, visibility, now))
    }

    /// The communities on this device.
    pub fn communities(&self) -> ApiResult<Vec<core::CommunitySummary>> {
        self.with(|k, _| k.communities())
    }

    /// One community as this device holds it.
    pub fn community_info(&self, community: CommunityId) -> ApiResult<CommunityInfo> {
        self.read(community, |c, _| {
            let info = c.info()?;
            Ok(CommunityInfo {
                id: info.id,
                name: info.name,
                description: info.description,
                visibility: info.visibility,
                settings: info.settings,
                member_count: count(info.member_count),
                my_role: c.my_role(),
            })
        })
    }

    /// Everything this device holds of a community that any member may
    /// read (never conversations), as bytes for another device's
    /// [`KarmyqClient::receive`]: how a newcomer gets a community to join.
    pub fn export_community(&self, community: CommunityId) -> ApiResult<Vec<u8>> {
        self.read(community, |c, _| {
            Ok(c.changes_since(&Heads::empty())?.encode())
        })
    }

    /// Validates and stores what another device exported. Refused changes
    /// are reported, not raised; bytes that are not a bundle are an error.
    pub fn receive(&self, bundle: Vec<u8>) -> ApiResult<ReceiveReport> {
        let bundle = Bundle::decode(&bundle)?;
        let report = self.write_across(|k, now| k.receive(&bundle, now))?;
        Ok(ReceiveReport {
            community: bundle.community,
            accepted: count(report.accepted.len()),
            rejected: report
                .rejected
                .iter()
                .map(|(_, r)| RejectedChange {
                    code: r.code().to_owned(),
                    message: r.to_string(),
                })
                .collect(),
            pending: count(report.pending.len()),
            duplicates: count(report.duplicates),
        })
    }

    /// Joins a public community held on this device.
    pub fn join(&self, community: CommunityId) -> ApiResult<()> {
        self.write(community, |c, now| c.join(now).map(drop))
    }

    /// Joins with an invite link; the community must be on this device.
    pub fn join_with_invite(&self, link: String) -> ApiResult<()> {
        let token = invite(&link)?;
        self.write(token.community(), |c, now| {
            c.join_with_invite(&token, now).map(drop)
        })
    }

    /// Leaves a community.
    pub fn leave(&self, community: CommunityId) -> ApiResult<()> {
        self.write(community, |c, now| c.leave(now).map(drop))
    }

    /// Admits a member (admins and moderators).
    pub fn admit(&self, community: CommunityId, member: MemberId, role: Role) -> ApiResult<()> {
        self.write(community, |c, now| c.admit(member, role, now).map(drop))
    }

    /// Changes a member's role (admins).
    pub fn set_role(&self, community: CommunityId, member: MemberId, role: Role) -> ApiResult<()> {
        self.write(community, |c, now| c.set_role(member, role, now).map(drop))
    }

    /// Removes a member (admins and moderators).
    pub fn remove_member(
        &self,
        community: CommunityId,
        member: MemberId,
        reason: String,
    ) -> ApiResult<()> {
        self.write(community, |c, now| c.remove(member, &reason, now).map(drop))
    }

    /// The current members, with their profiles.
    pub fn members(&self, community: CommunityId) -> ApiResult<Vec<core::MemberView>> {
        self.read(community, |c, _| c.members())
    }

    /// Creates an invite link (admins), valid until `expires_at` for
    /// `max_uses` joins. Share it privately: it is the key to join.
    pub fn create_invite(
        &self,
        community: CommunityId,
        expires_at: Timestamp,
        max_uses: u32,
    ) -> ApiResult<String> {
        self.write(community, |c, now| {
            Ok(c.create_invite(expires_at, max_uses, now)?
                .to_link()
                .to_string())
        })
    }

    /// Revokes an invite link (admins).
    pub fn revoke_invite(&self, link: String) -> ApiResult<()> {
        let token = invite(&link)?;
        self.write(token.community(), |c, now| {
            c.revoke_invite(token.key(), now).map(drop)
        })
    }

    /// Changes name, visibility or settings (admins).
    pub fn update_settings(
        &self,
        community: CommunityId,
        patch: core::SettingsPatch,
    ) -> ApiResult<()> {
        self.write(community, |c, now| c.update_settings(patch, now).map(drop))
    }

    /// Sets the community's description (admins).
    pub fn set_description(&self, community: CommunityId, text: String) -> ApiResult<()> {
        self.write(community, |c, now| c.set_description(&text, now))
    }

    // --- Profiles ---

    /// Sets this member's profile in a community.
    pub fn set_profile(&self, community: CommunityId, profile: core::Profile) -> ApiResult<()> {
        self.write(community, |c, now| c.set_profile(&profile, now))
    }

    /// A member's profile, if they wrote one.
    pub fn profile(
        &self,
        community: CommunityId,
        member: MemberId,
    ) -> ApiResult<Option<core::Profile>> {
        self.read(community, |c, _| c.profile(&member))
    }

    // --- Norms ---

    /// The community's norms.
    pub fn norms(&self, community: CommunityId) -> ApiResult<Vec<core::Norm>> {
        self.read(community, |c, _| c.norms())
    }

    /// Adds a norm (admins); returns its id.
    pub fn add_norm(
        &self,
        community: CommunityId,
        title: String,
        description: String,
        category: String,
    ) -> ApiResult<String> {
        self.write(community, |c, now| {
            c.add_norm(&title, &description, &category, now)
        })
    }

    /// Rewrites a norm (admins).
    pub fn update_norm(&self, community: CommunityId, norm: core::Norm) -> ApiResult<()> {
        self.write(community, |c, now| c.update_norm(&norm, now))
    }

    /// Removes a norm (admins).
    pub fn remove_norm(&self, community: CommunityId, id: String) -> ApiResult<()> {
        self.write(community, |c, now| c.remove_norm(&id, now))
    }

    /// Proposes a norm (any member).
    pub fn propose_norm(
        &self,
        community: CommunityId,
        title: String,
        description: String,
        category: String,
    ) -> ApiResult<ProposalId> {
        self.write(community, |c, now| {
            c.propose_norm(&title, &description, &category, now)
        })
    }

    /// Approves a proposal, or takes an approval back.
    pub fn approve_proposal(
        &self,
        community: CommunityId,
        proposal: ProposalId,
        approve: bool,
    ) -> ApiResult<()> {
        self.write(community, |c, now| {
            c.approve_proposal(proposal, approve, now)
        })
    }

    /// The proposals and how far each is from adoption.
    pub fn proposals(&self, community: CommunityId) -> ApiResult<Vec<ProposalView>> {
        let list = self.read(community, |c, _| c.proposals())?;
        Ok(list.into_iter().map(ProposalView::from).collect())
    }

    // --- Notifications ---

    /// This member's notifications, newest first.
    pub fn notifications(
        &self,
        unread_only: bool,
        limit: u32,
        offset: u32,
    ) -> ApiResult<Vec<Notification>> {
        let list = self.with(|k, _| k.notifications(unread_only, limit, offset))?;
        Ok(list.into_iter().filter_map(Notification::of).collect())
    }

    /// Marks one notification read, or all with `None`.
    pub fn mark_notifications_read(&self, id: Option<i64>) -> ApiResult<()> {
        self.with(|k, _| k.mark_read(id))
    }

    /// Turns one kind of notification on or off for a community.
    pub fn set_notification_preference(
        &self,
        community: CommunityId,
        kind: NotificationKind,
        enabled: bool,
    ) -> ApiResult<()> {
        self.with(|k, _| k.set_notification_preference(community, kind.into(), enabled))
    }

    /// Sets quiet hours (UTC minutes of the day), or none.
    pub fn set_quiet_hours(&self, hours: Option<core::QuietHours>) -> ApiResult<()> {
        self.with(|k, _| k.set_quiet_hours(hours))
    }

    /// Sends the reminders due for matches waiting 3 days; returns how many.
    pub fn send_due_reminders(&self) -> ApiResult<u32> {
        self.with(|k, now| k.send_due_reminders(now)).map(count)
    }

    // --- Moderation ---

    /// Files a report.
    pub fn file_report(
        &self,
        community: CommunityId,
        target: ReportTarget,
        category: ReportCategory,
        text: String,
    ) -> ApiResult<ReportId> {
        self.write(community, |c, now| {
            c.file_report(target.into(), category, &text, now)
        })
    }

    /// Resolves a report (moderators).
    pub fn resolve_report(
        &self,
        community: CommunityId,
        report: ReportId,
        resolution: Resolution,
    ) -> ApiResult<()> {
        self.write(community, |c, now| {
            c.resolve_report(report, resolution, now)
        })
    }

    /// The reports this member may read: their own, or all for moderators.
    pub fn reports(
        &self,
        community: CommunityId,
        unresolved_only: bool,
    ) -> ApiResult<Vec<ReportView>> {
        let list = self.read(community, |c, _| c.reports(unresolved_only))?;
        Ok(list.into_iter().map(ReportView::from).collect())
    }

    /// Blocks a member: private to this device; hides their messages and
    /// refuses offers and messages between the two.
    pub fn block(&self, member: MemberId) -> ApiResult<()> {
        self.with(|k, now| k.block(&member, now))
    }

    /// Unblocks a member.
    pub fn unblock(&self, member: MemberId) -> ApiResult<()> {
        self.with(|k, now| k.unblock(&member, now))
    }

    /// The members this device's member blocked.
    pub fn blocked(&self) -> ApiResult<Vec<MemberId>> {
        self.with(|k, _| k.blocked())
    }

    /// A member's badges in a community.
    pub fn badges(&self, community: CommunityId, member: MemberId) -> ApiResult<Vec<Badge>> {
        let list = self.with(|k, now| k.badges(&member, community, now))?;
        Ok(list.into_iter().filter_map(Badge::of).collect())
    }
}

fn invite(link: &str) -> ApiResult<InviteToken> {
    InviteToken::parse(link).map_err(|e| ApiError::invalid("invalid_invite", e.to_string()))
}
