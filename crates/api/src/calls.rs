//! Calls: the short-lived credentials a device uses to have a TURN relay (coturn) carry a
//! call's media when the two devices cannot reach each other directly.
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
}
