//! One participant's connection: its str0m `Rtc`, the tracks it publishes, the tracks it
//! receives, and its half of the data-channel protocol. The peer handles what concerns only
//! itself (SDP on its channel, its bandwidth estimate) and reports the rest to its room as
//! [`PeerEvent`]s.

use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use str0m::bwe::{Bitrate, BweKind};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::channel::{ChannelData, ChannelId};
use str0m::media::{Direction, KeyframeRequestKind, MediaData, Mid};
use str0m::{Event, IceConnectionState, Input, Output, Rtc};
use tracing::{debug, warn};

use crate::ids::{ParticipantId, TrackKind};
use crate::output::{LeaveReason, Transmit};
use crate::protocol::{CHANNEL_LABEL, ClientMessage, MAX_MESSAGE_LEN, ServerMessage};
use crate::tracks::ForwardTable;

/// What a room must act on after a peer ran.
#[derive(Debug)]
pub(crate) enum PeerEvent {
    /// ICE and DTLS are up.
    Connected,
    /// The signalling data channel opened.
    ChannelReady,
    /// The participant started publishing a track of this kind.
    Published(TrackKind),
    /// The participant stopped publishing it.
    Unpublished(TrackKind),
    /// A frame of one of its published tracks.
    Frame(TrackKind, Box<MediaData>),
    /// A keyframe is wanted from `publisher` (a receiver asked, or a track opened).
    KeyframeWanted(ParticipantId),
    /// The participant chose whose videos to receive (`None`: everyone's).
    Subscribe(Option<BTreeSet<ParticipantId>>),
    /// Video to this participant was paused (true) or resumed (false).
    VideoPaused(bool),
    /// The connection is over.
    Gone(LeaveReason),
}

/// Where a peer puts what it produced.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    pub(crate) transmits: Vec<Transmit>,
    pub(crate) events: VecDeque<(ParticipantId, PeerEvent)>,
}

/// The result of offering a frame to a receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Forward {
    Sent,
    Skipped,
    /// Held back until the publisher's next keyframe.
    NeedKeyframe,
}

/// Per-peer settings taken from the SFU configuration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PeerSettings {
    pub(crate) pause_below_bps: Option<u64>,
    pub(crate) keyframe_interval: Duration,
    pub(crate) connect_deadline: Instant,
}

#[derive(Debug)]
struct Published {
    mid: Mid,
    kind: TrackKind,
    last_keyframe_request: Option<Instant>,
    keyframe_request_pending: bool,
}

/// One participant's connection to the SFU.
pub(crate) struct Peer {
    pub(crate) id: ParticipantId,
    rtc: Rtc,
    channel: Option<ChannelId>,
    published: Vec<Published>,
    pub(crate) forwarded: ForwardTable,
    pending_offer: Option<SdpPendingOffer>,
    pub(crate) subscription: Option<BTreeSet<ParticipantId>>,
    pub(crate) selected_video: BTreeSet<ParticipantId>,
    video_paused: bool,
    connected: bool,
    gone: Option<LeaveReason>,
    next_timeout: Instant,
    settings: PeerSettings,
}

impl Peer {
    pub(crate) fn new(id: ParticipantId, rtc: Rtc, now: Instant, settings: PeerSettings) -> Peer {
        Peer {
            id,
            rtc,
            channel: None,
            published: Vec::new(),
            forwarded: ForwardTable::default(),
            pending_offer: None,
            subscription: None,
            selected_video: BTreeSet::new(),
            video_paused: false,
            connected: false,
            gone: None,
            next_timeout: now,
            settings,
        }
    }

    pub(crate) fn accepts(&self, input: &Input<'_>) -> bool {
        self.gone.is_none() && self.rtc.accepts(input)
    }

    pub(crate) fn publishes(&self, kind: TrackKind) -> bool {
        self.published.iter().any(|p| p.kind == kind)
    }

    /// Feeds network input or a timeout; the caller drains afterwards.
    pub(crate) fn handle_input(&mut self, input: Input<'_>) {
        if self.gone.is_some() {
            return;
        }
        if let Err(e) = self.rtc.handle_input(input) {
            warn!("connection failed: {e}");
            self.rtc.disconnect();
            self.gone = Some(LeaveReason::Failed);
        }
    }

    /// Moves time forward: the engine's own timers, merged keyframe requests, the connect
    /// deadline. The caller drains afterwards.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        if self.gone.is_some() {
            return;
        }
        if !self.connected && now >= self.settings.connect_deadline {
            debug!("connection did not come up in time");
            self.rtc.disconnect();
            self.gone = Some(LeaveReason::ConnectTimeout);
            return;
        }
        for kind in [TrackKind::Audio, TrackKind::Video] {
            if self
                .published
                .iter()
                .any(|p| p.kind == kind && p.keyframe_request_pending && self.keyframe_due(p, now))
            {
                self.request_keyframe(now, kind);
            }
        }
        if now >= self.next_timeout {
            self.handle_input(Input::Timeout(now));
        }
    }

    /// When this peer next needs `handle_timeout`.
    pub(crate) fn deadline(&self) -> Instant {
        let mut at = self.next_timeout;
        if !self.connected {
            at = at.min(self.settings.connect_deadline);
        }
        for p in self.published.iter().filter(|p| p.keyframe_request_pending) {
            if let Some(last) = p.last_keyframe_request {
                at = at.min(last + self.settings.keyframe_interval);
            }
        }
        at
    }

    fn keyframe_due(&self, p: &Published, now: Instant) -> bool {
        p.last_keyframe_request
            .is_none_or(|last| now >= last + self.settings.keyframe_interval)
    }

    /// Asks this participant for a keyframe of its video, at most once per interval (a request
    /// inside the interval is sent when it ends). The caller drains afterwards.
    pub(crate) fn request_keyframe(&mut self, now: Instant, kind: TrackKind) {
        let interval = self.settings.keyframe_interval;
        let Some(p) = self.published.iter_mut().find(|p| p.kind == kind) else {
            return;
        };
        if p.last_keyframe_request
            .is_some_and(|last| now < last + interval)
        {
            p.keyframe_request_pending = true;
            return;
        }
        p.keyframe_request_pending = false;
        p.last_keyframe_request = Some(now);
        let Some(mut writer) = self.rtc.writer(p.mid) else {
            return;
        };
        let how = if writer.is_request_keyframe_possible(KeyframeRequestKind::Pli) {
            KeyframeRequestKind::Pli
        } else {
            KeyframeRequestKind::Fir
        };
        if let Err(e) = writer.request_keyframe(None, how) {
            // Typically: nothing received on this track yet; its first frame is a keyframe.
            debug!("keyframe request not sent: {e}");
        }
    }

    /// Offers one of `source`'s frames to this receiver. The caller drains afterwards.
    pub(crate) fn forward(
        &mut self,
        source: ParticipantId,
        kind: TrackKind,
        data: &MediaData,
    ) -> Forward {
        if self.gone.is_some() || !self.connected {
            return Forward::Skipped;
        }
        if kind == TrackKind::Video && (self.video_paused || !self.selected_video.contains(&source))
        {
            return Forward::Skipped;
        }
        let Some((mid, track)) = self.forwarded.open_mut(source, kind) else {
            return Forward::Skipped;
        };
        if kind == TrackKind::Video && track.awaiting_keyframe {
            if !data.is_keyframe() {
                return Forward::NeedKeyframe;
            }
            track.awaiting_keyframe = false;
        }
        let Some(writer) = self.rtc.writer(mid) else {
            return Forward::Skipped;
        };
        let Some(pt) = writer.match_params(data.params) else {
            return Forward::Skipped;
        };
        let writer = match data.ext_vals.audio_level {
            Some(level) => writer.audio_level(level, data.ext_vals.voice_activity.unwrap_or(false)),
            None => writer,
        };
        match writer.write(pt, data.network_time, data.time, data.data.clone()) {
            Ok(()) => Forward::Sent,
            Err(e) => {
                debug!("frame not forwarded: {e}");
                Forward::Skipped
            }
        }
    }

    /// Sends a notice on the signalling channel (dropped if it is not open yet). The caller
    /// drains afterwards.
    pub(crate) fn notify(&mut self, message: &ServerMessage) {
        let Some(mut channel) = self.channel.and_then(|id| self.rtc.channel(id)) else {
            return;
        };
        match channel.write(false, message.to_json().as_bytes()) {
            Ok(true) => {}
            Ok(false) => debug!("signalling channel full; notice dropped"),
            Err(e) => debug!("signalling channel write failed: {e}"),
        }
    }

    /// Ends the connection: a `bye` notice, then DTLS close, each drained into `out`. The
    /// caller then drops the peer.
    pub(crate) fn close(&mut self, now: Instant, reason: LeaveReason, out: &mut Outbox) {
        if self.gone.is_some() {
            return;
        }
        let text = match reason {
            LeaveReason::Kicked => "kicked",
            _ => "closed",
        };
        self.notify(&ServerMessage::Bye {
            reason: text.into(),
        });
        self.drain(now, out);
        if let Err(e) = self.rtc.close() {
            debug!("close: {e}");
            self.rtc.disconnect();
        }
        self.gone = Some(reason);
        self.drain(now, out);
    }

    /// Whether ICE and DTLS are up and the peer is not leaving.
    pub(crate) fn is_connected(&self) -> bool {
        self.connected && self.gone.is_none()
    }

    /// Tracks media currently flows on towards this peer: open audio, and open video that is
    /// selected and not paused.
    pub(crate) fn active_streams(&self) -> usize {
        self.forwarded
            .open_tracks()
            .filter(|t| {
                t.kind == TrackKind::Audio
                    || (!self.video_paused && self.selected_video.contains(&t.source))
            })
            .count()
    }

    /// Polls the engine until it has nothing more to say, negotiating first if tracks changed.
    pub(crate) fn drain(&mut self, now: Instant, out: &mut Outbox) {
        loop {
            if self.gone.is_none() && !self.rtc.is_alive() {
                self.gone = Some(LeaveReason::Closed);
            }
            if self.gone.is_none() && self.negotiate_if_needed() {
                continue;
            }
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    self.next_timeout = t;
                    break;
                }
                Ok(Output::Transmit(t)) => out.transmits.push(Transmit {
                    destination: t.destination,
                    contents: t.contents.into(),
                }),
                Ok(Output::Event(e)) => self.handle_event(now, e, out),
                Err(e) => {
                    warn!("connection failed: {e}");
                    self.rtc.disconnect();
                    self.gone.get_or_insert(LeaveReason::Failed);
                    break;
                }
            }
        }
        if let Some(reason) = self.gone {
            out.events.push_back((self.id, PeerEvent::Gone(reason)));
        }
    }

    fn handle_event(&mut self, now: Instant, event: Event, out: &mut Outbox) {
        let id = self.id;
        match event {
            Event::Connected => {
                self.connected = true;
                out.events.push_back((id, PeerEvent::Connected));
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                self.rtc.disconnect();
                self.gone.get_or_insert(LeaveReason::Disconnected);
            }
            Event::Closed => {
                self.gone.get_or_insert(LeaveReason::Closed);
            }
            Event::MediaAdded(m) => self.track_direction(m.mid, m.kind.into(), m.direction, out),
            Event::MediaChanged(m) => {
                let kind = self.rtc.media(m.mid).map(|media| media.kind().into());
                if let Some(kind) = kind {
                    self.track_direction(m.mid, kind, m.direction, out);
                }
            }
            Event::MediaData(data) => {
                let Some(p) = self.published.iter().find(|p| p.mid == data.mid) else {
                    return;
                };
                let kind = p.kind;
                if kind == TrackKind::Video && !data.contiguous {
                    self.request_keyframe(now, kind);
                }
                out.events
                    .push_back((id, PeerEvent::Frame(kind, Box::new(data))));
            }
            Event::KeyframeRequest(req) => {
                if let Some(t) = self
                    .forwarded
                    .by_mid(req.mid)
                    .filter(|t| t.kind == TrackKind::Video)
                {
                    out.events
                        .push_back((id, PeerEvent::KeyframeWanted(t.source)));
                }
            }
            Event::ChannelOpen(cid, label) if label == CHANNEL_LABEL && self.channel.is_none() => {
                self.channel = Some(cid);
                out.events.push_back((id, PeerEvent::ChannelReady));
            }
            Event::ChannelClose(cid) if self.channel == Some(cid) => {
                // Without its channel the client cannot follow the room any more.
                self.channel = None;
                self.rtc.disconnect();
                self.gone.get_or_insert(LeaveReason::Closed);
            }
            Event::ChannelData(data) => self.handle_channel_data(data, out),
            Event::EgressBitrateEstimate(BweKind::Twcc(estimate)) => {
                self.handle_estimate(estimate, out)
            }
            _ => {}
        }
    }

    /// A media line of the client's changed direction: it publishes on it, or stopped.
    fn track_direction(&mut self, mid: Mid, kind: TrackKind, dir: Direction, out: &mut Outbox) {
        if self.forwarded.by_mid(mid).is_some() {
            return;
        }
        let position = self.published.iter().position(|p| p.mid == mid);
        match (position, dir.is_receiving()) {
            (None, true) if !self.publishes(kind) => {
                self.published.push(Published {
                    mid,
                    kind,
                    last_keyframe_request: None,
                    keyframe_request_pending: false,
                });
                out.events.push_back((self.id, PeerEvent::Published(kind)));
            }
            (None, true) => debug!("second {kind:?} track ignored"),
            (Some(i), false) => {
                self.published.remove(i);
                out.events
                    .push_back((self.id, PeerEvent::Unpublished(kind)));
            }
            _ => {}
        }
    }

    fn handle_estimate(&mut self, estimate: Bitrate, out: &mut Outbox) {
        let Some(floor) = self.settings.pause_below_bps else {
            return;
        };
        let bps = estimate.as_u64();
        let pause = if self.video_paused {
            bps <= floor.saturating_mul(2)
        } else {
            bps < floor
        };
        if pause != self.video_paused {
            debug!(bps, pause, "video pause changed");
            self.video_paused = pause;
            self.notify(&ServerMessage::Paused { video: pause });
            out.events
                .push_back((self.id, PeerEvent::VideoPaused(pause)));
        }
    }

    fn handle_channel_data(&mut self, data: ChannelData, out: &mut Outbox) {
        if Some(data.id) != self.channel {
            return;
        }
        if data.data.len() > MAX_MESSAGE_LEN {
            return self.refuse("message too long");
        }
        match serde_json::from_slice::<ClientMessage>(&data.data) {
            Ok(ClientMessage::Offer { sdp }) => self.handle_offer(&sdp),
            Ok(ClientMessage::Answer { sdp }) => self.handle_answer(&sdp, out),
            Ok(ClientMessage::Subscribe { participants }) => {
                let set = participants.map(|p| p.into_iter().collect());
                out.events.push_back((self.id, PeerEvent::Subscribe(set)));
            }
            Err(e) => self.refuse(&format!("unreadable message: {e}")),
        }
    }

    fn refuse(&mut self, message: &str) {
        // The text may quote the client's SDP (its addresses): it goes to the client only.
        debug!("refused a client message");
        self.notify(&ServerMessage::Error {
            message: message.into(),
        });
    }

    fn handle_offer(&mut self, sdp: &str) {
        let offer = match SdpOffer::from_sdp_string(sdp) {
            Ok(offer) => offer,
            Err(e) => return self.refuse(&format!("invalid SDP offer: {e}")),
        };
        // The SFU is the polite side: the client's offer wins, ours is made again later.
        let crossed = self.pending_offer.take().is_some();
        let result = self.rtc.sdp_api().accept_offer(offer);
        if crossed {
            self.forwarded.rolled_back();
        }
        match result {
            Ok(answer) => self.notify(&ServerMessage::Answer {
                sdp: answer.to_sdp_string(),
            }),
            Err(e) => self.refuse(&format!("offer refused: {e}")),
        }
    }

    fn handle_answer(&mut self, sdp: &str, out: &mut Outbox) {
        let Some(pending) = self.pending_offer.take() else {
            return self.refuse("no offer is outstanding");
        };
        let answer = match SdpAnswer::from_sdp_string(sdp) {
            Ok(answer) => answer,
            Err(e) => {
                self.pending_offer = Some(pending);
                return self.refuse(&format!("invalid SDP answer: {e}"));
            }
        };
        if let Err(e) = self.rtc.sdp_api().accept_answer(pending, answer) {
            self.forwarded.rolled_back();
            return self.refuse(&format!("answer refused: {e}"));
        }
        for (source, kind) in self.forwarded.answered() {
            if kind == TrackKind::Video {
                out.events
                    .push_back((self.id, PeerEvent::KeyframeWanted(source)));
            }
        }
        // Let the estimator probe for what the open tracks need (video ~1.5 Mbit/s at most).
        let open = self.forwarded.open_count() as u64;
        self.rtc
            .bwe()
            .set_desired_bitrate(Bitrate::bps(300_000 + open * 1_500_000));
    }

    /// Puts added and removed tracks into a new offer, if the channel is up and no offer is
    /// outstanding. Returns true if it changed anything.
    fn negotiate_if_needed(&mut self) -> bool {
        if self.channel.is_none() || self.pending_offer.is_some() {
            return false;
        }
        let changes = self.forwarded.pending_changes();
        if changes.open.is_empty() && changes.stop.is_empty() {
            return false;
        }
        let mut api = self.rtc.sdp_api();
        for (source, kind) in changes.open {
            let mid = api.add_media(
                kind.media_kind(),
                Direction::SendOnly,
                Some(source.to_string()),
                Some(format!("{source}-{}", kind.as_str())),
                None,
            );
            self.forwarded.offered(source, kind, mid);
        }
        for mid in changes.stop {
            api.stop_media(mid);
            self.forwarded.stop_offered(mid);
        }
        let Some((offer, pending)) = api.apply() else {
            // Only stops of lines already stopped: nothing to tell the client.
            self.forwarded.rolled_back();
            return true;
        };
        self.pending_offer = Some(pending);
        self.notify(&ServerMessage::Tracks {
            tracks: self.forwarded.infos(),
        });
        self.notify(&ServerMessage::Offer {
            sdp: offer.to_sdp_string(),
        });
        true
    }
}
