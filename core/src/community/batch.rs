//! Deciding a batch of changes from another replica: signatures (each
//! author's newest vouches for their earlier ones), the authority state each
//! change cites, and dependencies.

use std::collections::{HashMap, HashSet};

use automerge::{ChangeHash, ReadDoc};
use rusqlite::{Transaction, params};

use super::persist::{Loaded, load_doc_tx};
use crate::authority::{AuthorityLog, OpHash, Resolved};
use crate::bundle::{Item, Report};
use crate::codec;
use crate::docs::{Authentic, DocId, SignedChange};
use crate::error::{Rejection, Result};
use crate::identity::MemberId;

pub(super) fn item_of(signed: &SignedChange) -> Item {
    Item::Change {
        doc: signed.envelope.doc.clone(),
        hash: signed.envelope.change_hash,
    }
}

/// Finds the authority state a change cites.
pub(super) struct Judge<'a> {
    pub(super) log: &'a AuthorityLog,
    pub(super) now: &'a Resolved,
    pub(super) cache: &'a mut HashMap<Vec<OpHash>, Resolved>,
}

impl Judge<'_> {
    /// Most entries a cache of earlier resolutions keeps.
    const CACHE: usize = 64;

    /// The log resolved at `heads`, or `None` if some head is not here yet.
    pub(super) fn at(&mut self, heads: &[OpHash]) -> Option<&Resolved> {
        let mut key = heads.to_vec();
        key.sort();
        key.dedup();
        if key == self.now.heads {
            return Some(self.now);
        }
        if !self.cache.contains_key(&key) {
            let past = self.log.at(&key)?;
            if self.cache.len() >= Self::CACHE {
                self.cache.clear();
            }
            self.cache.insert(key.clone(), past.resolve());
        }
        self.cache.get(&key)
    }
}

/// Whether a change is already stored.
pub(super) fn stored(tx: &Transaction<'_>, signed: &SignedChange) -> Result<bool> {
    Ok(tx
        .prepare_cached("SELECT 1 FROM changes WHERE hash = ?1")?
        .exists([signed.envelope.change_hash.as_slice()])?)
}

/// Why a change's signature can be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Trust {
    /// Not looked at yet.
    Unknown,
    /// Its own signature verifies.
    Verified,
    /// An ancestor of this verified change by the same author.
    Vouched(usize),
}

/// Where a change stands while a batch is decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verdict {
    Undecided,
    Accepted,
    Rejected(Rejection),
}

/// The changes of one apply: from the bundle and from the pending table.
#[derive(Default)]
pub(super) struct Batch {
    changes: Vec<Authentic>,
    items: Vec<Item>,
    fresh: Vec<bool>,
    trust: Vec<Trust>,
    verdicts: Vec<Verdict>,
    /// Order of acceptance (dependencies first).
    order: Vec<usize>,
    /// Accepted changes already applied to their document while deciding.
    applied: HashSet<usize>,
}

impl Batch {
    pub(super) fn push(&mut self, change: Authentic, item: Item, fresh: bool) {
        self.changes.push(change);
        self.items.push(item);
        self.fresh.push(fresh);
        self.trust.push(Trust::Unknown);
        self.verdicts.push(Verdict::Undecided);
    }

    /// Signatures: each author's newest change in a document is verified;
    /// the older ones it descends from are vouched for by it.
    fn vouch(&mut self) {
        let mut by_hash: HashMap<(&DocId, [u8; 32]), usize> = HashMap::new();
        let mut groups: HashMap<(&DocId, MemberId), Vec<usize>> = HashMap::new();
        for (i, c) in self.changes.iter().enumerate() {
            by_hash.insert((&c.doc, c.change.hash().0), i);
            groups.entry((&c.doc, c.author())).or_default().push(i);
        }
        let mut trust = std::mem::take(&mut self.trust);
        for ((doc, author), mut members) in groups {
            members.sort_by_key(|&i| std::cmp::Reverse(self.changes[i].change.seq()));
            for tip in members {
                if trust[tip] != Trust::Unknown || self.verdicts[tip] != Verdict::Undecided {
                    continue;
                }
                if let Err(reason) = self.changes[tip].verify_signature() {
                    self.verdicts[tip] = Verdict::Rejected(reason);
                    continue;
                }
                trust[tip] = Trust::Verified;
                let mut stack: Vec<ChangeHash> = self.changes[tip].change.deps().to_vec();
                let mut walked = HashSet::new();
                while let Some(h) = stack.pop() {
                    let Some(&j) = by_hash.get(&(doc, h.0)) else {
                        continue;
                    };
                    if !walked.insert(j) {
                        continue;
                    }
                    if self.changes[j].author() == author && trust[j] == Trust::Unknown {
                        trust[j] = Trust::Vouched(tip);
                    }
                    stack.extend(self.changes[j].change.deps().iter().copied());
                }
            }
        }
        self.trust = trust;
    }

    /// Decides every change: accepted (valid, everything it needs here),
    /// rejected with a reason, or left undecided (it waits).
    pub(super) fn decide(
        &mut self,
        tx: &Transaction<'_>,
        docs: &mut HashMap<DocId, Loaded>,
        judge: &mut Judge<'_>,
        actor: &automerge::ActorId,
    ) -> Result<()> {
        self.vouch();
        loop {
            self.accept_ready(tx, docs, judge, actor)?;
            // A change vouched for by one that was not accepted needs its
            // own signature; if that fails, decide again without it.
            let mut again = false;
            for i in 0..self.changes.len() {
                if let (Trust::Vouched(v), Verdict::Accepted) = (self.trust[i], &self.verdicts[i]) {
                    if self.verdicts[v] == Verdict::Accepted {
                        continue;
                    }
                    match self.changes[i].verify_signature() {
                        Ok(()) => self.trust[i] = Trust::Verified,
                        Err(reason) => {
                            self.verdicts[i] = Verdict::Rejected(reason);
                            again = true;
                        }
                    }
                }
            }
            if !again {
                return Ok(());
            }
            for v in &mut self.verdicts {
                if *v == Verdict::Accepted {
                    *v = Verdict::Undecided;
                }
            }
            // Documents that took changes while deciding are read again.
            for &j in &self.applied {
                docs.remove(&self.changes[j].doc);
            }
            self.applied.clear();
            self.order.clear();
        }
    }

    /// Accepts, until nothing moves, every undecided change that is valid
    /// and whose dependencies are in its document or accepted before it.
    fn accept_ready(
        &mut self,
        tx: &Transaction<'_>,
        docs: &mut HashMap<DocId, Loaded>,
        judge: &mut Judge<'_>,
        actor: &automerge::ActorId,
    ) -> Result<()> {
        let mut accepted: HashSet<[u8; 32]> = HashSet::new();
        // Per document, the changes accepted in this call and not applied
        // yet, in order of acceptance.
        let mut unapplied: HashMap<DocId, Vec<usize>> = HashMap::new();
        loop {
            let mut moved = false;
            for i in 0..self.changes.len() {
                if self.verdicts[i] != Verdict::Undecided {
                    continue;
                }
                let Some(at) = judge.at(&self.changes[i].auth_heads) else {
                    continue;
                };
                let doc_id = self.changes[i].doc.clone();
                let loaded = load_doc_tx(tx, docs, &doc_id, actor)?;
                let missing = loaded.doc.get_missing_deps(self.changes[i].change.deps());
                if !missing.iter().all(|d| accepted.contains(&d.0)) {
                    continue;
                }
                if !missing.is_empty() && matches!(doc_id, DocId::Request(_)) {
                    // A request's rules read the document as the author saw
                    // it: apply what this batch accepted for it so far.
                    if let Some(due) = unapplied.remove(&doc_id) {
                        loaded
                            .doc
                            .apply_changes(due.iter().map(|&j| self.changes[j].change.clone()))?;
                        self.applied.extend(due);
                    }
                }
                let change = &self.changes[i];
                if let Err(reason) = change.authorize(at, &loaded.doc) {
                    self.verdicts[i] = Verdict::Rejected(reason);
                    continue;
                }
                accepted.insert(change.change.hash().0);
                if matches!(doc_id, DocId::Request(_)) {
                    unapplied.entry(doc_id).or_default().push(i);
                }
                self.verdicts[i] = Verdict::Accepted;
                self.order.push(i);
                moved = true;
            }
            if !moved {
                return Ok(());
            }
        }
    }

    /// The accepted changes per document, dependencies first, each with
    /// whether it is already applied to its document.
    pub(super) fn accepted_by_doc(&self) -> Vec<(DocId, Vec<(&Authentic, bool)>)> {
        let mut out: Vec<(DocId, Vec<(&Authentic, bool)>)> = Vec::new();
        for &i in &self.order {
            let change = (&self.changes[i], self.applied.contains(&i));
            match out.iter_mut().find(|(d, _)| *d == change.0.doc) {
                Some((_, list)) => list.push(change),
                None => out.push((change.0.doc.clone(), vec![change])),
            }
        }
        out
    }

    /// Fills the report and parks what still waits.
    pub(super) fn report(&self, tx: &Transaction<'_>, report: &mut Report) -> Result<()> {
        for (i, verdict) in self.verdicts.iter().enumerate() {
            let item = self.items[i].clone();
            match verdict {
                Verdict::Accepted => report.accepted.push(item),
                Verdict::Rejected(reason) => report.rejected.push((item, reason.clone())),
                Verdict::Undecided => {
                    let signed = &self.changes[i].signed;
                    tx.prepare_cached(
                        "INSERT INTO pending_changes (hash, doc_id, signed) VALUES (?1, ?2, ?3)",
                    )?
                    .execute(params![
                        signed.envelope.change_hash.as_slice(),
                        signed.envelope.doc,
                        codec::encode(signed)
                    ])?;
                    if self.fresh[i] {
                        report.pending.push(item);
                    }
                }
            }
        }
        Ok(())
    }
}
