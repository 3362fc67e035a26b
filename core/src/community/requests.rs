//! Help requests, offers and matches through a community handle.
//!
//! Every call writes the request's document through `write_doc`, so the
//! change is judged by the same validator as one from another device: an
//! illegal step fails with the same typed `Rejection` either way.

use automerge::transaction::{Transactable, Transaction as DocTx};
use automerge::{ObjId, ObjType, ROOT, ReadDoc};
use rusqlite::{ToSql, params_from_iter};

use super::Community;
use super::persist::load_doc;
use crate::authority::CommunityId;
use crate::docs::{DocId, actor_of};
use crate::error::{Error, Rejection, Result};
use crate::identity::MemberId;
use crate::request::{
    CONFIRMED, Category, DECLINED, INVALIDATED, MATCH_CANCEL, MAX_RENEWALS, MatchState,
    MatchStatus, NOTE, OFFER, OfferId, OfferState, OfferStatus, RequestDraft, RequestId,
    RequestKind, RequestState, RequestStatus, Urgency, communities_text,
};
use crate::time::Timestamp;

/// A request with everything derived from it at some `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestView {
    /// The document's content.
    pub request: RequestState,
    /// Its status.
    pub status: RequestStatus,
    /// Its offers with their statuses, oldest first.
    pub offers: Vec<(OfferState, OfferStatus)>,
    /// The live match, if any.
    pub active_match: Option<MatchState>,
}

/// A request as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestSummary {
    /// The request.
    pub id: RequestId,
    /// Title.
    pub title: String,
    /// Category.
    pub category: Category,
    /// Urgency.
    pub urgency: Urgency,
    /// Kind.
    pub kind: RequestKind,
    /// When posted.
    pub created_at: Timestamp,
    /// When it expires unless renewed.
    pub expires_at: Timestamp,
    /// Status at the query's `now`.
    pub status: RequestStatus,
}

/// One of the member's offers, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferSummary {
    /// The offer.
    pub offer: OfferId,
    /// The request it answers.
    pub request: RequestId,
    /// The request's title.
    pub title: String,
    /// What the responder said.
    pub message: String,
    /// When it was made.
    pub created_at: Timestamp,
    /// Its status at the query's `now`.
    pub status: OfferStatus,
}

/// One of the member's matches, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchSummary {
    /// The request.
    pub request: RequestId,
    /// The request's title.
    pub title: String,
    /// The accepted offer (its `responder` is the helper).
    pub offer: OfferId,
    /// When the offer was accepted.
    pub accepted_at: Timestamp,
    /// The requester's confirmation.
    pub requester_confirmed_at: Option<Timestamp>,
    /// The responder's confirmation.
    pub responder_confirmed_at: Option<Timestamp>,
    /// When it completed.
    pub completed_at: Option<Timestamp>,
    /// Its status at the query's `now`.
    pub status: MatchStatus,
    /// A moderator invalidated it.
    pub invalidated: bool,
}

/// How a list of requests is ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RequestSort {
    /// Newest first.
    #[default]
    Newest,
    /// Most urgent first, then newest.
    Urgency,
}

/// Which requests to list, and which page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestQuery {
    /// Only this status (at `now`).
    pub status: Option<RequestStatus>,
    /// Only this category.
    pub category: Option<Category>,
    /// Only this urgency.
    pub urgency: Option<Urgency>,
    /// Only this requester's.
    pub requester: Option<MemberId>,
    /// Order.
    pub sort: RequestSort,
    /// Page size (1–100).
    pub limit: u32,
    /// Rows to skip.
    pub offset: u32,
}

impl Default for RequestQuery {
    fn default() -> Self {
        RequestQuery {
            status: None,
            category: None,
            urgency: None,
            requester: None,
            sort: RequestSort::Newest,
            limit: 20,
            offset: 0,
        }
    }
}

fn put_draft(tx: &mut DocTx<'_>, draft: &RequestDraft, old: Option<&RequestState>) -> Result<()> {
    let fields = [
        (
            "title",
            draft.title.as_str(),
            old.map(|o| o.draft.title.as_str()),
        ),
        (
            "description",
            &draft.description,
            old.map(|o| o.draft.description.as_str()),
        ),
        (
            "category",
            draft.category.as_str(),
            old.map(|o| o.draft.category.as_str()),
        ),
        (
            "urgency",
            draft.urgency.as_str(),
            old.map(|o| o.draft.urgency.as_str()),
        ),
        (
            "kind",
            draft.kind.as_str(),
            old.map(|o| o.draft.kind.as_str()),
        ),
    ];
    for (key, new, was) in fields {
        if was != Some(new) {
            tx.put(ROOT, key, new)?;
        }
    }
    match (&draft.location, old.and_then(|o| o.draft.location.as_ref())) {
        (Some(l), was) if was != Some(l) => tx.put(ROOT, "location", l.as_str())?,
        (None, Some(_)) => tx.delete(ROOT, "location")?,
        _ => {}
    }
    match (draft.when, old.and_then(|o| o.draft.when)) {
        (Some((a, b)), was) if was != Some((a, b)) => {
            tx.put(ROOT, "when_start", a.as_millis())?;
            tx.put(ROOT, "when_end", b.as_millis())?;
        }
        (None, Some(_)) => {
            tx.delete(ROOT, "when_start")?;
            tx.delete(ROOT, "when_end")?;
        }
        _ => {}
    }
    Ok(())
}

fn offer_obj(tx: &DocTx<'_>, offer: &OfferId) -> Result<ObjId> {
    match tx.get(ROOT, format!("{OFFER}{offer}"))? {
        Some((v, id)) if v.is_object() => Ok(id),
        _ => Err(Error::InvalidArgument("no such offer".into())),
    }
}

/// A moderator's mark: set with its reason, or lifted with `None`.
/// The responder's own object for `offer`, created here if the offer was
/// accepted in another community and this copy lacks it.
fn own_offer_obj(tx: &mut DocTx<'_>, offer: &OfferState, now: Timestamp) -> Result<ObjId> {
    if offer.is_here() {
        return offer_obj(tx, &offer.id);
    }
    let obj = tx.put_object(ROOT, format!("{OFFER}{}", offer.id), ObjType::Map)?;
    tx.put(&obj, "created_at", now.as_millis())?;
    Ok(obj)
}

fn put_reason(tx: &mut DocTx<'_>, key: &str, reason: Option<&str>) -> Result<()> {
    match reason {
        Some(r) => tx.put(ROOT, key, r)?,
        None => tx.delete(ROOT, key)?,
    }
    Ok(())
}

/// A page holds 1 to 100 rows.
fn check_page(limit: u32) -> Result<()> {
    if !(1..=100).contains(&limit) {
        return Err(Error::InvalidArgument("limit must be 1-100".into()));
    }
    Ok(())
}

fn check_text(s: &str, what: &str) -> Result<()> {
    if s.chars().count() > 500 {
        return Err(Error::InvalidArgument(format!("{what} too long")));
    }
    Ok(())
}

impl Community {
    /// The request as this device holds it, read from its document.
    fn request_state(&mut self, id: RequestId) -> Result<RequestState> {
        self.request_copy(id)?
            .ok_or_else(|| Error::InvalidArgument("no such request".into()))
    }

    /// This community's copy of a request, if it holds one.
    pub(crate) fn request_copy(&mut self, id: RequestId) -> Result<Option<RequestState>> {
        let actor = actor_of(&self.me());
        let loaded = load_doc(&self.db, &mut self.docs, &DocId::Request(id), &actor)?;
        RequestState::read(&loaded.doc, id, None)
    }

    /// A request with its offers and match, statuses derived at `now`.
    /// Offers from members this device blocked are left out.
    pub fn request(&mut self, id: RequestId, now: Timestamp) -> Result<RequestView> {
        let request = self.request_state(id)?;
        let blocked = self.hub.blocked()?;
        let mut offers = request
            .offers
            .values()
            .filter(|o| !blocked.contains(&o.id.responder))
            .map(|o| (o.clone(), request.offer_status(o, now)))
            .collect::<Vec<_>>();
        offers.sort_by_key(|(o, _)| (o.created_at, o.id));
        Ok(RequestView {
            status: request.status(now),
            active_match: request.active_match(now),
            offers,
            request,
        })
    }

    /// Posts a help request; it expires after the community's time-to-live
    /// for its urgency.
    pub fn post_request(&mut self, draft: &RequestDraft, now: Timestamp) -> Result<RequestId> {
        let id = RequestId::generate(self.me())?;
        self.post_request_as(id, draft, &[], now)?;
        Ok(id)
    }

    /// Posts this community's copy of request `id`; `posted_to` lists every
    /// community of a cross-posted request (empty: this one only).
    pub(crate) fn post_request_as(
        &mut self,
        id: RequestId,
        draft: &RequestDraft,
        posted_to: &[CommunityId],
        now: Timestamp,
    ) -> Result<()> {
        draft.validate()?;
        let ttl = self.ttl_days(draft.urgency);
        self.write_doc(DocId::Request(id), now, |tx| {
            put_draft(tx, draft, None)?;
            tx.put(ROOT, "created_at", now.as_millis())?;
            tx.put(ROOT, "expires_at", now.as_millis().saturating_add(ttl))?;
            tx.put(ROOT, "renewals", 0_i64)?;
            if !posted_to.is_empty() {
                tx.put(ROOT, "posted_to", communities_text(posted_to))?;
            }
            Ok(())
        })
    }

    fn ttl_days(&self, urgency: Urgency) -> i64 {
        self.auth.settings.request_ttl_days.for_urgency(urgency)
    }

    /// Edits a request (the requester, while it is open).
    pub fn edit_request(
        &mut self,
        id: RequestId,
        draft: &RequestDraft,
        now: Timestamp,
    ) -> Result<()> {
        draft.validate()?;
        let old = self.request_state(id)?;
        self.write_doc(DocId::Request(id), now, |tx| {
            put_draft(tx, draft, Some(&old))
        })
    }

    /// Cancels a request (the requester, while open or matched).
    pub fn cancel_request(&mut self, id: RequestId, reason: &str, now: Timestamp) -> Result<()> {
        check_text(reason, "reason")?;
        self.write_doc(DocId::Request(id), now, |tx| {
            tx.put(ROOT, "cancelled_at", now.as_millis())?;
            tx.put(ROOT, "cancel_reason", reason)?;
            Ok(())
        })
    }

    /// Renews an expired request (the requester, at most 3 times).
    pub fn renew_request(&mut self, id: RequestId, now: Timestamp) -> Result<()> {
        let old = self.request_state(id)?;
        if old.renewals >= MAX_RENEWALS {
            return Err(
                Rejection::IllegalTransition("a request is renewed at most 3 times").into(),
            );
        }
        let ttl = self.ttl_days(old.draft.urgency);
        self.write_doc(DocId::Request(id), now, |tx| {
            tx.put(ROOT, "expires_at", now.as_millis().saturating_add(ttl))?;
            tx.put(ROOT, "renewals", old.renewals + 1)?;
            Ok(())
        })
    }

    /// Hides a request with a reason, or shows it again with `None`
    /// (moderators).
    pub fn hide_request(
        &mut self,
        id: RequestId,
        reason: Option<&str>,
        now: Timestamp,
    ) -> Result<()> {
        if let Some(r) = reason {
            check_text(r, "reason")?;
        }
        self.write_doc(DocId::Request(id), now, |tx| {
            put_reason(tx, "hidden", reason)
        })
    }

    /// Invalidates a completed match with a reason, or restores it with
    /// `None` (moderators): karma and trust are recomputed from it.
    pub fn invalidate_match(
        &mut self,
        id: RequestId,
        reason: Option<&str>,
        now: Timestamp,
    ) -> Result<()> {
        if let Some(r) = reason {
            check_text(r, "reason")?;
        }
        let state = self.request_state(id)?;
        let offer = state
            .active_offer()
            .map(|o| o.id)
            .ok_or(Rejection::IllegalTransition(
                "only a completed match can be invalidated",
            ))?;
        self.write_doc(DocId::Request(id), now, |tx| {
            put_reason(tx, &format!("{INVALIDATED}{offer}"), reason)
        })
    }

    /// Offers help on an open request (not one's own; one pending offer).
    pub fn offer_help(
        &mut self,
        request: RequestId,
        message: &str,
        now: Timestamp,
    ) -> Result<OfferId> {
        check_text(message, "message")?;
        if self.hub.is_blocked(&request.requester)? {
            return Err(Rejection::Blocked.into());
        }
        let offer = OfferId::generate(self.me())?;
        self.write_doc(DocId::Request(request), now, |tx| {
            let obj = tx.put_object(ROOT, format!("{OFFER}{offer}"), ObjType::Map)?;
            tx.put(&obj, "message", message)?;
            tx.put(&obj, "created_at", now.as_millis())?;
            Ok(())
        })?;
        Ok(offer)
    }

    /// Withdraws one's pending offer.
    pub fn withdraw_offer(
        &mut self,
        request: RequestId,
        offer: OfferId,
        now: Timestamp,
    ) -> Result<()> {
        self.write_doc(DocId::Request(request), now, |tx| {
            let obj = offer_obj(tx, &offer)?;
            tx.put(&obj, "withdrawn_at", now.as_millis())?;
            Ok(())
        })
    }

    /// Accepts a pending offer: the match (the requester, request open).
    pub fn accept_offer(
        &mut self,
        request: RequestId,
        offer: OfferId,
        now: Timestamp,
    ) -> Result<()> {
        self.accept_offer_shared(request, offer, &[], now)
    }

    /// Accepts a pending offer, naming the communities (this one among
    /// them) whose copies of a cross-posted request split the pool.
    pub(crate) fn accept_offer_shared(
        &mut self,
        request: RequestId,
        offer: OfferId,
        shares: &[CommunityId],
        now: Timestamp,
    ) -> Result<()> {
        if self.hub.is_blocked(&offer.responder)? {
            return Err(Rejection::Blocked.into());
        }
        self.write_doc(DocId::Request(request), now, |tx| {
            tx.put(ROOT, "accepted", offer.to_string())?;
            tx.put(ROOT, "accepted_at", now.as_millis())?;
            if shares.len() > 1 {
                tx.put(ROOT, "shares", communities_text(shares))?;
            }
            Ok(())
        })
    }

    /// Mirrors into this copy of a cross-posted request the acceptance of
    /// `offer` in community `origin` (the requester).
    pub(crate) fn mirror_acceptance(
        &mut self,
        request: RequestId,
        (offer, accepted_at): (OfferId, Timestamp),
        origin: CommunityId,
        shares: &[CommunityId],
        now: Timestamp,
    ) -> Result<()> {
        self.write_doc(DocId::Request(request), now, |tx| {
            tx.put(ROOT, "accepted", offer.to_string())?;
            tx.put(ROOT, "accepted_at", accepted_at.as_millis())?;
            tx.put(ROOT, "accepted_in", origin.to_string())?;
            tx.put(ROOT, "shares", communities_text(shares))?;
            Ok(())
        })
    }

    /// Declines a pending offer (the requester).
    pub fn decline_offer(
        &mut self,
        request: RequestId,
        offer: OfferId,
        now: Timestamp,
    ) -> Result<()> {
        self.write_doc(DocId::Request(request), now, |tx| {
            tx.put(ROOT, format!("{DECLINED}{offer}"), true)?;
            Ok(())
        })
    }

    /// Confirms the help happened, with an optional thank-you note (either
    /// party of the match). Confirming twice changes nothing.
    pub fn confirm_match(
        &mut self,
        request: RequestId,
        note: Option<&str>,
        now: Timestamp,
    ) -> Result<()> {
        if let Some(n) = note {
            check_text(n, "note")?;
        }
        let me = self.me();
        let state = self.request_state(request)?;
        let Some(offer) = state.active_offer().cloned() else {
            return Err(Rejection::IllegalTransition("only a match can be confirmed").into());
        };
        if me == request.requester {
            if state.requester_confirmed.contains_key(&offer.id) {
                return Ok(());
            }
            self.write_doc(DocId::Request(request), now, |tx| {
                tx.put(ROOT, format!("{CONFIRMED}{}", offer.id), now.as_millis())?;
                if let Some(n) = note {
                    tx.put(ROOT, format!("{NOTE}{}", offer.id), n)?;
                }
                Ok(())
            })
        } else if me == offer.id.responder {
            if offer.confirmed_at.is_some() {
                return Ok(());
            }
            self.write_doc(DocId::Request(request), now, |tx| {
                let obj = own_offer_obj(tx, &offer, now)?;
                tx.put(&obj, "confirmed_at", now.as_millis())?;
                if let Some(n) = note {
                    tx.put(&obj, "note", n)?;
                }
                Ok(())
            })
        } else {
            Err(Rejection::NotPermitted.into())
        }
    }

    /// Cancels the match before it completes, with a reason (either party):
    /// the request opens again and the offer counts as declined.
    pub fn cancel_match(&mut self, request: RequestId, reason: &str, now: Timestamp) -> Result<()> {
        check_text(reason, "reason")?;
        let me = self.me();
        let state = self.request_state(request)?;
        let Some(offer) = state.active_offer().cloned() else {
            return Err(
                Rejection::IllegalTransition("only an uncompleted match can be cancelled").into(),
            );
        };
        if me == request.requester {
            let offer = offer.id;
            self.write_doc(DocId::Request(request), now, |tx| {
                tx.put(ROOT, format!("{MATCH_CANCEL}{offer}"), reason)?;
                Ok(())
            })
        } else if me == offer.id.responder {
            self.write_doc(DocId::Request(request), now, |tx| {
                let obj = own_offer_obj(tx, &offer, now)?;
                tx.put(&obj, "cancelled_at", now.as_millis())?;
                tx.put(&obj, "cancel_reason", reason)?;
                Ok(())
            })
        } else {
            Err(Rejection::NotPermitted.into())
        }
    }

    /// Whether `member` is a party of the match the projection holds for
    /// `request`.
    pub(crate) fn is_party(&self, request: &RequestId, member: &MemberId) -> Result<bool> {
        let mut stmt = self.db.conn().prepare_cached(
            "SELECT 1 FROM matches WHERE request_id = ?1 AND (requester = ?2 OR responder = ?2)",
        )?;
        Ok(stmt.exists(rusqlite::params![
            request.to_string(),
            member.as_bytes().as_slice()
        ])?)
    }

    /// This member's requests, newest first (a page of 1–100).
    pub fn my_requests(
        &self,
        now: Timestamp,
        limit: u32,
        offset: u32,
    ) -> Result<Vec<RequestSummary>> {
        let query = RequestQuery {
            requester: Some(self.me()),
            limit,
            offset,
            ..RequestQuery::default()
        };
        self.list_requests(&query, now)
    }

    /// This member's offers, newest first (a page of 1–100), statuses
    /// derived at `now`.
    pub fn my_offers(&self, now: Timestamp, limit: u32, offset: u32) -> Result<Vec<OfferSummary>> {
        check_page(limit)?;
        let mut stmt = self.db.conn().prepare_cached(
            "SELECT o.offer_id, o.request_id, r.title, o.message, o.created_at, o.state,
                    r.state, r.expires_at
             FROM offers o JOIN requests r ON r.request_id = o.request_id
             WHERE o.responder = ?1
             ORDER BY o.created_at DESC, o.offer_id LIMIT ?2 OFFSET ?3",
        )?;
        let rows = stmt.query_map(
            rusqlite::params![self.me().as_bytes().as_slice(), limit, offset],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, String>(6)?,
                    r.get::<_, i64>(7)?,
                ))
            },
        )?;
        let corrupt = || Error::Corrupt("offer row".into());
        let mut out = Vec::new();
        for row in rows {
            let (offer, request, title, message, created, state, request_state, expires) = row?;
            let request_status = RequestStatus::at(
                RequestStatus::parse(&request_state).ok_or_else(corrupt)?,
                Timestamp::from_millis(expires),
                now,
            );
            let status = match OfferStatus::parse(&state).ok_or_else(corrupt)? {
                OfferStatus::Pending => OfferStatus::of_pending(request_status),
                settled => settled,
            };
            out.push(OfferSummary {
                offer: OfferId::parse_stored(&offer).ok_or_else(corrupt)?,
                request: RequestId::parse_stored(&request).ok_or_else(corrupt)?,
                title,
                message,
                created_at: Timestamp::from_millis(created),
                status,
            });
        }
        Ok(out)
    }

    /// This member's matches (as requester or helper), newest first (a
    /// page of 1–100), statuses derived at `now`.
    pub fn my_matches(&self, now: Timestamp, limit: u32, offset: u32) -> Result<Vec<MatchSummary>> {
        check_page(limit)?;
        let mut stmt = self.db.conn().prepare_cached(
            "SELECT m.request_id, r.title, m.offer_id, m.accepted_at, m.requester_confirmed_at,
                    m.responder_confirmed_at, m.invalidated
             FROM matches m JOIN requests r ON r.request_id = m.request_id
             WHERE m.requester = ?1 OR m.responder = ?1
             ORDER BY m.accepted_at DESC, m.request_id LIMIT ?2 OFFSET ?3",
        )?;
        let rows = stmt.query_map(
            rusqlite::params![self.me().as_bytes().as_slice(), limit, offset],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, Option<i64>>(4)?,
                    r.get::<_, Option<i64>>(5)?,
                    r.get::<_, bool>(6)?,
                ))
            },
        )?;
        let corrupt = || Error::Corrupt("match row".into());
        let mut out = Vec::new();
        for row in rows {
            let (request, title, offer, accepted, by_requester, by_responder, invalidated) = row?;
            let (a, b) = (
                by_requester.map(Timestamp::from_millis),
                by_responder.map(Timestamp::from_millis),
            );
            let (status, completed_at) = MatchStatus::of_confirmations(a, b, now);
            out.push(MatchSummary {
                request: RequestId::parse_stored(&request).ok_or_else(corrupt)?,
                title,
                offer: OfferId::parse_stored(&offer).ok_or_else(corrupt)?,
                accepted_at: Timestamp::from_millis(accepted),
                requester_confirmed_at: a,
                responder_confirmed_at: b,
                completed_at,
                status,
                invalidated,
            });
        }
        Ok(out)
    }

    /// Lists requests from the projections, statuses derived at `now`.
    /// Hidden requests are left out.
    pub fn list_requests(
        &self,
        query: &RequestQuery,
        now: Timestamp,
    ) -> Result<Vec<RequestSummary>> {
        check_page(query.limit)?;
        let mut sql = String::from(
            "SELECT request_id, title, category, urgency, kind, created_at, expires_at, state
             FROM requests WHERE hidden IS NULL",
        );
        let mut args: Vec<Box<dyn ToSql>> = Vec::new();
        if let Some(status) = query.status {
            let (state, expiry) = match status {
                RequestStatus::Open => ("open", " AND expires_at > ?"),
                RequestStatus::Expired => ("open", " AND expires_at <= ?"),
                other => (other.as_str(), ""),
            };
            sql.push_str(" AND state = ?");
            args.push(Box::new(state));
            if !expiry.is_empty() {
                sql.push_str(expiry);
                args.push(Box::new(now.as_millis()));
            }
        }
        if let Some(c) = query.category {
            sql.push_str(" AND category = ?");
            args.push(Box::new(c.as_str()));
        }
        if let Some(u) = query.urgency {
            sql.push_str(" AND urgency = ?");
            args.push(Box::new(u as i64));
        }
        if let Some(r) = query.requester {
            sql.push_str(" AND requester = ?");
            args.push(Box::new(r.as_bytes().to_vec()));
        }
        sql.push_str(match query.sort {
            RequestSort::Newest => " ORDER BY created_at DESC, request_id",
            RequestSort::Urgency => " ORDER BY urgency DESC, created_at DESC, request_id",
        });
        sql.push_str(" LIMIT ? OFFSET ?");
        args.push(Box::new(query.limit));
        args.push(Box::new(query.offset));
        self.summaries(&sql, args, now)
    }

    /// Full-text search over titles and descriptions (every word must
    /// match), best first; hidden requests are left out.
    pub fn search_requests(
        &self,
        text: &str,
        limit: u32,
        now: Timestamp,
    ) -> Result<Vec<RequestSummary>> {
        if !(1..=100).contains(&limit) {
            return Err(Error::InvalidArgument("limit must be 1-100".into()));
        }
        // Each word quoted: user text never reaches FTS5's query syntax.
        let words: Vec<String> = text
            .split_whitespace()
            .map(|w| format!("\"{}\"", w.replace('"', "\"\"")))
            .collect();
        if words.is_empty() {
            return Ok(Vec::new());
        }
        let sql = "SELECT r.request_id, r.title, r.category, r.urgency, r.kind, r.created_at,
                          r.expires_at, r.state
                   FROM requests_fts f JOIN requests r ON r.rowid = f.rowid
                   WHERE requests_fts MATCH ? AND r.hidden IS NULL
                   ORDER BY f.rank LIMIT ?";
        let args: Vec<Box<dyn ToSql>> = vec![Box::new(words.join(" ")), Box::new(limit)];
        self.summaries(sql, args, now)
    }

    fn summaries(
        &self,
        sql: &str,
        args: Vec<Box<dyn ToSql>>,
        now: Timestamp,
    ) -> Result<Vec<RequestSummary>> {
        let mut stmt = self.db.conn().prepare_cached(sql)?;
        let rows = stmt.query_map(params_from_iter(args.iter()), |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, i64>(6)?,
                r.get::<_, String>(7)?,
            ))
        })?;
        let corrupt = || Error::Corrupt("request row".into());
        let mut out = Vec::new();
        for row in rows {
            let (id, title, category, urgency, kind, created, expires, state) = row?;
            let expires_at = Timestamp::from_millis(expires);
            let stored = RequestStatus::parse(&state).ok_or_else(corrupt)?;
            let status = RequestStatus::at(stored, expires_at, now);
            out.push(RequestSummary {
                id: RequestId::parse_stored(&id).ok_or_else(corrupt)?,
                title,
                category: Category::parse(&category).ok_or_else(corrupt)?,
                urgency: Urgency::from_index(urgency).ok_or_else(corrupt)?,
                kind: RequestKind::parse(&kind).ok_or_else(corrupt)?,
                created_at: Timestamp::from_millis(created),
                expires_at,
                status,
            });
        }
        Ok(out)
    }
}
