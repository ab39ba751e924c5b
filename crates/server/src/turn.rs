//! TURN credentials for calls: the secret shared with a coturn relay, read from its file at
//! start, and the short-lived credentials minted from it for `GET /v1/calls/turn`.
//!
//! coturn's `use-auth-secret` mode (the "TURN REST API" scheme) needs no database and no call
//! between the two servers: the username is `<expiry unix seconds>:<random id>`, the password
//! is `base64(HMAC-SHA1(secret, username))`, and coturn recomputes it and refuses a username
//! whose expiry has passed when an allocation is made. The random id names no account and no
//! device, because coturn logs usernames; nothing about a credential is stored here either.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac as _};
use nightjar_api::{B64, ErrorCode, TurnCredentials};
use rand_core::{OsRng, RngCore as _};
use sha1::Sha1;
use zeroize::Zeroizing;

use crate::config::TurnConfig;
use crate::error::{Error, ServerError};
use crate::secret_files::read_secret_file;

/// Random bytes in a username's id: enough that two credentials never share one.
const ID_BYTES: usize = 16;
/// Longest relay URL accepted.
const MAX_URL_LEN: usize = 512;
/// Longest secret accepted (coturn's own limit on `static-auth-secret` is lower still).
const MAX_SECRET_LEN: usize = 1024;

/// The secret shared with the relay; wiped when dropped, never printed.
struct TurnSecret(Zeroizing<Vec<u8>>);

impl fmt::Debug for TurnSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TurnSecret(<redacted>)")
    }
}

/// A configured relay: its URLs, the credential lifetime and the shared secret.
#[derive(Debug)]
pub(crate) struct Turn {
    urls: Vec<String>,
    ttl: Duration,
    secret: TurnSecret,
}

impl Turn {
    /// Checks `config` and reads its secret file. Refuses an empty URL list, a URL that is not
    /// `turn:`, `turns:`, `stun:` or `stuns:`, a lifetime out of bounds, and a secret file that
    /// cannot be read or holds no secret.
    pub(crate) fn load(config: &TurnConfig) -> Result<Self, ServerError> {
        if config.urls.is_empty() {
            return Err(ServerError::Config(
                "a TURN relay needs at least one --turn-url".into(),
            ));
        }
        for url in &config.urls {
            check_url(url)?;
        }
        if !(TurnConfig::MIN_TTL..=TurnConfig::MAX_TTL).contains(&config.ttl) {
            return Err(ServerError::Config(format!(
                "--turn-ttl-secs must be between {} and {} seconds",
                TurnConfig::MIN_TTL.as_secs(),
                TurnConfig::MAX_TTL.as_secs()
            )));
        }
        Ok(Self {
            urls: config.urls.clone(),
            ttl: config.ttl,
            secret: read_secret(&config.secret_file)?,
        })
    }

    /// Fresh credentials valid for the configured lifetime from `now_secs` (Unix seconds).
    pub(crate) fn credentials(&self, now_secs: u64) -> Result<TurnCredentials, Error> {
        let mut id = [0u8; ID_BYTES];
        OsRng
            .try_fill_bytes(&mut id)
            .map_err(|_| Error::Internal("the system random generator failed"))?;
        let ttl_secs = self.ttl.as_secs();
        let expires_at = now_secs.saturating_add(ttl_secs);
        let username = format!("{expires_at}:{}", B64::encode(&id));
        let credential = credential(&self.secret.0, &username)?;
        Ok(TurnCredentials {
            urls: self.urls.clone(),
            username,
            credential,
            ttl_secs,
            expires_at,
        })
    }
}

/// The refusal when no relay is configured.
pub(crate) fn not_configured() -> Error {
    Error::new(
        ErrorCode::NotConfigured,
        "this server has no TURN relay configured; calls connect directly or not at all",
    )
}

/// coturn's password for `username`: `base64(HMAC-SHA1(secret, username))`, standard base64
/// with padding.
fn credential(secret: &[u8], username: &str) -> Result<String, Error> {
    let mut mac = <Hmac<Sha1>>::new_from_slice(secret)
        .map_err(|_| Error::Internal("the TURN secret is not a usable HMAC key"))?;
    mac.update(username.as_bytes());
    Ok(STANDARD.encode(mac.finalize().into_bytes()))
}

fn check_url(url: &str) -> Result<(), ServerError> {
    let refused = |why: &str| ServerError::Config(format!("--turn-url {url:?}: {why}"));
    let (scheme, rest) = url
        .split_once(':')
        .ok_or_else(|| refused("expected turn:HOST[:PORT][?transport=udp|tcp]"))?;
    if !matches!(scheme, "turn" | "turns" | "stun" | "stuns") {
        return Err(refused("the scheme must be turn:, turns:, stun: or stuns:"));
    }
    if rest.is_empty() || rest.starts_with('?') || rest.starts_with(':') {
        return Err(refused("no host"));
    }
    if url.len() > MAX_URL_LEN || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(refused("too long, or holds whitespace"));
    }
    Ok(())
}

/// Reads the shared secret: the file's text without surrounding whitespace. The error names
/// the file, never its content.
fn read_secret(path: &Path) -> Result<TurnSecret, ServerError> {
    let text = read_secret_file(path, "the TURN secret file")?;
    let secret = text.trim_ascii();
    let refused = |why: &str| {
        ServerError::Config(format!(
            "the TURN secret file {} {why}: it must hold coturn's static-auth-secret alone",
            path.display()
        ))
    };
    if secret.is_empty() {
        return Err(refused("is empty"));
    }
    if secret.len() > MAX_SECRET_LEN {
        return Err(refused("is too long"));
    }
    if secret
        .iter()
        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err(refused("holds more than one word"));
    }
    Ok(TurnSecret(Zeroizing::new(secret.to_vec())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret_file(content: &[u8]) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut file, content).unwrap();
        file
    }

    fn config(file: &tempfile::NamedTempFile) -> TurnConfig {
        TurnConfig::new(vec!["turn:127.0.0.1:3478".into()], file.path())
    }

    #[test]
    fn credential_matches_coturns_scheme() {
        // Computed independently: printf %s 1433895918:alice | openssl dgst -sha1 -hmac north
        // -binary | base64
        assert_eq!(
            credential(b"north", "1433895918:alice").unwrap(),
            "RqMvcGPYTJMGThVLSi4amT4zFtI="
        );
    }

    #[test]
    fn credentials_are_fresh_and_expire() {
        let file = secret_file(b"  north\n");
        let turn = Turn::load(&config(&file)).unwrap();
        let now = 1_800_000_000;
        let a = turn.credentials(now).unwrap();
        let b = turn.credentials(now).unwrap();
        assert_eq!(a.ttl_secs, 600);
        assert_eq!(a.expires_at, now + 600);
        let (expiry, id) = a.username.split_once(':').unwrap();
        assert_eq!(expiry, "1800000600");
        assert_eq!(B64::decode(id).unwrap().len(), ID_BYTES);
        assert_ne!(a.username, b.username);
        assert_eq!(a.credential, credential(b"north", &a.username).unwrap());
        assert_eq!(a.urls, ["turn:127.0.0.1:3478"]);
    }

    #[test]
    fn the_secret_is_never_printed() {
        let file = secret_file(b"hunter2hunter2\n");
        let turn = Turn::load(&config(&file)).unwrap();
        assert_eq!(
            format!("{turn:?}"),
            r#"Turn { urls: ["turn:127.0.0.1:3478"], ttl: 600s, secret: TurnSecret(<redacted>) }"#
        );
    }

    #[test]
    fn bad_configurations_are_refused() {
        let good = secret_file(b"north");
        let message = |config: TurnConfig| match Turn::load(&config) {
            Err(ServerError::Config(message)) => message,
            other => panic!("{other:?}"),
        };
        for content in [&b""[..], b" \n\n", b"static-auth-secret north\n"] {
            let file = secret_file(content);
            let text = message(config(&file));
            assert!(text.contains("TURN secret file"), "{text}");
            assert!(!text.contains("north"), "{text}");
        }
        let missing = TurnConfig::new(vec!["turn:h".into()], "/nonexistent/turn-secret");
        assert!(message(missing).contains("cannot read"));
        for url in [
            "http://h",
            "turn:",
            "turn:?transport=udp",
            "turn:a b",
            "h:3478",
        ] {
            let mut c = config(&good);
            c.urls = vec![url.into()];
            assert!(message(c).contains("--turn-url"), "{url}");
        }
        let mut c = config(&good);
        c.urls.clear();
        assert!(message(c).contains("at least one"));
        let mut c = config(&good);
        c.ttl = Duration::from_secs(5);
        assert!(message(c).contains("--turn-ttl-secs"));
        for url in [
            "turn:h:3478?transport=udp",
            "turns:turn.example.org:5349?transport=tcp",
            "stun:[::1]:3478",
        ] {
            let mut c = config(&good);
            c.urls = vec![url.into()];
            Turn::load(&c).unwrap();
        }
    }
}
