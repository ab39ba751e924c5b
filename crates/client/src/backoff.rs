//! How the client answers "429 too many requests" (issue 8, finding 12): never sooner than the
//! server said (`Retry-After`, else the body's `retry_after_ms`), and only while the wait is
//! short enough for a command to sit through. A longer wait is returned to the caller, whose
//! outbox keeps the message for a later command. Pure: the driver in [`crate::api`] sleeps.

use std::time::Duration;

/// Longest single wait a request sits through before giving up (the message stays queued).
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(5);
/// Most retries of one request after 429s.
pub(crate) const MAX_RETRIES: u32 = 4;
/// The wait when a 429 says nothing about how long (neither header nor body).
const UNSPECIFIED_WAIT: Duration = Duration::from_secs(1);

/// How long the server asked the client to wait: the `Retry-After` header in delay-seconds,
/// else the body's `retry_after_ms`. `None` when the header holds something else (an
/// HTTP-date is not worth trusting a clock for: the caller does not retry).
pub(crate) fn requested_wait(header: Option<&str>, body_ms: Option<u64>) -> Option<Duration> {
    match header {
        Some(value) => value.trim().parse::<u64>().ok().map(Duration::from_secs),
        None => Some(body_ms.map_or(UNSPECIFIED_WAIT, Duration::from_millis)),
    }
}

/// Whether the `retries`-th retry (counting from 0) should go out after `requested`: the wait
/// to sleep first, or `None` to give up.
pub(crate) fn retry_after(requested: Option<Duration>, retries: u32) -> Option<Duration> {
    let wait = requested?;
    (retries < MAX_RETRIES && wait <= MAX_WAIT).then_some(wait)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_wins_and_is_never_shortened() {
        assert_eq!(
            requested_wait(Some("2"), Some(1500)),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            requested_wait(None, Some(1500)),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(requested_wait(None, None), Some(UNSPECIFIED_WAIT));
        assert_eq!(
            requested_wait(Some("Wed, 21 Oct 2026 07:28:00 GMT"), Some(10)),
            None
        );
    }

    #[test]
    fn long_waits_and_endless_refusals_are_given_up() {
        let two = Some(Duration::from_secs(2));
        assert_eq!(retry_after(two, 0), two);
        assert_eq!(retry_after(two, MAX_RETRIES - 1), two);
        assert_eq!(retry_after(two, MAX_RETRIES), None);
        assert_eq!(retry_after(Some(MAX_WAIT), 0), Some(MAX_WAIT));
        assert_eq!(retry_after(Some(Duration::from_secs(600)), 0), None);
        assert_eq!(retry_after(None, 0), None);
    }
}
