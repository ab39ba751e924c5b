//! Consent and quotas, decided without IO: which recipient accounts get a message (message
//! requests, blocks), when a queue is full for one sender only, and how much a sending account
//! may fan out. (How many key packages one account may claim of another is in `key_packages.rs`.)
//!
//! The rules:
//! - Commits and standalone proposals always reach every member, blocked or not, so that a
//!   member who blocked another cannot break the group's MLS state.
//! - An application message or a Welcome from account S reaches account R unless R blocked S.
//!   If R accepted S, or accepted the conversation (R created it, sent in it, or was added to it
//!   by an account R accepted), it is delivered; otherwise it is a *message request*: at most
//!   `max_messages` of them (and application messages of at most `max_bytes`) per (S, R).
//! - A message that reaches no recipient account because of consent is refused: `blocked` if
//!   every refusing account blocked the sender, else `message_request_limit`. A message that
//!   reaches some accounts is accepted and silently skips the others, so a group member learns
//!   nothing about who blocked them.

use std::time::Duration;

use nightjar_api::EnvelopeKind;

/// What a recipient account decided about the sending account, and about the conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecipientView {
    /// The recipient's decision about the sender, if any.
    pub(crate) sender: Option<Decision>,
    /// Whether the recipient accepted the conversation.
    pub(crate) conversation_accepted: bool,
    /// Message-request messages the sender already has queued for the recipient (counted
    /// while neither the sender nor the conversation was accepted).
    pub(crate) requests_used: u32,
}

/// An account's decision about another account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Deliver.
    Accepted,
    /// Refuse.
    Blocked,
}

impl Decision {
    /// The stored form.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Decision::Accepted => "accepted",
            Decision::Blocked => "blocked",
        }
    }

    /// Parses the stored form; anything else is `None`.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        match text {
            "accepted" => Some(Decision::Accepted),
            "blocked" => Some(Decision::Blocked),
            _ => None,
        }
    }
}

/// How large and how many message requests may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RequestLimits {
    /// Messages (application messages and Welcomes) per (sender, recipient) account.
    pub(crate) max_messages: u32,
    /// Largest application message of a request, in bytes.
    pub(crate) max_bytes: usize,
}

/// What becomes of a message for one recipient account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Queue it for the account's devices.
    Deliver,
    /// Queue it, counting one more message request from the sender to this account.
    Request,
    /// Do not queue it for this account.
    Skip(SkipReason),
}

/// Why a recipient account is skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum SkipReason {
    /// The recipient has not accepted the sender and the request's messages are used up, or
    /// this one is too large for a request.
    RequestLimit,
    /// The recipient blocked the sender.
    Blocked,
}

/// Decides one message of `kind` with `payload_len` bytes for one recipient account.
pub(crate) fn admit(
    kind: EnvelopeKind,
    payload_len: usize,
    view: RecipientView,
    limits: RequestLimits,
) -> Admission {
    match kind {
        EnvelopeKind::Commit | EnvelopeKind::Proposal => return Admission::Deliver,
        EnvelopeKind::Application | EnvelopeKind::Welcome => {}
    }
    match view.sender {
        Some(Decision::Blocked) => Admission::Skip(SkipReason::Blocked),
        Some(Decision::Accepted) => Admission::Deliver,
        None if view.conversation_accepted => Admission::Deliver,
        None => {
            let small = kind == EnvelopeKind::Welcome || payload_len <= limits.max_bytes;
            if small && view.requests_used < limits.max_messages {
                Admission::Request
            } else {
                Admission::Skip(SkipReason::RequestLimit)
            }
        }
    }
}

/// Why a whole message is refused because of consent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConsentRefusal {
    /// Every recipient account that refused it blocked the sender.
    Blocked,
    /// Some recipient account has not accepted the sender and its request is used up.
    RequestLimit,
}

/// Whether a message whose recipient accounts were skipped for `skipped` reasons, and that
/// still reaches `delivered` accounts, is refused. It is only when it reaches nobody.
pub(crate) fn refusal(delivered: usize, skipped: &[SkipReason]) -> Option<ConsentRefusal> {
    if delivered > 0 || skipped.is_empty() {
        return None;
    }
    if skipped.iter().all(|r| *r == SkipReason::Blocked) {
        Some(ConsentRefusal::Blocked)
    } else {
        Some(ConsentRefusal::RequestLimit)
    }
}

/// The queue limits one send must keep, per recipient device and account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QueueLimits {
    /// Envelopes a device may hold.
    pub(crate) max_device: u32,
    /// Past this many envelopes in a device's queue, a sender's share is limited.
    pub(crate) share_after: u32,
    /// A sending account's share of a device's queue past `share_after`.
    pub(crate) max_share: u32,
    /// Envelopes an account may hold across its devices.
    pub(crate) max_account: u32,
}

impl Default for QueueLimits {
    fn default() -> Self {
        Self {
            max_device: u32::MAX,
            share_after: u32::MAX,
            max_share: u32::MAX,
            max_account: u32::MAX,
        }
    }
}

/// Whether a device holding `queued` envelopes takes one more; `sender_share` is asked only
/// when the queue is past the share threshold (counting costs a read), and returns how many
/// of them the sending account holds.
pub(crate) fn device_takes(
    queued: i64,
    limits: QueueLimits,
    sender_share: impl FnOnce() -> i64,
) -> bool {
    if queued >= i64::from(limits.max_device) {
        return false;
    }
    queued < i64::from(limits.share_after) || sender_share() < i64::from(limits.max_share)
}

/// Whether an account holding `queued` envelopes across its devices takes more.
pub(crate) fn account_takes(queued: i64, limits: QueueLimits) -> bool {
    queued < i64::from(limits.max_account)
}

/// A sending account's fan-out allowance: envelopes and bytes, refilled continuously. A send
/// is let through while at least one envelope and byte are left and is charged what it queued
/// afterwards (possibly going into debt), so the check costs nothing per recipient and a send is never refused half-way.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct FanOut {
    envelopes: f64,
    bytes: f64,
    /// Milliseconds (caller's clock) of the last refill.
    at_ms: u64,
}

/// The rates and bursts of [`FanOut`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct FanOutLimits {
    /// Envelopes per second.
    pub(crate) envelopes_per_second: f64,
    /// Most envelopes at once.
    pub(crate) envelope_burst: f64,
    /// Bytes per second.
    pub(crate) bytes_per_second: f64,
    /// Most bytes at once.
    pub(crate) byte_burst: f64,
}

impl FanOut {
    /// A full allowance at `now_ms`.
    pub(crate) fn full(limits: &FanOutLimits, now_ms: u64) -> Self {
        Self {
            envelopes: limits.envelope_burst,
            bytes: limits.byte_burst,
            at_ms: now_ms,
        }
    }

    fn refill(&mut self, limits: &FanOutLimits, now_ms: u64) {
        let secs = Duration::from_millis(now_ms.saturating_sub(self.at_ms)).as_secs_f64();
        self.envelopes =
            (self.envelopes + secs * limits.envelopes_per_second).min(limits.envelope_burst);
        self.bytes = (self.bytes + secs * limits.bytes_per_second).min(limits.byte_burst);
        self.at_ms = self.at_ms.max(now_ms);
    }

    /// Whether a send may go now (at least one envelope and one byte left); `Err` is how long
    /// until it may.
    pub(crate) fn check(&mut self, limits: &FanOutLimits, now_ms: u64) -> Result<(), Duration> {
        self.refill(limits, now_ms);
        let wait = |left: f64, rate: f64| {
            if left >= 1.0 {
                0.0
            } else {
                (1.0 - left) / rate.max(f64::MIN_POSITIVE)
            }
        };
        let secs = wait(self.envelopes, limits.envelopes_per_second)
            .max(wait(self.bytes, limits.bytes_per_second));
        if secs > 0.0 {
            Err(Duration::from_secs_f64(secs.min(86_400.0)).max(Duration::from_millis(1)))
        } else {
            Ok(())
        }
    }

    /// Charges what a send queued.
    pub(crate) fn charge(
        &mut self,
        limits: &FanOutLimits,
        now_ms: u64,
        envelopes: u64,
        bytes: u64,
    ) {
        self.refill(limits, now_ms);
        // Precision loss past 2^53 envelopes is irrelevant.
        #[allow(clippy::cast_precision_loss)]
        {
            self.envelopes -= envelopes as f64;
            self.bytes -= bytes as f64;
        }
    }

    /// Whether the allowance is full again (and can be forgotten).
    pub(crate) fn is_full(&self, limits: &FanOutLimits, now_ms: u64) -> bool {
        let mut copy = *self;
        copy.refill(limits, now_ms);
        copy.envelopes >= limits.envelope_burst && copy.bytes >= limits.byte_burst
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: RequestLimits = RequestLimits {
        max_messages: 2,
        max_bytes: 10,
    };

    fn view(sender: Option<Decision>, accepted: bool, used: u32) -> RecipientView {
        RecipientView {
            sender,
            conversation_accepted: accepted,
            requests_used: used,
        }
    }

    #[test]
    fn handshakes_always_flow() {
        for kind in [EnvelopeKind::Commit, EnvelopeKind::Proposal] {
            let blocked = view(Some(Decision::Blocked), false, 99);
            assert_eq!(admit(kind, 1 << 20, blocked, LIMITS), Admission::Deliver);
        }
    }

    #[test]
    fn requests_are_few_and_small() {
        let app = EnvelopeKind::Application;
        assert_eq!(
            admit(app, 10, view(None, false, 0), LIMITS),
            Admission::Request
        );
        assert_eq!(
            admit(app, 10, view(None, false, 1), LIMITS),
            Admission::Request
        );
        assert_eq!(
            admit(app, 10, view(None, false, 2), LIMITS),
            Admission::Skip(SkipReason::RequestLimit)
        );
        assert_eq!(
            admit(app, 11, view(None, false, 0), LIMITS),
            Admission::Skip(SkipReason::RequestLimit)
        );
        // A Welcome counts but is not size-limited.
        assert_eq!(
            admit(EnvelopeKind::Welcome, 5000, view(None, false, 0), LIMITS),
            Admission::Request
        );
        // Accepted sender or conversation: no limit.
        assert_eq!(
            admit(app, 5000, view(Some(Decision::Accepted), false, 9), LIMITS),
            Admission::Deliver
        );
        assert_eq!(
            admit(app, 5000, view(None, true, 9), LIMITS),
            Admission::Deliver
        );
        // A block wins over an accepted conversation.
        assert_eq!(
            admit(app, 1, view(Some(Decision::Blocked), true, 0), LIMITS),
            Admission::Skip(SkipReason::Blocked)
        );
    }

    #[test]
    fn refused_only_when_nobody_gets_it() {
        use SkipReason::*;
        assert_eq!(refusal(1, &[Blocked]), None);
        assert_eq!(refusal(0, &[]), None);
        assert_eq!(refusal(0, &[Blocked]), Some(ConsentRefusal::Blocked));
        assert_eq!(
            refusal(0, &[Blocked, RequestLimit]),
            Some(ConsentRefusal::RequestLimit)
        );
    }

    #[test]
    fn one_sender_cannot_fill_a_queue() {
        let limits = QueueLimits {
            max_device: 10,
            share_after: 4,
            max_share: 3,
            max_account: 100,
        };
        assert!(device_takes(3, limits, || unreachable!()));
        assert!(device_takes(5, limits, || 2));
        assert!(!device_takes(5, limits, || 3));
        assert!(!device_takes(10, limits, || 0));
        assert!(account_takes(99, limits));
        assert!(!account_takes(100, limits));
    }

    #[test]
    fn fan_out_goes_into_debt_then_waits() {
        let limits = FanOutLimits {
            envelopes_per_second: 10.0,
            envelope_burst: 20.0,
            bytes_per_second: 1000.0,
            byte_burst: 1e9,
        };
        let mut f = FanOut::full(&limits, 0);
        assert!(f.check(&limits, 0).is_ok());
        f.charge(&limits, 0, 30, 100);
        let wait = f.check(&limits, 0).unwrap_err();
        assert_eq!(wait.as_millis(), 1100);
        assert!(f.check(&limits, 1099).is_err());
        assert!(f.check(&limits, 1100).is_ok());
        assert!(!f.is_full(&limits, 1100));
        assert!(f.is_full(&limits, 3000));
    }
}
