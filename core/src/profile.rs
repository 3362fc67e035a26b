//! Member profiles: one entry per member in the `profiles` document, keyed
//! by the member's hex id, written only by that member.

use automerge::transaction::Transactable;
use automerge::{Automerge, ObjId, ObjType, ROOT, ReadDoc};

use crate::authority::valid_name;
use crate::docs::{SKILL_PREFIX, get_str, valid_geohash, valid_skill};
use crate::error::{Error, Result};
use crate::identity::MemberId;

/// What a member tells their community about themselves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Profile {
    /// Display name (1–80 characters).
    pub name: String,
    /// A few words (at most 1,000 characters).
    pub bio: String,
    /// Coarse location: a geohash of at most 5 characters.
    pub location: Option<String>,
    /// When they can usually help (at most 200 characters).
    pub availability: String,
    /// Skill tags (`[a-z0-9-]`, 1–40 characters each), sorted.
    pub skills: Vec<String>,
}

impl Profile {
    /// Checks every field, naming the first bad one.
    pub fn validate(&self) -> Result<()> {
        let bad = |f: &str| Err(Error::InvalidArgument(format!("profile {f}")));
        if !valid_name(&self.name) {
            return bad("name");
        }
        if self.bio.chars().count() > 1_000 {
            return bad("bio");
        }
        if self.location.as_deref().is_some_and(|l| !valid_geohash(l)) {
            return bad("location");
        }
        if self.availability.chars().count() > 200 {
            return bad("availability");
        }
        if !self.skills.iter().all(|s| valid_skill(s)) {
            return bad("skills");
        }
        Ok(())
    }

    /// Writes the fields that differ from what the document holds.
    pub(crate) fn write(&self, tx: &mut impl Transactable, member: &MemberId) -> Result<()> {
        let key = member.to_string();
        let entry = match tx.get(ROOT, key.as_str())? {
            Some((v, id)) if v.is_object() => id,
            _ => tx.put_object(ROOT, key.as_str(), ObjType::Map)?,
        };
        let old = read_entry(&*tx, &entry)?;
        if old.name != self.name {
            tx.put(&entry, "name", self.name.as_str())?;
        }
        if old.bio != self.bio {
            tx.put(&entry, "bio", self.bio.as_str())?;
        }
        if old.availability != self.availability {
            tx.put(&entry, "availability", self.availability.as_str())?;
        }
        match (&old.location, &self.location) {
            (a, Some(b)) if a.as_ref() != Some(b) => tx.put(&entry, "location", b.as_str())?,
            (Some(_), None) => tx.delete(&entry, "location")?,
            _ => {}
        }
        for gone in old.skills.iter().filter(|s| !self.skills.contains(s)) {
            tx.delete(&entry, format!("{SKILL_PREFIX}{gone}"))?;
        }
        for new in self.skills.iter().filter(|s| !old.skills.contains(s)) {
            tx.put(&entry, format!("{SKILL_PREFIX}{new}"), true)?;
        }
        Ok(())
    }

    /// Reads a member's entry, if they have one.
    pub(crate) fn read(doc: &Automerge, member: &MemberId) -> Result<Option<Profile>> {
        match doc.get(ROOT, member.to_string())? {
            Some((v, id)) if v.is_object() => Ok(Some(read_entry(doc, &id)?)),
            _ => Ok(None),
        }
    }
}

fn read_entry(doc: &impl ReadDoc, entry: &ObjId) -> Result<Profile> {
    let text = |key: &str| get_str(doc, entry, key);
    let mut skills: Vec<String> = doc
        .keys(entry)
        .filter_map(|k| k.strip_prefix(SKILL_PREFIX).map(str::to_owned))
        .collect();
    skills.sort();
    Ok(Profile {
        name: text("name")?.unwrap_or_default(),
        bio: text("bio")?.unwrap_or_default(),
        location: text("location")?,
        availability: text("availability")?.unwrap_or_default(),
        skills,
    })
}
