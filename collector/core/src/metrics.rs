//! Self-metrics with the names OpenTelemetry Collector users recognise, rendered as Prometheus text.
//!
//! Components take their counter handles once at build time and bump atomics on the hot path;
//! label maps are hashed only at start-up.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use sluice_config::Signal;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

/// Label set: `(name, value)` pairs.
pub type Labels = Vec<(String, String)>;

/// A floating-point gauge (loads, probabilities).
pub type FloatGauge = Gauge<f64, AtomicU64>;

/// Why items were dropped; the `reason` label of `sluice_dropped_items_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// An exporter queue with `when_full = "drop"` was full.
    QueueFull,
    /// The backend rejected the data permanently, or retries ran out.
    ExportFailed,
    /// Shutdown's deadline passed before the data was delivered.
    ShutdownTimeout,
    /// A persistent queue could not write the batch to disk (disk full, I/O error).
    PersistFailed,
    /// A processor removed the item on purpose (filtering, sampling).
    Filtered,
}

impl DropReason {
    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::QueueFull => "queue_full",
            Self::ExportFailed => "export_failed",
            Self::ShutdownTimeout => "shutdown_timeout",
            Self::PersistFailed => "persist_failed",
            Self::Filtered => "filtered",
        }
    }
}

/// All self-metrics of one Sluice process.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    receiver_accepted: Family<Labels, Counter>,
    receiver_refused: Family<Labels, Counter>,
    receiver_refused_requests: Family<Labels, Counter>,
    receiver_connections_refused: Family<Labels, Counter>,
    receiver_connections: Family<Labels, Gauge>,
    kafka_lag: Family<Labels, Gauge>,
    kafka_unacked: Family<Labels, Gauge>,
    exporter_sent: Family<Labels, Counter>,
    exporter_failed: Family<Labels, Counter>,
    exporter_queue: Family<Labels, Gauge>,
    exporter_load: Family<Labels, FloatGauge>,
    pipeline_queue: Family<Labels, Gauge>,
    dropped: Family<Labels, Counter>,
    sampler_probability: Family<Labels, FloatGauge>,
    sampler_sampled_out: Family<Labels, Counter>,
    sampler_input_rate: Family<Labels, FloatGauge>,
    exporter_concurrency: Family<Labels, Gauge>,
    config_reload: Family<Labels, Counter>,
    queue_corrupt: Family<Labels, Counter>,
    queue_replayed: Family<Labels, Counter>,
    memory: Family<Labels, Gauge>,
    endpoint_up: Family<Labels, Gauge>,
    endpoint_rerouted: Family<Labels, Counter>,
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric family.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let receiver_accepted = Family::<Labels, Counter>::default();
        let receiver_refused = Family::<Labels, Counter>::default();
        let receiver_refused_requests = Family::<Labels, Counter>::default();
        let receiver_connections_refused = Family::<Labels, Counter>::default();
        let receiver_connections = Family::<Labels, Gauge>::default();
        let kafka_lag = Family::<Labels, Gauge>::default();
        let kafka_unacked = Family::<Labels, Gauge>::default();
        let exporter_sent = Family::<Labels, Counter>::default();
        let exporter_failed = Family::<Labels, Counter>::default();
        let exporter_queue = Family::<Labels, Gauge>::default();
        let exporter_load = Family::<Labels, FloatGauge>::default();
        let pipeline_queue = Family::<Labels, Gauge>::default();
        let dropped = Family::<Labels, Counter>::default();
        let sampler_probability = Family::<Labels, FloatGauge>::default();
        let sampler_sampled_out = Family::<Labels, Counter>::default();
        let sampler_input_rate = Family::<Labels, FloatGauge>::default();
        let exporter_concurrency = Family::<Labels, Gauge>::default();
        let config_reload = Family::<Labels, Counter>::default();
        let queue_corrupt = Family::<Labels, Counter>::default();
        let queue_replayed = Family::<Labels, Counter>::default();
        registry.register(
            "sluice_queue_corrupt_records",
            "Damaged records (torn or failing their checksum) found in a persistent queue on start",
            queue_corrupt.clone(),
        );
        registry.register(
            "sluice_queue_replayed_items",
            "Items found in a persistent queue on start and queued again for delivery",
            queue_replayed.clone(),
        );
        let memory = Family::<Labels, Gauge>::default();
        registry.register(
            "sluice_memory_bytes",
            "The memory budget: bytes charged to data in flight (charged), and the levels above which new data is refused (soft_limit) and charges never pass (hard_limit)",
            memory.clone(),
        );
        registry.register(
            "sluice_config_reload",
            "Configuration reloads, by result (success, failure)",
            config_reload.clone(),
        );
        registry.register(
            "sluice_exporter_concurrency_limit",
            "Requests an exporter may have in flight (adaptive concurrency)",
            exporter_concurrency.clone(),
        );
        registry.register(
            "sluice_receiver_accepted_items",
            "Items (spans, data points, log records, profile samples) accepted into pipelines",
            receiver_accepted.clone(),
        );
        registry.register(
            "sluice_receiver_refused_items",
            "Items refused to clients (malformed, too large, pipeline full, no pipeline)",
            receiver_refused.clone(),
        );
        registry.register(
            "sluice_receiver_refused_requests",
            "Requests refused to clients, by reason (counts undecodable requests whose items are unknown)",
            receiver_refused_requests.clone(),
        );
        registry.register(
            "sluice_receiver_connections_refused",
            "Connections a receiver closed or refused before a request was read (max_connections, header_timeout, tls_handshake)",
            receiver_connections_refused.clone(),
        );
        registry.register(
            "sluice_receiver_connections",
            "Connections a receiver's listeners hold open",
            receiver_connections.clone(),
        );
        registry.register(
            "sluice_receiver_kafka_lag",
            "Records on the broker after the consumer group's committed offset, per partition (librdkafka's consumer_lag)",
            kafka_lag.clone(),
        );
        registry.register(
            "sluice_receiver_kafka_unacknowledged",
            "Records read from a partition and not yet delivered by every exporter (their offsets are not committed)",
            kafka_unacked.clone(),
        );
        registry.register(
            "sluice_exporter_sent_items",
            "Items delivered by exporters",
            exporter_sent.clone(),
        );
        registry.register(
            "sluice_exporter_failed_items",
            "Items an exporter gave up on (also counted in sluice_dropped_items_total)",
            exporter_failed.clone(),
        );
        registry.register(
            "sluice_exporter_queue_items",
            "Items waiting in or being sent from an exporter queue",
            exporter_queue.clone(),
        );
        registry.register(
            "sluice_exporter_load",
            "Exporter load (1.0 = at capacity)",
            exporter_load.clone(),
        );
        registry.register(
            "sluice_pipeline_queue_items",
            "Items accepted by a pipeline and not yet handed to its exporters",
            pipeline_queue.clone(),
        );
        registry.register(
            "sluice_dropped_items",
            "Items dropped, by component and reason",
            dropped.clone(),
        );
        registry.register(
            "sluice_sampler_probability",
            "Current sampling probability of a sampler",
            sampler_probability.clone(),
        );
        registry.register(
            "sluice_sampler_sampled_out_items",
            "Items a sampler did not keep, by why its probability was below max (configured, load, target_rate, tier)",
            sampler_sampled_out.clone(),
        );
        registry.register(
            "sluice_sampler_input_rate",
            "Items per second (spans + log records) arriving at a sampler",
            sampler_input_rate.clone(),
        );
        let endpoint_up = Family::<Labels, Gauge>::default();
        registry.register(
            "sluice_exporter_endpoint_up",
            "Whether a balancing exporter routes new data to a gateway (1) or left it out after connection failures (0)",
            endpoint_up.clone(),
        );
        let endpoint_rerouted = Family::<Labels, Counter>::default();
        registry.register(
            "sluice_exporter_endpoint_rerouted_items",
            "Items queued for a gateway that was down or gone, delivered to the gateways that took over its share",
            endpoint_rerouted.clone(),
        );
        Self {
            endpoint_up,
            endpoint_rerouted,
            registry: Arc::new(registry),
            receiver_accepted,
            receiver_refused,
            receiver_refused_requests,
            receiver_connections_refused,
            receiver_connections,
            kafka_lag,
            kafka_unacked,
            exporter_sent,
            exporter_failed,
            exporter_queue,
            exporter_load,
            pipeline_queue,
            dropped,
            sampler_probability,
            sampler_sampled_out,
            sampler_input_rate,
            exporter_concurrency,
            config_reload,
            memory,
            queue_corrupt,
            queue_replayed,
        }
    }

    /// `sluice_memory_bytes{kind}`: the budget's charge and levels.
    pub fn memory(&self, kind: &str) -> Gauge {
        self.memory
            .get_or_create(&labels(&[("kind", kind)]))
            .clone()
    }

    /// `sluice_queue_corrupt_records_total{exporter}`.
    pub fn queue_corrupt(&self, exporter: &str) -> Counter {
        self.queue_corrupt
            .get_or_create(&labels(&[("exporter", exporter)]))
            .clone()
    }

    /// `sluice_queue_replayed_items_total{exporter,signal}`.
    pub fn queue_replayed(&self, exporter: &str, signal: Signal) -> Counter {
        self.queue_replayed
            .get_or_create(&labels(&[
                ("exporter", exporter),
                ("signal", signal.as_str()),
            ]))
            .clone()
    }

    /// `sluice_config_reload_total{result}`.
    pub fn config_reload(&self, result: &str) -> Counter {
        self.config_reload
            .get_or_create(&labels(&[("result", result)]))
            .clone()
    }

    /// Prometheus text exposition of everything.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    /// `sluice_receiver_accepted_items_total{receiver,signal}`.
    pub fn receiver_accepted(&self, receiver: &str, signal: Signal) -> Counter {
        self.receiver_accepted
            .get_or_create(&labels(&[
                ("receiver", receiver),
                ("signal", signal.as_str()),
            ]))
            .clone()
    }

    /// `sluice_receiver_refused_items_total{receiver,signal,reason}`.
    pub fn receiver_refused(&self, receiver: &str, signal: Signal, reason: &str) -> Counter {
        self.receiver_refused
            .get_or_create(&labels(&[
                ("receiver", receiver),
                ("signal", signal.as_str()),
                ("reason", reason),
            ]))
            .clone()
    }

    /// `sluice_receiver_refused_requests_total{receiver,signal,reason}`.
    pub fn receiver_refused_requests(
        &self,
        receiver: &str,
        signal: Signal,
        reason: &str,
    ) -> Counter {
        self.receiver_refused_requests
            .get_or_create(&labels(&[
                ("receiver", receiver),
                ("signal", signal.as_str()),
                ("reason", reason),
            ]))
            .clone()
    }

    /// `sluice_receiver_refused_requests_total{receiver,reason}` for requests that name no signal
    /// (an unknown path or method), so they are counted like every other refusal.
    pub fn receiver_refused_requests_unrouted(&self, receiver: &str, reason: &str) -> Counter {
        self.receiver_refused_requests
            .get_or_create(&labels(&[("receiver", receiver), ("reason", reason)]))
            .clone()
    }

    /// `sluice_receiver_connections_refused_total{receiver,listener,reason}`.
    pub fn receiver_connections_refused(
        &self,
        receiver: &str,
        listener: &str,
        reason: &str,
    ) -> Counter {
        self.receiver_connections_refused
            .get_or_create(&labels(&[
                ("receiver", receiver),
                ("listener", listener),
                ("reason", reason),
            ]))
            .clone()
    }

    /// `sluice_receiver_connections{receiver,listener}`: open connections.
    pub fn receiver_connections(&self, receiver: &str, listener: &str) -> Gauge {
        self.receiver_connections
            .get_or_create(&labels(&[("receiver", receiver), ("listener", listener)]))
            .clone()
    }

    /// `sluice_receiver_kafka_lag{receiver,topic,partition}`.
    pub fn kafka_lag(&self, receiver: &str, topic: &str, partition: i32) -> Gauge {
        let p = partition.to_string();
        self.kafka_lag
            .get_or_create(&labels(&[
                ("receiver", receiver),
                ("topic", topic),
                ("partition", &p),
            ]))
            .clone()
    }

    /// `sluice_receiver_kafka_unacknowledged{receiver,topic,partition}`.
    pub fn kafka_unacked(&self, receiver: &str, topic: &str, partition: i32) -> Gauge {
        let p = partition.to_string();
        self.kafka_unacked
            .get_or_create(&labels(&[
                ("receiver", receiver),
                ("topic", topic),
                ("partition", &p),
            ]))
            .clone()
    }

    /// `sluice_exporter_sent_items_total{exporter,signal}`.
    pub fn exporter_sent(&self, exporter: &str, signal: Signal) -> Counter {
        self.exporter_sent
            .get_or_create(&labels(&[
                ("exporter", exporter),
                ("signal", signal.as_str()),
            ]))
            .clone()
    }

    /// `sluice_exporter_failed_items_total{exporter,signal}`.
    pub fn exporter_failed(&self, exporter: &str, signal: Signal) -> Counter {
        self.exporter_failed
            .get_or_create(&labels(&[
                ("exporter", exporter),
                ("signal", signal.as_str()),
            ]))
            .clone()
    }

    /// `sluice_exporter_queue_items{exporter,signal}`.
    pub fn exporter_queue(&self, exporter: &str, signal: Signal) -> Gauge {
        self.exporter_queue
            .get_or_create(&labels(&[
                ("exporter", exporter),
                ("signal", signal.as_str()),
            ]))
            .clone()
    }

    /// `sluice_exporter_load{exporter}`.
    pub fn exporter_load(&self, exporter: &str) -> FloatGauge {
        self.exporter_load
            .get_or_create(&labels(&[("exporter", exporter)]))
            .clone()
    }

    /// `sluice_pipeline_queue_items{pipeline,signal}`.
    pub fn pipeline_queue(&self, pipeline: &str, signal: Signal) -> Gauge {
        self.pipeline_queue
            .get_or_create(&labels(&[
                ("pipeline", pipeline),
                ("signal", signal.as_str()),
            ]))
            .clone()
    }

    /// `sluice_dropped_items_total{component,signal,reason}`.
    pub fn dropped(&self, component: &str, signal: Signal, reason: DropReason) -> Counter {
        self.dropped
            .get_or_create(&labels(&[
                ("component", component),
                ("signal", signal.as_str()),
                ("reason", reason.as_str()),
            ]))
            .clone()
    }
}

impl Metrics {
    /// `sluice_exporter_endpoint_up{exporter,endpoint}`: a balancing exporter's gateway health.
    pub fn endpoint_up(&self, exporter: &str, endpoint: &str) -> Gauge {
        self.endpoint_up
            .get_or_create(&labels(&[("exporter", exporter), ("endpoint", endpoint)]))
            .clone()
    }

    /// `sluice_exporter_endpoint_rerouted_items_total{exporter,endpoint}`: items of `endpoint`'s
    /// queue delivered elsewhere while it was down.
    pub fn endpoint_rerouted(&self, exporter: &str, endpoint: &str) -> Counter {
        self.endpoint_rerouted
            .get_or_create(&labels(&[("exporter", exporter), ("endpoint", endpoint)]))
            .clone()
    }

    /// `sluice_exporter_concurrency_limit{exporter}`: the adaptive in-flight request limit.
    pub fn exporter_concurrency(&self, exporter: &str) -> Gauge {
        self.exporter_concurrency
            .get_or_create(&labels(&[("exporter", exporter)]))
            .clone()
    }

    /// `sluice_sampler_probability{processor}`.
    pub fn sampler_probability(&self, processor: &str) -> FloatGauge {
        self.sampler_probability
            .get_or_create(&labels(&[("processor", processor)]))
            .clone()
    }

    /// `sluice_sampler_input_rate{processor}`.
    pub fn sampler_input_rate(&self, processor: &str) -> FloatGauge {
        self.sampler_input_rate
            .get_or_create(&labels(&[("processor", processor)]))
            .clone()
    }

    /// `sluice_sampler_sampled_out_items_total{processor,signal,reason}`.
    pub fn sampler_sampled_out(&self, processor: &str, signal: Signal, reason: &str) -> Counter {
        self.sampler_sampled_out
            .get_or_create(&labels(&[
                ("processor", processor),
                ("signal", signal.as_str()),
                ("reason", reason),
            ]))
            .clone()
    }
}

/// One counter per signal, indexed by [`Signal::index`], so hot paths skip label lookups.
#[derive(Clone, Debug)]
pub struct PerSignal<T>(pub [T; 4]);

impl<T> PerSignal<T> {
    /// Builds one value per signal.
    pub fn new(mut f: impl FnMut(Signal) -> T) -> Self {
        Self(Signal::ALL.map(&mut f))
    }

    /// The value for `s`.
    pub fn get(&self, s: Signal) -> &T {
        &self.0[s.index()]
    }
}
