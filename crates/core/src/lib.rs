//! Nightjar's sans-IO end-to-end encryption engine.
//!
//! Every Nightjar client (CLI, SDK, web) runs this crate. It owns identities, signed device
//! lists, conversations (MLS groups whose leaves are devices), the message content encoding and
//! safety numbers. It performs no IO and never reads a clock: callers pass time in and move the
//! returned bytes over whatever transport they use. All state lives behind [`storage::KvStore`],
//! which the caller implements (the SDK over an encrypted database).

pub mod content;
pub mod safety;
