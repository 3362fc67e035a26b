//! The frames of the sync protocol and their wire form.
//!
//! A frame on the wire is the magic `KQ`, the protocol version as two
//! big-endian bytes, then the frame in the canonical codec (postcard). The
//! version comes first and outside the codec so that a peer speaking
//! another version is told so plainly ([`ErrorCode::VersionMismatch`]),
//! while bytes that are not Karmyq frames at all are
//! [`ErrorCode::BadFrame`].

use serde::{Deserialize, Serialize};

use crate::authority::CommunityId;
use crate::bundle::{Heads, Report};
use crate::codec;
use crate::identity::{MemberId, Signature};
use crate::sync::join::JoinRequest;

/// The protocol version this library speaks.
pub const PROTOCOL_VERSION: u16 = 1;

/// The first two bytes of every frame.
pub const MAGIC: [u8; 2] = *b"KQ";

/// One message of the sync protocol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Frame {
    /// Device -> server, first: the version the device speaks.
    Hello {
        /// The device's protocol version.
        version: u16,
    },
    /// Server -> device: sign this to log in.
    Challenge {
        /// Fresh random bytes, never reused.
        nonce: [u8; 32],
        /// Names the server, so a signature cannot be replayed to another.
        context: String,
    },
    /// Device -> server: the member and their signature over the challenge
    /// ([`login_message`]) under [`crate::SigningTag::SyncLogin`].
    Login {
        /// Who logs in.
        member: MemberId,
        /// Signature over the nonce and context.
        signature: Signature,
    },
    /// Server -> device: logged in; the server's limits, so the device
    /// splits what it uploads to fit.
    LoginOk {
        /// Largest frame the server accepts, in bytes.
        max_frame: u64,
        /// Most ops plus changes in one bundle.
        max_changes: u64,
    },
    /// Device -> server: follow a community, holding these heads.
    Subscribe {
        /// The community.
        community: CommunityId,
        /// What the device holds: the server sends only what differs.
        heads: Heads,
    },
    /// Server -> device: the catch-up was sent; from now on every accepted
    /// change is pushed live. Carries what the server holds, so the device
    /// uploads only what the server lacks.
    Subscribed {
        /// The community.
        community: CommunityId,
        /// The server's heads.
        heads: Heads,
    },
    /// Either way: a [`crate::Bundle`] in its canonical bytes.
    Bundle {
        /// `Bundle::encode` output.
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
    },
    /// Server -> device: what applying an uploaded bundle did.
    Ack(Ack),
    /// Server -> an admin's or moderator's device, on subscribing and
    /// whenever one arrives: requests to join left with the server.
    JoinRequests {
        /// The community.
        community: CommunityId,
        /// The pending requests (from people not yet members).
        requests: Vec<JoinRequest>,
    },
    /// A refusal, with a stable code.
    Error {
        /// What went wrong.
        code: ErrorCode,
        /// The community concerned, if any.
        community: Option<CommunityId>,
        /// Human-readable detail (no secrets, no personal data).
        message: String,
    },
    /// Device -> server, after login: the members this device's member
    /// blocked (private to the device and this session). The server relays
    /// no message of theirs to this session. Replaces an earlier list.
    /// Last, so the wire index of every earlier frame stays as it was.
    Blocks {
        /// The blocked members.
        blocked: Vec<MemberId>,
    },
}

/// The summary of applying one uploaded bundle.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// The community.
    pub community: Option<CommunityId>,
    /// Ops and changes stored.
    pub accepted: u32,
    /// Parked until what they depend on arrives.
    pub pending: u32,
    /// Already held.
    pub duplicates: u32,
    /// The code of every refusal ([`crate::Rejection::code`]), in order.
    pub rejected: Vec<String>,
}

impl Ack {
    /// The summary of a report.
    pub fn of(community: CommunityId, report: &Report) -> Self {
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Ack {
            community: Some(community),
            accepted: count(report.accepted.len()),
            pending: count(report.pending.len()),
            duplicates: count(report.duplicates),
            rejected: report
                .rejected
                .iter()
                .map(|(_, r)| r.code().to_owned())
                .collect(),
        }
    }
}

/// Why a peer refused a frame. Every code is stable (see [`ErrorCode::code`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The peer speaks another protocol version.
    VersionMismatch,
    /// The bytes are not a frame (or not a bundle where one was expected).
    BadFrame,
    /// A frame that needs a login came before it.
    NotAuthenticated,
    /// The login signature does not verify.
    BadLogin,
    /// Not a current member of the community, or no such community: the two
    /// are the same answer, so a non-member learns nothing of what exists.
    NotMember,
    /// Too many frames from this key: slow down.
    RateLimited,
    /// The frame is larger than the server accepts.
    FrameTooLarge,
    /// The bundle carries more changes than the server accepts at once.
    TooManyChanges,
    /// A frame that makes no sense now (a second login, a challenge sent to
    /// the server, ...).
    Unexpected,
    /// The server has as many connections as it serves.
    Busy,
    /// The server is shutting down.
    ShuttingDown,
    /// The server failed; the detail is in its log.
    Internal,
}

impl ErrorCode {
    /// A stable, short code for logs, metrics and the FFI.
    pub fn code(self) -> &'static str {
        match self {
            ErrorCode::VersionMismatch => "version_mismatch",
            ErrorCode::BadFrame => "bad_frame",
            ErrorCode::NotAuthenticated => "not_authenticated",
            ErrorCode::BadLogin => "bad_login",
            ErrorCode::NotMember => "not_member",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::FrameTooLarge => "frame_too_large",
            ErrorCode::TooManyChanges => "too_many_changes",
            ErrorCode::Unexpected => "unexpected",
            ErrorCode::Busy => "busy",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::Internal => "internal",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

/// A frame that could not be read: which code to answer with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// [`ErrorCode::VersionMismatch`] or [`ErrorCode::BadFrame`].
    pub code: ErrorCode,
    /// The version the peer spoke, if there were two bytes to read.
    pub version: Option<u16>,
}

impl Frame {
    /// The wire form: version, then the canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        let body = codec::encode(self);
        let mut out = Vec::with_capacity(4 + body.len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// Reads a frame; a typed error for another version or any malformed
    /// bytes (including a non-canonical encoding).
    pub fn decode(bytes: &[u8]) -> Result<Frame, DecodeError> {
        let (version, body) = match bytes {
            [m0, m1, a, b, body @ ..] if [*m0, *m1] == MAGIC => {
                (u16::from_be_bytes([*a, *b]), body)
            }
            _ => {
                return Err(DecodeError {
                    code: ErrorCode::BadFrame,
                    version: None,
                });
            }
        };
        if version != PROTOCOL_VERSION {
            return Err(DecodeError {
                code: ErrorCode::VersionMismatch,
                version: Some(version),
            });
        }
        codec::decode(body, "sync frame").map_err(|_| DecodeError {
            code: ErrorCode::BadFrame,
            version: Some(version),
        })
    }

    /// An error frame.
    pub fn error(code: ErrorCode, community: Option<CommunityId>, message: &str) -> Frame {
        Frame::Error {
            code,
            community,
            message: message.to_owned(),
        }
    }
}

/// The bytes a login signature covers: the server's nonce and context.
pub fn login_message(nonce: &[u8; 32], context: &str) -> Vec<u8> {
    codec::encode(&(nonce, context))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{Keypair, SigningTag};

    #[test]
    fn frames_round_trip() -> crate::Result<()> {
        let keys = Keypair::generate()?;
        let frames = [
            Frame::Hello {
                version: PROTOCOL_VERSION,
            },
            Frame::Challenge {
                nonce: [7; 32],
                context: "karmyq-sync/v1 test".into(),
            },
            Frame::Login {
                member: keys.member_id(),
                signature: keys.sign(SigningTag::SyncLogin, b"x"),
            },
            Frame::LoginOk {
                max_frame: 1 << 20,
                max_changes: 1000,
            },
            Frame::Subscribe {
                community: CommunityId::from_bytes([1; 32]),
                heads: Heads::empty(),
            },
            Frame::Bundle {
                bytes: vec![1, 2, 3],
            },
            Frame::Ack(Ack::default()),
            Frame::error(ErrorCode::NotMember, None, "no"),
        ];
        for frame in frames {
            assert_eq!(Frame::decode(&frame.encode()), Ok(frame));
        }
        Ok(())
    }

    proptest::proptest! {
        /// Whatever the bytes, decoding answers (never panics), and what
        /// it accepts re-encodes to the very same bytes.
        #[test]
        fn decoding_any_bytes_is_total(tail in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            for prefix in [&b""[..], &b"KQ\0\x01"[..]] {
                let mut bytes = prefix.to_vec();
                bytes.extend_from_slice(&tail);
                if let Ok(frame) = Frame::decode(&bytes) {
                    proptest::prop_assert_eq!(frame.encode(), bytes);
                }
            }
        }
    }

    #[test]
    fn another_version_is_named_as_such() {
        let mut bytes = Frame::Hello { version: 1 }.encode();
        bytes[3] = bytes[3].wrapping_add(1);
        let err = Frame::decode(&bytes).err();
        assert_eq!(err.map(|e| e.code), Some(ErrorCode::VersionMismatch));
    }

    #[test]
    fn garbage_is_a_bad_frame() {
        for bytes in [
            &[][..],
            &[0][..],
            &[0, 1, 0xff, 0xff][..],
            &b"KQ"[..],
            &[b'K', b'Q', 0, 1, 0xff, 0xff][..],
            &b"GET / HTTP/1.1"[..],
        ] {
            assert_eq!(
                Frame::decode(bytes).err().map(|e| e.code),
                Some(ErrorCode::BadFrame),
                "{bytes:?}"
            );
        }
        let mut trailing = Frame::Hello { version: 1 }.encode();
        trailing.push(0);
        assert_eq!(
            Frame::decode(&trailing).err().map(|e| e.code),
            Some(ErrorCode::BadFrame)
        );
    }
}
