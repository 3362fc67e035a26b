//! Karma, trust and badges of a member, computed from the matches
//! projection and `now` (nothing derived is ever stored), and the
//! time-driven match reminders.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use rusqlite::params;

use super::Community;
use crate::error::{Error, Result};
use crate::identity::MemberId;
use crate::karma::{self, CompletedMatch, KarmaHistoryEntry, KarmaPool};
use crate::notify::Event;
use crate::request::RequestId;
use crate::time::Timestamp;
use crate::trust::{self, Badge, TrustInput, TrustScore};

/// What the figures of members were computed from, kept until the file
/// changes (any committed write moves its generation on).
#[derive(Debug, Default)]
pub(super) struct FiguresCache(RefCell<Figures>);

#[derive(Debug, Default)]
struct Figures {
    generation: u64,
    matches: HashMap<MemberId, Arc<[CompletedMatch]>>,
    events: HashMap<MemberId, Arc<[karma::KarmaEvent]>>,
}

impl FiguresCache {
    /// The entries, emptied first if the file moved past them.
    fn at(&self, generation: u64) -> std::cell::RefMut<'_, Figures> {
        let mut f = self.0.borrow_mut();
        if f.generation != generation {
            *f = Figures {
                generation,
                ..Figures::default()
            };
        }
        f
    }
}

/// A match waiting this long for completion earns its parties a reminder.
const REMIND_AFTER_MS: i64 = 3 * Timestamp::DAY;

impl Community {
    /// Completed matches of this community in which `member` took part.
    pub fn completed_matches(&self, member: &MemberId) -> Result<Vec<CompletedMatch>> {
        let mut stmt = self.db.conn().prepare_cached(
            "SELECT offer_id, requester, responder, accepted_at, completed_at, invalidated, shares
             FROM matches WHERE requester = ?1 AND completed_at IS NOT NULL
             UNION ALL
             SELECT offer_id, requester, responder, accepted_at, completed_at, invalidated, shares
             FROM matches WHERE responder = ?1 AND requester != ?1 AND completed_at IS NOT NULL",
        )?;
        let blob = |r: &rusqlite::Row<'_>, i: usize| -> rusqlite::Result<[u8; 32]> {
            let bytes = r.get_ref(i)?.as_blob()?;
            bytes.try_into().map_err(|_| {
                rusqlite::Error::FromSqlConversionFailure(
                    i,
                    rusqlite::types::Type::Blob,
                    "member id".into(),
                )
            })
        };
        let rows = stmt.query_map(params![member.as_bytes().as_slice()], |r| {
            Ok((
                r.get::<_, String>(0)?,
                blob(r, 1)?,
                blob(r, 2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, bool>(5)?,
                r.get::<_, u8>(6)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, requester, helper, accepted, completed, invalidated, shares) = row?;
            let (requester, helper) = (
                MemberId::from_stored(requester),
                MemberId::from_stored(helper),
            );
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
                communities_matched: shares,
                invalidated,
            });
        }
        Ok(out)
    }

    /// [`Community::completed_matches`], kept until the file changes.
    fn matches_of(&self, member: &MemberId) -> Result<Arc<[CompletedMatch]>> {
        let generation = self.db.generation();
        if let Some(m) = self.figures.at(generation).matches.get(member) {
            return Ok(m.clone());
        }
        let matches: Arc<[CompletedMatch]> = self.completed_matches(member)?.into();
        self.figures
            .at(generation)
            .matches
            .insert(*member, matches.clone());
        Ok(matches)
    }

    /// A member's karma events here, kept until the file changes.
    fn karma_events_of(&self, member: &MemberId) -> Result<Arc<[karma::KarmaEvent]>> {
        let generation = self.db.generation();
        if let Some(e) = self.figures.at(generation).events.get(member) {
            return Ok(e.clone());
        }
        let pool = KarmaPool::from(&self.auth.settings);
        let events: Arc<[karma::KarmaEvent]> =
            karma::karma_events(&self.matches_of(member)?, |_| pool).into();
        self.figures
            .at(generation)
            .events
            .insert(*member, events.clone());
        Ok(events)
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

    /// Badges this device's member earned in this community through the
    /// matches (by offer id) that just completed: those held with them and
    /// not without them. (`bridge_builder` looks across communities and is
    /// left to `Karmyq::badges`.)
    pub(crate) fn badges_earned(&self, completed: &[String], now: Timestamp) -> Result<Vec<Event>> {
        let me = self.me();
        let matches = self.completed_matches(&me)?;
        let before: Vec<CompletedMatch> = matches
            .iter()
            .filter(|m| !completed.contains(&m.id))
            .cloned()
            .collect();
        let had = trust::badges(&me, &self.id, &before, &[], now);
        Ok(trust::badges(&me, &self.id, &matches, &[], now)
            .into_iter()
            .filter(|b| !had.contains(b) && *b != Badge::BridgeBuilder)
            .map(|badge| Event::BadgeEarned {
                community: self.id,
                badge,
            })
            .collect())
    }

    /// Reminds this device's member, once per match, of their matches that
    /// have waited 3 days or more for completion (DOMAIN.md,
    /// `match_reminder`); returns how many reminders went out. Time-driven:
    /// the app calls it when it wakes (no background job in core).
    pub fn send_due_reminders(&mut self, now: Timestamp) -> Result<usize> {
        let me = self.me();
        let due_before = now.as_millis().saturating_sub(REMIND_AFTER_MS);
        let due: Vec<(String, String)> = self
            .db
            .conn()
            .prepare_cached(
                "SELECT m.request_id, m.offer_id FROM matches m
                 JOIN requests r ON r.request_id = m.request_id
                 WHERE r.state = 'matched' AND m.completed_at IS NULL
                   AND m.accepted_at <= ?1 AND (m.requester = ?2 OR m.responder = ?2)
                   AND NOT EXISTS (SELECT 1 FROM reminders x
                                   WHERE x.request_id = m.request_id AND x.offer_id = m.offer_id)",
            )?
            .query_map(params![due_before, me.as_bytes().as_slice()], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?
            .collect::<rusqlite::Result<_>>()?;
        self.db.write(|tx| {
            for (request, offer) in &due {
                tx.execute(
                    "INSERT INTO reminders (request_id, offer_id, reminded_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (request_id) DO UPDATE
                     SET offer_id = excluded.offer_id, reminded_at = excluded.reminded_at",
                    params![request, offer, now.as_millis()],
                )?;
            }
            Ok(())
        })?;
        for (request, _) in &due {
            let request = RequestId::parse_stored(request)
                .ok_or_else(|| Error::Corrupt("request id".into()))?;
            self.outbox.push(Event::MatchReminder {
                community: self.id,
                request,
            });
        }
        self.dispatch(now)?;
        Ok(due.len())
    }

    /// A member's trust score in this community at `now`.
    pub fn trust(&self, member: &MemberId, now: Timestamp) -> Result<TrustScore> {
        let admitted_at = self
            .auth
            .members
            .get(member)
            .map(|m| m.admitted_at)
            .ok_or_else(|| Error::InvalidArgument("not a member".into()))?;
        let matches = self.matches_of(member)?;
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
