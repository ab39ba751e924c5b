//! Adversarial tests for device linking (issue 8, finding 2), with a real malicious "server":
//! the `nightjar-testkit` proxy sits between the clients and a real server and rewrites what
//! the server relays. It knows everything the server knows (the link offer, every public key)
//! but never the approval code, which only the user carries from one screen to the other.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{options, start};
use std::path::Path;
use std::sync::{Arc, Mutex};

use nightjar_api::B64;
use nightjar_client::{Client, LoginOutcome, Password};
use nightjar_core::Engine;
use nightjar_core::identity::{AccountIdentity, DeviceList};
use nightjar_core::provisioning::{BundleContents, LinkCode, LinkOffer, LinkSecret, seal_bundle};
use nightjar_server::{RunningServer, ServerConfig};
use nightjar_testkit::{Mitm, Verdict};
use serde_json::json;

const PASSWORD: &str = "correct horse battery staple";

struct World {
    _tmp: tempfile::TempDir,
    root: std::path::PathBuf,
    _server: RunningServer,
    direct: String,
    mitm: Mitm,
}

async fn world() -> World {
    // The proxy's HTTP client needs a process-wide TLS provider in this build.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_owned();
    let (server, direct) = start(ServerConfig::new(
        root.join("server"),
        "127.0.0.1:0".parse().unwrap(),
    ))
    .await;
    let mitm = Mitm::start(&direct).await;
    World {
        _tmp: tmp,
        root,
        _server: server,
        direct,
        mitm,
    }
}

fn profile(root: &Path, name: &str) -> Client {
    Client::open(&root.join(name), options()).unwrap()
}

async fn registered(root: &Path, server: &str, name: &str) -> Client {
    let mut c = profile(root, name);
    c.register(server, name, &Password::new(PASSWORD.into()))
        .await
        .unwrap();
    c
}

/// Logs `profile` in as a new device of `username` through `server`; returns the code shown.
async fn pending(c: &mut Client, server: &str, username: &str) -> String {
    match c
        .login(server, username, &Password::new(PASSWORD.into()))
        .await
        .unwrap()
    {
        LoginOutcome::Pending { code, .. } => code,
        other => panic!("{other:?}"),
    }
}

/// The link offer the new device sent, as the server saw it.
fn relayed_offer(mitm: &Mitm) -> LinkOffer {
    let exchange = mitm
        .recorded()
        .into_iter()
        .rev()
        .find(|e| e.request.path == "/v1/login/finish")
        .unwrap();
    let body = exchange.request.json().unwrap();
    LinkOffer::decode(&B64::decode(body["link_offer"].as_str().unwrap()).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_cannot_seal_its_own_identity_to_a_new_device() {
    let w = world().await;
    let mut alice1 = registered(&w.root, &w.direct, "alice").await;
    let mut alice2 = profile(&w.root, "alice2");
    let code = pending(&mut alice2, &w.mitm.base, "alice").await;
    assert_eq!(code.len(), 23, "{code}");
    let offer = relayed_offer(&w.mitm);

    // The server makes up an account identity of its own, lists the new device under it and
    // seals it to the offer's public X25519 key. It does not know the code, so it guesses.
    let fake = AccountIdentity::generate().unwrap();
    let list = fake
        .sign(&DeviceList {
            username: b"alice".to_vec(),
            identity_key: fake.public(),
            version: 2,
            devices: vec![offer.device.clone()],
        })
        .unwrap();
    let guess = LinkCode::generate().unwrap();
    let forged_offer = LinkOffer::new(
        offer.username.clone(),
        offer.device.clone(),
        offer.link_key,
        &guess,
    )
    .unwrap();
    let contents = BundleContents {
        own_list: &list,
        contacts: &[],
        history: None,
    };
    let sealed = seal_bundle(&forged_offer, &guess, &fake, contents).unwrap();
    w.mitm.on_response(move |request, response| {
        if request.path.starts_with("/v1/devices/link") {
            response.set_json(&json!({
                "status": "active",
                "sealed_identity": B64::encode(&sealed),
            }));
        }
        Verdict::Forward
    });
    let refused = alice2.check_link().await;
    assert!(
        refused.is_err(),
        "the new device accepted the server's identity"
    );
    assert!(
        alice2.is_pending().unwrap(),
        "the new device installed something"
    );

    // The real approval still works once the server stops lying.
    w.mitm.clear();
    alice1.approve(&code, &mut |_| {}).await.unwrap();
    assert!(alice2.check_link().await.unwrap());
    assert!(!alice2.is_pending().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_swapping_the_offer_keys_is_caught_by_approve() {
    let w = world().await;
    let mut alice1 = registered(&w.root, &w.mitm.base, "alice").await;
    let mut alice2 = profile(&w.root, "alice2");
    let code = pending(&mut alice2, &w.mitm.base, "alice").await;

    // The server's own device key, and its own link key, to swap into the relayed offer.
    let mallory = Engine::new_device(
        Arc::new(nightjar_core::storage::MemoryStore::new()),
        "alice",
        options().engine,
    )
    .unwrap();
    let mallory_key = mallory.device_entry(0).signature_key;
    let mallory_link = LinkSecret::generate().unwrap().public();
    for swap in 0..2 {
        let swapped = Arc::new(Mutex::new(0));
        let counter = swapped.clone();
        w.mitm.on_response(move |request, response| {
            if request.path == "/v1/devices/pending" {
                let mut body = response.json().unwrap();
                for p in body["pending"].as_array_mut().unwrap() {
                    let bytes = B64::decode(p["link_offer"].as_str().unwrap()).unwrap();
                    let mut offer = LinkOffer::decode(&bytes).unwrap();
                    if swap == 0 {
                        offer.device.signature_key = mallory_key;
                    } else {
                        offer.link_key = mallory_link;
                    }
                    p["link_offer"] = json!(B64::encode(&offer.encode()));
                    *counter.lock().unwrap() += 1;
                }
                response.set_json(&body);
            }
            Verdict::Forward
        });
        let refused = alice1.approve(&code, &mut |_| {}).await;
        assert!(refused.is_err(), "approved a swapped offer ({swap})");
        assert!(*swapped.lock().unwrap() > 0);
        assert!(
            !alice2.check_link().await.unwrap(),
            "the device was approved"
        );
    }
    w.mitm.clear();
    alice1.approve(&code, &mut |_| {}).await.unwrap();
    assert!(alice2.check_link().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linked_device_trusts_exactly_what_the_account_trusted() {
    let w = world().await;
    let mut alice1 = registered(&w.root, &w.direct, "alice").await;
    let _bob = registered(&w.root, &w.direct, "bob").await;
    let _carol = registered(&w.root, &w.direct, "carol").await;
    // alice pins bob and carol, and verifies bob after comparing safety numbers.
    alice1.safety_number("carol").await.unwrap();
    let (bob_number, _) = alice1.safety_number("bob").await.unwrap();
    alice1.verify("bob").await.unwrap();
    assert!(alice1.is_verified("bob").unwrap());
    assert!(!alice1.is_verified("carol").unwrap());

    let mut alice2 = profile(&w.root, "alice2");
    let code = pending(&mut alice2, &w.mitm.base, "alice").await;
    alice1.approve(&code, &mut |_| {}).await.unwrap();
    assert!(alice2.check_link().await.unwrap());
    // The new device knows the pinned contacts and the marks, before asking the server.
    assert!(alice2.is_verified("bob").unwrap());
    assert!(!alice2.is_verified("carol").unwrap());
    let status = alice2.status().await.unwrap();
    assert_eq!(status.verified, vec!["bob".to_owned()]);

    // The server now hands out a key of its own for bob: the new device does not pin the
    // server's key on first use, and its directory proof gives the swap away.
    let fake = AccountIdentity::generate().unwrap();
    let list = fake
        .sign(&DeviceList {
            username: b"bob".to_vec(),
            identity_key: fake.public(),
            version: 9,
            devices: vec![],
        })
        .unwrap();
    let list = B64::encode(&list.encode());
    let key = B64::encode(fake.public().as_bytes());
    // It keeps the directory's proof it served with the real list (its directory holds bob's
    // real key: publishing the fake one would show in bob's own history and to auditors).
    w.mitm.on_response(move |request, response| {
        if request.path == "/v1/accounts/bob"
            && let Some(real) = response.json()
        {
            response.set_json(&json!({
                "username": "bob",
                "identity_key": key,
                "device_list": list,
                "transparency": real["transparency"],
            }));
        }
        Verdict::Forward
    });
    let refused = alice2.create_group("g", &["bob".to_owned()]).await;
    let refused = format!("{refused:?}");
    assert!(
        refused.contains("refused the keys of bob") && refused.contains("directory does not hold"),
        "{refused}"
    );
    // Its safety number with bob is still the one alice verified, and nothing waits to be
    // trusted: the server's key was never taken for bob's.
    w.mitm.clear();
    let (number, changed) = alice2.safety_number("bob").await.unwrap();
    assert_eq!(number.grouped(), bob_number.grouped());
    assert!(changed.is_none(), "the server's key was recorded as bob's");
    assert!(alice2.is_verified("bob").unwrap());
}

/// alice sends bob a message, then approves a new device (through the proxy), which has not
/// seen the approval yet.
async fn approved_after_a_message(w: &World) -> Client {
    let mut alice1 = registered(&w.root, &w.direct, "alice").await;
    let _bob = registered(&w.root, &w.direct, "bob").await;
    alice1
        .send_direct("bob", "said before the link")
        .await
        .unwrap();
    let mut alice2 = profile(&w.root, "alice2");
    let code = pending(&mut alice2, &w.mitm.base, "alice").await;
    alice1.approve(&code, &mut |_| {}).await.unwrap();
    alice2
}

/// The history archive travels through the server as a blob: a server that changes it (it
/// cannot make one that opens: the key is only in the sealed bundle) is caught by the digest,
/// and the new device shows no history rather than one the server made; its link stands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_changing_the_history_archive_is_caught() {
    let w = world().await;
    let mut alice2 = approved_after_a_message(&w).await;
    let changed = Arc::new(Mutex::new(0));
    let counter = changed.clone();
    w.mitm.on_response(move |request, response| {
        if request.method == "GET"
            && request.path.starts_with("/v1/blobs/")
            && response.status < 300
        {
            for b in response.body.iter_mut().step_by(97) {
                *b ^= 1;
            }
            *counter.lock().unwrap() += 1;
        }
        Verdict::Forward
    });
    assert!(alice2.check_link().await.unwrap());
    assert!(alice2.has_pending_history().unwrap());
    let imported = alice2.import_history(&mut |_| {}).await.unwrap();
    assert!(*changed.lock().unwrap() > 0, "the blob was never fetched");
    assert_eq!(imported, None);
    assert!(!alice2.has_pending_history().unwrap());
    let notices = alice2.take_notices();
    assert!(
        notices.iter().any(|n| n.contains("could not be fetched")),
        "{notices:?}"
    );
    assert!(alice2.history(None, 100).unwrap().is_empty());
    assert!(!alice2.is_pending().unwrap());
}

/// Without the server's meddling, the same link brings the history across.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_archive_arrives_untouched() {
    let w = world().await;
    let mut alice2 = approved_after_a_message(&w).await;
    assert!(alice2.check_link().await.unwrap());
    let imported = alice2.import_history(&mut |_| {}).await.unwrap().unwrap();
    assert_eq!(imported.messages, 1);
    let history = alice2.history(None, 100).unwrap();
    assert_eq!(
        history[0].text.as_deref(),
        Some("said before the link"),
        "{history:?}"
    );
    // Importing twice changes nothing.
    assert_eq!(alice2.import_history(&mut |_| {}).await.unwrap(), None);
    assert_eq!(alice2.history(None, 100).unwrap().len(), 1);
}
