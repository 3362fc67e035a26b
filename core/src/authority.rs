//! The authority log: who is in a community, with which role, under which
//! settings.
//!
//! A small DAG of signed, hash-linked [`Op`]s kept apart from the content
//! documents. [`AuthorityLog`] holds the ops whose parents are known (the rest
//! wait in a pending set) and [`AuthorityLog::resolve`] turns them into a
//! [`Resolved`] state. Resolution is a pure function of the *set* of ops:
//!
//! 1. the ops are put in one deterministic linear order (a topological order
//!    whose ties are broken by `(created_at, hash)`);
//! 2. each op is checked against the state of its causal past (its
//!    ancestors that are valid), never against ops it did not see;
//! 3. strong remove: an op by X concurrent with a valid removal of X is void.
//!    Removals are applied most senior remover first (founder, then earlier
//!    admission), so of two admins removing each other concurrently the more
//!    senior wins. Steps 2–3 repeat until the set of voided ops stops growing.

use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::codec;
use crate::error::{Error, Rejection, Result};
use crate::identity::{Keypair, MemberId, Signature, SigningTag, decode_hex32};
use crate::time::Timestamp;

macro_rules! hash_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub struct $name([u8; 32]);

        impl $name {
            /// The raw 32 bytes.
            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }
            /// Wraps 32 raw bytes.
            pub fn from_bytes(bytes: [u8; 32]) -> Self {
                Self(bytes)
            }
            /// Parses the 64-character hex form.
            pub fn from_hex(s: &str) -> Result<Self> {
                Ok(Self(decode_hex32(s)?))
            }
            /// The first 8 hex characters, for logs.
            pub fn fmt_short(&self) -> String {
                hex::encode(&self.0[..4])
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex::encode(self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.fmt_short())
            }
        }

        impl std::str::FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                Self::from_hex(s)
            }
        }
    };
}

hash_id!(
    /// A community: the SHA-256 hash of its genesis op.
    CommunityId
);
hash_id!(
    /// An authority op: the SHA-256 hash of its signed encoding.
    OpHash
);

/// A member's role. Ordered: `Member < Moderator < Admin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Role {
    /// Everything about their own requests, offers, profile, messages.
    Member,
    /// Also admits, removes members, hides, resolves reports, edits norms.
    Moderator,
    /// Also settings, roles, invites, removing anyone but a more senior admin.
    Admin,
}

impl Role {
    /// The stable lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Member => "member",
            Role::Moderator => "moderator",
            Role::Admin => "admin",
        }
    }

    /// Parses the lowercase name.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "member" => Some(Role::Member),
            "moderator" => Some(Role::Moderator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// Who may join without being admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Visibility {
    /// Anyone may `Join`; listed in the server's public directory.
    Public,
    /// Joining needs an invite or an admission.
    Private,
}

/// Default time-to-live of a request, in days, by urgency (each 1–90).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestTtlDays {
    /// Critical requests.
    pub critical: u16,
    /// High urgency.
    pub high: u16,
    /// Medium urgency.
    pub medium: u16,
    /// Low urgency.
    pub low: u16,
}

/// A community's settings (DOMAIN.md figures marked *setting*).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// Most members at once (default 150).
    pub member_limit: u32,
    /// Request time-to-live by urgency.
    pub request_ttl_days: RequestTtlDays,
    /// Karma for the helper of a completed match (default 10).
    pub karma_helper: u32,
    /// Karma for the requester of a completed match (default 5).
    pub karma_requester: u32,
    /// Days messages stay visible (default 90).
    pub message_retention_days: u16,
    /// Days notifications are kept (default 30).
    pub notification_retention_days: u16,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            member_limit: 150,
            request_ttl_days: RequestTtlDays {
                critical: 2,
                high: 7,
                medium: 30,
                low: 60,
            },
            karma_helper: 10,
            karma_requester: 5,
            message_retention_days: 90,
            notification_retention_days: 30,
        }
    }
}

impl Settings {
    /// Checks every figure is within its range.
    pub fn validate(&self) -> std::result::Result<(), Rejection> {
        let t = self.request_ttl_days;
        if !(2..=10_000).contains(&self.member_limit) {
            return Err(Rejection::InvalidSettings("member_limit"));
        }
        if [t.critical, t.high, t.medium, t.low]
            .iter()
            .any(|d| !(1..=90).contains(d))
        {
            return Err(Rejection::InvalidSettings("request_ttl_days"));
        }
        if self.karma_helper > 1_000 || self.karma_requester > 1_000 {
            return Err(Rejection::InvalidSettings("karma"));
        }
        if !(1..=3_650).contains(&self.message_retention_days) {
            return Err(Rejection::InvalidSettings("message_retention_days"));
        }
        if !(1..=365).contains(&self.notification_retention_days) {
            return Err(Rejection::InvalidSettings("notification_retention_days"));
        }
        Ok(())
    }
}

/// A change of name, visibility or settings; absent fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettingsPatch {
    /// A new name.
    pub name: Option<String>,
    /// A new visibility.
    pub visibility: Option<Visibility>,
    /// New settings.
    pub settings: Option<Settings>,
}

/// The public key of an invite; its secret is the link-able token.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct InviteKey(pub MemberId);

impl fmt::Debug for InviteKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InviteKey({})", self.0.fmt_short())
    }
}

/// Proof that the joiner holds an invite's secret: the invite key's
/// signature over the community and the joiner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InviteProof {
    /// Which invite.
    pub invite_key: InviteKey,
    /// Signature by the invite secret over `(community, joiner)`.
    pub signature: Signature,
}

impl InviteProof {
    /// Signs a proof that `joiner` holds `invite`.
    pub fn new(invite: &Keypair, community: CommunityId, joiner: MemberId) -> Self {
        InviteProof {
            invite_key: InviteKey(invite.member_id()),
            signature: invite.sign(
                SigningTag::InviteProof,
                &codec::encode(&(community, joiner)),
            ),
        }
    }

    fn verify(&self, community: CommunityId, joiner: MemberId) -> Result<()> {
        self.invite_key.0.verify(
            SigningTag::InviteProof,
            &codec::encode(&(community, joiner)),
            &self.signature,
        )
    }
}

/// What an authority op does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum OpBody {
    /// Founds the community; its hash is the [`CommunityId`].
    Genesis {
        /// Display name.
        name: String,
        /// Short description for the directory.
        description: String,
        /// Public or private.
        visibility: Visibility,
        /// Initial settings.
        settings: Settings,
        /// Random bytes so that two communities founded alike differ.
        nonce: [u8; 16],
    },
    /// The author joins (public community, or with an invite).
    Join {
        /// The invite, for a private community.
        invite: Option<InviteProof>,
    },
    /// An admin or moderator admits a member.
    Admit {
        /// Who.
        member: MemberId,
        /// With which role (moderators admit members only).
        role: Role,
    },
    /// An admin changes a member's role.
    SetRole {
        /// Who.
        member: MemberId,
        /// The new role.
        role: Role,
    },
    /// An admin or moderator removes a member.
    Remove {
        /// Who.
        member: MemberId,
        /// Why (shown to moderators).
        reason: String,
    },
    /// The author leaves.
    Leave,
    /// An admin creates an invite.
    CreateInvite {
        /// The invite's public key.
        invite_key: InviteKey,
        /// When it stops working.
        expires_at: Timestamp,
        /// How many joins it allows.
        max_uses: u32,
    },
    /// An admin revokes an invite.
    RevokeInvite {
        /// Which invite.
        invite_key: InviteKey,
    },
    /// An admin changes name, visibility or settings.
    UpdateSettings(SettingsPatch),
}

/// An authority op, before signing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// The community (absent only in the genesis op, whose hash names it).
    pub community: Option<CommunityId>,
    /// The heads of the log the author saw (empty only for genesis).
    pub parents: Vec<OpHash>,
    /// Who signs it.
    pub author: MemberId,
    /// When, by the author's clock.
    pub created_at: Timestamp,
    /// What it does.
    pub body: OpBody,
}

/// An op with its author's signature. Its [`OpHash`] covers both.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedOp {
    /// The op.
    pub op: Op,
    /// The author's signature over the op's canonical encoding.
    pub signature: Signature,
}

impl SignedOp {
    /// Signs an op. The author must be the key pair's member id.
    pub fn sign(op: Op, keys: &Keypair) -> Result<Self> {
        if op.author != keys.member_id() {
            return Err(Error::InvalidArgument("op author is not the signer".into()));
        }
        let signature = keys.sign(SigningTag::AuthorityOp, &codec::encode(&op));
        Ok(SignedOp { op, signature })
    }

    /// The canonical bytes (what is hashed, stored and sent).
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Decodes canonical bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        codec::decode(bytes, "authority op")
    }

    /// The op's hash.
    pub fn hash(&self) -> OpHash {
        OpHash(Sha256::digest(self.encode()).into())
    }

    /// Checks the signature, the shape, and (for a join) the invite proof.
    /// `community` is `None` when checking a genesis op.
    pub fn authenticate(
        &self,
        community: Option<CommunityId>,
    ) -> std::result::Result<(), Rejection> {
        let op = &self.op;
        op.author
            .verify(SigningTag::AuthorityOp, &codec::encode(op), &self.signature)
            .map_err(|_| Rejection::BadSignature)?;
        match (&op.body, community) {
            (OpBody::Genesis { settings, .. }, None) => {
                if op.community.is_some() || !op.parents.is_empty() {
                    return Err(Rejection::Malformed);
                }
                settings.validate()
            }
            (OpBody::Genesis { .. }, Some(_)) => Err(Rejection::DuplicateGenesis),
            (_, None) => Err(Rejection::Malformed),
            (body, Some(id)) => {
                if op.community != Some(id) {
                    return Err(Rejection::WrongCommunity);
                }
                if op.parents.is_empty() {
                    return Err(Rejection::NoParents);
                }
                let unique: BTreeSet<_> = op.parents.iter().collect();
                if unique.len() != op.parents.len() {
                    return Err(Rejection::Malformed);
                }
                if let OpBody::Join {
                    invite: Some(proof),
                } = body
                {
                    proof
                        .verify(id, op.author)
                        .map_err(|_| Rejection::InviteInvalid("bad proof"))?;
                }
                Ok(())
            }
        }
    }
}

/// What [`AuthorityLog::insert`] did with an op.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inserted {
    /// Added, with any pending ops it released (in the order added).
    Added(Vec<OpHash>),
    /// Some parents are unknown: it waits.
    Pending,
    /// Already held.
    Duplicate,
}

/// The ops of one community: those whose parents are all known, and those
/// still waiting for a parent.
#[derive(Debug, Clone)]
pub struct AuthorityLog {
    id: CommunityId,
    ops: HashMap<OpHash, SignedOp>,
    pending: HashMap<OpHash, SignedOp>,
    children: HashSet<OpHash>,
}

impl AuthorityLog {
    /// A log from its genesis op.
    pub fn new(genesis: SignedOp) -> std::result::Result<Self, Rejection> {
        genesis.authenticate(None)?;
        let id = CommunityId(genesis.hash().0);
        let mut ops = HashMap::new();
        ops.insert(genesis.hash(), genesis);
        Ok(AuthorityLog {
            id,
            ops,
            pending: HashMap::new(),
            children: HashSet::new(),
        })
    }

    /// The community this log governs.
    pub fn community_id(&self) -> CommunityId {
        self.id
    }

    /// The genesis op's hash.
    pub fn genesis(&self) -> OpHash {
        OpHash(self.id.0)
    }

    /// How many ops are held (not counting pending ones).
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Never empty: the genesis op is always there.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Whether the op is held (pending ops are not).
    pub fn contains(&self, hash: &OpHash) -> bool {
        self.ops.contains_key(hash)
    }

    /// An op by hash.
    pub fn get(&self, hash: &OpHash) -> Option<&SignedOp> {
        self.ops.get(hash)
    }

    /// All held ops, in no particular order.
    pub fn ops(&self) -> impl Iterator<Item = (&OpHash, &SignedOp)> {
        self.ops.iter()
    }

    /// Ops waiting for a parent.
    pub fn pending(&self) -> impl Iterator<Item = (&OpHash, &SignedOp)> {
        self.pending.iter()
    }

    /// The ops no other held op names as a parent, sorted.
    pub fn heads(&self) -> Vec<OpHash> {
        let mut heads: Vec<OpHash> = self
            .ops
            .keys()
            .filter(|h| !self.children.contains(h))
            .copied()
            .collect();
        heads.sort();
        heads
    }

    /// Authenticates an op and adds it, or parks it until its parents arrive.
    pub fn insert(&mut self, op: SignedOp) -> std::result::Result<Inserted, Rejection> {
        let hash = op.hash();
        if self.ops.contains_key(&hash) || self.pending.contains_key(&hash) {
            return Ok(Inserted::Duplicate);
        }
        op.authenticate(Some(self.id))?;
        Ok(self.insert_authenticated(hash, op))
    }

    /// Adds an op that passed [`SignedOp::authenticate`] (`hash` is its
    /// hash), or parks it until its parents arrive.
    pub(crate) fn insert_authenticated(&mut self, hash: OpHash, op: SignedOp) -> Inserted {
        if self.ops.contains_key(&hash) || self.pending.contains_key(&hash) {
            return Inserted::Duplicate;
        }
        if !op.op.parents.iter().all(|p| self.ops.contains_key(p)) {
            self.pending.insert(hash, op);
            return Inserted::Pending;
        }
        let mut added = vec![hash];
        self.add(hash, op);
        // Release whatever waited on what was just added, until nothing moves.
        loop {
            let ready: Vec<OpHash> = self
                .pending
                .iter()
                .filter(|(_, p)| p.op.parents.iter().all(|h| self.ops.contains_key(h)))
                .map(|(h, _)| *h)
                .collect();
            if ready.is_empty() {
                break;
            }
            for h in ready {
                if let Some(p) = self.pending.remove(&h) {
                    self.add(h, p);
                    added.push(h);
                }
            }
        }
        Inserted::Added(added)
    }

    fn add(&mut self, hash: OpHash, op: SignedOp) {
        self.children.extend(op.op.parents.iter().copied());
        self.ops.insert(hash, op);
    }

    /// Resolves the held ops into members, roles, settings and invites.
    pub fn resolve(&self) -> Resolved {
        Resolver::new(self).run()
    }
}

/// A member in the resolved state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The member.
    pub id: MemberId,
    /// Current role.
    pub role: Role,
    /// When the op that admitted them (or their join) was made.
    pub admitted_at: Timestamp,
    /// 0 for the founder; smaller is more senior.
    pub seniority: u32,
}

/// An invite in the resolved state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invite {
    /// Its public key.
    pub key: InviteKey,
    /// Who created it.
    pub created_by: MemberId,
    /// When it stops working.
    pub expires_at: Timestamp,
    /// How many joins it allows.
    pub max_uses: u32,
    /// How many valid joins used it.
    pub uses: u32,
    /// Whether an admin revoked it.
    pub revoked: bool,
}

/// What a community's authority log says, now.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The community.
    pub community: CommunityId,
    /// Current name.
    pub name: String,
    /// Description given at genesis (the `community` document may refine it).
    pub description: String,
    /// Current visibility.
    pub visibility: Visibility,
    /// Current settings.
    pub settings: Settings,
    /// Current members.
    pub members: BTreeMap<MemberId, Member>,
    /// All invites ever created.
    pub invites: BTreeMap<InviteKey, Invite>,
    /// The log's heads.
    pub heads: Vec<OpHash>,
    /// Every op's verdict: `Ok` if effective, else why not.
    pub verdicts: HashMap<OpHash, std::result::Result<(), Rejection>>,
    cut: CutIndex,
}

impl Resolved {
    /// A member's current role, if a member.
    pub fn role(&self, member: &MemberId) -> Option<Role> {
        self.members.get(member).map(|m| m.role)
    }

    /// The member's role in the state `heads` describe (the causal past of
    /// those ops), or `None` if they were not a member there. `None` too if
    /// a head is unknown.
    pub fn role_at(&self, member: &MemberId, heads: &[OpHash]) -> Option<Role> {
        let cut = self.cut.cut_of(heads)?;
        self.cut.membership(member, &cut).map(|(role, _)| role)
    }

    /// Whether every head is a known op.
    pub fn knows(&self, heads: &[OpHash]) -> bool {
        heads.iter().all(|h| self.cut.index.contains_key(h))
    }

    /// Whether the member was ever removed (or left) by an effective op.
    pub fn was_removed(&self, member: &MemberId) -> bool {
        self.cut
            .affecting
            .get(member)
            .is_some_and(|ops| ops.iter().any(|&i| self.cut.kinds[i] == Some(Kind::Exit)))
    }
}

/// Bit set over op indices.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Self {
        Bits(vec![0; n.div_ceil(64)])
    }
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn get(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }
    fn intersects(&self, other: &Bits) -> bool {
        self.0.iter().zip(&other.0).any(|(a, b)| a & b != 0)
    }
    fn union(&mut self, other: &Bits) {
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            *a |= b;
        }
    }
}

/// How an op affects the member it targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Genesis (founder), Join, Admit: makes a member with a role.
    Entry(Role),
    /// SetRole.
    SetRole(Role),
    /// Remove, Leave.
    Exit,
}

/// What is needed to answer "what was X's role in the causal past of these
/// ops": the linear order, ancestor sets, and the effective ops per member.
#[derive(Debug, Clone, Default)]
struct CutIndex {
    index: HashMap<OpHash, usize>,
    /// `ancestors[i]`: the strict ancestors of op `i` (linear indices).
    ancestors: Vec<Bits>,
    kinds: Vec<Option<Kind>>,
    /// Effective ops that affect each member's membership, in linear order.
    affecting: HashMap<MemberId, Vec<usize>>,
    /// Each op's `created_at`.
    times: Vec<Timestamp>,
}

impl CutIndex {
    /// The causal past of `heads`, heads included.
    fn cut_of(&self, heads: &[OpHash]) -> Option<Bits> {
        let mut cut = Bits::new(self.ancestors.len());
        for h in heads {
            let i = *self.index.get(h)?;
            cut.union(&self.ancestors[i]);
            cut.set(i);
        }
        Some(cut)
    }

    fn concurrent(&self, a: usize, b: usize) -> bool {
        a != b && !self.ancestors[a].get(b) && !self.ancestors[b].get(a)
    }

    /// The member's role and entry position within `cut`, if a member there.
    /// Ops are taken in linear order; an entry concurrent with an exit in
    /// the cut does not count (remove wins).
    fn membership(&self, member: &MemberId, cut: &Bits) -> Option<(Role, usize)> {
        let ops = self.affecting.get(member)?;
        let exits: Vec<usize> = ops
            .iter()
            .copied()
            .filter(|&i| cut.get(i) && self.kinds[i] == Some(Kind::Exit))
            .collect();
        let mut state: Option<(Role, usize)> = None;
        for &i in ops.iter().filter(|&&i| cut.get(i)) {
            match self.kinds[i] {
                Some(Kind::Entry(role))
                    if state.is_none() && !exits.iter().any(|&x| self.concurrent(i, x)) =>
                {
                    state = Some((role, i));
                }
                None | Some(Kind::Entry(_)) => {}
                Some(Kind::SetRole(role)) => {
                    if let Some((r, _)) = state.as_mut() {
                        *r = role;
                    }
                }
                Some(Kind::Exit) => state = None,
            }
        }
        state
    }
}

struct Resolver<'a> {
    log: &'a AuthorityLog,
    order: Vec<OpHash>,
    ops: Vec<&'a SignedOp>,
    /// What each op targets (its author for Join/Leave/Genesis).
    targets: Vec<Option<(MemberId, Kind)>>,
    cut: CutIndex,
}

impl<'a> Resolver<'a> {
    fn new(log: &'a AuthorityLog) -> Self {
        let order = linear_order(log);
        let ops: Vec<&SignedOp> = order.iter().filter_map(|h| log.ops.get(h)).collect();
        let index: HashMap<OpHash, usize> =
            order.iter().enumerate().map(|(i, h)| (*h, i)).collect();
        let n = ops.len();
        let mut ancestors: Vec<Bits> = Vec::with_capacity(n);
        for op in &ops {
            let mut bits = Bits::new(n);
            for p in &op.op.parents {
                if let Some(&pi) = index.get(p) {
                    bits.union(&ancestors[pi]);
                    bits.set(pi);
                }
            }
            ancestors.push(bits);
        }
        let targets: Vec<Option<(MemberId, Kind)>> = ops
            .iter()
            .map(|s| {
                let op = &s.op;
                match &op.body {
                    OpBody::Genesis { .. } => Some((op.author, Kind::Entry(Role::Admin))),
                    OpBody::Join { .. } => Some((op.author, Kind::Entry(Role::Member))),
                    OpBody::Admit { member, role } => Some((*member, Kind::Entry(*role))),
                    OpBody::SetRole { member, role } => Some((*member, Kind::SetRole(*role))),
                    OpBody::Remove { member, .. } => Some((*member, Kind::Exit)),
                    OpBody::Leave => Some((op.author, Kind::Exit)),
                    _ => None,
                }
            })
            .collect();
        let kinds = targets.iter().map(|t| t.map(|(_, k)| k)).collect();
        let times = ops.iter().map(|o| o.op.created_at).collect();
        Resolver {
            log,
            order,
            ops,
            targets,
            cut: CutIndex {
                index,
                ancestors,
                kinds,
                affecting: HashMap::new(),
                times,
            },
        }
    }

    fn run(mut self) -> Resolved {
        let n = self.ops.len();
        let mut voided = vec![false; n];
        let mut pass = self.pass(&voided);
        // Strong remove, to a fixed point. `voided` only grows, so this ends.
        loop {
            let mut removals: Vec<usize> = (0..n)
                .filter(|&i| pass.verdicts[i].is_ok())
                .filter(|&i| matches!(self.ops[i].op.body, OpBody::Remove { .. }))
                .collect();
            // Seniority is the position of the remover's current entry, as in
            // `Member::seniority`.
            removals.sort_by_key(|&i| {
                let entry = self.role_in_past(&self.ops[i].op.author, i);
                (entry.map_or(usize::MAX, |(_, e)| e), i)
            });
            let mut newly = Bits::new(n);
            for r in removals {
                if newly.get(r) {
                    continue;
                }
                // What this round voided may change whether `r` is valid:
                // re-check it (and every less senior removal) first.
                if self.cut.ancestors[r].intersects(&newly) {
                    break;
                }
                let Some((target, _)) = self.targets[r] else {
                    continue;
                };
                for (o, &v) in voided.iter().enumerate() {
                    if !v && self.ops[o].op.author == target && self.cut.concurrent(o, r) {
                        newly.set(o);
                    }
                }
            }
            let mut grew = false;
            for (o, v) in voided.iter_mut().enumerate() {
                if newly.get(o) {
                    *v = true;
                    grew = true;
                }
            }
            if !grew {
                break;
            }
            pass = self.pass(&voided);
        }
        self.finish(pass)
    }

    /// Checks every op, in linear order, against its causal past.
    fn pass(&mut self, voided: &[bool]) -> Pass {
        let n = self.ops.len();
        let mut pass = Pass {
            verdicts: Vec::with_capacity(n),
            uses: HashMap::new(),
            member_count: 0,
            running: HashMap::new(),
        };
        self.cut.affecting.clear();
        let genesis = self.log.genesis();
        for (i, &v) in voided.iter().enumerate() {
            let verdict = if v {
                Err(Rejection::ConcurrentWithRemoval)
            } else if self.order[i] == genesis {
                Ok(())
            } else {
                self.check(i, &mut pass)
            };
            if verdict.is_ok() {
                self.apply(i, &mut pass);
            }
            pass.verdicts.push(verdict);
        }
        pass
    }

    fn role_in_past(&self, member: &MemberId, i: usize) -> Option<(Role, usize)> {
        self.cut.membership(member, &self.cut.ancestors[i])
    }

    /// The state (visibility, settings) in op `i`'s causal past.
    fn settings_in_past(
        &self,
        i: usize,
        verdicts: &[std::result::Result<(), Rejection>],
    ) -> (Visibility, Settings) {
        let past = &self.cut.ancestors[i];
        let (mut visibility, mut settings) = match &self.ops[0].op.body {
            OpBody::Genesis {
                visibility,
                settings,
                ..
            } => (*visibility, *settings),
            _ => (Visibility::Private, Settings::default()),
        };
        for j in (0..i).filter(|&j| past.get(j) && verdicts[j].is_ok()) {
            if let OpBody::UpdateSettings(p) = &self.ops[j].op.body {
                visibility = p.visibility.unwrap_or(visibility);
                settings = p.settings.unwrap_or(settings);
            }
        }
        (visibility, settings)
    }

    fn check(&self, i: usize, pass: &mut Pass) -> std::result::Result<(), Rejection> {
        let op = &self.ops[i].op;
        let author = op.author;
        let author_role = self.role_in_past(&author, i);
        let need = |min: Role| match author_role {
            None => Err(Rejection::NotAMember(author)),
            Some((r, _)) if r < min => Err(Rejection::NotPermitted),
            Some(_) => Ok(()),
        };
        // Seniority is the linear position of the member's effective entry.
        let senior_admin = |target: &MemberId| {
            let target = self.role_in_past(target, i);
            match (target, author_role) {
                (Some((Role::Admin, t)), Some((_, a))) => t < a,
                _ => false,
            }
        };
        match &op.body {
            OpBody::Genesis { .. } => Err(Rejection::DuplicateGenesis),
            OpBody::Join { invite } => {
                if author_role.is_some() {
                    return Err(Rejection::AlreadyMember);
                }
                let (visibility, settings) = self.settings_in_past(i, &pass.verdicts);
                match invite {
                    Some(proof) => self.check_invite(i, proof, pass)?,
                    None if visibility == Visibility::Public => {}
                    None => return Err(Rejection::Private),
                }
                if pass.member_count >= settings.member_limit {
                    return Err(Rejection::MemberLimit);
                }
                Ok(())
            }
            OpBody::Admit { member, role } => {
                need(Role::Moderator)?;
                if author_role.map(|(r, _)| r) == Some(Role::Moderator) && *role != Role::Member {
                    return Err(Rejection::NotPermitted);
                }
                if self.role_in_past(member, i).is_some() {
                    return Err(Rejection::AlreadyMember);
                }
                let (_, settings) = self.settings_in_past(i, &pass.verdicts);
                if pass.member_count >= settings.member_limit {
                    return Err(Rejection::MemberLimit);
                }
                Ok(())
            }
            OpBody::SetRole { member, .. } => {
                need(Role::Admin)?;
                if self.role_in_past(member, i).is_none() {
                    return Err(Rejection::TargetNotMember);
                }
                if senior_admin(member) {
                    return Err(Rejection::SeniorAdmin);
                }
                Ok(())
            }
            OpBody::Remove { member, .. } => {
                need(Role::Moderator)?;
                if *member == author {
                    return Err(Rejection::NotPermitted);
                }
                let Some((target_role, _)) = self.role_in_past(member, i) else {
                    return Err(Rejection::TargetNotMember);
                };
                if author_role.map(|(r, _)| r) == Some(Role::Moderator)
                    && target_role != Role::Member
                {
                    return Err(Rejection::NotPermitted);
                }
                if senior_admin(member) {
                    return Err(Rejection::SeniorAdmin);
                }
                Ok(())
            }
            OpBody::Leave => need(Role::Member),
            OpBody::CreateInvite {
                invite_key,
                expires_at,
                max_uses,
            } => {
                need(Role::Admin)?;
                if *max_uses == 0 || *expires_at <= op.created_at {
                    return Err(Rejection::InviteInvalid("empty"));
                }
                if self.find_invite(i, invite_key, &pass.verdicts).is_some() {
                    return Err(Rejection::InviteInvalid("duplicate"));
                }
                Ok(())
            }
            OpBody::RevokeInvite { invite_key } => {
                need(Role::Admin)?;
                if self.find_invite(i, invite_key, &pass.verdicts).is_none() {
                    return Err(Rejection::InviteInvalid("unknown"));
                }
                Ok(())
            }
            OpBody::UpdateSettings(patch) => {
                need(Role::Admin)?;
                if let Some(s) = &patch.settings {
                    s.validate()?;
                }
                if patch.name.as_ref().is_some_and(|n| !valid_name(n)) {
                    return Err(Rejection::InvalidSettings("name"));
                }
                Ok(())
            }
        }
    }

    /// The effective `CreateInvite` for `key` in op `i`'s causal past.
    fn find_invite(
        &self,
        i: usize,
        key: &InviteKey,
        verdicts: &[std::result::Result<(), Rejection>],
    ) -> Option<usize> {
        let past = &self.cut.ancestors[i];
        (0..i).find(|&j| {
            past.get(j)
                && verdicts[j].is_ok()
                && matches!(&self.ops[j].op.body, OpBody::CreateInvite { invite_key, .. } if invite_key == key)
        })
    }

    fn check_invite(
        &self,
        i: usize,
        proof: &InviteProof,
        pass: &Pass,
    ) -> std::result::Result<(), Rejection> {
        let key = proof.invite_key;
        let Some(created) = self.find_invite(i, &key, &pass.verdicts) else {
            return Err(Rejection::InviteInvalid("unknown"));
        };
        let past = &self.cut.ancestors[i];
        let revoked = (0..i).any(|j| {
            past.get(j)
                && pass.verdicts[j].is_ok()
                && matches!(&self.ops[j].op.body, OpBody::RevokeInvite { invite_key } if *invite_key == key)
        });
        if revoked {
            return Err(Rejection::InviteInvalid("revoked"));
        }
        if let OpBody::CreateInvite {
            expires_at,
            max_uses,
            ..
        } = &self.ops[created].op.body
        {
            if self.ops[i].op.created_at >= *expires_at {
                return Err(Rejection::InviteInvalid("expired"));
            }
            if pass.uses.get(&key).copied().unwrap_or(0) >= *max_uses {
                return Err(Rejection::InviteInvalid("used up"));
            }
        }
        Ok(())
    }

    /// Records an effective op in the running state.
    fn apply(&mut self, i: usize, pass: &mut Pass) {
        let op = &self.ops[i].op;
        if let OpBody::Join {
            invite: Some(proof),
        } = &op.body
        {
            *pass.uses.entry(proof.invite_key).or_default() += 1;
        }
        if let Some((member, kind)) = self.targets[i] {
            self.cut.affecting.entry(member).or_default().push(i);
            let was = pass.running.get(&member).copied().unwrap_or(false);
            let is = match kind {
                // Remove wins: an entry concurrent with an earlier exit of
                // the same member does not count (as in `membership`).
                Kind::Entry(_) => {
                    was || !self.cut.affecting.get(&member).is_some_and(|ops| {
                        ops.iter().any(|&x| {
                            self.cut.kinds[x] == Some(Kind::Exit) && self.cut.concurrent(i, x)
                        })
                    })
                }
                Kind::SetRole(_) => was,
                Kind::Exit => false,
            };
            if is && !was {
                pass.member_count += 1;
            }
            if was && !is {
                pass.member_count = pass.member_count.saturating_sub(1);
            }
            pass.running.insert(member, is);
        }
    }

    fn finish(mut self, pass: Pass) -> Resolved {
        let all = {
            let mut b = Bits::new(self.ops.len());
            for i in 0..self.ops.len() {
                b.set(i);
            }
            b
        };
        let mut members = BTreeMap::new();
        let (mut name, mut visibility, mut settings, description) = match &self.ops[0].op.body {
            OpBody::Genesis {
                name,
                description,
                visibility,
                settings,
                ..
            } => (name.clone(), *visibility, *settings, description.clone()),
            _ => (
                String::new(),
                Visibility::Private,
                Settings::default(),
                String::new(),
            ),
        };
        for member in self.cut.affecting.keys() {
            if let Some((role, entry)) = self.cut.membership(member, &all) {
                members.insert(
                    *member,
                    Member {
                        id: *member,
                        role,
                        admitted_at: self.ops[entry].op.created_at,
                        seniority: u32::try_from(entry).unwrap_or(u32::MAX),
                    },
                );
            }
        }
        let mut invites = BTreeMap::new();
        for (i, s) in self.ops.iter().enumerate() {
            if pass.verdicts[i].is_err() {
                continue;
            }
            match &s.op.body {
                OpBody::UpdateSettings(p) => {
                    if let Some(n) = &p.name {
                        name.clone_from(n);
                    }
                    visibility = p.visibility.unwrap_or(visibility);
                    settings = p.settings.unwrap_or(settings);
                }
                OpBody::CreateInvite {
                    invite_key,
                    expires_at,
                    max_uses,
                } => {
                    // Of concurrent creations of one key, the first counts
                    // (as in `find_invite`).
                    invites.entry(*invite_key).or_insert(Invite {
                        key: *invite_key,
                        created_by: s.op.author,
                        expires_at: *expires_at,
                        max_uses: *max_uses,
                        uses: pass.uses.get(invite_key).copied().unwrap_or(0),
                        revoked: false,
                    });
                }
                OpBody::RevokeInvite { invite_key } => {
                    if let Some(inv) = invites.get_mut(invite_key) {
                        inv.revoked = true;
                    }
                }
                _ => {}
            }
        }
        let verdicts = self.order.iter().copied().zip(pass.verdicts).collect();
        Resolved {
            community: self.log.id,
            name,
            description,
            visibility,
            settings,
            members,
            invites,
            heads: self.log.heads(),
            verdicts,
            cut: std::mem::take(&mut self.cut),
        }
    }
}

struct Pass {
    verdicts: Vec<std::result::Result<(), Rejection>>,
    uses: HashMap<InviteKey, u32>,
    member_count: u32,
    running: HashMap<MemberId, bool>,
}

/// A community or member name: 1–80 characters, no control characters.
pub(crate) fn valid_name(name: &str) -> bool {
    let len = name.chars().count();
    (1..=80).contains(&len) && !name.chars().any(char::is_control)
}

/// A topological order of the held ops; ties between ready ops go to the
/// smaller `(created_at, hash)`.
fn linear_order(log: &AuthorityLog) -> Vec<OpHash> {
    let mut waiting: HashMap<OpHash, usize> = HashMap::with_capacity(log.ops.len());
    let mut children: HashMap<OpHash, Vec<OpHash>> = HashMap::with_capacity(log.ops.len());
    let mut ready = BinaryHeap::new();
    for (h, op) in &log.ops {
        let parents = op.op.parents.len();
        waiting.insert(*h, parents);
        for p in &op.op.parents {
            children.entry(*p).or_default().push(*h);
        }
        if parents == 0 {
            ready.push(std::cmp::Reverse((op.op.created_at, *h)));
        }
    }
    let mut order = Vec::with_capacity(log.ops.len());
    while let Some(std::cmp::Reverse((_, h))) = ready.pop() {
        order.push(h);
        for c in children.get(&h).into_iter().flatten() {
            if let Some(w) = waiting.get_mut(c) {
                *w -= 1;
                if *w == 0
                    && let Some(op) = log.ops.get(c)
                {
                    ready.push(std::cmp::Reverse((op.op.created_at, *c)));
                }
            }
        }
    }
    order
}

impl AuthorityLog {
    /// The log as it stood at `heads`: only the ops in their causal past.
    /// `None` if a head is not held. A content change is judged against
    /// exactly this state, which every replica computes alike.
    pub fn at(&self, heads: &[OpHash]) -> Option<AuthorityLog> {
        let mut ops = HashMap::new();
        let mut stack: Vec<OpHash> = heads.to_vec();
        while let Some(h) = stack.pop() {
            if ops.contains_key(&h) {
                continue;
            }
            let op = self.ops.get(&h)?;
            stack.extend(op.op.parents.iter().copied());
            ops.insert(h, op.clone());
        }
        if !ops.contains_key(&self.genesis()) {
            return None;
        }
        let children = ops
            .values()
            .flat_map(|o| o.op.parents.iter().copied())
            .collect();
        Some(AuthorityLog {
            id: self.id,
            ops,
            pending: HashMap::new(),
            children,
        })
    }
}

impl Resolved {
    /// Whether the member was a member at time `t`, by the `created_at` of
    /// the effective ops that admitted and removed them (a member from
    /// their entry until their removal or leave).
    pub fn member_at(&self, member: &MemberId, t: Timestamp) -> bool {
        let ops = self.cut.affecting.get(member).into_iter().flatten();
        ops.filter(|&&i| self.cut.times[i] <= t)
            .filter_map(|&i| match self.cut.kinds[i] {
                Some(Kind::Entry(_)) => Some((self.cut.times[i], i, true)),
                Some(Kind::Exit) => Some((self.cut.times[i], i, false)),
                _ => None,
            })
            .max()
            .is_some_and(|(_, _, entered)| entered)
    }

    /// The highest role the member ever held through an effective op, if
    /// they were ever a member (to tell a demoted member from one who never
    /// had the role).
    pub fn highest_role(&self, member: &MemberId) -> Option<Role> {
        self.cut
            .affecting
            .get(member)?
            .iter()
            .filter_map(|&i| match self.cut.kinds[i] {
                Some(Kind::Entry(r) | Kind::SetRole(r)) => Some(r),
                _ => None,
            })
            .max()
    }
}

#[cfg(test)]
mod tests;
