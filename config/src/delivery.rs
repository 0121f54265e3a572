//! Delivery settings every exporter shares (`queue`, `retry`, `max_concurrency`): parsed and
//! validated once here, never repeated per exporter.

use crate::types::{ByteSize, HumanDuration};
use serde::Deserialize;
use std::path::PathBuf;

/// What a full exporter queue does with new data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Wait for room: back-pressure reaches the receivers, which refuse with a retryable status.
    #[default]
    Block,
    /// Drop the new data and count it (`sluice_dropped_items_total{reason="queue_full"}`).
    Drop,
}

/// When a persistent queue calls `fsync`: the trade between throughput and what a power cut loses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SyncMode {
    /// After every batch written: a power cut loses nothing that was queued.
    Always,
    /// At most once per second: a power cut may lose the last second (a `kill -9` loses nothing).
    #[default]
    Interval,
}

/// Per-exporter queue.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// Most items held in the queue.
    #[serde(default = "default_queue_items")]
    pub max_items: usize,
    /// Most bytes (OTLP protobuf size) held in the queue; unset = bounded by `max_items` only
    /// (a persistent queue defaults to 1GiB).
    #[serde(default)]
    pub max_bytes: Option<ByteSize>,
    /// What to do when the queue is full.
    #[serde(default)]
    pub when_full: WhenFull,
    /// Keep the queue on disk under `[service] storage_dir`, so a crash or restart loses nothing.
    #[serde(default)]
    pub persistent: bool,
    /// When a persistent queue calls `fsync`.
    #[serde(default)]
    pub sync: SyncMode,
    /// In a pipeline with several exporters, how long a full `block` queue may hold the others
    /// back before its batch is dropped for it alone (counted `reason="queue_full"`).
    #[serde(default = "default_block_timeout")]
    pub block_timeout: HumanDuration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            max_items: default_queue_items(),
            max_bytes: None,
            when_full: WhenFull::Block,
            persistent: false,
            sync: SyncMode::Interval,
            block_timeout: default_block_timeout(),
        }
    }
}

impl QueueConfig {
    /// The byte bound in force: the configured one, or 1GiB for a persistent queue.
    pub fn byte_limit(&self) -> Option<u64> {
        match (self.max_bytes, self.persistent) {
            (Some(b), _) => Some(b.0),
            (None, true) => Some(ByteSize::mib(1024).0),
            (None, false) => None,
        }
    }
}

fn default_block_timeout() -> HumanDuration {
    HumanDuration::from_secs(5)
}

fn default_queue_items() -> usize {
    100_000
}

/// Per-exporter retry with exponential backoff.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// First wait after a retryable failure.
    #[serde(default = "default_retry_initial")]
    pub initial_interval: HumanDuration,
    /// Longest wait between attempts.
    #[serde(default = "default_retry_max")]
    pub max_interval: HumanDuration,
    /// Give up on a batch (and count it dropped) after retrying this long; "0s" = retry forever.
    #[serde(default = "default_retry_elapsed")]
    pub max_elapsed: HumanDuration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            initial_interval: default_retry_initial(),
            max_interval: default_retry_max(),
            max_elapsed: default_retry_elapsed(),
        }
    }
}

fn default_retry_initial() -> HumanDuration {
    HumanDuration::from_millis(100)
}
fn default_retry_max() -> HumanDuration {
    HumanDuration::from_secs(5)
}
fn default_retry_elapsed() -> HumanDuration {
    HumanDuration::from_secs(300)
}

/// Everything the delivery layer needs from an exporter table.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryConfig {
    /// `queue = { ... }`.
    pub queue: QueueConfig,
    /// `retry = { ... }`.
    pub retry: RetryConfig,
    /// `max_concurrency`: most exports in flight (adaptive concurrency finds the best number up to this).
    pub max_concurrency: usize,
    /// `[service] storage_dir`, where persistent queues live (each in a folder named after its exporter).
    pub storage_dir: Option<PathBuf>,
}

/// The keys of an exporter table that belong to the delivery layer, not to the exporter itself.
pub const DELIVERY_KEYS: [&str; 3] = ["queue", "retry", "max_concurrency"];

/// Highest `max_concurrency` accepted.
pub const MAX_CONCURRENCY: usize = 1024;

impl DeliveryConfig {
    /// Checks the settings; each problem is `(key path below the exporter table, message)`.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if self.queue.max_items == 0 {
            out.push(("queue.max_items", "must be at least 1".to_owned()));
        }
        if self.queue.max_bytes.is_some_and(|b| b.0 < 64 * 1024) {
            out.push(("queue.max_bytes", "must be at least 64KiB".to_owned()));
        }
        if self.queue.persistent && self.storage_dir.is_none() {
            out.push((
                "queue.persistent",
                "needs [service] storage_dir: the directory persistent queues are kept in"
                    .to_owned(),
            ));
        }
        if !(1..=MAX_CONCURRENCY).contains(&self.max_concurrency) {
            out.push((
                "max_concurrency",
                format!("must be between 1 and {MAX_CONCURRENCY}"),
            ));
        }
        if self.retry.initial_interval.0.is_zero() {
            out.push((
                "retry.initial_interval",
                "must be greater than 0 (e.g. \"100ms\"); 0 would retry in a hot loop".to_owned(),
            ));
        }
        if self.retry.max_interval < self.retry.initial_interval {
            out.push((
                "retry.max_interval",
                "must not be shorter than retry.initial_interval".to_owned(),
            ));
        }
        out
    }
}
