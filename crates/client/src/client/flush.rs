//! The outbox as the user sees it: listing it, and retrying or dropping what the server
//! refused. Posting it is the state machine's (`nightjar_machine`), carried by [`super::drive`].

use nightjar_api::ErrorCode;

use super::Client;
use super::drive::session_expired_error;
use crate::error::{Error, Result};
use crate::store::OutboxRow;

/// Turns a refused session into the sentence that says what to do.
pub(crate) fn session_expired(e: Error) -> Error {
    match e.api_code() {
        Some(ErrorCode::Unauthorized) => session_expired_error(),
        _ => e,
    }
}

impl Client {
    /// Every entry waiting in the outbox, in sending order; refused ones carry the server's
    /// reason.
    pub fn outbox(&self) -> Result<Vec<OutboxRow>> {
        self.store.outbox()
    }

    /// Sends the refused entries again (the user fixed the cause: was unblocked, was
    /// accepted, ...); returns how many there were. What the server refuses again is marked
    /// refused again.
    pub async fn retry_refused(&mut self) -> Result<u64> {
        self.ensure_ready().await?;
        let n = self.store.retry_refused()?;
        self.pump_tolerant().await?;
        Ok(n)
    }

    /// Discards the refused entries; returns how many there were.
    pub fn drop_refused(&mut self) -> Result<u64> {
        self.store.drop_refused()
    }
}
