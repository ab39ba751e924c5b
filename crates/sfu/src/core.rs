//! The sans-IO SFU: every room and every participant's str0m `Rtc`, driven by
//! `handle_input(now, ..)` and drained with `poll_output()`, with `timeout()` saying when to
//! come back. It reads no clock and touches no socket, so tests and the driver feed it alike.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Instant;

use str0m::change::SdpOffer;
use str0m::net::{DatagramRecv, Protocol, Receive};
use str0m::{Input, Rtc};
use tracing::debug;

use crate::config::SfuConfig;
use crate::engine::Engine;
use crate::error::SfuError;
use crate::ids::{ParticipantId, RoomId};
use crate::output::{LeaveReason, SfuOutput};
use crate::peer::{Outbox, Peer, PeerSettings};
use crate::room::{Room, Sink};
use crate::stats::SfuStats;

/// An input to [`SfuCore::handle_input`].
#[derive(Debug, Clone, Copy)]
pub enum SfuInput<'a> {
    /// A UDP datagram received on the SFU's socket.
    Datagram {
        /// Who sent it.
        source: SocketAddr,
        /// Its payload.
        contents: &'a [u8],
    },
    /// Time passed (call at [`SfuCore::timeout`], or any time earlier).
    Timeout,
}

/// The SFU's state machine: rooms, participants and their WebRTC connections.
pub struct SfuCore {
    config: SfuConfig,
    engine: Engine,
    rooms: HashMap<RoomId, Room>,
    /// Which participant a source address belongs to, learnt from `Rtc::accepts`.
    by_addr: HashMap<SocketAddr, (RoomId, ParticipantId)>,
    /// Rooms whose frames are copied out as [`SfuOutput::Tap`].
    tapped: HashSet<RoomId>,
    outbox: Outbox,
    sink: Sink,
}

impl SfuCore {
    /// A core whose clients reach it at `address` (the socket's address, or the public address
    /// in front of it); that address is the ICE host candidate in every answer.
    pub fn new(config: SfuConfig, address: SocketAddr) -> Result<SfuCore, SfuError> {
        let engine = Engine::new(address, &config)?;
        Ok(SfuCore {
            config,
            engine,
            rooms: HashMap::new(),
            by_addr: HashMap::new(),
            tapped: HashSet::new(),
            outbox: Outbox::default(),
            sink: Sink::default(),
        })
    }

    /// The address advertised to clients.
    pub fn address(&self) -> SocketAddr {
        self.engine.address()
    }

    /// The configuration in force.
    pub fn config(&self) -> &SfuConfig {
        &self.config
    }

    /// Opens a room (idempotent); it stays open until [`SfuCore::close_room`], even when empty.
    pub fn open_room(&mut self, room: RoomId) -> Result<(), SfuError> {
        if let Some(r) = self.rooms.get_mut(&room) {
            r.auto_opened = false;
            return Ok(());
        }
        if self.rooms.len() >= self.config.max_rooms {
            return Err(SfuError::TooManyRooms(self.config.max_rooms));
        }
        let mut r = Room::new(room, self.config.last_n, false);
        r.tapped = self.tapped.contains(&room);
        self.rooms.insert(room, r);
        Ok(())
    }

    /// Closes a room: every participant is disconnected (`bye` with reason `closed`).
    pub fn close_room(&mut self, now: Instant, room: RoomId) -> Result<(), SfuError> {
        let r = self
            .rooms
            .get_mut(&room)
            .ok_or(SfuError::UnknownRoom(room))?;
        for who in r.participants() {
            r.remove(
                now,
                who,
                LeaveReason::RoomClosed,
                &mut self.outbox,
                &mut self.sink,
            );
        }
        self.rooms.remove(&room);
        self.settle();
        Ok(())
    }

    /// Admits `participant` to `room` with its SDP offer and returns the SDP answer. The offer
    /// must open the `"nightjar-sfu"` data channel. On error nothing changed.
    pub fn join(
        &mut self,
        now: Instant,
        room: RoomId,
        participant: ParticipantId,
        offer_sdp: &str,
    ) -> Result<String, SfuError> {
        let offer = SdpOffer::from_sdp_string(offer_sdp)
            .map_err(|e| SfuError::InvalidSdp(e.to_string()))?;
        if !offer_sdp.lines().any(|l| l.starts_with("m=application")) {
            return Err(SfuError::NoDataChannel);
        }
        match self.rooms.get(&room) {
            Some(r) if r.contains(participant) => {
                return Err(SfuError::AlreadyJoined { room, participant });
            }
            Some(r) if r.len() >= self.config.max_participants_per_room => {
                return Err(SfuError::RoomFull {
                    room,
                    max: self.config.max_participants_per_room,
                });
            }
            Some(_) => {}
            None if !self.config.open_rooms_on_join => return Err(SfuError::UnknownRoom(room)),
            None if self.rooms.len() >= self.config.max_rooms => {
                return Err(SfuError::TooManyRooms(self.config.max_rooms));
            }
            None => {}
        }
        let mut rtc: Rtc = self.engine.rtc(now);
        let answer = rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| SfuError::InvalidSdp(e.to_string()))?;
        let settings = PeerSettings {
            pause_below_bps: self
                .config
                .bandwidth_estimation
                .then_some(self.config.video_pause_below_bps),
            keyframe_interval: self.config.keyframe_request_interval,
            connect_deadline: now + self.config.connect_timeout,
        };
        let last_n = self.config.last_n;
        let r = self
            .rooms
            .entry(room)
            .or_insert_with(|| Room::new(room, last_n, true));
        r.tapped = self.tapped.contains(&room);
        r.add(
            now,
            Peer::new(participant, rtc, now, settings),
            &mut self.outbox,
            &mut self.sink,
        );
        self.settle();
        Ok(answer.to_sdp_string())
    }

    /// Removes `participant` from `room`, closing its connection politely.
    pub fn leave(
        &mut self,
        now: Instant,
        room: RoomId,
        participant: ParticipantId,
    ) -> Result<(), SfuError> {
        self.remove(now, room, participant, LeaveReason::Left)
    }

    /// Cuts `participant` off at once (it was removed from the conversation): it receives
    /// nothing more, and datagrams from it are dropped.
    pub fn kick(
        &mut self,
        now: Instant,
        room: RoomId,
        participant: ParticipantId,
    ) -> Result<(), SfuError> {
        self.remove(now, room, participant, LeaveReason::Kicked)
    }

    fn remove(
        &mut self,
        now: Instant,
        room: RoomId,
        participant: ParticipantId,
        reason: LeaveReason,
    ) -> Result<(), SfuError> {
        let r = self
            .rooms
            .get_mut(&room)
            .filter(|r| r.contains(participant))
            .ok_or(SfuError::UnknownParticipant { room, participant })?;
        r.remove(now, participant, reason, &mut self.outbox, &mut self.sink);
        self.settle();
        Ok(())
    }

    /// Feeds a datagram or the passing of time. A datagram from an address that belongs to no
    /// participant, or that is not WebRTC traffic, is dropped with an error.
    pub fn handle_input(&mut self, now: Instant, input: SfuInput<'_>) -> Result<(), SfuError> {
        match input {
            SfuInput::Timeout => {
                for r in self.rooms.values_mut() {
                    if r.deadline().is_some_and(|d| d <= now) {
                        r.handle_timeout(now, &mut self.outbox, &mut self.sink);
                    }
                }
                self.settle();
                Ok(())
            }
            SfuInput::Datagram { source, contents } => {
                let result = self.handle_datagram(now, source, contents);
                if result.is_err() {
                    self.sink.counters.datagrams_dropped += 1;
                }
                self.settle();
                result
            }
        }
    }

    fn handle_datagram(
        &mut self,
        now: Instant,
        source: SocketAddr,
        contents: &[u8],
    ) -> Result<(), SfuError> {
        self.sink.counters.datagrams_received += 1;
        self.sink.counters.bytes_received += contents.len() as u64;
        let contents =
            DatagramRecv::try_from(contents).map_err(|_| SfuError::MalformedDatagram(source))?;
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source,
                destination: self.engine.address(),
                contents,
            },
        );
        let known = self.by_addr.get(&source).copied().filter(|(room, who)| {
            self.rooms
                .get(room)
                .is_some_and(|r| r.peer_accepts(*who, &input))
        });
        let (room, who) = match known {
            Some(found) => found,
            None => {
                let found = self
                    .rooms
                    .iter()
                    .find_map(|(id, r)| r.accepting(&input).map(|who| (*id, who)))
                    .ok_or(SfuError::UnknownSource(source))?;
                self.by_addr.insert(source, found);
                found
            }
        };
        if let Some(r) = self.rooms.get_mut(&room) {
            r.handle_input(now, who, input, &mut self.outbox, &mut self.sink);
        }
        Ok(())
    }

    /// The next output: datagrams to send, events, tapped frames.
    pub fn poll_output(&mut self) -> Option<SfuOutput> {
        self.sink.outputs.pop_front()
    }

    /// When to call `handle_input(now, SfuInput::Timeout)` next (`None`: no participant).
    pub fn timeout(&self) -> Option<Instant> {
        self.rooms.values().filter_map(Room::deadline).min()
    }

    /// Starts or stops emitting [`SfuOutput::Tap`] for every frame published in `room` (the
    /// room need not be open yet). Untapped rooms copy nothing.
    pub fn set_tapped(&mut self, room: RoomId, tapped: bool) {
        if tapped {
            self.tapped.insert(room);
        } else {
            self.tapped.remove(&room);
        }
        if let Some(r) = self.rooms.get_mut(&room) {
            r.tapped = tapped;
        }
    }

    /// The room's active speaker, by audio level.
    pub fn active_speaker(&self, room: RoomId) -> Option<ParticipantId> {
        self.rooms.get(&room).and_then(Room::active_speaker)
    }

    /// The participants of `room`, in joining order (empty if it is not open).
    pub fn participants(&self, room: RoomId) -> Vec<ParticipantId> {
        self.rooms
            .get(&room)
            .map(Room::participants)
            .unwrap_or_default()
    }

    /// Load and traffic figures.
    pub fn stats(&self) -> SfuStats {
        let mut stats = self.sink.counters.clone();
        stats.rooms = self.rooms.len();
        for r in self.rooms.values() {
            r.count(&mut stats);
        }
        stats
    }

    /// Moves produced datagrams to the outputs and forgets removed participants and rooms.
    fn settle(&mut self) {
        for t in self.outbox.transmits.drain(..) {
            self.sink.counters.datagrams_sent += 1;
            self.sink.counters.bytes_sent += t.contents.len() as u64;
            self.sink.outputs.push_back(SfuOutput::Transmit(t));
        }
        if !self.sink.removed.is_empty() {
            let removed = std::mem::take(&mut self.sink.removed);
            self.by_addr.retain(|_, v| !removed.contains(v));
            self.rooms.retain(|_, r| {
                let keep = !(r.auto_opened && r.len() == 0);
                if !keep {
                    debug!("room closed: empty");
                }
                keep
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use str0m::media::{Direction, MediaKind};
    use str0m::{Candidate, Rtc};

    use super::*;
    use crate::protocol::CHANNEL_LABEL;

    const ROOM: RoomId = RoomId([3; 16]);

    fn core() -> SfuCore {
        SfuCore::new(SfuConfig::default(), "127.0.0.1:3478".parse().unwrap()).unwrap()
    }

    fn offer(channel: bool) -> String {
        let mut rtc = Rtc::builder()
            .set_crypto_provider(Arc::new(str0m::crypto::from_feature_flags()))
            .build(Instant::now());
        rtc.add_local_candidate(Candidate::host("127.0.0.1:5000".parse().unwrap(), "udp").unwrap());
        let mut api = rtc.sdp_api();
        api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
        if channel {
            api.add_channel(CHANNEL_LABEL.into());
        }
        api.apply().unwrap().0.to_sdp_string()
    }

    #[test]
    fn a_join_answers_as_ice_lite_at_the_advertised_address_and_a_leave_closes_the_room() {
        let mut core = core();
        let now = Instant::now();
        let answer = core
            .join(now, ROOM, ParticipantId(1), &offer(true))
            .unwrap();
        assert!(answer.contains("a=ice-lite"), "{answer}");
        assert!(answer.contains("127.0.0.1 3478 typ host"), "{answer}");
        assert_eq!(core.participants(ROOM), vec![ParticipantId(1)]);
        assert!(core.timeout().is_some());
        core.leave(now, ROOM, ParticipantId(1)).unwrap();
        assert_eq!(core.stats().rooms, 0);
        assert!(core.timeout().is_none());
    }

    #[test]
    fn refused_joins_change_nothing() {
        let mut core = core();
        let now = Instant::now();
        assert!(matches!(
            core.join(now, ROOM, ParticipantId(1), "v=0\r\nnonsense"),
            Err(SfuError::InvalidSdp(_))
        ));
        assert_eq!(
            core.join(now, ROOM, ParticipantId(1), &offer(false)),
            Err(SfuError::NoDataChannel)
        );
        assert_eq!(core.stats(), SfuStats::default());
        assert!(core.poll_output().is_none());
    }

    #[test]
    fn stray_datagrams_are_dropped_and_counted() {
        let mut core = core();
        let now = Instant::now();
        core.join(now, ROOM, ParticipantId(1), &offer(true))
            .unwrap();
        while core.poll_output().is_some() {}
        let source = "127.0.0.1:9".parse().unwrap();
        let rtp_like = [
            0x80u8, 0x60, 0, 1, 0, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3,
        ];
        assert_eq!(
            core.handle_input(
                now,
                SfuInput::Datagram {
                    source,
                    contents: &rtp_like
                }
            ),
            Err(SfuError::UnknownSource(source))
        );
        assert_eq!(
            core.handle_input(
                now,
                SfuInput::Datagram {
                    source,
                    contents: b""
                }
            ),
            Err(SfuError::MalformedDatagram(source))
        );
        assert_eq!(core.stats().datagrams_dropped, 2);
        assert_eq!(core.stats().participants, 1);
        assert!(core.poll_output().is_none(), "the SFU answered a stranger");
    }
}
