//! Which key packages a device may upload: validly self-signed, for exactly that device's
//! credential (`username:device-id`) and signature key, and of the right kind (one-time or
//! last-resort); and how many one-time packages one account may claim of another before it
//! gets only last-resort packages, so nobody can drain another account's stock.

use nightjar_core::wire::inspect_key_package;
use std::time::Duration;

use sha2::{Digest as _, Sha256};

/// Why an uploaded key package was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PackageError {
    /// Larger than the per-package limit.
    #[error("a key package is larger than the server accepts")]
    TooLarge,
    /// Malformed, badly signed, or not this device's.
    #[error("{0}")]
    Invalid(&'static str),
}

/// The device a package must belong to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Owner<'a> {
    /// `username:device-id`, the MLS credential identity.
    pub(crate) identity: &'a [u8],
    /// The device's signature key from the account's stored device list.
    pub(crate) signature_key: &'a [u8],
}

/// Checks one package; returns `(SHA-256 digest, bytes)` for storage.
pub(crate) fn check(
    owner: Owner<'_>,
    bytes: Vec<u8>,
    last_resort: bool,
    max_bytes: usize,
) -> Result<([u8; 32], Vec<u8>), PackageError> {
    if bytes.len() > max_bytes {
        return Err(PackageError::TooLarge);
    }
    let info = inspect_key_package(&bytes)
        .map_err(|_| PackageError::Invalid("a key package is malformed or badly signed"))?;
    if info.identity != owner.identity {
        return Err(PackageError::Invalid(
            "a key package carries another device's credential",
        ));
    }
    if info.signature_key != owner.signature_key {
        return Err(PackageError::Invalid(
            "a key package is signed by a key not in the account's device list",
        ));
    }
    if info.last_resort != last_resort {
        return Err(PackageError::Invalid(if last_resort {
            "the last-resort key package is not marked last-resort"
        } else {
            "a one-time key package is marked last-resort"
        }));
    }
    let digest = Sha256::digest(&bytes).into();
    Ok((digest, bytes))
}

/// Where a claimer stands with one target account's key packages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClaimWindow {
    /// When the current window started (ms).
    pub(crate) start_ms: u64,
    /// One-time claims in it.
    pub(crate) claims: u32,
}

/// What a key-package claim may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClaimAllowance {
    /// One-time packages; the window afterwards.
    OneTime(ClaimWindow),
    /// Only last-resort packages (the quota is used up): the target's stock is kept.
    LastResortOnly,
}

/// Decides a claim at `now_ms` by an account of another account's key packages, given the
/// claimer's window for that target (if any), `max` claims per `window`. Claims of one's own
/// account are not limited (`own`).
pub(crate) fn claim_allowance(
    own: bool,
    previous: Option<ClaimWindow>,
    now_ms: u64,
    max: u32,
    window: Duration,
) -> ClaimAllowance {
    let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
    let current = match previous {
        Some(w) if now_ms.saturating_sub(w.start_ms) < window_ms => w,
        _ => ClaimWindow {
            start_ms: now_ms,
            claims: 0,
        },
    };
    if own {
        return ClaimAllowance::OneTime(current);
    }
    if current.claims >= max {
        return ClaimAllowance::LastResortOnly;
    }
    ClaimAllowance::OneTime(ClaimWindow {
        claims: current.claims + 1,
        ..current
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use nightjar_core::storage::MemoryStore;
    use nightjar_core::{Engine, EngineConfig, Suite};
    use std::sync::Arc;

    #[test]
    fn only_the_devices_own_packages_of_the_right_kind() {
        let config = EngineConfig {
            suite: Suite::Classic,
            ..EngineConfig::default()
        };
        let (mut engine, list) =
            Engine::create_account(Arc::new(MemoryStore::new()), "alice", config, 1).unwrap();
        let list = list.verify().unwrap();
        let me = engine.device().clone();
        let key = list.device(me.device_id).unwrap().signature_key;
        let identity = me.to_identity();
        let owner = Owner {
            identity: &identity,
            signature_key: &key,
        };
        let one = engine.generate_key_packages(1, false).unwrap().remove(0);

        let (digest, _) = check(owner, one.clone(), false, 1 << 16).unwrap();
        assert_eq!(digest, <[u8; 32]>::from(Sha256::digest(&one)));
        // A one-time package is not a last-resort one. (Accepting real last-resort packages
        // is covered end to end; see tests/common/last_resort.rs for why not here.)
        assert!(check(owner, one.clone(), true, 1 << 16).is_err());
        // Another device, another key, garbage, too large.
        let other = b"alice:0000000000000001".to_vec();
        let wrong_identity = Owner {
            identity: &other,
            signature_key: &key,
        };
        assert!(check(wrong_identity, one.clone(), false, 1 << 16).is_err());
        let wrong_key = Owner {
            identity: &identity,
            signature_key: &[0; 32],
        };
        assert!(check(wrong_key, one.clone(), false, 1 << 16).is_err());
        let mut tampered = one.clone();
        let mid = tampered.len() / 2;
        tampered[mid] ^= 1;
        assert!(check(owner, tampered, false, 1 << 16).is_err());
        assert_eq!(
            check(owner, one, false, 10).unwrap_err(),
            PackageError::TooLarge
        );
    }

    #[test]
    fn claims_past_the_quota_get_last_resort() {
        let hour = Duration::from_secs(3600);
        let mut w = None;
        for i in 1..=3 {
            match claim_allowance(false, w, 1000, 3, hour) {
                ClaimAllowance::OneTime(next) => {
                    assert_eq!(next.claims, i);
                    w = Some(next);
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(
            claim_allowance(false, w, 2000, 3, hour),
            ClaimAllowance::LastResortOnly
        );
        // Own account: never limited; a new window starts over.
        assert!(matches!(
            claim_allowance(true, w, 2000, 3, hour),
            ClaimAllowance::OneTime(_)
        ));
        assert_eq!(
            claim_allowance(false, w, 1000 + 3_600_000, 3, hour),
            ClaimAllowance::OneTime(ClaimWindow {
                start_ms: 3_601_000,
                claims: 1
            })
        );
    }
}
