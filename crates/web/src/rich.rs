//! What the user does with a message in the chat — reply, react (and withdraw a reaction),
//! edit or delete their own for everyone, report someone else's to the operator — and the
//! conversation's disappearing timer. Each is
//! one end-to-end encrypted message of the same `nightjar_core` content the native client
//! sends (`crates/client/src/client/rich.rs`), queued through the machine, which also refuses
//! an edit or delete of someone else's message; this module only decides what is offered and
//! draws it. A report is the native client's too: the machine's stored message builds it
//! (`StoredMessage::report_request`) and the server verifies it before keeping it.
//!
//! The actions of a message appear when it is hovered or focused (each message can take the
//! keyboard focus); the reaction picker, the edit box and the delete confirmation open inside
//! the message. Which of them is open lives here, not in the message's row, so that a row
//! drawn again (a receipt came, a reaction changed) keeps them.

use leptos::prelude::*;
use nightjar_core::ConversationId;
use nightjar_core::content::{Content, MessageId};
use wasm_bindgen::JsCast as _;

use crate::account::{failure_text, token};
use crate::net;
use crate::ui_state::{MessageView, ReactionView, Ui, duration_words, snippet};

/// The reactions offered (any emoji that arrives is shown).
pub(crate) const REACTIONS: [&str; 5] = ["👍", "❤️", "😂", "😮", "😢"];

/// The disappearing timers offered, in seconds (0 is off).
const TIMER_CHOICES: [u32; 6] = [0, 30, 300, 3600, 86_400, 604_800];

/// The message a reply being written answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ReplyDraft {
    /// The conversation it is in (a reply is sent only there).
    pub(crate) conversation: ConversationId,
    /// The answered message's id (32 hex digits).
    pub(crate) id: String,
    pub(crate) from: String,
    /// Its first line, for the composer's "Replying to" line.
    pub(crate) text: String,
}

/// The state of the chat's message actions: the reply being written, the message being
/// edited (by key) with its new text, and the reaction picker, delete confirmation or report
/// form open (with the reason being typed).
#[derive(Clone, Copy)]
pub(crate) struct Actions {
    ui: Ui,
    pub(crate) replying: RwSignal<Option<ReplyDraft>>,
    editing: RwSignal<Option<String>>,
    edit_text: RwSignal<String>,
    picking: RwSignal<Option<String>>,
    confirming: RwSignal<Option<String>>,
    reporting: RwSignal<Option<String>>,
    report_reason: RwSignal<String>,
}

impl Actions {
    /// Nothing open; everything closes when another conversation is shown.
    pub(crate) fn new(ui: Ui) -> Self {
        let actions = Self {
            ui,
            replying: RwSignal::new(None),
            editing: RwSignal::new(None),
            edit_text: RwSignal::new(String::new()),
            picking: RwSignal::new(None),
            confirming: RwSignal::new(None),
            reporting: RwSignal::new(None),
            report_reason: RwSignal::new(String::new()),
        };
        Effect::new(move || {
            ui.selected.track();
            actions.close();
            actions.replying.set(None);
        });
        actions
    }

    /// A key pressed in a message: Escape closes what is open in it.
    pub(crate) fn key_in_message(self, ev: &leptos::ev::KeyboardEvent) {
        if ev.key() == "Escape"
            && (self.picking.get_untracked().is_some()
                || self.confirming.get_untracked().is_some()
                || self.reporting.get_untracked().is_some()
                || self.editing.get_untracked().is_some())
        {
            ev.prevent_default();
            self.close();
        }
    }

    /// Closes the picker, the edit box, the confirmation and the report form.
    fn close(self) {
        self.editing.set(None);
        self.picking.set(None);
        self.confirming.set(None);
        self.reporting.set(None);
    }

    /// Sends `content` into the conversation shown.
    fn send(self, content: Content) {
        let (Some(d), Some(conversation)) =
            (self.ui.driver.get_value(), self.ui.selected.get_untracked())
        else {
            return;
        };
        d.intent(move |machine, now, ui| {
            if let Err(e) = machine.send_message(now, conversation, content) {
                ui.error(e.to_string());
            }
        });
    }

    /// The content of a message typed in the composer: a reply if one is being written in
    /// this conversation (which ends it), else text.
    pub(crate) fn compose(self, conversation: ConversationId, body: String) -> Content {
        let target = self
            .replying
            .get_untracked()
            .filter(|r| r.conversation == conversation)
            .and_then(|r| MessageId::from_hex(&r.id));
        self.replying.set(None);
        match target {
            Some(in_reply_to) => Content::Reply { in_reply_to, body },
            None => Content::Text { body },
        }
    }

    fn start_reply(self, m: &MessageView) {
        let Some(conversation) = self.ui.selected.get_untracked() else {
            return;
        };
        let text = match (&m.attachment, m.text.trim().is_empty()) {
            (Some(a), true) => format!("File: {}", a.name),
            _ => snippet(&m.text),
        };
        self.close();
        self.replying.set(Some(ReplyDraft {
            conversation,
            id: m.id.clone(),
            from: m.from.clone(),
            text,
        }));
        focus_by_id("draft");
    }

    /// Adds `emoji` to the message `id`, or withdraws it if it is this account's already.
    fn react(self, id: &str, emoji: &str, mine: bool) {
        self.picking.set(None);
        let Some(target) = MessageId::from_hex(id) else {
            return;
        };
        self.send(Content::Reaction {
            target,
            emoji: emoji.to_owned(),
            remove: mine,
        });
    }

    fn start_edit(self, m: &MessageView) {
        self.close();
        self.edit_text.set(m.text.clone());
        self.editing.set(Some(m.key.clone()));
    }

    /// Sends the edit of the message `id`; an attachment keeps a caption, and a text that
    /// did not change sends nothing.
    fn save_edit(self, id: &str, before: &str, attachment: bool) {
        let body = self.edit_text.get_untracked();
        if body.trim().is_empty() {
            self.ui.show(if attachment {
                "Give the file a caption.".into()
            } else {
                "A message cannot be empty: delete it instead.".into()
            });
            return;
        }
        self.editing.set(None);
        if body == before {
            return;
        }
        if let Some(target) = MessageId::from_hex(id) {
            self.send(Content::Edit { target, body });
        }
    }

    fn delete(self, id: &str) {
        self.confirming.set(None);
        if let Some(target) = MessageId::from_hex(id) {
            self.send(Content::Delete { target });
        }
    }

    /// Reports the message `id` from `from` in the conversation shown to the operator, with
    /// the reason typed (if any); says how it went.
    fn report(self, from: String, id: String) {
        let reason = self.report_reason.get_untracked().trim().to_owned();
        self.close();
        let (Some(d), Some(conversation)) =
            (self.ui.driver.get_value(), self.ui.selected.get_untracked())
        else {
            return;
        };
        d.intent(move |machine, _, ui| {
            let ui = *ui;
            let stored = machine
                .store()
                .messages(&conversation.to_string())
                .unwrap_or_default()
                .into_iter()
                .find(|m| m.from == from && m.id == id);
            let Some(stored) = stored else {
                ui.error("That message is no longer on this device.".into());
                return;
            };
            let request =
                match stored.report_request(Some(reason.as_str()).filter(|r| !r.is_empty())) {
                    Ok(request) => request,
                    Err(e) => return ui.error(format!("Cannot report: {e}.")),
                };
            let token = token(machine);
            leptos::task::spawn_local(async move {
                let sent = net::json::<nightjar_api::MessageReportResponse>(
                    "POST",
                    "/v1/reports/messages",
                    token.as_deref(),
                    Some(&request),
                )
                .await;
                match sent {
                    Ok(_) => ui.show(format!(
                        "Reported {from}'s message. The operator can now read that message, \
                         and only that one."
                    )),
                    Err(e) => ui.error(format!("The report failed: {}", failure_text(e))),
                }
            });
        });
    }

    /// Sets the conversation's disappearing timer (0 turns it off).
    fn set_timer(self, seconds: u32) {
        self.send(Content::DisappearingTimer { seconds });
    }
}

/// Moves the keyboard focus to the element with this id, if it is there.
fn focus_by_id(id: &str) {
    let element = web_sys::window()
        .and_then(|w| w.document())
        .and_then(|d| d.get_element_by_id(id))
        .and_then(|e| e.dyn_into::<web_sys::HtmlElement>().ok());
    if let Some(element) = element {
        let _ = element.focus();
    }
}

/// The quote a reply starts with.
pub(crate) fn quote(m: &MessageView) -> impl IntoView + use<> {
    m.quote.clone().map(|q| {
        let label = match &q.from {
            Some(from) => format!("In reply to {from}"),
            None => "In reply to".to_owned(),
        };
        view! {
            <blockquote class="quote" aria-label=label>
                {q.from.map(|from| view! { <span class="quote-from">{from}</span> })}
                <span class="quote-text">{q.text}</span>
            </blockquote>
        }
    })
}

/// The message's text, or the box editing it.
pub(crate) fn text(actions: Actions, m: &MessageView) -> impl IntoView + use<> {
    let key = m.key.clone();
    let id = m.id.clone();
    let before = m.text.clone();
    let attachment = m.attachment.is_some();
    let shown = m.text.clone();
    let has_text = !m.text.is_empty() || !attachment;
    move || {
        if actions.editing.get().as_deref() == Some(key.as_str()) {
            editor(actions, id.clone(), before.clone(), attachment).into_any()
        } else if has_text {
            view! { <p class="text">{shown.clone()}</p> }.into_any()
        } else {
            ().into_any()
        }
    }
}

/// The inline edit box: Enter saves, Shift+Enter starts a new line, Escape cancels (see
/// [`Actions::key_in_message`]).
fn editor(actions: Actions, id: String, before: String, attachment: bool) -> impl IntoView {
    let field = NodeRef::<leptos::html::Textarea>::new();
    Effect::new(move || {
        if let Some(f) = field.get() {
            let _ = f.focus();
            let end = u32::try_from(f.value().encode_utf16().count()).unwrap_or(0);
            let _ = f.set_selection_range(end, end);
        }
    });
    let save = {
        let (id, before) = (id.clone(), before.clone());
        move || actions.save_edit(&id, &before, attachment)
    };
    let save_on_enter = save.clone();
    let label = if attachment {
        "Edit caption"
    } else {
        "Edit message"
    };
    view! {
        <form class="edit" on:submit=move |ev: leptos::ev::SubmitEvent| { ev.prevent_default(); save(); }>
            <textarea node_ref=field aria-label=label rows="2"
                prop:value=move || actions.edit_text.get()
                on:input=move |ev| actions.edit_text.set(event_target_value(&ev))
                on:keydown=move |ev: leptos::ev::KeyboardEvent| {
                    if ev.key() == "Enter" && !ev.shift_key() && !ev.is_composing() {
                        ev.prevent_default();
                        save_on_enter();
                    }
                }></textarea>
            <div class="edit-actions">
                <button type="button" class="small" on:click=move |_| actions.editing.set(None)>"Cancel"</button>
                <button type="submit" class="small">"Save"</button>
            </div>
        </form>
    }
}

/// The reactions under a message: one button per emoji with its count; pressing one adds
/// this account's reaction, or withdraws it if it is there.
pub(crate) fn reactions(actions: Actions, m: &MessageView) -> impl IntoView + use<> {
    if m.reactions.is_empty() || !m.actions.answer {
        return None;
    }
    let id = m.id.clone();
    let buttons = m
        .reactions
        .iter()
        .map(|r| {
            let ReactionView { emoji, count, mine } = r.clone();
            let label = if mine {
                format!("{emoji} {count}, including you: withdraw your reaction")
            } else {
                format!("{emoji} {count}: react with {emoji}")
            };
            let (id, pressed) = (id.clone(), emoji.clone());
            view! {
                <button type="button" class="reaction" class:mine=mine aria-pressed=mine.to_string()
                    aria-label=label.clone() title=label
                    on:click=move |_| actions.react(&id, &pressed, mine)>
                    <span class="emoji">{emoji}</span>" "<span class="count">{count}</span>
                </button>
            }
        })
        .collect_view();
    Some(view! { <div class="reactions" role="group" aria-label="Reactions">{buttons}</div> })
}

/// A small icon drawn inline (no font needed).
fn icon(kind: &'static str) -> impl IntoView {
    match kind {
        "reply" => view! {
            <svg viewBox="0 0 16 16" width="16" height="16" aria-hidden="true">
                <path d="M6.5 3.5 2 8l4.5 4.5V10H9c2 0 3.6.8 4.5 2.5C13.2 9.2 11.5 7 9 7H6.5z" fill="currentColor"/>
            </svg>
        }
        .into_any(),
        "react" => view! {
            <svg viewBox="0 0 16 16" width="16" height="16" aria-hidden="true">
                <circle cx="8" cy="8" r="6.25" fill="none" stroke="currentColor" stroke-width="1.4"/>
                <circle cx="6" cy="6.6" r="1" fill="currentColor"/>
                <circle cx="10" cy="6.6" r="1" fill="currentColor"/>
                <path d="M5.2 9.6a3.2 3.2 0 0 0 5.6 0" fill="none" stroke="currentColor" stroke-width="1.4" stroke-linecap="round"/>
            </svg>
        }
        .into_any(),
        "edit" => view! {
            <svg viewBox="0 0 16 16" width="16" height="16" aria-hidden="true">
                <path d="M11.2 2.4a1.6 1.6 0 0 1 2.3 0l.1.1a1.6 1.6 0 0 1 0 2.3L6 12.4l-3.5 1.1 1.1-3.5z" fill="none" stroke="currentColor" stroke-width="1.4" stroke-linejoin="round"/>
            </svg>
        }
        .into_any(),
        "delete" => view! {
            <svg viewBox="0 0 16 16" width="16" height="16" aria-hidden="true">
                <path d="M2.75 4.5h10.5M6.25 4.5V2.75h3.5V4.5M4.25 4.5l.6 8.75h6.3l.6-8.75M6.75 7v4M9.25 7v4" fill="none" stroke="currentColor" stroke-width="1.3" stroke-linejoin="round" stroke-linecap="round"/>
            </svg>
        }
        .into_any(),
        "report" => view! {
            <svg viewBox="0 0 16 16" width="16" height="16" aria-hidden="true">
                <path d="M3.5 14.5V2.25M3.5 2.75h8.25l-1.75 3 1.75 3H3.5" fill="none" stroke="currentColor" stroke-width="1.4" stroke-linejoin="round" stroke-linecap="round"/>
            </svg>
        }
        .into_any(),
        _ => view! {
            <svg class="clock" viewBox="0 0 16 16" width="14" height="14" aria-hidden="true">
                <circle cx="8" cy="9" r="5.5" fill="none" stroke="currentColor" stroke-width="1.5"/>
                <path d="M8 6v3l2 1.5M6.25 1.75h3.5" fill="none" stroke="currentColor" stroke-width="1.5" stroke-linecap="round"/>
            </svg>
        }
        .into_any(),
    }
}

/// The message's actions (shown on hover or focus), and the reaction picker, the delete
/// confirmation or the report form when open.
pub(crate) fn toolbar(actions: Actions, m: &MessageView) -> impl IntoView + use<> {
    if !m.actions.answer {
        return None;
    }
    let amend = m.actions.amend;
    let reportable = m.actions.report;
    let key = m.key.clone();
    let open = |signal: RwSignal<Option<String>>| {
        let key = key.clone();
        move || signal.get().as_deref() == Some(key.as_str())
    };
    let (picking, picker_shown, confirming, reporting, report_shown) = (
        open(actions.picking),
        open(actions.picking),
        open(actions.confirming),
        open(actions.reporting),
        open(actions.reporting),
    );
    let (for_reply, for_edit) = (m.clone(), m.clone());
    let toggle_picker = {
        let key = key.clone();
        move |_: leptos::ev::MouseEvent| {
            let open = actions.picking.get_untracked().as_deref() == Some(key.as_str());
            actions.close();
            if !open {
                actions.picking.set(Some(key.clone()));
            }
        }
    };
    let ask_delete = {
        let key = key.clone();
        move |_: leptos::ev::MouseEvent| {
            actions.close();
            actions.confirming.set(Some(key.clone()));
        }
    };
    let ask_report = {
        let key = key.clone();
        move |_: leptos::ev::MouseEvent| {
            let open = actions.reporting.get_untracked().as_deref() == Some(key.as_str());
            actions.close();
            if !open {
                actions.report_reason.set(String::new());
                actions.reporting.set(Some(key.clone()));
            }
        }
    };
    let buttons = view! {
        <div class="msg-actions" role="group" aria-label="Message actions">
            <button type="button" class="icon" aria-label="Reply" title="Reply"
                on:click=move |_| actions.start_reply(&for_reply)>{icon("reply")}</button>
            <button type="button" class="icon" aria-label="React" title="React"
                aria-expanded=move || picking().to_string()
                on:click=toggle_picker>{icon("react")}</button>
            {amend.then(move || view! {
                <button type="button" class="icon" aria-label="Edit" title="Edit"
                    on:click=move |_| actions.start_edit(&for_edit)>{icon("edit")}</button>
                <button type="button" class="icon danger" aria-label="Delete" title="Delete for everyone"
                    on:click=ask_delete>{icon("delete")}</button>
            })}
            {reportable.then(move || view! {
                <button type="button" class="icon danger" aria-label="Report" title="Report to the operator"
                    aria-expanded=move || reporting().to_string()
                    on:click=ask_report>{icon("report")}</button>
            })}
        </div>
    };
    let id = m.id.clone();
    let reacted: Vec<String> = m
        .reactions
        .iter()
        .filter(|r| r.mine)
        .map(|r| r.emoji.clone())
        .collect();
    let picker = move || {
        picker_shown().then(|| {
            let choices = REACTIONS
                .iter()
                .map(|emoji| {
                    let mine = reacted.iter().any(|r| r.as_str() == *emoji);
                    let label = if mine {
                        format!("Withdraw {emoji}")
                    } else {
                        format!("React with {emoji}")
                    };
                    let id = id.clone();
                    view! {
                        <button type="button" class="pick" class:mine=mine aria-pressed=mine.to_string()
                            aria-label=label.clone() title=label
                            on:click=move |_| actions.react(&id, emoji, mine)>{*emoji}</button>
                    }
                })
                .collect_view();
            // The first choice takes the focus, as in a menu: the keyboard goes on from there.
            let picker = NodeRef::<leptos::html::Div>::new();
            Effect::new(move || {
                let first = picker
                    .get()
                    .and_then(|p| p.query_selector("button").ok().flatten())
                    .and_then(|b| b.dyn_into::<web_sys::HtmlElement>().ok());
                if let Some(first) = first {
                    let _ = first.focus();
                }
            });
            view! {
                <div class="picker" node_ref=picker role="group" aria-label="Pick a reaction">{choices}</div>
            }
        })
    };
    let id = m.id.clone();
    let confirm = move || {
        confirming().then(|| {
            let id = id.clone();
            let cancel = NodeRef::<leptos::html::Button>::new();
            Effect::new(move || {
                if let Some(b) = cancel.get() {
                    let _ = b.focus();
                }
            });
            view! {
                <div class="confirm" role="alertdialog" aria-label="Delete for everyone?">
                    <p>"Delete this message for everyone? It goes from every device in this conversation."</p>
                    <button type="button" class="small danger" on:click=move |_| actions.delete(&id)>"Delete for everyone"</button>
                    <button type="button" class="small" node_ref=cancel on:click=move |_| actions.confirming.set(None)>"Cancel"</button>
                </div>
            }
        })
    };
    let (from, id) = (m.from.clone(), m.id.clone());
    let report = move || {
        report_shown().then(|| {
            let (from, id) = (from.clone(), id.clone());
            let field = NodeRef::<leptos::html::Input>::new();
            Effect::new(move || {
                if let Some(f) = field.get() {
                    let _ = f.focus();
                }
            });
            let text = format!(
                "Report this message to the operator? They will be able to read it and see \
                 that {from} sent it; nothing else from this conversation."
            );
            view! {
                <form class="confirm report" role="alertdialog" aria-label="Report this message?"
                    on:submit=move |ev: leptos::ev::SubmitEvent| {
                        ev.prevent_default();
                        actions.report(from.clone(), id.clone());
                    }>
                    <p>{text}</p>
                    <input node_ref=field type="text" maxlength="1000" placeholder="Why? (optional)"
                        aria-label="Reason (optional)"
                        prop:value=move || actions.report_reason.get()
                        on:input=move |ev| actions.report_reason.set(event_target_value(&ev))/>
                    <button type="submit" class="small danger">"Report"</button>
                    <button type="button" class="small" on:click=move |_| actions.reporting.set(None)>"Cancel"</button>
                </form>
            }
        })
    };
    Some(view! { {buttons} {picker} {confirm} {report} })
}

/// The composer's "Replying to …" line, with a button that cancels the reply.
pub(crate) fn replying(actions: Actions) -> impl IntoView {
    move || {
        actions.replying.get().map(|r| {
            view! {
                <div class="replying" role="status">
                    <span class="replying-to">"Replying to " <strong>{r.from}</strong></span>
                    <span class="replying-text">{r.text}</span>
                    <button type="button" class="small" aria-label="Cancel reply"
                        on:click=move |_| { actions.replying.set(None); focus_by_id("draft"); }>"Cancel"</button>
                </div>
            }
        })
    }
}

/// The conversation header's disappearing-timer setting, showing the timer in force.
pub(crate) fn timer_setting(
    actions: Actions,
    timer: impl Fn() -> Option<u32> + Copy + Send + Sync + 'static,
) -> impl IntoView {
    let options = move || {
        let now = timer().unwrap_or(0);
        let mut choices = TIMER_CHOICES.to_vec();
        // A timer set elsewhere (the command line takes any) shows as it is.
        if !choices.contains(&now) {
            choices.push(now);
            choices.sort_unstable();
        }
        choices
            .into_iter()
            .map(|secs| {
                let label = if secs == 0 {
                    "Off".to_owned()
                } else {
                    duration_words(secs)
                };
                view! { <option value=secs.to_string() prop:selected=secs == now>{label}</option> }
            })
            .collect_view()
    };
    let title = move || match timer() {
        Some(secs) => format!(
            "Disappearing messages: new messages disappear {} after they are read",
            duration_words(secs)
        ),
        None => "Disappearing messages: off".to_owned(),
    };
    view! {
        <span class="timer" class:on=move || timer().is_some() title=title>
            {icon("timer")}
            <select aria-label="Disappearing messages"
                on:change=move |ev| {
                    if let Ok(secs) = event_target_value(&ev).parse::<u32>()
                        && Some(secs).filter(|s| *s > 0) != timer()
                    {
                        actions.set_timer(secs);
                    }
                }>
                {options}
            </select>
        </span>
    }
}
