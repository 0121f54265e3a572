#![allow(clippy::unwrap_used)]

use super::*;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValueList};

fn kv(k: &str, v: any_value::Value) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

fn s(v: &str) -> any_value::Value {
    any_value::Value::StringValue(v.into())
}

fn record(state: &str) -> LogRecord {
    LogRecord {
        time_unix_nano: 1_700_000_010_000_000_000,
        event_name: "alert".into(),
        attributes: vec![
            kv("alertname", s("p99")),
            kv("state", s(state)),
            kv("value", any_value::Value::DoubleValue(2500.0)),
            kv(
                "labels",
                any_value::Value::KvlistValue(KeyValueList {
                    values: vec![kv("service.name", s("pay")), kv("team", s("core"))],
                }),
            ),
            kv("starts_at", any_value::Value::IntValue(1_700_000_000_000_000_000)),
        ],
        ..Default::default()
    }
}

#[test]
fn records_become_alerts_with_valid_label_names() {
    let (a, firing) = alert_of(&record("firing")).unwrap();
    assert!(firing);
    assert_eq!(a.labels.get("service_name").unwrap(), "pay");
    assert_eq!(a.labels.get("alertname").unwrap(), "p99");
    assert_eq!(a.annotations.get("value").unwrap(), "2500");
    assert_eq!(a.ends_at, None);
    let (r, firing) = alert_of(&record("resolved")).unwrap();
    assert!(!firing);
    assert_eq!(
        r.ends_at,
        Some(UNIX_EPOCH + Duration::from_nanos(1_700_000_010_000_000_000))
    );
    assert!(alert_of(&record("pending")).is_none());
    assert!(alert_of(&LogRecord::default()).is_none());
    assert_eq!(label_name("1a.b-c"), "_1a_b_c");
}

#[test]
fn firing_alerts_are_valid_for_four_resend_intervals() {
    let inner = Inner {
        client: reqwest::Client::new(),
        url: String::new(),
        generator_url: Some("http://grafana/d/x".into()),
        resend: Duration::from_secs(60),
        active: Mutex::new(HashMap::new()),
    };
    let (a, _) = alert_of(&record("firing")).unwrap();
    let body = inner.body(&[a]);
    let one = &body[0];
    assert_eq!(one["labels"]["alertname"], "p99");
    assert_eq!(one["generatorURL"], "http://grafana/d/x");
    let ends = humantime::parse_rfc3339(one["endsAt"].as_str().unwrap()).unwrap();
    let ahead = ends.duration_since(SystemTime::now()).unwrap();
    assert!(ahead > Duration::from_secs(230) && ahead <= Duration::from_secs(240), "{ahead:?}");
}
