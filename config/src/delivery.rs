//! Delivery settings every exporter shares (`queue`, `retry`, `max_concurrency`): parsed and
//! validated once here, never repeated per exporter.

use crate::types::HumanDuration;
use serde::Deserialize;

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

/// Per-exporter queue.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// Most items held in the queue.
    #[serde(default = "default_queue_items")]
    pub max_items: usize,
    /// What to do when the queue is full.
    #[serde(default)]
    pub when_full: WhenFull,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            max_items: default_queue_items(),
            when_full: WhenFull::Block,
        }
    }
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
