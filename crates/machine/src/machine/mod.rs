//! [`Machine`]: one device's client logic, as events in and requests and notifications out.
//!
//! The driver owns the IO. It hands the machine user intents ([`Machine::send_message`]),
//! pushed envelopes ([`Machine::handle_pushed`]), the outcome of every request
//! ([`Machine::handle_response`]) and the time ([`Machine::tick`]); after each call it takes
//! the requests to make ([`Machine::poll_request`]) and the notifications to show
//! ([`Machine::poll_notification`]), and calls [`Machine::tick`] again at
//! [`Machine::next_wakeup`]. Every call takes `now` (ms since the Unix epoch); the machine
//! never reads a clock, never sleeps and never touches a socket.
//!
//! State changes go through [`ClientStore`] transactions: the engine's state and the client's
//! rows (history, outbox, conversation index) commit together or not at all, and an envelope
//! is acknowledged only after its transaction committed. What the machine keeps only in memory
//! (requests in flight, waits) is rebuilt from the store after a restart: an outbox entry
//! posted before a crash is posted again with the same idempotency key, which the server
//! answers as the first time.

mod calling;
mod create;
mod devices;
pub(crate) mod history;
mod inbox;
pub(crate) mod outbox;
mod transparency;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use nightjar_api::{B64, Envelope, ErrorCode};
use nightjar_core::content::{Content, MAX_MESSAGE_BYTES, Message, MessageId};
use nightjar_core::identity::DeviceCredential;
use nightjar_core::{ConversationId, ConversationKind, Engine};

use crate::error::{Error, Result};
use crate::rows::{ConversationRow, OutboxItem, StoredMessage};
use crate::store::ClientStore;
use crate::transport::{Failure, Request, RequestId, Response};

pub use create::{OperationError, OperationId};
pub use devices::SafetyView;
pub use inbox::INBOX_PAGE;

/// Settings keys the machine keeps in the store's settings table.
pub mod meta {
    /// Until when (ms) reconciliation does not claim key packages again for this account's
    /// new devices (they had none).
    pub const RECONCILE_SKIP: &str = "reconcile_skip_until_ms";
    /// `conversation/epoch` a fork was last reported for, per conversation (prefix).
    pub const FORK_REPORTED: &str = "fork_reported/";
    /// Groups this account is leaving, per conversation (prefix): not reconciled any more.
    pub const LEAVING: &str = "leaving/";
    /// The key-transparency directory keys pinned at first use (`root key:VRF key`).
    pub const KT_KEYS: &str = "kt_keys";
    /// The newest directory root verified (`epoch:root:signature`).
    pub const KT_ROOT: &str = "kt_root";
    /// When (ms) this account's directory history was last checked.
    pub const KT_HISTORY_AT: &str = "kt_history_at_ms";
    /// Hashes of this account's device lists this device accepted, per version (prefix).
    pub const KT_OWN_LIST: &str = "kt_own_list/";
    /// Directory entries already reported as not made by this account (`epoch/version`,
    /// prefix), so each alarm is raised once.
    pub const KT_ALARMED: &str = "kt_alarmed/";
    /// Every directory root this device verified, per epoch (prefix; base64 root hash).
    pub const KT_ROOT_AT: &str = "kt_root_at/";
    /// The newest root up to which this device checked the directory's append-only proofs,
    /// from the first root it verified (`epoch:root:signature`).
    pub const KT_CHAIN: &str = "kt_chain";
    /// Conversations in which this device registered a sealed-sender key at least once
    /// (prefix), which accepted the conversation on the server.
    pub const SEALED_JOINED: &str = "sealed_joined/";
}

/// How long a message missing from a sender's sequence may stay missing before it is reported.
pub const DEFAULT_MISSING_AFTER_MS: u64 = 600_000;

/// Something the user should see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notification {
    /// A message was stored in the history (incoming, or sent by another device of this
    /// account).
    Received(StoredMessage),
    /// Someone started or stopped typing.
    Typing {
        /// Where.
        conversation: ConversationId,
        /// Who.
        from: String,
        /// Started (true) or stopped.
        active: bool,
    },
    /// Someone read messages.
    Read {
        /// Where.
        conversation: ConversationId,
        /// Who.
        from: String,
        /// From which of their devices.
        device: String,
        /// The receipt's own message id.
        id: MessageId,
        /// The sender's clock when it sent the receipt (ms since the Unix epoch).
        sent_at: u64,
        /// Which.
        message_ids: Vec<MessageId>,
    },
    /// Someone's device received messages (a delivery receipt).
    Delivered {
        /// Where.
        conversation: ConversationId,
        /// Who.
        from: String,
        /// From which of their devices.
        device: String,
        /// The receipt's own message id.
        id: MessageId,
        /// The sender's clock when it sent the receipt (ms since the Unix epoch).
        sent_at: u64,
        /// Which.
        message_ids: Vec<MessageId>,
    },
    /// The server accepted a queued message (it is durably queued for every recipient).
    Sent {
        /// Where.
        conversation: ConversationId,
        /// Which.
        message_id: MessageId,
    },
    /// The server refused a queued message for good; it stays in the outbox for the user.
    Failed {
        /// Where.
        conversation: ConversationId,
        /// Which.
        message_id: MessageId,
        /// The server's reason.
        reason: String,
    },
    /// An account this one has not accepted wrote (or added this account to a conversation):
    /// its messages are held back until the user accepts it.
    MessageRequest {
        /// Where.
        conversation: ConversationId,
        /// Who.
        from: String,
    },
    /// The identity key of an account changed: messages from and to it are held until the
    /// user verifies the new safety number and trusts it.
    IdentityChanged {
        /// The account.
        username: String,
    },
    /// A conversation's index row changed (created, joined, renamed, members, left).
    ConversationChanged(ConversationId),
    /// An operation ([`Machine::create_conversation`], [`Machine::add_member`]) made its commit;
    /// it is queued, and messages to the conversation may be sent at once.
    Completed {
        /// The operation.
        operation: OperationId,
        /// The conversation.
        conversation: ConversationId,
    },
    /// A multi-request operation failed; nothing was created.
    OperationFailed {
        /// The operation.
        operation: OperationId,
        /// Why.
        reason: OperationError,
    },
    /// A call rang, was answered, trickled a candidate or ended (see [`crate::calls`]).
    Call(crate::calls::CallEvent),
    /// Everything queued on the server was processed.
    Synced,
    /// The session is no longer valid (expired, or this device was removed): log in again.
    SessionExpired,
    /// A sentence for the user (someone added you, an identity key changed, a fork, ...).
    Notice(String),
    /// The key-transparency checks caught the server lying: the directory holds something
    /// for this account that none of its devices made (another identity key, a device list no
    /// device of it signed), shows different roots to different members (a fork), or cannot
    /// prove the device list a peer's messages state (a stale list). Shown prominently.
    TransparencyAlarm(String),
}

/// Why an outbox conversation waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hold {
    /// Until this time (a 429's wait, or a backoff after a server error).
    Until(u64),
    /// Until the inbox has been drained (an epoch race: the winner must be processed first).
    AfterSync,
}

/// What a request in flight was for.
#[derive(Clone, Debug)]
enum Pending {
    /// An outbox entry.
    Post { seq: i64 },
    /// An inbox page.
    Inbox,
    /// Acknowledgements.
    Ack,
    /// A device list the envelope at the front of the queue needs.
    Account { username: String },
    /// Key packages for this account's devices missing from a conversation.
    Claim { conversation: ConversationId },
    /// A device list for a conversation being created.
    CreateAccount { op: OperationId, username: String },
    /// Key packages for a conversation being created.
    CreateClaim { op: OperationId, username: String },
    /// This account's directory history.
    OwnHistory,
    /// The directory's signed root for an epoch a sender stated.
    DirectoryRoot { epoch: u64 },
    /// A page of the directory's epochs, to check that it only grew.
    DirectoryEpochs,
    /// A sealed-sender key registration, made before posting the outbox entry `seq` (if
    /// any).
    Register {
        conversation: ConversationId,
        seq: Option<i64>,
    },
}

/// The state of reading the server's queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pull {
    /// Not reading (pushed envelopes still arrive).
    Idle,
    /// A page was asked for, after this queue id.
    Asking { after: u64 },
    /// A page arrived; the next is asked for after this id once the queue is processed.
    Processing { after: u64 },
}

/// One device's client logic (see the module documentation).
pub struct Machine<S: ClientStore> {
    store: S,
    engine: Engine<S>,
    me: DeviceCredential,
    next_request: u64,
    requests: VecDeque<(RequestId, Request)>,
    notifications: VecDeque<Notification>,
    in_flight: BTreeMap<RequestId, Pending>,
    /// Outbox: whether an entry (or a sealed-key registration) is being posted, waits per
    /// conversation, and a pause of all sending after network failures.
    posting: bool,
    holds: BTreeMap<String, Hold>,
    /// Epoch conflicts in a row, per conversation (reset by an accepted post).
    epoch_conflicts: BTreeMap<String, u32>,
    /// Conversations whose sealed-sender key this device registers before it posts anything
    /// else (after its own commit, or after the server did not know the key).
    registrations_due: BTreeSet<ConversationId>,
    paused_until: Option<u64>,
    network_failures: u32,
    session_expired: bool,
    /// Inbox: envelopes received and not yet processed, in order.
    queue: VecDeque<Envelope>,
    pull: Pull,
    pull_wanted: bool,
    acks: Vec<u64>,
    /// Accounts fetched for the envelope at the front of the queue, and those in flight.
    fetched: BTreeSet<String>,
    fetching: BTreeSet<String>,
    inbox_paused_until: Option<u64>,
    claiming: bool,
    /// When to reconcile this account's devices again without waiting for a sync.
    reconcile_at: Option<u64>,
    missing_after_ms: u64,
    /// Whether peers' device lists need a directory proof.
    require_transparency: bool,
    /// Whether this account's directory history is being fetched.
    checking_history: bool,
    /// What senders stated about their device lists and directory roots, until checked.
    statements: transparency::Statements,
    /// Progress of the check that the directory only grows (append-only proofs).
    chain: transparency::ChainCheck,
    /// Whether stored messages are answered with a delivery receipt, and those waiting for one.
    delivery_receipts: bool,
    delivered: BTreeMap<ConversationId, Vec<MessageId>>,
    /// Conversations being created.
    creations: BTreeMap<OperationId, create::Creation>,
    next_operation: u64,
    /// When the next ringing call runs out.
    call_deadline: Option<u64>,
}

impl<S: ClientStore> std::fmt::Debug for Machine<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Machine")
            .field("me", &self.me)
            .field("in_flight", &self.in_flight.len())
            .field("queue", &self.queue.len())
            .finish_non_exhaustive()
    }
}

/// A fresh random token (idempotency keys) as 32 hex digits.
pub(crate) fn random_hex() -> Result<String> {
    Ok(MessageId(random_bytes()?).to_hex())
}

fn random_bytes() -> Result<[u8; 16]> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| Error::Randomness(e.to_string()))?;
    Ok(b)
}

/// The index row for `conversation` as the engine now sees it. A direct conversation's peer
/// is the engine's: the one other account, fixed when the conversation began and kept by every
/// commit since (never a hint a Welcome or the server could set).
pub fn conversation_row<S: ClientStore>(
    engine: &mut Engine<S>,
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

impl<S: ClientStore> Machine<S> {
    /// The machine of the device whose engine state is in `store`.
    pub fn load(store: S) -> Result<Self> {
        let engine = Engine::load(store.clone())?;
        Ok(Self::new(store, engine))
    }

    /// The machine over an engine the caller just created (registration, a linked device).
    pub fn new(store: S, engine: Engine<S>) -> Self {
        let me = engine.device().clone();
        let call_deadline = calling::load_book(&store)
            .ok()
            .and_then(|b| b.next_deadline());
        Self {
            store,
            engine,
            me,
            next_request: 0,
            requests: VecDeque::new(),
            notifications: VecDeque::new(),
            in_flight: BTreeMap::new(),
            posting: false,
            holds: BTreeMap::new(),
            epoch_conflicts: BTreeMap::new(),
            registrations_due: BTreeSet::new(),
            paused_until: None,
            network_failures: 0,
            session_expired: false,
            queue: VecDeque::new(),
            pull: Pull::Idle,
            pull_wanted: false,
            acks: Vec::new(),
            fetched: BTreeSet::new(),
            fetching: BTreeSet::new(),
            inbox_paused_until: None,
            claiming: false,
            reconcile_at: None,
            missing_after_ms: DEFAULT_MISSING_AFTER_MS,
            require_transparency: true,
            checking_history: false,
            statements: transparency::Statements::default(),
            chain: transparency::ChainCheck::default(),
            delivery_receipts: false,
            delivered: BTreeMap::new(),
            creations: BTreeMap::new(),
            next_operation: 0,
            call_deadline,
        }
    }

    /// This device.
    pub fn me(&self) -> &DeviceCredential {
        &self.me
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The engine, for reads and for operations outside the machine's loop (its writes must
    /// go through [`Self::atomic`]).
    pub fn engine(&mut self) -> &mut Engine<S> {
        &mut self.engine
    }

    /// Answers every stored message (not message requests) with a delivery receipt, one per
    /// conversation for what one read of the inbox brought. Off by default.
    pub fn set_delivery_receipts(&mut self, on: bool) {
        self.delivery_receipts = on;
    }

    /// Sets how long a gap in a sender's sequence numbers may stay open before it is reported.
    pub fn set_missing_after(&mut self, ms: u64) {
        self.missing_after_ms = ms;
    }

    /// Runs `f` with the engine and the store inside one store transaction; on failure the
    /// transaction is rolled back and the engine reloaded, so memory never runs ahead of what
    /// is stored.
    pub fn atomic<T>(&mut self, f: impl FnOnce(&mut Engine<S>, &S) -> Result<T>) -> Result<T> {
        self.store.begin()?;
        match f(&mut self.engine, &self.store) {
            Ok(value) => match self.store.commit() {
                Ok(()) => Ok(value),
                Err(e) => {
                    self.reload()?;
                    Err(e.into())
                }
            },
            Err(e) => {
                self.store.rollback();
                self.reload()?;
                Err(e)
            }
        }
    }

    /// Reloads the engine from the store (after the caller rolled back a transaction of its own).
    pub fn reload(&mut self) -> Result<()> {
        self.engine = Engine::load(self.store.clone())?;
        Ok(())
    }

    /// The next request to make, if any.
    pub fn poll_request(&mut self) -> Option<(RequestId, Request)> {
        self.requests.pop_front()
    }

    /// Whether requests wait to be taken with [`Self::poll_request`].
    pub fn has_requests(&self) -> bool {
        !self.requests.is_empty()
    }

    /// The next thing to show the user, if any.
    pub fn poll_notification(&mut self) -> Option<Notification> {
        self.notifications.pop_front()
    }

    /// When [`Self::tick`] should be called next (a wait ends), if anything waits.
    pub fn next_wakeup(&self) -> Option<u64> {
        let holds = self.holds.values().filter_map(|h| match h {
            Hold::Until(t) => Some(*t),
            Hold::AfterSync => None,
        });
        holds
            .chain(self.paused_until)
            .chain(self.inbox_paused_until)
            .chain(self.reconcile_at)
            .chain(self.call_deadline)
            .chain(self.unproven_wakeup())
            .min()
    }

    /// Whether nothing is left to do before some wait ends: no request in flight or to make,
    /// nothing received unprocessed, no outbox entry that could be posted now.
    pub fn is_settled(&self, now: u64) -> bool {
        self.in_flight.is_empty()
            && self.requests.is_empty()
            && self.queue.is_empty()
            && !self.pull_wanted
            && self.pull == Pull::Idle
            && !self.can_post(now)
    }

    /// Whether the session was refused as expired or revoked (everything waits for a login).
    pub fn session_expired(&self) -> bool {
        self.session_expired
    }

    /// A new session: requests may go out again.
    pub fn session_renewed(&mut self, now: u64) {
        self.session_expired = false;
        self.work(now);
    }

    /// The network is back (the driver saw the connection return): retry at once instead of
    /// waiting for the backoff.
    pub fn online(&mut self, now: u64) {
        self.paused_until = None;
        self.inbox_paused_until = None;
        self.network_failures = 0;
        self.work(now);
    }

    /// Time passed: waits that ended let their work go on.
    pub fn tick(&mut self, now: u64) {
        self.work(now);
    }

    /// Asks for everything queued on the server (after a start, a reconnect, or when told).
    pub fn sync(&mut self, now: u64) {
        self.pull_wanted = true;
        if let Err(e) = self.check_own_history(now) {
            self.notice(format!("local profile error: {e}"));
        }
        self.chain.renew();
        if let Err(e) = self.check_chain() {
            self.notice(format!("local profile error: {e}"));
        }
        self.work(now);
    }

    /// Queues a message and returns its id; it is encrypted and posted as soon as the
    /// conversation allows, and stays queued across restarts until the server accepts it.
    pub fn send_message(
        &mut self,
        now: u64,
        conversation: ConversationId,
        content: Content,
    ) -> Result<MessageId> {
        let id = self.queue_message(now, conversation, content)?;
        self.work(now);
        Ok(id)
    }

    /// Queues a message like [`Self::send_message`] without starting to send it (a driver
    /// that sends at once itself). The conversation's disappearing timer applies; an edit
    /// or delete must be of this account's own message.
    pub fn queue_message(
        &mut self,
        now: u64,
        conversation: ConversationId,
        content: Content,
    ) -> Result<MessageId> {
        let info = self.engine.conversation(conversation)?;
        if !info.active {
            return Err(Error::Usage(
                "this device is no longer a member of that conversation".into(),
            ));
        }
        // Nothing goes to an account whose identity key changed until the user verified it.
        for member in info
            .members
            .iter()
            .map(|m| m.username.as_str())
            .chain(info.peer.as_deref())
        {
            if member != self.me.username
                && self
                    .store
                    .contact(member)?
                    .is_some_and(|c| c.changed_list.is_some())
            {
                return Err(Error::IdentityChanged(member.to_owned()));
            }
        }
        let conversation_text = conversation.to_string();
        // Receipts, typing and call signals are events, not history: no timer for them.
        let expires_after_secs = match content {
            Content::ReadReceipt { .. }
            | Content::DeliveryReceipt { .. }
            | Content::Typing { .. }
            | Content::Call(_)
            | Content::DisappearingTimer { .. } => None,
            _ => history::timer(&self.store, &conversation_text)?,
        };
        let message = Message {
            id: MessageId(random_bytes()?),
            sent_at_ms: now,
            expires_after_secs,
            content,
        };
        let plaintext = message.encode();
        if plaintext.len() > MAX_MESSAGE_BYTES {
            return Err(Error::Usage("the message is too long".into()));
        }
        let id = message.id;
        let item = OutboxItem::Message {
            plaintext: B64(plaintext),
            message_id: id.to_hex(),
            ciphertext: None,
            epoch: None,
            franking_commitment: None,
        };
        let author = history::Author {
            username: &self.me.username,
            device: self.me.device_id.to_string(),
            outgoing: true,
        };
        let row = history::row(&conversation_text, &author, &message);
        self.atomic(|_, store| {
            if let Some(row) = row
                && history::record(store, row, now, true)? == history::Recorded::Refused
            {
                return Err(Error::Usage(
                    "only your own messages can be edited or deleted".into(),
                ));
            }
            store.push_outbox(&conversation_text, &item, &random_hex()?, now)?;
            // Sending in a conversation accepts it (the server does the same).
            store.accept_conversation(&conversation_text)?;
            Ok(())
        })?;
        Ok(id)
    }

    /// Posts the messages the server refused again (the user fixed the cause: was unblocked,
    /// was accepted); how many there were. What is refused again is marked again.
    pub fn retry_refused(&mut self, now: u64) -> Result<u64> {
        let n = self.store.retry_refused()?;
        self.work(now);
        Ok(n)
    }

    /// Queues a commit the engine made in [`Self::atomic`] (see [`outbox::enqueue_commit`])
    /// and goes on.
    pub fn committed(&mut self, now: u64) {
        self.work(now);
    }

    /// Hands back the outcome of a request.
    pub fn handle_response(
        &mut self,
        now: u64,
        id: RequestId,
        outcome: std::result::Result<Response, Failure>,
    ) -> Result<()> {
        let Some(pending) = self.in_flight.remove(&id) else {
            return Ok(());
        };
        if let Err(Failure::Refused(e)) = &outcome
            && e.code == ErrorCode::Unauthorized
        {
            self.session_expired = true;
            self.notifications.push_back(Notification::SessionExpired);
            if let Pending::Post { .. } | Pending::Register { .. } = pending {
                self.posting = false;
            }
            self.release(&pending);
            return Ok(());
        }
        if outcome.is_ok() {
            self.network_failures = 0;
        }
        match pending {
            Pending::Post { seq } => {
                self.posting = false;
                self.on_posted(now, seq, outcome)?;
            }
            Pending::Register { conversation, seq } => {
                self.posting = false;
                self.on_registered(now, conversation, seq, outcome)?;
            }
            Pending::Inbox => self.on_inbox(now, outcome)?,
            Pending::Ack => {}
            Pending::Account { username } => self.on_account(now, &username, outcome)?,
            Pending::OwnHistory => self.on_own_history(now, outcome)?,
            Pending::DirectoryRoot { epoch } => self.on_directory_root(epoch, outcome)?,
            Pending::DirectoryEpochs => self.on_directory_epochs(outcome)?,
            Pending::Claim { conversation } => {
                self.claiming = false;
                self.on_claimed(now, conversation, outcome)?;
            }
            Pending::CreateAccount { op, username } => {
                self.on_create_account(now, op, &username, outcome)?;
            }
            Pending::CreateClaim { op, username } => {
                self.on_create_claim(now, op, &username, outcome)?;
            }
        }
        self.work(now);
        Ok(())
    }

    /// Undoes the in-memory effect of a request that will not be answered as asked.
    fn release(&mut self, pending: &Pending) {
        match pending {
            Pending::Inbox => self.pull = Pull::Idle,
            Pending::Account { username } => {
                self.fetching.remove(username);
            }
            Pending::Claim { .. } => self.claiming = false,
            Pending::CreateAccount { op, .. } | Pending::CreateClaim { op, .. } => {
                self.creations.remove(op);
            }
            Pending::OwnHistory => self.checking_history = false,
            Pending::DirectoryRoot { .. } => self.statements.fetching_root = None,
            Pending::DirectoryEpochs => self.chain.fetching = false,
            Pending::Post { .. } | Pending::Register { .. } | Pending::Ack => {}
        }
    }

    /// Asks for `username`'s account (device list and directory proof), unless its answer is
    /// already awaited.
    fn fetch_account(&mut self, username: &str) {
        if self.fetching.insert(username.to_owned()) {
            self.request(
                Request::Account {
                    username: username.to_owned(),
                },
                Pending::Account {
                    username: username.to_owned(),
                },
            );
        }
    }

    fn request(&mut self, request: Request, pending: Pending) {
        let id = RequestId(self.next_request);
        self.next_request += 1;
        self.in_flight.insert(id, pending);
        self.requests.push_back((id, request));
    }

    fn notice(&mut self, text: impl Into<String>) {
        self.notifications
            .push_back(Notification::Notice(text.into()));
    }

    /// Does whatever can be done now: process what arrived, acknowledge it, read the next
    /// page, reconcile this account's devices once the inbox is drained, post the outbox.
    fn work(&mut self, now: u64) {
        if self.session_expired {
            return;
        }
        if let Err(e) = self.work_inner(now) {
            self.notice(format!("local profile error: {e}"));
        }
    }

    fn work_inner(&mut self, now: u64) -> Result<()> {
        self.expire_waits(now);
        if self.reconcile_at.is_some_and(|t| t <= now) {
            self.reconcile_at = None;
            self.reconcile_own_devices(now)?;
        }
        self.process_queue(now)?;
        self.expire_calls(now)?;
        self.ask_again_for_unproven(now);
        self.send_acks();
        self.advance_pull(now)?;
        self.flush(now)?;
        Ok(())
    }

    fn expire_waits(&mut self, now: u64) {
        self.holds
            .retain(|_, h| !matches!(h, Hold::Until(t) if *t <= now));
        if self.paused_until.is_some_and(|t| t <= now) {
            self.paused_until = None;
        }
        if self.inbox_paused_until.is_some_and(|t| t <= now) {
            self.inbox_paused_until = None;
        }
    }
}
