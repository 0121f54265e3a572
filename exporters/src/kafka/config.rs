//! Kafka exporter settings.

use serde::Deserialize;
use sluice_config::{ByteSize, HumanDuration, Signal, TlsClientConfig};
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
    /// TLS to the brokers (`security.protocol = ssl`, or `sasl_ssl` with `sasl`); absent ca_file:
    /// OpenSSL's default trust store. `server_name` is not supported by librdkafka.
    pub tls: Option<TlsClientConfig>,
    /// SASL authentication (`sasl_plaintext`, or `sasl_ssl` with `tls`).
    pub sasl: Option<KafkaSasl>,
    /// Extra librdkafka producer properties, e.g. `{ "linger.ms" = "20" }`; secret ones
    /// (`sasl.password`, `ssl.key.password`, …) are never shown in logs or errors.
    #[serde(default)]
    pub producer: BTreeMap<String, String>,
}

/// SASL mechanism (what librdkafka supports without extra libraries).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SaslMechanism {
    /// Username and password in clear (use with `tls`).
    #[serde(rename = "PLAIN")]
    Plain,
    /// SCRAM with SHA-256.
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    /// SCRAM with SHA-512.
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    /// librdkafka's `sasl.mechanism` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// SASL credentials (use `${KAFKA_PASSWORD}` to keep the password out of the file).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSasl {
    /// Mechanism.
    pub mechanism: SaslMechanism,
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
}

impl std::fmt::Debug for KafkaSasl {
    /// Never prints the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSasl")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .field("password", &sluice_config::redact::REDACTED)
            .finish()
    }
}

fn default_kafka_message_bytes() -> ByteSize {
    // Kafka's default `message.max.bytes` is 1,048,588 bytes including the record overhead.
    ByteSize(1_000_000)
}
fn default_kafka_timeout() -> HumanDuration {
    HumanDuration::from_secs(30)
}
