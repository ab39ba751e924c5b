//! Nightjar's sans-IO end-to-end encryption engine.
//!
//! Every Nightjar client (CLI, SDK, web) runs this crate. It owns identities, signed device
//! lists, conversations (MLS groups whose leaves are devices), the message content encoding and
//! safety numbers. It performs no IO and never reads a clock: callers pass time in and move the
//! returned bytes over whatever transport they use. All state lives behind [`storage::KvStore`],
//! which the caller implements (the SDK over an encrypted database).

pub mod attachment;
pub mod calls;
pub mod config;
pub mod content;
pub mod device_auth;
pub mod directory;
mod engine;
mod error;
pub mod franking;
pub mod handshake;
pub mod identity;
pub mod pickle;
mod provider;
pub mod provisioning;
pub mod safety;
pub mod sealed;
pub mod sequence;
pub mod storage;
pub mod transparency;
pub mod wire;

pub use config::{EngineConfig, Suite, UpdatePolicy};
#[cfg(feature = "hostile")]
pub use engine::Forgery;
pub use engine::{
    CommitBundle, ConversationId, ConversationInfo, ConversationKind, Engine, Incoming, Intent,
    MissingMessages, Outbound,
};
pub use error::{ConversationError, Error, Result};
