//! `tls = { … }` of an exporter: how Sluice connects to a TLS server (OTLP gRPC/HTTP, ClickHouse,
//! Kafka). One type for every exporter, checked the same way at `sluice validate`.
//!
//! ```toml
//! tls = { ca_file = "/etc/sluice/ca.pem", cert_file = "client.pem", key_file = "client-key.pem",
//!         server_name = "gateway.internal", insecure_skip_verify = false }
//! ```
//!
//! Without `ca_file` the system's trust store is used. `cert_file` + `key_file` present a client
//! certificate (mTLS). The files are read and parsed by the exporter that uses them (the rustls
//! parts live in `sluice-exporters`); this module checks what needs no TLS library.

use serde::Deserialize;
use std::path::PathBuf;

/// Client-side TLS settings shared by all exporters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsClientConfig {
    /// PEM file with the certificate authorities to trust; absent = the system's trust store.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain (mTLS); needs `key_file`.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file` (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
    /// Accept any server certificate (testing only: anyone in the path can read the data).
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// The name the server's certificate must carry, when it differs from the endpoint's host
    /// (e.g. the endpoint is an IP address).
    pub server_name: Option<String>,
}

impl TlsClientConfig {
    /// Problems found without a TLS library, as (key below `tls`, message): files missing or
    /// unreadable, a certificate without its key or the other way round, an empty server name.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        for (key, path) in [
            ("ca_file", &self.ca_file),
            ("cert_file", &self.cert_file),
            ("key_file", &self.key_file),
        ] {
            if let Some(p) = path {
                if let Err(e) = std::fs::File::open(p) {
                    out.push((key, format!("cannot read {}: {e}", p.display())));
                }
            }
        }
        match (&self.cert_file, &self.key_file) {
            (Some(_), None) => out.push((
                "key_file",
                "is missing: cert_file needs the key it was issued for".to_owned(),
            )),
            (None, Some(_)) => out.push((
                "cert_file",
                "is missing: key_file needs the certificate it belongs to".to_owned(),
            )),
            _ => {}
        }
        if self
            .server_name
            .as_deref()
            .is_some_and(|s| s.trim().is_empty())
        {
            out.push(("server_name", "is empty".to_owned()));
        }
        if self.insecure_skip_verify && self.ca_file.is_some() {
            out.push((
                "insecure_skip_verify",
                "contradicts ca_file (a CA is only used to verify); remove one".to_owned(),
            ));
        }
        out
    }
}

/// Whether `endpoint` asks for TLS (`https://`), for exporters that take a URL.
pub fn is_https(endpoint: &str) -> bool {
    endpoint
        .get(..8)
        .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
}

/// Problems of a URL endpoint together with its `tls` table, as (key, message): a `tls` table
/// on an `http://` endpoint would silently send in plain text, so it is refused.
pub fn endpoint_problems(endpoint: &str, tls: Option<&TlsClientConfig>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Some(t) = tls {
        if !is_https(endpoint) {
            out.push((
                "tls".to_owned(),
                format!(
                    "is set but the endpoint {} is not https://; use an https:// endpoint for TLS",
                    crate::redact::url(endpoint)
                ),
            ));
        }
        out.extend(
            t.problems()
                .into_iter()
                .map(|(k, m)| (format!("tls.{k}"), m)),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_files_and_schemes() {
        let dir = std::env::temp_dir();
        let t: TlsClientConfig = toml::from_str(&format!(
            "ca_file = {:?}\ncert_file = \"/nonexistent/c.pem\"",
            dir.display()
        ))
        .unwrap_or_default();
        let keys: Vec<_> = t.problems().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["cert_file", "key_file"]);
        assert!(is_https("HTTPS://x"));
        assert!(!is_https("http://x"));
        let p = endpoint_problems("http://u:pw@h:1", Some(&TlsClientConfig::default()));
        assert_eq!(p.len(), 1);
        assert!(!p[0].1.contains("pw"), "{p:?}");
        assert!(endpoint_problems("https://h:1", Some(&TlsClientConfig::default())).is_empty());
        assert!(toml::from_str::<TlsClientConfig>("ca = \"x\"").is_err());
    }
}
