//! Requests to join a private community, left with the server over HTTP
//! and pushed to its admins and moderators (only), answered the same
//! whether or not the community exists.

use karmyq_core::sync::{Frame, JoinDecline, JoinRequest, SyncStatus};
use karmyq_core::{CommunityId, Heads, Keypair, Role, Timestamp, Visibility};
use karmyq_tests::net::{Node, TestResult, TestServer, wait_until};

fn now() -> Timestamp {
    Timestamp::now()
}

fn body_of(r: &JoinRequest) -> String {
    format!(
        r#"{{"member":"{}","message":"{}","created_at":{},"signature":"{}"}}"#,
        r.member,
        r.message,
        r.created_at.as_millis(),
        hex_of(&r.signature.to_bytes())
    )
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn path_of(id: CommunityId) -> String {
    format!("/v1/communities/{id}/join-requests")
}

/// Alice's private community on `server`, with Bob admitted by her, both
/// online.
fn quiet_court(server: &TestServer) -> TestResult<(Node, Node, CommunityId)> {
    let (mut alice, mut bob) = (Node::new()?, Node::new()?);
    let id = alice.with(|k| k.create_community("Quiet Court", "", Visibility::Private, now()))?;
    alice.go_online(server, id)?;
    let bob_id = bob.with(|k| Ok(k.member_id()))?;
    let log = alice.with(|k| k.community(id)?.changes_since(&Heads::empty()))?;
    bob.with(|k| k.receive(&log, now()).map(|_| ()))?;
    alice.with(|k| k.community(id)?.admit(bob_id, Role::Member, now()))?;
    alice.nudge();
    bob.go_online(server, id)?;
    wait_until("bob in", || Ok(bob.status() == Some(SyncStatus::UpToDate)))?;
    Ok((alice, bob, id))
}

#[test]
fn join_requests_reach_moderators_only_and_leak_nothing() -> TestResult {
    let server = TestServer::start()?;
    let (alice, bob, id) = quiet_court(&server)?;

    // Eve asks to join.
    let eve = Keypair::generate()?;
    let request = JoinRequest::sign(id, &eve, "I moved in at number 4", now())?;
    let answer = server.post(&path_of(id), &body_of(&request))?;
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    assert!(answer.contains(r#"{"success":true,"data":"received"}"#));
    // A community that does not exist gets the very same answer.
    let nowhere = CommunityId::from_bytes([5; 32]);
    let elsewhere = JoinRequest::sign(nowhere, &eve, "I moved in at number 4", now())?;
    let same = server.post(&path_of(nowhere), &body_of(&elsewhere))?;
    let tail = |s: &str| s.split("\r\n\r\n").nth(1).map(str::to_owned);
    assert!(same.starts_with("HTTP/1.1 202"));
    assert_eq!(tail(&same), tail(&answer));

    // Alice, the admin, sees it pushed live; Bob, a member, never does.
    wait_until("the request at alice's", || {
        Ok(alice
            .join_requests()
            .iter()
            .any(|r| r.member == eve.member_id()))
    })?;
    for r in alice.join_requests() {
        r.verify()?;
    }
    assert!(bob.join_requests().is_empty());
    // A moderator subscribing later gets the list with the catch-up.
    let alice_keys = Keypair::import_secret(&alice.with(|k| Ok(k.export_secret()))?)?;
    let mut raw = server.raw()?;
    raw.login(&alice_keys)?;
    raw.subscribe(id, alice.heads(id)?)?;
    match raw.frame()? {
        Frame::JoinRequests {
            community,
            requests,
        } => {
            assert_eq!(community, id);
            assert_eq!(requests, vec![request.clone()]);
        }
        other => return Err(format!("expected the requests, got {other:?}").into()),
    }
    drop(raw);

    // Bad requests: typed errors.
    let mut forged = request.clone();
    forged.message = "let me in".into();
    let answer = server.post(&path_of(id), &body_of(&forged))?;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(answer.contains(r#""code":"bad_signature""#));
    let answer = server.post(&path_of(id), "{not json")?;
    assert!(answer.starts_with("HTTP/1.1 400"));
    assert!(answer.contains(r#""code":"bad_request""#));
    let answer = server.post("/v1/communities/zz/join-requests", &body_of(&request))?;
    assert!(answer.contains(r#""code":"bad_request""#));
    let old = JoinRequest::sign(id, &eve, "hi", Timestamp::from_millis(0))?;
    let answer = server.post(&path_of(id), &body_of(&old))?;
    assert!(answer.contains(r#""code":"stale""#), "{answer}");
    // A public community is joined directly.
    let mut carol = Node::new()?;
    let open = carol.with(|k| k.create_community("Open Road", "", Visibility::Public, now()))?;
    carol.go_online(&server, open)?;
    wait_until("open road on the server", || {
        Ok(carol.status() == Some(SyncStatus::UpToDate))
    })?;
    let public = JoinRequest::sign(open, &eve, "hi", now())?;
    let answer = server.post(&path_of(open), &body_of(&public))?;
    assert!(answer.starts_with("HTTP/1.1 409"), "{answer}");
    assert!(answer.contains(r#""code":"public_community""#));

    // Once Alice admits Eve, the request is answered and gone.
    alice.with(|k| k.community(id)?.admit(eve.member_id(), Role::Member, now()))?;
    alice.nudge();
    wait_until("the request gone at alice's", || {
        Ok(alice.join_requests().is_empty())
    })?;
    Ok(())
}

fn decline_body(d: &JoinDecline) -> String {
    format!(
        r#"{{"by":"{}","created_at":{},"signature":"{}"}}"#,
        d.by,
        d.created_at.as_millis(),
        hex_of(&d.signature.to_bytes())
    )
}

fn decline_path(d: &JoinDecline) -> String {
    format!(
        "/v1/communities/{}/join-requests/{}/decline",
        d.community, d.asker
    )
}

#[test]
fn a_moderator_declines_a_request_and_nobody_else_can() -> TestResult {
    let server = TestServer::start()?;
    let (alice, bob, id) = quiet_court(&server)?;

    let (eve, mallory) = (Keypair::generate()?, Keypair::generate()?);
    for asker in [&eve, &mallory] {
        let request = JoinRequest::sign(id, asker, "Hello", now())?;
        let answer = server.post(&path_of(id), &body_of(&request))?;
        assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    }
    wait_until("two requests at alice's", || {
        Ok(alice.join_requests().len() == 2)
    })?;

    // Bob, a plain member, and Eve herself may not decline; nor may anyone
    // for a community the server does not hold (the same answer).
    let bob_keys = Keypair::import_secret(&bob.with(|k| Ok(k.export_secret()))?)?;
    let nowhere = CommunityId::from_bytes([5; 32]);
    for d in [
        JoinDecline::sign(id, mallory.member_id(), &bob_keys, now()),
        JoinDecline::sign(id, mallory.member_id(), &eve, now()),
        JoinDecline::sign(nowhere, mallory.member_id(), &bob_keys, now()),
    ] {
        let answer = server.post(&decline_path(&d), &decline_body(&d))?;
        assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
        assert!(answer.contains(r#""code":"not_permitted""#));
    }
    // A forged signature, a stale one: typed errors.
    let alice_keys = Keypair::import_secret(&alice.with(|k| Ok(k.export_secret()))?)?;
    let mut forged = JoinDecline::sign(id, mallory.member_id(), &alice_keys, now());
    forged.asker = eve.member_id();
    let answer = server.post(&decline_path(&forged), &decline_body(&forged))?;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    let stale = JoinDecline::sign(
        id,
        mallory.member_id(),
        &alice_keys,
        Timestamp::from_millis(0),
    );
    let answer = server.post(&decline_path(&stale), &decline_body(&stale))?;
    assert!(answer.contains(r#""code":"stale""#), "{answer}");
    assert_eq!(alice.join_requests().len(), 2, "nothing declined yet");

    // Alice, the admin, declines Mallory: the list shrinks at once.
    let d = JoinDecline::sign(id, mallory.member_id(), &alice_keys, now());
    let answer = server.post(&decline_path(&d), &decline_body(&d))?;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#"{"success":true,"data":"declined"}"#));
    wait_until("only eve's request left", || {
        let left = alice.join_requests();
        Ok(left.len() == 1 && left[0].member == eve.member_id())
    })?;
    Ok(())
}
