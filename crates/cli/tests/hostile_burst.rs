//! Bursts from a well-behaved client (issue 8, finding 12), with the real `nightjar` binary
//! against a real `nightjar server` on its default limits: sixty sends back to back must all
//! arrive, in order, exactly once, at no more than two requests per send; and a send the
//! server (or anything in front of it) answers with 429 and `Retry-After` stays queued and
//! goes out later, never sooner than it was told.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_nightjar");
const PASSWORD: &str = "correct horse battery staple";

/// What the server prints once bound; the real addresses follow.
const LISTENING: &str = "listening on http://";
const METRICS: &str = "metrics on http://";

/// A `nightjar server` process with its default limits; killed when dropped.
struct Server {
    child: Child,
    url: String,
    metrics: String,
}

fn address_after(line: &str, marker: &str) -> Option<SocketAddr> {
    let at = line.find(marker)?;
    line[at + marker.len()..]
        .split(|c: char| c.is_whitespace() || c == '/' || c == ',' || c == ')')
        .next()
        .and_then(|a| a.parse().ok())
}

impl Server {
    fn start(data: &Path) -> Server {
        let mut child = Command::new(BIN)
            .args(["server", "--data-dir"])
            .arg(data)
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (lines, received) = std::sync::mpsc::channel();
        let stderr = BufReader::new(child.stderr.take().unwrap());
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                let _ = lines.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen = String::new();
        let (mut url, mut metrics) = (None, None);
        while url.is_none() || metrics.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = received.recv_timeout(left) else {
                panic!("server did not start\nstderr:\n{seen}");
            };
            if let Some(addr) = address_after(&line, LISTENING) {
                url = Some(format!("http://{addr}"));
            }
            if let Some(addr) = address_after(&line, METRICS) {
                metrics = Some(format!("http://{addr}/metrics"));
            }
            seen.push_str(&line);
            seen.push('\n');
        }
        Server {
            child,
            url: url.unwrap(),
            metrics: metrics.unwrap(),
        }
    }

    /// Requests the server has answered so far, by `METHOD route` (from its own metrics).
    fn requests(&self) -> HashMap<String, u64> {
        let text = http_get(&self.metrics);
        let mut out = HashMap::new();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("nightjar_http_requests_total{") else {
                continue;
            };
            let field = |name: &str| {
                let start = rest.find(&format!("{name}=\""))? + name.len() + 2;
                let end = rest[start..].find('"')? + start;
                Some(rest[start..end].to_owned())
            };
            let count: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
            let key = format!("{} {}", field("method").unwrap(), field("route").unwrap());
            *out.entry(key).or_default() += count;
        }
        out
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP/1.1 GET with no client library: the body as text.
fn http_get(url: &str) -> String {
    let rest = url.strip_prefix("http://").unwrap();
    let (authority, path) = rest.split_once('/').unwrap();
    let mut tcp = TcpStream::connect(authority).unwrap();
    write!(
        tcp,
        "GET /{path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_owned()
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

    fn run(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .env("NIGHTJAR_PROFILE", &self.dir)
            .env("NIGHTJAR_PASSWORD", PASSWORD)
            .env("NIGHTJAR_KEYRING", "off")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

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

    /// The texts `sync --json` reports, oldest first.
    fn texts(&self) -> Vec<String> {
        self.ok(&["sync", "--json"])
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|m| m["type"] == "text")
            .map(|m| m["text"].as_str().unwrap().to_owned())
            .collect()
    }
}

fn total(requests: &HashMap<String, u64>) -> u64 {
    requests.values().sum()
}

/// The report's burst: 60 `nightjar send` back to back used to fail from about the 21st with
/// "too many requests" (five requests per send against a burst of 100). Now each send costs
/// at most two requests in the steady state (the message, one inbox read), a 429 is waited
/// out, and all sixty arrive in order, once.
#[test]
fn sixty_sends_back_to_back_all_arrive_in_order_once() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("server"));
    let alice = Device::new(tmp.path(), "alice");
    let bob = Device::new(tmp.path(), "bob");
    alice.ok(&["register", "--server", &server.url, "alice"]);
    bob.ok(&["register", "--server", &server.url, "bob"]);
    // bob knows alice: her messages are not a message request (which carries only a few).
    bob.ok(&["accept", "alice"]);
    // The first send creates the conversation (lookups, key packages, the commit).
    alice.ok(&["send", "bob", "hello"]);

    let before = server.requests();
    let mut expected = vec!["hello".to_owned()];
    for i in 0..60 {
        let text = format!("burst {i:02}");
        let out = alice.ok(&["send", "bob", &text]);
        assert!(out.starts_with("sent"), "send {i}: {out}");
        expected.push(text);
    }
    let after = server.requests();
    let mut used: Vec<(String, u64)> = after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect();
    used.sort();
    let per_send = (total(&after) - total(&before)) as f64 / 60.0;
    eprintln!("requests per send in the steady state: {per_send:.2} ({used:?})");
    assert!(per_send <= 2.0, "{per_send} requests per send: {used:?}");

    assert_eq!(bob.texts(), expected);
    // Exactly once: nothing more on the next sync.
    assert!(bob.texts().is_empty());
}

/// What the proxy does with `POST .../messages`.
#[derive(Clone, Copy, Debug)]
enum SendPolicy {
    /// Forward everything.
    Forward,
    /// Answer the next `n` with 429 and `Retry-After: secs`, then forward.
    Refuse { n: u32, secs: u64 },
}

#[derive(Debug)]
struct ProxyState {
    policy: SendPolicy,
    /// `POST .../messages` requests seen, with when.
    sends: Vec<Instant>,
}

/// An HTTP/1.1 proxy in front of the server that can answer message posts with 429 and a
/// `Retry-After` header (and no `retry_after_ms` in the body: the header alone must do).
struct Proxy {
    url: String,
    state: Arc<Mutex<ProxyState>>,
}

impl Proxy {
    fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let upstream = upstream.strip_prefix("http://").unwrap().to_owned();
        let state = Arc::new(Mutex::new(ProxyState {
            policy: SendPolicy::Forward,
            sends: Vec::new(),
        }));
        let shared = state.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().map_while(Result::ok) {
                let upstream = upstream.clone();
                let state = shared.clone();
                std::thread::spawn(move || {
                    let _ = relay(client, &upstream, &state);
                });
            }
        });
        Proxy { url, state }
    }

    fn set(&self, policy: SendPolicy) {
        self.state.lock().unwrap().policy = policy;
    }

    fn sends(&self) -> Vec<Instant> {
        self.state.lock().unwrap().sends.clone()
    }
}

/// Reads one HTTP/1.1 message (head and a `Content-Length` or chunked body); `None` at EOF.
fn read_message(reader: &mut BufReader<TcpStream>) -> std::io::Result<Option<(String, Vec<u8>)>> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    let header = |name: &str| {
        head.lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_owned())
    };
    let mut body = Vec::new();
    if let Some(len) = header("content-length") {
        body.resize(len.parse().unwrap(), 0);
        reader.read_exact(&mut body)?;
    } else if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size)?;
            body.extend_from_slice(size.as_bytes());
            let n = usize::from_str_radix(size.trim(), 16).unwrap();
            let mut chunk = vec![0; n + 2];
            reader.read_exact(&mut chunk)?;
            body.extend_from_slice(&chunk);
            if n == 0 {
                break;
            }
        }
    }
    Ok(Some((head, body)))
}

fn relay(client: TcpStream, upstream: &str, state: &Mutex<ProxyState>) -> std::io::Result<()> {
    let mut to_client = client.try_clone()?;
    let mut from_client = BufReader::new(client);
    let server = TcpStream::connect(upstream)?;
    let mut to_server = server.try_clone()?;
    let mut from_server = BufReader::new(server);
    while let Some((head, body)) = read_message(&mut from_client)? {
        let request_line = head.lines().next().unwrap_or_default().to_owned();
        let is_send = request_line.starts_with("POST /v1/conversations/")
            && request_line.contains("/messages ");
        let refuse = {
            let mut state = state.lock().unwrap();
            if is_send {
                state.sends.push(Instant::now());
            }
            match state.policy {
                SendPolicy::Refuse { n, secs } if is_send && n > 0 => {
                    state.policy = SendPolicy::Refuse { n: n - 1, secs };
                    Some(secs)
                }
                _ => None,
            }
        };
        if let Some(secs) = refuse {
            let body = r#"{"error":"rate_limited","message":"too many requests; slow down"}"#;
            write!(
                to_client,
                "HTTP/1.1 429 Too Many Requests\r\nretry-after: {secs}\r\n\
                 content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )?;
            continue;
        }
        to_server.write_all(head.as_bytes())?;
        to_server.write_all(&body)?;
        let Some((head, body)) = read_message(&mut from_server)? else {
            return Ok(());
        };
        to_client.write_all(head.as_bytes())?;
        to_client.write_all(&body)?;
    }
    Ok(())
}

/// A 429 with `Retry-After` is waited out (never retried sooner) and the message goes out in
/// the same command; a `Retry-After` longer than a command waits leaves the message queued,
/// with the reason, and a later command sends it, once.
#[test]
fn a_rate_limited_send_waits_or_stays_queued_and_goes_out_later() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("server"));
    let proxy = Proxy::start(&server.url);
    let alice = Device::new(tmp.path(), "alice");
    let bob = Device::new(tmp.path(), "bob");
    alice.ok(&["register", "--server", &proxy.url, "alice"]);
    bob.ok(&["register", "--server", &server.url, "bob"]);
    bob.ok(&["accept", "alice"]);
    alice.ok(&["send", "bob", "first"]);

    // Told to wait two seconds: the send waits, then goes out.
    proxy.set(SendPolicy::Refuse { n: 1, secs: 2 });
    let started = proxy.sends().len();
    let out = alice.ok(&["send", "bob", "after a pause"]);
    assert!(out.starts_with("sent"), "{out}");
    let sends = proxy.sends();
    assert_eq!(sends.len() - started, 2, "one refused, one accepted");
    let waited = sends[started + 1] - sends[started];
    assert!(
        waited >= Duration::from_secs(2),
        "retried after {waited:?}, before Retry-After"
    );

    // Told to wait ten minutes: no hammering, the message stays queued with the reason.
    proxy.set(SendPolicy::Refuse { n: 1, secs: 600 });
    let started = proxy.sends().len();
    let out = alice.run(&["send", "bob", "much later"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.starts_with("queued"), "{stdout}\n{stderr}");
    assert!(stderr.contains("600"), "{stderr}");
    assert_eq!(
        proxy.sends().len() - started,
        1,
        "retried before Retry-After"
    );
    let status = alice.ok(&["status"]);
    assert!(status.contains("outbox:         1"), "{status}");

    // Later, the next command sends it.
    proxy.set(SendPolicy::Forward);
    alice.ok(&["sync"]);
    let status = alice.ok(&["status"]);
    assert!(status.contains("outbox:         0"), "{status}");
    assert_eq!(bob.texts(), ["first", "after a pause", "much later"]);
    assert!(bob.texts().is_empty());
}
