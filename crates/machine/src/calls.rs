//! Calls as the client sees them: which calls ring, which are live on this device, and how each
//! one ends up in the history. Pure decisions over a [`CallBook`] kept in the store's settings,
//! so a device that reads its queue after a restart (the command line's `sync`) still tells a
//! missed call from one answered on another device.
//!
//! Signalling travels as end-to-end encrypted call messages in the conversation
//! (`nightjar_core::content::CallSignal`); media keys come from the conversation's MLS epoch
//! (`nightjar_core::calls`). The rules:
//! - An offer rings every device of every other member, unless it is older than
//!   [`RING_TIMEOUT_MS`] when it arrives (a device coming online later shows a missed call,
//!   never a ring), or comes from an account the user has not accepted (a message request:
//!   strangers cannot ring anyone). A device already in a call answers `busy`.
//! - The first answer the caller's device reads wins; an answer from one device of an account
//!   stops the ringing on its other devices ("answered on another device").
//! - A call that rang out (the caller hung up first, declined, busy, or
//!   [`RING_TIMEOUT_MS`] passed) and a call that ended leave one history row per device, whose
//!   id is the call id.
//!
//! Group calls (in group conversations) go through the server's forwarding unit; their
//! signals are `join` and `leave`, and every member's device keeps the call's participants:
//! - The first `join` of a call rings every other member's devices (same exceptions as an
//!   offer: late, a message request, or already in a call); later joins only update the
//!   participants. A device that did not join stops ringing after [`RING_TIMEOUT_MS`] and may
//!   still join while the call goes on.
//! - Media keys rotate whenever the participants change: the joining device commits a fresh
//!   leaf key as it joins, and when a participant leaves, the remaining participant with the
//!   lowest participant id commits one (see [`CallStep::rotate`]), so a device that left can no
//!   longer follow the call's media with keys it held while in it... unless it is still a member
//!   of the conversation, which can always derive them; removing it from the conversation is
//!   what cuts it off.
//! - A device's history row is written when it leaves (the time it spent in the call), or,
//!   for a device that never joined, when the call ends (the last participant left): "missed
//!   group call". A call nobody left cleanly (a device vanished) is forgotten after
//!   [`GROUP_CALL_STALE_MS`] without a signal.

use std::collections::{BTreeMap, BTreeSet};

use nightjar_core::ConversationId;
use nightjar_core::content::{CallSignal, CallSignalKind, MessageId};
use nightjar_core::identity::DeviceCredential;
use serde::{Deserialize, Serialize};

use crate::rows::StoredMessage;

/// How long a call rings before it counts as missed (and how old an offer may be and still
/// ring).
pub const RING_TIMEOUT_MS: u64 = 60_000;

/// How long a group call this device is not in stays known without any signal about it.
pub const GROUP_CALL_STALE_MS: u64 = 4 * 60 * 60 * 1000;

/// The least time between two key rotations a device makes because participants left a call
/// (a leave within it is rotated for when it ends): a member that joins and leaves over and
/// over cannot make another device commit more often.
pub const LEAVE_ROTATION_GAP_MS: u64 = 10_000;

/// Most group calls a device keeps for one conversation (joins of further new calls there are
/// ignored until one ends): a member cannot fill the book, or ring again and again, with
/// made-up calls.
pub const GROUP_CALLS_PER_CONVERSATION: usize = 2;

/// The settings key of the [`CallBook`].
pub(crate) const CALL_BOOK: &str = "calls";

/// A call's id (chosen by the caller), 32 hex digits in rows and settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CallId(pub [u8; 16]);

impl CallId {
    /// 32 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        MessageId(self.0).to_hex()
    }

    /// Parses 32 hex digits.
    pub fn from_hex(hex: &str) -> Option<Self> {
        MessageId::from_hex(hex).map(|m| Self(m.0))
    }
}

/// Where a call stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum CallPhase {
    /// Ringing (outgoing: waiting for an answer; incoming: waiting for the user).
    Ringing,
    /// Answered, since this time (ms); for a group call, this device is in it since then.
    Active {
        /// When it was answered.
        since: u64,
    },
    /// A group call that goes on without this device (it stopped ringing, or the device left).
    Elsewhere,
}

/// One call this device knows of and that has not ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRecord {
    /// The conversation (32 hex digits).
    pub conversation: String,
    /// The account that called.
    pub caller: String,
    /// The calling device (16 hex digits).
    pub caller_device: String,
    /// Whether this device's account called.
    pub outgoing: bool,
    /// Whether the call is a video call.
    pub video: bool,
    /// When it began (the caller's clock, ms).
    pub started_at: u64,
    /// Ringing or answered.
    pub phase: CallPhase,
    /// Whether this device takes part (it called, or it answered).
    pub here: bool,
    /// The other device in the call, once answered (the answering device for the caller, the
    /// calling device for the callee): only its candidates and hang-up count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_device: Option<String>,
    /// Whether it is a group call (through the forwarding unit).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub group: bool,
    /// A group call's participants now: participant id ([`participant_key`]) → account.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub participants: BTreeMap<String, String>,
    /// Whether this device took part in the group call at some time.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub joined: bool,
    /// When the last signal about the call arrived (ms; group calls).
    #[serde(default)]
    pub last_signal_at: u64,
    /// When this device last rotated the keys because someone left (ms; group calls).
    #[serde(default)]
    pub rotated_at: u64,
    /// A rotation for a leave that came within [`LEAVE_ROTATION_GAP_MS`] of the last, due then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotate_due: Option<u64>,
}

impl CallRecord {
    /// A call this device learns of from `sender`'s first signal.
    fn learned(
        conversation: ConversationId,
        sender: &DeviceCredential,
        outgoing: bool,
        video: bool,
        started_at: u64,
    ) -> Self {
        Self {
            conversation: conversation.to_string(),
            caller: sender.username.clone(),
            caller_device: sender.device_id.to_string(),
            outgoing,
            video,
            started_at,
            phase: CallPhase::Ringing,
            here: false,
            peer_device: None,
            group: false,
            participants: BTreeMap::new(),
            joined: false,
            last_signal_at: started_at,
            rotated_at: 0,
            rotate_due: None,
        }
    }

    /// The history row of this call, `call`, ended with `end`.
    fn history_row(&self, call: CallId, end: CallEnd) -> StoredMessage {
        StoredMessage {
            conversation: self.conversation.clone(),
            id: call.to_hex(),
            from: self.caller.clone(),
            device: self.caller_device.clone(),
            sent_at: self.started_at,
            kind: "call".into(),
            text: Some(describe(self.video, self.group, end)),
            outgoing: self.outgoing,
            detail: Default::default(),
            expires_after_secs: None,
            expires_at: None,
        }
    }

    /// The call this device starts: one-to-one (ringing) or a group call it is in.
    pub(crate) fn started(
        conversation: ConversationId,
        me: &DeviceCredential,
        video: bool,
        now: u64,
        group: bool,
    ) -> Self {
        let mut record = Self::learned(conversation, me, true, video, now);
        record.here = true;
        if group {
            record.group = true;
            record.joined = true;
            record.phase = CallPhase::Active { since: now };
            record
                .participants
                .insert(participant_key(me), me.username.clone());
        }
        record
    }
}

/// Every call this device knows of that has not ended, by id.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallBook {
    /// The calls, by 32 hex digits.
    pub calls: BTreeMap<String, CallRecord>,
}

/// How a call ended, as the history says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallEnd {
    /// Rang here and nobody answered.
    Missed,
    /// The callee declined.
    Declined,
    /// The callee was in another call.
    Busy,
    /// This device called and nobody answered (or it stopped ringing).
    NoAnswer,
    /// Another device of this account answered.
    AnsweredElsewhere,
    /// It was answered and someone hung up, after this many ms.
    Ended {
        /// How long it lasted.
        duration_ms: u64,
    },
}

/// What a call signal or a call action means for the user and the history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallEvent {
    /// A call rings on this device.
    Incoming {
        /// The call.
        call: CallId,
        /// Where.
        conversation: ConversationId,
        /// Who calls.
        from: String,
        /// Whether it is a video call.
        video: bool,
        /// The caller's SDP offer.
        offer: String,
    },
    /// The callee's devices are ringing (for the caller).
    Ringing {
        /// The call.
        call: CallId,
    },
    /// The callee answered (for the caller's device).
    Answered {
        /// The call.
        call: CallId,
        /// The callee's SDP answer.
        answer: String,
    },
    /// A trickled ICE candidate from the other side.
    Candidate {
        /// The call.
        call: CallId,
        /// The candidate line.
        candidate: String,
        /// Its media stream tag.
        sdp_mid: Option<String>,
        /// Its media description index.
        sdp_m_line_index: Option<u16>,
    },
    /// A group call rings on this device: join it with `Machine::join_call`.
    Invited {
        /// The call.
        call: CallId,
        /// The group.
        conversation: ConversationId,
        /// Who started it.
        from: String,
        /// Whether it is a video call.
        video: bool,
    },
    /// A group call's participants changed (for a device in it, and for one it rings on).
    Participants {
        /// The call.
        call: CallId,
        /// Participant id ([`participant_key`]) → account, this device included when it is in
        /// the call.
        participants: BTreeMap<String, String>,
    },
    /// This device was removed from the group while it was in the call (a commit took it
    /// out): the call ends here, and the user should be told why. [`CallEvent::Ended`] follows.
    Removed {
        /// The call.
        call: CallId,
    },
    /// The call is over on this device.
    Ended {
        /// The call.
        call: CallId,
        /// Where.
        conversation: ConversationId,
        /// How.
        end: CallEnd,
    },
}

/// Where a call signal came from.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SignalOrigin<'a> {
    /// The conversation it was sent in.
    pub(crate) conversation: ConversationId,
    /// The sending device.
    pub(crate) sender: &'a DeviceCredential,
    /// The sender's clock when it sent it (ms).
    pub(crate) sent_at: u64,
}

/// A signal this device sends back, and where.
#[derive(Debug)]
pub(crate) struct CallReply {
    pub(crate) conversation: ConversationId,
    pub(crate) signal: CallSignal,
}

/// What handling a signal decided: events for the user, rows for the history, and signals this
/// device sends back.
#[derive(Debug, Default)]
pub(crate) struct CallStep {
    pub(crate) events: Vec<CallEvent>,
    pub(crate) rows: Vec<StoredMessage>,
    pub(crate) replies: Vec<CallReply>,
    /// Conversations in which this device commits a fresh leaf key, so that the call's media
    /// keys change with its participants.
    pub(crate) rotate: Vec<ConversationId>,
}

/// The history text of a call that ended.
pub fn describe_end(video: bool, end: CallEnd) -> String {
    describe(video, false, end)
}

fn describe(video: bool, group: bool, end: CallEnd) -> String {
    let kind = match (group, video) {
        (false, true) => "video call",
        (false, false) => "voice call",
        (true, true) => "group video call",
        (true, false) => "group voice call",
    };
    match end {
        CallEnd::Missed => format!("missed {kind}"),
        CallEnd::Declined => format!("{kind} declined"),
        CallEnd::Busy => format!("{kind}: busy"),
        CallEnd::NoAnswer => format!("{kind}: no answer"),
        CallEnd::AnsweredElsewhere => format!("{kind} answered on another device"),
        CallEnd::Ended { duration_ms } => {
            let secs = duration_ms / 1000;
            format!("{kind}, {}:{:02}", secs / 60, secs % 60)
        }
    }
}

impl CallBook {
    /// The call ringing or live on this device, if any.
    pub fn live_here(&self) -> Option<(CallId, &CallRecord)> {
        self.calls
            .iter()
            .find(|(_, c)| c.here && matches!(c.phase, CallPhase::Active { .. }))
            .and_then(|(id, c)| CallId::from_hex(id).map(|id| (id, c)))
    }

    /// When the next ringing call runs out (or a group call this device is not in goes stale).
    pub fn next_deadline(&self) -> Option<u64> {
        self.calls
            .values()
            .filter_map(|c| match c.phase {
                CallPhase::Ringing => Some(c.started_at.saturating_add(RING_TIMEOUT_MS)),
                CallPhase::Elsewhere => Some(c.last_signal_at.saturating_add(GROUP_CALL_STALE_MS)),
                CallPhase::Active { .. } => c.rotate_due,
            })
            .min()
    }

    /// Ends `call`: removes it and gives the event and the history row.
    pub(crate) fn end(&mut self, call: CallId, end: CallEnd, step: &mut CallStep) {
        let Some(record) = self.calls.remove(&call.to_hex()) else {
            return;
        };
        let Some(conversation) = ConversationId::parse(&record.conversation) else {
            return;
        };
        step.events.push(CallEvent::Ended {
            call,
            conversation,
            end,
        });
        if record.group && (record.outgoing || record.joined) {
            // A group call this device left (its row was written then), or one another device
            // of this account started.
            return;
        }
        step.rows.push(record.history_row(call, end));
    }

    /// Ends the group call `call` once nobody is in it any more (missed, for a device that
    /// never joined it).
    fn end_if_nobody_left(&mut self, call: CallId, step: &mut CallStep) {
        let Some(record) = self
            .calls
            .get(&call.to_hex())
            .filter(|r| r.participants.is_empty())
        else {
            return;
        };
        let end = if record.joined || record.outgoing {
            CallEnd::Ended { duration_ms: 0 }
        } else {
            CallEnd::Missed
        };
        self.end(call, end, step);
    }

    /// This device leaves the group call `call`: its history row (the time it spent in the
    /// call) is written now, and the call stays known while others are in it.
    pub(crate) fn leave_group(
        &mut self,
        now: u64,
        me: &DeviceCredential,
        call: CallId,
        step: &mut CallStep,
    ) {
        let key = call.to_hex();
        let Some(record) = self.calls.get_mut(&key) else {
            return;
        };
        let since = match record.phase {
            CallPhase::Active { since } => since,
            CallPhase::Ringing | CallPhase::Elsewhere => return,
        };
        record.here = false;
        record.phase = CallPhase::Elsewhere;
        record.last_signal_at = now;
        record.participants.remove(&participant_key(me));
        let end = CallEnd::Ended {
            duration_ms: now.saturating_sub(since),
        };
        if let Some(conversation) = ConversationId::parse(&record.conversation) {
            step.rows.push(record.history_row(call, end));
            step.events.push(CallEvent::Ended {
                call,
                conversation,
                end,
            });
        }
        if record.participants.is_empty() {
            self.calls.remove(&key);
        }
    }

    /// This device joins the group call `call` it knows of.
    pub(crate) fn join_group(&mut self, now: u64, me: &DeviceCredential, call: CallId) -> bool {
        let Some(record) = self
            .calls
            .get_mut(&call.to_hex())
            .filter(|r| r.group && !r.here)
        else {
            return false;
        };
        record.here = true;
        record.joined = true;
        record.phase = CallPhase::Active { since: now };
        record.last_signal_at = now;
        record
            .participants
            .insert(participant_key(me), me.username.clone());
        true
    }

    /// The members of `conversation` changed (a commit): devices no longer in it leave its
    /// group calls. `members` holds the member devices' [`participant_key`]s; if this device is
    /// not among them it was removed, and its calls there end. The commit itself changed the
    /// keys: no rotation is needed.
    pub(crate) fn members_changed(
        &mut self,
        now: u64,
        me: &DeviceCredential,
        conversation: ConversationId,
        members: &BTreeSet<String>,
        step: &mut CallStep,
    ) {
        let here = conversation.to_string();
        let calls: Vec<CallId> = self
            .calls
            .iter()
            .filter(|(_, r)| r.group && r.conversation == here)
            .filter_map(|(id, _)| CallId::from_hex(id))
            .collect();
        let mine = participant_key(me);
        for call in calls {
            let key = call.to_hex();
            if !members.contains(&mine) {
                if self.calls.get(&key).is_some_and(|r| r.here) {
                    step.events.push(CallEvent::Removed { call });
                    self.leave_group(now, me, call, step);
                }
                if let Some(record) = self.calls.get_mut(&key) {
                    record.joined = true; // no "missed" row for a group this device left
                    self.end(call, CallEnd::Missed, step);
                }
                continue;
            }
            let Some(record) = self.calls.get_mut(&key) else {
                continue;
            };
            let before = record.participants.len();
            record
                .participants
                .retain(|device, _| members.contains(device));
            if record.participants.len() == before {
                continue;
            }
            step.events.push(CallEvent::Participants {
                call,
                participants: record.participants.clone(),
            });
            self.end_if_nobody_left(call, step);
        }
    }

    /// Ends every call that rang out by `now`; the caller's own ringing call is hung up.
    pub(crate) fn expire(&mut self, now: u64) -> CallStep {
        let mut step = CallStep::default();
        let group: Vec<(CallId, bool)> = self
            .calls
            .iter()
            .filter(|(_, c)| c.group)
            .filter_map(|(id, c)| {
                let stale = c.phase == CallPhase::Elsewhere
                    && c.last_signal_at.saturating_add(GROUP_CALL_STALE_MS) <= now;
                let rang_out = c.phase == CallPhase::Ringing
                    && c.started_at.saturating_add(RING_TIMEOUT_MS) <= now;
                (stale || rang_out).then(|| CallId::from_hex(id).map(|id| (id, stale)))?
            })
            .collect();
        for record in self.calls.values_mut() {
            if record.rotate_due.is_some_and(|t| t <= now) {
                record.rotate_due = None;
                record.rotated_at = now;
                if let Some(conversation) = ConversationId::parse(&record.conversation) {
                    step.rotate.push(conversation);
                }
            }
        }
        for (call, stale) in group {
            if stale {
                self.end(call, CallEnd::Missed, &mut step);
            } else if let Some(record) = self.calls.get_mut(&call.to_hex()) {
                // It stops ringing; the call goes on and this device may still join it.
                record.phase = CallPhase::Elsewhere;
                if let Some(conversation) = ConversationId::parse(&record.conversation) {
                    step.events.push(CallEvent::Ended {
                        call,
                        conversation,
                        end: CallEnd::Missed,
                    });
                }
            }
        }
        let due: Vec<(CallId, bool, Option<ConversationId>)> = self
            .calls
            .iter()
            .filter(|(_, c)| {
                !c.group
                    && c.phase == CallPhase::Ringing
                    && c.started_at.saturating_add(RING_TIMEOUT_MS) <= now
            })
            .filter_map(|(id, c)| {
                let conversation = ConversationId::parse(&c.conversation);
                CallId::from_hex(id).map(|id| (id, c.outgoing && c.here, conversation))
            })
            .collect();
        for (call, mine, conversation) in due {
            if mine {
                if let Some(conversation) = conversation {
                    step.replies.push(CallReply {
                        conversation,
                        signal: CallSignal {
                            call_id: call.0,
                            kind: CallSignalKind::Hangup,
                        },
                    });
                }
                self.end(call, CallEnd::NoAnswer, &mut step);
            } else {
                let end = if self.calls.get(&call.to_hex()).is_some_and(|c| c.outgoing) {
                    CallEnd::NoAnswer
                } else {
                    CallEnd::Missed
                };
                self.end(call, end, &mut step);
            }
        }
        step
    }

    /// Handles a call signal from `origin`; `may_ring` is false for an account the user has not
    /// accepted.
    pub(crate) fn on_signal(
        &mut self,
        now: u64,
        me: &DeviceCredential,
        origin: SignalOrigin<'_>,
        signal: &CallSignal,
        may_ring: bool,
    ) -> CallStep {
        let SignalOrigin {
            conversation,
            sender,
            sent_at,
        } = origin;
        let mut step = CallStep::default();
        let call = CallId(signal.call_id);
        let key = call.to_hex();
        let from_my_account = sender.username == me.username;
        let known = self.calls.get(&key).cloned();
        if known.as_ref().is_some_and(|r| r.group)
            || matches!(
                signal.kind,
                CallSignalKind::Join { .. } | CallSignalKind::Leave
            )
        {
            self.on_group_signal(now, me, origin, signal, may_ring, &mut step);
            return step;
        }
        match &signal.kind {
            CallSignalKind::Offer { sdp, video } => {
                if known.is_some() {
                    return step;
                }
                let record = CallRecord::learned(
                    conversation,
                    sender,
                    from_my_account,
                    *video,
                    sent_at.min(now),
                );
                self.calls.insert(key, record);
                if from_my_account {
                    // Another device of this account calls: the history row comes at the end.
                } else if now.saturating_sub(sent_at) >= RING_TIMEOUT_MS || !may_ring {
                    self.end(call, CallEnd::Missed, &mut step);
                } else if self.live_here().is_some() {
                    step.replies.push(CallReply {
                        conversation,
                        signal: CallSignal {
                            call_id: call.0,
                            kind: CallSignalKind::Busy,
                        },
                    });
                    self.end(call, CallEnd::Missed, &mut step);
                } else {
                    step.events.push(CallEvent::Incoming {
                        call,
                        conversation,
                        from: sender.username.clone(),
                        video: *video,
                        offer: sdp.clone(),
                    });
                }
            }
            CallSignalKind::Answer { sdp } => {
                let Some(record) = known else { return step };
                if record.phase != CallPhase::Ringing {
                    // A later answer from a device that lost the race: the first one won.
                    return step;
                }
                if record.outgoing && record.here {
                    if let Some(r) = self.calls.get_mut(&key) {
                        r.phase = CallPhase::Active { since: now };
                        r.peer_device = Some(sender.device_id.to_string());
                    }
                    step.events.push(CallEvent::Answered {
                        call,
                        answer: sdp.clone(),
                    });
                } else if from_my_account && !record.here {
                    self.end(call, CallEnd::AnsweredElsewhere, &mut step);
                } else if let Some(r) = self.calls.get_mut(&key) {
                    // Someone else's device answered a call this device only watches.
                    r.phase = CallPhase::Active { since: now };
                }
            }
            CallSignalKind::IceCandidate {
                candidate,
                sdp_mid,
                sdp_m_line_index,
            } => {
                if known.is_some_and(|r| r.here && from_peer(&r, sender)) {
                    step.events.push(CallEvent::Candidate {
                        call,
                        candidate: candidate.clone(),
                        sdp_mid: sdp_mid.clone(),
                        sdp_m_line_index: *sdp_m_line_index,
                    });
                }
            }
            CallSignalKind::Ringing => {
                if known.is_some_and(|r| r.here && r.outgoing) {
                    step.events.push(CallEvent::Ringing { call });
                }
            }
            CallSignalKind::Busy | CallSignalKind::Decline => {
                let Some(record) = known else { return step };
                let busy = signal.kind == CallSignalKind::Busy;
                if record.phase != CallPhase::Ringing {
                    return step;
                }
                if record.outgoing {
                    self.end(
                        call,
                        if busy {
                            CallEnd::Busy
                        } else {
                            CallEnd::Declined
                        },
                        &mut step,
                    );
                } else if from_my_account && !busy {
                    // Declined on another device of this account: stop ringing here too.
                    self.end(call, CallEnd::Declined, &mut step);
                }
            }
            CallSignalKind::Hangup => {
                let Some(record) = known else {
                    if !from_my_account {
                        self.calls.insert(
                            key,
                            CallRecord::learned(
                                conversation,
                                sender,
                                false,
                                false,
                                sent_at.min(now),
                            ),
                        );
                        self.end(call, CallEnd::Missed, &mut step);
                    }
                    return step;
                };
                if record.here
                    && matches!(record.phase, CallPhase::Active { .. })
                    && !from_peer(&record, sender)
                {
                    // Only the other end hangs up a live call: not a device that lost the race
                    // to answer, nor any other member.
                    return step;
                }
                let end = match record.phase {
                    CallPhase::Active { since } => CallEnd::Ended {
                        duration_ms: now.saturating_sub(since),
                    },
                    CallPhase::Ringing | CallPhase::Elsewhere if record.outgoing => {
                        CallEnd::NoAnswer
                    }
                    CallPhase::Ringing | CallPhase::Elsewhere => CallEnd::Missed,
                };
                self.end(call, end, &mut step);
            }
            // Handled above.
            CallSignalKind::Join { .. } | CallSignalKind::Leave => {}
        }
        step
    }

    /// A signal about a group call: only `join` and `leave` count (a one-to-one signal naming
    /// a group call's id is ignored).
    fn on_group_signal(
        &mut self,
        now: u64,
        me: &DeviceCredential,
        origin: SignalOrigin<'_>,
        signal: &CallSignal,
        may_ring: bool,
        step: &mut CallStep,
    ) {
        let SignalOrigin {
            conversation,
            sender,
            sent_at,
        } = origin;
        let call = CallId(signal.call_id);
        let key = call.to_hex();
        let device = participant_key(sender);
        if *sender == *me {
            return;
        }
        match &signal.kind {
            CallSignalKind::Join { video } => {
                let fresh = now.saturating_sub(sent_at) < RING_TIMEOUT_MS;
                let busy = self.live_here().is_some();
                let record = match self.calls.get_mut(&key) {
                    Some(record)
                        if record.group && record.conversation == conversation.to_string() =>
                    {
                        record
                    }
                    // A call id of another conversation, or of a one-to-one call.
                    Some(_) => return,
                    None => {
                        let here = conversation.to_string();
                        let known_there = self
                            .calls
                            .values()
                            .filter(|r| r.group && r.conversation == here)
                            .count();
                        if known_there >= GROUP_CALLS_PER_CONVERSATION {
                            return;
                        }
                        let from_my_account = sender.username == me.username;
                        let mut record = CallRecord::learned(
                            conversation,
                            sender,
                            from_my_account,
                            *video,
                            sent_at.min(now),
                        );
                        record.group = true;
                        // Only a conversation's first call rings: a second one at the same time
                        // (a race, or a member making calls up) shows only in the group.
                        let rings =
                            fresh && may_ring && !from_my_account && !busy && known_there == 0;
                        if !rings {
                            record.phase = CallPhase::Elsewhere;
                        }
                        self.calls.insert(key.clone(), record);
                        let Some(record) = self.calls.get_mut(&key) else {
                            return;
                        };
                        if rings {
                            step.events.push(CallEvent::Invited {
                                call,
                                conversation,
                                from: sender.username.clone(),
                                video: *video,
                            });
                        }
                        record
                    }
                };
                record.last_signal_at = now;
                record.participants.insert(device, sender.username.clone());
                step.events.push(CallEvent::Participants {
                    call,
                    participants: record.participants.clone(),
                });
            }
            CallSignalKind::Leave => {
                let Some(record) = self
                    .calls
                    .get_mut(&key)
                    .filter(|r| r.group && r.conversation == conversation.to_string())
                else {
                    return;
                };
                record.last_signal_at = now;
                if record.participants.remove(&device).is_none() {
                    return;
                }
                step.events.push(CallEvent::Participants {
                    call,
                    participants: record.participants.clone(),
                });
                let mine = participant_key(me);
                if record.here
                    && record
                        .participants
                        .keys()
                        .next()
                        .is_some_and(|d| *d == mine)
                {
                    // The remaining participant with the lowest participant id rotates the
                    // keys, at most once per gap.
                    let next = record.rotated_at.saturating_add(LEAVE_ROTATION_GAP_MS);
                    if record.rotated_at == 0 || now >= next {
                        record.rotated_at = now;
                        step.rotate.push(conversation);
                    } else {
                        record.rotate_due = Some(next);
                    }
                }
                self.end_if_nobody_left(call, step);
            }
            // One-to-one signals do not apply to a group call.
            _ => {}
        }
    }
}

/// A device's key in a group call's participants: its participant id at the forwarding unit
/// (`nightjar_core::calls::sfu_participant`, a hash of the account and the device id) in
/// decimal, as the forwarding unit names it. Device ids alone are unique only per account.
pub fn participant_key(device: &DeviceCredential) -> String {
    nightjar_core::calls::sfu_participant(&device.username, device.device_id).to_string()
}

/// Whether `sender` is the other device of a call this device takes part in.
fn from_peer(record: &CallRecord, sender: &DeviceCredential) -> bool {
    record
        .peer_device
        .as_deref()
        .is_some_and(|d| d == sender.device_id.to_string())
}

#[cfg(test)]
mod tests;
