#![allow(clippy::unwrap_used)]

use super::*;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::{
    Histogram, HistogramDataPoint, ResourceMetrics, ScopeMetrics,
};

const S: u64 = 1_000_000_000;

fn rules(toml_text: &str) -> Arc<Rules> {
    let cfg: AlertRulesConfig = toml::from_str(toml_text).unwrap();
    let mut p = Problems::default();
    ProcessorKind::validate(&cfg, &mut p);
    assert!(format!("{p:?}") == "Problems([])", "{p:?}");
    Arc::new(Rules::new("alerts", &cfg).unwrap())
}

const RULE: &str = r#"
[[rule]]
name = "p99_latency_spike"
metric = "http_request_duration_seconds"
matchers = ["service=~'payment.*'", "env='prod'"]
quantile = 0.99
threshold = 2000
unit = "ms"
duration = "5s"
window = "10s"
labels = { team = "finance-core", severity = "critical" }
"#;

fn str_attr(k: &str, v: &str) -> KeyValue {
    str_kv(k, v)
}

/// A delta histogram point at `t` seconds: `fast` observations at ≤ 0.1 s, `slow` at ≤ 5 s.
fn hist(service: &str, env: &str, t: u64, fast: u64, slow: u64) -> Telemetry {
    Telemetry::Metrics(ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![str_attr("service", service), str_attr("service.name", service)],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "http_request_duration_seconds".into(),
                    unit: "s".into(),
                    data: Some(Data::Histogram(Histogram {
                        aggregation_temporality: AggregationTemporality::Delta as i32,
                        data_points: vec![HistogramDataPoint {
                            attributes: vec![str_attr("env", env), str_attr("route", "/pay")],
                            time_unix_nano: 1_700_000_000 * S + t * S,
                            explicit_bounds: vec![0.1, 1.0, 5.0],
                            bucket_counts: vec![fast, 0, slow, 0],
                            count: fast + slow,
                            ..Default::default()
                        }],
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    })
}

fn states(alerts: &[ResourceLogs]) -> Vec<String> {
    alerts
        .iter()
        .flat_map(|rl| &rl.scope_logs)
        .flat_map(|sl| &sl.log_records)
        .map(|r| {
            let a = r.attributes.iter().find(|kv| kv.key == "state").unwrap();
            text(a).unwrap().into_owned()
        })
        .collect()
}

#[test]
fn fires_after_the_duration_and_resolves_on_recovery() {
    let mut st = AlertStage::new(rules(RULE));
    let now = Instant::now();
    let mut seen = Vec::new();
    // 1 s apart: fast for 3 s, slow for 7 s (window 10 s, so the p99 is slow from the first slow point).
    for t in 0..3 {
        seen.extend(states(&st.observe(&hist("payment-api", "prod", t, 100, 0), now)));
    }
    assert!(seen.is_empty());
    for t in 3..10 {
        seen.extend(states(&st.observe(&hist("payment-api", "prod", t, 100, 50), now)));
    }
    assert_eq!(seen, ["pending", "firing"]);
    // Recovery: only fast observations, until the slow ones left the 10 s window.
    let mut after = Vec::new();
    for t in 10..25 {
        after.extend(states(&st.observe(&hist("payment-api", "prod", t, 100, 0), now)));
    }
    assert_eq!(after, ["resolved"]);
}

#[test]
fn labels_and_values_of_the_alert() {
    let mut st = AlertStage::new(rules(RULE));
    let now = Instant::now();
    let mut all = Vec::new();
    for t in 0..8 {
        all.extend(st.observe(&hist("payment-api", "prod", t, 0, 10), now));
    }
    let firing = all
        .iter()
        .flat_map(|rl| &rl.scope_logs)
        .flat_map(|sl| &sl.log_records)
        .find(|r| r.attributes.iter().any(|kv| kv.key == "state" && text(kv).unwrap() == "firing"))
        .unwrap();
    assert_eq!(firing.event_name, "alert");
    let get = |k: &str| firing.attributes.iter().find(|kv| kv.key == k).unwrap();
    let Some(any_value::Value::DoubleValue(v)) = get("value").value.as_ref().unwrap().value else {
        panic!()
    };
    // p99 of 10 observations in (1, 5] s, in ms.
    assert!((v - 4960.0).abs() < 1e-6, "{v}");
    let Some(any_value::Value::KvlistValue(l)) = &get("labels").value.as_ref().unwrap().value else {
        panic!()
    };
    let labels: Vec<(String, String)> = l
        .values
        .iter()
        .map(|kv| (kv.key.clone(), text(kv).unwrap().into_owned()))
        .collect();
    for want in [
        ("alertname", "p99_latency_spike"),
        ("env", "prod"),
        ("route", "/pay"),
        ("service", "payment-api"),
        ("service.name", "payment-api"),
        ("severity", "critical"),
        ("team", "finance-core"),
    ] {
        assert!(labels.contains(&(want.0.into(), want.1.into())), "{labels:?}");
    }
}

#[test]
fn short_spikes_and_other_series_do_not_fire() {
    // A spike stays in the value for as long as it is in the window: a 2 s window here.
    let mut st = AlertStage::new(rules(&RULE.replace("window = \"10s\"", "window = \"2s\"")));
    let now = Instant::now();
    let mut seen = Vec::new();
    // A 3 s spike (with the window, breaching for less than the 5 s duration), then nothing slow.
    for t in 0..3 {
        seen.extend(states(&st.observe(&hist("payment-api", "prod", t, 0, 10), now)));
    }
    for t in 3..30 {
        seen.extend(states(&st.observe(&hist("payment-api", "prod", t, 10, 0), now)));
    }
    assert_eq!(seen, ["pending"]);
    let mut other = Vec::new();
    for t in 0..20 {
        other.extend(states(&st.observe(&hist("checkout", "prod", t, 0, 10), now)));
        other.extend(states(&st.observe(&hist("payment-api", "staging", t, 0, 10), now)));
    }
    assert!(other.is_empty());
}

#[test]
fn a_firing_series_that_stops_resolves_on_the_tick() {
    let cfg = format!("stale_after = \"2s\"\n{RULE}");
    let mut st = AlertStage::new(rules(&cfg));
    let now = Instant::now();
    let mut seen = Vec::new();
    for t in 0..8 {
        seen.extend(states(&st.observe(&hist("payment-api", "prod", t, 0, 10), now)));
    }
    assert_eq!(seen, ["pending", "firing"]);
    assert!(st.next_deadline().is_some());
    let mut out = Vec::new();
    st.flush(Some(now + Duration::from_secs(1)), &mut out);
    assert!(out.is_empty());
    st.flush(Some(now + Duration::from_secs(3)), &mut out);
    assert_eq!(out.len(), 1);
    let Telemetry::Logs(req) = &out[0].data else { panic!() };
    assert_eq!(states(&req.resource_logs), ["resolved"]);
    assert_eq!(st.series_count(), 0);
}

#[test]
fn metrics_pass_through_untouched_and_alerts_follow() {
    let mut st = AlertStage::new(rules(RULE));
    let now = Instant::now();
    let mut alerts = Vec::new();
    for t in 0..8 {
        let d = hist("payment-api", "prod", t, 0, 10);
        let mut out = Vec::new();
        let removed = st.push(Envelope::new(d.clone(), 1), now, &mut out);
        assert_eq!(removed, 0);
        let passed = out.remove(0);
        assert_eq!((passed.data, passed.items), (d, 1));
        alerts.extend(out);
    }
    let out = alerts;
    // What is left are the alert records: pending and firing.
    let logs: u64 = out
        .iter()
        .map(|e| {
            assert_eq!(e.signal(), Signal::Logs);
            assert_eq!(e.data.item_count(), e.items);
            e.items
        })
        .sum();
    assert_eq!(logs, 2);
    assert_eq!(st.emits(), Some(Signal::Logs));
}

#[test]
fn validation_names_the_bad_keys() {
    let cfg: AlertRulesConfig = toml::from_str(
        r#"
[[rule]]
name = "x"
metric = "m"
matchers = ["env='prod'", "service=~'(payment'", "env"]
quantile = 1.5
threshold = 1
unit = "parsecs"
"#,
    )
    .unwrap();
    let mut p = Problems::default();
    ProcessorKind::validate(&cfg, &mut p);
    let text = format!("{p:?}");
    for want in ["\"matchers\"), Index(1)", "invalid regex", "\"matchers\"), Index(2)", "quantile", "between 0 and 1", "unknown unit"] {
        assert!(text.contains(want), "{want}: {text}");
    }
}
