//! How each participant's str0m `Rtc` is configured: ICE-lite with one host candidate, the
//! pure-Rust crypto backend, one DTLS certificate shared by all connections, Opus and VP8 only,
//! the standard header extensions (audio level, transport-wide sequence numbers), and bandwidth
//! estimation.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use str0m::bwe::Bitrate;
use str0m::config::{CryptoProvider, DtlsCert};
use str0m::{Candidate, Rtc};

use crate::config::SfuConfig;
use crate::error::SfuError;

/// What every `Rtc` of this SFU shares.
pub(crate) struct Engine {
    provider: Arc<CryptoProvider>,
    cert: DtlsCert,
    candidate: Candidate,
    bwe_initial: Option<Bitrate>,
}

impl Engine {
    /// Sets up the crypto backend and the one DTLS certificate. `advertised` is the address
    /// clients send to (the socket's, or the public one in front of it).
    pub(crate) fn new(advertised: SocketAddr, config: &SfuConfig) -> Result<Engine, SfuError> {
        let provider = str0m::crypto::from_feature_flags();
        // One certificate for every connection: DTLS keys each connection with fresh ECDHE, so
        // sharing the identity costs nothing and saves a key generation per join.
        let cert = provider
            .dtls_provider
            .generate_certificate()
            .ok_or_else(|| SfuError::Engine("no DTLS certificate could be generated".into()))?;
        let candidate = Candidate::host(advertised, "udp")
            .map_err(|e| SfuError::Engine(format!("bad host candidate {advertised}: {e}")))?;
        Ok(Engine {
            provider: Arc::new(provider),
            cert,
            candidate,
            bwe_initial: config
                .bandwidth_estimation
                .then(|| Bitrate::bps(config.initial_bitrate_bps)),
        })
    }

    /// The address in the host candidate, which is also the `destination` of every input.
    pub(crate) fn address(&self) -> SocketAddr {
        self.candidate.addr()
    }

    /// A fresh `Rtc` for one participant.
    pub(crate) fn rtc(&self, now: Instant) -> Rtc {
        let mut builder = Rtc::builder()
            .set_crypto_provider(self.provider.clone())
            .set_dtls_cert(self.cert.clone())
            .set_ice_lite(true)
            .clear_codecs()
            .enable_opus(true)
            .enable_vp8(true);
        if let Some(initial) = self.bwe_initial {
            builder = builder.enable_bwe(Some(initial));
        }
        let mut rtc = builder.build(now);
        // The candidate was validated in `new`; adding it to a fresh Rtc cannot be refused.
        let _ = rtc.add_local_candidate(self.candidate.clone());
        rtc
    }
}
