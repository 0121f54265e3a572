//! The Kafka exporter: produces OTLP export requests (protobuf or JSON) to one topic per signal
//! with an idempotent `acks=all` producer (librdkafka through `rdkafka`).
//!
//! Batches that arrive still encoded are packed into messages without a decode; messages never
//! exceed `max_message_bytes`. With `partition_by_trace_id`, every trace becomes its own message
//! keyed by its trace id, so a trace stays in one partition. A batch counts as sent when the broker
//! acknowledged every message of it; a failed batch is retried whole (at-least-once: a retry may
//! repeat messages that had already landed).

pub mod messages;

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
pub mod config;

pub use config::{
    KafkaCompression, KafkaEncoding, KafkaExporterConfig, KafkaSasl, KafkaTopics, SaslMechanism,
};
use sluice_config::Signal;
use sluice_kafka::{describe, is_missing_topic, validate_create_topics, validate_topic, Connection};
use std::collections::HashSet;
use std::sync::Mutex;
use sluice_core::component::{ExporterContext, ExporterKind, Problems};
use std::sync::Arc;
use sluice_core::{BoxFuture, Delivered, ExportError, Exporter, Telemetry};
use std::time::Duration;

/// Errors building the producer.
#[derive(Debug, thiserror::Error)]
pub enum KafkaExporterError {
    /// librdkafka refused the configuration (secret values are not shown).
    #[error("invalid Kafka producer configuration: {}", describe(.0))]
    Config(#[from] KafkaError),
}

/// The librdkafka properties of the settings: the connection (brokers, `tls`, `sasl`), Sluice's
/// producer defaults, then the user's `producer` table (which wins).
pub fn client_config(cfg: &KafkaExporterConfig) -> ClientConfig {
    let mut client = connection(cfg).client_config();
    client
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", cfg.compression.as_str())
        .set(
            "message.max.bytes",
            (cfg.max_message_bytes.0 + RECORD_OVERHEAD).to_string(),
        )
        .set(
            "message.timeout.ms",
            cfg.timeout.0.as_millis().max(1).to_string(),
        )
        .set("linger.ms", "5")
        // Sluice's own queue holds the backlog; librdkafka's only smooths sending (its 1 GiB
        // default would hide back-pressure and inflate memory).
        .set("queue.buffering.max.kbytes", "32768");
    for (k, v) in &cfg.producer {
        client.set(k, v);
    }
    client
}

fn connection(cfg: &KafkaExporterConfig) -> Connection<'_> {
    Connection {
        brokers: &cfg.brokers,
        tls: cfg.tls.as_ref(),
        sasl: cfg.sasl.as_ref(),
    }
}

/// Produces batches to Kafka.
pub struct KafkaExporter {
    producer: FutureProducer,
    cfg: KafkaExporterConfig,
    /// Topics known to exist (created, or produced to successfully).
    ready: Mutex<HashSet<String>>,
    /// Topics already reported missing (reported once).
    missing: Mutex<HashSet<String>>,
}

/// Bytes a record adds around its value (headers, key, batch framing), kept free below the
/// broker's `message.max.bytes`.
const RECORD_OVERHEAD: u64 = 64 * 1024;

impl KafkaExporter {
    /// Builds the producer; it connects lazily, so brokers that are down at start only delay data.
    pub fn new(cfg: &KafkaExporterConfig) -> Result<Self, KafkaExporterError> {
        let client = client_config(cfg);
        Ok(Self {
            producer: client.create()?,
            cfg: cfg.clone(),
            ready: Mutex::default(),
            missing: Mutex::default(),
        })
    }

    /// With `create_topics`, creates `topic` before the first message to it.
    async fn ensure_topic(&self, topic: &str) -> Result<(), ExportError> {
        let Some(spec) = self.cfg.create_topics else {
            return Ok(());
        };
        if lock(&self.ready).contains(topic) {
            return Ok(());
        }
        sluice_kafka::create_topics(&connection(&self.cfg).client_config(), &[topic], spec)
            .await
            .map_err(ExportError::retryable)?;
        lock(&self.ready).insert(topic.to_owned());
        Ok(())
    }

    async fn topic_is_missing(&self, topic: &str) -> bool {
        let (producer, topic) = (self.producer.clone(), topic.to_owned());
        tokio::task::spawn_blocking(move || {
            sluice_kafka::topic_is_missing(producer.client(), &topic)
        })
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
    }

    /// A missing topic is said once, clearly; the batch stays queued and is retried quietly.
    fn missing_topic(&self, topic: &str, e: &KafkaError) -> ExportError {
        let first = lock(&self.missing).insert(topic.to_owned());
        let msg = format!("Kafka topic {topic:?} does not exist: {e}");
        if first {
            tracing::error!(%topic, brokers = %self.cfg.brokers.join(","), "Kafka topic {topic:?} does not exist and the brokers do not create topics on first use; data for it stays queued and is retried. Create the topic (e.g. kafka-topics.sh --create --topic {topic}), or set create_topics = {{ partitions = N, replication_factor = R }} on this exporter");
        }
        ExportError::retryable(msg).reported()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Maps a delivery error to what the worker should do.
fn classify(e: &KafkaError) -> ExportError {
    let msg = format!("Kafka: {e}");
    match e.rdkafka_error_code() {
        Some(RDKafkaErrorCode::QueueFull) => ExportError::throttled(msg),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::InvalidMessageSize
            | RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::InvalidTopic,
        ) => ExportError::permanent(msg),
        Some(RDKafkaErrorCode::ThrottlingQuotaExceeded) => ExportError::throttled(msg),
        _ => ExportError::retryable(msg),
    }
}

impl Exporter for KafkaExporter {
    fn needs_decoded(&self) -> bool {
        false
    }

    fn export<'a>(&'a self, batch: &'a Telemetry) -> BoxFuture<'a, Result<Delivered, ExportError>> {
        Box::pin(async move {
            let split = messages::messages(
                batch,
                self.cfg.encoding,
                self.cfg.max_message_bytes.as_usize(),
                self.cfg.partition_by_trace_id,
            )
            .map_err(|e| ExportError::permanent(format!("cannot encode batch: {e}")))?;
            if split.oversize > 0 {
                tracing::error!(
                    items = split.oversize,
                    max_message_bytes = self.cfg.max_message_bytes.0,
                    "items larger than max_message_bytes on their own cannot be produced"
                );
            }
            let topic = self.cfg.topics.of(batch.signal());
            self.ensure_topic(topic).await?;
            let sends = split.messages.iter().map(|m| {
                let mut record = FutureRecord::<str, [u8]>::to(topic).payload(&m.value[..]);
                if let Some(k) = &m.key {
                    record = record.key(k.as_str());
                }
                // Waiting for room in librdkafka's queue is back-pressure, not failure.
                self.producer.send(record, Duration::from_secs(5))
            });
            let results = futures::future::join_all(sends).await;
            if let Some(e) = results.iter().find_map(|r| r.as_ref().err()) {
                // librdkafka reports a missing topic as a timeout when `timeout` is shorter than
                // its metadata wait: ask the brokers.
                let timed_out = e.0.rdkafka_error_code() == Some(RDKafkaErrorCode::MessageTimedOut);
                if is_missing_topic(&e.0) || (timed_out && self.topic_is_missing(topic).await) {
                    return Err(self.missing_topic(topic, &e.0));
                }
                return Err(classify(&e.0));
            }
            if lock(&self.missing).remove(topic) {
                tracing::info!(%topic, "Kafka topic exists now; queued data flows again");
            }
            Ok(Delivered {
                rejected: split.oversize,
            })
        })
    }

    fn shutdown(&self) -> BoxFuture<'_, Result<(), ExportError>> {
        Box::pin(async move {
            let producer = self.producer.clone();
            tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(10)))
                .await
                .map_err(|e| ExportError::permanent(format!("flush task failed: {e}")))?
                .map_err(|e| classify(&e))
        })
    }
}

impl ExporterKind for KafkaExporterConfig {
    const TYPE: &'static str = "kafka";
    const DEFAULT_CONCURRENCY: usize = 8;

    fn validate(&self, problems: &mut Problems) {
        connection(self).validate("producer", &self.producer, problems);
        if let Some(t) = &self.tls {
            if t.server_name.is_none() && t.problems().is_empty() {
                // Parse the files now (the same PEM files librdkafka will load).
                if let Err(e) = crate::tls::client_config(Some(t)) {
                    match e.key() {
                        "" => problems.at("tls", e.to_string()),
                        k => problems.at(&format!("tls.{k}"), e.to_string()),
                    }
                }
            }
        }
        // librdkafka checks every property name and value (not files or brokers) without a client.
        if let Err(e) = client_config(self).create_native_config() {
            problems.at("producer", describe(&e));
        }
        if self.max_message_bytes.0 < 1024 {
            problems.at("max_message_bytes", "must be at least 1KiB");
        }
        for s in Signal::ALL {
            validate_topic(&format!("topics.{s}"), self.topics.of(s), problems);
        }
        if let Some(c) = &self.create_topics {
            validate_create_topics(c, problems);
        }
    }

    fn build(&self, _ctx: &ExporterContext<'_>) -> Result<Arc<dyn Exporter>, String> {
        KafkaExporter::new(self)
            .map(|e| Arc::new(e) as Arc<dyn Exporter>)
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests;
