//! Setup: real accounts and real conversations, created through the server the way a client
//! creates them, once per server data directory.
//!
//! Each conversation gets `group_size` fresh accounts of one device each. Every device is a
//! real `nightjar_core::Engine` (classical suite, in-memory store): it registers with OPAQUE
//! (a cheap client-side Argon2id, which the client is free to choose), a signed device list,
//! one one-time and one last-resort key package. The first device then learns the others'
//! device lists, claims their key packages, creates the MLS group (a direct conversation for
//! two devices, a group otherwise) and posts the commit at epoch 0 with the member list. The
//! engines are dropped afterwards: the load phase needs only tokens, addresses and ids.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nightjar_api::opaque::Suite as OpaqueSuite;
use nightjar_api::{
    AccountResponse, B64, ClaimKeyPackagesResponse, DeviceAddress, DeviceStatus, EnvelopeKind,
    RegisterFinishRequest, RegisterStartRequest, RegisterStartResponse, SendRequest, SendResponse,
    SessionResponse, WelcomeOut,
};
use nightjar_core::identity::SignedDeviceList;
use nightjar_core::storage::MemoryStore;
use nightjar_core::{ConversationKind, Engine, EngineConfig, Suite, UpdatePolicy};
use opaque_ke::{
    ClientRegistration, ClientRegistrationFinishParameters, Identifiers, RegistrationResponse,
};
use rand_core::OsRng;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::api::Api;
use crate::error::{Error, Result};
use crate::state::{ConversationRecord, DeviceRecord, SetupState};

/// Benchmark accounts all share this password; OPAQUE never sends it anywhere.
const PASSWORD: &[u8] = b"nightjar loadgen benchmark account";
/// Save the state file after this many new conversations, so an interrupted setup resumes.
const SAVE_EVERY: usize = 2_000;

type Device = Engine<Arc<MemoryStore>>;

/// Argon2id with the smallest parameters Argon2 allows (m = 8 KiB, t = 1): the client picks
/// the OPAQUE key-stretching parameters, and setup of 100k accounts must stay cheap. Real
/// clients use the suite default (m = 19 MiB, t = 2).
fn cheap_ksf() -> Result<argon2::Argon2<'static>> {
    let params = argon2::Params::new(8, 1, 1, None)
        .map_err(|e| Error::Opaque(format!("argon2 parameters: {e}")))?;
    Ok(argon2::Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        params,
    ))
}

fn engine_config() -> EngineConfig {
    EngineConfig {
        suite: Suite::Classic,
        update_policy: UpdatePolicy {
            max_received: u32::MAX,
            max_age_ms: u64::MAX,
        },
        ..EngineConfig::default()
    }
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What setup did, for the report.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub(crate) struct SetupReport {
    /// Devices registered in this run.
    pub(crate) registered: usize,
    /// Conversations created in this run.
    pub(crate) conversations: usize,
    /// Seconds it took.
    pub(crate) seconds: f64,
}

/// Makes sure `state` holds at least `needed` conversations of `group_size` devices, creating
/// the missing ones through the servers (round-robin) with `concurrency` at once.
pub(crate) async fn ensure(
    state: &mut SetupState,
    apis: &[Api],
    group_size: usize,
    needed: usize,
    concurrency: usize,
    save_to: Option<&Path>,
) -> Result<SetupReport> {
    let have = state.conversations_of(group_size).len();
    let missing = needed.saturating_sub(have);
    let started = Instant::now();
    if missing == 0 {
        return Ok(SetupReport::default());
    }
    eprintln!(
        "setup: creating {missing} conversations of {group_size} devices ({} accounts)",
        missing * group_size
    );
    let limit = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = JoinSet::new();
    let first_device = state.devices.len();
    for k in 0..missing {
        let api = apis[k % apis.len()].clone();
        let names: Vec<String> = (0..group_size)
            .map(|j| format!("lg{}_{}", state.tag, first_device + k * group_size + j))
            .collect();
        let limit = limit.clone();
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            create_conversation(&api, &names).await
        });
    }
    let mut report = SetupReport::default();
    let mut last_print = Instant::now();
    while let Some(joined) = tasks.join_next().await {
        let (devices, id) =
            joined.map_err(|e| Error::other(format!("setup task failed: {e}")))??;
        let base = state.devices.len();
        report.registered += devices.len();
        state.devices.extend(devices);
        state.conversations.push(ConversationRecord {
            id,
            epoch: 1,
            members: (base..base + group_size).collect(),
        });
        report.conversations += 1;
        if let Some(path) = save_to
            && report.conversations % SAVE_EVERY == 0
        {
            state.save(path)?;
        }
        if last_print.elapsed() > Duration::from_secs(5) {
            last_print = Instant::now();
            let rate = report.registered as f64 / started.elapsed().as_secs_f64();
            eprintln!(
                "setup: {}/{missing} conversations, {:.0} accounts/s",
                report.conversations, rate
            );
        }
    }
    if let Some(path) = save_to {
        state.save(path)?;
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Registers one account per name and creates their conversation; returns the devices (the
/// creator first) and the conversation id.
async fn create_conversation(api: &Api, names: &[String]) -> Result<(Vec<DeviceRecord>, String)> {
    let mut devices = Vec::with_capacity(names.len());
    for name in names {
        devices.push(register(api, name).await?);
    }
    let (mut creator, creator_record) = devices.remove(0);
    let others: Vec<&str> = names[1..].iter().map(String::as_str).collect();
    let mut key_packages = Vec::new();
    for name in &others {
        let account: AccountResponse = api
            .get(&format!("/v1/accounts/{name}"), Some(&creator_record.token))
            .await?;
        let list = SignedDeviceList::decode(&account.device_list.0)
            .map_err(|e| Error::other(format!("device list of {name}: {e}")))?;
        creator.accept_device_list(name, &list)?;
        let claimed: ClaimKeyPackagesResponse = api
            .post(
                &format!("/v1/accounts/{name}/key-packages/claim"),
                Some(&creator_record.token),
                &serde_json::json!({}),
            )
            .await?;
        key_packages.extend(claimed.key_packages.into_iter().map(|k| k.key_package.0));
    }
    let kind = if names.len() == 2 {
        ConversationKind::Direct
    } else {
        ConversationKind::Group
    };
    let now = now_ms();
    let (conversation, bundle) =
        creator.create_conversation(now, kind, &others, None, &key_packages)?;
    let mut records = vec![creator_record];
    records.extend(devices.into_iter().map(|(_, r)| r));
    let members: Vec<DeviceAddress> = records.iter().map(DeviceRecord::address).collect();
    let welcome = bundle.welcome.clone().map(|payload| WelcomeOut {
        payload: B64(payload),
        recipients: members[1..].to_vec(),
    });
    let request = SendRequest {
        idempotency_key: "loadgen-create".into(),
        kind: EnvelopeKind::Commit,
        epoch: bundle.epoch,
        payload: B64(bundle.commit.clone()),
        welcome,
        members: Some(members),
        group_info: bundle.group_info.clone().map(B64),
        franking_commitment: None,
    };
    let sent: SendResponse = api
        .post(
            &format!("/v1/conversations/{conversation}/messages"),
            Some(&records[0].token),
            &request,
        )
        .await?;
    if sent.epoch != 1 {
        return Err(Error::other(format!(
            "conversation {conversation}: server epoch {} after creation, expected 1",
            sent.epoch
        )));
    }
    creator.commit_accepted(now, conversation)?;
    Ok((records, conversation.to_string()))
}

/// Registers `username` as a new account whose first device is a fresh engine.
async fn register(api: &Api, username: &str) -> Result<(Device, DeviceRecord)> {
    let store = Arc::new(MemoryStore::new());
    let (mut engine, list) = Engine::create_account(store, username, engine_config(), now_ms())?;
    let one_time = engine.generate_key_packages(1, false)?;
    let last_resort = engine
        .generate_key_packages(1, true)?
        .pop()
        .ok_or_else(|| Error::other("no last-resort key package"))?;
    let start = ClientRegistration::<OpaqueSuite>::start(&mut OsRng, PASSWORD)
        .map_err(|e| Error::Opaque(e.to_string()))?;
    let response: RegisterStartResponse = api
        .post(
            "/v1/register/start",
            None,
            &RegisterStartRequest {
                username: username.into(),
                registration_request: B64(start.message.serialize().to_vec()),
            },
        )
        .await?;
    let ksf = cheap_ksf()?;
    let response = RegistrationResponse::deserialize(&response.registration_response.0)
        .map_err(|e| Error::Opaque(e.to_string()))?;
    let finish = start
        .state
        .finish(
            &mut OsRng,
            PASSWORD,
            response,
            ClientRegistrationFinishParameters::new(Identifiers::default(), Some(&ksf)),
        )
        .map_err(|e| Error::Opaque(e.to_string()))?;
    let device_id = engine.device().device_id.to_string();
    let session: SessionResponse = api
        .post(
            "/v1/register/finish",
            None,
            &RegisterFinishRequest {
                username: username.into(),
                registration_record: B64(finish.message.serialize().to_vec()),
                device_id: device_id.clone(),
                device_list: B64(list.encode()),
                key_packages: one_time.into_iter().map(B64).collect(),
                last_resort_key_package: B64(last_resort),
            },
        )
        .await?;
    if session.device_status != DeviceStatus::Active {
        return Err(Error::other(format!(
            "{username}: new device is not active"
        )));
    }
    Ok((
        engine,
        DeviceRecord {
            username: username.into(),
            device_id,
            token: session.token,
        },
    ))
}
