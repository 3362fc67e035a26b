//! The `community` document: the community's description and its norms,
//! written by admins and moderators.

use automerge::transaction::Transactable;
use automerge::{Automerge, ObjType, ROOT, ReadDoc};

use crate::docs::{MAX_TEXT, NORM_PREFIX, get_str, valid_norm_id};
use crate::error::{Error, Result};

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
