//! TURN credentials for calls, end to end: `GET /v1/calls/turn` hands an authenticated device
//! coturn `use-auth-secret` credentials that name nobody and check out against the shared
//! secret; a server without a relay says so with a typed error; and, when a coturn is running
//! (`NIGHTJAR_TEST_TURN_URL` and `NIGHTJAR_TEST_TURN_SECRET_FILE`, set by scripts/coturn.sh),
//! the credentials open a real relay allocation through coturn's own `turnutils_uclient`,
//! while a wrong or expired one is refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[allow(unused_imports)]
mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use common::*;
use hmac::{Hmac, Mac as _};
use nightjar_api::TurnCredentials;
use nightjar_server::{ServerConfig, ServerError, TurnConfig};
use reqwest::StatusCode;
use sha1::Sha1;

/// The variable naming the test relay's URL, e.g. `turn:127.0.0.1:3478`.
const TURN_URL_ENV: &str = "NIGHTJAR_TEST_TURN_URL";
/// The variable naming the file with the test relay's `static-auth-secret`.
const TURN_SECRET_ENV: &str = "NIGHTJAR_TEST_TURN_SECRET_FILE";

const URLS: [&str; 2] = [
    "turn:127.0.0.1:3478?transport=udp",
    "turn:127.0.0.1:3478?transport=tcp",
];
const SECRET: &str = "test-relay-secret-0123456789";

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `base64(HMAC-SHA1(secret, username))`, computed here independently of the server.
fn hmac_credential(secret: &[u8], username: &str) -> String {
    let mut mac = <Hmac<Sha1>>::new_from_slice(secret).unwrap();
    mac.update(username.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

/// A server whose relay is `urls` with the secret in `secret_file`.
async fn server_with_turn(urls: Vec<String>, secret_file: PathBuf) -> TestServer {
    TestServer::with_config(Backend::Sqlite, test_limits(), move |config| {
        config.turn = Some(TurnConfig::new(urls.clone(), secret_file.clone()));
    })
    .await
}

fn write_secret(dir: &Path, secret: &str) -> PathBuf {
    let path = dir.join("turn-secret");
    std::fs::write(&path, format!("{secret}\n")).unwrap();
    path
}

async fn fetch(server: &TestServer, token: &str) -> TurnCredentials {
    let response = server
        .http
        .get(server.url("/v1/calls/turn"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "no-store");
    response.json().await.unwrap()
}

#[tokio::test]
async fn credentials_need_a_session() {
    let secrets = tempfile::tempdir().unwrap();
    let file = write_secret(secrets.path(), SECRET);
    let server = server_with_turn(URLS.map(String::from).to_vec(), file).await;
    let (status, body) = server.get("/v1/calls/turn", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(code(&body), "unauthorized");
    let (status, body) = server.get("/v1/calls/turn", Some("not-a-token")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(code(&body), "unauthorized");
}

#[tokio::test]
async fn without_a_relay_the_answer_is_not_configured() {
    let server = TestServer::start(Backend::Sqlite).await;
    let alice = register(&server, "alice", 1).await;
    let (status, body) = server.get("/v1/calls/turn", alice.token()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(code(&body), "not_configured");
}

#[tokio::test]
async fn a_device_gets_fresh_credentials_that_name_nobody() {
    let secrets = tempfile::tempdir().unwrap();
    let file = write_secret(secrets.path(), SECRET);
    let server = server_with_turn(URLS.map(String::from).to_vec(), file).await;
    let alice = register(&server, "alice", 1).await;

    let before = now_secs();
    let first = fetch(&server, &alice.token).await;
    let after = now_secs();
    assert_eq!(first.urls, URLS);
    assert_eq!(first.ttl_secs, TurnConfig::DEFAULT_TTL.as_secs());
    assert!(
        (before + first.ttl_secs..=after + first.ttl_secs).contains(&first.expires_at),
        "{first:?}"
    );

    // `<expiry>:<random id>`, and nothing else: no account name, no device id.
    let (expiry, id) = first.username.split_once(':').unwrap();
    assert_eq!(expiry.parse::<u64>().unwrap(), first.expires_at);
    assert_eq!(id.len(), 22, "{}", first.username);
    assert!(
        id.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "{}",
        first.username
    );
    assert!(!first.username.contains("alice"));
    assert!(!first.username.contains(&alice.device_id()));

    // The credential is coturn's: base64(HMAC-SHA1(secret, username)).
    assert_eq!(
        first.credential,
        hmac_credential(SECRET.as_bytes(), &first.username)
    );
    assert_ne!(
        first.credential,
        hmac_credential(b"another secret", &first.username)
    );

    // Every request gets a different username (and so a different credential).
    let second = fetch(&server, &alice.token).await;
    assert_ne!(second.username, first.username);
    assert_ne!(second.credential, first.credential);
    assert_eq!(
        second.credential,
        hmac_credential(SECRET.as_bytes(), &second.username)
    );
    // The credential never shows in Debug output.
    assert!(!format!("{second:?}").contains(&second.credential));
}

#[tokio::test]
async fn a_bad_relay_setting_stops_the_server_from_starting() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let cases = [
        TurnConfig::new(vec![URLS[0].into()], dir.path().join("missing")),
        TurnConfig::new(vec![URLS[0].into()], empty.clone()),
        TurnConfig::new(Vec::new(), write_secret(dir.path(), SECRET)),
        TurnConfig::new(vec!["https://relay".into()], empty),
    ];
    for turn in cases {
        let config = ServerConfig {
            turn: Some(turn.clone()),
            ..ServerConfig::new(dir.path().join("data"), "127.0.0.1:0".parse().unwrap())
        };
        match nightjar_server::start(config).await {
            Err(ServerError::Config(message)) => {
                assert!(
                    message.contains("TURN") || message.contains("turn"),
                    "{message}"
                );
                assert!(!message.contains(SECRET), "{message}");
            }
            Err(other) => panic!("{turn:?}: {other}"),
            Ok(_) => panic!("{turn:?}: started"),
        }
    }
}

/// What one `turnutils_uclient` run showed.
struct Relayed {
    succeeded: bool,
    output: String,
}

/// Runs coturn's test client against the relay at `url` with these credentials: two clients
/// each allocate a relayed address and send each other a few packets through the relay.
async fn uclient(url: &str, username: &str, credential: &str) -> Relayed {
    let rest = url.split_once(':').unwrap().1;
    let hostport = rest.split('?').next().unwrap();
    let (host, port) = hostport.rsplit_once(':').unwrap_or((hostport, "3478"));
    let mut command = std::process::Command::new("turnutils_uclient");
    command
        .args(["-v", "-y", "-c", "-n", "2"])
        .args(["-u", username, "-w", credential, "-p", port, host]);
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::task::spawn_blocking(move || command.output()),
    )
    .await
    .expect("turnutils_uclient finishes within 60 s")
    .unwrap()
    .expect("turnutils_uclient runs (it ships in Debian's coturn package)");
    Relayed {
        succeeded: output.status.success(),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    }
}

/// The packets the clients received through the relay, from the client's closing summary
/// (`start_mclient: tot_send_msgs=4, tot_recv_msgs=4`).
fn received_through_relay(output: &str) -> u64 {
    output
        .lines()
        .filter(|line| !line.contains("msz="))
        .filter_map(|line| line.split_once("tot_recv_msgs=").map(|(_, n)| n))
        .filter_map(|n| n.trim().parse::<u64>().ok())
        .next_back()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_open_a_relay_on_a_real_coturn() {
    let test = "credentials_open_a_relay_on_a_real_coturn";
    let (Some(url), Some(secret_file)) = (
        configured(TURN_URL_ENV, test),
        configured(TURN_SECRET_ENV, test),
    ) else {
        return;
    };
    let server = server_with_turn(vec![url.clone()], PathBuf::from(&secret_file)).await;
    let alice = register(&server, "alice", 1).await;
    let credentials = fetch(&server, &alice.token).await;

    // The server's credentials allocate relayed addresses, and packets cross the relay.
    let relayed = uclient(&url, &credentials.username, &credentials.credential).await;
    let output = &relayed.output;
    assert!(
        relayed.succeeded,
        "coturn refused the credentials:\n{output}"
    );
    assert!(output.contains("Received relay addr: "), "{output}");
    assert!(received_through_relay(output) > 0, "{output}");

    // A tampered credential and an expired one (made with the right secret) are refused:
    // coturn answers every Allocate with 401 and a fresh nonce, which the client takes as a
    // new challenge until it gives up.
    let mut tampered = credentials.credential.clone().into_bytes();
    tampered[0] = if tampered[0] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let secret = std::fs::read_to_string(&secret_file).unwrap();
    let expired = format!("{}:AAAAAAAAAAAAAAAAAAAAAA", now_secs() - 60);
    let expired_credential = hmac_credential(secret.trim().as_bytes(), &expired);
    for (what, username, credential) in [
        ("tampered", credentials.username.as_str(), tampered.as_str()),
        ("expired", expired.as_str(), expired_credential.as_str()),
    ] {
        let refused = uclient(&url, username, credential).await;
        let output = &refused.output;
        assert!(!refused.succeeded, "{what}: coturn allocated:\n{output}");
        assert!(
            output.contains("allocate response received"),
            "{what}: {output}"
        );
        assert!(
            output.contains("Cannot complete Allocation"),
            "{what}: {output}"
        );
        assert!(!output.contains("Received relay addr"), "{what}: {output}");
    }
}
