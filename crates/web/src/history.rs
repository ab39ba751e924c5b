//! History on a new device, in the browser. The archive's format and the store's side are
//! `nightjar_machine::archive`, the command line's driver is
//! `crates/client/src/client/history.rs`; this is the same exchange over the page's
//! transfers (`crate::files`).
//!
//! **Approving a device** (`crate::link::approve`): once a waiting device's offer matched the
//! typed code, [`export`] builds the account's archive from this browser's store (the last
//! [`archive::history_days`] days; none when the setting is off) and [`send`] encrypts and
//! uploads it from memory as a blob for one recipient, the new device. Its pointer (with the
//! key) goes into the link bundle, which only the device showing the code opens.
//!
//! **Being the new device**: completing the link stores the pointer under
//! [`PENDING_HISTORY`] in the same transaction (`crate::link`). Then, at this and every later
//! start of the app until it is in, [`fetch_pending`] downloads the blob into memory, checks
//! its digest before decrypting it, decodes the archive and stores its rows in one step
//! ([`store_archive`]); then the server is told this device has the blob (it deletes it).
//! What may pass (the network, a server error, a rate limit) keeps the pointer for the next
//! start; a blob gone or not verifying, or an archive refused, is given up with a notice. The
//! plaintext archive only ever lives in the page's memory: its rows in the store are what
//! persists, as for any message.
//!
//! The decisions ([`settle`], [`choices`], the texts) are plain functions; the rest drives
//! them.

use std::collections::{BTreeMap, BTreeSet};

use leptos::prelude::Set as _;
use nightjar_api::B64;
use nightjar_core::content::AttachmentPointer;
use nightjar_machine::archive::{
    self, ARCHIVE_MEDIA_TYPE, HISTORY_DAYS, HistoryArchive, HistoryImported, MAX_ARCHIVE_BYTES,
    MAX_HISTORY_DAYS, PENDING_HISTORY,
};
use nightjar_machine::{ClientStore as _, Machine, MemoryClientStore, READABLE_KINDS};
use zeroize::Zeroizing;

use crate::account;
use crate::driver::Driver;
use crate::files::{self, FetchError, Report, Step};
use crate::ui_state::{HistoryTransferView, Ui, read_mark};

/// The choices the settings offer for how far back a new device's history goes, in days
/// (0: none).
const CHOICES: [u32; 5] = [0, 7, 30, 90, 365];

/// The choices to offer when the setting is `current` days: the usual ones, and `current`
/// if it is another (set elsewhere), in order.
pub(crate) fn choices(current: u32) -> Vec<u32> {
    let mut all = CHOICES.to_vec();
    if !all.contains(&current) {
        all.push(current);
        all.sort_unstable();
    }
    all
}

/// How a choice reads: `Off`, `7 days`, `1 year`.
pub(crate) fn choice_label(days: u32) -> String {
    match days {
        0 => "Off".into(),
        1 => "1 day".into(),
        365 => "1 year".into(),
        n => format!("{n} days"),
    }
}

/// How many days of history this browser hands a device it approves (0: none).
pub(crate) fn days(machine: &Machine<MemoryClientStore>) -> u32 {
    archive::history_days(machine.store()).unwrap_or(archive::DEFAULT_HISTORY_DAYS)
}

/// Sets how many days of history this browser hands a device it approves (0: none), the
/// setting `nightjar settings --history-days` is on the command line.
pub(crate) fn set_days(machine: &Machine<MemoryClientStore>, days: u32) -> Result<(), String> {
    if days > MAX_HISTORY_DAYS {
        return Err(format!("history goes back at most {MAX_HISTORY_DAYS} days"));
    }
    machine
        .store()
        .set_meta(HISTORY_DAYS, &days.to_string())
        .map_err(|e| e.to_string())
}

/// The encoded archive of this browser's history for a device of the account approved at
/// `now` (wiped when dropped); `None` when the setting says no history.
pub(crate) fn export(
    machine: &Machine<MemoryClientStore>,
    now: u64,
) -> Result<Option<Zeroizing<Vec<u8>>>, String> {
    let username = machine.me().username.clone();
    let Some(archive) =
        archive::export(machine.store(), &username, now).map_err(|e| e.to_string())?
    else {
        return Ok(None);
    };
    let bytes = archive.encode();
    drop(archive);
    if bytes.len() as u64 > MAX_ARCHIVE_BYTES {
        return Err(format!(
            "the history takes more than {} MiB; choose fewer days under “History for a new \
             device” and approve again",
            MAX_ARCHIVE_BYTES >> 20
        ));
    }
    Ok(Some(bytes))
}

/// Encrypts and uploads an archive [`export`] made, as a blob only the new device fetches;
/// its progress shows in the devices panel. The pointer to seal into the link bundle.
pub(crate) async fn send(
    bytes: &[u8],
    token: Option<&str>,
    ui: Ui,
) -> Result<AttachmentPointer, String> {
    let mut progress = Progress::new(ui, true);
    // One recipient: the new device. The blob goes once it has the archive.
    files::upload_bytes(bytes, ARCHIVE_MEDIA_TYPE, token, 1, &mut progress).await
}

/// The pointer as [`PENDING_HISTORY`] keeps it: its encoding, in base64url (as the command
/// line keeps it).
pub(crate) fn encode_pointer(pointer: &AttachmentPointer) -> String {
    B64::encode(&pointer.encode())
}

/// The pointer [`encode_pointer`] made; `None` if it is damaged.
fn decode_pointer(encoded: &str) -> Option<AttachmentPointer> {
    B64::decode(encoded).and_then(|b| AttachmentPointer::decode(&b).ok())
}

/// What becomes of the pending history after a try to fetch it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The archive came whole, verified and decoded: store it.
    Store(HistoryArchive),
    /// It may come later: keep the pointer, try again at the next start.
    Later(String),
    /// It is gone, does not verify, or was refused: forget the pointer and say so.
    GiveUp(String),
}

/// Decides what a download's outcome means for `username`'s new device. The plaintext is
/// wiped once decoded.
pub(crate) fn settle(fetched: Result<Zeroizing<Vec<u8>>, FetchError>, username: &str) -> Outcome {
    match fetched {
        Err(FetchError::Later(why)) => Outcome::Later(why),
        Err(FetchError::Gone(why)) => Outcome::GiveUp(why),
        Ok(bytes) => match HistoryArchive::decode(&bytes, username) {
            Ok(archive) => Outcome::Store(archive),
            Err(e) => Outcome::GiveUp(e.to_string()),
        },
    }
}

/// What storing an archive added, as the user hears of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Arrived {
    /// Messages added to the history.
    pub(crate) messages: usize,
    /// Conversations they are in (whether or not this device knew those already: the
    /// approving device may have added it to them first).
    pub(crate) conversations: usize,
}

/// What the user reads when the history arrived; nothing if it added no message.
pub(crate) fn arrived_text(arrived: Arrived) -> Option<String> {
    let plural =
        |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    (arrived.messages > 0).then(|| {
        format!(
            "Your history from your other device is here: {} in {}.",
            plural(arrived.messages, "message", "messages"),
            plural(arrived.conversations, "conversation", "conversations")
        )
    })
}

/// What the user reads when the history is given up.
pub(crate) fn given_up_text(why: &str) -> String {
    format!(
        "The history from your other device could not be fetched: {why}. This browser shows \
         your messages from its approval on."
    )
}

/// What the user reads when the history may still come.
pub(crate) fn later_text(why: &str) -> String {
    format!(
        "The history from your other device could not be fetched yet ({why}). This browser \
         tries again the next time it opens Nightjar."
    )
}

/// Stores an archive [`settle`] accepted: its rows in one transaction that also forgets the
/// pending pointer (`archive::import`), and the messages it added counted as read, so that
/// history is neither unread nor answered with read receipts. All of it reaches the vault in
/// one write, after this event.
pub(crate) fn store_archive(
    machine: &mut Machine<MemoryClientStore>,
    archive: &HistoryArchive,
    now: u64,
) -> Result<Arrived, String> {
    let store = machine.store().clone();
    let mut known: BTreeMap<&str, BTreeSet<(String, String)>> = BTreeMap::new();
    for c in &archive.conversations {
        let rows = store.messages(&c.id).map_err(|e| e.to_string())?;
        known.insert(
            c.id.as_str(),
            rows.into_iter().map(|m| (m.from, m.id)).collect(),
        );
    }
    let mut read: BTreeMap<&str, usize> = BTreeMap::new();
    let mut touched: BTreeSet<&str> = BTreeSet::new();
    for m in &archive.messages {
        let stored = known
            .get(m.conversation.as_str())
            .is_some_and(|k| k.contains(&(m.from.clone(), m.id.clone())));
        if stored {
            continue;
        }
        touched.insert(m.conversation.as_str());
        if !m.outgoing && READABLE_KINDS.contains(&m.kind.as_str()) {
            *read.entry(m.conversation.as_str()).or_default() += 1;
        }
    }
    let HistoryImported { messages, .. } =
        archive::import(&store, archive, now).map_err(|e| e.to_string())?;
    for (conversation, added) in read {
        let key = read_mark(conversation);
        let seen: usize = store
            .meta(&key)
            .ok()
            .flatten()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        store
            .set_meta(&key, &(seen + added).to_string())
            .map_err(|e| e.to_string())?;
    }
    Ok(Arrived {
        messages,
        conversations: touched.len(),
    })
}

/// Fetches and stores the history a device that approved this one left for it, if some
/// waits (at every start of the app, until it is in or given up).
pub(crate) fn fetch_pending(driver: &Driver) {
    let again = driver.clone();
    driver.intent(move |machine, _, ui| {
        let store = machine.store();
        let Some(encoded) = store.meta(PENDING_HISTORY).ok().flatten() else {
            return;
        };
        let Some(pointer) = decode_pointer(&encoded) else {
            let _ = store.delete_meta(PENDING_HISTORY);
            ui.show(given_up_text("what this browser kept of it is damaged"));
            return;
        };
        let token = account::token(machine);
        let username = machine.me().username.clone();
        let ui = *ui;
        leptos::task::spawn_local(async move {
            let fetched = {
                let mut progress = Progress::new(ui, false);
                files::download_bytes(&pointer, token.as_deref(), MAX_ARCHIVE_BYTES, &mut progress)
                    .await
            };
            match settle(fetched, &username) {
                Outcome::Store(archive) => {
                    let stored = again
                        .ask(move |machine, now, _| store_archive(machine, &archive, now))
                        .await;
                    match stored {
                        Some(Ok(arrived)) => {
                            if let Some(text) = arrived_text(arrived) {
                                ui.show(text);
                            }
                            // Asked after the rows are in the vault: the server may then
                            // delete the blob.
                            again.intent(move |_, _, _| {
                                leptos::task::spawn_local(async move {
                                    let blob = pointer.blob_id.as_str();
                                    if let Err(e) =
                                        files::confirm_fetched(blob, token.as_deref()).await
                                    {
                                        web_sys::console::info_1(
                                            &format!(
                                                "the server was not told this device has the \
                                                 history ({e}); it keeps the encrypted blob \
                                                 until it expires"
                                            )
                                            .into(),
                                        );
                                    }
                                });
                            });
                        }
                        Some(Err(e)) => {
                            ui.show(later_text(&format!("it could not be stored: {e}")))
                        }
                        None => {}
                    }
                }
                Outcome::Later(why) => ui.show(later_text(&why)),
                Outcome::GiveUp(why) => again.intent(move |machine, _, ui| {
                    let _ = machine.store().delete_meta(PENDING_HISTORY);
                    ui.show(given_up_text(&why));
                }),
            }
        });
    });
}

/// Shows the history's transfer (only when the percentage moves), and nothing once it ends.
struct Progress {
    ui: Ui,
    sending: bool,
    shown: Option<(Step, u64)>,
}

impl Progress {
    fn new(ui: Ui, sending: bool) -> Self {
        Self {
            ui,
            sending,
            shown: None,
        }
    }
}

impl Report for Progress {
    fn report(&mut self, step: Step, done: u64, total: u64) {
        let now = (step, files::percent(done, total));
        if self.shown == Some(now) {
            return;
        }
        self.shown = Some(now);
        self.ui.history.set(Some(HistoryTransferView {
            sending: self.sending,
            step,
            done,
            total,
        }));
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.ui.history.set(None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nightjar_machine::rows::{ConversationRow, MessageDetail, StoredMessage};

    const NOW: u64 = 1_800_000_000_000;

    fn archive() -> HistoryArchive {
        HistoryArchive::build(
            "alice",
            NOW,
            vec![ConversationRow {
                id: "0123456789abcdef0123456789abcdef".into(),
                kind: "direct".into(),
                name: None,
                peer: Some("bob".into()),
                active: true,
            }],
            vec![StoredMessage {
                conversation: "0123456789abcdef0123456789abcdef".into(),
                id: format!("{:032x}", 1),
                from: "bob".into(),
                device: "00000000000000aa".into(),
                sent_at: NOW - 1,
                kind: "text".into(),
                text: Some("earlier".into()),
                outgoing: false,
                detail: MessageDetail::default(),
                expires_after_secs: None,
                expires_at: None,
            }],
        )
    }

    #[test]
    fn stored_history_is_read_already_and_stored_once() {
        let store = MemoryClientStore::new();
        let (engine, _) = nightjar_core::Engine::create_account(
            store.clone(),
            "alice",
            nightjar_core::EngineConfig::default(),
            NOW,
        )
        .unwrap();
        let mut machine = Machine::new(store.clone(), engine);
        store.set_meta(PENDING_HISTORY, "pointer").unwrap();
        let mut archive = archive();
        let mut mine = archive.messages[0].clone();
        mine.id = format!("{:032x}", 2);
        mine.from = "alice".into();
        archive.messages.push(mine);
        let decoded = HistoryArchive::decode(&archive.encode(), "alice").unwrap();
        let conversation = decoded.conversations[0].id.clone();

        let arrived = store_archive(&mut machine, &decoded, NOW).unwrap();
        assert_eq!(
            arrived,
            Arrived {
                messages: 2,
                conversations: 1
            }
        );
        assert_eq!(store.meta(PENDING_HISTORY).unwrap(), None);
        // bob's one message counts as read (alice's own never count).
        assert_eq!(
            store.meta(&read_mark(&conversation)).unwrap().as_deref(),
            Some("1")
        );
        let again = store_archive(&mut machine, &decoded, NOW).unwrap();
        assert_eq!(again.messages, 0);
        assert_eq!(arrived_text(again), None);
        assert_eq!(
            store.meta(&read_mark(&conversation)).unwrap().as_deref(),
            Some("1")
        );
    }

    #[test]
    fn the_setting_offers_the_usual_spans_and_the_current_one() {
        assert_eq!(choices(90), vec![0, 7, 30, 90, 365]);
        assert_eq!(choices(14), vec![0, 7, 14, 30, 90, 365]);
        let labels: Vec<String> = choices(0).into_iter().map(choice_label).collect();
        assert_eq!(labels, ["Off", "7 days", "30 days", "90 days", "1 year"]);
    }

    #[test]
    fn what_may_pass_keeps_the_pointer_and_what_cannot_drops_it() {
        assert_eq!(
            settle(Err(FetchError::Later("offline".into())), "alice"),
            Outcome::Later("offline".into())
        );
        assert_eq!(
            settle(Err(FetchError::Gone("deleted".into())), "alice"),
            Outcome::GiveUp("deleted".into())
        );
        let bytes = archive().encode();
        assert!(matches!(
            settle(Ok(bytes.clone()), "alice"),
            Outcome::Store(a) if a.messages.len() == 1 && !a.conversations[0].active
        ));
        assert!(matches!(settle(Ok(bytes), "mallory"), Outcome::GiveUp(_)));
        assert!(matches!(
            settle(Ok(Zeroizing::new(b"{".to_vec())), "alice"),
            Outcome::GiveUp(_)
        ));
    }

    #[test]
    fn the_pointer_survives_the_meta_and_damage_is_seen() {
        let pointer = AttachmentPointer {
            blob_id: "AAAA".into(),
            key: nightjar_core::content::AttachmentKey::from_bytes([7; 32]),
            digest: [9; 32],
            size: 12,
            media_type: ARCHIVE_MEDIA_TYPE.into(),
            file_name: None,
            caption: None,
            thumbnail: None,
        };
        assert_eq!(decode_pointer(&encode_pointer(&pointer)), Some(pointer));
        assert_eq!(decode_pointer("not a pointer"), None);
    }

    #[test]
    fn the_user_reads_how_much_came() {
        let text = arrived_text(Arrived {
            conversations: 1,
            messages: 3,
        });
        assert_eq!(
            text.as_deref(),
            Some("Your history from your other device is here: 3 messages in 1 conversation.")
        );
        assert_eq!(
            arrived_text(Arrived {
                conversations: 1,
                messages: 0
            }),
            None
        );
        assert!(
            given_up_text("gone")
                .starts_with("The history from your other device could not be fetched: gone.")
        );
    }
}
