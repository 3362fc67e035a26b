//! Communities are isolated on the server: a non-member, a member of
//! another community and a removed member receive nothing and store
//! nothing, and a forged change sent by a hand-written client is refused,
//! counted in `/metrics`, not stored and not relayed.

use std::time::{Duration, Instant};

use automerge::ROOT;
use automerge::transaction::Transactable;
use automerge::{ObjType, ReadDoc};
use karmyq_core::sync::{ErrorCode, Frame, SyncStatus};
use karmyq_core::{
    Bundle, CommunityId, DocId, Heads, Karmyq, Keypair, OpHash, Profile, SignedChange, Timestamp,
    Visibility,
};
use karmyq_tests::net::{Node, TestResult, TestServer, phone_of, wait_until};
use karmyq_tests::{bundle_of, doc_from, forge};

fn now() -> Timestamp {
    Timestamp::now()
}

fn profile(name: &str) -> Profile {
    Profile {
        name: name.into(),
        ..Profile::default()
    }
}

fn keys_of(node: &Node) -> TestResult<Keypair> {
    Ok(Keypair::import_secret(
        &node.with(|k| Ok(k.export_secret()))?,
    )?)
}

fn everything(k: &mut Karmyq, id: CommunityId) -> karmyq_core::Result<Bundle> {
    k.community(id)?.changes_since(&Heads::empty())
}

/// Alice founds a public community online; each of `others` joins it
/// (log by hand, then the server).
fn community_with(
    server: &TestServer,
    alice: &mut Node,
    others: &mut [&mut Node],
) -> TestResult<CommunityId> {
    let id = alice.with(|k| k.create_community("Elm Street", "", Visibility::Public, now()))?;
    alice.go_online(server, id)?;
    for node in others.iter_mut() {
        let log = alice.with(|k| everything(k, id))?;
        node.with(|k| {
            k.receive(&log, now())?;
            k.community(id)?.join(now())
        })?;
        node.go_online(server, id)?;
    }
    let want = others.len() + 1;
    wait_until("everyone joined on alice's device", || {
        alice.with(|k| Ok(k.community(id)?.members()?.len() == want))
    })?;
    Ok(id)
}

/// A profile change by `keys` in their own entry, citing `auth_heads`.
fn forged_profile(
    base: &Bundle,
    keys: &Keypair,
    auth_heads: Vec<OpHash>,
    name: &str,
) -> TestResult<SignedChange> {
    let mut doc = doc_from(base, &DocId::Profiles)?;
    let me = keys.member_id().to_string();
    Ok(forge(
        base.community,
        &DocId::Profiles,
        &mut doc,
        auth_heads,
        keys,
        |tx| {
            let entry = match tx.get(ROOT, me.as_str())? {
                Some((_, entry)) => entry,
                None => tx.put_object(ROOT, me.as_str(), ObjType::Map)?,
            };
            tx.put(&entry, "name", name)
        },
    )?)
}

fn server_holds(server: &TestServer, id: CommunityId, change: &SignedChange) -> TestResult<bool> {
    let path = server
        .dir
        .path()
        .join("communities")
        .join(format!("{id}.sqlite3"));
    let conn = rusqlite::Connection::open(path)?;
    let n: i64 = conn.query_row(
        "SELECT count(*) FROM changes WHERE hash = ?1",
        [change.envelope.change_hash.as_slice()],
        |r| r.get(0),
    )?;
    Ok(n > 0)
}

fn names(node: &Node, id: CommunityId) -> TestResult<Vec<String>> {
    node.with(|k| {
        Ok(k.community(id)?
            .members()?
            .into_iter()
            .filter_map(|m| m.profile.map(|p| p.name))
            .collect())
    })
}

#[test]
fn non_members_and_other_communities_get_nothing_and_cannot_write() -> TestResult {
    let server = TestServer::start()?;
    let (mut alice, mut bob, mut mallory) = (Node::new()?, Node::new()?, Node::new()?);
    let id = community_with(&server, &mut alice, &mut [&mut bob])?;
    // Mallory is a member of her own community on the same server.
    let oak = mallory.with(|k| k.create_community("Oak Lane", "", Visibility::Public, now()))?;
    mallory.go_online(&server, oak)?;
    wait_until("mallory's community on the server", || {
        Ok(mallory.status() == Some(SyncStatus::UpToDate))
    })?;

    // Subscribing to Elm Street and to a community that does not exist
    // get the very same answer.
    let mallory_keys = keys_of(&mallory)?;
    let mut raw = server.raw()?;
    raw.login(&mallory_keys)?;
    let elm = raw.subscribe(id, Heads::empty())?;
    let nowhere = raw.subscribe(CommunityId::from_bytes([7; 32]), Heads::empty())?;
    let strip = |frames: &[Frame]| -> Vec<Frame> {
        frames
            .iter()
            .map(|f| match f {
                Frame::Error { code, message, .. } => Frame::Error {
                    code: *code,
                    community: None,
                    message: message.clone(),
                },
                other => other.clone(),
            })
            .collect()
    };
    assert_eq!(strip(&elm), strip(&nowhere));
    assert!(matches!(
        elm.as_slice(),
        [Frame::Error {
            code: ErrorCode::NotMember,
            ..
        }]
    ));

    // A forged profile change from Mallory's hand-written client.
    let base = alice.with(|k| everything(k, id))?;
    let heads = alice.heads(id)?.auth;
    let forged = forged_profile(&base, &mallory_keys, heads, "Mallory")?;
    let rejected_before =
        server.metric("karmyq_changes_rejected_total{reason=\"not_a_member\"}")?;
    raw.send(&Frame::Bundle {
        bytes: bundle_of(id, vec![forged.clone()]).encode(),
    })?;
    assert_eq!(raw.next_error()?, ErrorCode::NotMember);
    assert!(!server_holds(&server, id, &forged)?);
    assert_eq!(
        server.metric("karmyq_changes_rejected_total{reason=\"not_a_member\"}")?,
        rejected_before + 1
    );
    // Her engine on Elm Street is refused too, and gets nothing.
    let mut mallory_elm = Node::new()?;
    mallory_elm.go_online(&server, id)?;
    wait_until("mallory's second device refused", || {
        Ok(mallory_elm.saw(&SyncStatus::Rejected {
            reason: "not_member".into(),
        }))
    })?;
    assert!(mallory_elm.with(|k| Ok(k.community(id).is_err()))?);

    // Nothing reached Bob: a later change of Alice's arrives, the forged
    // one never did (the server relays in the order it stores).
    alice.with(|k| k.community(id)?.set_profile(&profile("Alice"), now()))?;
    alice.nudge();
    wait_until("alice's profile at bob's", || {
        Ok(names(&bob, id)?.contains(&"Alice".to_owned()))
    })?;
    assert!(!names(&bob, id)?.contains(&"Mallory".to_owned()));
    // And Mallory's own community never showed up on Alice's or Bob's devices.
    assert!(alice.with(|k| Ok(k.community(oak).is_err()))?);
    assert!(bob.with(|k| Ok(k.community(oak).is_err()))?);
    Ok(())
}

#[test]
fn a_removed_member_is_cut_off_at_once_and_cannot_forge_with_stale_heads() -> TestResult {
    let server = TestServer::start()?;
    let (mut alice, mut bob, mut carol) = (Node::new()?, Node::new()?, Node::new()?);
    let id = community_with(&server, &mut alice, &mut [&mut bob, &mut carol])?;
    wait_until("bob up to date", || {
        Ok(bob.status() == Some(SyncStatus::UpToDate))
    })?;
    bob.with(|k| k.community(id)?.set_profile(&profile("Bob"), now()))?;
    bob.nudge();
    wait_until("bob's profile at carol's", || {
        Ok(names(&carol, id)?.contains(&"Bob".to_owned()))
    })?;
    // What Bob holds before his removal: the heads he will cite.
    let stale = bob.heads(id)?.auth;
    let base = bob.with(|k| everything(k, id))?;
    let bob_keys = keys_of(&bob)?;

    let bob_id = bob_keys.member_id();
    let removed_at = Instant::now();
    alice.with(|k| k.community(id)?.remove(bob_id, "spam", now()))?;
    alice.nudge();
    wait_until("bob's subscription closed", || {
        Ok(bob.saw(&SyncStatus::Rejected {
            reason: "not_member".into(),
        }))
    })?;
    let cut_off = removed_at.elapsed();
    assert!(cut_off < Duration::from_secs(5), "{cut_off:?}");
    println!("removed member cut off after {cut_off:?}");

    // Bob, with a hand-written client, forges a change citing the heads
    // from before his removal (a replica that only judges the cited state
    // could take it): the server refuses it at ingest.
    let forged = forged_profile(&base, &bob_keys, stale, "Bob is back")?;
    let before = server.metric("karmyq_changes_rejected_total{reason=\"author_removed\"}")?;
    let mut raw = server.raw()?;
    raw.login(&bob_keys)?;
    assert!(matches!(
        raw.subscribe(id, Heads::empty())?.as_slice(),
        [Frame::Error {
            code: ErrorCode::NotMember,
            ..
        }]
    ));
    raw.send(&Frame::Bundle {
        bytes: bundle_of(id, vec![forged.clone()]).encode(),
    })?;
    assert_eq!(raw.next_error()?, ErrorCode::NotMember);
    assert!(!server_holds(&server, id, &forged)?);
    assert_eq!(
        server.metric("karmyq_changes_rejected_total{reason=\"author_removed\"}")?,
        before + 1
    );

    // Carol never sees it: Alice's later change reaches her, Bob's forged
    // one does not.
    alice.with(|k| k.community(id)?.set_profile(&profile("Alice"), now()))?;
    alice.nudge();
    wait_until("alice's profile at carol's", || {
        Ok(names(&carol, id)?.contains(&"Alice".to_owned()))
    })?;
    assert!(!names(&carol, id)?.contains(&"Bob is back".to_owned()));
    assert_eq!(carol.with(|k| Ok(k.community(id)?.members()?.len()))?, 2);
    // For the record: a replica judging only the cited state (core's
    // validator, as of this writing) would take this change; the server's
    // check of current membership at ingest is what keeps it out.
    let verdict = carol.with(|k| k.receive(&bundle_of(id, vec![forged.clone()]), now()))?;
    println!(
        "core alone on the stale-heads forgery: accepted {}, rejected {:?}",
        verdict.accepted.len(),
        verdict.reasons()
    );
    Ok(())
}

#[test]
fn a_members_forged_change_is_acknowledged_as_refused_and_not_relayed() -> TestResult {
    let server = TestServer::start()?;
    let (mut alice, mut bob, mut carol) = (Node::new()?, Node::new()?, Node::new()?);
    let id = community_with(&server, &mut alice, &mut [&mut bob, &mut carol])?;
    alice.with(|k| k.community(id)?.set_profile(&profile("Alice"), now()))?;
    alice.nudge();
    wait_until("alice's profile at bob's", || {
        Ok(names(&bob, id)?.contains(&"Alice".to_owned()))
    })?;
    // Bob, a member, writes into Alice's profile entry with a hand-written
    // client.
    let base = bob.with(|k| everything(k, id))?;
    let bob_keys = keys_of(&bob)?;
    let alice_id = alice.with(|k| Ok(k.member_id()))?.to_string();
    let mut doc = doc_from(&base, &DocId::Profiles)?;
    let forged = forge(
        id,
        &DocId::Profiles,
        &mut doc,
        bob.heads(id)?.auth,
        &bob_keys,
        |tx| {
            let (_, entry) = tx
                .get(ROOT, alice_id.as_str())?
                .ok_or(automerge::AutomergeError::InvalidObjId("alice".into()))?;
            tx.put(&entry, "name", "Alice the Fool")
        },
    )?;
    let before = server.metric("karmyq_changes_rejected_total{reason=\"foreign_entry\"}")?;
    let mut raw = server.raw()?;
    raw.login(&bob_keys)?;
    raw.send(&Frame::Bundle {
        bytes: bundle_of(id, vec![forged.clone()]).encode(),
    })?;
    match raw.frame()? {
        Frame::Ack(ack) => {
            assert_eq!(ack.accepted, 0);
            assert_eq!(ack.rejected, vec!["foreign_entry".to_owned()]);
        }
        other => return Err(format!("expected an ack, got {other:?}").into()),
    }
    assert!(!server_holds(&server, id, &forged)?);
    assert_eq!(
        server.metric("karmyq_changes_rejected_total{reason=\"foreign_entry\"}")?,
        before + 1
    );
    // A later genuine change reaches Carol; the forged one never did.
    bob.with(|k| k.community(id)?.set_profile(&profile("Bob"), now()))?;
    bob.nudge();
    wait_until("bob's profile at carol's", || {
        Ok(names(&carol, id)?.contains(&"Bob".to_owned()))
    })?;
    assert!(!names(&carol, id)?.contains(&"Alice the Fool".to_owned()));
    assert!(names(&carol, id)?.contains(&"Alice".to_owned()));
    Ok(())
}

#[test]
fn a_removal_relayed_by_a_non_member_still_cuts_the_member_off() -> TestResult {
    let server = TestServer::start()?;
    let (mut alice, mut bob, mut carol) = (Node::new()?, Node::new()?, Node::new()?);
    let id = community_with(&server, &mut alice, &mut [&mut bob, &mut carol])?;
    wait_until("bob and carol up to date", || {
        Ok(bob.status() == Some(SyncStatus::UpToDate)
            && carol.status() == Some(SyncStatus::UpToDate))
    })?;
    // Alice removes Bob offline; the op reaches the server through Eve,
    // who is no member at all (she got it from Alice's phone, say).
    alice.go_offline();
    let server_heads = carol.heads(id)?;
    let bob_id = bob.with(|k| Ok(k.member_id()))?;
    alice.with(|k| k.community(id)?.remove(bob_id, "spam", now()))?;
    let removal = alice.with(|k| k.community(id)?.changes_since(&server_heads))?;
    assert_eq!(removal.ops.len(), 1);
    let eve = Keypair::generate()?;
    let mut raw = server.raw()?;
    raw.login(&eve)?;
    raw.send(&Frame::Bundle {
        bytes: removal.encode(),
    })?;
    // Eve learns nothing...
    assert_eq!(raw.next_error()?, ErrorCode::NotMember);
    // ...but the removal took effect: Bob is cut off, Carol is told.
    wait_until("bob cut off", || {
        Ok(bob.saw(&SyncStatus::Rejected {
            reason: "not_member".into(),
        }))
    })?;
    wait_until("carol sees two members", || {
        carol.with(|k| Ok(k.community(id)?.members()?.len() == 2))
    })?;
    Ok(())
}

#[test]
fn reports_reach_moderators_and_their_reporter_only() -> TestResult {
    let server = TestServer::start()?;
    let (mut alice, mut bob, mut carol) = (Node::new()?, Node::new()?, Node::new()?);
    let id = community_with(&server, &mut alice, &mut [&mut bob, &mut carol])?;
    wait_until("bob and carol up to date", || {
        Ok(bob.status() == Some(SyncStatus::UpToDate)
            && carol.status() == Some(SyncStatus::UpToDate))
    })?;
    let carol_id = carol.with(|k| Ok(k.member_id()))?;
    let report = bob.with(|k| {
        k.community(id)?.file_report(
            karmyq_core::ReportTarget::Member(carol_id),
            karmyq_core::ReportCategory::Spam,
            "sells things",
            now(),
        )
    })?;
    bob.nudge();
    // Alice, the admin, gets it live.
    wait_until("the report at alice's", || {
        alice.with(|k| {
            Ok(k.community(id)?
                .reports(false)?
                .iter()
                .any(|r| r.id == report))
        })
    })?;
    // Carol gets the profile Bob writes next, but never the report.
    bob.with(|k| k.community(id)?.set_profile(&profile("Bob"), now()))?;
    bob.nudge();
    wait_until("bob's profile at carol's", || {
        Ok(names(&carol, id)?.contains(&"Bob".to_owned()))
    })?;
    let docs = carol.heads(id)?.docs;
    assert!(
        !docs.keys().any(|d| d.starts_with("report/")),
        "{:?}",
        docs.keys()
    );
    // A phone of Alice's restored from nothing catches the report up;
    // one of Carol's does not.
    for (node, sees) in [(&alice, true), (&carol, false)] {
        let mut phone = phone_of(node)?;
        phone.go_online(&server, id)?;
        wait_until("the phone up to date", || {
            Ok(phone.status() == Some(SyncStatus::UpToDate))
        })?;
        let has = phone
            .heads(id)?
            .docs
            .keys()
            .any(|d| d.starts_with("report/"));
        assert_eq!(has, sees);
        phone.go_offline();
    }
    Ok(())
}
