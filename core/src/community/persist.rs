//! Reading and writing a community file: ops, changes, pending changes,
//! snapshots, and documents loaded from them.

use std::collections::HashMap;

use automerge::{Automerge, ChangeHash};
use rusqlite::{OptionalExtension, Transaction, params};

use crate::authority::{AuthorityLog, CommunityId, OpHash, SignedOp};
use crate::codec;
use crate::docs::{Authentic, DocId, Latest, SignedChange};
use crate::error::{Error, Result};
use crate::identity::MemberId;
use crate::store::Db;

pub(super) struct Loaded {
    pub(super) doc: Automerge,
    /// Changes stored since the document's last snapshot.
    pub(super) since_snapshot: u32,
    /// When it was loaded, in load order (the oldest leaves memory first).
    pub(super) loaded: u64,
}

/// Numbers loaded documents in the order they were loaded.
static LOADS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

pub(super) fn load_pending(tx: &Transaction<'_>) -> Result<Vec<SignedChange>> {
    let mut stmt = tx.prepare_cached("SELECT signed FROM pending_changes")?;
    let rows = stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))?;
    let mut out = Vec::new();
    for row in rows {
        out.push(codec::decode(&row?, "pending change")?);
    }
    Ok(out)
}

/// Stores an accepted change with its envelope.
pub(super) fn store_change(tx: &Transaction<'_>, change: &Authentic) -> Result<()> {
    let env = &change.signed.envelope;
    tx.prepare_cached(
        "INSERT INTO changes (doc_id, hash, author, actor_seq, envelope, bytes)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        env.doc,
        env.change_hash.as_slice(),
        env.author.as_bytes().as_slice(),
        i64::try_from(change.change.seq()).unwrap_or(i64::MAX),
        codec::encode(env),
        change.signed.bytes,
    ])?;
    Ok(())
}

/// Applies changes from another replica to a document, a panic in
/// Automerge becoming an error: the validator refuses every change known
/// to make Automerge panic, and this keeps one it does not know of from
/// taking down the thread (a server's store, a device's sync). The caller
/// drops the document on an error, as on any failed apply.
pub(super) fn apply_guarded(
    doc: &mut Automerge,
    changes: impl IntoIterator<Item = automerge::Change> + Clone,
) -> Result<()> {
    let applied =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| doc.apply_changes(changes)));
    match applied {
        Ok(result) => Ok(result?),
        Err(_) => {
            tracing::error!("Automerge panicked applying a change; the document is dropped");
            Err(Error::Automerge(automerge::AutomergeError::Fail))
        }
    }
}

/// An author's latest stored change in a document (see
/// `Authentic::sequence_holds`).
pub(super) fn latest_stored(
    tx: &Transaction<'_>,
    author: &MemberId,
    doc_id: &DocId,
) -> Result<Option<Latest>> {
    let row: Option<(i64, Vec<u8>)> = tx
        .prepare_cached(
            "SELECT actor_seq, hash FROM changes WHERE author = ?1 AND doc_id = ?2
             ORDER BY actor_seq DESC LIMIT 1",
        )?
        .query_row(params![author.as_bytes().as_slice(), doc_id.name()], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    let Some((seq, hash)) = row else {
        return Ok(None);
    };
    let seq = u64::try_from(seq).map_err(|_| Error::Corrupt("negative actor_seq".into()))?;
    let hash = <[u8; 32]>::try_from(hash.as_slice())
        .map_err(|_| Error::Corrupt("change hash is not 32 bytes".into()))?;
    Ok(Some((seq, ChangeHash(hash))))
}

/// Records a document's heads, so `Community::heads` needs no document.
pub(super) fn save_heads(tx: &Transaction<'_>, doc_id: &DocId, heads: &[ChangeHash]) -> Result<()> {
    let heads: Vec<u8> = heads.iter().flat_map(|h| h.0).collect();
    tx.prepare_cached(
        "INSERT INTO doc_heads (doc_id, heads) VALUES (?1, ?2)
         ON CONFLICT (doc_id) DO UPDATE SET heads = excluded.heads",
    )?
    .execute(params![doc_id.name(), heads])?;
    Ok(())
}

/// This device's latest change in a public document: what its next change
/// in another document names as its author's previous (by its [`Link`]).
/// A value that does not read (a damaged file) is left unnamed, and the
/// next write replaces it: a link only lets later signatures vouch for
/// earlier changes.
pub(super) fn load_previous(db: &Db) -> Result<Option<(DocId, ChangeHash)>> {
    let value: Option<Vec<u8>> = db
        .conn()
        .prepare_cached("SELECT value FROM meta WHERE key = 'previous'")?
        .query_row([], |r| r.get(0))
        .optional()?;
    let Some(value) = value else {
        return Ok(None);
    };
    let previous = value.split_at_checked(32).and_then(|(hash, name)| {
        let doc = DocId::parse_stored(std::str::from_utf8(name).ok()?)?;
        Some((doc, ChangeHash(hash.try_into().ok()?)))
    });
    if previous.is_none() {
        tracing::warn!("unreadable previous change in meta; the next change names none");
    }
    Ok(previous)
}

/// Records this device's latest change in a public document.
pub(super) fn save_previous(tx: &Transaction<'_>, doc: &DocId, hash: &ChangeHash) -> Result<()> {
    let value = [hash.0.as_slice(), doc.name().as_bytes()].concat();
    tx.prepare_cached(
        "INSERT INTO meta (key, value) VALUES ('previous', ?1)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )?
    .execute([value])?;
    Ok(())
}

/// Every document's heads, by name.
pub(super) fn load_heads(db: &Db) -> Result<Vec<(String, Vec<[u8; 32]>)>> {
    let mut stmt = db
        .conn()
        .prepare_cached("SELECT doc_id, heads FROM doc_heads ORDER BY doc_id")?;
    let rows = stmt.query_map([], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (name, bytes) = row?;
        let heads = bytes
            .chunks(32)
            .map(|c| c.try_into().map_err(|_| Error::Corrupt("doc heads".into())))
            .collect::<Result<Vec<[u8; 32]>>>()?;
        out.push((name, heads));
    }
    Ok(out)
}

/// Saves a document's snapshot, covering every change stored for it.
pub(super) fn save_snapshot(
    tx: &Transaction<'_>,
    doc_id: &DocId,
    loaded: &mut Loaded,
) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO snapshots (doc_id, through_seq, bytes)
         VALUES (?1, (SELECT MAX(seq) FROM changes WHERE doc_id = ?1), ?2)
         ON CONFLICT (doc_id) DO UPDATE
         SET through_seq = excluded.through_seq, bytes = excluded.bytes",
    )?
    .execute(params![doc_id.name(), loaded.doc.save()])?;
    loaded.since_snapshot = 0;
    Ok(())
}

pub(super) fn store_op(tx: &Transaction<'_>, hash: &OpHash, op: &SignedOp) -> Result<()> {
    tx.prepare_cached("INSERT OR IGNORE INTO auth_ops (hash, bytes) VALUES (?1, ?2)")?
        .execute(params![hash.as_bytes().as_slice(), op.encode()])?;
    Ok(())
}

pub(super) fn load_log(db: &Db, id: CommunityId) -> Result<AuthorityLog> {
    let stored: Option<Vec<u8>> = db
        .conn()
        .query_row(
            "SELECT value FROM meta WHERE key = 'community_id'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    if stored.as_deref() != Some(id.as_bytes().as_slice()) {
        return Err(Error::Corrupt(
            "community file belongs to another community".into(),
        ));
    }
    // Ops in the file were authenticated when they arrived; reading them
    // back checks each one's hash against the row instead of its signature
    // again (which cost 37 µs an op at every open).
    let read = |sql: &str| -> Result<Vec<(OpHash, SignedOp)>> {
        let mut stmt = db.conn().prepare(sql)?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (hash, bytes) = row?;
            let op = SignedOp::decode(&bytes)?;
            if op.hash().as_bytes().as_slice() != hash.as_slice() {
                return Err(Error::Corrupt(
                    "authority op does not match its hash".into(),
                ));
            }
            out.push((op.hash(), op));
        }
        Ok(out)
    };
    let mut ops = read("SELECT hash, bytes FROM auth_ops ORDER BY rowid")?.into_iter();
    let (_, genesis) = ops
        .next()
        .ok_or_else(|| Error::Corrupt("no genesis".into()))?;
    let mut log = AuthorityLog::new(genesis)?;
    if log.community_id() != id {
        return Err(Error::Corrupt(
            "genesis does not match the community".into(),
        ));
    }
    for (hash, op) in ops.chain(read("SELECT hash, bytes FROM auth_pending")?) {
        log.insert_authenticated(hash, op);
    }
    Ok(log)
}

pub(super) fn load_doc<'a>(
    db: &Db,
    docs: &'a mut HashMap<DocId, Loaded>,
    doc_id: &DocId,
    actor: &automerge::ActorId,
) -> Result<&'a mut Loaded> {
    db.read(|tx| load_doc_tx(tx, docs, doc_id, actor).map(|_| ()))?;
    docs.get_mut(doc_id)
        .ok_or_else(|| Error::Corrupt("document not loaded".into()))
}

/// Loads a document from its snapshot and later changes, once.
pub(super) fn load_doc_tx<'a>(
    tx: &Transaction<'_>,
    docs: &'a mut HashMap<DocId, Loaded>,
    doc_id: &DocId,
    actor: &automerge::ActorId,
) -> Result<&'a mut Loaded> {
    if !docs.contains_key(doc_id) {
        let name = doc_id.name();
        let snapshot: Option<(i64, Vec<u8>)> = tx
            .prepare_cached("SELECT through_seq, bytes FROM snapshots WHERE doc_id = ?1")?
            .query_row([&name], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let (through, mut doc) = match snapshot {
            Some((through, bytes)) => (through, Automerge::load(&bytes)?),
            None => (0, Automerge::new()),
        };
        let mut stmt = tx.prepare_cached(
            "SELECT bytes FROM changes WHERE doc_id = ?1 AND seq > ?2 ORDER BY seq",
        )?;
        let rows = stmt.query_map(params![name, through], |r| r.get::<_, Vec<u8>>(0))?;
        let mut changes = Vec::new();
        for row in rows {
            changes.push(
                automerge::Change::from_bytes(row?)
                    .map_err(|_| Error::Corrupt("stored change".into()))?,
            );
        }
        let since_snapshot = u32::try_from(changes.len()).unwrap_or(u32::MAX);
        doc.apply_changes(changes)?;
        doc.set_actor(actor.clone());
        docs.insert(
            doc_id.clone(),
            Loaded {
                doc,
                since_snapshot,
                loaded: LOADS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            },
        );
    }
    docs.get_mut(doc_id)
        .ok_or_else(|| Error::Corrupt("document not loaded".into()))
}

#[cfg(test)]
mod tests {
    use automerge::transaction::Transactable;
    use automerge::{ActorId, ROOT, ReadDoc};

    use super::*;

    /// A change Automerge panics on (its actor's second change numbered
    /// 7, a gap the validator refuses) is an error here, not a panic.
    #[test]
    fn a_panic_in_automerge_is_an_error() {
        let mut doc = Automerge::new().with_actor(ActorId::from(vec![1u8; 16]));
        let mut tx = doc.transaction();
        tx.put(ROOT, "a", 1).expect("a put");
        tx.commit();
        let mut next = doc.fork().with_actor(ActorId::from(vec![1u8; 16]));
        let mut tx = next.transaction();
        tx.put(ROOT, "b", 2).expect("a put");
        let (Some(hash), _) = tx.commit() else {
            panic!("a change");
        };
        let mut gap = next.get_change_by_hash(&hash).expect("the change").decode();
        gap.seq = 7;
        gap.hash = None;
        let gap = automerge::Change::from(gap);
        let applied = apply_guarded(&mut doc, [gap]);
        assert!(
            matches!(
                applied,
                Err(Error::Automerge(automerge::AutomergeError::Fail))
            ),
            "{applied:?}"
        );
    }
}
