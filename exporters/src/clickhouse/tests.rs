use super::*;

#[test]
fn classifies_clickhouse_errors() {
    use clickhouse::error::Error as E;
    let e = classify(E::BadResponse("Code: 16. DB::Exception: No such column Foo in table otel.otel_traces. (NO_SUCH_COLUMN_IN_TABLE) (version 26.9.1)".into()));
    assert!(!e.retryable && e.message.contains("NO_SUCH_COLUMN_IN_TABLE"));
    let e = classify(E::BadResponse(
        "Code: 252. DB::Exception: Too many parts (300). (TOO_MANY_PARTS)".into(),
    ));
    assert!(e.retryable && e.throttled);
    let e = classify(E::BadResponse(
        "Code: 159. DB::Exception: Timeout exceeded. (TIMEOUT_EXCEEDED)".into(),
    ));
    assert!(e.retryable && !e.throttled);
    // A dropped database or table, and refused credentials, keep the data and retry.
    for text in [
        "Code: 81. DB::Exception: Database otel does not exist. (UNKNOWN_DATABASE)",
        "Code: 60. DB::Exception: Table otel.otel_traces does not exist. (UNKNOWN_TABLE)",
        "Code: 516. DB::Exception: default: Authentication failed. (AUTHENTICATION_FAILED)",
    ] {
        let e = classify(E::BadResponse(text.into()));
        assert!(e.retryable && !e.throttled, "{text}");
    }
}

#[test]
fn kinds_and_status_render_like_the_collector() {
    assert_eq!(rows::span_kind(2), "Server");
    assert_eq!(rows::span_kind(0), "Unspecified");
    assert_eq!(rows::status_code(2), "Error");
    use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, ArrayValue};
    let v = |x| Some(AnyValue { value: Some(x) });
    assert_eq!(rows::value_string(v(Value::IntValue(42)).as_ref()), "42");
    assert_eq!(
        rows::value_string(v(Value::DoubleValue(0.5)).as_ref()),
        "0.5"
    );
    assert_eq!(
        rows::value_string(v(Value::BoolValue(true)).as_ref()),
        "true"
    );
    let arr = Value::ArrayValue(ArrayValue {
        values: vec![
            AnyValue {
                value: Some(Value::IntValue(1)),
            },
            AnyValue {
                value: Some(Value::StringValue("a".into())),
            },
        ],
    });
    assert_eq!(rows::value_string(v(arr).as_ref()), r#"[1,"a"]"#);
}

#[test]
fn ddl_honours_cluster_engine_ttl_and_table_names() {
    let c: super::ClickhouseExporterConfig = toml::from_str(
        r#"
endpoint = "http://ch:8123"
database = "telemetry"
cluster = "prod"
ttl = "72h"
table_engine = "ReplicatedMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}')"
tables = { traces = "spans" }
"#,
    )
    .unwrap();
    let c = &c;
    let ddl = schema::statements(c);
    assert_eq!(ddl.len(), 11);
    assert!(
        ddl.iter().all(|s| s.contains("ON CLUSTER prod")),
        "{ddl:#?}"
    );
    assert!(ddl[1].starts_with("CREATE TABLE IF NOT EXISTS telemetry.spans ON CLUSTER prod"));
    assert!(ddl[1].contains("ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}')"));
    assert!(ddl[1].contains("TTL toDateTime(Timestamp) + toIntervalSecond(259200)"));
    assert!(
        ddl[3].contains("TO telemetry.spans_trace_id_ts")
            && ddl[3].contains("FROM telemetry.spans")
    );
    assert!(
        ddl.iter().skip(1).all(|s| s.contains("IF NOT EXISTS")),
        "idempotent"
    );
}

#[test]
fn per_signal_ttl_and_reading_it_back() {
    let c: super::ClickhouseExporterConfig = toml::from_str(
        r#"
endpoint = "http://ch:8123"
ttl = { traces = "7d", logs = "30d", metrics = "24h" }
"#,
    )
    .unwrap();
    let c = &c;
    let ddl = schema::statements(c).join("\n");
    assert!(ddl.contains("TTL toDateTime(Timestamp) + toIntervalSecond(604800)"));
    assert!(ddl.contains("TTL TimestampTime + toIntervalSecond(2592000)"));
    assert!(ddl.contains("TTL toDateTime(TimeUnix) + toIntervalSecond(86400)"));
    let tables = schema::ttl_tables(c);
    assert_eq!(tables.len(), 9);
    let profiles = tables.iter().find(|t| t.table == "otel_profiles").unwrap();
    assert_eq!(profiles.expr, None, "profiles left out: kept forever");
    let engine = "MergeTree PARTITION BY toDate(TimestampTime) ORDER BY (ServiceName, TimestampTime) TTL TimestampTime + toIntervalSecond(2592000) SETTINGS index_granularity = 8192";
    assert_eq!(
        schema::current_ttl(engine).as_deref(),
        Some("TimestampTime+toIntervalSecond(2592000)")
    );
    assert_eq!(
        schema::current_ttl("MergeTree ORDER BY x SETTINGS a = 1"),
        None
    );
}

/// Credentials in the URL are taken out of it (percent-decoded) and sent as user/password.
#[test]
fn credentials_leave_the_url() {
    use super::split_credentials;
    assert_eq!(
        split_credentials("http://u:p%40ss@ch:8123"),
        (
            "http://ch:8123".to_owned(),
            Some("u".to_owned()),
            Some("p@ss".to_owned())
        )
    );
    assert_eq!(
        split_credentials("https://ch:8443/?x=1"),
        ("https://ch:8443/?x=1".to_owned(), None, None)
    );
    let (url, user, password) = split_credentials("http://u@ch:8123/");
    assert_eq!(
        (url.as_str(), user.as_deref(), password),
        ("http://ch:8123/", Some("u"), None)
    );
}
