//! Files across real processes: `nightjar send --file` uploads a file encrypted on the sender's
//! device, `nightjar sync` fetches, verifies and decrypts it; the server's files hold only
//! ciphertext, and the blob is gone once fetched.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// The marker written all through the test files, searched for in the server's files.
const MARKER: &[u8] = b"attachment-plaintext-marker";

/// Writes a file of `size` bytes: the marker with a counter every 256 bytes, filled with
/// bytes of a simple generator (so it neither compresses nor repeats).
fn write_file(path: &Path, size: usize) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut written = 0;
    let mut block = Vec::with_capacity(256);
    while written < size {
        block.clear();
        block.extend_from_slice(MARKER);
        block.extend_from_slice(format!("{written:012}").as_bytes());
        while block.len() < 256 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            block.push(state as u8);
        }
        let n = block.len().min(size - written);
        f.write_all(&block[..n]).unwrap();
        written += n;
    }
    f.flush().unwrap();
}

fn same_contents(a: &Path, b: &Path) -> bool {
    std::fs::read(a).unwrap() == std::fs::read(b).unwrap()
}

fn attachment_rows(rows: &[Value]) -> Vec<&Value> {
    rows.iter().filter(|r| r["type"] == "attachment").collect()
}

/// Sends a 50 MiB file from alice to bob and checks what bob saves and what the server and
/// its store kept; `store_dir` is where the blob store keeps its bytes.
fn fifty_mib_round_trip(p: &Pair, store_dir: &Path) {
    let original = p.root.join("holiday video.mp4");
    write_file(&original, 50 << 20);
    let out = p.alice.ok(&[
        "send",
        "bob",
        "--file",
        original.to_str().unwrap(),
        "the whole trip",
    ]);
    assert!(out.starts_with("sent "), "{out}");

    // While it waits for bob, the server holds ciphertext only.
    let searched = assert_no_marker(&p.server.data, MARKER) + assert_no_marker(store_dir, MARKER);
    assert!(
        searched > 50 << 20,
        "the blob is somewhere: {searched} bytes searched"
    );

    let saved_dir = p.root.join("bob-downloads");
    let out = p
        .bob
        .ok(&["sync", "--json", "--save-dir", saved_dir.to_str().unwrap()]);
    let rows: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let files = attachment_rows(&rows);
    assert_eq!(files.len(), 1, "{rows:?}");
    let row = files[0];
    assert_eq!(row["from"], "alice");
    assert_eq!(row["name"], "holiday video.mp4");
    assert_eq!(row["size"], 50 << 20);
    assert_eq!(row["media_type"], "video/mp4");
    assert_eq!(row["text"], "the whole trip");
    assert_eq!(row["id"].as_str().unwrap().len(), 32);
    let file = PathBuf::from(row["file"].as_str().unwrap());
    assert_eq!(file, saved_dir.join("holiday video.mp4"));
    assert!(same_contents(&file, &original), "bob's copy differs");

    // bob was its only recipient: once he confirmed, the server deleted the blob.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left: u64 = files_under(store_dir)
            .iter()
            .map(|f| std::fs::metadata(f).map_or(0, |m| m.len()))
            .sum();
        if left < 1 << 20 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{left} bytes of blobs left after the fetch"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_no_marker(&p.server.data, MARKER);
}

#[test]
fn a_50_mib_file_goes_through_the_local_blob_store_as_ciphertext_only() {
    let p = Pair::new(&[]);
    let store = p.server.data.join("blobs");
    fifty_mib_round_trip(&p, &store);

    // The default save directory is in the profile; a second file of the same name does not
    // replace the first.
    let small = p.root.join("notes.txt");
    std::fs::write(&small, b"short notes").unwrap();
    for _ in 0..2 {
        p.alice
            .ok(&["send", "bob", "--file", small.to_str().unwrap()]);
    }
    let rows = p.bob.sync();
    let files: Vec<&str> = attachment_rows(&rows)
        .iter()
        .map(|r| r["file"].as_str().unwrap())
        .collect();
    assert_eq!(files.len(), 2, "{rows:?}");
    assert!(files[0].ends_with("files/notes.txt"), "{files:?}");
    assert!(files[1].ends_with("files/notes (1).txt"), "{files:?}");
    assert!(files.iter().all(|f| Path::new(f).starts_with(&p.bob.dir)));
    assert_eq!(std::fs::read(files[1]).unwrap(), b"short notes");
}

#[test]
fn files_that_arrive_while_following_are_saved_as_they_come() {
    use std::io::{BufRead as _, BufReader};
    let p = Pair::new(&[]);
    let inbox = p.root.join("inbox");
    let mut follow = p
        .bob
        .command(&[
            "sync",
            "--json",
            "--follow",
            "60",
            "--save-dir",
            inbox.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(follow.stdout.take().unwrap()).lines();
    let photo = p.root.join("while-following.txt");
    std::fs::write(&photo, b"sent while bob follows").unwrap();
    p.alice
        .ok(&["send", "bob", "--file", photo.to_str().unwrap()]);
    let row: Value = loop {
        let line = lines
            .next()
            .expect("the follow ended without the file")
            .unwrap();
        let row: Value = serde_json::from_str(&line).unwrap();
        if row["type"] == "attachment" {
            break row;
        }
    };
    let _ = follow.kill();
    let _ = follow.wait();
    let saved = Path::new(row["file"].as_str().expect("no file saved while following"));
    assert!(saved.starts_with(&inbox), "{row}");
    assert_eq!(std::fs::read(saved).unwrap(), b"sent while bob follows");
}

#[test]
fn an_interrupted_upload_resumes_and_delivers_one_file() {
    let p = Pair::new(&[]);
    let original = p.root.join("big.bin");
    write_file(&original, 48 << 20);
    let store = p.server.data.join("blobs");
    // Stop the first send once the server holds part of the file.
    let mut first = p
        .alice
        .command(&["send", "bob", "--file", original.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let held: u64 = files_under(&store)
            .iter()
            .map(|f| std::fs::metadata(f).map_or(0, |m| m.len()))
            .sum();
        if held >= 8 << 20 {
            break;
        }
        assert!(Instant::now() < deadline, "the upload never started");
        assert!(
            first.try_wait().unwrap().is_none(),
            "the upload finished too soon"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    first.kill().unwrap();
    first.wait().unwrap();
    let out = p
        .alice
        .ok(&["send", "bob", "--file", original.to_str().unwrap()]);
    assert!(out.starts_with("sent "), "{out}");
    let rows = p.bob.sync();
    let files = attachment_rows(&rows);
    assert_eq!(files.len(), 1, "one file, not two: {rows:?}");
    assert!(same_contents(
        Path::new(files[0]["file"].as_str().unwrap()),
        &original
    ));
}

/// Where scripts/s3.sh keeps the test S3 server's objects (`NIGHTJAR_TEST_S3_DATA_DIR`
/// overrides).
fn s3_data_dir() -> PathBuf {
    std::env::var("NIGHTJAR_TEST_S3_DATA_DIR").map_or_else(
        |_| PathBuf::from("/var/tmp/nightjar-s3/data"),
        PathBuf::from,
    )
}

#[test]
fn a_50_mib_file_goes_through_an_s3_compatible_store_as_ciphertext_only() {
    let Ok(endpoint) = std::env::var("NIGHTJAR_TEST_S3_ENDPOINT") else {
        // As for PostgreSQL: CI (and scripts/test.sh) start s3s-fs and set this.
        eprintln!("skipped: NIGHTJAR_TEST_S3_ENDPOINT is not set (scripts/s3.sh sets it)");
        return;
    };
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"));
    let bucket = var("NIGHTJAR_TEST_S3_BUCKET");
    let env = [
        ("AWS_ENDPOINT".to_owned(), endpoint),
        ("AWS_ALLOW_HTTP".to_owned(), "true".to_owned()),
        ("AWS_REGION".to_owned(), "us-east-1".to_owned()),
        (
            "AWS_ACCESS_KEY_ID".to_owned(),
            var("NIGHTJAR_TEST_S3_ACCESS_KEY_ID"),
        ),
        (
            "AWS_SECRET_ACCESS_KEY".to_owned(),
            var("NIGHTJAR_TEST_S3_SECRET_ACCESS_KEY"),
        ),
    ];
    // A prefix of this run's own in the shared bucket.
    let prefix = format!(
        "cli-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let store = format!("s3://{bucket}/{prefix}");
    let p = Pair::with_env(&["--blob-store", &store], &env);
    // Nothing of the blob is in the server's own data directory; all of it in the store's.
    let in_store = s3_data_dir().join(&bucket).join(&prefix);
    fifty_mib_round_trip(&p, &in_store);
}
