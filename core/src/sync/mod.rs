//! The sync protocol, sans I/O: the [`Frame`]s a device and a sync server
//! exchange over a WebSocket (binary messages), and the two state machines
//! that drive them ([`ServerSession`], [`DeviceSession`]): bytes in,
//! actions out, no sockets, so both are tested without a network.
//!
//! A conversation:
//! 1. device `Hello {version}` -> server `Challenge {nonce, context}`;
//! 2. device `Login {member, signature}` (ed25519 over nonce and context,
//!    under [`crate::SigningTag::SyncLogin`]) -> `LoginOk`;
//! 3. device `Subscribe {community, heads}` -> server `Bundle` (what the
//!    device lacks, `Community::changes_since_for`) then
//!    `Subscribed {heads}`; a non-member (or a community the server does
//!    not hold) gets [`ErrorCode::NotMember`] either way;
//! 4. device uploads a `Bundle` of what the server lacks -> `Ack`;
//! 5. live: the server pushes every accepted change to every subscriber
//!    allowed to read it.
//!
//! Every refusal is a [`Frame::Error`] with a stable [`ErrorCode`].
//!
//! With the `net` feature, [`SyncEngine`] runs a device session over a
//! real WebSocket, with reconnection.

mod device;
#[cfg(feature = "net")]
mod engine;
mod frame;
mod join;
mod limit;
mod server;

pub use device::{DeviceAction, DeviceSession, SyncStatus};
#[cfg(feature = "net")]
pub use engine::{EngineOptions, SyncEngine};
pub use frame::{Ack, DecodeError, ErrorCode, Frame, MAGIC, PROTOCOL_VERSION, login_message};
pub use join::JoinRequest;
pub use limit::TokenBucket;
pub use server::{ServerAction, ServerLimits, ServerSession};
