//! Deterministic simulation of the client state machine against an in-memory delivery service
//! that behaves as the real one does (one commit per epoch, idempotency keys, per-device
//! queues acknowledged by id) and misbehaves on demand: 429 with `Retry-After`, 5xx, requests
//! lost before or after the server applied them, duplicate pushes. No sockets, no clock.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, HashMap, VecDeque};

use nightjar_api::{
    AccountResponse, ApiError, B64, ClaimKeyPackagesResponse, ClaimedKeyPackage, DeviceAddress,
    Envelope, EnvelopeKind, ErrorCode, FrankingStamp, SendResponse,
};
use nightjar_core::content::{Content, Message, MessageId};
use nightjar_core::franking::{self, Commitment, FrankingKey};
use nightjar_core::identity::SignedDeviceList;
use nightjar_core::provisioning::LinkOffer;
use nightjar_core::sealed::SealedSubmission;
use nightjar_core::{ConversationId, ConversationKind, Engine, EngineConfig, Suite, UpdatePolicy};
use nightjar_machine::rows::Consent;
use nightjar_machine::{
    ClientStore, Failure, Machine, MemoryClientStore, Notification, OperationError, Request,
    Response, enqueue_commit,
};

const T0: u64 = 1_800_000_000_000;

/// How the server treats the next request of one kind from one account.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// 429 asking to wait this many ms.
    RateLimited(u64),
    /// 500.
    Internal,
    /// Lost on the way: never reaches the server.
    LostBefore,
    /// Applied by the server, but the answer is lost.
    LostAfter,
}

/// The in-memory delivery service.
#[derive(Default)]
struct Ds {
    lists: HashMap<String, SignedDeviceList>,
    key_packages: HashMap<DeviceAddress, Vec<Vec<u8>>>,
    epochs: HashMap<ConversationId, u64>,
    members: HashMap<ConversationId, Vec<DeviceAddress>>,
    queues: BTreeMap<DeviceAddress, Vec<Envelope>>,
    next_envelope: u64,
    answered: HashMap<(DeviceAddress, String), SendResponse>,
    send_faults: HashMap<String, VecDeque<Fault>>,
    /// Every accepted application message, per conversation, for the no-loss checks.
    accepted: Vec<(ConversationId, DeviceAddress)>,
    sends_seen: Vec<(u64, String)>,
    /// Registered sealed-sender keys by conversation and epoch.
    sealed_keys: HashMap<(ConversationId, u64), Vec<Vec<u8>>>,
    /// Sealed sends posted, and registrations, by account (the tests' view: the delivery
    /// service itself stores no sender for sealed sends).
    sealed_sends: usize,
    registrations: Vec<String>,
    /// Set while a sealed send is handled: it reaches every member device, the sender's own
    /// included, with no sender on the envelope.
    sealing: bool,
    /// Stamps franked application messages as the real server does (its franking key).
    franking_key: Option<FrankingKey>,
    /// Misbehaves: delivers franked messages without their stamp.
    strip_stamps: bool,
}

/// The simulated server's franking key.
const DS_FRANKING_KEY: [u8; 32] = [0x5e; 32];

enum Answer {
    Now(Result<Response, Failure>),
    Lost,
}

fn refused(code: ErrorCode, message: &str) -> Result<Response, Failure> {
    Err(Failure::Refused(ApiError::new(code, message)))
}

impl Ds {
    fn enqueue(
        &mut self,
        to: &DeviceAddress,
        from: &DeviceAddress,
        kind: EnvelopeKind,
        conversation: Option<ConversationId>,
        payload: &[u8],
        now: u64,
    ) {
        self.enqueue_stamped(to, from, kind, conversation, payload, None, now);
    }

    #[allow(clippy::too_many_arguments)]
    fn enqueue_stamped(
        &mut self,
        to: &DeviceAddress,
        from: &DeviceAddress,
        kind: EnvelopeKind,
        conversation: Option<ConversationId>,
        payload: &[u8],
        franking: Option<FrankingStamp>,
        now: u64,
    ) {
        self.next_envelope += 1;
        let envelope = Envelope {
            id: self.next_envelope,
            conversation_id: conversation.map(|c| c.to_string()),
            sender: from.clone(),
            kind,
            payload: B64(payload.to_vec()),
            server_time_ms: now,
            franking: franking.filter(|_| !self.strip_stamps),
        };
        self.queues.entry(to.clone()).or_default().push(envelope);
    }

    fn handle(&mut self, from: &DeviceAddress, request: Request, now: u64) -> Answer {
        match request {
            Request::RegisterSealedKey { conversation, body } => {
                self.registrations.push(from.username.clone());
                let current = self.epochs.get(&conversation).copied().unwrap_or(0);
                if !self
                    .members
                    .get(&conversation)
                    .is_some_and(|m| m.contains(from))
                {
                    return Answer::Now(refused(ErrorCode::NotAMember, "not a member"));
                }
                if body.epoch != current {
                    let mut e =
                        ApiError::new(ErrorCode::EpochConflict, "the conversation moved on");
                    e.current_epoch = Some(current);
                    return Answer::Now(Err(Failure::Refused(e)));
                }
                self.sealed_keys
                    .entry((conversation, body.epoch))
                    .or_default()
                    .push(body.key.0);
                Answer::Now(Ok(Response::Registered))
            }
            Request::SealedSend { conversation, body } => {
                let known = self
                    .sealed_keys
                    .get(&(conversation, body.epoch))
                    .is_some_and(|keys| keys.contains(&body.key.0));
                if !known {
                    return Answer::Now(refused(ErrorCode::SealedKeyUnknown, "unknown key"));
                }
                let submission = SealedSubmission {
                    conversation,
                    epoch: body.epoch,
                    submission_id: &body.submission_id,
                    payload: &body.payload.0,
                };
                if !submission.verify(&body.key.0, &body.signature.0) {
                    return Answer::Now(refused(ErrorCode::Forbidden, "bad signature"));
                }
                self.sealed_sends += 1;
                self.sealing = true;
                let send = nightjar_api::SendRequest {
                    idempotency_key: body.submission_id,
                    kind: EnvelopeKind::Application,
                    epoch: body.epoch,
                    payload: body.payload,
                    welcome: None,
                    members: None,
                    group_info: None,
                    franking_commitment: body.franking_commitment,
                };
                let answer = self.handle(
                    from,
                    Request::Send {
                        conversation,
                        body: send,
                    },
                    now,
                );
                self.sealing = false;
                answer
            }
            Request::Send { conversation, body } => {
                self.sends_seen.push((now, from.username.clone()));
                let fault = self
                    .send_faults
                    .get_mut(&from.username)
                    .and_then(VecDeque::pop_front);
                match fault {
                    Some(Fault::RateLimited(ms)) => {
                        let mut e = ApiError::new(ErrorCode::RateLimited, "slow down");
                        e.retry_after_ms = Some(ms);
                        return Answer::Now(Err(Failure::Refused(e)));
                    }
                    Some(Fault::Internal) => {
                        return Answer::Now(refused(ErrorCode::Internal, "server error"));
                    }
                    Some(Fault::LostBefore) => return Answer::Lost,
                    Some(Fault::LostAfter) => {
                        let _ = self.send(from, conversation, &body, now);
                        return Answer::Lost;
                    }
                    None => {}
                }
                Answer::Now(self.send(from, conversation, &body, now))
            }
            Request::Inbox { after, limit } => {
                let page: Vec<Envelope> = self
                    .queues
                    .get(from)
                    .map(|q| {
                        q.iter()
                            .filter(|e| e.id > after)
                            .take(limit as usize)
                            .cloned()
                            .collect()
                    })
                    .unwrap_or_default();
                Answer::Now(Ok(Response::Inbox(page)))
            }
            Request::Ack { ids } => {
                if let Some(q) = self.queues.get_mut(from) {
                    q.retain(|e| !ids.contains(&e.id));
                }
                Answer::Now(Ok(Response::Acked))
            }
            Request::Account { username } => Answer::Now(match self.lists.get(&username) {
                Some(list) => Ok(Response::Account(AccountResponse {
                    username: username.clone(),
                    identity_key: B64(list.verify().unwrap().identity_key.as_bytes().to_vec()),
                    device_list: B64(list.encode()),
                    // This delivery service runs no directory (the server's suites and
                    // `transparency` tests cover proofs): see `set_require_transparency`.
                    transparency: None,
                })),
                None => refused(ErrorCode::NotFound, "no such account"),
            }),
            // No directory here (machines take lists unproven and never ask).
            Request::OwnHistory
            | Request::DirectoryRoot { .. }
            | Request::DirectoryEpochs { .. } => {
                Answer::Now(refused(ErrorCode::NotFound, "no directory"))
            }
            Request::ClaimKeyPackages { username } => {
                let list = self.lists[&username].verify().unwrap();
                let mut out = Vec::new();
                for d in &list.devices {
                    let address = DeviceAddress {
                        username: username.clone(),
                        device_id: d.device_id.to_string(),
                    };
                    if let Some(kp) = self.key_packages.get_mut(&address).and_then(Vec::pop) {
                        out.push(ClaimedKeyPackage {
                            device_id: address.device_id,
                            key_package: B64(kp),
                            last_resort: false,
                        });
                    }
                }
                Answer::Now(Ok(Response::Claimed(ClaimKeyPackagesResponse {
                    key_packages: out,
                })))
            }
        }
    }

    fn send(
        &mut self,
        from: &DeviceAddress,
        conversation: ConversationId,
        body: &nightjar_api::SendRequest,
        now: u64,
    ) -> Result<Response, Failure> {
        let key = (from.clone(), body.idempotency_key.clone());
        if let Some(answer) = self.answered.get(&key) {
            return Ok(Response::Sent(answer.clone()));
        }
        let current = self.epochs.get(&conversation).copied().unwrap_or(0);
        if body.epoch != current {
            let mut e = ApiError::new(ErrorCode::EpochConflict, "the conversation moved on");
            e.current_epoch = Some(current);
            return Err(Failure::Refused(e));
        }
        let before = self.members.get(&conversation).cloned().unwrap_or_default();
        match body.kind {
            EnvelopeKind::Commit => {
                for m in before.iter().filter(|m| *m != from) {
                    self.enqueue(
                        m,
                        from,
                        EnvelopeKind::Commit,
                        Some(conversation),
                        &body.payload.0,
                        now,
                    );
                }
                if let Some(w) = &body.welcome {
                    for r in &w.recipients {
                        self.enqueue(r, from, EnvelopeKind::Welcome, None, &w.payload.0, now);
                    }
                }
                self.members
                    .insert(conversation, body.members.clone().unwrap());
                self.epochs.insert(conversation, current + 1);
            }
            _ => {
                if !before.contains(from) {
                    return refused(ErrorCode::NotAMember, "not a member");
                }
                let sealed = self.sealing;
                let nobody = DeviceAddress {
                    username: String::new(),
                    device_id: String::new(),
                };
                let sender = if sealed { &nobody } else { from };
                let server_key = self
                    .franking_key
                    .get_or_insert_with(|| FrankingKey::from_bytes(DS_FRANKING_KEY))
                    .clone();
                let stamp = body
                    .franking_commitment
                    .as_ref()
                    .and_then(|c| Commitment::from_slice(&c.0))
                    .map(|c| FrankingStamp {
                        commitment: B64(c.0.to_vec()),
                        tag: B64(franking::tag(&server_key, &c, conversation, now).to_vec()),
                        time_ms: now,
                    });
                for m in before.iter().filter(|m| sealed || *m != from) {
                    self.enqueue_stamped(
                        m,
                        sender,
                        body.kind,
                        Some(conversation),
                        &body.payload.0,
                        stamp.clone(),
                        now,
                    );
                }
                self.accepted.push((conversation, from.clone()));
            }
        }
        let answer = SendResponse {
            message_id: self.next_envelope,
            epoch: self.epochs[&conversation],
        };
        self.answered.insert(key, answer.clone());
        Ok(Response::Sent(answer))
    }
}

fn config() -> EngineConfig {
    EngineConfig {
        suite: Suite::Classic,
        update_policy: UpdatePolicy {
            max_received: 1_000,
            max_age_ms: u64::MAX,
        },
        ..EngineConfig::default()
    }
}

struct Device {
    machine: Machine<MemoryClientStore>,
    address: DeviceAddress,
    seen: Vec<Notification>,
}

impl Device {
    fn store(&self) -> MemoryClientStore {
        self.machine.store().clone()
    }

    /// Texts in the history of `conversation`, in stored order.
    fn texts(&self, conversation: ConversationId) -> Vec<String> {
        self.store()
            .messages(&conversation.to_string())
            .unwrap()
            .into_iter()
            .filter_map(|m| m.text)
            .collect()
    }

    fn received(&self) -> Vec<String> {
        self.seen
            .iter()
            .filter_map(|n| match n {
                Notification::Received(m) => m.text.clone(),
                _ => None,
            })
            .collect()
    }

    fn restart(&mut self) {
        let store = self.store();
        self.machine = Machine::load(store).unwrap();
    }
}

fn address_of(engine: &Engine<MemoryClientStore>) -> DeviceAddress {
    nightjar_machine::address(engine.device())
}

fn publish_key_packages(ds: &mut Ds, engine: &mut Engine<MemoryClientStore>) {
    let kps = engine.generate_key_packages(10, false).unwrap();
    ds.key_packages.insert(address_of(engine), kps);
}

/// A new account whose user has accepted message requests from everyone in the simulation
/// (requests are tested on their own).
fn new_account(ds: &mut Ds, name: &str) -> Device {
    let store = MemoryClientStore::new();
    for other in ["alice", "bob", "carol", "dave"] {
        store.set_consent(other, Some(Consent::Accepted)).unwrap();
    }
    let (mut engine, list) = Engine::create_account(store.clone(), name, config(), T0).unwrap();
    ds.lists.insert(name.into(), list);
    publish_key_packages(ds, &mut engine);
    let address = address_of(&engine);
    Device {
        machine: unproven(Machine::new(store, engine)),
        address,
        seen: Vec::new(),
    }
}

/// A second device of `first`'s account, linked and approved by `first` (which learns the new
/// list at once, as the approving device does).
fn link_device(ds: &mut Ds, first: &mut Device) -> Device {
    let name = first.machine.me().username.clone();
    let store = MemoryClientStore::new();
    let mut engine = Engine::new_device(store.clone(), &name, config()).unwrap();
    let offer = LinkOffer::decode(&engine.link_offer(T0).unwrap().encode()).unwrap();
    let code = engine.link_code().unwrap().display();
    let (list, sealed) = first
        .machine
        .atomic(|engine, _| Ok(engine.approve_link(&offer, &code, None)?))
        .unwrap();
    engine.complete_link(&sealed).unwrap();
    first.machine.accept_list(T0, &name, &list).unwrap();
    ds.lists.insert(name, list);
    publish_key_packages(ds, &mut engine);
    let address = address_of(&engine);
    Device {
        machine: unproven(Machine::new(store, engine)),
        address,
        seen: Vec::new(),
    }
}

/// Carries every request of `d` to the server and back until it has nothing to ask.
fn run(ds: &mut Ds, d: &mut Device, now: u64) {
    for _ in 0..10_000 {
        let Some((id, request)) = d.machine.poll_request() else {
            break;
        };
        let outcome = match ds.handle(&d.address, request, now) {
            Answer::Now(outcome) => outcome,
            Answer::Lost => Err(Failure::Network("connection reset".into())),
        };
        d.machine.handle_response(now, id, outcome).unwrap();
    }
    while let Some(n) = d.machine.poll_notification() {
        d.seen.push(n);
    }
}

fn sync(ds: &mut Ds, d: &mut Device, now: u64) {
    d.machine.sync(now);
    run(ds, d, now);
}

/// Creates a conversation from `creator` with `peers`: the machine fetches the device lists,
/// claims key packages and queues the creating commit.
fn create(
    ds: &mut Ds,
    creator: &mut Device,
    kind: ConversationKind,
    peers: &[&str],
    name: Option<&str>,
    now: u64,
) -> ConversationId {
    let peers: Vec<String> = peers.iter().map(|p| (*p).to_owned()).collect();
    let op = creator
        .machine
        .create_conversation(now, kind, &peers, name)
        .unwrap();
    run(ds, creator, now);
    let created = creator.seen.iter().find_map(|n| match n {
        Notification::Completed {
            operation,
            conversation,
        } if *operation == op => Some(*conversation),
        _ => None,
    });
    let conversation = created.expect("created");
    assert_eq!(
        ds.epochs.get(&conversation),
        Some(&1),
        "the creating commit was posted"
    );
    conversation
}

fn text(body: &str) -> Content {
    Content::Text { body: body.into() }
}

fn send(ds: &mut Ds, d: &mut Device, conversation: ConversationId, body: &str, now: u64) {
    d.machine
        .send_message(now, conversation, text(body))
        .unwrap();
    run(ds, d, now);
}

#[test]
fn application_messages_are_sealed_and_the_senders_own_copy_is_dropped() {
    let mut ds = Ds::default();
    let mut alice = new_account(&mut ds, "alice");
    let mut bob = new_account(&mut ds, "bob");
    let c = create(
        &mut ds,
        &mut alice,
        ConversationKind::Direct,
        &["bob"],
        None,
        T0,
    );
    // The commit's author registered the new epoch's key.
    assert_eq!(ds.registrations, ["alice"]);
    send(&mut ds, &mut alice, c, "one", T0 + 1);
    send(&mut ds, &mut alice, c, "two", T0 + 2);
    sync(&mut ds, &mut bob, T0 + 3);
    assert_eq!(bob.received(), ["one", "two"]);
    // alice registered the key again before her first message (that registration accepts
    // the conversation; the commit's does not), and so does bob, once.
    send(&mut ds, &mut bob, c, "three", T0 + 4);
    send(&mut ds, &mut bob, c, "four", T0 + 5);
    assert_eq!(ds.registrations, ["alice", "alice", "bob"]);
    assert_eq!(ds.sealed_sends, 4);
    sync(&mut ds, &mut alice, T0 + 6);
    assert_eq!(alice.received(), ["three", "four"]);
    // Both got their own messages back (the server cannot leave the unknown sender out), and
    // dropped them without a notice; every queue is empty.
    sync(&mut ds, &mut bob, T0 + 7);
    assert_eq!(bob.received(), ["one", "two"]);
    let notices: Vec<_> = alice
        .seen
        .iter()
        .chain(&bob.seen)
        .filter(|n| matches!(n, Notification::Notice(t) if t.contains("dropped")))
        .collect();
    assert!(notices.is_empty(), "{notices:?}");
    assert!(ds.queues.values().all(Vec::is_empty));
}

#[test]
fn a_send_the_server_has_no_key_for_registers_the_key_and_goes_through() {
    let mut ds = Ds::default();
    let mut alice = new_account(&mut ds, "alice");
    let mut bob = new_account(&mut ds, "bob");
    let c = create(
        &mut ds,
        &mut alice,
        ConversationKind::Direct,
        &["bob"],
        None,
        T0,
    );
    send(&mut ds, &mut alice, c, "first", T0 + 1);
    // The server loses the keys (a committer that never registered, another node's cache).
    ds.sealed_keys.clear();
    send(&mut ds, &mut alice, c, "second", T0 + 2);
    sync(&mut ds, &mut bob, T0 + 3);
    assert_eq!(bob.received(), ["first", "second"]);
    assert_eq!(ds.registrations, ["alice", "alice", "alice"]);
    assert!(alice.machine.store().outbox().unwrap().is_empty());
}

#[test]
fn two_accounts_chat_both_ways_and_every_message_is_stored_and_acknowledged_once() {
    let mut ds = Ds::default();
    let mut alice = new_account(&mut ds, "alice");
    let mut bob = new_account(&mut ds, "bob");
    let c = create(
        &mut ds,
        &mut alice,
        ConversationKind::Direct,
        &["bob"],
        None,
        T0,
    );
    send(&mut ds, &mut alice, c, "hi bob", T0 + 1);
    sync(&mut ds, &mut bob, T0 + 2);
    send(&mut ds, &mut bob, c, "hi alice", T0 + 3);
    sync(&mut ds, &mut alice, T0 + 4);
    send(&mut ds, &mut alice, c, "how are you", T0 + 5);
    sync(&mut ds, &mut bob, T0 + 6);

    assert_eq!(bob.received(), ["hi bob", "how are you"]);
    assert_eq!(alice.received(), ["hi alice"]);
    assert_eq!(bob.texts(c), ["hi bob", "hi alice", "how are you"]);
    assert_eq!(alice.texts(c), ["hi bob", "hi alice", "how are you"]);
    // alice's copy of her own sealed message waits in her queue until she reads it.
    sync(&mut ds, &mut alice, T0 + 7);
    assert_eq!(alice.received(), ["hi alice"]);
    assert_eq!(alice.texts(c), ["hi bob", "hi alice", "how are you"]);
    assert!(
        ds.queues.values().all(Vec::is_empty),
        "everything acknowledged"
    );
    assert!(alice.machine.is_settled(T0 + 6) && bob.machine.is_settled(T0 + 6));
    assert!(
        alice
            .seen
            .iter()
            .any(|n| matches!(n, Notification::Sent { .. }))
    );
    assert!(bob.seen.iter().any(
        |n| matches!(n, Notification::Notice(t) if t.contains("alice started a conversation"))
    ));
}

#[test]
fn a_429_is_waited_out_as_long_as_the_server_asked_and_nothing_is_lost() {
    let mut ds = Ds::default();
    let mut alice = new_account(&mut ds, "alice");
    let mut bob = new_account(&mut ds, "bob");
    let c = create(
        &mut ds,
        &mut alice,
        ConversationKind::Direct,
        &["bob"],
        None,
        T0,
    );
    ds.send_faults
        .insert("alice".into(), VecDeque::from([Fault::RateLimited(3_000)]));
    send(&mut ds, &mut alice, c, "patience", T0 + 10);
    // Refused once; the machine waits exactly as told.
    assert_eq!(ds.accepted.len(), 0);
    assert_eq!(alice.machine.next_wakeup(), Some(T0 + 10 + 3_000));
    let posts_before = ds.sends_seen.len();
    for t in [T0 + 1_000, T0 + 2_000, T0 + 3_009] {
        alice.machine.tick(t);
        run(&mut ds, &mut alice, t);
    }
    assert_eq!(
        ds.sends_seen.len(),
        posts_before,
        "no post before the wait ended"
    );
    assert!(!alice.machine.is_settled(T0 + 3_009) || alice.machine.next_wakeup().is_some());
    alice.machine.tick(T0 + 3_010);
    run(&mut ds, &mut alice, T0 + 3_010);
    assert_eq!(ds.accepted.len(), 1);
    sync(&mut ds, &mut bob, T0 + 3_020);
    assert_eq!(bob.received(), ["patience"]);
}

#[test]
fn a_commit_that_keeps_losing_the_epoch_race_backs_off_instead_of_spinning() {
    let mut ds = Ds::default();
    let mut alice = new_account(&mut ds, "alice");
    let _bob = new_account(&mut ds, "bob");
    let c = create(
        &mut ds,
        &mut alice,
        ConversationKind::Direct,
        &["bob"],
        None,
        T0,
    );
    // The server moved on through commits alice never gets to process (as when the winner
    // came from a device revoked before she read it): every commit of hers conflicts.
    *ds.epochs.get_mut(&c).unwrap() += 3;
    alice
        .machine
        .atomic(|engine, store| {
            let bundle = engine.self_update(c)?;
            enqueue_commit(engine, store, &bundle, T0 + 10)
        })
        .unwrap();
    let posts = |ds: &Ds| ds.sends_seen.iter().filter(|(_, w)| w == "alice").count();
    let before = posts(&ds);
    sync(&mut ds, &mut alice, T0 + 10);
    let first = posts(&ds) - before;
    assert!(
        (1..=4).contains(&first),
        "{first} posts at one instant: a conflict is retried a few times, not for ever"
    );
    let wake = alice.machine.next_wakeup().expect("it waits to try again");
    assert!(wake > T0 + 10, "{wake}");
    // Each later try waits longer; the commit stays queued.
    alice.machine.tick(wake);
    run(&mut ds, &mut alice, wake);
    assert_eq!(posts(&ds) - before, first + 1);
    let next = alice.machine.next_wakeup().unwrap();
    assert!(next - wake >= wake - (T0 + 10), "{next} {wake}");
    assert!(!alice.store().outbox().unwrap().is_empty());
}

#[test]
fn server_errors_and_lost_connections_are_retried_with_backoff_and_delivered_once() {
    let mut ds = Ds::default();
    let mut alice = new_account(&mut ds, "alice");
    let mut bob = new_account(&mut ds, "bob");
    let c = create(
        &mut ds,
        &mut alice,
        ConversationKind::Direct,
        &["bob"],
        None,
        T0,
    );
    ds.send_faults.insert(
        "alice".into(),
        VecDeque::from([Fault::Internal, Fault::LostBefore, Fault::LostAfter]),
    );
    alice.machine.send_message(T0 + 1, c, text("one")).unwrap();
    alice.machine.send_message(T0 + 1, c, text("two")).unwrap();
    let mut now = T0 + 1;
    run(&mut ds, &mut alice, now);
    let mut waits = Vec::new();
    for _ in 0..20 {
        let Some(wake) = alice.machine.next_wakeup() else {
            break;
        };
        waits.push(wake - now);
        now = wake;
        alice.machine.tick(now);
        run(&mut ds, &mut alice, now);
    }
    assert!(alice.machine.is_settled(now));
    assert!(
        waits.windows(2).all(|w| w[0] <= w[1]),
        "backoff grows: {waits:?}"
    );
    sync(&mut ds, &mut bob, now + 1);
    // "one" reached the server twice (the answer to the first post was lost); bob shows it once.
    assert_eq!(bob.received(), ["one", "two"]);
    assert_eq!(bob.texts(c), ["one", "two"]);
}

#[test]
fn the_network_coming_back_retries_at_once() {
    let mut ds = Ds::default();
    let mut alice = new_account(&mut ds, "alice");
    let _bob = new_account(&mut ds, "bob");
    let c = create(
        &mut ds,
        &mut alice,
        ConversationKind::Direct,
        &["bob"],
        None,
        T0,
    );
    ds.send_faults
        .insert("alice".into(), VecDeque::from([Fault::LostBefore; 6]));
    send(&mut ds, &mut alice, c, "offline", T0 + 1);
    assert_eq!(ds.accepted.len(), 0);
    assert!(alice.machine.next_wakeup().is_some());
    ds.send_faults.clear();
    alice.machine.online(T0 + 2);
    run(&mut ds, &mut alice, T0 + 2);
    assert_eq!(ds.accepted.len(), 1);
}

#[test]
fn a_restart_mid_send_posts_again_with_the_same_key_and_the_message_arrives_once() {
    let mut ds = Ds::default();
    let mut alice = new_account(&mut ds, "alice");
    let mut bob = new_account(&mut ds, "bob");
    let c = create(
        &mut ds,
        &mut alice,
        ConversationKind::Direct,
        &["bob"],
        None,
        T0,
    );
    alice
        .machine
        .send_message(T0 + 1, c, text("survives"))
        .unwrap();
    // The post reaches the server, then the process dies before the answer.
    let (_, request) = alice.machine.poll_request().unwrap();
    let Answer::Now(Ok(_)) = ds.handle(&alice.address, request, T0 + 1) else {
        panic!("accepted")
    };
    alice.restart();
    sync(&mut ds, &mut alice, T0 + 2);
    assert!(alice.store().outbox().unwrap().is_empty());
    assert_eq!(
        ds.accepted.len(),
        1,
        "the retry was answered from the idempotency key"
    );

    // bob stores the message, then dies before his acknowledgement reaches the server.
    bob.machine.sync(T0 + 3);
    while let Some((id, request)) = bob.machine.poll_request() {
        if let Request::Ack { .. } = request {
            break;
        }
        let Answer::Now(outcome) = ds.handle(&bob.address, request, T0 + 3) else {
            panic!()
        };
        bob.machine.handle_response(T0 + 3, id, outcome).unwrap();
    }
    while let Some(n) = bob.machine.poll_notification() {
        bob.seen.push(n);
    }
    assert_eq!(bob.received(), ["survives"]);
    bob.restart();
    bob.seen.clear();
    sync(&mut ds, &mut bob, T0 + 4);
    assert!(
        bob.received().is_empty(),
        "redelivered, recognised, not shown again"
    );
    assert_eq!(bob.texts(c), ["survives"]);
    // alice reads her own copy of her sealed message, and drops it.
    sync(&mut ds, &mut alice, T0 + 5);
    assert!(ds.queues.values().all(Vec::is_empty));
}

#[test]
fn duplicate_pushes_are_stored_and_shown_once() {
    let mut ds = Ds::default();
    let mut alice = new_account(&mut ds, "alice");
    let mut bob = new_account(&mut ds, "bob");
    let c = create(
        &mut ds,
        &mut alice,
        ConversationKind::Direct,
        &["bob"],
        None,
        T0,
    );
    send(&mut ds, &mut alice, c, "once", T0 + 1);
    let queued = ds.queues[&bob.address].clone();
    bob.machine.handle_pushed(T0 + 2, queued.clone());
    bob.machine.handle_pushed(T0 + 2, queued.clone());
    run(&mut ds, &mut bob, T0 + 2);
    // The stream reconnects and replays; the inbox read returns them too.
    bob.machine.handle_pushed(T0 + 3, queued);
    sync(&mut ds, &mut bob, T0 + 3);
    assert_eq!(bob.received(), ["once"]);
    assert_eq!(bob.texts(c), ["once"]);
}

#[test]
fn an_epoch_race_is_settled_and_the_loser_retries_after_the_winner() {
    let mut ds = Ds::default();
    let mut alice = new_account(&mut ds, "alice");
    let mut bob = new_account(&mut ds, "bob");
    let mut carol = new_account(&mut ds, "carol");
    let mut dave = new_account(&mut ds, "dave");
    let c = create(
        &mut ds,
        &mut alice,
        ConversationKind::Group,
        &["bob", "carol"],
        Some("g"),
        T0,
    );
    sync(&mut ds, &mut bob, T0 + 1);
    sync(&mut ds, &mut carol, T0 + 1);
    // alice and bob each add dave in the same epoch, and each sends a message after it.
    for d in [&mut alice, &mut bob] {
        let list = ds.lists["dave"].clone();
        d.machine.accept_list(T0 + 2, "dave", &list).unwrap();
        let Answer::Now(Ok(Response::Claimed(claimed))) = ds.handle(
            &d.address,
            Request::ClaimKeyPackages {
                username: "dave".into(),
            },
            T0 + 2,
        ) else {
            panic!()
        };
        let kps: Vec<Vec<u8>> = claimed
            .key_packages
            .into_iter()
            .map(|k| k.key_package.0)
            .collect();
        d.machine
            .atomic(|engine, store| {
                let bundle = engine.add_member(c, "dave", &kps)?;
                enqueue_commit(engine, store, &bundle, T0 + 2)
            })
            .unwrap();
    }
    alice
        .machine
        .send_message(T0 + 3, c, text("from alice"))
        .unwrap();
    bob.machine
        .send_message(T0 + 3, c, text("from bob"))
        .unwrap();
    run(&mut ds, &mut alice, T0 + 3);
    run(&mut ds, &mut bob, T0 + 3);
    // bob lost: he processes alice's commit, drops his own add (dave is in), sends his message.
    for t in 4..8 {
        for d in [&mut alice, &mut bob, &mut carol, &mut dave] {
            sync(&mut ds, d, T0 + t);
        }
    }
    for d in [&alice, &bob, &carol, &dave] {
        assert!(
            d.store().outbox().unwrap().is_empty(),
            "{} has nothing queued",
            d.address.username
        );
    }
    assert_eq!(carol.received(), ["from alice", "from bob"]);
    assert_eq!(dave.received(), ["from alice", "from bob"]);
    assert_eq!(alice.received(), ["from bob"]);
    assert_eq!(bob.received(), ["from alice"]);
    let members = ds.members[&c]
        .iter()
        .filter(|m| m.username == "dave")
        .count();
    assert_eq!(members, 1, "dave was added once");
}

#[test]
fn a_device_approved_during_a_send_gets_the_message() {
    let mut ds = Ds::default();
    let mut alice = new_account(&mut ds, "alice");
    let mut bob = new_account(&mut ds, "bob");
    let c = create(
        &mut ds,
        &mut alice,
        ConversationKind::Direct,
        &["bob"],
        None,
        T0,
    );
    sync(&mut ds, &mut bob, T0 + 1);
    // bob's message waits out a 429 while bob approves a new device of his own.
    ds.send_faults
        .insert("bob".into(), VecDeque::from([Fault::RateLimited(1_000)]));
    send(&mut ds, &mut bob, c, "to every device", T0 + 2);
    assert_eq!(ds.accepted.len(), 0);
    let mut bob2 = link_device(&mut ds, &mut bob);
    bob.machine.tick(T0 + 1_002);
    bob.machine.sync(T0 + 1_002);
    run(&mut ds, &mut bob, T0 + 1_002);
    // The new device was added first, then the message went out in the new epoch.
    assert!(bob.store().outbox().unwrap().is_empty());
    sync(&mut ds, &mut bob2, T0 + 1_003);
    sync(&mut ds, &mut alice, T0 + 1_003);
    assert_eq!(alice.received(), ["to every device"], "{:?}", bob.seen);
    assert_eq!(
        alice.received(),
        ["to every device"],
        "bob: {:?}\nalice: {:?}\nbob2: {:?}",
        bob.seen,
        alice.seen,
        bob2.seen
    );
}

#[test]
fn a_conversation_is_not_created_with_a_swapped_identity_key() {
    let mut ds = Ds::default();
    let mut alice = new_account(&mut ds, "alice");
    let _bob = new_account(&mut ds, "bob");
    let c = create(
        &mut ds,
        &mut alice,
        ConversationKind::Direct,
        &["bob"],
        None,
        T0,
    );
    assert_eq!(alice.machine.direct_conversation("bob").unwrap(), Some(c));
    // The server now answers for bob with an account key of its own.
    let (_, forged) =
        Engine::create_account(MemoryClientStore::new(), "bob", config(), T0).unwrap();
    ds.lists.insert("bob".into(), forged);
    let op = alice
        .machine
        .create_conversation(T0 + 1, ConversationKind::Group, &["bob".into()], Some("g"))
        .unwrap();
    run(&mut ds, &mut alice, T0 + 1);
    assert!(alice.seen.iter().any(|n| matches!(n,
        Notification::OperationFailed { operation, reason } if *operation == op && *reason == OperationError::IdentityChanged("bob".into()))));
    assert!(
        alice
            .seen
            .iter()
            .any(|n| matches!(n, Notification::IdentityChanged { username } if username == "bob"))
    );
    assert_eq!(
        alice.store().conversations().unwrap().len(),
        1,
        "nothing created"
    );
    // Until the user verifies the change, nothing new starts with bob.
    assert!(
        alice
            .machine
            .create_conversation(T0 + 2, ConversationKind::Direct, &["bob".into()], None)
            .is_err()
    );
}

#[test]
fn a_new_device_without_key_packages_yet_is_added_once_it_has_some() {
    let mut ds = Ds::default();
    let mut alice = new_account(&mut ds, "alice");
    let mut bob = new_account(&mut ds, "bob");
    let c = create(
        &mut ds,
        &mut alice,
        ConversationKind::Direct,
        &["bob"],
        None,
        T0,
    );
    sync(&mut ds, &mut bob, T0 + 1);
    let mut bob2 = link_device(&mut ds, &mut bob);
    // bob2 has not uploaded its key packages when bob first reconciles.
    let kps = ds.key_packages.remove(&bob2.address).unwrap();
    sync(&mut ds, &mut bob, T0 + 2);
    assert_eq!(ds.epochs[&c], 1, "nothing to add bob2 with yet");
    let wake = bob.machine.next_wakeup().expect("a retry is scheduled");
    ds.key_packages.insert(bob2.address.clone(), kps);
    bob.machine.tick(wake);
    run(&mut ds, &mut bob, wake);
    assert_eq!(ds.epochs[&c], 2, "bob2 was added");
    sync(&mut ds, &mut bob2, wake + 1);
    send(&mut ds, &mut alice, c, "to both of bob's devices", wake + 2);
    sync(&mut ds, &mut alice, wake + 2);
    sync(&mut ds, &mut bob2, wake + 3);
    assert_eq!(bob2.received(), ["to both of bob's devices"]);
}

#[test]
fn typing_and_read_receipts_are_events_not_history() {
    let mut ds = Ds::default();
    let mut alice = new_account(&mut ds, "alice");
    let mut bob = new_account(&mut ds, "bob");
    let c = create(
        &mut ds,
        &mut alice,
        ConversationKind::Direct,
        &["bob"],
        None,
        T0,
    );
    send(&mut ds, &mut alice, c, "read me", T0 + 1);
    sync(&mut ds, &mut bob, T0 + 2);
    bob.machine
        .send_message(T0 + 3, c, Content::Typing { active: true })
        .unwrap();
    let read = nightjar_core::content::MessageId::from_hex(
        &bob.store().messages(&c.to_string()).unwrap()[0].id,
    )
    .unwrap();
    bob.machine
        .send_message(
            T0 + 3,
            c,
            Content::ReadReceipt {
                message_ids: vec![read],
            },
        )
        .unwrap();
    run(&mut ds, &mut bob, T0 + 3);
    sync(&mut ds, &mut alice, T0 + 4);
    assert!(alice.seen.iter().any(|n| matches!(n,
        Notification::Typing { conversation, from, active: true } if *conversation == c && from == "bob")));
    assert!(alice.seen.iter().any(|n| matches!(n,
        Notification::Read { from, message_ids, .. } if from == "bob" && *message_ids == [read])));
    assert_eq!(
        alice.texts(c),
        ["read me"],
        "neither is kept in the history"
    );
}

#[test]
fn delivery_receipts_come_back_to_the_sender_and_never_go_to_a_stranger() {
    let mut ds = Ds::default();
    let mut alice = new_account(&mut ds, "alice");
    let mut bob = new_account(&mut ds, "bob");
    bob.machine.set_delivery_receipts(true);
    let c = create(
        &mut ds,
        &mut alice,
        ConversationKind::Direct,
        &["bob"],
        None,
        T0,
    );
    send(&mut ds, &mut alice, c, "one", T0 + 1);
    send(&mut ds, &mut alice, c, "two", T0 + 2);
    sync(&mut ds, &mut bob, T0 + 3);
    sync(&mut ds, &mut alice, T0 + 4);
    let ids: Vec<String> = alice
        .seen
        .iter()
        .filter_map(|n| match n {
            Notification::Delivered {
                from, message_ids, ..
            } if from == "bob" => Some(message_ids.iter().map(|m| m.to_hex()).collect::<Vec<_>>()),
            _ => None,
        })
        .flatten()
        .collect();
    let sent: Vec<String> = alice
        .store()
        .messages(&c.to_string())
        .unwrap()
        .into_iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(
        ids, sent,
        "one receipt for both, after one read of the inbox"
    );
    assert_eq!(alice.texts(c), ["one", "two"], "receipts are not history");

    // A stranger's message is a request: no receipt tells them it arrived.
    let mut mallory = new_account(&mut ds, "mallory");
    let before = ds.accepted.len();
    bob.machine.store().set_consent("mallory", None).unwrap();
    let m = create(
        &mut ds,
        &mut mallory,
        ConversationKind::Direct,
        &["bob"],
        None,
        T0 + 5,
    );
    send(&mut ds, &mut mallory, m, "hi, remember me?", T0 + 6);
    let bob_posts = ds.sends_seen.iter().filter(|(_, who)| who == "bob").count();
    sync(&mut ds, &mut bob, T0 + 7);
    assert_eq!(
        ds.sends_seen.iter().filter(|(_, who)| who == "bob").count(),
        bob_posts,
        "bob sent nothing to mallory"
    );
    assert_eq!(ds.accepted.len(), before + 1);
}

#[test]
fn leaving_a_group_takes_every_device_of_the_account_out_and_none_comes_back() {
    let mut ds = Ds::default();
    let mut alice = new_account(&mut ds, "alice");
    let mut alice2 = link_device(&mut ds, &mut alice);
    let mut bob = new_account(&mut ds, "bob");
    let mut carol = new_account(&mut ds, "carol");
    let g = create(
        &mut ds,
        &mut alice,
        ConversationKind::Group,
        &["bob", "carol"],
        Some("g"),
        T0,
    );
    for t in 1..3 {
        for d in [&mut alice2, &mut bob, &mut carol, &mut alice] {
            sync(&mut ds, d, T0 + t);
        }
    }
    let members = |ds: &Ds| {
        ds.members[&g]
            .iter()
            .filter(|m| m.username == "alice")
            .count()
    };
    assert_eq!(members(&ds), 2, "both of alice's devices are in");

    alice.machine.leave_group(T0 + 10, g).unwrap();
    run(&mut ds, &mut alice, T0 + 10);
    for t in 11..16 {
        for d in [&mut bob, &mut carol, &mut alice2, &mut alice] {
            sync(&mut ds, d, T0 + t);
        }
    }
    // (The fake server routes by the commit's `members` list, which still names a device whose
    // leave proposal the commit applies; the real one routes by the group's state.)
    let in_group: Vec<String> = bob
        .machine
        .engine()
        .conversation(g)
        .unwrap()
        .members
        .into_iter()
        .map(|m| m.username)
        .collect();
    assert!(
        !in_group.contains(&"alice".to_owned()),
        "alice is still in: {in_group:?}"
    );
    for d in [&alice, &alice2] {
        let row = d.store().conversation_row(&g.to_string()).unwrap().unwrap();
        assert!(!row.active, "{} still shows the group", d.address.device_id);
        assert!(d.store().outbox().unwrap().is_empty());
    }
    // The group goes on without her.
    send(&mut ds, &mut bob, g, "after alice left", T0 + 20);
    sync(&mut ds, &mut carol, T0 + 21);
    assert_eq!(carol.received(), ["after alice left"]);
    sync(&mut ds, &mut alice, T0 + 21);
    assert!(!alice.received().contains(&"after alice left".to_owned()));
}

/// A machine that takes device lists without directory proofs (this fake server has none).
fn unproven(mut machine: Machine<MemoryClientStore>) -> Machine<MemoryClientStore> {
    machine.set_require_transparency(false);
    machine
}

#[test]
fn a_call_rings_every_device_the_first_answer_wins_and_each_device_keeps_one_history_row() {
    use nightjar_machine::calls::{CallEnd, CallEvent};
    let mut ds = Ds::default();
    let mut alice = new_account(&mut ds, "alice");
    let mut bob1 = new_account(&mut ds, "bob");
    let mut bob2 = link_device(&mut ds, &mut bob1);
    // Consent is each device's (a stranger's call rings nowhere, tested in `calls`).
    bob2.store()
        .set_consent("alice", Some(Consent::Accepted))
        .unwrap();
    let c = create(
        &mut ds,
        &mut alice,
        ConversationKind::Direct,
        &["bob"],
        None,
        T0,
    );
    let call = alice
        .machine
        .start_call(T0 + 10, c, true, "offer-sdp".into())
        .unwrap();
    run(&mut ds, &mut alice, T0 + 10);
    for bob in [&mut bob1, &mut bob2] {
        sync(&mut ds, bob, T0 + 20);
        assert!(bob.seen.iter().any(|n| matches!(n,
            Notification::Call(CallEvent::Incoming { call: id, from, video: true, offer, .. })
                if *id == call && from == "alice" && offer == "offer-sdp")));
    }
    bob1.machine
        .answer_call(T0 + 30, call, "answer-sdp".into())
        .unwrap();
    run(&mut ds, &mut bob1, T0 + 30);
    // Both ends derive the same SFrame base key for this call, each with its own sender index.
    let (ka, kb) = (
        alice.machine.call_keys(call).unwrap(),
        bob1.machine.call_keys(call).unwrap(),
    );
    assert_eq!(ka.base_key(), kb.base_key());
    assert_eq!(ka.epoch, kb.epoch);
    assert_ne!(ka.leaf_index, kb.leaf_index);

    sync(&mut ds, &mut bob2, T0 + 40);
    assert!(bob2.seen.iter().any(|n| matches!(
        n,
        Notification::Call(CallEvent::Ended {
            end: CallEnd::AnsweredElsewhere,
            ..
        })
    )));
    sync(&mut ds, &mut alice, T0 + 40);
    assert!(alice.seen.iter().any(|n| matches!(n,
        Notification::Call(CallEvent::Answered { answer, .. }) if answer == "answer-sdp")));

    alice.machine.hang_up(T0 + 65_040, call).unwrap();
    run(&mut ds, &mut alice, T0 + 65_040);
    sync(&mut ds, &mut bob1, T0 + 65_050);
    assert!(bob1.seen.iter().any(|n| matches!(
        n,
        Notification::Call(CallEvent::Ended {
            end: CallEnd::Ended { .. },
            ..
        })
    )));
    // One row per device, and no signalling in the history.
    assert_eq!(alice.texts(c), ["video call, 1:05"]);
    assert_eq!(bob1.texts(c), ["video call, 1:05"]);
    assert_eq!(bob2.texts(c), ["video call answered on another device"]);
    assert!(alice.machine.calls().unwrap().calls.is_empty());
    assert!(bob1.machine.calls().unwrap().calls.is_empty());
}

#[test]
fn a_call_nobody_answers_rings_out_and_is_missed() {
    use nightjar_machine::calls::RING_TIMEOUT_MS;
    let mut ds = Ds::default();
    let mut alice = new_account(&mut ds, "alice");
    let mut bob = new_account(&mut ds, "bob");
    let c = create(
        &mut ds,
        &mut alice,
        ConversationKind::Direct,
        &["bob"],
        None,
        T0,
    );
    alice
        .machine
        .start_call(T0 + 10, c, false, "offer".into())
        .unwrap();
    run(&mut ds, &mut alice, T0 + 10);
    sync(&mut ds, &mut bob, T0 + 20);
    // Time passes: both machines wake up for the ring's end.
    let end = T0 + 10 + RING_TIMEOUT_MS;
    assert_eq!(alice.machine.next_wakeup(), Some(end));
    alice.machine.tick(end);
    run(&mut ds, &mut alice, end);
    bob.machine.tick(end);
    run(&mut ds, &mut bob, end);
    assert_eq!(alice.texts(c), ["voice call: no answer"]);
    assert_eq!(bob.texts(c), ["missed voice call"]);
    // The caller's hang-up reaches bob later and changes nothing.
    sync(&mut ds, &mut bob, end + 5);
    assert_eq!(bob.texts(c), ["missed voice call"]);
}

#[test]
fn a_group_call_rings_the_members_rotates_keys_as_people_join_and_leave_and_ends_with_one_row_each()
{
    use nightjar_machine::calls::CallEvent;
    let mut ds = Ds::default();
    let mut alice = new_account(&mut ds, "alice");
    let mut bob = new_account(&mut ds, "bob");
    let mut carol = new_account(&mut ds, "carol");
    for (d, others) in [
        (&bob, ["alice", "carol"]),
        (&carol, ["alice", "bob"]),
        (&alice, ["bob", "carol"]),
    ] {
        for o in others {
            d.store().set_consent(o, Some(Consent::Accepted)).unwrap();
        }
    }
    let g = create(
        &mut ds,
        &mut alice,
        ConversationKind::Group,
        &["bob", "carol"],
        Some("team"),
        T0,
    );
    for d in [&mut bob, &mut carol] {
        sync(&mut ds, d, T0 + 1);
    }
    let epoch = |d: &mut Device| d.machine.engine().conversation(g).unwrap().epoch;
    let before = epoch(&mut alice);

    // Alice starts a video call: bob and carol ring; starting it rotated the keys.
    let call = alice.machine.start_group_call(T0 + 10, g, true).unwrap();
    run(&mut ds, &mut alice, T0 + 10);
    assert_eq!(
        epoch(&mut alice),
        before + 1,
        "joining commits a fresh leaf key"
    );
    for d in [&mut bob, &mut carol] {
        sync(&mut ds, d, T0 + 20);
        assert!(d.seen.iter().any(|n| matches!(n,
            Notification::Call(CallEvent::Invited { call: id, from, video: true, .. })
                if *id == call && from == "alice")));
    }
    // Bob joins: another rotation, and everyone in the call derives the same key.
    bob.machine.join_call(T0 + 30, call, true).unwrap();
    run(&mut ds, &mut bob, T0 + 30);
    for d in [&mut alice, &mut carol] {
        sync(&mut ds, d, T0 + 40);
    }
    assert_eq!(epoch(&mut bob), before + 2);
    let (ka, kb) = (
        alice.machine.call_keys(call).unwrap(),
        bob.machine.call_keys(call).unwrap(),
    );
    assert_eq!((ka.epoch, ka.base_key()), (kb.epoch, kb.base_key()));
    assert_ne!(ka.leaf_index, kb.leaf_index);
    let in_call = |d: &Device| {
        let book = d.machine.calls().unwrap();
        let mut names: Vec<String> = book.calls[&call.to_hex()]
            .participants
            .values()
            .cloned()
            .collect();
        names.sort();
        names
    };
    assert_eq!(in_call(&alice), ["alice", "bob"]);
    assert_eq!(in_call(&carol), ["alice", "bob"], "carol sees who is in it");

    // Carol joins, then leaves: the remaining participant with the lowest device id rotates
    // the keys once more, so the epoch carol last keyed is not the call's any longer.
    carol.machine.join_call(T0 + 50, call, true).unwrap();
    run(&mut ds, &mut carol, T0 + 50);
    for d in [&mut alice, &mut bob] {
        sync(&mut ds, d, T0 + 60);
    }
    let carols_key = carol.machine.call_keys(call).unwrap();
    carol.machine.hang_up(T0 + 62_050, call).unwrap();
    run(&mut ds, &mut carol, T0 + 62_050);
    for t in 0..3 {
        for d in [&mut alice, &mut bob] {
            sync(&mut ds, d, T0 + 62_060 + t);
        }
    }
    let (ka, kb) = (
        alice.machine.call_keys(call).unwrap(),
        bob.machine.call_keys(call).unwrap(),
    );
    assert_eq!((ka.epoch, ka.base_key()), (kb.epoch, kb.base_key()));
    assert_eq!(
        ka.epoch,
        carols_key.epoch + 1,
        "one rotation after carol left"
    );
    assert_ne!(ka.base_key(), carols_key.base_key());
    assert_eq!(carol.texts(g), ["group video call, 1:02"]);

    // Alice and bob hang up: one row each; the call is over everywhere.
    alice.machine.hang_up(T0 + 70_000, call).unwrap();
    run(&mut ds, &mut alice, T0 + 70_000);
    sync(&mut ds, &mut bob, T0 + 70_010);
    bob.machine.hang_up(T0 + 70_020, call).unwrap();
    run(&mut ds, &mut bob, T0 + 70_020);
    for d in [&mut alice, &mut carol] {
        sync(&mut ds, d, T0 + 70_030);
    }
    assert_eq!(alice.texts(g), ["group video call, 1:09"]);
    assert_eq!(bob.texts(g), ["group video call, 1:09"]);
    assert_eq!(carol.texts(g), ["group video call, 1:02"]);
    for d in [&alice, &bob, &carol] {
        assert!(d.machine.calls().unwrap().calls.is_empty());
    }
}

#[test]
fn a_device_that_restarts_mid_call_leaves_it_instead_of_staying_in_it_for_good() {
    let mut ds = Ds::default();
    let mut alice = new_account(&mut ds, "alice");
    let mut bob = new_account(&mut ds, "bob");
    bob.store()
        .set_consent("alice", Some(Consent::Accepted))
        .unwrap();
    let g = create(
        &mut ds,
        &mut alice,
        ConversationKind::Group,
        &["bob"],
        Some("pair"),
        T0,
    );
    sync(&mut ds, &mut bob, T0 + 1);
    let call = alice.machine.start_group_call(T0 + 10, g, false).unwrap();
    run(&mut ds, &mut alice, T0 + 10);
    sync(&mut ds, &mut bob, T0 + 20);
    assert_eq!(bob.machine.calls().unwrap().calls.len(), 1);
    // The page reloads: its media is gone; the stored book still says it is in the call.
    assert!(alice.machine.calls().unwrap().live_here().is_some());
    alice
        .machine
        .leave_calls_of_an_earlier_run(T0 + 5_000)
        .unwrap();
    run(&mut ds, &mut alice, T0 + 5_000);
    assert!(alice.machine.calls().unwrap().live_here().is_none());
    assert_eq!(alice.texts(g), ["group voice call, 0:04"]);
    // Bob's device sees it end, and a new call can start.
    sync(&mut ds, &mut bob, T0 + 5_010);
    assert!(bob.machine.calls().unwrap().calls.is_empty());
    assert_eq!(bob.texts(g), ["missed group voice call"]);
    assert_ne!(
        alice
            .machine
            .start_group_call(T0 + 6_000, g, false)
            .unwrap(),
        call
    );
}

#[test]
fn a_member_cannot_edit_or_delete_another_members_message() {
    let mut ds = Ds::default();
    let mut alice = new_account(&mut ds, "alice");
    let mut bob = new_account(&mut ds, "bob");
    let c = create(
        &mut ds,
        &mut alice,
        ConversationKind::Direct,
        &["bob"],
        None,
        T0,
    );
    send(&mut ds, &mut alice, c, "original", T0 + 1);
    sync(&mut ds, &mut bob, T0 + 2);
    let original = bob.store().messages(&c.to_string()).unwrap()[0].clone();
    let target = nightjar_core::content::MessageId::from_hex(&original.id).unwrap();

    // bob's own machine refuses.
    let refused = bob
        .machine
        .send_message(T0 + 3, c, Content::Delete { target })
        .unwrap_err();
    assert!(refused.to_string().contains("only your own"), "{refused}");

    // A hostile bob makes his client believe the message is his, and sends an edit and a
    // delete of it; he also sends a message of his own reusing its id, and edits that.
    let mut forged = original.clone();
    forged.from = "bob".into();
    forged.outgoing = true;
    bob.store().insert_message(&forged, T0 + 3, true).unwrap();
    for content in [
        Content::Edit {
            target,
            body: "forged".into(),
        },
        Content::Delete { target },
    ] {
        bob.machine.send_message(T0 + 3, c, content).unwrap();
    }
    run(&mut ds, &mut bob, T0 + 3);
    alice.seen.clear();
    sync(&mut ds, &mut alice, T0 + 4);
    let history = alice.store().messages(&c.to_string()).unwrap();
    assert_eq!(history.len(), 1, "no edit or delete row: {history:?}");
    assert_eq!(history[0].text.as_deref(), Some("original"));
    assert!(!history[0].detail.edited && !history[0].detail.deleted);
    let notices: Vec<&String> = alice
        .seen
        .iter()
        .filter_map(|n| match n {
            Notification::Notice(t) => Some(t),
            _ => None,
        })
        .collect();
    assert_eq!(notices.len(), 2, "{notices:?}");
    assert!(notices[0].contains("bob tried to edit a message that is not theirs"));
}

#[test]
fn the_disappearing_timer_applies_to_both_sides_and_counts_from_reading() {
    let mut ds = Ds::default();
    let mut alice = new_account(&mut ds, "alice");
    let mut bob = new_account(&mut ds, "bob");
    let c = create(
        &mut ds,
        &mut alice,
        ConversationKind::Direct,
        &["bob"],
        None,
        T0,
    );
    alice
        .machine
        .send_message(T0 + 1, c, Content::DisappearingTimer { seconds: 60 })
        .unwrap();
    run(&mut ds, &mut alice, T0 + 1);
    send(&mut ds, &mut alice, c, "from alice", T0 + 2);
    sync(&mut ds, &mut bob, T0 + 3);
    send(&mut ds, &mut bob, c, "from bob", T0 + 4);
    sync(&mut ds, &mut alice, T0 + 5);

    let key = c.to_string();
    for device in [&alice, &bob] {
        let texts: Vec<_> = device
            .store()
            .messages(&key)
            .unwrap()
            .into_iter()
            .filter(|m| m.kind == "text")
            .collect();
        assert_eq!(texts.len(), 2);
        assert!(
            texts.iter().all(|m| m.expires_after_secs == Some(60)),
            "{texts:?}"
        );
        // The sender's own copy counts from sending, the other's once read.
        for m in &texts {
            assert_eq!(m.expires_at.is_some(), m.outgoing, "{m:?}");
        }
    }
    // bob reads alice's message much later: it lasts 60 s from then.
    let read_at = T0 + 3_600_000;
    let shown = bob.store().take_unshown(read_at).unwrap();
    assert!(
        shown
            .iter()
            .any(|m| m.text.as_deref() == Some("from alice"))
    );
    let gone = bob.store().expire_messages(read_at + 59_000).unwrap();
    assert_eq!(gone.len(), 1, "bob's own message, sent an hour ago");
    assert_eq!(gone[0].text.as_deref(), Some("from bob"));
    let gone = bob.store().expire_messages(read_at + 60_000).unwrap();
    assert_eq!(gone.len(), 1);
    assert_eq!(gone[0].text.as_deref(), Some("from alice"));
    let left: Vec<String> = bob
        .store()
        .messages(&key)
        .unwrap()
        .into_iter()
        .map(|m| m.kind)
        .collect();
    assert_eq!(left, ["timer"], "only the timer change stays");
}

/// A hostile member's message: `body` encrypted by its engine with `forgery`, posted sealed
/// as its machine would post it (the epoch's key is registered already).
fn forged_send(
    ds: &mut Ds,
    d: &mut Device,
    conversation: ConversationId,
    body: &str,
    forgery: &nightjar_core::Forgery,
    now: u64,
) {
    let mut id = [0u8; 16];
    for (i, b) in body.bytes().enumerate() {
        id[i % 16] ^= b;
    }
    let message = Message {
        id: MessageId(id),
        sent_at_ms: now,
        expires_after_secs: None,
        content: text(body),
    };
    let (out, sealed) = d
        .machine
        .atomic(|engine, _| {
            let out = engine.encrypt_forged(now, conversation, &message, forgery)?;
            Ok((out, engine.sealed_key(conversation)?))
        })
        .unwrap();
    let submission_id = format!("forged-{body}");
    let signature = sealed.sign(&SealedSubmission {
        conversation,
        epoch: out.epoch,
        submission_id: &submission_id,
        payload: &out.message,
    });
    let body = nightjar_api::SealedSendRequest {
        submission_id,
        epoch: out.epoch,
        payload: B64(out.message),
        key: B64(sealed.public().to_vec()),
        signature: B64(signature.to_vec()),
        franking_commitment: Some(B64(out.franking_commitment.as_bytes().to_vec())),
    };
    match ds.handle(&d.address, Request::SealedSend { conversation, body }, now) {
        Answer::Now(Ok(_)) => {}
        _ => panic!("the server refused the forged message"),
    }
}

/// The history row of `body` in `conversation` on `d`, if it has one.
fn row_of(
    d: &Device,
    conversation: ConversationId,
    body: &str,
) -> Option<nightjar_machine::rows::StoredMessage> {
    d.store()
        .messages(&conversation.to_string())
        .unwrap()
        .into_iter()
        .find(|m| m.text.as_deref() == Some(body))
}

fn dropped_notices(d: &Device) -> Vec<String> {
    d.seen
        .iter()
        .filter_map(|n| match n {
            Notification::Notice(t) if t.starts_with("dropped a message from carol") => {
                Some(t.clone())
            }
            _ => None,
        })
        .collect()
}

#[test]
fn a_hostile_members_broken_franking_is_dropped_and_honest_messages_are_reportable() {
    use nightjar_core::Forgery;
    let mut ds = Ds::default();
    let mut carol = new_account(&mut ds, "carol");
    let mut bob = new_account(&mut ds, "bob");
    let c = create(
        &mut ds,
        &mut carol,
        ConversationKind::Direct,
        &["bob"],
        None,
        T0,
    );
    // An honest message: bob keeps what reporting it takes, and it verifies as the server
    // will check it.
    send(&mut ds, &mut carol, c, "hello", T0 + 1);
    sync(&mut ds, &mut bob, T0 + 2);
    assert_eq!(bob.received(), ["hello"]);
    let row = row_of(&bob, c, "hello").unwrap();
    let record = row.detail.franking.clone().expect("a reportable message");
    let commitment = Commitment::from_slice(&record.commitment.0).unwrap();
    let server_key = FrankingKey::from_bytes(DS_FRANKING_KEY);
    assert!(franking::verify_tag(
        &server_key,
        &commitment,
        c,
        record.time_ms,
        &record.tag.0
    ));
    let sender = nightjar_core::identity::DeviceCredential {
        username: "carol".into(),
        device_id: nightjar_core::identity::DeviceId::parse(&row.device).unwrap(),
    };
    let key = FrankingKey::from_slice(&record.key.0).unwrap();
    let committed = franking::Committed {
        conversation: c,
        sender: &sender,
        message: &record.message.0,
    };
    assert!(franking::opens(&key, &committed, &commitment));
    let device_key = ds.lists["carol"].verify().unwrap().devices[0].signature_key;
    assert!(franking::verify_signature(
        &device_key,
        &commitment,
        &record.signature.0
    ));
    assert_eq!(
        Message::decode(&record.message.0).unwrap().content,
        text("hello")
    );
    // The notification shows the message without its franking record, and Debug never
    // prints one.
    assert!(bob.seen.iter().all(|n| match n {
        Notification::Received(m) => m.detail.franking.is_none(),
        _ => true,
    }));
    assert!(!format!("{row:?}").contains(&format!("{:?}", record.key.0)));
    assert!(format!("{row:?}").contains("FrankingRecord(<redacted>)"));

    // carol commits to (and signs) other content than she sends; signs with another key;
    // puts another commitment beside the ciphertext: bob drops each, saying so.
    let lie = Message {
        id: MessageId([9; 16]),
        sent_at_ms: T0,
        expires_after_secs: None,
        content: text("something else"),
    };
    forged_send(
        &mut ds,
        &mut carol,
        c,
        "committed to other content",
        &Forgery::CommitTo(lie),
        T0 + 3,
    );
    forged_send(
        &mut ds,
        &mut carol,
        c,
        "signed by a stranger",
        &Forgery::ForeignSignature,
        T0 + 4,
    );
    forged_send(
        &mut ds,
        &mut carol,
        c,
        "another commitment outside",
        &Forgery::OutsideCommitment(Commitment([7; 32])),
        T0 + 5,
    );
    sync(&mut ds, &mut bob, T0 + 6);
    let dropped = dropped_notices(&bob);
    assert_eq!(dropped.len(), 3, "{dropped:?}");
    assert!(dropped[0].contains("does not verify"), "{dropped:?}");
    assert!(dropped[1].contains("does not verify"), "{dropped:?}");
    assert!(
        dropped[2].contains("commitment on its envelope"),
        "{dropped:?}"
    );
    assert_eq!(bob.texts(c), ["hello"]);
    assert_eq!(bob.received(), ["hello"]);

    // A server that delivers no stamp (one from before franking): kept, not reportable.
    ds.strip_stamps = true;
    send(&mut ds, &mut carol, c, "unstamped", T0 + 7);
    sync(&mut ds, &mut bob, T0 + 8);
    assert!(
        row_of(&bob, c, "unstamped")
            .unwrap()
            .detail
            .franking
            .is_none()
    );
    // The conversation goes on: carol's honest messages are reportable again.
    ds.strip_stamps = false;
    send(&mut ds, &mut carol, c, "honest again", T0 + 9);
    sync(&mut ds, &mut bob, T0 + 10);
    assert_eq!(bob.received(), ["hello", "unstamped", "honest again"]);
    assert!(
        row_of(&bob, c, "honest again")
            .unwrap()
            .detail
            .franking
            .is_some()
    );
    assert_eq!(dropped_notices(&bob).len(), 3);
    // Nor does carol's own copy keep a record (her own messages are not hers to report).
    sync(&mut ds, &mut carol, T0 + 11);
    assert!(
        row_of(&carol, c, "hello")
            .unwrap()
            .detail
            .franking
            .is_none()
    );
}
