//! What the screens show, as reactive signals the driver updates after every event.

use leptos::prelude::*;
use nightjar_core::ConversationId;
use nightjar_core::content::{Content, MessageId};
use std::collections::{BTreeMap, BTreeSet};

use nightjar_machine::{ClientStore, Machine, MemoryClientStore, Notification, READABLE_KINDS};

/// The settings key of how many incoming messages of a conversation the user has seen.
pub(crate) fn read_mark(conversation: &str) -> String {
    format!("web/read/{conversation}")
}

/// Where the app is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Opening this browser's vault.
    Loading,
    /// No account in this browser: register.
    Welcome,
    /// A new device of an account, waiting for approval: shows this code.
    Pending(String),
    /// Signed in.
    Ready,
    /// Something this browser cannot do.
    Broken(String),
}

/// A message's delivery state, as its sender sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// Waiting in the outbox.
    Sending,
    /// The server has it, for every recipient device.
    Sent,
    /// The server refused it; it stays in the outbox.
    Failed(String),
    /// Someone else's message.
    Incoming,
    /// A recipient's device has it (a delivery receipt came back).
    Delivered,
    /// A recipient read it (a read receipt came back).
    Read,
}

/// The settings key recording that one of this account's messages reached someone's device.
pub(crate) fn delivered_to(message_id: &str) -> String {
    format!("web/delivered-to/{message_id}")
}

/// The settings key recording that someone read one of this account's messages.
pub(crate) fn read_by(message_id: &str) -> String {
    format!("web/read-by/{message_id}")
}

/// How long a typing indicator lasts without news.
const TYPING_SHOWN_MS: u64 = 6_000;

/// One conversation in the list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ConversationView {
    pub(crate) id: ConversationId,
    pub(crate) title: String,
    pub(crate) group: bool,
    pub(crate) unread: usize,
    /// A message request: the account that wrote, which this one has not accepted.
    pub(crate) request_from: Option<String>,
    /// The other account of a 1:1 conversation.
    pub(crate) peer: Option<String>,
    /// The member accounts (this one included), for groups.
    pub(crate) members: Vec<String>,
    /// Accounts in it whose identity key changed and awaits the user's verification.
    pub(crate) changed: Vec<String>,
    /// Its disappearing timer in seconds, if one is set.
    pub(crate) timer: Option<u32>,
    /// History from the device that approved this one, in a conversation this device is not
    /// in yet (it joins when a device of the account adds it): read only until then.
    pub(crate) history_only: bool,
}

/// Whether the conversation list shows a conversation whose index row is `active` (or not),
/// and which this device's engine has `joined` (or not): the ones it is in, and history from
/// another device of the account that it has not joined yet; not the ones it left or was
/// removed from.
pub(crate) fn listed(active: bool, joined: bool) -> bool {
    active || !joined
}

/// The safety number panel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SafetyPanel {
    pub(crate) peer: String,
    /// 60 digits in groups of five.
    pub(crate) grouped: String,
    /// The QR code to scan, as SVG.
    pub(crate) qr_svg: String,
    pub(crate) verified: bool,
    /// The number a changed identity key would give, waiting for the user.
    pub(crate) changed: Option<String>,
}

/// A QR code of `payload` as an SVG document.
pub(crate) fn qr_svg(payload: &[u8]) -> String {
    match qrcode::QrCode::new(payload) {
        Ok(code) => code
            .render::<qrcode::render::svg::Color<'_>>()
            .min_dimensions(180, 180)
            .quiet_zone(true)
            .build(),
        Err(_) => String::new(),
    }
}

/// A file in a message, as the chat shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AttachmentView {
    /// The name the sender gave (or `attachment`).
    pub(crate) name: String,
    /// The plaintext size in bytes.
    pub(crate) size: u64,
    /// A picture's thumbnail, or a video's frame.
    pub(crate) thumbnail: Option<ThumbnailView>,
    /// Whether it is a video (its thumbnail is a frame of it).
    pub(crate) video: bool,
    /// Whether this device can fetch it: not a file from history another device of the
    /// account sent, which travels without the blob's key.
    pub(crate) fetchable: bool,
}

/// A picture's thumbnail: an object URL of the image the message carries, and its size in
/// pixels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ThumbnailView {
    pub(crate) url: String,
    pub(crate) width: u32,
    pub(crate) height: u32,
}

/// A file transfer under way, for its progress bar.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TransferView {
    /// An upload's own key, or the downloaded message's key (`from/id`).
    pub(crate) key: String,
    pub(crate) conversation: ConversationId,
    /// The file's name.
    pub(crate) name: String,
    pub(crate) upload: bool,
    pub(crate) step: crate::files::Step,
    pub(crate) done: u64,
    pub(crate) total: u64,
}

/// The history archive on its way to or from this browser (a device link), for its progress
/// bar.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HistoryTransferView {
    /// To a device this one approves (or from the device that approved this one).
    pub(crate) sending: bool,
    pub(crate) step: crate::files::Step,
    pub(crate) done: u64,
    pub(crate) total: u64,
}

impl HistoryTransferView {
    /// What the bar says: `Sending history`, `Fetching history`.
    pub(crate) fn label(&self) -> &'static str {
        match (self.sending, self.step) {
            (true, crate::files::Step::Encrypting) => "Encrypting history",
            (true, _) => "Sending history",
            (false, _) => "Fetching history",
        }
    }
}

/// A file this page holds for the user (downloaded and decrypted, or sent from here): an
/// object URL to save it from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SavedFile {
    pub(crate) url: String,
    pub(crate) name: String,
}

/// One message in the chat view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MessageView {
    /// `from/id`: unique in the conversation (ids are chosen by senders).
    pub(crate) key: String,
    /// The message id (32 hex digits), which replies, reactions, edits and deletes name.
    pub(crate) id: String,
    pub(crate) from: String,
    /// Whether this account sent it (from this device or another).
    pub(crate) mine: bool,
    pub(crate) text: String,
    pub(crate) sent_at: u64,
    pub(crate) delivery: Delivery,
    /// `edited`, `deleted`, or empty.
    pub(crate) note: &'static str,
    /// The message a reply answers, as it reads now.
    pub(crate) quote: Option<QuoteView>,
    /// The reactions on it, one per emoji, in the emoji's order.
    pub(crate) reactions: Vec<ReactionView>,
    /// What the user may do with it.
    pub(crate) actions: MessageActions,
    /// A line about the conversation (a timer change), not a message.
    pub(crate) system: bool,
    /// The file it carries.
    pub(crate) attachment: Option<AttachmentView>,
}

/// The message a reply answers, as the reply shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct QuoteView {
    /// Who wrote it, if this device has it.
    pub(crate) from: Option<String>,
    /// Its first line, shortened (or why it cannot be shown).
    pub(crate) text: String,
}

/// One emoji's reactions on a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ReactionView {
    pub(crate) emoji: String,
    /// How many people reacted with it.
    pub(crate) count: usize,
    /// Whether this account is one of them (choosing it again withdraws it).
    pub(crate) mine: bool,
}

/// What the user may do with a message: answer it (reply, react) if it is one people read
/// and not deleted; edit or delete it for everyone if it is also their own. The machine
/// refuses an edit or delete of someone else's message anyway; this only decides what is
/// offered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct MessageActions {
    pub(crate) answer: bool,
    pub(crate) amend: bool,
    /// Report it to the operator: someone else's message that carries a verified franking
    /// proof (docs/reporting.md).
    pub(crate) report: bool,
}

/// The longest reaction shown, in bytes: the native client sends nothing longer (an emoji
/// with its modifiers fits); a longer one from a modified client is ignored.
const MAX_REACTION_BYTES: usize = 32;

/// The settings key of the read-receipt switch: the native client's key and values
/// (`nightjar settings --read-receipts on|off`): on unless `off`, for messages read from then
/// on.
pub(crate) const READ_RECEIPTS: &str = "read_receipts";

/// Whether this device tells senders when their messages were read (on by default).
pub(crate) fn read_receipts_on(store: &MemoryClientStore) -> bool {
    store.meta(READ_RECEIPTS).ok().flatten().as_deref() != Some("off")
}

/// The reactions on each message (by id): for each emoji, who reacted, applying additions
/// and withdrawals in order; `me`'s own are marked.
fn reactions(
    rows: &[nightjar_machine::rows::StoredMessage],
    me: &str,
) -> BTreeMap<String, Vec<ReactionView>> {
    let mut by_target: BTreeMap<&str, BTreeMap<&str, BTreeSet<&str>>> = BTreeMap::new();
    for m in rows.iter().filter(|m| m.kind == "reaction") {
        let (Some(target), Some(emoji)) = (m.detail.target.as_deref(), m.text.as_deref()) else {
            continue;
        };
        if emoji.is_empty()
            || emoji.len() > MAX_REACTION_BYTES
            || emoji.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            continue;
        }
        let people = by_target
            .entry(target)
            .or_default()
            .entry(emoji)
            .or_default();
        if m.detail.remove {
            people.remove(m.from.as_str());
        } else {
            people.insert(m.from.as_str());
        }
    }
    by_target
        .into_iter()
        .map(|(target, emojis)| {
            let list = emojis
                .into_iter()
                .filter(|(_, people)| !people.is_empty())
                .map(|(emoji, people)| ReactionView {
                    emoji: emoji.to_owned(),
                    count: people.len(),
                    mine: people.contains(me),
                })
                .collect();
            (target.to_owned(), list)
        })
        .collect()
}

/// The longest quote or reply preview, in characters.
const SNIPPET_CHARS: usize = 80;

/// The first line of `text`, at most [`SNIPPET_CHARS`] characters (with `…` when cut).
pub(crate) fn snippet(text: &str) -> String {
    let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let line = line.trim();
    let cut = line.chars().count() > SNIPPET_CHARS
        || text.trim().lines().filter(|l| !l.trim().is_empty()).count() > 1;
    let mut short: String = line.chars().take(SNIPPET_CHARS).collect();
    if cut {
        short.push('…');
    }
    short
}

/// How a message reads in a quote: its text, else its file's name.
fn quote_of(m: &nightjar_machine::rows::StoredMessage) -> QuoteView {
    let text = if m.detail.deleted {
        "This message was deleted.".to_owned()
    } else {
        match (
            m.text.as_deref().filter(|t| !t.trim().is_empty()),
            &m.detail.attachment,
        ) {
            (Some(text), _) => snippet(text),
            (None, Some(a)) => format!("File: {}", a.name.as_deref().unwrap_or("attachment")),
            (None, None) => String::new(),
        }
    };
    QuoteView {
        from: Some(m.from.clone()),
        text,
    }
}

/// A duration in words: `30 seconds`, `5 minutes`, `1 hour`, `7 days`.
pub(crate) fn duration_words(secs: u32) -> String {
    let (n, unit) = [
        (86_400, "day"),
        (3600, "hour"),
        (60, "minute"),
        (1, "second"),
    ]
    .into_iter()
    .find(|(size, _)| secs.is_multiple_of(*size))
    .map_or((secs, "second"), |(size, unit)| (secs / size, unit));
    let plural = if n == 1 { "" } else { "s" };
    format!("{n} {unit}{plural}")
}

/// How a timer change reads.
fn timer_line(from: &str, secs: Option<u32>) -> String {
    match secs.filter(|s| *s > 0) {
        None => format!("{from} turned disappearing messages off"),
        Some(s) => format!(
            "{from} set messages to disappear {} after they are read",
            duration_words(s)
        ),
    }
}

/// The app's signals.
#[derive(Clone, Copy)]
pub(crate) struct Ui {
    pub(crate) phase: RwSignal<Phase>,
    pub(crate) me: RwSignal<String>,
    pub(crate) conversations: RwSignal<Vec<ConversationView>>,
    pub(crate) selected: RwSignal<Option<ConversationId>>,
    pub(crate) messages: RwSignal<Vec<MessageView>>,
    pub(crate) notices: RwSignal<Vec<String>>,
    pub(crate) online: RwSignal<bool>,
    pub(crate) expired: RwSignal<bool>,
    pub(crate) safety: RwSignal<Option<SafetyPanel>>,
    /// The account's devices, while the devices panel is open.
    pub(crate) devices: RwSignal<Option<Vec<nightjar_api::DeviceInfo>>>,
    /// Who is typing where, until when (ms).
    pub(crate) typing: RwSignal<Vec<(ConversationId, String, u64)>>,
    /// The call on screen, if any.
    pub(crate) call: RwSignal<Option<crate::call::CallView>>,
    /// Group calls going on without this device, in its groups.
    pub(crate) group_calls: RwSignal<Vec<crate::call::OngoingCall>>,
    /// The running driver, once signed in.
    pub(crate) driver: StoredValue<Option<crate::driver::Driver>, LocalStorage>,
    /// File uploads and downloads under way.
    pub(crate) transfers: RwSignal<Vec<TransferView>>,
    /// Files this page holds, by message key (`from/id`).
    pub(crate) saved: RwSignal<BTreeMap<String, SavedFile>>,
    /// The history archive on its way, if any (a device link).
    pub(crate) history: RwSignal<Option<HistoryTransferView>>,
    /// Object URLs of the thumbnails shown, by message key (made once each).
    thumbnails: StoredValue<BTreeMap<String, Option<ThumbnailView>>, LocalStorage>,
    /// Uploads recorded but not under way (`crate::uploads`): after a reload, or a failure.
    pub(crate) stopped_uploads: RwSignal<Vec<crate::uploads::StoppedUpload>>,
    /// The files of stopped uploads this page still holds, by upload id: resumed without
    /// choosing them again.
    pub(crate) held_files: StoredValue<BTreeMap<String, web_sys::File>, LocalStorage>,
}

impl Ui {
    pub(crate) fn new() -> Self {
        Self {
            phase: RwSignal::new(Phase::Loading),
            me: RwSignal::new(String::new()),
            conversations: RwSignal::new(Vec::new()),
            selected: RwSignal::new(None),
            messages: RwSignal::new(Vec::new()),
            notices: RwSignal::new(Vec::new()),
            online: RwSignal::new(false),
            expired: RwSignal::new(false),
            safety: RwSignal::new(None),
            devices: RwSignal::new(None),
            typing: RwSignal::new(Vec::new()),
            call: RwSignal::new(None),
            group_calls: RwSignal::new(Vec::new()),
            driver: StoredValue::new_local(None),
            transfers: RwSignal::new(Vec::new()),
            saved: RwSignal::new(BTreeMap::new()),
            history: RwSignal::new(None),
            thumbnails: StoredValue::new_local(BTreeMap::new()),
            stopped_uploads: RwSignal::new(Vec::new()),
            held_files: StoredValue::new_local(BTreeMap::new()),
        }
    }

    /// The app is signed in and its driver runs.
    pub(crate) fn driver_ready(&self, driver: crate::driver::Driver) {
        self.driver.set_value(Some(driver));
    }

    pub(crate) fn error(&self, text: String) {
        self.show(text);
    }

    /// Shows a short notice for a few seconds (once, however often it is raised meanwhile).
    pub(crate) fn show(&self, text: String) {
        // Also on the page's console, for whoever debugs this browser (it stays local).
        web_sys::console::info_1(&text.as_str().into());
        if self.notices.get_untracked().contains(&text) {
            return;
        }
        self.notices.update(|list| list.push(text.clone()));
        let notices = self.notices;
        set_timeout(
            move || notices.update(|list| list.retain(|n| *n != text)),
            std::time::Duration::from_secs(8),
        );
    }

    pub(crate) fn set_online(&self, online: bool) {
        self.online.set(online);
    }

    pub(crate) fn session_expired(&self) {
        self.expired.set(true);
    }

    /// Shows what the machine says the user should know.
    pub(crate) fn notify(&self, n: &Notification) {
        let text = match n {
            Notification::Notice(text) => text.clone(),
            Notification::TransparencyAlarm(text) => format!("Key transparency alarm: {text}"),
            Notification::MessageRequest { from, .. } => {
                format!("{from} sent you a message request")
            }
            Notification::IdentityChanged { username } => format!(
                "The safety number with {username} changed: their identity key is new. \
                 Messages with {username} wait until you verify it."
            ),
            Notification::OperationFailed { reason, .. } => reason.to_string(),
            Notification::Completed { conversation, .. } => {
                self.selected.set(Some(*conversation));
                return;
            }
            Notification::SessionExpired => {
                self.expired.set(true);
                return;
            }
            Notification::Call(event) => {
                crate::call::on_event(self, event);
                return;
            }
            Notification::Typing {
                conversation,
                from,
                active,
            } => {
                let (conversation, from, active) = (*conversation, from.clone(), *active);
                let until = crate::js::now_ms() + TYPING_SHOWN_MS;
                self.typing.update(|t| {
                    t.retain(|(c, f, _)| !(*c == conversation && *f == from));
                    if active {
                        t.push((conversation, from.clone(), until));
                    }
                });
                let typing = self.typing;
                set_timeout(
                    move || typing.update(|t| t.retain(|(_, _, u)| *u > crate::js::now_ms())),
                    std::time::Duration::from_millis(TYPING_SHOWN_MS + 50),
                );
                return;
            }
            Notification::Received(m) => {
                // A message ends its sender's typing.
                let (conversation, from) = (m.conversation.clone(), m.from.clone());
                self.typing.update(|t| {
                    t.retain(|(c, f, _)| !(c.to_string() == conversation && *f == from));
                });
                return;
            }
            _ => return,
        };
        self.show(text);
    }

    /// Shows the safety number with `peer`.
    pub(crate) fn show_safety(&self, machine: &mut Machine<MemoryClientStore>, peer: &str) {
        match machine.safety(peer) {
            Ok(view) => self.safety.set(Some(SafetyPanel {
                peer: peer.to_owned(),
                grouped: view.current.grouped(),
                qr_svg: qr_svg(&view.current.qr_payload()),
                verified: view.verified,
                changed: view.changed.map(|c| c.grouped()),
            })),
            Err(e) => self.error(format!("no safety number with {peer} yet: {e}")),
        }
    }

    /// The thumbnail of the file in message `key`, as an object URL made once.
    fn thumbnail(
        &self,
        key: &str,
        row: &nightjar_machine::rows::AttachmentRow,
    ) -> Option<ThumbnailView> {
        if let Some(known) = self.thumbnails.with_value(|t| t.get(key).cloned()) {
            return known;
        }
        let made = crate::files::thumbnail_url(row);
        self.thumbnails
            .update_value(|t| drop(t.insert(key.to_owned(), made.clone())));
        made
    }

    /// Reads the lists back from the store; showing a conversation marks its messages read
    /// at `now` (starting their disappearing timers, and telling the senders unless read
    /// receipts are off).
    pub(crate) fn refresh(&self, machine: &mut Machine<MemoryClientStore>, now: u64) {
        let me = machine.me().clone();
        let store = machine.store().clone();
        let selected = self.selected.get_untracked();
        let receipts = read_receipts_on(&store);
        // What disappeared goes before anything is drawn.
        let _ = store.expire_messages(now);
        let pending = crate::uploads::forget_expired(&store, now);
        let running: Vec<String> = self
            .transfers
            .get_untracked()
            .into_iter()
            .filter(|t| t.upload)
            .map(|t| t.key)
            .collect();
        let stopped = crate::uploads::stopped(pending, &running);
        if stopped != self.stopped_uploads.get_untracked() {
            self.stopped_uploads.set(stopped);
        }
        let mut conversations = Vec::new();
        for row in store.conversations().unwrap_or_default() {
            let Some(id) = ConversationId::parse(&row.id) else {
                continue;
            };
            let info = machine.engine().conversation(id).ok();
            if !listed(row.active, info.is_some()) {
                continue;
            }
            let history_only = !row.active;
            let incoming = store
                .messages(&row.id)
                .unwrap_or_default()
                .iter()
                .filter(|m| !m.outgoing && READABLE_KINDS.contains(&m.kind.as_str()))
                .count();
            let seen: usize = store
                .meta(&read_mark(&row.id))
                .ok()
                .flatten()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let group = row.kind == "group";
            let request_from = row
                .peer
                .clone()
                .filter(|peer| !group && store.is_request(&row.id, peer).unwrap_or(false));
            let unread = if selected == Some(id) {
                if seen < incoming {
                    let _ = store.set_meta(&read_mark(&row.id), &incoming.to_string());
                    // Tell the senders (a read receipt, end-to-end encrypted like any message),
                    // unless the user turned read receipts off: like the native client, then
                    // nothing is sent for these messages, even if turned on later. Reading
                    // starts the disappearing timers either way.
                    let _ = store.start_timers(&row.id, now);
                    let newly_read: Vec<MessageId> = store
                        .messages(&row.id)
                        .unwrap_or_default()
                        .iter()
                        .filter(|m| !m.outgoing && READABLE_KINDS.contains(&m.kind.as_str()))
                        .skip(seen)
                        .filter_map(|m| MessageId::from_hex(&m.id))
                        .collect();
                    // Not to a stranger: a receipt would tell them, and sending accepts. Not
                    // where this device cannot write yet either.
                    if receipts && !newly_read.is_empty() && request_from.is_none() && !history_only
                    {
                        let _ = machine.send_message(
                            now,
                            id,
                            Content::ReadReceipt {
                                message_ids: newly_read,
                            },
                        );
                    }
                }
                0
            } else {
                incoming.saturating_sub(seen)
            };
            let title = if group {
                row.name.clone().unwrap_or_else(|| "group".into())
            } else {
                row.peer.clone().unwrap_or_else(|| "conversation".into())
            };
            let mut members: Vec<String> = info
                .map(|info| info.members.into_iter().map(|m| m.username).collect())
                .unwrap_or_default();
            members.sort();
            members.dedup();
            let changed = members
                .iter()
                .chain(row.peer.iter())
                .filter(|m| machine.identity_changed(m).unwrap_or(false))
                .cloned()
                .collect();
            conversations.push(ConversationView {
                id,
                title,
                group,
                unread,
                request_from,
                peer: row.peer.clone(),
                members,
                changed,
                timer: nightjar_machine::disappearing_timer(&store, &row.id)
                    .ok()
                    .flatten(),
                history_only,
            });
        }
        if conversations != self.conversations.get_untracked() {
            self.conversations.set(conversations);
        }
        // History from another device, in a conversation this one is not in yet: read only.
        let read_only = selected.is_some_and(|id| {
            self.conversations
                .get_untracked()
                .iter()
                .any(|c| c.id == id && c.history_only)
        });
        let mut messages: Vec<MessageView> = match selected {
            Some(id) => {
                let outbox = store.outbox().unwrap_or_default();
                let rows = store.messages(&id.to_string()).unwrap_or_default();
                let reactions = reactions(&rows, &me.username);
                // What replies quote: the first message with the id (ids are random; a copy
                // of one by someone else comes later).
                let mut quotes: BTreeMap<&str, QuoteView> = BTreeMap::new();
                for m in rows
                    .iter()
                    .filter(|m| READABLE_KINDS.contains(&m.kind.as_str()))
                {
                    quotes.entry(m.id.as_str()).or_insert_with(|| quote_of(m));
                }
                let quote_for = |m: &nightjar_machine::rows::StoredMessage| {
                    let target = m.detail.target.as_deref().filter(|_| m.kind == "reply")?;
                    Some(quotes.get(target).cloned().unwrap_or_else(|| QuoteView {
                        from: None,
                        text: "The message it answers is not on this device.".into(),
                    }))
                };
                rows.iter()
                    .filter(|m| {
                        READABLE_KINDS.contains(&m.kind.as_str())
                            || m.kind == "call"
                            || m.kind == "timer"
                    })
                    .map(|m| {
                        let mine = m.from == me.username;
                        let queued = outbox.iter().find(|r| {
                            matches!(&r.item, nightjar_machine::rows::OutboxItem::Message { message_id, .. } if *message_id == m.id)
                        });
                        let delivery = match queued {
                            Some(r) => match &r.refused {
                                Some(reason) => Delivery::Failed(reason.clone()),
                                None => Delivery::Sending,
                            },
                            None if mine => {
                                if store.meta(&read_by(&m.id)).ok().flatten().is_some() {
                                    Delivery::Read
                                } else if store.meta(&delivered_to(&m.id)).ok().flatten().is_some() {
                                    Delivery::Delivered
                                } else {
                                    Delivery::Sent
                                }
                            }
                            None => Delivery::Incoming,
                        };
                        let system = m.kind == "timer";
                        let key = format!("{}/{}", m.from, m.id);
                        let text = if system {
                            timer_line(&m.from, m.detail.timer_secs)
                        } else if m.detail.deleted {
                            "This message was deleted.".to_owned()
                        } else {
                            // A file's caption, if any.
                            m.text.clone().unwrap_or_default()
                        };
                        let attachment = m
                            .detail
                            .attachment
                            .as_ref()
                            .filter(|_| !m.detail.deleted && !system)
                            .map(|a| AttachmentView {
                                name: a
                                    .name
                                    .clone()
                                    .filter(|n| !n.is_empty())
                                    .unwrap_or_else(|| "attachment".into()),
                                size: a.size,
                                thumbnail: self.thumbnail(&key, a),
                                video: crate::files::is_video(&a.media_type),
                                fetchable: !a.message.0.is_empty(),
                            });
                        let note = if m.detail.deleted {
                            "deleted"
                        } else if m.detail.edited {
                            "edited"
                        } else {
                            ""
                        };
                        let answer = READABLE_KINDS.contains(&m.kind.as_str())
                            && !m.detail.deleted
                            && !read_only;
                        MessageView {
                            key,
                            id: m.id.clone(),
                            attachment,
                            quote: quote_for(m).filter(|_| !m.detail.deleted),
                            reactions: reactions.get(&m.id).cloned().unwrap_or_default(),
                            actions: MessageActions {
                                answer,
                                amend: answer && mine,
                                report: answer && !mine && m.detail.franking.is_some(),
                            },
                            from: m.from.clone(),
                            mine,
                            text,
                            sent_at: m.sent_at,
                            delivery,
                            note,
                            system,
                        }
                    })
                    .collect()
            }
            None => Vec::new(),
        };
        // In the order they were sent: history from another device may be stored after
        // messages that came meanwhile (stable: equal times keep the stored order).
        messages.sort_by_key(|m| m.sent_at);
        if messages != self.messages.get_untracked() {
            self.messages.set(messages);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nightjar_machine::rows::{MessageDetail, StoredMessage};

    fn reaction(from: &str, target: &str, emoji: &str, remove: bool) -> StoredMessage {
        StoredMessage {
            conversation: "c".into(),
            id: format!("{from}-{emoji}-{remove}"),
            from: from.into(),
            device: "d".into(),
            sent_at: 1,
            kind: "reaction".into(),
            text: Some(emoji.into()),
            outgoing: from == "me",
            detail: MessageDetail {
                target: Some(target.into()),
                remove,
                ..MessageDetail::default()
            },
            expires_after_secs: None,
            expires_at: None,
        }
    }

    #[test]
    fn reactions_count_people_apply_withdrawals_and_mark_ones_own() {
        let rows = [
            reaction("me", "m1", "👍", false),
            reaction("bob", "m1", "👍", false),
            reaction("bob", "m1", "👍", false),
            reaction("bob", "m1", "❤️", false),
            reaction("bob", "m1", "❤️", true),
            reaction("carol", "m1", "😂", false),
            reaction("me", "m2", "😮", false),
            reaction("me", "m2", "😮", true),
            // What the native client would never send is not shown.
            reaction("eve", "m1", &"🙂".repeat(20), false),
            reaction("eve", "m1", "not one emoji", false),
        ];
        let all = reactions(&rows, "me");
        assert_eq!(
            all["m1"],
            [
                ReactionView {
                    emoji: "👍".into(),
                    count: 2,
                    mine: true
                },
                ReactionView {
                    emoji: "😂".into(),
                    count: 1,
                    mine: false
                },
            ]
        );
        assert!(all["m2"].is_empty());
    }

    #[test]
    fn snippets_are_one_short_line() {
        assert_eq!(snippet("lunch at noon?"), "lunch at noon?");
        assert_eq!(snippet("\n  first line \nsecond"), "first line…");
        let long = "x".repeat(100);
        assert_eq!(snippet(&long), format!("{}…", "x".repeat(SNIPPET_CHARS)));
        assert_eq!(snippet(""), "");
    }

    #[test]
    fn timers_read_as_people_say_them() {
        assert_eq!(duration_words(30), "30 seconds");
        assert_eq!(duration_words(300), "5 minutes");
        assert_eq!(duration_words(3600), "1 hour");
        assert_eq!(duration_words(604_800), "7 days");
        assert_eq!(duration_words(90), "90 seconds");
        assert_eq!(
            timer_line("alice", Some(86_400)),
            "alice set messages to disappear 1 day after they are read"
        );
        assert_eq!(
            timer_line("alice", Some(0)),
            "alice turned disappearing messages off"
        );
    }

    #[test]
    fn history_not_joined_yet_is_listed_but_a_left_conversation_is_not() {
        assert!(listed(true, true), "a conversation this device is in");
        assert!(
            listed(false, false),
            "history from the approving device, not joined yet"
        );
        assert!(
            !listed(false, true),
            "a group this device left or was removed from"
        );
    }
}
