//! Types of the push stream (`GET /v1/stream`) that carry a secret: the session token a
//! client sends in its first frame when it cannot set an `Authorization` header (browsers
//! cannot on a WebSocket), so the token never has to travel in the URL.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A session token in a stream frame. Its `Debug` form never shows the token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(transparent)]
#[schema(value_type = String)]
pub struct StreamToken(pub String);

impl std::fmt::Debug for StreamToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StreamToken(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ClientFrame;

    #[test]
    fn auth_frame_is_tagged_json_and_hides_its_token() {
        let frame: ClientFrame =
            serde_json::from_str(r#"{"type":"auth","token":"s3cret"}"#).unwrap();
        assert_eq!(
            frame,
            ClientFrame::Auth {
                token: StreamToken("s3cret".into())
            }
        );
        assert_eq!(
            serde_json::to_string(&frame).unwrap(),
            r#"{"type":"auth","token":"s3cret"}"#
        );
        let debug = format!("{frame:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
        assert_eq!(debug, "Auth { token: StreamToken(<redacted>) }");
    }
}
