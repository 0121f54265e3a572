//! Criterion micro-benchmarks of Sluice's hot paths, on the load generator's span shapes (the
//! issue's anchors: "small" 163 B/span, "attrs10" 643 B/span):
//!
//! - `otlp_decode`: what the receiver does per request — the allocation-free wire check that keeps
//!   traces encoded, against a full `prost` decode (what processors and ClickHouse need);
//! - `batching`: the batch processor merging 100-span requests, still encoded or decoded, and what
//!   sizing a decoded request for `max_bytes` costs;
//! - `forward_encode`: the bytes an OTLP exporter sends for a batch (encoded: concatenation;
//!   decoded: re-encode);
//! - `clickhouse_rows`: decode + row building for the ClickHouse exporter.
//!
//! `cargo bench -p sluice-loadgen --bench hot_paths`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use sluice_config::{BatchConfig, ByteSize, HumanDuration, Signal};
use sluice_core::{Encoded, Telemetry};
use sluice_loadgen::{traces, Rng, Shape};
use sluice_processors::batch::Batcher;
use std::hint::black_box;
use tokio::time::Instant;

fn body(shape: &Shape, k: usize) -> Bytes {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ k as u64);
    traces(shape, &mut rng, k).encode_to_vec().into()
}

fn otlp_decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("otlp_decode");
    for (name, shape) in [
        ("small-100", Shape::SMALL),
        ("attrs10-100", Shape::ATTRS10),
        ("attrs10-512", Shape::new(512, 10, 43)),
    ] {
        let b = body(&shape, 0);
        g.throughput(Throughput::Elements(shape.spans_per_request as u64));
        g.bench_function(format!("{name}/wire_check"), |bench| {
            bench.iter(|| Encoded::check(Signal::Traces, black_box(b.clone())).unwrap())
        });
        g.bench_function(format!("{name}/prost_decode"), |bench| {
            bench.iter(|| ExportTraceServiceRequest::decode(black_box(&b[..])).unwrap())
        });
    }
    g.finish();
}

fn requests(n: usize, encoded: bool) -> Vec<Telemetry> {
    (0..n)
        .map(|k| {
            let b = body(&Shape::ATTRS10, k);
            if encoded {
                Telemetry::Encoded(Encoded::check(Signal::Traces, b).unwrap())
            } else {
                Telemetry::Traces(ExportTraceServiceRequest::decode(&b[..]).unwrap())
            }
        })
        .collect()
}

fn batching(c: &mut Criterion) {
    let mut g = c.benchmark_group("batching");
    let cfg = BatchConfig {
        max_items: 8192,
        max_bytes: ByteSize::mib(3),
        timeout: HumanDuration::from_millis(200),
    };
    let one = requests(1, false).pop().unwrap();
    g.throughput(Throughput::Elements(100));
    g.bench_function("attrs10-100/encoded_len_of_decoded", |bench| {
        bench.iter(|| black_box(&one).encoded_len())
    });
    g.throughput(Throughput::Elements(100 * 100));
    for (name, encoded) in [("encoded", true), ("decoded", false)] {
        let input = requests(100, encoded);
        g.bench_function(format!("attrs10-100x100/{name}"), |bench| {
            bench.iter_batched(
                || input.clone(),
                |input| {
                    // The batches are returned, so dropping them is not timed (only the merging).
                    let mut b = Batcher::new(&cfg);
                    let now = Instant::now();
                    let mut out = Vec::new();
                    for r in input {
                        out.extend(b.push(r, 100, now));
                    }
                    out.extend(b.flush_all());
                    out
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

fn merged(encoded: bool) -> Telemetry {
    let mut it = requests(40, encoded).into_iter();
    let mut acc = it.next().unwrap();
    for r in it {
        acc.try_merge(r).unwrap();
    }
    acc
}

fn forward_encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("forward_encode");
    g.throughput(Throughput::Elements(40 * 100));
    for (name, encoded) in [("encoded", true), ("decoded", false)] {
        let batch = merged(encoded);
        g.bench_function(format!("attrs10-4000/{name}"), |bench| {
            bench.iter(|| black_box(&batch).encode_protobuf())
        });
    }
    g.finish();
}

fn clickhouse_rows(c: &mut Criterion) {
    let mut g = c.benchmark_group("clickhouse_rows");
    let batch = merged(true);
    g.throughput(Throughput::Elements(40 * 100));
    g.bench_function("attrs10-4000/decode+span_rows", |bench| {
        bench.iter(|| {
            let Telemetry::Traces(r) = black_box(&batch).decoded().unwrap().into_owned() else {
                unreachable!()
            };
            sluice_exporters::clickhouse::rows::span_rows(&r).len()
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    otlp_decode,
    batching,
    forward_encode,
    clickhouse_rows
);
criterion_main!(benches);
