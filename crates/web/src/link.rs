//! Devices: signing in on a new browser (a pending device that shows a code and a QR code, and
//! waits), approving it from an existing device (which signs the next device list and seals
//! the account identity to the new device under that code), listing and removing devices.

use std::time::Duration;

use leptos::prelude::{Set as _, Update as _};
use nightjar_api::{
    ApproveDeviceRequest, B64, DeviceInfo, DeviceListUpdate, DevicesResponse, LinkStatusResponse,
    LoginFinishRequest, LoginStartRequest, LoginStartResponse, PendingDevicesResponse,
    SessionResponse, UploadKeyPackagesRequest,
};
use nightjar_core::identity::{DeviceId, SignedDeviceList};
use nightjar_core::provisioning::{LinkCompleted, LinkOffer};
use nightjar_core::{Engine, EngineConfig};
use nightjar_machine::archive::PENDING_HISTORY;
use nightjar_machine::auth::{self, Password};
use nightjar_machine::{ClientStore, Failure, Machine, MemoryClientStore};
use zeroize::Zeroizing;

use crate::account::{self, TOKEN, USERNAME, failure_text};
use crate::driver::{self, Driver};
use crate::js;
use crate::net;
use crate::ui_state::{Phase, Ui};
use crate::vault::Vault;

/// The settings key of a device waiting for approval.
pub(crate) const PENDING: &str = "web/pending";
/// How often a waiting device asks whether it was approved.
const POLL: Duration = Duration::from_secs(2);

/// Signs in as `username` on this browser: a new device of the account, waiting for an
/// existing device to approve it. Returns the code to show.
pub(crate) async fn login(
    vault: Vault,
    username: String,
    password: String,
    ui: Ui,
) -> Result<(), String> {
    nightjar_core::identity::validate_username(&username)
        .map_err(|_| "a username is 3 to 32 characters: a-z, 0-9 and _".to_owned())?;
    let password = Password::new(password);
    let (state, request) = auth::login_start(&password).map_err(|e| e.to_string())?;
    let start: LoginStartResponse = net::json(
        "POST",
        "/v1/login/start",
        None,
        Some(&LoginStartRequest {
            username: username.clone(),
            credential_request: B64(request),
        }),
    )
    .await
    .map_err(failure_text)?;
    let finalization = auth::login_finish(state, &password, &start.credential_response.0)
        .map_err(|e| e.to_string())?;
    let store = MemoryClientStore::new();
    let mut engine = Engine::new_device(store.clone(), &username, EngineConfig::default())
        .map_err(|e| e.to_string())?;
    let offer = engine.link_offer(js::now_ms()).map_err(|e| e.to_string())?;
    let session: SessionResponse = net::json(
        "POST",
        "/v1/login/finish",
        None,
        Some(&LoginFinishRequest {
            login_id: start.login_id,
            credential_finalization: B64(finalization),
            device_id: engine.device().device_id.to_string(),
            link_offer: Some(B64(offer.encode())),
            device_signature: None,
        }),
    )
    .await
    .map_err(failure_text)?;
    let code = engine
        .link_code()
        .map_err(|e| e.to_string())?
        .display()
        .to_string();
    store
        .set_meta(TOKEN, &session.token)
        .and_then(|()| store.set_meta(USERNAME, &username))
        .and_then(|()| store.set_meta(PENDING, "1"))
        .map_err(|e| e.to_string())?;
    vault
        .persist(store.take_journal().map_err(|e| e.to_string())?)
        .await?;
    ui.me.set(username);
    ui.phase.set(Phase::Pending(code));
    leptos::task::spawn_local(wait_for_approval(vault, store, session.token, ui));
    Ok(())
}

/// A waiting device: shows its code again after a reload and keeps waiting.
pub(crate) fn resume(vault: Vault, store: MemoryClientStore, token: String, ui: Ui) {
    let code = Engine::load(store.clone())
        .and_then(|mut e| {
            e.link_offer(js::now_ms())?;
            e.link_code()
        })
        .map(|c| c.display().to_string())
        .unwrap_or_default();
    ui.phase.set(Phase::Pending(code));
    leptos::task::spawn_local(wait_for_approval(vault, store, token, ui));
}

async fn sleep(d: Duration) {
    let promise = js_sys::Promise::new(&mut |resolve, _| {
        if let Ok(window) = js::window() {
            let _ = window.set_timeout_with_callback_and_timeout_and_arguments_0(
                &resolve,
                i32::try_from(d.as_millis()).unwrap_or(i32::MAX),
            );
        }
    });
    let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
}

/// Polls until an existing device approved this one; then finishes the link (opens the sealed
/// account identity with this device's code), uploads key packages and starts the app.
async fn wait_for_approval(vault: Vault, store: MemoryClientStore, token: String, ui: Ui) {
    loop {
        match net::json::<LinkStatusResponse>("GET", "/v1/devices/link", Some(&token), None::<&()>)
            .await
        {
            Ok(LinkStatusResponse {
                status: nightjar_api::DeviceStatus::Active,
                sealed_identity: Some(sealed),
            }) => {
                match finish(&vault, store.clone(), &token, &sealed.0).await {
                    Ok(machine) => {
                        ui.phase.set(Phase::Ready);
                        let d = driver::start(machine, vault, token, ui);
                        ui.driver_ready(d);
                    }
                    Err(e) => ui.phase.set(Phase::Broken(e)),
                }
                return;
            }
            Ok(_) => {}
            Err(Failure::Refused(e)) if e.code == nightjar_api::ErrorCode::Unauthorized => {
                ui.phase.set(Phase::Broken(
                    "this sign-in expired or was refused; reload to start again".into(),
                ));
                let _ = vault.wipe().await;
                return;
            }
            Err(_) => {}
        }
        sleep(POLL).await;
    }
}

async fn finish(
    vault: &Vault,
    store: MemoryClientStore,
    token: &str,
    sealed: &[u8],
) -> Result<Machine<MemoryClientStore>, String> {
    let mut machine = Machine::load(store.clone()).map_err(|e| e.to_string())?;
    let now = js::now_ms();
    machine
        .atomic(|engine, store| {
            // Opens only with this device's code: a bundle the server made is refused.
            let LinkCompleted { contacts, history } = engine.complete_link(sealed)?;
            if let Some(pointer) = &history {
                // Fetched once the app runs (`history::fetch_pending`), at every start until
                // it is in.
                store.set_meta(PENDING_HISTORY, &crate::history::encode_pointer(pointer))?;
            }
            let me = engine.device().username.clone();
            for name in std::iter::once(me).chain(contacts.into_iter().map(|c| c.username)) {
                if let Some(list) = engine.device_list(&name) {
                    store.record_contact(&name, list.identity_key.as_bytes(), list.version, now)?;
                }
            }
            store.delete_meta(PENDING)?;
            Ok(())
        })
        .map_err(|e| format!("the approval could not be opened: {e}"))?;
    let key_packages = machine
        .engine()
        .generate_key_packages(account::KEY_PACKAGES, false)
        .map_err(|e| e.to_string())?;
    let last_resort = machine
        .engine()
        .generate_key_packages(1, true)
        .map_err(|e| e.to_string())?
        .pop();
    vault
        .persist(store.take_journal().map_err(|e| e.to_string())?)
        .await?;
    let body = UploadKeyPackagesRequest {
        key_packages: key_packages.into_iter().map(B64).collect(),
        last_resort: last_resort.map(B64),
    };
    net::json::<serde_json::Value>("POST", "/v1/key-packages", Some(token), Some(&body))
        .await
        .map_err(failure_text)?;
    Ok(machine)
}

/// The account's devices, as the server lists them; the list's signature is checked and it
/// is accepted as this account's own (a forged one raises the identity warning).
pub(crate) async fn devices(driver: Driver, token: String, ui: Ui) {
    match net::json::<DevicesResponse>("GET", "/v1/devices", Some(&token), None::<&()>).await {
        Ok(response) => {
            let list = SignedDeviceList::decode(&response.device_list.0);
            let shown: Vec<DeviceInfo> = response.devices;
            driver.intent(move |machine, now, ui| {
                let me = machine.me().username.clone();
                if let Ok(list) = list
                    && let Err(e) = machine.accept_list(now, &me, &list)
                {
                    ui.error(format!(
                        "this account's device list does not check out: {e}"
                    ));
                    return;
                }
                ui.devices.set(Some(shown));
            });
        }
        Err(e) => ui.error(failure_text(e)),
    }
}

/// Approves the waiting device showing `code`: once its offer matches the code, uploads the
/// account's recent history for it (unless the setting is off), signs the next device list
/// and seals the account identity and the history's pointer to it, posts the approval, and
/// adds the new device to every conversation as soon as it can be.
pub(crate) async fn approve(driver: Driver, token: String, code: String, ui: Ui) {
    let code = code.trim().to_uppercase();
    let pending = match net::json::<PendingDevicesResponse>(
        "GET",
        "/v1/devices/pending",
        Some(&token),
        None::<&()>,
    )
    .await
    {
        Ok(p) => p,
        Err(e) => return ui.error(failure_text(e)),
    };
    let found = driver
        .ask(move |machine, now, ui| {
            let me = machine.me().username.clone();
            let Some(offer) = pending
                .pending
                .iter()
                .filter_map(|p| LinkOffer::decode(&p.link_offer.0).ok())
                .find(|o| o.matches_code(&code) && o.username == me.as_bytes())
            else {
                ui.error(format!(
                    "no device waiting for approval shows the code {code}"
                ));
                return None;
            };
            // The offer matched the code: only now is anything made for it.
            match crate::history::export(machine, now) {
                Ok(history) => Some(Approval {
                    offer,
                    code,
                    history,
                }),
                Err(e) => {
                    ui.error(format!("could not approve: {e}"));
                    None
                }
            }
        })
        .await
        .flatten();
    let Some(Approval {
        offer,
        code,
        history,
    }) = found
    else {
        return;
    };
    let device_id = offer.device.device_id.to_string();
    let pointer = match history {
        Some(bytes) => match crate::history::send(&bytes, Some(&token), ui).await {
            Ok(pointer) => Some(pointer),
            Err(e) => {
                return ui.error(format!(
                    "could not send your history to the new device ({e}); approve again, or \
                     turn “History for a new device” off"
                ));
            }
        },
        None => None,
    };
    let signed = driver
        .ask(move |machine, _, _| {
            machine.atomic(|engine, _| Ok(engine.approve_link(&offer, &code, pointer.as_ref())?))
        })
        .await;
    let (list, sealed) = match signed {
        Some(Ok(signed)) => signed,
        Some(Err(e)) => return ui.error(format!("could not approve: {e}")),
        None => return,
    };
    let body = ApproveDeviceRequest {
        device_id,
        device_list: B64(list.encode()),
        sealed_identity: B64(sealed),
    };
    let body = serde_json::to_string(&body).unwrap_or_default();
    if let Err(e) = net::call("POST", "/v1/devices/approve", Some(&token), Some(body)).await {
        return ui.error(failure_text(e));
    }
    ui.show("The new device is approved: it joins your conversations now.".into());
    devices(driver.clone(), token, ui).await;
    add_approved_device(&driver).await;
}

/// What approving a device takes, once its offer matched the typed code.
struct Approval {
    offer: LinkOffer,
    code: String,
    /// The encoded history archive to upload for it, if the setting gives it one.
    history: Option<Zeroizing<Vec<u8>>>,
}

/// How long a device that approved another keeps trying to add it to its conversations
/// right away (it can once the new device uploaded key packages, which it does as soon as it
/// sees the approval); after that, the machine's own retries do it.
const ADD_APPROVED_WAIT_MS: u64 = 20_000;
/// How often it tries meanwhile (each try claims key packages of the account's devices).
const ADD_APPROVED_EVERY: Duration = Duration::from_secs(2);

/// Adds a device just approved to every conversation of the account: reconciles at once
/// (not after the machine's back-off for a device without key packages yet), again every
/// [`ADD_APPROVED_EVERY`] until every conversation has it or [`ADD_APPROVED_WAIT_MS`] passed.
async fn add_approved_device(driver: &Driver) {
    let deadline = js::now_ms() + ADD_APPROVED_WAIT_MS;
    loop {
        let settled = driver
            .ask(|machine, now, ui| match machine.own_devices_unsettled() {
                Ok(false) => true,
                Ok(true) => {
                    if let Err(e) = machine.reconcile_now() {
                        ui.error(e.to_string());
                        return true;
                    }
                    machine.sync(now);
                    false
                }
                Err(e) => {
                    ui.error(e.to_string());
                    true
                }
            })
            .await;
        if settled != Some(false) || js::now_ms() >= deadline {
            return;
        }
        sleep(ADD_APPROVED_EVERY).await;
    }
}

/// Removes one of this account's other devices: signs the list without it.
pub(crate) fn remove(driver: &Driver, token: String, device_id: String) {
    let again = driver.clone();
    driver.intent(move |machine, _, ui| {
        let Some(id) = DeviceId::parse(&device_id) else {
            return;
        };
        match machine.atomic(|engine, _| Ok(engine.revoke_device(id)?)) {
            Ok(list) => {
                let ui = *ui;
                leptos::task::spawn_local(async move {
                    let body = serde_json::to_string(&DeviceListUpdate {
                        device_list: B64(list.encode()),
                    })
                    .unwrap_or_default();
                    let path = format!("/v1/devices/{device_id}");
                    match net::call("DELETE", &path, Some(&token), Some(body)).await {
                        Ok(_) => {
                            ui.devices.update(|d| {
                                if let Some(d) = d {
                                    d.retain(|x| x.device_id != device_id);
                                }
                            });
                            // The machine removes it from every conversation.
                            again.intent(|machine, now, _| machine.sync(now));
                        }
                        Err(e) => ui.error(failure_text(e)),
                    }
                });
            }
            Err(e) => ui.error(format!("could not remove that device: {e}")),
        }
    });
}
