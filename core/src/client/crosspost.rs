//! Cross-posted requests: one request id posted to several of the
//! requester's communities, each holding its own copy (see
//! [`crate::RequestState`]). A community cannot reach another's file, so
//! the copies are kept in line here, on the device of each party, by one
//! mechanism: [`Karmyq::reconcile_request`] looks at every copy this device
//! holds and writes, in this member's own name, what the others lack.
//!
//! - The requester accepts an offer in one community (the origin). The
//!   match is made in the origin and in every other copy whose community
//!   has the helper as a member (at most 3 in all: `shares`); those copies
//!   get the acceptance mirrored, and each pays its share of the pool once
//!   both parties confirmed there. Copies in communities without the helper
//!   are cancelled ("matched in another community").
//! - A confirmation or a cancellation of the match in one copy is repeated
//!   by the same party in the others.
//!
//! Reconciliation runs after each call below and after a received bundle
//! touches a cross-posted match this member is a party of, so copies that
//! arrive late (or a device that crashed mid-way) are caught up.

use std::collections::BTreeSet;

use super::Karmyq;
use crate::authority::CommunityId;
use crate::bundle::{Item, Report};
use crate::docs::DocId;
use crate::error::{Error, Result};
use crate::request::{
    MAX_POSTED_TO, OfferId, RequestDraft, RequestId, RequestState, RequestStatus,
};
use crate::time::Timestamp;

/// The reason given in the copies of a request matched in a community
/// where the helper is not a member.
pub const MATCHED_ELSEWHERE: &str = "matched in another community";

impl Karmyq {
    /// Posts one request to one or more (at most 3) of this member's
    /// communities; each holds its own copy with the same id.
    pub fn post_request(
        &mut self,
        communities: &[CommunityId],
        draft: &RequestDraft,
        now: Timestamp,
    ) -> Result<RequestId> {
        let distinct: BTreeSet<_> = communities.iter().collect();
        if communities.is_empty()
            || communities.len() > MAX_POSTED_TO
            || distinct.len() != communities.len()
        {
            return Err(Error::InvalidArgument(format!(
                "a request is posted to 1 to {MAX_POSTED_TO} distinct communities"
            )));
        }
        draft.validate()?;
        let me = self.member_id();
        for c in communities {
            if self.community(*c)?.authority().role(&me).is_none() {
                return Err(Error::InvalidArgument(format!(
                    "not a member of community {}",
                    c.fmt_short()
                )));
            }
        }
        let id = RequestId::generate(me)?;
        let posted_to: &[CommunityId] = if communities.len() > 1 {
            communities
        } else {
            &[]
        };
        for c in communities {
            self.community(*c)?
                .post_request_as(id, draft, posted_to, now)?;
        }
        Ok(id)
    }

    /// Accepts an offer made in `community`. For a cross-posted request the
    /// match is shared with the other copies whose community has the helper
    /// as a member; the rest are cancelled.
    pub fn accept_offer(
        &mut self,
        community: CommunityId,
        request: RequestId,
        offer: OfferId,
        now: Timestamp,
    ) -> Result<()> {
        let posted_to = self.posted_to(community, request)?;
        let mut shares = vec![community];
        for c in posted_to.iter().filter(|c| **c != community) {
            let Ok(copy) = self.community(*c) else {
                continue;
            };
            let helper_here = copy.authority().role(&offer.responder).is_some();
            let open = copy
                .request_copy(request)?
                .is_some_and(|s| s.status(now) == RequestStatus::Open);
            if helper_here && open {
                shares.push(*c);
            }
        }
        // Not cross-posted: `shares` is this community alone, and a share
        // list of one is not written.
        self.community(community)?
            .accept_offer_shared(request, offer, &shares, now)?;
        self.reconcile_request(request, &posted_to, now);
        Ok(())
    }

    /// Confirms the match of a request (either party), in every copy of a
    /// cross-posted request this device holds.
    pub fn confirm_match(
        &mut self,
        community: CommunityId,
        request: RequestId,
        note: Option<&str>,
        now: Timestamp,
    ) -> Result<()> {
        self.community(community)?
            .confirm_match(request, note, now)?;
        let posted_to = self.posted_to(community, request)?;
        self.reconcile_request(request, &posted_to, now);
        Ok(())
    }

    /// Cancels the match of a request (either party), in every copy of a
    /// cross-posted request this device holds.
    pub fn cancel_match(
        &mut self,
        community: CommunityId,
        request: RequestId,
        reason: &str,
        now: Timestamp,
    ) -> Result<()> {
        self.community(community)?
            .cancel_match(request, reason, now)?;
        let posted_to = self.posted_to(community, request)?;
        self.reconcile_request(request, &posted_to, now);
        Ok(())
    }

    /// The communities a request is cross-posted to (empty if it is not),
    /// as `community`'s copy says.
    fn posted_to(
        &mut self,
        community: CommunityId,
        request: RequestId,
    ) -> Result<Vec<CommunityId>> {
        Ok(self
            .community(community)?
            .request_copy(request)?
            .map(|s| s.posted_to)
            .unwrap_or_default())
    }

    /// After a received bundle: reconciles each cross-posted request it
    /// touched whose match this member is a party of.
    pub(super) fn reconcile_received(
        &mut self,
        community: CommunityId,
        report: &Report,
        now: Timestamp,
    ) -> Result<()> {
        let me = self.member_id();
        let touched: BTreeSet<RequestId> = report
            .accepted
            .iter()
            .filter_map(|item| match item {
                Item::Change { doc, .. } => match DocId::parse_stored(doc) {
                    Some(DocId::Request(id)) => Some(id),
                    _ => None,
                },
                Item::Op(_) => None,
            })
            .collect();
        for request in touched {
            if !self.community(community)?.is_party(&request, &me)? {
                continue;
            }
            let posted_to = self.posted_to(community, request)?;
            if !posted_to.is_empty() {
                self.reconcile_request(request, &posted_to, now);
            }
        }
        Ok(())
    }

    /// Writes into each copy of a cross-posted request held here what this
    /// member wrote in another: the mirrored acceptance (the requester),
    /// and each party's confirmation or cancellation of the match. A copy
    /// that refuses (its community removed the helper, say) is logged and
    /// left as it is; the others still get their part.
    pub(crate) fn reconcile_request(
        &mut self,
        request: RequestId,
        posted_to: &[CommunityId],
        now: Timestamp,
    ) {
        let copies = self.copies(request, posted_to);
        let accepted = self.mirror_acceptance(request, &copies, now);
        // Read again: the acceptance may have just been mirrored.
        let copies = self.copies(request, posted_to);
        let parties = self.mirror_parties(request, &copies, now);
        for e in [accepted, parties].into_iter().filter_map(|r| r.err()) {
            tracing::warn!(request = %request, error = %e, "cross-post reconciliation stopped");
        }
    }

    /// Every copy of `request` this device holds, by community.
    fn copies(
        &mut self,
        request: RequestId,
        posted_to: &[CommunityId],
    ) -> Vec<(CommunityId, RequestState)> {
        let mut out = Vec::new();
        for c in posted_to {
            let copy = self
                .community(*c)
                .and_then(|community| community.request_copy(request));
            if let Ok(Some(state)) = copy {
                out.push((*c, state));
            }
        }
        out
    }

    /// The requester shares the origin's acceptance with the copies of its
    /// `shares` and cancels the open copies elsewhere.
    fn mirror_acceptance(
        &mut self,
        request: RequestId,
        copies: &[(CommunityId, RequestState)],
        now: Timestamp,
    ) -> Result<()> {
        if request.requester != self.member_id() {
            return Ok(());
        }
        let origin = copies.iter().find(|(_, s)| {
            s.accepted_in.is_none() && !s.shares.is_empty() && s.active_offer().is_some()
        });
        let Some((origin, state)) = origin else {
            return Ok(());
        };
        let (origin, shares) = (*origin, state.shares.clone());
        let Some(accepted) = state.accepted else {
            return Ok(());
        };
        for (c, copy) in copies {
            if *c == origin || copy.status(now) != RequestStatus::Open {
                continue;
            }
            let community = self.community(*c)?;
            if shares.contains(c) {
                community.mirror_acceptance(request, accepted, origin, &shares, now)?;
            } else {
                community.cancel_request(request, MATCHED_ELSEWHERE, now)?;
            }
        }
        Ok(())
    }

    /// Repeats this member's confirmation or cancellation of a shared
    /// match in every copy where the match is still live.
    fn mirror_parties(
        &mut self,
        request: RequestId,
        copies: &[(CommunityId, RequestState)],
        now: Timestamp,
    ) -> Result<()> {
        let me = self.member_id();
        let offers: BTreeSet<OfferId> = copies
            .iter()
            .filter_map(|(_, s)| s.active_offer().map(|o| o.id))
            .filter(|o| o.responder == me || request.requester == me)
            .collect();
        for offer in offers {
            let mut confirmed: Option<Option<String>> = None;
            let mut cancelled: Option<String> = None;
            for (_, s) in copies {
                if s.accepted.map(|a| a.0) != Some(offer) {
                    continue;
                }
                let Some(o) = s.offers.get(&offer) else {
                    continue;
                };
                if let Some(reason) = s.match_cancelled.get(&offer) {
                    cancelled = Some(reason.clone());
                } else if o.cancelled_at.is_some() {
                    cancelled = Some(o.cancel_reason.clone().unwrap_or_default());
                }
                if me == request.requester && s.requester_confirmed.contains_key(&offer) {
                    confirmed = Some(s.requester_notes.get(&offer).cloned());
                } else if me == offer.responder && o.confirmed_at.is_some() {
                    confirmed = Some(o.note.clone());
                }
            }
            for (c, s) in copies {
                if s.active_offer().map(|o| o.id) != Some(offer) {
                    continue;
                }
                let community = self.community(*c)?;
                match (&cancelled, &confirmed) {
                    (Some(reason), _) => {
                        if s.status(now) == RequestStatus::Matched {
                            community.cancel_match(request, reason, now)?;
                        }
                    }
                    (None, Some(note)) => community.confirm_match(request, note.as_deref(), now)?,
                    (None, None) => {}
                }
            }
        }
        Ok(())
    }
}
