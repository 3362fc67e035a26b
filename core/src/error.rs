//! Errors: one internal [`Error`] for the crate, and [`Rejection`], the typed
//! reason a replica refuses an authority op or a content change.
//!
//! A local call that breaks a rule fails with `Error::Rejected(reason)`; the
//! same rule broken by a change from another device shows up as that same
//! `reason` in the apply report. Error text carries no secret or personal data.

use crate::identity::MemberId;

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `karmyq-core`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A key's bytes are not a valid ed25519 public key.
    #[error("invalid public key")]
    InvalidKey,
    /// An id is not the hex it should be.
    #[error("invalid id")]
    InvalidId,
    /// A secret backup could not be read.
    #[error("invalid secret key backup")]
    InvalidSecret,
    /// A signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// The operating system refused randomness.
    #[error("no randomness available")]
    Randomness,
    /// Bytes from the network or disk could not be decoded.
    #[error("malformed {what}")]
    Decode {
        /// What was being decoded.
        what: &'static str,
    },
    /// An argument is out of range or malformed.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A rule refused the operation.
    #[error("rejected: {0}")]
    Rejected(#[from] Rejection),
    /// This device's account has no such community.
    #[error("unknown community")]
    UnknownCommunity,
    /// Another client holds this data directory.
    #[error("the data directory is in use by another client")]
    DirectoryInUse,
    /// A stored file is newer than this library or damaged.
    #[error("storage: {0}")]
    Corrupt(String),
    /// SQLite failed.
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Automerge failed.
    #[error("document: {0}")]
    Automerge(#[from] automerge::AutomergeError),
    /// The file system failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// A message body could not be opened (tampered, sealed with another
    /// key, truncated); it is never shown.
    #[error("message body: {0}")]
    Decrypt(#[from] crate::crypto::DecryptError),
}

/// Why a replica refused an authority op or a content change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// The bytes are not a well-formed op or change.
    #[error("malformed")]
    Malformed,
    /// The signature does not verify for the claimed author.
    #[error("bad signature")]
    BadSignature,
    /// The change's hash is not the one the envelope signs.
    #[error("change hash does not match its envelope")]
    HashMismatch,
    /// The change's Automerge actor is not its signed author.
    #[error("actor is not the author")]
    ActorMismatch,
    /// Signed for another community: a replay.
    #[error("signed for another community")]
    WrongCommunity,
    /// The document id names no document kind this replica knows.
    #[error("unknown document")]
    UnknownDocument,
    /// A genesis op where the community already has one.
    #[error("second genesis")]
    DuplicateGenesis,
    /// A non-genesis op without parents.
    #[error("op has no parents")]
    NoParents,
    /// The author was not a member at the state the op or change refers to.
    #[error("author {0:?} is not a member")]
    NotAMember(MemberId),
    /// The author has been removed (or left), and this was not seen before it.
    #[error("author {0:?} has been removed")]
    AuthorRemoved(MemberId),
    /// The author's role was lowered, and this was not seen before it.
    #[error("author {0:?} no longer has the role")]
    RoleRevoked(MemberId),
    /// The author's role does not allow this.
    #[error("not permitted for this role")]
    NotPermitted,
    /// The target is an admin more senior than the author.
    #[error("target is a more senior admin")]
    SeniorAdmin,
    /// A member writing another member's profile entry.
    #[error("writes another member's entry")]
    ForeignEntry,
    /// The target is already a member.
    #[error("already a member")]
    AlreadyMember,
    /// The target is not a member.
    #[error("target is not a member")]
    TargetNotMember,
    /// Joining a private community without a valid invite.
    #[error("community is private")]
    Private,
    /// The invite is unknown, revoked, expired or used up.
    #[error("invite not valid: {0}")]
    InviteInvalid(&'static str),
    /// The community is at its member limit.
    #[error("member limit reached")]
    MemberLimit,
    /// An op by an author concurrent with their removal (strong remove).
    #[error("void: concurrent with the author's removal")]
    ConcurrentWithRemoval,
    /// A field, key or value that the document's schema does not allow.
    #[error("field not allowed: {0}")]
    InvalidField(String),
    /// An op names an object or a value its change's dependencies do not
    /// hold (see `Authentic::ops_hold`).
    #[error("an op names what the document did not hold")]
    DanglingOp,
    /// A change out of its author's sequence in the document (see
    /// `Authentic::sequence_holds`).
    #[error("out of its author's sequence")]
    OutOfSequence,
    /// An Automerge operation kind the schema does not allow.
    #[error("operation not allowed")]
    DisallowedOperation,
    /// Only the requester writes this part of a request.
    #[error("only the requester may do this")]
    NotRequester,
    /// Only an offer's responder writes it.
    #[error("only the responder may do this")]
    NotResponder,
    /// One of the two members blocked the other.
    #[error("blocked")]
    Blocked,
    /// Not a legal step from the state the author saw.
    #[error("illegal transition: {0}")]
    IllegalTransition(&'static str),
    /// A setting out of its range.
    #[error("invalid settings: {0}")]
    InvalidSettings(&'static str),
    /// The author does not take part in this conversation.
    #[error("not a participant of the conversation")]
    NotParticipant,
}

impl Rejection {
    /// A stable, short code for logs, metrics and the FFI.
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::Malformed => "malformed",
            Rejection::BadSignature => "bad_signature",
            Rejection::HashMismatch => "hash_mismatch",
            Rejection::ActorMismatch => "actor_mismatch",
            Rejection::WrongCommunity => "wrong_community",
            Rejection::UnknownDocument => "unknown_document",
            Rejection::DuplicateGenesis => "duplicate_genesis",
            Rejection::NoParents => "no_parents",
            Rejection::NotAMember(_) => "not_a_member",
            Rejection::AuthorRemoved(_) => "author_removed",
            Rejection::RoleRevoked(_) => "role_revoked",
            Rejection::NotPermitted => "not_permitted",
            Rejection::SeniorAdmin => "senior_admin",
            Rejection::ForeignEntry => "foreign_entry",
            Rejection::AlreadyMember => "already_member",
            Rejection::TargetNotMember => "target_not_member",
            Rejection::Private => "private",
            Rejection::InviteInvalid(_) => "invite_invalid",
            Rejection::MemberLimit => "member_limit",
            Rejection::ConcurrentWithRemoval => "concurrent_with_removal",
            Rejection::InvalidField(_) => "invalid_field",
            Rejection::DanglingOp => "dangling_op",
            Rejection::OutOfSequence => "out_of_sequence",
            Rejection::DisallowedOperation => "disallowed_operation",
            Rejection::InvalidSettings(_) => "invalid_settings",
            Rejection::NotRequester => "not_requester",
            Rejection::NotResponder => "not_responder",
            Rejection::IllegalTransition(_) => "illegal_transition",
            Rejection::Blocked => "blocked",
            Rejection::NotParticipant => "not_participant",
        }
    }
}
