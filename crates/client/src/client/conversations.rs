//! Conversations: finding or creating a 1:1 conversation, groups (create, add, remove), queueing
//! messages, and keeping this account's own devices in every conversation it is in.

use std::collections::BTreeSet;

use nightjar_api::{B64, ErrorCode};
use nightjar_core::content::{Content, GroupMetadata, MAX_MESSAGE_BYTES, Message, MessageId};
use nightjar_core::identity::DeviceCredential;
use nightjar_core::{CommitBundle, ConversationId, ConversationKind, Engine, Intent};

use super::flush::session_expired;
use super::{Client, address, meta, now_ms, random_hex};
use crate::error::{Error, Result};
use crate::store::{ConversationRow, OutboxItem, OutboxKind, Store, StoredMessage};

/// What happened to a message handed to [`Client::send_direct`] or [`Client::send_group`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendOutcome {
    /// The conversation (32 hex digits).
    pub conversation: String,
    /// The message id (32 hex digits).
    pub message_id: String,
    /// True once the server acknowledged it; false while it waits in the outbox.
    pub delivered: bool,
    /// Why it is still queued, if it is.
    pub queued_because: Option<String>,
}

/// The index row for `conversation` as the engine now sees it. A direct conversation's peer
/// is the engine's: the one other account, fixed when the conversation began and kept by every
/// commit since (never a hint a Welcome or the server could set).
pub(crate) fn conversation_row(
    engine: &mut Engine<Store>,
    conversation: ConversationId,
) -> Result<ConversationRow> {
    let info = engine.conversation(conversation)?;
    let kind = match info.kind {
        ConversationKind::Direct => "direct",
        ConversationKind::Group => "group",
    };
    Ok(ConversationRow {
        id: conversation.to_string(),
        kind: kind.into(),
        name: info.metadata.map(|m| m.name),
        peer: info.peer,
        active: info.active,
    })
}

/// Queues a commit the engine just made (it stays pending in the engine until the verdict).
pub(crate) fn enqueue_commit(
    engine: &mut Engine<Store>,
    store: &Store,
    bundle: &CommitBundle,
) -> Result<()> {
    let info = engine.conversation(bundle.conversation)?;
    let mut members: BTreeSet<DeviceCredential> = info.members.into_iter().collect();
    if let Some(Intent::RemoveDevices { devices }) = &info.pending {
        for d in devices {
            members.remove(d);
        }
    }
    members.extend(bundle.welcome_recipients.iter().cloned());
    let item = OutboxItem::Commit {
        epoch: bundle.epoch,
        commit: B64(bundle.commit.clone()),
        welcome: bundle.welcome.clone().map(B64),
        welcome_recipients: bundle.welcome_recipients.iter().map(address).collect(),
        members: members.iter().map(address).collect(),
        group_info: bundle.group_info.clone().map(B64),
    };
    store.push_outbox(
        &bundle.conversation.to_string(),
        &item,
        &random_hex()?,
        now_ms(),
    )?;
    Ok(())
}

fn parse_conversation(id: &str) -> Result<ConversationId> {
    ConversationId::parse(id).ok_or_else(|| Error::Database(format!("bad conversation id {id}")))
}

impl Client {
    /// Flushes the outbox and syncs, treating an unreachable server as "try again later".
    /// Returns the network error, if there was one.
    pub(crate) async fn pump_offline_ok(&mut self) -> Result<Option<Error>> {
        match self.pump().await {
            Ok(()) => Ok(None),
            // A rate limit longer than a command waits is "later" too: the outbox keeps it.
            Err(e) if e.is_network() || e.api_code() == Some(ErrorCode::RateLimited) => Ok(Some(e)),
            Err(e) => Err(e),
        }
    }

    /// The pump of a send: what arrived first (so the message is encrypted in the current
    /// epoch and reaches devices added meanwhile), then the outbox. One inbox read and one
    /// post in the steady state; a full pump when commits or an epoch race remain.
    async fn send_pump(&mut self) -> Result<()> {
        self.pull().await.map_err(session_expired)?;
        self.reconcile_own_devices().await?;
        let needs_sync = self.flush().await.map_err(session_expired)?;
        let has_commits = self
            .store
            .outbox()?
            .iter()
            .any(|r| r.item.kind() == OutboxKind::Commit);
        if needs_sync || has_commits {
            return self.pump().await;
        }
        self.replenish_key_packages_when_due().await
    }

    /// [`Self::send_pump`], treating an unreachable or rate-limiting server as "later".
    async fn send_pump_offline_ok(&mut self) -> Result<Option<Error>> {
        match self.send_pump().await {
            Ok(()) => Ok(None),
            Err(e) if e.is_network() || e.api_code() == Some(ErrorCode::RateLimited) => Ok(Some(e)),
            Err(e) => Err(e),
        }
    }

    pub(crate) async fn pump_tolerant(&mut self) -> Result<()> {
        if let Some(e) = self.pump_offline_ok().await? {
            self.notice(format!(
                "{e}; queued work will be retried by the next command"
            ));
        }
        Ok(())
    }

    /// The active 1:1 conversation with `peer`, if there is one: a direct conversation whose
    /// member accounts are exactly this account and `peer` (or only this account while its
    /// creating commit waits for the server), as the engine verified them on every Welcome and
    /// commit. If a race made two, the lowest id, so both sides pick the same.
    pub fn direct_conversation(&mut self, peer: &str) -> Result<Option<String>> {
        let me = self.me()?.username;
        let wanted = BTreeSet::from([me.as_str(), peer]);
        let mut found = Vec::new();
        for row in self.store.conversations()? {
            if !row.active || row.kind != "direct" {
                continue;
            }
            let Some(id) = ConversationId::parse(&row.id) else {
                continue;
            };
            let Ok(info) = self.engine()?.conversation(id) else {
                continue;
            };
            let exact = info.kind == ConversationKind::Direct
                && info.active
                && info.peer.as_deref() == Some(peer)
                && info
                    .members
                    .iter()
                    .all(|m| wanted.contains(m.username.as_str()));
            if exact {
                found.push(row.id);
            }
        }
        Ok(found.into_iter().min())
    }

    /// Finds a group by conversation id or by name.
    pub fn resolve_group(&self, group: &str) -> Result<ConversationRow> {
        let rows = self.store.conversations()?;
        if let Some(row) = rows.iter().find(|c| c.id == group && c.kind == "group") {
            return Ok(row.clone());
        }
        let named: Vec<&ConversationRow> = rows
            .iter()
            .filter(|c| c.kind == "group" && c.active && c.name.as_deref() == Some(group))
            .collect();
        match named.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(Error::Usage(format!("no group named {group}"))),
            _ => Err(Error::Usage(format!(
                "several groups are named {group}; use the conversation id ({})",
                named
                    .iter()
                    .map(|c| c.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// Claims one key package for every device of `username` (except this device).
    async fn claim(&mut self, username: &str) -> Result<Vec<Vec<u8>>> {
        let me = self.me()?;
        let claimed = self.api()?.claim_key_packages(username).await?;
        Ok(claimed
            .key_packages
            .into_iter()
            .filter(|k| !(username == me.username && k.device_id == me.device_id.to_string()))
            .map(|k| k.key_package.0)
            .collect())
    }

    fn check_peer(&mut self, peer: &str) -> Result<()> {
        nightjar_core::identity::validate_username(peer)?;
        if self.me()?.username == peer {
            return Err(Error::Usage("that is your own account".into()));
        }
        if self
            .store
            .contact(peer)?
            .is_some_and(|c| c.changed_list.is_some())
        {
            return Err(Error::IdentityChanged(peer.to_owned()));
        }
        Ok(())
    }

    async fn create_conversation(
        &mut self,
        kind: ConversationKind,
        peers: &[String],
        name: Option<&str>,
    ) -> Result<String> {
        let me = self.me()?.username;
        self.fetch_account(&me).await?;
        for peer in peers {
            self.fetch_account(peer).await?;
        }
        let mut key_packages = self.claim(&me).await?;
        for peer in peers {
            key_packages.extend(self.claim(peer).await?);
        }
        let metadata = name.map(|n| GroupMetadata {
            name: n.to_owned(),
            avatar: None,
        });
        let members: Vec<&str> = peers.iter().map(String::as_str).collect();
        let now = now_ms();
        self.atomic(|engine, store| {
            let (conversation, bundle) = engine.create_conversation(
                now,
                kind,
                &members,
                metadata.as_ref(),
                &key_packages,
            )?;
            enqueue_commit(engine, store, &bundle)?;
            let row = conversation_row(engine, conversation)?;
            store.upsert_conversation(&row, now)?;
            Ok(conversation.to_string())
        })
    }

    fn enqueue_message(&mut self, conversation: &str, body: &str) -> Result<String> {
        let message = Message {
            id: MessageId(random_bytes()?),
            sent_at_ms: now_ms(),
            expires_after_secs: None,
            content: Content::Text { body: body.into() },
        };
        let plaintext = message.encode();
        if plaintext.len() > MAX_MESSAGE_BYTES {
            return Err(Error::Usage("the message is too long".into()));
        }
        let me = self.me()?;
        let id = message.id.to_hex();
        let item = OutboxItem::Message {
            plaintext: B64(plaintext),
            message_id: id.clone(),
            ciphertext: None,
            epoch: None,
        };
        let stored = StoredMessage {
            conversation: conversation.to_owned(),
            id: id.clone(),
            from: me.username,
            device: me.device_id.to_string(),
            sent_at: message.sent_at_ms,
            kind: "text".into(),
            text: Some(body.to_owned()),
            outgoing: true,
        };
        let now = now_ms();
        self.atomic(|_, store| {
            store.push_outbox(conversation, &item, &random_hex()?, now)?;
            store.insert_message(&stored, now, true)?;
            // Sending in a conversation accepts it (the server does the same).
            store.accept_conversation(conversation)?;
            Ok(())
        })?;
        Ok(id)
    }

    async fn send_text(
        &mut self,
        conversation: &str,
        body: &str,
        offline: Option<Error>,
    ) -> Result<SendOutcome> {
        let message_id = self.enqueue_message(conversation, body)?;
        let offline = match offline {
            Some(e) => Some(e),
            None => self.send_pump_offline_ok().await?,
        };
        let queued = self.store.outbox()?.into_iter().find(
            |r| matches!(&r.item, OutboxItem::Message { message_id: m, .. } if *m == message_id),
        );
        if let Some(reason) = queued.as_ref().and_then(|r| r.refused.clone()) {
            return Err(Error::Refused(reason));
        }
        let still_queued = queued.is_some();
        Ok(SendOutcome {
            conversation: conversation.to_owned(),
            message_id,
            delivered: !still_queued,
            queued_because: still_queued.then(|| {
                offline.map_or_else(
                    || "the server has not accepted it yet".to_owned(),
                    |e| e.to_string(),
                )
            }),
        })
    }

    /// Sends `body` to `peer` in the 1:1 conversation, creating it on first use. If the server
    /// is unreachable the message stays in the outbox and the next command sends it.
    pub async fn send_direct(&mut self, peer: &str, body: &str) -> Result<SendOutcome> {
        self.ensure_ready().await?;
        self.check_peer(peer)?;
        // A known conversation needs no separate sync first: the send's pump reads the inbox
        // before it posts (one inbox read and one post in the steady state).
        if let Some(conversation) = self.direct_conversation(peer)? {
            return self.send_text(&conversation, body, None).await;
        }
        let offline = self.pump_offline_ok().await?;
        let conversation = match self.direct_conversation(peer)? {
            Some(c) => c,
            None => {
                if let Some(e) = offline {
                    return Err(e);
                }
                self.create_conversation(ConversationKind::Direct, &[peer.to_owned()], None)
                    .await?
            }
        };
        self.send_text(&conversation, body, offline).await
    }

    /// Sends `body` to a group (by name or conversation id).
    pub async fn send_group(&mut self, group: &str, body: &str) -> Result<SendOutcome> {
        self.ensure_ready().await?;
        // As for 1:1: a group this device knows needs no sync before the send.
        let known = self.resolve_group(group).ok().filter(|row| row.active);
        let offline = match known {
            Some(_) => None,
            None => self.pump_offline_ok().await?,
        };
        let row = self.resolve_group(group)?;
        if !row.active {
            return Err(Error::Usage(format!(
                "you are no longer a member of {group}"
            )));
        }
        self.send_text(&row.id, body, offline).await
    }

    /// Creates a group named `name` with every device of `members` and of this account.
    /// Returns the conversation id.
    pub async fn create_group(&mut self, name: &str, members: &[String]) -> Result<String> {
        self.ensure_ready().await?;
        if name.trim().is_empty() {
            return Err(Error::Usage("a group needs a name".into()));
        }
        let mut peers: Vec<String> = Vec::new();
        for m in members {
            self.check_peer(m)?;
            if !peers.contains(m) {
                peers.push(m.clone());
            }
        }
        if peers.is_empty() {
            return Err(Error::Usage("name at least one other account".into()));
        }
        self.pump().await?;
        if let Ok(existing) = self.resolve_group(name) {
            return Err(Error::Usage(format!(
                "a group named {name} already exists (conversation {})",
                existing.id
            )));
        }
        let id = self
            .create_conversation(ConversationKind::Group, &peers, Some(name))
            .await?;
        self.pump_tolerant().await?;
        Ok(id)
    }

    /// Adds every device of `username` to a group.
    pub async fn add_to_group(&mut self, group: &str, username: &str) -> Result<()> {
        self.ensure_ready().await?;
        self.check_peer(username)?;
        self.pump().await?;
        let row = self.resolve_group(group)?;
        let conversation = parse_conversation(&row.id)?;
        self.fetch_account(username).await?;
        let key_packages = self.claim(username).await?;
        self.atomic(|engine, store| {
            let bundle = engine.add_member(conversation, username, &key_packages)?;
            enqueue_commit(engine, store, &bundle)
        })?;
        self.pump().await
    }

    /// Removes every device of `username` from a group.
    pub async fn remove_from_group(&mut self, group: &str, username: &str) -> Result<()> {
        self.ensure_ready().await?;
        self.pump().await?;
        let row = self.resolve_group(group)?;
        let conversation = parse_conversation(&row.id)?;
        self.atomic(|engine, store| {
            let bundle = engine.remove_member(conversation, username)?;
            enqueue_commit(engine, store, &bundle)
        })?;
        self.pump().await
    }

    /// Keeps this account's devices and its conversations in step: a device in the account's
    /// device list but missing from a conversation is added (from a claimed key package), a
    /// conversation member no longer in the list is removed. Any device of the account does
    /// this on sync; a race between two of them is settled by the server's epoch ordering.
    pub(crate) async fn reconcile_own_devices(&mut self) -> Result<()> {
        let me = self.me()?;
        if !self.engine()?.has_account_identity() {
            return Ok(());
        }
        let Some(list) = self.engine()?.device_list(&me.username).cloned() else {
            return Ok(());
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
        let skip_until: u64 = self
            .store
            .meta(meta::RECONCILE_SKIP)?
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let rows = self.store.conversations()?;
        for row in rows
            .into_iter()
            .filter(|r| r.active && !busy.contains(&r.id))
        {
            let conversation = parse_conversation(&row.id)?;
            let Ok(info) = self.engine()?.conversation(conversation) else {
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
            if !revoked.is_empty() {
                self.atomic(|engine, store| {
                    let bundle = engine.remove_devices(conversation, revoked)?;
                    enqueue_commit(engine, store, &bundle)
                })?;
                continue;
            }
            let missing: Vec<DeviceCredential> = listed.difference(&own).cloned().collect();
            if missing.is_empty() || now_ms() < skip_until {
                continue;
            }
            let wanted: BTreeSet<String> =
                missing.iter().map(|m| m.device_id.to_string()).collect();
            let claimed = self.api()?.claim_key_packages(&me.username).await?;
            let key_packages: Vec<Vec<u8>> = claimed
                .key_packages
                .into_iter()
                .filter(|k| wanted.contains(&k.device_id))
                .map(|k| k.key_package.0)
                .collect();
            if key_packages.is_empty() {
                // The new device has not uploaded key packages yet; do not drain ours by
                // claiming again on every command.
                self.store
                    .set_meta(meta::RECONCILE_SKIP, &(now_ms() + 30_000).to_string())?;
                return Ok(());
            }
            let result = self.atomic(|engine, store| {
                let bundle = engine.add_devices(conversation, &key_packages)?;
                enqueue_commit(engine, store, &bundle)
            });
            if let Err(e) = result {
                self.notice(format!(
                    "could not add this account's new device to conversation {}: {e}",
                    row.id
                ));
            }
        }
        Ok(())
    }
}

fn random_bytes() -> Result<[u8; 16]> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| Error::Database(format!("no randomness: {e}")))?;
    Ok(b)
}
