//! Message requests on this device: listing them, accepting, blocking, unblocking and
//! reporting accounts. Decisions are the server's (it enforces them); this device keeps a copy
//! to decide which incoming messages to hold back as requests (see `store/consent.rs`).

use nightjar_api::{ConsentState, ReportRequest};
use nightjar_core::content::MessageId;
use serde::Serialize;

use super::{Client, now_ms};
use crate::error::{Error, Result};
use crate::store::Consent;

/// A pending message request: an account this one has not accepted, in a conversation this
/// one has not accepted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MessageRequest {
    /// The account asking.
    pub from: String,
    /// The conversation (32 hex digits).
    pub conversation: String,
    /// The group name, for group conversations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Messages held back.
    pub messages: u64,
    /// The latest held message's text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preview: Option<String>,
}

impl Client {
    /// Fetches what is waiting, then lists pending message requests.
    pub async fn requests(&mut self) -> Result<Vec<MessageRequest>> {
        self.ensure_ready().await?;
        self.pump_tolerant().await?;
        self.refresh_consent().await?;
        let rows = self.store.conversations()?;
        let group = |id: &str| {
            rows.iter()
                .find(|c| c.id == id && c.kind == "group")
                .and_then(|c| c.name.clone())
        };
        let mut requests: Vec<MessageRequest> = self
            .store
            .held_messages()?
            .into_iter()
            .map(|h| MessageRequest {
                group: group(&h.conversation),
                from: h.from,
                conversation: h.conversation,
                messages: h.count,
                preview: h.latest,
            })
            .collect();
        for (conversation, inviter) in self.store.pending_conversations()? {
            if !requests.iter().any(|r| r.conversation == conversation) {
                requests.push(MessageRequest {
                    group: group(&conversation),
                    from: inviter,
                    conversation,
                    messages: 0,
                    preview: None,
                });
            }
        }
        Ok(requests)
    }

    /// Accepts `username`: the server delivers its messages without limit, and its held
    /// messages (and those of conversations it added this account to) show on the next sync.
    pub async fn accept(&mut self, username: &str) -> Result<()> {
        self.decide(username, Some(ConsentState::Accepted)).await
    }

    /// Blocks `username`: the server refuses its messages to this account; its commits still
    /// reach shared groups so they keep working.
    pub async fn block(&mut self, username: &str) -> Result<()> {
        self.decide(username, Some(ConsentState::Blocked)).await
    }

    /// Forgets a block (or acceptance) of `username`: it is a stranger again, whose new
    /// messages arrive as a message request.
    pub async fn unblock(&mut self, username: &str) -> Result<()> {
        self.decide(username, None).await
    }

    /// Reports `username` to the server and blocks it. The report holds who reported whom,
    /// when, the 1:1 conversation with them if there is one, and `reason` if given (the
    /// user's own words): never message content unless the user typed it into `reason`.
    pub async fn report_account(&mut self, username: &str, reason: Option<&str>) -> Result<()> {
        self.check_account(username)?;
        self.ensure_ready().await?;
        let conversation = self.direct_conversation(username)?;
        self.api()?
            .report(&ReportRequest {
                username: username.to_owned(),
                conversation_id: conversation,
                reason: reason.map(str::to_owned),
            })
            .await?;
        self.store
            .set_consent(username, Some(Consent::Blocked), now_ms())
    }

    /// Whether `text` names a message of this profile's history (32 hex digits it holds a
    /// message under): `nightjar report` then reports that message, and the account of that
    /// name otherwise (a message id is also a valid username).
    pub fn names_message(&self, text: &str) -> Result<bool> {
        let id = text.trim().to_ascii_lowercase();
        if MessageId::from_hex(&id).is_none() {
            return Ok(false);
        }
        Ok(self.store.find_message(&id)?.is_some())
    }

    /// Reports the message `id` (in this profile's history) to the server operator with the
    /// proof that its sender sent exactly this content (docs/reporting.md): reveals the
    /// message, its franking key and its sender device's signature, and the server's stamp;
    /// `reason` adds the user's own words. Returns the report's id. The sender is not blocked
    /// (`block` does that).
    pub async fn report_message(&mut self, id: &str, reason: Option<&str>) -> Result<u64> {
        let message = self.find_message(id)?;
        let request = message
            .report_request(reason)
            .map_err(|e| Error::Usage(format!("message {}: {e}", message.id)))?;
        self.ensure_ready().await?;
        Ok(self.api()?.report_message(&request).await?.report_id)
    }

    async fn decide(&mut self, username: &str, state: Option<ConsentState>) -> Result<()> {
        self.check_account(username)?;
        self.ensure_ready().await?;
        let api = self.api()?;
        match state {
            Some(state) => api.set_consent(username, state).await?,
            None => api.forget_consent(username).await?,
        }
        let local = state.map(|s| match s {
            ConsentState::Accepted => Consent::Accepted,
            ConsentState::Blocked => Consent::Blocked,
        });
        self.store.set_consent(username, local, now_ms())
    }

    fn check_account(&mut self, username: &str) -> Result<()> {
        nightjar_core::identity::validate_username(username)?;
        if self.me()?.username == username {
            return Err(Error::Usage("that is your own account".into()));
        }
        Ok(())
    }

    /// Makes this device's copy of the account's decisions the server's (another device of
    /// the account may have decided meanwhile).
    pub(crate) async fn refresh_consent(&mut self) -> Result<()> {
        let listed = self.api()?.consent().await?;
        let now = now_ms();
        for (username, _) in self.store.consents()? {
            if !listed.entries.iter().any(|e| e.username == username) {
                self.store.set_consent(&username, None, now)?;
            }
        }
        for entry in listed.entries {
            let consent = match entry.state {
                ConsentState::Accepted => Consent::Accepted,
                ConsentState::Blocked => Consent::Blocked,
            };
            if self.store.consent(&entry.username)? != Some(consent) {
                self.store
                    .set_consent(&entry.username, Some(consent), now)?;
            }
        }
        Ok(())
    }
}
