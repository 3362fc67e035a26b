//! Bytes from other devices, mangled at random: every decoder answers with
//! a value or a typed error, never a panic, and a mangled bundle that still
//! decodes is applied without harm.

use std::collections::HashSet;
use std::sync::OnceLock;

use karmyq_core::{
    Bundle, CommunityId, Error, Heads, Item, Link, Profile, SignedChange, SignedOp, Visibility,
};
use karmyq_tests::{Device, at};
use proptest::prelude::*;

/// A real bundle (genesis, a join, a profile and a norm), encoded once.
fn sample() -> &'static Vec<u8> {
    static SAMPLE: OnceLock<Vec<u8>> = OnceLock::new();
    SAMPLE.get_or_init(|| {
        let build = || -> karmyq_core::Result<Vec<u8>> {
            let mut alice = Device::new()?;
            let id = alice
                .k
                .create_community("Elm", "", Visibility::Public, at(0))?;
            let c = alice.k.community(id)?;
            c.set_profile(
                &Profile {
                    name: "Alice".into(),
                    ..Profile::default()
                },
                at(1),
            )?;
            c.add_norm("Be kind", "", "conduct", at(2))?;
            Ok(c.changes_since(&Heads::empty())?.encode())
        };
        build().unwrap_or_default()
    })
}

/// Whether `held[x]`, whose own signature fails, is vouched for: a held
/// change by its author whose signature holds reaches it, through
/// dependencies in a document and the links naming each author's previous
/// change.
fn vouched(held: &[SignedChange], x: usize, community: CommunityId) -> bool {
    let Ok(decoded) = held
        .iter()
        .map(|c| c.decode(community))
        .collect::<Result<Vec<_>, _>>()
    else {
        return false;
    };
    let author = decoded[x].author();
    let reaches = |from: usize| {
        let mut stack = vec![from];
        let mut seen = HashSet::new();
        while let Some(i) = stack.pop() {
            if i == x {
                return true;
            }
            if !seen.insert(i) {
                continue;
            }
            let c = &decoded[i];
            for (j, d) in decoded.iter().enumerate() {
                let dep = d.doc == c.doc && c.change.deps().contains(&d.change.hash());
                let named =
                    c.author() == author && c.previous == Some(Link::of(&d.doc, &d.change.hash()));
                if dep || named {
                    stack.push(j);
                }
            }
        }
        false
    };
    (0..held.len()).any(|t| {
        t != x
            && decoded[t].author() == author
            && decoded[t].verify_signature().is_ok()
            && reaches(t)
    })
}

#[derive(Debug, Clone)]
enum Mangle {
    Flip(usize, u8),
    Cut(usize),
    Insert(usize, u8),
    Remove(usize),
}

fn mangle(bytes: &[u8], edits: &[Mangle]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for e in edits {
        let len = out.len().max(1);
        match *e {
            Mangle::Flip(i, x) => {
                if let Some(b) = out.get_mut(i % len) {
                    *b ^= x.max(1);
                }
            }
            Mangle::Cut(i) => out.truncate(i % len),
            Mangle::Insert(i, x) => out.insert(i % (out.len() + 1), x),
            Mangle::Remove(i) => {
                if !out.is_empty() {
                    out.remove(i % len);
                }
            }
        }
    }
    out
}

fn edits() -> impl Strategy<Value = Vec<Mangle>> {
    prop::collection::vec(
        prop_oneof![
            (any::<usize>(), any::<u8>()).prop_map(|(i, x)| Mangle::Flip(i, x)),
            any::<usize>().prop_map(Mangle::Cut),
            (any::<usize>(), any::<u8>()).prop_map(|(i, x)| Mangle::Insert(i, x)),
            any::<usize>().prop_map(Mangle::Remove),
        ],
        1..4,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let bundle_ok = matches!(Bundle::decode(&bytes), Err(Error::Decode { .. }) | Ok(_));
        let op_ok = matches!(SignedOp::decode(&bytes), Err(Error::Decode { .. }) | Ok(_));
        prop_assert!(bundle_ok && op_ok);
    }

    #[test]
    fn mangled_bundles_are_refused_or_harmless(edits in edits()) {
        let bytes = mangle(sample(), &edits);
        if let Ok(bundle) = Bundle::decode(&bytes) {
            let mut bob = Device::new().map_err(|e| TestCaseError::fail(e.to_string()))?;
            match bob.k.receive(&bundle, at(10)) {
                Ok(report) => {
                    // What was refused is not on disk; what is on disk is authentic.
                    let c = bob.k.community(bundle.community)
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    let held = c.changes_since(&Heads::empty())
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    for (i, change) in held.changes.iter().enumerate() {
                        prop_assert!(
                            change.authenticate(bundle.community).is_ok()
                                || vouched(&held.changes, i, bundle.community)
                        );
                        let refused = report.rejected.iter().any(|(item, _)| {
                            matches!(item, Item::Change { hash, .. } if *hash == change.envelope.change_hash)
                        });
                        prop_assert!(!refused, "a refused change was stored");
                    }
                }
                Err(Error::UnknownCommunity | Error::Rejected(_)) => {}
                Err(e) => prop_assert!(false, "untyped failure: {e}"),
            }
        }
    }
}
