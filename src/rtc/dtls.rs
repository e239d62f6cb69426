//! `SharedDtlsConfig`: str0m's DTLS (dimpl on aws-lc-rs) with one dimpl configuration for every session.
//!
//! str0m's own provider builds a new dimpl `Config` for each session, and building one runs dimpl's self-test of
//! its crypto provider: a test key exchange on each of P-256, P-384 and X25519, a signature verification, hashes,
//! PRF, HMAC and AEAD. That was ~0.95 ms of the ~1 ms a new `Rtc` cost, on the HTTP worker answering each WHEP or
//! WHIP offer, and 50 viewers joining at once paid it 50 times. The configuration holds settings only, the same for
//! every session (no server cookie, as str0m's own provider: only addresses that sent a STUN request with the
//! session's ufrag reach it; the MTU str0m asks for), and dimpl takes it behind an `Arc` ("shared by all
//! connections"): it is built once per MTU here. Each session still has its own DTLS state, random generator,
//! cookie secret and ephemeral keys.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;
use str0m::crypto::dtls::{
    DtlsCert, DtlsImplError, DtlsInstance, DtlsOutput, DtlsProvider, DtlsVersion, ProtocolVersion,
};
use str0m::crypto::{CryptoError, CryptoProvider};

/// Most configurations kept (one per distinct MTU; str0m asks with one MTU for every session here).
const KEPT_CONFIGS: usize = 4;

/// The DTLS provider of the engine's sessions: certificates from str0m's provider, sessions from a shared config.
#[derive(Debug)]
pub(super) struct SharedDtlsConfig {
    /// str0m's provider, for self-signed certificates.
    certificates: &'static dyn DtlsProvider,
    /// Configurations built so far, by the MTU they were built for.
    configs: Mutex<Vec<(Option<usize>, Arc<dimpl::Config>)>>,
}

impl SharedDtlsConfig {
    fn new(certificates: &'static dyn DtlsProvider) -> Self {
        SharedDtlsConfig {
            certificates,
            configs: Mutex::new(Vec::new()),
        }
    }

    /// The configuration for sessions of this MTU: built (and checked by dimpl) the first time only.
    fn config(&self, mtu: Option<usize>) -> Result<Arc<dimpl::Config>, CryptoError> {
        let mut configs = self.configs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, c)) = configs.iter().find(|(m, _)| *m == mtu) {
            return Ok(c.clone());
        }
        let mut builder = dimpl::Config::builder().use_server_cookie(false);
        if let Some(mtu) = mtu {
            builder = builder.mtu(mtu);
        }
        let config = Arc::new(
            builder
                .build()
                .map_err(|e| CryptoError::Other(format!("dimpl config creation failed: {e}")))?,
        );
        if configs.len() < KEPT_CONFIGS {
            configs.push((mtu, config.clone()));
        }
        Ok(config)
    }
}

impl DtlsProvider for SharedDtlsConfig {
    fn generate_certificate(&self) -> Option<DtlsCert> {
        self.certificates.generate_certificate()
    }

    fn new_dtls(
        &self,
        cert: &DtlsCert,
        now: Instant,
        dtls_version: DtlsVersion,
        mtu: Option<usize>,
    ) -> Result<Box<dyn DtlsInstance>, CryptoError> {
        let config = self.config(mtu)?;
        let dtls = match dtls_version {
            DtlsVersion::Dtls12 => dimpl::Dtls::new_12(config, cert.clone(), now),
            DtlsVersion::Dtls13 => dimpl::Dtls::new_13(config, cert.clone(), now),
            DtlsVersion::Auto => dimpl::Dtls::new_auto(config, cert.clone(), now),
            other => return Err(CryptoError::Other(format!("Unsupported DTLS version: {other}"))),
        };
        Ok(Box::new(SessionDtls(dtls)))
    }
}

/// The crypto provider for the engine's sessions: str0m's (aws-lc-rs), with [`SharedDtlsConfig`] for DTLS. One
/// per process, however many engines run in it.
pub(super) fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            let mut provider = str0m::crypto::from_feature_flags();
            let shared: &'static SharedDtlsConfig = Box::leak(Box::new(SharedDtlsConfig::new(provider.dtls_provider)));
            provider.dtls_provider = shared;
            Arc::new(provider)
        })
        .clone()
}

/// One session's DTLS state (dimpl), as str0m drives it.
struct SessionDtls(dimpl::Dtls);

impl std::fmt::Debug for SessionDtls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionDtls").finish()
    }
}

impl DtlsInstance for SessionDtls {
    fn set_active(&mut self, active: bool) {
        self.0.set_active(active);
    }

    fn handle_packet(&mut self, packet: &[u8]) -> Result<(), DtlsImplError> {
        self.0.handle_packet(packet)
    }

    fn poll_output<'a>(&mut self, buf: &'a mut [u8]) -> DtlsOutput<'a> {
        self.0.poll_output(buf)
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), DtlsImplError> {
        self.0.handle_timeout(now)
    }

    fn send_application_data(&mut self, data: &[u8]) -> Result<usize, DtlsImplError> {
        self.0.send_application_data(data)
    }

    fn is_active(&self) -> bool {
        self.0.is_active()
    }

    fn protocol_version(&self) -> Option<ProtocolVersion> {
        self.0.protocol_version()
    }

    fn is_closing(&self) -> bool {
        self.0.is_closing()
    }

    fn is_closed(&self) -> bool {
        self.0.is_closed()
    }

    fn close(&mut self) -> Result<(), DtlsImplError> {
        self.0.close()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_of_one_mtu_share_one_checked_config() {
        let shared = SharedDtlsConfig::new(str0m::crypto::from_feature_flags().dtls_provider);
        let cert = shared.generate_certificate().expect("a certificate");
        let now = Instant::now();
        let sessions: Vec<_> = (0..3)
            .map(|_| {
                shared
                    .new_dtls(&cert, now, DtlsVersion::Dtls12, Some(1150))
                    .expect("a DTLS session")
            })
            .collect();
        let other = shared
            .new_dtls(&cert, now, DtlsVersion::Dtls12, None)
            .expect("a DTLS session");
        assert_eq!(shared.configs.lock().unwrap().len(), 2, "built twice for four sessions");
        let a = shared.config(Some(1150)).unwrap();
        assert_eq!(a.mtu(), 1150);
        // The three live sessions of that MTU hold the one config (besides the table and `a`).
        assert!(Arc::strong_count(&a) >= 2 + 3, "{}", Arc::strong_count(&a));
        assert!(
            !Arc::ptr_eq(&a, &shared.config(None).unwrap()),
            "another MTU has its own"
        );
        drop((sessions, other));
        assert_eq!(Arc::strong_count(&a), 2);
    }
}
