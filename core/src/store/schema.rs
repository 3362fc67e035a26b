//! The schemas of the account file and of a community file.
//!
//! Each has a `VERSION`, the full current DDL for a fresh file, and
//! `upgrade_from(tx, version)` for older ones. A test checks that a file
//! migrated from version 1 equals a fresh one.

use rusqlite::Transaction;

use super::Schema;
use crate::error::{Error, Result};

/// Version 2: notifications, their preferences, quiet hours, and the
/// members this device's member blocked (private to the device).
macro_rules! notifications_tables {
    () => {
        "
CREATE TABLE notifications (
    id INTEGER PRIMARY KEY,
    community BLOB NOT NULL,
    kind TEXT NOT NULL,
    request TEXT,
    actor BLOB,
    created_at INTEGER NOT NULL,
    read INTEGER NOT NULL DEFAULT 0,
    silent INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX notifications_by_time ON notifications (created_at DESC);
CREATE INDEX notifications_by_community ON notifications (community, created_at);
CREATE TABLE notification_prefs (
    community BLOB NOT NULL,
    kind TEXT NOT NULL,
    enabled INTEGER NOT NULL,
    PRIMARY KEY (community, kind)
) WITHOUT ROWID;
CREATE TABLE quiet_hours (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    start_minute INTEGER NOT NULL,
    end_minute INTEGER NOT NULL
);
CREATE TABLE blocks (
    blocked BLOB PRIMARY KEY,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;
"
    };
}

macro_rules! account_v1 {
    () => {
        "
CREATE TABLE identity (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    member_id BLOB NOT NULL,
    secret BLOB NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE communities (
    community_id BLOB PRIMARY KEY,
    name TEXT NOT NULL,
    server_url TEXT,
    added_at INTEGER NOT NULL
) WITHOUT ROWID;
"
    };
}

/// `account.sqlite3`: the device's identity and its communities.
pub static ACCOUNT: Schema = Schema {
    name: "account",
    version: 2,
    create: concat!(account_v1!(), notifications_tables!()),
    upgrade_from: |tx, from| match from {
        1 => Ok(tx.execute_batch(notifications_tables!())?),
        _ => Err(Error::Corrupt(format!("account: no upgrade from {from}"))),
    },
};

/// `communities/<id>.sqlite3`: one community's log, documents and projections.
pub static COMMUNITY: Schema = Schema {
    name: "community",
    version: 6,
    create: COMMUNITY_CURRENT,
    upgrade_from: community_upgrade_from,
};

/// The tables of version 1. Later versions add to them (see
/// `community_upgrade_from`); the current DDL is version 1 plus each step.
macro_rules! community_v1 {
    () => {
        "
CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE auth_ops (
    hash BLOB PRIMARY KEY,
    bytes BLOB NOT NULL
);
CREATE TABLE auth_pending (
    hash BLOB PRIMARY KEY,
    bytes BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE changes (
    seq INTEGER PRIMARY KEY,
    doc_id TEXT NOT NULL,
    hash BLOB NOT NULL UNIQUE,
    author BLOB NOT NULL,
    actor_seq INTEGER NOT NULL,
    envelope BLOB NOT NULL,
    bytes BLOB NOT NULL
);
CREATE INDEX changes_doc ON changes (doc_id, seq);
CREATE INDEX changes_author ON changes (author, doc_id, actor_seq);
CREATE TABLE pending_changes (
    hash BLOB PRIMARY KEY,
    doc_id TEXT NOT NULL,
    signed BLOB NOT NULL
) WITHOUT ROWID;
CREATE INDEX pending_changes_doc ON pending_changes (doc_id);
CREATE TABLE snapshots (
    doc_id TEXT PRIMARY KEY,
    through_seq INTEGER NOT NULL,
    bytes BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE members (
    member_id BLOB PRIMARY KEY,
    role TEXT NOT NULL,
    admitted_at INTEGER NOT NULL,
    seniority INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE profiles (
    member_id BLOB PRIMARY KEY,
    name TEXT NOT NULL,
    bio TEXT NOT NULL,
    location TEXT,
    availability TEXT NOT NULL,
    skills TEXT NOT NULL
) WITHOUT ROWID;
"
    };
}

/// The norms projection, added in version 2 (version 1 read norms from the
/// document).
macro_rules! norms_table {
    () => {
        "
CREATE TABLE norms (
    norm_id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    description TEXT NOT NULL,
    category TEXT NOT NULL
) WITHOUT ROWID;
"
    };
}

/// Version 3: each document's heads (so a replica says what it holds
/// without loading every document), and the help-request projections with
/// their full-text index.
macro_rules! requests_tables {
    () => {
        "
CREATE TABLE doc_heads (
    doc_id TEXT PRIMARY KEY,
    heads BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE requests (
    request_id TEXT PRIMARY KEY,
    requester BLOB NOT NULL,
    title TEXT NOT NULL,
    description TEXT NOT NULL,
    category TEXT NOT NULL,
    urgency INTEGER NOT NULL,
    kind TEXT NOT NULL,
    location TEXT,
    when_start INTEGER,
    when_end INTEGER,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    renewals INTEGER NOT NULL,
    state TEXT NOT NULL,
    hidden TEXT
);
CREATE INDEX requests_browse ON requests (state, category, urgency DESC, created_at DESC);
CREATE INDEX requests_requester ON requests (requester, created_at DESC);
CREATE TABLE offers (
    offer_id TEXT PRIMARY KEY,
    request_id TEXT NOT NULL REFERENCES requests (request_id),
    responder BLOB NOT NULL,
    message TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    state TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX offers_request ON offers (request_id);
CREATE INDEX offers_responder ON offers (responder, created_at DESC);
CREATE TABLE matches (
    request_id TEXT PRIMARY KEY REFERENCES requests (request_id),
    offer_id TEXT NOT NULL,
    requester BLOB NOT NULL,
    responder BLOB NOT NULL,
    accepted_at INTEGER NOT NULL,
    requester_confirmed_at INTEGER,
    responder_confirmed_at INTEGER,
    completed_at INTEGER,
    invalidated INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX matches_requester ON matches (requester);
CREATE INDEX matches_responder ON matches (responder);
-- rowid = requests.rowid
CREATE VIRTUAL TABLE requests_fts USING fts5 (title, description);
CREATE TABLE reports (
    report_id TEXT PRIMARY KEY,
    reporter BLOB NOT NULL,
    target TEXT NOT NULL,
    target_member BLOB NOT NULL,
    category TEXT NOT NULL,
    text TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    resolution TEXT,
    resolved_at INTEGER
) WITHOUT ROWID;
CREATE INDEX reports_open ON reports (resolution, created_at);
CREATE INDEX reports_target_member ON reports (target_member);
CREATE TABLE proposals (
    proposal_id TEXT PRIMARY KEY,
    proposer BLOB NOT NULL,
    title TEXT NOT NULL,
    approvals INTEGER NOT NULL,
    active INTEGER NOT NULL
) WITHOUT ROWID;
-- match reminders already given on this device (by request)
CREATE TABLE reminders (
    request_id TEXT PRIMARY KEY,
    offer_id TEXT NOT NULL,
    reminded_at INTEGER NOT NULL
) WITHOUT ROWID;
"
    };
}

/// Version 4: how many communities a match's pool is split across (a
/// cross-posted request), covering indexes that read a member's completed
/// matches (karma, trust, badges) without touching the table, and the
/// feed's indexes (recent completions, recent requests by state).
macro_rules! match_shares {
    () => {
        "ALTER TABLE matches ADD COLUMN shares INTEGER NOT NULL DEFAULT 1;
DROP INDEX matches_requester;
DROP INDEX matches_responder;
CREATE INDEX matches_requester ON matches (requester, completed_at, offer_id, responder,
    accepted_at, invalidated, shares);
CREATE INDEX matches_responder ON matches (responder, completed_at, offer_id, requester,
    accepted_at, invalidated, shares);
CREATE INDEX matches_completed ON matches (completed_at);
CREATE INDEX requests_recent ON requests (state, created_at, expires_at, hidden, category,
    urgency, request_id);"
    };
}

/// Version 5: conversations and their messages (bodies stay sealed: the
/// projection holds what the document holds), with the read marks that
/// give unread counts.
macro_rules! conversation_tables {
    () => {
        "
CREATE TABLE conversations (
    conversation_id TEXT PRIMARY KEY,
    member_a BLOB NOT NULL,
    member_b BLOB NOT NULL,
    request_id TEXT,
    created_at INTEGER NOT NULL,
    last_at INTEGER NOT NULL,
    read_a TEXT,
    read_a_at INTEGER,
    read_b TEXT,
    read_b_at INTEGER
) WITHOUT ROWID;
CREATE INDEX conversations_a ON conversations (member_a, last_at);
CREATE INDEX conversations_b ON conversations (member_b, last_at);
CREATE TABLE messages (
    conversation_id TEXT NOT NULL REFERENCES conversations (conversation_id),
    message_id TEXT NOT NULL,
    sender BLOB NOT NULL,
    sent_at INTEGER NOT NULL,
    sealed BLOB NOT NULL,
    PRIMARY KEY (conversation_id, message_id)
) WITHOUT ROWID;
CREATE INDEX messages_by_time ON messages (conversation_id, sent_at, message_id);
CREATE INDEX messages_sent_at ON messages (sent_at);
"
    };
}

/// Version 6: no index of changes by author. No query read it, and each
/// stored change paid an insert at a random place in it (a tenth of a
/// community file's size).
macro_rules! no_author_index {
    () => {
        "DROP INDEX changes_author;"
    };
}

#[cfg(test)]
pub(crate) const COMMUNITY_V1: &str = community_v1!();

/// The DDL of version 5: version 1 and the steps to 5.
macro_rules! community_v5 {
    () => {
        concat!(
            community_v1!(),
            norms_table!(),
            requests_tables!(),
            match_shares!(),
            conversation_tables!()
        )
    };
}

const COMMUNITY_CURRENT: &str = concat!(community_v5!(), no_author_index!());

fn community_upgrade_from(tx: &Transaction<'_>, from: u32) -> Result<()> {
    // Each step, and whether it adds projections (a rebuild on open fills them).
    let (step, adds_projections) = match from {
        // Norms got their projection.
        1 => (norms_table!(), true),
        // Doc heads and the request projections.
        2 => (requests_tables!(), true),
        // Match shares, and indexes for figures and the feed.
        3 => (match_shares!(), true),
        // Conversations.
        4 => (conversation_tables!(), true),
        // The unused index of changes by author goes.
        5 => (no_author_index!(), false),
        _ => return Err(Error::Corrupt(format!("community: no upgrade from {from}"))),
    };
    tx.execute_batch(step)?;
    if adds_projections {
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('rebuild_projections', x'01')
                ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [],
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Db;

    fn schema_of(db: &Db) -> Vec<(String, String, String)> {
        let mut stmt = db
            .conn()
            .prepare("SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY type, name")
            .expect("prepare");
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .expect("query")
            .collect::<rusqlite::Result<_>>()
            .expect("rows")
    }

    /// Whether the file asks for a projection rebuild on open.
    fn rebuild_flagged(db: &Db) -> Result<bool> {
        Ok(db.conn().query_row(
            "SELECT EXISTS (SELECT 1 FROM meta WHERE key = 'rebuild_projections')",
            [],
            |r| r.get(0),
        )?)
    }

    fn normalize(rows: Vec<(String, String, String)>) -> Vec<(String, String, String)> {
        rows.into_iter()
            .map(|(t, n, sql)| (t, n, sql.split_whitespace().collect::<Vec<_>>().join(" ")))
            .collect()
    }

    #[test]
    fn migrated_community_file_equals_fresh_one() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("old.sqlite3");
        {
            let conn = rusqlite::Connection::open(&path)?;
            conn.execute_batch(COMMUNITY_V1)?;
            conn.pragma_update(None, "user_version", 1)?;
        }
        let migrated = Db::open(&path, &COMMUNITY)?;
        let fresh = Db::open(&dir.path().join("fresh.sqlite3"), &COMMUNITY)?;
        assert_eq!(
            normalize(schema_of(&migrated)),
            normalize(schema_of(&fresh))
        );
        let version: u32 = migrated
            .conn()
            .query_row("PRAGMA user_version", [], |r| r.get(0))?;
        assert_eq!(version, COMMUNITY.version);
        assert!(
            rebuild_flagged(&migrated)?,
            "a migration asks for a projection rebuild"
        );
        Ok(())
    }

    #[test]
    fn version_5_loses_the_author_index_and_keeps_its_changes() -> Result<()> {
        const V5: &str = community_v5!();
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("v5.sqlite3");
        {
            let conn = rusqlite::Connection::open(&path)?;
            conn.execute_batch(V5)?;
            conn.execute(
                "INSERT INTO changes (doc_id, hash, author, actor_seq, envelope, bytes)
                 VALUES ('profiles', x'01', x'02', 1, x'03', x'04')",
                [],
            )?;
            conn.pragma_update(None, "user_version", 5)?;
        }
        let db = Db::open(&path, &COMMUNITY)?;
        let indexes: Vec<String> = db
            .conn()
            .prepare(
                "SELECT name FROM sqlite_master WHERE tbl_name = 'changes' AND type = 'index'",
            )?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        assert!(indexes.iter().any(|i| i == "changes_doc"), "{indexes:?}");
        assert!(
            !indexes.iter().any(|i| i == "changes_author"),
            "{indexes:?}"
        );
        let kept: Vec<u8> =
            db.conn()
                .query_row("SELECT bytes FROM changes WHERE hash = x'01'", [], |r| {
                    r.get(0)
                })?;
        assert_eq!(kept, vec![4]);
        assert!(
            !rebuild_flagged(&db)?,
            "dropping an index needs no projection rebuild"
        );
        Ok(())
    }

    #[test]
    fn the_checkpoint_thread_copies_the_log_into_the_file() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("c.sqlite3");
        let mut db = Db::open(&path, &COMMUNITY)?;
        let mut rows = 0;
        loop {
            db.write(|tx| {
                tx.execute(
                    "INSERT INTO meta (key, value) VALUES (?1, x'00')",
                    [format!("row {rows}")],
                )?;
                Ok(())
            })?;
            rows += 1;
            if db.commits.get() == 0 {
                break; // a checkpoint was asked for after this commit
            }
            assert!(
                rows <= super::super::CHECKPOINT_EVERY,
                "no checkpoint asked for"
            );
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while db.checkpoint_queued() {
            assert!(
                std::time::Instant::now() < deadline,
                "the checkpoint never ran"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        // The database file alone, without its log, holds every row.
        let copy = dir.path().join("copy.sqlite3");
        std::fs::copy(&path, &copy)?;
        let alone = rusqlite::Connection::open(&copy)?;
        let held: u32 = alone.query_row(
            "SELECT count(*) FROM meta WHERE key LIKE 'row %'",
            [],
            |r| r.get(0),
        )?;
        assert_eq!(held, rows);
        Ok(())
    }

    #[test]
    fn migrated_account_file_equals_fresh_one() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("old.sqlite3");
        {
            let conn = rusqlite::Connection::open(&path)?;
            conn.execute_batch(account_v1!())?;
            conn.pragma_update(None, "user_version", 1)?;
        }
        let migrated = Db::open(&path, &ACCOUNT)?;
        let fresh = Db::open(&dir.path().join("fresh.sqlite3"), &ACCOUNT)?;
        assert_eq!(
            normalize(schema_of(&migrated)),
            normalize(schema_of(&fresh))
        );
        Ok(())
    }

    #[test]
    fn newer_file_is_refused() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("new.sqlite3");
        {
            let conn = rusqlite::Connection::open(&path)?;
            conn.pragma_update(None, "user_version", 99)?;
        }
        assert!(matches!(
            Db::open(&path, &COMMUNITY),
            Err(Error::Corrupt(_))
        ));
        Ok(())
    }

    #[test]
    fn write_rolls_back_on_error() -> Result<()> {
        let mut db = Db::open_in_memory(&COMMUNITY)?;
        let res: Result<()> = db.write(|tx| {
            tx.execute("INSERT INTO meta (key, value) VALUES ('k', x'01')", [])?;
            Err(Error::InvalidArgument("stop".into()))
        });
        assert!(res.is_err());
        let n: i64 = db
            .conn()
            .query_row("SELECT count(*) FROM meta", [], |r| r.get(0))?;
        assert_eq!(n, 0);
        Ok(())
    }
}
