//! A device's side of one connection for one community, as a pure state
//! machine: frames in, [`DeviceAction`]s out. The caller owns the store:
//! it applies what arrives and computes what to upload.

use std::sync::Arc;

use crate::authority::CommunityId;
use crate::bundle::{Bundle, Heads};
use crate::identity::{Keypair, MemberId, SigningTag};
use crate::sync::chunk::{UPLOAD_CHUNK_BYTES, UPLOAD_CHUNK_ITEMS, split};
use crate::sync::frame::{ErrorCode, Frame, PROTOCOL_VERSION, login_message};
use crate::sync::join::JoinRequest;

/// Where a device's sync of a community stands.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SyncStatus {
    /// Opening a connection and logging in.
    Connecting,
    /// Exchanging what each side lacks.
    Syncing,
    /// Both sides hold the same; changes are pushed live.
    UpToDate,
    /// No connection; retrying after a pause.
    Offline,
    /// The server refused something, with its code (an [`ErrorCode`] or
    /// a [`crate::Rejection`] code).
    Rejected {
        /// The code.
        reason: String,
    },
}

/// What the caller must do for a device session.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeviceAction {
    /// Send this frame to the server.
    Send(Frame),
    /// Apply this bundle from the server to the local store.
    Apply(Bundle),
    /// Upload what the server lacks, through [`DeviceSession::upload`]:
    /// `Some(heads)`: everything not in the past of the server's heads
    /// (`changes_since_for(heads, me)`); `None`: the server does not let
    /// this member in yet, so send only the authority ops (a join it has
    /// not seen, or a community it does not hold).
    Upload(Option<Heads>),
    /// Report this status.
    Status(SyncStatus),
    /// The requests to join now pending (shown to admins and moderators):
    /// the whole list, replacing any earlier one.
    JoinRequests(Vec<JoinRequest>),
    /// Close the connection; `retry` says whether reconnecting may help.
    Close {
        /// Whether to reconnect later.
        retry: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Start,
    AwaitChallenge,
    AwaitLoginOk,
    Subscribing { retried: bool },
    Live,
    Closed,
}

/// One connection for one community, seen from the device.
#[derive(Debug)]
pub struct DeviceSession {
    keys: Arc<Keypair>,
    community: CommunityId,
    heads: Heads,
    state: State,
    in_flight: usize,
    /// Largest upload frame, in bytes (the server's limit or ours).
    chunk_bytes: usize,
    /// Most items in one upload frame.
    chunk_items: usize,
    /// Members this device's member blocked, told to the server at login.
    blocked: Vec<MemberId>,
}

impl DeviceSession {
    /// A session that will follow `community`, holding `heads` now.
    pub fn new(keys: Arc<Keypair>, community: CommunityId, heads: Heads) -> Self {
        DeviceSession {
            keys,
            community,
            heads,
            state: State::Start,
            in_flight: 0,
            chunk_bytes: UPLOAD_CHUNK_BYTES,
            chunk_items: UPLOAD_CHUNK_ITEMS,
            blocked: Vec::new(),
        }
    }

    /// Tells the server, at login, whom this device's member blocked: it
    /// then relays no message of theirs to this session.
    #[must_use]
    pub fn with_blocks(mut self, blocked: Vec<MemberId>) -> Self {
        self.blocked = blocked;
        self
    }

    /// Whether the server pushes live to this session.
    pub fn is_live(&self) -> bool {
        self.state == State::Live
    }

    /// Opens the conversation.
    pub fn start(&mut self) -> Vec<DeviceAction> {
        self.state = State::AwaitChallenge;
        vec![
            DeviceAction::Status(SyncStatus::Connecting),
            DeviceAction::Send(Frame::Hello {
                version: PROTOCOL_VERSION,
            }),
        ]
    }

    /// Sends what the caller computed for [`DeviceAction::Upload`] (or a
    /// local write while live), split into frames the server accepts. An
    /// empty bundle sends nothing.
    pub fn upload(&mut self, bundle: &Bundle) -> Vec<DeviceAction> {
        let pieces = split(bundle.clone(), self.chunk_bytes, self.chunk_items);
        if pieces.is_empty() {
            return if self.in_flight == 0 && self.state == State::Live {
                vec![DeviceAction::Status(SyncStatus::UpToDate)]
            } else {
                Vec::new()
            };
        }
        self.in_flight += pieces.len();
        let mut out = vec![DeviceAction::Status(SyncStatus::Syncing)];
        out.extend(pieces.into_iter().map(|piece| {
            DeviceAction::Send(Frame::Bundle {
                bytes: piece.encode(),
            })
        }));
        out
    }

    fn fail(&mut self, reason: &str, retry: bool) -> Vec<DeviceAction> {
        self.state = State::Closed;
        vec![
            DeviceAction::Status(SyncStatus::Rejected {
                reason: reason.to_owned(),
            }),
            DeviceAction::Close { retry },
        ]
    }

    /// Handles one binary frame from the server.
    pub fn receive(&mut self, bytes: &[u8]) -> Vec<DeviceAction> {
        if self.state == State::Closed {
            return Vec::new();
        }
        let frame = match Frame::decode(bytes) {
            Ok(frame) => frame,
            Err(e) => return self.fail(e.code.code(), e.code != ErrorCode::VersionMismatch),
        };
        match (self.state, frame) {
            (State::AwaitChallenge, Frame::Challenge { nonce, context }) => {
                self.state = State::AwaitLoginOk;
                let signature = self
                    .keys
                    .sign(SigningTag::SyncLogin, &login_message(&nonce, &context));
                vec![DeviceAction::Send(Frame::Login {
                    member: self.keys.member_id(),
                    signature,
                })]
            }
            (
                State::AwaitLoginOk,
                Frame::LoginOk {
                    max_frame,
                    max_changes,
                },
            ) => {
                let fit = |limit: u64, ours: usize| {
                    usize::try_from(limit).unwrap_or(usize::MAX).min(ours)
                };
                self.chunk_bytes = fit(max_frame, UPLOAD_CHUNK_BYTES);
                self.chunk_items = fit(max_changes, UPLOAD_CHUNK_ITEMS);
                self.state = State::Subscribing { retried: false };
                // Blocks go at every login, even none: an unblock must
                // reach the server too.
                vec![
                    DeviceAction::Status(SyncStatus::Syncing),
                    DeviceAction::Send(Frame::Blocks {
                        blocked: self.blocked.clone(),
                    }),
                    DeviceAction::Send(self.subscribe_frame()),
                ]
            }
            (State::Subscribing { .. } | State::Live, Frame::Bundle { bytes }) => {
                match Bundle::decode(&bytes) {
                    Ok(bundle) if bundle.community == self.community => {
                        vec![DeviceAction::Apply(bundle)]
                    }
                    _ => self.fail(ErrorCode::BadFrame.code(), true),
                }
            }
            (State::Subscribing { .. }, Frame::Subscribed { community, heads })
                if community == self.community =>
            {
                self.state = State::Live;
                vec![DeviceAction::Upload(Some(heads))]
            }
            (
                State::Subscribing { .. } | State::Live,
                Frame::JoinRequests {
                    community,
                    requests,
                },
            ) if community == self.community => {
                vec![DeviceAction::JoinRequests(requests)]
            }
            (_, Frame::Ack(ack)) => {
                self.in_flight = self.in_flight.saturating_sub(1);
                if let Some(reason) = ack.rejected.first() {
                    vec![DeviceAction::Status(SyncStatus::Rejected {
                        reason: reason.clone(),
                    })]
                } else if self.in_flight == 0 && self.state == State::Live {
                    vec![DeviceAction::Status(SyncStatus::UpToDate)]
                } else {
                    Vec::new()
                }
            }
            (
                State::Subscribing { retried: false },
                Frame::Error {
                    code: ErrorCode::NotMember,
                    ..
                },
            ) => {
                // The server may lack this member's join (made offline) or
                // the whole community (founded offline): offer the log,
                // then ask again once.
                self.state = State::Subscribing { retried: true };
                vec![
                    DeviceAction::Upload(None),
                    DeviceAction::Send(self.subscribe_frame()),
                ]
            }
            (_, Frame::Error { code, .. }) => match code {
                // Refusals of one upload: the connection stays.
                ErrorCode::RateLimited | ErrorCode::TooManyChanges | ErrorCode::FrameTooLarge => {
                    self.in_flight = self.in_flight.saturating_sub(1);
                    vec![DeviceAction::Status(SyncStatus::Rejected {
                        reason: code.code().to_owned(),
                    })]
                }
                ErrorCode::Busy | ErrorCode::ShuttingDown | ErrorCode::Internal => {
                    self.fail(code.code(), true)
                }
                // Not (or no longer) a member, a login or version problem:
                // retrying soon will not help, but membership may change.
                _ => self.fail(code.code(), code == ErrorCode::NotMember),
            },
            (_, _) => self.fail(ErrorCode::Unexpected.code(), true),
        }
    }

    fn subscribe_frame(&self) -> Frame {
        Frame::Subscribe {
            community: self.community,
            heads: self.heads.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::frame::Ack;
    use crate::sync::server::{ServerAction, ServerLimits, ServerSession};

    /// Drives a device and a server session against each other, with the
    /// server granting every subscription and acking every upload.
    #[test]
    fn device_and_server_sessions_reach_live() -> crate::Result<()> {
        let keys = Arc::new(Keypair::generate()?);
        let community = CommunityId::from_bytes([5; 32]);
        let mut device = DeviceSession::new(keys.clone(), community, Heads::empty());
        let mut server = ServerSession::new([1; 32], "ctx", ServerLimits::default());
        let mut to_server: Vec<Frame> = Vec::new();
        let mut statuses = Vec::new();
        let mut handle =
            |actions: Vec<DeviceAction>, out: &mut Vec<Frame>, device: &mut DeviceSession| {
                for a in actions {
                    match a {
                        DeviceAction::Send(f) => out.push(f),
                        DeviceAction::Status(s) => statuses.push(s),
                        DeviceAction::Upload(_) => {
                            let acts = device.upload(&Bundle::new(community));
                            for a in acts {
                                if let DeviceAction::Status(s) = a {
                                    statuses.push(s);
                                }
                            }
                        }
                        other => panic!("unexpected {other:?}"),
                    }
                }
            };
        let first = device.start();
        handle(first, &mut to_server, &mut device);
        for _ in 0..4 {
            let frames: Vec<Frame> = std::mem::take(&mut to_server);
            for f in frames {
                for a in server.receive(&f.encode()) {
                    let reply = match a {
                        ServerAction::Send(f) => Some(f),
                        ServerAction::Subscribe { community, .. } => {
                            server.subscribed(community);
                            Some(Frame::Subscribed {
                                community,
                                heads: Heads::empty(),
                            })
                        }
                        ServerAction::Ingest(b) => Some(Frame::Ack(Ack {
                            community: Some(b.community),
                            ..Ack::default()
                        })),
                        _ => None,
                    };
                    if let Some(reply) = reply {
                        let acts = device.receive(&reply.encode());
                        handle(acts, &mut to_server, &mut device);
                    }
                }
            }
        }
        assert!(device.is_live());
        assert!(server.is_subscribed(&community));
        assert_eq!(
            statuses,
            vec![
                SyncStatus::Connecting,
                SyncStatus::Syncing,
                SyncStatus::UpToDate
            ]
        );
        Ok(())
    }

    #[test]
    fn not_member_offers_the_log_once_then_gives_up() -> crate::Result<()> {
        let keys = Arc::new(Keypair::generate()?);
        let community = CommunityId::from_bytes([5; 32]);
        let mut d = DeviceSession::new(keys, community, Heads::empty());
        d.start();
        d.receive(
            &Frame::Challenge {
                nonce: [0; 32],
                context: "c".into(),
            }
            .encode(),
        );
        d.receive(
            &Frame::LoginOk {
                max_frame: 1 << 20,
                max_changes: 100,
            }
            .encode(),
        );
        let no = Frame::error(ErrorCode::NotMember, Some(community), "no").encode();
        let a = d.receive(&no);
        assert_eq!(a.first(), Some(&DeviceAction::Upload(None)));
        let a = d.receive(&no);
        assert!(a.contains(&DeviceAction::Close { retry: true }));
        assert!(a.contains(&DeviceAction::Status(SyncStatus::Rejected {
            reason: "not_member".into()
        })));
        Ok(())
    }

    #[test]
    fn garbage_from_the_server_closes_without_panic() -> crate::Result<()> {
        let keys = Arc::new(Keypair::generate()?);
        let mut d = DeviceSession::new(keys, CommunityId::from_bytes([5; 32]), Heads::empty());
        d.start();
        let a = d.receive(&[0xde, 0xad, 0xbe, 0xef]);
        assert!(a.contains(&DeviceAction::Close { retry: true }));
        assert!(d.receive(&[1]).is_empty());
        // Another version: say so, and do not hammer the server.
        let mut d = DeviceSession::new(
            Arc::new(Keypair::generate()?),
            CommunityId::from_bytes([5; 32]),
            Heads::empty(),
        );
        d.start();
        let a = d.receive(&[b'K', b'Q', 0, 2, 0]);
        assert!(a.contains(&DeviceAction::Status(SyncStatus::Rejected {
            reason: "version_mismatch".into()
        })));
        assert!(a.contains(&DeviceAction::Close { retry: false }));
        Ok(())
    }
}
