//! Active-speaker detection from the RFC 6464 audio-level header extension, which clients send
//! in the clear beside the SFrame-encrypted audio. Pure logic with `now` passed in, so the
//! thresholds are tested without a network.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::ids::ParticipantId;

/// Weight of each new sample in the smoothed loudness (about 50 samples a second).
const SMOOTHING: f32 = 0.15;
/// Quieter than this (in dB above -127 dBov, i.e. -60 dBov) is not speech.
const SPEECH_FLOOR: f32 = 67.0;
/// A challenger must be this many dB louder than the current speaker to take over.
const HYSTERESIS: f32 = 6.0;
/// The active speaker is kept at least this long, so it does not flap.
const MIN_HOLD: Duration = Duration::from_millis(400);
/// A participant who sent no audio level for this long counts as silent.
const STALE: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy)]
struct Loudness {
    /// Smoothed loudness in dB above -127 dBov (0 = silence, 127 = full scale).
    smoothed: f32,
    last_sample: Instant,
}

/// Tracks the loudest recent speaker of one room.
#[derive(Debug, Default)]
pub(crate) struct SpeakerDetector {
    levels: BTreeMap<ParticipantId, Loudness>,
    current: Option<ParticipantId>,
    last_switch: Option<Instant>,
}

impl SpeakerDetector {
    /// The current active speaker.
    pub(crate) fn current(&self) -> Option<ParticipantId> {
        self.current
    }

    /// Records one audio-level sample (`level` as str0m gives it: -127 silence ... 0 loudest)
    /// and returns the new active speaker if it changed.
    pub(crate) fn observe(
        &mut self,
        now: Instant,
        who: ParticipantId,
        level: i8,
    ) -> Option<ParticipantId> {
        let loudness = f32::from(127 - level.clamp(-127, 0).unsigned_abs());
        let entry = self.levels.entry(who).or_insert(Loudness {
            smoothed: loudness,
            last_sample: now,
        });
        // After a silence the old average says nothing about now: start from the sample.
        if now.saturating_duration_since(entry.last_sample) > STALE {
            entry.smoothed = loudness;
        } else {
            entry.smoothed += SMOOTHING * (loudness - entry.smoothed);
        }
        entry.last_sample = now;
        self.decide(now)
    }

    /// Forgets a participant who left; returns true if it was the active speaker (which is now
    /// nobody until someone speaks).
    pub(crate) fn remove(&mut self, who: ParticipantId) -> bool {
        self.levels.remove(&who);
        if self.current == Some(who) {
            self.current = None;
            true
        } else {
            false
        }
    }

    fn loudness(&self, now: Instant, who: ParticipantId) -> Option<f32> {
        self.levels
            .get(&who)
            .filter(|l| now.saturating_duration_since(l.last_sample) <= STALE)
            .map(|l| l.smoothed)
    }

    fn decide(&mut self, now: Instant) -> Option<ParticipantId> {
        let (best, best_level) = self
            .levels
            .iter()
            .filter(|(_, l)| now.saturating_duration_since(l.last_sample) <= STALE)
            .filter(|(_, l)| l.smoothed >= SPEECH_FLOOR)
            .max_by(|a, b| a.1.smoothed.total_cmp(&b.1.smoothed))
            .map(|(id, l)| (*id, l.smoothed))?;
        if self.current == Some(best) {
            return None;
        }
        if self
            .last_switch
            .is_some_and(|t| now.saturating_duration_since(t) < MIN_HOLD)
        {
            return None;
        }
        let current_level = self.current.and_then(|c| self.loudness(now, c));
        if current_level.is_some_and(|c| best_level < c + HYSTERESIS) {
            return None;
        }
        self.current = Some(best);
        self.last_switch = Some(now);
        Some(best)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: ParticipantId = ParticipantId(1);
    const B: ParticipantId = ParticipantId(2);

    /// Feeds 20 ms samples for `ms` milliseconds; returns the last change seen.
    fn talk(
        d: &mut SpeakerDetector,
        start: Instant,
        ms: u64,
        levels: &[(ParticipantId, i8)],
    ) -> Option<ParticipantId> {
        let mut changed = None;
        for step in 0..ms / 20 {
            let now = start + Duration::from_millis(step * 20);
            for &(who, level) in levels {
                if let Some(c) = d.observe(now, who, level) {
                    changed = Some(c);
                }
            }
        }
        changed
    }

    #[test]
    fn the_loudest_participant_becomes_the_speaker() {
        let mut d = SpeakerDetector::default();
        let t = Instant::now();
        assert_eq!(talk(&mut d, t, 1000, &[(A, -20), (B, -90)]), Some(A));
        assert_eq!(d.current(), Some(A));
    }

    #[test]
    fn silence_never_makes_a_speaker() {
        let mut d = SpeakerDetector::default();
        let t = Instant::now();
        assert_eq!(talk(&mut d, t, 1000, &[(A, -127), (B, -80)]), None);
        assert_eq!(d.current(), None);
    }

    #[test]
    fn a_slightly_louder_challenger_does_not_take_over() {
        let mut d = SpeakerDetector::default();
        let t = Instant::now();
        talk(&mut d, t, 1000, &[(A, -30)]);
        assert_eq!(d.current(), Some(A));
        let later = t + Duration::from_secs(1);
        assert_eq!(talk(&mut d, later, 1000, &[(A, -30), (B, -27)]), None);
        assert_eq!(d.current(), Some(A));
    }

    #[test]
    fn the_speaker_follows_whoever_talks_louder() {
        let mut d = SpeakerDetector::default();
        let t = Instant::now();
        talk(&mut d, t, 1000, &[(A, -20), (B, -90)]);
        let later = t + Duration::from_secs(1);
        assert_eq!(talk(&mut d, later, 1000, &[(A, -90), (B, -20)]), Some(B));
    }

    #[test]
    fn the_speaker_is_held_a_moment_before_switching() {
        let mut d = SpeakerDetector::default();
        let t = Instant::now();
        assert_eq!(d.observe(t, A, 0), Some(A));
        // B is far louder at once, but A has the floor for MIN_HOLD.
        assert_eq!(d.observe(t + Duration::from_millis(10), B, 0), None);
        assert_eq!(d.observe(t + Duration::from_millis(20), A, -127), None);
        assert_eq!(d.observe(t + MIN_HOLD, B, 0), Some(B));
    }

    #[test]
    fn a_speaker_who_leaves_is_forgotten() {
        let mut d = SpeakerDetector::default();
        let t = Instant::now();
        talk(&mut d, t, 500, &[(A, -10)]);
        assert!(d.remove(A));
        assert_eq!(d.current(), None);
        assert!(!d.remove(B));
    }
}
