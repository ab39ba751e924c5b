//! The machine's side of calls: the user's call actions become call signals in the outbox, and
//! signals read from the inbox go through the [`CallBook`] rules (see [`crate::calls`]), in the
//! transaction that processes their envelope.

use std::collections::BTreeSet;

use nightjar_core::calls::CallKeys;
use nightjar_core::content::{CallSignal, CallSignalKind, Content};
use nightjar_core::{ConversationId, ConversationKind, Engine};

use super::{Machine, Notification, random_bytes};
use crate::calls::{
    CALL_BOOK, CallBook, CallEnd, CallEvent, CallId, CallPhase, CallRecord, CallReply, CallStep,
    SignalOrigin,
};
use crate::error::{Error, Result};
use crate::store::ClientStore;

/// Reads the call book from the store's settings (empty if none).
pub(crate) fn load_book<S: ClientStore>(store: &S) -> Result<CallBook> {
    Ok(match store.meta(CALL_BOOK)? {
        Some(json) => serde_json::from_str(&json).unwrap_or_default(),
        None => CallBook::default(),
    })
}

fn save_book<S: ClientStore>(store: &S, book: &CallBook) -> Result<()> {
    if book.calls.is_empty() {
        store.delete_meta(CALL_BOOK)?;
    } else {
        let json =
            serde_json::to_string(book).map_err(|e| Error::Usage(format!("call book: {e}")))?;
        store.set_meta(CALL_BOOK, &json)?;
    }
    Ok(())
}

/// Stores the step's history rows and turns its events into notifications.
fn record_step<S: ClientStore>(
    store: &S,
    step: &CallStep,
    now: u64,
    out: &mut Vec<Notification>,
) -> Result<()> {
    for row in &step.rows {
        if store.insert_message(row, now, false)? {
            out.push(Notification::Received(row.clone()));
        }
    }
    out.extend(step.events.iter().cloned().map(Notification::Call));
    Ok(())
}

/// Handles a call signal read from the inbox (inside its envelope's transaction): returns the
/// signals to send back, each with its conversation.
pub(crate) fn on_call_signal<S: ClientStore>(
    engine: &mut Engine<S>,
    store: &S,
    now: u64,
    origin: SignalOrigin<'_>,
    signal: &CallSignal,
    out: &mut Vec<Notification>,
) -> Result<Vec<CallReply>> {
    let SignalOrigin {
        conversation,
        sender,
        ..
    } = origin;
    // One-to-one calls are offered in direct conversations only; groups call through the
    // forwarding unit.
    let kind = engine.conversation(conversation)?.kind;
    let group_signal = matches!(
        signal.kind,
        CallSignalKind::Join { .. } | CallSignalKind::Leave
    );
    if matches!(signal.kind, CallSignalKind::Offer { .. }) && kind != ConversationKind::Direct
        || group_signal && kind != ConversationKind::Group
    {
        return Ok(Vec::new());
    }
    let me = engine.device().clone();
    let may_ring = sender.username == me.username
        || !store.is_request(&conversation.to_string(), &sender.username)?;
    let mut book = load_book(store)?;
    let step = book.on_signal(now, &me, origin, signal, may_ring);
    save_book(store, &book)?;
    record_step(store, &step, now, out)?;
    for conversation in &step.rotate {
        rotate_keys(engine, store, now, *conversation)?;
    }
    Ok(step.replies)
}

/// After a commit in `conversation`: devices no longer in it leave its group calls (and if this
/// device was removed, its calls there end).
pub(crate) fn on_members_changed<S: ClientStore>(
    engine: &mut Engine<S>,
    store: &S,
    now: u64,
    conversation: ConversationId,
    out: &mut Vec<Notification>,
) -> Result<()> {
    let mut book = load_book(store)?;
    let here = conversation.to_string();
    if !book
        .calls
        .values()
        .any(|r| r.group && r.conversation == here)
    {
        return Ok(());
    }
    let members: BTreeSet<String> = match engine.conversation(conversation) {
        Ok(info) if info.active => info
            .members
            .iter()
            .map(crate::calls::participant_key)
            .collect(),
        _ => BTreeSet::new(),
    };
    let me = engine.device().clone();
    let mut step = CallStep::default();
    book.members_changed(now, &me, conversation, &members, &mut step);
    save_book(store, &book)?;
    record_step(store, &step, now, out)
}

/// Commits a fresh leaf key for this device in `conversation`, so that the epoch, and with it
/// every call's media keys, changes. A commit already on its way changes the epoch too.
fn rotate_keys<S: ClientStore>(
    engine: &mut Engine<S>,
    store: &S,
    now: u64,
    conversation: ConversationId,
) -> Result<()> {
    use nightjar_core::ConversationError;
    match engine.self_update(conversation) {
        Ok(bundle) => super::outbox::enqueue_commit(engine, store, &bundle, now),
        Err(nightjar_core::Error::Conversation(ConversationError::CommitInFlight)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

impl<S: ClientStore> Machine<S> {
    /// The calls this device knows of that have not ended.
    pub fn calls(&self) -> Result<CallBook> {
        load_book(&self.store)
    }

    /// Ends the calls this device was in when the app last stopped (a reload, a crash): their
    /// media is gone with the page, so this device hangs up or leaves them, and writes their
    /// history. Call it when the app starts, before anything else happens.
    pub fn leave_calls_of_an_earlier_run(&mut self, now: u64) -> Result<()> {
        let book = self.calls()?;
        for (id, record) in &book.calls {
            let Some(call) = CallId::from_hex(id) else {
                continue;
            };
            if record.here {
                self.hang_up(now, call)?;
            }
        }
        Ok(())
    }

    /// Starts a group call in a group conversation: every other member's devices ring, and this
    /// device connects its media to the server's forwarding unit. Joining changes the media
    /// keys (this device commits a fresh leaf key). Refused while this device is in a call.
    pub fn start_group_call(
        &mut self,
        now: u64,
        conversation: ConversationId,
        video: bool,
    ) -> Result<CallId> {
        let (mut book, call) = self.new_call(
            conversation,
            ConversationKind::Group,
            "a group call is for a group",
        )?;
        book.calls.insert(
            call.to_hex(),
            CallRecord::started(conversation, &self.me, video, now, true),
        );
        self.enter_group_call(now, conversation, call, video, &book)?;
        Ok(call)
    }

    /// Joins a group call that goes on (or rings) in one of this device's groups.
    pub fn join_call(&mut self, now: u64, call: CallId, video: bool) -> Result<()> {
        let mut book = self.calls()?;
        if book.live_here().is_some() {
            return Err(Error::Usage("already in a call".into()));
        }
        let me = self.me.clone();
        if !book.join_group(now, &me, call) {
            return Err(Error::Usage("no such group call".into()));
        }
        let conversation = parse(&book.calls[&call.to_hex()].conversation)?;
        self.enter_group_call(now, conversation, call, video, &book)
    }

    /// The call book and a fresh call id for a call this device starts in `conversation`,
    /// which must be of `kind` (else `wrong_kind` is the refusal). Refused while this device is
    /// in a call.
    fn new_call(
        &mut self,
        conversation: ConversationId,
        kind: ConversationKind,
        wrong_kind: &str,
    ) -> Result<(CallBook, CallId)> {
        if self.engine.conversation(conversation)?.kind != kind {
            return Err(Error::Usage(wrong_kind.into()));
        }
        let book = self.calls()?;
        if book.live_here().is_some() {
            return Err(Error::Usage("already in a call".into()));
        }
        Ok((book, CallId(random_bytes()?)))
    }

    fn enter_group_call(
        &mut self,
        now: u64,
        conversation: ConversationId,
        call: CallId,
        video: bool,
        book: &CallBook,
    ) -> Result<()> {
        let participants = book
            .calls
            .get(&call.to_hex())
            .map(|r| r.participants.clone())
            .unwrap_or_default();
        let step = CallStep {
            events: vec![CallEvent::Participants { call, participants }],
            rotate: vec![conversation],
            ..CallStep::default()
        };
        self.signal(now, conversation, call, CallSignalKind::Join { video })?;
        self.apply_step(now, book, step)
    }

    /// Starts a call in a direct conversation with the caller's SDP offer: every device of the
    /// other account rings. Refused while this device is in another call.
    pub fn start_call(
        &mut self,
        now: u64,
        conversation: ConversationId,
        video: bool,
        offer: String,
    ) -> Result<CallId> {
        let (mut book, call) = self.new_call(
            conversation,
            ConversationKind::Direct,
            "calls are one-to-one here",
        )?;
        book.calls.insert(
            call.to_hex(),
            CallRecord::started(conversation, &self.me, video, now, false),
        );
        self.apply_step(now, &book, CallStep::default())?;
        self.signal(
            now,
            conversation,
            call,
            CallSignalKind::Offer { sdp: offer, video },
        )?;
        Ok(call)
    }

    /// Answers a call ringing on this device with the SDP answer: the caller connects, the
    /// account's other devices stop ringing.
    pub fn answer_call(&mut self, now: u64, call: CallId, answer: String) -> Result<()> {
        let mut book = self.calls()?;
        let record = book
            .calls
            .get_mut(&call.to_hex())
            .filter(|r| !r.outgoing && r.phase == CallPhase::Ringing)
            .ok_or_else(|| Error::Usage("that call is not ringing".into()))?;
        record.phase = CallPhase::Active { since: now };
        record.here = true;
        record.peer_device = Some(record.caller_device.clone());
        let conversation = parse(&record.conversation)?;
        self.apply_step(now, &book, CallStep::default())?;
        self.signal(
            now,
            conversation,
            call,
            CallSignalKind::Answer { sdp: answer },
        )
    }

    /// Declines a call ringing on this device (the caller and this account's other devices
    /// stop ringing).
    pub fn decline_call(&mut self, now: u64, call: CallId) -> Result<()> {
        let mut book = self.calls()?;
        if let Some(record) = book.calls.get_mut(&call.to_hex()).filter(|r| r.group) {
            // A group call stops ringing here; it goes on, and nobody else needs to know.
            if record.phase != CallPhase::Ringing {
                return Err(Error::Usage("that call is not ringing".into()));
            }
            record.phase = CallPhase::Elsewhere;
            let conversation = parse(&record.conversation)?;
            let step = CallStep {
                events: vec![CallEvent::Ended {
                    call,
                    conversation,
                    end: CallEnd::Declined,
                }],
                ..CallStep::default()
            };
            return self.apply_step(now, &book, step);
        }
        self.finish(now, call, CallSignalKind::Decline, CallEnd::Declined)
    }

    /// Hangs up this device's call (or stops calling); leaves a group call.
    pub fn hang_up(&mut self, now: u64, call: CallId) -> Result<()> {
        let mut book = self.calls()?;
        let record = book
            .calls
            .get(&call.to_hex())
            .ok_or_else(|| Error::Usage("no such call".into()))?;
        if record.group {
            if !record.here {
                return Err(Error::Usage("this device is not in that call".into()));
            }
            let conversation = parse(&record.conversation)?;
            let mut step = CallStep::default();
            let me = self.me.clone();
            book.leave_group(now, &me, call, &mut step);
            self.apply_step(now, &book, step)?;
            return self.signal(now, conversation, call, CallSignalKind::Leave);
        }
        let end = match record.phase {
            CallPhase::Active { since } => CallEnd::Ended {
                duration_ms: now.saturating_sub(since),
            },
            CallPhase::Ringing | CallPhase::Elsewhere if record.outgoing => CallEnd::NoAnswer,
            CallPhase::Ringing | CallPhase::Elsewhere => CallEnd::Declined,
        };
        let kind = if end == CallEnd::Declined {
            CallSignalKind::Decline
        } else {
            CallSignalKind::Hangup
        };
        self.finish(now, call, kind, end)
    }

    /// Sends a trickled ICE candidate to the other end of this device's call.
    pub fn send_candidate(
        &mut self,
        now: u64,
        call: CallId,
        candidate: String,
        sdp_mid: Option<String>,
        sdp_m_line_index: Option<u16>,
    ) -> Result<()> {
        let book = self.calls()?;
        let record = book
            .calls
            .get(&call.to_hex())
            .filter(|r| r.here)
            .ok_or_else(|| Error::Usage("no such call".into()))?;
        let conversation = parse(&record.conversation)?;
        self.signal(
            now,
            conversation,
            call,
            CallSignalKind::IceCandidate {
                candidate,
                sdp_mid,
                sdp_m_line_index,
            },
        )
    }

    /// The SFrame keys of `call` in its conversation's current epoch (ask again after the
    /// conversation changed: a new epoch gives new keys).
    pub fn call_keys(&mut self, call: CallId) -> Result<CallKeys> {
        let book = self.calls()?;
        let record = book
            .calls
            .get(&call.to_hex())
            .ok_or_else(|| Error::Usage("no such call".into()))?;
        let conversation = parse(&record.conversation)?;
        Ok(self.engine.call_keys(conversation, &call.0)?)
    }

    /// Ends calls that rang out (called from the machine's loop).
    pub(super) fn expire_calls(&mut self, now: u64) -> Result<()> {
        if self.call_deadline.is_none_or(|t| t > now) {
            return Ok(());
        }
        let mut book = self.calls()?;
        let step = book.expire(now);
        self.apply_step(now, &book, step)
    }

    /// Stores `book` and what `step` decided in one transaction, shows its events, sends its
    /// replies, and sets when the next ringing call runs out.
    fn apply_step(&mut self, now: u64, book: &CallBook, step: CallStep) -> Result<()> {
        let mut notes = Vec::new();
        self.atomic(|_, store| {
            save_book(store, book)?;
            record_step(store, &step, now, &mut notes)
        })?;
        self.call_deadline = book.next_deadline();
        self.notifications.extend(notes);
        for reply in step.replies {
            self.send_call_signal(now, reply)?;
        }
        if !step.rotate.is_empty() {
            self.atomic(|engine, store| {
                step.rotate
                    .iter()
                    .try_for_each(|c| rotate_keys(engine, store, now, *c))
            })?;
            self.work(now);
        }
        Ok(())
    }

    /// Ends `call` on this device with `end`, telling the others with `kind`.
    fn finish(&mut self, now: u64, call: CallId, kind: CallSignalKind, end: CallEnd) -> Result<()> {
        let mut book = self.calls()?;
        let record = book
            .calls
            .get(&call.to_hex())
            .ok_or_else(|| Error::Usage("no such call".into()))?;
        let conversation = parse(&record.conversation)?;
        let mut step = CallStep::default();
        book.end(call, end, &mut step);
        self.apply_step(now, &book, step)?;
        self.signal(now, conversation, call, kind)
    }

    fn signal(
        &mut self,
        now: u64,
        conversation: ConversationId,
        call: CallId,
        kind: CallSignalKind,
    ) -> Result<()> {
        self.send_call_signal(
            now,
            CallReply {
                conversation,
                signal: CallSignal {
                    call_id: call.0,
                    kind,
                },
            },
        )
    }

    /// Queues a call signal like any message (it is not kept in the history).
    pub(super) fn send_call_signal(&mut self, now: u64, reply: CallReply) -> Result<()> {
        self.send_message(now, reply.conversation, Content::Call(reply.signal))?;
        Ok(())
    }
}

fn parse(conversation: &str) -> Result<ConversationId> {
    ConversationId::parse(conversation)
        .ok_or_else(|| Error::Usage("a call in an unknown conversation".into()))
}
