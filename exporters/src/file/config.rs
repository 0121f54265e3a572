//! File exporter settings.

use serde::Deserialize;
use sluice_config::ByteSize;

/// File exporter settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileExporterConfig {
    /// Directory for `traces.jsonl`, `metrics.jsonl`, `logs.jsonl`, `profiles.jsonl`.
    pub path: String,
    /// Rotate a file once it grows past this size.
    #[serde(default = "default_file_size")]
    pub max_file_size: ByteSize,
    /// Rotated files kept per signal (older ones are deleted).
    #[serde(default = "default_file_count")]
    pub max_files: usize,
}

fn default_file_size() -> ByteSize {
    ByteSize::mib(100)
}
fn default_file_count() -> usize {
    10
}
