//! Suggested helpers, the feed across communities, and blocks.

use karmyq_core::{
    Category, CommunityId, Error, FeedKind, NotificationKind, Profile, Rejection, RequestDraft,
    RequestKind, Result, Urgency, Visibility,
};
use karmyq_tests::{Device, at, sync};

fn community_of(
    founder: &mut Device,
    others: &mut [&mut Device],
    name: &str,
) -> Result<CommunityId> {
    let id = founder
        .k
        .create_community(name, "", Visibility::Public, at(0))?;
    for d in others.iter_mut() {
        founder.send_to(d, id, at(1))?;
        d.k.community(id)?.join(at(2))?;
        d.send_to(founder, id, at(3))?;
    }
    for d in others.iter_mut() {
        founder.send_to(d, id, at(4))?;
    }
    Ok(id)
}

fn profile(name: &str, skills: &[&str], location: Option<&str>) -> Profile {
    Profile {
        name: name.into(),
        skills: skills.iter().map(|s| (*s).to_owned()).collect(),
        location: location.map(str::to_owned),
        ..Profile::default()
    }
}

fn draft(title: &str, category: Category, urgency: Urgency) -> RequestDraft {
    RequestDraft {
        title: title.into(),
        description: String::new(),
        category,
        urgency,
        kind: RequestKind::Generic,
        location: Some("u0yjj".into()),
        when: None,
    }
}

#[test]
fn suggestions_rank_skill_place_and_availability_and_respect_blocks() -> Result<()> {
    let (mut alice, mut bob, mut carol) = (Device::new()?, Device::new()?, Device::new()?);
    let id = community_of(&mut alice, &mut [&mut bob, &mut carol], "Elm")?;
    bob.k
        .community(id)?
        .set_profile(&profile("Bob", &["moving"], Some("u0yjj")), at(5))?;
    carol
        .k
        .community(id)?
        .set_profile(&profile("Carol", &[], None), at(5))?;
    sync(&mut alice, &mut bob, id, at(6))?;
    sync(&mut alice, &mut carol, id, at(6))?;
    let req = alice.k.community(id)?.post_request(
        &draft("Move a sofa", Category::Moving, Urgency::High),
        at(10),
    )?;
    let s = alice.k.community(id)?.suggested_helpers(req, at(11))?;
    let got: Vec<_> = s.iter().map(|s| (s.member, s.score.total)).collect();
    // Bob: skill 40 + here 30 + free 30 + high 5; Carol: 0 + 15 + 30 + 5.
    assert_eq!(
        got,
        vec![(bob.k.member_id(), 105.0), (carol.k.member_id(), 50.0)]
    );
    // Alice blocks Carol: no suggestion, no offer either way on this device,
    // her offers hidden and not notified.
    let carol_id = carol.k.member_id();
    alice.k.block(&carol_id, at(12))?;
    assert_eq!(alice.k.blocked()?, vec![carol_id]);
    let s = alice.k.community(id)?.suggested_helpers(req, at(13))?;
    assert_eq!(s.len(), 1);
    sync(&mut alice, &mut carol, id, at(14))?;
    let offer = carol.k.community(id)?.offer_help(req, "Let me", at(15))?;
    sync(&mut alice, &mut carol, id, at(16))?;
    assert!(
        alice
            .k
            .community(id)?
            .request(req, at(17))?
            .offers
            .is_empty()
    );
    assert!(
        !alice
            .k
            .notifications(false, 20, 0)?
            .iter()
            .any(|n| n.kind == NotificationKind::OfferReceived)
    );
    let refused = alice.k.community(id)?.accept_offer(req, offer, at(18));
    assert!(
        matches!(refused, Err(Error::Rejected(Rejection::Blocked))),
        "{refused:?}"
    );
    let other = alice
        .k
        .community(id)?
        .post_request(&draft("Another", Category::Food, Urgency::Low), at(19))?;
    assert!(alice.k.unblock(&carol_id, at(20)).is_ok());
    assert_eq!(alice.k.community(id)?.request(req, at(21))?.offers.len(), 1);
    alice.k.block(&carol_id, at(22))?;
    sync(&mut alice, &mut carol, id, at(23))?;
    // And the other way: blocked on Carol's device, she may not offer.
    carol.k.block(&alice.k.member_id(), at(24))?;
    let refused = carol.k.community(id)?.offer_help(other, "hi", at(25));
    assert!(
        matches!(refused, Err(Error::Rejected(Rejection::Blocked))),
        "{refused:?}"
    );
    Ok(())
}

#[test]
fn the_feed_ranks_requests_across_communities() -> Result<()> {
    let (mut alice, mut bob, mut dave) = (Device::new()?, Device::new()?, Device::new()?);
    let elm = community_of(&mut alice, &mut [&mut bob], "Elm")?;
    let oak = community_of(&mut dave, &mut [&mut bob], "Oak")?;
    bob.k
        .community(elm)?
        .set_profile(&profile("Bob", &["tech"], Some("u0yjj")), at(5))?;
    let tech = alice
        .k
        .community(elm)?
        .post_request(&draft("Fix my wifi", Category::Tech, Urgency::Low), at(10))?;
    let food = dave.k.community(oak)?.post_request(
        &draft("Soup please", Category::Food, Urgency::Critical),
        at(11),
    )?;
    let own = bob
        .k
        .community(elm)?
        .post_request(&draft("My own", Category::Tech, Urgency::Low), at(12))?;
    sync(&mut alice, &mut bob, elm, at(13))?;
    sync(&mut dave, &mut bob, oak, at(13))?;
    let feed = bob.k.feed(at(14), 0, 10)?;
    let ids: Vec<_> = feed.iter().map(|f| f.id).collect();
    // Skill match first (0.40 beats critical's 0.15); never one's own.
    assert_eq!(ids, vec![tech, food]);
    assert!(!ids.contains(&own));
    assert!(feed.iter().all(|f| f.kind == FeedKind::Request));
    // Blocking Dave drops his request; paging works.
    bob.k.block(&dave.k.member_id(), at(15))?;
    assert_eq!(bob.k.feed(at(16), 0, 10)?.len(), 1);
    assert!(bob.k.feed(at(16), 1, 10)?.is_empty());
    // Expired requests leave the feed (low urgency: 60 days).
    assert!(bob.k.feed(at(10 + 60 * 24 * 60), 0, 10)?.is_empty());
    Ok(())
}

#[test]
fn feed_scores_use_the_requesters_trust_and_the_communitys_activity() -> Result<()> {
    let (mut dave, mut bob) = (Device::new()?, Device::new()?);
    let oak = community_of(&mut dave, &mut [&mut bob], "Oak")?;
    // Two requests in the last 30 days, one completed: activity 0.5.
    let done = dave
        .k
        .community(oak)?
        .post_request(&draft("Move boxes", Category::Moving, Urgency::Low), at(10))?;
    sync(&mut dave, &mut bob, oak, at(11))?;
    let offer = bob.k.community(oak)?.offer_help(done, "Sure", at(12))?;
    sync(&mut bob, &mut dave, oak, at(13))?;
    dave.k.community(oak)?.accept_offer(done, offer, at(14))?;
    sync(&mut dave, &mut bob, oak, at(15))?;
    bob.k.community(oak)?.confirm_match(done, None, at(40))?;
    sync(&mut bob, &mut dave, oak, at(41))?;
    dave.k.community(oak)?.confirm_match(done, None, at(42))?;
    let open = dave.k.community(oak)?.post_request(
        &draft("Soup please", Category::Food, Urgency::Critical),
        at(43),
    )?;
    sync(&mut dave, &mut bob, oak, at(44))?;
    let now = at(50);
    let trust = f64::from(bob.k.community(oak)?.trust(&dave.k.member_id(), now)?.score);
    assert!(trust > 0.0, "Dave's trust counts: {trust}");
    let feed = bob.k.feed(now, 0, 10)?;
    let score_of = |id| {
        feed.iter()
            .find(|f| f.id == id)
            .map(|f| f.score)
            .ok_or(Error::InvalidArgument("not in the feed".into()))
    };
    // Bob has no skills: trust, activity and urgency only.
    let expected = 0.25 * trust / 100.0 + 0.20 * 0.5 + 0.15 * 1.0;
    assert!((score_of(open)? - expected).abs() < 1e-9);
    // The completion: trust and activity only.
    let expected = 0.25 * trust / 100.0 + 0.20 * 0.5;
    assert!((score_of(done)? - expected).abs() < 1e-9);
    Ok(())
}

#[test]
fn a_well_suited_member_hears_of_a_new_request() -> Result<()> {
    let (mut alice, mut bob, mut carol) = (Device::new()?, Device::new()?, Device::new()?);
    let id = community_of(&mut alice, &mut [&mut bob, &mut carol], "Elm")?;
    bob.k
        .community(id)?
        .set_profile(&profile("Bob", &["moving"], Some("u0yjj")), at(5))?;
    carol
        .k
        .community(id)?
        .set_profile(&profile("Carol", &[], None), at(5))?;
    let req = alice.k.community(id)?.post_request(
        &draft("Move a sofa", Category::Moving, Urgency::High),
        at(10),
    )?;
    sync(&mut alice, &mut bob, id, at(11))?;
    sync(&mut alice, &mut carol, id, at(11))?;
    let for_bob: Vec<_> = bob
        .k
        .notifications(false, 20, 0)?
        .into_iter()
        .filter(|n| n.kind == NotificationKind::NewRequestForYou)
        .collect();
    assert_eq!(for_bob.len(), 1);
    assert_eq!(for_bob[0].request, Some(req));
    // Carol scores 50: below 60, no notification.
    assert!(
        !carol
            .k
            .notifications(false, 20, 0)?
            .iter()
            .any(|n| n.kind == NotificationKind::NewRequestForYou)
    );
    Ok(())
}
