//! Sampler cost: the decision per span, and what the sampler adds to a pipeline that decodes
//! OTLP requests (1,000 spans with 10 attributes each, the common benchmark shape), and what it costs
//! on a request that is still encoded (sampled on the wire).
//!
//! `cargo bench -p sluice-processors --bench sampler`

#![allow(clippy::unwrap_used)]

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use sluice_core::{Encoded, Metrics, Processor, Signal, Telemetry};
use sluice_processors::sampler::threshold::Threshold;
use sluice_processors::sampler::{decide_span, AdaptiveSampler, Decision};
use sluice_processors::sampler::{SamplerConfig, SamplerMode};
use std::hint::black_box;

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

fn request(n: u64) -> ExportTraceServiceRequest {
    let spans = (0..n)
        .map(|i| {
            let r = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let mut trace_id = r.to_be_bytes().to_vec();
            trace_id.extend_from_slice(&r.rotate_left(17).to_be_bytes());
            Span {
                trace_id,
                span_id: r.to_le_bytes().to_vec(),
                name: "GET /api/v1/items".into(),
                start_time_unix_nano: 1_700_000_000_000_000_000 + i,
                end_time_unix_nano: 1_700_000_000_000_100_000 + i,
                attributes: (0..10)
                    .map(|a| kv(&format!("attr.{a}"), "some-value-of-moderate-size"))
                    .collect(),
                ..Default::default()
            }
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "checkout")],
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

fn sampler(p: f64) -> AdaptiveSampler {
    let cfg = SamplerConfig {
        mode: SamplerMode::Fixed,
        probability: p,
        ..SamplerConfig::default()
    };
    AdaptiveSampler::new("bench", &cfg, &Metrics::new())
}

fn decision(c: &mut Criterion) {
    let spans: Vec<Span> = request(1024)
        .resource_spans
        .remove(0)
        .scope_spans
        .remove(0)
        .spans;
    let mut g = c.benchmark_group("decide_span");
    g.throughput(Throughput::Elements(spans.len() as u64));
    for p in [1.0, 0.5, 0.1] {
        let t = Decision::new(Threshold::from_probability(p, 4));
        g.bench_function(format!("p={p}"), |b| {
            b.iter_batched_ref(
                || spans.clone(),
                |spans| {
                    spans
                        .iter_mut()
                        .map(|s| decide_span(s, black_box(&t)))
                        .filter(|k| *k)
                        .count()
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

fn pipeline_cost(c: &mut Criterion) {
    let bytes = request(1000).encode_to_vec();
    let mut g = c.benchmark_group("decode_then_sample_1000_spans");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("decode only", |b| {
        b.iter(|| {
            Telemetry::Traces(ExportTraceServiceRequest::decode(black_box(&bytes[..])).unwrap())
        })
    });
    for p in [1.0, 0.1] {
        let s = sampler(p);
        g.bench_function(format!("decode + sampler p={p}"), |b| {
            b.iter(|| {
                let t = Telemetry::Traces(
                    ExportTraceServiceRequest::decode(black_box(&bytes[..])).unwrap(),
                );
                s.process(t)
            })
        });
    }
    g.finish();
    // The same request still encoded (as the receivers hand it on): sampled on the wire.
    let body = bytes::Bytes::from(bytes);
    let mut g = c.benchmark_group("wire_sample_1000_spans");
    g.throughput(Throughput::Elements(1000));
    for p in [0.5, 0.25, 0.1] {
        let s = sampler(p);
        g.bench_function(format!("sampler p={p}"), |b| {
            b.iter(|| {
                let t = Telemetry::Encoded(Encoded::new(Signal::Traces, body.clone(), 1000));
                s.process(black_box(t))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, decision, pipeline_cost);
criterion_main!(benches);
