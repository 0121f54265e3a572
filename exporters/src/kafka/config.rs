//! Kafka exporter settings.

use serde::Deserialize;
use sluice_config::{ByteSize, HumanDuration, TlsClientConfig};
pub use sluice_kafka::{
    CreateTopics, KafkaEncoding, KafkaSasl, KafkaTopics, SaslMechanism,
};
use std::collections::BTreeMap;

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
    /// TLS to the brokers (`security.protocol = ssl`, or `sasl_ssl` with `sasl`); absent ca_file:
    /// OpenSSL's default trust store. `server_name` is not supported by librdkafka.
    pub tls: Option<TlsClientConfig>,
    /// SASL authentication (`sasl_plaintext`, or `sasl_ssl` with `tls`).
    pub sasl: Option<KafkaSasl>,
    /// Create missing topics at start through the admin API (for brokers that do not create
    /// topics on first use); without it a missing topic is reported once and data stays queued.
    pub create_topics: Option<CreateTopics>,
    /// Extra librdkafka producer properties, e.g. `{ "linger.ms" = "20" }`; secret ones
    /// (`sasl.password`, `ssl.key.password`, …) are never shown in logs or errors.
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
