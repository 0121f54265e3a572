//! ClickHouse exporter settings.

use serde::Deserialize;
use sluice_config::{HumanDuration, TlsClientConfig};

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

/// How rows are sent to ClickHouse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ChFormat {
    /// `FORMAT Native`: columns with LowCardinality dictionaries, built straight from the encoded
    /// spans and logs (no decode); the cheapest format for the server to insert.
    #[default]
    Native,
    /// `FORMAT RowBinary` rows from the decoded request (what Sluice sent before Native).
    RowBinary,
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
    /// HTTP interface, e.g. `http://127.0.0.1:8123` or `https://ch:8443`; credentials in it
    /// (`http://user:pass@host`) are taken out and sent like `username`/`password`.
    pub endpoint: String,
    /// TLS settings for an `https://` endpoint (absent: the system's trust store).
    pub tls: Option<TlsClientConfig>,
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
    pub ttl: sluice_config::Retention,
    /// Adds `ON CLUSTER` to every DDL statement.
    pub cluster: Option<String>,
    /// Table engine, e.g. `MergeTree()` or `ReplicatedMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}')`.
    #[serde(default = "default_ch_engine")]
    pub table_engine: String,
    /// Insert compression.
    #[serde(default)]
    pub compression: ChCompression,
    /// Insert format: `native` (default) or `row_binary`.
    #[serde(default)]
    pub format: ChFormat,
    /// Let ClickHouse buffer inserts server-side (`async_insert=1, wait_for_async_insert=1`).
    #[serde(default)]
    pub async_insert: bool,
    /// Per-insert timeout.
    #[serde(default = "default_ch_timeout")]
    pub timeout: HumanDuration,
    /// Merge queued batches into inserts of at least this many rows (fewer, larger parts)...
    #[serde(default = "default_ch_min_rows")]
    pub min_insert_rows: u64,
    /// ...or of at most about this many bytes of OTLP protobuf (spans and logs kept encoded):
    /// what one insert holds in memory, whatever the rows' size.
    #[serde(default = "default_ch_max_bytes")]
    pub max_insert_bytes: sluice_config::ByteSize,
    /// ...or of whatever arrived within this time.
    #[serde(default = "default_ch_max_delay")]
    pub max_insert_delay: HumanDuration,
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
fn default_ch_max_bytes() -> sluice_config::ByteSize {
    sluice_config::ByteSize(16 << 20)
}
fn default_ch_max_delay() -> HumanDuration {
    HumanDuration::from_secs(1)
}
