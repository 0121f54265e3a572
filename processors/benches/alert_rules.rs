//! Alert rule cost per data point: a request of 1,000 histogram points that a rule reads (matchers,
//! series lookup, window, quantile), and one whose metric no rule reads (the pass-through cost).
//!
//! `cargo bench -p sluice-processors --bench alert_rules`

#![allow(clippy::unwrap_used)]

mod common;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sluice_core::Telemetry;
use sluice_processors::alert_rules::{AlertRulesConfig, AlertStage, Rules};
use std::hint::black_box;
use std::sync::Arc;
use tokio::time::Instant;

const RULES: &str = r#"
[[rule]]
name = "p99_latency"
metric = "http_request_duration_seconds"
matchers = ["env='prod'", "service=~'svc-.*'"]
quantile = 0.99
threshold = 2000
unit = "ms"
duration = "1m"
window = "1m"
labels = { severity = "critical" }
"#;

fn bench(c: &mut Criterion) {
    let cfg: AlertRulesConfig = toml::from_str(RULES).unwrap();
    let rules = Arc::new(Rules::new("alerts", &cfg).unwrap());
    let mut g = c.benchmark_group("alert_rules");
    g.throughput(Throughput::Elements(1000));
    // Ten requests a second apart, so every series has a window of points to evaluate.
    let evaluated: Vec<Telemetry> = (0..10)
        .map(|t| Telemetry::Metrics(common::request("http_request_duration_seconds", 1000, t)))
        .collect();
    let mut stage = AlertStage::new(rules.clone());
    let now = Instant::now();
    let mut i = 0;
    g.bench_function("evaluate_1000_points", |b| {
        b.iter(|| {
            i = (i + 1) % evaluated.len();
            black_box(stage.observe(&evaluated[i], now))
        })
    });
    let other = Telemetry::Metrics(common::request("db_query_duration_seconds", 1000, 0));
    let mut stage = AlertStage::new(rules);
    g.bench_function("no_rule_1000_points", |b| {
        b.iter(|| black_box(stage.observe(&other, now)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
