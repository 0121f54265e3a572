use super::messages::{messages, Split};
use bytes::Bytes;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use super::config::KafkaEncoding;
use sluice_config::Signal;
use sluice_core::{Encoded, Telemetry};
use std::collections::BTreeMap;

fn span(trace: u8, i: u8, name_len: usize) -> Span {
    Span {
        trace_id: vec![trace; 16],
        span_id: vec![i; 8],
        name: "n".repeat(name_len),
        ..Default::default()
    }
}

/// Two resources, each with two scopes, `per_scope` spans each; trace ids cycle over 3 values.
fn traces(per_scope: u8, name_len: usize) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: (0..2)
            .map(|r| ResourceSpans {
                resource: Some(Resource {
                    dropped_attributes_count: r,
                    ..Default::default()
                }),
                scope_spans: (0..2)
                    .map(|s| ScopeSpans {
                        scope: Some(InstrumentationScope {
                            name: format!("scope-{s}"),
                            ..Default::default()
                        }),
                        spans: (0..per_scope).map(|i| span(i % 3, i, name_len)).collect(),
                        schema_url: String::new(),
                    })
                    .collect(),
                schema_url: String::new(),
            })
            .collect(),
    }
}

/// (resource, scope, span id) of every span in the messages, decoded back.
fn spans_of(split: &Split) -> Vec<(u32, String, Vec<u8>)> {
    let mut out = Vec::new();
    for m in &split.messages {
        let r = ExportTraceServiceRequest::decode(&m.value[..]).unwrap();
        let mut n = 0;
        for rs in &r.resource_spans {
            for ss in &rs.scope_spans {
                for s in &ss.spans {
                    n += 1;
                    out.push((
                        rs.resource.as_ref().unwrap().dropped_attributes_count,
                        ss.scope.as_ref().unwrap().name.clone(),
                        s.span_id.clone(),
                    ));
                }
            }
        }
        assert_eq!(n, m.items, "a message's item count is what it holds");
    }
    out.sort();
    out
}

fn all_spans(r: &ExportTraceServiceRequest) -> Vec<(u32, String, Vec<u8>)> {
    let mut out: Vec<_> = r
        .resource_spans
        .iter()
        .flat_map(|rs| {
            rs.scope_spans.iter().flat_map(move |ss| {
                ss.spans.iter().map(move |s| {
                    (
                        rs.resource.as_ref().unwrap().dropped_attributes_count,
                        ss.scope.as_ref().unwrap().name.clone(),
                        s.span_id.clone(),
                    )
                })
            })
        })
        .collect();
    out.sort();
    out
}

#[test]
fn large_decoded_batches_are_halved_until_every_message_fits() {
    let r = traces(25, 200);
    let whole = r.encoded_len();
    let max = whole / 7;
    let split = messages(
        &Telemetry::Traces(r.clone()),
        KafkaEncoding::OtlpProto,
        max,
        false,
    )
    .unwrap();
    assert!(split.messages.len() >= 7);
    assert!(split
        .messages
        .iter()
        .all(|m| m.value.len() <= max && m.key.is_none()));
    assert_eq!(split.oversize, 0);
    // Every span exactly once, under its own resource and scope.
    assert_eq!(spans_of(&split), all_spans(&r));
}

#[test]
fn encoded_batches_are_packed_whole_without_decoding() {
    let chunks: Vec<Telemetry> = (0..10)
        .map(|_| {
            let body = Bytes::from(traces(3, 50).encode_to_vec());
            Telemetry::Encoded(Encoded::check(Signal::Traces, body).unwrap())
        })
        .collect();
    let one = chunks[0].encoded_len();
    let mut batch = chunks[0].clone();
    for c in &chunks[1..] {
        batch.try_merge(c.clone()).unwrap();
    }
    // Room for three requests per message: 10 requests → 4 messages (3, 3, 3, 1).
    let split = messages(&batch, KafkaEncoding::OtlpProto, one * 3 + 10, false).unwrap();
    let sizes: Vec<u64> = split.messages.iter().map(|m| m.items).collect();
    assert_eq!(sizes, vec![36, 36, 36, 12]);
    // A request larger than the limit is cut finer.
    let split = messages(&batch, KafkaEncoding::OtlpProto, one / 2, false).unwrap();
    assert!(split.messages.iter().all(|m| m.value.len() <= one / 2));
    assert_eq!(split.messages.iter().map(|m| m.items).sum::<u64>(), 120);
}

#[test]
fn a_single_span_over_the_limit_is_reported_not_lost_silently() {
    let mut r = traces(2, 10);
    r.resource_spans[0].scope_spans[0].spans[0].name = "x".repeat(5000);
    let split = messages(&Telemetry::Traces(r), KafkaEncoding::OtlpProto, 2000, false).unwrap();
    assert_eq!(split.oversize, 1);
    assert_eq!(split.messages.iter().map(|m| m.items).sum::<u64>(), 7);
}

#[test]
fn partition_by_trace_id_gives_one_keyed_message_per_trace() {
    let r = traces(6, 10);
    let body = Bytes::from(r.encode_to_vec());
    let batch = Telemetry::Encoded(Encoded::check(Signal::Traces, body).unwrap());
    let split = messages(&batch, KafkaEncoding::OtlpProto, 1 << 20, true).unwrap();
    assert_eq!(split.messages.len(), 3);
    let mut per_key = BTreeMap::new();
    for m in &split.messages {
        let got = ExportTraceServiceRequest::decode(&m.value[..]).unwrap();
        let ids: Vec<String> = got
            .resource_spans
            .iter()
            .flat_map(|rs| &rs.scope_spans)
            .flat_map(|ss| &ss.spans)
            .map(|s| const_hex::encode(&s.trace_id))
            .collect();
        let key = m.key.clone().unwrap();
        assert!(
            ids.iter().all(|id| *id == key),
            "every span of the message has its key's trace id"
        );
        per_key.insert(key, ids.len());
    }
    // 2 resources × 2 scopes × 6 spans, trace ids cycling over 3 values.
    assert_eq!(per_key.values().sum::<usize>(), 24);
    assert!(per_key.values().all(|n| *n == 8));
}

#[test]
fn logs_without_trace_ids_share_an_unkeyed_message_and_json_is_valid() {
    let logs = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: (0..4u8)
                    .map(|i| LogRecord {
                        trace_id: if i < 2 { vec![] } else { vec![7; 16] },
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let split = messages(
        &Telemetry::Logs(logs),
        KafkaEncoding::OtlpJson,
        1 << 20,
        true,
    )
    .unwrap();
    let keys: Vec<Option<String>> = split.messages.iter().map(|m| m.key.clone()).collect();
    assert_eq!(keys, vec![None, Some("07".repeat(16))]);
    for m in &split.messages {
        let v: serde_json::Value = serde_json::from_slice(&m.value).unwrap();
        assert!(v["resourceLogs"].is_array());
    }
}

/// `tls`/`sasl` become librdkafka's properties, which librdkafka (built with OpenSSL) accepts;
/// a librdkafka error about a secret property does not quote its value.
#[test]
fn tls_and_sasl_reach_librdkafka() {
    let cfg: super::KafkaExporterConfig = toml::from_str(
        r#"brokers = ["k:9093"]
tls = { ca_file = "/etc/ca.pem", cert_file = "/c.pem", key_file = "/k.pem", insecure_skip_verify = true }
sasl = { mechanism = "SCRAM-SHA-256", username = "u", password = "pw-secret" }
producer = { "linger.ms" = "20" }"#,
    )
    .unwrap();
    let c = super::client_config(&cfg);
    let get = |k: &str| c.get(k).map(str::to_owned);
    assert_eq!(get("security.protocol").as_deref(), Some("sasl_ssl"));
    assert_eq!(get("ssl.ca.location").as_deref(), Some("/etc/ca.pem"));
    assert_eq!(get("ssl.certificate.location").as_deref(), Some("/c.pem"));
    assert_eq!(get("ssl.key.location").as_deref(), Some("/k.pem"));
    assert_eq!(get("enable.ssl.certificate.verification").as_deref(), Some("false"));
    assert_eq!(get("sasl.mechanism").as_deref(), Some("SCRAM-SHA-256"));
    assert_eq!(get("sasl.password").as_deref(), Some("pw-secret"));
    assert_eq!(get("linger.ms").as_deref(), Some("20"));
    assert!(c.create_native_config().is_ok(), "librdkafka refused ssl/sasl properties");
    assert!(!format!("{cfg:?}").contains("pw-secret"));

    let mut plain = cfg.clone();
    plain.tls = None;
    assert_eq!(
        super::client_config(&plain).get("security.protocol"),
        Some("sasl_plaintext")
    );
    plain.sasl = None;
    assert_eq!(super::client_config(&plain).get("security.protocol"), None);

    let err = rdkafka::error::KafkaError::ClientConfig(
        rdkafka::types::RDKafkaConfRes::RD_KAFKA_CONF_INVALID,
        "Invalid value \"pw-secret\" for configuration property \"sasl.password\"".into(),
        "sasl.password".into(),
        "pw-secret".into(),
    );
    let text = super::KafkaExporterError::Config(err).to_string();
    assert!(!text.contains("pw-secret") && text.contains("sasl.password"), "{text}");
}
