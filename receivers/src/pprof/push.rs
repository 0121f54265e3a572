//! Pyroscope's push API, `POST /push.v1.PusherService/Push`, as the connect protocol's unary
//! calls carry it: a `PushRequest` in binary protobuf (`application/proto`) or protojson
//! (`application/json`), optionally `Content-Encoding: gzip`; success is `200` with an empty
//! `PushResponse`, failure a connect error `{"code": ..., "message": ...}` with its HTTP status.
//!
//! Each series' labels follow Pyroscope's conventions: `service_name` is the service
//! (`service.name`), `__name__` the profile type (profile attribute `pyroscope.profile.name`),
//! other `__`-prefixed labels are profile attributes under their own name, `otel.scope.name` and
//! `otel.scope.version` the instrumentation scope, the rest resource attributes. Every raw sample (a gzipped or raw pprof) becomes OTLP profiles in one request.

use super::convert::{self, Builder, Meta, PprofError};
use super::Shared;
use crate::ingest::IngestError;
use crate::otlp::decode::{decompress, Encoding};
use sluice_core::Charge;
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use prost::Message;
use serde::Deserialize;
use sluice_core::{Signal, Telemetry};
use std::sync::Arc;

/// The path current Pyroscope SDKs and Grafana Alloy push to.
pub const PATH: &str = "/push.v1.PusherService/Push";

/// `push.v1.PushRequest`: raw pprof profiles with their labels.
#[derive(Clone, PartialEq, prost::Message, Deserialize)]
pub struct PushRequest {
    /// One entry per label set.
    #[prost(message, repeated, tag = "1")]
    #[serde(default)]
    pub series: Vec<RawProfileSeries>,
}

/// `push.v1.RawProfileSeries`: the labels of some profiles, and the profiles.
#[derive(Clone, PartialEq, prost::Message, Deserialize)]
pub struct RawProfileSeries {
    /// `service_name`, `__name__`, tags.
    #[prost(message, repeated, tag = "1")]
    #[serde(default)]
    pub labels: Vec<LabelPair>,
    /// The profiles.
    #[prost(message, repeated, tag = "2")]
    #[serde(default)]
    pub samples: Vec<RawSample>,
}

/// `types.v1.LabelPair`.
#[derive(Clone, PartialEq, prost::Message, Deserialize)]
pub struct LabelPair {
    /// Label name.
    #[prost(string, tag = "1")]
    #[serde(default)]
    pub name: String,
    /// Label value.
    #[prost(string, tag = "2")]
    #[serde(default)]
    pub value: String,
}

/// `push.v1.RawSample`: one pprof profile, gzipped or raw.
#[derive(Clone, PartialEq, prost::Message, Deserialize)]
pub struct RawSample {
    /// The pprof bytes (base64 in JSON).
    #[prost(bytes = "vec", tag = "1")]
    #[serde(
        default,
        rename = "rawProfile",
        alias = "raw_profile",
        deserialize_with = "base64_bytes"
    )]
    pub raw_profile: Vec<u8>,
    /// The client's id for the profile.
    #[prost(string, tag = "2")]
    #[serde(default, rename = "ID", alias = "id")]
    pub id: String,
}

/// protojson bytes: standard or URL-safe base64, padded or not; `null` is empty.
fn base64_bytes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    use base64::Engine;
    const CFG: GeneralPurposeConfig =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    const STANDARD: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, CFG);
    const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::URL_SAFE, CFG);
    let s: Option<String> = Option::deserialize(d)?;
    let Some(s) = s else { return Ok(Vec::new()) };
    STANDARD
        .decode(&s)
        .or_else(|_| URL_SAFE.decode(&s))
        .map_err(|e| serde::de::Error::custom(format!("rawProfile is not base64: {e}")))
}

/// The request's codec, from its Content-Type.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Codec {
    Proto,
    Json,
}

/// Pyroscope labels → where they go in OTLP (see the module docs).
pub fn series_meta(labels: &[LabelPair]) -> Meta {
    let mut meta = Meta::default();
    for l in labels {
        match l.name.as_str() {
            "service_name" => meta.service.clone_from(&l.value),
            "otel.scope.name" => {
                meta.scope.get_or_insert_with(Default::default).0 = l.value.clone()
            }
            "otel.scope.version" => {
                meta.scope.get_or_insert_with(Default::default).1 = l.value.clone()
            }
            "__name__" => meta
                .profile_labels
                .push(("pyroscope.profile.name".into(), l.value.clone())),
            n if n.starts_with("__") => meta.profile_labels.push((l.name.clone(), l.value.clone())),
            _ => meta.labels.push((l.name.clone(), l.value.clone())),
        }
    }
    if meta.service.is_empty() {
        meta.service = "unknown_service".into();
    }
    meta
}

/// A connect error: JSON `{code, message}` with the HTTP status the protocol pairs with `code`.
fn connect_error(e: &IngestError) -> Response {
    // The connect protocol's own codes and the HTTP statuses it pairs them with.
    let (status, code) = match e {
        IngestError::Malformed(_) => (StatusCode::BAD_REQUEST, "invalid_argument"),
        IngestError::TooLarge(_) => (StatusCode::TOO_MANY_REQUESTS, "resource_exhausted"),
        IngestError::Unsupported(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unimplemented"),
        IngestError::NoPipeline(_) => (StatusCode::NOT_FOUND, "not_found"),
        IngestError::Unavailable(_) | IngestError::OverBudget(_) => {
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
        }
        IngestError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    };
    let body = serde_json::json!({ "code": code, "message": e.to_string() }).to_string();
    let mut r = (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    r
}

fn header_str(h: &HeaderMap, name: impl header::AsHeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// Everything up to handing the request to the pipelines; errors are counted by the caller.
async fn convert_request(
    st: &Shared,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Codec, Telemetry, bool, Charge), IngestError> {
    let ct = crate::ingest::media_type(headers);
    let codec = match ct.as_str() {
        "application/proto" | "application/x-protobuf" => Codec::Proto,
        "application/json" => Codec::Json,
        other => {
            return Err(IngestError::Unsupported(format!(
                "unsupported Content-Type {other:?}; {PATH} takes application/proto or application/json (connect protocol)"
            )))
        }
    };
    if let Some(v) = header_str(headers, "connect-protocol-version") {
        if v.trim() != "1" {
            return Err(IngestError::Malformed(format!(
                "unsupported Connect-Protocol-Version {v:?}; expected 1"
            )));
        }
    }
    if !st.ingest.accepts(Signal::Profiles) {
        return Err(IngestError::NoPipeline(
            "no pipeline accepts profiles from this receiver".into(),
        ));
    }
    let enc = Encoding::from_header(header_str(headers, header::CONTENT_ENCODING))?;
    let limit = st.limit;
    let raw = axum::body::to_bytes(body, limit).await.map_err(|e| {
        let too_large =
            std::iter::successors(Some(&e as &(dyn std::error::Error + 'static)), |e| {
                e.source()
            })
            .any(|s| s.is::<http_body_util::LengthLimitError>());
        if too_large {
            IngestError::TooLarge(format!(
                "request body exceeds max_request_size ({limit} bytes)"
            ))
        } else {
            IngestError::Malformed(format!("cannot read request body: {e}"))
        }
    })?;
    let mut charge = st.ingest.admit(Signal::Profiles, raw.len())?;
    let body = decompress(raw, enc, limit)?;
    // The push request holds the profiles (encoded) and is then converted: charge the bound of
    // the whole before converting.
    let during = body
        .len()
        .saturating_add(convert::memory_bound(body.len()));
    st.ingest
        .resize(Signal::Profiles, &mut charge, during, "converted push request")?;
    let req = decode_request(&body, codec == Codec::Json)?;
    drop(body);
    let out = convert(&req, limit)?;
    let empty = out.is_empty();
    Ok((codec, Telemetry::Profiles(Box::new(out.finish())), empty, charge))
}

/// A `PushRequest` from binary protobuf or (`json`) protojson.
pub fn decode_request(body: &[u8], json: bool) -> Result<PushRequest, IngestError> {
    if json {
        serde_json::from_slice::<PushRequest>(body).map_err(|e| e.to_string())
    } else {
        PushRequest::decode(body).map_err(|e| e.to_string())
    }
    .map_err(|e| IngestError::Malformed(format!("not a push.v1.PushRequest: {e}")))
}

/// Every series' profiles, converted into one request; all of them together may not decompress
/// past `limit`. One bad profile refuses the request, naming its series and sample.
pub fn convert(req: &PushRequest, limit: usize) -> Result<Builder, IngestError> {
    let mut left = limit;
    let mut out = Builder::default();
    for (si, series) in req.series.iter().enumerate() {
        let meta = series_meta(&series.labels);
        for (pi, sample) in series.samples.iter().enumerate() {
            let at = |e: PprofError| {
                match e {
                PprofError::TooLarge(_) => IngestError::TooLarge(format!(
                    "series {si} sample {pi}: the request's profiles exceed max_request_size ({limit} bytes) after decompression"
                )),
                e => IngestError::Malformed(format!("series {si} sample {pi}: {e}")),
            }
            };
            let (profile, size) = convert::decode_sized(&sample.raw_profile, left).map_err(at)?;
            left = left.saturating_sub(size);
            out.add_sized(&profile, size, &meta).map_err(at)?;
        }
    }
    Ok(out)
}

/// `POST /push.v1.PusherService/Push`.
pub(super) async fn push(
    State(st): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let size = header_str(&headers, header::CONTENT_LENGTH)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let handling = async {
        let (codec, data, empty, charge) = convert_request(&st, &headers, body)
            .await
            .inspect_err(|e| st.ingest.refused(Signal::Profiles, 0, e))?;
        // A request without profiles carries nothing to lose: answered, not forwarded.
        if !empty {
            st.ingest.ingest(data, charge).await?;
        }
        Ok(codec)
    };
    let codec = match st
        .ingest
        .guard(Signal::Profiles, size, "pprof push", handling)
        .await
    {
        Ok(c) => c,
        Err(e) => return connect_error(&e),
    };
    let (ct, body): (&'static str, &'static [u8]) = match codec {
        Codec::Proto => ("application/proto", b""),
        Codec::Json => ("application/json", b"{}"),
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, HeaderValue::from_static(ct))],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(name: &str, value: &str) -> LabelPair {
        LabelPair {
            name: name.into(),
            value: value.into(),
        }
    }

    #[test]
    fn pyroscope_label_conventions() {
        let m = series_meta(&[
            pair("__name__", "process_cpu"),
            pair("service_name", "app"),
            pair("env", "prod"),
            pair("__delta__", "false"),
            pair("otel.scope.name", "com.grafana.pyroscope/python"),
            pair("otel.scope.version", "1.4.0"),
        ]);
        assert_eq!(m.service, "app");
        assert_eq!(m.labels, vec![("env".to_owned(), "prod".to_owned())]);
        assert_eq!(
            m.profile_labels,
            vec![
                (
                    "pyroscope.profile.name".to_owned(),
                    "process_cpu".to_owned()
                ),
                ("__delta__".to_owned(), "false".to_owned())
            ]
        );
        assert_eq!(
            m.scope,
            Some(("com.grafana.pyroscope/python".into(), "1.4.0".into()))
        );
        assert_eq!(series_meta(&[]).service, "unknown_service");
    }

    #[test]
    fn protojson_accepts_both_base64_alphabets_and_field_spellings() {
        // 0xfb 0xff: "+/8=" in standard base64, "-_8" in URL-safe without padding.
        for (sample, want) in [
            (
                r#"{"rawProfile": "+/8=", "ID": "a"}"#,
                (vec![0xfb, 0xff], "a"),
            ),
            (
                r#"{"raw_profile": "-_8", "id": "b"}"#,
                (vec![0xfb, 0xff], "b"),
            ),
            (r#"{"rawProfile": null}"#, (vec![], "")),
        ] {
            let body =
                format!(r#"{{"series": [{{"labels": [], "samples": [{sample}]}}], "unknown": 1}}"#);
            let r = decode_request(body.as_bytes(), true).unwrap();
            let s = &r.series[0].samples[0];
            assert_eq!((s.raw_profile.clone(), s.id.as_str()), want, "{sample}");
        }
        assert!(matches!(
            decode_request(
                br#"{"series": [{"samples": [{"rawProfile": "***"}]}]}"#,
                true
            ),
            Err(IngestError::Malformed(_))
        ));
    }

    #[test]
    fn one_bad_profile_refuses_the_request_naming_it_and_the_limit_is_shared() {
        let good = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/pprof/sample.cpu"
        ))
        .unwrap();
        let req = |raws: Vec<Vec<u8>>| PushRequest {
            series: vec![RawProfileSeries {
                labels: vec![pair("service_name", "s")],
                samples: raws
                    .into_iter()
                    .map(|raw_profile| RawSample {
                        raw_profile,
                        id: String::new(),
                    })
                    .collect(),
            }],
        };
        let out = convert(&req(vec![good.clone(), good.clone()]), 64 << 20)
            .unwrap()
            .finish();
        assert_eq!(out.resource_profiles.len(), 1);
        assert_eq!(out.resource_profiles[0].scope_profiles[0].profiles.len(), 4);
        match convert(&req(vec![good.clone(), b"junk".to_vec()]), 64 << 20) {
            Err(IngestError::Malformed(m)) => assert!(m.starts_with("series 0 sample 1:"), "{m}"),
            _ => panic!("junk accepted"),
        }
        // Each profile fits the limit alone, two together do not.
        let one = convert::decode_sized(&good, 64 << 20).unwrap().1;
        assert!(convert(&req(vec![good.clone()]), one).is_ok());
        assert!(matches!(
            convert(&req(vec![good.clone(), good]), one + 10),
            Err(IngestError::TooLarge(_))
        ));
    }
}
