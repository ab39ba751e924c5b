//! Fixtures shared by the engine benchmarks and the `suite_sizes` example: accounts that know
//! each other, a direct conversation, groups of any size with a filled or blank ratchet tree,
//! and store snapshots that give every benchmark iteration a fresh copy of a device.
//!
//! The delivery service is played inline: commits are accepted in the order they are made and
//! their bytes are handed straight to the devices that need them.

use std::time::Instant;

use nightjar_core::content::{Content, Message, MessageId};
use nightjar_core::identity::{MAX_DEVICES, SignedDeviceList};
use nightjar_core::storage::{Entry, KvStore, MemoryStore};
use nightjar_core::{
    CommitBundle, ConversationId, ConversationKind, Engine, EngineConfig, Incoming, Suite,
    UpdatePolicy,
};

/// The engine as the benchmarks use it: state in process memory.
pub(crate) type Device = Engine<MemoryStore>;

/// The caller's clock; the engine only compares times, so any fixed value works.
pub(crate) const NOW: u64 = 1_800_000_000_000;

/// Both suites, classical first.
pub(crate) const SUITES: [Suite; 2] = [Suite::Classic, Suite::XWing];

/// Short name of a suite for benchmark ids.
pub(crate) fn label(suite: Suite) -> &'static str {
    match suite {
        Suite::Classic => "classic",
        Suite::XWing => "xwing",
    }
}

/// Engine settings for `suite` with self-updates switched off, so that nothing but the measured
/// operation happens.
pub(crate) fn config(suite: Suite) -> EngineConfig {
    EngineConfig {
        suite,
        update_policy: UpdatePolicy {
            max_received: u32::MAX,
            max_age_ms: u64::MAX,
        },
        ..EngineConfig::default()
    }
}

/// A text message whose body is exactly 1 KiB.
pub(crate) fn text_1k() -> Message {
    Message {
        id: MessageId([7; 16]),
        sent_at_ms: NOW,
        expires_after_secs: None,
        content: Content::Text {
            body: "x".repeat(1024),
        },
    }
}

/// A new single-device account.
pub(crate) fn account(name: &str, suite: Suite) -> (Device, SignedDeviceList) {
    Device::create_account(MemoryStore::new(), name, config(suite), NOW).expect("account")
}

/// Makes `device` accept every list in `lists`, as a client does after fetching them.
pub(crate) fn learn(device: &mut Device, lists: &[(String, SignedDeviceList)]) {
    for (name, list) in lists {
        device.accept_device_list(name, list).expect("device list");
    }
}

/// One key package of `device`.
pub(crate) fn key_package(device: &mut Device) -> Vec<u8> {
    device
        .generate_key_packages(1, false)
        .expect("key package")
        .remove(0)
}

/// Processes `bytes`, which must be a Welcome or another member's commit or message.
pub(crate) fn receive(device: &mut Device, bytes: &[u8]) -> Incoming {
    device.process(NOW, bytes).expect("process")
}

/// Two single-device accounts, `alice` and `bob`, that know each other's device lists.
pub(crate) fn pair(suite: Suite) -> (Device, Device) {
    let (mut alice, alice_list) = account("alice", suite);
    let (mut bob, bob_list) = account("bob", suite);
    alice.accept_device_list("bob", &bob_list).expect("list");
    bob.accept_device_list("alice", &alice_list).expect("list");
    (alice, bob)
}

/// `alice` creates a direct conversation with `bob` from his `key_package`; the server accepts
/// the commit. Returns the conversation and the commit bundle carrying bob's Welcome.
pub(crate) fn open_direct(
    alice: &mut Device,
    key_package: Vec<u8>,
) -> (ConversationId, CommitBundle) {
    let (conversation, bundle) = alice
        .create_conversation(
            NOW,
            ConversationKind::Direct,
            &["bob"],
            None,
            &[key_package],
        )
        .expect("create conversation");
    alice.commit_accepted(NOW, conversation).expect("accepted");
    (conversation, bundle)
}

/// A direct conversation between two single-device accounts.
pub(crate) struct Direct {
    pub(crate) alice: Device,
    pub(crate) bob: Device,
    pub(crate) conversation: ConversationId,
    /// The Welcome bob joined with.
    pub(crate) welcome: Vec<u8>,
}

/// Sets up a [`Direct`] conversation in `suite`.
pub(crate) fn direct(suite: Suite) -> Direct {
    let (mut alice, mut bob) = pair(suite);
    let kp = key_package(&mut bob);
    let (conversation, bundle) = open_direct(&mut alice, kp);
    let welcome = bundle.welcome.expect("welcome");
    receive(&mut bob, &welcome);
    Direct {
        alice,
        bob,
        conversation,
        welcome,
    }
}

impl Direct {
    /// Moves the conversation on by `max_past_epochs` self-updates (alice commits, bob
    /// processes), so both devices hold the full window of past epochs, as they do in a
    /// conversation that has been in use for a while.
    pub(crate) fn settle(&mut self) {
        for _ in 0..self.alice.config().max_past_epochs {
            let bundle = self
                .alice
                .self_update(self.conversation)
                .expect("self-update");
            self.alice
                .commit_accepted(NOW, self.conversation)
                .expect("accepted");
            receive(&mut self.bob, &bundle.commit);
        }
    }
}

/// A copy of a device's whole store; [`Snapshot::restore`] turns it back into a live engine.
///
/// Engines cannot be cloned, so this is how a benchmark repeats an operation that changes
/// state (a commit, a join) from the same starting point.
pub(crate) struct Snapshot {
    entries: Vec<Entry>,
    conversation: Option<ConversationId>,
}

impl Snapshot {
    /// Copies `device`'s store. `conversation`, if given, is loaded into memory on restore.
    pub(crate) fn of(device: &Device, conversation: Option<ConversationId>) -> Self {
        Self {
            entries: device.store().entries().expect("entries"),
            conversation,
        }
    }

    /// A fresh engine over a copy of the snapshot, with the conversation already loaded so
    /// that deserialising the group state is not counted as part of the next operation.
    pub(crate) fn restore(&self) -> Device {
        let store = MemoryStore::new();
        for (key, value) in &self.entries {
            store.put(key, value).expect("put");
        }
        let mut device = Device::load(store).expect("load");
        if let Some(conversation) = self.conversation {
            device.conversation(conversation).expect("conversation");
        }
        device
    }

    /// Total size of the stored keys and values.
    pub(crate) fn size_bytes(&self) -> usize {
        self.entries.iter().map(|(k, v)| k.len() + v.len()).sum()
    }
}

/// How the ratchet tree of a [`Group`] was filled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tree {
    /// Every parent node holds a key, as in a group whose members have all committed once,
    /// and the devices hold the full window of past epochs: the normal state of a long-lived
    /// group.
    Filled,
    /// Everyone but the creator was added in one commit and nobody has committed since, so
    /// only the creator's direct path holds keys.
    Blank,
}

/// A group conversation of `size` devices plus an outsider ready to be added.
///
/// The devices belong to a one-device `creator` account (leaf 0), a one-device `observer`
/// account (leaf 1) and "filler" accounts of up to [`MAX_DEVICES`] devices each. The outsider
/// is the only device of the account `joiner`. Every device knows every account's device list.
pub(crate) struct Group {
    pub(crate) conversation: ConversationId,
    /// A member that made the latest commit: the committer in the benchmarks.
    pub(crate) committer: Snapshot,
    /// Another member, up to date with every commit.
    pub(crate) member: Snapshot,
    /// The joiner, holding the private key of `joiner_key_package`.
    pub(crate) joiner: Snapshot,
    /// A key package of the joiner's only device.
    pub(crate) joiner_key_package: Vec<u8>,
}

impl Group {
    /// Builds a group of `size` (at least 2) devices in `suite` with its tree in state `tree`.
    pub(crate) fn build(suite: Suite, size: usize, tree: Tree) -> Self {
        assert!(size >= 2, "a group has at least two devices");
        let started = Instant::now();
        let (mut creator, creator_list) = account("creator", suite);
        let (mut observer, observer_list) = account("observer", suite);
        let (mut joiner, joiner_list) = account("joiner", suite);
        let mut lists = vec![
            ("creator".to_owned(), creator_list),
            ("observer".to_owned(), observer_list),
            ("joiner".to_owned(), joiner_list),
        ];
        let fillers = filler_devices(suite, size - 2, &mut lists);
        for device in [&mut creator, &mut observer, &mut joiner] {
            learn(device, &lists);
        }

        let observer_kp = key_package(&mut observer);
        let (conversation, bundle) = creator
            .create_conversation(
                NOW,
                ConversationKind::Group,
                &["observer"],
                None,
                &[observer_kp],
            )
            .expect("create group");
        creator
            .commit_accepted(NOW, conversation)
            .expect("accepted");
        receive(&mut observer, &bundle.welcome.expect("welcome"));
        let (mut committer, mut member) = match tree {
            Tree::Filled => grow_filled(conversation, creator, observer, fillers, &lists),
            Tree::Blank => grow_blank(conversation, creator, observer, fillers),
        };
        if tree == Tree::Filled {
            // A device in a busy group keeps secrets (and member lists) of the last
            // `max_past_epochs` epochs, and OpenMLS rewrites them on every message and commit.
            for _ in 0..config(suite).max_past_epochs {
                let bundle = committer.self_update(conversation).expect("self-update");
                committer
                    .commit_accepted(NOW, conversation)
                    .expect("accepted");
                receive(&mut member, &bundle.commit);
            }
        }
        let members = member
            .conversation(conversation)
            .expect("conversation")
            .members
            .len();
        assert_eq!(members, size);

        let joiner_key_package = key_package(&mut joiner);
        eprintln!(
            "set up a {size}-device {} group ({tree:?} tree) in {:.1?}",
            label(suite),
            started.elapsed()
        );
        Self {
            conversation,
            committer: Snapshot::of(&committer, Some(conversation)),
            member: Snapshot::of(&member, Some(conversation)),
            joiner: Snapshot::of(&joiner, None),
            joiner_key_package,
        }
    }

    /// `committer` (a restored [`Group::committer`]) adds the joiner's device and the server
    /// accepts the commit. Returns the commit for the members and the Welcome for the joiner.
    pub(crate) fn add_joiner(&self, committer: &mut Device) -> CommitBundle {
        let bundle = committer
            .add_member(
                self.conversation,
                "joiner",
                std::slice::from_ref(&self.joiner_key_package),
            )
            .expect("add member");
        committer
            .commit_accepted(NOW, self.conversation)
            .expect("accepted");
        bundle
    }

    /// `committer` (a restored [`Group::committer`]) refreshes its leaf and the server accepts
    /// the commit.
    pub(crate) fn self_update(&self, committer: &mut Device) -> CommitBundle {
        let bundle = committer
            .self_update(self.conversation)
            .expect("self-update");
        committer
            .commit_accepted(NOW, self.conversation)
            .expect("accepted");
        bundle
    }
}

/// Grows the group two devices at a time: the first device of each pair joins and makes the
/// next add commit, whose update path covers its own direct path, and the last device to join
/// sends a self-update. Only the device that commits next is kept up to date, so each step
/// costs one Welcome and one commit at the current size. Returns the last committer and the
/// one before it.
fn grow_filled(
    conversation: ConversationId,
    creator: Device,
    observer: Device,
    fillers: Vec<Device>,
    lists: &[(String, SignedDeviceList)],
) -> (Device, Device) {
    let (mut committer, mut member) = (creator, observer);
    let mut fillers = fillers.into_iter().peekable();
    while fillers.peek().is_some() {
        let mut batch: Vec<Device> = fillers.by_ref().take(2).collect();
        let kps: Vec<Vec<u8>> = batch.iter_mut().map(key_package).collect();
        let bundle = committer
            .add_devices(conversation, &kps)
            .expect("add devices");
        committer
            .commit_accepted(NOW, conversation)
            .expect("accepted");
        let mut newcomer = batch.swap_remove(0);
        learn(&mut newcomer, lists);
        receive(&mut newcomer, &bundle.welcome.expect("welcome"));
        member = std::mem::replace(&mut committer, newcomer);
    }
    let bundle = committer.self_update(conversation).expect("self-update");
    committer
        .commit_accepted(NOW, conversation)
        .expect("accepted");
    receive(&mut member, &bundle.commit);
    (committer, member)
}

/// The creator adds every filler device in one commit, which the observer processes. Returns
/// the creator and the observer.
fn grow_blank(
    conversation: ConversationId,
    mut creator: Device,
    mut observer: Device,
    fillers: Vec<Device>,
) -> (Device, Device) {
    if fillers.is_empty() {
        return (creator, observer);
    }
    let kps: Vec<Vec<u8>> = fillers
        .into_iter()
        .map(|mut d| key_package(&mut d))
        .collect();
    let bundle = creator
        .add_devices(conversation, &kps)
        .expect("add devices");
    creator
        .commit_accepted(NOW, conversation)
        .expect("accepted");
    receive(&mut observer, &bundle.commit);
    (creator, observer)
}

/// `count` devices of filler accounts with up to [`MAX_DEVICES`] devices each, in the order they
/// will be added; each account's final signed list is appended to `lists`.
fn filler_devices(
    suite: Suite,
    count: usize,
    lists: &mut Vec<(String, SignedDeviceList)>,
) -> Vec<Device> {
    let mut devices = Vec::with_capacity(count);
    let mut account_no = 0;
    while devices.len() < count {
        let name = format!("filler{account_no:03}");
        let (mut first, mut list) = account(&name, suite);
        let extra = (count - devices.len()).min(MAX_DEVICES) - 1;
        let mut others = Vec::with_capacity(extra);
        for _ in 0..extra {
            let other =
                Device::new_device(MemoryStore::new(), &name, config(suite)).expect("new device");
            list = first
                .approve_device(other.device_entry(NOW))
                .expect("approve");
            others.push(other);
        }
        devices.push(first);
        devices.extend(others);
        lists.push((name, list));
        account_no += 1;
    }
    devices
}
