//! The walkthrough: a sync server on its embedded SQLite default and three
//! simulated devices using it. They found and join a community, carry a
//! help request through offer, match and confirmations to karma, edit
//! offline and converge, and an outsider is turned away; each step prints
//! what each device sees.
//!
//! `cargo run -p karmyq-tests --bin karmyq-sim`

use std::time::Instant;

use karmyq_core::sync::SyncStatus;
use karmyq_core::{
    Bundle, Category, CommunityId, Heads, Karmyq, Profile, RequestDraft, RequestKind,
    RequestStatus, Role, Timestamp, Urgency, Visibility,
};
use karmyq_tests::net::{Node, TestResult, TestServer, wait_until};

fn profile(name: &str, bio: &str, skills: &[&str]) -> Profile {
    Profile {
        name: name.into(),
        bio: bio.into(),
        location: Some("u0yjj".into()),
        availability: "evenings".into(),
        skills: skills.iter().map(|s| (*s).to_owned()).collect(),
    }
}

fn now() -> Timestamp {
    Timestamp::now()
}

/// What an invite link hands a newcomer along with the token: the
/// community's authority log (no documents).
fn log_of(k: &mut Karmyq, id: CommunityId) -> karmyq_core::Result<Bundle> {
    let mut b = k.community(id)?.changes_since(&Heads::empty())?;
    b.changes.clear();
    Ok(b)
}

fn show(who: &str, node: &Node, id: CommunityId) -> TestResult {
    node.with(|k| {
        let c = k.community(id)?;
        let info = c.info()?;
        println!(
            "   {who} sees \"{}\" ({} members): {}",
            info.name, info.member_count, info.description
        );
        for m in c.members()? {
            let name = m
                .profile
                .map(|p| format!("{} [{}]", p.name, p.skills.join(", ")));
            println!(
                "     {:<9} {} {}",
                m.role.as_str(),
                m.id.fmt_short(),
                name.unwrap_or_else(|| "(no profile yet)".into())
            );
        }
        Ok(())
    })
}

fn up_to_date(nodes: &[&Node]) -> TestResult {
    wait_until("every device up to date", || {
        Ok(nodes
            .iter()
            .all(|n| n.status() == Some(SyncStatus::UpToDate)))
    })
}

fn main() -> TestResult {
    let server = TestServer::start()?;
    println!(
        "0. A sync server listens on {} (data in {}).",
        server.url(),
        server.dir.path().display()
    );
    let (mut alice, mut bob, mut carol) = (Node::new()?, Node::new()?, Node::new()?);

    println!("1. Alice founds a private community offline, writes a norm, makes two invites.");
    let (id, invites) = alice.with(|k| {
        let id = k.create_community(
            "Elm Street",
            "Neighbours helping neighbours",
            Visibility::Private,
            now(),
        )?;
        let c = k.community(id)?;
        c.set_profile(&profile("Alice", "Founder", &["driving"]), now())?;
        c.add_norm("Be kind", "Assume good faith", "conduct", now())?;
        let week = now().plus_millis(7 * Timestamp::DAY);
        let invites = [
            c.create_invite(week, 1, now())?,
            c.create_invite(week, 1, now())?,
        ];
        Ok((id, invites))
    })?;
    alice.go_online(&server, id)?;
    up_to_date(&[&alice])?;
    println!("   Alice is online: the server learnt the community from her.");

    println!("2. Bob and Carol follow their invite links, join, and go online.");
    for (node, invite, who) in [
        (
            &mut bob,
            &invites[0],
            profile("Bob", "Has a van", &["moving", "tech"]),
        ),
        (
            &mut carol,
            &invites[1],
            profile("Carol", "Needs a hand", &["cooking"]),
        ),
    ] {
        let log = alice.with(|k| log_of(k, id))?;
        node.with(|k| {
            k.receive(&log, now())?;
            k.join_with_invite(&invite.to_link(), now())?;
            k.community(id)?.set_profile(&who, now())
        })?;
        node.go_online(&server, id)?;
    }
    wait_until("three members with profiles everywhere", || {
        let mut ok = true;
        for n in [&alice, &bob, &carol] {
            ok &= n.with(|k| {
                let members = k.community(id)?.members()?;
                Ok(members.len() == 3 && members.iter().all(|m| m.profile.is_some()))
            })?;
        }
        Ok(ok)
    })?;
    let (bob_id, carol_id) = (
        bob.with(|k| Ok(k.member_id()))?,
        carol.with(|k| Ok(k.member_id()))?,
    );
    alice.with(|k| {
        k.community(id)?
            .set_role(bob_id, Role::Moderator, now())
            .map(|_| ())
    })?;
    alice.nudge();
    wait_until("Bob is a moderator on Carol's device", || {
        carol.with(|k| {
            Ok(k.community(id)?
                .members()?
                .iter()
                .any(|m| m.id == bob_id && m.role == Role::Moderator))
        })
    })?;
    for (who, n) in [("Alice", &alice), ("Bob", &bob), ("Carol", &carol)] {
        show(who, n, id)?;
    }

    println!("3. Carol asks for help; the server pushes it to Bob at once.");
    let draft = RequestDraft {
        title: "Sofa up to the third floor".into(),
        description: "No lift, one heavy sofa".into(),
        category: Category::Moving,
        urgency: Urgency::High,
        kind: RequestKind::Generic,
        location: Some("u0yjj".into()),
        when: None,
    };
    let posted = Instant::now();
    let req = carol.with(|k| k.community(id)?.post_request(&draft, now()))?;
    carol.nudge();
    wait_until("Bob sees the request", || {
        bob.with(|k| Ok(k.community(id)?.request(req, now()).is_ok()))
    })?;
    println!(
        "   Bob sees \"{}\" {} ms after Carol posted it.",
        draft.title,
        posted.elapsed().as_millis()
    );
    for s in carol.with(|k| k.community(id)?.suggested_helpers(req, now()))? {
        println!(
            "   Carol's device suggests {} (score {:.0})",
            s.member.fmt_short(),
            s.score.total
        );
    }

    println!("4. Bob offers, Carol accepts, and an hour later both confirm.");
    let offer = bob.with(|k| k.community(id)?.offer_help(req, "I have a trolley", now()))?;
    bob.nudge();
    wait_until("Carol sees the offer", || {
        carol.with(|k| Ok(!k.community(id)?.request(req, now())?.offers.is_empty()))
    })?;
    carol.with(|k| k.accept_offer(id, req, offer, now()))?;
    carol.nudge();
    wait_until("Bob sees the match", || {
        bob.with(|k| Ok(k.community(id)?.request(req, now())?.status == RequestStatus::Matched))
    })?;
    let later = now().plus_millis(60 * 60 * 1000);
    bob.with(|k| k.confirm_match(id, req, Some("Happy to help"), later))?;
    bob.nudge();
    wait_until("Carol sees Bob's confirmation", || {
        carol.with(|k| {
            let m = k.community(id)?.request(req, later)?.active_match;
            Ok(m.is_some_and(|m| m.responder_confirmed_at.is_some()))
        })
    })?;
    carol.with(|k| k.confirm_match(id, req, Some("Thank you, Bob!"), later))?;
    carol.nudge();
    wait_until("everyone sees the help completed", || {
        let mut done = true;
        for n in [&alice, &bob, &carol] {
            done &= n.with(|k| {
                Ok(k.community(id)?.request(req, later)?.status == RequestStatus::Completed)
            })?;
        }
        Ok(done)
    })?;
    let half_life = later.plus_millis(karmyq_core::HALF_LIFE_MS);
    for (who, n) in [("Alice", &alice), ("Bob", &bob), ("Carol", &carol)] {
        n.with(|k| {
            let c = k.community(id)?;
            println!(
                "   {who} sees: Bob's karma {:.1} (in 182.625 days {:.2}), Carol's {:.1}, Bob's trust {}",
                c.karma(&bob_id, later)?,
                c.karma(&bob_id, half_life)?,
                c.karma(&carol_id, later)?,
                c.trust(&bob_id, later)?.score,
            );
            Ok(())
        })?;
    }
    for (who, n) in [("Bob", &bob), ("Carol", &carol)] {
        let kinds = n.with(|k| {
            Ok(k.notifications(false, 20, 0)?
                .iter()
                .map(|x| x.kind.as_str())
                .collect::<Vec<_>>()
                .join(", "))
        })?;
        println!("   {who}'s notifications: {kinds}");
    }

    println!("5. Carol goes offline and edits her profile; Alice edits the description.");
    carol.go_offline();
    carol.with(|k| {
        let p = profile("Carol", "Bakes on Sundays", &["baking", "cooking"]);
        k.community(id)?.set_profile(&p, now())
    })?;
    alice.with(|k| {
        k.community(id)?
            .set_description("Elm Street, odd numbers", now())
    })?;
    alice.nudge();
    println!("   Carol comes back online; both edits reach everyone.");
    carol.go_online(&server, id)?;
    wait_until("both edits everywhere", || {
        let mut ok = true;
        for n in [&alice, &bob, &carol] {
            ok &= n.with(|k| {
                let c = k.community(id)?;
                let bio = c.profile(&carol_id)?.map(|p| p.bio).unwrap_or_default();
                Ok(bio == "Bakes on Sundays" && c.info()?.description.ends_with("odd numbers"))
            })?;
        }
        Ok(ok)
    })?;
    up_to_date(&[&alice, &bob, &carol])?;
    show("Bob", &bob, id)?;

    println!("6. Dave, who was never invited, asks the server for the community.");
    let mut dave = Node::new()?;
    let log = alice.with(|k| log_of(k, id))?;
    dave.with(|k| k.receive(&log, now()).map(|_| ()))?;
    dave.go_online(&server, id)?;
    wait_until("Dave refused", || {
        Ok(matches!(dave.status(), Some(SyncStatus::Rejected { .. })))
    })?;
    println!(
        "   The server answers {:?}; Dave's device holds {} requests.",
        dave.status(),
        dave.with(|k| k.community(id)?.list_requests(&Default::default(), now()))?
            .len()
    );
    dave.go_offline();

    for n in [&mut alice, &mut bob, &mut carol] {
        n.go_offline();
    }
    let metrics = server.get("/metrics")?;
    println!("7. The server's counters:");
    for line in metrics.lines().filter(|l| {
        l.starts_with("karmyq_changes_accepted")
            || l.starts_with("karmyq_changes_rejected")
            || l.starts_with("karmyq_connections")
    }) {
        println!("   {line}");
    }
    Ok(())
}
