//! Several server nodes on one PostgreSQL database, told about each other's mail over NATS:
//! real processes, one of them killed. Needs `NIGHTJAR_TEST_POSTGRES_URL` and
//! `NIGHTJAR_TEST_NATS_URL` (each test says it was skipped without them).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashSet;
use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use nightjar_api::*;
use nightjar_core::{ConversationId, Incoming};
use reqwest::StatusCode;

/// Environment of a node process (set only by [`Node::start`]).
const NODE_DATABASE: &str = "NIGHTJAR_TEST_NODE_DATABASE";
const NODE_NATS: &str = "NIGHTJAR_TEST_NODE_NATS";
const NODE_ID: &str = "NIGHTJAR_TEST_NODE_ID";
/// The OPAQUE key file the nodes of one test share (it is not in the database).
const NODE_OPAQUE_KEY: &str = "NIGHTJAR_TEST_NODE_OPAQUE_KEY";
const NODE_KT_KEY: &str = "NIGHTJAR_TEST_NODE_KT_KEY";
/// The franking key file the nodes share (a tag one node makes must verify on the other).
const NODE_FRANKING_KEY: &str = "NIGHTJAR_TEST_NODE_FRANKING_KEY";
/// The line a node process prints once it listens.
const LISTENING: &str = "nightjar test node listening on ";

/// Not a test: the body of a node process. [`Node::start`] runs this test binary again with
/// only this test selected and the node's configuration in the environment; the node serves
/// until its standard input closes or it is killed. In a normal run it does nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_process() {
    let (Ok(database), Ok(node)) = (std::env::var(NODE_DATABASE), std::env::var(NODE_ID)) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut config = nightjar_server::ServerConfig::new(dir.path(), "127.0.0.1:0".parse().unwrap());
    config.database_url = Some(database);
    config.nats_url = std::env::var(NODE_NATS).ok();
    config.node_id = Some(node);
    config.opaque_key_file = std::env::var(NODE_OPAQUE_KEY).ok().map(Into::into);
    config.kt_key_file = std::env::var(NODE_KT_KEY).ok().map(Into::into);
    config.franking_key_file = std::env::var(NODE_FRANKING_KEY).ok().map(Into::into);
    config.limits = test_limits();
    let server = nightjar_server::start(config).await.unwrap();
    println!("{LISTENING}{}", server.local_addr());
    // Until the parent goes away (or kills us first).
    tokio::task::spawn_blocking(|| std::io::copy(&mut std::io::stdin(), &mut std::io::sink()))
        .await
        .unwrap()
        .unwrap();
    server.shutdown().await.unwrap();
}

/// The key file of `kind` (OPAQUE setup, directory keys) shared by the nodes on `database`
/// (nodes sharing a database must share it, as in production).
fn shared_key_file(database: &str, kind: &str) -> std::path::PathBuf {
    let name: String = database
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    std::env::temp_dir().join(format!("nightjar-test-{kind}-{name}.key"))
}

/// A server node in a process of its own.
struct Node {
    child: Child,
    base: String,
}

impl Node {
    fn start(database: &str, nats: &str, id: &str) -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["node_process", "--exact", "--nocapture", "--test-threads=1"])
            .env(NODE_DATABASE, database)
            .env(NODE_NATS, nats)
            .env(NODE_ID, id)
            .env(NODE_OPAQUE_KEY, shared_key_file(database, "opaque"))
            .env(NODE_KT_KEY, shared_key_file(database, "directory"))
            .env(NODE_FRANKING_KEY, shared_key_file(database, "franking"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let addr = stdout
            .lines()
            .map(|l| l.unwrap())
            // The harness may have printed the test's name on the same line.
            .find_map(|l| {
                l.split_once(LISTENING)
                    .map(|(_, addr)| addr.trim().to_owned())
            })
            .expect("the node did not start");
        Self {
            child,
            base: format!("http://{addr}"),
        }
    }

    /// SIGKILL: no graceful shutdown, no close frames.
    fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// alice and bob in a direct conversation created through `alice_node`; bob joins through
/// his stream on `bob_node` (Welcome received and acknowledged there).
async fn direct_conversation(
    alice_node: &TestServer,
    bob_node: &TestServer,
) -> (Device, Device, ConversationId, Stream) {
    let (alice, mut bob, conv) = create_direct(alice_node, bob_node).await;
    let mut ws = bob_node.connect(&bob.token).await;
    let welcome = ws.envelope().await;
    assert_eq!(welcome.kind, EnvelopeKind::Welcome);
    assert!(matches!(
        bob.engine.process(NOW, &welcome.payload.0).unwrap(),
        Incoming::Joined { .. }
    ));
    ws.drained().await;
    ws.ack(vec![welcome.id]).await;
    (alice, bob, conv, ws)
}

async fn send_text(server: &TestServer, device: &mut Device, conv: ConversationId, body: &str) {
    let out = device.engine.encrypt(NOW, conv, &text(body)).unwrap();
    let mut request = send_request(body, EnvelopeKind::Application, out.epoch, out.message);
    request.franking_commitment = Some(B64(out.franking_commitment.as_bytes().to_vec()));
    let path = format!("/v1/conversations/{conv}/messages");
    let _: SendResponse = server.post_ok(&path, device.token(), &request).await;
}

/// Receives `bodies` on `ws` in order, decrypting each (an envelope seen twice would fail).
/// Each carries the franking stamp of the commitment its message opens, whichever node
/// stamped it and whichever pushed it (over NATS).
async fn receive(ws: &mut Stream, device: &mut Device, bodies: &[String]) -> Vec<Envelope> {
    let mut got = Vec::new();
    for body in bodies {
        let envelope = ws.envelope().await;
        let incoming = device.engine.process(NOW, &envelope.payload.0).unwrap();
        expect_text(&incoming, body);
        let Incoming::Message {
            franking: nightjar_core::franking::FrankingCheck::Verified(franked),
            ..
        } = &incoming
        else {
            panic!("unfranked: {incoming:?}");
        };
        let stamp = envelope.franking.as_ref().expect("a stamped envelope");
        assert_eq!(stamp.commitment.0, franked.commitment.as_bytes());
        assert_eq!(stamp.tag.0.len(), 32);
        got.push(envelope);
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_share_queues_and_survive_a_killed_node() {
    let test = "nodes_share_queues_and_survive_a_killed_node";
    let (Some(_), Some(nats)) = (configured(POSTGRES_ENV, test), configured(NATS_ENV, test)) else {
        return;
    };
    let schema = schema().await;
    let node_a = Node::start(&schema.url, &nats, "a");
    let mut node_b = Node::start(&schema.url, &nats, "b");
    let (a, b) = (
        TestServer::at(node_a.base.clone()),
        TestServer::at(node_b.base.clone()),
    );

    let (mut alice, mut bob, conv, mut bob_ws) = direct_conversation(&a, &b).await;
    // A login started on one node finishes on the other.
    let (status, body) = login_signed(
        &a,
        &b,
        "alice",
        PASSWORD,
        &alice.device_id(),
        None,
        |login_id, challenge| Some(alice.engine.sign_login_proof(login_id, challenge).unwrap()),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut alice_ws = a.connect(&alice.token).await;
    alice_ws.drained().await;

    // Both ways: committed on one node, pushed by the other (NATS told it).
    send_text(&a, &mut alice, conv, "from a").await;
    let got = receive(&mut bob_ws, &mut bob, &["from a".into()]).await;
    bob_ws.ack(vec![got[0].id]).await;
    send_text(&b, &mut bob, conv, "from b").await;
    let got = receive(&mut alice_ws, &mut alice, &["from b".into()]).await;
    alice_ws.ack(vec![got[0].id]).await;

    // A burst; bob acknowledges only the first three before his node dies.
    let burst: Vec<String> = (0..6).map(|i| format!("burst {i}")).collect();
    for body in &burst {
        send_text(&a, &mut alice, conv, body).await;
    }
    let got = receive(&mut bob_ws, &mut bob, &burst).await;
    bob_ws.ack(got[..3].iter().map(|e| e.id).collect()).await;
    // The ack travels over a stream on B: wait until the database has it.
    for _ in 0..100 {
        let inbox: InboxResponse = a.get_ok("/v1/messages", bob.token()).await;
        if inbox.envelopes.len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    node_b.kill();
    drop(bob_ws);

    // Sent while bob has no node.
    let later: Vec<String> = (0..4).map(|i| format!("later {i}")).collect();
    for body in &later {
        send_text(&a, &mut alice, conv, body).await;
    }

    // bob on node A: the three he never acknowledged (already decrypted: compare them), then
    // everything sent meanwhile, in order, each once.
    let mut bob_ws = a.connect(&bob.token).await;
    let mut again = Vec::new();
    for expected in &got[3..] {
        let envelope = bob_ws.envelope().await;
        assert_eq!(&envelope, expected);
        again.push(envelope);
    }
    again.extend(receive(&mut bob_ws, &mut bob, &later).await);
    bob_ws.drained().await;
    let ids: Vec<u64> = again.iter().map(|e| e.id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), ids.len());

    // And the live path on A still works for him.
    send_text(&a, &mut alice, conv, "welcome back").await;
    receive(&mut bob_ws, &mut bob, &["welcome back".into()]).await;
    bob_ws.close().await;
    alice_ws.close().await;
    drop(node_a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_nats_the_safety_poll_delivers() {
    let test = "without_nats_the_safety_poll_delivers";
    if configured(POSTGRES_ENV, test).is_none() {
        return;
    }
    let schema = schema().await;
    let dir = tempfile::tempdir().unwrap();
    let start = || {
        let mut config =
            nightjar_server::ServerConfig::new(dir.path(), "127.0.0.1:0".parse().unwrap());
        config.database_url = Some(schema.url.clone());
        config.limits = test_limits();
        config.safety_poll = Duration::from_millis(200);
        nightjar_server::start(config)
    };
    let (one, two) = (start().await.unwrap(), start().await.unwrap());
    let a = TestServer::at(format!("http://{}", one.local_addr()));
    let b = TestServer::at(format!("http://{}", two.local_addr()));
    let (mut alice, mut bob, conv, mut bob_ws) = direct_conversation(&a, &b).await;
    // No notification crosses between the nodes: the poll finds it.
    send_text(&a, &mut alice, conv, "polled").await;
    receive(&mut bob_ws, &mut bob, &["polled".into()]).await;
    bob_ws.close().await;
    one.shutdown().await.unwrap();
    two.shutdown().await.unwrap();
}
