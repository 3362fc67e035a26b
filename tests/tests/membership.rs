//! Membership through the API, as devices use it: public joins, invites,
//! admission, roles, removal, leaving, settings; and ops or changes that
//! arrive before what they depend on.

use karmyq_core::{
    Bundle, Error, Heads, Item, Profile, Rejection, Result, Role, Settings, SettingsPatch,
    Visibility,
};
use karmyq_tests::{Device, at, sync};

fn rejected(result: Result<impl std::fmt::Debug>) -> Rejection {
    match result {
        Err(Error::Rejected(r)) => r,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[test]
fn private_community_needs_an_invite_or_an_admission() -> Result<()> {
    let mut alice = Device::new()?;
    let mut bob = Device::new()?;
    let mut carol = Device::new()?;
    let mut dave = Device::new()?;
    let id = alice
        .k
        .create_community("Elm Street", "", Visibility::Private, at(0))?;
    for d in [&mut bob, &mut carol, &mut dave] {
        alice.send_to(d, id, at(1))?;
    }
    assert_eq!(
        rejected(bob.k.community(id)?.join(at(2))),
        Rejection::Private
    );

    // A one-use invite: Bob joins, Carol's later use of the same one fails.
    let invite = alice.k.community(id)?.create_invite(at(60), 1, at(3))?;
    alice.send_to(&mut bob, id, at(4))?;
    bob.k.join_with_invite(&invite.to_link(), at(5))?;
    sync(&mut alice, &mut bob, id, at(6))?;
    alice.send_to(&mut carol, id, at(7))?;
    assert_eq!(
        rejected(carol.k.join_with_invite(&invite.to_link(), at(8))),
        Rejection::InviteInvalid("used up")
    );

    // Expired and revoked invites.
    let short = alice.k.community(id)?.create_invite(at(10), 5, at(9))?;
    let revoked = alice.k.community(id)?.create_invite(at(600), 5, at(9))?;
    alice.k.community(id)?.revoke_invite(revoked.key(), at(9))?;
    alice.send_to(&mut carol, id, at(10))?;
    assert_eq!(
        rejected(carol.k.join_with_invite(&short.to_link(), at(11))),
        Rejection::InviteInvalid("expired")
    );
    assert_eq!(
        rejected(carol.k.join_with_invite(&revoked.to_link(), at(11))),
        Rejection::InviteInvalid("revoked")
    );

    // Admission by an admin needs nothing from Dave.
    let dave_id = dave.k.member_id();
    alice
        .k
        .community(id)?
        .admit(dave_id, Role::Member, at(12))?;
    alice.send_to(&mut dave, id, at(13))?;
    assert_eq!(dave.k.community(id)?.my_role(), Some(Role::Member));
    dave.k.community(id)?.set_profile(
        &Profile {
            name: "Dave".into(),
            ..Profile::default()
        },
        at(14),
    )?;
    dave.send_to(&mut alice, id, at(15))?;
    let names: Vec<_> = alice
        .k
        .community(id)?
        .members()?
        .into_iter()
        .map(|m| (m.role, m.profile.map(|p| p.name)))
        .collect();
    assert_eq!(
        names,
        vec![
            (Role::Admin, None),
            (Role::Member, None),
            (Role::Member, Some("Dave".into()))
        ]
    );
    Ok(())
}

#[test]
fn roles_removal_leaving_and_settings() -> Result<()> {
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
    let (bob_id, carol_id) = (bob.k.member_id(), carol.k.member_id());
    // A member cannot set roles; a moderator may remove members but not admins.
    sync(&mut alice, &mut bob, id, at(4))?;
    assert_eq!(
        rejected(bob.k.community(id)?.set_role(carol_id, Role::Admin, at(5))),
        Rejection::NotPermitted
    );
    alice
        .k
        .community(id)?
        .set_role(bob_id, Role::Moderator, at(6))?;
    sync(&mut alice, &mut bob, id, at(7))?;
    let alice_id = alice.k.member_id();
    assert_eq!(
        rejected(bob.k.community(id)?.remove(alice_id, "coup", at(8))),
        Rejection::NotPermitted
    );
    bob.k.community(id)?.remove(carol_id, "spam", at(9))?;
    sync(&mut alice, &mut bob, id, at(10))?;
    assert_eq!(alice.k.community(id)?.members()?.len(), 2);
    // Carol learns it and can no longer write.
    alice.send_to(&mut carol, id, at(11))?;
    assert_eq!(carol.k.community(id)?.my_role(), None);
    // Settings: only admins, and within range.
    let bad = Settings {
        member_limit: 1,
        ..Settings::default()
    };
    assert_eq!(
        rejected(alice.k.community(id)?.update_settings(
            SettingsPatch {
                settings: Some(bad),
                ..SettingsPatch::default()
            },
            at(12)
        )),
        Rejection::InvalidSettings("member_limit")
    );
    alice.k.community(id)?.update_settings(
        SettingsPatch {
            name: Some("Elm & Oak".into()),
            visibility: Some(Visibility::Private),
            ..SettingsPatch::default()
        },
        at(13),
    )?;
    sync(&mut alice, &mut bob, id, at(14))?;
    let info = bob.k.community(id)?.info()?;
    assert_eq!(
        (info.name.as_str(), info.visibility),
        ("Elm & Oak", Visibility::Private)
    );
    assert_eq!(bob.k.communities()?[0].name, "Elm & Oak");
    // Bob leaves; he is gone everywhere once synced.
    bob.k.community(id)?.leave(at(15))?;
    sync(&mut alice, &mut bob, id, at(16))?;
    let ids: Vec<_> = alice
        .k
        .community(id)?
        .members()?
        .into_iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(ids, vec![alice_id]);
    Ok(())
}

#[test]
fn ops_and_changes_wait_for_what_they_depend_on() -> Result<()> {
    let mut alice = Device::new()?;
    let mut bob = Device::new()?;
    let id = alice
        .k
        .create_community("Elm Street", "", Visibility::Public, at(0))?;
    alice.send_to(&mut bob, id, at(1))?;
    let base = bob.k.community(id)?.heads()?;
    // Alice: an op, then a second op on top; two norm edits, the second on the first.
    let invite = alice.k.community(id)?.create_invite(at(100), 1, at(2))?;
    alice.k.community(id)?.revoke_invite(invite.key(), at(3))?;
    let norm = alice
        .k
        .community(id)?
        .add_norm("Be kind", "", "conduct", at(4))?;
    let mut n = alice.k.community(id)?.norms()?.remove(0);
    n.title = "Be very kind".into();
    alice.k.community(id)?.update_norm(&n, at(5))?;
    let all = alice.k.community(id)?.changes_since(&base)?;
    assert_eq!((all.ops.len(), all.changes.len()), (2, 2));
    // The later op and the later change first: both wait.
    let mut late = Bundle::new(id);
    late.ops.push(all.ops[1].clone());
    late.changes.push(all.changes[1].clone());
    let report = bob.k.receive(&late, at(6))?;
    assert!(report.accepted.is_empty() && report.rejected.is_empty());
    assert_eq!(report.pending.len(), 2);
    assert_eq!(bob.rows(id, "auth_pending")?, 1);
    assert_eq!(bob.rows(id, "pending_changes")?, 1);
    // They survive a restart while waiting.
    bob.reopen()?;
    let mut early = Bundle::new(id);
    early.ops.push(all.ops[0].clone());
    early.changes.push(all.changes[0].clone());
    let report = bob.k.receive(&early, at(7))?;
    assert_eq!(report.accepted.len(), 4, "{report:?}");
    assert!(
        report
            .accepted
            .iter()
            .any(|i| matches!(i, Item::Op(Some(_))))
    );
    assert_eq!(bob.rows(id, "auth_pending")?, 0);
    assert_eq!(bob.rows(id, "pending_changes")?, 0);
    let c = bob.k.community(id)?;
    assert_eq!(c.norms()?[0].id, norm);
    assert_eq!(c.norms()?[0].title, "Be very kind");
    assert!(
        c.authority()
            .invites
            .get(&invite.key())
            .is_some_and(|i| i.revoked)
    );
    assert_eq!(c.heads()?, alice.k.community(id)?.heads()?);
    // Nothing more to send either way.
    let none = alice
        .k
        .community(id)?
        .changes_since(&bob.k.community(id)?.heads()?)?;
    assert!(none.is_empty());
    assert_ne!(base, Heads::empty());
    Ok(())
}
