//! The setup cache (`--state FILE`): accounts, their session tokens and the conversations
//! created on one server data directory, so a second run against it skips registration.
//!
//! The file holds bearer tokens of throw-away benchmark accounts; keep it next to the server's
//! data directory and delete both together.

use std::path::Path;

use nightjar_api::DeviceAddress;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Version of the file layout; a different one is refused rather than misread.
const FORMAT: u32 = 1;

/// One registered device: an account of its own with one active device and a session.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct DeviceRecord {
    /// The account.
    pub(crate) username: String,
    /// The device id (16 hex digits).
    pub(crate) device_id: String,
    /// Its session token.
    pub(crate) token: String,
}

impl DeviceRecord {
    /// The device's routing address.
    pub(crate) fn address(&self) -> DeviceAddress {
        DeviceAddress {
            username: self.username.clone(),
            device_id: self.device_id.clone(),
        }
    }
}

/// A conversation created through the server by a real engine.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ConversationRecord {
    /// Conversation id (32 hex digits).
    pub(crate) id: String,
    /// The server's epoch for it after creation.
    pub(crate) epoch: u64,
    /// Member devices, as indices into [`SetupState::devices`]; the first created it.
    pub(crate) members: Vec<usize>,
}

/// Everything setup created on one server.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct SetupState {
    /// File layout version.
    pub(crate) format: u32,
    /// Random prefix of this state's usernames, so several states can share a server.
    pub(crate) tag: String,
    /// Every device registered.
    pub(crate) devices: Vec<DeviceRecord>,
    /// Every conversation created.
    pub(crate) conversations: Vec<ConversationRecord>,
}

impl SetupState {
    /// An empty state with a fresh random username prefix.
    pub(crate) fn new() -> Result<Self> {
        let mut bytes = [0u8; 4];
        rand_core::RngCore::try_fill_bytes(&mut rand_core::OsRng, &mut bytes)
            .map_err(|e| Error::other(format!("no randomness: {e}")))?;
        let tag = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Ok(Self {
            format: FORMAT,
            tag,
            devices: Vec::new(),
            conversations: Vec::new(),
        })
    }

    /// Reads `path`, or starts empty when it does not exist.
    pub(crate) fn load_or_new(path: Option<&Path>) -> Result<Self> {
        let Some(path) = path else {
            return Self::new();
        };
        match std::fs::read(path) {
            Ok(bytes) => {
                let state: Self = serde_json::from_slice(&bytes)?;
                if state.format != FORMAT {
                    return Err(Error::other(format!(
                        "{}: state format {} (this build reads {FORMAT}); delete it and the \
                         server data directory",
                        path.display(),
                        state.format
                    )));
                }
                Ok(state)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::new(),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes the state atomically (temporary file, then rename).
    pub(crate) fn save(&self, path: &Path) -> Result<()> {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec(self)?)?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }

    /// Conversations with exactly `group_size` members, in creation order.
    pub(crate) fn conversations_of(&self, group_size: usize) -> Vec<&ConversationRecord> {
        self.conversations
            .iter()
            .filter(|c| c.members.len() == group_size)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn round_trip_through_a_file() {
        let dir = std::env::temp_dir().join(format!("nj-loadgen-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.json");
        let mut state = SetupState::load_or_new(Some(&path)).unwrap();
        assert_eq!(state.tag.len(), 8);
        state.devices.push(DeviceRecord {
            username: "a".into(),
            device_id: "0000000000000001".into(),
            token: "t".into(),
        });
        state.conversations.push(ConversationRecord {
            id: "00".repeat(16),
            epoch: 1,
            members: vec![0, 0],
        });
        state.save(&path).unwrap();
        let back = SetupState::load_or_new(Some(&path)).unwrap();
        assert_eq!(back.tag, state.tag);
        assert_eq!(back.conversations_of(2).len(), 1);
        assert!(back.conversations_of(3).is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
