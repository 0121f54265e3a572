//! Body decoding for OTLP: decompression with a size cap, protobuf, and OTLP/JSON with its quirks.

use crate::ingest::{Ingest, IngestError};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::logs::v1::SeverityNumber;
use opentelemetry_proto::tonic::metrics::v1::AggregationTemporality;
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode};
use prost::Message;
use serde_json::Value;
use sluice_core::wire::size;
use sluice_core::{Charge, Encoded, Signal, Telemetry};
use std::io::Read;

/// Body encodings a client may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Plain.
    Identity,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

impl Encoding {
    /// Parses a `Content-Encoding` header value.
    pub fn from_header(v: Option<&str>) -> Result<Self, IngestError> {
        match v.map(|s| s.trim().to_ascii_lowercase()).as_deref() {
            None | Some("") | Some("identity") => Ok(Self::Identity),
            Some("gzip") | Some("x-gzip") => Ok(Self::Gzip),
            Some("zstd") => Ok(Self::Zstd),
            Some(other) => Err(IngestError::Unsupported(format!(
                "unsupported Content-Encoding {other:?}; expected gzip, zstd or none"
            ))),
        }
    }
}

/// Decompresses `body`, refusing to produce more than `limit` bytes (a zip bomb gets 413, not OOM).
pub fn decompress(
    body: bytes::Bytes,
    enc: Encoding,
    limit: usize,
) -> Result<bytes::Bytes, IngestError> {
    let too_large = || {
        IngestError::TooLarge(format!(
            "decompressed body exceeds max_request_size ({limit} bytes)"
        ))
    };
    let mut out = Vec::new();
    let res = match enc {
        Encoding::Identity => return Ok(body),
        Encoding::Gzip => flate2::read::MultiGzDecoder::new(&body[..])
            .take(limit as u64 + 1)
            .read_to_end(&mut out),
        Encoding::Zstd => match zstd::stream::read::Decoder::new(&body[..]) {
            Ok(d) => d.take(limit as u64 + 1).read_to_end(&mut out),
            Err(e) => Err(e),
        },
    };
    match res {
        Ok(_) if out.len() > limit => Err(too_large()),
        Ok(_) => Ok(out.into()),
        Err(e) => Err(IngestError::Malformed(format!(
            "cannot decompress {enc:?} body: {e}"
        ))),
    }
}

/// How an OTLP request body is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `application/x-protobuf` (and gRPC).
    Protobuf,
    /// `application/json`.
    Json,
}

/// Decodes a (decompressed) request body whose bytes are already charged in `charge`, charging
/// its decoded form before it is built: a body that would decode into more memory than the
/// budget allows is refused without being decoded. Traces and logs that pass the wire check stay
/// encoded and cost nothing more.
pub fn decode_charged(
    ingest: &Ingest,
    signal: Signal,
    format: Format,
    body: bytes::Bytes,
    charge: &mut Charge,
) -> Result<Telemetry, IngestError> {
    match format {
        Format::Protobuf => {
            let body = match Encoded::check(signal, body) {
                Ok(e) => return Ok(Telemetry::Encoded(e)),
                Err(body) => body,
            };
            let decoded = size::decoded_request_size(signal, &body);
            let during = body.len().saturating_add(decoded);
            ingest.resize(signal, charge, during, "decoded request")?;
            let data = decode_full(signal, &body)?;
            drop(body);
            // Shrinking cannot fail.
            let _ = charge.resize(decoded);
            Ok(data)
        }
        Format::Json => {
            let decoded = size::json_decoded_size(&body);
            let during = body.len().saturating_add(decoded);
            ingest.resize(signal, charge, during, "decoded request")?;
            decode_json(signal, &body)
        }
    }
}

/// Takes an OTLP protobuf request of `signal`: traces and logs that pass the allocation-free check
/// stay encoded; everything else (metrics, profiles, and requests the check leaves to prost, such as
/// ones with invalid ids) is decoded here. No memory bound: [`decode_charged`] is the receivers' way.
pub fn decode_protobuf(signal: Signal, body: bytes::Bytes) -> Result<Telemetry, IngestError> {
    let body = match Encoded::check(signal, body) {
        Ok(e) => return Ok(Telemetry::Encoded(e)),
        Err(body) => body,
    };
    decode_full(signal, &body)
}

/// Decodes with `prost`, whatever the request holds.
fn decode_full(signal: Signal, body: &[u8]) -> Result<Telemetry, IngestError> {
    let bad = |e: prost::DecodeError| {
        IngestError::Malformed(format!("invalid OTLP protobuf {signal} request: {e}"))
    };
    Ok(match signal {
        Signal::Traces => Telemetry::Traces(ExportTraceServiceRequest::decode(body).map_err(bad)?),
        Signal::Metrics => {
            Telemetry::Metrics(ExportMetricsServiceRequest::decode(body).map_err(bad)?)
        }
        Signal::Logs => Telemetry::Logs(ExportLogsServiceRequest::decode(body).map_err(bad)?),
        Signal::Profiles => Telemetry::Profiles(Box::new(
            ExportProfilesServiceRequest::decode(body).map_err(bad)?,
        )),
    })
}

/// Decodes an OTLP/JSON request of `signal`, accepting the spec's quirks: hex ids in either case,
/// 64-bit integers as strings or numbers, enums as names or numbers.
pub fn decode_json(signal: Signal, body: &[u8]) -> Result<Telemetry, IngestError> {
    let bad = |e: serde_json::Error| {
        IngestError::Malformed(format!("invalid OTLP/JSON {signal} request: {e}"))
    };
    let mut value: Value = serde_json::from_slice(body).map_err(bad)?;
    if !value.is_object() {
        return Err(IngestError::Malformed(format!(
            "invalid OTLP/JSON {signal} request: expected a JSON object at the top level"
        )));
    }
    normalize_enums(&mut value)?;
    if signal == Signal::Profiles {
        profiles_json::fill(&mut value, profiles_json::Kind::Request)?;
    }
    Ok(match signal {
        Signal::Traces => Telemetry::Traces(serde_json::from_value(value).map_err(bad)?),
        Signal::Metrics => Telemetry::Metrics(serde_json::from_value(value).map_err(bad)?),
        Signal::Logs => Telemetry::Logs(serde_json::from_value(value).map_err(bad)?),
        Signal::Profiles => {
            Telemetry::Profiles(Box::new(serde_json::from_value(value).map_err(bad)?))
        }
    })
}

/// OTLP/JSON profiles: opentelemetry-proto 0.33's serde derive for the `v1development` profile
/// messages has no defaults (a proto3 JSON body may omit any field), takes 64-bit integers only as
/// numbers and link ids only as byte arrays. This fills in what is omitted and converts those values,
/// message type by message type, before serde sees the body.
mod profiles_json {
    use super::IngestError;
    use serde_json::{Map, Value};

    #[derive(Clone, Copy)]
    pub enum Kind {
        Request,
        ResourceProfiles,
        ScopeProfiles,
        Profile,
        ValueType,
        Sample,
        Dictionary,
        Mapping,
        Location,
        Line,
        Stack,
        Link,
        KeyValueAndUnit,
    }

    /// (field, default) pairs; a default of `0` marks an integer field that may come as a string.
    fn defaults(k: Kind) -> &'static [(&'static str, &'static str)] {
        match k {
            Kind::Request => &[("resourceProfiles", "[]")],
            Kind::ResourceProfiles => &[("scopeProfiles", "[]"), ("schemaUrl", "\"\"")],
            Kind::ScopeProfiles => &[("profiles", "[]"), ("schemaUrl", "\"\"")],
            Kind::Profile => &[
                ("samples", "[]"),
                ("timeUnixNano", "0"),
                ("durationNano", "0"),
                ("period", "0"),
                ("profileId", "\"\""),
                ("droppedAttributesCount", "0"),
                ("originalPayloadFormat", "\"\""),
                ("originalPayload", "[]"),
                ("attributeIndices", "[]"),
            ],
            Kind::ValueType => &[("typeStrindex", "0"), ("unitStrindex", "0")],
            Kind::Sample => &[
                ("stackIndex", "0"),
                ("attributeIndices", "[]"),
                ("linkIndex", "0"),
                ("values", "[]"),
                ("timestampsUnixNano", "[]"),
            ],
            Kind::Dictionary => &[
                ("mappingTable", "[]"),
                ("locationTable", "[]"),
                ("functionTable", "[]"),
                ("linkTable", "[]"),
                ("stringTable", "[]"),
                ("attributeTable", "[]"),
                ("stackTable", "[]"),
            ],
            Kind::Mapping => &[
                ("memoryStart", "0"),
                ("memoryLimit", "0"),
                ("fileOffset", "0"),
                ("filenameStrindex", "0"),
                ("attributeIndices", "[]"),
            ],
            Kind::Location => &[
                ("mappingIndex", "0"),
                ("address", "0"),
                ("lines", "[]"),
                ("attributeIndices", "[]"),
            ],
            Kind::Line => &[("functionIndex", "0"), ("line", "0"), ("column", "0")],
            Kind::Stack => &[("locationIndices", "[]")],
            Kind::Link => &[("traceId", "[]"), ("spanId", "[]")],
            Kind::KeyValueAndUnit => &[("keyStrindex", "0"), ("unitStrindex", "0")],
        }
    }

    fn children(k: Kind) -> &'static [(&'static str, Kind)] {
        match k {
            Kind::Request => &[
                ("resourceProfiles", Kind::ResourceProfiles),
                ("dictionary", Kind::Dictionary),
            ],
            Kind::ResourceProfiles => &[("scopeProfiles", Kind::ScopeProfiles)],
            Kind::ScopeProfiles => &[("profiles", Kind::Profile)],
            Kind::Profile => &[
                ("sampleType", Kind::ValueType),
                ("periodType", Kind::ValueType),
                ("samples", Kind::Sample),
            ],
            Kind::Dictionary => &[
                ("mappingTable", Kind::Mapping),
                ("locationTable", Kind::Location),
                ("linkTable", Kind::Link),
                ("attributeTable", Kind::KeyValueAndUnit),
                ("stackTable", Kind::Stack),
            ],
            Kind::Location => &[("lines", Kind::Line)],
            _ => &[],
        }
    }

    /// Integer arrays whose elements may come as strings.
    const INT_ARRAYS: &[&str] = &["values", "timestampsUnixNano"];

    fn int_of(v: &mut Value, field: &str) -> Result<(), IngestError> {
        if let Value::String(s) = v {
            let n: Value = if let Ok(i) = s.parse::<i64>() {
                i.into()
            } else if let Ok(u) = s.parse::<u64>() {
                u.into()
            } else {
                return Err(IngestError::Malformed(format!(
                    "invalid OTLP/JSON profiles: {field} {s:?} is not an integer"
                )));
            };
            *v = n;
        }
        Ok(())
    }

    fn hex_to_array(v: &mut Value, field: &str) -> Result<(), IngestError> {
        if let Value::String(s) = v {
            let bytes = const_hex::decode(s.as_str()).ok().ok_or_else(|| {
                IngestError::Malformed(format!(
                    "invalid OTLP/JSON profiles: {field} {s:?} is not hex"
                ))
            })?;
            *v = Value::Array(bytes.into_iter().map(Value::from).collect());
        }
        Ok(())
    }

    /// Fills defaults and converts values of one message (and its children).
    pub fn fill(v: &mut Value, k: Kind) -> Result<(), IngestError> {
        let Value::Object(map) = v else { return Ok(()) };
        fill_map(map, k)
    }

    fn fill_map(map: &mut Map<String, Value>, k: Kind) -> Result<(), IngestError> {
        for (field, default) in defaults(k) {
            match map.get_mut(*field) {
                None | Some(Value::Null) => {
                    map.insert(
                        (*field).to_owned(),
                        serde_json::from_str(default).unwrap_or(Value::Null),
                    );
                }
                Some(v) if *default == "0" => int_of(v, field)?,
                Some(Value::Array(items)) if INT_ARRAYS.contains(field) => {
                    for item in items {
                        int_of(item, field)?;
                    }
                }
                Some(v) if matches!(k, Kind::Link) => hex_to_array(v, field)?,
                _ => {}
            }
        }
        for (field, kind) in children(k) {
            match map.get_mut(*field) {
                Some(Value::Array(items)) => {
                    for item in items {
                        fill(item, *kind)?;
                    }
                }
                Some(obj @ Value::Object(_)) => fill(obj, *kind)?,
                _ => {}
            }
        }
        Ok(())
    }
}

/// Rewrites enum names (`"SPAN_KIND_SERVER"`) and numeric strings (`"2"`) to numbers.
fn normalize_enums(v: &mut Value) -> Result<(), IngestError> {
    match v {
        Value::Object(map) => {
            for (k, val) in map.iter_mut() {
                let lookup: Option<fn(&str) -> Option<i32>> = match k.as_str() {
                    "kind" => Some(|s| SpanKind::from_str_name(s).map(|e| e as i32)),
                    "code" => Some(|s| StatusCode::from_str_name(s).map(|e| e as i32)),
                    "severityNumber" => {
                        Some(|s| SeverityNumber::from_str_name(s).map(|e| e as i32))
                    }
                    "aggregationTemporality" => {
                        Some(|s| AggregationTemporality::from_str_name(s).map(|e| e as i32))
                    }
                    _ => None,
                };
                match (lookup, &*val) {
                    (Some(f), Value::String(s)) => {
                        let n = f(s).or_else(|| s.parse::<i32>().ok()).ok_or_else(|| {
                            IngestError::Malformed(format!(
                                "invalid OTLP/JSON: unknown value {s:?} for enum field {k:?}"
                            ))
                        })?;
                        *val = Value::from(n);
                    }
                    _ => normalize_enums(val)?,
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                normalize_enums(item)?;
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_quirks() {
        let body = br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{
            "traceId":"5B8EFFF798038103D269B633813FC60C","spanId":"EEE19B7EC3C1B174",
            "name":"x","kind":"SPAN_KIND_SERVER","startTimeUnixNano":"1544712660000000000",
            "endTimeUnixNano":1544712661000000000,"status":{"code":2},
            "attributes":[{"key":"n","value":{"intValue":"42"}}]}]}]}]}"#;
        let Telemetry::Traces(t) = decode_json(Signal::Traces, body).unwrap() else {
            panic!()
        };
        let s = &t.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(s.trace_id[0], 0x5b);
        assert_eq!(s.kind, 2);
        assert_eq!(s.start_time_unix_nano, 1_544_712_660_000_000_000);
        assert_eq!(s.end_time_unix_nano, 1_544_712_661_000_000_000);
        assert_eq!(s.status.as_ref().unwrap().code, 2);
    }

    #[test]
    fn rejects_bad_enum_and_hex() {
        assert!(decode_json(
            Signal::Traces,
            br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"kind":"NOPE"}]}]}]}"#
        )
        .is_err());
        assert!(decode_json(
            Signal::Traces,
            br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz"}]}]}]}"#
        )
        .is_err());
    }

    #[test]
    fn json_profiles_may_omit_defaults_and_use_string_ints() {
        assert!(decode_json(Signal::Profiles, br#"{"resourceProfiles":[{}]}"#).is_ok());
        let body = br#"{"resourceProfiles":[{"scopeProfiles":[{"profiles":[{
            "sampleType":{"typeStrindex":1},"timeUnixNano":"1700000000000000000",
            "samples":[{"stackIndex":1,"values":["7"]},{"values":[3]}]}]}]}],
          "dictionary":{"stringTable":["","cpu"],"stackTable":[{},{"locationIndices":[1]}],
            "locationTable":[{},{"address":"4096","lines":[{"functionIndex":1,"line":"42"}]}],
            "functionTable":[{},{"nameStrindex":1}],
            "linkTable":[{},{"traceId":"5B8EFFF798038103D269B633813FC60C","spanId":"EEE19B7EC3C1B174"}]}}"#;
        let Telemetry::Profiles(p) = decode_json(Signal::Profiles, body).unwrap() else {
            panic!()
        };
        let prof = &p.resource_profiles[0].scope_profiles[0].profiles[0];
        assert_eq!(prof.samples.iter().map(|s| s.values[0]).sum::<i64>(), 10);
        assert_eq!(prof.time_unix_nano, 1_700_000_000_000_000_000);
        let d = p.dictionary.as_ref().unwrap();
        assert_eq!(d.location_table[1].address, 4096);
        assert_eq!(d.location_table[1].lines[0].line, 42);
        assert_eq!(
            d.link_table[1].span_id,
            vec![0xee, 0xe1, 0x9b, 0x7e, 0xc3, 0xc1, 0xb1, 0x74]
        );
    }

    #[test]
    fn zip_bomb_is_too_large() {
        let big = vec![0u8; 1 << 20];
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut enc, &big).unwrap();
        let gz = enc.finish().unwrap();
        assert!(matches!(
            decompress(gz.into(), Encoding::Gzip, 1000),
            Err(IngestError::TooLarge(_))
        ));
    }
}
