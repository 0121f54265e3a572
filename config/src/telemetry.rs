//! `[service.telemetry]`: Sluice's own metrics, logs and spans, exported with the OpenTelemetry
//! SDK over OTLP to any collector (another Sluice included).
//!
//! ```toml
//! [service.telemetry]
//! endpoint = "http://127.0.0.1:4317"   # gRPC; with protocol = "http": http://host:4318 (/v1/… appended)
//! protocol = "grpc"
//! interval = "10s"                     # metrics export period
//! log_level = "info"                   # which `tracing` events become OTLP log records
//! slow_export = "1s"                   # exports slower than this (or failed) become spans
//! resource = { "service.name" = "sluice", "deployment.environment" = "prod" }
//! ```

use crate::types::HumanDuration;
use serde::Deserialize;
use std::collections::BTreeMap;

/// OTLP transport of the own telemetry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TelemetryProtocol {
    /// OTLP/gRPC (port 4317).
    #[default]
    Grpc,
    /// OTLP/HTTP protobuf (port 4318).
    Http,
}

/// Where and how often Sluice sends its own telemetry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// OTLP endpoint, e.g. `http://127.0.0.1:4317`.
    pub endpoint: String,
    /// `grpc` or `http`.
    #[serde(default)]
    pub protocol: TelemetryProtocol,
    /// Metrics export period.
    #[serde(default = "default_interval")]
    pub interval: HumanDuration,
    /// `tracing` filter for the log records sent (`warn`, `info`, `sluice=debug,info`).
    #[serde(default = "default_log_level")]
    pub log_level: String,
    /// Exports that take longer than this are recorded as spans (failed ones always are).
    #[serde(default = "default_slow_export")]
    pub slow_export: HumanDuration,
    /// Resource attributes; `service.name` defaults to `sluice`.
    #[serde(default)]
    pub resource: BTreeMap<String, String>,
}

fn default_interval() -> HumanDuration {
    HumanDuration::from_secs(10)
}
fn default_log_level() -> String {
    "info".to_owned()
}
fn default_slow_export() -> HumanDuration {
    HumanDuration::from_secs(1)
}

impl TelemetryConfig {
    /// Problems with the values, as (key under `service.telemetry`, message).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let scheme_ok =
            self.endpoint.starts_with("http://") || self.endpoint.starts_with("https://");
        let host = self
            .endpoint
            .split_once("://")
            .map(|(_, rest)| rest.split('/').next().unwrap_or(""))
            .unwrap_or("");
        if !scheme_ok || host.is_empty() {
            out.push((
                "endpoint",
                format!(
                    "expected a URL such as \"http://127.0.0.1:4317\", got {:?}",
                    crate::redact::url(&self.endpoint)
                ),
            ));
        } else if crate::tls::is_https(&self.endpoint) {
            // The SDK's transports are built without TLS: refuse here rather than fail later.
            out.push((
                "endpoint",
                "https:// is not supported for Sluice's own telemetry; send it to a local \
                 collector over http:// (e.g. this Sluice's OTLP receiver, whose otlp exporter \
                 can use TLS)"
                    .to_owned(),
            ));
        }
        if self.interval.0.as_millis() < 100 {
            out.push(("interval", "must be at least 100ms".to_owned()));
        }
        if self.log_level.trim().is_empty() {
            out.push((
                "log_level",
                "is empty; expected a level such as \"info\"".to_owned(),
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_problems() {
        let t: TelemetryConfig = toml::from_str(r#"endpoint = "http://127.0.0.1:4317""#).unwrap();
        assert_eq!(t.protocol, TelemetryProtocol::Grpc);
        assert_eq!(t.interval.0.as_secs(), 10);
        assert!(t.problems().is_empty());
        let t: TelemetryConfig = toml::from_str(
            "endpoint = \"127.0.0.1:4317\"\ninterval = \"10ms\"\nprotocol = \"http\"",
        )
        .unwrap();
        let keys: Vec<_> = t.problems().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["endpoint", "interval"]);
        assert!(
            toml::from_str::<TelemetryConfig>("endpoint = \"http://x\"\nprotocol = \"udp\"")
                .is_err()
        );
    }
}
