use super::*;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, EntityRef, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;

fn kv(key: &str, v: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

/// Attributes of every AnyValue kind, nested arrays and maps included.
fn attrs() -> Vec<KeyValue> {
    vec![
        kv("s", Value::StringValue("héllo".into())),
        kv("b", Value::BoolValue(true)),
        kv("i", Value::IntValue(-42)),
        kv("d", Value::DoubleValue(1.5)),
        kv("bytes", Value::BytesValue(vec![0, 1, 255])),
        kv(
            "arr",
            Value::ArrayValue(ArrayValue {
                values: vec![AnyValue {
                    value: Some(Value::KvlistValue(KeyValueList {
                        values: vec![kv("inner", Value::IntValue(7))],
                    })),
                }],
            }),
        ),
    ]
}

fn resource() -> Option<Resource> {
    Some(Resource {
        attributes: vec![kv("service.name", Value::StringValue("svc".into()))],
        dropped_attributes_count: 1,
        entity_refs: vec![EntityRef {
            schema_url: "u".into(),
            r#type: "service".into(),
            id_keys: vec!["service.name".into()],
            description_keys: vec!["d".into()],
        }],
    })
}

fn scope() -> Option<InstrumentationScope> {
    Some(InstrumentationScope {
        name: "lib".into(),
        version: "1".into(),
        attributes: attrs(),
        dropped_attributes_count: 2,
    })
}

fn span(i: u8) -> Span {
    Span {
        trace_id: vec![i; 16],
        span_id: vec![i; 8],
        parent_span_id: if i.is_multiple_of(2) {
            vec![]
        } else {
            vec![9; 8]
        },
        trace_state: "ot=th:8".into(),
        flags: 1,
        name: format!("span-{i}"),
        kind: 2,
        start_time_unix_nano: 1,
        end_time_unix_nano: 2,
        attributes: attrs(),
        dropped_attributes_count: 1,
        events: vec![Event {
            time_unix_nano: 3,
            name: "ev".into(),
            attributes: attrs(),
            dropped_attributes_count: 0,
        }],
        dropped_events_count: 1,
        links: vec![Link {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            trace_state: "x".into(),
            attributes: attrs(),
            dropped_attributes_count: 0,
            flags: 256,
        }],
        dropped_links_count: 0,
        status: Some(Status {
            message: "boom".into(),
            code: 2,
        }),
    }
}

fn traces(n: u8) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![
            ResourceSpans {
                resource: resource(),
                scope_spans: vec![ScopeSpans {
                    scope: scope(),
                    spans: (0..n).map(span).collect(),
                    schema_url: "s".into(),
                }],
                schema_url: "r".into(),
            },
            ResourceSpans {
                resource: None,
                scope_spans: vec![ScopeSpans {
                    scope: None,
                    spans: vec![span(200)],
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            },
        ],
    }
}

fn logs(n: u8) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: resource(),
            scope_logs: vec![ScopeLogs {
                scope: scope(),
                log_records: (0..n)
                    .map(|i| LogRecord {
                        time_unix_nano: 1,
                        observed_time_unix_nano: 2,
                        severity_number: 9,
                        severity_text: "INFO".into(),
                        body: Some(AnyValue {
                            value: Some(Value::StringValue(format!("line {i}"))),
                        }),
                        attributes: attrs(),
                        dropped_attributes_count: 0,
                        flags: 1,
                        trace_id: if i.is_multiple_of(2) {
                            vec![]
                        } else {
                            vec![i; 16]
                        },
                        span_id: if i.is_multiple_of(2) {
                            vec![]
                        } else {
                            vec![i; 8]
                        },
                        event_name: "e".into(),
                    })
                    .collect(),
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

#[test]
fn valid_requests_are_counted_exactly() {
    assert_eq!(check(Signal::Traces, &traces(5).encode_to_vec()), Ok(6));
    assert_eq!(check(Signal::Logs, &logs(7).encode_to_vec()), Ok(7));
    assert_eq!(check(Signal::Traces, &[]), Ok(0));
    // Concatenated requests are one merged request: counts add up.
    let mut two = traces(3).encode_to_vec();
    two.extend(traces(2).encode_to_vec());
    assert_eq!(check(Signal::Traces, &two), Ok(7));
}

#[test]
fn unknown_fields_are_skipped_like_prost_does() {
    let mut b = traces(1).encode_to_vec();
    // field 1000 (length-delimited), field 99 (varint), field 98 (fixed32) at the top level.
    b.extend([
        0xc2, 0x3e, 0x02, 0xff, 0xff, 0x98, 0x06, 0x05, 0x95, 0x06, 1, 2, 3, 4,
    ]);
    assert!(ExportTraceServiceRequest::decode(&b[..]).is_ok());
    assert_eq!(check(Signal::Traces, &b), Ok(2));
}

#[test]
fn bad_ids_and_bad_utf8_go_to_the_full_decoder() {
    let mut r = traces(1);
    r.resource_spans[0].scope_spans[0].spans[0].trace_id = vec![1; 15];
    assert_eq!(
        check(Signal::Traces, &r.encode_to_vec()),
        Err(NeedsFullDecode)
    );
    let mut r = traces(1);
    r.resource_spans[0].scope_spans[0].spans[0].parent_span_id = vec![1; 3];
    assert_eq!(
        check(Signal::Traces, &r.encode_to_vec()),
        Err(NeedsFullDecode)
    );
    let mut r = logs(1);
    r.resource_logs[0].scope_logs[0].log_records[0].span_id = vec![1; 4];
    assert_eq!(
        check(Signal::Logs, &r.encode_to_vec()),
        Err(NeedsFullDecode)
    );
    // A string field holding invalid UTF-8: prost refuses it, so must we.
    let mut r = traces(1);
    r.resource_spans[0].scope_spans[0].spans[0].name = "ZZZZ".into();
    let mut b = r.encode_to_vec();
    let at = b.windows(4).position(|w| w == b"ZZZZ").unwrap();
    b[at] = 0xff;
    assert!(ExportTraceServiceRequest::decode(&b[..]).is_err());
    assert_eq!(check(Signal::Traces, &b), Err(NeedsFullDecode));
    assert_eq!(check(Signal::Metrics, &[]), Err(NeedsFullDecode));
}

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn mutate(rng: &mut Rng, src: &[u8]) -> Vec<u8> {
    let mut b = src.to_vec();
    for _ in 0..=rng.below(3) {
        if b.is_empty() {
            break;
        }
        let at = rng.below(b.len());
        match rng.below(5) {
            0 => b[at] ^= 1 << rng.below(8),
            1 => b[at] = rng.next() as u8,
            2 => {
                b.remove(at);
            }
            3 => b.insert(at, rng.next() as u8),
            _ => b.truncate(at),
        }
    }
    b
}

/// Soundness: whatever the checker accepts, prost decodes, with that many items and valid ids.
#[test]
fn accepted_means_prost_decodes_it_with_the_same_count() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let t = traces(3).encode_to_vec();
    let l = logs(3).encode_to_vec();
    let (mut accepted, mut refused) = (0, 0);
    for _ in 0..30_000 {
        let b = mutate(&mut rng, &t);
        if let Ok(n) = check(Signal::Traces, &b) {
            accepted += 1;
            let r = ExportTraceServiceRequest::decode(&b[..]).expect("checker accepted it");
            let spans: Vec<_> = r
                .resource_spans
                .iter()
                .flat_map(|rs| &rs.scope_spans)
                .flat_map(|ss| &ss.spans)
                .collect();
            assert_eq!(spans.len() as u64, n);
            assert!(spans.iter().all(|s| s.trace_id.len() == 16
                && s.span_id.len() == 8
                && (s.parent_span_id.is_empty() || s.parent_span_id.len() == 8)));
        } else {
            refused += 1;
        }
        let b = mutate(&mut rng, &l);
        if let Ok(n) = check(Signal::Logs, &b) {
            let r = ExportLogsServiceRequest::decode(&b[..]).expect("checker accepted it");
            let records: Vec<_> = r
                .resource_logs
                .iter()
                .flat_map(|rl| &rl.scope_logs)
                .flat_map(|sl| &sl.log_records)
                .collect();
            assert_eq!(records.len() as u64, n);
            assert!(records
                .iter()
                .all(|l| matches!(l.trace_id.len(), 0 | 16) && matches!(l.span_id.len(), 0 | 8)));
        }
    }
    // The mutations must exercise both outcomes, or this test proves nothing.
    assert!(
        accepted > 1_000 && refused > 1_000,
        "{accepted} / {refused}"
    );
}
