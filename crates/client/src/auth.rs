//! The client side of OPAQUE (RFC 9807) registration and login: the password never leaves this
//! process, only blinded OPAQUE messages do.

use nightjar_api::opaque::Suite;
use opaque_ke::errors::ProtocolError;
use opaque_ke::{
    ClientLogin, ClientLoginFinishParameters, ClientRegistration,
    ClientRegistrationFinishParameters, CredentialResponse, RegistrationResponse,
};
use rand_core::OsRng;
use zeroize::Zeroizing;

use crate::error::{Error, Result};

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

fn protocol(e: ProtocolError) -> Error {
    match e {
        ProtocolError::InvalidLoginError => Error::WrongPassword,
        other => Error::Protocol(format!("OPAQUE: {other:?}")),
    }
}

/// Registration in progress.
pub(crate) struct Registration(ClientRegistration<Suite>);

/// Starts a registration; returns the state and the `RegistrationRequest` to send.
pub(crate) fn registration_start(password: &Password) -> Result<(Registration, Vec<u8>)> {
    let start =
        ClientRegistration::<Suite>::start(&mut OsRng, password.bytes()).map_err(protocol)?;
    Ok((
        Registration(start.state),
        start.message.serialize().to_vec(),
    ))
}

/// Finishes a registration with the server's `RegistrationResponse`; returns the
/// `RegistrationUpload` (the password file the server keeps).
pub(crate) fn registration_finish(
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
pub(crate) struct Login(ClientLogin<Suite>);

/// Starts a login; returns the state and the `CredentialRequest` to send.
pub(crate) fn login_start(password: &Password) -> Result<(Login, Vec<u8>)> {
    let start = ClientLogin::<Suite>::start(&mut OsRng, password.bytes()).map_err(protocol)?;
    Ok((Login(start.state), start.message.serialize().to_vec()))
}

/// Finishes a login with the server's `CredentialResponse`; a wrong password (or unknown
/// username) is [`Error::WrongPassword`]. Returns the `CredentialFinalization` to send.
pub(crate) fn login_finish(state: Login, password: &Password, response: &[u8]) -> Result<Vec<u8>> {
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
