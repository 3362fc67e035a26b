//! Suggested helpers and the feed: pure functions of plain records and an
//! explicit `now`, fed from the SQL projections of requests, profiles,
//! matches and trust scores.
//!
//! - [`geohash_distance_km`] measures between two coarse locations;
//! - [`candidate_score`] scores one member for one open request (0–115);
//! - [`suggest_helpers`] keeps the best 10 candidates scoring at least
//!   [`MIN_SUGGESTION_SCORE`];
//! - [`rank_feed`] ranks a member's feed across their communities and pages it;
//! - [`community_activity`] computes the activity term the feed takes.
//!
//! Readings of DOMAIN.md made here:
//!
//! - **Skill share.** A request wants its category name plus the tags the
//!   caller gives; the share is `|wanted ∩ skills| / |wanted|`, comparing
//!   trimmed, lowercased strings and counting each wanted tag once (a tag equal
//!   to the category does not count twice). The category is always wanted, so
//!   the share is never `0 / 0`.
//! - **Proximity.** "Both have a location" means both hold a *valid* geohash;
//!   an invalid one counts as no location (15 points), not as far away. Band
//!   edges are inclusive: exactly 5 km is still 30.
//! - **Availability.** The caller counts the candidate's *active* matches
//!   (accepted, neither completed nor cancelled) as helper in the request's
//!   community: it is their capacity to help, and counting per community lets
//!   every device of the community derive the same suggestions.
//! - **Threshold and order.** A candidate is kept when its unrounded total is
//!   `>= 30`; ties go to the higher trust score, then to the smaller member id,
//!   so the output never depends on input order. A member listed twice is
//!   suggested once, with their better entry.
//! - **Blocks.** The [`BlockList`] holds every block the caller knows as
//!   `(blocker, blocked)`; a pair is excluded whichever way the block runs.
//! - **Feed.** Items are the copies of requests in the viewer's communities.
//!   An open request counts while `now < expires_at` (the caller's status is
//!   rechecked against `now`); a completed one counts while its completion is
//!   in the last [`RECENT_COMPLETION_MS`] (7 days, half-open: exactly 7 days
//!   old has left), with skill and urgency terms 0, since nobody can help
//!   with it any more. Matched, cancelled and expired requests are left out,
//!   as are the viewer's own requests and those whose requester (or, for a
//!   completion, helper) blocked or is blocked by the viewer. A request
//!   cross-posted to several of the viewer's communities appears once, as
//!   its best-scoring copy.
//! - **Community activity** is the share of the community's requests created
//!   in the last [`ACTIVITY_WINDOW_MS`] (30 days) that are completed: 0..1
//!   with no invented saturation constant ([`community_activity`]).

use std::collections::BTreeSet;

use crate::authority::CommunityId;
use crate::identity::MemberId;
use crate::request::{Category, RequestId, RequestStatus, Urgency};
use crate::time::Timestamp;

/// Mean Earth radius (IUGG), in kilometres, for the haversine distance.
pub const EARTH_RADIUS_KM: f64 = 6371.0088;
/// The geohash alphabet: base32 without `a`, `i`, `l`, `o`.
const GEOHASH_ALPHABET: &[u8; 32] = b"0123456789bcdefghjkmnpqrstuvwxyz";
/// Longest geohash a location may have (about 5 km).
const MAX_GEOHASH_LEN: usize = 5;
/// Bits per geohash character.
const GEOHASH_BITS: u32 = 5;

/// Weight of the skill share in the candidate score.
pub const SKILL_POINTS: f64 = 40.0;
/// Proximity points by distance: the first band whose limit (km, inclusive)
/// the distance does not exceed.
pub const PROXIMITY_BANDS: [(f64, f64); 4] =
    [(5.0, 30.0), (10.0, 24.0), (20.0, 18.0), (50.0, 12.0)];
/// Proximity points beyond the last band.
pub const FAR_POINTS: f64 = 6.0;
/// Proximity points when the request or the candidate has no location.
pub const NO_LOCATION_POINTS: f64 = 15.0;
/// Availability points with no active match.
pub const FREE_POINTS: f64 = 30.0;
/// Availability points with one active match (more earn 0).
pub const ONE_MATCH_POINTS: f64 = 15.0;
/// Bonus for a critical request.
pub const CRITICAL_BONUS: f64 = 15.0;
/// Bonus for a high-urgency request.
pub const HIGH_BONUS: f64 = 5.0;
/// Lowest candidate score that is suggested.
pub const MIN_SUGGESTION_SCORE: f64 = 30.0;
/// Most helpers suggested for one request.
pub const MAX_SUGGESTIONS: usize = 10;

/// Feed weight of the viewer's skill share.
pub const FEED_SKILL_WEIGHT: f64 = 0.40;
/// Feed weight of the requester's trust score / 100.
pub const FEED_TRUST_WEIGHT: f64 = 0.25;
/// Feed weight of the community's activity.
pub const FEED_ACTIVITY_WEIGHT: f64 = 0.20;
/// Feed weight of the urgency (low 0, medium 1/3, high 2/3, critical 1).
pub const FEED_URGENCY_WEIGHT: f64 = 0.15;
/// A completion stays in the feed this long (7 days).
pub const RECENT_COMPLETION_MS: i64 = 7 * Timestamp::DAY;
/// The window of [`community_activity`] (30 days).
pub const ACTIVITY_WINDOW_MS: i64 = 30 * Timestamp::DAY;
/// The highest trust score.
const MAX_TRUST: f64 = 100.0;

/// The great-circle distance between the centres of two geohash cells, in km.
///
/// Each geohash has 1–5 characters of the lowercase alphabet
/// `0123456789bcdefghjkmnpqrstuvwxyz`; `None` if either is not one.
pub fn geohash_distance_km(a: &str, b: &str) -> Option<f64> {
    let (lat_a, lon_a) = decode_geohash(a)?;
    let (lat_b, lon_b) = decode_geohash(b)?;
    Some(haversine_km(lat_a, lon_a, lat_b, lon_b))
}

/// The centre `(latitude, longitude)` of a geohash cell, in degrees.
fn decode_geohash(hash: &str) -> Option<(f64, f64)> {
    if !(1..=MAX_GEOHASH_LEN).contains(&hash.len()) {
        return None;
    }
    let mut lat = (-90.0, 90.0);
    let mut lon = (-180.0, 180.0);
    // Bits alternate, longitude first.
    let mut is_lon = true;
    for byte in hash.bytes() {
        let value = GEOHASH_ALPHABET.iter().position(|&c| c == byte)?;
        for bit in (0..GEOHASH_BITS).rev() {
            let range: &mut (f64, f64) = if is_lon { &mut lon } else { &mut lat };
            let mid = (range.0 + range.1) / 2.0;
            if (value >> bit) & 1 == 1 {
                range.0 = mid;
            } else {
                range.1 = mid;
            }
            is_lon = !is_lon;
        }
    }
    Some(((lat.0 + lat.1) / 2.0, (lon.0 + lon.1) / 2.0))
}

/// Haversine distance between two points given in degrees, in km.
fn haversine_km(lat_a: f64, lon_a: f64, lat_b: f64, lon_b: f64) -> f64 {
    let (phi_a, phi_b) = (lat_a.to_radians(), lat_b.to_radians());
    let half_dphi = (phi_b - phi_a) / 2.0;
    let half_dlambda = (lon_b - lon_a).to_radians() / 2.0;
    let h = half_dphi.sin().powi(2) + phi_a.cos() * phi_b.cos() * half_dlambda.sin().powi(2);
    // Rounding may push `h` a hair past 1 for antipodes; asin would give NaN.
    2.0 * EARTH_RADIUS_KM * h.clamp(0.0, 1.0).sqrt().asin()
}

/// The share (0..=1) of what a request wants that a member's skills cover.
///
/// The request wants its category name plus `tags`; strings are compared
/// trimmed and lowercased, each wanted tag counting once, empty ones ignored.
pub fn skill_share(category: Category, tags: &[String], skills: &[String]) -> f64 {
    let wanted =
        normalised(std::iter::once(category.as_str()).chain(tags.iter().map(String::as_str)));
    let have = normalised(skills.iter().map(String::as_str));
    if wanted.is_empty() {
        return 0.0;
    }
    wanted.intersection(&have).count() as f64 / wanted.len() as f64
}

/// Trimmed, lowercased, non-empty tags, each once.
fn normalised<'a>(tags: impl Iterator<Item = &'a str>) -> BTreeSet<String> {
    tags.map(|t| t.trim().to_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

/// Proximity points for a distance in km, or for no distance (a location missing).
fn proximity_points(distance_km: Option<f64>) -> f64 {
    let Some(d) = distance_km else {
        return NO_LOCATION_POINTS;
    };
    PROXIMITY_BANDS
        .iter()
        .find(|(limit, _)| d <= *limit)
        .map_or(FAR_POINTS, |&(_, points)| points)
}

/// Availability points for a number of active matches.
fn availability_points(active_matches: u32) -> f64 {
    match active_matches {
        0 => FREE_POINTS,
        1 => ONE_MATCH_POINTS,
        _ => 0.0,
    }
}

/// The urgency bonus of the candidate score.
fn urgency_bonus(urgency: Urgency) -> f64 {
    match urgency {
        Urgency::Critical => CRITICAL_BONUS,
        Urgency::High => HIGH_BONUS,
        Urgency::Low | Urgency::Medium => 0.0,
    }
}

/// The urgency term of the feed, normalised: low 0, medium 1/3, high 2/3, critical 1.
fn urgency_weight(urgency: Urgency) -> f64 {
    match urgency {
        Urgency::Low => 0.0,
        Urgency::Medium => 1.0 / 3.0,
        Urgency::High => 2.0 / 3.0,
        Urgency::Critical => 1.0,
    }
}

/// An open request, as the suggestion of helpers needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestFacts {
    /// The request; its requester is `id.requester`.
    pub id: RequestId,
    /// The community whose members are the candidates.
    pub community: CommunityId,
    /// Its category, always part of what it wants.
    pub category: Category,
    /// Further skill tags it wants (may be empty).
    pub tags: Vec<String>,
    /// How soon.
    pub urgency: Urgency,
    /// Its coarse location (a geohash), if it has one.
    pub location: Option<String>,
}

/// A member of the request's community who might help.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// Who.
    pub member: MemberId,
    /// Their profile's skill tags.
    pub skills: Vec<String>,
    /// Their profile's coarse location (a geohash), if any.
    pub location: Option<String>,
    /// Their active matches as helper in the request's community.
    pub active_matches: u32,
    /// Their trust score in the request's community (0–100), the tie-break.
    pub trust: u8,
}

/// A candidate score (0–115) and its components.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CandidateScore {
    /// `40 · skill share`.
    pub skill: f64,
    /// 30, 24, 18, 12 or 6 by distance; 15 without both locations.
    pub proximity: f64,
    /// 30 with no active match, 15 with one, 0 with more.
    pub availability: f64,
    /// 15 for a critical request, 5 for a high one, else 0.
    pub urgency: f64,
    /// The sum of the components, unrounded.
    pub total: f64,
}

/// How well `candidate` suits `request`.
pub fn candidate_score(request: &RequestFacts, candidate: &Candidate) -> CandidateScore {
    let share = skill_share(request.category, &request.tags, &candidate.skills);
    let distance = match (&request.location, &candidate.location) {
        (Some(a), Some(b)) => geohash_distance_km(a, b),
        _ => None,
    };
    score_parts(share, distance, candidate.active_matches, request.urgency)
}

/// The candidate score from its inputs: the seam the band tests use.
fn score_parts(
    share: f64,
    distance_km: Option<f64>,
    active_matches: u32,
    urgency: Urgency,
) -> CandidateScore {
    let skill = SKILL_POINTS * share;
    let proximity = proximity_points(distance_km);
    let availability = availability_points(active_matches);
    let urgency = urgency_bonus(urgency);
    CandidateScore {
        skill,
        proximity,
        availability,
        urgency,
        total: skill + proximity + availability + urgency,
    }
}

/// Whether a candidate score is high enough to be suggested.
fn is_suggested(total: f64) -> bool {
    total >= MIN_SUGGESTION_SCORE
}

/// The blocks the caller knows, as `(blocker, blocked)` pairs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockList(BTreeSet<(MemberId, MemberId)>);

impl BlockList {
    /// No blocks.
    pub fn new() -> Self {
        BlockList::default()
    }

    /// Records that `blocker` blocked `blocked`.
    pub fn block(&mut self, blocker: MemberId, blocked: MemberId) {
        self.0.insert((blocker, blocked));
    }

    /// Whether either of `a` and `b` blocked the other.
    pub fn between(&self, a: &MemberId, b: &MemberId) -> bool {
        self.0.contains(&(*a, *b)) || self.0.contains(&(*b, *a))
    }
}

impl FromIterator<(MemberId, MemberId)> for BlockList {
    fn from_iter<I: IntoIterator<Item = (MemberId, MemberId)>>(pairs: I) -> Self {
        BlockList(pairs.into_iter().collect())
    }
}

/// A suggested helper.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Suggestion {
    /// Who.
    pub member: MemberId,
    /// Why: their candidate score.
    pub score: CandidateScore,
    /// Their trust score, which broke ties.
    pub trust: u8,
}

/// The best [`MAX_SUGGESTIONS`] candidates for an open request, best first.
///
/// Keeps candidates scoring at least [`MIN_SUGGESTION_SCORE`], never the
/// requester nor anyone the requester blocked or was blocked by. Ordered by
/// total score, then trust score (both descending), then member id.
pub fn suggest_helpers(
    request: &RequestFacts,
    candidates: &[Candidate],
    blocks: &BlockList,
) -> Vec<Suggestion> {
    let requester = request.id.requester;
    let mut kept: Vec<Suggestion> = candidates
        .iter()
        .filter(|c| c.member != requester && !blocks.between(&c.member, &requester))
        .map(|c| Suggestion {
            member: c.member,
            score: candidate_score(request, c),
            trust: c.trust,
        })
        .filter(|s| is_suggested(s.score.total))
        .collect();
    kept.sort_by(|a, b| {
        b.score
            .total
            .total_cmp(&a.score.total)
            .then(b.trust.cmp(&a.trust))
            .then(a.member.cmp(&b.member))
    });
    let mut seen = BTreeSet::new();
    kept.retain(|s| seen.insert(s.member));
    kept.truncate(MAX_SUGGESTIONS);
    kept
}

/// The member whose feed is ranked.
#[derive(Debug, Clone, PartialEq)]
pub struct Viewer {
    /// Who.
    pub member: MemberId,
    /// Their skill tags.
    pub skills: Vec<String>,
}

/// One community's copy of a request, as the feed needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedItem {
    /// The request; its requester is `id.requester`.
    pub id: RequestId,
    /// The community holding this copy.
    pub community: CommunityId,
    /// Its category.
    pub category: Category,
    /// Further skill tags it wants (may be empty).
    pub tags: Vec<String>,
    /// How soon.
    pub urgency: Urgency,
    /// Its status as last derived; an `Open` one is rechecked against `now`.
    pub status: RequestStatus,
    /// When it was posted.
    pub created_at: Timestamp,
    /// When it expires, if still open.
    pub expires_at: Timestamp,
    /// When its match completed, for a completed request.
    pub completed_at: Option<Timestamp>,
    /// Who helped, for a completed request.
    pub helper: Option<MemberId>,
    /// The requester's trust score in this community (0–100).
    pub requester_trust: u8,
    /// This community's [`community_activity`] (0..=1; clamped, NaN counts as 0).
    pub community_activity: f64,
}

/// What a feed entry shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum FeedKind {
    /// An open, unexpired request.
    Request,
    /// A request completed in the last [`RECENT_COMPLETION_MS`].
    Completion,
}

/// A ranked feed entry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RankedItem {
    /// The request.
    pub id: RequestId,
    /// The community whose copy ranked best.
    pub community: CommunityId,
    /// Open request or recent completion.
    pub kind: FeedKind,
    /// `0.40·skill + 0.25·trust/100 + 0.20·activity + 0.15·urgency` (0..=1).
    pub score: f64,
    /// When the request was posted (the first tie-break, newest first).
    pub created_at: Timestamp,
}

/// One page (0-based, `per_page` long) of `viewer`'s feed at `now`.
///
/// Ranked by score (descending), then `created_at` (newest first), then
/// request id. An empty page when `per_page` is 0 or the page is past the end.
pub fn rank_feed(
    viewer: &Viewer,
    items: &[FeedItem],
    blocks: &BlockList,
    now: Timestamp,
    page: usize,
    per_page: usize,
) -> Vec<RankedItem> {
    let known =
        |item: &FeedItem| -> Result<u8, std::convert::Infallible> { Ok(item.requester_trust) };
    match rank_feed_with(viewer, items, blocks, now, page, per_page, known) {
        Ok(ranked) => ranked,
        Err(never) => match never {},
    }
}

/// [`rank_feed`] where the requester's trust is costly to learn: items'
/// `requester_trust` is ignored and `trust(item)` is asked only for the
/// items that can still reach the page.
///
/// Items are visited in order of their best possible score (trust 100); an
/// item is scored exactly only while fewer than `(page + 1) · per_page`
/// distinct requests already rank above its best possible place. The page
/// equals the one [`rank_feed`] gives with every trust known.
pub fn rank_feed_with<E>(
    viewer: &Viewer,
    items: &[FeedItem],
    blocks: &BlockList,
    now: Timestamp,
    page: usize,
    per_page: usize,
    mut trust: impl FnMut(&FeedItem) -> Result<u8, E>,
) -> Result<Vec<RankedItem>, E> {
    let needed = page.saturating_add(1).saturating_mul(per_page);
    // (item, best possible ranking) in ranking order.
    let mut bounds: Vec<(&FeedItem, RankedItem)> = items
        .iter()
        .filter(|item| is_visible(viewer, item, blocks))
        .filter_map(|item| {
            let best = FeedItem {
                requester_trust: MAX_TRUST as u8,
                ..item.clone()
            };
            rank_item(viewer, &best, now).map(|r| (item, r))
        })
        .collect();
    bounds.sort_by(|a, b| ranking(&a.1, &b.1));
    let mut ranked: Vec<RankedItem> = Vec::new();
    for (item, best) in bounds {
        let above: BTreeSet<RequestId> = ranked
            .iter()
            .filter(|r| ranking(r, &best).is_lt())
            .map(|r| r.id)
            .collect();
        if needed == 0 || above.len() >= needed {
            break;
        }
        let exact = FeedItem {
            requester_trust: trust(item)?,
            ..item.clone()
        };
        ranked.extend(rank_item(viewer, &exact, now));
    }
    ranked.sort_by(ranking);
    // A cross-posted request: keep its best copy, which sorts first.
    let mut seen = BTreeSet::new();
    ranked.retain(|r| seen.insert(r.id));
    Ok(ranked
        .into_iter()
        .skip(page.saturating_mul(per_page))
        .take(per_page)
        .collect())
}

/// The feed's order: score (descending), then newest, then request id and
/// community.
fn ranking(a: &RankedItem, b: &RankedItem) -> std::cmp::Ordering {
    b.score
        .total_cmp(&a.score)
        .then(b.created_at.cmp(&a.created_at))
        .then(a.id.cmp(&b.id))
        .then(a.community.cmp(&b.community))
}

/// Whether the viewer may see the item: not their own, nobody blocked either way.
fn is_visible(viewer: &Viewer, item: &FeedItem, blocks: &BlockList) -> bool {
    let me = &viewer.member;
    let requester = &item.id.requester;
    requester != me
        && !blocks.between(me, requester)
        && !item.helper.is_some_and(|h| blocks.between(me, &h))
}

/// The item's kind and score at `now`, or `None` if it is not in the feed.
fn rank_item(viewer: &Viewer, item: &FeedItem, now: Timestamp) -> Option<RankedItem> {
    let (kind, skill, urgency) = match item.status {
        RequestStatus::Open if now < item.expires_at => (
            FeedKind::Request,
            skill_share(item.category, &item.tags, &viewer.skills),
            urgency_weight(item.urgency),
        ),
        RequestStatus::Completed if item.completed_at.is_some_and(|t| is_recent(t, now)) => {
            (FeedKind::Completion, 0.0, 0.0)
        }
        _ => return None,
    };
    let trust = f64::from(item.requester_trust).min(MAX_TRUST) / MAX_TRUST;
    let score = FEED_SKILL_WEIGHT * skill
        + FEED_TRUST_WEIGHT * trust
        + FEED_ACTIVITY_WEIGHT * unit(item.community_activity)
        + FEED_URGENCY_WEIGHT * urgency;
    Some(RankedItem {
        id: item.id,
        community: item.community,
        kind,
        score,
        created_at: item.created_at,
    })
}

/// Whether `t` lies in `(now − window, now]`.
fn within(t: Timestamp, now: Timestamp, window_ms: i64) -> bool {
    t <= now && now.as_millis().saturating_sub(t.as_millis()) < window_ms
}

/// Whether a completion at `t` is recent at `now`.
fn is_recent(t: Timestamp, now: Timestamp) -> bool {
    within(t, now, RECENT_COMPLETION_MS)
}

/// `x` clamped to 0..=1, NaN as 0.
fn unit(x: f64) -> f64 {
    if x.is_nan() { 0.0 } else { x.clamp(0.0, 1.0) }
}

/// A community's activity at `now` (0..=1): the share of its requests created
/// in the last [`ACTIVITY_WINDOW_MS`] that are completed; 0 if none were.
///
/// `requests` holds `(created_at, status)` for the community's requests,
/// with statuses derived at `now`; those created after `now` are ignored.
pub fn community_activity(requests: &[(Timestamp, RequestStatus)], now: Timestamp) -> f64 {
    let recent: Vec<RequestStatus> = requests
        .iter()
        .filter(|(created, _)| within(*created, now, ACTIVITY_WINDOW_MS))
        .map(|&(_, status)| status)
        .collect();
    let completed = recent
        .iter()
        .filter(|&&s| s == RequestStatus::Completed)
        .count();
    completion_share(completed, recent.len())
}

/// `completed` of `recent` requests as a share (0..=1); 0 if none were.
pub fn completion_share(completed: usize, recent: usize) -> f64 {
    if recent == 0 {
        return 0.0;
    }
    completed.min(recent) as f64 / recent as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::karma::fixtures::{at, community, member};

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    fn strings(tags: &[&str]) -> Vec<String> {
        tags.iter().map(|t| (*t).to_string()).collect()
    }

    fn request_id(requester: u8, nonce: u8) -> RequestId {
        RequestId {
            requester: member(requester),
            nonce: [nonce; 8],
        }
    }

    // ---- geohash ----

    #[test]
    fn decodes_known_cells() {
        let near = |hash: &str, lat: f64, lon: f64| {
            let (la, lo) = decode_geohash(hash).unwrap_or((f64::NAN, f64::NAN));
            (la - lat).abs() < 0.03 && (lo - lon).abs() < 0.03
        };
        // The textbook example (Wikipedia): ezs42 = 42.605, -5.603.
        assert!(near("ezs42", 42.605, -5.603));
        // Karlsruhe is u0tyz; u0yjj is Frankfurt am Main.
        assert!(near("u0tyz", 49.0, 8.4));
        assert!(near("u0yjj", 50.12, 8.68));
        assert!(near("9q8yy", 37.77, -122.41)); // San Francisco
        // One character: the cell's centre.
        assert_eq!(decode_geohash("s"), Some((22.5, 22.5)));
    }

    #[test]
    fn distances_between_cells() {
        let km = |a, b| geohash_distance_km(a, b).unwrap_or(f64::NAN);
        assert_eq!(km("u0yjj", "u0yjj"), 0.0);
        // Neighbouring cells: one north (180/4096° of latitude), one east.
        assert!((km("u0yjj", "u0yjm") - 4.8865).abs() < 1e-3);
        assert!((km("u0yjj", "u0yjn") - 3.1332).abs() < 1e-3);
        assert_eq!(km("u0yjj", "u0yjm"), km("u0yjm", "u0yjj"));
        // Frankfurt to Karlsruhe, about 125 km; Frankfurt to San Francisco.
        assert!((120.0..130.0).contains(&km("u0yjj", "u0tyz")));
        assert!((km("u0yjj", "9q8yy") - 9132.48).abs() < 0.1);
        // Antipodal cells, (22.5, 22.5) and (-22.5, -157.5): half the circumference.
        let half = std::f64::consts::PI * EARTH_RADIUS_KM;
        assert!((km("s", "2") - half).abs() < 1e-6);
    }

    #[test]
    fn invalid_geohashes_have_no_distance() {
        for bad in ["", "u0yjjj", "a", "i", "l", "o", "U0YJJ", "u0 jj", "ü"] {
            assert_eq!(geohash_distance_km(bad, "u0yjj"), None, "{bad:?}");
            assert_eq!(geohash_distance_km("u0yjj", bad), None, "{bad:?}");
        }
    }

    // ---- candidate score ----

    #[test]
    fn proximity_band_edges() {
        let edges = [
            (0.0, 30.0),
            (5.0, 30.0),
            (5.001, 24.0),
            (10.0, 24.0),
            (10.001, 18.0),
            (20.0, 18.0),
            (20.001, 12.0),
            (50.0, 12.0),
            (50.001, 6.0),
            (20_000.0, 6.0),
        ];
        for (km, points) in edges {
            assert_eq!(proximity_points(Some(km)), points, "{km} km");
            assert_eq!(score_parts(0.0, Some(km), 2, Urgency::Low).total, points);
        }
        assert_eq!(proximity_points(None), 15.0);
    }

    fn facts(location: Option<&str>, urgency: Urgency, tags: &[&str]) -> RequestFacts {
        RequestFacts {
            id: request_id(1, 1),
            community: community(1),
            category: Category::Moving,
            tags: strings(tags),
            urgency,
            location: location.map(str::to_owned),
        }
    }

    fn candidate(
        n: u8,
        skills: &[&str],
        location: Option<&str>,
        active: u32,
        trust: u8,
    ) -> Candidate {
        Candidate {
            member: member(n),
            skills: strings(skills),
            location: location.map(str::to_owned),
            active_matches: active,
            trust,
        }
    }

    #[test]
    fn proximity_from_real_cells() {
        let request = facts(Some("u0yjj"), Urgency::Low, &[]);
        let cases = [
            (Some("u0yjj"), 30.0), // same cell, 0 km
            (Some("u0yjm"), 30.0), // 4.9 km
            (Some("u0yjt"), 24.0), // 9.8 km
            (Some("u0yjv"), 18.0), // 14.7 km
            (Some("u0ypt"), 12.0), // 48.9 km
            (Some("u0ypv"), 6.0),  // 53.8 km
            (None, 15.0),
            (Some("not-a-hash"), 15.0),
        ];
        for (location, points) in cases {
            let c = candidate(2, &[], location, 0, 0);
            assert_eq!(
                candidate_score(&request, &c).proximity,
                points,
                "{location:?}"
            );
        }
        // No location on the request: 15 whatever the candidate's.
        let unplaced = facts(None, Urgency::Low, &[]);
        let c = candidate(2, &[], Some("u0yjj"), 0, 0);
        assert_eq!(candidate_score(&unplaced, &c).proximity, 15.0);
    }

    #[test]
    fn availability_by_active_matches() {
        let points: Vec<f64> = [0, 1, 2, 7]
            .iter()
            .map(|&n| score_parts(0.0, None, n, Urgency::Low).availability)
            .collect();
        assert_eq!(points, [30.0, 15.0, 0.0, 0.0]);
    }

    #[test]
    fn urgency_bonus_only_for_high_and_critical() {
        let bonus: Vec<f64> = Urgency::ALL
            .iter()
            .map(|&u| score_parts(0.0, None, 2, u).urgency)
            .collect();
        assert_eq!(bonus, [0.0, 0.0, 5.0, 15.0]); // low, medium, high, critical
    }

    #[test]
    fn skill_share_of_category_and_tags() {
        let share = |tags: &[&str], skills: &[&str]| {
            skill_share(Category::Moving, &strings(tags), &strings(skills))
        };
        assert_eq!(share(&["van"], &[]), 0.0);
        assert_eq!(share(&["van"], &["cooking"]), 0.0);
        assert_eq!(share(&["van"], &["van"]), 0.5);
        assert_eq!(share(&["van"], &["moving", "van", "cooking"]), 1.0);
        assert_eq!(share(&[], &["moving"]), 1.0);
        // Case-insensitive and trimmed; a repeated tag or one naming the category counts once.
        assert_eq!(share(&[" VAN "], &["Moving"]), 0.5);
        assert_eq!(share(&["van", "van", "moving"], &["van"]), 0.5);
        assert!(close(share(&["van", "lifting"], &["lifting"]), 1.0 / 3.0));
        // Empty tags are ignored.
        assert_eq!(share(&["", "  "], &["moving"]), 1.0);
        // 40 points times the share.
        let r = facts(None, Urgency::Low, &["van"]);
        let half = candidate(2, &["van"], None, 2, 0);
        assert_eq!(candidate_score(&r, &half).skill, 20.0);
        let full = candidate(2, &["van", "moving"], None, 2, 0);
        assert_eq!(candidate_score(&r, &full).skill, 40.0);
    }

    #[test]
    fn score_ranges_from_0_to_115() {
        let best = score_parts(1.0, Some(0.0), 0, Urgency::Critical);
        assert_eq!(
            (
                best.skill,
                best.proximity,
                best.availability,
                best.urgency,
                best.total
            ),
            (40.0, 30.0, 30.0, 15.0, 115.0)
        );
        assert_eq!(score_parts(0.0, Some(1e6), 3, Urgency::Low).total, 6.0);
    }

    // ---- suggestions ----

    #[test]
    fn threshold_is_30_inclusive() {
        assert!(!is_suggested(29.9));
        assert!(is_suggested(30.0));
        // End to end, on a high-urgency request at u0yjj (bonus 5), both busy (0):
        // 15 (no location) + 10 (1 of 4 wanted) + 5 = 30 in; 24 (9.8 km) + 5 = 29 out.
        let r = facts(Some("u0yjj"), Urgency::High, &["van", "lifting", "boxes"]);
        let at_30 = candidate(2, &["boxes"], None, 2, 0);
        let at_29 = candidate(3, &[], Some("u0yjt"), 2, 0);
        assert_eq!(candidate_score(&r, &at_30).total, 30.0);
        assert_eq!(candidate_score(&r, &at_29).total, 29.0);
        let kept = suggest_helpers(&r, &[at_29, at_30], &BlockList::new());
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].member, member(2));
    }

    #[test]
    fn best_10_first_with_trust_breaking_ties() {
        let r = facts(None, Urgency::Low, &[]);
        // 12 equal scores (15 + 30 = 45) with trust 0..=11, and one better score.
        let mut cs: Vec<Candidate> = (0..12u8)
            .map(|i| candidate(10 + i, &[], None, 0, i))
            .collect();
        cs.push(candidate(40, &["moving"], None, 0, 0)); // 85
        let got = suggest_helpers(&r, &cs, &BlockList::new());
        assert_eq!(got.len(), MAX_SUGGESTIONS);
        assert_eq!(got[0].member, member(40));
        assert_eq!(got[0].score.total, 85.0);
        let trusts: Vec<u8> = got[1..].iter().map(|s| s.trust).collect();
        assert_eq!(trusts, [11, 10, 9, 8, 7, 6, 5, 4, 3]);
        // Input order does not matter.
        cs.reverse();
        assert_eq!(suggest_helpers(&r, &cs, &BlockList::new()), got);
    }

    #[test]
    fn equal_score_and_trust_fall_back_to_member_id() {
        let r = facts(None, Urgency::Low, &[]);
        let cs: Vec<Candidate> = (0..5u8)
            .map(|i| candidate(10 + i, &[], None, 0, 50))
            .collect();
        let got: Vec<MemberId> = suggest_helpers(&r, &cs, &BlockList::new())
            .iter()
            .map(|s| s.member)
            .collect();
        let mut expected: Vec<MemberId> = cs.iter().map(|c| c.member).collect();
        expected.sort();
        assert_eq!(got, expected);
    }

    #[test]
    fn never_the_requester() {
        let r = facts(None, Urgency::Critical, &[]);
        let me = candidate(1, &["moving"], None, 0, 100); // 100 points
        let other = candidate(2, &[], None, 0, 0);
        let got = suggest_helpers(&r, &[me, other], &BlockList::new());
        let members: Vec<MemberId> = got.iter().map(|s| s.member).collect();
        assert_eq!(members, [member(2)]);
    }

    #[test]
    fn never_across_a_block_either_way() {
        let r = facts(None, Urgency::Low, &[]);
        let cs: Vec<Candidate> = (2..=5u8).map(|n| candidate(n, &[], None, 0, 0)).collect();
        let blocks: BlockList = [
            (member(1), member(2)), // the requester blocked 2
            (member(3), member(1)), // 3 blocked the requester
            (member(4), member(5)), // unrelated to the requester
        ]
        .into_iter()
        .collect();
        let got: Vec<MemberId> = suggest_helpers(&r, &cs, &blocks)
            .iter()
            .map(|s| s.member)
            .collect();
        let mut expected = vec![member(4), member(5)];
        expected.sort();
        assert_eq!(got, expected);
    }

    #[test]
    fn odd_candidate_lists() {
        let r = facts(None, Urgency::Low, &[]);
        assert!(suggest_helpers(&r, &[], &BlockList::new()).is_empty());
        // A member listed twice is suggested once, with the better entry.
        let busy = candidate(2, &[], None, 1, 0); // 30
        let free = candidate(2, &[], None, 0, 0); // 45
        let got = suggest_helpers(&r, &[busy, free], &BlockList::new());
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].score.total, 45.0);
    }

    // ---- feed ----

    fn viewer() -> Viewer {
        Viewer {
            member: member(1),
            skills: strings(&["moving"]),
        }
    }

    /// An open request by `requester` in community 1, posted on `day`, expiring 30 days later.
    fn open(requester: u8, nonce: u8, day: i64) -> FeedItem {
        FeedItem {
            id: request_id(requester, nonce),
            community: community(1),
            category: Category::Moving,
            tags: Vec::new(),
            urgency: Urgency::Low,
            status: RequestStatus::Open,
            created_at: at(day, 0),
            expires_at: at(day + 30, 0),
            completed_at: None,
            helper: None,
            requester_trust: 0,
            community_activity: 0.0,
        }
    }

    fn completed(requester: u8, nonce: u8, helper: u8, completed_at: Timestamp) -> FeedItem {
        FeedItem {
            status: RequestStatus::Completed,
            completed_at: Some(completed_at),
            helper: Some(member(helper)),
            ..open(requester, nonce, 0)
        }
    }

    fn feed(items: &[FeedItem], blocks: &BlockList, now: Timestamp) -> Vec<RankedItem> {
        rank_feed(&viewer(), items, blocks, now, 0, 100)
    }

    fn ids(ranked: &[RankedItem]) -> Vec<RequestId> {
        ranked.iter().map(|r| r.id).collect()
    }

    #[test]
    fn feed_score_hand_computed() {
        // Skill 1/2, trust 80, activity 0.5, high urgency:
        // 0.40·0.5 + 0.25·0.8 + 0.20·0.5 + 0.15·2/3 = 0.2 + 0.2 + 0.1 + 0.1 = 0.6.
        let item = FeedItem {
            tags: strings(&["van"]),
            urgency: Urgency::High,
            requester_trust: 80,
            community_activity: 0.5,
            ..open(2, 1, 10)
        };
        let got = feed(&[item], &BlockList::new(), at(11, 0));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].kind, FeedKind::Request);
        assert!(close(got[0].score, 0.6), "{}", got[0].score);
        // Every term at its maximum sums to 1; at its minimum to 0.
        let best = FeedItem {
            urgency: Urgency::Critical,
            requester_trust: 100,
            community_activity: 1.0,
            ..open(2, 2, 10)
        };
        let worst = FeedItem {
            category: Category::Pets,
            community_activity: f64::NAN,
            ..open(3, 3, 10)
        };
        let got = feed(&[best, worst], &BlockList::new(), at(11, 0));
        assert!(close(got[0].score, 1.0));
        assert_eq!(got[1].score, 0.0);
    }

    #[test]
    fn feed_urgency_term() {
        let weights: Vec<f64> = Urgency::ALL.iter().map(|&u| urgency_weight(u)).collect();
        assert_eq!(weights, [0.0, 1.0 / 3.0, 2.0 / 3.0, 1.0]);
    }

    #[test]
    fn recent_completions_score_trust_and_activity_only() {
        let now = at(20, 0);
        let item = FeedItem {
            urgency: Urgency::Critical,
            requester_trust: 60,
            community_activity: 0.5,
            ..completed(2, 1, 3, now.plus_millis(-Timestamp::DAY))
        };
        let got = feed(&[item], &BlockList::new(), now);
        assert_eq!(got[0].kind, FeedKind::Completion);
        assert!(close(got[0].score, 0.25 * 0.6 + 0.20 * 0.5)); // 0.25
    }

    #[test]
    fn completions_leave_the_feed_after_7_days() {
        let now = at(20, 0);
        let week = RECENT_COMPLETION_MS;
        let just_in = completed(2, 1, 3, now.plus_millis(1 - week));
        let just_out = completed(2, 2, 3, now.plus_millis(-week));
        let future = completed(2, 3, 3, now.plus_millis(1));
        let unknown = FeedItem {
            completed_at: None,
            ..completed(2, 4, 3, now)
        };
        let got = feed(
            &[just_in.clone(), just_out, future, unknown],
            &BlockList::new(),
            now,
        );
        assert_eq!(ids(&got), [just_in.id]);
    }

    #[test]
    fn feed_excludes_expired_and_non_open_requests() {
        let live = open(2, 1, 0);
        let now = live.expires_at.plus_millis(-1);
        let expired_now = FeedItem {
            expires_at: now,
            ..open(2, 2, 0)
        };
        let others: Vec<FeedItem> = [
            RequestStatus::Matched,
            RequestStatus::Cancelled,
            RequestStatus::Expired,
        ]
        .iter()
        .enumerate()
        .map(|(i, &status)| FeedItem {
            status,
            ..open(2, 10 + i as u8, 0)
        })
        .collect();
        let mut items = vec![live.clone(), expired_now];
        items.extend(others);
        assert_eq!(ids(&feed(&items, &BlockList::new(), now)), [live.id]);
        // One millisecond later the live one has expired too.
        assert!(feed(&items, &BlockList::new(), live.expires_at).is_empty());
    }

    #[test]
    fn feed_excludes_own_requests_and_blocked_members() {
        let now = at(1, 0);
        let own = open(1, 1, 0);
        let blocked_by_me = open(2, 1, 0);
        let blocks_me = open(3, 1, 0);
        let fine = open(4, 1, 0);
        let helped_by_blocked = completed(4, 2, 2, now);
        let helped_by_other = completed(4, 3, 5, now);
        let blocks: BlockList = [(member(1), member(2)), (member(3), member(1))]
            .into_iter()
            .collect();
        let items = [
            own,
            blocked_by_me,
            blocks_me,
            fine.clone(),
            helped_by_blocked,
            helped_by_other.clone(),
        ];
        let mut got = ids(&feed(&items, &blocks, now));
        got.sort();
        let mut expected = vec![fine.id, helped_by_other.id];
        expected.sort();
        assert_eq!(got, expected);
    }

    #[test]
    fn feed_order_score_then_newest_then_id() {
        let now = at(10, 0);
        let high = FeedItem {
            requester_trust: 100,
            ..open(2, 1, 1)
        };
        let newer = open(3, 1, 5);
        let older_a = open(4, 1, 2);
        let older_b = open(5, 1, 2);
        let (first_id, second_id) = if older_a.id < older_b.id {
            (older_a.id, older_b.id)
        } else {
            (older_b.id, older_a.id)
        };
        let items = [older_b, newer.clone(), older_a, high.clone()];
        let got = ids(&feed(&items, &BlockList::new(), now));
        assert_eq!(got, [high.id, newer.id, first_id, second_id]);
    }

    #[test]
    fn cross_posted_request_appears_once_as_its_best_copy() {
        let now = at(1, 0);
        let here = open(2, 1, 0);
        let there = FeedItem {
            community: community(2),
            community_activity: 1.0,
            ..here.clone()
        };
        let got = feed(&[here, there], &BlockList::new(), now);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].community, community(2));
    }

    #[test]
    fn pagination_boundaries() {
        let now = at(20, 0);
        // 5 items, newest first: days 4, 3, 2, 1, 0.
        let items: Vec<FeedItem> = (0..5u8).map(|i| open(2 + i, 1, i64::from(i))).collect();
        let page = |p, n| ids(&rank_feed(&viewer(), &items, &BlockList::new(), now, p, n));
        let all = page(0, 5);
        assert_eq!(
            all,
            [
                items[4].id,
                items[3].id,
                items[2].id,
                items[1].id,
                items[0].id
            ]
        );
        assert_eq!(page(0, 2), all[0..2]);
        assert_eq!(page(1, 2), all[2..4]);
        assert_eq!(page(2, 2), all[4..5]); // a short last page
        assert!(page(3, 2).is_empty()); // past the end
        assert!(page(0, 0).is_empty());
        assert!(page(usize::MAX, usize::MAX).is_empty());
        assert_eq!(page(0, usize::MAX), all);
        assert!(rank_feed(&viewer(), &[], &BlockList::new(), now, 0, 10).is_empty());
    }

    fn arbitrary_item() -> impl proptest::strategy::Strategy<Value = FeedItem> {
        use proptest::prelude::*;
        (
            2..9u8,
            0..4u8,
            0..30i64,
            0..4usize,
            any::<bool>(),
            1..4u8,
            0..3usize,
        )
            .prop_map(|(requester, nonce, day, urgency, done, c, category)| {
                let mut item = if done {
                    completed(requester, nonce, 9, at(29, 0))
                } else {
                    open(requester, nonce, day)
                };
                item.urgency = Urgency::ALL[urgency];
                item.category = [Category::Moving, Category::Food, Category::Tech][category];
                item.community = community(c);
                item.community_activity = f64::from(c) / 4.0;
                item
            })
    }

    proptest::proptest! {
        /// Scoring only the items that can reach the page gives the page
        /// that scoring every item gives.
        #[test]
        fn lazy_trust_gives_the_same_page(
            items in proptest::collection::vec(arbitrary_item(), 0..40),
            trusts in proptest::collection::vec(0..=100u8, 10),
            page in 0..4usize,
            per_page in 0..8usize,
        ) {
            let now = at(30, 0);
            let trust_of = |item: &FeedItem| trusts[usize::from(item.id.requester.as_bytes()[0]) % 10];
            let known: Vec<FeedItem> = items
                .iter()
                .map(|i| FeedItem { requester_trust: trust_of(i), ..i.clone() })
                .collect();
            let full = rank_feed(&viewer(), &known, &BlockList::new(), now, page, per_page);
            let mut asked = 0;
            let lazy = rank_feed_with(&viewer(), &items, &BlockList::new(), now, page, per_page, |i| {
                asked += 1;
                Ok::<_, ()>(trust_of(i))
            });
            proptest::prop_assert_eq!(lazy, Ok(full));
            proptest::prop_assert!(asked <= items.len());
        }
    }

    #[test]
    fn lazy_trust_asks_only_for_items_that_can_reach_the_page() {
        // 50 requests in the viewer's skill (moving), 150 outside it (food):
        // whatever its requester's trust, a food request cannot outrank a
        // moving one here, so only the moving ones need their trust.
        let now = at(45, 0);
        let items: Vec<FeedItem> = (0..200u8)
            .map(|i| FeedItem {
                category: if i < 50 {
                    Category::Moving
                } else {
                    Category::Food
                },
                ..open(2 + i % 50, i, 20 + i64::from(i % 20))
            })
            .collect();
        let mut asked = 0;
        let page = rank_feed_with(&viewer(), &items, &BlockList::new(), now, 0, 5, |_| {
            asked += 1;
            Ok::<_, ()>(50)
        });
        assert_eq!(page.map(|p| p.len()), Ok(5));
        assert_eq!(asked, 50);
    }

    #[test]
    fn community_activity_is_the_recent_completion_share() {
        let now = at(100, 0);
        let window = ACTIVITY_WINDOW_MS;
        let requests = [
            (now.plus_millis(-Timestamp::DAY), RequestStatus::Completed),
            (now.plus_millis(1 - window), RequestStatus::Completed),
            (now.plus_millis(-2 * Timestamp::DAY), RequestStatus::Open),
            (
                now.plus_millis(-3 * Timestamp::DAY),
                RequestStatus::Cancelled,
            ),
            // Outside the window (exactly 30 days old) or in the future: ignored.
            (now.plus_millis(-window), RequestStatus::Completed),
            (now.plus_millis(1), RequestStatus::Completed),
        ];
        assert_eq!(community_activity(&requests, now), 0.5);
        assert_eq!(community_activity(&[], now), 0.0);
        assert_eq!(community_activity(&requests[4..], now), 0.0);
    }
}
