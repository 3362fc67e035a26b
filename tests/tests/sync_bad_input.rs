//! Bad input to the sync server: every refusal is a typed error frame,
//! counted in `/metrics`, and the server keeps serving everyone else.

use karmyq_core::sync::SyncStatus;
use karmyq_core::sync::{ErrorCode, Frame, PROTOCOL_VERSION};
use karmyq_core::{
    Bundle, CommunityId, Heads, Keypair, Profile, SigningTag, Timestamp, Visibility,
};
use karmyq_tests::net::{Node, TestResult, TestServer, public_community, wait_until};

fn now() -> Timestamp {
    Timestamp::now()
}

const MAX_FRAME: usize = 64 * 1024;

#[test]
fn bad_input_gets_typed_errors_and_the_server_keeps_serving() -> TestResult {
    let server = TestServer::start_with(|c| {
        c.limits.max_frame = MAX_FRAME;
        c.limits.max_changes = 5;
    })?;
    // Two devices syncing a community throughout.
    let (mut alice, mut bob) = (Node::new()?, Node::new()?);
    let id = public_community(&server, &mut alice, &mut [&mut bob], "Elm Street")?;
    wait_until("bob joined", || {
        alice.with(|k| Ok(k.community(id)?.members()?.len() == 2))
    })?;

    let keys = Keypair::generate()?;
    let mut raw = server.raw()?;
    // Before logging in.
    raw.send(&Frame::Subscribe {
        community: id,
        heads: Heads::empty(),
    })?;
    assert_eq!(raw.next_error()?, ErrorCode::NotAuthenticated);
    // Garbage, a text message, a frame of the right magic but no sense.
    raw.send_bytes(b"GET / HTTP/1.1".to_vec())?;
    assert_eq!(raw.next_error()?, ErrorCode::BadFrame);
    raw.send_text("hello")?;
    assert_eq!(raw.next_error()?, ErrorCode::BadFrame);
    let mut nonsense = b"KQ".to_vec();
    nonsense.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    nonsense.extend_from_slice(&[0xff; 9]);
    raw.send_bytes(nonsense)?;
    assert_eq!(raw.next_error()?, ErrorCode::BadFrame);
    // A frame over the limit (but within what the socket lets through).
    let mut huge = Frame::Bundle {
        bytes: vec![0; MAX_FRAME],
    }
    .encode();
    huge.truncate(MAX_FRAME + 1000);
    raw.send_bytes(huge)?;
    assert_eq!(raw.next_error()?, ErrorCode::FrameTooLarge);
    // The same connection can still log in.
    raw.login(&keys)?;
    // A second login is not expected.
    raw.send(&Frame::Hello {
        version: PROTOCOL_VERSION,
    })?;
    assert_eq!(raw.next_error()?, ErrorCode::Unexpected);
    // Too many changes in one bundle; a bundle that is not one.
    let mut big = Bundle::new(id);
    big.ops = vec![vec![0]; 6];
    raw.send(&Frame::Bundle {
        bytes: big.encode(),
    })?;
    assert_eq!(raw.next_error()?, ErrorCode::TooManyChanges);
    raw.send(&Frame::Bundle {
        bytes: vec![1, 2, 3],
    })?;
    assert_eq!(raw.next_error()?, ErrorCode::BadFrame);
    // Another version: said plainly, then the connection closes.
    let mut other = b"KQ".to_vec();
    other.extend_from_slice(&(PROTOCOL_VERSION + 1).to_be_bytes());
    other.push(0);
    raw.send_bytes(other)?;
    assert_eq!(raw.next_error()?, ErrorCode::VersionMismatch);
    assert!(raw.closed()?);

    // A device of another version says so in its hello.
    let mut old = server.raw()?;
    old.send(&Frame::Hello { version: 0 })?;
    assert_eq!(old.next_error()?, ErrorCode::VersionMismatch);
    assert!(old.closed()?);

    // A login signed for something else.
    let mut liar = server.raw()?;
    liar.send(&Frame::Hello {
        version: PROTOCOL_VERSION,
    })?;
    assert!(matches!(liar.frame()?, Frame::Challenge { .. }));
    liar.send(&Frame::Login {
        member: keys.member_id(),
        signature: keys.sign(SigningTag::ChangeEnvelope, b"anything"),
    })?;
    assert_eq!(liar.next_error()?, ErrorCode::BadLogin);
    assert!(liar.closed()?);

    // Every refusal was counted.
    for (code, at_least) in [
        ("bad_frame", 4),
        ("not_authenticated", 1),
        ("frame_too_large", 1),
        ("too_many_changes", 1),
        ("version_mismatch", 2),
        ("bad_login", 1),
        ("unexpected", 1),
    ] {
        let n = server.metric(&format!("karmyq_frames_refused_total{{code=\"{code}\"}}"))?;
        assert!(n >= at_least, "{code}: {n}");
    }

    // Meanwhile Alice and Bob sync as ever.
    alice.with(|k| {
        k.community(id)?.set_profile(
            &Profile {
                name: "Alice".into(),
                ..Profile::default()
            },
            now(),
        )
    })?;
    alice.nudge();
    let alice_id = alice.with(|k| Ok(k.member_id()))?;
    wait_until("alice's profile at bob's", || {
        bob.with(|k| Ok(k.community(id)?.profile(&alice_id)?.is_some()))
    })?;
    assert!(server.get("/health")?.contains(r#""success":true"#));
    Ok(())
}

#[test]
fn silent_or_noisy_connections_that_never_log_in_are_closed() -> TestResult {
    let server =
        TestServer::start_with(|c| c.login_timeout = std::time::Duration::from_millis(300))?;
    // Says nothing.
    let mut silent = server.raw()?;
    assert_eq!(silent.next_error()?, ErrorCode::NotAuthenticated);
    assert!(silent.closed()?);
    // Says only garbage.
    let mut noisy = server.raw()?;
    let mut closed = false;
    for _ in 0..40 {
        if noisy.send_bytes(vec![0xff; 8]).is_err() {
            closed = true;
            break;
        }
        match noisy.next_within(std::time::Duration::from_secs(2))? {
            Some(Frame::Error { code, .. }) => assert_eq!(code, ErrorCode::BadFrame),
            Some(other) => return Err(format!("unexpected {other:?}").into()),
            None => {
                closed = true;
                break;
            }
        }
    }
    assert!(closed, "a connection sending only garbage stays open");
    wait_until("both connections gone", || {
        Ok(server.metric("karmyq_connections")? == 0)
    })?;
    Ok(())
}

#[test]
fn rate_and_connection_limits_answer_with_their_codes() -> TestResult {
    let server = TestServer::start_with(|c| {
        c.rate_burst = 10;
        // No refill: the test is not timing-dependent.
        c.rate_per_second = 0;
        c.max_connections = 2;
    })?;
    let keys = Keypair::generate()?;
    let mut first = server.raw()?;
    first.login(&keys)?;
    let nowhere = CommunityId::from_bytes([3; 32]);
    for _ in 0..10 {
        assert_eq!(
            first
                .subscribe(nowhere, Heads::empty())?
                .last()
                .and_then(|f| match f {
                    Frame::Error { code, .. } => Some(*code),
                    _ => None,
                }),
            Some(ErrorCode::NotMember)
        );
    }
    first.send(&Frame::Subscribe {
        community: nowhere,
        heads: Heads::empty(),
    })?;
    assert_eq!(first.next_error()?, ErrorCode::RateLimited);
    // The limit is per key: another connection of the same key is limited too.
    let mut second = server.raw()?;
    second.login(&keys)?;
    second.send(&Frame::Subscribe {
        community: nowhere,
        heads: Heads::empty(),
    })?;
    assert_eq!(second.next_error()?, ErrorCode::RateLimited);
    // A third connection is over the limit of two.
    let mut third = server.raw()?;
    assert_eq!(third.next_error()?, ErrorCode::Busy);
    assert!(third.closed()?);
    assert!(server.metric("karmyq_frames_refused_total{code=\"busy\"}")? >= 1);
    assert!(server.metric("karmyq_frames_refused_total{code=\"rate_limited\"}")? >= 2);
    // Once one closes, a device gets in again.
    drop(first);
    let mut node = Node::new()?;
    let id = node.with(|k| k.create_community("Oak Lane", "", Visibility::Public, now()))?;
    node.go_online(&server, id)?;
    wait_until("a device gets in once a slot is free", || {
        Ok(node.status() == Some(SyncStatus::UpToDate))
    })?;
    Ok(())
}
