//! Forged and broken input from another device: each refused with its own
//! typed reason, and nothing of it reaches the file.

use automerge::transaction::Transactable;
use automerge::{ObjType, ROOT, ReadDoc};
use karmyq_core::{
    Bundle, Category, CommunityId, DocId, Error, Heads, Item, Keypair, Link, Profile, Rejection,
    RequestDraft, RequestKind, Result, Role, Signature, SignedChange, Urgency, Visibility,
};
use karmyq_tests::{Device, at, bundle_of, doc_from, forge, forge_after, forge_as, sync};

/// Alice (founder), Bob, Mallory (members) and Moe (moderator), all synced.
struct World {
    alice: Device,
    bob: Device,
    mallory: Device,
    moe: Device,
    /// A relay's replica of Alice's file, judging every bundle she judges.
    relay: Device,
    id: CommunityId,
}

impl World {
    fn new() -> Result<Self> {
        let mut alice = Device::new()?;
        let mut bob = Device::new()?;
        let mut mallory = Device::new()?;
        let mut moe = Device::new()?;
        let id = alice
            .k
            .create_community("Elm Street", "Neighbours", Visibility::Public, at(0))?;
        for d in [&mut bob, &mut mallory, &mut moe] {
            alice.send_to(d, id, at(1))?;
            d.k.community(id)?.join(at(2))?;
            d.send_to(&mut alice, id, at(3))?;
        }
        let moe_id = moe.k.member_id();
        alice
            .k
            .community(id)?
            .set_role(moe_id, Role::Moderator, at(4))?;
        for (n, d) in [&mut bob, &mut mallory, &mut moe].into_iter().enumerate() {
            let name = ["Bob", "Mallory", "Moe"][n];
            d.k.community(id)?.set_profile(&profile(name), at(5))?;
            sync(&mut alice, d, id, at(6))?;
        }
        let mut w = World {
            alice,
            bob,
            mallory,
            moe,
            relay: Device::new_relay()?,
            id,
        };
        w.moe
            .k
            .community(id)?
            .add_norm("Be kind", "Assume good faith", "conduct", at(7))?;
        sync(&mut w.alice, &mut w.moe, id, at(8))?;
        for d in [&mut w.bob, &mut w.mallory] {
            sync(&mut w.alice, d, id, at(9))?;
        }
        Ok(w)
    }

    /// Alice's file, as counts and projections, to prove nothing changed.
    fn alice_state(&mut self) -> Result<(i64, i64, Vec<String>)> {
        Ok((
            self.alice.rows(self.id, "changes")?,
            self.alice.rows(self.id, "pending_changes")?,
            self.alice.k.community(self.id)?.projection_dump()?,
        ))
    }

    /// Applies a bundle to Alice and returns the single refusal.
    fn refused(&mut self, bundle: &Bundle) -> Result<Rejection> {
        // The relay first holds what Alice holds, then gets the same bundle
        // and must give the same verdicts.
        let heads = match self.relay.k.community(self.id) {
            Ok(c) => c.heads()?,
            Err(_) => Heads::empty(),
        };
        let alice = self.alice.k.member_id();
        let hers = self
            .alice
            .k
            .community(self.id)?
            .changes_since_for(&heads, &alice)?;
        self.relay.k.receive(&hers, at(30))?;
        assert_eq!(
            self.relay.k.community(self.id)?.heads()?,
            self.alice.k.community(self.id)?.heads()?
        );
        let before = self.alice_state()?;
        let report = self.alice.k.receive(bundle, at(30))?;
        // Again, prepared ahead as a device's sync engine does (request
        // documents built and judged there).
        let again = self.alice.k.receive_prepared(
            bundle,
            karmyq_core::Prepared::for_device(bundle, 1),
            at(30),
        )?;
        assert_eq!(again, report, "the prepared path judged otherwise");
        // The relay takes it as the server does: decoded and its
        // signatures checked ahead.
        let prepared = karmyq_core::Prepared::for_relay(bundle, 1);
        let relayed = match self.relay.k.receive_prepared(bundle, prepared, at(30)) {
            Ok(r) => r,
            Err(e) => panic!("the relay failed where the device did not: {e}"),
        };
        assert_eq!(relayed, report, "the relay judged otherwise");
        assert!(report.accepted.is_empty(), "accepted: {report:?}");
        assert!(report.pending.is_empty(), "pending: {report:?}");
        assert_eq!(report.rejected.len(), 1, "{report:?}");
        assert_eq!(self.alice_state()?, before, "the file changed");
        Ok(report.rejected[0].1.clone())
    }

    fn everything(&mut self, device: Who) -> Result<Bundle> {
        let id = self.id;
        self.device(device)
            .k
            .community(id)?
            .changes_since(&Heads::empty())
    }

    fn device(&mut self, who: Who) -> &mut Device {
        match who {
            Who::Alice => &mut self.alice,
            Who::Bob => &mut self.bob,
            Who::Mallory => &mut self.mallory,
            Who::Moe => &mut self.moe,
        }
    }

    fn auth_heads(&mut self, who: Who) -> Result<Vec<karmyq_core::OpHash>> {
        let id = self.id;
        Ok(self.device(who).k.community(id)?.heads()?.auth)
    }
}

#[derive(Clone, Copy)]
enum Who {
    Alice,
    Bob,
    Mallory,
    Moe,
}

fn profile(name: &str) -> Profile {
    Profile {
        name: name.into(),
        bio: format!("{name} lives on Elm Street"),
        location: Some("u0yjj".into()),
        availability: "evenings".into(),
        skills: vec!["cooking".into()],
    }
}

/// A fresh, valid profile change by Bob, not yet on Alice's device.
fn bobs_new_change(w: &mut World) -> Result<karmyq_core::SignedChange> {
    let id = w.id;
    let mut p = profile("Bob");
    p.bio = "now with a bike".into();
    w.bob.k.community(id)?.set_profile(&p, at(20))?;
    let heads = w.alice.k.community(id)?.heads()?;
    let bundle = w.bob.k.community(id)?.changes_since(&heads)?;
    assert_eq!(bundle.changes.len(), 1);
    Ok(bundle.changes[0].clone())
}

#[test]
fn forged_signature_is_refused() -> Result<()> {
    let mut w = World::new()?;
    let mut change = bobs_new_change(&mut w)?;
    let mut sig = change.envelope.signature.to_bytes();
    sig[10] ^= 1;
    change.envelope.signature = Signature::from_bytes(sig);
    assert_eq!(
        w.refused(&bundle_of(w.id, vec![change]))?,
        Rejection::BadSignature
    );
    Ok(())
}

#[test]
fn actor_other_than_author_is_refused() -> Result<()> {
    let mut w = World::new()?;
    let all = w.everything(Who::Mallory)?;
    let mut doc = doc_from(&all, &DocId::Profiles)?;
    let heads = w.auth_heads(Who::Mallory)?;
    let bob = w.bob.k.member_id();
    let mallory = Keypair::import_secret(&w.mallory.k.export_secret())?;
    // Mallory writes Bob's entry under Bob's actor id, signing as herself.
    let change = forge_as(
        w.id,
        &DocId::Profiles,
        &mut doc,
        heads,
        &mallory,
        &bob,
        |tx| {
            let (_, entry) = tx
                .get(ROOT, bob.to_string())?
                .ok_or(automerge::AutomergeError::InvalidObjId("bob".into()))?;
            tx.put(&entry, "bio", "hacked")
        },
    )?;
    assert_eq!(
        w.refused(&bundle_of(w.id, vec![change]))?,
        Rejection::ActorMismatch
    );
    Ok(())
}

#[test]
fn non_member_change_is_refused() -> Result<()> {
    let mut w = World::new()?;
    // Eve holds the public community's data but never joined.
    let mut eve = Device::new()?;
    w.alice.send_to(&mut eve, w.id, at(10))?;
    let eve_keys = Keypair::import_secret(&eve.k.export_secret())?;
    let all = w.everything(Who::Alice)?;
    let mut doc = doc_from(&all, &DocId::Profiles)?;
    let heads = w.auth_heads(Who::Alice)?;
    let me = eve_keys.member_id().to_string();
    let change = forge(w.id, &DocId::Profiles, &mut doc, heads, &eve_keys, |tx| {
        let entry = tx.put_object(ROOT, me.as_str(), ObjType::Map)?;
        tx.put(&entry, "name", "Eve")
    })?;
    assert_eq!(
        w.refused(&bundle_of(w.id, vec![change]))?,
        Rejection::NotAMember(eve_keys.member_id())
    );
    // The API refuses the same write with the same reason.
    let err = eve.k.community(w.id)?.set_profile(&profile("Eve"), at(11));
    assert!(
        matches!(err, Err(Error::Rejected(Rejection::NotAMember(m))) if m == eve_keys.member_id())
    );
    Ok(())
}

#[test]
fn editing_another_members_profile_is_refused() -> Result<()> {
    let mut w = World::new()?;
    let all = w.everything(Who::Mallory)?;
    let heads = w.auth_heads(Who::Mallory)?;
    let mallory = Keypair::import_secret(&w.mallory.k.export_secret())?;
    let bob = w.bob.k.member_id().to_string();
    // Inside Bob's entry object.
    let mut doc = doc_from(&all, &DocId::Profiles)?;
    let inside = forge(
        w.id,
        &DocId::Profiles,
        &mut doc,
        heads.clone(),
        &mallory,
        |tx| {
            let (_, entry) = tx
                .get(ROOT, bob.as_str())?
                .ok_or(automerge::AutomergeError::InvalidObjId("bob".into()))?;
            tx.put(&entry, "name", "Bobby Tables")
        },
    )?;
    assert_eq!(
        w.refused(&bundle_of(w.id, vec![inside]))?,
        Rejection::ForeignEntry
    );
    // Replacing Bob's entry at the root.
    let mut doc = doc_from(&all, &DocId::Profiles)?;
    let root = forge(w.id, &DocId::Profiles, &mut doc, heads, &mallory, |tx| {
        tx.put_object(ROOT, bob.as_str(), ObjType::Map).map(|_| ())
    })?;
    assert_eq!(
        w.refused(&bundle_of(w.id, vec![root]))?,
        Rejection::ForeignEntry
    );
    // Bob's profile is untouched on Alice's device.
    let bob_id = w.bob.k.member_id();
    let seen = w.alice.k.community(w.id)?.profile(&bob_id)?;
    assert_eq!(seen.map(|p| p.name), Some("Bob".into()));
    Ok(())
}

#[test]
fn member_writing_norms_is_refused_by_api_and_validator() -> Result<()> {
    let mut w = World::new()?;
    let err = w.bob.k.community(w.id)?.add_norm("Mine", "", "x", at(10));
    assert!(
        matches!(err, Err(Error::Rejected(Rejection::NotPermitted))),
        "{err:?}"
    );
    let all = w.everything(Who::Bob)?;
    let heads = w.auth_heads(Who::Bob)?;
    let bob = Keypair::import_secret(&w.bob.k.export_secret())?;
    let mut doc = doc_from(&all, &DocId::Community)?;
    let change = forge(w.id, &DocId::Community, &mut doc, heads, &bob, |tx| {
        tx.put(ROOT, "description", "Bob's street now")
    })?;
    assert_eq!(
        w.refused(&bundle_of(w.id, vec![change]))?,
        Rejection::NotPermitted
    );
    Ok(())
}

#[test]
fn demoted_moderator_edit_after_demotion_is_refused() -> Result<()> {
    let mut w = World::new()?;
    let moe_id = w.moe.k.member_id();
    // Before: Moe's norm edit is fine.
    let norms = w.moe.k.community(w.id)?.norms()?;
    assert_eq!(norms.len(), 1);
    w.alice
        .k
        .community(w.id)?
        .set_role(moe_id, Role::Member, at(12))?;
    sync(&mut w.alice, &mut w.moe, w.id, at(13))?;
    // The API on Moe's device refuses.
    let mut norm = norms[0].clone();
    norm.title = "Be kind, or else".into();
    let err = w.moe.k.community(w.id)?.update_norm(&norm, at(14));
    assert!(
        matches!(err, Err(Error::Rejected(Rejection::RoleRevoked(m))) if m == moe_id),
        "{err:?}"
    );
    // A hand-made change citing the demotion is refused by Alice's validator.
    let all = w.everything(Who::Moe)?;
    let heads = w.auth_heads(Who::Moe)?;
    let moe = Keypair::import_secret(&w.moe.k.export_secret())?;
    let key = format!("norm:{}", norm.id);
    let mut doc = doc_from(&all, &DocId::Community)?;
    let change = forge(w.id, &DocId::Community, &mut doc, heads, &moe, |tx| {
        let (_, entry) = tx
            .get(ROOT, key.as_str())?
            .ok_or(automerge::AutomergeError::InvalidObjId("norm".into()))?;
        tx.put(&entry, "title", "Moe rules")
    })?;
    assert_eq!(
        w.refused(&bundle_of(w.id, vec![change]))?,
        Rejection::RoleRevoked(moe_id)
    );
    assert_eq!(w.alice.k.community(w.id)?.norms()?[0].title, "Be kind");
    Ok(())
}

#[test]
fn removed_member_change_is_refused() -> Result<()> {
    let mut w = World::new()?;
    let mallory_id = w.mallory.k.member_id();
    w.alice
        .k
        .community(w.id)?
        .remove(mallory_id, "spam", at(12))?;
    sync(&mut w.alice, &mut w.mallory, w.id, at(13))?;
    let err = w
        .mallory
        .k
        .community(w.id)?
        .set_profile(&profile("Mal"), at(14));
    assert!(
        matches!(err, Err(Error::Rejected(Rejection::NotAMember(m))) if m == mallory_id),
        "{err:?}"
    );
    let all = w.everything(Who::Mallory)?;
    let heads = w.auth_heads(Who::Mallory)?;
    let mallory = Keypair::import_secret(&w.mallory.k.export_secret())?;
    let me = mallory_id.to_string();
    let mut doc = doc_from(&all, &DocId::Profiles)?;
    let change = forge(w.id, &DocId::Profiles, &mut doc, heads, &mallory, |tx| {
        let (_, entry) = tx
            .get(ROOT, me.as_str())?
            .ok_or(automerge::AutomergeError::InvalidObjId("me".into()))?;
        tx.put(&entry, "bio", "still here")
    })?;
    assert_eq!(
        w.refused(&bundle_of(w.id, vec![change]))?,
        Rejection::AuthorRemoved(mallory_id)
    );
    Ok(())
}

#[test]
fn replay_into_another_community_is_refused() -> Result<()> {
    let mut w = World::new()?;
    let other = w
        .alice
        .k
        .create_community("Oak Lane", "", Visibility::Public, at(10))?;
    w.alice.send_to(&mut w.bob, other, at(11))?;
    w.bob.k.community(other)?.join(at(12))?;
    w.bob.send_to(&mut w.alice, other, at(13))?;
    let change = bobs_new_change(&mut w)?;
    let before = (
        w.alice.rows(other, "changes")?,
        w.alice.k.community(other)?.projection_dump()?,
    );
    let report = w.alice.k.receive(&bundle_of(other, vec![change]), at(14))?;
    assert_eq!(report.reasons(), vec![&Rejection::WrongCommunity]);
    assert_eq!(
        (
            w.alice.rows(other, "changes")?,
            w.alice.k.community(other)?.projection_dump()?
        ),
        before
    );
    Ok(())
}

#[test]
fn unknown_document_and_mismatched_hash_are_refused() -> Result<()> {
    let mut w = World::new()?;
    let mut change = bobs_new_change(&mut w)?;
    let mut unknown = change.clone();
    unknown.envelope.doc = "ledger".into();
    assert_eq!(
        w.refused(&bundle_of(w.id, vec![unknown]))?,
        Rejection::UnknownDocument
    );
    // Bytes of another change under this envelope.
    let other = w.everything(Who::Bob)?.changes[0].bytes.clone();
    change.bytes = other;
    assert_eq!(
        w.refused(&bundle_of(w.id, vec![change]))?,
        Rejection::HashMismatch
    );
    Ok(())
}

#[test]
fn truncated_and_garbage_bytes_are_refused() -> Result<()> {
    let mut w = World::new()?;
    let change = bobs_new_change(&mut w)?;
    let bundle = bundle_of(w.id, vec![change.clone()]);
    let bytes = bundle.encode();
    // Whole bundles: typed decode errors.
    for bad in [
        bytes[..bytes.len() / 2].to_vec(),
        vec![0xff; 64],
        Vec::new(),
        [bytes.as_slice(), &[0]].concat(),
    ] {
        assert!(matches!(Bundle::decode(&bad), Err(Error::Decode { .. })));
    }
    // Inside a well-formed bundle: the change's bytes cut short or garbage.
    for cut in [change.bytes.len() / 2, 3] {
        let mut c = change.clone();
        c.bytes.truncate(cut);
        assert_eq!(w.refused(&bundle_of(w.id, vec![c]))?, Rejection::Malformed);
    }
    let mut c = change.clone();
    c.bytes = vec![0x85, 0x6f, 0x4a, 0x83, 1, 2, 3];
    assert_eq!(w.refused(&bundle_of(w.id, vec![c]))?, Rejection::Malformed);
    // A garbage authority op.
    let before = w.alice.rows(w.id, "auth_ops")?;
    let mut b = Bundle::new(w.id);
    b.ops.push(vec![1, 2, 3]);
    let report = w.alice.k.receive(&b, at(30))?;
    assert_eq!(
        report.rejected,
        vec![(Item::Op(None), Rejection::Malformed)]
    );
    assert_eq!(w.alice.rows(w.id, "auth_ops")?, before);
    // After all that, the valid change still applies.
    let report = w.alice.k.receive(&bundle, at(31))?;
    assert_eq!(report.accepted.len(), 1, "{report:?}");
    Ok(())
}

/// Bob's next `n` profile changes, as a bundle for Alice, in causal order.
fn bobs_changes(w: &mut World, n: usize) -> Result<Vec<karmyq_core::SignedChange>> {
    let id = w.id;
    let heads = w.alice.k.community(id)?.heads()?;
    for i in 0..n {
        let mut p = profile("Bob");
        p.bio = format!("version {i}");
        w.bob
            .k
            .community(id)?
            .set_profile(&p, at(20 + i64::try_from(i).unwrap_or(0)))?;
    }
    Ok(w.bob.k.community(id)?.changes_since(&heads)?.changes)
}

fn tamper(change: &mut karmyq_core::SignedChange) {
    let mut sig = change.envelope.signature.to_bytes();
    sig[0] ^= 0x55;
    change.envelope.signature = Signature::from_bytes(sig);
}

#[test]
fn an_authors_newest_signature_vouches_for_their_earlier_changes() -> Result<()> {
    let mut w = World::new()?;
    let mut changes = bobs_changes(&mut w, 3)?;
    assert_eq!(changes.len(), 3);
    // Only the newest signature is checked: the hash chain under it covers
    // the earlier changes, so a mangled signature on one of them is moot.
    tamper(&mut changes[1]);
    let report = w.alice.k.receive(&bundle_of(w.id, changes), at(30))?;
    assert_eq!(
        (report.accepted.len(), report.rejected.len()),
        (3, 0),
        "{report:?}"
    );
    let bob = w.bob.k.member_id();
    let bio = w.alice.k.community(w.id)?.profile(&bob)?.map(|p| p.bio);
    assert_eq!(bio, Some("version 2".into()));
    Ok(())
}

#[test]
fn a_bad_newest_signature_vouches_for_nothing() -> Result<()> {
    let mut w = World::new()?;
    let mut changes = bobs_changes(&mut w, 3)?;
    tamper(&mut changes[2]);
    let report = w.alice.k.receive(&bundle_of(w.id, changes), at(30))?;
    // The two earlier changes stand on their own signatures.
    assert_eq!(report.accepted.len(), 2, "{report:?}");
    assert_eq!(report.reasons(), vec![&Rejection::BadSignature]);
    let bob = w.bob.k.member_id();
    let bio = w.alice.k.community(w.id)?.profile(&bob)?.map(|p| p.bio);
    assert_eq!(bio, Some("version 1".into()));
    Ok(())
}

#[test]
fn a_refused_newest_change_vouches_for_nothing() -> Result<()> {
    let mut w = World::new()?;
    let mut changes = bobs_changes(&mut w, 2)?;
    tamper(&mut changes[1]);
    // Bob's third change is validly signed but writes Mallory's entry.
    let mut doc = doc_from(&w.everything(Who::Bob)?, &DocId::Profiles)?;
    let heads = w.auth_heads(Who::Bob)?;
    let bob = Keypair::import_secret(&w.bob.k.export_secret())?;
    let mallory = w.mallory.k.member_id().to_string();
    let bad = forge(w.id, &DocId::Profiles, &mut doc, heads, &bob, |tx| {
        let (_, entry) = tx
            .get(ROOT, mallory.as_str())?
            .ok_or(automerge::AutomergeError::InvalidObjId("mallory".into()))?;
        tx.put(&entry, "bio", "Bob was here")
    })?;
    changes.push(bad);
    let before = w.alice.rows(w.id, "changes")?;
    let report = w.alice.k.receive(&bundle_of(w.id, changes), at(30))?;
    // The first change has its own good signature; the second's was
    // mangled and nothing accepted vouches for it; the third breaks a rule.
    assert_eq!(report.accepted.len(), 1, "{report:?}");
    let mut reasons = report.reasons();
    reasons.sort_by_key(|r| r.code());
    assert_eq!(
        reasons,
        vec![&Rejection::BadSignature, &Rejection::ForeignEntry]
    );
    assert_eq!(w.alice.rows(w.id, "changes")?, before + 1);
    Ok(())
}

/// Bob's request for a lift, saying `description`.
fn lift_to_the_station(description: String) -> RequestDraft {
    RequestDraft {
        title: "Lift to the station".into(),
        description,
        category: Category::Moving,
        urgency: Urgency::Medium,
        kind: RequestKind::Generic,
        location: None,
        when: None,
    }
}

/// Bob posts a request, then edits his profile (and, if `aside`, first
/// writes to Alice in a conversation): his new changes as his device keeps
/// them for himself, in the order it stored them.
fn bobs_request_then_profile(w: &mut World, aside: bool) -> Result<Vec<SignedChange>> {
    let id = w.id;
    let heads = w.alice.k.community(id)?.heads()?;
    let alice = w.alice.k.member_id();
    let bob = w.bob.k.member_id();
    let c = w.bob.k.community(id)?;
    c.post_request(&lift_to_the_station("Early train on Friday".into()), at(20))?;
    if aside {
        let conversation = c.open_conversation(alice, at(21))?;
        c.send_message(conversation, "see you there", at(22))?;
    }
    let mut p = profile("Bob");
    p.bio = "now with a bike".into();
    c.set_profile(&p, at(23))?;
    Ok(c.changes_since_for(&heads, &bob)?.changes)
}

fn decoded(w: &World, change: &SignedChange) -> Result<karmyq_core::Authentic> {
    Ok(change.decode(w.id)?)
}

#[test]
fn changes_travel_in_stored_order_each_naming_its_authors_previous() -> Result<()> {
    let mut w = World::new()?;
    let changes = bobs_request_then_profile(&mut w, true)?;
    let docs: Vec<&str> = changes.iter().map(|c| c.envelope.doc.as_str()).collect();
    // Stored order, not the order of document names.
    assert!(docs[0].starts_with("request/"), "{docs:?}");
    assert!(
        docs[1..docs.len() - 1]
            .iter()
            .all(|d| d.starts_with("conversation/")),
        "{docs:?}"
    );
    assert_eq!(docs.last(), Some(&"profiles"), "{docs:?}");
    // The profile change names the request change, not the private ones
    // written between them.
    let request = decoded(&w, &changes[0])?;
    let edit = decoded(&w, &changes[changes.len() - 1])?;
    assert_eq!(
        edit.previous,
        Some(Link::of(&request.doc, &request.change.hash()))
    );
    assert!(request.previous.is_some(), "Bob wrote his profile before");
    // His next profile edit names nothing: it depends on the last one.
    let heads = w.alice.k.community(w.id)?.heads()?;
    let mut p = profile("Bob");
    p.bio = "bike sold".into();
    w.bob.k.community(w.id)?.set_profile(&p, at(24))?;
    let next = w.bob.k.community(w.id)?.changes_since(&heads)?.changes;
    let next = decoded(&w, &next[next.len() - 1])?;
    assert_eq!(next.doc, DocId::Profiles);
    assert_eq!(next.previous, None);
    Ok(())
}

#[test]
fn a_catch_up_from_nothing_is_what_a_document_by_document_one_sends() -> Result<()> {
    let mut w = World::new()?;
    bobs_request_then_profile(&mut w, true)?;
    let mallory = w.mallory.k.member_id();
    let bob = w.bob.k.member_id();
    let c = w.bob.k.community(w.id)?;
    // From nothing: one pass over the stored changes.
    let fresh = c.changes_since_for(&Heads::empty(), &mallory)?;
    // The same asked document by document: heads naming one document, by
    // no change this replica knows, so every document differs.
    let mut unknown = Heads::empty();
    unknown.docs.insert("profiles".into(), vec![[7; 32]]);
    let by_doc = c.changes_since_for(&unknown, &mallory)?;
    assert_eq!(fresh.ops, by_doc.ops);
    assert_eq!(fresh.changes, by_doc.changes);
    // Mallory is no party to Bob's conversation with Alice: none of it.
    assert!(
        fresh
            .changes
            .iter()
            .all(|ch| !ch.envelope.doc.starts_with("conversation/"))
    );
    // Bob is: he gets it, from nothing as document by document.
    let his = c.changes_since_for(&Heads::empty(), &bob)?;
    assert_eq!(his.changes, c.changes_since_for(&unknown, &bob)?.changes);
    assert!(
        his.changes
            .iter()
            .any(|ch| ch.envelope.doc.starts_with("conversation/"))
    );
    assert!(his.changes.len() > fresh.changes.len());
    Ok(())
}

/// Changes are signed as Automerge encodes them, not DEFLATE-compressed (a
/// receiver would inflate each one); one an older device signed compressed
/// has the same hash, so the same envelope vouches for it and it stands.
#[test]
fn changes_travel_uncompressed_and_compressed_ones_still_stand() -> Result<()> {
    let mut w = World::new()?;
    let id = w.id;
    let heads = w.bob.k.community(id)?.heads()?;
    let bob = w.bob.k.member_id();
    let description = "Early train on Friday, two suitcases. ".repeat(12);
    let request = w
        .bob
        .k
        .community(id)?
        .post_request(&lift_to_the_station(description), at(20))?;
    let changes = w
        .bob
        .k
        .community(id)?
        .changes_since_for(&heads, &bob)?
        .changes;
    let [signed] = changes.as_slice() else {
        panic!("one change, not {}", changes.len());
    };
    let mut change = automerge::Change::from_bytes(signed.bytes.clone())
        .map_err(|e| Error::Corrupt(e.to_string()))?;
    assert_eq!(signed.bytes, change.raw_bytes());
    let compressed = change.bytes().into_owned();
    assert!(
        compressed.len() < signed.bytes.len(),
        "{} >= {}",
        compressed.len(),
        signed.bytes.len()
    );
    let older = SignedChange {
        envelope: signed.envelope.clone(),
        bytes: compressed,
    };
    let report = w.alice.k.receive(&bundle_of(id, vec![older]), at(21))?;
    assert_eq!(
        (report.accepted.len(), report.rejected.len()),
        (1, 0),
        "{report:?}"
    );
    let view = w.alice.k.community(id)?.request(request, at(21))?;
    assert!(view.request.draft.description.starts_with("Early train"));
    Ok(())
}

/// Every page of a catch-up `reader` began with frames of `max_bytes`.
fn pages(
    c: &mut karmyq_core::Community,
    reader: &karmyq_core::MemberId,
    max_bytes: usize,
) -> Result<Vec<karmyq_core::Bundle>> {
    let (first, mut next) = c.catch_up_for(&Heads::empty(), reader, max_bytes)?;
    let mut out = vec![first];
    while let Some(page) = next {
        let (bundle, after) = c.next_page_for(page, reader, max_bytes)?;
        out.push(bundle);
        next = after;
    }
    Ok(out)
}

#[test]
fn a_catch_up_in_pages_is_the_whole_one_cut_where_frames_end() -> Result<()> {
    let mut w = World::new()?;
    bobs_request_then_profile(&mut w, true)?;
    let mallory = w.mallory.k.member_id();
    let bob = w.bob.k.member_id();
    let id = w.id;
    let c = w.bob.k.community(id)?;
    for reader in [mallory, bob] {
        let whole = c.changes_since_for(&Heads::empty(), &reader)?;
        assert!(whole.changes.len() > 3, "{}", whole.changes.len());
        // Frames too small for any change: one change a page, the
        // authority ops in the first.
        let single = pages(c, &reader, 1)?;
        assert_eq!(single.len(), whole.changes.len());
        assert_eq!(single[0].ops, whole.ops);
        assert!(single.iter().all(|p| p.changes.len() == 1));
        assert!(single[1..].iter().all(|p| p.ops.is_empty()));
        // Frames a few changes fit in: each page fits, and together they
        // are the whole catch-up, in order.
        let largest = whole.changes[1..]
            .iter()
            .map(|ch| bundle_of(id, vec![ch.clone()]).encode().len())
            .max()
            .unwrap_or(0);
        let max = 2 * largest + 1024;
        let paged = pages(c, &reader, max)?;
        assert!(
            paged.len() > 1 && paged.len() < single.len(),
            "{}",
            paged.len()
        );
        for page in &paged[1..] {
            assert!(
                page.encode().len() <= max,
                "{} > {max}",
                page.encode().len()
            );
        }
        let changes: Vec<_> = paged.iter().flat_map(|p| p.changes.clone()).collect();
        assert_eq!(changes, whole.changes);
    }
    // What is stored after a catch-up began is not in its pages (it goes
    // live), and a change readable when the page is read is judged then.
    let (first, next) = c.catch_up_for(&Heads::empty(), &bob, 1)?;
    let before = c.changes_since_for(&Heads::empty(), &bob)?;
    let mut p = profile("Bob");
    p.bio = "later".into();
    c.set_profile(&p, at(40))?;
    let mut rest = Vec::new();
    let mut next = next;
    while let Some(page) = next {
        let (bundle, after) = c.next_page_for(page, &bob, 1)?;
        rest.extend(bundle.changes);
        next = after;
    }
    let read: Vec<_> = first.changes.into_iter().chain(rest).collect();
    assert_eq!(read, before.changes);
    let now = c.changes_since_for(&Heads::empty(), &bob)?;
    assert_eq!(now.changes.len(), read.len() + 1);
    // A replica that holds documents gets what it lacks whole.
    let mut held = Heads::empty();
    held.docs.insert("profiles".into(), vec![[7; 32]]);
    let (all, none) = c.catch_up_for(&held, &bob, 1)?;
    assert_eq!(none, None);
    assert_eq!(all.changes, now.changes);
    Ok(())
}

#[test]
fn a_newest_signature_vouches_for_the_change_it_names_in_another_document() -> Result<()> {
    let mut w = World::new()?;
    let mut changes = bobs_request_then_profile(&mut w, false)?;
    assert_eq!(changes.len(), 2);
    tamper(&mut changes[0]);
    let Some(DocId::Request(request)) = DocId::parse(&changes[0].envelope.doc) else {
        panic!("not a request: {}", changes[0].envelope.doc);
    };
    // On its own, the request change's mangled signature is refused...
    let alone = bundle_of(w.id, vec![changes[0].clone()]);
    assert_eq!(w.refused(&alone)?, Rejection::BadSignature);
    // ...but Bob's signed profile change names it: both stand on a device.
    let report = w
        .alice
        .k
        .receive(&bundle_of(w.id, changes.clone()), at(30))?;
    assert_eq!(
        (report.accepted.len(), report.rejected.len()),
        (2, 0),
        "{report:?}"
    );
    let view = w.alice.k.community(w.id)?.request(request, at(30))?;
    assert_eq!(view.request.draft.title, "Lift to the station");
    // A relay stores nothing that rests on a link: there the request change
    // stands on its own signature, and is refused.
    let relayed = w.relay.k.receive(&bundle_of(w.id, changes), at(30))?;
    assert_eq!(relayed.accepted.len(), 1, "{relayed:?}");
    assert_eq!(relayed.reasons(), vec![&Rejection::BadSignature]);
    Ok(())
}

#[test]
fn a_bad_signature_on_the_naming_change_vouches_for_nothing() -> Result<()> {
    let mut w = World::new()?;
    let mut changes = bobs_request_then_profile(&mut w, false)?;
    tamper(&mut changes[1]);
    let report = w.alice.k.receive(&bundle_of(w.id, changes), at(30))?;
    // The request change stands on its own signature; the profile change
    // is refused.
    assert_eq!(report.accepted.len(), 1, "{report:?}");
    assert_eq!(report.reasons(), vec![&Rejection::BadSignature]);
    Ok(())
}

#[test]
fn naming_another_members_change_vouches_for_nothing() -> Result<()> {
    let mut w = World::new()?;
    let id = w.id;
    // Mallory's new profile change, its signature mangled.
    let heads = w.alice.k.community(id)?.heads()?;
    let mut p = profile("Mallory");
    p.bio = "new in town".into();
    w.mallory.k.community(id)?.set_profile(&p, at(20))?;
    let mut theirs = w.mallory.k.community(id)?.changes_since(&heads)?.changes;
    assert_eq!(theirs.len(), 1);
    tamper(&mut theirs[0]);
    let mallorys = decoded(&w, &theirs[0])?;
    // Bob signs a change of his own entry that names hers as his previous.
    let mut doc = doc_from(&w.everything(Who::Bob)?, &DocId::Profiles)?;
    let auth = w.auth_heads(Who::Bob)?;
    let bob = Keypair::import_secret(&w.bob.k.export_secret())?;
    let entry_of_bob = bob.member_id().to_string();
    let link = Link::of(&DocId::Profiles, &mallorys.change.hash());
    let linked = forge_after(id, &DocId::Profiles, &mut doc, auth, link, &bob, |tx| {
        let (_, entry) = tx
            .get(ROOT, entry_of_bob.as_str())?
            .ok_or(automerge::AutomergeError::InvalidObjId("bob".into()))?;
        tx.put(&entry, "bio", "vouching for Mallory")
    })?;
    let report = w
        .alice
        .k
        .receive(&bundle_of(id, vec![theirs.remove(0), linked]), at(30))?;
    assert_eq!(report.accepted.len(), 1, "{report:?}");
    assert_eq!(report.reasons(), vec![&Rejection::BadSignature]);
    let mallory = w.mallory.k.member_id();
    let bio = w.alice.k.community(id)?.profile(&mallory)?.map(|p| p.bio);
    assert_ne!(bio, Some("new in town".into()));
    Ok(())
}

/// Bob's fresh change (`request`: his new request, else his profile) with
/// its decoded form edited by `edit`, signed again by Bob.
fn bobs_change_edited(
    w: &mut World,
    request: bool,
    edit: impl FnOnce(&mut automerge::ExpandedChange),
) -> Result<SignedChange> {
    let (doc_id, honest) = if request {
        let changes = bobs_request_then_profile(w, false)?;
        let first = changes[0].clone();
        (doc_of(w, &first)?, first)
    } else {
        (DocId::Profiles, bobs_new_change(w)?)
    };
    re_signed(w, &doc_id, &honest, Who::Bob, edit)
}

/// `honest` (in `doc_id`) decoded, edited by `edit`, encoded again and
/// signed by `author`: a change only a hand-made client sends.
fn re_signed(
    w: &mut World,
    doc_id: &DocId,
    honest: &SignedChange,
    author: Who,
    edit: impl FnOnce(&mut automerge::ExpandedChange),
) -> Result<SignedChange> {
    let change = automerge::Change::from_bytes(honest.bytes.clone())
        .map_err(|e| Error::Corrupt(e.to_string()))?;
    let mut expanded = change.decode();
    edit(&mut expanded);
    expanded.hash = None;
    let keys = Keypair::import_secret(&w.device(author).k.export_secret())?;
    Ok(SignedChange::sign(
        w.id,
        doc_id,
        &automerge::Change::from(expanded),
        &keys,
    ))
}

fn doc_of(w: &World, change: &SignedChange) -> Result<DocId> {
    Ok(decoded(w, change)?.doc)
}

/// An edit of Bob's fresh change: what it breaks, whether in his new
/// request (else his profile), and the edit.
type Forgery = (
    &'static str,
    bool,
    Box<dyn FnOnce(&mut automerge::ExpandedChange)>,
);

/// Each forgery, in a world of its own, refused as `reason` everywhere.
fn each_refused_as(forgeries: Vec<Forgery>, reason: &Rejection) -> Result<()> {
    for (what, request, edit) in forgeries {
        let mut w = World::new()?;
        let forged = bobs_change_edited(&mut w, request, edit)?;
        assert_eq!(
            &w.refused(&bundle_of(w.id, vec![forged]))?,
            reason,
            "{what}"
        );
    }
    Ok(())
}

/// Ops that name what the document did not hold at the change's
/// dependencies: an object never made, a value never written or under
/// another key, a delete of nothing. Automerge would take each, then panic
/// or write a file it cannot load; the validator refuses them.
/// Moves the change's first op into an object nobody made.
fn in_an_object_never_made(e: &mut automerge::ExpandedChange) {
    let op = &mut e.operations[0];
    op.obj = automerge::legacy::ObjectId::Id(automerge::legacy::OpId(9_999, e.actor_id.clone()));
    op.pred = automerge::legacy::SortedVec::new();
}

#[test]
fn ops_naming_what_the_document_did_not_hold_are_refused() -> Result<()> {
    use automerge::legacy::{ObjectId, OpId, OpType, SortedVec};
    let forgeries: Vec<Forgery> = vec![
        (
            "an object never made",
            false,
            Box::new(in_an_object_never_made),
        ),
        (
            "a value never written",
            false,
            Box::new(|e| e.operations[0].pred = vec![OpId(9_999, e.actor_id.clone())].into()),
        ),
        (
            "a value under another key",
            false,
            Box::new(|e| {
                let ObjectId::Id(entry) = e.operations[0].obj.clone() else {
                    panic!("a profile field is written in its entry");
                };
                e.operations[0].pred = vec![entry].into();
            }),
        ),
        (
            "a delete of nothing",
            false,
            Box::new(|e| {
                let op = &mut e.operations[0];
                op.action = OpType::Delete;
                op.pred = SortedVec::new();
            }),
        ),
        (
            "a request's value under another key",
            true,
            Box::new(|e| {
                let first = OpId(e.start_op.get(), e.actor_id.clone());
                e.operations[1].pred = vec![first].into();
            }),
        ),
        (
            "a request's object never made",
            true,
            Box::new(in_an_object_never_made),
        ),
    ];
    each_refused_as(forgeries, &Rejection::DanglingOp)
}

/// Changes out of their author's sequence in the document: a gap in the
/// numbering, a change not on the author's previous one, op numbers used
/// again. Automerge would panic at the first and write a file it cannot
/// load from the others; the validator refuses them.
#[test]
fn changes_out_of_their_authors_sequence_are_refused() -> Result<()> {
    let forgeries: Vec<Forgery> = vec![
        ("a gap", false, Box::new(|e| e.seq += 5)),
        ("not on the previous", false, Box::new(|e| e.deps.clear())),
        (
            "op numbers used again",
            false,
            Box::new(|e| e.start_op = std::num::NonZeroU64::MIN),
        ),
        (
            "a request's first change numbered 2",
            true,
            Box::new(|e| e.seq = 2),
        ),
    ];
    each_refused_as(forgeries, &Rejection::OutOfSequence)
}

/// A second first change: Bob's request as Alice already holds it, and
/// another change numbered 1 in it with nothing before it. Built on its
/// own (the device's prepared path builds request documents from a
/// bundle's changes), it looks in sequence; against what Alice holds it is
/// not, and Automerge would take it and break the document.
#[test]
fn a_second_first_change_is_refused_against_what_is_held() -> Result<()> {
    let mut w = World::new()?;
    let id = w.id;
    let changes = bobs_request_then_profile(&mut w, false)?;
    let first = changes[0].clone();
    let doc_id = doc_of(&w, &first)?;
    w.alice
        .k
        .receive(&bundle_of(id, vec![first.clone()]), at(25))?;
    let forged = re_signed(&mut w, &doc_id, &first, Who::Bob, |again| {
        assert_eq!((again.seq, again.deps.len()), (1, 0));
        again.time += 1;
    })?;
    assert_ne!(forged.envelope.change_hash, first.envelope.change_hash);
    assert_eq!(
        w.refused(&bundle_of(id, vec![forged]))?,
        Rejection::OutOfSequence
    );
    Ok(())
}

/// An op into an object its change's dependencies do not reach: Moe, a
/// moderator, who may write in any norm, edits a norm Alice made in a
/// change he has not seen. A replica that took his change before hers
/// would find no such object (Automerge panics there); the validator
/// refuses it everywhere, as judged at the change's dependencies.
#[test]
fn an_op_into_an_object_made_concurrently_is_refused() -> Result<()> {
    let mut w = World::new()?;
    let id = w.id;
    let norm_id =
        w.alice
            .k
            .community(id)?
            .add_norm("Share tools", "Lend what you can", "sharing", at(20))?;
    let community = doc_from(&w.everything(Who::Alice)?, &DocId::Community)?;
    let Some((_, automerge::ObjId::Id(counter, actor, _))) =
        community.get(ROOT, format!("norm:{norm_id}"))?
    else {
        panic!("Alice's norm is an object");
    };
    // Moe edits his own norm, not having seen Alice's.
    let heads = w.moe.k.community(id)?.heads()?;
    let mut norm = w.moe.k.community(id)?.norms()?[0].clone();
    norm.title = "Be kind, always".into();
    w.moe.k.community(id)?.update_norm(&norm, at(21))?;
    let moe = w.moe.k.member_id();
    let [honest] = w
        .moe
        .k
        .community(id)?
        .changes_since_for(&heads, &moe)?
        .changes
        .try_into()
        .map_err(|_| Error::InvalidArgument("one change".into()))?;
    let forged = re_signed(&mut w, &DocId::Community, &honest, Who::Moe, |edited| {
        let op = &mut edited.operations[0];
        op.obj = automerge::legacy::ObjectId::Id(automerge::legacy::OpId(counter, actor));
        op.pred = automerge::legacy::SortedVec::new();
    })?;
    assert_eq!(
        w.refused(&bundle_of(id, vec![forged]))?,
        Rejection::DanglingOp
    );
    Ok(())
}
