//! Moderation reports through a community handle.

use automerge::ROOT;
use automerge::transaction::Transactable;
use rusqlite::params;

use super::Community;
use super::persist::load_doc;
use crate::authority::Role;
use crate::docs::{DocId, actor_of};
use crate::error::{Error, Result};
use crate::report::{ReportCategory, ReportId, ReportState, ReportTarget, Resolution};
use crate::time::Timestamp;

impl Community {
    /// Files a report on a request, an offer or a member. It reaches
    /// moderators only (and stays with its reporter).
    pub fn file_report(
        &mut self,
        target: ReportTarget,
        category: ReportCategory,
        text: &str,
        now: Timestamp,
    ) -> Result<ReportId> {
        if text.chars().count() > 1_000 {
            return Err(Error::InvalidArgument("report text too long".into()));
        }
        let id = ReportId::generate(self.me())?;
        self.write_doc(DocId::Report(id), now, |tx| {
            tx.put(ROOT, "target", target.encode())?;
            tx.put(ROOT, "category", category.as_str())?;
            tx.put(ROOT, "text", text)?;
            tx.put(ROOT, "created_at", now.as_millis())?;
            Ok(())
        })?;
        Ok(id)
    }

    /// Resolves (or re-resolves) a report (moderators). An upheld report is
    /// a trust penalty for the member it is against.
    pub fn resolve_report(
        &mut self,
        id: ReportId,
        resolution: Resolution,
        now: Timestamp,
    ) -> Result<()> {
        self.write_doc(DocId::Report(id), now, |tx| {
            tx.put(ROOT, "resolution", resolution.as_str())?;
            tx.put(ROOT, "resolved_at", now.as_millis())?;
            Ok(())
        })
    }

    /// Reports this device holds: all of them for a moderator, one's own
    /// otherwise; unresolved only if asked. Newest first.
    pub fn reports(&mut self, unresolved_only: bool) -> Result<Vec<ReportState>> {
        let me = self.me();
        let moderator = self.my_role() >= Some(Role::Moderator);
        let ids: Vec<String> = self
            .db
            .conn()
            .prepare_cached(
                "SELECT report_id FROM reports
                 WHERE (?1 = 0 OR resolution IS NULL) AND (?2 = 1 OR reporter = ?3)
                 ORDER BY created_at DESC, report_id",
            )?
            .query_map(
                params![unresolved_only, moderator, me.as_bytes().as_slice()],
                |r| r.get(0),
            )?
            .collect::<rusqlite::Result<_>>()?;
        let actor = actor_of(&me);
        let mut out = Vec::new();
        for id in ids {
            let id =
                ReportId::parse_stored(&id).ok_or_else(|| Error::Corrupt("report id".into()))?;
            let loaded = load_doc(&self.db, &mut self.docs, &DocId::Report(id), &actor)?;
            if let Some(state) = ReportState::read(&loaded.doc, id, None)? {
                out.push(state);
            }
        }
        Ok(out)
    }

    /// When upheld reports against `member` were resolved: trust penalties.
    pub(crate) fn upheld_against(
        &self,
        member: &crate::identity::MemberId,
    ) -> Result<Vec<Timestamp>> {
        let mut stmt = self.db.conn().prepare_cached(
            "SELECT resolved_at FROM reports WHERE target_member = ?1 AND resolution = 'upheld'",
        )?;
        let rows = stmt.query_map([member.as_bytes().as_slice()], |r| r.get::<_, i64>(0))?;
        rows.map(|r| Ok(Timestamp::from_millis(r?))).collect()
    }
}
