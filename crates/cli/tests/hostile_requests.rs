//! Message requests end to end with the real `nightjar` binary: a stranger's messages are held
//! back as a request, `requests` lists them, `block` makes the stranger's next send fail with a
//! clear reason, and `accept`/`unblock` work (issue 8, finding 5).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

mod common;

use common::*;
use serde_json::Value;

#[test]
fn a_strangers_messages_wait_as_a_request_and_a_block_stops_them() {
    let root = tempfile::tempdir().unwrap();
    let server = Server::start(&root.path().join("server"));
    let url = server.url();
    let alice = Device::new(root.path(), "alice");
    let mallory = Device::new(root.path(), "mallory");
    alice.ok(&["register", "--server", &url, "alice"]);
    mallory.ok(&["register", "--server", &url, "mallory"]);

    // mallory writes to alice, who never accepted her: a message request.
    mallory.ok(&["send", "alice", "hi alice, buy my stuff"]);
    mallory.ok(&["send", "alice", "really cheap"]);
    let synced = alice.run(&["sync", "--json"]);
    assert!(synced.status.success());
    assert!(
        String::from_utf8_lossy(&synced.stdout).trim().is_empty(),
        "a request is not shown as messages"
    );
    let stderr = String::from_utf8_lossy(&synced.stderr);
    assert!(
        stderr.contains("new message request from mallory: run `nightjar requests`"),
        "{stderr}"
    );
    let listed = alice.ok(&["requests"]);
    assert!(listed.contains("mallory"), "{listed}");
    assert!(listed.contains("2 messages"), "{listed}");
    assert!(listed.contains("really cheap"), "{listed}");
    let json: Vec<Value> = alice
        .ok(&["requests", "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(json.len(), 1);
    assert_eq!(json[0]["from"], "mallory");
    assert_eq!(json[0]["messages"], 2);

    // alice blocks mallory: mallory's next send fails, with the reason.
    alice.ok(&["block", "mallory"]);
    let stderr = mallory.fails(&["send", "alice", "why no answer?"]);
    assert!(
        stderr.contains("does not accept messages from you"),
        "{stderr}"
    );
    // The refused message is not lost: it stays in mallory's outbox with the reason, is not
    // posted again by itself, and goes only when mallory says so.
    assert!(stderr.contains("stays in the outbox"), "{stderr}");
    let outbox = mallory.ok(&["outbox"]);
    assert!(
        outbox.contains("refused: the recipient does not accept messages from you"),
        "{outbox}"
    );
    assert!(mallory.ok(&["status"]).contains("1 refused by the server"));
    assert!(
        mallory
            .ok(&["outbox", "--drop"])
            .contains("refused entries dropped: 1")
    );
    assert!(mallory.ok(&["outbox"]).contains("the outbox is empty"));
    assert!(alice.sync().is_empty());
    assert!(alice.ok(&["requests"]).contains("no message requests"));

    // Unblocked, mallory is a stranger again; accepted, her messages show.
    alice.ok(&["unblock", "mallory"]);
    mallory.ok(&["send", "alice", "sorry"]);
    assert!(alice.sync().is_empty());
    alice.ok(&["accept", "mallory"]);
    let texts = alice.texts();
    assert!(texts.contains(&"sorry".to_owned()), "{texts:?}");
    assert!(texts.contains(&"really cheap".to_owned()), "{texts:?}");
    mallory.ok(&["send", "alice", "thanks"]);
    assert_eq!(alice.texts(), vec!["thanks".to_owned()]);

    // A report blocks too.
    let out = alice.ok(&["report", "mallory", "--reason", "spam"]);
    assert!(out.contains("reported and blocked mallory"), "{out}");
    let stderr = mallory.fails(&["send", "alice", "hello?"]);
    assert!(
        stderr.contains("does not accept messages from you"),
        "{stderr}"
    );
}

#[test]
fn replying_accepts_and_your_own_conversations_are_never_requests() {
    let root = tempfile::tempdir().unwrap();
    let server = Server::start(&root.path().join("server"));
    let url = server.url();
    let alice = Device::new(root.path(), "alice");
    let bob = Device::new(root.path(), "bob");
    alice.ok(&["register", "--server", &url, "alice"]);
    bob.ok(&["register", "--server", &url, "bob"]);
    // alice starts the conversation: bob's answers are never requests for her.
    alice.ok(&["send", "bob", "hi bob"]);
    assert!(bob.sync().is_empty());
    // bob answers instead of accepting: that accepts the conversation.
    bob.ok(&["send", "alice", "hi alice"]);
    assert_eq!(bob.texts(), vec!["hi bob".to_owned()]);
    assert_eq!(alice.texts(), vec!["hi alice".to_owned()]);
    for i in 0..6 {
        alice.ok(&["send", "bob", &format!("m{i}")]);
    }
    assert_eq!(bob.texts().len(), 6);
}
