//! How long to wait before trying again: what the server asked for after a 429, and an
//! exponential backoff after network failures and server errors. Pure functions of their
//! inputs.

/// The wait when a 429 says nothing about how long (neither header nor body).
pub const UNSPECIFIED_WAIT_MS: u64 = 1_000;
/// The first wait after a network failure or a server error.
pub const FIRST_RETRY_MS: u64 = 500;
/// The longest wait between retries.
pub const MAX_RETRY_MS: u64 = 60_000;

/// How long the server asked the client to wait: the `Retry-After` header in delay-seconds,
/// else the body's `retry_after_ms`, else [`UNSPECIFIED_WAIT_MS`]. A header holding an
/// HTTP-date is not worth trusting a clock for: it counts as unspecified.
pub fn requested_wait(header: Option<&str>, body_ms: Option<u64>) -> u64 {
    match header.map(|h| h.trim().parse::<u64>()) {
        Some(Ok(secs)) => secs.saturating_mul(1_000),
        Some(Err(_)) => UNSPECIFIED_WAIT_MS,
        None => body_ms.unwrap_or(UNSPECIFIED_WAIT_MS),
    }
}

/// The wait before retry number `failures` (counting from 1) after a network failure or a
/// server error: doubling from [`FIRST_RETRY_MS`], capped at [`MAX_RETRY_MS`].
pub fn retry_delay(failures: u32) -> u64 {
    let shift = failures.saturating_sub(1).min(16);
    FIRST_RETRY_MS.saturating_mul(1 << shift).min(MAX_RETRY_MS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_wins_and_is_never_shortened() {
        assert_eq!(requested_wait(Some("2"), Some(1500)), 2_000);
        assert_eq!(requested_wait(None, Some(1500)), 1_500);
        assert_eq!(requested_wait(None, None), UNSPECIFIED_WAIT_MS);
        assert_eq!(
            requested_wait(Some("Wed, 21 Oct 2026 07:28:00 GMT"), Some(10)),
            UNSPECIFIED_WAIT_MS
        );
    }

    #[test]
    fn retries_back_off_to_a_ceiling() {
        assert_eq!(retry_delay(1), FIRST_RETRY_MS);
        assert_eq!(retry_delay(2), 2 * FIRST_RETRY_MS);
        assert_eq!(retry_delay(3), 4 * FIRST_RETRY_MS);
        assert_eq!(retry_delay(40), MAX_RETRY_MS);
        assert!((1..100).all(|n| retry_delay(n) <= retry_delay(n + 1)));
    }
}
