//! SQLite storage: one connection per file, `user_version` migrations, and
//! `read` / `write` helpers that commit only on `Ok`.
//!
//! Files: `account.sqlite3` (identity, communities) and
//! `communities/<community_id>.sqlite3` (authority ops, changes with their
//! envelopes, pending changes, snapshots, projections). See [`schema`].

pub mod schema;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};

use crate::error::{Error, Result};

/// A database's schema: its current version, the DDL of that version, and
/// how to upgrade an older file step by step.
#[derive(Debug)]
pub struct Schema {
    /// Which file this is, for errors.
    pub name: &'static str,
    /// The current `user_version`.
    pub version: u32,
    /// The whole current schema, for a fresh file.
    pub create: &'static str,
    /// Upgrades a file at `from` to `from + 1`.
    pub upgrade_from: fn(&Transaction<'_>, u32) -> Result<()>,
}

/// One SQLite file, with its single connection (the only writer).
#[derive(Debug)]
pub struct Db {
    conn: Connection,
    /// The file's path and its write-ahead log's (`None` in memory).
    paths: Option<(PathBuf, PathBuf)>,
    /// Commits since the write-ahead log was last checkpointed.
    commits: std::cell::Cell<u32>,
    /// A checkpoint of this file is queued on the checkpoint thread.
    queued: Arc<AtomicBool>,
    /// The write-ahead log's size when a checkpoint was last asked for
    /// because of its size.
    wal_asked: std::cell::Cell<u64>,
    /// Write transactions committed since the file was opened: what is
    /// derived from the file and kept in memory is valid while it holds.
    generation: u64,
}

/// Checkpoint the write-ahead log after this many commits, if nobody did
/// sooner ([`Db::checkpoint`]), on the checkpoint thread. SQLite's own
/// trigger (every 1,000 pages) fires every ~150 small writes and puts an
/// fsync on their path; this one fires about once in 400 writes, off it.
const CHECKPOINT_EVERY: u32 = 400;

/// Checkpoint too, on the checkpoint thread, once the write-ahead log
/// passes this size (a few large transactions, a catch-up, grow it fast),
/// and again each time it grows by [`CHECKPOINT_WAL_STEP`]. After a
/// checkpoint that finished, the next write starts the log over and SQLite
/// cuts the file back to 8 MB (`journal_size_limit`).
const CHECKPOINT_WAL_BYTES: u64 = 32 << 20;

/// See [`CHECKPOINT_WAL_BYTES`].
const CHECKPOINT_WAL_STEP: u64 = 8 << 20;

/// Checkpoint on the writer's own connection past this size. A checkpoint
/// from another connection while the writer keeps writing cannot finish,
/// so SQLite never starts the log over: under unbroken writes it would
/// grow for as long as they come. Between two writes it always finishes.
const CHECKPOINT_WAL_LIMIT: u64 = 128 << 20;

impl Db {
    /// Opens (creating if needed) and migrates a file.
    pub fn open(path: &Path, schema: &Schema) -> Result<Db> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        let mut db = Self::setup(conn, schema, true)?;
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        db.paths = Some((path.to_path_buf(), wal.into()));
        Ok(db)
    }

    /// An in-memory database, for tests.
    #[cfg(test)]
    pub fn open_in_memory(schema: &Schema) -> Result<Db> {
        Self::setup(Connection::open_in_memory()?, schema, false)
    }

    fn setup(conn: Connection, schema: &Schema, wal: bool) -> Result<Db> {
        conn.busy_timeout(Duration::from_secs(5))?;
        // Journal mode cannot change inside a transaction: set it first.
        if wal {
            let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(Error::Corrupt(format!("{}: WAL refused", schema.name)));
            }
        }
        conn.execute_batch(
            "PRAGMA synchronous=NORMAL; PRAGMA temp_store=2; PRAGMA foreign_keys=ON;
             PRAGMA mmap_size=268435456; PRAGMA cache_size=-16384;
             PRAGMA wal_autocheckpoint=0; PRAGMA journal_size_limit=8388608;",
        )?;
        conn.set_prepared_statement_cache_capacity(64);
        let mut db = Db {
            conn,
            paths: None,
            commits: std::cell::Cell::new(0),
            queued: Arc::default(),
            wal_asked: std::cell::Cell::new(0),
            generation: 0,
        };
        db.migrate(schema)?;
        Ok(db)
    }

    fn migrate(&mut self, schema: &Schema) -> Result<()> {
        self.write(|tx| {
            let version: u32 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
            if version > schema.version {
                return Err(Error::Corrupt(format!(
                    "{} is version {version}, newer than this library ({})",
                    schema.name, schema.version
                )));
            }
            if version == 0 {
                tx.execute_batch(schema.create)?;
            } else {
                for from in version..schema.version {
                    (schema.upgrade_from)(tx, from)?;
                }
            }
            tx.pragma_update(None, "user_version", schema.version)?;
            Ok(())
        })
    }

    /// Runs `f` in a read transaction.
    pub fn read<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        // `unchecked_transaction` only needs `&self`; reads never commit changes.
        let tx = self.conn.unchecked_transaction()?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    /// Runs `f` in an IMMEDIATE transaction, committed only if `f` returns
    /// `Ok`; on `Err` (or a panic) everything `f` wrote is rolled back.
    pub fn write<T>(&mut self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        self.generation += 1;
        self.commits.set(self.commits.get() + 1);
        let wal = self
            .paths
            .as_ref()
            .and_then(|(_, wal)| std::fs::metadata(wal).ok())
            .map_or(0, |m| m.len());
        if wal > CHECKPOINT_WAL_LIMIT {
            self.checkpoint()?;
        } else if wal > CHECKPOINT_WAL_BYTES
            && (wal < self.wal_asked.get() || wal >= self.wal_asked.get() + CHECKPOINT_WAL_STEP)
        {
            // Grown by a step since the last ask, or started over since.
            self.wal_asked.set(wal);
            self.checkpoint_soon()?;
        } else if self.commits.get() >= CHECKPOINT_EVERY {
            self.checkpoint_soon()?;
        }
        Ok(out)
    }

    /// Copies the write-ahead log into the database file (PASSIVE: never
    /// waits for readers), so the log stays small.
    pub fn checkpoint(&self) -> Result<()> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
        self.commits.set(0);
        Ok(())
    }

    /// [`Db::checkpoint`] on the checkpoint thread, through a connection
    /// of its own, so that the copy and its fsyncs are off the writer's
    /// path (here if that thread cannot run). A checkpoint already queued
    /// for this file is not queued again.
    fn checkpoint_soon(&self) -> Result<()> {
        self.commits.set(0);
        let Some((path, _)) = &self.paths else {
            return self.checkpoint();
        };
        if !self.queued.swap(true, Ordering::AcqRel) {
            checkpointer::queue(path, &self.queued);
        }
        Ok(())
    }

    /// Whether a checkpoint is queued on the checkpoint thread (for tests).
    #[cfg(test)]
    fn checkpoint_queued(&self) -> bool {
        self.queued.load(Ordering::Acquire)
    }

    /// Write transactions committed so far (see the field).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The connection, for queries outside a transaction.
    pub fn conn(&self) -> &Connection {
        &self.conn
    }
}

/// One thread for the process that checkpoints write-ahead logs for
/// [`Db::checkpoint_soon`], each through a connection opened for it (so it
/// never shares a connection with a writer, and holds no file open in
/// between). It is a [`Background`] thread: a checkpoint can wait, the
/// writes that grow the log (a device's catch-up, a server's ingest)
/// should not.
mod checkpointer {
    use std::path::Path;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, OnceLock};
    use std::time::Duration;

    use rusqlite::{Connection, OpenFlags};

    use crate::background::Background;

    static THREAD: OnceLock<Background> = OnceLock::new();

    /// Queues a checkpoint of the file at `path` (run here if the thread
    /// cannot run); `queued` is cleared once it ran (or failed).
    pub(super) fn queue(path: &Path, queued: &Arc<AtomicBool>) {
        let (path, queued) = (path.to_path_buf(), queued.clone());
        THREAD
            .get_or_init(|| Background::start("karmyq-checkpoint", 1))
            .run(move || {
                if let Err(error) = checkpoint(&path) {
                    tracing::debug!(%error, path = %path.display(), "checkpoint failed");
                }
                queued.store(false, Ordering::Release);
            });
    }

    fn checkpoint(path: &Path) -> rusqlite::Result<()> {
        // Never creates a file: one deleted since is left alone.
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
    }
}
