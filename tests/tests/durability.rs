//! What is on disk survives: closing and reopening, snapshots, a write that
//! fails half-way through its transaction, and a writer process killed
//! mid-stream.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use karmyq_core::{Error, Heads, Karmyq, Profile, Result, Role, Visibility};
use karmyq_tests::{Device, at, sync};

fn profile(bio: &str) -> Profile {
    Profile {
        name: "Alice".into(),
        bio: bio.into(),
        location: Some("u0yjj".into()),
        availability: "weekends".into(),
        skills: vec!["driving".into(), "tech".into()],
    }
}

#[test]
fn everything_is_there_after_reopening() -> Result<()> {
    let mut alice = Device::new()?;
    let mut bob = Device::new()?;
    let id = alice
        .k
        .create_community("Elm Street", "Neighbours", Visibility::Private, at(0))?;
    let invite = alice
        .k
        .community(id)?
        .create_invite(at(60 * 24), 1, at(1))?;
    alice.send_to(&mut bob, id, at(2))?;
    bob.k.join_with_invite(&invite.to_link(), at(3))?;
    sync(&mut alice, &mut bob, id, at(4))?;
    let bob_id = bob.k.member_id();
    alice
        .k
        .community(id)?
        .set_role(bob_id, Role::Moderator, at(5))?;
    alice
        .k
        .community(id)?
        .set_profile(&profile("hello"), at(6))?;
    alice
        .k
        .community(id)?
        .add_norm("Be kind", "Assume good faith", "conduct", at(7))?;
    alice
        .k
        .community(id)?
        .set_description("Our street", at(8))?;
    sync(&mut alice, &mut bob, id, at(9))?;

    let before = {
        let c = alice.k.community(id)?;
        (c.members()?, c.norms()?, c.info()?, c.heads()?)
    };
    assert_eq!(before.0.len(), 2);
    assert_eq!(before.0[1].role, Role::Moderator);
    assert_eq!(before.2.description, "Our street");
    let member = alice.k.member_id();
    alice.reopen()?;
    assert_eq!(alice.k.member_id(), member, "same identity after reopening");
    let c = alice.k.community(id)?;
    assert_eq!((c.members()?, c.norms()?, c.info()?, c.heads()?), before);
    assert_eq!(alice.k.communities()?.len(), 1);
    // One client per directory: a second open is refused while one holds it.
    assert!(matches!(
        Karmyq::open(alice.path()),
        Err(Error::DirectoryInUse)
    ));
    Ok(())
}

#[test]
fn documents_load_from_snapshots() -> Result<()> {
    let mut alice = Device::new()?;
    let id = alice
        .k
        .create_community("Elm Street", "", Visibility::Public, at(0))?;
    alice.k.community(id)?.set_compact_every(4);
    let through = |d: &Device| -> Result<i64> {
        let conn = rusqlite::Connection::open(d.file(id))?;
        Ok(conn.query_row(
            "SELECT coalesce(max(through_seq), 0) FROM snapshots",
            [],
            |r| r.get(0),
        )?)
    };
    for i in 0..10 {
        alice
            .k
            .community(id)?
            .set_profile(&profile(&format!("bio {i}")), at(i))?;
    }
    // Local writes leave snapshots to quiet moments...
    assert_eq!(alice.rows(id, "snapshots")?, 0);
    alice.k.community(id)?.compact()?;
    assert_eq!(alice.rows(id, "snapshots")?, 1);
    assert_eq!(through(&alice)?, 10);
    // ...unless none comes: after four times the interval, a write takes one.
    for i in 10..26 {
        alice
            .k
            .community(id)?
            .set_profile(&profile(&format!("bio {i}")), at(i))?;
    }
    assert_eq!(through(&alice)?, 26);
    for i in 26..30 {
        alice
            .k
            .community(id)?
            .set_profile(&profile(&format!("bio {i}")), at(i))?;
    }
    assert_eq!(alice.rows(id, "changes")?, 30);
    let heads = alice.k.community(id)?.heads()?;
    alice.reopen()?;
    let c = alice.k.community(id)?;
    assert_eq!(c.heads()?, heads);
    let me = c.me();
    assert_eq!(c.profile(&me)?.map(|p| p.bio), Some("bio 29".into()));
    // A new device catches up with every change, envelopes and all.
    let bundle = c.changes_since(&Heads::empty())?;
    assert_eq!(bundle.changes.len(), 30);
    let mut bob = Device::new()?;
    let report = bob.k.receive(&bundle, at(20))?;
    assert!(report.rejected.is_empty() && report.pending.is_empty());
    assert_eq!(
        bob.k.community(id)?.profile(&me)?.map(|p| p.bio),
        Some("bio 29".into())
    );
    Ok(())
}

/// Makes the next insert into `table` fail inside the library's
/// transaction, as a crash half-way through would.
fn break_table(dev: &Device, id: karmyq_core::CommunityId, table: &str) -> Result<()> {
    let conn = rusqlite::Connection::open(dev.file(id))?;
    conn.execute_batch(&format!(
        "CREATE TRIGGER crash BEFORE INSERT ON {table} BEGIN SELECT RAISE(ABORT, 'crash'); END;"
    ))?;
    Ok(())
}

fn mend_table(dev: &Device, id: karmyq_core::CommunityId) -> Result<()> {
    let conn = rusqlite::Connection::open(dev.file(id))?;
    conn.execute_batch("DROP TRIGGER crash;")?;
    Ok(())
}

#[test]
fn a_local_write_that_fails_midway_leaves_nothing() -> Result<()> {
    let mut alice = Device::new()?;
    let id = alice
        .k
        .create_community("Elm Street", "", Visibility::Public, at(0))?;
    alice
        .k
        .community(id)?
        .set_profile(&profile("first"), at(1))?;
    let changes = alice.rows(id, "changes")?;
    // The change row goes in first, then the projection fails.
    break_table(&alice, id, "norms")?;
    let err = alice
        .k
        .community(id)?
        .add_norm("Be kind", "", "conduct", at(2));
    assert!(matches!(err, Err(Error::Sqlite(_))), "{err:?}");
    assert_eq!(alice.rows(id, "changes")?, changes, "no half-stored change");
    assert_eq!(alice.rows(id, "norms")?, 0);
    mend_table(&alice, id)?;
    // Memory did not run ahead of the file: the next write works and the
    // refused norm is nowhere.
    alice
        .k
        .community(id)?
        .add_norm("Be fair", "", "conduct", at(3))?;
    let c = alice.k.community(id)?;
    let titles: Vec<String> = c.norms()?.into_iter().map(|n| n.title).collect();
    assert_eq!(titles, vec!["Be fair".to_owned()]);
    let dump = c.projection_dump()?;
    c.rebuild_projections()?;
    assert_eq!(c.projection_dump()?, dump);
    Ok(())
}

#[test]
fn a_bundle_that_fails_midway_leaves_nothing() -> Result<()> {
    let mut alice = Device::new()?;
    let mut bob = Device::new()?;
    let id = alice
        .k
        .create_community("Elm Street", "", Visibility::Public, at(0))?;
    alice.k.community(id)?.set_profile(&profile("a"), at(1))?;
    alice.send_to(&mut bob, id, at(2))?;
    bob.k.community(id)?.join(at(3))?;
    bob.k.community(id)?.set_profile(
        &Profile {
            name: "Bob".into(),
            ..Profile::default()
        },
        at(4),
    )?;
    let bob_id = bob.k.member_id();
    let bundle = bob.bundle_for(&mut alice, id)?;
    assert!(!bundle.ops.is_empty() && !bundle.changes.is_empty());
    let before = (alice.rows(id, "auth_ops")?, alice.rows(id, "changes")?);
    break_table(&alice, id, "profiles")?;
    assert!(alice.k.receive(&bundle, at(5)).is_err());
    assert_eq!(
        (alice.rows(id, "auth_ops")?, alice.rows(id, "changes")?),
        before
    );
    assert_eq!(
        alice.rows(id, "members")?,
        1,
        "Bob's join is not half-applied"
    );
    assert_eq!(alice.k.community(id)?.members()?.len(), 1);
    mend_table(&alice, id)?;
    let report = alice.k.receive(&bundle, at(6))?;
    assert!(report.rejected.is_empty(), "{report:?}");
    let c = alice.k.community(id)?;
    assert_eq!(c.members()?.len(), 2);
    assert_eq!(c.profile(&bob_id)?.map(|p| p.name), Some("Bob".into()));
    Ok(())
}

const CHILD_DIR: &str = "KARMYQ_TEST_CHILD_DIR";
const CHILD_COMMUNITY: &str = "KARMYQ_TEST_CHILD_COMMUNITY";

/// In the child process: write profiles forever, printing each
/// acknowledged write.
fn child_writer(dir: &str, community: &str) -> Result<()> {
    let mut k = Karmyq::open(dir)?;
    let id = community.parse()?;
    let c = k.community(id)?;
    for i in 0.. {
        c.set_profile(&profile(&format!("write {i}")), at(i))?;
        println!("ack {i}");
    }
    Ok(())
}

#[test]
fn killed_writer_leaves_a_consistent_file() -> Result<()> {
    if let (Ok(dir), Ok(community)) = (std::env::var(CHILD_DIR), std::env::var(CHILD_COMMUNITY)) {
        return child_writer(&dir, &community);
    }
    let mut alice = Device::new()?;
    let id = alice
        .k
        .create_community("Elm Street", "", Visibility::Public, at(0))?;
    alice.k.community(id)?.set_compact_every(16);
    let mut last_ack = None;
    let dir = alice.path().to_owned();
    alice.close(|| {
        let mut child = Command::new(std::env::current_exe()?)
            .args([
                "killed_writer_leaves_a_consistent_file",
                "--exact",
                "--nocapture",
            ])
            .env(CHILD_DIR, &dir)
            .env(CHILD_COMMUNITY, id.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or(Error::InvalidArgument("no stdout".into()))?;
        for line in BufReader::new(stdout).lines() {
            if let Some(n) = line?.strip_prefix("ack ") {
                last_ack = n.parse::<i64>().ok();
                if last_ack >= Some(60) {
                    break;
                }
            }
        }
        child.kill()?; // SIGKILL: no destructor, no commit, no checkpoint.
        child.wait()?;
        Ok(())
    })?;
    let last_ack = last_ack.ok_or(Error::InvalidArgument("child wrote nothing".into()))?;

    let c = alice.k.community(id)?;
    let me = c.me();
    let bio = c.profile(&me)?.map(|p| p.bio).unwrap_or_default();
    let written: i64 = bio
        .strip_prefix("write ")
        .and_then(|n| n.parse().ok())
        .unwrap_or(-1);
    assert!(
        written >= last_ack,
        "acknowledged write {last_ack} lost (file has {written})"
    );
    let dump = c.projection_dump()?;
    c.rebuild_projections()?;
    assert_eq!(
        c.projection_dump()?,
        dump,
        "projection out of step with the documents"
    );
    // Every stored change still loads, and a new device takes them all.
    let bundle = c.changes_since(&Heads::empty())?;
    let mut bob = Device::new()?;
    let report = bob.k.receive(&bundle, at(1_000))?;
    assert!(
        report.rejected.is_empty() && report.pending.is_empty(),
        "{report:?}"
    );
    assert_eq!(bob.k.community(id)?.profile(&me)?.map(|p| p.bio), Some(bio));
    Ok(())
}
