//! Server TLS: rustls with the `ring` provider, certificates reloaded when their files change.

use super::config::TlsConfig;
use super::{file_stamp, Stamp};
use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Why TLS settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("cannot read {0}: {1}")]
    Pem(String, rustls::pki_types::pem::Error),
    /// A PEM file held no certificate.
    #[error("{0} holds no PEM certificate")]
    NoCertificate(String),
    /// rustls refused the certificate, key or CA.
    #[error("{0}: {1}")]
    Rustls(String, rustls::Error),
    /// The client CA set could not make a verifier.
    #[error("client_ca_file {0}: {1}")]
    Verifier(String, rustls::server::VerifierBuilderError),
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let shown = path.display().to_string();
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Pem(shown.clone(), e))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(shown));
    }
    Ok(certs)
}

/// Builds a rustls server config from the files named in `cfg` (ALPN h2 and http/1.1).
pub fn load(cfg: &TlsConfig) -> Result<ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certs(&cfg.cert_file)?;
    let key_shown = cfg.key_file.display().to_string();
    let key = PrivateKeyDer::from_pem_file(&cfg.key_file)
        .map_err(|e| TlsError::Pem(key_shown.clone(), e))?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls("protocol versions".into(), e))?;
    let builder = match &cfg.client_ca_file {
        Some(ca) => {
            let shown = ca.display().to_string();
            let mut roots = RootCertStore::empty();
            for c in certs(ca)? {
                roots
                    .add(c)
                    .map_err(|e| TlsError::Rustls(shown.clone(), e))?;
            }
            let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let v = if cfg.require_client_cert {
                v
            } else {
                v.allow_unauthenticated()
            };
            builder.with_client_cert_verifier(v.build().map_err(|e| TlsError::Verifier(shown, e))?)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Rustls(key_shown, e))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The current server config of one receiver, swapped when its files change.
pub struct Tls {
    cfg: TlsConfig,
    current: ArcSwap<ServerConfig>,
    seen: Mutex<Vec<Stamp>>,
}

impl Tls {
    /// Loads the files now, so a bad certificate fails the start or reload that names it.
    pub fn new(cfg: &TlsConfig) -> Result<Self, TlsError> {
        let stamps = Self::stamps(cfg);
        Ok(Self {
            current: ArcSwap::from_pointee(load(cfg)?),
            cfg: cfg.clone(),
            seen: Mutex::new(stamps),
        })
    }

    fn stamps(cfg: &TlsConfig) -> Vec<Stamp> {
        std::iter::once(&cfg.cert_file)
            .chain(std::iter::once(&cfg.key_file))
            .chain(cfg.client_ca_file.iter())
            .map(|p| file_stamp(p))
            .collect()
    }

    /// The config new connections use.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current.load_full()
    }

    /// How often [`Tls::check`] runs.
    pub fn interval(&self) -> std::time::Duration {
        self.cfg.reload_interval.0
    }

    /// Reloads the files if any changed since the last look; a bad new set is logged and the
    /// old one kept (tried again once the files change again).
    pub fn check(&self, receiver: &str) {
        let now = Self::stamps(&self.cfg);
        {
            let mut seen = self
                .seen
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if *seen == now {
                return;
            }
            *seen = now;
        }
        match load(&self.cfg) {
            Ok(c) => {
                self.current.store(Arc::new(c));
                tracing::info!(receiver, cert_file = %self.cfg.cert_file.display(), "TLS certificate files changed: reloaded for new connections");
            }
            Err(e) => {
                tracing::warn!(receiver, error = %e, "TLS certificate files changed but cannot be loaded; new connections keep the previous certificate");
            }
        }
    }
}
