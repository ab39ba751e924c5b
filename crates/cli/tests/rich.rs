//! Replies, reactions, edits, deletes, receipts and disappearing messages across real
//! processes: the `nightjar server` binary and `nightjar` commands on temporary profiles.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::Value;

/// The rows of one kind in a `sync --json` batch.
fn of_kind<'a>(rows: &'a [Value], kind: &str) -> Vec<&'a Value> {
    rows.iter().filter(|r| r["type"] == kind).collect()
}

/// Every row of every table of a profile's database, decrypted with the profile's key, as
/// one string: what someone holding the unlocked profile could read.
fn decrypted_profile(dir: &Path) -> String {
    let key = std::fs::read_to_string(dir.join("profile.key")).unwrap();
    let conn = rusqlite::Connection::open(dir.join("profile.db")).unwrap();
    conn.execute_batch(&format!("PRAGMA key = \"x'{}'\";", key.trim()))
        .unwrap();
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(tables.iter().any(|t| t == "messages"), "{tables:?}");
    let mut all = String::new();
    for table in tables {
        let mut stmt = conn.prepare(&format!("SELECT * FROM \"{table}\"")).unwrap();
        let columns = stmt.column_count();
        let mut rows = stmt.query([]).unwrap();
        while let Some(row) = rows.next().unwrap() {
            for i in 0..columns {
                match row.get_ref(i).unwrap() {
                    rusqlite::types::ValueRef::Text(b) | rusqlite::types::ValueRef::Blob(b) => {
                        all.push_str(&String::from_utf8_lossy(b));
                    }
                    other => all.push_str(&format!("{other:?}")),
                }
                all.push('|');
            }
        }
    }
    all
}

#[test]
fn replies_reactions_edits_deletes_and_receipts_reach_the_other_side() {
    // `_tmp` and `_server` live to the end of the test (the profiles and the server).
    let Pair {
        tmp: _tmp,
        server: _server,
        alice,
        bob,
        ..
    } = Pair::new(&[]);

    let hello = sent_id(&alice.ok(&["send", "bob", "hello bob"]));
    let rows = bob.sync();
    let text = of_kind(&rows, "text");
    assert_eq!(text.len(), 1, "{rows:?}");
    assert_eq!(text[0]["id"], hello.as_str());
    assert_eq!(text[0]["text"], "hello bob");

    // bob's sync showed it, so alice learns bob read it.
    let rows = alice.sync();
    let read = of_kind(&rows, "read");
    assert_eq!(read.len(), 1, "{rows:?}");
    assert_eq!(read[0]["from"], "bob");
    assert_eq!(read[0]["message_ids"], serde_json::json!([hello]));
    assert_eq!(read[0]["id"].as_str().unwrap().len(), 32);

    // A reply quotes the message it answers.
    let reply = sent_id(&bob.ok(&["reply", &hello, "hi alice"]));
    let rows = alice.sync();
    let replies = of_kind(&rows, "reply");
    assert_eq!(replies.len(), 1, "{rows:?}");
    assert_eq!(replies[0]["id"], reply.as_str());
    assert_eq!(replies[0]["reply_to"], hello.as_str());
    assert_eq!(replies[0]["text"], "hi alice");

    // A reaction, then its withdrawal.
    alice.ok(&["react", &reply, "👍"]);
    alice.ok(&["react", &reply, "👍", "--remove"]);
    let rows = bob.sync();
    let reactions = of_kind(&rows, "reaction");
    assert_eq!(reactions.len(), 2, "{rows:?}");
    assert_eq!(reactions[0]["target"], reply.as_str());
    assert_eq!(reactions[0]["emoji"], "👍");
    assert_eq!(reactions[0]["remove"], false);
    assert_eq!(reactions[1]["remove"], true);
    assert!(
        bob.fails(&["react", &reply, "not one emoji"])
            .contains("one emoji")
    );

    // An edit of one's own message reaches the other side; nobody edits another's.
    alice.ok(&["edit", &hello, "hello, bob!"]);
    let rows = bob.sync();
    let edits = of_kind(&rows, "edit");
    assert_eq!(edits.len(), 1, "{rows:?}");
    assert_eq!(edits[0]["target"], hello.as_str());
    assert_eq!(edits[0]["text"], "hello, bob!");
    let refused = bob.fails(&["edit", &hello, "alice never said this"]);
    assert!(refused.contains("only your own messages"), "{refused}");
    assert!(
        bob.fails(&["delete", &hello])
            .contains("only your own messages")
    );
    assert!(bob.fails(&["edit", "0123", "x"]).contains("no message id"));
    assert!(
        bob.fails(&["edit", &"ab".repeat(16), "x"])
            .contains("no message")
    );

    // Delete for everyone.
    alice.ok(&["delete", &hello]);
    let rows = bob.sync();
    let deletes = of_kind(&rows, "delete");
    assert_eq!(deletes.len(), 1, "{rows:?}");
    assert_eq!(deletes[0]["target"], hello.as_str());
    assert!(
        bob.fails(&["reply", &hello, "x"])
            .contains("deleted message")
    );
    assert!(
        alice
            .fails(&["edit", &hello, "x"])
            .contains("deleted message")
    );

    // With read receipts off, bob's device still says what reached it, not that he read it.
    assert!(
        bob.ok(&["settings", "--read-receipts", "off"])
            .contains("read receipts: off")
    );
    let quiet = sent_id(&alice.ok(&["send", "bob", "are you there?"]));
    alice.sync();
    assert_eq!(bob.texts(), ["are you there?"]);
    let rows = alice.sync();
    assert!(of_kind(&rows, "read").is_empty(), "{rows:?}");
    let delivered = of_kind(&rows, "delivered");
    assert_eq!(delivered.len(), 1, "{rows:?}");
    assert_eq!(delivered[0]["message_ids"], serde_json::json!([quiet]));

    // People read it too.
    let people = bob.ok(&["sync"]);
    assert!(people.is_empty(), "{people}");
    alice.ok(&["send", "bob", "one more"]);
    let people = bob.ok(&["sync"]);
    assert!(people.contains("alice: one more"), "{people}");
}

#[test]
fn disappearing_messages_leave_no_trace_on_either_device_or_the_server() {
    let Pair {
        tmp: _tmp,
        server,
        alice,
        bob,
        ..
    } = Pair::new(&[]);
    alice.ok(&["send", "bob", "kept forever"]);

    let set = alice.ok(&["timer", "bob", "3s"]);
    assert!(
        set.contains("disappearing messages: 3s after reading"),
        "{set}"
    );
    let rows = bob.sync();
    let timer = of_kind(&rows, "timer");
    assert_eq!(timer.len(), 1, "{rows:?}");
    assert_eq!(timer[0]["seconds"], 3);
    assert_eq!(timer[0]["from"], "alice");
    assert!(
        alice
            .fails(&["timer", "bob", "soon"])
            .contains("no duration")
    );

    // Messages sent afterwards, by either side, carry the timer.
    alice.ok(&["send", "bob", "vanishing-marker-from-alice"]);
    let rows = bob.sync();
    let text = of_kind(&rows, "text");
    assert_eq!(text.len(), 1, "{rows:?}");
    assert!(text[0]["expires_at"].as_u64().is_some(), "{rows:?}");
    bob.ok(&["send", "alice", "vanishing-marker-from-bob"]);
    assert_eq!(alice.texts(), ["vanishing-marker-from-bob"]);
    for device in [&alice, &bob] {
        let kept = decrypted_profile(&device.dir);
        assert!(
            kept.contains("vanishing-marker"),
            "the test reads the profile"
        );
    }

    std::thread::sleep(Duration::from_millis(3500));
    // Any command deletes what expired; both sync until nothing is left to exchange.
    for _ in 0..2 {
        alice.sync();
        bob.sync();
    }
    for device in [&alice, &bob] {
        let kept = decrypted_profile(&device.dir);
        assert!(
            !kept.contains("vanishing-marker"),
            "{} kept it",
            device.dir.display()
        );
        assert!(
            kept.contains("kept forever"),
            "a message without a timer stays"
        );
    }
    // The server kept ciphertext only until both devices took it.
    let db = rusqlite::Connection::open(server.data.join("nightjar.db")).unwrap();
    let queued: i64 = db
        .query_row("SELECT count(*) FROM messages", [], |r| r.get(0))
        .unwrap();
    assert_eq!(queued, 0, "the server still holds messages");

    // Off again: new messages stay.
    bob.ok(&["timer", "alice", "off"]);
    let rows = alice.sync();
    assert_eq!(of_kind(&rows, "timer")[0]["seconds"], 0);
    alice.ok(&["send", "bob", "stays"]);
    let rows = bob.sync();
    assert!(of_kind(&rows, "text")[0].get("expires_at").is_none());
}
