//! pprof receiver settings.

use crate::ingest::{default_accept_timeout, default_max_request_size};
use serde::Deserialize;
use crate::listener::{AuthConfig, Limits, TlsConfig};
use sluice_config::{ByteSize, HumanDuration, ListenAddr};

/// pprof receiver settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PprofReceiverConfig {
    /// HTTP listen address (Pyroscope's port is 4040).
    pub http: ListenAddr,
    /// Largest profile accepted, after decompression.
    #[serde(default = "default_max_request_size")]
    pub max_request_size: ByteSize,
    /// How long a request may wait for room in a full pipeline before it is refused (503).
    #[serde(default = "default_accept_timeout")]
    pub accept_timeout: HumanDuration,
    /// Timeouts and connection/stream limits of its listeners.
    #[serde(default)]
    pub limits: Limits,
    /// TLS (and optional client-certificate verification) on its listeners.
    pub tls: Option<TlsConfig>,
    /// Who may send (bearer tokens, client certificates); absent = anyone who connects.
    pub auth: Option<AuthConfig>,
}
