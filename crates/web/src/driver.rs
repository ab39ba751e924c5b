//! The web driver of the client state machine. One task owns the machine and handles one
//! event at a time (a user intent, a response, pushed envelopes, a timer, the stream coming and
//! going); after each it writes the store's journal to the vault **before** it carries out the
//! requests the event produced, so nothing is acknowledged or posted that a reload would
//! forget. Requests run concurrently (`fetch`); their outcomes come back as events.

use std::cell::RefCell;
use std::rc::Rc;

use futures_channel::mpsc::{UnboundedReceiver, UnboundedSender, unbounded};
use futures_util::StreamExt as _;
use nightjar_api::{ClientFrame, Envelope, ErrorCode, ServerFrame, StreamToken};
use nightjar_machine::{
    ClientStore as _, Failure, Machine, MemoryClientStore, Request, RequestId, Response,
};
use wasm_bindgen::JsCast as _;
use wasm_bindgen::closure::Closure;

use crate::js;
use crate::net;
use crate::ui_state::Ui;
use crate::vault::Vault;

/// How long the stream waits before it reconnects.
const RECONNECT_MS: i32 = 1_500;

/// A user intent: runs against the machine with the time.
pub(crate) type Intent = Box<dyn FnOnce(&mut Machine<MemoryClientStore>, u64, &Ui)>;

/// What the driver's task handles, one at a time.
pub(crate) enum Event {
    Intent(Intent),
    Response(RequestId, Result<Response, Failure>),
    Pushed(Vec<Envelope>),
    Tick,
    Connected,
    Disconnected,
    SessionRefused,
}

/// A handle to the running driver.
#[derive(Clone)]
pub(crate) struct Driver {
    tx: UnboundedSender<Event>,
}

impl Driver {
    /// Hands the machine a user intent.
    pub(crate) fn intent(
        &self,
        f: impl FnOnce(&mut Machine<MemoryClientStore>, u64, &Ui) + 'static,
    ) {
        let _ = self.tx.unbounded_send(Event::Intent(Box::new(f)));
    }

    /// Runs `f` against the machine as [`Self::intent`] does, and hands back what it returned
    /// (`None` if the driver stopped first). An intent sent after this answered runs once
    /// the changes `f` made are written to the vault.
    pub(crate) async fn ask<T: 'static>(
        &self,
        f: impl FnOnce(&mut Machine<MemoryClientStore>, u64, &Ui) -> T + 'static,
    ) -> Option<T> {
        let (tx, rx) = futures_channel::oneshot::channel();
        self.intent(move |machine, now, ui| {
            let _ = tx.send(f(machine, now, ui));
        });
        rx.await.ok()
    }
}

/// Starts the driver of `machine` in the background (and the fetch of a history archive a
/// device link left, if one waits).
pub(crate) fn start(
    machine: Machine<MemoryClientStore>,
    vault: Vault,
    token: String,
    ui: Ui,
) -> Driver {
    let mut machine = machine;
    // A call this page was in before a reload has no media any more: leave it.
    if let Err(e) = machine.leave_calls_of_an_earlier_run(js::now_ms()) {
        ui.error(e.to_string());
    }
    let (tx, rx) = unbounded();
    let socket: Rc<RefCell<Option<web_sys::WebSocket>>> = Rc::new(RefCell::new(None));
    connect(token.clone(), tx.clone(), socket.clone());
    watch_network(&tx, &socket);
    wasm_bindgen_futures::spawn_local(run(machine, vault, token, rx, tx.clone(), socket, ui));
    let driver = Driver { tx };
    // History a device link left to fetch: tried at every start until it is in.
    crate::history::fetch_pending(&driver);
    driver
}

/// The stream's URL on this origin.
fn stream_url() -> Result<String, String> {
    let location = js::window()?.location();
    let scheme = if location.protocol().map_err(|e| js::describe(&e))? == "https:" {
        "wss"
    } else {
        "ws"
    };
    let host = location.host().map_err(|e| js::describe(&e))?;
    Ok(format!("{scheme}://{host}/v1/stream"))
}

/// Opens the stream: authenticates with the first frame, hands envelopes to the task, and
/// reconnects after it drops.
fn connect(
    token: String,
    tx: UnboundedSender<Event>,
    socket: Rc<RefCell<Option<web_sys::WebSocket>>>,
) {
    let Ok(url) = stream_url() else { return };
    let Ok(ws) = web_sys::WebSocket::new(&url) else {
        schedule_reconnect(token, tx, socket);
        return;
    };
    let auth = serde_json::to_string(&ClientFrame::Auth {
        token: StreamToken(token.clone()),
    })
    .unwrap_or_default();
    let on_open = {
        let ws = ws.clone();
        let tx = tx.clone();
        Closure::<dyn FnMut()>::new(move || {
            let _ = ws.send_with_str(&auth);
            let _ = tx.unbounded_send(Event::Connected);
        })
    };
    let on_message = {
        let tx = tx.clone();
        Closure::<dyn FnMut(web_sys::MessageEvent)>::new(move |e: web_sys::MessageEvent| {
            let Some(text) = e.data().as_string() else {
                return;
            };
            match serde_json::from_str::<ServerFrame>(&text) {
                Ok(ServerFrame::Envelope { envelope }) => {
                    let _ = tx.unbounded_send(Event::Pushed(vec![envelope]));
                }
                Ok(ServerFrame::Error { error }) if error.code == ErrorCode::Unauthorized => {
                    let _ = tx.unbounded_send(Event::SessionRefused);
                }
                _ => {}
            }
        })
    };
    let on_close = {
        let tx = tx.clone();
        let socket = socket.clone();
        let token = token.clone();
        Closure::<dyn FnMut()>::new(move || {
            socket.borrow_mut().take();
            let _ = tx.unbounded_send(Event::Disconnected);
            schedule_reconnect(token.clone(), tx.clone(), socket.clone());
        })
    };
    ws.set_onopen(Some(on_open.as_ref().unchecked_ref()));
    ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));
    // The handlers live as long as the socket (one set per connection).
    on_open.forget();
    on_message.forget();
    on_close.forget();
    *socket.borrow_mut() = Some(ws);
}

fn schedule_reconnect(
    token: String,
    tx: UnboundedSender<Event>,
    socket: Rc<RefCell<Option<web_sys::WebSocket>>>,
) {
    if tx.is_closed() {
        return;
    }
    let retry = Closure::once_into_js(move || connect(token, tx, socket));
    if let Ok(window) = js::window() {
        let _ = window.set_timeout_with_callback_and_timeout_and_arguments_0(
            retry.unchecked_ref(),
            RECONNECT_MS,
        );
    }
}

/// The browser's own word on the network: back online retries at once (and reopens the
/// stream); offline closes the stream so it is reopened, and caught up, on return.
fn watch_network(tx: &UnboundedSender<Event>, socket: &Rc<RefCell<Option<web_sys::WebSocket>>>) {
    let Ok(window) = js::window() else { return };
    let on_online = {
        let tx = tx.clone();
        Closure::<dyn FnMut()>::new(move || {
            let _ = tx.unbounded_send(Event::Connected);
        })
    };
    let on_offline = {
        let socket = socket.clone();
        Closure::<dyn FnMut()>::new(move || {
            if let Some(ws) = socket.borrow().as_ref() {
                let _ = ws.close();
            }
        })
    };
    let _ = window.add_event_listener_with_callback("online", on_online.as_ref().unchecked_ref());
    let _ = window.add_event_listener_with_callback("offline", on_offline.as_ref().unchecked_ref());
    // For the page's lifetime.
    on_online.forget();
    on_offline.forget();
}

/// Sends an acknowledgement on the stream, if it is open.
fn ack_on_stream(socket: &Rc<RefCell<Option<web_sys::WebSocket>>>, ids: &[u64]) -> bool {
    let guard = socket.borrow();
    let Some(ws) = guard.as_ref() else {
        return false;
    };
    if ws.ready_state() != web_sys::WebSocket::OPEN {
        return false;
    }
    let frame = ClientFrame::Ack { ids: ids.to_vec() };
    serde_json::to_string(&frame)
        .ok()
        .is_some_and(|text| ws.send_with_str(&text).is_ok())
}

async fn run(
    mut machine: Machine<MemoryClientStore>,
    vault: Vault,
    token: String,
    mut rx: UnboundedReceiver<Event>,
    tx: UnboundedSender<Event>,
    socket: Rc<RefCell<Option<web_sys::WebSocket>>>,
    ui: Ui,
) {
    let store = machine.store().clone();
    let mut timer: Option<i32> = None;
    // Delivery receipts always: a browser tells senders a message reached it when it is
    // stored, and that it was read only when its conversation is shown (read receipts, which
    // the user may turn off). The native client, which shows messages as it stores them,
    // sends read receipts instead when they are on.
    machine.set_delivery_receipts(true);
    machine.sync(js::now_ms());
    loop {
        // Carry out what the last event produced: the journal first, then the requests.
        loop {
            match store.take_journal() {
                Ok(journal) if !journal.is_empty() => {
                    if let Err(e) = vault.persist(journal).await {
                        ui.error(format!("could not save to this browser's storage: {e}"));
                    }
                }
                _ => {}
            }
            let Some((id, request)) = machine.poll_request() else {
                break;
            };
            match request {
                Request::Ack { ids } if ack_on_stream(&socket, &ids) => {
                    let _ = machine.handle_response(js::now_ms(), id, Ok(Response::Acked));
                }
                other => {
                    let tx = tx.clone();
                    let token = token.clone();
                    wasm_bindgen_futures::spawn_local(async move {
                        let outcome = net::execute(Some(&token), other).await;
                        let _ = tx.unbounded_send(Event::Response(id, outcome));
                    });
                }
            }
        }
        while let Some(n) = machine.poll_notification() {
            match &n {
                nightjar_machine::Notification::Read {
                    message_ids, from, ..
                } => {
                    for id in message_ids {
                        let _ = store.set_meta(&crate::ui_state::read_by(&id.to_hex()), from);
                    }
                }
                nightjar_machine::Notification::Delivered {
                    message_ids, from, ..
                } => {
                    for id in message_ids {
                        let _ = store.set_meta(&crate::ui_state::delivered_to(&id.to_hex()), from);
                    }
                }
                _ => {}
            }
            ui.notify(&n);
        }
        crate::call::refresh(&mut machine, &ui);
        ui.refresh(&mut machine, js::now_ms());
        if machine.has_requests() {
            // Showing the conversation sent read receipts: carry them out first.
            continue;
        }
        // Wake up when the next wait ends.
        if let Ok(window) = js::window() {
            if let Some(t) = timer.take() {
                window.clear_timeout_with_handle(t);
            }
            if let Some(at) = machine.next_wakeup() {
                let delay = i32::try_from(at.saturating_sub(js::now_ms())).unwrap_or(i32::MAX);
                let tx = tx.clone();
                let tick = Closure::once_into_js(move || {
                    let _ = tx.unbounded_send(Event::Tick);
                });
                timer = window
                    .set_timeout_with_callback_and_timeout_and_arguments_0(
                        tick.unchecked_ref(),
                        delay.max(0),
                    )
                    .ok();
            }
        }
        let Some(event) = rx.next().await else { break };
        let now = js::now_ms();
        match event {
            Event::Intent(f) => f(&mut machine, now, &ui),
            Event::Response(id, outcome) => {
                if let Err(e) = machine.handle_response(now, id, outcome) {
                    ui.error(e.to_string());
                }
            }
            Event::Pushed(envelopes) => machine.handle_pushed(now, envelopes),
            Event::Tick => machine.tick(now),
            Event::Connected => {
                ui.set_online(true);
                machine.online(now);
                machine.sync(now);
            }
            Event::Disconnected => ui.set_online(false),
            Event::SessionRefused => ui.session_expired(),
        }
    }
}
