//! Norms proposed by members, active once approvals reach half of the
//! members (rounded up; the proposer counts), as every device sees it.

use automerge::ROOT;
use automerge::transaction::Transactable;
use karmyq_core::{
    CommunityId, DocId, Error, Keypair, NotificationKind, Rejection, Result, Visibility,
};
use karmyq_tests::{Device, at, bundle_of, doc_from, forge, sync};

fn four() -> Result<(Vec<Device>, CommunityId)> {
    let mut d = (0..4).map(|_| Device::new()).collect::<Result<Vec<_>>>()?;
    let id = d[0]
        .k
        .create_community("Elm", "", Visibility::Public, at(0))?;
    for i in 1..4 {
        let (a, b) = d.split_at_mut(i);
        a[0].send_to(&mut b[0], id, at(1))?;
        b[0].k.community(id)?.join(at(2))?;
        b[0].send_to(&mut a[0], id, at(3))?;
    }
    for i in 1..4 {
        let (a, b) = d.split_at_mut(i);
        a[0].send_to(&mut b[0], id, at(4))?;
    }
    Ok((d, id))
}

fn sync_all(d: &mut [Device], id: CommunityId, now: karmyq_core::Timestamp) -> Result<()> {
    for _ in 0..2 {
        for i in 1..d.len() {
            let (a, b) = d.split_at_mut(i);
            sync(&mut a[0], &mut b[0], id, now)?;
        }
    }
    Ok(())
}

#[test]
fn a_proposal_becomes_a_norm_at_half_the_members() -> Result<()> {
    let (mut d, id) = four()?;
    // A plain member may propose, not write norms directly.
    let p = d[1].k.community(id)?.propose_norm(
        "Quiet after ten",
        "No drilling after 22:00",
        "noise",
        at(10),
    )?;
    sync_all(&mut d, id, at(11))?;
    for dev in d.iter_mut() {
        let c = dev.k.community(id)?;
        let list = c.proposals()?;
        assert_eq!(
            (list[0].approvals, list[0].needed, list[0].active),
            (1, 2, false)
        );
        assert!(c.norms()?.is_empty());
    }
    // Everyone but the proposer hears of it.
    for (i, dev) in d.iter().enumerate() {
        let heard = dev
            .k
            .notifications(false, 20, 0)?
            .iter()
            .any(|n| n.kind == NotificationKind::NormProposed);
        assert_eq!(heard, i != 1, "device {i}");
    }
    // One more approval: half of four.
    d[2].k.community(id)?.approve_proposal(p, true, at(12))?;
    sync_all(&mut d, id, at(13))?;
    for dev in d.iter_mut() {
        let norms = dev.k.community(id)?.norms()?;
        assert_eq!(norms.len(), 1);
        assert_eq!(norms[0].title, "Quiet after ten");
    }
    // A fifth member raises the bar to three: it is a proposal again.
    let mut eve = Device::new()?;
    d[0].send_to(&mut eve, id, at(14))?;
    eve.k.community(id)?.join(at(15))?;
    eve.send_to(&mut d[0], id, at(16))?;
    let c = d[0].k.community(id)?;
    assert!(c.norms()?.is_empty());
    assert_eq!(c.proposals()?[0].needed, 3);
    // Taking an approval back counts too.
    d[2].k.community(id)?.approve_proposal(p, false, at(17))?;
    assert_eq!(d[2].k.community(id)?.proposals()?[0].approvals, 1);
    Ok(())
}

#[test]
fn nobody_writes_or_approves_for_someone_else() -> Result<()> {
    let (mut d, id) = four()?;
    let p = d[1]
        .k
        .community(id)?
        .propose_norm("Share tools", "", "lending", at(10))?;
    sync_all(&mut d, id, at(11))?;
    let carol = Keypair::import_secret(&d[2].k.export_secret())?;
    let heads = d[2].k.community(id)?.heads()?.auth;
    let all = d[2]
        .k
        .community(id)?
        .changes_since(&karmyq_core::Heads::empty())?;
    let dave = d[3].k.member_id();
    let title = format!("proposal:{p}/title");
    let approval = format!("approve:{p}/{dave}");
    let forged = [
        forge(
            id,
            &DocId::Community,
            &mut doc_from(&all, &DocId::Community)?,
            heads.clone(),
            &carol,
            |tx| tx.put(ROOT, title.as_str(), "Carol's now"),
        )?,
        forge(
            id,
            &DocId::Community,
            &mut doc_from(&all, &DocId::Community)?,
            heads,
            &carol,
            |tx| tx.put(ROOT, approval.as_str(), true),
        )?,
    ];
    for change in forged {
        let report = d[0].k.receive(&bundle_of(id, vec![change]), at(12))?;
        assert_eq!(report.reasons(), vec![&Rejection::ForeignEntry]);
    }
    // Members still may not write norms directly.
    let direct = d[2].k.community(id)?.add_norm("Mine", "", "x", at(13));
    assert!(matches!(
        direct,
        Err(Error::Rejected(Rejection::NotPermitted))
    ));
    Ok(())
}
