//! Metric transform cost per data point: 1,000 histogram points whose metric a regex rule renames,
//! with an attribute rename and drop and a seconds → milliseconds conversion; and 1,000 points
//! that no rule matches.
//!
//! `cargo bench -p sluice-processors --bench metric_transform`

#![allow(clippy::unwrap_used)]

mod common;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use sluice_core::{Processor, Telemetry};
use sluice_processors::metric_transform::{MetricTransform, MetricTransformConfig};
use std::hint::black_box;

const RULES: &str = r#"
[[rule]]
metric_regex = "http_request_duration_(.+)"
rename = "http.server.request.duration"
rename_attributes = { "http.route" = "route" }
drop_attributes = ["attr.1"]
unit = "ms"
"#;

fn bench(c: &mut Criterion) {
    let cfg: MetricTransformConfig = toml::from_str(RULES).unwrap();
    let t = MetricTransform::new(&cfg).unwrap();
    let mut g = c.benchmark_group("metric_transform");
    g.throughput(Throughput::Elements(1000));
    let matching = Telemetry::Metrics(common::request("http_request_duration_seconds", 1000, 0));
    g.bench_function("transform_1000_points", |b| {
        b.iter_batched(
            || matching.clone(),
            |d| black_box(t.process(d)),
            BatchSize::SmallInput,
        )
    });
    let other = Telemetry::Metrics(common::request("db_query_duration_seconds", 1000, 0));
    g.bench_function("no_match_1000_points", |b| {
        b.iter_batched(
            || other.clone(),
            |d| black_box(t.process(d)),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
