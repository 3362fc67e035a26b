//! Conversations and their end-to-end encrypted messages.

use karmyq_core as core;
use karmyq_core::{
    CommunityId, ConversationId, MemberId, MessageId, ReportCategory, ReportId, RequestId,
};

use crate::client::KarmyqClient;
use crate::error::ApiResult;
use crate::types::MessageView;

#[uniffi::export]
impl KarmyqClient {
    /// Opens (or finds) the direct conversation with another member.
    pub fn open_conversation(
        &self,
        community: CommunityId,
        other: MemberId,
    ) -> ApiResult<ConversationId> {
        self.write(community, |c, now| c.open_conversation(other, now))
    }

    /// Opens (or finds) the conversation of the match on a request, from
    /// either of its parties.
    pub fn open_match_conversation(
        &self,
        community: CommunityId,
        request: RequestId,
    ) -> ApiResult<ConversationId> {
        self.write(community, |c, now| c.open_match_conversation(request, now))
    }

    /// Sends a message (at most 4,000 characters), sealed for the two
    /// participants only.
    pub fn send_message(
        &self,
        community: CommunityId,
        conversation: ConversationId,
        body: String,
    ) -> ApiResult<MessageId> {
        self.write(community, |c, now| c.send_message(conversation, &body, now))
    }

    /// Moves this member's read mark up to a message; it never moves back.
    pub fn mark_conversation_read(
        &self,
        community: CommunityId,
        conversation: ConversationId,
        up_to: MessageId,
    ) -> ApiResult<()> {
        self.write(community, |c, now| c.mark_read(conversation, up_to, now))
    }

    /// One conversation of this member's, if it exists.
    pub fn conversation(
        &self,
        community: CommunityId,
        conversation: ConversationId,
    ) -> ApiResult<Option<core::ConversationView>> {
        self.read(community, |c, now| c.conversation(&conversation, now))
    }

    /// This member's conversations, most recently active first.
    pub fn conversations(
        &self,
        community: CommunityId,
        offset: u32,
        limit: u32,
    ) -> ApiResult<Vec<core::ConversationView>> {
        self.read(community, |c, now| {
            c.conversations(offset as usize, limit as usize, now)
        })
    }

    /// A page of messages, oldest first: the `limit` (at most 500) newest
    /// before `before`, or the newest of all.
    pub fn messages(
        &self,
        community: CommunityId,
        conversation: ConversationId,
        before: Option<MessageId>,
        limit: u32,
    ) -> ApiResult<Vec<MessageView>> {
        let list = self.read(community, |c, now| {
            c.messages(conversation, before, limit as usize, now)
        })?;
        Ok(list.into_iter().map(MessageView::from).collect())
    }

    /// Unread messages in one community.
    pub fn unread_messages(&self, community: CommunityId) -> ApiResult<u32> {
        self.read(community, |c, now| c.unread_messages(now))
    }

    /// Unread messages across every community on this device.
    pub fn total_unread_messages(&self) -> ApiResult<u32> {
        self.with(|k, now| k.unread_messages(now))
    }

    /// Reports a message to the moderators; with `disclose`, its body goes
    /// with the report (the only way a moderator can read it).
    pub fn report_message(
        &self,
        community: CommunityId,
        conversation: ConversationId,
        message: MessageId,
        category: ReportCategory,
        note: String,
        disclose: bool,
    ) -> ApiResult<ReportId> {
        self.write(community, |c, now| {
            c.report_message(conversation, message, category, &note, disclose, now)
        })
    }
}
