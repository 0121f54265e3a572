//! pprof ingestion cost: gunzip + decode + validate + convert to OTLP profiles, for the 20k-sample
//! `large.cpu` (Go CPU profile, 23k functions), as `/ingest` takes it and as the Pyroscope push API
//! takes it (a `PushRequest` decoded from protobuf or protojson, then the same conversion).
//! Elements are pprof samples. Time is this thread's CPU time (`/proc/thread-self/schedstat`), not
//! wall time, so the rates are samples per CPU-second and hold on a busy machine.
//!
//! `cargo bench -p sluice-receivers --bench pprof`

#![allow(clippy::unwrap_used)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use prost::Message;
use sluice_receivers::pprof::convert::{decode, decode_sized, to_otlp_sized, Meta};
use sluice_receivers::pprof::push::{self, LabelPair, PushRequest, RawProfileSeries, RawSample};
use std::hint::black_box;
use std::time::Duration;

/// CPU time of the calling thread, from the scheduler's own accounting (nanoseconds).
fn thread_cpu() -> Duration {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
    Duration::from_nanos(s.split_whitespace().next().unwrap().parse().unwrap())
}

/// Runs `f` `iters` times and returns the CPU time it took.
fn cpu_time<T>(iters: u64, mut f: impl FnMut() -> T) -> Duration {
    let start = thread_cpu();
    for _ in 0..iters {
        black_box(f());
    }
    thread_cpu() - start
}

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
    g.bench_function("ingest: decode+convert", |b| {
        b.iter_custom(|n| {
            cpu_time(n, || {
                let (p, size) = decode_sized(black_box(&body), 256 << 20).unwrap();
                to_otlp_sized(&p, size, &meta).unwrap()
            })
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
        b.iter_custom(|n| {
            cpu_time(n, || {
                let r = push::decode_request(black_box(&proto_body), false).unwrap();
                push::convert(&r, 256 << 20).unwrap().finish()
            })
        })
    });
    let json_body = serde_json::json!({"series": [{
        "labels": [{"name": "service_name", "value": "bench"}],
        "samples": [{"rawProfile": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &body)}],
    }]})
    .to_string();
    g.bench_function("push API JSON: decode+convert", |b| {
        b.iter_custom(|n| {
            cpu_time(n, || {
                let r = push::decode_request(black_box(json_body.as_bytes()), true).unwrap();
                push::convert(&r, 256 << 20).unwrap().finish()
            })
        })
    });
    g.finish();
}

criterion_group!(benches, large_cpu);
criterion_main!(benches);
