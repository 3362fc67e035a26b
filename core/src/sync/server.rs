//! The server's side of one connection, as a pure state machine: bytes in,
//! [`ServerAction`]s out. What needs the store (membership, validation) is
//! handed back as an action for the I/O layer to carry out.

use std::collections::BTreeSet;

use crate::authority::CommunityId;
use crate::bundle::{Bundle, Heads};
use crate::identity::{MemberId, SigningTag};
use crate::sync::frame::{ErrorCode, Frame, PROTOCOL_VERSION, login_message};

/// Limits a server enforces on every connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Largest frame accepted, in bytes.
    pub max_frame: usize,
    /// Most ops plus changes in one uploaded bundle.
    pub max_changes: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_frame: 4 * 1024 * 1024,
            max_changes: 10_000,
        }
    }
}

/// What the I/O layer must do for a server session.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerAction {
    /// Send this frame to the device.
    Send(Frame),
    /// The device logged in as this member.
    LoggedIn(MemberId),
    /// The device asks to follow a community: if the member is a current
    /// member, send the catch-up, then [`Frame::Subscribed`] and call
    /// [`ServerSession::subscribed`]; otherwise answer
    /// [`ErrorCode::NotMember`] (the same for a community that does not
    /// exist).
    Subscribe {
        /// The community.
        community: CommunityId,
        /// What the device holds.
        heads: Heads,
    },
    /// The device uploaded a bundle: validate and store it, answer with an
    /// [`crate::sync::Ack`], and relay what was accepted.
    Ingest(Bundle),
    /// The device told whom its member blocked: relay no message of
    /// theirs to this session.
    Blocks(Vec<MemberId>),
    /// A refusal worth counting: the frame was answered with this code.
    Refused(ErrorCode),
    /// Close the connection (after sending what came before).
    Close,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    AwaitHello,
    AwaitLogin,
    Ready(MemberId),
    Closed,
}

/// One connection, seen from the server.
#[derive(Debug)]
pub struct ServerSession {
    state: State,
    nonce: [u8; 32],
    context: String,
    limits: ServerLimits,
    subscriptions: BTreeSet<CommunityId>,
}

impl ServerSession {
    /// A session that will challenge the device with `nonce` (fresh random
    /// bytes) and `context` (names this server).
    pub fn new(nonce: [u8; 32], context: &str, limits: ServerLimits) -> Self {
        ServerSession {
            state: State::AwaitHello,
            nonce,
            context: context.to_owned(),
            limits,
            subscriptions: BTreeSet::new(),
        }
    }

    /// The logged-in member, if any.
    pub fn member(&self) -> Option<MemberId> {
        match self.state {
            State::Ready(m) => Some(m),
            _ => None,
        }
    }

    /// Whether the session ended.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// Records a subscription the server granted.
    pub fn subscribed(&mut self, community: CommunityId) {
        self.subscriptions.insert(community);
    }

    /// Forgets a subscription (the member was removed).
    pub fn unsubscribed(&mut self, community: &CommunityId) {
        self.subscriptions.remove(community);
    }

    /// Whether the device follows this community.
    pub fn is_subscribed(&self, community: &CommunityId) -> bool {
        self.subscriptions.contains(community)
    }

    fn refuse(code: ErrorCode, community: Option<CommunityId>, message: &str) -> Vec<ServerAction> {
        vec![
            ServerAction::Send(Frame::error(code, community, message)),
            ServerAction::Refused(code),
        ]
    }

    fn fatal(&mut self, code: ErrorCode, message: &str) -> Vec<ServerAction> {
        self.state = State::Closed;
        let mut out = Self::refuse(code, None, message);
        out.push(ServerAction::Close);
        out
    }

    /// Handles one binary frame from the device.
    pub fn receive(&mut self, bytes: &[u8]) -> Vec<ServerAction> {
        if self.state == State::Closed {
            return Vec::new();
        }
        if bytes.len() > self.limits.max_frame {
            return Self::refuse(
                ErrorCode::FrameTooLarge,
                None,
                &format!("frames are limited to {} bytes", self.limits.max_frame),
            );
        }
        let frame = match Frame::decode(bytes) {
            Ok(frame) => frame,
            Err(e) if e.code == ErrorCode::VersionMismatch => {
                let theirs = e.version.map_or_else(|| "?".into(), |v| v.to_string());
                return self.fatal(
                    ErrorCode::VersionMismatch,
                    &format!("server speaks version {PROTOCOL_VERSION}, device {theirs}"),
                );
            }
            Err(e) => return Self::refuse(e.code, None, "not a frame of this protocol"),
        };
        match (&self.state, frame) {
            (State::AwaitHello, Frame::Hello { version }) => {
                if version != PROTOCOL_VERSION {
                    return self.fatal(
                        ErrorCode::VersionMismatch,
                        &format!("server speaks version {PROTOCOL_VERSION}, device {version}"),
                    );
                }
                self.state = State::AwaitLogin;
                vec![ServerAction::Send(Frame::Challenge {
                    nonce: self.nonce,
                    context: self.context.clone(),
                })]
            }
            (State::AwaitLogin, Frame::Login { member, signature }) => {
                let message = login_message(&self.nonce, &self.context);
                if member
                    .verify(SigningTag::SyncLogin, &message, &signature)
                    .is_err()
                {
                    return self.fatal(ErrorCode::BadLogin, "the login signature does not verify");
                }
                self.state = State::Ready(member);
                vec![
                    ServerAction::LoggedIn(member),
                    ServerAction::Send(Frame::LoginOk {
                        max_frame: u64::try_from(self.limits.max_frame).unwrap_or(u64::MAX),
                        max_changes: u64::try_from(self.limits.max_changes).unwrap_or(u64::MAX),
                    }),
                ]
            }
            (State::Ready(_), Frame::Blocks { blocked }) => vec![ServerAction::Blocks(blocked)],
            (State::Ready(_), Frame::Subscribe { community, heads }) => {
                vec![ServerAction::Subscribe { community, heads }]
            }
            (State::Ready(_), Frame::Bundle { bytes }) => {
                let Ok(bundle) = Bundle::decode(&bytes) else {
                    return Self::refuse(ErrorCode::BadFrame, None, "not a bundle");
                };
                let count = bundle.ops.len().saturating_add(bundle.changes.len());
                if count > self.limits.max_changes {
                    return Self::refuse(
                        ErrorCode::TooManyChanges,
                        Some(bundle.community),
                        &format!(
                            "bundles are limited to {} ops and changes",
                            self.limits.max_changes
                        ),
                    );
                }
                vec![ServerAction::Ingest(bundle)]
            }
            (
                State::AwaitHello | State::AwaitLogin,
                Frame::Subscribe { .. } | Frame::Bundle { .. },
            ) => Self::refuse(ErrorCode::NotAuthenticated, None, "log in first"),
            (_, _) => Self::refuse(ErrorCode::Unexpected, None, "frame not expected now"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Keypair;

    fn sends(actions: &[ServerAction]) -> Vec<&Frame> {
        actions
            .iter()
            .filter_map(|a| match a {
                ServerAction::Send(f) => Some(f),
                _ => None,
            })
            .collect()
    }

    fn code(actions: &[ServerAction]) -> Option<ErrorCode> {
        sends(actions).into_iter().find_map(|f| match f {
            Frame::Error { code, .. } => Some(*code),
            _ => None,
        })
    }

    fn hello() -> Vec<u8> {
        Frame::Hello {
            version: PROTOCOL_VERSION,
        }
        .encode()
    }

    #[test]
    fn login_then_subscribe_and_upload() -> crate::Result<()> {
        let keys = Keypair::generate()?;
        let mut s = ServerSession::new([3; 32], "test", ServerLimits::default());
        let a = s.receive(&hello());
        let Some(Frame::Challenge { nonce, context }) = sends(&a).first().copied().cloned() else {
            panic!("no challenge: {a:?}");
        };
        let signature = keys.sign(SigningTag::SyncLogin, &login_message(&nonce, &context));
        let a = s.receive(
            &Frame::Login {
                member: keys.member_id(),
                signature,
            }
            .encode(),
        );
        assert!(a.contains(&ServerAction::LoggedIn(keys.member_id())));
        assert_eq!(s.member(), Some(keys.member_id()));
        let community = CommunityId::from_bytes([9; 32]);
        let a = s.receive(
            &Frame::Subscribe {
                community,
                heads: Heads::empty(),
            }
            .encode(),
        );
        assert_eq!(
            a,
            vec![ServerAction::Subscribe {
                community,
                heads: Heads::empty()
            }]
        );
        let bundle = Bundle::new(community);
        let a = s.receive(
            &Frame::Bundle {
                bytes: bundle.encode(),
            }
            .encode(),
        );
        assert_eq!(a, vec![ServerAction::Ingest(bundle)]);
        Ok(())
    }

    #[test]
    fn a_signature_for_another_nonce_or_purpose_fails() -> crate::Result<()> {
        let keys = Keypair::generate()?;
        for signature in [
            keys.sign(SigningTag::SyncLogin, &login_message(&[4; 32], "test")),
            keys.sign(SigningTag::AuthorityOp, &login_message(&[3; 32], "test")),
            keys.sign(SigningTag::SyncLogin, &login_message(&[3; 32], "other")),
        ] {
            let mut s = ServerSession::new([3; 32], "test", ServerLimits::default());
            s.receive(&hello());
            let a = s.receive(
                &Frame::Login {
                    member: keys.member_id(),
                    signature,
                }
                .encode(),
            );
            assert_eq!(code(&a), Some(ErrorCode::BadLogin));
            assert!(a.contains(&ServerAction::Close));
            assert!(s.is_closed());
            assert_eq!(s.member(), None);
        }
        Ok(())
    }

    #[test]
    fn typed_refusals() {
        let limits = ServerLimits {
            max_frame: 64,
            max_changes: 1,
        };
        let mut s = ServerSession::new([3; 32], "test", limits);
        let community = CommunityId::from_bytes([9; 32]);
        let sub = Frame::Subscribe {
            community,
            heads: Heads::empty(),
        }
        .encode();
        assert_eq!(code(&s.receive(&sub)), Some(ErrorCode::NotAuthenticated));
        assert_eq!(
            code(&s.receive(&[b'K', b'Q', 0, 9, 0])),
            Some(ErrorCode::VersionMismatch)
        );
        assert!(s.is_closed());

        let mut s = ServerSession::new([3; 32], "test", limits);
        assert_eq!(code(&s.receive(&[0, 1, 0xff])), Some(ErrorCode::BadFrame));
        assert_eq!(code(&s.receive(b"KQ\0\x01\xff")), Some(ErrorCode::BadFrame));
        assert_eq!(code(&s.receive(&[0; 65])), Some(ErrorCode::FrameTooLarge));
        assert_eq!(
            code(
                &s.receive(
                    &Frame::LoginOk {
                        max_frame: 1,
                        max_changes: 1
                    }
                    .encode()
                )
            ),
            Some(ErrorCode::Unexpected)
        );
        let old = Frame::Hello { version: 0 }.encode();
        assert_eq!(code(&s.receive(&old)), Some(ErrorCode::VersionMismatch));
    }

    #[test]
    fn too_many_changes_and_bad_bundles() -> crate::Result<()> {
        let keys = Keypair::generate()?;
        let limits = ServerLimits {
            max_frame: 1024,
            max_changes: 1,
        };
        let mut s = ServerSession::new([3; 32], "test", limits);
        s.receive(&hello());
        s.receive(
            &Frame::Login {
                member: keys.member_id(),
                signature: keys.sign(SigningTag::SyncLogin, &login_message(&[3; 32], "test")),
            }
            .encode(),
        );
        let mut bundle = Bundle::new(CommunityId::from_bytes([9; 32]));
        bundle.ops = vec![vec![1], vec![2]];
        let a = s.receive(
            &Frame::Bundle {
                bytes: bundle.encode(),
            }
            .encode(),
        );
        assert_eq!(code(&a), Some(ErrorCode::TooManyChanges));
        let a = s.receive(&Frame::Bundle { bytes: vec![1, 2] }.encode());
        assert_eq!(code(&a), Some(ErrorCode::BadFrame));
        assert!(!s.is_closed());
        Ok(())
    }
}
