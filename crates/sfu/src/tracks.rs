//! The tracks one participant receives from the others, and where each stands in SDP
//! negotiation. Kept apart from the `Rtc` so the state machine is tested on its own: a track is
//! added (`ToOpen`), offered (`Negotiating`), answered (`Open`), and later stopped the same way.

use str0m::media::Mid;

use crate::ids::{ParticipantId, TrackKind};
use crate::protocol::TrackInfo;

/// Where a forwarded track is in negotiation with its receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OutState {
    /// Wanted; not yet in an offer.
    ToOpen,
    /// In the outstanding offer under this mid.
    Negotiating(Mid),
    /// Answered: media flows on this mid.
    Open(Mid),
    /// Its publisher left: to be stopped in the next offer.
    ToStop(Mid),
    /// Stopped in the outstanding offer.
    NegotiatingStop(Mid),
}

/// One other participant's track, as forwarded to this participant.
#[derive(Debug, Clone)]
pub(crate) struct Forwarded {
    pub(crate) source: ParticipantId,
    pub(crate) kind: TrackKind,
    pub(crate) state: OutState,
    /// The publisher left while this track was being offered: stop it once answered.
    stop_when_open: bool,
    /// Video is held back until a keyframe, since a decoder cannot start from a delta frame.
    pub(crate) awaiting_keyframe: bool,
}

impl Forwarded {
    pub(crate) fn mid(&self) -> Option<Mid> {
        match self.state {
            OutState::ToOpen => None,
            OutState::Negotiating(m)
            | OutState::Open(m)
            | OutState::ToStop(m)
            | OutState::NegotiatingStop(m) => Some(m),
        }
    }

    fn is_live(&self) -> bool {
        !self.stop_when_open
            && matches!(
                self.state,
                OutState::ToOpen | OutState::Negotiating(_) | OutState::Open(_)
            )
    }
}

/// The tracks forwarded to one participant.
#[derive(Debug, Default)]
pub(crate) struct ForwardTable {
    tracks: Vec<Forwarded>,
}

/// The SDP changes the next offer has to carry.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct PendingChanges {
    pub(crate) open: Vec<(ParticipantId, TrackKind)>,
    pub(crate) stop: Vec<Mid>,
}

impl ForwardTable {
    /// Wants `source`'s `kind` track forwarded (no-op if it already is).
    pub(crate) fn add(&mut self, source: ParticipantId, kind: TrackKind) {
        if self
            .tracks
            .iter()
            .any(|t| t.source == source && t.kind == kind && t.is_live())
        {
            return;
        }
        self.tracks.push(Forwarded {
            source,
            kind,
            state: OutState::ToOpen,
            stop_when_open: false,
            awaiting_keyframe: true,
        });
    }

    /// Stops forwarding `source`'s tracks of `kind` (all kinds if `None`).
    pub(crate) fn remove(&mut self, source: ParticipantId, kind: Option<TrackKind>) {
        let matches = |t: &Forwarded| t.source == source && kind.is_none_or(|k| k == t.kind);
        self.tracks
            .retain(|t| !(matches(t) && t.state == OutState::ToOpen));
        for t in self.tracks.iter_mut().filter(|t| matches(t)) {
            match t.state {
                OutState::Open(m) => t.state = OutState::ToStop(m),
                OutState::Negotiating(_) => t.stop_when_open = true,
                _ => {}
            }
        }
    }

    /// The changes the next offer must carry.
    pub(crate) fn pending_changes(&self) -> PendingChanges {
        let mut changes = PendingChanges::default();
        for t in &self.tracks {
            match t.state {
                OutState::ToOpen => changes.open.push((t.source, t.kind)),
                OutState::ToStop(m) => changes.stop.push(m),
                _ => {}
            }
        }
        changes
    }

    /// Records that an offer now carries `mid` for `source`'s `kind` track.
    pub(crate) fn offered(&mut self, source: ParticipantId, kind: TrackKind, mid: Mid) {
        if let Some(t) = self
            .tracks
            .iter_mut()
            .find(|t| t.source == source && t.kind == kind && t.state == OutState::ToOpen)
        {
            t.state = OutState::Negotiating(mid);
        }
    }

    /// Records that an offer now stops `mid`.
    pub(crate) fn stop_offered(&mut self, mid: Mid) {
        for t in &mut self.tracks {
            if t.state == OutState::ToStop(mid) {
                t.state = OutState::NegotiatingStop(mid);
            }
        }
    }

    /// The answer to the outstanding offer came: returns the tracks that opened.
    pub(crate) fn answered(&mut self) -> Vec<(ParticipantId, TrackKind)> {
        self.tracks
            .retain(|t| !matches!(t.state, OutState::NegotiatingStop(_)));
        let mut opened = Vec::new();
        for t in &mut self.tracks {
            if let OutState::Negotiating(m) = t.state {
                if t.stop_when_open {
                    t.state = OutState::ToStop(m);
                    t.stop_when_open = false;
                } else {
                    t.state = OutState::Open(m);
                    opened.push((t.source, t.kind));
                }
            }
        }
        opened
    }

    /// The outstanding offer was abandoned (the client's own offer crossed it).
    pub(crate) fn rolled_back(&mut self) {
        // A stop is applied to the local session as soon as it is offered, so a stopped track
        // stays stopped; the client learns of it in the next offer.
        self.tracks
            .retain(|t| !matches!(t.state, OutState::NegotiatingStop(_)));
        self.tracks
            .retain(|t| !(t.stop_when_open && matches!(t.state, OutState::Negotiating(_))));
        for t in &mut self.tracks {
            if let OutState::Negotiating(_) = t.state {
                t.state = OutState::ToOpen;
            }
        }
    }

    /// The open track carrying `source`'s `kind`.
    pub(crate) fn open_mut(
        &mut self,
        source: ParticipantId,
        kind: TrackKind,
    ) -> Option<(Mid, &mut Forwarded)> {
        self.tracks
            .iter_mut()
            .find(|t| t.source == source && t.kind == kind && matches!(t.state, OutState::Open(_)))
            .and_then(|t| match t.state {
                OutState::Open(m) => Some((m, t)),
                _ => None,
            })
    }

    /// The track sent on `mid`, whatever its state.
    pub(crate) fn by_mid(&self, mid: Mid) -> Option<&Forwarded> {
        self.tracks.iter().find(|t| t.mid() == Some(mid))
    }

    /// Holds back `source`'s video until its next keyframe (it was just selected again).
    pub(crate) fn await_keyframe(&mut self, source: ParticipantId) {
        for t in &mut self.tracks {
            if t.source == source && t.kind == TrackKind::Video {
                t.awaiting_keyframe = true;
            }
        }
    }

    /// The tracks to announce in a `tracks` notice: offered or open, not being stopped.
    pub(crate) fn infos(&self) -> Vec<TrackInfo> {
        self.tracks
            .iter()
            .filter(|t| t.is_live())
            .filter_map(|t| {
                t.mid().map(|m| TrackInfo {
                    mid: m.to_string(),
                    participant: t.source,
                    kind: t.kind,
                })
            })
            .collect()
    }

    /// The open tracks.
    pub(crate) fn open_tracks(&self) -> impl Iterator<Item = &Forwarded> {
        self.tracks
            .iter()
            .filter(|t| matches!(t.state, OutState::Open(_)))
    }

    /// Number of open tracks.
    pub(crate) fn open_count(&self) -> usize {
        self.tracks
            .iter()
            .filter(|t| matches!(t.state, OutState::Open(_)))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: ParticipantId = ParticipantId(7);

    fn mid(s: &str) -> Mid {
        Mid::from(s)
    }

    #[test]
    fn a_track_opens_after_offer_and_answer() {
        let mut t = ForwardTable::default();
        t.add(P, TrackKind::Video);
        t.add(P, TrackKind::Video);
        assert_eq!(t.pending_changes().open, vec![(P, TrackKind::Video)]);
        t.offered(P, TrackKind::Video, mid("a"));
        assert!(t.open_mut(P, TrackKind::Video).is_none());
        assert_eq!(t.infos().len(), 1);
        assert_eq!(t.answered(), vec![(P, TrackKind::Video)]);
        let (m, f) = t.open_mut(P, TrackKind::Video).unwrap();
        assert_eq!(m, mid("a"));
        assert!(f.awaiting_keyframe);
        assert_eq!(t.pending_changes(), PendingChanges::default());
    }

    #[test]
    fn removing_an_open_track_stops_it_in_the_next_offer() {
        let mut t = ForwardTable::default();
        t.add(P, TrackKind::Audio);
        t.offered(P, TrackKind::Audio, mid("a"));
        t.answered();
        t.remove(P, None);
        assert_eq!(t.pending_changes().stop, vec![mid("a")]);
        assert!(t.infos().is_empty());
        t.stop_offered(mid("a"));
        assert!(t.answered().is_empty());
        assert!(t.by_mid(mid("a")).is_none());
    }

    #[test]
    fn a_track_removed_before_its_offer_is_forgotten() {
        let mut t = ForwardTable::default();
        t.add(P, TrackKind::Audio);
        t.remove(P, Some(TrackKind::Audio));
        assert_eq!(t.pending_changes(), PendingChanges::default());
    }

    #[test]
    fn a_track_removed_while_offered_is_stopped_once_answered() {
        let mut t = ForwardTable::default();
        t.add(P, TrackKind::Video);
        t.offered(P, TrackKind::Video, mid("v"));
        t.remove(P, None);
        assert!(t.answered().is_empty());
        assert_eq!(t.pending_changes().stop, vec![mid("v")]);
    }

    #[test]
    fn a_rolled_back_offer_is_made_again() {
        let mut t = ForwardTable::default();
        t.add(P, TrackKind::Video);
        t.offered(P, TrackKind::Video, mid("v"));
        t.rolled_back();
        assert_eq!(t.pending_changes().open, vec![(P, TrackKind::Video)]);
    }
}
