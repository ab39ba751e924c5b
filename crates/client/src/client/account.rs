//! Accounts and devices: registration, login of a new device and its approval, device removal,
//! peers' device lists, key packages, safety numbers and status.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use nightjar_api::{
    ApproveDeviceRequest, B64, DeviceInfo, DeviceListUpdate, DeviceStatus, ErrorCode,
    LoginFinishRequest, LoginStartRequest, RegisterFinishRequest, RegisterStartRequest,
    SessionResponse, UploadKeyPackagesRequest,
};
use nightjar_core::identity::{DeviceId, SignedDeviceList, validate_username};
use nightjar_core::provisioning::{LinkCompleted, LinkOffer};
use nightjar_core::safety::SafetyNumber;
use nightjar_core::{Engine, Error as CoreError};

use super::{Client, KEY_PACKAGE_BATCH, meta, now_ms};
use crate::api::Api;
use crate::auth::{self, Password};
use crate::blobs::TransferProgress;
use crate::error::{Error, Result};
use crate::keys::KeyStorage;

/// How often a device checks its key-package stock on the server outside explicit syncs.
pub(crate) const KEY_PACKAGE_CHECK_EVERY_MS: u64 = 10 * 60 * 1000;

/// Whether the key-package stock should be checked at `now`, last checked at `last` (ms).
pub(crate) fn key_package_check_due(last: Option<u64>, now: u64) -> bool {
    last.is_none_or(|last| now.saturating_sub(last) >= KEY_PACKAGE_CHECK_EVERY_MS || now < last)
}

/// What `login` achieved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoginOutcome {
    /// A new device asked to join; show `code` and approve it on an existing device.
    Pending {
        /// The approval code (`XXXX-XXXX-XXXX`).
        code: String,
        /// The new device's id.
        device_id: String,
    },
    /// An already active device got a fresh session.
    Reauthenticated,
}

/// A summary of the profile for `nightjar status`.
#[derive(Clone, Debug)]
pub struct Status {
    /// Profile directory.
    pub profile_dir: PathBuf,
    /// Server URL.
    pub server: Option<String>,
    /// Account.
    pub username: Option<String>,
    /// This device.
    pub device_id: Option<String>,
    /// `active` or `pending`.
    pub device_status: Option<String>,
    /// Where the database key is kept.
    pub key_storage: KeyStorage,
    /// Conversations this device is a member of.
    pub conversations: usize,
    /// Entries waiting in the outbox.
    pub outbox: u64,
    /// Of those, entries the server refused (see `nightjar outbox`).
    pub refused: u64,
    /// Messages in the local history.
    pub messages: u64,
    /// Unclaimed one-time key packages on the server (`None` if it could not be asked).
    pub key_packages: Option<u32>,
    /// Why `key_packages` is unknown.
    pub key_packages_error: Option<String>,
    /// Accounts whose identity key changed and await verification.
    pub changed_identities: Vec<String>,
    /// Accounts whose current identity key the user verified (`nightjar verify`).
    pub verified: Vec<String>,
}

fn session_error(e: Error) -> Error {
    match e.api_code() {
        Some(ErrorCode::WrongCredentials) => Error::WrongPassword,
        Some(ErrorCode::UsernameTaken) => Error::Usage("that username is already taken".into()),
        Some(ErrorCode::InvalidUsername) => {
            Error::Usage("invalid username: use 3-32 characters of a-z, 0-9 and _".into())
        }
        _ => e,
    }
}

impl Client {
    pub(super) fn save_session(&mut self, server: &str, s: &SessionResponse) -> Result<()> {
        self.store.set_meta(meta::SERVER, server)?;
        self.store.set_meta(meta::USERNAME, &s.username)?;
        self.store.set_meta(meta::DEVICE_ID, &s.device_id)?;
        self.store.set_meta(meta::TOKEN, &s.token)?;
        self.store
            .set_meta(meta::TOKEN_EXPIRES, &s.expires_at_ms.to_string())?;
        let status = match s.device_status {
            DeviceStatus::Active => "active",
            DeviceStatus::Pending => "pending",
        };
        self.store.set_meta(meta::DEVICE_STATUS, status)?;
        let mut api = Api::new(server)?;
        api.set_token(Some(s.token.clone()));
        self.api = Some(api);
        Ok(())
    }

    /// Registers a new account on `server` with this profile as its first device: OPAQUE
    /// registration, a fresh account identity and device, device list version 1 and key packages.
    pub async fn register(
        &mut self,
        server: &str,
        username: &str,
        password: &Password,
    ) -> Result<()> {
        if let Some(existing) = self.username() {
            return Err(Error::Profile(format!(
                "this profile already holds the account {existing}; use another --profile"
            )));
        }
        validate_username(username)?;
        let api = Api::new(server)?;
        let (state, request) = auth::registration_start(password)?;
        let response = api
            .register_start(&RegisterStartRequest {
                username: username.to_owned(),
                registration_request: B64(request),
            })
            .await
            .map_err(session_error)?;
        let record = auth::registration_finish(state, password, &response.registration_response.0)?;
        let now = now_ms();
        let (mut engine, list) = Engine::create_account(
            self.store.clone(),
            username,
            self.options.engine.clone(),
            now,
        )?;
        let result = async {
            let key_packages = engine.generate_key_packages(KEY_PACKAGE_BATCH, false)?;
            let last_resort = engine
                .generate_key_packages(1, true)?
                .pop()
                .ok_or_else(|| Error::Protocol("no last-resort key package".into()))?;
            api.register_finish(&RegisterFinishRequest {
                username: username.to_owned(),
                registration_record: B64(record),
                device_id: engine.device().device_id.to_string(),
                device_list: B64(list.encode()),
                key_packages: key_packages.into_iter().map(B64).collect(),
                last_resort_key_package: B64(last_resort),
            })
            .await
            .map_err(session_error)
        }
        .await;
        let session = match result {
            Ok(s) => s,
            Err(e) => {
                drop(engine);
                self.store.wipe()?;
                self.machine = None;
                return Err(e);
            }
        };
        self.machine = Some(nightjar_machine::Machine::new(self.store.clone(), engine));
        self.save_session(server, &session)?;
        self.store.set_meta(meta::KEY_PACKAGES_UPLOADED, "1")?;
        if let Some(list) = self.engine()?.device_list(username) {
            let (key, version) = (list.identity_key, list.version);
            self.store
                .record_contact(username, key.as_bytes(), version, now)?;
        }
        Ok(())
    }

    /// Logs in to `server`. On an empty profile this creates a new device that asks to join
    /// the account (approve it with the returned code on an existing device); on a profile
    /// that already holds this account's device it only renews the session.
    pub async fn login(
        &mut self,
        server: &str,
        username: &str,
        password: &Password,
    ) -> Result<LoginOutcome> {
        validate_username(username)?;
        if let Some(existing) = self.username()
            && existing != username
        {
            return Err(Error::Profile(format!(
                "this profile holds the account {existing}; use another --profile"
            )));
        }
        let api = Api::new(server)?;
        let (state, request) = auth::login_start(password)?;
        let start = api
            .login_start(&LoginStartRequest {
                username: username.to_owned(),
                credential_request: B64(request),
            })
            .await
            .map_err(session_error)?;
        // The password is verified here, before any device state is created.
        let finalization = auth::login_finish(state, password, &start.credential_response.0)?;
        let fresh = self.machine.is_none();
        if fresh {
            let engine =
                Engine::new_device(self.store.clone(), username, self.options.engine.clone())?;
            self.machine = Some(nightjar_machine::Machine::new(self.store.clone(), engine));
        }
        let pending = !self.engine()?.has_account_identity();
        let offer = if pending {
            Some(self.engine()?.link_offer(now_ms())?)
        } else {
            None
        };
        let device_id = self.engine()?.device().device_id.to_string();
        // An existing device proves it holds its key: the server gives a password alone no
        // session on an existing device.
        let device_signature = if fresh {
            None
        } else {
            Some(B64(self
                .engine()?
                .sign_login_proof(&start.login_id, &start.challenge.0)?))
        };
        let result = api
            .login_finish(&LoginFinishRequest {
                login_id: start.login_id,
                credential_finalization: B64(finalization),
                device_id: device_id.clone(),
                link_offer: offer.as_ref().map(|o| B64(o.encode())),
                device_signature,
            })
            .await
            .map_err(session_error);
        let session = match result {
            Ok(s) => s,
            Err(e) => {
                if fresh {
                    self.machine = None;
                    self.store.wipe()?;
                }
                return Err(e);
            }
        };
        self.save_session(server, &session)?;
        match offer {
            Some(_) if session.device_status == DeviceStatus::Pending => {
                Ok(LoginOutcome::Pending {
                    code: self.approval_code()?,
                    device_id,
                })
            }
            Some(_) => {
                // The server says active but no identity was handed over yet: finish the link.
                self.store.set_meta(meta::DEVICE_STATUS, "pending")?;
                self.check_link().await?;
                Ok(LoginOutcome::Reauthenticated)
            }
            None => Ok(LoginOutcome::Reauthenticated),
        }
    }

    /// The approval code of this (pending) device's link offer.
    pub fn approval_code(&mut self) -> Result<String> {
        let engine = self.engine()?;
        engine.link_offer(now_ms())?;
        Ok(engine.link_code()?.display().to_string())
    }

    /// Whether this device still waits for approval.
    pub fn is_pending(&self) -> Result<bool> {
        Ok(self.store.meta(meta::DEVICE_STATUS)?.as_deref() == Some("pending"))
    }

    /// Asks the server once whether this pending device was approved; if so, installs the
    /// account identity, uploads key packages and returns true.
    pub async fn check_link(&mut self) -> Result<bool> {
        if !self.is_pending()? {
            return Ok(true);
        }
        let status = self.api()?.link_status().await?;
        let Some(sealed) = status.sealed_identity else {
            return Ok(false);
        };
        if status.status != DeviceStatus::Active {
            return Ok(false);
        }
        let now = now_ms();
        self.atomic(|engine, store| {
            // Opens only with this device's code: a bundle the server made is refused.
            let LinkCompleted { contacts, history } = engine.complete_link(&sealed.0)?;
            store.set_meta(meta::DEVICE_STATUS, "active")?;
            if let Some(pointer) = &history {
                // Fetched by `import_history`, which the next commands retry until it is in.
                store.set_meta(
                    nightjar_machine::archive::PENDING_HISTORY,
                    &B64::encode(&pointer.encode()),
                )?;
            }
            let me = engine.device().username.clone();
            // The account's own list and its pinned contacts, as the approving device had them.
            for name in std::iter::once(me).chain(contacts.into_iter().map(|c| c.username)) {
                if let Some(list) = engine.device_list(&name) {
                    store.record_contact(&name, list.identity_key.as_bytes(), list.version, now)?;
                }
            }
            Ok(())
        })?;
        self.upload_initial_key_packages().await?;
        Ok(true)
    }

    /// Waits (polling) until an existing device approves this one, or `timeout` passes.
    pub async fn wait_for_approval(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.check_link().await? {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout(format!(
                    "not approved within {} s; approve later with `nightjar approve CODE` and run any command here",
                    timeout.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    pub(crate) async fn upload_initial_key_packages(&mut self) -> Result<()> {
        let engine = self.engine()?;
        let key_packages = engine.generate_key_packages(KEY_PACKAGE_BATCH, false)?;
        let last_resort = engine.generate_key_packages(1, true)?.pop();
        self.api()?
            .upload_key_packages(&UploadKeyPackagesRequest {
                key_packages: key_packages.into_iter().map(B64).collect(),
                last_resort: last_resort.map(B64),
            })
            .await?;
        self.store.set_meta(meta::KEY_PACKAGES_UPLOADED, "1")?;
        Ok(())
    }

    /// [`Self::replenish_key_packages`] at most every [`KEY_PACKAGE_CHECK_EVERY_MS`] (and on
    /// every explicit sync): other accounts drain the stock slowly, one package per new
    /// conversation, and the last-resort package covers a stock that runs out meanwhile.
    pub(crate) async fn replenish_key_packages_when_due(&mut self) -> Result<()> {
        let now = now_ms();
        let last = self
            .store
            .meta(meta::KEY_PACKAGES_CHECKED)?
            .and_then(|s| s.parse().ok());
        if !key_package_check_due(last, now) {
            return Ok(());
        }
        self.replenish_key_packages().await?;
        self.store
            .set_meta(meta::KEY_PACKAGES_CHECKED, &now.to_string())
    }

    /// Uploads more key packages when the server says the stock is low.
    pub(crate) async fn replenish_key_packages(&mut self) -> Result<()> {
        let count = self.api()?.key_package_count().await?;
        if !count.replenish && count.last_resort {
            return Ok(());
        }
        let engine = self.engine()?;
        let key_packages = if count.replenish {
            engine.generate_key_packages(KEY_PACKAGE_BATCH, false)?
        } else {
            Vec::new()
        };
        let last_resort = if count.last_resort {
            None
        } else {
            engine.generate_key_packages(1, true)?.pop()
        };
        self.api()?
            .upload_key_packages(&UploadKeyPackagesRequest {
                key_packages: key_packages.into_iter().map(B64).collect(),
                last_resort: last_resort.map(B64),
            })
            .await?;
        Ok(())
    }

    /// Approves a pending device of this account whose approval code is `code`: signs the next
    /// device list and seals the account identity to it, with the pointer to the account's
    /// recent history (see [`Self::history_days`]), which it uploads first (`progress` hears
    /// of that). Returns the new device's id. The new device joins this account's
    /// conversations with [`Self::add_approved_devices`], or the next sync.
    pub async fn approve(
        &mut self,
        code: &str,
        progress: &mut dyn FnMut(TransferProgress),
    ) -> Result<String> {
        self.ensure_ready().await?;
        if !self.engine()?.has_account_identity() {
            return Err(Error::Profile(
                "this device cannot approve devices (it holds no account identity key)".into(),
            ));
        }
        let me = self.me()?.username;
        // Learn the newest own list first: another device may have changed it.
        self.fetch_account(&me).await?;
        let pending = self.api()?.pending_devices().await?;
        let offer = pending
            .pending
            .iter()
            .filter_map(|p| LinkOffer::decode(&p.link_offer.0).ok())
            .find(|o| o.matches_code(code) && o.username == me.as_bytes())
            .ok_or_else(|| {
                Error::Usage(format!(
                    "no device waiting for approval has the code {code}"
                ))
            })?;
        let device_id = offer.device.device_id.to_string();
        // The offer matched the code above: only now is anything uploaded.
        let history = self.upload_history(progress).await?;
        self.store.begin()?;
        let signed = match self.engine()?.approve_link(&offer, code, history.as_ref()) {
            Ok(v) => v,
            Err(e) => {
                self.store.rollback();
                self.reload()?;
                return Err(e.into());
            }
        };
        let (list, sealed) = signed;
        let request = ApproveDeviceRequest {
            device_id: device_id.clone(),
            device_list: B64(list.encode()),
            sealed_identity: B64(sealed),
        };
        let posted = match self.api() {
            Ok(api) => api.approve_device(&request).await,
            Err(e) => Err(e),
        };
        match posted {
            Ok(()) => self.store.commit()?,
            Err(e) => {
                self.store.rollback();
                self.reload()?;
                return Err(e);
            }
        }
        Ok(device_id)
    }

    /// Adds a device just approved to every conversation of the account, so that messages
    /// sent from now on reach it (the history it got runs up to its approval). It can be added
    /// once it uploaded key packages, which it does as soon as it sees the approval: this
    /// waits up to `wait` for that, then leaves it to the next sync of a device of the account
    /// (the machine adds it then). Whether every conversation has it.
    pub async fn add_approved_devices(&mut self, wait: Duration) -> Result<bool> {
        let deadline = Instant::now() + wait;
        loop {
            self.machine()?.reconcile_now()?;
            self.pump_tolerant().await?;
            if !self.machine()?.own_devices_unsettled()? {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                // Not waiting for the retry timer either: the next sync tries at once.
                self.machine()?.reconcile_now()?;
                return Ok(false);
            }
            // Each try claims key packages of the account's devices: not too often.
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
    }

    /// The account's devices as the server lists them.
    pub async fn devices(&mut self) -> Result<Vec<DeviceInfo>> {
        self.ensure_ready().await?;
        let response = self.api()?.devices().await?;
        let me = self.me()?.username;
        let signed = SignedDeviceList::decode(&response.device_list.0)?;
        // Keep our view of our own list current (and notice a forged one).
        self.accept_list(&me, &signed)?;
        Ok(response.devices)
    }

    /// Removes (revokes) another device of this account: signs a device list without it,
    /// publishes it, and removes the device from every conversation.
    pub async fn remove_device(&mut self, device_id: &str) -> Result<()> {
        self.ensure_ready().await?;
        let id = DeviceId::parse(device_id).ok_or_else(|| {
            Error::Usage(format!("{device_id} is not a device id (16 hex digits)"))
        })?;
        if self.me()?.device_id == id {
            return Err(Error::Usage(
                "this is the current device; remove it from another device of the account".into(),
            ));
        }
        // First process what the device did while it was still listed (a commit of its own
        // is valid until the list without it exists): dropped afterwards, it would leave this
        // device behind the server's epoch.
        self.pump_tolerant().await?;
        let me = self.me()?.username;
        self.fetch_account(&me).await?;
        self.store.begin()?;
        let list = match self.engine()?.revoke_device(id) {
            Ok(l) => l,
            Err(e) => {
                self.store.rollback();
                self.reload()?;
                return Err(match e {
                    CoreError::Conversation(_) => {
                        Error::Usage(format!("{device_id} is not a device of this account"))
                    }
                    other => other.into(),
                });
            }
        };
        let request = DeviceListUpdate {
            device_list: B64(list.encode()),
        };
        let posted = match self.api() {
            Ok(api) => api.remove_device(device_id, &request).await,
            Err(e) => Err(e),
        };
        match posted {
            Ok(()) => self.store.commit()?,
            Err(e) => {
                self.store.rollback();
                self.reload()?;
                return Err(e);
            }
        }
        self.pump_tolerant().await
    }

    /// Accepts `signed` as `username`'s device list; an identity key change is recorded and
    /// surfaced, never accepted silently.
    pub(crate) fn accept_list(&mut self, username: &str, signed: &SignedDeviceList) -> Result<()> {
        let result = self.machine()?.accept_list(now_ms(), username, signed);
        self.take_machine_notifications()?;
        Ok(result?)
    }

    /// Fetches `username`'s current device list from the server and accepts it.
    pub(crate) async fn fetch_account(&mut self, username: &str) -> Result<()> {
        let account = match self.api()?.account(username).await {
            Ok(a) => a,
            Err(e) if e.api_code() == Some(ErrorCode::NotFound) => {
                return Err(Error::Usage(format!("no account named {username}")));
            }
            Err(e) => return Err(e),
        };
        let result = self.machine()?.accept_account(now_ms(), username, &account);
        self.take_machine_notifications()?;
        Ok(result?)
    }

    /// The safety number between this account and `peer`, plus the number a pending
    /// (unverified) identity change of `peer` would give.
    pub async fn safety_number(
        &mut self,
        peer: &str,
    ) -> Result<(SafetyNumber, Option<SafetyNumber>)> {
        self.ensure_ready().await?;
        validate_username(peer)?;
        if self.engine()?.identity_key(peer).is_none() {
            self.fetch_account(peer).await?;
        }
        let view = self.machine()?.safety(peer)?;
        Ok((view.current, view.changed))
    }

    /// Accepts a changed identity key of `peer` after the user verified the new safety number.
    pub async fn trust(&mut self, peer: &str) -> Result<()> {
        self.ensure_ready().await?;
        let bytes = self
            .store
            .contact(peer)?
            .and_then(|c| c.changed_list)
            .ok_or_else(|| Error::Usage(format!("no identity change of {peer} is waiting")))?;
        let signed = SignedDeviceList::decode(&bytes)?;
        self.engine()?.trust_new_identity(peer, &signed)?;
        self.store.set_changed_identity(peer, None, now_ms())?;
        if let Some(list) = self.engine()?.device_list(peer) {
            let (key, version) = (list.identity_key, list.version);
            self.store
                .record_contact(peer, key.as_bytes(), version, now_ms())?;
        }
        self.pump_tolerant().await
    }

    /// A summary of the profile; asks the server for the key-package stock if it can.
    pub async fn status(&mut self) -> Result<Status> {
        let mut status = Status {
            profile_dir: std::fs::canonicalize(&self.dir).unwrap_or_else(|_| self.dir.clone()),
            server: self.store.meta(meta::SERVER)?,
            username: self.username(),
            device_id: self.device_id(),
            device_status: self.store.meta(meta::DEVICE_STATUS)?,
            key_storage: self.key_storage.clone(),
            conversations: self
                .store
                .conversations()?
                .iter()
                .filter(|c| c.active)
                .count(),
            outbox: self.store.outbox_len()?,
            refused: self
                .store
                .outbox()?
                .iter()
                .filter(|r| r.refused.is_some())
                .count() as u64,
            messages: self.store.message_count()?,
            key_packages: None,
            key_packages_error: None,
            changed_identities: self.store.changed_identities()?,
            verified: Vec::new(),
        };
        status.verified = self.verified_contacts()?;
        if self.machine.is_none() {
            return Ok(status);
        }
        match self.api() {
            Ok(api) => match api.key_package_count().await {
                Ok(c) => status.key_packages = Some(c.available),
                Err(e) => status.key_packages_error = Some(e.to_string()),
            },
            Err(e) => status.key_packages_error = Some(e.to_string()),
        }
        Ok(status)
    }
}

#[cfg(test)]
mod stock_tests {
    use super::*;

    #[test]
    fn the_stock_is_checked_when_due_only() {
        let t = 1_800_000_000_000;
        assert!(key_package_check_due(None, t));
        assert!(!key_package_check_due(Some(t), t));
        assert!(!key_package_check_due(
            Some(t),
            t + KEY_PACKAGE_CHECK_EVERY_MS - 1
        ));
        assert!(key_package_check_due(
            Some(t),
            t + KEY_PACKAGE_CHECK_EVERY_MS
        ));
        // A clock that went back does not postpone the check for long.
        assert!(key_package_check_due(Some(t), t - 1));
    }
}
