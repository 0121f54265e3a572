//! What both OTLP transports share: id checks, counting, handing data to pipelines.

use prometheus_client::metrics::counter::Counter;
use sluice_config::{ByteSize, HumanDuration};
use sluice_core::{Metrics, PerSignal, Routes, SendError, Signal, Telemetry};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How many distinct unknown paths a receiver logs one by one; a client scanning random paths
/// cannot grow the set past this (later ones are still counted, and logged once as a group).
const LOGGED_UNKNOWN_PATHS: usize = 64;

/// Items the receiver rejected while accepting the rest (OTLP partial success).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Partial {
    /// How many items were rejected.
    pub rejected: u64,
    /// Why, for the client.
    pub message: String,
}

impl Partial {
    /// `(rejected, message)` when anything was rejected; OTLP leaves `partial_success` unset otherwise.
    pub fn rejected(self) -> Option<(i64, String)> {
        (self.rejected > 0).then(|| {
            (
                i64::try_from(self.rejected).unwrap_or(i64::MAX),
                self.message,
            )
        })
    }
}

/// The OTLP success responses, shared by gRPC and HTTP.
pub mod responses {
    use super::Partial;
    use opentelemetry_proto::tonic::collector::logs::v1::{
        ExportLogsPartialSuccess, ExportLogsServiceResponse,
    };
    use opentelemetry_proto::tonic::collector::metrics::v1::{
        ExportMetricsPartialSuccess, ExportMetricsServiceResponse,
    };
    use opentelemetry_proto::tonic::collector::profiles::v1development::{
        ExportProfilesPartialSuccess, ExportProfilesServiceResponse,
    };
    use opentelemetry_proto::tonic::collector::trace::v1::{
        ExportTracePartialSuccess, ExportTraceServiceResponse,
    };

    /// Response to a traces export.
    pub fn traces(p: Partial) -> ExportTraceServiceResponse {
        ExportTraceServiceResponse {
            partial_success: p.rejected().map(|(n, m)| ExportTracePartialSuccess {
                rejected_spans: n,
                error_message: m,
            }),
        }
    }

    /// Response to a metrics export.
    pub fn metrics(p: Partial) -> ExportMetricsServiceResponse {
        ExportMetricsServiceResponse {
            partial_success: p.rejected().map(|(n, m)| ExportMetricsPartialSuccess {
                rejected_data_points: n,
                error_message: m,
            }),
        }
    }

    /// Response to a logs export.
    pub fn logs(p: Partial) -> ExportLogsServiceResponse {
        ExportLogsServiceResponse {
            partial_success: p.rejected().map(|(n, m)| ExportLogsPartialSuccess {
                rejected_log_records: n,
                error_message: m,
            }),
        }
    }

    /// Response to a profiles export.
    pub fn profiles(p: Partial) -> ExportProfilesServiceResponse {
        ExportProfilesServiceResponse {
            partial_success: p.rejected().map(|(n, m)| ExportProfilesPartialSuccess {
                rejected_profiles: n,
                error_message: m,
            }),
        }
    }
}

/// Why a whole request was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngestError {
    /// Body could not be decoded.
    #[error("{0}")]
    Malformed(String),
    /// Body larger than `max_request_size`.
    #[error("{0}")]
    TooLarge(String),
    /// Content type or encoding not supported.
    #[error("{0}")]
    Unsupported(String),
    /// No pipeline takes this signal.
    #[error("{0}")]
    NoPipeline(String),
    /// Pipelines are full or shutting down: the client should retry.
    #[error("{0}")]
    Unavailable(String),
}

impl IngestError {
    /// Label for `sluice_receiver_refused_items_total{reason}`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed",
            Self::TooLarge(_) => "too_large",
            Self::Unsupported(_) => "unsupported",
            Self::NoPipeline(_) => "no_pipeline",
            Self::Unavailable(_) => "unavailable",
        }
    }
}

/// Default `max_request_size` of the receivers: 16 MiB after decompression.
pub(crate) fn default_max_request_size() -> ByteSize {
    ByteSize::mib(16)
}

/// Default `accept_timeout` of the receivers: how long a request may wait for a full pipeline.
pub(crate) fn default_accept_timeout() -> HumanDuration {
    HumanDuration::from_secs(2)
}

/// A receiver's door into its pipelines.
#[derive(Clone)]
pub struct Ingest {
    name: String,
    routes: Routes,
    timeout: Duration,
    metrics: Metrics,
    accepted: PerSignal<Counter>,
    unknown_paths: Arc<Mutex<HashSet<String>>>,
}

impl Ingest {
    /// Builds the door for receiver `name`.
    pub fn new(name: &str, routes: Routes, timeout: Duration, metrics: &Metrics) -> Self {
        Self {
            name: name.to_owned(),
            routes,
            timeout,
            metrics: metrics.clone(),
            accepted: PerSignal::new(|s| metrics.receiver_accepted(name, s)),
            unknown_paths: Arc::default(),
        }
    }

    /// Whether any pipeline takes `signal` (checked before decoding a body).
    pub fn accepts(&self, signal: Signal) -> bool {
        self.routes.load().accepts(signal)
    }

    /// Counts a request refused before it could be decoded (its items are unknown: counted as 0
    /// items but logged), or after (with its items).
    pub fn refused(&self, signal: Signal, items: u64, err: &IngestError) {
        self.metrics
            .receiver_refused(&self.name, signal, err.reason())
            .inc_by(items);
        self.metrics
            .receiver_refused_requests(&self.name, signal, err.reason())
            .inc();
        tracing::debug!(receiver = %self.name, %signal, items, error = %err, "request refused");
    }

    /// Counts a request to a path or method the receiver does not serve
    /// (`sluice_receiver_refused_requests_total{reason="not_found"}`) and logs each path once.
    pub fn unrouted(&self, method: &str, path: &str) {
        self.metrics
            .receiver_refused_requests_unrouted(&self.name, "not_found")
            .inc();
        let shown: String = path.chars().take(200).collect();
        let mut seen = self
            .unknown_paths
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.contains(&shown) || seen.len() > LOGGED_UNKNOWN_PATHS {
            return;
        }
        if seen.len() == LOGGED_UNKNOWN_PATHS {
            seen.insert(String::new());
            tracing::warn!(receiver = %self.name, "more unknown paths requested; they are counted in sluice_receiver_refused_requests_total{{reason=\"not_found\"}} but no longer logged one by one");
            return;
        }
        tracing::warn!(receiver = %self.name, %method, path = %shown, "request to a path or method this receiver does not serve (logged once per path)");
        seen.insert(shown);
    }

    /// Checks ids, then hands the request to every pipeline of its signal.
    pub async fn ingest(&self, mut data: Telemetry) -> Result<Partial, IngestError> {
        let signal = data.signal();
        let partial = drop_invalid_ids(&mut data);
        if partial.rejected > 0 {
            // Refused, not dropped: the client is told in the partial-success response.
            self.metrics
                .receiver_refused(&self.name, signal, "invalid")
                .inc_by(partial.rejected);
            tracing::debug!(receiver = %self.name, %signal, rejected = partial.rejected, "{}", partial.message);
        }
        let items = data.item_count();
        // The routes as of now: a reload swaps them for later requests, this one finishes here.
        let input = self.routes.load_full();
        let env = sluice_core::Envelope::new(data, items);
        match input.send(env, self.timeout).await {
            Ok(()) => {
                self.accepted.get(signal).inc_by(items);
                Ok(partial)
            }
            Err(e) => {
                let err = match e {
                    SendError::NoPipeline(_) => IngestError::NoPipeline(e.to_string()),
                    SendError::Full(_) | SendError::Closed(_) => {
                        IngestError::Unavailable(e.to_string())
                    }
                };
                self.refused(signal, items, &err);
                Err(err)
            }
        }
    }
}

/// The answer to an unknown path (404) or method (405): plain text naming what the receiver
/// serves, so a client pointed at the wrong port or path sees why.
pub fn not_served(
    code: http::StatusCode,
    method: &http::Method,
    path: &str,
    serves: &str,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let what = if code == http::StatusCode::METHOD_NOT_ALLOWED {
        "method"
    } else {
        "path"
    };
    let shown: String = path.chars().take(200).collect();
    (
        code,
        [(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("unknown {what}: {method} {shown}; {serves}\n"),
    )
        .into_response()
}

/// Drops spans and log records whose ids have the wrong length; OTLP requires 16-byte trace ids
/// and 8-byte span ids (logs may leave them empty). Returns what was dropped, for partial success.
pub fn drop_invalid_ids(data: &mut Telemetry) -> Partial {
    let mut rejected = 0u64;
    let mut example = String::new();
    match data {
        Telemetry::Traces(r) => {
            for ss in r
                .resource_spans
                .iter_mut()
                .flat_map(|rs| rs.scope_spans.iter_mut())
            {
                ss.spans.retain(|s| {
                    let ok = s.trace_id.len() == 16
                        && s.span_id.len() == 8
                        && (s.parent_span_id.is_empty() || s.parent_span_id.len() == 8);
                    if !ok {
                        rejected += 1;
                        if example.is_empty() {
                            example = format!(
                                "span {:?} has trace id of {} bytes, span id of {} bytes (expected 16 and 8)",
                                s.name,
                                s.trace_id.len(),
                                s.span_id.len()
                            );
                        }
                    }
                    ok
                });
            }
        }
        Telemetry::Logs(r) => {
            for sl in r
                .resource_logs
                .iter_mut()
                .flat_map(|rl| rl.scope_logs.iter_mut())
            {
                sl.log_records.retain(|l| {
                    let ok = (l.trace_id.is_empty() || l.trace_id.len() == 16)
                        && (l.span_id.is_empty() || l.span_id.len() == 8);
                    if !ok {
                        rejected += 1;
                        if example.is_empty() {
                            example = format!(
                                "log record has trace id of {} bytes, span id of {} bytes (expected 16 and 8, or empty)",
                                l.trace_id.len(),
                                l.span_id.len()
                            );
                        }
                    }
                    ok
                });
            }
        }
        // Encoded requests passed the wire check, which rejects bad ids.
        Telemetry::Metrics(_) | Telemetry::Profiles(_) | Telemetry::Encoded(_) => {}
    }
    if rejected == 0 {
        return Partial::default();
    }
    Partial {
        rejected,
        message: format!("{rejected} item(s) rejected: {example}"),
    }
}

/// The media type of a request's `Content-Type`, lower-cased, without parameters (`""` when absent).
pub fn media_type(headers: &axum::http::HeaderMap) -> String {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default()
}
