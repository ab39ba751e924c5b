//! Nightjar's sans-IO client state machine.
//!
//! Every Nightjar client — the command line, the SDK and the browser — runs this crate between
//! the end-to-end encryption engine (`nightjar-core`) and its transport. It decides everything
//! a messenger decides between the user and the server: what the outbox posts next and what it
//! does with each answer (a lost epoch race, a 429 with `Retry-After`, a server error, a lost
//! connection, a refusal for good), how the inbox is read, processed in order and
//! acknowledged, which device lists to fetch, and how this account's devices join its
//! conversations. It performs no IO and never reads a clock: see [`Machine`].
//!
//! - [`ClientStore`] is where a client keeps its state; [`MemoryClientStore`] keeps it in
//!   memory with a journal a driver persists (the browser's IndexedDB).
//! - [`Request`], [`Response`] and [`Failure`] are the requests the machine asks its driver to
//!   make and their outcomes.

pub mod archive;
pub mod auth;
pub mod backoff;
pub mod calls;
mod error;
mod machine;
mod memory;
pub mod rows;
mod store;
pub mod transfer;
mod transport;

pub use error::{Error, Result};
pub use machine::history::{timer as disappearing_timer, timer_key};
pub use machine::outbox::{address, enqueue_commit};
pub use machine::{
    DEFAULT_MISSING_AFTER_MS, INBOX_PAGE, Machine, Notification, OperationError, OperationId,
    SafetyView, conversation_row, meta,
};
pub use memory::{JournalEntry, MemoryClientStore};
pub use rows::READABLE_KINDS;
pub use store::{ClientStore, StoreResult};
pub use transport::{Failure, Request, RequestId, Response};
