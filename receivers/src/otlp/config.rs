//! OTLP receiver settings.

use crate::ingest::{default_accept_timeout, default_max_request_size};
use serde::Deserialize;
use crate::listener::{AuthConfig, Limits, TlsConfig};
use sluice_config::{ByteSize, HumanDuration, ListenAddr};

/// OTLP receiver settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpReceiverConfig {
    /// gRPC listen address (OTLP default port 4317); absent = no gRPC server.
    pub grpc: Option<ListenAddr>,
    /// HTTP listen address (OTLP default port 4318); absent = no HTTP server.
    pub http: Option<ListenAddr>,
    /// Largest request accepted, after decompression; larger ones get 413 / RESOURCE_EXHAUSTED.
    #[serde(default = "default_max_request_size")]
    pub max_request_size: ByteSize,
    /// How long a request may wait for room in a full pipeline before it is refused (503 / UNAVAILABLE).
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
