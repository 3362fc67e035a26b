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

/// Below this many signatures to check, a batch checks them on its own
/// thread (starting threads would cost more than it saves).
const PARALLEL_VERIFY: usize = 32;

/// Most threads that check a batch's signatures.
const MAX_VERIFY_THREADS: usize = 8;

/// The cores of this machine (1 if unknown).
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
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

/// The batch's changes by document and author, newest first, and an index
/// of them by hash.
#[allow(clippy::type_complexity)]
fn groups(
    changes: &[Authentic],
) -> (
    Vec<((&DocId, MemberId), Vec<usize>)>,
    HashMap<(&DocId, [u8; 32]), usize>,
) {
    let mut by_hash: HashMap<(&DocId, [u8; 32]), usize> = HashMap::new();
    let mut groups: HashMap<(&DocId, MemberId), Vec<usize>> = HashMap::new();
    for (i, c) in changes.iter().enumerate() {
        by_hash.insert((&c.doc, c.change.hash().0), i);
        groups.entry((&c.doc, c.author())).or_default().push(i);
    }
    let mut groups: Vec<_> = groups.into_iter().collect();
    for (_, members) in &mut groups {
        members.sort_by_key(|&i| std::cmp::Reverse(changes[i].change.seq()));
    }
    (groups, by_hash)
}

/// The changes by `author` in `doc` that `tip` descends from, within the
/// batch.
fn vouched_by(
    changes: &[Authentic],
    tip: usize,
    doc: &DocId,
    author: MemberId,
    by_hash: &HashMap<(&DocId, [u8; 32]), usize>,
) -> Vec<usize> {
    let mut out = Vec::new();
    let mut stack: Vec<ChangeHash> = changes[tip].change.deps().to_vec();
    let mut walked = HashSet::new();
    while let Some(h) = stack.pop() {
        let Some(&j) = by_hash.get(&(doc, h.0)) else {
            continue;
        };
        if !walked.insert(j) {
            continue;
        }
        if changes[j].author() == author {
            out.push(j);
        }
        stack.extend(changes[j].change.deps().iter().copied());
    }
    out
}

/// Whether a change is already stored.
pub(super) fn stored(tx: &Transaction<'_>, signed: &SignedChange) -> Result<bool> {
    Ok(tx
        .prepare_cached("SELECT 1 FROM changes WHERE hash = ?1")?
        .exists([signed.envelope.change_hash.as_slice()])?)
}

/// A signature's verdict, when it was checked.
type Checked = Option<std::result::Result<(), Rejection>>;

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
    /// Signatures checked before the batch was made ([`Prepared`]).
    known: HashMap<usize, std::result::Result<(), Rejection>>,
}

/// A bundle's changes decoded, and the signatures a replica will check
/// (each author's newest in each document) checked, ahead of
/// [`crate::Karmyq::receive_prepared`] and on another thread: the part of
/// receiving that needs no replica state. A change is taken from it only
/// if it is byte for byte the change received, decoded for the same
/// community; anything else is decoded and checked as usual, so a
/// `Prepared` changes no verdict, only where the work is done.
#[derive(Debug, Default)]
pub struct Prepared {
    community: Option<crate::authority::CommunityId>,
    changes: HashMap<[u8; 32], (Authentic, Checked)>,
}

impl Prepared {
    /// Decodes `bundle`'s changes and checks their newest signatures, on
    /// every core but one: the replica that will take them is meanwhile
    /// applying earlier bundles on a core of its own.
    pub fn new(bundle: &crate::bundle::Bundle) -> Self {
        Self::on_threads(bundle, Self::spare_cores())
    }

    /// The cores of this machine but one (at least one): those that can
    /// prepare while a replica applies on the other.
    pub fn spare_cores() -> usize {
        cores().saturating_sub(1).max(1)
    }

    /// The same on at most `threads` threads (at least one): for a caller
    /// that prepares several bundles at once, each on one thread.
    pub fn on_threads(bundle: &crate::bundle::Bundle, threads: usize) -> Self {
        let mut batch = Batch::default();
        for signed in &bundle.changes {
            if let Ok(change) = signed.decode(bundle.community) {
                batch.push(change, item_of(signed), true);
            }
        }
        let mut checked = batch.check_tips(0, threads);
        let changes = batch
            .changes
            .into_iter()
            .enumerate()
            .map(|(i, c)| (c.signed.envelope.change_hash, (c, checked.remove(&i))))
            .collect();
        Prepared {
            community: Some(bundle.community),
            changes,
        }
    }

    /// Adds what `other` prepared (for a bundle of the same community) to
    /// this, to receive their bundles as one; if the communities differ,
    /// `other`'s changes are left to be decoded and checked as usual.
    pub fn absorb(&mut self, other: Prepared) {
        if self.community.is_none() {
            self.community = other.community;
        }
        if self.community == other.community {
            self.changes.extend(other.changes);
        }
    }

    /// The decoded change and its checked signature, if this is the change
    /// prepared.
    pub(super) fn take(
        &mut self,
        community: crate::authority::CommunityId,
        signed: &SignedChange,
    ) -> Option<(Authentic, Checked)> {
        if self.community != Some(community) {
            return None;
        }
        let (change, checked) = self.changes.remove(&signed.envelope.change_hash)?;
        (change.signed == *signed).then_some((change, checked))
    }
}

impl Batch {
    /// Adds a change whose signature was checked already (`Some`).
    pub(super) fn push_checked(
        &mut self,
        change: Authentic,
        item: Item,
        fresh: bool,
        checked: Checked,
    ) {
        if let Some(checked) = checked {
            self.known.insert(self.changes.len(), checked);
        }
        self.push(change, item, fresh);
    }

    pub(super) fn push(&mut self, change: Authentic, item: Item, fresh: bool) {
        self.changes.push(change);
        self.items.push(item);
        self.fresh.push(fresh);
        self.trust.push(Trust::Unknown);
        self.verdicts.push(Verdict::Undecided);
    }

    /// Checks (on up to `threads` threads if there are many) the signatures
    /// [`Batch::vouch`] checks when every one of them holds, if there are at
    /// least `at_least` of them (else none).
    fn check_tips(
        &self,
        at_least: usize,
        threads: usize,
    ) -> HashMap<usize, std::result::Result<(), Rejection>> {
        let (groups, by_hash) = groups(&self.changes);
        self.tips_if_all_hold(&groups, &by_hash, at_least, threads)
    }

    /// Signatures: each author's newest change in a document is verified;
    /// the older ones it descends from are vouched for by it.
    fn vouch(&mut self) {
        let (groups, by_hash) = groups(&self.changes);
        // The signatures this will check if they all hold (each group's
        // newest, and nothing it vouches for), checked at once on every
        // core; a failure below checks the others it then needs one by one.
        let mut checked = self.tips_if_all_hold(&groups, &by_hash, PARALLEL_VERIFY, cores());
        checked.extend(self.known.drain());
        let mut trust = std::mem::take(&mut self.trust);
        for ((doc, author), members) in groups {
            for tip in members {
                if trust[tip] != Trust::Unknown || self.verdicts[tip] != Verdict::Undecided {
                    continue;
                }
                let verified = checked
                    .remove(&tip)
                    .unwrap_or_else(|| self.changes[tip].verify_signature());
                if let Err(reason) = verified {
                    self.verdicts[tip] = Verdict::Rejected(reason);
                    continue;
                }
                trust[tip] = Trust::Verified;
                for j in vouched_by(&self.changes, tip, doc, author, &by_hash) {
                    if trust[j] == Trust::Unknown {
                        trust[j] = Trust::Vouched(tip);
                    }
                }
            }
        }
        self.trust = trust;
    }

    /// Verifies, on up to `threads` threads (at most
    /// [`MAX_VERIFY_THREADS`]), the signatures [`Batch::vouch`] checks when
    /// every one of them holds.
    fn tips_if_all_hold(
        &self,
        groups: &[((&DocId, MemberId), Vec<usize>)],
        by_hash: &HashMap<(&DocId, [u8; 32]), usize>,
        at_least: usize,
        threads: usize,
    ) -> HashMap<usize, std::result::Result<(), Rejection>> {
        let mut tips = Vec::new();
        let mut covered = vec![false; self.changes.len()];
        for ((doc, author), members) in groups {
            for &tip in members {
                if covered[tip] || self.trust[tip] != Trust::Unknown {
                    continue;
                }
                if self.verdicts[tip] != Verdict::Undecided {
                    continue;
                }
                if !self.known.contains_key(&tip) {
                    tips.push(tip);
                }
                for j in vouched_by(&self.changes, tip, doc, *author, by_hash) {
                    covered[j] = true;
                }
            }
        }
        if tips.len() < at_least {
            return HashMap::new();
        }
        let threads = threads.clamp(1, MAX_VERIFY_THREADS);
        if threads < 2 || tips.len() < PARALLEL_VERIFY {
            return tips
                .into_iter()
                .map(|i| (i, self.changes[i].verify_signature()))
                .collect();
        }
        let changes = &self.changes;
        let per_thread = tips.len().div_ceil(threads);
        std::thread::scope(|scope| {
            let workers: Vec<_> = tips
                .chunks(per_thread)
                .map(|chunk| {
                    scope.spawn(move || {
                        chunk
                            .iter()
                            .map(|&i| (i, changes[i].verify_signature()))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            workers
                .into_iter()
                // A panic in a verifier: those are checked again below.
                .flat_map(|w| w.join().unwrap_or_default())
                .collect()
        })
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
        let ahead = self.apply_ahead(tx, docs, actor)?;
        let ahead_hashes: HashSet<[u8; 32]> = ahead
            .values()
            .flatten()
            .map(|&j| self.changes[j].change.hash().0)
            .collect();
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
                let deps = self.changes[i].change.deps();
                let missing = loaded.doc.get_missing_deps(deps);
                if !missing.iter().all(|d| accepted.contains(&d.0)) {
                    continue;
                }
                // Applied ahead is not accepted: those it needs must be.
                if deps
                    .iter()
                    .any(|d| ahead_hashes.contains(&d.0) && !accepted.contains(&d.0))
                {
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
                if matches!(doc_id, DocId::Request(_))
                    && !ahead_hashes.contains(&change.change.hash().0)
                {
                    unapplied.entry(doc_id).or_default().push(i);
                }
                self.verdicts[i] = Verdict::Accepted;
                self.order.push(i);
                moved = true;
            }
            if !moved {
                break;
            }
        }
        // A document applied ahead stays loaded only if everything applied
        // to it was accepted; else it is read again from the file, and the
        // accepted changes are applied to it afresh after deciding.
        for (doc_id, indices) in ahead {
            if indices
                .iter()
                .all(|&j| self.verdicts[j] == Verdict::Accepted)
            {
                self.applied.extend(indices);
            } else {
                docs.remove(&doc_id);
                self.applied.retain(|&j| self.changes[j].doc != doc_id);
            }
        }
        Ok(())
    }

    /// Applies to each request document, in one call, every undecided
    /// change of the batch that it can take (its dependencies are in the
    /// document or among them), before they are judged: one Automerge call
    /// per document instead of one per change. A request's rules read the
    /// document at each change's dependencies, so what else it holds does
    /// not change a verdict. Returns the changes applied, per document.
    fn apply_ahead(
        &self,
        tx: &Transaction<'_>,
        docs: &mut HashMap<DocId, Loaded>,
        actor: &automerge::ActorId,
    ) -> Result<HashMap<DocId, Vec<usize>>> {
        let mut by_doc: HashMap<&DocId, Vec<usize>> = HashMap::new();
        for (i, c) in self.changes.iter().enumerate() {
            if self.verdicts[i] == Verdict::Undecided && matches!(c.doc, DocId::Request(_)) {
                by_doc.entry(&c.doc).or_default().push(i);
            }
        }
        let mut ahead = HashMap::new();
        for (doc_id, candidates) in by_doc {
            if candidates.len() < 2 {
                continue;
            }
            let loaded = load_doc_tx(tx, docs, doc_id, actor)?;
            // Those whose dependencies are in the document or taken.
            let mut taken: Vec<usize> = Vec::new();
            let mut hashes: HashSet<[u8; 32]> = HashSet::new();
            loop {
                let before = taken.len();
                for &i in &candidates {
                    let change = &self.changes[i].change;
                    if hashes.contains(&change.hash().0) {
                        continue;
                    }
                    let ready = change.deps().iter().all(|d| {
                        hashes.contains(&d.0) || loaded.doc.get_change_by_hash(d).is_some()
                    });
                    if ready {
                        hashes.insert(change.hash().0);
                        taken.push(i);
                    }
                }
                if taken.len() == before {
                    break;
                }
            }
            if taken.len() < 2 {
                continue;
            }
            let applied = loaded
                .doc
                .apply_changes(taken.iter().map(|&i| self.changes[i].change.clone()));
            if applied.is_err() {
                // Judged one by one instead, from the file's state.
                docs.remove(doc_id);
                continue;
            }
            ahead.insert(doc_id.clone(), taken);
        }
        Ok(ahead)
    }

    /// The accepted changes per document, dependencies first, each with
    /// whether it is already applied to its document.
    pub(super) fn accepted_by_doc(&self) -> Vec<(DocId, Vec<(&Authentic, bool)>)> {
        let mut out: Vec<(DocId, Vec<(&Authentic, bool)>)> = Vec::new();
        let mut index: HashMap<&DocId, usize> = HashMap::new();
        for &i in &self.order {
            let change = (&self.changes[i], self.applied.contains(&i));
            match index.get(&change.0.doc) {
                Some(&k) => out[k].1.push(change),
                None => {
                    index.insert(&change.0.doc, out.len());
                    out.push((change.0.doc.clone(), vec![change]));
                }
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
