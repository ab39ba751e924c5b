//! The breach test: a scripted day of traffic (1:1s, a group, a device added and removed)
//! through the real `nightjar` binary and a real `nightjar server`, then everything the server
//! keeps is taken as an attacker would take it: the database, every file of its data
//! directory and its log. `docs/privacy.md` is the contract:
//! - every table and column in the database is listed there;
//! - a row names two accounts that talked only in a table it lists under "Rows that link
//!   people", and no row names two accounts that never talked;
//! - no message text appears in any file or in the log;
//! - the log names no account, device or conversation, and no client address;
//! - delivered messages are gone, and stored times are rounded as declared.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, Device, LISTENING};
use rusqlite::types::ValueRef;

/// Usernames long and odd enough never to occur by chance inside ciphertext.
const AMBER: &str = "amberlynx";
const BRAMBLE: &str = "bramblefox";
const CINDER: &str = "cinderowl";
const DUSK: &str = "duskmoth";
/// Registers and syncs, and talks to nobody.
const EMBER: &str = "emberwren";
const EVERYONE: [&str; 5] = [AMBER, BRAMBLE, CINDER, DUSK, EMBER];

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

/// A server whose standard error goes to a file: its log, as an operator would keep it.
struct LoggedServer {
    child: Child,
    url: String,
    data: PathBuf,
    log: PathBuf,
}

impl LoggedServer {
    fn start(root: &Path) -> LoggedServer {
        let data = root.join("server");
        let log = root.join("server.log");
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(BIN)
            .args(["server", "--data-dir"])
            .arg(&data)
            .args(["--listen", "127.0.0.1:0", "--kt-interval-ms", "200"])
            // The default log level, as the server runs unless told otherwise.
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let url = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(at) = text.find(LISTENING) {
                let rest = &text[at + LISTENING.len()..];
                let addr: String = rest
                    .chars()
                    .take_while(|c| !c.is_whitespace() && *c != '/' && *c != ',' && *c != ')')
                    .collect();
                break format!("http://{addr}");
            }
            assert!(Instant::now() < deadline, "server did not start: {text}");
            std::thread::sleep(Duration::from_millis(50));
        };
        LoggedServer {
            child,
            url,
            data,
            log,
        }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for LoggedServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Links `device` to `username`, approved from `approver`; returns the new device's id.
fn link(device: &Device, approver: &Device, url: &str, username: &str) -> String {
    device.link(approver, url, username);
    let listed = approver.ok(&["devices"]);
    listed
        .lines()
        .find(|l| !l.contains("this device"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_owned()
}

/// One cell of the dump.
#[derive(Debug, Clone)]
enum Cell {
    Null,
    Int(i64),
    Text(String),
    Blob(Vec<u8>),
}

/// Every table of the database: its columns and rows.
type Dump = BTreeMap<String, (Vec<String>, Vec<Vec<Cell>>)>;

fn dump(db: &Path) -> Dump {
    let conn = rusqlite::Connection::open(db).unwrap();
    let names: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut out = Dump::new();
    for name in names {
        let mut statement = conn.prepare(&format!("SELECT * FROM \"{name}\"")).unwrap();
        let columns: Vec<String> = statement
            .column_names()
            .iter()
            .map(|c| (*c).to_owned())
            .collect();
        let width = columns.len();
        let rows: Vec<Vec<Cell>> = statement
            .query_map([], |r| {
                Ok((0..width)
                    .map(|i| match r.get_ref(i).unwrap() {
                        ValueRef::Null => Cell::Null,
                        ValueRef::Integer(v) => Cell::Int(v),
                        ValueRef::Real(v) => Cell::Text(v.to_string()),
                        ValueRef::Text(t) => Cell::Text(String::from_utf8_lossy(t).into_owned()),
                        ValueRef::Blob(b) => Cell::Blob(b.to_vec()),
                    })
                    .collect())
            })
            .unwrap()
            .map(Result::unwrap)
            .collect();
        out.insert(name, (columns, rows));
    }
    out
}

fn column<'a>(dump: &'a Dump, table: &str, name: &str) -> Vec<&'a Cell> {
    let (columns, rows) = &dump[table];
    let i = columns.iter().position(|c| c == name).unwrap();
    rows.iter().map(|r| &r[i]).collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Who is who in the dump: account ids, device row ids and device ids, by account.
struct People {
    accounts: BTreeMap<i64, String>,
    device_rows: BTreeMap<i64, String>,
    device_ids: BTreeMap<String, String>,
}

impl People {
    fn of(dump: &Dump) -> People {
        let ids = column(dump, "accounts", "id");
        let names = column(dump, "accounts", "username");
        let mut accounts = BTreeMap::new();
        for (id, name) in ids.into_iter().zip(names) {
            if let (Cell::Int(id), Cell::Text(name)) = (id, name) {
                accounts.insert(*id, name.clone());
            }
        }
        let mut device_rows = BTreeMap::new();
        let mut device_ids = BTreeMap::new();
        let rows = column(dump, "devices", "id");
        let owners = column(dump, "devices", "account_id");
        let device = column(dump, "devices", "device_id");
        for ((row, owner), device) in rows.into_iter().zip(owners).zip(device) {
            if let (Cell::Int(row), Cell::Int(owner), Cell::Text(device)) = (row, owner, device) {
                let name = accounts[owner].clone();
                device_rows.insert(*row, name.clone());
                device_ids.insert(device.clone(), name);
            }
        }
        People {
            accounts,
            device_rows,
            device_ids,
        }
    }

    /// The accounts a row names: usernames in any text or blob cell, account ids in columns
    /// that hold account ids, device row ids and device ids where devices are named.
    fn named(&self, table: &str, columns: &[String], row: &[Cell]) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for (name, cell) in columns.iter().zip(row) {
            let account_column = matches!(
                name.as_str(),
                "account_id"
                    | "owner_id"
                    | "peer_id"
                    | "reporter_id"
                    | "reported_id"
                    | "recipient_id"
                    | "sender_id"
                    | "claimer_id"
                    | "target_id"
                    | "inviter_id"
            ) || (table == "accounts" && name == "id");
            let device_row_column = name == "device_pk" || (table == "devices" && name == "id");
            match cell {
                Cell::Int(v) if account_column => out.extend(self.accounts.get(v).cloned()),
                Cell::Int(v) if device_row_column => out.extend(self.device_rows.get(v).cloned()),
                Cell::Text(t) => {
                    out.extend(self.device_ids.get(t).cloned());
                    for user in EVERYONE {
                        if t.contains(user) {
                            out.insert(user.to_owned());
                        }
                    }
                }
                Cell::Blob(b) => {
                    for user in EVERYONE {
                        // As bytes, or as the byte list a JSON encoding makes of them.
                        let listed = user
                            .bytes()
                            .map(|c| c.to_string())
                            .collect::<Vec<_>>()
                            .join(",");
                        if contains(b, user.as_bytes()) || contains(b, listed.as_bytes()) {
                            out.insert(user.to_owned());
                        }
                    }
                }
                _ => {}
            }
        }
        out
    }
}

/// What `docs/privacy.md` declares: every `table.column` it lists, and the tables whose rows
/// may link people.
struct Declared {
    columns: BTreeSet<String>,
    linking: BTreeSet<String>,
}

fn declared() -> Declared {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/privacy.md"),
    )
    .unwrap();
    let mut columns = BTreeSet::new();
    for (i, part) in text.split('`').enumerate() {
        let is_code = i % 2 == 1;
        if is_code
            && let Some((table, column)) = part.split_once('.')
            && !table.is_empty()
            && table.chars().all(|c| c.is_ascii_lowercase() || c == '_')
            && column
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '_' || c == '*')
        {
            columns.insert(part.to_owned());
        }
    }
    let section = text
        .split("### Rows that link people")
        .nth(1)
        .unwrap()
        .split("\n#")
        .next()
        .unwrap();
    let linking = section
        .lines()
        .filter_map(|l| l.strip_prefix("- `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_owned)
        .collect();
    Declared { columns, linking }
}

fn pair(a: &str, b: &str) -> (String, String) {
    if a < b {
        (a.to_owned(), b.to_owned())
    } else {
        (b.to_owned(), a.to_owned())
    }
}

#[test]
fn a_dump_of_the_server_after_a_day_of_traffic_reveals_only_what_privacy_md_declares() {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = LoggedServer::start(tmp.path());
    let url = server.url.clone();
    let device = |name: &str| Device::new(tmp.path(), name);
    let (amber, bramble, cinder, dusk, ember) = (
        device(AMBER),
        device(BRAMBLE),
        device(CINDER),
        device(DUSK),
        device(EMBER),
    );
    for (d, name) in [
        (&amber, AMBER),
        (&bramble, BRAMBLE),
        (&cinder, CINDER),
        (&dusk, DUSK),
        (&ember, EMBER),
    ] {
        d.ok(&["register", "--server", &url, name]);
    }
    let mut texts = Vec::new();
    let mut say = |from: &Device, args: &[&str], text: &str| {
        let mut full = args.to_vec();
        full.push(text);
        from.ok(&full);
        texts.push(text.to_owned());
    };

    // Morning: two 1:1 conversations.
    say(
        &amber,
        &["send", BRAMBLE],
        "breach-marker morning amber to bramble",
    );
    bramble.ok(&["accept", AMBER]);
    say(
        &bramble,
        &["send", AMBER],
        "breach-marker bramble answers amber",
    );
    say(
        &bramble,
        &["send", CINDER],
        "breach-marker bramble to cinder",
    );
    cinder.ok(&["accept", BRAMBLE]);
    say(&cinder, &["send", BRAMBLE], "breach-marker cinder answers");
    amber.ok(&["sync"]);

    // Noon: a group.
    amber.ok(&["group", "create", "lunch", BRAMBLE, DUSK]);
    say(
        &amber,
        &["send", "--group", "lunch"],
        "breach-marker lunch plans",
    );
    dusk.ok(&["accept", AMBER]);
    say(
        &dusk,
        &["send", "--group", "lunch"],
        "breach-marker dusk in the group",
    );
    bramble.ok(&["sync"]);
    say(
        &bramble,
        &["send", "--group", "lunch"],
        "breach-marker bramble in the group",
    );

    // Afternoon: amber adds a device, uses it, then removes it.
    let amber2 = device("amberlynx-phone");
    let phone = link(&amber2, &amber, &url, AMBER);
    amber.ok(&["sync"]);
    say(
        &bramble,
        &["send", AMBER],
        "breach-marker to both of amber's devices",
    );
    amber2.ok(&["sync"]);
    say(
        &amber2,
        &["send", BRAMBLE],
        "breach-marker from amber's phone",
    );
    amber.ok(&["remove-device", &phone]);
    say(
        &bramble,
        &["send", AMBER],
        "breach-marker after the phone is gone",
    );

    // Evening: everyone reads everything (ember has nothing).
    for d in [&amber, &bramble, &cinder, &dusk, &ember] {
        d.ok(&["sync"]);
    }
    for d in [&amber, &bramble, &cinder, &dusk] {
        d.ok(&["sync"]);
    }
    server.stop();
    let talked: BTreeSet<(String, String)> = [
        pair(AMBER, BRAMBLE),
        pair(BRAMBLE, CINDER),
        pair(AMBER, DUSK),
        pair(BRAMBLE, DUSK),
    ]
    .into();

    // The attacker's copy.
    let db = dump(&server.data.join("nightjar.db"));
    let log = std::fs::read_to_string(&server.log).unwrap();
    let mut files: Vec<(PathBuf, Vec<u8>)> = Vec::new();
    for entry in std::fs::read_dir(&server.data).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            files.push((path.clone(), std::fs::read(&path).unwrap()));
        }
    }
    let declared = declared();
    let people = People::of(&db);

    // Every column is declared.
    let mut undeclared = Vec::new();
    for (table, (columns, _)) in &db {
        if declared.columns.contains(&format!("{table}.*")) {
            continue;
        }
        for c in columns {
            if !declared.columns.contains(&format!("{table}.{c}")) {
                undeclared.push(format!("{table}.{c}"));
            }
        }
    }
    assert!(
        undeclared.is_empty(),
        "not in docs/privacy.md: {undeclared:?}"
    );

    // Rows that name two accounts; in a table keyed by conversation, all its rows for one
    // conversation together (a roster row names one member, the roster names them all).
    let mut links: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for (table, (columns, rows)) in &db {
        let key = columns.iter().position(|c| c == "conversation_id");
        let mut units: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (i, row) in rows.iter().enumerate() {
            let unit = match key.map(|k| &row[k]) {
                Some(Cell::Text(conversation)) => conversation.clone(),
                _ => format!("row {i}"),
            };
            units
                .entry(unit)
                .or_default()
                .extend(people.named(table, columns, row));
        }
        for named in units.values() {
            let named: Vec<&String> = named.iter().collect();
            for (i, a) in named.iter().enumerate() {
                for b in &named[i + 1..] {
                    links.entry(pair(a, b)).or_default().insert(table.clone());
                }
            }
        }
    }
    for (who, tables) in &links {
        assert!(
            talked.contains(who),
            "{who:?} never talked, but {tables:?} link them"
        );
        let stray: Vec<&String> = tables
            .iter()
            .filter(|t| !declared.linking.contains(*t))
            .collect();
        assert!(
            stray.is_empty(),
            "{who:?} are linked by {stray:?}, which docs/privacy.md does not declare"
        );
    }
    // The analysis sees the links it must (conversation rosters), so a silence above means
    // something.
    assert!(
        talked.iter().all(|p| links
            .get(p)
            .is_some_and(|t| t.contains("conversation_members"))),
        "{links:?}"
    );

    // No message text anywhere: database, its WAL, key files, log.
    for text in &texts {
        for (path, bytes) in &files {
            assert!(
                !contains(bytes, text.as_bytes()),
                "{text:?} in {}",
                path.display()
            );
        }
        assert!(!log.contains(text.as_str()), "{text:?} in the log");
    }
    assert!(!log.contains("breach-marker"));

    // The log names nobody: no username, device id or conversation id, no client address.
    for user in EVERYONE {
        assert!(!log.contains(user), "{user} in the log:\n{log}");
    }
    for id in people.device_ids.keys() {
        assert!(!log.contains(id.as_str()), "device {id} in the log");
    }
    for cell in column(&db, "conversations", "id") {
        if let Cell::Text(id) = cell {
            assert!(!log.contains(id.as_str()), "conversation {id} in the log");
        }
    }
    // Loopback is the clients' address here too: only the start-up lines announcing the
    // server's own addresses may carry it.
    for line in log.lines().filter(|l| l.contains("127.0.0.1")) {
        assert!(
            line.starts_with("nightjar server: ") || line.contains("nightjar server listening"),
            "an address in the log: {line}"
        );
    }

    // No client address in the database either (logins keep a keyed hash of it, briefly).
    for (table, (_, rows)) in &db {
        for row in rows {
            for cell in row {
                let hit = match cell {
                    Cell::Text(t) => t.contains("127.0.0.1"),
                    Cell::Blob(b) => contains(b, b"127.0.0.1"),
                    _ => false,
                };
                assert!(!hit, "a client address in {table}: {cell:?}");
            }
        }
    }

    // Delivered messages are gone; stored times are rounded as declared.
    assert!(db["messages"].1.is_empty(), "{:?}", db["messages"].1);
    assert!(db["queue"].1.is_empty());
    let rounded = |table: &str, name: &str, unit: i64| {
        for cell in column(&db, table, name) {
            if let Cell::Int(v) = cell {
                assert_eq!(v % unit, 0, "{table}.{name} = {v} is not rounded");
            }
        }
    };
    rounded("accounts", "created_at_ms", DAY_MS);
    rounded("devices", "last_seen_ms", DAY_MS);
    for (table, name) in [
        ("conversations", "created_at_ms"),
        ("conversations", "updated_at_ms"),
        ("idempotency", "created_at_ms"),
        ("consent", "updated_at_ms"),
        ("kt_epochs", "published_at_ms"),
        ("devices", "created_at_ms"),
        ("sessions", "created_at_ms"),
        ("sealed_submissions", "created_at_ms"),
    ] {
        rounded(table, name, HOUR_MS);
    }
    assert!(!column(&db, "idempotency", "created_at_ms").is_empty());
    assert!(!column(&db, "sessions", "created_at_ms").is_empty());
}
