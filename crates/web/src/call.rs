//! Calls in the browser: the call screen, and the bridge between the client state machine's
//! call events and the page's media driver (`js/calls.js`). The machine decides (who rings,
//! which answer wins, how a call ends up in the history) and carries the signalling end to
//! end encrypted; the media driver runs WebRTC with the SFrame worker; this module hands the
//! one to the other, and gives the worker the call's keys whenever the conversation's epoch
//! moves on.

use std::collections::BTreeMap;

use leptos::prelude::*;
use nightjar_core::ConversationId;
use nightjar_machine::calls::{CallEvent, CallId, describe_end};
use nightjar_machine::{ClientStore as _, Machine, MemoryClientStore};
use wasm_bindgen::JsValue;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::prelude::wasm_bindgen;

use crate::account;
use crate::ui_state::Ui;

#[wasm_bindgen(module = "/js/calls.js")]
extern "C" {
    #[wasm_bindgen(js_name = startOutgoing, catch)]
    async fn start_outgoing(
        video: bool,
        ice: &str,
        listener: &js_sys::Function,
    ) -> Result<JsValue, JsValue>;
    #[wasm_bindgen(js_name = acceptIncoming, catch)]
    async fn accept_incoming(
        video: bool,
        ice: &str,
        offer: &str,
        listener: &js_sys::Function,
    ) -> Result<JsValue, JsValue>;
    #[wasm_bindgen(js_name = applyAnswer, catch)]
    async fn apply_answer(answer: &str) -> Result<JsValue, JsValue>;
    #[wasm_bindgen(js_name = addCandidate, catch)]
    async fn add_candidate(json: &str) -> Result<JsValue, JsValue>;
    #[wasm_bindgen(js_name = setKeys)]
    fn set_keys(epoch: f64, leaf_index: u32, base_key: &[u8]) -> bool;
    fn attach(local: Option<web_sys::HtmlVideoElement>, remote: Option<web_sys::HtmlVideoElement>);
    #[wasm_bindgen(js_name = setMuted)]
    fn set_muted(muted: bool);
    #[wasm_bindgen(js_name = setCameraOff)]
    fn set_camera_off(off: bool);
    #[wasm_bindgen(catch)]
    async fn devices() -> Result<JsValue, JsValue>;
    #[wasm_bindgen(js_name = switchDevice, catch)]
    async fn switch_device(kind: &str, id: &str) -> Result<JsValue, JsValue>;
    #[wasm_bindgen(catch)]
    async fn stats() -> Result<JsValue, JsValue>;
    #[wasm_bindgen(js_name = hangUp)]
    fn media_hang_up();
    #[wasm_bindgen(js_name = joinGroup, catch)]
    async fn join_group(
        video: bool,
        ice: &str,
        listener: &js_sys::Function,
    ) -> Result<JsValue, JsValue>;
    #[wasm_bindgen(js_name = applySfuAnswer, catch)]
    async fn apply_sfu_answer(answer: &str) -> Result<JsValue, JsValue>;
    #[wasm_bindgen(js_name = setNames)]
    fn set_names(json: &str);
    #[wasm_bindgen(js_name = attachGrid)]
    fn attach_grid(grid: Option<web_sys::HtmlElement>);
}

/// The settings key of "always relay calls" (hides this device's address from the other side).
pub(crate) const RELAY_CALLS: &str = "web/relay_calls";

/// Where the call on screen stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum CallStage {
    /// Ringing here; the caller's offer waits for Accept.
    Incoming { offer: String },
    /// A group call rings here: Join connects to it.
    Invited,
    /// Calling out: the callee's devices ring.
    Calling,
    /// Answered; the media path is being set up.
    Connecting,
    /// Media flows, since this time (ms).
    Connected { since: u64 },
}

/// The call on screen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CallView {
    /// The machine's id, once the call is placed.
    pub(crate) id: Option<CallId>,
    pub(crate) conversation: ConversationId,
    pub(crate) peer: String,
    pub(crate) video: bool,
    pub(crate) stage: CallStage,
    pub(crate) muted: bool,
    pub(crate) camera_off: bool,
    /// The newest epoch whose keys went to the SFrame worker.
    pub(crate) keyed_epoch: Option<u64>,
    /// What the call's statistics said last.
    pub(crate) details: CallDetails,
    /// Whether it is a group call (through the server's forwarding unit).
    pub(crate) group: bool,
    /// A group call's participants: participant id → account.
    pub(crate) participants: BTreeMap<String, String>,
}

impl CallView {
    fn new(conversation: ConversationId, peer: String, video: bool, stage: CallStage) -> Self {
        Self {
            id: None,
            conversation,
            peer,
            video,
            stage,
            muted: false,
            camera_off: false,
            keyed_epoch: None,
            details: CallDetails::default(),
            group: false,
            participants: BTreeMap::new(),
        }
    }
}

/// A group call going on in one of this device's groups, which this device is not in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct OngoingCall {
    pub(crate) call: CallId,
    pub(crate) conversation: ConversationId,
    pub(crate) video: bool,
    /// How many devices are in it.
    pub(crate) participants: usize,
}

/// The call's statistics, as the call screen shows them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct CallDetails {
    pub(crate) route: String,
    pub(crate) frames_decoded: u64,
    pub(crate) decrypted: u64,
    pub(crate) failed: u64,
}

/// The ICE servers for a call: this server's TURN relay when it has one, as JSON for the
/// media driver.
async fn ice_config(token: Option<String>, relay_only: bool) -> String {
    let servers = match crate::net::json::<serde_json::Value>(
        "GET",
        "/v1/calls/turn",
        token.as_deref(),
        None::<&()>,
    )
    .await
    {
        Ok(turn) => serde_json::json!([{
            "urls": turn.get("urls").cloned().unwrap_or_default(),
            "username": turn.get("username").cloned().unwrap_or_default(),
            "credential": turn.get("credential").cloned().unwrap_or_default(),
        }]),
        Err(_) => serde_json::json!([]),
    };
    serde_json::json!({ "servers": servers, "relay_only": relay_only }).to_string()
}

/// What the media driver reports: its connection state and late ICE candidates.
fn listener(ui: Ui) -> js_sys::Function {
    let f = Closure::<dyn FnMut(String, String)>::new(move |what: String, value: String| {
        let Some(d) = ui.driver.get_value() else {
            return;
        };
        match what.as_str() {
            "candidate" => d.intent(move |machine, now, ui| {
                let Some(id) = ui.call.get_untracked().and_then(|c| c.id) else {
                    return;
                };
                let Ok(c) = serde_json::from_str::<serde_json::Value>(&value) else {
                    return;
                };
                let candidate = c["candidate"].as_str().unwrap_or_default().to_owned();
                let mid = c["sdp_mid"].as_str().map(str::to_owned);
                let index = c["sdp_m_line_index"]
                    .as_u64()
                    .and_then(|i| u16::try_from(i).ok());
                let _ = machine.send_candidate(now, id, candidate, mid, index);
            }),
            "state" => d.intent(move |machine, now, ui| match value.as_str() {
                "connected" => ui.call.update(|c| {
                    if let Some(c) = c
                        && !matches!(c.stage, CallStage::Connected { .. })
                    {
                        c.stage = CallStage::Connected { since: now };
                    }
                }),
                "failed" => {
                    ui.error("The call's connection failed.".into());
                    hang_up_now(machine, now, ui);
                }
                "kicked" => {
                    ui.error("You were removed from the call.".into());
                    hang_up_now(machine, now, ui);
                }
                "closed" => {
                    ui.error("The call's server closed the call.".into());
                    hang_up_now(machine, now, ui);
                }
                _ => {}
            }),
            "error" => ui.error(format!("Call: {value}")),
            _ => {}
        }
    });
    let function: js_sys::Function = f.as_ref().clone().into();
    // Lives as long as the call's peer connection may call it (one per call).
    f.forget();
    function
}

/// Places a call in `conversation` with `peer`.
pub(crate) fn start(ui: Ui, conversation: ConversationId, peer: String, video: bool) {
    if ui.call.get_untracked().is_some() {
        ui.error("You are already in a call.".into());
        return;
    }
    let Some(d) = ui.driver.get_value() else {
        return;
    };
    ui.call.set(Some(CallView::new(
        conversation,
        peer,
        video,
        CallStage::Calling,
    )));
    d.intent(move |machine, _, ui| {
        let token = account::token(machine);
        let relay = relay_only(machine);
        let ui = *ui;
        leptos::task::spawn_local(async move {
            let ice = ice_config(token, relay).await;
            let offer = match start_outgoing(video, &ice, &listener(ui)).await {
                Ok(sdp) => sdp.as_string().unwrap_or_default(),
                Err(e) => {
                    media_hang_up();
                    ui.call.set(None);
                    ui.error(format!(
                        "Could not start the call: {}",
                        crate::js::describe(&e)
                    ));
                    return;
                }
            };
            let Some(d) = ui.driver.get_value() else {
                return;
            };
            d.intent(move |machine, now, ui| {
                if ui.call.get_untracked().is_none() {
                    // Hung up while the camera was starting.
                    media_hang_up();
                    return;
                }
                match machine.start_call(now, conversation, video, offer) {
                    Ok(id) => ui.call.update(|c| {
                        if let Some(c) = c {
                            c.id = Some(id);
                        }
                    }),
                    Err(e) => {
                        media_hang_up();
                        ui.call.set(None);
                        ui.error(e.to_string());
                    }
                }
            });
        });
    });
}

/// Joins the group call `call` in the group `conversation` (named `name`); without one, joins
/// the call going on there with the most participants, or starts one.
pub(crate) fn start_group(
    ui: Ui,
    conversation: ConversationId,
    name: String,
    video: bool,
    call: Option<CallId>,
) {
    if ui.call.get_untracked().is_some() {
        ui.error("You are already in a call.".into());
        return;
    }
    let Some(d) = ui.driver.get_value() else {
        return;
    };
    d.intent(move |machine, now, ui| {
        let ongoing = call.or_else(|| {
            ui.group_calls
                .get_untracked()
                .into_iter()
                .filter(|c| c.conversation == conversation)
                .max_by_key(|c| c.participants)
                .map(|c| c.call)
        });
        let placed = match ongoing {
            Some(id) => machine.join_call(now, id, video).map(|()| id),
            None => machine.start_group_call(now, conversation, video),
        };
        match placed {
            Ok(id) => {
                let mut view = CallView::new(conversation, name, video, CallStage::Connecting);
                view.id = Some(id);
                view.group = true;
                view.participants = participants_of(machine, id);
                set_names(&names_json(&view.participants));
                ui.call.set(Some(view));
                connect_group(*ui, machine, conversation, video);
            }
            Err(e) => ui.error(e.to_string()),
        }
    });
}

fn participants_of(machine: &Machine<MemoryClientStore>, call: CallId) -> BTreeMap<String, String> {
    machine
        .calls()
        .ok()
        .and_then(|book| {
            book.calls
                .get(&call.to_hex())
                .map(|r| r.participants.clone())
        })
        .unwrap_or_default()
}

/// Connects this device's media to the forwarding unit: the offer goes with the join request,
/// which the server grants to member devices only.
fn connect_group(
    ui: Ui,
    machine: &Machine<MemoryClientStore>,
    conversation: ConversationId,
    video: bool,
) {
    let token = account::token(machine);
    let relay = relay_only(machine);
    leptos::task::spawn_local(async move {
        let ice = ice_config(token.clone(), relay).await;
        let joined = async {
            let offer = join_group(video, &ice, &listener(ui))
                .await
                .map_err(|e| crate::js::describe(&e))?
                .as_string()
                .unwrap_or_default();
            let path = format!("/v1/calls/{conversation}/sfu");
            let body = serde_json::json!({ "offer": offer });
            let answer: serde_json::Value =
                crate::net::json("POST", &path, token.as_deref(), Some(&body))
                    .await
                    .map_err(|e| e.to_string())?;
            let sdp = answer["answer"].as_str().unwrap_or_default().to_owned();
            apply_sfu_answer(&sdp)
                .await
                .map_err(|e| crate::js::describe(&e))?;
            Ok::<(), String>(())
        };
        if let Err(e) = joined.await {
            ui.error(format!("Could not join the call: {e}"));
            if let Some(d) = ui.driver.get_value() {
                d.intent(hang_up_now);
            }
        }
    });
}

/// Answers the call ringing on screen.
pub(crate) fn accept(ui: Ui) {
    if let Some(view) = ui.call.get_untracked()
        && view.stage == CallStage::Invited
    {
        ui.call.set(None);
        start_group(ui, view.conversation, view.peer, view.video, view.id);
        return;
    }
    let Some(CallView {
        id: Some(id),
        video,
        stage: CallStage::Incoming { offer },
        ..
    }) = ui.call.get_untracked()
    else {
        return;
    };
    let Some(d) = ui.driver.get_value() else {
        return;
    };
    ui.call.update(|c| {
        if let Some(c) = c {
            c.stage = CallStage::Connecting;
        }
    });
    d.intent(move |machine, _, ui| {
        let token = account::token(machine);
        let relay = relay_only(machine);
        let ui = *ui;
        leptos::task::spawn_local(async move {
            let ice = ice_config(token, relay).await;
            let answer = match accept_incoming(video, &ice, &offer, &listener(ui)).await {
                Ok(sdp) => sdp.as_string().unwrap_or_default(),
                Err(e) => {
                    ui.error(format!("Could not answer: {}", crate::js::describe(&e)));
                    if let Some(d) = ui.driver.get_value() {
                        d.intent(hang_up_now);
                    }
                    return;
                }
            };
            if let Some(d) = ui.driver.get_value() {
                d.intent(move |machine, now, ui| {
                    if let Err(e) = machine.answer_call(now, id, answer) {
                        media_hang_up();
                        ui.call.set(None);
                        ui.error(e.to_string());
                    }
                });
            }
        });
    });
}

/// Declines the ringing call, or hangs up the call on screen.
pub(crate) fn hang_up(ui: Ui) {
    if let Some(d) = ui.driver.get_value() {
        d.intent(hang_up_now);
    }
}

fn hang_up_now(machine: &mut Machine<MemoryClientStore>, now: u64, ui: &Ui) {
    media_hang_up();
    let call = ui.call.get_untracked();
    ui.call.set(None);
    let Some(view) = call else { return };
    let Some(id) = view.id else { return };
    let done = if view.stage == CallStage::Invited {
        machine.decline_call(now, id)
    } else {
        machine.hang_up(now, id)
    };
    if let Err(e) = done {
        ui.error(e.to_string());
    }
}

fn relay_only(machine: &Machine<MemoryClientStore>) -> bool {
    machine
        .store()
        .meta(RELAY_CALLS)
        .ok()
        .flatten()
        .is_some_and(|v| v == "1")
}

/// Carries out a call event of the machine.
pub(crate) fn on_event(ui: &Ui, event: &CallEvent) {
    let ui = *ui;
    match event.clone() {
        CallEvent::Incoming {
            call,
            conversation,
            from,
            video,
            offer,
        } => {
            if ui.call.get_untracked().is_some() {
                return;
            }
            let mut view = CallView::new(conversation, from, video, CallStage::Incoming { offer });
            view.id = Some(call);
            ui.call.set(Some(view));
        }
        CallEvent::Invited {
            call,
            conversation,
            from,
            video,
        } => {
            if ui.call.get_untracked().is_some() {
                return;
            }
            let name = ui
                .conversations
                .get_untracked()
                .into_iter()
                .find(|c| c.id == conversation)
                .map_or(from, |c| c.title);
            let mut view = CallView::new(conversation, name, video, CallStage::Invited);
            view.id = Some(call);
            view.group = true;
            ui.call.set(Some(view));
        }
        CallEvent::Participants { call, participants } => {
            if !is_current(ui, call) {
                return;
            }
            set_names(&names_json(&participants));
            ui.call.update(|c| {
                if let Some(c) = c {
                    c.participants = participants;
                }
            });
        }
        CallEvent::Ringing { .. } => {}
        CallEvent::Answered { call, answer } => {
            if !is_current(ui, call) {
                return;
            }
            ui.call.update(|c| {
                if let Some(c) = c {
                    c.stage = CallStage::Connecting;
                }
            });
            leptos::task::spawn_local(async move {
                if let Err(e) = apply_answer(&answer).await {
                    ui.error(format!(
                        "The call could not connect: {}",
                        crate::js::describe(&e)
                    ));
                }
            });
        }
        CallEvent::Candidate {
            call,
            candidate,
            sdp_mid,
            sdp_m_line_index,
        } => {
            if !is_current(ui, call) {
                return;
            }
            let json = serde_json::json!({
                "candidate": candidate,
                "sdp_mid": sdp_mid,
                "sdp_m_line_index": sdp_m_line_index,
            })
            .to_string();
            leptos::task::spawn_local(async move {
                let _ = add_candidate(&json).await;
            });
        }
        CallEvent::Removed { call } => {
            // The removal's commit came before the forwarding unit's "kicked" (which says the
            // same and hangs up first when it wins the race).
            if ui
                .call
                .get_untracked()
                .is_some_and(|view| view.id == Some(call))
            {
                ui.error("You were removed from the call.".into());
            }
        }
        CallEvent::Ended { call, end, .. } => {
            let Some(view) = ui.call.get_untracked() else {
                return;
            };
            if view.id != Some(call) {
                return;
            }
            if view.group {
                // A group call stopped ringing, or this device left it.
                if view.stage != CallStage::Invited {
                    media_hang_up();
                }
                ui.call.set(None);
                return;
            }
            media_hang_up();
            ui.call.set(None);
            ui.show(format!(
                "{} with {}",
                capitalize(&describe_end(view.video, end)),
                view.peer
            ));
        }
    }
}

/// The tiles' names, by participant id (the machine keys participants the way the forwarding
/// unit names them).
fn names_json(participants: &BTreeMap<String, String>) -> String {
    let names: serde_json::Map<String, serde_json::Value> = participants
        .iter()
        .map(|(id, account)| (id.clone(), serde_json::Value::String(account.clone())))
        .collect();
    serde_json::Value::Object(names).to_string()
}

fn capitalize(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

fn is_current(ui: Ui, call: CallId) -> bool {
    ui.call.get_untracked().is_some_and(|c| c.id == Some(call))
}

/// After every event: lists the group calls going on without this device, and gives the
/// SFrame worker the call's keys when the conversation's epoch moved on (a member joined or
/// left, a device updated its keys).
pub(crate) fn refresh(machine: &mut Machine<MemoryClientStore>, ui: &Ui) {
    let ongoing: Vec<OngoingCall> = machine
        .calls()
        .map(|book| {
            book.calls
                .iter()
                .filter(|(_, r)| r.group && !r.here && !r.participants.is_empty())
                .filter_map(|(id, r)| {
                    Some(OngoingCall {
                        call: CallId::from_hex(id)?,
                        conversation: ConversationId::parse(&r.conversation)?,
                        video: r.video,
                        participants: r.participants.len(),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    if ui.group_calls.get_untracked() != ongoing {
        ui.group_calls.set(ongoing);
    }
    rekey(machine, ui);
}

fn rekey(machine: &mut Machine<MemoryClientStore>, ui: &Ui) {
    let Some(view) = ui.call.get_untracked() else {
        return;
    };
    let Some(id) = view.id else { return };
    if matches!(view.stage, CallStage::Incoming { .. } | CallStage::Invited) {
        return;
    }
    let Ok(keys) = machine.call_keys(id) else {
        return;
    };
    if view.keyed_epoch == Some(keys.epoch) {
        return;
    }
    #[allow(clippy::cast_precision_loss)]
    if !set_keys(keys.epoch as f64, keys.leaf_index, keys.base_key()) {
        // The media is not set up yet: the next event tries again.
        return;
    }
    ui.call.update(|c| {
        if let Some(c) = c {
            c.keyed_epoch = Some(keys.epoch);
        }
    });
}

/// Reads the call's statistics once a second while it is on screen.
fn watch_stats(ui: Ui) {
    leptos::task::spawn_local(async move {
        loop {
            gloo_sleep(1000).await;
            if ui.call.get_untracked().is_none() {
                return;
            }
            let Ok(json) = stats().await else { continue };
            let Some(text) = json.as_string() else {
                continue;
            };
            let Ok(s) = serde_json::from_str::<serde_json::Value>(&text) else {
                continue;
            };
            let route = match (s["localCandidate"].as_str(), s["remoteCandidate"].as_str()) {
                (Some("relay"), _) | (_, Some("relay")) => "relayed through TURN",
                (Some(_), Some(_)) => "direct",
                _ => "connecting",
            };
            let details = CallDetails {
                route: route.into(),
                frames_decoded: s["framesDecoded"].as_u64().unwrap_or(0),
                decrypted: s["sframe"]["decrypted"].as_u64().unwrap_or(0),
                failed: s["sframe"]["failed"].as_u64().unwrap_or(0),
            };
            ui.call.update(|c| {
                if let Some(c) = c
                    && c.details != details
                {
                    c.details = details;
                }
            });
        }
    });
}

async fn gloo_sleep(ms: i32) {
    let promise = js_sys::Promise::new(&mut |resolve, _| {
        if let Ok(window) = crate::js::window() {
            let _ = window.set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, ms);
        }
    });
    let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
}

fn duration(since: u64) -> String {
    let secs = crate::js::now_ms().saturating_sub(since) / 1000;
    format!("{}:{:02}", secs / 60, secs % 60)
}

/// The call screen: the incoming-call screen, or the call with its controls.
#[component]
pub(crate) fn CallScreen(ui: Ui) -> impl IntoView {
    let local = NodeRef::<leptos::html::Video>::new();
    let remote = NodeRef::<leptos::html::Video>::new();
    let grid = NodeRef::<leptos::html::Div>::new();
    Effect::new(move || {
        if let Some(l) = local.get() {
            attach(Some(l), remote.get());
        }
    });
    Effect::new(move || {
        if let Some(g) = grid.get() {
            let el: &web_sys::HtmlElement = &g;
            attach_grid(Some(el.clone()));
        }
    });
    watch_stats(ui);
    // The duration ticks once a second.
    let clock = RwSignal::new(0u64);
    leptos::task::spawn_local(async move {
        while ui.call.get_untracked().is_some() {
            gloo_sleep(1000).await;
            clock.update(|t| *t += 1);
        }
    });
    let view_of = move || ui.call.get();
    let peer = move || view_of().map(|c| c.peer).unwrap_or_default();
    let video = move || view_of().is_some_and(|c| c.video);
    let incoming = move || {
        view_of()
            .is_some_and(|c| matches!(c.stage, CallStage::Incoming { .. } | CallStage::Invited))
    };
    let group = move || view_of().is_some_and(|c| c.group);
    let others = move || {
        let me = ui.me.get();
        let names: Vec<String> = view_of()
            .map(|c| c.participants.into_values().filter(|a| *a != me).collect())
            .unwrap_or_default();
        if names.is_empty() {
            "waiting for others to join".to_owned()
        } else {
            format!("with {}", names.join(", "))
        }
    };
    let status = move || {
        clock.get();
        let placed = view_of().is_some_and(|c| c.id.is_some());
        match view_of().map(|c| c.stage) {
            Some(CallStage::Incoming { .. } | CallStage::Invited) => "ringing".to_owned(),
            Some(CallStage::Calling) if !placed => "starting…".to_owned(),
            Some(CallStage::Calling) => "calling…".to_owned(),
            Some(CallStage::Connecting) => "connecting…".to_owned(),
            Some(CallStage::Connected { since }) => duration(since),
            None => String::new(),
        }
    };
    let toggle_mute = move |_| {
        ui.call.update(|c| {
            if let Some(c) = c {
                c.muted = !c.muted;
                set_muted(c.muted);
            }
        });
    };
    let toggle_camera = move |_| {
        ui.call.update(|c| {
            if let Some(c) = c {
                c.camera_off = !c.camera_off;
                set_camera_off(c.camera_off);
            }
        });
    };
    let inputs = RwSignal::new(Vec::<(String, String, String)>::new());
    let load_devices = move |_| {
        leptos::task::spawn_local(async move {
            let Ok(list) = devices().await else { return };
            let list: Vec<serde_json::Value> = list
                .as_string()
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or_default();
            inputs.set(
                list.iter()
                    .map(|d| {
                        (
                            d["kind"].as_str().unwrap_or_default().to_owned(),
                            d["id"].as_str().unwrap_or_default().to_owned(),
                            d["label"].as_str().unwrap_or("device").to_owned(),
                        )
                    })
                    .collect(),
            );
        });
    };
    let pick = move |kind: &'static str| {
        move |ev: leptos::ev::Event| {
            let id = event_target_value(&ev);
            leptos::task::spawn_local(async move {
                if let Err(e) = switch_device(kind, &id).await {
                    ui.error(format!("Could not switch: {}", crate::js::describe(&e)));
                }
            });
        }
    };
    let options = move |kind: &'static str| {
        inputs
            .get()
            .into_iter()
            .filter(move |(k, _, _)| k == kind)
            .map(|(_, id, label)| view! { <option value=id>{label}</option> })
            .collect_view()
    };
    let details = move || view_of().map(|c| c.details).unwrap_or_default();
    view! {
        <section class="call" role="dialog" aria-label=move || format!("Call with {}", peer())>
            <Show when=incoming>
                <h2>{move || if group() {
                    format!("Group {} call in {}", if video() { "video" } else { "voice" }, peer())
                } else {
                    format!("Incoming {} call from {}", if video() { "video" } else { "voice" }, peer())
                }}</h2>
                <div class="call-controls">
                    <button class="accept" on:click=move |_| accept(ui)>{move || if group() { "Join" } else { "Accept" }}</button>
                    <button class="decline" on:click=move |_| hang_up(ui)>{move || if group() { "Not now" } else { "Decline" }}</button>
                </div>
            </Show>
            <Show when=move || !incoming()>
                <h2>{peer}</h2>
                <p class="call-status" role="status" aria-label="Call status">{status}</p>
                <Show when=group>
                    <p class="call-people" aria-label="In the call">{others}</p>
                </Show>
                <p class="e2ee" aria-label="Encryption">
                    <span class="badge-e2ee">"End-to-end encrypted"</span>
                    " Audio and video are encrypted on this device with keys only the people in this conversation have."
                </p>
                <div class="videos" class:group=group>
                    <Show when=move || !group()>
                        <video class="remote" node_ref=remote autoplay=true playsinline=true
                            aria-label=move || format!("Video from {}", peer())></video>
                    </Show>
                    <Show when=group>
                        <div class="grid" node_ref=grid aria-label="Participants"></div>
                    </Show>
                    <video class="local" node_ref=local autoplay=true playsinline=true muted=true
                        aria-label="Your camera"></video>
                </div>
                <div class="call-controls">
                    <button aria-pressed=move || view_of().is_some_and(|c| c.muted).to_string()
                        on:click=toggle_mute>
                        {move || if view_of().is_some_and(|c| c.muted) { "Unmute" } else { "Mute" }}
                    </button>
                    <Show when=video>
                        <button aria-pressed=move || view_of().is_some_and(|c| c.camera_off).to_string()
                            on:click=toggle_camera>
                            {move || if view_of().is_some_and(|c| c.camera_off) { "Camera on" } else { "Camera off" }}
                        </button>
                    </Show>
                    <details class="call-devices" on:toggle=load_devices>
                        <summary>"Devices"</summary>
                        <label>"Microphone" <select on:change=pick("audio")>{move || options("audio")}</select></label>
                        <Show when=video>
                            <label>"Camera" <select on:change=pick("video")>{move || options("video")}</select></label>
                        </Show>
                    </details>
                    <button class="decline" on:click=move |_| hang_up(ui)>"Hang up"</button>
                </div>
                <dl class="call-details" aria-label="Call details">
                    <dt>"Connection"</dt><dd aria-label="Connection">{move || details().route}</dd>
                    <dt>"Frames decoded"</dt><dd aria-label="Frames decoded">{move || details().frames_decoded}</dd>
                    <dt>"Frames decrypted"</dt><dd aria-label="Frames decrypted">{move || details().decrypted}</dd>
                    <dt>"Frames refused"</dt><dd aria-label="Frames refused">{move || details().failed}</dd>
                </dl>
            </Show>
        </section>
    }
}
