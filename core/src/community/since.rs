//! What one replica sends another: everything it holds that the other
//! lacks, whole ([`Community::changes_since`]) or, for a replica that
//! holds nothing, in pages ([`Community::catch_up_for`]), so the first
//! page travels while the next is read.

use std::collections::{HashMap, HashSet};

use automerge::{ChangeHash, ReadDoc};

use super::Community;
use super::persist::{load_doc, load_heads};
use crate::authority::OpHash;
use crate::bundle::{Bundle, Heads};
use crate::codec;
use crate::docs::{DocId, SignedChange, actor_of, change_hash};
use crate::error::{Error, Result};
use crate::identity::MemberId;
use crate::sync::chunk;

/// Where a catch-up read in pages goes on: after the change stored at
/// `after`, up to the one stored at `until`, the newest when the catch-up
/// began. Stored changes are never rewritten nor removed, so a page read
/// later holds what it would have held then; what was stored since comes
/// live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    after: i64,
    until: i64,
}

impl Community {
    /// Everything this replica holds that a replica at `since` lacks.
    ///
    /// Private documents (reports, conversations) are left out: see
    /// [`Community::changes_since_for`].
    pub fn changes_since(&mut self, since: &Heads) -> Result<Bundle> {
        self.bundle_since(since, None)
    }

    /// [`Community::changes_since`] for a known reader: also the private
    /// documents that member may read (reports they filed, or all reports
    /// for a moderator).
    pub fn changes_since_for(&mut self, since: &Heads, reader: &MemberId) -> Result<Bundle> {
        self.bundle_since(since, Some(reader))
    }

    /// [`Community::changes_since_for`] in pages for a replica that holds
    /// no document: the first page (every authority op it lacks, then the
    /// oldest changes, as many as fit in `max_bytes` as
    /// [`crate::sync::split`] counts them, one at least), and where the
    /// next begins ([`Community::next_page_for`]) if there is more. A
    /// replica that holds documents gets what it lacks whole, and no next
    /// page: that is what it missed since it last synced, not the whole
    /// history.
    pub fn catch_up_for(
        &mut self,
        since: &Heads,
        reader: &MemberId,
        max_bytes: usize,
    ) -> Result<(Bundle, Option<Page>)> {
        if !since.docs.is_empty() {
            return Ok((self.bundle_since(since, Some(reader))?, None));
        }
        let mut bundle = Bundle::new(self.id);
        bundle.ops = self.ops_since(since)?;
        let until: i64 =
            self.db
                .conn()
                .query_row("SELECT coalesce(max(seq), 0) FROM changes", [], |r| {
                    r.get(0)
                })?;
        let used: usize = bundle.ops.iter().map(|op| chunk::op_size(op)).sum();
        let budget = chunk::budget(max_bytes).saturating_sub(used);
        let first = Page { after: 0, until };
        let next = self.read_page(first, Some(reader), budget, &mut bundle.changes)?;
        Ok((bundle, next))
    }

    /// The page of a catch-up that [`Community::catch_up_for`] began: the
    /// changes after the last page, as many as fit in `max_bytes` (one at
    /// least), and where the next begins if there is more. What `reader`
    /// may read is judged now: a member who became a moderator meanwhile
    /// reads every report from here on.
    pub fn next_page_for(
        &mut self,
        page: Page,
        reader: &MemberId,
        max_bytes: usize,
    ) -> Result<(Bundle, Option<Page>)> {
        let mut bundle = Bundle::new(self.id);
        let next = self.read_page(
            page,
            Some(reader),
            chunk::budget(max_bytes),
            &mut bundle.changes,
        )?;
        Ok((bundle, next))
    }

    /// Whether `reader` (`None`: anyone) may read `doc_id`.
    fn readable(&self, doc_id: &DocId, reader: Option<&MemberId>) -> bool {
        match reader {
            Some(r) => doc_id.readable_by(r, self.auth.role(r)),
            None => !doc_id.is_private(),
        }
    }

    /// Authority ops: all but the causal past of `since`'s, in stored
    /// (causal) order.
    fn ops_since(&self, since: &Heads) -> Result<Vec<Vec<u8>>> {
        let mut theirs: HashSet<OpHash> = HashSet::new();
        let mut stack: Vec<OpHash> = since
            .auth
            .iter()
            .filter(|h| self.log.contains(h))
            .copied()
            .collect();
        while let Some(h) = stack.pop() {
            if theirs.insert(h)
                && let Some(op) = self.log.get(&h)
            {
                stack.extend(op.op.parents.iter().copied());
            }
        }
        let mut ops = Vec::new();
        let mut stmt = self
            .db
            .conn()
            .prepare_cached("SELECT hash, bytes FROM auth_ops ORDER BY rowid")?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?))
        })?;
        for row in rows {
            let (hash, bytes) = row?;
            let hash = OpHash::from_bytes(
                hash.try_into()
                    .map_err(|_| Error::Corrupt("op hash".into()))?,
            );
            if !theirs.contains(&hash) {
                ops.push(bytes);
            }
        }
        Ok(ops)
    }

    /// Appends to `out` the changes of `page` that `reader` may read, in
    /// stored order (each after what it depends on), until the next would
    /// take more than `budget` bytes (it takes one at least); returns where
    /// the rest begins, if anything is left.
    fn read_page(
        &self,
        page: Page,
        reader: Option<&MemberId>,
        budget: usize,
        out: &mut Vec<SignedChange>,
    ) -> Result<Option<Page>> {
        let mut verdicts: HashMap<String, bool> = HashMap::new();
        let mut stmt = self.db.conn().prepare_cached(
            "SELECT seq, doc_id, envelope, bytes FROM changes
             WHERE seq > ?1 AND seq <= ?2 ORDER BY seq",
        )?;
        let mut rows = stmt.query([page.after, page.until])?;
        let (mut used, mut taken) = (0, 0);
        while let Some(row) = rows.next()? {
            let name = row
                .get_ref(1)?
                .as_str()
                .map_err(|_| Error::Corrupt("doc id".into()))?;
            let sent = match verdicts.get(name) {
                Some(&sent) => sent,
                None => {
                    let doc_id =
                        DocId::parse_stored(name).ok_or_else(|| Error::Corrupt("doc id".into()))?;
                    let sent = self.readable(&doc_id, reader);
                    verdicts.insert(name.to_owned(), sent);
                    sent
                }
            };
            if !sent {
                continue;
            }
            let envelope = row
                .get_ref(2)?
                .as_blob()
                .map_err(|_| Error::Corrupt("stored envelope".into()))?;
            let signed = SignedChange {
                envelope: codec::decode(envelope, "stored envelope")?,
                bytes: row.get(3)?,
            };
            let size = chunk::change_size(&signed);
            if taken > 0 && used + size > budget {
                // This change starts the next page.
                let after: i64 = row.get(0)?;
                return Ok(Some(Page {
                    after: after - 1,
                    until: page.until,
                }));
            }
            used += size;
            taken += 1;
            out.push(signed);
        }
        Ok(None)
    }

    fn bundle_since(&mut self, since: &Heads, reader: Option<&MemberId>) -> Result<Bundle> {
        let mut bundle = Bundle::new(self.id);
        bundle.ops = self.ops_since(since)?;
        if since.docs.is_empty() {
            // A replica that holds no document: every readable change, in
            // one pass over the table, already in stored order.
            let all = Page {
                after: 0,
                until: i64::MAX,
            };
            self.read_page(all, reader, usize::MAX, &mut bundle.changes)?;
            return Ok(bundle);
        }
        // Per document that differs, the changes not in the past of their
        // heads (all of them if their heads are unknown here).
        let mut changes: Vec<(i64, SignedChange)> = Vec::new();
        let actor = actor_of(&self.me());
        for (name, ours) in load_heads(&self.db)? {
            let their = since.docs.get(&name);
            if their == Some(&ours) {
                continue;
            }
            let doc_id =
                DocId::parse_stored(&name).ok_or_else(|| Error::Corrupt("doc id".into()))?;
            if !self.readable(&doc_id, reader) {
                continue;
            }
            let want: Option<HashSet<[u8; 32]>> = match their {
                Some(their) if !their.is_empty() => {
                    let loaded = load_doc(&self.db, &mut self.docs, &doc_id, &actor)?;
                    let their: Vec<ChangeHash> = their.iter().map(|h| ChangeHash(*h)).collect();
                    if loaded.doc.get_missing_deps(&their).is_empty() {
                        Some(
                            loaded
                                .doc
                                .get_changes(&their)
                                .iter()
                                .map(|c| c.hash().0)
                                .collect(),
                        )
                    } else {
                        None
                    }
                }
                _ => None,
            };
            let mut stmt = self.db.conn().prepare_cached(
                "SELECT seq, hash, envelope, bytes FROM changes WHERE doc_id = ?1 ORDER BY seq",
            )?;
            let rows = stmt.query_map([&name], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                    r.get::<_, Vec<u8>>(3)?,
                ))
            })?;
            for row in rows {
                let (seq, hash, envelope, bytes) = row?;
                if let Some(want) = &want
                    && !want.contains(&change_hash(&hash)?.0)
                {
                    continue;
                }
                let signed = SignedChange {
                    envelope: codec::decode(&envelope, "stored envelope")?,
                    bytes,
                };
                changes.push((seq, signed));
            }
        }
        // In the order they were stored (each after what it depends on):
        // an author's changes, each naming the one before, travel close
        // together, so one signature vouches for most of them.
        changes.sort_unstable_by_key(|(seq, _)| *seq);
        bundle.changes = changes.into_iter().map(|(_, signed)| signed).collect();
        Ok(bundle)
    }
}
