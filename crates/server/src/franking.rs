//! Message franking on the server (docs/reporting.md): the key that stamps every franked
//! application message, the stamp itself, the checks a message report must pass, and the
//! moderators' token.
//!
//! The franking key is a secret kept out of the database, like the OPAQUE setup and the
//! directory keys: `franking.key` in the data directory (mode 0600, created on first start),
//! or the file `ServerConfig::franking_key_file` names. Nodes sharing a database must share it:
//! a tag one node made must verify on every other. The database keeps a check value of the key
//! (a hash, which reveals nothing about it), so a node started with another key, or without
//! the file once messages were stamped, refuses to start instead of making every stamped
//! message unreportable.

use std::fmt;
use std::path::{Path, PathBuf};

use nightjar_api::{ErrorCode, FrankingStamp, MessageReportRequest};
use nightjar_core::ConversationId;
use nightjar_core::content::{Content, MAX_MESSAGE_BYTES, Message};
use nightjar_core::franking::{self, Commitment, Committed, FrankingKey, constant_time_eq};
use nightjar_core::identity::{DeviceCredential, DeviceId, validate_username};
use rand_core::{OsRng, RngCore as _};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use crate::config::ServerConfig;
use crate::error::{Error, ServerError};
use crate::secret_files::{create_key_file, read_key_file, read_secret_file};
use crate::store::Store;

/// Name of the key file in the data directory when none is configured.
pub(crate) const KEY_FILE_NAME: &str = "franking.key";

/// Name of the stored check value of the franking key.
const KEY_CHECK: &str = "franking_key_check_v1";

/// Most characters of a report's reason.
pub(crate) const MAX_REASON_CHARS: usize = 1_000;

/// Longest moderator token accepted, in bytes.
const MAX_TOKEN_LEN: usize = 1024;
/// Shortest moderator token accepted, in bytes: it is the only thing guarding the reports.
const MIN_TOKEN_LEN: usize = 16;

/// The server's franking key; wiped on drop, never printed.
#[derive(Debug)]
pub(crate) struct Franker(FrankingKey);

impl Franker {
    /// The tag of `commitment` in `conversation` at `time_ms`: one HMAC-SHA256.
    pub(crate) fn tag(
        &self,
        commitment: &Commitment,
        conversation: ConversationId,
        time_ms: u64,
    ) -> [u8; franking::KEY_LEN] {
        franking::tag(&self.0, commitment, conversation, time_ms)
    }

    /// Checks everything in a message report that needs no database: the request's shape,
    /// the server's tag, and that the key opens the commitment for the content, sender and
    /// conversation named. Returns what the rest of the checks need.
    pub(crate) fn check_report(&self, request: &MessageReportRequest) -> Result<Report, Error> {
        let conversation = ConversationId::parse(&request.conversation_id)
            .ok_or_else(|| Error::bad_request("a conversation id is 32 lowercase hex digits"))?;
        validate_username(&request.sender.username)
            .map_err(|_| Error::bad_request("the sender is not a valid username"))?;
        let device_id = DeviceId::parse(&request.sender.device_id)
            .filter(|d| d.to_string() == request.sender.device_id)
            .ok_or_else(|| Error::bad_request("a device id is 16 lowercase hex digits"))?;
        if request.message.0.len() > MAX_MESSAGE_BYTES {
            return Err(Error::too_large(
                "the message is larger than any message can be",
            ));
        }
        Message::decode(&request.message.0)
            .map_err(|_| Error::bad_request("the message is not an encoded message"))?;
        let key = FrankingKey::from_slice(&request.franking_key.0)
            .ok_or_else(|| Error::bad_request("a franking key is 32 bytes"))?;
        if request.signature.0.len() != franking::SIGNATURE_LEN {
            return Err(Error::bad_request("a franking signature is 64 bytes"));
        }
        let FrankingStamp {
            commitment,
            tag,
            time_ms,
        } = &request.stamp;
        let commitment = Commitment::from_slice(&commitment.0)
            .ok_or_else(|| Error::bad_request("a franking commitment is 32 bytes"))?;
        if tag.0.len() != franking::KEY_LEN {
            return Err(Error::bad_request("a franking tag is 32 bytes"));
        }
        if let Some(reason) = &request.reason
            && reason.chars().count() > MAX_REASON_CHARS
        {
            return Err(Error::too_large(format!(
                "a report's reason holds at most {MAX_REASON_CHARS} characters"
            )));
        }
        // The tag first: without one of ours, nothing else is worth looking at.
        if !franking::verify_tag(&self.0, &commitment, conversation, *time_ms, &tag.0) {
            return Err(Error::new(
                ErrorCode::FrankingTagInvalid,
                "the tag is not this server's stamp on this commitment in this conversation \
                 at this time",
            ));
        }
        let sender = DeviceCredential {
            username: request.sender.username.clone(),
            device_id,
        };
        let committed = Committed {
            conversation,
            sender: &sender,
            message: &request.message.0,
        };
        if !franking::opens(&key, &committed, &commitment) {
            return Err(Error::new(
                ErrorCode::FrankingCommitmentInvalid,
                "the franking key does not open the commitment for this content, sender and \
                 conversation",
            ));
        }
        Ok(Report {
            conversation,
            commitment,
        })
    }
}

/// A message report whose tag and commitment verify; the sender's signature and the
/// reporter's membership are checked against the database.
#[derive(Debug)]
pub(crate) struct Report {
    /// The conversation.
    pub(crate) conversation: ConversationId,
    /// The commitment the stamp covers.
    pub(crate) commitment: Commitment,
}

/// What moderators see of a reported message's content: its kind and its text, if it has one.
pub(crate) fn shown(content: &Content) -> (&'static str, Option<String>) {
    let text = match content {
        Content::Text { body } | Content::Reply { body, .. } | Content::Edit { body, .. } => {
            Some(body.clone())
        }
        Content::Reaction { emoji, .. } => Some(emoji.clone()),
        Content::Attachment(pointer) => pointer.caption.clone(),
        _ => None,
    };
    (content.kind(), text)
}

/// Where the franking key file is for `config`.
fn key_file_path(config: &ServerConfig) -> PathBuf {
    config
        .franking_key_file
        .clone()
        .unwrap_or_else(|| config.data_dir.join(KEY_FILE_NAME))
}

/// What the database keeps to recognise the key: a hash under a context of its own.
fn key_check(key: &FrankingKey) -> Vec<u8> {
    let mut hash = Sha256::new();
    hash.update(b"nightjar franking key check v1\0");
    hash.update(key.as_bytes());
    hash.finalize().to_vec()
}

/// Loads the franking key from its file, creating the file on a server that never stamped a
/// message; refuses a key other than the one the database's nodes use.
pub(crate) async fn load(store: &Store, config: &ServerConfig) -> Result<Franker, ServerError> {
    let path = key_file_path(config);
    let stored = store.server_state(KEY_CHECK).await?;
    let bytes = match read_key_file(&path)? {
        Some(bytes) => bytes,
        None if stored.is_some() => {
            return Err(ServerError::Config(format!(
                "the franking key file {} is missing but this database has a franking key (this \
                 node's file was lost, or another node created it): restore the file, or point \
                 --franking-key-file at the one the other nodes use; a new key would make every \
                 message stamped so far unreportable",
                path.display()
            )));
        }
        None => {
            let mut fresh = Zeroizing::new([0u8; franking::KEY_LEN]);
            OsRng.fill_bytes(fresh.as_mut());
            if create_key_file(&path, fresh.as_ref())? {
                tracing::info!(path = %path.display(), "created the franking key file");
            }
            // Another node may have won the race; read what is there either way.
            read_key_file(&path)?.ok_or(ServerError::Corrupt("franking key file"))?
        }
    };
    let key = FrankingKey::from_slice(&bytes).ok_or(ServerError::Corrupt("franking key file"))?;
    let check = key_check(&key);
    let agreed = store.init_server_state(KEY_CHECK, &check).await?;
    if !constant_time_eq(&agreed, &check) {
        return Err(ServerError::Config(format!(
            "the franking key file {} holds another key than the one this database's messages \
             were stamped with: give every node sharing the database the same file \
             (--franking-key-file)",
            path.display()
        )));
    }
    Ok(Franker(key))
}

/// The moderators' bearer token, as a hash: `GET /v1/moderation/reports` compares the
/// presented token's hash with it in constant time. Never printed.
pub(crate) struct ModeratorToken([u8; 32]);

impl fmt::Debug for ModeratorToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ModeratorToken(<redacted>)")
    }
}

fn token_hash(token: &[u8]) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(b"nightjar moderator token v1\0");
    hash.update(token);
    hash.finalize().into()
}

impl ModeratorToken {
    /// Reads the token from `path`: the file's text without surrounding whitespace, one word
    /// of at least 16 bytes. The error names the file, never its content.
    pub(crate) fn load(path: &Path) -> Result<Self, ServerError> {
        let text = read_secret_file(path, "the moderator token file")?;
        let token = text.trim_ascii();
        let refused = |why: &str| {
            ServerError::Config(format!(
                "the moderator token file {} {why}: it must hold one token of {MIN_TOKEN_LEN} \
                 to {MAX_TOKEN_LEN} printable characters",
                path.display()
            ))
        };
        if token.len() < MIN_TOKEN_LEN {
            return Err(refused("holds too short a token"));
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(refused("is too long"));
        }
        if token
            .iter()
            .any(|b| b.is_ascii_whitespace() || !b.is_ascii_graphic())
        {
            return Err(refused("holds more than one word"));
        }
        Ok(Self(token_hash(token)))
    }

    /// Whether `presented` is the token (compared as hashes, in constant time).
    pub(crate) fn admits(&self, presented: &str) -> bool {
        constant_time_eq(&token_hash(presented.as_bytes()), &self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token_file(content: &[u8]) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut file, content).unwrap();
        file
    }

    #[test]
    fn the_moderator_token_is_one_word_compared_as_a_hash() {
        let file = token_file(b"  correct-horse-battery-staple\n");
        let token = ModeratorToken::load(file.path()).unwrap();
        assert!(token.admits("correct-horse-battery-staple"));
        assert!(!token.admits("correct-horse-battery-stapl"));
        assert!(!token.admits(""));
        assert_eq!(format!("{token:?}"), "ModeratorToken(<redacted>)");
        for bad in [&b"short"[..], b"two words here!!!", b""] {
            let file = token_file(bad);
            assert!(ModeratorToken::load(file.path()).is_err(), "{bad:?}");
        }
        assert!(ModeratorToken::load(Path::new("/nonexistent/token")).is_err());
    }

    #[tokio::test]
    async fn the_key_file_is_created_once_and_must_match_the_database() {
        for store in crate::store::test_support::each_backend("franking_key_file").await {
            let dir = tempfile::tempdir().unwrap();
            let config = ServerConfig {
                data_dir: dir.path().to_path_buf(),
                ..ServerConfig::default()
            };
            let first = load(&store, &config).await.unwrap();
            let path = dir.path().join(KEY_FILE_NAME);
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt as _;
                let mode = std::fs::metadata(&path).unwrap().permissions().mode();
                assert_eq!(mode & 0o777, 0o600);
            }
            // Again: the same key.
            let again = load(&store, &config).await.unwrap();
            let c = Commitment([1; 32]);
            let conversation = ConversationId([2; 16]);
            assert_eq!(
                first.tag(&c, conversation, 5),
                again.tag(&c, conversation, 5)
            );
            // Another node on the same database: without the file it refuses to start (it
            // would otherwise make a key of its own), and with another key file too.
            let elsewhere = tempfile::tempdir().unwrap();
            let other = ServerConfig {
                data_dir: elsewhere.path().to_path_buf(),
                ..ServerConfig::default()
            };
            let refused = load(&store, &other).await.unwrap_err();
            assert!(refused.to_string().contains("missing"), "{refused}");
            create_key_file(&elsewhere.path().join(KEY_FILE_NAME), &[9; 32]).unwrap();
            let refused = load(&store, &other).await.unwrap_err();
            assert!(refused.to_string().contains("another key"), "{refused}");
            // Given the same file, it starts with the same key.
            let shared = ServerConfig {
                franking_key_file: Some(path.clone()),
                ..other
            };
            let same = load(&store, &shared).await.unwrap();
            assert_eq!(
                first.tag(&c, conversation, 5),
                same.tag(&c, conversation, 5)
            );
            // The file lost while the database knows a key: refused, never replaced.
            std::fs::remove_file(&path).unwrap();
            let refused = load(&store, &config).await.unwrap_err();
            assert!(refused.to_string().contains("missing"), "{refused}");
        }
    }
}
