//! What the sans-IO core hands back to its driver: datagrams to send, events for the
//! application, and frames for a test tap.

use std::net::SocketAddr;

use crate::ids::{ParticipantId, RoomId, TrackKind};

/// A datagram the driver must send from the SFU's socket.
#[derive(Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where to send it.
    pub destination: SocketAddr,
    /// The UDP payload (STUN, DTLS or SRTP/SRTCP; never plaintext media).
    pub contents: Vec<u8>,
}

impl std::fmt::Debug for Transmit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transmit")
            .field("destination", &self.destination)
            .field("len", &self.contents.len())
            .finish()
    }
}

/// Why a participant is no longer in its room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LeaveReason {
    /// `leave` was called.
    Left,
    /// `kick` was called.
    Kicked,
    /// The room was closed with `close_room`.
    RoomClosed,
    /// The client closed the connection (DTLS close, or its signalling data channel).
    Closed,
    /// ICE lost the client (no consent checks any more).
    Disconnected,
    /// The connection did not come up within `SfuConfig::connect_timeout`.
    ConnectTimeout,
    /// The WebRTC engine failed on this connection (logged).
    Failed,
}

/// Something the application may want to know, such as for call membership or metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SfuEvent {
    /// A participant's connection is up (ICE and DTLS).
    Connected {
        /// The room.
        room: RoomId,
        /// The participant.
        participant: ParticipantId,
    },
    /// A participant is gone from its room.
    Left {
        /// The room.
        room: RoomId,
        /// The participant.
        participant: ParticipantId,
        /// Why.
        reason: LeaveReason,
    },
    /// The room's active speaker changed.
    ActiveSpeaker {
        /// The room.
        room: RoomId,
        /// The new active speaker, if any.
        participant: Option<ParticipantId>,
    },
}

/// One frame a publisher sent, exactly as the SFU received it and passes it on: for a Nightjar
/// client, the SFrame ciphertext (behind the clear VP8 payload header for video).
#[derive(Clone, PartialEq, Eq)]
pub struct TappedFrame {
    /// Who published it.
    pub participant: ParticipantId,
    /// Audio or video.
    pub kind: TrackKind,
    /// The frame (depacketized payload), byte for byte.
    pub data: Vec<u8>,
    /// Whether the depacketizer saw a keyframe (VP8 only).
    pub keyframe: bool,
}

impl std::fmt::Debug for TappedFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TappedFrame")
            .field("participant", &self.participant)
            .field("kind", &self.kind)
            .field("len", &self.data.len())
            .field("keyframe", &self.keyframe)
            .finish()
    }
}

/// One output of [`SfuCore::poll_output`](crate::SfuCore::poll_output).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SfuOutput {
    /// Send this datagram.
    Transmit(Transmit),
    /// Tell the application.
    Event(SfuEvent),
    /// A frame for the taps of `room` (only while the room is tapped).
    Tap {
        /// The room.
        room: RoomId,
        /// The frame.
        frame: TappedFrame,
    },
}
