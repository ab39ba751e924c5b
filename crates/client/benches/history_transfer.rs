//! Time to hand 10,000 messages of history to a new device: an in-process server on
//! loopback, an account whose profile holds the messages, and a new device of it approved.
//! Each run measures the approving side (the archive built, encrypted and uploaded, the
//! bundle sealed and posted) and the new side (the link opened, the archive downloaded,
//! verified, decrypted and stored), and prints the median of the runs.
//!
//! `cargo bench -p nightjar-client --bench history_transfer [-- MESSAGES RUNS]`

#![allow(clippy::unwrap_used, clippy::panic)]

use std::time::{Duration, Instant};

use nightjar_client::{Client, ClientOptions, LoginOutcome, Password};
use nightjar_core::{EngineConfig, Suite};
use nightjar_machine::rows::StoredMessage;
use nightjar_server::ServerConfig;

fn options() -> ClientOptions {
    ClientOptions {
        try_keyring: false,
        engine: EngineConfig {
            suite: Suite::Classic,
            ..EngineConfig::default()
        },
    }
}

/// A sentence of about the length of a chat message, different for each `i`.
fn text(i: usize) -> String {
    format!(
        "message {i}: see you at the station at {}:{:02}, bring the tickets and the umbrella",
        i % 24,
        i % 60
    )
}

struct Run {
    approve: Duration,
    import: Duration,
}

async fn run(messages: usize) -> Run {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let server = nightjar_server::start(ServerConfig::new(
        root.join("server"),
        "127.0.0.1:0".parse().unwrap(),
    ))
    .await
    .unwrap();
    let url = format!("http://{}", server.local_addr());
    let password = Password::new("pw".into());
    let mut alice = Client::open(&root.join("alice"), options()).unwrap();
    alice.register(&url, "alice", &password).await.unwrap();
    let mut bob = Client::open(&root.join("bob"), options()).unwrap();
    bob.register(&url, "bob", &password).await.unwrap();
    let sent = alice.send_direct("bob", "hello").await.unwrap();
    let device = alice.device_id().unwrap();
    let store = alice.store();
    store.begin().unwrap();
    for i in 0..messages {
        let outgoing = i % 2 == 0;
        let row = StoredMessage {
            conversation: sent.conversation.clone(),
            id: format!("{:032x}", i + 1),
            from: if outgoing { "alice" } else { "bob" }.into(),
            device: device.clone(),
            sent_at: 1_900_000_000_000 + i as u64,
            kind: "text".into(),
            text: Some(text(i)),
            outgoing,
            detail: Default::default(),
            expires_after_secs: None,
            expires_at: None,
        };
        store.insert_message(&row, row.sent_at, true).unwrap();
    }
    store.commit().unwrap();
    // Old enough for no cutoff to drop them: the messages claim a time in 2030.
    alice.set_history_days(3650).unwrap();

    let mut alice2 = Client::open(&root.join("alice2"), options()).unwrap();
    let LoginOutcome::Pending { code, .. } = alice2.login(&url, "alice", &password).await.unwrap()
    else {
        panic!("the new device was not pending");
    };
    let started = Instant::now();
    alice.approve(&code, &mut |_| {}).await.unwrap();
    let approve = started.elapsed();
    let started = Instant::now();
    assert!(alice2.check_link().await.unwrap());
    let imported = alice2.import_history(&mut |_| {}).await.unwrap().unwrap();
    let import = started.elapsed();
    assert_eq!(imported.messages, messages + 1);
    drop(server);
    Run { approve, import }
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let messages = args.first().copied().unwrap_or(10_000);
    let runs = args.get(1).copied().unwrap_or(5);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let results: Vec<Run> = (0..runs).map(|_| runtime.block_on(run(messages))).collect();
    let approve = median(results.iter().map(|r| r.approve).collect());
    let import = median(results.iter().map(|r| r.import).collect());
    println!(
        "history of {messages} messages, median of {runs} runs: approve (archive, encrypt, upload, seal) {:.0} ms, new device (download, verify, decrypt, store) {:.0} ms, total {:.0} ms",
        approve.as_secs_f64() * 1e3,
        import.as_secs_f64() * 1e3,
        (approve + import).as_secs_f64() * 1e3
    );
}
