//! Starting the app: open the vault, load the profile if this browser has one, or register a
//! new account (OPAQUE in wasm: the password never leaves the page).

use leptos::prelude::Set as _;
use nightjar_api::{
    B64, RegisterFinishRequest, RegisterStartRequest, RegisterStartResponse, SessionResponse,
};
use nightjar_core::{Engine, EngineConfig};
use nightjar_machine::auth::{self, Password};
use nightjar_machine::{ClientStore, Failure, Machine, MemoryClientStore};

use crate::driver::{self, Driver};
use crate::js;
use crate::net;
use crate::ui_state::{Phase, Ui};
use crate::vault::Vault;

/// The settings key of the session token.
pub(crate) const TOKEN: &str = "web/token";
/// This device's session token, as the profile keeps it.
pub(crate) fn token(machine: &Machine<MemoryClientStore>) -> Option<String> {
    machine.store().meta(TOKEN).ok().flatten()
}

/// The settings key of the account's name.
pub(crate) const USERNAME: &str = "web/username";

/// Settings keys of the browser profile.
mod meta {
    pub(super) use super::{TOKEN, USERNAME};
}

/// One-time key packages uploaded at registration.
pub(crate) const KEY_PACKAGES: usize = 20;

pub(crate) fn failure_text(f: Failure) -> String {
    match f {
        Failure::Network(e) => format!("the server could not be reached ({e})"),
        Failure::Refused(e) => e.message,
    }
}

/// Opens the vault and, if this browser holds an account, starts its driver.
pub(crate) async fn boot(ui: Ui) -> Option<(Vault, Option<Driver>)> {
    let vault = match Vault::open().await {
        Ok(v) => v,
        Err(e) => {
            ui.phase.set(Phase::Broken(format!(
                "this browser cannot keep an encrypted profile: {e}"
            )));
            return None;
        }
    };
    let entries = match vault.load().await {
        Ok(e) => e,
        Err(e) => {
            ui.phase.set(Phase::Broken(e));
            return None;
        }
    };
    let store = MemoryClientStore::from_entries(entries);
    let (Ok(Some(token)), Ok(Some(username))) =
        (store.meta(meta::TOKEN), store.meta(meta::USERNAME))
    else {
        ui.phase.set(Phase::Welcome);
        return Some((vault, None));
    };
    ui.me.set(username.clone());
    if store.meta(crate::link::PENDING).ok().flatten().is_some() {
        crate::link::resume(vault.clone(), store, token, ui);
        return Some((vault, None));
    }
    match Machine::load(store) {
        Ok(machine) => {
            ui.me.set(username);
            ui.phase.set(Phase::Ready);
            let driver = driver::start(machine, vault.clone(), token, ui);
            Some((vault, Some(driver)))
        }
        Err(e) => {
            ui.phase
                .set(Phase::Broken(format!("the stored profile is damaged: {e}")));
            None
        }
    }
}

/// Registers `username` with this browser as its first device.
pub(crate) async fn register(
    vault: Vault,
    username: String,
    password: String,
    ui: Ui,
) -> Result<Driver, String> {
    nightjar_core::identity::validate_username(&username)
        .map_err(|_| "a username is 3 to 32 characters: a-z, 0-9 and _".to_owned())?;
    if password.chars().count() < 8 {
        return Err("choose a password of at least 8 characters".into());
    }
    let password = Password::new(password);
    let (state, request) = auth::registration_start(&password).map_err(|e| e.to_string())?;
    let start: RegisterStartResponse = net::json(
        "POST",
        "/v1/register/start",
        None,
        Some(&RegisterStartRequest {
            username: username.clone(),
            registration_request: B64(request),
        }),
    )
    .await
    .map_err(failure_text)?;
    let record = auth::registration_finish(state, &password, &start.registration_response.0)
        .map_err(|e| e.to_string())?;
    let store = MemoryClientStore::new();
    let (mut engine, list) = Engine::create_account(
        store.clone(),
        &username,
        EngineConfig::default(),
        js::now_ms(),
    )
    .map_err(|e| e.to_string())?;
    let key_packages = engine
        .generate_key_packages(KEY_PACKAGES, false)
        .map_err(|e| e.to_string())?;
    let last_resort = engine
        .generate_key_packages(1, true)
        .map_err(|e| e.to_string())?
        .pop()
        .ok_or("no last-resort key package")?;
    let session: SessionResponse = net::json(
        "POST",
        "/v1/register/finish",
        None,
        Some(&RegisterFinishRequest {
            username: username.clone(),
            registration_record: B64(record),
            device_id: engine.device().device_id.to_string(),
            device_list: B64(list.encode()),
            key_packages: key_packages.into_iter().map(B64).collect(),
            last_resort_key_package: B64(last_resort),
        }),
    )
    .await
    .map_err(failure_text)?;
    let mut machine = Machine::new(store.clone(), engine);
    machine
        .accept_list(js::now_ms(), &username, &list)
        .map_err(|e| e.to_string())?;
    store
        .set_meta(meta::TOKEN, &session.token)
        .and_then(|()| store.set_meta(meta::USERNAME, &username))
        .map_err(|e| e.to_string())?;
    vault
        .persist(store.take_journal().map_err(|e| e.to_string())?)
        .await?;
    ui.me.set(username);
    ui.phase.set(Phase::Ready);
    Ok(driver::start(machine, vault, session.token, ui))
}

/// Ends the session on the server and deletes this browser's profile and keys.
pub(crate) async fn logout(vault: Vault, token: Option<String>) {
    if let Some(token) = token {
        // Whatever the server says, the profile goes: the session dies with it.
        let _ = net::call("POST", "/v1/logout", Some(&token), None).await;
    }
    let _ = vault.wipe().await;
    if let Ok(window) = js::window() {
        let _ = window.location().reload();
    }
}

/// Accepts or blocks `username` on the server; the decision to record locally.
pub(crate) async fn decide(
    token: Option<String>,
    username: &str,
    accept: bool,
) -> Result<nightjar_machine::rows::Consent, String> {
    let state = if accept {
        nightjar_api::ConsentState::Accepted
    } else {
        nightjar_api::ConsentState::Blocked
    };
    let body = serde_json::to_string(&nightjar_api::SetConsentRequest { state })
        .map_err(|e| e.to_string())?;
    let path = format!("/v1/consent/{username}");
    net::call("PUT", &path, token.as_deref(), Some(body))
        .await
        .map_err(failure_text)?;
    Ok(if accept {
        nightjar_machine::rows::Consent::Accepted
    } else {
        nightjar_machine::rows::Consent::Blocked
    })
}
