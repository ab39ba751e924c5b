//! The Nightjar server: accounts with OPAQUE passwords, devices and their signed device lists,
//! the MLS key-package directory, per-device delivery queues with per-conversation commit
//! ordering, and a WebSocket push stream. Prometheus metrics are served on a listener of
//! their own (loopback by default), never on the public one.
//!
//! The server only ever handles public keys, signed device lists, OPAQUE password files and
//! MLS ciphertext; it checks what can be checked without secrets (signatures on device lists
//! and key packages, the clear-text kind, conversation and epoch of MLS messages) and cannot
//! decrypt anything.
//!
//! ```no_run
//! # async fn example() -> Result<(), nightjar_server::ServerError> {
//! let config = nightjar_server::ServerConfig::default();
//! nightjar_server::run(config, nightjar_server::shutdown_signal()).await
//! # }
//! ```
//!
//! The library emits `tracing` events (never message content, tokens, keys or OPAQUE
//! messages; request logs name route templates, not paths); the binary installs a subscriber.

mod auth;
mod blobs;
mod config;
mod error;
mod fan_out;
mod franking;
mod group_calls;
mod http;
mod metrics;
mod notify;
mod opaque;
mod rate_limit;
mod rules;
mod sealed_keys;
mod secret_files;
mod server;
mod session_cache;
mod state;
mod store;
mod stream_slots;
mod transparency;
mod turn;

#[doc(hidden)]
pub mod bench_support;

pub use config::{BlobSettings, GroupCommit, Limits, ServerConfig, SfuSettings, TurnConfig};
pub use error::ServerError;
pub use server::{RunningServer, run, shutdown_signal, start};
