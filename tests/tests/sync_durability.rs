//! What the server acknowledged survives `kill -9` of its process: a
//! server started again on the same directory serves all of it, and its
//! files pass SQLite's integrity check.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use karmyq_core::sync::SyncStatus;
use karmyq_core::{Heads, Profile, Timestamp, Visibility};
use karmyq_tests::net::{Node, TestResult, phone_of, wait_until};

fn now() -> Timestamp {
    Timestamp::now()
}

/// Starts the server process; returns it and its sync URL.
fn spawn(dir: &Path) -> TestResult<(Child, String)> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sync-test-server"))
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let addr = line
        .trim()
        .strip_prefix("listening ")
        .ok_or_else(|| format!("unexpected output: {line:?}"))?
        .to_owned();
    Ok((child, format!("ws://{addr}/v1/sync")))
}

#[test]
fn acknowledged_changes_survive_kill_9() -> TestResult {
    let data = tempfile::tempdir()?;
    let (mut server, url) = spawn(data.path())?;

    let mut alice = Node::new()?;
    let id =
        alice.with(|k| k.create_community("Elm Street", "Kill me", Visibility::Public, now()))?;
    // Written offline: the first sync uploads all of it, and "up to date"
    // comes only once the server acknowledged (hence committed) it.
    for i in 0..10 {
        alice.with(|k| {
            k.community(id)?.set_profile(
                &Profile {
                    name: format!("Alice {i}"),
                    ..Profile::default()
                },
                now(),
            )
        })?;
    }
    alice.go_online_url(&url, id)?;
    wait_until("alice's uploads acknowledged", || {
        Ok(alice.status() == Some(SyncStatus::UpToDate))
    })?;
    alice.go_offline();
    let expected = alice.heads(id)?;
    assert_ne!(expected, Heads::empty());

    server.kill()?;
    server.wait()?;
    for entry in std::fs::read_dir(data.path().join("communities"))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "sqlite3") {
            let conn = rusqlite::Connection::open(&path)?;
            let ok: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
            assert_eq!(ok, "ok", "{}", path.display());
        }
    }

    let (mut again, url) = spawn(data.path())?;
    let mut phone = phone_of(&alice)?;
    phone.go_online_url(&url, id)?;
    let result = wait_until(
        "the phone gets everything from the restarted server",
        || Ok(phone.heads(id)? == expected),
    );
    phone.go_offline();
    again.kill()?;
    again.wait()?;
    result?;
    let name = phone.with(|k| {
        let me = k.member_id();
        Ok(k.community(id)?.profile(&me)?.map(|p| p.name))
    })?;
    assert_eq!(name.as_deref(), Some("Alice 9"));
    Ok(())
}
