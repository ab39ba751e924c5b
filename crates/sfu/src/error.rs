//! The one error type of the SFU's public API. Each variant names a refusal the caller can act
//! on; when a call fails, nothing in the SFU changed.

use std::net::SocketAddr;

use crate::ids::{ParticipantId, RoomId};

/// Why the SFU refused a call or an input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SfuError {
    /// The offer could not be parsed or accepted as an SDP offer (the text says why, from the
    /// WebRTC engine; it holds no secret, but callers should log it rather than echo it).
    #[error("invalid SDP offer: {0}")]
    InvalidSdp(String),
    /// The offer has no `m=application` section: the SFU needs the client's data channel to
    /// renegotiate when others join or leave.
    #[error("the offer has no data channel (m=application), which the SFU renegotiates over")]
    NoDataChannel,
    /// The room is not open and the SFU is configured not to open rooms on join.
    #[error("unknown room {0}")]
    UnknownRoom(RoomId),
    /// The room already holds its maximum number of participants.
    #[error("room {room} is full ({max} participants)")]
    RoomFull {
        /// The room.
        room: RoomId,
        /// The configured maximum.
        max: usize,
    },
    /// The SFU already holds its maximum number of rooms.
    #[error("the SFU already holds its maximum of {0} rooms")]
    TooManyRooms(usize),
    /// The participant is already in the room (leave first to rejoin).
    #[error("participant {participant} is already in room {room}")]
    AlreadyJoined {
        /// The room.
        room: RoomId,
        /// The participant.
        participant: ParticipantId,
    },
    /// The participant is not in the room.
    #[error("participant {participant} is not in room {room}")]
    UnknownParticipant {
        /// The room.
        room: RoomId,
        /// The participant.
        participant: ParticipantId,
    },
    /// A datagram came from an address that belongs to no participant; it was dropped.
    #[error("datagram from unknown address {0}")]
    UnknownSource(SocketAddr),
    /// A datagram was neither STUN, DTLS, RTP nor RTCP; it was dropped.
    #[error("malformed datagram from {0}")]
    MalformedDatagram(SocketAddr),
    /// The WebRTC engine could not be set up (no DTLS certificate could be made).
    #[error("WebRTC engine: {0}")]
    Engine(String),
    /// The SFU's driver thread has stopped, so the call could not be carried out.
    #[error("the SFU has stopped")]
    Stopped,
}
