//! Suggested helpers for a request and the items a member's feed ranks,
//! gathered from the projections and scored by `crate::matching`.

use std::collections::HashMap;

use rusqlite::{OptionalExtension, params};

use super::Community;
use super::projection::member_from_blob;
use crate::error::Result;
use crate::identity::MemberId;
use crate::matching::{self, BlockList, Candidate, FeedItem, RequestFacts, Suggestion};
use crate::request::{Category, RequestId, RequestStatus, Urgency};
use crate::time::Timestamp;

/// How many of a community's newest open requests the feed considers.
const FEED_CANDIDATES: u32 = 500;

impl Community {
    /// Helpers to suggest for an open request (DOMAIN.md's score, best ten,
    /// never the requester, never across a block this device knows of).
    pub fn suggested_helpers(
        &mut self,
        request: RequestId,
        now: Timestamp,
    ) -> Result<Vec<Suggestion>> {
        let state = self.request(request, now)?.request;
        let facts = RequestFacts {
            id: request,
            community: self.id,
            category: state.draft.category,
            tags: Vec::new(),
            urgency: state.draft.urgency,
            location: state.draft.location.clone(),
        };
        let active = self.active_matches_by_helper()?;
        let mut candidates = Vec::new();
        for m in self.members()? {
            let profile = m.profile.unwrap_or_default();
            candidates.push(Candidate {
                member: m.id,
                skills: profile.skills,
                location: profile.location,
                active_matches: active.get(&m.id).copied().unwrap_or(0),
                trust: self.trust(&m.id, now)?.score,
            });
        }
        Ok(matching::suggest_helpers(
            &facts,
            &candidates,
            &self.block_list()?,
        ))
    }

    /// How well this device's member suits each of these requests, read
    /// from the projections (requests by members they blocked are skipped).
    pub(crate) fn my_scores(&self, requests: &[RequestId]) -> Result<Vec<(RequestId, f64)>> {
        let me = self.me();
        if requests.is_empty() || self.my_role().is_none() {
            return Ok(Vec::new());
        }
        let blocked = self.hub.blocked()?;
        let profile = self.profile(&me)?.unwrap_or_default();
        let me_as = Candidate {
            member: me,
            skills: profile.skills,
            location: profile.location,
            active_matches: self
                .active_matches_by_helper()?
                .get(&me)
                .copied()
                .unwrap_or(0),
            trust: 0,
        };
        let mut stmt = self.db.conn().prepare_cached(
            "SELECT category, urgency, location FROM requests WHERE request_id = ?1",
        )?;
        let mut out = Vec::new();
        for &request in requests {
            if blocked.contains(&request.requester) {
                continue;
            }
            let row: Option<(String, i64, Option<String>)> = stmt
                .query_row([request.to_string()], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
                .optional()?;
            let Some((category, urgency, location)) = row else {
                continue;
            };
            let facts = RequestFacts {
                id: request,
                community: self.id,
                category: Category::parse(&category).unwrap_or(Category::Other),
                tags: Vec::new(),
                urgency: Urgency::from_index(urgency).unwrap_or(Urgency::Medium),
                location,
            };
            out.push((request, matching::candidate_score(&facts, &me_as).total));
        }
        Ok(out)
    }

    /// This device's blocks, as (blocker, blocked) pairs.
    pub(crate) fn block_list(&self) -> Result<BlockList> {
        let me = self.me();
        Ok(self.hub.blocked()?.into_iter().map(|b| (me, b)).collect())
    }

    /// Live, uncompleted matches per helper.
    fn active_matches_by_helper(&self) -> Result<HashMap<MemberId, u32>> {
        let mut stmt = self.db.conn().prepare_cached(
            "SELECT m.responder, count(*) FROM matches m
             JOIN requests r ON r.request_id = m.request_id
             WHERE m.completed_at IS NULL AND r.state = 'matched'
             GROUP BY m.responder",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, u32>(1)?)))?;
        let mut out = HashMap::new();
        for row in rows {
            let (member, n) = row?;
            out.insert(member_from_blob(&member)?, n);
        }
        Ok(out)
    }

    /// This community's candidates for a member's feed: its newest open
    /// requests and the matches completed in the last week.
    pub(crate) fn feed_items(&self, now: Timestamp) -> Result<Vec<FeedItem>> {
        let week_ago = now
            .as_millis()
            .saturating_sub(matching::RECENT_COMPLETION_MS);
        let mut stmt = self.db.conn().prepare_cached(
            "SELECT r.request_id, r.category, r.urgency, r.state, r.created_at, r.expires_at,
                    m.completed_at, m.responder
             FROM requests r LEFT JOIN matches m ON m.request_id = r.request_id
             WHERE r.hidden IS NULL AND (
                (r.state = 'open' AND r.expires_at > ?1 AND r.request_id IN (
                    SELECT request_id FROM requests WHERE state = 'open'
                    ORDER BY created_at DESC LIMIT ?3))
                OR (r.state = 'completed' AND m.completed_at > ?2 AND m.invalidated = 0))",
        )?;
        let rows = stmt.query_map(params![now.as_millis(), week_ago, FEED_CANDIDATES], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, Option<i64>>(6)?,
                r.get::<_, Option<Vec<u8>>>(7)?,
            ))
        })?;
        let activity = matching::community_activity(&self.recent_requests(now)?, now);
        let mut trust: HashMap<MemberId, u8> = HashMap::new();
        let mut items = Vec::new();
        for row in rows {
            let (id, category, urgency, state, created, expires, completed, helper) = row?;
            let corrupt = || crate::error::Error::Corrupt("request row".into());
            let id = RequestId::parse(&id).ok_or_else(corrupt)?;
            let requester_trust = match trust.get(&id.requester) {
                Some(t) => *t,
                None => {
                    let t = self.trust(&id.requester, now).map_or(0, |t| t.score);
                    trust.insert(id.requester, t);
                    t
                }
            };
            items.push(FeedItem {
                id,
                community: self.id,
                category: Category::parse(&category).ok_or_else(corrupt)?,
                tags: Vec::new(),
                urgency: Urgency::from_index(urgency).ok_or_else(corrupt)?,
                status: RequestStatus::parse(&state).ok_or_else(corrupt)?,
                created_at: Timestamp::from_millis(created),
                expires_at: Timestamp::from_millis(expires),
                completed_at: completed.map(Timestamp::from_millis),
                helper: helper.map(|h| member_from_blob(&h)).transpose()?,
                requester_trust,
                community_activity: activity,
            });
        }
        Ok(items)
    }

    /// Requests created in the activity window, with their status at `now`.
    fn recent_requests(&self, now: Timestamp) -> Result<Vec<(Timestamp, RequestStatus)>> {
        let since = now.as_millis().saturating_sub(matching::ACTIVITY_WINDOW_MS);
        let mut stmt = self.db.conn().prepare_cached(
            "SELECT created_at, state, expires_at FROM requests WHERE created_at > ?1",
        )?;
        let rows = stmt.query_map([since], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (created, state, expires) = row?;
            let mut status = RequestStatus::parse(&state)
                .ok_or_else(|| crate::error::Error::Corrupt("request state".into()))?;
            if status == RequestStatus::Open && now.as_millis() >= expires {
                status = RequestStatus::Expired;
            }
            out.push((Timestamp::from_millis(created), status));
        }
        Ok(out)
    }
}
