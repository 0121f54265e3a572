//! The OTLP exporter: forwards to another OTLP endpoint over gRPC or HTTP/protobuf, so a
//! sidecar Sluice can feed a gateway Sluice (or any OTLP backend).

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
pub mod balance;
pub mod config;

pub use config::{Compression, OtlpExporterConfig, OtlpProtocol, ResolverConfig};
use sluice_config::Signal;
use sluice_core::component::{ExporterContext, ExporterKind, Problems};
use std::sync::Arc;
use sluice_core::grpc_codec::BytesCodec;
use sluice_core::{BoxFuture, Delivered, ExportError, Exporter, Telemetry};
use std::io::Write;
use std::time::Duration;
use tonic::codec::CompressionEncoding;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::transport::{Channel, Endpoint};

use crate::tls;
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use sluice_config::redact;

/// The OTLP/HTTP client: hyper with rustls (plain TCP for `http://`).
type HttpClient = hyper_util::client::legacy::Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Largest response body read back (a partial-success message or an error text).
const MAX_RESPONSE_BYTES: usize = 4 << 20;

/// Errors building the exporter from its settings.
#[derive(Debug, thiserror::Error)]
pub enum OtlpExporterError {
    /// The endpoint is not a usable URL (shown without its secrets).
    #[error("invalid endpoint {0:?}: {1}")]
    Endpoint(String, String),
    /// The `tls` table does not make a TLS configuration.
    #[error("tls: {0}")]
    Tls(#[from] tls::TlsError),
    /// A header name or value is not valid.
    #[error("invalid header {0:?}")]
    Header(String),
    /// Neither `endpoint`, `endpoints` nor `resolver` is set (validation reports it first).
    #[error("no endpoint")]
    NoEndpoint,
}

/// A failed send, and whether the next hop never answered (refused or reset connection,
/// timeout): what the balancing exporter takes a gateway out of its ring for.
#[derive(Debug)]
pub struct SendFailure {
    /// What the delivery layer sees.
    pub error: ExportError,
    /// No response came from the next hop.
    pub unreachable: bool,
}

impl SendFailure {
    fn answered(error: ExportError) -> Self {
        Self {
            error,
            unreachable: false,
        }
    }

    fn unreachable(error: ExportError) -> Self {
        Self {
            error,
            unreachable: true,
        }
    }
}

enum Transport {
    Grpc {
        channel: Channel,
        metadata: MetadataMap,
        encoding: Option<CompressionEncoding>,
    },
    Http {
        client: Box<HttpClient>,
        base: String,
        headers: http::HeaderMap,
        compression: Compression,
        timeout: Duration,
    },
}

/// Forwards batches over OTLP.
pub struct OtlpExporter {
    transport: Transport,
}

impl OtlpExporter {
    /// Builds the client for `endpoint`; connections are made lazily, so a gateway that is down
    /// at start is fine.
    pub fn new(cfg: &OtlpExporterConfig) -> Result<Self, OtlpExporterError> {
        let endpoint = cfg.endpoint.as_deref().ok_or(OtlpExporterError::NoEndpoint)?;
        Self::for_url(cfg, endpoint)
    }

    /// Builds the client for one URL with the rest of `cfg` (one gateway of a balancing exporter).
    pub fn for_url(cfg: &OtlpExporterConfig, url: &str) -> Result<Self, OtlpExporterError> {
        let timeout = cfg.timeout.0;
        let bad_endpoint = |e: String| OtlpExporterError::Endpoint(redact::url(url).into_owned(), e);
        let https = sluice_config::tls::is_https(url);
        let transport = match cfg.protocol {
            OtlpProtocol::Grpc => {
                // With TLS, tonic gets the http:// form and the real URL as origin; the
                // connector does the TLS (see `tls::grpc_connector`).
                let endpoint = Endpoint::from_shared(tls::as_http(url))
                    .map_err(|e| bad_endpoint(e.to_string()))?;
                let endpoint = if https {
                    let origin = url
                        .parse::<http::Uri>()
                        .map_err(|e| bad_endpoint(e.to_string()))?;
                    endpoint.origin(origin)
                } else {
                    endpoint
                };
                let endpoint = endpoint
                    .timeout(timeout)
                    .connect_timeout(timeout.min(Duration::from_secs(5)))
                    .tcp_nodelay(true);
                let mut metadata = MetadataMap::new();
                for (k, v) in &cfg.headers {
                    let key = MetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes())
                        .map_err(|_| OtlpExporterError::Header(k.clone()))?;
                    let val = MetadataValue::try_from(v.as_str())
                        .map_err(|_| OtlpExporterError::Header(k.clone()))?;
                    metadata.insert(key, val);
                }
                let encoding = match cfg.compression {
                    Compression::Gzip => Some(CompressionEncoding::Gzip),
                    Compression::Zstd => Some(CompressionEncoding::Zstd),
                    Compression::None => None,
                };
                let channel = if https {
                    endpoint.connect_with_connector_lazy(tls::grpc_connector(cfg.tls.as_ref())?)
                } else {
                    endpoint.connect_lazy()
                };
                Transport::Grpc {
                    channel,
                    metadata,
                    encoding,
                }
            }
            OtlpProtocol::Http => {
                let connector = tls::https_or_http(url, cfg.tls.as_ref(), true)?;
                let client = hyper_util::client::legacy::Client::builder(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .pool_idle_timeout(Duration::from_secs(30))
                .build(connector);
                let mut headers = http::HeaderMap::new();
                for (k, v) in &cfg.headers {
                    let name = http::HeaderName::from_bytes(k.as_bytes())
                        .map_err(|_| OtlpExporterError::Header(k.clone()))?;
                    let mut val = http::HeaderValue::from_str(v)
                        .map_err(|_| OtlpExporterError::Header(k.clone()))?;
                    val.set_sensitive(redact::is_secret_name(k));
                    headers.insert(name, val);
                }
                let base = url.trim_end_matches('/').to_owned();
                format!("{base}{}", http_path(Signal::Traces))
                    .parse::<http::Uri>()
                    .map_err(|e| bad_endpoint(e.to_string()))?;
                Transport::Http {
                    client: Box::new(client),
                    base,
                    headers,
                    compression: cfg.compression,
                    timeout,
                }
            }
        };
        Ok(Self { transport })
    }
}

fn grpc_error(s: tonic::Status) -> ExportError {
    use tonic::Code;
    use tonic_types::StatusExt as _;
    let mut msg = format!("gRPC {:?}: {}", s.code(), s.message());
    // A transport failure's cause (refused connection, TLS alert, unknown issuer) is in the source.
    tls::append_causes(&mut msg, std::error::Error::source(&s));
    match s.code() {
        // OTLP: RESOURCE_EXHAUSTED is retryable only when the server says it may recover, with a
        // RetryInfo in the status details; without one (a message over the server's size limit)
        // a retry would fail the same way.
        Code::ResourceExhausted | Code::Unavailable => match s.get_details_retry_info() {
            Some(info) => ExportError {
                retry_after: info.retry_delay,
                ..ExportError::throttled(msg)
            },
            None if s.code() == Code::Unavailable => ExportError::throttled(msg),
            None => ExportError::permanent(format!(
                "{msg} (refused without RetryInfo, so not retried: if the message is over the \
                 server's size limit, lower the batch processor's max_bytes)"
            )),
        },
        Code::DeadlineExceeded
        | Code::Aborted
        | Code::Cancelled
        | Code::DataLoss
        | Code::Unknown
        | Code::Internal => ExportError::retryable(msg),
        _ => ExportError::permanent(msg),
    }
}

fn http_path(s: Signal) -> &'static str {
    match s {
        Signal::Traces => "/v1/traces",
        Signal::Metrics => "/v1/metrics",
        Signal::Logs => "/v1/logs",
        Signal::Profiles => "/v1development/profiles",
    }
}

fn grpc_path(s: Signal) -> &'static str {
    match s {
        Signal::Traces => "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        Signal::Metrics => "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
        Signal::Logs => "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
        Signal::Profiles => {
            "/opentelemetry.proto.collector.profiles.v1development.ProfilesService/Export"
        }
    }
}

/// What the next hop rejected in an OTLP partial success (all four responses share its wire
/// format: field 1 = {rejected count, message}); those items count as failed, not sent.
fn partial_success(signal: Signal, response: &[u8]) -> Delivered {
    if let Ok(ExportTraceServiceResponse {
        partial_success: Some(p),
    }) = ExportTraceServiceResponse::decode(response)
    {
        if p.rejected_spans > 0 || !p.error_message.is_empty() {
            tracing::warn!(%signal, rejected = p.rejected_spans, message = %p.error_message, "the next hop rejected part of a batch");
        }
        return Delivered {
            rejected: u64::try_from(p.rejected_spans).unwrap_or(0),
        };
    }
    Delivered::ALL
}

fn compress(body: Bytes, c: Compression) -> Result<(Bytes, Option<&'static str>), ExportError> {
    let fail = |e: std::io::Error| ExportError::permanent(format!("cannot compress request: {e}"));
    match c {
        Compression::None => Ok((body, None)),
        Compression::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(
                Vec::with_capacity(body.len() / 4),
                flate2::Compression::fast(),
            );
            enc.write_all(&body).map_err(fail)?;
            Ok((enc.finish().map_err(fail)?.into(), Some("gzip")))
        }
        Compression::Zstd => Ok((
            zstd::bulk::compress(&body, 1).map_err(fail)?.into(),
            Some("zstd"),
        )),
    }
}

impl OtlpExporter {
    /// Sends one batch once, saying whether the next hop answered at all.
    pub async fn send(&self, batch: &Telemetry) -> Result<Delivered, SendFailure> {
        match &self.transport {
            Transport::Grpc {
                channel,
                metadata,
                encoding,
            } => {
                // Encoded batches go out as they came in: no decode, no re-encode.
                let mut grpc =
                    tonic::client::Grpc::new(channel.clone()).max_decoding_message_size(64 << 20);
                if let Some(e) = encoding {
                    grpc = grpc.send_compressed(*e).accept_compressed(*e);
                }
                grpc.ready().await.map_err(|e| {
                    SendFailure::unreachable(ExportError::retryable(format!(
                        "gRPC connection not ready: {}",
                        tls::error_chain(&e)
                    )))
                })?;
                let mut req = tonic::Request::new(batch.encode_protobuf());
                *req.metadata_mut() = metadata.clone();
                let signal = batch.signal();
                let path = http::uri::PathAndQuery::from_static(grpc_path(signal));
                let resp = grpc.unary(req, path, BytesCodec).await.map_err(|s| {
                    // A status the server sent has no source; one made from a local failure
                    // (connect error, reset connection, timeout) carries that error.
                    let unreachable = std::error::Error::source(&s).is_some();
                    SendFailure {
                        error: grpc_error(s),
                        unreachable,
                    }
                })?;
                Ok(partial_success(signal, resp.get_ref()))
            }
            Transport::Http {
                client,
                base,
                headers,
                compression,
                timeout,
            } => {
                let (body, enc) =
                    compress(batch.encode_protobuf(), *compression).map_err(SendFailure::answered)?;
                let mut req = http::Request::post(format!("{base}{}", http_path(batch.signal())))
                    .header(http::header::CONTENT_TYPE, "application/x-protobuf");
                if let Some(enc) = enc {
                    req = req.header(http::header::CONTENT_ENCODING, enc);
                }
                let mut req = req.body(Full::new(body)).map_err(|e| {
                    SendFailure::answered(ExportError::permanent(format!(
                        "cannot build the request: {e}"
                    )))
                })?;
                req.headers_mut()
                    .extend(headers.iter().map(|(k, v)| (k.clone(), v.clone())));
                let call = async {
                    let resp = client.request(req).await.map_err(|e| {
                        SendFailure::unreachable(ExportError::retryable(format!(
                            "HTTP request failed: {}",
                            tls::error_chain(&e)
                        )))
                    })?;
                    let (parts, body) = resp.into_parts();
                    let body = Limited::new(body, MAX_RESPONSE_BYTES)
                        .collect()
                        .await
                        .map(|c| c.to_bytes());
                    Ok::<_, SendFailure>((parts, body))
                };
                let (resp, body) = tokio::time::timeout(*timeout, call).await.map_err(|_| {
                    SendFailure::unreachable(ExportError::retryable(format!(
                        "HTTP request timed out after {timeout:?}"
                    )))
                })??;
                let status = resp.status;
                if status.is_success() {
                    return Ok(match body {
                        Ok(body) => partial_success(batch.signal(), &body),
                        Err(_) => Delivered::ALL,
                    });
                }
                let retry_after = resp
                    .headers
                    .get(http::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                let text = body
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                let message = format!(
                    "HTTP {status}: {}",
                    text.chars().take(512).collect::<String>()
                );
                let mut err = match status.as_u16() {
                    413 => ExportError::permanent(format!(
                        "{message} (lower the batch processor's max_bytes)"
                    )),
                    429 | 503 => ExportError::throttled(message),
                    502 | 504 => ExportError::retryable(message),
                    _ => ExportError::permanent(message),
                };
                err.retry_after = retry_after;
                Err(SendFailure::answered(err))
            }
        }
    }
}

impl Exporter for OtlpExporter {
    fn needs_decoded(&self) -> bool {
        false
    }

    fn export<'a>(&'a self, batch: &'a Telemetry) -> BoxFuture<'a, Result<Delivered, ExportError>> {
        Box::pin(async move { self.send(batch).await.map_err(|f| f.error) })
    }
}

impl ExporterKind for OtlpExporterConfig {
    const TYPE: &'static str = "otlp";
    const DEFAULT_CONCURRENCY: usize = 16;

    fn validate(&self, problems: &mut Problems) {
        config::validate(self, problems);
    }

    fn build(&self, ctx: &ExporterContext<'_>) -> Result<Arc<dyn Exporter>, String> {
        if self.endpoints.is_some() || self.resolver.is_some() {
            return balance::Balancer::start(self, ctx)
                .map(|e| Arc::new(e) as Arc<dyn Exporter>)
                .map_err(|e| e.to_string());
        }
        OtlpExporter::new(self)
            .map(|e| Arc::new(e) as Arc<dyn Exporter>)
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::grpc_error;
    use std::time::Duration;
    use tonic::{Code, Status};
    use tonic_types::{ErrorDetails, StatusExt as _};

    #[test]
    fn resource_exhausted_is_retried_only_with_retry_info() {
        let refused = grpc_error(Status::new(Code::ResourceExhausted, "message too large"));
        assert!(!refused.retryable && !refused.throttled, "{refused:?}");
        let details = ErrorDetails::with_retry_info(Some(Duration::from_millis(750)));
        let busy = grpc_error(Status::with_error_details(
            Code::ResourceExhausted,
            "busy",
            details,
        ));
        assert!(busy.retryable && busy.throttled, "{busy:?}");
        assert_eq!(busy.retry_after, Some(Duration::from_millis(750)));
        let unavailable = grpc_error(Status::new(Code::Unavailable, "full"));
        assert!(unavailable.retryable && unavailable.throttled);
        assert_eq!(unavailable.retry_after, None);
    }
}
