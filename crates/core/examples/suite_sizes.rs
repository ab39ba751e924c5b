//! Prints the wire sizes of Nightjar's MLS objects for both ciphersuites, as a Markdown table:
//! key package, Welcome and commit sizes, the ciphertext of a 1 KiB text message and the state a
//! member device stores. Groups are built with the benchmarks' fixtures: a filled ratchet tree,
//! and for the largest size also a blank one (everybody added in one commit).
//!
//! Run: `cargo run --release -p nightjar-core --example suite_sizes` (builds 1,000-device groups,
//! about a minute or two; pass `--small` to stop at 100 devices).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

// This example uses part of the benchmark fixtures.
#[allow(dead_code)]
#[path = "../benches/support/mod.rs"]
mod support;

use nightjar_core::Suite;
use support::{Group, NOW, SUITES, Tree, label};

fn main() {
    let small = std::env::args().any(|a| a == "--small");
    let sizes: &[usize] = if small { &[10, 100] } else { &[10, 100, 1000] };
    let [classic, xwing] = SUITES.map(|suite| measure(suite, sizes));
    println!(
        "| object | {} (0x{:04X}) | {} (0x{:04X}) | ratio |",
        label(SUITES[0]),
        SUITES[0].id(),
        label(SUITES[1]),
        SUITES[1].id()
    );
    println!("|---|---:|---:|---:|");
    for ((what, a), (_, b)) in classic.into_iter().zip(xwing) {
        println!(
            "| {what} | {a} | {b} | {:.1}× |",
            b as f64 / a.max(1) as f64
        );
    }
}

/// Every measured object of `suite` and its size in bytes, in table order.
fn measure(suite: Suite, sizes: &[usize]) -> Vec<(String, usize)> {
    let mut out = direct_sizes(suite);
    let largest = sizes.last().copied().unwrap_or(2);
    let cases = sizes
        .iter()
        .map(|&size| (size, Tree::Filled))
        .chain([(largest, Tree::Blank)]);
    for (size, tree) in cases {
        let group = Group::build(suite, size, tree);
        let case = match tree {
            Tree::Filled => format!("{size} devices"),
            Tree::Blank => format!("{size} devices, blank tree"),
        };
        let update = group.self_update(&mut group.committer.restore());
        out.push((format!("self-update commit, {case}"), update.commit.len()));
        let add = group.add_joiner(&mut group.committer.restore());
        out.push((format!("add-one-device commit, {case}"), add.commit.len()));
        out.push((
            format!("Welcome for the added device, {case}"),
            add.welcome.map_or(0, |w| w.len()),
        ));
        out.push((
            format!("state stored by one member device, {case}"),
            group.member.size_bytes(),
        ));
    }
    out
}

/// Sizes in a direct conversation between two single-device accounts.
fn direct_sizes(suite: Suite) -> Vec<(String, usize)> {
    let (mut alice, mut bob) = support::pair(suite);
    let key_package = support::key_package(&mut bob);
    let kp_len = key_package.len();
    let (conversation, bundle) = support::open_direct(&mut alice, key_package);
    let welcome = bundle.welcome.expect("welcome");
    support::receive(&mut bob, &welcome);
    let message = alice
        .encrypt(NOW, conversation, &support::text_1k())
        .expect("encrypt");
    [
        ("KeyPackage", kp_len),
        ("Welcome, 2-member direct conversation", welcome.len()),
        ("commit creating that conversation", bundle.commit.len()),
        ("1 KiB text message, ciphertext", message.message.len()),
    ]
    .map(|(what, bytes)| (what.to_owned(), bytes))
    .into()
}
