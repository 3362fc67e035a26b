//! The SQL projections (members, profiles, norms, description), moved in
//! the same transaction as the changes that move them.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use automerge::Automerge;
use rusqlite::{Transaction, params};

use super::persist::Loaded;
use crate::authority::CommunityId;
use crate::authority::Resolved;
use crate::conversation::ConversationId;
use crate::docs::{Authentic, DocId};
use crate::error::{Error, Result};
use crate::identity::MemberId;
use crate::norms::{self, Norm, Proposal};
use crate::notify::Event;
use crate::profile::Profile;
use crate::report::{ReportId, ReportState};
use crate::request::{OfferId, OfferStatus, RequestId, RequestState};
use crate::time::Timestamp;
use rusqlite::OptionalExtension;

/// What a batch of changes moved, for the projections.
#[derive(Default)]
pub(super) struct Touched {
    pub(super) profiles: BTreeSet<MemberId>,
    pub(super) community: bool,
    pub(super) requests: BTreeSet<RequestId>,
    pub(super) reports: BTreeSet<ReportId>,
    /// Per conversation, the root keys changed (`None`: all of them).
    pub(super) conversations: BTreeMap<ConversationId, Option<BTreeSet<String>>>,
}

impl Touched {
    pub(super) fn note(&mut self, change: &Authentic) {
        match change.doc {
            DocId::Profiles => {
                self.profiles.insert(change.author());
            }
            DocId::Community => self.community = true,
            DocId::Request(id) => {
                self.requests.insert(id);
            }
            DocId::Report(id) => {
                self.reports.insert(id);
            }
            DocId::Conversation(id) => {
                let keys = self
                    .conversations
                    .entry(id)
                    .or_insert(Some(BTreeSet::new()));
                if let Some(keys) = keys {
                    for op in change.change.decode().operations {
                        if let automerge::legacy::Key::Map(key) = op.key {
                            keys.insert(key.to_string());
                        }
                    }
                }
            }
        }
    }
}

/// Replaces the members projection with the resolved state, noting who
/// joined, left or changed role.
pub(super) fn project_members(
    tx: &Transaction<'_>,
    auth: &Resolved,
    events: &mut Vec<Event>,
) -> Result<()> {
    let mut before: HashMap<MemberId, String> = HashMap::new();
    {
        let mut stmt = tx.prepare_cached("SELECT member_id, role FROM members")?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, String>(1)?))
        })?;
        for row in rows {
            let (id, role) = row?;
            before.insert(member_from_blob(&id)?, role);
        }
    }
    let community = auth.community;
    for m in auth.members.values() {
        match before.remove(&m.id) {
            None => events.push(Event::MemberJoined {
                community,
                member: m.id,
            }),
            Some(role) if role != m.role.as_str() => events.push(Event::RoleChanged {
                community,
                member: m.id,
                role: m.role,
            }),
            Some(_) => {}
        }
    }
    let mut gone: Vec<MemberId> = before.into_keys().collect();
    gone.sort();
    events.extend(
        gone.into_iter()
            .map(|member| Event::MemberLeft { community, member }),
    );
    tx.execute("DELETE FROM members", [])?;
    let mut stmt = tx.prepare_cached(
        "INSERT INTO members (member_id, role, admitted_at, seniority) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for m in auth.members.values() {
        stmt.execute(params![
            m.id.as_bytes().as_slice(),
            m.role.as_str(),
            m.admitted_at.as_millis(),
            m.seniority
        ])?;
    }
    Ok(())
}

/// Moves the projections of every document a batch touched.
pub(super) fn project_all_docs(
    tx: &Transaction<'_>,
    docs: &HashMap<DocId, Loaded>,
    touched: &Touched,
    auth: &Resolved,
    events: &mut Vec<Event>,
) -> Result<()> {
    for (doc_id, loaded) in docs {
        project_doc(tx, doc_id, &loaded.doc, touched, auth, events)?;
    }
    Ok(())
}

/// Moves the projections of what a batch of changes touched in one document.
pub(super) fn project_doc(
    tx: &Transaction<'_>,
    doc_id: &DocId,
    doc: &Automerge,
    touched: &Touched,
    auth: &Resolved,
    events: &mut Vec<Event>,
) -> Result<()> {
    match doc_id {
        DocId::Profiles => {
            for member in &touched.profiles {
                project_profile(tx, doc, member)?;
            }
        }
        DocId::Community if touched.community => project_community(tx, doc, auth, events)?,
        DocId::Request(id) if touched.requests.contains(id) => {
            project_request(tx, doc, *id, community_of(tx)?, events)?;
        }
        DocId::Report(id) if touched.reports.contains(id) => {
            project_report(tx, doc, *id, community_of(tx)?, events)?;
        }
        DocId::Conversation(id) => {
            if let Some(keys) = touched.conversations.get(id) {
                let community = community_of(tx)?;
                super::messages::project_conversation(
                    tx,
                    doc,
                    id,
                    keys.as_ref(),
                    community,
                    events,
                )?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn project_profile(tx: &Transaction<'_>, doc: &Automerge, member: &MemberId) -> Result<()> {
    match Profile::read(doc, member)? {
        Some(p) => {
            tx.prepare_cached(
                "INSERT INTO profiles (member_id, name, bio, location, availability, skills)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (member_id) DO UPDATE SET name = excluded.name,
                   bio = excluded.bio, location = excluded.location,
                   availability = excluded.availability, skills = excluded.skills",
            )?
            .execute(params![
                member.as_bytes().as_slice(),
                p.name,
                p.bio,
                p.location,
                p.availability,
                p.skills.join(",")
            ])?;
        }
        None => {
            tx.prepare_cached("DELETE FROM profiles WHERE member_id = ?1")?
                .execute([member.as_bytes().as_slice()])?;
        }
    }
    Ok(())
}

/// Norms (those moderators wrote and proposals that gathered enough
/// approvals among the current members), proposals and the description.
pub(super) fn project_community(
    tx: &Transaction<'_>,
    doc: &Automerge,
    auth: &Resolved,
    events: &mut Vec<Event>,
) -> Result<()> {
    let known: std::collections::HashSet<String> = tx
        .prepare_cached("SELECT proposal_id FROM proposals")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let proposals = Proposal::read_all(doc)?;
    let needed = Proposal::needed(auth.members.len());
    tx.execute("DELETE FROM proposals", [])?;
    let mut norms = Norm::read_all(doc)?;
    for p in &proposals {
        let approvals = p.approvals_among(&auth.members);
        let active = approvals >= needed;
        if active {
            norms.push(p.as_norm());
        }
        let id = p.id.to_string();
        if !known.contains(&id) {
            events.push(Event::NormProposed {
                community: auth.community,
                proposal: p.id,
            });
        }
        tx.prepare_cached(
            "INSERT INTO proposals (proposal_id, proposer, title, approvals, active)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![
            id,
            p.id.proposer.as_bytes().as_slice(),
            p.title,
            i64::try_from(approvals).unwrap_or(i64::MAX),
            active
        ])?;
    }
    tx.execute("DELETE FROM norms", [])?;
    let mut stmt = tx.prepare_cached(
        "INSERT INTO norms (norm_id, title, description, category) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for n in norms {
        stmt.execute(params![n.id, n.title, n.description, n.category])?;
    }
    match norms::read_description(doc)? {
        Some(d) => tx.execute(
            "INSERT INTO meta (key, value) VALUES ('description', ?1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [d],
        )?,
        None => tx.execute("DELETE FROM meta WHERE key = 'description'", [])?,
    };
    Ok(())
}

/// The time-free part of a request's state, kept in the projection; the
/// clock-dependent statuses (expired, lapsed, superseded, unconfirmed) are
/// derived from it and `now` at query time.
fn stored_state(state: &RequestState) -> &'static str {
    // At the dawn of time nothing has expired: the clock plays no part.
    state.status(Timestamp::from_millis(i64::MIN)).as_str()
}

fn project_report(
    tx: &Transaction<'_>,
    doc: &Automerge,
    id: ReportId,
    community: CommunityId,
    events: &mut Vec<Event>,
) -> Result<()> {
    let Some(report) = ReportState::read(doc, id, None)? else {
        return Ok(());
    };
    let report_id = id.to_string();
    let existed = tx
        .prepare_cached("SELECT 1 FROM reports WHERE report_id = ?1")?
        .exists([&report_id])?;
    tx.prepare_cached(
        "INSERT INTO reports (report_id, reporter, target, target_member, category, text,
            created_at, resolution, resolved_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT (report_id) DO UPDATE SET resolution = excluded.resolution,
            resolved_at = excluded.resolved_at",
    )?
    .execute(params![
        report_id,
        id.reporter.as_bytes().as_slice(),
        report.target.encode(),
        report.target.member().as_bytes().as_slice(),
        report.category.as_str(),
        report.text,
        report.created_at.as_millis(),
        report.resolution.map(|(r, _)| r.as_str()),
        report.resolution.map(|(_, t)| t.as_millis()),
    ])?;
    if !existed {
        events.push(Event::ReportFiled {
            community,
            report: id,
            notify_me: false,
        });
    }
    Ok(())
}

/// The community a file holds.
pub(super) fn community_of(tx: &Transaction<'_>) -> Result<CommunityId> {
    let bytes: Vec<u8> = tx
        .prepare_cached("SELECT value FROM meta WHERE key = 'community_id'")?
        .query_row([], |r| r.get(0))?;
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|_| Error::Corrupt("community id".into()))?;
    Ok(CommunityId::from_bytes(bytes))
}

/// A request's projection before a change: whether it existed, its
/// offers' stored states, and its match.
struct Before {
    existed: bool,
    /// Its row: rowid, title and description (what its FTS row holds).
    row: Option<(i64, String, String)>,
    offers: HashMap<String, String>,
    matched: Option<(String, bool, bool, bool)>,
}

fn before(tx: &Transaction<'_>, request_id: &str) -> Result<Before> {
    let row: Option<(i64, String, String)> = tx
        .prepare_cached("SELECT rowid, title, description FROM requests WHERE request_id = ?1")?
        .query_row([request_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    if row.is_none() {
        // A request's offers and match are written only with it.
        return Ok(Before::nothing());
    }
    let mut offers = HashMap::new();
    {
        let mut stmt =
            tx.prepare_cached("SELECT offer_id, state FROM offers WHERE request_id = ?1")?;
        let rows = stmt.query_map([request_id], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?;
        for row in rows {
            let (o, state) = row?;
            offers.insert(o, state);
        }
    }
    let matched = tx
        .prepare_cached(
            "SELECT offer_id, requester_confirmed_at IS NOT NULL, responder_confirmed_at IS NOT NULL,
                    completed_at IS NOT NULL
             FROM matches WHERE request_id = ?1",
        )?
        .query_row([request_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .optional()?;
    Ok(Before {
        existed: true,
        row,
        offers,
        matched,
    })
}

impl Before {
    /// No projection of the request.
    fn nothing() -> Self {
        Before {
            existed: false,
            row: None,
            offers: HashMap::new(),
            matched: None,
        }
    }
}

/// The events between a request's projection before and its new state.
fn request_events(
    community: CommunityId,
    state: &RequestState,
    was: &Before,
    stored: &[(OfferId, &'static str)],
    events: &mut Vec<Event>,
) {
    let request = state.id;
    if !was.existed {
        events.push(Event::RequestCreated { community, request });
    }
    for &(offer, now_state) in stored {
        let old = was.offers.get(&offer.to_string()).map(String::as_str);
        match (old, now_state) {
            (None, _) => events.push(Event::OfferReceived {
                community,
                request,
                offer,
            }),
            (Some("pending"), "accepted") => events.push(Event::OfferAccepted {
                community,
                request,
                offer,
            }),
            (Some("pending"), "declined") => events.push(Event::OfferDeclined {
                community,
                request,
                offer,
            }),
            (Some("accepted"), "declined") => {
                let by = if state.match_cancelled.contains_key(&offer) {
                    request.requester
                } else {
                    offer.responder
                };
                events.push(Event::MatchCancelled {
                    community,
                    request,
                    offer,
                    by,
                });
            }
            _ => {}
        }
        // An offer accepted with no state before (one bundle brought both).
        if old.is_none() && now_state == "accepted" {
            events.push(Event::OfferAccepted {
                community,
                request,
                offer,
            });
        }
    }
    let never = Timestamp::from_millis(i64::MIN);
    if let Some(m) = state.active_match(never) {
        let same = was
            .matched
            .as_ref()
            .filter(|(o, ..)| *o == m.offer.to_string());
        let (r, p, c) = same.map_or((false, false, false), |(_, r, p, c)| (*r, *p, *c));
        if m.requester_confirmed_at.is_some() && !r {
            events.push(Event::MatchConfirmed {
                community,
                request,
                by: m.requester,
            });
        }
        if m.responder_confirmed_at.is_some() && !p {
            events.push(Event::MatchConfirmed {
                community,
                request,
                by: m.responder,
            });
        }
        if m.completed_at.is_some() && !c {
            events.push(Event::MatchCompleted {
                community,
                request,
                offer: m.offer,
                requester: m.requester,
                helper: m.responder,
            });
        }
    }
}

fn project_request(
    tx: &Transaction<'_>,
    doc: &Automerge,
    id: RequestId,
    community: CommunityId,
    events: &mut Vec<Event>,
) -> Result<()> {
    match RequestState::read(doc, id, None)? {
        Some(state) => project_request_state(tx, &state, id, community, false, events),
        None => Ok(()),
    }
}

/// Moves request `id`'s projection to `state`, noting the events between;
/// `new`: the replica held none of its changes before (so it has no
/// projection to read).
pub(super) fn project_request_state(
    tx: &Transaction<'_>,
    state: &RequestState,
    id: RequestId,
    community: CommunityId,
    new: bool,
    events: &mut Vec<Event>,
) -> Result<()> {
    let request_id = id.to_string();
    let was = if new {
        Before::nothing()
    } else {
        before(tx, &request_id)?
    };
    tx.prepare_cached(
        "INSERT INTO requests (request_id, requester, title, description, category, urgency,
            kind, location, when_start, when_end, created_at, expires_at, renewals, state, hidden)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)
         ON CONFLICT (request_id) DO UPDATE SET title = excluded.title,
            description = excluded.description, category = excluded.category,
            urgency = excluded.urgency, kind = excluded.kind, location = excluded.location,
            when_start = excluded.when_start, when_end = excluded.when_end,
            expires_at = excluded.expires_at, renewals = excluded.renewals,
            state = excluded.state, hidden = excluded.hidden",
    )?
    .execute(params![
        request_id,
        id.requester.as_bytes().as_slice(),
        state.draft.title,
        state.draft.description,
        state.draft.category.as_str(),
        state.draft.urgency as i64,
        state.draft.kind.as_str(),
        state.draft.location,
        state.draft.when.map(|w| w.0.as_millis()),
        state.draft.when.map(|w| w.1.as_millis()),
        state.created_at.as_millis(),
        state.expires_at.as_millis(),
        state.renewals,
        stored_state(state),
        state.hidden,
    ])?;
    // A new row, or the text changed: its full-text row follows; a new
    // request has no full-text row, offers or match to delete.
    let rowid = match &was.row {
        Some((rowid, ..)) => *rowid,
        None => tx.last_insert_rowid(),
    };
    let same_text = was.row.as_ref().is_some_and(|(_, title, description)| {
        *title == state.draft.title && *description == state.draft.description
    });
    if !same_text {
        if was.existed {
            tx.prepare_cached("DELETE FROM requests_fts WHERE rowid = ?1")?
                .execute([rowid])?;
        }
        tx.prepare_cached(
            "INSERT INTO requests_fts (rowid, title, description) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![rowid, state.draft.title, state.draft.description])?;
    }
    if was.existed {
        tx.prepare_cached("DELETE FROM offers WHERE request_id = ?1")?
            .execute([&request_id])?;
    }
    let never = Timestamp::from_millis(i64::MIN);
    let mut stored_states = Vec::new();
    for offer in state.offers.values() {
        let stored = match state.offer_status(offer, never) {
            OfferStatus::Pending | OfferStatus::Superseded | OfferStatus::Lapsed => "pending",
            other => other.as_str(),
        };
        stored_states.push((offer.id, stored));
        tx.prepare_cached(
            "INSERT INTO offers (offer_id, request_id, responder, message, created_at, state)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            offer.id.to_string(),
            request_id,
            offer.id.responder.as_bytes().as_slice(),
            offer.message,
            offer.created_at.as_millis(),
            stored,
        ])?;
    }
    if was.existed {
        tx.prepare_cached("DELETE FROM matches WHERE request_id = ?1")?
            .execute([&request_id])?;
    }
    if let Some(m) = state.active_match(never) {
        tx.prepare_cached(
            "INSERT INTO matches (request_id, offer_id, requester, responder, accepted_at,
                requester_confirmed_at, responder_confirmed_at, completed_at, invalidated, shares)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )?
        .execute(params![
            request_id,
            m.offer.to_string(),
            m.requester.as_bytes().as_slice(),
            m.responder.as_bytes().as_slice(),
            m.accepted_at.as_millis(),
            m.requester_confirmed_at.map(Timestamp::as_millis),
            m.responder_confirmed_at.map(Timestamp::as_millis),
            m.completed_at.map(Timestamp::as_millis),
            m.invalidated,
            state.share_count(),
        ])?;
    }
    request_events(community, state, &was, &stored_states, events);
    Ok(())
}

pub(super) fn profile_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Profile> {
    profile_row_at(r, 0)
}

pub(super) fn profile_row_at(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Profile> {
    let skills: String = r.get(at + 4)?;
    Ok(Profile {
        name: r.get(at)?,
        bio: r.get(at + 1)?,
        location: r.get(at + 2)?,
        availability: r.get(at + 3)?,
        skills: skills
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

/// A member id from a projection row (written only from validated ids).
pub(crate) fn member_from_blob(bytes: &[u8]) -> Result<MemberId> {
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|_| Error::Corrupt("member id".into()))?;
    Ok(MemberId::from_stored(bytes))
}
