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
const FEED_CANDIDATES: u32 = 200;
/// How many of a community's newest completions of the week the feed considers.
const FEED_COMPLETIONS: u32 = 50;

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
    /// requests and the matches completed in the last week. Their
    /// `requester_trust` is left at 0: the ranking asks for it
    /// ([`crate::rank_feed_with`]) only for items that can reach the page.
    pub(crate) fn feed_items(&self, now: Timestamp) -> Result<Vec<FeedItem>> {
        let week_ago = now
            .as_millis()
            .saturating_sub(matching::RECENT_COMPLETION_MS);
        let activity = self.activity(now)?;
        let mut items = Vec::new();
        // The newest open, unexpired requests.
        let mut open = self.db.conn().prepare_cached(
            "SELECT request_id, category, urgency, state, created_at, expires_at, NULL, NULL
             FROM requests INDEXED BY requests_recent
             WHERE state = 'open' AND expires_at > ?1 AND hidden IS NULL
             ORDER BY created_at DESC LIMIT ?2",
        )?;
        let rows = open.query_map(params![now.as_millis(), FEED_CANDIDATES], feed_row)?;
        for row in rows {
            items.push(self.feed_item(row?, activity)?);
        }
        // The newest matches completed in the last week.
        let mut done = self.db.conn().prepare_cached(
            "SELECT r.request_id, r.category, r.urgency, r.state, r.created_at, r.expires_at,
                    m.completed_at, m.responder
             FROM matches m INDEXED BY matches_completed
             JOIN requests r ON r.request_id = m.request_id
             WHERE m.completed_at > ?1 AND m.invalidated = 0
               AND r.state = 'completed' AND r.hidden IS NULL
             ORDER BY m.completed_at DESC LIMIT ?2",
        )?;
        let rows = done.query_map(params![week_ago, FEED_COMPLETIONS], feed_row)?;
        for row in rows {
            items.push(self.feed_item(row?, activity)?);
        }
        Ok(items)
    }

    fn feed_item(&self, row: FeedRow, activity: f64) -> Result<FeedItem> {
        let (id, category, urgency, state, created, expires, completed, helper) = row;
        let corrupt = || crate::error::Error::Corrupt("request row".into());
        Ok(FeedItem {
            id: RequestId::parse_stored(&id).ok_or_else(corrupt)?,
            community: self.id,
            category: Category::parse(&category).ok_or_else(corrupt)?,
            tags: Vec::new(),
            urgency: Urgency::from_index(urgency).ok_or_else(corrupt)?,
            status: RequestStatus::parse(&state).ok_or_else(corrupt)?,
            created_at: Timestamp::from_millis(created),
            expires_at: Timestamp::from_millis(expires),
            completed_at: completed.map(Timestamp::from_millis),
            helper: helper.map(|h| member_from_blob(&h)).transpose()?,
            // Asked for by the ranking, only where it can matter.
            requester_trust: 0,
            community_activity: activity,
        })
    }

    /// This community's activity at `now` ([`matching::community_activity`]),
    /// counted in the projection.
    fn activity(&self, now: Timestamp) -> Result<f64> {
        let since = now.as_millis().saturating_sub(matching::ACTIVITY_WINDOW_MS);
        let (recent, completed): (i64, i64) = self
            .db
            .conn()
            .prepare_cached(
                "SELECT count(*), count(*) FILTER (WHERE state = 'completed')
                 FROM requests INDEXED BY requests_recent
                 WHERE state IN ('open', 'matched', 'completed', 'cancelled')
                   AND created_at > ?1 AND created_at <= ?2",
            )?
            .query_row(params![since, now.as_millis()], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
        Ok(matching::completion_share(
            usize::try_from(completed).unwrap_or(0),
            usize::try_from(recent).unwrap_or(0),
        ))
    }
}

/// A feed candidate as its query returns it.
type FeedRow = (
    String,
    String,
    i64,
    String,
    i64,
    i64,
    Option<i64>,
    Option<Vec<u8>>,
);

fn feed_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<FeedRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
    ))
}
