//! Live push: what one device writes reaches the others through the
//! server without them asking; and a server shutting down tells its
//! devices, drains, and stops.

use std::time::{Duration, Instant};

use karmyq_core::sync::{EngineOptions, SyncStatus};
use karmyq_core::{Heads, Profile, Timestamp, Visibility};
use karmyq_tests::net::{Node, TestResult, TestServer, phone_of, public_community, wait_until};

fn now() -> Timestamp {
    Timestamp::now()
}

/// No polling of local writes (only nudges), fast reconnects.
fn no_polling() -> EngineOptions {
    EngineOptions {
        min_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(500),
        poll: Duration::from_secs(3600),
    }
}

#[test]
fn changes_are_pushed_live_without_polling() -> TestResult {
    let server = TestServer::start()?;
    let (mut alice, mut bob, mut carol) = (Node::new()?, Node::new()?, Node::new()?);
    let id = alice.with(|k| k.create_community("Elm Street", "", Visibility::Public, now()))?;
    alice.go_online_with(&server, id, no_polling())?;
    for node in [&mut bob, &mut carol] {
        let log = alice.with(|k| k.community(id)?.changes_since(&Heads::empty()))?;
        node.with(|k| {
            k.receive(&log, now())?;
            k.community(id)?.join(now())
        })?;
        node.go_online_with(&server, id, no_polling())?;
    }
    wait_until("three members at alice's", || {
        alice.with(|k| Ok(k.community(id)?.members()?.len() == 3))
    })?;
    wait_until("bob and carol up to date", || {
        Ok(bob.status() == Some(SyncStatus::UpToDate)
            && carol.status() == Some(SyncStatus::UpToDate))
    })?;

    // Alice edits her profile 20 times; each edit reaches Bob and Carol,
    // who never poll and never nudge.
    let alice_id = alice.with(|k| Ok(k.member_id()))?;
    let mut latencies = Vec::new();
    for i in 0..20 {
        let name = format!("Alice {i}");
        let started = Instant::now();
        alice.with(|k| {
            k.community(id)?.set_profile(
                &Profile {
                    name: name.clone(),
                    ..Profile::default()
                },
                now(),
            )
        })?;
        alice.nudge();
        wait_until("the edit at bob's and carol's", || {
            let seen = |n: &Node| {
                n.with(|k| {
                    Ok(k.community(id)?.profile(&alice_id)?.map(|p| p.name) == Some(name.clone()))
                })
            };
            Ok(seen(&bob)? && seen(&carol)?)
        })?;
        latencies.push(started.elapsed());
    }
    latencies.sort();
    let median = latencies[latencies.len() / 2];
    let worst = latencies[latencies.len() - 1];
    println!("write -> both peers: median {median:?}, worst {worst:?} (20 edits)");
    assert!(worst < Duration::from_secs(2), "{worst:?}");
    assert!(server.metric("karmyq_changes_accepted_total")? >= 20);
    assert!(server.metric("karmyq_subscriptions")? >= 3);
    Ok(())
}

#[test]
fn shutdown_tells_devices_and_drains() -> TestResult {
    let mut server = TestServer::start_with(|c| c.drain_timeout = Duration::from_secs(5))?;
    let (mut alice, mut bob) = (Node::new()?, Node::new()?);
    let id = public_community(&server, &mut alice, &mut [&mut bob], "Elm Street")?;
    wait_until("both up to date", || {
        Ok(alice.status() == Some(SyncStatus::UpToDate)
            && bob.status() == Some(SyncStatus::UpToDate)
            && server.metric("karmyq_subscriptions")? == 2)
    })?;
    let started = Instant::now();
    server.stop()?;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(4), "{took:?}");
    for node in [&alice, &bob] {
        wait_until("the device was told", || {
            Ok(node.saw(&SyncStatus::Rejected {
                reason: "shutting_down".into(),
            }))
        })?;
    }
    alice.go_offline();
    bob.go_offline();
    // What was stored survives: a server started again on the same
    // directory serves it to a device that holds nothing.
    server.restart()?;
    let mut phone = phone_of(&bob)?;
    phone.go_online(&server, id)?;
    wait_until(
        "bob's new phone catches up from the restarted server",
        || Ok(phone.heads(id)? == alice.heads(id)?),
    )?;
    assert!(
        server
            .get("/v1/communities")?
            .contains(r#""name":"Elm Street""#)
    );
    Ok(())
}

/// A server that shuts down while a device is still applying its catch-up:
/// the device reads the notice and the close during an apply, and reports
/// the notice (not just that it went offline) once the apply is done.
#[test]
fn a_device_told_of_shutdown_mid_catch_up_reports_it() -> TestResult {
    let mut server = TestServer::start_with(|c| {
        c.limits.max_frame = 16 * 1024;
        c.drain_timeout = Duration::from_secs(5);
    })?;
    let mut alice = Node::new()?;
    let id = public_community(&server, &mut alice, &mut [], "Elm Street")?;
    for i in 0..150 {
        let p = Profile {
            name: format!("Alice {i:03}"),
            bio: format!("{i} ").repeat(100),
            ..Profile::default()
        };
        alice.with(|k| k.community(id)?.set_profile(&p, now()))?;
    }
    alice.nudge();
    wait_until("the server holds alice's edits", || {
        Ok(server.metric("karmyq_changes_accepted_total")? >= 150)
    })?;
    alice.go_offline();
    let mut phone = phone_of(&alice)?;
    phone.go_online(&server, id)?;
    wait_until("the phone is catching up", || {
        phone.with(|k| Ok(k.community(id).is_ok()))
    })?;
    server.stop()?;
    wait_until("the phone was told", || {
        Ok(phone.saw(&SyncStatus::Rejected {
            reason: "shutting_down".into(),
        }))
    })
    .map_err(|e| format!("{e}: {:?}", phone.statuses))?;
    Ok(())
}
