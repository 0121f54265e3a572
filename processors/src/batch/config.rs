//! Batch processor settings.

use serde::Deserialize;
use sluice_config::{ByteSize, HumanDuration};

/// Batch processor settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// Flush when this many items (spans, data points, log records, samples) are buffered.
    #[serde(default = "default_batch_items")]
    pub max_items: usize,
    /// Flush before a batch's OTLP protobuf grows past this, so forwarded batches stay under the
    /// next hop's message limit (4 MiB by default in gRPC servers and the OpenTelemetry Collector).
    #[serde(default = "default_batch_bytes")]
    pub max_bytes: ByteSize,
    /// Flush a non-empty batch at least this often.
    #[serde(default = "default_batch_timeout")]
    pub timeout: HumanDuration,
}

fn default_batch_items() -> usize {
    8192
}
fn default_batch_bytes() -> ByteSize {
    ByteSize::mib(3)
}
fn default_batch_timeout() -> HumanDuration {
    HumanDuration::from_millis(200)
}
