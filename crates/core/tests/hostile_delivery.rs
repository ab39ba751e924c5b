//! A malicious delivery service against the engine (issue 8, finding 6), without sockets or a
//! clock: the test is the server, and drops, replays, reorders and forks what it carries between
//! alice, bob and carol in one group.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use nightjar_core::content::{Content, Message, MessageId};
use nightjar_core::storage::MemoryStore;
use nightjar_core::{
    ConversationError, ConversationId, ConversationKind, Engine, EngineConfig, Error, Incoming,
    MissingMessages, Suite, UpdatePolicy,
};

const NOW: u64 = 1_800_000_000_000;
const GRACE: u64 = 60_000;

type Device = Engine<Arc<MemoryStore>>;

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

fn text(body: &str, n: u8) -> Message {
    Message {
        id: MessageId([n; 16]),
        sent_at_ms: NOW,
        expires_after_secs: None,
        content: Content::Text { body: body.into() },
    }
}

/// alice created a group with bob and carol; everyone joined.
fn group() -> (Device, Device, Device, ConversationId) {
    let mut devices: Vec<(Device, _)> = ["alice", "bob", "carol"]
        .into_iter()
        .map(|name| {
            Engine::create_account(Arc::new(MemoryStore::new()), name, config(), NOW).unwrap()
        })
        .collect();
    let lists: Vec<_> = devices
        .iter()
        .map(|(e, l)| (e.device().username.clone(), l.clone()))
        .collect();
    for (engine, _) in &mut devices {
        for (name, list) in &lists {
            engine.accept_device_list(name, list).unwrap();
        }
    }
    let (mut carol, _) = devices.pop().unwrap();
    let (mut bob, _) = devices.pop().unwrap();
    let (mut alice, _) = devices.pop().unwrap();
    let mut kps = bob.generate_key_packages(1, false).unwrap();
    kps.extend(carol.generate_key_packages(1, false).unwrap());
    let (conv, bundle) = alice
        .create_conversation(NOW, ConversationKind::Group, &["bob", "carol"], None, &kps)
        .unwrap();
    alice.commit_accepted(NOW, conv).unwrap();
    let welcome = bundle.welcome.unwrap();
    for joiner in [&mut bob, &mut carol] {
        assert!(matches!(
            joiner.process(NOW, &welcome).unwrap(),
            Incoming::Joined { .. }
        ));
    }
    (alice, bob, carol, conv)
}

fn body(incoming: &Incoming) -> String {
    match incoming {
        Incoming::Message { message, .. } => match &message.content {
            Content::Text { body } => body.clone(),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
}

fn refusal(result: Result<Incoming, Error>) -> ConversationError {
    match result {
        Err(Error::Conversation(e)) => e,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_dropped_message_is_reported_missing_after_the_grace_time_and_shown_if_it_comes_late() {
    let (mut alice, mut bob, _carol, conv) = group();
    let sent: Vec<Vec<u8>> = (1..=3)
        .map(|n| {
            alice
                .encrypt(NOW, conv, &text(&format!("m{n}"), n))
                .unwrap()
                .message
        })
        .collect();
    // The server withholds m2.
    assert_eq!(body(&bob.process(NOW, &sent[0]).unwrap()), "m1");
    assert_eq!(body(&bob.process(NOW, &sent[2]).unwrap()), "m3");
    assert_eq!(bob.missing_messages(NOW + GRACE - 1, GRACE).unwrap(), []);
    let missing = bob.missing_messages(NOW + GRACE, GRACE).unwrap();
    assert_eq!(
        missing,
        [MissingMessages {
            conversation: conv,
            sender: alice.device().clone(),
            count: 1,
        }]
    );
    assert_eq!(bob.missing_messages(NOW + 10 * GRACE, GRACE).unwrap(), []);
    // If it ever arrives, it is shown (once).
    assert_eq!(body(&bob.process(NOW, &sent[1]).unwrap()), "m2");
    assert_eq!(
        refusal(bob.process(NOW, &sent[1])),
        ConversationError::Replayed
    );
}

#[test]
fn reordered_messages_are_all_shown_with_no_false_report() {
    let (mut alice, _bob, mut carol, conv) = group();
    let sent: Vec<Vec<u8>> = (1..=4)
        .map(|n| {
            alice
                .encrypt(NOW, conv, &text(&format!("m{n}"), n))
                .unwrap()
                .message
        })
        .collect();
    let order = [1, 3, 0, 2];
    let shown: Vec<String> = order
        .iter()
        .map(|&i| body(&carol.process(NOW, &sent[i]).unwrap()))
        .collect();
    assert_eq!(shown, ["m2", "m4", "m1", "m3"]);
    assert_eq!(carol.missing_messages(u64::MAX, GRACE).unwrap(), []);
}

#[test]
fn replayed_and_re_encrypted_copies_are_dropped_as_duplicates() {
    let (mut alice, mut bob, mut carol, conv) = group();
    let message = text("once", 9);
    let first = alice.encrypt(NOW, conv, &message).unwrap();
    assert_eq!(body(&bob.process(NOW, &first.message).unwrap()), "once");
    // The exact ciphertext again.
    assert_eq!(
        refusal(bob.process(NOW, &first.message)),
        ConversationError::Replayed
    );
    // The epoch moves on (carol commits) and alice encrypts the same message again, as the
    // SDK does when its first ciphertext went stale: same sequence number, so a receiver that
    // got the first copy drops the second.
    let update = carol.self_update(conv).unwrap();
    carol.commit_accepted(NOW, conv).unwrap();
    for member in [&mut alice, &mut bob] {
        assert!(matches!(
            member.process(NOW, &update.commit).unwrap(),
            Incoming::Commit { .. }
        ));
    }
    let again = alice.encrypt(NOW, conv, &message).unwrap();
    assert_eq!(again.epoch, first.epoch + 1);
    assert_eq!(
        refusal(bob.process(NOW, &again.message)),
        ConversationError::Duplicate
    );
    // carol never got the first copy: she shows the second, and no gap is left behind.
    assert_eq!(body(&carol.process(NOW, &again.message).unwrap()), "once");
    let next = alice.encrypt(NOW, conv, &text("next", 10)).unwrap();
    assert_eq!(body(&bob.process(NOW, &next.message).unwrap()), "next");
    assert_eq!(body(&carol.process(NOW, &next.message).unwrap()), "next");
    assert_eq!(bob.missing_messages(u64::MAX, GRACE).unwrap(), []);
    assert_eq!(carol.missing_messages(u64::MAX, GRACE).unwrap(), []);
}

#[test]
fn members_given_different_commits_for_one_epoch_detect_the_fork() {
    let (mut alice, mut bob, mut carol, conv) = group();
    // bob and carol both commit at the same epoch; the server accepts both and gives bob's to
    // alice and carol's to nobody.
    let bobs = bob.self_update(conv).unwrap();
    let carols = carol.self_update(conv).unwrap();
    assert_eq!(bobs.epoch, carols.epoch);
    bob.commit_accepted(NOW, conv).unwrap();
    carol.commit_accepted(NOW, conv).unwrap();
    assert!(matches!(
        alice.process(NOW, &bobs.commit).unwrap(),
        Incoming::Commit { .. }
    ));
    let epoch = bobs.epoch + 1;
    for device in [&mut alice, &mut bob, &mut carol] {
        assert_eq!(device.conversation(conv).unwrap().epoch, epoch);
    }

    // Across the fork, both ways: refused as a fork, not as noise.
    let from_carol = carol.encrypt(NOW, conv, &text("branch c", 1)).unwrap();
    let from_alice = alice.encrypt(NOW, conv, &text("branch b", 2)).unwrap();
    assert_eq!(
        refusal(alice.process(NOW, &from_carol.message)),
        ConversationError::Forked { epoch }
    );
    assert_eq!(
        refusal(carol.process(NOW, &from_alice.message)),
        ConversationError::Forked { epoch }
    );
    // On the same branch, nothing changes.
    assert_eq!(
        body(&bob.process(NOW, &from_alice.message).unwrap()),
        "branch b"
    );

    // After one more commit on alice's branch, carol's older-epoch messages still show the fork.
    let later = bob.self_update(conv).unwrap();
    bob.commit_accepted(NOW, conv).unwrap();
    alice.process(NOW, &later.commit).unwrap();
    let again = carol
        .encrypt(NOW, conv, &text("branch c again", 3))
        .unwrap();
    assert_eq!(
        refusal(alice.process(NOW, &again.message)),
        ConversationError::Forked { epoch }
    );
}

/// Where the fork tag sits in an application message: MLS version and wire format (4 bytes),
/// the 16-byte group id with its length (17), the epoch (8), the content type (1), then the
/// authenticated data's length (1) and its version byte (1).
const TAG_AT: usize = 4 + 17 + 8 + 1 + 1 + 1;

#[test]
fn a_server_rewriting_the_fork_tag_gets_a_false_alarm_at_most_never_a_forged_message() {
    let (mut alice, mut bob, _carol, conv) = group();
    let out = alice.encrypt(NOW, conv, &text("hi", 1)).unwrap().message;
    assert_eq!(
        out[TAG_AT - 2],
        9,
        "authenticated data: version byte and 8-byte tag"
    );
    assert_eq!(out[TAG_AT - 1], 1);
    // A flipped tag: reported as a fork (the receiver cannot tell who changed it), nothing
    // shown, nothing changed.
    let mut flipped = out.clone();
    flipped[TAG_AT] ^= 1;
    assert!(matches!(
        refusal(bob.process(NOW, &flipped)),
        ConversationError::Forked { .. }
    ));
    // A stripped tag (hiding a fork): the ciphertext no longer authenticates.
    let mut stripped = out[..TAG_AT - 2].to_vec();
    stripped.push(0);
    stripped.extend_from_slice(&out[TAG_AT + 8..]);
    assert!(bob.process(NOW, &stripped).is_err());
    // The genuine message still arrives intact afterwards.
    assert_eq!(body(&bob.process(NOW, &out).unwrap()), "hi");
}
