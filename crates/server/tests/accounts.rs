//! End to end over HTTP: registration and OPAQUE login, device linking and removal, the
//! key-package directory, login rate limits.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use common::*;
use nightjar_api::*;
use nightjar_core::Engine;
use nightjar_core::identity::SignedDeviceList;
use nightjar_core::storage::MemoryStore;
use nightjar_server::Limits;
use reqwest::{Method, StatusCode};

backend_tests!(
    register_and_login,
    link_approve_fetch_and_remove_a_device,
    device_list_put_follows_the_stored_list,
    login_attempts_are_rate_limited,
    device_requests_are_rate_limited,
);
backend_tests!(multi_thread: key_packages_are_claimed_once_and_last_resort_is_reused);

async fn register_and_login(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = register(&server, "alice", 2).await;
    let _bob = register(&server, "bob", 2).await;

    // The username is taken, whatever the case; invalid names are refused.
    let (status, body) = opaque_register(&server, "alice", b"pw").await.unwrap_err();
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, "username_taken")
    );
    let (status, body) = opaque_register(&server, "Alice", b"pw").await.unwrap_err();
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_username")
    );
    let (_, body) = opaque_register(&server, "a-b", b"pw").await.unwrap_err();
    assert_eq!(code(&body), "invalid_username");

    // Right password (any case of the name): a new session for the same device.
    // (Issue 8 finding 3: an existing device also proves possession of its key.)
    let (status, body) = login_signed(
        &server,
        &server,
        "ALICE",
        PASSWORD,
        &alice.device_id(),
        None,
        |login_id, challenge| Some(alice.engine.sign_login_proof(login_id, challenge).unwrap()),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let session: SessionResponse = serde_json::from_value(body).unwrap();
    assert_eq!(session.username, "alice");
    assert_eq!(session.device_status, DeviceStatus::Active);
    assert_ne!(session.token, alice.token);
    let devices: DevicesResponse = server.get_ok("/v1/devices", Some(&session.token)).await;
    assert_eq!(devices.devices.len(), 1);
    assert!(devices.devices[0].current);

    // Wrong password.
    let (status, body) = login_raw(&server, "alice", b"wrong", &alice.device_id(), None).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNAUTHORIZED, "wrong_credentials")
    );

    // Unknown username: the start answer has the same shape and size, the finish fails alike.
    let start = |name: &'static str| {
        let server = &server;
        async move {
            let login = opaque_ke::ClientLogin::<nightjar_api::opaque::Suite>::start(
                &mut rand_core::OsRng,
                b"pw",
            )
            .unwrap();
            let (status, body) = server
                .post(
                    "/v1/login/start",
                    None,
                    &LoginStartRequest {
                        username: name.into(),
                        credential_request: B64(login.message.serialize().to_vec()),
                    },
                )
                .await;
            assert_eq!(status, StatusCode::OK);
            body
        }
    };
    let known = start("alice").await;
    let unknown = start("nobody").await;
    let keys = |v: &serde_json::Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&known), keys(&unknown));
    assert_eq!(
        known["credential_response"].as_str().unwrap().len(),
        unknown["credential_response"].as_str().unwrap().len()
    );
    let (status, body) = login_raw(&server, "nobody", PASSWORD, &alice.device_id(), None).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNAUTHORIZED, "wrong_credentials")
    );

    // A login id is single use.
    let (status, body) = server
        .post(
            "/v1/login/finish",
            None,
            &LoginFinishRequest {
                login_id: "bm90LWEtbG9naW4".into(),
                credential_finalization: B64(vec![0; 64]),
                device_id: alice.device_id(),
                link_offer: None,
                device_signature: None,
            },
        )
        .await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "not_found"));

    // A new device without a link offer is refused.
    let (status, body) = login_raw(&server, "alice", PASSWORD, "00000000000000ff", None).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "bad_request")
    );

    // Lookup is case-insensitive and canonical; logout revokes the token.
    let account: AccountResponse = server.get_ok("/v1/accounts/Alice", alice.token()).await;
    assert_eq!(account.username, "alice");
    let list = SignedDeviceList::decode(&account.device_list.0)
        .unwrap()
        .verify()
        .unwrap();
    assert_eq!(
        list.identity_key.as_bytes().as_slice(),
        account.identity_key.0.as_slice()
    );
    let (status, _) = server.get("/v1/accounts/nobody", alice.token()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = server
        .request(Method::POST, "/v1/logout", Some(&session.token), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = server.get("/v1/devices", Some(&session.token)).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNAUTHORIZED, "unauthorized")
    );
    // The original session is unaffected.
    let (status, _) = server.get("/v1/devices", alice.token()).await;
    assert_eq!(status, StatusCode::OK);
}

async fn link_approve_fetch_and_remove_a_device(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut alice1 = register(&server, "alice", 2).await;

    let store = Arc::new(MemoryStore::new());
    let mut engine = Engine::new_device(store.clone(), "alice", engine_config()).unwrap();
    let offer = engine.link_offer(NOW).unwrap();
    let new_id = engine.device().device_id.to_string();

    // The offer must match the account and device.
    let (status, _) = login_raw(&server, "alice", PASSWORD, "0000000000000001", Some(&offer)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, body) = login_raw(&server, "alice", PASSWORD, &new_id, Some(&offer)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let pending: SessionResponse = serde_json::from_value(body).unwrap();
    assert_eq!(pending.device_status, DeviceStatus::Pending);
    let token = Some(pending.token.as_str());

    // A pending device may only look up accounts, poll its link and log out.
    let link: LinkStatusResponse = server.get_ok("/v1/devices/link", token).await;
    assert_eq!(link.status, DeviceStatus::Pending);
    assert!(link.sealed_identity.is_none());
    let _: AccountResponse = server.get_ok("/v1/accounts/alice", token).await;
    for path in [
        "/v1/devices",
        "/v1/devices/pending",
        "/v1/key-packages/count",
        "/v1/messages",
    ] {
        let (status, body) = server.get(path, token).await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::FORBIDDEN, "forbidden"),
            "{path}"
        );
    }
    let (status, _) = server
        .post(
            "/v1/accounts/alice/key-packages/claim",
            token,
            &serde_json::json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // The active device sees the offer and approves it with the next list.
    let listed: PendingDevicesResponse = server.get_ok("/v1/devices/pending", alice1.token()).await;
    assert_eq!(listed.pending.len(), 1);
    let relayed =
        nightjar_core::provisioning::LinkOffer::decode(&listed.pending[0].link_offer.0).unwrap();
    assert_eq!(relayed, offer);
    let (list, sealed) = alice1
        .engine
        .approve_link(&relayed, &engine.link_code().unwrap().display(), None)
        .unwrap();

    // A list that does not add exactly the pending device is refused (here: the current one).
    let current: AccountResponse = server.get_ok("/v1/accounts/alice", alice1.token()).await;
    let (status, body) = server
        .post(
            "/v1/devices/approve",
            alice1.token(),
            &ApproveDeviceRequest {
                device_id: new_id.clone(),
                device_list: current.device_list.clone(),
                sealed_identity: B64(sealed.clone()),
            },
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, "device_list_conflict")
    );

    let approve = ApproveDeviceRequest {
        device_id: new_id.clone(),
        device_list: B64(list.encode()),
        sealed_identity: B64(sealed),
    };
    let (status, body) = server
        .post("/v1/devices/approve", alice1.token(), &approve)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    // Approving again is refused: the device is no longer pending.
    let (status, _) = server
        .post("/v1/devices/approve", alice1.token(), &approve)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The new device fetches its sealed identity and becomes a full device.
    let link: LinkStatusResponse = server.get_ok("/v1/devices/link", token).await;
    assert_eq!(link.status, DeviceStatus::Active);
    engine
        .complete_link(&link.sealed_identity.unwrap().0)
        .unwrap();
    assert!(engine.has_account_identity());
    let mut alice2 = Device {
        engine,
        store,
        token: pending.token.clone(),
    };
    let stock = upload_key_packages(&server, &mut alice2, 4).await;
    assert_eq!(
        (stock.available, stock.last_resort, stock.replenish),
        (4, true, true)
    );
    let link: LinkStatusResponse = server.get_ok("/v1/devices/link", alice2.token()).await;
    assert!(
        link.sealed_identity.is_none(),
        "the sealed identity is dropped once used"
    );
    let account: AccountResponse = server.get_ok("/v1/accounts/alice", alice1.token()).await;
    assert_eq!(account.device_list.0, list.encode());
    let devices: DevicesResponse = server.get_ok("/v1/devices", alice2.token()).await;
    assert_eq!(devices.devices.len(), 2);

    // Removing: the list must omit the device, version + 1.
    let gone = alice2.engine.device().device_id;
    let next = alice1.engine.revoke_device(gone).unwrap();
    let path = format!("/v1/devices/{new_id}");
    let (status, body) = server
        .request(Method::DELETE, &path, alice1.token(), None)
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "bad_request")
    );
    let body = serde_json::to_value(DeviceListUpdate {
        device_list: B64(list.encode()),
    })
    .unwrap();
    let (status, _) = server
        .request(Method::DELETE, &path, alice1.token(), Some(&body))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "a stale list is refused");
    let body = serde_json::to_value(DeviceListUpdate {
        device_list: B64(next.encode()),
    })
    .unwrap();
    let (status, body) = server
        .request(Method::DELETE, &path, alice1.token(), Some(&body))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, _) = server.get("/v1/devices/link", alice2.token()).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the removed device's sessions are gone"
    );
    let claimed = claim(&server, &alice1, "alice").await;
    assert_eq!(claimed.key_packages.len(), 1, "only alice1 is left");
}

async fn device_list_put_follows_the_stored_list(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut alice1 = register(&server, "alice", 1).await;
    let alice2 = link_device(&server, &mut alice1).await;
    let gone = alice2.engine.device().device_id;
    let next = alice1.engine.revoke_device(gone).unwrap();
    let update = DeviceListUpdate {
        device_list: B64(next.encode()),
    };
    let body = serde_json::to_value(&update).unwrap();
    let (status, body) = server
        .request(Method::PUT, "/v1/device-list", alice1.token(), Some(&body))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, _) = server.get("/v1/devices", alice2.token()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // The same version again is a conflict.
    let body = serde_json::to_value(&update).unwrap();
    let (status, body) = server
        .request(Method::PUT, "/v1/device-list", alice1.token(), Some(&body))
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, "device_list_conflict")
    );
    // Another account's list is refused.
    let bob = register(&server, "bob", 1).await;
    let bob_list: AccountResponse = server.get_ok("/v1/accounts/bob", bob.token()).await;
    let body = serde_json::to_value(DeviceListUpdate {
        device_list: bob_list.device_list,
    })
    .unwrap();
    let (status, _) = server
        .request(Method::PUT, "/v1/device-list", alice1.token(), Some(&body))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
}

async fn key_packages_are_claimed_once_and_last_resort_is_reused(backend: Backend) {
    // One account claims 12 times here: lift its per-target claim quota (finding 10, tested
    // in hostile_floods.rs), which would hand it last-resort packages after 5.
    let limits = Limits {
        key_package_claims_per_target: 100,
        ..test_limits()
    };
    let server = Arc::new(TestServer::with_limits(backend, limits).await);
    let alice = register(&server, "alice", 0).await;
    let mut bob = register(&server, "bob", 3).await;
    let stock = upload_key_packages(&server, &mut bob, 5).await;
    assert_eq!((stock.available, stock.replenish), (8, true));
    let alice = Arc::new(alice);

    // 12 concurrent claims for 8 one-time packages: each handed out once, then last resort.
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let (server, alice) = (server.clone(), alice.clone());
        tasks.push(tokio::spawn(
            async move { claim(&server, &alice, "bob").await },
        ));
    }
    let mut one_time = Vec::new();
    let mut last_resort = HashSet::new();
    for task in tasks {
        let claimed = task.await.unwrap();
        assert_eq!(claimed.key_packages.len(), 1);
        let kp = &claimed.key_packages[0];
        assert_eq!(kp.device_id, bob.device_id());
        if kp.last_resort {
            last_resort.insert(kp.key_package.0.clone());
        } else {
            one_time.push(kp.key_package.0.clone());
        }
    }
    assert_eq!(one_time.len(), 8);
    assert_eq!(
        one_time.iter().collect::<HashSet<_>>().len(),
        8,
        "a package was handed out twice"
    );
    assert_eq!(
        last_resort.len(),
        1,
        "the same last-resort package every time"
    );
    let count: KeyPackageCount = server.get_ok("/v1/key-packages/count", bob.token()).await;
    assert_eq!(
        (count.available, count.last_resort, count.replenish),
        (0, true, true)
    );

    // Uploads: only the device's own packages, of the right kind, within the limits.
    let (mut carol, _) =
        Engine::create_account(Arc::new(MemoryStore::new()), "carol", engine_config(), NOW)
            .unwrap();
    let foreign = carol.generate_key_packages(1, false).unwrap().remove(0);
    let (status, body) = server
        .post(
            "/v1/key-packages",
            bob.token(),
            &UploadKeyPackagesRequest {
                key_packages: vec![B64(foreign)],
                last_resort: None,
            },
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "bad_request")
    );
    let one = bob
        .engine
        .generate_key_packages(1, false)
        .unwrap()
        .remove(0);
    let (status, _) = server
        .post(
            "/v1/key-packages",
            bob.token(),
            &UploadKeyPackagesRequest {
                key_packages: vec![],
                last_resort: Some(B64(one.clone())),
            },
        )
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "a one-time package as last resort"
    );
    let (status, body) = server
        .post(
            "/v1/key-packages",
            bob.token(),
            &UploadKeyPackagesRequest {
                key_packages: vec![B64(one); 101],
                last_resort: None,
            },
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::PAYLOAD_TOO_LARGE, "too_large")
    );
    let (status, _) = server
        .post(
            "/v1/accounts/nobody/key-packages/claim",
            alice.token(),
            &serde_json::json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

async fn login_attempts_are_rate_limited(backend: Backend) {
    let mut limits = test_limits();
    limits.login_attempts_per_account = 3;
    limits.login_attempts_per_ip = 7;
    let server = TestServer::with_limits(backend, limits).await;
    let alice = register(&server, "alice", 0).await;
    for _ in 0..3 {
        let (status, _) = login_raw(&server, "alice", b"guess", &alice.device_id(), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, body) = login_raw(&server, "alice", PASSWORD, &alice.device_id(), None).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
    );
    assert!(body["retry_after_ms"].as_u64().unwrap() > 0);
    // Per address: other accounts from the same address run out too (registration start and
    // finish, 3 logins and the refused one count already).
    let (status, _) = login_raw(&server, "bob", b"x", "0000000000000001", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = login_raw(&server, "carol", b"x", "0000000000000001", None).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
    );
}

async fn device_requests_are_rate_limited(backend: Backend) {
    let mut limits: Limits = test_limits();
    limits.device_request_burst = 5;
    limits.device_requests_per_second = 0.01;
    let server = TestServer::with_limits(backend, limits).await;
    let alice = register(&server, "alice", 0).await;
    let mut refused = 0;
    for _ in 0..8 {
        let (status, body) = server.get("/v1/key-packages/count", alice.token()).await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(code(&body), "rate_limited");
            refused += 1;
        }
    }
    assert_eq!(refused, 3);
}
