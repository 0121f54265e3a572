//! The OpenTelemetry Collector ClickHouse exporter's schema (same tables, columns and types, so
//! Grafana's ClickHouse data source works unchanged), plus `otel_profiles`.

use super::config::ClickhouseExporterConfig;
use sluice_config::Signal;

const ATTR_INDEXES: &str = "
    INDEX idx_res_attr_key mapKeys(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_res_attr_value mapValues(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_scope_attr_key mapKeys(ScopeAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_scope_attr_value mapValues(ScopeAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_attr_key mapKeys(Attributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_attr_value mapValues(Attributes) TYPE bloom_filter(0.01) GRANULARITY 1";

const METRIC_COMMON: &str = "
    ResourceAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    ResourceSchemaUrl String CODEC(ZSTD(1)),
    ScopeName String CODEC(ZSTD(1)),
    ScopeVersion String CODEC(ZSTD(1)),
    ScopeAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    ScopeDroppedAttrCount UInt32 CODEC(ZSTD(1)),
    ScopeSchemaUrl String CODEC(ZSTD(1)),
    ServiceName LowCardinality(String) CODEC(ZSTD(1)),
    MetricName String CODEC(ZSTD(1)),
    MetricDescription String CODEC(ZSTD(1)),
    MetricUnit String CODEC(ZSTD(1)),
    Attributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    StartTimeUnix DateTime64(9) CODEC(Delta, ZSTD(1)),
    TimeUnix DateTime64(9) CODEC(Delta, ZSTD(1)),";

const EXEMPLARS: &str = "
    Exemplars Nested (
        FilteredAttributes Map(LowCardinality(String), String),
        TimeUnix DateTime64(9),
        Value Float64,
        SpanId String,
        TraceId String
    ) CODEC(ZSTD(1)),";

const TRACES_TTL_COLUMN: &str = "toDateTime(Timestamp)";
const TRACE_ID_TS_TTL_COLUMN: &str = "toDateTime(Start)";
const LOGS_TTL_COLUMN: &str = "TimestampTime";
const METRICS_TTL_COLUMN: &str = "toDateTime(TimeUnix)";
const PROFILES_TTL_COLUMN: &str = "toDateTime(Timestamp)";

/// The TTL expression of a table holding `signal` with time column `col`, as ClickHouse prints
/// it back in `system.tables` (so a changed retention can be told from an unchanged one).
fn ttl_expr(cfg: &ClickhouseExporterConfig, signal: Signal, col: &str) -> Option<String> {
    cfg.ttl
        .of(signal)
        .map(|d| format!("{col} + toIntervalSecond({})", d.0.as_secs()))
}

/// A table that carries a TTL, and the TTL it should have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableTtl {
    /// Table name (without the database).
    pub table: String,
    /// The signal whose retention it follows.
    pub signal: Signal,
    /// `COLUMN + toIntervalSecond(N)`, or `None` to keep rows forever.
    pub expr: Option<String>,
}

/// Every table with a TTL clause and what that clause should say, so a changed `ttl` can be
/// brought up to date with `ALTER TABLE … MODIFY TTL` instead of recreating tables.
pub fn ttl_tables(cfg: &ClickhouseExporterConfig) -> Vec<TableTtl> {
    let t = &cfg.tables;
    let one = |table: String, signal: Signal, col: &str| TableTtl {
        expr: ttl_expr(cfg, signal, col),
        table,
        signal,
    };
    vec![
        one(t.traces.clone(), Signal::Traces, TRACES_TTL_COLUMN),
        one(
            format!("{}_trace_id_ts", t.traces),
            Signal::Traces,
            TRACE_ID_TS_TTL_COLUMN,
        ),
        one(t.logs.clone(), Signal::Logs, LOGS_TTL_COLUMN),
        one(t.metrics_gauge.clone(), Signal::Metrics, METRICS_TTL_COLUMN),
        one(t.metrics_sum.clone(), Signal::Metrics, METRICS_TTL_COLUMN),
        one(
            t.metrics_histogram.clone(),
            Signal::Metrics,
            METRICS_TTL_COLUMN,
        ),
        one(
            t.metrics_exp_histogram.clone(),
            Signal::Metrics,
            METRICS_TTL_COLUMN,
        ),
        one(
            t.metrics_summary.clone(),
            Signal::Metrics,
            METRICS_TTL_COLUMN,
        ),
        one(t.profiles.clone(), Signal::Profiles, PROFILES_TTL_COLUMN),
    ]
}

/// The TTL clause in a table's `engine_full` (`… TTL expr SETTINGS …`), whitespace removed.
pub fn current_ttl(engine_full: &str) -> Option<String> {
    let start = engine_full.find(" TTL ")? + " TTL ".len();
    let rest = engine_full.get(start..)?;
    let end = rest.find(" SETTINGS ").unwrap_or(rest.len());
    rest.get(..end).map(squeeze)
}

/// Drops whitespace so formatting differences do not count as a change.
pub fn squeeze(s: &str) -> String {
    s.chars().filter(|c| !c.is_whitespace()).collect()
}

/// Every DDL statement, in the order they must run.
pub fn statements(cfg: &ClickhouseExporterConfig) -> Vec<String> {
    let db = &cfg.database;
    let on_cluster = cfg
        .cluster
        .as_ref()
        .map(|c| format!("ON CLUSTER {c}"))
        .unwrap_or_default();
    let engine = &cfg.table_engine;
    let ttl = |signal: Signal, col: &str| {
        ttl_expr(cfg, signal, col)
            .map(|e| format!("TTL {e}"))
            .unwrap_or_default()
    };
    let t = &cfg.tables;
    let metric_table = |name: &str, specific: &str| {
        format!(
            "CREATE TABLE IF NOT EXISTS {db}.{name} {on_cluster} ({METRIC_COMMON}{specific}{ATTR_INDEXES}
) ENGINE = {engine}
{ttl}
PARTITION BY toDate(TimeUnix)
ORDER BY (ServiceName, MetricName, Attributes, toUnixTimestamp64Nano(TimeUnix))
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1",
            ttl = ttl(Signal::Metrics, METRICS_TTL_COLUMN)
        )
    };
    vec![
        format!("CREATE DATABASE IF NOT EXISTS {db} {on_cluster}"),
        format!(
            "CREATE TABLE IF NOT EXISTS {db}.{traces} {on_cluster} (
    Timestamp DateTime64(9) CODEC(Delta(8), ZSTD(1)),
    TraceId String CODEC(ZSTD(1)),
    SpanId String CODEC(ZSTD(1)),
    ParentSpanId String CODEC(ZSTD(1)),
    TraceState String CODEC(ZSTD(1)),
    SpanName LowCardinality(String) CODEC(ZSTD(1)),
    SpanKind LowCardinality(String) CODEC(ZSTD(1)),
    ServiceName LowCardinality(String) CODEC(ZSTD(1)),
    ResourceAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    ScopeName String CODEC(ZSTD(1)),
    ScopeVersion String CODEC(ZSTD(1)),
    SpanAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    Duration UInt64 CODEC(T64, ZSTD(1)),
    StatusCode LowCardinality(String) CODEC(ZSTD(1)),
    StatusMessage String CODEC(ZSTD(1)),
    Events Nested (
        Timestamp DateTime64(9),
        Name LowCardinality(String),
        Attributes Map(LowCardinality(String), String)
    ) CODEC(ZSTD(1)),
    Links Nested (
        TraceId String,
        SpanId String,
        TraceState String,
        Attributes Map(LowCardinality(String), String)
    ) CODEC(ZSTD(1)),
    INDEX idx_trace_id TraceId TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_res_attr_key mapKeys(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_res_attr_value mapValues(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_span_attr_key mapKeys(SpanAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_span_attr_value mapValues(SpanAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_duration Duration TYPE minmax GRANULARITY 1
) ENGINE = {engine}
PARTITION BY toDate(Timestamp)
ORDER BY (ServiceName, SpanName, toDateTime(Timestamp))
{ttl}
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1",
            traces = t.traces,
            ttl = ttl(Signal::Traces, TRACES_TTL_COLUMN)
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {db}.{traces}_trace_id_ts {on_cluster} (
    TraceId String CODEC(ZSTD(1)),
    Start SimpleAggregateFunction(min, DateTime) CODEC(ZSTD(1)),
    End SimpleAggregateFunction(max, DateTime) CODEC(ZSTD(1))
) ENGINE = {engine}
PARTITION BY toStartOfWeek(Start)
ORDER BY (TraceId)
{ttl}
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1",
            traces = t.traces,
            ttl = ttl(Signal::Traces, TRACE_ID_TS_TTL_COLUMN)
        ),
        format!(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.{traces}_trace_id_ts_mv {on_cluster}
TO {db}.{traces}_trace_id_ts
AS SELECT
    TraceId,
    min(Timestamp) AS Start,
    max(Timestamp) AS End
FROM {db}.{traces}
WHERE TraceId != ''
GROUP BY TraceId",
            traces = t.traces
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {db}.{logs} {on_cluster} (
    Timestamp DateTime64(9) CODEC(Delta(8), ZSTD(1)),
    TimestampTime DateTime DEFAULT toDateTime(Timestamp),
    TraceId String CODEC(ZSTD(1)),
    SpanId String CODEC(ZSTD(1)),
    TraceFlags UInt8,
    SeverityText LowCardinality(String) CODEC(ZSTD(1)),
    SeverityNumber UInt8,
    ServiceName LowCardinality(String) CODEC(ZSTD(1)),
    Body String CODEC(ZSTD(1)),
    ResourceSchemaUrl LowCardinality(String) CODEC(ZSTD(1)),
    ResourceAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    ScopeSchemaUrl LowCardinality(String) CODEC(ZSTD(1)),
    ScopeName String CODEC(ZSTD(1)),
    ScopeVersion LowCardinality(String) CODEC(ZSTD(1)),
    ScopeAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    LogAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    EventName String CODEC(ZSTD(1)),
    INDEX idx_trace_id TraceId TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_res_attr_key mapKeys(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_res_attr_value mapValues(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_scope_attr_key mapKeys(ScopeAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_scope_attr_value mapValues(ScopeAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_log_attr_key mapKeys(LogAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_log_attr_value mapValues(LogAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_body Body TYPE tokenbf_v1(32768, 3, 0) GRANULARITY 8
) ENGINE = {engine}
PARTITION BY toDate(TimestampTime)
PRIMARY KEY (ServiceName, TimestampTime)
ORDER BY (ServiceName, TimestampTime, Timestamp)
{ttl}
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1",
            logs = t.logs,
            ttl = ttl(Signal::Logs, LOGS_TTL_COLUMN)
        ),
        metric_table(
            &t.metrics_gauge,
            &format!(
                "
    Value Float64 CODEC(ZSTD(1)),
    Flags UInt32 CODEC(ZSTD(1)),{EXEMPLARS}"
            ),
        ),
        metric_table(
            &t.metrics_sum,
            &format!(
                "
    Value Float64 CODEC(ZSTD(1)),
    Flags UInt32 CODEC(ZSTD(1)),{EXEMPLARS}
    AggregationTemporality Int32 CODEC(ZSTD(1)),
    IsMonotonic Boolean CODEC(Delta, ZSTD(1)),"
            ),
        ),
        metric_table(
            &t.metrics_histogram,
            &format!(
                "
    Count UInt64 CODEC(Delta, ZSTD(1)),
    Sum Float64 CODEC(ZSTD(1)),
    BucketCounts Array(UInt64) CODEC(ZSTD(1)),
    ExplicitBounds Array(Float64) CODEC(ZSTD(1)),{EXEMPLARS}
    Flags UInt32 CODEC(ZSTD(1)),
    Min Float64 CODEC(ZSTD(1)),
    Max Float64 CODEC(ZSTD(1)),
    AggregationTemporality Int32 CODEC(ZSTD(1)),"
            ),
        ),
        metric_table(
            &t.metrics_exp_histogram,
            &format!(
                "
    Count UInt64 CODEC(Delta, ZSTD(1)),
    Sum Float64 CODEC(ZSTD(1)),
    Scale Int32 CODEC(ZSTD(1)),
    ZeroCount UInt64 CODEC(ZSTD(1)),
    PositiveOffset Int32 CODEC(ZSTD(1)),
    PositiveBucketCounts Array(UInt64) CODEC(ZSTD(1)),
    NegativeOffset Int32 CODEC(ZSTD(1)),
    NegativeBucketCounts Array(UInt64) CODEC(ZSTD(1)),{EXEMPLARS}
    Flags UInt32 CODEC(ZSTD(1)),
    Min Float64 CODEC(ZSTD(1)),
    Max Float64 CODEC(ZSTD(1)),
    AggregationTemporality Int32 CODEC(ZSTD(1)),"
            ),
        ),
        metric_table(
            &t.metrics_summary,
            "
    Count UInt64 CODEC(Delta, ZSTD(1)),
    Sum Float64 CODEC(ZSTD(1)),
    ValueAtQuantiles Nested(
        Quantile Float64,
        Value Float64
    ) CODEC(ZSTD(1)),
    Flags UInt32 CODEC(ZSTD(1)),",
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {db}.{profiles} {on_cluster} (
    Timestamp DateTime64(9) CODEC(Delta, ZSTD(1)),
    ProfileId String CODEC(ZSTD(1)),
    SampleType LowCardinality(String) CODEC(ZSTD(1)),
    SampleUnit LowCardinality(String) CODEC(ZSTD(1)),
    ServiceName LowCardinality(String) CODEC(ZSTD(1)),
    ResourceAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    ScopeName String CODEC(ZSTD(1)),
    ScopeVersion String CODEC(ZSTD(1)),
    ProfileAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    SampleAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    StackHash UInt64 CODEC(ZSTD(1)),
    Addresses Array(UInt64) CODEC(ZSTD(1)),
    FunctionNames Array(LowCardinality(String)) CODEC(ZSTD(1)),
    FileNames Array(LowCardinality(String)) CODEC(ZSTD(1)),
    LineNumbers Array(Int32) CODEC(ZSTD(1)),
    MappingFileNames Array(LowCardinality(String)) CODEC(ZSTD(1)),
    Values Array(Int64) CODEC(ZSTD(1)),
    TimestampsUnixNano Array(UInt64) CODEC(ZSTD(1)),
    DurationNano UInt64 CODEC(ZSTD(1)),
    Period Int64 CODEC(ZSTD(1)),
    PeriodType LowCardinality(String) CODEC(ZSTD(1)),
    PeriodUnit LowCardinality(String) CODEC(ZSTD(1)),
    TraceId String CODEC(ZSTD(1)),
    SpanId String CODEC(ZSTD(1)),
    INDEX idx_trace_id TraceId TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_res_attr_key mapKeys(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_res_attr_value mapValues(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1
) ENGINE = {engine}
PARTITION BY toDate(Timestamp)
ORDER BY (ServiceName, SampleType, toDateTime(Timestamp))
{ttl}
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1",
            profiles = t.profiles,
            ttl = ttl(Signal::Profiles, PROFILES_TTL_COLUMN)
        ),
    ]
}
