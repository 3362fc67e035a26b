//! Conversations exchanged directly (bundles, no server): sealed bodies,
//! read receipts and unread counts that agree on both devices, nothing for
//! a third member, typed refusals of forged, removed and blocked writes,
//! typed errors for bodies that do not open, retention and reports.

use std::sync::{Arc, Mutex, PoisonError};

use automerge::transaction::Transactable;
use automerge::{ROOT, ReadDoc};
use karmyq_core::{
    Bundle, CommunityId, ConversationId, DecryptError, DocId, Error, Event, Heads, Keypair,
    Listener, MessageId, NotificationKind, QuietHours, Rejection, ReportCategory, ReportTarget,
    RequestDraft, Result, Role, SettingsPatch, Timestamp, Visibility,
};
use karmyq_tests::{Device, at, bundle_of, doc_from, forge, sync};

/// The default message retention (the community setting), 90 days.
const RETENTION_MS: i64 = 90 * Timestamp::DAY;

struct Street {
    alice: Device,
    bob: Device,
    carol: Device,
    id: CommunityId,
}

/// Alice founds a public community; Bob and Carol join; all synced.
fn street() -> Result<Street> {
    let (mut alice, mut bob, mut carol) = (Device::new()?, Device::new()?, Device::new()?);
    let id = alice
        .k
        .create_community("Elm", "", Visibility::Public, at(0))?;
    for d in [&mut bob, &mut carol] {
        alice.send_to(d, id, at(1))?;
        d.k.community(id)?.join(at(2))?;
        d.send_to(&mut alice, id, at(3))?;
    }
    for d in [&mut bob, &mut carol] {
        sync(&mut alice, d, id, at(4))?;
    }
    Ok(Street {
        alice,
        bob,
        carol,
        id,
    })
}

#[derive(Default)]
struct Heard(Mutex<Vec<Event>>);

impl Listener for Heard {
    fn on_event(&self, event: &Event) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(event.clone());
    }
}

impl Heard {
    fn messages(&self) -> Vec<MessageId> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter_map(|e| match e {
                Event::MessageReceived { message, .. } => Some(*message),
                _ => None,
            })
            .collect()
    }
}

fn message_notifications(d: &Device) -> Result<usize> {
    Ok(d.k
        .notifications(false, 100, 0)?
        .iter()
        .filter(|n| n.kind == NotificationKind::MessageReceived)
        .count())
}

/// Whether any file under `dir` holds `needle` (bytes as stored).
fn any_file_contains(dir: &std::path::Path, needle: &[u8]) -> Result<bool> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            if any_file_contains(&path, needle)? {
                return Ok(true);
            }
        } else {
            let bytes = std::fs::read(&path)?;
            if bytes.windows(needle.len()).any(|w| w == needle) {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

fn bodies(views: &[karmyq_core::MessageView]) -> Vec<String> {
    views
        .iter()
        .map(|m| m.body.clone().unwrap_or_else(|e| format!("<{e}>")))
        .collect()
}

#[test]
fn two_members_converse_offline_and_a_third_gets_nothing() -> Result<()> {
    let mut s = street()?;
    let id = s.id;
    let (alice_id, bob_id) = (s.alice.k.member_id(), s.bob.k.member_id());
    let heard = Arc::new(Heard::default());
    let _sub = s.alice.k.subscribe(heard.clone());
    let bob_heard = Arc::new(Heard::default());
    let _bob_sub = s.bob.k.subscribe(bob_heard.clone());

    let conv = s.bob.k.community(id)?.open_conversation(alice_id, at(10))?;
    assert_eq!(conv, ConversationId::direct(alice_id, bob_id)?);
    let secret = "the spare key is under the blue flowerpot";
    let m1 = s.bob.k.community(id)?.send_message(conv, secret, at(11))?;
    let m2 = s
        .bob
        .k
        .community(id)?
        .send_message(conv, "can you water the plants?", at(12))?;
    // Alice opens it from her side too, concurrently: the same document.
    assert_eq!(
        s.alice.k.community(id)?.open_conversation(bob_id, at(12))?,
        conv
    );
    // Bob shares with everyone he meets.
    for d in [&mut s.alice, &mut s.carol] {
        sync(&mut s.bob, d, id, at(13))?;
    }
    sync(&mut s.alice, &mut s.carol, id, at(13))?;

    let page = s.alice.k.community(id)?.messages(conv, None, 50, at(14))?;
    assert_eq!(
        bodies(&page),
        vec![secret.to_string(), "can you water the plants?".into()]
    );
    assert_eq!(page[0].sender, bob_id);
    assert_eq!(heard.messages(), vec![m1, m2]);
    assert!(bob_heard.messages().is_empty(), "no event for one's own");
    assert_eq!(message_notifications(&s.alice)?, 2);
    assert_eq!(message_notifications(&s.bob)?, 0);
    let view = s
        .alice
        .k
        .community(id)?
        .conversation(&conv, at(14))?
        .ok_or(Error::InvalidArgument("no conversation".into()))?;
    assert_eq!((view.unread, view.other), (2, bob_id));
    assert_eq!(s.alice.k.unread_messages(at(14))?, 2);

    // Alice reads the first, answers; Bob learns both.
    s.alice.k.community(id)?.mark_read(conv, m1, at(15))?;
    let m3 = s
        .alice
        .k
        .community(id)?
        .send_message(conv, "Sure, tomorrow ✿", at(16))?;
    sync(&mut s.alice, &mut s.bob, id, at(17))?;
    let bob_page = s.bob.k.community(id)?.messages(conv, None, 50, at(18))?;
    assert_eq!(bob_page.len(), 3);
    assert_eq!(bob_page[2].body, Ok("Sure, tomorrow ✿".into()));
    assert!(bob_page[0].read_by_other, "read receipt for m1");
    assert!(!bob_page[1].read_by_other, "m2 not read yet");
    for (device, unread) in [(&mut s.alice, 1), (&mut s.bob, 1)] {
        let c = device.k.community(id)?;
        let v = c
            .conversation(&conv, at(18))?
            .ok_or(Error::InvalidArgument("no conversation".into()))?;
        assert_eq!(v.unread, unread);
        assert_eq!(v.last_activity, at(16));
    }
    // Both read everything: both devices agree on both marks.
    s.alice.k.community(id)?.mark_read(conv, m2, at(19))?;
    s.bob.k.community(id)?.mark_read(conv, m3, at(19))?;
    sync(&mut s.alice, &mut s.bob, id, at(20))?;
    let a = s.alice.k.community(id)?.conversation(&conv, at(21))?;
    let b = s.bob.k.community(id)?.conversation(&conv, at(21))?;
    let (a, b) = (
        a.ok_or(Error::InvalidArgument("none".into()))?,
        b.ok_or(Error::InvalidArgument("none".into()))?,
    );
    assert_eq!((a.unread, b.unread), (0, 0));
    assert_eq!(
        (a.my_read_mark, a.their_read_mark),
        (b.their_read_mark, b.my_read_mark)
    );
    assert_eq!(a.my_read_mark, Some(m2));
    assert_eq!(b.my_read_mark, Some(m3));
    assert_eq!(s.bob.k.unread_messages(at(21))?, 0);
    // Paging: the last page of one, then the one before it.
    let last = s.bob.k.community(id)?.messages(conv, None, 1, at(21))?;
    assert_eq!(last.iter().map(|m| m.id).collect::<Vec<_>>(), vec![m3]);
    let before = s.bob.k.community(id)?.messages(conv, Some(m3), 1, at(21))?;
    assert_eq!(before.iter().map(|m| m.id).collect::<Vec<_>>(), vec![m2]);
    assert_eq!(
        s.bob.k.community(id)?.conversations(0, 10, at(21))?.len(),
        1
    );
    assert!(
        s.bob
            .k
            .community(id)?
            .conversations(1, 10, at(21))?
            .is_empty()
    );

    // Carol met both of them and holds nothing of it.
    assert_eq!(s.carol.rows(id, "conversations")?, 0);
    assert_eq!(s.carol.rows(id, "messages")?, 0);
    let conn = rusqlite::Connection::open(s.carol.file(id))?;
    let docs: i64 = conn.query_row(
        "SELECT count(*) FROM changes WHERE doc_id LIKE 'conversation/%'",
        [],
        |r| r.get(0),
    )?;
    assert_eq!(docs, 0);
    assert!(
        s.carol
            .k
            .community(id)?
            .conversations(0, 10, at(21))?
            .is_empty()
    );
    let refused = s.carol.k.community(id)?.messages(conv, None, 10, at(21));
    assert!(
        matches!(refused, Err(Error::Rejected(Rejection::NotParticipant))),
        "{refused:?}"
    );
    // A bundle built for Carol, or without a reader, leaves it out too.
    let for_carol = s
        .alice
        .k
        .community(id)?
        .changes_since_for(&Heads::empty(), &s.carol.k.member_id())?;
    let anyone = s.alice.k.community(id)?.changes_since(&Heads::empty())?;
    for bundle in [&for_carol, &anyone] {
        assert!(
            !bundle
                .changes
                .iter()
                .any(|c| c.envelope.doc.starts_with("conversation/"))
        );
    }
    // No body in clear on any device's disk, the participants' included.
    for d in [&s.alice, &s.bob, &s.carol] {
        assert!(!any_file_contains(d.path(), b"blue flowerpot")?);
        assert!(!any_file_contains(d.path(), "tomorrow ✿".as_bytes())?);
    }
    // The projections agree after a rebuild.
    let c = s.alice.k.community(id)?;
    let dump = c.projection_dump()?;
    c.rebuild_projections()?;
    assert_eq!(c.projection_dump()?, dump);
    Ok(())
}

#[test]
fn the_conversation_of_a_match_opens_from_either_party() -> Result<()> {
    let mut s = street()?;
    let id = s.id;
    let req = s.alice.k.community(id)?.post_request(
        &RequestDraft {
            title: "Ladder".into(),
            description: "for an afternoon".into(),
            category: karmyq_core::Category::Household,
            urgency: karmyq_core::Urgency::Low,
            kind: karmyq_core::RequestKind::Borrow,
            location: None,
            when: None,
        },
        at(10),
    )?;
    sync(&mut s.alice, &mut s.bob, id, at(11))?;
    let offer = s.bob.k.community(id)?.offer_help(req, "mine", at(12))?;
    sync(&mut s.alice, &mut s.bob, id, at(13))?;
    // No match yet: no conversation of it.
    assert!(
        s.bob
            .k
            .community(id)?
            .open_match_conversation(req, at(13))
            .is_err()
    );
    s.alice.k.community(id)?.accept_offer(req, offer, at(14))?;
    sync(&mut s.alice, &mut s.bob, id, at(15))?;
    let from_bob = s
        .bob
        .k
        .community(id)?
        .open_match_conversation(req, at(16))?;
    let from_alice = s
        .alice
        .k
        .community(id)?
        .open_match_conversation(req, at(16))?;
    assert_eq!(from_alice, from_bob);
    assert_eq!(from_bob.topic(), Some(req));
    s.bob
        .k
        .community(id)?
        .send_message(from_bob, "when suits you?", at(17))?;
    sync(&mut s.alice, &mut s.bob, id, at(18))?;
    let listed = s.alice.k.community(id)?.conversations(0, 10, at(18))?;
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].request, listed[0].unread), (Some(req), 1));
    // Carol takes no part in that match.
    sync(&mut s.alice, &mut s.carol, id, at(18))?;
    let refused = s
        .carol
        .k
        .community(id)?
        .open_match_conversation(req, at(18));
    assert!(
        matches!(refused, Err(Error::Rejected(Rejection::NotParticipant))),
        "{refused:?}"
    );
    Ok(())
}

/// Alice's file as counts and projections, to prove a refusal changed nothing.
fn state(d: &mut Device, id: CommunityId) -> Result<(i64, i64, Vec<String>)> {
    Ok((
        d.rows(id, "changes")?,
        d.rows(id, "pending_changes")?,
        d.k.community(id)?.projection_dump()?,
    ))
}

fn refused(d: &mut Device, id: CommunityId, bundle: &Bundle) -> Result<Rejection> {
    let before = state(d, id)?;
    let report = d.k.receive(bundle, at(40))?;
    assert!(report.accepted.is_empty(), "accepted: {report:?}");
    assert!(report.pending.is_empty(), "pending: {report:?}");
    assert_eq!(report.rejected.len(), 1, "{report:?}");
    assert_eq!(state(d, id)?, before, "the file changed");
    Ok(report.rejected[0].1.clone())
}

/// A forged edit of a raw document.
type Edit = dyn FnOnce(
    &mut automerge::transaction::Transaction<'_>,
) -> std::result::Result<(), automerge::AutomergeError>;

fn keys_of(d: &Device) -> Result<Keypair> {
    Keypair::import_secret(&d.k.export_secret())
}

#[test]
fn forged_foreign_and_repeated_writes_are_refused_with_reasons() -> Result<()> {
    let mut s = street()?;
    let id = s.id;
    let alice_id = s.alice.k.member_id();
    let conv = s.bob.k.community(id)?.open_conversation(alice_id, at(10))?;
    let m1 = s.bob.k.community(id)?.send_message(conv, "hello", at(11))?;
    sync(&mut s.bob, &mut s.alice, id, at(12))?;
    let doc_id = DocId::Conversation(conv);
    let bob_id = s.bob.k.member_id();
    let all = s
        .bob
        .k
        .community(id)?
        .changes_since_for(&Heads::empty(), &bob_id)?;
    let sealed = doc_from(&all, &doc_id)?
        .get(ROOT, format!("m:{m1}"))?
        .and_then(|(v, _)| v.into_bytes().ok())
        .ok_or(Error::InvalidArgument("no message".into()))?;

    // Carol, a member but no participant, appends a message of her own.
    let carol = keys_of(&s.carol)?;
    let heads = s.carol.k.community(id)?.heads()?.auth;
    let mut doc = doc_from(&all, &doc_id)?;
    let carols = MessageId::generate(carol.member_id())?;
    let sealed_c = sealed.clone();
    let change = forge(id, &doc_id, &mut doc, heads.clone(), &carol, |tx| {
        tx.put(ROOT, format!("m:{carols}"), sealed_c)
    })?;
    assert_eq!(
        refused(&mut s.alice, id, &bundle_of(id, vec![change]))?,
        Rejection::NotParticipant
    );
    // ...or moves Alice's read mark.
    let mut doc = doc_from(&all, &doc_id)?;
    let change = forge(id, &doc_id, &mut doc, heads, &carol, |tx| {
        tx.put(ROOT, format!("read:{alice_id}"), m1.to_string())
    })?;
    assert_eq!(
        refused(&mut s.alice, id, &bundle_of(id, vec![change]))?,
        Rejection::NotParticipant
    );

    // Bob, a participant, writes as Alice, moves her mark, rewrites or
    // deletes his own message.
    let bob = keys_of(&s.bob)?;
    let heads = s.bob.k.community(id)?.heads()?.auth;
    let as_alice = MessageId::generate(alice_id)?;
    let cases: Vec<(Rejection, Box<Edit>)> = vec![
        (Rejection::ForeignEntry, {
            let sealed = sealed.clone();
            Box::new(move |tx| tx.put(ROOT, format!("m:{as_alice}"), sealed))
        }),
        (
            Rejection::ForeignEntry,
            Box::new(move |tx| tx.put(ROOT, format!("read:{alice_id}"), m1.to_string())),
        ),
        (Rejection::IllegalTransition("a message is sent once"), {
            let mut edited = sealed.clone();
            edited[0..9].copy_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0, 9]);
            Box::new(move |tx| tx.put(ROOT, format!("m:{m1}"), edited))
        }),
        (
            Rejection::DisallowedOperation,
            Box::new(move |tx| tx.delete(ROOT, format!("m:{m1}"))),
        ),
        (
            Rejection::InvalidField("subject".into()),
            Box::new(|tx| tx.put(ROOT, "subject", "hi")),
        ),
    ];
    for (reason, edit) in cases {
        let mut doc = doc_from(&all, &doc_id)?;
        let change = forge(id, &doc_id, &mut doc, heads.clone(), &bob, edit)?;
        assert_eq!(
            refused(&mut s.alice, id, &bundle_of(id, vec![change]))?,
            reason
        );
    }
    // A participant's own valid append through the same path is accepted.
    let mut doc = doc_from(&all, &doc_id)?;
    let fresh = MessageId::generate(bob.member_id())?;
    let change = forge(id, &doc_id, &mut doc, heads, &bob, |tx| {
        tx.put(ROOT, format!("m:{fresh}"), sealed)
    })?;
    let report = s.alice.k.receive(&bundle_of(id, vec![change]), at(41))?;
    assert_eq!(report.accepted.len(), 1, "{report:?}");
    Ok(())
}

#[test]
fn a_removed_members_message_is_refused() -> Result<()> {
    let mut s = street()?;
    let id = s.id;
    let (alice_id, bob_id) = (s.alice.k.member_id(), s.bob.k.member_id());
    let conv = s.bob.k.community(id)?.open_conversation(alice_id, at(10))?;
    s.bob.k.community(id)?.send_message(conv, "hi", at(11))?;
    sync(&mut s.bob, &mut s.alice, id, at(12))?;
    s.alice.k.community(id)?.remove(bob_id, "spam", at(13))?;
    sync(&mut s.alice, &mut s.bob, id, at(14))?;
    // Locally: Bob is no member any more; Alice cannot write to him.
    let err = s
        .bob
        .k
        .community(id)?
        .send_message(conv, "still here", at(15));
    assert!(
        matches!(err, Err(Error::Rejected(Rejection::NotAMember(m))) if m == bob_id),
        "{err:?}"
    );
    let err = s.alice.k.community(id)?.send_message(conv, "bye", at(15));
    assert!(
        matches!(err, Err(Error::Rejected(Rejection::TargetNotMember))),
        "{err:?}"
    );
    // A modified client citing the log with his removal: refused everywhere.
    let bob = keys_of(&s.bob)?;
    let heads = s.bob.k.community(id)?.heads()?.auth;
    let all = s
        .bob
        .k
        .community(id)?
        .changes_since_for(&Heads::empty(), &bob_id)?;
    let doc_id = DocId::Conversation(conv);
    let mut doc = doc_from(&all, &doc_id)?;
    let message = MessageId::generate(bob_id)?;
    let change = forge(id, &doc_id, &mut doc, heads, &bob, |tx| {
        tx.put(ROOT, format!("m:{message}"), vec![1u8; 60])
    })?;
    assert_eq!(
        refused(&mut s.alice, id, &bundle_of(id, vec![change]))?,
        Rejection::AuthorRemoved(bob_id)
    );
    Ok(())
}

#[test]
fn a_block_stops_messages_both_ways_on_the_blocking_device() -> Result<()> {
    let mut s = street()?;
    let id = s.id;
    let (alice_id, bob_id) = (s.alice.k.member_id(), s.bob.k.member_id());
    let conv = s.bob.k.community(id)?.open_conversation(alice_id, at(10))?;
    s.bob.k.community(id)?.send_message(conv, "first", at(11))?;
    sync(&mut s.bob, &mut s.alice, id, at(12))?;
    let heard = Arc::new(Heard::default());
    let _sub = s.alice.k.subscribe(heard.clone());
    s.alice.k.block(&bob_id, at(13))?;
    let err = s
        .alice
        .k
        .community(id)?
        .send_message(conv, "go away", at(14));
    assert!(
        matches!(err, Err(Error::Rejected(Rejection::Blocked))),
        "{err:?}"
    );
    let err = s.alice.k.community(id)?.open_conversation(bob_id, at(14));
    assert!(
        matches!(err, Err(Error::Rejected(Rejection::Blocked))),
        "{err:?}"
    );
    // Bob does not know; what he sends is stored but neither shown nor
    // notified on Alice's device.
    let before = message_notifications(&s.alice)?;
    s.bob
        .k
        .community(id)?
        .send_message(conv, "hello?", at(15))?;
    sync(&mut s.bob, &mut s.alice, id, at(16))?;
    assert!(heard.messages().is_empty());
    assert_eq!(message_notifications(&s.alice)?, before);
    let c = s.alice.k.community(id)?;
    assert!(c.messages(conv, None, 50, at(16))?.is_empty());
    assert_eq!(c.unread_messages(at(16))?, 0);
    // Unblocked: his messages show again.
    s.alice.k.unblock(&bob_id, at(17))?;
    let page = s.alice.k.community(id)?.messages(conv, None, 50, at(17))?;
    assert_eq!(bodies(&page), vec!["first".to_string(), "hello?".into()]);
    Ok(())
}

#[test]
fn bodies_that_do_not_open_are_typed_errors_and_the_rest_stay_readable() -> Result<()> {
    let mut s = street()?;
    let id = s.id;
    let (alice_id, bob_id, carol_id) = (
        s.alice.k.member_id(),
        s.bob.k.member_id(),
        s.carol.k.member_id(),
    );
    let conv = s.bob.k.community(id)?.open_conversation(alice_id, at(10))?;
    let good = s.bob.k.community(id)?.send_message(conv, "valid", at(11))?;
    // A message of Bob's to Carol: sealed under another conversation's key.
    let other = s.bob.k.community(id)?.open_conversation(carol_id, at(11))?;
    let elsewhere = s
        .bob
        .k
        .community(id)?
        .send_message(other, "for carol", at(11))?;
    sync(&mut s.bob, &mut s.alice, id, at(12))?;
    let all = s
        .bob
        .k
        .community(id)?
        .changes_since_for(&Heads::empty(), &bob_id)?;
    let sealed_of = |doc_id: &DocId, m: &MessageId| -> Result<Vec<u8>> {
        doc_from(&all, doc_id)?
            .get(ROOT, format!("m:{m}"))?
            .and_then(|(v, _)| v.into_bytes().ok())
            .ok_or(Error::InvalidArgument("no message".into()))
    };
    let doc_id = DocId::Conversation(conv);
    let valid = sealed_of(&doc_id, &good)?;
    let foreign = sealed_of(&DocId::Conversation(other), &elsewhere)?;
    let mut tampered = valid.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 0x40;
    let truncated = valid[..20].to_vec();

    // A modified client of Bob's writes the three (the validator cannot
    // look inside a sealed body: only the participants can).
    let bob = keys_of(&s.bob)?;
    let heads = s.bob.k.community(id)?.heads()?.auth;
    let mut doc = doc_from(&all, &doc_id)?;
    let mut changes = Vec::new();
    let mut ids = Vec::new();
    for (n, sealed) in [tampered, foreign, truncated].into_iter().enumerate() {
        // The foreign body keeps its message id, as a replay would.
        let m = if n == 1 {
            elsewhere
        } else {
            MessageId::generate(bob_id)?
        };
        ids.push(m);
        changes.push(forge(id, &doc_id, &mut doc, heads.clone(), &bob, |tx| {
            tx.put(ROOT, format!("m:{m}"), sealed)
        })?);
    }
    let report = s.alice.k.receive(&bundle_of(id, changes), at(13))?;
    assert_eq!(report.accepted.len(), 3, "{report:?}");

    let c = s.alice.k.community(id)?;
    let page = c.messages(conv, None, 50, at(14))?;
    let by_id = |m: &MessageId| page.iter().find(|v| v.id == *m).map(|v| v.body.clone());
    assert_eq!(by_id(&good), Some(Ok("valid".into())));
    assert_eq!(by_id(&ids[0]), Some(Err(DecryptError::Unauthentic)));
    assert_eq!(by_id(&ids[1]), Some(Err(DecryptError::Unauthentic)));
    assert_eq!(by_id(&ids[2]), Some(Err(DecryptError::Truncated)));
    for (m, expected) in [
        (ids[0], DecryptError::Unauthentic),
        (ids[1], DecryptError::Unauthentic),
        (ids[2], DecryptError::Truncated),
    ] {
        let err = c.read_message(conv, m);
        assert!(
            matches!(err, Err(Error::Decrypt(e)) if e == expected),
            "{err:?}"
        );
    }
    assert_eq!(c.read_message(conv, good)?, "valid");
    Ok(())
}

#[test]
fn preferences_quiet_hours_and_retention_apply_to_messages() -> Result<()> {
    let mut s = street()?;
    let id = s.id;
    let alice_id = s.alice.k.member_id();
    let conv = s.bob.k.community(id)?.open_conversation(alice_id, at(10))?;
    // Quiet hours around the epoch's time of day: stored, silent.
    let minute = u16::try_from((at(11).as_millis() % 86_400_000) / 60_000).unwrap_or(0);
    s.alice.k.set_quiet_hours(Some(QuietHours {
        start_minute: minute.saturating_sub(5),
        end_minute: minute + 60,
    }))?;
    let old = s
        .bob
        .k
        .community(id)?
        .send_message(conv, "old news", at(11))?;
    sync(&mut s.bob, &mut s.alice, id, at(11))?;
    let notes = s.alice.k.notifications(false, 10, 0)?;
    let note = notes
        .iter()
        .find(|n| n.kind == NotificationKind::MessageReceived)
        .ok_or(Error::InvalidArgument("no notification".into()))?;
    assert!(note.silent);
    assert_eq!(note.actor, Some(s.bob.k.member_id()));
    s.alice.k.set_quiet_hours(None)?;
    // Switched off for this community: nothing stored.
    s.alice
        .k
        .set_notification_preference(id, NotificationKind::MessageReceived, false)?;
    let later = Timestamp::from_millis(at(11).as_millis() + RETENTION_MS - 60_000);
    s.bob.k.community(id)?.send_message(conv, "fresh", later)?;
    sync(&mut s.bob, &mut s.alice, id, later)?;
    assert_eq!(message_notifications(&s.alice)?, 1);

    // Past 90 days the old message is hidden, then pruned; the fresh stays.
    let after = Timestamp::from_millis(at(11).as_millis() + RETENTION_MS + 60_000);
    let c = s.alice.k.community(id)?;
    assert_eq!(bodies(&c.messages(conv, None, 50, later)?).len(), 2);
    assert_eq!(
        bodies(&c.messages(conv, None, 50, after)?),
        vec!["fresh".to_string()]
    );
    assert_eq!(c.unread_messages(after)?, 1);
    assert_eq!(c.read_message(conv, old)?, "old news");
    assert_eq!(s.alice.k.prune_messages(after)?, 1);
    assert_eq!(s.alice.rows(id, "messages")?, 1);
    assert!(s.alice.k.community(id)?.read_message(conv, old).is_err());

    // The retention is a community setting: at one day, the fresh message
    // is gone from the queries the day after it was sent.
    let c = s.alice.k.community(id)?;
    let mut settings = c.info()?.settings;
    settings.message_retention_days = 1;
    let patch = SettingsPatch {
        settings: Some(settings),
        ..SettingsPatch::default()
    };
    c.update_settings(patch, after)?;
    let next_day = Timestamp::from_millis(later.as_millis() + Timestamp::DAY + 60_000);
    assert!(c.messages(conv, None, 50, after)?.len() == 1);
    assert!(c.messages(conv, None, 50, next_day)?.is_empty());
    assert_eq!(c.unread_messages(next_day)?, 0);
    Ok(())
}

#[test]
fn a_reported_message_can_disclose_its_body_to_moderators() -> Result<()> {
    let mut s = street()?;
    let id = s.id;
    let (alice_id, carol_id) = (s.alice.k.member_id(), s.carol.k.member_id());
    s.alice
        .k
        .community(id)?
        .set_role(carol_id, Role::Moderator, at(5))?;
    sync(&mut s.alice, &mut s.carol, id, at(6))?;
    sync(&mut s.alice, &mut s.bob, id, at(6))?;
    let conv = s.bob.k.community(id)?.open_conversation(alice_id, at(10))?;
    let rude = s
        .bob
        .k
        .community(id)?
        .send_message(conv, "you are a disgrace", at(11))?;
    sync(&mut s.bob, &mut s.alice, id, at(12))?;
    s.alice.k.community(id)?.report_message(
        conv,
        rude,
        ReportCategory::Abuse,
        "out of nowhere",
        true,
        at(13),
    )?;
    sync(&mut s.alice, &mut s.carol, id, at(14))?;
    let reports = s.carol.k.community(id)?.reports(true)?;
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].target, ReportTarget::Message(conv, rude));
    assert_eq!(reports[0].target.member(), s.bob.k.member_id());
    assert!(reports[0].text.contains("you are a disgrace"));
    // The moderator still holds no conversation.
    assert_eq!(s.carol.rows(id, "messages")?, 0);
    Ok(())
}

/// The conversation's rows of a device's projections.
fn conversation_rows(d: &mut Device, id: CommunityId) -> Result<Vec<String>> {
    Ok(d.k
        .community(id)?
        .projection_dump()?
        .into_iter()
        .filter(|r| r.starts_with("conversations:") || r.starts_with("messages:"))
        .collect())
}

#[test]
fn concurrent_openings_messages_and_marks_converge() -> Result<()> {
    let mut s = street()?;
    let id = s.id;
    let (alice_id, bob_id) = (s.alice.k.member_id(), s.bob.k.member_id());
    // Both open the conversation and write while apart.
    let conv = s.alice.k.community(id)?.open_conversation(bob_id, at(10))?;
    assert_eq!(
        s.bob.k.community(id)?.open_conversation(alice_id, at(11))?,
        conv
    );
    let mut last = None;
    for i in 0..5 {
        s.alice
            .k
            .community(id)?
            .send_message(conv, &format!("alice {i}"), at(12 + i))?;
        last = Some(
            s.bob
                .k
                .community(id)?
                .send_message(conv, &format!("bob {i}"), at(12 + i))?,
        );
    }
    // Alice receives Bob's in two pieces, in the opposite order.
    let bundle = s.bob.bundle_for(&mut s.alice, id)?;
    let (first, second) = bundle.changes.split_at(bundle.changes.len() / 2);
    let mut report = s.alice.k.receive(&bundle_of(id, second.to_vec()), at(20))?;
    report.accepted.extend(
        s.alice
            .k
            .receive(&bundle_of(id, first.to_vec()), at(20))?
            .accepted,
    );
    assert_eq!(report.accepted.len(), bundle.changes.len());
    s.alice.send_to(&mut s.bob, id, at(20))?;
    let mark = last.ok_or(Error::InvalidArgument("no message".into()))?;
    s.alice.k.community(id)?.mark_read(conv, mark, at(21))?;
    sync(&mut s.alice, &mut s.bob, id, at(22))?;
    let rows = conversation_rows(&mut s.alice, id)?;
    assert_eq!(
        rows.iter().filter(|r| r.starts_with("messages:")).count(),
        10
    );
    assert_eq!(rows, conversation_rows(&mut s.bob, id)?);
    for d in [&mut s.alice, &mut s.bob] {
        let c = d.k.community(id)?;
        let page = c.messages(conv, None, 50, at(23))?;
        assert_eq!(page.len(), 10);
        assert!(page.iter().all(|m| m.body.is_ok()));
        // Ordered by time, then id, on both devices.
        assert!(
            page.windows(2)
                .all(|w| (w[0].sent_at, w[0].id) <= (w[1].sent_at, w[1].id))
        );
    }
    assert_eq!(s.alice.k.unread_messages(at(23))?, 0);
    assert_eq!(s.bob.k.unread_messages(at(23))?, 5);
    Ok(())
}
