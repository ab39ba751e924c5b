//! The harness of the command-line end-to-end tests: the real `nightjar server` binary on a
//! port the kernel picks, with a temporary data directory, and `nightjar` user commands on
//! temporary profiles.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    dead_code,
    unreachable_pub
)]

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_nightjar");
pub const PASSWORD: &str = "correct horse battery staple";

/// A `nightjar server` process; killed when dropped.
pub struct Server {
    pub child: Child,
    pub port: u16,
    pub data: PathBuf,
    /// Where the server serves `/metrics`, when it says so.
    pub metrics: Option<SocketAddr>,
}

/// What the server prints once it is bound; the real address follows.
pub const LISTENING: &str = "listening on http://";
/// What follows on the same line when the metrics listener is bound.
pub const METRICS: &str = "metrics on http://";

/// The socket address written right after `marker` in `line`.
fn address_after(line: &str, marker: &str) -> Option<SocketAddr> {
    let at = line.find(marker)?;
    line[at + marker.len()..]
        .split(|c: char| c.is_whitespace() || c == '/' || c == ',' || c == ')')
        .next()
        .and_then(|a| a.parse().ok())
}

impl Server {
    /// Starts a server on a port the kernel picks, so parallel tests never share one.
    pub fn start(data: &Path) -> Server {
        Self::start_with(data, 0, &[])
    }

    /// Starts a server on `port` (0: any free port) and waits until it has bound it: the
    /// address comes from the server's own start-up line, never from probing the port, which
    /// another test's server might hold.
    pub fn start_with(data: &Path, port: u16, extra: &[&str]) -> Server {
        Self::start_with_env(data, port, extra, &[])
    }

    /// [`Self::start_with`], with environment variables set for the server process.
    pub fn start_with_env(
        data: &Path,
        port: u16,
        extra: &[&str],
        env: &[(String, String)],
    ) -> Server {
        let mut child = Command::new(BIN)
            .args(["server", "--data-dir"])
            .arg(data)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(extra)
            .envs(env.iter().map(|(k, v)| (k, v)))
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
        let (port, metrics) = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match received.recv_timeout(left) {
                Ok(line) => {
                    if line.contains(LISTENING) {
                        let addr = address_after(&line, LISTENING)
                            .unwrap_or_else(|| panic!("no address in {line:?}"));
                        break (addr.port(), address_after(&line, METRICS));
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
            metrics,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn stop(&mut self) {
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
pub struct Device {
    pub dir: PathBuf,
}

/// What [`Device::link`] saw: `approve`'s output, and `login`'s after the approval code.
pub struct Linked {
    pub approved: String,
    pub rest: Vec<String>,
}

impl Device {
    pub fn new(root: &Path, name: &str) -> Device {
        Device {
            dir: root.join(name),
        }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .env("NIGHTJAR_PROFILE", &self.dir)
            .env("NIGHTJAR_PASSWORD", PASSWORD)
            .env("NIGHTJAR_KEYRING", "off")
            .stdin(Stdio::null());
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs a command that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
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

    pub fn sync(&self) -> Vec<Value> {
        self.ok(&["sync", "--json"])
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    pub fn texts(&self) -> Vec<String> {
        self.sync()
            .iter()
            .filter(|m| m["type"] == "text")
            .map(|m| m["text"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Runs `login` for `username` on this (new) device, reads the approval code it prints
    /// and approves it from `approver`; the login must then succeed.
    pub fn link(&self, approver: &Device, url: &str, username: &str) -> Linked {
        let mut login = self
            .command(&["login", "--server", url, username, "--timeout", "60"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(login.stdout.take().unwrap()).lines();
        let code = loop {
            let line = lines.next().expect("login printed no code").unwrap();
            if let Some(code) = line.strip_prefix("approval code: ") {
                break code.trim().to_owned();
            }
        };
        let approved = approver.ok(&["approve", &code]);
        let rest: Vec<String> = lines.map(Result::unwrap).collect();
        assert!(login.wait().unwrap().success(), "{rest:?}");
        Linked { approved, rest }
    }

    /// Runs a command that must fail; returns its stderr.
    pub fn fails(&self, args: &[&str]) -> String {
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

/// Two accounts, alice and bob, with a device each on a fresh server, that accepted each
/// other (their messages are not requests).
pub struct Pair {
    /// Holds the server's data and both profiles until the test ends.
    pub tmp: tempfile::TempDir,
    pub server: Server,
    pub alice: Device,
    pub bob: Device,
    /// The temporary directory, for the test's own files.
    pub root: PathBuf,
}

impl Pair {
    /// A pair on a server started with `extra` flags.
    pub fn new(extra: &[&str]) -> Pair {
        Self::with_env(extra, &[])
    }

    /// A pair on a server started with `extra` flags and `env` in its environment.
    pub fn with_env(extra: &[&str], env: &[(String, String)]) -> Pair {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let server = Server::start_with_env(&root.join("server-data"), 0, extra, env);
        let url = server.url();
        let alice = Device::new(&root, "alice");
        let bob = Device::new(&root, "bob");
        alice.ok(&["register", "--server", &url, "alice"]);
        bob.ok(&["register", "--server", &url, "bob"]);
        alice.ok(&["accept", "bob"]);
        bob.ok(&["accept", "alice"]);
        Pair {
            tmp,
            server,
            alice,
            bob,
            root,
        }
    }
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// Fails if any file under `dir` holds `marker`; returns how many bytes were searched.
pub fn assert_no_marker(dir: &Path, marker: &[u8]) -> u64 {
    let mut searched = 0;
    for path in files_under(dir) {
        let bytes = std::fs::read(&path).unwrap();
        searched += bytes.len() as u64;
        assert!(
            !bytes.windows(marker.len()).any(|w| w == marker),
            "{} holds plaintext",
            path.display()
        );
    }
    searched
}

/// The message id `send`, `reply`, ... printed (`... message ID)`).
pub fn sent_id(stdout: &str) -> String {
    let id = stdout
        .trim()
        .rsplit("message ")
        .next()
        .unwrap()
        .trim_end_matches(')')
        .to_owned();
    assert_eq!(id.len(), 32, "{stdout}");
    id
}
