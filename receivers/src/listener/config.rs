//! Settings every receiver listener shares: `limits`, `tls` and `auth` sub-tables.

use serde::Deserialize;
use sluice_config::HumanDuration;
use sluice_core::component::Problems;
use std::path::PathBuf;
use std::time::Duration;

/// Limits that keep one client from holding a listener's connections, streams or time.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// How long a client may take from connecting (or finishing its last request) to sending a
    /// request's full header; also bounds the TLS handshake. Slowloris clients are cut off here.
    pub header_read_timeout: HumanDuration,
    /// How long a request's body may take to arrive, from its header on.
    pub body_read_timeout: HumanDuration,
    /// How long a request may take in all before it is answered 408 / `DEADLINE_EXCEEDED`.
    pub request_timeout: HumanDuration,
    /// An idle keep-alive connection (no request in flight) is closed after this.
    pub idle_timeout: HumanDuration,
    /// Connections one listener holds at once; more are accepted and closed at once.
    pub max_connections: usize,
    /// HTTP/2 streams one connection may have open at once (advertised in SETTINGS).
    pub max_concurrent_streams: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read_timeout: HumanDuration::from_secs(10),
            body_read_timeout: HumanDuration::from_secs(30),
            request_timeout: HumanDuration::from_secs(60),
            idle_timeout: HumanDuration::from_secs(120),
            max_connections: 10_000,
            max_concurrent_streams: 100,
        }
    }
}

/// TLS on a receiver's listeners (rustls).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// PEM CA certificates that client certificates must chain to; set = mTLS.
    pub client_ca_file: Option<PathBuf>,
    /// With `client_ca_file`: whether a client without a certificate is turned away (default) or
    /// let in (then `auth` decides).
    #[serde(default = "yes")]
    pub require_client_cert: bool,
    /// How often the files are checked for changes; changed files are loaded for new connections.
    #[serde(default = "default_tls_reload")]
    pub reload_interval: HumanDuration,
}

fn yes() -> bool {
    true
}

fn default_tls_reload() -> HumanDuration {
    HumanDuration::from_secs(30)
}

fn default_auth_reload() -> HumanDuration {
    HumanDuration::from_secs(10)
}

/// Who may send: bearer tokens and/or verified client certificates.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// A file with one token per line (blank lines and `#` comments skipped); re-read on change.
    pub bearer_tokens_file: Option<PathBuf>,
    /// An environment variable holding tokens, separated by commas or newlines.
    pub bearer_tokens_env: Option<String>,
    /// Whether a client certificate verified against `tls.client_ca_file` is enough on its own.
    #[serde(default)]
    pub client_certificates: bool,
    /// How often `bearer_tokens_file` is checked for changes.
    #[serde(default = "default_auth_reload")]
    pub reload_interval: HumanDuration,
}

/// Checks `limits`, `tls` and `auth` of one receiver; `accept_timeout` must fit in a request.
pub fn validate(
    limits: &Limits,
    tls: Option<&TlsConfig>,
    auth: Option<&AuthConfig>,
    accept_timeout: Duration,
    problems: &mut Problems,
) {
    for (key, d) in [
        ("limits.header_read_timeout", limits.header_read_timeout),
        ("limits.body_read_timeout", limits.body_read_timeout),
        ("limits.request_timeout", limits.request_timeout),
        ("limits.idle_timeout", limits.idle_timeout),
    ] {
        if d.0.is_zero() {
            problems.at(key, "must be greater than 0");
        }
    }
    if limits.request_timeout.0 <= accept_timeout {
        problems.at(
            "limits.request_timeout",
            "must be longer than accept_timeout (a request waiting for room in a pipeline would be cut off first)",
        );
    }
    if limits.max_connections == 0 {
        problems.at("limits.max_connections", "must be greater than 0");
    }
    if limits.max_concurrent_streams == 0 {
        problems.at("limits.max_concurrent_streams", "must be greater than 0");
    }
    if let Some(tls) = tls {
        if tls.reload_interval.0.is_zero() {
            problems.at("tls.reload_interval", "must be greater than 0");
        }
    }
    if let Some(auth) = auth {
        if auth.bearer_tokens_file.is_none()
            && auth.bearer_tokens_env.is_none()
            && !auth.client_certificates
        {
            problems.at(
                "auth",
                "needs bearer_tokens_file, bearer_tokens_env and/or client_certificates = true",
            );
        }
        if auth.client_certificates && tls.and_then(|t| t.client_ca_file.as_ref()).is_none() {
            problems.at(
                "auth.client_certificates",
                "needs tls.client_ca_file (client certificates are verified against it)",
            );
        }
        if auth.reload_interval.0.is_zero() {
            problems.at("auth.reload_interval", "must be greater than 0");
        }
    }
}
