//! Karma: the points members earn for completed matches, decaying with a
//! half-life of [`HALF_LIFE_MS`].
//!
//! Pure functions of plain records and an explicit `now`, fed from the
//! projections of completed matches:
//!
//! - [`karma_events`] turns completed matches into undecayed [`KarmaEvent`]s:
//!   base points (with the repeat-pair factor, the cross-post split and the
//!   daily cap) and the first-help and milestone bonuses;
//! - [`karma`] sums events at an instant, per community or in total;
//! - [`karma_history`] lists them newest first with their value now;
//! - [`display_karma`] rounds a figure for display, the only place it is rounded.
//!
//! Readings of DOMAIN.md made here:
//!
//! - Every count (first help, milestones, repeat pairs, daily cap) is kept per
//!   community, so every member of a community derives the same karma from
//!   that community's data alone, whatever other communities their device holds.
//! - The repeat-pair window is the 30 days ending at a completion, half-open:
//!   a completion exactly 30 days earlier is outside it.
//! - The daily cap is per member, per community, per UTC calendar day of the
//!   completion; it covers base points earned as helper and as requester.
//! - A cross-posted match arrives as one [`CompletedMatch`] per community it was
//!   matched in; each pays the base pool divided by `communities_matched`
//!   (clamped to 1..=3). Bonuses are not split: they follow the helper's count
//!   of helps in each community, and the match counts as a help in each.
//! - Bonuses are neither scaled by the repeat factor nor capped, so a fifth
//!   repeat in 30 days earns no base points but still counts towards milestones.
//! - Events worth nothing (a 0 factor, a spent cap, a zero pool) are not emitted.

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use crate::authority::{CommunityId, Settings};
use crate::identity::MemberId;
use crate::time::Timestamp;

/// The karma half-life `H` = 182.625 days (15,778,800 s), in milliseconds:
/// the one decay constant for karma and trust penalties.
pub const HALF_LIFE_MS: i64 = 15_778_800_000;
/// Shortest time from acceptance to completion for a match to earn karma (15 min).
pub const MIN_MATCH_MS: i64 = 15 * 60 * Timestamp::SECOND;
/// Length of the repeat-pair window (30 days).
pub const REPEAT_WINDOW_MS: i64 = 30 * Timestamp::DAY;
/// Factors for the 1st, 2nd, 3rd and 4th match of a pair within the window;
/// later ones earn 0.
pub const REPEAT_FACTORS: [f64; 4] = [1.0, 1.0, 0.5, 0.25];
/// Most base points a member earns per community per UTC day.
pub const DAILY_CAP: f64 = 60.0;
/// Bonus for a helper's first help in a community.
pub const FIRST_HELP_BONUS: f64 = 15.0;
/// Milestones: the n-th help in a community and its bonus.
pub const MILESTONES: [(u32, f64); 3] = [(10, 25.0), (50, 50.0), (100, 100.0)];
/// Most communities a cross-posted match's pool is split across.
pub const MAX_SPLIT: u8 = 3;

/// One completed match as one community's projection records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletedMatch {
    /// Stable match id; the same in every community of a cross-posted request.
    pub id: String,
    /// The community this record belongs to.
    pub community: CommunityId,
    /// Who asked for help.
    pub requester: MemberId,
    /// Who helped.
    pub helper: MemberId,
    /// When the requester accepted the offer.
    pub accepted_at: Timestamp,
    /// When the second party confirmed.
    pub completed_at: Timestamp,
    /// Whether both parties were members of `community` at acceptance.
    pub both_members_at_acceptance: bool,
    /// Communities the request was matched in (1..=3; other values are clamped).
    pub communities_matched: u8,
    /// A moderator invalidated the match (reversible): it counts nowhere.
    pub invalidated: bool,
}

impl CompletedMatch {
    /// Whether the match earns karma and counts for trust and badges: two
    /// different people, both members at acceptance, completed at least
    /// 15 minutes after acceptance, and not invalidated.
    pub fn is_eligible(&self) -> bool {
        self.helper != self.requester
            && self.both_members_at_acceptance
            && !self.invalidated
            && self
                .completed_at
                .as_millis()
                .saturating_sub(self.accepted_at.as_millis())
                >= MIN_MATCH_MS
    }

    /// The other party, if `member` took part.
    pub fn counterparty(&self, member: &MemberId) -> Option<MemberId> {
        if self.helper == *member {
            Some(self.requester)
        } else if self.requester == *member {
            Some(self.helper)
        } else {
            None
        }
    }

    /// How many ways the pool is split.
    fn split(&self) -> f64 {
        f64::from(self.communities_matched.clamp(1, MAX_SPLIT))
    }
}

/// Eligible matches, each `(community, id)` once (the earliest record wins),
/// in `(completed_at, id, community)` order.
pub(crate) fn eligible_in_order(matches: &[CompletedMatch]) -> Vec<&CompletedMatch> {
    let mut out: Vec<&CompletedMatch> = matches.iter().filter(|m| m.is_eligible()).collect();
    out.sort_by(|a, b| {
        (a.completed_at, &a.id, a.community).cmp(&(b.completed_at, &b.id, b.community))
    });
    let mut seen = HashSet::default();
    out.retain(|m| seen.insert((m.community, m.id.as_str())));
    out
}

/// A community's karma pool: base points for each side of a completed match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KarmaPool {
    /// Points for the helper (default 10).
    pub helper: u32,
    /// Points for the requester (default 5).
    pub requester: u32,
}

impl From<&Settings> for KarmaPool {
    fn from(s: &Settings) -> Self {
        KarmaPool {
            helper: s.karma_helper,
            requester: s.karma_requester,
        }
    }
}

impl Default for KarmaPool {
    fn default() -> Self {
        KarmaPool::from(&Settings::default())
    }
}

/// Why karma was awarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum KarmaReason {
    /// Base points for helping.
    Help,
    /// Base points for being helped.
    Helped,
    /// Bonus for a helper's first help in the community.
    FirstHelp,
    /// Bonus for the helper's n-th help in the community.
    Milestone(u32),
}

/// Karma awarded to one member in one community, undecayed.
#[derive(Debug, Clone, PartialEq)]
pub struct KarmaEvent {
    /// Who earned it.
    pub member: MemberId,
    /// Where.
    pub community: CommunityId,
    /// The match that earned it.
    pub match_id: String,
    /// When (the match's completion).
    pub at: Timestamp,
    /// Points at `at`, before decay.
    pub points: f64,
    /// Why.
    pub reason: KarmaReason,
}

impl KarmaEvent {
    fn concerns(&self, member: &MemberId, community: Option<&CommunityId>) -> bool {
        self.member == *member && community.is_none_or(|c| self.community == *c)
    }

    fn order_key(&self) -> (Timestamp, &str, CommunityId, KarmaReason) {
        (self.at, &self.match_id, self.community, self.reason)
    }
}

/// The karma events of completed matches, in `(completed_at, id, community)`
/// order; within a match: helper, requester, then the helper's bonus.
///
/// Ineligible matches earn nothing and count nowhere. `pool` gives each
/// community's pool (`|c| KarmaPool::from(&settings_of(c))`).
pub fn karma_events(
    matches: &[CompletedMatch],
    pool: impl Fn(&CommunityId) -> KarmaPool,
) -> Vec<KarmaEvent> {
    let mut ledger = Ledger::default();
    let mut events = Vec::new();
    for m in eligible_in_order(matches) {
        ledger.award(m, pool(&m.community), &mut events);
    }
    events
}

/// The running counts that later awards depend on, all per community.
#[derive(Default)]
struct Ledger {
    /// Recent completions of each unordered pair.
    pairs: HashMap<(CommunityId, MemberId, MemberId), Vec<Timestamp>>,
    /// Base points granted per member and UTC day.
    days: HashMap<(CommunityId, MemberId, i64), f64>,
    /// Helps per helper.
    helps: HashMap<(CommunityId, MemberId), u32>,
}

impl Ledger {
    fn award(&mut self, m: &CompletedMatch, pool: KarmaPool, out: &mut Vec<KarmaEvent>) {
        let factor = self.repeat_factor(m) / m.split();
        let base = [
            (m.helper, pool.helper, KarmaReason::Help),
            (m.requester, pool.requester, KarmaReason::Helped),
        ];
        for (member, points, reason) in base {
            let points = self.capped(m, member, f64::from(points) * factor);
            push(out, m, member, points, reason);
        }
        if let Some((points, reason)) = self.bonus(m) {
            push(out, m, m.helper, points, reason);
        }
    }

    /// The factor for the k-th completion of this pair in the window ending now.
    /// Matches come in completion order, so older entries can be dropped.
    fn repeat_factor(&mut self, m: &CompletedMatch) -> f64 {
        let pair = (m.helper.min(m.requester), m.helper.max(m.requester));
        let times = self.pairs.entry((m.community, pair.0, pair.1)).or_default();
        let now = m.completed_at.as_millis();
        times.retain(|t| now.saturating_sub(t.as_millis()) < REPEAT_WINDOW_MS);
        times.push(m.completed_at);
        REPEAT_FACTORS.get(times.len() - 1).copied().unwrap_or(0.0)
    }

    /// `points`, cut to what is left of the member's daily cap.
    fn capped(&mut self, m: &CompletedMatch, member: MemberId, points: f64) -> f64 {
        let day = m.completed_at.as_millis().div_euclid(Timestamp::DAY);
        let used = self.days.entry((m.community, member, day)).or_insert(0.0);
        let granted = points.min(DAILY_CAP - *used).max(0.0);
        *used += granted;
        granted
    }

    /// Counts the help and returns its bonus, if any.
    fn bonus(&mut self, m: &CompletedMatch) -> Option<(f64, KarmaReason)> {
        let count = self.helps.entry((m.community, m.helper)).or_insert(0);
        *count += 1;
        if *count == 1 {
            return Some((FIRST_HELP_BONUS, KarmaReason::FirstHelp));
        }
        MILESTONES
            .iter()
            .find(|(n, _)| n == count)
            .map(|&(n, points)| (points, KarmaReason::Milestone(n)))
    }
}

fn push(
    out: &mut Vec<KarmaEvent>,
    m: &CompletedMatch,
    member: MemberId,
    points: f64,
    reason: KarmaReason,
) {
    if points > 0.0 {
        out.push(KarmaEvent {
            member,
            community: m.community,
            match_id: m.id.clone(),
            at: m.completed_at,
            points,
            reason,
        });
    }
}

/// `points` earned at `at`, seen at `now`: `points · 2^(-(now − at) / H)`.
/// Points from the future (`at > now`) count 0.
pub fn decay(points: f64, at: Timestamp, now: Timestamp) -> f64 {
    let age = now.as_millis().saturating_sub(at.as_millis());
    if age < 0 {
        return 0.0;
    }
    points * (-(age as f64) / HALF_LIFE_MS as f64).exp2()
}

/// A member's karma at `now`: in one community, or in all (`None`), unrounded.
pub fn karma(
    events: &[KarmaEvent],
    member: &MemberId,
    community: Option<&CommunityId>,
    now: Timestamp,
) -> f64 {
    events
        .iter()
        .filter(|e| e.concerns(member, community))
        .map(|e| decay(e.points, e.at, now))
        .sum()
}

/// One line of a member's karma history.
#[derive(Debug, Clone, PartialEq)]
pub struct KarmaHistoryEntry {
    /// The award, undecayed.
    pub event: KarmaEvent,
    /// What it is worth at the `now` the history was read.
    pub value_now: f64,
}

/// A member's karma events up to `now` (in one community, or all), newest
/// first; ties in time by match id, community and reason, all descending.
pub fn karma_history(
    events: &[KarmaEvent],
    member: &MemberId,
    community: Option<&CommunityId>,
    now: Timestamp,
) -> Vec<KarmaHistoryEntry> {
    let mut out: Vec<KarmaHistoryEntry> = events
        .iter()
        .filter(|e| e.concerns(member, community) && e.at <= now)
        .map(|e| KarmaHistoryEntry {
            value_now: decay(e.points, e.at, now),
            event: e.clone(),
        })
        .collect();
    out.sort_by(|a, b| b.event.order_key().cmp(&a.event.order_key()));
    out
}

/// Karma rounded for display, half away from zero.
pub fn display_karma(karma: f64) -> i64 {
    karma.round() as i64
}

/// Builders shared by the karma and trust tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;
    use crate::identity::Keypair;

    /// A UTC midnight.
    pub const T0: Timestamp = Timestamp::from_millis(20_834 * Timestamp::DAY);
    pub const HOUR: i64 = 3_600_000;

    pub fn member(n: u8) -> MemberId {
        Keypair::from_secret_bytes(&[n; 32]).member_id()
    }

    pub fn community(n: u8) -> CommunityId {
        CommunityId::from_bytes([n; 32])
    }

    pub fn at(days: i64, hours: i64) -> Timestamp {
        T0.plus_millis(days * Timestamp::DAY + hours * HOUR)
    }

    /// An eligible match in `c`, accepted an hour before it completed.
    pub fn done(
        id: &str,
        c: CommunityId,
        requester: MemberId,
        helper: MemberId,
        completed_at: Timestamp,
    ) -> CompletedMatch {
        CompletedMatch {
            id: id.to_string(),
            community: c,
            requester,
            helper,
            accepted_at: completed_at.plus_millis(-HOUR),
            completed_at,
            both_members_at_acceptance: true,
            communities_matched: 1,
            invalidated: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;

    fn events(matches: &[CompletedMatch]) -> Vec<KarmaEvent> {
        karma_events(matches, |_| KarmaPool::default())
    }

    /// (points, reason) awarded to `who` by match `id`.
    fn awards(events: &[KarmaEvent], who: &MemberId, id: &str) -> Vec<(f64, KarmaReason)> {
        events
            .iter()
            .filter(|e| e.member == *who && e.match_id == id)
            .map(|e| (e.points, e.reason))
            .collect()
    }

    fn base(events: &[KarmaEvent], who: &MemberId) -> f64 {
        events
            .iter()
            .filter(|e| {
                e.member == *who && matches!(e.reason, KarmaReason::Help | KarmaReason::Helped)
            })
            .map(|e| e.points)
            .sum()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn first_completed_match_pays_helper_25_and_requester_5() {
        let (c, req, help) = (community(1), member(1), member(2));
        let ev = events(&[done("m1", c, req, help, at(0, 12))]);
        assert_eq!(
            awards(&ev, &help, "m1"),
            [(10.0, KarmaReason::Help), (15.0, KarmaReason::FirstHelp)]
        );
        assert_eq!(awards(&ev, &req, "m1"), [(5.0, KarmaReason::Helped)]);
        assert_eq!(karma(&ev, &help, Some(&c), at(0, 12)), 25.0);
        assert_eq!(karma(&ev, &req, Some(&c), at(0, 12)), 5.0);
        assert!(
            ev.iter().all(|e| e.at == at(0, 12)),
            "awarded at completion"
        );
    }

    #[test]
    fn pool_comes_from_community_settings() {
        let (c, req, help) = (community(1), member(1), member(2));
        let settings = Settings {
            karma_helper: 8,
            karma_requester: 3,
            ..Settings::default()
        };
        let ev = karma_events(&[done("m1", c, req, help, at(0, 12))], |_| {
            KarmaPool::from(&settings)
        });
        assert_eq!(base(&ev, &help), 8.0);
        assert_eq!(base(&ev, &req), 3.0);
    }

    #[test]
    fn karma_halves_after_one_half_life() {
        let (c, req, help) = (community(1), member(1), member(2));
        let t = at(0, 12);
        let ev = events(&[done("m1", c, req, help, t)]);
        let later = t.plus_millis(HALF_LIFE_MS);
        assert_eq!(HALF_LIFE_MS, 182_625 * Timestamp::DAY / 1_000);
        assert!(close(karma(&ev, &help, None, later), 12.5));
        assert!(close(karma(&ev, &req, None, later), 2.5));
        assert!(close(
            karma(&ev, &help, None, later.plus_millis(HALF_LIFE_MS)),
            6.25
        ));
    }

    #[test]
    fn decay_ignores_the_future_and_rounds_only_for_display() {
        let t = at(0, 0);
        assert_eq!(decay(10.0, t, t), 10.0);
        assert_eq!(decay(10.0, t.plus_millis(1), t), 0.0);
        assert!(close(decay(20.0, t, t.plus_millis(2 * HALF_LIFE_MS)), 5.0));
        assert_eq!(display_karma(12.5), 13);
        assert_eq!(display_karma(12.49), 12);
        assert_eq!(display_karma(-2.5), -3);
        let ev = events(&[done("m1", community(1), member(1), member(2), t)]);
        assert_eq!(karma(&ev, &member(2), None, t.plus_millis(-1)), 0.0);
        assert!(karma_history(&ev, &member(2), None, t.plus_millis(-1)).is_empty());
    }

    #[test]
    fn repeat_pair_factors_within_30_days() {
        let (c, a, b) = (community(1), member(1), member(2));
        // Five matches between the same two people, roles swapped in the
        // middle: the pair is unordered.
        let ms = [
            done("m1", c, a, b, at(0, 10)),
            done("m2", c, a, b, at(3, 10)),
            done("m3", c, b, a, at(6, 10)),
            done("m4", c, a, b, at(9, 10)),
            done("m5", c, a, b, at(12, 10)),
        ];
        let ev = events(&ms);
        let base_of = |who: &MemberId, id: &str| -> f64 {
            awards(&ev, who, id)
                .iter()
                .filter(|(_, r)| matches!(r, KarmaReason::Help | KarmaReason::Helped))
                .map(|(p, _)| p)
                .sum()
        };
        assert_eq!(base_of(&b, "m1"), 10.0);
        assert_eq!(base_of(&b, "m2"), 10.0);
        assert_eq!(base_of(&a, "m3"), 5.0); // a helped: 10 × 0.5
        assert_eq!(base_of(&b, "m3"), 2.5); // b was helped: 5 × 0.5
        assert_eq!(base_of(&b, "m4"), 2.5);
        assert_eq!(base_of(&a, "m4"), 1.25);
        assert_eq!(base_of(&b, "m5"), 0.0);
        assert_eq!(base_of(&a, "m5"), 0.0);
        // Bonuses are not scaled: a's first help (m3) pays 15 in full.
        assert_eq!(
            awards(&ev, &a, "m3"),
            [(5.0, KarmaReason::Help), (15.0, KarmaReason::FirstHelp)]
        );
    }

    #[test]
    fn repeat_pair_window_is_30_days_ending_at_the_completion() {
        let (c, a, b) = (community(1), member(1), member(2));
        let third = |gap: i64| {
            let ms = [
                done("m1", c, a, b, at(0, 10)),
                done("m2", c, a, b, at(0, 11)),
                done("m3", c, a, b, at(0, 10).plus_millis(gap)),
            ];
            base(&events(&ms), &b) - 20.0
        };
        // m1 still in the window 1 ms before 30 days: m3 is the 3rd.
        assert_eq!(third(REPEAT_WINDOW_MS - 1), 5.0);
        // Exactly 30 days after m1: m1 has left, m3 is the 2nd.
        assert_eq!(third(REPEAT_WINDOW_MS), 10.0);
        // Well after both: the factor has reset.
        assert_eq!(third(40 * Timestamp::DAY), 10.0);
        // Another community keeps its own count.
        let ms = [
            done("m1", c, a, b, at(0, 10)),
            done("m2", c, a, b, at(0, 11)),
            done("m3", community(2), a, b, at(0, 12)),
        ];
        assert_eq!(base(&events(&ms), &b), 30.0);
    }

    #[test]
    fn daily_cap_limits_base_points_not_bonuses_and_resets_at_utc_midnight() {
        let (c, helper) = (community(1), member(1));
        let mut ms: Vec<CompletedMatch> = (0..7u8)
            .map(|i| {
                done(
                    &format!("d{i}"),
                    c,
                    member(10 + i),
                    helper,
                    at(0, 8 + i64::from(i)),
                )
            })
            .collect();
        let ev = events(&ms);
        assert_eq!(base(&ev, &helper), 60.0);
        let undecayed: f64 = ev
            .iter()
            .filter(|e| e.member == helper)
            .map(|e| e.points)
            .sum();
        assert_eq!(undecayed, 75.0);
        assert!(awards(&ev, &helper, "d6").is_empty(), "7th help: cap spent");
        assert_eq!(
            base(&ev, &member(16)),
            5.0,
            "requesters have their own caps"
        );
        // The last minute of the day is still capped; the next UTC day is not.
        ms.push(done(
            "late",
            c,
            member(20),
            helper,
            at(1, 0).plus_millis(-60_000),
        ));
        ms.push(done("next", c, member(21), helper, at(1, 0)));
        let ev = events(&ms);
        assert!(awards(&ev, &helper, "late").is_empty());
        assert_eq!(awards(&ev, &helper, "next"), [(10.0, KarmaReason::Help)]);
    }

    #[test]
    fn daily_cap_cuts_inside_an_award_and_counts_both_roles() {
        let (c, x) = (community(1), member(1));
        let mut ms: Vec<CompletedMatch> = (0..5u8)
            .map(|i| {
                done(
                    &format!("h{i}"),
                    c,
                    member(10 + i),
                    x,
                    at(0, 8 + i64::from(i)),
                )
            })
            .collect();
        ms.push(done("r", c, x, member(20), at(0, 14))); // x is helped: 55
        ms.push(done("h5", c, member(21), x, at(0, 15))); // 10 cut to 5
        let ev = events(&ms);
        assert_eq!(awards(&ev, &x, "h5"), [(5.0, KarmaReason::Help)]);
        assert_eq!(base(&ev, &x), 60.0);
    }

    #[test]
    fn milestones_at_exactly_10_50_and_100_helps() {
        let (c, helper) = (community(1), member(1));
        // Two helps a day to distinct people: no repeat factor, no cap.
        let ms: Vec<CompletedMatch> = (0..101u8)
            .map(|i| {
                let when = at(i64::from(i / 2), 8 + i64::from(i % 2));
                done(&format!("m{i:03}"), c, member(10 + i), helper, when)
            })
            .collect();
        let ev = events(&ms);
        let bonuses: Vec<(&str, f64, KarmaReason)> = ev
            .iter()
            .filter(|e| !matches!(e.reason, KarmaReason::Help | KarmaReason::Helped))
            .map(|e| (e.match_id.as_str(), e.points, e.reason))
            .collect();
        assert_eq!(
            bonuses,
            [
                ("m000", 15.0, KarmaReason::FirstHelp),
                ("m009", 25.0, KarmaReason::Milestone(10)),
                ("m049", 50.0, KarmaReason::Milestone(50)),
                ("m099", 100.0, KarmaReason::Milestone(100)),
            ]
        );
        assert_eq!(base(&ev, &helper), 1010.0);
    }

    #[test]
    fn ineligible_matches_earn_nothing_and_count_nowhere() {
        let (c, a, b) = (community(1), member(1), member(2));
        let t = at(0, 12);
        let self_help = done("self", c, a, a, t);
        let mut outsider = done("outsider", c, a, b, t);
        outsider.both_members_at_acceptance = false;
        let mut quick = done("quick", c, a, b, t);
        quick.accepted_at = t.plus_millis(-(MIN_MATCH_MS - Timestamp::SECOND)); // 14 min 59 s
        let mut invalid = done("invalid", c, a, b, t);
        invalid.invalidated = true;
        let bad = [self_help, outsider, quick.clone(), invalid];
        assert!(bad.iter().all(|m| !m.is_eligible()));
        assert!(events(&bad).is_empty());
        // They do not take the first-help bonus from a later eligible match.
        let mut later = bad.to_vec();
        later.push(done("ok", c, a, b, at(1, 12)));
        assert_eq!(
            awards(&events(&later), &b, "ok"),
            [(10.0, KarmaReason::Help), (15.0, KarmaReason::FirstHelp)]
        );
        // Exactly 15 minutes is enough.
        quick.accepted_at = t.plus_millis(-MIN_MATCH_MS);
        assert!(quick.is_eligible());
    }

    #[test]
    fn cross_posted_match_splits_the_pool_across_communities() {
        let (c1, c2, req, help) = (community(1), community(2), member(1), member(2));
        let mut m1 = done("x", c1, req, help, at(0, 12));
        m1.communities_matched = 2;
        let m2 = CompletedMatch {
            community: c2,
            ..m1.clone()
        };
        let ev = events(&[m1.clone(), m2]);
        for c in [c1, c2] {
            assert_eq!(karma(&ev, &help, Some(&c), at(0, 12)), 5.0 + 15.0);
            assert_eq!(karma(&ev, &req, Some(&c), at(0, 12)), 2.5);
        }
        assert_eq!(base(&ev, &help), 10.0, "the pool is paid once");
        assert_eq!(base(&ev, &req), 5.0);
        // Out-of-range counts are clamped to 1..=3.
        for (n, helper_base) in [(0, 10.0), (3, 10.0 / 3.0), (9, 10.0 / 3.0)] {
            let m = CompletedMatch {
                communities_matched: n,
                ..m1.clone()
            };
            assert!(close(base(&events(&[m]), &help), helper_base));
        }
    }

    #[test]
    fn duplicate_records_count_once_and_order_does_not_matter() {
        let (c, a, b) = (community(1), member(1), member(2));
        let ms = [
            done("m2", c, a, b, at(0, 12)),
            done("m1", c, a, b, at(0, 12)),
            done("m0", c, a, b, at(0, 11)),
        ];
        let mut doubled = ms.to_vec();
        doubled.extend(ms.iter().rev().cloned());
        let ev = events(&doubled);
        assert_eq!(ev, events(&ms));
        let ids: Vec<&str> = ev.iter().map(|e| e.match_id.as_str()).collect();
        assert_eq!(ids, ["m0", "m0", "m0", "m1", "m1", "m2", "m2"]);
        // (completed_at, id) order decides which is the 3rd of the pair: m2.
        assert_eq!(awards(&ev, &b, "m2"), [(5.0, KarmaReason::Help)]);
        assert!(events(&[]).is_empty());
    }

    #[test]
    fn total_and_per_community_karma() {
        let (c1, c2, c3) = (community(1), community(2), community(3));
        let (req, help) = (member(1), member(2));
        let ev = events(&[
            done("a", c1, req, help, at(0, 12)),
            done("b", c2, req, help, at(0, 12)),
            done("c", c1, help, req, at(0, 12)),
        ]);
        let now = at(0, 12);
        assert_eq!(karma(&ev, &help, Some(&c1), now), 25.0 + 5.0);
        assert_eq!(karma(&ev, &help, Some(&c2), now), 25.0);
        assert_eq!(karma(&ev, &help, Some(&c3), now), 0.0);
        assert_eq!(karma(&ev, &help, None, now), 55.0);
        assert_eq!(karma(&ev, &member(9), None, now), 0.0);
    }

    #[test]
    fn history_is_newest_first_with_decayed_values() {
        let (c1, c2, req, help) = (community(1), community(2), member(1), member(2));
        let t1 = at(0, 12);
        let t2 = t1.plus_millis(HALF_LIFE_MS);
        let ev = events(&[
            done("a", c1, req, help, t1),
            done("b", c2, req, help, t2),
            done("c", c1, req, help, t2.plus_millis(Timestamp::DAY)),
        ]);
        let now = t2.plus_millis(HALF_LIFE_MS);
        let h = karma_history(&ev, &help, None, now);
        let rows: Vec<(&str, KarmaReason, f64, f64)> = h
            .iter()
            .map(|h| {
                (
                    h.event.match_id.as_str(),
                    h.event.reason,
                    h.event.points,
                    h.value_now,
                )
            })
            .collect();
        let day = 2f64.powf(Timestamp::DAY as f64 / HALF_LIFE_MS as f64);
        let want = [
            ("c", KarmaReason::Help, 10.0, 5.0 * day),
            ("b", KarmaReason::FirstHelp, 15.0, 7.5),
            ("b", KarmaReason::Help, 10.0, 5.0),
            ("a", KarmaReason::FirstHelp, 15.0, 3.75),
            ("a", KarmaReason::Help, 10.0, 2.5),
        ];
        assert_eq!(rows.len(), want.len());
        for (got, want) in rows.iter().zip(want) {
            assert_eq!((got.0, got.1, got.2), (want.0, want.1, want.2));
            assert!(close(got.3, want.3), "{got:?} vs {want:?}");
        }
        let total: f64 = h.iter().map(|h| h.value_now).sum();
        assert!(close(total, karma(&ev, &help, None, now)));
        let only_c1 = karma_history(&ev, &help, Some(&c1), now);
        assert_eq!(only_c1.len(), 3);
        assert!(only_c1.iter().all(|h| h.event.community == c1));
    }
}
