//! Kafka exporter settings.

use serde::Deserialize;
use sluice_config::{ByteSize, HumanDuration, Signal};
use std::collections::BTreeMap;

/// How OTLP data is written into Kafka messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum KafkaEncoding {
    /// The OTLP protobuf export request (what the OpenTelemetry Collector's Kafka receiver reads).
    #[default]
    OtlpProto,
    /// OTLP/JSON.
    OtlpJson,
}

/// Compression of Kafka record batches (done by the producer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum KafkaCompression {
    /// No compression.
    None,
    /// gzip.
    Gzip,
    /// Snappy.
    Snappy,
    /// LZ4 (fast, the default).
    #[default]
    Lz4,
}

impl KafkaCompression {
    /// The producer's `compression.type` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Gzip => "gzip",
            Self::Snappy => "snappy",
            Self::Lz4 => "lz4",
        }
    }
}

/// Topic per signal.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaTopics {
    /// Spans.
    #[serde(default = "default_topic_traces")]
    pub traces: String,
    /// Metrics.
    #[serde(default = "default_topic_metrics")]
    pub metrics: String,
    /// Logs.
    #[serde(default = "default_topic_logs")]
    pub logs: String,
    /// Profiles.
    #[serde(default = "default_topic_profiles")]
    pub profiles: String,
}

impl Default for KafkaTopics {
    fn default() -> Self {
        Self {
            traces: default_topic_traces(),
            metrics: default_topic_metrics(),
            logs: default_topic_logs(),
            profiles: default_topic_profiles(),
        }
    }
}

impl KafkaTopics {
    /// The topic of `signal`.
    pub fn of(&self, signal: Signal) -> &str {
        match signal {
            Signal::Traces => &self.traces,
            Signal::Metrics => &self.metrics,
            Signal::Logs => &self.logs,
            Signal::Profiles => &self.profiles,
        }
    }
}

fn default_topic_traces() -> String {
    "otlp_spans".into()
}
fn default_topic_metrics() -> String {
    "otlp_metrics".into()
}
fn default_topic_logs() -> String {
    "otlp_logs".into()
}
fn default_topic_profiles() -> String {
    "otlp_profiles".into()
}

/// Kafka exporter settings: an idempotent producer with `acks=all`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaExporterConfig {
    /// Bootstrap brokers, `host:port`.
    pub brokers: Vec<String>,
    /// Topic per signal.
    #[serde(default)]
    pub topics: KafkaTopics,
    /// Message encoding.
    #[serde(default)]
    pub encoding: KafkaEncoding,
    /// Largest message value; larger batches are split (whole requests, then spans, log records or
    /// resources), so the broker never refuses a message as too large.
    #[serde(default = "default_kafka_message_bytes")]
    pub max_message_bytes: ByteSize,
    /// Record batch compression.
    #[serde(default)]
    pub compression: KafkaCompression,
    /// One message per trace, keyed by the trace id, so all of a trace lands in one partition
    /// (spans, and log records that carry a trace id). Costs a decode of every batch.
    #[serde(default)]
    pub partition_by_trace_id: bool,
    /// How long a message may take to be acknowledged before the batch counts as failed.
    #[serde(default = "default_kafka_timeout")]
    pub timeout: HumanDuration,
    /// Extra librdkafka producer properties, e.g. `{ "linger.ms" = "20" }`.
    #[serde(default)]
    pub producer: BTreeMap<String, String>,
}

fn default_kafka_message_bytes() -> ByteSize {
    // Kafka's default `message.max.bytes` is 1,048,588 bytes including the record overhead.
    ByteSize(1_000_000)
}
fn default_kafka_timeout() -> HumanDuration {
    HumanDuration::from_secs(30)
}
