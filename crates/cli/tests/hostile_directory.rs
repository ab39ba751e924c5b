//! `nightjar audit` against an honest and a malicious key-transparency directory.
//!
//! The malicious server is the real server behind the testkit's proxy, with the operator's
//! powers: it holds the directory's root key (read from the server's key file) and signs
//! whatever roots it likes. What it cannot do is make a root that does not extend the one
//! before look append-only, or take back an epoch an auditor has already seen.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use ed25519_dalek::{Signer as _, SigningKey};
use nightjar_api::B64;
use nightjar_testkit::{Mitm, Verdict};
use serde_json::json;

/// The root-signing key from the server's directory key file, as the operator has it.
fn operator_root_key(data: &Path) -> SigningKey {
    let text = std::fs::read_to_string(data.join("directory.key")).unwrap();
    let bytes = B64::decode(text.trim()).unwrap();
    SigningKey::from_bytes(&bytes[32..64].try_into().unwrap())
}

fn sign(key: &SigningKey, epoch: u64, root: &[u8; 32]) -> String {
    let mut message = b"nightjar directory root v1\0".to_vec();
    message.extend_from_slice(&epoch.to_be_bytes());
    message.extend_from_slice(root);
    B64::encode(&key.sign(&message).to_bytes())
}

/// A server publishing every 100 ms, with three accounts registered one after another (so
/// the directory has several epochs).
fn server_with_epochs(tmp: &Path) -> Server {
    let server = Server::start_with(&tmp.join("server-data"), 0, &["--kt-interval-ms", "100"]);
    for name in ["alice", "bob", "carol"] {
        Device::new(tmp, name).ok(&["register", "--server", &server.url(), name]);
        std::thread::sleep(Duration::from_millis(250));
    }
    server
}

fn audit(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(BIN)
        .arg("audit")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(
        stdout.lines().count(),
        1,
        "one verdict line: {stdout}{stderr}"
    );
    (out.status.success(), stdout)
}

/// The newest epoch an honest audit reaches.
fn latest_epoch(url: &str) -> u64 {
    let (ok, line) = audit(&["--server", url]);
    assert!(ok, "{line}");
    let to = line.split(" to ").nth(1).unwrap();
    to.split(' ').next().unwrap().parse().unwrap()
}

#[test]
fn an_honest_directory_passes_from_the_first_epoch_and_from_a_later_one() {
    let tmp = tempfile::tempdir().unwrap();
    let server = server_with_epochs(tmp.path());
    let url = server.url();
    let (ok, line) = audit(&["--server", &url]);
    assert!(ok, "{line}");
    assert!(line.starts_with("ok: "), "{line}");
    assert!(line.contains("from epoch 0 to "), "{line}");
    let latest = latest_epoch(&url);
    assert!(latest >= 2, "three registrations made {latest} epochs");
    assert!(
        line.contains(&format!("({latest} proofs verified")),
        "{line}"
    );

    let (ok, line) = audit(&["--server", &url, "--from", "1"]);
    assert!(ok, "{line}");
    assert!(
        line.contains(&format!("from epoch 1 to {latest}")),
        "{line}"
    );

    // The key it printed pins the directory for the next audit.
    let key = line
        .split("root key ")
        .nth(1)
        .unwrap()
        .trim_end_matches(')')
        .trim();
    let key = key.trim_end_matches(')');
    let (ok, line) = audit(&["--server", &url, "--key", key]);
    assert!(ok, "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_that_does_not_extend_the_epoch_before_fails_the_audit() {
    let tmp = tempfile::tempdir().unwrap();
    let server = tokio::task::block_in_place(|| server_with_epochs(tmp.path()));
    let latest = tokio::task::block_in_place(|| latest_epoch(&server.url()));
    let operator = operator_root_key(&server.data);
    let mitm = Mitm::start(&server.url()).await;
    // The operator rewrites the newest epoch (say, to drop or change an entry) and signs the
    // new root with the real key: every signature checks out.
    let forged = [0x42u8; 32];
    let signature = sign(&operator, latest, &forged);
    mitm.on_response(move |request, response| {
        let rewrite = |root: &mut serde_json::Value| {
            if root["epoch"] == json!(latest) {
                root["root"] = json!(B64::encode(&forged));
                root["signature"] = json!(signature.clone());
            }
        };
        if let Some(mut body) = response.json() {
            if request.path == "/v1/kt/epochs/latest" {
                rewrite(&mut body);
            } else if request.path == format!("/v1/kt/epochs/{latest}") {
                rewrite(&mut body["root"]);
            }
            response.set_json(&body);
        }
        Verdict::Forward
    });
    let (ok, line) = tokio::task::block_in_place(|| audit(&["--server", &mitm.base]));
    assert!(!ok, "{line}");
    assert!(
        line.starts_with(&format!(
            "FAILED: {} directory: epoch {latest}: not append-only",
            mitm.base
        )),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roots_signed_by_another_key_fail_the_audit() {
    let tmp = tempfile::tempdir().unwrap();
    let server = tokio::task::block_in_place(|| server_with_epochs(tmp.path()));
    let (_, honest) = tokio::task::block_in_place(|| audit(&["--server", &server.url()]));
    let pinned = honest
        .split("root key ")
        .nth(1)
        .unwrap()
        .trim()
        .trim_end_matches(')')
        .to_owned();
    let mitm = Mitm::start(&server.url()).await;
    // A server that swapped its directory key (and re-signed everything with it).
    let other = SigningKey::from_bytes(&[9; 32]);
    let other_public = B64::encode(other.verifying_key().as_bytes());
    mitm.on_response(move |request, response| {
        if let Some(mut body) = response.json() {
            if request.path == "/v1/kt/keys" {
                body["root_key"] = json!(other_public.clone());
            }
            let root = if request.path == "/v1/kt/epochs/latest" {
                Some(&mut body)
            } else if request.path.starts_with("/v1/kt/epochs/") {
                Some(&mut body["root"])
            } else {
                None
            };
            if let Some(root) = root {
                let epoch = root["epoch"].as_u64().unwrap();
                let bytes: [u8; 32] = B64::decode(root["root"].as_str().unwrap())
                    .unwrap()
                    .try_into()
                    .unwrap();
                root["signature"] = json!(sign(&other, epoch, &bytes));
            }
            response.set_json(&body);
        }
        Verdict::Forward
    });
    // Unpinned, the auditor takes the key it is shown (and prints it) ...
    let (ok, line) = tokio::task::block_in_place(|| audit(&["--server", &mitm.base]));
    assert!(ok, "{line}");
    assert!(!line.contains(&pinned), "{line}");
    // ... pinned, the swap is the finding.
    let (ok, line) =
        tokio::task::block_in_place(|| audit(&["--server", &mitm.base, "--key", &pinned]));
    assert!(!ok, "{line}");
    assert!(line.contains("root key is"), "{line}");
    // A base64url key may start with '-': it is still the value of --key, never a flag.
    let out = std::process::Command::new(BIN)
        .args(["audit", "--server", &mitm.base, "--key", "-Yabc"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--key must be a 32-byte key"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_catches_a_directory_that_goes_back_an_epoch() {
    let tmp = tempfile::tempdir().unwrap();
    let server = tokio::task::block_in_place(|| server_with_epochs(tmp.path()));
    let mitm = Mitm::start(&server.url()).await;
    let mut watcher = std::process::Command::new(BIN)
        .args(["audit", "--watch", "--server", &mitm.base])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watcher.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(first.starts_with("ok: "), "{first}");
    // The operator restores yesterday's backup for this auditor: epoch 1 is the newest now,
    // correctly signed and genuinely the directory's epoch 1.
    mitm.on_request(|request| {
        if request.path == "/v1/kt/epochs/latest" {
            request.path = "/v1/kt/epochs/1".into();
            request.set_header("x-rolled-back", "1");
        }
        Verdict::Forward
    });
    mitm.on_response(|request, response| {
        if request.header("x-rolled-back").is_some()
            && let Some(body) = response.json()
        {
            response.set_json(&body["root"]);
        }
        Verdict::Forward
    });
    // Never hang the suite on a watcher that says nothing.
    let pid = watcher.id().to_string();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(30));
        let _ = std::process::Command::new("kill").arg(&pid).status();
    });
    let started = Instant::now();
    let verdict = tokio::task::block_in_place(|| lines.next().unwrap().unwrap());
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the watcher said nothing"
    );
    assert!(verdict.starts_with("FAILED: "), "{verdict}");
    assert!(verdict.contains("went back"), "{verdict}");
    let status = tokio::task::block_in_place(|| watcher.wait().unwrap());
    assert!(!status.success());
}
