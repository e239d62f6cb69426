//! TLS for the HTTP and RTMP listeners (HTTPS, RTMPS): rustls on the aws-lc-rs provider (the crypto str0m and
//! reqwest already use), a certificate chain and key read from PEM files (`[tls] cert_file`, `key_file`) and read
//! again when either file changes (a certbot renewal): connections open at the time keep their session, new
//! handshakes get the new certificate. A renewal that cannot be read (a half-written file) keeps the old one and
//! is tried again at the next check.

mod selfsigned;

pub use selfsigned::{self_signed, SelfSigned};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, SystemTime};

/// Why a certificate or key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The certificate file holds no PEM `CERTIFICATE` block.
    #[error("{0}: no certificate in it (PEM \"CERTIFICATE\" blocks, the server's first, then its chain)")]
    NoCertificate(PathBuf),
    /// The key file holds no private key rustls can read.
    #[error("{0}: no private key in it (PEM PKCS#8, PKCS#1 RSA or SEC1 EC)")]
    NoKey(PathBuf),
    /// The key is of a kind the provider cannot sign with, or does not belong to the certificate.
    #[error("{path}: {reason}")]
    BadKey {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A certificate to trust cannot be used as a trust anchor.
    #[error("{path}: not a usable CA certificate ({reason})")]
    BadCa {
        /// The PEM file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// The certificate and key files a listener presents.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// PEM chain: the server's certificate first.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// Read a certificate chain and its key and check that they belong together.
pub fn load(files: &TlsFiles) -> Result<CertifiedKey, TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.into(),
            source,
        })
    };
    let (cert_pem, key_pem) = (read(&files.cert)?, read(&files.key)?);
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|_| TlsError::NoCertificate(files.cert.clone()))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(files.cert.clone()));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| TlsError::NoKey(files.key.clone()))?;
    let bad = |e: rustls::Error| TlsError::BadKey {
        path: files.key.clone(),
        reason: e.to_string(),
    };
    let signing = provider().key_provider.load_private_key(key).map_err(bad)?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|e| TlsError::BadKey {
        path: files.key.clone(),
        reason: format!(
            "the key does not belong to the first certificate of {} ({e})",
            files.cert.display()
        ),
    })?;
    Ok(certified)
}

/// The system's CA certificates (as `rustls-native-certs` finds them: `SSL_CERT_FILE`, `SSL_CERT_DIR`, then the
/// distribution's bundle), read once, when a TLS client first needs them. A gateway that never calls an https://
/// callback nor opens an https or rtsps source never reads them; one that does holds one copy (each reqwest
/// client used to load its own: four copies, ~0.4 MB of a gateway's private memory, at start).
fn system_roots() -> Arc<rustls::RootCertStore> {
    static ROOTS: OnceLock<Arc<rustls::RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            let native = rustls_native_certs::load_native_certs();
            for cert in native.certs {
                let _ = roots.add(cert);
            }
            if roots.is_empty() || !native.errors.is_empty() {
                tracing::warn!(roots = roots.len(), errors = ?native.errors, "system CA certificates");
            }
            Arc::new(roots)
        })
        .clone()
}

/// The PEM certificates of `path` (for `pull.ca_file`); an error when the file cannot be read or holds none.
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.into(),
        source,
    })?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|_| TlsError::NoCertificate(path.into()))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(path.into()));
    }
    Ok(certs)
}

/// A TLS client configuration (rtsps:// sources) on the same crypto provider as the listeners. A server is
/// trusted when its chain verifies for its name against the system's CAs (`system_roots`) and the CAs among the
/// PEM certificates in `extra`, or when it presents exactly one of the certificates in `extra` (pinned: a
/// camera's self-signed certificate, whatever its CA flag or names, which WebPKI would refuse as an end entity).
/// The handshake's signature is checked either way.
pub fn client_config(extra: Option<&Path>) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = system_roots();
    let mut pinned = Vec::new();
    if let Some(path) = extra {
        let certs = read_certificates(path)?;
        let store = Arc::make_mut(&mut roots);
        for cert in certs {
            // A certificate that cannot anchor a chain (a v1 certificate...) can still be pinned.
            let _ = store.add(cert.clone());
            pinned.push(cert);
        }
    }
    let provider = Arc::new(provider());
    let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .ok();
    let verifier = PinnedOrWebPki {
        webpki,
        pinned,
        algorithms: provider.signature_verification_algorithms,
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("aws-lc-rs supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(config)
}

/// The TLS of the gateway's HTTP clients (callbacks, pull pre-flights): the system's CAs, HTTP/1.1, built once
/// and shared (clones share the verifier, its roots and the session cache). reqwest takes it preconfigured, so
/// it does not load a platform verifier of its own per client.
pub fn https_client_config() -> rustls::ClientConfig {
    static CONFIG: OnceLock<rustls::ClientConfig> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut config = client_config(None).expect("no file to read without extra certificates");
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            config
        })
        .clone()
}

/// Server certificate checks of `client_config`: an exact pinned certificate, or WebPKI (chain and name).
#[derive(Debug)]
struct PinnedOrWebPki {
    /// `None` when there is no trust anchor at all (only pins then).
    webpki: Option<Arc<rustls::client::WebPkiServerVerifier>>,
    pinned: Vec<CertificateDer<'static>>,
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl rustls::client::danger::ServerCertVerifier for PinnedOrWebPki {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if self.pinned.iter().any(|p| p.as_ref() == end_entity.as_ref()) {
            return Ok(rustls::client::danger::ServerCertVerified::assertion());
        }
        match &self.webpki {
            Some(v) => v.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now),
            None => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The crypto provider of every TLS listener (aws-lc-rs).
fn provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::aws_lc_rs::default_provider()
}

/// What identifies a version of the files: their modification times and sizes.
type Stamp = Option<(SystemTime, u64, SystemTime, u64)>;

fn stamp(files: &TlsFiles) -> Stamp {
    let meta = |p: &Path| {
        std::fs::metadata(p)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())))
    };
    let (c, k) = (meta(&files.cert)?, meta(&files.key)?);
    Some((c.0, c.1, k.0, k.1))
}

/// The certificate the TLS listeners present, swapped in place when its files change.
pub struct Certificates {
    files: TlsFiles,
    current: RwLock<(Arc<CertifiedKey>, Stamp)>,
}

impl std::fmt::Debug for Certificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificates").field("files", &self.files).finish()
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().expect("certificates lock").0.clone())
    }
}

impl Certificates {
    /// Load `files` (an error if they cannot be used: the listener does not start).
    pub fn load(files: TlsFiles) -> Result<Arc<Certificates>, TlsError> {
        let before = stamp(&files);
        let key = load(&files)?;
        Ok(Arc::new(Certificates {
            current: RwLock::new((Arc::new(key), before)),
            files,
        }))
    }

    /// Load the files again if they changed since last read; whether the certificate was replaced.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let now = stamp(&self.files);
        if now == self.current.read().expect("certificates lock").1 {
            return Ok(false);
        }
        let key = load(&self.files)?;
        // Stamped as before the read: a file written while it was read differs from this at the next check and is
        // read once more.
        *self.current.write().expect("certificates lock") = (Arc::new(key), now);
        Ok(true)
    }

    /// Check the files every `every` until the task is aborted, reloading them when they change.
    pub async fn watch(self: Arc<Self>, every: Duration) {
        let mut failing = false;
        loop {
            tokio::time::sleep(every).await;
            // File reads off the async workers (a hung network mount must not stall them).
            let me = self.clone();
            let Ok(checked) = tokio::task::spawn_blocking(move || me.reload_if_changed()).await else {
                continue;
            };
            match checked {
                Ok(true) => {
                    failing = false;
                    tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded");
                }
                Ok(false) => failing = false,
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(error = %e, "the TLS files changed but cannot be used; keeping the previous certificate");
                }
                Err(_) => {}
            }
        }
    }

    /// The acceptor of a TLS listener presenting these certificates (TLS 1.2 and 1.3; `alpn` offered, if any).
    pub fn acceptor(self: &Arc<Self>, alpn: &[&[u8]]) -> tokio_rustls::TlsAcceptor {
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(provider()))
            .with_safe_default_protocol_versions()
            .expect("aws-lc-rs supports the default TLS versions")
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        p
    }

    #[test]
    fn a_chain_and_its_key_load_and_mismatches_are_explained() {
        let dir = tempfile::tempdir().unwrap();
        let a = self_signed(&["a.example".into()]).unwrap();
        let b = self_signed(&["b.example".into()]).unwrap();
        let files = TlsFiles {
            cert: write(dir.path(), "a.pem", &a.chain_pem),
            key: write(dir.path(), "a.key", &a.key_pem),
        };
        let loaded = load(&files).unwrap();
        assert_eq!(loaded.cert.len(), 2, "server certificate and its CA");

        let wrong_key = TlsFiles {
            key: write(dir.path(), "b.key", &b.key_pem),
            ..files.clone()
        };
        let e = load(&wrong_key).unwrap_err().to_string();
        assert!(e.contains("does not belong"), "{e}");
        let no_cert = TlsFiles {
            cert: write(dir.path(), "empty.pem", "not a certificate"),
            ..files.clone()
        };
        assert!(matches!(load(&no_cert), Err(TlsError::NoCertificate(_))));
        let no_key = TlsFiles {
            key: files.cert.clone(),
            ..files.clone()
        };
        assert!(matches!(load(&no_key), Err(TlsError::NoKey(_))));
        let missing = TlsFiles {
            cert: dir.path().join("missing.pem"),
            ..files
        };
        assert!(load(&missing).unwrap_err().to_string().contains("missing.pem"));
    }

    #[test]
    fn changed_files_are_reloaded_and_unusable_ones_keep_the_old_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let a = self_signed(&["a.example".into()]).unwrap();
        let files = TlsFiles {
            cert: write(dir.path(), "cert.pem", &a.chain_pem),
            key: write(dir.path(), "key.pem", &a.key_pem),
        };
        let certs = Certificates::load(files.clone()).unwrap();
        let first = |c: &Certificates| c.current.read().unwrap().0.cert[0].clone();
        let before = first(&certs);
        assert!(!certs.reload_if_changed().unwrap(), "unchanged");
        // A half-written renewal: an error, the old certificate stays.
        std::fs::write(&files.cert, "-----BEGIN CERTIFICATE-----\nAAAA").unwrap();
        assert!(certs.reload_if_changed().is_err());
        assert_eq!(first(&certs), before);
        // The whole renewal: the new certificate.
        let b = self_signed(&["b.example".into()]).unwrap();
        std::fs::write(&files.cert, &b.chain_pem).unwrap();
        std::fs::write(&files.key, &b.key_pem).unwrap();
        assert!(certs.reload_if_changed().unwrap());
        assert_ne!(first(&certs), before);
    }
}
