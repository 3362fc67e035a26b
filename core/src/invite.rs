//! Invite tokens: the secret half of an invite key, shared as a link.
//!
//! The authority log holds only the invite's public key; whoever holds the
//! token proves it by signing their own member id with it when joining.

use std::fmt;

use zeroize::Zeroizing;

use crate::authority::{CommunityId, InviteKey};
use crate::error::{Error, Result};
use crate::identity::{Keypair, decode_hex32};

const SCHEME: &str = "karmyq:invite/";

/// A link-able invite: `karmyq:invite/<community hex>/<secret hex>`.
pub struct InviteToken {
    community: CommunityId,
    secret: Zeroizing<[u8; 32]>,
}

impl InviteToken {
    /// A fresh invite for a community.
    pub fn generate(community: CommunityId) -> Result<Self> {
        let mut secret = Zeroizing::new([0u8; 32]);
        getrandom::getrandom(secret.as_mut()).map_err(|_| Error::Randomness)?;
        Ok(InviteToken { community, secret })
    }

    /// The community it opens.
    pub fn community(&self) -> CommunityId {
        self.community
    }

    /// The public key the authority log knows it by.
    pub fn key(&self) -> InviteKey {
        InviteKey(self.keypair().member_id())
    }

    pub(crate) fn keypair(&self) -> Keypair {
        Keypair::from_secret_bytes(&self.secret)
    }

    /// The link to share.
    pub fn to_link(&self) -> Zeroizing<String> {
        Zeroizing::new(format!(
            "{SCHEME}{}/{}",
            self.community,
            hex::encode(self.secret.as_ref())
        ))
    }

    /// Parses a link made by [`InviteToken::to_link`].
    pub fn parse(link: &str) -> Result<Self> {
        let rest = link
            .trim()
            .strip_prefix(SCHEME)
            .ok_or_else(|| Error::InvalidArgument("not an invite link".into()))?;
        let (community, secret) = rest
            .split_once('/')
            .ok_or_else(|| Error::InvalidArgument("not an invite link".into()))?;
        Ok(InviteToken {
            community: CommunityId::from_hex(community)?,
            secret: Zeroizing::new(decode_hex32(secret)?),
        })
    }
}

impl fmt::Debug for InviteToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InviteToken({}, ..)", self.community.fmt_short())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_round_trip() -> Result<()> {
        let token = InviteToken::generate(CommunityId::from_bytes([7; 32]))?;
        let back = InviteToken::parse(&token.to_link())?;
        assert_eq!(back.community(), token.community());
        assert_eq!(back.key(), token.key());
        assert!(!format!("{token:?}").contains(&hex::encode(token.secret.as_ref())));
        assert!(InviteToken::parse("karmyq:invite/zz/yy").is_err());
        assert!(InviteToken::parse("https://example.org").is_err());
        Ok(())
    }
}
