//! Support for Karmyq's end-to-end tests: devices in temp dirs, a clock the
//! tests control, bundle exchange, forged changes and a look at the files.

use std::path::PathBuf;

use automerge::transaction::{CommitOptions, Transaction};
use automerge::{Automerge, ChangeHash, ReadDoc};
use karmyq_core::{
    Bundle, CommunityId, DocId, Heads, Karmyq, Keypair, MemberId, OpHash, Report, Result,
    SignedChange, Timestamp, actor_of, auth_message,
};
use tempfile::TempDir;

/// A fixed epoch for tests: 2027-01-15.
pub const EPOCH: i64 = 1_800_000_000_000;

/// `minutes` after the test epoch.
pub fn at(minutes: i64) -> Timestamp {
    Timestamp::from_millis(EPOCH + minutes * 60_000)
}

/// A device: a Karmyq client over its own temp dir.
pub struct Device {
    /// The client.
    pub k: Karmyq,
    dir: TempDir,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Device({:?})", self.k.member_id())
    }
}

impl Device {
    /// A new device with a new identity.
    pub fn new() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let k = Karmyq::open(dir.path())?;
        Ok(Device { k, dir })
    }

    /// Closes and reopens the client on the same directory.
    pub fn reopen(&mut self) -> Result<()> {
        self.close(|| Ok(()))
    }

    /// Closes the client, runs `meanwhile` (another process may use the
    /// directory then), and opens it again.
    pub fn close(&mut self, meanwhile: impl FnOnce() -> Result<()>) -> Result<()> {
        // A placeholder holds `k` while the directory is free: a client on
        // a directory of its own.
        let spare = tempfile::tempdir()?;
        drop(std::mem::replace(&mut self.k, Karmyq::open(spare.path())?));
        meanwhile()?;
        self.k = Karmyq::open(self.dir.path())?;
        Ok(())
    }

    /// The data directory.
    pub fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// The community file of `id`.
    pub fn file(&self, id: CommunityId) -> PathBuf {
        self.dir
            .path()
            .join("communities")
            .join(format!("{id}.sqlite3"))
    }

    /// Rows in a table of the community file, read with a separate
    /// connection (what is really on disk).
    pub fn rows(&self, id: CommunityId, table: &str) -> Result<i64> {
        let conn = rusqlite::Connection::open(self.file(id))?;
        Ok(conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))?)
    }

    /// Everything this device holds of the community that `other` lacks.
    pub fn bundle_for(&mut self, other: &mut Device, id: CommunityId) -> Result<Bundle> {
        let heads = match other.k.community(id) {
            Ok(c) => c.heads()?,
            Err(_) => Heads::empty(),
        };
        let reader = other.k.member_id();
        self.k.community(id)?.changes_since_for(&heads, &reader)
    }

    /// Sends this device's news to `other`.
    pub fn send_to(
        &mut self,
        other: &mut Device,
        id: CommunityId,
        now: Timestamp,
    ) -> Result<Report> {
        let bundle = self.bundle_for(other, id)?;
        other.k.receive(&bundle, now)
    }
}

/// Both directions, so the two devices hold the same.
pub fn sync(a: &mut Device, b: &mut Device, id: CommunityId, now: Timestamp) -> Result<()> {
    a.send_to(b, id, now)?;
    b.send_to(a, id, now)?;
    Ok(())
}

/// Alice founds a public community and Bob joins it; both synced at
/// minute 3.
pub fn two_neighbours() -> Result<(Device, Device, CommunityId)> {
    let mut alice = Device::new()?;
    let mut bob = Device::new()?;
    let id = alice
        .k
        .create_community("Elm Street", "", karmyq_core::Visibility::Public, at(0))?;
    alice.send_to(&mut bob, id, at(1))?;
    bob.k.community(id)?.join(at(2))?;
    sync(&mut alice, &mut bob, id, at(3))?;
    Ok((alice, bob, id))
}

/// A document rebuilt from the changes of a bundle (what any member holds).
pub fn doc_from(bundle: &Bundle, doc: &DocId) -> Result<Automerge> {
    let mut out = Automerge::new();
    let changes = bundle
        .changes
        .iter()
        .filter(|c| c.envelope.doc == doc.name())
        .map(|c| automerge::Change::from_bytes(c.bytes.clone()))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|_| karmyq_core::Error::Decode { what: "change" })?;
    out.apply_changes(changes)?;
    Ok(out)
}

/// A change made directly on a raw document by `keys`, signed as the API
/// would sign it: what a modified client could send.
pub fn forge(
    community: CommunityId,
    doc_id: &DocId,
    doc: &mut Automerge,
    auth_heads: Vec<OpHash>,
    keys: &Keypair,
    edit: impl FnOnce(&mut Transaction<'_>) -> std::result::Result<(), automerge::AutomergeError>,
) -> Result<SignedChange> {
    forge_as(
        community,
        doc_id,
        doc,
        auth_heads,
        keys,
        &keys.member_id(),
        edit,
    )
}

/// Like [`forge`], but the change's Automerge actor is `actor`'s key.
pub fn forge_as(
    community: CommunityId,
    doc_id: &DocId,
    doc: &mut Automerge,
    auth_heads: Vec<OpHash>,
    keys: &Keypair,
    actor: &MemberId,
    edit: impl FnOnce(&mut Transaction<'_>) -> std::result::Result<(), automerge::AutomergeError>,
) -> Result<SignedChange> {
    doc.set_actor(actor_of(actor));
    let mut tx = doc.transaction();
    edit(&mut tx)?;
    let (hash, _) =
        tx.commit_with(CommitOptions::default().with_message(auth_message(&auth_heads)));
    let hash: ChangeHash = hash.ok_or(karmyq_core::Error::InvalidArgument("empty edit".into()))?;
    let mut change = doc
        .get_change_by_hash(&hash)
        .ok_or(karmyq_core::Error::InvalidArgument("no change".into()))?;
    Ok(SignedChange::sign(community, doc_id, &mut change, keys))
}

/// A bundle carrying just these changes.
pub fn bundle_of(community: CommunityId, changes: Vec<SignedChange>) -> Bundle {
    let mut b = Bundle::new(community);
    b.changes = changes;
    b
}
