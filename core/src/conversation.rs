//! Conversations: one small private document per conversation
//! (`conversation/<id>`) between two members of a community.
//!
//! The id names both participants (in key order), and for the conversation
//! of a match the request too, so the validator knows from the id alone who
//! may write, and both parties open the same document whoever opens first.
//! Root keys:
//! - `created_at` (Int): written by whichever participant opens it;
//! - `m:<sender>.<nonce>` (Bytes): one message, its body sealed end to end
//!   (see `crypto`), written once and only by its sender;
//! - `read:<member>` (Str): that participant's read mark, the id of the
//!   last message they read; written by that participant only.
//!
//! Nothing is ever deleted from the document: retention hides old messages
//! from queries and drops them from the projections (see ARCHITECTURE.md).

use std::fmt;

use automerge::legacy::{Key, ObjectId, OpType};
use automerge::{Automerge, ChangeHash, ROOT, ReadDoc, ScalarValue};

use crate::crypto;
use crate::error::{Error, Rejection, Result};
use crate::identity::{MemberId, decode_hex32};
use crate::request::RequestId;
use crate::time::Timestamp;

crate::request::authored_id!(
    /// A message: its sender and a nonce.
    MessageId,
    sender
);

/// Longest message body, in characters.
pub const MAX_MESSAGE_CHARS: usize = 4_000;
/// Largest sealed body the validator accepts: 4,000 characters of up to
/// 4 bytes each, plus header, nonce and tag.
pub(crate) const MAX_SEALED: usize = MAX_MESSAGE_CHARS * 4 + crypto::MIN_SEALED;

pub(crate) const MESSAGE_PREFIX: &str = "m:";
pub(crate) const READ_PREFIX: &str = "read:";
pub(crate) const CREATED_AT: &str = "created_at";

/// A conversation: its two participants (in key order) and, for the
/// conversation of a match, the request.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConversationId {
    a: MemberId,
    b: MemberId,
    topic: Option<RequestId>,
}

impl ConversationId {
    /// The direct conversation between two members.
    pub fn direct(x: MemberId, y: MemberId) -> Result<Self> {
        Self::new(x, y, None)
    }

    /// The conversation of the match on `request` between its two parties.
    pub fn of_match(x: MemberId, y: MemberId, request: RequestId) -> Result<Self> {
        Self::new(x, y, Some(request))
    }

    fn new(x: MemberId, y: MemberId, topic: Option<RequestId>) -> Result<Self> {
        if x == y {
            return Err(Error::InvalidArgument(
                "a conversation needs two members".into(),
            ));
        }
        let (a, b) = if x < y { (x, y) } else { (y, x) };
        Ok(ConversationId { a, b, topic })
    }

    /// Both participants, in key order.
    pub fn participants(&self) -> [MemberId; 2] {
        [self.a, self.b]
    }

    /// Whether `member` takes part.
    pub fn has(&self, member: &MemberId) -> bool {
        self.a == *member || self.b == *member
    }

    /// The participant other than `me` (`None` if `me` takes no part).
    pub fn other(&self, me: &MemberId) -> Option<MemberId> {
        if self.a == *me {
            Some(self.b)
        } else if self.b == *me {
            Some(self.a)
        } else {
            None
        }
    }

    /// The request of the match it belongs to, if any.
    pub fn topic(&self) -> Option<RequestId> {
        self.topic
    }

    /// Parses `<a>.<b>` or `<a>.<b>/<request>`, participants in key order.
    pub fn parse(s: &str) -> Option<Self> {
        Self::parse_with(s, |b| MemberId::from_bytes(b).ok(), RequestId::parse)
    }

    /// [`Self::parse`] for an id this device stored after validating it.
    pub(crate) fn parse_stored(s: &str) -> Option<Self> {
        Self::parse_with(
            s,
            |b| Some(MemberId::from_stored(b)),
            RequestId::parse_stored,
        )
    }

    fn parse_with(
        s: &str,
        member: fn([u8; 32]) -> Option<MemberId>,
        request: fn(&str) -> Option<RequestId>,
    ) -> Option<Self> {
        let (pair, topic) = match s.split_once('/') {
            Some((pair, topic)) => (pair, Some(request(topic)?)),
            None => (s, None),
        };
        let (a, b) = pair.split_once('.')?;
        let a = member(decode_hex32(a).ok()?)?;
        let b = member(decode_hex32(b).ok()?)?;
        (a < b).then_some(ConversationId { a, b, topic })
    }
}

impl fmt::Display for ConversationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.a, self.b)?;
        if let Some(t) = &self.topic {
            write!(f, "/{t}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ConversationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ConversationId({}.{}",
            self.a.fmt_short(),
            self.b.fmt_short()
        )?;
        if let Some(t) = &self.topic {
            write!(f, "/{t:?}")?;
        }
        f.write_str(")")
    }
}

/// The key of a message in its conversation document.
pub(crate) fn message_key(id: &MessageId) -> String {
    format!("{MESSAGE_PREFIX}{id}")
}

/// The key of a participant's read mark.
pub(crate) fn read_key(member: &MemberId) -> String {
    format!("{READ_PREFIX}{member}")
}

/// What the associated data of a sealed body binds besides the message.
pub(crate) fn binding(community: &crate::authority::CommunityId, id: &ConversationId) -> Vec<u8> {
    let name = id.to_string();
    let mut out = Vec::with_capacity(32 + name.len());
    out.extend_from_slice(community.as_bytes());
    out.extend_from_slice(name.as_bytes());
    out
}

/// A message as its document holds it (body still sealed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SealedMessage {
    pub(crate) id: MessageId,
    pub(crate) sent_at: Timestamp,
    pub(crate) sealed: Vec<u8>,
}

/// Reads the message under `key`, if the key holds one.
pub(crate) fn read_message(doc: &Automerge, key: &str) -> Result<Option<SealedMessage>> {
    let Some(id) = key
        .strip_prefix(MESSAGE_PREFIX)
        .and_then(MessageId::parse_stored)
    else {
        return Ok(None);
    };
    let Some((value, _)) = doc.get(ROOT, key)? else {
        return Ok(None);
    };
    let Some(sealed) = value.as_bytes() else {
        return Ok(None);
    };
    Ok(crypto::sealed_sent_at(sealed).map(|sent_at| SealedMessage {
        id,
        sent_at,
        sealed: sealed.to_vec(),
    }))
}

/// Reads a participant's read mark.
pub(crate) fn read_mark(doc: &Automerge, member: &MemberId) -> Result<Option<MessageId>> {
    Ok(doc
        .get(ROOT, read_key(member))?
        .and_then(|(v, _)| v.as_str().and_then(MessageId::parse_stored)))
}

/// When the conversation was opened, if it was.
pub(crate) fn created_at(doc: &Automerge) -> Result<Option<Timestamp>> {
    Ok(doc
        .get(ROOT, CREATED_AT)?
        .and_then(|(v, _)| v.as_i64().map(Timestamp::from_millis)))
}

/// The validator's rules for a conversation document: only participants
/// write; a message only by its sender, once; a read mark only by its
/// owner; nothing is deleted. `doc` holds the change's dependencies (the
/// document as its author saw it).
pub(crate) fn check_change(
    id: &ConversationId,
    author: &MemberId,
    change: &automerge::ExpandedChange,
    doc: &Automerge,
    deps: &[ChangeHash],
) -> std::result::Result<(), Rejection> {
    if !id.has(author) {
        return Err(Rejection::NotParticipant);
    }
    let mut sent: Vec<&str> = Vec::new();
    for op in &change.operations {
        let (ObjectId::Root, Key::Map(key)) = (&op.obj, &op.key) else {
            return Err(Rejection::DisallowedOperation);
        };
        let key = key.as_str();
        if key == CREATED_AT {
            if !matches!(op.action, OpType::Put(ScalarValue::Int(_))) {
                return Err(Rejection::InvalidField(key.into()));
            }
        } else if let Some(message) = key.strip_prefix(MESSAGE_PREFIX) {
            let message =
                MessageId::parse(message).ok_or_else(|| Rejection::InvalidField(key.into()))?;
            if message.sender != *author {
                return Err(Rejection::ForeignEntry);
            }
            let OpType::Put(ScalarValue::Bytes(sealed)) = &op.action else {
                return Err(Rejection::DisallowedOperation);
            };
            if sealed.len() > MAX_SEALED || crypto::sealed_sent_at(sealed).is_none() {
                return Err(Rejection::InvalidField(key.into()));
            }
            let before = !deps.is_empty()
                && doc
                    .get_at(ROOT, key, deps)
                    .map_err(|_| Rejection::Malformed)?
                    .is_some();
            if before || sent.contains(&key) {
                return Err(Rejection::IllegalTransition("a message is sent once"));
            }
            sent.push(key);
        } else if let Some(member) = key.strip_prefix(READ_PREFIX) {
            if member != author.to_string() {
                return Err(Rejection::ForeignEntry);
            }
            let OpType::Put(ScalarValue::Str(mark)) = &op.action else {
                return Err(Rejection::DisallowedOperation);
            };
            if MessageId::parse(mark).is_none() {
                return Err(Rejection::InvalidField(key.into()));
            }
        } else {
            return Err(Rejection::InvalidField(key.into()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Keypair;

    #[test]
    fn ids_are_ordered_and_round_trip() -> Result<()> {
        let (x, y) = (
            Keypair::generate()?.member_id(),
            Keypair::generate()?.member_id(),
        );
        let d = ConversationId::direct(x, y)?;
        assert_eq!(d, ConversationId::direct(y, x)?);
        assert_eq!(ConversationId::parse(&d.to_string()), Some(d));
        let r = RequestId::generate(x)?;
        let m = ConversationId::of_match(y, x, r)?;
        assert_ne!(m, d);
        assert_eq!(ConversationId::parse(&m.to_string()), Some(m));
        assert_eq!(ConversationId::parse_stored(&m.to_string()), Some(m));
        assert_eq!(m.other(&x), Some(y));
        assert!(ConversationId::direct(x, x).is_err());
        // Participants out of order are not an id.
        let [a, b] = d.participants();
        assert_eq!(ConversationId::parse(&format!("{b}.{a}")), None);
        Ok(())
    }
}
