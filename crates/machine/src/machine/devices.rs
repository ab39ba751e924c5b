//! Device lists: accepting a peer's signed list (an identity change is held for the user,
//! never accepted silently), and keeping this account's devices and its conversations in step.

use std::collections::BTreeSet;

use nightjar_core::identity::{DeviceCredential, IdentityError, SignedDeviceList};
use nightjar_core::{ConversationId, Error as CoreError};

use super::outbox::enqueue_commit;
use super::{Machine, Notification, Pending, meta};
use crate::error::{Error, Result};
use crate::rows::OutboxKind;
use crate::store::ClientStore;
use crate::transport::{Failure, Request, Response};

/// How long reconciliation waits before claiming again for a new device that had no key
/// packages (so it does not drain this account's stock on every sync).
const RECONCILE_RETRY_MS: u64 = 10_000;

impl<S: ClientStore> Machine<S> {
    /// Accepts `signed` as `username`'s device list. An identity key change is recorded and
    /// surfaced ([`Notification::IdentityChanged`]), and refused with
    /// [`Error::IdentityChanged`]; an older list than the one known is ignored (the server may
    /// be rolling back).
    pub fn accept_list(
        &mut self,
        now: u64,
        username: &str,
        signed: &SignedDeviceList,
    ) -> Result<()> {
        match self.engine.accept_device_list(username, signed) {
            Ok(_) => {
                if let Some(list) = self.engine.device_list(username).cloned() {
                    if username == self.me.username {
                        self.record_own_list(&list, signed)?;
                    }
                    let (key, version) = (list.identity_key, list.version);
                    self.store
                        .record_contact(username, key.as_bytes(), version, now)?;
                }
                Ok(())
            }
            Err(CoreError::Identity(IdentityError::IdentityChanged(_))) => {
                self.store
                    .set_changed_identity(username, Some(&signed.encode()), now)?;
                self.notifications.push_back(Notification::IdentityChanged {
                    username: username.to_owned(),
                });
                Err(Error::IdentityChanged(username.to_owned()))
            }
            Err(CoreError::Identity(IdentityError::Rollback { .. })) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether a conversation still lacks a device of this account's list, or holds one the
    /// list dropped (a device just approved or removed, before a device of the account
    /// settled it).
    pub fn own_devices_unsettled(&mut self) -> Result<bool> {
        Ok(self.own_device_gap()?.is_some())
    }

    /// Forgets that reconciling waits (after a new device had no key packages yet), so the
    /// next sync tries at once: for a caller that knows the device is about to have them.
    pub fn reconcile_now(&mut self) -> Result<()> {
        self.reconcile_at = None;
        Ok(self.store.delete_meta(meta::RECONCILE_SKIP)?)
    }

    /// The conversations where this account's devices and its device list disagree: devices
    /// to remove (revoked) and devices to add (approved), one conversation per call.
    fn own_device_gap(&mut self) -> Result<Option<DeviceGap>> {
        let me = self.me.clone();
        if !self.engine.has_account_identity() {
            return Ok(None);
        }
        let Some(list) = self.engine.device_list(&me.username).cloned() else {
            return Ok(None);
        };
        let listed: BTreeSet<DeviceCredential> = list
            .devices
            .iter()
            .map(|d| DeviceCredential {
                username: me.username.clone(),
                device_id: d.device_id,
            })
            .collect();
        let busy: BTreeSet<String> = self
            .store
            .outbox()?
            .into_iter()
            .filter(|r| r.item.kind() == OutboxKind::Commit)
            .map(|r| r.conversation)
            .collect();
        for row in self.store.conversations()? {
            if !row.active || busy.contains(&row.id) {
                continue;
            }
            if self
                .store
                .meta(&format!("{}{}", meta::LEAVING, row.id))?
                .is_some()
            {
                continue;
            }
            let Some(conversation) = ConversationId::parse(&row.id) else {
                continue;
            };
            let Ok(info) = self.engine.conversation(conversation) else {
                continue;
            };
            if !info.active || info.pending.is_some() {
                continue;
            }
            let own: BTreeSet<DeviceCredential> = info
                .members
                .iter()
                .filter(|m| m.username == me.username)
                .cloned()
                .collect();
            let revoked: Vec<DeviceCredential> = own.difference(&listed).cloned().collect();
            let missing: Vec<DeviceCredential> = listed.difference(&own).cloned().collect();
            if !revoked.is_empty() || !missing.is_empty() {
                return Ok(Some(DeviceGap {
                    conversation,
                    revoked,
                    missing,
                }));
            }
        }
        Ok(None)
    }

    /// Keeps this account's devices in every conversation it is in: a device in the
    /// account's list but missing from a conversation is added (from a claimed key package),
    /// a member no longer in the list is removed. Any device of the account does this once
    /// its inbox is drained; a race between two of them is settled by the server's epoch
    /// ordering.
    pub(super) fn reconcile_own_devices(&mut self, now: u64) -> Result<()> {
        if self.claiming {
            return Ok(());
        }
        let skip_until: u64 = self
            .store
            .meta(meta::RECONCILE_SKIP)?
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        // Removals need nothing from the server: make them all.
        while let Some(gap) = self.own_device_gap()? {
            if gap.revoked.is_empty() {
                if now >= skip_until {
                    self.claiming = true;
                    self.request(
                        Request::ClaimKeyPackages {
                            username: self.me.username.clone(),
                        },
                        Pending::Claim {
                            conversation: gap.conversation,
                        },
                    );
                }
                return Ok(());
            }
            let conversation = gap.conversation;
            let result = self.atomic(|engine, store| {
                let bundle = engine.remove_devices(conversation, gap.revoked)?;
                enqueue_commit(engine, store, &bundle, now)
            });
            if let Err(e) = result {
                self.notice(format!(
                    "could not remove a revoked device of this account from conversation {conversation}: {e}"
                ));
                return Ok(());
            }
        }
        Ok(())
    }

    /// Key packages claimed for this account's devices missing from `conversation`.
    pub(super) fn on_claimed(
        &mut self,
        now: u64,
        conversation: ConversationId,
        outcome: std::result::Result<Response, Failure>,
    ) -> Result<()> {
        let Ok(Response::Claimed(claimed)) = outcome else {
            self.reconcile_later(now)?;
            return Ok(());
        };
        let Some(gap) = self.own_device_gap()? else {
            return Ok(());
        };
        if gap.conversation != conversation || !gap.revoked.is_empty() {
            // Something changed meanwhile: start over.
            return self.reconcile_own_devices(now);
        }
        let wanted: BTreeSet<String> = gap
            .missing
            .iter()
            .map(|m| m.device_id.to_string())
            .collect();
        let key_packages: Vec<Vec<u8>> = claimed
            .key_packages
            .into_iter()
            .filter(|k| wanted.contains(&k.device_id))
            .map(|k| k.key_package.0)
            .collect();
        if key_packages.is_empty() {
            // The new device has not uploaded key packages yet.
            self.reconcile_later(now)?;
            return Ok(());
        }
        let result = self.atomic(|engine, store| {
            let bundle = engine.add_devices(conversation, &key_packages)?;
            enqueue_commit(engine, store, &bundle, now)
        });
        if let Err(e) = result {
            self.notice(format!(
                "could not add this account's new device to conversation {conversation}: {e}"
            ));
            self.reconcile_later(now)?;
            return Ok(());
        }
        self.reconcile_own_devices(now)
    }

    /// Tries reconciling again after a while (a new device had no key packages yet), whether
    /// or not anything arrives meanwhile.
    fn reconcile_later(&mut self, now: u64) -> Result<()> {
        let at = now + RECONCILE_RETRY_MS;
        self.store.set_meta(meta::RECONCILE_SKIP, &at.to_string())?;
        self.reconcile_at = Some(at);
        Ok(())
    }
}

/// Where this account's devices and one conversation's members disagree.
struct DeviceGap {
    conversation: ConversationId,
    revoked: Vec<DeviceCredential>,
    missing: Vec<DeviceCredential>,
}

/// The safety number with one account, as the user compares it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SafetyView {
    /// The number for the identity key this device trusts.
    pub current: nightjar_core::safety::SafetyNumber,
    /// The number a changed (not yet trusted) identity key would give, if one is waiting.
    pub changed: Option<nightjar_core::safety::SafetyNumber>,
    /// Whether the user verified the trusted key.
    pub verified: bool,
}

impl<S: ClientStore> Machine<S> {
    /// The safety number with `peer` (whose device list this device must know), and the one
    /// a waiting identity change would give.
    pub fn safety(&mut self, peer: &str) -> Result<SafetyView> {
        let current = self.engine.safety_number(peer)?;
        let me = self.me.username.clone();
        let changed = match self.store.contact(peer)?.and_then(|c| c.changed_list) {
            Some(bytes) => {
                let list = SignedDeviceList::decode(&bytes)?.verify()?;
                let mine = self
                    .engine
                    .identity_key(&me)
                    .ok_or_else(|| Error::Usage("this account's device list is unknown".into()))?;
                Some(nightjar_core::safety::SafetyNumber::new(
                    &me,
                    mine.as_bytes(),
                    peer,
                    list.identity_key.as_bytes(),
                ))
            }
            None => None,
        };
        let verified = self.engine.is_verified(peer)?;
        Ok(SafetyView {
            current,
            changed,
            verified,
        })
    }

    /// Marks `peer`'s trusted identity key as verified (the user compared safety numbers).
    pub fn mark_verified(&mut self, peer: &str) -> Result<()> {
        self.atomic(|engine, _| Ok(engine.mark_verified(peer)?))
    }

    /// Whether an identity change of `peer` waits for the user.
    pub fn identity_changed(&self, peer: &str) -> Result<bool> {
        Ok(self
            .store
            .contact(peer)?
            .is_some_and(|c| c.changed_list.is_some()))
    }

    /// Trusts `peer`'s changed identity key after the user verified the new safety number;
    /// the messages held meanwhile are read again.
    pub fn trust(&mut self, now: u64, peer: &str) -> Result<()> {
        let bytes = self
            .store
            .contact(peer)?
            .and_then(|c| c.changed_list)
            .ok_or_else(|| Error::Usage(format!("no identity change of {peer} is waiting")))?;
        let signed = SignedDeviceList::decode(&bytes)?;
        self.atomic(|engine, store| {
            engine.trust_new_identity(peer, &signed)?;
            store.set_changed_identity(peer, None, now)?;
            if let Some(list) = engine.device_list(peer) {
                store.record_contact(peer, list.identity_key.as_bytes(), list.version, now)?;
            }
            Ok(())
        })?;
        self.sync(now);
        Ok(())
    }
}
