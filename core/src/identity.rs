//! Member identities: ed25519 key pairs, the [`MemberId`] that names a member,
//! and signatures bound to a purpose by a domain-separation tag.
//!
//! Every signature Karmyq makes or checks goes through [`Keypair::sign`] and
//! [`MemberId::verify`], so no signature made for one purpose (an authority op,
//! a content change, a login challenge) can be replayed as another.

use std::fmt;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// What a signature is for. The tag is prepended to every signed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SigningTag {
    /// An operation of a community's authority log.
    AuthorityOp,
    /// The envelope of a content-document change.
    ChangeEnvelope,
    /// An invite key vouching for the member who joins with it.
    InviteProof,
    /// A device's answer to a sync server's login challenge.
    SyncLogin,
    /// A request to join a private community, left with a sync server.
    JoinRequest,
    /// An admin's or moderator's decline of a request to join.
    JoinDecline,
}

impl SigningTag {
    fn bytes(self) -> &'static [u8] {
        match self {
            SigningTag::AuthorityOp => b"karmyq/v1/authority-op\0",
            SigningTag::ChangeEnvelope => b"karmyq/v1/change-envelope\0",
            SigningTag::InviteProof => b"karmyq/v1/invite-proof\0",
            SigningTag::SyncLogin => b"karmyq/v1/sync-login\0",
            SigningTag::JoinRequest => b"karmyq/v1/join-request\0",
            SigningTag::JoinDecline => b"karmyq/v1/join-decline\0",
        }
    }
}

fn tagged(tag: SigningTag, message: &[u8]) -> Vec<u8> {
    let tag = tag.bytes();
    let mut out = Vec::with_capacity(tag.len() + message.len());
    out.extend_from_slice(tag);
    out.extend_from_slice(message);
    out
}

/// Most decompressed keys [`verifying_key`] keeps per thread.
const KEY_CACHE: usize = 4096;

thread_local! {
    static KEYS: std::cell::RefCell<rustc_hash::FxHashMap<[u8; 32], VerifyingKey>> =
        std::cell::RefCell::new(rustc_hash::FxHashMap::default());
}

/// The public key behind 32 bytes, or `InvalidKey` if they are not a valid
/// curve point. Decompressing a point costs about 4 µs, and the same few
/// members' keys come back for every change they signed and every document
/// id that names them, so valid keys are kept per thread (a pure function
/// of the bytes: the cache changes no verdict).
fn verifying_key(bytes: &[u8; 32]) -> Result<VerifyingKey> {
    if let Some(key) = KEYS.with(|k| k.borrow().get(bytes).copied()) {
        return Ok(key);
    }
    let key = VerifyingKey::from_bytes(bytes).map_err(|_| Error::InvalidKey)?;
    KEYS.with(|k| {
        let mut keys = k.borrow_mut();
        if keys.len() >= KEY_CACHE {
            keys.clear();
        }
        keys.insert(*bytes, key);
    });
    Ok(key)
}

/// A member's public key: 32 bytes, shown as lowercase hex.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MemberId([u8; 32]);

impl MemberId {
    /// Builds a member id from raw bytes, checking they are a valid curve point.
    pub fn from_bytes(bytes: [u8; 32]) -> Result<Self> {
        verifying_key(&bytes)?;
        Ok(MemberId(bytes))
    }

    /// A member id read back from this device's own projections, where
    /// only validated ids are written: skips the curve-point check (about
    /// 4 µs), which dominated reading a member's matches.
    pub(crate) fn from_stored(bytes: [u8; 32]) -> Self {
        MemberId(bytes)
    }

    /// Parses the 64-character hex form.
    pub fn from_hex(s: &str) -> Result<Self> {
        Self::from_bytes(decode_hex32(s)?)
    }

    /// The raw public key.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The first 8 hex characters, for logs.
    pub fn fmt_short(&self) -> String {
        hex::encode(&self.0[..4])
    }

    /// Checks `signature` over `message` for the given purpose (strict ed25519).
    pub fn verify(&self, tag: SigningTag, message: &[u8], signature: &Signature) -> Result<()> {
        let key = verifying_key(&self.0)?;
        let sig = ed25519_dalek::Signature::from_bytes(&signature.0);
        key.verify_strict(&tagged(tag, message), &sig)
            .map_err(|_| Error::BadSignature)
    }
}

impl fmt::Display for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MemberId({})", self.fmt_short())
    }
}

impl std::str::FromStr for MemberId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::from_hex(s)
    }
}

/// Decodes exactly 32 bytes of hex.
pub(crate) fn decode_hex32(s: &str) -> Result<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).map_err(|_| Error::InvalidId)?;
    Ok(out)
}

/// An ed25519 signature.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature(#[serde(with = "sig_bytes")] [u8; 64]);

impl Signature {
    /// The raw 64 bytes.
    pub fn to_bytes(&self) -> [u8; 64] {
        self.0
    }
    /// Wraps raw bytes (checked only when verified).
    pub fn from_bytes(bytes: [u8; 64]) -> Self {
        Signature(bytes)
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({}..)", hex::encode(&self.0[..4]))
    }
}

mod sig_bytes {
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    pub fn serialize<S: Serializer>(bytes: &[u8; 64], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(bytes)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 64], D::Error> {
        let v = serde_bytes::ByteBuf::deserialize(d)?;
        v.into_vec()
            .try_into()
            .map_err(|_| D::Error::custom("signature must be 64 bytes"))
    }
}

/// A member's key pair. The secret half is zeroized on drop and never printed.
pub struct Keypair {
    signing: SigningKey,
}

impl Keypair {
    /// A fresh key pair from the operating system's randomness.
    pub fn generate() -> Result<Self> {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::getrandom(seed.as_mut()).map_err(|_| Error::Randomness)?;
        Ok(Keypair {
            signing: SigningKey::from_bytes(&seed),
        })
    }

    /// Rebuilds a key pair from its 32-byte secret.
    pub fn from_secret_bytes(secret: &[u8; 32]) -> Self {
        Keypair {
            signing: SigningKey::from_bytes(secret),
        }
    }

    /// The member id (public key) of this key pair.
    pub fn member_id(&self) -> MemberId {
        MemberId(self.signing.verifying_key().to_bytes())
    }

    /// Signs `message` for the given purpose.
    pub fn sign(&self, tag: SigningTag, message: &[u8]) -> Signature {
        Signature(self.signing.sign(&tagged(tag, message)).to_bytes())
    }

    /// The secret as 64 hex characters, for a backup or a new phone.
    /// The returned string is zeroized when dropped.
    pub fn export_secret(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(self.signing.to_bytes()))
    }

    /// Imports a secret exported by [`Keypair::export_secret`].
    pub fn import_secret(hex_secret: &str) -> Result<Self> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(hex_secret.trim(), bytes.as_mut())
            .map_err(|_| Error::InvalidSecret)?;
        Ok(Self::from_secret_bytes(&bytes))
    }

    /// The raw secret, zeroized when dropped (for the account store).
    pub(crate) fn secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.signing.to_bytes())
    }
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Keypair({}, SecretKey(..))",
            self.member_id().fmt_short()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_verify_with_tags() -> Result<()> {
        let kp = Keypair::generate()?;
        let id = kp.member_id();
        let sig = kp.sign(SigningTag::AuthorityOp, b"hello");
        id.verify(SigningTag::AuthorityOp, b"hello", &sig)?;
        assert!(matches!(
            id.verify(SigningTag::ChangeEnvelope, b"hello", &sig),
            Err(Error::BadSignature)
        ));
        assert!(matches!(
            id.verify(SigningTag::AuthorityOp, b"hellp", &sig),
            Err(Error::BadSignature)
        ));
        Ok(())
    }

    #[test]
    fn export_import_round_trip() -> Result<()> {
        let kp = Keypair::generate()?;
        let secret = kp.export_secret();
        let back = Keypair::import_secret(&secret)?;
        assert_eq!(kp.member_id(), back.member_id());
        assert!(matches!(
            Keypair::import_secret("zz"),
            Err(Error::InvalidSecret)
        ));
        Ok(())
    }

    #[test]
    fn debug_is_redacted_and_ids_print_hex() -> Result<()> {
        let kp = Keypair::generate()?;
        let secret = kp.export_secret();
        let dbg = format!("{kp:?}");
        assert!(!dbg.contains(secret.as_str()));
        assert!(dbg.contains("SecretKey(..)"));
        let id = kp.member_id();
        assert_eq!(id.to_string().len(), 64);
        assert_eq!(id.fmt_short().len(), 8);
        assert_eq!(id.to_string().parse::<MemberId>()?, id);
        assert!(matches!(MemberId::from_hex("abc"), Err(Error::InvalidId)));
        Ok(())
    }
}
