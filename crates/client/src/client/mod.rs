//! [`Client`]: one device's profile, driving the engine against a Nightjar server.
//!
//! Every state change goes through [`Client::atomic`]: the engine call and the SDK's own rows
//! (history, outbox, conversation index) commit in one SQLite transaction; on any failure the
//! transaction is rolled back and the engine is reloaded from disk, so memory never runs ahead
//! of what is stored.

mod account;
mod consent;
mod conversations;
mod device_auth;
mod drive;
mod files;
mod flush;
mod history;
mod rich;
mod sync;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use nightjar_core::identity::DeviceCredential;
use nightjar_core::transparency::SignedRoot;
use nightjar_core::{Engine, EngineConfig};
use nightjar_machine::Machine;

pub use account::{LoginOutcome, Status};
pub use consent::MessageRequest;
pub use conversations::SendOutcome;
pub use rich::{Destination, MAX_TIMER_SECS};
pub use sync::{FollowEvent, FollowOptions, ReceivedMessage, SyncReport};

use crate::api::Api;
use crate::error::{Error, Result};
use crate::keys::{self, KeyStorage};
use crate::store::{DB_FILE, Store};

/// One-time key packages uploaded per batch.
pub const KEY_PACKAGE_BATCH: usize = 20;

/// How long a message missing from a sender's sequence may stay missing (it may still be on
/// its way, or reordered) before sync reports it: see [`Client::set_missing_after`].
pub const DEFAULT_MISSING_AFTER: std::time::Duration = std::time::Duration::from_secs(600);

/// How a profile is opened.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Try the OS keyring for a new profile's database key (else a 0600 key file).
    pub try_keyring: bool,
    /// Engine settings for a new device.
    pub engine: EngineConfig,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            try_keyring: !keys::keyring_disabled_by_env(),
            engine: EngineConfig::default(),
        }
    }
}

pub(crate) mod meta {
    pub(crate) const SERVER: &str = "server";
    pub(crate) const USERNAME: &str = "username";
    pub(crate) const DEVICE_ID: &str = "device_id";
    pub(crate) const TOKEN: &str = "token";
    pub(crate) const TOKEN_EXPIRES: &str = "token_expires_at_ms";
    pub(crate) const DEVICE_STATUS: &str = "device_status";
    pub(crate) const KEY_PACKAGES_UPLOADED: &str = "key_packages_uploaded";
    pub(crate) const KEY_PACKAGES_CHECKED: &str = "key_packages_checked_at_ms";
}

/// A Nightjar device: its encrypted profile, its engine and its server connection.
pub struct Client {
    /// Held for the client's lifetime: one process per profile, so no engine works from a
    /// stale in-memory copy of state another process changed.
    _lock: std::fs::File,
    dir: PathBuf,
    key_storage: KeyStorage,
    store: Store,
    /// The client state machine (with the engine), once the profile holds a device.
    machine: Option<Machine<Store>>,
    api: Option<Api>,
    options: ClientOptions,
    notices: Vec<String>,
    /// How long a gap in a sender's sequence numbers may stay open before it is reported.
    missing_after: std::time::Duration,
    /// How the machine's operations ended, until the caller takes the result.
    operations: std::collections::BTreeMap<
        nightjar_machine::OperationId,
        std::result::Result<nightjar_core::ConversationId, nightjar_machine::OperationError>,
    >,
    /// Read and delivery receipts that arrived and were not reported yet (`sync` reports
    /// them as rows of their own; they are not kept in the history).
    receipts: Vec<ReceivedMessage>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("dir", &self.dir)
            .field("key_storage", &self.key_storage)
            .finish_non_exhaustive()
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Name of the lock file inside the profile directory.
const LOCK_FILE: &str = "profile.lock";
/// How long to wait for another process using the same profile.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

fn lock_profile(dir: &Path) -> Result<std::fs::File> {
    let path = dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::Profile(format!("cannot open {}: {e}", path.display())))?;
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::Profile(format!(
                    "the profile {} is in use by another nightjar process",
                    dir.display()
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(Error::Profile(format!(
                    "cannot lock {}: {e}",
                    path.display()
                )));
            }
        }
    }
}

impl Client {
    /// Opens the profile in `dir`, creating the directory, its key and its database if needed.
    pub fn open(dir: &Path, options: ClientOptions) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::Profile(format!("cannot create {}: {e}", dir.display())))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        }
        let lock = lock_profile(dir)?;
        let (key, key_storage) = keys::load_or_create(dir, options.try_keyring)?;
        let store = Store::open(&dir.join(DB_FILE), &key)?;
        let machine = if store.has_engine_state()? {
            Some(Machine::load(store.clone())?)
        } else {
            None
        };
        let api = match store.meta(meta::SERVER)? {
            Some(url) => {
                let mut api = Api::new(&url)?;
                api.set_token(store.meta(meta::TOKEN)?);
                Some(api)
            }
            None => None,
        };
        Ok(Self {
            _lock: lock,
            dir: dir.to_path_buf(),
            key_storage,
            store,
            machine,
            api,
            options,
            notices: Vec::new(),
            missing_after: DEFAULT_MISSING_AFTER,
            operations: std::collections::BTreeMap::new(),
            receipts: Vec::new(),
        })
    }

    /// The profile directory.
    pub fn profile_dir(&self) -> &Path {
        &self.dir
    }

    /// Where the database key is kept.
    pub fn key_storage(&self) -> &KeyStorage {
        &self.key_storage
    }

    /// The profile database (for inspection and tests).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The account name, once registered or logged in.
    pub fn username(&self) -> Option<String> {
        self.machine.as_ref().map(|m| m.me().username.clone())
    }

    /// This device's id (16 hex digits), once registered or logged in.
    pub fn device_id(&self) -> Option<String> {
        self.machine.as_ref().map(|m| m.me().device_id.to_string())
    }

    /// Things the user should know that happened during the last calls (someone added you to
    /// a group, a message could not be decrypted, an identity key changed). Drains the list.
    pub fn take_notices(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notices)
    }

    /// Sets how long a gap in a sender's sequence numbers (a message the server did not
    /// deliver while it delivered later ones) may stay open before a notice reports it.
    pub fn set_missing_after(&mut self, grace: std::time::Duration) {
        self.missing_after = grace;
    }

    pub(crate) fn notice(&mut self, text: impl Into<String>) {
        self.notices.push(text.into());
    }

    /// The newest key-transparency root this device verified (see `docs/transparency.md`).
    pub fn verified_root(&mut self) -> Result<Option<SignedRoot>> {
        Ok(self.machine()?.verified_root()?)
    }

    /// The version of `username`'s device list this device holds, if it holds one.
    pub fn device_list_version(&mut self, username: &str) -> Result<Option<u64>> {
        Ok(self.engine()?.device_list(username).map(|l| l.version))
    }

    pub(crate) fn engine(&mut self) -> Result<&mut Engine<Store>> {
        Ok(self.machine()?.engine())
    }

    pub(crate) fn machine(&mut self) -> Result<&mut Machine<Store>> {
        self.machine.as_mut().ok_or_else(|| {
            Error::Profile(
                "no account in this profile: run `nightjar register` or `nightjar login` first"
                    .into(),
            )
        })
    }

    pub(crate) fn api(&self) -> Result<&Api> {
        self.api
            .as_ref()
            .ok_or_else(|| Error::Profile("this profile has no server configured".into()))
    }

    pub(crate) fn me(&mut self) -> Result<DeviceCredential> {
        Ok(self.engine()?.device().clone())
    }

    /// Runs `f` with the engine and the store inside one database transaction.
    pub(crate) fn atomic<T>(
        &mut self,
        f: impl FnOnce(&mut Engine<Store>, &Store) -> Result<T>,
    ) -> Result<T> {
        let mut failure = None;
        let result = self.machine()?.atomic(|engine, store| {
            f(engine, store).map_err(|e| {
                let text = nightjar_machine::Error::Usage(e.to_string());
                failure = Some(e);
                text
            })
        });
        match result {
            Ok(value) => Ok(value),
            Err(e) => Err(failure.take().unwrap_or_else(|| e.into())),
        }
    }

    /// Reloads the engine from disk (after a rolled-back transaction).
    pub(crate) fn reload(&mut self) -> Result<()> {
        if let Some(machine) = self.machine.as_mut() {
            machine.reload()?;
        }
        Ok(())
    }

    /// Makes sure the profile has an active device: a pending device checks once whether it
    /// was approved meanwhile (and finishes the link if so).
    pub(crate) async fn ensure_ready(&mut self) -> Result<()> {
        self.engine()?;
        if self.store.meta(meta::DEVICE_STATUS)?.as_deref() == Some("pending") {
            if !self.check_link().await? {
                let code = self.approval_code()?;
                return Err(Error::Profile(format!(
                    "this device is waiting for approval: on a device of this account run `nightjar approve {code}`"
                )));
            }
        } else if self.store.meta(meta::KEY_PACKAGES_UPLOADED)?.as_deref() != Some("1") {
            self.upload_initial_key_packages().await?;
        }
        Ok(())
    }
}
