//! End-to-end encryption of message bodies.
//!
//! The two participants of a conversation share a key no one else can
//! compute: X25519 between their identity keys (an ed25519 key converts to
//! an X25519 one: the secret's clamped scalar, the public key's Montgomery
//! form), stretched with HKDF-SHA-256 over the community and the
//! conversation, so each conversation has its own key. Nothing is stored
//! or sent to agree on it.
//!
//! A body is sealed with XChaCha20-Poly1305 under a random 24-byte nonce;
//! the associated data binds the community, the conversation, the message
//! id and the clear header (format version and `sent_at`), so a sealed body
//! moved to another message or conversation no longer opens.
//!
//! Sealed layout: `[version = 1][sent_at: i64 big-endian][nonce: 24][ciphertext + tag: 16]`.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use ed25519_dalek::{SigningKey, VerifyingKey};
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::authority::CommunityId;
use crate::error::{Error, Result};
use crate::identity::{Keypair, MemberId};
use crate::time::Timestamp;

/// The sealing format this library writes and reads.
pub(crate) const SEAL_VERSION: u8 = 1;
/// Bytes before the nonce: version and `sent_at`.
pub(crate) const HEADER_LEN: usize = 1 + 8;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// The shortest sealed body (an empty plaintext).
pub(crate) const MIN_SEALED: usize = HEADER_LEN + NONCE_LEN + TAG_LEN;

/// Why a sealed message body could not be opened. The body is then never
/// shown; the conversation's other messages stay readable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum DecryptError {
    /// Too short to hold a header, a nonce and a tag.
    #[error("sealed body truncated")]
    Truncated,
    /// A format version this library does not know.
    #[error("unknown sealing version")]
    UnknownVersion,
    /// The tag does not verify: the bytes were altered, or sealed with
    /// another key (another conversation, another member).
    #[error("sealed body does not authenticate")]
    Unauthentic,
    /// Authentic, but not UTF-8 text.
    #[error("body is not text")]
    NotText,
}

/// The symmetric key of one conversation. Zeroized on drop, never printed.
#[derive(Clone)]
pub(crate) struct ConversationKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for ConversationKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConversationKey(..)")
    }
}

impl ConversationKey {
    /// The key `me` shares with `other` for one conversation (`context`:
    /// its stable name). Both sides derive the same key.
    pub(crate) fn derive(
        me: &Keypair,
        other: &MemberId,
        community: &CommunityId,
        context: &str,
    ) -> Result<Self> {
        let seed = me.secret_bytes();
        let scalar = Zeroizing::new(SigningKey::from_bytes(&seed).to_scalar_bytes());
        let theirs = VerifyingKey::from_bytes(other.as_bytes()).map_err(|_| Error::InvalidKey)?;
        let shared = Zeroizing::new(theirs.to_montgomery().mul_clamped(*scalar).to_bytes());
        // A small-order key would give everyone the same secret.
        if shared.iter().all(|b| *b == 0) {
            return Err(Error::InvalidKey);
        }
        let hk = Hkdf::<Sha256>::new(Some(b"karmyq-conversation-key-v1"), shared.as_slice());
        let mut info = Vec::with_capacity(32 + context.len());
        info.extend_from_slice(community.as_bytes());
        info.extend_from_slice(context.as_bytes());
        let mut key = Zeroizing::new([0u8; 32]);
        hk.expand(&info, key.as_mut_slice())
            .map_err(|_| Error::InvalidArgument("key length".into()))?;
        Ok(ConversationKey(key))
    }

    #[cfg(test)]
    pub(crate) fn from_bytes(bytes: [u8; 32]) -> Self {
        ConversationKey(Zeroizing::new(bytes))
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(self.0.as_slice().into())
    }

    /// Seals `body` for the message `message` (its stable name) sent at
    /// `sent_at`; `bound`: what else the associated data binds (community
    /// and conversation).
    pub(crate) fn seal(
        &self,
        bound: &[u8],
        message: &str,
        sent_at: Timestamp,
        body: &str,
    ) -> Result<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::getrandom(&mut nonce).map_err(|_| Error::Randomness)?;
        let mut out = Vec::with_capacity(MIN_SEALED + body.len());
        out.push(SEAL_VERSION);
        out.extend_from_slice(&sent_at.as_millis().to_be_bytes());
        let aad = associated(&out, bound, message);
        let sealed = self
            .cipher()
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: body.as_bytes(),
                    aad: &aad,
                },
            )
            .map_err(|_| Error::InvalidArgument("body too long to seal".into()))?;
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Opens what [`ConversationKey::seal`] made.
    pub(crate) fn open(
        &self,
        bound: &[u8],
        message: &str,
        sealed: &[u8],
    ) -> std::result::Result<String, DecryptError> {
        if sealed.first().is_some_and(|v| *v != SEAL_VERSION) {
            return Err(DecryptError::UnknownVersion);
        }
        if sealed.len() < MIN_SEALED {
            return Err(DecryptError::Truncated);
        }
        let (header, rest) = sealed.split_at(HEADER_LEN);
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let aad = associated(header, bound, message);
        let plain = self
            .cipher()
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| DecryptError::Unauthentic)?;
        String::from_utf8(plain).map_err(|_| DecryptError::NotText)
    }
}

/// The clear `sent_at` of a sealed body, if its header is well formed.
pub(crate) fn sealed_sent_at(sealed: &[u8]) -> Option<Timestamp> {
    if sealed.len() < HEADER_LEN || sealed[0] != SEAL_VERSION {
        return None;
    }
    let mut ms = [0u8; 8];
    ms.copy_from_slice(&sealed[1..HEADER_LEN]);
    Some(Timestamp::from_millis(i64::from_be_bytes(ms)))
}

fn associated(header: &[u8], bound: &[u8], message: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(16 + header.len() + bound.len() + message.len());
    aad.extend_from_slice(b"karmyq-message-v1");
    aad.extend_from_slice(header);
    aad.extend_from_slice(&(bound.len() as u64).to_be_bytes());
    aad.extend_from_slice(bound);
    aad.extend_from_slice(message.as_bytes());
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    fn community() -> CommunityId {
        CommunityId::from_bytes([7; 32])
    }

    #[test]
    fn both_sides_derive_the_same_key_and_others_do_not() -> Result<()> {
        let (a, b, c) = (
            Keypair::generate()?,
            Keypair::generate()?,
            Keypair::generate()?,
        );
        let ab = ConversationKey::derive(&a, &b.member_id(), &community(), "conv")?;
        let ba = ConversationKey::derive(&b, &a.member_id(), &community(), "conv")?;
        let ca = ConversationKey::derive(&c, &a.member_id(), &community(), "conv")?;
        let other_conv = ConversationKey::derive(&a, &b.member_id(), &community(), "conv2")?;
        let sealed = ab.seal(b"bound", "m1", Timestamp::from_millis(5), "hello")?;
        assert_eq!(ba.open(b"bound", "m1", &sealed), Ok("hello".into()));
        assert_eq!(sealed_sent_at(&sealed), Some(Timestamp::from_millis(5)));
        assert_eq!(
            ca.open(b"bound", "m1", &sealed),
            Err(DecryptError::Unauthentic)
        );
        assert_eq!(
            other_conv.open(b"bound", "m1", &sealed),
            Err(DecryptError::Unauthentic)
        );
        Ok(())
    }

    #[test]
    fn tampering_truncation_and_rebinding_are_typed_errors() -> Result<()> {
        let key = ConversationKey::from_bytes([1; 32]);
        let sealed = key.seal(b"bound", "m1", Timestamp::from_millis(5), "secret words")?;
        assert!(
            !sealed
                .windows(b"secret".len())
                .any(|w| w == b"secret".as_slice())
        );
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert_eq!(
            key.open(b"bound", "m1", &tampered),
            Err(DecryptError::Unauthentic)
        );
        let mut later = sealed.clone();
        later[8] ^= 1; // the clear sent_at is bound too
        assert_eq!(
            key.open(b"bound", "m1", &later),
            Err(DecryptError::Unauthentic)
        );
        assert_eq!(
            key.open(b"bound", "m1", &sealed[..sealed.len() - 3]),
            Err(DecryptError::Unauthentic)
        );
        assert_eq!(
            key.open(b"bound", "m1", &sealed[..MIN_SEALED - 1]),
            Err(DecryptError::Truncated)
        );
        assert_eq!(key.open(b"bound", "m1", &[]), Err(DecryptError::Truncated));
        assert_eq!(
            key.open(b"bound", "m2", &sealed),
            Err(DecryptError::Unauthentic)
        );
        assert_eq!(
            key.open(b"other", "m1", &sealed),
            Err(DecryptError::Unauthentic)
        );
        let mut version = sealed.clone();
        version[0] = 9;
        assert_eq!(
            key.open(b"bound", "m1", &version),
            Err(DecryptError::UnknownVersion)
        );
        assert_eq!(key.open(b"bound", "m1", &sealed), Ok("secret words".into()));
        Ok(())
    }
}
