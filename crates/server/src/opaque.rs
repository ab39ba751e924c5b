//! OPAQUE on the server: the long-term server setup (generated once, kept in the database) and
//! the login attempts between `login/start` and `login/finish` (single use, five minutes). The
//! server never sees a password, and a stolen database allows no offline guessing cheaper than
//! running Argon2id on the client side of OPAQUE for every guess.
//!
//! A started login is kept in the database, so any node can finish a login another node
//! started. Its OPAQUE state would let whoever reads it finish the login, so it is stored
//! sealed (ChaCha20-Poly1305) under a fresh key that is part of the login id the client gets:
//! the id is `handle ‖ key`, the database sees only the handle and the sealed state.

use std::fmt;
use std::time::Duration;

use chacha20poly1305::aead::{Aead as _, KeyInit as _, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use nightjar_api::B64;
use nightjar_api::opaque::Suite;
use opaque_ke::{ServerLogin, ServerSetup};
use rand_core::{OsRng, RngCore as _};

use crate::error::{Error, ServerError};
use crate::store::{Store, StoredLogin};

/// Name of the stored server setup.
const SETUP_NAME: &str = "opaque_server_setup_v1";

/// How long a started login may be finished.
pub(crate) const LOGIN_TTL: Duration = Duration::from_secs(5 * 60);

/// The server's OPAQUE keys (OPRF seed and key-exchange key pair); never printed.
pub(crate) struct OpaqueSetup(pub(crate) ServerSetup<Suite>);

impl fmt::Debug for OpaqueSetup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OpaqueSetup(<redacted>)")
    }
}

/// Loads the server setup, generating and storing it on first start.
pub(crate) async fn load_setup(store: &Store) -> Result<OpaqueSetup, ServerError> {
    let stored = match store.server_state(SETUP_NAME).await? {
        Some(bytes) => bytes,
        None => {
            let fresh = ServerSetup::<Suite>::new(&mut OsRng).serialize();
            // Another node may have won the race; whatever is stored is what everyone uses.
            store.init_server_state(SETUP_NAME, &fresh).await?
        }
    };
    ServerSetup::<Suite>::deserialize(&stored)
        .map(OpaqueSetup)
        .map_err(|_| ServerError::Corrupt("OPAQUE server setup"))
}

/// A login between its two steps.
pub(crate) struct PendingLogin {
    /// The account's row id and canonical name; `None` for an unknown username, which gets
    /// an indistinguishable answer and always fails at the finish step.
    pub(crate) account: Option<(i64, String)>,
    /// OPAQUE server state.
    pub(crate) state: ServerLogin<Suite>,
}

impl fmt::Debug for PendingLogin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingLogin")
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

/// Bytes of the handle the database keys a login by (the start of a login id).
const HANDLE: usize = 16;
/// Bytes of the key a login's state is sealed under (the rest of the login id).
const KEY: usize = 32;

/// Each key seals exactly one state, so a fixed nonce never repeats under a key.
fn cipher(key: &[u8]) -> (ChaCha20Poly1305, Nonce) {
    (
        ChaCha20Poly1305::new(Key::from_slice(key)),
        Nonce::default(),
    )
}

/// Keeps a started login for `LOGIN_TTL`; returns the login id for the client, or `None`
/// when `max` logins are open already.
pub(crate) async fn keep_login(
    store: &Store,
    account: Option<(i64, String)>,
    state: &ServerLogin<Suite>,
    now_ms: u64,
    max: usize,
) -> Result<Option<String>, Error> {
    let mut id = [0u8; HANDLE + KEY];
    OsRng
        .try_fill_bytes(&mut id)
        .map_err(|_| Error::Internal("the system random generator failed"))?;
    let (handle, key) = id.split_at(HANDLE);
    let (cipher, nonce) = cipher(key);
    let serialized = state.serialize();
    let sealed = cipher
        .encrypt(
            &nonce,
            Payload {
                msg: &serialized,
                aad: handle,
            },
        )
        .map_err(|_| Error::Internal("sealing a login failed"))?;
    let ttl = u64::try_from(LOGIN_TTL.as_millis()).unwrap_or(u64::MAX);
    let stored = StoredLogin { account, sealed };
    if !store
        .insert_login(handle, &stored, now_ms, now_ms.saturating_add(ttl), max)
        .await?
    {
        return Ok(None);
    }
    Ok(Some(B64::encode(&id)))
}

/// Takes the login with this id if it exists and has not expired; a second call finds
/// nothing.
pub(crate) async fn take_login(
    store: &Store,
    login_id: &str,
    now_ms: u64,
) -> Result<Option<PendingLogin>, Error> {
    let Some(id) = B64::decode(login_id).filter(|id| id.len() == HANDLE + KEY) else {
        return Ok(None);
    };
    let (handle, key) = id.split_at(HANDLE);
    let Some(stored) = store.take_login(handle, now_ms).await? else {
        return Ok(None);
    };
    let (cipher, nonce) = cipher(key);
    let Ok(opened) = cipher.decrypt(
        &nonce,
        Payload {
            msg: &stored.sealed,
            aad: handle,
        },
    ) else {
        // A forged key for a real handle: the login is gone either way.
        return Ok(None);
    };
    let state = ServerLogin::<Suite>::deserialize(&opened)
        .map_err(|_| Error::Internal("a stored login is unreadable"))?;
    Ok(Some(PendingLogin {
        account: stored.account,
        state,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use opaque_ke::{ClientLogin, CredentialRequest, ServerLoginParameters};

    fn state(setup: &ServerSetup<Suite>) -> ServerLogin<Suite> {
        let client = ClientLogin::<Suite>::start(&mut OsRng, b"pw").unwrap();
        let request = CredentialRequest::deserialize(&client.message.serialize()).unwrap();
        ServerLogin::start(
            &mut OsRng,
            setup,
            None,
            request,
            b"nobody",
            ServerLoginParameters::default(),
        )
        .unwrap()
        .state
    }

    #[tokio::test]
    async fn logins_are_single_use_sealed_and_expire() {
        for store in crate::store::test_support::each_backend("logins_are_single_use").await {
            let setup = ServerSetup::<Suite>::new(&mut OsRng);
            let ttl = u64::try_from(LOGIN_TTL.as_millis()).unwrap();
            let t0 = 1_000;
            let account = Some((7, "alice".to_owned()));
            let a = keep_login(&store, account.clone(), &state(&setup), t0, 2)
                .await
                .unwrap()
                .unwrap();
            let taken = take_login(&store, &a, t0).await.unwrap().unwrap();
            assert_eq!(taken.account, account);
            assert!(take_login(&store, &a, t0).await.unwrap().is_none());

            // The database alone cannot open a login: a wrong key finds nothing (and the
            // login is gone), and so does a malformed id.
            let b = keep_login(&store, None, &state(&setup), t0, 2)
                .await
                .unwrap()
                .unwrap();
            let mut forged = B64::decode(&b).unwrap();
            forged[HANDLE] ^= 1;
            assert!(
                take_login(&store, &B64::encode(&forged), t0)
                    .await
                    .unwrap()
                    .is_none()
            );
            assert!(take_login(&store, &b, t0).await.unwrap().is_none());
            assert!(take_login(&store, "short", t0).await.unwrap().is_none());

            // Expiry, and the cap on open logins.
            let c = keep_login(&store, None, &state(&setup), t0, 2)
                .await
                .unwrap()
                .unwrap();
            assert!(take_login(&store, &c, t0 + ttl).await.unwrap().is_none());
            keep_login(&store, None, &state(&setup), t0, 2)
                .await
                .unwrap()
                .unwrap();
            keep_login(&store, None, &state(&setup), t0, 2)
                .await
                .unwrap()
                .unwrap();
            assert!(
                keep_login(&store, None, &state(&setup), t0, 2)
                    .await
                    .unwrap()
                    .is_none()
            );
            assert!(
                keep_login(&store, None, &state(&setup), t0 + ttl, 2)
                    .await
                    .unwrap()
                    .is_some()
            );
            let report = store.sweep(t0 + 2 * ttl, u64::MAX, u64::MAX).await.unwrap();
            assert_eq!(report.logins, 3);
        }
    }

    #[tokio::test]
    async fn setup_is_generated_once() {
        let (store, _dir) = crate::store::test_support::temp_store().await;
        let a = load_setup(&store).await.unwrap();
        let b = load_setup(&store).await.unwrap();
        assert_eq!(a.0.serialize(), b.0.serialize());
        assert_eq!(format!("{a:?}"), "OpaqueSetup(<redacted>)");
    }
}
