//! Where the profile database key lives: the OS keyring when there is one, else a key file
//! with mode 0600 beside the database.
//!
//! The choice is made once, when the profile is created, and recorded in `profile.json` (which
//! holds no secret) so a later run never silently switches stores. Setting `NIGHTJAR_KEYRING=off`
//! skips the keyring (tests, headless machines); on a headless Linux machine without a D-Bus
//! secret service the keyring finds no store and the key file is used anyway.

use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// Name of the key file inside the profile directory.
pub const KEY_FILE: &str = "profile.key";
/// Name of the (secret-free) file recording where the key is kept.
pub const PROFILE_FILE: &str = "profile.json";
const KEYRING_SERVICE: &str = "nightjar";
/// How long the keyring may take to answer before it counts as absent.
const KEYRING_TIMEOUT: Duration = Duration::from_secs(5);

/// The 32-byte SQLCipher key of a profile. Never printed; wiped on drop.
pub struct DatabaseKey(Zeroizing<[u8; 32]>);

impl DatabaseKey {
    fn generate() -> Result<Self> {
        let mut key = Zeroizing::new([0u8; 32]);
        getrandom::fill(&mut key[..]).map_err(|e| Error::Key(e.to_string()))?;
        Ok(Self(key))
    }

    fn from_hex(text: &str) -> Result<Self> {
        let text = text.trim();
        if text.len() != 64 {
            return Err(Error::Key("stored key is malformed".into()));
        }
        let mut key = Zeroizing::new([0u8; 32]);
        for (i, b) in key.iter_mut().enumerate() {
            *b = u8::from_str_radix(&text[2 * i..2 * i + 2], 16)
                .map_err(|_| Error::Key("stored key is malformed".into()))?;
        }
        Ok(Self(key))
    }

    /// The key as 64 hex digits (for storage). Built in place, with no temporary copies, in
    /// a buffer wiped on drop.
    pub(crate) fn hex(&self) -> Zeroizing<String> {
        let mut out = Zeroizing::new(String::with_capacity(64));
        push_hex(&mut out, &self.0[..]);
        out
    }

    /// The SQLCipher statement that opens the database with this key (raw-key syntax), in a
    /// buffer sized up front (never reallocated, which would leave a copy behind) and wiped
    /// on drop.
    pub(crate) fn pragma(&self) -> Zeroizing<String> {
        const HEAD: &str = "PRAGMA key = \"x'";
        const TAIL: &str = "'\";";
        let mut out = Zeroizing::new(String::with_capacity(HEAD.len() + 64 + TAIL.len()));
        out.push_str(HEAD);
        push_hex(&mut out, &self.0[..]);
        out.push_str(TAIL);
        out
    }
}

/// Appends `bytes` as lowercase hex to `out` without formatting temporaries.
fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
}

impl fmt::Debug for DatabaseKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DatabaseKey(<redacted>)")
    }
}

/// Where a profile's database key is kept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "key_storage", rename_all = "snake_case")]
pub enum KeyStorage {
    /// In the OS keyring (secret service, keychain, credential manager).
    Keyring {
        /// Keyring service name.
        service: String,
        /// Keyring entry name.
        entry: String,
    },
    /// In a key file readable only by its owner (mode 0600).
    KeyFile {
        /// The file.
        path: PathBuf,
    },
}

impl fmt::Display for KeyStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyStorage::Keyring { service, entry } => {
                write!(f, "OS keyring (service {service}, entry {entry})")
            }
            KeyStorage::KeyFile { path } => write!(f, "key file {} (mode 0600)", path.display()),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct ProfileFile {
    version: u32,
    #[serde(flatten)]
    storage: KeyStorage,
}

/// Whether the environment asks to skip the OS keyring (`NIGHTJAR_KEYRING=off`).
pub fn keyring_disabled_by_env() -> bool {
    std::env::var("NIGHTJAR_KEYRING")
        .map(|v| matches!(v.as_str(), "off" | "0" | "false" | "no"))
        .unwrap_or(false)
}

/// Runs a keyring operation on its own thread with a deadline: a missing D-Bus service can
/// otherwise stall for a long time.
fn with_keyring<T: Send + 'static>(
    entry: &str,
    op: impl FnOnce(&keyring::Entry) -> keyring::Result<T> + Send + 'static,
) -> Option<keyring::Result<T>> {
    let entry = entry.to_owned();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let result = keyring::Entry::new(KEYRING_SERVICE, &entry).and_then(|e| op(&e));
        let _ = tx.send(result);
    });
    rx.recv_timeout(KEYRING_TIMEOUT).ok()
}

/// Stores a fresh key in the keyring and reads it back; `None` when there is no usable keyring.
fn create_in_keyring(entry: &str) -> Option<DatabaseKey> {
    let key = DatabaseKey::generate().ok()?;
    let hex = key.hex();
    let stored = hex.clone();
    with_keyring(entry, move |e| e.set_password(&stored))?.ok()?;
    // Some stores accept a write they cannot keep (mock stores): read it back before trusting it.
    let back = with_keyring(entry, |e| e.get_password())?.ok()?;
    let back = Zeroizing::new(back);
    (back.as_str() == hex.as_str()).then_some(key)
}

fn create_key_file(path: &Path) -> Result<DatabaseKey> {
    let key = DatabaseKey::generate()?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .map_err(|e| Error::Key(format!("cannot create {}: {e}", path.display())))?;
    file.write_all(key.hex().as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::Key(format!("cannot write {}: {e}", path.display())))?;
    Ok(key)
}

fn read_key_file(path: &Path) -> Result<DatabaseKey> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let meta = std::fs::metadata(path)
            .map_err(|e| Error::Key(format!("cannot read {}: {e}", path.display())))?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(Error::Key(format!(
                "{} is readable by others; run `chmod 600 {}`",
                path.display(),
                path.display()
            )));
        }
    }
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .map_err(|e| Error::Key(format!("cannot read {}: {e}", path.display())))?,
    );
    DatabaseKey::from_hex(&text)
}

/// Loads the key of the profile in `dir`, creating one if the profile is new: in the OS keyring
/// when `try_keyring` is set and a keyring answers, else in a 0600 key file. Returns the key and
/// where it is kept.
pub fn load_or_create(dir: &Path, try_keyring: bool) -> Result<(DatabaseKey, KeyStorage)> {
    let profile_file = dir.join(PROFILE_FILE);
    if profile_file.exists() {
        let text = std::fs::read_to_string(&profile_file)
            .map_err(|e| Error::Key(format!("cannot read {}: {e}", profile_file.display())))?;
        let profile: ProfileFile = serde_json::from_str(&text)
            .map_err(|_| Error::Key(format!("{} is malformed", profile_file.display())))?;
        let key = match &profile.storage {
            KeyStorage::KeyFile { path } => read_key_file(path)?,
            KeyStorage::Keyring { entry, .. } => {
                let text = with_keyring(entry, |e| e.get_password())
                    .ok_or_else(|| Error::Key("the OS keyring did not answer".into()))?
                    .map_err(|e| Error::Key(format!("the OS keyring refused: {e}")))?;
                DatabaseKey::from_hex(&Zeroizing::new(text))?
            }
        };
        return Ok((key, profile.storage));
    }
    let key_file = dir.join(KEY_FILE);
    if dir.join(crate::store::DB_FILE).exists() && !key_file.exists() {
        return Err(Error::Key(format!(
            "{} has a database but no record of its key",
            dir.display()
        )));
    }
    let entry = std::fs::canonicalize(dir)
        .unwrap_or_else(|_| dir.to_path_buf())
        .display()
        .to_string();
    let (key, storage) = if key_file.exists() {
        (
            read_key_file(&key_file)?,
            KeyStorage::KeyFile { path: key_file },
        )
    } else if let Some(key) = try_keyring.then(|| create_in_keyring(&entry)).flatten() {
        (
            key,
            KeyStorage::Keyring {
                service: KEYRING_SERVICE.into(),
                entry,
            },
        )
    } else {
        (
            create_key_file(&key_file)?,
            KeyStorage::KeyFile {
                path: std::fs::canonicalize(&key_file).unwrap_or(key_file),
            },
        )
    };
    let record = ProfileFile {
        version: 1,
        storage: storage.clone(),
    };
    std::fs::write(&profile_file, serde_json::to_vec_pretty(&record)?)
        .map_err(|e| Error::Key(format!("cannot write {}: {e}", profile_file.display())))?;
    Ok((key, storage))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(unix)]
    fn key_file_is_owner_only_and_reloads() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let (key, storage) = load_or_create(dir.path(), false).unwrap();
        let KeyStorage::KeyFile { path } = &storage else {
            panic!("expected a key file, got {storage:?}");
        };
        let mode = std::fs::metadata(path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
        // The recorded choice wins over the caller's preference on later runs.
        let (again, storage2) = load_or_create(dir.path(), true).unwrap();
        assert_eq!(storage, storage2);
        assert_eq!(*key.hex(), *again.hex());
        assert_eq!(format!("{key:?}"), "DatabaseKey(<redacted>)");
        // The statement that opens the database holds the key in a wiped buffer, sized
        // exactly (no reallocation left a copy behind).
        let pragma = key.pragma();
        assert_eq!(
            *pragma,
            format!("PRAGMA key = \"x'{}'\";", key.hex().as_str())
        );
        assert_eq!(pragma.capacity(), pragma.len());
        // A key file others can read is refused.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(load_or_create(dir.path(), false).is_err());
    }
}
