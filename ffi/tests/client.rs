//! The exported API used from Rust as an app would use it: two devices
//! through a real sync server, listeners, errors and closing. The foreign
//! languages' own tests (bindings/) prove the same surface across the FFI.

use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use karmyq_ffi::{
    ApiError, Category, KarmyqClient, KarmyqEvent, KarmyqListener, NotificationKind, RequestDraft,
    RequestKind, RequestStatus, SyncState, Timestamp, Urgency, Visibility,
};
use karmyq_tests::net::{PATIENCE, TestResult, TestServer};
use tempfile::TempDir;

fn device() -> TestResult<(Arc<KarmyqClient>, TempDir)> {
    let dir = tempfile::tempdir()?;
    let client = KarmyqClient::open(dir.path().display().to_string())?;
    Ok((client, dir))
}

/// Sends every event to a channel the test reads.
struct Events(Mutex<Sender<KarmyqEvent>>);

impl KarmyqListener for Events {
    fn on_event(&self, event: KarmyqEvent) {
        if let Ok(tx) = self.0.lock() {
            let _ = tx.send(event);
        }
    }
}

fn listen(
    client: &KarmyqClient,
) -> TestResult<(Arc<karmyq_ffi::ListenerHandle>, Receiver<KarmyqEvent>)> {
    let (tx, rx) = channel();
    let handle = client.subscribe(Box::new(Events(Mutex::new(tx))))?;
    Ok((handle, rx))
}

/// Waits for an event matching `want`, skipping others.
fn expect(
    rx: &Receiver<KarmyqEvent>,
    what: &str,
    want: impl Fn(&KarmyqEvent) -> bool,
) -> TestResult {
    let deadline = Instant::now() + PATIENCE;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(e) if want(&e) => return Ok(()),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    Err(format!("no event: {what}").into())
}

fn wait_until(what: &str, mut cond: impl FnMut() -> Result<bool, ApiError>) -> TestResult {
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        if cond()? {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!("timed out waiting for {what}").into())
}

fn sofa() -> RequestDraft {
    RequestDraft {
        title: "Move a sofa".into(),
        description: "Two floors down".into(),
        category: Category::Moving,
        urgency: Urgency::High,
        kind: RequestKind::Generic,
        location: None,
        when_from: None,
        when_until: None,
    }
}

#[test]
fn two_devices_help_each_other_through_a_server() -> TestResult {
    let server = TestServer::start()?;
    let (alice, _a) = device()?;
    let (bob, _b) = device()?;
    let (_alice_events, alice_rx) = listen(&alice)?;
    let (_bob_events, bob_rx) = listen(&bob)?;

    let id = alice.create_community("Elm Street".into(), "".into(), Visibility::Public)?;
    let report = bob.receive(alice.export_community(id)?)?;
    assert!(report.rejected.is_empty(), "{report:?}");
    assert_eq!(bob.community_info(id)?.my_role, None);
    bob.join(id)?;
    alice.start_sync(server.url(), id)?;
    bob.start_sync(server.url(), id)?;
    expect(&bob_rx, "bob up to date", |e| {
        matches!(
            e,
            KarmyqEvent::SyncStatusChanged {
                status: SyncState::UpToDate,
                ..
            }
        )
    })?;
    expect(
        &alice_rx,
        "bob joined, at alice's",
        |e| matches!(e, KarmyqEvent::MemberJoined { member, .. } if *member == bob.member_id()),
    )?;

    let request = alice.post_request(vec![id], sofa())?;
    expect(
        &bob_rx,
        "the request at bob's",
        |e| matches!(e, KarmyqEvent::RequestCreated { request: r, .. } if *r == request),
    )?;
    let offer = bob.offer_help(id, request, "I have a van".into())?;
    expect(
        &alice_rx,
        "bob's offer at alice's",
        |e| matches!(e, KarmyqEvent::OfferReceived { offer: o, .. } if *o == offer),
    )?;
    alice.accept_offer(id, request, offer)?;
    expect(
        &bob_rx,
        "the acceptance, notified to bob",
        |e| matches!(e, KarmyqEvent::Notified { notification } if notification.kind == NotificationKind::OfferAccepted),
    )?;
    // Karma needs the help confirmed at least 15 minutes after acceptance.
    let later = Timestamp::from_millis(alice.now().as_millis() + 20 * 60_000);
    alice.set_clock(Some(later));
    bob.set_clock(Some(later));
    bob.confirm_match(id, request, None)?;
    alice.confirm_match(id, request, Some("Thank you!".into()))?;
    wait_until("bob's karma at alice's", || {
        Ok(alice.karma(id, bob.member_id())? > 0.0)
    })?;
    assert_eq!(alice.request(id, request)?.status, RequestStatus::Completed);

    let chat = alice.open_conversation(id, bob.member_id())?;
    alice.send_message(id, chat, "See you at six".into())?;
    expect(
        &bob_rx,
        "the message at bob's",
        |e| matches!(e, KarmyqEvent::MessageReceived { conversation, .. } if *conversation == chat),
    )?;
    let messages = bob.messages(id, chat, None, 10)?;
    assert_eq!(
        messages.last().and_then(|m| m.body.clone()).as_deref(),
        Some("See you at six")
    );
    assert_eq!(bob.unread_messages(id)?, 1);

    alice.close();
    bob.close();
    Ok(())
}

/// A listener that calls the client back from inside its callback: events
/// are delivered off the thread holding the client, so this cannot hang.
struct Reentrant {
    client: Arc<KarmyqClient>,
    seen: Mutex<Sender<usize>>,
}

impl KarmyqListener for Reentrant {
    fn on_event(&self, event: KarmyqEvent) {
        if let KarmyqEvent::RequestCreated { community, .. } = event {
            let open = self
                .client
                .my_requests(community, 10, 0)
                .map_or(0, |l| l.len());
            let _ = self.seen.lock().map(|tx| tx.send(open));
        }
    }
}

#[test]
fn a_listener_may_call_the_client_and_stops_when_dropped() -> TestResult {
    let (client, _dir) = device()?;
    let id = client.create_community("Oak Lane".into(), "".into(), Visibility::Public)?;
    let (tx, rx) = channel();
    let handle = client.subscribe(Box::new(Reentrant {
        client: client.clone(),
        seen: Mutex::new(tx),
    }))?;
    client.post_request(vec![id], sofa())?;
    assert_eq!(rx.recv_timeout(PATIENCE)?, 1);

    drop(handle);
    client.post_request(vec![id], sofa())?;
    assert!(
        rx.recv_timeout(Duration::from_millis(300)).is_err(),
        "a dropped handle still delivers"
    );
    Ok(())
}

#[test]
fn failures_carry_their_category_and_code() -> TestResult {
    let (client, _dir) = device()?;
    let id = client.create_community("Pine Court".into(), "".into(), Visibility::Public)?;
    let request = client.post_request(vec![id], sofa())?;

    let own = client.offer_help(id, request, "me".into()).err();
    assert!(matches!(own, Some(ApiError::Rejected { .. })), "{own:?}");

    let bad = client.receive(b"not a bundle".to_vec()).err();
    assert_eq!(bad.as_ref().map(ApiError::code), Some("malformed"));

    let url = client.start_sync("http://example.invalid".into(), id).err();
    assert_eq!(url.as_ref().map(ApiError::code), Some("invalid_argument"));

    let nosync = client.join_requests(id).err();
    assert_eq!(nosync.as_ref().map(ApiError::code), Some("no_sync"));

    let mut draft = sofa();
    draft.when_from = Some(client.now());
    let half = client.post_request(vec![id], draft).err();
    assert_eq!(half.as_ref().map(ApiError::code), Some("invalid_argument"));

    let invite = client.join_with_invite("karmyq://nope".into()).err();
    assert_eq!(invite.as_ref().map(ApiError::code), Some("invalid_invite"));

    client.close();
    let closed = client.communities().err();
    assert!(
        matches!(closed, Some(ApiError::Closed { .. })),
        "{closed:?}"
    );
    Ok(())
}

#[test]
fn the_clock_can_be_pinned_and_the_identity_restored() -> TestResult {
    let (client, dir) = device()?;
    let id = client.create_community("Ash Row".into(), "".into(), Visibility::Private)?;
    client.set_clock(Some(Timestamp::from_millis(1_800_000_000_000)));
    let request = client.post_request(vec![id], sofa())?;
    let view = client.request(id, request)?;
    assert_eq!(view.created_at.as_millis(), 1_800_000_000_000);
    client.set_clock(None);
    assert!(client.now().as_millis() > 1_700_000_000_000);

    let secret = client.export_secret()?;
    let me = client.member_id();
    client.close();
    drop(dir);
    let other = tempfile::tempdir()?;
    let restored = KarmyqClient::restore(other.path().display().to_string(), secret)?;
    assert_eq!(restored.member_id(), me);
    Ok(())
}

#[test]
fn join_requests_are_signed_for_the_app_to_post() -> TestResult {
    let server = TestServer::start()?;
    let (alice, _a) = device()?;
    let (eve, _e) = device()?;
    let (_events, rx) = listen(&alice)?;
    let id = alice.create_community("Quiet Court".into(), "".into(), Visibility::Private)?;
    alice.start_sync(server.url(), id)?;
    // The server answers a request for a community it does not hold as
    // for any other (and keeps nothing): wait until it holds this one.
    expect(&rx, "alice up to date", |e| {
        matches!(
            e,
            KarmyqEvent::SyncStatusChanged {
                status: SyncState::UpToDate,
                ..
            }
        )
    })?;

    let ask = eve.sign_join_request(id, "I moved in at number 4".into())?;
    let answer = server.post(&ask.path, &ask.body)?;
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    wait_until("eve's request at alice's", || {
        let pending = alice.join_requests(id)?;
        Ok(pending
            .iter()
            .any(|r| r.member == eve.member_id() && r.message == "I moved in at number 4"))
    })?;

    let no = alice.sign_join_decline(id, eve.member_id())?;
    let answer = server.post(&no.path, &no.body)?;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    wait_until("the request gone at alice's", || {
        Ok(alice.join_requests(id)?.is_empty())
    })?;

    let long = eve.sign_join_request(id, "x".repeat(501)).err();
    assert_eq!(long.as_ref().map(ApiError::code), Some("invalid_argument"));
    Ok(())
}
