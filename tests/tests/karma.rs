//! Karma, trust and badges from matches completed across devices.

use karmyq_core::{
    Badge, Category, CommunityId, KarmaReason, RequestDraft, RequestId, RequestKind, Result,
    Urgency,
};
use karmyq_tests::{Device, at, sync, two_neighbours};

/// Minutes in 182.625 days: one karma half-life.
const HALF_LIFE_MIN: i64 = 262_980;

fn draft(n: i64) -> RequestDraft {
    RequestDraft {
        title: format!("Groceries #{n}"),
        description: String::new(),
        category: Category::Food,
        urgency: Urgency::Medium,
        kind: RequestKind::Generic,
        location: None,
        when: None,
    }
}

/// Alice asks, Bob helps, both confirm: accepted at `t + 2`, confirmed by
/// Bob at `t + 2 + gap / 2` and by Alice at `t + 2 + gap` (minutes).
fn help(
    alice: &mut Device,
    bob: &mut Device,
    id: CommunityId,
    t: i64,
    gap: i64,
) -> Result<RequestId> {
    let req = alice.k.community(id)?.post_request(&draft(t), at(t))?;
    alice.send_to(bob, id, at(t))?;
    let offer = bob.k.community(id)?.offer_help(req, "On it", at(t + 1))?;
    bob.send_to(alice, id, at(t + 1))?;
    alice.k.community(id)?.accept_offer(req, offer, at(t + 2))?;
    alice.send_to(bob, id, at(t + 2))?;
    bob.k
        .community(id)?
        .confirm_match(req, None, at(t + 2 + gap / 2))?;
    bob.send_to(alice, id, at(t + 2 + gap / 2))?;
    alice
        .k
        .community(id)?
        .confirm_match(req, Some("Thanks!"), at(t + 2 + gap))?;
    sync(alice, bob, id, at(t + 2 + gap))?;
    Ok(req)
}

#[test]
fn one_completed_match_pays_25_and_5_and_halves_in_a_half_life() -> Result<()> {
    let (mut alice, mut bob, id) = two_neighbours()?;
    help(&mut alice, &mut bob, id, 10, 30)?;
    let done = 42;
    let (a, b) = (alice.k.member_id(), bob.k.member_id());
    for d in [&mut alice, &mut bob] {
        let c = d.k.community(id)?;
        assert_eq!(c.karma(&b, at(done))?, 25.0);
        assert_eq!(c.karma(&a, at(done))?, 5.0);
        assert!((c.karma(&b, at(done + HALF_LIFE_MIN))? - 12.5).abs() < 1e-9);
        assert!((c.karma(&a, at(done + HALF_LIFE_MIN))? - 2.5).abs() < 1e-9);
        let reasons: Vec<_> = c
            .karma_history(&b, at(done))?
            .into_iter()
            .map(|h| (h.event.reason, h.event.points))
            .collect();
        assert!(reasons.contains(&(KarmaReason::Help, 10.0)));
        assert!(reasons.contains(&(KarmaReason::FirstHelp, 15.0)));
    }
    assert_eq!(bob.k.total_karma(&b, at(done))?, 25.0);
    assert_eq!(bob.k.badges(&b, id, at(done))?, vec![Badge::FirstHelper]);
    assert!(bob.k.badges(&a, id, at(done))?.is_empty());
    Ok(())
}

#[test]
fn repeat_pairs_in_a_month_earn_less_each_time() -> Result<()> {
    let (mut alice, mut bob, id) = two_neighbours()?;
    for k in 0..5 {
        help(&mut alice, &mut bob, id, 100 + k * 24 * 60, 30)?;
    }
    let b = bob.k.member_id();
    let c = alice.k.community(id)?;
    let mut base: Vec<(i64, f64)> = c
        .karma_history(&b, at(10 * 24 * 60))?
        .into_iter()
        .filter(|h| h.event.reason == KarmaReason::Help)
        .map(|h| (h.event.at.as_millis(), h.event.points))
        .collect();
    base.sort_by_key(|(t, _)| *t);
    let points: Vec<f64> = base.into_iter().map(|(_, p)| p).collect();
    // 1, 1, 0.5, 0.25, then nothing (no event at all for zero).
    assert_eq!(points, vec![10.0, 10.0, 5.0, 2.5]);
    Ok(())
}

#[test]
fn a_match_completed_within_15_minutes_earns_nothing() -> Result<()> {
    let (mut alice, mut bob, id) = two_neighbours()?;
    help(&mut alice, &mut bob, id, 10, 14)?;
    let b = bob.k.member_id();
    assert_eq!(alice.k.community(id)?.karma(&b, at(100))?, 0.0);
    help(&mut alice, &mut bob, id, 200, 16)?;
    assert_eq!(alice.k.community(id)?.karma(&b, at(218))?, 25.0);
    Ok(())
}

#[test]
fn trust_grows_with_completed_help() -> Result<()> {
    let (mut alice, mut bob, id) = two_neighbours()?;
    let b = bob.k.member_id();
    let before = alice.k.community(id)?.trust(&b, at(60))?;
    assert_eq!(before.score, 0);
    help(&mut alice, &mut bob, id, 10, 30)?;
    let after = alice.k.community(id)?.trust(&b, at(60))?;
    // n = 1: V = 10 * log2(2) = 10; P = 1: B = 2.5; tenure 58 minutes.
    assert_eq!(after.volume, 10.0);
    assert_eq!(after.breadth, 2.5);
    assert_eq!(after.score, 13);
    Ok(())
}

#[test]
fn a_moderator_invalidates_a_match_and_can_restore_it() -> Result<()> {
    let (mut alice, mut bob, id) = two_neighbours()?;
    let req = help(&mut alice, &mut bob, id, 10, 30)?;
    let b = bob.k.member_id();
    // A plain member may not; the requester is one here.
    assert!(matches!(
        bob.k
            .community(id)?
            .invalidate_match(req, Some("fake"), at(60)),
        Err(karmyq_core::Error::Rejected(
            karmyq_core::Rejection::NotPermitted
        ))
    ));
    // The founder (an admin) invalidates it: karma gone, trust penalised.
    let trust_before = alice.k.community(id)?.trust(&b, at(61))?.score;
    // Read on both devices first: figures kept in memory must not outlive
    // the change that voids them.
    for d in [&mut alice, &mut bob] {
        assert!(d.k.community(id)?.karma(&b, at(61))? > 24.9);
    }
    alice
        .k
        .community(id)?
        .invalidate_match(req, Some("never happened"), at(61))?;
    sync(&mut alice, &mut bob, id, at(62))?;
    for d in [&mut alice, &mut bob] {
        let c = d.k.community(id)?;
        assert_eq!(c.karma(&b, at(62))?, 0.0);
        let t = c.trust(&b, at(62))?;
        assert!(t.penalty > 19.9 && t.score < trust_before, "{t:?}");
    }
    // Reversible.
    alice.k.community(id)?.invalidate_match(req, None, at(63))?;
    sync(&mut alice, &mut bob, id, at(64))?;
    assert_eq!(bob.k.community(id)?.karma(&b, at(42))?, 25.0);
    Ok(())
}

#[test]
fn the_daily_cap_holds_through_the_api() -> Result<()> {
    let (mut alice, mut bob, id) = two_neighbours()?;
    // Helpers earn 30 a help here, so two helps reach the 60-point cap.
    let mut settings = alice.k.community(id)?.info()?.settings;
    settings.karma_helper = 30;
    alice.k.community(id)?.update_settings(
        karmyq_core::SettingsPatch {
            settings: Some(settings),
            ..karmyq_core::SettingsPatch::default()
        },
        at(4),
    )?;
    sync(&mut alice, &mut bob, id, at(5))?;
    let mut others = vec![Device::new()?, Device::new()?];
    for d in &mut others {
        alice.send_to(d, id, at(6))?;
        d.k.community(id)?.join(at(7))?;
        sync(&mut alice, d, id, at(8))?;
    }
    sync(&mut alice, &mut bob, id, at(9))?;
    // Three different people, one day (08:10 to 09:30 UTC).
    help(&mut alice, &mut bob, id, 10, 30)?;
    for (k, d) in others.iter_mut().enumerate() {
        sync(&mut alice, d, id, at(50))?;
        sync(d, &mut bob, id, at(50))?;
        help(d, &mut bob, id, 60 + 20 * i64::try_from(k).unwrap_or(0), 16)?;
    }
    let b = bob.k.member_id();
    let base: f64 = bob
        .k
        .community(id)?
        .karma_history(&b, at(200))?
        .iter()
        .filter(|h| h.event.reason == KarmaReason::Help)
        .map(|h| h.event.points)
        .sum();
    assert_eq!(base, 60.0);
    Ok(())
}
