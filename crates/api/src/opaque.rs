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

    /// The password-hardening function every client runs is Argon2id with m = 19 MiB, t = 2,
    /// p = 1 (the suite's default KSF): a stolen password file costs that per guess. Pinned by
    /// output, since `argon2` exposes no getters: the default must hash exactly like an
    /// explicitly built Argon2id with those parameters, and unlike weaker ones.
    #[test]
    fn passwords_are_hardened_with_argon2id_19_mib_t_2() {
        use argon2::{Algorithm, Argon2, Params, Version};
        let hash = |ksf: &Argon2<'_>| {
            let mut out = [0u8; 32];
            ksf.hash_password_into(b"correct horse", b"nightjar-salt-16", &mut out)
                .unwrap();
            out
        };
        let default = hash(&<Suite as opaque_ke::CipherSuite>::Ksf::default());
        let pinned = |algorithm, m, t| {
            Argon2::new(
                algorithm,
                Version::V0x13,
                Params::new(m, t, 1, None).unwrap(),
            )
        };
        assert_eq!(default, hash(&pinned(Algorithm::Argon2id, 19 * 1024, 2)));
        assert_ne!(default, hash(&pinned(Algorithm::Argon2id, 19 * 1024, 1)));
        assert_ne!(default, hash(&pinned(Algorithm::Argon2id, 8 * 1024, 2)));
        assert_ne!(default, hash(&pinned(Algorithm::Argon2i, 19 * 1024, 2)));
    }

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
