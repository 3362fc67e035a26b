//! Conversations through a community handle: open one, send sealed
//! messages, move one's read mark, list conversations and read messages.
//!
//! Queries read the `conversations` and `messages` projections (bodies
//! still sealed there, as in the document) and open only the page asked
//! for. Messages older than the community's `message_retention_days` are hidden from every
//! query and dropped from the projection by [`Community::prune_messages`].

use std::collections::BTreeSet;

use automerge::transaction::Transactable;
use automerge::{Automerge, ROOT, ReadDoc};
use rusqlite::{OptionalExtension, Transaction, params};

use super::Community;
use super::projection::member_from_blob;
use crate::authority::CommunityId;
use crate::conversation::{
    self, CREATED_AT, ConversationId, MAX_MESSAGE_CHARS, MESSAGE_PREFIX, MessageId,
};
use crate::crypto::{ConversationKey, DecryptError};
use crate::docs::DocId;
use crate::error::{Error, Rejection, Result};
use crate::identity::MemberId;
use crate::notify::Event;
use crate::report::{ReportCategory, ReportId, ReportTarget};
use crate::request::RequestId;
use crate::time::Timestamp;

/// Most items a page of conversations or messages holds.
const MAX_PAGE: usize = 500;
/// Longest text of a report (see `report`).
const MAX_REPORT_TEXT: usize = 1_000;

/// A conversation as listed for this device's member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationView {
    /// The conversation.
    pub id: ConversationId,
    /// The other participant.
    pub other: MemberId,
    /// The request of the match it belongs to, if any.
    pub request: Option<RequestId>,
    /// When it was opened.
    pub created_at: Timestamp,
    /// Its last activity: the newest message, or its opening.
    pub last_activity: Timestamp,
    /// Messages from the other participant after this member's read mark
    /// (none from a member this device blocked).
    pub unread: u32,
    /// This member's read mark.
    pub my_read_mark: Option<MessageId>,
    /// The other participant's read mark (read receipts).
    pub their_read_mark: Option<MessageId>,
}

/// A message as shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageView {
    /// The message (its sender is `id.sender`).
    pub id: MessageId,
    /// Who sent it.
    pub sender: MemberId,
    /// When its sender sent it.
    pub sent_at: Timestamp,
    /// The opened body, or why it could not be opened (then never shown).
    pub body: std::result::Result<String, DecryptError>,
    /// Whether the other participant's read mark is at or after it.
    pub read_by_other: bool,
}

/// One conversation's projection row.
struct Row {
    id: ConversationId,
    a: MemberId,
    request: Option<String>,
    created_at: i64,
    last_at: i64,
    read: [(Option<String>, Option<i64>); 2],
}

/// A row as SQLite returns it, before its ids are parsed.
type RawRow = (String, Vec<u8>, Row2);
type Row2 = (Option<String>, i64, i64, [(Option<String>, Option<i64>); 2]);

impl Row {
    const COLUMNS: &'static str = "conversation_id, member_a, request_id, created_at, last_at,
        read_a, read_a_at, read_b, read_b_at";

    fn from_sql(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawRow> {
        Ok((
            r.get(0)?,
            r.get(1)?,
            (
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                [(r.get(5)?, r.get(6)?), (r.get(7)?, r.get(8)?)],
            ),
        ))
    }

    fn parse((id, a, (request, created_at, last_at, read)): RawRow) -> Result<Row> {
        Ok(Row {
            id: ConversationId::parse_stored(&id)
                .ok_or_else(|| Error::Corrupt("conversation".into()))?,
            a: member_from_blob(&a)?,
            request,
            created_at,
            last_at,
            read,
        })
    }

    /// `(read mark, its position)` of `member`'s side.
    fn mark_of(&self, member: &MemberId) -> &(Option<String>, Option<i64>) {
        &self.read[usize::from(self.a != *member)]
    }
}

impl Community {
    /// The key of a conversation of this device's member.
    fn conversation_key(&mut self, id: &ConversationId) -> Result<&ConversationKey> {
        let me = self.me();
        let other = id.other(&me).ok_or(Rejection::NotParticipant)?;
        if !self.conversation_keys.contains_key(id) {
            let key = ConversationKey::derive(&self.keys, &other, &self.id, &id.to_string())?;
            self.conversation_keys.insert(*id, key);
        }
        self.conversation_keys
            .get(id)
            .ok_or_else(|| Error::Corrupt("conversation key".into()))
    }

    /// Checks that this member may write to a conversation now: a
    /// participant, the other one still a member, and not blocked here.
    fn check_can_message(&self, id: &ConversationId) -> Result<MemberId> {
        let other = id.other(&self.me()).ok_or(Rejection::NotParticipant)?;
        if self.auth.role(&other).is_none() {
            return Err(Rejection::TargetNotMember.into());
        }
        if self.hub.is_blocked(&other)? {
            return Err(Rejection::Blocked.into());
        }
        Ok(other)
    }

    /// Opens (or finds) the direct conversation with `other`.
    pub fn open_conversation(&mut self, other: MemberId, now: Timestamp) -> Result<ConversationId> {
        let id = ConversationId::direct(self.me(), other)?;
        self.open_existing_or_new(id, now)?;
        Ok(id)
    }

    /// Opens (or finds) the conversation of the match on `request`, from
    /// either of its parties.
    pub fn open_match_conversation(
        &mut self,
        request: RequestId,
        now: Timestamp,
    ) -> Result<ConversationId> {
        let parties: Option<(Vec<u8>, Vec<u8>)> = self
            .db
            .conn()
            .prepare_cached("SELECT requester, responder FROM matches WHERE request_id = ?1")?
            .query_row([request.to_string()], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let (requester, responder) =
            parties.ok_or_else(|| Error::InvalidArgument("no match on this request".into()))?;
        let (requester, responder) = (member_from_blob(&requester)?, member_from_blob(&responder)?);
        let me = self.me();
        let other = if me == requester {
            responder
        } else if me == responder {
            requester
        } else {
            return Err(Rejection::NotParticipant.into());
        };
        let id = ConversationId::of_match(me, other, request)?;
        self.open_existing_or_new(id, now)?;
        Ok(id)
    }

    fn open_existing_or_new(&mut self, id: ConversationId, now: Timestamp) -> Result<()> {
        self.check_can_message(&id)?;
        if self.conversation_row(&id)?.is_some() {
            return Ok(());
        }
        self.write_doc(DocId::Conversation(id), now, |tx| {
            if tx.get(ROOT, CREATED_AT)?.is_none() {
                tx.put(ROOT, CREATED_AT, now.as_millis())?;
            }
            Ok(())
        })
    }

    /// Sends a message (at most 4,000 characters), sealed for the two
    /// participants only.
    pub fn send_message(
        &mut self,
        id: ConversationId,
        body: &str,
        now: Timestamp,
    ) -> Result<MessageId> {
        if body.is_empty() || body.chars().count() > MAX_MESSAGE_CHARS {
            return Err(Error::InvalidArgument(
                "a message holds 1 to 4,000 characters".into(),
            ));
        }
        self.check_can_message(&id)?;
        let message = MessageId::generate(self.me())?;
        let bound = conversation::binding(&self.id, &id);
        let sealed = self
            .conversation_key(&id)?
            .seal(&bound, &message.to_string(), now, body)?;
        self.write_doc(DocId::Conversation(id), now, |tx| {
            if tx.get(ROOT, CREATED_AT)?.is_none() {
                tx.put(ROOT, CREATED_AT, now.as_millis())?;
            }
            tx.put(ROOT, conversation::message_key(&message), sealed)?;
            Ok(())
        })?;
        Ok(message)
    }

    /// Moves this member's read mark to `up_to` (a message of the
    /// conversation); a mark never moves back.
    pub fn mark_read(
        &mut self,
        id: ConversationId,
        up_to: MessageId,
        now: Timestamp,
    ) -> Result<()> {
        let me = self.me();
        let row = self
            .conversation_row(&id)?
            .ok_or_else(|| Error::InvalidArgument("no such conversation".into()))?;
        if !id.has(&me) {
            return Err(Rejection::NotParticipant.into());
        }
        let sent_at: i64 = self
            .db
            .conn()
            .prepare_cached(
                "SELECT sent_at FROM messages WHERE conversation_id = ?1 AND message_id = ?2",
            )?
            .query_row(params![id.to_string(), up_to.to_string()], |r| r.get(0))
            .optional()?
            .ok_or_else(|| Error::InvalidArgument("no such message".into()))?;
        if let (Some(mark), Some(at)) = row.mark_of(&me)
            && (*at, mark.as_str()) >= (sent_at, up_to.to_string().as_str())
        {
            return Ok(());
        }
        self.write_doc(DocId::Conversation(id), now, |tx| {
            tx.put(ROOT, conversation::read_key(&me), up_to.to_string())?;
            Ok(())
        })
    }

    fn conversation_row(&self, id: &ConversationId) -> Result<Option<Row>> {
        let row = self
            .db
            .conn()
            .prepare_cached(&format!(
                "SELECT {} FROM conversations WHERE conversation_id = ?1",
                Row::COLUMNS
            ))?
            .query_row([id.to_string()], Row::from_sql)
            .optional()?;
        row.map(Row::parse).transpose()
    }

    fn view(&self, row: Row, now: Timestamp) -> Result<ConversationView> {
        let me = self.me();
        let other = row.id.other(&me).ok_or(Rejection::NotParticipant)?;
        let unread = if self.hub.is_blocked(&other)? {
            0
        } else {
            self.unread_in(&row, &me, now)?
        };
        let mark = |m: &Option<String>| m.as_deref().and_then(MessageId::parse_stored);
        Ok(ConversationView {
            id: row.id,
            other,
            request: row.request.as_deref().and_then(RequestId::parse_stored),
            created_at: Timestamp::from_millis(row.created_at),
            last_activity: Timestamp::from_millis(row.last_at),
            unread,
            my_read_mark: mark(&row.mark_of(&me).0),
            their_read_mark: mark(&row.mark_of(&other).0),
        })
    }

    fn unread_in(&self, row: &Row, me: &MemberId, now: Timestamp) -> Result<u32> {
        let (mark, at) = row.mark_of(me);
        let count: i64 = self
            .db
            .conn()
            .prepare_cached(
                "SELECT count(*) FROM messages
                 WHERE conversation_id = ?1 AND sender != ?2 AND sent_at >= ?3
                   AND (?4 IS NULL OR sent_at > ?4 OR (sent_at = ?4 AND message_id > ?5))",
            )?
            .query_row(
                params![
                    row.id.to_string(),
                    me.as_bytes().as_slice(),
                    self.cutoff(now),
                    at,
                    mark
                ],
                |r| r.get(0),
            )?;
        Ok(u32::try_from(count).unwrap_or(u32::MAX))
    }

    /// One conversation of this member, if this device holds it.
    pub fn conversation(
        &self,
        id: &ConversationId,
        now: Timestamp,
    ) -> Result<Option<ConversationView>> {
        if !id.has(&self.me()) {
            return Err(Rejection::NotParticipant.into());
        }
        self.conversation_row(id)?
            .map(|row| self.view(row, now))
            .transpose()
    }

    /// This member's conversations, most recent activity first: `limit`
    /// (at most 500) after skipping `offset`.
    pub fn conversations(
        &self,
        offset: usize,
        limit: usize,
        now: Timestamp,
    ) -> Result<Vec<ConversationView>> {
        let me = self.me();
        let rows: Vec<_> = self
            .db
            .conn()
            .prepare_cached(&format!(
                "SELECT {} FROM conversations WHERE member_a = ?1 OR member_b = ?1
                 ORDER BY last_at DESC, conversation_id LIMIT ?2 OFFSET ?3",
                Row::COLUMNS
            ))?
            .query_map(
                params![
                    me.as_bytes().as_slice(),
                    i64::try_from(limit.min(MAX_PAGE)).unwrap_or(0),
                    i64::try_from(offset).unwrap_or(i64::MAX)
                ],
                Row::from_sql,
            )?
            .collect::<rusqlite::Result<_>>()?;
        rows.into_iter()
            .map(|r| self.view(Row::parse(r)?, now))
            .collect()
    }

    /// Unread messages in all of this member's conversations here.
    pub fn unread_messages(&self, now: Timestamp) -> Result<u32> {
        let mut total = 0u32;
        let mut offset = 0;
        loop {
            let page = self.conversations(offset, MAX_PAGE, now)?;
            total = total.saturating_add(page.iter().map(|c| c.unread).sum::<u32>());
            if page.len() < MAX_PAGE {
                return Ok(total);
            }
            offset += MAX_PAGE;
        }
    }

    /// A page of a conversation's messages, oldest first: the `limit` (at
    /// most 500) newest before `before` (the newest of all if `None`).
    /// Messages of a member this device blocked are not shown; a body that
    /// does not open carries its typed error instead.
    pub fn messages(
        &mut self,
        id: ConversationId,
        before: Option<MessageId>,
        limit: usize,
        now: Timestamp,
    ) -> Result<Vec<MessageView>> {
        let me = self.me();
        let row = match self.conversation_row(&id)? {
            Some(row) => row,
            None if id.has(&me) => return Ok(Vec::new()),
            None => return Err(Rejection::NotParticipant.into()),
        };
        let other = id.other(&me).ok_or(Rejection::NotParticipant)?;
        let hide_other = self.hub.is_blocked(&other)?;
        let cursor: Option<i64> = match &before {
            Some(m) => Some(
                self.db
                    .conn()
                    .prepare_cached(
                        "SELECT sent_at FROM messages WHERE conversation_id = ?1 AND message_id = ?2",
                    )?
                    .query_row(params![id.to_string(), m.to_string()], |r| r.get(0))
                    .optional()?
                    .ok_or_else(|| Error::InvalidArgument("no such message".into()))?,
            ),
            None => None,
        };
        let rows: Vec<(String, Vec<u8>, i64, Vec<u8>)> = self
            .db
            .conn()
            .prepare_cached(
                "SELECT message_id, sender, sent_at, sealed FROM messages
                 WHERE conversation_id = ?1 AND sent_at >= ?2
                   AND (?3 IS NULL OR sent_at < ?3 OR (sent_at = ?3 AND message_id < ?4))
                   AND (?5 = 0 OR sender != ?6)
                 ORDER BY sent_at DESC, message_id DESC LIMIT ?7",
            )?
            .query_map(
                params![
                    id.to_string(),
                    self.cutoff(now),
                    cursor,
                    before.map(|m| m.to_string()),
                    hide_other,
                    other.as_bytes().as_slice(),
                    i64::try_from(limit.min(MAX_PAGE)).unwrap_or(0)
                ],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )?
            .collect::<rusqlite::Result<_>>()?;
        let (their_mark, their_at) = row.mark_of(&other).clone();
        let bound = conversation::binding(&self.id, &id);
        let key = self.conversation_key(&id)?;
        let mut out = Vec::with_capacity(rows.len());
        for (message, sender, sent_at, sealed) in rows.into_iter().rev() {
            let message_id = MessageId::parse_stored(&message)
                .ok_or_else(|| Error::Corrupt("message id".into()))?;
            let read_by_other = match (&their_mark, their_at) {
                (Some(mark), Some(at)) => (sent_at, message.as_str()) <= (at, mark.as_str()),
                _ => false,
            };
            out.push(MessageView {
                id: message_id,
                sender: member_from_blob(&sender)?,
                sent_at: Timestamp::from_millis(sent_at),
                body: key.open(&bound, &message, &sealed),
                read_by_other,
            });
        }
        Ok(out)
    }

    /// One message's body, opened: [`Error::Decrypt`] if it does not open.
    pub fn read_message(&mut self, id: ConversationId, message: MessageId) -> Result<String> {
        if !id.has(&self.me()) {
            return Err(Rejection::NotParticipant.into());
        }
        let sealed: Vec<u8> = self
            .db
            .conn()
            .prepare_cached(
                "SELECT sealed FROM messages WHERE conversation_id = ?1 AND message_id = ?2",
            )?
            .query_row(params![id.to_string(), message.to_string()], |r| r.get(0))
            .optional()?
            .ok_or_else(|| Error::InvalidArgument("no such message".into()))?;
        let bound = conversation::binding(&self.id, &id);
        Ok(self
            .conversation_key(&id)?
            .open(&bound, &message.to_string(), &sealed)?)
    }

    /// Reports a message of one of this member's conversations to the
    /// moderators (against its sender). With `disclose`, the decrypted
    /// body follows `note` in the report's text (cut to fit 1,000
    /// characters): the only way a moderator can read it.
    pub fn report_message(
        &mut self,
        id: ConversationId,
        message: MessageId,
        category: ReportCategory,
        note: &str,
        disclose: bool,
        now: Timestamp,
    ) -> Result<ReportId> {
        let body = self.read_message(id, message)?;
        let mut text = note.to_owned();
        if disclose {
            text.push_str("\n--- message ---\n");
            text.push_str(&body);
        }
        let text: String = text.chars().take(MAX_REPORT_TEXT).collect();
        self.file_report(ReportTarget::Message(id, message), category, &text, now)
    }

    /// Drops messages older than the retention period from the projection
    /// (queries already hide them); returns how many. Their changes stay in
    /// the document's history until compaction (see ARCHITECTURE.md).
    pub fn prune_messages(&mut self, now: Timestamp) -> Result<usize> {
        let cutoff = self.cutoff(now);
        self.db.write(|tx| {
            Ok(tx
                .prepare_cached("DELETE FROM messages WHERE sent_at < ?1")?
                .execute([cutoff])?)
        })
    }
}

impl Community {
    /// The oldest `sent_at` still shown: the community's message retention
    /// (a setting, 90 days by default) before `now`.
    fn cutoff(&self, now: Timestamp) -> i64 {
        let days = i64::from(self.auth.settings.message_retention_days);
        now.as_millis()
            .saturating_sub(days.saturating_mul(Timestamp::DAY))
    }
}

/// Moves the projection of a conversation: its row (opening, last
/// activity, read marks) and the messages under `keys` (all if `None`),
/// with a [`Event::MessageReceived`] for each new one.
pub(super) fn project_conversation(
    tx: &Transaction<'_>,
    doc: &Automerge,
    id: &ConversationId,
    keys: Option<&BTreeSet<String>>,
    community: CommunityId,
    events: &mut Vec<Event>,
) -> Result<()> {
    let all: Vec<String>;
    let keys: Vec<&str> = match keys {
        Some(keys) => keys.iter().map(String::as_str).collect(),
        None => {
            all = doc.keys(ROOT).collect();
            all.iter().map(String::as_str).collect()
        }
    };
    let mut messages = Vec::new();
    for key in keys {
        if key.starts_with(MESSAGE_PREFIX)
            && let Some(m) = conversation::read_message(doc, key)?
        {
            messages.push(m);
        }
    }
    // Events in the order the messages were sent.
    messages.sort_by_key(|m| (m.sent_at, m.id));
    let created = conversation::created_at(doc)?;
    let first = messages.iter().map(|m| m.sent_at).min();
    let Some(created) = created.or(first) else {
        return Ok(());
    };
    let newest = messages
        .iter()
        .map(|m| m.sent_at)
        .max()
        .unwrap_or(created)
        .max(created);
    let [a, b] = id.participants();
    let mark = |member: &MemberId| -> Result<(Option<String>, Option<i64>)> {
        let Some(m) = conversation::read_mark(doc, member)? else {
            return Ok((None, None));
        };
        let at = conversation::read_message(doc, &conversation::message_key(&m))?
            .map(|s| s.sent_at.as_millis());
        Ok((Some(m.to_string()), at))
    };
    let (read_a, read_a_at) = mark(&a)?;
    let (read_b, read_b_at) = mark(&b)?;
    let name = id.to_string();
    tx.prepare_cached(
        "INSERT INTO conversations (conversation_id, member_a, member_b, request_id, created_at,
            last_at, read_a, read_a_at, read_b, read_b_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
         ON CONFLICT (conversation_id) DO UPDATE SET created_at = excluded.created_at,
            last_at = max(last_at, excluded.last_at), read_a = excluded.read_a,
            read_a_at = excluded.read_a_at, read_b = excluded.read_b,
            read_b_at = excluded.read_b_at",
    )?
    .execute(params![
        name,
        a.as_bytes().as_slice(),
        b.as_bytes().as_slice(),
        id.topic().map(|r| r.to_string()),
        created.as_millis(),
        newest.as_millis(),
        read_a,
        read_a_at,
        read_b,
        read_b_at
    ])?;
    let mut insert = tx.prepare_cached(
        "INSERT OR IGNORE INTO messages (conversation_id, message_id, sender, sent_at, sealed)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for m in messages {
        let added = insert.execute(params![
            name,
            m.id.to_string(),
            m.id.sender.as_bytes().as_slice(),
            m.sent_at.as_millis(),
            m.sealed
        ])?;
        if added > 0 {
            events.push(Event::MessageReceived {
                community,
                conversation: *id,
                message: m.id,
            });
        }
    }
    Ok(())
}
