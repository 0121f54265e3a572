//! The exporters' TLS client side, in one place: a `tls = { … }` table
//! ([`sluice_config::TlsClientConfig`]) becomes one rustls client configuration (ring, TLS 1.2 and
//! 1.3), and from it the connectors the OTLP gRPC, OTLP/HTTP and ClickHouse exporters use. Kafka
//! goes through librdkafka's OpenSSL instead (see the Kafka exporter).
//!
//! Building the configuration reads and parses every file and checks that a client key belongs to
//! its certificate, so `sluice validate` calls [`client_config`] too and a bad file is a
//! validation error with its key, not a failure at the first export.

use http::Uri;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use sluice_config::TlsClientConfig;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Why a `tls` table cannot be turned into a client configuration; [`TlsError::key`] names the
/// setting to fix.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("cannot load {path}: {message}")]
    File {
        /// The setting (`ca_file`, `cert_file`, `key_file`).
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// No `ca_file` and the system trust store holds no usable certificate.
    #[error("no ca_file and the system trust store has no usable certificate ({0}); set ca_file")]
    NoSystemRoots(String),
    /// The client key does not fit the certificate, or is of an unsupported kind.
    #[error("client certificate and key: {0}")]
    ClientAuth(rustls::Error),
    /// `server_name` is not a DNS name or IP address.
    #[error("invalid server_name {0:?}")]
    ServerName(String),
    /// rustls refused the assembled configuration.
    #[error("{0}")]
    Rustls(rustls::Error),
}

impl TlsError {
    /// The key below `tls` the problem is about (empty for the table itself).
    pub fn key(&self) -> &'static str {
        match self {
            Self::File { key, .. } => key,
            Self::NoSystemRoots(_) => "ca_file",
            Self::ClientAuth(_) => "key_file",
            Self::ServerName(_) => "server_name",
            Self::Rustls(_) => "",
        }
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certificates(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let fail = |message: String| TlsError::File {
        key,
        path: path.to_owned(),
        message,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| fail(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(e.to_string()))?;
    if certs.is_empty() {
        return Err(fail("no PEM certificate in it".to_owned()));
    }
    Ok(certs)
}

fn roots(cfg: &TlsClientConfig) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    match &cfg.ca_file {
        Some(path) => {
            let (_, bad) = store.add_parsable_certificates(certificates("ca_file", path)?);
            if store.is_empty() {
                return Err(TlsError::File {
                    key: "ca_file",
                    path: path.clone(),
                    message: format!("none of its {bad} certificate(s) is a usable CA"),
                });
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            store.add_parsable_certificates(found.certs);
            if store.is_empty() {
                let why = found
                    .errors
                    .first()
                    .map_or_else(|| "none found".to_owned(), |e| e.to_string());
                return Err(TlsError::NoSystemRoots(why));
            }
        }
    }
    Ok(store)
}

/// The rustls client configuration of a `tls` table (`None` = defaults: system roots, no client
/// certificate). ALPN is left empty; the connectors set it.
pub fn client_config(cfg: Option<&TlsClientConfig>) -> Result<ClientConfig, TlsError> {
    let default = TlsClientConfig::default();
    let cfg = cfg.unwrap_or(&default);
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Rustls)?;
    let builder = if cfg.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
    } else {
        let roots = Arc::new(roots(cfg)?);
        match &cfg.server_name {
            None => builder.with_root_certificates(roots),
            Some(name) => {
                let name = ServerName::try_from(name.trim().to_owned())
                    .map_err(|_| TlsError::ServerName(name.clone()))?;
                let inner = WebPkiServerVerifier::builder_with_provider(roots, provider)
                    .build()
                    .map_err(|e| TlsError::Rustls(rustls::Error::General(e.to_string())))?;
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(FixedName { inner, name }))
            }
        }
    };
    match (&cfg.cert_file, &cfg.key_file) {
        (Some(cert), Some(key)) => {
            let chain = certificates("cert_file", cert)?;
            let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::File {
                key: "key_file",
                path: key.clone(),
                message: e.to_string(),
            })?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(TlsError::ClientAuth)
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

/// Validation for exporters with a URL endpoint: the `tls` table's own problems, then, when
/// TLS will be used, whether the files make a working configuration — as (key, message).
pub fn problems(endpoint: &str, tls: Option<&TlsClientConfig>) -> Vec<(String, String)> {
    let mut out = sluice_config::tls::endpoint_problems(endpoint, tls);
    if out.is_empty() && sluice_config::tls::is_https(endpoint) {
        if let Err(e) = client_config(tls) {
            let key = match e.key() {
                "" => "tls".to_owned(),
                k => format!("tls.{k}"),
            };
            out.push((key, e.to_string()));
        }
    }
    out
}

/// A connector that speaks TLS to `https://` URIs and plain TCP to `http://` ones; for plain
/// endpoints the rustls side is an empty-trust configuration that is never used.
pub fn https_or_http(
    endpoint: &str,
    tls: Option<&TlsClientConfig>,
    http2: bool,
) -> Result<HttpsConnector<HttpConnector>, TlsError> {
    let config = if sluice_config::tls::is_https(endpoint) {
        client_config(tls)?
    } else {
        ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Rustls)?
            .with_root_certificates(RootCertStore::empty())
            .with_no_client_auth()
    };
    let builder = HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_or_http();
    Ok(if http2 {
        builder.enable_all_versions().wrap_connector(tcp())
    } else {
        builder.enable_http1().wrap_connector(tcp())
    })
}

/// The TCP side shared by every connector.
fn tcp() -> HttpConnector {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_keepalive(Some(Duration::from_secs(60)));
    http
}

/// What [`grpc_connector`] returns: rustls over TCP, the URI's scheme forced to `https`.
pub type GrpcConnector = tower::util::MapRequest<HttpsConnector<HttpConnector>, fn(Uri) -> Uri>;

/// The gRPC connector for an `https://` endpoint: TLS (ALPN `h2`) whatever scheme the URI it is
/// called with has. The channel is given the `http://` form of the endpoint, with the real one as
/// its origin, so tonic's own TLS layer (compiled in when any crate enables a `tls-*` feature)
/// never refuses or doubles it.
pub fn grpc_connector(tls: Option<&TlsClientConfig>) -> Result<GrpcConnector, TlsError> {
    let https = HttpsConnectorBuilder::new()
        .with_tls_config(client_config(tls)?)
        .https_only()
        .enable_http2()
        .wrap_connector(tcp());
    Ok(tower::util::MapRequest::new(
        https,
        force_https as fn(Uri) -> Uri,
    ))
}

/// `uri` with the `https` scheme (unchanged if it cannot be rebuilt; the TLS connector then
/// refuses it, so nothing goes out in plain text).
pub fn force_https(uri: Uri) -> Uri {
    let mut parts = uri.clone().into_parts();
    parts.scheme = Some(http::uri::Scheme::HTTPS);
    Uri::from_parts(parts).unwrap_or(uri)
}

/// `endpoint` with `https://` replaced by `http://` (the form tonic is given, see
/// [`grpc_connector`]).
pub fn as_http(endpoint: &str) -> String {
    match endpoint.get(..8) {
        Some(s) if s.eq_ignore_ascii_case("https://") => {
            format!("http://{}", endpoint.get(8..).unwrap_or_default())
        }
        _ => endpoint.to_owned(),
    }
}

/// `insecure_skip_verify`: any certificate is accepted, handshake signatures are still checked.
#[derive(Debug)]
struct AcceptAny(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `server_name`: the certificate is checked against the configured name instead of the
/// endpoint's host (an IP address, a load balancer's name).
#[derive(Debug)]
struct FixedName {
    inner: Arc<WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for FixedName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// An error with its causes (`client error (Connect): … invalid peer certificate: UnknownIssuer`):
/// the top level of a client error alone rarely says what failed.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = String::new();
    append_causes(&mut out, Some(e));
    out
}

/// Appends `e` and its sources to `out` (`: `-separated), skipping texts `out` already holds.
pub fn append_causes(out: &mut String, mut e: Option<&(dyn std::error::Error + 'static)>) {
    while let Some(cur) = e {
        let text = cur.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
        e = cur.source();
    }
}
