//! Reports: private to moderators and their reporter, resolved by
//! moderators, an upheld one a trust penalty.

use karmyq_core::{
    Category, CommunityId, Error, NotificationKind, Rejection, ReportCategory, ReportTarget,
    RequestDraft, RequestKind, Resolution, Result, Role, Urgency, Visibility,
};
use karmyq_tests::{Device, at, sync};

struct Street {
    alice: Device,
    bob: Device,
    carol: Device,
    moe: Device,
    id: CommunityId,
}

fn street() -> Result<Street> {
    let (mut alice, mut bob, mut carol, mut moe) = (
        Device::new()?,
        Device::new()?,
        Device::new()?,
        Device::new()?,
    );
    let id = alice
        .k
        .create_community("Elm", "", Visibility::Public, at(0))?;
    for d in [&mut bob, &mut carol, &mut moe] {
        alice.send_to(d, id, at(1))?;
        d.k.community(id)?.join(at(2))?;
        d.send_to(&mut alice, id, at(3))?;
    }
    let moe_id = moe.k.member_id();
    alice
        .k
        .community(id)?
        .set_role(moe_id, Role::Moderator, at(4))?;
    for d in [&mut bob, &mut carol, &mut moe] {
        sync(&mut alice, d, id, at(5))?;
    }
    Ok(Street {
        alice,
        bob,
        carol,
        moe,
        id,
    })
}

#[test]
fn reports_reach_moderators_only_and_upheld_ones_cost_trust() -> Result<()> {
    let mut s = street()?;
    let id = s.id;
    let req = s.carol.k.community(id)?.post_request(
        &RequestDraft {
            title: "Buy my stuff".into(),
            description: "cheap watches".into(),
            category: Category::Other,
            urgency: Urgency::Low,
            kind: RequestKind::Generic,
            location: None,
            when: None,
        },
        at(10),
    )?;
    sync(&mut s.carol, &mut s.bob, id, at(11))?;
    let report = s.bob.k.community(id)?.file_report(
        ReportTarget::Request(req),
        ReportCategory::Spam,
        "selling, not asking",
        at(12),
    )?;
    // Bob shares with everyone; only the moderator receives the report.
    for d in [&mut s.alice, &mut s.carol, &mut s.moe] {
        sync(&mut s.bob, d, id, at(13))?;
    }
    assert_eq!(s.moe.rows(id, "reports")?, 1);
    assert_eq!(s.alice.rows(id, "reports")?, 1, "an admin moderates too");
    assert_eq!(s.carol.rows(id, "reports")?, 0, "the reported member");
    // Not even the report's document reached her.
    let conn = rusqlite::Connection::open(s.carol.file(id))?;
    let docs: i64 = conn.query_row(
        "SELECT count(*) FROM changes WHERE doc_id LIKE 'report/%'",
        [],
        |r| r.get(0),
    )?;
    assert_eq!(docs, 0);
    let seen = s.moe.k.community(id)?.reports(true)?;
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].target.member(), s.carol.k.member_id());
    assert!(
        s.moe
            .k
            .notifications(false, 10, 0)?
            .iter()
            .any(|n| n.kind == NotificationKind::ReportFiled)
    );
    // Bob sees his own report; a plain member may not resolve it.
    assert_eq!(s.bob.k.community(id)?.reports(false)?.len(), 1);
    let refused = s
        .bob
        .k
        .community(id)?
        .resolve_report(report, Resolution::Dismissed, at(14));
    assert!(
        matches!(refused, Err(Error::Rejected(Rejection::NotPermitted))),
        "{refused:?}"
    );
    // Upheld: Carol, a newcomer, drops to trust 0.
    s.moe
        .k
        .community(id)?
        .resolve_report(report, Resolution::Upheld, at(15))?;
    sync(&mut s.moe, &mut s.bob, id, at(16))?;
    let carol_id = s.carol.k.member_id();
    let trust = s.moe.k.community(id)?.trust(&carol_id, at(16))?;
    assert_eq!(trust.score, 0);
    assert!(trust.penalty > 19.9);
    assert!(s.moe.k.community(id)?.reports(true)?.is_empty());
    assert_eq!(
        s.bob.k.community(id)?.reports(false)?[0]
            .resolution
            .map(|r| r.0),
        Some(Resolution::Upheld)
    );
    Ok(())
}
