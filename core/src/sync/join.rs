//! A signed request to join a private community, left with a sync server
//! (`POST /v1/communities/{id}/join-requests`) and shown to the
//! community's admins and moderators when they subscribe; they answer by
//! admitting the asker (an `Admit` op) or with a signed [`JoinDecline`]
//! (`POST /v1/communities/{id}/join-requests/{member}/decline`).

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

/// An admin's or moderator's decline of a request to join: the server
/// forgets the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinDecline {
    /// The community.
    pub community: CommunityId,
    /// Who asked to join.
    pub asker: MemberId,
    /// The admin or moderator who declines.
    pub by: MemberId,
    /// When, by their clock.
    pub created_at: Timestamp,
    /// Their signature under [`SigningTag::JoinDecline`].
    pub signature: Signature,
}

impl JoinDecline {
    fn signed_bytes(&self) -> Vec<u8> {
        codec::encode(&(&self.community, &self.asker, &self.by, self.created_at))
    }

    /// `keys`' member declines `asker`'s request to join `community`.
    pub fn sign(community: CommunityId, asker: MemberId, keys: &Keypair, now: Timestamp) -> Self {
        let mut decline = JoinDecline {
            community,
            asker,
            by: keys.member_id(),
            created_at: now,
            signature: Signature::from_bytes([0; 64]),
        };
        decline.signature = keys.sign(SigningTag::JoinDecline, &decline.signed_bytes());
        decline
    }

    /// Checks the signature (strict ed25519); whether `by` may decline is
    /// the server's to judge.
    pub fn verify(&self) -> Result<()> {
        self.by.verify(
            SigningTag::JoinDecline,
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

    #[test]
    fn declines_verify_and_tampering_is_caught() -> Result<()> {
        let (moderator, asker) = (Keypair::generate()?, Keypair::generate()?);
        let id = CommunityId::from_bytes([1; 32]);
        let d = JoinDecline::sign(id, asker.member_id(), &moderator, Timestamp::from_millis(5));
        d.verify()?;
        let mut other = d.clone();
        other.asker = moderator.member_id();
        assert!(matches!(other.verify(), Err(Error::BadSignature)));
        // A request's signature is no decline's.
        let r = JoinRequest::sign(id, &moderator, "", Timestamp::from_millis(5))?;
        let forged = JoinDecline {
            signature: r.signature,
            ..d
        };
        assert!(matches!(forged.verify(), Err(Error::BadSignature)));
        Ok(())
    }
}
