//! What a load client publishes: Opus-sized audio frames and VP8 frames sized for a bitrate,
//! with a keyframe every two seconds (or on request) at four times the average size. The
//! client itself is the SFU crate's test client (`nightjar_sfu::test_client`), told to count
//! frames rather than keep them, so thousands of frames a second cost little.

use nightjar_sfu::test_client::{FrameSource, VideoFrame, vp8_delta_header, vp8_keyframe_header};

/// What one client publishes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Media {
    pub(crate) video_bps: u64,
    pub(crate) fps: u32,
    pub(crate) audio_pps: u32,
}

/// Frames for [`Media`], cut from a fixed pseudo-random pattern.
pub(crate) struct LoadFrames {
    media: Media,
    payload: Vec<u8>,
    audio_no: u64,
    frame_no: u64,
}

impl LoadFrames {
    pub(crate) fn new(media: Media) -> Self {
        LoadFrames {
            media,
            payload: (0..200_000u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                .collect(),
            audio_no: 0,
            frame_no: 0,
        }
    }

    fn cut(&self, start: u64, len: usize) -> &[u8] {
        let start = (start % 1000) as usize;
        self.payload.get(start..start + len).unwrap_or_default()
    }
}

impl FrameSource for LoadFrames {
    fn audio(&mut self) -> Vec<u8> {
        self.audio_no += 1;
        self.cut(self.audio_no * 7, 80).to_vec()
    }

    fn video(&mut self, keyframe_wanted: bool) -> VideoFrame {
        let fps = u64::from(self.media.fps.max(1));
        let average = (self.media.video_bps / 8 / fps) as usize;
        let keyframe = keyframe_wanted || self.frame_no.is_multiple_of(2 * fps);
        self.frame_no += 1;
        let len = if keyframe {
            average * 4
        } else {
            average * (2 * fps as usize) / (2 * fps as usize + 3)
        };
        let mut data = Vec::with_capacity(len + 10);
        if keyframe {
            data.extend_from_slice(&vp8_keyframe_header());
        } else {
            data.extend_from_slice(&vp8_delta_header());
        }
        data.extend_from_slice(self.cut(self.frame_no, len));
        VideoFrame { data, keyframe }
    }
}
