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
use sluice_config::redact;
use sluice_config::Signal;
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

/// A librdkafka error as text, with the value of a secret property hidden (its configuration
/// errors quote the value).
fn describe(e: &KafkaError) -> String {
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

/// The librdkafka properties of the settings: Sluice's defaults, then `tls`/`sasl`, then the
/// user's `producer` table (which wins).
pub fn client_config(cfg: &KafkaExporterConfig) -> ClientConfig {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", cfg.brokers.join(","))
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
    let protocol = match (&cfg.tls, &cfg.sasl) {
        (None, None) => None,
        (Some(_), None) => Some("ssl"),
        (None, Some(_)) => Some("sasl_plaintext"),
        (Some(_), Some(_)) => Some("sasl_ssl"),
    };
    if let Some(p) = protocol {
        client.set("security.protocol", p);
    }
    if let Some(t) = &cfg.tls {
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
    if let Some(s) = &cfg.sasl {
        client
            .set("sasl.mechanism", s.mechanism.as_str())
            .set("sasl.username", s.username.clone())
            .set("sasl.password", s.password.clone());
    }
    for (k, v) in &cfg.producer {
        client.set(k, v);
    }
    client
}

/// Produces batches to Kafka.
pub struct KafkaExporter {
    producer: FutureProducer,
    cfg: KafkaExporterConfig,
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
        })
    }
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
                return Err(classify(&e.0));
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
        if let Some(t) = &self.tls {
            for (k, m) in t.problems() {
                problems.at(&format!("tls.{k}"), m);
            }
            if t.server_name.is_some() {
                problems.at(
                    "tls.server_name",
                    "is not supported by librdkafka; list the brokers by the names in their certificates",
                );
            } else if t.problems().is_empty() {
                // Parse the files now (the same PEM files librdkafka will load).
                if let Err(e) = crate::tls::client_config(Some(t)) {
                    match e.key() {
                        "" => problems.at("tls", e.to_string()),
                        k => problems.at(&format!("tls.{k}"), e.to_string()),
                    }
                }
            }
        }
        if self.sasl.as_ref().is_some_and(|s| s.username.is_empty()) {
            problems.at("sasl.username", "is empty");
        }
        let managed = ["security.protocol", "sasl.mechanism", "sasl.username", "sasl.password"];
        if self.tls.is_some() || self.sasl.is_some() {
            for k in self.producer.keys().filter(|k| managed.contains(&k.as_str())) {
                problems.at(
                    &format!("producer.{k}"),
                    "is set by the tls/sasl tables; set it in one place",
                );
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
            let t = self.topics.of(s);
            let ok = !t.is_empty()
                && t.len() <= 249
                && t.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
            if !ok {
                problems.at(
                    &format!("topics.{s}"),
                    format!("invalid topic {t:?}; expected letters, digits, '.', '_' or '-' (at most 249)"),
                );
            }
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
