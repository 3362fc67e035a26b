//! Deciding a batch of changes from another replica: signatures (each
//! author's newest vouches for their earlier ones), the authority state each
//! change cites, and dependencies.

use std::collections::{HashMap, HashSet};

use automerge::{Automerge, ChangeHash, ReadDoc};
use rusqlite::{Transaction, params};

use super::persist::{Loaded, apply_guarded, latest_stored, load_doc_tx};
use crate::authority::{AuthorityLog, OpHash, Resolved};
use crate::background::cores;
use crate::bundle::{Item, Report};
use crate::codec;
use crate::docs::{Ahead, Authentic, DocId, Latest, Link, RequestVerdicts, SignedChange};
use crate::error::{Rejection, Result};
use crate::identity::MemberId;
use crate::request::replay::Replay;
use crate::request::{RequestId, RequestState};

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

/// Which changes of a batch vouch for which: a change's parents are its
/// dependencies in its document and its author's previous change
/// (its [`Link`]), those in the batch; a verified signature
/// vouches for every change by the same author that it reaches.
struct Graph {
    /// `deps[starts[i]..starts[i + 1]]`: change `i`'s dependencies.
    starts: Vec<usize>,
    deps: Vec<usize>,
    /// The change `i` names as its author's previous, if it is here (the
    /// walk in [`Graph::vouched_by`] vouches only for the author's own).
    previous: Vec<Option<usize>>,
    /// Every change after all that reach it: newest first.
    newest_first: Vec<usize>,
}

impl Graph {
    /// The graph of `changes`, with their links if `links`.
    fn new(changes: &[Authentic], links: bool) -> Self {
        let mut by_hash: HashMap<(&DocId, [u8; 32]), usize> = HashMap::new();
        for (i, c) in changes.iter().enumerate() {
            by_hash.insert((&c.doc, c.change.hash().0), i);
        }
        let mut by_link: HashMap<Link, usize> = HashMap::new();
        if links && changes.iter().any(|c| c.previous.is_some()) {
            for (i, c) in changes.iter().enumerate() {
                by_link.insert(Link::of(&c.doc, &c.change.hash()), i);
            }
        }
        let mut starts = Vec::with_capacity(changes.len() + 1);
        let mut deps = Vec::new();
        let mut previous = Vec::with_capacity(changes.len());
        for c in changes {
            starts.push(deps.len());
            deps.extend(
                c.change
                    .deps()
                    .iter()
                    .filter_map(|d| by_hash.get(&(&c.doc, d.0)).copied()),
            );
            previous.push(c.previous.and_then(|link| by_link.get(&link).copied()));
        }
        starts.push(deps.len());
        let mut graph = Graph {
            starts,
            deps,
            previous,
            newest_first: Vec::new(),
        };
        graph.newest_first = graph.order();
        graph
    }

    fn parents(&self, i: usize) -> impl Iterator<Item = usize> + '_ {
        self.deps[self.starts[i]..self.starts[i + 1]]
            .iter()
            .copied()
            .chain(self.previous[i])
    }

    /// Depth first over parents, each change after its parents, reversed.
    fn order(&self) -> Vec<usize> {
        let n = self.previous.len();
        let mut seen = vec![false; n];
        let mut order = Vec::with_capacity(n);
        let mut stack: Vec<(usize, bool)> = Vec::new();
        for root in 0..n {
            stack.push((root, false));
            while let Some((i, parents_done)) = stack.pop() {
                if parents_done {
                    order.push(i);
                    continue;
                }
                if std::mem::replace(&mut seen[i], true) {
                    continue;
                }
                stack.push((i, true));
                stack.extend(self.parents(i).filter(|&p| !seen[p]).map(|p| (p, false)));
            }
        }
        order.reverse();
        order
    }

    /// The changes by `tip`'s author that `tip` reaches, through
    /// dependencies (anyone's) and previous changes (the author's), except
    /// `covered` ones and what they reach: those were vouched for by a
    /// change that reaches them, newer than `tip`.
    fn vouched_by(
        &self,
        changes: &[Authentic],
        tip: usize,
        covered: impl Fn(usize) -> bool,
    ) -> Vec<usize> {
        let author = changes[tip].author();
        let mut out = Vec::new();
        let mut walked = HashSet::new();
        let mut stack: Vec<usize> = self.parents(tip).collect();
        while let Some(j) = stack.pop() {
            if !walked.insert(j) {
                continue;
            }
            if changes[j].author() == author {
                if covered(j) {
                    continue;
                }
                out.push(j);
                stack.extend(self.parents(j));
            } else {
                stack.extend(&self.deps[self.starts[j]..self.starts[j + 1]]);
            }
        }
        out
    }
}

/// Whether a change is already stored.
pub(super) fn stored(tx: &Transaction<'_>, signed: &SignedChange) -> Result<bool> {
    Ok(tx
        .prepare_cached("SELECT 1 FROM changes WHERE hash = ?1")?
        .exists([signed.envelope.change_hash.as_slice()])?)
}

/// Whether the replica stores any change of `doc_id`.
fn holds_changes(tx: &Transaction<'_>, doc_id: &DocId) -> Result<bool> {
    Ok(tx
        .prepare_cached("SELECT 1 FROM changes WHERE doc_id = ?1 LIMIT 1")?
        .exists([doc_id.name()])?)
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
    /// Request changes judged by the request rules before the batch was
    /// made ([`Prepared`]).
    judged: HashMap<usize, RequestVerdicts>,
    /// Request documents built before the batch was made ([`Prepared`]).
    built: HashMap<DocId, Built>,
    /// Request documents new to the replica whose whole history this batch
    /// replayed (`Held::Replayed`), none applied to an Automerge document;
    /// one stays only if every change the replay took is accepted.
    replayed: HashMap<DocId, Replayed>,
    /// Each author's latest change accepted in this batch, per document.
    latest: HashMap<(MemberId, DocId), Latest>,
    /// Whether a signature vouches across documents, for the change its
    /// change names as its author's previous ([`Link`]): on a device, not
    /// on a relay (see [`Batch::for_device`]).
    links: bool,
}

/// A request document built from one bundle's changes alone: those whose
/// whole past is in the bundle, in dependency order.
#[derive(Debug)]
pub(super) struct Built {
    held: Held,
    hashes: HashSet<[u8; 32]>,
}

/// What a built request document holds.
#[derive(Debug)]
enum Held {
    /// The Automerge document.
    Doc(Box<Automerge>),
    /// Its whole history replayed ([`Replay`]), and no Automerge document:
    /// the changes are stored, with the replay's heads, and what it reads
    /// as is all a device's projection needs (the document is read from
    /// the stored changes when it is next needed).
    Replayed(Box<Replayed>),
}

/// A request document's whole history replayed: its heads, and the request
/// they read as.
#[derive(Debug)]
pub(super) struct Replayed {
    pub(super) heads: Vec<ChangeHash>,
    pub(super) state: Option<RequestState>,
}

/// A change prepared ahead: decoded, its signature checked if it is one a
/// replica checks, and if it is a request change whose past the bundle holds,
/// judged by the request rules.
#[derive(Debug)]
struct Ready {
    change: Authentic,
    checked: Checked,
    judged: Option<RequestVerdicts>,
}

/// A bundle's changes decoded and the signatures the replica will check
/// (see `Batch::vouch`) checked, ahead of
/// [`crate::Karmyq::receive_prepared`] and on another thread: the part of
/// receiving that needs no replica state. For a device, also each request
/// document built from the bundle's changes whose whole past the bundle
/// holds, and each of those changes judged there by the request rules
/// ([`Authentic::judge_request`]). A change is taken from it only if it is
/// byte for byte the change received, decoded for the same community, and
/// a built document only if it holds exactly the changes the replica
/// applies to an empty one; anything else is decoded, checked and judged as
/// usual, so a `Prepared` changes no verdict, only where the work is done.
#[derive(Debug, Default)]
pub struct Prepared {
    community: Option<crate::authority::CommunityId>,
    changes: HashMap<[u8; 32], Ready>,
    docs: HashMap<DocId, Built>,
}

impl Prepared {
    /// Decodes `bundle`'s changes and checks the signatures a device will
    /// check, on every core but one: the replica that will take them is
    /// meanwhile applying earlier bundles on a core of its own.
    pub fn new(bundle: &crate::bundle::Bundle) -> Self {
        Self::for_device(bundle, Self::spare_cores())
    }

    /// The same on at most `threads` threads (at least one): for a device
    /// that prepares several bundles at once, each on one thread.
    pub fn for_device(bundle: &crate::bundle::Bundle, threads: usize) -> Self {
        Self::on(bundle, threads, true)
    }

    /// The same for a relay's replica ([`crate::Karmyq::open_relay`]),
    /// which checks more signatures (see `Batch::for_device`), on at most
    /// `threads` threads (at least one): for a server that prepares several
    /// uploads at once, each on one thread.
    pub fn for_relay(bundle: &crate::bundle::Bundle, threads: usize) -> Self {
        Self::on(bundle, threads, false)
    }

    /// The cores of this machine but one (at least one): those that can
    /// prepare while a replica applies on the other.
    fn spare_cores() -> usize {
        cores().saturating_sub(1).max(1)
    }

    fn on(bundle: &crate::bundle::Bundle, threads: usize, device: bool) -> Self {
        let mut batch = Batch::for_device(device);
        for signed in &bundle.changes {
            if let Ok(change) = signed.decode(bundle.community) {
                batch.push(change, item_of(signed), true);
            }
        }
        let mut checked = batch.check_tips(0, threads);
        // A relay's store thread shares its cores with the preparing and
        // with every connection: building documents twice costs it more
        // than it saves (the ingest bench: ~10% fewer changes a second).
        let (mut judged, docs) = if device {
            build_requests(&batch.changes)
        } else {
            Default::default()
        };
        let changes = batch
            .changes
            .into_iter()
            .enumerate()
            .map(|(i, change)| {
                let ready = Ready {
                    change,
                    checked: checked.remove(&i),
                    judged: judged.remove(&i),
                };
                (ready.change.signed.envelope.change_hash, ready)
            })
            .collect();
        Prepared {
            community: Some(bundle.community),
            changes,
            docs,
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
            for (doc, built) in other.docs {
                // Two parts of one document: neither is the whole.
                if self.docs.remove(&doc).is_some() {
                    continue;
                }
                self.docs.insert(doc, built);
            }
        }
    }

    /// Moves what was prepared for `signed` into `batch`, or decodes it
    /// there if this is not the change prepared (if that fails, the item
    /// and why).
    pub(super) fn take_into(
        &mut self,
        community: crate::authority::CommunityId,
        signed: &SignedChange,
        item: Item,
        fresh: bool,
        batch: &mut Batch,
    ) -> std::result::Result<(), (Item, Rejection)> {
        let ready = (self.community == Some(community))
            .then(|| self.changes.remove(&signed.envelope.change_hash))
            .flatten()
            .filter(|ready| ready.change.signed == *signed);
        let Some(ready) = ready else {
            match signed.decode(community) {
                Ok(change) => batch.push(change, item, fresh),
                Err(reason) => return Err((item, reason)),
            }
            return Ok(());
        };
        let i = batch.changes.len();
        if let Some(checked) = ready.checked {
            batch.known.insert(i, checked);
        }
        if let Some(verdicts) = ready.judged {
            batch.judged.insert(i, verdicts);
        }
        batch.push(ready.change, item, fresh);
        Ok(())
    }

    /// How many changes it prepared.
    #[cfg(all(test, feature = "net"))]
    pub(crate) fn len(&self) -> usize {
        self.changes.len()
    }

    /// Whether it prepared `change`.
    #[cfg(all(test, feature = "net"))]
    pub(crate) fn holds(&self, change: &SignedChange) -> bool {
        self.changes.contains_key(&change.envelope.change_hash)
    }

    /// Hands the documents built for `community` to `batch`.
    pub(super) fn take_docs(
        &mut self,
        community: crate::authority::CommunityId,
        batch: &mut Batch,
    ) {
        if self.community == Some(community) {
            batch.built = std::mem::take(&mut self.docs);
        }
    }
}

/// Of `candidates` (changes to one document), those whose dependencies are
/// each `present` or among those taken before them, in that order.
fn in_order(
    changes: &[Authentic],
    candidates: &[usize],
    present: impl Fn(&ChangeHash) -> bool,
) -> Vec<usize> {
    let mut taken: Vec<usize> = Vec::new();
    let mut hashes: HashSet<[u8; 32]> = HashSet::new();
    loop {
        let before = taken.len();
        for &i in candidates {
            let change = &changes[i].change;
            if hashes.contains(&change.hash().0) {
                continue;
            }
            if change
                .deps()
                .iter()
                .all(|d| hashes.contains(&d.0) || present(d))
            {
                hashes.insert(change.hash().0);
                taken.push(i);
            }
        }
        if taken.len() == before {
            return taken;
        }
    }
}

/// Builds each request document of `changes` from those whose whole past is
/// among them, and judges those changes there by the request rules.
fn build_requests(
    changes: &[Authentic],
) -> (HashMap<usize, RequestVerdicts>, HashMap<DocId, Built>) {
    let mut by_doc: HashMap<&DocId, Vec<usize>> = HashMap::new();
    for (i, c) in changes.iter().enumerate() {
        if matches!(c.doc, DocId::Request(_)) {
            by_doc.entry(&c.doc).or_default().push(i);
        }
    }
    let mut judged = HashMap::new();
    let mut docs = HashMap::new();
    for (doc_id, candidates) in by_doc {
        let DocId::Request(id) = doc_id else {
            continue;
        };
        let taken = in_order(changes, &candidates, |_| false);
        if let Some(built) = build_request(changes, id, &taken, &mut judged) {
            docs.insert(doc_id.clone(), built);
        }
    }
    (judged, docs)
}

/// Builds request `id`'s document from `taken` (changes in dependency
/// order, holding their whole past), judging each on the request as its
/// author saw it. While the replay follows the history, that state is
/// replayed, and the replay vouches for the change's ops and its place in
/// its author's sequence; for any other change, the document built so far
/// is read at its dependencies, and both are checked there
/// ([`Authentic::sequence_holds`], [`Authentic::ops_hold`]) before
/// Automerge sees it. Changes are applied in batches, each only once it is judged.
///
/// At a change whose ops do not hold, or if Automerge refuses one, the
/// building stops: the verdicts given stand, and the document is not used.
///
/// If the replay followed the whole history, no Automerge document is
/// made (see `Held::Replayed`).
fn build_request(
    changes: &[Authentic],
    id: &RequestId,
    taken: &[usize],
    judged: &mut HashMap<usize, RequestVerdicts>,
) -> Option<Built> {
    if taken.is_empty() {
        return None;
    }
    let mut doc = Automerge::new();
    let mut replay = Replay::default();
    // `taken[..applied]` are in `doc`.
    let mut applied = 0;
    let apply_upto = |doc: &mut Automerge, applied: &mut usize, upto: usize| {
        let due = taken[*applied..upto]
            .iter()
            .map(|&j| changes[j].change.clone());
        *applied = upto;
        apply_guarded(doc, due)
    };
    for (k, &i) in taken.iter().enumerate() {
        let change = &changes[i];
        let expanded = change.change.decode();
        let replayed = replay.seen(*id, &change.change);
        replay.advance(&change.change, &expanded);
        let seen = match replayed {
            Some(seen) if !replay.is_lost() => Ok(seen),
            _ => {
                apply_upto(&mut doc, &mut applied, k).ok()?;
                // The author's latest change so far.
                let actor = change.change.actor_id();
                let latest = taken[..k]
                    .iter()
                    .map(|&j| &changes[j].change)
                    .rfind(|c| c.actor_id() == actor)
                    .map(|c| (c.seq(), c.hash()));
                let holds = change
                    .sequence_holds(&doc, latest)
                    .and_then(|()| change.ops_hold(&doc, &expanded));
                if let Err(reason) = holds {
                    judged.insert(i, RequestVerdicts::refused(reason));
                    return None;
                }
                change.request_seen(id, &doc)
            }
        };
        judged.insert(i, change.judge_request(id, &seen, &expanded));
    }
    let hashes = taken.iter().map(|&i| changes[i].change.hash().0).collect();
    if !replay.is_lost() {
        let heads = replay.heads().to_vec();
        if let Some(state) = replay.state_at(*id, &heads) {
            return Some(Built {
                held: Held::Replayed(Box::new(Replayed { heads, state })),
                hashes,
            });
        }
    }
    apply_upto(&mut doc, &mut applied, taken.len()).ok()?;
    Some(Built {
        held: Held::Doc(Box::new(doc)),
        hashes,
    })
}

impl Batch {
    /// A batch for a device, or (`!device`) for a relay's replica.
    ///
    /// A link is not an Automerge dependency: a replica can hold the
    /// naming change without the named one. A relay therefore lets nothing
    /// it stores rest on a link (each author's newest change in each
    /// document is checked, as without links): were it to store a change
    /// with a bad signature that a link vouched for, a device that received
    /// the two in different bundles would refuse that change for good. So
    /// what a relay sends judges the same on every device, however the
    /// device's batches fall, and devices follow links to check fewer
    /// signatures.
    pub(super) fn for_device(device: bool) -> Self {
        Batch {
            links: device,
            ..Batch::default()
        }
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
        self.tips_if_all_hold(&Graph::new(&self.changes, self.links), at_least, threads)
    }

    /// Signatures: each change no newer change by its author vouches for is
    /// verified, newest first; those it reaches are vouched for by it.
    fn vouch(&mut self) {
        let graph = Graph::new(&self.changes, self.links);
        // The signatures this will check if they all hold, checked at once
        // on every core; a failure below checks the others it then needs
        // one by one.
        let mut checked = self.tips_if_all_hold(&graph, PARALLEL_VERIFY, cores());
        checked.extend(self.known.drain());
        for &tip in &graph.newest_first {
            if self.trust[tip] != Trust::Unknown || self.verdicts[tip] != Verdict::Undecided {
                continue;
            }
            let verified = checked
                .remove(&tip)
                .unwrap_or_else(|| self.changes[tip].verify_signature());
            if let Err(reason) = verified {
                self.verdicts[tip] = Verdict::Rejected(reason);
                continue;
            }
            self.trust[tip] = Trust::Verified;
            let trust = &self.trust;
            let vouched = graph.vouched_by(&self.changes, tip, |j| trust[j] != Trust::Unknown);
            for j in vouched {
                self.trust[j] = Trust::Vouched(tip);
            }
        }
    }

    /// Verifies, on up to `threads` threads (at most
    /// [`MAX_VERIFY_THREADS`]), the signatures [`Batch::vouch`] checks when
    /// every one of them holds.
    fn tips_if_all_hold(
        &self,
        graph: &Graph,
        at_least: usize,
        threads: usize,
    ) -> HashMap<usize, std::result::Result<(), Rejection>> {
        let mut tips = Vec::new();
        let mut covered: Vec<bool> = self.trust.iter().map(|t| *t != Trust::Unknown).collect();
        for &tip in &graph.newest_first {
            if covered[tip] || self.verdicts[tip] != Verdict::Undecided {
                continue;
            }
            if !self.known.contains_key(&tip) {
                tips.push(tip);
            }
            covered[tip] = true;
            for j in graph.vouched_by(&self.changes, tip, |j| covered[j]) {
                covered[j] = true;
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
            self.latest.clear();
            self.replayed.clear();
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
        // What a replayed document's changes are judged "on": nothing is
        // read of it (their verdicts are given, `Ahead::Judged`).
        let unread = Automerge::new();
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
                let hash = self.changes[i].change.hash();
                let deps = self.changes[i].change.deps();
                let loaded = if self.replayed.contains_key(&doc_id) {
                    // A new document replayed took every change of the
                    // batch that it could; were another to come, it would
                    // wait for the document to be read from the file.
                    if !ahead_hashes.contains(&hash.0) {
                        continue;
                    }
                    // Its rules were judged in the replay: the (empty)
                    // document is not read.
                    None
                } else {
                    Some(load_doc_tx(tx, docs, &doc_id, actor)?)
                };
                let missing = match &loaded {
                    Some(loaded) => loaded.doc.get_missing_deps(deps),
                    None => deps.to_vec(),
                };
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
                let doc = match loaded {
                    Some(loaded) => {
                        if !missing.is_empty() {
                            // The validator reads the document as the author
                            // saw it: apply what this batch accepted for it
                            // so far.
                            if let Some(due) = unapplied.remove(&doc_id) {
                                let due_changes =
                                    due.iter().map(|&j| self.changes[j].change.clone());
                                apply_guarded(&mut loaded.doc, due_changes)?;
                                self.applied.extend(due);
                            }
                        }
                        &loaded.doc
                    }
                    None => &unread,
                };
                let change = &self.changes[i];
                let ahead = match self.judged.remove(&i) {
                    // In a document built from nothing with it, its place
                    // in its author's sequence was checked there.
                    Some(verdicts) if ahead_hashes.contains(&hash.0) => Ahead::Judged {
                        verdicts,
                        latest: None,
                    },
                    judged => {
                        let key = (self.changes[i].author(), doc_id.clone());
                        let latest = match self.latest.get(&key) {
                            Some(latest) => Some(*latest),
                            None => latest_stored(tx, &key.0, &key.1)?,
                        };
                        match judged {
                            Some(verdicts) => Ahead::Judged {
                                verdicts,
                                latest: Some(latest),
                            },
                            None => Ahead::Nothing { latest },
                        }
                    }
                };
                if let Err(reason) = change.authorize_seen(at, doc, ahead) {
                    self.verdicts[i] = Verdict::Rejected(reason);
                    continue;
                }
                accepted.insert(change.change.hash().0);
                self.latest.insert(
                    (change.author(), doc_id.clone()),
                    (change.change.seq(), change.change.hash()),
                );
                if !ahead_hashes.contains(&change.change.hash().0) {
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
                self.replayed.remove(&doc_id);
            }
        }
        Ok(())
    }

    /// Request document `doc_id`'s whole history, if this batch replayed
    /// it instead of applying it (see `Held::Replayed`): every change
    /// accepted for it is in it.
    pub(super) fn replayed(&self, doc_id: &DocId) -> Option<&Replayed> {
        self.replayed.get(doc_id)
    }

    /// Builds each new request document from every undecided change of the
    /// batch that it can take (its dependencies are among them), judging
    /// them on the way ([`build_request`], or taking what was built ahead):
    /// replayed whole with no Automerge document (`Held::Replayed`), or
    /// else in one Automerge call per document instead of one per change.
    /// A request's rules read the document at each change's dependencies,
    /// so what else it holds does not change a verdict. A document already
    /// holding changes is left to judge one by one. Returns the changes
    /// taken, per document.
    fn apply_ahead(
        &mut self,
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
            let DocId::Request(id) = doc_id else {
                continue;
            };
            if candidates.len() < 2 {
                continue;
            }
            let new = match docs.get(doc_id) {
                Some(loaded) => loaded.doc.get_heads().is_empty(),
                None => !holds_changes(tx, doc_id)?,
            };
            if !new {
                continue;
            }
            let taken = in_order(&self.changes, &candidates, |_| false);
            if taken.len() < 2 {
                continue;
            }
            // Exactly what was built ahead: taken, each judged there.
            let built = match self.built.remove(doc_id) {
                Some(built)
                    if built.hashes.len() == taken.len()
                        && taken.iter().all(|&i| {
                            built.hashes.contains(&self.changes[i].change.hash().0)
                                && self.judged.contains_key(&i)
                        }) =>
                {
                    built
                }
                _ => match build_request(&self.changes, id, &taken, &mut self.judged) {
                    Some(built) => built,
                    // Judged one by one instead.
                    None => continue,
                },
            };
            match built.held {
                Held::Doc(doc) => {
                    let loaded = load_doc_tx(tx, docs, doc_id, actor)?;
                    loaded.doc = *doc;
                    loaded.doc.set_actor(actor.clone());
                }
                Held::Replayed(replayed) => {
                    // No document: none is loaded (see `accept_ready`).
                    docs.remove(doc_id);
                    self.replayed.insert(doc_id.clone(), *replayed);
                }
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
