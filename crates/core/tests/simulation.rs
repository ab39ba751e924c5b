//! Deterministic multi-party simulation: alice (two devices), bob, carol and others talk through
//! an in-memory delivery service that orders commits (first commit per epoch wins), with no
//! sockets and no clock.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use nightjar_core::content::{Content, GroupMetadata, Message, MessageId};
use nightjar_core::handshake::PublicState;
use nightjar_core::identity::{DeviceCredential, IdentityError, SignedDeviceList};
use nightjar_core::pickle::{self, PickleKey};
use nightjar_core::provisioning::LinkOffer;
use nightjar_core::storage::{KvStore, MemoryStore};
use nightjar_core::{
    CommitBundle, ConversationError, ConversationId, ConversationKind, Engine, EngineConfig, Error,
    Incoming, Intent, Suite, UpdatePolicy,
};

type Store = Arc<MemoryStore>;

/// An in-memory delivery service: per-device queues, one accepted commit per epoch.
#[derive(Default)]
struct Ds {
    epochs: HashMap<ConversationId, u64>,
    members: HashMap<ConversationId, Vec<DeviceCredential>>,
    queues: HashMap<DeviceCredential, VecDeque<Vec<u8>>>,
    lists: HashMap<String, SignedDeviceList>,
    key_packages: HashMap<DeviceCredential, Vec<Vec<u8>>>,
    /// The server's public group state per conversation (handshake::PublicState), which every
    /// commit must pass, and the proposals waiting in its epoch.
    states: HashMap<ConversationId, Vec<u8>>,
    proposals: HashMap<ConversationId, Vec<Vec<u8>>>,
}

impl Ds {
    /// Accepts the first commit for an epoch; returns the current epoch on refusal.
    fn submit(&mut self, from: &DeviceCredential, bundle: &CommitBundle) -> Result<(), u64> {
        let current = self.epochs.get(&bundle.conversation).copied().unwrap_or(0);
        if current != bundle.epoch {
            return Err(current);
        }
        // As the real server: validate with the group's public state, route by the commit.
        let conv = bundle.conversation;
        let mut state = match &bundle.group_info {
            Some(info) => {
                let list = self.lists[&from.username].verify().unwrap();
                let key = list.device(from.device_id).unwrap().signature_key;
                PublicState::from_group_info(conv, info, from, &key).unwrap()
            }
            None => PublicState::decode(
                conv,
                &self.states[&conv],
                self.proposals.get(&conv).map_or(&[][..], Vec::as_slice),
            )
            .unwrap(),
        };
        let facts = state
            .process_commit(conv, &bundle.commit, from)
            .expect("the server validates the commit");
        let added: Vec<DeviceCredential> = facts.added.iter().map(|l| l.device.clone()).collect();
        let mut expected = bundle.welcome_recipients.clone();
        expected.sort();
        let mut added_sorted = added.clone();
        added_sorted.sort();
        assert_eq!(
            added_sorted, expected,
            "Welcome recipients are the added devices"
        );
        self.states.insert(conv, state.encode().unwrap());
        self.proposals.remove(&conv);
        self.epochs.insert(bundle.conversation, current + 1);
        self.fan_out(bundle.conversation, from, &bundle.commit);
        if let Some(w) = &bundle.welcome {
            for r in &bundle.welcome_recipients {
                self.queues
                    .entry(r.clone())
                    .or_default()
                    .push_back(w.clone());
            }
        }
        Ok(())
    }

    /// A standalone proposal: validated by the server and kept for the commit of its epoch.
    fn propose(&mut self, conv: ConversationId, from: &DeviceCredential, bytes: &[u8]) {
        let waiting = self.proposals.get(&conv).cloned().unwrap_or_default();
        let mut state = PublicState::decode(conv, &self.states[&conv], &waiting).unwrap();
        state
            .process_proposal(conv, bytes, from)
            .expect("the server validates the proposal");
        self.proposals.entry(conv).or_default().push(bytes.to_vec());
        self.fan_out(conv, from, bytes);
    }

    fn fan_out(&mut self, conv: ConversationId, from: &DeviceCredential, bytes: &[u8]) {
        for m in self.members.get(&conv).cloned().unwrap_or_default() {
            if &m != from {
                self.queues.entry(m).or_default().push_back(bytes.to_vec());
            }
        }
    }

    fn claim(&mut self, username: &str) -> Vec<Vec<u8>> {
        let list = self.lists[username].verify().unwrap();
        list.devices
            .iter()
            .map(|d| {
                let cred = DeviceCredential {
                    username: username.into(),
                    device_id: d.device_id,
                };
                self.key_packages.get_mut(&cred).unwrap().pop().unwrap()
            })
            .collect()
    }
}

struct Device {
    engine: Engine<Store>,
    store: Store,
}

impl Device {
    fn me(&self) -> DeviceCredential {
        self.engine.device().clone()
    }
}

const NOW: u64 = 1_800_000_000_000;

fn config() -> EngineConfig {
    EngineConfig {
        suite: Suite::Classic,
        update_policy: UpdatePolicy {
            max_received: 1_000,
            max_age_ms: u64::MAX,
        },
        ..EngineConfig::default()
    }
}

fn new_account(ds: &mut Ds, name: &str, cfg: EngineConfig) -> Device {
    let store: Store = Arc::new(MemoryStore::new());
    let (mut engine, list) = Engine::create_account(store.clone(), name, cfg, NOW).unwrap();
    ds.lists.insert(name.into(), list);
    let kps = engine.generate_key_packages(5, false).unwrap();
    ds.key_packages.insert(engine.device().clone(), kps);
    Device { engine, store }
}

fn second_device(ds: &mut Ds, first: &mut Device, cfg: EngineConfig) -> Device {
    let name = first.me().username;
    let store: Store = Arc::new(MemoryStore::new());
    let mut engine = Engine::new_device(store.clone(), &name, cfg).unwrap();
    // The link goes through the server as a public offer and a sealed bundle.
    let offer = engine.link_offer(NOW).unwrap();
    let relayed = LinkOffer::decode(&offer.encode()).unwrap();
    assert!(
        first
            .engine
            .approve_link(&relayed, "WRON-GCOD-E000", None)
            .is_err()
    );
    let (list, sealed) = first
        .engine
        .approve_link(&relayed, &engine.link_code().unwrap().display(), None)
        .unwrap();
    engine.complete_link(&sealed).unwrap();
    assert!(engine.has_account_identity());
    ds.lists.insert(name, list);
    let kps = engine.generate_key_packages(5, false).unwrap();
    ds.key_packages.insert(engine.device().clone(), kps);
    Device { engine, store }
}

/// Every device learns every published device list (as clients do after fetching them).
fn learn_all(ds: &Ds, devices: &mut [&mut Device]) {
    for d in devices.iter_mut() {
        for (name, list) in &ds.lists {
            d.engine.accept_device_list(name, list).unwrap();
        }
    }
}

fn deliver_all(ds: &mut Ds, d: &mut Device) -> Vec<Incoming> {
    let mut out = Vec::new();
    while let Some(bytes) = ds.queues.get_mut(&d.me()).and_then(VecDeque::pop_front) {
        out.push(d.engine.process(NOW, &bytes).unwrap());
    }
    out
}

fn pending(ds: &mut Ds, d: &Device) -> Vec<Vec<u8>> {
    ds.queues
        .get_mut(&d.me())
        .map(|q| q.drain(..).collect())
        .unwrap_or_default()
}

fn commit(ds: &mut Ds, d: &mut Device, bundle: CommitBundle) {
    ds.submit(&d.me(), &bundle).expect("commit accepted");
    d.engine.commit_accepted(NOW, bundle.conversation).unwrap();
    let members = d.engine.conversation(bundle.conversation).unwrap().members;
    ds.members.insert(bundle.conversation, members);
}

fn text(body: &str) -> Message {
    let mut id = [0u8; 16];
    id[..body.len().min(16)].copy_from_slice(&body.as_bytes()[..body.len().min(16)]);
    Message {
        id: MessageId(id),
        sent_at_ms: NOW,
        expires_after_secs: None,
        content: Content::Text { body: body.into() },
    }
}

fn send(ds: &mut Ds, d: &mut Device, conv: ConversationId, body: &str) -> Vec<u8> {
    let out = d.engine.encrypt(NOW, conv, &text(body)).unwrap();
    assert!(out.self_update.is_none());
    ds.fan_out(conv, &d.me(), &out.message);
    out.message
}

fn expect_text(incoming: &Incoming, from: &DeviceCredential, body: &str) {
    match incoming {
        Incoming::Message {
            sender, message, ..
        } => {
            assert_eq!(sender, from);
            assert_eq!(message.content, Content::Text { body: body.into() });
        }
        other => panic!("expected a message, got {other:?}"),
    }
}

fn conversation_error(e: Error) -> ConversationError {
    match e {
        Error::Conversation(c) => c,
        other => panic!("expected a conversation error, got {other:?}"),
    }
}

struct World {
    ds: Ds,
    alice1: Device,
    alice2: Device,
    bob: Device,
    carol: Device,
}

fn world() -> World {
    let mut ds = Ds::default();
    let mut alice1 = new_account(&mut ds, "alice", config());
    let mut alice2 = second_device(&mut ds, &mut alice1, config());
    let mut bob = new_account(&mut ds, "bob", config());
    let mut carol = new_account(&mut ds, "carol", config());
    learn_all(&ds, &mut [&mut alice1, &mut alice2, &mut bob, &mut carol]);
    World {
        ds,
        alice1,
        alice2,
        bob,
        carol,
    }
}

/// alice1 creates a group with every device of alice, bob and carol.
fn group(w: &mut World) -> ConversationId {
    let mut kps = w.ds.claim("bob");
    kps.extend(w.ds.claim("carol"));
    kps.push(
        w.ds.key_packages
            .get_mut(&w.alice2.me())
            .unwrap()
            .pop()
            .unwrap(),
    );
    let meta = GroupMetadata {
        name: "trip".into(),
        avatar: None,
    };
    let (conv, bundle) = w
        .alice1
        .engine
        .create_conversation(
            NOW,
            ConversationKind::Group,
            &["bob", "carol"],
            Some(&meta),
            &kps,
        )
        .unwrap();
    commit(&mut w.ds, &mut w.alice1, bundle);
    for d in [&mut w.alice2, &mut w.bob, &mut w.carol] {
        let got = deliver_all(&mut w.ds, d);
        assert!(matches!(
            got[..],
            [Incoming::Joined {
                kind: ConversationKind::Group,
                ..
            }]
        ));
    }
    conv
}

#[test]
fn direct_conversation_between_all_devices_both_ways() {
    for suite in [Suite::Classic, Suite::XWing] {
        let cfg = EngineConfig { suite, ..config() };
        let mut ds = Ds::default();
        let mut alice1 = new_account(&mut ds, "alice", cfg.clone());
        let mut alice2 = second_device(&mut ds, &mut alice1, cfg.clone());
        let mut bob = new_account(&mut ds, "bob", cfg.clone());
        learn_all(&ds, &mut [&mut alice1, &mut alice2, &mut bob]);

        let mut kps = ds.claim("bob");
        kps.push(
            ds.key_packages
                .get_mut(&alice2.me())
                .unwrap()
                .pop()
                .unwrap(),
        );
        let (conv, bundle) = alice1
            .engine
            .create_conversation(NOW, ConversationKind::Direct, &["bob"], None, &kps)
            .unwrap();
        commit(&mut ds, &mut alice1, bundle);
        for d in [&mut alice2, &mut bob] {
            match &deliver_all(&mut ds, d)[..] {
                [
                    Incoming::Joined {
                        conversation,
                        kind,
                        sender,
                        members,
                    },
                ] => {
                    assert_eq!(*conversation, conv);
                    assert_eq!(*kind, ConversationKind::Direct);
                    assert_eq!(*sender, alice1.me());
                    assert_eq!(members.len(), 3);
                }
                other => panic!("{other:?}"),
            }
        }
        let info = bob.engine.conversation(conv).unwrap();
        assert_eq!(info.suite, suite);
        assert_eq!(info.accounts(), ["alice", "bob"]);

        send(&mut ds, &mut alice1, conv, "hi bob");
        expect_text(&deliver_all(&mut ds, &mut bob)[0], &alice1.me(), "hi bob");
        expect_text(
            &deliver_all(&mut ds, &mut alice2)[0],
            &alice1.me(),
            "hi bob",
        );
        send(&mut ds, &mut bob, conv, "hi alice");
        expect_text(&deliver_all(&mut ds, &mut alice1)[0], &bob.me(), "hi alice");
        expect_text(&deliver_all(&mut ds, &mut alice2)[0], &bob.me(), "hi alice");
        // Call keys agree across all devices.
        let k1 = alice1
            .engine
            .export_secret(conv, "nightjar call", b"c1", 32)
            .unwrap();
        let k2 = bob
            .engine
            .export_secret(conv, "nightjar call", b"c1", 32)
            .unwrap();
        assert_eq!(*k1, *k2);
    }
}

#[test]
fn direct_conversation_refuses_a_third_account() {
    let mut w = world();
    let kps = w.ds.claim("bob");
    let err = w
        .alice1
        .engine
        .create_conversation(NOW, ConversationKind::Direct, &["bob", "carol"], None, &kps)
        .unwrap_err();
    assert!(matches!(
        conversation_error(err),
        ConversationError::Invalid(_)
    ));
    // Leaving out one of alice's own devices is refused too.
    let err = w
        .alice1
        .engine
        .create_conversation(NOW, ConversationKind::Direct, &["bob"], None, &kps)
        .unwrap_err();
    assert!(
        matches!(conversation_error(err), ConversationError::MissingDevices(m) if m.len() == 1)
    );
}

#[test]
fn concurrent_commits_one_wins_loser_retries() {
    let mut w = world();
    let conv = group(&mut w);
    let epoch = w.bob.engine.conversation(conv).unwrap().epoch;

    let bob_commit = w.bob.engine.self_update(conv).unwrap();
    let carol_commit = w.carol.engine.self_update(conv).unwrap();
    assert_eq!(bob_commit.epoch, epoch);
    assert_eq!(carol_commit.epoch, epoch);

    commit(&mut w.ds, &mut w.bob, bob_commit);
    // Carol's commit for the same epoch is refused with the current epoch.
    assert_eq!(w.ds.submit(&w.carol.me(), &carol_commit), Err(epoch + 1));
    // While it is in flight, she cannot send.
    let err = w.carol.engine.encrypt(NOW, conv, &text("x")).unwrap_err();
    assert_eq!(conversation_error(err), ConversationError::CommitInFlight);

    // The winning commit arrives: carol applies it and learns hers was superseded.
    match &deliver_all(&mut w.ds, &mut w.carol)[..] {
        [
            Incoming::Commit {
                superseded: Some(Intent::SelfUpdate),
                sender,
                ..
            },
        ] => {
            assert_eq!(*sender, w.bob.me())
        }
        other => panic!("{other:?}"),
    }
    let intent = w
        .carol
        .engine
        .commit_rejected(conv)
        .unwrap()
        .expect("intent to retry");
    let retry = w
        .carol
        .engine
        .retry(conv, intent)
        .unwrap()
        .expect("a new commit");
    assert_eq!(retry.epoch, epoch + 1);
    commit(&mut w.ds, &mut w.carol, retry);

    for d in [&mut w.alice1, &mut w.alice2, &mut w.bob] {
        let got = deliver_all(&mut w.ds, d);
        assert!(
            got.iter().all(|i| matches!(i, Incoming::Commit { .. })),
            "{got:?}"
        );
    }
    for d in [&mut w.alice1, &mut w.alice2, &mut w.bob, &mut w.carol] {
        assert_eq!(d.engine.conversation(conv).unwrap().epoch, epoch + 2);
    }
    send(&mut w.ds, &mut w.carol, conv, "all good");
    for d in [&mut w.alice1, &mut w.alice2, &mut w.bob] {
        expect_text(&deliver_all(&mut w.ds, d)[0], &w.carol.me(), "all good");
    }
}

#[test]
fn rejection_before_winning_commit_also_recovers() {
    let mut w = world();
    let conv = group(&mut w);
    let bob_commit = w.bob.engine.add_devices(conv, &[]).err();
    assert!(bob_commit.is_some(), "empty add is refused");
    let bob_commit = w.bob.engine.self_update(conv).unwrap();
    let meta = GroupMetadata {
        name: "renamed".into(),
        avatar: None,
    };
    let carol_commit = w.carol.engine.set_metadata(conv, &meta).unwrap();
    commit(&mut w.ds, &mut w.bob, bob_commit);
    assert!(w.ds.submit(&w.carol.me(), &carol_commit).is_err());
    // Rejection first: the pending commit is discarded and the intent returned.
    let intent = w.carol.engine.commit_rejected(conv).unwrap().unwrap();
    assert!(matches!(intent, Intent::SetMetadata { .. }));
    deliver_all(&mut w.ds, &mut w.carol);
    let retry = w.carol.engine.retry(conv, intent).unwrap().unwrap();
    commit(&mut w.ds, &mut w.carol, retry);
    for d in [&mut w.alice1, &mut w.bob] {
        let got = deliver_all(&mut w.ds, d);
        assert!(matches!(
            got.last(),
            Some(Incoming::Commit {
                metadata_changed: true,
                ..
            })
        ));
        assert_eq!(
            d.engine.conversation(conv).unwrap().metadata.unwrap().name,
            "renamed"
        );
    }
}

#[test]
fn removed_member_cannot_read_later_messages() {
    let mut w = world();
    let conv = group(&mut w);
    let bundle = w.alice1.engine.remove_member(conv, "carol").unwrap();
    commit(&mut w.ds, &mut w.alice1, bundle.clone());
    match &deliver_all(&mut w.ds, &mut w.carol)[..] {
        [Incoming::Removed { by, .. }] => assert_eq!(*by, w.alice1.me()),
        other => panic!("{other:?}"),
    }
    assert!(!w.carol.engine.conversation(conv).unwrap().active);
    deliver_all(&mut w.ds, &mut w.bob);
    let secret = send(&mut w.ds, &mut w.alice1, conv, "carol must not see this");
    expect_text(
        &deliver_all(&mut w.ds, &mut w.bob)[0],
        &w.alice1.me(),
        "carol must not see this",
    );
    // Even if the server hands carol the ciphertext, she cannot read it.
    let err = w.carol.engine.process(NOW, &secret).unwrap_err();
    assert!(matches!(
        conversation_error(err),
        ConversationError::NotAMember
            | ConversationError::WrongEpoch
            | ConversationError::Undecryptable
    ));
    let err = w
        .carol
        .engine
        .encrypt(NOW, conv, &text("still here?"))
        .unwrap_err();
    assert_eq!(conversation_error(err), ConversationError::NotAMember);
}

#[test]
fn new_member_cannot_read_earlier_messages() {
    let mut w = world();
    let conv = group(&mut w);
    let before = send(&mut w.ds, &mut w.bob, conv, "before dave");
    let mut dave = new_account(&mut w.ds, "dave", config());
    learn_all(&w.ds, &mut [&mut dave, &mut w.bob]);
    let kps = w.ds.claim("dave");
    let bundle = w.bob.engine.add_member(conv, "dave", &kps).unwrap();
    commit(&mut w.ds, &mut w.bob, bundle);
    let got = deliver_all(&mut w.ds, &mut dave);
    assert!(matches!(got[..], [Incoming::Joined { .. }]));
    // Whatever the reason given, dave has no key for it.
    let err = dave.engine.process(NOW, &before).unwrap_err();
    assert!(matches!(
        conversation_error(err),
        ConversationError::WrongEpoch
            | ConversationError::Undecryptable
            | ConversationError::Replayed
    ));
    send(&mut w.ds, &mut w.bob, conv, "after dave");
    expect_text(
        &deliver_all(&mut w.ds, &mut dave)[0],
        &w.bob.me(),
        "after dave",
    );
}

#[test]
fn replayed_and_tampered_messages_are_rejected_without_state_change() {
    let mut w = world();
    let conv = group(&mut w);
    let m1 = send(&mut w.ds, &mut w.alice1, conv, "one");
    let m2 = send(&mut w.ds, &mut w.alice1, conv, "two");
    pending(&mut w.ds, &w.bob);

    // Tampering anywhere is refused, and refusing consumes nothing.
    for i in (0..m1.len()).step_by(7) {
        let mut bad = m1.clone();
        bad[i] ^= 0x40;
        assert!(w.bob.engine.process(NOW, &bad).is_err(), "flip at {i}");
    }
    assert!(w.bob.engine.process(NOW, &m1[..m1.len() / 2]).is_err());
    expect_text(
        &w.bob.engine.process(NOW, &m1).unwrap(),
        &w.alice1.me(),
        "one",
    );
    // Replay: the key is gone.
    let err = w.bob.engine.process(NOW, &m1).unwrap_err();
    assert_eq!(conversation_error(err), ConversationError::Replayed);
    expect_text(
        &w.bob.engine.process(NOW, &m2).unwrap(),
        &w.alice1.me(),
        "two",
    );

    // A replayed commit is refused as well.
    let update = w.carol.engine.self_update(conv).unwrap();
    commit(&mut w.ds, &mut w.carol, update.clone());
    deliver_all(&mut w.ds, &mut w.bob);
    assert!(w.bob.engine.process(NOW, &update.commit).is_err());
    // Garbage is malformed.
    let err = w.bob.engine.process(NOW, b"\x00\x01garbage").unwrap_err();
    assert_eq!(conversation_error(err), ConversationError::Malformed);
}

#[test]
fn out_of_order_and_previous_epoch_messages_decrypt() {
    let mut w = world();
    let conv = group(&mut w);
    let m: Vec<Vec<u8>> = (0..4)
        .map(|i| send(&mut w.ds, &mut w.bob, conv, &format!("m{i}")))
        .collect();
    pending(&mut w.ds, &w.alice1);
    for i in [3usize, 0, 2] {
        expect_text(
            &w.alice1.engine.process(NOW, &m[i]).unwrap(),
            &w.bob.me(),
            &format!("m{i}"),
        );
    }
    // A commit moves the group on; m1, from the previous epoch, still decrypts.
    let update = w.carol.engine.self_update(conv).unwrap();
    commit(&mut w.ds, &mut w.carol, update);
    deliver_all(&mut w.ds, &mut w.alice1);
    expect_text(
        &w.alice1.engine.process(NOW, &m[1]).unwrap(),
        &w.bob.me(),
        "m1",
    );
}

#[test]
fn device_missing_from_signed_list_is_refused() {
    let mut w = world();
    let conv = group(&mut w);
    // The server hands out a key package for a "bob" device that bob never signed into his list.
    let rogue_store: Store = Arc::new(MemoryStore::new());
    let mut rogue = Engine::new_device(rogue_store, "bob", config()).unwrap();
    let rogue_kp = rogue.generate_key_packages(1, false).unwrap();
    let err = w.alice1.engine.add_devices(conv, &rogue_kp).unwrap_err();
    assert!(matches!(
        conversation_error(err),
        ConversationError::DeviceNotInList(_)
    ));

    // A member whose view of bob was poisoned (a fake "bob" identity) commits the rogue device;
    // honest peers refuse that commit and stay where they were.
    let mut eve = new_account(&mut w.ds, "eve", config());
    learn_all(
        &w.ds,
        &mut [
            &mut eve,
            &mut w.alice1,
            &mut w.alice2,
            &mut w.bob,
            &mut w.carol,
        ],
    );
    let kps = w.ds.claim("eve");
    let add_eve = w.alice1.engine.add_member(conv, "eve", &kps).unwrap();
    commit(&mut w.ds, &mut w.alice1, add_eve);
    for d in [&mut w.bob, &mut w.carol, &mut eve] {
        deliver_all(&mut w.ds, d);
    }
    deliver_all(&mut w.ds, &mut w.alice2);
    let fake_store: Store = Arc::new(MemoryStore::new());
    let (mut fake_bob, fake_list) =
        Engine::create_account(fake_store, "bob", config(), NOW).unwrap();
    let eve_view = Arc::new(MemoryStore::new());
    // Eve's engine trusts the fake identity (as a malicious or compromised client would).
    eve.engine.trust_new_identity("bob", &fake_list).unwrap();
    let fake_kp = fake_bob.generate_key_packages(1, false).unwrap();
    let evil = eve.engine.add_devices(conv, &fake_kp).unwrap();
    drop(eve_view);
    let epoch_before = w.alice1.engine.conversation(conv).unwrap().epoch;
    commit(&mut w.ds, &mut eve, evil.clone());
    for d in [&mut w.alice1, &mut w.bob, &mut w.carol] {
        let bytes = pending(&mut w.ds, d);
        let err = d.engine.process(NOW, &bytes[0]).unwrap_err();
        assert!(matches!(
            conversation_error(err),
            ConversationError::DeviceNotInList(_)
        ));
        assert_eq!(d.engine.conversation(conv).unwrap().epoch, epoch_before);
    }
}

#[test]
fn identity_key_change_is_visible() {
    let mut w = world();
    let before = w.alice1.engine.safety_number("bob").unwrap();
    assert_eq!(
        before.digits(),
        w.bob.engine.safety_number("alice").unwrap().digits()
    );
    let (_, replacement) =
        Engine::create_account(Arc::new(MemoryStore::new()), "bob", config(), NOW).unwrap();
    let err = w
        .alice1
        .engine
        .accept_device_list("bob", &replacement)
        .unwrap_err();
    assert!(matches!(
        err,
        Error::Identity(IdentityError::IdentityChanged(_))
    ));
    assert_eq!(w.alice1.engine.safety_number("bob").unwrap(), before);
    w.alice1
        .engine
        .trust_new_identity("bob", &replacement)
        .unwrap();
    assert_ne!(
        w.alice1.engine.safety_number("bob").unwrap().digits(),
        before.digits()
    );
    // Rollback to an older list is refused.
    let newer = w.ds.lists["alice"].clone();
    let older_store: Store = Arc::new(MemoryStore::new());
    let _ = older_store;
    assert!(w.bob.engine.accept_device_list("alice", &newer).is_ok());
}

#[test]
fn unknown_accounts_are_reported_and_the_same_bytes_work_later() {
    let mut w = world();
    let conv = group(&mut w);
    let mut dave = new_account(&mut w.ds, "dave", config());
    // dave only knows bob, who adds him.
    let bob_list = w.ds.lists["bob"].clone();
    dave.engine.accept_device_list("bob", &bob_list).unwrap();
    let dave_list = w.ds.lists["dave"].clone();
    w.bob.engine.accept_device_list("dave", &dave_list).unwrap();
    let kps = w.ds.claim("dave");
    let bundle = w.bob.engine.add_member(conv, "dave", &kps).unwrap();
    commit(&mut w.ds, &mut w.bob, bundle);
    let welcome = pending(&mut w.ds, &dave).remove(0);
    let err = dave.engine.process(NOW, &welcome).unwrap_err();
    assert_eq!(
        conversation_error(err),
        ConversationError::UnknownAccounts(vec!["alice".into(), "carol".into()])
    );
    learn_all(&w.ds, &mut [&mut dave]);
    assert!(matches!(
        dave.engine.process(NOW, &welcome).unwrap(),
        Incoming::Joined { .. }
    ));

    // alice1 does not know dave yet: the commit is refused until she fetches his list.
    let add = pending(&mut w.ds, &w.alice1).remove(0);
    let alice1_list_of_dave = w.alice1.engine.device_list("dave").is_some();
    assert!(!alice1_list_of_dave);
    let err = w.alice1.engine.process(NOW, &add).unwrap_err();
    assert_eq!(
        conversation_error(err),
        ConversationError::UnknownAccounts(vec!["dave".into()])
    );
    w.alice1
        .engine
        .accept_device_list("dave", &dave_list)
        .unwrap();
    assert!(matches!(
        w.alice1.engine.process(NOW, &add).unwrap(),
        Incoming::Commit { .. }
    ));
}

#[test]
fn leave_is_committed_by_another_member() {
    let mut w = world();
    let conv = group(&mut w);
    let proposal = w.carol.engine.leave(conv).unwrap();
    w.ds.propose(conv, &w.carol.me(), &proposal);
    match &deliver_all(&mut w.ds, &mut w.bob)[..] {
        [Incoming::LeaveRequested { member, .. }] => assert_eq!(*member, w.carol.me()),
        other => panic!("{other:?}"),
    }
    let err = w.bob.engine.encrypt(NOW, conv, &text("x")).unwrap_err();
    assert_eq!(conversation_error(err), ConversationError::PendingProposals);
    let bundle = w.bob.engine.commit_pending_proposals(conv).unwrap();
    commit(&mut w.ds, &mut w.bob, bundle);
    let got = deliver_all(&mut w.ds, &mut w.carol);
    assert!(matches!(got[..], [Incoming::Removed { .. }]), "{got:?}");
    let alice_got = deliver_all(&mut w.ds, &mut w.alice1);
    assert!(
        matches!(alice_got.last(), Some(Incoming::Commit { removed, .. }) if removed.len() == 1)
    );
}

#[test]
fn restart_from_persisted_state_mid_conversation() {
    let mut w = world();
    let conv = group(&mut w);
    send(&mut w.ds, &mut w.alice1, conv, "before restart");
    deliver_all(&mut w.ds, &mut w.bob);

    // 1. Reopen from the same store.
    let store = w.bob.store.clone();
    drop(w.bob);
    let engine = Engine::load(store.clone()).unwrap();
    let mut bob = Device { engine, store };
    send(&mut w.ds, &mut w.alice1, conv, "while reopened");
    expect_text(
        &deliver_all(&mut w.ds, &mut bob)[0],
        &w.alice1.me(),
        "while reopened",
    );

    // 2. Export as an encrypted blob, import into a fresh store.
    let key = PickleKey::generate().unwrap();
    let blob = pickle::export(bob.store.as_ref(), &key).unwrap();
    assert!(!blob.windows(14).any(|x| x == b"while reopened"));
    drop(bob);
    let store: Store = Arc::new(MemoryStore::new());
    pickle::import(&blob, &key, store.as_ref()).unwrap();
    let mut bob = Device {
        engine: Engine::load(store.clone()).unwrap(),
        store,
    };
    assert!(bob.engine.has_account_identity());
    send(&mut w.ds, &mut w.alice1, conv, "after import");
    expect_text(
        &deliver_all(&mut w.ds, &mut bob)[0],
        &w.alice1.me(),
        "after import",
    );
    send(&mut w.ds, &mut bob, conv, "bob is back");
    expect_text(
        deliver_all(&mut w.ds, &mut w.carol).last().unwrap(),
        &bob.me(),
        "bob is back",
    );
    let update = bob.engine.self_update(conv).unwrap();
    commit(&mut w.ds, &mut bob, update);
    assert!(matches!(
        deliver_all(&mut w.ds, &mut w.alice2).last(),
        Some(Incoming::Commit { .. })
    ));
}

#[test]
fn update_policy_triggers_self_update_on_send() {
    let mut ds = Ds::default();
    let cfg = EngineConfig {
        update_policy: UpdatePolicy {
            max_received: 3,
            max_age_ms: 60_000,
        },
        ..config()
    };
    let mut alice = new_account(&mut ds, "alice", cfg.clone());
    let mut bob = new_account(&mut ds, "bob", cfg);
    learn_all(&ds, &mut [&mut alice, &mut bob]);
    let kps = ds.claim("bob");
    let (conv, bundle) = alice
        .engine
        .create_conversation(NOW, ConversationKind::Direct, &["bob"], None, &kps)
        .unwrap();
    commit(&mut ds, &mut alice, bundle);
    deliver_all(&mut ds, &mut bob);
    // bob just joined from a key package: his first send refreshes his leaf.
    let out = bob.engine.encrypt(NOW, conv, &text("first")).unwrap();
    let update = out.self_update.expect("joiner updates on first send");
    ds.fan_out(conv, &bob.me(), &out.message);
    commit(&mut ds, &mut bob, update);
    let got = deliver_all(&mut ds, &mut alice);
    assert!(matches!(
        got[..],
        [Incoming::Message { .. }, Incoming::Commit { .. }]
    ));

    // alice received "first"; one more does not trigger an update, the third message does.
    for i in 0..1 {
        let out = bob
            .engine
            .encrypt(NOW + 1, conv, &text(&format!("n{i}")))
            .unwrap();
        assert!(out.self_update.is_none());
        ds.fan_out(conv, &bob.me(), &out.message);
    }
    deliver_all(&mut ds, &mut alice);
    assert!(
        alice
            .engine
            .encrypt(NOW + 2, conv, &text("a"))
            .unwrap()
            .self_update
            .is_none()
    );
    ds.fan_out(
        conv,
        &bob.me(),
        &bob.engine
            .encrypt(NOW + 3, conv, &text("n3"))
            .unwrap()
            .message,
    );
    pending(&mut ds, &bob);
    deliver_all(&mut ds, &mut alice);
    let out = alice.engine.encrypt(NOW + 4, conv, &text("b")).unwrap();
    assert!(
        out.self_update.is_some(),
        "3 received messages trigger an update"
    );
    let update = out.self_update.unwrap();
    commit(&mut ds, &mut alice, update);
    // Time alone triggers it too.
    let out = alice
        .engine
        .encrypt(NOW + 4 + 60_000, conv, &text("c"))
        .unwrap();
    assert!(out.self_update.is_some(), "age triggers an update");
}

#[test]
fn adding_and_removing_one_of_my_devices() {
    let mut w = world();
    let conv = group(&mut w);
    // alice approves a third device; peers learn the new signed list.
    let mut alice3 = second_device(&mut w.ds, &mut w.alice1, config());
    learn_all(
        &w.ds,
        &mut [&mut w.alice2, &mut w.bob, &mut w.carol, &mut alice3],
    );
    let kp =
        w.ds.key_packages
            .get_mut(&alice3.me())
            .unwrap()
            .pop()
            .unwrap();
    let bundle = w.alice1.engine.add_devices(conv, &[kp]).unwrap();
    commit(&mut w.ds, &mut w.alice1, bundle);
    assert!(matches!(
        deliver_all(&mut w.ds, &mut alice3)[..],
        [Incoming::Joined { .. }]
    ));
    for d in [&mut w.bob, &mut w.carol, &mut w.alice2] {
        match &deliver_all(&mut w.ds, d)[..] {
            [Incoming::Commit { added, .. }] => assert_eq!(added, &[alice3.me()]),
            other => panic!("{other:?}"),
        }
    }
    send(&mut w.ds, &mut w.bob, conv, "hello all of alice");
    expect_text(
        &deliver_all(&mut w.ds, &mut alice3)[0],
        &w.bob.me(),
        "hello all of alice",
    );

    // alice revokes device 2: a new list, then a commit removing it everywhere.
    let list = w
        .alice1
        .engine
        .revoke_device(w.alice2.me().device_id)
        .unwrap();
    w.ds.lists.insert("alice".into(), list);
    learn_all(&w.ds, &mut [&mut w.bob, &mut w.carol, &mut alice3]);
    let stale_update = w.alice2.engine.self_update(conv).unwrap();
    let bundle = w
        .alice1
        .engine
        .remove_devices(conv, vec![w.alice2.me()])
        .unwrap();
    commit(&mut w.ds, &mut w.alice1, bundle);
    let got = deliver_all(&mut w.ds, &mut w.alice2);
    assert!(
        matches!(
            got[..],
            [Incoming::Message { .. }, Incoming::Removed { .. }]
        ),
        "{got:?}"
    );
    for d in [&mut w.bob, &mut w.carol, &mut alice3] {
        deliver_all(&mut w.ds, d);
        assert!(
            !d.engine
                .conversation(conv)
                .unwrap()
                .members
                .contains(&w.alice2.me())
        );
    }
    // The revoked device's leftover commit is for an old epoch and refused by the server.
    assert!(w.ds.submit(&w.alice2.me(), &stale_update).is_err());
}

#[test]
fn revoked_device_cannot_commit_to_peers_who_know_the_new_list() {
    let mut w = world();
    let conv = group(&mut w);
    let list = w
        .alice1
        .engine
        .revoke_device(w.alice2.me().device_id)
        .unwrap();
    w.ds.lists.insert("alice".into(), list);
    learn_all(&w.ds, &mut [&mut w.bob]);
    // alice2 has not been removed from the conversation yet and tries a self-update.
    let update = w.alice2.engine.self_update(conv).unwrap();
    w.ds.submit(&w.alice2.me(), &update).unwrap();
    let bytes = pending(&mut w.ds, &w.bob);
    let err = w.bob.engine.process(NOW, &bytes[0]).unwrap_err();
    assert!(matches!(
        conversation_error(err),
        ConversationError::DeviceNotInList(_)
    ));
}

#[test]
fn server_side_inspection_sees_only_routing_facts() {
    use nightjar_core::wire::{WireKind, inspect, inspect_key_package};
    let mut w = world();
    let conv = group(&mut w);
    let epoch = w.bob.engine.conversation(conv).unwrap().epoch;
    let app = send(&mut w.ds, &mut w.bob, conv, "secret text");
    let info = inspect(&app).unwrap();
    assert_eq!(
        (info.kind, info.conversation, info.epoch),
        (WireKind::Application, Some(conv), Some(epoch))
    );
    let update = w.bob.engine.self_update(conv).unwrap();
    let info = inspect(&update.commit).unwrap();
    assert_eq!((info.kind, info.epoch), (WireKind::Commit, Some(epoch)));
    let kp =
        w.ds.key_packages
            .get_mut(&w.carol.me())
            .unwrap()
            .pop()
            .unwrap();
    let kp_info = inspect_key_package(&kp).unwrap();
    assert_eq!(kp_info.identity, w.carol.me().to_identity());
    assert_eq!(kp_info.suite, 0x0003);
    assert!(inspect(b"junk").is_err());
    let last_resort = w.carol.engine.generate_key_packages(1, true).unwrap();
    assert!(inspect_key_package(&last_resort[0]).unwrap().last_resort);
    assert!(inspect_key_package(&kp[..kp.len() - 1]).is_err());
}

#[test]
fn every_truncation_of_every_message_kind_is_refused_cleanly() {
    let mut w = world();
    let conv = group(&mut w);
    let app = send(&mut w.ds, &mut w.alice1, conv, "truncate me");
    let commit_bytes = w.alice1.engine.self_update(conv).unwrap().commit;
    w.alice1.engine.commit_rejected(conv).unwrap();
    let mut dave = new_account(&mut w.ds, "dave", config());
    learn_all(&w.ds, &mut [&mut dave, &mut w.alice1]);
    let kps = w.ds.claim("dave");
    let welcome = w
        .alice1
        .engine
        .add_member(conv, "dave", &kps)
        .unwrap()
        .welcome
        .unwrap();
    w.alice1.engine.commit_rejected(conv).unwrap();
    let before = w.bob.store.entries().unwrap();
    for bytes in [&app, &commit_bytes, &welcome] {
        for len in 0..bytes.len() {
            assert!(w.bob.engine.process(NOW, &bytes[..len]).is_err());
            assert!(dave.engine.process(NOW, &bytes[..len]).is_err());
        }
    }
    assert_eq!(w.bob.store.entries().unwrap(), before);
    expect_text(
        &w.bob.engine.process(NOW, &app).unwrap(),
        &w.alice1.me(),
        "truncate me",
    );
}

#[test]
fn group_name_is_sealed_from_the_server_and_reaches_members_and_joiners() {
    let mut w = world();
    let conv = group(&mut w);
    // Joiners got the metadata key inside their Welcome.
    assert_eq!(
        w.bob
            .engine
            .conversation(conv)
            .unwrap()
            .metadata
            .unwrap()
            .name,
        "trip"
    );
    let state = w.ds.states[&conv].clone();
    assert!(
        !state.windows(4).any(|x| x == b"trip"),
        "the server's state holds the name"
    );

    let meta = GroupMetadata {
        name: "secret club".into(),
        avatar: None,
    };
    let rename = w.carol.engine.set_metadata(conv, &meta).unwrap();
    assert!(!rename.commit.windows(6).any(|x| x == b"secret"));
    commit(&mut w.ds, &mut w.carol, rename);
    assert!(!w.ds.states[&conv].windows(6).any(|x| x == b"secret"));
    for d in [&mut w.alice1, &mut w.alice2, &mut w.bob] {
        let got = deliver_all(&mut w.ds, d);
        assert!(matches!(
            got[..],
            [Incoming::Commit {
                metadata_changed: true,
                ..
            }]
        ));
        assert_eq!(
            d.engine.conversation(conv).unwrap().metadata.unwrap().name,
            "secret club"
        );
    }
    assert_eq!(
        w.carol
            .engine
            .conversation(conv)
            .unwrap()
            .metadata
            .unwrap()
            .name,
        "secret club"
    );

    // A device added after the rename learns the current name from its Welcome.
    let mut dave = new_account(&mut w.ds, "dave", config());
    learn_all(&w.ds, &mut [&mut dave, &mut w.bob]);
    let kps = w.ds.claim("dave");
    let bundle = w.bob.engine.add_member(conv, "dave", &kps).unwrap();
    assert!(
        bundle
            .welcome
            .as_ref()
            .is_some_and(|w| !w.windows(6).any(|x| x == b"secret"))
    );
    commit(&mut w.ds, &mut w.bob, bundle);
    let got = deliver_all(&mut w.ds, &mut dave);
    assert!(matches!(got[..], [Incoming::Joined { .. }]));
    assert_eq!(
        dave.engine
            .conversation(conv)
            .unwrap()
            .metadata
            .unwrap()
            .name,
        "secret club"
    );
}

#[test]
fn every_message_is_franked_and_each_recipient_checks_it() {
    use nightjar_core::franking::{self, Committed, FrankingCheck};
    let mut w = world();
    let conv = group(&mut w);
    let out = w
        .alice1
        .engine
        .encrypt(NOW, conv, &text("franked"))
        .unwrap();
    w.ds.fan_out(conv, &w.alice1.me(), &out.message);
    let alice1 = w.alice1.me();
    let device_key = w.ds.lists["alice"]
        .verify()
        .unwrap()
        .device(alice1.device_id)
        .unwrap()
        .signature_key;
    // Every other device (alice's second one too) finds the same commitment the sender put
    // beside the ciphertext, opened by the key inside and signed by alice1's device key.
    for d in [&mut w.alice2, &mut w.bob, &mut w.carol] {
        let got = deliver_all(&mut w.ds, d);
        let [incoming] = &got[..] else {
            panic!("{got:?}");
        };
        expect_text(incoming, &alice1, "franked");
        let Incoming::Message {
            franking: FrankingCheck::Verified(franked),
            message,
            ..
        } = incoming
        else {
            panic!("{incoming:?}");
        };
        assert_eq!(franked.commitment, out.franking_commitment);
        let encoded = message.encode();
        let committed = Committed {
            conversation: conv,
            sender: &alice1,
            message: &encoded,
        };
        assert!(franking::opens(
            &franked.opening.key,
            &committed,
            &franked.commitment
        ));
        assert!(franking::verify_signature(
            &device_key,
            &franked.commitment,
            &franked.opening.signature
        ));
    }
    // A fresh key per message: the same content again is another commitment.
    let again = w
        .alice1
        .engine
        .encrypt(NOW, conv, &text("franked"))
        .unwrap();
    assert_ne!(again.franking_commitment, out.franking_commitment);
}
