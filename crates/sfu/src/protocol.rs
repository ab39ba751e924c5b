//! The JSON messages on the `"nightjar-sfu"` data channel, client → SFU and SFU → client.
//!
//! Both directions are public types so that clients (and tests) speak exactly the protocol the
//! SFU parses; the crate docs describe the exchange.

use serde::{Deserialize, Serialize};

use crate::ids::{ParticipantId, TrackKind};

/// The label of the data channel a client opens for signalling with the SFU.
pub const CHANNEL_LABEL: &str = "nightjar-sfu";

/// The largest data-channel message the SFU reads; longer ones are refused with an `error`.
pub const MAX_MESSAGE_LEN: usize = 256 * 1024;

/// A message from a client to the SFU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum ClientMessage {
    /// A renegotiation offer from the client (for instance, it starts publishing video).
    Offer {
        /// The SDP offer.
        sdp: String,
    },
    /// The client's answer to the SFU's last `offer`.
    Answer {
        /// The SDP answer.
        sdp: String,
    },
    /// Which participants' videos the client wants; `null` (or absent) means everyone's.
    /// Audio is always forwarded.
    Subscribe {
        /// The participants whose video to receive, or `None` for all.
        #[serde(default)]
        participants: Option<Vec<ParticipantId>>,
    },
}

/// One forwarded track, so that a client can map what it receives to a participant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackInfo {
    /// The `a=mid` of the m-line in the SFU's offer that carries the track.
    pub mid: String,
    /// Whose track it is.
    pub participant: ParticipantId,
    /// Audio or video.
    pub kind: TrackKind,
}

/// A message from the SFU to a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum ServerMessage {
    /// A renegotiation offer: others' tracks were added or removed. The client answers with
    /// `answer`. The SFU is the polite side: a client that has its own offer outstanding ignores
    /// this one, and the SFU offers again after answering the client's.
    Offer {
        /// The SDP offer.
        sdp: String,
    },
    /// The SFU's answer to a client `offer`.
    Answer {
        /// The SDP answer.
        sdp: String,
    },
    /// Every track the SFU sends (or is negotiating to send) to this client; sent before each
    /// `offer`, replacing the previous list.
    Tracks {
        /// The tracks.
        tracks: Vec<TrackInfo>,
    },
    /// The room's active speaker changed (`null`: nobody has spoken yet, or they left).
    Speaker {
        /// The loudest recent speaker.
        participant: Option<ParticipantId>,
    },
    /// Video towards this client was paused (`true`) or resumed (`false`) because of its
    /// bandwidth estimate; audio is never paused.
    Paused {
        /// Whether video is paused.
        video: bool,
    },
    /// A client message was refused; the SFU changed nothing because of it.
    Error {
        /// What was wrong, for the client's log.
        message: String,
    },
    /// The SFU is ending this participant's connection (`reason`: `"kicked"` or `"closed"`).
    Bye {
        /// Why.
        reason: String,
    },
}

impl ServerMessage {
    /// The JSON text sent on the data channel.
    pub fn to_json(&self) -> String {
        // Serializing these plain enums of strings and ids cannot fail; an empty object keeps
        // the channel well-formed if it ever did.
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_messages_parse_from_the_documented_json() {
        let m: ClientMessage = serde_json::from_str(r#"{"type":"offer","sdp":"v=0"}"#).unwrap();
        assert_eq!(m, ClientMessage::Offer { sdp: "v=0".into() });
        let m: ClientMessage =
            serde_json::from_str(r#"{"type":"subscribe","participants":["1","22"]}"#).unwrap();
        assert_eq!(
            m,
            ClientMessage::Subscribe {
                participants: Some(vec![ParticipantId(1), ParticipantId(22)])
            }
        );
        let m: ClientMessage = serde_json::from_str(r#"{"type":"subscribe"}"#).unwrap();
        assert_eq!(m, ClientMessage::Subscribe { participants: None });
    }

    #[test]
    fn unknown_or_malformed_client_messages_are_refused() {
        for bad in [
            r#"{"type":"hello"}"#,
            r#"{"type":"offer"}"#,
            r#"{"type":"offer","sdp":"v=0","extra":1}"#,
            r#"{"type":"subscribe","participants":[1]}"#,
            "not json",
        ] {
            assert!(serde_json::from_str::<ClientMessage>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn server_messages_have_the_documented_shape() {
        let m = ServerMessage::Tracks {
            tracks: vec![TrackInfo {
                mid: "3".into(),
                participant: ParticipantId(9),
                kind: TrackKind::Video,
            }],
        };
        assert_eq!(
            m.to_json(),
            r#"{"type":"tracks","tracks":[{"mid":"3","participant":"9","kind":"video"}]}"#
        );
        let m = ServerMessage::Speaker { participant: None };
        assert_eq!(m.to_json(), r#"{"type":"speaker","participant":null}"#);
        let m = ServerMessage::Paused { video: true };
        assert_eq!(m.to_json(), r#"{"type":"paused","video":true}"#);
    }
}
