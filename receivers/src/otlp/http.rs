//! OTLP/HTTP: `/v1/traces`, `/v1/metrics`, `/v1/logs`, `/v1development/profiles`, protobuf or JSON.

use super::decode::{decode_charged, decompress, Encoding, Format};
use crate::ingest::{responses, Ingest, IngestError, Partial};
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use prost::Message;
use sluice_core::Signal;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// `google.rpc.Status`, the body of OTLP/HTTP error responses.
#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";

struct Shared {
    ingest: Ingest,
    max_request_size: usize,
}

/// The OTLP/HTTP routes, for serving and for handler tests with `oneshot`.
pub fn app(ingest: Ingest, max_request_size: usize) -> Router {
    let shared = Arc::new(Shared {
        ingest,
        max_request_size,
    });
    Router::new()
        .route(
            "/v1/traces",
            post(|s, h, b| handle(s, h, b, Signal::Traces)),
        )
        .route(
            "/v1/metrics",
            post(|s, h, b| handle(s, h, b, Signal::Metrics)),
        )
        .route("/v1/logs", post(|s, h, b| handle(s, h, b, Signal::Logs)))
        .route(
            "/v1development/profiles",
            post(|s, h, b| handle(s, h, b, Signal::Profiles)),
        )
        .fallback(|s, m, u| unrouted(s, m, u, StatusCode::NOT_FOUND))
        .method_not_allowed_fallback(|s, m, u| unrouted(s, m, u, StatusCode::METHOD_NOT_ALLOWED))
        .with_state(shared)
}

/// What this receiver serves, told to a client that asked for something else.
const SERVES: &str = "this OTLP/HTTP receiver serves POST /v1/traces, /v1/metrics, /v1/logs and /v1development/profiles (Content-Type application/x-protobuf or application/json)";

async fn unrouted(
    State(st): State<Arc<Shared>>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    code: StatusCode,
) -> Response {
    st.ingest.unrouted(method.as_str(), uri.path());
    crate::ingest::not_served(code, &method, uri.path(), SERVES)
}

/// Serves OTLP/HTTP on `listener` until `shutdown`; in-flight requests finish first.
pub async fn serve(
    listener: crate::listener::Listener,
    ingest: Ingest,
    max_request_size: usize,
    shutdown: CancellationToken,
) {
    listener
        .serve(app(ingest, max_request_size), shutdown)
        .await;
}

async fn handle(
    State(st): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Body,
    signal: Signal,
) -> Response {
    let ct = crate::ingest::media_type(&headers);
    let format = match ct.as_str() {
        PROTOBUF => Format::Protobuf,
        JSON => Format::Json,
        other => {
            let e = IngestError::Unsupported(format!(
                "unsupported Content-Type {other:?}; expected {PROTOBUF} or {JSON}"
            ));
            st.ingest.refused(signal, 0, &e);
            return error_response(Format::Protobuf, &e);
        }
    };
    let size = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let handling = decode_and_ingest(&st, &headers, body, signal, format);
    match st.ingest.guard(signal, size, "OTLP/HTTP", handling).await {
        Ok(p) => success(format, signal, p),
        Err(e) => error_response(format, &e),
    }
}

async fn decode_and_ingest(
    st: &Shared,
    headers: &HeaderMap,
    body: Body,
    signal: Signal,
    format: Format,
) -> Result<Partial, IngestError> {
    let refuse = |e: IngestError| {
        st.ingest.refused(signal, 0, &e);
        e
    };
    if !st.ingest.accepts(signal) {
        return Err(refuse(IngestError::NoPipeline(format!(
            "no pipeline accepts {signal} from this receiver"
        ))));
    }
    let limit = st.max_request_size;
    let enc = Encoding::from_header(
        headers
            .get(header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok()),
    )
    .map_err(refuse)?;
    // Charge what the client says it sends before reading it, so a flood of large bodies is
    // refused before it is in memory (the charge is corrected once the body is read).
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0)
        .min(limit);
    let mut charge = st.ingest.admit(signal, declared).map_err(refuse)?;
    let raw = axum::body::to_bytes(body, limit)
        .await
        .map_err(|e| refuse(crate::ingest::body_error(&e, limit)))?;
    st.ingest
        .resize(signal, &mut charge, raw.len(), "request body")
        .map_err(refuse)?;
    let body = decompress(raw, enc, limit).map_err(refuse)?;
    st.ingest
        .resize(signal, &mut charge, body.len(), "decompressed body")
        .map_err(refuse)?;
    let data = decode_charged(&st.ingest, signal, format, body, &mut charge).map_err(refuse)?;
    st.ingest.ingest(data, charge).await
}

fn success(format: Format, signal: Signal, p: Partial) -> Response {
    fn encode<T: Message + serde::Serialize>(format: Format, r: T) -> Vec<u8> {
        match format {
            Format::Protobuf => r.encode_to_vec(),
            Format::Json => serde_json::to_vec(&r).unwrap_or_else(|_| b"{}".to_vec()),
        }
    }
    let bytes = match signal {
        Signal::Traces => encode(format, responses::traces(p)),
        Signal::Metrics => encode(format, responses::metrics(p)),
        Signal::Logs => encode(format, responses::logs(p)),
        Signal::Profiles => encode(format, responses::profiles(p)),
    };
    with_type(format, StatusCode::OK, bytes)
}

fn error_response(format: Format, e: &IngestError) -> Response {
    let code = e.http_status();
    let status = RpcStatus {
        code: e.grpc_code() as i32,
        message: e.to_string(),
    };
    let bytes = match format {
        Format::Protobuf => status.encode_to_vec(),
        Format::Json => serde_json::to_vec(&status).unwrap_or_default(),
    };
    let mut resp = with_type(format, code, bytes);
    if e.retryable() {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}

fn with_type(format: Format, code: StatusCode, bytes: Vec<u8>) -> Response {
    let ct = match format {
        Format::Protobuf => PROTOBUF,
        Format::Json => JSON,
    };
    (
        code,
        [(header::CONTENT_TYPE, HeaderValue::from_static(ct))],
        bytes,
    )
        .into_response()
}
