//! Blackhole exporter settings.

use serde::Deserialize;
use sluice_config::HumanDuration;

/// Blackhole exporter settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlackholeExporterConfig {
    /// Accept at most this many items per second (simulates a slow backend); absent = unlimited.
    pub max_rate: Option<f64>,
    /// Extra time each export takes (simulates a distant backend).
    pub latency: Option<HumanDuration>,
}
