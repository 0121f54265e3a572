//! pprof ingestion cost: gunzip + decode + validate + convert to OTLP profiles, for the 20k-sample
//! `large.cpu` (Go CPU profile, 23k functions). Reports profiles/s; samples/s = × 20,430.
//!
//! `cargo bench -p sluice-receivers --bench pprof`

#![allow(clippy::unwrap_used)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sluice_receivers::pprof::convert::{decode, to_otlp, Meta};
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
            to_otlp(&p, &meta)
        })
    });
    g.finish();
}

criterion_group!(benches, large_cpu);
criterion_main!(benches);
