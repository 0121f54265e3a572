//! Criterion micro-benchmarks of Sluice's hot paths, on the load generator's span shapes (the
//! issue's anchors: "small" 163 B/span, "attrs10" 643 B/span):
//!
//! - `otlp_decode`: what the receiver does per request — the allocation-free wire check that keeps
//!   traces encoded, against a full `prost` decode (what processors and ClickHouse need);
//! - `batching`: the batch processor merging 100-span requests, still encoded or decoded, and what
//!   sizing a decoded request for `max_bytes` costs;
//! - `forward_encode`: the bytes an OTLP exporter sends for a batch (encoded: concatenation;
//!   decoded: re-encode);
//! - `kafka_messages`: the Kafka exporter's message values for a 4,000-span batch (packing encoded
//!   requests, re-encoding decoded ones, OTLP/JSON, one message per trace);
//! - `clickhouse_insert`: the ClickHouse exporter's client side for a 4,000-span batch (Native from
//!   the wire; or decode, rows, RowBinary, LZ4, HTTP) against an HTTP server that accepts anything;
//! - `balance_split`: the balancing OTLP exporter splitting a 4,000-span batch (every span its own
//!   trace) three ways by trace id: on the wire, against decode → split → encode.
//!
//! `cargo bench -p sluice-loadgen --bench hot_paths`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use sluice_config::{ByteSize, HumanDuration, Signal};
use sluice_core::{Encoded, Telemetry};
use sluice_loadgen::{traces, Rng, Shape};
use sluice_processors::batch::BatchConfig;
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
                        out.extend(b.push(sluice_core::Envelope::new(r, 100), now));
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

/// An HTTP server that answers 200 to everything after reading the body: the ClickHouse
/// exporter's whole client side (rows, RowBinary, LZ4, HTTP) runs against it.
async fn null_http_server() -> std::net::SocketAddr {
    let app = axum::Router::new().fallback(|body: axum::body::Bytes| async move {
        black_box(body.len());
        ""
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

fn clickhouse_insert(c: &mut Criterion) {
    use sluice_core::Exporter;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let addr = rt.block_on(null_http_server());
    let cfg: sluice_exporters::clickhouse::ClickhouseExporterConfig =
        toml::from_str(&format!("endpoint = \"http://{addr}\"")).unwrap();
    let exporter = sluice_exporters::ClickhouseExporter::new(&cfg).unwrap();
    let cfg_rb: sluice_exporters::clickhouse::ClickhouseExporterConfig = toml::from_str(&format!(
        "endpoint = \"http://{addr}\"\nformat = \"row_binary\""
    ))
    .unwrap();
    let exporter_rb = sluice_exporters::ClickhouseExporter::new(&cfg_rb).unwrap();
    let mut g = c.benchmark_group("clickhouse_insert");
    g.throughput(Throughput::Elements(40 * 100));
    let encoded = merged(true);
    // The default: Native columns straight from the encoded batch.
    g.bench_function("attrs10-4000/wire+native+lz4+http", |bench| {
        bench
            .to_async(&rt)
            .iter(|| async { exporter.export(&encoded).await.unwrap() })
    });
    g.bench_function("attrs10-4000/decode+rows+rowbinary+lz4+http", |bench| {
        bench.to_async(&rt).iter(|| async {
            let batch = encoded.decoded().unwrap().into_owned();
            exporter_rb.export(&batch).await.unwrap();
        })
    });
    let decoded = merged(false);
    g.bench_function("attrs10-4000/rows+rowbinary+lz4+http", |bench| {
        bench
            .to_async(&rt)
            .iter(|| async { exporter_rb.export(&decoded).await.unwrap() })
    });
    g.finish();
}

fn kafka_messages(c: &mut Criterion) {
    use sluice_exporters::kafka::messages::messages;
    use sluice_exporters::kafka::KafkaEncoding;
    let mut g = c.benchmark_group("kafka_messages");
    g.throughput(Throughput::Elements(40 * 100));
    let encoded = merged(true);
    let decoded = merged(false);
    for (name, batch, encoding, by_trace) in [
        (
            "encoded/otlp_proto",
            &encoded,
            KafkaEncoding::OtlpProto,
            false,
        ),
        (
            "decoded/otlp_proto",
            &decoded,
            KafkaEncoding::OtlpProto,
            false,
        ),
        (
            "encoded/otlp_json",
            &encoded,
            KafkaEncoding::OtlpJson,
            false,
        ),
        (
            "encoded/otlp_proto/by_trace_id",
            &encoded,
            KafkaEncoding::OtlpProto,
            true,
        ),
    ] {
        g.bench_function(format!("attrs10-4000/{name}"), |bench| {
            bench.iter(|| messages(black_box(batch), encoding, 1_000_000, by_trace).unwrap())
        });
    }
    g.finish();
}

fn balance_split(c: &mut Criterion) {
    use sluice_exporters::otlp::balance::{ring, split};
    let mut g = c.benchmark_group("balance_split");
    let mut batch = requests(1, true).pop().unwrap();
    for more in requests(40, true).into_iter().skip(1) {
        batch.try_merge(more).unwrap();
    }
    let n = batch.item_count();
    g.throughput(Throughput::Elements(n));
    let ring = ring::Ring::new((0..3).map(|i| (i, ["gw-1:4317", "gw-2:4317", "gw-3:4317"][i])));
    let mut route = |id: Option<&[u8]>| id.and_then(|id| ring.owner(ring::hash(id))).unwrap_or(0);
    g.bench_function(format!("attrs10-{n}/wire"), |bench| {
        bench.iter(|| split::split(black_box(&batch), 3, &mut route).unwrap())
    });
    g.bench_function(format!("attrs10-{n}/decode_split_encode"), |bench| {
        bench.iter(|| {
            let decoded = black_box(&batch).decoded().unwrap();
            let parts = split::split_decoded(&decoded, 3, &mut route).unwrap();
            parts
                .iter()
                .map(|p| p.encode_protobuf())
                .collect::<Vec<_>>()
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    balance_split,
    otlp_decode,
    batching,
    forward_encode,
    clickhouse_insert,
    kafka_messages
);
criterion_main!(benches);
