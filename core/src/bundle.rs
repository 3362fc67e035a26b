//! What two replicas exchange: a [`Bundle`] of authority ops and signed
//! changes that the other side lacks, computed from the other side's
//! [`Heads`], and the [`Report`] of applying one.
//!
//! The sync protocol carries these same values over the wire; here they
//! move between devices with no network at all (tests, files, QR codes).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::authority::{CommunityId, OpHash};
use crate::codec;
use crate::docs::SignedChange;
use crate::error::{Rejection, Result};

/// What a replica holds of a community: the heads of its authority log and
/// of each document.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heads {
    /// Authority-log heads.
    pub auth: Vec<OpHash>,
    /// Per document name, its Automerge heads.
    pub docs: BTreeMap<String, Vec<[u8; 32]>>,
}

impl Heads {
    /// A replica that holds nothing: `changes_since` sends everything.
    pub fn empty() -> Self {
        Heads::default()
    }
}

/// Authority ops and changes for one community, in an order the receiver
/// can apply (parents before children).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bundle {
    /// Format version, checked on decode.
    pub version: u16,
    /// The community.
    pub community: CommunityId,
    /// Encoded signed authority ops (each decoded, and refused, on its own).
    #[serde(with = "crate::codec::byte_strings")]
    pub ops: Vec<Vec<u8>>,
    /// Signed content changes.
    pub changes: Vec<SignedChange>,
}

impl Bundle {
    /// The bundle format this library writes and reads.
    pub const VERSION: u16 = 1;

    /// A bundle with nothing in it.
    pub fn new(community: CommunityId) -> Self {
        Bundle {
            version: Self::VERSION,
            community,
            ops: Vec::new(),
            changes: Vec::new(),
        }
    }

    /// Whether it carries nothing.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty() && self.changes.is_empty()
    }

    /// Items carried: ops and changes.
    pub fn len(&self) -> usize {
        self.ops.len() + self.changes.len()
    }

    /// Appends `other`'s ops and changes, to receive both bundles as one
    /// (the order of items within a bundle does not matter to a receiver).
    /// Refuses, and leaves this bundle as it was, if `other` is of
    /// another community.
    pub fn append(&mut self, other: Bundle) -> Result<()> {
        if other.community != self.community {
            return Err(Rejection::WrongCommunity.into());
        }
        self.ops.extend(other.ops);
        self.changes.extend(other.changes);
        Ok(())
    }

    /// The canonical bytes.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Decodes bytes from another device; a typed error for anything but
    /// a well-formed bundle of this version.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let bundle: Bundle = codec::decode(bytes, "bundle")?;
        if bundle.version != Self::VERSION {
            return Err(crate::error::Error::Decode {
                what: "bundle version",
            });
        }
        Ok(bundle)
    }
}

/// One thing a bundle carried.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Item {
    /// An authority op, by hash (`None` if it could not even be decoded).
    Op(Option<OpHash>),
    /// A change of a document, by change hash.
    Change {
        /// The document's name as the envelope gave it.
        doc: String,
        /// The change hash the envelope claims.
        hash: [u8; 32],
    },
}

/// What applying a bundle did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Stored now: ops and changes from this bundle, and pending ones it
    /// released.
    pub accepted: Vec<Item>,
    /// Refused and not stored, each with its reason.
    pub rejected: Vec<(Item, Rejection)>,
    /// Stored aside until what they depend on arrives.
    pub pending: Vec<Item>,
    /// Already held.
    pub duplicates: usize,
}

impl Report {
    /// The reasons of every refusal, in order.
    pub fn reasons(&self) -> Vec<&Rejection> {
        self.rejected.iter().map(|(_, r)| r).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docs::Envelope;
    use crate::identity::{MemberId, Signature};

    /// The same shapes with serde's default encoding of byte vectors (one
    /// element at a time): the format before byte strings were read and
    /// written in one copy.
    #[derive(Serialize)]
    struct PlainBundle {
        version: u16,
        community: CommunityId,
        ops: Vec<Vec<u8>>,
        changes: Vec<PlainChange>,
    }

    #[derive(Serialize)]
    struct PlainChange {
        envelope: Envelope,
        bytes: Vec<u8>,
    }

    #[test]
    fn byte_strings_keep_the_encoding_of_byte_sequences() {
        let community = CommunityId::from_bytes([3; 32]);
        let envelope = Envelope {
            community,
            doc: "request/x".into(),
            change_hash: [9; 32],
            author: MemberId::from_stored([5; 32]),
            signature: Signature::from_bytes([7; 64]),
        };
        let bundle = Bundle {
            ops: vec![vec![], vec![1, 2, 3], vec![0xff; 300]],
            changes: vec![SignedChange {
                envelope: envelope.clone(),
                bytes: (0..=255).collect(),
            }],
            ..Bundle::new(community)
        };
        let plain = PlainBundle {
            version: Bundle::VERSION,
            community,
            ops: bundle.ops.clone(),
            changes: vec![PlainChange {
                envelope,
                bytes: (0..=255).collect(),
            }],
        };
        let bytes = bundle.encode();
        assert_eq!(bytes, codec::encode(&plain));
        assert_eq!(Bundle::decode(&bytes).ok(), Some(bundle));
    }
}
