//! A request document replayed change by change, so that each change is
//! judged on the state its author saw without reading the document at old
//! heads (which costs Automerge a walk of the history and a range of the op
//! set per object, per change).
//!
//! The replay keeps every value put under each key, with the change that
//! put it, and which changes overwrote it; each change's past is a bit set
//! of the changes before it. The state at some dependencies is then, for
//! each key, the greatest value put in their past and not overwritten there,
//! as Automerge reads it: concurrent changes and merges are followed.
//!
//! It follows only what honest writers produce: map keys at the root and in
//! maps made at the root, each op overwriting only values visible under its
//! key (in the object visible there) as of the change's dependencies, and
//! a delete overwriting at least one; and each change the next of its
//! actor, on their latest, numbering its ops above its past's. A change it
//! follows therefore passes `Authentic::ops_hold` and
//! `Authentic::sequence_holds`. At anything else (an op that does not
//! overwrite what is visible, a change out of sequence, lists, counters,
//! marks, nested objects, more than 64 changes) the replay is lost and
//! says so, and its caller reads the document and checks the change there
//! instead: a replay decides no verdict, it only saves the reads.

use std::collections::{BTreeMap, HashMap};

use automerge::legacy::{Key, ObjectId, OpId, OpType};
use automerge::{ActorId, Change, ChangeHash, ExpandedChange, ObjType, ValueRef};

use super::{Reading, RequestId, RequestState};

/// A value put under a key.
#[derive(Debug, Clone)]
struct Put {
    op: OpId,
    /// The bit of the change that put it.
    change: u64,
    /// What it put: a scalar, or a map made at the root (an offer's).
    held: ValueRef<'static>,
}

/// Every value put under each key of one map.
type Map = BTreeMap<String, Vec<Put>>;

/// A request document's changes, replayed.
#[derive(Debug, Default)]
pub(crate) struct Replay {
    /// The past of each change replayed (its bit and those of the changes
    /// it depends on, directly or not), and its greatest op number.
    past: HashMap<ChangeHash, (u64, u64)>,
    /// Each actor's latest change: its number in the actor's sequence and
    /// its bit.
    actors: HashMap<ActorId, (u64, u64)>,
    root: Map,
    /// The maps made at the root, by the op that made each, and its key.
    objects: HashMap<OpId, (String, Map)>,
    /// The changes (bits) whose ops overwrote each op.
    overwritten: HashMap<OpId, u64>,
    /// The changes replayed that none replayed depends on.
    heads: Vec<ChangeHash>,
    /// A change the replay does not follow came: it tells nothing more.
    lost: bool,
}

impl Replay {
    /// Request `id` as `change`'s author saw it (`Some(None)`: not created
    /// yet); `None` if the replay cannot tell.
    pub(crate) fn seen(&self, id: RequestId, change: &Change) -> Option<Option<RequestState>> {
        self.state_at(id, change.deps())
    }

    /// Request `id` at `heads` (changes replayed; `Some(None)`: not
    /// created there); `None` if the replay cannot tell.
    pub(crate) fn state_at(
        &self,
        id: RequestId,
        heads: &[ChangeHash],
    ) -> Option<Option<RequestState>> {
        if self.lost {
            return None;
        }
        let past = self.past_of(heads)?;
        let mut reading = Reading::new(id);
        for (key, puts) in &self.root {
            let Some(put) = self.winner(puts, past) else {
                continue;
            };
            if let Some(offer) = reading.root(key, &put.held) {
                let fields: Vec<(&str, &ValueRef)> = match self.objects.get(&put.op) {
                    Some((_, map)) => map
                        .iter()
                        .filter_map(|(k, puts)| Some((k.as_str(), &self.winner(puts, past)?.held)))
                        .collect(),
                    None => Vec::new(),
                };
                reading.offer(offer, (put.op.0, put.op.1.clone()), fields);
            }
        }
        Some(reading.finish())
    }

    /// Whether a change it does not follow came: it tells nothing more.
    pub(crate) fn is_lost(&self) -> bool {
        self.lost
    }

    /// The heads of the changes replayed, sorted as Automerge gives a
    /// document's heads.
    pub(crate) fn heads(&self) -> &[ChangeHash] {
        &self.heads
    }

    /// Replays `change` (decoded: `expanded`), whose dependencies must all
    /// be replayed; otherwise, or if it is not of the shape followed, the
    /// replay is lost.
    pub(crate) fn advance(&mut self, change: &Change, expanded: &ExpandedChange) {
        if self.lost {
            return;
        }
        let n = self.past.len();
        let past = self.past_of(change.deps()).filter(|_| n < 64);
        self.lost = match past {
            Some(past) if self.in_sequence(change, past) => {
                let bit = 1u64 << n;
                let followed = self.apply(expanded, bit, past | bit);
                self.past
                    .insert(change.hash(), (past | bit, change.max_op()));
                self.actors
                    .insert(change.actor_id().clone(), (change.seq(), bit));
                self.heads.retain(|h| !change.deps().contains(h));
                let at = self.heads.partition_point(|h| *h < change.hash());
                self.heads.insert(at, change.hash());
                !followed
            }
            _ => true,
        };
    }

    /// Whether `change` (with this past) is its actor's next change, on
    /// their latest, numbering its ops above its past's (see
    /// `Authentic::sequence_holds`).
    fn in_sequence(&self, change: &Change, past: u64) -> bool {
        let latest = self.actors.get(change.actor_id());
        let next = latest.map_or(1, |(seq, _)| seq + 1);
        let on_latest = latest.is_none_or(|(_, bit)| bit & past != 0);
        let past_max_op = change
            .deps()
            .iter()
            .filter_map(|d| self.past.get(d))
            .map(|(_, max_op)| *max_op)
            .max()
            .unwrap_or(0);
        change.seq() == next && on_latest && change.start_op().get() > past_max_op
    }

    /// The past of a change with these dependencies; `None` if one is not
    /// replayed.
    fn past_of(&self, deps: &[ChangeHash]) -> Option<u64> {
        deps.iter()
            .try_fold(0, |past, d| Some(past | self.past.get(d)?.0))
    }

    /// Whether `put` is visible in `past`: put there, not overwritten there.
    fn visible(&self, put: &Put, past: u64) -> bool {
        put.change & past != 0
            && self
                .overwritten
                .get(&put.op)
                .is_none_or(|by| by & past == 0)
    }

    /// The value a key shows in `past`: of those visible, the greatest op
    /// (Automerge's rule for concurrent values).
    fn winner<'a>(&self, puts: &'a [Put], past: u64) -> Option<&'a Put> {
        puts.iter()
            .filter(|p| self.visible(p, past))
            .max_by(|a, b| a.op.cmp(&b.op))
    }

    /// Applies the ops of change `bit`, in order, as of `past` (which holds
    /// `bit`); `false` at one it does not follow.
    fn apply(&mut self, change: &ExpandedChange, bit: u64, past: u64) -> bool {
        let start = change.start_op.get();
        for (op, counter) in change.operations.iter().zip(start..) {
            let Key::Map(key) = &op.key else {
                return false;
            };
            if op.insert {
                return false;
            }
            let map = match &op.obj {
                ObjectId::Root => &self.root,
                // Only in a map that is what its key shows.
                ObjectId::Id(obj) => match self.objects.get(obj) {
                    Some((at, map))
                        if self
                            .root
                            .get(at)
                            .and_then(|puts| self.winner(puts, past))
                            .is_some_and(|p| p.op == *obj) =>
                    {
                        map
                    }
                    _ => return false,
                },
            };
            // The op may overwrite only values visible under its key.
            let visible: Vec<&OpId> = map
                .get(key.as_str())
                .into_iter()
                .flatten()
                .filter(|p| self.visible(p, past))
                .map(|p| &p.op)
                .collect();
            if !op.pred.iter().all(|p| visible.contains(&p)) {
                return false;
            }
            let id = OpId(counter, change.actor_id.clone());
            let held = match &op.action {
                OpType::Put(value) => Some(ValueRef::Scalar(value.clone().into())),
                OpType::Make(ObjType::Map) if op.obj == ObjectId::Root => {
                    Some(ValueRef::Object(ObjType::Map))
                }
                OpType::Delete if !op.pred.is_empty() => None,
                _ => return false,
            };
            for p in op.pred.iter() {
                *self.overwritten.entry(p.clone()).or_default() |= bit;
            }
            let Some(held) = held else {
                continue;
            };
            if let ValueRef::Object(_) = held {
                self.objects
                    .insert(id.clone(), (key.to_string(), Map::new()));
            }
            let map = match &op.obj {
                ObjectId::Root => &mut self.root,
                ObjectId::Id(obj) => match self.objects.get_mut(obj) {
                    Some((_, map)) => map,
                    None => return false,
                },
            };
            map.entry(key.to_string()).or_default().push(Put {
                op: id,
                change: bit,
                held,
            });
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use automerge::transaction::Transactable;
    use automerge::{ActorId, Automerge, ROOT, ReadDoc, ScalarValue};
    use proptest::prelude::*;

    use super::*;
    use crate::identity::Keypair;
    use crate::request::{OfferId, RequestId};

    fn member(n: u8) -> crate::identity::MemberId {
        Keypair::from_secret_bytes(&[n; 32]).member_id()
    }

    fn request() -> RequestId {
        RequestId {
            requester: member(1),
            nonce: [7; 8],
        }
    }

    fn offer(n: usize) -> OfferId {
        OfferId {
            responder: member(2 + n as u8),
            nonce: [n as u8; 8],
        }
    }

    /// Root keys: the layout's, per-offer ones, and one it does not know.
    fn root_key(n: usize) -> String {
        // The requester's editable fields, then the others.
        const OTHERS: [&str; 12] = [
            "created_at",
            "expires_at",
            "renewals",
            "cancelled_at",
            "cancel_reason",
            "accepted",
            "accepted_at",
            "hidden",
            "posted_to",
            "shares",
            "accepted_in",
            "stray",
        ];
        let plain: Vec<&str> = crate::request::EDITABLE
            .iter()
            .chain(&OTHERS)
            .copied()
            .collect();
        const PER_OFFER: [&str; 5] = [
            "declined:",
            "match_cancel:",
            "confirmed:",
            "invalidated:",
            "note:",
        ];
        if n < plain.len() {
            plain[n].to_string()
        } else {
            let n = n - plain.len();
            format!(
                "{}{}",
                PER_OFFER[n % PER_OFFER.len()],
                offer(n / PER_OFFER.len() % 2)
            )
        }
    }

    const OFFER_FIELDS: [&str; 8] = [
        "message",
        "created_at",
        "withdrawn_at",
        "confirmed_at",
        "note",
        "cancelled_at",
        "cancel_reason",
        "stray",
    ];

    fn value(n: usize) -> ScalarValue {
        match n % 9 {
            0 => ScalarValue::Str("Some help".into()),
            1 => ScalarValue::Str(offer(n / 9 % 2).to_string().into()),
            2 => ScalarValue::Str("food".into()),
            3 => ScalarValue::Str("high".into()),
            4 => ScalarValue::Int(1_000 * n as i64),
            5 => ScalarValue::Timestamp(2_000 * n as i64),
            6 => ScalarValue::Uint(n as u64),
            7 => ScalarValue::Boolean(true),
            _ => ScalarValue::Null,
        }
    }

    /// One op of a change, as an honest writer would make it.
    #[derive(Debug, Clone)]
    enum Step {
        Put(usize, usize),
        Delete(usize),
        MakeOffer(usize),
        /// A scalar where an offer's map belongs.
        ScalarOffer(usize, usize),
        PutField(usize, usize, usize),
        DeleteField(usize, usize),
        /// Something the replay does not follow: a list.
        List(usize),
    }

    fn step(plain: bool) -> BoxedStrategy<Step> {
        let keys = 30usize;
        let common = prop_oneof![
            4 => (0..keys, 0..40usize).prop_map(|(k, v)| Step::Put(k, v)),
            1 => (0..keys).prop_map(Step::Delete),
            2 => (0..2usize).prop_map(Step::MakeOffer),
            1 => (0..2usize, 0..40usize).prop_map(|(o, v)| Step::ScalarOffer(o, v)),
            3 => (0..2usize, 0..OFFER_FIELDS.len(), 0..40usize)
                .prop_map(|(o, f, v)| Step::PutField(o, f, v)),
            1 => (0..2usize, 0..OFFER_FIELDS.len()).prop_map(|(o, f)| Step::DeleteField(o, f)),
        ];
        if plain {
            common.boxed()
        } else {
            prop_oneof![9 => common, 1 => (0..keys).prop_map(Step::List)].boxed()
        }
    }

    /// How a change is made.
    #[derive(Debug, Clone)]
    enum Made {
        /// On everything before it.
        Plain,
        /// On the document as it was a few changes back (concurrent).
        Fork(usize),
        /// Plain, then its first overwriting put's predecessors dropped,
        /// so that it stands beside what its key holds (a hand-made
        /// change; Automerge keeps both as a conflict, as the replay does).
        NoPred,
        /// Plain, then its first op with predecessors made to name an op
        /// that was never made: Automerge takes it, and then writes a
        /// document it cannot load (the replay must not follow it).
        StrayPred,
    }

    /// How changes are made: as honest writers do (on everything before
    /// them or concurrently), or also by hand.
    fn made(honest: bool) -> BoxedStrategy<Made> {
        if honest {
            prop_oneof![3 => Just(Made::Plain), 1 => (1..4usize).prop_map(Made::Fork)].boxed()
        } else {
            prop_oneof![
                6 => Just(Made::Plain),
                2 => (1..4usize).prop_map(Made::Fork),
                1 => Just(Made::NoPred),
                1 => Just(Made::StrayPred),
            ]
            .boxed()
        }
    }

    fn write(tx: &mut impl Transactable, step: &Step) {
        let offer_obj =
            |tx: &mut _, o: usize| match ReadDoc::get(tx, ROOT, format!("offer:{}", offer(o))) {
                Ok(Some((automerge::Value::Object(automerge::ObjType::Map), obj))) => Some(obj),
                _ => None,
            };
        // Errors (a key not there, an object gone) leave the change as is.
        let _ = match step {
            Step::Put(k, v) => tx.put(ROOT, root_key(*k), value(*v)),
            Step::Delete(k) => tx.delete(ROOT, root_key(*k)),
            Step::MakeOffer(o) => tx
                .put_object(ROOT, format!("offer:{}", offer(*o)), ObjType::Map)
                .map(|_| ()),
            Step::ScalarOffer(o, v) => tx.put(ROOT, format!("offer:{}", offer(*o)), value(*v)),
            Step::PutField(o, f, v) => match offer_obj(tx, *o) {
                Some(obj) => tx.put(obj, OFFER_FIELDS[*f], value(*v)),
                None => Ok(()),
            },
            Step::DeleteField(o, f) => match offer_obj(tx, *o) {
                Some(obj) => tx.delete(obj, OFFER_FIELDS[*f]),
                None => Ok(()),
            },
            Step::List(k) => tx.put_object(ROOT, root_key(*k), ObjType::List).map(|_| ()),
        };
    }

    /// Makes each change by `specs` (its ops and how it is made) on one
    /// document, which ends up holding them all; returns it and the
    /// changes in the order made.
    fn history(specs: &[(Vec<Step>, Made)]) -> (Automerge, Vec<Change>) {
        let mut doc = Automerge::new();
        let mut made: Vec<Change> = Vec::new();
        for (n, (steps, how)) in specs.iter().enumerate() {
            // The document the change is made on: everything so far, or
            // only the changes made up to a few back.
            let upto = match how {
                Made::Fork(back) => made.len().saturating_sub(*back),
                _ => made.len(),
            };
            let mut work = Automerge::new();
            if work.apply_changes(made[..upto].iter().cloned()).is_err() {
                continue;
            }
            // Three actors each make several changes in turn; a concurrent
            // change is another device's (an actor never forks itself).
            let actor = match how {
                Made::Fork(_) => 100 + n as u8,
                _ => 10 + (n % 3) as u8,
            };
            let mut work = work.with_actor(ActorId::from(vec![actor; 16]));
            let mut tx = work.transaction();
            for s in steps {
                write(&mut tx, s);
            }
            let (Some(hash), _) = tx.commit() else {
                continue;
            };
            let Some(mut change) = work.get_change_by_hash(&hash) else {
                continue;
            };
            if matches!(how, Made::NoPred) {
                let mut expanded = change.decode();
                let put = expanded
                    .operations
                    .iter_mut()
                    .find(|op| matches!(op.action, OpType::Put(_)) && !op.pred.is_empty());
                if let Some(op) = put {
                    op.pred = automerge::legacy::SortedVec::new();
                    expanded.hash = None;
                    change = Change::from(expanded);
                }
            }
            if matches!(how, Made::StrayPred) {
                let mut expanded = change.decode();
                let never = OpId(expanded.start_op.get() + 1_000, expanded.actor_id.clone());
                let op = expanded
                    .operations
                    .iter_mut()
                    .find(|op| !op.pred.is_empty());
                if let Some(op) = op {
                    op.pred = vec![never].into();
                    expanded.hash = None;
                    change = Change::from(expanded);
                }
            }
            if doc.apply_changes([change.clone()]).is_ok() {
                made.push(change);
            }
        }
        (doc, made)
    }

    /// Replays `changes`, checking each state the replay gives against the
    /// document read at the change's dependencies; returns how many it gave.
    fn replay_against(doc: &Automerge, changes: &[Change]) -> Result<usize, TestCaseError> {
        let id = request();
        let mut replay = Replay::default();
        let mut given = 0;
        for change in changes {
            if let Some(seen) = replay.seen(id, change) {
                let read = if change.deps().is_empty() {
                    None
                } else {
                    RequestState::read(doc, id, Some(change.deps())).expect("a read")
                };
                prop_assert_eq!(seen, read);
                given += 1;
            }
            replay.advance(change, &change.decode());
        }
        // Followed to the end, it gives the document as it now reads, and
        // that document is sound: it saves, and loads again (a replica
        // that replays stores the changes and makes the document later).
        if !replay.is_lost() {
            let heads = doc.get_heads();
            prop_assert_eq!(replay.heads(), heads.as_slice());
            let now = RequestState::read(doc, id, None).expect("a read");
            prop_assert_eq!(replay.state_at(id, replay.heads()), Some(now));
            let mut again = Automerge::new();
            prop_assert!(again.apply_changes(changes.iter().cloned()).is_ok());
            let loaded = Automerge::load(&again.save());
            prop_assert!(loaded.is_ok(), "{:?}", loaded.err());
            prop_assert_eq!(again.get_changes(&[]).len(), changes.len());
        }
        Ok(given)
    }

    fn change_specs(honest: bool) -> impl Strategy<Value = Vec<(Vec<Step>, Made)>> {
        proptest::collection::vec(
            (proptest::collection::vec(step(honest), 1..5), made(honest)),
            1..14,
        )
    }

    proptest! {
        /// Along an honest history, concurrent changes and merges included,
        /// the replay gives every change's state, the one Automerge reads
        /// at the change's dependencies.
        #[test]
        fn an_honest_history_replays_as_automerge_reads_it(specs in change_specs(true)) {
            let (doc, changes) = history(&specs);
            let given = replay_against(&doc, &changes)?;
            prop_assert_eq!(given, changes.len());
        }

        /// Whatever the history (ops that do not overwrite what is visible,
        /// lists), each state the replay still gives is the one Automerge
        /// reads.
        #[test]
        fn any_history_replays_as_automerge_reads_it_or_not_at_all(specs in change_specs(false)) {
            let (doc, changes) = history(&specs);
            replay_against(&doc, &changes)?;
        }
    }

    /// The replay vouches for the ops it follows (see
    /// `Authentic::ops_hold`): a change whose op overwrites what its key
    /// does not show loses it.
    #[test]
    fn the_replay_stops_at_an_op_that_does_not_overwrite_what_is_visible() {
        let specs = vec![
            (vec![Step::Put(0, 0), Step::Put(1, 0)], Made::Plain),
            (vec![Step::Put(0, 4)], Made::Plain),
        ];
        let (_, changes) = history(&specs);
        let [first, second] = changes.as_slice() else {
            panic!("two changes");
        };
        let first_ops = first.decode();
        let other_key = OpId(first_ops.start_op.get() + 1, first_ops.actor_id.clone());
        let never = OpId(99, first_ops.actor_id.clone());
        for pred in [vec![other_key], vec![never]] {
            let mut forged = second.decode();
            forged.operations[0].pred = pred.clone().into();
            forged.hash = None;
            let forged = Change::from(forged);
            let mut replay = Replay::default();
            replay.advance(first, &first.decode());
            replay.advance(&forged, &forged.decode());
            assert!(replay.is_lost(), "pred {pred:?}");
        }
        let mut replay = Replay::default();
        replay.advance(first, &first.decode());
        replay.advance(second, &second.decode());
        assert!(!replay.is_lost(), "the honest change is followed");
    }

    /// The replay vouches for each change's place in its actor's sequence
    /// (see `Authentic::sequence_holds`): a gap, a change not on its
    /// actor's previous one, or op numbers reused, lose it.
    #[test]
    fn the_replay_stops_at_a_change_out_of_sequence() {
        let specs = vec![
            (vec![Step::Put(0, 0)], Made::Plain),
            (vec![Step::Put(1, 0)], Made::Plain),
            (vec![Step::Put(2, 0)], Made::Plain),
            (vec![Step::Put(3, 0)], Made::Plain),
        ];
        let (_, changes) = history(&specs);
        // The fourth is the first actor's second change.
        assert_eq!(changes[3].actor_id(), changes[0].actor_id());
        assert_eq!(changes[3].seq(), 2);
        let forge = |edit: &dyn Fn(&mut ExpandedChange)| {
            let mut e = changes[3].decode();
            edit(&mut e);
            e.hash = None;
            Change::from(e)
        };
        let cases: [(&str, Change); 3] = [
            ("a gap", forge(&|e| e.seq = 3)),
            ("not on its previous", forge(&|e| e.deps = vec![])),
            (
                "op numbers reused",
                forge(&|e| e.start_op = std::num::NonZeroU64::MIN),
            ),
        ];
        for (what, forged) in cases {
            let mut replay = Replay::default();
            for c in &changes[..3] {
                replay.advance(c, &c.decode());
            }
            assert!(!replay.is_lost());
            replay.advance(&forged, &forged.decode());
            assert!(replay.is_lost(), "{what}");
        }
    }

    #[test]
    fn a_concurrent_change_and_its_merge_are_followed() {
        let specs = vec![
            (vec![Step::Put(8, 4), Step::MakeOffer(0)], Made::Plain),
            (vec![Step::PutField(0, 0, 0), Step::Put(0, 1)], Made::Plain),
            (vec![Step::Put(0, 0)], Made::Fork(1)),
            (vec![Step::Put(1, 0)], Made::Plain),
        ];
        let (doc, changes) = history(&specs);
        assert_eq!(changes.len(), 4);
        assert!(changes[3].deps().len() > 1, "the last change merges");
        let given = replay_against(&doc, &changes).expect("the same states");
        assert_eq!(given, 4);
    }
}
