//! Moderation reports: one small document per report (`report/<id>`),
//! written once by its reporter and resolved by moderators.
//!
//! A report is private: only moderators and its reporter may read it, so a
//! replica shares it only with them (`Community::changes_since_for`), and
//! the sync server will hold it to the same rule. Root keys: `target`,
//! `category`, `text`, `created_at` (the reporter, at creation) and
//! `resolution`, `resolved_at` (moderators, at any time after).

use automerge::legacy::{Key, ObjectId, OpType};
use automerge::{Automerge, ChangeHash, ROOT, ScalarValueRef, ValueRef};

use crate::authority::Role;
use crate::conversation::{ConversationId, MessageId};
use crate::docs::map_entries;
use crate::error::{Rejection, Result};
use crate::identity::MemberId;
use crate::request::{OfferId, RequestId};
use crate::time::Timestamp;

crate::request::authored_id!(
    /// A report: its reporter and a nonce.
    ReportId,
    reporter
);

crate::request::named_enum!(
    /// Why something was reported.
    ReportCategory {
        /// Spam.
        Spam = "spam",
        /// Abuse.
        Abuse = "abuse",
        /// A safety concern.
        Safety = "safety",
        /// Inappropriate content.
        Inappropriate = "inappropriate",
        /// Anything else.
        Other = "other",
    }
);

crate::request::named_enum!(
    /// A moderator's decision.
    Resolution {
        /// The report holds: a trust penalty for the member reported.
        Upheld = "upheld",
        /// It does not.
        Dismissed = "dismissed",
    }
);

/// What a report is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReportTarget {
    /// A request (against its requester).
    Request(RequestId),
    /// An offer on a request (against its responder).
    Offer(RequestId, OfferId),
    /// A member.
    Member(MemberId),
    /// A message in a conversation (against its sender). The reporter may
    /// disclose the body in the report's text; nothing else reveals it.
    Message(ConversationId, MessageId),
}

impl ReportTarget {
    /// The member the report is against.
    pub fn member(&self) -> MemberId {
        match self {
            ReportTarget::Request(r) => r.requester,
            ReportTarget::Offer(_, o) => o.responder,
            ReportTarget::Member(m) => *m,
            ReportTarget::Message(_, m) => m.sender,
        }
    }

    /// The stored form: `request:<id>`, `offer:<request>/<offer>`,
    /// `member:<hex>`, `message:<message>@<conversation>`.
    pub fn encode(&self) -> String {
        match self {
            ReportTarget::Request(r) => format!("request:{r}"),
            ReportTarget::Offer(r, o) => format!("offer:{r}/{o}"),
            ReportTarget::Member(m) => format!("member:{m}"),
            ReportTarget::Message(c, m) => format!("message:{m}@{c}"),
        }
    }

    /// Parses the stored form.
    pub fn parse(s: &str) -> Option<Self> {
        if let Some(r) = s.strip_prefix("request:") {
            return RequestId::parse(r).map(ReportTarget::Request);
        }
        if let Some(rest) = s.strip_prefix("offer:") {
            let (r, o) = rest.split_once('/')?;
            return Some(ReportTarget::Offer(
                RequestId::parse(r)?,
                OfferId::parse(o)?,
            ));
        }
        if let Some(rest) = s.strip_prefix("message:") {
            let (m, c) = rest.split_once('@')?;
            return Some(ReportTarget::Message(
                ConversationId::parse(c)?,
                MessageId::parse(m)?,
            ));
        }
        let m = s.strip_prefix("member:")?;
        MemberId::from_hex(m).ok().map(ReportTarget::Member)
    }
}

/// A report as its document holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportState {
    /// The report.
    pub id: ReportId,
    /// What it is about.
    pub target: ReportTarget,
    /// Why.
    pub category: ReportCategory,
    /// The reporter's words (at most 1,000 characters).
    pub text: String,
    /// When it was filed.
    pub created_at: Timestamp,
    /// The moderators' decision and when, once made.
    pub resolution: Option<(Resolution, Timestamp)>,
}

fn value_str(v: &ValueRef<'_>) -> Option<String> {
    match v {
        ValueRef::Scalar(ScalarValueRef::Str(s)) => Some(s.to_string()),
        _ => None,
    }
}

fn value_ms(v: &ValueRef<'_>) -> Option<Timestamp> {
    match v {
        ValueRef::Scalar(ScalarValueRef::Int(i)) => Some(Timestamp::from_millis(*i)),
        _ => None,
    }
}

impl ReportState {
    /// Reads the document at `heads` (now if `None`); `None` before it was filed.
    pub fn read(
        doc: &Automerge,
        id: ReportId,
        heads: Option<&[ChangeHash]>,
    ) -> Result<Option<Self>> {
        let items = map_entries(doc, &ROOT, heads);
        let (mut target, mut category, mut text, mut created) = (None, None, String::new(), None);
        let (mut resolution, mut resolved_at) = (None, None);
        for item in items {
            let v = &item.value;
            match item.key.as_ref() {
                "target" => target = value_str(v).and_then(|t| ReportTarget::parse(&t)),
                "category" => category = value_str(v).and_then(|c| ReportCategory::parse(&c)),
                "text" => text = value_str(v).unwrap_or_default(),
                "created_at" => created = value_ms(v),
                "resolution" => resolution = value_str(v).and_then(|r| Resolution::parse(&r)),
                "resolved_at" => resolved_at = value_ms(v),
                _ => {}
            }
        }
        Ok(match (target, created) {
            (Some(target), Some(created_at)) => Some(ReportState {
                id,
                target,
                category: category.unwrap_or(ReportCategory::Other),
                text,
                created_at,
                resolution: resolution.zip(resolved_at),
            }),
            _ => None,
        })
    }
}

fn put_str(op: &OpType) -> Option<&str> {
    match op {
        OpType::Put(automerge::ScalarValue::Str(s)) => Some(s.as_str()),
        _ => None,
    }
}

fn put_int(op: &OpType) -> bool {
    matches!(op, OpType::Put(automerge::ScalarValue::Int(_)))
}

/// The validator's rules for a report document.
pub(crate) fn check_change(
    id: &ReportId,
    author: &MemberId,
    role: Role,
    change: &automerge::ExpandedChange,
    filed: bool,
) -> std::result::Result<(), Rejection> {
    let mut creation = Vec::new();
    let mut resolution = Vec::new();
    for op in &change.operations {
        let (ObjectId::Root, Key::Map(key)) = (&op.obj, &op.key) else {
            return Err(Rejection::DisallowedOperation);
        };
        let ok = match key.as_str() {
            "target" => put_str(&op.action).and_then(ReportTarget::parse).is_some(),
            "category" => put_str(&op.action)
                .and_then(ReportCategory::parse)
                .is_some(),
            "text" => put_str(&op.action).is_some_and(|t| t.chars().count() <= 1_000),
            "created_at" | "resolved_at" => put_int(&op.action),
            "resolution" => put_str(&op.action).and_then(Resolution::parse).is_some(),
            other => return Err(Rejection::InvalidField(other.into())),
        };
        if !ok {
            return Err(Rejection::InvalidField(key.to_string()));
        }
        if matches!(key.as_str(), "resolution" | "resolved_at") {
            resolution.push(key.as_str());
        } else {
            creation.push(key.as_str());
        }
    }
    if !creation.is_empty() {
        if *author != id.reporter {
            return Err(Rejection::NotPermitted);
        }
        if filed {
            return Err(Rejection::IllegalTransition("a report is filed once"));
        }
        if !["target", "category", "created_at"]
            .iter()
            .all(|k| creation.contains(k))
        {
            return Err(Rejection::IllegalTransition(
                "a report names its target and category",
            ));
        }
    }
    if !resolution.is_empty() {
        if role < Role::Moderator {
            return Err(Rejection::NotPermitted);
        }
        if !filed && creation.is_empty() {
            return Err(Rejection::IllegalTransition("no such report"));
        }
    }
    Ok(())
}
