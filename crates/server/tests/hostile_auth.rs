//! Adversarial tests for device authentication (issue 8, findings 3 and 8): somebody who knows
//! an account's password (or just its name, or its public device ids) tries to take over an
//! existing device, forge or replay its proof, or lock its owner out.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use nightjar_api::*;
use nightjar_core::Engine;
use nightjar_core::identity::{DeviceEntry, DeviceId};
use nightjar_core::provisioning::{LinkCode, LinkOffer, LinkSecret};
use nightjar_core::storage::MemoryStore;
use reqwest::StatusCode;

backend_tests!(
    password_alone_gets_no_session_on_an_existing_device,
    forged_stale_or_replayed_device_signatures_are_refused,
    malformed_login_starts_do_not_count_and_cannot_lock_out,
    a_victims_account_is_slowed_not_locked,
    known_device_signs_in_with_its_key_while_password_limits_are_hit,
    device_key_sign_in_refuses_strangers_and_replays,
    revoke_others_ends_every_other_session,
);

/// A login proof as an eavesdropper (or the server) captured it.
#[derive(Clone, Debug, Default)]
struct Captured {
    login_id: String,
    challenge: Vec<u8>,
    signature: Vec<u8>,
}

/// A device the attacker controls, claiming to belong to `username`.
fn attacker_engine(username: &str) -> Engine<Arc<MemoryStore>> {
    Engine::new_device(Arc::new(MemoryStore::new()), username, engine_config()).unwrap()
}

async fn password_alone_gets_no_session_on_an_existing_device(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = register(&server, "alice", 1).await;
    // The attacker knows alice's password and her (public) device id.
    let (status, body) = login_raw(&server, "alice", PASSWORD, &alice.device_id(), None).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::FORBIDDEN, "forbidden"),
        "a password alone signed in an existing device: {body}"
    );
    // Nor with a link offer of its own under that device id.
    let mallory = attacker_engine("alice");
    let offer = LinkOffer::new(
        b"alice".to_vec(),
        DeviceEntry {
            device_id: DeviceId::parse(&alice.device_id()).unwrap(),
            signature_key: mallory.device_entry(NOW).signature_key,
            added_at_ms: NOW,
        },
        LinkSecret::generate().unwrap().public(),
        &LinkCode::generate().unwrap(),
    )
    .unwrap();
    let (status, body) =
        login_raw(&server, "alice", PASSWORD, &alice.device_id(), Some(&offer)).await;
    assert_eq!((status, code(&body)), (StatusCode::FORBIDDEN, "forbidden"));
    // alice's device has exactly one session: her own.
    let sessions: SessionsResponse = server.get_ok("/v1/sessions", alice.token()).await;
    assert_eq!(sessions.sessions.len(), 1, "{:?}", sessions.sessions);
    assert!(sessions.sessions[0].current);

    // All a password yields is a NEW device, pending approval, which reads no queue.
    let mut new = attacker_engine("alice");
    let offer = new.link_offer(NOW).unwrap();
    let (status, body) = login_raw(
        &server,
        "alice",
        PASSWORD,
        &new.device().device_id.to_string(),
        Some(&offer),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let session: SessionResponse = serde_json::from_value(body).unwrap();
    assert_eq!(session.device_status, DeviceStatus::Pending);
    for path in ["/v1/messages", "/v1/sessions"] {
        let (status, _) = server.get(path, Some(&session.token)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
    }

    // The owner, with the password and her device key, signs in.
    let (status, body) = login_existing(&server, &alice, PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let session: SessionResponse = serde_json::from_value(body).unwrap();
    assert_eq!(session.device_status, DeviceStatus::Active);
}

async fn forged_stale_or_replayed_device_signatures_are_refused(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = register(&server, "alice", 1).await;
    let mallory = attacker_engine("alice");

    // Signed by another key.
    let (status, body) = login_signed(
        &server,
        &server,
        "alice",
        PASSWORD,
        &alice.device_id(),
        None,
        |login_id, challenge| Some(mallory.sign_login_proof(login_id, challenge).unwrap()),
    )
    .await;
    assert_eq!((status, code(&body)), (StatusCode::FORBIDDEN, "forbidden"));
    // Garbage.
    let (status, _) = login_signed(
        &server,
        &server,
        "alice",
        PASSWORD,
        &alice.device_id(),
        None,
        |_, _| Some(vec![7; 64]),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // A valid proof, captured (by the server or the network) from one login...
    let seen: Arc<Mutex<Captured>> = Arc::default();
    let (status, _) = login_signed(
        &server,
        &server,
        "alice",
        PASSWORD,
        &alice.device_id(),
        None,
        |login_id, challenge| {
            let signature = alice.engine.sign_login_proof(login_id, challenge).unwrap();
            *seen.lock().unwrap() = Captured {
                login_id: login_id.to_owned(),
                challenge: challenge.to_vec(),
                signature: signature.clone(),
            };
            Some(signature)
        },
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let Captured {
        login_id: old_login,
        challenge: old_challenge,
        signature: old_signature,
    } = seen.lock().unwrap().clone();
    // ...is no good for the next login (a replay),
    let (status, _) = login_signed(
        &server,
        &server,
        "alice",
        PASSWORD,
        &alice.device_id(),
        None,
        |_, _| Some(old_signature.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // nor is a proof over a stale challenge under the new login id,
    let (status, _) = login_signed(
        &server,
        &server,
        "alice",
        PASSWORD,
        &alice.device_id(),
        None,
        |login_id, _| {
            Some(
                alice
                    .engine
                    .sign_login_proof(login_id, &old_challenge)
                    .unwrap(),
            )
        },
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // and the old login itself is used up.
    let (status, _) = server
        .post(
            "/v1/login/finish",
            None,
            &LoginFinishRequest {
                login_id: old_login,
                credential_finalization: B64(vec![0; 64]),
                device_id: alice.device_id(),
                link_offer: None,
                device_signature: Some(B64(old_signature)),
            },
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

fn malformed_start(username: &str) -> LoginStartRequest {
    LoginStartRequest {
        username: username.into(),
        credential_request: B64(vec![1, 2, 3]),
    }
}

async fn malformed_login_starts_do_not_count_and_cannot_lock_out(backend: Backend) {
    let mut limits = test_limits();
    limits.login_attempts_per_account = 3;
    limits.login_attempts_per_ip = 10;
    let server = TestServer::with_limits(backend, limits).await;
    let alice = register(&server, "alice", 1).await;
    // Far more garbage than any limit allows: each is refused as malformed, none counts.
    for _ in 0..25 {
        let (status, body) = server
            .post("/v1/login/start", None, &malformed_start("alice"))
            .await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::BAD_REQUEST, "bad_request"),
            "{body}"
        );
    }
    let (status, body) = login_existing(&server, &alice, PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "alice is locked out: {body}");
}

async fn a_victims_account_is_slowed_not_locked(backend: Backend) {
    let mut limits = test_limits();
    limits.login_attempts_per_account = 3;
    limits.login_window = Duration::from_secs(3);
    let server = TestServer::with_limits(backend, limits).await;
    let alice = register(&server, "alice", 1).await;
    // An attacker guesses (well-formed, wrong) until refused.
    let mut refused = None;
    for _ in 0..10 {
        let (status, body) = login_raw(&server, "alice", b"guess", &alice.device_id(), None).await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            refused = Some(body);
            break;
        }
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let body = refused.expect("guessing was never slowed");
    // The refusal says when the next attempt is allowed: one attempt's share of the window
    // (1 s here), not the whole window.
    let wait = body["retry_after_ms"].as_u64().unwrap();
    assert!(wait <= 1_000, "locked out for {wait} ms");
    tokio::time::sleep(Duration::from_millis(wait + 50)).await;
    let (status, body) = login_existing(&server, &alice, PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

async fn known_device_signs_in_with_its_key_while_password_limits_are_hit(backend: Backend) {
    let mut limits = test_limits();
    limits.login_attempts_per_account = 2;
    limits.login_attempts_per_ip = 5;
    let server = TestServer::with_limits(backend, limits).await;
    let alice = register(&server, "alice", 1).await;
    // The attacker uses up every password attempt, for the account and the address.
    let mut hit = 0;
    for name in ["alice", "alice", "alice", "bob", "bob", "carol", "carol"] {
        let (status, _) = login_raw(&server, name, b"guess", &alice.device_id(), None).await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            hit += 1;
        }
    }
    assert!(hit >= 2);
    let (status, _) = login_existing(&server, &alice, PASSWORD).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    // alice's device still signs in with its key.
    let (status, body) = device_sign_in(&server, &alice).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let session: SessionResponse = serde_json::from_value(body).unwrap();
    assert_eq!(session.device_status, DeviceStatus::Active);
    assert_eq!(session.device_id, alice.device_id());
    let devices: DevicesResponse = server.get_ok("/v1/devices", Some(&session.token)).await;
    assert_eq!(devices.devices.len(), 1);
}

async fn device_key_sign_in_refuses_strangers_and_replays(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = register(&server, "alice", 1).await;
    let mallory = attacker_engine("alice");
    let wrong_credentials = (StatusCode::UNAUTHORIZED, "wrong_credentials");

    // Another key for alice's device.
    let (status, body) = device_sign_in_with(&server, "alice", &alice.device_id(), |l, c| {
        mallory.sign_login_proof(l, c).unwrap()
    })
    .await;
    assert_eq!((status, code(&body)), wrong_credentials);
    // alice's own key, but a proof for another device id (mallory's engine claims alice).
    let (status, body) = device_sign_in_with(
        &server,
        "alice",
        &mallory.device().device_id.to_string(),
        |l, c| alice.engine.sign_login_proof(l, c).unwrap(),
    )
    .await;
    assert_eq!((status, code(&body)), wrong_credentials);
    // Unknown accounts get a challenge like anyone, and fail at the end.
    let (status, body) = device_sign_in_with(&server, "nobody", &alice.device_id(), |l, c| {
        alice.engine.sign_login_proof(l, c).unwrap()
    })
    .await;
    assert_eq!((status, code(&body)), wrong_credentials);

    // A valid sign-in works once; its login id is then used up.
    let seen: Arc<Mutex<Captured>> = Arc::default();
    let (status, _) = device_sign_in_with(&server, "alice", &alice.device_id(), |l, c| {
        let signature = alice.engine.sign_login_proof(l, c).unwrap();
        *seen.lock().unwrap() = Captured {
            login_id: l.to_owned(),
            challenge: c.to_vec(),
            signature: signature.clone(),
        };
        signature
    })
    .await;
    assert_eq!(status, StatusCode::OK);
    let Captured {
        login_id,
        signature,
        ..
    } = seen.lock().unwrap().clone();
    let replay = DeviceLoginFinishRequest {
        login_id,
        device_signature: B64(signature.clone()),
    };
    let (status, _) = server.post("/v1/device-login/finish", None, &replay).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // The captured signature does not fit a fresh challenge.
    let (status, _) =
        device_sign_in_with(&server, "alice", &alice.device_id(), |_, _| signature).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // A password login's id cannot be finished as a device-key sign-in.
    let (status, body) = server
        .post(
            "/v1/login/start",
            None,
            &LoginStartRequest {
                username: "alice".into(),
                credential_request: B64(
                    opaque_ke::ClientLogin::<nightjar_api::opaque::Suite>::start(
                        &mut rand_core::OsRng,
                        PASSWORD,
                    )
                    .unwrap()
                    .message
                    .serialize()
                    .to_vec(),
                ),
            },
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let start: LoginStartResponse = serde_json::from_value(body).unwrap();
    let proof = alice
        .engine
        .sign_login_proof(&start.login_id, &start.challenge.0)
        .unwrap();
    let (status, _) = server
        .post(
            "/v1/device-login/finish",
            None,
            &DeviceLoginFinishRequest {
                login_id: start.login_id,
                device_signature: B64(proof),
            },
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Malformed starts are refused before anything is kept.
    let (status, _) = server
        .post(
            "/v1/device-login/start",
            None,
            &DeviceLoginStartRequest {
                username: "alice".into(),
                device_id: "not-hex".into(),
            },
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

async fn revoke_others_ends_every_other_session(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut alice1 = register(&server, "alice", 2).await;
    let alice2 = link_device(&server, &mut alice1).await;
    // A second session of alice1's own device (say, a stolen token).
    let (status, body) = device_sign_in(&server, &alice1).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let other: SessionResponse = serde_json::from_value(body).unwrap();

    let listed: SessionsResponse = server.get_ok("/v1/sessions", alice1.token()).await;
    assert!(listed.sessions.len() >= 3, "{:?}", listed.sessions);
    assert_eq!(listed.sessions.iter().filter(|s| s.current).count(), 1);
    assert!(
        listed
            .sessions
            .iter()
            .any(|s| s.device_id == alice2.device_id())
    );

    let revoked: RevokeSessionsResponse = server
        .post_ok("/v1/sessions/revoke-others", alice1.token(), &())
        .await;
    assert!(revoked.revoked >= 2, "{revoked:?}");
    for token in [alice2.token(), Some(other.token.as_str())] {
        let (status, _) = server.get("/v1/devices", token).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let listed: SessionsResponse = server.get_ok("/v1/sessions", alice1.token()).await;
    assert_eq!(listed.sessions.len(), 1);
    assert!(listed.sessions[0].current);
    // A revoked device signs back in with its key; the password alone would not do.
    let (status, _) = login_raw(&server, "alice", PASSWORD, &alice2.device_id(), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = device_sign_in(&server, &alice2).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}
