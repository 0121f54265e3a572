//! How much memory a protobuf request takes once decoded, read from its wire form before anything
//! is built: an empty span is 2 bytes on the wire and a few hundred in memory, so a 16 MiB body of
//! them decodes to gigabytes. The walk counts, per message occurrence, the size of the Rust struct
//! `prost` builds for it, plus the heap of every string, bytes field and packed array — an upper
//! bound (a singular sub-message is counted as if it were allocated apart), never an under-count.
//! It allocates nothing, and stops at `prost`'s own nesting limit.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1 as common;
use opentelemetry_proto::tonic::logs::v1 as logs;
use opentelemetry_proto::tonic::metrics::v1 as metrics;
use opentelemetry_proto::tonic::profiles::v1development as profiles;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1 as trace;
use sluice_config::Signal;
use std::mem::size_of;

/// How one field of a message takes memory once decoded.
#[derive(Clone, Copy)]
pub enum Field {
    /// A sub-message of this shape.
    Msg(&'static Shape),
    /// A string or bytes: its length on the heap, plus the `Vec` header if repeated.
    Heap,
    /// A repeated scalar (packed or not): at most 8 bytes per wire byte.
    Packed,
}

/// The decoded form of one message type: its struct size and the fields that take more memory.
pub struct Shape {
    /// `size_of` the Rust struct.
    pub size: usize,
    /// `(field number, how it takes memory)`; fields not listed take nothing beyond the struct.
    pub fields: &'static [(u32, Field)],
}

impl Shape {
    fn field(&self, number: u32) -> Option<Field> {
        self.fields
            .iter()
            .find(|(n, _)| *n == number)
            .map(|(_, f)| *f)
    }
}

use Field::{Heap, Msg, Packed};

/// Deeper than this, `prost` refuses the message (its recursion limit).
const MAX_DEPTH: u32 = 100;

static ANY_VALUE: Shape = Shape {
    size: size_of::<common::AnyValue>(),
    fields: &[
        (1, Heap),
        (5, Msg(&ARRAY_VALUE)),
        (6, Msg(&KEY_VALUE_LIST)),
        (7, Heap),
        (8, Heap),
    ],
};
static ARRAY_VALUE: Shape = Shape {
    size: size_of::<common::ArrayValue>(),
    fields: &[(1, Msg(&ANY_VALUE))],
};
static KEY_VALUE_LIST: Shape = Shape {
    size: size_of::<common::KeyValueList>(),
    fields: &[(1, Msg(&KEY_VALUE))],
};
static KEY_VALUE: Shape = Shape {
    size: size_of::<common::KeyValue>(),
    fields: &[(1, Heap), (2, Msg(&ANY_VALUE))],
};
static SCOPE: Shape = Shape {
    size: size_of::<common::InstrumentationScope>(),
    fields: &[(1, Heap), (2, Heap), (3, Msg(&KEY_VALUE))],
};
static ENTITY_REF: Shape = Shape {
    size: size_of::<common::EntityRef>(),
    fields: &[(1, Heap), (2, Heap), (3, Heap), (4, Heap)],
};
static RESOURCE: Shape = Shape {
    size: size_of::<Resource>(),
    fields: &[(1, Msg(&KEY_VALUE)), (3, Msg(&ENTITY_REF))],
};

static TRACES_REQUEST: Shape = Shape {
    size: size_of::<ExportTraceServiceRequest>(),
    fields: &[(1, Msg(&RESOURCE_SPANS))],
};
static RESOURCE_SPANS: Shape = Shape {
    size: size_of::<trace::ResourceSpans>(),
    fields: &[(1, Msg(&RESOURCE)), (2, Msg(&SCOPE_SPANS)), (3, Heap)],
};
static SCOPE_SPANS: Shape = Shape {
    size: size_of::<trace::ScopeSpans>(),
    fields: &[(1, Msg(&SCOPE)), (2, Msg(&SPAN)), (3, Heap)],
};
static SPAN: Shape = Shape {
    size: size_of::<trace::Span>(),
    fields: &[
        (1, Heap),
        (2, Heap),
        (3, Heap),
        (4, Heap),
        (5, Heap),
        (9, Msg(&KEY_VALUE)),
        (11, Msg(&EVENT)),
        (13, Msg(&LINK)),
        (15, Msg(&STATUS)),
    ],
};
static EVENT: Shape = Shape {
    size: size_of::<trace::span::Event>(),
    fields: &[(2, Heap), (3, Msg(&KEY_VALUE))],
};
static LINK: Shape = Shape {
    size: size_of::<trace::span::Link>(),
    fields: &[(1, Heap), (2, Heap), (3, Heap), (4, Msg(&KEY_VALUE))],
};
static STATUS: Shape = Shape {
    size: size_of::<trace::Status>(),
    fields: &[(2, Heap)],
};

static LOGS_REQUEST: Shape = Shape {
    size: size_of::<ExportLogsServiceRequest>(),
    fields: &[(1, Msg(&RESOURCE_LOGS))],
};
static RESOURCE_LOGS: Shape = Shape {
    size: size_of::<logs::ResourceLogs>(),
    fields: &[(1, Msg(&RESOURCE)), (2, Msg(&SCOPE_LOGS)), (3, Heap)],
};
static SCOPE_LOGS: Shape = Shape {
    size: size_of::<logs::ScopeLogs>(),
    fields: &[(1, Msg(&SCOPE)), (2, Msg(&LOG_RECORD)), (3, Heap)],
};
static LOG_RECORD: Shape = Shape {
    size: size_of::<logs::LogRecord>(),
    fields: &[
        (3, Heap),
        (5, Msg(&ANY_VALUE)),
        (6, Msg(&KEY_VALUE)),
        (9, Heap),
        (10, Heap),
        (12, Heap),
    ],
};

static METRICS_REQUEST: Shape = Shape {
    size: size_of::<ExportMetricsServiceRequest>(),
    fields: &[(1, Msg(&RESOURCE_METRICS))],
};
static RESOURCE_METRICS: Shape = Shape {
    size: size_of::<metrics::ResourceMetrics>(),
    fields: &[(1, Msg(&RESOURCE)), (2, Msg(&SCOPE_METRICS)), (3, Heap)],
};
static SCOPE_METRICS: Shape = Shape {
    size: size_of::<metrics::ScopeMetrics>(),
    fields: &[(1, Msg(&SCOPE)), (2, Msg(&METRIC)), (3, Heap)],
};
static METRIC: Shape = Shape {
    size: size_of::<metrics::Metric>(),
    fields: &[
        (1, Heap),
        (2, Heap),
        (3, Heap),
        (5, Msg(&GAUGE)),
        (7, Msg(&SUM)),
        (9, Msg(&HISTOGRAM)),
        (10, Msg(&EXP_HISTOGRAM)),
        (11, Msg(&SUMMARY)),
        (12, Msg(&KEY_VALUE)),
    ],
};
static GAUGE: Shape = Shape {
    size: size_of::<metrics::Gauge>(),
    fields: &[(1, Msg(&NUMBER_POINT))],
};
static SUM: Shape = Shape {
    size: size_of::<metrics::Sum>(),
    fields: &[(1, Msg(&NUMBER_POINT))],
};
static HISTOGRAM: Shape = Shape {
    size: size_of::<metrics::Histogram>(),
    fields: &[(1, Msg(&HISTOGRAM_POINT))],
};
static EXP_HISTOGRAM: Shape = Shape {
    size: size_of::<metrics::ExponentialHistogram>(),
    fields: &[(1, Msg(&EXP_HISTOGRAM_POINT))],
};
static SUMMARY: Shape = Shape {
    size: size_of::<metrics::Summary>(),
    fields: &[(1, Msg(&SUMMARY_POINT))],
};
static NUMBER_POINT: Shape = Shape {
    size: size_of::<metrics::NumberDataPoint>(),
    fields: &[(7, Msg(&KEY_VALUE)), (5, Msg(&EXEMPLAR))],
};
static HISTOGRAM_POINT: Shape = Shape {
    size: size_of::<metrics::HistogramDataPoint>(),
    fields: &[
        (9, Msg(&KEY_VALUE)),
        (6, Packed),
        (7, Packed),
        (8, Msg(&EXEMPLAR)),
    ],
};
static EXP_HISTOGRAM_POINT: Shape = Shape {
    size: size_of::<metrics::ExponentialHistogramDataPoint>(),
    fields: &[
        (1, Msg(&KEY_VALUE)),
        (8, Msg(&BUCKETS)),
        (9, Msg(&BUCKETS)),
        (11, Msg(&EXEMPLAR)),
    ],
};
static BUCKETS: Shape = Shape {
    size: size_of::<metrics::exponential_histogram_data_point::Buckets>(),
    fields: &[(2, Packed)],
};
static SUMMARY_POINT: Shape = Shape {
    size: size_of::<metrics::SummaryDataPoint>(),
    fields: &[(7, Msg(&KEY_VALUE)), (6, Msg(&QUANTILE))],
};
static QUANTILE: Shape = Shape {
    size: size_of::<metrics::summary_data_point::ValueAtQuantile>(),
    fields: &[],
};
static EXEMPLAR: Shape = Shape {
    size: size_of::<metrics::Exemplar>(),
    fields: &[(7, Msg(&KEY_VALUE)), (4, Heap), (5, Heap)],
};

static PROFILES_REQUEST: Shape = Shape {
    size: size_of::<ExportProfilesServiceRequest>(),
    fields: &[(1, Msg(&RESOURCE_PROFILES)), (2, Msg(&DICTIONARY))],
};
static RESOURCE_PROFILES: Shape = Shape {
    size: size_of::<profiles::ResourceProfiles>(),
    fields: &[(1, Msg(&RESOURCE)), (2, Msg(&SCOPE_PROFILES)), (3, Heap)],
};
static SCOPE_PROFILES: Shape = Shape {
    size: size_of::<profiles::ScopeProfiles>(),
    fields: &[(1, Msg(&SCOPE)), (2, Msg(&PROFILE)), (3, Heap)],
};
static PROFILE: Shape = Shape {
    size: size_of::<profiles::Profile>(),
    fields: &[
        (1, Msg(&VALUE_TYPE)),
        (2, Msg(&SAMPLE)),
        (5, Msg(&VALUE_TYPE)),
        (7, Heap),
        (9, Heap),
        (10, Heap),
        (11, Packed),
    ],
};
static VALUE_TYPE: Shape = Shape {
    size: size_of::<profiles::ValueType>(),
    fields: &[],
};
static SAMPLE: Shape = Shape {
    size: size_of::<profiles::Sample>(),
    fields: &[(2, Packed), (4, Packed), (5, Packed)],
};
static DICTIONARY: Shape = Shape {
    size: size_of::<profiles::ProfilesDictionary>(),
    fields: &[
        (1, Msg(&MAPPING)),
        (2, Msg(&LOCATION)),
        (3, Msg(&FUNCTION)),
        (4, Msg(&PROFILE_LINK)),
        (5, Heap),
        (6, Msg(&KEY_VALUE_AND_UNIT)),
        (7, Msg(&STACK)),
    ],
};
static MAPPING: Shape = Shape {
    size: size_of::<profiles::Mapping>(),
    fields: &[(5, Packed)],
};
static LOCATION: Shape = Shape {
    size: size_of::<profiles::Location>(),
    fields: &[(3, Msg(&LINE)), (4, Packed)],
};
static LINE: Shape = Shape {
    size: size_of::<profiles::Line>(),
    fields: &[],
};
static FUNCTION: Shape = Shape {
    size: size_of::<profiles::Function>(),
    fields: &[],
};
static PROFILE_LINK: Shape = Shape {
    size: size_of::<profiles::Link>(),
    fields: &[(1, Heap), (2, Heap)],
};
static KEY_VALUE_AND_UNIT: Shape = Shape {
    size: size_of::<profiles::KeyValueAndUnit>(),
    fields: &[(2, Msg(&ANY_VALUE))],
};
static STACK: Shape = Shape {
    size: size_of::<profiles::Stack>(),
    fields: &[(1, Packed)],
};

/// The shape of an OTLP export request of `signal`.
pub fn request_shape(signal: Signal) -> &'static Shape {
    match signal {
        Signal::Traces => &TRACES_REQUEST,
        Signal::Metrics => &METRICS_REQUEST,
        Signal::Logs => &LOGS_REQUEST,
        Signal::Profiles => &PROFILES_REQUEST,
    }
}

/// Upper bound of the bytes `buf`, a message of `shape`, takes once decoded by `prost`. Malformed
/// input is measured as far as it reads (the decoder refuses it anyway).
pub fn decoded_size(buf: &[u8], shape: &Shape) -> usize {
    let mut total = shape.size;
    walk(buf, shape, 0, &mut total);
    total
}

/// Upper bound of the memory an OTLP request of `signal` takes once decoded.
pub fn decoded_request_size(signal: Signal, buf: &[u8]) -> usize {
    decoded_size(buf, request_shape(signal))
}

fn walk(buf: &[u8], shape: &Shape, depth: u32, total: &mut usize) {
    if depth > MAX_DEPTH {
        return;
    }
    let mut pos = 0;
    while pos < buf.len() {
        let Ok(key) = super::varint(buf, &mut pos) else {
            return;
        };
        let (number, wire) = ((key >> 3) as u32, key & 7);
        let field = shape.field(number);
        let step = match wire {
            0 => super::varint(buf, &mut pos).map(|_| None),
            1 => super::take(buf, &mut pos, 8).map(|_| None),
            5 => super::take(buf, &mut pos, 4).map(|_| None),
            2 => super::varint(buf, &mut pos)
                .and_then(|len| super::take(buf, &mut pos, len))
                .map(Some),
            // A group (deprecated, but `prost` skips unknown ones and decodes what follows: so
            // must this walk, or a 2-byte group would hide everything after it).
            3 => skip_group(buf, &mut pos, number, depth).map(|()| None),
            _ => return,
        };
        let Ok(body) = step else { return };
        let add = match (field, body) {
            (Some(Msg(inner)), Some(m)) => {
                walk(m, inner, depth + 1, total);
                inner.size
            }
            (Some(Heap), Some(b)) => b.len() + size_of::<Vec<u8>>(),
            (Some(Packed), Some(b)) => b.len().saturating_mul(8),
            // One element of a repeated scalar sent unpacked.
            (Some(Packed), None) => 8,
            _ => 0,
        };
        *total = total.saturating_add(add);
    }
}

/// Skips a group's fields up to its end-group tag, as `prost` skips an unknown group.
fn skip_group(
    buf: &[u8],
    pos: &mut usize,
    number: u32,
    depth: u32,
) -> Result<(), super::NeedsFullDecode> {
    if depth > MAX_DEPTH {
        return Err(super::NeedsFullDecode);
    }
    loop {
        let key = super::varint(buf, pos)?;
        let (inner, wire) = ((key >> 3) as u32, key & 7);
        match wire {
            0 => {
                super::varint(buf, pos)?;
            }
            1 => {
                super::take(buf, pos, 8)?;
            }
            5 => {
                super::take(buf, pos, 4)?;
            }
            2 => {
                let len = super::varint(buf, pos)?;
                super::take(buf, pos, len)?;
            }
            3 => skip_group(buf, pos, inner, depth + 1)?,
            4 if inner == number => return Ok(()),
            _ => return Err(super::NeedsFullDecode),
        }
    }
}

/// Upper bound of the memory an OTLP/JSON body takes while parsed: every value the parser builds
/// (`serde_json::Value`, map entries) is at most this many bytes, and each value costs at least one
/// structural byte (`{`, `[`, `,` or `:`) plus its text.
const JSON_VALUE_BYTES: usize = 96;

/// Upper bound of the memory an OTLP/JSON body takes while it is parsed and converted.
pub fn json_decoded_size(body: &[u8]) -> usize {
    let values = body
        .iter()
        .filter(|b| matches!(b, b'{' | b'[' | b',' | b':'))
        .count();
    body.len()
        .saturating_mul(2)
        .saturating_add(values.saturating_mul(JSON_VALUE_BYTES))
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn empty_spans_are_counted_at_their_decoded_size() {
        // 2 bytes per empty span on the wire (tag + zero length), a whole Span struct decoded.
        let mut scope = Vec::new();
        for _ in 0..10_000 {
            scope.extend_from_slice(&[0x12, 0x00]);
        }
        let mut rs = vec![0x12];
        prost::encoding::encode_varint(scope.len() as u64, &mut rs);
        rs.extend_from_slice(&scope);
        let mut req = vec![0x0a];
        prost::encoding::encode_varint(rs.len() as u64, &mut req);
        req.extend_from_slice(&rs);
        let decoded = ExportTraceServiceRequest::decode(&req[..]).unwrap();
        assert_eq!(decoded.resource_spans[0].scope_spans[0].spans.len(), 10_000);
        let est = decoded_request_size(Signal::Traces, &req);
        assert!(est >= 10_000 * size_of::<trace::Span>(), "{est}");
        assert!(
            est > req.len() * 50,
            "amplification seen: {est} for {} bytes",
            req.len()
        );
    }

    #[test]
    fn ordinary_requests_are_estimated_within_a_small_factor_of_their_wire_size() {
        let span = trace::Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            name: "GET /api/orders".into(),
            attributes: (0..10)
                .map(|i| common::KeyValue {
                    key: format!("attribute.key.{i}"),
                    value: Some(common::AnyValue {
                        value: Some(common::any_value::Value::StringValue(format!(
                            "some value {i}"
                        ))),
                    }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let req = ExportTraceServiceRequest {
            resource_spans: vec![trace::ResourceSpans {
                scope_spans: vec![trace::ScopeSpans {
                    spans: vec![span; 100],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec();
        let est = decoded_request_size(Signal::Traces, &req);
        assert!(
            est > req.len() && est < req.len() * 20,
            "{est} for {} bytes",
            req.len()
        );
    }

    #[test]
    fn a_group_does_not_hide_what_follows_it() {
        // Found by the fuzzer: an unknown group (field 14, start + end) between empty spans.
        let mut scope = vec![0x12, 0x00, 0x73, 0x74];
        for _ in 0..1000 {
            scope.extend_from_slice(&[0x12, 0x00]);
        }
        let mut rs = vec![0x12];
        prost::encoding::encode_varint(scope.len() as u64, &mut rs);
        rs.extend_from_slice(&scope);
        let mut req = vec![0x0a];
        prost::encoding::encode_varint(rs.len() as u64, &mut req);
        req.extend_from_slice(&rs);
        let decoded = ExportTraceServiceRequest::decode(&req[..]).unwrap();
        assert_eq!(decoded.resource_spans[0].scope_spans[0].spans.len(), 1001);
        assert!(decoded_request_size(Signal::Traces, &req) >= 1001 * size_of::<trace::Span>());
    }

    #[test]
    fn json_estimate_grows_with_structure_not_only_length() {
        let flat = br#"{"resourceSpans":[]}"#;
        let many: Vec<u8> = std::iter::repeat_n(&b"{},"[..], 1000)
            .flatten()
            .copied()
            .collect();
        assert!(json_decoded_size(flat) < 1000);
        assert!(json_decoded_size(&many) >= 1000 * JSON_VALUE_BYTES);
    }
}
