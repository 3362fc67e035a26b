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

/// What a batch of changes moved, for the projections.
#[derive(Default)]
pub(super) struct Touched {
    pub(super) profiles: BTreeSet<MemberId>,
    pub(super) community: bool,
}

impl Touched {
    pub(super) fn note(&mut self, change: &Authentic) {
        match change.doc {
            DocId::Profiles => {
                self.profiles.insert(change.author());
            }
            DocId::Community => self.community = true,
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

/// The loaded documents a projection update may read.
pub(super) struct DocsView<'a> {
    community: Option<&'a Automerge>,
    profiles: Option<&'a Automerge>,
}

pub(super) fn docs_view<'a>(loaded: &'a Loaded, doc_id: &DocId) -> DocsView<'a> {
    match doc_id {
        DocId::Community => DocsView {
            community: Some(&loaded.doc),
            profiles: None,
        },
        DocId::Profiles => DocsView {
            community: None,
            profiles: Some(&loaded.doc),
        },
    }
}

pub(super) fn project_all_docs(
    tx: &Transaction<'_>,
    docs: &HashMap<DocId, Loaded>,
    touched: &Touched,
) -> Result<()> {
    project_docs(
        tx,
        DocsView {
            community: docs.get(&DocId::Community).map(|l| &l.doc),
            profiles: docs.get(&DocId::Profiles).map(|l| &l.doc),
        },
        touched,
    )
}

/// Moves the projections of what a batch of changes touched.
pub(super) fn project_docs(
    tx: &Transaction<'_>,
    docs: DocsView<'_>,
    touched: &Touched,
) -> Result<()> {
    if let Some(doc) = docs.profiles {
        for member in &touched.profiles {
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
        }
    }
    if let (true, Some(doc)) = (touched.community, docs.community) {
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
