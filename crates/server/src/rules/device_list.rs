//! Which signed device list may follow the stored one.
//!
//! The server cannot sign lists (only the account identity key can), but it refuses every list
//! that does not follow the stored one: a different identity key or username, a version other
//! than stored + 1, or a device set that does not match what the request says it does. Clients
//! check lists themselves as well; this keeps the published history linear and honest about
//! which devices the server routes to.

use nightjar_core::identity::{DeviceEntry, DeviceId, DeviceList, SignedDeviceList};

/// Why a proposed device list was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ListError {
    /// The bytes are not a signed device list.
    #[error("the device list is malformed")]
    Malformed,
    /// The signature does not verify under the key the list names.
    #[error("the device list signature does not verify")]
    BadSignature,
    /// The list names another account.
    #[error("the device list names another account")]
    WrongAccount,
    /// The list is signed by another identity key than the stored one.
    #[error("the device list is signed by a different identity key")]
    IdentityChanged,
    /// The version is not the stored version + 1 (or 1 for a new account).
    #[error("the device list version must be {expected}")]
    WrongVersion {
        /// The version the server expects.
        expected: u64,
    },
    /// The device set is not what this operation allows.
    #[error("{0}")]
    WrongDevices(&'static str),
}

/// What the next list must change relative to the stored one.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Change<'a> {
    /// Add exactly this pending device (with the signature key from its link offer).
    Add(&'a DeviceEntry),
    /// Remove exactly this device.
    Remove(DeviceId),
    /// Any subset of the current devices, at least one.
    Subset,
}

/// Decodes and verifies a signed list.
pub(crate) fn verify(bytes: &[u8]) -> Result<(SignedDeviceList, DeviceList), ListError> {
    let signed = SignedDeviceList::decode(bytes).map_err(|_| ListError::Malformed)?;
    let list = signed.verify().map_err(|e| match e {
        nightjar_core::identity::IdentityError::BadSignature => ListError::BadSignature,
        _ => ListError::Malformed,
    })?;
    Ok((signed, list))
}

/// Checks version 1 of a new account's list: it names `username` and exactly `device`.
pub(crate) fn check_first(
    list: &DeviceList,
    username: &str,
    device: DeviceId,
) -> Result<(), ListError> {
    if list.username() != username {
        return Err(ListError::WrongAccount);
    }
    if list.version != 1 {
        return Err(ListError::WrongVersion { expected: 1 });
    }
    match list.devices.as_slice() {
        [only] if only.device_id == device => Ok(()),
        _ => Err(ListError::WrongDevices(
            "the first device list must name exactly the registering device",
        )),
    }
}

/// Checks that `next` may replace `stored` with `change`.
pub(crate) fn check_next(
    stored: &DeviceList,
    next: &DeviceList,
    change: Change<'_>,
) -> Result<(), ListError> {
    if next.username != stored.username {
        return Err(ListError::WrongAccount);
    }
    if next.identity_key != stored.identity_key {
        return Err(ListError::IdentityChanged);
    }
    let expected = stored.version.saturating_add(1);
    if next.version != expected {
        return Err(ListError::WrongVersion { expected });
    }
    // Devices keep their signature keys; a device whose key changed would be a new device.
    let kept_unchanged = |d: &DeviceEntry| {
        stored
            .device(d.device_id)
            .is_some_and(|s| s.signature_key == d.signature_key)
    };
    match change {
        Change::Add(pending) => {
            if stored.device(pending.device_id).is_some() {
                return Err(ListError::WrongDevices("the device is already listed"));
            }
            let added = next
                .device(pending.device_id)
                .ok_or(ListError::WrongDevices(
                    "the new list does not contain the approved device",
                ))?;
            if added.signature_key != pending.signature_key {
                return Err(ListError::WrongDevices(
                    "the approved device's key differs from its link offer",
                ));
            }
            let others_kept = next
                .devices
                .iter()
                .filter(|d| d.device_id != pending.device_id)
                .all(kept_unchanged);
            if !others_kept || next.devices.len() != stored.devices.len() + 1 {
                return Err(ListError::WrongDevices(
                    "the new list must keep every current device and add only the approved one",
                ));
            }
        }
        Change::Remove(gone) => {
            if stored.device(gone).is_none() {
                return Err(ListError::WrongDevices("the device is not listed"));
            }
            if next.device(gone).is_some() {
                return Err(ListError::WrongDevices(
                    "the new list still contains the removed device",
                ));
            }
            if !next.devices.iter().all(kept_unchanged)
                || next.devices.len() + 1 != stored.devices.len()
            {
                return Err(ListError::WrongDevices(
                    "the new list must keep every other current device",
                ));
            }
            if next.devices.is_empty() {
                return Err(ListError::WrongDevices(
                    "an account must keep at least one device",
                ));
            }
        }
        Change::Subset => {
            if !next.devices.iter().all(kept_unchanged) {
                return Err(ListError::WrongDevices(
                    "devices are added only by approving a pending device",
                ));
            }
            if next.devices.is_empty() {
                return Err(ListError::WrongDevices(
                    "an account must keep at least one device",
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nightjar_core::identity::AccountIdentity;

    fn entry(id: u64) -> DeviceEntry {
        DeviceEntry {
            device_id: DeviceId(id),
            signature_key: [id as u8; 32],
            added_at_ms: 0,
        }
    }

    fn list(id: &AccountIdentity, version: u64, devices: &[u64]) -> DeviceList {
        DeviceList {
            username: b"alice".to_vec(),
            identity_key: id.public(),
            version,
            devices: devices.iter().map(|d| entry(*d)).collect(),
        }
    }

    #[test]
    fn first_list() {
        let id = AccountIdentity::generate().unwrap();
        assert!(check_first(&list(&id, 1, &[1]), "alice", DeviceId(1)).is_ok());
        assert_eq!(
            check_first(&list(&id, 1, &[1]), "bob", DeviceId(1)),
            Err(ListError::WrongAccount)
        );
        assert!(check_first(&list(&id, 2, &[1]), "alice", DeviceId(1)).is_err());
        assert!(check_first(&list(&id, 1, &[1, 2]), "alice", DeviceId(1)).is_err());
        assert!(check_first(&list(&id, 1, &[2]), "alice", DeviceId(1)).is_err());
    }

    #[test]
    fn verify_round_trip_and_tamper() {
        let id = AccountIdentity::generate().unwrap();
        let bytes = id.sign(&list(&id, 1, &[1])).unwrap().encode();
        let (_, l) = verify(&bytes).unwrap();
        assert_eq!(l.version, 1);
        let mut bad = bytes.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(verify(&bad).unwrap_err(), ListError::BadSignature);
        assert_eq!(verify(b"junk").unwrap_err(), ListError::Malformed);
    }

    #[test]
    fn add_requires_exactly_the_pending_device() {
        let id = AccountIdentity::generate().unwrap();
        let stored = list(&id, 3, &[1]);
        let pending = entry(2);
        assert!(check_next(&stored, &list(&id, 4, &[1, 2]), Change::Add(&pending)).is_ok());
        // Wrong version, both ways.
        assert_eq!(
            check_next(&stored, &list(&id, 5, &[1, 2]), Change::Add(&pending)),
            Err(ListError::WrongVersion { expected: 4 })
        );
        assert!(check_next(&stored, &list(&id, 3, &[1, 2]), Change::Add(&pending)).is_err());
        // Dropping a current device, or adding another one, is refused.
        assert!(check_next(&stored, &list(&id, 4, &[2]), Change::Add(&pending)).is_err());
        assert!(check_next(&stored, &list(&id, 4, &[1, 2, 3]), Change::Add(&pending)).is_err());
        // A key other than the offer's is refused.
        let mut swapped = list(&id, 4, &[1, 2]);
        swapped.devices[1].signature_key = [9; 32];
        assert!(check_next(&stored, &swapped, Change::Add(&pending)).is_err());
        // Another identity key is refused.
        let other = AccountIdentity::generate().unwrap();
        assert_eq!(
            check_next(&stored, &list(&other, 4, &[1, 2]), Change::Add(&pending)),
            Err(ListError::IdentityChanged)
        );
    }

    #[test]
    fn remove_requires_exactly_that_device_gone() {
        let id = AccountIdentity::generate().unwrap();
        let stored = list(&id, 2, &[1, 2, 3]);
        assert!(check_next(&stored, &list(&id, 3, &[1, 3]), Change::Remove(DeviceId(2))).is_ok());
        assert!(check_next(&stored, &list(&id, 3, &[1]), Change::Remove(DeviceId(2))).is_err());
        assert!(
            check_next(
                &stored,
                &list(&id, 3, &[1, 2, 3]),
                Change::Remove(DeviceId(2))
            )
            .is_err()
        );
        assert!(
            check_next(
                &stored,
                &list(&id, 3, &[1, 3, 4]),
                Change::Remove(DeviceId(2))
            )
            .is_err()
        );
        assert!(check_next(&stored, &list(&id, 3, &[1, 3]), Change::Remove(DeviceId(9))).is_err());
        let single = list(&id, 1, &[1]);
        assert!(check_next(&single, &list(&id, 2, &[]), Change::Remove(DeviceId(1))).is_err());
    }

    #[test]
    fn subset_never_adds() {
        let id = AccountIdentity::generate().unwrap();
        let stored = list(&id, 2, &[1, 2]);
        assert!(check_next(&stored, &list(&id, 3, &[1, 2]), Change::Subset).is_ok());
        assert!(check_next(&stored, &list(&id, 3, &[2]), Change::Subset).is_ok());
        assert!(check_next(&stored, &list(&id, 3, &[1, 2, 5]), Change::Subset).is_err());
        assert!(check_next(&stored, &list(&id, 3, &[]), Change::Subset).is_err());
        assert!(check_next(&stored, &list(&id, 2, &[1]), Change::Subset).is_err());
    }
}
