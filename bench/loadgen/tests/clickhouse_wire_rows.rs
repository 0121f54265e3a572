//! ClickHouse rows built from the wire (Native columns, no decode) equal the rows the RowBinary
//! path renders from the decoded request, value for value: on the load generator's shapes, on
//! the OTLP JSON examples in tests/fixtures, and on a request with every value kind, events,
//! links and several resources. The Native block is read back by a small reader written here
//! from the format's description (not from the encoder), so a layout mistake fails too.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    any_value::Value as V, AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use serde_json::{json, Map, Value};
use sluice_config::Signal;
use sluice_exporters::clickhouse::{rows, wire_rows};
use sluice_loadgen::{Rng, Shape};

/// Reads a Native block into rows of `column name -> value` (JSON, as serde renders the
/// RowBinary row structs).
struct Reader<'a> {
    b: &'a [u8],
    p: usize,
}

impl<'a> Reader<'a> {
    fn u8(&mut self) -> u8 {
        let v = self.b[self.p];
        self.p += 1;
        v
    }
    fn u64(&mut self) -> u64 {
        let v = u64::from_le_bytes(self.b[self.p..self.p + 8].try_into().unwrap());
        self.p += 8;
        v
    }
    fn varuint(&mut self) -> u64 {
        let (mut v, mut shift) = (0u64, 0);
        loop {
            let b = self.u8();
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return v;
            }
            shift += 7;
        }
    }
    fn string(&mut self) -> &'a [u8] {
        let n = self.varuint() as usize;
        let s = &self.b[self.p..self.p + n];
        self.p += n;
        s
    }
    fn prefix(&mut self, ty: &str) {
        if let Some(inner) = ty.strip_prefix("Array(").and_then(|t| t.strip_suffix(')')) {
            self.prefix(inner)
        } else if ty.starts_with("Map(") || ty.starts_with("LowCardinality(") {
            assert_eq!(self.u64(), 1, "LowCardinality keys serialization version");
        }
    }
    fn data(&mut self, ty: &str, n: usize) -> Vec<Value> {
        let text = |s: &[u8]| Value::String(String::from_utf8_lossy(s).into_owned());
        match ty {
            "String" => (0..n).map(|_| text(self.string())).collect(),
            "UInt8" => (0..n).map(|_| json!(self.u8())).collect(),
            "UInt64" => (0..n).map(|_| json!(self.u64())).collect(),
            "DateTime64(9)" => (0..n).map(|_| json!(self.u64() as i64)).collect(),
            "LowCardinality(String)" => {
                if n == 0 {
                    return vec![];
                }
                let ser = self.u64();
                assert_eq!(ser & !0xff, (1 << 9) | (1 << 10), "additional keys, update");
                let dict_n = self.u64() as usize;
                let dict: Vec<Value> = (0..dict_n).map(|_| text(self.string())).collect();
                assert_eq!(dict[0], json!(""), "index 0 is the default value");
                assert_eq!(self.u64() as usize, n);
                (0..n)
                    .map(|_| {
                        let i = match ser & 0xff {
                            0 => usize::from(self.u8()),
                            1 => usize::from(u16::from_le_bytes([self.u8(), self.u8()])),
                            _ => u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
                                as usize,
                        };
                        dict[i].clone()
                    })
                    .collect()
            }
            "Map(LowCardinality(String), String)" => {
                let offsets: Vec<usize> = (0..n).map(|_| self.u64() as usize).collect();
                let total = offsets.last().copied().unwrap_or(0);
                let keys = self.data("LowCardinality(String)", total);
                let values = self.data("String", total);
                let mut start = 0;
                offsets
                    .iter()
                    .map(|&end| {
                        let row = (start..end)
                            .map(|i| json!([keys[i], values[i]]))
                            .collect::<Vec<_>>();
                        start = end;
                        Value::Array(row)
                    })
                    .collect()
            }
            other => {
                let inner = other
                    .strip_prefix("Array(")
                    .and_then(|t| t.strip_suffix(')'))
                    .unwrap_or_else(|| panic!("unexpected type {other}"));
                let offsets: Vec<usize> = (0..n).map(|_| self.u64() as usize).collect();
                let all = self.data(inner, offsets.last().copied().unwrap_or(0));
                let mut start = 0;
                offsets
                    .iter()
                    .map(|&end| {
                        let row = all[start..end].to_vec();
                        start = end;
                        Value::Array(row)
                    })
                    .collect()
            }
        }
    }
}

fn read_block(b: &[u8]) -> Vec<Map<String, Value>> {
    let mut r = Reader { b, p: 0 };
    let cols = r.varuint() as usize;
    let n = r.varuint() as usize;
    let mut rows = vec![Map::new(); n];
    for _ in 0..cols {
        let name = String::from_utf8(r.string().to_vec()).unwrap();
        let ty = String::from_utf8(r.string().to_vec()).unwrap();
        r.prefix(&ty);
        for (row, v) in rows.iter_mut().zip(r.data(&ty, n)) {
            row.insert(name.clone(), v);
        }
    }
    assert_eq!(r.p, b.len(), "the block is read to its end");
    rows
}

fn as_rows<T: serde::Serialize>(rows: impl Iterator<Item = T>) -> Vec<Map<String, Value>> {
    rows.map(|r| match serde_json::to_value(r).unwrap() {
        Value::Object(m) => m,
        other => panic!("row is not an object: {other}"),
    })
    .collect()
}

/// Wire rows of the bodies (one request each, concatenated as an encoded batch is), planned
/// and written as the exporter does: the whole batch in the table's order, in blocks of about
/// `BLOCK_BYTES` (small, so a batch spans several blocks). The columns first hold the bodies in
/// reverse order and are cleared, as the exporter reuses them from one insert to the next: what
/// a cleared column remembers (dictionary hints, prepared resources) must not leak.
fn rows_from_wire<T: wire_rows::Table>(bodies: &[Vec<u8>]) -> Vec<Map<String, Value>> {
    const BLOCK_BYTES: usize = 16 << 10;
    let mut cols = T::default();
    let (mut warmup, _) = wire_rows::Plan::new::<T>(bodies.iter().rev().map(|b| &b[..]));
    warmup.fill(&mut cols, usize::MAX).expect("walkable");
    cols.clear();
    let (mut plan, odd) = wire_rows::Plan::new::<T>(bodies.iter().map(|b| &b[..]));
    assert!(odd.is_empty(), "bodies {odd:?} need prost's merging");
    let mut rows = vec![];
    while !plan.is_done() {
        plan.fill(&mut cols, BLOCK_BYTES).expect("walkable");
        let mut out = vec![];
        cols.write_block(&mut out);
        let block = read_block(&out);
        assert_eq!(block.len(), cols.rows());
        rows.extend(block);
        cols.clear();
    }
    assert_eq!(rows.len(), plan.len());
    rows
}

fn spans_from_wire(bodies: &[Vec<u8>]) -> Vec<Map<String, Value>> {
    rows_from_wire::<wire_rows::SpanColumns>(bodies)
}

fn logs_from_wire(bodies: &[Vec<u8>]) -> Vec<Map<String, Value>> {
    rows_from_wire::<wire_rows::LogColumns>(bodies)
}

/// A row's sort key in its table: `(ServiceName, SpanName or "", seconds, nanoseconds)`.
fn table_key(row: &Map<String, Value>, span_name: bool) -> (String, String, i64, i64) {
    let text = |k: &str| {
        row.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let ts = row
        .get("Timestamp")
        .and_then(Value::as_i64)
        .expect("Timestamp is an integer");
    let name = if span_name {
        text("SpanName")
    } else {
        String::new()
    };
    // Spans sort by (ServiceName, SpanName, toDateTime(Timestamp)) only: ties keep their order.
    let nanos = if span_name { 0 } else { ts };
    (
        text("ServiceName"),
        name,
        ts.div_euclid(1_000_000_000),
        nanos,
    )
}

fn check_traces(reqs: &[ExportTraceServiceRequest]) {
    let bodies: Vec<Vec<u8>> = reqs.iter().map(|r| r.encode_to_vec()).collect();
    check_trace_bodies(&bodies);
}

/// The wire rows of `bodies` against the rows of their `prost` decode.
fn check_trace_bodies(bodies: &[Vec<u8>]) {
    for b in bodies {
        // Only bodies the door keeps encoded reach the wire path.
        sluice_core::wire::check(Signal::Traces, b).expect("passes the wire check");
    }
    let mut want = vec![];
    for b in bodies {
        want.extend(as_rows(rows::span_rows(
            &ExportTraceServiceRequest::decode(&b[..]).unwrap(),
        )));
    }
    // The exporter writes an insert's rows in the table's sort order (a stable sort).
    want.sort_by_key(|r| table_key(r, true));
    let got = spans_from_wire(bodies);
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "span row {i}");
    }
}

fn check_logs(reqs: &[ExportLogsServiceRequest]) {
    let bodies: Vec<Vec<u8>> = reqs.iter().map(|r| r.encode_to_vec()).collect();
    for b in &bodies {
        sluice_core::wire::check(Signal::Logs, b).expect("passes the wire check");
    }
    let mut want = vec![];
    for r in reqs {
        want.extend(as_rows(rows::log_rows(r)));
    }
    want.sort_by_key(|r| table_key(r, false));
    let got = logs_from_wire(&bodies);
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "log row {i}");
    }
}

fn kv(k: &str, v: V) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

/// Every attribute value kind, as an attribute list.
fn every_value() -> Vec<KeyValue> {
    vec![
        kv("s", V::StringValue("text ünï".into())),
        kv("b", V::BoolValue(true)),
        kv("f", V::BoolValue(false)),
        kv("i", V::IntValue(-42)),
        kv("d", V::DoubleValue(0.1)),
        kv("big", V::DoubleValue(1e21)),
        kv("bytes", V::BytesValue(vec![0, 1, 2, 255])),
        kv(
            "arr",
            V::ArrayValue(ArrayValue {
                values: vec![
                    AnyValue {
                        value: Some(V::IntValue(1)),
                    },
                    AnyValue {
                        value: Some(V::StringValue("a".into())),
                    },
                ],
            }),
        ),
        kv(
            "kvl",
            V::KvlistValue(KeyValueList {
                values: vec![kv("x", V::DoubleValue(2.5))],
            }),
        ),
        KeyValue {
            key: "none".into(),
            value: None,
            ..Default::default()
        },
        KeyValue {
            key: "empty".into(),
            value: Some(AnyValue { value: None }),
            ..Default::default()
        },
    ]
}

#[test]
fn loadgen_shapes_render_the_same_from_the_wire() {
    let mut rng = Rng(7);
    for shape in [Shape::SMALL, Shape::ATTRS10, Shape::new(512, 10, 43)] {
        let reqs: Vec<_> = (0..6)
            .map(|k| sluice_loadgen::traces(&shape, &mut rng, k))
            .collect();
        check_traces(&reqs);
        let reqs: Vec<_> = (0..6)
            .map(|k| sluice_loadgen::logs(&shape, &mut rng, k))
            .collect();
        check_logs(&reqs);
    }
}

#[test]
fn otlp_json_fixtures_render_the_same_from_the_wire() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/otlp");
    let read = |f: &str, signal| {
        let body = std::fs::read(root.join(f)).unwrap();
        sluice_receivers::otlp::decode::decode_json(signal, &body)
            .unwrap()
            .into_decoded()
            .unwrap()
    };
    match read("trace.json", Signal::Traces) {
        sluice_core::Telemetry::Traces(r) => check_traces(&[r]),
        other => panic!("{other:?}"),
    }
    for f in ["logs.json", "events.json"] {
        match read(f, Signal::Logs) {
            sluice_core::Telemetry::Logs(r) => check_logs(&[r]),
            other => panic!("{other:?}"),
        }
    }
}

/// [`every_value`] rotated by `i` and one shorter every other row: the same keys at different
/// positions from row to row, as spans from several instrumentations are.
fn shifted_values(i: u8) -> Vec<KeyValue> {
    let mut v = every_value();
    let n = v.len();
    v.rotate_left(usize::from(i) % n);
    if i % 2 == 1 {
        v.pop();
    }
    v
}

#[test]
fn every_value_kind_events_links_and_resources_render_the_same() {
    let span = |i: u8| Span {
        trace_id: vec![i; 16],
        span_id: vec![i + 1; 8],
        parent_span_id: if i.is_multiple_of(2) {
            vec![9; 8]
        } else {
            vec![]
        },
        trace_state: "k=v".into(),
        name: format!("op {}", i % 3),
        kind: i32::from(i % 7),
        start_time_unix_nano: 1_700_000_000_000_000_000 + u64::from(i),
        end_time_unix_nano: if i == 3 { 0 } else { 1_700_000_001_000_000_000 },
        attributes: shifted_values(i),
        events: (0..i % 3)
            .map(|e| span::Event {
                time_unix_nano: 5 + u64::from(e),
                name: format!("ev{e}"),
                attributes: if e == 0 { shifted_values(i) } else { vec![] },
                ..Default::default()
            })
            .collect(),
        links: (0..i % 2)
            .map(|_| span::Link {
                trace_id: vec![3; 16],
                span_id: vec![4; 8],
                trace_state: "l=1".into(),
                attributes: vec![kv("link.attr", V::IntValue(7))],
                ..Default::default()
            })
            .collect(),
        status: (!i.is_multiple_of(3)).then(|| Status {
            code: i32::from(i % 3),
            message: format!("m{i}"),
        }),
        ..Default::default()
    };
    let resource = |attrs| {
        Some(Resource {
            attributes: attrs,
            ..Default::default()
        })
    };
    let req = ExportTraceServiceRequest {
        resource_spans: vec![
            ResourceSpans {
                resource: resource(vec![
                    kv("host", V::StringValue("h".into())),
                    kv("service.name", V::IntValue(5)),
                    kv("service.name", V::StringValue("second".into())),
                ]),
                scope_spans: vec![
                    ScopeSpans {
                        scope: Some(InstrumentationScope {
                            name: "lib".into(),
                            version: "1.2".into(),
                            attributes: every_value(),
                            ..Default::default()
                        }),
                        spans: (0..6).map(span).collect(),
                        ..Default::default()
                    },
                    ScopeSpans {
                        spans: vec![span(6)],
                        ..Default::default()
                    },
                ],
                ..Default::default()
            },
            ResourceSpans {
                resource: None,
                scope_spans: vec![ScopeSpans {
                    spans: vec![span(7), span(8)],
                    ..Default::default()
                }],
                ..Default::default()
            },
        ],
    };
    check_traces(&[req.clone(), ExportTraceServiceRequest::default(), req]);

    let record = |i: u8| LogRecord {
        time_unix_nano: if i.is_multiple_of(2) {
            0
        } else {
            100 + u64::from(i)
        },
        observed_time_unix_nano: 50,
        severity_number: [0, 9, 17, 24, 300][usize::from(i % 5)],
        severity_text: ["", "INFO", "ERROR"][usize::from(i % 3)].into(),
        body: match i % 4 {
            0 => None,
            1 => Some(AnyValue {
                value: Some(V::StringValue(format!("body {i}"))),
            }),
            2 => Some(AnyValue {
                value: Some(V::IntValue(i64::from(i))),
            }),
            _ => every_value().pop().and_then(|kv| kv.value),
        },
        attributes: shifted_values(i),
        flags: 0x101,
        trace_id: if i.is_multiple_of(2) {
            vec![i; 16]
        } else {
            vec![]
        },
        span_id: if i.is_multiple_of(2) {
            vec![i; 8]
        } else {
            vec![]
        },
        event_name: if i == 2 { "evt".into() } else { String::new() },
        ..Default::default()
    };
    let logs = ExportLogsServiceRequest {
        resource_logs: vec![
            ResourceLogs {
                resource: resource(vec![kv("service.name", V::StringValue("api".into()))]),
                scope_logs: vec![ScopeLogs {
                    scope: Some(InstrumentationScope {
                        name: "logger".into(),
                        version: "3".into(),
                        attributes: every_value(),
                        ..Default::default()
                    }),
                    log_records: (0..9).map(record).collect(),
                    schema_url: "https://scope".into(),
                }],
                schema_url: "https://res".into(),
            },
            ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![record(1)],
                    ..Default::default()
                }],
                ..Default::default()
            },
        ],
    };
    check_logs(&[logs.clone(), logs]);
}

/// A high-cardinality LowCardinality column (more than 256 and 65 536 distinct values) switches
/// to wider indexes; the reader checks them.
#[test]
fn wide_dictionaries_read_back() {
    let spans: Vec<Span> = (0..70_000u32)
        .map(|i| Span {
            trace_id: i.to_le_bytes().repeat(4),
            span_id: i.to_le_bytes().repeat(2),
            name: format!("op-{i}"),
            ..Default::default()
        })
        .collect();
    let req = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    check_traces(&[req]);
}

/// A length-delimited field: one-byte `tag`, varint length, `bytes`.
fn len_field(tag: u8, bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    prost::encoding::encode_varint(bytes.len() as u64, &mut out);
    out.extend_from_slice(bytes);
    out
}

/// A repeated singular sub-message (which prost merges) is not rendered from the wire: the
/// exporter re-encodes that body canonically first.
#[test]
fn merged_messages_are_left_to_the_decoder() {
    let mut body = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    trace_id: vec![1; 16],
                    span_id: vec![2; 8],
                    status: Some(Status {
                        code: 2,
                        message: String::new(),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec();
    // Append a second `resource` to the ResourceSpans: prost merges the two.
    let extra_resource = Resource {
        attributes: vec![kv("service.name", V::StringValue("late".into()))],
        ..Default::default()
    }
    .encode_to_vec();
    let mut rs = ResourceSpans::decode(&body[2..]).unwrap().encode_to_vec();
    rs.push(0x0a);
    rs.push(extra_resource.len() as u8);
    rs.extend_from_slice(&extra_resource);
    rs.push(0x0a);
    rs.push(extra_resource.len() as u8);
    rs.extend_from_slice(&extra_resource);
    body = vec![0x0a, rs.len() as u8];
    body.extend_from_slice(&rs);
    let (plan, odd) = wire_rows::Plan::new::<wire_rows::SpanColumns>([&body[..]]);
    assert_eq!((plan.len(), odd), (0, vec![0]));

    // A span whose `status` is repeated (prost merges the two): that one row is re-encoded
    // and walked again, the rows around it come from the wire, and all equal the decode.
    let spans: Vec<Vec<u8>> = (0..3u8)
        .map(|i| {
            let mut span = Span {
                trace_id: vec![i + 1; 16],
                span_id: vec![i + 2; 8],
                name: format!("s{i}"),
                attributes: every_value(),
                status: Some(Status {
                    code: 2,
                    message: String::new(),
                }),
                ..Default::default()
            }
            .encode_to_vec();
            if i == 1 {
                let late = Status {
                    code: 0,
                    message: "merged".into(),
                }
                .encode_to_vec();
                span.extend(len_field(0x7a, &late)); // Span.status again
            }
            span
        })
        .collect();
    let ss: Vec<u8> = spans.iter().flat_map(|s| len_field(0x12, s)).collect(); // ScopeSpans.spans
    let rs = len_field(0x12, &ss); // ResourceSpans.scope_spans
    let merging = len_field(0x0a, &rs); // ExportTraceServiceRequest.resource_spans
    let decoded = ExportTraceServiceRequest::decode(&merging[..]).unwrap();
    let merged = &decoded.resource_spans[0].scope_spans[0].spans[1];
    assert_eq!(merged.status.as_ref().unwrap().message, "merged");
    check_trace_bodies(&[merging]);
    let canonical = ExportTraceServiceRequest::decode(&body[..]).unwrap();
    check_traces(&[canonical]);
}

/// Large rows end a block as soon as it passes its bound in bytes, not a fixed number of rows
/// later: 40 spans of ~100 KB make blocks of about 1 MiB each.
#[test]
fn blocks_of_large_rows_stay_bounded_in_bytes() {
    const MAX: usize = 1 << 20;
    let big = "x".repeat(100_000);
    let spans: Vec<Span> = (0..40u8)
        .map(|i| Span {
            trace_id: vec![i + 1; 16],
            span_id: vec![1; 8],
            name: "big".into(),
            attributes: vec![kv("payload", V::StringValue(big.clone()))],
            ..Default::default()
        })
        .collect();
    let req = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let bodies = [req.encode_to_vec()];
    let (mut plan, _) =
        wire_rows::Plan::new::<wire_rows::SpanColumns>(bodies.iter().map(|b| &b[..]));
    let mut cols = wire_rows::SpanColumns::default();
    let mut blocks = 0;
    while !plan.is_done() {
        plan.fill(&mut cols, MAX).expect("walkable");
        let held = wire_rows::Table::heap_bytes(&cols);
        assert!(held < MAX + 150_000, "block {blocks} holds {held} bytes");
        cols.clear();
        blocks += 1;
    }
    assert!(blocks >= 4, "{blocks} blocks");
}
