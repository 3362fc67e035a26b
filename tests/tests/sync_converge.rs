//! Devices syncing through a real server: offline edits that conflict
//! converge once everyone reconnects, and a late joiner catches up from
//! nothing but the community's genesis.

use karmyq_core::sync::SyncStatus;
use karmyq_core::{
    Bundle, Category, CommunityId, Heads, Karmyq, NotificationKind, Profile, RequestDraft,
    RequestKind, Role, Timestamp, Urgency, Visibility,
};
use karmyq_tests::net::{Node, TestResult, TestServer, join_with, phone_of, wait_until};

fn now() -> Timestamp {
    Timestamp::now()
}

fn profile(name: &str) -> Profile {
    Profile {
        name: name.into(),
        ..Profile::default()
    }
}

/// The authority ops only: what an invite link or a directory entry
/// would hand a newcomer.
fn log_only(k: &mut Karmyq, id: CommunityId) -> karmyq_core::Result<Bundle> {
    let mut b = k.community(id)?.changes_since(&Heads::empty())?;
    b.changes.clear();
    Ok(b)
}

/// `node` joins `id` from `founder`'s log alone (an invite, by hand) and
/// goes online.
fn join_from_log(
    founder: &Node,
    node: &mut Node,
    server: &TestServer,
    id: CommunityId,
) -> TestResult {
    let log = founder.with(|k| log_only(k, id))?;
    join_with(server, &log, node, id)
}

fn description(node: &Node, id: CommunityId) -> TestResult<String> {
    node.with(|k| Ok(k.community(id)?.info()?.description))
}

fn members(node: &Node, id: CommunityId) -> TestResult<usize> {
    node.with(|k| match k.community(id) {
        Ok(c) => Ok(c.members()?.len()),
        Err(_) => Ok(0),
    })
}

#[test]
fn offline_conflicting_edits_converge_and_a_late_joiner_catches_up() -> TestResult {
    let server = TestServer::start()?;
    let (mut alice, mut bob, mut carol) = (Node::new()?, Node::new()?, Node::new()?);

    // Alice founds a community offline, then goes online: the server
    // learns it from her.
    let id = alice
        .with(|k| k.create_community("Elm Street", "Neighbours", Visibility::Public, now()))?;
    alice.go_online(&server, id)?;
    wait_until("alice up to date", || {
        Ok(alice.status() == Some(SyncStatus::UpToDate))
    })?;

    // Bob and Carol get the log from Alice by hand (an invite), join
    // offline, and sync through the server.
    for node in [&mut bob, &mut carol] {
        join_from_log(&alice, node, &server, id)?;
    }
    wait_until("three members everywhere", || {
        Ok(members(&alice, id)? == 3 && members(&bob, id)? == 3 && members(&carol, id)? == 3)
    })?;

    // Founding and joining offline took one connection each: the log is
    // offered, then the subscription granted, with no refusal on the way.
    for node in [&alice, &bob, &carol] {
        let statuses = node.statuses.lock().map_err(|_| "poisoned")?.clone();
        assert!(
            !statuses
                .iter()
                .any(|s| matches!(s, SyncStatus::Rejected { .. } | SyncStatus::Offline)),
            "{statuses:?}"
        );
    }

    // Alice makes both moderators: they may edit the description.
    let (bob_id, carol_id) = (
        bob.with(|k| Ok(k.member_id()))?,
        carol.with(|k| Ok(k.member_id()))?,
    );
    alice.with(|k| {
        let c = k.community(id)?;
        c.set_role(bob_id, Role::Moderator, now())?;
        c.set_role(carol_id, Role::Moderator, now())?;
        Ok(())
    })?;
    wait_until("both moderators everywhere", || {
        let role = |n: &Node, m| n.with(|k| Ok(k.community(id)?.authority().role(&m)));
        Ok(role(&bob, carol_id)? == Some(Role::Moderator)
            && role(&carol, bob_id)? == Some(Role::Moderator))
    })?;

    // Bob and Carol go offline and both rewrite the description, and
    // their profiles, while Alice writes hers online.
    bob.go_offline();
    carol.go_offline();
    bob.with(|k| {
        let c = k.community(id)?;
        c.set_description("Bob's street", now())?;
        c.set_profile(&profile("Bob"), now())
    })?;
    carol.with(|k| {
        let c = k.community(id)?;
        c.set_description("Carol's street", now())?;
        c.set_profile(&profile("Carol"), now())
    })?;
    alice.with(|k| k.community(id)?.set_profile(&profile("Alice"), now()))?;
    assert_ne!(description(&bob, id)?, description(&carol, id)?);

    // Back online: everyone converges on one description and the same heads.
    bob.go_online(&server, id)?;
    carol.go_online(&server, id)?;
    wait_until("the same heads on three devices", || {
        let a = alice.heads(id)?;
        Ok(a == bob.heads(id)? && a == carol.heads(id)?)
    })?;
    let agreed = description(&alice, id)?;
    assert!(["Bob's street", "Carol's street"].contains(&agreed.as_str()));
    assert_eq!(description(&bob, id)?, agreed);
    assert_eq!(description(&carol, id)?, agreed);
    let names = |n: &Node| -> TestResult<Vec<String>> {
        n.with(|k| {
            let mut names: Vec<String> = k
                .community(id)?
                .members()?
                .into_iter()
                .filter_map(|m| m.profile.map(|p| p.name))
                .collect();
            names.sort();
            Ok(names)
        })
    };
    assert_eq!(names(&alice)?, vec!["Alice", "Bob", "Carol"]);
    assert_eq!(names(&bob)?, names(&carol)?);

    // Dave joins late, from the log alone: the server sends him every
    // document.
    let mut dave = Node::new()?;
    join_from_log(&alice, &mut dave, &server, id)?;
    wait_until("dave catches up", || {
        Ok(description(&dave, id)? == agreed && names(&dave)? == names(&alice)?)
    })?;
    wait_until(
        "dave's join reaches alice",
        || Ok(members(&alice, id)? == 4),
    )?;
    wait_until("dave up to date", || Ok(dave.saw(&SyncStatus::UpToDate)))
        .map_err(|e| format!("{e}: {:?}", dave.statuses))?;

    // A second phone of Alice's, restored from her secret and holding
    // nothing, catches up from scratch.
    let mut phone = phone_of(&alice)?;
    phone.go_online(&server, id)?;
    wait_until("the restored phone holds everything", || {
        Ok(phone.heads(id)? == alice.heads(id)?)
    })?;
    assert_eq!(description(&phone, id)?, agreed);
    Ok(())
}

#[test]
fn a_long_offline_backlog_goes_up_and_down_in_pieces_that_fit() -> TestResult {
    let server = TestServer::start_with(|c| {
        c.limits.max_frame = 16 * 1024;
        c.limits.max_changes = 50;
    })?;
    let (mut alice, mut bob) = (Node::new()?, Node::new()?);
    let id = alice.with(|k| k.create_community("Elm Street", "", Visibility::Public, now()))?;
    // Bob is online from the start and receives the backlog live.
    alice.go_online(&server, id)?;
    wait_until("alice up to date", || {
        Ok(alice.status() == Some(SyncStatus::UpToDate))
    })?;
    join_from_log(&alice, &mut bob, &server, id)?;
    wait_until("bob in", || Ok(members(&alice, id)? == 2))?;
    alice.go_offline();
    for i in 0..300 {
        alice.with(|k| {
            let p = Profile {
                name: format!("Alice {i:03}"),
                bio: "x".repeat(400),
                ..Profile::default()
            };
            k.community(id)?.set_profile(&p, now())
        })?;
    }
    let backlog = alice.with(|k| k.community(id)?.changes_since(&Heads::empty()))?;
    assert!(
        backlog.encode().len() > 4 * 16 * 1024,
        "{}",
        backlog.encode().len()
    );
    alice.go_online(&server, id)?;
    let want = alice.heads(id)?;
    wait_until("bob holds the whole backlog", || Ok(bob.heads(id)? == want))?;
    assert!(!alice.saw(&SyncStatus::Rejected {
        reason: "frame_too_large".into()
    }));
    // A phone restored from nothing catches it all up, in pieces too.
    let _phone = caught_up_phone(&alice, &server, id, &want)?;
    for code in ["frame_too_large", "too_many_changes"] {
        let series = format!("karmyq_frames_refused_total{{code=\"{code}\"}}");
        assert_eq!(server.metric(&series)?, 0, "{code}");
    }
    Ok(())
}

/// A new phone of `of`'s member, restored from nothing, online until it
/// holds `want`.
fn caught_up_phone(
    of: &Node,
    server: &TestServer,
    id: CommunityId,
    want: &Heads,
) -> TestResult<Node> {
    let mut phone = phone_of(of)?;
    phone.go_online(server, id)?;
    wait_until("the phone holds everything", || {
        Ok(phone.heads(id)? == *want)
    })?;
    Ok(phone)
}

/// A member's new phone takes the community's history in several bundles,
/// read from the socket while earlier ones are applied, and none of it
/// notifies: it is history. What happens once the phone is live does.
#[test]
fn a_restored_phone_catches_up_quietly_then_hears_the_news() -> TestResult {
    let server = TestServer::start_with(|c| c.limits.max_frame = 16 * 1024)?;
    let (mut alice, mut bob) = (Node::new()?, Node::new()?);
    let id = alice.with(|k| k.create_community("Elm Street", "", Visibility::Public, now()))?;
    alice.go_online(&server, id)?;
    join_from_log(&alice, &mut bob, &server, id)?;
    wait_until("bob in", || Ok(members(&alice, id)? == 2))?;
    let draft = RequestDraft {
        title: "Carry a sofa upstairs".into(),
        description: "x".repeat(300),
        category: Category::Moving,
        urgency: Urgency::Medium,
        kind: RequestKind::Generic,
        location: None,
        when: None,
    };
    let mut requests = Vec::new();
    for _ in 0..80 {
        requests.push(alice.with(|k| k.community(id)?.post_request(&draft, now()))?);
    }
    alice.nudge();
    wait_until("bob sees alice's requests", || {
        Ok(bob.heads(id)? == alice.heads(id)?)
    })?;
    for &request in &requests {
        bob.with(|k| k.community(id)?.offer_help(request, "I can help.", now()))?;
    }
    bob.nudge();
    let want = bob.heads(id)?;
    wait_until("alice has bob's offers", || Ok(alice.heads(id)? == want))?;
    let history = alice.with(|k| k.community(id)?.changes_since(&Heads::empty()))?;
    assert!(
        history.encode().len() > 4 * 16 * 1024,
        "{}",
        history.encode().len()
    );
    let offered = |node: &Node| {
        node.with(|k| {
            Ok(k.notifications(false, 100, 0)?
                .iter()
                .filter(|n| n.kind == NotificationKind::OfferReceived)
                .count())
        })
    };
    assert_eq!(offered(&alice)?, requests.len(), "alice's own device heard");

    let phone = caught_up_phone(&alice, &server, id, &want)?;
    wait_until("the phone up to date", || {
        Ok(phone.status() == Some(SyncStatus::UpToDate))
    })?;
    assert_eq!(offered(&phone)?, 0, "history notified the phone");

    let news = alice.with(|k| k.community(id)?.post_request(&draft, now()))?;
    alice.nudge();
    wait_until("bob sees the new request", || {
        bob.with(|k| Ok(k.community(id)?.request(news, now()).is_ok()))
    })?;
    bob.with(|k| k.community(id)?.offer_help(news, "On my way.", now()))?;
    bob.nudge();
    wait_until("the phone hears of the new offer", || {
        Ok(offered(&phone)? == 1)
    })?;
    Ok(())
}
