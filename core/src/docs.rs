//! Content documents: which Automerge documents a community holds, the
//! signed envelope every change travels in, and the one validator every
//! replica (device or server) runs before a change is stored.
//!
//! Validation looks only at the change: its signature, its actor, the
//! author's role at the authority heads it cites, and each operation it
//! carries. An operation names its object by the id of the op that created
//! it, and that id contains the creating actor, so "is this object the
//! author's own?" is answered without the document. The cost is linear in
//! the size of the change, never in the size of the document.

use std::collections::{HashMap, HashSet};
use std::fmt;

use automerge::legacy::{Key, ObjectId, OpId, OpType};
use automerge::{
    ActorId, Automerge, Change, ChangeHash, ExpandedChange, ObjId as ExId, ReadDoc, ScalarValue,
};
use serde::{Deserialize, Serialize};

use crate::authority::{CommunityId, OpHash, Resolved, Role};
use crate::codec;
use crate::conversation::{self, ConversationId};
use crate::error::{Error, Rejection, Result};
use crate::identity::{Keypair, MemberId, Signature, SigningTag};
use crate::norms::{APPROVE_PREFIX, PROPOSAL_PREFIX, parse_approval, parse_proposal_key};
use crate::report::{self, ReportId, ReportState};
use crate::request::{self, RequestId, RequestState};
use crate::time::Timestamp;

/// A content document of a community.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum DocId {
    /// Description and norms; written by admins and moderators.
    Community,
    /// One entry per member; each member writes only their own.
    Profiles,
    /// One help request with its offers and its match.
    Request(RequestId),
    /// One moderation report; readable by moderators and its reporter only.
    Report(ReportId),
    /// One conversation; readable and writable by its participants only.
    Conversation(ConversationId),
}

impl DocId {
    /// Every document a community has from its start.
    pub const FIXED: [DocId; 2] = [DocId::Community, DocId::Profiles];

    /// The stable name used in envelopes, storage and logs:
    /// `community`, `profiles`, `request/<requester>.<nonce>`.
    pub fn name(&self) -> String {
        match self {
            DocId::Community => "community".into(),
            DocId::Profiles => "profiles".into(),
            DocId::Request(id) => format!("request/{id}"),
            DocId::Report(id) => format!("report/{id}"),
            DocId::Conversation(id) => format!("conversation/{id}"),
        }
    }

    /// Whether `reader` may receive this document, given their role
    /// (`None`: not a member). Reports go to moderators and their reporter
    /// only; conversations to their participants while members;
    /// everything else to anyone the replica shares with.
    pub fn readable_by(&self, reader: &MemberId, role: Option<Role>) -> bool {
        match self {
            DocId::Report(id) => id.reporter == *reader || role >= Some(Role::Moderator),
            DocId::Conversation(id) => id.has(reader) && role.is_some(),
            _ => true,
        }
    }

    /// Whether only some members may read it (reports, conversations):
    /// left out of what is shared without a known reader.
    pub fn is_private(&self) -> bool {
        matches!(self, DocId::Report(_) | DocId::Conversation(_))
    }

    /// Parses a document name.
    pub fn parse(s: &str) -> Option<DocId> {
        Self::parse_with(s, RequestId::parse, ReportId::parse, ConversationId::parse)
    }

    /// [`DocId::parse`] for a name this replica stored after validating it
    /// (or will validate before storing): skips the curve-point check of
    /// the author's key, a few microseconds each.
    pub fn parse_stored(s: &str) -> Option<DocId> {
        Self::parse_with(
            s,
            RequestId::parse_stored,
            ReportId::parse_stored,
            ConversationId::parse_stored,
        )
    }

    fn parse_with(
        s: &str,
        request: fn(&str) -> Option<RequestId>,
        report: fn(&str) -> Option<ReportId>,
        conversation: fn(&str) -> Option<ConversationId>,
    ) -> Option<DocId> {
        match s {
            "community" => Some(DocId::Community),
            "profiles" => Some(DocId::Profiles),
            _ => s
                .strip_prefix("request/")
                .and_then(request)
                .map(DocId::Request)
                .or_else(|| {
                    s.strip_prefix("report/")
                        .and_then(report)
                        .map(DocId::Report)
                })
                .or_else(|| {
                    s.strip_prefix("conversation/")
                        .and_then(conversation)
                        .map(DocId::Conversation)
                }),
        }
    }
}

impl fmt::Display for DocId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// The Automerge actor id of a member: their public key.
pub fn actor_of(member: &MemberId) -> ActorId {
    ActorId::from(member.as_bytes().as_slice())
}

/// The authority-log heads a change cites live in its Automerge commit
/// message, so the change hash covers them: a signature on an author's
/// later change then vouches for them too (see `SignedChange::decode`).
const AUTH_PREFIX: &str = "karmyq-auth:";

/// Separates the authority heads from the author's previous change in a
/// commit message.
const PREVIOUS: &str = ";previous:";

/// Most authority heads a change may cite.
const MAX_AUTH_HEADS: usize = 64;

/// Names one change in one document: a digest of the document's name and
/// the change's hash. A change's commit message may name its author's
/// previous change in a public document by its link, so a signature on the
/// change vouches for that one too, across documents: a batch then checks
/// about one signature per author instead of one per author and document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Link(pub [u8; 32]);

impl Link {
    /// The link to change `hash` in `doc`.
    pub fn of(doc: &DocId, hash: &ChangeHash) -> Link {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(b"karmyq-link");
        h.update(doc.name().as_bytes());
        h.update([0]);
        h.update(hash.0);
        Link(h.finalize().into())
    }
}

/// The commit message of a change made on the authority `heads`, after its
/// author's `previous` change in a public document (if known).
pub fn auth_message(heads: &[OpHash], previous: Option<Link>) -> String {
    let hexes: Vec<String> = heads.iter().map(ToString::to_string).collect();
    let mut message = format!("{AUTH_PREFIX}{}", hexes.join(","));
    if let Some(link) = previous {
        message.push_str(PREVIOUS);
        message.push_str(&hex::encode(link.0));
    }
    message
}

fn parse_auth_message(message: Option<&str>) -> Option<(Vec<OpHash>, Option<Link>)> {
    let rest = message?.strip_prefix(AUTH_PREFIX)?;
    let (list, previous) = match rest.split_once(PREVIOUS) {
        Some((list, link)) => (list, Some(Link(crate::identity::decode_hex32(link).ok()?))),
        None => (rest, None),
    };
    let heads: Vec<OpHash> = list
        .split(',')
        .map(OpHash::from_hex)
        .collect::<Result<_>>()
        .ok()?;
    (!heads.is_empty() && heads.len() <= MAX_AUTH_HEADS).then_some((heads, previous))
}

/// The signed facts about one change. The signature covers every field
/// but itself, under the change-envelope tag; the authority heads are
/// inside the change (see [`auth_message`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The community it belongs to (so it cannot be replayed elsewhere).
    pub community: CommunityId,
    /// The document's name (kept as text so an unknown one is reported as such).
    pub doc: String,
    /// The Automerge change hash.
    pub change_hash: [u8; 32],
    /// The author, whose key is also the change's actor.
    pub author: MemberId,
    /// The author's signature.
    pub signature: Signature,
}

#[derive(Serialize)]
struct Signed<'a> {
    community: &'a CommunityId,
    doc: &'a str,
    change_hash: &'a [u8; 32],
    author: &'a MemberId,
}

impl Envelope {
    fn signed_bytes(&self) -> Vec<u8> {
        codec::encode(&Signed {
            community: &self.community,
            doc: &self.doc,
            change_hash: &self.change_hash,
            author: &self.author,
        })
    }
}

/// A change with its envelope, as stored and sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedChange {
    /// The signed facts.
    pub envelope: Envelope,
    /// The Automerge change bytes.
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
}

impl SignedChange {
    /// Signs a change made by `keys` (committed with [`auth_message`]).
    ///
    /// The change travels and is kept as Automerge encodes it, not
    /// DEFLATE-compressed: every replica decodes every change it receives,
    /// and inflating was a tenth of a device's work to take a catch-up
    /// (~10% of its preparing threads' time in a profile), for ~4% fewer
    /// bytes on the catch-up bench's requests. A change signed compressed
    /// (as before) is read the same: its hash is that of its raw form.
    pub fn sign(community: CommunityId, doc: &DocId, change: &Change, keys: &Keypair) -> Self {
        let mut envelope = Envelope {
            community,
            doc: doc.name(),
            change_hash: change.hash().0,
            author: keys.member_id(),
            signature: Signature::from_bytes([0; 64]),
        };
        envelope.signature = keys.sign(SigningTag::ChangeEnvelope, &envelope.signed_bytes());
        SignedChange {
            envelope,
            bytes: change.raw_bytes().to_vec(),
        }
    }

    /// Checks everything but the signature: community, document name,
    /// bytes, hash, actor, and the authority heads inside the change.
    ///
    /// The signature is checked apart ([`Authentic::verify_signature`]) so
    /// that a batch can check only each author's newest change: every change
    /// an author makes in a document depends on their previous one, so the
    /// hash chain under a verified signature vouches for all that came before.
    pub fn decode(&self, community: CommunityId) -> std::result::Result<Authentic, Rejection> {
        let env = &self.envelope;
        if env.community != community {
            return Err(Rejection::WrongCommunity);
        }
        let doc = DocId::parse(&env.doc).ok_or(Rejection::UnknownDocument)?;
        let change = Change::try_from(self.bytes.as_slice()).map_err(|_| Rejection::Malformed)?;
        if change.hash().0 != env.change_hash {
            return Err(Rejection::HashMismatch);
        }
        if *change.actor_id() != actor_of(&env.author) {
            return Err(Rejection::ActorMismatch);
        }
        let (auth_heads, previous) =
            parse_auth_message(change.message()).ok_or(Rejection::Malformed)?;
        Ok(Authentic {
            doc,
            change,
            auth_heads,
            previous,
            signed: self.clone(),
        })
    }

    /// [`SignedChange::decode`] and the signature: for a change on its own.
    pub fn authenticate(
        &self,
        community: CommunityId,
    ) -> std::result::Result<Authentic, Rejection> {
        let authentic = self.decode(community)?;
        authentic.verify_signature()?;
        Ok(authentic)
    }
}

/// A request change judged by the request rules ahead of authorizing it
/// ([`Authentic::judge_request`]): the verdict for an author who is a
/// member, and for one who moderates (the rules differ only there).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RequestVerdicts {
    member: std::result::Result<(), Rejection>,
    moderator: std::result::Result<(), Rejection>,
}

impl RequestVerdicts {
    /// Refused for any author.
    pub(crate) fn refused(reason: Rejection) -> Self {
        RequestVerdicts {
            member: Err(reason.clone()),
            moderator: Err(reason),
        }
    }
}

/// An author's change in a document: its number in the author's sequence
/// there (Automerge's `seq`) and its hash.
pub type Latest = (u64, ChangeHash);

/// What was checked of a change before [`Authentic::authorize_seen`].
#[derive(Debug)]
pub(crate) enum Ahead {
    /// Nothing: every check runs. `latest`: the author's latest change in
    /// the document that the replica holds.
    Nothing { latest: Option<Latest> },
    /// This replica's own transaction just made it, on the document it is
    /// authorized on: its ops hold ([`Authentic::ops_hold`]).
    OwnWrite,
    /// Its ops were checked and the request rules judged, on another
    /// document holding the same past ([`Authentic::judge_request`]); and
    /// its place in its author's sequence, unless `latest` is given. That
    /// was checked on a document built from nothing, so it holds only for
    /// a document the replica builds from the same changes; for any other,
    /// `latest` is the author's latest change the replica holds, and the
    /// sequence is checked against it here.
    Judged {
        verdicts: RequestVerdicts,
        latest: Option<Option<Latest>>,
    },
}

/// A decoded change whose hash and actor hold; not yet authorized.
#[derive(Debug, Clone)]
pub struct Authentic {
    /// Which document.
    pub doc: DocId,
    /// The decoded change.
    pub change: Change,
    /// The authority heads the change cites.
    pub auth_heads: Vec<OpHash>,
    /// The author's previous change in a public document, if it names one.
    pub previous: Option<Link>,
    /// What was received.
    pub signed: SignedChange,
}

impl Authentic {
    /// Checks the envelope's signature (strict ed25519).
    pub fn verify_signature(&self) -> std::result::Result<(), Rejection> {
        let env = &self.signed.envelope;
        env.author
            .verify(
                SigningTag::ChangeEnvelope,
                &env.signed_bytes(),
                &env.signature,
            )
            .map_err(|_| Rejection::BadSignature)
    }

    /// The author.
    pub fn author(&self) -> MemberId {
        self.signed.envelope.author
    }

    /// Authorizes the change against the authority state its author saw
    /// (`at`: the log resolved at the envelope's `auth_heads`, see
    /// [`crate::AuthorityLog::at`]) and the document's per-path rules.
    ///
    /// Judging a change only by the state it cites makes the verdict the
    /// same on every replica, whatever else it holds, so replicas converge.
    ///
    /// `latest`: the author's latest change in this document that the
    /// replica holds (see [`Authentic::sequence_holds`]).
    pub fn authorize(
        &self,
        at: &Resolved,
        doc: &Automerge,
        latest: Option<Latest>,
    ) -> std::result::Result<(), Rejection> {
        self.authorize_seen(at, doc, Ahead::Nothing { latest })
    }

    /// Judges this change (decoded: `change`, in request `id`) by the
    /// request rules, on `seen`: the request as its author saw it, that is
    /// as of the change's dependencies ([`Authentic::request_seen`], or
    /// replayed), `Err` if that could not be read. That depends only on the
    /// change's past, so any replica holding that past gives the same
    /// verdicts.
    pub(crate) fn judge_request(
        &self,
        id: &RequestId,
        seen: &std::result::Result<Option<RequestState>, Rejection>,
        change: &ExpandedChange,
    ) -> RequestVerdicts {
        let [member, moderator] =
            self.check_request(id, seen, change, [Role::Member, Role::Moderator]);
        RequestVerdicts { member, moderator }
    }

    /// Request `id` as this change's author saw it: `doc`, which holds the
    /// change's dependencies, read at them (`None`: not created there).
    pub(crate) fn request_seen(
        &self,
        id: &RequestId,
        doc: &Automerge,
    ) -> std::result::Result<Option<RequestState>, Rejection> {
        let deps = self.change.deps();
        if deps.is_empty() {
            return Ok(None);
        }
        RequestState::read(doc, *id, Some(deps)).map_err(|_| Rejection::Malformed)
    }

    /// Checks the change's place in its author's sequence, as Automerge
    /// numbers it: an actor's changes in a document are numbered 1, 2, ...,
    /// each depending on the one before, and a change numbers its ops from
    /// above every op in its past. `latest` is the author's latest change
    /// in the document that the replica holds (`doc` holds it, and the
    /// change's dependencies): this change must be the next, and depend on
    /// it. Honest writers do nothing else; Automerge panics at a gap, and
    /// writes a document it cannot load from a change that does not depend
    /// on its actor's previous one or that reuses op numbers.
    pub(crate) fn sequence_holds(
        &self,
        doc: &Automerge,
        latest: Option<Latest>,
    ) -> std::result::Result<(), Rejection> {
        let change = &self.change;
        if change.seq() != latest.map_or(1, |(seq, _)| seq + 1) {
            return Err(Rejection::OutOfSequence);
        }
        let deps = change.deps();
        let mut past_max_op = 0;
        for dep in deps {
            let meta = doc
                .get_change_meta_by_hash(dep)
                .ok_or(Rejection::OutOfSequence)?;
            past_max_op = past_max_op.max(meta.max_op);
        }
        if change.start_op().get() <= past_max_op {
            return Err(Rejection::OutOfSequence);
        }
        if let Some((_, previous)) = latest {
            // In the past of the dependencies: held, and not among the
            // changes they do not reach.
            let in_past = doc.get_change_meta_by_hash(&previous).is_some()
                && !doc
                    .get_changes_meta(deps)
                    .iter()
                    .any(|m| m.hash == previous);
            if !in_past {
                return Err(Rejection::OutOfSequence);
            }
        }
        Ok(())
    }

    /// Checks that each op names only what the document held at the
    /// change's dependencies or what an earlier op of the change made: the
    /// object it writes in (visible there), and the values it overwrites
    /// (its predecessors, visible under its key). `doc` holds the
    /// dependencies; `change` is this change decoded.
    ///
    /// Honest writers do nothing else, and Automerge takes a change that
    /// does not, but then panics applying it or writes a document it cannot
    /// load: one member could break every replica of a community.
    pub(crate) fn ops_hold(
        &self,
        doc: &Automerge,
        change: &ExpandedChange,
    ) -> std::result::Result<(), Rejection> {
        let deps = self.change.deps();
        let exid = |o: &OpId| ExId::Id(o.0, o.1.clone(), usize::MAX);
        // The values visible under each (object, key) this change wrote,
        // and the objects it made.
        let mut written: HashMap<(&ObjectId, &str), Vec<OpId>> = HashMap::new();
        let mut made: HashSet<OpId> = HashSet::new();
        for (op, counter) in change.operations.iter().zip(change.start_op.get()..) {
            let Key::Map(key) = &op.key else {
                return Err(Rejection::DisallowedOperation);
            };
            if op.insert {
                return Err(Rejection::DisallowedOperation);
            }
            let obj = match &op.obj {
                ObjectId::Root => Some(ExId::Root),
                ObjectId::Id(o) if made.contains(o) => None,
                ObjectId::Id(o) => {
                    let parent = doc
                        .parents_at(exid(o), deps)
                        .ok()
                        .and_then(|mut p| p.next());
                    if !parent.is_some_and(|p| p.visible) {
                        return Err(Rejection::DanglingOp);
                    }
                    Some(exid(o))
                }
            };
            let slot = (&op.obj, key.as_str());
            let visible = match (written.remove(&slot), obj) {
                (Some(visible), _) => visible,
                (None, None) => Vec::new(),
                (None, Some(obj)) => doc
                    .get_all_at(obj, key.as_str(), deps)
                    .map_err(|_| Rejection::DanglingOp)?
                    .into_iter()
                    .filter_map(|(_, id)| match id {
                        ExId::Id(counter, actor, _) => Some(OpId(counter, actor)),
                        ExId::Root => None,
                    })
                    .collect(),
            };
            let overwrites = op.pred.iter().all(|p| visible.contains(p));
            let needs_pred = matches!(op.action, OpType::Delete | OpType::Increment(_));
            if !overwrites || (needs_pred && op.pred.is_empty()) {
                return Err(Rejection::DanglingOp);
            }
            let id = OpId(counter, change.actor_id.clone());
            let after = if let OpType::Increment(_) = op.action {
                // A counter stays what is visible.
                visible
            } else {
                let mut after: Vec<OpId> = visible
                    .into_iter()
                    .filter(|v| !op.pred.iter().any(|p| p == v))
                    .collect();
                if !matches!(op.action, OpType::Delete) {
                    after.push(id.clone());
                }
                after
            };
            written.insert(slot, after);
            if matches!(op.action, OpType::Make(_)) {
                made.insert(id);
            }
        }
        Ok(())
    }

    /// The request rules' verdict on this change for an author of each of
    /// `roles` (see [`Authentic::judge_request`]).
    fn check_request<const N: usize>(
        &self,
        id: &RequestId,
        seen: &std::result::Result<Option<RequestState>, Rejection>,
        change: &ExpandedChange,
        roles: [Role; N],
    ) -> [std::result::Result<(), Rejection>; N] {
        let Ok(seen) = seen else {
            return std::array::from_fn(|_| Err(Rejection::Malformed));
        };
        let time = Timestamp::from_millis(self.change.timestamp());
        roles.map(|role| {
            request::check_change(
                &self.signed.envelope.community,
                id,
                &self.author(),
                role,
                change,
                seen.as_ref(),
                time,
            )
        })
    }

    /// [`Authentic::authorize`], skipping what was checked `ahead`.
    pub(crate) fn authorize_seen(
        &self,
        at: &Resolved,
        doc: &Automerge,
        ahead: Ahead,
    ) -> std::result::Result<(), Rejection> {
        let author = self.author();
        let Some(role) = at.role(&author) else {
            return Err(if at.was_removed(&author) {
                Rejection::AuthorRemoved(author)
            } else {
                Rejection::NotAMember(author)
            });
        };
        // Decoded once, by the first check that needs it (a request change
        // judged ahead needs none).
        let decoded = std::cell::OnceCell::new();
        let expanded = || decoded.get_or_init(|| self.change.decode());
        let judged = match ahead {
            Ahead::Nothing { latest } => {
                self.sequence_holds(doc, latest)?;
                self.ops_hold(doc, expanded())?;
                None
            }
            Ahead::OwnWrite => None,
            Ahead::Judged { verdicts, latest } => {
                if let Some(latest) = latest {
                    self.sequence_holds(doc, latest)?;
                }
                Some(verdicts)
            }
        };
        let needed = match &self.doc {
            DocId::Request(id) => {
                match judged {
                    Some(verdicts) if role >= Role::Moderator => verdicts.moderator?,
                    Some(verdicts) => verdicts.member?,
                    // Not judged ahead: for this author's role alone.
                    None => {
                        let seen = self.request_seen(id, doc);
                        let [verdict] = self.check_request(id, &seen, expanded(), [role]);
                        verdict?;
                    }
                }
                Role::Member
            }
            DocId::Report(id) => {
                let deps = self.change.deps();
                let filed = !deps.is_empty()
                    && ReportState::read(doc, *id, Some(deps))
                        .map_err(|_| Rejection::Malformed)?
                        .is_some();
                report::check_change(id, &author, role, expanded(), filed)?;
                Role::Member
            }
            DocId::Conversation(id) => {
                conversation::check_change(id, &author, expanded(), doc, self.change.deps())?;
                Role::Member
            }
            _ => self.check_paths(expanded())?,
        };
        if role < needed {
            return Err(if at.highest_role(&author).is_some_and(|r| r >= needed) {
                Rejection::RoleRevoked(author)
            } else {
                Rejection::NotPermitted
            });
        }
        Ok(())
    }

    /// Checks each operation against the document's schema and returns the
    /// role the change needs.
    fn check_paths(&self, expanded: &ExpandedChange) -> std::result::Result<Role, Rejection> {
        let own = actor_of(&self.author());
        let own_key = self.author().to_string();
        let rules = match self.doc {
            DocId::Community => &COMMUNITY_RULES,
            DocId::Profiles => &PROFILE_RULES,
            DocId::Request(_) | DocId::Report(_) | DocId::Conversation(_) => {
                return Err(Rejection::UnknownDocument);
            }
        };
        let mut needed = Role::Member;
        for op in &expanded.operations {
            let Key::Map(key) = &op.key else {
                return Err(Rejection::DisallowedOperation);
            };
            let role = match &op.obj {
                ObjectId::Root => (rules.root)(key, &op.action, &own_key)?,
                ObjectId::Id(id) => {
                    (rules.entry)(key, &op.action)?;
                    match (rules.owned_objects, *id.actor() == own) {
                        (true, true) => Role::Member,
                        (true, false) => return Err(Rejection::ForeignEntry),
                        (false, _) => rules.role,
                    }
                }
            };
            needed = needed.max(role);
        }
        Ok(needed)
    }
}

/// The schema of one document kind.
struct Rules {
    /// Role needed to write inside the document's objects.
    role: Role,
    /// Whether each member writes only inside objects they created (any
    /// role), instead.
    owned_objects: bool,
    /// Check of an op on the root map (key, action, the author's hex id):
    /// the role it needs.
    root: fn(&str, &OpType, &str) -> std::result::Result<Role, Rejection>,
    /// Check of an op inside an entry object.
    entry: fn(&str, &OpType) -> std::result::Result<(), Rejection>,
}

static PROFILE_RULES: Rules = Rules {
    role: Role::Member,
    owned_objects: true,
    root: |key, action, own| {
        if key != own {
            return Err(Rejection::ForeignEntry);
        }
        match action {
            OpType::Make(automerge::ObjType::Map) | OpType::Delete => Ok(Role::Member),
            _ => Err(Rejection::DisallowedOperation),
        }
    },
    entry: |key, action| {
        let field = ProfileField::parse(key).ok_or_else(|| Rejection::InvalidField(key.into()))?;
        match action {
            OpType::Delete => Ok(()),
            OpType::Put(value) if field.accepts(value) => Ok(()),
            OpType::Put(_) => Err(Rejection::InvalidField(key.into())),
            _ => Err(Rejection::DisallowedOperation),
        }
    },
};

static COMMUNITY_RULES: Rules = Rules {
    role: Role::Moderator,
    owned_objects: false,
    root: |key, action, own| match (key, action) {
        ("description", OpType::Put(ScalarValue::Str(s))) if s.chars().count() <= MAX_TEXT => {
            Ok(Role::Moderator)
        }
        ("description", OpType::Delete) => Ok(Role::Moderator),
        (k, OpType::Make(automerge::ObjType::Map) | OpType::Delete)
            if k.strip_prefix(NORM_PREFIX).is_some_and(valid_norm_id) =>
        {
            Ok(Role::Moderator)
        }
        // A member proposes a norm as flat keys under their own id
        // (`proposal:<id>/title`...); they or a moderator may delete them.
        (k, OpType::Put(ScalarValue::Str(_)) | OpType::Delete)
            if k.starts_with(PROPOSAL_PREFIX) =>
        {
            let (id, field) =
                parse_proposal_key(k).ok_or_else(|| Rejection::InvalidField(k.into()))?;
            let max = match field {
                "title" => 120,
                "description" => MAX_TEXT,
                "category" => 40,
                _ => return Err(Rejection::InvalidField(k.into())),
            };
            if let OpType::Put(ScalarValue::Str(s)) = action
                && s.chars().count() > max
            {
                return Err(Rejection::InvalidField(k.into()));
            }
            match (id.proposer.to_string() == own, action) {
                (true, _) => Ok(Role::Member),
                (false, OpType::Delete) => Ok(Role::Moderator),
                (false, _) => Err(Rejection::ForeignEntry),
            }
        }
        // Each member approves (or stops approving) for themselves only.
        (k, OpType::Put(ScalarValue::Boolean(true)) | OpType::Delete)
            if k.starts_with(APPROVE_PREFIX) =>
        {
            let (_, member) = parse_approval(k).ok_or_else(|| Rejection::InvalidField(k.into()))?;
            if member.to_string() == own {
                Ok(Role::Member)
            } else {
                Err(Rejection::ForeignEntry)
            }
        }
        (k, OpType::Put(_) | OpType::Make(_) | OpType::Delete) => {
            Err(Rejection::InvalidField(k.into()))
        }
        _ => Err(Rejection::DisallowedOperation),
    },
    entry: |key, action| {
        let max = match key {
            "title" => 120,
            "description" => MAX_TEXT,
            "category" => 40,
            _ => return Err(Rejection::InvalidField(key.into())),
        };
        match action {
            OpType::Put(ScalarValue::Str(s)) if s.chars().count() <= max => Ok(()),
            OpType::Delete => Ok(()),
            OpType::Put(_) => Err(Rejection::InvalidField(key.into())),
            _ => Err(Rejection::DisallowedOperation),
        }
    },
};

/// Longest description or bio, in characters.
pub const MAX_TEXT: usize = 4_000;
/// Root keys of norm entries in the `community` document start with this.
pub const NORM_PREFIX: &str = "norm:";
/// Keys of skills in a profile entry start with this; the value is `true`.
pub const SKILL_PREFIX: &str = "skill:";

/// A norm id: 1–64 characters of `[a-z0-9-]`.
pub fn valid_norm_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The fields of a profile entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProfileField {
    Name,
    Bio,
    Location,
    Availability,
    Skill,
}

impl ProfileField {
    pub(crate) fn parse(key: &str) -> Option<Self> {
        match key {
            "name" => Some(ProfileField::Name),
            "bio" => Some(ProfileField::Bio),
            "location" => Some(ProfileField::Location),
            "availability" => Some(ProfileField::Availability),
            k => k
                .strip_prefix(SKILL_PREFIX)
                .filter(|s| valid_skill(s))
                .map(|_| ProfileField::Skill),
        }
    }

    fn accepts(self, value: &ScalarValue) -> bool {
        match (self, value) {
            (ProfileField::Name, ScalarValue::Str(s)) => crate::authority::valid_name(s),
            (ProfileField::Bio, ScalarValue::Str(s)) => s.chars().count() <= 1_000,
            (ProfileField::Location, ScalarValue::Str(s)) => valid_geohash(s),
            (ProfileField::Availability, ScalarValue::Str(s)) => s.chars().count() <= 200,
            (ProfileField::Skill, ScalarValue::Boolean(true)) => true,
            _ => false,
        }
    }
}

/// A skill tag: 1–40 characters of `[a-z0-9-]`.
pub fn valid_skill(tag: &str) -> bool {
    (1..=40).contains(&tag.len())
        && tag
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// A coarse location: a geohash of at most 5 characters (about 5 km).
pub fn valid_geohash(s: &str) -> bool {
    (1..=5).contains(&s.len())
        && s.bytes()
            .all(|b| b"0123456789bcdefghjkmnpqrstuvwxyz".contains(&b))
}

/// A string value of a map, if the key holds one.
pub(crate) fn get_str(
    doc: &impl automerge::ReadDoc,
    obj: &automerge::ObjId,
    key: &str,
) -> Result<Option<String>> {
    Ok(doc
        .get(obj, key)?
        .and_then(|(v, _)| v.as_str().map(str::to_owned)))
}

/// A map's entries at `heads` (now if `None`), in key order.
pub(crate) fn map_entries<'a>(
    doc: &'a Automerge,
    obj: &automerge::ObjId,
    heads: Option<&[ChangeHash]>,
) -> Vec<automerge::iter::MapRangeItem<'a>> {
    match heads {
        Some(h) => doc.map_range_at(obj, .., h).collect(),
        None => doc.map_range(obj, ..).collect(),
    }
}

/// Decodes a change hash from stored bytes.
pub(crate) fn change_hash(bytes: &[u8]) -> Result<ChangeHash> {
    ChangeHash::try_from(bytes).map_err(|_| Error::Corrupt("change hash".into()))
}
