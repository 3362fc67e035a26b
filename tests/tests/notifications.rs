//! Events and notifications derived on each device from validated
//! changes, local or received: listeners, preferences, quiet hours,
//! retention, read marks.

use std::sync::{Arc, Mutex};

use karmyq_core::{
    Category, Event, Listener, NotificationKind, QuietHours, RequestDraft, RequestKind, Result,
    Role, Urgency,
};
use karmyq_tests::{Device, at, sync, two_neighbours};

/// Records every event it receives.
#[derive(Default)]
struct Recorder(Mutex<Vec<Event>>);

impl Listener for Recorder {
    fn on_event(&self, event: &Event) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(event.clone());
    }
}

impl Recorder {
    fn take(&self) -> Vec<Event> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn notified(events: &[Event]) -> Vec<NotificationKind> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Notified(n) => Some(n.kind),
                _ => None,
            })
            .collect()
    }
}

fn draft() -> RequestDraft {
    RequestDraft {
        title: "Walk the dog".into(),
        description: String::new(),
        category: Category::Pets,
        urgency: Urgency::High,
        kind: RequestKind::Generic,
        location: None,
        when: None,
    }
}

#[test]
fn the_story_notifies_each_side_of_what_the_other_did() -> Result<()> {
    let (mut alice, mut bob, id) = two_neighbours()?;
    let (a_rec, b_rec) = (Arc::new(Recorder::default()), Arc::new(Recorder::default()));
    let _a = alice.k.subscribe(a_rec.clone());
    let _b = bob.k.subscribe(b_rec.clone());

    let req = alice.k.community(id)?.post_request(&draft(), at(10))?;
    assert!(
        a_rec
            .take()
            .iter()
            .any(|e| matches!(e, Event::RequestCreated { request, .. } if *request == req))
    );
    sync(&mut alice, &mut bob, id, at(11))?;
    let offer = bob.k.community(id)?.offer_help(req, "Sure", at(12))?;
    // Bob's own offer: an event for his app, no notification for him.
    let mine = b_rec.take();
    assert!(
        mine.iter()
            .any(|e| matches!(e, Event::OfferReceived { offer: o, .. } if *o == offer))
    );
    assert!(Recorder::notified(&mine).is_empty());
    sync(&mut alice, &mut bob, id, at(13))?;
    assert_eq!(
        Recorder::notified(&a_rec.take()),
        vec![NotificationKind::OfferReceived]
    );

    alice.k.community(id)?.accept_offer(req, offer, at(14))?;
    sync(&mut alice, &mut bob, id, at(15))?;
    assert_eq!(
        Recorder::notified(&b_rec.take()),
        vec![NotificationKind::OfferAccepted]
    );

    bob.k.community(id)?.confirm_match(req, None, at(40))?;
    sync(&mut alice, &mut bob, id, at(41))?;
    assert_eq!(
        Recorder::notified(&a_rec.take()),
        vec![NotificationKind::MatchConfirmedByOther]
    );
    b_rec.take();
    alice
        .k
        .community(id)?
        .confirm_match(req, Some("Thanks"), at(50))?;
    let a_events = a_rec.take();
    assert_eq!(
        Recorder::notified(&a_events),
        vec![NotificationKind::MatchCompleted]
    );
    let (a, b) = (alice.k.member_id(), bob.k.member_id());
    let karma: Vec<(bool, f64)> = a_events
        .iter()
        .filter_map(|e| match e {
            Event::KarmaAwarded { member, points, .. } => Some((*member == b, *points)),
            _ => None,
        })
        .collect();
    assert!(karma.contains(&(true, 10.0)) && karma.contains(&(true, 15.0)));
    assert!(karma.contains(&(false, 5.0)));
    sync(&mut alice, &mut bob, id, at(51))?;
    assert_eq!(
        Recorder::notified(&b_rec.take()),
        vec![
            NotificationKind::MatchConfirmedByOther,
            NotificationKind::MatchCompleted,
            NotificationKind::BadgeEarned, // first_helper
        ]
    );

    // Stored, newest first, with read marks.
    let stored = alice.k.notifications(false, 10, 0)?;
    let kinds: Vec<_> = stored.iter().map(|n| n.kind).collect();
    assert_eq!(
        kinds,
        vec![
            NotificationKind::MatchCompleted,
            NotificationKind::MatchConfirmedByOther,
            NotificationKind::OfferReceived,
            NotificationKind::MemberJoined,
        ]
    );
    assert!(stored.iter().all(|n| n.actor == Some(b) && !n.read));
    alice.k.mark_read(Some(stored[0].id))?;
    assert_eq!(alice.k.notifications(true, 10, 0)?.len(), 3);
    alice.k.mark_read(None)?;
    assert!(alice.k.notifications(true, 10, 0)?.is_empty());
    // Bob's notifications are about Alice (his badge is about no one).
    assert!(
        bob.k
            .notifications(false, 10, 0)?
            .iter()
            .all(|n| n.actor == Some(a) || n.kind == NotificationKind::BadgeEarned)
    );
    Ok(())
}

#[test]
fn preferences_quiet_hours_retention_and_unsubscribing() -> Result<()> {
    let (mut alice, mut bob, id) = two_neighbours()?;
    let rec = Arc::new(Recorder::default());
    let sub = alice.k.subscribe(rec.clone());
    alice
        .k
        .set_notification_preference(id, NotificationKind::OfferReceived, false)?;
    let req = alice.k.community(id)?.post_request(&draft(), at(10))?;
    sync(&mut alice, &mut bob, id, at(11))?;
    bob.k.community(id)?.offer_help(req, "Me", at(12))?;
    sync(&mut alice, &mut bob, id, at(13))?;
    let events = rec.take();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::OfferReceived { .. }))
    );
    assert!(Recorder::notified(&events).is_empty(), "turned off");

    // Quiet hours on Bob's device, 22:00 to 07:00 UTC (at(0) is 08:00 UTC).
    bob.k.set_quiet_hours(Some(QuietHours {
        start_minute: 22 * 60,
        end_minute: 7 * 60,
    }))?;
    let bad = QuietHours {
        start_minute: 1440,
        end_minute: 0,
    };
    assert!(bob.k.set_quiet_hours(Some(bad)).is_err());
    let bob_id = bob.k.member_id();
    alice
        .k
        .community(id)?
        .set_role(bob_id, Role::Moderator, at(15 * 60))?;
    sync(&mut alice, &mut bob, id, at(15 * 60))?; // 23:00 UTC: quiet
    alice
        .k
        .community(id)?
        .set_role(bob_id, Role::Member, at(28 * 60))?;
    sync(&mut alice, &mut bob, id, at(28 * 60))?; // 12:00 UTC: not quiet
    let notes = bob.k.notifications(false, 10, 0)?;
    let roles: Vec<_> = notes
        .iter()
        .filter(|n| n.kind == NotificationKind::RoleChanged)
        .map(|n| n.silent)
        .collect();
    assert_eq!(roles, vec![false, true]);

    // Retention: 30 days (the community's setting); older ones go.
    alice
        .k
        .community(id)?
        .set_role(bob_id, Role::Moderator, at(60 * 24 * 33))?;
    sync(&mut alice, &mut bob, id, at(60 * 24 * 33))?;
    let notes = bob.k.notifications(false, 10, 0)?;
    assert_eq!(notes.len(), 1, "{notes:?}");

    // Unsubscribed: nothing more arrives.
    assert!(!rec.take().is_empty(), "Alice's app saw the role changes");
    drop(sub);
    alice
        .k
        .community(id)?
        .post_request(&draft(), at(60 * 24 * 34))?;
    assert!(rec.take().is_empty());
    Ok(())
}

#[test]
fn badges_and_reminders_are_notified() -> Result<()> {
    let (mut alice, mut bob, id) = two_neighbours()?;
    // A match accepted and left waiting: a reminder after 3 days, once.
    let req = alice.k.community(id)?.post_request(&draft(), at(10))?;
    sync(&mut alice, &mut bob, id, at(11))?;
    let offer = bob.k.community(id)?.offer_help(req, "Soon", at(12))?;
    sync(&mut alice, &mut bob, id, at(13))?;
    alice.k.community(id)?.accept_offer(req, offer, at(14))?;
    sync(&mut alice, &mut bob, id, at(15))?;
    assert_eq!(bob.k.send_due_reminders(at(14 + 3 * 24 * 60 - 1))?, 0);
    assert_eq!(bob.k.send_due_reminders(at(14 + 3 * 24 * 60))?, 1);
    assert_eq!(
        bob.k.send_due_reminders(at(14 + 4 * 24 * 60))?,
        0,
        "once per match"
    );
    assert_eq!(
        alice.k.send_due_reminders(at(14 + 3 * 24 * 60))?,
        1,
        "both parties"
    );
    let kinds: Vec<_> = bob
        .k
        .notifications(false, 20, 0)?
        .into_iter()
        .map(|n| n.kind)
        .collect();
    assert!(kinds.contains(&NotificationKind::MatchReminder));
    // Completing it earns Bob his first badge.
    let rec = Arc::new(Recorder::default());
    let _sub = bob.k.subscribe(rec.clone());
    let later = 14 + 4 * 24 * 60;
    bob.k.community(id)?.confirm_match(req, None, at(later))?;
    sync(&mut alice, &mut bob, id, at(later))?;
    alice
        .k
        .community(id)?
        .confirm_match(req, None, at(later + 1))?;
    sync(&mut alice, &mut bob, id, at(later + 2))?;
    let events = rec.take();
    assert!(events.iter().any(|e| matches!(
        e,
        Event::BadgeEarned {
            badge: karmyq_core::Badge::FirstHelper,
            ..
        }
    )));
    assert!(Recorder::notified(&events).contains(&NotificationKind::BadgeEarned));
    Ok(())
}

#[test]
fn receiving_a_community_is_no_news_but_what_follows_is() -> Result<()> {
    let (mut alice, mut bob, id) = two_neighbours()?;
    alice.k.community(id)?.post_request(&draft(), at(10))?;
    let mut carol = Device::new()?;
    let rec = Arc::new(Recorder::default());
    let _sub = carol.k.subscribe(rec.clone());
    alice.send_to(&mut carol, id, at(11))?;
    // Her app learns the history; no notification for it.
    let events = rec.take();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::MemberJoined { .. }))
    );
    assert!(carol.k.notifications(false, 10, 0)?.is_empty());
    carol.k.community(id)?.join(at(12))?;
    sync(&mut alice, &mut carol, id, at(13))?;
    sync(&mut alice, &mut bob, id, at(13))?;
    // Later news is: Dave joins.
    let mut dave = Device::new()?;
    alice.send_to(&mut dave, id, at(14))?;
    dave.k.community(id)?.join(at(15))?;
    dave.send_to(&mut carol, id, at(16))?;
    let kinds: Vec<_> = carol
        .k
        .notifications(false, 10, 0)?
        .into_iter()
        .map(|n| n.kind)
        .collect();
    assert_eq!(kinds, vec![NotificationKind::MemberJoined]);
    Ok(())
}
