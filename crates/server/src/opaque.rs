//! OPAQUE on the server: the long-term server setup (generated once, kept in the database) and
//! the login attempts between `login/start` and `login/finish` (in memory, single use, five
//! minutes). The server never sees a password, and a stolen database allows no offline
//! guessing cheaper than running Argon2id on the client side of OPAQUE for every guess.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nightjar_api::B64;
use nightjar_api::opaque::Suite;
use opaque_ke::ServerSetup;
use rand_core::{OsRng, RngCore as _};

use crate::error::ServerError;
use crate::store::Store;

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
    pub(crate) state: opaque_ke::ServerLogin<Suite>,
    expires: Instant,
}

impl fmt::Debug for PendingLogin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingLogin")
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

/// Open logins keyed by `login_id`.
#[derive(Debug)]
pub(crate) struct PendingLogins {
    max: usize,
    logins: Mutex<HashMap<String, PendingLogin>>,
}

impl PendingLogins {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            logins: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, PendingLogin>> {
        self.logins.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps a started login; returns its id, or `None` when too many are open.
    pub(crate) fn insert(
        &self,
        account: Option<(i64, String)>,
        state: opaque_ke::ServerLogin<Suite>,
        now: Instant,
    ) -> Option<String> {
        let mut id = [0u8; 16];
        OsRng.try_fill_bytes(&mut id).ok()?;
        let id = B64::encode(&id);
        let mut logins = self.lock();
        if logins.len() >= self.max {
            logins.retain(|_, l| l.expires > now);
            if logins.len() >= self.max {
                return None;
            }
        }
        logins.insert(
            id.clone(),
            PendingLogin {
                account,
                state,
                expires: now + LOGIN_TTL,
            },
        );
        Some(id)
    }

    /// Removes and returns a login that has not expired. A second call finds nothing.
    pub(crate) fn take(&self, id: &str, now: Instant) -> Option<PendingLogin> {
        self.lock().remove(id).filter(|l| l.expires > now)
    }

    /// Forgets expired logins.
    pub(crate) fn prune(&self, now: Instant) {
        self.lock().retain(|_, l| l.expires > now);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opaque_ke::{ClientLogin, CredentialRequest, ServerLogin, ServerLoginParameters};

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

    #[test]
    fn logins_are_single_use_and_expire() {
        let setup = ServerSetup::<Suite>::new(&mut OsRng);
        let logins = PendingLogins::new(2);
        let t0 = Instant::now();
        let a = logins.insert(None, state(&setup), t0).unwrap();
        assert!(logins.take(&a, t0).is_some());
        assert!(logins.take(&a, t0).is_none());
        let b = logins.insert(None, state(&setup), t0).unwrap();
        assert!(logins.take(&b, t0 + LOGIN_TTL).is_none());
        // Capacity: full of live logins refuses, expired ones make room.
        logins.insert(None, state(&setup), t0).unwrap();
        logins.insert(None, state(&setup), t0).unwrap();
        assert!(logins.insert(None, state(&setup), t0).is_none());
        assert!(logins.insert(None, state(&setup), t0 + LOGIN_TTL).is_some());
        logins.prune(t0 + LOGIN_TTL * 2);
        assert_eq!(logins.len(), 0);
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
