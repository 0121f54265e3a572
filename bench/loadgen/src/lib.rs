//! Realistic OTLP requests for Sluice's benchmarks: the load generator sends them, and the
//! criterion micro-benchmarks (`benches/hot_paths.rs`) measure the hot paths on the same shapes.

#![allow(clippy::cast_possible_truncation)]

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, AggregationTemporality, Histogram, HistogramDataPoint, Metric, ResourceMetrics,
    ScopeMetrics,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span, status, ResourceSpans, ScopeSpans, Span, Status,
};

/// What one generated request looks like.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Spans (or log records) per request.
    pub spans_per_request: usize,
    /// Attributes per span.
    pub attributes: usize,
    /// Bytes per attribute value.
    pub attribute_size: usize,
    /// Distinct service names (request k gets service k mod this).
    pub services: usize,
    /// Share of spans with an error status.
    pub error_ratio: f64,
}

impl Shape {
    /// The "small" spans: 2 attributes, 163 B per span encoded.
    pub const SMALL: Self = Self::new(100, 2, 31);
    /// The 10-attribute spans: 643 B per span encoded.
    pub const ATTRS10: Self = Self::new(100, 10, 43);

    /// A shape with 5 services and 1% errors.
    pub const fn new(spans_per_request: usize, attributes: usize, attribute_size: usize) -> Self {
        Self {
            spans_per_request,
            attributes,
            attribute_size,
            services: 5,
            error_ratio: 0.01,
        }
    }
}

/// xorshift64: ids that look random, deterministic per seed.
pub struct Rng(pub u64);

impl Rng {
    /// Next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| (self.next_u64() & 0xff) as u8).collect()
    }
}

/// A string attribute.
pub fn kv(k: &str, v: String) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v)),
        }),
        ..Default::default()
    }
}

/// Request number `k` of traces.
pub fn traces(a: &Shape, rng: &mut Rng, k: usize) -> ExportTraceServiceRequest {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let value = "v".repeat(a.attribute_size);
    let spans = (0..a.spans_per_request)
        .map(|i| Span {
            trace_id: rng.bytes(16),
            span_id: rng.bytes(8),
            name: format!("GET /api/v1/items/{}", i % 20),
            kind: span::SpanKind::Server as i32,
            start_time_unix_nano: now + i as u64,
            end_time_unix_nano: now + i as u64 + 1_000_000,
            attributes: (0..a.attributes)
                .map(|j| kv(&format!("attr.{j}"), value.clone()))
                .collect(),
            status: (rng.next_u64() % 10_000 < (a.error_ratio * 10_000.0) as u64).then(|| Status {
                code: status::StatusCode::Error as i32,
                message: "boom".into(),
            }),
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", format!("svc-{}", k % a.services.max(1)))],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// Request number `k` of logs.
pub fn logs(a: &Shape, rng: &mut Rng, k: usize) -> ExportLogsServiceRequest {
    let value = "v".repeat(a.attribute_size);
    let records = (0..a.spans_per_request)
        .map(|i| LogRecord {
            time_unix_nano: i as u64,
            trace_id: rng.bytes(16),
            span_id: rng.bytes(8),
            severity_number: 9,
            severity_text: "INFO".into(),
            body: Some(AnyValue {
                value: Some(any_value::Value::StringValue(format!(
                    "request {i} handled"
                ))),
            }),
            attributes: (0..a.attributes)
                .map(|j| kv(&format!("attr.{j}"), value.clone()))
                .collect(),
            ..Default::default()
        })
        .collect();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![kv("service.name", format!("svc-{}", k % a.services.max(1)))],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// Latency histogram bounds (seconds) of the generated metrics: the OpenTelemetry HTTP semantic
/// conventions' advice.
pub const LATENCY_BOUNDS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// One metrics request: `spans_per_request` delta histogram points of
/// `http_request_duration_seconds` (unit `s`) over 20 routes and two environments, each with the
/// shape's extra attributes; one data point is one item.
pub fn metrics(a: &Shape, rng: &mut Rng, k: usize) -> ExportMetricsServiceRequest {
    let value = "v".repeat(a.attribute_size);
    let points = (0..a.spans_per_request)
        .map(|i| {
            let counts: Vec<u64> = (0..=LATENCY_BOUNDS.len())
                .map(|_| rng.next_u64() % 8)
                .collect();
            let mut attributes = vec![
                kv("http.route", format!("/api/r{}", i % 20)),
                kv("env", if i % 2 == 0 { "prod" } else { "staging" }.into()),
            ];
            attributes.extend((0..a.attributes).map(|j| kv(&format!("attr.{j}"), value.clone())));
            HistogramDataPoint {
                attributes,
                start_time_unix_nano: 1_700_000_000_000_000_000 + k as u64 * 1_000_000_000,
                time_unix_nano: 1_700_000_001_000_000_000 + k as u64 * 1_000_000_000,
                count: counts.iter().sum(),
                sum: Some(counts.iter().sum::<u64>() as f64 * 0.1),
                bucket_counts: counts,
                explicit_bounds: LATENCY_BOUNDS.to_vec(),
                ..Default::default()
            }
        })
        .collect();
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![kv("service.name", format!("svc-{}", k % a.services.max(1)))],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "http_request_duration_seconds".into(),
                    unit: "s".into(),
                    data: Some(metric::Data::Histogram(Histogram {
                        data_points: points,
                        aggregation_temporality: AggregationTemporality::Delta as i32,
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}
