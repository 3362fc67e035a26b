//! Help requests, offers and matches between devices: the whole story,
//! every illegal step as a local call and as a forged change, and expiry
//! and renewal driven only by the clock.

use automerge::transaction::Transactable;
use automerge::{ROOT, ReadDoc};
use karmyq_core::{
    Bundle, Category, CommunityId, DocId, Error, Heads, Keypair, MatchStatus, OfferStatus,
    Rejection, RequestDraft, RequestId, RequestKind, RequestQuery, RequestStatus, Result, Role,
    Urgency, Visibility,
};
use karmyq_tests::{Device, at, bundle_of, doc_from, forge, sync};

const DAY: i64 = 24 * 60;

/// Alice, Bob and Carol in a public community, all synced; Moe moderates.
struct Street {
    alice: Device,
    bob: Device,
    carol: Device,
    id: CommunityId,
}

impl Street {
    fn new() -> Result<Self> {
        let mut alice = Device::new()?;
        let mut bob = Device::new()?;
        let mut carol = Device::new()?;
        let id = alice
            .k
            .create_community("Elm Street", "", Visibility::Public, at(0))?;
        for d in [&mut bob, &mut carol] {
            alice.send_to(d, id, at(1))?;
            d.k.community(id)?.join(at(2))?;
            d.send_to(&mut alice, id, at(3))?;
        }
        for d in [&mut bob, &mut carol] {
            alice.send_to(d, id, at(4))?;
        }
        Ok(Street {
            alice,
            bob,
            carol,
            id,
        })
    }

    fn sync_all(&mut self, now: i64) -> Result<()> {
        let id = self.id;
        sync(&mut self.alice, &mut self.bob, id, at(now))?;
        sync(&mut self.alice, &mut self.carol, id, at(now))?;
        sync(&mut self.bob, &mut self.carol, id, at(now))?;
        Ok(())
    }
}

fn draft(title: &str, urgency: Urgency) -> RequestDraft {
    RequestDraft {
        title: title.into(),
        description: "Two boxes and a sofa, third floor".into(),
        category: Category::Moving,
        urgency,
        kind: RequestKind::Generic,
        location: Some("u0yjj".into()),
        when: None,
    }
}

fn rejected<T: std::fmt::Debug>(r: Result<T>) -> Rejection {
    match r {
        Err(Error::Rejected(reason)) => reason,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[test]
fn post_offer_accept_confirm_across_devices() -> Result<()> {
    let mut s = Street::new()?;
    let id = s.id;
    let req = s
        .alice
        .k
        .community(id)?
        .post_request(&draft("Help me move a sofa", Urgency::High), at(10))?;
    s.sync_all(11)?;
    let offer = s
        .bob
        .k
        .community(id)?
        .offer_help(req, "I have a van", at(12))?;
    let carol_offer = s
        .carol
        .k
        .community(id)?
        .offer_help(req, "I can lift", at(12))?;
    s.sync_all(13)?;
    let view = s.alice.k.community(id)?.request(req, at(14))?;
    assert_eq!(view.status, RequestStatus::Open);
    assert_eq!(view.offers.len(), 2);
    s.alice.k.community(id)?.accept_offer(req, offer, at(15))?;
    s.sync_all(16)?;
    for d in [&mut s.alice, &mut s.bob, &mut s.carol] {
        let v = d.k.community(id)?.request(req, at(17))?;
        assert_eq!(v.status, RequestStatus::Matched);
        let statuses: Vec<_> = v.offers.iter().map(|(o, st)| (o.id, *st)).collect();
        assert!(statuses.contains(&(offer, OfferStatus::Accepted)));
        assert!(statuses.contains(&(carol_offer, OfferStatus::Superseded)));
    }
    s.bob
        .k
        .community(id)?
        .confirm_match(req, Some("Glad to help"), at(40))?;
    // Confirming twice changes nothing.
    s.bob.k.community(id)?.confirm_match(req, None, at(41))?;
    s.alice
        .k
        .community(id)?
        .confirm_match(req, Some("Thank you!"), at(50))?;
    s.sync_all(51)?;
    for d in [&mut s.alice, &mut s.bob, &mut s.carol] {
        let v = d.k.community(id)?.request(req, at(52))?;
        assert_eq!(v.status, RequestStatus::Completed);
        let m = v
            .active_match
            .ok_or(Error::InvalidArgument("no match".into()))?;
        assert_eq!(m.status, MatchStatus::Completed);
        assert_eq!(m.completed_at, Some(at(50)));
        assert_eq!(m.responder_confirmed_at, Some(at(40)));
    }
    // The projections answer the lists, on every device.
    for d in [&mut s.alice, &mut s.bob, &mut s.carol] {
        let c = d.k.community(id)?;
        let done = c.list_requests(
            &RequestQuery {
                status: Some(RequestStatus::Completed),
                ..RequestQuery::default()
            },
            at(60),
        )?;
        assert_eq!(done.iter().map(|r| r.id).collect::<Vec<_>>(), vec![req]);
        let found = c.search_requests("sofa", 10, at(60))?;
        assert_eq!(found.len(), 1);
        assert!(c.search_requests("piano", 10, at(60))?.is_empty());
        let dump = c.projection_dump()?;
        c.rebuild_projections()?;
        assert_eq!(c.projection_dump()?, dump);
    }
    Ok(())
}

#[test]
fn cancelled_match_reopens_the_request() -> Result<()> {
    let mut s = Street::new()?;
    let id = s.id;
    let req = s
        .alice
        .k
        .community(id)?
        .post_request(&draft("Groceries", Urgency::Medium), at(10))?;
    s.sync_all(11)?;
    let offer = s
        .bob
        .k
        .community(id)?
        .offer_help(req, "On my way", at(12))?;
    s.sync_all(13)?;
    s.alice.k.community(id)?.accept_offer(req, offer, at(14))?;
    s.sync_all(15)?;
    s.bob
        .k
        .community(id)?
        .cancel_match(req, "car broke down", at(16))?;
    s.sync_all(17)?;
    let v = s.alice.k.community(id)?.request(req, at(18))?;
    assert_eq!(v.status, RequestStatus::Open);
    assert_eq!(v.offers[0].1, OfferStatus::Declined);
    // Carol's offer can now be accepted.
    let carol = s
        .carol
        .k
        .community(id)?
        .offer_help(req, "I'll go", at(19))?;
    s.sync_all(20)?;
    s.alice.k.community(id)?.accept_offer(req, carol, at(21))?;
    let v = s.alice.k.community(id)?.request(req, at(22))?;
    assert_eq!(v.status, RequestStatus::Matched);
    assert_eq!(v.active_match.map(|m| m.offer), Some(carol));
    Ok(())
}

#[test]
fn illegal_steps_are_refused_as_local_calls() -> Result<()> {
    let mut s = Street::new()?;
    let id = s.id;
    let req = s
        .alice
        .k
        .community(id)?
        .post_request(&draft("Fix my router", Urgency::Low), at(10))?;
    s.sync_all(11)?;
    let bob = s.bob.k.community(id)?;
    assert_eq!(
        rejected(bob.edit_request(req, &draft("Mine now", Urgency::Low), at(12))),
        Rejection::NotRequester
    );
    assert_eq!(
        rejected(bob.cancel_request(req, "no", at(12))),
        Rejection::NotRequester
    );
    assert_eq!(
        rejected(bob.hide_request(req, Some("spam"), at(12))),
        Rejection::NotPermitted
    );
    let offer = bob.offer_help(req, "I know routers", at(13))?;
    assert_eq!(
        rejected(bob.offer_help(req, "Me again", at(14))),
        Rejection::IllegalTransition("one pending offer per responder")
    );
    assert_eq!(
        rejected(bob.confirm_match(req, None, at(14))),
        Rejection::IllegalTransition("only a match can be confirmed")
    );
    s.sync_all(15)?;
    let alice = s.alice.k.community(id)?;
    assert_eq!(
        rejected(alice.offer_help(req, "I'll help myself", at(16))),
        Rejection::IllegalTransition("no offer on one's own request")
    );
    alice.accept_offer(req, offer, at(17))?;
    assert_eq!(
        rejected(alice.edit_request(req, &draft("Changed", Urgency::Low), at(18))),
        Rejection::IllegalTransition("only an open request can be edited")
    );
    assert_eq!(
        rejected(alice.decline_offer(req, offer, at(18))),
        Rejection::IllegalTransition("only a pending offer can be declined")
    );
    assert_eq!(
        rejected(alice.renew_request(req, at(18))),
        Rejection::IllegalTransition("only an expired request can be renewed")
    );
    s.sync_all(19)?;
    // Carol is no party to the match.
    assert_eq!(
        rejected(s.carol.k.community(id)?.confirm_match(req, None, at(20))),
        Rejection::NotPermitted
    );
    assert_eq!(
        rejected(s.carol.k.community(id)?.offer_help(req, "late", at(20))),
        Rejection::IllegalTransition("only an open request takes offers")
    );
    // A moderator may hide it; the list then leaves it out.
    let carol_id = s.carol.k.member_id();
    s.alice
        .k
        .community(id)?
        .set_role(carol_id, Role::Moderator, at(21))?;
    s.sync_all(22)?;
    s.carol
        .k
        .community(id)?
        .hide_request(req, Some("off topic"), at(23))?;
    s.sync_all(24)?;
    let listed = s
        .alice
        .k
        .community(id)?
        .list_requests(&RequestQuery::default(), at(25))?;
    assert!(listed.is_empty());
    Ok(())
}

/// A change to a request made on a raw document by `keys`.
fn forge_on(
    s: &mut Street,
    from: &str,
    req: RequestId,
    edit: impl FnOnce(
        &mut automerge::transaction::Transaction<'_>,
    ) -> std::result::Result<(), automerge::AutomergeError>,
) -> Result<Bundle> {
    let id = s.id;
    let device = match from {
        "alice" => &mut s.alice,
        "bob" => &mut s.bob,
        _ => &mut s.carol,
    };
    let keys = Keypair::import_secret(&device.k.export_secret())?;
    let c = device.k.community(id)?;
    let all = c.changes_since(&karmyq_core::Heads::empty())?;
    let heads = c.heads()?.auth;
    let doc_id = DocId::Request(req);
    let mut doc = doc_from(&all, &doc_id)?;
    Ok(bundle_of(
        id,
        vec![forge(id, &doc_id, &mut doc, heads, &keys, edit)?],
    ))
}

#[test]
fn illegal_steps_are_refused_as_forged_changes() -> Result<()> {
    let mut s = Street::new()?;
    let id = s.id;
    let req = s
        .alice
        .k
        .community(id)?
        .post_request(&draft("Walk my dog", Urgency::Medium), at(10))?;
    s.sync_all(11)?;
    let offer = s.bob.k.community(id)?.offer_help(req, "Happy to", at(12))?;
    s.sync_all(13)?;
    let check = |s: &mut Street,
                 from: &str,
                 edit: &dyn Fn(
        &mut automerge::transaction::Transaction<'_>,
    ) -> std::result::Result<(), automerge::AutomergeError>,
                 want: Rejection|
     -> Result<()> {
        let bundle = forge_on(s, from, req, |tx| edit(tx))?;
        let before = s.alice.rows(id, "changes")?;
        let report = s.alice.k.receive(&bundle, at(14))?;
        assert_eq!(report.reasons(), vec![&want], "{from}");
        assert_eq!(s.alice.rows(id, "changes")?, before);
        Ok(())
    };
    // Bob edits Alice's request, or accepts his own offer.
    check(
        &mut s,
        "bob",
        &|tx| tx.put(ROOT, "title", "Bob's now"),
        Rejection::NotRequester,
    )?;
    let accept = offer.to_string();
    check(
        &mut s,
        "bob",
        &|tx| {
            tx.put(ROOT, "accepted", accept.as_str())?;
            tx.put(ROOT, "accepted_at", 1_i64)
        },
        Rejection::NotRequester,
    )?;
    // Carol writes inside Bob's offer.
    let key = format!("offer:{offer}");
    check(
        &mut s,
        "carol",
        &|tx| {
            let (_, obj) = tx
                .get(ROOT, key.as_str())?
                .ok_or(automerge::AutomergeError::InvalidObjId("offer".into()))?;
            tx.put(&obj, "withdrawn_at", 1_i64)
        },
        Rejection::NotResponder,
    )?;
    // Bob makes a second pending offer; Alice offers on her own request.
    let bob_id = s.bob.k.member_id();
    let second = format!("offer:{bob_id}.0102030405060708");
    check(
        &mut s,
        "bob",
        &|tx| {
            let obj = tx.put_object(ROOT, second.as_str(), automerge::ObjType::Map)?;
            tx.put(&obj, "created_at", 1_i64)
        },
        Rejection::IllegalTransition("one pending offer per responder"),
    )?;
    let alice_id = s.alice.k.member_id();
    let own = format!("offer:{alice_id}.0102030405060708");
    check(
        &mut s,
        "alice",
        &|tx| {
            let obj = tx.put_object(ROOT, own.as_str(), automerge::ObjType::Map)?;
            tx.put(&obj, "created_at", 1_i64)
        },
        Rejection::IllegalTransition("no offer on one's own request"),
    )?;
    // Bob confirms a match that does not exist.
    let key = format!("offer:{offer}");
    check(
        &mut s,
        "bob",
        &|tx| {
            let (_, obj) = tx
                .get(ROOT, key.as_str())?
                .ok_or(automerge::AutomergeError::InvalidObjId("offer".into()))?;
            tx.put(&obj, "confirmed_at", 1_i64)
        },
        Rejection::IllegalTransition("not a legal change of this offer"),
    )?;
    Ok(())
}

/// One bundle holding a request's legal steps, a refused step, and a step
/// built on the refused one: a device that judges it whole (its changes
/// applied to the document together before they are judged) keeps exactly
/// what a device given the changes one at a time keeps, and so does a relay.
#[test]
fn a_refused_step_inside_a_bundle_leaves_the_legal_ones() -> Result<()> {
    let mut s = Street::new()?;
    let id = s.id;
    let req = s
        .alice
        .k
        .community(id)?
        .post_request(&draft("Walk my dog", Urgency::Medium), at(10))?;
    s.sync_all(11)?;
    let offer = s.bob.k.community(id)?.offer_help(req, "Happy to", at(12))?;
    // Carol, offline: retitles Alice's request (refused), then offers on
    // top of her own edit (it waits for the refused change forever).
    let keys = Keypair::import_secret(&s.carol.k.export_secret())?;
    let carol = s.carol.k.member_id();
    let c = s.carol.k.community(id)?;
    let all = c.changes_since(&Heads::empty())?;
    let auth = c.heads()?.auth;
    let doc_id = DocId::Request(req);
    let mut doc = doc_from(&all, &doc_id)?;
    let bad = forge(id, &doc_id, &mut doc, auth.clone(), &keys, |tx| {
        tx.put(ROOT, "title", "Carol's now")
    })?;
    let on_top = forge(id, &doc_id, &mut doc, auth, &keys, |tx| {
        let obj = tx.put_object(
            ROOT,
            format!("offer:{carol}.0102030405060708"),
            automerge::ObjType::Map,
        )?;
        tx.put(&obj, "created_at", 1_i64)
    })?;
    let mut bundle = s.bob.k.community(id)?.changes_since(&Heads::empty())?;
    bundle.changes.extend([bad.clone(), on_top.clone()]);

    let mut whole = Device::new()?;
    let report = whole.k.receive(&bundle, at(20))?;
    assert_eq!(report.reasons(), vec![&Rejection::NotRequester]);
    assert_eq!(
        report.pending,
        vec![karmyq_core::Item::Change {
            doc: on_top.envelope.doc.clone(),
            hash: on_top.envelope.change_hash,
        }]
    );
    let mut relay = Device::new_relay()?;
    let prepared = karmyq_core::Prepared::new(&bundle);
    assert_eq!(relay.k.receive_prepared(&bundle, prepared, at(20))?, report);

    let mut apart = Device::new()?;
    let mut ops = bundle.clone();
    ops.changes.clear();
    apart.k.receive(&ops, at(20))?;
    let mut refused = Vec::new();
    for change in &bundle.changes {
        let r = apart
            .k
            .receive(&bundle_of(id, vec![change.clone()]), at(20))?;
        refused.extend(r.rejected.into_iter().map(|(_, reason)| reason));
    }
    assert_eq!(refused, vec![Rejection::NotRequester]);

    let heads = whole.k.community(id)?.heads()?;
    assert_eq!(apart.k.community(id)?.heads()?, heads);
    assert_eq!(relay.k.community(id)?.heads()?, heads);
    assert_eq!(whole.rows(id, "pending_changes")?, 1);
    assert_eq!(apart.rows(id, "pending_changes")?, 1);
    let c = whole.k.community(id)?;
    let view = c.request(req, at(20))?;
    assert_eq!(view.request.draft.title, "Walk my dog");
    assert_eq!(
        view.offers.iter().map(|(o, _)| o.id).collect::<Vec<_>>(),
        vec![offer]
    );
    let dump = c.projection_dump()?;
    c.rebuild_projections()?;
    assert_eq!(c.projection_dump()?, dump);
    assert_eq!(apart.k.community(id)?.projection_dump()?, dump);
    Ok(())
}

#[test]
fn expiry_and_renewal_follow_the_clock() -> Result<()> {
    let mut s = Street::new()?;
    let id = s.id;
    let req = s
        .alice
        .k
        .community(id)?
        .post_request(&draft("Urgent ride", Urgency::Critical), at(10))?;
    s.sync_all(11)?;
    let offer = s
        .bob
        .k
        .community(id)?
        .offer_help(req, "I can drive", at(12))?;
    s.sync_all(13)?;
    let c = s.alice.k.community(id)?;
    // Critical: two days.
    let v = c.request(req, at(10 + 2 * DAY - 1))?;
    assert_eq!(v.status, RequestStatus::Open);
    let v = c.request(req, at(10 + 2 * DAY))?;
    assert_eq!(v.status, RequestStatus::Expired);
    assert_eq!(v.offers[0], (v.offers[0].0.clone(), OfferStatus::Lapsed));
    let expired = RequestQuery {
        status: Some(RequestStatus::Expired),
        ..RequestQuery::default()
    };
    assert_eq!(c.list_requests(&expired, at(10 + 2 * DAY))?.len(), 1);
    assert_eq!(
        rejected(c.accept_offer(req, offer, at(10 + 2 * DAY))),
        Rejection::IllegalTransition("only a pending offer on an open request can be accepted")
    );
    // Three renewals, then no more.
    let mut now = 10 + 2 * DAY;
    for _ in 0..3 {
        c.renew_request(req, at(now))?;
        assert_eq!(c.request(req, at(now))?.status, RequestStatus::Open);
        now += 2 * DAY;
        assert_eq!(c.request(req, at(now))?.status, RequestStatus::Expired);
    }
    assert_eq!(
        rejected(c.renew_request(req, at(now))),
        Rejection::IllegalTransition("a request is renewed at most 3 times")
    );
    // The other devices agree.
    s.sync_all(now)?;
    let v = s.bob.k.community(id)?.request(req, at(now))?;
    assert_eq!((v.status, v.request.renewals), (RequestStatus::Expired, 3));
    Ok(())
}

#[test]
fn many_requests_stay_usable_as_documents_leave_memory() -> Result<()> {
    let mut s = Street::new()?;
    let id = s.id;
    let mut ids = Vec::new();
    for i in 0..300 {
        let d = draft(&format!("Request number {i}"), Urgency::Low);
        ids.push(s.alice.k.community(id)?.post_request(&d, at(10 + i))?);
    }
    s.sync_all(400)?;
    // The first request's document was dropped from memory long ago.
    let offer = s.bob.k.community(id)?.offer_help(ids[0], "Sure", at(401))?;
    s.sync_all(402)?;
    s.alice
        .k
        .community(id)?
        .accept_offer(ids[0], offer, at(403))?;
    let c = s.alice.k.community(id)?;
    assert_eq!(c.request(ids[0], at(404))?.status, RequestStatus::Matched);
    let open = RequestQuery {
        status: Some(RequestStatus::Open),
        limit: 100,
        ..RequestQuery::default()
    };
    assert_eq!(c.list_requests(&open, at(404))?.len(), 100);
    let page4 = RequestQuery {
        offset: 200,
        ..open
    };
    assert_eq!(c.list_requests(&page4, at(404))?.len(), 99);
    assert_eq!(c.search_requests("number 42", 5, at(404))?[0].id, ids[42]);
    Ok(())
}

#[test]
fn extreme_times_in_a_forged_request_are_refused_not_panicked_on() -> Result<()> {
    let mut s = Street::new()?;
    let id = s.id;
    let keys = Keypair::import_secret(&s.bob.k.export_secret())?;
    let req = RequestId::generate(keys.member_id())?;
    let heads = s.bob.k.community(id)?.heads()?.auth;
    let mut doc = automerge::Automerge::new();
    let forged = forge(id, &DocId::Request(req), &mut doc, heads, &keys, |tx| {
        for (k, v) in [
            ("title", "t"),
            ("category", "food"),
            ("urgency", "low"),
            ("kind", "generic"),
        ] {
            tx.put(ROOT, k, v)?;
        }
        tx.put(ROOT, "created_at", i64::MIN)?;
        tx.put(ROOT, "expires_at", i64::MAX)
    })?;
    let report = s.alice.k.receive(&bundle_of(id, vec![forged]), at(20))?;
    assert_eq!(
        report.reasons(),
        vec![&Rejection::InvalidField("expires_at".into())]
    );
    // And the API with an absurd clock gives a typed answer, not a panic.
    let far = karmyq_core::Timestamp::from_millis(i64::MAX);
    let r = s
        .alice
        .k
        .community(id)?
        .post_request(&draft("Far future", Urgency::Low), far);
    // Its expiry cannot lie after its creation: the validator says so.
    assert_eq!(rejected(r), Rejection::InvalidField("expires_at".into()));
    Ok(())
}

#[test]
fn my_requests_offers_and_matches_with_statuses_at_now() -> Result<()> {
    let mut s = Street::new()?;
    let id = s.id;
    let sofa = s
        .alice
        .k
        .community(id)?
        .post_request(&draft("Sofa", Urgency::Medium), at(10))?;
    // Critical: expires after 2 days.
    let boxes = s
        .alice
        .k
        .community(id)?
        .post_request(&draft("Boxes", Urgency::Critical), at(11))?;
    s.sync_all(12)?;
    let bob_sofa = s.bob.k.community(id)?.offer_help(sofa, "Van", at(13))?;
    let bob_boxes = s.bob.k.community(id)?.offer_help(boxes, "Me", at(14))?;
    let carol_sofa = s
        .carol
        .k
        .community(id)?
        .offer_help(sofa, "Me too", at(15))?;
    s.sync_all(16)?;
    s.alice
        .k
        .community(id)?
        .accept_offer(sofa, bob_sofa, at(17))?;
    s.sync_all(18)?;

    let alice = s.alice.k.community(id)?;
    let mine: Vec<_> = alice
        .my_requests(at(20), 10, 0)?
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(mine, vec![boxes, sofa], "newest first");
    assert!(matches!(
        alice.my_requests(at(20), 0, 0),
        Err(Error::InvalidArgument(_))
    ));
    assert!(
        s.bob
            .k
            .community(id)?
            .my_requests(at(20), 10, 0)?
            .is_empty()
    );

    // Bob's offers: accepted on the sofa; pending on the boxes until they
    // expire, then lapsed.
    let offers = |d: &mut Device, now| -> Result<Vec<_>> {
        Ok(d.k
            .community(id)?
            .my_offers(at(now), 10, 0)?
            .iter()
            .map(|o| (o.offer, o.status))
            .collect())
    };
    assert_eq!(
        offers(&mut s.bob, 20)?,
        vec![
            (bob_boxes, OfferStatus::Pending),
            (bob_sofa, OfferStatus::Accepted)
        ]
    );
    assert_eq!(
        offers(&mut s.bob, 11 + 2 * DAY)?[0],
        (bob_boxes, OfferStatus::Lapsed)
    );
    assert_eq!(
        offers(&mut s.carol, 20)?,
        vec![(carol_sofa, OfferStatus::Superseded)]
    );

    // The match, on both sides: active, then unconfirmed 14 days after
    // Bob's lone confirmation.
    s.bob.k.community(id)?.confirm_match(sofa, None, at(30))?;
    s.sync_all(31)?;
    for d in [&mut s.alice, &mut s.bob] {
        let c = d.k.community(id)?;
        let m = c.my_matches(at(40), 10, 0)?;
        assert_eq!(m.len(), 1);
        assert_eq!((m[0].request, m[0].offer), (sofa, bob_sofa));
        assert_eq!(m[0].status, MatchStatus::Active);
        assert_eq!(m[0].responder_confirmed_at, Some(at(30)));
        let later = c.my_matches(at(30 + 14 * DAY), 10, 0)?;
        assert_eq!(later[0].status, MatchStatus::Unconfirmed);
    }
    assert!(
        s.carol
            .k
            .community(id)?
            .my_matches(at(40), 10, 0)?
            .is_empty()
    );
    Ok(())
}

/// A replica that takes a request's whole history at once replays it and
/// makes no Automerge document of it: the heads it records, and a
/// device's projections and figures, are those of Alice, who wrote and
/// took the changes one at a time, and those rebuilt from the documents,
/// concurrent edits and offers included; afterwards the device writes on
/// the request, and the relay takes that change, as usual (the document
/// then read from the stored changes).
#[test]
fn a_request_taken_whole_reads_as_its_document() -> Result<()> {
    let mut s = Street::new()?;
    let id = s.id;
    let sofa = s
        .alice
        .k
        .community(id)?
        .post_request(&draft("Move a sofa", Urgency::High), at(10))?;
    let dog = s
        .alice
        .k
        .community(id)?
        .post_request(&draft("Walk my dog", Urgency::Low), at(10))?;
    s.sync_all(11)?;
    let for_the_dog = s
        .carol
        .k
        .community(id)?
        .offer_help(dog, "Happy to", at(11))?;
    // Offline apart: two offers, and Alice's edit, all concurrent.
    let bobs = s
        .bob
        .k
        .community(id)?
        .offer_help(sofa, "On my way", at(12))?;
    let carols = s
        .carol
        .k
        .community(id)?
        .offer_help(sofa, "Me too", at(12))?;
    s.alice.k.community(id)?.edit_request(
        sofa,
        &draft("Move a sofa and a lamp", Urgency::Medium),
        at(12),
    )?;
    s.sync_all(13)?;
    s.alice.k.community(id)?.accept_offer(sofa, bobs, at(14))?;
    s.sync_all(15)?;
    s.bob
        .k
        .community(id)?
        .confirm_match(sofa, Some("Glad to"), at(16))?;
    s.alice
        .k
        .community(id)?
        .confirm_match(sofa, Some("Thank you"), at(16))?;
    s.sync_all(17)?;
    let all = s.alice.k.community(id)?.changes_since(&Heads::empty())?;

    let mut phone = Device::restored(&s.carol)?;
    let mut relay = Device::new_relay()?;
    for d in [&mut phone, &mut relay] {
        let report = d.k.receive(&all, at(20))?;
        assert!(
            report.rejected.is_empty() && report.pending.is_empty(),
            "{report:?}"
        );
    }
    let heads = s.alice.k.community(id)?.heads()?;
    assert_eq!(phone.k.community(id)?.heads()?, heads);
    assert_eq!(relay.k.community(id)?.heads()?, heads);
    let c = phone.k.community(id)?;
    let dump = c.projection_dump()?;
    assert_eq!(dump, s.alice.k.community(id)?.projection_dump()?);
    // Read again from the documents themselves.
    c.rebuild_projections()?;
    assert_eq!(c.projection_dump()?, dump);
    let bob = s.bob.k.member_id();
    assert_eq!(
        c.karma(&bob, at(20))?,
        s.alice.k.community(id)?.karma(&bob, at(20))?
    );
    let view = c.request(sofa, at(20))?;
    assert_eq!(view.request.draft.title, "Move a sofa and a lamp");
    assert_eq!(view.status, RequestStatus::Completed);

    let status = |offer| {
        view.offers
            .iter()
            .find(|(o, _)| o.id == offer)
            .map(|(_, st)| *st)
    };
    assert_eq!(status(bobs), Some(OfferStatus::Accepted));
    assert_eq!(status(carols), Some(OfferStatus::Superseded));

    // Carol's phone withdraws her offer for the dog; Alice takes it.
    phone
        .k
        .community(id)?
        .withdraw_offer(dog, for_the_dog, at(21))?;
    let news = phone.k.community(id)?.changes_since(&heads)?;
    for d in [&mut s.alice, &mut relay] {
        let taken = d.k.receive(&news, at(22))?;
        assert_eq!(
            (taken.accepted.len(), taken.rejected.len()),
            (1, 0),
            "{taken:?}"
        );
    }
    assert_eq!(
        relay.k.community(id)?.heads()?,
        s.alice.k.community(id)?.heads()?
    );
    let view = s.alice.k.community(id)?.request(dog, at(23))?;
    assert_eq!(view.offers[0].1, OfferStatus::Withdrawn);
    Ok(())
}

/// A catch-up received prepared (its request documents built and read
/// ahead, on another thread, and taken over whole) leaves a device holding
/// exactly what a plain one holds, and writing on them as usual.
#[test]
fn a_prepared_catch_up_holds_what_a_plain_one_holds() -> Result<()> {
    let mut s = Street::new()?;
    let id = s.id;
    let sofa = s
        .alice
        .k
        .community(id)?
        .post_request(&draft("Move a sofa", Urgency::High), at(10))?;
    let dog = s
        .alice
        .k
        .community(id)?
        .post_request(&draft("Walk my dog", Urgency::Low), at(10))?;
    s.sync_all(11)?;
    let offer = s
        .bob
        .k
        .community(id)?
        .offer_help(sofa, "On my way", at(12))?;
    s.carol
        .k
        .community(id)?
        .offer_help(sofa, "Me too", at(12))?;
    let carols = s
        .carol
        .k
        .community(id)?
        .offer_help(dog, "Happy to", at(12))?;
    s.sync_all(13)?;
    s.alice.k.community(id)?.accept_offer(sofa, offer, at(14))?;
    // A step only a moderator may take: Alice (the founder) hides Bob's.
    let spam = s
        .bob
        .k
        .community(id)?
        .post_request(&draft("Buy my stuff", Urgency::Low), at(14))?;
    s.sync_all(15)?;
    s.alice
        .k
        .community(id)?
        .hide_request(spam, Some("an advert"), at(16))?;
    s.sync_all(17)?;
    let all = s.alice.k.community(id)?.changes_since(&Heads::empty())?;

    let mut plain = Device::restored(&s.carol)?;
    let mut ahead = Device::restored(&s.carol)?;
    let report = plain.k.receive(&all, at(20))?;
    assert!(
        report.rejected.is_empty() && report.pending.is_empty(),
        "{report:?}"
    );
    let hidden = plain.k.community(id)?.request(spam, at(20))?;
    assert_eq!(hidden.request.hidden.as_deref(), Some("an advert"));
    let prepared = karmyq_core::Prepared::new(&all);
    assert_eq!(ahead.k.receive_prepared(&all, prepared, at(20))?, report);
    for d in [&mut plain, &mut ahead] {
        // Carol's phone writes to a document it took whole.
        d.k.community(id)?.withdraw_offer(dog, carols, at(21))?;
    }
    // The same phone, the same clock: the same change, byte for byte.
    assert_eq!(
        plain.k.community(id)?.heads()?,
        ahead.k.community(id)?.heads()?
    );
    for req in [sofa, dog, spam] {
        let (pv, av) = (
            plain.k.community(id)?.request(req, at(22))?,
            ahead.k.community(id)?.request(req, at(22))?,
        );
        assert_eq!(pv, av);
    }
    // Alice takes the prepared phone's withdrawal.
    let heads = s.alice.k.community(id)?.heads()?;
    let news = ahead.k.community(id)?.changes_since(&heads)?;
    let taken = s.alice.k.receive(&news, at(23))?;
    assert_eq!(
        (taken.accepted.len(), taken.rejected.len()),
        (1, 0),
        "{taken:?}"
    );
    let view = s.alice.k.community(id)?.request(dog, at(24))?;
    assert_eq!(view.offers[0].1, OfferStatus::Withdrawn);
    Ok(())
}
