//! Karma, trust and badges of a member, computed from the matches
//! projection and `now` (nothing derived is ever stored).

use rusqlite::params;

use super::Community;
use super::projection::member_from_blob;
use crate::error::{Error, Result};
use crate::identity::MemberId;
use crate::karma::{self, CompletedMatch, KarmaHistoryEntry, KarmaPool};
use crate::time::Timestamp;
use crate::trust::{self, TrustInput, TrustScore};

impl Community {
    /// Completed matches of this community in which `member` took part.
    pub fn completed_matches(&self, member: &MemberId) -> Result<Vec<CompletedMatch>> {
        let mut stmt = self.db.conn().prepare_cached(
            "SELECT offer_id, requester, responder, accepted_at, completed_at, invalidated FROM matches
             WHERE completed_at IS NOT NULL AND (requester = ?1 OR responder = ?1)",
        )?;
        let rows = stmt.query_map(params![member.as_bytes().as_slice()], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, Vec<u8>>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, bool>(5)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, requester, helper, accepted, completed, invalidated) = row?;
            let (requester, helper) = (member_from_blob(&requester)?, member_from_blob(&helper)?);
            let accepted_at = Timestamp::from_millis(accepted);
            out.push(CompletedMatch {
                id,
                community: self.id,
                requester,
                helper,
                accepted_at,
                completed_at: Timestamp::from_millis(completed),
                both_members_at_acceptance: self.auth.member_at(&requester, accepted_at)
                    && self.auth.member_at(&helper, accepted_at),
                communities_matched: 1,
                invalidated,
            });
        }
        Ok(out)
    }

    fn karma_events_of(&self, member: &MemberId) -> Result<Vec<karma::KarmaEvent>> {
        let pool = KarmaPool::from(&self.auth.settings);
        let matches = self.completed_matches(member)?;
        Ok(karma::karma_events(&matches, |_| pool))
    }

    /// A member's karma in this community at `now`, decayed.
    pub fn karma(&self, member: &MemberId, now: Timestamp) -> Result<f64> {
        let events = self.karma_events_of(member)?;
        Ok(karma::karma(&events, member, Some(&self.id), now))
    }

    /// A member's karma events in this community, newest first, each with
    /// its decayed value at `now`.
    pub fn karma_history(
        &self,
        member: &MemberId,
        now: Timestamp,
    ) -> Result<Vec<KarmaHistoryEntry>> {
        let events = self.karma_events_of(member)?;
        Ok(karma::karma_history(&events, member, Some(&self.id), now))
    }

    /// A member's trust score in this community at `now`.
    pub fn trust(&self, member: &MemberId, now: Timestamp) -> Result<TrustScore> {
        let admitted_at = self
            .auth
            .members
            .get(member)
            .map(|m| m.admitted_at)
            .ok_or_else(|| Error::InvalidArgument("not a member".into()))?;
        let matches = self.completed_matches(member)?;
        // Penalties: matches a moderator invalidated (at their completion)
        // and upheld reports against the member (at their resolution).
        let mut penalties: Vec<Timestamp> = matches
            .iter()
            .filter(|m| m.invalidated)
            .map(|m| m.completed_at)
            .collect();
        penalties.extend(self.upheld_against(member)?);
        Ok(trust::trust(TrustInput {
            member,
            community: &self.id,
            admitted_at,
            matches: &matches,
            penalties: &penalties,
            now,
        }))
    }
}
