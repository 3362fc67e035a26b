//! A walkthrough: three simulated devices found and run a community with
//! no network at all, exchanging bundles: membership, norms, then a help
//! request through to karma and notifications, printing what each sees.
//!
//! `cargo run -p karmyq-tests --bin karmyq-sim`

use karmyq_core::{
    Category, Profile, RequestDraft, RequestKind, Result, Role, Urgency, Visibility,
};
use karmyq_tests::{Device, at, sync};

fn profile(name: &str, bio: &str, skills: &[&str]) -> Profile {
    Profile {
        name: name.into(),
        bio: bio.into(),
        location: Some("u0yjj".into()),
        availability: "evenings".into(),
        skills: skills.iter().map(|s| (*s).to_owned()).collect(),
    }
}

fn show(who: &str, d: &mut Device, id: karmyq_core::CommunityId) -> Result<()> {
    let c = d.k.community(id)?;
    let info = c.info()?;
    println!(
        "  {who} sees \"{}\" ({:?}, {} members): {}",
        info.name, info.visibility, info.member_count, info.description
    );
    for m in c.members()? {
        let name = m
            .profile
            .map(|p| format!("{} [{}]", p.name, p.skills.join(", ")));
        println!(
            "    {:<9} {} {}",
            m.role.as_str(),
            m.id.fmt_short(),
            name.unwrap_or_else(|| "(no profile)".into())
        );
    }
    for n in c.norms()? {
        println!("    norm: {} ({}): {}", n.title, n.category, n.description);
    }
    Ok(())
}

fn main() -> Result<()> {
    let mut alice = Device::new()?;
    let mut bob = Device::new()?;
    let mut carol = Device::new()?;

    println!("1. Alice founds a private community and writes its norms.");
    let id = alice.k.create_community(
        "Elm Street",
        "Neighbours helping neighbours",
        Visibility::Private,
        at(0),
    )?;
    let a = alice.k.community(id)?;
    a.set_profile(&profile("Alice", "Founder", &["driving"]), at(1))?;
    a.add_norm("Be kind", "Assume good faith", "conduct", at(2))?;
    let invite_bob = a.create_invite(at(60 * 24 * 7), 1, at(3))?;
    let invite_carol = a.create_invite(at(60 * 24 * 7), 1, at(3))?;

    println!("2. Bob and Carol get the community and join with their invites, offline.");
    for (d, link) in [(&mut bob, &invite_bob), (&mut carol, &invite_carol)] {
        alice.send_to(d, id, at(4))?;
        d.k.join_with_invite(&link.to_link(), at(5))?;
    }
    bob.k
        .community(id)?
        .set_profile(&profile("Bob", "Has a van", &["moving"]), at(6))?;
    carol
        .k
        .community(id)?
        .set_profile(&profile("Carol", "Knows computers", &["tech"]), at(6))?;

    println!("3. They meet and exchange bundles; Alice makes Bob a moderator.");
    sync(&mut alice, &mut bob, id, at(7))?;
    sync(&mut alice, &mut carol, id, at(7))?;
    let bob_id = bob.k.member_id();
    alice
        .k
        .community(id)?
        .set_role(bob_id, Role::Moderator, at(8))?;
    sync(&mut alice, &mut bob, id, at(9))?;
    bob.k
        .community(id)?
        .add_norm("Confirm help", "Both sides confirm", "karma", at(10))?;

    println!("4. Carol, a plain member, tries to add a norm:");
    let refused = carol
        .k
        .community(id)?
        .add_norm("Mine", "", "x", at(11))
        .err();
    println!(
        "   Carol's add_norm -> {}",
        refused.map_or("ok".into(), |e| e.to_string())
    );

    println!("5. Everyone syncs with everyone.");
    for _ in 0..2 {
        sync(&mut alice, &mut bob, id, at(12))?;
        sync(&mut bob, &mut carol, id, at(12))?;
        sync(&mut alice, &mut carol, id, at(12))?;
    }
    for (who, d) in [
        ("Alice", &mut alice),
        ("Bob", &mut bob),
        ("Carol", &mut carol),
    ] {
        show(who, d, id)?;
    }

    println!("6. Carol asks for help with her laptop; Bob offers; Carol accepts.");
    let draft = RequestDraft {
        title: "Laptop will not start".into(),
        description: "It beeps three times".into(),
        category: Category::Tech,
        urgency: Urgency::High,
        kind: RequestKind::Service,
        location: Some("u0yjj".into()),
        when: None,
    };
    let req = carol.k.community(id)?.post_request(&draft, at(20))?;
    let carol_id = carol.k.member_id();
    for s in carol.k.community(id)?.suggested_helpers(req, at(20))? {
        println!(
            "   suggested helper {} scores {:.0}",
            s.member.fmt_short(),
            s.score.total
        );
    }
    sync(&mut carol, &mut bob, id, at(21))?;
    let offer = bob
        .k
        .community(id)?
        .offer_help(req, "I fix laptops", at(22))?;
    sync(&mut carol, &mut bob, id, at(23))?;
    carol.k.community(id)?.accept_offer(req, offer, at(24))?;
    sync(&mut carol, &mut bob, id, at(25))?;

    println!("7. An hour later both confirm the help happened.");
    bob.k
        .community(id)?
        .confirm_match(req, Some("Happy to help"), at(84))?;
    sync(&mut carol, &mut bob, id, at(85))?;
    carol
        .k
        .community(id)?
        .confirm_match(req, Some("Thank you, Bob!"), at(90))?;
    for _ in 0..2 {
        sync(&mut carol, &mut bob, id, at(91))?;
        sync(&mut alice, &mut bob, id, at(91))?;
    }
    let half_life = at(90 + 262_980);
    for (who, d) in [
        ("Alice", &mut alice),
        ("Bob", &mut bob),
        ("Carol", &mut carol),
    ] {
        let c = d.k.community(id)?;
        println!(
            "   {who} sees the request {}: Bob's karma {:.1} (in 182.625 days {:.2}), Carol's {:.1}, Bob's trust {}",
            c.request(req, at(92))?.status.as_str(),
            c.karma(&bob_id, at(92))?,
            c.karma(&bob_id, half_life)?,
            c.karma(&carol_id, at(92))?,
            c.trust(&bob_id, at(92))?.score,
        );
    }
    for (who, d) in [("Bob", &bob), ("Carol", &carol)] {
        let kinds: Vec<&str> =
            d.k.notifications(false, 20, 0)?
                .iter()
                .map(|n| n.kind.as_str())
                .collect();
        println!("   {who}'s notifications: {}", kinds.join(", "));
    }
    Ok(())
}
