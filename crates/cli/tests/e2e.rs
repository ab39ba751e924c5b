//! End-to-end tests across real processes: the real `nightjar server` binary on a free port
//! with a temporary data directory, and `nightjar` user commands on temporary profiles.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

fn safety_digits(stdout: &str) -> String {
    let line = stdout
        .lines()
        .find(|l| {
            let groups: Vec<&str> = l.split(' ').collect();
            groups.len() == 12
                && groups
                    .iter()
                    .all(|g| g.len() == 5 && g.bytes().all(|b| b.is_ascii_digit()))
        })
        .unwrap_or_else(|| panic!("no safety number in {stdout}"));
    line.replace(' ', "")
}

fn assert_no_plaintext(dir: &Path, secrets: &[&str]) {
    let mut checked = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            checked += 1;
            for s in secrets {
                assert!(
                    !bytes.windows(s.len()).any(|w| w == s.as_bytes()),
                    "{} contains the plaintext {s:?}",
                    path.display()
                );
            }
        }
    }
    assert!(checked > 0, "no files under {}", dir.display());
}

#[test]
fn messaging_devices_groups_and_safety_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("server-data"));
    let url = server.url();
    let alice = Device::new(tmp.path(), "alice");
    let bob = Device::new(tmp.path(), "bob");
    let carol = Device::new(tmp.path(), "carol");
    alice.ok(&["register", "--server", &url, "alice"]);
    bob.ok(&["register", "--server", &url, "bob"]);

    // alice → bob, then bob replies.
    let sent = alice.ok(&["send", "bob", "hello bob"]);
    assert!(sent.starts_with("sent"), "{sent}");
    // alice is a stranger to bob: her message waits as a request until bob accepts her.
    assert!(bob.sync().is_empty());
    bob.ok(&["accept", "alice"]);
    let got = bob.sync();
    assert_eq!(got.len(), 1, "{got:?}");
    let m = &got[0];
    assert_eq!(m["from"], "alice");
    assert_eq!(m["type"], "text");
    assert_eq!(m["text"], "hello bob");
    assert_eq!(m["conversation"].as_str().unwrap().len(), 32);
    assert_eq!(m["device"].as_str().unwrap().len(), 16);
    assert_eq!(m["id"].as_str().unwrap().len(), 32);
    assert!(m["sent_at"].as_u64().unwrap() > 1_600_000_000_000);
    assert!(bob.sync().is_empty(), "a message is shown once");
    bob.ok(&["send", "alice", "hi alice"]);
    assert_eq!(alice.texts(), ["hi alice"]);
    let conversation = m["conversation"].as_str().unwrap().to_owned();

    // alice adds a second device: login prints the code, the first device approves it.
    let alice2 = Device::new(tmp.path(), "alice2");
    let linked = alice2.link(&alice, &url, "alice");
    assert!(
        linked.approved.contains("approved device"),
        "{}",
        linked.approved
    );
    let rest = linked.rest;
    assert!(rest.iter().any(|l| l.contains("now active")), "{rest:?}");
    let devices = alice.ok(&["devices"]);
    assert_eq!(
        devices.lines().filter(|l| l.contains("active")).count(),
        2,
        "{devices}"
    );
    // alice's first device adds the new one to her conversations; bob's next message reaches both.
    alice.ok(&["sync"]);
    bob.ok(&["send", "alice", "to both of your devices"]);
    let on_second = alice2.sync();
    let texts: Vec<&str> = on_second
        .iter()
        .filter_map(|m| m["text"].as_str())
        .collect();
    assert_eq!(texts, ["to both of your devices"], "{on_second:?}");
    assert_eq!(on_second[0]["conversation"], conversation.as_str());
    assert_eq!(alice.texts(), ["to both of your devices"]);
    // The second device can send too; bob and alice's first device see it.
    alice2.ok(&["send", "bob", "from my second device"]);
    assert_eq!(bob.texts(), ["from my second device"]);
    assert_eq!(alice.texts(), ["from my second device"]);

    // Groups with a third user.
    carol.ok(&["register", "--server", &url, "carol"]);
    let created = alice.ok(&["group", "create", "trip", "bob"]);
    assert!(created.contains("created group trip"), "{created}");
    alice.ok(&["group", "add", "trip", "carol"]);
    alice.ok(&["send", "--group", "trip", "hello trip"]);
    // carol never accepted alice: the group is a request until she does.
    carol.ok(&["accept", "alice"]);
    for d in [&bob, &carol, &alice2] {
        let got = d.sync();
        let m = got
            .iter()
            .find(|m| m["text"] == "hello trip")
            .unwrap_or_else(|| panic!("{got:?}"));
        assert_eq!(m["group"], "trip");
        assert_eq!(m["from"], "alice");
    }
    carol.ok(&["send", "--group", "trip", "carol here"]);
    assert_eq!(bob.texts(), ["carol here"]);
    alice.ok(&["group", "remove", "trip", "carol"]);
    bob.ok(&["send", "--group", "trip", "carol is gone"]);
    assert_eq!(alice.texts(), ["carol here", "carol is gone"]);
    assert!(carol.texts().is_empty());
    let refused = carol.run(&["send", "--group", "trip", "let me back"]);
    assert!(!refused.status.success());

    // Safety numbers agree and come with a QR code.
    let a = alice.ok(&["safety-number", "bob"]);
    let b = bob.ok(&["safety-number", "alice"]);
    assert_eq!(safety_digits(&a), safety_digits(&b));
    assert_eq!(safety_digits(&a).len(), 60);
    assert!(a.contains('█') || a.contains('▀') || a.contains('▄'), "{a}");

    let status = alice.ok(&["status"]);
    assert!(status.contains("username:       alice"), "{status}");
    assert!(status.contains("key file"), "{status}");
    assert!(status.contains("outbox:         0"), "{status}");

    drop(server);
    assert_no_plaintext(
        &tmp.path().join("server-data"),
        &[
            "hello bob",
            "hi alice",
            "to both of your devices",
            "from my second device",
            "hello trip",
            "carol here",
            "carol is gone",
        ],
    );
    // Profiles are encrypted at rest too.
    assert_no_plaintext(&alice.dir, &["hello bob", "hi alice", "hello trip"]);
}

#[test]
fn wrong_password_is_a_one_line_error() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"));
    let alice = Device::new(tmp.path(), "alice");
    alice.ok(&["register", "--server", &server.url(), "alice"]);
    let other = Device::new(tmp.path(), "other");
    let out = other
        .command(&["login", "--server", &server.url(), "alice"])
        .env("NIGHTJAR_PASSWORD", "not the password")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains("password"), "{stderr}");
    // Nothing was left behind: the right password still works on that profile.
    other.ok(&["login", "--server", &server.url(), "alice", "--no-wait"]);

    let missing = Device::new(tmp.path(), "nobody").run(&["send", "alice", "x"]);
    assert!(!missing.status.success());
    assert_eq!(
        String::from_utf8(missing.stderr).unwrap().lines().count(),
        1
    );
}

#[test]
fn server_takes_a_database_url() {
    let tmp = tempfile::tempdir().unwrap();
    let refused = Command::new(BIN)
        .args(["server", "--listen", "127.0.0.1:0"])
        .args(["--database-url", "mysql://db/nightjar"])
        .env_remove("NIGHTJAR_DATABASE_URL")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8(refused.stderr).unwrap();
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: ") && last.contains("database URL"),
        "{stderr}"
    );

    // The database where the URL says, not in the data directory.
    let db = tmp.path().join("elsewhere.db");
    let url = format!("sqlite://{}", db.display());
    let data = tmp.path().join("data");
    let server = Server::start_with(&data, 0, &["--database-url", &url]);
    let alice = Device::new(tmp.path(), "alice");
    alice.ok(&["register", "--server", &server.url(), "alice"]);
    assert!(db.exists());
    assert!(!data.join("nightjar.db").exists());
}

#[test]
fn offline_send_waits_in_the_outbox_and_is_delivered_once() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut server = Server::start(&data);
    let url = server.url();
    let alice = Device::new(tmp.path(), "alice");
    let bob = Device::new(tmp.path(), "bob");
    alice.ok(&["register", "--server", &url, "alice"]);
    bob.ok(&["register", "--server", &url, "bob"]);
    alice.ok(&["send", "bob", "before the outage"]);
    bob.ok(&["accept", "alice"]);
    assert_eq!(bob.texts(), ["before the outage"]);

    server.stop();
    let queued = alice.ok(&["send", "bob", "written while offline"]);
    assert!(queued.starts_with("queued"), "{queued}");
    assert!(alice.ok(&["status"]).contains("outbox:         1"));
    assert!(
        !alice.run(&["sync"]).status.success(),
        "sync reports the outage"
    );

    let _server = Server::start_with(&server.data, server.port, &[]);
    alice.ok(&["sync"]);
    assert!(alice.ok(&["status"]).contains("outbox:         0"));
    assert_eq!(bob.texts(), ["written while offline"]);
    alice.ok(&["sync"]);
    assert!(bob.texts().is_empty(), "no duplicate");
}

/// `nightjar group leave`: the account is out of the group, the others go on without it, and
/// nothing sent afterwards reaches it.
#[test]
fn leaving_a_group_from_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("server"));
    let alice = Device::new(tmp.path(), "alice");
    let bob = Device::new(tmp.path(), "bob");
    let carol = Device::new(tmp.path(), "carol");
    for (d, name) in [(&alice, "alice"), (&bob, "bob"), (&carol, "carol")] {
        d.ok(&["register", "--server", &server.url(), name]);
    }
    bob.ok(&["accept", "alice"]);
    carol.ok(&["accept", "alice"]);
    alice.ok(&["group", "create", "club", "bob", "carol"]);
    alice.ok(&["send", "--group", "club", "welcome"]);
    assert_eq!(bob.texts(), ["welcome"]);
    assert_eq!(carol.texts(), ["welcome"]);

    let out = bob.ok(&["group", "leave", "club"]);
    assert!(out.starts_with("left club"), "{out}");
    // The others' next sync commits bob's leave request.
    alice.ok(&["sync"]);
    carol.ok(&["sync"]);
    alice.ok(&["send", "--group", "club", "after bob left"]);
    assert_eq!(carol.texts(), ["after bob left"]);
    assert!(!bob.texts().contains(&"after bob left".to_owned()));
    let err = bob.fails(&["send", "--group", "club", "still here?"]);
    assert!(
        err.contains("no longer a member") || err.contains("no group"),
        "{err}"
    );
}
