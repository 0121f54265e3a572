//! What both OTLP transports share: id checks, counting, handing data to pipelines.

use prometheus_client::metrics::counter::Counter;
use sluice_config::{ByteSize, HumanDuration};
use sluice_core::{
    Charge, Envelope, Lease, MemoryBudget, Metrics, PerSignal, Routes, SendError, Signal, Telemetry,
};
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
    /// The memory budget has no room for this request now: the client should retry.
    #[error("{0}")]
    OverBudget(String),
    /// A bug: handling the request panicked. The request is refused, the receiver keeps serving.
    #[error("{0}")]
    Internal(String),
    /// The body did not arrive within the listener's `body_read_timeout` (the listener counts it).
    #[error("{0}")]
    BodyTimeout(String),
}

/// What went wrong reading a request body of at most `limit` bytes: too large, too slow (the
/// listener's timeout), or cut off.
pub fn body_error(e: &axum::Error, limit: usize) -> IngestError {
    let causes = || {
        std::iter::successors(Some(e as &(dyn std::error::Error + 'static)), |e| {
            e.source()
        })
    };
    if crate::listener::is_body_timeout(e) {
        IngestError::BodyTimeout(e.to_string())
    } else if causes().any(|s| s.is::<http_body_util::LengthLimitError>()) {
        IngestError::TooLarge(format!(
            "request body exceeds max_request_size ({limit} bytes)"
        ))
    } else {
        IngestError::Malformed(format!("cannot read request body: {e}"))
    }
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
            Self::OverBudget(_) => "memory_limit",
            Self::Internal(_) => "internal",
            Self::BodyTimeout(_) => "body_timeout",
        }
    }

    /// Whether the client should send the same request again later (OTLP's retryable statuses).
    pub fn retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::OverBudget(_))
    }

    /// The HTTP status of this refusal (OTLP/HTTP and the pprof endpoints); retryable ones are
    /// 503 and go with a `Retry-After` header.
    pub fn http_status(&self) -> http::StatusCode {
        use http::StatusCode;
        match self {
            Self::Malformed(_) => StatusCode::BAD_REQUEST,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unsupported(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::NoPipeline(_) => StatusCode::NOT_FOUND,
            Self::Unavailable(_) | Self::OverBudget(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
        }
    }

    /// The gRPC status code of this refusal: `UNAVAILABLE` is the one OTLP clients retry.
    pub fn grpc_code(&self) -> tonic::Code {
        use tonic::Code;
        match self {
            Self::Malformed(_) | Self::Unsupported(_) => Code::InvalidArgument,
            Self::TooLarge(_) => Code::ResourceExhausted,
            Self::NoPipeline(_) => Code::Unimplemented,
            Self::Unavailable(_) | Self::OverBudget(_) => Code::Unavailable,
            Self::Internal(_) => Code::Internal,
            Self::BodyTimeout(_) => Code::DeadlineExceeded,
        }
    }
}

pub use sluice_core::LogEvery;

/// Default `max_request_size` of the receivers: 16 MiB after decompression.
pub(crate) fn default_max_request_size() -> ByteSize {
    ByteSize::mib(16)
}

/// Default `accept_timeout` of the receivers: how long a request may wait for a full pipeline.
pub(crate) fn default_accept_timeout() -> HumanDuration {
    HumanDuration::from_secs(2)
}

/// A receiver's door into its pipelines. Cloned for every request (several times, by the gRPC
/// services), so it is one shared pointer.
#[derive(Clone)]
pub struct Ingest {
    parts: Arc<Parts>,
}

/// What every clone of an [`Ingest`] shares.
struct Parts {
    name: String,
    routes: Routes,
    timeout: Duration,
    metrics: Metrics,
    budget: Arc<MemoryBudget>,
    accepted: PerSignal<Counter>,
    unknown_paths: Mutex<HashSet<String>>,
    over_budget_log: LogEvery,
    panic_log: LogEvery,
}

impl Ingest {
    /// Builds the door for receiver `name`.
    pub fn new(
        name: &str,
        routes: Routes,
        timeout: Duration,
        metrics: &Metrics,
        budget: Arc<MemoryBudget>,
    ) -> Self {
        let parts = Parts {
            name: name.to_owned(),
            routes,
            timeout,
            metrics: metrics.clone(),
            budget,
            accepted: PerSignal::new(|s| metrics.receiver_accepted(name, s)),
            unknown_paths: Mutex::default(),
            over_budget_log: LogEvery::new(Duration::from_secs(10)),
            panic_log: LogEvery::new(Duration::from_secs(10)),
        };
        Self {
            parts: Arc::new(parts),
        }
    }

    /// Charges a request body just read against the memory budget; above the soft level the
    /// request is refused, retryably (the caller counts it, `{reason="memory_limit"}`).
    pub fn admit(&self, signal: Signal, bytes: usize) -> Result<Charge, IngestError> {
        self.parts
            .budget
            .admit(bytes)
            .map_err(|e| self.over_budget(signal, e))
    }

    /// Sets `charge` to `bytes` for a larger (decompressed, decoded) form of the same request.
    /// A form that alone would pass the hard level is refused for good ([`IngestError::TooLarge`]);
    /// one that does not fit now is refused retryably.
    pub fn resize(
        &self,
        signal: Signal,
        charge: &mut Charge,
        bytes: usize,
        what: &str,
    ) -> Result<(), IngestError> {
        if bytes > self.parts.budget.hard() {
            return Err(IngestError::TooLarge(format!(
                "the {what} would take {bytes} bytes of memory, more than this collector may hold ({} bytes: 75% of [service] memory_limit); send smaller requests",
                self.parts.budget.hard()
            )));
        }
        charge
            .resize(bytes)
            .map_err(|e| self.over_budget(signal, e))
    }

    fn over_budget(&self, signal: Signal, e: sluice_core::OverBudget) -> IngestError {
        let err = IngestError::OverBudget(e.to_string());
        if let Some(skipped) = self.parts.over_budget_log.check() {
            tracing::warn!(receiver = %self.parts.name, %signal, used = e.used, limit = e.limit, level = e.level, also_refused = skipped, "memory budget exhausted; refusing new data with a retryable status until exporters catch up (counted in sluice_receiver_refused_requests_total{{reason=\"memory_limit\"}})");
        }
        err
    }

    /// Runs a request's handling, turning a panic into a refusal: counted
    /// `{reason="internal"}`, logged (rate-limited) with the request's size and type, and the
    /// receiver keeps serving.
    pub async fn guard<T>(
        &self,
        signal: Signal,
        size: usize,
        what: &str,
        handling: impl std::future::Future<Output = Result<T, IngestError>>,
    ) -> Result<T, IngestError> {
        use futures::FutureExt;
        match std::panic::AssertUnwindSafe(handling).catch_unwind().await {
            Ok(r) => r,
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                let e = IngestError::Internal(format!(
                    "internal error while handling the request (a bug, please report it): {msg}"
                ));
                self.refused(signal, 0, &e);
                if let Some(skipped) = self.parts.panic_log.check() {
                    tracing::error!(receiver = %self.parts.name, %signal, request_bytes = size, request = what, panic = %msg, also_panicked = skipped, "handling a request panicked; it was refused and the receiver keeps serving");
                }
                Err(e)
            }
        }
    }

    /// Whether any pipeline takes `signal` (checked before decoding a body).
    pub fn accepts(&self, signal: Signal) -> bool {
        self.parts.routes.load().accepts(signal)
    }

    /// Counts a request refused before it could be decoded (its items are unknown: counted as 0
    /// items but logged), or after (with its items).
    pub fn refused(&self, signal: Signal, items: u64, err: &IngestError) {
        if matches!(err, IngestError::BodyTimeout(_)) {
            // The listener counted it when the deadline passed.
            return;
        }
        self.parts
            .metrics
            .receiver_refused(&self.parts.name, signal, err.reason())
            .inc_by(items);
        self.parts
            .metrics
            .receiver_refused_requests(&self.parts.name, signal, err.reason())
            .inc();
        tracing::debug!(receiver = %self.parts.name, %signal, items, error = %err, "request refused");
    }

    /// Counts a request to a path or method the receiver does not serve
    /// (`sluice_receiver_refused_requests_total{reason="not_found"}`) and logs each path once.
    pub fn unrouted(&self, method: &str, path: &str) {
        self.parts
            .metrics
            .receiver_refused_requests_unrouted(&self.parts.name, "not_found")
            .inc();
        let shown: String = path.chars().take(200).collect();
        let mut seen = self
            .parts
            .unknown_paths
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.contains(&shown) || seen.len() > LOGGED_UNKNOWN_PATHS {
            return;
        }
        if seen.len() == LOGGED_UNKNOWN_PATHS {
            seen.insert(String::new());
            tracing::warn!(receiver = %self.parts.name, "more unknown paths requested; they are counted in sluice_receiver_refused_requests_total{{reason=\"not_found\"}} but no longer logged one by one");
            return;
        }
        tracing::warn!(receiver = %self.parts.name, %method, path = %shown, "request to a path or method this receiver does not serve (logged once per path)");
        seen.insert(shown);
    }

    /// Checks ids (refusing, and counting, spans and records with invalid ones) and wraps the
    /// request for the pipelines with its lease.
    pub fn prepare(&self, mut data: Telemetry, lease: Lease) -> (Envelope, Partial) {
        let signal = data.signal();
        let partial = drop_invalid_ids(&mut data);
        if partial.rejected > 0 {
            // Refused, not dropped: the client is told in the partial-success response.
            self.parts
                .metrics
                .receiver_refused(&self.parts.name, signal, "invalid")
                .inc_by(partial.rejected);
            tracing::debug!(receiver = %self.parts.name, %signal, rejected = partial.rejected, "{}", partial.message);
        }
        let items = data.item_count();
        (Envelope { data, items, lease }, partial)
    }

    /// Counts items the pipelines took.
    pub fn accepted(&self, signal: Signal, items: u64) {
        self.parts.accepted.get(signal).inc_by(items);
    }

    /// How long one offer to the pipelines waits for room.
    pub fn timeout(&self) -> Duration {
        self.parts.timeout
    }

    /// The pipelines as of now (a reload swaps them).
    pub fn routes(&self) -> Arc<sluice_core::PipelineInput> {
        self.parts.routes.load_full()
    }

    /// Checks ids, then hands the request to every pipeline of its signal; `charge` (its memory)
    /// goes with it until the last exporter is done with it.
    pub async fn ingest(&self, data: Telemetry, charge: Charge) -> Result<Partial, IngestError> {
        let signal = data.signal();
        let (env, partial) = self.prepare(data, Lease::charged(charge));
        let items = env.items;
        // The routes as of now: a reload swaps them for later requests, this one finishes here.
        let input = self.parts.routes.load_full();
        match input.send(env, self.parts.timeout).await {
            Ok(()) => {
                self.accepted(signal, items);
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
