//! OTLP exporter settings.

use serde::Deserialize;
use sluice_config::{HumanDuration, TlsClientConfig};
use std::collections::BTreeMap;

/// OTLP exporter transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OtlpProtocol {
    /// OTLP/gRPC.
    #[default]
    Grpc,
    /// OTLP/HTTP with protobuf bodies.
    Http,
}

/// Request body compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// gzip.
    #[default]
    Gzip,
    /// zstd.
    Zstd,
    /// No compression.
    None,
}

/// OTLP exporter settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpExporterConfig {
    /// `http://host:4317` for gRPC, `http://host:4318` for HTTP (signal paths are appended);
    /// `https://` for TLS.
    pub endpoint: String,
    /// Transport.
    #[serde(default)]
    pub protocol: OtlpProtocol,
    /// Body compression.
    #[serde(default)]
    pub compression: Compression,
    /// Per-request timeout.
    #[serde(default = "default_otlp_timeout")]
    pub timeout: HumanDuration,
    /// Extra request headers (e.g. authentication).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// TLS settings for an `https://` endpoint (absent: the system's trust store).
    pub tls: Option<TlsClientConfig>,
}

fn default_otlp_timeout() -> HumanDuration {
    HumanDuration::from_secs(10)
}
