//! Group calls on this node's selective forwarding unit (`nightjar-sfu`): the SFU itself, and who
//! sits in each of its rooms, so that a device that stops being a member of a conversation is
//! cut off from the conversation's call at once.
//!
//! A room is a conversation (its 16-byte id); a participant is a device (its device id as a
//! number), admitted only while it is an active member device of the conversation by the last
//! commit the server accepted. The server checks that again, and kicks whoever is no longer a
//! member ([`crate::rules::calls`] decides who):
//! - after every commit it accepts for a conversation whose call has participants here;
//! - when devices are removed or their sessions revoked on this node;
//! - every [`RECHECK_INTERVAL`] for every room, which catches commits accepted and devices
//!   removed on other nodes sharing the database.
//!
//! Joins, rechecks and kicks take one lock in turn, and a join or a recheck reads the member set
//! while holding it, so a join cannot slip past a commit: either the join reads the member set
//! after the commit, or the commit's recheck (which waits for the lock) sees its seat.
//!
//! Nothing here is written down or logged with a name: the seats live in memory only, for as
//! long as the participant is in the call.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::time::Duration;

use nightjar_core::ConversationId;
use nightjar_sfu::{ParticipantId, RoomId, Sfu, SfuError};
use tokio::sync::Mutex;

use crate::config::SfuSettings;
use crate::error::ServerError;
use crate::rules::calls::{Rejoin, Seat, no_longer_members, rejoin, seated_devices};
use crate::store::Store;

/// How often every room's participants are checked against the database.
pub(crate) const RECHECK_INTERVAL: Duration = Duration::from_secs(5);

/// Who sits in each room, by participant.
type Rooms = HashMap<RoomId, HashMap<ParticipantId, Seat>>;

/// This node's SFU and its rooms' seats.
pub(crate) struct GroupCalls {
    sfu: Sfu,
    rooms: Mutex<Rooms>,
}

impl fmt::Debug for GroupCalls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupCalls")
            .field("sfu", &self.sfu)
            .finish_non_exhaustive()
    }
}

/// Why a device could not join a call.
#[derive(Debug, thiserror::Error)]
pub(crate) enum JoinRefusal {
    /// The device is not an active member device of the conversation (or there is no such
    /// conversation).
    #[error("this device is not a member of the conversation")]
    NotAMember,
    /// Another device with the same device id is in the call.
    #[error("another device with this device id is in the call")]
    Taken,
    /// The SFU refused the join.
    #[error(transparent)]
    Sfu(#[from] SfuError),
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// The room of a conversation's call.
pub(crate) fn room(conversation: ConversationId) -> RoomId {
    RoomId(conversation.0)
}

impl GroupCalls {
    /// Binds the SFU's UDP socket and starts it.
    pub(crate) fn start(settings: &SfuSettings) -> Result<Self, ServerError> {
        let sfu =
            Sfu::bind_with_config(settings.udp, settings.public_addr, settings.config.clone())
                .map_err(|e| match e.kind() {
                    std::io::ErrorKind::InvalidInput => ServerError::Config(format!(
                        "the SFU is bound to {}: give --sfu-public-addr, the address clients reach",
                        settings.udp
                    )),
                    _ => ServerError::Config(format!(
                        "cannot start the SFU on UDP {}: {e}",
                        settings.udp
                    )),
                })?;
        Ok(Self {
            sfu,
            rooms: Mutex::new(HashMap::new()),
        })
    }

    /// The SFU.
    pub(crate) fn sfu(&self) -> &Sfu {
        &self.sfu
    }

    /// Admits `device` (participant `participant`) to the call of `conversation` with its SDP
    /// offer, if it is an active member device; returns the SFU's answer. The same device
    /// joining again (a reconnect) replaces its earlier connection.
    pub(crate) async fn join(
        &self,
        store: &Store,
        conversation: ConversationId,
        participant: ParticipantId,
        device: Seat,
        offer: String,
    ) -> Result<String, JoinRefusal> {
        let room = room(conversation);
        let mut rooms = self.rooms.lock().await;
        let members = store.active_members(&conversation.to_string()).await?;
        if !members.iter().any(|m| m.device_pk == device.device_pk) {
            return Err(JoinRefusal::NotAMember);
        }
        let seats = prune(&mut rooms, &self.sfu, room);
        match rejoin(seats, participant, device.device_pk) {
            Rejoin::Free => {}
            Rejoin::Reconnect => {
                match self.sfu.leave(room, participant) {
                    Ok(()) | Err(SfuError::UnknownParticipant { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
                seats.remove(&participant);
            }
            Rejoin::Taken => return Err(JoinRefusal::Taken),
        }
        let answer = self.sfu.join(room, participant, offer).await;
        if answer.is_ok() {
            seats.insert(participant, device);
        }
        if seats.is_empty() {
            rooms.remove(&room);
        }
        Ok(answer?)
    }

    /// Kicks from the call of `conversation` every participant that is not an active member
    /// device of it now; returns how many.
    pub(crate) async fn recheck(
        &self,
        store: &Store,
        conversation: ConversationId,
    ) -> Result<usize, sqlx::Error> {
        let room = room(conversation);
        let mut rooms = self.rooms.lock().await;
        if prune(&mut rooms, &self.sfu, room).is_empty() && self.sfu.participants(room).is_empty() {
            rooms.remove(&room);
            return Ok(0);
        }
        let members: BTreeSet<_> = store
            .active_members(&conversation.to_string())
            .await?
            .into_iter()
            .map(|m| m.address)
            .collect();
        let participants = self.sfu.participants(room);
        let seats = rooms.entry(room).or_default();
        let out = no_longer_members(&participants, seats, &members);
        self.kick(room, seats, &out);
        if seats.is_empty() {
            rooms.remove(&room);
        }
        Ok(out.len())
    }

    /// [`Self::recheck`] of every room with participants.
    pub(crate) async fn recheck_all(&self, store: &Store) {
        let rooms: Vec<RoomId> = self.rooms.lock().await.keys().copied().collect();
        for room in rooms {
            if let Err(e) = self.recheck(store, ConversationId(room.0)).await {
                tracing::warn!(error = %e, "group-call membership check failed");
            }
        }
    }

    /// Kicks `devices` out of every call they are in (they were removed, or their sessions
    /// revoked).
    pub(crate) async fn cut_off_devices(&self, devices: &[i64]) {
        let mut rooms = self.rooms.lock().await;
        let ids: Vec<RoomId> = rooms.keys().copied().collect();
        for room in ids {
            let seats = prune(&mut rooms, &self.sfu, room);
            let participants: Vec<ParticipantId> = seats.keys().copied().collect();
            let out = seated_devices(&participants, seats, devices);
            self.kick(room, seats, &out);
            if seats.is_empty() {
                rooms.remove(&room);
            }
        }
    }

    /// Closes every call (at shutdown): participants get `{"type":"bye","reason":"closed"}`.
    pub(crate) async fn close_all(&self) {
        let mut rooms = self.rooms.lock().await;
        for (room, _) in rooms.drain() {
            let _ = self.sfu.close_room(room);
        }
    }

    fn kick(&self, room: RoomId, seats: &mut HashMap<ParticipantId, Seat>, out: &[ParticipantId]) {
        for participant in out {
            match self.sfu.kick(room, *participant) {
                Ok(()) | Err(SfuError::UnknownParticipant { .. }) => {}
                Err(e) => tracing::warn!(error = %e, "kicking a call participant failed"),
            }
            seats.remove(participant);
        }
        if !out.is_empty() {
            tracing::info!(kicked = out.len(), "cut participants off a group call");
        }
    }
}

/// The seats of `room`, without those whose participant already left the SFU on its own
/// (hung up, disconnected, timed out).
fn prune<'a>(
    rooms: &'a mut Rooms,
    sfu: &Sfu,
    room: RoomId,
) -> &'a mut HashMap<ParticipantId, Seat> {
    let present = sfu.participants(room);
    let seats = rooms.entry(room).or_default();
    seats.retain(|p, _| present.contains(p));
    seats
}
