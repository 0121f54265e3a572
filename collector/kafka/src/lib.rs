//! What the Kafka receiver and the Kafka exporter share: the connection settings (brokers, TLS,
//! SASL) and the librdkafka properties made from them, message encodings and topic names, their
//! validation, and creating missing topics through the admin API.

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use serde::Deserialize;
use sluice_config::{redact, Signal, TlsClientConfig};
use sluice_core::component::Problems;
use std::collections::BTreeMap;
use std::time::Duration;

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

/// `create_topics = { partitions = N, replication_factor = R }`: create missing topics at start
/// through the admin API (for brokers that do not create topics on first use).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTopics {
    /// Partitions of each created topic.
    #[serde(default = "default_partitions")]
    pub partitions: i32,
    /// Replicas of each partition.
    #[serde(default = "default_replication")]
    pub replication_factor: i32,
}

fn default_partitions() -> i32 {
    1
}
fn default_replication() -> i32 {
    1
}

/// How Sluice reaches the brokers: what the receiver's and the exporter's tables have in common.
#[derive(Debug, Clone, Copy)]
pub struct Connection<'a> {
    /// Bootstrap brokers, `host:port`.
    pub brokers: &'a [String],
    /// TLS to the brokers.
    pub tls: Option<&'a TlsClientConfig>,
    /// SASL authentication.
    pub sasl: Option<&'a KafkaSasl>,
}

impl Connection<'_> {
    /// librdkafka properties for the connection (`bootstrap.servers`, `security.protocol`, ssl and
    /// sasl ones); the caller adds its own and then the user's table, which wins.
    pub fn client_config(&self) -> ClientConfig {
        let mut client = ClientConfig::new();
        client.set("bootstrap.servers", self.brokers.join(","));
        let protocol = match (self.tls, self.sasl) {
            (None, None) => None,
            (Some(_), None) => Some("ssl"),
            (None, Some(_)) => Some("sasl_plaintext"),
            (Some(_), Some(_)) => Some("sasl_ssl"),
        };
        if let Some(p) = protocol {
            client.set("security.protocol", p);
        }
        if let Some(t) = self.tls {
            let path = |p: &std::path::PathBuf| p.to_string_lossy().into_owned();
            if let Some(ca) = &t.ca_file {
                client.set("ssl.ca.location", path(ca));
            }
            if let Some(cert) = &t.cert_file {
                client.set("ssl.certificate.location", path(cert));
            }
            if let Some(key) = &t.key_file {
                client.set("ssl.key.location", path(key));
            }
            if t.insecure_skip_verify {
                client
                    .set("enable.ssl.certificate.verification", "false")
                    .set("ssl.endpoint.identification.algorithm", "none");
            }
        }
        if let Some(s) = self.sasl {
            client
                .set("sasl.mechanism", s.mechanism.as_str())
                .set("sasl.username", s.username.clone())
                .set("sasl.password", s.password.clone());
        }
        client
    }

    /// Checks the brokers, TLS and SASL settings, and that the user's librdkafka table
    /// (`extra_key`: `producer` or `consumer`) does not set what those tables manage.
    pub fn validate(
        &self,
        extra_key: &str,
        extra: &BTreeMap<String, String>,
        problems: &mut Problems,
    ) {
        if self.brokers.is_empty() {
            problems.at(
                "brokers",
                "lists no brokers; expected addresses such as [\"kafka-1:9092\"]",
            );
        }
        for (i, b) in self.brokers.iter().enumerate() {
            let ok = b
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
            if !ok {
                problems.at(
                    &format!("brokers[{i}]"),
                    format!("invalid broker {b:?}; expected host:port such as \"kafka-1:9092\""),
                );
            }
        }
        if let Some(t) = self.tls {
            for (k, m) in t.problems() {
                problems.at(&format!("tls.{k}"), m);
            }
            if t.server_name.is_some() {
                problems.at(
                    "tls.server_name",
                    "is not supported by librdkafka; list the brokers by the names in their certificates",
                );
            }
        }
        if self.sasl.is_some_and(|s| s.username.is_empty()) {
            problems.at("sasl.username", "is empty");
        }
        let managed = [
            "security.protocol",
            "sasl.mechanism",
            "sasl.username",
            "sasl.password",
        ];
        if self.tls.is_some() || self.sasl.is_some() {
            for k in extra.keys().filter(|k| managed.contains(&k.as_str())) {
                problems.at(
                    &format!("{extra_key}.{k}"),
                    "is set by the tls/sasl tables; set it in one place",
                );
            }
        }
    }
}

/// Checks a topic name (Kafka's own rule).
pub fn validate_topic(key: &str, topic: &str, problems: &mut Problems) {
    let ok = !topic.is_empty()
        && topic.len() <= 249
        && topic
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if !ok {
        problems.at(
            key,
            format!(
                "invalid topic {topic:?}; expected letters, digits, '.', '_' or '-' (at most 249)"
            ),
        );
    }
}

/// Checks `create_topics`.
pub fn validate_create_topics(c: &CreateTopics, problems: &mut Problems) {
    if c.partitions < 1 {
        problems.at("create_topics.partitions", "must be at least 1");
    }
    if c.replication_factor < 1 {
        problems.at("create_topics.replication_factor", "must be at least 1");
    }
}

/// A librdkafka error as text, with the value of a secret property hidden (its configuration
/// errors quote the value).
pub fn describe(e: &KafkaError) -> String {
    match e {
        KafkaError::ClientConfig(_, desc, key, value) => {
            if redact::is_secret_name(key) {
                format!("invalid value for {key:?}")
            } else {
                format!("{desc} ({key} = {value:?})")
            }
        }
        other => other.to_string(),
    }
}

/// Whether a produce or fetch error means the topic does not exist on the brokers.
pub fn is_missing_topic(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic)
    )
}

/// Whether the brokers say `topic` does not exist (`None`: they could not be asked). Blocking:
/// call from a blocking task.
pub fn topic_is_missing<C: rdkafka::ClientContext>(
    client: &rdkafka::client::Client<C>,
    topic: &str,
) -> Option<bool> {
    let md = client
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .ok()?;
    let t = md.topics().iter().find(|t| t.name() == topic)?;
    Some(matches!(
        t.error().map(RDKafkaErrorCode::from),
        Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic)
    ))
}

/// Creates `topics` that do not exist yet (one that exists is fine). Errors name the topic and
/// the broker's reason.
pub async fn create_topics(
    client: &ClientConfig,
    topics: &[&str],
    spec: CreateTopics,
) -> Result<(), String> {
    let admin: AdminClient<DefaultClientContext> = client
        .create()
        .map_err(|e| format!("cannot create the Kafka admin client: {}", describe(&e)))?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| {
            NewTopic::new(
                t,
                spec.partitions,
                TopicReplication::Fixed(spec.replication_factor),
            )
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .create_topics(new.iter(), &opts)
        .await
        .map_err(|e| format!("cannot create topics {topics:?}: {}", describe(&e)))?;
    for r in results {
        match r {
            Ok(topic) => {
                tracing::info!(%topic, partitions = spec.partitions, replication_factor = spec.replication_factor, "created Kafka topic")
            }
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(format!("cannot create topic {topic:?}: {code}")),
        }
    }
    Ok(())
}

/// The topic of each signal, as `(signal, topic)`.
pub fn topics_of(topics: &KafkaTopics, signals: &[Signal]) -> Vec<(Signal, String)> {
    signals
        .iter()
        .map(|&s| (s, topics.of(s).to_owned()))
        .collect()
}
