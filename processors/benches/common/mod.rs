//! The metrics request both processor benches use: delta histograms of
//! `http_request_duration_seconds` over 20 routes × 2 environments × 5 services, with 2 extra
//! attributes per point (the load generator's "small" shape).

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, Histogram, HistogramDataPoint, Metric, ResourceMetrics, ScopeMetrics,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

pub fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

/// `points` data points per request, split over 5 services; `t` seconds after a fixed start.
pub fn request(name: &str, points: usize, t: u64) -> ExportMetricsServiceRequest {
    let bounds = vec![
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ];
    let per_service = points / 5;
    ExportMetricsServiceRequest {
        resource_metrics: (0..5)
            .map(|s| ResourceMetrics {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", &format!("svc-{s}"))],
                    ..Default::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![Metric {
                        name: name.into(),
                        unit: "s".into(),
                        data: Some(metric::Data::Histogram(Histogram {
                            aggregation_temporality: 1,
                            data_points: (0..per_service)
                                .map(|i| HistogramDataPoint {
                                    attributes: vec![
                                        kv("http.route", &format!("/api/r{}", i % 20)),
                                        kv("env", if i % 2 == 0 { "prod" } else { "staging" }),
                                        kv("attr.0", "some-value-of-moderate-size-31b"),
                                        kv("attr.1", "some-value-of-moderate-size-31b"),
                                    ],
                                    time_unix_nano: 1_700_000_000_000_000_000 + t * 1_000_000_000,
                                    count: 66,
                                    bucket_counts: (0..12)
                                        .map(|b| (b * 7 + i as u64) % 11)
                                        .collect(),
                                    explicit_bounds: bounds.clone(),
                                    sum: Some(12.5),
                                    ..Default::default()
                                })
                                .collect(),
                        })),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    }
}
