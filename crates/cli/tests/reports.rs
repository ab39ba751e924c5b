//! Reporting a message across real processes (docs/reporting.md): alice sends bob a message,
//! `nightjar report ID --reason spam` on bob's device reveals it to the operator with its
//! franking proof, the server verifies it and the moderators read it with `nightjar moderation
//! reports`; a report hand-crafted from bob's own profile with a modified text is refused,
//! and `nightjar report USERNAME` still reports an account.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use nightjar_api::{ErrorCode, MessageReportRequest};
use nightjar_client::api::Api;
use nightjar_client::store::{DB_FILE, Store};
use nightjar_core::content::{Content, Message};
use serde_json::Value;

const TOKEN: &str = "cli-moderator-token-0123456789";

/// What `device` would send to report message `id` (read from its profile, as the client
/// does), and its session token.
fn report_from_profile(device: &Device, id: &str) -> (MessageReportRequest, String) {
    let (key, _) = nightjar_client::keys::load_or_create(&device.dir, false).unwrap();
    let store = Store::open(&device.dir.join(DB_FILE), &key).unwrap();
    let message = store
        .find_message(id)
        .unwrap()
        .expect("the message is stored");
    let token = store.meta("token").unwrap().expect("a session");
    let request = message
        .report_request(Some("hand-crafted"))
        .expect("a reportable message");
    (request, token)
}

/// Posts `request` with `token`; the refusal's code.
fn refusal(url: &str, token: &str, request: &MessageReportRequest) -> ErrorCode {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut api = Api::new(url).unwrap();
        api.set_token(Some(token.to_owned()));
        match api.report_message(request).await {
            Err(nightjar_client::Error::Api(e)) => e.code,
            other => panic!("a forged report was not refused: {other:?}"),
        }
    })
}

fn moderation(device: &Device, url: &str, token_file: &str, json: bool) -> String {
    let mut args = vec![
        "moderation",
        "reports",
        "--server",
        url,
        "--token-file",
        token_file,
    ];
    if json {
        args.push("--json");
    }
    device.ok(&args)
}

#[test]
fn a_reported_message_reaches_the_moderators_and_a_forged_report_is_refused() {
    let secrets = tempfile::tempdir().unwrap();
    let token_file = secrets.path().join("moderator-token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let token_file = token_file.display().to_string();
    let Pair {
        tmp: _tmp,
        server,
        alice,
        bob,
        root,
    } = Pair::new(&["--moderator-token-file", &token_file]);
    let url = server.url();

    let spam = sent_id(&alice.ok(&["send", "bob", "buy cheap pills at pills.example"]));
    let kept = sent_id(&alice.ok(&["send", "bob", "see you tomorrow"]));
    let out = bob.ok(&["sync", "--json"]);
    // What reporting needs is kept, but never printed.
    assert!(!out.contains("franking"), "{out}");
    let rows: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(rows.iter().any(|r| r["id"] == spam.as_str()), "{rows:?}");

    // A report hand-crafted from bob's profile with another text: refused, nothing stored.
    let (honest, token) = report_from_profile(&bob, &spam);
    let mut forged = honest.clone();
    let mut message = Message::decode(&forged.message.0).unwrap();
    message.content = Content::Text {
        body: "alice threatens you".into(),
    };
    forged.message = nightjar_api::B64(message.encode());
    assert_eq!(
        refusal(&url, &token, &forged),
        ErrorCode::FrankingCommitmentInvalid
    );
    // Another message's tag on it, or its whole stamp: refused too.
    let (other, _) = report_from_profile(&bob, &kept);
    let mut retagged = honest.clone();
    retagged.stamp.tag = other.stamp.tag.clone();
    assert_eq!(
        refusal(&url, &token, &retagged),
        ErrorCode::FrankingTagInvalid
    );
    let mut restamped = honest.clone();
    restamped.stamp = other.stamp;
    assert_eq!(
        refusal(&url, &token, &restamped),
        ErrorCode::FrankingCommitmentInvalid
    );
    assert!(moderation(&bob, &url, &token_file, false).contains("no reports"));

    // The real report.
    let reported = bob.ok(&["report", &spam, "--reason", "spam"]);
    assert!(
        reported.contains(&format!("reported message {spam} from alice")),
        "{reported}"
    );
    // One's own message is nothing to report.
    let own = alice.fails(&["report", &spam]);
    assert!(own.contains("from this account"), "{own}");

    // The moderators see it, with the content bob revealed.
    let listed = moderation(&alice, &url, &token_file, true);
    let reports: Vec<Value> = listed
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(reports.len(), 1, "{listed}");
    let r = &reports[0];
    assert_eq!(r["reporter"], "bob");
    assert_eq!(r["sender"]["username"], "alice");
    assert_eq!(r["message_id"], spam.as_str());
    assert_eq!(r["content_type"], "text");
    assert_eq!(r["text"], "buy cheap pills at pills.example");
    assert_eq!(r["reason"], "spam");
    let people = moderation(&alice, &url, &token_file, false);
    assert!(
        people.contains("bob reported alice/") && people.contains("buy cheap pills"),
        "{people}"
    );
    // A wrong token reads nothing.
    let wrong = root.join("wrong-token");
    std::fs::write(&wrong, "not-the-moderator-token-at-all").unwrap();
    let refused = bob.fails(&[
        "moderation",
        "reports",
        "--server",
        &url,
        "--token-file",
        &wrong.display().to_string(),
    ]);
    assert!(refused.contains("moderator token"), "{refused}");
    let id = r["id"].as_u64().unwrap().to_string();
    assert!(
        alice
            .ok(&[
                "moderation",
                "reviewed",
                &id,
                "--server",
                &url,
                "--token-file",
                &token_file
            ])
            .contains("marked reviewed")
    );
    assert!(moderation(&alice, &url, &token_file, false).contains("[reviewed]"));

    // `report USERNAME` still reports (and blocks) an account, even one whose name is 32 hex
    // digits like a message id: it names no message in bob's history.
    let hex_name = "0123456789abcdef0123456789abcdef";
    let hex = Device::new(&root, "hex");
    hex.ok(&["register", "--server", &url, hex_name]);
    let out = bob.ok(&["report", hex_name, "--reason", "impersonation"]);
    assert!(
        out.contains(&format!("reported and blocked {hex_name}")),
        "{out}"
    );
    let out = bob.ok(&["report", "alice"]);
    assert!(out.contains("reported and blocked alice"), "{out}");
    // Account reports are not message reports: the moderators' list is unchanged.
    let listed = moderation(&alice, &url, &token_file, true);
    assert_eq!(listed.lines().count(), 1, "{listed}");
}
