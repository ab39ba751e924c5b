//! The API document must match the server: schemathesis generates requests from
//! `/v1/openapi.json` (valid ones and deliberately invalid ones) against a real server with its
//! default limits, throttled below them, authenticated as a real device, and fails on any server
//! error or any answer the document does not allow (status codes, bodies, content types,
//! invalid data accepted, valid data refused).
//!
//! Runs when `NIGHTJAR_SCHEMATHESIS` names the `st` executable (scripts/test.sh installs
//! schemathesis into a virtualenv under /var/tmp and sets it); otherwise says it was skipped.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[allow(unused_imports)]
mod common;

use common::*;
use nightjar_server::{Limits, TurnConfig};

/// The variable naming schemathesis's `st` executable.
const SCHEMATHESIS_ENV: &str = "NIGHTJAR_SCHEMATHESIS";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_matches_the_server() {
    let Some(st) = configured(SCHEMATHESIS_ENV, "the_document_matches_the_server") else {
        return;
    };
    // The server's own limits, so the document is checked against what production answers;
    // schemathesis is throttled below the per-device request rate. A TURN relay is configured
    // (no relay needs to run: the server only mints credentials for it), and the SFU runs (the
    // default), so group-call joins are checked too.
    let secrets = tempfile::tempdir().unwrap();
    let secret_file = secrets.path().join("turn-secret");
    std::fs::write(&secret_file, "conformance-secret\n").unwrap();
    // Moderation is on too; its routes take the moderator token, not a session: they get a
    // run of their own with it.
    let moderator_token = "conformance-moderator-token-0123";
    let token_file = secrets.path().join("moderator-token");
    std::fs::write(&token_file, moderator_token).unwrap();
    let server = TestServer::with_config(Backend::Sqlite, Limits::default(), move |config| {
        config.turn = Some(TurnConfig::new(
            vec!["turn:127.0.0.1:3478?transport=udp".into()],
            secret_file.clone(),
        ));
        config.moderator_token_file = Some(token_file.clone());
    })
    .await;
    let alice = register(&server, "alice", 5).await;
    let bob = register(&server, "bob", 5).await;
    // Logging out revokes the token every other operation needs: it gets a run of its own,
    // with a token of its own, after the others.
    let runs = [
        (
            "all-but-logout",
            alice.token.clone(),
            vec![
                "--exclude-path",
                "/v1/logout",
                "--exclude-path-regex",
                "^/v1/moderation/",
            ],
        ),
        (
            "moderation",
            moderator_token.to_owned(),
            vec!["--include-path-regex", "^/v1/moderation/"],
        ),
        (
            "logout",
            bob.token.clone(),
            vec!["--include-path", "/v1/logout"],
        ),
    ];
    for (name, token, filter) in runs {
        let output = schemathesis(&st, &server, &token, &filter, name).await;
        let stdout = String::from_utf8_lossy(&output.stdout);
        if let Ok(dir) = std::env::var("NIGHTJAR_SCHEMATHESIS_LOG") {
            std::fs::write(format!("{dir}.{name}"), stdout.as_bytes()).unwrap();
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "schemathesis ({name}) found problems:\n{stdout}\n{stderr}"
        );
        // A run whose requests were all refused as unauthenticated proves nothing.
        assert!(
            !stdout.contains("Authentication failed"),
            "schemathesis ({name}) could not authenticate:\n{stdout}"
        );
    }
}

async fn schemathesis(
    st: &str,
    server: &TestServer,
    token: &str,
    filter: &[&str],
    name: &str,
) -> std::process::Output {
    let mut command = std::process::Command::new(st);
    command
        .arg("run")
        .arg(format!("{}/v1/openapi.json", server.base))
        .args(["--url", &server.base])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        // Use the real token, never generated ones.
        .args(["--generation-with-security-parameters", "false"])
        .args(["--checks", "all"])
        // `positive_data_acceptance` expects schema-valid bodies to succeed, but no schema
        // can say "a key package signed by this device" or "an MLS message of this epoch":
        // such bodies are refused with 400, which the document lists. `use_after_free` and
        // `ensure_resource_availability` need links between operations that the document
        // does not declare.
        .args([
            "--exclude-checks",
            "positive_data_acceptance,use_after_free,ensure_resource_availability",
        ])
        .args(filter)
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--max-examples", "25"])
        .args(["--rate-limit", "15/s"])
        .args(["--workers", "1"])
        .args(["--generation-deterministic"])
        .args(["--suppress-health-check", "all"])
        .args([
            "--report-dir",
            &server.dir.path().join(name).display().to_string(),
        ])
        .env("NO_COLOR", "1");
    tokio::task::spawn_blocking(move || command.output().expect("schemathesis runs"))
        .await
        .unwrap()
}
