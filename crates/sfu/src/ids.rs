//! Identifiers the SFU is addressed by: rooms (a conversation id), participants (assigned by the
//! HTTP layer after it authenticated a device) and the kind of a track. They live apart from the
//! logic so the wire protocol, the core and the driver all spell them the same way.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use str0m::media::MediaKind;

/// A call room: the 16-byte id of the conversation the call belongs to.
///
/// Displayed and parsed as 32 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomId(pub [u8; 16]);

impl fmt::Display for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RoomId({self})")
    }
}

/// Why a string is not a [`RoomId`] or a [`ParticipantId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdParseError {
    /// A room id is exactly 32 hex digits.
    #[error("a room id is 32 hex digits")]
    RoomId,
    /// A participant id is a decimal number that fits in 64 bits.
    #[error("a participant id is a decimal 64-bit number")]
    ParticipantId,
}

impl FromStr for RoomId {
    type Err = IdParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = s.as_bytes();
        if bytes.len() != 32 {
            return Err(IdParseError::RoomId);
        }
        let mut out = [0u8; 16];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            let hi = hex_digit(pair[0]).ok_or(IdParseError::RoomId)?;
            let lo = hex_digit(pair[1]).ok_or(IdParseError::RoomId)?;
            out[i] = hi << 4 | lo;
        }
        Ok(RoomId(out))
    }
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// One participant of a call: an opaque number the HTTP layer assigns to an authenticated device.
///
/// On the data channel it is a JSON *string* of decimal digits, since JavaScript numbers lose
/// precision past 2^53.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ParticipantId(pub u64);

impl fmt::Display for ParticipantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Debug for ParticipantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ParticipantId({})", self.0)
    }
}

impl FromStr for ParticipantId {
    type Err = IdParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // u64::from_str accepts a leading '+'; the wire form is digits only.
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(IdParseError::ParticipantId);
        }
        s.parse()
            .map(ParticipantId)
            .map_err(|_| IdParseError::ParticipantId)
    }
}

impl TryFrom<String> for ParticipantId {
    type Error = IdParseError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<ParticipantId> for String {
    fn from(id: ParticipantId) -> String {
        id.to_string()
    }
}

/// The kind of a published track: each participant publishes at most one of each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrackKind {
    /// Opus audio.
    Audio,
    /// VP8 video.
    Video,
}

impl TrackKind {
    /// The lowercase name used on the data channel.
    pub fn as_str(self) -> &'static str {
        match self {
            TrackKind::Audio => "audio",
            TrackKind::Video => "video",
        }
    }

    pub(crate) fn media_kind(self) -> MediaKind {
        match self {
            TrackKind::Audio => MediaKind::Audio,
            TrackKind::Video => MediaKind::Video,
        }
    }
}

impl From<MediaKind> for TrackKind {
    fn from(kind: MediaKind) -> Self {
        if kind.is_audio() {
            TrackKind::Audio
        } else {
            TrackKind::Video
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_id_round_trips_through_hex() {
        let id = RoomId([0xab; 16]);
        let text = id.to_string();
        assert_eq!(text, "ab".repeat(16));
        assert_eq!(text.parse::<RoomId>(), Ok(id));
        assert_eq!(format!("{id:?}"), format!("RoomId({text})"));
    }

    #[test]
    fn room_id_refuses_bad_hex() {
        assert_eq!("ab".parse::<RoomId>(), Err(IdParseError::RoomId));
        assert_eq!("zz".repeat(16).parse::<RoomId>(), Err(IdParseError::RoomId));
    }

    #[test]
    fn participant_id_is_a_json_string() {
        let id = ParticipantId(u64::MAX);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"18446744073709551615\"");
        assert_eq!(serde_json::from_str::<ParticipantId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<ParticipantId>("\"+1\"").is_err());
        assert!(serde_json::from_str::<ParticipantId>("\"\"").is_err());
        assert!(serde_json::from_str::<ParticipantId>("7").is_err());
    }
}
