//! History on a new device, and the history a device shows.
//!
//! When a device approves a new one ([`Client::approve`]), it builds the account's
//! [`HistoryArchive`] from its own history (the last [`Client::history_days`] days, at most
//! `nightjar_machine::archive::MAX_ARCHIVE_MESSAGES` messages), encrypts it under a fresh key and uploads it as a blob
//! only the new device will fetch; the blob's pointer (with the key) travels in the link
//! bundle, which only the device showing the link code opens. The new device keeps the pointer
//! in its encrypted profile until the archive is in: [`Client::import_history`] downloads it
//! (resuming a cut-off download; the ciphertext alone touches the disk), checks it against the
//! pointer, and stores its rows as history already shown. A failure that may pass (the
//! network, the server) leaves the pointer for the next command; a blob gone or not verifying
//! is given up with a notice.

use nightjar_api::B64;
use nightjar_core::content::AttachmentPointer;
use nightjar_machine::archive::{
    self, ARCHIVE_MEDIA_TYPE, HISTORY_DAYS, HistoryArchive, HistoryImported, MAX_ARCHIVE_BYTES,
    MAX_HISTORY_DAYS, PENDING_HISTORY,
};

use super::files::may_work_later;
use super::sync::received;
use super::{Client, Destination, ReceivedMessage, now_ms};
use crate::blobs::TransferProgress;
use crate::error::{Error, Result};

impl Client {
    /// How many days of history this device hands a device it approves (0: none).
    pub fn history_days(&self) -> Result<u32> {
        Ok(archive::history_days(&self.store)?)
    }

    /// Sets how many days of history this device hands a device it approves (0: none).
    pub fn set_history_days(&self, days: u32) -> Result<()> {
        if days > MAX_HISTORY_DAYS {
            return Err(Error::Usage(format!(
                "history goes back at most {MAX_HISTORY_DAYS} days"
            )));
        }
        self.store.set_meta(HISTORY_DAYS, &days.to_string())
    }

    /// Builds, encrypts and uploads the history archive for a device being approved; `None`
    /// when the setting says no history.
    pub(crate) async fn upload_history(
        &mut self,
        progress: &mut dyn FnMut(TransferProgress),
    ) -> Result<Option<AttachmentPointer>> {
        let me = self.me()?.username;
        let Some(archive) = archive::export(&self.store, &me, now_ms())? else {
            return Ok(None);
        };
        let bytes = archive.encode();
        drop(archive);
        if bytes.len() as u64 > MAX_ARCHIVE_BYTES {
            return Err(Error::Usage(format!(
                "the history takes more than {} MiB; approve with fewer days \
                 (`nightjar settings --history-days N`)",
                MAX_ARCHIVE_BYTES >> 20
            )));
        }
        // One recipient: the new device. The blob goes once it has the archive.
        let pointer = self
            .upload_bytes(&bytes, ARCHIVE_MEDIA_TYPE, 1, progress)
            .await?;
        Ok(Some(pointer))
    }

    /// Whether history from the approving device waits to be fetched.
    pub fn has_pending_history(&self) -> Result<bool> {
        Ok(self.store.meta(PENDING_HISTORY)?.is_some())
    }

    /// Fetches and stores the history the approving device sent this device, if any waits;
    /// `progress` hears of the download. Returns what it added, or `None` when nothing waited
    /// or the archive is gone for good (then a notice says why).
    pub async fn import_history(
        &mut self,
        progress: &mut dyn FnMut(TransferProgress),
    ) -> Result<Option<HistoryImported>> {
        let Some(encoded) = self.store.meta(PENDING_HISTORY)? else {
            return Ok(None);
        };
        let Some(pointer) = B64::decode(&encoded).and_then(|b| AttachmentPointer::decode(&b).ok())
        else {
            self.store.delete_meta(PENDING_HISTORY)?;
            return Err(Error::Database(
                "the pending history pointer is corrupt".into(),
            ));
        };
        let dir = self.dir.join("transfers");
        let bytes = match self
            .download_bytes(&pointer, &dir, MAX_ARCHIVE_BYTES, progress)
            .await
        {
            Ok(bytes) => bytes,
            Err(e) if may_work_later(&e) || matches!(e, Error::File(_)) => return Err(e),
            Err(e) => {
                self.store.delete_meta(PENDING_HISTORY)?;
                self.notice(format!(
                    "the history the approving device sent could not be fetched ({e}); \
                     this device shows messages from now on"
                ));
                return Ok(None);
            }
        };
        let me = self.me()?.username;
        let archive = match HistoryArchive::decode(&bytes, &me) {
            Ok(archive) => archive,
            Err(e) => {
                self.store.delete_meta(PENDING_HISTORY)?;
                self.notice(format!(
                    "the history the approving device sent was refused: {e}"
                ));
                return Ok(None);
            }
        };
        drop(bytes);
        Ok(Some(archive::import(&self.store, &archive, now_ms())?))
    }

    /// The newest `limit` messages of the history (with one person or group, or all), oldest
    /// first, with the disappeared ones gone first. Conversations this device has left, or not
    /// joined yet (history from the approving device), count too. Receipts are not history.
    pub fn history(
        &mut self,
        with: Option<&Destination>,
        limit: usize,
    ) -> Result<Vec<ReceivedMessage>> {
        self.expire(now_ms())?;
        let rows = self.store.conversations()?;
        let messages = match with {
            None => self.store.recent_messages(None, 0, limit)?,
            Some(with) => {
                let chosen: Vec<&str> = rows
                    .iter()
                    .filter(|c| match with {
                        Destination::User(peer) => {
                            c.kind == "direct" && c.peer.as_deref() == Some(peer.as_str())
                        }
                        Destination::Group(group) => {
                            c.kind == "group"
                                && (c.id == *group || c.name.as_deref() == Some(group.as_str()))
                        }
                    })
                    .map(|c| c.id.as_str())
                    .collect();
                if chosen.is_empty() {
                    return Err(Error::Usage(match with {
                        Destination::User(peer) => format!("no conversation with {peer}"),
                        Destination::Group(group) => format!("no group named {group}"),
                    }));
                }
                let mut all = Vec::new();
                for id in chosen {
                    all.extend(self.store.recent_messages(Some(id), 0, limit)?);
                }
                all.sort_by_key(|m| m.sent_at);
                let extra = all.len().saturating_sub(limit);
                all.drain(..extra);
                all
            }
        };
        Ok(messages.into_iter().map(|m| received(m, &rows)).collect())
    }
}
