//! Conversations: finding or creating a 1:1 conversation, groups (create, add, remove), queueing
//! messages, and keeping this account's own devices in every conversation it is in.

use nightjar_api::ErrorCode;
use nightjar_core::content::Content;
use nightjar_core::{CommitBundle, ConversationId, ConversationKind, Engine};
use nightjar_machine::OperationError;

use super::flush::session_expired;
use super::{Client, now_ms};
use crate::error::{Error, Result};
use crate::store::{ConversationRow, OutboxItem, Store};

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

/// Queues a commit the engine just made (see [`nightjar_machine::enqueue_commit`]).
pub(crate) fn enqueue_commit(
    engine: &mut Engine<Store>,
    store: &Store,
    bundle: &CommitBundle,
) -> Result<()> {
    Ok(nightjar_machine::enqueue_commit(
        engine,
        store,
        bundle,
        now_ms(),
    )?)
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

    /// The pump of a send: the machine reads what arrived first (so the message is encrypted
    /// in the current epoch and reaches devices added meanwhile), then posts the outbox. One
    /// inbox read and one post in the steady state.
    async fn send_pump(&mut self) -> Result<()> {
        self.pump().await.map_err(session_expired)
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
        Ok(self
            .machine()?
            .direct_conversation(peer)?
            .map(|c| c.to_string()))
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
        let op = self
            .machine()?
            .create_conversation(now_ms(), kind, peers, name)?;
        self.drive().await?;
        match self.operations.remove(&op) {
            Some(Ok(conversation)) => Ok(conversation.to_string()),
            Some(Err(OperationError::NoAccount(name))) => {
                Err(Error::Usage(format!("no account named {name}")))
            }
            Some(Err(OperationError::IdentityChanged(name))) => Err(Error::IdentityChanged(name)),
            Some(Err(e)) => Err(Error::Protocol(e.to_string())),
            None => Err(Error::Network(
                "the conversation could not be created: the server did not answer".into(),
            )),
        }
    }

    /// Queues `content` in `conversation` (the machine's one path: the timer in force, the
    /// history row, the checks); its message id.
    fn enqueue_content(&mut self, conversation: &str, content: Content) -> Result<String> {
        let id = ConversationId::parse(conversation)
            .ok_or_else(|| Error::Usage(format!("no conversation {conversation}")))?;
        Ok(self
            .machine()?
            .queue_message(now_ms(), id, content)?
            .to_hex())
    }

    async fn send_text(
        &mut self,
        conversation: &str,
        body: &str,
        offline: Option<Error>,
    ) -> Result<SendOutcome> {
        let content = Content::Text { body: body.into() };
        self.send_content(conversation, content, offline).await
    }

    /// Queues `content` in `conversation` and sends it (it stays queued when the server
    /// cannot be reached).
    pub(crate) async fn send_content(
        &mut self,
        conversation: &str,
        content: Content,
        offline: Option<Error>,
    ) -> Result<SendOutcome> {
        let message_id = self.enqueue_content(conversation, content)?;
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
        let (conversation, offline) = self.open_direct(peer).await?;
        self.send_text(&conversation, body, offline).await
    }

    /// The 1:1 conversation with `peer`, created on first use; with the error that kept the
    /// server from being reached, if it was not (a known conversation needs no server).
    pub(crate) async fn open_direct(&mut self, peer: &str) -> Result<(String, Option<Error>)> {
        self.ensure_ready().await?;
        self.check_peer(peer)?;
        // A known conversation needs no separate sync first: the send's pump reads the inbox
        // before it posts (one inbox read and one post in the steady state).
        if let Some(conversation) = self.direct_conversation(peer)? {
            return Ok((conversation, None));
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
        Ok((conversation, offline))
    }

    /// Sends `body` to a group (by name or conversation id).
    pub async fn send_group(&mut self, group: &str, body: &str) -> Result<SendOutcome> {
        let (conversation, offline) = self.open_group(group).await?;
        self.send_text(&conversation, body, offline).await
    }

    /// A group this device is in (by name or conversation id), as for [`Self::open_direct`].
    pub(crate) async fn open_group(&mut self, group: &str) -> Result<(String, Option<Error>)> {
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
        Ok((row.id, offline))
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

    /// Leaves a group: this account's other devices are removed at once, then this device
    /// asks to leave (see `nightjar_machine::Machine::leave_group`).
    pub async fn leave_group(&mut self, group: &str) -> Result<()> {
        self.ensure_ready().await?;
        self.pump().await?;
        let row = self.resolve_group(group)?;
        let conversation = parse_conversation(&row.id)?;
        self.machine()?.leave_group(now_ms(), conversation)?;
        self.pump_tolerant().await
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
}
