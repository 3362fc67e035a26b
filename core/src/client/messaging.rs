//! Messaging across every community on this device.

use super::Karmyq;
use crate::error::Result;
use crate::time::Timestamp;

impl Karmyq {
    /// Unread messages in all of this member's conversations, in every
    /// community on this device.
    pub fn unread_messages(&mut self, now: Timestamp) -> Result<u32> {
        let mut total = 0u32;
        for summary in self.communities()? {
            total = total.saturating_add(self.community(summary.id)?.unread_messages(now)?);
        }
        Ok(total)
    }

    /// Drops messages past their retention from every community's
    /// projection (work for the app's quiet moments); returns how many.
    pub fn prune_messages(&mut self, now: Timestamp) -> Result<usize> {
        let mut total = 0;
        for summary in self.communities()? {
            total += self.community(summary.id)?.prune_messages(now)?;
        }
        Ok(total)
    }
}
