//! The closed set of component kinds and their typed settings.

use crate::tagged::tagged_enum;
use crate::types::{ByteSize, HumanDuration, ListenAddr};
use crate::Signal;
use serde::Deserialize;
use std::collections::BTreeMap;

tagged_enum!(ReceiverConfig { "otlp" => Otlp, "pprof" => Pprof });
tagged_enum!(ProcessorConfig { "batch" => Batch, "attributes" => Attributes, "adaptive_sampler" => AdaptiveSampler });
tagged_enum!(ExporterConfig { "file" => File, "blackhole" => Blackhole, "otlp" => Otlp, "clickhouse" => Clickhouse, "kafka" => Kafka });

const ALL: &[Signal] = &[
    Signal::Traces,
    Signal::Metrics,
    Signal::Logs,
    Signal::Profiles,
];

/// A receiver table: `[receivers.NAME]` with `type = "..."`.
#[derive(Debug, Clone)]
pub enum ReceiverConfig {
    /// OTLP over gRPC and/or HTTP.
    Otlp(OtlpReceiverConfig),
    /// pprof profiles: Pyroscope-compatible `POST /ingest` and raw `POST /v1/pprof`.
    Pprof(PprofReceiverConfig),
}

impl ReceiverConfig {
    /// Signals this receiver can produce; validation rejects pipelines asking for others.
    pub fn signals(&self) -> &'static [Signal] {
        match self {
            Self::Otlp(_) => ALL,
            Self::Pprof(_) => &[Signal::Profiles],
        }
    }

    /// The `type` string, for messages and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Otlp(_) => "otlp",
            Self::Pprof(_) => "pprof",
        }
    }
}

/// OTLP receiver settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpReceiverConfig {
    /// gRPC listen address (OTLP default port 4317); absent = no gRPC server.
    pub grpc: Option<ListenAddr>,
    /// HTTP listen address (OTLP default port 4318); absent = no HTTP server.
    pub http: Option<ListenAddr>,
    /// Largest request accepted, after decompression; larger ones get 413 / RESOURCE_EXHAUSTED.
    #[serde(default = "default_max_request_size")]
    pub max_request_size: ByteSize,
    /// How long a request may wait for room in a full pipeline before it is refused (503 / UNAVAILABLE).
    #[serde(default = "default_accept_timeout")]
    pub accept_timeout: HumanDuration,
}

/// pprof receiver settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PprofReceiverConfig {
    /// HTTP listen address (Pyroscope's port is 4040).
    pub http: ListenAddr,
    /// Largest profile accepted, after decompression.
    #[serde(default = "default_max_request_size")]
    pub max_request_size: ByteSize,
    /// How long a request may wait for room in a full pipeline before it is refused (503).
    #[serde(default = "default_accept_timeout")]
    pub accept_timeout: HumanDuration,
}

fn default_max_request_size() -> ByteSize {
    ByteSize::mib(16)
}
fn default_accept_timeout() -> HumanDuration {
    HumanDuration::from_secs(2)
}

/// A processor table: `[processors.NAME]`.
#[derive(Debug, Clone)]
pub enum ProcessorConfig {
    /// Groups items into larger requests.
    Batch(BatchConfig),
    /// Inserts, updates or deletes attributes on spans, log records and metric data points.
    Attributes(AttributesConfig),
    /// Consistent probability sampling of traces (and their logs), steered by exporter load.
    AdaptiveSampler(SamplerConfig),
}

impl ProcessorConfig {
    /// Signals this processor can handle.
    pub fn signals(&self) -> &'static [Signal] {
        match self {
            Self::Batch(_) => ALL,
            // Profile attributes live in a shared dictionary; editing them is not supported.
            Self::Attributes(_) => &[Signal::Traces, Signal::Metrics, Signal::Logs],
            // Metrics and profiles pass through untouched.
            Self::AdaptiveSampler(_) => ALL,
        }
    }

    /// The `type` string.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Batch(_) => "batch",
            Self::Attributes(_) => "attributes",
            Self::AdaptiveSampler(_) => "adaptive_sampler",
        }
    }
}

/// Batch processor settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// Flush when this many items (spans, data points, log records, samples) are buffered.
    #[serde(default = "default_batch_items")]
    pub max_items: usize,
    /// Flush before a batch's OTLP protobuf grows past this, so forwarded batches stay under the
    /// next hop's message limit (4 MiB by default in gRPC servers and the OpenTelemetry Collector).
    #[serde(default = "default_batch_bytes")]
    pub max_bytes: ByteSize,
    /// Flush a non-empty batch at least this often.
    #[serde(default = "default_batch_timeout")]
    pub timeout: HumanDuration,
}

fn default_batch_items() -> usize {
    8192
}
fn default_batch_bytes() -> ByteSize {
    ByteSize::mib(3)
}
fn default_batch_timeout() -> HumanDuration {
    HumanDuration::from_millis(200)
}

/// How the sampler chooses its probability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SamplerMode {
    /// Steer the probability by exporter load (AIMD with hysteresis), and `target_rate` if set.
    #[default]
    Adaptive,
    /// Always `probability`.
    Fixed,
    /// The most restrictive matching tier of `tiers`, with `hold` against flapping.
    Tiered,
}

/// One tier of a tiered sampling policy; it matches when all its conditions hold.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplerTier {
    /// Matches when the sampler's input (spans + log records per second) is above this.
    pub when_input_rate_above: Option<f64>,
    /// Matches when the most loaded downstream exporter's load is above this.
    pub when_load_above: Option<f64>,
    /// Probability while this tier applies.
    pub probability: f64,
}

/// Adaptive sampler settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplerConfig {
    /// adaptive (default), fixed or tiered.
    #[serde(default)]
    pub mode: SamplerMode,
    /// Fixed probability, or the starting one in adaptive mode.
    #[serde(default = "one")]
    pub probability: f64,
    /// Lowest probability adaptive mode may reach.
    #[serde(default = "default_min_probability")]
    pub min_probability: f64,
    /// Highest probability (the one used when the backends are idle).
    #[serde(default = "one")]
    pub max_probability: f64,
    /// Exporter load above which the probability is cut.
    #[serde(default = "default_high_watermark")]
    pub high_watermark: f64,
    /// Exporter load below which the probability may rise again.
    #[serde(default = "default_low_watermark")]
    pub low_watermark: f64,
    /// How often the probability is adjusted.
    #[serde(default = "default_sampler_interval")]
    pub interval: HumanDuration,
    /// Goal for kept items per second (spans + log records); lowered further under load.
    pub target_rate: Option<f64>,
    /// Items per second kept for every `service.name`, whatever the load, so quiet services are not starved.
    pub per_service_floor: Option<f64>,
    /// Hex digits of the `th` threshold written into trace state (1 to 14).
    #[serde(default = "default_precision")]
    pub precision: u8,
    /// Tiers for tiered mode.
    #[serde(default)]
    pub tiers: Vec<SamplerTier>,
    /// Tiered mode: how long a tier keeps applying after its condition stopped holding.
    #[serde(default = "default_hold")]
    pub hold: HumanDuration,
}

impl Default for SamplerConfig {
    /// The documented defaults: adaptive, p from 1 down to 0.001, watermarks 0.8/0.3, every 1s.
    fn default() -> Self {
        Self {
            mode: SamplerMode::default(),
            probability: one(),
            min_probability: default_min_probability(),
            max_probability: one(),
            high_watermark: default_high_watermark(),
            low_watermark: default_low_watermark(),
            interval: default_sampler_interval(),
            target_rate: None,
            per_service_floor: None,
            precision: default_precision(),
            tiers: Vec::new(),
            hold: default_hold(),
        }
    }
}

fn one() -> f64 {
    1.0
}
fn default_min_probability() -> f64 {
    0.001
}
fn default_high_watermark() -> f64 {
    0.8
}
fn default_low_watermark() -> f64 {
    0.3
}
fn default_sampler_interval() -> HumanDuration {
    HumanDuration::from_secs(1)
}
fn default_precision() -> u8 {
    4
}
fn default_hold() -> HumanDuration {
    HumanDuration::from_secs(30)
}

/// Attributes processor settings: an ordered list of actions.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttributesConfig {
    /// Actions applied in order to each span, log record and data point.
    pub actions: Vec<AttributeAction>,
}

/// One attribute edit.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttributeAction {
    /// The attribute key.
    pub key: String,
    /// What to do with it.
    pub action: AttributeActionKind,
    /// The string value for insert, update and upsert.
    pub value: Option<String>,
}

/// What an attribute action does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttributeActionKind {
    /// Add the key when absent.
    Insert,
    /// Change the value when present.
    Update,
    /// Insert or update.
    Upsert,
    /// Remove the key.
    Delete,
}

/// An exporter table: `[exporters.NAME]`.
#[derive(Debug, Clone)]
pub enum ExporterConfig {
    /// OTLP/JSON lines files, one per signal, rotated by size.
    File(FileExporterConfig),
    /// Discards and counts; can simulate a slow backend.
    Blackhole(BlackholeExporterConfig),
    /// Forwards over OTLP gRPC or HTTP (sidecar to gateway).
    Otlp(OtlpExporterConfig),
    /// Writes the OpenTelemetry Collector ClickHouse exporter's tables.
    Clickhouse(Box<ClickhouseExporterConfig>),
    /// Produces OTLP messages to Kafka topics (one per signal).
    Kafka(Box<KafkaExporterConfig>),
}

impl ExporterConfig {
    /// Signals this exporter can write.
    pub fn signals(&self) -> &'static [Signal] {
        ALL
    }

    /// The `type` string.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::File(_) => "file",
            Self::Blackhole(_) => "blackhole",
            Self::Otlp(_) => "otlp",
            Self::Clickhouse(_) => "clickhouse",
            Self::Kafka(_) => "kafka",
        }
    }

    /// The queue settings every exporter has.
    pub fn queue(&self) -> &QueueConfig {
        match self {
            Self::File(c) => &c.queue,
            Self::Blackhole(c) => &c.queue,
            Self::Otlp(c) => &c.queue,
            Self::Clickhouse(c) => &c.queue,
            Self::Kafka(c) => &c.queue,
        }
    }

    /// Most requests in flight; adaptive concurrency finds the best number up to this.
    /// The file exporter writes one batch at a time.
    pub fn max_concurrency(&self) -> usize {
        match self {
            Self::File(_) => 1,
            Self::Blackhole(c) => c.max_concurrency,
            Self::Otlp(c) => c.max_concurrency,
            Self::Clickhouse(c) => c.max_concurrency,
            Self::Kafka(c) => c.max_concurrency,
        }
    }

    /// Whether (and how) queued batches are merged before export.
    pub fn coalesce(&self) -> Option<(u64, std::time::Duration)> {
        match self {
            Self::Clickhouse(c) if c.min_insert_rows > 1 => {
                Some((c.min_insert_rows, c.max_insert_delay.0))
            }
            _ => None,
        }
    }

    /// The retry settings every exporter has.
    pub fn retry(&self) -> &RetryConfig {
        match self {
            Self::File(c) => &c.retry,
            Self::Blackhole(c) => &c.retry,
            Self::Otlp(c) => &c.retry,
            Self::Clickhouse(c) => &c.retry,
            Self::Kafka(c) => &c.retry,
        }
    }
}

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
#[derive(Debug, Clone, Deserialize)]
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
#[derive(Debug, Clone, Deserialize)]
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

/// File exporter settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileExporterConfig {
    /// Directory for `traces.jsonl`, `metrics.jsonl`, `logs.jsonl`, `profiles.jsonl`.
    pub path: String,
    /// Rotate a file once it grows past this size.
    #[serde(default = "default_file_size")]
    pub max_file_size: ByteSize,
    /// Rotated files kept per signal (older ones are deleted).
    #[serde(default = "default_file_count")]
    pub max_files: usize,
    /// Queue settings.
    #[serde(default)]
    pub queue: QueueConfig,
    /// Retry settings.
    #[serde(default)]
    pub retry: RetryConfig,
}

fn default_file_size() -> ByteSize {
    ByteSize::mib(100)
}
fn default_file_count() -> usize {
    10
}

/// Blackhole exporter settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlackholeExporterConfig {
    /// Accept at most this many items per second (simulates a slow backend); absent = unlimited.
    pub max_rate: Option<f64>,
    /// Extra time each export takes (simulates a distant backend).
    pub latency: Option<HumanDuration>,
    /// Most exports in flight (adaptive concurrency finds the best number up to this).
    #[serde(default = "one_request")]
    pub max_concurrency: usize,
    /// Queue settings.
    #[serde(default)]
    pub queue: QueueConfig,
    /// Retry settings.
    #[serde(default)]
    pub retry: RetryConfig,
}

/// OTLP exporter transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OtlpProtocol {
    /// OTLP/gRPC.
    #[default]
    Grpc,
    /// OTLP/HTTP with protobuf bodies.
    Http,
}

/// Request body compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// gzip.
    #[default]
    Gzip,
    /// zstd.
    Zstd,
    /// No compression.
    None,
}

/// OTLP exporter settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpExporterConfig {
    /// `http://host:4317` for gRPC, `http://host:4318` for HTTP (signal paths are appended).
    pub endpoint: String,
    /// Transport.
    #[serde(default)]
    pub protocol: OtlpProtocol,
    /// Body compression.
    #[serde(default)]
    pub compression: Compression,
    /// Per-request timeout.
    #[serde(default = "default_otlp_timeout")]
    pub timeout: HumanDuration,
    /// Extra request headers (e.g. authentication).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Most requests in flight (adaptive concurrency finds the best number up to this).
    #[serde(default = "default_otlp_concurrency")]
    pub max_concurrency: usize,
    /// Queue settings.
    #[serde(default)]
    pub queue: QueueConfig,
    /// Retry settings.
    #[serde(default)]
    pub retry: RetryConfig,
}

fn one_request() -> usize {
    1
}
fn default_otlp_concurrency() -> usize {
    16
}

fn default_otlp_timeout() -> HumanDuration {
    HumanDuration::from_secs(10)
}

/// ClickHouse insert compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ChCompression {
    /// ClickHouse's native LZ4 block compression.
    #[default]
    Lz4,
    /// None.
    None,
}

/// Table names of the ClickHouse exporter (the OpenTelemetry Collector's defaults).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChTables {
    /// Spans.
    pub traces: String,
    /// Log records.
    pub logs: String,
    /// Gauge data points.
    pub metrics_gauge: String,
    /// Sum data points.
    pub metrics_sum: String,
    /// Histogram data points.
    pub metrics_histogram: String,
    /// Exponential histogram data points.
    pub metrics_exp_histogram: String,
    /// Summary data points.
    pub metrics_summary: String,
    /// Profile samples.
    pub profiles: String,
}

impl Default for ChTables {
    fn default() -> Self {
        Self {
            traces: "otel_traces".into(),
            logs: "otel_logs".into(),
            metrics_gauge: "otel_metrics_gauge".into(),
            metrics_sum: "otel_metrics_sum".into(),
            metrics_histogram: "otel_metrics_histogram".into(),
            metrics_exp_histogram: "otel_metrics_exponential_histogram".into(),
            metrics_summary: "otel_metrics_summary".into(),
            profiles: "otel_profiles".into(),
        }
    }
}

/// ClickHouse exporter settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClickhouseExporterConfig {
    /// HTTP interface, e.g. `http://127.0.0.1:8123`.
    pub endpoint: String,
    /// Database (created when `create_schema`).
    #[serde(default = "default_ch_database")]
    pub database: String,
    /// User (use `${CLICKHOUSE_USER}` to keep it out of the file).
    pub username: Option<String>,
    /// Password (use `${CLICKHOUSE_PASSWORD}`).
    pub password: Option<String>,
    /// Table names.
    #[serde(default)]
    pub tables: ChTables,
    /// Create the database, tables and materialized view on start (idempotent).
    #[serde(default = "yes")]
    pub create_schema: bool,
    /// Drop data older than this: one duration for every table, or per signal; absent = keep forever.
    #[serde(default)]
    pub ttl: crate::retention::Retention,
    /// Adds `ON CLUSTER` to every DDL statement.
    pub cluster: Option<String>,
    /// Table engine, e.g. `MergeTree()` or `ReplicatedMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}')`.
    #[serde(default = "default_ch_engine")]
    pub table_engine: String,
    /// Insert compression.
    #[serde(default)]
    pub compression: ChCompression,
    /// Let ClickHouse buffer inserts server-side (`async_insert=1, wait_for_async_insert=1`).
    #[serde(default)]
    pub async_insert: bool,
    /// Per-insert timeout.
    #[serde(default = "default_ch_timeout")]
    pub timeout: HumanDuration,
    /// Merge queued batches into inserts of at least this many rows (fewer, larger parts)...
    #[serde(default = "default_ch_min_rows")]
    pub min_insert_rows: u64,
    /// ...or of whatever arrived within this time.
    #[serde(default = "default_ch_max_delay")]
    pub max_insert_delay: HumanDuration,
    /// Most inserts in flight (adaptive concurrency finds the best number up to this).
    #[serde(default = "default_ch_concurrency")]
    pub max_concurrency: usize,
    /// Queue settings.
    #[serde(default)]
    pub queue: QueueConfig,
    /// Retry settings.
    #[serde(default)]
    pub retry: RetryConfig,
}

fn yes() -> bool {
    true
}
fn default_ch_database() -> String {
    "otel".into()
}
fn default_ch_engine() -> String {
    "MergeTree()".into()
}
fn default_ch_timeout() -> HumanDuration {
    HumanDuration::from_secs(30)
}
fn default_ch_min_rows() -> u64 {
    10_000
}
fn default_ch_max_delay() -> HumanDuration {
    HumanDuration::from_secs(1)
}
fn default_ch_concurrency() -> usize {
    4
}

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
    /// Most batches in flight (adaptive concurrency finds the best number up to this).
    #[serde(default = "default_kafka_concurrency")]
    pub max_concurrency: usize,
    /// Queue settings.
    #[serde(default)]
    pub queue: QueueConfig,
    /// Retry settings.
    #[serde(default)]
    pub retry: RetryConfig,
}

fn default_kafka_message_bytes() -> ByteSize {
    // Kafka's default `message.max.bytes` is 1,048,588 bytes including the record overhead.
    ByteSize(1_000_000)
}
fn default_kafka_timeout() -> HumanDuration {
    HumanDuration::from_secs(30)
}
fn default_kafka_concurrency() -> usize {
    8
}
