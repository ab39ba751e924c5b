//! One call: its participants, who receives whose tracks, stream selection (subscriptions,
//! active speaker, last-N) and keyframe requests. The room turns what each peer reports into
//! actions on the other peers, draining every peer it touches so that each str0m `Rtc` sees
//! one mutation, then a full drain, as str0m requires.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

use str0m::Input;
use str0m::media::MediaData;

use crate::ids::{ParticipantId, RoomId, TrackKind};
use crate::output::{LeaveReason, SfuEvent, SfuOutput, TappedFrame};
use crate::peer::{Forward, Outbox, Peer, PeerEvent};
use crate::protocol::ServerMessage;
use crate::speaker::SpeakerDetector;
use crate::stats::SfuStats;

/// What rooms hand up to the core besides datagrams.
#[derive(Debug, Default)]
pub(crate) struct Sink {
    pub(crate) outputs: VecDeque<SfuOutput>,
    pub(crate) counters: SfuStats,
    pub(crate) removed: Vec<(RoomId, ParticipantId)>,
}

/// One call room.
pub(crate) struct Room {
    id: RoomId,
    peers: BTreeMap<ParticipantId, Peer>,
    join_order: Vec<ParticipantId>,
    speaker: SpeakerDetector,
    /// Participants who were active speaker, most recent first.
    recent_speakers: Vec<ParticipantId>,
    last_n: Option<usize>,
    /// Opened by a join (closed when empty) rather than by `open_room`.
    pub(crate) auto_opened: bool,
    pub(crate) tapped: bool,
}

impl Room {
    pub(crate) fn new(id: RoomId, last_n: Option<usize>, auto_opened: bool) -> Room {
        Room {
            id,
            peers: BTreeMap::new(),
            join_order: Vec::new(),
            speaker: SpeakerDetector::default(),
            recent_speakers: Vec::new(),
            last_n,
            auto_opened,
            tapped: false,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.peers.len()
    }

    pub(crate) fn contains(&self, who: ParticipantId) -> bool {
        self.peers.contains_key(&who)
    }

    pub(crate) fn participants(&self) -> Vec<ParticipantId> {
        self.join_order.clone()
    }

    pub(crate) fn active_speaker(&self) -> Option<ParticipantId> {
        self.speaker.current()
    }

    /// The participant whose connection takes this input.
    pub(crate) fn accepting(&self, input: &Input<'_>) -> Option<ParticipantId> {
        self.peers.values().find(|p| p.accepts(input)).map(|p| p.id)
    }

    pub(crate) fn peer_accepts(&self, who: ParticipantId, input: &Input<'_>) -> bool {
        self.peers.get(&who).is_some_and(|p| p.accepts(input))
    }

    /// The earliest time a peer needs `handle_timeout`.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.peers.values().map(Peer::deadline).min()
    }

    /// Adds the load figures of this room to `stats`.
    pub(crate) fn count(&self, stats: &mut SfuStats) {
        stats.participants += self.peers.len();
        for peer in self.peers.values() {
            stats.connected += usize::from(peer.is_connected());
            stats.forwarded_streams += peer.active_streams();
        }
    }

    /// Adds a participant whose offer was accepted: it will receive everyone's tracks, and
    /// everyone will receive its tracks once its first drain reports them.
    pub(crate) fn add(&mut self, now: Instant, mut peer: Peer, out: &mut Outbox, sink: &mut Sink) {
        for other in self.peers.values() {
            for kind in [TrackKind::Audio, TrackKind::Video] {
                if other.publishes(kind) {
                    peer.forwarded.add(other.id, kind);
                }
            }
        }
        let id = peer.id;
        peer.drain(now, out);
        self.peers.insert(id, peer);
        self.join_order.push(id);
        self.reselect(now, out);
        self.process(now, out, sink);
    }

    /// Feeds a datagram to the participant it belongs to.
    pub(crate) fn handle_input(
        &mut self,
        now: Instant,
        who: ParticipantId,
        input: Input<'_>,
        out: &mut Outbox,
        sink: &mut Sink,
    ) {
        if let Some(peer) = self.peers.get_mut(&who) {
            peer.handle_input(input);
            peer.drain(now, out);
        }
        self.process(now, out, sink);
    }

    /// Runs every peer whose deadline has come.
    pub(crate) fn handle_timeout(&mut self, now: Instant, out: &mut Outbox, sink: &mut Sink) {
        for peer in self.peers.values_mut() {
            if peer.deadline() <= now {
                peer.handle_timeout(now);
                peer.drain(now, out);
            }
        }
        self.process(now, out, sink);
    }

    /// Removes a participant at once: its connection is closed (when `reason` is ours to give)
    /// and its tracks are stopped at everyone else.
    pub(crate) fn remove(
        &mut self,
        now: Instant,
        who: ParticipantId,
        reason: LeaveReason,
        out: &mut Outbox,
        sink: &mut Sink,
    ) {
        let Some(mut peer) = self.peers.remove(&who) else {
            return;
        };
        // Send what the close produces; whatever else the peer reports no longer matters.
        let mut last = Outbox::default();
        if matches!(
            reason,
            LeaveReason::Left | LeaveReason::Kicked | LeaveReason::RoomClosed
        ) {
            peer.close(now, reason, &mut last);
        } else {
            peer.drain(now, &mut last);
        }
        out.transmits.append(&mut last.transmits);
        drop(peer);

        self.join_order.retain(|p| *p != who);
        self.recent_speakers.retain(|p| *p != who);
        for other in self.peers.values_mut() {
            other.forwarded.remove(who, None);
            other.selected_video.remove(&who);
            other.drain(now, out);
        }
        if self.speaker.remove(who) {
            self.announce_speaker(now, None, out, sink);
        }
        sink.removed.push((self.id, who));
        sink.outputs.push_back(SfuOutput::Event(SfuEvent::Left {
            room: self.id,
            participant: who,
            reason,
        }));
        self.reselect(now, out);
        self.process(now, out, sink);
    }

    /// Handles what the peers reported until nothing is left.
    fn process(&mut self, now: Instant, out: &mut Outbox, sink: &mut Sink) {
        while let Some((who, event)) = out.events.pop_front() {
            if !self.peers.contains_key(&who) {
                continue;
            }
            self.handle_event(now, who, event, out, sink);
        }
    }

    fn handle_event(
        &mut self,
        now: Instant,
        who: ParticipantId,
        event: PeerEvent,
        out: &mut Outbox,
        sink: &mut Sink,
    ) {
        match event {
            PeerEvent::Connected => sink
                .outputs
                .push_back(SfuOutput::Event(SfuEvent::Connected {
                    room: self.id,
                    participant: who,
                })),
            PeerEvent::ChannelReady => {
                let speaker = self.speaker.current();
                if let Some(peer) = self.peers.get_mut(&who) {
                    if speaker.is_some() {
                        peer.notify(&ServerMessage::Speaker {
                            participant: speaker,
                        });
                    }
                    peer.drain(now, out);
                }
            }
            PeerEvent::Published(kind) => {
                for other in self.peers.values_mut().filter(|p| p.id != who) {
                    other.forwarded.add(who, kind);
                    other.drain(now, out);
                }
                self.reselect(now, out);
            }
            PeerEvent::Unpublished(kind) => {
                for other in self.peers.values_mut().filter(|p| p.id != who) {
                    other.forwarded.remove(who, Some(kind));
                    other.drain(now, out);
                }
                self.reselect(now, out);
            }
            PeerEvent::Frame(kind, data) => self.route(now, who, kind, &data, out, sink),
            PeerEvent::KeyframeWanted(publisher) => self.request_keyframe(now, publisher, out),
            PeerEvent::Subscribe(set) => {
                if let Some(peer) = self.peers.get_mut(&who) {
                    peer.subscription = set;
                }
                self.reselect(now, out);
            }
            PeerEvent::VideoPaused(true) => {}
            PeerEvent::VideoPaused(false) => {
                let sources: Vec<ParticipantId> = match self.peers.get_mut(&who) {
                    Some(peer) => {
                        let sources: Vec<_> = peer.selected_video.iter().copied().collect();
                        for s in &sources {
                            peer.forwarded.await_keyframe(*s);
                        }
                        sources
                    }
                    None => Vec::new(),
                };
                for s in sources {
                    self.request_keyframe(now, s, out);
                }
            }
            PeerEvent::Gone(reason) => self.remove(now, who, reason, out, sink),
        }
    }

    fn request_keyframe(&mut self, now: Instant, publisher: ParticipantId, out: &mut Outbox) {
        if let Some(peer) = self.peers.get_mut(&publisher) {
            peer.request_keyframe(now, TrackKind::Video);
            peer.drain(now, out);
        }
    }

    /// Passes one frame to everyone else who should get it.
    fn route(
        &mut self,
        now: Instant,
        from: ParticipantId,
        kind: TrackKind,
        data: &MediaData,
        out: &mut Outbox,
        sink: &mut Sink,
    ) {
        sink.counters.frames_received += 1;
        if self.tapped {
            sink.outputs.push_back(SfuOutput::Tap {
                room: self.id,
                frame: TappedFrame {
                    participant: from,
                    kind,
                    data: data.data.to_vec(),
                    keyframe: data.is_keyframe(),
                },
            });
        }
        if let (TrackKind::Audio, Some(level)) = (kind, data.ext_vals.audio_level)
            && let Some(speaker) = self.speaker.observe(now, from, level)
        {
            self.announce_speaker(now, Some(speaker), out, sink);
        }
        let mut need_keyframe = false;
        for peer in self.peers.values_mut().filter(|p| p.id != from) {
            match peer.forward(from, kind, data) {
                Forward::Sent => {
                    sink.counters.frames_forwarded += 1;
                    sink.counters.bytes_forwarded += data.data.len() as u64;
                    peer.drain(now, out);
                }
                Forward::NeedKeyframe => need_keyframe = true,
                Forward::Skipped => {}
            }
        }
        if need_keyframe {
            self.request_keyframe(now, from, out);
        }
    }

    fn announce_speaker(
        &mut self,
        now: Instant,
        speaker: Option<ParticipantId>,
        out: &mut Outbox,
        sink: &mut Sink,
    ) {
        if let Some(s) = speaker {
            self.recent_speakers.retain(|p| *p != s);
            self.recent_speakers.insert(0, s);
        }
        let notice = ServerMessage::Speaker {
            participant: speaker,
        };
        for peer in self.peers.values_mut() {
            peer.notify(&notice);
            peer.drain(now, out);
        }
        sink.outputs
            .push_back(SfuOutput::Event(SfuEvent::ActiveSpeaker {
                room: self.id,
                participant: speaker,
            }));
        if self.last_n.is_some() {
            self.reselect(now, out);
        }
    }

    /// Recomputes whose video each participant receives; newly selected videos start at a
    /// keyframe, which is requested from their publishers.
    fn reselect(&mut self, now: Instant, out: &mut Outbox) {
        // Video publishers, most recent speakers first, then in joining order.
        let mut order: Vec<ParticipantId> = self.recent_speakers.clone();
        for p in &self.join_order {
            if !order.contains(p) {
                order.push(*p);
            }
        }
        order.retain(|p| {
            self.peers
                .get(p)
                .is_some_and(|peer| peer.publishes(TrackKind::Video))
        });
        let limit = self.last_n.unwrap_or(usize::MAX);
        let mut wanted = BTreeSet::new();
        for peer in self.peers.values_mut() {
            let selected: BTreeSet<ParticipantId> = order
                .iter()
                .copied()
                .filter(|p| *p != peer.id)
                .filter(|p| peer.subscription.as_ref().is_none_or(|s| s.contains(p)))
                .take(limit)
                .collect();
            for added in selected.difference(&peer.selected_video) {
                peer.forwarded.await_keyframe(*added);
                wanted.insert(*added);
            }
            peer.selected_video = selected;
        }
        for publisher in wanted {
            self.request_keyframe(now, publisher, out);
        }
    }
}
