//! The `community` document: the community's description and its norms,
//! written by admins and moderators, and the norms members propose, active
//! once approvals reach half of the members, rounded up (the proposer
//! counts).

use automerge::transaction::Transactable;
use automerge::{Automerge, ObjType, ROOT, ReadDoc};

use crate::docs::{MAX_TEXT, NORM_PREFIX, get_str, valid_norm_id};
use std::collections::{BTreeMap, BTreeSet};

use crate::error::{Error, Result};
use crate::identity::MemberId;

/// One of the community's agreements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Norm {
    /// Stable id (`[a-z0-9-]`, 1–64 characters).
    pub id: String,
    /// Short title (1–120 characters).
    pub title: String,
    /// What it asks (at most 4,000 characters).
    pub description: String,
    /// Free category, e.g. `safety` (at most 40 characters).
    pub category: String,
}

impl Norm {
    /// Checks every field, naming the first bad one.
    pub fn validate(&self) -> Result<()> {
        let bad = |f: &str| Err(Error::InvalidArgument(format!("norm {f}")));
        if !valid_norm_id(&self.id) {
            return bad("id");
        }
        if !(1..=120).contains(&self.title.chars().count()) {
            return bad("title");
        }
        if self.description.chars().count() > MAX_TEXT {
            return bad("description");
        }
        if self.category.chars().count() > 40 {
            return bad("category");
        }
        Ok(())
    }

    /// Adds the norm, or updates the fields that differ.
    pub(crate) fn write(&self, tx: &mut impl Transactable) -> Result<()> {
        let key = format!("{NORM_PREFIX}{}", self.id);
        let entry = match tx.get(ROOT, key.as_str())? {
            Some((v, id)) if v.is_object() => id,
            _ => tx.put_object(ROOT, key.as_str(), ObjType::Map)?,
        };
        for (field, value) in [
            ("title", &self.title),
            ("description", &self.description),
            ("category", &self.category),
        ] {
            let old = get_str(&*tx, &entry, field)?;
            if old.as_ref() != Some(value) {
                tx.put(&entry, field, value.as_str())?;
            }
        }
        Ok(())
    }

    /// Removes a norm; `false` if there was none.
    pub(crate) fn delete(tx: &mut impl Transactable, id: &str) -> Result<bool> {
        let key = format!("{NORM_PREFIX}{id}");
        if tx.get(ROOT, key.as_str())?.is_none() {
            return Ok(false);
        }
        tx.delete(ROOT, key.as_str())?;
        Ok(true)
    }

    /// Every norm in the document, by id.
    pub(crate) fn read_all(doc: &Automerge) -> Result<Vec<Norm>> {
        let mut out = Vec::new();
        for key in doc.keys(ROOT) {
            let Some(id) = key.strip_prefix(NORM_PREFIX) else {
                continue;
            };
            let Some((v, entry)) = doc.get(ROOT, key.as_str())? else {
                continue;
            };
            if !v.is_object() {
                continue;
            }
            let text =
                |f: &str| -> Result<String> { Ok(get_str(doc, &entry, f)?.unwrap_or_default()) };
            out.push(Norm {
                id: id.to_owned(),
                title: text("title")?,
                description: text("description")?,
                category: text("category")?,
            });
        }
        Ok(out)
    }
}

/// The community's description, as the document holds it.
pub(crate) fn read_description(doc: &Automerge) -> Result<Option<String>> {
    get_str(doc, &ROOT, "description")
}

/// Sets the description (at most 4,000 characters).
pub(crate) fn write_description(tx: &mut impl Transactable, text: &str) -> Result<()> {
    if text.chars().count() > MAX_TEXT {
        return Err(Error::InvalidArgument("description too long".into()));
    }
    tx.put(ROOT, "description", text)?;
    Ok(())
}

crate::request::authored_id!(
    /// A norm proposed by a member: the proposer and a nonce.
    ProposalId,
    proposer
);

/// Root key prefix of a proposal's fields in the `community` document:
/// `proposal:<id>/title`, `/description`, `/category` (flat keys, so the
/// proposer's id in the key says who may write them).
pub const PROPOSAL_PREFIX: &str = "proposal:";
/// Root key prefix of an approval: `approve:<proposal>/<member hex>`.
pub const APPROVE_PREFIX: &str = "approve:";

/// A norm a member proposed, with who approved it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    /// The proposal.
    pub id: ProposalId,
    /// Its title, description and category (as a norm).
    pub title: String,
    /// What it asks.
    pub description: String,
    /// Free category.
    pub category: String,
    /// Members who approved it (the proposer counts without approving).
    pub approvals: BTreeSet<MemberId>,
}

impl Proposal {
    /// Approvals that count among `members`: the approvers still members,
    /// and the proposer if still a member.
    pub fn approvals_among(&self, members: &BTreeMap<MemberId, crate::authority::Member>) -> usize {
        let mut who: BTreeSet<&MemberId> = self.approvals.iter().collect();
        who.insert(&self.id.proposer);
        who.into_iter().filter(|m| members.contains_key(m)).count()
    }

    /// Approvals needed: half of the current members, rounded up.
    pub fn needed(member_count: usize) -> usize {
        member_count.div_ceil(2)
    }

    /// The norm it becomes once active; its id names the proposal.
    pub fn as_norm(&self) -> Norm {
        Norm {
            id: format!(
                "p-{}-{}",
                hex::encode(self.id.nonce),
                &self.id.proposer.to_string()[..8]
            ),
            title: self.title.clone(),
            description: self.description.clone(),
            category: self.category.clone(),
        }
    }

    /// Every proposal in the document (one with a title).
    pub(crate) fn read_all(doc: &Automerge) -> Result<Vec<Proposal>> {
        let mut out: BTreeMap<ProposalId, Proposal> = BTreeMap::new();
        let mut approvals: Vec<(ProposalId, MemberId)> = Vec::new();
        for key in doc.keys(ROOT) {
            if let Some((id, field)) = parse_proposal_key(&key) {
                let value = get_str(doc, &ROOT, &key)?.unwrap_or_default();
                let p = out.entry(id).or_insert_with(|| Proposal {
                    id,
                    title: String::new(),
                    description: String::new(),
                    category: String::new(),
                    approvals: BTreeSet::new(),
                });
                match field {
                    "title" => p.title = value,
                    "description" => p.description = value,
                    "category" => p.category = value,
                    _ => {}
                }
            } else if let Some((p, m)) = parse_approval(&key) {
                approvals.push((p, m));
            }
        }
        out.retain(|_, p| !p.title.is_empty());
        for (p, m) in approvals {
            if let Some(proposal) = out.get_mut(&p) {
                proposal.approvals.insert(m);
            }
        }
        Ok(out.into_values().collect())
    }
}

/// Parses `proposal:<id>/<field>`.
pub(crate) fn parse_proposal_key(key: &str) -> Option<(ProposalId, &str)> {
    let (id, field) = key.strip_prefix(PROPOSAL_PREFIX)?.split_once('/')?;
    Some((ProposalId::parse(id)?, field))
}

/// Parses `approve:<proposal>/<member hex>`.
pub(crate) fn parse_approval(key: &str) -> Option<(ProposalId, MemberId)> {
    let (p, m) = key.strip_prefix(APPROVE_PREFIX)?.split_once('/')?;
    Some((ProposalId::parse(p)?, MemberId::from_hex(m).ok()?))
}

/// Writes a new proposal.
pub(crate) fn write_proposal(
    tx: &mut impl Transactable,
    id: &ProposalId,
    norm: &Norm,
) -> Result<()> {
    for (field, value) in [
        ("title", &norm.title),
        ("description", &norm.description),
        ("category", &norm.category),
    ] {
        tx.put(
            ROOT,
            format!("{PROPOSAL_PREFIX}{id}/{field}"),
            value.as_str(),
        )?;
    }
    Ok(())
}

/// Sets or lifts `member`'s approval of a proposal.
pub(crate) fn write_approval(
    tx: &mut impl Transactable,
    id: &ProposalId,
    member: &MemberId,
    approve: bool,
) -> Result<()> {
    let key = format!("{APPROVE_PREFIX}{id}/{member}");
    if approve {
        tx.put(ROOT, key, true)?;
    } else if tx.get(ROOT, key.as_str())?.is_some() {
        tx.delete(ROOT, key)?;
    }
    Ok(())
}
