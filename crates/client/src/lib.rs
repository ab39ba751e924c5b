//! The Nightjar client SDK.
//!
//! A [`Client`] is one device: it drives the end-to-end encryption engine (`nightjar-core`)
//! against a Nightjar server over HTTP and the WebSocket stream, and keeps everything it knows
//! in an encrypted local profile:
//!
//! - **Profile**: one SQLCipher database ([`store`]) holding the engine's state, the decrypted
//!   history, conversations, contacts, the outbox and the session token, all encrypted at rest
//!   under a random 256-bit key kept in the OS keyring, or in a 0600 key file beside the
//!   database where there is no keyring ([`keys`]).
//! - **Outbox**: every send is stored with its idempotency key before it is posted and removed
//!   only when the server acknowledged it; commits that lose an epoch race are retried after
//!   the winner is processed; messages whose epoch moved on are encrypted again.
//! - **Sync**: the queue is drained in order; an envelope is acknowledged only after the engine
//!   state and the decrypted message are committed locally. Unknown accounts and unlisted
//!   devices make the client fetch device lists and reprocess the same bytes; an identity key
//!   change is held and surfaced, never accepted silently.
//! - **Attachments**: files go up as blobs encrypted on this device, resumably, and come back
//!   down verified, resumably ([`blobs`]).
//! - **Devices**: registration (OPAQUE), login of a new device with an approval code, approval
//!   on an existing device, removal. A newly approved device is added to the account's
//!   conversations by the next sync of any existing device of the account.

pub mod api;
pub mod audit;
mod auth;
mod backoff;
pub mod blobs;
mod client;
pub mod error;
pub mod keys;
pub mod store;

pub use auth::Password;
pub use blobs::{TransferPhase, TransferProgress};
pub use client::{
    Client, ClientOptions, DEFAULT_MISSING_AFTER, Destination, FollowEvent, FollowOptions,
    KEY_PACKAGE_BATCH, LoginOutcome, MAX_TIMER_SECS, MessageRequest, ReceivedMessage, SendOutcome,
    Status, SyncReport,
};
pub use error::{Error, Result};
pub use nightjar_machine::archive::HistoryImported;
