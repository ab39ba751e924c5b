//! A malicious server against the key-transparency checks of real clients: it serves a peer's
//! keys its directory does not hold, strips the proof, serves a stale device list, or rolls
//! the directory back. Real `nightjar_client::Client`s, a real in-process server, and the
//! testkit's proxy as the server's lying front.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{account, options, start};
use std::path::Path;

use ed25519_dalek::{Signer as _, SigningKey};
use nightjar_api::B64;
use nightjar_client::{Client, LoginOutcome, Password};
use nightjar_core::identity::{AccountIdentity, DeviceList};
use nightjar_core::transparency::SignedRoot;
use nightjar_server::{RunningServer, ServerConfig};
use nightjar_testkit::{Mitm, Verdict};
use serde_json::json;

async fn server(data: &Path) -> (RunningServer, String) {
    let config = ServerConfig {
        kt_interval: std::time::Duration::from_millis(100),
        ..ServerConfig::new(data, "127.0.0.1:0".parse().unwrap())
    };
    start(config).await
}

/// A device list for `username` under an identity key the server made up.
fn forged_list(username: &str, version: u64) -> (String, String) {
    let fake = AccountIdentity::generate().unwrap();
    let list = fake
        .sign(&DeviceList {
            username: username.as_bytes().to_vec(),
            identity_key: fake.public(),
            version,
            devices: vec![],
        })
        .unwrap();
    (
        B64::encode(fake.public().as_bytes()),
        B64::encode(&list.encode()),
    )
}

/// The directory's root signing key, as the operator holds it (the server's key file).
fn operator_root_key(data: &Path) -> SigningKey {
    let text = std::fs::read_to_string(data.join("directory.key")).unwrap();
    let bytes = B64::decode(text.trim()).unwrap();
    SigningKey::from_bytes(&bytes[32..64].try_into().unwrap())
}

fn alarms(c: &mut Client) -> Vec<String> {
    c.take_notices()
        .into_iter()
        .filter(|n| n.starts_with("KEY TRANSPARENCY ALARM"))
        .collect()
}

struct World {
    _tmp: tempfile::TempDir,
    _server: RunningServer,
    mitm: Mitm,
    alice: Client,
    /// bob reaches the server through the proxy.
    bob: Client,
}

async fn world() -> World {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tmp = tempfile::tempdir().unwrap();
    let (server, url) = server(&tmp.path().join("server")).await;
    let mitm = Mitm::start(&url).await;
    let alice = account(tmp.path(), &url, "alice").await;
    let bob = account(tmp.path(), &mitm.base, "bob").await;
    World {
        _tmp: tmp,
        _server: server,
        mitm,
        alice,
        bob,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_the_directory_does_not_hold_is_refused_at_first_contact() {
    let mut w = world().await;
    // bob has never seen alice: without transparency he would pin whatever he is shown.
    let (key, list) = forged_list("alice", 1);
    w.mitm.on_response(move |request, response| {
        if request.path == "/v1/accounts/alice"
            && let Some(mut body) = response.json()
        {
            body["identity_key"] = json!(key.clone());
            body["device_list"] = json!(list.clone());
            response.set_json(&body);
        }
        Verdict::Forward
    });
    let refused = w.bob.send_direct("alice", "for alice only").await;
    let refused = format!("{refused:?}");
    assert!(
        refused.contains(
            "an identity key for alice that its key-transparency directory does not hold"
        ),
        "{refused}"
    );
    // Nothing was encrypted to the server's key, and the real alice is reachable once the
    // server stops lying.
    w.mitm.clear();
    w.bob.send_direct("alice", "hello alice").await.unwrap();
    w.alice.accept("bob").await.unwrap();
    let report = w.alice.sync().await.unwrap();
    let texts: Vec<_> = report
        .messages
        .iter()
        .filter_map(|m| m.text.clone())
        .collect();
    assert_eq!(texts, ["hello alice"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_without_a_proof_is_not_accepted() {
    let mut w = world().await;
    w.mitm.on_response(|request, response| {
        if request.path == "/v1/accounts/alice"
            && let Some(mut body) = response.json()
        {
            body.as_object_mut().unwrap().remove("transparency");
            response.set_json(&body);
        }
        Verdict::Forward
    });
    let refused = format!("{:?}", w.bob.send_direct("alice", "hi").await);
    assert!(refused.contains("gave no directory proof"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_the_directory_does_not_prove_yet_is_asked_for_again_and_accepted_once_proven() {
    // An account that changed a moment ago is not in a published epoch yet: the first answers
    // come without a proof. The conversation waits for one instead of failing.
    let w = world().await;
    let World {
        mitm,
        mut alice,
        mut bob,
        ..
    } = w;
    let stripped = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = stripped.clone();
    mitm.on_response(move |request, response| {
        if request.path == "/v1/accounts/alice"
            && count.load(std::sync::atomic::Ordering::SeqCst) < 2
            && let Some(mut body) = response.json()
        {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            body.as_object_mut().unwrap().remove("transparency");
            response.set_json(&body);
        }
        Verdict::Forward
    });
    bob.send_direct("alice", "proven at last").await.unwrap();
    assert_eq!(stripped.load(std::sync::atomic::Ordering::SeqCst), 2);
    alice.accept("bob").await.unwrap();
    let report = alice.sync().await.unwrap();
    let texts: Vec<_> = report
        .messages
        .iter()
        .filter_map(|m| m.text.clone())
        .collect();
    assert_eq!(texts, ["proven at last"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_that_signs_with_another_key_is_refused() {
    let mut w = world().await;
    // bob pins the directory at first contact (his own account answer during sync, or a
    // peer's): make one honest contact first.
    w.bob.safety_number("alice").await.unwrap();
    let other = B64::encode(&[7u8; 32]);
    w.mitm.on_response(move |request, response| {
        if request.path.starts_with("/v1/accounts/")
            && let Some(mut body) = response.json()
        {
            body["transparency"]["keys"]["root_key"] = json!(other.clone());
            response.set_json(&body);
        }
        Verdict::Forward
    });
    let refused = format!("{:?}", w.bob.send_direct("alice", "hi").await);
    assert!(refused.contains("signs with another key"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_older_root_is_refused_as_a_rollback() {
    let mut w = world().await;
    // bob looks alice up and keeps the answer, proof included.
    let saved = std::sync::Arc::new(std::sync::Mutex::new(None));
    let keep = saved.clone();
    w.mitm.on_response(move |request, response| {
        if request.path == "/v1/accounts/alice" {
            *keep.lock().unwrap() = response.json();
        }
        Verdict::Forward
    });
    w.bob.safety_number("alice").await.unwrap();
    let old = saved.lock().unwrap().clone().unwrap();
    // carol registers: a newer epoch, which bob verifies when he looks her up.
    let _carol = account(w._tmp.path(), w.mitm.upstream(), "carol").await;
    w.bob.safety_number("carol").await.unwrap();
    // Now the server answers for alice from the older epoch (a restored backup, or a fork
    // where carol does not exist yet).
    w.mitm.on_response(move |request, response| {
        if request.path == "/v1/accounts/alice" {
            response.set_json(&old);
        }
        Verdict::Forward
    });
    let refused = format!("{:?}", w.bob.send_direct("alice", "hi").await);
    assert!(refused.contains("went back from epoch"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_the_operator_puts_in_the_directory_alarms_the_account_and_shows_to_peers() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("server");
    let (_server, url) = server(&data).await;
    let mut alice = account(tmp.path(), &url, "alice").await;
    let mut bob = account(tmp.path(), &url, "bob").await;
    // The operator rewrites alice's account in its own database with a key of its own; its
    // directory publishes that as alice's entry (that is what it takes for peers to accept it).
    let (key, list) = forged_list("alice", 1);
    {
        let db = rusqlite::Connection::open(data.join("nightjar.db")).unwrap();
        db.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
        db.execute(
            "UPDATE accounts SET identity_key = ?1, device_list = ?2, kt_published_version = 0 \
             WHERE username = 'alice'",
            (B64::decode(&key).unwrap(), B64::decode(&list).unwrap()),
        )
        .unwrap();
    }
    // bob, who never saw alice, now meets a proven key: it is in the directory, so it is
    // public, and alice's own device finds it there at its next sync.
    bob.safety_number("alice").await.unwrap();
    alice.safety_number("bob").await.unwrap();
    alice.sync().await.unwrap();
    let notices = alice.take_notices();
    assert!(
        notices
            .iter()
            .any(|n| n.starts_with("KEY TRANSPARENCY ALARM")
                && n.contains("another identity key for your account alice")),
        "{notices:?}"
    );
    // Once: the next check does not repeat it.
    alice.sync().await.unwrap();
    assert!(
        !alice
            .take_notices()
            .iter()
            .any(|n| n.starts_with("KEY TRANSPARENCY ALARM"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_about_another_account_is_refused() {
    let mut w = world().await;
    let _carol = account(w._tmp.path(), w.mitm.upstream(), "carol").await;
    // Asked for alice, the server answers with carol's real account and proof.
    w.mitm.on_request(|request| {
        if request.path == "/v1/accounts/alice" {
            request.path = "/v1/accounts/carol".into();
        }
        Verdict::Forward
    });
    let refused = format!("{:?}", w.bob.send_direct("alice", "hi").await);
    assert!(
        refused.contains("answered for carol when asked for alice"),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_device_list_after_a_revocation_is_caught_by_the_next_message() {
    let mut w = world().await;
    // alice links a second device, then bob meets her: he holds her list with both devices.
    let mut alice2 = Client::open(&w._tmp.path().join("alice2"), options()).unwrap();
    let code = match alice2
        .login(w.mitm.upstream(), "alice", &Password::new("pw".into()))
        .await
        .unwrap()
    {
        LoginOutcome::Pending { code, device_id } => {
            w.alice.approve(&code, &mut |_| {}).await.unwrap();
            assert!(alice2.check_link().await.unwrap());
            device_id
        }
        other => panic!("{other:?}"),
    };
    w.bob.send_direct("alice", "hello alice").await.unwrap();
    w.alice.accept("bob").await.unwrap();
    w.alice.sync().await.unwrap();
    let stale = w
        .mitm
        .recorded()
        .into_iter()
        .rev()
        .find(|e| e.request.path == "/v1/accounts/alice")
        .and_then(|e| e.response.json())
        .unwrap();
    assert_eq!(w.bob.device_list_version("alice").unwrap(), Some(2));

    // alice revokes her second device (list version 3). The server keeps showing bob the
    // list from before, with the proof it had then: the revoked device stays reachable.
    w.alice.remove_device(&code).await.unwrap();
    w.mitm.on_response(move |request, response| {
        if request.path == "/v1/accounts/alice" {
            response.set_json(&stale);
        }
        Verdict::Forward
    });
    w.alice
        .send_direct("bob", "after the revocation")
        .await
        .unwrap();
    let report = w.bob.sync().await.unwrap();
    assert!(
        report
            .messages
            .iter()
            .any(|m| m.text.as_deref() == Some("after the revocation"))
    );
    // Her message says version 3 inside the encryption; bob asks for it and gets version 2.
    let raised = alarms(&mut w.bob);
    assert!(
        raised.iter().any(|n| n.contains(
            "alice's messages say their device list is at version 3, but the server proves \
             only version 2"
        )),
        "{raised:?}"
    );
    // With the server honest again, bob catches up and nothing more is raised.
    w.mitm.clear();
    w.alice.send_direct("bob", "again").await.unwrap();
    w.bob.sync().await.unwrap();
    assert!(alarms(&mut w.bob).is_empty());
    assert_eq!(w.bob.device_list_version("alice").unwrap(), Some(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_that_shows_members_different_roots_is_caught_as_a_fork() {
    let mut w = world().await;
    let operator = operator_root_key(&w._tmp.path().join("server"));
    w.bob.send_direct("alice", "hello alice").await.unwrap();
    w.alice.accept("bob").await.unwrap();
    w.alice.sync().await.unwrap();
    // bob's own-history check would also show him the newest root: keep him on his old one.
    w.mitm.on_response(|request, response| {
        if request.path == "/v1/kt/history" {
            *response = nightjar_testkit::Response::json_answer(404, &json!({}));
        }
        Verdict::Forward
    });
    // A new account makes a new epoch; alice verifies it (she looks carol up).
    let _carol = account(w._tmp.path(), w.mitm.upstream(), "carol").await;
    w.alice.safety_number("carol").await.unwrap();
    let view = w.alice.verified_root().unwrap().unwrap();
    let bob_view = w.bob.verified_root().unwrap().unwrap();
    assert!(view.epoch > bob_view.epoch, "{view:?} {bob_view:?}");

    // Honest: bob fetches the root alice states, finds the same, and raises nothing.
    w.alice.send_direct("bob", "first").await.unwrap();
    w.bob.sync().await.unwrap();
    assert!(alarms(&mut w.bob).is_empty());
    assert_eq!(w.bob.verified_root().unwrap().unwrap().epoch, view.epoch);

    // Forked: for the next epoch alice verifies, the operator shows bob another root, signed
    // with the directory's real key.
    let _dave = account(w._tmp.path(), w.mitm.upstream(), "dave").await;
    w.alice.safety_number("dave").await.unwrap();
    let view = w.alice.verified_root().unwrap().unwrap();
    let forked_epoch = view.epoch;
    let forged_root = [0x66u8; 32];
    let signature = operator
        .sign(&SignedRoot::message(forked_epoch, &forged_root))
        .to_bytes();
    w.mitm.on_response(move |request, response| {
        if request.path == "/v1/kt/history" {
            *response = nightjar_testkit::Response::json_answer(404, &json!({}));
        } else if request.path == format!("/v1/kt/epochs/{forked_epoch}")
            && let Some(mut body) = response.json()
        {
            body["root"]["root"] = json!(B64::encode(&forged_root));
            body["root"]["signature"] = json!(B64::encode(&signature));
            response.set_json(&body);
        }
        Verdict::Forward
    });
    w.alice.send_direct("bob", "second").await.unwrap();
    w.bob.sync().await.unwrap();
    let raised = alarms(&mut w.bob);
    assert!(
        raised.iter().any(|n| n.contains(&format!(
            "a different root for epoch {forked_epoch} than the one alice's device verified"
        ))),
        "{raised:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_that_rewrote_an_epoch_fails_the_members_append_only_check() {
    let mut w = world().await;
    let operator = operator_root_key(&w._tmp.path().join("server"));
    // bob and frank each verify a root (alice's lookup), then newer ones appear.
    let mut frank = account(w._tmp.path(), &w.mitm.base, "frank").await;
    w.bob.safety_number("alice").await.unwrap();
    frank.safety_number("alice").await.unwrap();
    let first = w.bob.verified_root().unwrap().unwrap();
    for name in ["carol", "dave"] {
        let _peer = account(w._tmp.path(), w.mitm.upstream(), name).await;
        w.bob.safety_number(name).await.unwrap();
    }
    let newest = w.bob.verified_root().unwrap().unwrap();
    assert!(newest.epoch >= first.epoch + 2, "{first:?} {newest:?}");

    // Honest: bob's sync walks the epochs in between, each proven append-only.
    let pages = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = pages.clone();
    w.mitm.on_response(move |request, _| {
        if request.path.starts_with("/v1/kt/epochs?") {
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        Verdict::Forward
    });
    w.bob.sync().await.unwrap();
    assert!(alarms(&mut w.bob).is_empty());
    assert!(pages.load(std::sync::atomic::Ordering::SeqCst) >= 1);

    // frank meets a directory whose history was rewritten after the root he saw first: the
    // operator replaced the next epoch's root (to drop or change an entry) and re-signed it
    // with the real key, so every signature checks out.
    let rewritten = std::sync::Arc::new(std::sync::Mutex::new(None));
    let noted = rewritten.clone();
    w.mitm.on_response(move |request, response| {
        if request.path.starts_with("/v1/kt/epochs?")
            && let Some(mut body) = response.json()
            && let Some(e) = body["epochs"].get_mut(0)
        {
            let epoch = e["root"]["epoch"].as_u64().unwrap();
            let forged_root = [0x5au8; 32];
            let signature = operator.sign(&SignedRoot::message(epoch, &forged_root));
            e["root"]["root"] = json!(B64::encode(&forged_root));
            e["root"]["signature"] = json!(B64::encode(&signature.to_bytes()));
            *noted.lock().unwrap() = Some(epoch);
            response.set_json(&body);
        }
        Verdict::Forward
    });
    frank.safety_number("dave").await.unwrap();
    frank.sync().await.unwrap();
    let raised = alarms(&mut frank);
    let epoch = rewritten
        .lock()
        .unwrap()
        .expect("frank checked the directory's epochs");
    assert!(
        raised
            .iter()
            .any(|n| n.contains(&format!("to {epoch} fails its append-only check"))),
        "{raised:?}"
    );
}
