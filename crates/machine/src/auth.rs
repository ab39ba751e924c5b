//! The client side of OPAQUE (RFC 9807) registration and login: the password never leaves the
//! device, only blinded OPAQUE messages do. Pure computation: the driver carries the messages.

use nightjar_api::opaque::Suite;
use opaque_ke::errors::ProtocolError;
use opaque_ke::{
    ClientLogin, ClientLoginFinishParameters, ClientRegistration,
    ClientRegistrationFinishParameters, CredentialResponse, RegistrationResponse,
};
use rand_core::OsRng;
use zeroize::Zeroizing;

/// Why an OPAQUE step failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The username or password is wrong (the login did not verify).
    #[error("wrong username or password")]
    WrongPassword,
    /// The server's OPAQUE message is malformed or does not verify.
    #[error("OPAQUE: {0}")]
    Protocol(String),
}

type Result<T> = std::result::Result<T, AuthError>;

/// A password held only as long as needed; wiped on drop, never printed.
pub struct Password(Zeroizing<String>);

impl Password {
    /// Wraps a password typed by the user.
    pub fn new(text: String) -> Self {
        Self(Zeroizing::new(text))
    }

    fn bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

fn protocol(e: ProtocolError) -> AuthError {
    match e {
        ProtocolError::InvalidLoginError => AuthError::WrongPassword,
        other => AuthError::Protocol(format!("{other:?}")),
    }
}

/// Registration in progress.
pub struct Registration(ClientRegistration<Suite>);

/// Starts a registration; returns the state and the `RegistrationRequest` to send.
pub fn registration_start(password: &Password) -> Result<(Registration, Vec<u8>)> {
    let start =
        ClientRegistration::<Suite>::start(&mut OsRng, password.bytes()).map_err(protocol)?;
    Ok((
        Registration(start.state),
        start.message.serialize().to_vec(),
    ))
}

/// Finishes a registration with the server's `RegistrationResponse`; returns the
/// `RegistrationUpload` (the password file the server keeps).
pub fn registration_finish(
    state: Registration,
    password: &Password,
    response: &[u8],
) -> Result<Vec<u8>> {
    let response = RegistrationResponse::<Suite>::deserialize(response).map_err(protocol)?;
    let finish = state
        .0
        .finish(
            &mut OsRng,
            password.bytes(),
            response,
            ClientRegistrationFinishParameters::default(),
        )
        .map_err(protocol)?;
    Ok(finish.message.serialize().to_vec())
}

/// Login in progress.
pub struct Login(ClientLogin<Suite>);

/// Starts a login; returns the state and the `CredentialRequest` to send.
pub fn login_start(password: &Password) -> Result<(Login, Vec<u8>)> {
    let start = ClientLogin::<Suite>::start(&mut OsRng, password.bytes()).map_err(protocol)?;
    Ok((Login(start.state), start.message.serialize().to_vec()))
}

/// Finishes a login with the server's `CredentialResponse`; a wrong password (or unknown
/// username) is [`AuthError::WrongPassword`]. Returns the `CredentialFinalization` to send.
pub fn login_finish(state: Login, password: &Password, response: &[u8]) -> Result<Vec<u8>> {
    let response = CredentialResponse::<Suite>::deserialize(response).map_err(protocol)?;
    let finish = state
        .0
        .finish(
            &mut OsRng,
            password.bytes(),
            response,
            ClientLoginFinishParameters::default(),
        )
        .map_err(protocol)?;
    Ok(finish.message.serialize().to_vec())
}
