//! Body decoding for OTLP: decompression with a size cap, protobuf, and OTLP/JSON with its quirks.

use crate::ingest::IngestError;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::logs::v1::SeverityNumber;
use opentelemetry_proto::tonic::metrics::v1::AggregationTemporality;
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode};
use prost::Message;
use serde_json::Value;
use sluice_core::{Signal, Telemetry};
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

/// Decodes an OTLP protobuf request of `signal`.
pub fn decode_protobuf(signal: Signal, body: &[u8]) -> Result<Telemetry, IngestError> {
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
    Ok(match signal {
        Signal::Traces => Telemetry::Traces(serde_json::from_value(value).map_err(bad)?),
        Signal::Metrics => Telemetry::Metrics(serde_json::from_value(value).map_err(bad)?),
        Signal::Logs => Telemetry::Logs(serde_json::from_value(value).map_err(bad)?),
        Signal::Profiles => {
            Telemetry::Profiles(Box::new(serde_json::from_value(value).map_err(bad)?))
        }
    })
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
