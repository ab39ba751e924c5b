//! Who may stay in a group call: the SFU's participants checked against the conversation's
//! member devices as the server knows them (the member set of the last commit it accepted,
//! `conversation_members`). Pure; the driver is `group_calls.rs`.

use std::collections::{BTreeSet, HashMap};

use nightjar_api::DeviceAddress;
use nightjar_core::identity::DeviceId;
use nightjar_sfu::ParticipantId;

/// The device behind one participant of a call, recorded when it joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Seat {
    /// The device's row id.
    pub(crate) device_pk: i64,
    /// The device's address (account and device id).
    pub(crate) address: DeviceAddress,
}

/// The participant id of a device (see [`nightjar_core::calls::sfu_participant`]). `None` for
/// an address that is not a device id.
pub(crate) fn participant_id(username: &str, device_id: &str) -> Option<ParticipantId> {
    DeviceId::parse(device_id)
        .map(|id| ParticipantId(nightjar_core::calls::sfu_participant(username, id)))
}

/// The participants that must leave the call because their device is no longer a member: those
/// whose seat's address is not among `members`, and those with no seat at all (the server
/// cannot vouch for them). `participants` is the SFU's list for the room.
pub(crate) fn no_longer_members(
    participants: &[ParticipantId],
    seats: &HashMap<ParticipantId, Seat>,
    members: &BTreeSet<DeviceAddress>,
) -> Vec<ParticipantId> {
    participants
        .iter()
        .filter(|p| {
            seats
                .get(p)
                .is_none_or(|seat| !members.contains(&seat.address))
        })
        .copied()
        .collect()
}

/// The participants that are one of `devices` (removed devices, or devices whose sessions were
/// revoked).
pub(crate) fn seated_devices(
    participants: &[ParticipantId],
    seats: &HashMap<ParticipantId, Seat>,
    devices: &[i64],
) -> Vec<ParticipantId> {
    participants
        .iter()
        .filter(|p| {
            seats
                .get(p)
                .is_some_and(|seat| devices.contains(&seat.device_pk))
        })
        .copied()
        .collect()
}

/// What a join finds in the participant's place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rejoin {
    /// Nobody: join.
    Free,
    /// The same device, from an earlier connection: remove that one, then join.
    Reconnect,
    /// Another device with the same device id (of another account): refuse.
    Taken,
}

/// Whether `device_pk` may take participant id `participant`, given who holds it now (`seats`,
/// already pruned to the SFU's participants).
pub(crate) fn rejoin(
    seats: &HashMap<ParticipantId, Seat>,
    participant: ParticipantId,
    device_pk: i64,
) -> Rejoin {
    match seats.get(&participant) {
        None => Rejoin::Free,
        Some(seat) if seat.device_pk == device_pk => Rejoin::Reconnect,
        Some(_) => Rejoin::Taken,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(user: &str, id: u64) -> DeviceAddress {
        DeviceAddress {
            username: user.into(),
            device_id: format!("{id:016x}"),
        }
    }

    fn seats(list: &[(u64, i64, &str)]) -> HashMap<ParticipantId, Seat> {
        list.iter()
            .map(|&(id, pk, user)| {
                (
                    ParticipantId(id),
                    Seat {
                        device_pk: pk,
                        address: address(user, id),
                    },
                )
            })
            .collect()
    }

    #[test]
    fn a_participant_is_its_account_and_device_id() {
        let alice = participant_id("alice", "00000000000000ff");
        assert!(alice.is_some());
        assert_ne!(alice, participant_id("mallory", "00000000000000ff"));
        assert_eq!(participant_id("alice", "ff"), None);
        assert_eq!(participant_id("alice", "00000000000000FF"), None);
    }

    #[test]
    fn removed_members_and_unknown_participants_must_leave() {
        let seats = seats(&[(1, 10, "alice"), (2, 20, "bob"), (3, 30, "carol")]);
        let participants = [ParticipantId(1), ParticipantId(2), ParticipantId(3)];
        let everyone: BTreeSet<_> = [address("alice", 1), address("bob", 2), address("carol", 3)]
            .into_iter()
            .collect();
        assert!(no_longer_members(&participants, &seats, &everyone).is_empty());
        // carol's device left the group.
        let without_carol: BTreeSet<_> = [address("alice", 1), address("bob", 2)]
            .into_iter()
            .collect();
        assert_eq!(
            no_longer_members(&participants, &seats, &without_carol),
            [ParticipantId(3)]
        );
        // The same device id under another account is not the member.
        let impostor: BTreeSet<_> = [address("alice", 1), address("bob", 2), address("eve", 3)]
            .into_iter()
            .collect();
        assert_eq!(
            no_longer_members(&participants, &seats, &impostor),
            [ParticipantId(3)]
        );
        // A participant the server has no seat for is not vouched for.
        let unknown = [ParticipantId(1), ParticipantId(9)];
        assert_eq!(
            no_longer_members(&unknown, &seats, &everyone),
            [ParticipantId(9)]
        );
        // Nobody is a member any more: everyone goes.
        assert_eq!(
            no_longer_members(&participants, &seats, &BTreeSet::new()),
            participants
        );
    }

    #[test]
    fn revoked_devices_must_leave() {
        let seats = seats(&[(1, 10, "alice"), (2, 20, "bob")]);
        let participants = [ParticipantId(1), ParticipantId(2)];
        assert_eq!(
            seated_devices(&participants, &seats, &[20, 99]),
            [ParticipantId(2)]
        );
        assert!(seated_devices(&participants, &seats, &[99]).is_empty());
        assert!(seated_devices(&[], &seats, &[10, 20]).is_empty());
    }

    #[test]
    fn a_place_is_rejoined_by_its_own_device_only() {
        let seats = seats(&[(1, 10, "alice")]);
        assert_eq!(rejoin(&seats, ParticipantId(1), 10), Rejoin::Reconnect);
        assert_eq!(rejoin(&seats, ParticipantId(1), 11), Rejoin::Taken);
        assert_eq!(rejoin(&seats, ParticipantId(2), 11), Rejoin::Free);
    }
}
