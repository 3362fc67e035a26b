//! One community on this device: its authority log, its content documents
//! and its SQLite file, behind one handle.
//!
//! Every write, local or from another device, goes through the same path:
//! authenticate, authorize with the shared validator, then store the change
//! and move the projections in one SQLite transaction. In-memory state (the
//! resolved log, loaded documents) is a cache of the file: when a write
//! fails it is dropped and read again, so memory never runs ahead of disk.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use automerge::transaction::{CommitOptions, Transaction as DocTx};
use automerge::{ROOT, ReadDoc};
use rusqlite::{OptionalExtension, params};

use crate::authority::{
    AuthorityLog, CommunityId, Inserted, InviteKey, InviteProof, Op, OpBody, OpHash, Resolved,
    Role, Settings, SettingsPatch, SignedOp, Visibility,
};
use crate::bundle::{Bundle, Heads, Item, Report};
use crate::docs::{Ahead, DocId, Link, SignedChange, actor_of, auth_message};
use crate::error::{Error, Rejection, Result};
use crate::identity::{Keypair, MemberId};
use crate::invite::InviteToken;
use crate::karma::KarmaReason;
use crate::norms::{self, Norm, Proposal, ProposalId};
use crate::notify::{Event, Hub};
use crate::profile::Profile;
use crate::request::RequestId;
use crate::store::{Db, schema};
use crate::time::Timestamp;

mod batch;
mod discover;
mod figures;
mod messages;
mod persist;
mod projection;
mod reports;
mod requests;
mod since;

pub use messages::{ConversationView, MessageView};
pub use requests::{
    MatchSummary, OfferSummary, RequestQuery, RequestSort, RequestSummary, RequestView,
};

pub use batch::Prepared;
use batch::{Batch, Judge, item_of, stored};
use persist::{
    Loaded, apply_guarded, load_doc, load_doc_tx, load_heads, load_log, load_pending,
    load_previous, save_heads, save_previous, save_snapshot, store_change, store_op,
};
pub(crate) use projection::member_from_blob;
use projection::{
    Touched, profile_row, profile_row_at, project_all_docs, project_community, project_doc,
    project_members, project_request_state,
};
pub use since::Page;

/// A new request scoring at least this for this device's member is
/// suggested to them (DOMAIN.md, `new_request_for_you`).
const SUGGEST_TO_ME: f64 = 60.0;

/// Most request documents kept loaded between operations.
const MAX_LOADED_REQUESTS: usize = 256;

/// Write a snapshot of a document after this many changes since the last.
pub const DEFAULT_COMPACT_EVERY: u32 = 256;

/// A member as listed: role and profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberView {
    /// The member.
    pub id: MemberId,
    /// Their role.
    pub role: Role,
    /// When they were admitted.
    pub admitted_at: Timestamp,
    /// Their profile, if they wrote one.
    pub profile: Option<Profile>,
}

/// A proposed norm as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProposalView {
    /// The proposal.
    pub id: ProposalId,
    /// Its title.
    pub title: String,
    /// Approvals among the current members (the proposer counts).
    pub approvals: usize,
    /// Approvals needed: half of the members, rounded up.
    pub needed: usize,
    /// Whether it is one of the norms now.
    pub active: bool,
}

/// Name, description, visibility and settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommunityInfo {
    /// The community.
    pub id: CommunityId,
    /// Its name.
    pub name: String,
    /// The description (the document's, else the one given at founding).
    pub description: String,
    /// Public or private.
    pub visibility: Visibility,
    /// Its settings.
    pub settings: Settings,
    /// How many members.
    pub member_count: usize,
}

/// One community's replica on this device.
pub struct Community {
    id: CommunityId,
    db: Db,
    keys: Arc<Keypair>,
    hub: Arc<Hub>,
    /// Events of the operation under way, dispatched once it committed.
    outbox: Vec<Event>,
    /// The next dispatch is a first catch-up: no notifications.
    catching_up: bool,
    log: AuthorityLog,
    auth: Resolved,
    docs: HashMap<DocId, Loaded>,
    /// The log resolved at earlier heads, for judging changes that cite
    /// them. A cut's past never changes, so entries never go stale.
    at_cache: HashMap<Vec<OpHash>, Resolved>,
    compact_every: u32,
    /// Members' completed matches and karma events, derived from the file
    /// as of one generation of it.
    figures: figures::FiguresCache,
    /// Conversation keys derived so far (each costs an X25519 product).
    conversation_keys: HashMap<crate::conversation::ConversationId, crate::crypto::ConversationKey>,
    /// A relay's replica ([`crate::Karmyq::open_relay`]): validated and
    /// stored as on a device, but with no projections beyond the community
    /// document's and no events.
    relay: bool,
}

impl std::fmt::Debug for Community {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Community")
            .field("id", &self.id)
            .field("ops", &self.log.len())
            .finish_non_exhaustive()
    }
}

impl Community {
    /// Founds a community in a new file at `path`.
    pub(crate) fn create(
        path: &Path,
        keys: Arc<Keypair>,
        hub: Arc<Hub>,
        genesis: SignedOp,
        relay: bool,
    ) -> Result<Self> {
        let log = AuthorityLog::new(genesis.clone())?;
        let id = log.community_id();
        let mut db = Db::open(path, &schema::COMMUNITY)?;
        db.write(|tx| {
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('community_id', ?1)",
                [id.as_bytes().as_slice()],
            )?;
            store_op(tx, &genesis.hash(), &genesis)?;
            Ok(())
        })?;
        let mut community = Self::from_parts(id, db, keys, hub, log, relay)?;
        // Founding (here or received) is no news to anyone.
        community.catch_up_quietly();
        community.dispatch(genesis.op.created_at)?;
        Ok(community)
    }

    /// Opens the file of a known community.
    pub(crate) fn open(
        path: &Path,
        keys: Arc<Keypair>,
        hub: Arc<Hub>,
        id: CommunityId,
        relay: bool,
    ) -> Result<Self> {
        let db = Db::open(path, &schema::COMMUNITY)?;
        let log = load_log(&db, id)?;
        let mut community = Self::from_parts(id, db, keys, hub, log, relay)?;
        // Opening changes nothing that happened: no events.
        community.outbox.clear();
        let rebuild: bool = community
            .db
            .conn()
            .query_row(
                "SELECT 1 FROM meta WHERE key = 'rebuild_projections'",
                [],
                |_| Ok(true),
            )
            .optional()?
            .unwrap_or(false);
        // A relay keeps the flag: the device that opens its file next rebuilds.
        if rebuild && !relay {
            community.rebuild_projections()?;
        }
        Ok(community)
    }

    fn from_parts(
        id: CommunityId,
        db: Db,
        keys: Arc<Keypair>,
        hub: Arc<Hub>,
        log: AuthorityLog,
        relay: bool,
    ) -> Result<Self> {
        let auth = log.resolve();
        let mut community = Community {
            id,
            db,
            keys,
            hub,
            outbox: Vec::new(),
            catching_up: false,
            log,
            auth,
            docs: HashMap::new(),
            at_cache: HashMap::new(),
            compact_every: DEFAULT_COMPACT_EVERY,
            figures: figures::FiguresCache::default(),
            conversation_keys: HashMap::new(),
            relay,
        };
        let Community {
            auth, db, outbox, ..
        } = &mut community;
        if relay {
            // A relay's file lacks projections: should a device ever open
            // it, it rebuilds them first.
            db.write(|tx| {
                tx.execute(
                    "INSERT INTO meta (key, value) VALUES ('rebuild_projections', x'01')
                     ON CONFLICT (key) DO NOTHING",
                    [],
                )?;
                Ok(())
            })?;
        } else {
            db.write(|tx| project_members(tx, auth, outbox))?;
        }
        Ok(community)
    }

    /// Keeps memory bounded: past `MAX_LOADED_REQUESTS` loaded request
    /// documents, the longest loaded leave memory (they load again from
    /// their snapshot and changes when next needed). Called only between
    /// operations, never while a batch holds documents.
    fn trim_cache(&mut self) {
        let mut evictable: Vec<(u64, DocId)> = self
            .docs
            .iter()
            .filter(|(d, _)| {
                matches!(
                    d,
                    DocId::Request(_) | DocId::Report(_) | DocId::Conversation(_)
                )
            })
            .map(|(d, l)| (l.loaded, d.clone()))
            .collect();
        let excess = evictable.len().saturating_sub(MAX_LOADED_REQUESTS);
        if excess == 0 {
            return;
        }
        evictable.select_nth_unstable_by_key(excess - 1, |(loaded, _)| *loaded);
        for (_, doc) in &evictable[..excess] {
            self.docs.remove(doc);
        }
    }

    /// Drops every cache and reads the file again.
    fn reload(&mut self) -> Result<()> {
        self.docs.clear();
        self.log = load_log(&self.db, self.id)?;
        self.auth = self.log.resolve();
        Ok(())
    }

    /// The community's id.
    pub fn id(&self) -> CommunityId {
        self.id
    }

    /// The resolved authority state.
    pub fn authority(&self) -> &Resolved {
        &self.auth
    }

    /// Sets how many changes to a document trigger a new snapshot.
    pub fn set_compact_every(&mut self, changes: u32) {
        self.compact_every = changes.max(1);
    }

    /// Name, description, visibility, settings, member count.
    pub fn info(&self) -> Result<CommunityInfo> {
        let doc_description: Option<String> = self
            .db
            .conn()
            .query_row(
                "SELECT value FROM meta WHERE key = 'description'",
                [],
                |r| r.get::<_, String>(0),
            )
            .optional()?;
        Ok(CommunityInfo {
            id: self.id,
            name: self.auth.name.clone(),
            description: doc_description.unwrap_or_else(|| self.auth.description.clone()),
            visibility: self.auth.visibility,
            settings: self.auth.settings,
            member_count: self.auth.members.len(),
        })
    }

    /// This device's member id.
    pub fn me(&self) -> MemberId {
        self.keys.member_id()
    }

    /// This device's role, if a member.
    pub fn my_role(&self) -> Option<Role> {
        self.auth.role(&self.me())
    }

    // ----- membership ---------------------------------------------------

    /// Joins a public community.
    pub fn join(&mut self, now: Timestamp) -> Result<OpHash> {
        self.author_op(OpBody::Join { invite: None }, now)
    }

    /// Joins with an invite token.
    pub fn join_with_invite(&mut self, token: &InviteToken, now: Timestamp) -> Result<OpHash> {
        if token.community() != self.id {
            return Err(Rejection::WrongCommunity.into());
        }
        let proof = InviteProof::new(&token.keypair(), self.id, self.me());
        self.author_op(
            OpBody::Join {
                invite: Some(proof),
            },
            now,
        )
    }

    /// Admits a member (admins: any role; moderators: members only).
    pub fn admit(&mut self, member: MemberId, role: Role, now: Timestamp) -> Result<OpHash> {
        self.author_op(OpBody::Admit { member, role }, now)
    }

    /// Changes a member's role (admins).
    pub fn set_role(&mut self, member: MemberId, role: Role, now: Timestamp) -> Result<OpHash> {
        self.author_op(OpBody::SetRole { member, role }, now)
    }

    /// Removes a member (admins, and moderators for plain members).
    pub fn remove(&mut self, member: MemberId, reason: &str, now: Timestamp) -> Result<OpHash> {
        if reason.chars().count() > 500 {
            return Err(Error::InvalidArgument("reason too long".into()));
        }
        self.author_op(
            OpBody::Remove {
                member,
                reason: reason.to_owned(),
            },
            now,
        )
    }

    /// Leaves the community.
    pub fn leave(&mut self, now: Timestamp) -> Result<OpHash> {
        self.author_op(OpBody::Leave, now)
    }

    /// Creates an invite (admins); the token is what to share.
    pub fn create_invite(
        &mut self,
        expires_at: Timestamp,
        max_uses: u32,
        now: Timestamp,
    ) -> Result<InviteToken> {
        let token = InviteToken::generate(self.id)?;
        self.author_op(
            OpBody::CreateInvite {
                invite_key: token.key(),
                expires_at,
                max_uses,
            },
            now,
        )?;
        Ok(token)
    }

    /// Revokes an invite (admins).
    pub fn revoke_invite(&mut self, key: InviteKey, now: Timestamp) -> Result<OpHash> {
        self.author_op(OpBody::RevokeInvite { invite_key: key }, now)
    }

    /// Changes name, visibility or settings (admins).
    pub fn update_settings(&mut self, patch: SettingsPatch, now: Timestamp) -> Result<OpHash> {
        self.author_op(OpBody::UpdateSettings(patch), now)
    }

    /// Signs an op on the current heads, checks it resolves as effective
    /// (else the same typed reason another device would give), and stores it.
    fn author_op(&mut self, body: OpBody, now: Timestamp) -> Result<OpHash> {
        let op = Op {
            community: Some(self.id),
            parents: self.log.heads(),
            author: self.me(),
            created_at: now,
            body,
        };
        let signed = SignedOp::sign(op, &self.keys)?;
        let hash = signed.hash();
        let mut log = self.log.clone();
        log.insert(signed.clone())?;
        let auth = log.resolve();
        if let Some(Err(reason)) = auth.verdicts.get(&hash) {
            return Err(reason.clone().into());
        }
        let mut events = Vec::new();
        let actor = actor_of(&self.me());
        let Community { db, docs, .. } = self;
        let result = db.write(|tx| {
            store_op(tx, &hash, &signed)?;
            project_members(tx, &auth, &mut events)?;
            // Who is a member decides which proposals are active.
            let community = load_doc_tx(tx, docs, &DocId::Community, &actor)?;
            project_community(tx, &community.doc, &auth, &mut events)
        });
        if let Err(e) = result {
            self.docs.remove(&DocId::Community);
            return Err(e);
        }
        self.log = log;
        self.auth = auth;
        self.outbox = events;
        self.dispatch(now)?;
        Ok(hash)
    }

    // ----- content --------------------------------------------------------

    /// Sets this member's profile.
    pub fn set_profile(&mut self, profile: &Profile, now: Timestamp) -> Result<()> {
        profile.validate()?;
        let me = self.me();
        self.write_doc(DocId::Profiles, now, |tx| profile.write(tx, &me))
    }

    /// A member's profile.
    pub fn profile(&self, member: &MemberId) -> Result<Option<Profile>> {
        let mut stmt = self.db.conn().prepare_cached(
            "SELECT name, bio, location, availability, skills FROM profiles WHERE member_id = ?1",
        )?;
        Ok(stmt
            .query_row([member.as_bytes().as_slice()], profile_row)
            .optional()?)
    }

    /// Sets the community's description (admins and moderators).
    pub fn set_description(&mut self, text: &str, now: Timestamp) -> Result<()> {
        self.write_doc(DocId::Community, now, |tx| {
            norms::write_description(tx, text)
        })
    }

    /// Adds a norm (admins and moderators); returns its id.
    pub fn add_norm(
        &mut self,
        title: &str,
        description: &str,
        category: &str,
        now: Timestamp,
    ) -> Result<String> {
        let mut id = [0u8; 8];
        getrandom::getrandom(&mut id).map_err(|_| Error::Randomness)?;
        let norm = Norm {
            id: hex::encode(id),
            title: title.to_owned(),
            description: description.to_owned(),
            category: category.to_owned(),
        };
        self.update_norm(&norm, now)?;
        Ok(norm.id)
    }

    /// Adds or updates a norm (admins and moderators).
    pub fn update_norm(&mut self, norm: &Norm, now: Timestamp) -> Result<()> {
        norm.validate()?;
        self.write_doc(DocId::Community, now, |tx| norm.write(tx))
    }

    /// Removes a norm (admins and moderators).
    pub fn remove_norm(&mut self, id: &str, now: Timestamp) -> Result<()> {
        self.write_doc(DocId::Community, now, |tx| {
            if Norm::delete(tx, id)? {
                Ok(())
            } else {
                Err(Error::InvalidArgument("no such norm".into()))
            }
        })
    }

    /// Proposes a norm (any member): it becomes one of the norms once
    /// approvals reach half of the members, rounded up; the proposer counts.
    pub fn propose_norm(
        &mut self,
        title: &str,
        description: &str,
        category: &str,
        now: Timestamp,
    ) -> Result<ProposalId> {
        let id = ProposalId::generate(self.me())?;
        let norm = Norm {
            id: "proposal".into(),
            title: title.to_owned(),
            description: description.to_owned(),
            category: category.to_owned(),
        };
        norm.validate()?;
        self.write_doc(DocId::Community, now, |tx| {
            norms::write_proposal(tx, &id, &norm)
        })?;
        Ok(id)
    }

    /// Approves a proposal, or takes the approval back.
    pub fn approve_proposal(
        &mut self,
        id: ProposalId,
        approve: bool,
        now: Timestamp,
    ) -> Result<()> {
        let me = self.me();
        self.write_doc(DocId::Community, now, |tx| {
            norms::write_approval(tx, &id, &me, approve)
        })
    }

    /// Open proposals and their approvals among the current members, with
    /// how many they need; those already active are norms too.
    pub fn proposals(&self) -> Result<Vec<ProposalView>> {
        let needed = Proposal::needed(self.auth.members.len());
        let mut stmt = self.db.conn().prepare_cached(
            "SELECT proposal_id, title, approvals, active FROM proposals ORDER BY proposal_id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, bool>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, title, approvals, active) = row?;
            let id = ProposalId::parse_stored(&id)
                .ok_or_else(|| Error::Corrupt("proposal id".into()))?;
            out.push(ProposalView {
                id,
                title,
                approvals: usize::try_from(approvals).unwrap_or(0),
                needed,
                active,
            });
        }
        Ok(out)
    }

    /// The norms, by id.
    pub fn norms(&self) -> Result<Vec<Norm>> {
        let mut stmt = self.db.conn().prepare_cached(
            "SELECT norm_id, title, description, category FROM norms ORDER BY norm_id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(Norm {
                id: r.get(0)?,
                title: r.get(1)?,
                description: r.get(2)?,
                category: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Current members with roles and profiles, most senior first.
    pub fn members(&self) -> Result<Vec<MemberView>> {
        let mut stmt = self.db.conn().prepare_cached(
            "SELECT m.member_id, m.role, m.admitted_at,
                    p.name, p.bio, p.location, p.availability, p.skills
             FROM members m LEFT JOIN profiles p ON p.member_id = m.member_id
             ORDER BY m.seniority",
        )?;
        let rows = stmt.query_map([], |r| {
            let id: Vec<u8> = r.get(0)?;
            let role: String = r.get(1)?;
            let name: Option<String> = r.get(3)?;
            let profile = match name {
                Some(_) => Some(profile_row_at(r, 3)?),
                None => None,
            };
            Ok((id, role, r.get::<_, i64>(2)?, profile))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, role, admitted_at, profile) = row?;
            let id = member_from_blob(&id)?;
            let role = Role::parse(&role).ok_or_else(|| Error::Corrupt("role".into()))?;
            out.push(MemberView {
                id,
                role,
                admitted_at: Timestamp::from_millis(admitted_at),
                profile,
            });
        }
        Ok(out)
    }

    /// Makes a change to one document as this member, validates it with the
    /// shared validator, and stores it with its projection update.
    fn write_doc(
        &mut self,
        doc_id: DocId,
        now: Timestamp,
        edit: impl FnOnce(&mut DocTx<'_>) -> Result<()>,
    ) -> Result<()> {
        let me = self.me();
        if self.auth.role(&me).is_none() {
            return Err(Rejection::NotAMember(me).into());
        }
        self.trim_cache();
        let result = self.write_doc_inner(&doc_id, now, edit);
        if result.is_err() {
            // The in-memory document may hold the refused change: read it again.
            self.docs.remove(&doc_id);
            self.outbox.clear();
            return result;
        }
        self.dispatch(now)
    }

    /// Hands the committed operation's events to the hub, with the karma
    /// each completed match awarded.
    pub(crate) fn dispatch(&mut self, now: Timestamp) -> Result<()> {
        let mut events = std::mem::take(&mut self.outbox);
        if self.relay {
            // Nobody listens to a relay, and no event concerns its member.
            return Ok(());
        }
        // The karma each completed match awarded: one history per member.
        let mut awarded: BTreeMap<MemberId, Vec<String>> = BTreeMap::new();
        for e in &events {
            if let Event::MatchCompleted {
                offer,
                requester,
                helper,
                ..
            } = e
            {
                for member in [requester, helper] {
                    awarded.entry(*member).or_default().push(offer.to_string());
                }
            }
        }
        let me = self.me();
        // Messages: no event for one's own, nor from a member this device blocked.
        if events
            .iter()
            .any(|e| matches!(e, Event::MessageReceived { .. }))
        {
            let blocked = self.hub.blocked()?;
            events.retain(|e| {
                !matches!(e, Event::MessageReceived { message, .. }
                    if message.sender == me || blocked.contains(&message.sender))
            });
        }
        if let Some(offers) = awarded.get(&me) {
            events.extend(self.badges_earned(offers, now)?);
        }
        for (member, offers) in awarded {
            for entry in self.karma_history(&member, now)? {
                if offers.contains(&entry.event.match_id) {
                    events.push(Event::KarmaAwarded {
                        community: self.id,
                        member,
                        points: entry.event.points,
                        milestone: matches!(entry.event.reason, KarmaReason::Milestone(_)),
                    });
                }
            }
        }
        let created: Vec<RequestId> = events
            .iter()
            .filter_map(|e| match e {
                Event::RequestCreated { request, .. } if request.requester != self.me() => {
                    Some(*request)
                }
                _ => None,
            })
            .collect();
        for (request, score) in self.my_scores(&created)? {
            if score >= SUGGEST_TO_ME {
                events.push(Event::SuggestedForYou {
                    community: self.id,
                    request,
                    score,
                });
            }
        }
        // Moderators hear of reports others filed.
        let moderator = self.my_role() >= Some(Role::Moderator);
        for e in &mut events {
            if let Event::ReportFiled {
                report, notify_me, ..
            } = e
            {
                *notify_me = moderator && report.reporter != self.keys.member_id();
            }
        }
        let notify = !std::mem::take(&mut self.catching_up);
        self.hub.dispatch(
            events,
            self.auth.settings.notification_retention_days,
            now,
            notify,
        )
    }

    /// Marks the next operation as this device's first catch-up of a
    /// community it just received: its events notify nobody.
    pub(crate) fn catch_up_quietly(&mut self) {
        self.catching_up = true;
    }

    fn write_doc_inner(
        &mut self,
        doc_id: &DocId,
        now: Timestamp,
        edit: impl FnOnce(&mut DocTx<'_>) -> Result<()>,
    ) -> Result<()> {
        let Community {
            id,
            db,
            keys,
            log,
            auth,
            docs,
            compact_every,
            ..
        } = self;
        // The link to this device's latest change elsewhere: a change in
        // the same document already depends on it.
        let previous = load_previous(db)?
            .filter(|(doc, _)| doc != doc_id)
            .map(|(doc, hash)| Link::of(&doc, &hash));
        let loaded = load_doc(db, docs, doc_id, &actor_of(&keys.member_id()))?;
        let mut tx = loaded.doc.transaction();
        if let Err(e) = edit(&mut tx) {
            tx.rollback();
            return Err(e);
        }
        let options = CommitOptions::default()
            .with_message(auth_message(&log.heads(), previous))
            .with_time(now.as_millis());
        let (hash, _) = tx.commit_with(options);
        let Some(hash) = hash else {
            return Ok(());
        };
        let change = loaded
            .doc
            .get_change_by_hash(&hash)
            .ok_or_else(|| Error::Corrupt("committed change missing".into()))?;
        let signed = SignedChange::sign(*id, doc_id, &change, keys);
        // The signature was just made with our own key: decoding checks the
        // hash and the actor; the rules are judged as for any change (its
        // ops, made by our own transaction, hold).
        let authentic = signed.decode(*id)?;
        authentic.authorize_seen(auth, &loaded.doc, Ahead::OwnWrite)?;
        let mut touched = Touched::default();
        let Community { outbox, .. } = self;
        db.write(|tx| {
            store_change(tx, &authentic)?;
            if !doc_id.is_private() {
                save_previous(tx, doc_id, &hash)?;
            }
            save_heads(tx, doc_id, &loaded.doc.get_heads())?;
            loaded.since_snapshot += 1;
            touched.note(&authentic);
            project_doc(tx, doc_id, &loaded.doc, &touched, auth, outbox)?;
            // Snapshots belong to quiet moments (`compact`); this only keeps
            // a file that never gets one from growing without bound.
            if loaded.since_snapshot >= compact_every.saturating_mul(4) {
                save_snapshot(tx, doc_id, loaded)?;
            }
            Ok(())
        })
    }

    /// Writes a snapshot of every loaded document with changes since its
    /// last one, and checkpoints the write-ahead log: work for a quiet
    /// moment (app in the background, after a sync), kept off the write path.
    pub fn compact(&mut self) -> Result<()> {
        let Community { db, docs, .. } = self;
        db.write(|tx| {
            for (doc_id, loaded) in docs.iter_mut() {
                if loaded.since_snapshot > 0 {
                    save_snapshot(tx, doc_id, loaded)?;
                }
            }
            Ok(())
        })?;
        self.db.checkpoint()
    }

    // ----- exchange -------------------------------------------------------

    /// What this replica holds: authority heads and each document's heads.
    pub fn heads(&mut self) -> Result<Heads> {
        Ok(Heads {
            auth: self.log.heads(),
            docs: load_heads(&self.db)?.into_iter().collect(),
        })
    }

    /// Whether changes wait here for something they depend on: only then
    /// can a bundle of changes alone store more than it carries.
    pub fn has_pending(&self) -> Result<bool> {
        let held: bool =
            self.db
                .conn()
                .query_row("SELECT EXISTS (SELECT 1 FROM pending_changes)", [], |r| {
                    r.get(0)
                })?;
        Ok(held)
    }

    /// Applies a bundle from another replica: each op and change is stored
    /// only if valid (or parked if it waits for something), and the whole
    /// bundle is one SQLite transaction.
    pub fn apply(&mut self, bundle: &Bundle, now: Timestamp) -> Result<Report> {
        self.apply_prepared(bundle, Prepared::default(), now)
    }

    /// [`Community::apply`], with the bundle's changes decoded and their
    /// signatures checked ahead ([`Prepared::new`], on another thread).
    pub fn apply_prepared(
        &mut self,
        bundle: &Bundle,
        prepared: Prepared,
        now: Timestamp,
    ) -> Result<Report> {
        if bundle.community != self.id {
            return Err(Rejection::WrongCommunity.into());
        }
        let span = tracing::debug_span!("apply", community = %self.id.fmt_short());
        let _entered = span.enter();
        self.trim_cache();
        let result = self.apply_inner(bundle, prepared);
        match &result {
            Ok(report) => {
                for (item, reason) in &report.rejected {
                    tracing::debug!(?item, reason = reason.code(), "refused");
                }
                tracing::debug!(
                    accepted = report.accepted.len(),
                    rejected = report.rejected.len(),
                    pending = report.pending.len(),
                    "bundle applied"
                );
            }
            Err(error) => {
                tracing::warn!(%error, "bundle not applied; reloading from the file");
                self.outbox.clear();
                self.reload()?;
                return result;
            }
        }
        self.dispatch(now)?;
        result
    }

    fn apply_inner(&mut self, bundle: &Bundle, mut prepared: Prepared) -> Result<Report> {
        let mut report = Report::default();
        // Authority ops first, on a copy of the log until the file has them
        // (no copy for a bundle without ops: the common live change).
        let mut log = std::borrow::Cow::Borrowed(&self.log);
        let mut added: Vec<OpHash> = Vec::new();
        let mut parked: Vec<(OpHash, Vec<u8>)> = Vec::new();
        for bytes in &bundle.ops {
            let op = match SignedOp::decode(bytes) {
                Ok(op) => op,
                Err(_) => {
                    report.rejected.push((Item::Op(None), Rejection::Malformed));
                    continue;
                }
            };
            let hash = op.hash();
            match log.to_mut().insert(op) {
                Ok(Inserted::Added(hashes)) => added.extend(hashes),
                Ok(Inserted::Pending) => {
                    parked.push((hash, bytes.clone()));
                    report.pending.push(Item::Op(Some(hash)));
                }
                Ok(Inserted::Duplicate) => report.duplicates += 1,
                Err(reason) => report.rejected.push((Item::Op(Some(hash)), reason)),
            }
        }
        let resolved = (!added.is_empty()).then(|| log.resolve());
        let Community {
            id,
            db,
            keys,
            auth,
            docs,
            at_cache,
            compact_every,
            outbox,
            relay,
            ..
        } = self;
        let relay = *relay;
        let auth_now = resolved.as_ref().unwrap_or(auth);
        let mut judge = Judge {
            log: &log,
            now: auth_now,
            cache: at_cache,
        };
        let actor = actor_of(&keys.member_id());
        db.write(|tx| {
            for (hash, bytes) in &parked {
                tx.execute(
                    "INSERT OR IGNORE INTO auth_pending (hash, bytes) VALUES (?1, ?2)",
                    params![hash.as_bytes().as_slice(), bytes],
                )?;
            }
            for hash in &added {
                let op = log
                    .get(hash)
                    .ok_or_else(|| Error::Corrupt("added op missing".into()))?;
                store_op(tx, hash, op)?;
                tx.execute(
                    "DELETE FROM auth_pending WHERE hash = ?1",
                    [hash.as_bytes().as_slice()],
                )?;
                report.accepted.push(Item::Op(Some(*hash)));
            }
            if resolved.is_some() && !relay {
                project_members(tx, auth_now, outbox)?;
            }
            // This bundle's changes, then the ones that waited before it.
            let fresh = bundle.changes.len();
            let mut batch = Batch::for_device(!relay);
            let mut seen = HashSet::new();
            let pending = load_pending(tx)?;
            for (i, signed) in bundle.changes.iter().chain(&pending).enumerate() {
                let item = item_of(signed);
                if !seen.insert(signed.envelope.change_hash) || stored(tx, signed)? {
                    report.duplicates += usize::from(i < fresh);
                    continue;
                }
                if let Err(refused) = prepared.take_into(*id, signed, item, i < fresh, &mut batch) {
                    report.rejected.push(refused);
                }
            }
            prepared.take_docs(*id, &mut batch);
            batch.decide(tx, docs, &mut judge, &actor)?;
            let mut touched = Touched::default();
            tx.execute("DELETE FROM pending_changes", [])?;
            for (doc_id, changes) in batch.accepted_by_doc() {
                for (change, _) in &changes {
                    store_change(tx, change)?;
                }
                if let Some(replayed) = batch.replayed(&doc_id) {
                    // A new request whose history was replayed: the
                    // request its changes read as is projected (on a
                    // device), with no Automerge document.
                    save_heads(tx, &doc_id, &replayed.heads)?;
                    if let (DocId::Request(request), Some(state), false) =
                        (&doc_id, &replayed.state, relay)
                    {
                        project_request_state(tx, state, *request, *id, true, outbox)?;
                    }
                    continue;
                }
                let loaded = load_doc_tx(tx, docs, &doc_id, &actor)?;
                apply_guarded(
                    &mut loaded.doc,
                    changes
                        .iter()
                        .filter(|(_, applied)| !applied)
                        .map(|(c, _)| c.change.clone()),
                )?;
                for (change, _) in &changes {
                    if relay {
                        // Only the community document's projection: the
                        // description the directory shows.
                        touched.community |= change.doc == DocId::Community;
                    } else {
                        touched.note(change);
                    }
                }
                save_heads(tx, &doc_id, &loaded.doc.get_heads())?;
                loaded.since_snapshot += u32::try_from(changes.len()).unwrap_or(u32::MAX);
                if loaded.since_snapshot >= *compact_every {
                    save_snapshot(tx, &doc_id, loaded)?;
                }
            }
            batch.report(tx, &mut report)?;
            if resolved.is_some() {
                // Who is a member decides which proposals are active.
                load_doc_tx(tx, docs, &DocId::Community, &actor)?;
                touched.community = true;
            }
            project_all_docs(tx, docs, &touched, auth_now, outbox)
        })?;
        if let Some(resolved) = resolved {
            self.log = log.into_owned();
            self.auth = resolved;
        }
        Ok(report)
    }

    /// Rebuilds every projection from the log and the documents.
    pub fn rebuild_projections(&mut self) -> Result<()> {
        let actor = actor_of(&self.me());
        let names: Vec<String> = self
            .db
            .conn()
            .prepare("SELECT DISTINCT doc_id FROM changes ORDER BY doc_id")?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        let mut touched = Touched {
            community: true,
            ..Touched::default()
        };
        for name in &names {
            let doc_id =
                DocId::parse_stored(name).ok_or_else(|| Error::Corrupt("doc id".into()))?;
            let loaded = load_doc(&self.db, &mut self.docs, &doc_id, &actor)?;
            match doc_id {
                DocId::Profiles => {
                    for key in loaded.doc.keys(ROOT) {
                        if let Ok(member) = MemberId::from_hex(&key) {
                            touched.profiles.insert(member);
                        }
                    }
                }
                DocId::Request(id) => {
                    touched.requests.insert(id);
                }
                DocId::Report(id) => {
                    touched.reports.insert(id);
                }
                DocId::Conversation(id) => {
                    touched.conversations.insert(id, None);
                }
                DocId::Community => {}
            }
        }
        let Community { db, docs, auth, .. } = self;
        // A rebuild re-derives what is already known: its events are not news.
        let mut discarded = Vec::new();
        db.write(|tx| {
            for table in [
                "messages",
                "conversations",
                "profiles",
                "norms",
                "matches",
                "offers",
                "requests",
                "requests_fts",
            ] {
                tx.execute(&format!("DELETE FROM {table}"), [])?;
            }
            project_members(tx, auth, &mut discarded)?;
            // Heads of the documents that have changes (others are empty).
            for (doc_id, loaded) in docs.iter() {
                if !loaded.doc.get_heads().is_empty() {
                    save_heads(tx, doc_id, &loaded.doc.get_heads())?;
                }
            }
            project_all_docs(tx, docs, &touched, auth, &mut discarded)?;
            tx.execute("DELETE FROM meta WHERE key = 'rebuild_projections'", [])?;
            Ok(())
        })
    }

    /// The projections as rows, for comparing replicas and rebuilds.
    pub fn projection_dump(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for (table, order) in [
            ("members", "member_id"),
            ("profiles", "member_id"),
            ("norms", "norm_id"),
            ("requests", "request_id"),
            ("offers", "offer_id"),
            ("matches", "request_id"),
            ("requests_fts", "title, description"),
            ("reports", "report_id"),
            ("conversations", "conversation_id"),
            ("messages", "conversation_id, message_id"),
            ("doc_heads", "doc_id"),
        ] {
            let mut stmt = self
                .db
                .conn()
                .prepare(&format!("SELECT * FROM {table} ORDER BY {order}"))?;
            let n = stmt.column_count();
            let rows = stmt.query_map([], |r| {
                let mut cols = Vec::with_capacity(n);
                for i in 0..n {
                    cols.push(format!("{:?}", r.get_ref(i)?));
                }
                Ok(format!("{table}: {}", cols.join(" | ")))
            })?;
            for row in rows {
                out.push(row?);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Category, Karmyq, RequestDraft, RequestKind, Urgency, Visibility};

    fn loaded_requests(c: &Community) -> Vec<DocId> {
        c.docs
            .keys()
            .filter(|d| matches!(d, DocId::Request(_)))
            .cloned()
            .collect()
    }

    #[test]
    fn past_the_limit_the_longest_loaded_requests_leave_memory() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let mut k = Karmyq::open(dir.path())?;
        let now = Timestamp::from_millis(Timestamp::DAY);
        let id = k.create_community("Trim", "", Visibility::Public, now)?;
        let c = k.community(id)?;
        let mut posted = Vec::new();
        for i in 0..MAX_LOADED_REQUESTS + 10 {
            let draft = RequestDraft {
                title: format!("Request {i}"),
                description: String::new(),
                category: Category::Errands,
                urgency: Urgency::Low,
                kind: RequestKind::Generic,
                location: None,
                when: None,
            };
            posted.push(c.post_request(&draft, now.plus_millis(i as i64))?);
        }
        c.trim_cache();
        let loaded = loaded_requests(c);
        assert_eq!(loaded.len(), MAX_LOADED_REQUESTS);
        for (i, request) in posted.iter().enumerate() {
            let held = loaded.contains(&DocId::Request(*request));
            assert_eq!(held, i >= 10, "request {i} loaded: {held}");
        }
        // One that left memory reads back from the file.
        assert_eq!(c.request(posted[0], now)?.request.draft.title, "Request 0");
        Ok(())
    }
}
