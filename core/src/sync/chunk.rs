//! Splitting a bundle into bundles that fit in a frame: what a device
//! uploads after a long time offline, or a catch-up from nothing, can be
//! far larger than one frame may be.

use crate::bundle::Bundle;
use crate::docs::SignedChange;

/// Bytes of frame and bundle framing allowed for around the items.
const OVERHEAD: usize = 256;

/// Largest bundle (in bytes) a device uploads in one frame; servers accept
/// frames of at least this size (the server's default limit is 4 MiB).
pub const UPLOAD_CHUNK_BYTES: usize = 1024 * 1024;

/// Most ops plus changes a device uploads in one frame (the server's
/// default limit is 10,000).
pub const UPLOAD_CHUNK_ITEMS: usize = 1_000;

/// Splits `bundle` into bundles of at most `max_bytes` encoded (an item
/// larger than that on its own goes alone) and at most `max_items` ops
/// plus changes, keeping the order: ops first, then changes, each in the
/// order given (parents before children), so the receiver can apply them
/// one after the other. An empty bundle gives no bundle. The items move
/// into the pieces: nothing is copied.
pub fn split(bundle: Bundle, max_bytes: usize, max_items: usize) -> Vec<Bundle> {
    let budget = budget(max_bytes);
    let max_items = max_items.max(1);
    let community = bundle.community;
    let mut out = Vec::new();
    let mut current = Bundle::new(community);
    let mut size = 0;
    let mut flush = |current: &mut Bundle, size: &mut usize| {
        if !current.is_empty() {
            out.push(std::mem::replace(current, Bundle::new(community)));
        }
        *size = 0;
    };
    for op in bundle.ops {
        let n = op_size(&op);
        if !current.is_empty() && (size + n > budget || current.ops.len() >= max_items) {
            flush(&mut current, &mut size);
        }
        current.ops.push(op);
        size += n;
    }
    for change in bundle.changes {
        let n = change_size(&change);
        let items = current.ops.len() + current.changes.len();
        if !current.is_empty() && (size + n > budget || items >= max_items) {
            flush(&mut current, &mut size);
        }
        current.changes.push(change);
        size += n;
    }
    flush(&mut current, &mut size);
    out
}

/// Bytes left for the items of a bundle sent in a frame of `max_bytes`.
pub(crate) fn budget(max_bytes: usize) -> usize {
    max_bytes.saturating_sub(OVERHEAD).max(1)
}

/// Bytes an authority op takes in a bundle, at most.
pub(crate) fn op_size(op: &[u8]) -> usize {
    op.len() + 8
}

/// Bytes a change takes in a bundle, at most.
pub(crate) fn change_size(change: &SignedChange) -> usize {
    change.bytes.len() + change.envelope.doc.len() + 180
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authority::CommunityId;
    use crate::docs::Envelope;
    use crate::identity::{Keypair, Signature};

    fn bundle(ops: usize, changes: usize, size: usize) -> crate::Result<Bundle> {
        let keys = Keypair::generate()?;
        let community = CommunityId::from_bytes([1; 32]);
        let mut b = Bundle::new(community);
        b.ops = (0..ops)
            .map(|i| vec![u8::try_from(i % 256).unwrap_or(0); size])
            .collect();
        b.changes = (0..changes)
            .map(|i| SignedChange {
                envelope: Envelope {
                    community,
                    doc: "profiles".into(),
                    change_hash: [u8::try_from(i % 256).unwrap_or(0); 32],
                    author: keys.member_id(),
                    signature: Signature::from_bytes([0; 64]),
                },
                bytes: vec![7; size],
            })
            .collect();
        Ok(b)
    }

    #[test]
    fn pieces_fit_keep_order_and_lose_nothing() -> crate::Result<()> {
        let whole = bundle(30, 200, 500)?;
        let pieces = split(whole.clone(), 16 * 1024, 50);
        assert!(pieces.len() > 1);
        for p in &pieces {
            assert!(p.encode().len() <= 16 * 1024, "{}", p.encode().len());
            assert!(p.ops.len() + p.changes.len() <= 50);
            assert_eq!(p.community, whole.community);
        }
        let ops: Vec<_> = pieces.iter().flat_map(|p| p.ops.clone()).collect();
        let changes: Vec<_> = pieces.iter().flat_map(|p| p.changes.clone()).collect();
        assert_eq!(ops, whole.ops);
        assert_eq!(changes, whole.changes);
        Ok(())
    }

    #[test]
    fn small_bundles_stay_whole_and_empty_ones_vanish() -> crate::Result<()> {
        let whole = bundle(2, 3, 10)?;
        assert_eq!(split(whole.clone(), 1 << 20, 100), vec![whole]);
        assert!(split(Bundle::new(CommunityId::from_bytes([1; 32])), 100, 10).is_empty());
        // An item too large for any piece goes alone.
        let big = bundle(0, 3, 4096)?;
        assert_eq!(split(big, 1024, 100).len(), 3);
        Ok(())
    }
    #[test]
    fn with_no_byte_limit_pieces_keep_every_item_in_order_and_hold_at_most_the_limit() {
        let community = CommunityId::from_bytes([3; 32]);
        let change = |n: u8| SignedChange {
            envelope: Envelope {
                community,
                doc: "profiles".into(),
                change_hash: [n; 32],
                author: crate::identity::MemberId::from_stored([5; 32]),
                signature: Signature::from_bytes([7; 64]),
            },
            bytes: vec![n],
        };
        let bundle = Bundle {
            ops: (0..5).map(|n| vec![n]).collect(),
            changes: (0..8).map(change).collect(),
            ..Bundle::new(community)
        };
        let pieces = split(bundle.clone(), usize::MAX, 3);
        // 13 items: 3, 3 (two ops, then a change), 3, 3, 1.
        let sizes: Vec<usize> = pieces.iter().map(Bundle::len).collect();
        assert_eq!(sizes, [3, 3, 3, 3, 1]);
        assert_eq!(pieces[1].ops.len(), 2);
        let mut whole = Bundle::new(community);
        for piece in pieces {
            whole.append(piece).expect("one community");
        }
        assert_eq!(whole, bundle);
        assert_eq!(split(bundle.clone(), usize::MAX, 0).len(), 13);
        assert_eq!(split(bundle.clone(), usize::MAX, 100), [bundle]);
        assert!(split(Bundle::new(community), usize::MAX, 3).is_empty());
    }
}
