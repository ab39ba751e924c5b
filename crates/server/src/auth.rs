//! Session tokens and the authentication extractors.
//!
//! A token is 32 random bytes, base64url; the database keeps only its SHA-256, so a copy of the
//! database does not let anyone act as a device. [`Session`] accepts any valid session (pending
//! devices included); [`ActiveSession`] refuses pending devices with 403 `forbidden`.

use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use nightjar_api::{B64, DeviceAddress, DeviceStatus};
use rand_core::{OsRng, RngCore as _};
use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};
use crate::rate_limit::retry_ms;
use crate::state::{AppState, now_ms};
use crate::store::{Sender, SessionRow};

/// Longest token text looked at; real tokens are 43 characters.
const MAX_TOKEN_LEN: usize = 128;

/// A fresh token to hand out once, and the hash to store.
pub(crate) fn new_token() -> Result<(String, [u8; 32])> {
    let mut bytes = [0u8; 32];
    OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|_| Error::Internal("the system random generator failed"))?;
    let token = B64::encode(&bytes);
    let hash = hash_token(&token);
    Ok((token, hash))
}

/// The stored form of a token.
pub(crate) fn hash_token(token: &str) -> [u8; 32] {
    Sha256::new()
        .chain_update(b"nightjar session token v1\0")
        .chain_update(token.as_bytes())
        .finalize()
        .into()
}

/// An authenticated device (active or pending).
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub(crate) device: SessionRow,
    pub(crate) token_hash: [u8; 32],
}

impl Session {
    /// The device's address for routing and envelopes.
    pub(crate) fn address(&self) -> DeviceAddress {
        DeviceAddress {
            username: self.device.username.clone(),
            device_id: self.device.device_id.clone(),
        }
    }

    /// The device as a message sender.
    pub(crate) fn sender(&self) -> Sender {
        Sender {
            device_pk: self.device.device_pk,
            account_id: self.device.account_id,
            address: self.address(),
        }
    }
}

/// An authenticated, active (approved) device.
#[derive(Debug, Clone)]
pub(crate) struct ActiveSession(pub(crate) Session);

/// Checks a token, applies the device's request rate limit, and notes the device as seen.
pub(crate) async fn authenticate(state: &AppState, token: &str) -> Result<Session> {
    if token.is_empty() || token.len() > MAX_TOKEN_LEN {
        return Err(Error::unauthorized());
    }
    let token_hash = hash_token(token);
    let now = now_ms();
    let instant = Instant::now();
    let device = match state.sessions.get(&token_hash, instant) {
        Some(device) => device,
        None => {
            let started = state.sessions.read_started();
            let device = state
                .store
                .session(&token_hash, now)
                .await?
                .ok_or_else(Error::unauthorized)?;
            state.sessions.put(token_hash, &device, instant, started);
            device
        }
    };
    state
        .device_rate
        .take(&device.device_pk, instant)
        .map_err(|wait| Error::rate_limited(retry_ms(wait)))?;
    // `last_seen` keeps only the day (like Signal's "date of last connection"): written once a
    // day per device at most, as the start of the day.
    let today = crate::store::stored_day(now);
    if device.last_seen_ms < today {
        state.store.touch_device(device.device_pk, today).await?;
        state.sessions.seen(&token_hash, today);
    }
    Ok(Session { device, token_hash })
}

/// The token of an `Authorization: Bearer` header, if present.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

impl FromRequestParts<AppState> for Session {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        let token = bearer(&parts.headers).ok_or_else(Error::unauthorized)?;
        authenticate(state, token).await
    }
}

impl FromRequestParts<AppState> for ActiveSession {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        let session = Session::from_request_parts(parts, state).await?;
        require_active(session)
    }
}

/// Refuses pending devices.
pub(crate) fn require_active(session: Session) -> Result<ActiveSession> {
    match session.device.status {
        DeviceStatus::Active => Ok(ActiveSession(session)),
        DeviceStatus::Pending => Err(Error::forbidden(
            "this device is waiting for approval by another device of the account",
        )),
    }
}

/// Session expiry for a session created at `now_ms`.
pub(crate) fn expiry(now_ms: u64, ttl: Duration) -> u64 {
    now_ms.saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_hashed() {
        let (a, ha) = new_token().unwrap();
        let (b, hb) = new_token().unwrap();
        assert_ne!(a, b);
        assert_ne!(ha, hb);
        assert_eq!(a.len(), 43);
        assert_eq!(B64::decode(&a).unwrap().len(), 32);
        assert_eq!(hash_token(&a), ha);
        // The hash is not the token.
        assert_ne!(&ha[..], B64::decode(&a).unwrap().as_slice());
    }

    #[test]
    fn bearer_header_parsing() {
        let parts = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(AUTHORIZATION, value.parse().unwrap());
            headers
        };
        assert_eq!(bearer(&parts("Bearer abc")), Some("abc"));
        assert_eq!(bearer(&parts("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(&parts("Basic abc")), None);
        assert_eq!(bearer(&parts("Bearer")), None);
    }

    #[test]
    fn expiry_saturates() {
        assert_eq!(expiry(u64::MAX - 1, Duration::from_secs(10)), u64::MAX);
        assert_eq!(expiry(1000, Duration::from_secs(1)), 2000);
    }
}
