#![allow(clippy::unwrap_used)]

use super::*;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    Gauge, Histogram, HistogramDataPoint, NumberDataPoint,
};

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

fn transform(toml_text: &str) -> MetricTransform {
    let cfg: MetricTransformConfig = toml::from_str(toml_text).unwrap();
    MetricTransform::new(&cfg).unwrap()
}

fn gauge(name: &str, unit: &str, v: i64) -> Metric {
    Metric {
        name: name.into(),
        unit: unit.into(),
        data: Some(Data::Gauge(Gauge {
            data_points: vec![NumberDataPoint {
                attributes: vec![kv("svc", "a"), kv("debug", "1"), kv("keep", "x")],
                value: Some(number_data_point::Value::AsInt(v)),
                ..Default::default()
            }],
        })),
        ..Default::default()
    }
}

#[test]
fn renames_exact_and_by_regex_with_captures() {
    let t = transform(
        r#"
[[rule]]
metric = "http_req_total"
rename = "http_requests_total"
[[rule]]
metric_regex = "legacy_(.*)_seconds"
rename = "app_${1}_duration_seconds"
"#,
    );
    let mut a = gauge("http_req_total", "", 1);
    let mut b = gauge("legacy_db_seconds", "", 1);
    let mut c = gauge("xlegacy_db_seconds", "", 1);
    t.apply(&mut a);
    t.apply(&mut b);
    t.apply(&mut c);
    assert_eq!(a.name, "http_requests_total");
    assert_eq!(b.name, "app_db_duration_seconds");
    assert_eq!(c.name, "xlegacy_db_seconds");
    assert_eq!(brace_numbers("q_$1_ms$$x${2}$name"), "q_${1}_ms$$x${2}$name");
}

#[test]
fn renames_and_drops_attributes_and_converts_units() {
    let t = transform(
        r#"
[[rule]]
metric_regex = ".*"
rename_attributes = { svc = "service" }
drop_attributes = ["debug"]
unit = "ms"
"#,
    );
    let mut g = gauge("latency", "s", 3);
    t.apply(&mut g);
    assert_eq!(g.unit, "ms");
    let Some(Data::Gauge(gg)) = &g.data else { panic!() };
    let p = &gg.data_points[0];
    assert_eq!(p.value, Some(number_data_point::Value::AsInt(3000)));
    let keys: Vec<&str> = p.attributes.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["service", "keep"]);

    let mut h = Metric {
        name: "h".into(),
        unit: "s".into(),
        data: Some(Data::Histogram(Histogram {
            data_points: vec![HistogramDataPoint {
                explicit_bounds: vec![0.1, 1.0],
                bucket_counts: vec![1, 2, 3],
                sum: Some(2.5),
                count: 6,
                ..Default::default()
            }],
            aggregation_temporality: 2,
        })),
        ..Default::default()
    };
    t.apply(&mut h);
    let Some(Data::Histogram(hh)) = &h.data else { panic!() };
    assert_eq!(hh.data_points[0].explicit_bounds, vec![100.0, 1000.0]);
    assert_eq!(hh.data_points[0].sum, Some(2500.0));
    assert_eq!(hh.data_points[0].bucket_counts, vec![1, 2, 3]);
    // Already in ms: nothing changes a second time.
    t.apply(&mut h);
    let Some(Data::Histogram(hh)) = &h.data else { panic!() };
    assert_eq!(hh.data_points[0].sum, Some(2500.0));
}

#[test]
fn mapping_files_load_and_report_file_line_and_key() {
    let dir = std::env::temp_dir().join(format!("sluice-mt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.toml");
    std::fs::write(
        &good,
        "version = \"v1-to-v2\"\n[[rule]]\nmetric = \"http_req_total\"\nrename = \"http_requests_total\"\n",
    )
    .unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "[[rule]]\nmetric = \"a\"\n\n[[rule]]\nmetric_regex = \"(unclosed\"\n",
    )
    .unwrap();
    let t = transform(&format!("mappings = [{:?}]", good.display().to_string()));
    let mut m = gauge("http_req_total", "", 1);
    t.apply(&mut m);
    assert_eq!(m.name, "http_requests_total");

    let errs = load_mapping(&bad.display().to_string()).unwrap_err();
    let msg = errs[0].to_string();
    assert!(msg.starts_with(&format!("{}:5", bad.display())), "{msg}");
    assert!(msg.contains("rule[1].metric_regex"), "{msg}");
    assert!(msg.contains("invalid regex"), "{msg}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn validation_reports_bad_rules() {
    let cfg: MetricTransformConfig = toml::from_str(
        r#"
[[rule]]
metric = "a"
metric_regex = "b"
[[rule]]
metric_regex = "x("
[[rule]]
metric = "c"
unit = "ms"
from_unit = "By"
"#,
    )
    .unwrap();
    let mut p = Problems::default();
    ProcessorKind::validate(&cfg, &mut p);
    let text = format!("{p:?}");
    assert!(text.contains("exactly one of"), "{text}");
    assert!(text.contains("invalid regex"), "{text}");
    assert!(text.contains("cannot convert"), "{text}");
}
