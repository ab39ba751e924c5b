//! History on a new device across real processes: the approving device hands the account's
//! recent conversations and messages to the device it approves, end-to-end encrypted (the
//! server's files never hold them in plaintext), and the new device shows them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

/// Written into every message of the test, and searched for in the server's files.
const MARKER: &str = "history-plaintext-marker";

fn rows(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn texts(rows: &[Value]) -> Vec<&str> {
    rows.iter().filter_map(|r| r["text"].as_str()).collect()
}

#[test]
fn a_new_device_shows_the_history_from_before_its_approval() {
    let p = Pair::new(&[]);
    let url = p.server.url();
    let (alice, bob) = (&p.alice, &p.bob);

    alice.ok(&["send", "bob", &format!("{MARKER} 1 from alice")]);
    bob.sync();
    bob.ok(&["send", "alice", &format!("{MARKER} 2 from bob")]);
    alice.sync();
    alice.ok(&["group", "create", "crew", "bob"]);
    alice.ok(&[
        "send",
        "--group",
        "crew",
        &format!("{MARKER} 3 to the crew"),
    ]);
    bob.sync();
    // Deleted for everyone, and disappeared: neither reaches the new device.
    let deleted = sent_id(&alice.ok(&["send", "bob", &format!("{MARKER} gone")]));
    alice.ok(&["delete", &deleted]);
    alice.ok(&["timer", "bob", "1s"]);
    alice.ok(&["send", "bob", &format!("{MARKER} disappears")]);
    std::thread::sleep(Duration::from_millis(1500));
    alice.ok(&["timer", "bob", "off"]);
    bob.sync();

    let alice2 = Device::new(&p.root, "alice2");
    let linked = alice2.link(alice, &url, "alice");
    assert!(
        linked.approved.contains("the last 90 days of history"),
        "{}",
        linked.approved
    );

    let all = rows(&alice2.ok(&["history", "--json"]));
    let shown = texts(&all);
    for expected in [
        format!("{MARKER} 1 from alice"),
        format!("{MARKER} 2 from bob"),
        format!("{MARKER} 3 to the crew"),
    ] {
        assert!(shown.contains(&expected.as_str()), "{expected} in {all:?}");
    }
    assert!(
        !shown
            .iter()
            .any(|t| t.contains("gone") || t.contains("disappears")),
        "{all:?}"
    );
    let gone = all.iter().find(|r| r["id"] == deleted.as_str()).unwrap();
    assert_eq!(gone["deleted"], true, "{gone}");
    let crew = all
        .iter()
        .find(|r| r["text"] == format!("{MARKER} 3 to the crew"))
        .unwrap();
    assert_eq!(crew["group"], "crew");
    assert_eq!(crew["from"], "alice");

    // One conversation at a time, as people read it.
    let with_bob = rows(&alice2.ok(&["history", "bob", "--json"]));
    assert!(
        with_bob.iter().all(|r| r["group"].is_null()),
        "{with_bob:?}"
    );
    assert!(texts(&with_bob).contains(&format!("{MARKER} 2 from bob").as_str()));
    let human = alice2.ok(&["history", "--group", "crew"]);
    assert!(human.contains("[crew] alice: "), "{human}");

    // The new device is in the conversations from the approval on, both ways.
    bob.ok(&["send", "alice", "after the approval"]);
    assert!(alice2.texts().contains(&"after the approval".to_owned()));
    alice2.ok(&["send", "bob", "from the new device"]);
    assert!(bob.texts().contains(&"from the new device".to_owned()));

    // The archive went through the server as ciphertext only, and is gone once fetched.
    assert_no_marker(&p.server.data, MARKER.as_bytes());
    let blobs = p.server.data.join("blobs");
    assert!(files_under(&blobs).is_empty(), "{:?}", files_under(&blobs));
}

#[test]
fn no_history_when_the_setting_says_none() {
    let p = Pair::new(&[]);
    let url = p.server.url();
    p.alice.ok(&["send", "bob", "before"]);
    let settings = p.alice.ok(&["settings", "--history-days", "0"]);
    assert!(
        settings.contains("history for new devices: none"),
        "{settings}"
    );
    let alice2 = Device::new(&p.root, "alice2");
    let linked = alice2.link(&p.alice, &url, "alice");
    assert!(
        linked.approved.contains("no history"),
        "{}",
        linked.approved
    );
    assert_eq!(alice2.ok(&["history", "--json"]).trim(), "");
    // The setting is bounded.
    p.alice.fails(&["settings", "--history-days", "100000"]);
}
