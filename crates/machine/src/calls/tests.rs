use std::collections::BTreeSet;

use nightjar_core::identity::DeviceId;

use super::*;

const T0: u64 = 1_800_000_000_000;

fn device(user: &str, id: u64) -> DeviceCredential {
    DeviceCredential {
        username: user.into(),
        device_id: DeviceId(id),
    }
}

fn conv() -> ConversationId {
    ConversationId([3; 16])
}

fn origin(sender: &DeviceCredential, sent_at: u64) -> SignalOrigin<'_> {
    SignalOrigin {
        conversation: conv(),
        sender,
        sent_at,
    }
}

fn signal(kind: CallSignalKind) -> CallSignal {
    CallSignal {
        call_id: [1; 16],
        kind,
    }
}

fn offer() -> CallSignal {
    signal(CallSignalKind::Offer {
        sdp: "v=0 offer".into(),
        video: true,
    })
}

fn answer() -> CallSignal {
    signal(CallSignalKind::Answer {
        sdp: "v=0 answer".into(),
    })
}

fn ended(step: &CallStep) -> Option<CallEnd> {
    step.events.iter().find_map(|e| match e {
        CallEvent::Ended { end, .. } => Some(*end),
        _ => None,
    })
}

fn row_text(step: &CallStep) -> Option<String> {
    step.rows.first().and_then(|r| r.text.clone())
}

/// The caller's device with a call it placed at `T0`.
fn caller_book() -> CallBook {
    let mut book = CallBook::default();
    book.calls.insert(
        CallId([1; 16]).to_hex(),
        CallRecord::started(conv(), &device("alice", 1), true, T0, false),
    );
    book
}

#[test]
fn an_offer_rings_every_device_of_the_callee_and_one_answer_stops_the_others() {
    let alice = device("alice", 1);
    let (bob1, bob2) = (device("bob", 21), device("bob", 22));
    let mut phone = CallBook::default();
    let mut laptop = CallBook::default();
    for (book, me) in [(&mut phone, &bob1), (&mut laptop, &bob2)] {
        let step = book.on_signal(T0 + 100, me, origin(&alice, T0), &offer(), true);
        assert!(matches!(
            step.events.as_slice(),
            [CallEvent::Incoming { from, video: true, .. }] if from == "alice"
        ));
        assert!(step.rows.is_empty());
    }
    // The phone answered (what `Machine::answer_call` records); the laptop reads that answer.
    let step = laptop.on_signal(T0 + 900, &bob2, origin(&bob1, T0 + 800), &answer(), true);
    assert_eq!(ended(&step), Some(CallEnd::AnsweredElsewhere));
    assert_eq!(
        row_text(&step).as_deref(),
        Some("video call answered on another device")
    );
    assert!(laptop.calls.is_empty());
}

#[test]
fn the_first_answer_wins_and_only_the_other_end_can_hang_up() {
    let alice = device("alice", 1);
    let (bob1, bob2) = (device("bob", 21), device("bob", 22));
    let mut book = caller_book();
    let step = book.on_signal(T0 + 500, &alice, origin(&bob1, T0 + 400), &answer(), true);
    assert!(matches!(
        step.events.as_slice(),
        [CallEvent::Answered { .. }]
    ));
    // A second device that answered a moment later is ignored, and cannot end the call.
    let step = book.on_signal(T0 + 600, &alice, origin(&bob2, T0 + 500), &answer(), true);
    assert!(step.events.is_empty());
    let hangup = signal(CallSignalKind::Hangup);
    let step = book.on_signal(T0 + 700, &alice, origin(&bob2, T0 + 700), &hangup, true);
    assert!(step.events.is_empty(), "only the answering device ends it");
    let ice = signal(CallSignalKind::IceCandidate {
        candidate: "candidate:1".into(),
        sdp_mid: None,
        sdp_m_line_index: Some(0),
    });
    assert!(
        book.on_signal(T0 + 700, &alice, origin(&bob2, T0), &ice, true)
            .events
            .is_empty()
    );
    assert_eq!(
        book.on_signal(T0 + 700, &alice, origin(&bob1, T0), &ice, true)
            .events
            .len(),
        1
    );
    let step = book.on_signal(
        T0 + 65_500,
        &alice,
        origin(&bob1, T0 + 65_000),
        &hangup,
        true,
    );
    assert_eq!(
        ended(&step),
        Some(CallEnd::Ended {
            duration_ms: 65_000
        })
    );
    assert_eq!(row_text(&step).as_deref(), Some("video call, 1:05"));
}

#[test]
fn a_call_nobody_answers_is_missed_for_the_callee_and_unanswered_for_the_caller() {
    let alice = device("alice", 1);
    let bob = device("bob", 21);
    let mut callee = CallBook::default();
    callee.on_signal(T0, &bob, origin(&alice, T0), &offer(), true);
    assert_eq!(callee.next_deadline(), Some(T0 + RING_TIMEOUT_MS));
    assert!(callee.expire(T0 + RING_TIMEOUT_MS - 1).events.is_empty());
    let step = callee.expire(T0 + RING_TIMEOUT_MS);
    assert_eq!(ended(&step), Some(CallEnd::Missed));
    assert_eq!(row_text(&step).as_deref(), Some("missed video call"));
    assert!(step.replies.is_empty());

    let mut caller = caller_book();
    let step = caller.expire(T0 + RING_TIMEOUT_MS);
    assert_eq!(ended(&step), Some(CallEnd::NoAnswer));
    assert_eq!(step.replies.len(), 1, "the caller hangs up");
    assert_eq!(step.replies[0].signal.kind, CallSignalKind::Hangup);
}

#[test]
fn an_offer_read_late_or_a_hangup_without_its_offer_is_a_missed_call_not_a_ring() {
    let alice = device("alice", 1);
    let bob = device("bob", 21);
    let mut book = CallBook::default();
    let step = book.on_signal(
        T0 + RING_TIMEOUT_MS,
        &bob,
        origin(&alice, T0),
        &offer(),
        true,
    );
    assert_eq!(ended(&step), Some(CallEnd::Missed));
    assert!(
        !step
            .events
            .iter()
            .any(|e| matches!(e, CallEvent::Incoming { .. }))
    );

    let mut cli = CallBook::default();
    let hangup = signal(CallSignalKind::Hangup);
    let step = cli.on_signal(T0, &bob, origin(&alice, T0), &hangup, true);
    assert_eq!(row_text(&step).as_deref(), Some("missed voice call"));
    assert!(cli.calls.is_empty());
}

#[test]
fn decline_and_busy_end_the_callers_ringing_and_a_busy_device_answers_busy() {
    let alice = device("alice", 1);
    let (bob1, bob2) = (device("bob", 21), device("bob", 22));
    let mut book = caller_book();
    let step = book.on_signal(
        T0 + 1,
        &alice,
        origin(&bob1, T0),
        &signal(CallSignalKind::Decline),
        true,
    );
    assert_eq!(ended(&step), Some(CallEnd::Declined));
    let mut book = caller_book();
    let step = book.on_signal(
        T0 + 1,
        &alice,
        origin(&bob1, T0),
        &signal(CallSignalKind::Busy),
        true,
    );
    assert_eq!(row_text(&step).as_deref(), Some("video call: busy"));

    // Declined on one of bob's devices: the other stops ringing.
    let mut laptop = CallBook::default();
    laptop.on_signal(T0, &bob2, origin(&alice, T0), &offer(), true);
    let step = laptop.on_signal(
        T0 + 5,
        &bob2,
        origin(&bob1, T0 + 5),
        &signal(CallSignalKind::Decline),
        true,
    );
    assert_eq!(ended(&step), Some(CallEnd::Declined));

    // Bob's phone is in a call with carol; alice's offer is answered busy and not rung.
    let mut phone = CallBook::default();
    phone.calls.insert(
        CallId([9; 16]).to_hex(),
        CallRecord {
            outgoing: false,
            video: false,
            phase: CallPhase::Active { since: T0 },
            peer_device: Some(DeviceId(3).to_string()),
            ..CallRecord::started(conv(), &device("carol", 3), false, T0, false)
        },
    );
    let step = phone.on_signal(T0 + 10, &bob1, origin(&alice, T0 + 10), &offer(), true);
    assert_eq!(step.replies.len(), 1);
    assert_eq!(step.replies[0].signal.kind, CallSignalKind::Busy);
    assert!(
        !step
            .events
            .iter()
            .any(|e| matches!(e, CallEvent::Incoming { .. }))
    );
}

#[test]
fn a_stranger_cannot_ring() {
    let mut book = CallBook::default();
    let step = book.on_signal(
        T0,
        &device("bob", 21),
        origin(&device("mallory", 9), T0),
        &offer(),
        false,
    );
    assert!(
        !step
            .events
            .iter()
            .any(|e| matches!(e, CallEvent::Incoming { .. }))
    );
    assert_eq!(row_text(&step).as_deref(), Some("missed video call"));
}

#[test]
fn a_replayed_offer_rings_once_and_own_devices_never_ring() {
    let alice1 = device("alice", 1);
    let alice2 = device("alice", 2);
    let bob = device("bob", 21);
    let mut book = CallBook::default();
    assert_eq!(
        book.on_signal(T0, &bob, origin(&alice1, T0), &offer(), true)
            .events
            .len(),
        1
    );
    assert!(
        book.on_signal(T0, &bob, origin(&alice1, T0), &offer(), true)
            .events
            .is_empty()
    );
    let mut other = CallBook::default();
    assert!(
        other
            .on_signal(T0, &alice2, origin(&alice1, T0), &offer(), true)
            .events
            .is_empty()
    );
    // It keeps the call, to write the history row when it ends.
    let step = other.on_signal(
        T0 + 3,
        &alice2,
        origin(&bob, T0 + 3),
        &signal(CallSignalKind::Decline),
        true,
    );
    assert_eq!(row_text(&step).as_deref(), Some("video call declined"));
    assert!(step.rows[0].outgoing);
}

fn join() -> CallSignal {
    signal(CallSignalKind::Join { video: true })
}

fn participants(step: &CallStep) -> Option<Vec<String>> {
    step.events.iter().rev().find_map(|e| match e {
        CallEvent::Participants { participants, .. } => {
            Some(participants.values().cloned().collect())
        }
        _ => None,
    })
}

/// A group call started at `T0` by alice's device 1, as the starting device records it.
fn group_starter_book(alice: &DeviceCredential) -> CallBook {
    let mut book = CallBook::default();
    book.calls.insert(
        CallId([1; 16]).to_hex(),
        CallRecord::started(conv(), alice, true, T0, true),
    );
    book
}

#[test]
fn a_group_call_rings_once_and_tracks_who_joins_and_leaves() {
    let alice = device("alice", 1);
    let bob = device("bob", 21);
    let carol = device("carol", 31);
    let mut book = CallBook::default();
    let step = book.on_signal(T0 + 100, &carol, origin(&alice, T0), &join(), true);
    assert!(matches!(
        step.events.as_slice(),
        [CallEvent::Invited { from, video: true, .. }, CallEvent::Participants { .. }]
            if from == "alice"
    ));
    // A second join updates the participants and does not ring again.
    let step = book.on_signal(T0 + 200, &carol, origin(&bob, T0 + 150), &join(), true);
    assert!(
        !step
            .events
            .iter()
            .any(|e| matches!(e, CallEvent::Invited { .. }))
    );
    assert_eq!(
        participants(&step),
        Some(vec!["alice".into(), "bob".into()])
    );
    // Carol does not answer: the ringing stops, the call goes on, no history row yet.
    let step = book.expire(T0 + RING_TIMEOUT_MS);
    assert_eq!(ended(&step), Some(CallEnd::Missed));
    assert!(step.rows.is_empty());
    let key = CallId([1; 16]).to_hex();
    assert_eq!(book.calls[&key].phase, CallPhase::Elsewhere);
    // Both leave: the call is over and carol's history says she missed it.
    let leave = signal(CallSignalKind::Leave);
    let step = book.on_signal(
        T0 + 70_000,
        &carol,
        origin(&alice, T0 + 70_000),
        &leave,
        true,
    );
    assert!(step.rows.is_empty() && step.rotate.is_empty());
    let step = book.on_signal(T0 + 71_000, &carol, origin(&bob, T0 + 71_000), &leave, true);
    assert_eq!(row_text(&step).as_deref(), Some("missed group video call"));
    assert!(book.calls.is_empty());
}

#[test]
fn joining_and_leaving_rotate_the_keys_and_the_leaver_gets_its_own_row() {
    let alice = device("alice", 1);
    let bob = device("bob", 21);
    let carol = device("carol", 31);
    let mut book = group_starter_book(&alice);
    let mut carols = CallBook::default();
    // Bob and carol join: alice's book follows; carol's device joins the call it learned of.
    book.on_signal(T0 + 100, &alice, origin(&bob, T0 + 100), &join(), true);
    carols.on_signal(T0 + 100, &carol, origin(&alice, T0), &join(), true);
    carols.on_signal(T0 + 100, &carol, origin(&bob, T0 + 100), &join(), true);
    assert!(carols.join_group(T0 + 200, &carol, CallId([1; 16])));
    assert!(carols.live_here().is_some());
    book.on_signal(T0 + 200, &alice, origin(&carol, T0 + 200), &join(), true);
    // Bob leaves: the remaining participant with the lowest device id (alice's 1) rotates;
    // carol (31) does not.
    let leave = signal(CallSignalKind::Leave);
    let step = book.on_signal(T0 + 5_000, &alice, origin(&bob, T0 + 5_000), &leave, true);
    assert_eq!(step.rotate, vec![conv()]);
    assert_eq!(
        participants(&step),
        Some(vec!["alice".into(), "carol".into()])
    );
    let step = carols.on_signal(T0 + 5_000, &carol, origin(&bob, T0 + 5_000), &leave, true);
    assert!(step.rotate.is_empty());
    // Carol hangs up after 62 s in the call: her row now; the call stays known, not here.
    let mut step = CallStep::default();
    carols.leave_group(T0 + 62_200, &carol, CallId([1; 16]), &mut step);
    assert_eq!(row_text(&step).as_deref(), Some("group video call, 1:02"));
    assert!(carols.live_here().is_none());
    // Alice leaves later: the call ends on carol's device without a second row.
    let step = carols.on_signal(
        T0 + 90_000,
        &carol,
        origin(&alice, T0 + 90_000),
        &leave,
        true,
    );
    assert!(step.rows.is_empty());
    assert!(carols.calls.is_empty());
}

#[test]
fn group_signals_cannot_ring_strangers_reach_other_calls_or_forge_participants() {
    let alice = device("alice", 1);
    let mallory = device("mallory", 66);
    let carol = device("carol", 31);
    // A message request cannot ring; a join read late does not ring either.
    let mut book = CallBook::default();
    let step = book.on_signal(T0 + 100, &carol, origin(&mallory, T0), &join(), false);
    assert!(
        !step
            .events
            .iter()
            .any(|e| matches!(e, CallEvent::Invited { .. }))
    );
    let mut book = CallBook::default();
    let step = book.on_signal(
        T0 + RING_TIMEOUT_MS,
        &carol,
        origin(&alice, T0),
        &join(),
        true,
    );
    assert!(
        !step
            .events
            .iter()
            .any(|e| matches!(e, CallEvent::Invited { .. }))
    );
    // A leave names only its sender: mallory cannot take alice out of the call.
    let mut book = group_starter_book(&alice);
    book.on_signal(T0 + 100, &alice, origin(&carol, T0 + 100), &join(), true);
    let leave = signal(CallSignalKind::Leave);
    let step = book.on_signal(T0 + 200, &alice, origin(&mallory, T0 + 200), &leave, true);
    assert!(step.events.is_empty() && step.rotate.is_empty());
    // One-to-one signals cannot end or answer a group call.
    for kind in [CallSignalKind::Hangup, CallSignalKind::Decline] {
        let step = book.on_signal(
            T0 + 300,
            &alice,
            origin(&carol, T0 + 300),
            &signal(kind),
            true,
        );
        assert!(step.events.is_empty());
    }
    assert!(book.live_here().is_some());
    // A join naming a one-to-one call's id does not turn it into a group call.
    let mut caller = caller_book();
    let step = caller.on_signal(T0 + 400, &alice, origin(&carol, T0 + 400), &join(), true);
    assert!(step.events.is_empty());
    assert!(!caller.calls[&CallId([1; 16]).to_hex()].group);
    // A group call forgotten by everyone goes stale instead of staying forever.
    let mut book = CallBook::default();
    book.on_signal(T0 + 100, &carol, origin(&alice, T0), &join(), true);
    book.expire(T0 + RING_TIMEOUT_MS);
    assert_eq!(book.next_deadline(), Some(T0 + 100 + GROUP_CALL_STALE_MS));
    let step = book.expire(T0 + 100 + GROUP_CALL_STALE_MS);
    assert_eq!(row_text(&step).as_deref(), Some("missed group video call"));
}

#[test]
fn a_member_removed_from_the_group_leaves_its_calls_and_a_removed_device_ends_its_own() {
    let alice = device("alice", 1);
    let bob = device("bob", 21);
    let carol = device("carol", 31);
    let key = CallId([1; 16]).to_hex();
    let members = |ds: &[&DeviceCredential]| -> BTreeSet<String> {
        ds.iter().map(|d| participant_key(d)).collect()
    };
    // Alice's call with bob and carol; bob is removed from the group (he could not say goodbye).
    let mut book = group_starter_book(&alice);
    book.on_signal(T0 + 100, &alice, origin(&bob, T0 + 100), &join(), true);
    book.on_signal(T0 + 100, &alice, origin(&carol, T0 + 100), &join(), true);
    let mut step = CallStep::default();
    book.members_changed(
        T0 + 500,
        &alice,
        conv(),
        &members(&[&alice, &carol]),
        &mut step,
    );
    assert_eq!(
        participants(&step),
        Some(vec!["alice".into(), "carol".into()])
    );
    assert!(
        step.rotate.is_empty(),
        "the removal's commit changed the keys already"
    );
    // A device that watched the call without joining: when the last participant is removed,
    // the call is over and it was missed.
    let mut watcher = CallBook::default();
    watcher.on_signal(T0 + 100, &carol, origin(&bob, T0), &join(), true);
    let mut step = CallStep::default();
    watcher.members_changed(
        T0 + 500,
        &carol,
        conv(),
        &members(&[&alice, &carol]),
        &mut step,
    );
    assert_eq!(row_text(&step).as_deref(), Some("missed group video call"));
    assert!(watcher.calls.is_empty());
    // Carol herself is removed while in the call: her call ends, with her own row only.
    let mut carols = CallBook::default();
    carols.on_signal(T0 + 100, &carol, origin(&alice, T0), &join(), true);
    assert!(carols.join_group(T0 + 200, &carol, CallId([1; 16])));
    let mut step = CallStep::default();
    carols.members_changed(T0 + 5_200, &carol, conv(), &members(&[&alice]), &mut step);
    assert!(
        matches!(step.events.first(), Some(CallEvent::Removed { call }) if *call == CallId([1; 16])),
        "she is told why her call ended: {:?}",
        step.events
    );
    assert_eq!(step.rows.len(), 1);
    assert_eq!(row_text(&step).as_deref(), Some("group video call, 0:05"));
    assert!(!carols.calls.contains_key(&key));
    // Removed while the call only rang on her device: nothing to be told about.
    let mut ringing = CallBook::default();
    ringing.on_signal(T0 + 100, &carol, origin(&alice, T0), &join(), true);
    let mut step = CallStep::default();
    ringing.members_changed(T0 + 300, &carol, conv(), &members(&[&alice]), &mut step);
    assert!(
        !step
            .events
            .iter()
            .any(|e| matches!(e, CallEvent::Removed { .. })),
        "{:?}",
        step.events
    );
    assert!(ringing.calls.is_empty());
}

#[test]
fn a_member_cannot_make_up_calls_without_bound_or_force_a_commit_per_leave() {
    let alice = device("alice", 1);
    let mallory = device("mallory", 66);
    let carol = device("carol", 31);
    // Made-up calls: the first rings, a second is kept without ringing, more are ignored.
    let mut book = CallBook::default();
    for n in 0..10u8 {
        let made_up = CallSignal {
            call_id: [n + 10; 16],
            kind: CallSignalKind::Join { video: true },
        };
        let step = book.on_signal(T0 + 100, &carol, origin(&mallory, T0 + 100), &made_up, true);
        let rang = step
            .events
            .iter()
            .any(|e| matches!(e, CallEvent::Invited { .. }));
        assert_eq!(rang, n == 0, "call {n}");
    }
    assert_eq!(book.calls.len(), GROUP_CALLS_PER_CONVERSATION);
    // Join and leave over and over: alice (lowest in her call) rotates once per gap, and the
    // leave inside the gap is rotated for when the gap ends.
    let mut book = group_starter_book(&alice);
    let leave = signal(CallSignalKind::Leave);
    let mut rotations = 0;
    for t in 0..20 {
        let now = T0 + 1_000 + t * 500;
        book.on_signal(now, &alice, origin(&mallory, now), &join(), true);
        let step = book.on_signal(now + 100, &alice, origin(&mallory, now + 100), &leave, true);
        rotations += step.rotate.len();
    }
    // (Alice is the only one left after each leave, so hers is the lowest id.)
    assert_eq!(rotations, 1, "one rotation in 10.6 s of churn");
    let due = book.next_deadline().expect("a rotation is due");
    assert_eq!(book.expire(due).rotate, vec![conv()]);
    assert_eq!(book.next_deadline(), None);
}
