//! Device authentication from the client's side: signing in with the device key (no
//! password), the account's sessions, and verification marks on contacts.

use nightjar_api::{B64, DeviceLoginFinishRequest, DeviceLoginStartRequest, SessionInfo};
use nightjar_core::identity::validate_username;

use super::{Client, meta};
use crate::api::Api;
use crate::error::{Error, Result};

impl Client {
    /// Whether this profile holds a device of an account (active or pending), which can sign
    /// in with its own key.
    pub fn has_device(&self) -> bool {
        self.machine.is_some()
    }

    /// Signs this profile's device in to `server` with its device key alone: the server's fresh
    /// challenge, signed. No password is involved, so password rate limits never stop it.
    pub async fn sign_in_with_device_key(&mut self, server: &str) -> Result<()> {
        let me = self.me()?;
        let api = Api::new(server)?;
        let start = api
            .device_login_start(&DeviceLoginStartRequest {
                username: me.username.clone(),
                device_id: me.device_id.to_string(),
            })
            .await?;
        let signature = self
            .engine()?
            .sign_login_proof(&start.login_id, &start.challenge.0)?;
        let session = api
            .device_login_finish(&DeviceLoginFinishRequest {
                login_id: start.login_id,
                device_signature: B64(signature),
            })
            .await?;
        self.save_session(server, &session)
    }

    /// The account's sessions, the current one marked.
    pub async fn sessions(&mut self) -> Result<Vec<SessionInfo>> {
        self.ensure_ready().await?;
        Ok(self.api()?.sessions().await?.sessions)
    }

    /// Revokes every session of the account but this one; returns how many were revoked.
    /// Other devices sign in again with their device keys.
    pub async fn revoke_other_sessions(&mut self) -> Result<u64> {
        self.ensure_ready().await?;
        Ok(self.api()?.revoke_other_sessions().await?.revoked)
    }

    /// Marks `peer`'s current identity key as verified, after the user compared safety
    /// numbers. The mark lapses when the key changes, and is handed to devices this one
    /// approves.
    pub async fn verify(&mut self, peer: &str) -> Result<()> {
        self.ensure_ready().await?;
        validate_username(peer)?;
        if self.engine()?.identity_key(peer).is_none() {
            self.fetch_account(peer).await?;
        }
        if self
            .store
            .contact(peer)?
            .and_then(|c| c.changed_list)
            .is_some()
        {
            return Err(Error::Usage(format!(
                "the identity key of {peer} changed; compare the new safety number, run `nightjar trust {peer}`, then verify"
            )));
        }
        let now = super::now_ms();
        self.atomic(|engine, store| {
            engine.mark_verified(peer)?;
            if let Some(list) = engine.device_list(peer) {
                store.record_contact(peer, list.identity_key.as_bytes(), list.version, now)?;
            }
            Ok(())
        })
    }

    /// Whether the user verified `peer`'s current identity key.
    pub fn is_verified(&mut self, peer: &str) -> Result<bool> {
        Ok(self.engine()?.is_verified(peer)?)
    }

    /// Accounts whose current identity key the user verified.
    pub(crate) fn verified_contacts(&mut self) -> Result<Vec<String>> {
        let Some(machine) = self.machine.as_mut() else {
            return Ok(Vec::new());
        };
        let engine = machine.engine();
        let mut names: Vec<String> = engine
            .pinned_contacts()?
            .into_iter()
            .filter(|c| c.verified)
            .map(|c| c.username)
            .collect();
        names.sort();
        Ok(names)
    }

    /// The server this profile uses.
    pub fn server(&self) -> Result<String> {
        self.store
            .meta(meta::SERVER)?
            .ok_or_else(|| Error::Profile("this profile has no server configured".into()))
    }
}
