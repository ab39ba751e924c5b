//! Message requests end to end with the real `nightjar` binary: a stranger's messages are held
//! back as a request, `requests` lists them, `block` makes the stranger's next send fail with a
//! clear reason, and `accept`/`unblock` work (issue 8, finding 5).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_nightjar");
const PASSWORD: &str = "correct horse battery staple";

/// A `nightjar server` process; killed when dropped.
struct Server {
    child: Child,
    port: u16,
    data: PathBuf,
}

/// What the server prints once it is bound; the real address follows.
const LISTENING: &str = "listening on http://";

impl Server {
    /// Starts a server on a port the kernel picks, so parallel tests never share one.
    fn start(data: &Path) -> Server {
        Self::start_with(data, 0, &[])
    }

    /// Starts a server on `port` (0: any free port) and waits until it has bound it: the
    /// address comes from the server's own start-up line, never from probing the port, which
    /// another test's server might hold.
    fn start_with(data: &Path, port: u16, extra: &[&str]) -> Server {
        let mut child = Command::new(BIN)
            .args(["server", "--data-dir"])
            .arg(data)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (lines, received) = std::sync::mpsc::channel();
        let stderr = BufReader::new(child.stderr.take().unwrap());
        // Keeps draining stderr so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                let _ = lines.send(line);
            }
        });
        let mut seen = String::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        let port = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match received.recv_timeout(left) {
                Ok(line) => {
                    if let Some(at) = line.find(LISTENING) {
                        let addr: SocketAddr = line[at + LISTENING.len()..]
                            .split_whitespace()
                            .next()
                            .and_then(|a| a.parse().ok())
                            .unwrap_or_else(|| panic!("no address in {line:?}"));
                        break addr.port();
                    }
                    seen.push_str(&line);
                    seen.push('\n');
                }
                Err(_) => panic!(
                    "server did not start (exit: {:?})\nstderr:\n{seen}",
                    child.try_wait()
                ),
            }
        };
        Server {
            child,
            port,
            data: data.to_path_buf(),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One device: a profile directory.
struct Device {
    dir: PathBuf,
}

impl Device {
    fn new(root: &Path, name: &str) -> Device {
        Device {
            dir: root.join(name),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .env("NIGHTJAR_PROFILE", &self.dir)
            .env("NIGHTJAR_PASSWORD", PASSWORD)
            .env("NIGHTJAR_KEYRING", "off")
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs a command that must succeed; returns its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            out.status.success(),
            "nightjar {args:?} failed\nstdout: {stdout}\nstderr: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        stdout
    }

    fn sync(&self) -> Vec<Value> {
        self.ok(&["sync", "--json"])
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn texts(&self) -> Vec<String> {
        self.sync()
            .iter()
            .map(|m| m["text"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// Runs a command that must fail; returns its stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !out.status.success(),
            "nightjar {args:?} succeeded\nstdout: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        stderr
    }
}

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
