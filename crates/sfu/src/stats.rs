//! Counters for metrics and benchmarks: what the SFU holds and what it moved.

/// A snapshot of the SFU's load and traffic since it started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SfuStats {
    /// Rooms open.
    pub rooms: usize,
    /// Participants in all rooms.
    pub participants: usize,
    /// Participants whose connection is up.
    pub connected: usize,
    /// (receiver, track) pairs media currently flows on: every open audio track, and each open
    /// video track that is selected and not paused.
    pub forwarded_streams: usize,
    /// Frames received from publishers.
    pub frames_received: u64,
    /// Frames written towards receivers (one frame to three receivers counts three).
    pub frames_forwarded: u64,
    /// Payload bytes of those frames.
    pub bytes_forwarded: u64,
    /// UDP datagrams received.
    pub datagrams_received: u64,
    /// Bytes of UDP payload received.
    pub bytes_received: u64,
    /// UDP datagrams sent (RTP, RTCP, STUN, DTLS).
    pub datagrams_sent: u64,
    /// Bytes of UDP payload sent.
    pub bytes_sent: u64,
    /// Datagrams dropped: from unknown addresses, or malformed.
    pub datagrams_dropped: u64,
}
