//! The profile as the client state machine's [`nightjar_machine::ClientStore`].

use nightjar_core::storage::StoreError;

use super::{
    Amendment, Consent, ContactRecord, ConversationRow, OutboxItem, OutboxRow, Store, StoredMessage,
};
use crate::error::Error;

fn store_error(e: Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// The machine's view of the profile: the same tables, through the same connection and
/// outer transaction.
impl nightjar_machine::ClientStore for Store {
    fn begin(&self) -> Result<(), StoreError> {
        Store::begin(self).map_err(store_error)
    }
    fn commit(&self) -> Result<(), StoreError> {
        Store::commit(self).map_err(store_error)
    }
    fn rollback(&self) {
        Store::rollback(self);
    }
    fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        Store::meta(self, key).map_err(store_error)
    }
    fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        Store::set_meta(self, key, value).map_err(store_error)
    }
    fn delete_meta(&self, key: &str) -> Result<(), StoreError> {
        Store::delete_meta(self, key).map_err(store_error)
    }
    fn push_outbox(
        &self,
        conversation: &str,
        item: &OutboxItem,
        idempotency_key: &str,
        now_ms: u64,
    ) -> Result<i64, StoreError> {
        Store::push_outbox(self, conversation, item, idempotency_key, now_ms).map_err(store_error)
    }
    fn outbox(&self) -> Result<Vec<OutboxRow>, StoreError> {
        Store::outbox(self).map_err(store_error)
    }
    fn replace_outbox(
        &self,
        seq: i64,
        item: &OutboxItem,
        idempotency_key: &str,
    ) -> Result<(), StoreError> {
        Store::replace_outbox(self, seq, item, idempotency_key).map_err(store_error)
    }
    fn bump_outbox_attempts(&self, seq: i64) -> Result<(), StoreError> {
        Store::bump_outbox_attempts(self, seq).map_err(store_error)
    }
    fn remove_outbox(&self, seq: i64) -> Result<(), StoreError> {
        Store::remove_outbox(self, seq).map_err(store_error)
    }
    fn clear_outbox_for(&self, conversation: &str) -> Result<(), StoreError> {
        Store::clear_outbox_for(self, conversation).map_err(store_error)
    }
    fn mark_outbox_refused(&self, seq: i64, reason: &str, now_ms: u64) -> Result<(), StoreError> {
        Store::mark_outbox_refused(self, seq, reason, now_ms).map_err(store_error)
    }
    fn retry_refused(&self) -> Result<u64, StoreError> {
        Store::retry_refused(self).map_err(store_error)
    }
    fn is_processed(&self, envelope_id: u64) -> Result<bool, StoreError> {
        Store::is_processed(self, envelope_id).map_err(store_error)
    }
    fn mark_processed(&self, envelope_id: u64, now_ms: u64) -> Result<(), StoreError> {
        Store::mark_processed(self, envelope_id, now_ms).map_err(store_error)
    }
    fn prune_processed(&self, cutoff_ms: u64) -> Result<(), StoreError> {
        Store::prune_processed(self, cutoff_ms).map_err(store_error)
    }
    fn upsert_conversation(&self, row: &ConversationRow, now_ms: u64) -> Result<(), StoreError> {
        Store::upsert_conversation(self, row, now_ms).map_err(store_error)
    }
    fn delete_conversation(&self, id: &str) -> Result<(), StoreError> {
        Store::delete_conversation(self, id).map_err(store_error)
    }
    fn conversations(&self) -> Result<Vec<ConversationRow>, StoreError> {
        Store::conversations(self).map_err(store_error)
    }
    fn conversation_row(&self, id: &str) -> Result<Option<ConversationRow>, StoreError> {
        Store::conversation_row(self, id).map_err(store_error)
    }
    fn insert_conversation(&self, row: &ConversationRow, now_ms: u64) -> Result<bool, StoreError> {
        Store::insert_conversation(self, row, now_ms).map_err(store_error)
    }
    fn recent_messages(
        &self,
        conversation: Option<&str>,
        since_ms: u64,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        Store::recent_messages(self, conversation, since_ms, limit).map_err(store_error)
    }
    fn insert_message(
        &self,
        m: &StoredMessage,
        received_at: u64,
        shown: bool,
    ) -> Result<bool, StoreError> {
        Store::insert_message(self, m, received_at, shown).map_err(store_error)
    }
    fn amend_message(
        &self,
        conversation: &str,
        sender: &str,
        id: &str,
        amendment: &Amendment,
    ) -> Result<bool, StoreError> {
        Store::amend_message(self, conversation, sender, id, amendment).map_err(store_error)
    }
    fn expire_messages(&self, now_ms: u64) -> Result<Vec<StoredMessage>, StoreError> {
        Store::expire_messages(self, now_ms).map_err(store_error)
    }
    fn record_contact(
        &self,
        username: &str,
        identity_key: &[u8],
        version: u64,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        Store::record_contact(self, username, identity_key, version, now_ms).map_err(store_error)
    }
    fn set_changed_identity(
        &self,
        username: &str,
        list: Option<&[u8]>,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        Store::set_changed_identity(self, username, list, now_ms).map_err(store_error)
    }
    fn contact(&self, username: &str) -> Result<Option<ContactRecord>, StoreError> {
        Store::contact(self, username).map_err(store_error)
    }
    fn consent(&self, username: &str) -> Result<Option<Consent>, StoreError> {
        Store::consent(self, username).map_err(store_error)
    }
    fn is_request(&self, conversation: &str, sender: &str) -> Result<bool, StoreError> {
        Store::is_request(self, conversation, sender).map_err(store_error)
    }
    fn hold_message(
        &self,
        conversation: &str,
        sender: &str,
        message_id: &str,
    ) -> Result<bool, StoreError> {
        Store::hold_message(self, conversation, sender, message_id).map_err(store_error)
    }
    fn joined_conversation(&self, conversation: &str, inviter: &str) -> Result<bool, StoreError> {
        Store::joined_conversation(self, conversation, inviter).map_err(store_error)
    }
    fn accept_conversation(&self, conversation: &str) -> Result<(), StoreError> {
        Store::accept_conversation(self, conversation).map_err(store_error)
    }
}
