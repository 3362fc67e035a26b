//! Two and three devices editing profiles, norms, the description and roles
//! while offline, then exchanging bundles in random orders and random
//! splits: they end with identical members, roles, profiles and norms, and
//! their projections equal a rebuild from the documents. A relay's replica
//! (`Karmyq::open_relay`, what the sync server holds) shadows the first
//! device: it gets every bundle the device gets and gives the same verdicts,
//! and once opened as a device its projections equal the device's.

use karmyq_core::{
    Bundle, Category, CommunityId, Error, Heads, Norm, OfferStatus, Profile, RequestDraft,
    RequestKind, RequestQuery, Result, Role, Urgency, Visibility,
};
use karmyq_tests::{Device, at};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Action {
    Profile {
        dev: usize,
        variant: u8,
    },
    Norm {
        dev: usize,
        slot: u8,
        variant: u8,
    },
    RemoveNorm {
        dev: usize,
        slot: u8,
    },
    Describe {
        dev: usize,
        variant: u8,
    },
    SetRole {
        dev: usize,
        target: usize,
        role: u8,
    },
    Remove {
        dev: usize,
        target: usize,
    },
    Send {
        from: usize,
        to: usize,
        seed: u64,
        chunks: u8,
    },
    Post {
        dev: usize,
        urgency: u8,
    },
    Offer {
        dev: usize,
        pick: u8,
    },
    Accept {
        dev: usize,
        pick: u8,
    },
    Confirm {
        dev: usize,
        pick: u8,
    },
    CancelMatch {
        dev: usize,
        pick: u8,
    },
}

fn action(devices: usize) -> impl Strategy<Value = Action> {
    let d = 0..devices;
    prop_oneof![
        3 => (d.clone(), any::<u8>()).prop_map(|(dev, variant)| Action::Profile { dev, variant }),
        2 => (d.clone(), 0..3u8, any::<u8>())
            .prop_map(|(dev, slot, variant)| Action::Norm { dev, slot, variant }),
        1 => (d.clone(), 0..3u8).prop_map(|(dev, slot)| Action::RemoveNorm { dev, slot }),
        1 => (d.clone(), any::<u8>()).prop_map(|(dev, variant)| Action::Describe { dev, variant }),
        2 => (d.clone(), d.clone(), 0..3u8)
            .prop_map(|(dev, target, role)| Action::SetRole { dev, target, role }),
        1 => (d.clone(), d.clone()).prop_map(|(dev, target)| Action::Remove { dev, target }),
        4 => (d.clone(), d.clone(), any::<u64>(), 1..4u8)
            .prop_map(|(from, to, seed, chunks)| Action::Send { from, to, seed, chunks }),
        2 => (d.clone(), 0..4u8).prop_map(|(dev, urgency)| Action::Post { dev, urgency }),
        2 => (d.clone(), any::<u8>()).prop_map(|(dev, pick)| Action::Offer { dev, pick }),
        2 => (d.clone(), any::<u8>()).prop_map(|(dev, pick)| Action::Accept { dev, pick }),
        2 => (d.clone(), any::<u8>()).prop_map(|(dev, pick)| Action::Confirm { dev, pick }),
        1 => (d, any::<u8>()).prop_map(|(dev, pick)| Action::CancelMatch { dev, pick }),
    ]
}

/// Two distinct devices of a slice, mutably.
fn pair(devices: &mut [Device], a: usize, b: usize) -> (&mut Device, &mut Device) {
    if a < b {
        let (l, r) = devices.split_at_mut(b);
        (&mut l[a], &mut r[0])
    } else {
        let (l, r) = devices.split_at_mut(a);
        (&mut r[0], &mut l[b])
    }
}

/// A deterministic shuffle driven by the case's seed (xorshift64).
fn shuffle<T>(items: &mut [T], seed: &mut u64) {
    for i in (1..items.len()).rev() {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        let j = usize::try_from(*seed % (i as u64 + 1)).unwrap_or(0);
        items.swap(i, j);
    }
}

/// Gives the relay what device 0 holds and it lacks (device 0's own
/// writes since the last time, as the device would upload them).
fn shadow(devices: &mut [Device], relay: &mut Device, id: CommunityId) -> Result<()> {
    let heads = match relay.k.community(id) {
        Ok(c) => c.heads()?,
        Err(_) => Heads::empty(),
    };
    let me = devices[0].k.member_id();
    let bundle = devices[0].k.community(id)?.changes_since_for(&heads, &me)?;
    let report = relay.k.receive(&bundle, at(100))?;
    assert!(report.rejected.is_empty(), "relay refused: {report:?}");
    assert_eq!(
        relay.k.community(id)?.heads()?,
        devices[0].k.community(id)?.heads()?,
        "the relay holds what device 0 holds"
    );
    Ok(())
}

/// Delivers what `from` holds that `to` lacks, shuffled and cut in chunks;
/// what device 0 gets, the relay gets too.
fn send(
    devices: &mut [Device],
    relay: &mut Device,
    id: CommunityId,
    from: usize,
    to: usize,
    seed: u64,
    chunks: u8,
) -> Result<()> {
    if to == 0 {
        shadow(devices, relay, id)?;
    }
    let (a, b) = pair(devices, from, to);
    let bundle = a.bundle_for(b, id)?;
    let mut seed = seed | 1;
    let mut ops = bundle.ops.clone();
    let mut changes = bundle.changes.clone();
    shuffle(&mut ops, &mut seed);
    shuffle(&mut changes, &mut seed);
    let chunks = usize::from(chunks.max(1));
    for k in 0..chunks {
        let mut part = Bundle::new(id);
        part.ops = ops.iter().skip(k).step_by(chunks).cloned().collect();
        part.changes = changes.iter().skip(k).step_by(chunks).cloned().collect();
        let report = b.k.receive(&part, at(100))?;
        assert!(
            report.rejected.is_empty(),
            "honest changes refused: {report:?}"
        );
        if to == 0 {
            // As the server takes it: decoded and signatures checked ahead,
            // in two uploads whose preparations it merges (as it does when
            // several uploads wait for one transaction). One half is
            // prepared as for a device (which checks other signatures, on
            // several threads): a preparation changes no verdict.
            let half = part.changes.len() / 2;
            let first = Bundle {
                changes: part.changes[..half].to_vec(),
                ..Bundle::new(id)
            };
            let second = Bundle {
                changes: part.changes[half..].to_vec(),
                ..Bundle::new(id)
            };
            let mut prepared = karmyq_core::Prepared::new(&first);
            prepared.absorb(karmyq_core::Prepared::for_relay(&second, 1));
            let relayed = relay.k.receive_prepared(&part, prepared, at(100))?;
            assert_eq!(relayed, report, "the relay differs");
        }
    }
    Ok(())
}

/// Refusals by the rules are expected (a member may not edit norms...);
/// anything else is a failure.
fn allowed(result: Result<impl Sized>) -> Result<()> {
    match result {
        Ok(_) | Err(Error::Rejected(_)) | Err(Error::InvalidArgument(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

fn run(n: usize, actions: &[Action]) -> Result<()> {
    let mut devices = (0..n).map(|_| Device::new()).collect::<Result<Vec<_>>>()?;
    let id =
        devices[0]
            .k
            .create_community("Elm Street", "Neighbours", Visibility::Public, at(0))?;
    for i in 1..n {
        let (founder, d) = pair(&mut devices, 0, i);
        founder.send_to(d, id, at(1))?;
        d.k.community(id)?.join(at(2))?;
        d.send_to(founder, id, at(3))?;
    }
    for i in 1..n {
        let (founder, d) = pair(&mut devices, 0, i);
        founder.send_to(d, id, at(4))?;
    }
    let ids: Vec<_> = devices.iter().map(|d| d.k.member_id()).collect();
    let mut relay = Device::new_relay()?;
    for (step, a) in actions.iter().enumerate() {
        let now = at(10 + i64::try_from(step).unwrap_or(0));
        match *a {
            Action::Profile { dev, variant } => {
                let p = Profile {
                    name: format!("Member {dev}"),
                    bio: format!("bio {variant}"),
                    location: (variant % 2 == 0).then(|| "u0yjj".to_owned()),
                    availability: ["mornings", "evenings"][usize::from(variant % 2)].into(),
                    skills: ["cooking", "driving", "tech"]
                        .iter()
                        .take(usize::from(variant % 4))
                        .map(|s| (*s).to_owned())
                        .collect(),
                };
                allowed(devices[dev].k.community(id)?.set_profile(&p, now))?;
            }
            Action::Norm { dev, slot, variant } => {
                let norm = Norm {
                    id: format!("n{slot}"),
                    title: format!("Norm {slot}.{variant}"),
                    description: format!("text {variant}"),
                    category: "conduct".into(),
                };
                allowed(devices[dev].k.community(id)?.update_norm(&norm, now))?;
            }
            Action::RemoveNorm { dev, slot } => {
                allowed(
                    devices[dev]
                        .k
                        .community(id)?
                        .remove_norm(&format!("n{slot}"), now),
                )?;
            }
            Action::Describe { dev, variant } => {
                let text = format!("Description {variant}");
                allowed(devices[dev].k.community(id)?.set_description(&text, now))?;
            }
            Action::SetRole { dev, target, role } => {
                let role = [Role::Member, Role::Moderator, Role::Admin][usize::from(role)];
                allowed(
                    devices[dev]
                        .k
                        .community(id)?
                        .set_role(ids[target], role, now),
                )?;
            }
            Action::Remove { dev, target } => {
                allowed(
                    devices[dev]
                        .k
                        .community(id)?
                        .remove(ids[target], "test", now),
                )?;
            }
            Action::Send {
                from,
                to,
                seed,
                chunks,
            } => {
                if from != to {
                    send(&mut devices, &mut relay, id, from, to, seed, chunks)?;
                }
            }
            Action::Post { dev, urgency } => {
                let draft = RequestDraft {
                    title: format!("Request {step}"),
                    description: "help".into(),
                    category: Category::Errands,
                    urgency: Urgency::ALL[usize::from(urgency % 4)],
                    kind: RequestKind::Generic,
                    location: None,
                    when: None,
                };
                allowed(devices[dev].k.community(id)?.post_request(&draft, now))?;
            }
            Action::Offer { dev, pick }
            | Action::Accept { dev, pick }
            | Action::Confirm { dev, pick }
            | Action::CancelMatch { dev, pick } => {
                let c = devices[dev].k.community(id)?;
                let known = c.list_requests(
                    &RequestQuery {
                        limit: 100,
                        ..RequestQuery::default()
                    },
                    now,
                )?;
                let Some(req) = known
                    .get(usize::from(pick) % known.len().max(1))
                    .map(|r| r.id)
                else {
                    continue;
                };
                match *a {
                    Action::Offer { .. } => allowed(c.offer_help(req, "I can", now))?,
                    Action::Accept { .. } => {
                        let view = c.request(req, now)?;
                        if let Some((o, _)) =
                            view.offers.iter().find(|(_, s)| *s == OfferStatus::Pending)
                        {
                            allowed(c.accept_offer(req, o.id, now))?;
                        }
                    }
                    Action::Confirm { .. } => allowed(c.confirm_match(req, Some("thanks"), now))?,
                    _ => allowed(c.cancel_match(req, "changed plans", now))?,
                }
            }
        }
    }
    // Everyone talks to everyone until nothing moves.
    for _ in 0..2 {
        for i in 0..n {
            for j in 0..n {
                if i != j {
                    let (a, b) = pair(&mut devices, i, j);
                    let report = a.send_to(b, id, at(500))?;
                    assert!(report.rejected.is_empty(), "{report:?}");
                }
            }
        }
    }
    let mut views = Vec::new();
    for d in &mut devices {
        assert_eq!(d.rows(id, "pending_changes")?, 0, "changes still pending");
        let c = d.k.community(id)?;
        let dump = c.projection_dump()?;
        let view = (
            c.members()?,
            c.norms()?,
            c.info()?,
            dump.clone(),
            c.heads()?,
        );
        // Projections equal a full rebuild from the documents.
        c.rebuild_projections()?;
        assert_eq!(
            c.projection_dump()?,
            dump,
            "projection differs from rebuild"
        );
        views.push(view);
    }
    for v in &views[1..] {
        assert_eq!(v, &views[0]);
    }
    // The relay, opened as a device, rebuilds projections equal to theirs.
    shadow(&mut devices, &mut relay, id)?;
    relay.reopen()?;
    let c = relay.k.community(id)?;
    assert_eq!(c.projection_dump()?, views[0].3, "the relay's file differs");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn two_devices_converge(actions in prop::collection::vec(action(2), 1..24)) {
        run(2, &actions).map_err(|e| TestCaseError::fail(e.to_string()))?;
    }

    #[test]
    fn three_devices_converge(actions in prop::collection::vec(action(3), 1..24)) {
        run(3, &actions).map_err(|e| TestCaseError::fail(e.to_string()))?;
    }
}
