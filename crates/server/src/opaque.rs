//! OPAQUE on the server: the long-term server setup (kept in a key file outside the database)
//! and the login attempts between their start and finish steps (single use, five minutes).
//! The server never sees a password, and a stolen database allows no offline guessing at all:
//! guessing needs the OPRF seed, which is not in the database.
//!
//! The setup lives in a key file (mode 0600), `opaque-server-setup.key` in the data directory
//! by default or the file named by `ServerConfig::opaque_key_file`; nodes sharing a database
//! share that file. A setup found in the database (servers from before this file existed) is
//! moved into the file and deleted from the database. A missing file while accounts exist is a
//! configuration error, never a silent new setup (which would invalidate every password).
//!
//! A started login is kept in the database, so any node can finish a login another node
//! started. Its state would let whoever reads it finish the login, so it is stored sealed
//! (ChaCha20-Poly1305) under a fresh key that is part of the login id the client gets: the id
//! is `handle ‖ key`, the database sees only the handle and the sealed state. Every login also
//! carries a fresh challenge that an existing device signs with its device key.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use chacha20poly1305::aead::{Aead as _, KeyInit as _, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use nightjar_api::B64;
use nightjar_api::opaque::Suite;
use opaque_ke::{ServerLogin, ServerSetup};
use rand_core::{OsRng, RngCore as _};
use zeroize::Zeroizing;

use crate::config::ServerConfig;
use crate::error::{Error, ServerError};
use crate::secret_files::{create_key_file, read_key_file};
use crate::store::{LoginCaps, Store, StoredLogin};

/// Name of the server setup as older servers stored it in the database.
const SETUP_NAME: &str = "opaque_server_setup_v1";

/// Name of the key file in the data directory when none is configured.
pub(crate) const KEY_FILE_NAME: &str = "opaque-server-setup.key";

/// How long a started login may be finished.
pub(crate) const LOGIN_TTL: Duration = Duration::from_secs(5 * 60);

/// The server's OPAQUE keys (OPRF seed and key-exchange key pair); never printed.
pub(crate) struct OpaqueSetup(pub(crate) ServerSetup<Suite>);

impl OpaqueSetup {
    /// What a pending login stores for the client's address group (see `rate_limit`): a
    /// keyed hash, so the per-address cap works on every node (they share the key file) and a
    /// copy of the database holds no IP address. The key is the OPAQUE setup, which lives
    /// outside the database.
    pub(crate) fn address_tag(&self, group: std::net::IpAddr) -> String {
        use sha2::{Digest as _, Sha256};
        use zeroize::Zeroize as _;
        let mut setup = self.0.serialize();
        let mut hash = Sha256::new();
        hash.update(b"nightjar login address v1\0");
        hash.update(setup.as_slice());
        setup.as_mut_slice().zeroize();
        match group {
            std::net::IpAddr::V4(ip) => hash.update(ip.octets()),
            std::net::IpAddr::V6(ip) => hash.update(ip.octets()),
        }
        B64::encode(&hash.finalize()[..16])
    }
}

impl fmt::Debug for OpaqueSetup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OpaqueSetup(<redacted>)")
    }
}

/// Where the key file is for `config`.
pub(crate) fn key_file_path(config: &ServerConfig) -> PathBuf {
    config
        .opaque_key_file
        .clone()
        .unwrap_or_else(|| config.data_dir.join(KEY_FILE_NAME))
}

fn parse_setup(bytes: &[u8]) -> Result<OpaqueSetup, ServerError> {
    ServerSetup::<Suite>::deserialize(bytes)
        .map(OpaqueSetup)
        .map_err(|_| ServerError::Corrupt("OPAQUE server setup"))
}

/// Loads the server setup from its key file; moves one found in the database there, or
/// generates one for a server without accounts.
pub(crate) async fn load_setup(
    store: &Store,
    config: &ServerConfig,
) -> Result<OpaqueSetup, ServerError> {
    let path = key_file_path(config);
    let in_database = store.server_state(SETUP_NAME).await?.map(Zeroizing::new);
    if let Some(bytes) = read_key_file(&path)? {
        let setup = parse_setup(&bytes)?;
        if let Some(old) = in_database {
            if *old != *bytes {
                tracing::warn!(
                    "the database held a different OPAQUE setup than the key file; the key file wins"
                );
            }
            store.delete_server_state(SETUP_NAME).await?;
            tracing::warn!(
                "deleted the OPAQUE server setup from the database (the key file has it)"
            );
        }
        return Ok(setup);
    }
    if let Some(bytes) = in_database {
        let setup = parse_setup(&bytes)?;
        if !create_key_file(&path, &bytes)? {
            // Another node moved it first; use what it wrote.
            let written = read_key_file(&path)?.ok_or(ServerError::Corrupt("OPAQUE key file"))?;
            return parse_setup(&written);
        }
        store.delete_server_state(SETUP_NAME).await?;
        tracing::warn!(
            path = %path.display(),
            "moved the OPAQUE server setup out of the database into the key file; keep this file \
             secret and give every node the same one"
        );
        return Ok(setup);
    }
    if store.has_accounts().await? {
        return Err(ServerError::Config(format!(
            "the OPAQUE key file {} is missing but the database has accounts: restore the file \
             (or point --opaque-key-file at the one the other nodes use); a new one would \
             invalidate every password",
            path.display()
        )));
    }
    let fresh = Zeroizing::new(ServerSetup::<Suite>::new(&mut OsRng).serialize().to_vec());
    if create_key_file(&path, &fresh)? {
        tracing::info!(path = %path.display(), "created the OPAQUE key file");
        return parse_setup(&fresh);
    }
    let written = read_key_file(&path)?.ok_or(ServerError::Corrupt("OPAQUE key file"))?;
    parse_setup(&written)
}

/// What a login proves once finished.
pub(crate) enum LoginKind {
    /// A password login (OPAQUE server state).
    Password(ServerLogin<Suite>),
    /// A device-key sign-in of this device id, with no password.
    DeviceKey {
        /// The device signing in.
        device_id: String,
    },
}

/// A login between its two steps.
pub(crate) struct PendingLogin {
    /// The account's row id and canonical name; `None` for an unknown username, which gets
    /// an indistinguishable answer and always fails at the finish step.
    pub(crate) account: Option<(i64, String)>,
    /// The fresh challenge an existing device signs.
    pub(crate) challenge: [u8; CHALLENGE],
    /// What the login proves.
    pub(crate) kind: LoginKind,
}

impl fmt::Debug for PendingLogin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingLogin")
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

/// A login as handed to the client.
#[derive(Debug)]
pub(crate) struct StartedLogin {
    /// The login id for the finish step.
    pub(crate) login_id: String,
    /// The challenge to sign.
    pub(crate) challenge: [u8; CHALLENGE],
}

/// Bytes of the handle the database keys a login by (the start of a login id).
const HANDLE: usize = 16;
/// Bytes of the key a login's state is sealed under (the rest of the login id).
const KEY: usize = 32;
/// Bytes of a login challenge.
pub(crate) const CHALLENGE: usize = 32;
const KIND_PASSWORD: u8 = 0;
const KIND_DEVICE_KEY: u8 = 1;

/// Each key seals exactly one state, so a fixed nonce never repeats under a key.
fn cipher(key: &[u8]) -> (ChaCha20Poly1305, Nonce) {
    (
        ChaCha20Poly1305::new(Key::from_slice(key)),
        Nonce::default(),
    )
}

fn random<const N: usize>() -> Result<[u8; N], Error> {
    let mut bytes = [0u8; N];
    OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|_| Error::Internal("the system random generator failed"))?;
    Ok(bytes)
}

/// Keeps a started login from client address group `address` for `LOGIN_TTL`; returns its id
/// and challenge for the client, or `None` when a cap of open logins is reached.
pub(crate) async fn keep_login(
    store: &Store,
    account: Option<(i64, String)>,
    kind: &LoginKind,
    address: &str,
    now_ms: u64,
    caps: LoginCaps,
) -> Result<Option<StartedLogin>, Error> {
    let id = random::<{ HANDLE + KEY }>()?;
    let challenge = random::<CHALLENGE>()?;
    let (handle, key) = id.split_at(HANDLE);
    let (cipher, nonce) = cipher(key);
    let mut plain = Zeroizing::new(Vec::with_capacity(1 + CHALLENGE + 256));
    match kind {
        LoginKind::Password(state) => {
            plain.push(KIND_PASSWORD);
            plain.extend_from_slice(&challenge);
            plain.extend_from_slice(&state.serialize());
        }
        LoginKind::DeviceKey { device_id } => {
            plain.push(KIND_DEVICE_KEY);
            plain.extend_from_slice(&challenge);
            plain.extend_from_slice(device_id.as_bytes());
        }
    }
    let sealed = cipher
        .encrypt(
            &nonce,
            Payload {
                msg: &plain,
                aad: handle,
            },
        )
        .map_err(|_| Error::Internal("sealing a login failed"))?;
    let ttl = u64::try_from(LOGIN_TTL.as_millis()).unwrap_or(u64::MAX);
    let stored = StoredLogin { account, sealed };
    if !store
        .insert_login(
            handle,
            &stored,
            address,
            now_ms,
            now_ms.saturating_add(ttl),
            caps,
        )
        .await?
    {
        return Ok(None);
    }
    Ok(Some(StartedLogin {
        login_id: B64::encode(&id),
        challenge,
    }))
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
    let opened = Zeroizing::new(opened);
    let unreadable = || Error::Internal("a stored login is unreadable");
    let (&kind, rest) = opened.split_first().ok_or_else(unreadable)?;
    let (challenge, payload) = rest
        .split_first_chunk::<CHALLENGE>()
        .ok_or_else(unreadable)?;
    let kind = match kind {
        KIND_PASSWORD => LoginKind::Password(
            ServerLogin::<Suite>::deserialize(payload).map_err(|_| unreadable())?,
        ),
        KIND_DEVICE_KEY => LoginKind::DeviceKey {
            device_id: String::from_utf8(payload.to_vec()).map_err(|_| unreadable())?,
        },
        _ => return Err(unreadable()),
    };
    Ok(Some(PendingLogin {
        account: stored.account,
        challenge: *challenge,
        kind,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use opaque_ke::{ClientLogin, CredentialRequest, ServerLoginParameters};
    use std::path::Path;

    fn state(setup: &ServerSetup<Suite>) -> LoginKind {
        let client = ClientLogin::<Suite>::start(&mut OsRng, b"pw").unwrap();
        let request = CredentialRequest::deserialize(&client.message.serialize()).unwrap();
        LoginKind::Password(
            ServerLogin::start(
                &mut OsRng,
                setup,
                None,
                request,
                b"nobody",
                ServerLoginParameters::default(),
            )
            .unwrap()
            .state,
        )
    }

    const CAPS: LoginCaps = LoginCaps {
        total: Some(3),
        per_address: 2,
    };

    #[test]
    fn login_addresses_are_stored_as_keyed_tags() {
        let one = OpaqueSetup(ServerSetup::<Suite>::new(&mut OsRng));
        let other = OpaqueSetup(ServerSetup::<Suite>::new(&mut OsRng));
        let ip: std::net::IpAddr = "192.0.2.7".parse().unwrap();
        let tag = one.address_tag(ip);
        // Stable under one key (the cap counts per address), unrelated under another, and
        // nothing of the address in it.
        assert_eq!(tag, one.address_tag(ip));
        assert_ne!(tag, one.address_tag("192.0.2.8".parse().unwrap()));
        assert_ne!(tag, other.address_tag(ip));
        assert!(!tag.contains("192"), "{tag}");
        assert_eq!(tag.len(), 22);
    }

    #[tokio::test]
    async fn logins_are_single_use_sealed_and_expire() {
        for store in crate::store::test_support::each_backend("logins_are_single_use").await {
            let setup = ServerSetup::<Suite>::new(&mut OsRng);
            let ttl = u64::try_from(LOGIN_TTL.as_millis()).unwrap();
            let t0 = 1_000;
            let account = Some((7, "alice".to_owned()));
            let a = keep_login(&store, account.clone(), &state(&setup), "a", t0, CAPS)
                .await
                .unwrap()
                .unwrap();
            let taken = take_login(&store, &a.login_id, t0).await.unwrap().unwrap();
            assert_eq!(taken.account, account);
            assert_eq!(taken.challenge, a.challenge);
            assert!(matches!(taken.kind, LoginKind::Password(_)));
            assert!(take_login(&store, &a.login_id, t0).await.unwrap().is_none());

            // A device-key login keeps its device id and challenge.
            let device = LoginKind::DeviceKey {
                device_id: "0000000000000001".into(),
            };
            let d = keep_login(&store, account.clone(), &device, "a", t0, CAPS)
                .await
                .unwrap()
                .unwrap();
            let taken = take_login(&store, &d.login_id, t0).await.unwrap().unwrap();
            assert_eq!(taken.challenge, d.challenge);
            assert_ne!(d.challenge, a.challenge);
            assert!(
                matches!(&taken.kind, LoginKind::DeviceKey { device_id } if device_id == "0000000000000001")
            );

            // The database alone cannot open a login: a wrong key finds nothing (and the
            // login is gone), and so does a malformed id.
            let b = keep_login(&store, None, &state(&setup), "a", t0, CAPS)
                .await
                .unwrap()
                .unwrap();
            let mut forged = B64::decode(&b.login_id).unwrap();
            forged[HANDLE] ^= 1;
            assert!(
                take_login(&store, &B64::encode(&forged), t0)
                    .await
                    .unwrap()
                    .is_none()
            );
            assert!(take_login(&store, &b.login_id, t0).await.unwrap().is_none());
            assert!(take_login(&store, "short", t0).await.unwrap().is_none());

            // Expiry, and the caps on open logins: per address first, then the total.
            let c = keep_login(&store, None, &state(&setup), "a", t0, CAPS)
                .await
                .unwrap()
                .unwrap();
            assert!(
                take_login(&store, &c.login_id, t0 + ttl)
                    .await
                    .unwrap()
                    .is_none()
            );
            for _ in 0..2 {
                keep_login(&store, None, &state(&setup), "a", t0, CAPS)
                    .await
                    .unwrap()
                    .unwrap();
            }
            // Address "a" is full; another address is not.
            assert!(
                keep_login(&store, None, &state(&setup), "a", t0, CAPS)
                    .await
                    .unwrap()
                    .is_none()
            );
            keep_login(&store, None, &state(&setup), "b", t0, CAPS)
                .await
                .unwrap()
                .unwrap();
            // The total backstop (3) is reached; without it, "c" still gets in.
            assert!(
                keep_login(&store, None, &state(&setup), "c", t0, CAPS)
                    .await
                    .unwrap()
                    .is_none()
            );
            let uncapped = LoginCaps {
                total: None,
                ..CAPS
            };
            assert!(
                keep_login(&store, None, &state(&setup), "c", t0, uncapped)
                    .await
                    .unwrap()
                    .is_some()
            );
            assert!(
                keep_login(&store, None, &state(&setup), "a", t0 + ttl, CAPS)
                    .await
                    .unwrap()
                    .is_some()
            );
            let report = store
                .sweep(
                    t0 + 2 * ttl,
                    crate::store::Lifetimes {
                        message_ttl_ms: u64::MAX,
                        pending_ttl_ms: u64::MAX,
                        claim_window_ms: u64::MAX,
                    },
                )
                .await
                .unwrap();
            assert_eq!(report.logins, 5);
        }
    }

    fn config(dir: &Path) -> ServerConfig {
        ServerConfig::new(dir, "127.0.0.1:0".parse().unwrap())
    }

    #[tokio::test]
    async fn setup_lives_in_a_private_key_file_not_in_the_database() {
        let (store, dir) = crate::store::test_support::temp_store().await;
        let config = config(dir.path());
        let a = load_setup(&store, &config).await.unwrap();
        let b = load_setup(&store, &config).await.unwrap();
        assert_eq!(a.0.serialize(), b.0.serialize());
        assert_eq!(format!("{a:?}"), "OpaqueSetup(<redacted>)");
        assert!(store.server_state(SETUP_NAME).await.unwrap().is_none());
        let path = dir.path().join(KEY_FILE_NAME);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Another file location is honoured.
        let elsewhere = tempfile::tempdir().unwrap();
        let mut custom = config.clone();
        custom.opaque_key_file = Some(elsewhere.path().join("shared.key"));
        std::fs::copy(&path, elsewhere.path().join("shared.key")).unwrap();
        let c = load_setup(&store, &custom).await.unwrap();
        assert_eq!(a.0.serialize(), c.0.serialize());
    }

    #[tokio::test]
    async fn a_setup_in_the_database_moves_to_the_key_file() {
        let (store, dir) = crate::store::test_support::temp_store().await;
        let old = ServerSetup::<Suite>::new(&mut OsRng).serialize().to_vec();
        store.init_server_state(SETUP_NAME, &old).await.unwrap();
        let config = config(dir.path());
        let moved = load_setup(&store, &config).await.unwrap();
        assert_eq!(moved.0.serialize().to_vec(), old);
        assert!(store.server_state(SETUP_NAME).await.unwrap().is_none());
        let again = load_setup(&store, &config).await.unwrap();
        assert_eq!(again.0.serialize().to_vec(), old);
    }
}
