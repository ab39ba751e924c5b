//! [`MemoryClientStore`]: every table in one ordered map, with transactions and a journal.
//!
//! The browser keeps its whole profile in memory and persists it to IndexedDB: after each
//! event, the driver takes the [`journal`](MemoryClientStore::take_journal) (every key written
//! or deleted by committed transactions since the last take) and writes it, encrypted, before
//! it carries out the actions the event returned. On start it hands every stored entry back to
//! [`MemoryClientStore::from_entries`]. The simulation tests use the same store.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use nightjar_core::storage::{Entry, KvStore, StoreError};
use serde::{Deserialize, Serialize};

use crate::rows::{
    Amendment, Consent, ContactRecord, ConversationRow, OutboxItem, OutboxRow, StoredMessage,
};
use crate::store::{ClientStore, StoreResult};

/// Key prefixes of the tables.
mod prefix {
    pub(super) const ENGINE: &[u8] = b"k/";
    pub(super) const META: &[u8] = b"m/";
    pub(super) const OUTBOX: &[u8] = b"o/";
    pub(super) const PROCESSED: &[u8] = b"p/";
    pub(super) const CONVERSATION: &[u8] = b"c/";
    pub(super) const MESSAGE: &[u8] = b"h/";
    pub(super) const MESSAGE_INDEX: &[u8] = b"i/";
    pub(super) const CONTACT: &[u8] = b"u/";
    pub(super) const CONSENT: &[u8] = b"a/";
    pub(super) const CONVERSATION_CONSENT: &[u8] = b"g/";
    pub(super) const COUNTER: &[u8] = b"n/";
}

/// `shown` of a message held back as a request.
const HELD: u8 = 2;

type Changes = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

#[derive(Default)]
struct Inner {
    map: BTreeMap<Vec<u8>, Vec<u8>>,
    /// The open transaction's writes (`None`: deleted).
    pending: Option<Changes>,
    /// Committed changes not yet taken by the driver.
    journal: Changes,
}

impl Inner {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        if let Some(p) = &self.pending
            && let Some(v) = p.get(key)
        {
            return v.clone();
        }
        self.map.get(key).cloned()
    }

    fn set(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        match &mut self.pending {
            Some(p) => {
                p.insert(key, value);
            }
            None => self.apply(BTreeMap::from([(key, value)])),
        }
    }

    fn apply(&mut self, changes: Changes) {
        for (key, value) in changes {
            match &value {
                Some(v) => self.map.insert(key.clone(), v.clone()),
                None => self.map.remove(&key),
            };
            self.journal.insert(key, value);
        }
    }

    /// Entries under `prefix`, in key order, as the open transaction sees them.
    fn scan(&self, prefix: &[u8]) -> Vec<Entry> {
        let mut out: BTreeMap<Vec<u8>, Vec<u8>> = self
            .map
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if let Some(p) = &self.pending {
            for (k, v) in p
                .range(prefix.to_vec()..)
                .take_while(|(k, _)| k.starts_with(prefix))
            {
                match v {
                    Some(v) => out.insert(k.clone(), v.clone()),
                    None => out.remove(k),
                };
            }
        }
        out.into_iter().collect()
    }

    fn next(&mut self, counter: &[u8]) -> i64 {
        let key = [prefix::COUNTER, counter].concat();
        let n = self
            .get(&key)
            .and_then(|v| v.try_into().ok().map(i64::from_be_bytes))
            .unwrap_or(0)
            + 1;
        self.set(key, Some(n.to_be_bytes().to_vec()));
        n
    }
}

/// One change a driver must persist.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournalEntry {
    /// The stored key.
    pub key: Vec<u8>,
    /// Its new value; `None`: the key was deleted.
    pub value: Option<Vec<u8>>,
}

/// A client profile held in memory (see the module documentation). Cheap to clone; clones
/// share the same data.
#[derive(Clone, Default)]
pub struct MemoryClientStore {
    inner: Arc<Mutex<Inner>>,
}

impl std::fmt::Debug for MemoryClientStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryClientStore { .. }")
    }
}

#[derive(Serialize, Deserialize)]
struct OutboxRecord {
    priority: i64,
    conversation: String,
    idempotency_key: String,
    item: OutboxItem,
    attempts: u64,
    refused: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct MessageRecord {
    message: StoredMessage,
    received_at: u64,
    shown: u8,
}

#[derive(Serialize, Deserialize)]
struct ConversationRecord {
    row: ConversationRow,
    created_at: u64,
}

#[derive(Serialize, Deserialize)]
struct ContactEntry {
    identity_key: Option<Vec<u8>>,
    list_version: Option<u64>,
    changed_list: Option<Vec<u8>>,
}

#[derive(Serialize, Deserialize)]
struct ConversationConsent {
    inviter: Option<String>,
    accepted: bool,
}

fn key(prefix: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut k = prefix.to_vec();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            k.push(0);
        }
        k.extend_from_slice(p);
    }
    k
}

/// A message key's storage order: its last eight bytes, the sequence number.
fn seq_of(message_key: &[u8]) -> i64 {
    message_key
        .get(message_key.len().saturating_sub(8)..)
        .and_then(|b| b.try_into().ok())
        .map_or(0, i64::from_be_bytes)
}

fn encode<T: Serialize>(value: &T) -> StoreResult<Vec<u8>> {
    serde_json::to_vec(value).map_err(|_| StoreError::Codec)
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> StoreResult<T> {
    serde_json::from_slice(bytes).map_err(|_| StoreError::Codec)
}

impl MemoryClientStore {
    /// An empty profile.
    pub fn new() -> Self {
        Self::default()
    }

    /// A profile from entries a driver stored (every entry a journal ever gave it, last
    /// write per key).
    pub fn from_entries(entries: impl IntoIterator<Item = Entry>) -> Self {
        let store = Self::default();
        if let Ok(mut inner) = store.inner.lock() {
            inner.map = entries.into_iter().collect();
        }
        store
    }

    fn lock(&self) -> StoreResult<MutexGuard<'_, Inner>> {
        self.inner
            .lock()
            .map_err(|_| StoreError::Backend("profile lock poisoned".into()))
    }

    /// Takes the committed changes since the last call, for the driver to persist.
    pub fn take_journal(&self) -> StoreResult<Vec<JournalEntry>> {
        Ok(std::mem::take(&mut self.lock()?.journal)
            .into_iter()
            .map(|(key, value)| JournalEntry { key, value })
            .collect())
    }

    /// Every stored entry (for export and tests).
    pub fn dump(&self) -> StoreResult<Vec<Entry>> {
        Ok(self
            .lock()?
            .map
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    /// The history of a conversation, oldest first.
    pub fn messages(&self, conversation: &str) -> StoreResult<Vec<StoredMessage>> {
        let inner = self.lock()?;
        let rows = inner.scan(&key(prefix::MESSAGE, &[conversation.as_bytes(), b""]));
        rows.iter()
            .map(|(_, v)| Ok(decode::<MessageRecord>(v)?.message))
            .collect()
    }

    /// Starts the disappearing timers of a conversation's messages that have one and were
    /// not read before (the user opened the conversation at `now_ms`).
    pub fn start_timers(&self, conversation: &str, now_ms: u64) -> StoreResult<()> {
        let mut inner = self.lock()?;
        let rows = inner.scan(&key(prefix::MESSAGE, &[conversation.as_bytes(), b""]));
        for (k, v) in rows {
            let mut record: MessageRecord = decode(&v)?;
            let m = &mut record.message;
            if let (Some(secs), None) = (m.expires_after_secs, m.expires_at) {
                m.expires_at = Some(now_ms.saturating_add(u64::from(secs) * 1000));
                inner.set(k, Some(encode(&record)?));
            }
        }
        Ok(())
    }

    /// Messages not shown to the user yet, in the order they were stored; marks them shown,
    /// which starts their disappearing timers.
    pub fn take_unshown(&self, now_ms: u64) -> StoreResult<Vec<StoredMessage>> {
        let mut inner = self.lock()?;
        let mut found: Vec<(i64, Vec<u8>, MessageRecord)> = Vec::new();
        for (k, v) in inner.scan(prefix::MESSAGE) {
            let record: MessageRecord = decode(&v)?;
            if record.shown == 0 {
                let seq = seq_of(&k);
                found.push((seq, k, record));
            }
        }
        found.sort_by_key(|(seq, _, _)| *seq);
        let mut out = Vec::new();
        for (_, k, mut record) in found {
            record.shown = 1;
            record.message.expires_at = record
                .message
                .expires_after_secs
                .map(|s| now_ms.saturating_add(u64::from(s) * 1000));
            inner.set(k, Some(encode(&record)?));
            out.push(record.message);
        }
        Ok(out)
    }

    /// Number of queued outbox entries.
    pub fn outbox_len(&self) -> StoreResult<usize> {
        Ok(self.lock()?.scan(prefix::OUTBOX).len())
    }

    fn outbox_record(inner: &Inner, seq: i64) -> StoreResult<Option<(Vec<u8>, OutboxRecord)>> {
        let k = key(prefix::OUTBOX, &[&seq.to_be_bytes()]);
        match inner.get(&k) {
            Some(v) => Ok(Some((k, decode(&v)?))),
            None => Ok(None),
        }
    }

    fn update_outbox(&self, seq: i64, f: impl FnOnce(&mut OutboxRecord)) -> StoreResult<()> {
        let mut inner = self.lock()?;
        if let Some((k, mut record)) = Self::outbox_record(&inner, seq)? {
            f(&mut record);
            inner.set(k, Some(encode(&record)?));
        }
        Ok(())
    }

    fn contact_entry(inner: &Inner, username: &str) -> StoreResult<Option<ContactEntry>> {
        inner
            .get(&key(prefix::CONTACT, &[username.as_bytes()]))
            .map(|v| decode(&v))
            .transpose()
    }

    fn consent_locked(inner: &Inner, username: &str) -> Option<Consent> {
        inner
            .get(&key(prefix::CONSENT, &[username.as_bytes()]))
            .and_then(|v| Consent::parse(std::str::from_utf8(&v).ok()?))
    }

    /// Records a decision about `username` (`None` forgets it) and releases what is no
    /// longer a request.
    pub fn set_consent(&self, username: &str, consent: Option<Consent>) -> StoreResult<()> {
        let mut inner = self.lock()?;
        let k = key(prefix::CONSENT, &[username.as_bytes()]);
        inner.set(k, consent.map(|c| c.as_str().as_bytes().to_vec()));
        if consent == Some(Consent::Accepted) {
            for (k, v) in inner.scan(prefix::CONVERSATION_CONSENT) {
                let mut c: ConversationConsent = decode(&v)?;
                if c.inviter.as_deref() == Some(username) && !c.accepted {
                    c.accepted = true;
                    inner.set(k, Some(encode(&c)?));
                }
            }
        }
        for (k, v) in inner.scan(prefix::MESSAGE) {
            let mut record: MessageRecord = decode(&v)?;
            if record.shown != HELD {
                continue;
            }
            let sender = record.message.from.as_str();
            let accepted_sender = Self::consent_locked(&inner, sender) == Some(Consent::Accepted);
            let blocked = Self::consent_locked(&inner, sender) == Some(Consent::Blocked);
            let pending_conversation = inner
                .get(&key(
                    prefix::CONVERSATION_CONSENT,
                    &[record.message.conversation.as_bytes()],
                ))
                .map(|v| decode::<ConversationConsent>(&v))
                .transpose()?
                .is_some_and(|c| !c.accepted);
            if !blocked && (accepted_sender || !pending_conversation) {
                record.shown = 0;
                inner.set(k, Some(encode(&record)?));
            }
        }
        Ok(())
    }
}

impl KvStore for MemoryClientStore {
    fn get(&self, k: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.lock()?.get(&[prefix::ENGINE, k].concat()))
    }

    fn put(&self, k: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.lock()?
            .set([prefix::ENGINE, k].concat(), Some(value.to_vec()));
        Ok(())
    }

    fn delete(&self, k: &[u8]) -> Result<(), StoreError> {
        self.lock()?.set([prefix::ENGINE, k].concat(), None);
        Ok(())
    }

    fn entries(&self) -> Result<Vec<Entry>, StoreError> {
        self.entries_with_prefix(b"")
    }

    fn entries_with_prefix(&self, p: &[u8]) -> Result<Vec<Entry>, StoreError> {
        Ok(self
            .lock()?
            .scan(&[prefix::ENGINE, p].concat())
            .into_iter()
            .map(|(k, v)| (k[prefix::ENGINE.len()..].to_vec(), v))
            .collect())
    }

    fn apply(&self, batch: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> Result<(), StoreError> {
        let mut inner = self.lock()?;
        match &mut inner.pending {
            Some(_) => {
                for (k, v) in batch {
                    inner.set([prefix::ENGINE, &k].concat(), v);
                }
            }
            None => {
                let changes = batch
                    .into_iter()
                    .map(|(k, v)| ([prefix::ENGINE, &k].concat(), v))
                    .collect();
                inner.apply(changes);
            }
        }
        Ok(())
    }
}

impl ClientStore for MemoryClientStore {
    fn begin(&self) -> StoreResult<()> {
        self.lock()?.pending = Some(Changes::new());
        Ok(())
    }

    fn commit(&self) -> StoreResult<()> {
        let mut inner = self.lock()?;
        if let Some(p) = inner.pending.take() {
            inner.apply(p);
        }
        Ok(())
    }

    fn rollback(&self) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.pending = None;
        }
    }

    fn meta(&self, k: &str) -> StoreResult<Option<String>> {
        Ok(self
            .lock()?
            .get(&key(prefix::META, &[k.as_bytes()]))
            .and_then(|v| String::from_utf8(v).ok()))
    }

    fn set_meta(&self, k: &str, value: &str) -> StoreResult<()> {
        self.lock()?.set(
            key(prefix::META, &[k.as_bytes()]),
            Some(value.as_bytes().to_vec()),
        );
        Ok(())
    }

    fn delete_meta(&self, k: &str) -> StoreResult<()> {
        self.lock()?.set(key(prefix::META, &[k.as_bytes()]), None);
        Ok(())
    }

    fn push_outbox(
        &self,
        conversation: &str,
        item: &OutboxItem,
        idempotency_key: &str,
        _now_ms: u64,
    ) -> StoreResult<i64> {
        let mut inner = self.lock()?;
        let seq = inner.next(b"outbox");
        let record = OutboxRecord {
            priority: item.priority(),
            conversation: conversation.to_owned(),
            idempotency_key: idempotency_key.to_owned(),
            item: item.clone(),
            attempts: 0,
            refused: None,
        };
        inner.set(
            key(prefix::OUTBOX, &[&seq.to_be_bytes()]),
            Some(encode(&record)?),
        );
        Ok(seq)
    }

    fn outbox(&self) -> StoreResult<Vec<OutboxRow>> {
        let inner = self.lock()?;
        let mut rows: Vec<(i64, OutboxRow)> = Vec::new();
        for (k, v) in inner.scan(prefix::OUTBOX) {
            let record: OutboxRecord = decode(&v)?;
            let seq = k
                .get(prefix::OUTBOX.len()..)
                .and_then(|b| b.try_into().ok())
                .map_or(0, i64::from_be_bytes);
            rows.push((
                record.priority,
                OutboxRow {
                    seq,
                    conversation: record.conversation,
                    idempotency_key: record.idempotency_key,
                    item: record.item,
                    attempts: record.attempts,
                    refused: record.refused,
                },
            ));
        }
        rows.sort_by_key(|(priority, row)| (*priority, row.seq));
        Ok(rows.into_iter().map(|(_, row)| row).collect())
    }

    fn replace_outbox(
        &self,
        seq: i64,
        item: &OutboxItem,
        idempotency_key: &str,
    ) -> StoreResult<()> {
        self.update_outbox(seq, |r| {
            r.priority = item.priority();
            r.item = item.clone();
            idempotency_key.clone_into(&mut r.idempotency_key);
        })
    }

    fn bump_outbox_attempts(&self, seq: i64) -> StoreResult<()> {
        self.update_outbox(seq, |r| r.attempts += 1)
    }

    fn remove_outbox(&self, seq: i64) -> StoreResult<()> {
        self.lock()?
            .set(key(prefix::OUTBOX, &[&seq.to_be_bytes()]), None);
        Ok(())
    }

    fn clear_outbox_for(&self, conversation: &str) -> StoreResult<()> {
        for row in self.outbox()? {
            if row.conversation == conversation {
                self.remove_outbox(row.seq)?;
            }
        }
        Ok(())
    }

    fn mark_outbox_refused(&self, seq: i64, reason: &str, _now_ms: u64) -> StoreResult<()> {
        self.update_outbox(seq, |r| r.refused = Some(reason.to_owned()))
    }

    fn retry_refused(&self) -> StoreResult<u64> {
        let mut n = 0;
        for row in self.outbox()? {
            if row.refused.is_some() {
                self.update_outbox(row.seq, |r| r.refused = None)?;
                n += 1;
            }
        }
        Ok(n)
    }

    fn is_processed(&self, envelope_id: u64) -> StoreResult<bool> {
        Ok(self
            .lock()?
            .get(&key(prefix::PROCESSED, &[&envelope_id.to_be_bytes()]))
            .is_some())
    }

    fn mark_processed(&self, envelope_id: u64, now_ms: u64) -> StoreResult<()> {
        self.lock()?.set(
            key(prefix::PROCESSED, &[&envelope_id.to_be_bytes()]),
            Some(now_ms.to_be_bytes().to_vec()),
        );
        Ok(())
    }

    fn prune_processed(&self, cutoff_ms: u64) -> StoreResult<()> {
        let mut inner = self.lock()?;
        for (k, v) in inner.scan(prefix::PROCESSED) {
            let at = v.try_into().ok().map_or(0, u64::from_be_bytes);
            if at < cutoff_ms {
                inner.set(k, None);
            }
        }
        Ok(())
    }

    fn upsert_conversation(&self, row: &ConversationRow, now_ms: u64) -> StoreResult<()> {
        let mut inner = self.lock()?;
        let k = key(prefix::CONVERSATION, &[row.id.as_bytes()]);
        let created_at = match inner.get(&k) {
            Some(v) => decode::<ConversationRecord>(&v)?.created_at,
            None => now_ms,
        };
        let record = ConversationRecord {
            row: row.clone(),
            created_at,
        };
        inner.set(k, Some(encode(&record)?));
        Ok(())
    }

    fn delete_conversation(&self, id: &str) -> StoreResult<()> {
        self.lock()?
            .set(key(prefix::CONVERSATION, &[id.as_bytes()]), None);
        Ok(())
    }

    fn conversations(&self) -> StoreResult<Vec<ConversationRow>> {
        let mut records: Vec<ConversationRecord> = self
            .lock()?
            .scan(prefix::CONVERSATION)
            .iter()
            .map(|(_, v)| decode(v))
            .collect::<StoreResult<_>>()?;
        records.sort_by(|a, b| (a.created_at, &a.row.id).cmp(&(b.created_at, &b.row.id)));
        Ok(records.into_iter().map(|r| r.row).collect())
    }

    fn recent_messages(
        &self,
        conversation: Option<&str>,
        since_ms: u64,
        limit: usize,
    ) -> StoreResult<Vec<StoredMessage>> {
        let inner = self.lock()?;
        let scan = match conversation {
            Some(c) => key(prefix::MESSAGE, &[c.as_bytes(), b""]),
            None => prefix::MESSAGE.to_vec(),
        };
        let mut found: Vec<(i64, StoredMessage)> = Vec::new();
        for (k, v) in inner.scan(&scan) {
            let message = decode::<MessageRecord>(&v)?.message;
            if message.sent_at >= since_ms {
                found.push((seq_of(&k), message));
            }
        }
        found.sort_by_key(|(seq, _)| *seq);
        let extra = found.len().saturating_sub(limit);
        Ok(found.into_iter().skip(extra).map(|(_, m)| m).collect())
    }

    fn insert_message(
        &self,
        m: &StoredMessage,
        received_at: u64,
        shown: bool,
    ) -> StoreResult<bool> {
        let mut inner = self.lock()?;
        let index = key(
            prefix::MESSAGE_INDEX,
            &[
                m.conversation.as_bytes(),
                m.from.as_bytes(),
                m.id.as_bytes(),
            ],
        );
        if inner.get(&index).is_some() {
            return Ok(false);
        }
        let seq = inner.next(b"message");
        let k = key(
            prefix::MESSAGE,
            &[m.conversation.as_bytes(), &seq.to_be_bytes()],
        );
        let record = MessageRecord {
            message: m.clone(),
            received_at,
            shown: u8::from(shown),
        };
        inner.set(k.clone(), Some(encode(&record)?));
        inner.set(index, Some(k));
        Ok(true)
    }

    fn amend_message(
        &self,
        conversation: &str,
        sender: &str,
        id: &str,
        amendment: &Amendment,
    ) -> StoreResult<bool> {
        let mut inner = self.lock()?;
        let index = key(
            prefix::MESSAGE_INDEX,
            &[conversation.as_bytes(), sender.as_bytes(), id.as_bytes()],
        );
        let Some(k) = inner.get(&index) else {
            return Ok(false);
        };
        let Some(value) = inner.get(&k) else {
            return Ok(false);
        };
        let mut record: MessageRecord = decode(&value)?;
        // The browser keeps no saved files: nothing to delete with an attachment.
        if !record.message.amend(amendment, &mut None) {
            return Ok(false);
        }
        inner.set(k, Some(encode(&record)?));
        Ok(true)
    }

    fn expire_messages(&self, now_ms: u64) -> StoreResult<Vec<StoredMessage>> {
        let mut inner = self.lock()?;
        let mut gone = Vec::new();
        for (k, v) in inner.scan(prefix::MESSAGE) {
            let record: MessageRecord = decode(&v)?;
            if record.message.expires_at.is_some_and(|t| t <= now_ms) {
                let m = record.message;
                let index = key(
                    prefix::MESSAGE_INDEX,
                    &[
                        m.conversation.as_bytes(),
                        m.from.as_bytes(),
                        m.id.as_bytes(),
                    ],
                );
                inner.set(k, None);
                inner.set(index, None);
                gone.push(m);
            }
        }
        Ok(gone)
    }

    fn record_contact(
        &self,
        username: &str,
        identity_key: &[u8],
        version: u64,
        _now_ms: u64,
    ) -> StoreResult<()> {
        let mut inner = self.lock()?;
        let mut entry = Self::contact_entry(&inner, username)?.unwrap_or(ContactEntry {
            identity_key: None,
            list_version: None,
            changed_list: None,
        });
        entry.identity_key = Some(identity_key.to_vec());
        entry.list_version = Some(version);
        inner.set(
            key(prefix::CONTACT, &[username.as_bytes()]),
            Some(encode(&entry)?),
        );
        Ok(())
    }

    fn set_changed_identity(
        &self,
        username: &str,
        list: Option<&[u8]>,
        _now_ms: u64,
    ) -> StoreResult<()> {
        let mut inner = self.lock()?;
        let mut entry = Self::contact_entry(&inner, username)?.unwrap_or(ContactEntry {
            identity_key: None,
            list_version: None,
            changed_list: None,
        });
        entry.changed_list = list.map(<[u8]>::to_vec);
        inner.set(
            key(prefix::CONTACT, &[username.as_bytes()]),
            Some(encode(&entry)?),
        );
        Ok(())
    }

    fn contact(&self, username: &str) -> StoreResult<Option<ContactRecord>> {
        let inner = self.lock()?;
        Ok(
            Self::contact_entry(&inner, username)?.map(|e| ContactRecord {
                username: username.to_owned(),
                changed_list: e.changed_list,
            }),
        )
    }

    fn consent(&self, username: &str) -> StoreResult<Option<Consent>> {
        Ok(Self::consent_locked(&*self.lock()?, username))
    }

    fn is_request(&self, conversation: &str, sender: &str) -> StoreResult<bool> {
        let inner = self.lock()?;
        if let Some(c) = Self::consent_locked(&inner, sender) {
            return Ok(c == Consent::Blocked);
        }
        let c = inner
            .get(&key(
                prefix::CONVERSATION_CONSENT,
                &[conversation.as_bytes()],
            ))
            .map(|v| decode::<ConversationConsent>(&v))
            .transpose()?;
        Ok(c.is_some_and(|c| !c.accepted))
    }

    fn hold_message(
        &self,
        conversation: &str,
        sender: &str,
        message_id: &str,
    ) -> StoreResult<bool> {
        let mut inner = self.lock()?;
        let mut first = true;
        for (_, v) in inner.scan(&key(prefix::MESSAGE, &[conversation.as_bytes(), b""])) {
            let record: MessageRecord = decode(&v)?;
            if record.shown == HELD && record.message.from == sender {
                first = false;
            }
        }
        let index = key(
            prefix::MESSAGE_INDEX,
            &[
                conversation.as_bytes(),
                sender.as_bytes(),
                message_id.as_bytes(),
            ],
        );
        if let Some(k) = inner.get(&index)
            && let Some(v) = inner.get(&k)
        {
            let mut record: MessageRecord = decode(&v)?;
            if record.shown == 0 {
                record.shown = HELD;
                inner.set(k, Some(encode(&record)?));
            }
        }
        Ok(first)
    }

    fn joined_conversation(&self, conversation: &str, inviter: &str) -> StoreResult<bool> {
        let mut inner = self.lock()?;
        let accepted = Self::consent_locked(&inner, inviter) == Some(Consent::Accepted);
        let k = key(prefix::CONVERSATION_CONSENT, &[conversation.as_bytes()]);
        if inner.get(&k).is_none() {
            let c = ConversationConsent {
                inviter: Some(inviter.to_owned()),
                accepted,
            };
            inner.set(k, Some(encode(&c)?));
        }
        Ok(accepted)
    }

    fn accept_conversation(&self, conversation: &str) -> StoreResult<()> {
        let mut inner = self.lock()?;
        let k = key(prefix::CONVERSATION_CONSENT, &[conversation.as_bytes()]);
        if let Some(v) = inner.get(&k) {
            let mut c: ConversationConsent = decode(&v)?;
            c.accepted = true;
            inner.set(k, Some(encode(&c)?));
        }
        for (k, v) in inner.scan(&key(prefix::MESSAGE, &[conversation.as_bytes(), b""])) {
            let mut record: MessageRecord = decode(&v)?;
            let blocked =
                Self::consent_locked(&inner, &record.message.from) == Some(Consent::Blocked);
            if record.shown == HELD && !blocked {
                record.shown = 0;
                inner.set(k, Some(encode(&record)?));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn message(conversation: &str, from: &str, id: &str) -> StoredMessage {
        StoredMessage {
            conversation: conversation.into(),
            id: id.into(),
            from: from.into(),
            device: "00".into(),
            sent_at: 1,
            kind: "text".into(),
            text: Some(format!("text {id}")),
            outgoing: false,
            detail: Default::default(),
            expires_after_secs: None,
            expires_at: None,
        }
    }

    #[test]
    fn a_rolled_back_transaction_leaves_nothing_and_a_committed_one_reaches_the_journal() {
        let store = MemoryClientStore::new();
        store.begin().unwrap();
        store.put(b"engine", b"state").unwrap();
        store
            .insert_message(&message("c", "bob", "1"), 1, false)
            .unwrap();
        store.rollback();
        assert_eq!(store.get(b"engine").unwrap(), None);
        assert!(store.messages("c").unwrap().is_empty());
        assert!(store.take_journal().unwrap().is_empty());

        store.begin().unwrap();
        store.put(b"engine", b"state").unwrap();
        assert!(
            store
                .insert_message(&message("c", "bob", "1"), 1, false)
                .unwrap()
        );
        store.commit().unwrap();
        let journal = store.take_journal().unwrap();
        assert!(
            journal
                .iter()
                .any(|e| e.key == b"k/engine" && e.value.is_some())
        );
        // What the driver persisted restores the same profile.
        let restored = MemoryClientStore::from_entries(store.dump().unwrap());
        assert_eq!(
            restored.messages("c").unwrap(),
            store.messages("c").unwrap()
        );
        assert_eq!(restored.get(b"engine").unwrap(), Some(b"state".to_vec()));
    }

    #[test]
    fn a_message_is_stored_once_and_shown_once() {
        let store = MemoryClientStore::new();
        assert!(
            store
                .insert_message(&message("c", "bob", "1"), 1, false)
                .unwrap()
        );
        assert!(
            !store
                .insert_message(&message("c", "bob", "1"), 2, false)
                .unwrap()
        );
        assert!(
            store
                .insert_message(&message("c", "bob", "2"), 2, false)
                .unwrap()
        );
        let shown = store.take_unshown(0).unwrap();
        assert_eq!(
            shown.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
            ["1", "2"]
        );
        assert!(store.take_unshown(0).unwrap().is_empty());
    }

    #[test]
    fn the_outbox_sends_commits_first_then_in_order() {
        let store = MemoryClientStore::new();
        let message = OutboxItem::Message {
            plaintext: nightjar_api::B64(vec![1]),
            message_id: "m".into(),
            ciphertext: None,
            epoch: None,
            franking_commitment: None,
        };
        let a = store.push_outbox("c", &message, "k1", 0).unwrap();
        let b = store
            .push_outbox("c", &OutboxItem::CommitProposals, "k2", 0)
            .unwrap();
        let c = store.push_outbox("c", &message, "k3", 0).unwrap();
        let order: Vec<i64> = store.outbox().unwrap().iter().map(|r| r.seq).collect();
        assert_eq!(order, [b, a, c]);
        store.bump_outbox_attempts(a).unwrap();
        store.mark_outbox_refused(c, "blocked", 0).unwrap();
        let rows = store.outbox().unwrap();
        assert_eq!(rows[1].attempts, 1);
        assert_eq!(rows[2].refused.as_deref(), Some("blocked"));
        store.clear_outbox_for("c").unwrap();
        assert!(store.outbox().unwrap().is_empty());
    }

    #[test]
    fn requests_are_held_until_the_conversation_is_accepted() {
        let store = MemoryClientStore::new();
        assert!(!store.joined_conversation("c", "mallory").unwrap());
        store
            .insert_message(&message("c", "mallory", "1"), 1, false)
            .unwrap();
        assert!(store.is_request("c", "mallory").unwrap());
        assert!(store.hold_message("c", "mallory", "1").unwrap());
        assert!(store.take_unshown(0).unwrap().is_empty());
        store.accept_conversation("c").unwrap();
        assert!(!store.is_request("c", "mallory").unwrap());
        assert_eq!(store.take_unshown(0).unwrap().len(), 1);
    }
}
