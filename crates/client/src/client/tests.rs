//! SDK tests against the real server library, in process: commit races (both orders of
//! "rejected" and "winner arrived"), re-encryption of a message whose epoch moved on, and
//! duplicate suppression when a message reaches the server twice.

use std::net::SocketAddr;
use std::path::Path;

use nightjar_api::B64;
use nightjar_core::ConversationId;
use nightjar_server::{RunningServer, ServerConfig};

use super::conversations::enqueue_commit;
use super::*;
use crate::Password;
use crate::store::OutboxItem;

async fn server(data: &Path, listen: SocketAddr) -> RunningServer {
    nightjar_server::start(ServerConfig::new(data, listen))
        .await
        .unwrap()
}

fn options() -> ClientOptions {
    ClientOptions {
        try_keyring: false,
        engine: EngineConfig {
            suite: nightjar_core::Suite::Classic,
            ..EngineConfig::default()
        },
    }
}

async fn account(root: &Path, url: &str, name: &str) -> Client {
    let mut c = Client::open(&root.join(name), options()).unwrap();
    c.register(url, name, &Password::new("pw".into()))
        .await
        .unwrap();
    c
}

fn texts(report: &SyncReport) -> Vec<String> {
    report
        .messages
        .iter()
        .filter_map(|m| m.text.clone())
        .collect()
}

/// Makes a self-update commit and queues it without posting it.
fn queue_self_update(c: &mut Client, group: &str) {
    let conversation = ConversationId::parse(group).unwrap();
    c.atomic(|engine, store| {
        let bundle = engine.self_update(conversation)?;
        enqueue_commit(engine, store, &bundle)
    })
    .unwrap();
}

struct World {
    _tmp: tempfile::TempDir,
    server: Option<RunningServer>,
    addr: SocketAddr,
    data: std::path::PathBuf,
    alice: Client,
    bob: Client,
    carol: Client,
    group: String,
}

async fn world() -> World {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("server");
    let running = server(&data, "127.0.0.1:0".parse().unwrap()).await;
    let addr = running.local_addr();
    let url = format!("http://{addr}");
    let mut alice = account(tmp.path(), &url, "alice").await;
    let mut bob = account(tmp.path(), &url, "bob").await;
    let mut carol = account(tmp.path(), &url, "carol").await;
    // Without this the group would be a message request for bob and carol.
    bob.accept("alice").await.unwrap();
    carol.accept("alice").await.unwrap();
    let group = alice
        .create_group("g", &["bob".into(), "carol".into()])
        .await
        .unwrap();
    bob.sync().await.unwrap();
    carol.sync().await.unwrap();
    World {
        _tmp: tmp,
        server: Some(running),
        addr,
        data,
        alice,
        bob,
        carol,
        group,
    }
}

impl Client {
    /// Posts what the outbox holds now, without reading the inbox first.
    async fn flush(&mut self) -> Result<()> {
        self.machine()?.online(super::now_ms());
        self.drive().await
    }

    /// Reads and processes the inbox (and posts what that lets go).
    async fn pull(&mut self) -> Result<()> {
        self.machine()?.sync(super::now_ms());
        self.drive().await
    }
}

#[tokio::test]
async fn losing_commit_is_retried_after_the_winner() {
    let mut w = world().await;
    queue_self_update(&mut w.bob, &w.group);
    queue_self_update(&mut w.carol, &w.group);
    // bob's commit wins the epoch.
    w.bob.flush().await.unwrap();
    // carol posts hers: refused with epoch_conflict, turned into a retry, synced, retried.
    w.carol.pump().await.unwrap();
    assert_eq!(w.carol.store.outbox_len().unwrap(), 0);
    let epoch = |c: &mut Client, g: &str| {
        c.engine()
            .unwrap()
            .conversation(ConversationId::parse(g).unwrap())
            .unwrap()
            .epoch
    };
    w.carol.send_group("g", "after the race").await.unwrap();
    assert_eq!(texts(&w.alice.sync().await.unwrap()), ["after the race"]);
    assert_eq!(texts(&w.bob.sync().await.unwrap()), ["after the race"]);
    let e = epoch(&mut w.alice, &w.group);
    assert_eq!(e, epoch(&mut w.bob, &w.group));
    assert_eq!(e, epoch(&mut w.carol, &w.group));
}

#[tokio::test]
async fn winner_processed_before_the_refusal_also_recovers() {
    let mut w = world().await;
    queue_self_update(&mut w.bob, &w.group);
    queue_self_update(&mut w.carol, &w.group);
    w.bob.flush().await.unwrap();
    // carol receives bob's commit first: hers is superseded, queued for retry and retried.
    w.carol.pull().await.unwrap();
    w.carol.pump().await.unwrap();
    assert_eq!(w.carol.store.outbox_len().unwrap(), 0);
    w.bob.send_group("g", "still fine").await.unwrap();
    assert_eq!(texts(&w.carol.sync().await.unwrap()), ["still fine"]);
    assert_eq!(texts(&w.alice.sync().await.unwrap()), ["still fine"]);
}

#[tokio::test]
async fn message_whose_epoch_moved_on_is_encrypted_again_and_shown_once() {
    let mut w = world().await;
    // carol has sent in the group before (her sealed-sender key registration is done).
    w.carol.send_group("g", "before").await.unwrap();
    assert_eq!(texts(&w.alice.sync().await.unwrap()), ["before"]);
    assert_eq!(texts(&w.bob.sync().await.unwrap()), ["before"]);
    // carol queues a message while the server is down: encrypted, post fails, kept.
    w.server.take().unwrap().shutdown().await.unwrap();
    let outcome = w.carol.send_group("g", "queued offline").await.unwrap();
    assert!(!outcome.delivered);
    // A later attempt encrypts it (and the leaf refresh a joiner's first send brings) but
    // cannot post it.
    assert!(w.carol.flush().await.unwrap_err().is_network());
    let old: Vec<_> = w
        .carol
        .store
        .outbox()
        .unwrap()
        .into_iter()
        .filter(|r| matches!(r.item, OutboxItem::Message { .. }))
        .collect();
    assert!(matches!(
        &old[0].item,
        OutboxItem::Message {
            ciphertext: Some(_),
            ..
        }
    ));
    // The server comes back; bob commits meanwhile and carol processes it before flushing.
    w.server = Some(server(&w.data, w.addr).await);
    w.bob.sync().await.unwrap();
    queue_self_update(&mut w.bob, &w.group);
    w.bob.flush().await.unwrap();
    w.carol.pull().await.unwrap();
    w.carol.flush().await.unwrap();
    assert_eq!(w.carol.store.outbox_len().unwrap(), 0);
    assert_eq!(texts(&w.alice.sync().await.unwrap()), ["queued offline"]);
    assert_eq!(texts(&w.bob.sync().await.unwrap()), ["queued offline"]);

    // The same message reaching the server twice (a lost acknowledgement followed by a
    // re-encryption) is shown once.
    let mut again = old[0].item.clone();
    if let OutboxItem::Message {
        ciphertext, epoch, ..
    } = &mut again
    {
        *ciphertext = Some(B64(vec![0]));
        *epoch = Some(0);
    }
    w.carol
        .store
        .push_outbox(&old[0].conversation, &again, "another-key", now_ms())
        .unwrap();
    w.carol.pump().await.unwrap();
    assert_eq!(w.carol.store.outbox_len().unwrap(), 0);
    assert!(texts(&w.alice.sync().await.unwrap()).is_empty());
}

#[tokio::test]
async fn identity_change_is_held_until_trusted() {
    let mut w = world().await;
    // A directory answer with another identity key for bob is refused and remembered.
    let (_, forged) = Engine::create_account(
        std::sync::Arc::new(nightjar_core::storage::MemoryStore::new()),
        "bob",
        options().engine,
        now_ms(),
    )
    .unwrap();
    let err = w.alice.accept_list("bob", &forged).unwrap_err();
    assert!(
        matches!(err, Error::IdentityChanged(ref u) if u == "bob"),
        "{err}"
    );
    assert!(
        w.alice
            .take_notices()
            .iter()
            .any(|n| n.contains("identity key of bob changed"))
    );
    assert_eq!(w.alice.status().await.unwrap().changed_identities, ["bob"]);
    // Nothing new is encrypted to bob until the user decides.
    let refused = w.alice.send_direct("bob", "hello?").await.unwrap_err();
    assert!(matches!(refused, Error::IdentityChanged(_)), "{refused}");
    let (current, changed) = w.alice.safety_number("bob").await.unwrap();
    let changed = changed.expect("the new key's safety number is shown");
    assert_ne!(current.digits(), changed.digits());
    w.alice.trust("bob").await.unwrap();
    assert!(
        w.alice
            .status()
            .await
            .unwrap()
            .changed_identities
            .is_empty()
    );
    assert_eq!(
        w.alice.safety_number("bob").await.unwrap().0.digits(),
        changed.digits()
    );
}

#[tokio::test]
async fn key_packages_are_replenished_when_low() {
    let mut w = world().await;
    let stock = |c: &Client| {
        let api = c.api().unwrap().clone();
        async move { api.key_package_count().await.unwrap() }
    };
    let before = stock(&w.bob).await.available;
    // bob's own claims drain his stock: another account's claims past a few per hour get only
    // the last-resort package (issue 8, finding 10).
    for _ in 0..before {
        w.bob
            .api()
            .unwrap()
            .claim_key_packages("bob")
            .await
            .unwrap();
    }
    let low = stock(&w.bob).await;
    assert!(low.replenish, "{low:?}");
    w.bob.sync().await.unwrap();
    let after = stock(&w.bob).await;
    assert!(!after.replenish && after.last_resort, "{after:?}");
    assert!(after.available >= KEY_PACKAGE_BATCH as u32, "{after:?}");
}
