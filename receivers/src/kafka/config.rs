//! Kafka receiver settings.

use serde::Deserialize;
use sluice_config::{HumanDuration, TlsClientConfig};
pub use sluice_kafka::{CreateTopics, KafkaEncoding, KafkaSasl, KafkaTopics};
use std::collections::BTreeMap;

/// Where a consumer group that has no committed offset yet starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum InitialOffset {
    /// From the oldest record the brokers keep (nothing produced before the gateways started
    /// is missed).
    #[default]
    Earliest,
    /// Only records produced after the group first joined.
    Latest,
}

impl InitialOffset {
    /// librdkafka's `auto.offset.reset` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Earliest => "earliest",
            Self::Latest => "latest",
        }
    }
}

/// `[receivers.NAME] type = "kafka"`: a consumer group member reading OTLP records, committing
/// an offset only once every record before it was delivered by every exporter (at-least-once).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaReceiverConfig {
    /// Bootstrap brokers, `host:port`.
    pub brokers: Vec<String>,
    /// Consumer group: the gateways of one pool share it, and so share the partitions.
    #[serde(default = "default_group")]
    pub group_id: String,
    /// Topic per signal (the Kafka exporter's defaults); only the topics of signals that a
    /// pipeline takes from this receiver are read.
    #[serde(default)]
    pub topics: KafkaTopics,
    /// How records are encoded.
    #[serde(default)]
    pub encoding: KafkaEncoding,
    /// Where a group without committed offsets starts.
    #[serde(default)]
    pub initial_offset: InitialOffset,
    /// Records that do not decode are copied here (raw, with headers saying where they came
    /// from and why) before being skipped.
    pub dead_letter_topic: Option<String>,
    /// Create missing topics at start through the admin API.
    pub create_topics: Option<CreateTopics>,
    /// Records read from one partition and not yet delivered end to end before that partition
    /// is paused (memory stays bounded; the group keeps the partition).
    #[serde(default = "default_max_unacknowledged")]
    pub max_unacknowledged: usize,
    /// How often delivered offsets are committed.
    #[serde(default = "default_commit_interval")]
    pub commit_interval: HumanDuration,
    /// TLS to the brokers.
    pub tls: Option<TlsClientConfig>,
    /// SASL authentication.
    pub sasl: Option<KafkaSasl>,
    /// Extra librdkafka consumer properties (win over Sluice's).
    #[serde(default)]
    pub consumer: BTreeMap<String, String>,
}

fn default_group() -> String {
    "sluice".into()
}
fn default_max_unacknowledged() -> usize {
    1000
}
fn default_commit_interval() -> HumanDuration {
    HumanDuration::from_secs(1)
}
