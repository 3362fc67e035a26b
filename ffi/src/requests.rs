//! Help requests, offers and matches; karma, trust, suggestions, the feed
//! and search.

use karmyq_core as core;
use karmyq_core::{CommunityId, MemberId, OfferId, RequestId};

use crate::client::KarmyqClient;
use crate::error::ApiResult;
use crate::types::{FeedEntry, KarmaEntry, RequestDraft, RequestView};

#[uniffi::export]
impl KarmyqClient {
    /// Posts a request to one community, or the same request to up to 3.
    pub fn post_request(
        &self,
        communities: Vec<CommunityId>,
        draft: RequestDraft,
    ) -> ApiResult<RequestId> {
        let draft = core::RequestDraft::try_from(draft)?;
        self.write_across(|k, now| k.post_request(&communities, &draft, now))
    }

    /// A request with its offers and match, as of now.
    pub fn request(&self, community: CommunityId, request: RequestId) -> ApiResult<RequestView> {
        self.read(community, |c, now| c.request(request, now))
            .map(RequestView::from)
    }

    /// Rewrites an open request (its requester).
    pub fn edit_request(
        &self,
        community: CommunityId,
        request: RequestId,
        draft: RequestDraft,
    ) -> ApiResult<()> {
        let draft = core::RequestDraft::try_from(draft)?;
        self.write(community, |c, now| c.edit_request(request, &draft, now))
    }

    /// Cancels a request (its requester).
    pub fn cancel_request(
        &self,
        community: CommunityId,
        request: RequestId,
        reason: String,
    ) -> ApiResult<()> {
        self.write(community, |c, now| c.cancel_request(request, &reason, now))
    }

    /// Renews an expiring request (its requester).
    pub fn renew_request(&self, community: CommunityId, request: RequestId) -> ApiResult<()> {
        self.write(community, |c, now| c.renew_request(request, now))
    }

    /// Hides a request (moderators) with a reason, or shows it again with
    /// `None`.
    pub fn hide_request(
        &self,
        community: CommunityId,
        request: RequestId,
        reason: Option<String>,
    ) -> ApiResult<()> {
        self.write(community, |c, now| {
            c.hide_request(request, reason.as_deref(), now)
        })
    }

    /// Invalidates a completed match (moderators), or restores it with
    /// `None`.
    pub fn invalidate_match(
        &self,
        community: CommunityId,
        request: RequestId,
        reason: Option<String>,
    ) -> ApiResult<()> {
        self.write(community, |c, now| {
            c.invalidate_match(request, reason.as_deref(), now)
        })
    }

    /// Offers help on someone else's request.
    pub fn offer_help(
        &self,
        community: CommunityId,
        request: RequestId,
        message: String,
    ) -> ApiResult<OfferId> {
        self.write(community, |c, now| c.offer_help(request, &message, now))
    }

    /// Withdraws one's own offer.
    pub fn withdraw_offer(
        &self,
        community: CommunityId,
        request: RequestId,
        offer: OfferId,
    ) -> ApiResult<()> {
        self.write(community, |c, now| c.withdraw_offer(request, offer, now))
    }

    /// Accepts an offer on one's request: a match. A cross-posted request
    /// shares it with its other communities.
    pub fn accept_offer(
        &self,
        community: CommunityId,
        request: RequestId,
        offer: OfferId,
    ) -> ApiResult<()> {
        self.write_across(|k, now| k.accept_offer(community, request, offer, now))
    }

    /// Declines an offer on one's request.
    pub fn decline_offer(
        &self,
        community: CommunityId,
        request: RequestId,
        offer: OfferId,
    ) -> ApiResult<()> {
        self.write(community, |c, now| c.decline_offer(request, offer, now))
    }

    /// Confirms the help happened (either party), with an optional note.
    pub fn confirm_match(
        &self,
        community: CommunityId,
        request: RequestId,
        note: Option<String>,
    ) -> ApiResult<()> {
        self.write_across(|k, now| k.confirm_match(community, request, note.as_deref(), now))
    }

    /// Cancels the match (either party); the request opens again.
    pub fn cancel_match(
        &self,
        community: CommunityId,
        request: RequestId,
        reason: String,
    ) -> ApiResult<()> {
        self.write_across(|k, now| k.cancel_match(community, request, &reason, now))
    }

    /// This member's requests, newest first, with statuses as of now.
    pub fn my_requests(
        &self,
        community: CommunityId,
        limit: u32,
        offset: u32,
    ) -> ApiResult<Vec<core::RequestSummary>> {
        self.read(community, |c, now| c.my_requests(now, limit, offset))
    }

    /// This member's offers, newest first.
    pub fn my_offers(
        &self,
        community: CommunityId,
        limit: u32,
        offset: u32,
    ) -> ApiResult<Vec<core::OfferSummary>> {
        self.read(community, |c, now| c.my_offers(now, limit, offset))
    }

    /// This member's matches, as requester or helper, newest first.
    pub fn my_matches(
        &self,
        community: CommunityId,
        limit: u32,
        offset: u32,
    ) -> ApiResult<Vec<core::MatchSummary>> {
        self.read(community, |c, now| c.my_matches(now, limit, offset))
    }

    /// A page of requests by status, category, urgency or requester.
    pub fn list_requests(
        &self,
        community: CommunityId,
        query: core::RequestQuery,
    ) -> ApiResult<Vec<core::RequestSummary>> {
        self.read(community, |c, now| c.list_requests(&query, now))
    }

    /// Full-text search of titles and descriptions.
    pub fn search_requests(
        &self,
        community: CommunityId,
        text: String,
        limit: u32,
    ) -> ApiResult<Vec<core::RequestSummary>> {
        self.read(community, |c, now| c.search_requests(&text, limit, now))
    }

    /// The members best placed to help with a request, best first.
    pub fn suggested_helpers(
        &self,
        community: CommunityId,
        request: RequestId,
    ) -> ApiResult<Vec<core::Suggestion>> {
        self.read(community, |c, now| c.suggested_helpers(request, now))
    }

    /// A page of this member's feed across every community on the device.
    pub fn feed(&self, page: u32, per_page: u32) -> ApiResult<Vec<FeedEntry>> {
        let items = self.with(|k, now| k.feed(now, page as usize, per_page as usize))?;
        Ok(items.into_iter().map(FeedEntry::from).collect())
    }

    /// A member's karma in one community now, after decay.
    pub fn karma(&self, community: CommunityId, member: MemberId) -> ApiResult<f64> {
        self.read(community, |c, now| c.karma(&member, now))
    }

    /// A member's karma across every community on this device.
    pub fn total_karma(&self, member: MemberId) -> ApiResult<f64> {
        self.with(|k, now| k.total_karma(&member, now))
    }

    /// A member's karma awards in a community, oldest first.
    pub fn karma_history(
        &self,
        community: CommunityId,
        member: MemberId,
    ) -> ApiResult<Vec<KarmaEntry>> {
        let list = self.read(community, |c, now| c.karma_history(&member, now))?;
        Ok(list.into_iter().filter_map(KarmaEntry::of).collect())
    }

    /// A member's trust score (0–100) in a community, with its parts.
    pub fn trust(&self, community: CommunityId, member: MemberId) -> ApiResult<core::TrustScore> {
        self.read(community, |c, now| c.trust(&member, now))
    }
}
