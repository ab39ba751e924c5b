//! The OPAQUE (RFC 9807) cipher suite used for passwords, identical on server and clients.
//!
//! Ristretto255 OPRF, triple Diffie-Hellman over Ristretto255 with SHA-512, and Argon2id as the
//! key-stretching function, so a stolen server database allows no cheap offline guessing.

use opaque_ke::CipherSuite;

/// Nightjar's OPAQUE cipher suite.
pub struct Suite;

impl CipherSuite for Suite {
    type OprfCs = opaque_ke::Ristretto255;
    type KeyExchange = opaque_ke::TripleDh<opaque_ke::Ristretto255, sha2::Sha512>;
    type Ksf = argon2::Argon2<'static>;
}

#[cfg(test)]
mod tests {
    use opaque_ke::{
        ClientLogin, ClientLoginFinishParameters, ClientRegistration,
        ClientRegistrationFinishParameters, CredentialFinalization, CredentialRequest,
        RegistrationRequest, RegistrationUpload, ServerLogin, ServerLoginParameters,
        ServerRegistration, ServerSetup,
    };

    use rand_core::OsRng;

    use super::Suite;

    /// Full register + login round trip with the shared suite, as server and client run it.
    #[test]
    fn register_then_login() {
        let mut rng = OsRng;
        let setup = ServerSetup::<Suite>::new(&mut rng);
        let start = ClientRegistration::<Suite>::start(&mut rng, b"pw").unwrap();
        let request = RegistrationRequest::deserialize(&start.message.serialize()).unwrap();
        let response = ServerRegistration::<Suite>::start(&setup, request, b"alice").unwrap();
        let finish = start
            .state
            .finish(
                &mut rng,
                b"pw",
                response.message,
                ClientRegistrationFinishParameters::default(),
            )
            .unwrap();
        let upload = RegistrationUpload::<Suite>::deserialize(&finish.message.serialize()).unwrap();
        let record = ServerRegistration::finish(upload);

        let login = ClientLogin::<Suite>::start(&mut rng, b"pw").unwrap();
        let request = CredentialRequest::deserialize(&login.message.serialize()).unwrap();
        let server = ServerLogin::start(
            &mut rng,
            &setup,
            Some(record),
            request,
            b"alice",
            ServerLoginParameters::default(),
        )
        .unwrap();
        let done = login
            .state
            .finish(
                &mut rng,
                b"pw",
                server.message,
                ClientLoginFinishParameters::default(),
            )
            .unwrap();
        let fin = CredentialFinalization::deserialize(&done.message.serialize()).unwrap();
        let server_done = server
            .state
            .finish(fin, ServerLoginParameters::default())
            .unwrap();
        assert_eq!(server_done.session_key, done.session_key);
    }
}
