//! pprof ingestion cost: gunzip + decode + validate + convert to OTLP profiles, for the 20k-sample
//! `large.cpu` (Go CPU profile, 23k functions), as `/ingest` takes it and as the Pyroscope push API
//! takes it (a `PushRequest` decoded from protobuf or protojson, then the same conversion).
//! Elements are pprof samples.
//!
//! `cargo bench -p sluice-receivers --bench pprof`

#![allow(clippy::unwrap_used)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use prost::Message;
use sluice_receivers::pprof::convert::{decode, to_otlp, Meta};
use sluice_receivers::pprof::push::{self, LabelPair, PushRequest, RawProfileSeries, RawSample};
use std::hint::black_box;

fn large_cpu(c: &mut Criterion) {
    let body = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/pprof/large.cpu"
    ))
    .unwrap();
    let meta = Meta {
        service: "bench".into(),
        ..Default::default()
    };
    let samples = decode(&body, 256 << 20).unwrap().sample.len() as u64;
    let mut g = c.benchmark_group("pprof_large_cpu");
    g.sample_size(20);
    g.throughput(Throughput::Elements(samples));
    g.bench_function("decode+convert (elements = pprof samples)", |b| {
        b.iter(|| {
            let p = decode(black_box(&body), 256 << 20).unwrap();
            to_otlp(&p, &meta).unwrap()
        })
    });
    let label = |name: &str, value: &str| LabelPair {
        name: name.into(),
        value: value.into(),
    };
    let req = PushRequest {
        series: vec![RawProfileSeries {
            labels: vec![
                label("__name__", "process_cpu"),
                label("service_name", "bench"),
                label("env", "prod"),
            ],
            samples: vec![RawSample {
                raw_profile: body.clone(),
                id: "1".into(),
            }],
        }],
    };
    let proto_body = req.encode_to_vec();
    g.bench_function("push API protobuf: decode+convert", |b| {
        b.iter(|| {
            let r = push::decode_request(black_box(&proto_body), false).unwrap();
            push::convert(&r, 256 << 20).unwrap().finish()
        })
    });
    let json_body = serde_json::json!({"series": [{
        "labels": [{"name": "service_name", "value": "bench"}],
        "samples": [{"rawProfile": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &body)}],
    }]})
    .to_string();
    g.bench_function("push API JSON: decode+convert", |b| {
        b.iter(|| {
            let r = push::decode_request(black_box(json_body.as_bytes()), true).unwrap();
            push::convert(&r, 256 << 20).unwrap().finish()
        })
    });
    g.finish();
}

criterion_group!(benches, large_cpu);
criterion_main!(benches);
