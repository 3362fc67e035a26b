//! A signed request to join a private community, left with a sync server
//! (`POST /v1/communities/{id}/join-requests`) and shown to the
//! community's admins and moderators when they subscribe.

use serde::{Deserialize, Serialize};

use crate::authority::CommunityId;
use crate::codec;
use crate::error::{Error, Result};
use crate::identity::{Keypair, MemberId, Signature, SigningTag};
use crate::time::Timestamp;

/// A request to join, signed by the member who asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequest {
    /// The community asked.
    pub community: CommunityId,
    /// Who asks.
    pub member: MemberId,
    /// A few words for the admins (at most [`JoinRequest::MAX_MESSAGE`]
    /// characters).
    pub message: String,
    /// When, by the asker's clock.
    pub created_at: Timestamp,
    /// The asker's signature under [`SigningTag::JoinRequest`].
    pub signature: Signature,
}

#[derive(Serialize)]
struct Signed<'a> {
    community: &'a CommunityId,
    member: &'a MemberId,
    message: &'a str,
    created_at: Timestamp,
}

impl JoinRequest {
    /// Longest message, in characters.
    pub const MAX_MESSAGE: usize = 500;

    fn signed_bytes(&self) -> Vec<u8> {
        codec::encode(&Signed {
            community: &self.community,
            member: &self.member,
            message: &self.message,
            created_at: self.created_at,
        })
    }

    /// A request by `keys`' member.
    pub fn sign(
        community: CommunityId,
        keys: &Keypair,
        message: &str,
        now: Timestamp,
    ) -> Result<Self> {
        let mut request = JoinRequest {
            community,
            member: keys.member_id(),
            message: message.to_owned(),
            created_at: now,
            signature: Signature::from_bytes([0; 64]),
        };
        request.check_message()?;
        request.signature = keys.sign(SigningTag::JoinRequest, &request.signed_bytes());
        Ok(request)
    }

    fn check_message(&self) -> Result<()> {
        if self.message.chars().count() > Self::MAX_MESSAGE {
            return Err(Error::InvalidArgument(
                "join request message too long".into(),
            ));
        }
        Ok(())
    }

    /// Checks the message length and the signature (strict ed25519).
    pub fn verify(&self) -> Result<()> {
        self.check_message()?;
        self.member.verify(
            SigningTag::JoinRequest,
            &self.signed_bytes(),
            &self.signature,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_requests_verify_and_tampering_is_caught() -> Result<()> {
        let keys = Keypair::generate()?;
        let id = CommunityId::from_bytes([1; 32]);
        let r = JoinRequest::sign(id, &keys, "I live at number 12", Timestamp::from_millis(5))?;
        r.verify()?;
        let mut other = r.clone();
        other.community = CommunityId::from_bytes([2; 32]);
        assert!(matches!(other.verify(), Err(Error::BadSignature)));
        let mut other = r.clone();
        other.message.push('!');
        assert!(matches!(other.verify(), Err(Error::BadSignature)));
        let long = "x".repeat(JoinRequest::MAX_MESSAGE + 1);
        assert!(JoinRequest::sign(id, &keys, &long, Timestamp::from_millis(5)).is_err());
        Ok(())
    }
}
