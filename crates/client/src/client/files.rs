//! Files in conversations: `send --file` uploads the file encrypted on this device and sends its
//! pointer (key, digest, size, media type) inside an MLS message; `sync` fetches, verifies
//! and decrypts the attachments it shows into the save directory.

use std::path::{Path, PathBuf};

use nightjar_core::ConversationId;
use nightjar_core::content::{Content, Message};

use super::{Client, Destination, ReceivedMessage, SendOutcome};
use crate::blobs::TransferProgress;
use crate::error::{Error, Result};

/// Where `sync` saves attachments unless told otherwise: `files/` in the profile directory.
pub(crate) const FILES_DIR: &str = "files";

impl Client {
    /// Where received files go unless the caller says otherwise: `files/` in the profile.
    pub fn default_files_dir(&self) -> PathBuf {
        self.dir.join(FILES_DIR)
    }

    /// Uploads `path` encrypted and sends it to a person or a group, with an optional
    /// caption. `progress` sees the upload's progress.
    pub async fn send_file(
        &mut self,
        to: &Destination,
        path: &Path,
        caption: Option<&str>,
        progress: &mut dyn FnMut(TransferProgress),
    ) -> Result<SendOutcome> {
        let meta = std::fs::metadata(path)
            .map_err(|e| Error::Usage(format!("cannot read {}: {e}", path.display())))?;
        if !meta.is_file() {
            return Err(Error::Usage(format!("{} is not a file", path.display())));
        }
        let (conversation, offline) = match to {
            Destination::User(peer) => self.open_direct(peer).await?,
            Destination::Group(group) => self.open_group(group).await?,
        };
        if let Some(e) = offline {
            // The file goes to the server first; nothing to queue without it.
            return Err(e);
        }
        let id = ConversationId::parse(&conversation)
            .ok_or_else(|| Error::Usage(format!("no conversation {conversation}")))?;
        let info = self.machine()?.engine().conversation(id)?;
        // Every member device but this one fetches it: the other members' and this
        // account's other devices.
        let recipients =
            u32::try_from(info.members.len().saturating_sub(1).max(1)).unwrap_or(u32::MAX);
        let mut pointer = self
            .upload_attachment(path, None, recipients, progress)
            .await?;
        pointer.caption = caption.map(str::to_owned).filter(|c| !c.is_empty());
        self.send_content(&conversation, Content::Attachment(pointer), None)
            .await
    }

    /// Fetches, verifies and decrypts the attachments among `messages` into `dir` (default
    /// `files/` in the profile), and records where each was saved; then those an earlier
    /// `sync` could not finish (resumed where they stopped), each with a notice. An
    /// attachment that cannot be fetched gets a notice and no file: one the server no longer
    /// has, or that does not verify, for good; one cut off by the network is tried again by
    /// the next `sync`.
    pub async fn save_attachments(
        &mut self,
        messages: &mut [ReceivedMessage],
        dir: Option<&Path>,
        progress: &mut dyn FnMut(TransferProgress),
    ) -> Result<()> {
        let dir: PathBuf = dir.map_or_else(|| self.default_files_dir(), Path::to_path_buf);
        let mut fresh = Vec::new();
        for m in messages.iter_mut() {
            if let Some(attachment) = m.detail.attachment.as_mut()
                && attachment.file.is_none()
            {
                let target = SaveTarget {
                    conversation: m.conversation.clone(),
                    from: m.from.clone(),
                    id: m.id.clone(),
                    name: attachment.name.clone(),
                    message: attachment.message.0.clone(),
                };
                attachment.file = self.save_one(&target, &dir, progress).await?;
                fresh.push(m.id.clone());
            }
        }
        let device = self.device_id().unwrap_or_default();
        for m in self.store.unsaved_attachments(&device)? {
            let Some(attachment) = m.detail.attachment else {
                continue;
            };
            if fresh.contains(&m.id) {
                continue;
            }
            let target = SaveTarget {
                conversation: m.conversation,
                from: m.from,
                id: m.id,
                name: attachment.name,
                message: attachment.message.0,
            };
            if let Some(saved) = self.save_one(&target, &dir, progress).await? {
                self.notice(format!(
                    "saved the file {} from {} as {saved}",
                    target.name.as_deref().unwrap_or("attachment"),
                    target.from
                ));
            }
        }
        Ok(())
    }

    /// Fetches one attachment; where it was saved, or `None` (with a notice) when it could
    /// not be.
    async fn save_one(
        &mut self,
        target: &SaveTarget,
        dir: &Path,
        progress: &mut dyn FnMut(TransferProgress),
    ) -> Result<Option<String>> {
        let name = target.name.as_deref().unwrap_or("attachment");
        let pointer = match Message::decode(&target.message).map(|m| m.content) {
            Ok(Content::Attachment(pointer)) => pointer,
            _ => {
                self.notice(format!("the file {name} from {} is malformed", target.from));
                return Ok(None);
            }
        };
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::Usage(format!("cannot create {}: {e}", dir.display())))?;
        match self.download_attachment(&pointer, dir, progress).await {
            Ok(saved) => {
                let saved = saved.display().to_string();
                self.store.set_attachment_file(
                    &target.conversation,
                    &target.from,
                    &target.id,
                    &saved,
                )?;
                Ok(Some(saved))
            }
            Err(e) if may_work_later(&e) => {
                self.notice(format!(
                    "could not fetch the file {name} from {} now ({e}); the next `nightjar \
                     sync` resumes it",
                    target.from
                ));
                Ok(None)
            }
            Err(e) => {
                // Gone for good: remember that, so it is not tried again.
                self.store.set_attachment_file(
                    &target.conversation,
                    &target.from,
                    &target.id,
                    "",
                )?;
                self.notice(format!(
                    "could not fetch the file {name} from {}: {e}",
                    target.from
                ));
                Ok(None)
            }
        }
    }
}

/// An attachment row to fetch.
struct SaveTarget {
    conversation: String,
    from: String,
    id: String,
    name: Option<String>,
    /// The encoded message carrying the pointer.
    message: Vec<u8>,
}

/// Whether a failed download may work when tried again: what the transfer itself retries
/// (the network, a server error) or a rate limit, as opposed to a blob that is gone or does
/// not verify.
pub(super) fn may_work_later(e: &Error) -> bool {
    crate::blobs::is_transient(e)
        || matches!(e, Error::Api(api) if api.code == nightjar_api::ErrorCode::RateLimited)
}
