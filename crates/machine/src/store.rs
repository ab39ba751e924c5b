//! [`ClientStore`]: everything a client keeps, behind one synchronous trait.
//!
//! Like the engine's [`KvStore`] (which every `ClientStore` also is, holding the engine's
//! state), the store is called synchronously and the machine never waits for it. Drivers
//! choose the backend: the native client implements it over an encrypted SQLite database whose
//! transactions are durable when [`ClientStore::commit`] returns; the browser uses
//! [`crate::MemoryClientStore`] and writes its journal to IndexedDB after each event, before it
//! carries out the actions that event returned.

use nightjar_core::storage::{KvStore, StoreError};

use crate::rows::{
    Amendment, Consent, ContactRecord, ConversationRow, OutboxItem, OutboxRow, StoredMessage,
};

/// A store's result type.
pub type StoreResult<T> = Result<T, StoreError>;

/// The client's tables plus the engine's key/value state, with transactions spanning both.
pub trait ClientStore: KvStore + Clone {
    /// Opens a transaction: the engine's writes and the rows below commit together.
    fn begin(&self) -> StoreResult<()>;
    /// Commits the open transaction.
    fn commit(&self) -> StoreResult<()>;
    /// Abandons the open transaction.
    fn rollback(&self);

    /// A value from the settings table.
    fn meta(&self, key: &str) -> StoreResult<Option<String>>;
    /// Sets a value in the settings table.
    fn set_meta(&self, key: &str, value: &str) -> StoreResult<()>;
    /// Removes a value from the settings table.
    fn delete_meta(&self, key: &str) -> StoreResult<()>;

    /// Queues an entry; returns its position.
    fn push_outbox(
        &self,
        conversation: &str,
        item: &OutboxItem,
        idempotency_key: &str,
        now_ms: u64,
    ) -> StoreResult<i64>;
    /// Every queued entry, in sending order (commits first, then by position).
    fn outbox(&self) -> StoreResult<Vec<OutboxRow>>;
    /// Replaces an entry's content and idempotency key (keeps its position).
    fn replace_outbox(&self, seq: i64, item: &OutboxItem, idempotency_key: &str)
    -> StoreResult<()>;
    /// Counts a failed attempt.
    fn bump_outbox_attempts(&self, seq: i64) -> StoreResult<()>;
    /// Removes an acknowledged (or abandoned) entry.
    fn remove_outbox(&self, seq: i64) -> StoreResult<()>;
    /// Removes every entry of a conversation (this device left it).
    fn clear_outbox_for(&self, conversation: &str) -> StoreResult<()>;
    /// Marks an entry as refused for good: it stays queued for the user to retry or drop.
    fn mark_outbox_refused(&self, seq: i64, reason: &str, now_ms: u64) -> StoreResult<()>;

    /// Clears every refusal mark, so the refused entries are posted again; how many there were.
    fn retry_refused(&self) -> StoreResult<u64>;

    /// Whether the envelope with this queue id was already processed and committed.
    fn is_processed(&self, envelope_id: u64) -> StoreResult<bool>;
    /// Records that an envelope is processed (in the caller's transaction).
    fn mark_processed(&self, envelope_id: u64, now_ms: u64) -> StoreResult<()>;
    /// Forgets processed envelope ids older than `cutoff_ms`.
    fn prune_processed(&self, cutoff_ms: u64) -> StoreResult<()>;

    /// Adds or updates a conversation in the index.
    fn upsert_conversation(&self, row: &ConversationRow, now_ms: u64) -> StoreResult<()>;
    /// Removes a conversation from the index (a creation the server refused).
    fn delete_conversation(&self, id: &str) -> StoreResult<()>;
    /// Every conversation in the index, oldest first.
    fn conversations(&self) -> StoreResult<Vec<ConversationRow>>;
    /// One conversation of the index.
    fn conversation_row(&self, id: &str) -> StoreResult<Option<ConversationRow>> {
        Ok(self.conversations()?.into_iter().find(|c| c.id == id))
    }

    /// Adds a conversation to the index unless it is there already; whether it was added.
    fn insert_conversation(&self, row: &ConversationRow, now_ms: u64) -> StoreResult<bool> {
        if self.conversation_row(&row.id)?.is_some() {
            return Ok(false);
        }
        self.upsert_conversation(row, now_ms)?;
        Ok(true)
    }

    /// The newest `limit` messages sent at or after `since_ms` (of one conversation, or of
    /// all), oldest first (in the order they were stored).
    fn recent_messages(
        &self,
        conversation: Option<&str>,
        since_ms: u64,
        limit: usize,
    ) -> StoreResult<Vec<StoredMessage>>;

    /// Adds a message to the history; false if it was already there (same conversation,
    /// sender and message id), so a retried or re-encrypted message is never shown twice.
    fn insert_message(&self, m: &StoredMessage, received_at: u64, shown: bool)
    -> StoreResult<bool>;
    /// Applies an edit or a delete to the message `id` that `sender` sent in `conversation`
    /// (a text, reply or attachment not deleted yet); false when there is none, and then
    /// nothing changed.
    fn amend_message(
        &self,
        conversation: &str,
        sender: &str,
        id: &str,
        amendment: &Amendment,
    ) -> StoreResult<bool>;
    /// Deletes every message whose disappearing timer ran out by `now_ms`; returns them
    /// (their saved attachments are the caller's to delete).
    fn expire_messages(&self, now_ms: u64) -> StoreResult<Vec<StoredMessage>>;

    /// Records the identity key and list version accepted for `username`.
    fn record_contact(
        &self,
        username: &str,
        identity_key: &[u8],
        version: u64,
        now_ms: u64,
    ) -> StoreResult<()>;
    /// Remembers (or, with `None`, forgets) a device list of `username` signed by an
    /// unexpected identity key.
    fn set_changed_identity(
        &self,
        username: &str,
        list: Option<&[u8]>,
        now_ms: u64,
    ) -> StoreResult<()>;
    /// What is remembered about `username`.
    fn contact(&self, username: &str) -> StoreResult<Option<ContactRecord>>;

    /// This account's decision about `username`, if any.
    fn consent(&self, username: &str) -> StoreResult<Option<Consent>>;
    /// Whether a message from `sender` in `conversation` is a request to hold back.
    fn is_request(&self, conversation: &str, sender: &str) -> StoreResult<bool>;
    /// Holds a stored message back as a request; whether it is the first held from that
    /// sender in that conversation.
    fn hold_message(&self, conversation: &str, sender: &str, message_id: &str)
    -> StoreResult<bool>;
    /// Notes that `inviter` added this account to `conversation`; whether it is accepted
    /// (this account accepted the inviter).
    fn joined_conversation(&self, conversation: &str, inviter: &str) -> StoreResult<bool>;
    /// Accepts a conversation (this account sends in it) and releases its held messages.
    fn accept_conversation(&self, conversation: &str) -> StoreResult<()>;
}
