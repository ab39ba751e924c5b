//! History on a new device: the archive of conversations and recent messages an approving
//! device hands a device it links to the account.
//!
//! The approving device builds a [`HistoryArchive`] from its own history (only what it shows
//! its user, so the new device reads nothing the account could not read), encodes it, encrypts
//! it as an attachment blob with a fresh key, and puts the blob's pointer in the link bundle,
//! which only the device showing the link code can open. The new device fetches the blob,
//! checks it against the pointer, decodes the archive with [`HistoryArchive::decode`] and
//! stores its rows as already shown.
//!
//! What the archive leaves out, and why:
//! - messages older than the chosen number of days, and beyond [`MAX_ARCHIVE_MESSAGES`] (the
//!   newest are kept): the transfer is bounded;
//! - attachments' files: a file's row travels (name, size, type, caption) but not the blob's
//!   read capability and key. The blob store counts the devices that fetched a blob and
//!   deletes it after the last declared recipient; a device that was never one of them must
//!   not use up a place;
//! - receipts (they are not history rows).
//!
//! A message with a disappearing timer keeps the time it disappears at (one not read yet on
//! the approving device counts from the archive's making), so it goes on both devices alike.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::rows::{ConversationRow, StoredMessage};
use crate::store::{ClientStore, StoreResult};

/// The setting (a meta key) of how many days of history a device hands a device it approves.
pub const HISTORY_DAYS: &str = "history_days";
/// The meta key of the archive a new device still has to fetch: the encoded pointer, in
/// base64url. Removed in the transaction that stores the archive.
pub const PENDING_HISTORY: &str = "pending_history";

/// The media type of an archive blob (never shown; it names what the blob is).
pub const ARCHIVE_MEDIA_TYPE: &str = "application/x-nightjar-history";
/// The archive format this crate writes and reads.
pub const ARCHIVE_VERSION: u32 = 1;
/// The most messages an archive carries (the newest are kept).
pub const MAX_ARCHIVE_MESSAGES: usize = 100_000;
/// The largest encoded archive accepted, in bytes.
pub const MAX_ARCHIVE_BYTES: u64 = 128 << 20;
/// How far back history goes by default, in days.
pub const DEFAULT_HISTORY_DAYS: u32 = 90;
/// The longest setting, in days (about ten years).
pub const MAX_HISTORY_DAYS: u32 = 3650;

const DAY_MS: u64 = 24 * 3600 * 1000;

/// Why an archive was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ArchiveError {
    /// Not an archive, or one of another version.
    #[error("the history archive is malformed")]
    Malformed,
    /// Larger than [`MAX_ARCHIVE_BYTES`] or with more than [`MAX_ARCHIVE_MESSAGES`] messages.
    #[error("the history archive is too large")]
    TooLarge,
    /// Made for another account.
    #[error("the history archive belongs to another account")]
    WrongAccount,
}

/// An account's conversations and recent messages, as one device hands them to another.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryArchive {
    /// [`ARCHIVE_VERSION`].
    pub version: u32,
    /// The account whose history this is.
    pub username: String,
    /// When the approving device made it (ms since the Unix epoch).
    pub made_at: u64,
    /// Every conversation of the index (left ones too: their history is the account's).
    pub conversations: Vec<ConversationRow>,
    /// Messages, oldest first.
    pub messages: Vec<StoredMessage>,
}

impl std::fmt::Debug for HistoryArchive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Message texts stay out of logs.
        f.debug_struct("HistoryArchive")
            .field("username", &self.username)
            .field("made_at", &self.made_at)
            .field("conversations", &self.conversations.len())
            .field("messages", &self.messages.len())
            .finish_non_exhaustive()
    }
}

/// What [`import`] added.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryImported {
    /// Conversations added to the index.
    pub conversations: usize,
    /// Messages added to the history.
    pub messages: usize,
}

/// How many days of history this device hands a device it approves (0: none).
pub fn history_days<S: ClientStore>(store: &S) -> StoreResult<u32> {
    Ok(store
        .meta(HISTORY_DAYS)?
        .and_then(|d| d.parse().ok())
        .unwrap_or(DEFAULT_HISTORY_DAYS))
}

/// The archive of this device's history for a device of `username` approved at `now`: the
/// conversations, and the messages of the last [`history_days`] days. `None` when the
/// setting says no history.
pub fn export<S: ClientStore>(
    store: &S,
    username: &str,
    now: u64,
) -> StoreResult<Option<HistoryArchive>> {
    let days = history_days(store)?;
    if days == 0 {
        return Ok(None);
    }
    let messages = store.recent_messages(None, cutoff(now, days), MAX_ARCHIVE_MESSAGES)?;
    Ok(Some(HistoryArchive::build(
        username,
        now,
        store.conversations()?,
        messages,
    )))
}

/// Stores an archive [`HistoryArchive::decode`] accepted, in one transaction that also
/// forgets the pending pointer: conversations this device does not know yet, and messages as
/// already shown. Importing the same archive again adds nothing.
pub fn import<S: ClientStore>(
    store: &S,
    archive: &HistoryArchive,
    now: u64,
) -> StoreResult<HistoryImported> {
    store.begin()?;
    let stored = (|| {
        let mut imported = HistoryImported {
            conversations: 0,
            messages: 0,
        };
        for c in &archive.conversations {
            imported.conversations += usize::from(store.insert_conversation(c, now)?);
        }
        for m in &archive.messages {
            imported.messages += usize::from(store.insert_message(m, now, true)?);
        }
        store.delete_meta(PENDING_HISTORY)?;
        Ok(imported)
    })();
    match stored {
        Ok(imported) => {
            store.commit()?;
            Ok(imported)
        }
        Err(e) => {
            store.rollback();
            Err(e)
        }
    }
}

/// The oldest message time (ms) an archive made at `now` with `days` of history takes.
pub fn cutoff(now: u64, days: u32) -> u64 {
    now.saturating_sub(u64::from(days) * DAY_MS)
}

impl HistoryArchive {
    /// The archive of `username`'s history at `now`: `messages` (oldest first, as the store
    /// selected them for the cutoff) made fit to leave this device — capped at the newest
    /// [`MAX_ARCHIVE_MESSAGES`], attachments without their capability, timers fixed in time.
    pub fn build(
        username: &str,
        now: u64,
        conversations: Vec<ConversationRow>,
        mut messages: Vec<StoredMessage>,
    ) -> Self {
        if messages.len() > MAX_ARCHIVE_MESSAGES {
            messages.drain(..messages.len() - MAX_ARCHIVE_MESSAGES);
        }
        messages.retain(|m| !matches!(m.kind.as_str(), "read" | "delivered"));
        for m in &mut messages {
            strip_capability(m);
            if m.expires_at.is_none()
                && let Some(secs) = m.expires_after_secs
            {
                m.expires_at = Some(now.saturating_add(u64::from(secs) * 1000));
            }
        }
        Self {
            version: ARCHIVE_VERSION,
            username: username.to_owned(),
            made_at: now,
            conversations,
            messages,
        }
    }

    /// The archive's bytes (JSON), wiped when dropped.
    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(serde_json::to_vec(self).unwrap_or_default())
    }

    /// Reads an archive for `username`'s device, checking what a device of the same account
    /// could still get wrong: the version, the account, the bounds, the ids' shapes, and that
    /// every message belongs to a conversation of the archive. What comes back is ready to
    /// store: conversations inactive (this device joins them when a device of the account adds
    /// it), messages marked outgoing exactly when the account sent them, no attachment
    /// capability.
    pub fn decode(bytes: &[u8], username: &str) -> Result<Self, ArchiveError> {
        if bytes.len() as u64 > MAX_ARCHIVE_BYTES {
            return Err(ArchiveError::TooLarge);
        }
        let mut archive: Self =
            serde_json::from_slice(bytes).map_err(|_| ArchiveError::Malformed)?;
        if archive.version != ARCHIVE_VERSION {
            return Err(ArchiveError::Malformed);
        }
        if archive.username != username {
            return Err(ArchiveError::WrongAccount);
        }
        if archive.messages.len() > MAX_ARCHIVE_MESSAGES {
            return Err(ArchiveError::TooLarge);
        }
        if !archive.conversations.iter().all(|c| is_hex(&c.id, 32)) {
            return Err(ArchiveError::Malformed);
        }
        for c in &mut archive.conversations {
            c.active = false;
        }
        let known = |id: &str| archive.conversations.iter().any(|c| c.id == id);
        if !archive
            .messages
            .iter()
            .all(|m| known(&m.conversation) && is_hex(&m.id, 32) && is_hex(&m.device, 16))
        {
            return Err(ArchiveError::Malformed);
        }
        for m in &mut archive.messages {
            m.outgoing = m.from == username;
            strip_capability(m);
        }
        Ok(archive)
    }
}

/// Drops an attachment's pointer (the blob's read capability and key), keeping what the
/// user sees of it; the file is marked as not on this device.
fn strip_capability(m: &mut StoredMessage) {
    if let Some(a) = m.detail.attachment.as_mut() {
        a.message = nightjar_api::B64(Vec::new());
        a.file = Some(String::new());
    }
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rows::{AttachmentRow, MessageDetail};
    use nightjar_api::B64;

    const NOW: u64 = 1_800_000_000_000;
    const CONV: &str = "0123456789abcdef0123456789abcdef";

    fn message(id: u32, from: &str, kind: &str) -> StoredMessage {
        StoredMessage {
            conversation: CONV.into(),
            id: format!("{id:032x}"),
            from: from.into(),
            device: "00000000000000aa".into(),
            sent_at: NOW - u64::from(id),
            kind: kind.into(),
            text: Some(format!("hello {id}")),
            outgoing: false,
            detail: MessageDetail::default(),
            expires_after_secs: None,
            expires_at: None,
        }
    }

    fn conversation() -> ConversationRow {
        ConversationRow {
            id: CONV.into(),
            kind: "direct".into(),
            name: None,
            peer: Some("bob".into()),
            active: true,
        }
    }

    #[test]
    fn round_trips_and_is_made_ready_to_store() {
        let mut with_file = message(3, "bob", "attachment");
        with_file.detail.attachment = Some(Box::new(AttachmentRow {
            message: B64(vec![1, 2, 3]),
            name: Some("cat.png".into()),
            size: 10,
            media_type: "image/png".into(),
            file: Some("/home/alice/cat.png".into()),
        }));
        let mut timed = message(4, "bob", "text");
        timed.expires_after_secs = Some(60);
        let archive = HistoryArchive::build(
            "alice",
            NOW,
            vec![conversation()],
            vec![
                message(1, "alice", "text"),
                message(2, "bob", "read"),
                with_file,
                timed,
            ],
        );
        assert_eq!(archive.messages.len(), 3, "receipts stay behind");
        let got = HistoryArchive::decode(&archive.encode(), "alice").unwrap();
        assert!(!got.conversations[0].active);
        assert!(got.messages[0].outgoing);
        assert!(!got.messages[1].outgoing);
        let file = got.messages[1].detail.attachment.as_ref().unwrap();
        assert!(file.message.0.is_empty(), "no capability leaves the device");
        assert_eq!(file.file.as_deref(), Some(""));
        assert_eq!(got.messages[2].expires_at, Some(NOW + 60_000));
    }

    #[test]
    fn keeps_the_newest_when_capped() {
        let messages = (0..MAX_ARCHIVE_MESSAGES as u32 + 5)
            .map(|i| message(i, "bob", "text"))
            .collect();
        let archive = HistoryArchive::build("alice", NOW, vec![conversation()], messages);
        assert_eq!(archive.messages.len(), MAX_ARCHIVE_MESSAGES);
        assert_eq!(archive.messages[0].id, format!("{:032x}", 5));
    }

    #[test]
    fn refuses_what_a_device_of_the_account_would_not_make() {
        let archive = HistoryArchive::build(
            "alice",
            NOW,
            vec![conversation()],
            vec![message(1, "bob", "text")],
        );
        assert_eq!(
            HistoryArchive::decode(&archive.encode(), "mallory").unwrap_err(),
            ArchiveError::WrongAccount
        );
        assert_eq!(
            HistoryArchive::decode(b"{", "alice").unwrap_err(),
            ArchiveError::Malformed
        );
        let mut stray = archive.clone();
        stray.messages[0].conversation = "f".repeat(32);
        assert_eq!(
            HistoryArchive::decode(&stray.encode(), "alice").unwrap_err(),
            ArchiveError::Malformed
        );
        let mut other_version = archive.clone();
        other_version.version = 2;
        assert_eq!(
            HistoryArchive::decode(&other_version.encode(), "alice").unwrap_err(),
            ArchiveError::Malformed
        );
        let mut bad_id = archive;
        bad_id.messages[0].id = "../../etc".into();
        assert_eq!(
            HistoryArchive::decode(&bad_id.encode(), "alice").unwrap_err(),
            ArchiveError::Malformed
        );
    }

    #[test]
    fn export_and_import_go_through_any_client_store() {
        use crate::MemoryClientStore;
        let from = MemoryClientStore::new();
        from.upsert_conversation(&conversation(), NOW).unwrap();
        let mut old = message(1, "bob", "text");
        old.sent_at = NOW - 100 * DAY_MS;
        from.insert_message(&old, NOW, true).unwrap();
        from.insert_message(&message(2, "alice", "text"), NOW, true)
            .unwrap();
        let archive = export(&from, "alice", NOW).unwrap().unwrap();
        assert_eq!(archive.messages.len(), 1, "90 days by default");

        let to = MemoryClientStore::new();
        to.set_meta(PENDING_HISTORY, "pointer").unwrap();
        let decoded = HistoryArchive::decode(&archive.encode(), "alice").unwrap();
        let imported = import(&to, &decoded, NOW).unwrap();
        assert_eq!(
            imported,
            HistoryImported {
                conversations: 1,
                messages: 1
            }
        );
        assert_eq!(to.meta(PENDING_HISTORY).unwrap(), None);
        assert!(!to.conversations().unwrap()[0].active);
        assert_eq!(
            to.messages(CONV).unwrap()[0].text.as_deref(),
            Some("hello 2")
        );
        // Again: nothing new.
        let again = import(&to, &decoded, NOW).unwrap();
        assert_eq!(again.messages, 0);

        from.set_meta(HISTORY_DAYS, "0").unwrap();
        assert!(export(&from, "alice", NOW).unwrap().is_none());
    }

    proptest::proptest! {
        /// The archive only ever comes out of a blob that opened under the key the link
        /// bundle carried, but its reader still takes any bytes without a panic.
        #[test]
        fn any_bytes_decode_or_are_refused(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let _ = HistoryArchive::decode(&bytes, "alice");
        }
    }

    #[test]
    fn the_cutoff_counts_days_back() {
        assert_eq!(cutoff(NOW, 1), NOW - DAY_MS);
        assert_eq!(cutoff(5, 1), 0);
    }
}
