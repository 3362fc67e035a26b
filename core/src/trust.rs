//! Trust score and badges: pure functions of completed matches and `now`.
//!
//! Both count only eligible matches ([`CompletedMatch::is_eligible`]), each
//! `(community, id)` once, and nothing completed after `now`. A window of
//! `d` days is half-open, `(now − d, now]`: something exactly `d` days old
//! has left it.
//!
//! Readings of DOMAIN.md made here:
//!
//! - Penalties (upheld reports against the member, and invalidated matches the
//!   member took part in) come from the caller as timestamps: the moderation
//!   record is not a match, and an invalidated match no longer counts anywhere
//!   else. Each weighs 20, halving every
//!   [`HALF_LIFE_MS`](crate::karma::HALF_LIFE_MS); a future one weighs 0.
//! - `tenure` is in fractional days (ms / `Timestamp::DAY`), 0 before admission.
//! - Permanent badges use every eligible match up to `now`, with no window;
//!   "never lost" means time does not take them away, but an invalidation
//!   (which makes the match count nowhere) does.
//! - `first_helper`, `helper_*` and `connector` count helps in the community;
//!   `bridge_builder` counts communities with at least one help, a cross-posted
//!   match counting in each community it was matched in.
//! - `steady_hand` counts completions on either side; the caller passes the
//!   member's cancellations after acceptance in that community.

use std::collections::{BTreeMap, BTreeSet};

use crate::authority::CommunityId;
use crate::identity::MemberId;
use crate::karma::{CompletedMatch, decay, eligible_in_order};
use crate::time::Timestamp;

/// The trust window: matches completed in the last 365 days.
pub const TRUST_WINDOW_MS: i64 = 365 * Timestamp::DAY;
/// Shortest gap between two completions with one counterparty for depth (7 days).
pub const DEPTH_GAP_MS: i64 = 7 * Timestamp::DAY;
/// Most completions with one counterparty that count for volume.
pub const PER_COUNTERPARTY: usize = 3;
/// Weight of a fresh penalty.
pub const PENALTY_POINTS: f64 = 20.0;
/// The `steady_hand` window: the last 180 days.
pub const STEADY_WINDOW_MS: i64 = 180 * Timestamp::DAY;

/// What the trust score of one member in one community is computed from.
#[derive(Debug, Clone, Copy)]
pub struct TrustInput<'a> {
    /// Whose score.
    pub member: &'a MemberId,
    /// In which community.
    pub community: &'a CommunityId,
    /// When the member was admitted to the community.
    pub admitted_at: Timestamp,
    /// Completed matches; those of other communities and members are ignored.
    pub matches: &'a [CompletedMatch],
    /// Times of upheld reports against the member and of invalidations of
    /// matches the member took part in.
    pub penalties: &'a [Timestamp],
    /// The instant the score is computed for.
    pub now: Timestamp,
}

/// A trust score and its components (unrounded), for display.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrustScore {
    /// `clamp(round(volume + breadth + depth + tenure − penalty), 0, 100)`.
    pub score: u8,
    /// `V = min(40, 10 · log2(1 + n))`, `n` counting at most 3 per counterparty.
    pub volume: f64,
    /// `B = min(25, 2.5 · P)`, `P` distinct counterparties.
    pub breadth: f64,
    /// `D = min(15, 3 · R)`, `R` counterparties with completions 7+ days apart.
    pub depth: f64,
    /// `T = min(20, 20 · days since admission / 180)`.
    pub tenure: f64,
    /// `X = Σ 20 · 2^(-age / H)` over the penalties.
    pub penalty: f64,
}

/// The member's trust score in the community at `input.now`.
pub fn trust(input: TrustInput<'_>) -> TrustScore {
    let TrustInput {
        member,
        community,
        now,
        ..
    } = input;
    let by_counterparty = completions(input.matches, member, community, now, TRUST_WINDOW_MS);
    let n: usize = by_counterparty
        .values()
        .map(|times| times.len().min(PER_COUNTERPARTY))
        .sum();
    let deep = by_counterparty
        .values()
        .filter(|times| spans_a_week(times))
        .count();
    let days = now
        .as_millis()
        .saturating_sub(input.admitted_at.as_millis())
        .max(0) as f64
        / Timestamp::DAY as f64;

    let volume = (10.0 * (1.0 + n as f64).log2()).min(40.0);
    let breadth = (2.5 * by_counterparty.len() as f64).min(25.0);
    let depth = (3.0 * deep as f64).min(15.0);
    let tenure = (20.0 * days / 180.0).min(20.0);
    let penalty = input
        .penalties
        .iter()
        .map(|&at| decay(PENALTY_POINTS, at, now))
        .sum();
    let total: f64 = volume + breadth + depth + tenure - penalty;
    TrustScore {
        score: total.round().clamp(0.0, 100.0) as u8,
        volume,
        breadth,
        depth,
        tenure,
        penalty,
    }
}

/// Whether `t` lies in `(now − window, now]`.
fn within(t: Timestamp, now: Timestamp, window_ms: i64) -> bool {
    t <= now && now.as_millis().saturating_sub(t.as_millis()) < window_ms
}

/// Completion times of the member's eligible matches in the community within
/// the window, ascending, by counterparty.
fn completions(
    matches: &[CompletedMatch],
    member: &MemberId,
    community: &CommunityId,
    now: Timestamp,
    window_ms: i64,
) -> BTreeMap<MemberId, Vec<Timestamp>> {
    let mut out: BTreeMap<MemberId, Vec<Timestamp>> = BTreeMap::new();
    for m in eligible_in_order(matches) {
        if m.community == *community
            && within(m.completed_at, now, window_ms)
            && let Some(other) = m.counterparty(member)
        {
            out.entry(other).or_default().push(m.completed_at);
        }
    }
    out
}

/// Whether ascending `times` hold two at least [`DEPTH_GAP_MS`] apart.
fn spans_a_week(times: &[Timestamp]) -> bool {
    match (times.first(), times.last()) {
        (Some(first), Some(last)) => {
            last.as_millis().saturating_sub(first.as_millis()) >= DEPTH_GAP_MS
        }
        _ => false,
    }
}

/// A badge. Sorted in declaration order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Badge {
    /// Permanent: a first eligible help in the community.
    FirstHelper,
    /// Permanent: 10 eligible helps in the community.
    Helper10,
    /// Permanent: 50 eligible helps in the community.
    Helper50,
    /// Permanent: 100 eligible helps in the community.
    Helper100,
    /// Permanent: helped 10 distinct people in the community.
    Connector,
    /// Permanent: helped in 3 or more communities (of those on the device).
    BridgeBuilder,
    /// Held while, over the last 180 days, the member completed 10+ eligible
    /// matches in the community (either side) and cancelled none after acceptance.
    SteadyHand,
}

impl Badge {
    /// The stable name, for storage, notifications and the FFI.
    pub fn as_str(self) -> &'static str {
        match self {
            Badge::FirstHelper => "first_helper",
            Badge::Helper10 => "helper_10",
            Badge::Helper50 => "helper_50",
            Badge::Helper100 => "helper_100",
            Badge::Connector => "connector",
            Badge::BridgeBuilder => "bridge_builder",
            Badge::SteadyHand => "steady_hand",
        }
    }
}

/// The member's badges in `community` at `now`, sorted.
///
/// `matches` are the completed matches of every community on the device
/// (for `bridge_builder`); `cancellations` are the times the member cancelled
/// a match after acceptance in `community`.
pub fn badges(
    member: &MemberId,
    community: &CommunityId,
    matches: &[CompletedMatch],
    cancellations: &[Timestamp],
    now: Timestamp,
) -> Vec<Badge> {
    let helps: Vec<&CompletedMatch> = eligible_in_order(matches)
        .into_iter()
        .filter(|m| m.helper == *member && m.completed_at <= now)
        .collect();
    let here = helps.iter().filter(|m| m.community == *community).count();
    let helped: BTreeSet<MemberId> = helps
        .iter()
        .filter(|m| m.community == *community)
        .map(|m| m.requester)
        .collect();
    let communities: BTreeSet<CommunityId> = helps.iter().map(|m| m.community).collect();
    let recent: usize = completions(matches, member, community, now, STEADY_WINDOW_MS)
        .values()
        .map(Vec::len)
        .sum();
    let cancelled = cancellations
        .iter()
        .any(|&t| within(t, now, STEADY_WINDOW_MS));
    [
        (Badge::FirstHelper, here >= 1),
        (Badge::Helper10, here >= 10),
        (Badge::Helper50, here >= 50),
        (Badge::Helper100, here >= 100),
        (Badge::Connector, helped.len() >= 10),
        (Badge::BridgeBuilder, communities.len() >= 3),
        (Badge::SteadyHand, recent >= 10 && !cancelled),
    ]
    .into_iter()
    .filter_map(|(badge, held)| held.then_some(badge))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::karma::HALF_LIFE_MS;
    use crate::karma::fixtures::*;

    const DAY: i64 = Timestamp::DAY;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    /// Trust of member(1) in community(1), admitted `tenure_days` before `now`.
    fn score(matches: &[CompletedMatch], tenure_days: i64, penalties: &[Timestamp]) -> TrustScore {
        let now = at(400, 0);
        trust(TrustInput {
            member: &member(1),
            community: &community(1),
            admitted_at: now.plus_millis(-tenure_days * DAY),
            matches,
            penalties,
            now,
        })
    }

    /// Matches of member(1) (alternately helper and requester) with member(`other`)
    /// in community(1), completed `days_ago` before `at(400, 0)`.
    fn with(other: u8, days_ago: &[i64]) -> Vec<CompletedMatch> {
        days_ago
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let (me, them) = (member(1), member(other));
                let (req, help) = if i % 2 == 0 { (them, me) } else { (me, them) };
                done(
                    &format!("{other}-{i}"),
                    community(1),
                    req,
                    help,
                    at(400 - d, 0),
                )
            })
            .collect()
    }

    #[test]
    fn all_maxima_reach_exactly_100() {
        // 10 counterparties; 5 of them twice, 7 days apart: n = 15, P = 10, R = 5.
        let mut ms = Vec::new();
        for i in 0..10u8 {
            let days: &[i64] = if i < 5 { &[30, 23] } else { &[30] };
            ms.extend(with(10 + i, days));
        }
        let s = score(&ms, 180, &[]);
        assert_eq!(
            (s.volume, s.breadth, s.depth, s.tenure, s.penalty),
            (40.0, 25.0, 15.0, 20.0, 0.0)
        );
        assert_eq!(s.score, 100);
        // Without the last counterparty: n = 14, P = 9.
        ms.pop();
        let s = score(&ms, 180, &[]);
        assert!(close(s.volume, 10.0 * 15f64.log2()));
        assert_eq!(s.breadth, 22.5);
        assert_eq!(s.score, 97); // round(39.07 + 22.5 + 15 + 20) = round(96.57)
    }

    #[test]
    fn newcomer_with_an_upheld_report_is_0() {
        let now = at(400, 0);
        let s = score(&[], 0, &[now]);
        assert_eq!(
            (s.volume, s.breadth, s.depth, s.tenure),
            (0.0, 0.0, 0.0, 0.0)
        );
        assert_eq!(s.penalty, 20.0);
        assert_eq!(s.score, 0);
        assert_eq!(score(&[], 0, &[]).score, 0);
    }

    #[test]
    fn hand_computed_components() {
        // A: 3 completions spanning 7 days; B: 3 within 2 days; C: 1.
        let mut ms = with(10, &[20, 17, 13]);
        ms.extend(with(11, &[20, 19, 18]));
        ms.extend(with(12, &[5]));
        let penalty_at = at(400, 0).plus_millis(-HALF_LIFE_MS);
        let s = score(&ms, 90, &[penalty_at]);
        assert!(close(s.volume, 30.0)); // n = 7: 10·log2(8)
        assert_eq!(s.breadth, 7.5); // P = 3
        assert_eq!(s.depth, 3.0); // R = 1
        assert_eq!(s.tenure, 10.0); // 90 of 180 days
        assert!(close(s.penalty, 10.0)); // one half-life old
        assert_eq!(s.score, 41); // round(40.5), half away from zero
        // Fractional tenure; none before admission; future penalties weigh 0.
        assert!(close(score(&[], 45, &[]).tenure, 5.0));
        assert_eq!(score(&[], -3, &[]).tenure, 0.0);
        assert_eq!(score(&[], 0, &[at(401, 0)]).penalty, 0.0);
    }

    #[test]
    fn components_are_capped() {
        // 12 counterparties, 3 completions each, 7 days apart: n = 36, P = R = 12.
        let ms: Vec<CompletedMatch> = (0..12u8)
            .flat_map(|i| with(10 + i, &[30, 23, 16]))
            .collect();
        let s = score(&ms, 400, &[]);
        assert_eq!(
            (s.volume, s.breadth, s.depth, s.tenure),
            (40.0, 25.0, 15.0, 20.0)
        );
        assert_eq!(s.score, 100);
        // Penalties cannot push the score below 0.
        let now = at(400, 0);
        assert_eq!(score(&ms, 400, &[now; 6]).score, 0);
    }

    #[test]
    fn at_most_3_completions_per_counterparty() {
        let s = score(&with(10, &[5, 4, 3, 2, 1]), 0, &[]);
        assert!(close(s.volume, 20.0)); // n = 3, not 5
        assert_eq!((s.breadth, s.depth), (2.5, 0.0));
        assert_eq!(s.score, 23); // round(22.5)
    }

    #[test]
    fn depth_needs_completions_at_least_7_days_apart() {
        assert_eq!(score(&with(10, &[10, 4]), 0, &[]).depth, 0.0);
        let almost = 7 * DAY - 1;
        let mut ms = with(10, &[10]);
        ms.push(done(
            "late",
            community(1),
            member(10),
            member(1),
            at(390, 0).plus_millis(almost),
        ));
        assert_eq!(score(&ms, 0, &[]).depth, 0.0);
        assert_eq!(score(&with(10, &[10, 3]), 0, &[]).depth, 3.0);
    }

    #[test]
    fn only_the_last_365_days_count() {
        let now = at(400, 0);
        let old = done(
            "old",
            community(1),
            member(2),
            member(1),
            now.plus_millis(-TRUST_WINDOW_MS),
        );
        let mut edge = old.clone();
        edge.id = "edge".into();
        edge.completed_at = edge.completed_at.plus_millis(1);
        edge.accepted_at = edge.accepted_at.plus_millis(1);
        let future = done(
            "future",
            community(1),
            member(3),
            member(1),
            now.plus_millis(1),
        );
        assert_eq!(score(&[old.clone(), future], 0, &[]).breadth, 0.0);
        assert_eq!(score(&[old, edge], 0, &[]).breadth, 2.5);
    }

    #[test]
    fn trust_ignores_ineligible_other_communities_and_other_members() {
        let mut invalid = with(10, &[5]).remove(0);
        invalid.invalidated = true;
        let elsewhere = CompletedMatch {
            community: community(2),
            ..with(11, &[5]).remove(0)
        };
        let others = done("others", community(1), member(2), member(3), at(395, 0));
        let s = score(&[invalid, elsewhere, others], 0, &[]);
        assert_eq!((s.volume, s.breadth), (0.0, 0.0));
    }

    /// `count` eligible helps by member(1) in `c`, one a day from `from_day`,
    /// to `people` distinct requesters in turn.
    fn helps(c: CommunityId, count: u16, people: u8, from_day: i64) -> Vec<CompletedMatch> {
        (0..count)
            .map(|i| {
                let requester = member(10 + u8::try_from(i % u16::from(people)).unwrap_or(0));
                let id = format!("{c:?}-{from_day}-{i}");
                done(
                    &id,
                    c,
                    requester,
                    member(1),
                    at(from_day + i64::from(i), 12),
                )
            })
            .collect()
    }

    fn badges_at(ms: &[CompletedMatch], cancellations: &[Timestamp], day: i64) -> Vec<Badge> {
        badges(&member(1), &community(1), ms, cancellations, at(day, 0))
    }

    #[test]
    fn helper_badges_appear_at_their_thresholds() {
        let c = community(1);
        assert!(badges_at(&[], &[], 500).is_empty());
        assert_eq!(
            badges_at(&helps(c, 1, 1, 0), &[], 500),
            [Badge::FirstHelper]
        );
        assert_eq!(
            badges_at(&helps(c, 9, 9, 0), &[], 500),
            [Badge::FirstHelper]
        );
        // 10 helps to 9 people: helper_10 but not connector.
        assert_eq!(
            badges_at(&helps(c, 10, 9, 0), &[], 500),
            [Badge::FirstHelper, Badge::Helper10]
        );
        assert_eq!(
            badges_at(&helps(c, 10, 10, 0), &[], 500),
            [Badge::FirstHelper, Badge::Helper10, Badge::Connector]
        );
        let b = badges_at(&helps(c, 49, 10, 0), &[], 500);
        assert!(!b.contains(&Badge::Helper50));
        let b = badges_at(&helps(c, 50, 10, 0), &[], 500);
        assert!(b.contains(&Badge::Helper50) && !b.contains(&Badge::Helper100));
        let b = badges_at(&helps(c, 100, 10, 0), &[], 500);
        assert!(b.contains(&Badge::Helper100));
        // Permanent: years later they are still held. Being helped does not count.
        assert_eq!(
            badges_at(&helps(c, 1, 1, 0), &[], 5_000),
            [Badge::FirstHelper]
        );
        let helped = done("h", c, member(1), member(2), at(0, 12));
        assert!(badges_at(&[helped], &[], 500).is_empty());
        // Helps completed after `now` do not count yet.
        assert!(badges_at(&helps(c, 1, 1, 10), &[], 5).is_empty());
    }

    #[test]
    fn bridge_builder_needs_3_distinct_communities() {
        let mut ms = helps(community(1), 1, 1, 0);
        ms.extend(helps(community(2), 2, 2, 0));
        assert!(!badges_at(&ms, &[], 500).contains(&Badge::BridgeBuilder));
        // Being helped in a third community is not helping there.
        ms.push(done("h", community(3), member(1), member(2), at(0, 12)));
        assert!(!badges_at(&ms, &[], 500).contains(&Badge::BridgeBuilder));
        ms.extend(helps(community(3), 1, 1, 0));
        assert!(badges_at(&ms, &[], 500).contains(&Badge::BridgeBuilder));
        // Shown in every community, even one where the member never helped.
        let elsewhere = badges(&member(1), &community(9), &ms, &[], at(500, 0));
        assert_eq!(elsewhere, [Badge::BridgeBuilder]);
    }

    #[test]
    fn invalidated_matches_do_not_count_for_badges() {
        let mut ms = helps(community(1), 10, 10, 0);
        ms[0].invalidated = true;
        assert_eq!(badges_at(&ms, &[], 500), [Badge::FirstHelper]);
        ms[0].invalidated = false;
        assert!(badges_at(&ms, &[], 500).contains(&Badge::Helper10));
    }

    #[test]
    fn steady_hand_is_held_only_while_true_over_180_days() {
        let c = community(1);
        // 10 completions on days 100..109, either side (one as requester).
        let mut ms = helps(c, 9, 9, 100);
        ms.push(done("asked", c, member(1), member(30), at(109, 12)));
        let steady = |ms: &[CompletedMatch], cancel: &[Timestamp], day| {
            badges_at(ms, cancel, day).contains(&Badge::SteadyHand)
        };
        assert!(steady(&ms, &[], 110));
        assert!(!steady(&ms[1..], &[], 110), "9 completions are not enough");
        // A cancellation within the last 180 days takes it away, an older one does not.
        assert!(!steady(&ms, &[at(50, 0)], 110));
        assert!(steady(&ms, &[at(-70, 0)], 110));
        assert!(!steady(&ms, &[at(-69, 0)], 110));
        // The first completion (day 100, 12:00) ages past 180 days.
        assert!(steady(&ms, &[], 280));
        assert!(!steady(&ms, &[], 281));
        // Invalidated completions do not count.
        ms[3].invalidated = true;
        assert!(!steady(&ms, &[], 110));
    }

    #[test]
    fn badge_names_are_stable() {
        let all = [
            Badge::FirstHelper,
            Badge::Helper10,
            Badge::Helper50,
            Badge::Helper100,
            Badge::Connector,
            Badge::BridgeBuilder,
            Badge::SteadyHand,
        ];
        let names: Vec<&str> = all.iter().map(|b| b.as_str()).collect();
        assert_eq!(
            names,
            [
                "first_helper",
                "helper_10",
                "helper_50",
                "helper_100",
                "connector",
                "bridge_builder",
                "steady_hand"
            ]
        );
    }
}
