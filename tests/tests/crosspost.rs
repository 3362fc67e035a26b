//! A request cross-posted to several of the requester's communities: one
//! match, its pool paid once and split across the communities it was
//! matched in; copies that cannot share the match are closed; and the
//! validator's rules for the cross-post keys, as forged changes.

use automerge::ROOT;
use automerge::transaction::Transactable;
use karmyq_core::{
    Category, CommunityId, DocId, Error, Heads, KarmaReason, Keypair, MATCHED_ELSEWHERE,
    MatchStatus, Rejection, RequestDraft, RequestId, RequestKind, RequestStatus, Result, Urgency,
    Visibility,
};
use karmyq_tests::{Device, at, bundle_of, doc_from, forge};

fn draft() -> RequestDraft {
    RequestDraft {
        title: "Move a sofa upstairs".into(),
        description: "Third floor, no lift".into(),
        category: Category::Moving,
        urgency: Urgency::High,
        kind: RequestKind::Generic,
        location: None,
        when: None,
    }
}

/// Alice founds three public communities; Bob joins the first two, Carol
/// the third. Everyone is synced at minute 5.
struct Town {
    alice: Device,
    bob: Device,
    carol: Device,
    elm: CommunityId,
    oak: CommunityId,
    ash: CommunityId,
}

impl Town {
    fn new() -> Result<Self> {
        let (mut alice, mut bob, mut carol) = (Device::new()?, Device::new()?, Device::new()?);
        let mut ids = Vec::new();
        for name in ["Elm Street", "Oak Lane", "Ash Row"] {
            ids.push(
                alice
                    .k
                    .create_community(name, "", Visibility::Public, at(0))?,
            );
        }
        let (elm, oak, ash) = (ids[0], ids[1], ids[2]);
        for (joiner, c) in [(0, elm), (0, oak), (1, ash)] {
            let d = if joiner == 0 { &mut bob } else { &mut carol };
            alice.send_to(d, c, at(1))?;
            d.k.community(c)?.join(at(2))?;
            d.send_to(&mut alice, c, at(3))?;
        }
        Ok(Town {
            alice,
            bob,
            carol,
            elm,
            oak,
            ash,
        })
    }

    fn status(d: &mut Device, c: CommunityId, req: RequestId, now: i64) -> Result<RequestStatus> {
        Ok(d.k.community(c)?.request(req, at(now))?.status)
    }
}

#[test]
fn cross_posted_request_completed_once_pays_once_split() -> Result<()> {
    let mut t = Town::new()?;
    let (elm, oak, ash) = (t.elm, t.oak, t.ash);
    let req = t.alice.k.post_request(&[elm, oak, ash], &draft(), at(10))?;
    for c in [elm, oak] {
        t.alice.send_to(&mut t.bob, c, at(11))?;
    }
    t.alice.send_to(&mut t.carol, ash, at(11))?;
    for c in [elm, oak, ash] {
        let copy = t.alice.k.community(c)?.request(req, at(11))?;
        assert_eq!(copy.status, RequestStatus::Open);
        assert_eq!(copy.request.posted_to, vec![elm, oak, ash]);
    }

    // Bob offers in Oak Lane; Alice accepts there. Bob belongs to Elm
    // Street too, so the match is shared with it; Ash Row's copy closes.
    let offer = t
        .bob
        .k
        .community(oak)?
        .offer_help(req, "I have a trolley", at(12))?;
    t.bob.send_to(&mut t.alice, oak, at(13))?;
    t.alice.k.accept_offer(oak, req, offer, at(14))?;
    let elm_copy = t.alice.k.community(elm)?.request(req, at(14))?;
    assert_eq!(elm_copy.status, RequestStatus::Matched);
    assert_eq!(elm_copy.request.accepted_in, Some(oak));
    assert_eq!(elm_copy.request.shares, vec![oak, elm]);
    let ash_copy = t.alice.k.community(ash)?.request(req, at(14))?;
    assert_eq!(ash_copy.status, RequestStatus::Cancelled);
    assert_eq!(
        ash_copy.request.cancel_reason.as_deref(),
        Some(MATCHED_ELSEWHERE)
    );
    t.alice.send_to(&mut t.carol, ash, at(15))?;
    assert_eq!(
        Town::status(&mut t.carol, ash, req, 15)?,
        RequestStatus::Cancelled
    );

    // Bob hears of the acceptance in Oak Lane first and confirms there;
    // Elm Street's mirrored acceptance reaches him later, and his device
    // repeats his confirmation there by itself.
    t.alice.send_to(&mut t.bob, oak, at(15))?;
    t.bob
        .k
        .confirm_match(oak, req, Some("Heavy sofa!"), at(40))?;
    assert_eq!(Town::status(&mut t.bob, elm, req, 40)?, RequestStatus::Open);
    t.alice.send_to(&mut t.bob, elm, at(41))?;
    let bob_elm = t.bob.k.community(elm)?.request(req, at(41))?;
    let m = bob_elm
        .active_match
        .ok_or(Error::InvalidArgument("no match".into()))?;
    assert_eq!((m.responder, m.offer), (t.bob.k.member_id(), offer));
    assert!(
        m.responder_confirmed_at.is_some(),
        "Bob's confirmation mirrored"
    );

    // Alice confirms in Elm Street's copy; her device confirms in Oak Lane.
    for c in [elm, oak] {
        t.bob.send_to(&mut t.alice, c, at(42))?;
    }
    t.alice
        .k
        .confirm_match(elm, req, Some("Thank you"), at(45))?;
    for c in [elm, oak] {
        t.alice.send_to(&mut t.bob, c, at(46))?;
    }

    let (alice, bob) = (t.alice.k.member_id(), t.bob.k.member_id());
    for d in [&mut t.alice, &mut t.bob] {
        for c in [elm, oak] {
            let view = d.k.community(c)?.request(req, at(50))?;
            assert_eq!(view.status, RequestStatus::Completed, "{c:?}");
            let m = view
                .active_match
                .ok_or(Error::InvalidArgument("no match".into()))?;
            assert_eq!(m.status, MatchStatus::Completed);
            let community = d.k.community(c)?;
            // Half of the pool in each community, and a first-help bonus
            // in each (bonuses are per community).
            assert_eq!(community.karma(&bob, at(45))?, 5.0 + 15.0);
            assert_eq!(community.karma(&alice, at(45))?, 2.5);
        }
        assert_eq!(d.k.total_karma(&bob, at(45))?, 40.0);
        assert_eq!(d.k.total_karma(&alice, at(45))?, 5.0);
    }
    // The pool (10 + 5) is paid once across the two communities.
    let mut base = 0.0;
    for c in [elm, oak] {
        for e in t.bob.k.community(c)?.karma_history(&bob, at(50))? {
            if e.event.reason == KarmaReason::Help {
                base += e.event.points;
            }
        }
    }
    assert_eq!(base, 10.0);
    // Nothing in Ash Row, where the request was closed.
    assert_eq!(t.carol.k.community(ash)?.karma(&bob, at(50))?, 0.0);
    Ok(())
}

#[test]
fn a_cancelled_shared_match_reopens_every_shared_copy() -> Result<()> {
    let mut t = Town::new()?;
    let (elm, oak) = (t.elm, t.oak);
    let req = t.alice.k.post_request(&[elm, oak], &draft(), at(10))?;
    t.alice.send_to(&mut t.bob, elm, at(11))?;
    let offer = t.bob.k.community(elm)?.offer_help(req, "Me", at(12))?;
    t.bob.send_to(&mut t.alice, elm, at(13))?;
    t.alice.k.accept_offer(elm, req, offer, at(14))?;
    for c in [elm, oak] {
        t.alice.send_to(&mut t.bob, c, at(15))?;
        assert_eq!(
            Town::status(&mut t.bob, c, req, 15)?,
            RequestStatus::Matched
        );
    }
    // Bob cancels in the mirrored copy; his device cancels in the origin.
    t.bob.k.cancel_match(oak, req, "My back hurts", at(20))?;
    for c in [elm, oak] {
        assert_eq!(Town::status(&mut t.bob, c, req, 20)?, RequestStatus::Open);
        t.bob.send_to(&mut t.alice, c, at(21))?;
        assert_eq!(Town::status(&mut t.alice, c, req, 21)?, RequestStatus::Open);
    }
    Ok(())
}

#[test]
fn posting_needs_membership_of_every_community() -> Result<()> {
    let mut t = Town::new()?;
    let (elm, oak, ash) = (t.elm, t.oak, t.ash);
    for bad in [vec![], vec![elm, elm], vec![elm, oak, ash, elm]] {
        assert!(matches!(
            t.alice.k.post_request(&bad, &draft(), at(10)),
            Err(Error::InvalidArgument(_))
        ));
    }
    // Bob is not a member of Ash Row (he does not even hold it).
    assert!(t.bob.k.post_request(&[elm, ash], &draft(), at(10)).is_err());
    assert_eq!(t.bob.rows(elm, "requests")?, 0, "nothing posted half-way");
    Ok(())
}

#[test]
fn forged_cross_post_keys_are_refused() -> Result<()> {
    let mut t = Town::new()?;
    let (elm, oak, ash) = (t.elm, t.oak, t.ash);
    let req = t.alice.k.post_request(&[elm, oak], &draft(), at(10))?;
    let offer = {
        t.alice.send_to(&mut t.bob, oak, at(11))?;
        let o = t.bob.k.community(oak)?.offer_help(req, "Me", at(12))?;
        t.bob.send_to(&mut t.alice, oak, at(13))?;
        o
    };
    t.alice.send_to(&mut t.bob, elm, at(13))?;
    let alice_keys = Keypair::import_secret(&t.alice.k.export_secret())?;
    let bob_keys = Keypair::import_secret(&t.bob.k.export_secret())?;
    let doc_id = DocId::Request(req);
    // Each forged change is made on Elm Street's copy as Bob's device holds
    // it and sent to Bob, whose validator must refuse it.
    let mut check = |keys: &Keypair, edit: &Edit<'_>, want: Rejection| {
        refused(&mut t.bob, elm, &doc_id, keys, edit, want)
    };
    let mirror = |origin: CommunityId, shares: String| {
        move |tx: &mut automerge::transaction::Transaction<'_>| {
            tx.put(ROOT, "accepted", offer.to_string())?;
            tx.put(ROOT, "accepted_at", at(14).as_millis())?;
            tx.put(ROOT, "accepted_in", origin.to_string())?;
            tx.put(ROOT, "shares", shares.clone())?;
            Ok(())
        }
    };
    // Only the requester mirrors an acceptance.
    check(
        &bob_keys,
        &mirror(oak, format!("{oak},{elm}")),
        Rejection::NotRequester,
    )?;
    // From a community the request was not posted to.
    check(
        &alice_keys,
        &mirror(ash, format!("{ash},{elm}")),
        Rejection::InvalidField("accepted_in".into()),
    )?;
    // Shares beyond the communities it was posted to.
    check(
        &alice_keys,
        &mirror(oak, format!("{oak},{elm},{ash}")),
        Rejection::InvalidField("shares".into()),
    )?;
    // The communities are set when the request is posted, not later.
    check(
        &alice_keys,
        &|tx| tx.put(ROOT, "posted_to", format!("{elm},{ash}")),
        Rejection::IllegalTransition("a request's communities are set when it is posted"),
    )?;
    // Nobody but the responder writes the mirrored offer.
    t.alice.k.accept_offer(oak, req, offer, at(21))?;
    t.alice.send_to(&mut t.bob, elm, at(22))?;
    let mut check = |keys: &Keypair, edit: &Edit<'_>, want: Rejection| {
        refused(&mut t.bob, elm, &doc_id, keys, edit, want)
    };
    check(
        &alice_keys,
        &|tx| {
            let o = tx.put_object(ROOT, format!("offer:{offer}"), automerge::ObjType::Map)?;
            tx.put(&o, "created_at", at(30).as_millis())?;
            tx.put(&o, "confirmed_at", at(30).as_millis())
        },
        Rejection::NotResponder,
    )?;
    // The responder's mirrored offer carries a confirmation, not a withdrawal.
    check(
        &bob_keys,
        &|tx| {
            let o = tx.put_object(ROOT, format!("offer:{offer}"), automerge::ObjType::Map)?;
            tx.put(&o, "created_at", at(30).as_millis())?;
            tx.put(&o, "withdrawn_at", at(30).as_millis())
        },
        Rejection::IllegalTransition("not a legal change of this offer"),
    )?;
    Ok(())
}

type Edit<'a> = dyn Fn(
        &mut automerge::transaction::Transaction<'_>,
    ) -> std::result::Result<(), automerge::AutomergeError>
    + 'a;

/// Forges `edit` by `keys` on `device`'s copy of the document and asserts
/// that the device's validator refuses it with `want`.
fn refused(
    device: &mut Device,
    community: CommunityId,
    doc_id: &DocId,
    keys: &Keypair,
    edit: &Edit<'_>,
    want: Rejection,
) -> Result<()> {
    let c = device.k.community(community)?;
    let all = c.changes_since(&Heads::empty())?;
    let heads = c.heads()?.auth;
    let mut doc = doc_from(&all, doc_id)?;
    let change = forge(community, doc_id, &mut doc, heads, keys, |tx| edit(tx))?;
    let report = c.apply(&bundle_of(community, vec![change]), at(20))?;
    assert_eq!(report.reasons(), vec![&want]);
    Ok(())
}
