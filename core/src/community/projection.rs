//! The SQL projections (members, profiles, norms, description), moved in
//! the same transaction as the changes that move them.

use std::collections::{BTreeSet, HashMap};

use automerge::Automerge;
use rusqlite::{Transaction, params};

use super::persist::Loaded;
use crate::authority::Resolved;
use crate::docs::{Authentic, DocId};
use crate::error::{Error, Result};
use crate::identity::MemberId;
use crate::norms::{self, Norm};
use crate::profile::Profile;
use crate::request::{OfferStatus, RequestId, RequestState};
use crate::time::Timestamp;

/// What a batch of changes moved, for the projections.
#[derive(Default)]
pub(super) struct Touched {
    pub(super) profiles: BTreeSet<MemberId>,
    pub(super) community: bool,
    pub(super) requests: BTreeSet<RequestId>,
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
        }
    }
}

pub(super) fn project_members(tx: &Transaction<'_>, auth: &Resolved) -> Result<()> {
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
) -> Result<()> {
    for (doc_id, loaded) in docs {
        project_doc(tx, doc_id, &loaded.doc, touched)?;
    }
    Ok(())
}

/// Moves the projections of what a batch of changes touched in one document.
pub(super) fn project_doc(
    tx: &Transaction<'_>,
    doc_id: &DocId,
    doc: &Automerge,
    touched: &Touched,
) -> Result<()> {
    match doc_id {
        DocId::Profiles => {
            for member in &touched.profiles {
                project_profile(tx, doc, member)?;
            }
        }
        DocId::Community if touched.community => project_community(tx, doc)?,
        DocId::Request(id) if touched.requests.contains(id) => project_request(tx, doc, *id)?,
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

fn project_community(tx: &Transaction<'_>, doc: &Automerge) -> Result<()> {
    tx.execute("DELETE FROM norms", [])?;
    let mut stmt = tx.prepare_cached(
        "INSERT INTO norms (norm_id, title, description, category) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for n in Norm::read_all(doc)? {
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

fn project_request(tx: &Transaction<'_>, doc: &Automerge, id: RequestId) -> Result<()> {
    let Some(state) = RequestState::read(doc, id, None)? else {
        return Ok(());
    };
    let request_id = id.to_string();
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
        state.title,
        state.description,
        state.category.as_str(),
        state.urgency as i64,
        state.kind.as_str(),
        state.location,
        state.when.map(|w| w.0.as_millis()),
        state.when.map(|w| w.1.as_millis()),
        state.created_at.as_millis(),
        state.expires_at.as_millis(),
        state.renewals,
        stored_state(&state),
        state.hidden,
    ])?;
    let rowid: i64 = tx
        .prepare_cached("SELECT rowid FROM requests WHERE request_id = ?1")?
        .query_row([&request_id], |r| r.get(0))?;
    tx.prepare_cached("DELETE FROM requests_fts WHERE rowid = ?1")?
        .execute([rowid])?;
    tx.prepare_cached("INSERT INTO requests_fts (rowid, title, description) VALUES (?1, ?2, ?3)")?
        .execute(params![rowid, state.title, state.description])?;
    tx.prepare_cached("DELETE FROM offers WHERE request_id = ?1")?
        .execute([&request_id])?;
    let never = Timestamp::from_millis(i64::MIN);
    for offer in state.offers.values() {
        let stored = match state.offer_status(offer, never) {
            OfferStatus::Pending | OfferStatus::Superseded | OfferStatus::Lapsed => "pending",
            other => other.as_str(),
        };
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
    tx.prepare_cached("DELETE FROM matches WHERE request_id = ?1")?
        .execute([&request_id])?;
    if let Some(m) = state.active_match(never) {
        tx.prepare_cached(
            "INSERT INTO matches (request_id, offer_id, requester, responder, accepted_at,
                requester_confirmed_at, responder_confirmed_at, completed_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
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
        ])?;
    }
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

pub(crate) fn member_from_blob(bytes: &[u8]) -> Result<MemberId> {
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|_| Error::Corrupt("member id".into()))?;
    MemberId::from_bytes(bytes).map_err(|_| Error::Corrupt("member id".into()))
}
