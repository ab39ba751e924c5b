//! Calls: the short-lived credentials a device uses to have a TURN relay (coturn) carry a
//! call's media when the two devices cannot reach each other directly, and the join of a group
//! call on the server's selective forwarding unit (SFU).
//!
//! The credentials follow coturn's `use-auth-secret` scheme (the "TURN REST API"): the
//! username is `<expiry unix seconds>:<random id>` and the credential is
//! `base64(HMAC-SHA1(shared secret, username))`, so the relay checks them with no database and
//! no call to the Nightjar server, and refuses them once the expiry has passed. The username
//! names no account and no device: the relay logs it.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `GET /v1/calls/turn`: one set of TURN credentials, shaped as a browser's
/// `RTCIceServer` (`{urls, username, credential}`) plus their lifetime.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TurnCredentials {
    /// The relay's URLs (RFC 7065), e.g. `turn:turn.example.org:3478?transport=udp` or
    /// `turns:turn.example.org:5349?transport=tcp`.
    #[schema(min_items = 1)]
    pub urls: Vec<String>,
    /// `<expiry unix seconds>:<random id>`: fresh for every request, and naming no account
    /// or device.
    #[schema(pattern = "^[0-9]+:[A-Za-z0-9_-]+$")]
    pub username: String,
    /// `base64(HMAC-SHA1(relay secret, username))`, standard base64 with padding, as coturn
    /// expects: the password of the TURN long-term credential.
    #[schema(pattern = "^[A-Za-z0-9+/]{27}=$")]
    pub credential: String,
    /// How long the credentials stay valid from now, in seconds.
    pub ttl_secs: u64,
    /// When the relay stops accepting them for new allocations (Unix seconds; the number
    /// `username` starts with).
    pub expires_at: u64,
}

impl std::fmt::Debug for TurnCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The credential lets whoever holds it use the relay until it expires.
        f.debug_struct("TurnCredentials")
            .field("urls", &self.urls)
            .field("ttl_secs", &self.ttl_secs)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// The largest SDP offer `POST /v1/calls/{conversation}/sfu` takes, in bytes: a browser's offer
/// with one audio and one video track and a data channel is 3 to 6 KB.
pub const MAX_SFU_OFFER_BYTES: usize = 32 * 1024;

/// `POST /v1/calls/{conversation}/sfu`: join the conversation's group call on the server's SFU.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SfuJoin {
    /// The device's SDP offer: at most one audio (Opus) and one video (VP8) track it publishes,
    /// and a data channel labelled `nightjar-sfu`, over which everything after the join is
    /// signalled (others' tracks, renegotiation, active speaker, `bye`).
    #[schema(max_length = 32768)]
    pub offer: String,
}

/// The SFU's answer to an [`SfuJoin`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SfuAnswer {
    /// The SDP answer, with the SFU's one ICE candidate.
    pub answer: String,
    /// This device's participant id in the call: its device id as a decimal number (a JSON
    /// string, since JavaScript numbers lose precision past 2^53). Others' tracks are named by
    /// their participant ids on the data channel.
    #[schema(pattern = "^[0-9]{1,20}$")]
    pub participant: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape_and_debug() {
        let credentials = TurnCredentials {
            urls: vec!["turn:127.0.0.1:3478".into()],
            username: "1800000600:AAAAAAAAAAAAAAAAAAAAAA".into(),
            credential: "RqMvcGPYTJMGThVLSi4amT4zFtI=".into(),
            ttl_secs: 600,
            expires_at: 1_800_000_600,
        };
        assert_eq!(
            serde_json::to_value(&credentials).unwrap(),
            serde_json::json!({
                "urls": ["turn:127.0.0.1:3478"],
                "username": "1800000600:AAAAAAAAAAAAAAAAAAAAAA",
                "credential": "RqMvcGPYTJMGThVLSi4amT4zFtI=",
                "ttl_secs": 600,
                "expires_at": 1_800_000_600u64,
            })
        );
        assert_eq!(
            format!("{credentials:?}"),
            r#"TurnCredentials { urls: ["turn:127.0.0.1:3478"], ttl_secs: 600, expires_at: 1800000600, .. }"#
        );
    }

    #[test]
    fn sfu_join_json_shape() {
        let join: SfuJoin = serde_json::from_str(r#"{"offer":"v=0"}"#).unwrap();
        assert_eq!(join.offer, "v=0");
        assert!(serde_json::from_str::<SfuJoin>("{}").is_err());
        let answer = SfuAnswer {
            answer: "v=0".into(),
            participant: "18446744073709551615".into(),
        };
        assert_eq!(
            serde_json::to_value(&answer).unwrap(),
            serde_json::json!({"answer": "v=0", "participant": "18446744073709551615"})
        );
    }
}
