//! Conversations through the real sync server: the two participants
//! converse live, read receipts and unread counts agree on both devices, a
//! third member of the same community receives nothing of it, and the
//! server's data directory holds no message body in clear.

use karmyq_core::sync::SyncStatus;
use karmyq_core::{Heads, Timestamp, Visibility};
use karmyq_tests::net::{
    Node, TestResult, TestServer, join_online, phone_of, public_community, wait_until,
};

fn now() -> Timestamp {
    Timestamp::now()
}

/// Whether any file under `dir` holds `needle`.
fn any_file_contains(dir: &std::path::Path, needle: &[u8]) -> TestResult<bool> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            if any_file_contains(&path, needle)? {
                return Ok(true);
            }
        } else if std::fs::read(&path)?
            .windows(needle.len())
            .any(|w| w == needle)
        {
            return Ok(true);
        }
    }
    Ok(false)
}

#[test]
fn participants_converse_through_the_server_and_no_one_else_sees_it() -> TestResult {
    let server = TestServer::start()?;
    let (mut alice, mut bob, mut carol) = (Node::new()?, Node::new()?, Node::new()?);
    let id = public_community(
        &server,
        &mut alice,
        &mut [&mut bob, &mut carol],
        "Elm Street",
    )?;
    wait_until("three members everywhere", || {
        let three = |n: &Node| n.with(|k| Ok(k.community(id)?.members()?.len() == 3));
        Ok(three(&alice)? && three(&bob)? && three(&carol)?)
    })?;
    let alice_id = alice.with(|k| Ok(k.member_id()))?;
    let bob_id = bob.with(|k| Ok(k.member_id()))?;

    let secrets = [
        "my door code is 4711-SEVEN",
        "the parcel is behind the green bin",
    ];
    let conv = bob.with(|k| k.community(id)?.open_conversation(alice_id, now()))?;
    let m1 = bob.with(|k| k.community(id)?.send_message(conv, secrets[0], now()))?;
    bob.nudge();
    wait_until("the message at alice's", || {
        alice.with(|k| {
            Ok(k.community(id)?
                .conversation(&conv, now())?
                .map(|c| c.unread)
                == Some(1))
        })
    })?;
    let page = alice.with(|k| k.community(id)?.messages(conv, None, 50, now()))?;
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].body, Ok(secrets[0].to_string()));
    assert_eq!(page[0].sender, bob_id);
    assert_eq!(alice.with(|k| k.unread_messages(now()))?, 1);

    // Alice reads it and answers; Bob sees the receipt and the answer.
    alice.with(|k| k.community(id)?.mark_read(conv, m1, now()))?;
    let m2 = alice.with(|k| k.community(id)?.send_message(conv, secrets[1], now()))?;
    alice.nudge();
    wait_until("the answer and the receipt at bob's", || {
        bob.with(|k| {
            let page = k.community(id)?.messages(conv, None, 50, now())?;
            Ok(page.len() == 2 && page[0].read_by_other)
        })
    })?;
    let view = |n: &Node| {
        n.with(|k| {
            k.community(id)?
                .conversation(&conv, now())?
                .ok_or(karmyq_core::Error::InvalidArgument("none".into()))
        })
    };
    let (a, b) = (view(&alice)?, view(&bob)?);
    assert_eq!((a.unread, b.unread), (0, 1));
    assert_eq!(a.my_read_mark, Some(m1));
    assert_eq!(b.their_read_mark, Some(m1));
    bob.with(|k| k.community(id)?.mark_read(conv, m2, now()))?;
    bob.nudge();
    wait_until("bob's receipt at alice's", || {
        Ok(view(&alice)?.their_read_mark == Some(m2))
    })?;
    let (a, b) = (view(&alice)?, view(&bob)?);
    assert_eq!((a.unread, b.unread), (0, 0));
    assert_eq!(
        (a.my_read_mark, a.their_read_mark),
        (b.their_read_mark, b.my_read_mark)
    );

    // Carol is up to date with the community, and holds nothing of it.
    wait_until("carol up to date", || {
        Ok(carol.status() == Some(SyncStatus::UpToDate))
    })?;
    carol.with(|k| {
        let c = k.community(id)?;
        assert!(c.conversations(0, 10, now())?.is_empty());
        Ok(())
    })?;
    let carol_docs: Vec<String> = carol.with(|k| {
        Ok(k.community(id)?
            .heads()?
            .docs
            .into_keys()
            .filter(|d| d.starts_with("conversation/"))
            .collect())
    })?;
    assert!(carol_docs.is_empty(), "{carol_docs:?}");
    // A fresh device of Carol's catching up from the server gets none either.
    let mut phone = phone_of(&carol)?;
    carol.go_offline();
    phone.go_online(&server, id)?;
    wait_until("carol's phone has the community", || {
        phone.with(|k| {
            Ok(k.community(id)
                .is_ok_and(|c| c.members().is_ok_and(|m| m.len() == 3)))
        })
    })?;
    wait_until("carol's phone up to date", || {
        Ok(phone.status() == Some(SyncStatus::UpToDate))
    })?;
    let phone_docs = phone.heads(id)?.docs;
    assert!(!phone_docs.keys().any(|d| d.starts_with("conversation/")));
    // The server holds the conversation (to relay it), sealed.
    let file = server
        .dir
        .path()
        .join("communities")
        .join(format!("{id}.sqlite3"));
    let held: i64 = rusqlite::Connection::open(file)?.query_row(
        "SELECT count(*) FROM changes WHERE doc_id LIKE 'conversation/%'",
        [],
        |r| r.get(0),
    )?;
    assert!(held >= 4, "open, two messages, read marks: {held}");
    for s in secrets {
        assert!(
            !any_file_contains(server.dir.path(), s.as_bytes())?,
            "{s:?} in clear on the server"
        );
    }
    alice.go_offline();
    bob.go_offline();
    phone.go_offline();
    Ok(())
}

/// Bob's changes to the conversation that Alice's device holds.
fn bobs_changes_at(
    node: &Node,
    id: karmyq_core::CommunityId,
    bob: karmyq_core::MemberId,
) -> TestResult<usize> {
    node.with(|k| {
        let me = k.member_id();
        let all = k.community(id)?.changes_since_for(&Heads::empty(), &me)?;
        Ok(all
            .changes
            .iter()
            .filter(|c| c.envelope.doc.starts_with("conversation/") && c.envelope.author == bob)
            .count())
    })
}

#[test]
fn the_server_relays_no_message_across_a_block() -> TestResult {
    let server = TestServer::start()?;
    let (mut alice, mut bob) = (Node::new()?, Node::new()?);
    let id = public_community(&server, &mut alice, &mut [&mut bob], "Elm Street")?;
    wait_until("two members at alice's", || {
        alice.with(|k| Ok(k.community(id)?.members()?.len() == 2))
    })?;
    let alice_id = alice.with(|k| Ok(k.member_id()))?;
    let bob_id = bob.with(|k| Ok(k.member_id()))?;
    let conv = bob.with(|k| k.community(id)?.open_conversation(alice_id, now()))?;
    bob.with(|k| k.community(id)?.send_message(conv, "before", now()))?;
    bob.nudge();
    wait_until("the first message at alice's", || {
        alice.with(|k| Ok(k.community(id)?.messages(conv, None, 10, now())?.len() == 1))
    })?;
    let held = bobs_changes_at(&alice, id, bob_id)?;

    // Alice blocks Bob; her device tells the server when it logs in.
    alice.with(|k| k.block(&bob_id, now()))?;
    alice.go_offline();
    alice
        .statuses
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clear();
    alice.go_online(&server, id)?;
    wait_until("alice back online", || {
        Ok(alice.status() == Some(SyncStatus::UpToDate))
    })?;
    let before = server_conversation_changes(&server, id)?;
    bob.with(|k| {
        k.community(id)?
            .send_message(conv, "across the block", now())
    })?;
    bob.nudge();
    wait_until("the server holds it", || {
        Ok(server_conversation_changes(&server, id)? > before)
    })?;
    // Something public of Bob's after it: once it reached Alice, the
    // message would have too, had the server relayed it.
    bob.with(|k| {
        k.community(id)?.set_profile(
            &karmyq_core::Profile {
                name: "Bob".into(),
                ..karmyq_core::Profile::default()
            },
            now(),
        )
    })?;
    bob.nudge();
    wait_until("bob's profile at alice's", || {
        alice.with(|k| Ok(k.community(id)?.profile(&bob_id)?.is_some()))
    })?;
    assert_eq!(
        bobs_changes_at(&alice, id, bob_id)?,
        held,
        "relayed across a block"
    );

    // Unblocked, and logged in again: the catch-up brings it.
    alice.with(|k| k.unblock(&bob_id, now()))?;
    alice.go_offline();
    alice.go_online(&server, id)?;
    wait_until("the message after the unblock", || {
        alice.with(|k| {
            let page = k.community(id)?.messages(conv, None, 10, now())?;
            Ok(page.len() == 2 && page[1].body.as_deref() == Ok("across the block"))
        })
    })?;
    alice.go_offline();
    bob.go_offline();
    Ok(())
}

fn server_conversation_changes(
    server: &TestServer,
    id: karmyq_core::CommunityId,
) -> TestResult<i64> {
    let file = server
        .dir
        .path()
        .join("communities")
        .join(format!("{id}.sqlite3"));
    Ok(rusqlite::Connection::open(file)?.query_row(
        "SELECT count(*) FROM changes WHERE doc_id LIKE 'conversation/%'",
        [],
        |r| r.get(0),
    )?)
}

#[test]
fn the_server_takes_no_offer_across_a_block() -> TestResult {
    let server = TestServer::start()?;
    let (mut alice, mut bob, mut carol) = (Node::new()?, Node::new()?, Node::new()?);
    let id = alice.with(|k| k.create_community("Elm Street", "", Visibility::Public, now()))?;
    let bob_id = bob.with(|k| Ok(k.member_id()))?;
    // Alice blocked Bob before she went online: her device tells the server.
    alice.with(|k| k.block(&bob_id, now()))?;
    alice.go_online(&server, id)?;
    for node in [&mut bob, &mut carol] {
        join_online(&server, &alice, node, id)?;
    }
    wait_until("three members at alice's", || {
        alice.with(|k| Ok(k.community(id)?.members()?.len() == 3))
    })?;
    let draft = karmyq_core::RequestDraft {
        title: "Walk my dog".into(),
        description: String::new(),
        category: karmyq_core::Category::Pets,
        urgency: karmyq_core::Urgency::Low,
        kind: karmyq_core::RequestKind::Generic,
        location: None,
        when: None,
    };
    let req = alice.with(|k| k.community(id)?.post_request(&draft, now()))?;
    alice.nudge();
    wait_until("the request at bob's and carol's", || {
        let mut both = true;
        for n in [&bob, &carol] {
            both &= n.with(|k| Ok(k.community(id)?.request(req, now()).is_ok()))?;
        }
        Ok(both)
    })?;
    // Bob did not block Alice, so his device lets him offer; the server
    // refuses the offer, counts it, and relays it to no one.
    bob.with(|k| k.community(id)?.offer_help(req, "I love dogs", now()))?;
    bob.nudge();
    wait_until("the refusal counted", || {
        Ok(server.metric("karmyq_changes_rejected_total{reason=\"blocked\"}")? >= 1)
    })?;
    // Carol's offer goes through, and reaches Alice; Bob's never does.
    carol.with(|k| k.community(id)?.offer_help(req, "Me", now()))?;
    carol.nudge();
    wait_until("carol's offer at alice's", || {
        alice.with(|k| Ok(!k.community(id)?.request(req, now())?.offers.is_empty()))
    })?;
    for n in [&alice, &carol] {
        let offers = n.with(|k| Ok(k.community(id)?.request(req, now())?.offers))?;
        assert_eq!(offers.len(), 1, "only carol's offer");
        assert_ne!(offers[0].0.id.responder, bob_id);
    }
    Ok(())
}
