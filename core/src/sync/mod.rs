//! The sync protocol, sans I/O: the [`Frame`]s a device and a sync server
//! exchange over a WebSocket (binary messages), and the two state machines
//! that drive them ([`ServerSession`], [`DeviceSession`]): bytes in,
//! actions out, no sockets, so both are tested without a network.
//!
//! A conversation:
//! 1. device `Hello {version}` -> server `Challenge {nonce, context}`;
//! 2. device `Login {member, signature}` (ed25519 over nonce and context,
//!    under [`crate::SigningTag::SyncLogin`]) -> `LoginOk`;
//! 3. device `Subscribe {community, heads}` -> server `Bundle`s (what the
//!    device lacks, `Community::changes_since_for`, in pages that fit in a
//!    frame for a device that holds nothing: `Community::catch_up_for`) then
//!    `Subscribed {heads}`; a non-member (or a community the server does
//!    not hold) gets [`ErrorCode::NotMember`] either way;
//! 4. device uploads a `Bundle` of what the server lacks -> `Ack`;
//! 5. live: the server pushes every accepted change to every subscriber
//!    allowed to read it.
//!
//! Every refusal is a [`Frame::Error`] with a stable [`ErrorCode`].
//!
//! With the `net` feature, `SyncEngine` runs a device session over a
//! real WebSocket, with reconnection; `karmyq-sync-server` runs server
//! sessions.
//!
//! A device founds a community offline, then syncs it to a server's
//! replica, both sessions driven by hand (what the engine and the server
//! do over a socket):
//!
//! ```
//! use std::collections::VecDeque;
//! use std::sync::Arc;
//! use karmyq_core::sync::{
//!     Ack, DeviceAction, DeviceSession, ErrorCode, Frame, ServerAction, ServerLimits,
//!     ServerSession, SyncStatus,
//! };
//! use karmyq_core::{Bundle, Heads, Karmyq, Keypair, Timestamp, Visibility};
//!
//! # fn main() -> karmyq_core::Result<()> {
//! let now = Timestamp::from_millis(1_800_000_000_000);
//! let (dir_a, dir_s) = (tempfile::tempdir()?, tempfile::tempdir()?);
//! let mut alice = Karmyq::open(dir_a.path())?;
//! let mut server = Karmyq::open(dir_s.path())?; // the server's replica
//! let id = alice.create_community("Elm Street", "", Visibility::Public, now)?;
//!
//! let keys = Arc::new(Keypair::import_secret(&alice.export_secret())?);
//! let mut device = DeviceSession::new(keys, id, alice.community(id)?.heads()?);
//! let mut session = ServerSession::new([7; 32], "example", ServerLimits::default());
//! let mut work: VecDeque<DeviceAction> = device.start().into();
//! let mut statuses = Vec::new();
//! while let Some(action) = work.pop_front() {
//!     let frame = match action {
//!         DeviceAction::Send(frame) => frame,
//!         DeviceAction::Upload(server_heads) => {
//!             let c = alice.community(id)?;
//!             let bundle = match server_heads {
//!                 Some(heads) => c.changes_since(&heads)?,
//!                 // The server does not know us yet: offer the log.
//!                 None => Bundle { changes: Vec::new(), ..c.changes_since(&Heads::empty())? },
//!             };
//!             // Ahead of what was queued after the upload (a Subscribe).
//!             for next in device.upload(&bundle).into_iter().rev() {
//!                 work.push_front(next);
//!             }
//!             continue;
//!         }
//!         DeviceAction::Apply(bundle) => {
//!             alice.receive(&bundle, now)?;
//!             continue;
//!         }
//!         DeviceAction::Status(s) => {
//!             statuses.push(s);
//!             continue;
//!         }
//!         _ => continue,
//!     };
//!     // The server's side of the socket.
//!     for action in session.receive(&frame.encode()) {
//!         let replies = match action {
//!             ServerAction::Send(reply) => vec![reply],
//!             ServerAction::Subscribe { community, heads } => {
//!                 match (server.community(community).ok(), session.member()) {
//!                     (Some(c), Some(m)) if c.authority().role(&m).is_some() => {
//!                         let catch_up = c.changes_since_for(&heads, &m)?;
//!                         session.subscribed(community);
//!                         vec![
//!                             Frame::Bundle { bytes: catch_up.encode() },
//!                             Frame::Subscribed { community, heads: c.heads()? },
//!                         ]
//!                     }
//!                     _ => vec![Frame::error(ErrorCode::NotMember, Some(community), "no")],
//!                 }
//!             }
//!             ServerAction::Ingest(bundle) => {
//!                 let report = server.receive(&bundle, now)?;
//!                 vec![Frame::Ack(Ack::of(bundle.community, &report))]
//!             }
//!             _ => Vec::new(),
//!         };
//!         for reply in replies {
//!             work.extend(device.receive(&reply.encode()));
//!         }
//!     }
//! }
//! assert_eq!(statuses.last(), Some(&SyncStatus::UpToDate));
//! assert_eq!(server.community(id)?.heads()?, alice.community(id)?.heads()?);
//! # Ok(())
//! # }
//! ```

pub(crate) mod chunk;
mod device;
#[cfg(feature = "net")]
mod engine;
mod frame;
mod join;
mod limit;
mod server;

pub use chunk::{UPLOAD_CHUNK_BYTES, UPLOAD_CHUNK_ITEMS, split};
pub use device::{DeviceAction, DeviceSession, SyncStatus};
#[cfg(feature = "net")]
pub use engine::{EngineOptions, SyncEngine};
pub use frame::{Ack, DecodeError, ErrorCode, Frame, MAGIC, PROTOCOL_VERSION, login_message};
pub use join::{JoinDecline, JoinRequest};
pub use limit::{RateLimits, TokenBucket};
pub use server::{ServerAction, ServerLimits, ServerSession};
