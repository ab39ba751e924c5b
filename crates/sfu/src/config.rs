//! Limits and tuning of the SFU, in one place, with defaults fit for small group calls.

use std::time::Duration;

/// How the SFU behaves; `SfuConfig::default()` suits calls of up to 16 people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SfuConfig {
    /// Most rooms held at once; a join that would open one more fails with
    /// [`SfuError::TooManyRooms`](crate::SfuError::TooManyRooms).
    pub max_rooms: usize,
    /// Most participants in one room; one more fails with
    /// [`SfuError::RoomFull`](crate::SfuError::RoomFull).
    pub max_participants_per_room: usize,
    /// Whether `join` opens a room that is not open yet (otherwise rooms are opened with
    /// `open_room` and a join into any other fails with
    /// [`SfuError::UnknownRoom`](crate::SfuError::UnknownRoom)).
    pub open_rooms_on_join: bool,
    /// At most this many videos to each participant, picked by who spoke most recently among
    /// the participants it subscribed to; `None` forwards every subscribed video.
    pub last_n: Option<usize>,
    /// Whether to run bandwidth estimation (TWCC) towards each participant and pause its video
    /// when the estimate drops below `video_pause_below_bps`.
    pub bandwidth_estimation: bool,
    /// The bandwidth estimate a connection starts from, in bit/s.
    pub initial_bitrate_bps: u64,
    /// Below this estimate (bit/s) a participant's video is paused (audio always flows); it
    /// resumes above twice this value.
    pub video_pause_below_bps: u64,
    /// A participant whose connection is not up (ICE + DTLS) this long after joining is dropped.
    pub connect_timeout: Duration,
    /// Keyframe requests to one publisher are at least this far apart; requests in between are
    /// merged into one sent when the interval has passed.
    pub keyframe_request_interval: Duration,
}

impl Default for SfuConfig {
    fn default() -> Self {
        SfuConfig {
            max_rooms: 1_000,
            max_participants_per_room: 16,
            open_rooms_on_join: true,
            last_n: None,
            bandwidth_estimation: true,
            initial_bitrate_bps: 2_000_000,
            video_pause_below_bps: 150_000,
            connect_timeout: Duration::from_secs(20),
            keyframe_request_interval: Duration::from_millis(300),
        }
    }
}
