//! The screens (Leptos, client-side rendered).

use leptos::prelude::*;
use nightjar_core::ConversationKind;
use nightjar_core::content::Content;
use nightjar_machine::ClientStore as _;

use crate::account;
use crate::driver::Driver;
use crate::ui_state::{AttachmentView, Delivery, HistoryTransferView, Phase, TransferView, Ui};
use crate::uploads::StoppedUpload;
use crate::vault::Vault;

/// The time of day of `ms`, in the user's time zone and locale.
fn clock(ms: u64) -> String {
    #[allow(clippy::cast_precision_loss)]
    let date = js_sys::Date::new(&wasm_bindgen::JsValue::from_f64(ms as f64));
    let options = crate::js::object(&[("hour", "2-digit".into()), ("minute", "2-digit".into())]);
    String::from(date.to_locale_time_string_with_options("default", &options))
}

type DriverCell = StoredValue<Option<Driver>, LocalStorage>;

/// A change to the selected group, run against the machine.
type GroupChange = Box<
    dyn FnOnce(
        &mut nightjar_machine::Machine<nightjar_machine::MemoryClientStore>,
        u64,
        nightjar_core::ConversationId,
    ) -> nightjar_machine::Result<()>,
>;
type VaultCell = StoredValue<Option<Vault>, LocalStorage>;

/// The whole app.
#[component]
pub(crate) fn App() -> impl IntoView {
    let ui = Ui::new();
    let driver: DriverCell = ui.driver;
    let vault: VaultCell = StoredValue::new_local(None);
    leptos::task::spawn_local(async move {
        if let Some((v, d)) = account::boot(ui).await {
            vault.set_value(Some(v));
            driver.set_value(d);
        }
    });
    view! {
        <div class="app">
            {move || match ui.phase.get() {
                Phase::Loading => view! { <p class="center" role="status">"Opening your encrypted profile…"</p> }.into_any(),
                Phase::Broken(why) => view! { <p class="center error" role="alert">{why}</p> }.into_any(),
                Phase::Welcome => view! { <Register ui=ui driver=driver vault=vault/> }.into_any(),
                Phase::Pending(code) => view! { <Waiting ui=ui code=code/> }.into_any(),
                Phase::Ready => view! { <Main ui=ui driver=driver vault=vault/> }.into_any(),
            }}
        </div>
    }
}

#[component]
fn Register(ui: Ui, driver: DriverCell, vault: VaultCell) -> impl IntoView {
    let username = RwSignal::new(String::new());
    let password = RwSignal::new(String::new());
    let error = RwSignal::new(None::<String>);
    let busy = RwSignal::new(false);
    let signing_in = RwSignal::new(false);
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let Some(v) = vault.get_value() else { return };
        busy.set(true);
        error.set(None);
        let (name, pass) = (
            username.get_untracked().trim().to_lowercase(),
            password.get_untracked(),
        );
        let existing = signing_in.get_untracked();
        leptos::task::spawn_local(async move {
            let result = if existing {
                crate::link::login(v, name, pass, ui).await
            } else {
                account::register(v, name, pass, ui)
                    .await
                    .map(|d| driver.set_value(Some(d)))
            };
            if let Err(e) = result {
                error.set(Some(e));
            }
            busy.set(false);
        });
    };
    view! {
        <main class="welcome">
            <h1>"Nightjar"</h1>
            <p class="lede">"Private messages, end-to-end encrypted. Reach people by username."</p>
            <div class="tabs" role="tablist">
                <button role="tab" aria-selected=move || (!signing_in.get()).to_string() on:click=move |_| signing_in.set(false)>"New account"</button>
                <button role="tab" aria-selected=move || signing_in.get().to_string() on:click=move |_| signing_in.set(true)>"I have an account"</button>
            </div>
            <form on:submit=submit aria-label=move || if signing_in.get() { "Sign in" } else { "Create an account" }>
                <label for="username">"Username"</label>
                <input id="username" name="username" autocomplete="username" required
                    prop:value=move || username.get()
                    on:input=move |ev| username.set(event_target_value(&ev))/>
                <label for="password">"Password"</label>
                <input id="password" name="password" type="password" required
                    autocomplete=move || if signing_in.get() { "current-password" } else { "new-password" }
                    prop:value=move || password.get()
                    on:input=move |ev| password.set(event_target_value(&ev))/>
                <button type="submit" disabled=move || busy.get()>
                    {move || match (busy.get(), signing_in.get()) {
                        (true, _) => "Creating your keys…",
                        (false, false) => "Create account",
                        (false, true) => "Sign in",
                    }}
                </button>
                <Show when=move || error.get().is_some()>
                    <p class="error" role="alert">{move || error.get().unwrap_or_default()}</p>
                </Show>
            </form>
            <p class="fine">"Your password never leaves this page (OPAQUE). Your keys and messages are stored in this browser, encrypted."</p>
        </main>
    }
}

#[component]
fn Waiting(ui: Ui, code: String) -> impl IntoView {
    let qr = crate::ui_state::qr_svg(code.as_bytes());
    view! {
        <main class="welcome">
            <h1>"Approve this browser"</h1>
            <p class="lede">{move || format!("Signed in as {}. This browser is a new device of your account: it can read nothing until one of your devices approves it.", ui.me.get())}</p>
            <p>"On a device that is already signed in, open " <strong>"Devices"</strong> " and enter this code, or run " <code>"nightjar approve CODE"</code> ":"</p>
            <p class="code" aria-label="Approval code">{code.clone()}</p>
            <div class="qr" inner_html=qr></div>
            <p class="fine" role="status">"Waiting for approval…"</p>
        </main>
    }
}

#[component]
fn Devices(ui: Ui, driver: DriverCell) -> impl IntoView {
    let code = RwSignal::new(String::new());
    let approve = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let typed = code.get_untracked();
        code.set(String::new());
        if let Some(d) = driver.get_value() {
            let again = d.clone();
            d.intent(move |machine, _, ui| {
                let token = account::token(machine).unwrap_or_default();
                leptos::task::spawn_local(crate::link::approve(again, token, typed, *ui));
            });
        }
    };
    let remove = move |device_id: String| {
        if let Some(d) = driver.get_value() {
            let again = d.clone();
            d.intent(move |machine, _, _| {
                let token = account::token(machine).unwrap_or_default();
                crate::link::remove(&again, token, device_id);
            });
        }
    };
    // How far back the history a device approved here gets goes (0: none).
    let history_days = RwSignal::new(None::<u32>);
    if let Some(d) = driver.get_value() {
        d.intent(move |machine, _, _| history_days.set(Some(crate::history::days(machine))));
    }
    let set_history_days = move |ev: leptos::ev::Event| {
        let Ok(days) = event_target_value(&ev).parse::<u32>() else {
            return;
        };
        history_days.set(Some(days));
        if let Some(d) = driver.get_value() {
            d.intent(move |machine, _, ui| {
                if let Err(e) = crate::history::set_days(machine, days) {
                    ui.error(e);
                }
            });
        }
    };
    let history_options = move || {
        history_days.get().map(|current| {
            crate::history::choices(current)
                .into_iter()
                .map(|days| {
                    view! {
                        <option value=days.to_string() selected=days == current>{crate::history::choice_label(days)}</option>
                    }
                })
                .collect_view()
        })
    };
    let sending = move || {
        ui.history
            .get()
            .filter(|h| h.sending)
            .map(|h| history_bar(&h))
    };
    view! {
        <div class="dialog" role="dialog" aria-modal="true" aria-labelledby="devices-title">
            <h3 id="devices-title">"Your devices"</h3>
            <ul class="devices">
                <For each=move || ui.devices.get().unwrap_or_default() key=|d| (d.device_id.clone(), d.current, format!("{:?}", d.status)) let:device>
                    {
                        let id = device.device_id.clone();
                        let current = device.current;
                        let label = format!("{}{}", device.device_id, if current { " (this browser)" } else { "" });
                        let status = format!("{:?}", device.status).to_lowercase();
                        view! {
                            <li>
                                <span class="device">{label}</span>
                                <span class="fine">{status}</span>
                                <Show when=move || !current>
                                    {
                                        let id = id.clone();
                                        view! { <button class="small danger" aria-label=format!("Remove device {id}") on:click=move |_| remove(id.clone())>"Remove"</button> }
                                    }
                                </Show>
                            </li>
                        }
                    }
                </For>
            </ul>
            <form class="approve" on:submit=approve>
                <label for="approve-code">"Approve a new device: the code it shows"</label>
                <input id="approve-code" autocomplete="off" prop:value=move || code.get() on:input=move |ev| code.set(event_target_value(&ev))/>
                <button type="submit">"Approve"</button>
            </form>
            <div class="history-setting">
                <label for="history-days">"History for a new device"</label>
                <select id="history-days" on:change=set_history_days disabled=move || history_days.get().is_none()>{history_options}</select>
                <p class="fine">"A device you approve here gets your conversations and the messages of this period, end-to-end encrypted for it alone."</p>
            </div>
            {sending}
            <div class="actions"><button on:click=move |_| ui.devices.set(None)>"Close"</button></div>
        </div>
    }
}

#[component]
fn Main(ui: Ui, driver: DriverCell, vault: VaultCell) -> impl IntoView {
    let logout = move || {
        let (Some(d), Some(v)) = (driver.get_value(), vault.get_value()) else {
            return;
        };
        d.intent(move |machine, _, _| {
            let token = account::token(machine);
            leptos::task::spawn_local(account::logout(v, token));
        });
    };
    let open_devices = move || {
        if let Some(d) = driver.get_value() {
            let again = d.clone();
            d.intent(move |machine, _, ui| {
                let token = account::token(machine).unwrap_or_default();
                leptos::task::spawn_local(crate::link::devices(again, token, *ui));
            });
        }
    };
    let peer = RwSignal::new(String::new());
    let start_chat = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let name = peer.get_untracked().trim().to_lowercase();
        if name.is_empty() {
            return;
        }
        peer.set(String::new());
        if let Some(d) = driver.get_value() {
            d.intent(
                move |machine, now, ui| match machine.direct_conversation(&name) {
                    Ok(Some(existing)) => ui.selected.set(Some(existing)),
                    Ok(None) => {
                        // History from another device with them, not joined yet: that one
                        // (it becomes writable when a device of the account adds this one),
                        // not a second conversation.
                        let waiting = ui.conversations.with_untracked(|list| {
                            list.iter()
                                .find(|c| {
                                    c.history_only
                                        && !c.group
                                        && c.peer.as_deref() == Some(name.as_str())
                                })
                                .map(|c| c.id)
                        });
                        if let Some(id) = waiting {
                            ui.selected.set(Some(id));
                        } else if let Err(e) = machine.create_conversation(
                            now,
                            ConversationKind::Direct,
                            &[name],
                            None,
                        ) {
                            ui.error(e.to_string());
                        }
                    }
                    Err(e) => ui.error(e.to_string()),
                },
            );
        }
    };
    let group_open = RwSignal::new(false);
    let group_name = RwSignal::new(String::new());
    let group_members = RwSignal::new(String::new());
    let create_group = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let name = group_name.get_untracked().trim().to_owned();
        let members: Vec<String> = group_members
            .get_untracked()
            .split([',', ' '])
            .map(|m| m.trim().to_lowercase())
            .filter(|m| !m.is_empty())
            .collect();
        group_name.set(String::new());
        group_members.set(String::new());
        group_open.set(false);
        if let Some(d) = driver.get_value() {
            d.intent(move |machine, now, ui| {
                if let Err(e) =
                    machine.create_conversation(now, ConversationKind::Group, &members, Some(&name))
                {
                    ui.error(e.to_string());
                }
            });
        }
    };
    let select = move |id| {
        ui.selected.set(Some(id));
        if let Some(d) = driver.get_value() {
            d.intent(|_, _, _| {});
        }
    };
    let relay = RwSignal::new(false);
    if let Some(d) = driver.get_value() {
        d.intent(move |machine, _, _| {
            relay.set(
                machine
                    .store()
                    .meta(crate::call::RELAY_CALLS)
                    .ok()
                    .flatten()
                    .is_some_and(|v| v == "1"),
            );
        });
    }
    let receipts = RwSignal::new(true);
    if let Some(d) = driver.get_value() {
        d.intent(move |machine, _, _| {
            receipts.set(crate::ui_state::read_receipts_on(machine.store()));
        });
    }
    let set_receipts = move |on: bool| {
        receipts.set(on);
        if let Some(d) = driver.get_value() {
            d.intent(move |machine, _, _| {
                let _ = machine.store().set_meta(
                    crate::ui_state::READ_RECEIPTS,
                    if on { "on" } else { "off" },
                );
            });
        }
    };
    let set_relay = move |on: bool| {
        relay.set(on);
        if let Some(d) = driver.get_value() {
            d.intent(move |machine, _, _| {
                let _ = machine
                    .store()
                    .set_meta(crate::call::RELAY_CALLS, if on { "1" } else { "0" });
            });
        }
    };
    let notice_items = move || {
        let list: Vec<(usize, String)> = ui.notices.get().into_iter().enumerate().collect();
        list
    };
    view! {
        <header class="top">
            <span class="brand">"Nightjar"</span>
            <span class="me" aria-label="Signed in as">{move || ui.me.get()}</span>
            <span class="conn" role="status" class:offline=move || !ui.online.get()>
                {move || if ui.online.get() { "online" } else { "offline: messages wait and go out when you're back" }}
            </span>
            <button class="small" on:click=move |_| open_devices()>"Devices"</button>
            <details class="settings">
                <summary>"Settings"</summary>
                <div class="settings-panel">
                    <label>
                        <input type="checkbox" prop:checked=move || receipts.get()
                            on:change=move |ev| set_receipts(event_target_checked(&ev))/>
                        "Send read receipts (tell people when you have read their messages)"
                    </label>
                    <label>
                        <input type="checkbox" prop:checked=move || relay.get()
                            on:change=move |ev| set_relay(event_target_checked(&ev))/>
                        "Always relay calls (hides your IP address from the people you call)"
                    </label>
                </div>
            </details>
            <button class="logout small" on:click=move |_| logout()>"Log out"</button>
        </header>
        <Show when=move || ui.expired.get()>
            <p class="error banner" role="alert">"This device's session ended (it was removed, or the session expired)."</p>
        </Show>
        {move || ui.history.get().filter(|h| !h.sending).map(|h| view! { <div class="banner">{history_bar(&h)}</div> })}
        <div class="layout" class:chatting=move || ui.selected.get().is_some()>
            <nav class="sidebar" aria-label="Conversations">
                <form class="new-chat" on:submit=start_chat>
                    <label for="peer" class="sr">"Start a chat with username"</label>
                    <input id="peer" placeholder="Start a chat: username" autocomplete="off"
                        prop:value=move || peer.get()
                        on:input=move |ev| peer.set(event_target_value(&ev))/>
                    <button type="submit" aria-label="Start chat">"+"</button>
                </form>
                <details class="new-group" prop:open=move || group_open.get()
                    on:toggle=move |ev| group_open.set(event_target::<web_sys::HtmlDetailsElement>(&ev).open())>
                    <summary>"New group"</summary>
                    <form on:submit=create_group aria-label="New group">
                        <label for="group-name">"Group name"</label>
                        <input id="group-name" autocomplete="off" prop:value=move || group_name.get()
                            on:input=move |ev| group_name.set(event_target_value(&ev))/>
                        <label for="group-members">"Members (usernames, comma-separated)"</label>
                        <input id="group-members" autocomplete="off" prop:value=move || group_members.get()
                            on:input=move |ev| group_members.set(event_target_value(&ev))/>
                        <button type="submit">"Create group"</button>
                    </form>
                </details>
                <ul class="conversations">
                    <For each=move || ui.conversations.get() key=|c| (c.id, c.unread, c.title.clone(), c.history_only) let:c>
                        {
                            let id = c.id;
                            let history_only = c.history_only;
                            let label = if c.unread > 0 { format!("{}, {} unread", c.title, c.unread) } else { c.title.clone() };
                            view! {
                                <li>
                                    <button class="conversation" aria-label=label
                                        class:active=move || ui.selected.get() == Some(id)
                                        on:click=move |_| select(id)>
                                        <span class="title">{if c.group { "# " } else { "" }}{c.title.clone()}</span>
                                        <Show when=move || history_only>
                                            <span class="tag" title="Earlier messages from your other device: this browser joins the conversation when one of your devices adds it">"history"</span>
                                        </Show>
                                        <Show when=move || { c.unread > 0 }>
                                            <span class="badge">{c.unread}</span>
                                        </Show>
                                    </button>
                                </li>
                            }
                        }
                    </For>
                </ul>
            </nav>
            <Chat ui=ui driver=driver/>
        </div>
        <Show when=move || ui.devices.get().is_some()>
            <Devices ui=ui driver=driver/>
        </Show>
        <Show when=move || ui.call.get().is_some()>
            <crate::call::CallScreen ui=ui/>
        </Show>
        <ul class="notices" role="status" aria-live="polite">
            <For each=notice_items key=|n| n.clone() let:n>
                <li>{n.1}</li>
            </For>
        </ul>
    }
}

#[component]
fn Chat(ui: Ui, driver: DriverCell) -> impl IntoView {
    let draft = RwSignal::new(String::new());
    let actions = crate::rich::Actions::new(ui);
    // Typing indicators: at most one every few seconds while the user types.
    let last_typing = StoredValue::new(0u64);
    let typing_now = move || {
        let now = crate::js::now_ms();
        if now.saturating_sub(last_typing.get_value()) < 4_000 {
            return;
        }
        last_typing.set_value(now);
        let (Some(d), Some(conversation)) = (driver.get_value(), ui.selected.get_untracked())
        else {
            return;
        };
        d.intent(move |machine, now, _| {
            let _ = machine.send_message(now, conversation, Content::Typing { active: true });
        });
    };
    let typing_line = move || {
        let selected = ui.selected.get();
        let now = crate::js::now_ms();
        let names: Vec<String> = ui
            .typing
            .get()
            .into_iter()
            .filter(|(c, _, until)| Some(*c) == selected && *until > now)
            .map(|(_, from, _)| from)
            .collect();
        match names.as_slice() {
            [] => String::new(),
            [one] => format!("{one} is typing…"),
            more => format!("{} are typing…", more.join(", ")),
        }
    };
    let send = move || {
        let text = draft.get_untracked();
        if text.trim().is_empty() {
            return;
        }
        let Some(conversation) = ui.selected.get_untracked() else {
            return;
        };
        draft.set(String::new());
        // Typing after this message is news again.
        last_typing.set_value(0);
        if let Some(d) = driver.get_value() {
            let content = actions.compose(conversation, text);
            d.intent(move |machine, now, ui| {
                if let Err(e) = machine.send_message(now, conversation, content) {
                    ui.error(e.to_string());
                }
            });
        }
    };
    let retry = move || {
        if let Some(d) = driver.get_value() {
            d.intent(|machine, now, ui| {
                if let Err(e) = machine.retry_refused(now) {
                    ui.error(e.to_string());
                }
            });
        }
    };
    let attach_files = move |ev: leptos::ev::Event| {
        let input: web_sys::HtmlInputElement = event_target(&ev);
        let files: Vec<web_sys::File> = input
            .files()
            .map(|list| (0..list.length()).filter_map(|i| list.get(i)).collect())
            .unwrap_or_default();
        // The same file can be chosen again.
        input.set_value("");
        if let (Some(d), Some(conversation)) = (driver.get_value(), ui.selected.get_untracked()) {
            crate::files::attach(&d, conversation, files);
        }
    };
    let download = move |key: String| {
        let (Some(d), Some(conversation)) = (driver.get_value(), ui.selected.get_untracked())
        else {
            return;
        };
        // Usernames have no `/`: the key is `from/id`.
        if let Some((from, id)) = key.rsplit_once('/') {
            crate::files::download(&d, conversation, from.to_owned(), id.to_owned());
        }
    };
    let uploads = move || {
        let selected = ui.selected.get();
        ui.transfers
            .get()
            .into_iter()
            .filter(|t| t.upload && Some(t.conversation) == selected)
            .collect::<Vec<_>>()
    };
    let stopped = move || {
        let selected = ui.selected.get();
        ui.stopped_uploads
            .get()
            .into_iter()
            .filter(|u| Some(u.conversation) == selected)
            .collect::<Vec<_>>()
    };
    let keydown = move |ev: leptos::ev::KeyboardEvent| {
        if ev.key() == "Enter" && !ev.shift_key() && !ev.is_composing() {
            ev.prevent_default();
            send();
        } else if ev.key() == "Escape" && actions.replying.get_untracked().is_some() {
            ev.prevent_default();
            actions.replying.set(None);
        }
    };
    let current = move || {
        let selected = ui.selected.get();
        ui.conversations
            .get()
            .into_iter()
            .find(|c| Some(c.id) == selected)
    };
    let title = move || current().map(|c| c.title).unwrap_or_default();
    let request_from = move || current().and_then(|c| c.request_from);
    // History from another device, in a conversation this one is not in yet.
    let history_only = move || current().is_some_and(|c| c.history_only);
    let members_open = RwSignal::new(false);
    let call = move |video: bool| {
        let Some(c) = current() else { return };
        if c.group {
            crate::call::start_group(ui, c.id, c.title, video, None);
        } else if let Some(peer) = c.peer {
            crate::call::start(ui, c.id, peer, video);
        }
    };
    let ongoing = move || {
        let selected = ui.selected.get();
        ui.group_calls
            .get()
            .into_iter()
            .filter(|c| Some(c.conversation) == selected)
            .max_by_key(|c| c.participants)
    };
    let safety_for = move |peer: Option<String>| {
        let (Some(d), Some(peer)) = (driver.get_value(), peer) else {
            return;
        };
        d.intent(move |machine, _, ui| ui.show_safety(machine, &peer));
    };
    let trust = move |peer: String| {
        if let Some(d) = driver.get_value() {
            d.intent(move |machine, now, ui| {
                if let Err(e) = machine.trust(now, &peer) {
                    ui.error(e.to_string());
                }
            });
        }
    };
    let decide = move |accept: bool| {
        let (Some(d), Some(from)) = (driver.get_value(), request_from()) else {
            return;
        };
        let again = d.clone();
        d.intent(move |machine, _, ui| {
            let token = account::token(machine);
            let ui = *ui;
            leptos::task::spawn_local(async move {
                match account::decide(token, &from, accept).await {
                    Ok(consent) => again.intent(move |machine, _, _| {
                        let _ = machine.store().set_consent(&from, Some(consent));
                    }),
                    Err(e) => ui.error(e),
                }
            });
        });
    };
    view! {
        <section class="chat" aria-label="Chat">
            <Show when=move || ui.selected.get().is_some() fallback=|| view! { <p class="empty">"Pick a conversation, or start one with a username."</p> }>
                <header class="chat-head">
                    <button class="back" aria-label="Back to conversations" on:click=move |_| ui.selected.set(None)>"‹"</button>
                    <h2>{title}</h2>
                    <Show when=move || !history_only()>
                        {crate::rich::timer_setting(actions, move || current().and_then(|c| c.timer))}
                    </Show>
                    <Show when=move || ongoing().is_none() && !history_only()>
                        <button class="small" aria-label="Voice call" on:click=move |_| call(false)>"Call"</button>
                        <button class="small" aria-label="Video call" on:click=move |_| call(true)>"Video"</button>
                    </Show>
                    <Show when=move || current().is_some_and(|c| !c.group)>
                        <button class="small" on:click=move |_| safety_for(current().and_then(|c| c.peer))>"Safety number"</button>
                    </Show>
                    <Show when=move || current().is_some_and(|c| c.group && !c.history_only)>
                        <button class="small" aria-expanded=move || members_open.get().to_string()
                            on:click=move |_| members_open.update(|o| *o = !*o)>"Members"</button>
                    </Show>
                    <span class="e2ee" title="Only the people in this conversation can read its messages">
                        <svg class="lock" viewBox="0 0 16 16" width="12" height="12" aria-hidden="true"><path d="M4 7V5a4 4 0 0 1 8 0v2h1v8H3V7zm2 0h4V5a2 2 0 0 0-4 0z" fill="currentColor"/></svg>
                        " end-to-end encrypted"
                    </span>
                </header>
                <For each=move || current().map(|c| c.changed).unwrap_or_default() key=|n| n.clone() let:name>
                    {
                        let who = name.clone();
                        let trust_who = name.clone();
                        view! {
                            <div class="warning" role="alert">
                                <p><strong>{format!("The safety number with {name} changed.")}</strong>
                                   {format!(" {name}'s identity key is new: they may have reinstalled, or someone may be trying to read your messages. Messages with {name} wait until you compare the new safety number with them.")}</p>
                                <button on:click=move |_| safety_for(Some(who.clone()))>"Compare safety numbers"</button>
                                <button on:click=move |_| trust(trust_who.clone())>"I compared them: trust the new key"</button>
                            </div>
                        }
                    }
                </For>
                <Show when=move || ongoing().is_some()>
                    <div class="ongoing-call" role="region" aria-label="Call in progress">
                        <p>{move || {
                            let n = ongoing().map_or(0, |c| c.participants);
                            let kind = if ongoing().is_some_and(|c| c.video) { "video" } else { "voice" };
                            format!("A group {kind} call is going on ({n} in it).")
                        }}</p>
                        <button class="accept" on:click=move |_| call(ongoing().is_some_and(|c| c.video))>"Join call"</button>
                    </div>
                </Show>
                <Show when=move || members_open.get() && current().is_some_and(|c| c.group)>
                    <Members ui=ui driver=driver/>
                </Show>
                <Show when=move || request_from().is_some()>
                    <div class="request" role="region" aria-label="Message request">
                        <p>{move || format!("{} is not in your contacts yet. Accept to reply and see their messages as usual, or block them: the server will refuse their messages.", request_from().unwrap_or_default())}</p>
                        <button type="submit" on:click=move |_| decide(true)>"Accept"</button>
                        <button class="danger" on:click=move |_| decide(false)>"Block"</button>
                    </div>
                </Show>
                <ol class="messages" role="log" aria-live="polite" aria-label="Messages">
                    // A row is drawn again whenever anything in it changed.
                    <For each=move || ui.messages.get() key=|m| format!("{m:?}") let:m>
                        {
                            let mine = m.mine;
                            let state = match &m.delivery {
                                Delivery::Sending => "sending".to_owned(),
                                Delivery::Sent => "sent".to_owned(),
                                Delivery::Delivered => "delivered".to_owned(),
                                Delivery::Read => "read".to_owned(),
                                Delivery::Failed(why) => format!("failed: {why}"),
                                Delivery::Incoming => String::new(),
                            };
                            let data_state = state.clone();
                            let failed = matches!(m.delivery, Delivery::Failed(_));
                            let note = m.note;
                            let file = m.attachment.clone().map(|a| attachment_view(ui, m.key.clone(), a, download));
                            // A message with actions takes the focus (which shows them).
                            let focusable = m.actions.answer.then_some("0");
                            view! {
                                <li class="message" class:mine=mine class:system=m.system class:deleted=note == "deleted" data-state=data_state
                                    tabindex=focusable on:keydown=move |ev| actions.key_in_message(&ev)>
                                    <span class="from">{m.from.clone()}</span>
                                    {crate::rich::quote(&m)}
                                    {file}
                                    {crate::rich::text(actions, &m)}
                                    {crate::rich::reactions(actions, &m)}
                                    <span class="meta">
                                        <time>{clock(m.sent_at)}</time>
                                        <Show when=move || note == "edited">
                                            <span class="edited">"edited"</span>
                                        </Show>
                                        <span class="state">{state}</span>
                                        <Show when=move || failed>
                                            <button class="small" on:click=move |_| retry()>"Retry"</button>
                                        </Show>
                                    </span>
                                    {crate::rich::toolbar(actions, &m)}
                                </li>
                            }
                        }
                    </For>
                </ol>
                <p class="typing" aria-live="polite">{typing_line}</p>
                <div class="uploads">
                    {move || stopped().into_iter().map(|u| stopped_upload(ui, driver, u)).collect_view()}
                    {move || uploads().iter().map(progress_bar).collect_view()}
                </div>
                {crate::rich::replying(actions)}
                <Show when=history_only>
                    <p class="history-note" role="note">"Earlier messages, from your other device. You can write here once one of your devices adds this browser to the conversation: it does when it is next online."</p>
                </Show>
                <form class="composer" class:hidden=history_only on:submit=move |ev: leptos::ev::SubmitEvent| { ev.prevent_default(); send(); }>
                    <input id="attach" type="file" multiple class="sr attach-input" on:change=attach_files/>
                    <label for="attach" class="attach" title="Send a file, encrypted on this device">"Attach"</label>
                    <label for="draft" class="sr">"Message"</label>
                    <textarea id="draft" rows="1" placeholder="Message" title="Enter sends; Shift+Enter starts a new line"
                        prop:value=move || draft.get()
                        on:input=move |ev| { draft.set(event_target_value(&ev)); typing_now(); }
                        on:keydown=keydown></textarea>
                    <button type="submit" aria-label="Send">"Send"</button>
                </form>
            </Show>
            <Safety ui=ui driver=driver/>
        </section>
    }
}

/// A transfer's progress bar: the step, the file and how far it got.
fn progress_bar(t: &TransferView) -> impl IntoView + use<> {
    let percent = crate::files::percent(t.done, t.total);
    let what = format!("{} {}", t.step.label(), t.name);
    view! {
        <div class="transfer">
            <span class="transfer-label" aria-hidden="true">{format!("{what}… {percent} %")}</span>
            <progress max="100" value=percent.to_string() aria-label=what></progress>
        </div>
    }
}

/// An upload that stopped (the page was reloaded or closed, or the network failed past the
/// retries): how far it got, Resume (with the file this page still holds, or by choosing it
/// again) and Discard.
fn stopped_upload(ui: Ui, driver: DriverCell, u: StoppedUpload) -> impl IntoView {
    let percent = crate::files::percent(u.uploaded, u.total);
    let held = ui.held_files.with_value(|held| held.contains_key(&u.id));
    let text = format!(
        "{} ({}) was not sent: its upload stopped at {percent} %.",
        u.name,
        crate::files::human_size(u.size)
    );
    let (id, for_discard) = (u.id.clone(), u.id.clone());
    let resume = move |file: Option<web_sys::File>| {
        let file = file.or_else(|| ui.held_files.with_value(|held| held.get(&id).cloned()));
        if let (Some(d), Some(file)) = (driver.get_value(), file) {
            crate::files::resume(&d, id.clone(), file);
        }
    };
    let picker_id = format!(
        "resume-{}",
        u.id.replace(|c: char| !c.is_ascii_alphanumeric(), "-")
    );
    let label = format!("Stopped upload: {}", u.name);
    let choose = format!("Choose {} again to resume", u.name);
    let action = if held {
        let resume = resume.clone();
        view! { <button type="button" class="small" on:click=move |_| resume(None)>"Resume"</button> }
            .into_any()
    } else {
        let resume = resume.clone();
        view! {
            <input id=picker_id.clone() type="file" class="sr" aria-label=choose.clone()
                on:change=move |ev| {
                    let input: web_sys::HtmlInputElement = event_target(&ev);
                    let file = input.files().and_then(|list| list.get(0));
                    input.set_value("");
                    if file.is_some() {
                        resume(file);
                    }
                }/>
            <label for=picker_id class="button small" title="This page cannot keep a file across a reload: choose the same file and only what is missing is sent">{choose}</label>
        }
        .into_any()
    };
    view! {
        <div class="transfer stopped" role="group" aria-label=label>
            <span>{text}</span>
            {action}
            <button type="button" class="small" on:click=move |_| {
                if let Some(d) = driver.get_value() {
                    crate::files::discard(&d, for_discard.clone());
                }
            }>"Discard"</button>
        </div>
    }
}

/// The history archive's progress bar: `Sending history… 40 %`, `Fetching history… 40 %`.
fn history_bar(h: &HistoryTransferView) -> impl IntoView + use<> {
    let percent = crate::files::percent(h.done, h.total);
    let what = h.label();
    view! {
        <div class="transfer history-transfer" role="status">
            <span class="transfer-label" aria-hidden="true">{format!("{what}… {percent} %")}</span>
            <progress max="100" value=percent.to_string() aria-label=what></progress>
        </div>
    }
}

/// A file in a message: a picture's thumbnail, the name and size, and Download (with its
/// progress bar while it runs), then Save once this page holds the file.
fn attachment_view(
    ui: Ui,
    key: String,
    a: AttachmentView,
    download: impl Fn(String) + Copy + Send + Sync + 'static,
) -> impl IntoView {
    let name = a.name.clone();
    let video = a.video;
    let kind = if video { "Video" } else { "Picture" };
    let thumbnail = a.thumbnail.clone().map(|t| {
        view! {
            <span class="thumb-frame">
                <img class="thumb" src=t.url width=t.width height=t.height alt=format!("{kind}: {name}")/>
                {video.then(|| view! { <span class="play" aria-hidden="true">"▶"</span> })}
            </span>
        }
    });
    let transfer = {
        let key = key.clone();
        move || ui.transfers.get().into_iter().find(|t| t.key == key)
    };
    let saved = {
        let key = key.clone();
        move || ui.saved.get().get(&key).cloned()
    };
    let name = a.name.clone();
    let fetchable = a.fetchable;
    let action = move || {
        if !fetchable {
            return view! { <span class="fine">"not on this device"</span> }.into_any();
        }
        match (transfer(), saved()) {
        (Some(t), _) => progress_bar(&t).into_any(),
        (None, Some(file)) => view! {
            <a class="button small" href=file.url download=file.name aria-label=format!("Save {name}")>"Save"</a>
        }
        .into_any(),
        (None, None) => {
            let key = key.clone();
            view! {
                <button class="small" aria-label=format!("Download {name}") on:click=move |_| download(key.clone())>"Download"</button>
            }
            .into_any()
        }
    }
    };
    view! {
        <div class="attachment" role="group" aria-label=format!("File: {}", a.name)>
            {thumbnail}
            <div class="file">
                <span class="file-name">{a.name.clone()}</span>
                <span class="file-size">{crate::files::human_size(a.size)}</span>
                {action}
            </div>
        </div>
    }
}

#[component]
fn Safety(ui: Ui, driver: DriverCell) -> impl IntoView {
    let verify = move |_| {
        let (Some(d), Some(panel)) = (driver.get_value(), ui.safety.get_untracked()) else {
            return;
        };
        d.intent(
            move |machine, _, ui| match machine.mark_verified(&panel.peer) {
                Ok(()) => ui.show_safety(machine, &panel.peer),
                Err(e) => ui.error(e.to_string()),
            },
        );
    };
    view! {
        <Show when=move || ui.safety.get().is_some()>
            <div class="dialog" role="dialog" aria-modal="true" aria-labelledby="safety-title">
                <h3 id="safety-title">{move || format!("Safety number with {}", ui.safety.get().map(|p| p.peer).unwrap_or_default())}</h3>
                <p class="fine">"Compare these digits with the ones on their device, in person or on a call, or scan their code. If they match, nobody is between you."</p>
                <p class="digits" aria-label="Safety number">{move || ui.safety.get().map(|p| p.grouped).unwrap_or_default()}</p>
                <div class="qr" inner_html=move || ui.safety.get().map(|p| p.qr_svg).unwrap_or_default()></div>
                <Show when=move || ui.safety.get().is_some_and(|p| p.changed.is_some())>
                    <p class="warning">{move || format!("Their new identity key would give: {}", ui.safety.get().and_then(|p| p.changed).unwrap_or_default())}</p>
                </Show>
                <p class="verified" role="status">{move || if ui.safety.get().is_some_and(|p| p.verified) { "✓ Verified" } else { "Not verified" }}</p>
                <div class="actions">
                    <Show when=move || !ui.safety.get().is_some_and(|p| p.verified)>
                        <button type="submit" on:click=verify>"Mark as verified"</button>
                    </Show>
                    <button on:click=move |_| ui.safety.set(None)>"Close"</button>
                </div>
            </div>
        </Show>
    }
}

#[component]
fn Members(ui: Ui, driver: DriverCell) -> impl IntoView {
    let add_name = RwSignal::new(String::new());
    let new_name = RwSignal::new(String::new());
    let current = move || {
        let selected = ui.selected.get();
        ui.conversations
            .get()
            .into_iter()
            .find(|c| Some(c.id) == selected)
    };
    let act = move |f: GroupChange| {
        let (Some(d), Some(c)) = (driver.get_value(), ui.selected.get_untracked()) else {
            return;
        };
        d.intent(move |machine, now, ui| {
            if let Err(e) = f(machine, now, c) {
                ui.error(e.to_string());
            }
        });
    };
    let add = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let name = add_name.get_untracked().trim().to_lowercase();
        add_name.set(String::new());
        act(Box::new(move |m, now, c| {
            m.add_member(now, c, &name).map(drop)
        }));
    };
    let leave = move || {
        act(Box::new(|m, now, c| m.leave_group(now, c)));
        ui.selected.set(None);
    };
    let rename = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let name = new_name.get_untracked();
        new_name.set(String::new());
        act(Box::new(move |m, now, c| m.rename_group(now, c, &name)));
    };
    view! {
        <div class="members" role="region" aria-label="Group members">
            <ul>
                <For each=move || current().map(|c| c.members).unwrap_or_default() key=|m| m.clone() let:member>
                    {
                        let me = member == ui.me.get_untracked();
                        let gone = member.clone();
                        view! {
                            <li>
                                <span>{member.clone()}{if me { " (you)" } else { "" }}</span>
                                <Show when=move || !me>
                                    {
                                        let gone = gone.clone();
                                        view! {
                                            <button class="small danger" aria-label=format!("Remove {gone}")
                                                on:click=move |_| { let g = gone.clone(); act(Box::new(move |m, now, c| m.remove_member(now, c, &g))) }>"Remove"</button>
                                        }
                                    }
                                </Show>
                            </li>
                        }
                    }
                </For>
            </ul>
            <form on:submit=add>
                <label for="add-member" class="sr">"Add member by username"</label>
                <input id="add-member" placeholder="Add a member: username" autocomplete="off"
                    prop:value=move || add_name.get() on:input=move |ev| add_name.set(event_target_value(&ev))/>
                <button type="submit">"Add"</button>
            </form>
            <button class="small danger" on:click=move |_| leave()>"Leave group"</button>
            <form on:submit=rename>
                <label for="rename" class="sr">"New group name"</label>
                <input id="rename" placeholder="Rename the group" autocomplete="off"
                    prop:value=move || new_name.get() on:input=move |ev| new_name.set(event_target_value(&ev))/>
                <button type="submit">"Rename"</button>
            </form>
        </div>
    }
}
