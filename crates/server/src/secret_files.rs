//! The server's secret files: key files it creates itself (the OPAQUE setup, the franking key,
//! the directory's signing key) and secrets an operator hands it (the TURN secret, the
//! moderator token). Each is read whole into zeroized memory; errors and warnings name the
//! file, never its content; a file that other users can read is warned about.

use std::io::Write as _;
use std::path::Path;

use nightjar_api::B64;
use zeroize::Zeroizing;

use crate::error::ServerError;

/// Reads the secret file `what` ("the TURN secret file") whole, warning when other users may
/// read it. A missing file is an error that names it.
pub(crate) fn read_secret_file(path: &Path, what: &str) -> Result<Zeroizing<Vec<u8>>, ServerError> {
    let bytes = std::fs::read(path)
        .map(Zeroizing::new)
        .map_err(|e| ServerError::Config(format!("cannot read {what} {}: {e}", path.display())))?;
    warn_if_shared(path, what);
    Ok(bytes)
}

/// Reads a key file the server made: the secret in base64url on one line. `None` if there is
/// no file.
pub(crate) fn read_key_file(path: &Path) -> Result<Option<Zeroizing<Vec<u8>>>, ServerError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => Zeroizing::new(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    warn_if_shared(path, "a key file");
    std::str::from_utf8(&bytes)
        .ok()
        .and_then(|text| B64::decode(text.trim()))
        .map(|bytes| Some(Zeroizing::new(bytes)))
        .ok_or(ServerError::Corrupt("key file"))
}

/// Creates the key file with mode 0600; `false` if it exists already (another node won).
pub(crate) fn create_key_file(path: &Path, secret: &[u8]) -> Result<bool, ServerError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = match options.open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
        Err(e) => return Err(e.into()),
    };
    let text = Zeroizing::new(format!("{}\n", B64::encode(secret)));
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    Ok(true)
}

/// Logs a warning when users other than the owner may read or write the file at `path`.
fn warn_if_shared(path: &Path, what: &str) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o077 != 0) {
            tracing::warn!(path = %path.display(), "{what} is readable by other users; chmod 600 it");
        }
    }
    #[cfg(not(unix))]
    let _ = (path, what);
}
