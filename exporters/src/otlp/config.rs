//! OTLP exporter settings.

use crate::tls;
use serde::Deserialize;
use sluice_config::{redact, HumanDuration, TlsClientConfig};
use sluice_core::component::Problems;
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
    /// `https://` for TLS. Exclusive with `endpoints` and `resolver`.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Several gateways (`"host:port"` or URLs): spans, and logs with a trace id, go to one of
    /// them by trace id over a consistent-hash ring.
    #[serde(default)]
    pub endpoints: Option<Vec<String>>,
    /// Gateways found by resolving a DNS name periodically (a headless service); balanced like
    /// `endpoints`.
    #[serde(default)]
    pub resolver: Option<ResolverConfig>,
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

/// Where the balancing exporter finds its gateways when they are not listed.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolverConfig {
    /// `"name:port"`: every address the name resolves to is one gateway at that port.
    pub dns: String,
    /// How often the name is resolved again; the ring follows the address set.
    #[serde(default = "default_resolve_interval")]
    pub interval: HumanDuration,
}

fn default_resolve_interval() -> HumanDuration {
    HumanDuration::from_secs(5)
}

/// Shortest `resolver.interval` accepted (a DNS server is not a busy loop's peer).
pub const MIN_RESOLVE_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

impl OtlpExporterConfig {
    /// The gateways as URLs: `"host:port"` becomes `http://host:port` (`https://` with a `tls`
    /// table); URLs stay as written.
    pub fn endpoint_url(&self, e: &str) -> String {
        if e.starts_with("http://") || e.starts_with("https://") {
            e.to_owned()
        } else if self.tls.is_some() {
            format!("https://{e}")
        } else {
            format!("http://{e}")
        }
    }
}

/// Whether `s` is `host:port` (a name or address and a non-zero port).
fn is_host_port(s: &str) -> bool {
    match s.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty()
                && !host.contains('/')
                && port.parse::<u16>().is_ok_and(|p| p != 0)
        }
        None => false,
    }
}

/// Whether `s` is an `http://` or `https://` URL with a host.
fn is_url(s: &str) -> bool {
    (s.starts_with("http://") || s.starts_with("https://")) && s.len() > "https://".len()
}

/// The checks of the exporter's table: one of `endpoint` / `endpoints` / `resolver`, each usable.
pub(crate) fn validate(cfg: &OtlpExporterConfig, problems: &mut Problems) {
    let set = [
        cfg.endpoint.is_some(),
        cfg.endpoints.is_some(),
        cfg.resolver.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if set == 0 {
        problems.at(
            "",
            "missing `endpoint`: set `endpoint` (one next hop), `endpoints` (several gateways to balance across) or `resolver` (gateways found in DNS)",
        );
        return;
    }
    if set > 1 {
        let key = if cfg.resolver.is_some() {
            "resolver"
        } else {
            "endpoints"
        };
        problems.at(
            key,
            "`endpoint`, `endpoints` and `resolver` exclude each other; set only one",
        );
        return;
    }
    let tls_problems = |url: &str, problems: &mut Problems| {
        for (key, msg) in tls::problems(url, cfg.tls.as_ref()) {
            problems.at(&key, msg);
        }
    };
    if let Some(e) = &cfg.endpoint {
        if !is_url(e) {
            problems.at(
                "endpoint",
                format!(
                    "invalid endpoint {:?}; expected a URL such as \"http://gateway:4317\" (https:// for TLS)",
                    redact::url(e)
                ),
            );
            return;
        }
        tls_problems(e, problems);
    }
    if let Some(list) = &cfg.endpoints {
        if list.is_empty() {
            problems.at(
                "endpoints",
                "empty list; give at least one gateway as \"host:port\"",
            );
            return;
        }
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        let mut ok = true;
        for (i, e) in list.iter().enumerate() {
            let at = format!("endpoints[{i}]");
            if !(is_host_port(e) || is_url(e)) {
                problems.at(
                    &at,
                    format!(
                        "invalid endpoint {:?}; expected \"host:port\" (or a URL such as \"http://gateway-1:4317\")",
                        redact::url(e)
                    ),
                );
                ok = false;
                continue;
            }
            let url = cfg.endpoint_url(e);
            if let Some(first) = seen.insert(url, i) {
                problems.at(&at, format!("the same gateway as endpoints[{first}]"));
                ok = false;
            }
        }
        if ok {
            if let Some(first) = list.first() {
                tls_problems(&cfg.endpoint_url(first), problems);
            }
        }
    }
    if let Some(r) = &cfg.resolver {
        if !is_host_port(&r.dns) {
            problems.at(
                "resolver.dns",
                format!(
                    "invalid name {:?}; expected \"name:port\" such as \"gateway-headless:4317\"",
                    r.dns
                ),
            );
        }
        if r.interval.0 < MIN_RESOLVE_INTERVAL {
            problems.at(
                "resolver.interval",
                format!(
                    "{:?} is too short; resolve at most every {:?}",
                    r.interval.0, MIN_RESOLVE_INTERVAL
                ),
            );
        }
        if cfg.tls.is_some() {
            problems.at(
                "tls",
                "TLS to gateways found by `resolver` is not supported (certificates name hosts, the resolver yields addresses); list them in `endpoints`",
            );
        }
    }
}
